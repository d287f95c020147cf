//! The block allocator: the §3 block bitmap, for file data and for every
//! dynamically placed metadata block.
//!
//! What it promises (on top of `groups.rs`: claims, per-group locks, frees
//! pending until commit):
//!
//! * only blocks of the data area (`data_start` … N−2) are handed out; a
//!   bitmap that says a block outside it is free is [`FsError::Corrupt`];
//! * [`BlockAllocator::alloc_blocks`] returns the first run of free blocks
//!   at or after the goal, up to `want` long: a caller that passes "just
//!   after the file's previous block" as the goal gets contiguous files;
//! * freeing a metadata block ([`MetaAllocator::free_meta`]) revokes it in
//!   the journal before giving it back.
//!
//! What it relies on: the layout (§3), bufio and the journal.

use super::groups::{Claim, GroupedBitmap};
use super::MetaAllocator;
use crate::error::{FsError, FsResult};
use crate::format::header::BlockKind;
use crate::format::Layout;
use crate::journal::TxHandle;
use keelfs_engine::bufio::Bufio;
use std::sync::Arc;

/// The block allocator. See the module docs.
pub struct BlockAllocator {
    bits: GroupedBitmap,
    layout: Layout,
}

impl BlockAllocator {
    /// Opens the block bitmap of `layout` (reads every bitmap block once to
    /// count free blocks).
    pub fn open(cache: Arc<Bufio>, layout: &Layout) -> FsResult<BlockAllocator> {
        let bits = GroupedBitmap::open(
            cache,
            BlockKind::BlockBitmap,
            layout.block_bitmap.start,
            layout.block_bitmap.blocks,
            layout.device_blocks,
            layout.bits_per_bitmap_block(),
        )?;
        Ok(BlockAllocator {
            bits,
            layout: *layout,
        })
    }

    /// Allocation groups (bitmap blocks).
    pub fn groups(&self) -> usize {
        self.bits.groups()
    }

    /// Blocks per allocation group.
    pub fn blocks_per_group(&self) -> u64 {
        self.layout.bits_per_bitmap_block()
    }

    /// Free blocks, those freed by transactions not yet durable included
    /// (what the superblock summary records).
    pub fn free_blocks(&self) -> u64 {
        self.bits.clear_count()
    }

    /// Blocks that can be allocated now.
    pub fn available(&self) -> u64 {
        self.bits.available()
    }

    /// Reserves exactly `n` blocks for later `alloc_claimed` calls, or fails
    /// with `NoSpace` reserving nothing.
    pub fn claim(&self, n: u64) -> FsResult<Claim<'_>> {
        self.bits.claim(n)
    }

    /// Reserves between 1 and `n` blocks.
    pub fn claim_up_to(&self, n: u64) -> FsResult<Claim<'_>> {
        self.bits.claim_up_to(n)
    }

    fn clamp_goal(&self, goal: u64) -> u64 {
        if self.layout.is_data_block(goal) {
            goal
        } else {
            self.layout.data.start
        }
    }

    /// Allocates a run of at most `want` blocks (and at most what `claim`
    /// holds) at or after `goal`, from the claim: (first, count).
    pub fn alloc_claimed(
        &self,
        tx: &TxHandle<'_>,
        claim: &mut Claim<'_>,
        goal: u64,
        want: u64,
    ) -> FsResult<(u64, u64)> {
        let data = self.layout.data;
        self.bits.alloc_run(
            tx,
            claim,
            self.clamp_goal(goal),
            want,
            &mut |first, count| {
                if data.contains(first) && data.contains(first + count - 1) {
                    Ok(())
                } else {
                    Err(FsError::Corrupt(format!(
                        "block bitmap: blocks {first}+{count} outside the data area are marked free"
                    )))
                }
            },
        )
    }

    /// Allocates a run of 1 ..= `want` blocks at or after `goal`:
    /// (first, count). `NoSpace` when no block is free.
    pub fn alloc_blocks(&self, tx: &TxHandle<'_>, goal: u64, want: u64) -> FsResult<(u64, u64)> {
        let mut claim = self.bits.claim_up_to(want)?;
        self.alloc_claimed(tx, &mut claim, goal, want)
    }

    /// Frees `count` blocks from `first` in `tx`; they are reusable once
    /// `tx` is durable.
    pub fn free_blocks_in(&self, tx: &TxHandle<'_>, first: u64, count: u64) -> FsResult<()> {
        self.check_data(first, count)?;
        self.bits.free(tx, first, count)
    }

    /// Gives back blocks allocated in the running transaction that nothing
    /// durable refers to (an operation that failed half-way): reusable at
    /// once.
    pub fn unalloc_blocks(&self, tx: &TxHandle<'_>, first: u64, count: u64) -> FsResult<()> {
        self.check_data(first, count)?;
        self.bits.unalloc(tx, first, count)
    }

    /// Whether `block` is marked in use.
    pub fn is_allocated(&self, block: u64) -> FsResult<bool> {
        self.bits.is_set(block)
    }

    fn check_data(&self, first: u64, count: u64) -> FsResult<()> {
        let data = self.layout.data;
        let ok = count > 0
            && data.contains(first)
            && first
                .checked_add(count - 1)
                .is_some_and(|last| data.contains(last));
        if ok {
            Ok(())
        } else {
            Err(FsError::Corrupt(format!(
                "freeing blocks {first}+{count}, not within the data area"
            )))
        }
    }
}

impl MetaAllocator for BlockAllocator {
    fn alloc_meta(&self, tx: &TxHandle<'_>, goal: u64) -> FsResult<u64> {
        self.alloc_blocks(tx, goal, 1).map(|(block, _)| block)
    }

    fn free_meta(&self, tx: &TxHandle<'_>, block: u64) -> FsResult<()> {
        self.check_data(block, 1)?;
        tx.revoke(block);
        self.bits.free(tx, block, 1)
    }
}
