//! The crash simulator's own tests: each check must be able to fail.
//!
//! * A device that acknowledges flushes without making anything durable
//!   (what a lying disk cache does) lets crash states lose fsync'ed data:
//!   the explorer must report it, naming the fsync.
//! * The oracle rejects a tree from before an fsync'ed rename, and a tree
//!   where a rename left both names.
//! * The observer fails on a block with no good copy, and a copy bad on
//!   one leg shows in the mirror's counters (which the checker requires to
//!   stay zero).
//! * fsck wiring: a damaged metadata block makes `fsck_clean` fail.
//! * Recording is deterministic (reproducers rely on it).

use keelfs_engine::device::{Device, DeviceRef, MemDevice, RecordingDevice};
use keelfs_engine::error::DeviceResult;
use keelfs_fs::core::Fs;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_tests::crashsim::check::{check_state, fsck_clean, CheckOptions, RecoveryCrash};
use keelfs_tests::crashsim::explore::{explore_recording, Budget};
use keelfs_tests::crashsim::generate::standard_setup;
use keelfs_tests::crashsim::observe::observe;
use keelfs_tests::crashsim::oracle::{judge, CutInfo};
use keelfs_tests::crashsim::recorder::{
    devices, mem_legs, mount_params, record, record_through, FsConfig, Recording, Template,
};
use keelfs_tests::crashsim::workload::{data_bytes, Op, Workload, SETUP_STAMP};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;

fn workload(ops: &[&str]) -> Workload {
    Workload {
        setup: standard_setup(),
        ops: ops.iter().map(|l| Op::parse(l).unwrap()).collect(),
        hold_refs: false,
    }
}

fn template() -> Template {
    Template::build(FsConfig::small(), &standard_setup()).unwrap()
}

/// Passes everything through but flushes, which it acknowledges and drops.
struct FlushEater(Arc<RecordingDevice>);

impl std::fmt::Debug for FlushEater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlushEater")
    }
}

impl Device for FlushEater {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        self.0.write_at(offset, buf)
    }
    fn flush(&self) -> DeviceResult<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        self.0.discard(offset, len)
    }
}

#[test]
fn a_disk_that_drops_flushes_loses_fsynced_data_and_the_explorer_says_so() {
    let t = template();
    let w = workload(&[
        "write foo append 1500",
        "fsync foo",
        "create baz",
        "fsync baz",
    ]);
    let rec = record_through(&t, &w, &|r| Arc::new(FlushEater(r)) as DeviceRef).unwrap();
    assert_eq!(rec.epoch_ends()[0].len(), 1, "no flush reached the log");
    let budget = Budget {
        states_per_epoch: 64,
        ..Budget::ci()
    };
    let (stats, found) = explore_recording(&rec, budget, CheckOptions::default(), 3);
    let found = found.expect("lost fsync'ed data must be found");
    println!("after {} states: {}", stats.states, found.message);
    assert!(
        found.message.contains("returned before the crash")
            || found.message.contains("matches no state"),
        "{}",
        found.message
    );
    // The same workload on an honest disk passes.
    let honest = record(&t, &w).unwrap();
    let (_, none) = explore_recording(&honest, Budget::ci(), tolerant(), 3);
    assert!(none.is_none(), "{:?}", none.map(|f| f.message));
}

fn tolerant() -> CheckOptions {
    CheckOptions {
        tolerate_known_bugs: true,
        ..CheckOptions::default()
    }
}

/// Mounts copies of the template's legs.
fn mount_template(t: &Template) -> (Vec<Arc<MemDevice>>, Fs) {
    let legs = mem_legs(&t.images, "copy");
    let fs = Fs::mount(devices(&legs), &mount_params(&t.config)).unwrap();
    (legs, fs)
}

/// The cut after everything of `rec` (the unmount included).
fn at_end(rec: &Recording) -> CutInfo {
    CutInfo::at(rec, rec.logs[0].len())
}

#[test]
fn the_oracle_rejects_a_lost_fsynced_rename_and_a_rename_with_both_names() {
    let t = template();
    let rec = record(&t, &workload(&["rename foo B/foo", "fsync B"])).unwrap();
    let cut = at_end(&rec);
    assert_eq!(cut.started, 2);

    // The tree before the rename, after its fsync returned.
    let (_, fs) = mount_template(&t);
    let before = observe(&fs).unwrap();
    drop(fs);
    let e = judge(&rec, &cut, &before, false).unwrap_err();
    assert!(
        e.contains("op 1 (fsync B) returned before the crash"),
        "{e}"
    );
    // Before the fsync returned, it is a legal state.
    let early = CutInfo::at(&rec, rec.steps[2].start);
    assert_eq!(judge(&rec, &early, &before, true).unwrap().state, 0);

    // Both names: no op sequence leaves that.
    let (_, fs) = mount_template(&t);
    let foo = fs.lookup(ROOT_INODE, b"foo").unwrap().ino;
    let b = fs.lookup(ROOT_INODE, b"B").unwrap().ino;
    fs.link(foo, b, b"foo").unwrap();
    let both = observe(&fs).unwrap();
    drop(fs);
    let e = judge(&rec, &early, &both, false).unwrap_err();
    assert!(e.contains("matches no state"), "{e}");

    // And the honest end state passes.
    let mems: Vec<Arc<MemDevice>> = rec
        .recs
        .iter()
        .map(|r| {
            Arc::new(MemDevice::from_image(
                "end",
                r.crash_image(rec.logs[0].len(), &[]).unwrap(),
            ))
        })
        .collect();
    let fs = Fs::mount(devices(&mems), &mount_params(&rec.config)).unwrap();
    let end = observe(&fs).unwrap();
    assert_eq!(judge(&rec, &cut, &end, true).unwrap().state, 2);
}

/// The byte offset of foo's first data block in a template leg image.
fn foo_first_block(t: &Template) -> usize {
    let want = data_bytes(SETUP_STAMP + 3, 0, u64::from(t.config.block_size));
    t.images[0]
        .windows(want.len())
        .position(|w| w == want.as_slice())
        .expect("foo's first block is in the image")
}

#[test]
fn the_observer_fails_on_a_block_bad_on_every_leg_and_counts_one_bad_copy() {
    let t = template();
    let at = foo_first_block(&t);
    let legs = mem_legs(&t.images, "bad");
    for leg in &legs {
        leg.poke(at as u64 + 10, &[0xAB ^ leg.peek(at as u64 + 10, 1)[0]]);
    }
    let fs = Fs::mount(devices(&legs), &mount_params(&t.config)).unwrap();
    let e = observe(&fs).unwrap_err();
    assert!(e.contains("read foo"), "{e}");
    drop(fs);

    let legs = mem_legs(&t.images, "half");
    legs[1].poke(at as u64 + 10, &[0xAB ^ legs[1].peek(at as u64 + 10, 1)[0]]);
    let fs = Fs::mount(devices(&legs), &mount_params(&t.config)).unwrap();
    // Reads go to either leg: read foo until the bad copy has been met.
    let mut met = false;
    for _ in 0..8 {
        observe(&fs).unwrap();
        let stats = fs.device_set().mirror().stats();
        if stats.iter().any(|s| s.checksum_errors > 0) {
            met = true;
            break;
        }
        let foo = fs.lookup(ROOT_INODE, b"foo").unwrap().ino;
        fs.read(foo, 0, 4096).unwrap();
    }
    assert!(met, "the bad copy on leg 1 never showed in the counters");
}

#[test]
fn fsck_clean_fails_on_a_damaged_metadata_block() {
    let t = template();
    let legs = mem_legs(&t.images, "fsck");
    fsck_clean(&devices(&legs), "on the template").unwrap();
    // Flip a bit in the first inode-table block (root's inode) on every
    // leg.
    let fs = Fs::mount(devices(&legs), &mount_params(&t.config)).unwrap();
    let table = fs.layout().inode_table.start;
    fs.unmount().unwrap();
    let bs = u64::from(t.config.block_size);
    for leg in &legs {
        let byte = leg.peek(table * bs + 300, 1)[0];
        leg.poke(table * bs + 300, &[byte ^ 0x40]);
    }
    let e = fsck_clean(&devices(&legs), "after damage").unwrap_err();
    assert!(e.contains("exit 4") || e.contains("exit 8"), "{e}");
}

#[test]
fn recording_is_deterministic() {
    let t = template();
    let w = workload(&[
        "write foo at 100 3000",
        "fsync foo",
        "rename foo A/bar",
        "mkdir C",
        "syncfs",
    ]);
    let a = record(&t, &w).unwrap();
    let b = record(&t, &w).unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
}

#[test]
fn every_check_passes_on_a_sound_state_with_everything_enabled() {
    let t = template();
    let rec = record(&t, &workload(&["write foo append 1500", "fsync foo"])).unwrap();
    let n: Vec<usize> = rec.logs.iter().map(|l| l.len()).collect();
    let points: Vec<_> = (0..2)
        .map(|l| {
            keelfs_engine::device::CrashPoint::new(
                n[l],
                rec.recs[l].unflushed_writes(n[l]).unwrap(),
            )
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(5);
    let p = check_state(
        &rec,
        &points,
        &CheckOptions::default(),
        &RecoveryCrash::Sample(4),
        &mut rng,
    )
    .unwrap();
    assert_eq!(p.state, 2);
    assert_eq!(p.recovery_cuts, 4);
}
