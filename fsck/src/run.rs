//! One run of fsck.keelfs over a set of devices, from opening them to the
//! exit status.
//!
//! * The devices are opened (read-only under `-n`) and identified as one
//!   set; failing that is an operational error (exit 8), as is any I/O
//!   failure that stops a check.
//! * A repair first replays the journal (`journal.rs`), as a mount would,
//!   and identifies the set again. A check (`-n`) does the same over
//!   copy-on-write overlays of the devices (`OverlayDevice`): the replay
//!   stays in memory, nothing is written, and the check sees the
//!   filesystem as the next mount will.
//! * Without `-f`, a filesystem whose superblocks are sound, that was
//!   cleanly unmounted, is not marked as having errors, and whose journal
//!   holds nothing to replay is reported clean at once (exit 0).
//! * `-n`: one check; exit 0 if it found no error, 4 otherwise.
//! * `-y`/`-p`: a check, a repair, and a check again, up to three rounds
//!   while fixable errors remain, then a final check-only pass over what is
//!   on disk. Exit 1 if something was corrected (errors, or orphans
//!   released) and the final check is clean, 0 if nothing needed it (a
//!   filesystem that was not cleanly unmounted but is sound is only marked
//!   clean), 4 if errors remain.

use crate::checker::{Checker, FsckError};
use crate::journal::Replayed;
use crate::options::{Mode, Options};
use crate::progress::Progress;
use crate::repair::{repair, RepairStats};
use crate::report::{Report, EXIT_CLEAN, EXIT_CORRECTED, EXIT_OPERATIONAL, EXIT_UNCORRECTED};
use keelfs_engine::device::{DeviceRef, OverlayDevice};
use keelfs_fs::devset::{identify, open_legs, LegOpenOptions};
use std::path::Path;
use std::sync::Arc;

/// Repair rounds at most (a round: check, repair).
const MAX_ROUNDS: usize = 3;

/// Usage figures of the filesystem, for the closing line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub inodes_used: u64,
    pub inodes: u64,
    pub blocks_used: u64,
    pub blocks: u64,
}

/// What a run found and did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The fsck(8) exit status.
    pub exit_code: i32,
    /// The filesystem looked clean and was not checked (no `-f`).
    pub skipped_clean: bool,
    /// The reports of each check, in order: the first is the user's check;
    /// under `-y` the others are the checks after each repair, the last one
    /// check-only.
    pub reports: Vec<Report>,
    /// What each repair did.
    pub repairs: Vec<RepairStats>,
    /// Usage of the filesystem as last checked.
    pub usage: Usage,
    /// An operational error, if one ended the run (exit 8).
    pub error: Option<String>,
    /// Orphan inodes released by the repairs.
    pub orphans_released: u64,
    /// What replaying the journal did, if it held transactions.
    pub replayed: Option<String>,
    /// Under `-n`: what replaying the journal in memory did (nothing was
    /// written; the check saw the filesystem as the next mount will).
    pub replayed_in_memory: Option<String>,
    /// Why the journal could not be replayed, if it could not.
    pub replay_failed: Option<String>,
}

impl Outcome {
    /// The first check's report (empty if there was none).
    pub fn first(&self) -> Report {
        self.reports.first().cloned().unwrap_or_default()
    }

    /// The last check's report (empty if there was none).
    pub fn last(&self) -> Report {
        self.reports.last().cloned().unwrap_or_default()
    }

    /// Blocks written by all repairs.
    pub fn blocks_written(&self) -> u64 {
        self.repairs.iter().map(|r| r.blocks_written).sum()
    }
}

/// Checks (and under `-y` repairs) the filesystem on the devices at
/// `paths`, opened read-only for `-n`.
pub fn fsck_paths<P: AsRef<Path>>(paths: &[P], opts: &Options) -> Outcome {
    let open = LegOpenOptions {
        read_only: opts.mode == Mode::Check,
        wait_for_lock: false,
    };
    let mut tries = 0;
    loop {
        match open_legs(paths, open) {
            Ok(devices) => return fsck_devices(&devices, opts),
            // A lock held for an instant (a process being started holds a
            // copy of every descriptor until it execs) is waited out; a
            // mounted filesystem is refused after a second.
            Err(e) if is_busy(&e) && tries < LOCK_RETRIES => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return operational(e.into()),
        }
    }
}

/// Attempts to take the devices' locks.
const LOCK_RETRIES: u32 = 20;

fn is_busy(e: &keelfs_fs::error::FsError) -> bool {
    use keelfs_engine::{DeviceError, EngineError};
    matches!(
        e,
        keelfs_fs::error::FsError::Engine(EngineError::Device(DeviceError::Open { source, .. }))
            if source.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// Checks (and under `-y` repairs) the filesystem on `devices`.
pub fn fsck_devices(devices: &[DeviceRef], opts: &Options) -> Outcome {
    match run(devices, opts) {
        Ok(o) => o,
        Err(e) => operational(e),
    }
}

fn operational(e: FsckError) -> Outcome {
    Outcome {
        exit_code: EXIT_OPERATIONAL,
        error: Some(e.to_string()),
        ..Outcome::default()
    }
}

fn usage_of(c: &Checker<'_>) -> Usage {
    let l = c.layout;
    Usage {
        inodes_used: c.inode_usage().count_in(0, l.inode_count),
        inodes: l.inode_count,
        blocks_used: c.block_usage().count_in(0, l.device_blocks),
        blocks: l.device_blocks,
    }
}

/// Whether a repair has something to do.
fn has_work(c: &Checker<'_>) -> bool {
    !c.journal_pending
        && (c.report.errors().any(|f| f.fixable)
            || c.plan.superblocks
            || c.plan.orphan_list_reset
            || c.plan.orphans_released > 0)
}

fn run(devices: &[DeviceRef], opts: &Options) -> Result<Outcome, FsckError> {
    let name = devices
        .first()
        .map(|d| d.name().to_string())
        .unwrap_or_default();
    let progress = Progress::new(opts.progress, &name);
    let silent = Progress::silent();
    let mut outcome = Outcome::default();

    // A check writes nothing: it runs over copy-on-write overlays, so the
    // journal can still be replayed (in memory) and the filesystem checked
    // as the next mount will see it.
    // Only a replay of committed transactions is kept in memory: a journal
    // superblock the legs disagree on is damage the check must report.
    let overlay = |devices: &[DeviceRef]| -> Vec<DeviceRef> {
        devices
            .iter()
            .map(|d| Arc::new(OverlayDevice::new(d.clone())) as DeviceRef)
            .collect()
    };
    let check_only = opts.mode == Mode::Check;
    let mut overlays: Vec<DeviceRef> = if check_only {
        overlay(devices)
    } else {
        Vec::new()
    };
    let raw = devices;
    let mut devices = if check_only { &overlays[..] } else { raw };
    let mut set = identify(devices)?;
    {
        match crate::journal::replay(&set) {
            Ok(Some(Replayed::Records(text))) if check_only => {
                outcome.replayed_in_memory = Some(text);
                drop(set);
                set = identify(devices)?;
            }
            Ok(Some(Replayed::SuperblockOnly(_))) if check_only => {
                drop(set);
                overlays = overlay(raw);
                devices = &overlays[..];
                set = identify(devices)?;
            }
            Ok(Some(Replayed::Records(text) | Replayed::SuperblockOnly(text))) => {
                outcome.replayed = Some(text);
                drop(set);
                set = identify(devices)?;
            }
            Ok(None) => {}
            // A journal that cannot be read (its superblock lost, a record
            // malformed) is the journal pass's to report; the check goes on.
            Err(FsckError::Fs(keelfs_fs::error::FsError::Corrupt(why))) => {
                outcome.replay_failed = Some(why);
            }
            Err(e) => return Err(e),
        }
    }
    if !opts.force && outcome.replayed.is_none() && outcome.replayed_in_memory.is_none() {
        let mut quick = Checker::new(&set, Mode::Check, &silent);
        quick.check_superblocks()?;
        quick.check_journal()?;
        let state = set.superblock().state;
        // (The "errors" mark forces a check.)
        if quick.report.is_clean() && state.clean_unmount && !state.errors {
            let sb = set.superblock();
            let l = sb.layout;
            outcome.skipped_clean = true;
            outcome.exit_code = EXIT_CLEAN;
            outcome.usage = Usage {
                inodes_used: l.inode_count.saturating_sub(sb.free_inodes),
                inodes: l.inode_count,
                blocks_used: l.device_blocks.saturating_sub(sb.free_blocks),
                blocks: l.device_blocks,
            };
            return Ok(outcome);
        }
    }

    let mut checker = Checker::new(&set, opts.mode, &progress);
    checker.run()?;
    outcome.reports.push(checker.report.clone());
    outcome.usage = usage_of(&checker);
    if opts.mode == Mode::Check {
        outcome.exit_code = if checker.report.is_clean() {
            EXIT_CLEAN
        } else {
            EXIT_UNCORRECTED
        };
        return Ok(outcome);
    }
    if checker.journal_pending {
        outcome.exit_code = EXIT_UNCORRECTED;
        return Ok(outcome);
    }
    let mut work = has_work(&checker);
    let mut round = 0;
    // `checker` borrows `set`; each round makes its own.
    if work {
        outcome.orphans_released += checker.plan.orphans_released;
        outcome.repairs.push(repair(&mut checker)?);
        round += 1;
    }
    drop(checker);
    drop(set);
    while work && round < MAX_ROUNDS {
        let set = identify(devices)?;
        let mut again = Checker::new(&set, Mode::Repair, &silent);
        again.run()?;
        work = has_work(&again);
        if work {
            outcome.reports.push(again.report.clone());
            outcome.orphans_released += again.plan.orphans_released;
            outcome.repairs.push(repair(&mut again)?);
        }
        round += 1;
    }
    let set = identify(devices)?;
    let mut last = Checker::new(&set, Mode::Check, &silent);
    last.run()?;
    outcome.usage = usage_of(&last);
    let clean = last.report.is_clean();
    // Marking a sound filesystem clean is not a correction.
    let first = outcome.first();
    let written = outcome.replayed.is_some()
        || (outcome.blocks_written() > 0
            && (first.error_count() > 0 || outcome.orphans_released > 0));
    if !outcome.repairs.is_empty() {
        outcome.reports.push(last.report.clone());
    }
    outcome.exit_code = match (clean, written) {
        (true, true) => EXIT_CORRECTED,
        (true, false) => EXIT_CLEAN,
        (false, _) => EXIT_UNCORRECTED,
    };
    Ok(outcome)
}
