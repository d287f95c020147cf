//! Inodes (§5): 256-byte slots in the inode table.
//!
//! A slot is either free ([`InodeSlot::Free`]: mode 0, every byte zero but
//! the generation, which survives so file handles of a reused slot go stale)
//! or holds an [`Inode`]. Whether a slot is *allocated* is the inode
//! bitmap's business: a used slot with link count 0 is an open-but-unlinked
//! file on the orphan list. The 128-byte data area takes one of the forms of
//! [`DataArea`], chosen by the flags.

use super::dir::DirRoot;
use super::extent::ExtentNode;
use super::layout::INODE_SIZE;
use super::le::{Reader, Writer};
use super::{check_range, check_zero, BlockRef, FormatError, Problem, Structure};

/// Bytes of the data area.
pub const DATA_AREA_LEN: usize = 128;
/// Most bytes of inline data.
pub const INLINE_MAX: usize = DATA_AREA_LEN;
/// Longest symlink target (PATH_MAX − 1).
pub const SYMLINK_MAX: usize = 4095;

/// Data-area form: inline bytes.
pub const FLAG_INLINE: u32 = 0x1;
/// Data-area form: extent root.
pub const FLAG_EXTENTS: u32 = 0x2;
/// Data-area form: directory root.
pub const FLAG_DIR_INDEX: u32 = 0x4;
/// Data-area form: one symlink overflow block (kind 13).
pub const FLAG_OVERFLOW: u32 = 0x8;
const FORM_FLAGS: u32 = FLAG_INLINE | FLAG_EXTENTS | FLAG_DIR_INDEX | FLAG_OVERFLOW;

const MODE: usize = 0;
const UID: usize = 4;
const GID: usize = 8;
const LINKS: usize = 12;
const SIZE: usize = 16;
const BLOCKS: usize = 24;
const ATIME: usize = 32;
const MTIME: usize = 40;
const CTIME: usize = 48;
const BTIME: usize = 56;
const ATIME_NS: usize = 64;
const MTIME_NS: usize = 68;
const CTIME_NS: usize = 72;
const BTIME_NS: usize = 76;
const FLAGS: usize = 80;
const GENERATION: usize = 84;
const RDEV: usize = 88;
const XATTR_BLOCK: usize = 96;
const XATTR_GENERATION: usize = 104;
const PARENT: usize = 112;
const NEXT_ORPHAN: usize = 120;
const DATA_AREA: usize = 128;

const S: Structure = Structure::Inode;
const S_IFMT: u32 = 0o170_000;
const PERMISSION_BITS: u16 = 0o7777;

/// A file type: the `S_IFMT` bits of a mode, and the `d_type` directories
/// store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    Fifo,
    CharDevice,
    Directory,
    BlockDevice,
    Regular,
    Symlink,
    Socket,
}

impl FileType {
    /// Every type.
    pub const ALL: [FileType; 7] = [
        FileType::Fifo,
        FileType::CharDevice,
        FileType::Directory,
        FileType::BlockDevice,
        FileType::Regular,
        FileType::Symlink,
        FileType::Socket,
    ];

    /// The `S_IFMT` bits.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Fifo => 0o010_000,
            FileType::CharDevice => 0o020_000,
            FileType::Directory => 0o040_000,
            FileType::BlockDevice => 0o060_000,
            FileType::Regular => 0o100_000,
            FileType::Symlink => 0o120_000,
            FileType::Socket => 0o140_000,
        }
    }

    /// The type of a mode; `None` for type bits that name no type.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        FileType::ALL
            .into_iter()
            .find(|t| t.mode_bits() == mode & S_IFMT)
    }

    /// The `d_type` value (`DT_FIFO` 1 … `DT_SOCK` 12).
    pub fn dtype(self) -> u8 {
        (self.mode_bits() >> 12) as u8
    }

    /// The type of a `d_type` value; `None` for `DT_UNKNOWN` and others.
    pub fn from_dtype(dtype: u8) -> Option<FileType> {
        FileType::ALL.into_iter().find(|t| t.dtype() == dtype)
    }
}

/// chattr flags kept in the inode flags word (the data-area form bits are
/// derived from [`DataArea`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttrFlags(u32);

impl AttrFlags {
    pub const IMMUTABLE: AttrFlags = AttrFlags(0x10);
    pub const APPEND: AttrFlags = AttrFlags(0x20);
    pub const NODUMP: AttrFlags = AttrFlags(0x40);
    pub const NOATIME: AttrFlags = AttrFlags(0x80);
    pub const SYNC: AttrFlags = AttrFlags(0x100);
    /// Every defined chattr bit.
    pub const ALL: AttrFlags = AttrFlags(0x1f0);

    /// No flag.
    pub fn empty() -> AttrFlags {
        AttrFlags(0)
    }

    /// The flags of `bits`; unknown bits are refused.
    pub fn from_bits(bits: u32) -> Result<AttrFlags, FormatError> {
        let unknown = bits & !AttrFlags::ALL.0;
        if unknown != 0 {
            return Err(FormatError::invalid(
                S,
                "flags",
                Problem::UnknownBits {
                    bits: unknown.into(),
                },
            ));
        }
        Ok(AttrFlags(bits))
    }

    /// The on-disk bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: AttrFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for AttrFlags {
    type Output = AttrFlags;
    fn bitor(self, rhs: AttrFlags) -> AttrFlags {
        AttrFlags(self.0 | rhs.0)
    }
}

/// Seconds (signed) and nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Timestamp {
    pub secs: i64,
    /// 0..1_000_000_000.
    pub nanos: u32,
}

/// What the 128-byte data area holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataArea {
    /// Nothing (devices, fifos, sockets): all zero, no form flag.
    None,
    /// Flag 0x1: the whole content (size ≤ 128 bytes) of a small regular
    /// file or a symlink target.
    Inline(Vec<u8>),
    /// Flag 0x2: the root of the file's extent tree (§6).
    Extents(ExtentNode),
    /// Flag 0x4: the root of the directory's B+tree (§8).
    Directory(DirRoot),
    /// Flag 0x8: a symlink target too long to be inline: the first `size`
    /// bytes of the payload of one kind-13 block (block 8, generation 8).
    Overflow(BlockRef),
}

impl DataArea {
    /// The form flag this data area sets.
    pub fn form_flag(&self) -> u32 {
        match self {
            DataArea::None => 0,
            DataArea::Inline(_) => FLAG_INLINE,
            DataArea::Extents(_) => FLAG_EXTENTS,
            DataArea::Directory(_) => FLAG_DIR_INDEX,
            DataArea::Overflow(_) => FLAG_OVERFLOW,
        }
    }
}

/// A used inode slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub file_type: FileType,
    /// Permission bits of the mode (≤ 0o7777).
    pub permissions: u16,
    pub uid: u32,
    pub gid: u32,
    /// Link count; 0 = unlinked but still open (on the orphan list).
    pub links: u32,
    /// Size in bytes.
    pub size: u64,
    /// Blocks held (data, extent, xattr and directory blocks), in B-byte
    /// blocks.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub btime: Timestamp,
    pub attr_flags: AttrFlags,
    /// Bumped on every reuse of the slot.
    pub generation: u32,
    /// Character and block devices only; 0 otherwise.
    pub rdev: u64,
    /// First block of the xattr chain and its expected generation.
    pub xattr: Option<BlockRef>,
    /// Directories: the parent (the root's parent is itself); 0 otherwise.
    pub parent: u64,
    /// Next inode on the orphan list, 0 = end.
    pub next_orphan: u64,
    pub data: DataArea,
}

/// One 256-byte slot of the inode table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InodeSlot {
    /// Not in use; only the generation is kept.
    Free {
        generation: u32,
    },
    Used(Inode),
}

impl InodeSlot {
    /// Writes the slot into the first 256 bytes of `slot`.
    pub fn encode(&self, slot: &mut [u8]) -> Result<(), FormatError> {
        match self {
            InodeSlot::Used(inode) => inode.encode(slot),
            InodeSlot::Free { generation } => {
                let mut w = Writer::new(slot, S);
                w.require(INODE_SIZE)?;
                w.bytes(0, &[0u8; INODE_SIZE])?;
                w.u32(GENERATION, *generation)
            }
        }
    }

    /// Reads the slot from the first 256 bytes of `slot`.
    pub fn decode(slot: &[u8]) -> Result<InodeSlot, FormatError> {
        let r = Reader::new(slot, S);
        r.require(INODE_SIZE)?;
        if r.u32(MODE)? == 0 {
            check_zero(S, "free_slot", r.bytes(0, GENERATION)?)?;
            check_zero(S, "free_slot", r.bytes(RDEV, INODE_SIZE - RDEV)?)?;
            return Ok(InodeSlot::Free {
                generation: r.u32(GENERATION)?,
            });
        }
        Inode::decode_used(&r).map(InodeSlot::Used)
    }
}

fn nanos(r: &Reader<'_>, offset: usize, field: &'static str) -> Result<u32, FormatError> {
    let nanos = r.u32(offset)?;
    check_range(S, field, nanos.into(), 0, 999_999_999)?;
    Ok(nanos)
}

impl Inode {
    /// A new inode of `file_type` with an empty data area of the usual form
    /// (regular: empty extent root; directory: empty root; symlink: empty
    /// inline, to be filled with the target; others: none). Everything
    /// else is zero.
    pub fn new(file_type: FileType, permissions: u16) -> Inode {
        let data = match file_type {
            FileType::Regular => DataArea::Extents(ExtentNode::empty()),
            FileType::Directory => DataArea::Directory(DirRoot::empty()),
            FileType::Symlink => DataArea::Inline(Vec::new()),
            _ => DataArea::None,
        };
        Inode {
            file_type,
            permissions,
            uid: 0,
            gid: 0,
            links: 0,
            size: 0,
            blocks: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            btime: Timestamp::default(),
            attr_flags: AttrFlags::empty(),
            generation: 0,
            rdev: 0,
            xattr: None,
            parent: 0,
            next_orphan: 0,
            data,
        }
    }

    /// The full mode (type bits | permissions), as in `stat`.
    pub fn mode(&self) -> u32 {
        self.file_type.mode_bits() | u32::from(self.permissions)
    }

    /// The flags word: form flag | chattr flags.
    pub fn flags(&self) -> u32 {
        self.data.form_flag() | self.attr_flags.bits()
    }

    /// Checks everything a decoder would, on the value.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.permissions & !PERMISSION_BITS != 0 {
            return Err(FormatError::invalid(
                S,
                "mode",
                Problem::UnknownBits {
                    bits: (self.permissions & !PERMISSION_BITS).into(),
                },
            ));
        }
        for (field, t) in [
            ("atime_nanos", self.atime),
            ("mtime_nanos", self.mtime),
            ("ctime_nanos", self.ctime),
            ("btime_nanos", self.btime),
        ] {
            check_range(S, field, t.nanos.into(), 0, 999_999_999)?;
        }
        AttrFlags::from_bits(self.attr_flags.bits())?;
        let wrong_form = || {
            FormatError::invalid(
                S,
                "flags",
                Problem::Inconsistent("data-area form not allowed for this file type"),
            )
        };
        match (&self.data, self.file_type) {
            (DataArea::Inline(bytes), FileType::Regular | FileType::Symlink) => {
                if bytes.len() > INLINE_MAX {
                    return Err(FormatError::invalid(
                        S,
                        "size",
                        Problem::TooLong {
                            len: bytes.len() as u64,
                            max: INLINE_MAX as u64,
                        },
                    ));
                }
                if self.size != bytes.len() as u64 {
                    return Err(FormatError::invalid(
                        S,
                        "size",
                        Problem::Mismatch {
                            expected: bytes.len() as u64,
                            found: self.size,
                        },
                    ));
                }
            }
            (DataArea::Extents(root), FileType::Regular) => root.validate_root()?,
            (DataArea::Directory(root), FileType::Directory) => root.validate()?,
            (DataArea::Overflow(_), FileType::Symlink) => {}
            (
                DataArea::None,
                FileType::Fifo | FileType::Socket | FileType::CharDevice | FileType::BlockDevice,
            ) => {}
            _ => return Err(wrong_form()),
        }
        if self.file_type == FileType::Symlink {
            check_range(S, "size", self.size, 1, SYMLINK_MAX as u64)?;
        }
        let is_device = matches!(self.file_type, FileType::CharDevice | FileType::BlockDevice);
        if !is_device && self.rdev != 0 {
            return Err(FormatError::invalid(S, "rdev", Problem::NotZero));
        }
        if self.file_type == FileType::Directory {
            if self.parent == 0 {
                return Err(FormatError::invalid(
                    S,
                    "parent",
                    Problem::Inconsistent("a directory must name its parent"),
                ));
            }
        } else if self.parent != 0 {
            return Err(FormatError::invalid(S, "parent", Problem::NotZero));
        }
        Ok(())
    }

    /// Writes the inode into the first 256 bytes of `slot`. Refuses a value
    /// [`Inode::decode`] would refuse.
    pub fn encode(&self, slot: &mut [u8]) -> Result<(), FormatError> {
        self.validate()?;
        let mut w = Writer::new(slot, S);
        w.require(INODE_SIZE)?;
        let (xattr_block, xattr_generation) = BlockRef::to_pair(self.xattr);
        w.u32(MODE, self.mode())?;
        w.u32(UID, self.uid)?;
        w.u32(GID, self.gid)?;
        w.u32(LINKS, self.links)?;
        w.u64(SIZE, self.size)?;
        w.u64(BLOCKS, self.blocks)?;
        w.i64(ATIME, self.atime.secs)?;
        w.i64(MTIME, self.mtime.secs)?;
        w.i64(CTIME, self.ctime.secs)?;
        w.i64(BTIME, self.btime.secs)?;
        w.u32(ATIME_NS, self.atime.nanos)?;
        w.u32(MTIME_NS, self.mtime.nanos)?;
        w.u32(CTIME_NS, self.ctime.nanos)?;
        w.u32(BTIME_NS, self.btime.nanos)?;
        w.u32(FLAGS, self.flags())?;
        w.u32(GENERATION, self.generation)?;
        w.u64(RDEV, self.rdev)?;
        w.u64(XATTR_BLOCK, xattr_block)?;
        w.u64(XATTR_GENERATION, xattr_generation)?;
        w.u64(PARENT, self.parent)?;
        w.u64(NEXT_ORPHAN, self.next_orphan)?;
        let mut area = [0u8; DATA_AREA_LEN];
        match &self.data {
            DataArea::None => {}
            DataArea::Inline(bytes) => area[..bytes.len()].copy_from_slice(bytes),
            DataArea::Extents(root) => root.encode_root(&mut area)?,
            DataArea::Directory(root) => root.encode(&mut area)?,
            DataArea::Overflow(r) => {
                area[..8].copy_from_slice(&r.block.to_le_bytes());
                area[8..16].copy_from_slice(&r.generation.to_le_bytes());
            }
        }
        w.bytes(DATA_AREA, &area)
    }

    /// Reads a used inode from the first 256 bytes of `slot`; a free slot is
    /// an error (use [`InodeSlot::decode`] to accept both).
    pub fn decode(slot: &[u8]) -> Result<Inode, FormatError> {
        match InodeSlot::decode(slot)? {
            InodeSlot::Used(inode) => Ok(inode),
            InodeSlot::Free { .. } => Err(FormatError::invalid(
                S,
                "mode",
                Problem::Inconsistent("free slot"),
            )),
        }
    }

    fn decode_used(r: &Reader<'_>) -> Result<Inode, FormatError> {
        let mode = r.u32(MODE)?;
        if mode & !0xffff != 0 {
            return Err(FormatError::invalid(
                S,
                "mode",
                Problem::UnknownBits {
                    bits: (mode & !0xffff).into(),
                },
            ));
        }
        let file_type = FileType::from_mode(mode).ok_or_else(|| {
            FormatError::invalid(
                S,
                "mode",
                Problem::UnknownValue {
                    value: (mode & S_IFMT).into(),
                },
            )
        })?;
        let flags = r.u32(FLAGS)?;
        let form = flags & FORM_FLAGS;
        let attr_flags = AttrFlags::from_bits(flags & !FORM_FLAGS)?;
        let size = r.u64(SIZE)?;
        let area = r.bytes(DATA_AREA, DATA_AREA_LEN)?;
        let area_reader = Reader::new(area, S);
        let data = match form {
            0 => {
                check_zero(S, "data_area", area)?;
                DataArea::None
            }
            FLAG_INLINE => {
                check_range(S, "size", size, 0, INLINE_MAX as u64)?;
                let (content, rest) = area.split_at(size as usize);
                check_zero(S, "data_area", rest)?;
                DataArea::Inline(content.to_vec())
            }
            FLAG_EXTENTS => DataArea::Extents(ExtentNode::decode_root(area)?),
            FLAG_DIR_INDEX => DataArea::Directory(DirRoot::decode(area)?),
            FLAG_OVERFLOW => {
                check_zero(S, "data_area", &area[16..])?;
                let block = area_reader.u64(0)?;
                if block == 0 {
                    return Err(FormatError::invalid(
                        S,
                        "data_area",
                        Problem::Inconsistent("overflow block 0"),
                    ));
                }
                DataArea::Overflow(BlockRef {
                    block,
                    generation: area_reader.u64(8)?,
                })
            }
            _ => {
                return Err(FormatError::invalid(
                    S,
                    "flags",
                    Problem::Inconsistent("more than one data-area form"),
                ))
            }
        };
        let inode = Inode {
            file_type,
            permissions: (mode & u32::from(PERMISSION_BITS)) as u16,
            uid: r.u32(UID)?,
            gid: r.u32(GID)?,
            links: r.u32(LINKS)?,
            size,
            blocks: r.u64(BLOCKS)?,
            atime: Timestamp {
                secs: r.i64(ATIME)?,
                nanos: nanos(r, ATIME_NS, "atime_nanos")?,
            },
            mtime: Timestamp {
                secs: r.i64(MTIME)?,
                nanos: nanos(r, MTIME_NS, "mtime_nanos")?,
            },
            ctime: Timestamp {
                secs: r.i64(CTIME)?,
                nanos: nanos(r, CTIME_NS, "ctime_nanos")?,
            },
            btime: Timestamp {
                secs: r.i64(BTIME)?,
                nanos: nanos(r, BTIME_NS, "btime_nanos")?,
            },
            attr_flags,
            generation: r.u32(GENERATION)?,
            rdev: r.u64(RDEV)?,
            xattr: BlockRef::from_optional(
                r.u64(XATTR_BLOCK)?,
                r.u64(XATTR_GENERATION)?,
                S,
                "xattr_generation",
            )?,
            parent: r.u64(PARENT)?,
            next_orphan: r.u64(NEXT_ORPHAN)?,
            data,
        };
        inode.validate()?;
        Ok(inode)
    }
}

/// Writes a symlink target into the payload of its kind-13 overflow block
/// (the rest zero).
pub fn encode_overflow(target: &[u8], payload: &mut [u8]) -> Result<(), FormatError> {
    check_range(
        Structure::OverflowBlock,
        "size",
        target.len() as u64,
        1,
        SYMLINK_MAX.min(payload.len()) as u64,
    )?;
    payload.fill(0);
    payload[..target.len()].copy_from_slice(target);
    Ok(())
}

/// The symlink target of `size` bytes held by an overflow block's payload.
pub fn decode_overflow(payload: &[u8], size: u64) -> Result<&[u8], FormatError> {
    check_range(
        Structure::OverflowBlock,
        "size",
        size,
        1,
        SYMLINK_MAX.min(payload.len()) as u64,
    )?;
    let (target, rest) = payload.split_at(size as usize);
    check_zero(Structure::OverflowBlock, "padding", rest)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::extent::ExtentLeaf;
    use proptest::prelude::*;

    #[test]
    fn file_types_match_stat_and_dirent() {
        assert_eq!(FileType::from_mode(0o100_644), Some(FileType::Regular));
        assert_eq!(FileType::from_mode(0o040_755), Some(FileType::Directory));
        assert_eq!(FileType::from_mode(0o120_777), Some(FileType::Symlink));
        assert_eq!(FileType::from_mode(0o070_000), None);
        let dtypes: Vec<u8> = FileType::ALL.iter().map(|t| t.dtype()).collect();
        assert_eq!(dtypes, [1, 2, 4, 6, 8, 10, 12]);
        assert_eq!(FileType::from_dtype(0), None);
        assert_eq!(FileType::from_dtype(10), Some(FileType::Symlink));
    }

    fn golden_inode() -> Inode {
        let mut inode = Inode::new(FileType::Regular, 0o644);
        inode.uid = 1000;
        inode.gid = 100;
        inode.links = 1;
        inode.size = 5000;
        inode.blocks = 2;
        inode.atime = Timestamp { secs: -1, nanos: 1 };
        inode.mtime = Timestamp {
            secs: 0x6000_0000,
            nanos: 999_999_999,
        };
        inode.ctime = Timestamp { secs: 2, nanos: 3 };
        inode.btime = Timestamp { secs: 4, nanos: 5 };
        inode.attr_flags = AttrFlags::NOATIME | AttrFlags::APPEND;
        inode.generation = 0xabcd;
        inode.xattr = Some(BlockRef {
            block: 0x1234,
            generation: 9,
        });
        inode.next_orphan = 77;
        inode.data = DataArea::Extents(ExtentNode::Leaf(vec![ExtentLeaf {
            logical: 0,
            length: 2,
            unwritten: false,
            physical: 0x5000,
        }]));
        inode
    }

    #[test]
    fn golden_bytes() {
        let mut want = [0u8; 256];
        let mut put =
            |offset: usize, bytes: &[u8]| want[offset..offset + bytes.len()].copy_from_slice(bytes);
        put(0, &[0xa4, 0x81, 0, 0]); // 0o100644
        put(4, &[0xe8, 0x03, 0, 0]);
        put(8, &[100, 0, 0, 0]);
        put(12, &[1, 0, 0, 0]);
        put(16, &[0x88, 0x13, 0, 0, 0, 0, 0, 0]);
        put(24, &[2, 0, 0, 0, 0, 0, 0, 0]);
        put(32, &[0xff; 8]);
        put(40, &[0, 0, 0, 0x60, 0, 0, 0, 0]);
        put(48, &[2, 0, 0, 0, 0, 0, 0, 0]);
        put(56, &[4, 0, 0, 0, 0, 0, 0, 0]);
        put(64, &[1, 0, 0, 0]);
        put(68, &[0xff, 0xc9, 0x9a, 0x3b]);
        put(72, &[3, 0, 0, 0]);
        put(76, &[5, 0, 0, 0]);
        put(80, &[0xa2, 0, 0, 0]); // extents | append | noatime
        put(84, &[0xcd, 0xab, 0, 0]);
        put(96, &[0x34, 0x12, 0, 0, 0, 0, 0, 0]);
        put(104, &[9, 0, 0, 0, 0, 0, 0, 0]);
        put(120, &[77, 0, 0, 0, 0, 0, 0, 0]);
        put(128, &[0xe5, 0xe5, 1, 0, 5, 0, 0, 0]); // extent root header
        put(136, &[0; 8]); // logical 0
        put(144, &[2, 0, 0, 0, 0, 0, 0, 0]); // length 2, zero
        put(152, &[0, 0x50, 0, 0, 0, 0, 0, 0]); // physical 0x5000
        let mut got = [0x5au8; 256];
        golden_inode().encode(&mut got).unwrap();
        assert_eq!(got, want);
        assert_eq!(Inode::decode(&want).unwrap(), golden_inode());
    }

    #[test]
    fn free_slot_keeps_only_the_generation() {
        let mut slot = [0xffu8; 256];
        InodeSlot::Free { generation: 7 }.encode(&mut slot).unwrap();
        assert_eq!(&slot[84..88], &[7, 0, 0, 0]);
        assert_eq!(slot.iter().filter(|&&b| b != 0).count(), 1);
        assert_eq!(
            InodeSlot::decode(&slot),
            Ok(InodeSlot::Free { generation: 7 })
        );
        assert!(Inode::decode(&slot).is_err());
        slot[200] = 1;
        assert!(InodeSlot::decode(&slot).is_err());
    }

    #[test]
    fn every_form_round_trips() {
        let mut link = Inode::new(FileType::Symlink, 0o777);
        link.data = DataArea::Inline(b"target".to_vec());
        link.size = 6;
        let mut long_link = Inode::new(FileType::Symlink, 0o777);
        long_link.data = DataArea::Overflow(BlockRef {
            block: 99,
            generation: 3,
        });
        long_link.size = 3000;
        let mut dir = Inode::new(FileType::Directory, 0o755);
        dir.parent = 1;
        let mut dev = Inode::new(FileType::BlockDevice, 0o600);
        dev.rdev = 0x0803;
        let mut small = Inode::new(FileType::Regular, 0o600);
        small.data = DataArea::Inline(vec![7; 128]);
        small.size = 128;
        for inode in [
            link,
            long_link,
            dir,
            dev,
            small,
            Inode::new(FileType::Fifo, 0),
        ] {
            let mut slot = [0u8; 256];
            inode.encode(&mut slot).unwrap();
            assert_eq!(Inode::decode(&slot).unwrap(), inode);
        }
    }

    fn field_of_decode(slot: &[u8]) -> Option<&'static str> {
        Inode::decode(slot).unwrap_err().field()
    }

    #[test]
    fn bad_inodes_are_refused() {
        let mut good = [0u8; 256];
        golden_inode().encode(&mut good).unwrap();
        let with = |offset: usize, bytes: &[u8]| {
            let mut slot = good;
            slot[offset..offset + bytes.len()].copy_from_slice(bytes);
            slot
        };
        assert_eq!(field_of_decode(&with(1, &[0xf1])), Some("mode")); // type 0o170000
        assert_eq!(field_of_decode(&with(2, &[1])), Some("mode"));
        assert_eq!(field_of_decode(&with(68, &[0, 0xca])), Some("mtime_nanos"));
        assert_eq!(field_of_decode(&with(80, &[0x03])), Some("flags")); // two forms
        assert_eq!(field_of_decode(&with(81, &[0x02])), Some("flags")); // unknown bit
        assert_eq!(field_of_decode(&with(80, &[0x04])), Some("flags")); // dir root in a file
        assert_eq!(field_of_decode(&with(88, &[1])), Some("rdev"));
        assert_eq!(
            field_of_decode(&with(96, &[0; 8])),
            Some("xattr_generation")
        );
        assert_eq!(field_of_decode(&with(112, &[1])), Some("parent"));
        // Inline larger than 128 bytes.
        let inline = with(80, &[0x01]);
        assert_eq!(field_of_decode(&inline), Some("size"));
        assert!(Inode::decode(&good[..255]).is_err());
        // Encode refuses the same things.
        let mut inode = golden_inode();
        inode.data = DataArea::Inline(vec![1; 129]);
        inode.size = 129;
        assert!(inode.encode(&mut [0u8; 256]).is_err());
        let mut inode = golden_inode();
        inode.permissions = 0o10000;
        assert!(inode.encode(&mut [0u8; 256]).is_err());
        let mut link = Inode::new(FileType::Symlink, 0o777);
        link.data = DataArea::Inline(Vec::new());
        assert!(link.encode(&mut [0u8; 256]).is_err());
    }

    #[test]
    fn overflow_blocks() {
        let mut payload = [0xffu8; 976];
        encode_overflow(b"/a/long/target", &mut payload).unwrap();
        assert_eq!(decode_overflow(&payload, 14).unwrap(), b"/a/long/target");
        assert!(decode_overflow(&payload, 13).is_err());
        assert!(decode_overflow(&payload, 977).is_err());
        assert!(encode_overflow(&[b'x'; 977], &mut payload).is_err());
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (any::<i64>(), 0u32..1_000_000_000).prop_map(|(secs, nanos)| Timestamp { secs, nanos })
    }

    pub(crate) fn inode_strategy() -> impl Strategy<Value = Inode> {
        let data = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..=128)
                .prop_map(|v| (FileType::Regular, DataArea::Inline(v))),
            prop::collection::vec(any::<u8>(), 1..=128)
                .prop_map(|v| (FileType::Symlink, DataArea::Inline(v))),
            crate::format::extent::tests::root_strategy()
                .prop_map(|n| (FileType::Regular, DataArea::Extents(n))),
            crate::format::dir::tests::dir_root_strategy()
                .prop_map(|d| (FileType::Directory, DataArea::Directory(d))),
            (1u64.., any::<u64>()).prop_map(|(block, generation)| (
                FileType::Symlink,
                DataArea::Overflow(BlockRef { block, generation })
            )),
            prop::sample::select(vec![
                FileType::Fifo,
                FileType::Socket,
                FileType::CharDevice,
                FileType::BlockDevice
            ])
            .prop_map(|t| (t, DataArea::None)),
        ];
        (
            data,
            (0u16..=0o7777, any::<u32>(), any::<u32>(), any::<u32>()),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                any::<u64>(),
                any::<u64>(),
            ),
            [timestamp(), timestamp(), timestamp(), timestamp()],
            (0u32..0x20, any::<Option<(u64, u64)>>(), 1u64..1000),
        )
            .prop_map(|((file_type, data), ids, misc, times, more)| {
                let (permissions, uid, gid, links) = ids;
                let (size, blocks, generation, rdev, next_orphan) = misc;
                let (attr, xattr, parent) = more;
                let size = match (&data, file_type) {
                    (DataArea::Inline(v), _) => v.len() as u64,
                    (_, FileType::Symlink) => 1 + size % SYMLINK_MAX as u64,
                    _ => size,
                };
                let is_device = matches!(file_type, FileType::CharDevice | FileType::BlockDevice);
                Inode {
                    file_type,
                    permissions,
                    uid,
                    gid,
                    links,
                    size,
                    blocks,
                    atime: times[0],
                    mtime: times[1],
                    ctime: times[2],
                    btime: times[3],
                    attr_flags: AttrFlags::from_bits(attr << 4).unwrap(),
                    generation,
                    rdev: if is_device { rdev } else { 0 },
                    xattr: xattr.map(|(b, g)| BlockRef {
                        block: b.max(1),
                        generation: g,
                    }),
                    parent: if file_type == FileType::Directory {
                        parent
                    } else {
                        0
                    },
                    next_orphan,
                    data,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn round_trip(inode in inode_strategy()) {
            let mut slot = [0u8; 256];
            inode.encode(&mut slot).unwrap();
            prop_assert_eq!(Inode::decode(&slot).unwrap(), inode);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = InodeSlot::decode(&bytes);
        }

        #[test]
        fn decoded_garbage_re_encodes_identically(bytes in prop::collection::vec(any::<u8>(), 256)) {
            if let Ok(slot) = InodeSlot::decode(&bytes) {
                let mut again = [0u8; 256];
                slot.encode(&mut again).unwrap();
                prop_assert_eq!(&again[..], &bytes[..]);
            }
        }
    }
}
