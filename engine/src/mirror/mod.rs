//! Mirror sets after dm-io / dm-raid1: one write goes to N devices.
//!
//! A [`MirrorSet`] is N devices ("legs") holding the same blocks. Blocks
//! are `block_size` bytes (a power of two, at least one sector); the set has
//! as many blocks as its smallest leg.
//!
//! Promises:
//! * A write goes to every in-service and every resyncing leg at once (leg jobs run on per-leg
//!   worker threads; a synchronous caller does one leg itself) and
//!   completes when every leg has answered. The answer is [`ErrorBits`]: one
//!   bit per leg whose write failed. A leg whose write or flush fails is
//!   marked [`LegState::Failed`], counted, and gets no more writes or reads
//!   until [`MirrorSet::mark_in_service`]. Only if no leg took the write is
//!   the request an error ([`EngineError::WriteFailed`]). A synchronous
//!   write of a borrowed buffer copies it once for the workers' legs (about
//!   40 µs per MiB); [`MirrorSet::write_shared_sync`] and [`Plug`] share
//!   `Arc` buffers between legs and copy nothing.
//! * A [`LegState::Resyncing`] leg (being filled from the others by the
//!   filesystem's resync) takes every write an in-service leg takes, so a
//!   block the resync has copied stays current, but it never serves a
//!   read and is never a heal source: [`MirrorSet::read_order`] and
//!   [`MirrorSet::in_service`] leave it out. A write needs at least one
//!   in-service leg ([`EngineError::NoLegs`] otherwise: a copy on a
//!   resyncing leg alone could not be read back).
//! * A read goes to one in-service leg, round-robin, and on a device error
//!   falls back to the next. A caller that knows where it reads (the
//!   integrity layer) asks [`MirrorSet::read_order_near`] instead: first
//!   the leg whose last read ended at most [`SEQUENTIAL_WINDOW`] before the
//!   new read, so a sequential stream stays on one leg and each device sees
//!   sequential reads its own readahead can serve (as md raid1's read
//!   balancing keeps a stream on one disk; alternating legs per request
//!   measured 30-40% slower on cold image files, docs/benchmarks.md);
//!   otherwise round-robin, which spreads independent readers. A read error alone does not fail a leg (a bad
//!   sector is repaired by rewriting it, which the integrity layer does);
//!   the mirror has no tags and cannot tell good bytes from bad. But a leg
//!   with [`MirrorConfig::suspect_after_read_errors`] read errors becomes
//!   *suspect* ([`MirrorSet::is_suspect`]): it keeps taking every write,
//!   but reads try it only after the other in-service legs, until
//!   [`MirrorSet::clear_suspect`] (the filesystem's scrub found it good).
//! * Every write (synchronous, async, plugged, to explicit regions, and
//!   discards) holds its blocks *shared* in the set's block-range fence
//!   while it is in flight, and picks its legs only once it holds them; a
//!   copy between legs (a heal, a resync) holds its blocks *exclusive*
//!   ([`MirrorSet::fence_exclusive`], [`MirrorSet::write_regions_held`]).
//!   So a copy never puts old bytes over a newer write, whoever wrote it.
//! * The set can grow: [`MirrorSet::attach_leg`] adds a leg (up to
//!   [`MirrorConfig::max_legs`]), which starts failed, so the caller can
//!   prepare and resync it.
//! * `flush` is a barrier on every in-service leg, in parallel.
//! * A [`Plug`] gathers writes, sorts and merges adjacent ones into one
//!   vectored write per run and leg.
//! * Every device access holds the leg's scheduler slot, taken for the
//!   *submitter's* I/O context (captured when the request is made), so
//!   idle-class work queued on a leg never holds up a best-effort reader.
//! * Requests that are malformed (length, range, leg) are refused with
//!   [`EngineError::Invalid`] before any device sees them, so a caller's bug
//!   never fails a leg.
//!
//! Relies on: [`Device`] being thread-safe and honest about errors; the
//! caller not writing the same block from two requests at once (as on a
//! disk, the outcome of overlapping concurrent writes is unspecified, and
//! here it may differ between legs).
//!
//! Locking: leg state and counters are atomics. A request first takes its
//! ranges of the fence (all at once, never one while waiting for another);
//! then it takes a job-queue lock (leaf) to queue, then at most one
//! scheduler slot per leg job for the length of one device call; slots are
//! never held while waiting for anything but the device. `workers` (the
//! thread list) is a leaf lock taken only by `attach_leg` and drop.

mod fence;
mod plug;
mod request;
mod workers;

pub use fence::FenceGuard;
pub use plug::Plug;
pub use request::{ErrorBits, Region, MAX_LEGS};
pub use workers::Callback;

use crate::device::{Device, DeviceRef, MemDevice, SECTOR};
use crate::error::{DeviceError, EngineError, EngineResult};
use crate::ioctx::{self, IoContext};
use crate::sched::Scheduler;
use crate::stats::{LegStats, StatsSnapshot};
use fence::RangeFence;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use workers::{Completion, JobQueue, OpKind};

/// Whether a leg takes I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegState {
    /// Reads and writes go to it.
    InService,
    /// It failed a write or flush (or was taken out): no I/O goes to it
    /// except explicit [`Region`]s and [`MirrorSet::read_leg`].
    Failed,
    /// Being resynced: writes go to it (as to an in-service leg), reads
    /// never do, and it is never a heal source. A failed write fails it.
    Resyncing,
}

impl LegState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => LegState::InService,
            2 => LegState::Resyncing,
            _ => LegState::Failed,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            LegState::InService => 0,
            LegState::Failed => 1,
            LegState::Resyncing => 2,
        }
    }
}

/// Tuning of a mirror set.
#[derive(Debug, Clone, Copy)]
pub struct MirrorConfig {
    /// Requests at each device at once (the leg's scheduler slots).
    pub slots_per_leg: usize,
    /// Worker threads per leg that carry async requests and the legs a
    /// synchronous caller does not do itself. More workers than slots lets
    /// queued work wait in the scheduler, where priority decides.
    pub workers_per_leg: usize,
    /// Legs the set can grow to with [`MirrorSet::attach_leg`] (fewer than
    /// the legs given, e.g. 0, means no room to grow).
    pub max_legs: usize,
    /// Device read errors on an in-service leg after which it is suspect
    /// ([`MirrorSet::is_suspect`]): reads go to the other legs first.
    pub suspect_after_read_errors: u64,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            slots_per_leg: 4,
            workers_per_leg: 4,
            max_legs: 0,
            suspect_after_read_errors: DEFAULT_SUSPECT_AFTER_READ_ERRORS,
        }
    }
}

/// The default of [`MirrorConfig::suspect_after_read_errors`].
pub const DEFAULT_SUSPECT_AFTER_READ_ERRORS: u64 = 8;

/// The answer to an async read.
#[derive(Debug)]
pub struct LegRead {
    /// The leg the bytes came from.
    pub leg: usize,
    pub data: Vec<u8>,
}

/// An async read's completion callback.
pub type ReadCallback = Box<dyn FnOnce(EngineResult<LegRead>) + Send>;

/// Shared buffers of one merged write: written back to back, never copied.
type Segments = Arc<Vec<Arc<[u8]>>>;

/// One device of the set.
struct Leg {
    /// Swapped only by [`MirrorSet::replace_device`], on a failed leg
    /// (lock order: leaf; held only to clone the handle).
    device: parking_lot::RwLock<DeviceRef>,
    sched: Scheduler,
    stats: LegStats,
    /// A [`LegState`] as `u8`.
    state: AtomicU8,
    /// Suspect: it failed reads; reads go to other legs first.
    suspect: AtomicBool,
    /// Device read errors since it was last found good (or attached).
    read_errors_unchecked: AtomicU64,
    /// The block just past the last read handed to the device (set when
    /// the read starts, so concurrent reads of one stream agree), or
    /// [`NO_POSITION`].
    read_position: AtomicU64,
    queue: Arc<JobQueue>,
}

/// A leg that has not read anything yet.
const NO_POSITION: u64 = u64::MAX;

/// How far (in bytes) a read may start from where a leg's last read ended
/// and still count as the same stream (readahead requests of one reader
/// arrive slightly out of order and several at once).
pub const SEQUENTIAL_WINDOW: u64 = 16 << 20;

/// The state shared by a set and its in-flight jobs.
struct SetShared {
    /// Every slot the set can grow to; the first `num_legs` are legs.
    legs: Vec<Leg>,
    /// Legs attached (slots in use); grows only, under `MirrorSet::workers`.
    num_legs: AtomicUsize,
    /// Every write holds its blocks shared; copies between legs hold
    /// theirs exclusive ([`fence`]).
    fence: Arc<RangeFence>,
    suspect_after_read_errors: u64,
    workers_per_leg: usize,
    block_size: u32,
    num_blocks: u64,
    /// Round-robin cursor for reads.
    next_read: AtomicUsize,
    /// Request ids (for stealing a request's own queued jobs).
    next_request: AtomicU64,
    /// Bumped on every leg state change.
    state_changes: AtomicU64,
}

/// N devices holding the same blocks. See the module documentation.
pub struct MirrorSet {
    shared: Arc<SetShared>,
    /// The legs' worker threads; also serialises [`MirrorSet::attach_leg`]
    /// (lock order: leaf).
    workers: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for MirrorSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let legs: Vec<_> = (0..self.num_legs())
            .map(|l| {
                (
                    self.shared.legs[l].device().name().to_string(),
                    self.leg_state(l),
                )
            })
            .collect();
        f.debug_struct("MirrorSet")
            .field("block_size", &self.shared.block_size)
            .field("num_blocks", &self.shared.num_blocks)
            .field("legs", &legs)
            .finish()
    }
}

/// The data of one write unit (a run of blocks, the same bytes for each
/// of its legs).
enum Payload<'a> {
    /// A caller's buffer: the caller's own leg writes it directly; it is
    /// copied once, and only if a worker needs it.
    Borrowed(&'a [u8]),
    /// Shared segments: nothing is copied.
    Shared(Segments),
}

/// A run of blocks to write to some legs.
struct WriteUnit<'a> {
    block: u64,
    /// Which outcome of the request it counts towards: the request fails
    /// if some outcome has no leg that took any of its units.
    outcome: usize,
    legs: ErrorBits,
    payload: Payload<'a>,
}

impl MirrorSet {
    /// A set over `legs` with blocks of `block_size` bytes.
    pub fn new(legs: Vec<DeviceRef>, block_size: u32) -> EngineResult<MirrorSet> {
        Self::with_config(legs, block_size, MirrorConfig::default())
    }

    pub fn with_config(
        legs: Vec<DeviceRef>,
        block_size: u32,
        config: MirrorConfig,
    ) -> EngineResult<MirrorSet> {
        if legs.is_empty() || legs.len() > MAX_LEGS {
            return Err(EngineError::Invalid(format!(
                "a mirror set needs 1 to {MAX_LEGS} legs, not {}",
                legs.len()
            )));
        }
        if !block_size.is_power_of_two() || u64::from(block_size) < SECTOR {
            return Err(EngineError::Invalid(format!(
                "block size {block_size} is not a power of two of at least {SECTOR}"
            )));
        }
        let num_blocks = legs.iter().map(|d| d.size()).min().unwrap_or(0) / u64::from(block_size);
        let given = legs.len();
        let slots = config.max_legs.clamp(given, MAX_LEGS);
        let placeholder: DeviceRef = Arc::new(MemDevice::new("(no device)", 0));
        let legs: Vec<Leg> = legs
            .into_iter()
            .chain(std::iter::repeat_n(placeholder, slots - given))
            .enumerate()
            .map(|(i, device)| Leg {
                device: parking_lot::RwLock::new(device),
                sched: Scheduler::new(config.slots_per_leg),
                stats: LegStats::new(),
                state: AtomicU8::new(if i < given {
                    LegState::InService.as_u8()
                } else {
                    LegState::Failed.as_u8()
                }),
                suspect: AtomicBool::new(false),
                read_errors_unchecked: AtomicU64::new(0),
                read_position: AtomicU64::new(NO_POSITION),
                queue: Arc::new(JobQueue::new()),
            })
            .collect();
        let workers_per_leg = config.workers_per_leg.max(1);
        let workers = legs[..given]
            .iter()
            .enumerate()
            .flat_map(|(i, leg)| workers::spawn_workers(leg.queue.clone(), i, workers_per_leg))
            .collect();
        Ok(MirrorSet {
            shared: Arc::new(SetShared {
                legs,
                num_legs: AtomicUsize::new(given),
                fence: RangeFence::new(),
                suspect_after_read_errors: config.suspect_after_read_errors.max(1),
                workers_per_leg,
                block_size,
                num_blocks,
                next_read: AtomicUsize::new(0),
                next_request: AtomicU64::new(0),
                state_changes: AtomicU64::new(0),
            }),
            workers: Mutex::new(workers),
        })
    }

    pub fn block_size(&self) -> u32 {
        self.shared.block_size
    }

    /// Usable blocks: the smallest leg's size in blocks.
    pub fn num_blocks(&self) -> u64 {
        self.shared.num_blocks
    }

    /// Legs in the set (attached ones: see [`MirrorSet::attach_leg`]).
    pub fn num_legs(&self) -> usize {
        self.shared.num_legs()
    }

    /// Legs the set can grow to.
    pub fn max_legs(&self) -> usize {
        self.shared.legs.len()
    }

    /// The device of `leg` (panics if there is no such leg).
    pub fn leg_device(&self, leg: usize) -> DeviceRef {
        self.shared.legs[leg].device()
    }

    /// Add `device` as a new leg (turning a single device into a mirror, a
    /// two-way mirror into a three-way one). The leg starts
    /// [`LegState::Failed`] — no I/O but explicit regions — until the
    /// caller has prepared it and marks it resyncing. Refused if the set
    /// has no room left ([`MirrorConfig::max_legs`]) or the device does
    /// not hold every block of the set. Returns the new leg's number.
    pub fn attach_leg(&self, device: DeviceRef) -> EngineResult<usize> {
        let mut workers = self.workers.lock();
        let shared = &self.shared;
        let leg = shared.num_legs();
        if leg >= shared.legs.len() {
            return Err(EngineError::Invalid(format!(
                "the mirror set has room for {} legs, all in use",
                shared.legs.len()
            )));
        }
        let need = shared.num_blocks * u64::from(shared.block_size);
        if device.size() < need {
            return Err(EngineError::Invalid(format!(
                "{}: {} bytes, but the set needs {need}",
                device.name(),
                device.size()
            )));
        }
        let slot = &shared.legs[leg];
        log::info!("mirror leg {leg} ({}): attached", device.name());
        *slot.device.write() = device;
        slot.state
            .store(LegState::Failed.as_u8(), Ordering::Release);
        slot.suspect.store(false, Ordering::Relaxed);
        slot.read_errors_unchecked.store(0, Ordering::Relaxed);
        slot.stats.reset();
        workers.extend(workers::spawn_workers(
            slot.queue.clone(),
            leg,
            shared.workers_per_leg,
        ));
        shared.num_legs.store(leg + 1, Ordering::Release);
        shared.state_changes.fetch_add(1, Ordering::Relaxed);
        Ok(leg)
    }

    /// Whether `leg` is suspect: it had [`MirrorConfig::suspect_after_read_errors`]
    /// device read errors (or was marked). A suspect leg still takes every
    /// write, but reads go to the other in-service legs first.
    pub fn is_suspect(&self, leg: usize) -> bool {
        self.shared.legs[leg].suspect.load(Ordering::Acquire)
    }

    /// Mark `leg` suspect (e.g. as recorded in a superblock).
    pub fn mark_suspect(&self, leg: usize) {
        self.shared.set_suspect(leg, true);
    }

    /// `leg` was checked and found good: no longer suspect, its count of
    /// read errors starts again.
    pub fn clear_suspect(&self, leg: usize) {
        self.shared.legs[leg]
            .read_errors_unchecked
            .store(0, Ordering::Relaxed);
        self.shared.set_suspect(leg, false);
    }

    /// The suspect legs.
    pub fn suspect_legs(&self) -> ErrorBits {
        (0..self.num_legs())
            .filter(|&l| self.is_suspect(l))
            .fold(ErrorBits::NONE, ErrorBits::with)
    }

    /// Hold `count` blocks at `first` against every write through this set
    /// until the guard is dropped, to copy them between legs
    /// ([`MirrorSet::write_regions_held`]) without undoing a newer write.
    /// Do not write through the set otherwise while holding it.
    pub fn fence_exclusive(&self, first: u64, count: u64) -> FenceGuard {
        self.shared.fence.exclusive(first, count)
    }

    /// Put `device` in the place of failed leg `leg` (replacing a dead
    /// disk): the leg stays failed until the caller resyncs it, and its
    /// counters and suspicion start again. Refused unless the leg is failed
    /// and the device holds every block of the set.
    pub fn replace_device(&self, leg: usize, device: DeviceRef) -> EngineResult<()> {
        self.shared.check_leg(leg)?;
        if self.leg_state(leg) != LegState::Failed {
            return Err(EngineError::Invalid(format!(
                "leg {leg} is {:?}: only a failed leg can be replaced",
                self.leg_state(leg)
            )));
        }
        let need = self.shared.num_blocks * u64::from(self.shared.block_size);
        if device.size() < need {
            return Err(EngineError::Invalid(format!(
                "{}: {} bytes, but the set needs {need}",
                device.name(),
                device.size()
            )));
        }
        let slot = &self.shared.legs[leg];
        *slot.device.write() = device;
        slot.stats.reset();
        slot.suspect.store(false, Ordering::Relaxed);
        slot.read_errors_unchecked.store(0, Ordering::Relaxed);
        self.shared.state_changes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The state of `leg` (panics if there is no such leg).
    pub fn leg_state(&self, leg: usize) -> LegState {
        self.shared.leg_state(leg)
    }

    /// Take `leg` out of service.
    pub fn mark_failed(&self, leg: usize) {
        self.shared.set_state(leg, LegState::Failed);
    }

    /// Put `leg` back in service (the caller has resynced it).
    pub fn mark_in_service(&self, leg: usize) {
        self.shared.set_state(leg, LegState::InService);
    }

    /// Start resyncing `leg`: from now on it takes every write, but serves
    /// no read until [`MirrorSet::mark_in_service`].
    pub fn mark_resyncing(&self, leg: usize) {
        self.shared.set_state(leg, LegState::Resyncing);
    }

    /// Move `leg` from `from` to `to` only if it is in `from` (so a resync
    /// that finishes never revives a leg that failed meanwhile). Returns
    /// whether it moved.
    pub fn transition(&self, leg: usize, from: LegState, to: LegState) -> bool {
        self.shared.transition(leg, from, to)
    }

    /// The in-service legs (those that serve reads).
    pub fn in_service(&self) -> ErrorBits {
        self.shared.in_service()
    }

    /// The legs a write goes to: in-service and resyncing.
    pub fn write_legs(&self) -> ErrorBits {
        self.shared.write_legs()
    }

    /// A counter bumped on every leg state change, so a caller can notice
    /// that it must record a failure (e.g. in the superblocks).
    pub fn state_changes(&self) -> u64 {
        self.shared.state_changes.load(Ordering::Relaxed)
    }

    /// The live counters of `leg`.
    pub fn leg_stats(&self, leg: usize) -> &LegStats {
        &self.shared.legs[leg].stats
    }

    /// A copy of every leg's counters, by leg.
    pub fn stats(&self) -> Vec<StatsSnapshot> {
        self.shared
            .legs
            .iter()
            .map(|l| l.stats.snapshot())
            .collect()
    }

    /// Zero every leg's counters.
    pub fn reset_stats(&self) {
        self.shared.legs.iter().for_each(|l| l.stats.reset());
    }

    /// Requests waiting for a dispatch slot on `leg`.
    pub fn queued(&self, leg: usize) -> usize {
        self.shared.legs[leg].sched.queued()
    }

    /// Jobs on `leg` waiting for a worker thread.
    pub fn pending_jobs(&self, leg: usize) -> usize {
        self.shared.legs[leg].queue.len()
    }

    /// Refuse a request for `len` bytes at `block` unless they are whole
    /// blocks inside the set.
    pub fn check_range(&self, block: u64, len: usize) -> EngineResult<()> {
        self.shared.check_range(block, len)
    }

    /// In-service legs in the order a read should try them: the legs that
    /// are not suspect, from a round-robin start, then the suspect ones.
    pub fn read_order(&self) -> Vec<usize> {
        self.shared.read_order()
    }

    /// In-service legs in the order a read at `block` should try them:
    /// first the leg whose last read ended near `block` (see the module
    /// docs), else round-robin; then the others.
    pub fn read_order_near(&self, block: u64) -> Vec<usize> {
        self.shared.read_order_near(Some(block))
    }

    // ---- writes -------------------------------------------------------

    /// Write `data` (whole blocks) at `block` on every in-service leg.
    pub fn write_sync(&self, block: u64, data: &[u8]) -> EngineResult<ErrorBits> {
        self.write_sync_while(block, data, || ())
    }

    /// [`MirrorSet::write_sync`], running `meanwhile` on the calling thread
    /// once the other legs' writes are queued and before this thread writes
    /// its own leg (e.g. computing tags of `data` while it is written).
    /// `meanwhile` does not run if the request is refused.
    pub fn write_sync_while(
        &self,
        block: u64,
        data: &[u8],
        meanwhile: impl FnOnce(),
    ) -> EngineResult<ErrorBits> {
        self.shared.check_range(block, data.len())?;
        let _fence = self.shared.fence_writes(&[(block, data.len())]);
        let legs = self.shared.write_legs_nonempty()?;
        self.write_units_while(
            ioctx::current(),
            vec![WriteUnit {
                block,
                outcome: 0,
                legs,
                payload: Payload::Borrowed(data),
            }],
            &[block],
            meanwhile,
        )
    }

    /// [`MirrorSet::write_sync`] for a buffer the legs can share: nothing
    /// is copied.
    pub fn write_shared_sync(&self, block: u64, data: Arc<[u8]>) -> EngineResult<ErrorBits> {
        self.shared.check_range(block, data.len())?;
        let _fence = self.shared.fence_writes(&[(block, data.len())]);
        let legs = self.shared.write_legs_nonempty()?;
        self.write_units(
            ioctx::current(),
            vec![WriteUnit {
                block,
                outcome: 0,
                legs,
                payload: Payload::Shared(Arc::new(vec![data])),
            }],
            &[block],
        )
    }

    /// Write `data` to each of `regions` (each `data.len()` bytes long), in
    /// whatever state their legs are. Bits are set for failed regions' legs;
    /// an error only if no region was written.
    pub fn write_regions_sync(&self, regions: &[Region], data: &[u8]) -> EngineResult<ErrorBits> {
        let ranges: Vec<(u64, usize)> = regions.iter().map(|r| (r.block, data.len())).collect();
        let _fence = self.shared.fence_writes(&ranges);
        self.write_regions(regions, data)
    }

    /// [`MirrorSet::write_regions_sync`] by the holder of `guard`
    /// ([`MirrorSet::fence_exclusive`]), which must cover every region:
    /// the copy of a heal or a resync.
    pub fn write_regions_held(
        &self,
        guard: &FenceGuard,
        regions: &[Region],
        data: &[u8],
    ) -> EngineResult<ErrorBits> {
        if let Some(r) = regions
            .iter()
            .find(|r| !guard.covers_exclusive(r.block, r.count))
        {
            return Err(EngineError::Invalid(format!(
                "blocks {}+{} are not held exclusive by the writer",
                r.block, r.count
            )));
        }
        self.write_regions(regions, data)
    }

    fn write_regions(&self, regions: &[Region], data: &[u8]) -> EngineResult<ErrorBits> {
        if regions.is_empty() {
            return Ok(ErrorBits::NONE);
        }
        let mut units = Vec::with_capacity(regions.len());
        for r in regions {
            self.shared.check_leg(r.leg)?;
            self.shared.check_range(r.block, data.len())?;
            if r.count * u64::from(self.shared.block_size) != data.len() as u64 {
                return Err(EngineError::Invalid(format!(
                    "region of {} blocks for {} bytes",
                    r.count,
                    data.len()
                )));
            }
            units.push(WriteUnit {
                block: r.block,
                outcome: 0,
                legs: ErrorBits::NONE.with(r.leg),
                payload: Payload::Borrowed(data),
            });
        }
        // One outcome for all regions: an error only if none was written.
        self.write_units(ioctx::current(), units, &[regions[0].block])
    }

    /// Write `data` at `block` on every in-service leg without waiting;
    /// `done` runs exactly once, on a worker thread, with the error bits.
    /// The blocks are held in the fence (see [`MirrorSet::fence_exclusive`])
    /// until every leg has answered: this call may wait for a copy between
    /// legs of the same blocks to finish.
    pub fn write_async(&self, block: u64, data: Arc<[u8]>, done: Callback) {
        let ctx = ioctx::current();
        if let Err(e) = self.shared.check_range(block, data.len()) {
            return self
                .shared
                .deliver_later(ctx, Box::new(move || done(Err(e))));
        }
        let fence = self.shared.fence_writes(&[(block, data.len())]);
        let legs = match self.shared.write_legs_nonempty() {
            Ok(legs) => legs,
            Err(e) => {
                drop(fence);
                return self
                    .shared
                    .deliver_later(ctx, Box::new(move || done(Err(e))));
            }
        };
        let done: Callback = Box::new(move |result| {
            drop(fence);
            done(result)
        });
        let segs: Segments = Arc::new(vec![data]);
        let completion = Completion::new(OpKind::Write, legs.count(), &[block], Some(done));
        let request = self.shared.new_request();
        for leg in legs.legs() {
            self.shared
                .queue_write(&ctx, request, &completion, leg, 0, block, segs.clone());
        }
    }

    /// Start collecting writes to submit together, sorted and merged.
    pub fn plug(&self) -> Plug<'_> {
        Plug::new(self)
    }

    /// Carry out `units`: every (unit, leg) pair but those of one leg go
    /// to workers, this thread does that leg, then helps and waits.
    /// `outcomes` holds the first block of each outcome (for the error).
    fn write_units(
        &self,
        ctx: Arc<IoContext>,
        units: Vec<WriteUnit<'_>>,
        outcomes: &[u64],
    ) -> EngineResult<ErrorBits> {
        self.write_units_while(ctx, units, outcomes, || ())
    }

    /// [`MirrorSet::write_units`], running `meanwhile` between queueing the
    /// workers' jobs and doing this thread's leg.
    fn write_units_while(
        &self,
        ctx: Arc<IoContext>,
        units: Vec<WriteUnit<'_>>,
        outcomes: &[u64],
        meanwhile: impl FnOnce(),
    ) -> EngineResult<ErrorBits> {
        let shared = &self.shared;
        let jobs: usize = units.iter().map(|u| u.legs.count()).sum();
        if jobs == 0 {
            return Err(EngineError::NoLegs);
        }
        let completion = Completion::new(OpKind::Write, jobs, outcomes, None);
        let request = shared.new_request();
        let own_leg = units
            .iter()
            .find_map(|u| u.legs.legs().next())
            .expect("some unit has a leg");
        // Copies of borrowed buffers, made once each and only if needed.
        let mut copies: Vec<(&[u8], Arc<[u8]>)> = Vec::new();
        let mut helped = ErrorBits::NONE;
        for u in &units {
            for leg in u.legs.legs().filter(|&l| l != own_leg) {
                let segs = match &u.payload {
                    Payload::Shared(s) => s.clone(),
                    Payload::Borrowed(b) => {
                        let copy = match copies.iter().find(|(src, _)| std::ptr::eq(*src, *b)) {
                            Some((_, c)) => c.clone(),
                            None => {
                                let c: Arc<[u8]> = Arc::from(*b);
                                copies.push((b, c.clone()));
                                c
                            }
                        };
                        Arc::new(vec![copy])
                    }
                };
                shared.queue_write(&ctx, request, &completion, leg, u.outcome, u.block, segs);
                helped.set(leg);
            }
        }
        meanwhile();
        for u in units.iter().filter(|u| u.legs.has(own_leg)) {
            let offset = shared.offset(u.block);
            let result = match &u.payload {
                Payload::Borrowed(b) => shared.exec_write(own_leg, &ctx, offset, &[b]),
                Payload::Shared(s) => {
                    let bufs: Vec<&[u8]> = s.iter().map(|b| &b[..]).collect();
                    shared.exec_write(own_leg, &ctx, offset, &bufs)
                }
            };
            completion.finish(own_leg, u.outcome, result);
        }
        shared.help(request, helped);
        completion.wait()
    }

    // ---- reads --------------------------------------------------------

    /// Read `buf.len()` bytes (whole blocks) at `block` from `leg`, in
    /// whatever state it is.
    pub fn read_leg(&self, leg: usize, block: u64, buf: &mut [u8]) -> EngineResult<()> {
        self.shared.check_leg(leg)?;
        self.shared.check_range(block, buf.len())?;
        let offset = self.shared.offset(block);
        Ok(self.shared.exec_read(leg, &ioctx::current(), offset, buf)?)
    }

    /// Read from one in-service leg (round-robin), falling back to the next
    /// on a device error. Returns the leg that answered.
    pub fn read_sync(&self, block: u64, buf: &mut [u8]) -> EngineResult<usize> {
        self.shared.check_range(block, buf.len())?;
        let ctx = ioctx::current();
        let offset = self.shared.offset(block);
        let mut last = None;
        for leg in self.shared.read_order() {
            match self.shared.exec_read(leg, &ctx, offset, buf) {
                Ok(()) => return Ok(leg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(EngineError::NoLegs, EngineError::Device))
    }

    /// Read `count` blocks at `block` without waiting; `done` runs exactly
    /// once, on a worker thread.
    pub fn read_async(&self, block: u64, count: u64, done: ReadCallback) {
        let ctx = ioctx::current();
        let len = count
            .checked_mul(u64::from(self.shared.block_size))
            .and_then(|l| usize::try_from(l).ok());
        let checked = match len {
            Some(len) => self.shared.check_range(block, len).map(|_| len),
            None => Err(EngineError::Invalid(format!("{count} blocks is too long"))),
        };
        let order = self.shared.read_order();
        match checked {
            Ok(_) if order.is_empty() => {
                let e = EngineError::NoLegs;
                self.shared
                    .deliver_later(ctx, Box::new(move || done(Err(e))))
            }
            Ok(len) => SetShared::queue_read(&self.shared, ctx, order, 0, block, len, None, done),
            Err(e) => self
                .shared
                .deliver_later(ctx, Box::new(move || done(Err(e)))),
        }
    }

    // ---- flush and discard -------------------------------------------

    /// A barrier on every in-service leg, in parallel. A leg whose flush
    /// fails is marked failed; an error only if every leg failed.
    pub fn flush(&self) -> EngineResult<ErrorBits> {
        let legs = self.shared.write_legs_nonempty()?;
        self.run_on_legs(OpKind::Flush, legs, 0, 0)
    }

    /// Discard `count` blocks at `block` on every in-service leg (advisory:
    /// a failure is reported in the bits but does not fail the leg).
    pub fn discard(&self, block: u64, count: u64) -> EngineResult<ErrorBits> {
        let bs = u64::from(self.shared.block_size);
        let len = count
            .checked_mul(bs)
            .filter(|_| {
                block
                    .checked_add(count)
                    .is_some_and(|e| e <= self.shared.num_blocks)
            })
            .ok_or_else(|| {
                EngineError::Invalid(format!("discard of {count} blocks at {block} out of range"))
            })?;
        if count == 0 {
            return Ok(ErrorBits::NONE);
        }
        let _fence = self.shared.fence.shared_many(&[(block, count)]);
        let legs = self.shared.write_legs_nonempty()?;
        self.run_on_legs(OpKind::Discard, legs, block, len)
    }

    /// A flush or discard on `legs`, this thread doing the first.
    fn run_on_legs(
        &self,
        kind: OpKind,
        legs: ErrorBits,
        block: u64,
        len: u64,
    ) -> EngineResult<ErrorBits> {
        let shared = &self.shared;
        let ctx = ioctx::current();
        let completion = Completion::new(kind, legs.count(), &[block], None);
        let request = shared.new_request();
        let offset = shared.offset(block);
        let mut it = legs.legs();
        let own = it.next().expect("legs is not empty");
        let mut helped = ErrorBits::NONE;
        for leg in it {
            let (s, c, x) = (shared.clone(), completion.clone(), ctx.clone());
            shared.legs[leg].queue.push(
                ctx.clone(),
                request,
                Box::new(move || c.finish(leg, 0, s.exec_other(kind, leg, &x, offset, len))),
            );
            helped.set(leg);
        }
        completion.finish(own, 0, shared.exec_other(kind, own, &ctx, offset, len));
        shared.help(request, helped);
        completion.wait()
    }
}

impl Drop for MirrorSet {
    fn drop(&mut self) {
        for leg in &self.shared.legs {
            leg.queue.close();
        }
        let me = thread::current().id();
        for w in self.workers.get_mut().drain(..) {
            // The last handle may be dropped by a callback on a worker.
            if w.thread().id() != me {
                let _ = w.join();
            }
        }
    }
}

impl Leg {
    fn device(&self) -> DeviceRef {
        self.device.read().clone()
    }
}

impl SetShared {
    fn leg_state(&self, leg: usize) -> LegState {
        LegState::from_u8(self.legs[leg].state.load(Ordering::Acquire))
    }

    fn set_state(&self, leg: usize, state: LegState) {
        let old = self.legs[leg].state.swap(state.as_u8(), Ordering::AcqRel);
        if old != state.as_u8() {
            self.state_changes.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "mirror leg {leg} ({}): now {state:?}",
                self.legs[leg].device().name()
            );
        }
    }

    fn transition(&self, leg: usize, from: LegState, to: LegState) -> bool {
        let moved = self.legs[leg]
            .state
            .compare_exchange(
                from.as_u8(),
                to.as_u8(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if moved && from != to {
            self.state_changes.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "mirror leg {leg} ({}): now {to:?}",
                self.legs[leg].device().name()
            );
        }
        moved
    }

    fn num_legs(&self) -> usize {
        self.num_legs.load(Ordering::Acquire)
    }

    fn set_suspect(&self, leg: usize, suspect: bool) {
        if self.legs[leg].suspect.swap(suspect, Ordering::AcqRel) != suspect {
            self.state_changes.fetch_add(1, Ordering::Relaxed);
            let name = self.legs[leg].device().name().to_string();
            if suspect {
                log::warn!(
                    "mirror leg {leg} ({name}): suspect (it failed reads): reads go to the \
                     other legs first, writes still go to it, until a check finds it good"
                );
            } else {
                log::info!("mirror leg {leg} ({name}): checked, no longer suspect");
            }
        }
    }

    fn in_service(&self) -> ErrorBits {
        (0..self.num_legs())
            .filter(|&l| self.leg_state(l) == LegState::InService)
            .fold(ErrorBits::NONE, ErrorBits::with)
    }

    fn write_legs(&self) -> ErrorBits {
        (0..self.num_legs())
            .filter(|&l| matches!(self.leg_state(l), LegState::InService | LegState::Resyncing))
            .fold(ErrorBits::NONE, ErrorBits::with)
    }

    /// The legs a write goes to; an error if none of them is in service
    /// (a resyncing leg alone cannot serve the data back).
    fn write_legs_nonempty(&self) -> EngineResult<ErrorBits> {
        if self.in_service().is_clear() {
            return Err(EngineError::NoLegs);
        }
        Ok(self.write_legs())
    }

    /// In-service legs that are not suspect, round-robin, then the
    /// suspect ones.
    fn read_order(&self) -> Vec<usize> {
        self.read_order_near(None)
    }

    /// See [`MirrorSet::read_order_near`]; `None`: round-robin. Suspect
    /// legs come last whatever the position.
    fn read_order_near(&self, near: Option<u64>) -> Vec<usize> {
        let (suspect, trusted): (Vec<usize>, Vec<usize>) = self
            .in_service()
            .failed_legs()
            .into_iter()
            .partition(|&l| self.legs[l].suspect.load(Ordering::Acquire));
        let (legs, last) = if trusted.is_empty() {
            (suspect, Vec::new())
        } else {
            (trusted, suspect)
        };
        if legs.is_empty() {
            return legs;
        }
        let start = match near.and_then(|block| self.nearest_reader(&legs, block)) {
            Some(i) => i,
            None => self.next_read.fetch_add(1, Ordering::Relaxed) % legs.len(),
        };
        legs[start..]
            .iter()
            .chain(&legs[..start])
            .chain(&last)
            .copied()
            .collect()
    }

    /// Hold the blocks of writes `(first block, bytes)` shared in the
    /// fence. Taken *before* the legs of the write are chosen, so a leg put
    /// under resync while a write waited here still gets that write.
    fn fence_writes(&self, writes: &[(u64, usize)]) -> FenceGuard {
        let bs = u64::from(self.block_size);
        let ranges: Vec<(u64, u64)> = writes
            .iter()
            .map(|&(first, len)| (first, (len as u64).div_ceil(bs)))
            .collect();
        self.fence.shared_many(&ranges)
    }

    /// The index in `legs` of the leg whose last read ended closest before
    /// `block`, if one ended at most [`SEQUENTIAL_WINDOW`] before it. Only
    /// forward: reading again what a leg just read (a retry, a check of
    /// every copy) is not a continuation and goes round-robin.
    fn nearest_reader(&self, legs: &[usize], block: u64) -> Option<usize> {
        let window = SEQUENTIAL_WINDOW / u64::from(self.block_size);
        legs.iter()
            .enumerate()
            .filter_map(|(i, &leg)| {
                let at = self.legs[leg].read_position.load(Ordering::Relaxed);
                (at != NO_POSITION)
                    .then(|| block.checked_sub(at))
                    .flatten()
                    .filter(|&d| d <= window)
                    .map(|d| (d, i))
            })
            .min()
            .map(|(_, i)| i)
    }

    fn new_request(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    fn offset(&self, block: u64) -> u64 {
        block * u64::from(self.block_size)
    }

    fn check_leg(&self, leg: usize) -> EngineResult<()> {
        if leg >= self.num_legs() {
            return Err(EngineError::Invalid(format!(
                "leg {leg} of a {}-leg set",
                self.num_legs()
            )));
        }
        Ok(())
    }

    /// `len` bytes at `block` are whole blocks inside the set.
    fn check_range(&self, block: u64, len: usize) -> EngineResult<()> {
        let bs = u64::from(self.block_size);
        let len = len as u64;
        if len == 0 || len % bs != 0 {
            return Err(EngineError::Invalid(format!(
                "{len} bytes is not a whole number of {bs}-byte blocks"
            )));
        }
        match block.checked_add(len / bs) {
            Some(end) if end <= self.num_blocks => Ok(()),
            _ => Err(EngineError::Invalid(format!(
                "blocks {block}+{} beyond the end ({} blocks)",
                len / bs,
                self.num_blocks
            ))),
        }
    }

    /// Run on a worker something that is not I/O (an error found at
    /// submission), so async callbacks never run on the submitter.
    fn deliver_later(&self, ctx: Arc<IoContext>, run: workers::JobFn) {
        let request = self.new_request();
        self.legs[0].queue.push(ctx, request, run);
    }

    /// Run here the jobs of `request` on `legs` that no worker has started.
    fn help(&self, request: u64, legs: ErrorBits) {
        for leg in legs.legs() {
            while let Some(job) = self.legs[leg].queue.steal(request) {
                job();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn queue_write(
        self: &Arc<Self>,
        ctx: &Arc<IoContext>,
        request: u64,
        completion: &Arc<Completion>,
        leg: usize,
        outcome: usize,
        block: u64,
        segs: Segments,
    ) {
        let (s, c, x) = (self.clone(), completion.clone(), ctx.clone());
        let offset = self.offset(block);
        self.legs[leg].queue.push(
            ctx.clone(),
            request,
            Box::new(move || {
                let bufs: Vec<&[u8]> = segs.iter().map(|b| &b[..]).collect();
                c.finish(leg, outcome, s.exec_write(leg, &x, offset, &bufs));
            }),
        );
    }

    /// Try leg `order[i]`; on a device error queue the next one.
    #[allow(clippy::too_many_arguments)]
    fn queue_read(
        this: &Arc<Self>,
        ctx: Arc<IoContext>,
        order: Vec<usize>,
        i: usize,
        block: u64,
        len: usize,
        last: Option<DeviceError>,
        done: ReadCallback,
    ) {
        let Some(&leg) = order.get(i) else {
            let e = last.map_or(EngineError::NoLegs, EngineError::Device);
            return done(Err(e));
        };
        let (s, x) = (this.clone(), ctx.clone());
        let request = this.new_request();
        this.legs[leg].queue.push(
            ctx,
            request,
            Box::new(move || {
                let mut data = vec![0u8; len];
                match s.exec_read(leg, &x, s.offset(block), &mut data) {
                    Ok(()) => done(Ok(LegRead { leg, data })),
                    Err(e) => Self::queue_read(&s, x, order, i + 1, block, len, Some(e), done),
                }
            }),
        );
    }

    /// One device write on `leg` under its scheduler slot, counted; a
    /// failure fails the leg.
    fn exec_write(
        &self,
        leg: usize,
        ctx: &Arc<IoContext>,
        offset: u64,
        bufs: &[&[u8]],
    ) -> Result<(), DeviceError> {
        let l = &self.legs[leg];
        let bytes: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        let result = {
            let _slot = l.sched.acquire_for(ctx.clone());
            let device = l.device();
            guard_panic(&*device, "write", offset, || match bufs {
                [one] => device.write_at(offset, one),
                many => device.write_vectored_at(offset, many),
            })
        };
        match &result {
            Ok(()) => l.stats.record_write(bytes),
            Err(e) => {
                l.stats.record_write_error();
                log::error!("mirror leg {leg}: write failed: {e}");
                self.set_state(leg, LegState::Failed);
            }
        }
        result
    }

    /// One device read on `leg` under its scheduler slot, counted.
    fn exec_read(
        &self,
        leg: usize,
        ctx: &Arc<IoContext>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), DeviceError> {
        let l = &self.legs[leg];
        let end = (offset + buf.len() as u64) / u64::from(self.block_size);
        l.read_position.store(end, Ordering::Relaxed);
        let result = {
            let _slot = l.sched.acquire_for(ctx.clone());
            let device = l.device();
            guard_panic(&*device, "read", offset, || device.read_at(offset, buf))
        };
        match &result {
            Ok(()) => l.stats.record_read(buf.len() as u64),
            Err(e) => {
                l.stats.record_read_error();
                log::warn!("mirror leg {leg}: read failed: {e}");
                let unchecked = l.read_errors_unchecked.fetch_add(1, Ordering::Relaxed) + 1;
                if unchecked >= self.suspect_after_read_errors
                    && self.leg_state(leg) == LegState::InService
                {
                    self.set_suspect(leg, true);
                }
            }
        }
        result
    }

    /// A flush or discard on `leg` under its scheduler slot.
    fn exec_other(
        &self,
        kind: OpKind,
        leg: usize,
        ctx: &Arc<IoContext>,
        offset: u64,
        len: u64,
    ) -> Result<(), DeviceError> {
        let l = &self.legs[leg];
        let _slot = l.sched.acquire_for(ctx.clone());
        let device = l.device();
        match kind {
            OpKind::Flush => {
                let result = guard_panic(&*device, "flush", 0, || device.flush());
                match &result {
                    Ok(()) => l.stats.record_flush(),
                    Err(e) => {
                        l.stats.record_flush_error();
                        log::error!("mirror leg {leg}: flush failed: {e}");
                        self.set_state(leg, LegState::Failed);
                    }
                }
                result
            }
            OpKind::Discard => {
                let result =
                    guard_panic(&*device, "discard", offset, || device.discard(offset, len));
                if let Err(e) = &result {
                    log::warn!("mirror leg {leg}: discard failed: {e}");
                }
                result
            }
            OpKind::Write => unreachable!("writes go through exec_write"),
        }
    }
}

/// Run a device call, turning a panic inside the device into an error so a
/// request always completes.
fn guard_panic(
    device: &dyn Device,
    op: &'static str,
    offset: u64,
    f: impl FnOnce() -> Result<(), DeviceError>,
) -> Result<(), DeviceError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(DeviceError::Io {
            device: device.name().to_string(),
            op,
            offset,
            source: std::io::Error::other("device panicked"),
        })
    })
}
