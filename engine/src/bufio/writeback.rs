//! Writeback: claiming dirty buffers, writing them in block order as merged
//! runs, sync and async writeback, and the background thread.
//!
//! A writeback first *claims* buffers (`write_claimed`, under the shard
//! lock) so no other writeback takes them and nothing removes them. It then
//! copies each one under its data lock (shared), re-checking the pin and
//! recording `dirty_seq` under the shard lock while the data lock is held,
//! so no byte changed after a `pin()` is ever copied; it hands each run of
//! adjacent blocks (at most `writeback_batch` long) to
//! [`BlockStore::write_run`](super::BlockStore::write_run), and completes
//! each claim: clean if the write succeeded and `dirty_seq` did not move,
//! dirty otherwise.

use super::buffer::Buffer;
use super::cache::Inner;
use super::shard::{shard_of, Entry, ListKind, ShardGuard};
use crate::error::{EngineError, EngineResult};
use crossbeam::channel::{Receiver, RecvTimeoutError};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// Writeback batches one background pass may write before it looks at its
/// queue again.
const MAX_BACKGROUND_ROUNDS: usize = 64;
/// Rounds of "wait for the other writeback, write what it left" in
/// `write_dirty_sync`.
const SYNC_BUSY_ROUNDS: usize = 4;

/// Messages to the background thread.
pub(crate) enum BackgroundMsg {
    Kick,
    Shutdown,
}

/// Who is writing back, which decides what it may wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WritebackMode {
    /// The background thread or `write_dirty_async`: held buffers too;
    /// skips a buffer whose data lock is taken rather than wait.
    Background,
    /// Making room for a new buffer: unheld buffers only (only those can be
    /// freed); never waits for a data lock (the caller may hold guards).
    Reclaim,
    /// `write_dirty_sync`, `flush`, `release_move`: waits for data locks.
    Sync,
}

/// A claimed buffer.
struct Claim {
    block: u64,
    shard: usize,
    slot: u32,
    buf: Arc<Buffer>,
    /// `dirty_seq` when the bytes were copied.
    seq: u64,
}

/// What a writeback achieved.
#[derive(Debug, Default)]
pub(crate) struct WritebackOutcome {
    /// Buffers made clean.
    pub(crate) cleaned: usize,
    /// Buffers whose write failed (they stay dirty).
    pub(crate) failed: usize,
    pub(crate) first_error: Option<EngineError>,
}

impl WritebackOutcome {
    fn merge(&mut self, other: WritebackOutcome) {
        self.cleaned += other.cleaned;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn into_result(self) -> EngineResult<()> {
        match self.first_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// Mark the calling thread's I/O as internal, idle-class work, so that
/// background writeback never starves a foreground reader. Called once at
/// the start of the background writeback thread, which keeps the context
/// for its whole life. A foreground caller that waits on this work (sync
/// writeback, flush) does the writing itself at its own priority.
pub(crate) fn enter_background_io_context() {
    let scope = crate::ioctx::enter(crate::ioctx::IoContext::internal(
        "bufio writeback",
        crate::ioctx::IoPrio::BACKGROUND,
    ));
    std::mem::forget(scope);
}

/// Body of the background thread: on each kick or tick, write back when
/// the dirty ratio or the high watermark asks for it, honour
/// `write_dirty_async`, age out old clean buffers, and get back under the
/// limit.
pub(crate) fn background_loop(inner: &Inner, wakeups: &Receiver<BackgroundMsg>, tick: Duration) {
    enter_background_io_context();
    loop {
        match wakeups.recv_timeout(tick) {
            Ok(BackgroundMsg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(BackgroundMsg::Kick) | Err(RecvTimeoutError::Timeout) => {}
        }
        if inner.shutting_down.load(Relaxed) {
            return;
        }
        inner.kick_pending.store(false, Relaxed);
        inner.background_pass();
    }
}

fn eligible(entry: &Entry, mode: WritebackMode) -> bool {
    entry.loaded
        && entry.dirty
        && entry.pin_count == 0
        && !entry.write_claimed
        && (mode != WritebackMode::Reclaim || entry.hold_count == 0)
}

fn claim(st: &mut ShardGuard<'_>, shard: usize, slot: u32) -> Claim {
    let entry = st.entry_mut(slot);
    debug_assert!(!entry.write_claimed);
    entry.write_claimed = true;
    Claim {
        block: entry.block,
        shard,
        slot,
        buf: Arc::clone(&entry.buf),
        seq: 0,
    }
}

impl Inner {
    fn background_pass(&self) {
        if self.write_all_requested.swap(false, Relaxed) {
            let (claims, _busy) = self.claim_all_dirty(WritebackMode::Background);
            self.write_claims(claims, WritebackMode::Background);
        }
        for _ in 0..MAX_BACKGROUND_ROUNDS {
            if self.shutting_down.load(Relaxed) || !self.writeback_wanted() {
                break;
            }
            let outcome =
                self.writeback_oldest(self.config.writeback_batch, WritebackMode::Background);
            if outcome.cleaned == 0 {
                break;
            }
        }
        self.age_out();
        if self.counters.current_bytes() > self.config.memory_limit_bytes {
            self.make_room();
        }
    }

    /// Write back up to `max` of the longest-dirty eligible buffers (in
    /// block order).
    pub(crate) fn writeback_oldest(&self, max: usize, mode: WritebackMode) -> WritebackOutcome {
        // Phase 1: the oldest candidates of every shard, then the oldest
        // `max` overall.
        let mut candidates: Vec<(u64, usize, u32, u64)> = Vec::new();
        for (index, shard) in self.shards() {
            let st = shard.lock();
            candidates.extend(
                st.list_from_back(ListKind::Dirty)
                    .filter(|&slot| eligible(st.entry(slot), mode))
                    .take(max)
                    .map(|slot| {
                        let entry = st.entry(slot);
                        (entry.stamp, index, slot, entry.block)
                    }),
            );
        }
        if candidates.is_empty() {
            return WritebackOutcome::default();
        }
        candidates.sort_unstable();
        candidates.truncate(max);
        // Phase 2: claim those still eligible, one shard lock at a time.
        candidates.sort_unstable_by_key(|&(_, shard, slot, _)| (shard, slot));
        let mut claims = Vec::with_capacity(candidates.len());
        for group in candidates.chunk_by(|a, b| a.1 == b.1) {
            let index = group[0].1;
            let mut st = self.shard(index).lock();
            for &(_, _, slot, block) in group {
                if st.lookup(block) == Some(slot) && eligible(st.entry(slot), mode) {
                    claims.push(claim(&mut st, index, slot));
                }
            }
        }
        self.write_claims(claims, mode)
    }

    /// Claim every eligible dirty buffer; also return the blocks another
    /// writeback has claimed.
    fn claim_all_dirty(&self, mode: WritebackMode) -> (Vec<Claim>, Vec<u64>) {
        let mut claims = Vec::new();
        let mut busy = Vec::new();
        for (index, shard) in self.shards() {
            let mut st = shard.lock();
            let slots: Vec<u32> = st.list_from_back(ListKind::Dirty).collect();
            for slot in slots {
                let entry = st.entry(slot);
                if entry.write_claimed {
                    busy.push(entry.block);
                } else if eligible(entry, mode) {
                    claims.push(claim(&mut st, index, slot));
                }
            }
        }
        (claims, busy)
    }

    /// Every dirty unpinned buffer, written and waited for.
    pub(crate) fn write_dirty_sync(&self) -> EngineResult<()> {
        let (claims, mut busy) = self.claim_all_dirty(WritebackMode::Sync);
        let mut outcome = self.write_claims(claims, WritebackMode::Sync);
        // Buffers another writeback had claimed: wait for it, then write
        // whatever it left dirty (re-dirtied, failed, or skipped). Never
        // wait while holding a claim: two syncs would wait on each other.
        // A buffer claimed again meanwhile is being written from bytes at
        // least as new as when this call began: wait for that write too.
        for _ in 0..SYNC_BUSY_ROUNDS {
            if busy.is_empty() {
                break;
            }
            for &block in &busy {
                self.wait_unclaimed(block);
            }
            let mut leftovers = Vec::new();
            let mut claimed_again = Vec::new();
            for block in busy {
                let index = shard_of(block);
                let mut st = self.shard(index).lock();
                if let Some(slot) = st.lookup(block) {
                    if st.entry(slot).write_claimed {
                        claimed_again.push(block);
                    } else if eligible(st.entry(slot), WritebackMode::Sync) {
                        leftovers.push(claim(&mut st, index, slot));
                    }
                }
            }
            outcome.merge(self.write_claims(leftovers, WritebackMode::Sync));
            busy = claimed_again;
        }
        for &block in &busy {
            self.wait_unclaimed(block);
        }
        outcome.into_result()
    }

    /// Wait until no writeback has `block` claimed (or it is gone).
    fn wait_unclaimed(&self, block: u64) {
        let mut st = self.shard(shard_of(block)).lock();
        while let Some(slot) = st.lookup(block) {
            if !st.entry(slot).write_claimed {
                break;
            }
            st.wait();
        }
    }

    /// Kick (or, without a background thread, do) a writeback of every
    /// dirty unpinned buffer.
    pub(crate) fn write_dirty_async(&self) {
        if self.has_background() {
            self.write_all_requested.store(true, Relaxed);
            self.kick_background();
        } else {
            let (claims, _busy) = self.claim_all_dirty(WritebackMode::Background);
            self.write_claims(claims, WritebackMode::Background);
        }
    }

    /// Write the held buffer at `slot` to its block if it is dirty, and
    /// wait. `Invalid` if it is pinned.
    pub(crate) fn write_one_sync(&self, shard: usize, slot: u32, block: u64) -> EngineResult<()> {
        let pinned =
            || EngineError::Invalid(format!("bufio: release_move of pinned block {block}"));
        let mut st = self.shard(shard).lock();
        let claimed = loop {
            let entry = st.entry(slot);
            if entry.pin_count > 0 {
                return Err(pinned());
            }
            if entry.write_claimed {
                st.wait();
                continue;
            }
            if !entry.dirty {
                return Ok(());
            }
            break claim(&mut st, shard, slot);
        };
        drop(st);
        self.write_claims(vec![claimed], WritebackMode::Sync)
            .into_result()?;
        if self.with_entry(shard, slot, |entry| entry.pin_count > 0) {
            return Err(pinned());
        }
        Ok(())
    }

    /// Copy and write `claims` in block order, merging adjacent blocks into
    /// runs of at most `writeback_batch` blocks.
    fn write_claims(&self, mut claims: Vec<Claim>, mode: WritebackMode) -> WritebackOutcome {
        let mut outcome = WritebackOutcome::default();
        if claims.is_empty() {
            return outcome;
        }
        claims.sort_unstable_by_key(|claim| claim.block);
        let batch = self.config.writeback_batch;
        let mut run: Vec<Claim> = Vec::with_capacity(batch.min(claims.len()));
        let mut bytes: Vec<u8> = Vec::with_capacity(run.capacity() * self.block_size);
        for mut claim in claims {
            if let Some(last) = run.last() {
                if claim.block != last.block + 1 || run.len() >= batch {
                    self.submit_run(&mut run, &mut bytes, &mut outcome);
                }
            }
            let guard = if mode == WritebackMode::Sync {
                claim.buf.data.read()
            } else {
                match claim.buf.data.try_read() {
                    Some(guard) => guard,
                    None => {
                        self.drop_claim(&claim);
                        continue;
                    }
                }
            };
            let shard = self.shard(claim.shard);
            let mut st = shard.lock();
            if st.entry(claim.slot).pin_count > 0 {
                // Pinned since it was claimed: its bytes may now be the
                // journal's, not to be written.
                st.entry_mut(claim.slot).write_claimed = false;
                shard.notify_changed();
                continue;
            }
            claim.seq = st.entry(claim.slot).dirty_seq;
            drop(st);
            bytes.extend_from_slice(&guard);
            drop(guard);
            run.push(claim);
        }
        if !run.is_empty() {
            self.submit_run(&mut run, &mut bytes, &mut outcome);
        }
        outcome
    }

    fn drop_claim(&self, claim: &Claim) {
        let shard = self.shard(claim.shard);
        let mut st = shard.lock();
        st.entry_mut(claim.slot).write_claimed = false;
        shard.notify_changed();
    }

    /// Hand one run to the store and complete its claims.
    fn submit_run(
        &self,
        run: &mut Vec<Claim>,
        bytes: &mut Vec<u8>,
        outcome: &mut WritebackOutcome,
    ) {
        let first = run[0].block;
        let blocks = run.len();
        self.counters.writes_in_flight.fetch_add(1, Relaxed);
        let result = self.store.write_run(first, bytes);
        self.counters.write_runs.fetch_add(1, Relaxed);
        let written = match result {
            Ok(()) => {
                self.counters
                    .written_bytes
                    .fetch_add(bytes.len() as u64, Relaxed);
                true
            }
            Err(err) => {
                self.counters.write_errors.fetch_add(1, Relaxed);
                log::warn!("bufio: writeback of blocks {first}+{blocks} failed: {err}");
                outcome.failed += blocks;
                outcome.first_error.get_or_insert(err);
                false
            }
        };
        let now = self.now();
        for claim in run.drain(..) {
            let shard = self.shard(claim.shard);
            let mut st = shard.lock();
            let entry = st.entry_mut(claim.slot);
            entry.write_claimed = false;
            if written && entry.dirty_seq == claim.seq {
                entry.dirty = false;
                st.relink(claim.slot, now);
                self.counters.dirty_buffers.fetch_sub(1, Relaxed);
                outcome.cleaned += 1;
            }
            shard.notify_changed();
        }
        bytes.clear();
        self.counters.writes_in_flight.fetch_sub(1, Relaxed);
        *self.writes_done.lock() += 1;
        self.writes_done_cv.notify_all();
    }
}
