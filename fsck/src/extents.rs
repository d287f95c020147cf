//! Pass 6: extents (§6).
//!
//! Walking a file's extent tree checks, beyond what the codec checks within
//! one node: every index child is in the data area, claimed once, good on
//! some leg with the generation the index records, one level below its
//! parent; every leaf entry lies inside the logical range its index entry
//! gives it, after the extents before it (across leaves too: no overlap);
//! every extent's blocks lie in the data area. What fails is dropped from
//! the file (an extent partly outside the data area is trimmed to the part
//! inside: "truncate extents pointing outside the device"); the file's tree
//! is then rebuilt from the extents that remain.
//!
//! Then [`Checker::claim_data`] claims the data blocks of every file, in
//! inode order: blocks another file already claimed (cross-linked) are
//! copied to new blocks for the later file by repair (as e2fsck's pass 1b
//! clones); blocks that are some structure's metadata are dropped from the
//! file. [`build_extent_tree`] makes a fresh tree for repair.

use crate::checker::{Checker, FileExtent};
use crate::metadata::MetaRead;
use crate::report::Pass;
use keelfs_fs::format::extent::{block_capacity, ExtentIndex, ExtentLeaf, ROOT_CAPACITY};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::{BlockRef, ExtentNode, FormatError, Problem, Structure};

/// What a walk of one tree gathers.
#[derive(Default)]
struct ExtentWalk {
    extents: Vec<FileExtent>,
    nodes: Vec<u64>,
    bad: bool,
    last_end: u64,
}

/// How a block range relates to the claims made so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimState {
    Free,
    Data,
    Meta,
}

impl Checker<'_> {
    /// Walks the extent tree whose root is in inode `ino`.
    pub fn walk_extent_tree(&mut self, ino: u64, root: &ExtentNode) {
        let mut st = ExtentWalk::default();
        self.walk_extent_node(ino, root, 0, None, &mut st);
        if let Some(rec) = self.inodes.get_mut(&ino) {
            rec.extents = st.extents;
            rec.extent_nodes = st.nodes;
            rec.extents_rebuild |= st.bad;
        }
    }

    fn extent_problem(&mut self, ino: u64, st: &mut ExtentWalk, what: String) {
        self.report
            .error(Pass::Extents, true, format!("inode {ino}: {what}"));
        st.bad = true;
    }

    fn walk_extent_node(
        &mut self,
        ino: u64,
        node: &ExtentNode,
        lo: u64,
        hi: Option<u64>,
        st: &mut ExtentWalk,
    ) {
        match node {
            ExtentNode::Leaf(entries) => {
                for e in entries {
                    let end = e.logical_end().unwrap_or(u64::MAX);
                    if e.logical < lo || hi.is_some_and(|h| end > h) {
                        self.extent_problem(
                            ino,
                            st,
                            format!(
                                "extent at logical block {} lies outside its index range: dropped",
                                e.logical
                            ),
                        );
                        continue;
                    }
                    if e.logical < st.last_end {
                        self.extent_problem(
                            ino,
                            st,
                            format!(
                                "extent at logical block {} overlaps the one before: dropped",
                                e.logical
                            ),
                        );
                        continue;
                    }
                    let Some(leaf) = self.inside_data_area(ino, e, st) else {
                        continue;
                    };
                    st.last_end = end;
                    st.extents.push(FileExtent { leaf, clone: false });
                }
            }
            ExtentNode::Index { depth, entries } => {
                for (i, e) in entries.iter().enumerate() {
                    let child_hi = entries.get(i + 1).map(|n| n.logical).or(hi);
                    if e.logical < lo {
                        self.extent_problem(
                            ino,
                            st,
                            format!(
                                "index entry for logical block {} lies before its range: dropped",
                                e.logical
                            ),
                        );
                        continue;
                    }
                    let block = e.child.block;
                    if !self.claim_meta(block, ino, "an extent node", Pass::Extents) {
                        st.bad = true;
                        continue;
                    }
                    let read = self.read_meta(
                        block,
                        BlockKind::ExtentNode,
                        Some(e.child.generation),
                        &|p| ExtentNode::decode_block(p).map(|_| ()),
                        &format!("extent node of inode {ino}"),
                    );
                    let child = match &read {
                        MetaRead::Good { .. } => read
                            .payload()
                            .and_then(|p| ExtentNode::decode_block(p).ok()),
                        _ => None,
                    };
                    let Some(child) = child else {
                        let why = match read {
                            MetaRead::Lost(why) => why,
                            _ => "never written".to_string(),
                        };
                        self.report.error(
                            Pass::MetadataTags,
                            true,
                            format!(
                                "inode {ino}: extent node at block {block} (from logical block \
                                 {}) has no good copy ({why}): the extents under it are dropped",
                                e.logical
                            ),
                        );
                        st.bad = true;
                        continue;
                    };
                    if child.depth() + 1 != *depth {
                        self.extent_problem(
                            ino,
                            st,
                            format!(
                                "extent node at block {block} has depth {}, expected {}: dropped",
                                child.depth(),
                                depth - 1
                            ),
                        );
                        continue;
                    }
                    st.nodes.push(block);
                    self.walk_extent_node(ino, &child, e.logical, child_hi, st);
                }
            }
        }
    }

    /// The part of extent `e` inside the data area, reporting any trim.
    fn inside_data_area(
        &mut self,
        ino: u64,
        e: &ExtentLeaf,
        st: &mut ExtentWalk,
    ) -> Option<ExtentLeaf> {
        let data = self.layout.data;
        let start = e.physical;
        let end = e.physical.saturating_add(u64::from(e.length));
        let s = start.max(data.start);
        let en = end.min(data.end());
        if s >= en {
            self.extent_problem(
                ino,
                st,
                format!(
                    "extent at logical block {} points at blocks {}–{}, outside the data area: \
                     dropped",
                    e.logical,
                    start,
                    end - 1
                ),
            );
            return None;
        }
        if s == start && en == end {
            return Some(*e);
        }
        self.extent_problem(
            ino,
            st,
            format!(
                "extent at logical block {} (blocks {}–{}) runs outside the data area: trimmed \
                 to blocks {}–{}",
                e.logical,
                start,
                end - 1,
                s,
                en - 1
            ),
        );
        Some(ExtentLeaf {
            logical: e.logical + (s - start),
            length: (en - s) as u32,
            unwritten: e.unwritten,
            physical: s,
        })
    }

    /// How blocks `[start, end)` stand: runs of (state, start, end).
    fn claim_runs(&self, start: u64, end: u64) -> Vec<(ClaimState, u64, u64)> {
        let mut runs = Vec::new();
        let mut i = start;
        while i < end {
            let (state, j) = if !self.claimed.get(i) {
                (
                    ClaimState::Free,
                    self.claimed.first_set_in(i, end).unwrap_or(end),
                )
            } else if self.meta_claimed.get(i) {
                (
                    ClaimState::Meta,
                    self.meta_claimed.first_clear_in(i, end).unwrap_or(end),
                )
            } else {
                let a = self.claimed.first_clear_in(i, end).unwrap_or(end);
                let b = self.meta_claimed.first_set_in(i, end).unwrap_or(end);
                (ClaimState::Data, a.min(b))
            };
            runs.push((state, i, j));
            i = j;
        }
        runs
    }

    /// Claims every file's data blocks; see the module docs.
    pub fn claim_data(&mut self) {
        let inos: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, r)| r.kept() && !r.extents.is_empty())
            .map(|(&n, _)| n)
            .collect();
        for ino in inos {
            let extents = match self.inodes.get(&ino) {
                Some(rec) => rec.extents.clone(),
                None => continue,
            };
            let mut out = Vec::with_capacity(extents.len());
            let mut changed = false;
            for fe in extents {
                let e = fe.leaf;
                let start = e.physical;
                let end = start + u64::from(e.length);
                for (state, s, en) in self.claim_runs(start, end) {
                    let piece = ExtentLeaf {
                        logical: e.logical + (s - start),
                        length: (en - s) as u32,
                        unwritten: e.unwritten,
                        physical: s,
                    };
                    match state {
                        ClaimState::Free => {
                            self.claimed.set_range(s, en - s);
                            out.push(FileExtent {
                                leaf: piece,
                                clone: false,
                            });
                        }
                        ClaimState::Data => {
                            self.report.error(
                                Pass::Bitmaps,
                                true,
                                format!(
                                    "inode {ino}: data blocks {}–{} are cross-linked with another \
                                     file: they are copied to new blocks for this one",
                                    s,
                                    en - 1
                                ),
                            );
                            out.push(FileExtent {
                                leaf: piece,
                                clone: true,
                            });
                            changed = true;
                        }
                        ClaimState::Meta => {
                            self.report.error(
                                Pass::Bitmaps,
                                true,
                                format!(
                                    "inode {ino}: data blocks {}–{} (logical {}) are metadata of \
                                     another structure: dropped from the file",
                                    s,
                                    en - 1,
                                    piece.logical
                                ),
                            );
                            changed = true;
                        }
                    }
                    if (state, s, en) != (ClaimState::Free, start, end) {
                        changed = true;
                    }
                }
            }
            if let Some(rec) = self.inodes.get_mut(&ino) {
                if changed {
                    rec.extents = merge_extents(out);
                    rec.extents_rebuild = true;
                }
            }
        }
    }
}

/// Joins neighbouring pieces of one extent that were split by claims but
/// ended up alike.
pub fn merge_extents(pieces: Vec<FileExtent>) -> Vec<FileExtent> {
    let mut out: Vec<FileExtent> = Vec::with_capacity(pieces.len());
    for p in pieces {
        if let Some(last) = out.last_mut() {
            let l = &mut last.leaf;
            let contiguous = l.logical_end() == Some(p.leaf.logical)
                && l.physical + u64::from(l.length) == p.leaf.physical
                && l.unwritten == p.leaf.unwritten
                && last.clone == p.clone
                && u64::from(l.length) + u64::from(p.leaf.length)
                    <= u64::from(keelfs_fs::format::extent::EXTENT_MAX_LEN);
            if contiguous {
                l.length += p.leaf.length;
                continue;
            }
        }
        out.push(p);
    }
    out
}

/// A block of a built tree to write: (block, payload).
pub type NodeWrite = (u64, Vec<u8>);

/// A fresh extent tree holding `extents` (sorted, non-overlapping): the
/// root for the inode, and the blocks to write as (block, payload), each
/// of kind 9 with header generation `gen`. `alloc` gives a free block.
pub fn build_extent_tree(
    extents: &[ExtentLeaf],
    payload_len: usize,
    gen: u64,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> Result<(ExtentNode, Vec<NodeWrite>), FormatError> {
    if extents.len() <= usize::from(ROOT_CAPACITY) {
        return Ok((ExtentNode::Leaf(extents.to_vec()), Vec::new()));
    }
    let no_space = || {
        FormatError::invalid(
            Structure::ExtentNode,
            "child",
            Problem::Inconsistent("no free block for an extent node"),
        )
    };
    let capacity = usize::from(block_capacity(payload_len).unwrap_or(1).max(1));
    let mut writes = Vec::new();
    // (first logical block, node block) of the level being built.
    let mut level: Vec<(u64, u64)> = Vec::new();
    for chunk in extents.chunks(capacity) {
        let block = alloc().ok_or_else(no_space)?;
        let mut payload = vec![0u8; payload_len];
        ExtentNode::Leaf(chunk.to_vec()).encode_block(&mut payload)?;
        writes.push((block, payload));
        level.push((chunk[0].logical, block));
    }
    let mut depth = 1u16;
    loop {
        let index = |items: &[(u64, u64)]| ExtentNode::Index {
            depth,
            entries: items
                .iter()
                .map(|&(logical, block)| ExtentIndex {
                    logical,
                    child: BlockRef {
                        block,
                        generation: gen,
                    },
                })
                .collect(),
        };
        if level.len() <= usize::from(ROOT_CAPACITY) {
            return Ok((index(&level), writes));
        }
        let mut next = Vec::new();
        for chunk in level.chunks(capacity) {
            let block = alloc().ok_or_else(no_space)?;
            let mut payload = vec![0u8; payload_len];
            index(chunk).encode_block(&mut payload)?;
            writes.push((block, payload));
            next.push((chunk[0].0, block));
        }
        level = next;
        depth += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(logical: u64, physical: u64) -> ExtentLeaf {
        ExtentLeaf {
            logical,
            length: 1,
            unwritten: false,
            physical,
        }
    }

    #[test]
    fn small_trees_fit_the_inode_and_big_ones_get_levels() {
        let mut next = 1000u64;
        let mut alloc = || {
            next += 1;
            Some(next)
        };
        let few: Vec<ExtentLeaf> = (0..5).map(|i| leaf(i * 2, 100 + i)).collect();
        let (root, writes) = build_extent_tree(&few, 976, 7, &mut alloc).unwrap();
        assert_eq!(root, ExtentNode::Leaf(few));
        assert!(writes.is_empty());
        // 1 KiB blocks hold 40 entries: 1000 extents need 25 leaves; 25
        // index entries do not fit the root's 5, so one index block above
        // them, and the root indexes that block.
        let many: Vec<ExtentLeaf> = (0..1000).map(|i| leaf(i * 2, 100 + i)).collect();
        let (root, writes) = build_extent_tree(&many, 976, 7, &mut alloc).unwrap();
        assert_eq!(root.depth(), 2);
        assert_eq!(root.len(), 1);
        assert_eq!(writes.len(), 25 + 1);
        for (_, payload) in &writes {
            ExtentNode::decode_block(payload).unwrap();
        }
    }

    #[test]
    fn merging_joins_alike_neighbours_only() {
        let a = FileExtent {
            leaf: leaf(0, 10),
            clone: false,
        };
        let b = FileExtent {
            leaf: leaf(1, 11),
            clone: false,
        };
        let c = FileExtent {
            leaf: leaf(2, 12),
            clone: true,
        };
        let merged = merge_extents(vec![a, b, c]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].leaf.length, 2);
    }
}
