//! Per-device dispatch by priority class.
//!
//! Each device (mirror leg) has a [`Scheduler`] with a fixed number of
//! dispatch slots: at most that many requests are at the device at once.
//! A request takes a slot with [`Scheduler::acquire`] before it touches the
//! device and gives it back when the returned [`Slot`] drops. While slots
//! are free a request goes straight through (no queueing, no thread hop);
//! when they are all taken, waiters queue, and a freed slot goes to the
//! waiter whose context is most urgent *at that moment* (real-time before
//! best-effort before idle, then level, then arrival). Reading the class at
//! grant time is what makes boosting work: idle writeback that a
//! best-effort fsync waits on is boosted and jumps the queue.
//!
//! Every waiter is a blocked thread (async requests wait in the mirror's
//! worker threads), so the queue is short and a linear scan picks the next.

use crate::ioctx::{self, IoContext};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

/// Per-device dispatch slots with priority-ordered waiting.
#[derive(Debug)]
pub struct Scheduler {
    slots: usize,
    /// Lock order: a leaf lock; nothing is acquired while it is held.
    state: Mutex<SchedState>,
}

#[derive(Debug, Default)]
struct SchedState {
    in_flight: usize,
    next_arrival: u64,
    waiting: Vec<Arc<Waiter>>,
}

#[derive(Debug)]
struct Waiter {
    ctx: Arc<IoContext>,
    arrival: u64,
    granted: Mutex<bool>,
    wake: Condvar,
}

/// A held dispatch slot; dropping it passes the slot on.
#[must_use = "the slot is released as soon as it is dropped"]
pub struct Slot<'a> {
    sched: &'a Scheduler,
}

impl Scheduler {
    pub fn new(slots: usize) -> Self {
        Scheduler {
            slots: slots.max(1),
            state: Mutex::new(SchedState::default()),
        }
    }

    /// Take a slot for the calling thread's current I/O context.
    pub fn acquire(&self) -> Slot<'_> {
        self.acquire_for(ioctx::current())
    }

    /// Take a slot on behalf of `ctx`, waiting by priority if none is free.
    pub fn acquire_for(&self, ctx: Arc<IoContext>) -> Slot<'_> {
        let waiter = {
            let mut st = self.state.lock();
            if st.in_flight < self.slots && st.waiting.is_empty() {
                st.in_flight += 1;
                return Slot { sched: self };
            }
            let arrival = st.next_arrival;
            st.next_arrival += 1;
            let w = Arc::new(Waiter {
                ctx,
                arrival,
                granted: Mutex::new(false),
                wake: Condvar::new(),
            });
            st.waiting.push(w.clone());
            // A slot may be free while others wait only transiently; hand it
            // out now so the queue never stalls.
            if st.in_flight < self.slots {
                st.in_flight += 1;
                Self::grant_next(&mut st);
            }
            w
        };
        let mut granted = waiter.granted.lock();
        while !*granted {
            waiter.wake.wait(&mut granted);
        }
        Slot { sched: self }
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.state.lock().waiting.len()
    }

    /// Give the slot the caller holds to the most urgent waiter.
    fn grant_next(st: &mut SchedState) {
        let best = st
            .waiting
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| (w.ctx.effective().rank(), w.arrival))
            .map(|(i, _)| i);
        if let Some(i) = best {
            let w = st.waiting.swap_remove(i);
            *w.granted.lock() = true;
            w.wake.notify_one();
        } else {
            st.in_flight -= 1;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut st = self.sched.state.lock();
        Scheduler::grant_next(&mut st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioctx::IoPrio;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    fn wait_queued(s: &Scheduler, n: usize) {
        for _ in 0..2000 {
            if s.queued() == n {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("queue never reached {n}");
    }

    #[test]
    fn free_slots_go_straight_through() {
        let s = Scheduler::new(2);
        let a = s.acquire();
        let b = s.acquire();
        assert_eq!(s.queued(), 0);
        drop(a);
        drop(b);
        let _c = s.acquire();
    }

    #[test]
    fn best_effort_overtakes_queued_idle_work() {
        let s = Arc::new(Scheduler::new(1));
        let gate = s.acquire();
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        for i in 0..3 {
            let (sc, tx) = (s.clone(), tx.clone());
            threads.push(thread::spawn(move || {
                let ctx = IoContext::internal("idle", IoPrio::BACKGROUND);
                let _slot = sc.acquire_for(ctx);
                tx.send(format!("idle{i}")).unwrap();
            }));
            wait_queued(&s, i + 1);
        }
        let (s2, tx2) = (s.clone(), tx.clone());
        threads.push(thread::spawn(move || {
            let _slot = s2.acquire_for(IoContext::internal("fg", IoPrio::DEFAULT));
            tx2.send("be".to_string()).unwrap();
        }));
        wait_queued(&s, 4);
        drop(gate);
        for t in threads {
            t.join().unwrap();
        }
        drop(tx);
        let order: Vec<String> = rx.iter().collect();
        assert_eq!(order, ["be", "idle0", "idle1", "idle2"]);
    }

    #[test]
    fn boosted_idle_waiter_is_served_as_its_booster() {
        let s = Arc::new(Scheduler::new(1));
        let gate = s.acquire();
        let (tx, rx) = mpsc::channel();
        let fg = IoContext::internal("fg", IoPrio::DEFAULT);
        let wb = IoContext::internal("writeback", IoPrio::BACKGROUND);
        let spawn = |name: &'static str, ctx: Arc<IoContext>| {
            let (s, tx) = (Arc::clone(&s), tx.clone());
            thread::spawn(move || {
                let _slot = s.acquire_for(ctx);
                tx.send(name).unwrap();
            })
        };
        let t1 = spawn("writeback", wb.clone());
        wait_queued(&s, 1);
        let t2 = spawn("fg", fg);
        wait_queued(&s, 2);
        // The foreground request would win, unless the writeback it waits
        // on is boosted: arrival order then decides.
        wb.boost(IoPrio::DEFAULT);
        drop(gate);
        t1.join().unwrap();
        t2.join().unwrap();
        drop(tx);
        assert_eq!(rx.iter().collect::<Vec<_>>(), ["writeback", "fg"]);
    }

    #[test]
    fn many_threads_never_exceed_slots() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let s = Arc::new(Scheduler::new(3));
        let inside = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (s, inside, peak) = (s.clone(), inside.clone(), peak.clone());
                thread::spawn(move || {
                    for _ in 0..200 {
                        let _slot = s.acquire();
                        let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        thread::yield_now();
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(s.queued(), 0);
    }
}
