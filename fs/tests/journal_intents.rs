//! Data intents: logged durably before an in-place overwrite, kept until
//! the transaction storing the new tag commits, and resolved by recovery
//! on every leg (DESIGN.md "For an overwrite in place").

mod journal_support;

use journal_support::*;
use keelfs_engine::integrity::Tag;
use keelfs_engine::mirror::Region;
use keelfs_fs::format::header::{block_kind, BlockKind};
use keelfs_fs::format::Layout;
use keelfs_fs::journal::recover;

const BS: usize = 1024;

fn small() -> Layout {
    layout(512, BS as u32, 64)
}

/// A rig with data block `d` holding version 0, tag committed and home.
fn with_data(free: &[u64]) -> (Rig, u64, Tag, Vec<u8>) {
    let l = small();
    let d = l.data.start + 40;
    let rig = Rig::new(l, 2, free, quiet());
    let bytes = data_bytes(d, 0, BS);
    {
        let tx = rig.journal.start().unwrap();
        let (tags, _) = rig.volume.write_data(d, tx.data_gen(), &bytes).unwrap();
        store_tag(&rig.cache, &l, &tx, d, tags[0]);
    }
    rig.journal.commit().unwrap();
    rig.journal.checkpoint().unwrap();
    let tag = disk_tag(&rig.volume, &l, d).unwrap();
    (rig, d, tag, bytes)
}

/// Both legs' copies of `block` agree and match the tag on disk.
fn consistent(vol: &keelfs_engine::integrity::Volume, l: &Layout, block: u64) -> Vec<u8> {
    let tag = disk_tag(vol, l, block).unwrap();
    for leg in 0..2 {
        let bad = vol.verify_leg_data(leg, block, &[tag]).unwrap();
        assert!(bad.is_empty(), "leg {leg}: {:?}", bad);
    }
    let a = leg_block(vol, 0, block);
    assert_eq!(a, leg_block(vol, 1, block), "legs disagree");
    a
}

/// Write `bytes` to `leg` only.
fn write_leg(rig: &Rig, leg: usize, block: u64, bytes: &[u8]) {
    rig.volume
        .set()
        .write_regions_sync(&[Region::new(leg, block, 1)], bytes)
        .unwrap();
}

#[test]
fn an_intent_stays_in_the_ring_until_its_transaction_commits() {
    let (rig, d, old, _) = with_data(&[]);
    let l = rig.layout;
    let new_bytes = data_bytes(d, 1, BS);
    {
        let tx = rig.journal.start().unwrap();
        let new = Tag::compute(d, tx.data_gen(), &new_bytes);
        tx.data_intent(d, old, new).unwrap();
        rig.volume.write_data_tagged(d, &new_bytes, &[new]).unwrap();
        store_tag(&rig.cache, &l, &tx, d, new);
    }
    // A checkpoint writes the data home and flushes, but the tag table
    // block is pinned and the intent record must stay.
    rig.journal.checkpoint().unwrap();
    let s = rig.journal.stats();
    assert_eq!((s.intent_records, s.ring_used), (1, 2));
    // Crash before the commit: the data is new, the tag table old.
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.intent_records, 1);
    assert_eq!(report.transactions_replayed, 0);
    assert_eq!(report.intents.blocks, 1);
    assert_eq!(report.intents.matched, 1);
    assert!(report.intents.torn.is_empty());
    assert_eq!(consistent(&vol, &l, d), new_bytes);
    // Once committed, the intent is released with the transaction.
    rig.journal.commit().unwrap();
    rig.journal.checkpoint().unwrap();
    assert_eq!(rig.journal.stats().ring_used, 0);
}

#[test]
fn a_block_torn_on_every_leg_is_accepted_retagged_and_reported() {
    let (rig, d, old, old_bytes) = with_data(&[]);
    let l = rig.layout;
    let new_bytes = data_bytes(d, 1, BS);
    let new_gen;
    {
        let tx = rig.journal.start().unwrap();
        new_gen = tx.data_gen();
        let new = Tag::compute(d, new_gen, &new_bytes);
        tx.data_intent(d, old, new).unwrap();
        // Power fails mid-write: each leg kept a different sector.
        let torn0 = [&new_bytes[..512], &old_bytes[512..]].concat();
        let torn1 = [&old_bytes[..512], &new_bytes[512..]].concat();
        write_leg(&rig, 0, d, &torn0);
        write_leg(&rig, 1, d, &torn1);
        store_tag(&rig.cache, &l, &tx, d, new);
    }
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.intents.torn, vec![d]);
    assert_eq!(report.intents.legs_repaired, 1);
    assert!(report.recovery_record.is_some());
    let kept = consistent(&vol, &l, d);
    assert_eq!(&kept[..512], &new_bytes[..512], "leg 0's copy is kept");
    assert_eq!(&kept[512..], &old_bytes[512..]);
    assert_eq!(disk_tag(&vol, &l, d).unwrap().gen, new_gen);
    // Idempotent: nothing left to do.
    assert!(!recover(&vol, &l).unwrap().found_records());
}

#[test]
fn legs_holding_old_and_new_agree_on_the_committed_version() {
    let (rig, d, old, old_bytes) = with_data(&[]);
    let l = rig.layout;
    let new_bytes = data_bytes(d, 1, BS);
    {
        let tx = rig.journal.start().unwrap();
        let new = Tag::compute(d, tx.data_gen(), &new_bytes);
        tx.data_intent(d, old, new).unwrap();
        write_leg(&rig, 0, d, &new_bytes);
        store_tag(&rig.cache, &l, &tx, d, new);
    }
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.intents.matched, 1);
    assert_eq!(report.intents.legs_repaired, 1);
    assert_eq!(report.intents.tags_updated, 0);
    assert_eq!(report.recovery_record, None);
    assert_eq!(consistent(&vol, &l, d), old_bytes);
}

#[test]
fn a_new_copy_wins_over_a_torn_one_and_its_tag_is_stored() {
    let (rig, d, old, old_bytes) = with_data(&[]);
    let l = rig.layout;
    let new_bytes = data_bytes(d, 1, BS);
    let new;
    {
        let tx = rig.journal.start().unwrap();
        new = Tag::compute(d, tx.data_gen(), &new_bytes);
        tx.data_intent(d, old, new).unwrap();
        write_leg(&rig, 0, d, &[&old_bytes[..512], &new_bytes[512..]].concat());
        write_leg(&rig, 1, d, &new_bytes);
        store_tag(&rig.cache, &l, &tx, d, new);
    }
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert!(report.intents.torn.is_empty());
    assert_eq!(report.intents.tags_updated, 1);
    assert_eq!(consistent(&vol, &l, d), new_bytes);
    assert_eq!(disk_tag(&vol, &l, d), Some(new));
}

#[test]
fn blocks_the_bitmap_says_are_free_are_skipped() {
    let l = small();
    let d = l.data.start + 40;
    let (rig, _, old, old_bytes) = with_data(&[d]);
    let new_bytes = data_bytes(d, 1, BS);
    {
        let tx = rig.journal.start().unwrap();
        let new = Tag::compute(d, tx.data_gen(), &new_bytes);
        tx.data_intent(d, old, new).unwrap();
        write_leg(&rig, 0, d, &new_bytes);
        // A metadata change so the transaction is not empty.
        write_pattern(&rig.cache, &tx, l.data.start, 1, false);
    }
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.intents.skipped_free, 1);
    assert_eq!(report.intents.legs_repaired, 0);
    assert_eq!(leg_block(&vol, 0, d), new_bytes);
    assert_eq!(leg_block(&vol, 1, d), old_bytes);
}

#[test]
fn an_unwritten_tag_table_block_is_initialised() {
    let l = small();
    let rig = Rig::new(l, 2, &[], quiet());
    // A data block whose tag lives in the second tag-table block, which
    // mkfs left zeroed.
    let d = l.data.start + l.tags_per_block() + 5;
    let tag_block = l.tag_location(d).unwrap().block;
    assert_eq!(tag_block, l.tag_table.start + 1);
    assert_eq!(leg_block(&rig.volume, 0, tag_block), vec![0; BS]);
    let bytes = data_bytes(d, 1, BS);
    {
        let tx = rig.journal.start().unwrap();
        let new = Tag::compute(d, tx.data_gen(), &bytes);
        tx.data_intent(d, Tag::default(), new).unwrap();
        rig.volume.write_data_tagged(d, &bytes, &[new]).unwrap();
        store_tag(&rig.cache, &l, &tx, d, new);
    }
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.intents.tags_updated, 1);
    let mut buf = vec![0u8; BS];
    vol.read_meta(tag_block, &mut buf, None).unwrap();
    assert_eq!(block_kind(&buf), Ok(BlockKind::TagTable));
    assert_eq!(consistent(&vol, &l, d), bytes);
}

#[test]
fn a_block_reused_as_metadata_after_its_intent_is_left_to_replay() {
    let (rig, d, old, _) = with_data(&[]);
    let l = rig.layout;
    let new_bytes = data_bytes(d, 1, BS);
    {
        let tx = rig.journal.start().unwrap();
        let new = Tag::compute(d, tx.data_gen(), &new_bytes);
        tx.data_intent(d, old, new).unwrap();
        rig.volume.write_data_tagged(d, &new_bytes, &[new]).unwrap();
        store_tag(&rig.cache, &l, &tx, d, new);
    }
    rig.journal.commit().unwrap();
    // The file is deleted and the block becomes a metadata block.
    let seq = {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, d, 9, true);
        tx.seq()
    };
    rig.journal.commit().unwrap();
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.intents.skipped_metadata, 1);
    assert_eq!(report.intents.legs_repaired, 0);
    for leg in 0..2 {
        assert!(is_pattern(&leg_block(&vol, leg, d), d, seq, 9));
    }
}

#[test]
fn corruption_without_an_intent_is_not_retagged() {
    let (rig, d, _, bytes) = with_data(&[]);
    let l = rig.layout;
    {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, l.data.start, 1, false);
    }
    rig.journal.commit().unwrap();
    // Leg 0 rots.
    rig.mems[0].poke(d * BS as u64 + 100, &[0xee; 4]);
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.intents.blocks, 0);
    let tag = disk_tag(&vol, &l, d).unwrap();
    assert_eq!(vol.verify_leg_data(0, d, &[tag]).unwrap().len(), 1);
    // A read still gets good bytes (from leg 1) and heals leg 0.
    let mut buf = vec![0u8; BS];
    for _ in 0..2 {
        vol.read_data(d, &mut buf, &[tag]).unwrap();
        assert_eq!(buf, bytes);
    }
    assert!(vol.verify_leg_data(0, d, &[tag]).unwrap().is_empty());
}

#[test]
fn intents_outside_the_data_area_are_refused() {
    let rig = Rig::new(small(), 1, &[], quiet());
    let tx = rig.journal.start().unwrap();
    let t = Tag::default();
    assert!(tx.data_intent(rig.layout.inode_table.start, t, t).is_err());
    assert!(tx.log_intents(&[]).is_ok());
    assert_eq!(rig.journal.stats().intent_records, 0);
}
