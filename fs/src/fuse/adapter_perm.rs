//! Permission checks the adapter makes itself when the filesystem is
//! mounted without `default_permissions` (with it, the kernel checks before
//! a request is sent, and none of this runs).
//!
//! What it promises: the classic Unix rules on the mode bits, as the
//! kernel's `generic_permission` applies them: uid 0 may read and write
//! anything and execute anything with an execute bit (or search any
//! directory); anyone else gets the owner's, the group's (the file's group
//! is the caller's primary or one of its supplementary groups, read from
//! `/proc/PID/status`) or the others' bits, the first class that matches.
//! On top of that the ownership rules of chmod, chown, utimes and xattr
//! namespaces ([`check_setattr`], [`check_xattr`]). POSIX ACLs are not
//! consulted: with them on, the kernel checks permissions itself and none
//! of this runs. A refusal is `AccessDenied` (EACCES) for missing mode bits and
//! `NotPermitted` (EPERM) for ownership rules, as Linux answers.
//!
//! Simplification: changing times to explicit values needs ownership in
//! Linux; here ownership *or* write permission suffices, because with the
//! writeback cache the kernel itself sends explicit mtime/ctime on behalf
//! of whoever wrote.
//!
//! Relies on: the attributes the fs core returns.

use super::adapter::Who;
use crate::core::{FileAttr, SetAttr};
use crate::error::{FsError, FsResult};
use crate::format::FileType;

/// Read permission (the `R_OK` bit).
pub(super) const MAY_READ: u32 = 4;
/// Write permission (`W_OK`).
pub(super) const MAY_WRITE: u32 = 2;
/// Execute / search permission (`X_OK`).
pub(super) const MAY_EXEC: u32 = 1;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;

/// The supplementary groups of process `pid` (empty if it is gone).
fn groups_of(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `who` belongs to group `gid`.
pub(super) fn in_group(who: Who, gid: u32) -> bool {
    who.gid == gid || (who.pid != 0 && groups_of(who.pid).contains(&gid))
}

/// Whether `who` may access `attr` for every bit of `mask`
/// (`MAY_READ | MAY_WRITE | MAY_EXEC`).
pub(super) fn allowed(attr: &FileAttr, who: Who, mask: u32) -> bool {
    let mask = mask & 7;
    if mask == 0 {
        return true;
    }
    let perm = u32::from(attr.perm);
    if who.uid == 0 {
        let exec_ok = attr.kind == FileType::Directory || perm & 0o111 != 0;
        return mask & MAY_EXEC == 0 || exec_ok;
    }
    let bits = if who.uid == attr.uid {
        perm >> 6
    } else if in_group(who, attr.gid) {
        perm >> 3
    } else {
        perm
    } & 7;
    bits & mask == mask
}

/// `AccessDenied` unless [`allowed`].
pub(super) fn check(attr: &FileAttr, who: Who, mask: u32) -> FsResult<()> {
    if allowed(attr, who, mask) {
        Ok(())
    } else {
        Err(FsError::AccessDenied)
    }
}

/// Whether `who` owns `attr` (or is uid 0).
pub(super) fn owns(attr: &FileAttr, who: Who) -> bool {
    who.uid == 0 || who.uid == attr.uid
}

/// The mode bits an open with `flags` needs.
pub(super) fn open_mask(flags: i32) -> u32 {
    let access = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => MAY_READ,
        libc::O_WRONLY => MAY_WRITE,
        _ => MAY_READ | MAY_WRITE,
    };
    if flags & libc::O_TRUNC != 0 {
        access | MAY_WRITE
    } else {
        access
    }
}

/// Checks a setattr by `who` on `attr` and returns it as it may be applied
/// (a chmod by someone outside the file's group loses setgid, as Linux
/// does).
pub(super) fn check_setattr(attr: &FileAttr, who: Who, set: &SetAttr) -> FsResult<SetAttr> {
    let mut set = set.clone();
    if let Some(uid) = set.uid {
        if who.uid != 0 && !(uid == attr.uid && who.uid == attr.uid) {
            return Err(FsError::NotPermitted);
        }
    }
    if let Some(gid) = set.gid {
        if who.uid != 0 && !(who.uid == attr.uid && (gid == attr.gid || in_group(who, gid))) {
            return Err(FsError::NotPermitted);
        }
    }
    if let Some(mode) = set.mode {
        // Anyone may drop setuid/setgid and nothing else: that is the
        // kernel clearing them after a write by someone else.
        let only_drops_privileges = mode & 0o7777 == u32::from(attr.perm) & !(S_ISUID | S_ISGID);
        if !owns(attr, who) && !only_drops_privileges {
            return Err(FsError::NotPermitted);
        }
        let group = set.gid.unwrap_or(attr.gid);
        if who.uid != 0 && mode & S_ISGID != 0 && !in_group(who, group) {
            set.mode = Some(mode & !S_ISGID);
        }
    }
    if set.size.is_some() {
        check(attr, who, MAY_WRITE)?;
    }
    if (set.atime.is_some() || set.mtime.is_some()) && !owns(attr, who) {
        check(attr, who, MAY_WRITE).map_err(|_| FsError::NotPermitted)?;
    }
    // An ownership change by someone other than root clears setuid and
    // setgid of an executable, as chown(2) does (the kernel usually sends
    // the new mode itself).
    if (set.uid.is_some() || set.gid.is_some())
        && set.mode.is_none()
        && attr.kind != FileType::Directory
        && who.uid != 0
    {
        let mode = u32::from(attr.perm);
        let mut kept = mode & !S_ISUID;
        if mode & 0o010 != 0 {
            kept &= !S_ISGID;
        }
        if kept != mode {
            set.mode = Some(kept);
        }
    }
    Ok(set)
}

/// Checks an extended attribute access by `who` (`change`: set or remove).
pub(super) fn check_xattr(attr: &FileAttr, who: Who, name: &[u8], change: bool) -> FsResult<()> {
    if name.starts_with(b"user.") {
        if !matches!(attr.kind, FileType::Regular | FileType::Directory) {
            return Err(if change {
                FsError::NotPermitted
            } else {
                FsError::NoAttr
            });
        }
        return check(attr, who, if change { MAY_WRITE } else { MAY_READ });
    }
    if name.starts_with(b"trusted.") || name.starts_with(b"security.") {
        if change && who.uid != 0 {
            return Err(FsError::NotPermitted);
        }
        if name.starts_with(b"trusted.") && who.uid != 0 {
            return Err(FsError::NoAttr);
        }
        return Ok(());
    }
    if change && !owns(attr, who) {
        return Err(FsError::NotPermitted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Timestamp;

    fn attr(kind: FileType, perm: u16, uid: u32, gid: u32) -> FileAttr {
        let t = Timestamp { secs: 0, nanos: 0 };
        FileAttr {
            ino: 5,
            size: 0,
            blocks: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            generation: 1,
            flags: 0,
        }
    }

    fn who(uid: u32, gid: u32) -> Who {
        // pid 0: no supplementary groups are looked up.
        Who { uid, gid, pid: 0 }
    }

    #[test]
    fn mode_bits_by_class() {
        let f = attr(FileType::Regular, 0o640, 1000, 100);
        assert!(allowed(&f, who(1000, 1), MAY_READ | MAY_WRITE));
        assert!(!allowed(&f, who(1000, 1), MAY_EXEC));
        assert!(allowed(&f, who(2000, 100), MAY_READ));
        assert!(!allowed(&f, who(2000, 100), MAY_WRITE));
        assert!(!allowed(&f, who(3000, 3000), MAY_READ));
        assert!(allowed(&f, who(3000, 3000), 0));
        // The first matching class decides, even if a later one is wider.
        let odd = attr(FileType::Regular, 0o077, 1000, 100);
        assert!(!allowed(&odd, who(1000, 100), MAY_READ));
        // Root: everything but executing a file without any x bit.
        assert!(allowed(&f, who(0, 0), MAY_READ | MAY_WRITE));
        assert!(!allowed(&f, who(0, 0), MAY_EXEC));
        let d = attr(FileType::Directory, 0o000, 1000, 100);
        assert!(allowed(&d, who(0, 0), MAY_EXEC | MAY_WRITE));
        assert_eq!(
            check(&f, who(3000, 3000), MAY_READ)
                .unwrap_err()
                .to_string(),
            "permission denied"
        );
    }

    #[test]
    fn open_masks() {
        assert_eq!(open_mask(libc::O_RDONLY), MAY_READ);
        assert_eq!(open_mask(libc::O_WRONLY), MAY_WRITE);
        assert_eq!(open_mask(libc::O_RDWR), MAY_READ | MAY_WRITE);
        assert_eq!(
            open_mask(libc::O_RDONLY | libc::O_TRUNC),
            MAY_READ | MAY_WRITE
        );
    }

    #[test]
    fn ownership_rules_of_setattr() {
        let f = attr(FileType::Regular, 0o6755, 1000, 100);
        let chmod = SetAttr {
            mode: Some(0o2755),
            ..SetAttr::default()
        };
        assert!(matches!(
            check_setattr(&f, who(2000, 2000), &chmod),
            Err(FsError::NotPermitted)
        ));
        // Dropping setuid and setgid is what the kernel does after a write
        // by someone else: allowed.
        let kill = SetAttr {
            mode: Some(0o755),
            ..SetAttr::default()
        };
        assert!(check_setattr(&f, who(2000, 2000), &kill).is_ok());
        // The owner outside the file's group loses setgid.
        assert_eq!(
            check_setattr(&f, who(1000, 1), &chmod).unwrap().mode,
            Some(0o755)
        );
        assert_eq!(
            check_setattr(&f, who(1000, 100), &chmod).unwrap().mode,
            Some(0o2755)
        );
        let chown = SetAttr {
            uid: Some(2000),
            ..SetAttr::default()
        };
        assert!(matches!(
            check_setattr(&f, who(1000, 100), &chown),
            Err(FsError::NotPermitted)
        ));
        assert_eq!(check_setattr(&f, who(0, 0), &chown).unwrap().mode, None);
        // chgrp by the owner to one of its groups clears setuid and setgid.
        let chgrp = SetAttr {
            gid: Some(1),
            ..SetAttr::default()
        };
        assert_eq!(
            check_setattr(&f, who(1000, 1), &chgrp).unwrap().mode,
            Some(0o755)
        );
        assert!(check_setattr(&f, who(1000, 5), &chgrp).is_err());
        let truncate = SetAttr {
            size: Some(0),
            ..SetAttr::default()
        };
        assert!(matches!(
            check_setattr(&f, who(2000, 100), &truncate),
            Err(FsError::AccessDenied)
        ));
    }

    #[test]
    fn xattr_namespaces() {
        let f = attr(FileType::Regular, 0o644, 1000, 100);
        assert!(check_xattr(&f, who(1000, 1), b"user.a", true).is_ok());
        assert!(check_xattr(&f, who(2000, 1), b"user.a", false).is_ok());
        assert!(check_xattr(&f, who(2000, 1), b"user.a", true).is_err());
        assert!(check_xattr(&f, who(1000, 1), b"trusted.a", true).is_err());
        assert!(check_xattr(&f, who(0, 0), b"trusted.a", true).is_ok());
        let link = attr(FileType::Symlink, 0o777, 1000, 100);
        assert!(check_xattr(&link, who(1000, 1), b"user.a", true).is_err());
    }
}
