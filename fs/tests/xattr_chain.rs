//! Extended attributes (`keelfs_fs::xattr`) on the dir test stack: get /
//! set / list / remove, create-only and replace-only, the errors of names
//! and values, values spanning many chain blocks, block accounting, the
//! rewrite that skips unchanged tail blocks, the size cap, corrupt chains,
//! and a model-based proptest.

mod dir_support;

use dir_support::Stack;
use keelfs_fs::error::FsError;
use keelfs_fs::format::xattr::encode_xattr_block;
use keelfs_fs::format::{BlockKind, BlockRef};
use keelfs_fs::meta_tx::MetaTx;
use keelfs_fs::xattr::{self, SetMode};
use proptest::prelude::*;

fn tx<T>(s: &Stack, f: impl FnOnce(&MetaTx<'_, '_>) -> T) -> T {
    let tx = s.journal.start().unwrap();
    let mt = MetaTx::new(&s.cache, &tx, &s.alloc);
    f(&mt)
}

fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn set_get_list_remove() {
    let s = Stack::new(4096, 256, 2);
    let mut chain = None;
    assert!(matches!(
        xattr::get(&s.cache, chain, b"user.a"),
        Err(FsError::NoAttr)
    ));
    assert!(xattr::list(&s.cache, chain).unwrap().is_empty());
    let acl = vec![2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff];
    tx(&s, |mt| {
        xattr::set(mt, &mut chain, b"user.a", b"one", SetMode::Upsert).unwrap();
        xattr::set(mt, &mut chain, b"trusted.t", b"", SetMode::Upsert).unwrap();
        xattr::set(
            mt,
            &mut chain,
            b"system.posix_acl_access",
            &acl,
            SetMode::Upsert,
        )
        .unwrap();
        xattr::set(
            mt,
            &mut chain,
            b"security.selinux",
            b"ctx\0",
            SetMode::Upsert,
        )
        .unwrap();
        xattr::set(mt, &mut chain, b"user.a", b"uno", SetMode::Upsert).unwrap();
        assert_eq!(mt.blocks_delta(), 1);
    });
    assert_eq!(xattr::get(&s.cache, chain, b"user.a").unwrap(), b"uno");
    assert_eq!(xattr::get(&s.cache, chain, b"trusted.t").unwrap(), b"");
    assert_eq!(
        xattr::get(&s.cache, chain, b"system.posix_acl_access").unwrap(),
        acl
    );
    assert_eq!(
        xattr::list(&s.cache, chain).unwrap(),
        vec![
            b"user.a".to_vec(),
            b"trusted.t".to_vec(),
            b"system.posix_acl_access".to_vec(),
            b"security.selinux".to_vec()
        ]
    );
    tx(&s, |mt| {
        xattr::remove(mt, &mut chain, b"trusted.t").unwrap();
        assert!(matches!(
            xattr::remove(mt, &mut chain, b"trusted.t"),
            Err(FsError::NoAttr)
        ));
    });
    assert!(matches!(
        xattr::get(&s.cache, chain, b"trusted.t"),
        Err(FsError::NoAttr)
    ));
    tx(&s, |mt| {
        for n in [
            &b"user.a"[..],
            b"system.posix_acl_access",
            b"security.selinux",
        ] {
            xattr::remove(mt, &mut chain, n).unwrap();
        }
        assert_eq!(mt.blocks_delta(), -1);
    });
    assert_eq!(chain, None);
    assert_eq!(s.alloc.live_count(), 0);
}

#[test]
fn create_only_and_replace_only() {
    let s = Stack::new(4096, 64, 1);
    let mut chain = None;
    tx(&s, |mt| {
        assert!(matches!(
            xattr::set(mt, &mut chain, b"user.x", b"1", SetMode::ReplaceOnly),
            Err(FsError::NoAttr)
        ));
        xattr::set(mt, &mut chain, b"user.x", b"1", SetMode::CreateOnly).unwrap();
        assert!(matches!(
            xattr::set(mt, &mut chain, b"user.x", b"2", SetMode::CreateOnly),
            Err(FsError::Exists)
        ));
        xattr::set(mt, &mut chain, b"user.x", b"3", SetMode::ReplaceOnly).unwrap();
    });
    assert_eq!(xattr::get(&s.cache, chain, b"user.x").unwrap(), b"3");
    assert_eq!(SetMode::from_flags(0).unwrap(), SetMode::Upsert);
    assert_eq!(SetMode::from_flags(1).unwrap(), SetMode::CreateOnly);
    assert_eq!(SetMode::from_flags(2).unwrap(), SetMode::ReplaceOnly);
    assert!(matches!(SetMode::from_flags(3), Err(FsError::Invalid(_))));
    assert!(matches!(SetMode::from_flags(8), Err(FsError::Invalid(_))));
}

#[test]
fn bad_names_and_values() {
    let s = Stack::new(4096, 64, 1);
    let mut chain = None;
    let mut long = b"user.".to_vec();
    long.resize(256, b'n');
    let mut longest = long.clone();
    longest.truncate(255);
    tx(&s, |mt| {
        let mut set = |name: &[u8], len: usize| {
            xattr::set(mt, &mut chain, name, &vec![7; len], SetMode::Upsert)
        };
        assert!(matches!(set(b"", 1), Err(FsError::Range)));
        assert!(matches!(set(&long, 1), Err(FsError::NameTooLong)));
        assert!(matches!(set(b"user.", 1), Err(FsError::Invalid(_))));
        assert!(matches!(set(b"user.a\0b", 1), Err(FsError::Invalid(_))));
        assert!(matches!(set(b"other.a", 1), Err(FsError::NotSupported)));
        assert!(matches!(set(b"user", 1), Err(FsError::NotSupported)));
        assert!(matches!(
            set(b"user.big", 65537),
            Err(FsError::ValueTooLarge)
        ));
        set(b"user.big", 65536).unwrap();
        set(&longest, 0).unwrap();
        set(b"system.other", 3).unwrap();
    });
    assert!(matches!(
        xattr::get(&s.cache, chain, b"nope.x"),
        Err(FsError::NotSupported)
    ));
    assert_eq!(
        xattr::get(&s.cache, chain, b"user.big").unwrap().len(),
        65536
    );
    assert_eq!(xattr::get(&s.cache, chain, &longest).unwrap(), b"");
}

#[test]
fn large_values_span_blocks_and_blocks_are_accounted() {
    let mut s = Stack::new(1024, 2048, 2);
    let mut chain = None;
    let big = value(65536, 1);
    let delta = tx(&s, |mt| {
        xattr::set(mt, &mut chain, b"user.big", &big, SetMode::Upsert).unwrap();
        xattr::set(mt, &mut chain, b"user.small", b"s", SetMode::Upsert).unwrap();
        mt.blocks_delta()
    });
    // Entries of 6 + name + value bytes; 952 blob bytes per 1 KiB block.
    let blob: usize = 65536 + 6 + 3 + 1 + 6 + 5;
    let want_blocks = blob.div_ceil(952) as i64;
    assert_eq!(delta, want_blocks);
    assert_eq!(s.alloc.live_count() as i64, want_blocks);
    s.drop_cache();
    assert_eq!(xattr::get(&s.cache, chain, b"user.big").unwrap(), big);
    assert_eq!(xattr::get(&s.cache, chain, b"user.small").unwrap(), b"s");
    // Shrinking gives blocks back.
    let delta = tx(&s, |mt| {
        xattr::set(mt, &mut chain, b"user.big", b"tiny", SetMode::ReplaceOnly).unwrap();
        mt.blocks_delta()
    });
    assert_eq!(delta, 1 - want_blocks);
    assert_eq!(s.alloc.live_count(), 1);
    s.drop_cache();
    assert_eq!(xattr::get(&s.cache, chain, b"user.big").unwrap(), b"tiny");
    tx(&s, |mt| xattr::destroy(mt, &mut chain).unwrap());
    assert_eq!(chain, None);
    assert_eq!(s.alloc.live_count(), 0);
}

#[test]
fn a_change_rewrites_only_the_blocks_up_to_the_last_changed_one() {
    let mut s = Stack::new(1024, 2048, 1);
    let mut chain = None;
    tx(&s, |mt| {
        xattr::set(mt, &mut chain, b"user.first", b"aaaa", SetMode::Upsert).unwrap();
        xattr::set(
            mt,
            &mut chain,
            b"user.rest",
            &value(20_000, 3),
            SetMode::Upsert,
        )
        .unwrap();
    });
    s.drop_cache();
    let before = chain;
    // Same-length change at the start of the blob: only block 0 changes.
    tx(&s, |mt| {
        xattr::set(mt, &mut chain, b"user.first", b"bbbb", SetMode::Upsert).unwrap();
    });
    assert_eq!(s.cache.stats().pinned_buffers, 1);
    assert_eq!(chain.map(|c| c.block), before.map(|c| c.block));
    assert_ne!(chain, before);
    s.drop_cache();
    assert_eq!(xattr::get(&s.cache, chain, b"user.first").unwrap(), b"bbbb");
    assert_eq!(
        xattr::get(&s.cache, chain, b"user.rest").unwrap(),
        value(20_000, 3)
    );
    // Setting a value to what it is rewrites nothing at all.
    tx(&s, |mt| {
        xattr::set(mt, &mut chain, b"user.first", b"bbbb", SetMode::Upsert).unwrap();
    });
    assert_eq!(s.cache.stats().pinned_buffers, 0);
}

#[test]
fn the_blob_is_capped() {
    let s = Stack::new(4096, 1024, 1);
    let mut chain = None;
    tx(&s, |mt| {
        for i in 0..3 {
            let name = format!("user.v{i}");
            xattr::set(
                mt,
                &mut chain,
                name.as_bytes(),
                &value(65536, i),
                SetMode::Upsert,
            )
            .unwrap();
        }
        assert!(matches!(
            xattr::set(
                mt,
                &mut chain,
                b"user.v3",
                &value(65536, 3),
                SetMode::Upsert
            ),
            Err(FsError::NoSpace)
        ));
        // Nothing changed by the refusal; smaller values still fit.
        xattr::set(
            mt,
            &mut chain,
            b"user.v3",
            &value(60000, 3),
            SetMode::Upsert,
        )
        .unwrap();
    });
    assert_eq!(xattr::list(&s.cache, chain).unwrap().len(), 4);
}

#[test]
fn corrupt_chains_are_errors_not_hangs() {
    let s = Stack::new(1024, 64, 1);
    // Two blocks pointing at each other.
    let chain = tx(&s, |mt| {
        let gen = mt.generation();
        let mut payload = vec![0u8; mt.payload_len()];
        let piece = [1u8, 1, 1, 0, 0, 0, b'a', b'v'];
        encode_xattr_block(
            Some(BlockRef {
                block: 11,
                generation: gen,
            }),
            &piece,
            &mut payload,
        )
        .unwrap();
        let first = mt.write(10, None, BlockKind::Xattr, &payload).unwrap();
        encode_xattr_block(
            Some(BlockRef {
                block: 10,
                generation: gen,
            }),
            &piece,
            &mut payload,
        )
        .unwrap();
        mt.write(11, None, BlockKind::Xattr, &payload).unwrap();
        Some(first)
    });
    assert!(matches!(
        xattr::list(&s.cache, chain),
        Err(FsError::Corrupt(_))
    ));
    // A chain pointing at a block of another kind, or with a generation
    // the block does not have.
    let wrong_kind = tx(&s, |mt| {
        let payload = vec![0u8; mt.payload_len()];
        Some(mt.write(12, None, BlockKind::ExtentNode, &payload).unwrap())
    });
    assert!(matches!(
        xattr::list(&s.cache, wrong_kind),
        Err(FsError::Corrupt(_))
    ));
    let wrong_gen = chain.map(|c| BlockRef {
        block: c.block,
        generation: c.generation + 5,
    });
    assert!(matches!(
        xattr::list(&s.cache, wrong_gen),
        Err(FsError::Corrupt(_))
    ));
    // Blob bytes that do not decode.
    let garbage = tx(&s, |mt| {
        let mut payload = vec![0u8; mt.payload_len()];
        encode_xattr_block(None, &[9, 9, 9], &mut payload).unwrap();
        Some(mt.write(13, None, BlockKind::Xattr, &payload).unwrap())
    });
    assert!(matches!(
        xattr::get(&s.cache, garbage, b"user.a"),
        Err(FsError::Format(_))
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Set(usize, usize, u8),
    Remove(usize),
    Commit,
}

const NAMES: [&[u8]; 6] = [
    b"user.a",
    b"user.long-attribute-name",
    b"trusted.b",
    b"security.c",
    b"system.posix_acl_default",
    b"system.posix_acl_access",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn attributes_behave_like_an_ordered_map(ops in prop::collection::vec(
        prop_oneof![
            4 => (0..NAMES.len(), 0usize..3000, any::<u8>()).prop_map(|(n, l, v)| Op::Set(n, l, v)),
            2 => (0..NAMES.len()).prop_map(Op::Remove),
            1 => Just(Op::Commit),
        ],
        1..40,
    )) {
        let s = Stack::new(1024, 4096, 1);
        let mut chain = None;
        let mut model: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for op in ops {
            match op {
                Op::Set(n, len, seed) => {
                    let v = value(len, seed);
                    tx(&s, |mt| xattr::set(mt, &mut chain, NAMES[n], &v, SetMode::Upsert)).unwrap();
                    match model.iter_mut().find(|(k, _)| k == NAMES[n]) {
                        Some(e) => e.1 = v,
                        None => model.push((NAMES[n].to_vec(), v)),
                    }
                }
                Op::Remove(n) => {
                    let got = tx(&s, |mt| xattr::remove(mt, &mut chain, NAMES[n]));
                    match model.iter().position(|(k, _)| k == NAMES[n]) {
                        Some(i) => {
                            got.unwrap();
                            model.remove(i);
                        }
                        None => prop_assert!(matches!(got, Err(FsError::NoAttr))),
                    }
                }
                Op::Commit => s.journal.commit().unwrap(),
            }
            let names: Vec<Vec<u8>> = model.iter().map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(xattr::list(&s.cache, chain).unwrap(), names);
            for (k, v) in &model {
                prop_assert_eq!(&xattr::get(&s.cache, chain, k).unwrap(), v);
            }
            let blob: usize = model.iter().map(|(k, v)| 6 + v.len() + k.len()
                - if k.starts_with(b"system.posix_acl") { k.len() } else if k.starts_with(b"user.") { 5 } else if k.starts_with(b"trusted.") { 8 } else { 9 }).sum();
            prop_assert_eq!(s.alloc.live_count() as usize, blob.div_ceil(952));
            prop_assert_eq!(chain.is_none(), model.is_empty());
        }
    }
}

#[test]
fn running_out_of_blocks_changes_nothing() {
    let mut s = Stack::new(1024, 4096, 1);
    s.alloc = dir_support::CountingAlloc::new(1, 11);
    let mut chain = None;
    tx(&s, |mt| {
        xattr::set(mt, &mut chain, b"user.a", &value(5000, 1), SetMode::Upsert).unwrap();
    });
    let before = chain;
    let live = s.alloc.live_count();
    assert_eq!(live, 6);
    tx(&s, |mt| {
        assert!(matches!(
            xattr::set(mt, &mut chain, b"user.b", &value(5000, 2), SetMode::Upsert),
            Err(FsError::NoSpace)
        ));
    });
    assert_eq!(chain, before);
    assert_eq!(s.alloc.live_count(), live);
    assert_eq!(
        xattr::list(&s.cache, chain).unwrap(),
        vec![b"user.a".to_vec()]
    );
    assert_eq!(
        xattr::get(&s.cache, chain, b"user.a").unwrap(),
        value(5000, 1)
    );
}
