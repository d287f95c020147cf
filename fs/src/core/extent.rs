//! The extent tree of a regular file (§6): logical blocks → physical runs.
//!
//! The root is the inode's data area (5 entries); below it, extent node
//! blocks (kind 9, ⌊(P − 8) / 24⌋ entries each) allocated from the block
//! allocator. Index entries record the first logical block of their child
//! and the generation the child must carry; children are read with that
//! generation (`read_expect`), so a leg that lost a write to a node is
//! caught.
//!
//! What it promises:
//!
//! * **Lookups are O(depth) block reads.** [`find_leaf`] descends from the
//!   root to the one leaf whose range holds a logical block; [`map`] turns a
//!   logical range into [`Piece`]s (data, unwritten, hole) leaf by leaf.
//! * **Updates keep the tree a B+tree.** [`TreeWriter::insert`] adds an
//!   extent to a hole, merging it with a neighbour in the same leaf when
//!   logically and physically adjacent and of the same kind;
//!   [`TreeWriter::remove`] takes a logical range out (trimming or splitting
//!   the extents at its ends, freeing nodes that become empty) and returns
//!   the removed pieces so the caller frees their data blocks. A node that
//!   overflows splits (an append leaves the left node full, other inserts
//!   split evenly); when the root overflows, its entries move into a new
//!   block and the tree grows one level; when the root is left with a single
//!   child that fits in it, the tree shrinks. Every index entry's logical
//!   block equals its child's first logical block.
//! * **Nothing half-done on ENOSPC.** An update that may need new node
//!   blocks claims depth + 2 blocks from the allocator before changing
//!   anything (a split adds at most one node per level plus one for growing
//!   the root); without them it fails with `NoSpace` and the tree is as it
//!   was. An insert that merges into its neighbour or lands in a leaf with
//!   room, and a removal that splits no extent (truncation, for one), need
//!   no block and claim none, so the last free blocks of a full
//!   filesystem can still be appended to and files can always be deleted.
//! * Every block changed goes through `tx.write`; the caller stores the
//!   inode, whose data area holds the root, and adds
//!   [`TreeWriter::node_blocks_delta`] to the inode's block count.
//!
//! What it relies on: the §6 codec ([`ExtentNode`]), bufio, the journal and
//! the [`BlockAllocator`]. Locking: the caller holds the inode's lock
//! (write lock for updates); this takes buffer guards one at a time.

use super::meta::{init_meta, payload, payload_mut, read_meta};
use crate::alloc::{BlockAllocator, Claim, MetaAllocator};
use crate::error::{FsError, FsResult};
use crate::format::extent::{EXTENT_MAX_DEPTH, EXTENT_MAX_LEN, ROOT_CAPACITY};
use crate::format::header::BlockKind;
use crate::format::{BlockRef, ExtentIndex, ExtentLeaf, ExtentNode};
use crate::journal::TxHandle;
use keelfs_engine::bufio::Bufio;

/// What a logical range maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// Nothing allocated: reads as zeros.
    Hole,
    /// Allocated and written, at `physical`.
    Data { physical: u64 },
    /// Allocated, never written (reads as zeros), at `physical`.
    Unwritten { physical: u64 },
}

/// `len` logical blocks from `logical`, and what they map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub logical: u64,
    pub len: u64,
    pub kind: PieceKind,
}

impl Piece {
    /// One past the last logical block.
    pub fn end(&self) -> u64 {
        self.logical + self.len
    }

    /// The physical block of logical block `logical` (inside the piece).
    pub fn physical_of(&self, logical: u64) -> Option<u64> {
        match self.kind {
            PieceKind::Hole => None,
            PieceKind::Data { physical } | PieceKind::Unwritten { physical } => {
                Some(physical + (logical - self.logical))
            }
        }
    }
}

/// The leaf that holds a logical block, as [`find_leaf`] found it.
#[derive(Debug, Clone, Default)]
pub struct LeafView {
    /// The leaf's extents (empty when the block lies before every extent of
    /// a subtree).
    pub entries: Vec<ExtentLeaf>,
    /// Where the next leaf's range starts (nothing in this view maps at or
    /// after it); `None` = this is the last leaf.
    pub next_bound: Option<u64>,
}

fn leaf_end(e: &ExtentLeaf) -> u64 {
    e.logical + u64::from(e.length)
}

fn first_logical(node: &ExtentNode) -> u64 {
    match node {
        ExtentNode::Leaf(entries) => entries.first().map_or(0, |e| e.logical),
        ExtentNode::Index { entries, .. } => entries.first().map_or(0, |e| e.logical),
    }
}

/// Reads the extent node `child` must hold, at depth `depth`.
pub fn load_node(cache: &Bufio, child: BlockRef, depth: u16) -> FsResult<ExtentNode> {
    let buf = read_meta(
        cache,
        child.block,
        BlockKind::ExtentNode,
        Some(child.generation),
    )?;
    let node = ExtentNode::decode_block(payload(&buf.data()))?;
    if node.depth() != depth {
        return Err(FsError::Corrupt(format!(
            "extent node {} has depth {}, its parent expects {depth}",
            child.block,
            node.depth()
        )));
    }
    if node.is_empty() {
        return Err(FsError::Corrupt(format!(
            "extent node {} is empty",
            child.block
        )));
    }
    Ok(node)
}

/// The leaf whose range holds logical block `logical`.
pub fn find_leaf(cache: &Bufio, root: &ExtentNode, logical: u64) -> FsResult<LeafView> {
    let mut bound: Option<u64> = None;
    let mut owned: Option<ExtentNode> = None;
    loop {
        let node = owned.as_ref().unwrap_or(root);
        match node {
            ExtentNode::Leaf(entries) => {
                return Ok(LeafView {
                    entries: entries.clone(),
                    next_bound: bound,
                })
            }
            ExtentNode::Index { depth, entries } => {
                let i = entries.partition_point(|e| e.logical <= logical);
                if i == 0 {
                    return Ok(LeafView {
                        entries: Vec::new(),
                        next_bound: entries.first().map(|e| e.logical),
                    });
                }
                if let Some(next) = entries.get(i) {
                    bound = Some(bound.map_or(next.logical, |b| b.min(next.logical)));
                }
                let child = load_node(cache, entries[i - 1].child, depth - 1)?;
                owned = Some(child);
            }
        }
    }
}

/// The extent holding logical block `logical`, if any.
pub fn lookup(cache: &Bufio, root: &ExtentNode, logical: u64) -> FsResult<Option<ExtentLeaf>> {
    let view = find_leaf(cache, root, logical)?;
    Ok(view
        .entries
        .into_iter()
        .find(|e| e.logical <= logical && logical < leaf_end(e)))
}

/// What `start .. end` maps to, in order, holes included, pieces never
/// longer than one extent.
pub fn map(cache: &Bufio, root: &ExtentNode, start: u64, end: u64) -> FsResult<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut pos = start;
    while pos < end {
        let view = find_leaf(cache, root, pos)?;
        let limit = view.next_bound.map_or(end, |b| b.min(end)).max(pos + 1);
        let i = view.entries.partition_point(|e| leaf_end(e) <= pos);
        for e in &view.entries[i..] {
            if pos >= limit || e.logical >= limit {
                break;
            }
            if e.logical > pos {
                pieces.push(Piece {
                    logical: pos,
                    len: e.logical - pos,
                    kind: PieceKind::Hole,
                });
                pos = e.logical;
            }
            let stop = leaf_end(e).min(end);
            let physical = e.physical + (pos - e.logical);
            pieces.push(Piece {
                logical: pos,
                len: stop - pos,
                kind: if e.unwritten {
                    PieceKind::Unwritten { physical }
                } else {
                    PieceKind::Data { physical }
                },
            });
            pos = stop;
        }
        if pos < limit {
            pieces.push(Piece {
                logical: pos,
                len: limit - pos,
                kind: PieceKind::Hole,
            });
            pos = limit;
        }
    }
    Ok(pieces)
}

/// Calls `f` with every extent of the tree, in logical order.
pub fn for_each(
    cache: &Bufio,
    root: &ExtentNode,
    f: &mut dyn FnMut(&ExtentLeaf) -> FsResult<()>,
) -> FsResult<()> {
    match root {
        ExtentNode::Leaf(entries) => entries.iter().try_for_each(f),
        ExtentNode::Index { depth, entries } => {
            for e in entries {
                let child = load_node(cache, e.child, depth - 1)?;
                for_each(cache, &child, f)?;
            }
            Ok(())
        }
    }
}

/// Where to cut so that removing `cut ..` takes out at most `max_extents`
/// extents, all from the last leaf, and never anything below `from`:
/// `None` when nothing maps at or after `from`. Removing from the end in
/// such steps keeps every step's transaction small (one leaf, a bounded
/// number of freed runs).
pub fn tail_cut(
    cache: &Bufio,
    root: &ExtentNode,
    from: u64,
    max_extents: usize,
) -> FsResult<Option<u64>> {
    let mut owned: Option<ExtentNode> = None;
    loop {
        let node = owned.as_ref().unwrap_or(root);
        match node {
            ExtentNode::Leaf(entries) => {
                let tail: Vec<&ExtentLeaf> =
                    entries.iter().filter(|e| leaf_end(e) > from).collect();
                if tail.is_empty() {
                    return Ok(None);
                }
                let k = tail.len() - tail.len().min(max_extents.max(1));
                return Ok(Some(tail[k].logical.max(from)));
            }
            ExtentNode::Index { depth, entries } => {
                let Some(last) = entries.last() else {
                    return Ok(None);
                };
                owned = Some(load_node(cache, last.child, depth - 1)?);
            }
        }
    }
}

/// One past the last logical block the tree maps (0 when empty).
pub fn last_end(cache: &Bufio, root: &ExtentNode) -> FsResult<u64> {
    Ok(match tail_cut(cache, root, 0, 1)? {
        Some(last) => lookup(cache, root, last)?.map_or(last + 1, |e| leaf_end(&e)),
        None => 0,
    })
}

/// Every extent node block of the tree (for fsck-like checks and tests).
pub fn node_blocks(cache: &Bufio, root: &ExtentNode) -> FsResult<Vec<u64>> {
    let mut out = Vec::new();
    fn walk(cache: &Bufio, node: &ExtentNode, out: &mut Vec<u64>) -> FsResult<()> {
        if let ExtentNode::Index { depth, entries } = node {
            for e in entries {
                out.push(e.child.block);
                let child = load_node(cache, e.child, depth - 1)?;
                walk(cache, &child, out)?;
            }
        }
        Ok(())
    }
    walk(cache, root, &mut out)?;
    Ok(out)
}

/// Splits `items` into nodes of at most `cap`: an append that overflows by
/// one leaves the left node full, anything else splits evenly.
fn chunk<T>(mut items: Vec<T>, cap: usize, appended: bool) -> Vec<Vec<T>> {
    if items.len() <= cap {
        return vec![items];
    }
    if appended && items.len() == cap + 1 {
        let last = items.split_off(cap);
        return vec![items, last];
    }
    let n = items.len().div_ceil(cap);
    let base = items.len() / n;
    let extra = items.len() % n;
    let mut out = Vec::with_capacity(n);
    let mut rest = items;
    for k in 0..n {
        let size = base + usize::from(k < extra);
        let tail = rest.split_off(size);
        out.push(rest);
        rest = tail;
    }
    out
}

/// Changes to one inode's extent tree inside one transaction.
pub struct TreeWriter<'a, 't> {
    cache: &'a Bufio,
    alloc: &'a BlockAllocator,
    tx: &'a TxHandle<'t>,
    /// Where new node blocks go (near the file's data).
    goal: u64,
    claim: Option<Claim<'a>>,
    /// The claim covers several operations ([`TreeWriter::replace`]).
    held: bool,
    /// Extent node blocks allocated minus freed.
    node_blocks: i64,
}

impl<'a, 't> TreeWriter<'a, 't> {
    /// A writer that puts new node blocks near `goal`.
    pub fn new(
        cache: &'a Bufio,
        alloc: &'a BlockAllocator,
        tx: &'a TxHandle<'t>,
        goal: u64,
    ) -> TreeWriter<'a, 't> {
        TreeWriter {
            cache,
            alloc,
            tx,
            goal,
            claim: None,
            held: false,
            node_blocks: 0,
        }
    }

    /// Extent node blocks allocated minus freed so far (add it to the
    /// inode's block count).
    pub fn node_blocks_delta(&self) -> i64 {
        self.node_blocks
    }

    fn block_capacity(&self) -> usize {
        let payload = self.cache.block_size() - crate::format::META_HEADER_LEN;
        crate::format::extent::block_capacity(payload).map_or(0, usize::from)
    }

    /// Reserves the blocks an update of a tree of this depth may need.
    fn reserve(&mut self, root: &ExtentNode) -> FsResult<()> {
        if self.held {
            return Ok(());
        }
        self.claim = None;
        self.claim = Some(self.alloc.claim(u64::from(root.depth()) + 2)?);
        Ok(())
    }

    /// Ends an operation: its unused claim goes back.
    fn release(&mut self) {
        if !self.held {
            self.claim = None;
        }
    }

    /// Replaces whatever maps `extent`'s logical range by `extent`, as one
    /// update: the blocks both steps may need are claimed first, so it
    /// either fails with `NoSpace` changing nothing or does both. Returns
    /// what was removed (the caller frees what `extent` does not reuse).
    pub fn replace(
        &mut self,
        root: &mut ExtentNode,
        extent: ExtentLeaf,
    ) -> FsResult<Vec<ExtentLeaf>> {
        self.claim = None;
        self.claim = Some(self.alloc.claim(2 * (u64::from(root.depth()) + 3))?);
        self.held = true;
        let result = self
            .remove(root, extent.logical, leaf_end(&extent))
            .and_then(|removed| self.insert(root, extent).map(|()| removed));
        self.held = false;
        self.claim = None;
        result
    }

    fn new_block(&mut self) -> FsResult<u64> {
        let block = match self.claim.as_mut() {
            Some(claim) if claim.remaining() > 0 => {
                self.alloc.alloc_claimed(self.tx, claim, self.goal, 1)?.0
            }
            _ => self.alloc.alloc_meta(self.tx, self.goal)?,
        };
        self.node_blocks += 1;
        self.goal = block + 1;
        Ok(block)
    }

    fn free_block(&mut self, block: u64) -> FsResult<()> {
        self.alloc.free_meta(self.tx, block)?;
        self.node_blocks -= 1;
        Ok(())
    }

    /// Writes `node` into `block` (a fresh block, or an existing node of
    /// generation `old_gen`) and returns the reference its parent records.
    fn write_node(
        &mut self,
        block: u64,
        old_gen: Option<u64>,
        node: &ExtentNode,
    ) -> FsResult<BlockRef> {
        let mut image = vec![0u8; self.cache.block_size() - crate::format::META_HEADER_LEN];
        node.encode_block(&mut image)?;
        let buf = match old_gen {
            None => init_meta(self.cache, self.tx, block, BlockKind::ExtentNode)?,
            Some(gen) => read_meta(self.cache, block, BlockKind::ExtentNode, Some(gen))?,
        };
        {
            let mut w = self.tx.write(&buf);
            payload_mut(&mut w).copy_from_slice(&image);
        }
        Ok(BlockRef {
            block,
            generation: self.tx.seq(),
        })
    }

    /// Puts `parts` where child `i` of `entries` was: the first part in the
    /// child's own block, the others in new blocks; no part = the child is
    /// freed.
    fn replace_child(
        &mut self,
        entries: &mut Vec<ExtentIndex>,
        i: usize,
        parts: Vec<ExtentNode>,
    ) -> FsResult<()> {
        let old = entries[i].child;
        if parts.is_empty() {
            self.free_block(old.block)?;
            entries.remove(i);
            return Ok(());
        }
        let mut replacement = Vec::with_capacity(parts.len());
        for (k, part) in parts.iter().enumerate() {
            let child = if k == 0 {
                self.write_node(old.block, Some(old.generation), part)?
            } else {
                let block = self.new_block()?;
                self.write_node(block, None, part)?
            };
            replacement.push(ExtentIndex {
                logical: first_logical(part),
                child,
            });
        }
        entries.splice(i..=i, replacement);
        Ok(())
    }

    fn split_leaf(&self, entries: Vec<ExtentLeaf>, appended: bool) -> Vec<ExtentNode> {
        chunk(entries, self.block_capacity(), appended)
            .into_iter()
            .map(ExtentNode::Leaf)
            .collect()
    }

    fn split_index(
        &self,
        depth: u16,
        entries: Vec<ExtentIndex>,
        appended: bool,
    ) -> Vec<ExtentNode> {
        chunk(entries, self.block_capacity(), appended)
            .into_iter()
            .map(|entries| ExtentNode::Index { depth, entries })
            .collect()
    }

    /// Makes `parts` (the root's replacement) the root: grows the tree while
    /// they do not fit in the inode, shrinks it while a lone child fits.
    fn set_root(&mut self, root: &mut ExtentNode, mut parts: Vec<ExtentNode>) -> FsResult<()> {
        loop {
            if parts.is_empty() {
                *root = ExtentNode::empty();
                return Ok(());
            }
            if parts.len() == 1 && parts[0].len() <= usize::from(ROOT_CAPACITY) {
                *root = parts.pop().unwrap_or_else(ExtentNode::empty);
                break;
            }
            let depth = parts[0].depth() + 1;
            if depth > EXTENT_MAX_DEPTH {
                return Err(FsError::TooBig);
            }
            let mut entries = Vec::with_capacity(parts.len());
            for part in &parts {
                let block = self.new_block()?;
                let child = self.write_node(block, None, part)?;
                entries.push(ExtentIndex {
                    logical: first_logical(part),
                    child,
                });
            }
            parts = self.split_index(depth, entries, false);
        }
        // Shrink: a root with one child that fits takes the child's place.
        while let ExtentNode::Index { depth, entries } = &*root {
            if entries.len() != 1 {
                break;
            }
            let child_ref = entries[0].child;
            let child = load_node(self.cache, child_ref, depth - 1)?;
            if child.len() > usize::from(ROOT_CAPACITY) {
                break;
            }
            self.free_block(child_ref.block)?;
            *root = child;
        }
        Ok(())
    }

    /// How many new node blocks inserting `extent` may need: none when it
    /// merges with a neighbour in its leaf or the leaf has room; else one
    /// per full node from the leaf up, plus one when the root is full too.
    /// Also returns the nodes below the root on the way to that leaf, so
    /// the insert does not read them again.
    fn blocks_for_insert(
        &self,
        root: &ExtentNode,
        extent: &ExtentLeaf,
    ) -> FsResult<(u64, Vec<ExtentNode>)> {
        let cap = self.block_capacity();
        let mut path_full: Vec<bool> = Vec::new();
        let mut path: Vec<ExtentNode> = Vec::new();
        loop {
            let node = path.last().unwrap_or(root);
            let is_root = path.is_empty();
            let full = node.len()
                >= if is_root {
                    usize::from(ROOT_CAPACITY)
                } else {
                    cap
                };
            path_full.push(full);
            match node {
                ExtentNode::Leaf(entries) => {
                    let pos = entries.partition_point(|e| e.logical < extent.logical);
                    let mut probe = entries.clone();
                    probe.insert(pos, *extent);
                    if merge_at(&mut probe, pos) != pos || probe.len() <= entries.len() {
                        return Ok((0, path));
                    }
                    break;
                }
                ExtentNode::Index { depth, entries } => {
                    let i = entries
                        .partition_point(|e| e.logical <= extent.logical)
                        .saturating_sub(1);
                    let child = load_node(self.cache, entries[i].child, depth - 1)?;
                    path.push(child);
                }
            }
        }
        let full_from_leaf = path_full.iter().rev().take_while(|&&f| f).count() as u64;
        let need = if full_from_leaf == 0 {
            0
        } else {
            full_from_leaf + 1
        };
        Ok((need, path))
    }

    /// Adds `extent` (which must lie in a hole) to the tree.
    pub fn insert(&mut self, root: &mut ExtentNode, extent: ExtentLeaf) -> FsResult<()> {
        if extent.length == 0 || extent.length > EXTENT_MAX_LEN || extent.physical == 0 {
            return Err(FsError::Invalid(format!("bad extent {extent:?}")));
        }
        let (need, path) = self.blocks_for_insert(root, &extent)?;
        if need > 0 {
            self.reserve(root)?;
        }
        self.goal = extent.physical;
        let result = self
            .insert_rec(root.clone(), extent, &mut path.into_iter())
            .and_then(|parts| self.set_root(root, parts));
        self.release();
        result
    }

    /// `path`: the nodes below this one toward the extent's leaf, already
    /// read (they are read here when it runs out).
    fn insert_rec(
        &mut self,
        node: ExtentNode,
        extent: ExtentLeaf,
        path: &mut std::vec::IntoIter<ExtentNode>,
    ) -> FsResult<Vec<ExtentNode>> {
        match node {
            ExtentNode::Leaf(mut entries) => {
                let pos = entries.partition_point(|e| e.logical < extent.logical);
                let overlaps_prev = pos > 0 && leaf_end(&entries[pos - 1]) > extent.logical;
                let overlaps_next = entries
                    .get(pos)
                    .is_some_and(|e| e.logical < leaf_end(&extent));
                if overlaps_prev || overlaps_next {
                    return Err(FsError::Corrupt(format!(
                        "extent {extent:?} overlaps an existing extent"
                    )));
                }
                entries.insert(pos, extent);
                let appended = pos + 1 == entries.len();
                let pos = merge_at(&mut entries, pos);
                let appended = appended && pos + 1 == entries.len();
                Ok(self.split_leaf(entries, appended))
            }
            ExtentNode::Index { depth, mut entries } => {
                let i = entries
                    .partition_point(|e| e.logical <= extent.logical)
                    .saturating_sub(1);
                let child = match path.next() {
                    Some(child) => child,
                    None => load_node(self.cache, entries[i].child, depth - 1)?,
                };
                let parts = self.insert_rec(child, extent, path)?;
                let added = parts.len();
                self.replace_child(&mut entries, i, parts)?;
                let appended = i + added == entries.len() && added > 1;
                Ok(self.split_index(depth, entries, appended))
            }
        }
    }

    /// Takes logical blocks `start .. end` out of the tree; returns the
    /// extents (trimmed to the range) that were there, in order.
    pub fn remove(
        &mut self,
        root: &mut ExtentNode,
        start: u64,
        end: u64,
    ) -> FsResult<Vec<ExtentLeaf>> {
        if start >= end {
            return Ok(Vec::new());
        }
        // Only a range strictly inside one extent adds an entry (the extent
        // splits in two); reserve blocks for the splits that may cause.
        let splits = lookup(self.cache, root, start)?
            .is_some_and(|e| e.logical < start && leaf_end(&e) > end);
        if splits {
            self.reserve(root)?;
        }
        let mut removed = Vec::new();
        let result = match self.remove_rec(root.clone(), start, end, &mut removed) {
            Ok(Some(parts)) => self.set_root(root, parts),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        self.release();
        result.map(|()| removed)
    }

    fn remove_rec(
        &mut self,
        node: ExtentNode,
        start: u64,
        end: u64,
        removed: &mut Vec<ExtentLeaf>,
    ) -> FsResult<Option<Vec<ExtentNode>>> {
        match node {
            ExtentNode::Leaf(entries) => {
                let mut kept = Vec::with_capacity(entries.len() + 1);
                let mut changed = false;
                for e in entries {
                    let e_end = leaf_end(&e);
                    if e_end <= start || e.logical >= end {
                        kept.push(e);
                        continue;
                    }
                    changed = true;
                    if e.logical < start {
                        kept.push(ExtentLeaf {
                            length: (start - e.logical) as u32,
                            ..e
                        });
                    }
                    let (rs, re) = (e.logical.max(start), e_end.min(end));
                    removed.push(ExtentLeaf {
                        logical: rs,
                        length: (re - rs) as u32,
                        unwritten: e.unwritten,
                        physical: e.physical + (rs - e.logical),
                    });
                    if e_end > end {
                        kept.push(ExtentLeaf {
                            logical: end,
                            length: (e_end - end) as u32,
                            unwritten: e.unwritten,
                            physical: e.physical + (end - e.logical),
                        });
                    }
                }
                if !changed {
                    return Ok(None);
                }
                if kept.is_empty() {
                    return Ok(Some(Vec::new()));
                }
                Ok(Some(self.split_leaf(kept, false)))
            }
            ExtentNode::Index { depth, mut entries } => {
                let mut changed = false;
                let mut i = 0;
                while i < entries.len() {
                    let lo = entries[i].logical;
                    let hi = entries.get(i + 1).map_or(u64::MAX, |e| e.logical);
                    // The first child also holds anything below its key.
                    let lo = if i == 0 { 0 } else { lo };
                    if lo >= end {
                        break;
                    }
                    if hi <= start {
                        i += 1;
                        continue;
                    }
                    let child = load_node(self.cache, entries[i].child, depth - 1)?;
                    match self.remove_rec(child, start, end, removed)? {
                        None => i += 1,
                        Some(parts) => {
                            changed = true;
                            let n = parts.len();
                            self.replace_child(&mut entries, i, parts)?;
                            i += n;
                        }
                    }
                }
                if !changed {
                    return Ok(None);
                }
                if entries.is_empty() {
                    return Ok(Some(Vec::new()));
                }
                Ok(Some(self.split_index(depth, entries, false)))
            }
        }
    }
}

/// Merges the extent at `pos` with its neighbours where they are
/// logically and physically adjacent and of the same kind; returns the
/// merged extent's index.
fn merge_at(entries: &mut Vec<ExtentLeaf>, mut pos: usize) -> usize {
    let joinable = |a: &ExtentLeaf, b: &ExtentLeaf| {
        leaf_end(a) == b.logical
            && a.physical + u64::from(a.length) == b.physical
            && a.unwritten == b.unwritten
            && u64::from(a.length) + u64::from(b.length) <= u64::from(EXTENT_MAX_LEN)
    };
    if pos + 1 < entries.len() && joinable(&entries[pos], &entries[pos + 1]) {
        let next = entries.remove(pos + 1);
        entries[pos].length += next.length;
    }
    if pos > 0 && joinable(&entries[pos - 1], &entries[pos]) {
        let cur = entries.remove(pos);
        entries[pos - 1].length += cur.length;
        pos -= 1;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_capacity() {
        let v: Vec<u32> = (0..11).collect();
        assert_eq!(
            chunk(v.clone(), 10, true),
            vec![(0..10).collect(), vec![10]]
        );
        let even = chunk(v.clone(), 10, false);
        assert_eq!(even.len(), 2);
        assert_eq!(even[0].len(), 6);
        assert_eq!(even[1].len(), 5);
        assert_eq!(chunk(v.clone(), 11, false), vec![v.clone()]);
        let many = chunk((0..31).collect::<Vec<u32>>(), 10, false);
        assert_eq!(many.iter().map(Vec::len).collect::<Vec<_>>(), [8, 8, 8, 7]);
    }

    #[test]
    fn merging_joins_adjacent_extents_only() {
        let e = |logical, length, physical| ExtentLeaf {
            logical,
            length,
            unwritten: false,
            physical,
        };
        let mut v = vec![e(0, 2, 100), e(2, 3, 102), e(5, 1, 200)];
        assert_eq!(merge_at(&mut v, 1), 0);
        assert_eq!(v, vec![e(0, 5, 100), e(5, 1, 200)]);
        let mut w = vec![e(0, 2, 100), e(3, 1, 103)];
        assert_eq!(merge_at(&mut w, 1), 1);
        assert_eq!(w.len(), 2);
    }
}
