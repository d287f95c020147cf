//! The life of an inode: creation, links dropping to zero, the orphan list,
//! the kernel forgetting it, freeing, and orphan recovery at mount.
//!
//! What it promises (the API the namespace operations are built on):
//!
//! * [`Fs::create_inode`] allocates an inode (near its parent), bumps the
//!   slot's generation past the last user's, initialises it (type,
//!   permissions, owner, rdev for devices, parent for directories, link
//!   count 1, all four times now, the empty data area of its type), stores
//!   it in the caller's transaction and returns its cell;
//! * [`Fs::drop_link`] takes one link away; at zero the inode is freed at
//!   once if neither the kernel (lookups) nor an open handle refers to it,
//!   else it goes on the orphan list and is freed when the last of them
//!   goes ([`Fs::forget`], [`Fs::release`]) — or, after a crash, at the next
//!   mount ([`Fs::recover_orphans`], run by `mount`);
//! * an inode joins or leaves the orphan list in the transaction that
//!   orphans or frees it: the list's links (the root's `next_orphan`, the
//!   orphans' own) are inode-table fields written in that transaction
//!   (`orphan.rs`), so after any crash the list holds exactly the orphans
//!   of the last committed transaction;
//! * freeing an inode frees everything it holds (`reclaim.rs`), takes it off
//!   the orphan list, writes its slot free (keeping the generation) and
//!   clears its bitmap bit — one transaction, or, for an orphan with many
//!   extents, several whose last one frees the slot (it stays on the list
//!   meanwhile, so a crash only leaves less to do); its cell is marked dead
//!   and dropped from the cache;
//! * at mount every orphan on the list is freed, the list ends empty, and
//!   the superblock records no errors unless the chain was broken (a link
//!   to a free or linked inode, out of range, unreadable, or a loop) or an
//!   orphan could not be freed;
//! * freeing runs once: the checks are repeated under the inode's lock.
//!
//! What it relies on: the inode cache, the allocators, the orphan list and
//! the superblock keeper; the caller's lock order (journal handle before
//! the inode lock it passes in).

use super::inode::{InodeCell, InodeState};
use super::orphan::ORPHAN_ANCHOR;
use super::time;
use super::{reclaim, Fs};
use crate::error::{FsError, FsResult};
use crate::format::superblock::RO_COMPAT_ORPHANS_IN_ROOT;
use crate::format::{FileType, Inode, InodeSlot, Superblock};
use crate::journal::TxHandle;
use std::collections::HashSet;
use std::sync::Arc;

impl Fs {
    /// The cell of inode `ino`; `Stale` if it is not in use.
    pub fn inode(&self, ino: u64) -> FsResult<Arc<InodeCell>> {
        self.inodes.get(&self.ialloc, ino)
    }

    /// Allocates and initialises a new inode of `mode` (type and permission
    /// bits); see the module docs. The link count is 1 (a directory's
    /// caller adds the link its own "." stands for). Symlinks are made with
    /// their target by [`Fs::create_symlink`].
    pub fn create_inode(
        &self,
        tx: &TxHandle<'_>,
        mode: u32,
        uid: u32,
        gid: u32,
        rdev: u64,
        parent: u64,
    ) -> FsResult<Arc<InodeCell>> {
        self.check_writable()?;
        let file_type = FileType::from_mode(mode)
            .ok_or_else(|| FsError::Invalid(format!("mode {mode:#o} names no file type")))?;
        if file_type == FileType::Symlink {
            return Err(FsError::Invalid(
                "a symlink is created with its target: use create_symlink".into(),
            ));
        }
        let mut inode = new_inode(file_type, mode, uid, gid);
        if matches!(file_type, FileType::CharDevice | FileType::BlockDevice) {
            inode.rdev = rdev;
        }
        if file_type == FileType::Directory {
            inode.parent = parent;
        }
        self.install_inode(tx, parent, inode)
    }

    /// Allocates an inode near `goal`, gives `inode` the slot's next
    /// generation (and, for a directory without one, itself as parent),
    /// stores it and caches its cell. Nothing is left allocated on error.
    pub(crate) fn install_inode(
        &self,
        tx: &TxHandle<'_>,
        goal: u64,
        mut inode: Inode,
    ) -> FsResult<Arc<InodeCell>> {
        let ino = self.ialloc.alloc_inode(tx, goal)?;
        let result = (|| {
            inode.generation = match self.inodes.read_slot(ino)? {
                InodeSlot::Free { generation } => generation.wrapping_add(1),
                InodeSlot::Used(_) => {
                    return Err(FsError::Corrupt(format!(
                        "inode {ino} is free in the bitmap but its slot is in use"
                    )))
                }
            };
            if inode.file_type == FileType::Directory && inode.parent == 0 {
                inode.parent = ino;
            }
            self.inodes
                .write_slot(tx, ino, &InodeSlot::Used(inode.clone()), &self.orphans)
        })();
        if let Err(e) = result {
            let _ = self.ialloc.unalloc_inode(tx, ino);
            return Err(e);
        }
        Ok(self.inodes.insert_new(ino, inode))
    }

    /// Stores the inode held by `state` in `tx`.
    pub fn store_inode(&self, tx: &TxHandle<'_>, state: &InodeState) -> FsResult<()> {
        self.inodes.store(tx, state, &self.orphans)
    }

    /// Takes one link away (and sets ctime); at zero links, frees the inode
    /// or puts it on the orphan list (see the module docs).
    pub fn drop_link(
        &self,
        tx: &TxHandle<'_>,
        cell: &InodeCell,
        state: &mut InodeState,
    ) -> FsResult<()> {
        self.check_writable()?;
        state.check_live()?;
        if state.links == 0 {
            return Err(FsError::Corrupt(format!(
                "inode {} has no link to drop",
                state.ino()
            )));
        }
        state.links -= 1;
        state.ctime = time::now();
        if state.links > 0 {
            return self.store_inode(tx, state);
        }
        self.unlinked(tx, cell, state)
    }

    /// The inode's link count is 0 (the caller set it): free it now, or
    /// orphan it while the kernel or a handle still refers to it.
    pub fn unlinked(
        &self,
        tx: &TxHandle<'_>,
        cell: &InodeCell,
        state: &mut InodeState,
    ) -> FsResult<()> {
        state.check_live()?;
        if state.links != 0 {
            return self.store_inode(tx, state);
        }
        if cell.in_use() {
            let ino = state.ino();
            if !self.orphans.push(ino) {
                return self.store_inode(tx, state);
            }
            let linked = self
                .store_inode(tx, state)
                .and_then(|()| self.inodes.relink_orphan(tx, ORPHAN_ANCHOR, &self.orphans));
            if let Err(e) = linked {
                // Not on the list after all: the anchor names what it named.
                self.orphans.remove(ino);
                let _ = self.inodes.relink_orphan(tx, ORPHAN_ANCHOR, &self.orphans);
                return Err(e);
            }
            Ok(())
        } else {
            self.free_inode(tx, state)
        }
    }

    /// The kernel forgets `nlookup` lookups of `ino` (FUSE forget): an
    /// unlinked inode nobody refers to any more is freed, an idle cell may
    /// leave the cache.
    pub fn forget(&self, ino: u64, nlookup: u64) -> FsResult<()> {
        let Some(cell) = self.inodes.cached_cell(ino) else {
            return Ok(());
        };
        if cell.forget(nlookup) == 0 && cell.opens() == 0 {
            self.reclaim_if_unlinked(&cell)?;
            drop(cell);
            self.inodes.evict(ino);
        }
        Ok(())
    }

    /// Frees `cell`'s inode if it has no link and nobody refers to it.
    pub(crate) fn reclaim_if_unlinked(&self, cell: &InodeCell) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        {
            let state = cell.read();
            if !state.is_live() || state.links != 0 {
                return Ok(());
            }
        }
        self.reclaim_orphan(cell, true)
    }

    /// Frees an orphan's blocks from the end, [`super::file_space::TAIL_STEP`]
    /// extents per transaction (it stays on the orphan list meanwhile, so a
    /// crash only leaves less to do at the next mount), then the inode.
    /// With `only_unused`, stops as soon as the inode is in use again.
    fn reclaim_orphan(&self, cell: &InodeCell, only_unused: bool) -> FsResult<()> {
        loop {
            let tx = self.journal.start()?;
            let mut state = cell.write();
            if !state.is_live() || state.links != 0 || (only_unused && cell.in_use()) {
                return Ok(());
            }
            if self.free_tail(&tx, &mut state, 0)? {
                self.store_inode(&tx, &state)?;
                continue;
            }
            return self.free_inode(&tx, &mut state);
        }
    }

    /// Frees the inode held by `state` (see the module docs).
    pub(crate) fn free_inode(&self, tx: &TxHandle<'_>, state: &mut InodeState) -> FsResult<()> {
        let ino = state.ino();
        reclaim::free_storage(self, tx, &mut state.inode)?;
        if let Some(pred) = self.orphans.remove(ino) {
            self.inodes.relink_orphan(tx, pred, &self.orphans)?;
        }
        self.inodes.write_slot(
            tx,
            ino,
            &InodeSlot::Free {
                generation: state.generation,
            },
            &self.orphans,
        )?;
        self.ialloc.free_inode(tx, ino)?;
        state.mark_dead();
        self.inodes.remove(ino);
        Ok(())
    }

    /// Finishes off the orphans a crash left (run by a read-write mount,
    /// after journal recovery): walks the chain from the root's
    /// `next_orphan` and frees every inode on it (each in bounded steps,
    /// see `reclaim_orphan`). A filesystem of an earlier keelfs keeps the
    /// head in the superblock: it is moved to the root first
    /// ([`Fs::adopt_superblock_orphans`]).
    ///
    /// A broken chain (a link to a free inode, to an inode with links, out
    /// of range, unreadable, or a loop) is cut after its last sound link
    /// (in the journal, so the chain on disk is the list in memory), and an
    /// orphan that cannot be freed (its blocks are corrupt) stays on the
    /// list; either way the superblock is marked as having errors and the
    /// rest is left to fsck: a damaged orphan never keeps the filesystem
    /// from mounting.
    pub(crate) fn recover_orphans(&self, sb: &Superblock) -> FsResult<()> {
        if !sb.orphans_in_root() {
            self.adopt_superblock_orphans(sb.orphan_head)?;
        }
        let head = match self.inodes.read_slot(ORPHAN_ANCHOR) {
            Ok(InodeSlot::Used(root)) => root.next_orphan,
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    _ => "its slot is free".to_string(),
                };
                log::error!("the root inode cannot anchor the orphan list ({why}); left to fsck");
                let gen = self.journal.committed_seq();
                return self.keeper.write(gen, |sb| sb.state.errors = true);
            }
        };
        if head == 0 {
            return Ok(());
        }
        let (chain, mut broken) = self.walk_orphans(head);
        log::info!("freeing {} orphan inode(s) left by a crash", chain.len());
        self.orphans.replace(chain.clone());
        if broken {
            // Cut the chain where the walk stopped.
            let last = chain.last().copied().unwrap_or(ORPHAN_ANCHOR);
            let tx = self.journal.start()?;
            self.inodes.relink_orphan(&tx, last, &self.orphans)?;
        }
        for ino in chain {
            if let Err(e) = self
                .inode(ino)
                .and_then(|cell| self.reclaim_orphan(&cell, false))
            {
                log::error!("orphan inode {ino} could not be freed ({e}); left to fsck");
                broken = true;
            }
        }
        self.journal.commit()?;
        if broken {
            let gen = self.journal.committed_seq();
            self.keeper.write(gen, |sb| sb.state.errors = true)?;
        }
        Ok(())
    }

    /// A filesystem whose superblock holds the orphan head (no
    /// `RO_COMPAT_ORPHANS_IN_ROOT`, made by an earlier keelfs): the root's
    /// `next_orphan` takes the head in one committed transaction, then the
    /// superblocks are written with head 0 and the feature set. A crash
    /// between the two leaves the old superblock, and the next mount does
    /// the same again.
    fn adopt_superblock_orphans(&self, head: u64) -> FsResult<()> {
        if head != 0 {
            log::info!("moving the orphan list head {head} from the superblock to the root inode");
            let tx = self.journal.start()?;
            self.inodes.set_next_orphan(&tx, ORPHAN_ANCHOR, head)?;
        }
        self.journal.commit()?;
        let gen = self.journal.committed_seq();
        self.keeper.write(gen, |sb| {
            sb.orphan_head = 0;
            sb.ro_compat_features |= RO_COMPAT_ORPHANS_IN_ROOT;
        })
    }

    /// The orphan chain from `head`, as far as it is sound; and whether it
    /// was broken.
    fn walk_orphans(&self, head: u64) -> (Vec<u64>, bool) {
        let mut chain = Vec::new();
        let mut seen = HashSet::new();
        let mut ino = head;
        while ino != 0 {
            if ino > self.layout.inode_count || !seen.insert(ino) {
                log::warn!("orphan list: bad link to inode {ino}; the rest is left to fsck");
                return (chain, true);
            }
            let slot = match self.ialloc.is_allocated(ino) {
                Ok(true) => self.inodes.read_slot(ino),
                Ok(false) => {
                    log::warn!("orphan list: inode {ino} is free; the rest is left to fsck");
                    return (chain, true);
                }
                Err(e) => Err(e),
            };
            match slot {
                Ok(InodeSlot::Used(inode)) if inode.links == 0 => {
                    chain.push(ino);
                    ino = inode.next_orphan;
                }
                Ok(_) => {
                    log::warn!("orphan list: inode {ino} is linked; the rest is left to fsck");
                    return (chain, true);
                }
                Err(e) => {
                    log::warn!("orphan list: inode {ino}: {e}; the rest is left to fsck");
                    return (chain, true);
                }
            }
        }
        (chain, false)
    }

    /// At unmount: nothing is open any more, so every orphan is freed.
    pub(crate) fn free_remaining_orphans(&self) -> FsResult<()> {
        let list = self.orphans.list();
        if list.is_empty() {
            return Ok(());
        }
        for ino in list {
            let cell = self.inode(ino)?;
            self.reclaim_orphan(&cell, false)?;
        }
        Ok(())
    }
}

/// A fresh inode of `file_type`: permissions from `mode`, owner, one link,
/// every time now, the empty data area of its type (an empty inline area
/// for a regular file).
pub(crate) fn new_inode(file_type: FileType, mode: u32, uid: u32, gid: u32) -> Inode {
    let now = time::now();
    let mut inode = Inode::new(file_type, (mode & 0o7777) as u16);
    if file_type == FileType::Regular {
        // Small files live in the inode until they outgrow it.
        inode.data = crate::format::DataArea::Inline(Vec::new());
    }
    inode.uid = uid;
    inode.gid = gid;
    inode.links = 1;
    inode.atime = now;
    inode.mtime = now;
    inode.ctime = now;
    inode.btime = now;
    inode
}
