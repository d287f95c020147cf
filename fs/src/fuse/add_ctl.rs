//! The daemon's side of `keelfs add [-f] MOUNTPOINT NEW`: a request
//! `add NEW` (or `add -f NEW`) on the status socket makes the device NEW a
//! new leg of the mounted filesystem; its resync's progress is in the
//! status report's resync lines (`keelfs status`, which `keelfs add`
//! polls).
//!
//! What it promises: NEW is opened like a leg at mount (exclusive lock, so
//! a device already in use — a leg of this set included — is refused);
//! the answer is one line, `add started: leg L (NEW)` or `error: ...`.
//!
//! Relies on: `Fs::start_add` (which checks the device and does the rest).

use crate::core::Fs;
use crate::devset::{open_legs, LegOpenOptions};
use std::sync::Arc;

/// Answers one `add` request (`args` is `NEW` or `-f NEW`).
pub fn command(fs: &Arc<Fs>, args: &str) -> String {
    let (force, path) = match args.strip_prefix("-f ") {
        Some(path) => (true, path),
        None => (false, args),
    };
    if path.is_empty() {
        return "error: usage: add [-f] NEW\n".into();
    }
    let device = match open_legs(&[path], LegOpenOptions::default()) {
        Ok(mut d) if d.len() == 1 => d.remove(0),
        Ok(_) => return "error: no device opened\n".into(),
        Err(e) => {
            let own = fs.device_set().legs().iter().any(|l| l.name() == path);
            let hint = if own {
                format!(
                    " ({path} is a leg of this filesystem already; to bring a failed leg \
                     back, use keelfs replace MOUNTPOINT {path} {path})"
                )
            } else {
                String::new()
            };
            return format!("error: {e}{hint}\n");
        }
    };
    match Fs::start_add(fs, device, force) {
        Ok(job) => format!("add started: leg {} ({path})\n", job.leg),
        Err(e) => format!("error: {e}\n"),
    }
}
