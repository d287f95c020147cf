//! Logging data intents durably before in-place overwrites, with group
//! commit of concurrent intents.
//!
//! What it promises ([`Shared::log_intents`]):
//!
//! * When it returns `Ok`, an intent-only record holding the intents (a
//!   descriptor with `DataIntent` entries and a commit block, sequence =
//!   the running transaction's, no images) is durable on every in-service
//!   leg: the overwrite may proceed.
//! * Concurrent callers share records: intents queued while a record is
//!   being written all go into the next one (one leader writes, the others
//!   wait for it), so N concurrent overwrites cost far fewer than N flushes.
//! * The record stays in the ring until the transaction that carries the
//!   new tags has committed (see `ring.rs`), so recovery sees it whenever
//!   the overwrite may be half done.
//! * Intent records of a transaction are written after the record of the
//!   transaction before it (the commit holds the ring lock from before it
//!   opens the next transaction until its commit block is durable), so the
//!   ring stays in sequence order.
//!
//! Room: the ring is kept with room for the running transaction to reach
//! its limit (`Journal::start` sees to it), and intents count against that
//! limit. A caller inside a handle cannot force a commit (the commit would
//! wait for its handle), so past the limit it checkpoints once and, if
//! there is still no room, gets [`FsError::NoSpace`].
//!
//! Relies on: every caller being inside a handle of the running
//! transaction (a transaction cannot commit while one of its handles waits
//! here, so every intent queued together belongs to the same transaction).

use crate::error::{FsError, FsResult};
use crate::format::{DescriptorEntry, Tag};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;

use super::record;
use super::ring::{record_len, LiveKind, LiveRecord};
use super::Shared;

/// Intents waiting for a record, and which records are done.
#[derive(Default)]
pub(crate) struct IntentQueue {
    pending: Vec<(u64, Tag, Tag)>,
    /// The batch now collecting intents (ids start at 1).
    collecting: u64,
    /// Every batch up to this one is written (or failed).
    done: u64,
    /// Someone is writing a batch.
    leader: bool,
    /// Batches whose record failed, and why.
    failed: HashMap<u64, Failure>,
}

/// Why a batch failed, as its waiters are told.
#[derive(Debug, Clone)]
enum Failure {
    NoSpace,
    Invalid(String),
    /// The journal aborted.
    Aborted,
}

impl Failure {
    fn of(e: &FsError) -> Failure {
        match e {
            FsError::NoSpace => Failure::NoSpace,
            FsError::Invalid(why) => Failure::Invalid(why.clone()),
            _ => Failure::Aborted,
        }
    }

    fn error(&self) -> FsError {
        match self {
            Failure::NoSpace => FsError::NoSpace,
            Failure::Invalid(why) => FsError::Invalid(why.clone()),
            Failure::Aborted => FsError::ReadOnly,
        }
    }
}

impl Shared {
    /// Log `intents` of transaction `seq` durably. See the module
    /// documentation.
    pub(crate) fn log_intents(&self, seq: u64, intents: &[(u64, Tag, Tag)]) -> FsResult<()> {
        if intents.is_empty() {
            return Ok(());
        }
        for &(block, _, _) in intents {
            if !self.layout.is_data_block(block) {
                return Err(FsError::Invalid(format!(
                    "data intent on block {block}, which is not in the data area"
                )));
            }
        }
        if let Some(why) = &self.state.lock().aborted {
            return Err(Self::aborted_error(why));
        }
        self.counters.intent_calls.fetch_add(1, Relaxed);
        self.counters
            .intents_logged
            .fetch_add(intents.len() as u64, Relaxed);
        let mut q = self.intents.lock();
        if q.collecting == 0 {
            q.collecting = 1;
        }
        q.pending.extend_from_slice(intents);
        let mine = q.collecting;
        loop {
            if q.done >= mine {
                return match q.failed.get(&mine) {
                    Some(failure) => Err(failure.error()),
                    None => Ok(()),
                };
            }
            if !q.leader {
                q.leader = true;
                let batch = q.collecting;
                q.collecting += 1;
                let entries = std::mem::take(&mut q.pending);
                drop(q);
                let result = self.write_intent_record(seq, &entries);
                q = self.intents.lock();
                q.leader = false;
                q.done = batch;
                self.intents_cond.notify_all();
                if let Err(e) = result {
                    // The leader's own batch: it gets the error itself.
                    q.failed.insert(batch, Failure::of(&e));
                    if batch == mine {
                        return Err(e);
                    }
                }
                continue;
            }
            self.intents_cond.wait(&mut q);
        }
    }

    /// Write one intent-only record for `intents` at the head.
    fn write_intent_record(&self, seq: u64, intents: &[(u64, Tag, Tag)]) -> FsResult<()> {
        if intents.is_empty() {
            return Ok(());
        }
        let entries: Vec<DescriptorEntry> = intents
            .iter()
            .map(|&(home, old, new)| DescriptorEntry::DataIntent { home, old, new })
            .collect();
        let tag_blocks: Vec<u64> = intents
            .iter()
            .filter_map(|&(b, _, _)| self.layout.tag_location(b).ok().map(|at| at.block))
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect();
        let len = record_len(entries.len(), 0, self.capacity);
        let mut checkpointed = false;
        loop {
            let mut ring = self.ring.lock();
            let cost = ring.intent_cost(len, &tag_blocks);
            if ring.available() < cost {
                drop(ring);
                if checkpointed {
                    log::warn!(
                        "journal: no ring room for an intent record of {len} blocks \
                         (transaction {seq} has outgrown its limit)"
                    );
                    return Err(FsError::NoSpace);
                }
                self.checkpoint()?;
                checkpointed = true;
                continue;
            }
            {
                let st = self.state.lock();
                if let Some(why) = &st.aborted {
                    return Err(Self::aborted_error(why));
                }
                if st.running.seq != seq {
                    return Err(FsError::Invalid(format!(
                        "data intents of transaction {seq} logged after it closed"
                    )));
                }
            }
            let pos = ring.head();
            let written = record::build(
                &self.volume,
                self.geo,
                pos,
                seq,
                &entries,
                Vec::new(),
                self.capacity,
            )
            .and_then(|built| record::write(self.volume.set(), &built));
            if let Err(e) = written {
                drop(ring);
                return Err(self.abort(e));
            }
            ring.push(LiveRecord {
                seq,
                pos,
                len,
                kind: LiveKind::Intents { tag_blocks },
            });
            {
                let mut st = self.state.lock();
                st.running.intent_records += 1;
                st.running.intent_cost += cost;
                st.ring_available = ring.available();
            }
            self.counters.intent_records.fetch_add(1, Relaxed);
            return Ok(());
        }
    }
}
