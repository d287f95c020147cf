//! The driver: runs workload ops on a mounted [`Fs`] the way the FUSE
//! adapter would for a process making the calls.
//!
//! What it promises:
//!
//! * Paths are resolved with `lookup`, one component at a time, as the
//!   kernel does; every inode the fs core returns counts as one kernel
//!   lookup, and the driver forgets them all after each op (the kernel
//!   dropping its dentries), or keeps them until [`Driver::forget_all`] when
//!   the workload holds references (then an unlinked file lives on as an
//!   orphan, as an open file would).
//! * Data ops open the file, act and release it; fsync opens, syncs and
//!   releases. Writes are issued until complete.
//! * [`Driver::run`] returns the inode number an op created, so the runner
//!   can map the model's identities to real inode numbers.
//!
//! Relies on: the fs core's public API (`keelfs_fs::core::Fs`).

use super::model::split_path;
use super::workload::{data_bytes, xattr_value, Op, RenameHow, WriteAt};
use keelfs_fs::core::{Caller, Fs, RENAME_EXCHANGE, RENAME_NOREPLACE};
use keelfs_fs::error::{FsError, FsResult};
use keelfs_fs::format::superblock::ROOT_INODE;
use std::collections::BTreeMap;

/// Runs ops on one mounted filesystem.
pub struct Driver<'f> {
    fs: &'f Fs,
    hold_refs: bool,
    /// Kernel lookups held, per inode.
    lookups: BTreeMap<u64, u64>,
}

impl<'f> Driver<'f> {
    pub fn new(fs: &'f Fs, hold_refs: bool) -> Driver<'f> {
        Driver {
            fs,
            hold_refs,
            lookups: BTreeMap::new(),
        }
    }

    fn looked_up(&mut self, ino: u64) -> u64 {
        *self.lookups.entry(ino).or_default() += 1;
        ino
    }

    /// The inode `path` names, by lookups from the root.
    pub fn resolve(&mut self, path: &str) -> FsResult<u64> {
        let mut at = ROOT_INODE;
        if path.is_empty() || path == "." {
            return Ok(at);
        }
        for name in path.split('/') {
            let attr = self.fs.lookup(at, name.as_bytes())?;
            at = self.looked_up(attr.ino);
        }
        Ok(at)
    }

    fn parent(&mut self, path: &str) -> FsResult<(u64, Vec<u8>)> {
        let (dir, name) = split_path(path);
        Ok((self.resolve(dir)?, name.as_bytes().to_vec()))
    }

    /// Forgets every lookup held.
    pub fn forget_all(&mut self) -> FsResult<()> {
        for (ino, n) in std::mem::take(&mut self.lookups) {
            self.fs.forget(ino, n)?;
        }
        Ok(())
    }

    /// Runs `op` (its bytes carry `stamp`); returns the inode it created.
    pub fn run(&mut self, op: &Op, stamp: u64) -> FsResult<Option<u64>> {
        let result = self.run_op(op, stamp);
        if !self.hold_refs {
            self.forget_all()?;
        }
        result
    }

    fn run_op(&mut self, op: &Op, stamp: u64) -> FsResult<Option<u64>> {
        let fs = self.fs;
        let root = Caller::ROOT;
        let mut created = None;
        match op {
            Op::Create(path) => {
                let (dir, name) = self.parent(path)?;
                let attr = fs.mknod(dir, &name, 0o100_644, 0, root)?;
                created = Some(self.looked_up(attr.ino));
            }
            Op::Mkdir(path) => {
                let (dir, name) = self.parent(path)?;
                let attr = fs.mkdir(dir, &name, 0o755, root)?;
                created = Some(self.looked_up(attr.ino));
            }
            Op::Symlink { path, target } => {
                let (dir, name) = self.parent(path)?;
                let attr = fs.symlink(dir, &name, target.as_bytes(), root)?;
                created = Some(self.looked_up(attr.ino));
            }
            Op::Write { path, at, len } => {
                let ino = self.resolve(path)?;
                self.with_open(ino, |fs| {
                    let offset = match at {
                        WriteAt::Append => fs.getattr(ino)?.size,
                        WriteAt::Offset(o) => *o,
                    };
                    let data = data_bytes(stamp, offset, *len);
                    let mut done = 0;
                    while done < data.len() {
                        let n = fs.write(ino, offset + done as u64, &data[done..])?;
                        if n == 0 {
                            return Err(FsError::NoSpace);
                        }
                        done += n;
                    }
                    Ok(())
                })?;
            }
            Op::Truncate { path, size } => {
                let ino = self.resolve(path)?;
                self.with_open(ino, |fs| fs.truncate(ino, *size))?;
            }
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                let ino = self.resolve(path)?;
                self.with_open(ino, |fs| fs.fallocate(ino, *offset, *len, mode.mode_bits()))?;
            }
            Op::Link { from, to } => {
                let ino = self.resolve(from)?;
                let (dir, name) = self.parent(to)?;
                let attr = fs.link(ino, dir, &name)?;
                self.looked_up(attr.ino);
            }
            Op::Unlink(path) => {
                let (dir, name) = self.parent(path)?;
                // The kernel looks the name up before it unlinks it.
                let attr = fs.lookup(dir, &name)?;
                self.looked_up(attr.ino);
                fs.unlink(dir, &name, root)?;
            }
            Op::Rmdir(path) => {
                let (dir, name) = self.parent(path)?;
                let attr = fs.lookup(dir, &name)?;
                self.looked_up(attr.ino);
                fs.rmdir(dir, &name, root)?;
            }
            Op::Rename { from, to, how } => {
                let (fdir, fname) = self.parent(from)?;
                let (tdir, tname) = self.parent(to)?;
                let attr = fs.lookup(fdir, &fname)?;
                self.looked_up(attr.ino);
                let flags = match how {
                    RenameHow::Plain => 0,
                    RenameHow::NoReplace => RENAME_NOREPLACE,
                    RenameHow::Exchange => RENAME_EXCHANGE,
                };
                fs.rename(fdir, &fname, tdir, &tname, flags, root)?;
            }
            Op::SetXattr { path, name, len } => {
                let ino = self.resolve(path)?;
                fs.setxattr(ino, name.as_bytes(), &xattr_value(stamp, *len), 0)?;
            }
            Op::RemoveXattr { path, name } => {
                let ino = self.resolve(path)?;
                fs.removexattr(ino, name.as_bytes())?;
            }
            Op::Fsync(path) | Op::Fdatasync(path) => {
                let ino = self.resolve(path)?;
                let datasync = matches!(op, Op::Fdatasync(_));
                self.with_open(ino, |fs| fs.fsync(ino, datasync))?;
            }
            Op::Syncfs => fs.syncfs()?,
        }
        Ok(created)
    }

    /// Opens `ino`, runs `f`, releases it (whatever `f` returned).
    fn with_open<T>(&self, ino: u64, f: impl FnOnce(&Fs) -> FsResult<T>) -> FsResult<T> {
        self.fs.open(ino)?;
        let result = f(self.fs);
        let released = self.fs.release(ino);
        let value = result?;
        released?;
        Ok(value)
    }
}
