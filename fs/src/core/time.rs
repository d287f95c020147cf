//! Timestamps: the clock the filesystem stamps inodes with.
//!
//! Promises: [`now`] is the wall clock as the kernel stamps inode times
//! (`CLOCK_REALTIME_COARSE`, the clock behind `current_time()`), as a §5
//! [`Timestamp`] (seconds may be negative only for clocks before 1970,
//! nanoseconds always below 10⁹); [`from_system`] and [`to_system`]
//! convert to and from `SystemTime` for the FUSE adapter. Relies on
//! `std::time` and clock_gettime(2).
//!
//! Why the coarse clock: over FUSE some times are the kernel's (with the
//! writeback cache it stamps mtime and ctime of regular files itself, e.g.
//! the ctime of `link`), others ours. The coarse clock lags the precise one
//! by up to a tick, so were ours precise, a later event stamped by the
//! kernel could carry an earlier time than an earlier one stamped here
//! (xfstests generic/423). Reading the same coarse clock keeps every
//! timestamp in the order of the events.

use crate::format::Timestamp;
use nix::time::{clock_gettime, ClockId};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current time (the kernel's coarse wall clock; the precise one if
/// that cannot be read).
pub fn now() -> Timestamp {
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(t) => Timestamp {
            secs: t.tv_sec(),
            nanos: u32::try_from(t.tv_nsec()).unwrap_or(0).min(999_999_999),
        },
        Err(_) => from_system(SystemTime::now()),
    }
}

/// A `SystemTime` as a timestamp.
pub fn from_system(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        },
        Err(e) => {
            // Before the epoch: floor the seconds, keep nanoseconds positive.
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() == 0 {
                Timestamp {
                    secs: -secs,
                    nanos: 0,
                }
            } else {
                Timestamp {
                    secs: -secs - 1,
                    nanos: 1_000_000_000 - d.subsec_nanos(),
                }
            }
        }
    }
}

/// A timestamp as a `SystemTime`.
pub fn to_system(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_the_coarse_clock() {
        // Never ahead of the precise clock, and within a few ticks of it.
        let before = from_system(SystemTime::now());
        let t = now();
        let after = from_system(SystemTime::now());
        assert!(t <= after, "{t:?} > {after:?}");
        assert!(t.nanos < 1_000_000_000);
        let lag =
            (before.secs - t.secs) * 1_000_000_000 + i64::from(before.nanos) - i64::from(t.nanos);
        assert!(lag < 100_000_000, "coarse clock {lag} ns behind");
    }

    #[test]
    fn round_trips_before_and_after_the_epoch() {
        for t in [
            UNIX_EPOCH + Duration::new(1_700_000_000, 123),
            UNIX_EPOCH - Duration::new(5, 250),
            UNIX_EPOCH - Duration::from_secs(7),
            UNIX_EPOCH,
        ] {
            let ts = from_system(t);
            assert!(ts.nanos < 1_000_000_000);
            assert_eq!(to_system(ts), t);
        }
        assert_eq!(
            from_system(UNIX_EPOCH - Duration::new(5, 250)),
            Timestamp {
                secs: -6,
                nanos: 999_999_750
            }
        );
    }
}
