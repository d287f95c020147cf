//! Reproducers: one failing crash state as a small text file, and its
//! replay.
//!
//! What it promises:
//!
//! * [`Reproducer::to_text`] writes everything needed to rebuild the state
//!   and [`Reproducer::parse`] reads it back: the geometry, the check
//!   options, the seed, the workload (setup and ops), each leg's crash
//!   point and, for a failure during a crash in recovery, the recovery's
//!   per-leg cut; the failure message goes in `#` comments, with the
//!   command that replays it.
//! * [`Reproducer::save`] writes it under `target/crash-reproducers/`
//!   (`CARGO_TARGET_DIR` if set).
//! * [`Reproducer::replay`] records the workload again (the filesystem is
//!   deterministic for a single-threaded driver without background
//!   threads, so the logs are the same: the fingerprint of their shape is
//!   compared and a difference reported) and checks the one state.
//!
//! Relies on: `recorder.rs`, `check.rs`, the engine's printable
//! [`CrashPoint`].

use super::check::{check_state, CheckOptions, Passed, RecoveryCrash};
use super::recorder::{record, FsConfig, Recording, Template};
use super::workload::Workload;
use keelfs_engine::device::{CrashPoint, RecordedOp};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::path::PathBuf;

/// One failing crash state. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reproducer {
    pub config: FsConfig,
    pub options: CheckOptions,
    pub workload: Workload,
    /// Per-leg crash points; empty when running the workload failed.
    pub points: Vec<CrashPoint>,
    pub recovery_points: Option<Vec<CrashPoint>>,
    pub fingerprint: String,
    pub seed: u64,
    pub message: String,
}

/// Where reproducers go.
pub fn reproducer_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("crash-reproducers")
}

fn options_text(o: &CheckOptions) -> String {
    format!(
        "global_fsync={} fsck={} writable={} single_legs={} tolerate_known_bugs={}",
        o.global_fsync, o.fsck, o.writable, o.single_legs, o.tolerate_known_bugs
    )
}

fn parse_options(s: &str) -> Result<CheckOptions, String> {
    let mut o = CheckOptions::default();
    for field in s.split_whitespace() {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?}: expected key=value"))?;
        let v: bool = v.parse().map_err(|e| format!("{field:?}: {e}"))?;
        match k {
            "global_fsync" => o.global_fsync = v,
            "fsck" => o.fsck = v,
            "writable" => o.writable = v,
            "single_legs" => o.single_legs = v,
            "tolerate_known_bugs" => o.tolerate_known_bugs = v,
            _ => return Err(format!("{field:?}: unknown check option")),
        }
    }
    Ok(o)
}

impl Reproducer {
    /// Writes the reproducer under `target/crash-reproducers/` and returns
    /// the failure's message with its workload, cut, path and how to replay
    /// it.
    pub fn report(&self, test: &str) -> String {
        let cut = self
            .points
            .iter()
            .enumerate()
            .map(|(i, p)| format!("leg{i}: {p}"))
            .collect::<Vec<_>>()
            .join(" | ");
        let path = match self.save(test) {
            Ok(p) => p.display().to_string(),
            Err(e) => format!("(could not write the reproducer: {e})"),
        };
        format!(
            "{}\n    workload: {}\n    cut: {cut}\n    reproducer: {path}\n    replay: \
             KEELFS_CRASH_REPLAY={path} cargo test -p keelfs-tests --test crash_replay -- \
             --nocapture",
            self.message,
            self.workload.summary(),
        )
    }

    /// The file's text.
    pub fn to_text(&self, path_hint: &str) -> String {
        let mut s = String::from("# keelfs crash reproducer (tests/src/crashsim/reproducer.rs)\n");
        s.push_str(&format!(
            "# replay: KEELFS_CRASH_REPLAY={path_hint} cargo test -p keelfs-tests --test \
             crash_replay -- --nocapture\n"
        ));
        for line in self.message.lines() {
            s.push_str(&format!("# failure: {line}\n"));
        }
        s.push_str(&format!("fs {}\n", self.config.to_text()));
        s.push_str(&format!("check {}\n", options_text(&self.options)));
        s.push_str(&format!("seed {}\n", self.seed));
        s.push_str(&format!("log {}\n", self.fingerprint));
        s.push_str(&self.workload.to_text());
        for (i, p) in self.points.iter().enumerate() {
            s.push_str(&format!("leg{i} {p}\n"));
        }
        if let Some(rp) = &self.recovery_points {
            for (i, p) in rp.iter().enumerate() {
                s.push_str(&format!("recovery{i} {p}\n"));
            }
        }
        s
    }

    /// Parses [`Reproducer::to_text`]'s form.
    pub fn parse(text: &str) -> Result<Reproducer, String> {
        let mut r = Reproducer {
            config: FsConfig::small(),
            options: CheckOptions::default(),
            workload: Workload {
                setup: Vec::new(),
                ops: Vec::new(),
                hold_refs: false,
            },
            points: Vec::new(),
            recovery_points: None,
            fingerprint: String::new(),
            seed: 0,
            message: String::new(),
        };
        let mut have_workload = false;
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let t = line.trim();
            if let Some(m) = t.strip_prefix("# failure: ") {
                if !r.message.is_empty() {
                    r.message.push('\n');
                }
                r.message.push_str(m);
                continue;
            }
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (key, rest) = t.split_once(' ').unwrap_or((t, ""));
            match key {
                "fs" => r.config = FsConfig::parse(rest)?,
                "check" => r.options = parse_options(rest)?,
                "seed" => r.seed = rest.trim().parse().map_err(|e| format!("seed: {e}"))?,
                "log" => r.fingerprint = rest.trim().to_string(),
                "hold_refs" => {
                    // The workload starts here: hand the line back.
                    let mut all = std::iter::once(line).chain(lines.by_ref());
                    r.workload = Workload::parse_lines(&mut all)?;
                    have_workload = true;
                }
                _ if key.starts_with("leg") => {
                    r.points
                        .push(CrashPoint::parse(rest).map_err(|e| e.to_string())?);
                }
                _ if key.starts_with("recovery") => {
                    r.recovery_points
                        .get_or_insert_with(Vec::new)
                        .push(CrashPoint::parse(rest).map_err(|e| e.to_string())?);
                }
                _ => return Err(format!("unknown line {t:?}")),
            }
        }
        if !have_workload {
            return Err("no workload".to_string());
        }
        Ok(r)
    }

    /// Writes the file under [`reproducer_dir`]; returns its path.
    pub fn save(&self, test: &str) -> std::io::Result<PathBuf> {
        let dir = reproducer_dir();
        std::fs::create_dir_all(&dir)?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.workload.to_text().bytes().chain(
            self.points
                .iter()
                .map(|p| p.to_string())
                .collect::<String>()
                .into_bytes(),
        ) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let path = dir.join(format!("{test}-{h:016x}.txt"));
        std::fs::write(&path, self.to_text(&path.display().to_string()))?;
        Ok(path)
    }

    /// Loads a reproducer file.
    pub fn load(path: &std::path::Path) -> Result<Reproducer, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Reproducer::parse(&text)
    }

    /// Rebuilds the state and checks it. `Err` is the failure it shows
    /// now (the bug is still there); `Ok` that the state passes. With
    /// `explain`, prints each leg's log up to its cut first.
    pub fn replay(&self, explain: bool) -> Result<Passed, String> {
        let template = Template::build(self.config, &self.workload.setup)?;
        let rec = record(&template, &self.workload)?;
        if explain {
            for (leg, p) in self.points.iter().enumerate() {
                println!("leg {leg}, cut {p}:\n{}", explain_log(&rec, leg, p));
            }
        }
        let fp = rec.fingerprint();
        if !self.fingerprint.is_empty() && fp != self.fingerprint {
            eprintln!(
                "warning: the replayed logs differ in shape from the recorded ones ({fp} vs {}): \
                 the crash points may not name the same writes",
                self.fingerprint
            );
        }
        if self.points.is_empty() {
            return Ok(Passed::default());
        }
        let recovery = match &self.recovery_points {
            Some(p) => RecoveryCrash::Exact(p.clone()),
            None => RecoveryCrash::None,
        };
        let mut rng = StdRng::seed_from_u64(self.seed);
        check_state(&rec, &self.points, &self.options, &recovery, &mut rng).map_err(|f| f.message)
    }
}

/// Leg `leg`'s log up to the cut `p`, one op a line: marks, flushes, and
/// each write's blocks, whether it is durable, landed (and in which
/// place of the landing order) or lost.
pub fn explain_log(rec: &Recording, leg: usize, p: &CrashPoint) -> String {
    let bs = u64::from(rec.config.block_size);
    let log = &rec.logs[leg];
    let last_flush = log[..p.n.min(log.len())]
        .iter()
        .rposition(|o| *o == RecordedOp::Flush);
    let mut out = String::new();
    for (i, op) in log.iter().enumerate().take(p.n) {
        let state = match op {
            RecordedOp::Write { .. } | RecordedOp::Discard { .. } => {
                if last_flush.is_some_and(|f| i < f) {
                    "durable".to_string()
                } else if let Some(at) = p.keep.iter().position(|&k| k == i) {
                    match p.torn.get(&i) {
                        Some(t) => format!("landed #{at}, torn: sectors {t:?}"),
                        None => format!("landed #{at}"),
                    }
                } else {
                    "LOST".to_string()
                }
            }
            _ => String::new(),
        };
        let what = match op {
            RecordedOp::Write { offset, data } => format!(
                "write blocks {}..{} ({} bytes)",
                offset / bs,
                (offset + data.len() as u64).div_ceil(bs),
                data.len()
            ),
            RecordedOp::Discard { offset, len } => {
                format!(
                    "discard blocks {}..{}",
                    offset / bs,
                    (offset + len).div_ceil(bs)
                )
            }
            RecordedOp::Flush => "FLUSH".to_string(),
            RecordedOp::Mark(m) => format!("-- {m}"),
        };
        out.push_str(&format!("  {i:4} {what} {state}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crashsim::workload::Op;

    #[test]
    fn reproducers_print_and_parse_back() {
        let r = Reproducer {
            config: FsConfig::small_4k(),
            options: CheckOptions {
                writable: false,
                ..CheckOptions::default()
            },
            workload: Workload {
                setup: vec![Op::Mkdir("A".into())],
                ops: vec![Op::Create("A/x".into()), Op::Fsync("A".into())],
                hold_refs: true,
            },
            points: vec![
                CrashPoint::new(12, vec![5, 7]).with_torn(7, [0, 2]),
                CrashPoint::new(12, vec![]),
            ],
            recovery_points: Some(vec![
                CrashPoint::new(3, vec![2]),
                CrashPoint::new(3, vec![]),
            ]),
            fingerprint: "0123456789abcdef ops=42,42".into(),
            seed: 99,
            message: "line one\nline two".into(),
        };
        let text = r.to_text("x.txt");
        assert_eq!(Reproducer::parse(&text).unwrap(), r);
        assert!(Reproducer::parse("fs bs=1024\n").is_err());
        assert!(Reproducer::parse("bogus\n").is_err());
    }
}
