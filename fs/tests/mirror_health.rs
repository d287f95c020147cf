//! Mirror health through the `Fs` API: per-leg error counters that survive
//! a remount, a leg that fails writes recorded `Failed` in the other legs'
//! superblocks (and a degraded mount needed afterwards), and EIO when the
//! last leg is gone.

mod core_support;

use core_support::*;
use keelfs_engine::device::{DeviceRef, Fault, FaultDevice, FaultRule, MemDevice, Op};
use keelfs_fs::core::{Fs, MountParams};
use keelfs_fs::devset::read_superblock;
use keelfs_fs::error::FsError;
use keelfs_fs::format::superblock::MemberState;
use keelfs_fs::format::DataArea;
use keelfs_fs::mkfs::MkfsOptions;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The physical block holding logical block `logical` of `ino`.
fn physical_block(fs: &Fs, ino: u64, logical: u64) -> u64 {
    let cell = fs.inode(ino).unwrap();
    let state = cell.read();
    let DataArea::Extents(root) = &state.data else {
        panic!("not an extent file")
    };
    keelfs_fs::core::extent::lookup(fs.cache(), root, logical)
        .unwrap()
        .map(|e| e.physical + logical - e.logical)
        .unwrap()
}

/// Mirror position of the leg named `name`.
fn leg_of(fs: &Fs, name: &str) -> usize {
    fs.device_set()
        .legs()
        .iter()
        .position(|l| l.name() == name)
        .unwrap()
}

#[test]
fn error_counters_survive_a_remount() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    let data = pattern(7, 64 * 1024);
    fs.write(ino, 0, &data).unwrap();
    let physical = physical_block(&fs, ino, 2);
    fs.unmount().unwrap();

    legs.mems[0].poke(physical * 4096 + 10, b"rot");
    let fs = legs.mount();
    // Read until leg 0 served the block (round-robin between the legs).
    for _ in 0..4 {
        assert_bytes(&read_all(&fs, ino), &data, "healed read");
    }
    let leg0 = leg_of(&fs, "mem0");
    let now = fs.leg_totals(leg0).unwrap();
    assert_eq!((now.checksum_errors, now.blocks_healed), (1, 1));
    fs.unmount().unwrap();

    let fs = legs.mount();
    let leg0 = leg_of(&fs, "mem0");
    let after = fs.leg_totals(leg0).unwrap();
    assert_eq!(
        (after.checksum_errors, after.blocks_healed),
        (1, 1),
        "counted before the remount"
    );
    assert_eq!(
        fs.leg_totals(1 - leg0).unwrap(),
        Default::default(),
        "the good leg has no errors"
    );
    // A second error adds to the persistent count.
    fs.unmount().unwrap();
    legs.mems[0].poke(physical * 4096 + 10, b"rot");
    let fs = legs.mount();
    for _ in 0..4 {
        assert_bytes(&read_all(&fs, ino), &data, "healed again");
    }
    let leg0 = leg_of(&fs, "mem0");
    assert_eq!(fs.leg_totals(leg0).unwrap().checksum_errors, 2);
    fs.unmount().unwrap();
    let sb = read_superblock(&*legs.mems[1]).unwrap();
    let counters: Vec<u64> = sb
        .members
        .iter()
        .map(|m| m.counters.checksum_errors)
        .collect();
    assert!(counters.contains(&2), "persistent counters {counters:?}");
}

struct FaultyLegs {
    mems: Vec<Arc<MemDevice>>,
    faults: Vec<Arc<FaultDevice>>,
}

impl FaultyLegs {
    fn new(count: usize) -> FaultyLegs {
        let mems: Vec<Arc<MemDevice>> = (0..count)
            .map(|i| Arc::new(MemDevice::new(format!("mem{i}"), 16 * MIB)))
            .collect();
        let devices: Vec<DeviceRef> = mems.iter().map(|m| m.clone() as DeviceRef).collect();
        keelfs_fs::mkfs::format(&devices, &MkfsOptions::default()).unwrap();
        let faults = mems
            .iter()
            .map(|m| Arc::new(FaultDevice::new(m.clone() as DeviceRef)))
            .collect();
        FaultyLegs { mems, faults }
    }

    fn mount(&self) -> Fs {
        let devices = self.faults.iter().map(|f| f.clone() as DeviceRef).collect();
        Fs::mount(devices, &params()).unwrap()
    }

    fn plain(&self, which: &[usize]) -> Vec<DeviceRef> {
        which
            .iter()
            .map(|&i| self.mems[i].clone() as DeviceRef)
            .collect()
    }
}

fn member_states(mem: &MemDevice) -> Vec<MemberState> {
    read_superblock(mem)
        .unwrap()
        .members
        .iter()
        .map(|m| m.state)
        .filter(|s| *s != MemberState::Absent)
        .collect()
}

#[test]
fn a_leg_failing_writes_is_recorded_failed_and_the_data_stays() {
    let legs = FaultyLegs::new(2);
    let fs = legs.mount();
    let ino = new_file(&fs);
    let first = pattern(1, 200 * 1024);
    fs.write(ino, 0, &first).unwrap();
    fs.fsync(ino, false).unwrap();

    legs.faults[1]
        .add_rule(FaultRule::new(Op::Write, Fault::Fail))
        .unwrap();
    let second = pattern(2, 300 * 1024);
    fs.write(ino, 200 * 1024, &second).unwrap();
    fs.fsync(ino, false).unwrap();
    assert_eq!(
        fs.device_set().mirror().in_service().failed_legs().len(),
        1,
        "one leg in service"
    );
    // The health thread records it on the good leg's superblock.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !member_states(&legs.mems[0]).contains(&MemberState::Failed) {
        assert!(Instant::now() < deadline, "leg never recorded failed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!fs.check_legs(), "already handled by the thread");
    let mut want = first.clone();
    want.extend_from_slice(&second);
    assert_bytes(&read_all(&fs, ino), &want, "degraded read");
    fs.write(ino, 0, b"still writable").unwrap();
    want[..14].copy_from_slice(b"still writable");
    fs.unmount().unwrap();
    assert_eq!(
        member_states(&legs.mems[0]),
        vec![MemberState::InUse, MemberState::Failed]
    );

    // Next mount: refused without -o degraded, fine with it.
    let err = Fs::mount(legs.plain(&[0, 1]), &params()).err().unwrap();
    assert!(
        matches!(err, FsError::Invalid(ref m) if m.contains("degraded")),
        "{err}"
    );
    let degraded = MountParams {
        degraded: true,
        ..params()
    };
    let fs = Fs::mount(legs.plain(&[0, 1]), &degraded).unwrap();
    assert_bytes(&read_all(&fs, ino), &want, "after remount");
    fs.unmount().unwrap();
}

#[test]
fn losing_the_last_leg_answers_eio_never_silent_loss() {
    let legs = FaultyLegs::new(2);
    let fs = legs.mount();
    let ino = new_file(&fs);
    fs.write(ino, 0, &pattern(3, 64 * 1024)).unwrap();
    fs.fsync(ino, false).unwrap();
    legs.faults[0].kill();
    legs.faults[1].kill();
    // Reads of a dead device fail without failing a leg; the commit's
    // writes fail both.
    let wrote = fs.write(ino, 0, b"lost?");
    let synced = fs.fsync(ino, false);
    assert!(
        wrote.is_err() || synced.is_err(),
        "a write with no leg must fail"
    );
    assert!(fs.device_set().mirror().in_service().is_clear());
    fs.check_legs();
    assert!(matches!(
        fs.check_writable(),
        Err(FsError::Engine(keelfs_engine::EngineError::NoLegs))
    ));
    assert!(matches!(
        fs.write(ino, 0, b"x"),
        Err(FsError::Engine(keelfs_engine::EngineError::NoLegs))
    ));
    assert!(fs.read(ino, 0, 4096).is_err(), "reads fail too");
    assert!(fs.unmount().is_err());
}

use keelfs_fs::core::scrub::ScrubProgress;
use std::sync::atomic::Ordering;

fn scrub(fs: &Fs) -> (u64, u64, u64, u64) {
    let p = ScrubProgress::default();
    fs.scrub(&p).unwrap();
    assert!(p.finished.load(Ordering::Relaxed));
    assert_eq!(
        p.done.load(Ordering::Relaxed),
        p.total.load(Ordering::Relaxed)
    );
    (
        p.total.load(Ordering::Relaxed),
        p.bad_copies.load(Ordering::Relaxed),
        p.repaired.load(Ordering::Relaxed),
        p.lost.load(Ordering::Relaxed),
    )
}

#[test]
fn scrub_repairs_data_and_metadata_on_one_leg() {
    let legs = Legs::small();
    let fs = legs.mount();
    let files: Vec<(u64, Vec<u8>)> = (0..4)
        .map(|i| {
            let ino = new_file(&fs);
            let data = pattern(10 + i, 40 * 1024);
            fs.write(ino, 0, &data).unwrap();
            (ino, data)
        })
        .collect();
    let bs = 4096;
    let data_blocks: Vec<u64> = files
        .iter()
        .map(|(ino, _)| physical_block(&fs, *ino, 5))
        .collect();
    let layout = *fs.layout();
    let inode_block = layout.inode_location(files[0].0).unwrap().block;
    let tag_block = layout.tag_table.start;
    fs.unmount().unwrap();

    // Damage on leg 0 only: three data blocks, an inode-table block (the
    // mount reads it: healed then) and a tag-table block; one more data
    // block on leg 1.
    for &b in &data_blocks[..3] {
        legs.mems[0].poke(b * bs + 77, b"data rot");
    }
    legs.mems[1].poke(data_blocks[3] * bs + 5, b"other leg");
    legs.mems[0].poke(inode_block * bs + 300, b"inode rot");
    legs.mems[0].poke(tag_block * bs + 60, &[0xff; 8]);
    let fs = legs.mount();
    let (total, bad, repaired, lost) = scrub(&fs);
    assert!(total > 50, "checked {total} blocks");
    let cksum: u64 = (0..2)
        .map(|l| fs.leg_totals(l).unwrap().checksum_errors)
        .sum();
    assert_eq!(cksum, 6, "every bad copy counted");
    assert!((5..=6).contains(&bad), "scrub found {bad}");
    assert_eq!((repaired, lost), (bad, 0));
    let (_, bad, _, lost) = scrub(&fs);
    assert_eq!((bad, lost), (0, 0), "a second scrub finds nothing");
    for (ino, data) in &files {
        assert_bytes(&read_all(&fs, *ino), data, "file after scrub");
    }
    fs.unmount().unwrap();
    for b in data_blocks.iter().chain([&inode_block, &tag_block]) {
        assert_eq!(
            legs.mems[0].peek(b * bs, bs as usize),
            legs.mems[1].peek(b * bs, bs as usize),
            "block {b} the same on both legs"
        );
    }
}

#[test]
fn scrub_reports_a_block_bad_on_every_leg_and_touches_nothing_else() {
    let legs = Legs::mem(3, 16 * MIB, &MkfsOptions::default());
    let fs = legs.mount();
    let ino = new_file(&fs);
    let other = new_file(&fs);
    let data = pattern(21, 32 * 1024);
    fs.write(ino, 0, &data).unwrap();
    fs.write(other, 0, &data).unwrap();
    let block = physical_block(&fs, ino, 2);
    let b3 = physical_block(&fs, ino, 3);
    fs.unmount().unwrap();
    for (i, mem) in legs.mems.iter().enumerate() {
        mem.poke(block * 4096 + 10 * i as u64, b"everywhere");
    }
    // Three-way mirror, two legs damaged in different places: healed.
    legs.mems[0].poke(b3 * 4096, b"zero");
    legs.mems[1].poke(b3 * 4096 + 999, b"one");
    let fs = legs.mount();
    let (_, bad, repaired, lost) = scrub(&fs);
    assert_eq!((bad, repaired, lost), (5, 1, 1));
    assert!(
        fs.read(ino, 2 * 4096, 4096).is_err(),
        "EIO, not wrong bytes"
    );
    assert_bytes(
        &fs.read(ino, 3 * 4096, 4096).unwrap(),
        &data[3 * 4096..4 * 4096],
        "b3",
    );
    assert_bytes(&read_all(&fs, other), &data, "other file");
    fs.unmount().unwrap();
}

#[test]
fn a_leg_failing_reads_keeps_writes_is_marked_for_checking_and_a_clean_scrub_clears_it() {
    use keelfs_fs::fuse::status::{LegHealth, StatusReport};
    let needs_check = |mem: &MemDevice| -> Vec<bool> {
        read_superblock(mem)
            .unwrap()
            .members
            .iter()
            .map(|m| m.needs_check)
            .collect()
    };
    let health = |fs: &Fs| -> Vec<LegHealth> {
        StatusReport::collect(fs, "src", std::path::Path::new("/mnt"), (0, 0))
            .legs
            .iter()
            .map(|l| l.health)
            .collect()
    };
    let legs = FaultyLegs::new(2);
    let fs = legs.mount();
    let ino = new_file(&fs);
    let data = pattern(31, 256 * 1024);
    fs.write(ino, 0, &data).unwrap();
    fs.fsync(ino, false).unwrap();
    let mirror = fs.device_set().mirror().clone();

    // Leg 1 fails every read (not its writes): reads fall back to leg 0,
    // until leg 1 is suspect and reads go to leg 0 first.
    let rule = legs.faults[1]
        .add_rule(FaultRule::new(Op::Read, Fault::Fail))
        .unwrap();
    for _ in 0..40 {
        fs.cache().flush().unwrap();
        assert_bytes(
            &fs.read(ino, 0, 64 * 1024).unwrap(),
            &data[..64 * 1024],
            "read",
        );
        if mirror.is_suspect(1) {
            break;
        }
    }
    assert!(mirror.is_suspect(1), "leg 1 suspect after its read errors");
    assert_eq!(
        mirror.leg_state(1),
        keelfs_engine::mirror::LegState::InService
    );
    fs.check_legs();
    assert_eq!(needs_check(&legs.mems[0]), vec![false, true], "recorded");
    assert_eq!(health(&fs), vec![LegHealth::Online, LegHealth::Suspect]);
    let errors = mirror.leg_stats(1).snapshot().read_errors;
    for _ in 0..10 {
        assert_bytes(&read_all(&fs, ino), &data, "served by leg 0");
    }
    assert_eq!(
        mirror.leg_stats(1).snapshot().read_errors,
        errors,
        "the suspect leg is not read while leg 0 serves"
    );
    // Writes still go to it.
    let written = mirror.leg_stats(1).snapshot().bytes_written;
    fs.write(ino, 0, b"still mirrored").unwrap();
    fs.fsync(ino, false).unwrap();
    assert!(mirror.leg_stats(1).snapshot().bytes_written > written);

    // A scrub that still meets read errors leaves it marked.
    let p = ScrubProgress::default();
    fs.scrub(&p).unwrap();
    assert!(mirror.is_suspect(1));
    fs.unmount().unwrap();
    legs.faults[1].remove_rule(rule);

    // The mark survives a remount; a scrub that finds the leg good clears it.
    let fs = legs.mount();
    let mirror = fs.device_set().mirror().clone();
    assert_eq!(fs.device_set().report().needs_check, vec![1]);
    assert!(mirror.is_suspect(1), "suspect again at mount");
    let p = ScrubProgress::default();
    fs.scrub(&p).unwrap();
    assert_eq!(p.cleared.load(Ordering::Relaxed), 1);
    assert!(!mirror.is_suspect(1));
    assert_eq!(needs_check(&legs.mems[0]), vec![false, false], "cleared");
    assert_eq!(needs_check(&legs.mems[1]), vec![false, false]);
    assert_eq!(health(&fs)[1], LegHealth::Online, "no error this mount");
    let mut want = data.clone();
    want[..14].copy_from_slice(b"still mirrored");
    mirror.mark_failed(0);
    assert_bytes(&read_all(&fs, ino), &want, "leg 1 alone");
    mirror.mark_in_service(0);
    fs.unmount().unwrap();
}
