//! Little-endian integers at byte offsets, with bounds checks.
//!
//! Every codec reads through a [`Reader`] and writes through a [`Writer`]:
//! an access past the end of the buffer is a [`FormatError::Truncated`]
//! naming the structure, never a panic. The free functions return `None`
//! on a short buffer for callers without a structure to name.

use super::{FormatError, Structure};

/// The `len` bytes at `offset`, or `None` if the buffer is too short.
pub fn get_bytes(buf: &[u8], offset: usize, len: usize) -> Option<&[u8]> {
    buf.get(offset..offset.checked_add(len)?)
}

/// The `N` bytes at `offset` as an array, or `None` if the buffer is too short.
pub fn get_array<const N: usize>(buf: &[u8], offset: usize) -> Option<[u8; N]> {
    get_bytes(buf, offset, N)?.try_into().ok()
}

/// le16 at `offset`.
pub fn get_u16(buf: &[u8], offset: usize) -> Option<u16> {
    get_array(buf, offset).map(u16::from_le_bytes)
}

/// le32 at `offset`.
pub fn get_u32(buf: &[u8], offset: usize) -> Option<u32> {
    get_array(buf, offset).map(u32::from_le_bytes)
}

/// le64 at `offset`.
pub fn get_u64(buf: &[u8], offset: usize) -> Option<u64> {
    get_array(buf, offset).map(u64::from_le_bytes)
}

/// Writes `bytes` at `offset`; `None` (and nothing written) if it does not fit.
pub fn put_bytes(buf: &mut [u8], offset: usize, bytes: &[u8]) -> Option<()> {
    let end = offset.checked_add(bytes.len())?;
    buf.get_mut(offset..end)?.copy_from_slice(bytes);
    Some(())
}

/// Writes le16 at `offset`.
pub fn put_u16(buf: &mut [u8], offset: usize, value: u16) -> Option<()> {
    put_bytes(buf, offset, &value.to_le_bytes())
}

/// Writes le32 at `offset`.
pub fn put_u32(buf: &mut [u8], offset: usize, value: u32) -> Option<()> {
    put_bytes(buf, offset, &value.to_le_bytes())
}

/// Writes le64 at `offset`.
pub fn put_u64(buf: &mut [u8], offset: usize, value: u64) -> Option<()> {
    put_bytes(buf, offset, &value.to_le_bytes())
}

fn truncated(structure: Structure, offset: usize, len: usize, have: usize) -> FormatError {
    FormatError::Truncated {
        structure,
        need: offset.saturating_add(len),
        have,
    }
}

/// Bounds-checked little-endian reads from one structure's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    structure: Structure,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, reporting errors against `structure`.
    pub fn new(buf: &'a [u8], structure: Structure) -> Reader<'a> {
        Reader { buf, structure }
    }

    /// The whole buffer.
    pub fn buf(&self) -> &'a [u8] {
        self.buf
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless the buffer holds at least `len` bytes.
    pub fn require(&self, len: usize) -> Result<(), FormatError> {
        if self.buf.len() < len {
            return Err(truncated(self.structure, 0, len, self.buf.len()));
        }
        Ok(())
    }

    /// The `len` bytes at `offset`.
    pub fn bytes(&self, offset: usize, len: usize) -> Result<&'a [u8], FormatError> {
        get_bytes(self.buf, offset, len)
            .ok_or_else(|| truncated(self.structure, offset, len, self.buf.len()))
    }

    /// The `N` bytes at `offset` as an array.
    pub fn array<const N: usize>(&self, offset: usize) -> Result<[u8; N], FormatError> {
        get_array(self.buf, offset)
            .ok_or_else(|| truncated(self.structure, offset, N, self.buf.len()))
    }

    /// The byte at `offset`.
    pub fn u8(&self, offset: usize) -> Result<u8, FormatError> {
        Ok(self.array::<1>(offset)?[0])
    }

    /// le16 at `offset`.
    pub fn u16(&self, offset: usize) -> Result<u16, FormatError> {
        self.array(offset).map(u16::from_le_bytes)
    }

    /// le32 at `offset`.
    pub fn u32(&self, offset: usize) -> Result<u32, FormatError> {
        self.array(offset).map(u32::from_le_bytes)
    }

    /// le64 at `offset`.
    pub fn u64(&self, offset: usize) -> Result<u64, FormatError> {
        self.array(offset).map(u64::from_le_bytes)
    }

    /// Signed le64 at `offset`.
    pub fn i64(&self, offset: usize) -> Result<i64, FormatError> {
        self.array(offset).map(i64::from_le_bytes)
    }
}

/// Bounds-checked little-endian writes into one structure's bytes.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    structure: Structure,
}

impl<'a> Writer<'a> {
    /// A writer over `buf`, reporting errors against `structure`.
    pub fn new(buf: &'a mut [u8], structure: Structure) -> Writer<'a> {
        Writer { buf, structure }
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless the buffer holds at least `len` bytes.
    pub fn require(&self, len: usize) -> Result<(), FormatError> {
        if self.buf.len() < len {
            return Err(truncated(self.structure, 0, len, self.buf.len()));
        }
        Ok(())
    }

    /// Zeroes the whole buffer.
    pub fn zero_all(&mut self) {
        self.buf.fill(0);
    }

    /// Writes `bytes` at `offset`.
    pub fn bytes(&mut self, offset: usize, bytes: &[u8]) -> Result<(), FormatError> {
        let have = self.buf.len();
        put_bytes(self.buf, offset, bytes)
            .ok_or_else(|| truncated(self.structure, offset, bytes.len(), have))
    }

    /// Writes one byte at `offset`.
    pub fn u8(&mut self, offset: usize, value: u8) -> Result<(), FormatError> {
        self.bytes(offset, &[value])
    }

    /// Writes le16 at `offset`.
    pub fn u16(&mut self, offset: usize, value: u16) -> Result<(), FormatError> {
        self.bytes(offset, &value.to_le_bytes())
    }

    /// Writes le32 at `offset`.
    pub fn u32(&mut self, offset: usize, value: u32) -> Result<(), FormatError> {
        self.bytes(offset, &value.to_le_bytes())
    }

    /// Writes le64 at `offset`.
    pub fn u64(&mut self, offset: usize, value: u64) -> Result<(), FormatError> {
        self.bytes(offset, &value.to_le_bytes())
    }

    /// Writes signed le64 at `offset`.
    pub fn i64(&mut self, offset: usize, value: i64) -> Result<(), FormatError> {
        self.bytes(offset, &value.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_little_endian_and_bounds_checked() {
        let buf = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(get_u16(&buf, 0), Some(0x0201));
        assert_eq!(get_u32(&buf, 1), Some(0x0504_0302));
        assert_eq!(get_u64(&buf, 1), Some(0x0908_0706_0504_0302));
        assert_eq!(get_u64(&buf, 2), None);
        assert_eq!(get_u16(&buf, usize::MAX), None);
        let r = Reader::new(&buf, Structure::Inode);
        assert_eq!(
            r.u64(4),
            Err(FormatError::Truncated {
                structure: Structure::Inode,
                need: 12,
                have: 9
            })
        );
        assert!(r.bytes(usize::MAX, 2).is_err());
    }

    #[test]
    fn writes_are_little_endian_and_bounds_checked() {
        let mut buf = [0u8; 6];
        let mut w = Writer::new(&mut buf, Structure::Inode);
        w.u32(1, 0xa1b2_c3d4).unwrap();
        assert!(w.u32(3, 1).is_err());
        assert!(w.u8(6, 1).is_err());
        assert_eq!(buf, [0, 0xd4, 0xc3, 0xb2, 0xa1, 0]);
    }
}
