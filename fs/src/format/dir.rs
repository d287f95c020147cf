//! Directories (§8): the name hash and key, leaf blocks (kind 10), node
//! blocks (kind 11), and the directory root kept in the inode (§5).
//!
//! A directory is a B+tree keyed by a 64-bit key derived from the name:
//! `key = base(name) | c`, where `base` is the masked name hash (never below
//! 0x100) and `c` (0–255) tells apart names whose bases collide. The key
//! doubles as the readdir offset (`key + 1` after an entry; 1 is ".", 2 is
//! ".."), so it never has its top bit set and never falls below 0x100.

use super::inode::FileType;
use super::le::{Reader, Writer};
use super::{check_range, check_zero, BlockRef, FormatError, Problem, Structure};

/// Seed of the high 32 bits of the name hash ("keel").
pub const HASH_SEED_HIGH: u32 = 0x6b65_656c;
/// Seed of the low 32 bits of the name hash ("fs01").
pub const HASH_SEED_LOW: u32 = 0x6673_3031;
/// The bits of the hash a key keeps.
pub const KEY_HASH_MASK: u64 = 0x7fff_ffff_ffff_ff00;
/// Smallest key; a masked hash of 0 is replaced by this base.
pub const MIN_KEY: u64 = 0x100;
/// Largest key.
pub const MAX_KEY: u64 = 0x7fff_ffff_ffff_ffff;
/// readdir offset of ".".
pub const DOT_OFFSET: u64 = 1;
/// readdir offset of "..".
pub const DOTDOT_OFFSET: u64 = 2;
/// Longest name.
pub const NAME_MAX: usize = 255;
/// Deepest directory tree (levels of nodes above the leaves).
pub const DIR_MAX_DEPTH: u16 = 8;

/// Bytes of the leaf header.
pub const LEAF_HEADER_LEN: usize = 24;
/// Bytes of a leaf entry before its name.
pub const LEAF_ENTRY_HEADER_LEN: usize = 18;
/// Bytes of the node header.
pub const NODE_HEADER_LEN: usize = 8;
/// Bytes of one node entry.
pub const NODE_ENTRY_LEN: usize = 24;
/// Bytes of the directory root in the inode data area.
pub const DIR_ROOT_LEN: usize = 32;

/// The 64-bit name hash: `crc32c_append(0x6b65656c, name) << 32 |
/// crc32c_append(0x66733031, name)`, where `crc32c_append(s, x)` is CRC-32C
/// continued from a previous CRC value `s` (register initialised to `!s`,
/// result inverted; `crc32c_append(0, x)` is the plain CRC-32C of `x`).
pub fn name_hash(name: &[u8]) -> u64 {
    let high = crc32c::crc32c_append(HASH_SEED_HIGH, name);
    let low = crc32c::crc32c_append(HASH_SEED_LOW, name);
    u64::from(high) << 32 | u64::from(low)
}

/// The key base of a name: `name_hash(name) & 0x7fff_ffff_ffff_ff00`, or
/// 0x100 when that is 0 (so no key falls below 0x100).
pub fn key_base(name: &[u8]) -> u64 {
    key_base_of_hash(name_hash(name))
}

/// The key base of a name hash (see [`key_base`]).
pub fn key_base_of_hash(hash: u64) -> u64 {
    match hash & KEY_HASH_MASK {
        0 => MIN_KEY,
        base => base,
    }
}

/// The key of a name with collision counter `collision`.
pub fn dir_key(name: &[u8], collision: u8) -> u64 {
    key_base(name) | u64::from(collision)
}

/// The collision counter `c` of a key.
pub fn key_collision(key: u64) -> u8 {
    (key & 0xff) as u8
}

/// The base of a key (the key with `c` cleared).
pub fn base_of_key(key: u64) -> u64 {
    key & !0xff
}

/// The readdir offset that resumes after the entry with `key`.
pub fn offset_after(key: u64) -> u64 {
    key + 1
}

/// Fails unless `name` can be stored: 1..=255 bytes, no '/' or NUL, not
/// "." or "..".
pub fn validate_name(name: &[u8]) -> Result<(), FormatError> {
    let s = Structure::DirName;
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FormatError::invalid(s, "name", Problem::InvalidName));
    }
    if name.len() > NAME_MAX {
        return Err(FormatError::invalid(
            s,
            "name",
            Problem::TooLong {
                len: name.len() as u64,
                max: NAME_MAX as u64,
            },
        ));
    }
    Ok(())
}

/// Bytes a leaf entry with a name of `name_len` bytes takes.
pub fn leaf_entry_size(name_len: usize) -> usize {
    LEAF_ENTRY_HEADER_LEN + name_len
}

/// Entries a directory node block with a payload of `payload_len` holds.
pub fn node_capacity(payload_len: usize) -> usize {
    payload_len.saturating_sub(NODE_HEADER_LEN) / NODE_ENTRY_LEN
}

/// One name in a leaf.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirEntry {
    /// `dir_key(name, c)` for some c.
    pub key: u64,
    pub inode: u64,
    pub file_type: FileType,
    pub name: Vec<u8>,
}

impl DirEntry {
    /// Bytes the entry takes in a leaf.
    pub fn size(&self) -> usize {
        leaf_entry_size(self.name.len())
    }

    fn validate(&self, s: Structure) -> Result<(), FormatError> {
        validate_name(&self.name)?;
        check_range(s, "key", self.key, MIN_KEY, MAX_KEY)?;
        if base_of_key(self.key) != key_base(&self.name) {
            return Err(FormatError::invalid(
                s,
                "key",
                Problem::Inconsistent("key does not match the name's hash"),
            ));
        }
        if self.inode == 0 {
            return Err(FormatError::invalid(s, "inode", Problem::NotZero));
        }
        Ok(())
    }
}

/// A leaf block: names sorted by key, chained to the next leaf for readdir.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirLeaf {
    /// The next leaf in key order, `None` at the last.
    pub next: Option<BlockRef>,
    /// Sorted by strictly increasing key.
    pub entries: Vec<DirEntry>,
}

const LEAF: Structure = Structure::DirLeaf;
const NODE: Structure = Structure::DirNode;
const ROOT: Structure = Structure::DirRoot;

impl DirLeaf {
    /// Bytes of the payload in use (header and entries), as recorded in the
    /// leaf's "bytes used" field.
    pub fn bytes_used(&self) -> usize {
        LEAF_HEADER_LEN + self.entries.iter().map(DirEntry::size).sum::<usize>()
    }

    /// Bytes still free in a payload of `payload_len`.
    pub fn free_bytes(&self, payload_len: usize) -> usize {
        payload_len.saturating_sub(self.bytes_used())
    }

    /// Whether an entry with a name of `name_len` bytes still fits.
    pub fn fits(&self, name_len: usize, payload_len: usize) -> bool {
        leaf_entry_size(name_len) <= self.free_bytes(payload_len)
    }

    /// The index of the entry with `key`, or where it would go.
    pub fn search(&self, key: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&key, |e| e.key)
    }

    /// Checks the leaf as one stored in a payload of `payload_len` bytes.
    pub fn validate(&self, payload_len: usize) -> Result<(), FormatError> {
        for (i, e) in self.entries.iter().enumerate() {
            e.validate(LEAF)?;
            if i > 0 && e.key <= self.entries[i - 1].key {
                return Err(FormatError::invalid(
                    LEAF,
                    "key",
                    Problem::Unsorted { index: i },
                ));
            }
        }
        let used = self.bytes_used();
        if used > payload_len || used > usize::from(u16::MAX) {
            return Err(FormatError::invalid(
                LEAF,
                "bytes_used",
                Problem::NoRoom {
                    need: used as u64,
                    have: payload_len.min(usize::from(u16::MAX)) as u64,
                },
            ));
        }
        Ok(())
    }

    /// Writes the leaf into a whole payload (rest zero).
    pub fn encode(&self, payload: &mut [u8]) -> Result<(), FormatError> {
        self.validate(payload.len())?;
        let mut w = Writer::new(payload, LEAF);
        w.zero_all();
        let (next, next_generation) = BlockRef::to_pair(self.next);
        w.u16(0, 0)?;
        w.u16(2, self.entries.len() as u16)?;
        w.u16(4, self.bytes_used() as u16)?;
        w.u64(8, next)?;
        w.u64(16, next_generation)?;
        let mut at = LEAF_HEADER_LEN;
        for e in &self.entries {
            w.u64(at, e.key)?;
            w.u64(at + 8, e.inode)?;
            w.u8(at + 16, e.file_type.dtype())?;
            w.u8(at + 17, e.name.len() as u8)?;
            w.bytes(at + 18, &e.name)?;
            at += e.size();
        }
        Ok(())
    }

    /// Reads a leaf from a whole payload.
    pub fn decode(payload: &[u8]) -> Result<DirLeaf, FormatError> {
        let r = Reader::new(payload, LEAF);
        r.require(LEAF_HEADER_LEN)?;
        let level = r.u16(0)?;
        if level != 0 {
            return Err(FormatError::invalid(
                LEAF,
                "level",
                Problem::Mismatch {
                    expected: 0,
                    found: level.into(),
                },
            ));
        }
        let count = usize::from(r.u16(2)?);
        let used = usize::from(r.u16(4)?);
        check_zero(LEAF, "reserved", r.bytes(6, 2)?)?;
        check_range(
            LEAF,
            "bytes_used",
            used as u64,
            LEAF_HEADER_LEN as u64,
            payload.len() as u64,
        )?;
        check_zero(LEAF, "unused", &payload[used..])?;
        let next = BlockRef::from_optional(r.u64(8)?, r.u64(16)?, LEAF, "next_generation")?;
        // Entries are read from the used part only, so none runs past it.
        let entries_reader = Reader::new(&payload[..used], LEAF);
        let mut entries = Vec::with_capacity(count.min(used / LEAF_ENTRY_HEADER_LEN));
        let mut at = LEAF_HEADER_LEN;
        let past_used = |field| {
            FormatError::invalid(
                LEAF,
                field,
                Problem::Inconsistent("entries run past bytes used"),
            )
        };
        for _ in 0..count {
            if at + LEAF_ENTRY_HEADER_LEN > used {
                return Err(past_used("entry_count"));
            }
            let dtype = entries_reader.u8(at + 16)?;
            let name_len = usize::from(entries_reader.u8(at + 17)?);
            if at + leaf_entry_size(name_len) > used {
                return Err(past_used("name_length"));
            }
            let file_type = FileType::from_dtype(dtype).ok_or_else(|| {
                FormatError::invalid(
                    LEAF,
                    "file_type",
                    Problem::UnknownValue {
                        value: dtype.into(),
                    },
                )
            })?;
            entries.push(DirEntry {
                key: entries_reader.u64(at)?,
                inode: entries_reader.u64(at + 8)?,
                file_type,
                name: entries_reader.bytes(at + 18, name_len)?.to_vec(),
            });
            at += leaf_entry_size(name_len);
        }
        if at != used {
            return Err(FormatError::invalid(
                LEAF,
                "bytes_used",
                Problem::Mismatch {
                    expected: at as u64,
                    found: used as u64,
                },
            ));
        }
        let leaf = DirLeaf { next, entries };
        leaf.validate(payload.len())?;
        Ok(leaf)
    }
}

/// One entry of a node block: the subtree at `child` holds keys from
/// `min_key` up to the next entry's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DirNodeEntry {
    pub min_key: u64,
    pub child: BlockRef,
}

/// A node block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirNode {
    /// 1 = children are leaves.
    pub level: u16,
    /// At least one, sorted by strictly increasing key.
    pub entries: Vec<DirNodeEntry>,
}

impl DirNode {
    /// The index of the child whose subtree holds `key` (the last entry
    /// whose min_key ≤ key, or the first).
    pub fn child_for(&self, key: u64) -> usize {
        self.entries
            .partition_point(|e| e.min_key <= key)
            .saturating_sub(1)
    }

    /// Checks the node as one stored in a payload of `payload_len` bytes.
    pub fn validate(&self, payload_len: usize) -> Result<(), FormatError> {
        check_range(NODE, "level", self.level.into(), 1, DIR_MAX_DEPTH.into())?;
        check_range(
            NODE,
            "entry_count",
            self.entries.len() as u64,
            1,
            node_capacity(payload_len).min(usize::from(u16::MAX)) as u64,
        )?;
        for (i, e) in self.entries.iter().enumerate() {
            check_range(NODE, "min_key", e.min_key, 0, MAX_KEY)?;
            if e.child.block == 0 {
                return Err(FormatError::invalid(
                    NODE,
                    "child",
                    Problem::Inconsistent("child at block 0"),
                ));
            }
            if i > 0 && e.min_key <= self.entries[i - 1].min_key {
                return Err(FormatError::invalid(
                    NODE,
                    "min_key",
                    Problem::Unsorted { index: i },
                ));
            }
        }
        Ok(())
    }

    /// Writes the node into a whole payload (rest zero).
    pub fn encode(&self, payload: &mut [u8]) -> Result<(), FormatError> {
        self.validate(payload.len())?;
        let mut w = Writer::new(payload, NODE);
        w.zero_all();
        w.u16(0, self.level)?;
        w.u16(2, self.entries.len() as u16)?;
        for (i, e) in self.entries.iter().enumerate() {
            let at = NODE_HEADER_LEN + i * NODE_ENTRY_LEN;
            w.u64(at, e.min_key)?;
            w.u64(at + 8, e.child.block)?;
            w.u64(at + 16, e.child.generation)?;
        }
        Ok(())
    }

    /// Reads a node from a whole payload.
    pub fn decode(payload: &[u8]) -> Result<DirNode, FormatError> {
        let r = Reader::new(payload, NODE);
        r.require(NODE_HEADER_LEN)?;
        let level = r.u16(0)?;
        check_range(NODE, "level", level.into(), 1, DIR_MAX_DEPTH.into())?;
        let count = usize::from(r.u16(2)?);
        check_range(
            NODE,
            "entry_count",
            count as u64,
            1,
            node_capacity(payload.len()) as u64,
        )?;
        check_zero(NODE, "reserved", r.bytes(4, 4)?)?;
        let end = NODE_HEADER_LEN + count * NODE_ENTRY_LEN;
        check_zero(NODE, "unused", &payload[end..])?;
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = NODE_HEADER_LEN + i * NODE_ENTRY_LEN;
            entries.push(DirNodeEntry {
                min_key: r.u64(at)?,
                child: BlockRef {
                    block: r.u64(at + 8)?,
                    generation: r.u64(at + 16)?,
                },
            });
        }
        let node = DirNode { level, entries };
        node.validate(payload.len())?;
        Ok(node)
    }
}

/// The directory root in the inode's data area (§5): root block (8), its
/// generation (8), depth (2), zero (6), entry count (8); the rest of the
/// 128 bytes zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirRoot {
    /// The root block, `None` for an empty directory.
    pub root: Option<BlockRef>,
    /// Levels of nodes above the leaves (0 = the root is a leaf).
    pub depth: u16,
    /// Names in the directory ("." and ".." not counted).
    pub entry_count: u64,
}

impl DirRoot {
    /// The root of an empty directory.
    pub fn empty() -> DirRoot {
        DirRoot::default()
    }

    /// Checks the value.
    pub fn validate(&self) -> Result<(), FormatError> {
        check_range(ROOT, "depth", self.depth.into(), 0, DIR_MAX_DEPTH.into())?;
        if self.root.is_none() && (self.depth != 0 || self.entry_count != 0) {
            return Err(FormatError::invalid(
                ROOT,
                "root_block",
                Problem::Inconsistent("empty directory with a depth or entries"),
            ));
        }
        Ok(())
    }

    /// Writes the root into a 128-byte data area (rest zero).
    pub fn encode(&self, area: &mut [u8]) -> Result<(), FormatError> {
        self.validate()?;
        let mut w = Writer::new(area, ROOT);
        w.require(DIR_ROOT_LEN)?;
        w.zero_all();
        let (block, generation) = BlockRef::to_pair(self.root);
        w.u64(0, block)?;
        w.u64(8, generation)?;
        w.u16(16, self.depth)?;
        w.u64(24, self.entry_count)
    }

    /// Reads the root from a data area.
    pub fn decode(area: &[u8]) -> Result<DirRoot, FormatError> {
        let r = Reader::new(area, ROOT);
        r.require(DIR_ROOT_LEN)?;
        check_zero(ROOT, "reserved", r.bytes(18, 6)?)?;
        check_zero(ROOT, "unused", &area[DIR_ROOT_LEN..])?;
        let root = DirRoot {
            root: BlockRef::from_optional(r.u64(0)?, r.u64(8)?, ROOT, "root_generation")?,
            depth: r.u16(16)?,
            entry_count: r.u64(24)?,
        };
        root.validate()?;
        Ok(root)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bit-at-a-time CRC-32C, independent of the crc32c crate: register
    /// initialised to !seed, reflected polynomial 0x82f63b78, result
    /// inverted.
    fn reference_crc32c(seed: u32, data: &[u8]) -> u32 {
        let mut crc = !seed;
        for &byte in data {
            crc ^= u32::from(byte);
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
    fn hash_follows_the_spec_formula() {
        assert_eq!(reference_crc32c(0, b"123456789"), 0xe306_9283); // CRC-32C check value
        for name in [&b"a"[..], b"hello.txt", b"lost+found", &[0xff; 255]] {
            let want = u64::from(reference_crc32c(0x6b65_656c, name)) << 32
                | u64::from(reference_crc32c(0x6673_3031, name));
            assert_eq!(name_hash(name), want);
        }
    }

    #[test]
    fn keys_are_stable() {
        // If these change, every directory on disk is unreadable.
        assert_eq!(dir_key(b"a", 0), 0x6d3e_7ae7_033e_fa00);
        assert_eq!(dir_key(b"hello.txt", 0), 0x3d93_4ee5_29f1_1d00);
        assert_eq!(dir_key(b"lost+found", 3), 0x0faf_76bd_2b11_2b03);
        assert_eq!(dir_key(b"README.md", 255), 0x102f_bbec_844d_e8ff);
    }

    #[test]
    fn masked_hash_zero_takes_base_0x100() {
        for hash in [0, 0xff, 0x8000_0000_0000_0000, 0x8000_0000_0000_00ff] {
            assert_eq!(key_base_of_hash(hash), 0x100);
        }
        assert_eq!(key_base_of_hash(0x100), 0x100);
        assert_eq!(key_base_of_hash(0x1ff), 0x100);
        assert_eq!(key_base_of_hash(u64::MAX), 0x7fff_ffff_ffff_ff00);
    }

    #[test]
    fn keys_never_fall_below_0x100_nor_set_the_top_bit() {
        for i in 0u32..2000 {
            let name = format!("file{i}");
            let key = dir_key(name.as_bytes(), 255);
            assert!((MIN_KEY..=MAX_KEY).contains(&key));
            assert_eq!(key_collision(key), 255);
            assert_eq!(base_of_key(key), key_base(name.as_bytes()));
        }
        assert!(offset_after(MAX_KEY) <= i64::MAX as u64 + 1);
    }

    #[test]
    fn names() {
        assert!(validate_name(b"ok").is_ok());
        assert!(validate_name(&[b'x'; 255]).is_ok());
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; 256]] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(b"...").is_ok());
    }

    fn entry(name: &str, inode: u64, file_type: FileType) -> DirEntry {
        DirEntry {
            key: dir_key(name.as_bytes(), 0),
            inode,
            file_type,
            name: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn golden_leaf_entry() {
        let leaf = DirLeaf {
            next: Some(BlockRef {
                block: 0x4242,
                generation: 7,
            }),
            entries: vec![entry("a", 0x0102, FileType::Regular)],
        };
        let mut payload = vec![0xffu8; 976];
        leaf.encode(&mut payload).unwrap();
        let want: [u8; 43] = [
            0, 0, 1, 0, 43, 0, 0, 0, // level 0, 1 entry, 43 bytes used, zero
            0x42, 0x42, 0, 0, 0, 0, 0, 0, // next leaf
            7, 0, 0, 0, 0, 0, 0, 0, // its generation
            0x00, 0xfa, 0x3e, 0x03, 0xe7, 0x7a, 0x3e, 0x6d, // key
            0x02, 0x01, 0, 0, 0, 0, 0, 0, // inode
            8, 1, b'a', // DT_REG, name length, name
        ];
        assert_eq!(&payload[..43], &want);
        assert!(payload[43..].iter().all(|&b| b == 0));
        assert_eq!(DirLeaf::decode(&payload).unwrap(), leaf);
    }

    #[test]
    fn golden_node_and_root() {
        let node = DirNode {
            level: 1,
            entries: vec![DirNodeEntry {
                min_key: 0x100,
                child: BlockRef {
                    block: 9,
                    generation: 3,
                },
            }],
        };
        let mut payload = vec![0xffu8; 976];
        node.encode(&mut payload).unwrap();
        let want: [u8; 32] = [
            1, 0, 1, 0, 0, 0, 0, 0, // level 1, 1 entry, zero
            0, 1, 0, 0, 0, 0, 0, 0, // smallest key
            9, 0, 0, 0, 0, 0, 0, 0, // child block
            3, 0, 0, 0, 0, 0, 0, 0, // child generation
        ];
        assert_eq!(&payload[..32], &want);
        assert_eq!(DirNode::decode(&payload).unwrap(), node);

        let root = DirRoot {
            root: Some(BlockRef {
                block: 5,
                generation: 6,
            }),
            depth: 2,
            entry_count: 1000,
        };
        let mut area = [0xffu8; 128];
        root.encode(&mut area).unwrap();
        assert_eq!(&area[..8], &[5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&area[8..16], &[6, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&area[16..24], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&area[24..32], &[0xe8, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(DirRoot::decode(&area).unwrap(), root);
    }

    #[test]
    fn space_accounting() {
        let mut leaf = DirLeaf::default();
        assert_eq!(leaf.bytes_used(), 24);
        assert_eq!(leaf_entry_size(255), 273);
        // 976-byte payload: 24 + 3·273 = 843, 133 left.
        for name in ["x".repeat(255), "y".repeat(255), "z".repeat(255)] {
            assert!(leaf.fits(name.len(), 976));
            leaf.entries.push(entry(&name, 5, FileType::Regular));
        }
        leaf.entries.sort_by_key(|e| e.key);
        assert_eq!(leaf.free_bytes(976), 133);
        assert!(leaf.fits(115, 976));
        assert!(!leaf.fits(116, 976));
        let mut full = leaf.clone();
        full.entries
            .push(entry(&"w".repeat(116), 5, FileType::Regular));
        full.entries.sort_by_key(|e| e.key);
        assert!(full.encode(&mut [0u8; 976]).is_err());
        let mut payload = [0u8; 976];
        leaf.encode(&mut payload).unwrap();
        assert_eq!(DirLeaf::decode(&payload).unwrap(), leaf);
        assert_eq!(node_capacity(976), 40);
    }

    #[test]
    fn invalid_leaves_are_refused() {
        let leaf = DirLeaf {
            next: None,
            entries: vec![
                entry("a", 2, FileType::Directory),
                entry("b", 3, FileType::Symlink),
            ],
        };
        let mut sorted = leaf.clone();
        sorted.entries.sort_by_key(|e| e.key);
        let mut unsorted = sorted.clone();
        unsorted.entries.reverse();
        assert_eq!(
            unsorted.encode(&mut [0u8; 976]).unwrap_err().field(),
            Some("key")
        );
        let mut wrong_key = sorted.clone();
        wrong_key.entries[0].key ^= 0x1000;
        assert!(wrong_key.encode(&mut [0u8; 976]).is_err());
        let mut payload = [0u8; 976];
        sorted.encode(&mut payload).unwrap();
        let field = |offset: usize, value: u8| {
            let mut bad = payload;
            bad[offset] = value;
            DirLeaf::decode(&bad).unwrap_err().field()
        };
        assert_eq!(field(0, 1), Some("level"));
        assert_eq!(field(2, 3), Some("entry_count")); // count says 3, bytes say 2 entries
        assert_eq!(field(2, 1), Some("bytes_used")); // count says 1, bytes say 2 entries
        assert_eq!(field(4, 30), Some("unused"));
        assert_eq!(field(4, 200), Some("bytes_used"));
        assert_eq!(field(5, 0x10), Some("bytes_used")); // beyond the payload
        assert_eq!(field(6, 1), Some("reserved"));
        assert_eq!(field(16, 1), Some("next_generation"));
        assert_eq!(field(24 + 16, 3), Some("file_type"));
        assert_eq!(field(24 + 17, 2), Some("name_length")); // entries now run on
        assert_eq!(field(24 + 18, b'/'), Some("name"));
        assert_eq!(field(24 + 8, 0), Some("inode"));
        let mut bad = payload;
        bad[26] ^= 0x55;
        assert_eq!(DirLeaf::decode(&bad).unwrap_err().field(), Some("key")); // hash mismatch
        assert!(DirLeaf::decode(&payload[..23]).is_err());
    }

    #[test]
    fn invalid_nodes_and_roots_are_refused() {
        let node = DirNode {
            level: 1,
            entries: vec![
                DirNodeEntry {
                    min_key: 0,
                    child: BlockRef {
                        block: 9,
                        generation: 3,
                    },
                },
                DirNodeEntry {
                    min_key: 0x500,
                    child: BlockRef {
                        block: 10,
                        generation: 3,
                    },
                },
            ],
        };
        assert_eq!(node.child_for(0x4ff), 0);
        assert_eq!(node.child_for(0x500), 1);
        let mut payload = [0u8; 976];
        node.encode(&mut payload).unwrap();
        let field = |offset: usize, value: u8| {
            let mut bad = payload;
            bad[offset] = value;
            DirNode::decode(&bad).unwrap_err().field()
        };
        assert_eq!(field(0, 0), Some("level"));
        assert_eq!(field(0, 9), Some("level"));
        assert_eq!(field(2, 0), Some("entry_count"));
        assert_eq!(field(2, 41), Some("entry_count"));
        assert_eq!(field(4, 1), Some("reserved"));
        assert_eq!(field(100, 1), Some("unused"));
        assert_eq!(field(33, 0), Some("min_key")); // 0x500 → 0, out of order
        assert_eq!(field(40, 0), Some("child"));
        assert_eq!(field(39, 0x80), Some("min_key")); // top bit
        let empty = DirNode {
            level: 1,
            entries: vec![],
        };
        assert!(empty.encode(&mut payload).is_err());

        let mut area = [0u8; 128];
        DirRoot::empty().encode(&mut area).unwrap();
        assert_eq!(area, [0u8; 128]);
        let mut bad = area;
        bad[24] = 1;
        assert_eq!(
            DirRoot::decode(&bad).unwrap_err().field(),
            Some("root_block")
        );
        let mut bad = area;
        bad[100] = 1;
        assert_eq!(DirRoot::decode(&bad).unwrap_err().field(), Some("unused"));
    }

    fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..=40,
        )
        .prop_filter("not . or ..", |n| n != b"." && n != b"..")
    }

    fn leaf_strategy() -> impl Strategy<Value = DirLeaf> {
        (
            prop::collection::vec(
                (
                    name_strategy(),
                    1u64..,
                    prop::sample::select(FileType::ALL.to_vec()),
                    any::<u8>(),
                ),
                0..30,
            ),
            any::<Option<(u64, u64)>>(),
        )
            .prop_map(|(raw, next)| {
                let mut entries: Vec<DirEntry> = raw
                    .into_iter()
                    .map(|(name, inode, file_type, c)| DirEntry {
                        key: dir_key(&name, c),
                        inode,
                        file_type,
                        name,
                    })
                    .collect();
                entries.sort_by_key(|e| e.key);
                entries.dedup_by_key(|e| e.key);
                DirLeaf {
                    next: next.map(|(b, g)| BlockRef {
                        block: b.max(1),
                        generation: g,
                    }),
                    entries,
                }
            })
    }

    fn node_strategy() -> impl Strategy<Value = DirNode> {
        (
            1u16..=DIR_MAX_DEPTH,
            prop::collection::btree_map(0u64..=MAX_KEY, (1u64.., any::<u64>()), 1..=40),
        )
            .prop_map(|(level, map)| DirNode {
                level,
                entries: map
                    .into_iter()
                    .map(|(min_key, (block, generation))| DirNodeEntry {
                        min_key,
                        child: BlockRef { block, generation },
                    })
                    .collect(),
            })
    }

    pub(crate) fn dir_root_strategy() -> impl Strategy<Value = DirRoot> {
        prop_oneof![
            Just(DirRoot::empty()),
            (1u64.., any::<u64>(), 0u16..=DIR_MAX_DEPTH, any::<u64>()).prop_map(
                |(block, generation, depth, entry_count)| DirRoot {
                    root: Some(BlockRef { block, generation }),
                    depth,
                    entry_count,
                }
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn leaf_round_trip(leaf in leaf_strategy()) {
            let mut payload = vec![0u8; 4048];
            leaf.encode(&mut payload).unwrap();
            prop_assert_eq!(DirLeaf::decode(&payload).unwrap(), leaf);
        }

        #[test]
        fn node_round_trip(node in node_strategy()) {
            let mut payload = vec![0u8; 976];
            node.encode(&mut payload).unwrap();
            prop_assert_eq!(DirNode::decode(&payload).unwrap(), node);
        }

        #[test]
        fn root_round_trip(root in dir_root_strategy()) {
            let mut area = [0u8; 128];
            root.encode(&mut area).unwrap();
            prop_assert_eq!(DirRoot::decode(&area).unwrap(), root);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
            let _ = DirLeaf::decode(&bytes);
            let _ = DirNode::decode(&bytes);
            let _ = DirRoot::decode(&bytes);
        }

        #[test]
        fn mutated_leaves_never_panic(
            leaf in leaf_strategy(),
            flips in prop::collection::vec((0usize..976, any::<u8>()), 1..4),
        ) {
            let mut payload = vec![0u8; 976];
            if leaf.encode(&mut payload).is_ok() {
                for (at, v) in flips {
                    payload[at] = v;
                }
                if let Ok(decoded) = DirLeaf::decode(&payload) {
                    let mut again = vec![0u8; 976];
                    decoded.encode(&mut again).unwrap();
                    prop_assert_eq!(again, payload);
                }
            }
        }
    }
}
