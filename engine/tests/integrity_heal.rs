//! Integrity (bio-integrity layer) tests on MemDevice and FileDevice legs:
//! bit flips healed and counted, no good copy gives NoGoodCopy (never
//! bytes), dropped and misdirected writes caught on data and metadata
//! blocks, three legs with damage in different blocks, the BlockStore path.
//!
//! Damage is done to a leg's device directly (it bypasses the mirror), or
//! by test-only wrappers: `Lossy` acknowledges writes without making them
//! and `Misdirect` puts a chosen write at another address.

use keelfs_engine::bufio::BlockStore;
use keelfs_engine::device::{Device, DeviceRef, FileDevice, MemDevice};
use keelfs_engine::error::{DeviceError, DeviceResult, EngineError};
use keelfs_engine::integrity::{
    meta_gen, meta_kind, meta_set_gen, meta_set_kind, BadCopy, CopyProblem, Tag, TagMismatch,
    Volume, META_HEADER_LEN,
};
use keelfs_engine::mirror::MirrorSet;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

const BS: usize = 4096;
const BLOCKS: u64 = 64;
const UUID: [u8; 16] = *b"0123456789abcdef";

/// Acknowledges writes without making them while `lose` is set.
#[derive(Debug)]
struct Lossy {
    inner: DeviceRef,
    lose: AtomicBool,
}

/// Writes aimed at byte offset `from` land at `to` instead (once).
#[derive(Debug)]
struct Misdirect {
    inner: DeviceRef,
    redirect: Mutex<Option<(u64, u64)>>,
}

/// Fails every read while `fail` is set.
#[derive(Debug)]
struct BadReads {
    inner: DeviceRef,
    fail: AtomicBool,
}

macro_rules! forward_rest {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn flush(&self) -> DeviceResult<()> {
            self.inner.flush()
        }
        fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
            self.inner.discard(offset, len)
        }
    };
}

impl Device for Lossy {
    forward_rest!();
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        if self.lose.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.write_at(offset, buf)
    }
}

impl Device for Misdirect {
    forward_rest!();
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        let mut r = self.redirect.lock();
        if let Some((from, to)) = *r {
            if from == offset {
                *r = None;
                return self.inner.write_at(to, buf);
            }
        }
        self.inner.write_at(offset, buf)
    }
}

impl Device for BadReads {
    forward_rest!();
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(DeviceError::Injected {
                device: self.name().into(),
                op: "read",
                offset,
            });
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        self.inner.write_at(offset, buf)
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Mem,
    File,
}

const KINDS: [Kind; 2] = [Kind::Mem, Kind::File];

/// `n` fresh base devices of `kind` (files in `dir`).
fn devices(kind: Kind, dir: &tempfile::TempDir, n: usize) -> Vec<DeviceRef> {
    (0..n)
        .map(|i| -> DeviceRef {
            match kind {
                Kind::Mem => Arc::new(MemDevice::new(format!("m{i}"), BLOCKS * BS as u64)),
                Kind::File => Arc::new(
                    FileDevice::create_image(
                        dir.path().join(format!("leg{i}.img")),
                        BLOCKS * BS as u64,
                    )
                    .unwrap(),
                ),
            }
        })
        .collect()
}

fn volume(legs: Vec<DeviceRef>) -> Volume {
    Volume::new(Arc::new(MirrorSet::new(legs, BS as u32).unwrap()), UUID)
}

fn pattern(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8))
        .collect()
}

/// Flip one bit at byte `at` of `dev`, bypassing the mirror.
fn flip(dev: &DeviceRef, at: u64) {
    let sector = at - at % 512;
    let mut s = [0u8; 512];
    dev.read_at(sector, &mut s).unwrap();
    s[(at - sector) as usize] ^= 0x10;
    dev.write_at(sector, &s).unwrap();
}

fn raw(dev: &DeviceRef, block: u64, blocks: usize) -> Vec<u8> {
    let mut b = vec![0u8; blocks * BS];
    dev.read_at(block * BS as u64, &mut b).unwrap();
    b
}

/// A metadata block of generation `gen` with some payload.
fn meta_block(gen: u64, seed: u8) -> Vec<u8> {
    let mut b = pattern(seed, 1);
    b[..META_HEADER_LEN].fill(0);
    meta_set_gen(&mut b, gen);
    meta_set_kind(&mut b, 7);
    b
}

/// Read data `n_legs` times, so each leg is first in the order once.
fn read_data_every_leg(v: &Volume, first: u64, blocks: usize, tags: &[Tag]) -> Vec<u8> {
    let mut b = vec![0u8; blocks * BS];
    for _ in 0..v.set().num_legs() {
        b.fill(0);
        v.read_data(first, &mut b, tags).unwrap();
    }
    b
}

fn read_meta_every_leg(v: &Volume, block: u64, gen: Option<u64>) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    for _ in 0..v.set().num_legs() {
        v.read_meta(block, &mut b, gen).unwrap();
    }
    b
}

/// Compare bytes, reporting the first difference rather than both buffers.
#[track_caller]
fn assert_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let at = actual.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes vs {} expected, first difference at {at:?}",
            actual.len(),
            expected.len()
        );
    }
}

fn assert_legs_identical(devs: &[DeviceRef]) {
    let first = raw(&devs[0], 0, BLOCKS as usize);
    for (i, d) in devs.iter().enumerate().skip(1) {
        assert!(
            raw(d, 0, BLOCKS as usize) == first,
            "leg {i} differs from leg 0"
        );
    }
}

#[test]
fn a_flipped_bit_is_healed_from_the_other_leg_and_counted() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let devs = devices(kind, &dir, 2);
        let v = volume(devs.clone());
        // Data: 4 blocks at 8, bit flipped in block 10 on leg 1.
        let data = pattern(1, 4);
        let (tags, bits) = v.write_data(8, 5, &data).unwrap();
        assert!(bits.is_clear());
        assert_eq!(tags.len(), 4);
        flip(&devs[1], 10 * BS as u64 + 1234);
        assert_eq!(v.verify_leg_data(1, 8, &tags).unwrap().len(), 1);
        assert_bytes(&read_data_every_leg(&v, 8, 4, &tags), &data, "healed data");
        let st = v.set().stats();
        assert_eq!((st[1].checksum_errors, st[1].healed), (1, 1), "{kind:?}");
        assert_eq!((st[0].checksum_errors, st[0].healed), (0, 0), "{kind:?}");
        assert!(v.verify_leg_data(1, 8, &tags).unwrap().is_empty());

        // Metadata: bit flipped in block 20 on leg 0.
        let mut m = meta_block(3, 2);
        v.write_meta(20, &mut m).unwrap();
        flip(&devs[0], 20 * BS as u64 + 3000);
        let got = read_meta_every_leg(&v, 20, Some(3));
        assert_bytes(&got, &m, "healed metadata");
        assert_eq!((meta_gen(&got), meta_kind(&got)), (3, 7));
        let st = v.set().stats();
        assert_eq!((st[0].checksum_errors, st[0].healed), (1, 1), "{kind:?}");
        assert_legs_identical(&devs);
    }
}

#[test]
fn flips_on_every_leg_give_no_good_copy_never_bytes() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let devs = devices(kind, &dir, 2);
        let v = volume(devs.clone());
        let (tags, _) = v.write_data(0, 1, &pattern(3, 3)).unwrap();
        let mut m = meta_block(1, 4);
        v.write_meta(30, &mut m).unwrap();
        for d in &devs {
            flip(d, BS as u64 + 17);
            flip(d, 30 * BS as u64 + 900);
        }
        let mut b = vec![0xeeu8; 3 * BS];
        match v.read_data(0, &mut b, &tags) {
            Err(EngineError::NoGoodCopy {
                block,
                legs,
                detail,
            }) => {
                assert_eq!((block, legs), (1, 2));
                assert!(
                    detail.contains("leg 0") && detail.contains("leg 1"),
                    "{detail}"
                );
            }
            other => panic!("{kind:?}: expected NoGoodCopy, got {other:?}"),
        }
        assert!(
            b[BS..2 * BS].iter().all(|&x| x == 0),
            "bad bytes left in the buffer"
        );
        let mut mb = vec![0u8; BS];
        assert!(matches!(
            v.read_meta(30, &mut mb, None),
            Err(EngineError::NoGoodCopy { block: 30, .. })
        ));
        assert!(mb.iter().all(|&x| x == 0));
        let st = v.set().stats();
        assert!(
            st.iter().all(|s| s.checksum_errors == 2 && s.healed == 0),
            "{st:?}"
        );
    }
}

#[test]
fn a_dropped_data_write_is_caught_and_healed() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let base = devices(kind, &dir, 2);
        let lossy = Arc::new(Lossy {
            inner: base[1].clone(),
            lose: AtomicBool::new(false),
        });
        let v = volume(vec![base[0].clone(), lossy.clone()]);
        v.write_data(5, 1, &pattern(1, 2)).unwrap();
        lossy.lose.store(true, Ordering::SeqCst);
        let new = pattern(2, 2);
        let (tags, bits) = v.write_data(5, 2, &new).unwrap();
        assert!(bits.is_clear(), "the device lied: no error");
        lossy.lose.store(false, Ordering::SeqCst);
        let bad = v.verify_leg_data(1, 5, &tags).unwrap();
        assert_eq!(bad.iter().map(|b| b.block).collect::<Vec<_>>(), [5, 6]);
        assert!(matches!(
            bad[0].problem,
            CopyProblem::Mismatch(TagMismatch::DataTag { .. })
        ));
        assert_bytes(&read_data_every_leg(&v, 5, 2, &tags), &new, "new data");
        let st = v.set().stats();
        assert_eq!((st[1].checksum_errors, st[1].healed), (2, 2), "{kind:?}");
        assert!(v.verify_leg_data(1, 5, &tags).unwrap().is_empty());
        assert_legs_identical(&base);
    }
}

#[test]
fn a_lost_metadata_write_is_a_stale_generation_and_is_healed() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let base = devices(kind, &dir, 2);
        let lossy = Arc::new(Lossy {
            inner: base[1].clone(),
            lose: AtomicBool::new(false),
        });
        let v = volume(vec![base[0].clone(), lossy.clone()]);
        v.write_meta(12, &mut meta_block(1, 1)).unwrap();
        lossy.lose.store(true, Ordering::SeqCst);
        let mut m2 = meta_block(2, 2);
        v.write_meta(12, &mut m2).unwrap();
        lossy.lose.store(false, Ordering::SeqCst);
        // Without the parent's generation the stale block looks fine...
        assert!(v.verify_leg_meta(1, 12, 1, None).unwrap().is_empty());
        // ...with it, it is a lost write.
        let bad = v.verify_leg_meta(1, 12, 1, Some(&[2])).unwrap();
        assert_eq!(
            bad,
            [BadCopy {
                leg: 1,
                block: 12,
                problem: CopyProblem::Mismatch(TagMismatch::StaleGeneration {
                    expected: 2,
                    found: 1
                }),
            }]
        );
        assert_bytes(&read_meta_every_leg(&v, 12, Some(2)), &m2, "new metadata");
        let st = v.set().stats();
        assert_eq!((st[1].checksum_errors, st[1].healed), (1, 1), "{kind:?}");
        assert!(v.verify_leg_meta(1, 12, 1, Some(&[2])).unwrap().is_empty());
        assert_legs_identical(&base);
    }
}

#[test]
fn misdirected_writes_are_caught_on_data_and_metadata_and_healed() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let base = devices(kind, &dir, 2);
        let mis = Arc::new(Misdirect {
            inner: base[1].clone(),
            redirect: Mutex::new(None),
        });
        let v = volume(vec![base[0].clone(), mis.clone()]);
        let bs = BS as u64;

        // Data: the write to block 10 lands on block 20 of leg 1.
        let (_, _) = v.write_data(10, 1, &pattern(1, 1)).unwrap();
        let (t20, _) = v.write_data(20, 1, &pattern(2, 1)).unwrap();
        *mis.redirect.lock() = Some((10 * bs, 20 * bs));
        let new10 = pattern(3, 1);
        let (t10, _) = v.write_data(10, 2, &new10).unwrap();
        assert!(mis.redirect.lock().is_none(), "the wrapper fired");
        assert_eq!(
            v.verify_leg_data(1, 10, &t10).unwrap().len(),
            1,
            "stale at 10"
        );
        assert_eq!(
            v.verify_leg_data(1, 20, &t20).unwrap().len(),
            1,
            "wrong block at 20"
        );
        assert_bytes(&read_data_every_leg(&v, 10, 1, &t10), &new10, "block 10");
        assert_bytes(
            &read_data_every_leg(&v, 20, 1, &t20),
            &pattern(2, 1),
            "block 20",
        );

        // Metadata: the write to block 30 lands on block 40 of leg 1.
        v.write_meta(30, &mut meta_block(1, 4)).unwrap();
        let mut m40 = meta_block(1, 5);
        v.write_meta(40, &mut m40).unwrap();
        *mis.redirect.lock() = Some((30 * bs, 40 * bs));
        let mut m30 = meta_block(2, 6);
        v.write_meta(30, &mut m30).unwrap();
        let bad = v.verify_leg_meta(1, 40, 1, None).unwrap();
        assert_eq!(
            bad[0].problem,
            CopyProblem::Mismatch(TagMismatch::Misdirected { found: 30 })
        );
        let bad = v.verify_leg_meta(1, 30, 1, Some(&[2])).unwrap();
        assert!(matches!(
            bad[0].problem,
            CopyProblem::Mismatch(TagMismatch::StaleGeneration {
                expected: 2,
                found: 1
            })
        ));
        assert_bytes(&read_meta_every_leg(&v, 40, None), &m40, "meta 40");
        assert_bytes(&read_meta_every_leg(&v, 30, Some(2)), &m30, "meta 30");

        let st = v.set().stats();
        assert_eq!((st[1].checksum_errors, st[1].healed), (4, 4), "{kind:?}");
        assert_eq!(st[0].checksum_errors, 0);
        assert_legs_identical(&base);
    }
}

#[test]
fn three_legs_damaged_in_different_blocks_heal_completely() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let devs = devices(kind, &dir, 3);
        let v = volume(devs.clone());
        let data = pattern(7, 8);
        let (tags, _) = v.write_data(16, 9, &data).unwrap();
        flip(&devs[0], 18 * BS as u64 + 5);
        flip(&devs[1], 21 * BS as u64 + 4000);
        flip(&devs[1], 22 * BS as u64);
        assert_bytes(&read_data_every_leg(&v, 16, 8, &tags), &data, "healed data");
        let st = v.set().stats();
        assert_eq!(
            (st[0].checksum_errors, st[0].healed),
            (1, 1),
            "{kind:?} {st:?}"
        );
        assert_eq!(
            (st[1].checksum_errors, st[1].healed),
            (2, 2),
            "{kind:?} {st:?}"
        );
        assert_eq!(
            (st[2].checksum_errors, st[2].healed),
            (0, 0),
            "{kind:?} {st:?}"
        );
        for leg in 0..3 {
            assert!(v.verify_leg_data(leg, 16, &tags).unwrap().is_empty());
        }
        assert_legs_identical(&devs);
    }
}

#[test]
fn a_read_error_falls_back_and_rewrites_the_leg() {
    let dir = tempfile::tempdir().unwrap();
    let base = devices(Kind::Mem, &dir, 2);
    let bad = Arc::new(BadReads {
        inner: base[0].clone(),
        fail: AtomicBool::new(false),
    });
    let v = volume(vec![bad.clone(), base[1].clone()]);
    let data = pattern(4, 2);
    let (tags, _) = v.write_data(2, 1, &data).unwrap();
    bad.fail.store(true, Ordering::SeqCst);
    assert_bytes(&read_data_every_leg(&v, 2, 2, &tags), &data, "data");
    let st = v.set().stats();
    assert_eq!(st[0].read_errors, 1);
    assert_eq!(st[0].healed, 2, "the unreadable blocks were rewritten");
    assert_eq!(st[0].checksum_errors, 0);
}

#[test]
fn the_block_store_path_seals_verifies_and_heals() {
    for kind in KINDS {
        let dir = tempfile::tempdir().unwrap();
        let devs = devices(kind, &dir, 2);
        let v = volume(devs.clone());
        let store: &dyn BlockStore = &v;
        assert_eq!((store.block_size(), store.num_blocks()), (BS, BLOCKS));
        let mut run: Vec<u8> = (0..3).flat_map(|i| meta_block(10 + i, i as u8)).collect();
        store.write_run(4, &mut run).unwrap();
        store.flush().unwrap();
        flip(&devs[1], 5 * BS as u64 + 100);
        let mut b = vec![0u8; BS];
        for _ in 0..2 {
            store.read_block(5, &mut b, Some(11)).unwrap();
        }
        assert_bytes(&b, &run[BS..2 * BS], "block 5");
        assert!(matches!(
            store.read_block(5, &mut b, Some(12)),
            Err(EngineError::NoGoodCopy { .. })
        ));
        // Runs read back verified, with per-block generations.
        let mut back = vec![0u8; 3 * BS];
        v.read_meta_run(4, &mut back, Some(&[10, 11, 12])).unwrap();
        assert_bytes(&back, &run, "run");
        assert_eq!(v.set().stats()[1].healed, 1);
        store.discard(4, 3).unwrap();
        assert!(matches!(
            store.read_block(4, &mut b, None),
            Err(EngineError::Unwritten { block: 4 })
        ));
        assert!(matches!(
            store.read_block(4, &mut [0u8; 100], None),
            Err(EngineError::Invalid(_))
        ));
    }
}

#[test]
fn data_written_with_tags_must_match_them() {
    let dir = tempfile::tempdir().unwrap();
    let v = volume(devices(Kind::Mem, &dir, 2));
    let data = pattern(1, 2);
    let tags = v.data_tags(3, 4, &data);
    assert_eq!(tags[1], Tag::compute(4, 4, &data[BS..]));
    v.write_data_tagged(3, &data, &tags).unwrap();
    let mut b = vec![0u8; 2 * BS];
    v.read_data(3, &mut b, &tags).unwrap();
    assert_bytes(&b, &data, "data");
    let mut changed = data.clone();
    changed[10] ^= 1;
    assert!(matches!(
        v.write_data_tagged(3, &changed, &tags),
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        v.read_data(3, &mut b, &tags[..1]),
        Err(EngineError::Invalid(_))
    ));
}

/// Pauses the next armed operation ("read": after reading, "write":
/// before writing) until released.
#[derive(Debug, Default)]
struct PauseState {
    armed: Option<&'static str>,
    paused: bool,
    released: bool,
}

#[derive(Debug)]
struct Pausing {
    inner: DeviceRef,
    state: Mutex<PauseState>,
    changed: parking_lot::Condvar,
}

impl Pausing {
    fn arm(&self, op: &'static str) {
        *self.state.lock() = PauseState {
            armed: Some(op),
            ..PauseState::default()
        };
    }
    fn maybe_pause(&self, op: &'static str) {
        let mut st = self.state.lock();
        if st.armed != Some(op) {
            return;
        }
        st.armed = None;
        st.paused = true;
        self.changed.notify_all();
        while !st.released {
            self.changed.wait(&mut st);
        }
    }
    fn wait_paused(&self) {
        let mut st = self.state.lock();
        while !st.paused {
            self.changed.wait(&mut st);
        }
    }
    fn release(&self) {
        self.state.lock().released = true;
        self.changed.notify_all();
    }
}

impl Device for Pausing {
    forward_rest!();
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        let r = self.inner.read_at(offset, buf);
        self.maybe_pause("read");
        r
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        self.maybe_pause("write");
        self.inner.write_at(offset, buf)
    }
}

/// Make the next read start on leg 1 (of 2).
fn next_read_starts_on_leg_1(v: &Volume) {
    while v.set().read_order()[0] != 0 {}
}

/// A heal must never put back old content over a newer write: not when the
/// write lands between the read and the heal (the heal re-reads and
/// re-verifies), and not when the write is in flight as the heal starts
/// (the heal waits for it behind the fence).
#[test]
fn a_heal_never_undoes_a_newer_write() {
    let dir = tempfile::tempdir().unwrap();
    let base = devices(Kind::Mem, &dir, 2);
    let leg0 = Arc::new(Pausing {
        inner: base[0].clone(),
        state: Mutex::new(PauseState::default()),
        changed: parking_lot::Condvar::new(),
    });
    let v = Arc::new(volume(vec![leg0.clone(), base[1].clone()]));
    let (a, b, c) = (pattern(1, 1), pattern(2, 1), pattern(3, 1));
    let (ta, tb, tc) = (
        Tag::compute(7, 1, &a),
        Tag::compute(7, 2, &b),
        Tag::compute(7, 3, &c),
    );

    // 1. Write B lands after the reader found A good on leg 0 and leg 1 bad.
    v.write_data_tagged(7, &a, &[ta]).unwrap();
    flip(&base[1], 7 * BS as u64 + 99);
    next_read_starts_on_leg_1(&v);
    leg0.arm("read");
    let reader = {
        let v = v.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; BS];
            v.read_data(7, &mut buf, &[ta]).map(|_| buf)
        })
    };
    leg0.wait_paused();
    v.write_data_tagged(7, &b, &[tb]).unwrap();
    leg0.release();
    assert_bytes(
        &reader.join().unwrap().unwrap(),
        &a,
        "the read is ordered before the write",
    );
    assert_bytes(&raw(&base[0], 7, 1), &b, "leg 0 after write B");
    assert_bytes(&raw(&base[1], 7, 1), &b, "the heal put old content back");

    // 2. Write C is in flight (done on leg 1, not yet on leg 0) as the
    //    reader finds B good on leg 0 and leg 1 "bad".
    leg0.arm("write");
    let writer = {
        let (v, c) = (v.clone(), c.clone());
        thread::spawn(move || v.write_data_tagged(7, &c, &[tc]).unwrap())
    };
    leg0.wait_paused();
    while raw(&base[1], 7, 1) != c {
        thread::yield_now();
    }
    next_read_starts_on_leg_1(&v);
    let reader = {
        let v = v.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; BS];
            v.read_data(7, &mut buf, &[tb]).map(|_| buf)
        })
    };
    thread::sleep(std::time::Duration::from_millis(50));
    leg0.release();
    writer.join().unwrap();
    assert_bytes(&reader.join().unwrap().unwrap(), &b, "read during write C");
    assert_bytes(&raw(&base[0], 7, 1), &c, "leg 0 after write C");
    assert_bytes(
        &raw(&base[1], 7, 1),
        &c,
        "the heal overwrote an in-flight write",
    );
    assert_eq!(v.set().stats()[1].healed, 0);
}

#[test]
fn a_block_zero_on_every_leg_is_unwritten_and_not_counted() {
    let devs = devices(Kind::Mem, &tempfile::tempdir().unwrap(), 2);
    let v = volume(devs.clone());
    let mut buf = vec![0xAAu8; BS];
    match v.read_meta(7, &mut buf, None) {
        Err(EngineError::Unwritten { block: 7 }) => {}
        other => panic!("expected Unwritten, got {other:?}"),
    }
    assert!(buf.iter().all(|&b| b == 0), "no stale bytes handed out");
    for leg in 0..2 {
        assert_eq!(v.set().leg_stats(leg).snapshot().checksum_errors, 0);
    }
}

#[test]
fn a_block_zeroed_on_one_leg_only_is_corruption_and_healed() {
    let devs = devices(Kind::Mem, &tempfile::tempdir().unwrap(), 2);
    let v = volume(devs.clone());
    let mut b = meta_block(3, 9);
    v.write_meta(7, &mut b).unwrap();
    devs[1].write_at(7 * BS as u64, &vec![0u8; BS]).unwrap();
    let got = read_meta_every_leg(&v, 7, Some(3));
    assert_eq!(meta_gen(&got), 3);
    let errors: u64 = (0..2)
        .map(|l| v.set().leg_stats(l).snapshot().checksum_errors)
        .sum();
    assert_eq!(errors, 1, "the zeroed copy counts as a checksum error");
    assert_legs_identical(&devs);
}
