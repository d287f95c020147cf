//! rename(2) with `RENAME_NOREPLACE`, `RENAME_EXCHANGE` and
//! `RENAME_WHITEOUT`.
//!
//! What it promises (POSIX and Linux rename semantics):
//!
//! * plain rename moves the name, replacing an existing target: a file
//!   over a file, a directory over an empty directory (`NotEmpty`
//!   otherwise); a directory over a non-directory is `NotDir`, a
//!   non-directory over a directory `IsDir`; two names of one inode: nothing
//!   happens; the replaced inode loses its link (a replaced directory both);
//! * `RENAME_NOREPLACE`: `Exists` if the target is there; `RENAME_EXCHANGE`:
//!   both names must exist (`NotFound`) and swap atomically, of any types;
//!   `RENAME_WHITEOUT` (overlayfs): the old name is left naming a new
//!   "whiteout", a character device 0:0 with mode 0 owned by the caller,
//!   made in the same transaction (the kernel allows it only with
//!   CAP_MKNOD); exchange with either other flag, or any other flag,
//!   `Invalid`;
//! * moving a directory into itself or its own subtree is `Invalid` (as is
//!   an exchange that would); a moved directory's ".." (its parent field)
//!   follows it, and the link counts of both parents follow their
//!   subdirectories (a parent at [`LINK_MAX`] refuses one more,
//!   `TooManyLinks`);
//! * both parents get mtime and ctime, the moved inodes ctime; the sticky
//!   bit and immutable/append-only flags apply to every name that goes away
//!   or is replaced (`NotPermitted`);
//! * one transaction; an error (including `NoSpace` while adding the new
//!   name, which happens first) changes nothing.
//!
//! LOCKING (after the journal handle): a rename between two directories
//! first takes the filesystem's rename mutex, which is what keeps the
//! ancestry of directories still (only such renames change a directory's
//! parent). Under it, with no inode lock held, it looks up both names and
//! walks up from each parent (one inode lock at a time, shared) to check
//! the subtree rules and to learn whether one parent is an ancestor of the
//! other. Then it locks the parents — an ancestor before its descendant,
//! else in ascending inode order — and the inodes of the two names in
//! ascending order. Since neither name's inode is an ancestor of either
//! parent, every lock comes after the locks of the inode's ancestors: the
//! fs core's order. If a name changed between the look and the locks (a
//! concurrent same-directory operation), everything is released and the
//! rename starts over.

use super::inode::{InodeCell, InodeState};
use super::namespace::{
    changeable_dir, check_dir_shrinkable, check_removable, dir_root, sticky_forbids, Caller,
    LINK_MAX,
};
use super::time;
use super::Fs;
use crate::dir;
use crate::error::{corrupt, FsError, FsResult};
use crate::format::superblock::ROOT_INODE;
use crate::format::FileType;
use crate::journal::TxHandle;
use parking_lot::RwLockWriteGuard;
use std::sync::Arc;

/// Fail if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// Swap the two names.
pub const RENAME_EXCHANGE: u32 = 2;
/// Leave a whiteout (character device 0:0) at the old name.
pub const RENAME_WHITEOUT: u32 = 4;

/// Starts over at most this often before giving up with `Busy`.
const MAX_RETRIES: usize = 1000;
/// Deepest directory nesting walked before calling the tree corrupt.
const MAX_DEPTH: usize = 1 << 16;

/// A name's inode and type, as its directory entry records them.
type Named = (u64, FileType);

/// What the unlocked look at a cross-directory rename found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    source: Named,
    target: Option<Named>,
    /// The old parent is an ancestor of the new one.
    old_above_new: bool,
    /// The new parent is an ancestor of the old one.
    new_above_old: bool,
}

impl Fs {
    /// Renames `oldname` in `oldparent` to `newname` in `newparent`; see the
    /// module docs.
    pub fn rename(
        &self,
        oldparent: u64,
        oldname: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        caller: Caller,
    ) -> FsResult<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0
            || (flags & RENAME_EXCHANGE != 0 && flags != RENAME_EXCHANGE)
        {
            return Err(FsError::Invalid(format!("rename flags {flags:#x}")));
        }
        self.check_writable()?;
        dir::check_name(oldname)?;
        dir::check_name(newname)?;
        let tx = self.journal.start()?;
        let cross = oldparent != newparent;
        let _ancestry = cross.then(|| self.rename_lock.lock());
        let op_cell = self.inode(oldparent)?;
        let np_cell = self.inode(newparent)?;
        for _ in 0..MAX_RETRIES {
            let plan = if cross {
                Some(self.plan_cross_rename(oldparent, oldname, newparent, newname, flags)?)
            } else {
                None
            };
            let done = if cross {
                let plan = plan.ok_or_else(|| corrupt!("cross-directory rename without a plan"))?;
                // An ancestor before its descendant, else ascending order.
                let old_first =
                    plan.old_above_new || (!plan.new_above_old && oldparent < newparent);
                let (mut op, mut np) = if old_first {
                    let op = op_cell.write();
                    (op, np_cell.write())
                } else {
                    let np = np_cell.write();
                    (op_cell.write(), np)
                };
                self.rename_locked(
                    &tx,
                    &mut op,
                    Some(&mut *np),
                    oldname,
                    newname,
                    flags,
                    caller,
                    Some(plan),
                )?
            } else {
                let mut p = op_cell.write();
                self.rename_locked(&tx, &mut p, None, oldname, newname, flags, caller, None)?
            };
            if done {
                return Ok(());
            }
        }
        Err(FsError::Busy)
    }

    /// Looks at a cross-directory rename without holding inode locks (under
    /// the rename mutex): the two names, and the ancestry of both parents.
    fn plan_cross_rename(
        &self,
        oldparent: u64,
        oldname: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<Plan> {
        let source = self.peek(oldparent, oldname)?.ok_or(FsError::NotFound)?;
        let target = self.peek(newparent, newname)?;
        let above_new = self.ancestors(newparent)?;
        let above_old = self.ancestors(oldparent)?;
        if source.1 == FileType::Directory && above_new.contains(&source.0) {
            return Err(FsError::Invalid(
                "cannot move a directory into its own subtree".into(),
            ));
        }
        if let Some((t, FileType::Directory)) = target {
            if above_old.contains(&t) && target.map(|t| t.0) != Some(source.0) {
                // The target holds the source's directory: never empty.
                return Err(if flags & RENAME_EXCHANGE != 0 {
                    FsError::Invalid("cannot move a directory into its own subtree".into())
                } else {
                    FsError::NotEmpty
                });
            }
        }
        Ok(Plan {
            source,
            target,
            old_above_new: above_new[1..].contains(&oldparent),
            new_above_old: above_old[1..].contains(&newparent),
        })
    }

    /// `name` in directory `parent`, under a brief shared lock.
    fn peek(&self, parent: u64, name: &[u8]) -> FsResult<Option<Named>> {
        let cell = self.inode(parent)?;
        let state = cell.read();
        state.check_live()?;
        let root = dir_root(&state)?;
        dir::lookup(&self.cache, &root, name)
    }

    /// `dir` and its ancestors up to the root, each read under a brief
    /// shared lock.
    fn ancestors(&self, dir: u64) -> FsResult<Vec<u64>> {
        let mut chain = vec![dir];
        let mut cur = dir;
        while cur != ROOT_INODE {
            let parent = {
                let cell = self.inode(cur)?;
                let state = cell.read();
                state.check_live()?;
                state.parent
            };
            if parent == cur || parent == 0 {
                break;
            }
            if chain.len() > MAX_DEPTH || chain.contains(&parent) {
                return Err(corrupt!("the parents of directory {dir} loop"));
            }
            chain.push(parent);
            cur = parent;
        }
        Ok(chain)
    }

    /// The rename with the parents locked (`np` is `None` for one
    /// directory). `Ok(false)`: a name changed since `plan`, start over.
    #[allow(clippy::too_many_arguments)]
    fn rename_locked(
        &self,
        tx: &TxHandle<'_>,
        op: &mut InodeState,
        mut np: Option<&mut InodeState>,
        oldname: &[u8],
        newname: &[u8],
        flags: u32,
        caller: Caller,
        plan: Option<Plan>,
    ) -> FsResult<bool> {
        let exchange = flags & RENAME_EXCHANGE != 0;
        let old_root = changeable_dir(op)?;
        let new_root = match np.as_deref() {
            Some(np) => changeable_dir(np)?,
            None => old_root,
        };
        let source = dir::lookup(&self.cache, &old_root, oldname)?.ok_or(FsError::NotFound)?;
        let target = dir::lookup(&self.cache, &new_root, newname)?;
        if let Some(plan) = plan {
            if plan.source != source || plan.target != target {
                return Ok(false);
            }
        }
        if target.is_some_and(|t| t.0 == source.0) {
            // Two names of one inode (or one name): nothing to do.
            return Ok(true);
        }
        if flags & RENAME_NOREPLACE != 0 && target.is_some() {
            return Err(FsError::Exists);
        }
        if exchange && target.is_none() {
            return Err(FsError::NotFound);
        }
        let newparent = np.as_deref().map_or(op.ino(), |s| s.ino());
        if source.0 == newparent
            || source.0 == op.ino()
            || target.is_some_and(|t| t.0 == op.ino() || t.0 == newparent)
        {
            return Err(FsError::Invalid(
                "a directory cannot be renamed into itself".into(),
            ));
        }
        // The two named inodes, locked in ascending order.
        let s_cell = self.inode(source.0)?;
        let t_cell = target.map(|t| self.inode(t.0)).transpose()?;
        let (mut s, mut t) = lock_pair(&s_cell, t_cell.as_deref());
        s.check_live()?;
        if let Some(t) = t.as_deref() {
            t.check_live()?;
        }
        let s_dir = s.file_type == FileType::Directory;
        let t_dir = t
            .as_deref()
            .is_some_and(|t| t.file_type == FileType::Directory);
        // What may go away.
        let new_dir_state: &InodeState = np.as_deref().unwrap_or(op);
        if sticky_forbids(op, &s, caller) {
            return Err(FsError::NotPermitted);
        }
        if let Some(t) = t.as_deref() {
            if sticky_forbids(new_dir_state, t, caller) {
                return Err(FsError::NotPermitted);
            }
            check_removable(t)?;
            check_dir_shrinkable(new_dir_state)?;
        }
        check_removable(&s)?;
        check_dir_shrinkable(op)?;
        if !exchange {
            if let Some(t) = t.as_deref() {
                match (s_dir, t_dir) {
                    (true, false) => return Err(FsError::NotDir),
                    (false, true) => return Err(FsError::IsDir),
                    (true, true) => {
                        if !dir::is_empty(&self.cache, &dir_root(t)?)? {
                            return Err(FsError::NotEmpty);
                        }
                    }
                    (false, false) => {}
                }
            }
        }
        // Link counts of the parents: a directory's ".." counts in its
        // parent.
        let cross = np.is_some();
        let moved_to_new = i64::from(cross && s_dir)
            - i64::from(!exchange && t_dir)
            - i64::from(exchange && cross && t_dir);
        let moved_to_old = -i64::from(cross && s_dir) + i64::from(exchange && cross && t_dir);
        let new_links = i64::from(new_dir_state.links) + moved_to_new;
        let old_links = i64::from(op.links) + moved_to_old;
        if (moved_to_new > 0 && new_links > i64::from(LINK_MAX))
            || (moved_to_old > 0 && old_links > i64::from(LINK_MAX))
        {
            return Err(FsError::TooManyLinks);
        }

        // The new name first (the only step that can run out of space).
        let now = time::now();
        {
            let newdir: &mut InodeState = match np.as_deref_mut() {
                Some(np) => np,
                None => &mut *op,
            };
            self.edit_dir(tx, newdir, |mt, root| match target {
                Some(_) => dir::replace(mt, root, newname, source.0, s.file_type).map(|_| ()),
                None => dir::insert(mt, root, newname, source.0, s.file_type).map(|_| ()),
            })?;
        }
        if exchange {
            let t_type = t.as_deref().map_or(FileType::Regular, |t| t.file_type);
            let t_ino = target.map_or(0, |t| t.0);
            self.edit_dir(tx, op, |mt, root| {
                dir::replace(mt, root, oldname, t_ino, t_type).map(|_| ())
            })?;
        } else if flags & RENAME_WHITEOUT != 0 {
            let whiteout = self.create_inode(
                tx,
                FileType::CharDevice.mode_bits(),
                caller.uid,
                caller.gid,
                0,
                op.ino(),
            )?;
            let ino = whiteout.ino();
            let replaced = self.edit_dir(tx, op, |mt, root| {
                dir::replace(mt, root, oldname, ino, FileType::CharDevice).map(|_| ())
            });
            if let Err(e) = replaced {
                // The whiteout is named nowhere: free it again.
                let mut w = whiteout.write();
                w.links = 0;
                self.free_inode(tx, &mut w)?;
                return Err(e);
            }
        } else {
            self.edit_dir(tx, op, |mt, root| {
                dir::remove(mt, root, oldname).map(|_| ())
            })?;
        }
        // Parents, "..", link counts, times.
        if cross {
            if s_dir {
                s.parent = newparent;
            }
            if let (true, Some(t)) = (exchange && t_dir, t.as_deref_mut()) {
                t.parent = op.ino();
            }
        }
        op.links = u32::try_from(old_links)
            .map_err(|_| corrupt!("link count of {} underflows", op.ino()))?;
        op.mtime = now;
        op.ctime = now;
        if let Some(np) = np {
            np.links = u32::try_from(new_links)
                .map_err(|_| corrupt!("link count of {} underflows", np.ino()))?;
            np.mtime = now;
            np.ctime = now;
            self.store_inode(tx, np)?;
        } else {
            op.links = u32::try_from(old_links + moved_to_new)
                .map_err(|_| corrupt!("link count of {} underflows", op.ino()))?;
        }
        self.store_inode(tx, op)?;
        s.ctime = now;
        self.store_inode(tx, &s)?;
        if let (Some(t_cell), Some(t)) = (t_cell.as_deref(), t.as_deref_mut()) {
            if exchange {
                t.ctime = now;
                self.store_inode(tx, t)?;
            } else if t_dir {
                self.remove_dir_inode(tx, t_cell, t)?;
            } else {
                self.drop_link(tx, t_cell, t)?;
            }
        }
        Ok(true)
    }
}

/// Locks `a` and (if any) `b` exclusively in ascending inode order;
/// returns the guards in argument order.
fn lock_pair<'a>(
    a: &'a Arc<InodeCell>,
    b: Option<&'a InodeCell>,
) -> (
    RwLockWriteGuard<'a, InodeState>,
    Option<RwLockWriteGuard<'a, InodeState>>,
) {
    match b {
        None => (a.write(), None),
        Some(b) if a.ino() < b.ino() => {
            let ga = a.write();
            (ga, Some(b.write()))
        }
        Some(b) => {
            let gb = b.write();
            (a.write(), Some(gb))
        }
    }
}
