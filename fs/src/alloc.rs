//! Block and inode allocation.
//!
//! (The allocator itself is being built; this file fixes the interface the
//! directory, extent and xattr code allocate their metadata blocks through.)

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
