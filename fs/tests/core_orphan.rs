//! Unlinked but still open (or still known to the kernel): the inode lives
//! on the orphan list until the last release or forget, and a crash in
//! between is cleaned up at the next mount. The list is anchored in the
//! root inode (journalled); a filesystem of an earlier keelfs keeps the
//! head in the superblock, and the mount moves it.

mod core_support;

use core_support::*;
use keelfs_fs::core::orphan::ORPHAN_ANCHOR;
use keelfs_fs::core::Fs;
use keelfs_fs::error::FsError;
use keelfs_fs::format::superblock::{ROOT_INODE, RO_COMPAT_ORPHANS_IN_ROOT};
use keelfs_fs::format::InodeSlot;

/// The list's head as the root inode's slot holds it.
fn root_next_orphan(fs: &Fs) -> u64 {
    match fs.inodes().read_slot(ROOT_INODE).unwrap() {
        InodeSlot::Used(root) => root.next_orphan,
        InodeSlot::Free { .. } => panic!("the root is free"),
    }
}

/// Puts `ino` on the in-memory list and links the root to it, committed
/// (what a bug or a corrupt disk could leave: a chain naming a linked
/// inode).
fn link_root_to(fs: &Fs, ino: u64) {
    assert!(fs.orphans().push(ino));
    let tx = fs.journal().start().unwrap();
    fs.inodes()
        .relink_orphan(&tx, ORPHAN_ANCHOR, fs.orphans())
        .unwrap();
    drop(tx);
    fs.journal().commit().unwrap();
}

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
    assert_eq!(root_next_orphan(&fs), ino, "the root anchors the list");
    assert_eq!(fs.superblock().orphan_head, 0, "the superblock holds none");
    fs.release(ino).unwrap();
    assert!(fs.orphans().list().is_empty());
    assert_eq!(root_next_orphan(&fs), 0);
    assert!(matches!(fs.getattr(ino), Err(FsError::Stale)));
    fs.syncfs().unwrap();
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
    fs.fsync(kept, false).unwrap();
    assert_eq!(root_next_orphan(&fs), c);
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
    assert_eq!(root_next_orphan(&fs), 0);
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
    assert_eq!(root_next_orphan(&fs), 0);
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
    // The chain goes on from `gone` to a linked inode: the walk must free
    // `gone` and leave `kept` alone.
    link_root_to(&fs, kept);
    assert_eq!(fs.orphans().list(), vec![kept, gone]);
    drop(fs);
    let fs = legs.mount();
    assert_bytes(
        &read_all(&fs, kept),
        &pattern(30, 5000),
        "a linked inode on the chain is left alone",
    );
    assert_eq!(root_next_orphan(&fs), 0, "the chain was cut");
    assert!(
        fs.superblock().state.errors,
        "a broken chain is recorded for fsck"
    );
    fs.unmount().unwrap();
}

#[test]
fn a_chain_past_a_freed_inode_is_cut_there() {
    let legs = Legs::small();
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap();
    let a = file_with(&fs, 9000, 40);
    fs.open(a).unwrap();
    unlink(&fs, a);
    // The head names a free inode (a number never used).
    let never = fs.layout().inode_count - 1;
    link_root_to(&fs, never);
    drop(fs);
    let fs = legs.mount();
    assert!(fs.superblock().state.errors);
    assert_eq!(root_next_orphan(&fs), 0);
    // `a` was behind the bad link: it leaks until fsck, and nothing breaks.
    assert_eq!(fs.getattr(a).unwrap().nlink, 0);
    assert!(fs.statfs().unwrap().ffree < free0.ffree);
    fs.unmount().unwrap();
}

#[test]
fn every_orphan_a_crash_left_is_freed_at_mount() {
    let legs = Legs::small();
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap();
    // One fragmented orphan (more extents than one freeing step takes),
    // a few plain ones, one inline.
    let frag = new_file(&fs);
    for k in 0..150u64 {
        fs.write(frag, k * 2 * 4096, &pattern(k, 4096)).unwrap();
    }
    let mut orphans = vec![frag];
    for (i, len) in [60_000usize, 100, 4096, 70_000].into_iter().enumerate() {
        orphans.push(file_with(&fs, len, 50 + i as u64));
    }
    for &ino in &orphans {
        fs.open(ino).unwrap();
        unlink(&fs, ino);
    }
    fs.fsync(frag, false).unwrap();
    assert_eq!(root_next_orphan(&fs), *orphans.last().unwrap());
    drop(fs); // crash, every orphan still open

    let fs = legs.mount();
    for &ino in &orphans {
        assert!(
            matches!(fs.getattr(ino), Err(FsError::Stale)),
            "inode {ino}"
        );
    }
    assert!(fs.orphans().list().is_empty());
    assert_eq!(root_next_orphan(&fs), 0);
    assert!(!fs.superblock().state.errors);
    let s = fs.statfs().unwrap();
    assert_eq!((s.bfree, s.ffree), (free0.bfree, free0.ffree));
    drop(fs); // a crash right after the mount changes nothing
    let fs = legs.mount();
    let s = fs.statfs().unwrap();
    assert_eq!((s.bfree, s.ffree), (free0.bfree, free0.ffree));
    fs.unmount().unwrap();
}

#[test]
fn a_superblock_orphan_head_of_an_earlier_keelfs_is_moved_to_the_root() {
    let legs = Legs::small();
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap();
    assert!(fs.superblock().orphans_in_root(), "mkfs sets the feature");
    let kept = file_with(&fs, 5000, 60);
    let (a, b) = (file_with(&fs, 20_000, 61), file_with(&fs, 300, 62));
    for ino in [a, b] {
        fs.open(ino).unwrap();
        unlink(&fs, ino);
    }
    // As an earlier keelfs left it: the chain b -> a in the inode table,
    // the head in the superblock, the root's link 0.
    assert_eq!(fs.orphans().list(), vec![b, a]);
    fs.orphans().replace(Vec::new());
    let tx = fs.journal().start().unwrap();
    fs.inodes()
        .relink_orphan(&tx, ORPHAN_ANCHOR, fs.orphans())
        .unwrap();
    drop(tx);
    fs.journal().commit().unwrap();
    drop(fs);
    let set = keelfs_fs::devset::identify(&legs.devices).unwrap();
    let mut sb = set.superblock().clone();
    sb.ro_compat_features &= !RO_COMPAT_ORPHANS_IN_ROOT;
    sb.orphan_head = b;
    keelfs_fs::devset::write_superblocks(&set, &sb, set.generation()).unwrap();
    drop(set);

    let fs = legs.mount();
    assert!(fs.superblock().orphans_in_root());
    assert_eq!(fs.superblock().orphan_head, 0);
    assert!(!fs.superblock().state.errors);
    for ino in [a, b] {
        assert!(matches!(fs.getattr(ino), Err(FsError::Stale)), "{ino}");
    }
    assert_bytes(&read_all(&fs, kept), &pattern(60, 5000), "kept");
    assert_eq!(fs.statfs().unwrap().ffree, free0.ffree - 1);
    fs.unmount().unwrap();
    let set = keelfs_fs::devset::identify(&legs.devices).unwrap();
    assert!(set.superblock().orphans_in_root(), "on disk too");
}

#[test]
fn a_root_that_cannot_be_read_does_not_keep_the_filesystem_from_mounting() {
    let legs = Legs::small();
    let fs = legs.mount();
    let at = fs.layout().inode_location(ROOT_INODE).unwrap();
    let bs = fs.block_size();
    fs.unmount().unwrap();
    for dev in &legs.devices {
        dev.write_at(at.block * bs, &vec![0xa5; bs as usize])
            .unwrap();
    }
    let fs = legs.mount();
    assert!(fs.superblock().state.errors, "recorded for fsck");
    assert!(fs.getattr(ROOT_INODE).is_err());
    drop(fs);
}
