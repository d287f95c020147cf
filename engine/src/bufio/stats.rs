//! Counters of a bufio cache.
//!
//! Counters touched on the hit path (hits, held buffers) live in each shard,
//! under the shard lock the hit takes anyway, so hits on different shards
//! never share a counter's cache line. Everything else is a global atomic
//! here, changed only on misses, dirtying, pinning and writeback.

use crossbeam::utils::CachePadded;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a cache's counters ([`super::Bufio::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufioStats {
    /// Lookups served from the cache (`read`, `read_expect`, `get`, `new_buf`).
    pub hits: u64,
    /// `read`/`read_expect` lookups that had to read the store.
    pub misses: u64,
    /// Bytes of all cached buffers now.
    pub current_bytes: u64,
    /// Highest `current_bytes` seen.
    pub peak_bytes: u64,
    /// The configured limit.
    pub limit_bytes: u64,
    /// Cached buffers now.
    pub buffers: u64,
    /// Dirty buffers now.
    pub dirty_buffers: u64,
    /// Buffers with at least one holder now.
    pub held_buffers: u64,
    /// Buffers with a pin count above zero now.
    pub pinned_buffers: u64,
    /// Bytes written to the store by writeback (successful writes only).
    pub written_bytes: u64,
    /// `write_run` calls made by writeback.
    pub write_runs: u64,
    /// Failed `write_run` calls.
    pub write_errors: u64,
    /// Failed loads (`read_block` errors).
    pub read_errors: u64,
    /// Clean buffers dropped to make room.
    pub evictions: u64,
    /// Clean buffers dropped for age.
    pub aged_out: u64,
    /// Times the limit had to be exceeded (pressure callback calls).
    pub pressure_events: u64,
    /// Blocks read by `prefetch`.
    pub prefetch_reads: u64,
}

/// The global counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Read on every release (over-limit check): its own cache line.
    pub(crate) current_bytes: CachePadded<AtomicU64>,
    pub(crate) peak_bytes: AtomicU64,
    pub(crate) dirty_buffers: AtomicU64,
    pub(crate) pinned_buffers: AtomicU64,
    /// Runs handed to the store and not yet completed.
    pub(crate) writes_in_flight: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) written_bytes: AtomicU64,
    pub(crate) write_runs: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) read_errors: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) aged_out: AtomicU64,
    pub(crate) pressure_events: AtomicU64,
    pub(crate) prefetch_reads: AtomicU64,
}

impl Counters {
    /// A buffer of `bytes` joined the cache.
    pub(crate) fn add_buffer(&self, bytes: u64) {
        let now = self.current_bytes.fetch_add(bytes, Relaxed) + bytes;
        self.peak_bytes.fetch_max(now, Relaxed);
    }

    /// A buffer of `bytes` left the cache.
    pub(crate) fn remove_buffer(&self, bytes: u64) {
        self.current_bytes.fetch_sub(bytes, Relaxed);
    }

    pub(crate) fn current_bytes(&self) -> u64 {
        self.current_bytes.load(Relaxed)
    }

    pub(crate) fn dirty_buffers(&self) -> u64 {
        self.dirty_buffers.load(Relaxed)
    }

    /// The global part of a snapshot; the caller adds the per-shard part.
    pub(crate) fn snapshot(&self, block_size: u64, limit_bytes: u64) -> BufioStats {
        let current_bytes = self.current_bytes();
        BufioStats {
            hits: 0,
            misses: self.misses.load(Relaxed),
            current_bytes,
            peak_bytes: self.peak_bytes.load(Relaxed),
            limit_bytes,
            buffers: current_bytes / block_size,
            dirty_buffers: self.dirty_buffers(),
            held_buffers: 0,
            pinned_buffers: self.pinned_buffers.load(Relaxed),
            written_bytes: self.written_bytes.load(Relaxed),
            write_runs: self.write_runs.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            read_errors: self.read_errors.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            aged_out: self.aged_out.load(Relaxed),
            pressure_events: self.pressure_events.load(Relaxed),
            prefetch_reads: self.prefetch_reads.load(Relaxed),
        }
    }
}
