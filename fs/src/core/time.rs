//! Timestamps: the clock the filesystem stamps inodes with.
//!
//! Promises: [`now`] is the wall clock with nanoseconds, as a §5
//! [`Timestamp`] (seconds may be negative only for clocks before 1970,
//! nanoseconds always below 10⁹); [`from_system`] and [`to_system`]
//! convert to and from `SystemTime` for the FUSE adapter. Relies on
//! nothing but `std::time`.

use crate::format::Timestamp;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current time.
pub fn now() -> Timestamp {
    from_system(SystemTime::now())
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
