//! bufio: the metadata block cache, after Linux's dm-bufio.
//!
//! # What it promises
//!
//! * **A cache of whole blocks.** [`Bufio::read`] returns a [`BufHandle`] that
//!   *holds* the block's buffer: while any handle on it lives, the buffer is
//!   never evicted, forgotten or replaced. Dropping the handle releases it.
//!   Every holder of one block shares one buffer (one copy of the bytes,
//!   behind one `RwLock`). Concurrent readers of a missing block cause one
//!   store read; a failed read is reported to every waiter and nothing is
//!   cached, so the next read retries.
//! * **Dirty tracking and ordered writeback.** A holder changes the bytes and
//!   calls [`BufHandle::mark_dirty`]. Dirty buffers are written back to the
//!   [`BlockStore`] in block order, adjacent blocks merged into one
//!   [`BlockStore::write_run`]. A buffer re-dirtied while its write is in
//!   flight stays dirty; a buffer whose write fails stays dirty and the error
//!   is returned (sync) or counted (background).
//! * **Write ordering for the journal: pins.** A pinned buffer
//!   ([`BufHandle::pin`]) is never written to its home location by any path
//!   (background writeback, memory reclaim, [`Bufio::write_dirty_sync`],
//!   [`Bufio::flush`]) and never evicted, until its pin count drops to zero.
//!   Precisely: no byte changed after `pin()` returned reaches the store while
//!   the buffer is pinned (a write that copied the buffer *before* the pin may
//!   still complete after it). The journal pins a block before it changes it
//!   and unpins once the transaction's commit record is durable.
//! * **`flush`** = write every dirty unpinned buffer, wait, then
//!   [`BlockStore::flush`]: every such change is durable when it returns.
//!
//! # Memory policy
//!
//! `current_bytes` counts every cached buffer (loading, clean, dirty, held,
//! pinned) at `block_size` bytes each, globally across shards. Whenever a
//! buffer is added (miss, `new_buf`, `release_move`, `prefetch`) bufio
//! brings `current_bytes` back under `memory_limit_bytes` by
//!
//! 1. evicting the least recently released clean, unheld, unpinned buffer
//!    (one global LRU order: the oldest tail across the shards' clean LRUs);
//! 2. when none is left, writing back the oldest dirty unheld unpinned
//!    buffers (a batch, block-sorted) and evicting them;
//! 3. when nothing is evictable or writable (every buffer held, pinned, or
//!    dirty with failing writes), waiting for in-flight writes if there are
//!    any, else **exceeding the limit** rather than deadlocking, and calling
//!    the pressure callback ([`Bufio::on_pressure`]) so that the owner of the
//!    pins (the journal) can commit and unpin.
//!
//! Releasing a handle also evicts clean buffers while over the limit.
//! Writeback copies at most `writeback_batch` blocks at a time, so the extra
//! memory of writeback is bounded too. A background thread (owned by
//! [`Bufio`], stopped on drop) writes dirty buffers when dirty bytes outgrow
//! clean bytes by `dirty_ratio`, or when the cache is above its high
//! watermark (7/8 of the limit); it also ages out clean buffers unused for
//! `max_age`, never going below `resident_min_bytes`.
//!
//! # Structure and locking order
//!
//! The index and LRUs are split into 16 shards (`shard::SHARDS`) by block
//! number, each behind its own mutex, so hits on different blocks do not
//! contend; counters and memory accounting are global atomics. A buffer is on
//! at most one list of its shard: `clean_lru` (clean, unheld, unpinned: the
//! eviction candidates), `dirty_lru` (dirty, unpinned, held or not: the
//! writeback candidates, oldest first), or `pinned` (pinned, clean or dirty).
//!
//! LOCKING ORDER (declared in detail where the locks are: `buffer::Buffer`
//! and `shard::Shard`):
//!
//! 1. a buffer's data lock (`Buffer::data`, handed out by
//!    [`BufHandle::data`] / [`BufHandle::data_mut`]);
//! 2. one shard lock (`Shard::state`) — never two at once;
//! 3. leaf locks (pressure callback slot, wakeup channels, the
//!    `writes_done` generation).
//!
//! No shard lock is held across store I/O, across a data lock acquisition,
//! or across a call out (pressure callback). A reader that misses inserts a
//! *loading* entry, drops the shard lock, reads, then wakes waiters.
//! Waits (for a load, for a claimed write) sleep on the shard's condvar,
//! holding nothing else of bufio's; the waiter may hold data guards on other
//! buffers, which is safe because loaders and background/reclaim writeback
//! never wait for a data lock (they `try_read`), and no thread waits for a
//! write while holding a write claim of its own.
//!
//! Rules for callers (all follow from the order above): do not call
//! [`Bufio::write_dirty_sync`], [`Bufio::flush`] or [`Bufio::release_move`]
//! while the calling thread holds a data guard; do not call
//! [`Bufio::new_buf`] while holding a data guard on that same block.

mod buffer;
mod cache;
mod config;
mod lru;
mod prefetch;
mod pressure;
mod reclaim;
mod shard;
mod stats;
mod writeback;

pub use buffer::{BufHandle, BufReadGuard, BufWriteGuard};
pub use cache::Bufio;
pub use config::BufioConfig;
pub use pressure::{PressureCallback, PressureInfo};
pub use stats::BufioStats;

use crate::error::EngineResult;

/// The storage bufio reads and writes whole blocks on.
pub trait BlockStore: Send + Sync {
    /// Bytes per block.
    fn block_size(&self) -> usize;
    /// Number of addressable blocks.
    fn num_blocks(&self) -> u64;
    /// Read one block into `buf`, verified. `expect_gen` is the generation
    /// the caller's parent structure recorded, if any (catches lost writes).
    fn read_block(&self, block: u64, buf: &mut [u8], expect_gen: Option<u64>) -> EngineResult<()>;
    /// Write a run of adjacent blocks starting at `first`; `data.len()` is a
    /// multiple of the block size. The store may modify `data` (to seal
    /// tags into it).
    fn write_run(&self, first: u64, data: &mut [u8]) -> EngineResult<()>;
    /// Barrier: every write returned before this call is durable after it.
    fn flush(&self) -> EngineResult<()>;
    /// The blocks' contents are no longer needed.
    fn discard(&self, first: u64, count: u64) -> EngineResult<()>;
}
