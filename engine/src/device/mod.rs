//! Devices: where blocks finally live.
//!
//! A [`Device`] is a byte-addressed store in the manner of a block device:
//! reads and writes at sector-aligned offsets (multiples of [`SECTOR`]), a
//! `flush` that is a barrier (every write acknowledged before the flush is on
//! stable storage once the flush returns), `discard`, `write_zeroes` (a
//! range guaranteed to read back as zeroes), and a fixed size.
//! Devices know nothing of block sizes, tags or mirrors; the layers above
//! choose a block size and address blocks as `block * block_size`.
//!
//! All methods take `&self` and are safe to call from many threads at once,
//! as pread/pwrite are: concurrent writes to the same bytes are the caller's
//! problem, exactly as on a real disk.
//!
//! Implementations:
//! * [`FileDevice`]: an image file or a block device (pread/pwrite/fdatasync).
//! * [`MemDevice`]: memory, for unit tests of the engine.
//! * [`FaultDevice`]: wraps a device and fails, corrupts, drops or
//!   misdirects chosen requests.
//! * [`RecordingDevice`]: wraps a device, logs every write and flush in
//!   order, and builds the image a power cut would leave at any point.
//! * [`OverlayDevice`]: wraps a device and keeps every write in memory
//!   (fsck -n replays a journal through it without writing).

mod fault;
mod file;
mod memory;
mod overlay;
mod recording;

pub use fault::{Fault, FaultDevice, FaultRule, InvalidRule, Op, RuleId};
pub use file::{FileDevice, FileOpenOptions};
pub use memory::MemDevice;
pub use overlay::OverlayDevice;
pub use recording::{CrashPoint, CrashPointError, RecordedOp, RecordingDevice};

use crate::error::{DeviceError, DeviceResult};
use std::fmt;
use std::sync::Arc;

/// The alignment every device access must respect.
pub const SECTOR: u64 = 512;

/// One storage device. See the module documentation for the contract.
pub trait Device: Send + Sync + fmt::Debug {
    /// A human-readable name (the path, or a test label) used in errors.
    fn name(&self) -> &str;
    /// Size in bytes (a multiple of [`SECTOR`]).
    fn size(&self) -> u64;
    /// Read `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()>;
    /// Write `buf` at `offset`. Acknowledged means "in the device's cache":
    /// it is durable only after a later `flush` returns.
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()>;
    /// Write several buffers back to back starting at `offset` (pwritev).
    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> DeviceResult<()> {
        let mut off = offset;
        for b in bufs {
            self.write_at(off, b)?;
            off += b.len() as u64;
        }
        Ok(())
    }
    /// Barrier: everything acknowledged before this call is durable after it.
    fn flush(&self) -> DeviceResult<()>;
    /// The range's contents become undefined (zero on our devices). Advisory.
    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()>;
    /// Write zeroes over `len` bytes at `offset`: unlike [`Device::discard`],
    /// the range is guaranteed to read back as zeroes afterwards. Like a
    /// write, it is durable only after a later `flush`. The default writes
    /// zero buffers ([`write_zeroes_by_writing`]); implementations may do it
    /// without moving data (hole punching, BLKZEROOUT), so zeroing a large
    /// range of a sparse image costs nothing.
    fn write_zeroes(&self, offset: u64, len: u64) -> DeviceResult<()> {
        write_zeroes_by_writing(self, offset, len)
    }
}

/// Bytes of zeroes written per request by [`write_zeroes_by_writing`].
pub const ZERO_CHUNK: u64 = 1 << 20;

/// Zero `len` bytes at `offset` of `dev` with ordinary writes of zero
/// buffers, [`ZERO_CHUNK`] bytes at a time: the fallback of
/// [`Device::write_zeroes`] for devices with no cheaper way.
pub fn write_zeroes_by_writing<D: Device + ?Sized>(
    dev: &D,
    offset: u64,
    len: u64,
) -> DeviceResult<()> {
    check_range(dev.name(), dev.size(), offset, len)?;
    let zeroes = vec![0u8; ZERO_CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(ZERO_CHUNK);
        dev.write_at(offset + done, &zeroes[..n as usize])?;
        done += n;
    }
    Ok(())
}

/// A shared handle to a device.
pub type DeviceRef = Arc<dyn Device>;

/// Check that an access is aligned and inside a device of `size` bytes.
pub fn check_range(name: &str, size: u64, offset: u64, len: u64) -> DeviceResult<()> {
    if offset % SECTOR != 0 || len % SECTOR != 0 {
        return Err(DeviceError::Misaligned {
            device: name.to_string(),
            offset,
            len,
            align: SECTOR,
        });
    }
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DeviceError::OutOfRange {
            device: name.to_string(),
            offset,
            len,
            size,
        }),
    }
}
