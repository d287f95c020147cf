//! Plugging: batch a burst of writes, then submit them sorted and merged.
//!
//! A [`Plug`] collects writes (block, bytes). [`Plug::unplug`] (or dropping
//! the plug) sorts them by block, merges each run of adjacent writes into
//! one vectored device write per leg (the buffers are written back to back
//! with `write_vectored_at`, never copied into one), and submits every run
//! to every in-service leg at once, waiting for all. This is what bufio
//! writeback and the journal use: a dirty list flushed in block order
//! becomes a few large writes.
//!
//! Promises: the blocks written are exactly the ones given, with the last
//! write of a block winning. A write that overlaps a pending one without
//! replacing it exactly first submits what is pending (so the order of the
//! two is kept). The error bits returned are the union over all runs; the
//! result is an error if some run reached no leg.
//!
//! Relies on: [`MirrorSet`]'s write path (a submission holds every block
//! it writes in the set's fence while it is in flight). The plug captures
//! its creator's I/O context: every run is dispatched at that priority.

use super::{ErrorBits, MirrorSet, Payload, WriteUnit};
use crate::error::{EngineError, EngineResult};
use crate::ioctx::{self, IoContext};
use std::collections::BTreeMap;
use std::sync::Arc;

/// At most this many buffers go in one merged write (IOV_MAX is 1024).
const MAX_SEGMENTS: usize = 256;

/// Adjacent writes merged into one: blocks `first..end`.
struct Run {
    first: u64,
    end: u64,
    bufs: Vec<Arc<[u8]>>,
}

/// A batch of writes to one mirror set. See the module documentation.
pub struct Plug<'a> {
    set: &'a MirrorSet,
    ctx: Arc<IoContext>,
    /// First block -> bytes (whole blocks), not overlapping one another.
    pending: BTreeMap<u64, Arc<[u8]>>,
    /// What earlier submissions said.
    bits: ErrorBits,
    error: Option<EngineError>,
}

impl<'a> Plug<'a> {
    pub(super) fn new(set: &'a MirrorSet) -> Self {
        Plug {
            set,
            ctx: ioctx::current(),
            pending: BTreeMap::new(),
            bits: ErrorBits::NONE,
            error: None,
        }
    }

    /// Add a write of `data` (whole blocks) at `block`; `data` is copied
    /// once. Use [`Plug::write_shared`] to avoid the copy.
    pub fn write(&mut self, block: u64, data: &[u8]) -> EngineResult<()> {
        self.write_shared(block, Arc::from(data))
    }

    /// Add a write of `data` (whole blocks) at `block`, without copying.
    pub fn write_shared(&mut self, block: u64, data: Arc<[u8]>) -> EngineResult<()> {
        self.set.shared.check_range(block, data.len())?;
        let end = block + self.blocks(&data);
        let overlaps_before = self
            .pending
            .range(..block)
            .next_back()
            .is_some_and(|(&b, d)| b + self.blocks(d) > block);
        let inside: Vec<(u64, usize)> = self
            .pending
            .range(block..end)
            .map(|(&b, d)| (b, d.len()))
            .collect();
        let replaces_exactly = inside == [(block, data.len())];
        if overlaps_before || !(inside.is_empty() || replaces_exactly) {
            self.submit();
        }
        self.pending.insert(block, data);
        Ok(())
    }

    /// Writes waiting in the plug.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Submit everything and wait: the union of the error bits, or the
    /// first error.
    pub fn unplug(mut self) -> EngineResult<ErrorBits> {
        self.submit();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(self.bits),
        }
    }

    fn blocks(&self, data: &[u8]) -> u64 {
        data.len() as u64 / u64::from(self.set.block_size())
    }

    /// Submit the pending writes as merged runs and wait for them.
    fn submit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let writes: Vec<(u64, usize)> = self.pending.iter().map(|(&b, d)| (b, d.len())).collect();
        let _fence = self.set.shared.fence_writes(&writes);
        let legs = match self.set.shared.write_legs_nonempty() {
            Ok(legs) => legs,
            Err(e) => {
                self.pending.clear();
                self.error.get_or_insert(e);
                return;
            }
        };
        let mut runs: Vec<Run> = Vec::new();
        for (block, data) in std::mem::take(&mut self.pending) {
            let n = self.blocks(&data);
            match runs.last_mut() {
                Some(run) if run.end == block && run.bufs.len() < MAX_SEGMENTS => {
                    run.end += n;
                    run.bufs.push(data);
                }
                _ => runs.push(Run {
                    first: block,
                    end: block + n,
                    bufs: vec![data],
                }),
            }
        }
        let outcomes: Vec<u64> = runs.iter().map(|r| r.first).collect();
        let units = runs
            .into_iter()
            .enumerate()
            .map(|(i, run)| WriteUnit {
                block: run.first,
                outcome: i,
                legs,
                payload: Payload::Shared(Arc::new(run.bufs)),
            })
            .collect();
        match self.set.write_units(self.ctx.clone(), units, &outcomes) {
            Ok(bits) => self.bits = self.bits.union(bits),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }
}

impl Drop for Plug<'_> {
    fn drop(&mut self) {
        self.submit();
        if let Some(e) = self.error.take() {
            log::error!("plug dropped with a failed write: {e}");
        }
    }
}
