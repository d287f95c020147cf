//! Walking every in-use inode's trees: the extent tree (`extents.rs`), the
//! directory tree (`dirs.rs`), the xattr chain (`xattrs.rs`) and the
//! symlink overflow block (`symlinks.rs`). Every block reached is checked
//! on every leg against the generation its parent records (pass 3) and
//! claimed, so that a block reached twice is caught.
//!
//! Inodes are walked in inode order; then slots that hold an inode while
//! the bitmap calls them free ("candidates") are walked too if some
//! directory entry names them, until no more are named; the rest are
//! cleared.

use crate::checker::{Checker, Fate, FsckError};
use crate::report::Pass;
use keelfs_fs::format::DataArea;
use std::collections::BTreeSet;

impl Checker<'_> {
    /// Walks the trees of every inode in use; see the module docs.
    pub fn walk_trees(&mut self) -> Result<(), FsckError> {
        let inos: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(_, r)| r.kept())
            .map(|(&n, _)| n)
            .collect();
        let total = inos.len() as u64;
        for (i, ino) in inos.into_iter().enumerate() {
            self.progress.update(Pass::MetadataTags, i as u64, total);
            self.walk_inode(ino);
        }
        loop {
            let named = self.named_inodes();
            let promote: Vec<u64> = self
                .inodes
                .iter()
                .filter(|(n, r)| r.fate == Fate::Candidate && named.contains(n))
                .map(|(&n, _)| n)
                .collect();
            if promote.is_empty() {
                break;
            }
            for ino in promote {
                self.report.error(
                    Pass::Bitmaps,
                    true,
                    format!(
                        "inode {ino} is named by a directory but marked free in the inode \
                         bitmap: it is kept"
                    ),
                );
                if let Some(rec) = self.inodes.get_mut(&ino) {
                    rec.fate = Fate::Keep;
                }
                self.walk_inode(ino);
            }
        }
        let stale: Vec<(u64, u32)> = self
            .inodes
            .iter()
            .filter(|(_, r)| r.fate == Fate::Candidate)
            .map(|(&n, r)| (n, r.original.generation))
            .collect();
        for (ino, generation) in stale {
            self.report.error(
                Pass::Links,
                true,
                format!(
                    "inode {ino} is free in the inode bitmap but its slot still holds an inode: \
                     cleared"
                ),
            );
            self.plan.clear_slots.insert(ino, generation);
            if let Some(rec) = self.inodes.get_mut(&ino) {
                rec.fate = Fate::Clear;
            }
        }
        Ok(())
    }

    /// Inode numbers named by an entry of a kept directory.
    pub fn named_inodes(&self) -> BTreeSet<u64> {
        self.inodes
            .values()
            .filter(|r| r.kept())
            .flat_map(|r| r.entries.iter().map(|e| e.inode))
            .collect()
    }

    /// Walks one inode's trees.
    fn walk_inode(&mut self, ino: u64) {
        let Some(rec) = self.inodes.get(&ino) else {
            return;
        };
        if rec.walked {
            return;
        }
        let data = rec.inode.data.clone();
        let xattr = rec.inode.xattr;
        match data {
            DataArea::Extents(root) => self.walk_extent_tree(ino, &root),
            DataArea::Directory(root) => self.walk_dir(ino, &root),
            DataArea::Overflow(r) => self.walk_overflow(ino, r),
            DataArea::None | DataArea::Inline(_) => {}
        }
        if let Some(first) = xattr {
            self.walk_xattrs(ino, first);
        }
        if let Some(rec) = self.inodes.get_mut(&ino) {
            rec.walked = true;
        }
    }

    /// Claims dynamic metadata block `block` for inode `ino`. Refused (and
    /// reported) when it is outside the data area or already claimed.
    pub fn claim_meta(&mut self, block: u64, ino: u64, what: &str, pass: Pass) -> bool {
        if !self.layout.is_data_block(block) {
            self.report.error(
                pass,
                true,
                format!(
                    "inode {ino}: {what} points at block {block}, outside the data area ({}–{})",
                    self.layout.data.start,
                    self.layout.data.end() - 1
                ),
            );
            return false;
        }
        if self.claimed.get(block) {
            let other = match self.meta_owner.get(&block) {
                Some(&o) if o == ino => "this inode already".to_string(),
                Some(o) => format!("inode {o}"),
                None => "another structure".to_string(),
            };
            self.report.error(
                pass,
                true,
                format!("inode {ino}: {what} at block {block} is also used by {other}: dropped"),
            );
            return false;
        }
        self.claimed.set(block);
        self.meta_claimed.set(block);
        self.meta_owner.insert(block, ino);
        true
    }
}
