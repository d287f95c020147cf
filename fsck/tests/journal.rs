//! The journal: a ring holding a committed transaction must be replayed
//! before anything else. fsck -n replays it in memory only (nothing is
//! written) and checks what the next mount will see; fsck -y replays it
//! first (`keelfs_fs::journal::recover`). A torn
//! transaction (no valid commit block) is what recovery discards, and is
//! no reason to stop.

mod support;

use keelfs_engine::integrity::{meta_seal, meta_set_gen, meta_set_kind};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::journal::{Commit, Descriptor, DescriptorEntry, JournalSuperblock};
use keelfs_fs::format::META_HEADER_LEN;
use keelfs_fsck::{EXIT_CLEAN, EXIT_UNCORRECTED};
use support::*;

/// A sealed ring block of `kind` at `address` holding `payload`.
fn ring_block(
    img: &Image,
    address: u64,
    kind: BlockKind,
    gen: u64,
    fill: impl Fn(&mut [u8]),
) -> Vec<u8> {
    let mut b = vec![0u8; img.block_size as usize];
    fill(&mut b[META_HEADER_LEN..]);
    meta_set_kind(&mut b, kind.to_u16());
    meta_set_gen(&mut b, gen);
    meta_seal(address, &img.superblock().fs_uuid, &mut b);
    b
}

/// Writes one transaction at the journal's tail: a descriptor naming the
/// root's inode-table block, its image (the root's uid set to 77), and, if
/// `committed`, a commit block. Returns the block the image is for.
fn write_transaction(img: &Image, committed: bool) -> u64 {
    write_transaction_with(img, committed, |_| {})
}

/// [`write_transaction`], with `also` changing the root inode's 256 bytes
/// in the image too.
fn write_transaction_with(img: &Image, committed: bool, also: impl Fn(&mut [u8])) -> u64 {
    let l = img.layout();
    let jb = img.read_block(0, l.journal_superblock);
    let jsb = JournalSuperblock::decode(&jb[META_HEADER_LEN..]).unwrap();
    let seq = jsb.oldest_sequence;
    let at = |pos: u64| l.journal.start + (jsb.oldest_position + pos) % l.journal.blocks;
    let home = l.inode_table.start;
    let desc = ring_block(img, at(0), BlockKind::JournalDescriptor, seq, |p| {
        Descriptor {
            more: false,
            entries: vec![DescriptorEntry::Image { home }],
        }
        .encode(p)
        .unwrap()
    });
    // The image: the home block as it is, with the root's uid changed,
    // sealed for its home.
    let mut image = img.read_block(0, home);
    image[META_HEADER_LEN + 4] = 77;
    also(&mut image[META_HEADER_LEN..META_HEADER_LEN + 256]);
    meta_set_gen(&mut image, seq);
    meta_seal(home, &img.superblock().fs_uuid, &mut image);
    let crc = Commit::checksum([&desc[..], &image[..]]);
    let commit = ring_block(img, at(2), BlockKind::JournalCommit, seq, |p| {
        Commit {
            sequence: seq,
            blocks: 2,
            crc,
        }
        .encode(p)
        .unwrap()
    });
    for leg in 0..img.paths.len() {
        img.write_block(leg, at(0), &desc);
        img.write_block(leg, at(1), &image);
        if committed {
            img.write_block(leg, at(2), &commit);
        }
    }
    home
}

#[test]
fn check_only_replays_in_memory_and_writes_nothing() {
    let (img, _) = fresh_populated();
    write_transaction(&img, true);
    let before = img.contents();
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{:?}", o.first().findings());
    let text = o.replayed_in_memory.as_deref().unwrap_or_default();
    assert!(text.contains("1 transactions"), "{text}");
    assert!(img.contents() == before, "nothing may change");
    assert_eq!(img.inode(1).uid, 0, "the replay stayed in memory");
    // Without -f too, through the program.
    let o = img.run(&["-n"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("in memory only"), "{}", stdout(&o));
    assert!(img.contents() == before, "nothing may change");
}

#[test]
fn check_only_sees_what_the_replay_brings() {
    let (img, _) = fresh_populated();
    // The transaction gives the root a wrong link count: only a check of
    // the replayed filesystem can see it.
    write_transaction_with(&img, true, |inode| {
        inode[12..16].copy_from_slice(&99u32.to_le_bytes())
    });
    let before = img.contents();
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_UNCORRECTED, "{:?}", o.first().findings());
    assert!(o.replayed_in_memory.is_some());
    assert!(
        o.first().mentions("link"),
        "the bad link count is reported: {:?}",
        o.first().findings()
    );
    assert!(img.contents() == before, "nothing may change");
    // A repair replays it for real and fixes the count.
    let o = img.repair();
    assert_eq!(
        o.exit_code,
        keelfs_fsck::EXIT_CORRECTED,
        "{:?}",
        o.last().findings()
    );
    assert_eq!(img.inode(1).uid, 77);
    assert_ne!(img.inode(1).links, 99);
    assert_eq!(img.check().exit_code, EXIT_CLEAN);
}

#[test]
fn a_repair_replays_the_journal_first() {
    let (img, p) = fresh_populated();
    assert_eq!(img.inode(1).uid, 0);
    write_transaction(&img, true);
    let o = img.repair();
    assert_eq!(
        o.exit_code,
        keelfs_fsck::EXIT_CORRECTED,
        "{:?}",
        o.last().findings()
    );
    assert!(o.replayed.is_some());
    assert_eq!(img.inode(1).uid, 77, "the transaction was replayed");
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{:?}", o.first().findings());
    let fs = img.mount();
    verify_population(&fs, &p);
    fs.unmount().unwrap();
}

#[test]
fn a_torn_transaction_is_ignored() {
    let (img, _) = fresh_populated();
    write_transaction(&img, false);
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{:?}", o.first().findings());
}
