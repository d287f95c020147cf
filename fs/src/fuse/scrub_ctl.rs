//! The daemon's side of `keelfs scrub MOUNTPOINT`: one background scrub at
//! a time, started, paused, resumed, cancelled and reported on through the
//! status socket.
//!
//! What it promises:
//!
//! * [`ScrubControl::command`] answers `start`, `status`, `pause`,
//!   `resume` and `cancel` with one human-readable line (progress in
//!   blocks and percent, copies found bad, blocks repaired, blocks with no
//!   good copy); a second `start` while one runs is refused;
//! * the scrub runs on its own thread (`Fs::scrub`, idle I/O class) and
//!   holds the filesystem only while it runs; [`ScrubControl::shutdown`]
//!   cancels and joins it, so unmount never waits on a scrub.
//!
//! Relies on: `Fs::scrub` checking `ScrubProgress::cancel`/`paused`
//! between chunks.

use crate::core::scrub::ScrubProgress;
use crate::core::Fs;
use parking_lot::Mutex;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

struct Running {
    progress: Arc<ScrubProgress>,
    thread: Option<JoinHandle<Result<(), String>>>,
    started: Instant,
    outcome: Option<Result<(), String>>,
}

/// The current (or last) scrub of a mounted filesystem.
#[derive(Default)]
pub struct ScrubControl {
    current: Mutex<Option<Running>>,
}

impl ScrubControl {
    /// Runs `request` (`start|status|pause|resume|cancel`) on `fs`.
    pub fn command(&self, fs: &Arc<Fs>, request: &str) -> String {
        let mut current = self.current.lock();
        if let Some(r) = current.as_mut() {
            if r.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = r.thread.take().map(|t| t.join());
                r.outcome = Some(match result {
                    Some(Ok(res)) => res,
                    _ => Err("the scrub thread panicked".into()),
                });
            }
        }
        let running = current.as_ref().is_some_and(|r| r.thread.is_some());
        match request {
            "start" if running => "error: a scrub is already running\n".into(),
            "start" if fs.read_only() => {
                "error: the filesystem is mounted read-only (a scrub repairs)\n".into()
            }
            "start" => {
                let progress = Arc::new(ScrubProgress::default());
                let (p, f) = (Arc::clone(&progress), Arc::clone(fs));
                let spawned = std::thread::Builder::new()
                    .name("keelfs-scrub".into())
                    .spawn(move || {
                        log::info!("scrub started");
                        let result = f.scrub(&p).map_err(|e| e.to_string());
                        log::info!("scrub ended: {}", describe(&p, &result));
                        result
                    });
                match spawned {
                    Ok(thread) => {
                        *current = Some(Running {
                            progress,
                            thread: Some(thread),
                            started: Instant::now(),
                            outcome: None,
                        });
                        "scrub started\n".into()
                    }
                    Err(e) => format!("error: cannot start the scrub thread: {e}\n"),
                }
            }
            "pause" | "resume" | "cancel" if !running => "error: no scrub is running\n".into(),
            "pause" | "resume" | "cancel" => {
                let Some(r) = current.as_ref() else {
                    return "error: no scrub is running\n".into();
                };
                match request {
                    "pause" => r.progress.paused.store(true, Ordering::Relaxed),
                    "resume" => r.progress.paused.store(false, Ordering::Relaxed),
                    _ => r.progress.cancel.store(true, Ordering::Relaxed),
                }
                format!("scrub: {request} requested\n")
            }
            "status" => match current.as_ref() {
                None => "scrub: none since mount\n".into(),
                Some(r) => {
                    let state = match (&r.outcome, r.progress.paused.load(Ordering::Relaxed)) {
                        (Some(o), _) => describe(&r.progress, o),
                        (None, true) => format!("paused, {}", counts(&r.progress)),
                        (None, false) => format!(
                            "running for {}s, {}",
                            r.started.elapsed().as_secs(),
                            counts(&r.progress)
                        ),
                    };
                    format!("scrub: {state}\n")
                }
            },
            other => format!("error: unknown scrub command {other:?}\n"),
        }
    }

    /// Cancels a running scrub and waits for it (unmount).
    pub fn shutdown(&self) {
        let thread = {
            let mut current = self.current.lock();
            current.as_mut().and_then(|r| {
                r.progress.cancel.store(true, Ordering::Relaxed);
                r.thread.take()
            })
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn counts(p: &ScrubProgress) -> String {
    let total = p.total.load(Ordering::Relaxed);
    let done = p.done.load(Ordering::Relaxed);
    let percent = if total == 0 {
        0.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    format!(
        "{done} of {total} blocks ({percent:.1}%), {} bad copies, {} repaired, {} unrepairable",
        p.bad_copies.load(Ordering::Relaxed),
        p.repaired.load(Ordering::Relaxed),
        p.lost.load(Ordering::Relaxed)
    )
}

fn describe(p: &ScrubProgress, result: &Result<(), String>) -> String {
    match result {
        Err(e) => format!("failed ({e}), {}", counts(p)),
        Ok(()) if p.cancel.load(Ordering::Relaxed) => format!("cancelled, {}", counts(p)),
        Ok(()) => format!("finished, {}", counts(p)),
    }
}
