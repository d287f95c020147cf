//! Block-range locks that keep a heal from undoing a newer write.
//!
//! A heal reads a good copy, then writes it over the bad legs. Were a
//! write of new content to land between the two, the heal would put the
//! old content back on some legs: the mirror would silently diverge (and a
//! metadata block read without an expected generation could then return
//! stale bytes). So writes through the [`super::Volume`] hold their range
//! *shared* for as long as they are in flight, and a heal holds its range
//! *exclusive* while it re-reads the good copy, re-verifies it and writes
//! it out. Writes never wait for each other; a heal waits for the writes in
//! flight on its range, and writes to that range wait for the heal.
//!
//! Promises: an exclusive holder overlaps no other holder; a shared holder
//! overlaps no exclusive holder. Relies on: holders never take a second
//! range while holding one (no nesting, so no deadlock).
//!
//! Lock order: `RangeFence::held` is a leaf lock, held only to inspect
//! and update the list, never across I/O.

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub(super) struct RangeFence {
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

/// A held range; dropping it releases the range.
#[must_use = "the range is released as soon as the guard is dropped"]
pub(super) struct FenceGuard<'a> {
    fence: &'a RangeFence,
    id: u64,
}

impl RangeFence {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Hold `count` blocks at `first` alongside other writers.
    pub(super) fn shared(&self, first: u64, count: u64) -> FenceGuard<'_> {
        self.lock(first, count, false)
    }

    /// Hold `count` blocks at `first` alone.
    pub(super) fn exclusive(&self, first: u64, count: u64) -> FenceGuard<'_> {
        self.lock(first, count, true)
    }

    fn lock(&self, first: u64, count: u64, exclusive: bool) -> FenceGuard<'_> {
        let end = first.saturating_add(count);
        let mut held = self.held.lock();
        while held
            .ranges
            .iter()
            .any(|r| r.first < end && first < r.end && (exclusive || r.exclusive))
        {
            self.released.wait(&mut held);
        }
        let id = held.next_id;
        held.next_id += 1;
        held.ranges.push(Range {
            id,
            first,
            end,
            exclusive,
        });
        FenceGuard { fence: self, id }
    }
}

impl Drop for FenceGuard<'_> {
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
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn exclusive_waits_for_overlapping_shared_only() {
        let f = Arc::new(RangeFence::new());
        let w1 = f.shared(0, 10);
        let _w2 = f.shared(5, 10); // shared ranges coexist
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
        drop(_w2);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }
}
