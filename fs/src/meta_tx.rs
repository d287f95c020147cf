//! One operation's way of changing tree-structured metadata blocks
//! (directory leaves and nodes, xattr chains): the bufio cache, the journal
//! handle, the allocator, and a count of the blocks allocated and freed.
//!
//! What it promises:
//! * [`MetaTx::read`] returns a block's bytes only if its header carries the
//!   kind and the generation the parent recorded (a cached buffer is checked
//!   too, not just a miss), else `FsError::Corrupt`;
//! * [`MetaTx::write`] changes a block only through the journal
//!   (`TxHandle::write`), writing a whole, already encoded payload in one
//!   go (nothing half-encoded can reach a block), and returns the new
//!   reference: the same block, with the transaction's sequence as its
//!   generation (every structure pointing at it must be updated to it);
//! * allocation and freeing go through the `MetaAllocator` (which revokes
//!   freed blocks in the journal) and are counted, so the caller can adjust
//!   the inode's "blocks held" by [`MetaTx::blocks_delta`];
//! * [`MetaTx::reserve`] allocates all the blocks a change will need before
//!   it writes anything (all or none), so running out of space never leaves
//!   a structure half changed; [`MetaTx::alloc_block`] hands out reserved
//!   blocks first, and [`MetaTx::release_reserve`] gives back the rest.
//!
//! Relies on: the caller holding the lock of the inode whose blocks these
//! are (one writer at a time per tree), and the lock order of the fs core:
//! the journal handle was taken before any inode lock; no buffer guard is
//! kept beyond a single call here.

use crate::alloc::MetaAllocator;
use crate::error::{corrupt, FsResult};
use crate::format::{header, BlockKind, BlockRef, META_HEADER_LEN};
use crate::journal::TxHandle;
use keelfs_engine::bufio::Bufio;
use std::cell::{Cell, RefCell};

/// The cache, journal handle and allocator of one metadata change.
pub struct MetaTx<'a, 'j> {
    pub cache: &'a Bufio,
    pub tx: &'a TxHandle<'j>,
    pub alloc: &'a dyn MetaAllocator,
    allocated: Cell<u64>,
    freed: Cell<u64>,
    /// Blocks allocated ahead by `reserve`, not yet handed out.
    reserved: RefCell<Vec<u64>>,
}

/// Reads `r` and checks its header: kind `kind` and the generation `r`
/// records. Returns the payload (a copy: no buffer guard outlives the call).
pub fn read_block(cache: &Bufio, r: BlockRef, kind: BlockKind) -> FsResult<Vec<u8>> {
    let (found_kind, payload) = read_any_block(cache, r)?;
    if found_kind != kind {
        return Err(corrupt!(
            "block {} is a {:?} block where a {:?} block was expected",
            r.block,
            found_kind,
            kind
        ));
    }
    Ok(payload)
}

/// Reads `r`, checks its generation, and returns its kind and payload.
pub fn read_any_block(cache: &Bufio, r: BlockRef) -> FsResult<(BlockKind, Vec<u8>)> {
    if r.block == 0 || r.block >= cache.num_blocks() {
        return Err(corrupt!(
            "pointer to block {} outside the device ({} blocks)",
            r.block,
            cache.num_blocks()
        ));
    }
    let handle = cache.read_expect(r.block, r.generation)?;
    let data = handle.data();
    let generation = header::block_generation(&data)?;
    if generation != r.generation {
        return Err(corrupt!(
            "block {} has generation {generation}, its parent expects {}",
            r.block,
            r.generation
        ));
    }
    let kind = header::block_kind(&data)?;
    Ok((kind, header::payload(&data)?.to_vec()))
}

impl<'a, 'j> MetaTx<'a, 'j> {
    pub fn new(cache: &'a Bufio, tx: &'a TxHandle<'j>, alloc: &'a dyn MetaAllocator) -> Self {
        MetaTx {
            cache,
            tx,
            alloc,
            allocated: Cell::new(0),
            freed: Cell::new(0),
            reserved: RefCell::new(Vec::new()),
        }
    }

    /// Bytes of a metadata block's payload (P = B − 48).
    pub fn payload_len(&self) -> usize {
        self.cache.block_size().saturating_sub(META_HEADER_LEN)
    }

    /// The generation every block written here gets.
    pub fn generation(&self) -> u64 {
        self.tx.seq()
    }

    /// [`read_block`] through this transaction's cache.
    pub fn read(&self, r: BlockRef, kind: BlockKind) -> FsResult<Vec<u8>> {
        read_block(self.cache, r, kind)
    }

    /// A free block for new metadata: a reserved one if any, else one
    /// allocated near `goal`.
    pub fn alloc_block(&self, goal: u64) -> FsResult<u64> {
        if let Some(block) = self.reserved.borrow_mut().pop() {
            return Ok(block);
        }
        let block = self.alloc.alloc_meta(self.tx, goal)?;
        if block == 0 || block >= self.cache.num_blocks() {
            return Err(corrupt!("allocator returned block {block}"));
        }
        self.allocated.set(self.allocated.get() + 1);
        Ok(block)
    }

    /// Allocates `count` more blocks near `goal` for later `alloc_block`
    /// calls: all of them, or (on an error, typically `NoSpace`) none.
    pub fn reserve(&self, count: usize, goal: u64) -> FsResult<()> {
        let mut got = Vec::with_capacity(count);
        for _ in 0..count {
            match self.alloc.alloc_meta(self.tx, goal) {
                Ok(block) if block != 0 && block < self.cache.num_blocks() => {
                    self.allocated.set(self.allocated.get() + 1);
                    got.push(block);
                }
                outcome => {
                    for &block in &got {
                        self.free_block(block)?;
                    }
                    return Err(match outcome {
                        Err(e) => e,
                        Ok(block) => corrupt!("allocator returned block {block}"),
                    });
                }
            }
        }
        // A stack: blocks reserved earlier are handed out first, then these
        // in allocation order.
        got.reverse();
        let mut reserved = self.reserved.borrow_mut();
        got.append(&mut reserved);
        *reserved = got;
        Ok(())
    }

    /// Frees the reserved blocks not handed out.
    pub fn release_reserve(&self) -> FsResult<()> {
        let left = std::mem::take(&mut *self.reserved.borrow_mut());
        for block in left {
            self.free_block(block)?;
        }
        Ok(())
    }

    /// Gives a metadata block back (the allocator revokes it).
    pub fn free_block(&self, block: u64) -> FsResult<()> {
        self.alloc.free_meta(self.tx, block)?;
        self.freed.set(self.freed.get() + 1);
        Ok(())
    }

    /// Writes `payload` (exactly P bytes) as block `block` of `kind`:
    /// `current` is the generation an existing block has now (it is read,
    /// usually a cache hit), `None` for a block just allocated (not read).
    /// Returns the block's new reference (generation: this transaction).
    pub fn write(
        &self,
        block: u64,
        current: Option<u64>,
        kind: BlockKind,
        payload: &[u8],
    ) -> FsResult<BlockRef> {
        if payload.len() != self.payload_len() {
            return Err(crate::error::FsError::Invalid(format!(
                "metadata payload of {} bytes for blocks of {}",
                payload.len(),
                self.payload_len()
            )));
        }
        let handle = match current {
            Some(generation) => self.cache.read_expect(block, generation)?,
            None => self.cache.new_buf(block)?,
        };
        {
            let mut w = self.tx.write(&handle);
            header::set_block_kind(&mut w, kind)?;
            w[META_HEADER_LEN..].copy_from_slice(payload);
        }
        Ok(BlockRef {
            block,
            generation: self.generation(),
        })
    }

    /// Blocks allocated minus blocks freed so far.
    pub fn blocks_delta(&self) -> i64 {
        self.allocated.get() as i64 - self.freed.get() as i64
    }

    /// Blocks allocated so far.
    pub fn blocks_allocated(&self) -> u64 {
        self.allocated.get()
    }

    /// Blocks freed so far.
    pub fn blocks_freed(&self) -> u64 {
        self.freed.get()
    }
}
