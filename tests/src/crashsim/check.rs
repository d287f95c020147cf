//! The checker: everything done to one crash state.
//!
//! For per-leg crash points (one per leg, cut at the same instant), in
//! this order, stopping at the first failure:
//!
//! 1. build each leg's crash image (`RecordingDevice::materialise`);
//! 2. mount (journal recovery and orphan cleanup run), as a user would:
//!    not degraded;
//! 3. read the whole tree ([`observe`]): no read may fail, and no read
//!    may have met a copy failing its tag on any leg (the mirror's
//!    checksum-error and heal counters stay zero: recovery leaves every
//!    leg sound);
//! 4. judge it ([`judge`]): durability of what was fsync'ed, atomicity;
//! 5. unmount cleanly, then `fsck -n` (`keelfs_fsck::fsck_devices`,
//!    forced) must find no error;
//! 6. (if asked) the filesystem takes new work: mount, create a file,
//!    write it, fsync, crash (drop without unmount), mount again, read it
//!    back, unmount, `fsck -n` again;
//! 7. (if asked) recovery is idempotent under a crash: the crash images
//!    are mounted again on recording devices and the power cut at points
//!    of that mount's own log (recovery's writes included); each of those
//!    images must mount and show exactly the tree step 3 saw;
//! 8. (if asked) each leg's crash image alone (the other leg lost),
//!    mounted degraded, passes steps 3–4.
//!
//! Also checked after step 3: no allocated inode is unreachable (one with
//! links would be lost names; one without is a leaked orphan), and the
//! mount did not mark the filesystem as having errors (a broken orphan
//! list). A state
//! showing one of the [`KnownBug`]s fails naming it, unless the options
//! tolerate known bugs: then it passes with the bug counted.
//!
//! Relies on: `recorder.rs` (the recording and mount parameters),
//! `observe.rs`, `oracle.rs`, the engine's crash points and the fsck
//! library.

use super::driver::Driver;
use super::observe::{observe, Observed};
use super::oracle::{judge, CutInfo};
use super::recorder::{devices, mount_params, Recording};
use super::workload::data_bytes;
use keelfs_engine::device::{CrashPoint, DeviceRef, MemDevice, RecordingDevice};
use keelfs_fs::core::{Caller, Fs, MountParams};
use keelfs_fs::devset::read_superblock;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fsck::{fsck_devices, Options, EXIT_CLEAN};
use rand::rngs::StdRng;
use rand::Rng;
use std::sync::Arc;

/// Open known bugs (see `tests/crash_known_bugs.rs`) a crash state can
/// show. None is open now: the three the simulator found (a stale-looking
/// leg after a cut between the legs' superblock writes, the orphan head in
/// the superblock, truncate zeroing in place before its commit) are fixed
/// and fail a state like any other problem. A bug found later is added
/// here while it is open, so the exploring tests can count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KnownBug {}

/// What to check for each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// The oracle's `global_fsync` (see `oracle.rs`).
    pub global_fsync: bool,
    /// Step 5's fsck.
    pub fsck: bool,
    /// Step 6.
    pub writable: bool,
    /// Step 8.
    pub single_legs: bool,
    /// A state showing a [`KnownBug`] passes with the bug counted (in
    /// [`Passed::known`]) after the checks that still make sense (steps
    /// 3–4); otherwise it fails.
    pub tolerate_known_bugs: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            global_fsync: true,
            fsck: true,
            writable: true,
            single_legs: true,
            tolerate_known_bugs: false,
        }
    }
}

/// Step 7's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryCrash {
    None,
    /// Up to this many cuts of the recovery's log, drawn from the rng.
    Sample(usize),
    /// Exactly these per-leg points (a replay).
    Exact(Vec<CrashPoint>),
}

/// A failed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    /// The recovery cut that failed, for step 7 failures.
    pub recovery_points: Option<Vec<CrashPoint>>,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            recovery_points: None,
        }
    }
}

/// What a passed state showed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Passed {
    /// The model state the tree matched.
    pub state: usize,
    /// The last state the marks allowed.
    pub started: usize,
    /// Recovery cuts checked in step 7.
    pub recovery_cuts: usize,
    /// Legs mounted alone in step 8.
    pub single_legs: usize,
    /// The known bug the state showed (tolerated).
    pub known: Option<KnownBug>,
}

/// The name step 6 creates (no workload uses it).
const NEW_NAME: &str = "crashsim-new";

/// Runs steps 1–7 for `points` (one per leg of `rec`).
pub fn check_state(
    rec: &Recording,
    points: &[CrashPoint],
    opts: &CheckOptions,
    recovery: &RecoveryCrash,
    rng: &mut StdRng,
) -> Result<Passed, Failure> {
    let legs = materialise(&rec.recs, points)?;
    let crash_images: Vec<Vec<u8>> = match recovery {
        RecoveryCrash::None => Vec::new(),
        _ => legs.iter().map(|l| l.snapshot()).collect(),
    };
    let cut = CutInfo::at(rec, points[0].n);
    let before = read_superblock(legs[0].as_ref()).ok();
    let fs = mount_after_crash(&legs, rec).map_err(Failure::new)?;
    let seen = observe(&fs).map_err(|e| Failure::new(format!("after the crash: {e}")))?;
    let verdict = judge(rec, &cut, &seen, opts.global_fsync).map_err(Failure::new)?;
    let passed = |known| Passed {
        state: verdict.state,
        started: cut.started,
        recovery_cuts: 0,
        single_legs: 0,
        known,
    };
    // Recovery leaves every leg sound: a read that had to heal a bad copy
    // means a leg kept a block that fails its tag.
    for (leg, st) in fs.device_set().mirror().stats().iter().enumerate() {
        if st.checksum_errors > 0 || st.healed > 0 {
            return Err(Failure::new(format!(
                "after recovery, leg {leg} held {} blocks failing their tags ({} healed from \
                 the other leg while reading the tree)",
                st.checksum_errors, st.healed
            )));
        }
    }
    // The mount marked errors where there were none (a broken orphan
    // chain, an orphan it could not free): a crash must never do that.
    let marked = fs.superblock().state.errors && before.as_ref().is_some_and(|sb| !sb.state.errors);
    if marked {
        return Err(Failure::new(
            "the mount marked the filesystem as having errors (a broken orphan list, or an \
             orphan it could not free)",
        ));
    }
    let leaked = unreachable_inodes(&fs, &seen).map_err(Failure::new)?;
    if !leaked.is_empty() {
        return Err(Failure::new(format!(
            "inodes {leaked:?} have no link and are not on the orphan list: they leak"
        )));
    }
    fs.unmount()
        .map_err(|e| Failure::new(format!("unmount after recovery failed: {e}")))?;
    if opts.fsck {
        fsck_clean(&devices(&legs), "after recovery and a clean unmount").map_err(Failure::new)?;
    }
    if opts.writable {
        takes_new_work(&legs, rec).map_err(Failure::new)?;
    }
    let mut single_legs = 0;
    if opts.single_legs {
        for (leg, p) in points.iter().enumerate() {
            each_leg_alone(rec, leg, p, &cut, opts).map_err(Failure::new)?;
            single_legs += 1;
        }
    }
    let recovery_cuts = match recovery {
        RecoveryCrash::None => 0,
        RecoveryCrash::Sample(max) => {
            crash_during_recovery(rec, &crash_images, &seen, None, *max, rng)?
        }
        RecoveryCrash::Exact(p) => {
            crash_during_recovery(rec, &crash_images, &seen, Some(p.clone()), 1, rng)?
        }
    };
    Ok(Passed {
        recovery_cuts,
        single_legs,
        ..passed(None)
    })
}

/// Step 8: leg `leg`'s crash image alone, mounted degraded, passes steps
/// 3–4 (every commit flushed every leg, so each leg is a crash image of
/// the filesystem by itself: a leg may be missing after a power cut).
fn each_leg_alone(
    rec: &Recording,
    leg: usize,
    point: &CrashPoint,
    cut: &CutInfo,
    opts: &CheckOptions,
) -> Result<(), String> {
    let image = rec.recs[leg]
        .materialise(point)
        .map_err(|e| format!("bad crash point {point}: {e}"))?;
    let params = MountParams {
        degraded: true,
        ..mount_params(&rec.config)
    };
    let fs = Fs::mount(vec![Arc::new(image) as DeviceRef], &params)
        .map_err(|e| format!("leg {leg} alone: mount (degraded) failed: {e}"))?;
    let seen = observe(&fs).map_err(|e| format!("leg {leg} alone: {e}"))?;
    judge(rec, cut, &seen, opts.global_fsync).map_err(|e| format!("leg {leg} alone: {e}"))?;
    Ok(())
}

/// Mounts crash images as a user would (not degraded): a power cut
/// between the legs' superblock writes must not make a leg look stale.
fn mount_after_crash(legs: &[Arc<MemDevice>], rec: &Recording) -> Result<Fs, String> {
    Fs::mount(devices(legs), &mount_params(&rec.config))
        .map_err(|e| format!("mount after the crash failed: {e}"))
}

/// Allocated inodes the tree does not reach (after the mount freed the
/// orphans it knew of): an error if one has links (lost names), else the
/// list of leaked orphans.
fn unreachable_inodes(fs: &Fs, seen: &Observed) -> Result<Vec<u64>, String> {
    let mut leaked = Vec::new();
    let known = fs.orphans().list();
    for ino in 1..=fs.layout().inode_count {
        let allocated = fs
            .inode_allocator()
            .is_allocated(ino)
            .map_err(|e| format!("inode bitmap: {e}"))?;
        if !allocated || seen.get(ino).is_some() || known.contains(&ino) {
            continue;
        }
        let attr = fs
            .getattr(ino)
            .map_err(|e| format!("inode {ino} is allocated but unreachable and unreadable: {e}"))?;
        if attr.nlink != 0 {
            return Err(format!(
                "inode {ino} ({:?}) is allocated with {} links but no name reaches it",
                attr.kind, attr.nlink
            ));
        }
        leaked.push(ino);
    }
    Ok(leaked)
}

/// Step 1.
fn materialise(
    recs: &[Arc<RecordingDevice>],
    points: &[CrashPoint],
) -> Result<Vec<Arc<MemDevice>>, Failure> {
    if points.len() != recs.len() {
        return Err(Failure::new(format!(
            "{} crash points for {} legs",
            points.len(),
            recs.len()
        )));
    }
    recs.iter()
        .zip(points)
        .map(|(r, p)| {
            r.materialise(p)
                .map(Arc::new)
                .map_err(|e| Failure::new(format!("bad crash point {p}: {e}")))
        })
        .collect()
}

/// Step 5: `fsck -n -f` finds nothing.
pub fn fsck_clean(devs: &[DeviceRef], when: &str) -> Result<(), String> {
    let outcome = fsck_devices(devs, &Options::check());
    if outcome.exit_code == EXIT_CLEAN {
        return Ok(());
    }
    let mut lines: Vec<String> = outcome
        .first()
        .errors()
        .take(8)
        .map(|f| f.to_string())
        .collect();
    if let Some(e) = &outcome.error {
        lines.push(e.clone());
    }
    Err(format!(
        "fsck -n {when}: exit {}: {}",
        outcome.exit_code,
        lines.join("; ")
    ))
}

/// Step 6.
fn takes_new_work(legs: &[Arc<MemDevice>], rec: &Recording) -> Result<(), String> {
    let params = mount_params(&rec.config);
    let bs = u64::from(rec.config.block_size);
    let want = data_bytes(0xfeed, 0, bs * 2 + bs / 2);
    {
        let fs = Fs::mount(devices(legs), &params)
            .map_err(|e| format!("second mount after the crash failed: {e}"))?;
        let attr = fs
            .mknod(ROOT_INODE, NEW_NAME.as_bytes(), 0o100_644, 0, Caller::ROOT)
            .map_err(|e| format!("create after the crash: {e}"))?;
        fs.open(attr.ino).map_err(|e| format!("open: {e}"))?;
        let n = fs
            .write(attr.ino, 0, &want)
            .map_err(|e| format!("write after the crash: {e}"))?;
        if n != want.len() {
            return Err(format!("write after the crash: short write ({n})"));
        }
        fs.fsync(attr.ino, false)
            .map_err(|e| format!("fsync after the crash: {e}"))?;
        // Crash: no release, no unmount.
    }
    let fs = Fs::mount(devices(legs), &params)
        .map_err(|e| format!("mount after a crash following new writes failed: {e}"))?;
    let got = {
        let mut driver = Driver::new(&fs, false);
        let ino = driver
            .resolve(NEW_NAME)
            .map_err(|e| format!("the file fsync'ed after the crash: {e}"))?;
        let data = fs
            .read(ino, 0, want.len() as u32 + 1)
            .map_err(|e| format!("reading the file fsync'ed after the crash: {e}"));
        driver.forget_all().map_err(|e| format!("forget: {e}"))?;
        data?
    };
    if got != want {
        return Err(format!(
            "the file fsync'ed after the crash reads back wrong: {}",
            super::oracle::bytes_diff(&got, &want)
        ));
    }
    fs.unmount()
        .map_err(|e| format!("unmount after new writes: {e}"))?;
    fsck_clean(&devices(legs), "after new writes, a crash and a remount")
}

/// Step 7: returns the number of recovery cuts checked.
fn crash_during_recovery(
    rec: &Recording,
    images: &[Vec<u8>],
    expected: &Observed,
    exact: Option<Vec<CrashPoint>>,
    max: usize,
    rng: &mut StdRng,
) -> Result<usize, Failure> {
    let params = mount_params(&rec.config);
    let recs: Vec<Arc<RecordingDevice>> = images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let mem = Arc::new(MemDevice::from_image(format!("again{i}"), img.clone()));
            RecordingDevice::new(mem as DeviceRef)
                .map(Arc::new)
                .map_err(|e| Failure::new(format!("recording device: {e}")))
        })
        .collect::<Result<_, _>>()?;
    {
        let fs = Fs::mount(devices(&recs), &params)
            .map_err(|e| Failure::new(format!("mount (recorded) after the crash failed: {e}")))?;
        // Crash right after the mount returned.
        drop(fs);
    }
    let cuts: Vec<Vec<CrashPoint>> = match exact {
        Some(points) => vec![points],
        None => recovery_cuts(&recs, max, rng)?,
    };
    for points in &cuts {
        let legs = materialise(&recs, points)?;
        let fail = |m: String| Failure {
            message: m,
            recovery_points: Some(points.clone()),
        };
        let fs = mount_after_crash(&legs, rec)
            .map_err(|e| fail(format!("after a crash during recovery: {e}")))?;
        let seen = observe(&fs).map_err(|e| fail(format!("after a crash during recovery: {e}")))?;
        drop(fs);
        if seen != *expected {
            return Err(fail(format!(
                "a crash during recovery changed the result: {}",
                tree_diff(&seen, expected)
            )));
        }
    }
    Ok(cuts.len())
}

/// Cuts of the recovery's logs: every flush epoch's "nothing landed" and
/// "everything landed" on both legs, then random per-leg subsets, up to
/// `max` in all (the epochs picked at random when there are more).
fn recovery_cuts(
    recs: &[Arc<RecordingDevice>],
    max: usize,
    rng: &mut StdRng,
) -> Result<Vec<Vec<CrashPoint>>, Failure> {
    let logs: Vec<_> = recs.iter().map(|r| r.ops()).collect();
    let ends: Vec<Vec<usize>> = logs
        .iter()
        .map(|ops| {
            let mut e: Vec<usize> = (0..ops.len())
                .filter(|&i| ops[i] == keelfs_engine::device::RecordedOp::Flush)
                .collect();
            e.push(ops.len());
            e
        })
        .collect();
    if ends.iter().any(|e| e.len() != ends[0].len()) {
        return Err(Failure::new(format!(
            "the legs saw different numbers of flushes during recovery: {:?}",
            ends.iter().map(|e| e.len()).collect::<Vec<_>>()
        )));
    }
    let mut out = Vec::new();
    for _ in 0..max {
        let e = rng.random_range(0..ends[0].len());
        let mut points = Vec::new();
        for (leg, rec) in recs.iter().enumerate() {
            let all = rec
                .crash_points_at(ends[leg][e], rng, 6)
                .map_err(|err| Failure::new(format!("recovery crash points: {err}")))?;
            points.push(all[rng.random_range(0..all.len())].clone());
        }
        out.push(points);
    }
    Ok(out)
}

/// The first difference between two trees (for messages).
pub fn tree_diff(got: &Observed, want: &Observed) -> String {
    for (ino, w) in &want.nodes {
        match got.nodes.get(ino) {
            None => return format!("{} (inode {ino}) is missing", w.path),
            Some(g) if g != w => {
                return format!("{} (inode {ino}) differs: {g:?} vs {w:?}", w.path)
                    .chars()
                    .take(600)
                    .collect()
            }
            _ => {}
        }
    }
    for (ino, g) in &got.nodes {
        if !want.nodes.contains_key(ino) {
            return format!("{} (inode {ino}) appeared", g.path);
        }
    }
    "no difference".to_string()
}
