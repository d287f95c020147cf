//! Mirror health of a mounted filesystem: failed legs recorded in the
//! superblocks, error counters made persistent, and the end of service
//! when no leg is left.
//!
//! What it promises:
//!
//! * a leg the mirror takes out of service (a write or flush failed) is
//!   logged once, by name, and recorded `Failed` in the member table of the
//!   superblocks of the legs still in service (the keeper writes only
//!   those), within one poll interval of the failure;
//! * a leg the mirror finds suspect (it failed reads; it keeps taking
//!   writes, reads go to the other legs first) is logged once and recorded
//!   "needs check" in the member table, and the flag is cleared there when
//!   a scrub finds the leg good (`scrub.rs` clears it in the mirror);
//! * the per-leg error counters of this mount are added into the
//!   superblocks' persistent member counters at every superblock write
//!   (mount, syncfs, unmount — the keeper does that) and at most every
//!   [`PERSIST_INTERVAL`] here when they have changed;
//! * when no leg is in service the filesystem is unavailable: logged once,
//!   and [`Health::unavailable`] is what `Fs::check_writable` turns into
//!   EIO (reads fail with EIO in the engine: no leg to read).
//!
//! Relies on: `MirrorSet::state_changes` moving whenever a leg changes
//! state; the keeper's mutex being a leaf lock (the watcher takes it
//! alone, never with a journal handle or an inode lock).

use super::superblock::SuperblockKeeper;
use keelfs_engine::mirror::LegState;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the watcher looks at the mirror's leg states.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often changed error counters are written to the superblocks.
pub const PERSIST_INTERVAL: Duration = Duration::from_secs(30);

/// What the watcher knows; shared with the `Fs`.
pub struct Health {
    keeper: Arc<SuperblockKeeper>,
    /// `state_changes` of the mirror when last handled (`u64::MAX`: never).
    seen_changes: AtomicU64,
    /// Mirror leg → (in service, suspect) when last looked at (for logging
    /// once); legs added since mount are appended.
    was: Mutex<Vec<(bool, bool)>>,
    unavailable: AtomicBool,
    /// Counter sum when last persisted.
    persisted_sum: AtomicU64,
}

impl Health {
    pub fn new(keeper: Arc<SuperblockKeeper>) -> Health {
        let mirror = keeper.set().mirror();
        let was = (0..mirror.num_legs())
            .map(|p| {
                (
                    mirror.leg_state(p) == LegState::InService,
                    mirror.is_suspect(p),
                )
            })
            .collect();
        let health = Health {
            keeper,
            seen_changes: AtomicU64::new(u64::MAX),
            was: Mutex::new(was),
            unavailable: AtomicBool::new(false),
            persisted_sum: AtomicU64::new(0),
        };
        health
            .persisted_sum
            .store(health.counter_sum(), Ordering::Relaxed);
        health
    }

    /// Whether no leg is in service (the filesystem answers EIO).
    pub fn unavailable(&self) -> bool {
        self.unavailable.load(Ordering::Relaxed)
            || self.keeper.set().mirror().in_service().is_clear()
    }

    fn counter_sum(&self) -> u64 {
        self.keeper
            .set()
            .mirror()
            .stats()
            .iter()
            .map(|s| s.io_errors() + s.checksum_errors + s.healed)
            .sum()
    }

    /// Handles leg state changes since the last call: logs newly failed
    /// legs and records them in the superblocks, and records legs that
    /// became suspect (or were cleared). Returns whether a leg failed.
    /// Takes the keeper's lock: call it holding no other lock.
    pub fn check_legs(&self) -> bool {
        let mirror = self.keeper.set().mirror();
        let changes = mirror.state_changes();
        if self.seen_changes.swap(changes, Ordering::AcqRel) == changes {
            return false;
        }
        let mut newly_failed = Vec::new();
        let mut suspect_changed = false;
        {
            let mut was = self.was.lock();
            was.resize(mirror.num_legs(), (false, false));
            for (p, (was_in, was_suspect)) in was.iter_mut().enumerate() {
                let now_in = mirror.leg_state(p) == LegState::InService;
                let now_suspect = mirror.is_suspect(p);
                if *was_in && !now_in {
                    newly_failed.push(p);
                }
                suspect_changed |= now_suspect != *was_suspect;
                (*was_in, *was_suspect) = (now_in, now_suspect);
            }
        }
        if newly_failed.is_empty() && !suspect_changed {
            return false;
        }
        let legs = self.keeper.set().legs();
        for &p in &newly_failed {
            let name = legs.get(p).map_or("?", |l| l.name());
            log::error!(
                "mirror leg {name} failed (a write or flush failed): out of service; \
                 the filesystem is DEGRADED (replace or resync the leg)"
            );
        }
        if mirror.in_service().is_clear() {
            if !self.unavailable.swap(true, Ordering::Relaxed) {
                log::error!(
                    "no mirror leg is in service: the filesystem is UNAVAILABLE; \
                     every request now fails with EIO"
                );
            }
            return true;
        }
        if let Err(e) = self.keeper.write(0, |_| {}) {
            log::error!("recording the legs' state in the superblocks: {e}");
        }
        self.persisted_sum
            .store(self.counter_sum(), Ordering::Relaxed);
        !newly_failed.is_empty()
    }

    /// Writes the superblocks if the error counters changed since they
    /// were last written here.
    pub fn persist_counters(&self) {
        let sum = self.counter_sum();
        if sum == self.persisted_sum.load(Ordering::Relaxed) || self.unavailable() {
            return;
        }
        match self.keeper.write(0, |_| {}) {
            Ok(()) => self.persisted_sum.store(sum, Ordering::Relaxed),
            Err(e) => log::warn!("writing the error counters to the superblocks: {e}"),
        }
    }
}

/// The thread running [`Health::check_legs`] every [`POLL_INTERVAL`] and
/// [`Health::persist_counters`] every [`PERSIST_INTERVAL`]; stopped (and
/// joined) by [`HealthWatcher::stop`] or on drop.
pub struct HealthWatcher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl HealthWatcher {
    pub fn start(health: Arc<Health>) -> std::io::Result<HealthWatcher> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("keelfs-health".into())
                .spawn(move || watch(&health, &stop))?
        };
        Ok(HealthWatcher {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            *self.stop.0.lock() = true;
            self.stop.1.notify_all();
            let _ = thread.join();
        }
    }
}

impl Drop for HealthWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

fn watch(health: &Health, stop: &(Mutex<bool>, Condvar)) {
    let mut last_persist = Instant::now();
    loop {
        {
            let mut stopped = stop.0.lock();
            if *stopped {
                return;
            }
            stop.1.wait_for(&mut stopped, POLL_INTERVAL);
            if *stopped {
                return;
            }
        }
        health.check_legs();
        if last_persist.elapsed() >= PERSIST_INTERVAL {
            health.persist_counters();
            last_persist = Instant::now();
        }
    }
}
