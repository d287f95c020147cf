//! ACE-style bounded crash tests (after CrashMonkey/ACE): every sequence
//! of one op of the alphabet (`generate::core_ops`: create, appends,
//! aligned/unaligned/sparse overwrites, inline growth, truncate down and
//! up, fallocate allocate/keep-size/punch/zero, link, unlink, rename plain,
//! across directories, over a name, NOREPLACE, RENAME_EXCHANGE of files and
//! of directories, mkdir, rmdir, symlink, setxattr, removexattr) followed
//! by each persistence call (fsync of its file, fdatasync, fsync of its
//! directory, syncfs), on 1 KiB and 4 KiB blocks; every sequence of two ops
//! over a smaller alphabet (the first followed or not by an fsync, the
//! second by an fsync); a seeded sample of three-op sequences; and the
//! crash states of the mount every recording starts with.
//!
//! Every flush epoch of every recording is cut (per-leg, legs diverging;
//! `KEELFS_CRASH_STATES` states per epoch, default 4) and each state goes
//! through `crashsim::check`. Known bugs (`crash_known_bugs.rs`) are
//! counted, not failed, unless `KEELFS_CRASH_STRICT=1`. `KEELFS_CRASH_FULL=1`
//! enumerates every two-op sequence of the whole alphabet with every
//! persistence choice after the second (thousands of workloads: tens of
//! minutes); `KEELFS_CRASH_SEQ3=N` samples N three-op sequences (default 40).
//!
//! It prints the counts: workloads, epochs, crash states, crashes during
//! recovery, time.

use keelfs_tests::crashsim::explore::{env_seed, env_usize, explore_or_fail, Budget, Stats};
use keelfs_tests::crashsim::generate::{
    ace, ace_sample, core_ops, standard_setup, CoreOp, Persist,
};
use keelfs_tests::crashsim::recorder::FsConfig;
use std::time::Instant;

/// The two-op alphabet of the CI run: one op of each kind.
fn small_alphabet() -> Vec<CoreOp> {
    let keep = [
        "create baz",
        "write foo append 1500",
        "write A/bar at 100 3000",
        "truncate foo 1000",
        "fallocate foo punch-hole 1024 2048",
        "link foo A/l",
        "unlink foo",
        "rename foo A/bar",
        "rename foo A/bar exchange",
        "mkdir C",
        "setxattr foo user.a 32",
    ];
    core_ops()
        .into_iter()
        .filter(|c| keep.contains(&c.op.to_string().as_str()))
        .collect()
}

fn full() -> bool {
    std::env::var("KEELFS_CRASH_FULL").is_ok_and(|v| v.trim() == "1")
}

#[test]
fn ace_workloads() {
    let started = Instant::now();
    let setup = standard_setup();
    let alphabet = core_ops();
    let budget = Budget::from_env();
    let seed = env_seed(0x0ace);
    let mut total = Stats::default();
    let mut add = |s: Stats| {
        total.workloads += s.workloads;
        total.states += s.states;
        total.recovery_states += s.recovery_states;
        total.single_legs += s.single_legs;
        total.epochs += s.epochs;
        for (k, v) in s.known {
            *total.known.entry(k).or_default() += v;
        }
    };

    let one = ace(&setup, &alphabet, 1, &[Persist::None], &Persist::ALL);
    // The mount's own epochs, once per geometry.
    let mount = Budget {
        mount_epochs: true,
        ..budget
    };
    add(explore_or_fail(
        "ace1-mount",
        FsConfig::small(),
        &one[..1],
        mount,
        seed,
    ));
    add(explore_or_fail(
        "ace1",
        FsConfig::small(),
        &one,
        budget,
        seed,
    ));
    let small4k = Budget {
        states_per_epoch: budget.states_per_epoch.div_ceil(2).max(3),
        ..budget
    };
    add(explore_or_fail(
        "ace1-4k",
        FsConfig::small_4k(),
        &one,
        small4k,
        seed,
    ));

    let two = if full() {
        ace(
            &setup,
            &alphabet,
            2,
            &[Persist::None, Persist::Fsync],
            &Persist::ALL,
        )
    } else {
        ace(
            &setup,
            &small_alphabet(),
            2,
            &[Persist::None, Persist::Fsync],
            &[Persist::Fsync],
        )
    };
    add(explore_or_fail(
        "ace2",
        FsConfig::small(),
        &two,
        budget,
        seed,
    ));

    let n3 = env_usize("KEELFS_CRASH_SEQ3").unwrap_or(if full() { 2000 } else { 40 });
    let three = ace_sample(&setup, &alphabet, 3, n3, seed);
    add(explore_or_fail(
        "ace3",
        FsConfig::small(),
        &three,
        budget,
        seed,
    ));

    println!(
        "ace total: {} workloads, {} flush epochs, {} crash states + {} crashes during recovery \
         + {} legs mounted alone in {:.1?}; known bugs seen: {:?}",
        total.workloads,
        total.epochs,
        total.states,
        total.recovery_states,
        total.single_legs,
        started.elapsed(),
        total.known
    );
    assert!(total.states >= 10_000, "only {} crash states", total.states);
}
