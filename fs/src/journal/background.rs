//! The journal's background thread (jbd2's kjournald2).
//!
//! What it promises: every `interval`, and whenever the bufio cache
//! reports pressure from pinned buffers (its pressure callback kicks this
//! thread), it commits the running transaction if it holds anything, then
//! checkpoints if more than half the ring is live, so the ring rarely
//! fills in the foreground. Errors are logged (a failed commit aborts the
//! journal, which the next foreground call reports). It stops when the
//! journal is dropped or shut down.
//!
//! Relies on: holding no handle (so it may commit); the pressure callback
//! being non-blocking (a channel send).

use crate::error::{FsError, FsResult};
use crossbeam::channel::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::Shared;

/// Messages to the thread.
pub(crate) enum Msg {
    /// Something may need committing now.
    Kick,
    Stop,
}

/// Start the thread; it holds only a weak reference to the journal.
pub(crate) fn spawn(
    shared: &Arc<Shared>,
    interval: Duration,
) -> FsResult<(Sender<Msg>, JoinHandle<()>)> {
    let (tx, rx) = channel::unbounded();
    let kick = tx.clone();
    shared.cache.on_pressure(move |_| {
        let _ = kick.send(Msg::Kick);
    });
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let thread = thread::Builder::new()
        .name("keelfs-journal".into())
        .spawn(move || loop {
            let kicked = match rx.recv_timeout(interval) {
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Msg::Kick) => true,
                Err(RecvTimeoutError::Timeout) => false,
            };
            let Some(shared) = weak.upgrade() else {
                return;
            };
            shared.background_pass(interval, kicked);
        })
        .map_err(|e| FsError::Invalid(format!("journal: cannot start its thread: {e}")))?;
    Ok((tx, thread))
}

impl Shared {
    fn background_pass(&self, interval: Duration, kicked: bool) {
        let target = {
            let st = self.state.lock();
            if st.aborted.is_some() {
                return;
            }
            let due = kicked
                || st.running.opened.elapsed() >= interval
                || st.running.total(self.capacity) >= self.limits.soft_transaction;
            (due && !st.running.is_empty()).then_some(st.ordinal)
        };
        if let Some(target) = target {
            if let Err(e) = self.commit_to(target) {
                log::error!("journal: background commit: {e}");
                return;
            }
        }
        let busy = {
            let ring = self.ring.lock();
            ring.used() * 2 > self.geo.blocks
        };
        if busy {
            if let Err(e) = self.checkpoint() {
                log::error!("journal: background checkpoint: {e}");
            }
        }
    }
}
