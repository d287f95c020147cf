//! Several threads at once: writers to different files, writers to
//! disjoint ranges of one file, readers alongside, inode creation, and raw
//! block allocation — nothing handed out twice, everything reads back,
//! before and after a remount. Background writeback runs here.

mod core_support;

use core_support::*;
use keelfs_fs::core::{Fs, MountParams};
use keelfs_fs::format::superblock::ROOT_INODE;
use std::collections::HashSet;
use std::sync::Arc;

const THREADS: u64 = 4;

/// What one thread allocated: inodes and (first, count) block runs.
type Allocated = (Vec<u64>, Vec<(u64, u64)>);

fn mount_bg(legs: &Legs) -> Arc<Fs> {
    let params = MountParams {
        cache_bytes: 1 << 20,
        ..MountParams::default()
    };
    Arc::new(Fs::mount(legs.devices.clone(), &params).unwrap())
}

fn unmount(fs: Arc<Fs>) {
    Arc::try_unwrap(fs)
        .ok()
        .expect("threads done")
        .unmount()
        .unwrap();
}

#[test]
fn writers_to_different_files() {
    let legs = Legs::mem(2, 32 * MIB, &opts(4096));
    let fs = mount_bg(&legs);
    let inos: Vec<u64> = (0..THREADS).map(|_| new_file(&fs)).collect();
    std::thread::scope(|s| {
        for (t, &ino) in inos.iter().enumerate() {
            let fs = &fs;
            s.spawn(move || {
                // Appends of odd sizes, then overwrites, with a sync now and then.
                let mut model = Vec::new();
                for i in 0..60u64 {
                    let chunk = pattern(t as u64 * 1000 + i, 1000 + (i as usize * 331) % 20_000);
                    fs.write(ino, model.len() as u64, &chunk).unwrap();
                    model.extend_from_slice(&chunk);
                    if i % 7 == 0 {
                        let at = (i * 977) % model.len() as u64;
                        let over = pattern(i + 77, 3000);
                        fs.write(ino, at, &over).unwrap();
                        let end = (at as usize + over.len()).max(model.len());
                        model.resize(end, 0);
                        model[at as usize..at as usize + over.len()].copy_from_slice(&over);
                    }
                    if i % 20 == 0 {
                        fs.fsync(ino, false).unwrap();
                    }
                }
                assert_bytes(&read_all(fs, ino), &model, "thread's file");
            });
        }
    });
    let contents: Vec<Vec<u8>> = inos.iter().map(|&i| read_all(&fs, i)).collect();
    unmount(fs);
    let fs = legs.mount();
    for (&ino, want) in inos.iter().zip(&contents) {
        assert_bytes(&read_all(&fs, ino), want, "after remount");
    }
    fs.unmount().unwrap();
}

#[test]
fn writers_to_disjoint_ranges_of_one_file_and_readers() {
    let legs = Legs::mem(2, 32 * MIB, &opts(4096));
    let fs = mount_bg(&legs);
    let ino = new_file(&fs);
    let region = 1u64 << 20;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let fs = &fs;
            s.spawn(move || {
                let base = t * region;
                // Unaligned pieces, in an order that leaves holes for a while.
                let piece = 10_000u64;
                let pieces = region / piece;
                for k in (0..pieces).rev() {
                    let data = pattern(t * 10_000 + k, piece as usize);
                    fs.write(ino, base + k * piece, &data).unwrap();
                }
            });
        }
        // A reader that checks every piece it sees is all old or all new.
        let fs = &fs;
        s.spawn(move || {
            for _ in 0..50 {
                let size = fs.getattr(ino).unwrap().size;
                if size > 0 {
                    let got = fs.read(ino, 0, 65536).unwrap();
                    assert!(got.len() as u64 <= size);
                }
            }
        });
    });
    let piece = 10_000u64;
    let mut model = vec![0u8; (THREADS * region) as usize];
    for t in 0..THREADS {
        for k in 0..region / piece {
            let at = (t * region + k * piece) as usize;
            model[at..at + piece as usize]
                .copy_from_slice(&pattern(t * 10_000 + k, piece as usize));
        }
    }
    let size = fs.getattr(ino).unwrap().size as usize;
    model.truncate(size);
    assert_bytes(&read_all(&fs, ino), &model, "shared file");
    unmount(fs);
    let fs = legs.mount();
    assert_bytes(&read_all(&fs, ino), &model, "shared file after remount");
    fs.unmount().unwrap();
}

#[test]
fn concurrent_inode_creation_and_block_allocation_never_share() {
    let legs = Legs::mem(2, 32 * MIB, &opts(1024));
    let fs = mount_bg(&legs);
    let results: Vec<Allocated> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let fs = &fs;
                s.spawn(move || {
                    let mut inos = Vec::new();
                    let mut runs = Vec::new();
                    for i in 0..200u64 {
                        let tx = fs.journal().start().unwrap();
                        let cell = fs
                            .create_inode(&tx, 0o100_600, 0, 0, 0, ROOT_INODE)
                            .unwrap();
                        inos.push(cell.ino());
                        let goal = fs.layout().data.start + (t * 7919 + i * 13) % 4000;
                        runs.push(fs.blocks().alloc_blocks(&tx, goal, 1 + i % 9).unwrap());
                    }
                    (inos, runs)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut inos = HashSet::new();
    let mut blocks = HashSet::new();
    for (i, runs) in &results {
        for ino in i {
            assert!(inos.insert(*ino), "inode {ino} handed out twice");
        }
        for &(first, count) in runs {
            for b in first..first + count {
                assert!(blocks.insert(b), "block {b} handed out twice");
                assert!(fs.blocks().is_allocated(b).unwrap());
            }
        }
    }
    let free = fs.blocks().free_blocks();
    unmount(fs);
    let fs = legs.mount();
    assert_eq!(fs.blocks().free_blocks(), free, "counts survive a remount");
    for &b in blocks.iter().take(500) {
        assert!(fs.blocks().is_allocated(b).unwrap());
    }
    fs.unmount().unwrap();
}

#[test]
fn parallel_readers_of_one_file() {
    let legs = Legs::small();
    let fs = mount_bg(&legs);
    let ino = new_file(&fs);
    let data = pattern(5, 3 << 20);
    fs.write(ino, 0, &data).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (fs, data) = (&fs, &data);
            s.spawn(move || {
                for k in 0..40u64 {
                    let off = (t * 100_003 + k * 65_537) % (3 << 20);
                    let got = fs.read(ino, off, 100_000).unwrap();
                    let end = (off as usize + 100_000).min(data.len());
                    assert_bytes(&got, &data[off as usize..end], "parallel read");
                }
            });
        }
    });
    unmount(fs);
}
