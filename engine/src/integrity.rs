//! Integrity tags after bio-integrity (placeholder: built in the mirror work).
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

pub const META_MAGIC: u32 = 0x3142_4d4b; // "KMB1" little-endian
pub const META_HEADER_LEN: usize = 48;

/// The tag of one data block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tag {
    pub crc: u32,
    pub gen: u32,
}

impl Tag {
    pub const ENCODED_LEN: usize = 8;
}
