//! bufio under threads: a slow load blocks nobody else, concurrent readers
//! of a missing block share one read (and one failure), and a stress run of
//! read/modify/dirty/release with a small limit loses no update.

mod bufio_support;

use bufio_support::{filled, MemStore};
use keelfs_engine::bufio::{Bufio, BufioConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const BS: usize = 64;

fn config(limit_blocks: u64, background: bool) -> BufioConfig {
    BufioConfig {
        memory_limit_bytes: limit_blocks * BS as u64,
        resident_min_bytes: 0,
        dirty_ratio: 2,
        max_age: Duration::from_millis(20),
        writeback_batch: 4,
        background_tick: background.then(|| Duration::from_millis(5)),
    }
}

fn setup(num_blocks: u64, config: BufioConfig) -> (Arc<MemStore>, Bufio) {
    let store = Arc::new(MemStore::new(BS, num_blocks));
    for block in 0..num_blocks {
        store.put(block, &filled(BS, block as u8));
    }
    let bufio = Bufio::new(store.clone(), config).unwrap();
    (store, bufio)
}

/// Run `f` on another thread; fail if it takes more than 5 s.
fn within_5s<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    what: &str,
    f: impl FnOnce() + Send + 'scope,
) {
    let (done_tx, done_rx) = mpsc::channel();
    scope.spawn(move || {
        f();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what} blocked behind a slow load"));
}

#[test]
fn a_slow_load_blocks_neither_hits_nor_other_misses() {
    const A: u64 = 0;
    const B_SAME_SHARD: u64 = 16;
    const C: u64 = 1;
    let (store, bufio) = setup(64, config(32, false));
    drop(bufio.read(B_SAME_SHARD).unwrap());
    drop(bufio.read(C).unwrap());
    store.read_gate.close_on(A);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            let handle = bufio.read(A).unwrap();
            let bytes = handle.data().to_vec();
            (handle, bytes)
        });
        store.read_gate.wait_for_waiter();
        within_5s(s, "hits and other misses", || {
            assert!(bufio.get(A).is_none(), "get returned a block still loading");
            let hit = bufio.get(B_SAME_SHARD).expect("cached");
            assert_eq!(&*hit.data(), &filled(BS, B_SAME_SHARD as u8)[..]);
            drop(bufio.read(C).unwrap());
            drop(bufio.read(B_SAME_SHARD).unwrap());
            drop(bufio.read(A + 32).unwrap()); // a miss in A's shard
            let zeroed = bufio.new_buf(A + 48).unwrap();
            zeroed.data_mut()[0] = 1;
        });
        let second = s.spawn(|| bufio.read(A).unwrap().data().to_vec());
        std::thread::sleep(Duration::from_millis(50)); // let it wait on the load
        store.read_gate.open();
        let (handle, first_bytes) = first.join().unwrap();
        let second_bytes = second.join().unwrap();
        assert_eq!(first_bytes, filled(BS, A as u8));
        assert_eq!(second_bytes, first_bytes);
        drop(handle);
    });
    assert_eq!(store.reads_of(A), 1, "two readers, one read");
}

#[test]
fn a_failed_load_fails_every_waiter_and_is_retried() {
    const A: u64 = 5;
    let (store, bufio) = setup(64, config(32, false));
    store.fail_reads_of(A, true);
    store.read_gate.close_on(A);
    std::thread::scope(|s| {
        let first = s.spawn(|| bufio.read(A).map(|h| h.block()));
        store.read_gate.wait_for_waiter();
        let second = s.spawn(|| bufio.read(A).map(|h| h.block()));
        std::thread::sleep(Duration::from_millis(50));
        store.read_gate.open();
        let first = first.join().unwrap().unwrap_err();
        let second = second.join().unwrap().unwrap_err();
        assert_eq!(first.to_string(), second.to_string());
    });
    assert_eq!(store.reads_of(A), 1);
    assert!(!bufio.is_cached(A));
    assert_eq!(bufio.stats().current_bytes, 0);
    store.fail_reads_of(A, false);
    assert_eq!(&*bufio.read(A).unwrap().data(), &filled(BS, A as u8)[..]);
    assert_eq!(store.reads_of(A), 2);
}

fn counter(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

fn bump(bytes: &mut [u8]) {
    let next = counter(bytes) + 1;
    bytes[..8].copy_from_slice(&next.to_le_bytes());
}

/// Threads increment per-block counters (under the buffer write lock) on
/// overlapping blocks through a cache much smaller than the working set,
/// with background writeback and age-out, syncs, prefetches, pins and a
/// period of failing writes. At the end every increment is in the store.
#[test]
fn stress_concurrent_read_modify_dirty_release() {
    const THREADS: u64 = 3;
    const BLOCKS: u64 = 48;
    const LIMIT: u64 = 8;
    const RUN: Duration = Duration::from_millis(1200);
    let store = Arc::new(MemStore::new(BS, BLOCKS));
    let bufio = Bufio::new(store.clone(), config(LIMIT, true)).unwrap();
    let stop = AtomicBool::new(false);
    let monitoring = AtomicBool::new(true);
    let max_bytes = AtomicU64::new(0);
    let tallies: Vec<HashMap<u64, u64>> = std::thread::scope(|s| {
        // Memory monitor, while writes work (when they fail, dirty buffers
        // cannot be freed and the cache may legitimately grow).
        s.spawn(|| {
            while monitoring.load(SeqCst) {
                max_bytes.fetch_max(bufio.stats().current_bytes, SeqCst);
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        // Then writes fail for a while, then work again.
        s.spawn(|| {
            std::thread::sleep(RUN * 5 / 8);
            monitoring.store(false, SeqCst);
            store.fail_all_writes.store(true, SeqCst);
            std::thread::sleep(RUN / 8);
            store.fail_all_writes.store(false, SeqCst);
        });
        let workers: Vec<_> = (0..THREADS)
            .map(|id| {
                let (bufio, stop) = (&bufio, &stop);
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(id);
                    let mut tally: HashMap<u64, u64> = HashMap::new();
                    let mut pinned: Vec<u64> = Vec::new();
                    let mut iterations = 0u64;
                    while !stop.load(SeqCst) {
                        iterations += 1;
                        let block = rng.random_range(0..BLOCKS);
                        match rng.random_range(0..100) {
                            0..=69 => {
                                let handle = bufio.read(block).unwrap();
                                let mut bytes = handle.data_mut();
                                bump(&mut bytes);
                                *tally.entry(block).or_default() += 1;
                                if rng.random_bool(0.3) {
                                    // Miss while holding a write guard.
                                    let other = bufio.read(rng.random_range(0..BLOCKS)).unwrap();
                                    drop(other);
                                }
                                if rng.random_bool(0.5) {
                                    handle.mark_dirty();
                                    drop(bytes);
                                } else {
                                    drop(bytes);
                                    handle.mark_partial_dirty(0, 8).unwrap();
                                }
                            }
                            70..=79 => {
                                if let Some(handle) = bufio.get(block) {
                                    bump(&mut handle.data_mut());
                                    handle.mark_dirty();
                                    *tally.entry(block).or_default() += 1;
                                }
                            }
                            80..=84 => {
                                let _ = bufio.write_dirty_sync();
                            }
                            85..=89 => bufio.write_dirty_async(),
                            90..=93 => {
                                let count = 4.min(BLOCKS - block);
                                bufio.prefetch(block, count).unwrap();
                            }
                            94..=96 if pinned.len() < 2 => {
                                let handle = bufio.read(block).unwrap();
                                handle.pin();
                                pinned.push(block);
                            }
                            _ => {
                                if let Some(block) = pinned.pop() {
                                    bufio.unpin_block(block).unwrap();
                                }
                            }
                        }
                    }
                    for block in pinned {
                        bufio.unpin_block(block).unwrap();
                    }
                    assert!(iterations > 100, "thread {id} made no progress");
                    tally
                })
            })
            .collect();
        std::thread::sleep(RUN);
        stop.store(true, SeqCst);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    bufio.flush().unwrap();
    let mut expected: HashMap<u64, u64> = HashMap::new();
    for tally in tallies {
        for (block, count) in tally {
            *expected.entry(block).or_default() += count;
        }
    }
    for block in 0..BLOCKS {
        let want = expected.get(&block).copied().unwrap_or(0);
        assert_eq!(counter(&store.stable_content(block)), want, "block {block}");
        assert_eq!(counter(&bufio.read(block).unwrap().data()), want);
    }
    let stats = bufio.stats();
    assert_eq!(
        (
            stats.held_buffers,
            stats.pinned_buffers,
            stats.dirty_buffers
        ),
        (0, 0, 0)
    );
    assert!(
        stats.write_errors > 0,
        "the failing period was not exercised"
    );
    // Held: 2 per thread at most, pinned: 2 per thread; plus slack for
    // concurrent allocations racing with each other and with writeback.
    let bound = (LIMIT + THREADS * 2 + THREADS * 2 + THREADS) * BS as u64;
    let seen = max_bytes.load(SeqCst);
    assert!(seen <= bound, "cache grew to {seen} bytes (bound {bound})");
    assert!(store.violations().is_empty());
    eprintln!("stress: {stats:?}");
}
