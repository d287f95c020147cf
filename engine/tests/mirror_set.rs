//! Mirror set (dm-io layer) tests: per-leg error bits and leg failure,
//! round-robin reads with fallback, plug merging, async completions,
//! concurrency, and priority ordering at the device.
//!
//! Test-only device wrappers live here (not in device/): `Flaky` fails
//! chosen operations, `Counting` counts device write calls, `Gated` blocks
//! every operation until a gate opens and logs the order ops reach it.

use keelfs_engine::device::{Device, DeviceRef, FileDevice, MemDevice};
use keelfs_engine::error::{DeviceError, DeviceResult, EngineError};
use keelfs_engine::ioctx::{self, IoContext, IoPrio};
use keelfs_engine::mirror::{ErrorBits, LegState, MirrorConfig, MirrorSet, Region};
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

const BS: u32 = 4096;
const BLOCKS: u64 = 64;

fn injected(d: &dyn Device, op: &'static str, offset: u64) -> DeviceError {
    DeviceError::Injected {
        device: d.name().to_string(),
        op,
        offset,
    }
}

/// Fails reads, writes or flushes while the matching flag is set.
#[derive(Debug)]
struct Flaky {
    inner: DeviceRef,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
    fail_flush: AtomicBool,
}

impl Flaky {
    fn new(inner: DeviceRef) -> Arc<Self> {
        Arc::new(Flaky {
            inner,
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_flush: AtomicBool::new(false),
        })
    }
}

impl Device for Flaky {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(injected(self, "read", offset));
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(injected(self, "write", offset));
        }
        self.inner.write_at(offset, buf)
    }
    fn flush(&self) -> DeviceResult<()> {
        if self.fail_flush.load(Ordering::SeqCst) {
            return Err(injected(self, "flush", 0));
        }
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        self.inner.discard(offset, len)
    }
}

/// Counts device write calls (a vectored write is one call).
#[derive(Debug)]
struct Counting {
    inner: DeviceRef,
    write_calls: AtomicUsize,
}

impl Device for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        self.write_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.write_at(offset, buf)
    }
    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> DeviceResult<()> {
        self.write_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.write_vectored_at(offset, bufs)
    }
    fn flush(&self) -> DeviceResult<()> {
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        self.inner.discard(offset, len)
    }
}

/// A gate shared by several devices: while closed, every operation waits.
#[derive(Debug, Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
    /// Operations that have reached the gate (waiting or through).
    arrived: AtomicUsize,
}

impl Gate {
    fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.lock();
        while !*open {
            self.opened.wait(&mut open);
        }
    }
    fn release(&self) {
        *self.open.lock() = true;
        self.opened.notify_all();
    }
}

/// Blocks on the gate, then logs ("W"/"R", block) in the order operations
/// are carried out on this device.
#[derive(Debug)]
struct Gated {
    inner: DeviceRef,
    gate: Arc<Gate>,
    log: Mutex<Vec<(&'static str, u64)>>,
}

impl Device for Gated {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.gate.pass();
        self.log.lock().push(("R", offset / u64::from(BS)));
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        self.gate.pass();
        self.log.lock().push(("W", offset / u64::from(BS)));
        self.inner.write_at(offset, buf)
    }
    fn flush(&self) -> DeviceResult<()> {
        self.gate.pass();
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        self.inner.discard(offset, len)
    }
}

fn mem(name: &str) -> DeviceRef {
    Arc::new(MemDevice::new(name, BLOCKS * u64::from(BS)))
}

/// Base devices of each kind: memory, and image files in `dir`.
fn base_devices(dir: &tempfile::TempDir, n: usize) -> Vec<Vec<DeviceRef>> {
    let mems = (0..n).map(|i| mem(&format!("m{i}"))).collect();
    let files = (0..n)
        .map(|i| {
            let d = FileDevice::create_image(
                dir.path().join(format!("f{i}.img")),
                BLOCKS * u64::from(BS),
            )
            .unwrap();
            Arc::new(d) as DeviceRef
        })
        .collect();
    vec![mems, files]
}

fn pattern(seed: u8, blocks: usize) -> Vec<u8> {
    (0..blocks * BS as usize)
        .map(|i| seed.wrapping_add((i / 511) as u8))
        .collect()
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

fn read_raw(d: &DeviceRef, block: u64, blocks: usize) -> Vec<u8> {
    let mut b = vec![0u8; blocks * BS as usize];
    d.read_at(block * u64::from(BS), &mut b).unwrap();
    b
}

#[test]
fn a_failed_leg_write_sets_exactly_its_bit_and_fails_the_leg() {
    let dir = tempfile::tempdir().unwrap();
    for devs in base_devices(&dir, 2) {
        let flaky = Flaky::new(devs[1].clone());
        let set = MirrorSet::new(vec![devs[0].clone(), flaky.clone()], BS).unwrap();
        assert_eq!(set.num_blocks(), BLOCKS);
        let a = pattern(1, 2);
        assert_eq!(set.write_sync(4, &a).unwrap(), ErrorBits::NONE);

        flaky.fail_writes.store(true, Ordering::SeqCst);
        let b = pattern(2, 2);
        let bits = set.write_sync(4, &b).unwrap();
        assert_eq!(bits, ErrorBits::of_legs(&[1]));
        assert_eq!(bits.failed_legs(), [1]);
        assert_eq!(set.leg_state(1), LegState::Failed);
        assert_eq!(set.leg_state(0), LegState::InService);
        let st = set.stats();
        assert_eq!((st[1].write_errors, st[0].write_errors), (1, 0));
        assert_bytes(&read_raw(&devs[0], 4, 2), &b, "leg 0");
        assert_bytes(&read_raw(&devs[1], 4, 2), &a, "leg 1 never took the write");

        // Degraded: later writes skip the failed leg and succeed.
        flaky.fail_writes.store(false, Ordering::SeqCst);
        assert!(set.write_sync(8, &pattern(3, 1)).unwrap().is_clear());
        assert_bytes(
            &read_raw(&devs[1], 8, 1),
            &[0u8; BS as usize],
            "failed leg untouched",
        );
        // Reads go to in-service legs only.
        for _ in 0..4 {
            let mut r = vec![0u8; 2 * BS as usize];
            assert_eq!(set.read_sync(4, &mut r).unwrap(), 0);
            assert_bytes(&r, &b, "degraded read");
        }
        // Back in service (after a resync the caller did), then every leg fails.
        set.mark_in_service(1);
        set.write_regions_sync(&[Region::new(1, 4, 2)], &b).unwrap();
        flaky.fail_writes.store(true, Ordering::SeqCst);
        set.mark_failed(0);
        assert!(matches!(
            set.write_sync(4, &a),
            Err(EngineError::WriteFailed { block: 4 })
        ));
        assert!(matches!(set.write_sync(4, &a), Err(EngineError::NoLegs)));
    }
}

#[test]
fn flush_reports_the_failing_leg_and_fails_only_when_all_fail() {
    let legs: Vec<_> = (0..3).map(|i| Flaky::new(mem(&format!("m{i}")))).collect();
    let set = MirrorSet::new(legs.iter().map(|l| l.clone() as DeviceRef).collect(), BS).unwrap();
    assert!(set.flush().unwrap().is_clear());
    legs[2].fail_flush.store(true, Ordering::SeqCst);
    assert_eq!(set.flush().unwrap(), ErrorBits::of_legs(&[2]));
    assert_eq!(set.leg_state(2), LegState::Failed);
    assert_eq!(set.stats()[2].flush_errors, 1);
    legs[0].fail_flush.store(true, Ordering::SeqCst);
    legs[1].fail_flush.store(true, Ordering::SeqCst);
    assert!(matches!(set.flush(), Err(EngineError::FlushFailed)));
}

#[test]
fn reads_rotate_over_legs_and_fall_back_on_errors() {
    let legs: Vec<_> = (0..2).map(|i| Flaky::new(mem(&format!("m{i}")))).collect();
    let set = MirrorSet::new(legs.iter().map(|l| l.clone() as DeviceRef).collect(), BS).unwrap();
    let data = pattern(9, 1);
    set.write_sync(3, &data).unwrap();
    let mut used = Vec::new();
    for _ in 0..4 {
        let mut b = vec![0u8; BS as usize];
        used.push(set.read_sync(3, &mut b).unwrap());
        assert_bytes(&b, &data, "read");
    }
    used.sort();
    assert_eq!(used, [0, 0, 1, 1], "round-robin");

    legs[0].fail_reads.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let mut b = vec![0u8; BS as usize];
        assert_eq!(set.read_sync(3, &mut b).unwrap(), 1);
        assert_bytes(&b, &data, "fallback read");
    }
    assert!(set.stats()[0].read_errors >= 1);
    assert_eq!(
        set.leg_state(0),
        LegState::InService,
        "a read error alone does not fail a leg"
    );
    let mut b = vec![0u8; BS as usize];
    assert!(set.read_leg(0, 3, &mut b).is_err());
    legs[1].fail_reads.store(true, Ordering::SeqCst);
    assert!(matches!(
        set.read_sync(3, &mut b),
        Err(EngineError::Device(_))
    ));
    // Malformed requests never reach (or fail) a device.
    assert!(matches!(
        set.read_sync(BLOCKS, &mut b),
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        set.write_sync(0, &[0u8; 100]),
        Err(EngineError::Invalid(_))
    ));
    assert!(matches!(
        set.write_regions_sync(&[Region::new(5, 0, 1)], &data),
        Err(EngineError::Invalid(_))
    ));
    assert!(MirrorSet::new(vec![mem("x")], 1000).is_err());
    assert!(MirrorSet::new(vec![], BS).is_err());
}

#[test]
fn plug_merges_adjacent_writes_into_one_device_write_per_run() {
    let dir = tempfile::tempdir().unwrap();
    for devs in base_devices(&dir, 2) {
        let counting: Vec<Arc<Counting>> = devs
            .iter()
            .map(|d| {
                Arc::new(Counting {
                    inner: d.clone(),
                    write_calls: AtomicUsize::new(0),
                })
            })
            .collect();
        let set = MirrorSet::new(
            counting.iter().map(|c| c.clone() as DeviceRef).collect(),
            BS,
        )
        .unwrap();
        let blocks = [9u64, 3, 5, 4];
        let mut plug = set.plug();
        for &b in &blocks {
            plug.write(b, &pattern(b as u8, 1)).unwrap();
        }
        assert_eq!(plug.len(), 4);
        assert!(plug.unplug().unwrap().is_clear());
        for c in &counting {
            assert_eq!(c.write_calls.load(Ordering::SeqCst), 2, "runs 3..=5 and 9");
        }
        for d in &devs {
            for &b in &blocks {
                assert_bytes(&read_raw(d, b, 1), &pattern(b as u8, 1), "plugged block");
            }
        }

        // The last write of a block wins; a partial overlap keeps order.
        let mut plug = set.plug();
        plug.write(20, &pattern(1, 2)).unwrap();
        plug.write(20, &pattern(2, 2)).unwrap();
        plug.write(21, &pattern(3, 1)).unwrap(); // overlaps 20..22: forces 20 out first
        drop(plug); // drop submits too
        for d in &devs {
            assert_bytes(
                &read_raw(d, 20, 1),
                &pattern(2, 2)[..BS as usize],
                "block 20",
            );
            assert_bytes(&read_raw(d, 21, 1), &pattern(3, 1), "block 21");
        }
    }
}

#[test]
fn async_writes_and_reads_call_back_exactly_once_with_the_right_bits() {
    let legs: Vec<_> = (0..2).map(|i| Flaky::new(mem(&format!("m{i}")))).collect();
    let set = Arc::new(
        MirrorSet::new(legs.iter().map(|l| l.clone() as DeviceRef).collect(), BS).unwrap(),
    );
    let (tx, rx) = mpsc::channel();

    // One write while leg 1 fails: its bit, and leg 1 is failed.
    legs[1].fail_writes.store(true, Ordering::SeqCst);
    let t = tx.clone();
    set.write_async(
        0,
        pattern(1, 1).into(),
        Box::new(move |r| t.send((0usize, r.map_err(|e| e.to_string()))).unwrap()),
    );
    let (_, r) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(r.unwrap(), ErrorBits::of_legs(&[1]));
    assert_eq!(set.leg_state(1), LegState::Failed);
    legs[1].fail_writes.store(false, Ordering::SeqCst);
    set.mark_in_service(1);

    const N: usize = 32;
    let calls: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    for i in 0..N {
        let (t, calls) = (tx.clone(), calls.clone());
        set.write_async(
            i as u64,
            pattern(i as u8, 1).into(),
            Box::new(move |r| {
                calls[i].fetch_add(1, Ordering::SeqCst);
                t.send((i, r.map_err(|e| e.to_string()))).unwrap();
            }),
        );
    }
    // A malformed request is answered through the callback too.
    let t = tx.clone();
    set.write_async(
        BLOCKS,
        pattern(0, 1).into(),
        Box::new(move |r| t.send((N, r.map_err(|e| e.to_string()))).unwrap()),
    );
    let mut seen = 0;
    for _ in 0..=N {
        let (i, r) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if i == N {
            assert!(r.unwrap_err().contains("beyond the end"));
        } else {
            assert!(r.unwrap().is_clear());
            seen += 1;
        }
    }
    assert_eq!(seen, N);
    thread::sleep(Duration::from_millis(20));
    assert!(rx.try_recv().is_err(), "no extra callbacks");
    assert!(calls.iter().all(|c| c.load(Ordering::SeqCst) == 1));

    // Async reads: the right bytes, once; fall back when a leg fails.
    legs[0].fail_reads.store(true, Ordering::SeqCst);
    let (rtx, rrx) = mpsc::channel();
    for i in 0..N {
        let t = rtx.clone();
        set.read_async(i as u64, 1, Box::new(move |r| t.send((i, r)).unwrap()));
    }
    for _ in 0..N {
        let (i, r) = rrx.recv_timeout(Duration::from_secs(10)).unwrap();
        let r = r.unwrap();
        assert_eq!(r.leg, 1);
        assert_bytes(&r.data, &pattern(i as u8, 1), "async read");
    }
    thread::sleep(Duration::from_millis(20));
    assert!(rrx.try_recv().is_err());
}

#[test]
fn concurrent_writers_and_readers_are_safe() {
    let dir = tempfile::tempdir().unwrap();
    for devs in base_devices(&dir, 2) {
        let set = Arc::new(
            MirrorSet::with_config(
                devs.clone(),
                BS,
                MirrorConfig {
                    slots_per_leg: 2,
                    workers_per_leg: 2,
                    ..MirrorConfig::default()
                },
            )
            .unwrap(),
        );
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let set = set.clone();
                thread::spawn(move || {
                    // Each thread owns blocks t*16 .. t*16+16.
                    for round in 0..40u64 {
                        let block = t * 16 + round % 16;
                        let data = pattern((t * 50 + round) as u8, 1);
                        match round % 3 {
                            0 => {
                                set.write_sync(block, &data).unwrap();
                            }
                            1 => {
                                let (tx, rx) = mpsc::channel();
                                set.write_async(
                                    block,
                                    data.clone().into(),
                                    Box::new(move |r| tx.send(r.is_ok()).unwrap()),
                                );
                                assert!(rx.recv().unwrap());
                            }
                            _ => {
                                let mut p = set.plug();
                                p.write(block, &data).unwrap();
                                p.unplug().unwrap();
                            }
                        }
                        let mut b = vec![0u8; BS as usize];
                        set.read_sync(block, &mut b).unwrap();
                        assert_bytes(&b, &data, "read back");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        set.flush().unwrap();
        assert_bytes(
            &read_raw(&devs[0], 0, BLOCKS as usize),
            &read_raw(&devs[1], 0, BLOCKS as usize),
            "legs",
        );
        assert!(set.stats().iter().all(|s| s.io_errors() == 0));
    }
}

/// A synchronous write issued from inside an async callback (on a worker)
/// must not deadlock even with one worker per leg.
#[test]
fn sync_requests_from_callbacks_do_not_deadlock() {
    let set = Arc::new(
        MirrorSet::with_config(
            vec![mem("a"), mem("b")],
            BS,
            MirrorConfig {
                slots_per_leg: 1,
                workers_per_leg: 1,
                ..MirrorConfig::default()
            },
        )
        .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    for i in 0..8u64 {
        let (s, t) = (set.clone(), tx.clone());
        set.write_async(
            i,
            pattern(1, 1).into(),
            Box::new(move |_| {
                let r = s.write_sync(i + 10, &pattern(2, 1));
                t.send(r.is_ok()).unwrap();
            }),
        );
    }
    for _ in 0..8 {
        assert!(rx.recv_timeout(Duration::from_secs(10)).expect("deadlock"));
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting for {what}");
}

/// Idle-class writes queued ahead of a best-effort read do not delay it:
/// checked by the order operations reach the device, not by time.
#[test]
fn best_effort_read_overtakes_queued_idle_writes() {
    let gate = Arc::new(Gate::default());
    let legs: Vec<Arc<Gated>> = (0..2)
        .map(|i| {
            Arc::new(Gated {
                inner: mem(&format!("m{i}")),
                gate: gate.clone(),
                log: Mutex::new(Vec::new()),
            })
        })
        .collect();
    let set = Arc::new(
        MirrorSet::with_config(
            legs.iter().map(|l| l.clone() as DeviceRef).collect(),
            BS,
            MirrorConfig {
                slots_per_leg: 1,
                workers_per_leg: 4,
                ..MirrorConfig::default()
            },
        )
        .unwrap(),
    );
    let done = Arc::new(AtomicUsize::new(0));
    {
        let _idle = ioctx::enter(IoContext::internal("bg", IoPrio::BACKGROUND));
        let submit = |block: u64| {
            let d = done.clone();
            set.write_async(
                block,
                pattern(block as u8, 1).into(),
                Box::new(move |r| {
                    r.unwrap();
                    d.fetch_add(1, Ordering::SeqCst);
                }),
            );
        };
        // The first write holds each leg's only slot, stuck at the gate...
        submit(1);
        wait_for("first write at the gate", || {
            gate.arrived.load(Ordering::SeqCst) == 2
        });
        // ...and three more wait for the slot in the scheduler.
        for b in 2..=4 {
            submit(b);
        }
        wait_for("idle writes queued", || {
            set.queued(0) == 3 && set.queued(1) == 3
        });
    }
    let reader = {
        let set = set.clone();
        thread::spawn(move || {
            let _fg = ioctx::enter(IoContext::internal("fg", IoPrio::DEFAULT));
            let mut b = vec![0u8; BS as usize];
            set.read_sync(10, &mut b).unwrap()
        })
    };
    wait_for("read queued", || set.queued(0) + set.queued(1) == 7);
    gate.release();
    let leg = reader.join().unwrap();
    wait_for("all writes done", || done.load(Ordering::SeqCst) == 4);
    let log = legs[leg].log.lock().clone();
    assert_eq!(log.len(), 5, "{log:?}");
    assert_eq!(log[0], ("W", 1), "{log:?}");
    assert_eq!(
        log[1],
        ("R", 10),
        "the read went before the queued idle writes: {log:?}"
    );
    let mut rest: Vec<u64> = log[2..].iter().map(|&(_, b)| b).collect();
    rest.sort();
    assert_eq!(rest, [2, 3, 4]);
}

#[test]
fn a_leg_failing_reads_becomes_suspect_keeps_writes_and_is_read_last() {
    use keelfs_engine::device::{Fault, FaultDevice, FaultRule, Op};
    let mems: Vec<DeviceRef> = (0..2)
        .map(|i| Arc::new(MemDevice::new(format!("m{i}"), 64 * 4096)) as DeviceRef)
        .collect();
    let faulty = Arc::new(FaultDevice::new(mems[0].clone()));
    let config = MirrorConfig {
        suspect_after_read_errors: 3,
        ..MirrorConfig::default()
    };
    let set = MirrorSet::with_config(vec![faulty.clone(), mems[1].clone()], 4096, config).unwrap();
    let rule = faulty
        .add_rule(FaultRule::new(Op::Read, Fault::Fail))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..8 {
        set.read_sync(1, &mut buf).unwrap();
    }
    assert!(set.is_suspect(0), "suspect after 3 read errors");
    assert_eq!(set.suspect_legs().failed_legs(), vec![0]);
    assert_eq!(set.leg_state(0), LegState::InService, "still in service");
    faulty.remove_rule(rule);
    for _ in 0..6 {
        assert_eq!(set.read_order(), vec![1, 0], "the suspect leg is read last");
        assert_eq!(set.read_sync(1, &mut buf).unwrap(), 1);
    }
    set.write_sync(4, &[7u8; 4096]).unwrap();
    let mut on_leg0 = vec![0u8; 4096];
    mems[0].read_at(4 * 4096, &mut on_leg0).unwrap();
    assert_eq!(on_leg0, vec![7u8; 4096], "writes still reach it");
    // The other leg gone: the suspect one still serves.
    set.mark_failed(1);
    assert_eq!(set.read_sync(4, &mut buf).unwrap(), 0);
    set.mark_in_service(1);
    set.clear_suspect(0);
    assert!(!set.is_suspect(0));
    let legs: std::collections::BTreeSet<usize> = (0..4).map(|_| set.read_order()[0]).collect();
    assert_eq!(legs.len(), 2, "round-robin again");
}
