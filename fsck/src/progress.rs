//! Progress reporting for `-C fd`, throttled to whole percents.
//!
//! `-C 0` rewrites one line on stderr ("fsck.keelfs: pass 4 (data blocks
//! on every leg): 37%"); `-C fd` with fd > 0 writes lines
//! `pass current total device` to that descriptor, the protocol e2fsck
//! speaks to fsck(8). The descriptor is reached through `/proc/self/fd`,
//! so no `unsafe` is needed; if it cannot be opened, progress is dropped
//! silently (progress is never worth failing a check for).

use crate::options::ProgressTarget;
use crate::report::Pass;
use std::cell::RefCell;
use std::fs::File;
use std::io::Write;

enum Sink {
    None,
    Stderr,
    Fd(File),
}

/// Where progress goes, and what was last said.
pub struct Progress {
    sink: RefCell<Sink>,
    device: String,
    last: RefCell<Option<(Pass, u64)>>,
}

impl Progress {
    /// Progress for `device` (the first device's name) to `target`.
    pub fn new(target: ProgressTarget, device: &str) -> Progress {
        let sink = match target {
            ProgressTarget::None => Sink::None,
            ProgressTarget::Stderr => Sink::Stderr,
            ProgressTarget::Fd(fd) => std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{fd}"))
                .map(Sink::Fd)
                .unwrap_or(Sink::None),
        };
        Progress {
            sink: RefCell::new(sink),
            device: device.to_string(),
            last: RefCell::new(None),
        }
    }

    /// No progress at all.
    pub fn silent() -> Progress {
        Progress::new(ProgressTarget::None, "")
    }

    /// `done` of `total` units of `pass` are finished.
    pub fn update(&self, pass: Pass, done: u64, total: u64) {
        if matches!(*self.sink.borrow(), Sink::None) {
            return;
        }
        let percent = (u128::from(done.min(total)) * 100 / u128::from(total.max(1))) as u64;
        if *self.last.borrow() == Some((pass, percent)) {
            return;
        }
        *self.last.borrow_mut() = Some((pass, percent));
        match &mut *self.sink.borrow_mut() {
            Sink::None => {}
            Sink::Stderr => {
                let _ = write!(
                    std::io::stderr(),
                    "\rfsck.keelfs: pass {} ({}): {percent:3}%   ",
                    pass.number(),
                    pass.title()
                );
            }
            Sink::Fd(f) => {
                let _ = writeln!(f, "{} {done} {total} {}", pass.number(), self.device);
            }
        }
    }

    /// Ends the progress line (stderr).
    pub fn finish(&self) {
        if matches!(*self.sink.borrow(), Sink::Stderr) && self.last.borrow().is_some() {
            let _ = writeln!(std::io::stderr());
        }
        *self.last.borrow_mut() = None;
    }
}
