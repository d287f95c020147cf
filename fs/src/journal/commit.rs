//! Committing the running transaction (docs/format.md §10 "Commit").
//!
//! [`Shared::commit_running`], with `commit_lock` held:
//!
//! 1. close the running transaction: `start` now waits; wait until every
//!    handle on it has dropped (their data writes are done: ordered data);
//! 2. copy the image of every block it logs, under the buffer's read lock,
//!    with the header generation set to its sequence and sealed for the
//!    block's home address — taken while no handle can change anything, so
//!    the images are exactly the transaction's state;
//! 3. take the ring lock (so no intent record of the next transaction can
//!    get ahead of this record), making room first if needed (a
//!    checkpoint), then open the next transaction and let `start` go on;
//! 4. write the descriptors and images at the head, flush (this also makes
//!    the data blocks its handles wrote durable), write the commit block,
//!    flush (`record.rs`), and release the ring lock;
//! 5. unpin its blocks (they may now go home through bufio writeback),
//!    drop the cached buffers of blocks it revoked, run its after-commit
//!    hooks, then mark it committed and wake `commit` waiters (so a caller
//!    that returns from `commit` finds the blocks unpinned).
//!
//! A transaction with nothing to log (no block, revoke or intent record)
//! is not given a record and keeps its sequence for the next one (no block
//! or data tag was ever written with it); its commit is one flush.
//! A transaction that only logged intents gets no record either, but its
//! sequence is used up (its intent records carry it).
//!
//! [`Shared::commit`] is group commit: a caller takes the ordinal of the
//! running transaction (or of the one being committed, if no handle has
//! joined the running one yet), then `commit_lock`; if a commit that
//! covered that ordinal finished meanwhile, it returns at once.
//!
//! Relies on: bufio keeping pinned buffers cached (`get` finds them); the
//! caller of `commit` holding no handle (refused).

use crate::error::{FsError, FsResult};
use crate::format::header::set_block_generation;
use crate::format::DescriptorEntry;
use parking_lot::MutexGuard;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::record;
use super::ring::{record_len, LiveKind, LiveRecord};
use super::transaction::Running;
use super::Shared;

/// How long a commit waits for a revoked block's in-flight writeback.
const FORGET_WAIT: Duration = Duration::from_millis(200);

/// A closed transaction's descriptor entries and images (sealed for home).
type Contents = (Vec<DescriptorEntry>, Vec<Arc<[u8]>>);

impl Shared {
    /// [`Journal::commit`](super::Journal::commit).
    pub(crate) fn commit(&self) -> FsResult<()> {
        let target = {
            let st = self.state.lock();
            if st
                .owners
                .get(&std::thread::current().id())
                .is_some_and(|&n| n > 0)
            {
                return Err(FsError::Invalid(
                    "commit() called while holding a transaction handle: it would wait for itself"
                        .into(),
                ));
            }
            // Every handle dropped so far is in the running transaction or
            // an earlier one; if none ever joined the running one, the
            // transaction being committed (if any) is the last to wait for.
            if st.running.joined == 0 && st.ordinal > st.committed_ordinal + 1 {
                st.ordinal - 1
            } else {
                st.ordinal
            }
        };
        self.counters.commit_calls.fetch_add(1, Relaxed);
        self.commit_to(target)
    }

    /// Make transaction ordinal `target` durable, committing the running
    /// transaction unless another commit already did.
    pub(crate) fn commit_to(&self, target: u64) -> FsResult<()> {
        loop {
            {
                let st = self.state.lock();
                if let Some(why) = &st.aborted {
                    return Err(Self::aborted_error(why));
                }
                if st.committed_ordinal >= target {
                    return Ok(());
                }
            }
            let guard = self.commit_lock.lock();
            if self.state.lock().committed_ordinal >= target {
                return Ok(());
            }
            self.commit_running(&guard)?;
        }
    }

    /// Commit the running transaction. See the module documentation.
    pub(crate) fn commit_running(&self, _commit: &MutexGuard<'_, ()>) -> FsResult<()> {
        // 1. Close it and wait for its handles.
        let mut st = self.state.lock();
        if let Some(why) = &st.aborted {
            return Err(Self::aborted_error(why));
        }
        st.locked = true;
        while st.running.handles > 0 {
            self.cond.wait(&mut st);
        }
        let ordinal = st.ordinal;
        if st.running.is_empty() {
            let hooks = std::mem::take(&mut st.running.hooks);
            st.running.opened = std::time::Instant::now();
            st.ordinal += 1;
            st.locked = false;
            self.cond.notify_all();
            drop(st);
            // The data its handles wrote must still be made durable.
            if let Err(e) = self.volume.set().flush() {
                return Err(self.abort(e.into()));
            }
            self.finish(ordinal, None, Vec::new(), Vec::new(), hooks);
            self.counters.empty_commits.fetch_add(1, Relaxed);
            return Ok(());
        }
        let seq = st.running.seq;
        let invalid = st.running.invalid.clone();
        drop(st);
        if let Some(why) = invalid {
            return Err(self.abort(FsError::Invalid(format!("transaction {seq}: {why}"))));
        }

        // 2. Copy the images (no handle can change anything now).
        let (entries, images) = match self.closed_contents() {
            Ok(c) => c,
            Err(e) => return Err(self.abort(e)),
        };
        let len = if entries.is_empty() {
            0
        } else {
            record_len(entries.len(), images.len(), self.capacity)
        };

        // 3. Room in the ring, then open the next transaction.
        let mut ring = self.ring.lock();
        if ring.available() < len {
            drop(ring);
            if let Err(e) = self.checkpoint() {
                return Err(self.abort(e));
            }
            ring = self.ring.lock();
            if ring.available() < len {
                let available = ring.available();
                drop(ring);
                log::error!(
                    "journal: transaction {seq} needs {len} ring blocks, {available} are free \
                     (limit {} per transaction)",
                    self.limits.max_transaction
                );
                return Err(self.abort(FsError::NoSpace));
            }
        }
        let closed = {
            let mut st = self.state.lock();
            let closed = std::mem::replace(&mut st.running, Running::new(seq + 1));
            st.ordinal += 1;
            st.locked = false;
            st.reserved_for_commit = len;
            self.cond.notify_all();
            closed
        };

        // 4. The record.
        if len > 0 {
            let pos = ring.head();
            let homes: Vec<u64> = entries
                .iter()
                .filter(|e| e.has_image())
                .map(|e| e.home())
                .collect();
            let written = record::build(
                &self.volume,
                self.geo,
                pos,
                seq,
                &entries,
                images,
                self.capacity,
            )
            .and_then(|built| record::write(self.volume.set(), &built));
            if let Err(e) = written {
                drop(ring);
                return Err(self.abort(e));
            }
            ring.push(LiveRecord {
                seq,
                pos,
                len,
                kind: LiveKind::Transaction { blocks: homes },
            });
            self.counters.commits.fetch_add(1, Relaxed);
            self.counters
                .blocks_logged
                .fetch_add(closed.images().len() as u64, Relaxed);
            self.counters
                .revokes_logged
                .fetch_add(closed.revokes.len() as u64, Relaxed);
        } else {
            // Intents only: they are durable; the data needs a flush.
            if let Err(e) = self.volume.set().flush() {
                drop(ring);
                return Err(self.abort(e.into()));
            }
            self.counters.commits.fetch_add(1, Relaxed);
        }
        {
            let mut st = self.state.lock();
            st.ring_available = ring.available();
            st.reserved_for_commit = 0;
        }
        drop(ring);

        // 5. Let the blocks go home; hooks.
        let Running {
            pinned,
            revokes,
            hooks,
            ..
        } = closed;
        self.finish(
            ordinal,
            Some(seq),
            pinned.into_iter().collect(),
            revokes.into_iter().collect(),
            hooks,
        );
        Ok(())
    }

    /// The entries and images of the closed (still running, locked, with no
    /// handle) transaction.
    fn closed_contents(&self) -> FsResult<Contents> {
        let (seq, blocks, revokes) = {
            let st = self.state.lock();
            let r = &st.running;
            (r.seq, r.images(), r.revokes.clone())
        };
        let mut entries = Vec::with_capacity(blocks.len() + revokes.len());
        let mut images = Vec::with_capacity(blocks.len());
        for block in blocks {
            let handle = self.cache.get(block).ok_or_else(|| {
                FsError::Corrupt(format!(
                    "journal: block {block} of transaction {seq} is pinned but not cached"
                ))
            })?;
            let mut image = handle.data().to_vec();
            drop(handle);
            set_block_generation(&mut image, seq)?;
            self.volume.seal_run(block, &mut image);
            entries.push(DescriptorEntry::Image { home: block });
            images.push(Arc::from(image));
        }
        entries.extend(
            revokes
                .into_iter()
                .map(|home| DescriptorEntry::Revoke { home }),
        );
        Ok((entries, images))
    }

    /// Drop the cached buffer of a block freed by a committed transaction,
    /// before the hooks that let it be reused run: a dirty buffer of a
    /// freed block must not reach the block once it holds something else.
    /// A buffer that nobody holds or pins but that cannot be forgotten is
    /// being written back: wait (bounded) for that write to end.
    fn forget_revoked(&self, block: u64) {
        let deadline = Instant::now() + FORGET_WAIT;
        loop {
            if self.cache.forget(block) || !self.cache.is_cached(block) {
                return;
            }
            let busy = self.cache.hold_count(block).is_some_and(|n| n > 0)
                || self.cache.pinned_blocks().contains(&block);
            if busy || Instant::now() >= deadline {
                log::debug!("journal: revoked block {block} stays cached (held or pinned)");
                return;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// A transaction is durable: unpin its blocks, drop the buffers of the
    /// blocks it revoked, run its hooks, then record it and wake waiters.
    fn finish(
        &self,
        ordinal: u64,
        seq: Option<u64>,
        pinned: Vec<u64>,
        revokes: Vec<u64>,
        hooks: Vec<super::CommitHook>,
    ) {
        for block in pinned {
            if let Err(e) = self.cache.unpin_block(block) {
                log::error!("journal: {e}");
            }
        }
        for block in revokes {
            self.forget_revoked(block);
        }
        for hook in hooks {
            hook();
        }
        let mut st = self.state.lock();
        st.committed_ordinal = st.committed_ordinal.max(ordinal);
        if let Some(seq) = seq {
            st.committed_seq = st.committed_seq.max(seq);
        }
        self.cond.notify_all();
    }
}
