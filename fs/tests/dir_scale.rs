//! Lookup cost in a large directory: 200,000 names in one directory (4 KiB
//! blocks), block reads counted as bufio misses on a cold cache. A lookup
//! reads depth + 1 blocks whether the directory holds 1,000 or 200,000
//! names, and the depth stays at 2 (the format allows a million names at
//! that depth: ~150 names per leaf × 168 children per node).

mod dir_support;

use dir_support::{Rng, Stack};
use keelfs_fs::dir::{self, MetaTx};
use keelfs_fs::format::{DirRoot, FileType};

fn name(i: u64) -> Vec<u8> {
    format!("file-{i:08}.dat").into_bytes()
}

/// Block reads of one cold lookup of each of `samples` names.
fn cold_lookup_reads(s: &mut Stack, root: &DirRoot, n: u64, samples: u64) -> Vec<u64> {
    let mut rng = Rng::new(n);
    (0..samples)
        .map(|k| {
            // Alternate present names and absent ones.
            let (probe, present) = if k % 2 == 0 {
                (name(rng.below(n)), true)
            } else {
                (name(n + 1 + rng.below(1000)), false)
            };
            s.drop_cache();
            let before = s.misses();
            let found = dir::lookup(&s.cache, root, &probe).unwrap();
            assert_eq!(found.is_some(), present);
            s.misses() - before
        })
        .collect()
}

#[test]
fn lookup_cost_stays_flat_up_to_200000_names() {
    let mut s = Stack::new(4096, 16384, 1);
    let mut root = DirRoot::empty();
    let mut inserted = 0u64;
    let mut by_size = Vec::new();
    for target in [1_000u64, 10_000, 100_000, 200_000] {
        while inserted < target {
            let end = (inserted + 20_000).min(target);
            {
                let tx = s.journal.start().unwrap();
                let mt = MetaTx::new(&s.cache, &tx, &s.alloc);
                for i in inserted..end {
                    dir::insert(&mt, &mut root, &name(i), i + 1, FileType::Regular).unwrap();
                }
            }
            s.journal.commit().unwrap();
            inserted = end;
        }
        let stats = dir::verify(&s.cache, &root).unwrap();
        assert_eq!(stats.entries, target);
        let reads = cold_lookup_reads(&mut s, &root, target, 10);
        assert!(
            reads.iter().all(|&r| r == u64::from(stats.depth) + 1),
            "{target} names, depth {}: reads {reads:?}",
            stats.depth
        );
        by_size.push((target, stats.depth, stats.leaves, reads[0]));
    }
    eprintln!("(names, depth, leaves, reads per lookup): {by_size:?}");
    let (_, depth, leaves, reads) = *by_size.last().unwrap();
    assert_eq!(depth, 2);
    assert_eq!(reads, 3);
    // Leaves are well filled: ~29-byte entries, 4048-byte payloads.
    assert!(leaves < 200_000 / 70, "{leaves} leaves");
}
