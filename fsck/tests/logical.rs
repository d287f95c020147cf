//! Logical damage: structures whose tags are all valid but whose content is
//! inconsistent (as a bug in the filesystem would leave them). Each is
//! found by fsck -n (exit 4, nothing changed), fixed by fsck -y (exit 1),
//! and a second fsck -n is clean (exit 0), with the data intact.

mod support;

use keelfs_fs::format::bitmap::{clear_bit, set_bit};
use keelfs_fs::format::dir::dir_key;
use keelfs_fs::format::extent::ExtentLeaf;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::{DataArea, DirEntry, ExtentNode, FileType, META_HEADER_LEN};
use keelfs_fsck::{Outcome, EXIT_CLEAN, EXIT_CORRECTED, EXIT_UNCORRECTED};
use support::*;

fn messages(o: &Outcome) -> String {
    o.first()
        .findings()
        .iter()
        .map(|f| format!("  {f}\n"))
        .collect()
}

/// -n finds `expect`; -y fixes it; -n is clean afterwards.
fn found_and_fixed(img: &Image, expect: &str) -> Outcome {
    let before = img.contents();
    let o = img.check();
    assert_eq!(
        o.exit_code,
        EXIT_UNCORRECTED,
        "{:?}\n{}",
        o.error,
        messages(&o)
    );
    assert!(
        o.first()
            .findings()
            .iter()
            .any(|f| f.message.contains(expect)),
        "no finding mentions {expect:?}:\n{}",
        messages(&o)
    );
    assert!(img.contents() == before, "fsck -n changed the image");
    let fixed = img.repair();
    assert_eq!(
        fixed.exit_code,
        EXIT_CORRECTED,
        "fsck -y: {:?}\n{}\nleft:\n{:?}",
        fixed.error,
        messages(&fixed),
        fixed.last().findings()
    );
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "second fsck -n:\n{}", messages(&o));
    fixed
}

fn intact(img: &Image, p: &Population) {
    let fs = img.mount();
    verify_population(&fs, p);
    fs.unmount().unwrap();
}

#[test]
fn wrong_link_count() {
    let (img, p) = fresh_populated();
    let ino = p.files[0].1;
    img.edit_inode(ino, |i| i.links += 3);
    found_and_fixed(&img, "link count is 4, should be 1");
    assert_eq!(img.inode(ino).links, 1);
    // A directory: 2 + subdirectories.
    img.edit_inode(ROOT_INODE, |i| i.links = 9);
    found_and_fixed(&img, "link count is 9");
    assert_eq!(img.inode(ROOT_INODE).links, 2 + 3, "lost+found, docs, big");
    intact(&img, &p);
}

#[test]
fn leaked_block() {
    let (img, p) = fresh_populated();
    let l = img.layout();
    let free = l.data.end() - 10;
    let at = l.block_bitmap_bit(free).unwrap();
    img.edit_meta(at.block, |b| {
        set_bit(&mut b[META_HEADER_LEN..], at.bit_in_block()).unwrap();
    });
    found_and_fixed(&img, &format!("blocks {free} are marked in use"));
    let b = img.read_block(0, at.block);
    assert!(
        !keelfs_fs::format::bitmap::test_bit(&b[META_HEADER_LEN..], at.bit_in_block()).unwrap()
    );
    intact(&img, &p);
}

#[test]
fn used_block_marked_free() {
    let (img, p) = fresh_populated();
    let used = file_blocks(&img, p.fragmented).1[3];
    let at = img.layout().block_bitmap_bit(used).unwrap();
    img.edit_meta(at.block, |b| {
        clear_bit(&mut b[META_HEADER_LEN..], at.bit_in_block()).unwrap();
    });
    found_and_fixed(&img, &format!("blocks {used} are in use but marked free"));
    intact(&img, &p);
}

#[test]
fn entry_naming_a_free_inode() {
    let (img, p) = fresh_populated();
    let free = img.layout().inode_count - 1;
    edit_root_leaf(&img, p.small_dir, |leaf| {
        leaf.entries.push(DirEntry {
            key: dir_key(b"ghost", 0),
            inode: free,
            file_type: FileType::Regular,
            name: b"ghost".to_vec(),
        });
        leaf.entries.sort_by_key(|e| e.key);
    });
    found_and_fixed(
        &img,
        &format!("entry 'ghost' names inode {free}, which is free"),
    );
    assert!(!dir_entries(&img, p.small_dir)
        .iter()
        .any(|e| e.0 == "ghost"));
    intact(&img, &p);
}

#[test]
fn directory_named_twice_and_wrong_parent() {
    let (img, p) = fresh_populated();
    // "big" also named in "docs"; "docs" says its parent is "big".
    edit_root_leaf(&img, p.small_dir, |leaf| {
        leaf.entries.push(DirEntry {
            key: dir_key(b"again", 0),
            inode: p.big_dir,
            file_type: FileType::Directory,
            name: b"again".to_vec(),
        });
        leaf.entries.sort_by_key(|e| e.key);
    });
    img.edit_inode(p.small_dir, |i| i.parent = p.big_dir);
    let o = found_and_fixed(&img, "names directory");
    assert!(o.first().findings().iter().any(|f| f
        .message
        .contains(&format!("directory {}: its parent", p.small_dir))));
    assert!(!dir_entries(&img, p.small_dir)
        .iter()
        .any(|e| e.0 == "again"));
    assert_eq!(img.inode(p.small_dir).parent, ROOT_INODE);
    assert_eq!(img.inode(ROOT_INODE).links, 5);
    intact(&img, &p);
}

#[test]
fn unreferenced_inode_is_reconnected() {
    let (img, p) = fresh_populated();
    let fs = img.mount();
    // An inode with data but no name (as a crash between two halves of a
    // create could leave it without a journal).
    let ino = {
        let tx = fs.journal().start().unwrap();
        fs.create_inode(&tx, 0o100_600, 0, 0, 0, ROOT_INODE)
            .unwrap()
            .ino()
    };
    fs.journal().commit().unwrap();
    fs.write(ino, 0, b"nobody knows my name").unwrap();
    fs.unmount().unwrap();
    found_and_fixed(
        &img,
        &format!("inode {ino} (a regular file of 20 bytes) is in no directory"),
    );
    let lf = img.superblock().lost_found_inode;
    assert!(dir_entries(&img, lf).contains(&(format!("#{ino}"), ino)));
    let fs = img.mount();
    assert_eq!(read_all(&fs, ino), b"nobody knows my name");
    fs.unmount().unwrap();
    intact(&img, &p);
}

#[test]
fn orphans_are_released() {
    let (img, p) = fresh_populated();
    let fs = img.mount();
    let t = Tree::new(&fs);
    let ino = t.file(ROOT_INODE, "doomed", &pattern(3, 9000));
    fs.open(ino).unwrap();
    t.unlink(ROOT_INODE, "doomed");
    fs.sync_all().unwrap();
    drop(fs); // a crash with the file still open: it is on the orphan list
    assert_eq!(
        img.inode(ROOT_INODE).next_orphan,
        ino,
        "the root anchors it"
    );
    assert_eq!(img.superblock().orphan_head, 0);
    // -n: pending orphans are a note, not an error (the committed
    // transactions are replayed in memory).
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{}", messages(&o));
    assert!(o
        .first()
        .findings()
        .iter()
        .any(|f| f.message.contains("orphan")));
    // -y releases them.
    let o = img.repair();
    assert_eq!(o.exit_code, EXIT_CORRECTED, "{}", messages(&o));
    assert_eq!(img.inode(ROOT_INODE).next_orphan, 0);
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{}", messages(&o));
    assert!(o.first().findings().is_empty(), "{}", messages(&o));
    intact(&img, &p);
}

#[test]
fn an_orphan_chain_naming_a_linked_inode_is_cut() {
    let (img, p) = fresh_populated();
    let linked = p.files[1].1;
    img.edit_inode(ROOT_INODE, |root| root.next_orphan = linked);
    found_and_fixed(
        &img,
        &format!("inode {linked} (regular file) is on the orphan list but has 1 links"),
    );
    assert_eq!(img.inode(ROOT_INODE).next_orphan, 0);
    intact(&img, &p);
}

#[test]
fn a_superblock_orphan_head_is_reserved_when_the_root_anchors_the_list() {
    let (img, p) = fresh_populated();
    let set = keelfs_fs::devset::identify(&img.devices()).unwrap();
    let mut sb = set.superblock().clone();
    assert!(sb.orphans_in_root());
    sb.orphan_head = p.files[0].1;
    keelfs_fs::devset::write_superblocks(&set, &sb, set.generation()).unwrap();
    drop(set);
    found_and_fixed(&img, "the list is anchored in the root inode");
    assert_eq!(img.superblock().orphan_head, 0);
    intact(&img, &p);
}

#[test]
fn orphans_of_an_earlier_keelfs_in_the_superblock_are_released() {
    let (img, p) = fresh_populated();
    let fs = img.mount();
    let t = Tree::new(&fs);
    let ino = t.file(ROOT_INODE, "doomed", &pattern(4, 7000));
    fs.open(ino).unwrap();
    t.unlink(ROOT_INODE, "doomed");
    // As an earlier keelfs wrote it: the head in the superblock, none in
    // the root.
    fs.orphans().replace(Vec::new());
    let tx = fs.journal().start().unwrap();
    fs.inodes()
        .relink_orphan(&tx, ROOT_INODE, fs.orphans())
        .unwrap();
    drop(tx);
    fs.sync_all().unwrap();
    drop(fs);
    let set = keelfs_fs::devset::identify(&img.devices()).unwrap();
    let mut sb = set.superblock().clone();
    sb.ro_compat_features &= !keelfs_fs::format::superblock::RO_COMPAT_ORPHANS_IN_ROOT;
    sb.orphan_head = ino;
    keelfs_fs::devset::write_superblocks(&set, &sb, set.generation()).unwrap();
    drop(set);
    let o = img.repair();
    assert_eq!(o.exit_code, EXIT_CORRECTED, "{}", messages(&o));
    assert!(
        o.first()
            .findings()
            .iter()
            .any(|f| f.message.contains(&format!("orphan inode {ino}"))),
        "{}",
        messages(&o)
    );
    assert_eq!(img.superblock().orphan_head, 0);
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{}", messages(&o));
    intact(&img, &p);
}

#[test]
fn cross_linked_blocks_are_copied() {
    let (img, p) = fresh_populated();
    // docs/f3 (4 blocks) gets its first extent pointed at f2's first block.
    let (a, a_data) = (p.files[2].1, p.files[2].2.clone());
    let (b, _) = (p.files[3].1, p.files[3].2.clone());
    let a_block = file_blocks(&img, a).1[0];
    img.edit_inode(b, |i| {
        let DataArea::Extents(ExtentNode::Leaf(entries)) = &mut i.data else {
            panic!("f3 has no extent leaf in the inode");
        };
        entries[0] = ExtentLeaf {
            length: 1,
            physical: a_block,
            ..entries[0]
        };
    });
    found_and_fixed(&img, "cross-linked");
    let (_, b_blocks) = file_blocks(&img, b);
    assert!(!b_blocks.contains(&a_block), "b has a block of its own");
    let fs = img.mount();
    assert_eq!(read_all(&fs, a), a_data);
    let got = read_all(&fs, b);
    assert_eq!(&got[..4096], &a_data[..4096], "b holds a copy of a's block");
    fs.unmount().unwrap();
}

#[test]
fn extent_pointing_outside_the_device() {
    let (img, p) = fresh_populated();
    let b = p.files[3].1;
    let n = img.layout().device_blocks;
    img.edit_inode(b, |i| {
        let DataArea::Extents(ExtentNode::Leaf(entries)) = &mut i.data else {
            panic!();
        };
        let last = *entries.last().unwrap();
        entries.push(ExtentLeaf {
            logical: last.logical + u64::from(last.length) + 10,
            length: 4,
            unwritten: false,
            physical: n + 100,
        });
    });
    found_and_fixed(&img, "outside the data area");
    intact(&img, &p);
}

#[test]
fn bad_inode_fields() {
    let (img, p) = fresh_populated();
    let ino = p.files[1].1;
    let at = img.layout().inode_location(ino).unwrap();
    // mtime nanoseconds ≥ 10⁹ (offset 68 of the slot).
    img.edit_meta(at.block, |b| {
        let o = META_HEADER_LEN + at.offset + 68;
        b[o..o + 4].copy_from_slice(&2_000_000_000u32.to_le_bytes());
    });
    found_and_fixed(&img, "mtime_nanos 2000000000");
    assert_eq!(img.inode(ino).mtime.nanos, 0);
    // Blocks held and a directory's size.
    img.edit_inode(p.fragmented, |i| i.blocks += 5);
    img.edit_inode(p.small_dir, |i| i.size = 12345);
    found_and_fixed(&img, "blocks held recorded");
    intact(&img, &p);
}

#[test]
fn corrupt_inode_is_cleared() {
    let (img, p) = fresh_populated();
    let ino = p.files[0].1;
    let at = img.layout().inode_location(ino).unwrap();
    // Mode with type bits 0o170000: no file type.
    img.edit_meta(at.block, |b| {
        let o = META_HEADER_LEN + at.offset;
        b[o..o + 4].copy_from_slice(&0o170_644u32.to_le_bytes());
    });
    found_and_fixed(&img, &format!("inode {ino} is corrupt"));
    assert!(!dir_entries(&img, p.small_dir).iter().any(|e| e.1 == ino));
    let fs = img.mount();
    for (path, i, data) in &p.files {
        if *i != ino {
            assert!(read_all(&fs, *i) == *data, "{path}");
        }
    }
    fs.unmount().unwrap();
}

#[test]
fn wrong_free_counts() {
    let (img, p) = fresh_populated();
    let mut sb = img.superblock();
    sb.free_blocks += 7;
    let set = keelfs_fs::devset::identify(&img.devices()).unwrap();
    let gen = set.generation();
    keelfs_fs::devset::write_superblocks(&set, &sb, gen).unwrap();
    drop(set);
    found_and_fixed(&img, "free blocks");
    intact(&img, &p);
}

#[test]
fn inode_in_use_in_a_never_written_table_block() {
    let (img, p) = fresh_populated();
    let l = img.layout();
    // The last inode lives in a table block nothing was ever put in.
    let ino = l.inode_count;
    let at = l.inode_location(ino).unwrap();
    assert!(img.read_block(0, at.block).iter().all(|&b| b == 0));
    let bit = l.inode_bitmap_bit(ino).unwrap();
    img.edit_meta(bit.block, |b| {
        set_bit(&mut b[META_HEADER_LEN..], bit.bit_in_block()).unwrap();
    });
    found_and_fixed(
        &img,
        &format!("was never written, but inodes {ino} are marked in use"),
    );
    intact(&img, &p);
}

#[test]
fn file_data_under_a_never_written_tag_table_block() {
    let (img, p) = fresh_populated();
    let block = file_blocks(&img, p.fragmented).1[0];
    let table = img.layout().tag_location(block).unwrap().block;
    for leg in 0..2 {
        img.write_block(leg, table, &vec![0u8; 4096]);
    }
    found_and_fixed(&img, "was never written, but it covers data");
    intact(&img, &p);
}
