//! Recovery from damaged journals: torn commit blocks, images corrupt on
//! one leg or all, transactions spanning several descriptor blocks, legs
//! that disagree on the journal superblock, garbage in the ring.

mod journal_support;

use journal_support::*;
use keelfs_engine::device::{CrashPoint, DeviceRef, RecordedOp};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::{JournalSuperblock, Layout, META_HEADER_LEN};
use keelfs_fs::journal::{recover, JournalConfig};
use std::sync::Arc;

const BS: usize = 1024;

fn small() -> Layout {
    layout(512, BS as u32, 64)
}

/// Two committed transactions on recorded legs whose ring held garbage
/// before (so a torn ring write never looks like zeroes): the first writes
/// blocks a and b, the second rewrites a and writes c.
fn two_transactions() -> (Rig, [u64; 3], [u64; 2]) {
    let l = small();
    let mems = mem_legs(&l, 2);
    format(&mems, &l, &[]);
    let mut rng = Rng::new(7);
    for m in &mems {
        let garbage: Vec<u8> = (0..l.journal.blocks as usize * BS)
            .map(|_| rng.next() as u8)
            .collect();
        m.poke(l.journal.start * BS as u64, &garbage);
    }
    let rig = Rig::open(l, mems, true, 64, quiet());
    let [a, b, c] = [0, 1, 2].map(|i| l.data.start + i);
    let s1 = {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, a, 1, false);
        write_pattern(&rig.cache, &tx, b, 1, false);
        tx.seq()
    };
    rig.journal.commit().unwrap();
    let s2 = {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, a, 2, false);
        write_pattern(&rig.cache, &tx, c, 2, false);
        tx.seq()
    };
    rig.journal.commit().unwrap();
    (rig, [a, b, c], [s1, s2])
}

/// The crash point of `ops` cut just before the last flush, keeping the
/// last write (the second commit block) with only `sectors` landed.
fn torn_last_commit(ops: &[RecordedOp], sectors: &[u32]) -> CrashPoint {
    let flush = ops.iter().rposition(|o| *o == RecordedOp::Flush).unwrap();
    let write = (0..flush).rev().find(|&i| ops[i].is_update()).unwrap();
    CrashPoint::new(flush, vec![write]).with_torn(write, sectors.iter().copied())
}

#[test]
fn a_torn_commit_block_discards_its_transaction() {
    let (rig, [a, b, c], [s1, s2]) = two_transactions();
    let l = rig.layout;
    // Every leg kept only one sector of the second commit block.
    for sectors in [&[0u32][..], &[1]] {
        let points: Vec<CrashPoint> = rig
            .recs
            .iter()
            .map(|r| torn_last_commit(&r.ops(), sectors))
            .collect();
        let legs = materialise(&rig.recs, &points);
        let vol = volume(
            legs.iter().map(|m| m.clone() as DeviceRef).collect(),
            l.block_size,
        );
        let report = recover(&vol, &l).unwrap();
        assert_eq!(report.last_transaction, Some(s1), "{}", reproducer(&points));
        for leg in 0..2 {
            assert!(is_pattern(&leg_block(&vol, leg, a), a, s1, 1));
            assert!(is_pattern(&leg_block(&vol, leg, b), b, s1, 1));
            assert_eq!(leg_block(&vol, leg, c), vec![0; BS]);
        }
    }
    // One leg kept the whole commit block: the transaction is committed,
    // and replayed on both legs.
    let ops0 = rig.recs[0].ops();
    let flush = ops0.iter().rposition(|o| *o == RecordedOp::Flush).unwrap();
    let write = (0..flush).rev().find(|&i| ops0[i].is_update()).unwrap();
    let points = vec![
        CrashPoint::new(flush, vec![write]),
        torn_last_commit(&rig.recs[1].ops(), &[1]),
    ];
    let legs = materialise(&rig.recs, &points);
    let vol = volume(
        legs.iter().map(|m| m.clone() as DeviceRef).collect(),
        l.block_size,
    );
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.last_transaction, Some(s2));
    for leg in 0..2 {
        assert!(is_pattern(&leg_block(&vol, leg, a), a, s2, 2));
        assert!(is_pattern(&leg_block(&vol, leg, c), c, s2, 2));
    }
}

#[test]
fn an_image_corrupt_on_one_leg_is_read_from_the_other() {
    let (rig, [a, b, _], [s1, _]) = two_transactions();
    let l = rig.layout;
    // The first record: descriptor at ring position 0, images of a and b.
    let image_a = l.journal.start + 1;
    for damage in [1usize, 2] {
        let copies: Vec<_> = rig
            .mems
            .iter()
            .map(|m| {
                Arc::new(keelfs_engine::device::MemDevice::from_image(
                    "copy",
                    m.snapshot(),
                ))
            })
            .collect();
        for m in copies.iter().take(damage) {
            m.poke(image_a * BS as u64 + 600, b"rot!");
        }
        let vol = volume(
            copies.iter().map(|m| m.clone() as DeviceRef).collect(),
            l.block_size,
        );
        let report = recover(&vol, &l).unwrap();
        if damage == 1 {
            assert_eq!(report.transactions_replayed, 2);
            assert!(report.bad_ring_copies >= 1);
            for leg in 0..2 {
                assert!(is_pattern(&leg_block(&vol, leg, b), b, s1, 1));
            }
        } else {
            // No good copy of the first record anywhere: nothing after it
            // can be trusted either.
            assert_eq!(report.transactions_replayed, 0);
            assert_eq!(leg_block(&vol, 0, a), vec![0; BS]);
        }
    }
}

#[test]
fn a_transaction_spanning_several_descriptor_blocks_replays() {
    let l = small();
    let config = JournalConfig {
        max_transaction_blocks: Some(50),
        ..quiet()
    };
    let rig = Rig::new(l, 2, &[], config);
    let blocks: Vec<u64> = (0..40).map(|i| l.data.start + i).collect();
    // Two blocks committed earlier, revoked now.
    {
        let tx = rig.journal.start().unwrap();
        for &b in &[l.data.start + 50, l.data.start + 51] {
            write_pattern(&rig.cache, &tx, b, 1, false);
        }
    }
    rig.journal.commit().unwrap();
    let seq = {
        let tx = rig.journal.start().unwrap();
        for &b in &blocks {
            write_pattern(&rig.cache, &tx, b, b, false);
        }
        tx.revoke(l.data.start + 50);
        tx.revoke(l.data.start + 51);
        tx.seq()
    };
    rig.journal.commit().unwrap();
    // 42 entries: two descriptor blocks of 34 entries each.
    assert_eq!(rig.journal.stats().ring_used, 4 + 2 + 40 + 1);
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.transactions_replayed, 2);
    assert_eq!(report.images_revoked, 2);
    for &b in &blocks {
        assert!(is_pattern(&leg_block(&vol, 1, b), b, seq, b), "block {b}");
    }
    assert_eq!(leg_block(&vol, 0, l.data.start + 50), vec![0; BS]);
}

#[test]
fn legs_that_disagree_on_the_journal_superblock_are_made_to_agree() {
    let rig = Rig::new(small(), 2, &[], quiet());
    let l = rig.layout;
    let jsb_at = l.journal_superblock * BS as u64;
    let before = rig.mems[1].peek(jsb_at, BS);
    {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, l.data.start, 1, false);
    }
    rig.journal.commit().unwrap();
    rig.journal.checkpoint().unwrap();
    // Leg 1 missed the last journal superblock update.
    rig.mems[1].poke(jsb_at, &before);
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert!(!report.found_records());
    assert!(report.superblock_written);
    assert_eq!(rig.mems[0].peek(jsb_at, BS), rig.mems[1].peek(jsb_at, BS));
    let mut payload = rig.mems[0].peek(jsb_at, BS);
    let jsb = JournalSuperblock::decode(&payload.split_off(META_HEADER_LEN)).unwrap();
    assert_eq!(jsb.oldest_sequence, report.next_sequence);
    assert!(jsb.oldest_sequence > FIRST_SEQUENCE);
}

#[test]
fn garbage_in_the_ring_never_panics_and_is_never_replayed() {
    let l = small();
    let mut rng = Rng::new(99);
    for round in 0..50u64 {
        let mems = mem_legs(&l, 2);
        format(&mems, &l, &[]);
        // Random bytes, some blocks sealed as descriptors or commits with
        // random payloads and generations near the expected sequence.
        let vol = volume(
            mems.iter().map(|m| m.clone() as DeviceRef).collect(),
            l.block_size,
        );
        for pos in 0..l.journal.blocks {
            let address = l.journal.start + pos;
            let mut block: Vec<u8> = (0..BS).map(|_| rng.next() as u8).collect();
            let kind = match rng.below(3) {
                0 => Some(BlockKind::JournalDescriptor),
                1 => Some(BlockKind::JournalCommit),
                _ => None,
            };
            if let Some(kind) = kind {
                keelfs_fs::format::header::set_block_kind(&mut block, kind).unwrap();
                keelfs_fs::format::header::set_block_generation(
                    &mut block,
                    FIRST_SEQUENCE + rng.below(3),
                )
                .unwrap();
                if rng.chance(1, 2) {
                    // A plausible descriptor: one image entry.
                    block[META_HEADER_LEN..META_HEADER_LEN + 8]
                        .copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
                    block[META_HEADER_LEN + 36..].fill(0);
                }
                vol.seal_run(address, &mut block);
            }
            let leg = (round as usize + pos as usize) % 2;
            mems[leg].poke(address * BS as u64, &block);
        }
        let before: Vec<Vec<u8>> = mems.iter().map(|m| m.snapshot()).collect();
        match recover(&vol, &l) {
            Ok(report) => {
                assert_eq!(report.transactions_replayed, 0, "round {round}");
                let data_from = l.data.start as usize * BS;
                for (m, b) in mems.iter().zip(&before) {
                    assert!(m.snapshot()[data_from..] == b[data_from..], "round {round}");
                }
            }
            Err(e) => panic!("round {round}: {e}"),
        }
    }
}
