//! Block kinds (§2) and the two header fields the filesystem sets itself.
//!
//! The engine owns the 48-byte metadata header and seals it (magic, crc,
//! address, uuid). Before handing a block to the engine, the filesystem
//! writes the block's kind (offset 40, le16) and generation (offset 16,
//! le64); these helpers do that, on the whole block (header included).

use super::le::{Reader, Writer};
use super::{FormatError, Problem, Structure, META_HEADER_LEN};

/// Offset of the generation field in the metadata header.
pub const HEADER_GENERATION_OFFSET: usize = 16;
/// Offset of the kind field in the metadata header.
pub const HEADER_KIND_OFFSET: usize = 40;

/// What a metadata block holds (§2, header offset 40).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum BlockKind {
    Superblock = 1,
    JournalSuperblock = 2,
    JournalDescriptor = 3,
    JournalCommit = 4,
    BlockBitmap = 5,
    InodeBitmap = 6,
    InodeTable = 7,
    TagTable = 8,
    ExtentNode = 9,
    DirLeaf = 10,
    DirNode = 11,
    Xattr = 12,
    /// Symlink target too long for the inode (§5), metadata-tagged.
    Overflow = 13,
    /// Reserved: version 1 writes revokes as descriptor entries (§10).
    JournalRevoke = 14,
}

impl BlockKind {
    /// Every kind, in number order.
    pub const ALL: [BlockKind; 14] = [
        BlockKind::Superblock,
        BlockKind::JournalSuperblock,
        BlockKind::JournalDescriptor,
        BlockKind::JournalCommit,
        BlockKind::BlockBitmap,
        BlockKind::InodeBitmap,
        BlockKind::InodeTable,
        BlockKind::TagTable,
        BlockKind::ExtentNode,
        BlockKind::DirLeaf,
        BlockKind::DirNode,
        BlockKind::Xattr,
        BlockKind::Overflow,
        BlockKind::JournalRevoke,
    ];

    /// The on-disk number.
    pub fn to_u16(self) -> u16 {
        self as u16
    }

    /// The kind with on-disk number `value`.
    pub fn from_u16(value: u16) -> Result<BlockKind, FormatError> {
        BlockKind::ALL
            .iter()
            .copied()
            .find(|k| k.to_u16() == value)
            .ok_or_else(|| {
                FormatError::invalid(
                    Structure::Header,
                    "kind",
                    Problem::UnknownValue {
                        value: value.into(),
                    },
                )
            })
    }
}

/// The kind recorded in a whole block's header.
pub fn block_kind(block: &[u8]) -> Result<BlockKind, FormatError> {
    let r = Reader::new(block, Structure::Header);
    r.require(META_HEADER_LEN)?;
    BlockKind::from_u16(r.u16(HEADER_KIND_OFFSET)?)
}

/// Records `kind` in a whole block's header.
pub fn set_block_kind(block: &mut [u8], kind: BlockKind) -> Result<(), FormatError> {
    let mut w = Writer::new(block, Structure::Header);
    w.require(META_HEADER_LEN)?;
    w.u16(HEADER_KIND_OFFSET, kind.to_u16())
}

/// The generation recorded in a whole block's header.
pub fn block_generation(block: &[u8]) -> Result<u64, FormatError> {
    let r = Reader::new(block, Structure::Header);
    r.require(META_HEADER_LEN)?;
    r.u64(HEADER_GENERATION_OFFSET)
}

/// Records `generation` in a whole block's header.
pub fn set_block_generation(block: &mut [u8], generation: u64) -> Result<(), FormatError> {
    let mut w = Writer::new(block, Structure::Header);
    w.require(META_HEADER_LEN)?;
    w.u64(HEADER_GENERATION_OFFSET, generation)
}

/// The payload of a whole block (everything after the header).
pub fn payload(block: &[u8]) -> Result<&[u8], FormatError> {
    Reader::new(block, Structure::Header).require(META_HEADER_LEN)?;
    Ok(&block[META_HEADER_LEN..])
}

/// The payload of a whole block, writable.
pub fn payload_mut(block: &mut [u8]) -> Result<&mut [u8], FormatError> {
    Writer::new(block, Structure::Header).require(META_HEADER_LEN)?;
    Ok(&mut block[META_HEADER_LEN..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_the_numbers_of_section_2() {
        let numbers: Vec<u16> = BlockKind::ALL.iter().map(|k| k.to_u16()).collect();
        assert_eq!(numbers, (1..=14).collect::<Vec<u16>>());
        assert_eq!(BlockKind::Superblock.to_u16(), 1);
        assert_eq!(BlockKind::DirLeaf.to_u16(), 10);
        assert_eq!(BlockKind::JournalRevoke.to_u16(), 14);
        for k in BlockKind::ALL {
            assert_eq!(BlockKind::from_u16(k.to_u16()), Ok(k));
        }
        assert!(BlockKind::from_u16(0).is_err());
        assert!(BlockKind::from_u16(15).is_err());
    }

    #[test]
    fn kind_and_generation_sit_at_offsets_40_and_16() {
        let mut block = vec![0u8; 1024];
        set_block_kind(&mut block, BlockKind::InodeTable).unwrap();
        set_block_generation(&mut block, 0x0102_0304_0506_0708).unwrap();
        assert_eq!(&block[40..42], &[7, 0]);
        assert_eq!(&block[16..24], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(block_kind(&block), Ok(BlockKind::InodeTable));
        assert_eq!(block_generation(&block), Ok(0x0102_0304_0506_0708));
        assert_eq!(payload(&block).unwrap().len(), 1024 - 48);
        assert!(block_kind(&block[..47]).is_err());
        assert!(set_block_generation(&mut block[..20], 1).is_err());
        assert!(payload(&block[..10]).is_err());
    }
}
