//! Access times: when a read of a file updates its atime.
//!
//! Over FUSE the kernel never updates atime itself (FUSE inodes are
//! `S_NOATIME`): the filesystem does, on the reads that reach it, following
//! the mount's atime mode, which the FUSE adapter sets from the mount
//! options ([`Fs::set_atime_mode`]; relatime until it does).
//!
//! What it promises: [`Fs::atime_due`] says whether a read now updates
//! atime: never on a read-only mount, for a `noatime` (chattr +A) inode or
//! with [`AtimeMode::NoAtime`]; always with [`AtimeMode::StrictAtime`];
//! with [`AtimeMode::RelAtime`] when atime is not after mtime or ctime, or
//! is a day old. [`Fs::read_updates_atime`] answers the same for
//! attributes, so the adapter can let a read that must update atime reach
//! the filesystem instead of being served from the page cache.
//!
//! Relies on: `time.rs` for the clock; nothing else.

use super::inode::InodeState;
use super::{time, FileAttr, Fs};
use crate::format::{AttrFlags, Timestamp};
use std::sync::atomic::{AtomicU8, Ordering};

/// Seconds after which relatime refreshes atime anyway.
const RELATIME_SECS: i64 = 24 * 3600;

/// The mount's atime mode (`noatime`, `relatime`, `strictatime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtimeMode {
    NoAtime,
    RelAtime,
    StrictAtime,
}

/// The current mode, shared by every reader (an atomic: remounts may
/// change it while reads run).
#[derive(Debug)]
pub struct AtimeSetting(AtomicU8);

impl Default for AtimeSetting {
    fn default() -> AtimeSetting {
        AtimeSetting(AtomicU8::new(AtimeMode::RelAtime as u8))
    }
}

impl AtimeSetting {
    fn get(&self) -> AtimeMode {
        match self.0.load(Ordering::Relaxed) {
            x if x == AtimeMode::NoAtime as u8 => AtimeMode::NoAtime,
            x if x == AtimeMode::StrictAtime as u8 => AtimeMode::StrictAtime,
            _ => AtimeMode::RelAtime,
        }
    }

    fn set(&self, mode: AtimeMode) {
        self.0.store(mode as u8, Ordering::Relaxed);
    }
}

/// Whether a read at `now` updates an atime under `mode` (flags and
/// read-only aside).
fn due(mode: AtimeMode, atime: Timestamp, mtime: Timestamp, ctime: Timestamp) -> bool {
    match mode {
        AtimeMode::NoAtime => false,
        AtimeMode::StrictAtime => true,
        AtimeMode::RelAtime => {
            atime <= mtime || atime <= ctime || time::now().secs - atime.secs >= RELATIME_SECS
        }
    }
}

impl Fs {
    /// Sets the atime mode (the mount options').
    pub fn set_atime_mode(&self, mode: AtimeMode) {
        self.atime.set(mode);
    }

    /// The atime mode.
    pub fn atime_mode(&self) -> AtimeMode {
        self.atime.get()
    }

    /// Whether a read of the inode held by `state` updates its atime now.
    pub(crate) fn atime_due(&self, state: &InodeState) -> bool {
        !self.read_only()
            && state.is_live()
            && !state.attr_flags.contains(AttrFlags::NOATIME)
            && due(self.atime_mode(), state.atime, state.mtime, state.ctime)
    }

    /// Whether a read of an inode with attributes `attr` would update its
    /// atime now.
    pub fn read_updates_atime(&self, attr: &FileAttr) -> bool {
        !self.read_only()
            && attr.flags & AttrFlags::NOATIME.bits() == 0
            && due(self.atime_mode(), attr.atime, attr.mtime, attr.ctime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    #[test]
    fn modes() {
        let now = time::now().secs;
        let (old, fresh) = (ts(now - 2 * RELATIME_SECS), ts(now - 10));
        // relatime: after a change, or once a day.
        assert!(due(AtimeMode::RelAtime, ts(now - 20), fresh, fresh));
        assert!(!due(AtimeMode::RelAtime, fresh, ts(now - 20), ts(now - 20)));
        assert!(due(
            AtimeMode::RelAtime,
            old,
            ts(old.secs - 5),
            ts(old.secs - 5)
        ));
        assert!(due(
            AtimeMode::StrictAtime,
            fresh,
            ts(now - 20),
            ts(now - 20)
        ));
        assert!(!due(AtimeMode::NoAtime, old, fresh, fresh));
        let setting = AtimeSetting::default();
        assert_eq!(setting.get(), AtimeMode::RelAtime);
        setting.set(AtimeMode::StrictAtime);
        assert_eq!(setting.get(), AtimeMode::StrictAtime);
        setting.set(AtimeMode::NoAtime);
        assert_eq!(setting.get(), AtimeMode::NoAtime);
    }
}
