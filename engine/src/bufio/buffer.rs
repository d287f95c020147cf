//! A cached block's bytes, and the handle that holds it.

use super::cache::Inner;
use crate::error::{DeviceError, EngineError, EngineResult};
use parking_lot::{
    MappedRwLockReadGuard, MappedRwLockWriteGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::fmt;
use std::io;
use std::sync::{Arc, OnceLock};

/// Shared access to a held block's bytes ([`BufHandle::data`]).
pub type BufReadGuard<'h> = MappedRwLockReadGuard<'h, [u8]>;
/// Exclusive access to a held block's bytes ([`BufHandle::data_mut`]).
pub type BufWriteGuard<'h> = MappedRwLockWriteGuard<'h, [u8]>;

/// One cached block's bytes.
///
/// LOCKING: `data` is lock #1 of bufio's order (see the module doc). It may
/// be held while a shard lock is taken (a holder calls `mark_dirty` with a
/// write guard alive; writeback takes the shard lock under a read guard to
/// re-check the pin), never the other way round: no code takes a data lock
/// while holding a shard lock. Writeback takes it shared to copy the bytes:
/// with `try_read` in background and reclaim writeback (never waits), with a
/// blocking `read` only in sync writeback.
pub(crate) struct Buffer {
    /// The block's bytes; empty until the load completes (nobody reads them
    /// before: a loading entry hands out no handle).
    pub(crate) data: RwLock<Box<[u8]>>,
    /// Set (before waiters are woken) when the load failed: waiters return
    /// a copy of it.
    load_error: OnceLock<EngineError>,
}

impl Buffer {
    /// A buffer whose bytes are still to be loaded.
    pub(crate) fn loading() -> Self {
        Buffer {
            data: RwLock::new(Box::default()),
            load_error: OnceLock::new(),
        }
    }

    /// A buffer holding `bytes`.
    pub(crate) fn with_data(bytes: Box<[u8]>) -> Self {
        Buffer {
            data: RwLock::new(bytes),
            load_error: OnceLock::new(),
        }
    }

    pub(crate) fn load_error(&self) -> Option<&EngineError> {
        self.load_error.get()
    }

    pub(crate) fn set_load_error(&self, err: &EngineError) {
        let _ = self.load_error.set(duplicate_error(err));
    }
}

/// A hold on one cached block. Dropping it releases the hold.
///
/// Every handle on a block shares one buffer. The bytes are behind a
/// per-buffer `RwLock`: [`data`](Self::data) / [`data_mut`](Self::data_mut).
/// After changing them, call [`mark_dirty`](Self::mark_dirty) (or
/// [`mark_partial_dirty`](Self::mark_partial_dirty)) so they get written.
pub struct BufHandle<'a> {
    pub(super) cache: &'a Inner,
    pub(super) block: u64,
    pub(super) shard: usize,
    pub(super) slot: u32,
    pub(super) buf: Arc<Buffer>,
}

impl<'a> BufHandle<'a> {
    /// The block this handle holds.
    pub fn block(&self) -> u64 {
        self.block
    }

    /// Shared access to the block's bytes.
    pub fn data(&self) -> BufReadGuard<'_> {
        RwLockReadGuard::map(self.buf.data.read(), |bytes| &**bytes)
    }

    /// Exclusive access to the block's bytes. Call `mark_dirty` afterwards
    /// (with or without the guard still alive).
    pub fn data_mut(&self) -> BufWriteGuard<'_> {
        RwLockWriteGuard::map(self.buf.data.write(), |bytes| &mut **bytes)
    }

    /// The whole block must be written back.
    pub fn mark_dirty(&self) {
        self.cache.mark_dirty(self, None);
    }

    /// Bytes `start..end` changed. bufio writes whole blocks (the store seals
    /// a tag over the whole block), so this records the range and marks the
    /// buffer dirty; `Invalid` if the range is empty or outside the block.
    pub fn mark_partial_dirty(&self, start: usize, end: usize) -> EngineResult<()> {
        if start >= end || end > self.cache.block_size {
            return Err(EngineError::Invalid(format!(
                "bufio: dirty range {start}..{end} of block {} (block size {})",
                self.block, self.cache.block_size
            )));
        }
        self.cache
            .mark_dirty(self, Some((start as u32, end as u32)));
        Ok(())
    }

    /// Keep the buffer from its home location (and in memory) until unpinned.
    /// Pin *before* changing the bytes: no change made after `pin` returns
    /// reaches the store while the pin count is above zero.
    pub fn pin(&self) {
        self.cache.pin(self.shard, self.slot);
    }

    /// Drop one pin; `Invalid` if the buffer is not pinned.
    pub fn unpin(&self) -> EngineResult<()> {
        self.cache.unpin(self.shard, self.slot, self.block)
    }

    /// Pins on the buffer now.
    pub fn pin_count(&self) -> u32 {
        self.cache
            .with_entry(self.shard, self.slot, |e| e.pin_count)
    }

    /// Holders of the buffer now (this handle included).
    pub fn hold_count(&self) -> u32 {
        self.cache
            .with_entry(self.shard, self.slot, |e| e.hold_count)
    }

    /// Whether the buffer has changes not yet written to the store.
    pub fn is_dirty(&self) -> bool {
        self.cache.with_entry(self.shard, self.slot, |e| e.dirty)
    }

    /// The union of the ranges marked dirty since the buffer was last clean
    /// (`0..block_size` after `mark_dirty`); `None` if clean.
    pub fn dirty_range(&self) -> Option<std::ops::Range<usize>> {
        self.cache.with_entry(self.shard, self.slot, |e| {
            e.dirty
                .then_some(e.dirty_range.0 as usize..e.dirty_range.1 as usize)
        })
    }
}

impl Drop for BufHandle<'_> {
    fn drop(&mut self) {
        self.cache.release(self.shard, self.slot);
    }
}

impl fmt::Debug for BufHandle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufHandle")
            .field("block", &self.block)
            .field("shard", &self.shard)
            .field("slot", &self.slot)
            .finish()
    }
}

/// A copy of `err` for the other waiters of a failed load (`EngineError`
/// is not `Clone`: an `io::Error` inside is copied as kind + message).
pub(crate) fn duplicate_error(err: &EngineError) -> EngineError {
    match err {
        EngineError::Device(dev) => EngineError::Device(duplicate_device_error(dev)),
        EngineError::NoGoodCopy {
            block,
            legs,
            detail,
        } => EngineError::NoGoodCopy {
            block: *block,
            legs: *legs,
            detail: detail.clone(),
        },
        EngineError::Unwritten { block } => EngineError::Unwritten { block: *block },
        EngineError::WriteFailed { block } => EngineError::WriteFailed { block: *block },
        EngineError::FlushFailed => EngineError::FlushFailed,
        EngineError::NoLegs => EngineError::NoLegs,
        EngineError::Invalid(msg) => EngineError::Invalid(msg.clone()),
    }
}

fn duplicate_io_error(err: &io::Error) -> io::Error {
    io::Error::new(err.kind(), err.to_string())
}

fn duplicate_device_error(err: &DeviceError) -> DeviceError {
    match err {
        DeviceError::Io {
            device,
            op,
            offset,
            source,
        } => DeviceError::Io {
            device: device.clone(),
            op,
            offset: *offset,
            source: duplicate_io_error(source),
        },
        DeviceError::OutOfRange {
            device,
            offset,
            len,
            size,
        } => DeviceError::OutOfRange {
            device: device.clone(),
            offset: *offset,
            len: *len,
            size: *size,
        },
        DeviceError::Misaligned {
            device,
            offset,
            len,
            align,
        } => DeviceError::Misaligned {
            device: device.clone(),
            offset: *offset,
            len: *len,
            align: *align,
        },
        DeviceError::Injected { device, op, offset } => DeviceError::Injected {
            device: device.clone(),
            op,
            offset: *offset,
        },
        DeviceError::Open { device, source } => DeviceError::Open {
            device: device.clone(),
            source: duplicate_io_error(source),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicated_errors_say_the_same() {
        let errors = [
            EngineError::Device(DeviceError::Io {
                device: "d0".into(),
                op: "read",
                offset: 4096,
                source: io::Error::other("boom"),
            }),
            EngineError::NoGoodCopy {
                block: 3,
                legs: 2,
                detail: "crc".into(),
            },
            EngineError::Invalid("x".into()),
        ];
        for err in &errors {
            assert_eq!(duplicate_error(err).to_string(), err.to_string());
        }
    }
}
