//! Extended attributes of an inode: getxattr, listxattr, setxattr,
//! removexattr over the chain of `crate::xattr`.
//!
//! What it promises: names and errors as `crate::xattr` documents them;
//! the POSIX ACL names ("system.posix_acl_access" and "_default") are
//! set and removed through `acl.rs` (validated, mode bits kept in step,
//! as if by uid 0: the FUSE adapter calls [`Fs::set_acl`] with the real
//! caller); a change is one transaction that also sets
//! the inode's ctime and keeps its "blocks held" count; immutable and
//! append-only inodes refuse changes (`NotPermitted`, as ext4). Reads take
//! the inode's lock shared, changes exclusive (after the journal handle).

use super::acl::AclKind;
use super::privs::Actor;
use super::Fs;
use crate::error::FsResult;
use crate::meta_tx::MetaTx;
use crate::xattr::{self, SetMode};

impl Fs {
    /// The value of attribute `name` of `ino` (`NoAttr` if none).
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        xattr::get(&self.cache, state.xattr, name)
    }

    /// The full names of the attributes of `ino`, in stored order.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        xattr::list(&self.cache, state.xattr)
    }

    /// Sets attribute `name` of `ino` to `value`; `flags` as setxattr's
    /// (`XATTR_CREATE` 1, `XATTR_REPLACE` 2).
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> FsResult<()> {
        if let Some(kind) = AclKind::of_name(name) {
            return self.set_acl(ino, kind, Some(value), flags, &Actor::root());
        }
        let mode = SetMode::from_flags(flags)?;
        self.change_xattrs(ino, |mt, chain| xattr::set(mt, chain, name, value, mode))
    }

    /// Removes attribute `name` of `ino` (`NoAttr` if none).
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        if let Some(kind) = AclKind::of_name(name) {
            return self.set_acl(ino, kind, None, 0, &Actor::root());
        }
        self.change_xattrs(ino, |mt, chain| xattr::remove(mt, chain, name))
    }

    fn change_xattrs(
        &self,
        ino: u64,
        f: impl FnOnce(&MetaTx<'_, '_>, &mut Option<crate::format::BlockRef>) -> FsResult<()>,
    ) -> FsResult<()> {
        self.check_writable()?;
        let tx = self.journal.start()?;
        let cell = self.inode(ino)?;
        let mut state = cell.write();
        state.check_live()?;
        super::chattr::check_xattr_change(&state)?;
        let mt = MetaTx::new(&self.cache, &tx, self.meta_allocator());
        let mut chain = state.xattr;
        let result = f(&mt, &mut chain);
        let delta = mt.blocks_delta();
        if chain == state.xattr && delta == 0 && result.is_err() {
            return result;
        }
        state.xattr = chain;
        state.blocks = state.blocks.saturating_add_signed(delta);
        if result.is_ok() {
            state.ctime = super::time::now();
        }
        self.store_inode(&tx, &state)?;
        result
    }
}
