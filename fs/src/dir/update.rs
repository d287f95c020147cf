//! Writing a changed leaf and carrying the change up to the root.
//!
//! An operation changes the leaf of a [`Path`] in memory, then calls
//! [`commit`]. The leaf is settled (written back, split if it overflows,
//! freed if empty, merged with a sibling if under 1/4 full — see the shape
//! policy in the module doc), which yields a [`Change`] for its parent
//! entry; the parent applies it and is settled in turn, and so on up. The
//! walk stops at the first parent whose entry already records the child's
//! new (block, generation): nothing above it changes. At the top the change
//! lands in the [`DirRoot`] (a split root gets a new root node; a root node
//! left with one child is replaced by that child).
//!
//! Every block written gets the transaction's generation, so the parent's
//! entry for it changes: that is why a change always reaches up to the
//! first ancestor already rewritten in this transaction, or to the inode.

use super::path::{Path, Step};
use super::tree::{load_leaf, load_node, new_leaf, new_node, store_leaf, store_node};
use crate::error::{corrupt, FsError, FsResult};
use crate::format::dir::{node_capacity, DIR_MAX_DEPTH, LEAF_HEADER_LEN};
use crate::format::{BlockRef, DirLeaf, DirNode, DirNodeEntry, DirRoot};
use crate::meta_tx::MetaTx;

/// What happened to the child at a parent's current index.
#[derive(Debug)]
enum Change {
    /// Rewritten in place: now at this reference.
    Rewritten(BlockRef),
    /// Split: the child is now `left`, and `right` holds the keys from
    /// `sep` on.
    Split {
        left: BlockRef,
        sep: u64,
        right: BlockRef,
    },
    /// Freed.
    Removed,
    /// The child (at the parent's index) absorbed the next child, which
    /// was freed: it is now at this reference.
    AbsorbedNext(BlockRef),
}

/// Writes the path's changed leaf and carries the change up into `root`.
pub(crate) fn commit(mt: &MetaTx<'_, '_>, root: &mut DirRoot, path: Path) -> FsResult<()> {
    let Path {
        mut steps,
        leaf_at,
        leaf,
    } = path;
    let mut change = settle_leaf(mt, steps.last_mut(), leaf_at, leaf)?;
    // Whether the node last changed lost an entry (a root node that did may
    // be left with a single child).
    let mut lost_entry = false;
    while let Some(mut step) = steps.pop() {
        let i = step.index;
        lost_entry = matches!(change, Change::Removed | Change::AbsorbedNext(_));
        let entries = &mut step.node.entries;
        match change {
            Change::Rewritten(r) => {
                if entries[i].child == r {
                    return Ok(());
                }
                entries[i].child = r;
            }
            Change::Split { left, sep, right } => {
                entries[i].child = left;
                entries.insert(
                    i + 1,
                    DirNodeEntry {
                        min_key: sep,
                        child: right,
                    },
                );
            }
            Change::Removed => {
                entries.remove(i);
            }
            Change::AbsorbedNext(r) => {
                entries[i].child = r;
                entries.remove(i + 1);
            }
        }
        change = settle_node(mt, steps.last_mut(), step)?;
    }
    land_at_root(mt, root, change)?;
    if lost_entry {
        collapse_root(mt, root)?;
    }
    Ok(())
}

/// The top-level change becomes the directory's new root.
fn land_at_root(mt: &MetaTx<'_, '_>, root: &mut DirRoot, change: Change) -> FsResult<()> {
    match change {
        Change::Rewritten(r) => root.root = Some(r),
        Change::Removed => {
            root.root = None;
            root.depth = 0;
        }
        Change::Split { left, sep, right } => {
            if root.depth >= DIR_MAX_DEPTH {
                // Refused before anything was written (`prepare_insert`),
                // so this is a bug, not a full tree.
                return Err(corrupt!(
                    "directory tree would grow past depth {DIR_MAX_DEPTH}"
                ));
            }
            let node = DirNode {
                level: root.depth + 1,
                entries: vec![
                    DirNodeEntry {
                        min_key: 0,
                        child: left,
                    },
                    DirNodeEntry {
                        min_key: sep,
                        child: right,
                    },
                ],
            };
            root.root = Some(new_node(mt, left.block, &node)?);
            root.depth += 1;
        }
        Change::AbsorbedNext(_) => {
            return Err(corrupt!(
                "directory root merged with a sibling it cannot have"
            ));
        }
    }
    Ok(())
}

/// While the root is a node with a single child, that child becomes the
/// root and the node is freed.
fn collapse_root(mt: &MetaTx<'_, '_>, root: &mut DirRoot) -> FsResult<()> {
    while root.depth > 0 {
        let Some(at) = root.root else {
            return Err(corrupt!("directory of depth {} without a root", root.depth));
        };
        let node = load_node(mt.cache, at, root.depth)?;
        if node.entries.len() != 1 {
            break;
        }
        mt.free_block(at.block)?;
        root.root = Some(node.entries[0].child);
        root.depth -= 1;
    }
    Ok(())
}

/// Blocks an insert of an entry of `entry_size` bytes under `path` will
/// allocate: one per block that splits (the leaf, then each full node above
/// it), plus one for a new root when the root splits too; and whether the
/// tree deepens.
fn blocks_for_insert(mt: &MetaTx<'_, '_>, path: &Path, entry_size: usize) -> (usize, bool) {
    if path.leaf.bytes_used() + entry_size <= mt.payload_len() {
        return (0, false);
    }
    let cap = node_capacity(mt.payload_len());
    let mut blocks = 1;
    for step in path.steps.iter().rev() {
        if step.node.entries.len() < cap {
            return (blocks, false);
        }
        blocks += 1;
    }
    (blocks + 1, true)
}

/// Before an insert of `entry_size` bytes under `path`: `NoSpace` if it
/// would deepen a tree already at the maximum depth; otherwise reserves
/// every block the insert will allocate (all or none), so that it cannot
/// run out of space half way.
pub(crate) fn prepare_insert(
    mt: &MetaTx<'_, '_>,
    root: &DirRoot,
    path: &Path,
    entry_size: usize,
) -> FsResult<()> {
    let (blocks, deepens) = blocks_for_insert(mt, path, entry_size);
    if deepens && root.depth >= DIR_MAX_DEPTH {
        return Err(FsError::NoSpace);
    }
    mt.reserve(blocks, path.leaf_at.block)
}

/// Writes a changed leaf: split, freed, merged or rewritten. `parent` is
/// the step above it (`None` when the leaf is the root).
fn settle_leaf(
    mt: &MetaTx<'_, '_>,
    parent: Option<&mut Step>,
    at: BlockRef,
    mut leaf: DirLeaf,
) -> FsResult<Change> {
    let p = mt.payload_len();
    let used = leaf.bytes_used();
    if leaf.entries.is_empty() {
        mt.free_block(at.block)?;
        return Ok(Change::Removed);
    }
    if used > p {
        let m = leaf_split_point(&leaf, p)?;
        let right = DirLeaf {
            next: None,
            entries: leaf.entries.split_off(m),
        };
        let sep = right.entries[0].key;
        let left = store_leaf(mt, at.block, Some(at.generation), &leaf)?;
        let right = new_leaf(mt, at.block, &right)?;
        return Ok(Change::Split { left, sep, right });
    }
    if used < p / 4 {
        if let Some(parent) = parent {
            if let Some(change) = merge_leaf(mt, parent, at, &leaf)? {
                return Ok(change);
            }
        }
    }
    Ok(Change::Rewritten(store_leaf(
        mt,
        at.block,
        Some(at.generation),
        &leaf,
    )?))
}

/// Where to split an overflowing leaf: the index that balances the bytes
/// of the two halves, both non-empty and each fitting in `p`.
fn leaf_split_point(leaf: &DirLeaf, p: usize) -> FsResult<usize> {
    let sizes: Vec<usize> = leaf.entries.iter().map(|e| e.size()).collect();
    let total: usize = sizes.iter().sum();
    let mut best: Option<(usize, usize)> = None;
    let mut left = 0;
    for (m, size) in sizes.iter().enumerate().take(sizes.len().saturating_sub(1)) {
        left += size;
        let right = total - left;
        if LEAF_HEADER_LEN + left <= p && LEAF_HEADER_LEN + right <= p {
            let worst = left.max(right);
            if best.is_none_or(|(_, w)| worst < w) {
                best = Some((m + 1, worst));
            }
        }
    }
    best.map(|(m, _)| m)
        .ok_or_else(|| corrupt!("a directory leaf of {total} bytes of entries cannot be split"))
}

/// Merges an underfull leaf with a sibling under the same parent if the two
/// fit in 3/4 of a block: the left one of the pair keeps the entries, the
/// right one is freed, and the parent's index moves to the left one.
fn merge_leaf(
    mt: &MetaTx<'_, '_>,
    parent: &mut Step,
    at: BlockRef,
    leaf: &DirLeaf,
) -> FsResult<Option<Change>> {
    let Some((li, ri)) = sibling_pair(parent) else {
        return Ok(None);
    };
    let this_is_left = li == parent.index;
    let other_at = parent.node.entries[if this_is_left { ri } else { li }].child;
    let other = load_leaf(mt.cache, other_at)?;
    let combined = leaf.bytes_used() + other.bytes_used() - LEAF_HEADER_LEN;
    if combined > mt.payload_len() * 3 / 4 {
        return Ok(None);
    }
    let (left_at, right_at, mut entries, tail) = if this_is_left {
        (at, other_at, leaf.entries.clone(), other.entries)
    } else {
        (other_at, at, other.entries, leaf.entries.clone())
    };
    entries.extend(tail);
    let merged = DirLeaf {
        next: None,
        entries,
    };
    let r = store_leaf(mt, left_at.block, Some(left_at.generation), &merged)?;
    mt.free_block(right_at.block)?;
    parent.index = li;
    Ok(Some(Change::AbsorbedNext(r)))
}

/// The indices of the child at `parent.index` and a neighbour (the next
/// one if any, else the previous one), left first.
fn sibling_pair(parent: &Step) -> Option<(usize, usize)> {
    let i = parent.index;
    if i + 1 < parent.node.entries.len() {
        Some((i, i + 1))
    } else if i > 0 {
        Some((i - 1, i))
    } else {
        None
    }
}

/// Writes a changed node: freed if empty, split if over capacity, merged
/// if under 1/4 of it, else rewritten.
fn settle_node(mt: &MetaTx<'_, '_>, parent: Option<&mut Step>, step: Step) -> FsResult<Change> {
    let cap = node_capacity(mt.payload_len());
    let Step { at, mut node, .. } = step;
    let n = node.entries.len();
    if n == 0 {
        mt.free_block(at.block)?;
        return Ok(Change::Removed);
    }
    if n > cap {
        let right = DirNode {
            level: node.level,
            entries: node.entries.split_off(n / 2),
        };
        let sep = right.entries[0].min_key;
        let left = store_node(mt, at.block, Some(at.generation), &node)?;
        let right = new_node(mt, at.block, &right)?;
        return Ok(Change::Split { left, sep, right });
    }
    if n < cap / 4 {
        if let Some(parent) = parent {
            if let Some(change) = merge_node(mt, parent, at, &node, cap)? {
                return Ok(change);
            }
        }
    }
    Ok(Change::Rewritten(store_node(
        mt,
        at.block,
        Some(at.generation),
        &node,
    )?))
}

/// As [`merge_leaf`], for nodes: merges if the two fit in 3/4 of the
/// capacity. The right node's first entry takes the parent's separator as
/// its min_key (every key below it is at least that).
fn merge_node(
    mt: &MetaTx<'_, '_>,
    parent: &mut Step,
    at: BlockRef,
    node: &DirNode,
    cap: usize,
) -> FsResult<Option<Change>> {
    let Some((li, ri)) = sibling_pair(parent) else {
        return Ok(None);
    };
    let this_is_left = li == parent.index;
    let other_at = parent.node.entries[if this_is_left { ri } else { li }].child;
    let other = load_node(mt.cache, other_at, node.level)?;
    if node.entries.len() + other.entries.len() > cap * 3 / 4 {
        return Ok(None);
    }
    let (left_at, right_at, mut entries, mut tail) = if this_is_left {
        (at, other_at, node.entries.clone(), other.entries)
    } else {
        (other_at, at, other.entries, node.entries.clone())
    };
    if let Some(first) = tail.first_mut() {
        first.min_key = parent.node.entries[ri].min_key;
    }
    entries.extend(tail);
    let merged = DirNode {
        level: node.level,
        entries,
    };
    let r = store_node(mt, left_at.block, Some(left_at.generation), &merged)?;
    mt.free_block(right_at.block)?;
    parent.index = li;
    Ok(Some(Change::AbsorbedNext(r)))
}
