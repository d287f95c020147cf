//! The cache proper: lookups and loads, holds, dirtying, pins, forget,
//! discard and move. Memory policy is in `reclaim.rs`, writeback in
//! `writeback.rs`.

use super::buffer::{duplicate_error, BufHandle, Buffer};
use super::config::BufioConfig;
use super::prefetch::{self, PrefetchJob, PrefetchMsg};
use super::pressure::{PressureCallback, PressureInfo};
use super::shard::{shard_of, Entry, Shard, ShardGuard, SHARDS};
use super::stats::{BufioStats, Counters};
use super::writeback::{self, BackgroundMsg};
use super::BlockStore;
use crate::error::{EngineError, EngineResult};
use crossbeam::channel::{self, Sender};
use crossbeam::utils::CachePadded;
use parking_lot::{Condvar, Mutex, RwLock};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// Above this many blocks, `forget_range` scans the index instead of
/// looking every block up.
const FORGET_SCAN_THRESHOLD: u64 = 1024;

/// What a cache is made of, shared by the [`Bufio`] front, its handles and
/// its background threads.
pub(crate) struct Inner {
    pub(crate) store: Arc<dyn BlockStore>,
    pub(crate) block_size: usize,
    pub(crate) num_blocks: u64,
    pub(crate) config: BufioConfig,
    shards: Box<[CachePadded<Shard>]>,
    pub(crate) counters: Counters,
    /// Time origin of entry stamps.
    epoch: Instant,
    /// Leaf lock: the registered pressure callback.
    pressure: RwLock<Option<PressureCallback>>,
    /// Wakes the background writeback thread (if any).
    wakeup: Option<Sender<BackgroundMsg>>,
    /// A wakeup is queued and not yet acted on (dedupes kicks).
    pub(crate) kick_pending: AtomicBool,
    /// `write_dirty_async` asked for every dirty buffer to be written.
    pub(crate) write_all_requested: AtomicBool,
    pub(crate) shutting_down: AtomicBool,
    /// Feeds the prefetch thread (if any).
    prefetch_queue: Option<Sender<PrefetchMsg>>,
    /// Leaf lock: bumped after every completed `write_run`, so that reclaim
    /// can wait for in-flight writes to free memory.
    pub(crate) writes_done: Mutex<u64>,
    pub(crate) writes_done_cv: Condvar,
}

/// What a lookup that misses does.
#[derive(Clone, Copy)]
enum Acquire {
    /// Read the block from the store (with an expected generation).
    Read(Option<u64>),
    /// Zero-fill, no read.
    New,
}

/// A metadata block cache over a [`BlockStore`], after dm-bufio.
///
/// See the [module documentation](super) for its promises, memory policy
/// and locking order.
pub struct Bufio {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl Bufio {
    /// A cache over `store`. Starts the background writeback and prefetch
    /// threads unless `config.background_tick` is `None`.
    pub fn new(store: Arc<dyn BlockStore>, config: BufioConfig) -> EngineResult<Self> {
        let block_size = store.block_size();
        config.validate(block_size)?;
        let tick = config.background_tick;
        let (wakeup, wakeup_rx) = match tick {
            Some(_) => {
                let (tx, rx) = channel::unbounded();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let (prefetch_queue, prefetch_rx) = match tick {
            Some(_) => {
                let (tx, rx) = channel::unbounded();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            num_blocks: store.num_blocks(),
            store,
            block_size,
            config,
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Shard::new()))
                .collect(),
            counters: Counters::default(),
            epoch: Instant::now(),
            pressure: RwLock::new(None),
            wakeup,
            kick_pending: AtomicBool::new(false),
            write_all_requested: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            prefetch_queue,
            writes_done: Mutex::new(0),
            writes_done_cv: Condvar::new(),
        });
        let mut bufio = Bufio {
            inner,
            threads: Vec::new(),
        };
        if let (Some(tick), Some(rx)) = (tick, wakeup_rx) {
            let inner = Arc::clone(&bufio.inner);
            bufio.threads.push(spawn("bufio-writeback", move || {
                writeback::background_loop(&inner, &rx, tick)
            })?);
        }
        if let Some(rx) = prefetch_rx {
            let inner = Arc::clone(&bufio.inner);
            bufio.threads.push(spawn("bufio-prefetch", move || {
                prefetch::prefetch_loop(&inner, &rx)
            })?);
        }
        Ok(bufio)
    }

    /// Bytes per block (the store's).
    pub fn block_size(&self) -> usize {
        self.inner.block_size
    }

    /// Blocks in the store.
    pub fn num_blocks(&self) -> u64 {
        self.inner.num_blocks
    }

    pub fn config(&self) -> &BufioConfig {
        &self.inner.config
    }

    /// Hold `block`, reading it from the store on a miss. Concurrent readers
    /// of one missing block share one read; if it fails, each gets the
    /// error and nothing stays cached.
    pub fn read(&self, block: u64) -> EngineResult<BufHandle<'_>> {
        self.inner.acquire(block, Acquire::Read(None))
    }

    /// As [`read`](Self::read), passing `expect_gen` to the store on a miss
    /// (a cached buffer is trusted as it is).
    pub fn read_expect(&self, block: u64, expect_gen: u64) -> EngineResult<BufHandle<'_>> {
        self.inner.acquire(block, Acquire::Read(Some(expect_gen)))
    }

    /// Hold `block` only if it is cached and loaded. Never reads and never
    /// waits for I/O or for another thread's load.
    pub fn get(&self, block: u64) -> Option<BufHandle<'_>> {
        self.inner.get(block)
    }

    /// Hold `block` with its bytes zeroed, without reading the store (for a
    /// block about to be overwritten whole). The zeroed buffer is not marked
    /// dirty: pin it first if needed, fill it, then `mark_dirty`. Must not
    /// be called while this thread holds a data guard on `block`.
    pub fn new_buf(&self, block: u64) -> EngineResult<BufHandle<'_>> {
        self.inner.acquire(block, Acquire::New)
    }

    /// Start reading `count` blocks from `block` in the background; nothing
    /// stays held. A hint: blocks already cached are skipped, and it stops
    /// early rather than push the cache over its limit.
    pub fn prefetch(&self, block: u64, count: u64) -> EngineResult<()> {
        self.inner.prefetch(block, count)
    }

    /// Kick background writeback of every dirty unpinned buffer (done in the
    /// caller, skipping buffers whose data lock is busy, if there is no
    /// background thread).
    pub fn write_dirty_async(&self) {
        self.inner.write_dirty_async();
    }

    /// Write every dirty unpinned buffer (held ones included) and wait for
    /// the writes, including those other writebacks had in flight. Returns
    /// the first write error; the buffers that failed stay dirty. Pinned
    /// buffers are left dirty. Must not be called while holding a data guard.
    pub fn write_dirty_sync(&self) -> EngineResult<()> {
        self.inner.write_dirty_sync()
    }

    /// `write_dirty_sync`, then a store flush (done even if a write failed;
    /// the write error is returned first).
    pub fn flush(&self) -> EngineResult<()> {
        let written = self.inner.write_dirty_sync();
        let flushed = self.inner.store.flush();
        written.and(flushed)
    }

    /// Forget `count` blocks from `block` (see [`forget`](Self::forget)),
    /// then discard them on the store.
    pub fn discard(&self, block: u64, count: u64) -> EngineResult<()> {
        self.inner.check_range(block, count)?;
        self.inner.forget_range(block, count);
        self.inner.store.discard(block, count)
    }

    /// Drop `block` from the cache without writing it (its unwritten changes
    /// are lost), unless it is held, pinned, loading or being written.
    /// Returns whether it was dropped.
    pub fn forget(&self, block: u64) -> bool {
        self.inner.forget(block)
    }

    /// [`forget`](Self::forget) every block of `block..block + count`;
    /// returns how many were dropped.
    pub fn forget_range(&self, block: u64, count: u64) -> u64 {
        self.inner.forget_range(block, count)
    }

    /// Re-home a held buffer to `new_block` and release it, as dm-bufio's
    /// `dm_bufio_release_move`: if dirty, the buffer is first written to its
    /// old block (so both blocks end up with its bytes); then `new_block`
    /// gets a dirty buffer with those bytes, replacing whatever was cached
    /// there. `Invalid` (and the handle is released) if the buffer is
    /// pinned, or `new_block` is held, pinned or loading. Must not be called
    /// while holding a data guard.
    pub fn release_move(&self, handle: BufHandle<'_>, new_block: u64) -> EngineResult<()> {
        self.inner.release_move(handle, new_block)
    }

    /// Drop one pin of a cached `block` (for an owner that kept no handle).
    pub fn unpin_block(&self, block: u64) -> EngineResult<()> {
        let shard = shard_of(block);
        let slot = {
            let st = self.inner.shard(shard).lock();
            st.lookup(block).filter(|&slot| st.entry(slot).loaded)
        };
        match slot {
            Some(slot) => self.inner.unpin(shard, slot, block),
            None => Err(EngineError::Invalid(format!(
                "bufio: unpin of block {block}, which is not cached"
            ))),
        }
    }

    /// Pinned blocks, ascending.
    pub fn pinned_blocks(&self) -> Vec<u64> {
        let mut blocks = Vec::new();
        for shard in self.inner.shards.iter() {
            let st = shard.lock();
            blocks.extend(
                st.list_from_back(super::shard::ListKind::Pinned)
                    .map(|slot| st.entry(slot).block),
            );
        }
        blocks.sort_unstable();
        blocks
    }

    /// Holders of `block`, if it is cached (a loading block counts its
    /// loader).
    pub fn hold_count(&self, block: u64) -> Option<u32> {
        let st = self.inner.shard(shard_of(block)).lock();
        st.lookup(block).map(|slot| st.entry(slot).hold_count)
    }

    /// Whether `block` is cached and loaded.
    pub fn is_cached(&self, block: u64) -> bool {
        let st = self.inner.shard(shard_of(block)).lock();
        st.lookup(block).is_some_and(|slot| st.entry(slot).loaded)
    }

    /// Register the memory pressure callback (replacing any previous one).
    pub fn on_pressure(&self, callback: impl Fn(&PressureInfo) + Send + Sync + 'static) {
        *self.inner.pressure.write() = Some(Arc::new(callback));
    }

    /// Free clean unheld buffers unused for `max_age` (down to the resident
    /// minimum) now, as the background thread does every tick. Returns how
    /// many were freed.
    pub fn age_out(&self) -> u64 {
        self.inner.age_out()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BufioStats {
        self.inner.stats()
    }
}

impl Drop for Bufio {
    /// Stops the background threads. Does not write anything: call
    /// [`Bufio::flush`] first (pinned buffers must not be written anyway).
    fn drop(&mut self) {
        self.inner.shutting_down.store(true, Relaxed);
        if let Some(wakeup) = &self.inner.wakeup {
            let _ = wakeup.send(BackgroundMsg::Shutdown);
        }
        if let Some(queue) = &self.inner.prefetch_queue {
            let _ = queue.send(PrefetchMsg::Shutdown);
        }
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                log::error!("bufio: a background thread panicked");
            }
        }
        let dirty = self.inner.counters.dirty_buffers();
        if dirty > 0 {
            log::warn!("bufio: dropped with {dirty} dirty buffers not written");
        }
    }
}

impl std::fmt::Debug for Bufio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bufio")
            .field("block_size", &self.inner.block_size)
            .field("stats", &self.inner.stats())
            .finish()
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> EngineResult<JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|err| EngineError::Invalid(format!("bufio: cannot start {name}: {err}")))
}

impl Inner {
    pub(crate) fn shard(&self, index: usize) -> &Shard {
        &self.shards[index]
    }

    pub(crate) fn shards(&self) -> impl Iterator<Item = (usize, &Shard)> {
        self.shards.iter().map(|shard| &**shard).enumerate()
    }

    /// Nanoseconds since the cache's epoch (entry stamps).
    pub(crate) fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub(crate) fn block_bytes(&self) -> u64 {
        self.block_size as u64
    }

    fn check_range(&self, block: u64, count: u64) -> EngineResult<()> {
        match block.checked_add(count) {
            Some(end) if end <= self.num_blocks => Ok(()),
            _ => Err(EngineError::Invalid(format!(
                "bufio: blocks {block}+{count} beyond the store's {} blocks",
                self.num_blocks
            ))),
        }
    }

    pub(crate) fn with_entry<T>(&self, shard: usize, slot: u32, f: impl FnOnce(&Entry) -> T) -> T {
        f(self.shard(shard).lock().entry(slot))
    }

    fn handle(&self, block: u64, slot: u32, buf: Arc<Buffer>) -> BufHandle<'_> {
        BufHandle {
            cache: self,
            block,
            shard: shard_of(block),
            slot,
            buf,
        }
    }

    fn acquire(&self, block: u64, how: Acquire) -> EngineResult<BufHandle<'_>> {
        self.check_range(block, 1)?;
        let shard_index = shard_of(block);
        let shard = self.shard(shard_index);
        loop {
            let mut st = shard.lock();
            if let Some(slot) = st.lookup(block) {
                if st.entry(slot).loaded {
                    st.hold(slot, 0);
                    st.hits += 1;
                    let buf = Arc::clone(&st.entry(slot).buf);
                    drop(st);
                    let handle = self.handle(block, slot, buf);
                    if let Acquire::New = how {
                        handle.data_mut().fill(0);
                    }
                    return Ok(handle);
                }
                // Someone else is loading it: wait without holding, then
                // look again (it may even have been evicted meanwhile).
                let buf = Arc::clone(&st.entry(slot).buf);
                while st.holds(block, slot, &buf) && !st.entry(slot).loaded {
                    st.wait();
                }
                drop(st);
                if let (Some(err), Acquire::Read(_)) = (buf.load_error(), how) {
                    return Err(duplicate_error(err));
                }
                continue;
            }
            // Miss: insert a loading entry held by us, then load unlocked.
            let buf = Arc::new(Buffer::loading());
            let slot = st.insert(Entry::new(block, Arc::clone(&buf), 1), 0);
            // Counted under the shard lock, before anyone can remove it.
            self.counters.add_buffer(self.block_bytes());
            drop(st);
            self.make_room();
            let loaded = match how {
                Acquire::Read(expect_gen) => {
                    self.counters.misses.fetch_add(1, Relaxed);
                    self.load(block, expect_gen)
                }
                Acquire::New => Ok(vec![0; self.block_size].into_boxed_slice()),
            };
            return match loaded {
                Ok(bytes) => {
                    *buf.data.write() = bytes;
                    self.finish_load(shard_index, slot, &buf, Ok(()));
                    Ok(self.handle(block, slot, buf))
                }
                Err(err) => {
                    self.finish_load(shard_index, slot, &buf, Err(&err));
                    Err(err)
                }
            };
        }
    }

    /// Read `block` from the store into fresh bytes.
    pub(crate) fn load(&self, block: u64, expect_gen: Option<u64>) -> EngineResult<Box<[u8]>> {
        let mut bytes = vec![0; self.block_size].into_boxed_slice();
        self.store.read_block(block, &mut bytes, expect_gen)?;
        Ok(bytes)
    }

    /// Publish the outcome of a load of the loading entry at `slot` and wake
    /// its waiters. On failure the entry goes away (the next read retries).
    pub(crate) fn finish_load(
        &self,
        shard_index: usize,
        slot: u32,
        buf: &Arc<Buffer>,
        outcome: Result<(), &EngineError>,
    ) {
        let shard = self.shard(shard_index);
        let mut st = shard.lock();
        debug_assert!(Arc::ptr_eq(&st.entry(slot).buf, buf));
        let removed = match outcome {
            Ok(()) => {
                st.entry_mut(slot).loaded = true;
                let now = self.now();
                st.relink(slot, now);
                None
            }
            Err(err) => {
                buf.set_load_error(err);
                self.counters.read_errors.fetch_add(1, Relaxed);
                Some(st.remove(slot))
            }
        };
        shard.notify_changed();
        drop(st);
        if removed.is_some() {
            self.counters.remove_buffer(self.block_bytes());
        }
    }

    fn get(&self, block: u64) -> Option<BufHandle<'_>> {
        if block >= self.num_blocks {
            return None;
        }
        let mut st = self.shard(shard_of(block)).lock();
        let slot = st.lookup(block)?;
        if !st.entry(slot).loaded {
            return None;
        }
        st.hold(slot, 0);
        st.hits += 1;
        let buf = Arc::clone(&st.entry(slot).buf);
        drop(st);
        Some(self.handle(block, slot, buf))
    }

    /// A handle was dropped.
    pub(crate) fn release(&self, shard: usize, slot: u32) {
        let now = self.now();
        self.shard(shard).lock().unhold(slot, now);
        if self.counters.current_bytes() > self.config.memory_limit_bytes {
            self.evict_clean_down_to(self.config.memory_limit_bytes);
            self.maybe_kick_writeback();
        }
    }

    pub(crate) fn mark_dirty(&self, handle: &BufHandle<'_>, range: Option<(u32, u32)>) {
        let (start, end) = range.unwrap_or((0, self.block_size as u32));
        let mut st = self.shard(handle.shard).lock();
        let entry = st.entry_mut(handle.slot);
        entry.dirty_seq += 1;
        let became_dirty = !entry.dirty;
        if became_dirty {
            entry.dirty = true;
            entry.dirty_range = (start, end);
            let now = self.now();
            st.relink(handle.slot, now);
            // Counted under the shard lock, before a writeback can clean it.
            self.counters.dirty_buffers.fetch_add(1, Relaxed);
        } else {
            entry.dirty_range = (entry.dirty_range.0.min(start), entry.dirty_range.1.max(end));
        }
        drop(st);
        if became_dirty {
            self.maybe_kick_writeback();
        }
    }

    pub(crate) fn pin(&self, shard: usize, slot: u32) {
        let mut st = self.shard(shard).lock();
        let entry = st.entry_mut(slot);
        entry.pin_count += 1;
        if entry.pin_count == 1 {
            let now = self.now();
            st.relink(slot, now);
            self.counters.pinned_buffers.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn unpin(&self, shard: usize, slot: u32, block: u64) -> EngineResult<()> {
        let mut st = self.shard(shard).lock();
        let entry = st.entry_mut(slot);
        if entry.pin_count == 0 {
            return Err(EngineError::Invalid(format!(
                "bufio: unpin of block {block}, which is not pinned"
            )));
        }
        entry.pin_count -= 1;
        if entry.pin_count == 0 {
            let now = self.now();
            st.relink(slot, now);
            self.counters.pinned_buffers.fetch_sub(1, Relaxed);
            drop(st);
            self.maybe_kick_writeback();
        }
        Ok(())
    }

    /// Remove `block`'s entry if nothing needs it; returns it (to be dropped
    /// after the shard lock) if removed.
    fn forget_locked(&self, st: &mut ShardGuard<'_>, block: u64) -> Option<Entry> {
        let slot = st.lookup(block)?;
        let entry = st.entry(slot);
        if !entry.loaded || entry.hold_count > 0 || entry.pin_count > 0 || entry.write_claimed {
            return None;
        }
        let entry = st.remove(slot);
        if entry.dirty {
            self.counters.dirty_buffers.fetch_sub(1, Relaxed);
        }
        self.counters.remove_buffer(self.block_bytes());
        Some(entry)
    }

    fn forget(&self, block: u64) -> bool {
        let mut st = self.shard(shard_of(block)).lock();
        let forgotten = self.forget_locked(&mut st, block);
        drop(st);
        forgotten.is_some()
    }

    fn forget_range(&self, block: u64, count: u64) -> u64 {
        let end = block.saturating_add(count).min(self.num_blocks);
        if block >= end {
            return 0;
        }
        let mut forgotten = 0;
        if end - block <= FORGET_SCAN_THRESHOLD {
            for b in block..end {
                forgotten += u64::from(self.forget(b));
            }
            return forgotten;
        }
        for (_, shard) in self.shards() {
            let mut st = shard.lock();
            let in_range: Vec<u64> = st
                .indexed()
                .map(|(b, _)| b)
                .filter(|b| (block..end).contains(b))
                .collect();
            let dropped: Vec<Entry> = in_range
                .into_iter()
                .filter_map(|b| self.forget_locked(&mut st, b))
                .collect();
            drop(st);
            forgotten += dropped.len() as u64;
        }
        forgotten
    }

    fn release_move(&self, handle: BufHandle<'_>, new_block: u64) -> EngineResult<()> {
        self.check_range(new_block, 1)?;
        if new_block == handle.block {
            handle.mark_dirty();
            return Ok(());
        }
        // The old block keeps the bytes, as in dm-bufio: write it if dirty.
        self.write_one_sync(handle.shard, handle.slot, handle.block)?;
        let bytes: Box<[u8]> = Box::from(&*handle.data());
        self.install_dirty(new_block, bytes)?;
        drop(handle);
        self.make_room();
        Ok(())
    }

    /// Cache `bytes` as `block`'s dirty contents, replacing a cached buffer
    /// that nobody needs (waiting for its write if one is in flight). The
    /// caller makes room.
    fn install_dirty(&self, block: u64, bytes: Box<[u8]>) -> EngineResult<()> {
        let shard = self.shard(shard_of(block));
        let mut st = shard.lock();
        let mut replaced = None;
        while let Some(slot) = st.lookup(block) {
            let entry = st.entry(slot);
            if !entry.loaded || entry.hold_count > 0 || entry.pin_count > 0 {
                return Err(EngineError::Invalid(format!(
                    "bufio: release_move onto block {block}, which is held, pinned or loading"
                )));
            }
            if entry.write_claimed {
                st.wait();
                continue;
            }
            let old = st.remove(slot);
            if old.dirty {
                self.counters.dirty_buffers.fetch_sub(1, Relaxed);
            }
            self.counters.remove_buffer(self.block_bytes());
            replaced = Some(old);
            break;
        }
        let mut entry = Entry::new(block, Arc::new(Buffer::with_data(bytes)), 0);
        entry.loaded = true;
        entry.dirty = true;
        entry.dirty_seq = 1;
        entry.dirty_range = (0, self.block_size as u32);
        let now = self.now();
        st.insert(entry, now);
        self.counters.dirty_buffers.fetch_add(1, Relaxed);
        self.counters.add_buffer(self.block_bytes());
        drop(st);
        drop(replaced);
        Ok(())
    }

    fn prefetch(&self, block: u64, count: u64) -> EngineResult<()> {
        self.check_range(block, count)?;
        let limit = self.config.memory_limit_bytes;
        let bytes = self.block_bytes();
        let mut jobs = Vec::new();
        for b in block..block + count {
            if self.counters.current_bytes() + bytes > limit {
                self.evict_clean_down_to(limit - bytes);
                if self.counters.current_bytes() + bytes > limit {
                    break;
                }
            }
            let shard_index = shard_of(b);
            let mut st = self.shard(shard_index).lock();
            if st.lookup(b).is_some() {
                continue;
            }
            let buf = Arc::new(Buffer::loading());
            let slot = st.insert(Entry::new(b, Arc::clone(&buf), 0), 0);
            self.counters.add_buffer(bytes);
            drop(st);
            jobs.push(PrefetchJob {
                block: b,
                shard: shard_index,
                slot,
                buf,
            });
        }
        if jobs.is_empty() {
            return Ok(());
        }
        match &self.prefetch_queue {
            Some(queue) => {
                // The thread only stops when the cache is dropped; if it is
                // gone anyway, load here rather than leave entries loading.
                if let Err(channel::SendError(PrefetchMsg::Load(jobs))) =
                    queue.send(PrefetchMsg::Load(jobs))
                {
                    self.run_prefetch(jobs);
                }
            }
            None => self.run_prefetch(jobs),
        }
        Ok(())
    }

    /// Load prefetched blocks (in the prefetch thread, or inline).
    pub(crate) fn run_prefetch(&self, jobs: Vec<PrefetchJob>) {
        for job in jobs {
            self.counters.prefetch_reads.fetch_add(1, Relaxed);
            match self.load(job.block, None) {
                Ok(bytes) => {
                    *job.buf.data.write() = bytes;
                    self.finish_load(job.shard, job.slot, &job.buf, Ok(()));
                }
                Err(err) => {
                    log::debug!("bufio: prefetch of block {} failed: {err}", job.block);
                    self.finish_load(job.shard, job.slot, &job.buf, Err(&err));
                }
            }
        }
    }

    pub(crate) fn has_background(&self) -> bool {
        self.wakeup.is_some()
    }

    /// Tell the background thread there may be work.
    pub(crate) fn kick_background(&self) {
        if let Some(wakeup) = &self.wakeup {
            if !self.kick_pending.swap(true, Relaxed) {
                let _ = wakeup.send(BackgroundMsg::Kick);
            }
        }
    }

    /// Call the pressure callback (no lock held).
    pub(crate) fn report_pressure(&self) {
        self.counters.pressure_events.fetch_add(1, Relaxed);
        let callback = self.pressure.read().clone();
        if let Some(callback) = callback {
            callback(&PressureInfo {
                current_bytes: self.counters.current_bytes(),
                limit_bytes: self.config.memory_limit_bytes,
                pinned_buffers: self.counters.pinned_buffers.load(Relaxed),
                dirty_buffers: self.counters.dirty_buffers(),
            });
        }
    }

    fn stats(&self) -> BufioStats {
        let mut stats = self
            .counters
            .snapshot(self.block_bytes(), self.config.memory_limit_bytes);
        for (_, shard) in self.shards() {
            let st = shard.lock();
            stats.hits += st.hits;
            stats.held_buffers += st.held_buffers;
        }
        stats
    }
}
