//! The inode allocator: the §3 inode bitmap (item n − 1 is inode n).
//!
//! What it promises (on top of `groups.rs`: claims, per-group locks, frees
//! pending until commit):
//!
//! * [`InodeAllocator::alloc_inode`] returns a free inode number near the
//!   goal whose inode-table block is ready: mkfs leaves every inode-table
//!   block but the first zeroed ("never written", `EngineError::Unwritten`),
//!   and the first allocation in such a block initialises it in the
//!   caller's transaction (a zeroed payload is every slot free with
//!   generation 0). It does so only when the bitmap says no inode of that
//!   block is in use; otherwise the block was lost and that is
//!   [`FsError::Corrupt`], never silently re-initialised.
//! * A bit is set only after its table block is known to be initialised,
//!   so "bit set" always implies "table block written"; the initialisation
//!   itself is serialised by one mutex (`table_init`) and re-checked under
//!   it, so two allocators in neighbouring groups never both initialise a
//!   block that straddles them.
//!
//! LOCK ORDER: group mutex, then `table_init`, then buffer guards. The
//! check of the other inodes of a block reads bitmap blocks without taking
//! their group mutexes (a reader sees a consistent block through its guard,
//! and no allocator sets a bit of an uninitialised block).

use super::groups::GroupedBitmap;
use crate::core::meta::{init_meta, read_meta};
use crate::error::{FsError, FsResult};
use crate::format::header::BlockKind;
use crate::format::Layout;
use crate::journal::TxHandle;
use keelfs_engine::bufio::Bufio;
use keelfs_engine::EngineError;
use parking_lot::Mutex;
use std::sync::Arc;

/// The inode allocator. See the module docs.
pub struct InodeAllocator {
    bits: GroupedBitmap,
    cache: Arc<Bufio>,
    layout: Layout,
    table_init: Mutex<()>,
}

impl InodeAllocator {
    /// Opens the inode bitmap of `layout` (reads every bitmap block once to
    /// count free inodes).
    pub fn open(cache: Arc<Bufio>, layout: &Layout) -> FsResult<InodeAllocator> {
        let bits = GroupedBitmap::open(
            cache.clone(),
            BlockKind::InodeBitmap,
            layout.inode_bitmap.start,
            layout.inode_bitmap.blocks,
            layout.inode_count,
            layout.bits_per_bitmap_block(),
        )?;
        Ok(InodeAllocator {
            bits,
            cache,
            layout: *layout,
            table_init: Mutex::new(()),
        })
    }

    /// Free inodes (those freed by transactions not yet durable included).
    pub fn free_inodes(&self) -> u64 {
        self.bits.clear_count()
    }

    /// Inodes that can be allocated now.
    pub fn available(&self) -> u64 {
        self.bits.available()
    }

    /// Allocates a free inode at or after `goal` (wrapping round) and makes
    /// sure its inode-table block is initialised. `NoSpace` when every
    /// inode is in use.
    pub fn alloc_inode(&self, tx: &TxHandle<'_>, goal: u64) -> FsResult<u64> {
        let mut claim = self.bits.claim(1)?;
        let goal_item = goal.saturating_sub(1);
        let (item, _) = self
            .bits
            .alloc_run(tx, &mut claim, goal_item, 1, &mut |item, _| {
                self.ensure_table_block(tx, item + 1)
            })?;
        Ok(item + 1)
    }

    /// Frees inode `ino` in `tx`; reusable once `tx` is durable.
    pub fn free_inode(&self, tx: &TxHandle<'_>, ino: u64) -> FsResult<()> {
        self.check(ino)?;
        self.bits.free(tx, ino - 1, 1)
    }

    /// Gives back an inode allocated in the running transaction and never
    /// published: reusable at once.
    pub fn unalloc_inode(&self, tx: &TxHandle<'_>, ino: u64) -> FsResult<()> {
        self.check(ino)?;
        self.bits.unalloc(tx, ino - 1, 1)
    }

    /// Whether inode `ino` is in use.
    pub fn is_allocated(&self, ino: u64) -> FsResult<bool> {
        self.check(ino)?;
        self.bits.is_set(ino - 1)
    }

    fn check(&self, ino: u64) -> FsResult<()> {
        if ino == 0 || ino > self.layout.inode_count {
            return Err(FsError::Invalid(format!(
                "inode {ino} outside 1..={}",
                self.layout.inode_count
            )));
        }
        Ok(())
    }

    /// Initialises the inode-table block of `ino` if it was never written
    /// and no inode of it is in use.
    fn ensure_table_block(&self, tx: &TxHandle<'_>, ino: u64) -> FsResult<()> {
        let block = self.layout.inode_location(ino)?.block;
        match read_meta(&self.cache, block, BlockKind::InodeTable, None) {
            Ok(_) => return Ok(()),
            Err(FsError::Engine(EngineError::Unwritten { .. })) => {}
            Err(e) => return Err(e),
        }
        let _init = self.table_init.lock();
        match read_meta(&self.cache, block, BlockKind::InodeTable, None) {
            Ok(_) => return Ok(()),
            Err(FsError::Engine(EngineError::Unwritten { .. })) => {}
            Err(e) => return Err(e),
        }
        let per_block = self.layout.inodes_per_block();
        let first = (block - self.layout.inode_table.start) * per_block + 1;
        let last = (first + per_block - 1).min(self.layout.inode_count);
        for other in first..=last {
            if other != ino && self.bits.is_set(other - 1)? {
                return Err(FsError::Corrupt(format!(
                    "inode-table block {block} was never written, but inode {other} in it is in use"
                )));
            }
        }
        init_meta(&self.cache, tx, block, BlockKind::InodeTable)?;
        Ok(())
    }
}
