//! A worker pool for FUSE requests.
//!
//! fuser's session loop reads one request at a time and calls the
//! `Filesystem` method inline, so one slow request (a read that waits for a
//! failing leg, an fsync) would stall every other request. The adapter instead
//! moves the request's arguments and its `Reply*` (which is `Send`) into a job
//! and hands it to a [`WorkerPool`]; a worker runs it and replies.
//!
//! A pool of **zero threads** runs each job on the thread that submits it
//! (with the same counters and panic catching). That is the default: the
//! daemon then runs several fuser session loops
//! ([`super::daemon::ServeConfig`]), and they are the workers — a request
//! costs no hand-off between threads (one context switch less, which on
//! busy cores is most of a small request's latency), and a slow request
//! holds up only its own loop, as a slow job holds up only its worker.
//!
//! Life cycle, which the daemon's fork dictates:
//! * [`WorkerPool::new`] creates the queue but no threads, so the pool can be
//!   built with the filesystem before the mount (threads do not survive
//!   `fork`, and `Filesystem::init` runs before the fork).
//! * [`WorkerPool::start`] spawns the workers; call it from the daemon's
//!   after-fork hook ([`super::daemon::Hooks::after_fork`]). It records the
//!   process id: a job submitted from another process (a pool started before
//!   the fork) is refused instead of waiting forever. Each submitting thread
//!   reads its process id once (a thread-local), so a submission costs no
//!   system call; a thread created after the fork (every fuser session
//!   thread is) reads the child's id. Not caught: the very thread that forked
//!   submitting in both processes (the daemon forks before any request).
//! * [`WorkerPool::spawn`] queues a job; when the bounded queue is full it
//!   blocks, which stops the session loop from reading more requests
//!   (backpressure: the kernel holds them). A refused job is handed back so
//!   the caller can reply `EIO` or run it inline.
//! * [`WorkerPool::shutdown`] closes the queue, lets the workers finish every
//!   queued job, and joins them. Call it first thing in
//!   `Filesystem::destroy`, before flushing. It is idempotent and may be
//!   called from a worker (that worker is not joined).
//!
//! Idle workers sleep on a condition variable (a futex) and are woken one
//! per queued job; nothing spins or yields (a spinning receive cost several
//! `sched_yield` calls per request on busy cores).
//!
//! A job that panics is caught and logged; the worker carries on (a `Reply*`
//! dropped during the unwind answers `EIO`). Jobs must not wait for another
//! FUSE request to be processed: with a full queue the loop is blocked.

use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("the worker pool has not been started")]
    NotStarted,
    #[error("the worker pool was started in another process (before a fork)")]
    OtherProcess,
    #[error("the worker pool is shut down")]
    ShutDown,
    #[error("cannot start worker thread: {0}")]
    Spawn(std::io::ErrorKind),
}

/// A job that was not queued, handed back with the reason.
pub struct Rejected<F> {
    pub job: F,
    pub reason: PoolError,
}

impl<F> std::fmt::Debug for Rejected<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rejected")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Size and name of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Number of worker threads; 0: jobs run on the submitting thread.
    pub threads: usize,
    /// Jobs that may wait in the queue before `spawn` blocks (at least 1).
    pub queue_depth: usize,
    /// Thread name prefix (`NAME-0`, `NAME-1`, ...).
    pub name: String,
}

/// Threads that serve requests when nothing else is said: four per core
/// (requests mostly wait for I/O), at least 4, at most 64. The default
/// number of fuser session loops too.
pub fn default_threads() -> usize {
    let cores = thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 4).clamp(4, 64)
}

impl Default for PoolConfig {
    /// No worker threads (jobs run on the session loops that submit them,
    /// see the module docs), 256 queued jobs if threads are configured.
    fn default() -> Self {
        PoolConfig {
            threads: 0,
            queue_depth: 256,
            name: "keelfs-worker".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    Running { pid: u32 },
    ShutDown,
}

/// The queue and the pool's state, under one lock (held only to push or
/// pop, never while a job runs).
struct Queue {
    state: State,
    jobs: VecDeque<Job>,
    /// Workers waiting on `not_empty` (a wake-up is sent only if one is).
    idle_workers: usize,
    /// Submitters waiting on `not_full`.
    blocked_spawners: usize,
}

struct Inner {
    config: PoolConfig,
    queue: Mutex<Queue>,
    /// Signalled once per queued job and on shutdown (workers wait here).
    not_empty: Condvar,
    /// Signalled when a job leaves a full queue (`spawn` waits here).
    not_full: Condvar,
    workers: Mutex<Vec<(ThreadId, JoinHandle<()>)>>,
    queued: AtomicUsize,
    completed: AtomicU64,
    panicked: AtomicU64,
}

/// A fixed set of worker threads fed by a bounded queue, or none (jobs run
/// on their submitters). Cheap to clone (all clones are the same pool).
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("config", &self.inner.config)
            .field("state", &lock(&self.inner.queue).state)
            .field("queued", &self.queued())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    /// The process id as this thread first saw it (see the module docs).
    static MY_PID: Cell<Option<u32>> = const { Cell::new(None) };
}

/// The calling process's id, read once per thread.
fn my_pid() -> u32 {
    MY_PID.with(|pid| {
        pid.get().unwrap_or_else(|| {
            let id = std::process::id();
            pid.set(Some(id));
            id
        })
    })
}

impl WorkerPool {
    /// A pool with its queue but no threads yet.
    pub fn new(config: PoolConfig) -> WorkerPool {
        let config = PoolConfig {
            threads: config.threads,
            queue_depth: config.queue_depth.max(1),
            name: config.name,
        };
        WorkerPool {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue {
                    state: State::Idle,
                    jobs: VecDeque::with_capacity(config.queue_depth),
                    idle_workers: 0,
                    blocked_spawners: 0,
                }),
                config,
                not_empty: Condvar::new(),
                not_full: Condvar::new(),
                workers: Mutex::new(Vec::new()),
                queued: AtomicUsize::new(0),
                completed: AtomicU64::new(0),
                panicked: AtomicU64::new(0),
            }),
        }
    }

    /// Spawn the worker threads. Starting a running pool does nothing;
    /// starting one that was shut down is an error.
    pub fn start(&self) -> Result<(), PoolError> {
        let me = std::process::id();
        let mut queue = lock(&self.inner.queue);
        match queue.state {
            State::Running { pid } if pid == me => return Ok(()),
            State::Running { .. } => return Err(PoolError::OtherProcess),
            State::ShutDown => return Err(PoolError::ShutDown),
            State::Idle => {}
        }
        let mut workers = lock(&self.inner.workers);
        for i in 0..self.inner.config.threads {
            let inner = Arc::clone(&self.inner);
            let handle = thread::Builder::new()
                .name(format!("{}-{i}", self.inner.config.name))
                .spawn(move || worker(&inner))
                .map_err(|e| PoolError::Spawn(e.kind()))?;
            workers.push((handle.thread().id(), handle));
        }
        queue.state = State::Running { pid: me };
        Ok(())
    }

    /// Queue `job`; blocks while the queue is full. Refused (and handed back)
    /// if the pool is not running in this process.
    pub fn spawn<F>(&self, job: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        let inner = &*self.inner;
        if inner.config.threads == 0 {
            return self.run_here(job);
        }
        let mut queue = lock(&inner.queue);
        loop {
            let refusal = match queue.state {
                State::Running { pid } if pid == my_pid() => None,
                State::Running { .. } => Some(PoolError::OtherProcess),
                State::Idle => Some(PoolError::NotStarted),
                State::ShutDown => Some(PoolError::ShutDown),
            };
            if let Some(reason) = refusal {
                return Err(Rejected { job, reason });
            }
            if queue.jobs.len() < inner.config.queue_depth {
                break;
            }
            queue.blocked_spawners += 1;
            queue = inner
                .not_full
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            queue.blocked_spawners -= 1;
        }
        queue.jobs.push_back(Box::new(job));
        inner.queued.fetch_add(1, Ordering::Relaxed);
        let wake = queue.idle_workers > 0;
        drop(queue);
        if wake {
            inner.not_empty.notify_one();
        }
        Ok(())
    }

    /// A pool of zero threads: run `job` on this thread, counted as a
    /// worker would.
    fn run_here<F>(&self, job: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        let inner = &*self.inner;
        let refusal = match lock(&inner.queue).state {
            State::Running { .. } => None,
            State::Idle => Some(PoolError::NotStarted),
            State::ShutDown => Some(PoolError::ShutDown),
        };
        if let Some(reason) = refusal {
            return Err(Rejected { job, reason });
        }
        inner.queued.fetch_add(1, Ordering::Relaxed);
        run_job(inner, job);
        Ok(())
    }

    /// Close the queue, run every queued job, join the workers. Idempotent.
    pub fn shutdown(&self) {
        lock(&self.inner.queue).state = State::ShutDown;
        self.inner.not_empty.notify_all();
        self.inner.not_full.notify_all();
        let me = thread::current().id();
        let workers = std::mem::take(&mut *lock(&self.inner.workers));
        for (id, handle) in workers {
            if id != me {
                let _ = handle.join();
            }
        }
    }

    /// Jobs queued or running.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Jobs finished (including those that panicked).
    pub fn completed(&self) -> u64 {
        self.inner.completed.load(Ordering::Relaxed)
    }

    /// Jobs that panicked.
    pub fn panicked(&self) -> u64 {
        self.inner.panicked.load(Ordering::Relaxed)
    }

    /// The configuration (after clamping).
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }
}

/// The next job; `None` once the pool is shut down *and* the queue is
/// empty (queued jobs still run).
fn next_job(inner: &Inner) -> Option<Job> {
    let mut queue = lock(&inner.queue);
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            let wake = queue.blocked_spawners > 0;
            drop(queue);
            if wake {
                inner.not_full.notify_one();
            }
            return Some(job);
        }
        if matches!(queue.state, State::ShutDown) {
            return None;
        }
        queue.idle_workers += 1;
        queue = inner
            .not_empty
            .wait(queue)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queue.idle_workers -= 1;
    }
}

fn worker(inner: &Inner) {
    while let Some(job) = next_job(inner) {
        run_job(inner, job);
    }
}

/// Run a counted job (`queued` already includes it), catching a panic.
fn run_job(inner: &Inner, job: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        inner.panicked.fetch_add(1, Ordering::Relaxed);
        log::error!("a worker job panicked; its request was answered with EIO");
    }
    inner.queued.fetch_sub(1, Ordering::Relaxed);
    inner.completed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    fn pool(threads: usize, queue_depth: usize) -> WorkerPool {
        WorkerPool::new(PoolConfig {
            threads,
            queue_depth,
            name: "test".into(),
        })
    }

    #[test]
    fn jobs_before_start_are_handed_back() {
        let p = pool(2, 4);
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let rejected = p
            .spawn(move || flag.store(true, Ordering::SeqCst))
            .unwrap_err();
        assert_eq!(rejected.reason, PoolError::NotStarted);
        (rejected.job)(); // handed back: the caller can still run it inline
        assert!(ran.load(Ordering::SeqCst));
        p.start().unwrap();
        p.start().unwrap();
        p.spawn(|| ()).unwrap();
        p.shutdown();
        assert_eq!(p.spawn(|| ()).unwrap_err().reason, PoolError::ShutDown);
        assert_eq!(p.start().unwrap_err(), PoolError::ShutDown);
        assert_eq!(p.completed(), 1);
    }

    #[test]
    fn a_pool_of_no_threads_runs_jobs_on_the_submitter() {
        let p = pool(0, 4);
        assert_eq!(p.spawn(|| ()).unwrap_err().reason, PoolError::NotStarted);
        p.start().unwrap();
        let me = thread::current().id();
        let (tx, rx) = std::sync::mpsc::channel();
        p.spawn(move || tx.send(thread::current().id()).unwrap())
            .unwrap();
        assert_eq!(
            rx.try_recv().unwrap(),
            me,
            "ran here, before spawn returned"
        );
        p.spawn(|| panic!("job failure (expected by the test)"))
            .unwrap();
        assert_eq!((p.completed(), p.panicked(), p.queued()), (2, 1, 0));
        p.shutdown();
        assert_eq!(p.spawn(|| ()).unwrap_err().reason, PoolError::ShutDown);
    }

    #[test]
    fn a_slow_job_does_not_block_the_others() {
        let p = pool(3, 8);
        p.start().unwrap();
        let release = Arc::new(Barrier::new(2));
        let slow_done = Arc::new(AtomicBool::new(false));
        {
            let release = Arc::clone(&release);
            let slow_done = Arc::clone(&slow_done);
            p.spawn(move || {
                release.wait();
                slow_done.store(true, Ordering::SeqCst);
            })
            .unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            p.spawn(move || tx.send(i).unwrap()).unwrap();
        }
        let mut got: Vec<i32> = (0..10)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(5))
                    .expect("fast job stuck")
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert!(!slow_done.load(Ordering::SeqCst));
        release.wait();
        p.shutdown();
        assert!(slow_done.load(Ordering::SeqCst));
        assert_eq!((p.completed(), p.queued()), (11, 0));
    }

    #[test]
    fn full_queue_blocks_spawn() {
        let p = pool(1, 1);
        p.start().unwrap();
        let gate = Arc::new(Barrier::new(2));
        let g = Arc::clone(&gate);
        p.spawn(move || {
            g.wait();
        })
        .unwrap(); // running, holds the only worker
        p.spawn(|| ()).unwrap(); // fills the queue
        let p2 = p.clone();
        let started = Instant::now();
        let blocked = thread::spawn(move || {
            p2.spawn(|| ()).unwrap();
            started.elapsed()
        });
        thread::sleep(Duration::from_millis(200));
        assert!(!blocked.is_finished(), "spawn should block on a full queue");
        gate.wait();
        assert!(blocked.join().unwrap() >= Duration::from_millis(200));
        p.shutdown();
        assert_eq!(p.completed(), 3);
    }

    #[test]
    fn every_blocked_submitter_gets_in() {
        // Three submitters wait on a full queue of one; as the gate opens,
        // each must be let in (not only the one woken by the first pop).
        let p = pool(1, 1);
        p.start().unwrap();
        let gate = Arc::new(Barrier::new(2));
        let g = Arc::clone(&gate);
        let (started, running) = std::sync::mpsc::channel();
        p.spawn(move || {
            started.send(()).unwrap();
            g.wait();
        })
        .unwrap();
        running.recv_timeout(Duration::from_secs(5)).unwrap();
        p.spawn(|| thread::sleep(Duration::from_millis(20)))
            .unwrap();
        let submitters: Vec<_> = (0..3)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || p.spawn(|| ()).unwrap())
            })
            .collect();
        thread::sleep(Duration::from_millis(100));
        gate.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        for s in submitters {
            while !s.is_finished() {
                assert!(Instant::now() < deadline, "a submitter stayed blocked");
                thread::sleep(Duration::from_millis(5));
            }
            s.join().unwrap();
        }
        p.shutdown();
        assert_eq!(p.completed(), 5);
    }

    #[test]
    fn shutdown_drains_the_queue() {
        let p = pool(1, 64);
        p.start().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        for _ in 0..50 {
            let count = Arc::clone(&count);
            p.spawn(move || {
                thread::sleep(Duration::from_millis(1));
                count.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        p.shutdown();
        p.shutdown();
        assert_eq!(count.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn a_panicking_job_does_not_kill_its_worker() {
        let p = pool(1, 4);
        p.start().unwrap();
        p.spawn(|| panic!("job failure (expected by the test)"))
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        p.spawn(move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        p.shutdown();
        assert_eq!((p.panicked(), p.completed()), (1, 2));
    }

    #[test]
    fn shutdown_from_a_worker_does_not_deadlock() {
        let p = pool(2, 4);
        p.start().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        p.spawn(move || {
            p2.shutdown();
            tx.send(()).unwrap();
        })
        .unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(p.spawn(|| ()).unwrap_err().reason, PoolError::ShutDown);
    }
}
