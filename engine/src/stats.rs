//! Per-leg counters, the numbers behind a `zpool status`-like view.
//!
//! Promises: every device request the mirror layer makes on a leg is
//! counted on that leg exactly once (`reads`/`writes`/`flushes` on success
//! with the bytes moved, or one of the `*_errors` on failure); the
//! integrity layer adds `checksum_errors` (a copy that read fine but did not
//! match its tag) and `healed` (blocks rewritten on this leg from a good
//! copy). Counters only grow until [`LegStats::reset`] (`zpool clear`).
//!
//! Relies on nothing: plain relaxed atomics. A [`StatsSnapshot`] is read
//! field by field, so under concurrent I/O it is not one instant, only a
//! set of values each of which was true at some point during the read.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters of one leg.
#[derive(Debug, Default)]
pub struct LegStats {
    reads: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    read_errors: AtomicU64,
    write_errors: AtomicU64,
    flush_errors: AtomicU64,
    checksum_errors: AtomicU64,
    healed: AtomicU64,
}

/// A copy of one leg's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Successful device reads (requests, not blocks).
    pub reads: u64,
    /// Successful device writes (requests; a merged run counts once).
    pub writes: u64,
    /// Successful flushes.
    pub flushes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Device reads that failed.
    pub read_errors: u64,
    /// Device writes that failed (each one marks the leg failed).
    pub write_errors: u64,
    /// Flushes that failed (each one marks the leg failed).
    pub flush_errors: u64,
    /// Blocks read fine whose content did not match its tag.
    pub checksum_errors: u64,
    /// Blocks rewritten on this leg from a good copy on another.
    pub healed: u64,
}

impl StatsSnapshot {
    /// Device errors of every kind (the READ + WRITE columns together).
    pub fn io_errors(&self) -> u64 {
        self.read_errors + self.write_errors + self.flush_errors
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl LegStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record_read(&self, bytes: u64) {
        bump(&self.reads, 1);
        bump(&self.bytes_read, bytes);
    }

    pub fn record_write(&self, bytes: u64) {
        bump(&self.writes, 1);
        bump(&self.bytes_written, bytes);
    }

    pub fn record_flush(&self) {
        bump(&self.flushes, 1);
    }

    pub fn record_read_error(&self) {
        bump(&self.read_errors, 1);
    }

    pub fn record_write_error(&self) {
        bump(&self.write_errors, 1);
    }

    pub fn record_flush_error(&self) {
        bump(&self.flush_errors, 1);
    }

    /// `blocks` copies on this leg failed their tag check.
    pub fn record_checksum_errors(&self, blocks: u64) {
        bump(&self.checksum_errors, blocks);
    }

    /// `blocks` blocks on this leg were rewritten from a good copy.
    pub fn record_healed(&self, blocks: u64) {
        bump(&self.healed, blocks);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            reads: get(&self.reads),
            writes: get(&self.writes),
            flushes: get(&self.flushes),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            read_errors: get(&self.read_errors),
            write_errors: get(&self.write_errors),
            flush_errors: get(&self.flush_errors),
            checksum_errors: get(&self.checksum_errors),
            healed: get(&self.healed),
        }
    }

    /// Zero every counter (`zpool clear`).
    pub fn reset(&self) {
        for c in [
            &self.reads,
            &self.writes,
            &self.flushes,
            &self.bytes_read,
            &self.bytes_written,
            &self.read_errors,
            &self.write_errors,
            &self.flush_errors,
            &self.checksum_errors,
            &self.healed,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_snapshot_and_reset() {
        let s = LegStats::new();
        s.record_read(4096);
        s.record_read(512);
        s.record_write(8192);
        s.record_write_error();
        s.record_checksum_errors(3);
        s.record_healed(2);
        let snap = s.snapshot();
        assert_eq!(snap.reads, 2);
        assert_eq!(snap.bytes_read, 4608);
        assert_eq!(snap.bytes_written, 8192);
        assert_eq!(snap.io_errors(), 1);
        assert_eq!((snap.checksum_errors, snap.healed), (3, 2));
        s.reset();
        assert_eq!(s.snapshot(), StatsSnapshot::default());
    }
}
