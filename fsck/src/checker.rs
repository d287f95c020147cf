//! The state of one check: the set being checked, what the passes learnt
//! about it (the *model*: which blocks and inodes are in use, every inode's
//! trees, every directory's entries), the [`Report`] of what is wrong, and
//! the repair [`Plan`].
//!
//! How the passes share the work (each in its own file, as `impl Checker`):
//!
//! 1. `superblock.rs`: every leg's primary and backup superblock, the set.
//! 2. `journal.rs`: the journal superblock and whether the ring holds
//!    committed transactions.
//! 3. `bitmaps.rs` (`load_bitmaps`), `inodes.rs` (`scan_inode_table`): the
//!    fixed regions, every block on every leg (`metadata.rs`).
//! 4. `walk.rs`: every in-use inode's trees, through `extents.rs`,
//!    `dirs.rs`, `xattrs.rs`, `symlinks.rs`: every reachable metadata
//!    block on every leg, claims of blocks.
//! 5. `extents.rs` (`claim_data`): data extents, cross-claimed blocks.
//! 6. `data.rs`: the tag table and every written data block on every leg.
//! 7. `orphans.rs`, `links.rs`: the orphan list, the namespace (entries,
//!    `..`, reachability, lost+found), link counts.
//! 8. `inodes.rs` (`check_inode_sizes`), `bitmaps.rs` (`check_bitmaps`,
//!    `check_counts`).
//!
//! The model records what *should* be: an inode's `inode` field is its
//! desired value (its `original` what the disk holds), a directory whose
//! `dir_rebuild` is set gets a fresh tree with `entries`, a file whose
//! `extents_rebuild` is set a fresh extent tree. `repair.rs` makes the disk
//! agree; the passes only read. Memory is O(blocks/8 + inodes in use +
//! directory entries).

use crate::bits::Bits;
use crate::options::Mode;
use crate::progress::Progress;
use crate::report::Report;
use keelfs_engine::integrity::Tag;
use keelfs_engine::mirror::MirrorSet;
use keelfs_engine::EngineError;
use keelfs_fs::devset::DeviceSet;
use keelfs_fs::error::FsError;
use keelfs_fs::format::extent::ExtentLeaf;
use keelfs_fs::format::{DirEntry, Inode, JournalSuperblock, Layout, Superblock};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// An error that stops fsck itself (exit status 8), as opposed to a
/// problem of the filesystem (a [`crate::report::Finding`]).
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    /// Opening or identifying the devices failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The engine refused a request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A repair write reached none of the legs it was aimed at.
    #[error("writing {what} failed: {detail}")]
    WriteFailed { what: String, detail: String },
}

impl From<keelfs_fs::format::FormatError> for FsckError {
    fn from(e: keelfs_fs::format::FormatError) -> FsckError {
        FsckError::Fs(FsError::Format(e))
    }
}

/// What becomes of an inode slot that holds an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// In use and kept.
    Keep,
    /// Freed: its slot is cleared, its blocks released, entries naming it
    /// dropped.
    Clear,
    /// The slot holds an inode but the inode bitmap says free: kept only if
    /// some directory entry names it, cleared otherwise.
    Candidate,
}

/// A data extent of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    pub leaf: ExtentLeaf,
    /// Its blocks belong to another file too: repair copies them to new
    /// blocks for this one.
    pub clone: bool,
}

/// Everything known about one inode that holds an inode (in use, or a
/// candidate).
#[derive(Debug, Clone)]
pub struct InodeRec {
    /// As on disk (after salvage of bad fields, see `inodes.rs`).
    pub original: Inode,
    /// As it should be.
    pub inode: Inode,
    /// Its inode-bitmap bit on disk.
    pub in_bitmap: bool,
    pub fate: Fate,
    /// Made by fsck (a new root or lost+found): there is no slot to read.
    pub created: bool,
    /// The slot did not decode as it was and must be rewritten.
    pub salvaged: bool,
    /// Its trees were walked.
    pub walked: bool,
    /// Extent index and leaf blocks (kind 9).
    pub extent_nodes: Vec<u64>,
    /// Data extents, sorted by logical block.
    pub extents: Vec<FileExtent>,
    /// The extent tree must be rebuilt from `extents`.
    pub extents_rebuild: bool,
    /// Directory leaves and nodes.
    pub dir_blocks: Vec<u64>,
    /// Directory entries, sorted by key.
    pub entries: Vec<DirEntry>,
    /// The directory tree must be rebuilt from `entries`.
    pub dir_rebuild: bool,
    /// Xattr chain blocks.
    pub xattr_blocks: Vec<u64>,
    /// Symlink overflow block.
    pub overflow_block: Option<u64>,
    /// Directory entries naming it (kept ones, after the namespace pass).
    pub refs: u32,
}

impl InodeRec {
    /// A record for an inode found on disk.
    pub fn new(inode: Inode, in_bitmap: bool) -> InodeRec {
        InodeRec {
            original: inode.clone(),
            inode,
            in_bitmap,
            fate: if in_bitmap {
                Fate::Keep
            } else {
                Fate::Candidate
            },
            created: false,
            salvaged: false,
            walked: false,
            extent_nodes: Vec::new(),
            extents: Vec::new(),
            extents_rebuild: false,
            dir_blocks: Vec::new(),
            entries: Vec::new(),
            dir_rebuild: false,
            xattr_blocks: Vec::new(),
            overflow_block: None,
            refs: 0,
        }
    }

    /// Whether the inode stays in use.
    pub fn kept(&self) -> bool {
        self.fate == Fate::Keep
    }

    /// Every metadata block it holds.
    pub fn meta_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        self.extent_nodes
            .iter()
            .chain(&self.dir_blocks)
            .chain(&self.xattr_blocks)
            .chain(&self.overflow_block)
            .copied()
    }

    /// Blocks it holds: data extents (written or not) and metadata blocks.
    pub fn blocks_held(&self) -> u64 {
        let data: u64 = self.extents.iter().map(|e| u64::from(e.leaf.length)).sum();
        data + self.meta_blocks().count() as u64
    }
}

/// How a repair heal checks the copy it copies from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealCheck {
    /// A metadata block (of this generation, if its parent records one).
    Meta(Option<u64>),
    /// A data block with this tag.
    Data(Tag),
}

/// Rewrite `block` on `targets` from the good copy on leg `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heal {
    pub block: u64,
    pub source: usize,
    pub targets: Vec<usize>,
    pub check: HealCheck,
}

/// Changes repair makes besides the inode, directory, extent and bitmap
/// changes the model describes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Bad copies to rewrite from good ones.
    pub heals: Vec<Heal>,
    /// Rewrite every leg's superblocks even if nothing else changes.
    pub superblocks: bool,
    /// Write a fresh journal superblock (the old one is lost).
    pub journal_superblock: bool,
    /// Inode-table blocks with no good copy, rewritten holding free slots.
    pub reset_table_blocks: BTreeSet<u64>,
    /// Slots to clear that are not in use (stale), with the generation to
    /// keep.
    pub clear_slots: BTreeMap<u64, u32>,
    /// New tags for data blocks (of cloned blocks).
    pub tag_updates: BTreeMap<u64, Tag>,
    /// Data blocks whose tags are lost (their tag-table block has no good
    /// copy or was never written): repair recomputes their tags from the
    /// data when every leg holds the same bytes.
    pub recompute_tags: BTreeSet<u64>,
    /// Tag-table blocks with no good copy, rewritten.
    pub reset_tag_blocks: BTreeSet<u64>,
    /// Members to mark in use again (given legs that were failed or
    /// resyncing, now resynced).
    pub members_in_use: Vec<u32>,
    /// The orphan list is emptied.
    pub orphan_list_reset: bool,
    /// Orphans released (for the summary).
    pub orphans_released: u64,
    /// Bits of the bitmap blocks that have no good copy, are unwritten, or
    /// lack their padding: rewritten whatever the comparison says.
    pub block_bitmap_rewrite: BTreeSet<u64>,
    pub inode_bitmap_rewrite: BTreeSet<u64>,
}

/// One check of one set.
pub struct Checker<'a> {
    pub set: &'a DeviceSet,
    pub layout: Layout,
    /// The authoritative superblock.
    pub sb: Superblock,
    /// Its header generation.
    pub sb_gen: u64,
    pub uuid: [u8; 16],
    pub mode: Mode,
    pub progress: &'a Progress,
    pub report: Report,
    pub plan: Plan,
    /// Highest header generation seen anywhere (repairs write above it).
    pub max_gen: u64,
    /// The journal holds committed transactions that were not replayed:
    /// nothing may be repaired.
    pub journal_pending: bool,
    /// The block bitmap as on disk (good copies).
    pub disk_block_bitmap: Bits,
    /// The inode bitmap as on disk; bit `n − 1` is inode `n`.
    pub disk_inode_bitmap: Bits,
    /// Inode-bitmap blocks whose bits are unknown (no good copy, or never
    /// written): the slots decide.
    pub inode_bitmap_unknown: BTreeSet<u64>,
    /// Block-bitmap blocks whose bits are unknown (no good copy, or never
    /// written): not compared, rewritten.
    pub block_bitmap_unknown: BTreeSet<u64>,
    /// Blocks claimed so far: fixed regions, metadata, data.
    pub claimed: Bits,
    /// Blocks claimed as metadata (fixed regions included).
    pub meta_claimed: Bits,
    /// Every inode slot that holds an inode.
    pub inodes: BTreeMap<u64, InodeRec>,
    /// Which inode claimed each dynamic metadata block (for messages).
    pub meta_owner: HashMap<u64, u64>,
    /// The journal superblock, if it has a good copy.
    pub journal_sb: Option<JournalSuperblock>,
    /// The lost+found directory to reconnect into, once known.
    pub lost_found: Option<u64>,
    /// Orphans left pending (check only): in use with no links, named by
    /// no directory, and that is as it should be.
    pub orphans: BTreeSet<u64>,
}

impl<'a> Checker<'a> {
    /// A check of `set` (already identified).
    pub fn new(set: &'a DeviceSet, mode: Mode, progress: &'a Progress) -> Checker<'a> {
        let sb = set.superblock().clone();
        let layout = sb.layout;
        Checker {
            set,
            layout,
            uuid: sb.fs_uuid,
            sb_gen: set.generation(),
            mode,
            progress,
            report: Report::new(),
            plan: Plan::default(),
            max_gen: set.generation(),
            journal_pending: false,
            disk_block_bitmap: Bits::new(layout.device_blocks),
            disk_inode_bitmap: Bits::new(layout.inode_count),
            inode_bitmap_unknown: BTreeSet::new(),
            block_bitmap_unknown: BTreeSet::new(),
            meta_owner: HashMap::new(),
            journal_sb: None,
            orphans: BTreeSet::new(),
            claimed: Bits::new(layout.device_blocks),
            meta_claimed: Bits::new(layout.device_blocks),
            inodes: BTreeMap::new(),
            lost_found: None,
            sb,
        }
    }

    /// The mirror set (per-leg reads and writes).
    pub fn mirror(&self) -> &MirrorSet {
        self.set.mirror()
    }

    /// Number of legs given.
    pub fn leg_count(&self) -> usize {
        self.set.legs().len()
    }

    /// "leg N (device)".
    pub fn leg_name(&self, leg: usize) -> String {
        match self.set.legs().get(leg) {
            Some(l) => format!("{} (member {})", l.name(), l.member),
            None => format!("leg {leg}"),
        }
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> usize {
        self.layout.block_size as usize
    }

    /// Every pass, in order. Returns when the check is complete; a
    /// `FsckError` means it could not be completed.
    pub fn run(&mut self) -> Result<(), FsckError> {
        self.check_superblocks()?;
        self.check_journal()?;
        self.claim_fixed_regions();
        self.load_bitmaps()?;
        self.scan_inode_table()?;
        self.walk_trees()?;
        self.claim_data();
        self.check_data()?;
        self.check_orphans();
        self.check_namespace();
        self.check_inode_sizes();
        self.check_bitmaps();
        self.check_counts();
        self.judge_errors_mark();
        self.progress.finish();
        Ok(())
    }

    /// Claims every block before `data_start` and the backup superblock.
    fn claim_fixed_regions(&mut self) {
        let l = self.layout;
        for bits in [&mut self.claimed, &mut self.meta_claimed] {
            bits.set_range(0, l.data.start);
            bits.set(l.backup_superblock);
        }
    }

    /// The record of inode `ino` if it is kept.
    pub fn kept(&self, ino: u64) -> Option<&InodeRec> {
        self.inodes.get(&ino).filter(|r| r.kept())
    }
}
