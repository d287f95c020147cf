//! Replays one crash reproducer (`KEELFS_CRASH_REPLAY=FILE`, written by a
//! failing crash test under `target/crash-reproducers/`): records the
//! workload again, rebuilds the crash state and checks it, failing with
//! the failure it still shows. `KEELFS_CRASH_EXPLAIN=1` prints each leg's
//! log up to the cut (marks, flushes, writes and what landed).
//!
//! Without the variable it checks the replay itself: a reproducer of a
//! sound state, written and read back, replays clean.

use keelfs_engine::device::CrashPoint;
use keelfs_tests::crashsim::check::CheckOptions;
use keelfs_tests::crashsim::generate::standard_setup;
use keelfs_tests::crashsim::recorder::{record, FsConfig, Template};
use keelfs_tests::crashsim::reproducer::Reproducer;
use keelfs_tests::crashsim::workload::{Op, Workload};
use std::path::PathBuf;

#[test]
fn replay_one_reproducer() {
    let Some(path) = std::env::var_os("KEELFS_CRASH_REPLAY") else {
        eprintln!("KEELFS_CRASH_REPLAY not set: nothing to replay");
        return;
    };
    let repro = Reproducer::load(&PathBuf::from(&path)).unwrap();
    println!("workload: {}", repro.workload.summary());
    println!("recorded failure: {}", repro.message);
    let explain = std::env::var_os("KEELFS_CRASH_EXPLAIN").is_some();
    match repro.replay(explain) {
        Ok(p) => println!(
            "the state passes now (it matched model state {} of {})",
            p.state, p.started
        ),
        Err(e) => panic!("the state still fails: {e}"),
    }
}

#[test]
fn a_saved_reproducer_replays() {
    let config = FsConfig::small();
    let workload = Workload {
        setup: standard_setup(),
        ops: ["write foo at 100 3000", "fsync foo", "rename foo B/foo"]
            .iter()
            .map(|l| Op::parse(l).unwrap())
            .collect(),
        hold_refs: false,
    };
    let template = Template::build(config, &workload.setup).unwrap();
    let rec = record(&template, &workload).unwrap();
    let ends = rec.epoch_ends();
    let e = ends[0].len() / 2;
    let points: Vec<CrashPoint> = (0..2)
        .map(|leg| {
            let unflushed = rec.recs[leg].unflushed_writes(ends[leg][e]).unwrap();
            CrashPoint::new(ends[leg][e], unflushed)
        })
        .collect();
    let repro = Reproducer {
        config,
        options: CheckOptions::default(),
        workload,
        points,
        recovery_points: None,
        fingerprint: rec.fingerprint(),
        seed: 7,
        message: "none: a sound state".into(),
    };
    let path = repro.save("selftest").unwrap();
    let back = Reproducer::load(&path).unwrap();
    assert_eq!(back, repro);
    back.replay(false).unwrap();
    std::fs::remove_file(path).unwrap();
}
