//! bufio unit tests on an in-memory store: lookups, dirtying, writeback
//! order and merging, errors, pins, forget/discard, release_move, prefetch.

mod bufio_support;

use bufio_support::{filled, MemStore};
use keelfs_engine::bufio::{Bufio, BufioConfig};
use keelfs_engine::error::EngineError;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: usize = 64;

/// No background threads: everything happens in the calling thread.
fn config(limit_blocks: u64) -> BufioConfig {
    BufioConfig {
        memory_limit_bytes: limit_blocks * BS as u64,
        resident_min_bytes: 0,
        dirty_ratio: 3,
        max_age: Duration::from_secs(60),
        writeback_batch: 16,
        background_tick: None,
    }
}

fn setup(num_blocks: u64, limit_blocks: u64) -> (Arc<MemStore>, Bufio) {
    let store = Arc::new(MemStore::new(BS, num_blocks));
    for block in 0..num_blocks {
        store.put(block, &filled(BS, block as u8));
    }
    let bufio = Bufio::new(store.clone(), config(limit_blocks)).unwrap();
    (store, bufio)
}

fn write_block(bufio: &Bufio, block: u64, byte: u8) {
    let handle = bufio.read(block).unwrap();
    handle.data_mut().fill(byte);
    handle.mark_dirty();
}

fn is_invalid<T: std::fmt::Debug>(result: Result<T, EngineError>) -> bool {
    matches!(result, Err(EngineError::Invalid(_)))
}

#[test]
fn caches_and_handles_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Bufio>();
    send_sync::<keelfs_engine::bufio::BufHandle<'static>>();
}

#[test]
fn read_misses_once_then_hits() {
    let (store, bufio) = setup(32, 16);
    let handle = bufio.read(3).unwrap();
    assert_eq!(&*handle.data(), &filled(BS, 3)[..]);
    assert_eq!(handle.block(), 3);
    drop(handle);
    let again = bufio.read(3).unwrap();
    assert_eq!(&*again.data(), &filled(BS, 3)[..]);
    assert_eq!(store.reads.load(SeqCst), 1);
    let stats = bufio.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(stats.current_bytes, BS as u64);
    assert_eq!(stats.held_buffers, 1);
    drop(again);
    assert_eq!(bufio.stats().held_buffers, 0);
}

#[test]
fn holders_share_one_buffer() {
    let (_store, bufio) = setup(32, 16);
    let first = bufio.read(2).unwrap();
    let second = bufio.read(2).unwrap();
    first.data_mut()[0] = 0xEE;
    assert_eq!(second.data()[0], 0xEE);
    assert_eq!(second.hold_count(), 2);
    assert_eq!(bufio.hold_count(2), Some(2));
    drop(first);
    assert_eq!(second.hold_count(), 1);
    drop(second);
    assert_eq!(bufio.hold_count(2), Some(0));
    assert_eq!(bufio.hold_count(5), None);
}

#[test]
fn get_only_returns_cached_blocks() {
    let (store, bufio) = setup(32, 16);
    assert!(bufio.get(5).is_none());
    assert_eq!(store.reads.load(SeqCst), 0);
    drop(bufio.read(5).unwrap());
    let handle = bufio.get(5).expect("cached");
    assert_eq!(&*handle.data(), &filled(BS, 5)[..]);
    assert_eq!(store.reads.load(SeqCst), 1);
    assert!(bufio.get(1000).is_none());
}

#[test]
fn read_expect_passes_the_generation_on_a_miss_only() {
    let (store, bufio) = setup(32, 16);
    drop(bufio.read_expect(4, 77).unwrap());
    drop(bufio.read_expect(4, 78).unwrap());
    drop(bufio.read(6).unwrap());
    assert_eq!(*store.expect_gens.lock(), vec![(4, Some(77)), (6, None)]);
}

#[test]
fn new_buf_zeroes_without_reading() {
    let (store, bufio) = setup(32, 16);
    let fresh = bufio.new_buf(4).unwrap();
    assert!(fresh.data().iter().all(|&b| b == 0));
    assert!(!fresh.is_dirty());
    drop(fresh);
    assert_eq!(store.reads.load(SeqCst), 0);
    // A cached block is zeroed too.
    drop(bufio.read(6).unwrap());
    let zeroed = bufio.new_buf(6).unwrap();
    assert!(zeroed.data().iter().all(|&b| b == 0));
    assert_eq!(store.reads.load(SeqCst), 1);
}

#[test]
fn out_of_range_blocks_are_invalid() {
    let (_store, bufio) = setup(8, 4);
    assert!(is_invalid(bufio.read(8)));
    assert!(is_invalid(bufio.new_buf(u64::MAX)));
    assert!(is_invalid(bufio.prefetch(6, 3)));
    assert!(is_invalid(bufio.discard(7, 2)));
    let handle = bufio.read(1).unwrap();
    assert!(is_invalid(bufio.release_move(handle, 8)));
    assert_eq!(bufio.hold_count(1), Some(0));
}

#[test]
fn sync_writes_dirty_buffers_and_keeps_the_cache_copy() {
    let (store, bufio) = setup(32, 16);
    let handle = bufio.read(1).unwrap();
    handle.data_mut().fill(0x11);
    handle.mark_dirty();
    assert!(handle.is_dirty());
    assert_eq!(bufio.stats().dirty_buffers, 1);
    // Held buffers are written too.
    bufio.write_dirty_sync().unwrap();
    assert_eq!(store.content(1), filled(BS, 0x11));
    // The store scribbled over the copy it was handed, not over the cache.
    assert_eq!(&*handle.data(), &filled(BS, 0x11)[..]);
    assert!(!handle.is_dirty());
    let stats = bufio.stats();
    assert_eq!(stats.dirty_buffers, 0);
    assert_eq!(stats.written_bytes, BS as u64);
    assert_eq!(stats.write_runs, 1);
    drop(handle);
    // Nothing dirty: nothing written.
    bufio.write_dirty_sync().unwrap();
    assert_eq!(store.runs().len(), 1);
}

#[test]
fn writeback_merges_adjacent_blocks_in_block_order() {
    let (store, bufio) = setup(32, 16);
    for block in [5, 3, 4, 10] {
        write_block(&bufio, block, 0xD0 + block as u8);
    }
    bufio.write_dirty_sync().unwrap();
    assert_eq!(store.runs(), vec![(3, 3), (10, 1)]);
    for block in [3, 4, 5, 10] {
        assert_eq!(store.content(block), filled(BS, 0xD0 + block as u8));
    }
}

#[test]
fn writeback_runs_are_at_most_one_batch_long() {
    let store = Arc::new(MemStore::new(BS, 32));
    let bufio = Bufio::new(
        store.clone(),
        BufioConfig {
            writeback_batch: 2,
            ..config(16)
        },
    )
    .unwrap();
    for block in [5, 1, 4, 2, 3] {
        write_block(&bufio, block, 1);
    }
    bufio.write_dirty_sync().unwrap();
    assert_eq!(store.runs(), vec![(1, 2), (3, 2), (5, 1)]);
}

#[test]
fn failed_writes_stay_dirty_and_are_reported() {
    let (store, bufio) = setup(32, 16);
    write_block(&bufio, 7, 0x77);
    write_block(&bufio, 20, 0x20);
    store.fail_writes_of(7, true);
    let err = bufio.write_dirty_sync().unwrap_err();
    assert!(err.to_string().contains("block 7"), "{err}");
    let stats = bufio.stats();
    assert_eq!(stats.write_errors, 1);
    assert_eq!(stats.dirty_buffers, 1);
    assert!(bufio.read(7).unwrap().is_dirty());
    assert!(!bufio.read(20).unwrap().is_dirty());
    assert_eq!(store.content(7), filled(BS, 7));
    assert_eq!(store.content(20), filled(BS, 0x20));
    // flush reports the write error but still flushes.
    assert!(bufio.flush().is_err());
    assert_eq!(store.flushes.load(SeqCst), 1);
    store.fail_writes_of(7, false);
    bufio.flush().unwrap();
    assert_eq!(store.stable_content(7), filled(BS, 0x77));
    assert_eq!(bufio.stats().dirty_buffers, 0);
}

#[test]
fn redirtied_during_write_stays_dirty() {
    let (store, bufio) = setup(32, 16);
    let handle = bufio.read(3).unwrap();
    handle.data_mut().fill(1);
    handle.mark_dirty();
    store.write_gate.close_on(3);
    std::thread::scope(|s| {
        let syncer = s.spawn(|| bufio.write_dirty_sync());
        store.write_gate.wait_for_waiter();
        // The write copied the bytes and is in flight: change them again.
        handle.data_mut().fill(2);
        handle.mark_dirty();
        store.write_gate.open();
        syncer.join().unwrap().unwrap();
    });
    assert_eq!(store.content(3), filled(BS, 1));
    assert!(handle.is_dirty(), "a change made during the write was lost");
    bufio.write_dirty_sync().unwrap();
    assert_eq!(store.content(3), filled(BS, 2));
    assert!(!handle.is_dirty());
}

#[test]
fn pinned_buffers_are_not_written_until_unpinned() {
    let (store, bufio) = setup(32, 16);
    let handle = bufio.read(2).unwrap();
    handle.pin();
    handle.pin();
    store.set_forbidden(2, true);
    handle.data_mut().fill(0x22);
    handle.mark_dirty();
    write_block(&bufio, 3, 0x33);
    bufio.write_dirty_async();
    bufio.write_dirty_sync().unwrap();
    bufio.flush().unwrap();
    assert_eq!(store.violations(), Vec::<u64>::new());
    assert_eq!(store.content(2), filled(BS, 2));
    assert_eq!(store.content(3), filled(BS, 0x33));
    assert_eq!(bufio.pinned_blocks(), vec![2]);
    assert_eq!(bufio.stats().pinned_buffers, 1);
    assert_eq!(handle.pin_count(), 2);
    handle.unpin().unwrap();
    drop(handle);
    bufio.flush().unwrap();
    assert_eq!(store.content(2), filled(BS, 2), "still pinned once");
    store.set_forbidden(2, false);
    bufio.unpin_block(2).unwrap();
    assert!(is_invalid(bufio.unpin_block(2)));
    assert!(is_invalid(bufio.unpin_block(9)));
    assert_eq!(bufio.pinned_blocks(), Vec::<u64>::new());
    bufio.flush().unwrap();
    assert_eq!(store.stable_content(2), filled(BS, 0x22));
    assert_eq!(store.violations(), Vec::<u64>::new());
}

#[test]
fn unpin_of_an_unpinned_buffer_is_invalid() {
    let (_store, bufio) = setup(8, 4);
    let handle = bufio.read(1).unwrap();
    assert!(is_invalid(handle.unpin()));
}

#[test]
fn failed_read_caches_nothing_and_is_retried() {
    let (store, bufio) = setup(32, 16);
    store.fail_reads_of(9, true);
    let err = bufio.read(9).unwrap_err();
    assert!(err.to_string().contains("block 9"), "{err}");
    assert!(!bufio.is_cached(9));
    let stats = bufio.stats();
    assert_eq!(
        (stats.read_errors, stats.current_bytes, stats.held_buffers),
        (1, 0, 0)
    );
    store.fail_reads_of(9, false);
    assert_eq!(&*bufio.read(9).unwrap().data(), &filled(BS, 9)[..]);
    assert_eq!(store.reads_of(9), 2);
}

#[test]
fn forget_drops_unneeded_buffers_without_writing() {
    let (store, bufio) = setup(32, 16);
    let handle = bufio.read(4).unwrap();
    handle.data_mut().fill(0x44);
    handle.mark_dirty();
    assert!(!bufio.forget(4), "a held buffer must not be forgotten");
    drop(handle);
    assert!(bufio.forget(4));
    assert!(!bufio.is_cached(4));
    assert_eq!(bufio.stats().dirty_buffers, 0);
    assert_eq!(bufio.stats().current_bytes, 0);
    bufio.flush().unwrap();
    assert!(store.runs().is_empty());
    assert_eq!(&*bufio.read(4).unwrap().data(), &filled(BS, 4)[..]);
    // Pinned (even unheld) buffers stay.
    bufio.read(5).unwrap().pin();
    assert!(!bufio.forget(5));
    assert!(!bufio.forget(6), "not cached");
}

#[test]
fn forget_range_small_and_large() {
    let store = Arc::new(MemStore::new(16, 5000));
    let bufio = Bufio::new(
        store,
        BufioConfig {
            memory_limit_bytes: 16 * 4096,
            ..config(1)
        },
    )
    .unwrap();
    for block in 0..20 {
        drop(bufio.read(block).unwrap());
    }
    for block in 3000..3010 {
        drop(bufio.read(block).unwrap());
    }
    let held = bufio.read(5).unwrap();
    assert_eq!(bufio.forget_range(2, 6), 5);
    assert!(bufio.is_cached(5) && !bufio.is_cached(2) && bufio.is_cached(8));
    // More blocks than the scan threshold: scans the index instead.
    assert_eq!(bufio.forget_range(0, 4000), 20 - 5 - 1 + 10);
    assert!(bufio.is_cached(5));
    drop(held);
    assert_eq!(bufio.stats().buffers, 1);
}

#[test]
fn discard_forgets_then_discards_on_the_store() {
    let (store, bufio) = setup(32, 16);
    write_block(&bufio, 3, 0x33);
    write_block(&bufio, 4, 0x44);
    bufio.discard(3, 2).unwrap();
    assert!(!bufio.is_cached(3) && !bufio.is_cached(4));
    assert_eq!(*store.discards.lock(), vec![(3, 2)]);
    bufio.flush().unwrap();
    assert!(store.runs().is_empty());
    assert_eq!(store.content(3), filled(BS, 0));
}

#[test]
fn release_move_writes_the_old_block_and_dirties_the_new_one() {
    let (store, bufio) = setup(32, 16);
    let handle = bufio.read(3).unwrap();
    handle.data_mut().fill(0x33);
    handle.mark_dirty();
    bufio.release_move(handle, 7).unwrap();
    assert_eq!(
        store.content(3),
        filled(BS, 0x33),
        "old block written first"
    );
    assert_eq!(bufio.hold_count(3), Some(0));
    let moved = bufio.read(7).unwrap();
    assert_eq!(&*moved.data(), &filled(BS, 0x33)[..]);
    assert!(moved.is_dirty());
    drop(moved);
    assert_eq!(store.content(7), filled(BS, 7));
    bufio.flush().unwrap();
    assert_eq!(store.stable_content(7), filled(BS, 0x33));
    assert_eq!(store.reads_of(7), 0, "the new block is never read");
}

#[test]
fn release_move_replaces_a_cached_target() {
    let (store, bufio) = setup(32, 16);
    write_block(&bufio, 8, 0x88);
    let handle = bufio.read(9).unwrap();
    handle.data_mut().fill(0x99);
    handle.mark_dirty();
    bufio.release_move(handle, 8).unwrap();
    assert_eq!(&*bufio.read(8).unwrap().data(), &filled(BS, 0x99)[..]);
    assert_eq!(bufio.stats().dirty_buffers, 1); // 8; 9 was written by the move
    bufio.flush().unwrap();
    assert_eq!(store.content(8), filled(BS, 0x99));
    assert_eq!(store.content(9), filled(BS, 0x99));
}

#[test]
fn release_move_refuses_pinned_and_busy_blocks() {
    let (store, bufio) = setup(32, 16);
    let target = bufio.read(8).unwrap();
    let handle = bufio.read(9).unwrap();
    assert!(is_invalid(bufio.release_move(handle, 8)), "target held");
    drop(target);
    let handle = bufio.read(9).unwrap();
    handle.pin();
    handle.data_mut().fill(1);
    handle.mark_dirty();
    assert!(is_invalid(bufio.release_move(handle, 8)), "source pinned");
    assert_eq!(bufio.hold_count(9), Some(0), "handle released anyway");
    assert_eq!(store.content(9), filled(BS, 9), "pinned source not written");
    bufio.read(10).unwrap().pin();
    let handle = bufio.read(11).unwrap();
    assert!(is_invalid(bufio.release_move(handle, 10)), "target pinned");
    // Same block: just marks it dirty.
    let handle = bufio.read(12).unwrap();
    bufio.release_move(handle, 12).unwrap();
    assert!(bufio.read(12).unwrap().is_dirty());
}

#[test]
fn partial_dirty_ranges() {
    let (_store, bufio) = setup(8, 4);
    let handle = bufio.read(1).unwrap();
    assert!(is_invalid(handle.mark_partial_dirty(4, 4)));
    assert!(is_invalid(handle.mark_partial_dirty(0, BS + 1)));
    assert!(!handle.is_dirty());
    assert_eq!(handle.dirty_range(), None);
    handle.mark_partial_dirty(4, 8).unwrap();
    handle.mark_partial_dirty(2, 5).unwrap();
    assert_eq!(handle.dirty_range(), Some(2..8));
    handle.mark_dirty();
    assert_eq!(handle.dirty_range(), Some(0..BS));
}

#[test]
fn prefetch_loads_without_holding_and_within_the_limit() {
    let (store, bufio) = setup(32, 4);
    bufio.prefetch(0, 3).unwrap();
    for block in 0..3 {
        assert!(bufio.is_cached(block));
        assert_eq!(bufio.hold_count(block), Some(0));
    }
    assert_eq!(bufio.stats().prefetch_reads, 3);
    assert_eq!(&*bufio.read(1).unwrap().data(), &filled(BS, 1)[..]);
    assert_eq!(store.reads.load(SeqCst), 3);
    // More than fits: stops at the limit, evicting only clean buffers.
    bufio.prefetch(10, 10).unwrap();
    assert!(bufio.stats().current_bytes <= 4 * BS as u64);
    assert!(bufio.is_cached(10));
}

#[test]
fn background_thread_writes_back_and_stops_on_drop() {
    let store = Arc::new(MemStore::new(BS, 32));
    let bufio = Bufio::new(
        store.clone(),
        BufioConfig {
            background_tick: Some(Duration::from_millis(5)),
            ..config(64)
        },
    )
    .unwrap();
    // Enough clean buffers that three dirty ones stay under the ratio.
    for block in 16..32 {
        drop(bufio.read(block).unwrap());
    }
    for block in [4, 2, 3] {
        write_block(&bufio, block, 0x40);
    }
    bufio.write_dirty_async();
    let deadline = Instant::now() + Duration::from_secs(5);
    while bufio.stats().dirty_buffers > 0 {
        assert!(Instant::now() < deadline, "background writeback never ran");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(store.runs(), vec![(2, 3)]);
    // Prefetch goes through the prefetch thread.
    bufio.prefetch(10, 4).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(10..14).all(|b| bufio.is_cached(b)) {
        assert!(Instant::now() < deadline, "prefetch never ran");
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(bufio); // joins the threads
}

#[test]
fn dirty_ratio_starts_background_writeback() {
    let store = Arc::new(MemStore::new(BS, 64));
    let bufio = Bufio::new(
        store.clone(),
        BufioConfig {
            background_tick: Some(Duration::from_secs(3600)),
            dirty_ratio: 1,
            ..config(32)
        },
    )
    .unwrap();
    for block in 0..4 {
        drop(bufio.read(block).unwrap());
    }
    // 4 clean; dirtying 3 keeps dirty <= ratio * clean, nothing is written.
    for block in 10..13 {
        write_block(&bufio, block, 1);
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(store.runs().is_empty());
    for block in 13..16 {
        write_block(&bufio, block, 1);
    }
    // 5 dirty > 1 * 4 clean: the kick wakes the thread despite its long
    // tick (the 6th may be dirtied before or after that pass).
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.blocks_written() < 5 {
        assert!(Instant::now() < deadline, "ratio did not start writeback");
        std::thread::sleep(Duration::from_millis(2));
    }
}
