//! The corruption matrix: for each kind of on-disk structure, damage it on
//! ONE leg (fsck -n reports it and exits 4, fsck -y repairs it and exits 1,
//! a second fsck -n exits 0, the content is intact and the legs agree
//! again), then on ALL legs (fsck -n reports it and exits 4, fsck -y does
//! what can be done, and the filesystem is consistent afterwards: exit 0,
//! or 4 where data is lost for good — a data block with no good copy).
//!
//! Every case starts from a copy of one populated 2-leg image (4 KiB
//! blocks) built through the `Fs` API.

mod support;

use keelfs_fsck::{Outcome, EXIT_CLEAN, EXIT_CORRECTED, EXIT_UNCORRECTED};
use support::*;

fn messages(o: &Outcome) -> String {
    o.first()
        .findings()
        .iter()
        .map(|f| format!("  {f}\n"))
        .collect()
}

fn last_messages(o: &Outcome) -> String {
    o.last()
        .findings()
        .iter()
        .map(|f| format!("  {f}\n"))
        .collect()
}

/// fsck -n finds it (exit 4, `expect` in some message) and changes nothing.
fn check_finds(img: &Image, expect: &str, what: &str) {
    let before = img.contents();
    let o = img.check();
    assert_eq!(
        o.exit_code,
        EXIT_UNCORRECTED,
        "{what}: fsck -n: {:?}\n{}",
        o.error,
        messages(&o)
    );
    assert!(
        o.first()
            .findings()
            .iter()
            .any(|f| f.message.contains(expect)),
        "{what}: no finding mentions {expect:?}:\n{}",
        messages(&o)
    );
    assert!(
        img.contents() == before,
        "{what}: fsck -n changed the image"
    );
}

/// Damage on one leg: found, repaired, clean after, content intact.
fn one_leg(block_of: impl Fn(&Image, &Population) -> u64, expect: &str, what: &str) {
    let (img, p) = fresh_populated();
    let block = block_of(&img, &p);
    let before = img.read_block(0, block);
    img.damage(1, block);
    check_finds(&img, expect, what);
    let o = img.repair();
    assert_eq!(
        o.exit_code,
        EXIT_CORRECTED,
        "{what}: fsck -y: {:?}\n{}\nafter:\n{}",
        o.error,
        messages(&o),
        last_messages(&o)
    );
    let o = img.check();
    assert_eq!(
        o.exit_code,
        EXIT_CLEAN,
        "{what}: second fsck -n:\n{}",
        messages(&o)
    );
    // Superblocks differ per leg (device uuid and index). A repair writes
    // the superblocks and the journal superblock anew (a new generation);
    // everything else is healed back to what it was.
    if !what.starts_with("superblock") {
        assert!(
            img.read_block(0, block) == img.read_block(1, block),
            "{what}: the legs still differ at block {block}"
        );
        if !what.starts_with("journal superblock") {
            assert!(img.read_block(1, block) == before, "{what}: not healed");
        }
    }
    let fs = img.mount();
    verify_population(&fs, &p);
    fs.unmount().unwrap();
}

/// Damage on every leg: found; repaired as far as possible; consistent.
fn all_legs(
    block_of: impl Fn(&Image, &Population) -> u64,
    expect: &str,
    what: &str,
    after: impl Fn(&Image, &Population),
) {
    let (img, p) = fresh_populated();
    let block = block_of(&img, &p);
    img.damage_all(block);
    check_finds(&img, expect, what);
    let o = img.repair();
    assert_eq!(
        o.exit_code,
        EXIT_CORRECTED,
        "{what}: fsck -y: {:?}\n{}\nafter:\n{}",
        o.error,
        messages(&o),
        last_messages(&o)
    );
    let o = img.check();
    assert_eq!(
        o.exit_code,
        EXIT_CLEAN,
        "{what}: second fsck -n:\n{}",
        messages(&o)
    );
    after(&img, &p);
}

/// Mounts and checks every file of `p` but the ones `skip` names.
fn intact_except(img: &Image, p: &Population, skip: &[u64]) {
    let fs = img.mount();
    for (path, ino, data) in &p.files {
        if skip.contains(ino) {
            continue;
        }
        assert!(read_all(&fs, *ino) == *data, "{path} changed");
    }
    fs.unmount().unwrap();
}

fn everything_intact(img: &Image, p: &Population) {
    let fs = img.mount();
    verify_population(&fs, p);
    fs.unmount().unwrap();
}

fn first_data_block(img: &Image, ino: u64) -> u64 {
    file_blocks(img, ino).1[0]
}

#[test]
fn superblock_primary() {
    one_leg(
        |_, _| 0,
        "primary superblock",
        "superblock primary, one leg",
    );
    all_legs(
        |_, _| 0,
        "primary superblock",
        "superblock primary, all legs",
        everything_intact,
    );
}

#[test]
fn superblock_backup() {
    let backup = |img: &Image, _: &Population| img.layout().backup_superblock;
    one_leg(backup, "backup superblock", "superblock backup, one leg");
    all_legs(
        backup,
        "backup superblock",
        "superblock backup, all legs",
        everything_intact,
    );
}

#[test]
fn journal_superblock() {
    one_leg(
        |_, _| 1,
        "journal superblock",
        "journal superblock, one leg",
    );
    all_legs(
        |_, _| 1,
        "journal superblock",
        "journal superblock, all legs",
        everything_intact,
    );
}

#[test]
fn block_bitmap() {
    let at = |img: &Image, _: &Population| img.layout().block_bitmap.start;
    one_leg(at, "block bitmap block 0", "block bitmap, one leg");
    all_legs(
        at,
        "block bitmap block 0",
        "block bitmap, all legs",
        everything_intact,
    );
}

#[test]
fn inode_bitmap() {
    let at = |img: &Image, _: &Population| img.layout().inode_bitmap.start;
    one_leg(at, "inode bitmap block 0", "inode bitmap, one leg");
    all_legs(
        at,
        "inode bitmap block 0",
        "inode bitmap, all legs",
        everything_intact,
    );
}

#[test]
fn inode_table_block() {
    // The block holding the big directory's inode and others (not the root).
    let at = |img: &Image, p: &Population| img.layout().inode_location(p.big_dir).unwrap().block;
    one_leg(at, "inode-table block", "inode table, one leg");
    all_legs(
        at,
        "inode-table block",
        "inode table, all legs",
        |img, p| {
            // The inodes of that block are gone; the others are intact.
            let block = at(img, p);
            let lost: Vec<u64> = p
                .files
                .iter()
                .map(|f| f.1)
                .filter(|&ino| img.layout().inode_location(ino).unwrap().block == block)
                .collect();
            intact_except(img, p, &lost);
        },
    );
}

#[test]
fn inode_table_block_of_the_root() {
    let at = |img: &Image, _: &Population| img.layout().inode_table.start;
    one_leg(at, "inode-table block", "root's inode table block, one leg");
    all_legs(
        at,
        "inode-table block",
        "root's inode table block, all legs",
        |img, p| {
            // A new root; what survived is in lost+found.
            let lost: Vec<u64> = p
                .files
                .iter()
                .map(|f| f.1)
                .filter(|&ino| ino <= img.layout().inodes_per_block())
                .collect();
            intact_except(img, p, &lost);
            let root = img.inode(1);
            assert_eq!(root.links, 3, "a new root with lost+found in it");
        },
    );
}

#[test]
fn tag_table_block() {
    let at = |img: &Image, p: &Population| {
        let b = first_data_block(img, p.fragmented);
        img.layout().tag_location(b).unwrap().block
    };
    one_leg(at, "tag-table block", "tag table, one leg");
    all_legs(
        at,
        "tag-table block",
        "tag table, all legs",
        everything_intact,
    );
}

#[test]
fn extent_node() {
    let at = |img: &Image, p: &Population| file_blocks(img, p.fragmented).0[0];
    one_leg(at, "extent node", "extent node, one leg");
    all_legs(at, "extent node", "extent node, all legs", |img, p| {
        intact_except(img, p, &[p.fragmented]);
        // The file lost the extents under that node: holes now.
        let fs = img.mount();
        let data = read_all(&fs, p.fragmented);
        let want = &p.files.iter().find(|f| f.1 == p.fragmented).unwrap().2;
        assert!(data.len() <= want.len() && data != *want);
        fs.unmount().unwrap();
    });
}

#[test]
fn directory_leaf() {
    let at = |img: &Image, p: &Population| dir_blocks(img, p.big_dir).0[0];
    one_leg(at, "directory leaf", "directory leaf, one leg");
    all_legs(at, "leaf at block", "directory leaf, all legs", |img, p| {
        // The names are lost; the inodes are in lost+found, intact.
        everything_intact(img, p);
        let lf = img.inode(img.superblock().lost_found_inode);
        let keelfs_fs::format::DataArea::Directory(root) = lf.data else {
            panic!()
        };
        assert!(
            root.entry_count > 0,
            "lost+found holds the reconnected inodes"
        );
    });
}

#[test]
fn directory_node() {
    let at = |img: &Image, p: &Population| dir_blocks(img, p.big_dir).1[0];
    one_leg(at, "directory node", "directory node, one leg");
    all_legs(
        at,
        "node at block",
        "directory node, all legs",
        everything_intact,
    );
}

#[test]
fn xattr_block() {
    let at = |img: &Image, p: &Population| xattr_blocks(img, p.xattr_file)[0];
    one_leg(at, "xattr block", "xattr block, one leg");
    all_legs(at, "xattr block", "xattr block, all legs", |img, p| {
        intact_except(img, p, &[]);
        assert!(img.inode(p.xattr_file).xattr.is_none(), "xattrs removed");
    });
}

#[test]
fn symlink_block() {
    let at = |img: &Image, p: &Population| match img.inode(p.long_link).data {
        keelfs_fs::format::DataArea::Overflow(r) => r.block,
        _ => panic!("the long symlink has no overflow block"),
    };
    one_leg(at, "symlink target block", "symlink block, one leg");
    all_legs(
        at,
        "its target block",
        "symlink block, all legs",
        |img, p| {
            intact_except(img, p, &[]);
        },
    );
}

#[test]
fn data_block() {
    let at = |img: &Image, p: &Population| first_data_block(img, p.fragmented);
    one_leg(at, "data blocks", "data block, one leg");
    // All legs: no good copy anywhere. Reported, left (exit 4 every time),
    // never "repaired" into wrong bytes; everything else stays intact.
    let (img, p) = fresh_populated();
    let block = at(&img, &p);
    img.damage_all(block);
    check_finds(&img, "no good copy", "data block, all legs");
    let o = img.repair();
    assert_eq!(o.exit_code, EXIT_UNCORRECTED, "{}", messages(&o));
    assert_eq!(o.blocks_written(), 0, "nothing to write");
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_UNCORRECTED);
    assert_eq!(o.first().error_count(), 1, "{}", messages(&o));
    intact_except(&img, &p, &[p.fragmented]);
    let fs = img.mount();
    assert!(
        fs.read(p.fragmented, 0, 4096).is_err(),
        "EIO, not wrong bytes"
    );
    fs.unmount().unwrap();
}
