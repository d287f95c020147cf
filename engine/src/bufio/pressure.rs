//! Memory pressure notification.
//!
//! bufio cannot unpin buffers (only the journal knows when a transaction has
//! committed), nor release holds. When it has to exceed its memory limit
//! because every buffer is held, pinned or unwritable, it tells the owner
//! through a callback registered with [`super::Bufio::on_pressure`].

use std::sync::Arc;

/// What the cache looked like when it had to exceed its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureInfo {
    pub current_bytes: u64,
    pub limit_bytes: u64,
    pub pinned_buffers: u64,
    pub dirty_buffers: u64,
}

/// Called, with no bufio lock held, on the thread that needed memory
/// (a reader, a releaser or the background thread). It should be cheap and
/// must not block on bufio: e.g. wake the journal's commit thread, which
/// will commit and unpin.
pub type PressureCallback = Arc<dyn Fn(&PressureInfo) + Send + Sync>;
