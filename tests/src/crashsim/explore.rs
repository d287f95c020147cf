//! The explorer: many workloads, many crash states each, in parallel, with
//! counts and reproducers.
//!
//! What it promises:
//!
//! * [`explore`] records each workload (on a template built once per
//!   setup and geometry) and, for every flush epoch of the logs (those of
//!   the mount every recording starts with only if asked), checks up
//!   to `states_per_epoch` crash states: per-leg crash points cut at the
//!   epoch's end on both legs (the same instant), paired as (nothing,
//!   nothing), (everything, everything), (everything, nothing), (nothing,
//!   everything), then random pairs of each leg's own sample (each update
//!   alone, prefixes, random subsets in random orders, torn sectors), so
//!   the legs diverge. Every `recovery_every`-th state also gets a crash
//!   during its recovery (`recovery_cuts` cuts) and each of its legs
//!   mounted alone, every `writable_every`-th the new-writes check.
//! * Work is spread over threads (`KEELFS_CRASH_THREADS`, default: the
//!   machine's cores); each workload's random choices come from its own
//!   seed (`seed` and its index), so a run is reproducible whatever the
//!   thread count.
//! * The first failing state of a workload is kept as a [`Reproducer`] (and no
//!   more states of it are checked); exploration stops after
//!   `max_failures`. [`Reproducer::report`] writes one out as a file.
//!
//! Relies on: `recorder.rs`, `check.rs`, `reproducer.rs`.

use super::check::{check_state, CheckOptions, KnownBug, RecoveryCrash};
use super::recorder::{record, FsConfig, Recording, Template};
use super::reproducer::Reproducer;
use super::workload::{Op, Workload};
use keelfs_engine::device::CrashPoint;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much to explore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Crash states per flush epoch (at most; fewer when the epoch has few
    /// unflushed writes).
    pub states_per_epoch: usize,
    /// Every this-many-th state gets a crash during recovery (0: never).
    pub recovery_every: usize,
    /// Cuts of the recovery's log for such a state.
    pub recovery_cuts: usize,
    /// Every this-many-th state gets the new-writes check (0: never).
    pub writable_every: usize,
    /// Stop after this many failing workloads.
    pub max_failures: usize,
    /// Also cut the epochs of the mount that starts every recording (they
    /// are the same for every workload of a template: one workload with
    /// this set covers them).
    pub mount_epochs: bool,
}

impl Budget {
    /// What the CI tests use: 4 states per epoch, a crash during recovery
    /// for every 8th state, the new-writes check for every 4th.
    pub fn ci() -> Budget {
        Budget {
            states_per_epoch: 4,
            recovery_every: 8,
            recovery_cuts: 2,
            writable_every: 4,
            max_failures: 5,
            mount_epochs: false,
        }
    }

    /// [`Budget::ci`] with `KEELFS_CRASH_STATES` (states per epoch) applied;
    /// more states also mean more recovery crashes and new-writes checks.
    pub fn from_env() -> Budget {
        let mut b = Budget::ci();
        if let Some(n) = env_usize("KEELFS_CRASH_STATES") {
            b.states_per_epoch = n.max(1);
            if n > 4 {
                b.recovery_every = 4;
                b.recovery_cuts = 4;
                b.writable_every = 2;
            }
        }
        if let Some(n) = env_usize("KEELFS_CRASH_MAX_FAILURES") {
            b.max_failures = n.max(1);
        }
        b
    }
}

/// A number from the environment.
pub fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A seed from the environment (`KEELFS_CRASH_SEED`), or `default`.
pub fn env_seed(default: u64) -> u64 {
    std::env::var("KEELFS_CRASH_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Counts of one exploration.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub workloads: usize,
    pub epochs: usize,
    pub states: usize,
    /// Crash states checked during recovery (step 7 cuts).
    pub recovery_states: usize,
    pub writable_checks: usize,
    /// Legs mounted alone (degraded) and checked.
    pub single_legs: usize,
    /// States whose tree matched an older model state than the last op
    /// started (the op in flight, or later unsynced ops, were lost).
    pub older_than_started: usize,
    /// States showing a known bug (tolerated), by bug.
    pub known: HashMap<KnownBug, usize>,
    /// Per op word ("write", "rename", ...): workloads containing it.
    pub ops: HashMap<String, usize>,
    pub elapsed: Duration,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.workloads += o.workloads;
        self.epochs += o.epochs;
        self.states += o.states;
        self.recovery_states += o.recovery_states;
        self.writable_checks += o.writable_checks;
        self.single_legs += o.single_legs;
        self.older_than_started += o.older_than_started;
        for (k, v) in &o.known {
            *self.known.entry(*k).or_default() += v;
        }
        for (k, v) in &o.ops {
            *self.ops.entry(k.clone()).or_default() += v;
        }
    }

    /// One line for the test output.
    pub fn line(&self) -> String {
        let mut ops: Vec<(&String, &usize)> = self.ops.iter().collect();
        ops.sort();
        let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        format!(
            "{} workloads, {} flush epochs, {} crash states (+{} crashes during recovery, {} \
             new-writes checks, {} legs mounted alone; {} states older than the last op started; \
             states showing known bugs: {:?}) in {:.1?}; workloads per op: {}",
            self.workloads,
            self.epochs,
            self.states,
            self.recovery_states,
            self.writable_checks,
            self.single_legs,
            self.older_than_started,
            self.known,
            self.elapsed,
            ops.join(" ")
        )
    }
}

/// What [`explore`] found.
#[derive(Debug, Clone, Default)]
pub struct Exploration {
    pub stats: Stats,
    pub failures: Vec<Reproducer>,
}

/// A per-workload seed.
fn workload_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Templates by setup, built once.
#[derive(Default)]
struct Templates {
    built: Mutex<HashMap<Vec<Op>, Arc<Template>>>,
}

impl Templates {
    fn get(&self, config: FsConfig, setup: &[Op]) -> Result<Arc<Template>, String> {
        if let Some(t) = self.built.lock().unwrap().get(setup) {
            return Ok(t.clone());
        }
        let t = Arc::new(Template::build(config, setup)?);
        self.built.lock().unwrap().insert(setup.to_vec(), t.clone());
        Ok(t)
    }
}

/// Explores `workloads` on filesystems of geometry `config`. See the
/// module docs.
pub fn explore(
    config: FsConfig,
    workloads: &[Workload],
    budget: Budget,
    options: CheckOptions,
    seed: u64,
) -> Exploration {
    let started = Instant::now();
    let threads = env_usize("KEELFS_CRASH_THREADS")
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .clamp(1, 16);
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let templates = Templates::default();
    let results: Mutex<Vec<(usize, Stats, Option<Reproducer>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= workloads.len() || failed.load(Ordering::Relaxed) >= budget.max_failures {
                    break;
                }
                let s = workload_seed(seed, i);
                let (stats, found) = match templates.get(config, &workloads[i].setup) {
                    Ok(t) => explore_one(&t, &workloads[i], budget, options, s),
                    Err(e) => (
                        Stats::default(),
                        Some(Reproducer {
                            config,
                            options,
                            workload: workloads[i].clone(),
                            points: Vec::new(),
                            recovery_points: None,
                            fingerprint: String::new(),
                            seed: s,
                            message: format!("building the template: {e}"),
                        }),
                    ),
                };
                if found.is_some() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                results.lock().unwrap().push((i, stats, found));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut out = Exploration::default();
    for (_, stats, found) in results {
        out.stats.add(&stats);
        out.failures.extend(found);
    }
    out.stats.elapsed = started.elapsed();
    out
}

/// The op words of `w`, for the per-op counts.
fn op_words(w: &Workload) -> Vec<String> {
    let mut words: Vec<String> = w
        .ops
        .iter()
        .map(|o| {
            let s = o.to_string();
            let mut parts = s.split_whitespace();
            let first = parts.next().unwrap_or_default().to_string();
            match o {
                Op::Rename { .. } | Op::Fallocate { .. } | Op::Write { .. } => {
                    let flavour = s.split_whitespace().nth(if matches!(o, Op::Rename { .. }) {
                        3
                    } else {
                        2
                    });
                    match flavour {
                        Some(f) if f != "at" => format!("{first}-{f}"),
                        _ => first,
                    }
                }
                _ => first,
            }
        })
        .collect();
    words.sort();
    words.dedup();
    words
}

/// One workload: record it, check its crash states.
pub fn explore_one(
    template: &Template,
    workload: &Workload,
    budget: Budget,
    options: CheckOptions,
    seed: u64,
) -> (Stats, Option<Reproducer>) {
    let mut stats = Stats {
        workloads: 1,
        ..Stats::default()
    };
    for w in op_words(workload) {
        *stats.ops.entry(w).or_default() += 1;
    }
    let found =
        |rec: Option<&Recording>, points: Vec<CrashPoint>, rp, message: String| Reproducer {
            config: template.config,
            options,
            workload: workload.clone(),
            points,
            recovery_points: rp,
            fingerprint: rec.map(|r| r.fingerprint()).unwrap_or_default(),
            seed,
            message,
        };
    let rec = match record(template, workload) {
        Ok(r) => r,
        Err(e) => return (stats, Some(found(None, Vec::new(), None, e))),
    };
    let (more, failure) = explore_recording(&rec, budget, options, seed);
    stats.add(&more);
    (stats, failure)
}

/// The crash states of one recording (see the module docs).
#[allow(clippy::needless_range_loop)]
pub fn explore_recording(
    rec: &Recording,
    budget: Budget,
    options: CheckOptions,
    seed: u64,
) -> (Stats, Option<Reproducer>) {
    let mut stats = Stats::default();
    let found = |points: Vec<CrashPoint>, rp, message: String| Reproducer {
        config: rec.config,
        options,
        workload: rec.workload.clone(),
        points,
        recovery_points: rp,
        fingerprint: rec.fingerprint(),
        seed,
        message,
    };
    let ends = rec.epoch_ends();
    if ends.iter().any(|e| e.len() != ends[0].len()) {
        let counts: Vec<usize> = ends.iter().map(|e| e.len()).collect();
        let msg = format!("the legs saw different numbers of flushes: {counts:?}");
        return (stats, Some(found(Vec::new(), None, msg)));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let per_leg = budget.states_per_epoch.max(2);
    let mut counter = seed as usize % 64;
    let mounted = rec.steps[0].done;
    for e in 0..ends[0].len() {
        // Epoch e on every leg: the same instant (mirrored flushes).
        if !budget.mount_epochs && ends[0][e] < mounted {
            continue;
        }
        stats.epochs += 1;
        let mut legs = Vec::new();
        for (leg, r) in rec.recs.iter().enumerate() {
            match r.crash_points_at(ends[leg][e], &mut rng, per_leg) {
                Ok(p) => legs.push(p),
                Err(err) => {
                    let msg = format!("crash points: {err}");
                    return (stats, Some(found(Vec::new(), None, msg)));
                }
            }
        }
        for combo in combos(&legs, budget.states_per_epoch, &mut rng) {
            let points: Vec<CrashPoint> = combo
                .iter()
                .enumerate()
                .map(|(leg, &i)| legs[leg][i].clone())
                .collect();
            counter += 1;
            let recovery = if budget.recovery_every > 0 && counter % budget.recovery_every == 0 {
                RecoveryCrash::Sample(budget.recovery_cuts)
            } else {
                RecoveryCrash::None
            };
            let writable = options.writable
                && budget.writable_every > 0
                && counter % budget.writable_every == 0;
            let single_legs = options.single_legs && matches!(recovery, RecoveryCrash::Sample(_));
            let opts = CheckOptions {
                writable,
                single_legs,
                ..options
            };
            stats.states += 1;
            match check_state(rec, &points, &opts, &recovery, &mut rng) {
                Ok(p) => {
                    stats.recovery_states += p.recovery_cuts;
                    stats.single_legs += p.single_legs;
                    stats.writable_checks += usize::from(writable && p.known.is_none());
                    stats.older_than_started += usize::from(p.state < p.started);
                    if let Some(bug) = p.known {
                        *stats.known.entry(bug).or_default() += 1;
                    }
                }
                Err(f) => {
                    let mut fd = found(points, f.recovery_points, f.message);
                    fd.options = opts;
                    return (stats, Some(fd));
                }
            }
        }
    }
    (stats, None)
}

/// Which per-leg points to pair, at most `max` pairs (see the module docs).
fn combos(legs: &[Vec<CrashPoint>], max: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let n = legs.len();
    let mut out: Vec<Vec<usize>> = Vec::new();
    let offer = |out: &mut Vec<Vec<usize>>, c: Vec<usize>| {
        let c: Vec<usize> = c
            .iter()
            .enumerate()
            .map(|(leg, &i)| i.min(legs[leg].len() - 1))
            .collect();
        if out.len() < max && !out.contains(&c) {
            out.push(c);
        }
    };
    offer(&mut out, vec![0; n]);
    offer(&mut out, vec![1; n]);
    for leg in 0..n {
        let mut c = vec![1; n];
        c[leg] = 0;
        offer(&mut out, c);
    }
    for leg in 0..n {
        let mut c = vec![0; n];
        c[leg] = 1;
        offer(&mut out, c);
    }
    let total: usize = legs.iter().map(|l| l.len()).product();
    let mut tries = 0;
    while out.len() < max.min(total) && tries < max * 8 {
        tries += 1;
        let c = legs.iter().map(|l| rng.random_range(0..l.len())).collect();
        offer(&mut out, c);
    }
    out
}

/// The check options of the exploring tests: everything, with known bugs
/// tolerated (counted) unless `KEELFS_CRASH_STRICT=1`.
pub fn test_options() -> CheckOptions {
    let strict = std::env::var("KEELFS_CRASH_STRICT").is_ok_and(|v| v.trim() == "1");
    CheckOptions {
        tolerate_known_bugs: !strict,
        ..CheckOptions::default()
    }
}

/// Explores `workloads` as a test does: prints the counts, writes a
/// reproducer for every failure and panics listing them. Returns the
/// counts.
pub fn explore_or_fail(
    test: &str,
    config: FsConfig,
    workloads: &[Workload],
    budget: Budget,
    seed: u64,
) -> Stats {
    let e = explore(config, workloads, budget, test_options(), seed);
    println!("{test} ({}): {}", config.to_text(), e.stats.line());
    if !e.failures.is_empty() {
        let msgs: Vec<String> = e.failures.iter().map(|f| f.report(test)).collect();
        panic!(
            "{test}: {} failing workloads (seed {seed}):\n{}",
            e.failures.len(),
            msgs.join("\n")
        );
    }
    e.stats
}
