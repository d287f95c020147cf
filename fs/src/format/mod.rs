//! The keelfs on-disk format, version 1: the one implementation of
//! `docs/format.md`.
//!
//! What this module promises:
//!
//! * every structure of `docs/format.md` §3–§10 has exactly one codec here,
//!   one file per structure: [`layout`] (§3), [`superblock`] (§4), [`inode`]
//!   (§5), [`extent`] (§6), [`tag_table`] (§7), [`dir`] (§8), [`xattr`] (§9),
//!   [`journal`] (§10), plus [`bitmap`] (the §3 bitmaps) and [`header`] (the
//!   kind and generation fields of the §2 block header);
//! * decoders never panic, whatever the bytes: a short, truncated or
//!   malformed payload gives a [`FormatError`] naming the structure, the field
//!   and what is wrong; sizes read from disk go through checked arithmetic;
//! * encoders refuse values the format cannot represent (they return an
//!   error rather than write something a decoder would reject), and write
//!   every reserved byte as zero, so an encoded block is a function of the
//!   value alone.
//!
//! What it relies on: the engine (`keelfs_engine::integrity`) owns the
//! 48-byte metadata header (magic, crc, address, uuid) and seals and checks
//! it. Codecs here work on the *payload* of a metadata block
//! (`&block[META_HEADER_LEN..]`, P = B − 48 bytes); only [`header`] touches
//! the header, and only its kind (offset 40) and generation (offset 16),
//! which the filesystem sets before the engine seals the block.

pub mod bitmap;
pub mod dir;
pub mod extent;
pub mod header;
pub mod inode;
pub mod journal;
pub mod layout;
pub mod le;
pub mod superblock;
pub mod tag_table;
pub mod xattr;

use std::fmt;

pub use dir::{DirEntry, DirLeaf, DirNode, DirNodeEntry, DirRoot};
pub use extent::{ExtentIndex, ExtentLeaf, ExtentNode};
pub use header::BlockKind;
pub use inode::{AttrFlags, DataArea, FileType, Inode, InodeSlot, Timestamp};
pub use journal::{Commit, Descriptor, DescriptorEntry, JournalSuperblock};
pub use keelfs_engine::integrity::{Tag, META_HEADER_LEN};
pub use layout::{Geometry, InodeSpec, Layout, Region};
pub use superblock::{Member, MemberCounters, MemberState, Superblock, SuperblockState};
pub use xattr::{Xattr, XattrNamespace};

/// The on-disk format version this module reads and writes.
pub const FORMAT_VERSION: u32 = 1;

// Every offset in docs/format.md assumes the engine's 48-byte header.
const _: () = assert!(META_HEADER_LEN == 48);

/// A pointer to a metadata block together with the generation its header
/// must carry (§2: a leg whose copy has an older generation lost a write).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Block address.
    pub block: u64,
    /// Expected header generation of that block.
    pub generation: u64,
}

impl BlockRef {
    /// Decodes an on-disk (block, generation) pair where block 0 means "none";
    /// a zero block must come with a zero generation.
    pub(crate) fn from_optional(
        block: u64,
        generation: u64,
        structure: Structure,
        field: &'static str,
    ) -> Result<Option<BlockRef>, FormatError> {
        match (block, generation) {
            (0, 0) => Ok(None),
            (0, _) => Err(FormatError::invalid(structure, field, Problem::NotZero)),
            (block, generation) => Ok(Some(BlockRef { block, generation })),
        }
    }

    /// The on-disk (block, generation) pair of an optional pointer.
    pub(crate) fn to_pair(this: Option<BlockRef>) -> (u64, u64) {
        this.map_or((0, 0), |r| (r.block, r.generation))
    }
}

/// Which on-disk structure a [`FormatError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Structure {
    /// The §2 block header fields this module reads (kind, generation).
    Header,
    /// The §3 layout of a leg.
    Layout,
    /// §4 superblock.
    Superblock,
    /// §5 inode.
    Inode,
    /// §6 extent node (in-inode root or kind-9 block).
    ExtentNode,
    /// §7 tag table block.
    TagTable,
    /// The §3 bitmaps.
    Bitmap,
    /// §5 directory root (inode data area).
    DirRoot,
    /// §8 directory leaf block.
    DirLeaf,
    /// §8 directory node block.
    DirNode,
    /// §8 a name stored in a directory.
    DirName,
    /// §9 the xattr blob.
    XattrBlob,
    /// §9 an xattr chain block.
    XattrBlock,
    /// §9 an xattr name.
    XattrName,
    /// §5 symlink overflow block (kind 13).
    OverflowBlock,
    /// §10 journal superblock.
    JournalSuperblock,
    /// §10 journal descriptor block.
    JournalDescriptor,
    /// §10 journal commit block.
    JournalCommit,
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Structure::Header => "block header",
            Structure::Layout => "layout",
            Structure::Superblock => "superblock",
            Structure::Inode => "inode",
            Structure::ExtentNode => "extent node",
            Structure::TagTable => "tag table",
            Structure::Bitmap => "bitmap",
            Structure::DirRoot => "directory root",
            Structure::DirLeaf => "directory leaf",
            Structure::DirNode => "directory node",
            Structure::DirName => "directory entry name",
            Structure::XattrBlob => "xattr blob",
            Structure::XattrBlock => "xattr block",
            Structure::XattrName => "xattr name",
            Structure::OverflowBlock => "symlink overflow block",
            Structure::JournalSuperblock => "journal superblock",
            Structure::JournalDescriptor => "journal descriptor",
            Structure::JournalCommit => "journal commit",
        };
        f.write_str(name)
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A magic number does not match.
    BadMagic { expected: u64, found: u64 },
    /// A version this code does not implement.
    UnsupportedVersion { found: u64 },
    /// Bits set that this version does not define.
    UnknownBits { bits: u64 },
    /// An enumerated value this version does not define.
    UnknownValue { value: u64 },
    /// A reserved field (or padding) is not zero.
    NotZero,
    /// A value outside its allowed range (inclusive bounds).
    OutOfRange { value: u64, min: u64, max: u64 },
    /// A value that must equal another one does not.
    Mismatch { expected: u64, found: u64 },
    /// A value that must be a power of two is not.
    NotPowerOfTwo { value: u64 },
    /// Entry `index` is not in strictly increasing order.
    Unsorted { index: usize },
    /// Entry `index` overlaps the entry before it.
    Overlap { index: usize },
    /// Entry `index` repeats an earlier one.
    Duplicate { index: usize },
    /// Text that must be UTF-8 is not.
    InvalidUtf8,
    /// A name that is empty, contains a forbidden byte, or is reserved.
    InvalidName,
    /// A length above its maximum.
    TooLong { len: u64, max: u64 },
    /// Something does not fit: `need` units where `have` are available.
    NoRoom { need: u64, have: u64 },
    /// Arithmetic on values from disk overflows.
    Overflow,
    /// A relation between fields does not hold (described).
    Inconsistent(&'static str),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadMagic { expected, found } => {
                write!(f, "bad magic {found:#x}, expected {expected:#x}")
            }
            Problem::UnsupportedVersion { found } => write!(f, "unsupported version {found}"),
            Problem::UnknownBits { bits } => write!(f, "unknown bits {bits:#x}"),
            Problem::UnknownValue { value } => write!(f, "unknown value {value}"),
            Problem::NotZero => f.write_str("reserved, must be zero"),
            Problem::OutOfRange { value, min, max } => {
                write!(f, "{value} is outside {min}..={max}")
            }
            Problem::Mismatch { expected, found } => write!(f, "is {found}, expected {expected}"),
            Problem::NotPowerOfTwo { value } => write!(f, "{value} is not a power of two"),
            Problem::Unsorted { index } => write!(f, "entry {index} is out of order"),
            Problem::Overlap { index } => write!(f, "entry {index} overlaps the one before"),
            Problem::Duplicate { index } => write!(f, "entry {index} is a duplicate"),
            Problem::InvalidUtf8 => f.write_str("not valid UTF-8"),
            Problem::InvalidName => f.write_str("empty, reserved, or contains '/' or NUL"),
            Problem::TooLong { len, max } => write!(f, "length {len} exceeds {max}"),
            Problem::NoRoom { need, have } => write!(f, "needs {need}, only {have} available"),
            Problem::Overflow => f.write_str("arithmetic overflow"),
            Problem::Inconsistent(what) => f.write_str(what),
        }
    }
}

/// Why a structure could not be decoded (or encoded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The buffer is shorter than the structure.
    #[error("{structure}: buffer of {have} bytes is too short, need {need}")]
    Truncated {
        structure: Structure,
        need: usize,
        have: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{structure}: field `{field}`: {problem}")]
    Invalid {
        structure: Structure,
        field: &'static str,
        problem: Problem,
    },
}

impl FormatError {
    /// Shorthand for [`FormatError::Invalid`].
    pub fn invalid(structure: Structure, field: &'static str, problem: Problem) -> FormatError {
        FormatError::Invalid {
            structure,
            field,
            problem,
        }
    }

    /// The structure the error is about.
    pub fn structure(&self) -> Structure {
        match self {
            FormatError::Truncated { structure, .. } | FormatError::Invalid { structure, .. } => {
                *structure
            }
        }
    }

    /// The field the error is about (`None` for a truncated buffer).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            FormatError::Truncated { .. } => None,
            FormatError::Invalid { field, .. } => Some(field),
        }
    }
}

/// Fails with [`Problem::OutOfRange`] unless `min <= value <= max`.
pub(crate) fn check_range(
    structure: Structure,
    field: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), FormatError> {
    if value < min || value > max {
        return Err(FormatError::invalid(
            structure,
            field,
            Problem::OutOfRange { value, min, max },
        ));
    }
    Ok(())
}

/// Fails with [`Problem::NotZero`] unless every byte is zero.
pub(crate) fn check_zero(
    structure: Structure,
    field: &'static str,
    bytes: &[u8],
) -> Result<(), FormatError> {
    if bytes.iter().any(|&b| b != 0) {
        return Err(FormatError::invalid(structure, field, Problem::NotZero));
    }
    Ok(())
}

/// Payload length P of a metadata block of `block_size` bytes (B − 48), or
/// `None` when the block cannot even hold the header.
pub fn payload_len(block_size: u32) -> Option<usize> {
    (block_size as usize).checked_sub(META_HEADER_LEN)
}
