//! Concurrent creators in one directory through the `Fs` API: several
//! threads create (files and subdirectories), look up and list thousands of
//! names in the same directory at once, some removing part of what they
//! made; afterwards every name is there exactly once, the link count is
//! 2 + subdirectories, the tree is sound, and a remount agrees.

mod core_support;

use core_support::{opts, Legs, MIB};
use keelfs_fs::core::{Caller, Fs};
use keelfs_fs::dir;
use keelfs_fs::format::layout::InodeSpec;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::{DataArea, FileType};
use keelfs_fs::mkfs::MkfsOptions;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

const THREADS: u64 = 4;
const PER_THREAD: u64 = 2500;

fn listing(fs: &Fs, d: u64) -> BTreeMap<Vec<u8>, (u64, FileType)> {
    let mut out = BTreeMap::new();
    fs.readdir(d, 2, |e| {
        assert!(out.insert(e.name.clone(), (e.ino, e.kind)).is_none());
        true
    })
    .unwrap();
    out
}

#[test]
fn threads_creating_in_one_directory() {
    let options = MkfsOptions {
        inodes: InodeSpec::Count(THREADS * PER_THREAD + 100),
        ..opts(1024)
    };
    let legs = Legs::mem(2, 64 * MIB, &options);
    let fs = Arc::new(legs.mount());
    let d = fs
        .mkdir(ROOT_INODE, b"shared", 0o777, Caller::ROOT)
        .unwrap()
        .ino;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let fs = Arc::clone(&fs);
            thread::spawn(move || {
                let who = Caller::new(1000 + t as u32, 1000);
                let mut kept = BTreeMap::new();
                for i in 0..PER_THREAD {
                    let name = format!("t{t}-entry-{i}").into_bytes();
                    let a = if i % 50 == 0 {
                        fs.mkdir(d, &name, 0o755, who).unwrap()
                    } else {
                        fs.mknod(d, &name, 0o644, 0, who).unwrap()
                    };
                    assert_eq!(fs.lookup(d, &name).unwrap().ino, a.ino);
                    if i % 7 == 3 {
                        if a.kind == FileType::Directory {
                            fs.rmdir(d, &name, who).unwrap();
                        } else {
                            fs.unlink(d, &name, who).unwrap();
                        }
                    } else {
                        kept.insert(name, (a.ino, a.kind));
                    }
                    if i % 500 == 0 {
                        // A listing while the others write.
                        fs.readdir(d, 0, |_| true).unwrap();
                    }
                }
                kept
            })
        })
        .collect();
    let mut want = BTreeMap::new();
    for h in handles {
        want.extend(h.join().unwrap());
    }
    let subdirs = want
        .values()
        .filter(|(_, k)| *k == FileType::Directory)
        .count() as u32;
    assert!(subdirs > 0);
    assert_eq!(listing(&fs, d), want);
    assert_eq!(fs.getattr(d).unwrap().nlink, 2 + subdirs);
    let root = match &fs.inode(d).unwrap().read().data {
        DataArea::Directory(root) => *root,
        _ => unreachable!(),
    };
    let stats = dir::verify(fs.cache(), &root).unwrap();
    assert_eq!(stats.entries, want.len() as u64);
    let attr = fs.getattr(d).unwrap();
    assert_eq!(attr.size, stats.blocks() * 1024);
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(listing(&fs, d), want);
    assert_eq!(fs.getattr(d).unwrap().nlink, 2 + subdirs);
    for (name, (ino, _)) in want.iter().step_by(97) {
        assert_eq!(fs.lookup(d, name).unwrap().ino, *ino);
    }
    fs.unmount().unwrap();
}
