//! Orphans: the orphan list (§5.1: anchored in the root inode's next-orphan
//! link; on a filesystem without `RO_COMPAT_ORPHANS_IN_ROOT`, made by an
//! earlier keelfs, in the §4 superblock head; §5 next-orphan links) of
//! inodes unlinked while still open.
//!
//! The list is journalled with the inodes it links, so after journal
//! recovery it is exactly the orphans of the last committed transaction: a
//! chain that names a free or linked inode is corruption, never a crash
//! window. With the list in the root, a non-zero superblock head is an
//! error (the field is reserved) and is cleared.
//!
//! The list must name inodes in use, without a loop; an inode on it has
//! link count 0 and no directory names it. When fsck runs, nothing holds
//! those files open any more, so repair finishes them off as the mount
//! would: each is cleared and its blocks freed ("released"), and the list
//! is emptied. Under `-n` pending orphans are only noted (they are a
//! normal state after a crash, and mounting releases them); they count as
//! in use, so nothing else complains about them.
//!
//! An inode on the list that still has links (or that a directory names)
//! is taken off the list and kept; a next-orphan link on an inode that is
//! not on the list is cleared.

use crate::checker::{Checker, Fate};
use crate::inodes::type_name;
use crate::options::Mode;
use crate::report::Pass;
use keelfs_fs::format::superblock::ROOT_INODE;
use std::collections::BTreeSet;

impl Checker<'_> {
    /// Checks the orphan list; see the module docs.
    pub fn check_orphans(&mut self) {
        let in_root = self.sb.orphans_in_root();
        if in_root && self.sb.orphan_head != 0 {
            self.report.error(
                Pass::Links,
                true,
                format!(
                    "the superblock names inode {} as the orphan list head, but the list is \
                     anchored in the root inode: the superblock's field is cleared",
                    self.sb.orphan_head
                ),
            );
            self.plan.orphan_list_reset = true;
            self.plan.superblocks = true;
        }
        let head = if in_root {
            self.kept(ROOT_INODE).map_or(0, |r| r.inode.next_orphan)
        } else {
            self.sb.orphan_head
        };
        let mut list: Vec<u64> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut x = head;
        while x != 0 {
            if !seen.insert(x) {
                self.report.error(
                    Pass::Links,
                    true,
                    format!("the orphan list loops back to inode {x}: it is cut there"),
                );
                break;
            }
            match self.kept(x) {
                Some(rec) => {
                    list.push(x);
                    x = rec.inode.next_orphan;
                }
                None => {
                    self.report.error(
                        Pass::Links,
                        true,
                        format!(
                            "the orphan list names inode {x}, which is not in use: it is cut there"
                        ),
                    );
                    break;
                }
            }
        }
        let on_list: BTreeSet<u64> = list.iter().copied().collect();
        let stray: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(n, r)| {
                r.kept()
                    && r.inode.next_orphan != 0
                    && !on_list.contains(n)
                    && !(in_root && **n == ROOT_INODE)
            })
            .map(|(&n, _)| n)
            .collect();
        for ino in stray {
            self.report.error(
                Pass::Links,
                true,
                format!(
                    "inode {ino} has a next-orphan link but is not on the orphan list: cleared"
                ),
            );
            if let Some(rec) = self.inodes.get_mut(&ino) {
                rec.inode.next_orphan = 0;
            }
        }
        if head == 0 {
            return;
        }
        // Inodes named by a directory that is not itself a pending orphan.
        let pending_dirs: BTreeSet<u64> = list
            .iter()
            .copied()
            .filter(|n| self.kept(*n).is_some_and(|r| r.inode.links == 0))
            .collect();
        let named: BTreeSet<u64> = self
            .inodes
            .iter()
            .filter(|(n, r)| r.kept() && !pending_dirs.contains(n))
            .flat_map(|(_, r)| r.entries.iter().map(|e| e.inode))
            .collect();
        let mut pending = 0u64;
        for &ino in &list {
            let Some(rec) = self.inodes.get_mut(&ino) else {
                continue;
            };
            let links = rec.inode.links;
            let kind = type_name(rec.inode.file_type);
            if links == 0 && !named.contains(&ino) {
                pending += 1;
                match self.mode {
                    Mode::Repair => {
                        rec.fate = Fate::Clear;
                        self.report.note(
                            Pass::Links,
                            format!(
                                "orphan inode {ino} (a {kind} unlinked while open) is released"
                            ),
                        );
                    }
                    Mode::Check => {
                        rec.inode.next_orphan = 0;
                        self.orphans.insert(ino);
                    }
                }
                continue;
            }
            rec.inode.next_orphan = 0;
            self.report.error(
                Pass::Links,
                true,
                format!(
                    "inode {ino} ({kind}) is on the orphan list but {}: taken off the list",
                    if links == 0 {
                        "a directory names it".to_string()
                    } else {
                        format!("has {links} links")
                    }
                ),
            );
        }
        if self.mode == Mode::Check && pending > 0 {
            self.report.note(
                Pass::Links,
                format!(
                    "{pending} orphan inodes (unlinked while open) are waiting to be released; \
                     a repair or the next mount releases them"
                ),
            );
        }
        self.plan.orphans_released = pending;
        self.plan.orphan_list_reset = true;
        self.plan.superblocks = true;
        if in_root {
            // The anchor: a repair releases every pending orphan and writes
            // the root with an empty list.
            if let Some(root) = self.inodes.get_mut(&ROOT_INODE).filter(|r| r.kept()) {
                root.inode.next_orphan = 0;
            }
        }
    }
}
