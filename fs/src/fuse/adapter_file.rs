//! The adapter's operations on inodes and file data: getattr, setattr,
//! readlink, open, read, write, release, fsync/fsyncdir, statfs, the
//! extended attributes, access, fallocate, lseek, copy_file_range.
//!
//! What it promises (on top of `adapter.rs`): each call is forwarded to the
//! fs core with the request's arguments; reads ignore the open mode (the
//! writeback cache reads through write-only handles); a write answers the
//! bytes the core stored (a short count only when space ran out part-way;
//! nothing stored is ENOSPC); xattr replies follow the size protocol (size
//! 0 asks for the length, a buffer too small is ERANGE); SEEK_DATA and
//! SEEK_HOLE go to the core after the kernel wrote back what its page
//! cache holds of a file open for writing (it does not itself before
//! FUSE_LSEEK), other `whence` values are EINVAL (the kernel handles them
//! itself); copy_file_range copies at most what one reply can
//! count. Without `default_permissions`, opens, setattr, xattrs and access
//! are checked by `adapter_perm.rs`.
//!
//! Relies on: the fs core's file API (`core/file_ops.rs`) and xattr API
//! (`core/xattr_ops.rs`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use fuser::{
    Errno, FileHandle, ReplyAttr, ReplyData, ReplyEmpty, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request,
};

use super::adapter::{answer, fuse_attr, retry_on_nospace, space_pending, Ctx, KeelFs};
use super::adapter_entry::file_open_flags;
use super::adapter_perm::{self as perm, MAY_WRITE};
use super::errno::reply_errno;
use crate::core::chattr::FlagSet;
use crate::core::{privs, AclKind, Actor, Fs, SetAttr, TimeSet, Whence};
use crate::error::{FsError, FsResult};
use crate::format::FileType;

/// Names of the POSIX ACL attributes. With ACLs on (`AdapterConfig::
/// posix_acl`) they are set and removed through the fs core's ACL code
/// (`core/acl.rs`) for the caller. Off, like a local filesystem mounted
/// `noacl`, these names are EOPNOTSUPP (so `cp -a` and `setfacl` fall back
/// to chmod) and are left out of listings: storing them verbatim would let
/// `cp -a` believe an ACL set the mode bits when nothing did.
const ACL_PREFIX: &[u8] = b"system.posix_acl_";

/// `NotSupported` for an ACL name when ACLs are off; else which ACL, if any.
fn acl_name(ctx: &Ctx<'_>, name: &[u8]) -> FsResult<Option<AclKind>> {
    if !name.starts_with(ACL_PREFIX) {
        return Ok(None);
    }
    match AclKind::of_name(name) {
        Some(kind) if ctx.config.posix_acl => Ok(Some(kind)),
        _ => Err(FsError::NotSupported),
    }
}

/// The ioctls the adapter answers (linux/fs.h): chattr flags in both
/// encodings. The kernel sends them for `chattr`/`lsattr` and `xfs_io
/// chattr` (its fileattr operations).
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
/// Bytes of `struct fsxattr`.
const FSXATTR_LEN: usize = 28;

/// Four bytes of an ioctl argument at `at` as a u32 (`Invalid` if short).
fn ioctl_u32(data: &[u8], at: usize) -> FsResult<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| FsError::Invalid("ioctl argument too short".into()))
}

/// Largest count one copy_file_range reply can carry (page aligned, as the
/// kernel asks).
const COPY_MAX: u64 = (u32::MAX - 0xfff) as u64;

/// What an xattr reply carries: the length, the bytes, or ERANGE.
fn xattr_reply(reply: ReplyXattr, size: u32, bytes: &[u8]) {
    if size == 0 {
        match u32::try_from(bytes.len()) {
            Ok(len) => reply.size(len),
            Err(_) => reply.error(Errno::E2BIG),
        }
    } else if bytes.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(bytes);
    }
}

/// Writes `data` at `offset` of `ino`: all of it, or as much as fits after
/// one commit that releases space freed but not yet committed (see
/// [`retry_on_nospace`](super::adapter::retry_on_nospace)). Nothing stored
/// at all is `NoSpace`. With `keep_times` mtime and ctime are left alone
/// (the kernel's writeback cache owns them, see [`keeping_times`]).
fn write_all_or_short(
    fs: &Fs,
    ino: u64,
    offset: u64,
    data: &[u8],
    keep_times: bool,
) -> FsResult<usize> {
    let mut written = 0usize;
    let mut committed = false;
    loop {
        let (at, rest) = (offset + written as u64, &data[written..]);
        let step = if keep_times {
            fs.write_keep_times(ino, at, rest)
        } else {
            fs.write(ino, at, rest)
        };
        match step {
            Ok(n) => {
                written += n;
                if written == data.len() || committed || !space_pending(fs) {
                    break;
                }
            }
            Err(FsError::NoSpace) if !committed && space_pending(fs) => {}
            Err(_) if written > 0 => break,
            Err(e) => return Err(e),
        }
        committed = true;
        fs.journal().commit()?;
    }
    if written == 0 && !data.is_empty() {
        return Err(FsError::NoSpace);
    }
    Ok(written)
}

/// Runs `f` with the request's caller as an [`Actor`] (its groups read
/// only if a rule needs them).
fn with_actor<T>(ctx: &Ctx<'_>, f: impl FnOnce(&Actor<'_>) -> T) -> T {
    let who = ctx.who;
    let in_group = move |gid| who.in_group(gid);
    f(&Actor {
        uid: who.uid,
        in_group: &in_group,
    })
}

/// Clears setuid/setgid of `ino` before the request's caller changes its
/// data (`core/privs.rs`), and makes the kernel forget the mode it caches:
/// the reply to a write or fallocate carries no attributes.
fn kill_suid_sgid(ctx: &Ctx<'_>, ino: u64) -> FsResult<()> {
    if with_actor(ctx, |actor| ctx.fs.kill_suid_sgid(ino, actor))?.is_some() {
        ctx.shared.invalidate_attrs(ino);
    }
    Ok(())
}

/// `set` with the mode change that truncating (by someone without
/// CAP_FSETID) or chown of `ino` by `actor` implies (`core/privs.rs`): with
/// FUSE_HANDLE_KILLPRIV_V2 the kernel leaves it to us. An explicit mode is
/// left as it is.
fn privileges_kept(fs: &Fs, ino: u64, mut set: SetAttr, actor: &Actor<'_>) -> FsResult<SetAttr> {
    let chown = set.uid.is_some() || set.gid.is_some();
    if set.mode.is_some() || (set.size.is_none() && !chown) {
        return Ok(set);
    }
    let attr = fs.getattr(ino)?;
    let mut perm = attr.perm;
    if set.size.is_some() {
        perm = privs::after_data_change(attr.kind, perm, attr.gid, actor);
    }
    if chown {
        perm = privs::after_chown(attr.kind, perm, attr.gid, actor);
    }
    if perm != attr.perm {
        set.mode = Some(u32::from(perm));
    }
    Ok(set)
}

/// Runs `op`, which changes the data of regular file `ino`, without letting
/// it change mtime or ctime when the kernel's writeback cache is on: the
/// kernel then owns both for regular files (it ignores the values we report
/// while it caches the inode), stamps them itself when write(2) runs and
/// sends them with setattr. Were the fs core to stamp its own (later) time
/// when the data arrives, the times would jump when the kernel forgets the
/// inode or the filesystem is mounted again. The times from before are put
/// back under the inode's time lock, so no setattr slips in between.
fn keeping_times<T>(ctx: &Ctx<'_>, ino: u64, op: impl FnOnce() -> FsResult<T>) -> FsResult<T> {
    if !ctx.config.writeback_cache {
        return op();
    }
    let _times = ctx.shared.times_lock(ino);
    let before = ctx.fs.getattr(ino)?;
    if before.kind != FileType::Regular {
        return op();
    }
    let result = op();
    let keep = SetAttr {
        mtime: Some(TimeSet::At(before.mtime)),
        ctime: Some(before.ctime),
        ..SetAttr::default()
    };
    ctx.fs.setattr(ino, &keep)?;
    result
}

impl KeelFs {
    pub(super) fn getattr_op(&self, req: &Request, ino: u64, reply: ReplyAttr) {
        self.run(req, move |ctx| {
            answer(reply, "getattr", ino, ctx.fs.getattr(ino), |reply, attr| {
                reply.attr(&ctx.config.attr_ttl, &fuse_attr(&attr))
            });
        });
    }

    pub(super) fn setattr_op(&self, req: &Request, ino: u64, set: SetAttr, reply: ReplyAttr) {
        self.run(req, move |ctx| {
            let result = (|| {
                let set = if ctx.config.default_permissions {
                    set
                } else {
                    perm::check_setattr(&ctx.fs.getattr(ino)?, ctx.who, &set)?
                };
                let set = with_actor(ctx, |actor| privileges_kept(ctx.fs, ino, set, actor))?;
                let _times = ctx.shared.times_lock(ino);
                retry_on_nospace(ctx.fs, || ctx.fs.setattr(ino, &set))
            })();
            answer(reply, "setattr", ino, result, |reply, attr| {
                reply.attr(&ctx.config.attr_ttl, &fuse_attr(&attr))
            });
        });
    }

    pub(super) fn readlink_op(&self, req: &Request, ino: u64, reply: ReplyData) {
        self.run(req, move |ctx| {
            answer(reply, "readlink", ino, ctx.fs.readlink(ino), |reply, t| {
                reply.data(&t)
            });
        });
    }

    pub(super) fn open_op(&self, req: &Request, ino: u64, flags: i32, reply: ReplyOpen) {
        self.run(req, move |ctx| {
            let result = (|| {
                if !ctx.config.default_permissions {
                    let attr = ctx.fs.getattr(ino)?;
                    perm::check(&attr, ctx.who, perm::open_mask(flags))?;
                }
                ctx.fs.may_open(ino, flags)?;
                let attr = ctx.fs.open(ino)?;
                if attr.kind == FileType::Directory {
                    // The kernel opens directories with opendir; undo.
                    let _ = ctx.fs.release(ino);
                    return Err(FsError::IsDir);
                }
                if flags & libc::O_ACCMODE != libc::O_RDONLY {
                    ctx.shared.count_writer(ino, true);
                }
                Ok(file_open_flags(ctx.fs, &attr))
            })();
            answer(reply, "open", ino, result, |reply, open_flags| {
                reply.opened(FileHandle(ino), open_flags)
            });
        });
    }

    pub(super) fn read_op(
        &self,
        req: &Request,
        ino: u64,
        offset: u64,
        size: u32,
        reply: ReplyData,
    ) {
        self.run(req, move |ctx| {
            answer(
                reply,
                "read",
                ino,
                ctx.fs.read(ino, offset, size),
                |reply, data| reply.data(&data),
            );
        });
    }

    /// A write. One from the page cache (`from_cache`) leaves mtime and
    /// ctime alone (the core does not stamp them, so nothing needs
    /// restoring: one inode store per write); `kill_privs` (the kernel's
    /// FUSE_WRITE_KILL_SUIDGID) clears setuid/setgid first.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_op(
        &self,
        req: &Request,
        ino: u64,
        offset: u64,
        data: Vec<u8>,
        from_cache: bool,
        kill_privs: bool,
        reply: ReplyWrite,
    ) {
        self.run(req, move |ctx| {
            if kill_privs {
                if let Err(e) = kill_suid_sgid(ctx, ino) {
                    return reply.error(reply_errno("write", ino, &e));
                }
            }
            let keep_times = from_cache && ctx.config.writeback_cache;
            let result = write_all_or_short(ctx.fs, ino, offset, &data, keep_times);
            // The kernel ignores a short count on a write-back of cached
            // pages: it would count the pages as written and fsync would
            // succeed with their tail never stored. Only write(2) without
            // the cache may be short; a cached write-back that did not
            // fit entirely is an error (the part that fit stays written).
            let result = result.and_then(|n| {
                if from_cache && n < data.len() {
                    return Err(FsError::NoSpace);
                }
                u32::try_from(n).map_err(|_| FsError::Invalid("write over 4 GiB".into()))
            });
            answer(reply, "write", ino, result, |reply, n| reply.written(n));
        });
    }

    pub(super) fn release_op(&self, req: &Request, ino: u64, flags: i32, reply: ReplyEmpty) {
        self.run(req, move |ctx| {
            if flags & libc::O_ACCMODE != libc::O_RDONLY {
                ctx.shared.count_writer(ino, false);
            }
            answer(reply, "release", ino, ctx.fs.release(ino), |reply, ()| {
                reply.ok()
            });
        });
    }

    pub(super) fn fsync_op(&self, req: &Request, ino: u64, datasync: bool, reply: ReplyEmpty) {
        self.run(req, move |ctx| {
            answer(
                reply,
                "fsync",
                ino,
                ctx.fs.fsync(ino, datasync),
                |reply, ()| reply.ok(),
            );
        });
    }

    pub(super) fn statfs_op(&self, req: &Request, ino: u64, reply: ReplyStatfs) {
        self.run(req, move |ctx| {
            answer(reply, "statfs", ino, ctx.fs.statfs(), |reply, s| {
                reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                )
            });
        });
    }

    /// Without `default_permissions`: may the caller read (or change)
    /// attribute `name` of `ino`?
    fn check_xattr(
        ctx: &super::adapter::Ctx<'_>,
        ino: u64,
        name: &[u8],
        change: bool,
    ) -> FsResult<()> {
        if ctx.config.default_permissions {
            return Ok(());
        }
        perm::check_xattr(&ctx.fs.getattr(ino)?, ctx.who, name, change)
    }

    pub(super) fn setxattr_op(
        &self,
        req: &Request,
        ino: u64,
        name: &OsStr,
        value: Vec<u8>,
        flags: i32,
        reply: ReplyEmpty,
    ) {
        let name = name.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = (|| {
                let acl = acl_name(ctx, &name)?;
                Self::check_xattr(ctx, ino, &name, true)?;
                let who = ctx.who;
                let in_group = move |gid| who.in_group(gid);
                let actor = Actor {
                    uid: who.uid,
                    in_group: &in_group,
                };
                retry_on_nospace(ctx.fs, || match acl {
                    Some(kind) => ctx
                        .fs
                        .set_acl(ino, kind, Some(&value), flags as u32, &actor),
                    None => ctx.fs.setxattr(ino, &name, &value, flags as u32),
                })
            })();
            answer(reply, "setxattr", ino, result, |reply, ()| reply.ok());
        });
    }

    pub(super) fn getxattr_op(
        &self,
        req: &Request,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let name = name.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = acl_name(ctx, &name)
                .and_then(|_| Self::check_xattr(ctx, ino, &name, false))
                .and_then(|()| ctx.fs.getxattr(ino, &name));
            answer(reply, "getxattr", ino, result, |reply, value| {
                xattr_reply(reply, size, &value)
            });
        });
    }

    pub(super) fn listxattr_op(&self, req: &Request, ino: u64, size: u32, reply: ReplyXattr) {
        self.run(req, move |ctx| {
            let result = ctx.fs.listxattr(ino).map(|names| {
                let mut list = Vec::new();
                let shown = |n: &&Vec<u8>| ctx.config.posix_acl || !n.starts_with(ACL_PREFIX);
                for name in names.iter().filter(shown) {
                    list.extend_from_slice(name);
                    list.push(0);
                }
                list
            });
            answer(reply, "listxattr", ino, result, |reply, list| {
                xattr_reply(reply, size, &list)
            });
        });
    }

    pub(super) fn removexattr_op(&self, req: &Request, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        let name = name.as_bytes().to_vec();
        self.run(req, move |ctx| {
            let result = acl_name(ctx, &name)
                .and_then(|_| Self::check_xattr(ctx, ino, &name, true))
                .and_then(|()| ctx.fs.removexattr(ino, &name));
            answer(reply, "removexattr", ino, result, |reply, ()| reply.ok());
        });
    }

    pub(super) fn ioctl_op(
        &self,
        req: &Request,
        ino: u64,
        cmd: u32,
        in_data: Vec<u8>,
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.run(req, move |ctx| {
            let result = (|| match cmd {
                FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS => {
                    let flags = ctx.fs.attr_flags(ino, FlagSet::Inode)?;
                    Ok(flags.to_ne_bytes().to_vec())
                }
                FS_IOC_FSGETXATTR => {
                    let mut fsx = vec![0u8; FSXATTR_LEN];
                    let xflags = ctx.fs.attr_flags(ino, FlagSet::Xflags)?;
                    fsx[..4].copy_from_slice(&xflags.to_ne_bytes());
                    Ok(fsx)
                }
                FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => {
                    let flags = ioctl_u32(&in_data, 0)?;
                    with_actor(ctx, |actor| {
                        ctx.fs.set_attr_flags(ino, FlagSet::Inode, flags, actor)
                    })?;
                    // The new ctime: the kernel caches the old one.
                    ctx.shared.invalidate_attrs(ino);
                    Ok(Vec::new())
                }
                FS_IOC_FSSETXATTR => {
                    // xflags, extsize, nextents, projid, cowextsize: only
                    // the flags mean something here; a project id is not
                    // supported.
                    if ioctl_u32(&in_data, 12)? != 0 {
                        return Err(FsError::NotSupported);
                    }
                    let xflags = ioctl_u32(&in_data, 0)?;
                    with_actor(ctx, |actor| {
                        ctx.fs.set_attr_flags(ino, FlagSet::Xflags, xflags, actor)
                    })?;
                    ctx.shared.invalidate_attrs(ino);
                    Ok(Vec::new())
                }
                _ => Err(FsError::NoIoctl),
            })();
            answer(reply, "ioctl", ino, result, |reply, mut out| {
                out.truncate(out_size as usize);
                reply.ioctl(0, &out)
            });
        });
    }

    pub(super) fn access_op(&self, req: &Request, ino: u64, mask: i32, reply: ReplyEmpty) {
        self.run(req, move |ctx| {
            let result = ctx.fs.getattr(ino).and_then(|attr| {
                let mask = mask as u32;
                if mask & MAY_WRITE != 0 && ctx.fs.read_only() {
                    return Err(FsError::ReadOnly);
                }
                perm::check(&attr, ctx.who, mask)
            });
            answer(reply, "access", ino, result, |reply, ()| reply.ok());
        });
    }

    pub(super) fn fallocate_op(
        &self,
        req: &Request,
        ino: u64,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.run(req, move |ctx| {
            let result = ctx
                .fs
                .may_change_data(ino, Some(mode))
                .and_then(|()| kill_suid_sgid(ctx, ino))
                .and_then(|()| {
                    keeping_times(ctx, ino, || {
                        retry_on_nospace(ctx.fs, || ctx.fs.fallocate(ino, offset, length, mode))
                    })
                });
            answer(reply, "fallocate", ino, result, |reply, ()| reply.ok());
        });
    }

    pub(super) fn lseek_op(
        &self,
        req: &Request,
        ino: u64,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.run(req, move |ctx| {
            let result = (|| {
                let whence = match whence {
                    libc::SEEK_DATA => Whence::Data,
                    libc::SEEK_HOLE => Whence::Hole,
                    other => return Err(FsError::Invalid(format!("lseek whence {other}"))),
                };
                // A negative offset is past no data: ENXIO, as ext4 and xfs.
                let offset = u64::try_from(offset).map_err(|_| FsError::NoSuchOffset)?;
                // Data the kernel still holds must count.
                ctx.shared.flush_dirty_pages(ino);
                let found = ctx.fs.lseek(ino, offset, whence)?;
                i64::try_from(found).map_err(|_| FsError::TooBig)
            })();
            answer(reply, "lseek", ino, result, |reply, off| reply.offset(off));
        });
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy_file_range_op(
        &self,
        req: &Request,
        ino_in: u64,
        offset_in: u64,
        ino_out: u64,
        offset_out: u64,
        len: u64,
        reply: ReplyWrite,
    ) {
        self.run(req, move |ctx| {
            let len = len.min(COPY_MAX);
            let copy = || {
                ctx.fs.may_change_data(ino_out, None)?;
                keeping_times(ctx, ino_out, || {
                    retry_on_nospace(ctx.fs, || {
                        ctx.fs
                            .copy_file_range(ino_in, offset_in, ino_out, offset_out, len)
                    })
                })
            };
            let result = copy().map(|n| n.min(COPY_MAX) as u32);
            answer(reply, "copy_file_range", ino_out, result, |reply, n| {
                reply.written(n)
            });
        });
    }
}
