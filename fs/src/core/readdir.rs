//! Directory listings: readdir and the readdirplus form that carries each
//! entry's attributes.
//!
//! What it promises: "." at offset 0 (next offset 1), ".." (next offset 2),
//! then the names in key order, each with the offset to resume after it
//! (its key + 1, `dir::readdir`): offsets stay valid across changes, so a
//! listing resumed after names were added or removed returns every name
//! present throughout exactly once. The callback returns `false` when it
//! takes no more (the entry it was given is then not taken). For
//! readdirplus, every name taken (not "." or "..", which the kernel does
//! not count) adds one to the kernel's lookup count of its inode.
//!
//! Locks: the directory's lock (shared) for the whole listing, and each
//! child's (shared) under it — a directory before its children. The
//! attributes of ".." are read before the directory is locked (its parent
//! is not locked under it); the kernel ignores them anyway.

use super::namespace::dir_root;
use super::{FileAttr, Fs};
use crate::dir;
use crate::error::FsResult;
use crate::format::FileType;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirListEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: Vec<u8>,
    /// The offset that resumes the listing after this entry.
    pub next_offset: u64,
}

impl Fs {
    /// Lists directory `ino` from `offset` (0 = the start), calling `emit`
    /// for each entry until it returns `false`.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut emit: impl FnMut(&DirListEntry) -> bool,
    ) -> FsResult<()> {
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        let root = dir_root(&state)?;
        for dot in dots(ino, state.parent, offset) {
            if !emit(&dot) {
                return Ok(());
            }
        }
        let mut entry = DirListEntry {
            ino: 0,
            kind: FileType::Regular,
            name: Vec::new(),
            next_offset: 0,
        };
        dir::readdir(&self.cache, &root, offset, |e, next| {
            entry.ino = e.inode;
            entry.kind = e.file_type;
            entry.name.clone_from(&e.name);
            entry.next_offset = next;
            emit(&entry)
        })
    }

    /// As [`Fs::readdir`], with each entry's attributes.
    pub fn readdirplus(
        &self,
        ino: u64,
        offset: u64,
        mut emit: impl FnMut(&DirListEntry, &FileAttr) -> bool,
    ) -> FsResult<()> {
        let parent_attr = if offset < dir::DOTDOT_OFFSET {
            let parent = {
                let cell = self.inode(ino)?;
                let state = cell.read();
                state.check_live()?;
                state.parent
            };
            Some(self.getattr(parent)?)
        } else {
            None
        };
        let cell = self.inode(ino)?;
        let state = cell.read();
        state.check_live()?;
        let root = dir_root(&state)?;
        let own_attr = self.attr_of(&state);
        for dot in dots(ino, state.parent, offset) {
            let attr = if dot.name == b"." {
                &own_attr
            } else {
                parent_attr.as_ref().unwrap_or(&own_attr)
            };
            if !emit(&dot, attr) {
                return Ok(());
            }
        }
        let mut failure = None;
        let mut entry = DirListEntry {
            ino: 0,
            kind: FileType::Regular,
            name: Vec::new(),
            next_offset: 0,
        };
        dir::readdir(&self.cache, &root, offset, |e, next| {
            entry.ino = e.inode;
            entry.kind = e.file_type;
            entry.name.clone_from(&e.name);
            entry.next_offset = next;
            if e.inode == ino {
                // Only a corrupt tree names the directory itself.
                return emit(&entry, &own_attr);
            }
            let child = match self.inode(e.inode) {
                Ok(child) => child,
                Err(err) => {
                    failure = Some(err);
                    return false;
                }
            };
            let child_state = child.read();
            let attr = self.attr_of(&child_state);
            drop(child_state);
            let taken = emit(&entry, &attr);
            if taken {
                child.add_lookups(1);
            }
            taken
        })?;
        match failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// "." and ".." as far as `offset` has not passed them.
fn dots(ino: u64, parent: u64, offset: u64) -> Vec<DirListEntry> {
    let mut out = Vec::with_capacity(2);
    if offset < dir::DOT_OFFSET {
        out.push(DirListEntry {
            ino,
            kind: FileType::Directory,
            name: b".".to_vec(),
            next_offset: dir::DOT_OFFSET,
        });
    }
    if offset < dir::DOTDOT_OFFSET {
        out.push(DirListEntry {
            ino: parent,
            kind: FileType::Directory,
            name: b"..".to_vec(),
            next_offset: dir::DOTDOT_OFFSET,
        });
    }
    out
}
