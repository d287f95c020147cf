//! bufio memory policy: LRU eviction, reclaim writeback, the limit under a
//! workload, held and pinned buffers never evicted, pressure, age-out.

mod bufio_support;

use bufio_support::{filled, MemStore};
use keelfs_engine::bufio::{BufHandle, Bufio, BufioConfig, PressureInfo};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: usize = 32;

fn config(limit_blocks: u64) -> BufioConfig {
    BufioConfig {
        memory_limit_bytes: limit_blocks * BS as u64,
        resident_min_bytes: 0,
        dirty_ratio: 3,
        max_age: Duration::from_secs(60),
        writeback_batch: 4,
        background_tick: None,
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

#[test]
fn evicts_the_least_recently_released_clean_buffer() {
    let (_store, bufio) = setup(32, config(4));
    for block in [0, 1, 2, 3] {
        drop(bufio.read(block).unwrap());
    }
    drop(bufio.read(0).unwrap()); // 0 becomes the most recent
    drop(bufio.read(4).unwrap());
    assert!(!bufio.is_cached(1), "1 was the oldest");
    assert!(bufio.is_cached(0) && bufio.is_cached(2) && bufio.is_cached(4));
    drop(bufio.read(5).unwrap());
    assert!(!bufio.is_cached(2));
    let stats = bufio.stats();
    assert_eq!(stats.evictions, 2);
    assert_eq!(stats.current_bytes, 4 * BS as u64);
    assert_eq!(stats.peak_bytes, 5 * BS as u64);
}

#[test]
fn dirty_buffers_are_written_back_to_make_room() {
    let (store, bufio) = setup(32, config(4));
    for block in 0..4 {
        let handle = bufio.read(block).unwrap();
        handle.data_mut().fill(0xF0 + block as u8);
        handle.mark_dirty();
    }
    drop(bufio.read(10).unwrap());
    assert!(bufio.stats().current_bytes <= 4 * BS as u64);
    // The oldest dirty buffers were written (in one block-ordered run) and
    // one evicted; nothing was lost.
    assert_eq!(store.runs()[0], (0, 4));
    for block in 0..4 {
        assert_eq!(
            &*bufio.read(block).unwrap().data(),
            &filled(BS, 0xF0 + block as u8)[..]
        );
    }
}

#[test]
fn pressure_is_reported_when_everything_is_held_or_pinned() {
    let (_store, bufio) = setup(32, config(2));
    let reports: Arc<Mutex<Vec<PressureInfo>>> = Arc::default();
    let sink = reports.clone();
    bufio.on_pressure(move |info| sink.lock().push(*info));
    let pinned = bufio.read(0).unwrap();
    pinned.pin();
    pinned.data_mut().fill(1);
    pinned.mark_dirty();
    drop(pinned);
    let held = bufio.read(1).unwrap();
    assert!(reports.lock().is_empty());
    let over = bufio.read(2).unwrap(); // exceeds rather than deadlock
    let info = reports.lock()[0];
    assert_eq!(info.current_bytes, 3 * BS as u64);
    assert_eq!(info.limit_bytes, 2 * BS as u64);
    assert_eq!(info.pinned_buffers, 1);
    assert_eq!(info.dirty_buffers, 1);
    assert!(bufio.stats().pressure_events >= 1);
    drop((held, over));
    // Releasing brings the cache back under the limit (clean ones go).
    assert!(bufio.stats().current_bytes <= 2 * BS as u64);
    assert!(bufio.is_cached(0));
}

/// A single-threaded random workload: after every allocation (miss) the
/// cache is under `max(limit, held-or-pinned buffers)`, and held and pinned
/// buffers are always cached.
#[test]
fn memory_stays_under_the_limit_plus_held_and_pinned() {
    const LIMIT: u64 = 8;
    const BLOCKS: u64 = 64;
    let (store, bufio) = setup(BLOCKS, config(LIMIT));
    let mut rng = StdRng::seed_from_u64(7);
    let mut handles: Vec<BufHandle<'_>> = Vec::new();
    let mut pins: HashMap<u64, u32> = HashMap::new();
    let mut expected: HashMap<u64, u8> = HashMap::new();
    for step in 0..4000 {
        match rng.random_range(0..10) {
            0..=3 => {
                let block = rng.random_range(0..BLOCKS);
                let misses = bufio.stats().misses;
                let handle = bufio.read(block).unwrap();
                let want = expected.get(&block).copied().unwrap_or(block as u8);
                assert_eq!(handle.data()[0], want, "step {step} block {block}");
                handles.push(handle);
                // The policy acts on allocation: check after misses.
                if bufio.stats().misses > misses {
                    let unevictable: BTreeSet<u64> = handles
                        .iter()
                        .map(|h| h.block())
                        .chain(pins.keys().copied())
                        .collect();
                    let bound = LIMIT.max(unevictable.len() as u64) * BS as u64;
                    let current = bufio.stats().current_bytes;
                    assert!(current <= bound, "step {step}: {current} > {bound}");
                }
            }
            4..=6 if !handles.is_empty() => {
                let handle = handles.swap_remove(rng.random_range(0..handles.len()));
                if rng.random_bool(0.5) {
                    let byte = rng.random();
                    handle.data_mut().fill(byte);
                    handle.mark_dirty();
                    expected.insert(handle.block(), byte);
                }
            }
            7 if !handles.is_empty() && pins.len() < 3 => {
                let handle = &handles[rng.random_range(0..handles.len())];
                handle.pin();
                *pins.entry(handle.block()).or_default() += 1;
            }
            8 if !pins.is_empty() => {
                let block = *pins.keys().next().unwrap();
                bufio.unpin_block(block).unwrap();
                let count = pins.get_mut(&block).unwrap();
                *count -= 1;
                if *count == 0 {
                    pins.remove(&block);
                }
            }
            9 if handles.len() > 12 => handles.clear(),
            _ => {}
        }
        for handle in &handles {
            assert!(bufio.is_cached(handle.block()));
        }
        for block in pins.keys() {
            assert!(bufio.is_cached(*block), "pinned block {block} evicted");
        }
    }
    drop(handles);
    for (block, count) in pins {
        for _ in 0..count {
            bufio.unpin_block(block).unwrap();
        }
    }
    bufio.flush().unwrap();
    for (block, byte) in expected {
        assert_eq!(store.content(block), filled(BS, byte));
    }
    assert!(bufio.stats().evictions > 100);
}

#[test]
fn pinned_unheld_buffers_survive_churn_unwritten() {
    let (store, bufio) = setup(64, config(4));
    for block in [0, 1] {
        let handle = bufio.read(block).unwrap();
        handle.pin();
        handle.data_mut().fill(0xAA);
        handle.mark_dirty();
        store.set_forbidden(block, true);
    }
    for block in 2..60 {
        let handle = bufio.read(block).unwrap();
        if block % 3 == 0 {
            handle.data_mut().fill(0xBB);
            handle.mark_dirty();
        }
    }
    bufio.write_dirty_sync().unwrap();
    assert!(store.violations().is_empty());
    assert!(bufio.is_cached(0) && bufio.is_cached(1));
    assert_eq!(&*bufio.get(0).unwrap().data(), &filled(BS, 0xAA)[..]);
    assert_eq!(store.content(0), filled(BS, 0));
}

#[test]
fn old_clean_buffers_age_out_down_to_the_resident_minimum() {
    let (_store, bufio) = setup(
        32,
        BufioConfig {
            max_age: Duration::from_millis(40),
            resident_min_bytes: 2 * BS as u64,
            ..config(16)
        },
    );
    for block in 0..6 {
        drop(bufio.read(block).unwrap());
    }
    let held = bufio.read(10).unwrap();
    let dirty = bufio.read(11).unwrap();
    dirty.data_mut().fill(1);
    dirty.mark_dirty();
    drop(dirty);
    assert_eq!(bufio.age_out(), 0, "nothing is old yet");
    std::thread::sleep(Duration::from_millis(60));
    drop(bufio.read(5).unwrap()); // recently used again
                                  // 8 buffers; 10 (held), 11 (dirty) and 5 (young) are not candidates:
                                  // 0..5 go, oldest first.
    assert_eq!(bufio.age_out(), 5);
    assert!((0..5).all(|b| !bufio.is_cached(b)));
    assert!(bufio.is_cached(5) && bufio.is_cached(10) && bufio.is_cached(11));
    assert_eq!(bufio.stats().aged_out, 5);
    drop(held);
    std::thread::sleep(Duration::from_millis(60));
    // 5 and 10 are old now, but only one may go: the minimum is 2 buffers.
    assert_eq!(bufio.age_out(), 1);
    assert_eq!(bufio.stats().current_bytes, 2 * BS as u64);
}

#[test]
fn the_background_thread_ages_out() {
    let (_store, bufio) = setup(
        32,
        BufioConfig {
            max_age: Duration::from_millis(20),
            background_tick: Some(Duration::from_millis(5)),
            ..config(16)
        },
    );
    for block in 0..10 {
        drop(bufio.read(block).unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while bufio.stats().current_bytes > 0 {
        assert!(Instant::now() < deadline, "nothing aged out");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(bufio.stats().aged_out, 10);
}
