//! The running transaction and the handles operations hold on it.
//!
//! What it promises:
//!
//! * A [`TxHandle`] is membership of one operation in the running
//!   transaction; the transaction cannot commit while a handle on it is
//!   open, so everything a handle did lands in one transaction.
//! * [`TxHandle::write`] pins the block in the cache *before* handing out
//!   the write guard (so no byte of a change can reach the block's home
//!   location before the transaction that made it has committed), records
//!   it in the transaction (pinned once per transaction however often it is
//!   written), and when the guard drops sets the block's header generation
//!   to the transaction's sequence and marks it dirty.
//! * [`TxHandle::revoke`] records that a metadata block is freed: no image
//!   of it logged up to and including this transaction is replayed, its own
//!   change in this transaction is not logged, and its cached buffer is
//!   dropped once the transaction is durable. Writing the block again in
//!   the same transaction cancels the revoke.
//! * [`TxHandle::log_intents`] / [`TxHandle::data_intent`] return only once
//!   the intents are durable (see `intent.rs`).
//! * Handles nest: a thread that already holds a handle on this journal
//!   joins the running transaction again at once (it never waits for a
//!   commit that waits for its own first handle).
//!
//! Relies on: the journal's state lock for every change of the running
//! transaction (see `mod.rs` for the lock order); bufio pins.

use crate::error::{FsError, FsResult};
use crate::format::header;
use crate::format::Tag;
use keelfs_engine::bufio::{BufHandle, BufWriteGuard};
use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};
use std::thread::ThreadId;
use std::time::Instant;

use super::ring::record_len;
use super::{journaled, CommitHook, Shared};

/// What the running transaction has collected so far.
pub(crate) struct Running {
    /// Sequence: the generation of the blocks it changes and of its records.
    pub seq: u64,
    /// Open handles, and handles that ever joined.
    pub handles: usize,
    pub joined: u64,
    /// Blocks it pinned (each once).
    pub pinned: BTreeSet<u64>,
    /// Blocks it freed.
    pub revokes: BTreeSet<u64>,
    pub hooks: Vec<CommitHook>,
    /// Intent records written for it, and the ring blocks they cost
    /// (their length plus the growth of recovery's reserve).
    pub intent_records: u64,
    pub intent_cost: u64,
    /// A change the journal cannot log (the commit will refuse it).
    pub invalid: Option<String>,
    pub opened: Instant,
}

impl Running {
    pub fn new(seq: u64) -> Running {
        Running {
            seq,
            handles: 0,
            joined: 0,
            pinned: BTreeSet::new(),
            revokes: BTreeSet::new(),
            hooks: Vec::new(),
            intent_records: 0,
            intent_cost: 0,
            invalid: None,
            opened: Instant::now(),
        }
    }

    /// The blocks whose images it logs, ascending.
    pub fn images(&self) -> Vec<u64> {
        self.pinned.difference(&self.revokes).copied().collect()
    }

    /// Ring blocks of its transaction record (0 if it logs nothing).
    pub fn footprint(&self, capacity: usize) -> u64 {
        let images = self.pinned.difference(&self.revokes).count();
        let entries = images + self.revokes.len();
        if entries == 0 {
            0
        } else {
            record_len(entries, images, capacity)
        }
    }

    /// Everything it costs the ring: intent records and its own record.
    pub fn total(&self, capacity: usize) -> u64 {
        self.intent_cost + self.footprint(capacity)
    }

    /// Nothing to commit: no block, no revoke, no intent record.
    pub fn is_empty(&self) -> bool {
        self.pinned.is_empty() && self.revokes.is_empty() && self.intent_records == 0
    }
}

/// Membership of one operation in the running transaction. Dropping it
/// leaves the transaction (a commit waits for every handle to drop).
pub struct TxHandle<'j> {
    pub(crate) shared: &'j Shared,
    pub(crate) seq: u64,
    pub(crate) owner: ThreadId,
}

impl<'j> TxHandle<'j> {
    /// The transaction's sequence number (the generation written into the
    /// headers of the blocks it changes; its low 32 bits tag data blocks).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The generation data blocks written in this transaction are tagged
    /// with (32 bits, docs/format.md §2).
    pub fn data_gen(&self) -> u32 {
        self.seq as u32
    }

    /// Declare that `buf` is about to change, and get write access to it.
    /// The block is pinned first; when the guard drops, the block's header
    /// generation is set to this transaction and the buffer is marked dirty.
    ///
    /// A block the journal cannot log (the superblocks, the journal itself)
    /// is still handed out, but the commit then refuses the whole
    /// transaction and the journal aborts. A transaction grown larger than
    /// [`Journal::max_transaction_blocks`](super::Journal::max_transaction_blocks)
    /// is committed if the ring has room for it when it commits, and
    /// refused (the journal aborts, the disk keeps the previous committed
    /// state) if not. Use [`try_write`](Self::try_write) to be told at once.
    pub fn write<'b>(&'b self, buf: &'b BufHandle<'_>) -> TxWrite<'b> {
        match self.admit(buf.block()) {
            Ok(()) => {}
            Err(FsError::NoSpace) => log::warn!(
                "journal: transaction {} grows past {} ring blocks; its commit may be refused",
                self.seq,
                self.shared.limits.max_transaction
            ),
            Err(e) => {
                log::error!("journal: transaction {}: {e}", self.seq);
                let mut st = self.shared.state.lock();
                st.running.invalid.get_or_insert(e.to_string());
            }
        }
        self.pin_and_guard(buf)
    }

    /// As [`write`](Self::write), but refuses (changing nothing) a block
    /// the journal cannot log ([`FsError::Invalid`]) or one that would make
    /// the transaction larger than the journal allows ([`FsError::NoSpace`]).
    pub fn try_write<'b>(&'b self, buf: &'b BufHandle<'_>) -> FsResult<TxWrite<'b>> {
        self.admit(buf.block())?;
        Ok(self.pin_and_guard(buf))
    }

    /// Whether writing `block` keeps the transaction loggable.
    fn admit(&self, block: u64) -> FsResult<()> {
        if !journaled(&self.shared.layout, block) {
            return Err(FsError::Invalid(format!(
                "block {block} is not a block the journal logs"
            )));
        }
        let st = self.shared.state.lock();
        let r = &st.running;
        if r.pinned.contains(&block) && !r.revokes.contains(&block) {
            return Ok(());
        }
        let cap = self.shared.capacity;
        let images = r.pinned.difference(&r.revokes).count() + 1;
        let entries = images + r.revokes.len() - usize::from(r.revokes.contains(&block));
        let total = r.intent_cost + record_len(entries, images, cap);
        if total > self.shared.limits.max_transaction {
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    fn pin_and_guard<'b>(&'b self, buf: &'b BufHandle<'_>) -> TxWrite<'b> {
        let block = buf.block();
        // Pin before anything can change the bytes; drop the extra pin if
        // the transaction already holds one.
        buf.pin();
        let first = {
            let mut st = self.shared.state.lock();
            debug_assert_eq!(st.running.seq, self.seq);
            if st.running.revokes.remove(&block) {
                log::debug!(
                    "journal: block {block} written after its revoke in {}",
                    self.seq
                );
            }
            st.running.pinned.insert(block)
        };
        if !first {
            if let Err(e) = buf.unpin() {
                log::error!("journal: unpin of block {block}: {e}");
            }
        }
        TxWrite {
            guard: Some(buf.data_mut()),
            buf,
            seq: self.seq,
        }
    }

    /// A metadata block is freed in this transaction: no earlier logged
    /// image of it may be replayed over whatever the block holds next, and
    /// its cached buffer is dropped once the transaction is durable.
    pub fn revoke(&self, block: u64) {
        if !journaled(&self.shared.layout, block) {
            log::error!("journal: revoke of block {block}, which the journal never logs");
            return;
        }
        self.shared.state.lock().running.revokes.insert(block);
    }

    /// Data block `block` is about to be overwritten in place, changing its
    /// tag from `old` to `new`: log the intent durably (recovery resolves a
    /// torn overwrite from it). Returns once the intent is on stable
    /// storage; do not overwrite the block if it fails.
    pub fn data_intent(&self, block: u64, old: Tag, new: Tag) -> FsResult<()> {
        self.log_intents(&[(block, old, new)])
    }

    /// [`data_intent`](Self::data_intent) for several blocks at once (one
    /// write request): one record, one flush, shared with whatever other
    /// handles log at the same moment. Do not hold a buffer guard across
    /// this call (it may checkpoint, which flushes the cache).
    pub fn log_intents(&self, intents: &[(u64, Tag, Tag)]) -> FsResult<()> {
        self.shared.log_intents(self.seq, intents)
    }

    /// Run `hook` once this transaction is durable (not at all if the
    /// journal aborts first).
    pub fn after_commit(&self, hook: CommitHook) {
        self.shared.state.lock().running.hooks.push(hook);
    }
}

impl Drop for TxHandle<'_> {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.running.handles = st.running.handles.saturating_sub(1);
        if let Some(n) = st.owners.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                st.owners.remove(&self.owner);
            }
        }
        if st.running.handles == 0 {
            self.shared.cond.notify_all();
        }
    }
}

/// Write access to one metadata block inside a transaction.
pub struct TxWrite<'b> {
    guard: Option<BufWriteGuard<'b>>,
    buf: &'b BufHandle<'b>,
    seq: u64,
}

impl Deref for TxWrite<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.guard.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for TxWrite<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.guard.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for TxWrite<'_> {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            // The header is always at least 48 bytes: the cache's blocks are.
            let _ = header::set_block_generation(&mut g, self.seq);
            drop(g);
            self.buf.mark_dirty();
        }
    }
}
