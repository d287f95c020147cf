//! The tags themselves: the metadata header and the data block tag.
//!
//! Fixed here because the fs format depends on it:
//!
//! Metadata block header (first `META_HEADER_LEN` bytes of every metadata
//! block, little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4  | magic `META_MAGIC` |
//! | 4  | 4  | crc32c of the whole block with this field read as zero |
//! | 8  | 8  | block address |
//! | 16 | 8  | generation (set by the writer, e.g. the transaction id) |
//! | 24 | 16 | filesystem uuid |
//! | 40 | 2  | kind (a block type chosen by the fs) |
//! | 42 | 6  | reserved, zero |
//!
//! Data block tag (8 bytes, kept apart from the data by the fs):
//! `crc` = crc32c over le64(block) ++ le32(gen) ++ data; `gen` = le32.
//! Encoded as le32(crc) ++ le32(gen).
//!
//! Promises: [`meta_seal`] and [`Tag::compute`] are pure functions of their
//! arguments; [`meta_check`] accepts exactly the blocks `meta_seal` makes
//! for that address and uuid (with any generation unless one is expected),
//! and says what is wrong with any other. No tag value is reserved: a
//! `Tag::default()` is an ordinary tag that (almost) no content matches,
//! so never-written blocks are the filesystem's business, not this layer's.
//!
//! Relies on: crc32c (the `crc32c` crate: hardware instructions where the
//! CPU has them). crc32c catches every burst of up to 32 flipped bits and
//! all but one in 2^32 random corruptions; it is not a defence against a
//! forger.

use std::fmt;

pub const META_MAGIC: u32 = 0x3142_4d4b; // "KMB1" little-endian
pub const META_HEADER_LEN: usize = 48;

const OFF_MAGIC: usize = 0;
const OFF_CRC: usize = 4;
const OFF_BLOCK: usize = 8;
const OFF_GEN: usize = 16;
const OFF_UUID: usize = 24;
const OFF_KIND: usize = 40;
const OFF_RESERVED: usize = 42;

/// The tag of one data block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tag {
    pub crc: u32,
    pub gen: u32,
}

impl Tag {
    pub const ENCODED_LEN: usize = 8;

    /// The tag of `data` written at `block` with generation `gen`.
    pub fn compute(block: u64, gen: u32, data: &[u8]) -> Tag {
        let mut prefix = [0u8; 12];
        prefix[..8].copy_from_slice(&block.to_le_bytes());
        prefix[8..].copy_from_slice(&gen.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&prefix), data);
        Tag { crc, gen }
    }

    /// Does `data` at `block` carry this tag?
    pub fn matches(&self, block: u64, data: &[u8]) -> bool {
        Tag::compute(block, self.gen, data) == *self
    }

    /// le32(crc) ++ le32(gen).
    pub fn encode(&self) -> [u8; Tag::ENCODED_LEN] {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.crc.to_le_bytes());
        b[4..].copy_from_slice(&self.gen.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; Tag::ENCODED_LEN]) -> Tag {
        Tag {
            crc: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
            gen: u32::from_le_bytes(b[4..].try_into().expect("4 bytes")),
        }
    }
}

/// What is wrong with a copy of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagMismatch {
    /// Every byte is zero: never written since mkfs zeroed it, or discarded.
    Unwritten,
    /// Not a metadata block at all (overwritten by data, or garbage).
    BadMagic { found: u32 },
    /// The content is not what was sealed: corruption, a torn write.
    BadCrc { stored: u32, computed: u32 },
    /// A well-formed block of another address: a misdirected write.
    Misdirected { found: u64 },
    /// A well-formed block of another filesystem (a stale image).
    WrongFs,
    /// A well-formed block of another generation than the parent recorded:
    /// a lost write if `found < expected`.
    StaleGeneration { expected: u64, found: u64 },
    /// A data block that does not match its tag (corruption, a lost or
    /// misdirected write: the data tag cannot tell which).
    DataTag { expected: Tag, computed_crc: u32 },
}

impl fmt::Display for TagMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagMismatch::Unwritten => write!(f, "never written (all zeroes)"),
            TagMismatch::BadMagic { found } => write!(f, "bad magic {found:#010x}"),
            TagMismatch::BadCrc { stored, computed } => {
                write!(f, "crc {stored:#010x} stored, {computed:#010x} computed")
            }
            TagMismatch::Misdirected { found } => {
                write!(f, "misdirected: holds block {found}")
            }
            TagMismatch::WrongFs => write!(f, "block of another filesystem"),
            TagMismatch::StaleGeneration { expected, found } => {
                write!(f, "generation {found}, expected {expected}")
            }
            TagMismatch::DataTag {
                expected,
                computed_crc,
            } => write!(
                f,
                "data crc {computed_crc:#010x}, tag {:#010x} gen {}",
                expected.crc, expected.gen
            ),
        }
    }
}

fn le_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(buf[at..at + 2].try_into().expect("2 bytes"))
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

fn check_len(buf: &[u8]) {
    assert!(
        buf.len() >= META_HEADER_LEN,
        "metadata block of {} bytes is shorter than its header",
        buf.len()
    );
}

/// The generation in a metadata block's header.
pub fn meta_gen(buf: &[u8]) -> u64 {
    check_len(buf);
    le_u64(buf, OFF_GEN)
}

/// Set the generation of a metadata block (before [`meta_seal`]).
pub fn meta_set_gen(buf: &mut [u8], gen: u64) {
    check_len(buf);
    buf[OFF_GEN..OFF_GEN + 8].copy_from_slice(&gen.to_le_bytes());
}

/// The kind in a metadata block's header.
pub fn meta_kind(buf: &[u8]) -> u16 {
    check_len(buf);
    le_u16(buf, OFF_KIND)
}

/// Set the kind of a metadata block (before [`meta_seal`]).
pub fn meta_set_kind(buf: &mut [u8], kind: u16) {
    check_len(buf);
    buf[OFF_KIND..OFF_KIND + 2].copy_from_slice(&kind.to_le_bytes());
}

/// The address a metadata block says it belongs at.
pub fn meta_block(buf: &[u8]) -> u64 {
    check_len(buf);
    le_u64(buf, OFF_BLOCK)
}

/// crc32c of the block with the crc field read as zero.
fn meta_crc(buf: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&buf[..OFF_CRC]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[OFF_CRC + 4..])
}

/// Fill in magic, address, uuid, zero the reserved bytes, and the crc.
/// Generation and kind are the writer's, set beforehand.
pub fn meta_seal(block: u64, fs_uuid: &[u8; 16], buf: &mut [u8]) {
    check_len(buf);
    buf[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&META_MAGIC.to_le_bytes());
    buf[OFF_BLOCK..OFF_BLOCK + 8].copy_from_slice(&block.to_le_bytes());
    buf[OFF_UUID..OFF_UUID + 16].copy_from_slice(fs_uuid);
    buf[OFF_RESERVED..META_HEADER_LEN].fill(0);
    let crc = meta_crc(buf);
    buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Is `buf` the sealed block `block` of filesystem `fs_uuid` (and of
/// generation `expect_gen`, if given)? Checked in this order: magic, crc,
/// address, uuid, generation, so that each finding is about a block whose
/// earlier fields are sound.
pub fn meta_check(
    block: u64,
    fs_uuid: &[u8; 16],
    buf: &[u8],
    expect_gen: Option<u64>,
) -> Result<(), TagMismatch> {
    check_len(buf);
    let magic = le_u32(buf, OFF_MAGIC);
    if magic != META_MAGIC {
        if buf.iter().all(|&b| b == 0) {
            return Err(TagMismatch::Unwritten);
        }
        return Err(TagMismatch::BadMagic { found: magic });
    }
    let stored = le_u32(buf, OFF_CRC);
    let computed = meta_crc(buf);
    if stored != computed {
        return Err(TagMismatch::BadCrc { stored, computed });
    }
    let found = le_u64(buf, OFF_BLOCK);
    if found != block {
        return Err(TagMismatch::Misdirected { found });
    }
    if buf[OFF_UUID..OFF_UUID + 16] != fs_uuid[..] {
        return Err(TagMismatch::WrongFs);
    }
    if let Some(expected) = expect_gen {
        let found = le_u64(buf, OFF_GEN);
        if found != expected {
            return Err(TagMismatch::StaleGeneration { expected, found });
        }
    }
    Ok(())
}

/// Does data block `block` match `expected`?
pub fn data_check(block: u64, data: &[u8], expected: &Tag) -> Result<(), TagMismatch> {
    let got = Tag::compute(block, expected.gen, data);
    if got == *expected {
        Ok(())
    } else {
        Err(TagMismatch::DataTag {
            expected: *expected,
            computed_crc: got.crc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: [u8; 16] = *b"keelfs-test-uuid";

    #[test]
    fn data_tag_follows_the_documented_formula() {
        let data = vec![0xa5u8; 4096];
        let mut stream = Vec::new();
        stream.extend_from_slice(&77u64.to_le_bytes());
        stream.extend_from_slice(&3u32.to_le_bytes());
        stream.extend_from_slice(&data);
        let t = Tag::compute(77, 3, &data);
        assert_eq!(t.crc, crc32c::crc32c(&stream));
        assert_eq!(t.gen, 3);
        assert!(t.matches(77, &data));
        assert!(!t.matches(78, &data), "the address is bound in");
        assert_ne!(
            Tag::compute(77, 4, &data).crc,
            t.crc,
            "so is the generation"
        );
        let enc = t.encode();
        assert_eq!(&enc[..4], &t.crc.to_le_bytes());
        assert_eq!(&enc[4..], &3u32.to_le_bytes());
        assert_eq!(Tag::decode(&enc), t);
        // Pin the format to the algorithm, independently of the crate.
        assert_eq!(
            crc32c::crc32c(b"123456789"),
            0xe306_9283,
            "CRC-32C check value"
        );
        assert_eq!(t.crc, bitwise_crc32c(&stream));
    }

    /// CRC-32C (Castagnoli, reflected 0x82F63B78), one bit at a time.
    fn bitwise_crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn sealed_meta_checks_and_each_field_is_caught() {
        let mut b = vec![0u8; 4096];
        b[100] = 42;
        meta_set_gen(&mut b, 9);
        meta_set_kind(&mut b, 0x17);
        meta_seal(5, &UUID, &mut b);
        assert_eq!(&b[..4], b"KMB1");
        assert_eq!((meta_gen(&b), meta_kind(&b), meta_block(&b)), (9, 0x17, 5));
        assert_eq!(meta_check(5, &UUID, &b, None), Ok(()));
        assert_eq!(meta_check(5, &UUID, &b, Some(9)), Ok(()));
        // The crc is over the whole block with the crc field as zero.
        let mut z = b.clone();
        z[4..8].fill(0);
        assert_eq!(le_u32(&b, 4), crc32c::crc32c(&z));

        assert_eq!(
            meta_check(5, &UUID, &vec![0u8; 4096], None),
            Err(TagMismatch::Unwritten)
        );
        let mut nearly_zero = vec![0u8; 4096];
        nearly_zero[4095] = 1;
        assert!(matches!(
            meta_check(5, &UUID, &nearly_zero, None),
            Err(TagMismatch::BadMagic { found: 0 })
        ));
        let mut flipped = b.clone();
        flipped[3000] ^= 1;
        assert!(matches!(
            meta_check(5, &UUID, &flipped, None),
            Err(TagMismatch::BadCrc { .. })
        ));
        assert_eq!(
            meta_check(6, &UUID, &b, None),
            Err(TagMismatch::Misdirected { found: 5 })
        );
        assert_eq!(
            meta_check(5, b"another-fs-uuid!", &b, None),
            Err(TagMismatch::WrongFs)
        );
        assert_eq!(
            meta_check(5, &UUID, &b, Some(10)),
            Err(TagMismatch::StaleGeneration {
                expected: 10,
                found: 9
            })
        );
    }

    #[test]
    fn data_check_names_the_mismatch() {
        let d = [1u8; 512];
        let t = Tag::compute(1, 1, &d);
        assert_eq!(data_check(1, &d, &t), Ok(()));
        assert!(matches!(
            data_check(2, &d, &t),
            Err(TagMismatch::DataTag { .. })
        ));
        // The default tag is not special: zeros do not match it.
        assert!(data_check(0, &[0u8; 512], &Tag::default()).is_err());
    }
}
