//! Symlink targets (§5): inline in the inode up to 128 bytes, else the
//! "overflow" form, one kind-13 metadata block holding the target.
//!
//! What it promises: [`Fs::create_symlink`] makes a symlink inode with its
//! target in one transaction (nothing left allocated on error); targets are
//! 1 … min(4095, P) bytes (`NameTooLong` beyond, `Invalid` when empty or
//! holding a NUL); [`Fs::readlink`] returns the target, reading the
//! overflow block with the generation the inode records. The overflow
//! block is freed with the inode (`reclaim.rs`).
//!
//! Relies on: the block allocator, `meta.rs` and the inode life cycle.

use super::inode::InodeCell;
use super::lifecycle::new_inode;
use super::meta::{init_meta, payload, payload_mut, read_meta};
use super::Fs;
use crate::alloc::MetaAllocator;
use crate::error::{FsError, FsResult};
use crate::format::header::BlockKind;
use crate::format::inode::{decode_overflow, encode_overflow, INLINE_MAX, SYMLINK_MAX};
use crate::format::{BlockRef, DataArea, FileType};
use crate::journal::TxHandle;
use std::sync::Arc;

impl Fs {
    /// Longest symlink target this filesystem stores.
    pub fn symlink_max(&self) -> usize {
        SYMLINK_MAX.min(self.layout.payload_len())
    }

    /// Creates a symlink inode (mode 0777, one link) pointing at `target`.
    pub fn create_symlink(
        &self,
        tx: &TxHandle<'_>,
        target: &[u8],
        uid: u32,
        gid: u32,
        parent: u64,
    ) -> FsResult<Arc<InodeCell>> {
        self.check_writable()?;
        if target.is_empty() || target.contains(&0) {
            return Err(FsError::Invalid(
                "empty symlink target or one with a NUL".into(),
            ));
        }
        if target.len() > self.symlink_max() {
            return Err(FsError::NameTooLong);
        }
        let mut inode = new_inode(FileType::Symlink, 0o777, uid, gid);
        inode.size = target.len() as u64;
        if target.len() <= INLINE_MAX {
            inode.data = DataArea::Inline(target.to_vec());
            return self.install_inode(tx, parent, inode);
        }
        let block = self.blocks.alloc_meta(tx, self.layout.data.start)?;
        let stored = (|| {
            let mut image = vec![0u8; self.layout.payload_len()];
            encode_overflow(target, &mut image)?;
            let buf = init_meta(&self.cache, tx, block, BlockKind::Overflow)?;
            payload_mut(&mut tx.write(&buf)).copy_from_slice(&image);
            Ok::<(), FsError>(())
        })();
        if let Err(e) = stored {
            let _ = self.blocks.unalloc_blocks(tx, block, 1);
            return Err(e);
        }
        inode.data = DataArea::Overflow(BlockRef {
            block,
            generation: tx.seq(),
        });
        inode.blocks = 1;
        match self.install_inode(tx, parent, inode) {
            Ok(cell) => Ok(cell),
            Err(e) => {
                tx.revoke(block);
                let _ = self.blocks.unalloc_blocks(tx, block, 1);
                Err(e)
            }
        }
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        if state.file_type != FileType::Symlink {
            return Err(FsError::Invalid("not a symlink".into()));
        }
        match &state.data {
            DataArea::Inline(bytes) => Ok(bytes.clone()),
            DataArea::Overflow(r) => {
                let buf = read_meta(
                    &self.cache,
                    r.block,
                    BlockKind::Overflow,
                    Some(r.generation),
                )?;
                let data = buf.data();
                Ok(decode_overflow(payload(&data), state.size)?.to_vec())
            }
            _ => Err(FsError::Corrupt(format!(
                "symlink {ino} has neither an inline nor an overflow target"
            ))),
        }
    }
}
