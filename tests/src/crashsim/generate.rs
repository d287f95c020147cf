//! Workload generators: ACE-style bounded enumeration and seeded random
//! workloads (after CrashMonkey/ACE, OSDI'18: most crash bugs need at
//! most three ops on a fresh filesystem and involve an fsync).
//!
//! What it promises:
//!
//! * [`standard_setup`]: the starting tree every workload runs on: `foo`
//!   (6000 bytes, an xattr), `A/bar` (3000 bytes), `s` (60 bytes: inline),
//!   empty directories `A/` (holding bar) and `B/`.
//! * [`core_ops`]: the alphabet — each op of the brief over that small
//!   tree (create, appends, aligned and unaligned overwrites, a sparse
//!   write, an inline file growing out of its inode, truncate down and up,
//!   fallocate (allocate, keep-size, punch hole, zero range), link, unlink,
//!   rename (plain, over an existing name, across directories,
//!   RENAME_EXCHANGE of files and of directories, NOREPLACE), mkdir, rmdir,
//!   symlink, setxattr, removexattr), each with the file and directory a
//!   persistence call after it would name.
//! * [`ace`]: every sequence of `len` ops of the alphabet, each op followed
//!   by one of the persistence choices given (none, fsync of its file,
//!   fdatasync, fsync of its directory, syncfs), keeping only sequences the
//!   model says succeed, and only those whose last op is followed by a
//!   persistence call (without one nothing needs to survive, and the
//!   atomicity of that op is covered by the sequences where it is not
//!   last). Deterministic order.
//! * [`random_workload`]: a seeded workload of `len` ops drawn from the
//!   current model state (names from a small pool, sizes up to ~24 KiB,
//!   persistence calls interspersed), every op valid.
//!
//! Relies on: `model.rs` to tell which ops succeed.

use super::model::{Model, Node};
use super::workload::{Falloc, Op, RenameHow, Workload, WriteAt, SETUP_STAMP};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

fn op(line: &str) -> Op {
    Op::parse(line).expect("generator op")
}

/// The starting tree (see the module docs).
pub fn standard_setup() -> Vec<Op> {
    [
        "mkdir A",
        "mkdir B",
        "create foo",
        "write foo append 6000",
        "setxattr foo user.init 16",
        "create A/bar",
        "write A/bar append 3000",
        "create s",
        "write s append 60",
    ]
    .iter()
    .map(|l| op(l))
    .collect()
}

/// An op of the alphabet with what a persistence call after it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreOp {
    pub op: Op,
    /// The file (or directory) fsync/fdatasync after it would name.
    pub file: Option<String>,
    /// The directory an fsync of the parent would name.
    pub dir: String,
}

/// How an op is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persist {
    None,
    Fsync,
    Fdatasync,
    FsyncDir,
    Syncfs,
}

impl Persist {
    pub const ALL: [Persist; 5] = [
        Persist::None,
        Persist::Fsync,
        Persist::Fdatasync,
        Persist::FsyncDir,
        Persist::Syncfs,
    ];

    /// The persistence op after `core`, if it applies.
    pub fn after(self, core: &CoreOp) -> Option<Option<Op>> {
        match self {
            Persist::None => Some(None),
            Persist::Fsync => core.file.clone().map(|f| Some(Op::Fsync(f))),
            Persist::Fdatasync => core.file.clone().map(|f| Some(Op::Fdatasync(f))),
            Persist::FsyncDir => Some(Some(Op::Fsync(core.dir.clone()))),
            Persist::Syncfs => Some(Some(Op::Syncfs)),
        }
    }
}

/// The alphabet (see the module docs).
pub fn core_ops() -> Vec<CoreOp> {
    let c = |line: &str, file: Option<&str>, dir: &str| CoreOp {
        op: op(line),
        file: file.map(str::to_string),
        dir: dir.to_string(),
    };
    vec![
        c("create baz", Some("baz"), "."),
        c("create A/baz", Some("A/baz"), "A"),
        c("write foo append 1500", Some("foo"), "."),
        c("write foo at 0 2048", Some("foo"), "."),
        c("write A/bar at 100 3000", Some("A/bar"), "A"),
        c("write s append 200", Some("s"), "."),
        c("write foo at 20000 1000", Some("foo"), "."),
        c("truncate foo 1000", Some("foo"), "."),
        c("truncate A/bar 9000", Some("A/bar"), "A"),
        c("fallocate foo keep-size 6000 4096", Some("foo"), "."),
        c("fallocate A/bar allocate 2000 4000", Some("A/bar"), "A"),
        c("fallocate foo punch-hole 1024 2048", Some("foo"), "."),
        c("fallocate foo zero-range 500 1000", Some("foo"), "."),
        c("link foo A/l", Some("A/l"), "A"),
        c("unlink foo", None, "."),
        c("unlink A/bar", None, "A"),
        c("rename foo B/foo", Some("B/foo"), "B"),
        c("rename foo baz", Some("baz"), "."),
        c("rename foo A/bar", Some("A/bar"), "A"),
        c("rename A/bar B/bar noreplace", Some("B/bar"), "B"),
        c("rename foo A/bar exchange", Some("A/bar"), "A"),
        c("rename A B exchange", Some("A"), "."),
        c("rename B A/C", Some("A/C"), "A"),
        c("mkdir C", Some("C"), "."),
        c("mkdir A/C", Some("A/C"), "A"),
        c("rmdir B", None, "."),
        c("symlink S foo", None, "."),
        c("symlink A/S ../foo", None, "A"),
        c("setxattr foo user.a 32", Some("foo"), "."),
        c("setxattr A user.d 100", Some("A"), "."),
        c("removexattr foo user.init", Some("foo"), "."),
    ]
}

/// Whether every op of `ops` succeeds, in order, from the setup's state.
pub fn valid(setup_model: &Model, ops: &[Op]) -> bool {
    let mut m = setup_model.clone();
    ops.iter()
        .enumerate()
        .all(|(k, o)| m.apply(o, Workload::stamp(k)).is_ok())
}

/// The model after `setup`.
pub fn model_after(setup: &[Op]) -> Model {
    let mut m = Model::new();
    for (i, o) in setup.iter().enumerate() {
        m.apply(o, SETUP_STAMP + i as u64)
            .unwrap_or_else(|e| panic!("setup op {o}: {e:?}"));
    }
    m
}

/// Every ACE sequence of `len` ops (see the module docs); `inner` are the
/// persistence choices after every op but the last, `last` after the last
/// (`Persist::None` in `last` is ignored).
pub fn ace(
    setup: &[Op],
    alphabet: &[CoreOp],
    len: usize,
    inner: &[Persist],
    last: &[Persist],
) -> Vec<Workload> {
    let base = model_after(setup);
    let mut out = Vec::new();
    let mut prefix: Vec<Op> = Vec::new();
    extend(
        &base,
        setup,
        alphabet,
        len,
        inner,
        last,
        &mut prefix,
        &mut out,
    );
    out
}

#[allow(clippy::too_many_arguments)]
fn extend(
    base: &Model,
    setup: &[Op],
    alphabet: &[CoreOp],
    left: usize,
    inner: &[Persist],
    last: &[Persist],
    prefix: &mut Vec<Op>,
    out: &mut Vec<Workload>,
) {
    let is_last = left == 1;
    for core in alphabet {
        let choices = if is_last { last } else { inner };
        for &p in choices {
            if is_last && p == Persist::None {
                continue;
            }
            let Some(after) = p.after(core) else {
                continue;
            };
            let mark = prefix.len();
            prefix.push(core.op.clone());
            prefix.extend(after);
            if valid(base, prefix) {
                if is_last {
                    out.push(Workload {
                        setup: setup.to_vec(),
                        ops: prefix.clone(),
                        hold_refs: out.len() % 3 == 2,
                    });
                } else {
                    extend(base, setup, alphabet, left - 1, inner, last, prefix, out);
                }
            }
            prefix.truncate(mark);
        }
    }
}

/// `count` distinct sequences of `len` ops drawn at random (seeded), each
/// op followed by a random persistence choice (the last by a real one).
pub fn ace_sample(
    setup: &[Op],
    alphabet: &[CoreOp],
    len: usize,
    count: usize,
    seed: u64,
) -> Vec<Workload> {
    let base = model_after(setup);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<Workload> = Vec::new();
    let mut tries = 0;
    while out.len() < count && tries < count * 50 {
        tries += 1;
        let mut ops = Vec::new();
        for i in 0..len {
            let core = alphabet.choose(&mut rng).expect("alphabet");
            let choices: Vec<Persist> = Persist::ALL
                .iter()
                .copied()
                .filter(|p| !(i + 1 == len && *p == Persist::None))
                .filter(|p| p.after(core).is_some())
                .collect();
            let p = *choices.choose(&mut rng).expect("a persistence choice");
            ops.push(core.op.clone());
            ops.extend(p.after(core).flatten());
        }
        if !valid(&base, &ops) || out.iter().any(|w| w.ops == ops) {
            continue;
        }
        out.push(Workload {
            setup: setup.to_vec(),
            ops,
            hold_refs: rng.random_bool(0.3),
        });
    }
    out
}

/// Names random workloads use.
const DIRS: [&str; 4] = ["A", "B", "A/C", "D"];
const FILES: [&str; 9] = [
    "foo", "bar", "baz", "A/x", "A/y", "B/z", "A/C/w", "D/v", "s",
];

/// A seeded random workload of `len` ops on `setup` (see the module docs).
pub fn random_workload(setup: &[Op], len: usize, seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = model_after(setup);
    let mut ops = Vec::new();
    let mut guard = 0;
    while ops.len() < len && guard < len * 200 {
        guard += 1;
        let candidate = random_op(&model, &mut rng);
        let mut next = model.clone();
        if next.apply(&candidate, Workload::stamp(ops.len())).is_ok() {
            model = next;
            ops.push(candidate);
        }
    }
    Workload {
        setup: setup.to_vec(),
        ops,
        hold_refs: rng.random_bool(0.3),
    }
}

/// Existing paths of `model` of one kind.
fn existing(model: &Model, want_dir: bool) -> Vec<String> {
    let pool: Vec<&str> = if want_dir {
        DIRS.to_vec()
    } else {
        FILES.to_vec()
    };
    let mut out: Vec<String> = pool
        .iter()
        .filter(|p| {
            model
                .resolve(p)
                .is_ok_and(|id| matches!(model.inode(id).node, Node::Dir(_)) == want_dir)
        })
        .map(|p| p.to_string())
        .collect();
    if want_dir {
        out.push(".".to_string());
    }
    out
}

fn random_op(model: &Model, rng: &mut StdRng) -> Op {
    let files = existing(model, false);
    let dirs = existing(model, true);
    let any_file = |rng: &mut StdRng| FILES.choose(rng).unwrap().to_string();
    let a_file = |rng: &mut StdRng| {
        files
            .choose(rng)
            .cloned()
            .unwrap_or_else(|| "foo".to_string())
    };
    let a_dir = |rng: &mut StdRng| dirs.choose(rng).cloned().unwrap_or_default();
    let size = |rng: &mut StdRng| -> u64 {
        match rng.random_range(0..4) {
            0 => rng.random_range(1..200),
            1 => rng.random_range(1..5000),
            2 => 1024 * rng.random_range(1..8),
            _ => rng.random_range(1..24_000),
        }
    };
    match rng.random_range(0..100) {
        0..=7 => Op::Create(any_file(rng)),
        8..=22 => Op::Write {
            path: a_file(rng),
            at: WriteAt::Append,
            len: size(rng),
        },
        23..=34 => Op::Write {
            path: a_file(rng),
            at: WriteAt::Offset(size(rng).saturating_sub(100)),
            len: size(rng),
        },
        35..=39 => Op::Truncate {
            path: a_file(rng),
            size: size(rng) - 1,
        },
        40..=45 => Op::Fallocate {
            path: a_file(rng),
            mode: *[
                Falloc::Allocate,
                Falloc::KeepSize,
                Falloc::PunchHole,
                Falloc::ZeroRange,
            ]
            .choose(rng)
            .unwrap(),
            offset: size(rng) - 1,
            len: size(rng),
        },
        46..=49 => Op::Link {
            from: a_file(rng),
            to: any_file(rng),
        },
        50..=54 => Op::Unlink(a_file(rng)),
        55..=62 => Op::Rename {
            from: if rng.random_bool(0.2) {
                a_dir(rng)
            } else {
                a_file(rng)
            },
            to: if rng.random_bool(0.2) {
                DIRS.choose(rng).unwrap().to_string()
            } else {
                any_file(rng)
            },
            how: *[
                RenameHow::Plain,
                RenameHow::Plain,
                RenameHow::Exchange,
                RenameHow::NoReplace,
            ]
            .choose(rng)
            .unwrap(),
        },
        63..=66 => Op::Mkdir(DIRS.choose(rng).unwrap().to_string()),
        67..=68 => Op::Rmdir(a_dir(rng)),
        69..=70 => Op::Symlink {
            path: any_file(rng),
            target: a_file(rng),
        },
        71..=74 => Op::SetXattr {
            path: if rng.random_bool(0.3) {
                a_dir(rng)
            } else {
                a_file(rng)
            },
            name: format!("user.{}", rng.random_range(0..4)),
            len: *[8u64, 40, 300, 900].choose(rng).unwrap(),
        },
        75 => Op::RemoveXattr {
            path: a_file(rng),
            name: format!("user.{}", rng.random_range(0..4)),
        },
        76..=85 => Op::Fsync(a_file(rng)),
        86..=89 => Op::Fdatasync(a_file(rng)),
        90..=93 => Op::Fsync(a_dir(rng)),
        _ => Op::Syncfs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_op_is_valid_on_the_setup() {
        let base = model_after(&standard_setup());
        for core in core_ops() {
            assert!(valid(&base, std::slice::from_ref(&core.op)), "{}", core.op);
            for p in Persist::ALL {
                if let Some(after) = p.after(&core) {
                    let mut ops = vec![core.op.clone()];
                    ops.extend(after);
                    assert!(valid(&base, &ops), "{} then {p:?}", core.op);
                }
            }
        }
    }

    #[test]
    fn ace_enumerates_valid_sequences_once() {
        let setup = standard_setup();
        let alphabet = core_ops();
        let one = ace(&setup, &alphabet, 1, &[Persist::None], &Persist::ALL);
        let per_op: usize = alphabet
            .iter()
            .map(|c| {
                Persist::ALL[1..]
                    .iter()
                    .filter(|p| p.after(c).is_some())
                    .count()
            })
            .sum();
        assert_eq!(one.len(), per_op);
        let two = ace(
            &setup,
            &alphabet[..6],
            2,
            &[Persist::None, Persist::Fsync],
            &[Persist::Syncfs],
        );
        let mut seen = std::collections::HashSet::new();
        for w in &two {
            assert!(seen.insert(w.ops.clone()), "duplicate {}", w.summary());
            assert_eq!(w.ops.last(), Some(&Op::Syncfs));
        }
        assert!(two.len() > 30, "{}", two.len());
    }

    #[test]
    fn random_workloads_are_valid_and_seeded() {
        let setup = standard_setup();
        let base = model_after(&setup);
        for seed in 0..20 {
            let w = random_workload(&setup, 30, seed);
            assert_eq!(w.ops.len(), 30);
            assert!(valid(&base, &w.ops), "seed {seed}");
            assert_eq!(w, random_workload(&setup, 30, seed));
        }
        assert_ne!(
            random_workload(&setup, 30, 1),
            random_workload(&setup, 30, 2)
        );
    }
}
