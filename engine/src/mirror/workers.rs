//! The threads that carry a mirror request to each leg at once.
//!
//! Each leg has a [`JobQueue`] and a few worker threads that pop jobs from
//! it and run them. A job is one leg's share of a request (write this run,
//! flush, read this range) and carries the submitter's I/O context: the
//! queue hands out the most urgent job first (class, level, then arrival,
//! read at pop time as the scheduler does), the worker enters that context
//! while it runs the job, and the job takes the leg's scheduler slot with
//! `acquire_for(ctx)`. A worker's own identity never decides a priority.
//!
//! A [`Completion`] counts a request's outstanding leg jobs and gathers
//! their error bits; the last job to finish wakes the waiter or runs the
//! async callback (with no lock held).
//!
//! Promises: every queued job runs exactly once, either on a worker or on
//! the submitting thread, which *steals* its own request's jobs that no
//! worker has started yet ([`JobQueue::steal`]) instead of sleeping. That
//! is what keeps a synchronous request issued from inside an async
//! callback (on a worker) from deadlocking when every worker of a leg is
//! busy. On shutdown ([`JobQueue::close`]) workers drain the queue before
//! they exit, so callbacks still run exactly once.
//!
//! Relies on: jobs never block on anything but a leg's scheduler slot and
//! the device itself, so a started job always finishes.
//!
//! Lock order: `JobQueue::state` and `Completion::state` are leaf locks;
//! neither is held while a job or a callback runs.

use super::request::ErrorBits;
use crate::error::{DeviceError, EngineError, EngineResult};
use crate::ioctx::{self, IoContext};
use parking_lot::{Condvar, Mutex};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;

/// The body of a job.
pub(super) type JobFn = Box<dyn FnOnce() + Send>;

/// An async completion callback.
pub type Callback = Box<dyn FnOnce(EngineResult<ErrorBits>) + Send>;

struct Job {
    arrival: u64,
    request: u64,
    ctx: Arc<IoContext>,
    run: JobFn,
}

/// One leg's queue of jobs, served most urgent first.
pub(super) struct JobQueue {
    /// Lock order: leaf.
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: Vec<Job>,
    next_arrival: u64,
    closed: bool,
}

impl JobQueue {
    pub(super) fn new() -> Self {
        JobQueue {
            state: Mutex::new(QueueState::default()),
            ready: Condvar::new(),
        }
    }

    /// Queue `run` for request `request` on behalf of `ctx`.
    pub(super) fn push(&self, ctx: Arc<IoContext>, request: u64, run: JobFn) {
        let mut st = self.state.lock();
        let arrival = st.next_arrival;
        st.next_arrival += 1;
        st.jobs.push(Job {
            arrival,
            request,
            ctx,
            run,
        });
        drop(st);
        self.ready.notify_one();
    }

    /// The most urgent job, waiting for one; `None` once closed and empty.
    fn pop(&self) -> Option<Job> {
        let mut st = self.state.lock();
        loop {
            let best = st
                .jobs
                .iter()
                .enumerate()
                .min_by_key(|(_, j)| (j.ctx.effective().rank(), j.arrival))
                .map(|(i, _)| i);
            if let Some(i) = best {
                return Some(st.jobs.swap_remove(i));
            }
            if st.closed {
                return None;
            }
            self.ready.wait(&mut st);
        }
    }

    /// Take back a not yet started job of `request`, to run it here.
    pub(super) fn steal(&self, request: u64) -> Option<JobFn> {
        let mut st = self.state.lock();
        let i = st.jobs.iter().position(|j| j.request == request)?;
        Some(st.jobs.swap_remove(i).run)
    }

    /// Jobs waiting for a worker.
    pub(super) fn len(&self) -> usize {
        self.state.lock().jobs.len()
    }

    /// No more jobs will come: workers exit once the queue is empty.
    pub(super) fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Start `count` workers serving `queue`.
pub(super) fn spawn_workers(
    queue: Arc<JobQueue>,
    leg: usize,
    count: usize,
) -> Vec<thread::JoinHandle<()>> {
    (0..count)
        .map(|i| {
            let q = queue.clone();
            thread::Builder::new()
                .name(format!("keelfs-leg{leg}.{i}"))
                .spawn(move || worker_loop(&q))
                .expect("spawn mirror worker thread")
        })
        .collect()
}

fn worker_loop(queue: &JobQueue) {
    while let Some(job) = queue.pop() {
        let _scope = ioctx::enter(job.ctx);
        // A panicking callback must not take the worker (and with it every
        // later job of this leg) down.
        if panic::catch_unwind(AssertUnwindSafe(job.run)).is_err() {
            log::error!("mirror worker: a job panicked; continuing");
        }
    }
}

/// What kind of request a [`Completion`] belongs to (it decides the error
/// when no leg succeeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Write,
    Flush,
    Discard,
}

/// The outstanding leg jobs of one request.
pub(super) struct Completion {
    /// Lock order: leaf.
    state: Mutex<CompletionState>,
    all_done: Condvar,
}

struct CompletionState {
    kind: OpKind,
    remaining: usize,
    failed: ErrorBits,
    /// Per outcome (e.g. one merged run of a plug): its first block, and
    /// whether some leg took it.
    outcomes: Vec<(u64, bool)>,
    first_error: Option<DeviceError>,
    callback: Option<Callback>,
}

impl Completion {
    /// A request of `jobs` leg jobs towards outcomes starting at `outcome_blocks`.
    pub(super) fn new(
        kind: OpKind,
        jobs: usize,
        outcome_blocks: &[u64],
        callback: Option<Callback>,
    ) -> Arc<Self> {
        Arc::new(Completion {
            state: Mutex::new(CompletionState {
                kind,
                remaining: jobs,
                failed: ErrorBits::NONE,
                outcomes: outcome_blocks.iter().map(|&b| (b, false)).collect(),
                first_error: None,
                callback,
            }),
            all_done: Condvar::new(),
        })
    }

    /// One leg job towards outcome `outcome` has answered.
    pub(super) fn finish(&self, leg: usize, outcome: usize, result: Result<(), DeviceError>) {
        let mut st = self.state.lock();
        match result {
            Ok(()) => st.outcomes[outcome].1 = true,
            Err(e) => {
                st.failed.set(leg);
                st.first_error.get_or_insert(e);
            }
        }
        st.remaining -= 1;
        if st.remaining > 0 {
            return;
        }
        self.all_done.notify_all();
        if let Some(cb) = st.callback.take() {
            let result = st.result();
            drop(st);
            cb(result);
        }
    }

    /// Wait for every leg job, then give the request's result.
    pub(super) fn wait(&self) -> EngineResult<ErrorBits> {
        let mut st = self.state.lock();
        while st.remaining > 0 {
            self.all_done.wait(&mut st);
        }
        st.result()
    }
}

impl CompletionState {
    fn result(&mut self) -> EngineResult<ErrorBits> {
        let Some(&(block, _)) = self.outcomes.iter().find(|(_, ok)| !ok) else {
            return Ok(self.failed);
        };
        Err(match self.kind {
            OpKind::Write => EngineError::WriteFailed { block },
            OpKind::Flush => EngineError::FlushFailed,
            OpKind::Discard => match self.first_error.take() {
                Some(e) => EngineError::Device(e),
                None => EngineError::NoLegs,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioctx::IoPrio;
    use std::sync::mpsc;

    #[test]
    fn queue_serves_urgent_first_and_steals_by_request() {
        let q = JobQueue::new();
        let (tx, rx) = mpsc::channel();
        for (name, prio, req) in [
            ("idle", IoPrio::BACKGROUND, 1),
            ("be", IoPrio::DEFAULT, 2),
            ("be2", IoPrio::DEFAULT, 3),
        ] {
            let tx = tx.clone();
            q.push(
                IoContext::internal(name, prio),
                req,
                Box::new(move || tx.send(name).unwrap()),
            );
        }
        (q.steal(3).unwrap())();
        assert!(q.steal(3).is_none());
        q.close();
        while let Some(j) = q.pop() {
            (j.run)();
        }
        drop(tx);
        assert_eq!(rx.iter().collect::<Vec<_>>(), ["be2", "be", "idle"]);
    }

    #[test]
    fn completion_reports_no_success_per_kind() {
        let err = || DeviceError::Injected {
            device: "d".into(),
            op: "write",
            offset: 0,
        };
        let c = Completion::new(OpKind::Write, 2, &[7], None);
        c.finish(0, 0, Err(err()));
        c.finish(1, 0, Err(err()));
        assert!(matches!(
            c.wait(),
            Err(EngineError::WriteFailed { block: 7 })
        ));
        let c = Completion::new(OpKind::Flush, 2, &[0], None);
        c.finish(0, 0, Ok(()));
        c.finish(1, 0, Err(err()));
        assert_eq!(c.wait().unwrap(), ErrorBits::of_legs(&[1]));
    }
}
