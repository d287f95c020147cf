//! The orphan list (docs/format.md §5.1): inodes with no name left that are
//! still open or known to the kernel, whose blocks are freed on last close —
//! or at the next mount, after a crash.
//!
//! On disk the list is a chain through the inode table, anchored in the
//! root inode: the root's `next_orphan` names the first orphan, each orphan
//! names the next (0 ends it). Every link of the chain is an inode-table
//! field, so every change to the list is journalled with the inodes it
//! links, in the same transaction: the chain is crash-consistent by
//! construction (the superblock, written per leg outside the journal, holds
//! no part of it on a filesystem with `RO_COMPAT_ORPHANS_IN_ROOT`).
//!
//! In memory it is the same chain as a vector, head first, behind one
//! mutex (a leaf lock: taken alone or inside a buffer guard, never holding
//! anything else).
//!
//! What it promises:
//!
//! * the `next_orphan` of every used inode stored through the inode cache
//!   comes from here ([`Orphans::next_of`]; for the anchor, the root, that
//!   is the head), so a store never undoes a list change;
//! * [`Orphans::push`] and [`Orphans::remove`] say which slots' links
//!   changed (the new orphan and the anchor; the predecessor, which is the
//!   anchor when the head goes): the caller rewrites them in the same
//!   transaction, so the chain in the inode table matches this list as of
//!   every transaction.
//!
//! What it relies on: every handle open at one time belongs to the running
//! transaction (the journal's commit waits for them), so a list change and
//! the slot writes that follow it always land in one transaction.

use crate::format::superblock::ROOT_INODE;
use parking_lot::Mutex;

/// The inode whose `next_orphan` is the list's head.
pub const ORPHAN_ANCHOR: u64 = ROOT_INODE;

/// The in-memory orphan list. See the module docs.
#[derive(Debug, Default)]
pub struct Orphans {
    /// The chain, head first.
    list: Mutex<Vec<u64>>,
}

impl Orphans {
    /// A list whose chain (head first) was found on disk.
    pub fn with_chain(chain: Vec<u64>) -> Orphans {
        Orphans {
            list: Mutex::new(chain),
        }
    }

    /// Replaces the whole list (recovery at mount).
    pub fn replace(&self, chain: Vec<u64>) {
        *self.list.lock() = chain;
    }

    /// The head now (0 = empty).
    pub fn head(&self) -> u64 {
        self.list.lock().first().copied().unwrap_or(0)
    }

    /// Every orphan, head first.
    pub fn list(&self) -> Vec<u64> {
        self.list.lock().clone()
    }

    /// Whether `ino` is on the list.
    pub fn contains(&self, ino: u64) -> bool {
        self.list.lock().contains(&ino)
    }

    /// What `ino`'s `next_orphan` field holds: the head for the anchor, the
    /// orphan after `ino` for an orphan (0 at the end), 0 for any other
    /// inode.
    pub fn next_of(&self, ino: u64) -> u64 {
        let list = self.list.lock();
        if ino == ORPHAN_ANCHOR {
            return list.first().copied().unwrap_or(0);
        }
        match list.iter().position(|&i| i == ino) {
            Some(p) => list.get(p + 1).copied().unwrap_or(0),
            None => 0,
        }
    }

    /// Puts `ino` at the head. Returns false if it was already on the list
    /// (or is the anchor). Otherwise the caller stores `ino` and rewrites
    /// the anchor's link in the same transaction.
    pub fn push(&self, ino: u64) -> bool {
        let mut list = self.list.lock();
        if ino == ORPHAN_ANCHOR || ino == 0 || list.contains(&ino) {
            return false;
        }
        list.insert(0, ino);
        true
    }

    /// Takes `ino` off the list. Returns `None` if it was not on it, else
    /// `Some(predecessor)` — [`ORPHAN_ANCHOR`] when it was the head —,
    /// whose `next_orphan` the caller rewrites in the same transaction.
    pub fn remove(&self, ino: u64) -> Option<u64> {
        let mut list = self.list.lock();
        let p = list.iter().position(|&i| i == ino)?;
        list.remove(p);
        Some(if p == 0 { ORPHAN_ANCHOR } else { list[p - 1] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_anchor() {
        let o = Orphans::default();
        assert_eq!(o.next_of(ORPHAN_ANCHOR), 0);
        assert!(o.push(5));
        assert!(o.push(7));
        assert!(!o.push(7));
        assert!(!o.push(ORPHAN_ANCHOR));
        assert!(o.push(9));
        assert_eq!(o.list(), vec![9, 7, 5]);
        assert_eq!(o.next_of(ORPHAN_ANCHOR), 9);
        assert_eq!(o.next_of(9), 7);
        assert_eq!(o.next_of(5), 0);
        assert_eq!(o.next_of(42), 0);
        assert_eq!(o.remove(7), Some(9));
        assert_eq!(o.remove(9), Some(ORPHAN_ANCHOR));
        assert_eq!(o.remove(9), None);
        assert_eq!(o.next_of(ORPHAN_ANCHOR), 5);
        assert_eq!(o.head(), 5);
        o.replace(vec![3, 4]);
        assert_eq!(o.next_of(ORPHAN_ANCHOR), 3);
        assert!(o.contains(4));
    }
}
