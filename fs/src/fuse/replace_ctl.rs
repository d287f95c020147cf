//! The daemon's side of `keelfs replace MOUNTPOINT OLD NEW`: a request
//! `replace OLD<TAB>NEW` on the status socket starts the replacement of a
//! leg by a new device; its progress is in the status report's resync
//! lines (`keelfs status`, which `keelfs replace` polls).
//!
//! What it promises: OLD names a leg by member index or by the device path
//! it has now; NEW is opened like a leg at mount (exclusive lock, so a
//! device already in use is refused) — except when NEW is the device leg
//! OLD already has (`keelfs replace MNT DEV DEV`): that re-adds a leg that
//! failed and came back, through the handle the daemon still holds (its
//! own lock is what refuses a second open); a device node that came back
//! under a new identity opens normally and replaces the dead handle. The
//! answer is one line, `replace started: leg L (OLD) -> NEW` or
//! `error: ...`.
//!
//! Relies on: `Fs::start_replace` (which checks the size and the leg's
//! state and does the rest on its own thread).

use crate::core::Fs;
use crate::devset::{open_legs, LegOpenOptions};
use crate::error::FsError;
use keelfs_engine::{DeviceError, EngineError};
use std::sync::Arc;

/// Answers one `replace` request (`args` is `OLD<TAB>NEW`).
pub fn command(fs: &Arc<Fs>, args: &str) -> String {
    let Some((old, new)) = args.split_once('\t') else {
        return "error: usage: replace OLD<TAB>NEW\n".into();
    };
    let legs = fs.device_set().legs();
    let leg = legs
        .iter()
        .position(|l| old.parse::<u32>().is_ok_and(|m| m == l.member) || same_path(l.name(), old));
    let Some(leg) = leg else {
        return format!(
            "error: {old}: not a leg of this filesystem (give a member index or its path)\n"
        );
    };
    let device = match open_legs(&[new], LegOpenOptions::default()) {
        Ok(mut d) if d.len() == 1 => d.remove(0),
        Ok(_) => return "error: no device opened\n".into(),
        // Locked by this daemon itself: the leg's own device, given back.
        Err(e) if lock_busy(&e) && same_path(legs[leg].name(), new) => {
            fs.device_set().mirror().leg_device(leg)
        }
        Err(e) => return format!("error: {e}\n"),
    };
    match Fs::start_replace(fs, leg, device) {
        Ok(_) => format!("replace started: leg {leg} ({old}) -> {new}\n"),
        Err(e) => format!("error: {e}\n"),
    }
}

/// Whether `a` and `b` name the same file (the same text, or the same
/// canonical path).
fn same_path(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// Whether `e` says the device is locked (by another opener).
fn lock_busy(e: &FsError) -> bool {
    matches!(
        e,
        FsError::Engine(EngineError::Device(DeviceError::Open { source, .. }))
            if source.kind() == std::io::ErrorKind::WouldBlock
    )
}
