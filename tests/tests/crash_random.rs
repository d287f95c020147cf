//! Longer seeded random workloads (`generate::random_workload`: 8 to 30
//! ops over a small pool of names — writes of every shape, truncates,
//! fallocate modes, links, unlinks, renames of files and directories with
//! every flag, mkdir, rmdir, symlinks, xattrs — with fsync, fdatasync,
//! directory fsync and syncfs interspersed, and sometimes the "kernel"
//! keeping every inode it looked up so unlinked files stay open as
//! orphans), each crash-tested like the ACE workloads, on 1 KiB and 4 KiB
//! blocks. Their journals fill and wrap, so checkpoints and forced commits
//! happen under the crash cuts too.
//!
//! `KEELFS_CRASH_RANDOM=N` runs N workloads per geometry (default 10),
//! `KEELFS_CRASH_RANDOM_LEN=L` makes them up to L ops long (default 30),
//! `KEELFS_CRASH_SEED` picks another set, `KEELFS_CRASH_STATES` as for the
//! ACE test.

use keelfs_tests::crashsim::explore::{env_seed, env_usize, explore_or_fail, Budget};
use keelfs_tests::crashsim::generate::{random_workload, standard_setup};
use keelfs_tests::crashsim::recorder::FsConfig;
use keelfs_tests::crashsim::workload::Workload;

fn workloads(seed: u64) -> Vec<Workload> {
    let n = env_usize("KEELFS_CRASH_RANDOM").unwrap_or(10);
    let max_len = env_usize("KEELFS_CRASH_RANDOM_LEN").unwrap_or(30).max(8);
    let setup = standard_setup();
    (0..n)
        .map(|i| {
            let len = 8 + (i * 7) % (max_len - 7);
            random_workload(&setup, len, seed.wrapping_add(i as u64))
        })
        .collect()
}

#[test]
fn random_workloads_1k() {
    let seed = env_seed(0x5eed);
    explore_or_fail(
        "random",
        FsConfig::small(),
        &workloads(seed),
        Budget::from_env(),
        seed,
    );
}

#[test]
fn random_workloads_4k() {
    let seed = env_seed(0x5eed) ^ 0x4000;
    explore_or_fail(
        "random-4k",
        FsConfig::small_4k(),
        &workloads(seed),
        Budget::from_env(),
        seed,
    );
}
