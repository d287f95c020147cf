//! The path from a directory's root to one leaf, and moving it along the
//! leaves in key order.
//!
//! A [`Path`] holds decoded copies of the nodes from the root down (each
//! with the index of the child taken) and of the leaf at the bottom. It is
//! how every operation finds its leaf ([`descend`]: one block read per
//! level, depth + 1 in all), how scans go on to the next leaf
//! ([`Path::advance`]: re-descends from the deepest node that has a next
//! child, so a whole readdir reads each block once), and what
//! `update::commit` rewrites bottom-up after a change.
//!
//! Key ranges: the child at index i of a node holds keys from its entry's
//! min_key (for i > 0; the first child also takes smaller keys) up to the
//! next entry's min_key, exclusive. So [`Path::next_leaf_min_key`], the
//! min_key of the nearest next entry above the leaf, bounds every key of
//! every leaf after this one from below.

use super::tree::{load_leaf, load_node};
use crate::error::{corrupt, FsResult};
use crate::format::{BlockRef, DirLeaf, DirNode, DirRoot};
use keelfs_engine::bufio::Bufio;

/// One node on the way down, and the child taken.
pub(crate) struct Step {
    pub at: BlockRef,
    pub node: DirNode,
    pub index: usize,
}

/// The nodes from the root down to a leaf, and the leaf.
pub(crate) struct Path {
    /// `steps[0]` is the root node (if the root is not a leaf).
    pub steps: Vec<Step>,
    pub leaf_at: BlockRef,
    pub leaf: DirLeaf,
}

/// The path to the leaf whose key range holds `key`; `None` for an empty
/// directory (no root block).
pub(crate) fn descend(cache: &Bufio, root: &DirRoot, key: u64) -> FsResult<Option<Path>> {
    let Some(mut at) = root.root else {
        return Ok(None);
    };
    let mut steps = Vec::with_capacity(usize::from(root.depth));
    for level in (1..=root.depth).rev() {
        let node = load_node(cache, at, level)?;
        let index = node.child_for(key);
        let child = node
            .entries
            .get(index)
            .ok_or_else(|| corrupt!("directory node {} has no entries", at.block))?
            .child;
        steps.push(Step { at, node, index });
        at = child;
    }
    let leaf = load_leaf(cache, at)?;
    Ok(Some(Path {
        steps,
        leaf_at: at,
        leaf,
    }))
}

impl Path {
    /// The smallest key any leaf after this one can hold (the separator of
    /// the next subtree), `None` if this is the last leaf.
    pub fn next_leaf_min_key(&self) -> Option<u64> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.index + 1 < s.node.entries.len())
            .map(|s| s.node.entries[s.index + 1].min_key)
    }

    /// Whether `key` falls in the key range of the path's leaf (so an
    /// entry with that key belongs in it).
    pub fn leaf_holds(&self, key: u64) -> bool {
        let lo = self
            .steps
            .iter()
            .rev()
            .find(|s| s.index > 0)
            .map_or(0, |s| s.node.entries[s.index].min_key);
        key >= lo && self.next_leaf_min_key().is_none_or(|hi| key < hi)
    }

    /// Moves to the next leaf in key order; `false` (path unchanged) if
    /// this is the last one. Reads the new leaf and the nodes between it
    /// and the deepest common ancestor.
    pub fn advance(&mut self, cache: &Bufio) -> FsResult<bool> {
        let Some(k) = self
            .steps
            .iter()
            .rposition(|s| s.index + 1 < s.node.entries.len())
        else {
            return Ok(false);
        };
        self.steps.truncate(k + 1);
        let top = &mut self.steps[k];
        top.index += 1;
        let mut at = top.node.entries[top.index].child;
        let mut level = top.node.level;
        while level > 1 {
            level -= 1;
            let node = load_node(cache, at, level)?;
            let child = node
                .entries
                .first()
                .ok_or_else(|| corrupt!("directory node {} has no entries", at.block))?
                .child;
            self.steps.push(Step { at, node, index: 0 });
            at = child;
        }
        self.leaf = load_leaf(cache, at)?;
        self.leaf_at = at;
        Ok(true)
    }
}
