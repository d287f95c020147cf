//! Online resync through the `Fs` API: a leg that missed writes is put
//! under resync at mount and filled in the background; afterwards both legs
//! hold the same bytes and fsck is clean; writes made while the resync runs
//! land on both legs.

mod core_support;

use core_support::*;
use keelfs_engine::device::{Device, DeviceRef, MemDevice};
use keelfs_engine::mirror::LegState;
use keelfs_fs::core::{Caller, Fs, MountParams};
use keelfs_fs::devset::read_superblock;
use keelfs_fs::format::superblock::{MemberState, ROOT_INODE};
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn degraded() -> MountParams {
    MountParams {
        degraded: true,
        ..params()
    }
}

fn named_file(fs: &Fs, name: &str) -> u64 {
    fs.mknod(ROOT_INODE, name.as_bytes(), 0o644, 0, Caller::ROOT)
        .unwrap()
        .ino
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

/// Every block but the two superblock copies (their device fields
/// differ by design) is the same on both legs.
#[track_caller]
fn assert_legs_identical(a: &MemDevice, b: &MemDevice) {
    let bs = 4096u64;
    let blocks = a.size() / bs;
    let mut x = vec![0u8; bs as usize];
    let mut y = vec![0u8; bs as usize];
    let mut differ = Vec::new();
    for block in 1..blocks - 1 {
        a.read_at(block * bs, &mut x).unwrap();
        b.read_at(block * bs, &mut y).unwrap();
        if x != y {
            differ.push(block);
        }
    }
    assert!(
        differ.is_empty(),
        "{} blocks differ between the legs, first {:?}",
        differ.len(),
        &differ[..differ.len().min(8)]
    );
}

#[track_caller]
fn assert_fsck_clean(legs: &Legs) {
    let outcome = keelfs_fsck::fsck_devices(&legs.devices, &keelfs_fsck::Options::check());
    assert_eq!(
        outcome.exit_code, 0,
        "fsck: {:?} {:?}",
        outcome.error, outcome.reports
    );
}

/// Leg 1 misses a degraded mount's writes (files `names`, `size` each).
fn make_leg1_stale(legs: &Legs, names: &[&str], size: usize) -> Vec<(u64, Vec<u8>)> {
    let fs = Fs::mount(vec![legs.devices[0].clone()], &degraded()).unwrap();
    let mut files = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let ino = named_file(&fs, name);
        let data = pattern(i as u64 + 10, size);
        fs.write(ino, 0, &data).unwrap();
        files.push((ino, data));
    }
    fs.unmount().unwrap();
    files
}

fn unmount(fs: Arc<Fs>) {
    fs.stop_resync();
    match Arc::try_unwrap(fs) {
        Ok(fs) => fs.unmount().unwrap(),
        Err(_) => panic!("the filesystem is still shared"),
    }
}

#[test]
fn a_stale_leg_is_resynced_at_mount_and_the_legs_end_identical() {
    let legs = Legs::small();
    let fs = legs.mount();
    let before = named_file(&fs, "before");
    fs.write(before, 0, &pattern(1, 300 * 1024)).unwrap();
    fs.unmount().unwrap();
    let files = make_leg1_stale(&legs, &["a", "b", "c"], 700 * 1024);

    let fs = Arc::new(Fs::mount(legs.devices.clone(), &degraded()).unwrap());
    let mirror = fs.device_set().mirror().clone();
    assert_eq!(
        mirror.leg_state(1),
        LegState::Resyncing,
        "resyncing at mount"
    );
    assert_eq!(
        member_states(&legs.mems[0]),
        vec![MemberState::InUse, MemberState::Resyncing],
        "recorded resyncing"
    );
    assert!(Fs::start_resync(&fs).unwrap());
    fs.wait_resync();
    let jobs = fs.resync_jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert!(job.succeeded.load(Ordering::Relaxed), "{}", job.describe());
    assert_eq!(
        job.done.load(Ordering::Relaxed),
        job.total.load(Ordering::Relaxed)
    );
    assert_eq!(mirror.leg_state(1), LegState::InService);
    assert_eq!(
        member_states(&legs.mems[1]),
        vec![MemberState::InUse, MemberState::InUse],
        "the resynced leg's own superblock"
    );
    // Leg 1 alone now serves every file.
    mirror.mark_failed(0);
    for (ino, data) in &files {
        assert_bytes(&read_all(&fs, *ino), data, "read from the resynced leg");
    }
    mirror.mark_in_service(0);
    unmount(fs);
    assert_legs_identical(&legs.mems[0], &legs.mems[1]);
    assert_fsck_clean(&legs);
    // And the next mount is not degraded.
    let fs = legs.mount();
    fs.unmount().unwrap();
}

#[test]
fn writes_during_a_resync_land_on_both_legs() {
    let legs = Legs::mem(2, 64 * MIB, &Default::default());
    let fs = legs.mount();
    fs.unmount().unwrap();
    make_leg1_stale(&legs, &["big1", "big2", "big3", "big4"], 4 << 20);

    let fs = Arc::new(Fs::mount(legs.devices.clone(), &degraded()).unwrap());
    assert!(Fs::start_resync(&fs).unwrap());
    let job = fs.resync_jobs()[0].clone();
    // Write (and overwrite, and delete) while it runs.
    let mut written = Vec::new();
    let mut during = 0;
    for round in 0..40u64 {
        let ino = named_file(&fs, &format!("during{round}"));
        let data = pattern(100 + round, 64 * 1024);
        fs.write(ino, 0, &data).unwrap();
        fs.write(ino, 4096, &data[..8192]).unwrap();
        let mut want = data.clone();
        want[4096..4096 + 8192].copy_from_slice(&data[..8192]);
        if !job.finished.load(Ordering::Relaxed) {
            during += 1;
        }
        written.push((round, ino, want));
        if round % 5 == 4 {
            let gone = round - 1;
            fs.unlink(ROOT_INODE, format!("during{gone}").as_bytes(), Caller::ROOT)
                .unwrap();
            written.retain(|(r, _, _)| *r != gone);
        }
        fs.sync_all().unwrap();
    }
    fs.wait_resync();
    assert!(job.succeeded.load(Ordering::Relaxed), "{}", job.describe());
    assert!(during > 0, "no write happened while the resync ran");
    let mirror = fs.device_set().mirror().clone();
    mirror.mark_failed(0);
    for (_, ino, data) in &written {
        assert_bytes(&read_all(&fs, *ino), data, "written during the resync");
    }
    mirror.mark_in_service(0);
    unmount(fs);
    assert_legs_identical(&legs.mems[0], &legs.mems[1]);
    assert_fsck_clean(&legs);
}

#[test]
fn a_failed_leg_replaced_by_a_fresh_device_restores_the_mirror() {
    use keelfs_engine::device::{Fault, FaultDevice, FaultRule, Op};
    use keelfs_fs::core::resync::ResyncProgress;
    let legs = Legs::small();
    let faulty = Arc::new(FaultDevice::new(legs.devices[1].clone()));
    let devices: Vec<DeviceRef> = vec![legs.devices[0].clone(), faulty.clone() as DeviceRef];
    let fs = Arc::new(Fs::mount(devices, &params()).unwrap());
    let mut files = Vec::new();
    for i in 0..12u64 {
        if i == 5 {
            // Leg 1 dies mid-workload.
            faulty
                .add_rule(FaultRule::new(Op::Write, Fault::Fail))
                .unwrap();
        }
        let ino = named_file(&fs, &format!("f{i}"));
        let data = pattern(200 + i, 150 * 1024);
        fs.write(ino, 0, &data).unwrap();
        fs.fsync(ino, false).unwrap();
        files.push((ino, data));
    }
    let mirror = fs.device_set().mirror().clone();
    assert_eq!(mirror.leg_state(1), LegState::Failed);

    let fresh = Arc::new(MemDevice::new("fresh", 16 * MIB));
    let progress = ResyncProgress::new(1);
    fs.replace_leg(1, fresh.clone() as DeviceRef, &progress)
        .unwrap();
    assert!(
        progress.succeeded.load(Ordering::Relaxed),
        "{}",
        progress.describe()
    );
    assert_eq!(mirror.leg_state(1), LegState::InService);
    // The new leg alone serves every file.
    mirror.mark_failed(0);
    for (ino, data) in &files {
        assert_bytes(&read_all(&fs, *ino), data, "read from the new leg");
    }
    mirror.mark_in_service(0);
    let more = named_file(&fs, "after");
    fs.write(more, 0, &pattern(9, 90 * 1024)).unwrap();
    unmount(fs);

    assert_legs_identical(&legs.mems[0], &fresh);
    let restored = Legs {
        mems: vec![legs.mems[0].clone(), fresh.clone()],
        devices: vec![legs.devices[0].clone(), fresh.clone() as DeviceRef],
    };
    assert_fsck_clean(&restored);
    // A two-way mirror again: mounts without -o degraded; the old device
    // is no member any more.
    let fs = restored.mount();
    assert_eq!(fs.device_set().mirror().in_service().count(), 2);
    fs.unmount().unwrap();
    let err = Fs::mount(
        vec![legs.devices[0].clone(), legs.devices[1].clone()],
        &degraded(),
    )
    .err()
    .expect("the replaced device is refused");
    assert!(err.to_string().contains("replaced"), "{err}");
}

#[test]
fn a_leg_recorded_failed_that_comes_back_is_resynced() {
    use keelfs_engine::device::{Fault, FaultDevice, FaultRule, Op};
    let legs = Legs::small();
    let faulty = Arc::new(FaultDevice::new(legs.devices[1].clone()));
    let devices: Vec<DeviceRef> = vec![legs.devices[0].clone(), faulty.clone() as DeviceRef];
    let fs = Fs::mount(devices, &params()).unwrap();
    let ino = named_file(&fs, "f");
    fs.write(ino, 0, &pattern(1, 100 * 1024)).unwrap();
    fs.fsync(ino, false).unwrap();
    faulty
        .add_rule(FaultRule::new(Op::Write, Fault::Fail))
        .unwrap();
    let data = pattern(2, 300 * 1024);
    fs.write(ino, 0, &data).unwrap();
    fs.fsync(ino, false).unwrap();
    fs.unmount().unwrap();
    assert_eq!(
        member_states(&legs.mems[0]),
        vec![MemberState::InUse, MemberState::Failed]
    );

    // Given back at the next mount: re-added and resynced.
    let fs = Arc::new(Fs::mount(legs.devices.clone(), &degraded()).unwrap());
    assert_eq!(fs.resyncing_legs(), vec![1]);
    assert!(Fs::start_resync(&fs).unwrap());
    fs.wait_resync();
    let job = fs.resync_jobs()[0].clone();
    assert!(job.succeeded.load(Ordering::Relaxed), "{}", job.describe());
    unmount(fs);
    assert_eq!(
        member_states(&legs.mems[0]),
        vec![MemberState::InUse, MemberState::InUse]
    );
    assert_legs_identical(&legs.mems[0], &legs.mems[1]);
    assert_fsck_clean(&legs);
    let fs = legs.mount();
    assert_bytes(&read_all(&fs, ino), &data, "after the resync");
    fs.unmount().unwrap();
}

#[test]
fn a_leg_added_to_a_single_device_filesystem_is_resynced_while_written() {
    let one = Legs::mem(1, 64 * MIB, &Default::default());
    let fs = Arc::new(one.mount());
    let mut written = Vec::new();
    for i in 0..4u64 {
        let ino = named_file(&fs, &format!("before{i}"));
        let data = pattern(300 + i, 2 << 20);
        fs.write(ino, 0, &data).unwrap();
        written.push((ino, data));
    }
    fs.sync_all().unwrap();
    // Refused: too small, holding a filesystem (without force).
    let small = Arc::new(MemDevice::new("small", MIB));
    assert!(fs.add_leg(small as DeviceRef, false).is_err());
    let other = Legs::mem(1, 64 * MIB, &Default::default());
    let err = fs.add_leg(other.devices[0].clone(), false).unwrap_err();
    assert!(err.to_string().contains("holds a keelfs"), "{err}");
    assert_eq!(fs.device_set().legs().len(), 1, "nothing added");

    let new = Arc::new(MemDevice::new("new", 64 * MIB));
    let leg = fs.add_leg(new.clone() as DeviceRef, false).unwrap();
    assert_eq!(leg, 1);
    let mirror = fs.device_set().mirror().clone();
    assert_eq!(mirror.leg_state(1), LegState::Resyncing);
    assert_eq!(
        member_states(&one.mems[0]),
        vec![MemberState::InUse, MemberState::Resyncing],
        "the old leg records the new member"
    );
    assert_eq!(member_states(&new), member_states(&one.mems[0]));
    assert!(Fs::start_resync(&fs).unwrap());
    let job = fs.resync_jobs().last().unwrap().clone();
    let mut during = 0;
    for round in 0..20u64 {
        let ino = named_file(&fs, &format!("during{round}"));
        let data = pattern(400 + round, 128 * 1024);
        fs.write(ino, 0, &data).unwrap();
        if !job.finished.load(Ordering::Relaxed) {
            during += 1;
        }
        written.push((ino, data));
        fs.sync_all().unwrap();
    }
    fs.wait_resync();
    assert!(job.succeeded.load(Ordering::Relaxed), "{}", job.describe());
    assert!(during > 0, "no write happened while the resync ran");
    assert_eq!(mirror.leg_state(1), LegState::InService);
    unmount(fs);
    assert_eq!(
        member_states(&new),
        vec![MemberState::InUse, MemberState::InUse]
    );
    assert_legs_identical(&one.mems[0], &new);
    let two = Legs {
        mems: vec![one.mems[0].clone(), new.clone()],
        devices: vec![one.devices[0].clone(), new.clone() as DeviceRef],
    };
    assert_fsck_clean(&two);
    let fs = two.mount();
    assert_eq!(fs.device_set().mirror().in_service().count(), 2);
    assert!(!fs.device_set().report().is_degraded());
    fs.unmount().unwrap();
    // The added leg alone serves every file.
    let fs = Fs::mount(vec![new.clone() as DeviceRef], &degraded()).unwrap();
    for (ino, data) in &written {
        assert_bytes(&read_all(&fs, *ino), data, "from the added leg");
    }
    drop(fs);
}

#[test]
fn a_crash_before_the_old_legs_record_an_added_leg_leaves_the_set_as_it_was() {
    let one = Legs::mem(1, 16 * MIB, &Default::default());
    let fs = one.mount();
    let before = read_superblock(&*one.mems[0]).unwrap();
    // The new device's superblocks as `add_leg` writes them first.
    let new = Arc::new(MemDevice::new("new", 16 * MIB));
    let mut sb = before.clone();
    sb.members.push(keelfs_fs::format::superblock::Member {
        uuid: [9; 16],
        state: MemberState::Resyncing,
        ..Default::default()
    });
    let gen = fs.device_set().generation();
    for address in [0, sb.layout.backup_superblock] {
        let block = keelfs_fs::devset::encode_superblock_block(&sb, 1, address, gen).unwrap();
        new.write_at(address * 4096, &block).unwrap();
    }
    drop(fs); // crash
    let err = Fs::mount(
        vec![one.devices[0].clone(), new.clone() as DeviceRef],
        &degraded(),
    )
    .err()
    .expect("the half-added device is refused");
    assert!(err.to_string().contains("has 1 legs"), "{err}");
    let fs = one.mount();
    fs.unmount().unwrap();
}
