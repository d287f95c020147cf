//! Crash bugs the simulator found in the filesystem, each as the smallest
//! workload that shows it. The test of an open bug is `#[ignore]`d and
//! FAILS until the bug is fixed (run it with `--ignored`); the exploring
//! tests (`crash_ace.rs`, `crash_random.rs`) count that bug's states
//! (`check::KnownBug`) instead of failing on them (`KEELFS_CRASH_STRICT=1`
//! makes them fail there too). The test of a fixed bug stays, not ignored,
//! as a regression test, and the exploring tests fail on its states like
//! on any other.
//!
//! 1. FIXED. A power cut between the legs' superblock writes (unmount,
//!    syncfs, the mount's own "mounted" write) left one leg with an older
//!    superblock generation; the mount called that leg stale ("it was
//!    away") and refused to mount without `-o degraded`, though the leg
//!    missed no write. `devset::identify` now judges staleness by the
//!    newest member table's `last_transaction` for the leg (docs/format.md
//!    §4).
//! 2. FIXED. The orphan list head was in the superblock, which is not
//!    journalled: a crash after a commit that changed the orphan list and
//!    before the superblock write that followed it leaked the orphan
//!    (allocated, no link, never freed: fsck -n reported it) or left a
//!    head naming an inode a replayed transaction freed (the mount marked
//!    the filesystem as having errors: fsck -n exit 4). The list is now
//!    anchored in the root inode's next-orphan link, changed in the
//!    transaction that changes the inodes it links (docs/format.md §5.1).
//! 3. FIXED. A truncate zeroed the tail of its new last block in place
//!    before its transaction committed; a crash before the commit left the
//!    old size with zeros over durable data. A shrink now writes no data;
//!    whatever extends the file again zeroes what lies past the old size,
//!    in the transaction that extends it (docs/format.md §6.1). Its tests
//!    also grow the file back after the shrink, with and without a commit
//!    in between, on 1 KiB and 4 KiB blocks.

use keelfs_engine::device::CrashPoint;
use keelfs_fs::core::Fs;
use keelfs_tests::crashsim::check::{check_state, CheckOptions, RecoveryCrash};
use keelfs_tests::crashsim::generate::standard_setup;
use keelfs_tests::crashsim::recorder::{
    devices, mount_params, record, FsConfig, Recording, Template,
};
use keelfs_tests::crashsim::workload::{Op, Workload};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::Arc;

fn recording(ops: &[&str], hold_refs: bool) -> Recording {
    recording_on(FsConfig::small(), ops, hold_refs)
}

fn recording_on(config: FsConfig, ops: &[&str], hold_refs: bool) -> Recording {
    let setup = standard_setup();
    let template = Template::build(config, &setup).unwrap();
    let w = Workload {
        setup,
        ops: ops.iter().map(|l| Op::parse(l).unwrap()).collect(),
        hold_refs,
    };
    record(&template, &w).unwrap()
}

/// Per-leg points at epoch `e`: leg `i` keeps everything if `all[i]`.
fn points(rec: &Recording, e: usize, all: &[bool]) -> Vec<CrashPoint> {
    let ends = rec.epoch_ends();
    all.iter()
        .enumerate()
        .map(|(leg, &a)| {
            let n = ends[leg][e];
            let keep = if a {
                rec.recs[leg].unflushed_writes(n).unwrap()
            } else {
                Vec::new()
            };
            CrashPoint::new(n, keep)
        })
        .collect()
}

/// Every epoch of `rec`, with both legs keeping all or both nothing of
/// their unflushed writes (the legs agree, so bug 1 stays out of the way),
/// checked strictly: the failures.
fn failures(rec: &Recording) -> Vec<String> {
    let mut out = Vec::new();
    let mut rng = StdRng::seed_from_u64(1);
    let strict = CheckOptions {
        writable: false,
        ..CheckOptions::default()
    };
    for e in 0..rec.epoch_ends()[0].len() {
        for all in [[false, false], [true, true]] {
            let p = points(rec, e, &all);
            if let Err(f) = check_state(rec, &p, &strict, &RecoveryCrash::None, &mut rng) {
                out.push(format!("leg0 {} | leg1 {}: {}", p[0], p[1], f.message));
            }
        }
    }
    out
}

/// Fails naming every failing state of `rec`.
#[track_caller]
fn assert_no_failures(rec: &Recording) {
    let f = failures(rec);
    assert!(
        f.is_empty(),
        "{} failing states:\n{}",
        f.len(),
        f.join("\n")
    );
}

#[test]
fn power_cut_between_the_legs_superblock_writes_needs_no_degraded_mount() {
    let rec = recording(&["create baz", "syncfs"], false);
    let mut refused = Vec::new();
    for e in 0..rec.epoch_ends()[0].len() {
        for all in [[true, false], [false, true]] {
            let p = points(&rec, e, &all);
            let legs: Vec<_> = (0..2)
                .map(|l| Arc::new(rec.recs[l].materialise(&p[l]).unwrap()))
                .collect();
            if let Err(err) = Fs::mount(devices(&legs), &mount_params(&rec.config)) {
                refused.push(format!("leg0 {} | leg1 {}: {err}", p[0], p[1]));
            }
        }
    }
    assert!(
        refused.is_empty(),
        "the mount refused {} crash states:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

#[test]
fn crash_after_an_orphaning_commit_leaves_a_clean_filesystem() {
    // The kernel still knows foo when it is unlinked: it becomes an orphan.
    let rec = recording(&["unlink foo", "fsync ."], true);
    assert_no_failures(&rec);
}

#[test]
fn uncommitted_truncate_leaves_durable_bytes_alone() {
    let rec = recording(&["truncate foo 1000", "fsync foo"], false);
    assert_no_failures(&rec);
}

/// The brief's case: 10000 bytes, truncated to 5000, grown back to 10000:
/// bytes 5000.. read zero in every state, and no crash state shows stale
/// bytes or zeros under a size that still covers old data.
#[test]
fn truncate_down_then_up_shows_zeros_in_every_crash_state() {
    let grow = ["write foo append 4000", "fsync foo"];
    for config in [FsConfig::small(), FsConfig::small_4k()] {
        for between in [None, Some("fsync foo")] {
            let mut ops: Vec<&str> = grow.to_vec();
            ops.push("truncate foo 5000");
            ops.extend(between);
            ops.extend(["truncate foo 10000", "fsync foo"]);
            let rec = recording_on(config, &ops, false);
            let f = failures(&rec);
            assert!(
                f.is_empty(),
                "{ops:?} on {} B blocks: {} failing states:\n{}",
                config.block_size,
                f.len(),
                f.join("\n")
            );
        }
    }
}

/// Shrinks followed by writes past the end (inside the old last block and
/// beyond it), a truncate up inside the old last block and a fallocate
/// that extends the size: an extension zeroes up to its new size and never
/// past it (where the uncommitted shrink's old bytes may still count).
#[test]
fn extensions_past_a_shrunk_end_show_zeros_in_every_crash_state() {
    for tail in [
        "write foo at 3000 100",
        "truncate foo 3100",
        "write foo at 9000 200",
        "fallocate foo allocate 7000 3000",
    ] {
        let ops = ["truncate foo 2500", tail, "fsync foo"];
        let rec = recording_on(FsConfig::small_4k(), &ops, false);
        let f = failures(&rec);
        assert!(
            f.is_empty(),
            "{ops:?}: {} failing states:\n{}",
            f.len(),
            f.join("\n")
        );
    }
}
