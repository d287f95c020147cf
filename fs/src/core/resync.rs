//! Online resync: a leg that missed writes (stale, failed and given back,
//! a new device replacing a member, or a leg added to the set) is filled
//! from the in-service legs while the filesystem stays mounted and in use.
//!
//! What it promises ([`Fs::resync_leg`]):
//!
//! * the leg is put in the mirror's `Resyncing` state first and recorded
//!   `Resyncing` in the member table of every in-service leg's superblock;
//!   from that moment it receives every write, like an in-service leg, but
//!   serves no read and is never a heal source (engine rules);
//! * then every block that matters is copied to it from the in-service
//!   legs, in runs of up to [`RUN_BLOCKS`] blocks, each source verified:
//!   the bitmaps, the inode table and the tag table and every used
//!   data-area block no extent holds as file data (extent nodes, directory
//!   and xattr blocks: metadata checks, the newest valid generation wins),
//!   every written extent (against its tags), and the journal (superblock
//!   and ring, copied as they are). That is the scrub walk's enumeration
//!   of used blocks (`scrub.rs`) plus the journal. Blocks with no verified
//!   source are still copied (the legs end up identical) and counted in
//!   [`ResyncProgress::unverified`];
//! * all of it runs in an internal idle-class I/O context
//!   (`IoPrio::BACKGROUND`), so foreground requests are served first;
//! * at the end the leg goes back in service (only if it is still
//!   resyncing: a leg that failed meanwhile stays failed) and every
//!   in-service leg's superblock, the new one's included, records it
//!   `InUse` at the newest generation. A crash before that leaves it
//!   `Resyncing` (or stale) in the superblocks: the next mount resyncs it
//!   again from the start.
//!
//! Why nothing is missed, and nothing undone (the ordering argument):
//!
//! 1. The leg is `Resyncing` before the blocks to copy are enumerated. A
//!    block allocated or written after that point is written to the leg by
//!    its own write; a block freed after it may be copied needlessly,
//!    which is harmless.
//! 2. Each run is copied under the mirror set's block-range fence held
//!    *exclusive* (`Volume::resync_run`), and every write through the
//!    mirror set — file data, metadata written home by bufio, the journal
//!    superblock, and the journal's ring records (commit and intent
//!    records, which the journal writes straight to the mirror set) —
//!    holds its range *shared* while it is in flight. So for each block, a
//!    concurrent write either completed before the copy read the source —
//!    the copy carries its bytes — or starts after the copy wrote the
//!    target, and then overwrites the copy on every leg, the target
//!    included. A copy can never put old bytes over a newer write.
//! 3. Writes submitted before the leg became `Resyncing` did not go to it,
//!    but they hold the fence until they complete, so a copy of their
//!    blocks waits for them and reads their bytes; a write that waited for
//!    the fence chooses its legs only once it holds it, so it includes the
//!    resyncing leg.
//! 4. So the journal needs nothing special: its superblock and ring are
//!    copied as they are, last, like any other run. (Earlier versions
//!    committed, checkpointed and held a transaction handle across the
//!    ring copy because the ring was not fenced; an intent record written
//!    during the copy could then be overwritten on the new leg by an older
//!    copy. `engine/tests/mirror_resync.rs` has that race as a test.)
//!
//! Relies on: the engine's `Resyncing` state, its fence and
//! `Volume::resync_run`; the scrub walk's enumeration; the lock order (the
//! resync takes inode locks only as the scrub walk does, and the
//! superblock keeper's lock alone).

use super::Fs;
use crate::error::{FsError, FsResult};
use keelfs_engine::integrity::{ResyncCheck, ResyncRun};
use keelfs_engine::ioctx::{self, IoContext, IoPrio};
use keelfs_engine::mirror::LegState;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Blocks copied per request (and between cancel checks): 1 MiB at 4 KiB.
pub const RUN_BLOCKS: u64 = 256;

/// Progress of the resync of one leg, readable while it runs.
#[derive(Debug, Default)]
pub struct ResyncProgress {
    /// The mirror leg being resynced.
    pub leg: usize,
    /// Blocks to copy (known once the walk is done; 0 before).
    pub total: AtomicU64,
    /// Blocks copied.
    pub done: AtomicU64,
    /// Blocks copied with no verified source copy.
    pub unverified: AtomicU64,
    /// Set to stop it between runs (the leg stays `Resyncing`).
    pub cancel: AtomicBool,
    /// Set when it has ended (finished, cancelled or failed).
    pub finished: AtomicBool,
    /// Set when it finished and the leg is back in service.
    pub succeeded: AtomicBool,
    /// Why it failed, if it did.
    pub error: Mutex<Option<String>>,
}

impl ResyncProgress {
    /// Progress of a resync of mirror leg `leg`.
    pub fn new(leg: usize) -> ResyncProgress {
        ResyncProgress {
            leg,
            ..ResyncProgress::default()
        }
    }

    fn add(&self, run: &ResyncRun) {
        self.done.fetch_add(run.copied, Ordering::Relaxed);
        self.unverified
            .fetch_add(run.unverified.len() as u64, Ordering::Relaxed);
    }

    /// One line: leg, blocks done of total, percent, state.
    pub fn describe(&self) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        let percent = if total == 0 {
            0.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        let state = if self.succeeded.load(Ordering::Relaxed) {
            "finished".to_string()
        } else if let Some(e) = self.error.lock().as_ref() {
            format!("failed ({e})")
        } else if self.finished.load(Ordering::Relaxed) {
            "cancelled".to_string()
        } else {
            "running".to_string()
        };
        format!(
            "leg {}: {state}, {done} of {total} blocks ({percent:.1}%), {} unverified",
            self.leg,
            self.unverified.load(Ordering::Relaxed)
        )
    }
}

/// The background resyncs of a mounted filesystem.
#[derive(Default)]
pub struct ResyncControl {
    /// Every resync started since mount (lock order: leaf).
    jobs: Mutex<Vec<Arc<ResyncProgress>>>,
    /// The thread running them (lock order: leaf; never held while the
    /// thread is joined by someone else).
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Fs {
    /// Resyncs mirror leg `leg` (see the module docs); returns when it is
    /// back in service, cancelled (`progress.cancel`; `Ok`, the leg stays
    /// resyncing) or failed.
    pub fn resync_leg(&self, leg: usize, progress: &ResyncProgress) -> FsResult<()> {
        let result = self.resync_inner(leg, progress);
        if let Err(e) = &result {
            log::error!("resync of leg {leg}: {e}");
            *progress.error.lock() = Some(e.to_string());
        }
        progress.finished.store(true, Ordering::Relaxed);
        result
    }

    fn resync_inner(&self, leg: usize, progress: &ResyncProgress) -> FsResult<()> {
        if self.read_only {
            return Err(FsError::ReadOnly);
        }
        let mirror = Arc::clone(self.volume.set());
        if leg >= mirror.num_legs() {
            return Err(FsError::Invalid(format!(
                "no mirror leg {leg} (the set has {})",
                mirror.num_legs()
            )));
        }
        match mirror.leg_state(leg) {
            LegState::InService => {
                return Err(FsError::Invalid(format!(
                    "mirror leg {leg} is in service: nothing to resync"
                )))
            }
            LegState::Failed => mirror.mark_resyncing(leg),
            LegState::Resyncing => {}
        }
        if mirror.in_service().is_clear() {
            return Err(keelfs_engine::EngineError::NoLegs.into());
        }
        self.keeper.track(leg);
        let name = mirror.leg_device(leg).name().to_string();
        log::info!("resync of leg {leg} ({name}) started");
        self.keeper.write(self.journal.committed_seq(), |_| {})?;

        let _ctx = ioctx::enter(IoContext::internal("resync", IoPrio::BACKGROUND));
        let (data, held) = self.scrub_data_runs()?;
        let meta = self.scrub_meta_runs(&held)?;
        let l = self.layout;
        let journal = (l.journal_superblock, 1u64);
        let ring = (l.journal.start, l.journal.blocks);
        let total = data.iter().map(|r| r.len).sum::<u64>()
            + meta.iter().map(|r| r.1).sum::<u64>()
            + journal.1
            + ring.1;
        progress.total.store(total, Ordering::Relaxed);

        let still_resyncing = || -> FsResult<bool> {
            if progress.cancel.load(Ordering::Relaxed) {
                return Ok(false);
            }
            match mirror.leg_state(leg) {
                LegState::Resyncing => Ok(true),
                state => Err(FsError::Invalid(format!(
                    "leg {leg} ({name}) left the resync: it is now {state:?}"
                ))),
            }
        };
        for &(first, count) in &meta {
            for (b, n) in runs(first, count) {
                if !still_resyncing()? {
                    return Ok(());
                }
                let run = self
                    .volume
                    .resync_run(b, n, leg, ResyncCheck::Meta)
                    .map_err(|e| self.leg_error(leg, e))?;
                progress.add(&run);
            }
        }
        for r in &data {
            for (b, n) in runs(r.physical, r.len) {
                if !still_resyncing()? {
                    return Ok(());
                }
                let tags = self.tags.load(b, n);
                let check = match &tags {
                    Ok(t) => ResyncCheck::Data(t),
                    Err(e) => {
                        log::warn!("resync: tags of blocks {b}+{n} (inode {}): {e}", r.ino);
                        ResyncCheck::Raw
                    }
                };
                let run = self
                    .volume
                    .resync_run(b, n, leg, check)
                    .map_err(|e| self.leg_error(leg, e))?;
                progress.add(&run);
            }
        }
        // The journal last, as it is (point 4).
        for &(first, count) in &[journal, ring] {
            for (b, n) in runs(first, count) {
                if !still_resyncing()? {
                    return Ok(());
                }
                let run = self
                    .volume
                    .resync_run(b, n, leg, ResyncCheck::Raw)
                    .map_err(|e| self.leg_error(leg, e))?;
                progress.add(&run);
            }
        }
        if !mirror.transition(leg, LegState::Resyncing, LegState::InService) {
            return Err(FsError::Invalid(format!(
                "leg {leg} ({name}) failed before its resync completed"
            )));
        }
        self.keeper.write(self.journal.committed_seq(), |_| {})?;
        progress.succeeded.store(true, Ordering::Relaxed);
        log::info!(
            "resync of leg {leg} ({name}) finished: {} blocks copied, {} unverified; \
             the leg is back in service",
            progress.done.load(Ordering::Relaxed),
            progress.unverified.load(Ordering::Relaxed)
        );
        Ok(())
    }

    /// An engine error of a copy, named after the leg when it is the
    /// target that failed.
    fn leg_error(&self, leg: usize, e: keelfs_engine::EngineError) -> FsError {
        if self.volume.set().leg_state(leg) == LegState::Failed {
            FsError::Invalid(format!("leg {leg} failed during its resync: {e}"))
        } else {
            e.into()
        }
    }

    /// The mirror legs in the `Resyncing` state.
    pub fn resyncing_legs(&self) -> Vec<usize> {
        let mirror = self.volume.set();
        (0..mirror.num_legs())
            .filter(|&l| mirror.leg_state(l) == LegState::Resyncing)
            .collect()
    }

    /// Starts, on a background thread, the resync of every leg in the
    /// `Resyncing` state (one after the other). Returns whether a thread
    /// was started (none if nothing is resyncing or one already runs).
    pub fn start_resync(fs: &Arc<Fs>) -> FsResult<bool> {
        Ok(!Fs::spawn_resync(fs)?.is_empty())
    }

    /// [`Fs::start_resync`]; returns the progress of each resync started.
    pub(super) fn spawn_resync(fs: &Arc<Fs>) -> FsResult<Vec<Arc<ResyncProgress>>> {
        let legs = fs.resyncing_legs();
        let mut thread = fs.resync.thread.lock();
        if legs.is_empty() || thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(Vec::new());
        }
        let jobs: Vec<Arc<ResyncProgress>> = legs
            .iter()
            .map(|&l| Arc::new(ResyncProgress::new(l)))
            .collect();
        fs.resync.jobs.lock().extend(jobs.iter().cloned());
        let (f, run) = (Arc::clone(fs), jobs.clone());
        let spawned = std::thread::Builder::new()
            .name("keelfs-resync".into())
            .spawn(move || {
                for job in run {
                    if f.resync_leg(job.leg, &job).is_err() || job.cancel.load(Ordering::Relaxed) {
                        continue;
                    }
                }
            })
            .map_err(|e| FsError::Invalid(format!("cannot start the resync thread: {e}")))?;
        *thread = Some(spawned);
        Ok(jobs)
    }

    /// Replaces mirror leg `leg` by `device` on a background thread
    /// ([`Fs::replace_leg`]), after cancelling the resyncs running; the
    /// other legs still resyncing are resynced after it, on that thread.
    /// Returns the progress of the replacement's resync.
    pub fn start_replace(
        fs: &Arc<Fs>,
        leg: usize,
        device: keelfs_engine::device::DeviceRef,
    ) -> FsResult<Arc<ResyncProgress>> {
        fs.check_writable()?;
        fs.stop_resync();
        let mut thread = fs.resync.thread.lock();
        let job = Arc::new(ResyncProgress::new(leg));
        fs.resync.jobs.lock().push(Arc::clone(&job));
        let (f, j) = (Arc::clone(fs), Arc::clone(&job));
        let spawned = std::thread::Builder::new()
            .name("keelfs-replace".into())
            .spawn(move || {
                if let Err(e) = f.replace_leg(j.leg, device, &j) {
                    log::error!("replacing leg {}: {e}", j.leg);
                    *j.error.lock() = Some(e.to_string());
                    j.finished.store(true, Ordering::Relaxed);
                    return;
                }
                for other in f.resyncing_legs() {
                    let p = Arc::new(ResyncProgress::new(other));
                    f.resync.jobs.lock().push(Arc::clone(&p));
                    let _ = f.resync_leg(other, &p);
                }
            })
            .map_err(|e| FsError::Invalid(format!("cannot start the replace thread: {e}")))?;
        *thread = Some(spawned);
        Ok(job)
    }

    /// The resyncs started since mount (progress, newest last).
    pub fn resync_jobs(&self) -> Vec<Arc<ResyncProgress>> {
        self.resync.jobs.lock().clone()
    }

    /// Waits for the background resync thread, if any.
    pub fn wait_resync(&self) {
        let thread = self.resync.thread.lock().take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }

    /// Cancels the background resyncs and waits for the thread (unmount).
    pub fn stop_resync(&self) {
        for job in self.resync.jobs.lock().iter() {
            job.cancel.store(true, Ordering::Relaxed);
        }
        self.wait_resync();
    }
}

/// `(first, count)` split into runs of at most [`RUN_BLOCKS`].
fn runs(first: u64, count: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..count)
        .step_by(RUN_BLOCKS as usize)
        .map(move |k| (first + k, RUN_BLOCKS.min(count - k)))
}
