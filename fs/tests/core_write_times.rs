//! Who sets a file's times on a write, and what a setattr that changes
//! nothing costs, through the public API of `Fs` on 2-leg memory mirrors.
//!
//! `Fs::write` stamps mtime and ctime; `Fs::write_keep_times` (the FUSE
//! adapter's write-back of the kernel's page cache, whose times the kernel
//! owns) leaves them and still stores size and blocks, durably. A setattr
//! with an explicit ctime whose values the inode already has (the kernel
//! sends its times again when it evicts an inode) logs no journal block.

mod core_support;

use core_support::*;
use keelfs_fs::core::{SetAttr, TimeSet};
use keelfs_fs::format::Timestamp;

const T0: Timestamp = Timestamp {
    secs: 1_000_000,
    nanos: 5,
};

/// Sets mtime and ctime of `ino` to `T0`.
fn set_times(fs: &keelfs_fs::core::Fs, ino: u64) {
    fs.setattr(
        ino,
        &SetAttr {
            mtime: Some(TimeSet::At(T0)),
            ctime: Some(T0),
            ..SetAttr::default()
        },
    )
    .unwrap();
}

#[test]
fn a_write_keeping_times_stores_size_and_blocks_but_not_times() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    set_times(&fs, ino);
    let data = pattern(1, 3 * 4096 + 10);
    assert_eq!(fs.write_keep_times(ino, 0, &data).unwrap(), data.len());
    let a = fs.getattr(ino).unwrap();
    assert_eq!((a.mtime, a.ctime), (T0, T0), "times kept");
    assert_eq!(a.size, data.len() as u64);
    assert_eq!(a.blocks, 4 * 8);
    // A plain write stamps them.
    fs.write(ino, 0, b"x").unwrap();
    let b = fs.getattr(ino).unwrap();
    assert!(b.mtime > T0 && b.ctime > T0, "a plain write sets the times");
    set_times(&fs, ino);
    fs.write_keep_times(ino, data.len() as u64, b"tail")
        .unwrap();
    fs.unmount().unwrap();

    let fs = legs.mount();
    let a = fs.getattr(ino).unwrap();
    assert_eq!((a.mtime, a.ctime), (T0, T0), "times kept across a remount");
    assert_eq!(a.size, data.len() as u64 + 4, "size stored");
    let mut want = data.clone();
    want[0] = b'x';
    want.extend_from_slice(b"tail");
    assert_bytes(&read_all(&fs, ino), &want, "contents");
    fs.unmount().unwrap();
}

#[test]
fn a_setattr_to_the_times_the_inode_has_logs_nothing() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    set_times(&fs, ino);
    fs.journal().commit().unwrap();
    let logged = fs.journal().stats().blocks_logged;
    set_times(&fs, ino);
    fs.journal().commit().unwrap();
    assert_eq!(
        fs.journal().stats().blocks_logged,
        logged,
        "nothing changed, nothing logged"
    );
    // A different time is stored.
    fs.setattr(
        ino,
        &SetAttr {
            mtime: Some(TimeSet::At(Timestamp { secs: 7, nanos: 0 })),
            ctime: Some(T0),
            ..SetAttr::default()
        },
    )
    .unwrap();
    fs.journal().commit().unwrap();
    assert!(fs.journal().stats().blocks_logged > logged);
    // chmod to the same mode still sets ctime (POSIX), so it is stored.
    let logged = fs.journal().stats().blocks_logged;
    let mode = fs.getattr(ino).unwrap().perm;
    fs.setattr(
        ino,
        &SetAttr {
            mode: Some(u32::from(mode)),
            ..SetAttr::default()
        },
    )
    .unwrap();
    fs.journal().commit().unwrap();
    assert!(fs.journal().stats().blocks_logged > logged);
    assert!(fs.getattr(ino).unwrap().ctime > T0);
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(
        fs.getattr(ino).unwrap().mtime,
        Timestamp { secs: 7, nanos: 0 }
    );
    fs.unmount().unwrap();
}
