//! Crash consistency of the journal, on the engine alone (DESIGN.md
//! invariant 2, after dm-log-writes and CrashMonkey).
//!
//! A seeded workload runs on a two-leg mirror set whose legs are recording
//! devices: transactions that write recognisable patterns into metadata
//! blocks (block b in transaction s holds bytes derived from (b, s)), free
//! blocks (revokes) and reuse them as raw data, and overwrite data blocks
//! in place with logged intents; `commit()` returns, intents and handle
//! starts are marked in every leg's log. Then, for every flush epoch and a
//! sample of what each leg may have kept of its unflushed writes (any
//! subset, any order, torn sectors; each leg independently), the legs are
//! materialised, recovered, and checked:
//!
//! * atomicity: every metadata block is exactly as the last replayed
//!   transaction X left it (all of X's blocks, nothing of any later one);
//! * durability: X is at least the last transaction whose `commit()`
//!   returned before the cut, and at most the one running at the cut;
//! * data intents: every overwritten data block reads back, on every leg,
//!   with the tag the tag table holds (no checksum error), holding its
//!   committed version or a later one written before the cut (or, if
//!   recovery reports it torn on every leg, whatever it holds, re-tagged);
//! * the legs agree on every block checked;
//! * recovering again finds nothing and changes nothing (every 7th state);
//! * cutting the power during recovery and recovering again gives the same
//!   result (every 11th state, at a few points of recovery's own log).
//!
//! A failing state prints its per-leg crash points (`leg0: n=.. keep=[..]
//! torn={..} | leg1: ..`) as a reproducer. `KEELFS_CRASH_STATES` sets the
//! states explored per flush epoch (default 12); `KEELFS_CRASH_SEED` the
//! workload seed.

mod journal_support;

use journal_support::*;
use keelfs_engine::device::{
    CrashPoint, Device, DeviceRef, MemDevice, RecordedOp, RecordingDevice,
};
use keelfs_engine::integrity::{Tag, Volume};
use keelfs_fs::format::Layout;
use keelfs_fs::journal::{recover, RecoveryReport};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

const LEGS: usize = 2;
const META_BLOCKS: u64 = 24;
const DATA_BLOCKS: u64 = 8;
const STEPS: usize = 90;

/// What a metadata block must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    /// Never written: zero on every leg.
    Unwritten,
    /// Sealed, generation `gen`, the pattern of `key`.
    Pattern { gen: u64, key: u64 },
    /// Freed: anything.
    Free,
    /// Reused as data: exactly these bytes.
    Raw { key: u64 },
}

/// One version of a data block.
#[derive(Debug, Clone, Copy)]
struct Version {
    /// The transaction that wrote it (0: before recording).
    seq: u64,
    key: u64,
    tag: Tag,
    /// Leg-0 log index of the mark after its intent was durable.
    intent_mark: usize,
}

#[derive(Default)]
struct Model {
    /// Changes of metadata blocks by transaction: seq -> (index, state).
    changes: BTreeMap<u64, Vec<(usize, Meta)>>,
    /// Versions of each data block, oldest first.
    versions: Vec<Vec<Version>>,
    /// (leg-0 log index of the mark after `commit()` returned, committed seq).
    commits: Vec<(usize, u64)>,
    /// (leg-0 log index of the mark after `start()` returned, its seq).
    starts: Vec<(usize, u64)>,
}

impl Model {
    fn meta_after(&self, x: u64) -> Vec<Meta> {
        let mut state = vec![Meta::Unwritten; META_BLOCKS as usize];
        for (_, changes) in self.changes.range(..=x) {
            for &(i, m) in changes {
                state[i] = m;
            }
        }
        state
    }
}

struct Setup {
    layout: Layout,
    meta: Vec<u64>,
    data: Vec<u64>,
}

fn setup() -> Setup {
    let layout = layout(256, 1024, 64);
    let meta: Vec<u64> = (0..META_BLOCKS).map(|i| layout.data.start + i).collect();
    let data: Vec<u64> = (0..DATA_BLOCKS)
        .map(|i| layout.data.start + META_BLOCKS + i)
        .collect();
    Setup { layout, meta, data }
}

/// Format, give every data block a first version (committed and
/// checkpointed), then run the recorded workload.
fn run_workload(s: &Setup, seed: u64) -> (Rig, Model) {
    let l = s.layout;
    let mems = mem_legs(&l, LEGS);
    format(&mems, &l, &[]);
    let mut model = Model::default();
    {
        let rig = Rig::open(l, mems.clone(), false, 64, quiet());
        let tx = rig.journal.start().unwrap();
        for &d in &s.data {
            let bytes = data_bytes(d, 0, l.block_size as usize);
            let (tags, _) = rig.volume.write_data(d, tx.data_gen(), &bytes).unwrap();
            store_tag(&rig.cache, &l, &tx, d, tags[0]);
            model.versions.push(vec![Version {
                seq: 0,
                key: 0,
                tag: tags[0],
                intent_mark: 0,
            }]);
        }
        drop(tx);
        rig.journal.shutdown().unwrap();
    }

    let rig = Rig::open(l, mems, true, 12, quiet());
    let mut rng = Rng::new(seed);
    let mut state = vec![Meta::Unwritten; META_BLOCKS as usize];
    // Seq at which each freed block was freed.
    let mut freed_in: Vec<u64> = vec![0; META_BLOCKS as usize];
    let mut key = 100u64;
    for step in 0..STEPS {
        // Second half: rare commits, no explicit checkpoints, a hot block:
        // `start` commits large transactions and checkpoints when the ring
        // runs short.
        let calm = step < STEPS / 2;
        let tx = rig.journal.start().unwrap();
        let seq = tx.seq();
        model.starts.push((rig.mark(&format!("start {seq}")), seq));
        let committed = rig.journal.committed_seq();
        let mut touched = Vec::new();
        let record = |model: &mut Model, i: usize, m: Meta| {
            model.changes.entry(seq).or_default().push((i, m));
        };
        // Metadata writes (at least one per handle: every transaction has
        // a record).
        for _ in 0..1 + rng.below(3) {
            let i = if !calm && rng.chance(1, 2) {
                0
            } else {
                rng.below(META_BLOCKS) as usize
            };
            let reusable = match state[i] {
                Meta::Free | Meta::Raw { .. } => freed_in[i] <= committed,
                _ => true,
            };
            if !reusable {
                continue;
            }
            let fresh = matches!(state[i], Meta::Free | Meta::Raw { .. });
            key += 1;
            write_pattern(&rig.cache, &tx, s.meta[i], key, fresh);
            state[i] = Meta::Pattern { gen: seq, key };
            record(&mut model, i, state[i]);
            touched.push(i);
        }
        if touched.is_empty() {
            let i = (0..META_BLOCKS as usize)
                .find(|&i| matches!(state[i], Meta::Unwritten | Meta::Pattern { .. }))
                .unwrap();
            key += 1;
            write_pattern(&rig.cache, &tx, s.meta[i], key, false);
            state[i] = Meta::Pattern { gen: seq, key };
            record(&mut model, i, state[i]);
            touched.push(i);
        }
        // Free a block.
        if rng.chance(1, 3) {
            let i = rng.below(META_BLOCKS) as usize;
            if matches!(state[i], Meta::Pattern { .. }) && !touched.contains(&i) {
                tx.revoke(s.meta[i]);
                state[i] = Meta::Free;
                freed_in[i] = seq;
                record(&mut model, i, Meta::Free);
            }
        }
        // Reuse a block freed by a committed transaction as file data.
        let reusable: Vec<usize> = (0..META_BLOCKS as usize)
            .filter(|&i| state[i] == Meta::Free && freed_in[i] <= committed)
            .filter(|i| !touched.contains(i))
            .collect();
        if !reusable.is_empty() && rng.chance(2, 3) {
            let i = reusable[rng.below(reusable.len() as u64) as usize];
            assert!(!rig.cache.is_cached(s.meta[i]), "freed block still cached");
            key += 1;
            let bytes = data_bytes(s.meta[i], key, l.block_size as usize);
            rig.volume.set().write_sync(s.meta[i], &bytes).unwrap();
            state[i] = Meta::Raw { key };
            record(&mut model, i, state[i]);
        }
        // Overwrite data blocks in place, with intents.
        if rng.chance(1, 2) {
            let mut picks: Vec<usize> = (0..1 + rng.below(2))
                .map(|_| rng.below(DATA_BLOCKS) as usize)
                .collect();
            picks.sort_unstable();
            picks.dedup();
            let mut intents = Vec::new();
            let mut writes = Vec::new();
            for &i in &picks {
                key += 1;
                let d = s.data[i];
                let bytes = data_bytes(d, key, l.block_size as usize);
                let old = model.versions[i].last().unwrap().tag;
                let new = Tag::compute(d, tx.data_gen(), &bytes);
                intents.push((d, old, new));
                writes.push((i, d, bytes, new, key));
            }
            tx.log_intents(&intents).unwrap();
            let mark = rig.mark(&format!("intents {seq}"));
            for (i, d, bytes, new, key) in writes {
                rig.volume.write_data_tagged(d, &bytes, &[new]).unwrap();
                store_tag(&rig.cache, &l, &tx, d, new);
                model.versions[i].push(Version {
                    seq,
                    key,
                    tag: new,
                    intent_mark: mark,
                });
            }
        }
        drop(tx);
        if rng.chance(1, if calm { 3 } else { 12 }) {
            rig.journal.commit().unwrap();
            let c = rig.journal.committed_seq();
            model.commits.push((rig.mark(&format!("committed {c}")), c));
        }
        if calm && rng.chance(1, 8) {
            rig.journal.checkpoint().unwrap();
        }
    }
    rig.journal.commit().unwrap();
    let c = rig.journal.committed_seq();
    model.commits.push((rig.mark(&format!("committed {c}")), c));
    (rig, model)
}

/// Check the recovered legs of `vol` against the model, for a crash cut
/// at leg-0 log index `n0`.
fn verify(
    s: &Setup,
    model: &Model,
    vol: &Volume,
    report: &RecoveryReport,
    n0: usize,
) -> Result<(), String> {
    let l = s.layout;
    // The state recovered: the last transaction replayed, or else the last
    // one before the journal superblock's tail (already home).
    let x = report.last_transaction.unwrap_or_else(|| {
        model
            .changes
            .range(..report.oldest_sequence)
            .next_back()
            .map_or(0, |(&seq, _)| seq)
    });
    let durable = model
        .commits
        .iter()
        .filter(|(at, _)| *at < n0)
        .map(|(_, c)| *c)
        .max()
        .unwrap_or(0);
    if x < durable {
        return Err(format!(
            "transaction {durable} was committed (commit() returned) but recovery stopped at {x}"
        ));
    }
    let running = model
        .starts
        .iter()
        .filter(|(at, _)| *at < n0)
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(0);
    if x > running {
        return Err(format!(
            "recovery replayed transaction {x}, which had not started at the cut ({running})"
        ));
    }
    let expect = model.meta_after(x);
    for (i, &b) in s.meta.iter().enumerate() {
        let copies: Vec<Vec<u8>> = (0..LEGS).map(|leg| leg_block(vol, leg, b)).collect();
        for (leg, buf) in copies.iter().enumerate() {
            let ok = match expect[i] {
                Meta::Unwritten => buf.iter().all(|&c| c == 0),
                Meta::Pattern { gen, key } => is_pattern(buf, b, gen, key),
                Meta::Free => true,
                Meta::Raw { key } => *buf == data_bytes(b, key, buf.len()),
            };
            if !ok {
                return Err(format!(
                    "metadata block {b} on leg {leg}: expected {:?} as of transaction {x}",
                    expect[i]
                ));
            }
        }
        if expect[i] != Meta::Free && copies.iter().any(|c| *c != copies[0]) {
            return Err(format!("metadata block {b}: legs disagree"));
        }
    }
    for (i, &d) in s.data.iter().enumerate() {
        let tag = disk_tag(vol, &l, d).ok_or(format!("data block {d}: tag table unwritten"))?;
        let copies: Vec<Vec<u8>> = (0..LEGS).map(|leg| leg_block(vol, leg, d)).collect();
        if copies.iter().any(|c| *c != copies[0]) {
            return Err(format!("data block {d}: legs disagree"));
        }
        for leg in 0..LEGS {
            let bad = vol.verify_leg_data(leg, d, &[tag]).unwrap();
            if !bad.is_empty() {
                return Err(format!(
                    "data block {d} on leg {leg} fails its tag: {}",
                    bad[0].problem
                ));
            }
        }
        if report.intents.torn.contains(&d) {
            continue;
        }
        let versions = &model.versions[i];
        let base = versions.iter().rev().find(|v| v.seq <= x).unwrap();
        let allowed: Vec<&Version> = std::iter::once(base)
            .chain(versions.iter().filter(|v| v.seq > x && v.intent_mark < n0))
            .collect();
        match allowed
            .iter()
            .find(|v| copies[0] == data_bytes(d, v.key, copies[0].len()))
        {
            Some(v) if v.tag == tag => {}
            Some(v) => {
                return Err(format!(
                    "data block {d} holds version {} but the tag table a different tag",
                    v.key
                ))
            }
            None => {
                return Err(format!(
                    "data block {d} holds none of versions {:?} (transaction {x})",
                    allowed.iter().map(|v| v.key).collect::<Vec<_>>()
                ))
            }
        }
    }
    Ok(())
}

fn devices(mems: &[Arc<MemDevice>]) -> Vec<DeviceRef> {
    mems.iter().map(|m| m.clone() as DeviceRef).collect()
}

fn images(mems: &[Arc<MemDevice>]) -> Vec<Vec<u8>> {
    mems.iter().map(|m| m.snapshot()).collect()
}

/// Recover a copy of `mems` while recording, cut the power at a few points
/// of recovery's own log, recover again and compare with `expected` (the
/// legs after an uninterrupted recovery).
fn crash_during_recovery(
    s: &Setup,
    mems: &[Arc<MemDevice>],
    expected: &[Vec<u8>],
    first: &RecoveryReport,
    rng: &mut Rng,
) -> Result<usize, String> {
    let l = s.layout;
    let copies: Vec<Arc<MemDevice>> = mems
        .iter()
        .map(|m| Arc::new(MemDevice::from_image(m.name(), m.snapshot())))
        .collect();
    let recs: Vec<Arc<RecordingDevice>> = copies
        .iter()
        .map(|m| Arc::new(RecordingDevice::new(m.clone()).unwrap()))
        .collect();
    let vol = volume(
        recs.iter().map(|r| r.clone() as DeviceRef).collect(),
        l.block_size,
    );
    recover(&vol, &l).map_err(|e| format!("recording recovery: {e}"))?;
    let ops: Vec<Vec<RecordedOp>> = recs.iter().map(|r| r.ops()).collect();
    let ends: Vec<Vec<usize>> = ops.iter().map(|o| epoch_ends(o)).collect();
    let mut tried = 0;
    for e in 0..ends[0].len() {
        let cuts: Vec<usize> = ends.iter().map(|leg| leg[e]).collect();
        let per_leg: Vec<Vec<CrashPoint>> = (0..LEGS)
            .map(|leg| leg_points(&recs[leg], &ops[leg], cuts[leg], rng, 3))
            .collect();
        for k in 0..3 {
            let points: Vec<CrashPoint> = per_leg
                .iter()
                .map(|p| p[(k + rng.below(2) as usize) % p.len()].clone())
                .collect();
            let legs = materialise(&recs, &points);
            let vol = volume(devices(&legs), l.block_size);
            let again = recover(&vol, &l).map_err(|e| {
                format!(
                    "recovery after a crash during recovery ({}): {e}",
                    reproducer(&points)
                )
            })?;
            tried += 1;
            let now = images(&legs);
            let differs = (0..LEGS).find(|&leg| !same_outside_ring(&l, &now[leg], &expected[leg]));
            if let Some(leg) = differs {
                return Err(format!(
                    "a crash during recovery ({}) changed the result on leg {leg} \
                     (first recovery {first:?}, second {again:?})",
                    reproducer(&points)
                ));
            }
        }
    }
    Ok(tried)
}

/// Whether two leg images agree on every block but the ring and the
/// journal superblock (where recovery's own records and tail may differ).
fn same_outside_ring(l: &Layout, a: &[u8], b: &[u8]) -> bool {
    let bs = l.block_size as usize;
    let from = l.journal.end() as usize * bs;
    a[from..] == b[from..] && a[..bs] == b[..bs]
}

#[test]
fn every_crash_state_recovers_to_a_committed_prefix() {
    let s = setup();
    let seed = std::env::var("KEELFS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6b65_656c);
    let started = Instant::now();
    let (rig, model) = run_workload(&s, seed);
    let workload_time = started.elapsed();
    let stats = rig.journal.stats();
    let recs = rig.recs.clone();
    let ops: Vec<Vec<RecordedOp>> = recs.iter().map(|r| r.ops()).collect();
    let ends: Vec<Vec<usize>> = ops.iter().map(|o| epoch_ends(o)).collect();
    assert!(
        ends.iter().all(|e| e.len() == ends[0].len()),
        "legs saw different flushes"
    );
    let per_epoch = states_per_epoch(12);
    let mut rng = Rng::new(seed ^ 0xc0ff_ee00);
    let mut states = 0usize;
    let mut replayed_max = 0u64;
    let mut torn_seen = 0usize;
    let mut repaired_seen = 0u64;
    let mut during_recovery = 0usize;
    let mut failures = Vec::new();
    for e in 0..ends[0].len() {
        let cuts: Vec<usize> = ends.iter().map(|leg| leg[e]).collect();
        let per_leg: Vec<Vec<CrashPoint>> = (0..LEGS)
            .map(|leg| leg_points(&recs[leg], &ops[leg], cuts[leg], &mut rng, per_epoch))
            .collect();
        let mut combos: Vec<[usize; 2]> = vec![[0, 0], [1, 1], [1, 0], [0, 1]];
        while combos.len() < per_epoch {
            combos.push([
                rng.below(per_leg[0].len() as u64) as usize,
                rng.below(per_leg[1].len() as u64) as usize,
            ]);
        }
        combos.sort_unstable();
        combos.dedup();
        for combo in combos {
            let points: Vec<CrashPoint> = (0..LEGS)
                .map(|leg| per_leg[leg][combo[leg] % per_leg[leg].len()].clone())
                .collect();
            states += 1;
            let legs = materialise(&recs, &points);
            let vol = volume(devices(&legs), s.layout.block_size);
            let outcome = recover(&vol, &s.layout)
                .map_err(|e| format!("recovery failed: {e}"))
                .and_then(|report| {
                    verify(&s, &model, &vol, &report, points[0].n)?;
                    Ok(report)
                });
            let report = match outcome {
                Ok(r) => r,
                Err(why) => {
                    failures.push(format!("{why}\n    reproducer: {}", reproducer(&points)));
                    if failures.len() >= 5 {
                        break;
                    }
                    continue;
                }
            };
            replayed_max = replayed_max.max(report.transactions_replayed);
            torn_seen += report.intents.torn.len();
            repaired_seen += report.intents.legs_repaired;
            let after = images(&legs);
            if states % 7 == 0 {
                let again = recover(&vol, &s.layout).unwrap();
                if again.found_records() || images(&legs) != after {
                    failures.push(format!(
                        "recovering twice changed something ({again:?})\n    reproducer: {}",
                        reproducer(&points)
                    ));
                }
            }
            if states % 11 == 0 && report.found_records() {
                let again_legs = materialise(&recs, &points);
                match crash_during_recovery(&s, &again_legs, &after, &report, &mut rng) {
                    Ok(n) => during_recovery += n,
                    Err(why) => {
                        failures.push(format!("{why}\n    reproducer: {}", reproducer(&points)))
                    }
                }
            }
        }
        if failures.len() >= 5 {
            break;
        }
    }
    let took = started.elapsed();
    println!(
        "journal crash test: workload of {STEPS} handles ({} commits, {} intent records, {} \
         checkpoints, {} forced commits) in {workload_time:?}; {} flush epochs; {states} crash \
         states + {during_recovery} crashes during recovery explored in {took:?}; up to \
         {replayed_max} transactions replayed, {torn_seen} torn data blocks, {repaired_seen} \
         data legs repaired",
        stats.commits,
        stats.intent_records,
        stats.checkpoints,
        stats.forced_commits,
        ends[0].len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(states >= 1000, "only {states} crash states");
    // The ring went round several times (every checkpoint here emptied a
    // window of 40+ blocks of the 64).
    assert!(stats.intent_records > 10 && stats.checkpoints >= 5);
}
