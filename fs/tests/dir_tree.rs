//! The directory B+tree (`keelfs_fs::dir`) on a Bufio over a Volume over
//! MemDevice legs, with the interim journal and a counting allocator:
//! insert/lookup/remove/replace and their errors, real hash collisions
//! (names built to share a hash, see `dir_support`), readdir offsets that
//! stay valid while the directory changes, growth and shrinkage of the
//! tree (block accounting exact: the tree holds exactly the live blocks),
//! a model-based proptest, and lost writes caught by generations.

mod dir_support;

use dir_support::{colliding_names, Rng, Stack};
use keelfs_fs::dir::{self, MetaTx};
use keelfs_fs::error::FsError;
use keelfs_fs::format::dir::{key_base, DOTDOT_OFFSET};
use keelfs_fs::format::{DirRoot, FileType};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

type Model = BTreeMap<Vec<u8>, (u64, FileType)>;

/// Runs `f` in a transaction handle of the stack's journal.
fn tx<T>(s: &Stack, f: impl FnOnce(&MetaTx<'_, '_>) -> T) -> T {
    let tx = s.journal.start().unwrap();
    let mt = MetaTx::new(&s.cache, &tx, &s.alloc);
    f(&mt)
}

/// Every (name, inode, type, next offset) from `offset` on.
fn list_from(s: &Stack, root: &DirRoot, offset: u64) -> Vec<(Vec<u8>, u64, FileType, u64)> {
    let mut out = Vec::new();
    dir::readdir(&s.cache, root, offset, |e, next| {
        out.push((e.name.clone(), e.inode, e.file_type, next));
        true
    })
    .unwrap();
    out
}

/// The tree is sound, holds exactly the model, and holds exactly the
/// blocks the allocator has live.
fn check(s: &Stack, root: &DirRoot, model: &Model) {
    let stats = dir::verify(&s.cache, root).unwrap();
    assert_eq!(stats.entries, model.len() as u64);
    assert_eq!(dir::count(root), model.len() as u64);
    assert_eq!(stats.empty_leaves, 0, "{stats:?}");
    assert_eq!(stats.blocks(), s.alloc.live_count(), "{stats:?}");
    let listed: Model = list_from(s, root, 0)
        .into_iter()
        .map(|(n, i, t, _)| (n, (i, t)))
        .collect();
    assert_eq!(&listed, model);
    assert_eq!(dir::is_empty(&s.cache, root).unwrap(), model.is_empty());
}

fn name(i: u64) -> Vec<u8> {
    format!("entry-{i:07}").into_bytes()
}

#[test]
fn insert_lookup_remove_and_errors() {
    let s = Stack::new(4096, 256, 2);
    let mut root = DirRoot::empty();
    assert!(dir::is_empty(&s.cache, &root).unwrap());
    assert_eq!(dir::lookup(&s.cache, &root, b"a").unwrap(), None);
    tx(&s, |mt| {
        dir::insert(mt, &mut root, b"a", 10, FileType::Regular).unwrap();
        dir::insert(mt, &mut root, b"sub", 11, FileType::Directory).unwrap();
        assert!(matches!(
            dir::insert(mt, &mut root, b"a", 12, FileType::Regular),
            Err(FsError::Exists)
        ));
        assert_eq!(mt.blocks_delta(), 1);
    });
    assert_eq!(
        dir::lookup(&s.cache, &root, b"a").unwrap(),
        Some((10, FileType::Regular))
    );
    assert_eq!(
        dir::lookup(&s.cache, &root, b"sub").unwrap(),
        Some((11, FileType::Directory))
    );
    assert_eq!(dir::count(&root), 2);
    tx(&s, |mt| {
        assert!(matches!(
            dir::destroy(mt, &mut root),
            Err(FsError::NotEmpty)
        ));
        assert_eq!(
            dir::remove(mt, &mut root, b"a").unwrap(),
            (10, FileType::Regular)
        );
        assert!(matches!(
            dir::remove(mt, &mut root, b"a"),
            Err(FsError::NotFound)
        ));
        assert!(matches!(
            dir::replace(mt, &mut root, b"a", 5, FileType::Regular),
            Err(FsError::NotFound)
        ));
    });
    assert_eq!(dir::lookup(&s.cache, &root, b"a").unwrap(), None);
    tx(&s, |mt| {
        assert_eq!(
            dir::remove(mt, &mut root, b"sub").unwrap(),
            (11, FileType::Directory)
        );
        // The last name gone, the directory holds no block.
        assert_eq!(mt.blocks_delta(), -1);
    });
    assert_eq!(root, DirRoot::empty());
    assert_eq!(s.alloc.live_count(), 0);
    tx(&s, |mt| dir::destroy(mt, &mut root).unwrap());
}

#[test]
fn bad_names_are_refused() {
    let s = Stack::new(4096, 64, 1);
    let mut root = DirRoot::empty();
    let long = vec![b'x'; 256];
    let longest = vec![b'y'; 255];
    tx(&s, |mt| {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert!(
                matches!(
                    dir::insert(mt, &mut root, bad, 3, FileType::Regular),
                    Err(FsError::Invalid(_))
                ),
                "{bad:?}"
            );
            assert!(matches!(
                dir::lookup(&s.cache, &root, bad),
                Err(FsError::Invalid(_))
            ));
            assert!(matches!(
                dir::remove(mt, &mut root, bad),
                Err(FsError::Invalid(_))
            ));
        }
        assert!(matches!(
            dir::insert(mt, &mut root, &long, 3, FileType::Regular),
            Err(FsError::NameTooLong)
        ));
        assert!(matches!(
            dir::lookup(&s.cache, &root, &long),
            Err(FsError::NameTooLong)
        ));
        assert!(matches!(
            dir::insert(mt, &mut root, b"zero", 0, FileType::Regular),
            Err(FsError::Invalid(_))
        ));
        dir::insert(mt, &mut root, &longest, 3, FileType::Symlink).unwrap();
        dir::insert(mt, &mut root, b"...", 4, FileType::Fifo).unwrap();
    });
    assert_eq!(
        dir::lookup(&s.cache, &root, &longest).unwrap(),
        Some((3, FileType::Symlink))
    );
    assert_eq!(dir::count(&root), 2);
}

#[test]
fn colliding_names_take_the_smallest_free_counter() {
    // 1 KiB blocks: 257 colliding 24-byte names need several leaves, so the
    // collision range straddles leaf boundaries.
    let s = Stack::new(1024, 4096, 1);
    let names = colliding_names(b"collision-test-name-0001", 257, 7);
    let base = key_base(&names[0]);
    let mut root = DirRoot::empty();
    let mut model = Model::new();
    // Unrelated names around them.
    tx(&s, |mt| {
        for i in 0..300 {
            dir::insert(mt, &mut root, &name(i), 1000 + i, FileType::Regular).unwrap();
            model.insert(name(i), (1000 + i, FileType::Regular));
        }
        for (i, n) in names[..256].iter().enumerate() {
            let key = dir::insert(mt, &mut root, n, 1 + i as u64, FileType::Regular).unwrap();
            assert_eq!(key, base | i as u64, "the smallest free counter");
            model.insert(n.clone(), (1 + i as u64, FileType::Regular));
        }
        assert!(matches!(
            dir::insert(mt, &mut root, &names[256], 999, FileType::Regular),
            Err(FsError::NoSpace)
        ));
        assert!(matches!(
            dir::insert(mt, &mut root, &names[100], 999, FileType::Regular),
            Err(FsError::Exists)
        ));
    });
    check(&s, &root, &model);
    assert!(dir::verify(&s.cache, &root).unwrap().depth >= 1);
    for (i, n) in names[..256].iter().enumerate() {
        assert_eq!(
            dir::lookup(&s.cache, &root, n).unwrap(),
            Some((1 + i as u64, FileType::Regular))
        );
    }
    assert_eq!(dir::lookup(&s.cache, &root, &names[256]).unwrap(), None);
    tx(&s, |mt| {
        dir::remove(mt, &mut root, &names[7]).unwrap();
        dir::remove(mt, &mut root, &names[200]).unwrap();
        model.remove(&names[7]);
        model.remove(&names[200]);
        let key = dir::insert(mt, &mut root, &names[256], 257, FileType::Socket).unwrap();
        assert_eq!(key, base | 7);
        model.insert(names[256].clone(), (257, FileType::Socket));
        let key = dir::insert(mt, &mut root, &names[7], 8, FileType::Regular).unwrap();
        assert_eq!(key, base | 200);
        model.insert(names[7].clone(), (8, FileType::Regular));
    });
    check(&s, &root, &model);
    // Readdir offsets of the group are its keys + 1, in counter order.
    let offsets: Vec<u64> = list_from(&s, &root, base)
        .into_iter()
        .take_while(|(_, _, _, next)| *next <= (base | 0xff) + 1)
        .map(|(_, _, _, next)| next)
        .collect();
    assert_eq!(offsets, (0..256).map(|c| base + c + 1).collect::<Vec<_>>());
    tx(&s, |mt| {
        for n in model.keys() {
            dir::remove(mt, &mut root, n).unwrap();
        }
    });
    model.clear();
    check(&s, &root, &model);
    assert_eq!(root, DirRoot::empty());
}

#[test]
fn trees_grow_and_shrink_and_hold_exactly_their_blocks() {
    let mut s = Stack::new(1024, 8192, 2);
    let mut root = DirRoot::empty();
    let mut model = Model::new();
    let mut delta = 0i64;
    for chunk in 0..10u64 {
        tx(&s, |mt| {
            for i in chunk * 500..(chunk + 1) * 500 {
                dir::insert(mt, &mut root, &name(i), i + 1, FileType::Regular).unwrap();
                model.insert(name(i), (i + 1, FileType::Regular));
            }
            delta += mt.blocks_delta();
        });
        s.journal.commit().unwrap();
    }
    check(&s, &root, &model);
    let grown = dir::verify(&s.cache, &root).unwrap();
    assert!(grown.depth >= 2, "{grown:?}");
    assert_eq!(delta, grown.blocks() as i64);
    s.drop_cache();
    check(&s, &root, &model);
    // Remove all but every 500th: merging brings the leaves down to a few.
    let mut rng = Rng::new(3);
    let mut order: Vec<u64> = (0..5000).filter(|i| i % 500 != 0).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for chunk in order.chunks(700) {
        tx(&s, |mt| {
            for &i in chunk {
                assert_eq!(
                    dir::remove(mt, &mut root, &name(i)).unwrap(),
                    (i + 1, FileType::Regular)
                );
                model.remove(&name(i));
            }
            delta += mt.blocks_delta();
        });
        check(&s, &root, &model);
    }
    let shrunk = dir::verify(&s.cache, &root).unwrap();
    assert_eq!(shrunk.entries, 10);
    assert_eq!(
        shrunk.depth, 0,
        "10 short names fit in one leaf: {shrunk:?}"
    );
    assert_eq!(shrunk.leaves, 1);
    assert_eq!(delta, 1);
    s.drop_cache();
    check(&s, &root, &model);
    tx(&s, |mt| {
        assert!(matches!(
            dir::destroy(mt, &mut root),
            Err(FsError::NotEmpty)
        ));
        for i in (0..5000).step_by(500) {
            dir::remove(mt, &mut root, &name(i)).unwrap();
        }
        dir::destroy(mt, &mut root).unwrap();
    });
    assert_eq!(s.alloc.live_count(), 0);
}

#[test]
fn replace_keeps_the_key_and_returns_the_old_target() {
    let s = Stack::new(1024, 1024, 1);
    let mut root = DirRoot::empty();
    let key = tx(&s, |mt| {
        for i in 0..100 {
            dir::insert(mt, &mut root, &name(i), i + 1, FileType::Regular).unwrap();
        }
        dir::insert(mt, &mut root, b"target", 500, FileType::Regular).unwrap()
    });
    tx(&s, |mt| {
        assert_eq!(
            dir::replace(mt, &mut root, b"target", 600, FileType::Directory).unwrap(),
            (500, FileType::Regular)
        );
    });
    assert_eq!(
        dir::lookup(&s.cache, &root, b"target").unwrap(),
        Some((600, FileType::Directory))
    );
    let listed = list_from(&s, &root, key);
    assert_eq!(listed[0].0, b"target");
    assert_eq!(listed[0].3, key + 1);
    assert_eq!(dir::count(&root), 101);
}

#[test]
fn readdir_offsets_stay_valid_while_the_directory_changes() {
    let s = Stack::new(1024, 8192, 1);
    let mut root = DirRoot::empty();
    let mut rng = Rng::new(11);
    let mut present: BTreeSet<Vec<u8>> = BTreeSet::new();
    tx(&s, |mt| {
        for i in 0..2000 {
            dir::insert(mt, &mut root, &name(i), i + 1, FileType::Regular).unwrap();
            present.insert(name(i));
        }
    });
    let initial = present.clone();
    let mut removed: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut ever: BTreeSet<Vec<u8>> = present.clone();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut offset = DOTDOT_OFFSET + 1;
    let mut next_new = 10_000u64;
    loop {
        let mut batch = Vec::new();
        dir::readdir(&s.cache, &root, offset, |e, next| {
            if batch.len() == 37 {
                return false;
            }
            batch.push(e.name.clone());
            offset = next;
            true
        })
        .unwrap();
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
        // Between two calls: add 20 names, remove 15 (seen or not).
        tx(&s, |mt| {
            for _ in 0..20 {
                let n = name(next_new);
                next_new += 1;
                dir::insert(mt, &mut root, &n, next_new, FileType::Regular).unwrap();
                present.insert(n.clone());
                ever.insert(n);
            }
            for _ in 0..15 {
                let victim = present
                    .iter()
                    .nth(rng.below(present.len() as u64) as usize)
                    .unwrap()
                    .clone();
                dir::remove(mt, &mut root, &victim).unwrap();
                present.remove(&victim);
                removed.insert(victim);
            }
        });
    }
    let seen_set: BTreeSet<Vec<u8>> = seen.iter().cloned().collect();
    assert_eq!(seen_set.len(), seen.len(), "a name was returned twice");
    assert!(seen_set.is_subset(&ever));
    for n in initial.difference(&removed) {
        assert!(
            seen_set.contains(n),
            "{n:?} present throughout, never returned"
        );
    }
    let stats = dir::verify(&s.cache, &root).unwrap();
    assert_eq!(stats.entries, present.len() as u64);
}

#[test]
fn readdir_resumes_at_an_offset_whose_entry_was_removed() {
    let s = Stack::new(1024, 4096, 1);
    let mut root = DirRoot::empty();
    tx(&s, |mt| {
        for i in 0..500 {
            dir::insert(mt, &mut root, &name(i), i + 1, FileType::Regular).unwrap();
        }
    });
    let all = list_from(&s, &root, 0);
    assert_eq!(all.len(), 500);
    for cut in [0usize, 1, 57, 250, 498] {
        // A listing stopped after entry `cut`; that entry and the next one
        // are removed; the listing resumes at the offset after `cut`.
        let mut root = root;
        let resume = all[cut].3;
        tx(&s, |mt| {
            dir::remove(mt, &mut root, &all[cut].0).unwrap();
            dir::remove(mt, &mut root, &all[cut + 1].0).unwrap();
        });
        let rest: Vec<Vec<u8>> = list_from(&s, &root, resume)
            .into_iter()
            .map(|x| x.0)
            .collect();
        let want: Vec<Vec<u8>> = all[cut + 2..].iter().map(|x| x.0.clone()).collect();
        assert_eq!(rest, want, "cut at {cut}");
        tx(&s, |mt| {
            dir::insert(mt, &mut root, &all[cut].0, all[cut].1, FileType::Regular).unwrap();
            dir::insert(
                mt,
                &mut root,
                &all[cut + 1].0,
                all[cut + 1].1,
                FileType::Regular,
            )
            .unwrap();
        });
    }
    // Offsets past the last key, and the largest offset, list nothing.
    assert!(list_from(&s, &root, all[499].3).is_empty());
    assert!(list_from(&s, &root, u64::MAX).is_empty());
    // Offsets 0, 1 and 2 all start at the first name.
    for o in 0..=2 {
        assert_eq!(list_from(&s, &root, o).len(), 500);
    }
}

#[test]
fn a_lost_write_is_caught_by_the_generation_its_parent_records() {
    let mut s = Stack::new(1024, 2048, 1);
    let mut root = DirRoot::empty();
    tx(&s, |mt| {
        for i in 0..400 {
            dir::insert(mt, &mut root, &name(i), i + 1, FileType::Regular).unwrap();
        }
    });
    s.drop_cache();
    let before = device_image(&s);
    tx(&s, |mt| {
        dir::replace(mt, &mut root, &name(5), 777, FileType::Regular).unwrap();
    });
    s.drop_cache();
    let after = device_image(&s);
    // The leaf that changed (kind 10 in its header) loses its write: the
    // device keeps its old, well-sealed bytes.
    let block = |img: &[u8], b: usize| img[b * 1024..(b + 1) * 1024].to_vec();
    let leaf = (0..after.len() / 1024)
        .find(|&b| block(&after, b) != block(&before, b) && after[b * 1024 + 40] == 10)
        .expect("a changed leaf");
    s.store
        .set()
        .leg_device(0)
        .write_at(leaf as u64 * 1024, &block(&before, leaf))
        .unwrap();
    s.drop_cache();
    let err = dir::lookup(&s.cache, &root, &name(5)).unwrap_err();
    assert!(matches!(err, FsError::Engine(_)), "{err:?}");
    // Only the names of that one leaf are unreachable.
    let lost = (0..400)
        .filter(|&i| dir::lookup(&s.cache, &root, &name(i)).is_err())
        .count();
    assert!((1..=40).contains(&lost), "{lost} names lost");
}

fn device_image(s: &Stack) -> Vec<u8> {
    let dev = s.store.set().leg_device(0);
    let mut buf = vec![0u8; dev.size() as usize];
    dev.read_at(0, &mut buf).unwrap();
    buf
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, u64),
    Remove(usize),
    Replace(usize, u64),
    Lookup(usize),
    Commit,
}

fn op_strategy(pool: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..pool, 1u64..1_000_000).prop_map(|(n, i)| Op::Insert(n, i)),
        3 => (0..pool).prop_map(Op::Remove),
        1 => (0..pool, 1u64..1_000_000).prop_map(|(n, i)| Op::Replace(n, i)),
        2 => (0..pool).prop_map(Op::Lookup),
        1 => Just(Op::Commit),
    ]
}

/// The name pool: 40 names sharing one hash, 40 sharing another, and
/// plain names of assorted lengths (long ones make leaves split often).
fn pool() -> Vec<Vec<u8>> {
    let mut names = colliding_names(b"group-one-base", 40, 1);
    names.extend(colliding_names(b"group-two-base-longer-name", 40, 2));
    for i in 0..220u64 {
        let len = 1 + (i * 37 % 120) as usize;
        let mut n = format!("n{i}-").into_bytes();
        n.resize(len.max(n.len()), b'a' + (i % 26) as u8);
        names.push(n);
    }
    names
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn the_tree_behaves_like_a_map(ops in prop::collection::vec(op_strategy(300), 1..400)) {
        let names = pool();
        let s = Stack::new(1024, 16384, 1);
        let mut root = DirRoot::empty();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Insert(n, ino) => {
                    let got = tx(&s, |mt| dir::insert(mt, &mut root, &names[n], ino, FileType::Regular));
                    if model.contains_key(&names[n]) {
                        prop_assert!(matches!(got, Err(FsError::Exists)));
                    } else {
                        prop_assert!(got.is_ok());
                        model.insert(names[n].clone(), (ino, FileType::Regular));
                    }
                }
                Op::Remove(n) => {
                    let got = tx(&s, |mt| dir::remove(mt, &mut root, &names[n]));
                    match model.remove(&names[n]) {
                        Some(old) => prop_assert_eq!(got.unwrap(), old),
                        None => prop_assert!(matches!(got, Err(FsError::NotFound))),
                    }
                }
                Op::Replace(n, ino) => {
                    let got = tx(&s, |mt| dir::replace(mt, &mut root, &names[n], ino, FileType::Symlink));
                    match model.get_mut(&names[n]) {
                        Some(v) => {
                            prop_assert_eq!(got.unwrap(), *v);
                            *v = (ino, FileType::Symlink);
                        }
                        None => prop_assert!(matches!(got, Err(FsError::NotFound))),
                    }
                }
                Op::Lookup(n) => {
                    prop_assert_eq!(
                        dir::lookup(&s.cache, &root, &names[n]).unwrap(),
                        model.get(&names[n]).copied()
                    );
                }
                Op::Commit => s.journal.commit().unwrap(),
            }
        }
        check(&s, &root, &model);
    }
}

#[test]
fn running_out_of_blocks_leaves_the_tree_intact() {
    // 1 KiB blocks, 120 blocks for the tree: inserts fail with NoSpace
    // when a split cannot get its blocks, and change nothing.
    let mut s = Stack::new(1024, 4096, 1);
    s.alloc = dir_support::CountingAlloc::new(1, 121);
    let mut root = DirRoot::empty();
    let mut model = Model::new();
    let mut failures = 0;
    for i in 0..5000u64 {
        let got = tx(&s, |mt| {
            dir::insert(mt, &mut root, &name(i), i + 1, FileType::Regular)
        });
        match got {
            Ok(_) => {
                model.insert(name(i), (i + 1, FileType::Regular));
            }
            Err(FsError::NoSpace) => {
                failures += 1;
                if failures == 50 {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(failures, 50);
    assert_eq!(s.alloc.live_count(), 120);
    check(&s, &root, &model);
    s.drop_cache();
    check(&s, &root, &model);
    // Removing names makes room again.
    tx(&s, |mt| {
        for n in model.keys().take(1000).cloned().collect::<Vec<_>>() {
            dir::remove(mt, &mut root, &n).unwrap();
            model.remove(&n);
        }
        dir::insert(mt, &mut root, b"again", 1, FileType::Regular).unwrap();
        model.insert(b"again".to_vec(), (1, FileType::Regular));
    });
    check(&s, &root, &model);
}
