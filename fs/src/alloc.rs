//! Block and inode allocation.
//!
//! * [`MetaAllocator`]: the interface tree-structured metadata (directory,
//!   extent and xattr blocks) gets its blocks through.
//! * [`BlockAllocator`] (`alloc/blocks.rs`): the block bitmap, for data and
//!   metadata blocks; goal-directed contiguous runs; implements
//!   [`MetaAllocator`].
//! * [`InodeAllocator`] (`alloc/inodes.rs`): the inode bitmap, initialising
//!   never-written inode-table blocks on first use.
//! * `alloc/groups.rs`: what both stand on, a §3 bitmap split into groups
//!   (one per bitmap block, each with its own mutex), claims, and freed
//!   items that stay unusable until the freeing transaction commits.
//!
//! Every change to a bitmap is part of the caller's transaction. Free
//! counts are kept in memory; the superblock's summary is written from them
//! at sync and unmount.

mod blocks;
mod groups;
mod inodes;

pub use blocks::BlockAllocator;
pub use groups::Claim;
pub use inodes::InodeAllocator;

use crate::error::FsResult;
use crate::journal::TxHandle;

/// Where tree-structured metadata (directory, extent and xattr blocks) gets
/// its blocks. Allocation and freeing are part of the caller's transaction;
/// a freed block is not handed out again before that transaction commits,
/// and freeing a metadata block revokes it in the journal.
pub trait MetaAllocator: Send + Sync {
    /// One free block, as near `goal` as the allocator can manage.
    fn alloc_meta(&self, tx: &TxHandle<'_>, goal: u64) -> FsResult<u64>;
    /// Give `block` back.
    fn free_meta(&self, tx: &TxHandle<'_>, block: u64) -> FsResult<()>;
}
