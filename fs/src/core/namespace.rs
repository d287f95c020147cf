//! The namespace operations of a mounted filesystem: lookup, mknod, mkdir,
//! symlink, link, unlink and rmdir (rename is `rename.rs`, listings
//! `readdir.rs`, extended attributes `xattr_ops.rs`).
//!
//! What it promises:
//!
//! * every operation is one transaction and takes its locks in the fs
//!   core's order: the journal handle, then the directory's inode lock,
//!   then the child's; an error leaves everything as it was (a new inode
//!   whose name cannot be added is freed again in the same transaction;
//!   the directory tree reserves its blocks before it changes, see
//!   `dir::insert`);
//! * link counts: a file has one link per name; a directory has 2 + its
//!   subdirectories ("." and its name, plus each child's ".."). `link`
//!   refuses directories (`NotPermitted`) and counts past [`LINK_MAX`]
//!   (`TooManyLinks`), as `mkdir` does for the parent's count;
//! * times: creating or removing a name sets the directory's mtime and
//!   ctime (to the new inode's creation time); `link` and `unlink` set the
//!   child's ctime;
//! * the size of a directory is B × its tree blocks and its "blocks held"
//!   counts them (plus xattr blocks), kept as the tree grows and shrinks;
//! * a new inode in a setgid directory takes the directory's group, and a
//!   new directory there is setgid too (what the kernel does for local
//!   filesystems);
//! * a new inode's permission bits are the asked-for ones masked by the
//!   parent's default ACL, which it inherits (`acl.rs`), or else by the
//!   caller's umask ([`Caller::umask`]); symlinks are always 0777;
//! * the sticky bit: in a sticky directory only the owner of the entry's
//!   inode, the owner of the directory or uid 0 may remove or rename the
//!   entry (`NotPermitted`); immutable or append-only inodes and
//!   directories refuse namespace changes as in ext4 (`NotPermitted`).
//!   Other permission checks are the FUSE adapter's (default_permissions).
//! * the kernel's lookup count of an inode grows by one for every lookup,
//!   mknod, mkdir, symlink and link that returns it (FUSE semantics); an
//!   inode whose last link goes while the kernel still knows it is
//!   orphaned, and freed at its last forget (`lifecycle.rs`).
//!
//! Relies on: `dir` (the B+tree; a directory's lock must be held across
//! any use of its tree), `lifecycle.rs` (creating, dropping and freeing
//! inodes), the inode cache (one lock per inode).

use super::inode::{InodeCell, InodeState};
use super::time;
use super::{FileAttr, Fs};
use crate::dir;
use crate::error::{corrupt, FsError, FsResult};
use crate::format::superblock::ROOT_INODE;
use crate::format::{AttrFlags, DataArea, DirRoot, FileType};
use crate::journal::TxHandle;
use crate::meta_tx::MetaTx;
use std::sync::Arc;

/// The most links an inode may have (`link`, and a directory's count
/// through its subdirectories).
pub const LINK_MAX: u32 = 65_000;

/// Mode bit: new entries take the directory's group.
const S_ISGID: u16 = 0o2000;
/// Mode bit: only owners may remove or rename entries.
const S_ISVTX: u16 = 0o1000;

/// Who makes a request (from the FUSE request header): the owner of what
/// it creates, whose the sticky-bit rules are checked for, and the umask
/// applied to what it creates where no default ACL applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits taken away from a new inode's mode unless the
    /// directory has a default ACL (FUSE sends the process's umask; 0 when
    /// the kernel applied it already).
    pub umask: u32,
}

impl Caller {
    /// uid 0, gid 0, no umask.
    pub const ROOT: Caller = Caller::new(0, 0);

    /// `uid`:`gid` with no umask.
    pub const fn new(uid: u32, gid: u32) -> Caller {
        Caller { uid, gid, umask: 0 }
    }
}

/// The tree root of a directory inode; `NotDir` for any other type.
pub(crate) fn dir_root(state: &InodeState) -> FsResult<DirRoot> {
    if state.file_type != FileType::Directory {
        return Err(FsError::NotDir);
    }
    match &state.data {
        DataArea::Directory(root) => Ok(*root),
        _ => Err(corrupt!(
            "directory {} has no directory root in its data area",
            state.ino()
        )),
    }
}

/// The tree root of a directory names may be added to or removed from:
/// live, a directory, not removed itself (`NotFound`, as for a removed
/// working directory), not immutable.
pub(crate) fn changeable_dir(state: &InodeState) -> FsResult<DirRoot> {
    state.check_live()?;
    let root = dir_root(state)?;
    if state.links == 0 {
        return Err(FsError::NotFound);
    }
    if state.attr_flags.contains(AttrFlags::IMMUTABLE) {
        return Err(FsError::NotPermitted);
    }
    Ok(root)
}

/// Whether the sticky bit of `dir` keeps `caller` from removing or
/// renaming the entry for `victim`.
pub(crate) fn sticky_forbids(dir: &InodeState, victim: &InodeState, caller: Caller) -> bool {
    dir.permissions & S_ISVTX != 0
        && caller.uid != 0
        && caller.uid != dir.uid
        && caller.uid != victim.uid
}

/// `NotPermitted` for an inode whose name may not go away (immutable or
/// append-only, as ext4).
pub(crate) fn check_removable(victim: &InodeState) -> FsResult<()> {
    if victim.attr_flags.contains(AttrFlags::IMMUTABLE)
        || victim.attr_flags.contains(AttrFlags::APPEND)
    {
        return Err(FsError::NotPermitted);
    }
    Ok(())
}

/// `NotPermitted` if names may not be removed from `dir` (append-only).
pub(crate) fn check_dir_shrinkable(dir: &InodeState) -> FsResult<()> {
    if dir.attr_flags.contains(AttrFlags::APPEND) {
        return Err(FsError::NotPermitted);
    }
    Ok(())
}

impl Fs {
    /// Runs `f` on the tree of directory `state` in `tx`, then records what
    /// the tree became in the inode (root, blocks held, size = B × tree
    /// blocks); the caller stores the inode. If `f` fails after changing the
    /// tree (an I/O error half way), the inode is recorded and stored here
    /// before the error is returned; if it changed nothing, the inode is
    /// left as it was.
    pub(crate) fn edit_dir<T>(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        f: impl FnOnce(&MetaTx<'_, '_>, &mut DirRoot) -> FsResult<T>,
    ) -> FsResult<T> {
        let before = dir_root(state)?;
        let mut root = before;
        let mt = MetaTx::new(&self.cache, tx, self.meta_allocator());
        let result = f(&mt, &mut root);
        let delta = mt.blocks_delta();
        if result.is_err() && root == before && delta == 0 {
            return result;
        }
        let bs = self.block_size();
        let tree_blocks = (state.size / bs).saturating_add_signed(delta);
        state.data = DataArea::Directory(root);
        state.blocks = state.blocks.saturating_add_signed(delta);
        state.size = tree_blocks.saturating_mul(bs);
        if result.is_err() {
            self.store_inode(tx, state)?;
        }
        result
    }

    /// Looks `name` up in directory `parent` and returns its attributes; the
    /// kernel's lookup count of the inode grows by one. "." and ".." name
    /// the directory and its parent (the root's is itself). "." also names
    /// any other live inode itself: that is how the kernel finds an inode
    /// by number for a file handle (FUSE export support), and a freed one
    /// is `Stale` (ESTALE).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<FileAttr> {
        let pcell = self.inode(parent)?;
        let p = pcell.read();
        p.check_live()?;
        if name == b"." && p.file_type != FileType::Directory {
            pcell.add_lookups(1);
            return Ok(self.attr_of(&p));
        }
        let root = dir_root(&p)?;
        let ino = match name {
            b"." => parent,
            b".." => p.parent,
            _ => {
                dir::lookup(&self.cache, &root, name)?
                    .ok_or(FsError::NotFound)?
                    .0
            }
        };
        if ino == parent {
            pcell.add_lookups(1);
            return Ok(self.attr_of(&p));
        }
        if name == b".." {
            // An ancestor is not locked under its child: the entry's
            // inode is enough to answer.
            drop(p);
        }
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        cell.add_lookups(1);
        Ok(self.attr_of(&state))
    }

    /// Creates a regular file, fifo, socket, character or block device
    /// `name` in `parent` (`mode` holds the type and permission bits; type
    /// 0 means a regular file; `rdev` is kept for devices). Directories are
    /// made by [`Fs::mkdir`] (`NotPermitted` here), symlinks by
    /// [`Fs::symlink`] (`Invalid`).
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> FsResult<FileAttr> {
        let mode = if mode & 0o170_000 == 0 {
            mode | FileType::Regular.mode_bits()
        } else {
            mode
        };
        let file_type = FileType::from_mode(mode)
            .ok_or_else(|| FsError::Invalid(format!("mode {mode:#o} names no file type")))?;
        match file_type {
            FileType::Directory => return Err(FsError::NotPermitted),
            FileType::Symlink => {
                return Err(FsError::Invalid("mknod cannot make a symlink".into()))
            }
            _ => {}
        }
        let type_bits = mode & 0o170_000;
        self.make_entry(
            parent,
            name,
            file_type,
            (mode & 0o7777) as u16,
            |tx, gid, perm| {
                self.create_inode(
                    tx,
                    type_bits | u32::from(perm),
                    caller.uid,
                    gid,
                    rdev,
                    parent,
                )
            },
            caller,
        )
    }

    /// Creates directory `name` in `parent` with permission bits `mode`
    /// (2 links; the parent gains one).
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> FsResult<FileAttr> {
        self.make_entry(
            parent,
            name,
            FileType::Directory,
            (mode & 0o7777) as u16,
            |tx, gid, perm| {
                self.create_inode(
                    tx,
                    FileType::Directory.mode_bits() | u32::from(perm),
                    caller.uid,
                    gid,
                    0,
                    parent,
                )
            },
            caller,
        )
    }

    /// Creates symlink `name` in `parent` pointing at `target` (stored
    /// inline up to 128 bytes, else in an overflow block; see
    /// `symlink.rs` for its limits).
    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<FileAttr> {
        self.make_entry(
            parent,
            name,
            FileType::Symlink,
            0o777,
            |tx, gid, _| self.create_symlink(tx, target, caller.uid, gid, parent),
            caller,
        )
    }

    /// Adds a new inode made by `make(tx, gid, permission bits)` to
    /// `parent` as `name`; the caller asked for permission bits `perm`,
    /// which the parent's default ACL or the caller's umask and the
    /// parent's setgid bit turn into the ones `make` gets (see the module
    /// docs and `acl.rs`).
    fn make_entry(
        &self,
        parent: u64,
        name: &[u8],
        file_type: FileType,
        perm: u16,
        make: impl FnOnce(&TxHandle<'_>, u32, u16) -> FsResult<Arc<InodeCell>>,
        caller: Caller,
    ) -> FsResult<FileAttr> {
        self.check_writable()?;
        dir::check_name(name)?;
        let tx = self.journal.start()?;
        let pcell = self.inode(parent)?;
        let mut p = pcell.write();
        changeable_dir(&p)?;
        let is_dir = file_type == FileType::Directory;
        if is_dir && p.links >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        let setgid = p.permissions & S_ISGID != 0;
        let gid = if setgid { p.gid } else { caller.gid };
        let mut inherited = self.inherit_acls(&p, file_type, perm, caller.umask)?;
        if is_dir && setgid {
            inherited.perm |= S_ISGID;
        }
        // The inode is made once the name is known to be free and the tree
        // has the blocks it needs; what it inherits is stored before the
        // name is added, so a failure frees it with the rest.
        let mut made: Option<Arc<InodeCell>> = None;
        let added = self.edit_dir(&tx, &mut p, |mt, root| {
            dir::insert_with(mt, root, name, || {
                let cell = make(&tx, gid, inherited.perm)?;
                let ino = cell.ino();
                made = Some(Arc::clone(&cell));
                if inherited.access.is_some() || inherited.default.is_some() {
                    let mut c = cell.write();
                    self.store_inherited(&tx, &mut c, &inherited)?;
                    self.store_inode(&tx, &c)?;
                }
                Ok((ino, file_type, ()))
            })
        });
        let cell = match (added, made) {
            (Ok(_), Some(cell)) => cell,
            (result, made) => {
                if let Some(cell) = made {
                    let mut c = cell.write();
                    c.links = 0;
                    self.free_inode(&tx, &mut c)?;
                }
                return Err(result
                    .err()
                    .unwrap_or_else(|| corrupt!("directory insert made no inode")));
            }
        };
        let mut c = cell.write();
        if is_dir {
            c.links = 2;
            self.store_inode(&tx, &c)?;
            p.links += 1;
        }
        p.mtime = c.ctime;
        p.ctime = c.ctime;
        self.store_inode(&tx, &p)?;
        cell.add_lookups(1);
        Ok(self.attr_of(&c))
    }

    /// Adds the name `newname` in `newparent` for the existing inode `ino`
    /// (not a directory: `NotPermitted`; one with no link left: `NotFound`;
    /// at [`LINK_MAX`] links: `TooManyLinks`).
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<FileAttr> {
        self.check_writable()?;
        dir::check_name(newname)?;
        if ino == newparent {
            // Either not a directory to link into, or a directory to link.
            let cell = self.inode(ino)?;
            let state = cell.read();
            state.check_live()?;
            return Err(if state.file_type == FileType::Directory {
                FsError::NotPermitted
            } else {
                FsError::NotDir
            });
        }
        let tx = self.journal.start()?;
        let pcell = self.inode(newparent)?;
        let cell = self.inode(ino)?;
        let mut p = pcell.write();
        changeable_dir(&p)?;
        let mut c = cell.write();
        c.check_live()?;
        if c.file_type == FileType::Directory {
            return Err(FsError::NotPermitted);
        }
        if c.links == 0 {
            return Err(FsError::NotFound);
        }
        if c.links >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        if c.attr_flags.contains(AttrFlags::IMMUTABLE) || c.attr_flags.contains(AttrFlags::APPEND) {
            return Err(FsError::NotPermitted);
        }
        let file_type = c.file_type;
        self.edit_dir(&tx, &mut p, |mt, root| {
            dir::insert(mt, root, newname, ino, file_type)
        })?;
        let now = time::now();
        c.links += 1;
        c.ctime = now;
        p.mtime = now;
        p.ctime = now;
        self.store_inode(&tx, &c)?;
        self.store_inode(&tx, &p)?;
        cell.add_lookups(1);
        Ok(self.attr_of(&c))
    }

    /// Removes the name `name` of a non-directory from `parent` (`IsDir`
    /// for a directory); the inode loses a link (freed or orphaned at 0).
    pub fn unlink(&self, parent: u64, name: &[u8], caller: Caller) -> FsResult<()> {
        self.check_writable()?;
        dir::check_name(name)?;
        let tx = self.journal.start()?;
        let pcell = self.inode(parent)?;
        let mut p = pcell.write();
        let root = changeable_dir(&p)?;
        let (ino, _) = dir::lookup(&self.cache, &root, name)?.ok_or(FsError::NotFound)?;
        if ino == parent {
            return Err(corrupt!("directory {parent} has an entry for itself"));
        }
        let cell = self.inode(ino)?;
        let mut c = cell.write();
        c.check_live()?;
        if c.file_type == FileType::Directory {
            return Err(FsError::IsDir);
        }
        if sticky_forbids(&p, &c, caller) {
            return Err(FsError::NotPermitted);
        }
        check_removable(&c)?;
        check_dir_shrinkable(&p)?;
        self.edit_dir(&tx, &mut p, |mt, root| dir::remove(mt, root, name))?;
        let now = time::now();
        p.mtime = now;
        p.ctime = now;
        self.store_inode(&tx, &p)?;
        self.drop_link(&tx, &cell, &mut c)
    }

    /// Removes the empty directory `name` from `parent` (`NotDir`,
    /// `NotEmpty`; `Invalid` for ".", `NotEmpty` for "..", `Busy` for the
    /// root). The parent loses the link of the child's "..".
    pub fn rmdir(&self, parent: u64, name: &[u8], caller: Caller) -> FsResult<()> {
        self.check_writable()?;
        match name {
            b"." => return Err(FsError::Invalid("rmdir of \".\"".into())),
            b".." => return Err(FsError::NotEmpty),
            _ => dir::check_name(name)?,
        }
        let tx = self.journal.start()?;
        let pcell = self.inode(parent)?;
        let mut p = pcell.write();
        let root = changeable_dir(&p)?;
        let (ino, _) = dir::lookup(&self.cache, &root, name)?.ok_or(FsError::NotFound)?;
        if ino == ROOT_INODE || ino == parent {
            return Err(FsError::Busy);
        }
        let cell = self.inode(ino)?;
        let mut c = cell.write();
        c.check_live()?;
        let child_root = dir_root(&c)?;
        // Permission before emptiness, as Linux checks (may_delete first).
        if sticky_forbids(&p, &c, caller) {
            return Err(FsError::NotPermitted);
        }
        check_removable(&c)?;
        check_dir_shrinkable(&p)?;
        if !dir::is_empty(&self.cache, &child_root)? {
            return Err(FsError::NotEmpty);
        }
        self.edit_dir(&tx, &mut p, |mt, root| dir::remove(mt, root, name))?;
        let now = time::now();
        p.links = p.links.saturating_sub(1);
        p.mtime = now;
        p.ctime = now;
        self.store_inode(&tx, &p)?;
        self.remove_dir_inode(&tx, &cell, &mut c)?;
        drop((c, p, tx));
        if ino == self.superblock().lost_found_inode {
            // lost+found is gone: the superblock must not name it any more
            // (fsck would otherwise find it naming a free inode). Written
            // after the removal commits; a crash in between leaves a stale
            // name that fsck -y clears.
            self.journal.commit()?;
            self.forget_lost_found()?;
        }
        Ok(())
    }

    /// The last name of empty directory `state` is gone: no link left, its
    /// (empty) tree freed, then freed or orphaned.
    pub(crate) fn remove_dir_inode(
        &self,
        tx: &TxHandle<'_>,
        cell: &InodeCell,
        state: &mut InodeState,
    ) -> FsResult<()> {
        state.links = 0;
        state.ctime = time::now();
        self.edit_dir(tx, state, dir::destroy)?;
        self.unlinked(tx, cell, state)
    }
}
