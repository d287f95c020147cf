//! The journal: a ring holding a committed transaction must be replayed
//! before anything else. fsck -n reports it (exit 4) and changes nothing.
//! With the `journal-recovery` feature (`keelfs_fs::journal::recover`),
//! fsck -y replays it first; without, it reports it and changes nothing
//! (exit 4). A torn transaction (no valid commit block) is what recovery
//! discards, and is no reason to stop.

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
fn check_only_reports_a_journal_to_replay() {
    let (img, _) = fresh_populated();
    write_transaction(&img, true);
    let before = img.contents();
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_UNCORRECTED);
    assert!(
        o.first().mentions("were not replayed"),
        "{:?}",
        o.first().findings()
    );
    assert!(img.contents() == before, "nothing may change");
    // Without -f too: a journal to replay means the filesystem is not clean.
    let o = img.run(&["-n"]);
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
}

#[cfg(not(feature = "journal-recovery"))]
#[test]
fn a_committed_transaction_stops_repairs() {
    let (img, _) = fresh_populated();
    write_transaction(&img, true);
    let before = img.contents();
    for o in [img.check(), img.repair()] {
        assert_eq!(o.exit_code, EXIT_UNCORRECTED);
        assert!(
            o.first().mentions("journal recovery is not available"),
            "{:?}",
            o.first().findings()
        );
        assert_eq!(o.blocks_written(), 0);
    }
    assert!(img.contents() == before, "nothing may change");
}

#[cfg(feature = "journal-recovery")]
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
