//! Walking a whole directory tree: checking its invariants (for tests and
//! fsck) and listing its blocks (for destroy).
//!
//! Checked: every block has the kind, generation and level its parent
//! implies; each child's keys lie in the range its parent entry gives it;
//! keys increase strictly across the leaves in order; the names counted
//! equal the root's entry count. Empty leaves are counted, not refused
//! (this code frees them, but one is harmless).
//! The walk recurses at most `depth` ≤ 8 levels.

use super::tree::{load, Block};
use crate::error::{corrupt, FsResult};
use crate::format::dir::MAX_KEY;
use crate::format::{BlockRef, DirRoot};
use keelfs_engine::bufio::Bufio;

/// The shape of a directory tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Levels of nodes above the leaves.
    pub depth: u16,
    pub nodes: u64,
    pub leaves: u64,
    pub entries: u64,
    /// Leaves without a name (only an empty root leaf is expected).
    pub empty_leaves: u64,
    /// Bytes in use over all leaves (headers and entries).
    pub leaf_bytes: u64,
}

impl TreeStats {
    /// Blocks the tree holds.
    pub fn blocks(&self) -> u64 {
        self.nodes + self.leaves
    }
}

/// Checks the whole tree of `root` and describes it; `Corrupt` (or a
/// format error) at the first thing wrong.
pub fn verify(cache: &Bufio, root: &DirRoot) -> FsResult<TreeStats> {
    let mut stats = TreeStats {
        depth: root.depth,
        ..TreeStats::default()
    };
    let mut last_key = None;
    if let Some(at) = root.root {
        walk(cache, at, root.depth, 0, MAX_KEY + 1, &mut |at, block| {
            match block {
                Block::Node(_) => stats.nodes += 1,
                Block::Leaf(leaf) => {
                    if leaf.entries.is_empty() {
                        stats.empty_leaves += 1;
                    }
                    for e in &leaf.entries {
                        if last_key.is_some_and(|k| e.key <= k) {
                            return Err(corrupt!(
                                "directory key {:#x} in leaf {} is out of order",
                                e.key,
                                at.block
                            ));
                        }
                        last_key = Some(e.key);
                    }
                    stats.leaves += 1;
                    stats.entries += leaf.entries.len() as u64;
                    stats.leaf_bytes += leaf.bytes_used() as u64;
                }
            }
            Ok(())
        })?;
    }
    if stats.entries != root.entry_count {
        return Err(corrupt!(
            "directory holds {} names, its root counts {}",
            stats.entries,
            root.entry_count
        ));
    }
    Ok(stats)
}

/// Every block of the tree with the names it holds (0 for nodes),
/// children before their parents (the order to free them in).
pub(crate) fn blocks_bottom_up(cache: &Bufio, root: &DirRoot) -> FsResult<Vec<(BlockRef, usize)>> {
    let mut out = Vec::new();
    if let Some(at) = root.root {
        walk(cache, at, root.depth, 0, MAX_KEY + 1, &mut |at, block| {
            let names = match block {
                Block::Leaf(leaf) => leaf.entries.len(),
                Block::Node(_) => 0,
            };
            out.push((at, names));
            Ok(())
        })?;
    }
    Ok(out)
}

/// Visits the subtree at `at` (tree level `level`, keys in `lo..hi`),
/// children in key order, each child before its parent.
fn walk(
    cache: &Bufio,
    at: BlockRef,
    level: u16,
    lo: u64,
    hi: u64,
    visit: &mut dyn FnMut(BlockRef, &Block) -> FsResult<()>,
) -> FsResult<()> {
    let block = load(cache, at, level)?;
    match &block {
        Block::Leaf(leaf) => {
            if let Some(e) = leaf.entries.iter().find(|e| e.key < lo || e.key >= hi) {
                return Err(corrupt!(
                    "directory key {:#x} in leaf {} is outside its range {lo:#x}..{hi:#x}",
                    e.key,
                    at.block
                ));
            }
        }
        Block::Node(node) => {
            for (i, e) in node.entries.iter().enumerate() {
                let child_lo = if i == 0 { lo } else { e.min_key };
                let child_hi = node.entries.get(i + 1).map_or(hi, |n| n.min_key);
                if child_lo < lo || child_hi > hi || child_lo >= child_hi {
                    return Err(corrupt!(
                        "directory node {} entry {i} leaves its range {lo:#x}..{hi:#x}",
                        at.block
                    ));
                }
                walk(cache, e.child, level - 1, child_lo, child_hi, visit)?;
            }
        }
    }
    visit(at, &block)
}
