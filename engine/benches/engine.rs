//! Engine benchmarks (criterion): what integrity and mirroring cost.
//!
//! * `crc32c`: tag computation (`Tag::compute`) on 4 KiB and 1 MiB.
//! * `write_1MiB`: `Volume::write_data` on a two-leg mirror of image files
//!   against plain `pwrite` of the same bytes to one file, and to two files
//!   one after the other (what a naive mirror would do).
//! * `read_1MiB`: verified `Volume::read_data` against plain `pread`.
//!
//! Images are 256 MiB sparse files in a temporary directory under
//! `/var/tmp` (the real disk, not tmpfs). Nothing is flushed, so the page
//! cache absorbs every write and serves every read: these are memory-speed
//! numbers that show the CPU and threading cost of the engine, not disk
//! throughput.
//!
//! The images are written through once before timing, so every benchmark
//! overwrites cached pages (no first-touch allocation in anyone's numbers).
//! After criterion's report, `main` measures the three write cases and the
//! two read cases again *interleaved* (A B C A B C ...), which cancels most
//! of the noise of a shared machine, and prints throughputs and ratios.
//!
//! Run: `cargo bench -p keelfs-engine --bench engine`.

use criterion::{BenchmarkId, Criterion, Throughput};
use keelfs_engine::device::{DeviceRef, FileDevice};
use keelfs_engine::integrity::{Tag, Volume};
use keelfs_engine::mirror::MirrorSet;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const IMAGE: u64 = 256 << 20;
const BS: usize = 4096;
/// 1 MiB positions in an image.
const SLOTS: u64 = IMAGE / MIB as u64;
/// Reads cycle over the first this many MiB (written and tagged up front);
/// writes cycle over the rest, so they never invalidate the read tags.
const READ_SLOTS: u64 = 64;

/// The byte offset of the i-th 1 MiB write.
fn write_offset(i: u64) -> u64 {
    (READ_SLOTS + i % (SLOTS - READ_SLOTS)) * MIB as u64
}

fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 7 / 13) as u8))
        .collect()
}

fn image(dir: &Path, name: &str) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(name))
        .unwrap();
    f.set_len(IMAGE).unwrap();
    f
}

fn bench_crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for len in [4096usize, MIB] {
        let data = fill(len, 1);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("tag", len), &data, |b, d| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                black_box(Tag::compute(i, 1, black_box(d)))
            })
        });
    }
    g.finish();
}

struct Rig {
    _dir: tempfile::TempDir,
    volume: Volume,
    plain: [File; 2],
    leg0: File,
    data: Vec<u8>,
    /// Tags of the 1 MiB slots the read benchmarks read.
    read_tags: Vec<Vec<Tag>>,
}

/// One write benchmark: the i-th 1 MiB write.
type WriteCase = fn(&Rig, u64);
/// One read benchmark: the i-th 1 MiB read into the buffer.
type ReadCase = fn(&Rig, u64, &mut [u8]);

const BLOCKS_PER_MIB: u64 = (MIB / BS) as u64;

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("keelfs-bench")
            .tempdir_in("/var/tmp")
            .unwrap();
        let legs: Vec<DeviceRef> = (0..2)
            .map(|i| {
                let p = dir.path().join(format!("leg{i}.img"));
                Arc::new(FileDevice::create_image(&p, IMAGE).unwrap()) as DeviceRef
            })
            .collect();
        let set = Arc::new(MirrorSet::new(legs, BS as u32).unwrap());
        let volume = Volume::new(set, *b"keelfs-bench-fs!");
        let plain = [
            image(dir.path(), "plain0.img"),
            image(dir.path(), "plain1.img"),
        ];
        let leg0 = File::open(dir.path().join("leg0.img")).unwrap();
        let mut r = Rig {
            _dir: dir,
            volume,
            plain,
            leg0,
            data: fill(MIB, 3),
            read_tags: Vec::new(),
        };
        // Touch every page once, then tag the slots the reads use.
        for i in 0..SLOTS - READ_SLOTS {
            r.mirror_write(i);
            r.pwrite_2_files(i);
        }
        r.read_tags = (0..READ_SLOTS)
            .map(|s| {
                let data = fill(MIB, s as u8);
                r.volume.write_data(s * BLOCKS_PER_MIB, 1, &data).unwrap().0
            })
            .collect();
        r
    }

    fn mirror_write(&self, i: u64) {
        let first = write_offset(i) / BS as u64;
        black_box(self.volume.write_data(first, i as u32, &self.data).unwrap());
    }

    fn pwrite_1_file(&self, i: u64) {
        self.plain[0]
            .write_all_at(&self.data, write_offset(i))
            .unwrap();
    }

    fn pwrite_2_files(&self, i: u64) {
        let off = write_offset(i);
        self.plain[0].write_all_at(&self.data, off).unwrap();
        self.plain[1].write_all_at(&self.data, off).unwrap();
    }

    fn read_verified(&self, i: u64, buf: &mut [u8]) {
        let s = i % READ_SLOTS;
        self.volume
            .read_data(s * BLOCKS_PER_MIB, buf, &self.read_tags[s as usize])
            .unwrap();
    }

    fn pread(&self, i: u64, buf: &mut [u8]) {
        let s = i % READ_SLOTS;
        self.leg0.read_exact_at(buf, s * MIB as u64).unwrap();
    }
}

fn bench_write(c: &mut Criterion, r: &Rig) {
    let mut g = c.benchmark_group("write_1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    let cases: [(&str, WriteCase); 3] = [
        ("mirror2_write_data", Rig::mirror_write),
        ("pwrite_1file", Rig::pwrite_1_file),
        ("pwrite_2files_sequential", Rig::pwrite_2_files),
    ];
    for (name, f) in cases {
        g.bench_function(name, |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                f(r, i)
            })
        });
    }
    g.finish();
}

fn bench_read(c: &mut Criterion, r: &Rig) {
    let mut buf = vec![0u8; MIB];
    let mut g = c.benchmark_group("read_1MiB");
    g.throughput(Throughput::Bytes(MIB as u64));
    let cases: [(&str, ReadCase); 2] = [
        ("mirror2_read_data_verified", Rig::read_verified),
        ("pread_1file", Rig::pread),
    ];
    for (name, f) in cases {
        g.bench_function(name, |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                f(r, i, &mut buf)
            })
        });
    }
    g.finish();
}

/// Time the cases again, interleaved, and print throughputs and ratios.
fn interleaved_ratios(r: &Rig) {
    const ROUNDS: u64 = 20;
    const PER_ROUND: u64 = 16;
    let mut buf = vec![0u8; MIB];
    let names = [
        "write mirror2 write_data",
        "write pwrite 1 file",
        "write pwrite 2 files seq",
        "read  verified read_data",
        "read  pread",
    ];
    let mut time = [Duration::ZERO; 5];
    for round in 0..ROUNDS {
        for (k, t) in time.iter_mut().enumerate() {
            let start = Instant::now();
            for j in 0..PER_ROUND {
                let i = round * PER_ROUND + j;
                match k {
                    0 => r.mirror_write(i),
                    1 => r.pwrite_1_file(i),
                    2 => r.pwrite_2_files(i),
                    3 => r.read_verified(i, &mut buf),
                    _ => r.pread(i, &mut buf),
                }
            }
            *t += start.elapsed();
        }
    }
    let gibs: Vec<f64> = time
        .iter()
        .map(|t| (ROUNDS * PER_ROUND) as f64 * MIB as f64 / t.as_secs_f64() / f64::from(1u32 << 30))
        .collect();
    eprintln!("\n== interleaved, 1 MiB requests, page cache (memory speed) ==");
    for (n, g) in names.iter().zip(&gibs) {
        eprintln!("{n:<26} {g:>7.2} GiB/s of user data");
    }
    eprintln!(
        "mirror2 write_data / pwrite 1 file      = {:.2}",
        gibs[0] / gibs[1]
    );
    eprintln!(
        "mirror2 write_data / pwrite 2 files seq = {:.2}",
        gibs[0] / gibs[2]
    );
    eprintln!(
        "verified read_data / pread              = {:.2}",
        gibs[3] / gibs[4]
    );
    let errors: u64 = r
        .volume
        .set()
        .stats()
        .iter()
        .map(|s| s.checksum_errors + s.io_errors())
        .sum();
    assert_eq!(errors, 0, "a benchmark read found errors");
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_crc(&mut c);
    let r = Rig::new();
    bench_write(&mut c, &r);
    bench_read(&mut c, &r);
    c.final_summary();
    interleaved_ratios(&r);
}
