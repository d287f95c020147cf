//! A copy-on-write overlay: a device whose writes stay in memory.
//!
//! [`OverlayDevice`] wraps a device that must not change (opened read-only,
//! or one that fsck -n promised to leave alone) and lets the layers above
//! write anyway: every write lands in a map of 512-byte sectors held in
//! memory, and reads return the overlay's sectors where there are any and
//! the device's bytes elsewhere. `flush` and `discard` change nothing
//! below. What fsck uses it for: replaying a journal "in memory only" so a
//! read-only check sees the filesystem as the next mount will, without
//! writing a byte. Memory grows with the bytes written (a journal replay
//! writes at most the journal's size), so it is not for bulk data.

use super::{check_range, Device, DeviceRef, SECTOR};
use crate::error::DeviceResult;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// See the module documentation.
#[derive(Debug)]
pub struct OverlayDevice {
    below: DeviceRef,
    name: String,
    /// Sector index → the sector's bytes as last written through the overlay.
    sectors: Mutex<BTreeMap<u64, Box<[u8]>>>,
}

impl OverlayDevice {
    /// An overlay over `below`; nothing written yet.
    pub fn new(below: DeviceRef) -> OverlayDevice {
        let name = below.name().to_string();
        OverlayDevice {
            below,
            name,
            sectors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Bytes held in memory (written through the overlay).
    pub fn bytes_held(&self) -> u64 {
        self.sectors.lock().unwrap().len() as u64 * SECTOR
    }
}

impl Device for OverlayDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.below.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        check_range(&self.name, self.size(), offset, buf.len() as u64)?;
        let first = offset / SECTOR;
        let end = first + buf.len() as u64 / SECTOR;
        let sectors = self.sectors.lock().unwrap();
        let mut held = sectors.range(first..end).peekable();
        if held.peek().is_none() {
            drop(held);
            drop(sectors);
            return self.below.read_at(offset, buf);
        }
        // Read what is below only if some sector in the range is not held.
        if (end - first) as usize != sectors.range(first..end).count() {
            self.below.read_at(offset, buf)?;
        }
        for (&sector, bytes) in held {
            let at = ((sector - first) * SECTOR) as usize;
            buf[at..at + SECTOR as usize].copy_from_slice(bytes);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        check_range(&self.name, self.size(), offset, buf.len() as u64)?;
        let first = offset / SECTOR;
        let mut sectors = self.sectors.lock().unwrap();
        for (i, chunk) in buf.chunks(SECTOR as usize).enumerate() {
            sectors.insert(first + i as u64, chunk.into());
        }
        Ok(())
    }

    fn flush(&self) -> DeviceResult<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        // Advisory: keeping the old contents is allowed.
        check_range(&self.name, self.size(), offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use std::sync::Arc;

    #[test]
    fn writes_stay_in_memory_and_read_back_merged() {
        let below = Arc::new(MemDevice::new("below", 64 * 1024));
        below.write_at(0, &[1u8; 8192]).unwrap();
        let o = OverlayDevice::new(below.clone());
        o.write_at(1024, &[2u8; 1024]).unwrap();
        let mut buf = vec![0u8; 4096];
        o.read_at(0, &mut buf).unwrap();
        assert!(buf[..1024].iter().all(|&b| b == 1));
        assert!(buf[1024..2048].iter().all(|&b| b == 2));
        assert!(buf[2048..].iter().all(|&b| b == 1));
        // Below is untouched.
        below.read_at(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 1));
        // A range held entirely in the overlay.
        let mut small = vec![0u8; 512];
        o.read_at(1536, &mut small).unwrap();
        assert!(small.iter().all(|&b| b == 2));
        // Rewrites replace, flush and discard change nothing.
        o.write_at(1024, &[3u8; 512]).unwrap();
        o.flush().unwrap();
        o.discard(0, 4096).unwrap();
        o.read_at(1024, &mut small).unwrap();
        assert!(small.iter().all(|&b| b == 3));
        assert_eq!(o.bytes_held(), 1024);
    }

    #[test]
    fn refuses_what_the_device_would() {
        let o = OverlayDevice::new(Arc::new(MemDevice::new("below", 4096)));
        assert!(o.write_at(100, &[0u8; 512]).is_err());
        assert!(o.write_at(4096, &[0u8; 512]).is_err());
        assert!(o.read_at(0, &mut [0u8; 8192]).is_err());
    }
}
