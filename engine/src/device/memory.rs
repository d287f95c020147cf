//! An in-memory device for unit tests of the engine.
//!
//! Contents live in a vector of sector-sized cells behind one lock; the
//! device is as durable as a disk with no cache (every acknowledged write is
//! "stable"), so `flush` only counts. Use [`super::RecordingDevice`] on top
//! of it to model a volatile write cache and power cuts.

use super::{check_range, Device};
use crate::error::DeviceResult;
use parking_lot::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct MemDevice {
    name: String,
    data: RwLock<Vec<u8>>,
    flushes: AtomicU64,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes (rounded down to a sector).
    pub fn new(name: impl Into<String>, size: u64) -> Self {
        let size = size - size % super::SECTOR;
        MemDevice {
            name: name.into(),
            data: RwLock::new(vec![0; size as usize]),
            flushes: AtomicU64::new(0),
        }
    }

    /// A device holding exactly `image` (whose length must be sector-aligned).
    pub fn from_image(name: impl Into<String>, image: Vec<u8>) -> Self {
        assert_eq!(
            image.len() as u64 % super::SECTOR,
            0,
            "image not sector-aligned"
        );
        MemDevice {
            name: name.into(),
            data: RwLock::new(image),
            flushes: AtomicU64::new(0),
        }
    }

    /// A copy of the whole contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.data.read().clone()
    }

    /// How many flushes have been issued.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Overwrite bytes directly, bypassing alignment rules (test corruption).
    pub fn poke(&self, offset: u64, bytes: &[u8]) {
        let mut d = self.data.write();
        d[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
    }

    /// Read bytes directly, bypassing alignment rules.
    pub fn peek(&self, offset: u64, len: usize) -> Vec<u8> {
        self.data.read()[offset as usize..offset as usize + len].to_vec()
    }
}

impl Device for MemDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> u64 {
        self.data.read().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        let d = self.data.read();
        check_range(&self.name, d.len() as u64, offset, buf.len() as u64)?;
        buf.copy_from_slice(&d[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        let mut d = self.data.write();
        check_range(&self.name, d.len() as u64, offset, buf.len() as u64)?;
        d[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> DeviceResult<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        let mut d = self.data.write();
        check_range(&self.name, d.len() as u64, offset, len)?;
        d[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> DeviceResult<()> {
        let mut d = self.data.write();
        check_range(&self.name, d.len() as u64, offset, len)?;
        d[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DeviceError;

    #[test]
    fn write_then_read_back() {
        let d = MemDevice::new("m", 8192);
        d.write_at(512, &[7u8; 1024]).unwrap();
        let mut b = [0u8; 1536];
        d.read_at(0, &mut b).unwrap();
        assert!(b[..512].iter().all(|&x| x == 0));
        assert!(b[512..].iter().all(|&x| x == 7));
    }

    #[test]
    fn rejects_misaligned_and_out_of_range() {
        let d = MemDevice::new("m", 4096);
        assert!(matches!(
            d.write_at(1, &[0; 512]),
            Err(DeviceError::Misaligned { .. })
        ));
        assert!(matches!(
            d.write_at(0, &[0; 100]),
            Err(DeviceError::Misaligned { .. })
        ));
        let mut b = [0u8; 512];
        assert!(matches!(
            d.read_at(4096, &mut b),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.read_at(u64::MAX - 511, &mut b),
            Err(DeviceError::OutOfRange { .. })
        ));
    }

    #[test]
    fn discard_zeroes() {
        let d = MemDevice::new("m", 4096);
        d.write_at(0, &[9u8; 4096]).unwrap();
        d.discard(512, 1024).unwrap();
        let s = d.snapshot();
        assert!(s[512..1536].iter().all(|&x| x == 0));
        assert!(s[..512].iter().all(|&x| x == 9));
    }

    #[test]
    fn write_zeroes_zeroes_exactly_the_range() {
        let d = MemDevice::new("m", 4096);
        d.write_at(0, &[9u8; 4096]).unwrap();
        d.write_zeroes(1024, 2048).unwrap();
        let s = d.snapshot();
        assert!(s[1024..3072].iter().all(|&x| x == 0));
        assert!(s[..1024].iter().chain(&s[3072..]).all(|&x| x == 9));
        assert!(matches!(
            d.write_zeroes(4096, 512),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.write_zeroes(1, 512),
            Err(DeviceError::Misaligned { .. })
        ));
    }
}
