//! Freeing everything an inode holds, when the inode itself is freed.
//!
//! What it promises: [`free_storage`] gives back, in the caller's
//! transaction, every block the inode points at — file data and extent
//! nodes (regular files), the symlink overflow block, every node and leaf
//! of a directory's B+tree, every block of the xattr chain — and leaves the
//! inode holding nothing (empty data area of its type, no xattrs, block
//! count 0). Freed blocks are reusable once the transaction commits;
//! metadata blocks are revoked.
//!
//! What it relies on: the §6/§8/§9 codecs to find the blocks (each block is
//! read with the generation its parent records), the allocator, and the
//! caller holding the inode's write lock. Chains and trees are walked with
//! a bound on the number of blocks, so a corrupt loop is an error, not a
//! hang.

use super::extent::TreeWriter;
use super::meta::{payload, read_meta};
use super::Fs;
use crate::alloc::MetaAllocator;
use crate::error::{FsError, FsResult};
use crate::format::header::BlockKind;
use crate::format::xattr::decode_xattr_block;
use crate::format::{BlockRef, DataArea, DirNode, DirRoot, ExtentNode, Inode};
use crate::journal::TxHandle;

/// Frees every block `inode` holds; see the module docs.
pub fn free_storage(fs: &Fs, tx: &TxHandle<'_>, inode: &mut Inode) -> FsResult<()> {
    match &mut inode.data {
        DataArea::Extents(root) => {
            let mut tree = TreeWriter::new(fs.cache(), fs.blocks(), tx, 0);
            let removed = tree.remove(root, 0, u64::MAX)?;
            for e in removed {
                fs.blocks()
                    .free_blocks_in(tx, e.physical, u64::from(e.length))?;
            }
            *root = ExtentNode::empty();
        }
        DataArea::Overflow(r) => {
            fs.blocks().free_meta(tx, r.block)?;
            inode.data = DataArea::Inline(Vec::new());
        }
        DataArea::Directory(root) => {
            if let Some(r) = root.root {
                free_dir_tree(fs, tx, r, root.depth)?;
            }
            *root = DirRoot::empty();
        }
        DataArea::Inline(bytes) => bytes.clear(),
        DataArea::None => {}
    }
    if let Some(first) = inode.xattr.take() {
        free_xattr_chain(fs, tx, first)?;
    }
    inode.blocks = 0;
    inode.size = 0;
    Ok(())
}

/// Frees the directory subtree at `node` (`level` 0 = a leaf).
fn free_dir_tree(fs: &Fs, tx: &TxHandle<'_>, node: BlockRef, level: u16) -> FsResult<()> {
    if level > 0 {
        let children = {
            let buf = read_meta(
                fs.cache(),
                node.block,
                BlockKind::DirNode,
                Some(node.generation),
            )?;
            let dir_node = DirNode::decode(payload(&buf.data()))?;
            if dir_node.level != level {
                return Err(FsError::Corrupt(format!(
                    "directory node {} has level {}, its parent expects {level}",
                    node.block, dir_node.level
                )));
            }
            dir_node.entries
        };
        for e in children {
            free_dir_tree(fs, tx, e.child, level - 1)?;
        }
    }
    fs.blocks().free_meta(tx, node.block)
}

/// Frees the xattr chain starting at `first`.
fn free_xattr_chain(fs: &Fs, tx: &TxHandle<'_>, first: BlockRef) -> FsResult<()> {
    let mut next = Some(first);
    let mut count = 0u64;
    while let Some(r) = next {
        count += 1;
        if count > fs.layout().data.blocks {
            return Err(FsError::Corrupt(format!(
                "xattr chain from block {} loops",
                first.block
            )));
        }
        next = {
            let buf = read_meta(fs.cache(), r.block, BlockKind::Xattr, Some(r.generation))?;
            let data = buf.data();
            decode_xattr_block(payload(&data))?.0
        };
        fs.blocks().free_meta(tx, r.block)?;
    }
    Ok(())
}
