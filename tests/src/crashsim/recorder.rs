//! The recorder: runs a workload on a fresh small filesystem whose legs
//! are [`RecordingDevice`]s, and keeps what the oracle needs to judge any
//! crash cut of the logs.
//!
//! What it promises:
//!
//! * [`Template::build`] formats the legs (memory devices, the
//!   [`FsConfig`] geometry, a fixed filesystem uuid), mounts them, runs the
//!   workload's setup ops, unmounts cleanly and keeps the leg images: every
//!   recording of the same setup starts from these bytes.
//! * [`record`] copies the template into new memory legs, puts a
//!   `RecordingDevice` over each, mounts (recorded too: a crash during the
//!   mount is a crash point like any other), runs every op, and unmounts
//!   cleanly (also recorded, as the last step). Before and after every
//!   step it adds a mark on every leg, at the same instant (the driver is
//!   single-threaded), and keeps leg 0's log index of each.
//! * It keeps the model state after every op (`states[k + 1]` after op
//!   `k`, `states[0]` the template's), each op's effects, and the inode
//!   number the filesystem gave each model identity.
//! * An op whose outcome differs from the model's (it fails where the
//!   model succeeds or the other way round) ends the recording with an
//!   error naming it: that is a functional bug, not a crash bug.
//!
//! Relies on: `driver.rs` to run ops, `model.rs` for the expected states,
//! the engine's `RecordingDevice` and `MemDevice`, `keelfs_fs::mkfs`.

use super::driver::Driver;
use super::model::{Effects, Id, Model, LOST_FOUND, ROOT};
use super::workload::{Op, Workload, SETUP_STAMP};
use keelfs_engine::device::{DeviceRef, MemDevice, RecordedOp, RecordingDevice};
use keelfs_fs::core::{Fs, MountParams};
use keelfs_fs::format::superblock::{LOST_FOUND_INODE, ROOT_INODE};
use keelfs_fs::format::InodeSpec;
use keelfs_fs::mkfs::{format, MkfsOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The geometry of the filesystems the tests make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FsConfig {
    pub block_size: u32,
    /// Bytes per leg.
    pub leg_bytes: u64,
    /// Journal ring blocks.
    pub journal_blocks: u64,
    pub inodes: u64,
    pub legs: usize,
}

impl FsConfig {
    /// 1 KiB blocks, 1 MiB legs, a 96-block journal, 128 inodes, 2 legs.
    pub fn small() -> FsConfig {
        FsConfig {
            block_size: 1024,
            leg_bytes: 1 << 20,
            journal_blocks: 96,
            inodes: 128,
            legs: 2,
        }
    }

    /// 4 KiB blocks, 2 MiB legs, a 64-block journal, 128 inodes, 2 legs.
    pub fn small_4k() -> FsConfig {
        FsConfig {
            block_size: 4096,
            leg_bytes: 2 << 20,
            journal_blocks: 64,
            inodes: 128,
            legs: 2,
        }
    }

    /// The text form used in reproducers: `bs=1024 leg=1048576 journal=96
    /// inodes=128 legs=2`.
    pub fn to_text(&self) -> String {
        format!(
            "bs={} leg={} journal={} inodes={} legs={}",
            self.block_size, self.leg_bytes, self.journal_blocks, self.inodes, self.legs
        )
    }

    /// Parses [`FsConfig::to_text`]'s form.
    pub fn parse(s: &str) -> Result<FsConfig, String> {
        let mut c = FsConfig::small();
        for field in s.split_whitespace() {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("{field:?}: expected key=value"))?;
            let n: u64 = v.parse().map_err(|e| format!("{field:?}: {e}"))?;
            match k {
                "bs" => c.block_size = n as u32,
                "leg" => c.leg_bytes = n,
                "journal" => c.journal_blocks = n,
                "inodes" => c.inodes = n,
                "legs" => c.legs = n as usize,
                _ => return Err(format!("{field:?}: unknown key")),
            }
        }
        Ok(c)
    }

    fn mkfs_options(&self) -> MkfsOptions {
        MkfsOptions {
            block_size: self.block_size,
            inodes: InodeSpec::Count(self.inodes),
            journal_blocks: Some(self.journal_blocks),
            label: "crashsim".to_string(),
            fs_uuid: Some(*b"keelfs-crashsim!"),
            dry_run: false,
        }
    }
}

/// How the tests mount: no background writeback (determinism), a small
/// cache (so writeback happens during the workloads, not only at sync).
pub fn mount_params(config: &FsConfig) -> MountParams {
    MountParams {
        background_writeback: false,
        cache_bytes: 96 * u64::from(config.block_size),
        inode_cache_entries: 64,
        ..MountParams::default()
    }
}

/// Memory legs holding `images`.
pub fn mem_legs(images: &[Vec<u8>], tag: &str) -> Vec<Arc<MemDevice>> {
    images
        .iter()
        .enumerate()
        .map(|(i, img)| Arc::new(MemDevice::from_image(format!("{tag}{i}"), img.clone())))
        .collect()
}

/// The legs as devices.
pub fn devices<D: keelfs_engine::device::Device + 'static>(legs: &[Arc<D>]) -> Vec<DeviceRef> {
    legs.iter().map(|l| l.clone() as DeviceRef).collect()
}

/// A formatted filesystem after a workload's setup, cleanly unmounted.
#[derive(Debug, Clone)]
pub struct Template {
    pub config: FsConfig,
    pub setup: Vec<Op>,
    pub images: Vec<Vec<u8>>,
    pub model: Model,
    pub inos: BTreeMap<Id, u64>,
}

impl Template {
    /// Formats, mounts, runs `setup`, unmounts. See the module docs.
    pub fn build(config: FsConfig, setup: &[Op]) -> Result<Template, String> {
        let legs: Vec<Arc<MemDevice>> = (0..config.legs)
            .map(|i| Arc::new(MemDevice::new(format!("template{i}"), config.leg_bytes)))
            .collect();
        let devs = devices(&legs);
        format(&devs, &config.mkfs_options()).map_err(|e| format!("mkfs: {e}"))?;
        let fs = Fs::mount(devs, &mount_params(&config)).map_err(|e| format!("mount: {e}"))?;
        let mut model = Model::new();
        let mut inos = BTreeMap::from([(ROOT, ROOT_INODE), (LOST_FOUND, LOST_FOUND_INODE)]);
        {
            let mut driver = Driver::new(&fs, false);
            for (i, op) in setup.iter().enumerate() {
                let stamp = SETUP_STAMP + i as u64;
                let fx = model
                    .apply(op, stamp)
                    .map_err(|e| format!("setup op {op}: the model says {e:?}"))?;
                let created = driver
                    .run(op, stamp)
                    .map_err(|e| format!("setup op {op}: {e}"))?;
                if let (Some(id), Some(ino)) = (fx.created, created) {
                    inos.insert(id, ino);
                }
            }
        }
        fs.unmount()
            .map_err(|e| format!("unmount after setup: {e}"))?;
        Ok(Template {
            config,
            setup: setup.to_vec(),
            images: legs.iter().map(|l| l.snapshot()).collect(),
            model,
            inos,
        })
    }
}

/// What a step of the recording is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// The mount the recording starts with.
    Mount,
    /// Op `k` of the workload.
    Op(usize),
    /// The clean unmount it ends with.
    Unmount,
}

/// Leg 0's log indices of the marks around one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: StepKind,
    /// The mark just before the step started.
    pub start: usize,
    /// The mark just after it returned.
    pub done: usize,
}

/// A recorded run of a workload. See the module docs.
pub struct Recording {
    pub config: FsConfig,
    pub workload: Workload,
    pub recs: Vec<Arc<RecordingDevice>>,
    /// Each leg's log.
    pub logs: Vec<Vec<RecordedOp>>,
    pub steps: Vec<Step>,
    /// `states[0]`: after setup; `states[k + 1]`: after op `k`.
    pub states: Vec<Model>,
    /// `effects[k]`: what op `k` changed.
    pub effects: Vec<Effects>,
    /// The inode number of every model identity ever created.
    pub inos: BTreeMap<Id, u64>,
}

/// Marks every leg at once; returns leg 0's index.
fn mark_all(recs: &[Arc<RecordingDevice>], name: &str) -> usize {
    let mut first = 0;
    for (i, r) in recs.iter().enumerate() {
        let at = r.mark(name);
        if i == 0 {
            first = at;
        }
    }
    first
}

/// Records `workload` on a copy of `template`. See the module docs.
pub fn record(template: &Template, workload: &Workload) -> Result<Recording, String> {
    record_through(template, workload, &|r| r as DeviceRef)
}

/// As [`record`], with the filesystem reaching each recording leg through
/// `wrap` (the harness's own tests put a device that lies about flushes
/// there, to see the checks fail).
pub fn record_through(
    template: &Template,
    workload: &Workload,
    wrap: &dyn Fn(Arc<RecordingDevice>) -> DeviceRef,
) -> Result<Recording, String> {
    let config = template.config;
    let mems = mem_legs(&template.images, "leg");
    let recs: Vec<Arc<RecordingDevice>> = mems
        .iter()
        .map(|m| {
            RecordingDevice::new(m.clone() as DeviceRef)
                .map(Arc::new)
                .map_err(|e| format!("recording device: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut steps = Vec::new();
    let start = mark_all(&recs, "mount start");
    let legs: Vec<DeviceRef> = recs.iter().map(|r| wrap(r.clone())).collect();
    let fs = Fs::mount(legs, &mount_params(&config)).map_err(|e| format!("mount: {e}"))?;
    steps.push(Step {
        kind: StepKind::Mount,
        start,
        done: mark_all(&recs, "mount done"),
    });
    let mut model = template.model.clone();
    let mut states = vec![model.clone()];
    let mut effects = Vec::new();
    let mut inos = template.inos.clone();
    {
        let mut driver = Driver::new(&fs, workload.hold_refs);
        for (k, op) in workload.ops.iter().enumerate() {
            let stamp = Workload::stamp(k);
            let start = mark_all(&recs, &format!("op {k} start"));
            let expected = model.apply(op, stamp);
            let got = driver.run(op, stamp);
            let done = mark_all(&recs, &format!("op {k} done"));
            steps.push(Step {
                kind: StepKind::Op(k),
                start,
                done,
            });
            match (expected, got) {
                (Ok(fx), Ok(created)) => {
                    if let (Some(id), Some(ino)) = (fx.created, created) {
                        inos.insert(id, ino);
                    }
                    effects.push(fx);
                }
                (Err(e), Err(_)) => {
                    // Failed as the model says: nothing changed.
                    let _ = e;
                    effects.push(Effects::default());
                }
                (Ok(_), Err(e)) => {
                    return Err(format!(
                        "op {k} ({op}) failed: {e} (the model says it succeeds)"
                    ))
                }
                (Err(e), Ok(_)) => {
                    return Err(format!(
                        "op {k} ({op}) succeeded but the model says it fails ({e:?})"
                    ))
                }
            }
            states.push(model.clone());
        }
        driver
            .forget_all()
            .map_err(|e| format!("forget at the end: {e}"))?;
    }
    let start = mark_all(&recs, "unmount start");
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    steps.push(Step {
        kind: StepKind::Unmount,
        start,
        done: mark_all(&recs, "unmount done"),
    });
    let logs = recs.iter().map(|r| r.ops()).collect();
    Ok(Recording {
        config,
        workload: workload.clone(),
        recs,
        logs,
        steps,
        states,
        effects,
        inos,
    })
}

impl Recording {
    /// Each leg's flush epoch ends (its flushes' log indices, then the log
    /// length): the cuts crash points are taken at.
    pub fn epoch_ends(&self) -> Vec<Vec<usize>> {
        self.logs
            .iter()
            .map(|ops| {
                let mut ends: Vec<usize> = (0..ops.len())
                    .filter(|&i| ops[i] == RecordedOp::Flush)
                    .collect();
                ends.push(ops.len());
                ends
            })
            .collect()
    }

    /// A short fingerprint of the logs (op kinds, offsets and lengths, not
    /// the bytes, which hold timestamps): a replay checks it got the same
    /// log.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |x: u64| {
            h ^= x;
            h = h.wrapping_mul(0x0100_0000_01b3);
        };
        for log in &self.logs {
            for op in log {
                match op {
                    RecordedOp::Write { offset, data } => {
                        eat(1);
                        eat(*offset);
                        eat(data.len() as u64);
                    }
                    RecordedOp::Discard { offset, len } => {
                        eat(2);
                        eat(*offset);
                        eat(*len);
                    }
                    RecordedOp::Flush => eat(3),
                    RecordedOp::Mark(_) => eat(4),
                }
            }
            eat(5);
        }
        let lens: Vec<String> = self.logs.iter().map(|l| l.len().to_string()).collect();
        format!("{:016x} ops={}", h, lens.join(","))
    }
}
