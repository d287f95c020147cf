//! The Resyncing leg state and `Volume::resync_run`: a resyncing leg takes
//! every write, serves no read, is never a heal source, and a resync copy
//! never undoes a concurrent write.

use keelfs_engine::device::{Device, DeviceRef, MemDevice};
use keelfs_engine::error::DeviceResult;
use keelfs_engine::integrity::{ResyncCheck, Volume};
use keelfs_engine::mirror::{LegState, MirrorSet};
use keelfs_engine::EngineError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A device whose next write (once armed) waits a while first (to open
/// the race window between a resync's read and its write).
#[derive(Debug)]
struct SlowWrite(DeviceRef, AtomicBool);

impl Device for SlowWrite {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        if self.1.swap(false, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(30));
        }
        self.0.write_at(offset, buf)
    }
    fn flush(&self) -> DeviceResult<()> {
        self.0.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        self.0.discard(offset, len)
    }
}

const BS: usize = 4096;
const BLOCKS: u64 = 64;
const UUID: [u8; 16] = [7; 16];

fn legs(n: usize) -> Vec<DeviceRef> {
    (0..n)
        .map(|i| Arc::new(MemDevice::new(format!("m{i}"), BLOCKS * BS as u64)) as DeviceRef)
        .collect()
}

fn raw(dev: &DeviceRef, block: u64, blocks: usize) -> Vec<u8> {
    let mut b = vec![0u8; blocks * BS];
    dev.read_at(block * BS as u64, &mut b).unwrap();
    b
}

fn pattern(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BS)
        .map(|i| seed.wrapping_mul(31).wrapping_add((i % 251) as u8))
        .collect()
}

#[test]
fn a_resyncing_leg_takes_writes_but_serves_no_read() {
    let devs = legs(2);
    let set = MirrorSet::new(devs.clone(), BS as u32).unwrap();
    set.mark_resyncing(1);
    assert_eq!(set.leg_state(1), LegState::Resyncing);
    let data = pattern(3, 2);
    let bits = set.write_sync(4, &data).unwrap();
    assert!(bits.is_clear());
    assert_eq!(
        raw(&devs[1], 4, 2),
        data,
        "the write reached the resyncing leg"
    );
    set.write_async(
        8,
        Arc::from(pattern(4, 1)),
        Box::new(|r| assert!(r.is_ok())),
    );
    set.flush().unwrap();
    for _ in 0..8 {
        let mut buf = vec![0u8; BS];
        assert_eq!(set.read_sync(4, &mut buf).unwrap(), 0, "read from leg 1");
    }
    assert_eq!(set.read_order(), vec![0]);
    assert!(!set.in_service().has(1));
    assert!(set.write_legs().has(1));
    // A resyncing leg alone takes no write.
    set.mark_failed(0);
    assert!(matches!(set.write_sync(4, &data), Err(EngineError::NoLegs)));
    // A resync that ends never revives a leg that failed meanwhile.
    assert!(!set.transition(0, LegState::Resyncing, LegState::InService));
    assert_eq!(set.leg_state(0), LegState::Failed);
}

#[test]
fn a_resyncing_leg_is_never_a_heal_source_nor_healed() {
    let devs = legs(2);
    let volume = Volume::new(
        Arc::new(MirrorSet::new(devs.clone(), BS as u32).unwrap()),
        UUID,
    );
    let data = pattern(5, 1);
    let (tags, _) = volume.write_data(10, 1, &data).unwrap();
    // Leg 0 goes bad in that block; leg 1 (good) is resyncing.
    devs[0].write_at(10 * BS as u64, &vec![0xee; BS]).unwrap();
    volume.set().mark_resyncing(1);
    let mut buf = vec![0u8; BS];
    let err = volume.read_data(10, &mut buf, &tags).unwrap_err();
    assert!(matches!(err, EngineError::NoGoodCopy { .. }), "{err}");
    assert!(buf.iter().all(|&b| b == 0), "no bad bytes returned");
    assert_eq!(
        raw(&devs[0], 10, 1),
        vec![0xee; BS],
        "not healed from leg 1"
    );
    let run = volume.scrub_data(10, &tags).unwrap();
    assert_eq!(run.lost, vec![10]);
    assert_eq!(
        raw(&devs[0], 10, 1),
        vec![0xee; BS],
        "scrub did not heal from it"
    );
}

#[test]
fn resync_run_copies_verified_content_and_makes_legs_identical() {
    let devs = legs(3);
    let volume = Volume::new(
        Arc::new(MirrorSet::new(devs.clone(), BS as u32).unwrap()),
        UUID,
    );
    let data = pattern(9, 4);
    let (tags, _) = volume.write_data(20, 3, &data).unwrap();
    // Leg 0 has a bad block 21; leg 1 is good; leg 2 missed everything.
    devs[0].write_at(21 * BS as u64, &vec![1; BS]).unwrap();
    volume.set().mark_failed(2);
    volume.set().mark_resyncing(2);
    let run = volume
        .resync_run(20, 4, 2, ResyncCheck::Data(&tags))
        .unwrap();
    assert_eq!(run.copied, 4);
    assert!(run.unverified.is_empty());
    assert_eq!(raw(&devs[2], 20, 4), data);
    // Raw copies are byte for byte.
    let run = volume.resync_run(0, 8, 2, ResyncCheck::Raw).unwrap();
    assert!(run.unverified.is_empty());
    assert_eq!(raw(&devs[2], 0, 8), raw(&devs[1], 0, 8));
}

#[test]
fn a_write_during_resync_is_never_undone() {
    // A resync copy whose write to the target is slow, racing a write to
    // the same blocks that starts between its read and its write: the
    // target ends with the newer write's bytes.
    for round in 0..3u8 {
        let devs = legs(2);
        let slow = Arc::new(SlowWrite(devs[1].clone(), AtomicBool::new(false)));
        let volume = Arc::new(Volume::new(
            Arc::new(MirrorSet::new(vec![devs[0].clone(), slow.clone()], BS as u32).unwrap()),
            UUID,
        ));
        volume.write_data(0, 1, &pattern(1, 16)).unwrap();
        volume.set().mark_resyncing(1);
        slow.1.store(true, Ordering::SeqCst);
        let new = pattern(round.wrapping_add(2), 16);
        let writer = {
            let (v, new) = (volume.clone(), new.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                v.write_data(0, 2, &new).unwrap();
            })
        };
        volume.resync_run(0, 16, 1, ResyncCheck::Raw).unwrap();
        writer.join().unwrap();
        assert!(
            raw(&devs[1], 0, 16) == new,
            "round {round}: resync undid a write"
        );
        assert!(raw(&devs[0], 0, 16) == new, "round {round}: leg 0");
    }
}

#[test]
fn only_a_failed_leg_is_replaced_and_by_a_device_large_enough() {
    let devs = legs(2);
    let set = MirrorSet::new(devs.clone(), BS as u32).unwrap();
    let fresh: DeviceRef = Arc::new(MemDevice::new("fresh", BLOCKS * BS as u64));
    let small: DeviceRef = Arc::new(MemDevice::new("small", BLOCKS * BS as u64 / 2));
    assert!(set.replace_device(1, fresh.clone()).is_err(), "in service");
    set.mark_failed(1);
    assert!(set.replace_device(1, small).is_err(), "too small");
    set.replace_device(1, fresh.clone()).unwrap();
    assert_eq!(set.leg_device(1).name(), "fresh");
    set.mark_resyncing(1);
    set.write_sync(3, &pattern(6, 1)).unwrap();
    assert_eq!(
        raw(&fresh, 3, 1),
        pattern(6, 1),
        "writes reach the new device"
    );
    assert_eq!(raw(&devs[1], 3, 1), vec![0; BS], "not the old one");
}

/// A device whose reads of one block wait at a gate (once armed) until
/// the test opens it, so a resync copy can be stopped between its read of
/// the source and its write of the target.
#[derive(Debug)]
struct GatedRead {
    inner: DeviceRef,
    block: u64,
    armed: AtomicBool,
    /// (reached, open)
    gate: parking_lot::Mutex<(bool, bool)>,
    changed: parking_lot::Condvar,
}

impl GatedRead {
    fn new(inner: DeviceRef, block: u64) -> Self {
        GatedRead {
            inner,
            block,
            armed: AtomicBool::new(false),
            gate: parking_lot::Mutex::new((false, false)),
            changed: parking_lot::Condvar::new(),
        }
    }

    fn wait_reached(&self) {
        let mut g = self.gate.lock();
        while !g.0 {
            self.changed.wait(&mut g);
        }
    }

    fn open(&self) {
        self.gate.lock().1 = true;
        self.changed.notify_all();
    }
}

impl Device for GatedRead {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        let at = self.block * BS as u64;
        let hits = offset <= at && at < offset + buf.len() as u64;
        self.inner.read_at(offset, buf)?;
        if hits && self.armed.swap(false, Ordering::SeqCst) {
            let mut g = self.gate.lock();
            g.0 = true;
            self.changed.notify_all();
            while !g.1 {
                self.changed.wait(&mut g);
            }
        }
        Ok(())
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        self.inner.write_at(offset, buf)
    }
    fn flush(&self) -> DeviceResult<()> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        self.inner.discard(offset, len)
    }
}

#[test]
fn a_write_straight_to_the_mirror_set_is_never_undone_by_a_resync() {
    // The journal writes its ring straight to the mirror set, not through
    // the volume. A resync copy of a ring block reads the old bytes from
    // the source leg; a journal write of that block lands on every leg
    // (the resyncing one included) before the copy writes the target. The
    // target must end with the journal's bytes, not the copy's.
    let devs = legs(2);
    let gated = Arc::new(GatedRead::new(devs[0].clone(), 5));
    let set = Arc::new(MirrorSet::new(vec![gated.clone(), devs[1].clone()], BS as u32).unwrap());
    let volume = Arc::new(Volume::new(set.clone(), UUID));
    set.write_sync(5, &pattern(1, 1)).unwrap();
    set.mark_failed(1);
    set.mark_resyncing(1);
    gated.armed.store(true, Ordering::SeqCst);
    let copier = {
        let v = volume.clone();
        std::thread::spawn(move || v.resync_run(4, 2, 1, ResyncCheck::Raw).unwrap())
    };
    gated.wait_reached();
    let newer = pattern(2, 1);
    let writer = {
        let (s, newer) = (set.clone(), newer.clone());
        std::thread::spawn(move || s.write_sync(5, &newer).unwrap())
    };
    // Give the write every chance to land before the copy goes on (it
    // must wait for the copy instead).
    let deadline = std::time::Instant::now() + Duration::from_millis(300);
    while !writer.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!writer.is_finished(), "the write did not wait for the copy");
    gated.open();
    copier.join().unwrap();
    writer.join().unwrap();
    assert!(raw(&devs[1], 5, 1) == newer, "the resync undid a write");
    assert!(raw(&devs[0], 5, 1) == newer);
}

#[test]
fn an_attached_leg_starts_failed_then_takes_writes_while_resyncing() {
    let devs = legs(1);
    let config = keelfs_engine::mirror::MirrorConfig {
        max_legs: 3,
        ..Default::default()
    };
    let set = MirrorSet::with_config(devs.clone(), BS as u32, config).unwrap();
    assert_eq!((set.num_legs(), set.max_legs()), (1, 3));
    set.write_sync(2, &pattern(1, 1)).unwrap();
    let small: DeviceRef = Arc::new(MemDevice::new("small", BS as u64));
    assert!(set.attach_leg(small).is_err(), "too small");
    let new: DeviceRef = Arc::new(MemDevice::new("new", BLOCKS * BS as u64));
    assert_eq!(set.attach_leg(new.clone()).unwrap(), 1);
    assert_eq!(set.num_legs(), 2);
    assert_eq!(set.leg_state(1), LegState::Failed);
    set.write_sync(3, &pattern(2, 1)).unwrap();
    assert_eq!(raw(&new, 3, 1), vec![0; BS], "a failed leg takes no write");
    set.mark_resyncing(1);
    set.write_sync(3, &pattern(3, 1)).unwrap();
    assert_eq!(raw(&new, 3, 1), pattern(3, 1), "a resyncing leg does");
    let volume = Volume::new(Arc::new(set), UUID);
    volume.resync_run(0, BLOCKS, 1, ResyncCheck::Raw).unwrap();
    assert!(volume
        .set()
        .transition(1, LegState::Resyncing, LegState::InService));
    assert_eq!(raw(&new, 2, 1), pattern(1, 1));
    let third: DeviceRef = Arc::new(MemDevice::new("third", BLOCKS * BS as u64));
    assert_eq!(volume.set().attach_leg(third).unwrap(), 2);
    let fourth: DeviceRef = Arc::new(MemDevice::new("fourth", BLOCKS * BS as u64));
    assert!(volume.set().attach_leg(fourth).is_err(), "no room left");
}
