//! Which leg a read goes to first: a sequential stream stays on the leg
//! that served its previous read (`MirrorSet::read_order_near`), reads far
//! from every leg's last position go round-robin, and the integrity layer's
//! verified reads follow the same policy.

use keelfs_engine::device::{DeviceRef, MemDevice};
use keelfs_engine::integrity::Volume;
use keelfs_engine::mirror::{MirrorSet, SEQUENTIAL_WINDOW};
use std::sync::Arc;

const BS: u32 = 4096;
const BLOCKS: u64 = 16384;

fn set(legs: usize) -> Arc<MirrorSet> {
    let devices: Vec<DeviceRef> = (0..legs)
        .map(|i| Arc::new(MemDevice::new(format!("m{i}"), BLOCKS * u64::from(BS))) as DeviceRef)
        .collect();
    Arc::new(MirrorSet::new(devices, BS).unwrap())
}

/// The leg a read of `count` blocks at `block` goes to, and the read.
fn read_at(set: &MirrorSet, block: u64, count: u64) -> usize {
    let leg = set.read_order_near(block)[0];
    let mut buf = vec![0u8; (count * u64::from(BS)) as usize];
    set.read_leg(leg, block, &mut buf).unwrap();
    leg
}

#[test]
fn a_sequential_stream_stays_on_one_leg() {
    let set = set(2);
    let first = read_at(&set, 0, 256);
    for i in 1..16 {
        assert_eq!(read_at(&set, i * 256, 256), first, "read {i} of the stream");
    }
    // A read that skips ahead within the window (readahead requests
    // overtaking each other) is still the same stream.
    assert_eq!(read_at(&set, 18 * 256, 256), first);
}

#[test]
fn reading_a_block_again_goes_to_the_next_leg() {
    // A retry or a check of every copy reads the same range again: that is
    // no continuation, so every leg is visited in turn.
    let set = set(2);
    let legs: Vec<usize> = (0..4).map(|_| read_at(&set, 40, 8)).collect();
    assert!(legs.contains(&0) && legs.contains(&1), "{legs:?}");
}

#[test]
fn reads_far_apart_go_round_robin_and_each_stream_keeps_its_leg() {
    let set = set(2);
    let far = 2 * SEQUENTIAL_WINDOW / u64::from(BS);
    let a = read_at(&set, 0, 16);
    let b = read_at(&set, far, 16);
    assert_ne!(a, b, "a read far from the first goes to the other leg");
    for i in 1..8 {
        assert_eq!(read_at(&set, i * 16, 16), a, "stream A");
        assert_eq!(read_at(&set, far + i * 16, 16), b, "stream B");
    }
    // The plain read order (no position) still rotates.
    let starts: Vec<usize> = (0..4).map(|_| set.read_order()[0]).collect();
    assert!(starts.contains(&0) && starts.contains(&1), "{starts:?}");
}

#[test]
fn verified_reads_of_a_stream_come_from_one_leg() {
    let set = set(2);
    let volume = Volume::new(set.clone(), [7; 16]);
    let data = vec![0x5au8; 64 * BS as usize];
    let (tags, _) = volume.write_data(100, 1, &data).unwrap();
    set.reset_stats();
    let mut buf = vec![0u8; 8 * BS as usize];
    for i in 0..8 {
        let at = 100 + i * 8;
        let t = &tags[(i * 8) as usize..(i * 8 + 8) as usize];
        volume.read_data(at, &mut buf, t).unwrap();
    }
    let reads: Vec<u64> = set.stats().iter().map(|s| s.reads).collect();
    assert!(
        reads.contains(&8) && reads.contains(&0),
        "8 sequential reads all on one leg: {reads:?}"
    );
}
