//! Unlinked but still open (or still known to the kernel): the inode lives
//! on the orphan list until the last release or forget, and a crash in
//! between is cleaned up at the next mount.

mod core_support;

use core_support::*;
use keelfs_fs::core::Fs;
use keelfs_fs::error::FsError;

/// A file of `len` bytes.
fn file_with(fs: &Fs, len: usize, seed: u64) -> u64 {
    let ino = new_file(fs);
    fs.write(ino, 0, &pattern(seed, len)).unwrap();
    ino
}

fn unlink(fs: &Fs, ino: u64) {
    let tx = fs.journal().start().unwrap();
    let cell = fs.inode(ino).unwrap();
    let mut state = cell.write();
    fs.drop_link(&tx, &cell, &mut state).unwrap();
}

#[test]
fn unlink_while_open_keeps_the_data_until_release() {
    let legs = Legs::small();
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap();
    let ino = file_with(&fs, 100_000, 1);
    fs.open(ino).unwrap();
    unlink(&fs, ino);
    assert_eq!(fs.orphans().list(), vec![ino]);
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0);
    // Still readable and writable through the open handle.
    assert_bytes(
        &fs.read(ino, 0, 200_000).unwrap(),
        &pattern(1, 100_000),
        "open orphan",
    );
    fs.write(ino, 0, b"still here").unwrap();
    fs.fsync(ino, false).unwrap();
    assert_eq!(
        fs.superblock().orphan_head,
        ino,
        "the head is on disk after the commit"
    );
    fs.release(ino).unwrap();
    assert!(fs.orphans().list().is_empty());
    assert!(matches!(fs.getattr(ino), Err(FsError::Stale)));
    fs.syncfs().unwrap();
    assert_eq!(fs.superblock().orphan_head, 0);
    let s = fs.statfs().unwrap();
    assert_eq!((s.bfree, s.ffree), (free0.bfree, free0.ffree));
    fs.unmount().unwrap();
}

#[test]
fn the_kernel_s_lookups_keep_an_unlinked_inode_until_forget() {
    let legs = Legs::small();
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap().bfree;
    let ino = file_with(&fs, 10_000, 2);
    fs.inode(ino).unwrap().add_lookups(2);
    unlink(&fs, ino);
    assert_eq!(fs.orphans().list(), vec![ino]);
    fs.forget(ino, 1).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0, "one lookup left");
    fs.forget(ino, 1).unwrap();
    assert!(matches!(fs.getattr(ino), Err(FsError::Stale)));
    fs.syncfs().unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    // Without lookups or opens an unlink frees at once.
    let other = file_with(&fs, 10_000, 3);
    unlink(&fs, other);
    assert!(fs.orphans().list().is_empty());
    assert!(matches!(fs.getattr(other), Err(FsError::Stale)));
    fs.unmount().unwrap();
}

#[test]
fn a_crash_with_orphans_is_cleaned_up_at_mount() {
    let legs = Legs::small();
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap();
    let kept = file_with(&fs, 30_000, 10);
    let (a, b, c) = (
        file_with(&fs, 50_000, 11),
        file_with(&fs, 200, 12),
        file_with(&fs, 70_000, 13),
    );
    for ino in [a, b, c] {
        fs.open(ino).unwrap();
        unlink(&fs, ino);
    }
    assert_eq!(fs.orphans().list(), vec![c, b, a]);
    // Closing the middle one relinks the chain around it.
    fs.release(b).unwrap();
    assert_eq!(fs.orphans().list(), vec![c, a]);
    fs.syncfs().unwrap();
    assert_eq!(fs.superblock().orphan_head, c);
    let used_by_kept = {
        let s = fs.statfs().unwrap();
        // a and c still hold their blocks.
        assert!(free0.bfree - s.bfree > 120_000 / 4096);
        8
    };
    // Crash: drop without unmount (a and c still open).
    drop(fs);

    let fs = legs.mount();
    assert!(fs.orphans().list().is_empty());
    assert_eq!(fs.superblock().orphan_head, 0);
    assert!(!fs.superblock().state.errors);
    for ino in [a, b, c] {
        assert!(
            matches!(fs.getattr(ino), Err(FsError::Stale)),
            "inode {ino}"
        );
    }
    assert_bytes(&read_all(&fs, kept), &pattern(10, 30_000), "kept");
    let s = fs.statfs().unwrap();
    assert_eq!(
        s.bfree,
        free0.bfree - used_by_kept,
        "the orphans' blocks are free"
    );
    assert_eq!(s.ffree, free0.ffree - 1);
    fs.unmount().unwrap();
    // And the result is stable.
    let fs = legs.mount();
    assert_eq!(fs.statfs().unwrap().bfree, free0.bfree - used_by_kept);
    fs.unmount().unwrap();
}

#[test]
fn orphans_left_open_at_unmount_are_freed() {
    let legs = Legs::small();
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap().bfree;
    let ino = file_with(&fs, 40_000, 20);
    fs.open(ino).unwrap();
    unlink(&fs, ino);
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(fs.superblock().orphan_head, 0);
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    assert!(matches!(fs.getattr(ino), Err(FsError::Stale)));
    fs.unmount().unwrap();
}

#[test]
fn a_broken_orphan_chain_stops_the_walk_without_harm() {
    let legs = Legs::small();
    let fs = legs.mount();
    let kept = file_with(&fs, 5000, 30);
    let gone = file_with(&fs, 5000, 31);
    fs.open(gone).unwrap();
    unlink(&fs, gone);
    fs.syncfs().unwrap();
    // The superblock names a linked inode as the head (a stale head after
    // a crash): the walk must not free it.
    drop(fs);
    let set = keelfs_fs::devset::identify(&legs.devices).unwrap();
    let mut sb = set.superblock().clone();
    sb.orphan_head = kept;
    keelfs_fs::devset::write_superblocks(&set, &sb, set.generation()).unwrap();
    drop(set);
    let fs = legs.mount();
    assert_bytes(
        &read_all(&fs, kept),
        &pattern(30, 5000),
        "a linked head is left alone",
    );
    assert_eq!(fs.superblock().orphan_head, 0);
    assert!(
        fs.superblock().state.errors,
        "a broken chain is recorded for fsck"
    );
    fs.unmount().unwrap();
}
