//! The journal: every metadata change of the filesystem goes through it.
//!
//! A physical redo journal after ext4's jbd2 (docs/format.md §10 has the
//! on-disk records and the exact procedures). An operation takes a
//! [`TxHandle`] with [`Journal::start`], declares each metadata block it is
//! about to change with [`TxHandle::write`] (the block is pinned in the
//! bufio cache before the write guard is handed out, so no half-made change
//! reaches the block's home location), frees blocks with
//! [`TxHandle::revoke`], logs in-place data overwrites with
//! [`TxHandle::data_intent`] / [`TxHandle::log_intents`] before doing them,
//! and drops the handle. Operations join the running transaction; a commit
//! makes a whole transaction durable at once, and [`Journal::commit`] is
//! what fsync, fdatasync, fsyncdir and syncfs call.
//!
//! What it promises:
//!
//! * **Atomicity and durability.** After a crash, [`recover`] leaves every
//!   metadata block as the last transaction whose commit block reached some
//!   leg left it: all of a transaction or none of it. Everything done by
//!   handles dropped before a [`Journal::commit`] that returned `Ok` is in.
//! * **Ordered data.** Data blocks written by a transaction's handles
//!   before they dropped are durable before its commit block is written
//!   (the flush between a record's body and its commit block covers them).
//! * **Data intents.** An intent returns only once it is durable, and stays
//!   in the journal until the transaction that stores the new tag has
//!   committed; recovery then resolves every intent still in the journal
//!   (`resolve.rs`), so an overwrite in place torn by a crash never reads
//!   back as a checksum error, and a block corrupted otherwise is not
//!   silently re-tagged.
//! * **Group commit.** Concurrent [`Journal::commit`] callers share one
//!   commit; concurrent intent loggers share one record and one flush; a
//!   background thread commits every `commit_interval` and when the bufio
//!   cache reports pressure from pinned buffers.
//! * **Bounded ring use.** A transaction may use at most
//!   [`Journal::max_transaction_blocks`] ring blocks (J/4 by default, as
//!   jbd2); [`Journal::start`] does not let a new handle join until the
//!   ring has room for the running transaction to reach that size — it
//!   checkpoints, and if that is not enough, commits the running
//!   transaction with new handles held back and checkpoints again. The
//!   stall is bounded by one commit plus one cache flush (`checkpoint.rs`).
//! * **Errors.** An I/O error while committing aborts the journal: nothing
//!   of the failed transaction reaches its home blocks (they stay pinned),
//!   and every later `start`/`commit` fails with [`FsError::ReadOnly`], as
//!   ext4 does after a journal abort.
//!
//! Relies on: bufio pins (a pinned buffer never reaches its home); the fs
//! core following the lock order below and changing metadata only through
//! [`TxHandle::write`]; [`recover`] having run on the volume before
//! [`Journal::open`] (which refuses a journal that still holds records).
//!
//! LOCK ORDER (journal locks; the fs core's own order is in the common
//! rules: handle before inode locks before buffer guards):
//!
//! 1. `commit_lock` (one commit at a time; held across a whole commit);
//! 2. `checkpoint_lock` (one checkpoint at a time; held across its flush);
//! 3. `ring` (the window and the head; held across the writes and flushes
//!    of one record or of the journal superblock, never while waiting for
//!    handles or for the cache);
//! 4. `intents` (the intent batch queue; never held across I/O);
//! 5. `state` (the running transaction, counters; a leaf: never held
//!    across I/O or while taking another journal lock; buffer pins are
//!    taken without it).
//!
//! A commit waits for open handles while holding only `commit_lock`; it
//! takes read guards on the transaction's buffers (never with `ring`
//! held). Callers must not hold a buffer guard across `start`, `commit`,
//! `checkpoint` or `data_intent`/`log_intents`, and must not call `commit`
//! while holding a handle (refused with [`FsError::Invalid`]).

mod background;
mod checkpoint;
mod commit;
mod intent;
mod jsb;
mod record;
mod recovery;
mod resolve;
mod ring;
mod scan;
mod transaction;

pub use recovery::{recover, RecoveryReport};
pub use resolve::IntentReport;
pub use transaction::{TxHandle, TxWrite};

use crate::error::{FsError, FsResult};
use crate::format::journal::descriptor_capacity as format_descriptor_capacity;
use crate::format::Layout;
use keelfs_engine::bufio::Bufio;
use keelfs_engine::integrity::Volume;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use ring::{RingGeometry, Window};
use transaction::Running;

/// Work to run once the transaction it was registered in is durable.
pub type CommitHook = Box<dyn FnOnce() + Send>;

/// Tunables of a [`Journal`].
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The background thread commits the running transaction this often
    /// (ext4: 5 s). `None`: no background thread (commits happen only when
    /// asked for or forced by size; tests use this for determinism).
    pub commit_interval: Option<Duration>,
    /// Most ring blocks one transaction may use (its intent records and its
    /// record); `None`: J/4. Clamped to 4 … J − 1.
    pub max_transaction_blocks: Option<u64>,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            commit_interval: Some(Duration::from_secs(5)),
            max_transaction_blocks: None,
        }
    }
}

/// Counters of a [`Journal`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Calls of [`Journal::commit`].
    pub commit_calls: u64,
    /// Transactions committed with a record.
    pub commits: u64,
    /// Commits of a transaction that had nothing to log (a flush only).
    pub empty_commits: u64,
    /// Commits forced by a full ring.
    pub forced_commits: u64,
    /// Images logged.
    pub blocks_logged: u64,
    /// Revokes logged.
    pub revokes_logged: u64,
    /// Calls of `data_intent` / `log_intents`, intents logged, and intent
    /// records written (fewer than calls when concurrent calls share one).
    pub intent_calls: u64,
    pub intents_logged: u64,
    pub intent_records: u64,
    /// Checkpoints that moved the tail, and ring blocks they freed.
    pub checkpoints: u64,
    pub blocks_checkpointed: u64,
    /// The ring now: J, live blocks, blocks a new record may use, and the
    /// positions of the tail (oldest live record) and the head.
    pub ring_blocks: u64,
    pub ring_used: u64,
    pub ring_available: u64,
    pub ring_tail: u64,
    pub ring_head: u64,
    pub running_seq: u64,
    pub committed_seq: u64,
}

#[derive(Default)]
struct Counters {
    commit_calls: AtomicU64,
    commits: AtomicU64,
    empty_commits: AtomicU64,
    forced_commits: AtomicU64,
    blocks_logged: AtomicU64,
    revokes_logged: AtomicU64,
    intent_calls: AtomicU64,
    intents_logged: AtomicU64,
    intent_records: AtomicU64,
    checkpoints: AtomicU64,
    blocks_checkpointed: AtomicU64,
}

/// Size limits, in ring blocks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Hard: a transaction larger than this is not guaranteed room.
    pub max_transaction: u64,
    /// Soft: `start` commits the running transaction first once it is this
    /// large.
    pub soft_transaction: u64,
}

/// Everything under the `state` lock.
pub(crate) struct State {
    pub running: Running,
    /// Ordinal of the running transaction (counts empty commits too: group
    /// commit waits on ordinals, not sequences).
    pub ordinal: u64,
    /// Every transaction up to this ordinal is durable.
    pub committed_ordinal: u64,
    /// The last transaction committed with a record or intents.
    pub committed_seq: u64,
    /// A commit is closing the running transaction: `start` waits.
    pub locked: bool,
    /// A commit forced by a full ring is under way: `start` waits.
    pub held_back: bool,
    /// [`Window::available`], kept here so `start` needs no ring lock.
    pub ring_available: u64,
    /// Ring blocks of a closed transaction whose record is not written yet.
    pub reserved_for_commit: u64,
    /// Threads holding handles, and how many.
    pub owners: HashMap<ThreadId, usize>,
    /// Why the journal aborted.
    pub aborted: Option<String>,
}

impl State {
    /// Whether the ring has room for the running transaction to grow to
    /// `limit` ring blocks (what its intent records used counts).
    pub fn has_room(&self, limit: u64) -> bool {
        let have = self.ring_available.saturating_sub(self.reserved_for_commit);
        have >= limit.saturating_sub(self.running.intent_cost)
    }
}

/// The journal's insides, shared with the background thread.
pub(crate) struct Shared {
    pub cache: Arc<Bufio>,
    pub volume: Arc<Volume>,
    pub layout: Layout,
    pub geo: RingGeometry,
    /// Descriptor entries per block.
    pub capacity: usize,
    pub limits: Limits,
    pub commit_lock: Mutex<()>,
    pub checkpoint_lock: Mutex<()>,
    pub ring: Mutex<Window>,
    pub intents: Mutex<intent::IntentQueue>,
    pub intents_cond: Condvar,
    pub state: Mutex<State>,
    /// Signalled when handles drop, a commit opens or finishes a
    /// transaction, or the journal aborts.
    pub cond: Condvar,
    counters: Counters,
}

/// The filesystem's journal. See the module documentation.
pub struct Journal {
    shared: Arc<Shared>,
    background: Option<(crossbeam::channel::Sender<background::Msg>, JoinHandle<()>)>,
}

/// Whether the journal logs images of `block`: every block from the end
/// of the ring to the one before the backup superblock (the superblocks
/// hold per-leg fields and are written per leg, never logged).
pub(crate) fn journaled(layout: &Layout, block: u64) -> bool {
    block >= layout.journal.end() && block < layout.backup_superblock
}

/// Descriptor entries per descriptor block for `layout`.
pub(crate) fn descriptor_capacity(layout: &Layout) -> usize {
    format_descriptor_capacity(layout.payload_len())
}

impl Journal {
    /// The journal of a volume whose journal has been recovered: continues
    /// after the last sequence recovery left. Refuses (with
    /// [`FsError::Corrupt`]) a journal that still holds committed records.
    pub fn open(
        cache: Arc<Bufio>,
        volume: Arc<Volume>,
        layout: &Layout,
        config: JournalConfig,
    ) -> FsResult<Journal> {
        let bs = layout.block_size as usize;
        if cache.block_size() != bs || volume.block_size() != bs {
            return Err(FsError::Invalid(format!(
                "journal: cache blocks of {} and volume blocks of {} bytes for a layout of {bs}",
                cache.block_size(),
                volume.block_size()
            )));
        }
        let found = jsb::read(&volume, layout)?;
        let jsb = found.jsb;
        let pending = scan::scan(&volume, layout, &jsb)?;
        if let Some(first) = pending.records.first() {
            return Err(FsError::Corrupt(format!(
                "the journal holds {} committed records from sequence {}: run recovery first",
                pending.records.len(),
                first.seq
            )));
        }
        let geo = RingGeometry {
            start: jsb.ring_start,
            blocks: jsb.ring_blocks,
        };
        let capacity = descriptor_capacity(layout);
        let max_transaction = config
            .max_transaction_blocks
            .unwrap_or(geo.blocks / 4)
            .clamp(4, geo.blocks - 1);
        let limits = Limits {
            max_transaction,
            soft_transaction: (max_transaction / 2).max(1),
        };
        let window = Window::new(geo, capacity, jsb.oldest_position);
        let seq = jsb.oldest_sequence;
        let shared = Arc::new(Shared {
            cache,
            volume,
            layout: *layout,
            geo,
            capacity,
            limits,
            commit_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            state: Mutex::new(State {
                running: Running::new(seq),
                ordinal: 1,
                committed_ordinal: 0,
                committed_seq: seq.saturating_sub(1),
                locked: false,
                held_back: false,
                ring_available: window.available(),
                reserved_for_commit: 0,
                owners: HashMap::new(),
                aborted: None,
            }),
            ring: Mutex::new(window),
            intents: Mutex::new(intent::IntentQueue::default()),
            intents_cond: Condvar::new(),
            cond: Condvar::new(),
            counters: Counters::default(),
        });
        let background = match config.commit_interval {
            Some(interval) => Some(background::spawn(&shared, interval)?),
            None => None,
        };
        Ok(Journal { shared, background })
    }

    /// The metadata cache the journal orders.
    pub fn cache(&self) -> &Arc<Bufio> {
        &self.shared.cache
    }

    /// The volume the journal writes its records to.
    pub fn volume(&self) -> &Arc<Volume> {
        &self.shared.volume
    }

    /// Join the running transaction. Waits while a commit closes it, and
    /// first commits or checkpoints when the running transaction is large
    /// or the ring is short of room (see the module documentation).
    pub fn start(&self) -> FsResult<TxHandle<'_>> {
        self.shared.start()
    }

    /// Make every change of every handle dropped before this call durable
    /// (group commit: concurrent callers share one commit).
    pub fn commit(&self) -> FsResult<()> {
        self.shared.commit()
    }

    /// Write every committed block home and free the ring space of every
    /// transaction whose blocks are all home (see `checkpoint.rs`).
    pub fn checkpoint(&self) -> FsResult<()> {
        self.shared.checkpoint().map(|_| ())
    }

    /// Last commit before unmount: commit, write everything home and empty
    /// the ring, so the next mount has nothing to recover. Stops the
    /// background thread.
    pub fn shutdown(&self) -> FsResult<()> {
        if let Some((tx, _)) = &self.background {
            let _ = tx.send(background::Msg::Stop);
        }
        self.shared.commit()?;
        self.shared.checkpoint()?;
        let left = self.shared.ring.lock().records().len();
        if left > 0 {
            log::warn!("journal: {left} records still live at shutdown (blocks still pinned?)");
        }
        Ok(())
    }

    /// The sequence of the last transaction known durable.
    pub fn committed_seq(&self) -> u64 {
        self.shared.state.lock().committed_seq
    }

    /// The sequence of the running transaction.
    pub fn running_seq(&self) -> u64 {
        self.shared.state.lock().running.seq
    }

    /// Ring blocks one transaction may use.
    pub fn max_transaction_blocks(&self) -> u64 {
        self.shared.limits.max_transaction
    }

    /// Why the journal aborted, if it did.
    pub fn aborted(&self) -> Option<String> {
        self.shared.state.lock().aborted.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> JournalStats {
        let (used, available, tail, head) = {
            let ring = self.shared.ring.lock();
            (ring.used(), ring.available(), ring.tail(), ring.head())
        };
        let st = self.shared.state.lock();
        let c = &self.shared.counters;
        JournalStats {
            commit_calls: c.commit_calls.load(Relaxed),
            commits: c.commits.load(Relaxed),
            empty_commits: c.empty_commits.load(Relaxed),
            forced_commits: c.forced_commits.load(Relaxed),
            blocks_logged: c.blocks_logged.load(Relaxed),
            revokes_logged: c.revokes_logged.load(Relaxed),
            intent_calls: c.intent_calls.load(Relaxed),
            intents_logged: c.intents_logged.load(Relaxed),
            intent_records: c.intent_records.load(Relaxed),
            checkpoints: c.checkpoints.load(Relaxed),
            blocks_checkpointed: c.blocks_checkpointed.load(Relaxed),
            ring_blocks: self.shared.geo.blocks,
            ring_used: used,
            ring_available: available,
            ring_tail: tail,
            ring_head: head,
            running_seq: st.running.seq,
            committed_seq: st.committed_seq,
        }
    }
}

impl Drop for Journal {
    /// Stops the background thread; commits nothing (call
    /// [`Journal::shutdown`] first).
    fn drop(&mut self) {
        if let Some((tx, thread)) = self.background.take() {
            let _ = tx.send(background::Msg::Stop);
            if thread.join().is_err() {
                log::error!("journal: the background thread panicked");
            }
        }
    }
}

impl Shared {
    /// The error of an aborted journal.
    fn aborted_error(why: &str) -> FsError {
        log::debug!("journal: refused, aborted earlier: {why}");
        FsError::ReadOnly
    }

    /// Abort the journal because of `err`; returns `err`.
    fn abort(&self, err: FsError) -> FsError {
        log::error!("journal: aborting: {err}");
        let mut st = self.state.lock();
        st.aborted.get_or_insert_with(|| err.to_string());
        st.locked = false;
        st.held_back = false;
        self.cond.notify_all();
        err
    }

    fn start(&self) -> FsResult<TxHandle<'_>> {
        let me = std::thread::current().id();
        loop {
            let mut st = self.state.lock();
            if let Some(why) = &st.aborted {
                return Err(Self::aborted_error(why));
            }
            let nested = st.owners.get(&me).is_some_and(|&n| n > 0);
            if !nested {
                if st.locked || st.held_back {
                    self.cond.wait(&mut st);
                    continue;
                }
                if st.running.total(self.capacity) >= self.limits.soft_transaction {
                    let target = st.ordinal;
                    drop(st);
                    self.commit_to(target)?;
                    continue;
                }
                if !st.has_room(self.limits.max_transaction) {
                    drop(st);
                    self.make_space()?;
                    continue;
                }
            }
            st.running.handles += 1;
            st.running.joined += 1;
            *st.owners.entry(me).or_insert(0) += 1;
            return Ok(TxHandle {
                shared: self,
                seq: st.running.seq,
                owner: me,
            });
        }
    }
}
