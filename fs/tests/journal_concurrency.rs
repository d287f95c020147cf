//! The journal under concurrency: group commit of commits and of data
//! intents, and a stress run of many threads with the background thread,
//! a small ring and slow flushes, checked by recovery afterwards.

mod journal_support;

use journal_support::*;
use keelfs_engine::integrity::Tag;
use keelfs_fs::format::Layout;
use keelfs_fs::journal::{recover, JournalConfig};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

fn small() -> Layout {
    layout(512, 1024, 64)
}

#[test]
fn concurrent_commits_share_one_commit() {
    // A ring large enough that a round's 8 blocks stay under the soft
    // limit (which would commit them in `start`).
    let l = layout(1024, 1024, 256);
    let mems = mem_legs(&l, 2);
    format(&mems, &l, &[]);
    let rig = slow_rig(l, mems, Duration::from_millis(2), quiet());
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 10;
    let barrier = Barrier::new(THREADS as usize);
    let last_seq: Vec<u64> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let rig = &rig;
                let barrier = &barrier;
                s.spawn(move || {
                    let mut seq = 0;
                    for round in 0..ROUNDS {
                        barrier.wait();
                        {
                            let tx = rig.journal.start().unwrap();
                            write_pattern(&rig.cache, &tx, l.data.start + t, round, false);
                            seq = tx.seq();
                        }
                        // Everyone's change is in; now all ask for a commit.
                        barrier.wait();
                        rig.journal.commit().unwrap();
                        // Durable when commit returns.
                        assert!(rig.journal.committed_seq() >= seq);
                    }
                    seq
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let s = rig.journal.stats();
    println!(
        "group commit: {} commit() calls, {} commits, {} empty",
        s.commit_calls, s.commits, s.empty_commits
    );
    assert_eq!(s.commit_calls, THREADS * ROUNDS);
    assert!(
        s.commits + s.empty_commits <= s.commit_calls / 4,
        "{} commits for {} calls",
        s.commits + s.empty_commits,
        s.commit_calls
    );
    let vol = reopen(&rig);
    recover(&vol, &l).unwrap();
    for (t, seq) in last_seq.into_iter().enumerate() {
        let b = l.data.start + t as u64;
        let buf = leg_block(&vol, 1, b);
        // The block holds its last round, written by the transaction of
        // that round's handle.
        assert!(is_pattern(&buf, b, seq, ROUNDS - 1), "block {b}");
    }
}

#[test]
fn concurrent_intents_share_records() {
    let l = small();
    let mems = mem_legs(&l, 2);
    format(&mems, &l, &[]);
    let rig = slow_rig(l, mems, Duration::from_millis(2), quiet());
    const THREADS: u64 = 8;
    let barrier = Barrier::new(THREADS as usize);
    thread::scope(|s| {
        for t in 0..THREADS {
            let rig = &rig;
            let barrier = &barrier;
            s.spawn(move || {
                let d = l.data.start + 100 + t;
                for round in 0..4 {
                    barrier.wait();
                    let tx = rig.journal.start().unwrap();
                    let bytes = data_bytes(d, round, 1024);
                    let new = Tag::compute(d, tx.data_gen(), &bytes);
                    tx.data_intent(d, Tag::default(), new).unwrap();
                    rig.volume.write_data_tagged(d, &bytes, &[new]).unwrap();
                    store_tag(&rig.cache, &l, &tx, d, new);
                }
            });
        }
    });
    let s = rig.journal.stats();
    println!(
        "group intents: {} calls, {} records",
        s.intent_calls, s.intent_records
    );
    assert_eq!(s.intent_calls, THREADS * 4);
    assert!(s.intent_records < s.intent_calls / 2);
    rig.journal.commit().unwrap();
}

#[test]
fn many_threads_with_a_small_ring_and_the_background_thread() {
    let l = small();
    let mems = mem_legs(&l, 2);
    format(&mems, &l, &[]);
    let config = JournalConfig {
        commit_interval: Some(Duration::from_millis(5)),
        max_transaction_blocks: None,
    };
    let rig = Arc::new(slow_rig(l, mems, Duration::from_micros(200), config));
    const THREADS: u64 = 6;
    let started = Instant::now();
    // Each thread owns 4 metadata blocks and 1 data block; block 0 is
    // shared (rewritten by everyone, so pins hold the ring).
    let finals: Vec<Vec<(u64, u64, u64)>> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let rig = rig.clone();
                s.spawn(move || {
                    let mut rng = Rng::new(t);
                    let mut last = Vec::new();
                    let d = l.data.start + 200 + t;
                    for round in 0..60u64 {
                        let tx = rig.journal.start().unwrap();
                        let seq = tx.seq();
                        for _ in 0..1 + rng.below(3) {
                            let b = l.data.start + 1 + t * 4 + rng.below(4);
                            write_pattern(&rig.cache, &tx, b, round * 100 + t, false);
                            last.retain(|&(x, _, _)| x != b);
                            last.push((b, seq, round * 100 + t));
                        }
                        if rng.chance(1, 3) {
                            write_pattern(&rig.cache, &tx, l.data.start, 7, false);
                        }
                        if rng.chance(1, 3) {
                            let bytes = data_bytes(d, round, 1024);
                            let new = Tag::compute(d, tx.data_gen(), &bytes);
                            tx.data_intent(d, Tag::default(), new).unwrap();
                            rig.volume.write_data_tagged(d, &bytes, &[new]).unwrap();
                            store_tag(&rig.cache, &l, &tx, d, new);
                        }
                        drop(tx);
                        if rng.chance(1, 6) {
                            rig.journal.commit().unwrap();
                        }
                    }
                    last
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    rig.journal.shutdown().unwrap();
    let s = rig.journal.stats();
    println!(
        "stress: {:?}, {} commits ({} forced), {} checkpoints, {} intent records for {} calls",
        started.elapsed(),
        s.commits,
        s.forced_commits,
        s.checkpoints,
        s.intent_records,
        s.intent_calls
    );
    assert_eq!(s.ring_used, 0, "shutdown empties the ring");
    assert!(rig.cache.pinned_blocks().is_empty());
    let vol = reopen(&rig);
    let report = recover(&vol, &l).unwrap();
    assert!(!report.found_records());
    for (b, seq, key) in finals.into_iter().flatten() {
        for leg in 0..2 {
            assert!(
                is_pattern(&leg_block(&vol, leg, b), b, seq, key),
                "block {b}"
            );
        }
    }
    for t in 0..THREADS {
        let d = l.data.start + 200 + t;
        if let Some(tag) = disk_tag(&vol, &l, d) {
            for leg in 0..2 {
                assert!(vol.verify_leg_data(leg, d, &[tag]).unwrap().is_empty());
            }
        }
    }
}
