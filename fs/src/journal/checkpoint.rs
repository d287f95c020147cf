//! Checkpointing: reclaiming ring space once the blocks it logged are home.
//!
//! [`Shared::checkpoint`] (docs/format.md §10 "Checkpoint"):
//!
//! 1. note the pinned blocks `P₀`, flush the cache (`Bufio::flush`: every
//!    dirty unpinned buffer is written home and the volume is flushed),
//!    note the pinned blocks `P₁`;
//! 2. under the ring lock, release the longest prefix of the window whose
//!    records are all done with:
//!    - an intent record once its transaction has committed;
//!    - a transaction record once each block it logged is outside
//!      `P₀ ∪ P₁` (its newest committed version went home in the flush:
//!      only a pin keeps a dirty buffer from being written, and a pin that
//!      came and went during the flush was dropped by a commit, which
//!      logged the block again later in the window) or has a newer image
//!      later in the window;
//! 3. write the journal superblock with the new tail (the first record
//!    kept, or the head and the next sequence when none is) and flush it;
//!    only then count the space as free.
//!
//! A block pinned by the running transaction holds back every record that
//! logged an older version of it. [`Shared::make_space`] (called by
//! `start`, never from inside a handle) deals with that: it checkpoints,
//! and if there is still not room for a whole transaction, it holds new
//! handles back, commits the running transaction (waiting for its open
//! handles), checkpoints again — now nothing is pinned, so the window
//! empties — and lets handles in again. The stall is bounded: the open
//! handles' operations finish (they never wait for `start`), one commit of
//! at most the transaction limit, one cache flush of at most the dirty
//! blocks the window covers (≤ J), one journal-superblock write.
//!
//! Relies on: bufio's pins and flush; commits unpinning only after their
//! record is durable and pushed to the window.

use crate::error::FsResult;
use crate::format::JournalSuperblock;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;

use super::jsb;
use super::Shared;

impl Shared {
    /// Checkpoint; returns the ring blocks freed.
    pub(crate) fn checkpoint(&self) -> FsResult<u64> {
        let _one = self.checkpoint_lock.lock();
        if let Some(why) = &self.state.lock().aborted {
            return Err(Self::aborted_error(why));
        }
        if self.ring.lock().records().is_empty() {
            return Ok(0);
        }
        let mut pinned: HashSet<u64> = self.cache.pinned_blocks().into_iter().collect();
        self.cache.flush()?;
        pinned.extend(self.cache.pinned_blocks());

        let mut ring = self.ring.lock();
        let committed = self.state.lock().committed_seq;
        let count = ring.releasable(committed, &pinned);
        if count == 0 {
            return Ok(0);
        }
        let (position, sequence) = ring
            .tail_after(count)
            .unwrap_or((ring.head(), committed + 1));
        jsb::write(
            &self.volume,
            &self.layout,
            &JournalSuperblock {
                ring_start: self.geo.start,
                ring_blocks: self.geo.blocks,
                oldest_sequence: sequence,
                oldest_position: position,
            },
        )?;
        let before = ring.used();
        ring.release(count);
        let freed = before - ring.used();
        self.state.lock().ring_available = ring.available();
        self.counters.checkpoints.fetch_add(1, Relaxed);
        self.counters.blocks_checkpointed.fetch_add(freed, Relaxed);
        Ok(freed)
    }

    /// Make room in the ring for the running transaction to grow to the
    /// transaction limit (see the module documentation). Never called from
    /// inside a handle.
    pub(crate) fn make_space(&self) -> FsResult<()> {
        let have = |s: &Self| s.state.lock().has_room(s.limits.max_transaction);
        self.checkpoint()?;
        if have(self) {
            return Ok(());
        }
        let guard = self.commit_lock.lock();
        if have(self) {
            return Ok(());
        }
        self.state.lock().held_back = true;
        log::debug!("journal: ring full, forcing a commit");
        self.counters.forced_commits.fetch_add(1, Relaxed);
        let result = self.commit_running(&guard).and_then(|()| self.checkpoint());
        {
            let mut st = self.state.lock();
            st.held_back = false;
            self.cond.notify_all();
        }
        result?;
        if have(self) {
            Ok(())
        } else {
            log::error!(
                "journal: no room for a transaction of {} blocks even with the ring emptied",
                self.limits.max_transaction
            );
            Err(crate::error::FsError::NoSpace)
        }
    }
}
