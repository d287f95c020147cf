//! The adapter's namespace and directory operations: lookup, forget,
//! mknod, mkdir, symlink, link, unlink, rmdir, rename, create, opendir,
//! readdir, readdirplus.
//!
//! What it promises (on top of `adapter.rs`): every entry returned to the
//! kernel counts one lookup in the core (the core counts them; here only
//! `create` falls back to `lookup` when a racing creator won, which counts
//! too); `forget` gives them back; a negative lookup is cached by the
//! kernel for `negative_timeout` when that is not zero (an entry with inode
//! 0); without `default_permissions` the directory's write and search bits
//! are checked first (`adapter_perm.rs`). `create` is mknod plus open of
//! the new inode; a name created meanwhile by someone else is opened
//! instead unless `O_EXCL` was given.
//!
//! Relies on: the fs core's namespace API (`core/namespace.rs`,
//! `core/rename.rs`, `core/readdir.rs`) and its lookup counting.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    FileHandle, FopenFlags, Generation, INodeNo, ReplyCreate, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};

use super::adapter::{answer, fuse_attr, fuse_kind, generation, retry_on_nospace, Ctx, KeelFs};
use super::adapter_perm::{self as perm, MAY_EXEC, MAY_READ, MAY_WRITE};
use super::errno::reply_errno;
use crate::core::{FileAttr, Fs};
use crate::error::{FsError, FsResult};
use crate::format::FileType;

/// Open flags the adapter answers a regular-file open with: keelfs is the
/// only writer and every change goes through the kernel, so the page cache
/// stays valid across opens — unless a read of the file must update its
/// atime: then the cache is dropped so that read reaches us (the kernel
/// never updates atime of FUSE files itself).
pub(super) fn file_open_flags(fs: &Fs, attr: &FileAttr) -> FopenFlags {
    if fs.read_updates_atime(attr) {
        FopenFlags::empty()
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    }
}

/// Answers `reply` with the entry for `attr`.
pub(super) fn reply_entry(ctx: &Ctx<'_>, reply: ReplyEntry, attr: &FileAttr) {
    reply.entry_with_ttls(
        &ctx.config.attr_ttl,
        &ctx.config.entry_ttl,
        &fuse_attr(attr),
        generation(attr),
    );
}

/// Without `default_permissions`: `who` needs `mask` on directory `dir`.
fn check_dir(ctx: &Ctx<'_>, dir: u64, mask: u32) -> FsResult<()> {
    if ctx.config.default_permissions {
        return Ok(());
    }
    let attr = ctx.fs.getattr(dir)?;
    if attr.kind != FileType::Directory {
        return Err(FsError::NotDir);
    }
    perm::check(&attr, ctx.who, mask)
}

/// A negative entry (inode 0) the kernel caches for `ttl`.
fn negative_entry(reply: ReplyEntry, ttl: Duration) {
    let attr = fuser::FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    };
    reply.entry_with_ttls(&Duration::ZERO, &ttl, &attr, Generation(0));
}

impl KeelFs {
    pub(super) fn lookup_op(&self, req: &Request, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes().to_vec();
        self.run(req, move |ctx| {
            // "." is the kernel looking an inode up by number for a file
            // handle (any type; open_by_handle_at is privileged).
            let checked = if name == b"." {
                Ok(())
            } else {
                check_dir(ctx, parent, MAY_EXEC)
            };
            let result = checked.and_then(|()| ctx.fs.lookup(parent, &name));
            match result {
                Ok(attr) => reply_entry(ctx, reply, &attr),
                Err(FsError::NotFound) if !ctx.config.negative_ttl.is_zero() => {
                    negative_entry(reply, ctx.config.negative_ttl)
                }
                Err(e) => reply.error(reply_errno("lookup", parent, &e)),
            }
        });
    }

    pub(super) fn forget_op(&self, req: &Request, nodes: Vec<(u64, u64)>) {
        self.run(req, move |ctx| {
            for (ino, nlookup) in nodes {
                if let Err(e) = ctx.fs.forget(ino, nlookup) {
                    // No reply to carry the error: the log is all there is.
                    let _ = reply_errno("forget", ino, &e);
                }
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn mknod_op(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = name.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = check_dir(ctx, parent, MAY_WRITE | MAY_EXEC).and_then(|()| {
                retry_on_nospace(ctx.fs, || {
                    ctx.fs
                        .mknod(parent, &name, mode, u64::from(rdev), ctx.who.creator(umask))
                })
            });
            answer(reply, "mknod", parent, result, |reply, attr| {
                reply_entry(ctx, reply, &attr)
            });
        });
    }

    pub(super) fn mkdir_op(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = name.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = check_dir(ctx, parent, MAY_WRITE | MAY_EXEC).and_then(|()| {
                retry_on_nospace(ctx.fs, || {
                    ctx.fs.mkdir(parent, &name, mode, ctx.who.creator(umask))
                })
            });
            answer(reply, "mkdir", parent, result, |reply, attr| {
                reply_entry(ctx, reply, &attr)
            });
        });
    }

    pub(super) fn symlink_op(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = name.as_bytes().to_vec();
        let target = target.as_os_str().as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = check_dir(ctx, parent, MAY_WRITE | MAY_EXEC).and_then(|()| {
                retry_on_nospace(ctx.fs, || {
                    ctx.fs.symlink(parent, &name, &target, ctx.who.caller())
                })
            });
            answer(reply, "symlink", parent, result, |reply, attr| {
                reply_entry(ctx, reply, &attr)
            });
        });
    }

    pub(super) fn link_op(
        &self,
        req: &Request,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = check_dir(ctx, newparent, MAY_WRITE | MAY_EXEC)
                .and_then(|()| retry_on_nospace(ctx.fs, || ctx.fs.link(ino, newparent, &newname)));
            answer(reply, "link", ino, result, |reply, attr| {
                reply_entry(ctx, reply, &attr)
            });
        });
    }

    pub(super) fn unlink_op(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        is_rmdir: bool,
        reply: ReplyEmpty,
    ) {
        let name = name.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = check_dir(ctx, parent, MAY_WRITE | MAY_EXEC).and_then(|()| {
                if is_rmdir {
                    ctx.fs.rmdir(parent, &name, ctx.who.caller())
                } else {
                    ctx.fs.unlink(parent, &name, ctx.who.caller())
                }
            });
            let op = if is_rmdir { "rmdir" } else { "unlink" };
            answer(reply, op, parent, result, |reply, ()| reply.ok());
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rename_op(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let name = name.as_bytes().to_vec();
        let newname = newname.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = (|| {
                check_dir(ctx, parent, MAY_WRITE | MAY_EXEC)?;
                if newparent != parent {
                    check_dir(ctx, newparent, MAY_WRITE | MAY_EXEC)?;
                    if !ctx.config.default_permissions {
                        // Moving a directory rewrites its "..": it must be
                        // writable too.
                        let moved = ctx.fs.lookup(parent, &name)?;
                        let _ = ctx.fs.forget(moved.ino, 1);
                        if moved.kind == FileType::Directory {
                            perm::check(&moved, ctx.who, MAY_WRITE)?;
                        }
                    }
                }
                retry_on_nospace(ctx.fs, || {
                    ctx.fs
                        .rename(parent, &name, newparent, &newname, flags, ctx.who.caller())
                })
            })();
            answer(reply, "rename", parent, result, |reply, ()| reply.ok());
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_op(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = (|| {
                check_dir(ctx, parent, MAY_WRITE | MAY_EXEC)?;
                let mode = if mode & libc::S_IFMT == 0 {
                    mode | libc::S_IFREG
                } else {
                    mode
                };
                let made = retry_on_nospace(ctx.fs, || {
                    ctx.fs.mknod(parent, &name, mode, 0, ctx.who.creator(umask))
                });
                let attr = match made {
                    Err(FsError::Exists) if flags & libc::O_EXCL == 0 => {
                        // Someone else created it since the kernel looked:
                        // open theirs, as open(2) without O_EXCL does.
                        let attr = ctx.fs.lookup(parent, &name)?;
                        let checked = match attr.kind {
                            FileType::Directory => Err(FsError::IsDir),
                            _ if ctx.config.default_permissions => Ok(()),
                            _ => perm::check(&attr, ctx.who, perm::open_mask(flags)),
                        }
                        .and_then(|()| ctx.fs.may_open(attr.ino, flags));
                        if let Err(e) = checked {
                            let _ = ctx.fs.forget(attr.ino, 1);
                            return Err(e);
                        }
                        attr
                    }
                    other => other?,
                };
                match ctx.fs.open(attr.ino) {
                    Ok(attr) => {
                        if flags & libc::O_ACCMODE != libc::O_RDONLY {
                            ctx.shared.count_writer(attr.ino, true);
                        }
                        Ok(attr)
                    }
                    Err(e) => {
                        let _ = ctx.fs.forget(attr.ino, 1);
                        Err(e)
                    }
                }
            })();
            // fuser's create reply has one lifetime for entry and attributes.
            let ttl = ctx.config.entry_ttl.min(ctx.config.attr_ttl);
            answer(reply, "create", parent, result, |reply, attr| {
                reply.created(
                    &ttl,
                    &fuse_attr(&attr),
                    generation(&attr),
                    FileHandle(attr.ino),
                    file_open_flags(ctx.fs, &attr),
                )
            });
        });
    }

    pub(super) fn opendir_op(&self, req: &Request, ino: u64, flags: i32, reply: ReplyOpen) {
        self.run(req, move |ctx| {
            let result = ctx.fs.getattr(ino).and_then(|attr| {
                if attr.kind != FileType::Directory {
                    return Err(FsError::NotDir);
                }
                if !ctx.config.default_permissions {
                    perm::check(&attr, ctx.who, perm::open_mask(flags) & MAY_READ)?;
                }
                Ok(())
            });
            answer(reply, "opendir", ino, result, |reply, ()| {
                reply.opened(FileHandle(ino), FopenFlags::empty())
            });
        });
    }

    pub(super) fn readdir_op(
        &self,
        req: &Request,
        ino: u64,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.run(req, move |ctx| {
            let result = ctx.fs.readdir(ino, offset, |e| {
                let full = reply.add(
                    INodeNo(e.ino),
                    e.next_offset,
                    fuse_kind(e.kind),
                    OsStr::from_bytes(&e.name),
                );
                !full
            });
            answer(reply, "readdir", ino, result, |reply, ()| reply.ok());
        });
    }

    pub(super) fn readdirplus_op(
        &self,
        req: &Request,
        ino: u64,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.run(req, move |ctx| {
            let ttl = ctx.config.entry_ttl.min(ctx.config.attr_ttl);
            // The core counts a lookup for every entry taken (not "." and
            // ".."), which is what the kernel counts.
            let result = ctx.fs.readdirplus(ino, offset, |e, attr| {
                let full = reply.add(
                    INodeNo(e.ino),
                    e.next_offset,
                    OsStr::from_bytes(&e.name),
                    &ttl,
                    &fuse_attr(attr),
                    generation(attr),
                );
                !full
            });
            answer(reply, "readdirplus", ino, result, |reply, ()| reply.ok());
        });
    }
}
