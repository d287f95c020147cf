//! The prefetch thread: loads blocks `prefetch` inserted as loading
//! entries, so readers that arrive meanwhile wait for that one read.

use super::buffer::Buffer;
use super::cache::Inner;
use crossbeam::channel::Receiver;
use std::sync::Arc;

/// One block to load: its loading entry.
pub(crate) struct PrefetchJob {
    pub(crate) block: u64,
    pub(crate) shard: usize,
    pub(crate) slot: u32,
    pub(crate) buf: Arc<Buffer>,
}

pub(crate) enum PrefetchMsg {
    Load(Vec<PrefetchJob>),
    Shutdown,
}

/// Body of the prefetch thread. Its reads run in the thread's default I/O
/// context: a reader may be waiting on them, so they are not idle work.
pub(crate) fn prefetch_loop(inner: &Inner, queue: &Receiver<PrefetchMsg>) {
    while let Ok(msg) = queue.recv() {
        match msg {
            PrefetchMsg::Load(jobs) => inner.run_prefetch(jobs),
            PrefetchMsg::Shutdown => return,
        }
    }
}
