//! keelfs integration tests. The library holds what the test targets
//! under `tests/tests/` share: [`crashsim`], the filesystem-level crash
//! simulator (issue 4).
//!
//! The targets:
//!
//! * `crash_ace`: ACE-style enumeration (all one-op workloads with every
//!   persistence call, on 1 KiB and 4 KiB blocks; all two-op workloads over
//!   a smaller alphabet; a sample of three-op ones; the mount's own crash
//!   states) — at least 10,000 crash states;
//! * `crash_random`: longer seeded random workloads;
//! * `crash_known_bugs`: the bugs the simulator found, one small workload
//!   each (an open bug's test is ignored and fails until fixed; a fixed
//!   bug's test stays as a regression test);
//! * `crash_harness`: the simulator's own checks can fail (a disk that
//!   drops flushes, a lost rename, a bad block, a damaged image);
//! * `crash_replay`: `KEELFS_CRASH_REPLAY=FILE` replays one reproducer
//!   that a failing state wrote under `target/crash-reproducers/`;
//! * `crash_sigkill`: a real mount (the `keelfs` program) killed with
//!   SIGKILL during fsync-heavy writes, remounted and checked.
//!
//! Environment knobs are listed in [`crashsim`].

pub mod crashsim;
