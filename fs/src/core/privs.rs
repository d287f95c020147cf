//! Who keeps setuid and setgid: the rules Linux applies when a file's data,
//! owner or ACL changes (fs/attr.c, fs/inode.c, fs/posix_acl.c), for the
//! FUSE adapter to apply in the filesystem (with FUSE_HANDLE_KILLPRIV_V2
//! and FUSE_POSIX_ACL the kernel leaves them to us).
//!
//! What it promises:
//!
//! * [`after_data_change`] (write, truncate, fallocate by someone without
//!   CAP_FSETID — uid 0 stands for the capability): setuid goes; setgid
//!   goes if the group may execute or the writer is not in the file's group
//!   (`setattr_should_drop_suidgid`); only regular files are touched.
//! * [`after_chown`]: a non-directory loses setuid, and setgid if the group
//!   may execute or the caller is neither in the file's group nor uid 0
//!   (`chown_common` + `setattr_should_drop_sgid`), whoever the caller is.
//! * [`after_acl_set`]: setting an access ACL clears setgid unless the
//!   caller is in the file's group or uid 0 (`posix_acl_update_mode`).
//! * [`Fs::kill_suid_sgid`] applies [`after_data_change`] to an inode in
//!   its own transaction (as `file_remove_privs` does before a write),
//!   and changes nothing (no transaction) when there is nothing to clear.
//!
//! Relies on: the caller telling who acts ([`Actor`]): its uid and whether
//! it belongs to a group (the FUSE adapter reads supplementary groups from
//! /proc).

use super::time;
use super::{FileAttr, Fs};
use crate::error::FsResult;
use crate::format::FileType;

const S_ISUID: u16 = 0o4000;
const S_ISGID: u16 = 0o2000;
const S_IXGRP: u16 = 0o010;

/// Who changes an inode, as far as the setuid/setgid rules care.
pub struct Actor<'a> {
    /// The caller's uid; 0 stands for the capabilities (CAP_FSETID).
    pub uid: u32,
    /// Whether the caller is in a group (primary or supplementary).
    pub in_group: &'a dyn Fn(u32) -> bool,
}

fn every_group(_: u32) -> bool {
    true
}

impl Actor<'static> {
    /// uid 0: keeps every bit a capable caller keeps.
    pub fn root() -> Actor<'static> {
        Actor {
            uid: 0,
            in_group: &every_group,
        }
    }
}

impl Actor<'_> {
    /// Whether the caller has CAP_FSETID (here: is uid 0).
    pub fn capable(&self) -> bool {
        self.uid == 0
    }

    /// `in_group_or_capable` of the kernel, for a file of group `gid`.
    pub fn in_group_or_capable(&self, gid: u32) -> bool {
        self.capable() || (self.in_group)(gid)
    }
}

/// Whether setgid must go for a caller changing a file of mode `perm` and
/// group `gid` (`setattr_should_drop_sgid`).
fn drops_sgid(perm: u16, gid: u32, actor: &Actor<'_>) -> bool {
    perm & S_ISGID != 0 && (perm & S_IXGRP != 0 || !actor.in_group_or_capable(gid))
}

/// The permission bits a regular file of mode `perm` and group `gid` keeps
/// after `actor` changed its data (see the module docs).
pub fn after_data_change(kind: FileType, perm: u16, gid: u32, actor: &Actor<'_>) -> u16 {
    if kind != FileType::Regular || actor.capable() {
        return perm;
    }
    let mut kept = perm & !S_ISUID;
    if drops_sgid(perm, gid, actor) {
        kept &= !S_ISGID;
    }
    kept
}

/// The permission bits an inode keeps after `actor` changed its owner or
/// group (`gid` is the group before the change).
pub fn after_chown(kind: FileType, perm: u16, gid: u32, actor: &Actor<'_>) -> u16 {
    if kind == FileType::Directory {
        return perm;
    }
    let mut kept = perm & !S_ISUID;
    if drops_sgid(perm, gid, actor) {
        kept &= !S_ISGID;
    }
    kept
}

/// The permission bits an inode keeps after `actor` set its access ACL.
pub fn after_acl_set(perm: u16, gid: u32, actor: &Actor<'_>) -> u16 {
    if actor.in_group_or_capable(gid) {
        perm
    } else {
        perm & !S_ISGID
    }
}

impl Fs {
    /// Clears setuid/setgid of `ino` as [`after_data_change`] says, before
    /// `actor` changes its data; returns the attributes if it changed them.
    pub fn kill_suid_sgid(&self, ino: u64, actor: &Actor<'_>) -> FsResult<Option<FileAttr>> {
        let cell = self.inode(ino)?;
        {
            let state = cell.read();
            state.check_live()?;
            let perm = state.permissions;
            if after_data_change(state.file_type, perm, state.gid, actor) == perm {
                return Ok(None);
            }
        }
        self.check_writable()?;
        let tx = self.journal.start()?;
        let mut state = cell.write();
        state.check_live()?;
        let kept = after_data_change(state.file_type, state.permissions, state.gid, actor);
        if kept == state.permissions {
            return Ok(None);
        }
        state.permissions = kept;
        state.ctime = time::now();
        self.store_inode(&tx, &state)?;
        Ok(Some(self.attr_of(&state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(member: bool) -> impl Fn(u32) -> bool {
        move |_| member
    }

    #[test]
    fn data_changes_follow_the_kernel_rules() {
        let outsider = user(false);
        let member = user(true);
        let other = Actor {
            uid: 1000,
            in_group: &outsider,
        };
        let insider = Actor {
            uid: 1000,
            in_group: &member,
        };
        let f = FileType::Regular;
        // generic/683 test 1..4 (outsider), and the root case.
        assert_eq!(after_data_change(f, 0o6666, 0, &other), 0o666);
        assert_eq!(after_data_change(f, 0o6676, 0, &other), 0o676);
        assert_eq!(after_data_change(f, 0o6766, 0, &other), 0o766);
        assert_eq!(after_data_change(f, 0o6777, 0, &other), 0o777);
        assert_eq!(after_data_change(f, 0o6666, 0, &Actor::root()), 0o6666);
        // A group member keeps setgid without group execute (mandatory
        // locking marker), not with it.
        assert_eq!(after_data_change(f, 0o6666, 0, &insider), 0o2666);
        assert_eq!(after_data_change(f, 0o6676, 0, &insider), 0o676);
        assert_eq!(
            after_data_change(FileType::Directory, 0o6777, 0, &other),
            0o6777
        );
    }

    #[test]
    fn chown_and_acl_rules() {
        let outsider = user(false);
        let other = Actor {
            uid: 1000,
            in_group: &outsider,
        };
        let f = FileType::Regular;
        // Root loses setuid on chown too; setgid only with group execute.
        assert_eq!(after_chown(f, 0o6755, 0, &Actor::root()), 0o755);
        assert_eq!(after_chown(f, 0o6745, 0, &Actor::root()), 0o2745);
        assert_eq!(after_chown(f, 0o6745, 0, &other), 0o745);
        assert_eq!(after_chown(FileType::Directory, 0o6755, 0, &other), 0o6755);
        assert_eq!(after_acl_set(0o2770, 5, &other), 0o770);
        assert_eq!(after_acl_set(0o2770, 5, &Actor::root()), 0o2770);
    }
}
