//! Block-range locks that keep a copy between legs (a heal, a resync) from
//! undoing a newer write.
//!
//! A heal or a resync reads a good copy from one leg, then writes it over
//! others. Were a write of new content to land between the two, the copy
//! would put the old content back on some legs: the mirror would silently
//! diverge. So every write through the [`super::MirrorSet`] holds its
//! ranges *shared* for as long as it is in flight, and a copier holds its
//! range *exclusive* while it reads, checks and writes. Writes never wait
//! for each other; a copier waits for the writes in flight on its range,
//! and writes to that range wait for the copier.
//!
//! Promises: an exclusive holder overlaps no other holder; a shared holder
//! overlaps no exclusive holder. A write of several runs takes all its
//! ranges in one step ([`RangeFence::shared_many`]): nobody ever holds one
//! range while waiting for another, so there is no deadlock. Guards own a
//! handle on the fence, so an async write can carry its guard to its
//! completion.
//!
//! Lock order: `RangeFence::held` is a leaf lock, held only to inspect
//! and update the list, never across I/O.

use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct RangeFence {
    /// Lock order: leaf.
    held: Mutex<Held>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct Held {
    next_id: u64,
    ranges: Vec<Range>,
}

#[derive(Debug)]
struct Range {
    id: u64,
    first: u64,
    end: u64,
    exclusive: bool,
}

/// Held ranges; dropping the guard releases them.
#[must_use = "the range is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct FenceGuard {
    fence: Arc<RangeFence>,
    id: u64,
    /// The ranges held, `(first, end)`, and whether exclusively.
    spans: Vec<(u64, u64)>,
    exclusive: bool,
}

impl FenceGuard {
    /// Whether this guard holds `count` blocks at `first` exclusively.
    pub(crate) fn covers_exclusive(&self, first: u64, count: u64) -> bool {
        let end = first.saturating_add(count);
        self.exclusive && self.spans.iter().any(|&(f, e)| f <= first && end <= e)
    }
}

impl RangeFence {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Hold every `(first, count)` range alongside other writers.
    pub(crate) fn shared_many(self: &Arc<Self>, ranges: &[(u64, u64)]) -> FenceGuard {
        self.lock(ranges, false)
    }

    /// Hold `count` blocks at `first` alone.
    pub(crate) fn exclusive(self: &Arc<Self>, first: u64, count: u64) -> FenceGuard {
        self.lock(&[(first, count)], true)
    }

    fn lock(self: &Arc<Self>, ranges: &[(u64, u64)], exclusive: bool) -> FenceGuard {
        let spans: Vec<(u64, u64)> = ranges
            .iter()
            .map(|&(first, count)| (first, first.saturating_add(count)))
            .collect();
        let mut held = self.held.lock();
        while held.ranges.iter().any(|r| {
            (exclusive || r.exclusive)
                && spans
                    .iter()
                    .any(|&(first, end)| r.first < end && first < r.end)
        }) {
            self.released.wait(&mut held);
        }
        let id = held.next_id;
        held.next_id += 1;
        for &(first, end) in &spans {
            held.ranges.push(Range {
                id,
                first,
                end,
                exclusive,
            });
        }
        FenceGuard {
            fence: Arc::clone(self),
            id,
            spans,
            exclusive,
        }
    }
}

impl Drop for FenceGuard {
    fn drop(&mut self) {
        let mut held = self.fence.held.lock();
        held.ranges.retain(|r| r.id != self.id);
        drop(held);
        self.fence.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::Duration;

    #[test]
    fn exclusive_waits_for_overlapping_shared_only() {
        let f = RangeFence::new();
        let w1 = f.shared_many(&[(0, 10)]);
        let w2 = f.shared_many(&[(5, 10)]); // shared ranges coexist
        let _other = f.exclusive(100, 1); // disjoint: no wait
        let got = Arc::new(AtomicBool::new(false));
        let t = {
            let (f, got) = (f.clone(), got.clone());
            thread::spawn(move || {
                let _g = f.exclusive(9, 1);
                got.store(true, Ordering::SeqCst);
            })
        };
        thread::sleep(Duration::from_millis(30));
        assert!(!got.load(Ordering::SeqCst), "heal ran under a write");
        drop(w1);
        thread::sleep(Duration::from_millis(30));
        assert!(!got.load(Ordering::SeqCst), "still under the second write");
        drop(w2);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }

    #[test]
    fn a_write_of_several_runs_waits_for_an_exclusive_holder_of_any() {
        let f = RangeFence::new();
        let copy = f.exclusive(50, 2);
        assert!(copy.covers_exclusive(50, 2) && !copy.covers_exclusive(49, 2));
        let got = Arc::new(AtomicBool::new(false));
        let t = {
            let (f, got) = (f.clone(), got.clone());
            thread::spawn(move || {
                let _g = f.shared_many(&[(0, 1), (51, 1), (90, 3)]);
                got.store(true, Ordering::SeqCst);
            })
        };
        thread::sleep(Duration::from_millis(30));
        assert!(!got.load(Ordering::SeqCst), "a write ran under a copy");
        drop(copy);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }
}
