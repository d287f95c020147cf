//! The orphan list (§4 offset 304, §5 offset 120): inodes with no name left
//! that are still open or known to the kernel, whose blocks are freed on
//! last close — or at the next mount, after a crash.
//!
//! On disk the list is a chain: the superblock names the head, each orphan
//! names the next (`next_orphan`). In memory it is the same chain as a
//! vector, head first, behind one mutex (a leaf lock: taken alone or inside
//! a buffer guard, never holding anything else).
//!
//! What it promises:
//!
//! * the `next_orphan` of every inode stored through the inode cache comes
//!   from here ([`Orphans::next_of`]), so the chain in the inode table always
//!   matches this list as of the transaction that wrote it;
//! * every change records which transaction made it, and
//!   [`Orphans::head_as_of`] says what the head was at the end of a given
//!   transaction: the superblock is written with that head only after that
//!   transaction is durable (the superblock is per leg and is not
//!   journalled), so it never names an orphan whose inode change is not on
//!   disk yet.
//!
//! Crash windows (documented, not hidden): between a transaction's commit
//! and the superblock write that follows it, the superblock's head is the
//! previous one. A crash there leaves either an orphan missing from the
//! chain (its inode and blocks leak until fsck) or a head that names an
//! inode already freed (the walk at mount stops there and says so); it
//! never frees an inode that is still linked.

use parking_lot::Mutex;

#[derive(Debug, Default)]
struct State {
    /// The chain, head first.
    list: Vec<u64>,
    /// (transaction, head after it), oldest first; trimmed as superblock
    /// writes catch up.
    history: Vec<(u64, u64)>,
}

impl State {
    fn head(&self) -> u64 {
        self.list.first().copied().unwrap_or(0)
    }

    fn record(&mut self, seq: u64) {
        let head = self.head();
        match self.history.last_mut() {
            Some(last) if last.0 == seq => last.1 = head,
            _ => self.history.push((seq, head)),
        }
    }
}

/// The in-memory orphan list. See the module docs.
#[derive(Debug, Default)]
pub struct Orphans {
    state: Mutex<State>,
}

impl Orphans {
    /// A list whose chain (head first) was found on disk.
    pub fn with_chain(chain: Vec<u64>) -> Orphans {
        Orphans {
            state: Mutex::new(State {
                list: chain,
                history: Vec::new(),
            }),
        }
    }

    /// Replaces the whole list (recovery at mount), with no history.
    pub fn replace(&self, chain: Vec<u64>) {
        let mut st = self.state.lock();
        st.list = chain;
        st.history.clear();
    }

    /// The head now (0 = empty).
    pub fn head(&self) -> u64 {
        self.state.lock().head()
    }

    /// Every orphan, head first.
    pub fn list(&self) -> Vec<u64> {
        self.state.lock().list.clone()
    }

    /// Whether `ino` is on the list.
    pub fn contains(&self, ino: u64) -> bool {
        self.state.lock().list.contains(&ino)
    }

    /// The orphan after `ino` (0 at the end, or when `ino` is no orphan).
    pub fn next_of(&self, ino: u64) -> u64 {
        let st = self.state.lock();
        match st.list.iter().position(|&i| i == ino) {
            Some(p) => st.list.get(p + 1).copied().unwrap_or(0),
            None => 0,
        }
    }

    /// Puts `ino` at the head, in transaction `seq`. Returns false if it
    /// was already there.
    pub fn push(&self, ino: u64, seq: u64) -> bool {
        let mut st = self.state.lock();
        if st.list.contains(&ino) {
            return false;
        }
        st.list.insert(0, ino);
        st.record(seq);
        true
    }

    /// Takes `ino` off the list in transaction `seq`. Returns `None` if it
    /// was not on it, else `Some(predecessor)` (`Some(0)` when it was the
    /// head): the predecessor's `next_orphan` must be rewritten.
    pub fn remove(&self, ino: u64, seq: u64) -> Option<u64> {
        let mut st = self.state.lock();
        let p = st.list.iter().position(|&i| i == ino)?;
        st.list.remove(p);
        st.record(seq);
        Some(if p == 0 { 0 } else { st.list[p - 1] })
    }

    /// The head as of the end of transaction `seq` (the last change made
    /// in `seq` or before), if anything changed up to `seq`; forgets the
    /// history up to it.
    pub fn head_as_of(&self, seq: u64) -> Option<u64> {
        let mut st = self.state.lock();
        let upto = st.history.partition_point(|&(s, _)| s <= seq);
        if upto == 0 {
            return None;
        }
        let head = st.history[upto - 1].1;
        st.history.drain(..upto);
        Some(head)
    }

    /// Forgets the whole history (the superblock was written with the
    /// current head).
    pub fn written(&self) {
        self.state.lock().history.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_and_history() {
        let o = Orphans::default();
        assert!(o.push(5, 10));
        assert!(o.push(7, 10));
        assert!(!o.push(7, 11));
        assert!(o.push(9, 12));
        assert_eq!(o.list(), vec![9, 7, 5]);
        assert_eq!(o.next_of(9), 7);
        assert_eq!(o.next_of(5), 0);
        assert_eq!(o.next_of(42), 0);
        assert_eq!(o.remove(7, 12), Some(9));
        assert_eq!(o.remove(9, 13), Some(0));
        assert_eq!(o.remove(9, 13), None);
        assert_eq!(o.head_as_of(9), None);
        assert_eq!(o.head_as_of(10), Some(7));
        assert_eq!(o.head_as_of(12), Some(9));
        assert_eq!(o.head_as_of(12), None);
        assert_eq!(o.head_as_of(20), Some(5));
        assert_eq!(o.head(), 5);
    }
}
