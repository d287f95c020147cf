//! The public file API of a mounted filesystem: what the FUSE adapter
//! calls for getattr, setattr, open/release, read, write, truncate,
//! fallocate, lseek, copy_file_range, fsync, syncfs and statfs.
//!
//! What it promises:
//!
//! * every call takes the locks in the fs core's order (journal handle,
//!   then the inode lock; never two inode locks at once) and every change
//!   is one transaction: an error leaves the inode as it was, except for
//!   the documented short write / partial fallocate on `NoSpace`. Work
//!   whose size depends on the data is split into bounded steps, each its
//!   own transaction, so no transaction outgrows the journal: a shrinking
//!   truncate frees blocks past the new size 64 extents at a time,
//!   fallocate handles 8192 blocks at a time, copy_file_range 1 MiB at a
//!   time;
//! * timestamps follow POSIX: a write or a size change sets mtime and
//!   ctime; chmod and chown set ctime; explicit atime/mtime set ctime too;
//!   reads update atime as the mount's atime mode says (`atime.rs`);
//! * `fsync`/`fdatasync`/`syncfs` return once everything done before them
//!   (data and metadata) is durable: a journal commit, which flushes every
//!   leg;
//! * `statfs` figures add up: `blocks` is every block of a leg, `bfree`
//!   the blocks the bitmap says are free (so used = blocks − bfree counts
//!   the fixed metadata and every allocated block), `files` the inode
//!   count, `ffree` the free inodes.
//!
//! Permission checks and clearing setuid/setgid on chown or write are the
//! FUSE adapter's (it knows the caller).

use super::file::WriteTimes;
use super::file_space::{FallocMode, SeekKind};
use super::inode::{InodeCell, InodeState};
use super::time;
use super::Fs;
use crate::error::{FsError, FsResult};
use crate::format::{AttrFlags, FileType, Timestamp};
use crate::journal::TxHandle;

/// Bytes copied per step of copy_file_range.
const COPY_CHUNK: u64 = 1 << 20;
/// Blocks fallocate handles per transaction.
const FALLOC_STEP: u64 = 8192;
/// Most bytes one read returns (a larger request is a short read).
pub const MAX_READ: u32 = 64 << 20;

/// What `stat` reports about an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAttr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte units held.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Birth time.
    pub crtime: Timestamp,
    pub kind: FileType,
    /// Permission bits (≤ 0o7777).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    /// Preferred I/O size: the block size.
    pub blksize: u32,
    /// Bumped on every reuse of the inode number (file handles).
    pub generation: u32,
    /// chattr flags.
    pub flags: u32,
}

impl FileAttr {
    /// The full mode (type and permission bits).
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | u32::from(self.perm)
    }
}

/// A time to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    /// The current time.
    Now,
    At(Timestamp),
}

/// What setattr changes (`None` = leave as is).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (the type bits are ignored).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Regular files only.
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// An explicit ctime (otherwise any change sets it to now).
    pub ctime: Option<Timestamp>,
    /// Birth time (as some FUSE clients set it).
    pub crtime: Option<Timestamp>,
}

/// lseek's `whence` beyond what the kernel handles itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    Data,
    Hole,
}

/// What `statfs` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Blocks of a leg (fixed metadata included).
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Free blocks for unprivileged users (no reserve: = bfree).
    pub bavail: u64,
    /// Inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

impl Fs {
    pub(crate) fn attr_of(&self, state: &InodeState) -> FileAttr {
        FileAttr {
            ino: state.ino(),
            size: state.size,
            blocks: state.blocks.saturating_mul(self.block_size() / 512),
            atime: state.atime,
            mtime: state.mtime,
            ctime: state.ctime,
            crtime: state.btime,
            kind: state.file_type,
            perm: state.permissions,
            nlink: state.links,
            uid: state.uid,
            gid: state.gid,
            rdev: state.rdev,
            blksize: self.layout.block_size,
            generation: state.generation,
            flags: state.attr_flags.bits(),
        }
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<FileAttr> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        Ok(self.attr_of(&state))
    }

    /// Changes attributes of `ino` (see [`SetAttr`] and the module docs);
    /// returns the new attributes.
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> FsResult<FileAttr> {
        self.check_writable()?;
        let cell = self.inode(ino)?;
        let (attr, more) = {
            let tx = self.journal.start()?;
            let mut state = cell.write();
            let more = self.setattr_locked(&tx, &mut state, set)?;
            (self.attr_of(&state), more)
        };
        if more {
            self.free_past_size(&cell)?;
        }
        Ok(attr)
    }

    /// Applies `set` under the inode's lock; returns whether a shrink left
    /// blocks past the size to free in later transactions.
    fn setattr_locked(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        set: &SetAttr,
    ) -> FsResult<bool> {
        state.check_live()?;
        let before = (set.size.is_none() && set.ctime.is_some()).then(|| state.inode.clone());
        super::chattr::check_setattr(state, set)?;
        let now = time::now();
        let mut changed = false;
        let mut more = false;
        if let Some(size) = set.size {
            if state.attr_flags.contains(AttrFlags::IMMUTABLE)
                || (state.attr_flags.contains(AttrFlags::APPEND) && size < state.size)
            {
                return Err(FsError::NotPermitted);
            }
            match self.truncate_file(tx, state, size) {
                Ok(m) => more = m,
                Err(e) => {
                    // Whatever the tree became is what the inode must record.
                    self.store_inode(tx, state)?;
                    return Err(e);
                }
            }
            state.mtime = now;
            changed = true;
        }
        if let Some(mode) = set.mode {
            state.permissions = (mode & 0o7777) as u16;
            // A stored access ACL follows (acl.rs).
            self.acl_follow_mode(tx, state)?;
            changed = true;
        }
        if let Some(uid) = set.uid {
            state.uid = uid;
            changed = true;
        }
        if let Some(gid) = set.gid {
            state.gid = gid;
            changed = true;
        }
        let resolve = |t: TimeSet| match t {
            TimeSet::Now => now,
            TimeSet::At(t) => t,
        };
        if let Some(t) = set.atime {
            state.atime = resolve(t);
            changed = true;
        }
        if let Some(t) = set.mtime {
            state.mtime = resolve(t);
            changed = true;
        }
        if let Some(t) = set.crtime {
            state.btime = t;
            changed = true;
        }
        if changed || set.ctime.is_some() {
            state.ctime = set.ctime.unwrap_or(now);
            state.inode.validate()?;
            // An explicit ctime with values the inode already has changes
            // nothing (the kernel's writeback cache sends the same times
            // again when it evicts an inode): no store, no journal block.
            let same = before.as_ref() == Some(&state.inode);
            if !same {
                self.store_inode(tx, state)?;
            }
        }
        Ok(more)
    }

    /// Frees, one transaction per step, the blocks a shrink left past the
    /// size (see `file_space.rs`). Takes the journal handle, then the lock,
    /// for each step.
    fn free_past_size(&self, cell: &InodeCell) -> FsResult<()> {
        loop {
            let tx = self.journal.start()?;
            let mut state = cell.write();
            if !state.is_live() || state.file_type != FileType::Regular {
                return Ok(());
            }
            let from = state.size.div_ceil(self.block_size());
            let more = self.free_tail(&tx, &mut state, from)?;
            self.store_inode(&tx, &state)?;
            if !more {
                return Ok(());
            }
        }
    }

    /// A handle on `ino` is opened: an unlinked inode lives on while open.
    pub fn open(&self, ino: u64) -> FsResult<FileAttr> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        cell.open();
        Ok(self.attr_of(&state))
    }

    /// A handle on `ino` is closed; the last close of an unlinked inode
    /// that the kernel no longer knows frees it.
    pub fn release(&self, ino: u64) -> FsResult<()> {
        let Some(cell) = self.inodes.cached_cell(ino) else {
            return Ok(());
        };
        if cell.close() == 0 && cell.lookups() == 0 {
            self.reclaim_if_unlinked(&cell)?;
            drop(cell);
            self.inodes.evict(ino);
        }
        Ok(())
    }

    /// Up to `size` bytes of `ino` from `offset` (fewer at the end of the
    /// file, and at most 64 MiB: `MAX_READ`).
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let cell = self.inode(ino)?;
        let (data, touch) = {
            let state = cell.read();
            let data = self.read_file(&state, offset, size.min(MAX_READ))?;
            (data, self.atime_due(&state))
        };
        if touch {
            let tx = self.journal.start()?;
            let mut state = cell.write();
            if state.is_live() && self.atime_due(&state) {
                state.atime = time::now();
                self.store_inode(&tx, &state)?;
            }
        }
        Ok(data)
    }

    /// Writes `data` at `offset` of `ino`; returns the bytes written (fewer
    /// than asked only when space ran out part-way). Sets mtime and ctime.
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<usize> {
        self.write_with_times(ino, offset, data, WriteTimes::Stamp)
    }

    /// [`Fs::write`] that leaves mtime and ctime as they are: the writer
    /// owns the times and sets them itself, as the kernel's writeback cache
    /// does (it stamps them when write(2) runs and sends them with
    /// setattr). Size, blocks and extents are stored as by `write`, with
    /// one inode store in one transaction.
    pub fn write_keep_times(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<usize> {
        self.write_with_times(ino, offset, data, WriteTimes::Keep)
    }

    fn write_with_times(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        times: WriteTimes,
    ) -> FsResult<usize> {
        self.check_writable()?;
        let cell = self.inode(ino)?;
        let tx = self.journal.start()?;
        let mut state = cell.write();
        state.check_live()?;
        if state.attr_flags.contains(AttrFlags::IMMUTABLE) {
            return Err(FsError::NotPermitted);
        }
        self.write_file(&tx, &mut state, offset, data, times)
    }

    /// Sets the size of `ino` (mtime and ctime too).
    pub fn truncate(&self, ino: u64, size: u64) -> FsResult<()> {
        self.setattr(
            ino,
            &SetAttr {
                size: Some(size),
                ..SetAttr::default()
            },
        )
        .map(|_| ())
    }

    /// fallocate(2) on `ino` (`mode`: `FALLOC_FL_*` bits).
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: i32) -> FsResult<()> {
        self.check_writable()?;
        let mode = FallocMode(mode);
        let end = mode.check(offset, len)?;
        let cell = self.inode(ino)?;
        // A punch needs no step past the last mapped block.
        let end = if mode.0 & FallocMode::PUNCH_HOLE != 0 {
            end.min(self.mapped_end(&cell)?.max(offset + 1))
        } else {
            end
        };
        // One transaction per step of FALLOC_STEP blocks (aligned), so a
        // large range never makes a transaction the journal cannot take.
        let step = FALLOC_STEP * self.block_size();
        let mut pos = offset;
        while pos < end {
            let stop = (pos / step + 1).saturating_mul(step).min(end);
            let tx = self.journal.start()?;
            let mut state = cell.write();
            state.check_live()?;
            if state.attr_flags.contains(AttrFlags::IMMUTABLE) {
                return Err(FsError::NotPermitted);
            }
            let result = self.fallocate_file(&tx, &mut state, pos, stop - pos, mode);
            // Whatever was allocated before an error stays (and is recorded).
            let now = time::now();
            if mode.0 & (FallocMode::PUNCH_HOLE | FallocMode::ZERO_RANGE) != 0 {
                state.mtime = now;
            }
            state.ctime = now;
            self.store_inode(&tx, &state)?;
            result?;
            pos = stop;
        }
        Ok(())
    }

    /// Bytes up to the end of the last block the file maps.
    fn mapped_end(&self, cell: &InodeCell) -> FsResult<u64> {
        let state = cell.read();
        Ok(match &state.data {
            crate::format::DataArea::Extents(root) => {
                super::extent::last_end(&self.cache, root)?.saturating_mul(self.block_size())
            }
            _ => state.size,
        })
    }

    /// SEEK_DATA / SEEK_HOLE on `ino` from `offset`.
    pub fn lseek(&self, ino: u64, offset: u64, whence: Whence) -> FsResult<u64> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        let kind = match whence {
            Whence::Data => SeekKind::Data,
            Whence::Hole => SeekKind::Hole,
        };
        self.seek_file(&state, offset, kind)
    }

    /// Copies up to `len` bytes from `ino_in` at `off_in` to `ino_out` at
    /// `off_out` (by reading and writing: no shared blocks); returns the
    /// bytes copied (fewer at the end of the source).
    pub fn copy_file_range(
        &self,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        self.check_writable()?;
        let src = self.inode(ino_in)?;
        let dst = self.inode(ino_out)?;
        if ino_in == ino_out {
            let (lo, hi) = (off_in.min(off_out), off_in.max(off_out));
            if lo.saturating_add(len) > hi {
                return Err(FsError::Invalid(
                    "copy_file_range within a file with overlapping ranges".into(),
                ));
            }
        }
        let mut copied = 0u64;
        while copied < len {
            let step = (len - copied).min(COPY_CHUNK) as u32;
            let chunk = {
                let state = src.read();
                self.read_file(&state, off_in + copied, step)?
            };
            if chunk.is_empty() {
                break;
            }
            let tx = self.journal.start()?;
            let mut state = dst.write();
            state.check_live()?;
            if state.attr_flags.contains(AttrFlags::IMMUTABLE) {
                return Err(FsError::NotPermitted);
            }
            let n =
                self.write_file(&tx, &mut state, off_out + copied, &chunk, WriteTimes::Stamp)?;
            copied += n as u64;
            if n < chunk.len() {
                break;
            }
        }
        Ok(copied)
    }

    /// fsync / fdatasync of `ino`: everything written so far is durable
    /// when this returns.
    pub fn fsync(&self, ino: u64, _datasync: bool) -> FsResult<()> {
        let cell = self.inode(ino)?;
        cell.read().check_live()?;
        if self.read_only {
            return Ok(());
        }
        self.journal.commit()
    }

    /// syncfs: everything is durable, and the superblocks record the free
    /// counts.
    pub fn syncfs(&self) -> FsResult<()> {
        self.sync_all()
    }

    /// statfs (see the module docs).
    pub fn statfs(&self) -> FsResult<StatFs> {
        let bfree = self.blocks.free_blocks();
        Ok(StatFs {
            blocks: self.layout.device_blocks,
            bfree,
            bavail: bfree,
            files: self.layout.inode_count,
            ffree: self.ialloc.free_inodes(),
            bsize: self.layout.block_size,
            namelen: crate::format::dir::NAME_MAX as u32,
            frsize: self.layout.block_size,
        })
    }
}
