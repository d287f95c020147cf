//! Reading and writing one directory tree block: a leaf (kind 10) or a node
//! (kind 11), decoded through `format::dir`.
//!
//! A block is accepted only with the kind, generation and level its parent
//! implies (a node at tree level `l` has level `l`, its children level
//! `l − 1`, leaves 0), so a descent is bounded by the depth in the inode
//! whatever the disk holds. Nothing returned holds a buffer: blocks are
//! decoded copies, and writes encode into a scratch payload first so that a
//! value the format refuses never reaches a block.

use crate::error::{corrupt, FsResult};
use crate::format::{BlockKind, BlockRef, DirLeaf, DirNode};
use crate::meta_tx::{read_block, MetaTx};
use keelfs_engine::bufio::Bufio;

/// A decoded tree block.
pub(crate) enum Block {
    Leaf(DirLeaf),
    Node(DirNode),
}

/// The block at `at`, which the tree places at `level` (0 = leaf).
pub(crate) fn load(cache: &Bufio, at: BlockRef, level: u16) -> FsResult<Block> {
    if level == 0 {
        return Ok(Block::Leaf(load_leaf(cache, at)?));
    }
    Ok(Block::Node(load_node(cache, at, level)?))
}

/// The leaf at `at`, its next-leaf pointer dropped (never followed, see
/// the module doc; rewritten as 0 when the leaf is stored).
pub(crate) fn load_leaf(cache: &Bufio, at: BlockRef) -> FsResult<DirLeaf> {
    let payload = read_block(cache, at, BlockKind::DirLeaf)?;
    let mut leaf = DirLeaf::decode(&payload)?;
    leaf.next = None;
    Ok(leaf)
}

/// The node at `at`, which must have level `level`.
pub(crate) fn load_node(cache: &Bufio, at: BlockRef, level: u16) -> FsResult<DirNode> {
    let payload = read_block(cache, at, BlockKind::DirNode)?;
    let node = DirNode::decode(&payload)?;
    if node.level != level {
        return Err(corrupt!(
            "directory node {} has level {}, its place in the tree is level {level}",
            at.block,
            node.level
        ));
    }
    Ok(node)
}

/// Writes `leaf` into `block`, whose generation is `current` (`None`:
/// freshly allocated). Leaves built here never carry a next pointer.
pub(crate) fn store_leaf(
    mt: &MetaTx<'_, '_>,
    block: u64,
    current: Option<u64>,
    leaf: &DirLeaf,
) -> FsResult<BlockRef> {
    debug_assert!(leaf.next.is_none());
    let mut payload = vec![0u8; mt.payload_len()];
    leaf.encode(&mut payload)?;
    mt.write(block, current, BlockKind::DirLeaf, &payload)
}

/// Writes `node` into `block` (generation `current`, `None` if fresh).
pub(crate) fn store_node(
    mt: &MetaTx<'_, '_>,
    block: u64,
    current: Option<u64>,
    node: &DirNode,
) -> FsResult<BlockRef> {
    let mut payload = vec![0u8; mt.payload_len()];
    node.encode(&mut payload)?;
    mt.write(block, current, BlockKind::DirNode, &payload)
}

/// Allocates a block near `goal` and writes `leaf` into it.
pub(crate) fn new_leaf(mt: &MetaTx<'_, '_>, goal: u64, leaf: &DirLeaf) -> FsResult<BlockRef> {
    let block = mt.alloc_block(goal)?;
    store_leaf(mt, block, None, leaf)
}

/// Allocates a block near `goal` and writes `node` into it.
pub(crate) fn new_node(mt: &MetaTx<'_, '_>, goal: u64, node: &DirNode) -> FsResult<BlockRef> {
    let block = mt.alloc_block(goal)?;
    store_node(mt, block, None, node)
}
