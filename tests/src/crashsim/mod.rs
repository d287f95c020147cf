//! The filesystem-level crash simulator (issue 4; after dm-log-writes
//! replay and CrashMonkey/ACE).
//!
//! A workload (one to three ops, systematically enumerated, or a longer
//! seeded random one) runs on a fresh small keelfs whose legs are
//! `RecordingDevice`s over memory; every op is bracketed by a mark on every
//! leg. Then, for every flush epoch of the logs and a sample of what each
//! leg may have kept of its unflushed writes (any subset, any order, torn
//! sectors, the legs independently), the crash image is mounted (recovery
//! runs) and checked against a model of what the ops may have left and
//! what the fsyncs that returned promised; fsck -n must find it clean;
//! it must take new writes; and a crash during its recovery must change
//! nothing. A failing state is written out as a reproducer file that
//! `tests/crash_replay.rs` replays.
//!
//! One idea per file:
//!
//! * `workload.rs`: ops and workloads, their text form, the bytes they write;
//! * `model.rs`: the POSIX model of the tree after each op, and each op's effects;
//! * `generate.rs`: the starting tree, the ACE alphabet and enumeration,
//!   random workloads;
//! * `driver.rs`: running ops on a mounted `Fs` as the FUSE adapter would;
//! * `recorder.rs`: the geometry, the template image, recording a workload;
//! * `observe.rs`: reading back the whole tree of a mounted `Fs`;
//! * `oracle.rs`: judging a tree against the model for a cut (durability,
//!   atomicity);
//! * `check.rs`: everything done to one crash state;
//! * `explore.rs`: many workloads × many states, in parallel, with counts;
//! * `reproducer.rs`: reproducer files and their replay.
//!
//! What a crash state must satisfy, and how it is checked, is in
//! `check.rs` and `oracle.rs`. Open known bugs of the filesystem
//! ([`check::KnownBug`]) fail their own ignored tests
//! (`tests/crash_known_bugs.rs`) and are counted, not failed, by the
//! exploring tests; once fixed, a bug leaves `KnownBug` and its states
//! fail like any other.
//!
//! Environment:
//!
//! * `KEELFS_CRASH_STATES`: crash states per flush epoch (default 4; more
//!   also means more crashes during recovery and new-writes checks);
//! * `KEELFS_CRASH_SEED`: another seed for every random choice;
//! * `KEELFS_CRASH_THREADS`: worker threads (default: the cores);
//! * `KEELFS_CRASH_FULL=1`: every two-op sequence of the whole alphabet
//!   and 2000 three-op ones (tens of minutes);
//! * `KEELFS_CRASH_SEQ3`, `KEELFS_CRASH_RANDOM`, `KEELFS_CRASH_RANDOM_LEN`:
//!   how many three-op and random workloads, how long the random ones;
//! * `KEELFS_CRASH_STRICT=1`: known bugs fail the exploring tests too;
//! * `KEELFS_CRASH_MAX_FAILURES`: failing workloads before stopping (5);
//! * `KEELFS_CRASH_REPLAY=FILE` (`crash_replay`): replay one reproducer,
//!   with `KEELFS_CRASH_EXPLAIN=1` to print each leg's log up to the cut;
//! * `KEELFS_BIN` (`crash_sigkill`): the mount program to use.

pub mod check;
pub mod driver;
pub mod explore;
pub mod generate;
pub mod model;
pub mod observe;
pub mod oracle;
pub mod recorder;
pub mod reproducer;
pub mod workload;
