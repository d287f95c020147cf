//! The extent tree against a model (a map of logical block → physical
//! block and kind), with 1 KiB blocks so trees get deep quickly; the tree's
//! invariants after every step; every node block given back at the end;
//! and lookups in a file of 100 000 extents costing a few block reads.

mod core_support;

use core_support::*;
use keelfs_fs::core::extent::{self, PieceKind, TreeWriter};
use keelfs_fs::core::Fs;
use keelfs_fs::format::{DataArea, ExtentLeaf, ExtentNode};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// logical block → (physical block, unwritten)
type Model = BTreeMap<u64, (u64, bool)>;

#[derive(Debug, Clone)]
enum Op {
    /// Map a hole run at `logical` (clipped to the hole), physically
    /// adjacent to the previous block when `follow`, else at `physical`.
    Insert {
        logical: u64,
        len: u64,
        follow: bool,
        physical: u64,
        unwritten: bool,
    },
    Remove {
        logical: u64,
        len: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..4000, 1u64..40, any::<bool>(), 1u64..1_000_000, any::<bool>()).prop_map(
            |(logical, len, follow, physical, unwritten)| Op::Insert {
                logical,
                len,
                follow,
                physical: physical * 100,
                unwritten
            }
        ),
        1 => (0u64..4000, 1u64..300).prop_map(|(logical, len)| Op::Remove { logical, len }),
    ]
}

/// Checks the tree against the model: every extent, lookups and `map`.
fn check(fs: &Fs, root: &ExtentNode, model: &Model) {
    let mut seen = Model::new();
    let mut last_end = 0;
    extent::for_each(fs.cache(), root, &mut |e| {
        assert!(e.logical >= last_end, "extents out of order or overlapping");
        last_end = e.logical + u64::from(e.length);
        for k in 0..u64::from(e.length) {
            seen.insert(e.logical + k, (e.physical + k, e.unwritten));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(&seen, model);
    let pieces = extent::map(fs.cache(), root, 0, 4400).unwrap();
    let mut pos = 0;
    for p in &pieces {
        assert_eq!(p.logical, pos, "pieces are contiguous");
        pos = p.end();
        for k in 0..p.len {
            let want = model.get(&(p.logical + k)).copied();
            let got = match p.kind {
                PieceKind::Hole => None,
                PieceKind::Data { physical } => Some((physical + k, false)),
                PieceKind::Unwritten { physical } => Some((physical + k, true)),
            };
            assert_eq!(got, want, "block {}", p.logical + k);
        }
    }
    assert_eq!(pos, 4400);
    check_shape(fs, root);
}

/// Index keys equal their child's first key; no node is empty (but the
/// root); depths are consistent (load_node checks them).
fn check_shape(fs: &Fs, node: &ExtentNode) {
    if let ExtentNode::Index { depth, entries } = node {
        for e in entries {
            let child = extent::load_node(fs.cache(), e.child, depth - 1).unwrap();
            let first = match &child {
                ExtentNode::Leaf(v) => v[0].logical,
                ExtentNode::Index { entries, .. } => entries[0].logical,
            };
            assert_eq!(e.logical, first, "index key of child {}", e.child.block);
            check_shape(fs, &child);
        }
    }
}

fn apply(fs: &Fs, root: &mut ExtentNode, model: &mut Model, nodes: &mut i64, op: &Op) {
    let tx = fs.journal().start().unwrap();
    let mut tree = TreeWriter::new(fs.cache(), fs.blocks(), &tx, fs.layout().data.start);
    match *op {
        Op::Insert {
            logical,
            len,
            follow,
            physical,
            unwritten,
        } => {
            if model.contains_key(&logical) {
                return;
            }
            let len = (0..len)
                .take_while(|k| !model.contains_key(&(logical + k)))
                .count() as u64;
            let physical = match (follow, logical.checked_sub(1).and_then(|p| model.get(&p))) {
                (true, Some(&(p, _))) => p + 1,
                _ => physical,
            };
            let unwritten = if follow {
                logical
                    .checked_sub(1)
                    .and_then(|p| model.get(&p))
                    .map_or(unwritten, |&(_, u)| u)
            } else {
                unwritten
            };
            tree.insert(
                root,
                ExtentLeaf {
                    logical,
                    length: len as u32,
                    unwritten,
                    physical,
                },
            )
            .unwrap();
            for k in 0..len {
                model.insert(logical + k, (physical + k, unwritten));
            }
        }
        Op::Remove { logical, len } => {
            let removed = tree.remove(root, logical, logical + len).unwrap();
            let want: Model = model
                .range(logical..logical.saturating_add(len))
                .map(|(&b, &v)| (b, v))
                .collect();
            for b in want.keys() {
                model.remove(b);
            }
            let mut got = Model::new();
            for e in removed {
                for k in 0..u64::from(e.length) {
                    got.insert(e.logical + k, (e.physical + k, e.unwritten));
                }
            }
            assert_eq!(got, want, "removed pieces");
        }
    }
    *nodes += tree.node_blocks_delta();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn the_tree_agrees_with_a_model(ops in prop::collection::vec(op(), 1..300)) {
        let legs = Legs::mem(1, 8 * MIB, &opts(1024));
        let fs = legs.mount();
        let free0 = fs.blocks().free_blocks();
        let mut root = ExtentNode::empty();
        let mut model = Model::new();
        let mut nodes = 0i64;
        for (i, op) in ops.iter().enumerate() {
            apply(&fs, &mut root, &mut model, &mut nodes, op);
            if i % 25 == 0 || i + 1 == ops.len() {
                check(&fs, &root, &model);
                let blocks = extent::node_blocks(fs.cache(), &root).unwrap();
                prop_assert_eq!(blocks.len() as i64, nodes, "node block count");
                fs.journal().commit().unwrap();
            }
        }
        // Taking everything out gives every node block back.
        {
            let tx = fs.journal().start().unwrap();
            let mut tree = TreeWriter::new(fs.cache(), fs.blocks(), &tx, 0);
            tree.remove(&mut root, 0, u64::MAX).unwrap();
            nodes += tree.node_blocks_delta();
        }
        prop_assert_eq!(root.clone(), ExtentNode::empty());
        prop_assert_eq!(nodes, 0);
        fs.journal().commit().unwrap();
        prop_assert_eq!(fs.blocks().free_blocks(), free0);
        fs.unmount().unwrap();
    }
}

#[test]
fn deep_trees_grow_and_shrink() {
    // Appends of non-adjacent extents: with 1 KiB blocks (40 entries per
    // node) 20 000 extents need three levels below the root.
    let legs = Legs::mem(2, 8 * MIB, &opts(1024));
    let fs = legs.mount();
    let free0 = fs.blocks().free_blocks();
    let mut root = ExtentNode::empty();
    let mut model = Model::new();
    let mut nodes = 0i64;
    for i in 0..20_000u64 {
        let op = Op::Insert {
            logical: 2 * i,
            len: 1,
            follow: false,
            physical: 1_000_000 + 3 * i,
            unwritten: i % 3 == 0,
        };
        apply(&fs, &mut root, &mut model, &mut nodes, &op);
        if i % 2000 == 0 {
            fs.journal().commit().unwrap();
        }
    }
    assert_eq!(root.depth(), 3, "root {root:?}");
    let leaves = 20_000 / 40;
    let blocks = extent::node_blocks(fs.cache(), &root).unwrap().len();
    assert!(
        blocks < leaves * 11 / 10 + 40,
        "appends fill nodes: {blocks} node blocks for {leaves} full leaves"
    );
    // Punching the middle of every other extent run splits nothing (the
    // extents are one block) but removes half of them.
    for i in (0..20_000u64).step_by(2) {
        apply(
            &fs,
            &mut root,
            &mut model,
            &mut nodes,
            &Op::Remove {
                logical: 2 * i,
                len: 1,
            },
        );
        if i % 2000 == 0 {
            fs.journal().commit().unwrap();
        }
    }
    check(&fs, &root, &model);
    {
        let tx = fs.journal().start().unwrap();
        let mut tree = TreeWriter::new(fs.cache(), fs.blocks(), &tx, 0);
        tree.remove(&mut root, 0, 39_960).unwrap();
        nodes += tree.node_blocks_delta();
    }
    assert!(root.depth() <= 1, "the tree shrank: {root:?}");
    {
        let tx = fs.journal().start().unwrap();
        let mut tree = TreeWriter::new(fs.cache(), fs.blocks(), &tx, 0);
        tree.remove(&mut root, 0, u64::MAX).unwrap();
        nodes += tree.node_blocks_delta();
    }
    assert_eq!(root, ExtentNode::empty());
    assert_eq!(nodes, 0);
    fs.journal().commit().unwrap();
    assert_eq!(fs.blocks().free_blocks(), free0);
    fs.unmount().unwrap();
}

#[test]
fn a_lookup_among_100k_extents_reads_a_few_blocks() {
    let legs = Legs::mem(2, 64 * MIB, &opts(4096));
    let fs = legs.mount();
    let ino = new_file(&fs);
    let count = 100_000u64;
    let mut i = 0;
    while i < count {
        {
            let tx = fs.journal().start().unwrap();
            let cell = fs.inode(ino).unwrap();
            let mut state = cell.write();
            if matches!(state.data, DataArea::Inline(_)) {
                state.data = DataArea::Extents(ExtentNode::empty());
            }
            let DataArea::Extents(root) = &mut state.inode.data else {
                panic!()
            };
            let mut tree = TreeWriter::new(fs.cache(), fs.blocks(), &tx, 0);
            let stop = (i + 5000).min(count);
            while i < stop {
                tree.insert(
                    root,
                    ExtentLeaf {
                        logical: 2 * i,
                        length: 1,
                        unwritten: false,
                        physical: 5_000_000 + 3 * i,
                    },
                )
                .unwrap();
                i += 1;
            }
            let delta = tree.node_blocks_delta();
            state.inode.blocks = state.inode.blocks.saturating_add_signed(delta);
            state.inode.size = 2 * i * 4096;
            fs.store_inode(&tx, &state).unwrap();
        }
        fs.journal().commit().unwrap();
    }
    let depth = {
        let cell = fs.inode(ino).unwrap();
        let state = cell.read();
        let DataArea::Extents(root) = &state.data else {
            panic!()
        };
        let nodes = extent::node_blocks(fs.cache(), root).unwrap().len();
        assert!(nodes > 500, "{nodes} node blocks");
        root.depth()
    };
    assert_eq!(depth, 2);
    fs.unmount().unwrap();

    // Cold cache: each lookup reads at most one block per level.
    let fs = legs.mount();
    let cell = fs.inode(ino).unwrap();
    let state = cell.read();
    let DataArea::Extents(root) = &state.data else {
        panic!()
    };
    for probe in [0u64, 77_777, 2 * count - 2, 123_457, 199_990] {
        let before = fs.cache().stats().misses;
        let found = extent::lookup(fs.cache(), root, probe).unwrap();
        let reads = fs.cache().stats().misses - before;
        assert!(
            reads <= u64::from(depth),
            "lookup of {probe}: {reads} block reads"
        );
        if probe % 2 == 0 {
            assert_eq!(found.unwrap().physical, 5_000_000 + 3 * (probe / 2));
        } else {
            assert!(found.is_none());
        }
    }
    drop(state);
    fs.unmount().unwrap();
}

#[test]
fn tail_cuts_take_bounded_steps_from_the_end() {
    let legs = Legs::mem(1, 8 * MIB, &opts(1024));
    let fs = legs.mount();
    let mut root = ExtentNode::empty();
    let mut model = Model::new();
    let mut nodes = 0i64;
    for i in 0..500u64 {
        let op = Op::Insert {
            logical: 3 * i,
            len: 2,
            follow: false,
            physical: 1_000_000 + 5 * i,
            unwritten: false,
        };
        apply(&fs, &mut root, &mut model, &mut nodes, &op);
    }
    // From the middle of an extent: that extent is trimmed, nothing below.
    let cut = extent::tail_cut(fs.cache(), &root, 1498, 64)
        .unwrap()
        .unwrap();
    assert!(cut >= 1498);
    let mut steps = 0;
    let from = 301; // inside the extent at 300..302
    while let Some(cut) = extent::tail_cut(fs.cache(), &root, from, 64).unwrap() {
        assert!(cut >= from);
        let before = model.len();
        apply(
            &fs,
            &mut root,
            &mut model,
            &mut nodes,
            &Op::Remove {
                logical: cut,
                len: 1 << 40,
            },
        );
        let gone = (before - model.len()) as u64;
        assert!((1..=128).contains(&gone), "a step removed {gone} blocks");
        steps += 1;
        assert!(steps < 100);
    }
    assert!(steps >= 5, "{steps} steps");
    assert_eq!(model.keys().next_back(), Some(&300));
    check(&fs, &root, &model);
    fs.unmount().unwrap();
}
