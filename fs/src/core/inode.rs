//! The inode cache: inode number → [`InodeCell`], loaded from the inode
//! table on first use, stored back through the journal.
//!
//! What it promises:
//!
//! * **One cell per inode.** While a cell is cached every user of the inode
//!   shares it, so its `RwLock` is *the* lock of that inode. The map is
//!   split into shards by inode number, each behind its own mutex, held
//!   only to look up, insert or drop a cell (and, on a miss, to load it:
//!   loading under the shard mutex is what keeps a cell evicted and loaded
//!   again from ever being older than what was stored).
//! * **Loads are checked.** An inode whose bitmap bit is clear, or a number
//!   outside 1..=I, is [`FsError::Stale`] (an old file handle); a used bit
//!   over a free or malformed slot is corruption.
//! * **Stores go through the journal.** [`InodeCache::store`] encodes the
//!   inode into its slot inside `tx.write` of the table block; nothing is
//!   cached dirty, so a cell can be evicted whenever nobody holds it.
//! * **In-memory state.** Each cell counts kernel lookups (FUSE
//!   lookup/forget) and opens; a cell with neither, held by nobody but the
//!   map, is evicted once the cache is over its size. A freed inode's cell
//!   is marked dead: whoever still holds it gets `Stale`.
//! * The `next_orphan` field on disk is owned by the orphan list
//!   ([`super::orphan::Orphans`]): `store` writes the list's value, never
//!   the cell's, so a store can never undo an orphan-list update (the
//!   root's field is the list's head, so this holds for the root too).
//!
//! LOCK ORDER (the fs core's, see `core/mod.rs`): journal handle, then
//! inode locks (a directory before its children, two directories in
//! ascending number), then a shard mutex or allocator group mutexes, then
//! buffer guards; the orphan list's mutex is a leaf taken inside buffer
//! guards.

use super::meta::{payload, payload_mut, read_meta};
use super::orphan::Orphans;
use crate::alloc::InodeAllocator;
use crate::error::{FsError, FsResult};
use crate::format::header::BlockKind;
use crate::format::layout::INODE_SIZE;
use crate::format::{Inode, InodeSlot, Layout};
use crate::journal::TxHandle;
use keelfs_engine::bufio::Bufio;
use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

const SHARDS: usize = 64;

/// One shard of the map.
type Shard = Mutex<HashMap<u64, Arc<InodeCell>>>;

/// The decoded inode and what the cache knows about it, behind the
/// inode's lock.
#[derive(Debug)]
pub struct InodeState {
    ino: u64,
    /// The inode as stored (the `next_orphan` field excepted, see the
    /// module docs).
    pub inode: Inode,
    /// False once the inode was freed.
    live: bool,
}

impl InodeState {
    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Whether the inode is still allocated.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// `Stale` once the inode was freed.
    pub fn check_live(&self) -> FsResult<()> {
        if self.live {
            Ok(())
        } else {
            Err(FsError::Stale)
        }
    }

    pub(crate) fn mark_dead(&mut self) {
        self.live = false;
    }
}

impl Deref for InodeState {
    type Target = Inode;
    fn deref(&self) -> &Inode {
        &self.inode
    }
}

impl DerefMut for InodeState {
    fn deref_mut(&mut self) -> &mut Inode {
        &mut self.inode
    }
}

/// One cached inode. See the module docs.
#[derive(Debug)]
pub struct InodeCell {
    ino: u64,
    state: RwLock<InodeState>,
    lookups: AtomicU64,
    opens: AtomicU64,
}

impl InodeCell {
    fn new(ino: u64, inode: Inode) -> InodeCell {
        InodeCell {
            ino,
            state: RwLock::new(InodeState {
                ino,
                inode,
                live: true,
            }),
            lookups: AtomicU64::new(0),
            opens: AtomicU64::new(0),
        }
    }

    /// The inode number.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Shared access to the inode (its lock, shared).
    pub fn read(&self) -> RwLockReadGuard<'_, InodeState> {
        self.state.read()
    }

    /// Exclusive access to the inode (its lock, exclusive). Take the
    /// journal handle first.
    pub fn write(&self) -> RwLockWriteGuard<'_, InodeState> {
        self.state.write()
    }

    /// Kernel lookups not yet forgotten.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Acquire)
    }

    /// The kernel learnt of the inode `n` more times (lookup, create, mkdir,
    /// link, symlink, mknod each count one).
    pub fn add_lookups(&self, n: u64) {
        self.lookups.fetch_add(n, Ordering::AcqRel);
    }

    /// The kernel forgot `n` lookups; returns how many remain.
    pub(crate) fn forget(&self, n: u64) -> u64 {
        let mut cur = self.lookups.load(Ordering::Acquire);
        loop {
            let next = cur.saturating_sub(n);
            match self
                .lookups
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(now) => cur = now,
            }
        }
    }

    /// Open file handles.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Acquire)
    }

    pub(crate) fn open(&self) {
        self.opens.fetch_add(1, Ordering::AcqRel);
    }

    /// One handle closed; returns how many remain.
    pub(crate) fn close(&self) -> u64 {
        let mut cur = self.opens.load(Ordering::Acquire);
        loop {
            let next = cur.saturating_sub(1);
            match self
                .opens
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return next,
                Err(now) => cur = now,
            }
        }
    }

    /// Whether the kernel or an open handle still refers to the inode.
    pub fn in_use(&self) -> bool {
        self.lookups() > 0 || self.opens() > 0
    }
}

/// The inode cache. See the module docs.
pub struct InodeCache {
    cache: Arc<Bufio>,
    layout: Layout,
    shards: Box<[Shard]>,
    cached: AtomicUsize,
    /// Cells kept when nobody uses them, at most.
    limit: usize,
}

impl InodeCache {
    /// A cache of at most about `limit` unused cells.
    pub fn new(cache: Arc<Bufio>, layout: &Layout, limit: usize) -> InodeCache {
        InodeCache {
            cache,
            layout: *layout,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            cached: AtomicUsize::new(0),
            limit: limit.max(SHARDS),
        }
    }

    fn shard(&self, ino: u64) -> &Shard {
        &self.shards[(ino as usize) % SHARDS]
    }

    /// Cells cached now.
    pub fn cached(&self) -> usize {
        self.cached.load(Ordering::Acquire)
    }

    /// The cell of inode `ino`, loaded if needed; `Stale` for an inode that
    /// is not allocated.
    pub fn get(&self, ialloc: &InodeAllocator, ino: u64) -> FsResult<Arc<InodeCell>> {
        if ino == 0 || ino > self.layout.inode_count {
            return Err(FsError::Stale);
        }
        let mut shard = self.shard(ino).lock();
        if let Some(cell) = shard.get(&ino) {
            return Ok(Arc::clone(cell));
        }
        if !ialloc.is_allocated(ino)? {
            return Err(FsError::Stale);
        }
        let inode = self.load(ino)?;
        let cell = Arc::new(InodeCell::new(ino, inode));
        shard.insert(ino, Arc::clone(&cell));
        drop(shard);
        self.cached.fetch_add(1, Ordering::AcqRel);
        self.evict_if_over(ino);
        Ok(cell)
    }

    /// The cell of inode `ino` if it is cached.
    pub fn cached_cell(&self, ino: u64) -> Option<Arc<InodeCell>> {
        self.shard(ino).lock().get(&ino).cloned()
    }

    /// Every cached cell (for unmount and tests).
    pub fn cells(&self) -> Vec<Arc<InodeCell>> {
        self.shards
            .iter()
            .flat_map(|s| s.lock().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// Reads inode `ino` from the inode table (it must be in use).
    fn load(&self, ino: u64) -> FsResult<Inode> {
        let at = self.layout.inode_location(ino)?;
        let buf = match read_meta(&self.cache, at.block, BlockKind::InodeTable, None) {
            Err(FsError::Engine(keelfs_engine::EngineError::Unwritten { .. })) => {
                return Err(FsError::Corrupt(format!(
                    "inode {ino} is in use but its inode-table block {} was never written",
                    at.block
                )))
            }
            other => other?,
        };
        let data = buf.data();
        let slot = &payload(&data)[at.offset..at.offset + INODE_SIZE];
        match InodeSlot::decode(slot) {
            Ok(InodeSlot::Used(inode)) => Ok(inode),
            Ok(InodeSlot::Free { .. }) => Err(FsError::Corrupt(format!(
                "inode {ino} is marked in use but its slot is free"
            ))),
            Err(e) => Err(FsError::Corrupt(format!("inode {ino}: {e}"))),
        }
    }

    /// The slot of inode `ino` as stored (free or used).
    pub fn read_slot(&self, ino: u64) -> FsResult<InodeSlot> {
        let at = self.layout.inode_location(ino)?;
        let buf = read_meta(&self.cache, at.block, BlockKind::InodeTable, None)?;
        let data = buf.data();
        InodeSlot::decode(&payload(&data)[at.offset..at.offset + INODE_SIZE])
            .map_err(|e| FsError::Corrupt(format!("inode {ino}: {e}")))
    }

    /// Writes slot `slot` of inode `ino` in `tx`; a used slot's
    /// `next_orphan` comes from `orphans`.
    pub fn write_slot(
        &self,
        tx: &TxHandle<'_>,
        ino: u64,
        slot: &InodeSlot,
        orphans: &Orphans,
    ) -> FsResult<()> {
        let at = self.layout.inode_location(ino)?;
        let buf = read_meta(&self.cache, at.block, BlockKind::InodeTable, None)?;
        let mut image = [0u8; INODE_SIZE];
        let mut w = tx.write(&buf);
        // The orphan list's value is read under the block's guard, so a
        // concurrent list update and this store cannot cross.
        match slot {
            InodeSlot::Used(inode) => {
                let mut inode = inode.clone();
                inode.next_orphan = orphans.next_of(ino);
                inode.encode(&mut image)?;
            }
            InodeSlot::Free { .. } => slot.encode(&mut image)?,
        }
        payload_mut(&mut w)[at.offset..at.offset + INODE_SIZE].copy_from_slice(&image);
        Ok(())
    }

    /// Rewrites the `next_orphan` field of used inode `ino` from the orphan
    /// list, in place (decoded and encoded under the block's guard, so a
    /// concurrent [`store`](Self::store) of that inode is never undone).
    pub fn relink_orphan(&self, tx: &TxHandle<'_>, ino: u64, orphans: &Orphans) -> FsResult<()> {
        self.rewrite_next_orphan(tx, ino, |ino| orphans.next_of(ino))
    }

    /// Sets the `next_orphan` field of used inode `ino` to `next`, in place:
    /// only for mount, before the orphan list is loaded (everywhere else
    /// the list owns the field: [`relink_orphan`](Self::relink_orphan)).
    pub(crate) fn set_next_orphan(&self, tx: &TxHandle<'_>, ino: u64, next: u64) -> FsResult<()> {
        self.rewrite_next_orphan(tx, ino, |_| next)
    }

    fn rewrite_next_orphan(
        &self,
        tx: &TxHandle<'_>,
        ino: u64,
        next: impl FnOnce(u64) -> u64,
    ) -> FsResult<()> {
        let at = self.layout.inode_location(ino)?;
        let buf = read_meta(&self.cache, at.block, BlockKind::InodeTable, None)?;
        let mut w = tx.write(&buf);
        let slot = &mut payload_mut(&mut w)[at.offset..at.offset + INODE_SIZE];
        let mut inode = Inode::decode(slot)
            .map_err(|e| FsError::Corrupt(format!("orphan list link in inode {ino}: {e}")))?;
        // Read under the block's guard: a concurrent list update and this
        // write cannot cross.
        inode.next_orphan = next(ino);
        let mut image = [0u8; INODE_SIZE];
        inode.encode(&mut image)?;
        slot.copy_from_slice(&image);
        Ok(())
    }

    /// Stores the inode held by `state` in `tx`.
    pub fn store(&self, tx: &TxHandle<'_>, state: &InodeState, orphans: &Orphans) -> FsResult<()> {
        state.check_live()?;
        self.write_slot(
            tx,
            state.ino,
            &InodeSlot::Used(state.inode.clone()),
            orphans,
        )
    }

    /// Caches a cell for a just-created inode.
    pub fn insert_new(&self, ino: u64, inode: Inode) -> Arc<InodeCell> {
        let cell = Arc::new(InodeCell::new(ino, inode));
        let old = self.shard(ino).lock().insert(ino, Arc::clone(&cell));
        if old.is_none() {
            self.cached.fetch_add(1, Ordering::AcqRel);
        }
        self.evict_if_over(ino);
        cell
    }

    /// Drops the cell of a freed inode.
    pub fn remove(&self, ino: u64) {
        if self.shard(ino).lock().remove(&ino).is_some() {
            self.cached.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Drops the cell of `ino` if nobody uses or holds it.
    pub fn evict(&self, ino: u64) {
        let mut shard = self.shard(ino).lock();
        let idle = shard
            .get(&ino)
            .is_some_and(|c| Arc::strong_count(c) == 1 && !c.in_use());
        if idle {
            shard.remove(&ino);
            self.cached.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Over the limit: drop idle cells, starting with the shard after the
    /// one just used (so the cell just handed out stays).
    fn evict_if_over(&self, just_used: u64) {
        if self.cached() <= self.limit {
            return;
        }
        let start = (just_used as usize + 1) % SHARDS;
        for k in 0..SHARDS {
            if self.cached() <= self.limit * 7 / 8 {
                break;
            }
            let mut shard = self.shards[(start + k) % SHARDS].lock();
            let before = shard.len();
            shard.retain(|&ino, c| ino == just_used || Arc::strong_count(c) > 1 || c.in_use());
            let dropped = before - shard.len();
            self.cached.fetch_sub(dropped, Ordering::AcqRel);
        }
    }
}
