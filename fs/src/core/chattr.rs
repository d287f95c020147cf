//! chattr flags: reading and setting them (`FS_IOC_GETFLAGS`/`SETFLAGS`,
//! `FS_IOC_FSGETXATTR`/`FSSETXATTR`, which the FUSE adapter forwards) and
//! the rules they impose. Over FUSE the kernel knows nothing of them (its
//! inodes are never `S_IMMUTABLE` or `S_APPEND`), so every rule the VFS
//! would apply is applied here.
//!
//! What it promises:
//!
//! * Supported flags: immutable (i), append-only (a), nodump (d), noatime
//!   (A), kept in the inode's flags word ([`AttrFlags`], docs/format.md
//!   §5). Any other flag is `NotSupported` (EOPNOTSUPP), as for a local
//!   filesystem that lacks it. A change sets ctime.
//! * Who may change them ([`Fs::set_attr_flags`]): the owner or uid 0;
//!   immutable and append-only only uid 0 (CAP_LINUX_IMMUTABLE — the VFS
//!   checks the capability itself before the request reaches us; this is
//!   the second line).
//! * An immutable inode: no open for writing or truncating
//!   ([`Fs::may_open`]), no write, truncate, fallocate or copy into it, no
//!   attribute change ([`check_setattr`]), no xattr change, no link,
//!   unlink or rename of it, and for a directory no name added or removed
//!   (the namespace code checks those).
//! * An append-only inode: opens for writing need `O_APPEND` and no
//!   `O_TRUNC`; no shrinking, no fallocate but plain allocation
//!   (`FALLOC_FL_KEEP_SIZE` allowed), no change of mode or owner, no
//!   explicit times but the kernel's own mtime after an append (an
//!   explicit mtime without atime; "now" is allowed, as utime(NULL) is);
//!   no unlink, rename or link; a directory may gain names but not lose
//!   them (removal is refused before a directory is found not empty).
//!
//! Relies on: the inode cache (flags read under the inode's lock) and the
//! journal for changes; `privs.rs`'s [`Actor`] for who asks.

use super::inode::InodeState;
use super::privs::Actor;
use super::{time, Fs, SetAttr, TimeSet};
use crate::error::{FsError, FsResult};
use crate::format::AttrFlags;

/// `FS_IMMUTABLE_FL` and friends (linux/fs.h), as FS_IOC_GETFLAGS uses them.
pub const FS_IMMUTABLE_FL: u32 = 0x10;
pub const FS_APPEND_FL: u32 = 0x20;
pub const FS_NODUMP_FL: u32 = 0x40;
pub const FS_NOATIME_FL: u32 = 0x80;

/// `FS_XFLAG_*` (struct fsxattr, FS_IOC_FSGETXATTR).
pub const FS_XFLAG_IMMUTABLE: u32 = 0x08;
pub const FS_XFLAG_APPEND: u32 = 0x10;
pub const FS_XFLAG_NOATIME: u32 = 0x40;
pub const FS_XFLAG_NODUMP: u32 = 0x80;

/// (our flag, FS_*_FL, FS_XFLAG_*) for every supported flag.
const FLAGS: [(AttrFlags, u32, u32); 4] = [
    (AttrFlags::IMMUTABLE, FS_IMMUTABLE_FL, FS_XFLAG_IMMUTABLE),
    (AttrFlags::APPEND, FS_APPEND_FL, FS_XFLAG_APPEND),
    (AttrFlags::NODUMP, FS_NODUMP_FL, FS_XFLAG_NODUMP),
    (AttrFlags::NOATIME, FS_NOATIME_FL, FS_XFLAG_NOATIME),
];

/// Which encoding of the flags a caller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagSet {
    /// `FS_*_FL` (FS_IOC_GETFLAGS/SETFLAGS, chattr).
    Inode,
    /// `FS_XFLAG_*` (FS_IOC_FSGETXATTR/FSSETXATTR, xfs_io chattr).
    Xflags,
}

impl FlagSet {
    fn bit(self, entry: &(AttrFlags, u32, u32)) -> u32 {
        match self {
            FlagSet::Inode => entry.1,
            FlagSet::Xflags => entry.2,
        }
    }

    /// The bits of `flags` in this encoding.
    pub fn encode(self, flags: AttrFlags) -> u32 {
        FLAGS
            .iter()
            .filter(|e| flags.contains(e.0))
            .fold(0, |bits, e| bits | self.bit(e))
    }

    /// The flags `bits` stand for; `NotSupported` for any other bit.
    pub fn decode(self, bits: u32) -> FsResult<AttrFlags> {
        let mut flags = AttrFlags::empty();
        let mut known = 0;
        for e in &FLAGS {
            known |= self.bit(e);
            if bits & self.bit(e) != 0 {
                flags = flags | e.0;
            }
        }
        if bits & !known != 0 {
            return Err(FsError::NotSupported);
        }
        Ok(flags)
    }
}

/// The chattr flags of the inode held by `state` that this module manages
/// (others in the word — SYNC — are kept as they are).
fn managed(flags: AttrFlags) -> AttrFlags {
    FLAGS
        .iter()
        .filter(|e| flags.contains(e.0))
        .fold(AttrFlags::empty(), |f, e| f | e.0)
}

/// `NotPermitted` for an immutable or append-only inode: its xattrs and
/// ACLs may not change (as on Linux).
pub(crate) fn check_xattr_change(state: &InodeState) -> FsResult<()> {
    if state.attr_flags.contains(AttrFlags::IMMUTABLE)
        || state.attr_flags.contains(AttrFlags::APPEND)
    {
        return Err(FsError::NotPermitted);
    }
    Ok(())
}

/// `NotPermitted` if the inode held by `state` may not change as `set`
/// says (see the module docs; setattr calls this under the inode's lock).
pub(crate) fn check_setattr(state: &InodeState, set: &SetAttr) -> FsResult<()> {
    let flags = state.attr_flags;
    let attrs = set.mode.is_some() || set.uid.is_some() || set.gid.is_some();
    let times = set.atime.is_some() || set.mtime.is_some() || set.crtime.is_some();
    if flags.contains(AttrFlags::IMMUTABLE) && (attrs || times || set.size.is_some()) {
        return Err(FsError::NotPermitted);
    }
    if flags.contains(AttrFlags::APPEND) {
        let shrinks = set.size.is_some_and(|size| size < state.size);
        // Explicit times are refused ("now" is allowed, as Linux allows
        // utime(NULL)); an explicit mtime without atime is the kernel
        // writing back the times of an append (writeback cache).
        let explicit = |t: Option<TimeSet>| matches!(t, Some(TimeSet::At(_)));
        let user_times = explicit(set.atime) || set.crtime.is_some();
        if attrs || shrinks || user_times {
            return Err(FsError::NotPermitted);
        }
    }
    Ok(())
}

impl Fs {
    /// The chattr flags of `ino` in encoding `set`.
    pub fn attr_flags(&self, ino: u64, set: FlagSet) -> FsResult<u32> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        Ok(set.encode(state.attr_flags))
    }

    /// Sets the chattr flags of `ino` to `bits` (encoding `set`) for
    /// `actor`; see the module docs.
    pub fn set_attr_flags(
        &self,
        ino: u64,
        set: FlagSet,
        bits: u32,
        actor: &Actor<'_>,
    ) -> FsResult<()> {
        let wanted = set.decode(bits)?;
        self.check_writable()?;
        let tx = self.journal.start()?;
        let cell = self.inode(ino)?;
        let mut state = cell.write();
        state.check_live()?;
        let old = managed(state.attr_flags);
        if old == wanted {
            return Ok(());
        }
        if !actor.capable() && actor.uid != state.uid {
            return Err(FsError::NotPermitted);
        }
        let guarded = (AttrFlags::IMMUTABLE | AttrFlags::APPEND).bits();
        if (old.bits() ^ wanted.bits()) & guarded != 0 && !actor.capable() {
            return Err(FsError::NotPermitted);
        }
        let kept = AttrFlags::from_bits(state.attr_flags.bits() & !old.bits())?;
        state.attr_flags = kept | wanted;
        state.ctime = time::now();
        self.store_inode(&tx, &state)
    }

    /// `NotPermitted` if `ino` may not be opened with `flags` (open(2)
    /// flags) because of its chattr flags.
    pub fn may_open(&self, ino: u64, flags: i32) -> FsResult<()> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let truncates = flags & libc::O_TRUNC != 0;
        let appends = flags & libc::O_APPEND != 0;
        let f = state.attr_flags;
        if f.contains(AttrFlags::IMMUTABLE) && (writes || truncates) {
            return Err(FsError::NotPermitted);
        }
        if f.contains(AttrFlags::APPEND) && ((writes && !appends) || truncates) {
            return Err(FsError::NotPermitted);
        }
        Ok(())
    }

    /// `NotPermitted` if the data of `ino` may not change now: immutable,
    /// or append-only and the change is not a plain allocation
    /// (`falloc_mode` other than 0 or `FALLOC_FL_KEEP_SIZE`; `None` for a
    /// copy into it, which append-only files take as writes).
    pub fn may_change_data(&self, ino: u64, falloc_mode: Option<i32>) -> FsResult<()> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        if state.attr_flags.contains(AttrFlags::IMMUTABLE) {
            return Err(FsError::NotPermitted);
        }
        let plain = falloc_mode.is_none_or(|m| m & !libc::FALLOC_FL_KEEP_SIZE == 0);
        if state.attr_flags.contains(AttrFlags::APPEND) && !plain {
            return Err(FsError::NotPermitted);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let f = AttrFlags::IMMUTABLE | AttrFlags::NOATIME;
        assert_eq!(FlagSet::Inode.encode(f), 0x90);
        assert_eq!(FlagSet::Xflags.encode(f), 0x48);
        assert_eq!(FlagSet::Inode.decode(0x90).unwrap(), f);
        assert_eq!(FlagSet::Xflags.decode(0x48).unwrap(), f);
        assert_eq!(
            FlagSet::Inode.decode(0x70).unwrap(),
            AttrFlags::IMMUTABLE | AttrFlags::APPEND | AttrFlags::NODUMP
        );
        // FS_SYNC_FL, FS_DAX_FL, FS_XFLAG_DAX: not supported.
        assert!(matches!(
            FlagSet::Inode.decode(0x8),
            Err(FsError::NotSupported)
        ));
        assert!(matches!(
            FlagSet::Inode.decode(0x0200_0000),
            Err(FsError::NotSupported)
        ));
        assert!(matches!(
            FlagSet::Xflags.decode(0x8000),
            Err(FsError::NotSupported)
        ));
    }
}
