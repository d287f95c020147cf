//! Extent nodes (§6): the root in an inode's data area (capacity 5) and
//! extent node blocks (kind 9, capacity ⌊(P − 8) / 24⌋).
//!
//! A node is an 8-byte header (magic `0xe5e5`, entry count, capacity,
//! depth) and 24-byte entries: leaves (depth 0) map logical blocks to
//! physical ones, index entries (depth ≥ 1) point at child nodes with the
//! generation the child must carry. Entries are sorted and never overlap.

use super::le::{Reader, Writer};
use super::{check_range, check_zero, BlockRef, FormatError, Problem, Structure};

/// Node header magic.
pub const EXTENT_MAGIC: u16 = 0xe5e5;
/// Bytes of the node header.
pub const EXTENT_HEADER_LEN: usize = 8;
/// Bytes of one entry.
pub const EXTENT_ENTRY_LEN: usize = 24;
/// Entries in the in-inode root.
pub const ROOT_CAPACITY: u16 = 5;
/// Deepest tree allowed (5 · 40⁸ leaves even at 1 KiB blocks).
pub const EXTENT_MAX_DEPTH: u16 = 8;
/// Longest extent, in blocks (bit 31 of the length is the unwritten flag).
pub const EXTENT_MAX_LEN: u32 = 0x7fff_ffff;
/// Bit 31 of the length: allocated but unwritten, reads as zeros.
pub const UNWRITTEN_FLAG: u32 = 1 << 31;

const S: Structure = Structure::ExtentNode;

/// Entries that fit in an extent node block with a payload of `payload_len`
/// bytes; `None` if that is not representable in the 16-bit capacity field.
pub fn block_capacity(payload_len: usize) -> Option<u16> {
    let entries = payload_len.checked_sub(EXTENT_HEADER_LEN)? / EXTENT_ENTRY_LEN;
    u16::try_from(entries).ok()
}

/// A leaf entry: `length` blocks from `logical` live at `physical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtentLeaf {
    pub logical: u64,
    /// 1..=[`EXTENT_MAX_LEN`].
    pub length: u32,
    /// Allocated but never written: reads as zeros, tags not checked.
    pub unwritten: bool,
    pub physical: u64,
}

impl ExtentLeaf {
    /// One past the last logical block (`None` on overflow).
    pub fn logical_end(&self) -> Option<u64> {
        self.logical.checked_add(self.length.into())
    }

    fn validate(&self) -> Result<(), FormatError> {
        check_range(S, "length", self.length.into(), 1, EXTENT_MAX_LEN.into())?;
        if self.physical == 0 {
            return Err(FormatError::invalid(
                S,
                "physical",
                Problem::Inconsistent("extent at block 0"),
            ));
        }
        if self.logical_end().is_none() || self.physical.checked_add(self.length.into()).is_none() {
            return Err(FormatError::invalid(S, "length", Problem::Overflow));
        }
        Ok(())
    }
}

/// An index entry: the subtree at `child` covers logical blocks from
/// `logical` up to the next entry's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtentIndex {
    pub logical: u64,
    pub child: BlockRef,
}

/// One node of an extent tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtentNode {
    /// Depth 0.
    Leaf(Vec<ExtentLeaf>),
    /// Depth ≥ 1, at least one entry.
    Index {
        depth: u16,
        entries: Vec<ExtentIndex>,
    },
}

impl ExtentNode {
    /// An empty leaf (the root of an empty file).
    pub fn empty() -> ExtentNode {
        ExtentNode::Leaf(Vec::new())
    }

    /// Depth: 0 for a leaf.
    pub fn depth(&self) -> u16 {
        match self {
            ExtentNode::Leaf(_) => 0,
            ExtentNode::Index { depth, .. } => *depth,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            ExtentNode::Leaf(entries) => entries.len(),
            ExtentNode::Index { entries, .. } => entries.len(),
        }
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the node as one with room for `capacity` entries.
    pub fn validate(&self, capacity: u16) -> Result<(), FormatError> {
        check_range(S, "entry_count", self.len() as u64, 0, capacity.into())?;
        match self {
            ExtentNode::Leaf(entries) => {
                for (i, e) in entries.iter().enumerate() {
                    e.validate()?;
                    let Some(prev) = i.checked_sub(1).map(|p| &entries[p]) else {
                        continue;
                    };
                    if e.logical <= prev.logical {
                        return Err(FormatError::invalid(
                            S,
                            "logical",
                            Problem::Unsorted { index: i },
                        ));
                    }
                    if prev.logical_end().is_some_and(|end| e.logical < end) {
                        return Err(FormatError::invalid(
                            S,
                            "logical",
                            Problem::Overlap { index: i },
                        ));
                    }
                }
            }
            ExtentNode::Index { depth, entries } => {
                check_range(S, "depth", (*depth).into(), 1, EXTENT_MAX_DEPTH.into())?;
                if entries.is_empty() {
                    return Err(FormatError::invalid(
                        S,
                        "entry_count",
                        Problem::Inconsistent("index node without entries"),
                    ));
                }
                for (i, e) in entries.iter().enumerate() {
                    if e.child.block == 0 {
                        return Err(FormatError::invalid(
                            S,
                            "child",
                            Problem::Inconsistent("child at block 0"),
                        ));
                    }
                    if i > 0 && e.logical <= entries[i - 1].logical {
                        return Err(FormatError::invalid(
                            S,
                            "logical",
                            Problem::Unsorted { index: i },
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the node as an in-inode root.
    pub fn validate_root(&self) -> Result<(), FormatError> {
        self.validate(ROOT_CAPACITY)
    }

    /// Writes the node with room for `capacity` entries into the first
    /// 8 + 24·capacity bytes of `buf` (unused entries zero).
    pub fn encode(&self, buf: &mut [u8], capacity: u16) -> Result<(), FormatError> {
        self.validate(capacity)?;
        let len = EXTENT_HEADER_LEN + usize::from(capacity) * EXTENT_ENTRY_LEN;
        let mut w = Writer::new(buf, S);
        w.require(len)?;
        w.u16(0, EXTENT_MAGIC)?;
        w.u16(2, self.len() as u16)?;
        w.u16(4, capacity)?;
        w.u16(6, self.depth())?;
        let mut entry = [0u8; EXTENT_ENTRY_LEN];
        for i in 0..usize::from(capacity) {
            entry.fill(0);
            match self {
                ExtentNode::Leaf(entries) => {
                    if let Some(e) = entries.get(i) {
                        let length = e.length | if e.unwritten { UNWRITTEN_FLAG } else { 0 };
                        entry[0..8].copy_from_slice(&e.logical.to_le_bytes());
                        entry[8..12].copy_from_slice(&length.to_le_bytes());
                        entry[16..24].copy_from_slice(&e.physical.to_le_bytes());
                    }
                }
                ExtentNode::Index { entries, .. } => {
                    if let Some(e) = entries.get(i) {
                        entry[0..8].copy_from_slice(&e.logical.to_le_bytes());
                        entry[8..16].copy_from_slice(&e.child.generation.to_le_bytes());
                        entry[16..24].copy_from_slice(&e.child.block.to_le_bytes());
                    }
                }
            }
            w.bytes(EXTENT_HEADER_LEN + i * EXTENT_ENTRY_LEN, &entry)?;
        }
        Ok(())
    }

    /// Reads a node that must have room for `capacity` entries from the
    /// first 8 + 24·capacity bytes of `buf`.
    pub fn decode(buf: &[u8], capacity: u16) -> Result<ExtentNode, FormatError> {
        let r = Reader::new(buf, S);
        r.require(EXTENT_HEADER_LEN + usize::from(capacity) * EXTENT_ENTRY_LEN)?;
        let magic = r.u16(0)?;
        if magic != EXTENT_MAGIC {
            return Err(FormatError::invalid(
                S,
                "magic",
                Problem::BadMagic {
                    expected: EXTENT_MAGIC.into(),
                    found: magic.into(),
                },
            ));
        }
        let count = r.u16(2)?;
        let recorded_capacity = r.u16(4)?;
        if recorded_capacity != capacity {
            return Err(FormatError::invalid(
                S,
                "capacity",
                Problem::Mismatch {
                    expected: capacity.into(),
                    found: recorded_capacity.into(),
                },
            ));
        }
        check_range(S, "entry_count", count.into(), 0, capacity.into())?;
        let depth = r.u16(6)?;
        check_range(S, "depth", depth.into(), 0, EXTENT_MAX_DEPTH.into())?;
        let entry_at = |i: usize| EXTENT_HEADER_LEN + i * EXTENT_ENTRY_LEN;
        let unused_start = entry_at(count.into());
        let unused_len = entry_at(capacity.into()) - unused_start;
        check_zero(S, "unused_entries", r.bytes(unused_start, unused_len)?)?;
        let node = if depth == 0 {
            let mut entries = Vec::with_capacity(count.into());
            for i in 0..usize::from(count) {
                let at = entry_at(i);
                let length = r.u32(at + 8)?;
                check_zero(S, "reserved", r.bytes(at + 12, 4)?)?;
                entries.push(ExtentLeaf {
                    logical: r.u64(at)?,
                    length: length & !UNWRITTEN_FLAG,
                    unwritten: length & UNWRITTEN_FLAG != 0,
                    physical: r.u64(at + 16)?,
                });
            }
            ExtentNode::Leaf(entries)
        } else {
            let mut entries = Vec::with_capacity(count.into());
            for i in 0..usize::from(count) {
                let at = entry_at(i);
                entries.push(ExtentIndex {
                    logical: r.u64(at)?,
                    child: BlockRef {
                        generation: r.u64(at + 8)?,
                        block: r.u64(at + 16)?,
                    },
                });
            }
            ExtentNode::Index { depth, entries }
        };
        node.validate(capacity)?;
        Ok(node)
    }

    /// Writes the node as an in-inode root into a 128-byte data area.
    pub fn encode_root(&self, area: &mut [u8]) -> Result<(), FormatError> {
        self.encode(area, ROOT_CAPACITY)
    }

    /// Reads an in-inode root from a 128-byte data area.
    pub fn decode_root(area: &[u8]) -> Result<ExtentNode, FormatError> {
        ExtentNode::decode(area, ROOT_CAPACITY)
    }

    /// Writes the node as an extent node block into a whole payload (rest
    /// zero).
    pub fn encode_block(&self, payload: &mut [u8]) -> Result<(), FormatError> {
        let capacity = payload_capacity(payload.len())?;
        payload.fill(0);
        self.encode(payload, capacity)
    }

    /// Reads an extent node block from a whole payload.
    pub fn decode_block(payload: &[u8]) -> Result<ExtentNode, FormatError> {
        let capacity = payload_capacity(payload.len())?;
        let node = ExtentNode::decode(payload, capacity)?;
        let used = EXTENT_HEADER_LEN + usize::from(capacity) * EXTENT_ENTRY_LEN;
        check_zero(S, "padding", &payload[used..])?;
        Ok(node)
    }
}

fn payload_capacity(payload_len: usize) -> Result<u16, FormatError> {
    let smallest = EXTENT_HEADER_LEN + EXTENT_ENTRY_LEN;
    if payload_len < smallest {
        return Err(FormatError::Truncated {
            structure: S,
            need: smallest,
            have: payload_len,
        });
    }
    block_capacity(payload_len).ok_or_else(|| {
        FormatError::invalid(
            S,
            "capacity",
            Problem::TooLong {
                len: payload_len as u64,
                max: u64::from(u16::MAX),
            },
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn capacities() {
        assert_eq!(block_capacity(976), Some(40));
        assert_eq!(block_capacity(4048), Some(168));
        assert_eq!(block_capacity(65488), Some(2728));
        assert_eq!(block_capacity(7), None);
        assert_eq!(8 + 24 * usize::from(ROOT_CAPACITY), 128);
    }

    #[test]
    fn golden_leaf_and_index_entries() {
        let leaf = ExtentNode::Leaf(vec![ExtentLeaf {
            logical: 0x0102_0304_0506_0708,
            length: 0x10,
            unwritten: true,
            physical: 0xaabb_ccdd,
        }]);
        let mut area = [0xffu8; 128];
        leaf.encode_root(&mut area).unwrap();
        let want: [u8; 32] = [
            0xe5, 0xe5, 0x01, 0x00, 0x05, 0x00, 0x00,
            0x00, // header: magic, 1, cap 5, depth 0
            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, // logical
            0x10, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, // length | unwritten, zero
            0xdd, 0xcc, 0xbb, 0xaa, 0x00, 0x00, 0x00, 0x00, // physical
        ];
        assert_eq!(&area[..32], &want);
        assert!(area[32..].iter().all(|&b| b == 0));
        assert_eq!(ExtentNode::decode_root(&area).unwrap(), leaf);

        let index = ExtentNode::Index {
            depth: 2,
            entries: vec![ExtentIndex {
                logical: 9,
                child: BlockRef {
                    block: 0x77,
                    generation: 0x66,
                },
            }],
        };
        let mut payload = vec![0xffu8; 976];
        index.encode_block(&mut payload).unwrap();
        let want: [u8; 32] = [
            0xe5, 0xe5, 0x01, 0x00, 0x28, 0x00, 0x02, 0x00, // cap 40, depth 2
            9, 0, 0, 0, 0, 0, 0, 0, // first logical
            0x66, 0, 0, 0, 0, 0, 0, 0, // child generation
            0x77, 0, 0, 0, 0, 0, 0, 0, // child block
        ];
        assert_eq!(&payload[..32], &want);
        assert!(payload[32..].iter().all(|&b| b == 0));
        assert_eq!(ExtentNode::decode_block(&payload).unwrap(), index);
    }

    fn leaf(logical: u64, length: u32, physical: u64) -> ExtentLeaf {
        ExtentLeaf {
            logical,
            length,
            unwritten: false,
            physical,
        }
    }

    #[test]
    fn invalid_nodes_are_refused() {
        let mut area = [0u8; 128];
        let overlap = ExtentNode::Leaf(vec![leaf(0, 10, 100), leaf(5, 1, 200)]);
        assert_eq!(
            overlap.encode_root(&mut area).unwrap_err(),
            FormatError::invalid(S, "logical", Problem::Overlap { index: 1 })
        );
        let unsorted = ExtentNode::Leaf(vec![leaf(10, 1, 100), leaf(5, 1, 200)]);
        assert_eq!(
            unsorted.encode_root(&mut area).unwrap_err(),
            FormatError::invalid(S, "logical", Problem::Unsorted { index: 1 })
        );
        let too_many = ExtentNode::Leaf((0..6).map(|i| leaf(i * 2, 1, 100 + i)).collect());
        assert!(too_many.encode_root(&mut area).is_err());
        assert!(ExtentNode::Leaf(vec![leaf(0, 0, 1)])
            .encode_root(&mut area)
            .is_err());
        assert!(ExtentNode::Leaf(vec![leaf(0, 1, 0)])
            .encode_root(&mut area)
            .is_err());
        assert!(ExtentNode::Leaf(vec![leaf(u64::MAX, 1, 1)])
            .encode_root(&mut area)
            .is_err());
        let empty_index = ExtentNode::Index {
            depth: 1,
            entries: vec![],
        };
        assert!(empty_index.encode_root(&mut area).is_err());

        // Decoder checks on raw bytes.
        let good = ExtentNode::Leaf(vec![leaf(0, 10, 100), leaf(10, 1, 200)]);
        good.encode_root(&mut area).unwrap();
        let field = |offset: usize, value: u8| {
            let mut bad = area;
            bad[offset] = value;
            ExtentNode::decode_root(&bad).unwrap_err().field()
        };
        assert_eq!(field(0, 0), Some("magic"));
        assert_eq!(field(2, 6), Some("entry_count"));
        assert_eq!(field(2, 3), Some("length")); // a zeroed entry counted in
        assert_eq!(field(4, 6), Some("capacity"));
        assert_eq!(field(6, 9), Some("depth"));
        assert_eq!(field(20, 1), Some("reserved"));
        assert_eq!(field(120, 1), Some("unused_entries"));
        assert_eq!(field(32, 5), Some("logical")); // second extent now overlaps
        assert_eq!(field(32, 0), Some("logical")); // ... or is out of order
        assert!(ExtentNode::decode_root(&area[..127]).is_err());
    }

    fn leaves(max: usize) -> impl Strategy<Value = Vec<ExtentLeaf>> {
        prop::collection::vec(
            (
                0u64..1 << 20,
                1u32..=EXTENT_MAX_LEN,
                any::<bool>(),
                1u64..1 << 48,
            ),
            0..=max,
        )
        .prop_map(|raw| {
            let mut logical = 0u64;
            raw.into_iter()
                .map(|(gap, length, unwritten, physical)| {
                    let e = ExtentLeaf {
                        logical: logical + gap,
                        length,
                        unwritten,
                        physical,
                    };
                    logical = e.logical + u64::from(length);
                    e
                })
                .collect()
        })
    }

    fn indexes(max: usize) -> impl Strategy<Value = ExtentNode> {
        (
            1u16..=EXTENT_MAX_DEPTH,
            prop::collection::vec((1u64..1 << 30, 1u64.., any::<u64>()), 1..=max),
        )
            .prop_map(|(depth, raw)| {
                let mut logical = 0u64;
                let entries = raw
                    .into_iter()
                    .map(|(step, block, generation)| {
                        logical += step;
                        ExtentIndex {
                            logical,
                            child: BlockRef { block, generation },
                        }
                    })
                    .collect();
                ExtentNode::Index { depth, entries }
            })
    }

    pub(crate) fn root_strategy() -> impl Strategy<Value = ExtentNode> {
        prop_oneof![leaves(5).prop_map(ExtentNode::Leaf), indexes(5)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn root_round_trip(node in root_strategy()) {
            let mut area = [0u8; 128];
            node.encode_root(&mut area).unwrap();
            prop_assert_eq!(ExtentNode::decode_root(&area).unwrap(), node);
        }

        #[test]
        fn block_round_trip(
            node in prop_oneof![leaves(40).prop_map(ExtentNode::Leaf), indexes(40)],
            shift in 10u32..=16,
        ) {
            let mut payload = vec![0u8; (1usize << shift) - 48];
            node.encode_block(&mut payload).unwrap();
            prop_assert_eq!(ExtentNode::decode_block(&payload).unwrap(), node);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
            let _ = ExtentNode::decode_root(&bytes);
            let _ = ExtentNode::decode_block(&bytes);
        }

        #[test]
        fn mutated_roots_never_panic(
            node in root_strategy(),
            flips in prop::collection::vec((0usize..128, any::<u8>()), 1..4),
        ) {
            let mut area = [0u8; 128];
            node.encode_root(&mut area).unwrap();
            for (at, v) in flips {
                area[at] = v;
            }
            if let Ok(decoded) = ExtentNode::decode_root(&area) {
                let mut again = [0u8; 128];
                decoded.encode_root(&mut again).unwrap();
                prop_assert_eq!(again, area);
            }
        }
    }
}
