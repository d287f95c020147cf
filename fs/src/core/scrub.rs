//! Online scrub: every allocated block on every in-service leg read,
//! checked, and healed from a good copy where one exists.
//!
//! What it promises ([`Fs::scrub`]):
//!
//! * file data: every written extent of every inode in use is checked on
//!   every leg against its tag from the tag table (`Volume::scrub_data`);
//!   a block found with no good copy is checked again under the inode's
//!   read lock with fresh tags, so a concurrent overwrite is never reported
//!   as loss; unwritten extents are skipped (their tags mean nothing, §7);
//! * metadata: the bitmaps, the inode table and the tag table (blocks zero
//!   on every leg were never written and are skipped), and every block the
//!   block bitmap marks used in the data area that no extent holds as file
//!   data (extent nodes, directory and xattr blocks, symlink overflow), with
//!   `Volume::scrub_meta`: the newest valid generation wins, an older one
//!   on a leg is a lost write there. The journal and the superblocks are not
//!   scrubbed (replay checks the one, the keeper rewrites the other);
//! * bad copies are healed and counted on their leg (checksum errors,
//!   heals), each heal logged once with the file and offset (data) or the
//!   block kind (metadata); blocks with no good copy are counted in
//!   [`ScrubProgress::lost`] and logged, never rewritten;
//! * a leg that was suspect when the scrub started (it failed reads:
//!   "needs check") and on which a complete scrub found no bad copy and
//!   had no read error is cleared: reads go to it again, and the member
//!   table no longer flags it;
//! * all of it runs in an internal idle-class I/O context
//!   (`IoPrio::BACKGROUND`), so foreground requests are served first; it
//!   can be paused and cancelled between chunks of [`CHUNK`] blocks.
//!
//! Relies on: the engine's fence (heals never undo a newer write); the
//! inode lock order (an inode lock is the only lock taken, briefly, with
//! no journal handle).

use super::extent;
use super::Fs;
use crate::error::{FsError, FsResult};
use crate::format::DataArea;
use keelfs_engine::integrity::ScrubRun;
use keelfs_engine::ioctx::{self, IoContext, IoPrio};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Blocks checked per request (and between pause/cancel checks).
pub const CHUNK: u64 = 64;

/// Progress and findings of a scrub, readable while it runs.
#[derive(Debug, Default)]
pub struct ScrubProgress {
    /// Blocks to check (known once the walk is done; 0 before).
    pub total: AtomicU64,
    /// Blocks checked.
    pub done: AtomicU64,
    /// Copies found bad.
    pub bad_copies: AtomicU64,
    /// Blocks healed from a good copy.
    pub repaired: AtomicU64,
    /// Blocks with no good copy anywhere.
    pub lost: AtomicU64,
    /// The mirror legs on which some copy was bad (a bit mask).
    pub bad_legs: AtomicU64,
    /// Suspect legs found good and cleared at the end.
    pub cleared: AtomicU64,
    /// Set to hold the scrub between chunks.
    pub paused: AtomicBool,
    /// Set to stop it between chunks.
    pub cancel: AtomicBool,
    /// Set when it has ended (finished, cancelled or failed).
    pub finished: AtomicBool,
}

impl ScrubProgress {
    fn add(&self, run: &ScrubRun, count: u64) {
        self.done.fetch_add(count, Ordering::Relaxed);
        self.bad_copies.fetch_add(run.bad_copies, Ordering::Relaxed);
        self.repaired.fetch_add(run.repaired, Ordering::Relaxed);
        self.bad_legs
            .fetch_or(run.bad_legs.mask(), Ordering::Relaxed);
    }

    /// Waits while paused; whether to go on (not cancelled).
    fn go_on(&self) -> bool {
        while self.paused.load(Ordering::Relaxed) && !self.cancel.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        !self.cancel.load(Ordering::Relaxed)
    }
}

/// A written run of file data.
#[derive(Debug, Clone, Copy)]
pub(super) struct DataRun {
    pub(super) ino: u64,
    pub(super) logical: u64,
    pub(super) physical: u64,
    pub(super) len: u64,
}

/// (first, count) runs of metadata blocks to scrub.
pub(super) type MetaRuns = Vec<(u64, u64)>;

impl Fs {
    /// Scrubs the whole filesystem (see the module docs). Returns `Ok` when
    /// the walk finished or was cancelled (`progress.cancel`); findings are
    /// in `progress`.
    pub fn scrub(&self, progress: &ScrubProgress) -> FsResult<()> {
        let _ctx = ioctx::enter(IoContext::internal("scrub", IoPrio::BACKGROUND));
        let result = self.scrub_inner(progress);
        progress.finished.store(true, Ordering::Relaxed);
        result
    }

    fn scrub_inner(&self, progress: &ScrubProgress) -> FsResult<()> {
        let mirror = self.volume.set();
        let suspect_at_start: Vec<(usize, u64)> = mirror
            .suspect_legs()
            .legs()
            .map(|l| (l, mirror.leg_stats(l).snapshot().read_errors))
            .collect();
        if self.scrub_walk(progress)? {
            self.clear_checked_legs(progress, &suspect_at_start);
        }
        Ok(())
    }

    /// After a complete scrub: clears the legs of `suspect` (leg, read
    /// errors at the start) that showed no bad copy and no new read error.
    fn clear_checked_legs(&self, progress: &ScrubProgress, suspect: &[(usize, u64)]) {
        let mirror = self.volume.set();
        let bad = progress.bad_legs.load(Ordering::Relaxed);
        let mut cleared = false;
        for &(leg, read_errors) in suspect {
            let clean = bad & (1 << leg) == 0
                && mirror.leg_stats(leg).snapshot().read_errors == read_errors
                && mirror.in_service().has(leg);
            if clean {
                log::info!("scrub: leg {leg} was checked and found good: reads go to it again");
                mirror.clear_suspect(leg);
                progress.cleared.fetch_add(1, Ordering::Relaxed);
                cleared = true;
            } else {
                log::warn!(
                    "scrub: leg {leg} still needs a check (it had bad copies or read errors)"
                );
            }
        }
        if cleared {
            // Record it in the superblocks now (the health thread would
            // within its poll interval).
            self.health.check_legs();
        }
    }

    /// The walk; returns whether it went through (not cancelled).
    fn scrub_walk(&self, progress: &ScrubProgress) -> FsResult<bool> {
        let (data, held) = self.scrub_data_runs()?;
        let meta = self.scrub_meta_runs(&held)?;
        let total = data.iter().map(|r| r.len).sum::<u64>() + meta.iter().map(|r| r.1).sum::<u64>();
        progress.total.store(total, Ordering::Relaxed);
        for &(first, count) in &meta {
            let mut b = first;
            while b < first + count {
                if !progress.go_on() {
                    return Ok(false);
                }
                let n = CHUNK.min(first + count - b);
                let run = self.volume.scrub_meta(b, n)?;
                progress.add(&run, n);
                progress
                    .lost
                    .fetch_add(run.lost.len() as u64, Ordering::Relaxed);
                b += n;
            }
        }
        for r in &data {
            let mut k = 0;
            while k < r.len {
                if !progress.go_on() {
                    return Ok(false);
                }
                let n = CHUNK.min(r.len - k);
                self.scrub_data_chunk(r, k, n, progress)?;
                k += n;
            }
        }
        Ok(true)
    }

    fn scrub_data_chunk(
        &self,
        r: &DataRun,
        k: u64,
        n: u64,
        progress: &ScrubProgress,
    ) -> FsResult<()> {
        let first = r.physical + k;
        let tags = match self.tags.load(first, n) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("scrub: tags of blocks {first}+{n} (inode {}): {e}", r.ino);
                progress.done.fetch_add(n, Ordering::Relaxed);
                return Ok(());
            }
        };
        let bs = self.block_size();
        let describe = |block: u64| {
            let offset = (r.logical + block - r.physical) * bs;
            format!("inode {} offset {offset}", r.ino)
        };
        let run = self.volume.scrub_data_for(first, &tags, &describe)?;
        progress.add(&run, n);
        for &block in &run.lost {
            // Again under the inode's read lock with fresh tags: the file
            // may have been rewritten or truncated meanwhile.
            let lost = self.data_block_still_lost(r, block)?;
            if lost {
                let offset = (r.logical + block - r.physical) * self.block_size();
                log::error!(
                    "scrub: inode {} offset {offset} (block {block}): no good copy on any leg",
                    r.ino
                );
                progress.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn data_block_still_lost(&self, r: &DataRun, block: u64) -> FsResult<bool> {
        let Ok(cell) = self.inode(r.ino) else {
            return Ok(false);
        };
        let state = cell.read();
        let DataArea::Extents(root) = &state.data else {
            return Ok(false);
        };
        let logical = r.logical + block - r.physical;
        match extent::lookup(&self.cache, root, logical)? {
            Some(e) if !e.unwritten && e.physical + logical - e.logical == block => {}
            _ => return Ok(false),
        }
        let tags = self.tags.load(block, 1)?;
        // Checked without counting again: lost if no in-service leg is good.
        let mirror = self.volume.set();
        for leg in mirror.in_service().legs() {
            if self.volume.verify_leg_data(leg, block, &tags)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Written data runs of every inode in use, sorted by physical block,
    /// and every block an extent holds (written or not) → whether written.
    pub(super) fn scrub_data_runs(&self) -> FsResult<(Vec<DataRun>, BTreeMap<u64, u64>)> {
        let mut runs = Vec::new();
        let mut held = BTreeMap::new();
        for ino in 1..=self.layout.inode_count {
            if !self.ialloc.is_allocated(ino)? {
                continue;
            }
            let cell = match self.inode(ino) {
                Ok(c) => c,
                Err(FsError::NotFound | FsError::Stale) => continue,
                Err(e) => return Err(e),
            };
            let state = cell.read();
            let DataArea::Extents(root) = &state.data else {
                continue;
            };
            extent::for_each(&self.cache, root, &mut |e| {
                held.insert(e.physical, u64::from(e.length));
                if !e.unwritten {
                    runs.push(DataRun {
                        ino,
                        logical: e.logical,
                        physical: e.physical,
                        len: u64::from(e.length),
                    });
                }
                Ok(())
            })?;
        }
        runs.sort_by_key(|r| r.physical);
        Ok((runs, held))
    }

    /// Fixed metadata regions, then used data-area blocks no extent holds.
    pub(super) fn scrub_meta_runs(&self, held: &BTreeMap<u64, u64>) -> FsResult<MetaRuns> {
        let l = &self.layout;
        let mut runs: MetaRuns = [l.block_bitmap, l.inode_bitmap, l.inode_table, l.tag_table]
            .iter()
            .map(|r| (r.start, r.blocks))
            .collect();
        let is_held = |b: u64| {
            held.range(..=b)
                .next_back()
                .is_some_and(|(&start, &len)| b < start + len)
        };
        let mut current: Option<(u64, u64)> = None;
        for b in l.data.start..l.data.start + l.data.blocks {
            let meta = !is_held(b) && self.blocks.is_allocated(b)?;
            current = match (current, meta) {
                (Some((s, n)), true) if s + n == b => Some((s, n + 1)),
                (Some(run), true) => {
                    runs.push(run);
                    Some((b, 1))
                }
                (None, true) => Some((b, 1)),
                (Some(run), false) => {
                    runs.push(run);
                    None
                }
                (None, false) => None,
            };
        }
        runs.extend(current);
        Ok(runs)
    }
}
