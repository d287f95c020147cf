//! One directory of 200,000 names through the `Fs` API on an image file:
//! the block reads of a cold lookup stay flat as the directory grows (the
//! tree's depth + 1, plus the child's inode-table block), and a remount
//! finds every name.

mod core_support;

use core_support::{Legs, MIB};
use keelfs_fs::core::{Caller, Fs};
use keelfs_fs::dir;
use keelfs_fs::format::layout::InodeSpec;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::{DataArea, DirRoot};
use keelfs_fs::mkfs::MkfsOptions;

fn name(i: u64) -> Vec<u8> {
    format!("f{i:07}").into_bytes()
}

fn dir_root(fs: &Fs, ino: u64) -> DirRoot {
    match &fs.inode(ino).unwrap().read().data {
        DataArea::Directory(root) => *root,
        other => panic!("not a directory: {other:?}"),
    }
}

/// Block reads of `lookup(d, probe)` on a freshly mounted filesystem,
/// after the directory's own inode was read (so only the lookup counts).
fn cold_lookup_reads(legs: &Legs, d: u64, probe: &[u8]) -> u64 {
    let fs = legs.mount();
    fs.getattr(d).unwrap();
    let before = fs.cache().stats().misses;
    fs.lookup(d, probe).unwrap();
    let reads = fs.cache().stats().misses - before;
    fs.unmount().unwrap();
    reads
}

#[test]
fn two_hundred_thousand_names_in_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = MkfsOptions {
        inodes: InodeSpec::Count(210_000),
        ..MkfsOptions::default()
    };
    let legs = Legs::images(tmp.path(), 1, 256 * MIB, &opts);
    let mut made = 0u64;
    let mut d = 0;
    let mut seen = Vec::new();
    for target in [1_000u64, 20_000, 200_000] {
        let fs = legs.mount();
        if d == 0 {
            d = fs
                .mkdir(ROOT_INODE, b"big", 0o755, Caller::ROOT)
                .unwrap()
                .ino;
        }
        while made < target {
            let ino = fs
                .mknod(d, &name(made), 0o644, 0, Caller::ROOT)
                .unwrap()
                .ino;
            // The kernel forgets what it does not keep in its caches.
            fs.forget(ino, 1).unwrap();
            made += 1;
            if made % 10_000 == 0 {
                // As the journal does when a transaction grows: commit, so
                // the blocks it pinned can leave the cache.
                fs.journal().commit().unwrap();
            }
        }
        let stats = dir::verify(fs.cache(), &dir_root(&fs, d)).unwrap();
        assert_eq!(stats.entries, target);
        fs.unmount().unwrap();
        // Names made early and late, all the same cost.
        let reads: Vec<u64> = [0, target / 2, target - 1]
            .iter()
            .map(|&i| cold_lookup_reads(&legs, d, &name(i)))
            .collect();
        // The tree's path, the child's inode-table block and the inode
        // bitmap block that tells the child is in use.
        let want = u64::from(stats.depth) + 1 + 2;
        assert!(
            reads.iter().all(|&r| r <= want),
            "{target} names, depth {}: {reads:?}",
            stats.depth
        );
        seen.push((target, stats.depth, reads));
    }
    eprintln!("(names, depth, cold lookup reads): {seen:?}");
    assert_eq!(seen.last().unwrap().1, 2);
    let fs = legs.mount();
    assert_eq!(fs.getattr(d).unwrap().nlink, 2);
    let mut count = 0u64;
    fs.readdir(d, 0, |_| {
        count += 1;
        true
    })
    .unwrap();
    assert_eq!(count, 200_002);
    for i in (0..200_000).step_by(997) {
        fs.lookup(d, &name(i)).unwrap();
    }
    fs.unmount().unwrap();
}
