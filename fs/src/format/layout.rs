//! The layout of every leg (§3): where each fixed region starts and how
//! long it is, computed from the device size, the block size, the inode
//! count and the journal size; plus the lookups from an inode number, a data
//! block or a bitmap item to the block and offset that hold it.
//!
//! The layout is a pure function of (N, B, I, J): [`Layout::new`] computes
//! it, [`Layout::compute`] first resolves mkfs-style defaults from a
//! [`Geometry`], and the superblock decoder recomputes it to check the
//! regions a superblock records.

use super::{payload_len, FormatError, Problem, Structure};

/// Smallest block size.
pub const MIN_BLOCK_SIZE: u32 = 1024;
/// Largest block size.
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Block size mkfs uses unless told otherwise.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;

/// Block address of the primary superblock.
pub const SUPERBLOCK_BLOCK: u64 = 0;
/// Block address of the journal superblock.
pub const JOURNAL_SUPERBLOCK_BLOCK: u64 = 1;
/// First block of the journal ring.
pub const JOURNAL_START: u64 = 2;

/// The default journal is N / this many blocks ...
pub const JOURNAL_DEFAULT_DIVISOR: u64 = 256;
/// ... but at least this many ...
pub const JOURNAL_DEFAULT_MIN_BLOCKS: u64 = 1024;
/// ... and at most this many.
pub const JOURNAL_DEFAULT_MAX_BLOCKS: u64 = 32768;
/// Smallest journal ring that may be asked for explicitly.
pub const JOURNAL_MIN_BLOCKS: u64 = 64;
/// Largest journal ring that may be asked for explicitly.
pub const JOURNAL_MAX_BLOCKS: u64 = 1 << 20;

/// Size of one inode in the inode table.
pub const INODE_SIZE: usize = 256;
/// Size of one data tag in the tag table.
pub const TAG_SIZE: usize = 8;

/// Fewest inodes a filesystem may have (the root is 1, lost+found 2).
pub const MIN_INODES: u64 = 2;
/// Most inodes a filesystem may have (inode numbers fit in 32 bits).
pub const MAX_INODES: u64 = u32::MAX as u64;
/// Default bytes of device per inode (mkfs `-i`).
pub const DEFAULT_BYTES_PER_INODE: u64 = 16 * 1024;
/// Smallest bytes-per-inode ratio.
pub const MIN_BYTES_PER_INODE: u64 = 1024;
/// Largest bytes-per-inode ratio.
pub const MAX_BYTES_PER_INODE: u64 = 64 * 1024 * 1024;

/// Fewest data blocks (data_start … N−2) a filesystem may have.
pub const MIN_DATA_BLOCKS: u64 = 64;

/// A run of consecutive blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub blocks: u64,
}

impl Region {
    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.blocks)
    }

    /// Whether `block` lies inside.
    pub fn contains(&self, block: u64) -> bool {
        block >= self.start && block < self.end()
    }
}

/// How many inodes mkfs should make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InodeSpec {
    /// Exactly this many (`mkfs -N`).
    Count(u64),
    /// One per this many bytes of device (`mkfs -i`), rounded up to fill the
    /// last inode-table block.
    BytesPerInode(u64),
}

impl Default for InodeSpec {
    fn default() -> InodeSpec {
        InodeSpec::BytesPerInode(DEFAULT_BYTES_PER_INODE)
    }
}

/// What mkfs is asked for; [`Layout::compute`] turns it into a [`Layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// N: blocks per leg (the smallest leg, rounded down to whole blocks).
    pub device_blocks: u64,
    /// B: block size in bytes.
    pub block_size: u32,
    /// I, directly or as a ratio.
    pub inodes: InodeSpec,
    /// J, or `None` for the default of §3.
    pub journal_blocks: Option<u64>,
}

impl Geometry {
    /// A geometry with default inode ratio and journal size.
    pub fn new(device_blocks: u64, block_size: u32) -> Geometry {
        Geometry {
            device_blocks,
            block_size,
            inodes: InodeSpec::default(),
            journal_blocks: None,
        }
    }

    /// Blocks of `block_size` in a leg of `device_bytes` bytes.
    pub fn device_blocks_for(device_bytes: u64, block_size: u32) -> u64 {
        device_bytes / u64::from(block_size.max(1))
    }

    /// J: the journal size asked for, or the §3 default.
    pub fn journal_blocks(&self) -> u64 {
        self.journal_blocks
            .unwrap_or_else(|| default_journal_blocks(self.device_blocks))
    }

    /// I: the inode count asked for, or the one the ratio gives.
    pub fn inode_count(&self) -> Result<u64, FormatError> {
        match self.inodes {
            InodeSpec::Count(count) => Ok(count),
            InodeSpec::BytesPerInode(ratio) => {
                let inodes_per_block = BlockGeometry::new(self.block_size)?.inodes_per_block;
                super::check_range(
                    Structure::Layout,
                    "bytes_per_inode",
                    ratio,
                    MIN_BYTES_PER_INODE,
                    MAX_BYTES_PER_INODE,
                )?;
                let bytes = u128::from(self.device_blocks) * u128::from(self.block_size);
                let count = u64::try_from(bytes / u128::from(ratio)).unwrap_or(u64::MAX);
                let max = MAX_INODES - MAX_INODES % inodes_per_block;
                Ok(count
                    .div_ceil(inodes_per_block)
                    .max(1)
                    .saturating_mul(inodes_per_block)
                    .min(max))
            }
        }
    }
}

/// The §3 default journal size for a leg of `device_blocks` blocks.
pub fn default_journal_blocks(device_blocks: u64) -> u64 {
    (device_blocks / JOURNAL_DEFAULT_DIVISOR)
        .clamp(JOURNAL_DEFAULT_MIN_BLOCKS, JOURNAL_DEFAULT_MAX_BLOCKS)
}

/// Fails unless `block_size` is a power of two in 1024..=65536.
pub fn check_block_size(block_size: u32) -> Result<(), FormatError> {
    if !block_size.is_power_of_two() {
        return Err(FormatError::invalid(
            Structure::Layout,
            "block_size",
            Problem::NotPowerOfTwo {
                value: block_size.into(),
            },
        ));
    }
    super::check_range(
        Structure::Layout,
        "block_size",
        block_size.into(),
        MIN_BLOCK_SIZE.into(),
        MAX_BLOCK_SIZE.into(),
    )
}

/// The per-block capacities that follow from a valid block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockGeometry {
    payload: u64,
    inodes_per_block: u64,
    tags_per_block: u64,
    bits_per_block: u64,
}

impl BlockGeometry {
    fn new(block_size: u32) -> Result<BlockGeometry, FormatError> {
        check_block_size(block_size)?;
        // A valid block size always exceeds the header.
        let payload = payload_len(block_size).unwrap_or(0) as u64;
        Ok(BlockGeometry {
            payload,
            inodes_per_block: payload / INODE_SIZE as u64,
            tags_per_block: payload / TAG_SIZE as u64,
            bits_per_block: payload * 8,
        })
    }
}

/// Where one bitmap item lives: bit `bit` (LSB first) of payload byte `byte`
/// of block `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitLocation {
    /// Absolute block address of the bitmap block.
    pub block: u64,
    /// Byte offset inside that block's payload.
    pub byte: usize,
    /// Bit inside that byte, 0 = least significant.
    pub bit: u8,
}

impl BitLocation {
    /// The bit's index inside the block's payload (8·byte + bit), as the
    /// [`bitmap`](super::bitmap) helpers take it.
    pub fn bit_in_block(&self) -> usize {
        self.byte * 8 + usize::from(self.bit)
    }
}

/// Where an 8-byte tag or a 256-byte inode lives: payload offset `offset` of
/// block `block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLocation {
    /// Absolute block address.
    pub block: u64,
    /// Byte offset inside that block's payload.
    pub offset: usize,
}

/// Every fixed region of a leg (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// B.
    pub block_size: u32,
    /// N.
    pub device_blocks: u64,
    /// I.
    pub inode_count: u64,
    /// The journal superblock (block 1).
    pub journal_superblock: u64,
    /// The journal ring (J blocks from block 2).
    pub journal: Region,
    /// One bit per block of the device.
    pub block_bitmap: Region,
    /// One bit per inode.
    pub inode_bitmap: Region,
    /// I inodes, ⌊P/256⌋ per block.
    pub inode_table: Region,
    /// One tag per block from data_start to N−1.
    pub tag_table: Region,
    /// data_start … N−2.
    pub data: Region,
    /// The backup superblock (N−1).
    pub backup_superblock: u64,
}

fn add(a: u64, b: u64, field: &'static str) -> Result<u64, FormatError> {
    a.checked_add(b)
        .ok_or_else(|| FormatError::invalid(Structure::Layout, field, Problem::Overflow))
}

impl Layout {
    /// The layout for a [`Geometry`], defaults resolved.
    pub fn compute(geometry: &Geometry) -> Result<Layout, FormatError> {
        Layout::new(
            geometry.device_blocks,
            geometry.block_size,
            geometry.inode_count()?,
            geometry.journal_blocks(),
        )
    }

    /// The layout of a leg of `device_blocks` blocks of `block_size` bytes
    /// with `inode_count` inodes and a journal ring of `journal_blocks`.
    pub fn new(
        device_blocks: u64,
        block_size: u32,
        inode_count: u64,
        journal_blocks: u64,
    ) -> Result<Layout, FormatError> {
        let geo = BlockGeometry::new(block_size)?;
        if inode_count == 0 {
            return Err(FormatError::invalid(
                Structure::Layout,
                "inode_count",
                Problem::OutOfRange {
                    value: 0,
                    min: MIN_INODES,
                    max: MAX_INODES,
                },
            ));
        }
        super::check_range(
            Structure::Layout,
            "inode_count",
            inode_count,
            MIN_INODES,
            MAX_INODES,
        )?;
        super::check_range(
            Structure::Layout,
            "journal_blocks",
            journal_blocks,
            JOURNAL_MIN_BLOCKS,
            JOURNAL_MAX_BLOCKS,
        )?;
        super::check_range(
            Structure::Layout,
            "device_blocks",
            device_blocks,
            0,
            u64::MAX / u64::from(block_size),
        )?;

        let journal = Region {
            start: JOURNAL_START,
            blocks: journal_blocks,
        };
        let block_bitmap = Region {
            start: journal.end(),
            blocks: device_blocks.div_ceil(geo.bits_per_block),
        };
        let inode_bitmap = Region {
            start: add(block_bitmap.start, block_bitmap.blocks, "block_bitmap")?,
            blocks: inode_count.div_ceil(geo.bits_per_block),
        };
        let inode_table = Region {
            start: add(inode_bitmap.start, inode_bitmap.blocks, "inode_bitmap")?,
            blocks: inode_count.div_ceil(geo.inodes_per_block),
        };
        let tag_table_start = add(inode_table.start, inode_table.blocks, "inode_table")?;
        // Tags cover data_start..N, and data_start = tag_table_start + T, so
        // T is the least value with T·tags_per_block ≥ N − tag_table_start − T.
        let too_small = |need: u64| {
            FormatError::invalid(
                Structure::Layout,
                "device_blocks",
                Problem::NoRoom {
                    need,
                    have: device_blocks,
                },
            )
        };
        let min_device = |metadata_end: u64| {
            metadata_end
                .saturating_add(MIN_DATA_BLOCKS)
                .saturating_add(1)
        };
        let covered = device_blocks
            .checked_sub(tag_table_start)
            .ok_or_else(|| too_small(min_device(tag_table_start)))?;
        let tag_table = Region {
            start: tag_table_start,
            blocks: covered.div_ceil(geo.tags_per_block + 1),
        };
        let data_start = tag_table.end();
        let data_blocks = device_blocks
            .checked_sub(data_start)
            .and_then(|n| n.checked_sub(1))
            .filter(|&n| n >= MIN_DATA_BLOCKS)
            .ok_or_else(|| too_small(min_device(data_start)))?;
        Ok(Layout {
            block_size,
            device_blocks,
            inode_count,
            journal_superblock: JOURNAL_SUPERBLOCK_BLOCK,
            journal,
            block_bitmap,
            inode_bitmap,
            inode_table,
            tag_table,
            data: Region {
                start: data_start,
                blocks: data_blocks,
            },
            backup_superblock: device_blocks - 1,
        })
    }

    /// P: payload bytes of a metadata block.
    pub fn payload_len(&self) -> usize {
        payload_len(self.block_size).unwrap_or(0)
    }

    /// ⌊P/256⌋.
    pub fn inodes_per_block(&self) -> u64 {
        (self.payload_len() / INODE_SIZE) as u64
    }

    /// ⌊P/8⌋.
    pub fn tags_per_block(&self) -> u64 {
        (self.payload_len() / TAG_SIZE) as u64
    }

    /// 8P.
    pub fn bits_per_bitmap_block(&self) -> u64 {
        self.payload_len() as u64 * 8
    }

    /// J.
    pub fn journal_blocks(&self) -> u64 {
        self.journal.blocks
    }

    /// First block of the data area (every block before it is fixed
    /// metadata).
    pub fn data_start(&self) -> u64 {
        self.data.start
    }

    /// Whether `block` is in the data area (data_start ≤ block ≤ N−2).
    pub fn is_data_block(&self, block: u64) -> bool {
        self.data.contains(block)
    }

    /// Every fixed region in disk order, named as in the superblock; together
    /// they tile blocks 0..N exactly.
    pub fn regions(&self) -> [(&'static str, Region); 9] {
        let one = |start| Region { start, blocks: 1 };
        [
            ("superblock", one(SUPERBLOCK_BLOCK)),
            ("journal_superblock", one(self.journal_superblock)),
            ("journal", self.journal),
            ("block_bitmap", self.block_bitmap),
            ("inode_bitmap", self.inode_bitmap),
            ("inode_table", self.inode_table),
            ("tag_table", self.tag_table),
            ("data", self.data),
            ("backup_superblock", one(self.backup_superblock)),
        ]
    }

    /// Where inode `inode` (1..=I) lives in the inode table.
    pub fn inode_location(&self, inode: u64) -> Result<SlotLocation, FormatError> {
        super::check_range(Structure::Layout, "inode", inode, 1, self.inode_count)?;
        let index = inode - 1;
        let per_block = self.inodes_per_block();
        Ok(SlotLocation {
            block: self.inode_table.start + index / per_block,
            offset: (index % per_block) as usize * INODE_SIZE,
        })
    }

    /// Where the tag of data block `block` (data_start ≤ block < N) lives.
    pub fn tag_location(&self, block: u64) -> Result<SlotLocation, FormatError> {
        super::check_range(
            Structure::Layout,
            "data_block",
            block,
            self.data.start,
            self.device_blocks.saturating_sub(1),
        )?;
        let index = block - self.data.start;
        let per_block = self.tags_per_block();
        Ok(SlotLocation {
            block: self.tag_table.start + index / per_block,
            offset: (index % per_block) as usize * TAG_SIZE,
        })
    }

    /// Where the block-bitmap bit of `block` (0..N) lives.
    pub fn block_bitmap_bit(&self, block: u64) -> Result<BitLocation, FormatError> {
        super::check_range(
            Structure::Layout,
            "block",
            block,
            0,
            self.device_blocks.saturating_sub(1),
        )?;
        Ok(self.bit_location(self.block_bitmap.start, block))
    }

    /// Where the inode-bitmap bit of inode `inode` (1..=I) lives: item
    /// `inode − 1`.
    pub fn inode_bitmap_bit(&self, inode: u64) -> Result<BitLocation, FormatError> {
        super::check_range(Structure::Layout, "inode", inode, 1, self.inode_count)?;
        Ok(self.bit_location(self.inode_bitmap.start, inode - 1))
    }

    fn bit_location(&self, start: u64, item: u64) -> BitLocation {
        let bits = self.bits_per_bitmap_block();
        let in_block = item % bits;
        BitLocation {
            block: start + item / bits,
            byte: (in_block / 8) as usize,
            bit: (in_block % 8) as u8,
        }
    }

    /// Number of valid bits in bitmap block `index` (0-based) of a bitmap
    /// of `items` items; the rest are padding, kept set (§3).
    pub fn valid_bits_in_bitmap_block(&self, items: u64, index: u64) -> usize {
        let bits = self.bits_per_bitmap_block();
        items.saturating_sub(index.saturating_mul(bits)).min(bits) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;

    /// Checks every §3 formula and the tiling of the device.
    fn check_layout(l: &Layout) {
        let n = l.device_blocks;
        let p = u64::from(l.block_size) - 48;
        let i = l.inode_count;
        let regions = l.regions();
        assert_eq!(regions[0].1.start, 0);
        for pair in regions.windows(2) {
            assert_eq!(pair[0].1.end(), pair[1].1.start, "{pair:?} not contiguous");
        }
        assert_eq!(regions[8].1.end(), n, "regions do not end at N");
        assert_eq!(l.backup_superblock, n - 1);
        assert_eq!(l.journal_superblock, 1);
        assert_eq!(l.journal.start, 2);
        assert_eq!(l.block_bitmap.blocks, n.div_ceil(8 * p));
        assert_eq!(l.inode_bitmap.blocks, i.div_ceil(8 * p));
        assert_eq!(l.inode_table.blocks, i.div_ceil(p / 256));
        // The tag table is just big enough for data_start..N.
        let tagged = n - l.data.start;
        let per = p / 8;
        assert!(l.tag_table.blocks * per >= tagged);
        // ... and one block fewer would not do (it would free one more block
        // to tag).
        assert!((l.tag_table.blocks - 1) * per < tagged + 1);
        assert!(l.data.blocks >= MIN_DATA_BLOCKS);
        assert_eq!(l.data.end(), n - 1);
    }

    fn layout_for(bytes: u64, block_size: u32) -> Layout {
        let geometry = Geometry::new(Geometry::device_blocks_for(bytes, block_size), block_size);
        let l = Layout::compute(&geometry).unwrap();
        check_layout(&l);
        assert_eq!(l.journal.blocks, default_journal_blocks(l.device_blocks));
        l
    }

    #[test]
    fn sixteen_mib_with_4k_blocks() {
        let l = layout_for(16 * MIB, 4096);
        assert_eq!(l.device_blocks, 4096);
        assert_eq!(l.journal.blocks, 1024); // 4096/256 = 16, clamped up
        assert_eq!(
            l.block_bitmap,
            Region {
                start: 1026,
                blocks: 1
            }
        );
        assert_eq!(
            l.inode_bitmap,
            Region {
                start: 1027,
                blocks: 1
            }
        );
        // 16 MiB / 16 KiB = 1024 inodes, 15 per block → 69 blocks, rounded up
        // to fill them: 1035 inodes.
        assert_eq!(l.inode_count, 1035);
        assert_eq!(
            l.inode_table,
            Region {
                start: 1028,
                blocks: 69
            }
        );
        // 4096 − 1097 = 2999 blocks to tag at 506 per block (+1 for itself).
        assert_eq!(
            l.tag_table,
            Region {
                start: 1097,
                blocks: 6
            }
        );
        assert_eq!(
            l.data,
            Region {
                start: 1103,
                blocks: 4096 - 1 - 1103
            }
        );
    }

    #[test]
    fn one_gib_and_hundred_gib_with_4k_blocks() {
        let l = layout_for(GIB, 4096);
        assert_eq!(l.journal.blocks, 1024);
        assert_eq!(l.block_bitmap.blocks, 9); // 262144 / 32384
        let l = layout_for(100 * GIB, 4096);
        assert_eq!(l.device_blocks, 26_214_400);
        assert_eq!(l.journal.blocks, 32768); // 102400, clamped down
        assert_eq!(l.inode_count, 6_553_605); // 6553600 rounded up to 15s
    }

    #[test]
    fn small_and_large_block_sizes() {
        let l = layout_for(16 * MIB, 1024);
        assert_eq!(l.payload_len(), 976);
        assert_eq!(l.inodes_per_block(), 3);
        assert_eq!(l.tags_per_block(), 122);
        let l = layout_for(GIB, 65536);
        assert_eq!(l.inodes_per_block(), 255);
        assert_eq!(l.tags_per_block(), 8186);
        let l = layout_for(2 * MIB, 1024);
        assert_eq!(l.inode_count, 129);
    }

    #[test]
    fn explicit_inode_count_and_journal_are_kept() {
        let geometry = Geometry {
            device_blocks: 10_000,
            block_size: 4096,
            inodes: InodeSpec::Count(100),
            journal_blocks: Some(64),
        };
        let l = Layout::compute(&geometry).unwrap();
        check_layout(&l);
        assert_eq!(l.inode_count, 100);
        assert_eq!(l.journal.blocks, 64);
    }

    fn field_of(err: FormatError) -> &'static str {
        err.field().unwrap()
    }

    #[test]
    fn bad_geometries_are_refused_with_the_field_named() {
        for bs in [0, 512, 3000, 4097, 131072] {
            let e = Layout::new(1 << 20, bs, 1000, 1024).unwrap_err();
            assert_eq!(field_of(e), "block_size");
        }
        assert_eq!(
            field_of(Layout::new(1 << 20, 4096, 0, 1024).unwrap_err()),
            "inode_count"
        );
        assert_eq!(
            field_of(Layout::new(1 << 20, 4096, 1, 1024).unwrap_err()),
            "inode_count"
        );
        assert_eq!(
            field_of(Layout::new(1 << 20, 4096, MAX_INODES + 1, 1024).unwrap_err()),
            "inode_count"
        );
        assert_eq!(
            field_of(Layout::new(1 << 20, 4096, 100, 63).unwrap_err()),
            "journal_blocks"
        );
        assert_eq!(
            field_of(Layout::new(1 << 20, 4096, 100, JOURNAL_MAX_BLOCKS + 1).unwrap_err()),
            "journal_blocks"
        );
        for n in [0, 1, 1000, 1100] {
            let e = Layout::new(n, 4096, 100, 1024).unwrap_err();
            assert_eq!(field_of(e), "device_blocks");
        }
        assert_eq!(
            field_of(Layout::new(u64::MAX, 4096, 100, 1024).unwrap_err()),
            "device_blocks"
        );
        // Too many inodes for the device.
        assert_eq!(
            field_of(Layout::new(4096, 4096, 1_000_000, 1024).unwrap_err()),
            "device_blocks"
        );
        let mut g = Geometry::new(1 << 20, 4096);
        g.inodes = InodeSpec::BytesPerInode(100);
        assert_eq!(
            field_of(Layout::compute(&g).unwrap_err()),
            "bytes_per_inode"
        );
    }

    #[test]
    fn smallest_device_is_metadata_plus_minimum_data() {
        let smallest = (1..5000)
            .find(|&n| Layout::new(n, 4096, 100, 1024).is_ok())
            .unwrap();
        let fits = Layout::new(smallest, 4096, 100, 1024).unwrap();
        check_layout(&fits);
        assert_eq!(fits.data.blocks, MIN_DATA_BLOCKS);
        // 2 + 1024 + 1 + 1 + 7 = 1035 metadata blocks, 1 tag block, 64
        // data blocks, 1 backup superblock.
        assert_eq!(smallest, 1035 + 1 + 64 + 1);
    }

    #[test]
    fn inode_lookups() {
        let l = Layout::new(100_000, 1024, 10, 1024).unwrap();
        let t = l.inode_table.start;
        assert_eq!(
            l.inode_location(1).unwrap(),
            SlotLocation {
                block: t,
                offset: 0
            }
        );
        assert_eq!(
            l.inode_location(3).unwrap(),
            SlotLocation {
                block: t,
                offset: 512
            }
        );
        assert_eq!(
            l.inode_location(4).unwrap(),
            SlotLocation {
                block: t + 1,
                offset: 0
            }
        );
        assert_eq!(
            l.inode_location(10).unwrap(),
            SlotLocation {
                block: t + 3,
                offset: 0
            }
        );
        assert!(l.inode_location(0).is_err());
        assert!(l.inode_location(11).is_err());
        let b = l.inode_bitmap_bit(10).unwrap();
        assert_eq!((b.block, b.byte, b.bit), (l.inode_bitmap.start, 1, 1));
        assert!(l.inode_bitmap_bit(0).is_err());
    }

    #[test]
    fn tag_and_block_bitmap_lookups() {
        let l = Layout::new(100_000, 1024, 10, 1024).unwrap();
        let d = l.data.start;
        let t = l.tag_table.start;
        assert_eq!(
            l.tag_location(d).unwrap(),
            SlotLocation {
                block: t,
                offset: 0
            }
        );
        assert_eq!(
            l.tag_location(d + 121).unwrap(),
            SlotLocation {
                block: t,
                offset: 968
            }
        );
        assert_eq!(
            l.tag_location(d + 122).unwrap(),
            SlotLocation {
                block: t + 1,
                offset: 0
            }
        );
        let last = l.tag_location(99_999).unwrap();
        assert!(l.tag_table.contains(last.block));
        assert!(l.tag_location(d - 1).is_err());
        assert!(l.tag_location(100_000).is_err());
        // Item m·8P + 8j + k is bit k of byte j of bitmap block m.
        let item = 7808 + 8 * 5 + 3;
        let b = l.block_bitmap_bit(item).unwrap();
        assert_eq!((b.block, b.byte, b.bit), (l.block_bitmap.start + 1, 5, 3));
        assert_eq!(b.bit_in_block(), 43);
        assert!(l.block_bitmap_bit(100_000).is_err());
        assert_eq!(l.valid_bits_in_bitmap_block(100_000, 0), 7808);
        assert_eq!(
            l.valid_bits_in_bitmap_block(100_000, 12),
            100_000 - 12 * 7808
        );
        assert_eq!(l.valid_bits_in_bitmap_block(100_000, 13), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn any_accepted_layout_tiles_the_device(
            n in 0u64..(1u64 << 40),
            shift in 9u32..18,
            inodes in 0u64..5_000_000,
            journal in 0u64..40_000,
        ) {
            if let Ok(l) = Layout::new(n, 1 << shift, inodes, journal) {
                check_layout(&l);
                let last = l.inode_location(l.inode_count).unwrap();
                prop_assert!(l.inode_table.contains(last.block));
                let last = l.tag_location(n - 1).unwrap();
                prop_assert!(l.tag_table.contains(last.block));
                let last = l.block_bitmap_bit(n - 1).unwrap();
                prop_assert!(l.block_bitmap.contains(last.block));
                let last = l.inode_bitmap_bit(l.inode_count).unwrap();
                prop_assert!(l.inode_bitmap.contains(last.block));
            }
        }
    }
}
