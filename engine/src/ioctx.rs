//! I/O contexts, after blk-ioc.
//!
//! Every piece of I/O the engine does is done on behalf of someone: a FUSE
//! caller (known by its pid), or internal work (background writeback,
//! scrub, resync). An [`IoContext`] is that someone: it holds the priority
//! class and level that `ioprio_get(2)` reports for the pid, and can be
//! boosted while it holds up a higher-class requester (priority
//! inheritance: idle writeback that a best-effort fsync waits on is served
//! as best-effort until it is done).
//!
//! Contexts are looked up per pid in an [`IoContextTable`] and shared by
//! every request of that pid (reference-counted with `Arc`). The table keeps
//! a context for [`IDLE_AFTER`] after its pid's last request, so a pid that
//! sends one request after another (every FUSE caller) costs no system call
//! per request: its priority is read from the kernel (`ioprio_get` and
//! `getpriority`) when the context is made and again at most every
//! [`REFRESH_AFTER`], lazily, on a lookup. A context unused for longer
//! is forgotten (reaped on a later lookup). The context a thread is working for is
//! thread-local ("current", like the kernel's `current->io_context`): the
//! FUSE worker enters the caller's context for the length of a request with
//! [`enter`], and the schedulers below read it with [`current`], so no
//! layer has to thread a priority argument through every call.

use parking_lot::Mutex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A priority class, in dispatch order (lower value goes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IoClass {
    RealTime = 1,
    BestEffort = 2,
    Idle = 3,
}

/// A class and a level inside it (0 is the most urgent, 7 the least).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IoPrio {
    pub class: IoClass,
    pub level: u8,
}

impl IoPrio {
    /// What a process that never called ioprio_set gets at nice 0.
    pub const DEFAULT: IoPrio = IoPrio {
        class: IoClass::BestEffort,
        level: 4,
    };
    /// Internal background work: writeback, scrub, resync.
    pub const BACKGROUND: IoPrio = IoPrio {
        class: IoClass::Idle,
        level: 7,
    };

    /// A total order for dispatch: smaller is served first.
    pub fn rank(self) -> u16 {
        (self.class as u16) << 8 | self.level as u16
    }

    fn from_rank(r: u16) -> IoPrio {
        let class = match r >> 8 {
            1 => IoClass::RealTime,
            2 => IoClass::BestEffort,
            _ => IoClass::Idle,
        };
        IoPrio {
            class,
            level: (r & 0xff) as u8,
        }
    }

    /// Decode an `ioprio_get` value. Class 0 (none) means best-effort at a
    /// level derived from the nice value, as the kernel does.
    pub fn from_ioprio(value: i32, nice: i32) -> IoPrio {
        let level = (value & 0x1fff).clamp(0, 7) as u8;
        match value >> 13 {
            1 => IoPrio {
                class: IoClass::RealTime,
                level,
            },
            2 => IoPrio {
                class: IoClass::BestEffort,
                level,
            },
            3 => IoPrio {
                class: IoClass::Idle,
                level: 7,
            },
            _ => IoPrio {
                class: IoClass::BestEffort,
                level: ((nice.clamp(-20, 19) + 20) / 5) as u8,
            },
        }
    }

    /// The I/O priority of a process, as `ioprio_get(IOPRIO_WHO_PROCESS)`
    /// reports it. A process that is gone gets the default.
    pub fn of_pid(pid: u32) -> IoPrio {
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        // SAFETY: ioprio_get takes two integers and returns an integer; no
        // memory is shared with the kernel.
        let value =
            unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, pid as libc::c_int) };
        if value < 0 {
            return IoPrio::DEFAULT;
        }
        // SAFETY: getpriority takes integers only. errno is cleared first
        // because -1 is a valid nice value.
        let nice = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t)
        };
        IoPrio::from_ioprio(value as i32, nice)
    }
}

/// One requester's I/O context.
#[derive(Debug)]
pub struct IoContext {
    /// The pid it belongs to, or 0 for internal work.
    pub pid: u32,
    /// Human-readable owner ("pid 123", "writeback").
    pub label: String,
    /// The priority of the requester (a rank, see [`IoPrio::rank`]).
    base_rank: AtomicU16,
    /// A temporary raise while this context holds up someone more urgent.
    boost_rank: AtomicU16,
    /// When `base_rank` was last read from the kernel.
    refreshed: Mutex<Instant>,
}

impl IoContext {
    /// A context for internal work at a fixed priority.
    pub fn internal(label: &str, prio: IoPrio) -> Arc<IoContext> {
        Arc::new(IoContext {
            pid: 0,
            label: label.to_string(),
            base_rank: AtomicU16::new(prio.rank()),
            boost_rank: AtomicU16::new(u16::MAX),
            refreshed: Mutex::new(Instant::now()),
        })
    }

    fn for_pid(pid: u32, now: Instant) -> IoContext {
        IoContext {
            pid,
            label: format!("pid {pid}"),
            base_rank: AtomicU16::new(IoPrio::of_pid(pid).rank()),
            boost_rank: AtomicU16::new(u16::MAX),
            refreshed: Mutex::new(now),
        }
    }

    /// Read the pid's priority from the kernel again if the last reading
    /// is older than [`REFRESH_AFTER`] (one request of the pid does it; the
    /// others go on with the old value meanwhile).
    fn refresh_if_due(&self, now: Instant) {
        let Some(mut refreshed) = self.refreshed.try_lock() else {
            return;
        };
        if now.saturating_duration_since(*refreshed) > REFRESH_AFTER {
            *refreshed = now;
            drop(refreshed);
            self.base_rank
                .store(IoPrio::of_pid(self.pid).rank(), Ordering::Relaxed);
        }
    }

    /// The priority this context's I/O is dispatched at now.
    pub fn effective(&self) -> IoPrio {
        let r = self
            .base_rank
            .load(Ordering::Relaxed)
            .min(self.boost_rank.load(Ordering::Relaxed));
        IoPrio::from_rank(r)
    }

    /// The requester's own priority.
    pub fn base(&self) -> IoPrio {
        IoPrio::from_rank(self.base_rank.load(Ordering::Relaxed))
    }

    /// Serve this context at least at `prio` until [`IoContext::unboost`].
    pub fn boost(&self, prio: IoPrio) {
        self.boost_rank.fetch_min(prio.rank(), Ordering::Relaxed);
    }

    pub fn unboost(&self) {
        self.boost_rank.store(u16::MAX, Ordering::Relaxed);
    }
}

/// How long a pid's priority is trusted before it is read again (a caller
/// can be re-niced with `ionice -p` while it runs). Also what a reused pid
/// may inherit at worst: the priority of its predecessor, for this long.
pub const REFRESH_AFTER: Duration = Duration::from_secs(1);

/// How long the table keeps the context of a pid that sends no requests.
pub const IDLE_AFTER: Duration = Duration::from_secs(10);

/// Table entries beyond which a lookup reaps the idle ones.
const REAP_FLOOR: usize = 64;

/// One pid's entry: its context and when a request last asked for it.
#[derive(Debug)]
struct Entry {
    ctx: Arc<IoContext>,
    used: Instant,
}

/// The contexts of recent requesters, by pid. A lookup of a known pid is a
/// hash lookup under a short lock, with no system call unless the priority
/// is due for a refresh.
#[derive(Debug, Default)]
pub struct IoContextTable {
    /// pid -> context. Idle entries are reaped on insert once the table
    /// has doubled since the last reap.
    by_pid: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<u32, Entry>,
    reap_at: usize,
}

impl IoContextTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The context of `pid`, shared with every request it has in flight.
    pub fn get(&self, pid: u32) -> Arc<IoContext> {
        self.get_at(pid, Instant::now())
    }

    /// [`IoContextTable::get`] as if the time were `now` (tests move the
    /// clock).
    fn get_at(&self, pid: u32, now: Instant) -> Arc<IoContext> {
        let mut table = self.by_pid.lock();
        if let Some(entry) = table.entries.get_mut(&pid) {
            entry.used = now;
            let ctx = entry.ctx.clone();
            drop(table);
            ctx.refresh_if_due(now);
            return ctx;
        }
        let ctx = Arc::new(IoContext::for_pid(pid, now));
        table.entries.insert(
            pid,
            Entry {
                ctx: ctx.clone(),
                used: now,
            },
        );
        if table.entries.len() > table.reap_at.max(REAP_FLOOR) {
            // Forget contexts idle for long and held by no request.
            table.entries.retain(|_, e| {
                Arc::strong_count(&e.ctx) > 1 || now.saturating_duration_since(e.used) < IDLE_AFTER
            });
            table.reap_at = table.entries.len() * 2;
        }
        ctx
    }

    /// How many pids have a context a request holds right now.
    pub fn live(&self) -> usize {
        self.by_pid
            .lock()
            .entries
            .values()
            .filter(|e| Arc::strong_count(&e.ctx) > 1)
            .count()
    }

    /// How many pids the table remembers (live or idle).
    pub fn known(&self) -> usize {
        self.by_pid.lock().entries.len()
    }
}

fn default_context() -> Arc<IoContext> {
    static DEFAULT: OnceLock<Arc<IoContext>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| IoContext::internal("default", IoPrio::DEFAULT))
        .clone()
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<IoContext>>> = const { RefCell::new(None) };
}

/// The context the calling thread is doing I/O for (best-effort default).
pub fn current() -> Arc<IoContext> {
    CURRENT
        .with(|c| c.borrow().clone())
        .unwrap_or_else(default_context)
}

/// Make `ctx` the calling thread's context until the guard drops.
pub fn enter(ctx: Arc<IoContext>) -> ContextScope {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(ctx));
    ContextScope { previous }
}

/// Restores the previous context of the thread when dropped.
#[must_use = "the context is left as soon as the scope is dropped"]
pub struct ContextScope {
    previous: Option<Arc<IoContext>>,
}

impl Drop for ContextScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_ioprio_values() {
        assert_eq!(IoPrio::from_ioprio(3 << 13, 0).class, IoClass::Idle);
        assert_eq!(
            IoPrio::from_ioprio(1 << 13 | 2, 0),
            IoPrio {
                class: IoClass::RealTime,
                level: 2
            }
        );
        assert_eq!(IoPrio::from_ioprio(0, 0), IoPrio::DEFAULT);
        assert_eq!(IoPrio::from_ioprio(0, 19).level, 7);
        assert_eq!(IoPrio::from_ioprio(0, -20).level, 0);
        assert!(IoPrio::DEFAULT.rank() < IoPrio::BACKGROUND.rank());
    }

    #[test]
    fn reads_own_priority_and_sees_ionice() {
        let me = std::process::id();
        assert_eq!(IoPrio::of_pid(me).class, IoClass::BestEffort);
        // A child started under `ionice -c3` is idle-class.
        let mut child = std::process::Command::new("ionice")
            .args(["-c3", "sleep", "5"])
            .spawn()
            .expect("ionice (util-linux) is installed");
        std::thread::sleep(Duration::from_millis(100));
        let p = IoPrio::of_pid(child.id());
        child.kill().ok();
        child.wait().ok();
        assert_eq!(p.class, IoClass::Idle);
    }

    #[test]
    fn table_shares_and_forgets_contexts() {
        let t = IoContextTable::new();
        let me = std::process::id();
        let a = t.get(me);
        let b = t.get(me);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(t.live(), 1);
        drop(a);
        drop(b);
        assert_eq!(t.live(), 0);
        // Kept while recently used: the next request reuses it.
        let again = t.get(me);
        assert_eq!(t.known(), 1);
        drop(again);
        // Idle for long: reaped once the table grows.
        let later = Instant::now() + IDLE_AFTER * 2;
        for pid in 0..=REAP_FLOOR as u32 {
            t.get_at(u32::MAX - pid, later);
        }
        assert_eq!(
            t.known(),
            REAP_FLOOR + 1,
            "the idle context of {me} is forgotten"
        );
        let fresh = t.get_at(me, later);
        assert_eq!(fresh.pid, me);
    }

    #[test]
    fn cached_context_refreshes_its_priority_lazily() {
        let t = IoContextTable::new();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let pid = child.id();
        let start = Instant::now();
        let ctx = t.get_at(pid, start);
        assert_eq!(ctx.base().class, IoClass::BestEffort);
        let reniced = std::process::Command::new("ionice")
            .args(["-c3", "-p", &pid.to_string()])
            .status()
            .expect("ionice (util-linux) is installed");
        assert!(reniced.success());
        // Within REFRESH_AFTER the cached value is served...
        assert_eq!(t.get_at(pid, start).base().class, IoClass::BestEffort);
        // ...after it, the kernel is asked again.
        let later = start + REFRESH_AFTER * 2;
        assert_eq!(t.get_at(pid, later).base().class, IoClass::Idle);
        child.kill().ok();
        child.wait().ok();
    }

    #[test]
    fn current_context_is_scoped_and_boostable() {
        assert_eq!(current().effective(), IoPrio::DEFAULT);
        let wb = IoContext::internal("writeback", IoPrio::BACKGROUND);
        {
            let _s = enter(wb.clone());
            assert_eq!(current().effective().class, IoClass::Idle);
            wb.boost(IoPrio::DEFAULT);
            assert_eq!(current().effective(), IoPrio::DEFAULT);
            wb.unboost();
            assert_eq!(current().effective().class, IoClass::Idle);
        }
        assert_eq!(current().effective(), IoPrio::DEFAULT);
    }
}
