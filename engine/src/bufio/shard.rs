//! One shard of the cache: an index of buffers plus its clean LRU, dirty
//! LRU and pinned list, behind one mutex.
//!
//! Block `b` lives in shard `b % SHARDS`, so a run of adjacent blocks spreads
//! over all shards. Entries sit in a slab; a handle remembers its slot, which
//! stays valid while the handle lives (a held entry is never removed).

use super::buffer::Buffer;
use super::lru::{LinkSlab, Links, LruList};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Number of shards (a power of two).
pub(crate) const SHARDS: usize = 16;

/// The shard of `block`.
pub(crate) fn shard_of(block: u64) -> usize {
    (block % SHARDS as u64) as usize
}

/// Which list of its shard an entry is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListKind {
    /// Loading, or clean and held (and unpinned): on no list.
    Unlisted,
    /// Clean, unheld, unpinned: an eviction candidate.
    Clean,
    /// Dirty, unpinned, held or not: a writeback candidate.
    Dirty,
    /// Pin count above zero.
    Pinned,
}

/// One cached block: its buffer plus the state bufio keeps about it, all
/// guarded by the shard lock.
pub(crate) struct Entry {
    pub(crate) block: u64,
    pub(crate) buf: Arc<Buffer>,
    /// False while the first read (or zero-fill) is in progress.
    pub(crate) loaded: bool,
    /// Live handles, plus the loader while loading.
    pub(crate) hold_count: u32,
    pub(crate) pin_count: u32,
    pub(crate) dirty: bool,
    /// Bumped by every `mark_dirty`: a write that copied the bytes at
    /// sequence `s` cleans the buffer only if it is still at `s`.
    pub(crate) dirty_seq: u64,
    /// Union of the ranges marked dirty (bytes), meaningful while dirty.
    pub(crate) dirty_range: (u32, u32),
    /// A writeback has claimed this buffer (copy or write in progress): no
    /// other writeback takes it, and it is not removed until released.
    pub(crate) write_claimed: bool,
    pub(crate) list: ListKind,
    pub(crate) links: Links,
    /// When the entry was last linked onto its list (ns since the cache's
    /// epoch): release time on the clean LRU, dirtying time on the dirty LRU.
    pub(crate) stamp: u64,
}

impl Entry {
    pub(crate) fn new(block: u64, buf: Arc<Buffer>, hold_count: u32) -> Self {
        Entry {
            block,
            buf,
            loaded: false,
            hold_count,
            pin_count: 0,
            dirty: false,
            dirty_seq: 0,
            dirty_range: (0, 0),
            write_claimed: false,
            list: ListKind::Unlisted,
            links: Links::default(),
            stamp: 0,
        }
    }

    fn wanted_list(&self) -> ListKind {
        if !self.loaded {
            ListKind::Unlisted
        } else if self.pin_count > 0 {
            ListKind::Pinned
        } else if self.dirty {
            ListKind::Dirty
        } else if self.hold_count == 0 {
            ListKind::Clean
        } else {
            ListKind::Unlisted
        }
    }
}

/// The slab of entries; `None` is a free slot.
pub(crate) struct Slots(Vec<Option<Entry>>);

impl Slots {
    fn get(&self, slot: u32) -> &Entry {
        self.0[slot as usize]
            .as_ref()
            .expect("bufio: slot of a live handle or list is vacant")
    }

    fn get_mut(&mut self, slot: u32) -> &mut Entry {
        self.0[slot as usize]
            .as_mut()
            .expect("bufio: slot of a live handle or list is vacant")
    }
}

impl LinkSlab for Slots {
    fn links(&self, id: u32) -> Links {
        self.get(id).links
    }
    fn links_mut(&mut self, id: u32) -> &mut Links {
        &mut self.get_mut(id).links
    }
}

/// Hasher for block numbers: a folded 128-bit multiply, so that the keys of
/// one shard (all equal modulo `SHARDS`) still spread over all buckets.
#[derive(Default)]
pub(crate) struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let product = u128::from(n ^ self.0) * 0x9E37_79B9_7F4A_7C15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

/// What the shard lock guards.
pub(crate) struct ShardState {
    index: HashMap<u64, u32, BuildHasherDefault<BlockHasher>>,
    slots: Slots,
    free_slots: Vec<u32>,
    /// Clean, unheld, unpinned buffers; back = least recently released.
    pub(crate) clean_lru: LruList,
    /// Dirty unpinned buffers; back = dirty the longest.
    pub(crate) dirty_lru: LruList,
    /// Pinned buffers.
    pub(crate) pinned: LruList,
    /// Lookups of this shard served from the cache.
    pub(crate) hits: u64,
    /// Entries with `hold_count > 0`.
    pub(crate) held_buffers: u64,
}

impl ShardState {
    fn new() -> Self {
        ShardState {
            index: HashMap::default(),
            slots: Slots(Vec::new()),
            free_slots: Vec::new(),
            clean_lru: LruList::new(),
            dirty_lru: LruList::new(),
            pinned: LruList::new(),
            hits: 0,
            held_buffers: 0,
        }
    }

    pub(crate) fn lookup(&self, block: u64) -> Option<u32> {
        self.index.get(&block).copied()
    }

    pub(crate) fn entry(&self, slot: u32) -> &Entry {
        self.slots.get(slot)
    }

    pub(crate) fn entry_mut(&mut self, slot: u32) -> &mut Entry {
        self.slots.get_mut(slot)
    }

    /// Whether `slot` holds `block`'s entry with buffer `buf`.
    pub(crate) fn holds(&self, block: u64, slot: u32, buf: &Arc<Buffer>) -> bool {
        self.lookup(block) == Some(slot) && Arc::ptr_eq(&self.entry(slot).buf, buf)
    }

    /// Add `entry` (whose block must not be indexed) and link it where its
    /// state says.
    pub(crate) fn insert(&mut self, entry: Entry, now: u64) -> u32 {
        let block = entry.block;
        let held = entry.hold_count > 0;
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots.0[slot as usize] = Some(entry);
                slot
            }
            None => {
                self.slots.0.push(Some(entry));
                u32::try_from(self.slots.0.len() - 1).expect("bufio: more than 2^32 buffers")
            }
        };
        let previous = self.index.insert(block, slot);
        debug_assert!(previous.is_none(), "bufio: block {block} indexed twice");
        if held {
            self.held_buffers += 1;
        }
        self.relink(slot, now);
        slot
    }

    /// Remove the entry at `slot` from the index and its list.
    pub(crate) fn remove(&mut self, slot: u32) -> Entry {
        self.unlink(slot);
        let entry = self.slots.0[slot as usize]
            .take()
            .expect("bufio: removing a vacant slot");
        self.index.remove(&entry.block);
        self.free_slots.push(slot);
        if entry.hold_count > 0 {
            self.held_buffers -= 1;
        }
        entry
    }

    /// Put the entry on the list its state asks for (front, stamped `now`),
    /// if it is not there already.
    pub(crate) fn relink(&mut self, slot: u32, now: u64) {
        let entry = self.slots.get(slot);
        let wanted = entry.wanted_list();
        if wanted == entry.list {
            return;
        }
        self.unlink(slot);
        match wanted {
            ListKind::Unlisted => {}
            ListKind::Clean => self.clean_lru.push_front(&mut self.slots, slot),
            ListKind::Dirty => self.dirty_lru.push_front(&mut self.slots, slot),
            ListKind::Pinned => self.pinned.push_front(&mut self.slots, slot),
        }
        let entry = self.slots.get_mut(slot);
        entry.list = wanted;
        entry.stamp = now;
    }

    fn unlink(&mut self, slot: u32) {
        match self.slots.get(slot).list {
            ListKind::Unlisted => {}
            ListKind::Clean => self.clean_lru.remove(&mut self.slots, slot),
            ListKind::Dirty => self.dirty_lru.remove(&mut self.slots, slot),
            ListKind::Pinned => self.pinned.remove(&mut self.slots, slot),
        }
        self.slots.get_mut(slot).list = ListKind::Unlisted;
    }

    /// One more holder.
    pub(crate) fn hold(&mut self, slot: u32, now: u64) {
        let entry = self.slots.get_mut(slot);
        entry.hold_count += 1;
        if entry.hold_count == 1 {
            self.held_buffers += 1;
            self.relink(slot, now);
        }
    }

    /// One holder fewer.
    pub(crate) fn unhold(&mut self, slot: u32, now: u64) {
        let entry = self.slots.get_mut(slot);
        debug_assert!(entry.hold_count > 0, "bufio: release of an unheld buffer");
        entry.hold_count -= 1;
        if entry.hold_count == 0 {
            self.held_buffers -= 1;
            self.relink(slot, now);
        }
    }

    /// Slots on `list`, oldest first.
    pub(crate) fn list_from_back(&self, list: ListKind) -> impl Iterator<Item = u32> + '_ {
        let list = match list {
            ListKind::Clean => &self.clean_lru,
            ListKind::Dirty => &self.dirty_lru,
            ListKind::Pinned => &self.pinned,
            ListKind::Unlisted => unreachable!("bufio: unlisted entries have no order"),
        };
        list.iter_from_back(&self.slots)
    }

    /// Every indexed block and its slot.
    pub(crate) fn indexed(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.index.iter().map(|(&block, &slot)| (block, slot))
    }

    fn clean_tail_stamp(&self) -> u64 {
        self.clean_lru
            .back()
            .map_or(u64::MAX, |slot| self.slots.get(slot).stamp)
    }
}

/// One shard.
///
/// LOCKING: `state` is lock #2 of bufio's order: taken with or without a
/// buffer data lock held, never while another shard's lock is held, and
/// never held across store I/O, a data lock acquisition or a callback.
pub(crate) struct Shard {
    state: Mutex<ShardState>,
    /// Signalled (under `state`) when a load or a write of one of this
    /// shard's buffers completes, or a write claim is dropped.
    changed: Condvar,
    /// Stamp of the back of `clean_lru` (`u64::MAX` if empty), published on
    /// every unlock, so eviction can pick the globally oldest clean buffer
    /// without locking every shard.
    clean_tail_stamp: AtomicU64,
}

impl Shard {
    pub(crate) fn new() -> Self {
        Shard {
            state: Mutex::new(ShardState::new()),
            changed: Condvar::new(),
            clean_tail_stamp: AtomicU64::new(u64::MAX),
        }
    }

    pub(crate) fn lock(&self) -> ShardGuard<'_> {
        ShardGuard {
            shard: self,
            state: self.state.lock(),
        }
    }

    /// Wake everyone waiting in [`ShardGuard::wait`].
    pub(crate) fn notify_changed(&self) {
        self.changed.notify_all();
    }

    pub(crate) fn clean_tail_stamp(&self) -> u64 {
        self.clean_tail_stamp.load(Relaxed)
    }
}

/// The shard lock, held. Publishes the clean LRU's tail stamp on unlock.
pub(crate) struct ShardGuard<'a> {
    shard: &'a Shard,
    state: MutexGuard<'a, ShardState>,
}

impl ShardGuard<'_> {
    /// Unlock, sleep until the shard's `changed` is signalled, relock.
    pub(crate) fn wait(&mut self) {
        self.publish();
        self.shard.changed.wait(&mut self.state);
    }

    fn publish(&self) {
        let stamp = self.state.clean_tail_stamp();
        if self.shard.clean_tail_stamp.load(Relaxed) != stamp {
            self.shard.clean_tail_stamp.store(stamp, Relaxed);
        }
    }
}

impl Deref for ShardGuard<'_> {
    type Target = ShardState;
    fn deref(&self) -> &ShardState {
        &self.state
    }
}

impl DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut ShardState {
        &mut self.state
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        self.publish();
    }
}
