//! The journal: every metadata change of the filesystem goes through it.
//!
//! An operation takes a [`TxHandle`] with [`Journal::start`], declares each
//! metadata block it is about to change with [`TxHandle::write`] (which pins
//! the block in the bufio cache *before* handing out the write guard, so no
//! half-made change can reach the block's home location), and drops the
//! handle when done. Operations join the running transaction; a commit
//! makes a whole transaction durable at once (group commit), and
//! [`Journal::commit`] is what fsync, fdatasync, fsyncdir and syncfs call.
//!
//! Interim implementation (until the physical redo journal of docs/format.md
//! §10 lands, issue 4): a commit writes every dirty metadata buffer home and
//! flushes. That is durable for fsync but not atomic across a crash in the
//! middle of a commit; the interface above is the one the redo journal keeps.

use crate::error::FsResult;
use crate::format::header;
use keelfs_engine::bufio::{BufHandle, BufWriteGuard, Bufio};
use keelfs_engine::integrity::Tag;
use parking_lot::Mutex;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Work to run once the transaction it was registered in is durable.
pub type CommitHook = Box<dyn FnOnce() + Send>;

/// The filesystem's journal.
pub struct Journal {
    cache: Arc<Bufio>,
    /// Sequence of the running transaction.
    running_seq: AtomicU64,
    /// Lock order: taken alone; never held across I/O by a handle.
    running: Mutex<Running>,
    /// One commit at a time. Lock order: `commit_lock` before `running`.
    commit_lock: Mutex<()>,
}

#[derive(Default)]
struct Running {
    /// Blocks pinned by the running transaction.
    pinned: Vec<u64>,
    hooks: Vec<CommitHook>,
}

impl Journal {
    /// A journal over `cache`, continuing after transaction `last_seq`.
    pub fn new(cache: Arc<Bufio>, last_seq: u64) -> Journal {
        Journal {
            cache,
            running_seq: AtomicU64::new(last_seq + 1),
            running: Mutex::new(Running::default()),
            commit_lock: Mutex::new(()),
        }
    }

    /// The metadata cache the journal orders.
    pub fn cache(&self) -> &Arc<Bufio> {
        &self.cache
    }

    /// Join the running transaction.
    pub fn start(&self) -> FsResult<TxHandle<'_>> {
        Ok(TxHandle {
            journal: self,
            seq: self.running_seq.load(Ordering::Acquire),
        })
    }

    /// Make every change of every handle dropped before this call durable.
    pub fn commit(&self) -> FsResult<()> {
        let _one = self.commit_lock.lock();
        let closed = {
            let mut r = self.running.lock();
            self.running_seq.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *r)
        };
        for block in &closed.pinned {
            self.cache.unpin_block(*block)?;
        }
        self.cache.flush()?;
        for hook in closed.hooks {
            hook();
        }
        Ok(())
    }

    /// Last commit before unmount.
    pub fn shutdown(&self) -> FsResult<()> {
        self.commit()
    }

    /// The sequence of the last transaction known durable.
    pub fn committed_seq(&self) -> u64 {
        self.running_seq.load(Ordering::Acquire) - 1
    }
}

/// Membership of one operation in the running transaction.
pub struct TxHandle<'j> {
    journal: &'j Journal,
    seq: u64,
}

impl<'j> TxHandle<'j> {
    /// The transaction's sequence number (the generation written into the
    /// headers of the blocks it changes; its low 32 bits tag data blocks).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The generation data blocks written in this transaction are tagged with.
    pub fn data_gen(&self) -> u32 {
        self.seq as u32
    }

    /// Declare that `buf` is about to change, and get write access to it.
    /// The block is pinned first; when the guard drops, the block's header
    /// generation is set to this transaction and the buffer is marked dirty.
    pub fn write<'b>(&self, buf: &'b BufHandle<'_>) -> TxWrite<'b> {
        buf.pin();
        self.journal.running.lock().pinned.push(buf.block());
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
        let cache = self.journal.cache.clone();
        self.after_commit(Box::new(move || {
            cache.forget(block);
        }));
    }

    /// Data block `block` is about to be overwritten in place, changing its
    /// tag from `old` to `new` (recovery resolves torn overwrites from this).
    pub fn data_intent(&self, _block: u64, _old: Tag, _new: Tag) {}

    /// Run `hook` once this transaction is durable.
    pub fn after_commit(&self, hook: CommitHook) {
        self.journal.running.lock().hooks.push(hook);
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
        self.guard.as_deref().expect("guard lives until drop")
    }
}

impl DerefMut for TxWrite<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.guard.as_deref_mut().expect("guard lives until drop")
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
