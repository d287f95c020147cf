//! The journal on the engine alone: commits replay after a crash, the ring
//! wraps, oversized transactions are refused cleanly, checkpoints free the
//! ring, open refuses an unrecovered journal, revokes are honoured.

mod journal_support;

use journal_support::*;
use keelfs_fs::error::FsError;
use keelfs_fs::format::Layout;
use keelfs_fs::journal::{recover, Journal, JournalConfig};
use std::sync::Arc;

fn small() -> Layout {
    layout(512, 1024, 64)
}

fn meta(layout: &Layout, i: u64) -> u64 {
    layout.data.start + i
}

#[test]
fn committed_transactions_replay_and_uncommitted_ones_do_not() {
    let rig = Rig::new(small(), 2, &[], quiet());
    let l = rig.layout;
    let (a, b) = (meta(&l, 0), meta(&l, 1));
    let s1 = {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, a, 1, false);
        write_pattern(&rig.cache, &tx, b, 1, false);
        tx.seq()
    };
    rig.journal.commit().unwrap();
    assert_eq!(rig.journal.committed_seq(), s1);
    // Pinned until committed: nothing reached home before; after the
    // commit the blocks are unpinned but not yet written home.
    assert!(rig.cache.pinned_blocks().is_empty());
    assert_eq!(leg_block(&rig.volume, 0, a), vec![0; 1024]);
    let s2 = {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, a, 2, false);
        tx.seq()
    };
    assert_eq!(s2, s1 + 1);
    // Crash now: transaction 2 never committed.
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.transactions_replayed, 1);
    assert_eq!(report.last_transaction, Some(s1));
    assert_eq!(report.blocks_written, 2);
    assert_eq!(report.next_sequence, s1 + 2);
    for leg in 0..2 {
        assert!(is_pattern(&leg_block(&vol, leg, a), a, s1, 1));
        assert!(is_pattern(&leg_block(&vol, leg, b), b, s1, 1));
    }
    // Recovering again finds nothing and writes nothing.
    let before: Vec<Vec<u8>> = rig.mems.iter().map(|m| m.snapshot()).collect();
    let again = recover(&vol, &l).unwrap();
    assert!(!again.found_records());
    assert!(!again.superblock_written);
    let after: Vec<Vec<u8>> = rig.mems.iter().map(|m| m.snapshot()).collect();
    assert!(before == after);
    // And the journal opens, continuing after the skipped sequence.
    let cache = cache(&vol, 64);
    let j = Journal::open(cache, vol.clone(), &l, quiet()).unwrap();
    assert_eq!(j.running_seq(), s1 + 2);
}

#[test]
fn open_refuses_a_journal_that_needs_recovery() {
    let rig = Rig::new(small(), 1, &[], quiet());
    {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, meta(&rig.layout, 3), 1, false);
    }
    rig.journal.commit().unwrap();
    let vol = reopen(&rig);
    let cache = cache(&vol, 64);
    match Journal::open(cache, vol, &rig.layout, quiet()) {
        Err(FsError::Corrupt(msg)) => assert!(msg.contains("run recovery"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a journal holding a committed transaction"),
    }
}

#[test]
fn the_ring_wraps_and_a_wrapping_transaction_replays() {
    let rig = Rig::new(small(), 2, &[], quiet());
    let l = rig.layout;
    let mut last = Vec::new();
    let mut wrapped = false;
    // Transactions of 6 blocks (1 descriptor + 4 images + commit) go round
    // a 64-block ring several times; checkpoints free space as needed.
    for round in 0..40u64 {
        let before = rig.journal.stats();
        let tx = rig.journal.start().unwrap();
        let blocks: Vec<u64> = (0..4).map(|i| meta(&l, (round * 4 + i) % 30)).collect();
        for &b in &blocks {
            write_pattern(&rig.cache, &tx, b, round, false);
        }
        let seq = tx.seq();
        drop(tx);
        rig.journal.commit().unwrap();
        let after = rig.journal.stats();
        if after.ring_head < before.ring_head {
            wrapped = true;
            // This transaction's record wrapped past the end of the ring
            // unless it started exactly at position 0.
            if after.ring_head > 0 && after.ring_head < 6 {
                last = blocks.iter().map(|&b| (b, seq, round)).collect();
                break;
            }
        }
    }
    assert!(wrapped, "the ring never wrapped");
    assert!(
        !last.is_empty(),
        "no transaction straddled the end of the ring"
    );
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert!(report.transactions_replayed >= 1);
    for (b, seq, round) in last {
        for leg in 0..2 {
            assert!(
                is_pattern(&leg_block(&vol, leg, b), b, seq, round),
                "block {b}"
            );
        }
    }
}

#[test]
fn a_transaction_larger_than_the_ring_allows_is_refused_cleanly() {
    let rig = Rig::new(small(), 1, &[], quiet());
    let l = rig.layout;
    let max = rig.journal.max_transaction_blocks();
    assert_eq!(max, 16);
    // try_write says no before the limit is crossed.
    {
        let tx = rig.journal.start().unwrap();
        let mut n = 0;
        loop {
            let b = meta(&l, n);
            let h = hold(&rig.cache, b, false);
            match tx.try_write(&h) {
                Ok(mut w) => fill_pattern(&mut w, b, 7),
                Err(FsError::NoSpace) => break,
                Err(e) => panic!("{e}"),
            }
            n += 1;
        }
        // 1 descriptor + n images + commit = the limit.
        assert_eq!(n + 2, max);
    }
    rig.journal.commit().unwrap();
    let committed = rig.journal.committed_seq();

    // write() past the limit and past what the ring can hold: the commit
    // is refused, the journal aborts, the disk keeps the last commit.
    {
        let tx = rig.journal.start().unwrap();
        for n in 0..70 {
            write_pattern(&rig.cache, &tx, meta(&l, n), 8, false);
        }
    }
    assert!(matches!(rig.journal.commit(), Err(FsError::NoSpace)));
    assert!(rig.journal.aborted().is_some());
    assert!(matches!(rig.journal.start(), Err(FsError::ReadOnly)));
    assert!(matches!(rig.journal.commit(), Err(FsError::ReadOnly)));
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.last_transaction, Some(committed));
    for n in 0..14 {
        let b = meta(&l, n);
        assert!(
            is_pattern(&leg_block(&vol, 0, b), b, committed, 7),
            "block {b}"
        );
    }
    for n in 14..70 {
        assert_eq!(leg_block(&vol, 0, meta(&l, n)), vec![0; 1024]);
    }
}

#[test]
fn a_checkpoint_frees_the_ring_and_moves_the_tail() {
    let rig = Rig::new(small(), 2, &[], quiet());
    let l = rig.layout;
    for round in 0..3 {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, meta(&l, round), round, false);
        drop(tx);
        rig.journal.commit().unwrap();
    }
    let s = rig.journal.stats();
    assert_eq!(s.ring_used, 9);
    assert_eq!(s.commits, 3);
    // A block pinned by the running transaction holds its records back.
    let tx = rig.journal.start().unwrap();
    write_pattern(&rig.cache, &tx, meta(&l, 0), 9, false);
    rig.journal.checkpoint().unwrap();
    assert_eq!(rig.journal.stats().ring_used, 9);
    drop(tx);
    rig.journal.commit().unwrap();
    rig.journal.checkpoint().unwrap();
    let s = rig.journal.stats();
    assert_eq!(s.ring_used, 0);
    assert_eq!(s.ring_tail, s.ring_head);
    assert!(s.checkpoints >= 1);
    // The journal superblock on disk says the same.
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert!(!report.found_records());
    assert_eq!(report.next_sequence, s.committed_seq + 1);
    // The blocks are home.
    assert!(is_pattern(
        &leg_block(&vol, 1, meta(&l, 0)),
        meta(&l, 0),
        s.committed_seq,
        9
    ));
}

#[test]
fn start_makes_room_by_forcing_a_commit_when_pins_hold_the_ring() {
    let rig = Rig::new(small(), 1, &[], quiet());
    let l = rig.layout;
    // One block rewritten by every transaction: each record holds an older
    // version of it, so only committing the running transaction frees the
    // ring. Many handles, few explicit commits.
    for round in 0..200u64 {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, meta(&l, 0), round, false);
        write_pattern(&rig.cache, &tx, meta(&l, 1 + round % 5), round, false);
        drop(tx);
        if round % 3 == 0 {
            rig.journal.commit().unwrap();
        }
    }
    rig.journal.commit().unwrap();
    let s = rig.journal.stats();
    assert!(s.checkpoints > 0);
    assert!(s.ring_used < 64);
    let vol = reopen(&rig);
    recover(&vol, &l).unwrap();
    assert!(is_pattern(
        &leg_block(&vol, 0, meta(&l, 0)),
        meta(&l, 0),
        s.committed_seq,
        199
    ));
}

#[test]
fn a_revoke_stops_older_images_from_overwriting_a_reused_block() {
    let rig = Rig::new(small(), 2, &[], quiet());
    let l = rig.layout;
    let b = meta(&l, 5);
    {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, b, 1, false);
    }
    rig.journal.commit().unwrap();
    {
        let tx = rig.journal.start().unwrap();
        tx.revoke(b);
    }
    rig.journal.commit().unwrap();
    assert!(!rig.cache.is_cached(b), "a revoked block leaves the cache");
    // Reused as file data (ordered: written before the next commit).
    let data = data_bytes(b, 3, 1024);
    rig.volume.set().write_sync(b, &data).unwrap();
    {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, meta(&l, 6), 3, false);
    }
    rig.journal.commit().unwrap();
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.transactions_replayed, 3);
    assert_eq!(report.images_revoked, 1);
    for leg in 0..2 {
        assert_eq!(leg_block(&vol, leg, b), data, "leg {leg}");
    }
}

#[test]
fn revoking_a_block_written_in_the_same_transaction_logs_no_image() {
    let rig = Rig::new(small(), 1, &[], quiet());
    let l = rig.layout;
    let b = meta(&l, 2);
    {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, b, 1, false);
        write_pattern(&rig.cache, &tx, meta(&l, 3), 1, false);
        tx.revoke(b);
    }
    rig.journal.commit().unwrap();
    assert!(rig.cache.pinned_blocks().is_empty());
    let s = rig.journal.stats();
    assert_eq!((s.blocks_logged, s.revokes_logged), (1, 1));
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert_eq!(report.blocks_written, 1);
    assert_eq!(leg_block(&vol, 0, b), vec![0; 1024]);
}

#[test]
fn handles_nest_and_commit_inside_a_handle_is_refused() {
    let rig = Rig::new(small(), 1, &[], quiet());
    let l = rig.layout;
    let outer = rig.journal.start().unwrap();
    let inner = rig.journal.start().unwrap();
    assert_eq!(outer.seq(), inner.seq());
    write_pattern(&rig.cache, &inner, meta(&l, 0), 1, false);
    drop(inner);
    assert!(matches!(rig.journal.commit(), Err(FsError::Invalid(_))));
    drop(outer);
    rig.journal.commit().unwrap();
    assert_eq!(rig.journal.stats().commits, 1);
}

#[test]
fn empty_commits_only_flush_and_keep_the_sequence() {
    let rig = Rig::new(small(), 1, &[], quiet());
    let seq = rig.journal.running_seq();
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let tx = rig.journal.start().unwrap();
        let ran = ran.clone();
        tx.after_commit(Box::new(move || {
            ran.store(true, std::sync::atomic::Ordering::SeqCst)
        }));
    }
    let flushes = rig.mems[0].flush_count();
    rig.journal.commit().unwrap();
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(rig.mems[0].flush_count(), flushes + 1);
    assert_eq!(rig.journal.running_seq(), seq);
    assert_eq!(rig.journal.stats().empty_commits, 1);
}

#[test]
fn blocks_the_journal_never_logs_are_refused() {
    let rig = Rig::new(small(), 1, &[], quiet());
    let tx = rig.journal.start().unwrap();
    for b in [0, 1, 2, rig.layout.backup_superblock] {
        let h = hold(&rig.cache, b, true);
        assert!(
            matches!(tx.try_write(&h), Err(FsError::Invalid(_))),
            "block {b}"
        );
    }
    // The fixed metadata after the ring is logged like any other block.
    let h = hold(&rig.cache, rig.layout.block_bitmap.start, false);
    drop(tx.try_write(&h).unwrap());
}

#[test]
fn the_default_configuration_commits_in_the_background() {
    let rig = Rig::new(
        small(),
        1,
        &[],
        JournalConfig {
            commit_interval: Some(std::time::Duration::from_millis(10)),
            max_transaction_blocks: None,
        },
    );
    let seq = {
        let tx = rig.journal.start().unwrap();
        write_pattern(&rig.cache, &tx, meta(&rig.layout, 0), 1, false);
        tx.seq()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rig.journal.committed_seq() < seq {
        assert!(std::time::Instant::now() < deadline, "no background commit");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(rig.journal.stats().commit_calls, 0);
    rig.journal.shutdown().unwrap();
}
