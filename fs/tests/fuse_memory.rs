//! Invariant 5: the daemon's memory stays under the configured cache size
//! plus a fixed overhead, whatever the workload.
//!
//! A mount with `cache_size=8M` is driven by the workloads that would make
//! an unbounded daemon grow: four writers streaming 1 MiB requests at once,
//! cold reads of everything back, thousands of files created, listed and
//! stat'ed, the kernel made to forget them and look them up again, and
//! 16 MiB of metadata (64 KiB xattrs on 256 files, twice the cache) written
//! and read back twice. The daemon's peak resident size (VmHWM in
//! /proc/PID/status) must stay under 8 MiB + 40 MiB, and `keelfs status`
//! must show the metadata cache never went above its limit.
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::fs;
use std::io::Write;

use fuse_support::*;

/// The fixed overhead allowed on top of the cache: code, thread stacks,
/// request buffers of the workers, the inode cache, allocator slack.
const FIXED_OVERHEAD: u64 = 40 * MIB;
const CACHE: u64 = 8 * MIB;

fn status_kib(pid: i32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn memory_stays_under_the_cache_size_plus_a_fixed_overhead() {
    if !can_mount("memory_stays_under_the_cache_size_plus_a_fixed_overhead") {
        return;
    }
    let fx = Fixture::new(2, 4 * GIB);
    let m = fx.mount(&format!("cache_size={CACHE}"));
    let pids = daemons_of(&fx.mnt);
    assert_eq!(pids.len(), 1, "one daemon serves the mount: {pids:?}");
    let pid = pids[0];

    // Four writers at once, 1 MiB requests.
    std::thread::scope(|s| {
        for w in 0..4u64 {
            let path = m.path(&format!("stream{w}"));
            s.spawn(move || {
                let mut f = fs::File::create(path).unwrap();
                for i in 0..150 {
                    f.write_all(&pattern(w, i, MIB as usize)).unwrap();
                }
                f.sync_all().unwrap();
            });
        }
    });
    // Cold reads of all of it.
    fs::write("/proc/sys/vm/drop_caches", b"3").unwrap();
    for w in 0..4u64 {
        let back = fs::read(m.path(&format!("stream{w}"))).unwrap();
        assert_eq!(back.len() as u64, 150 * MIB);
        assert!(back[..MIB as usize] == pattern(w, 0, MIB as usize)[..]);
    }
    // Thousands of files, listed and stat'ed, forgotten, looked up again.
    for d in 0..8 {
        let dir = m.path(&format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for i in 0..500 {
            fs::write(dir.join(format!("f{i}")), pattern(d, i, 1500)).unwrap();
        }
    }
    for round in 0..2 {
        let mut seen = 0;
        for d in 0..8 {
            for e in fs::read_dir(m.path(&format!("d{d}"))).unwrap() {
                let e = e.unwrap();
                assert_eq!(e.metadata().unwrap().len(), 1500);
                seen += 1;
            }
        }
        assert_eq!(seen, 4000, "round {round}");
        fs::write("/proc/sys/vm/drop_caches", b"2").unwrap();
    }

    // Twice the cache in xattr blocks, read back twice: the cache must evict.
    let value = |i: u64| {
        use std::fmt::Write as _;
        pattern(77, i, 64 * 1024 - 64)
            .iter()
            .fold(String::from("0x"), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    };
    fs::create_dir(m.path("x")).unwrap();
    for i in 0..256u64 {
        let f = m.path(&format!("x/f{i}"));
        fs::write(&f, b"").unwrap();
        ok(
            "setfattr",
            &["-n", "user.big", "-v", &value(i), f.to_str().unwrap()],
        );
    }
    for _ in 0..2 {
        for i in 0..256u64 {
            let f = m.path(&format!("x/f{i}"));
            let got = ok(
                "getfattr",
                &["-e", "hex", "-n", "user.big", f.to_str().unwrap()],
            );
            assert!(
                got.contains(&format!("user.big={}", value(i))),
                "xattr of f{i}"
            );
        }
        fs::write("/proc/sys/vm/drop_caches", b"2").unwrap();
    }

    let peak = status_kib(pid, "VmHWM:") * 1024;
    let (_, status) = keelfs(&["status", fx.mnt.to_str().unwrap()]);
    eprintln!("daemon peak RSS {} KiB\n{status}", peak / 1024);
    assert!(
        peak < CACHE + FIXED_OVERHEAD,
        "the daemon's peak resident size is {} MiB, over {} MiB of cache + {} MiB",
        peak / MIB,
        CACHE / MIB,
        FIXED_OVERHEAD / MIB
    );
    // The cache line: "N MiB in B buffers (peak P MiB, limit 8.0 MiB)".
    let line = status
        .lines()
        .find(|l| l.contains("limit"))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains("limit 8.0 MiB"), "{line}");
    let cache_peak: f64 = line
        .split("(peak ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(cache_peak > 4.0, "the workload filled the cache: {line}");
    assert!(cache_peak <= 8.0, "the cache went over its limit: {line}");
    m.finish();
}
