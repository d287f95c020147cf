//! The daemon's side of `keelfs replace MOUNTPOINT OLD NEW`: a request
//! `replace OLD<TAB>NEW` on the status socket starts the replacement of a
//! leg by a new device; its progress is in the status report's resync
//! lines (`keelfs status`, which `keelfs replace` polls).
//!
//! What it promises: OLD names a leg by member index or by the device path
//! it was given as; NEW is opened like a leg at mount (exclusive lock, so a
//! device already in use is refused); the answer is one line, `replace
//! started: leg L (OLD) -> NEW` or `error: ...`.
//!
//! Relies on: `Fs::start_replace` (which checks the size and does the
//! rest on its own thread).

use crate::core::Fs;
use crate::devset::{open_legs, LegOpenOptions};
use std::sync::Arc;

/// Answers one `replace` request (`args` is `OLD<TAB>NEW`).
pub fn command(fs: &Arc<Fs>, args: &str) -> String {
    let Some((old, new)) = args.split_once('\t') else {
        return "error: usage: replace OLD<TAB>NEW\n".into();
    };
    let set = fs.device_set();
    let leg = set
        .legs()
        .iter()
        .position(|l| old.parse::<u32>().is_ok_and(|m| m == l.member) || l.name() == old);
    let Some(leg) = leg else {
        return format!(
            "error: {old}: not a leg of this filesystem (give a member index or its path)\n"
        );
    };
    let device = match open_legs(&[new], LegOpenOptions::default()) {
        Ok(mut d) if d.len() == 1 => d.remove(0),
        Ok(_) => return "error: no device opened\n".into(),
        Err(e) => return format!("error: {e}\n"),
    };
    match Fs::start_replace(fs, leg, device) {
        Ok(_) => format!("replace started: leg {leg} ({old}) -> {new}\n"),
        Err(e) => format!("error: {e}\n"),
    }
}
