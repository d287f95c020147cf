//! Formatting a set of legs: the library behind `mkfs.keelfs`.
//!
//! What [`format`] promises:
//!
//! * Every device given becomes a mirror leg (member i = `devices[i]`).
//!   All legs must hold the same number of whole blocks (sizes rounded down
//!   to blocks, no tolerance: unequal legs are refused with every size
//!   named) and be large enough for the §3 layout (refused with the
//!   minimum size for the options given). Nothing is written before every
//!   check has passed; [`MkfsOptions::dry_run`] stops there and returns
//!   the superblock that would be written.
//! * Before anything is written, the whole fixed metadata area (blocks
//!   0 … data_start−1: superblock, journal, bitmaps, inode table, tag
//!   table) and the last 128 KiB of every leg (the backup superblock and
//!   every place [`read_superblock`](crate::devset::read_superblock) looks
//!   for one) are zeroed with [`Device::write_zeroes`], so no block of an
//!   earlier filesystem can ever be read as ours. On image files that
//!   punches holes, so a sparse image stays sparse and formats in a
//!   fraction of a second whatever its size; on block devices it is
//!   BLKZEROOUT.
//! * Then, sealed through [`Volume::write_meta_run`] with header
//!   generation 1: the journal superblock (empty, next sequence 2), every
//!   block-bitmap block (blocks before data_start, the root directory's
//!   leaf at data_start and block N−1 used; padding set), every
//!   inode-bitmap block (inodes 1 and 2 used; padding set), the
//!   inode-table block holding the root directory (inode 1) and lost+found
//!   (inode 2), and the root directory's one leaf block, which names
//!   lost+found. Every other inode-table block and every tag-table block
//!   stays zeroed, "never written" (`docs/format.md` §3). A flush, then the
//!   superblocks (each leg its own copy, primaries, flush, backups, flush),
//!   so a crash before the end leaves no valid superblock at all.
//! * A write that fails on any leg fails the whole format with the
//!   device named ([`DevSetError::WriteFailed`]).
//!
//! What it relies on: exclusive access to the devices (the caller holds
//! them open, `mkfs.keelfs` under `flock`); the [`format`](crate::format)
//! codecs; the engine's `Volume` for sealing and mirrored writes and
//! [`write_superblock_copies`] for the per-leg superblocks.

use crate::devset::{random_uuid, write_superblock_copies, DevSetError};
use crate::error::FsError;
use crate::format::bitmap::{set_padding, set_range};
use crate::format::dir::dir_key;
use crate::format::header::BlockKind;
use crate::format::layout::{check_block_size, InodeSpec, DEFAULT_BLOCK_SIZE};
use crate::format::superblock::{SuperblockState, LOST_FOUND_INODE, MAX_MEMBERS, ROOT_INODE};
use crate::format::{
    BlockRef, DataArea, DirEntry, DirLeaf, DirRoot, FileType, FormatError, Geometry, Inode,
    JournalSuperblock, Layout, Problem, Superblock, Timestamp, META_HEADER_LEN,
};
use keelfs_engine::device::{Device, DeviceRef, SECTOR};
use keelfs_engine::integrity::{meta_set_gen, meta_set_kind, Volume};
use keelfs_engine::mirror::{ErrorBits, MirrorSet};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Header generation of every block mkfs writes.
pub const MKFS_GENERATION: u64 = 1;
/// Sequence of the first journal transaction after mkfs.
pub const FIRST_SEQUENCE: u64 = 2;
/// Bytes at the end of every leg that mkfs zeroes (see the module docs).
pub const TAIL_ZERO_BYTES: u64 = 128 * 1024;
/// Permissions of the root directory and lost+found.
pub const DIR_PERMISSIONS: u16 = 0o755;
/// Bitmap blocks written per request.
const BITMAP_BATCH: u64 = 64;

/// What to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkfsOptions {
    /// B, a power of two in 1024 … 65536.
    pub block_size: u32,
    /// I, as a count or a bytes-per-inode ratio.
    pub inodes: InodeSpec,
    /// J, or `None` for the §3 default.
    pub journal_blocks: Option<u64>,
    /// Up to 64 bytes of UTF-8, no NUL.
    pub label: String,
    /// The filesystem uuid; `None` for a random one.
    pub fs_uuid: Option<[u8; 16]>,
    /// Compute and return the superblock, write nothing.
    pub dry_run: bool,
}

impl Default for MkfsOptions {
    fn default() -> MkfsOptions {
        MkfsOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            inodes: InodeSpec::default(),
            journal_blocks: None,
            label: String::new(),
            fs_uuid: None,
            dry_run: false,
        }
    }
}

impl MkfsOptions {
    fn geometry(&self, device_blocks: u64) -> Geometry {
        Geometry {
            device_blocks,
            block_size: self.block_size,
            inodes: self.inodes,
            journal_blocks: self.journal_blocks,
        }
    }

    /// The fewest blocks per leg these options fit in, if any.
    pub fn minimum_blocks(&self) -> Option<u64> {
        // Metadata only grows with N (default journal, inode ratio), so the
        // `need` of a refusal is a lower bound for every larger N as well.
        let mut n = 1u64;
        for _ in 0..256 {
            match Layout::compute(&self.geometry(n)) {
                Ok(_) => return Some(n),
                Err(FormatError::Invalid {
                    field: "device_blocks",
                    problem: Problem::NoRoom { need, .. },
                    ..
                }) => n = need.max(n + 1),
                Err(_) => return None,
            }
        }
        None
    }
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos(),
    }
}

fn names(devices: &[DeviceRef]) -> String {
    devices
        .iter()
        .map(|d| d.name().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the devices and options and computes the superblock `format`
/// would write (member 0's copy, fresh random device uuids). Reads and
/// writes nothing but the devices' sizes.
pub fn plan(devices: &[DeviceRef], opts: &MkfsOptions) -> Result<Superblock, FsError> {
    if devices.is_empty() || devices.len() > MAX_MEMBERS {
        return Err(DevSetError::LegCount {
            given: devices.len(),
        }
        .into());
    }
    check_block_size(opts.block_size)?;
    let bs = u64::from(opts.block_size);
    let sizes: Vec<(String, u64, u64)> = devices
        .iter()
        .map(|d| (d.name().to_string(), d.size(), d.size() / bs))
        .collect();
    let n = sizes[0].2;
    if sizes.iter().any(|s| s.2 != n) {
        return Err(DevSetError::UnequalSizes {
            sizes,
            block_size: opts.block_size,
        }
        .into());
    }
    let layout = match Layout::compute(&opts.geometry(n)) {
        Ok(layout) => layout,
        Err(FormatError::Invalid {
            field: "device_blocks",
            problem: Problem::NoRoom { need, .. },
            ..
        }) => {
            return Err(DevSetError::TooSmall {
                device: names(devices),
                size: sizes[0].1,
                blocks: n,
                block_size: opts.block_size,
                min_blocks: opts.minimum_blocks().unwrap_or(need),
            }
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    let member_uuids: Vec<[u8; 16]> = devices.iter().map(|_| random_uuid()).collect();
    let mut sb = Superblock::new(
        layout,
        opts.fs_uuid.unwrap_or_else(random_uuid),
        &member_uuids,
    );
    sb.label = opts.label.clone();
    let t = now();
    sb.created = t.secs.max(0) as u64;
    sb.last_written = sb.created;
    sb.state = SuperblockState {
        clean_unmount: true,
        errors: false,
    };
    // The root directory's leaf takes the first data block.
    sb.free_blocks = layout.data.blocks - 1;
    sb.free_inodes = layout.inode_count - 2;
    for m in &mut sb.members {
        m.last_transaction = MKFS_GENERATION;
    }
    sb.validate()?;
    Ok(sb)
}

/// Formats `devices` as the legs of one new filesystem; see the module
/// documentation. Returns the superblock written (member 0's copy).
pub fn format(devices: &[DeviceRef], opts: &MkfsOptions) -> Result<Superblock, FsError> {
    let sb = plan(devices, opts)?;
    if opts.dry_run {
        return Ok(sb);
    }
    let layout = sb.layout;
    // Build every block before touching a device, so a codec refusal
    // writes nothing.
    let t = Timestamp {
        secs: sb.created as i64,
        nanos: now().nanos,
    };
    let fixed = metadata_blocks(&layout, t)?;
    zero_legs(devices, &layout)?;

    let mirror = Arc::new(MirrorSet::new(devices.to_vec(), layout.block_size)?);
    let volume = Volume::new(mirror.clone(), sb.fs_uuid);
    for (first, mut run, what) in fixed {
        let bits = volume.write_meta_run(first, &mut run)?;
        check_bits(&mirror, bits, what)?;
    }
    let bits = mirror.flush()?;
    check_bits(&mirror, bits, "the metadata (flush)")?;
    let targets: Vec<(usize, u32)> = (0..devices.len()).map(|i| (i, i as u32)).collect();
    let bits = write_superblock_copies(&mirror, &targets, &sb, MKFS_GENERATION)?;
    check_bits(&mirror, bits, "the superblocks")?;
    Ok(sb)
}

fn check_bits(mirror: &MirrorSet, bits: ErrorBits, what: &str) -> Result<(), FsError> {
    if bits.is_clear() {
        return Ok(());
    }
    Err(DevSetError::WriteFailed {
        what: what.to_string(),
        devices: bits
            .legs()
            .filter(|&l| l < mirror.num_legs())
            .map(|l| mirror.leg_device(l).name().to_string())
            .collect(),
    }
    .into())
}

/// Zeroes the metadata area and the tail of every leg, legs in parallel.
fn zero_legs(devices: &[DeviceRef], layout: &Layout) -> Result<(), FsError> {
    let bs = u64::from(layout.block_size);
    let zero = |dev: &dyn Device| -> Result<(), FsError> {
        dev.write_zeroes(0, layout.data.start * bs)?;
        let size = dev.size() - dev.size() % SECTOR;
        let tail = size.saturating_sub(TAIL_ZERO_BYTES) / SECTOR * SECTOR;
        dev.write_zeroes(tail, size - tail)?;
        Ok(())
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .map(|d| s.spawn(move || zero(d.as_ref())))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(FsError::Invalid("zeroing thread panicked".into())))
            })
            .collect::<Result<Vec<()>, FsError>>()
    })?;
    Ok(())
}

/// A block of `kind` with generation 1, payload zero.
fn new_block(layout: &Layout, kind: BlockKind) -> Vec<u8> {
    let mut block = vec![0u8; layout.block_size as usize];
    meta_set_kind(&mut block, kind.to_u16());
    meta_set_gen(&mut block, MKFS_GENERATION);
    block
}

/// Runs of blocks to write: (first block, blocks back to back, what).
type Runs = Vec<(u64, Vec<u8>, &'static str)>;

/// Every block mkfs writes but the superblocks, in runs.
fn metadata_blocks(layout: &Layout, t: Timestamp) -> Result<Runs, FsError> {
    let mut runs: Runs = Vec::new();

    let mut jsb = new_block(layout, BlockKind::JournalSuperblock);
    JournalSuperblock::new(layout, FIRST_SEQUENCE).encode(&mut jsb[META_HEADER_LEN..])?;
    runs.push((layout.journal_superblock, jsb, "the journal superblock"));

    let root_leaf = layout.data.start;
    bitmap_runs(
        layout,
        layout.block_bitmap.start,
        layout.block_bitmap.blocks,
        layout.device_blocks,
        BlockKind::BlockBitmap,
        // Items 0 ..= root_leaf, then N−1.
        &[(0, root_leaf + 1), (layout.backup_superblock, 1)],
        "the block bitmap",
        &mut runs,
    )?;
    bitmap_runs(
        layout,
        layout.inode_bitmap.start,
        layout.inode_bitmap.blocks,
        layout.inode_count,
        BlockKind::InodeBitmap,
        // Items 0 and 1: inodes 1 and 2.
        &[(ROOT_INODE - 1, 2)],
        "the inode bitmap",
        &mut runs,
    )?;

    let mut root = Inode::new(FileType::Directory, DIR_PERMISSIONS);
    root.links = 3; // ".", "..", lost+found's ".."
    root.parent = ROOT_INODE;
    root.blocks = 1;
    root.size = u64::from(layout.block_size);
    root.data = DataArea::Directory(DirRoot {
        root: Some(BlockRef {
            block: root_leaf,
            generation: MKFS_GENERATION,
        }),
        depth: 0,
        entry_count: 1,
    });
    let mut lost_found = Inode::new(FileType::Directory, DIR_PERMISSIONS);
    lost_found.links = 2;
    lost_found.parent = ROOT_INODE;
    for inode in [&mut root, &mut lost_found] {
        inode.atime = t;
        inode.mtime = t;
        inode.ctime = t;
        inode.btime = t;
    }
    let mut table: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (number, inode) in [(ROOT_INODE, &root), (LOST_FOUND_INODE, &lost_found)] {
        let at = layout.inode_location(number)?;
        let block = table
            .entry(at.block)
            .or_insert_with(|| new_block(layout, BlockKind::InodeTable));
        inode.encode(&mut block[META_HEADER_LEN + at.offset..])?;
    }
    for (block, buf) in table {
        runs.push((block, buf, "the inode table"));
    }

    let name = b"lost+found".to_vec();
    let leaf = DirLeaf {
        next: None,
        entries: vec![DirEntry {
            key: dir_key(&name, 0),
            inode: LOST_FOUND_INODE,
            file_type: FileType::Directory,
            name,
        }],
    };
    let mut leaf_block = new_block(layout, BlockKind::DirLeaf);
    leaf.encode(&mut leaf_block[META_HEADER_LEN..])?;
    runs.push((root_leaf, leaf_block, "the root directory"));
    Ok(runs)
}

/// The blocks of a bitmap of `items` items at `start` (`blocks` long), with
/// the item ranges `used` (first, count) set and the padding set, in runs
/// of up to [`BITMAP_BATCH`] blocks.
#[allow(clippy::too_many_arguments)]
fn bitmap_runs(
    layout: &Layout,
    start: u64,
    blocks: u64,
    items: u64,
    kind: BlockKind,
    used: &[(u64, u64)],
    what: &'static str,
    runs: &mut Runs,
) -> Result<(), FsError> {
    let bits = layout.bits_per_bitmap_block();
    let bs = layout.block_size as usize;
    let mut index = 0;
    while index < blocks {
        let batch = (blocks - index).min(BITMAP_BATCH);
        let mut run = Vec::with_capacity(batch as usize * bs);
        for m in index..index + batch {
            let mut block = new_block(layout, kind);
            let payload = &mut block[META_HEADER_LEN..];
            let first_item = m * bits;
            for &(first, count) in used {
                let lo = first.max(first_item);
                let hi = (first + count).min(first_item + bits).min(items);
                if lo < hi {
                    set_range(payload, (lo - first_item) as usize, (hi - lo) as usize)?;
                }
            }
            set_padding(payload, layout.valid_bits_in_bitmap_block(items, m));
            run.extend_from_slice(&block);
        }
        runs.push((start + index, run, what));
        index += batch;
    }
    Ok(())
}
