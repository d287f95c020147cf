//! The ring (docs/format.md §10): positions, the window of live records,
//! and free-space accounting. Pure bookkeeping: no I/O happens here.
//!
//! What it promises:
//!
//! * [`RingGeometry`] maps ring positions (0 … J−1) to block addresses,
//!   wrapping past the end.
//! * [`Window`] is the in-memory picture of the live part of the ring: the
//!   records from the tail (the oldest one still needed) to the head (where
//!   the next record goes), in ring order. It never lets the head catch up
//!   with the tail: at most J − 1 blocks are live, so a recovery walk from
//!   the tail always meets a block that is not part of the chain.
//! * It keeps, for recovery, a **reserve**: room after the head for the one
//!   record recovery may have to write (the tag-table blocks that resolving
//!   the live data intents can change, see `recovery.rs`). Space counted as
//!   available ([`Window::available`]) excludes that reserve, so whatever the
//!   running filesystem writes, recovery still fits its record.
//! * It tells which prefix of the window a checkpoint may release
//!   ([`Window::releasable`]): an intent record once its transaction has
//!   committed, a transaction record once every block it logged either is
//!   durable at home or has a newer logged image later in the window.
//!
//! Relies on: its owner (the journal's ring lock) serialising every change,
//! and on records being pushed in the order they are written to disk.

use std::collections::{HashMap, HashSet, VecDeque};

/// Where the ring lives: J blocks from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingGeometry {
    pub start: u64,
    pub blocks: u64,
}

impl RingGeometry {
    /// The block address of ring position `pos` (taken modulo J).
    pub fn address(&self, pos: u64) -> u64 {
        self.start + pos % self.blocks
    }

    /// The position `n` blocks after `pos`.
    pub fn advance(&self, pos: u64, n: u64) -> u64 {
        (pos % self.blocks + n % self.blocks) % self.blocks
    }
}

/// Descriptor blocks needed for `entries` entries, `capacity` per block.
pub(crate) fn descriptor_blocks(entries: usize, capacity: usize) -> u64 {
    entries.div_ceil(capacity.max(1)).max(1) as u64
}

/// Ring blocks of a record: descriptors, images, commit.
pub(crate) fn record_len(entries: usize, images: usize, capacity: usize) -> u64 {
    descriptor_blocks(entries, capacity) + images as u64 + 1
}

/// Ring blocks of the record recovery writes to store the tags of
/// `tag_blocks` tag-table blocks (0 when there are none).
pub(crate) fn recovery_record_len(tag_blocks: usize, capacity: usize) -> u64 {
    if tag_blocks == 0 {
        0
    } else {
        record_len(tag_blocks, tag_blocks, capacity)
    }
}

/// What a live record holds, as far as checkpointing is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LiveKind {
    /// A transaction record: the home blocks it logged images of.
    Transaction { blocks: Vec<u64> },
    /// An intent-only record: the tag-table blocks its intents' tags live in.
    Intents { tag_blocks: Vec<u64> },
}

/// One record in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveRecord {
    pub seq: u64,
    pub pos: u64,
    pub len: u64,
    pub kind: LiveKind,
}

/// The live part of the ring. See the module documentation.
#[derive(Debug)]
pub(crate) struct Window {
    geo: RingGeometry,
    /// Descriptor entries per block.
    capacity: usize,
    tail: u64,
    head: u64,
    /// Blocks from tail to head.
    used: u64,
    records: VecDeque<LiveRecord>,
    /// Home block -> sequence of the newest live transaction record that
    /// logged it.
    latest: HashMap<u64, u64>,
    /// Tag-table block -> live intent records naming it.
    tag_blocks: HashMap<u64, u32>,
}

impl Window {
    /// An empty window whose tail and head are at `pos`.
    pub fn new(geo: RingGeometry, capacity: usize, pos: u64) -> Window {
        Window {
            geo,
            capacity,
            tail: pos % geo.blocks,
            head: pos % geo.blocks,
            used: 0,
            records: VecDeque::new(),
            latest: HashMap::new(),
            tag_blocks: HashMap::new(),
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Live blocks.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Live records, oldest first.
    pub fn records(&self) -> &VecDeque<LiveRecord> {
        &self.records
    }

    /// Ring blocks kept free for recovery's own record.
    pub fn reserve(&self) -> u64 {
        recovery_record_len(self.tag_blocks.len(), self.capacity)
    }

    /// Blocks a new record may use: J − 1 − live − reserve.
    pub fn available(&self) -> u64 {
        (self.geo.blocks - 1).saturating_sub(self.used + self.reserve())
    }

    /// How much [`available`](Self::available) drops if an intent record of
    /// `len` blocks naming `tag_blocks` is pushed (its length plus the
    /// growth of the reserve).
    pub fn intent_cost(&self, len: u64, tag_blocks: &[u64]) -> u64 {
        let new: HashSet<u64> = tag_blocks
            .iter()
            .copied()
            .filter(|b| !self.tag_blocks.contains_key(b))
            .collect();
        let after = recovery_record_len(self.tag_blocks.len() + new.len(), self.capacity);
        len + after - self.reserve()
    }

    /// Append a record written at the head. The caller checked the space.
    pub fn push(&mut self, record: LiveRecord) {
        debug_assert_eq!(record.pos, self.head);
        self.head = self.geo.advance(self.head, record.len);
        self.used += record.len;
        match &record.kind {
            LiveKind::Transaction { blocks } => {
                for &b in blocks {
                    self.latest.insert(b, record.seq);
                }
            }
            LiveKind::Intents { tag_blocks } => {
                for &b in tag_blocks {
                    *self.tag_blocks.entry(b).or_insert(0) += 1;
                }
            }
        }
        self.records.push_back(record);
    }

    /// How many records from the tail a checkpoint may release, given the
    /// last committed sequence and the blocks that were pinned at any time
    /// during the checkpoint's cache flush (see `checkpoint.rs`).
    pub fn releasable(&self, committed_seq: u64, pinned: &HashSet<u64>) -> usize {
        self.records
            .iter()
            .take_while(|r| match &r.kind {
                LiveKind::Intents { .. } => r.seq <= committed_seq,
                LiveKind::Transaction { blocks } => blocks
                    .iter()
                    .all(|b| !pinned.contains(b) || self.latest.get(b).is_some_and(|&s| s > r.seq)),
            })
            .count()
    }

    /// The tail after releasing `count` records: `(position, sequence of
    /// the record there)`, or `None` if the window would be empty.
    pub fn tail_after(&self, count: usize) -> Option<(u64, u64)> {
        self.records.get(count).map(|r| (r.pos, r.seq))
    }

    /// Release the `count` oldest records (their blocks become free).
    pub fn release(&mut self, count: usize) {
        for _ in 0..count.min(self.records.len()) {
            let Some(record) = self.records.pop_front() else {
                break;
            };
            self.used -= record.len;
            self.tail = self.geo.advance(record.pos, record.len);
            match record.kind {
                LiveKind::Transaction { blocks } => {
                    for b in blocks {
                        if self.latest.get(&b) == Some(&record.seq) {
                            self.latest.remove(&b);
                        }
                    }
                }
                LiveKind::Intents { tag_blocks } => {
                    for b in tag_blocks {
                        if let Some(n) = self.tag_blocks.get_mut(&b) {
                            *n -= 1;
                            if *n == 0 {
                                self.tag_blocks.remove(&b);
                            }
                        }
                    }
                }
            }
        }
        if self.records.is_empty() {
            self.tail = self.head;
            debug_assert_eq!(self.used, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEO: RingGeometry = RingGeometry {
        start: 2,
        blocks: 64,
    };

    fn tx(seq: u64, pos: u64, len: u64, blocks: &[u64]) -> LiveRecord {
        LiveRecord {
            seq,
            pos,
            len,
            kind: LiveKind::Transaction {
                blocks: blocks.to_vec(),
            },
        }
    }

    #[test]
    fn positions_wrap() {
        assert_eq!(GEO.address(0), 2);
        assert_eq!(GEO.address(63), 65);
        assert_eq!(GEO.address(64), 2);
        assert_eq!(GEO.advance(60, 10), 6);
        assert_eq!(GEO.advance(63, 1), 0);
    }

    #[test]
    fn record_sizes() {
        assert_eq!(descriptor_blocks(0, 34), 1);
        assert_eq!(descriptor_blocks(34, 34), 1);
        assert_eq!(descriptor_blocks(35, 34), 2);
        assert_eq!(record_len(3, 2, 34), 4);
        assert_eq!(recovery_record_len(0, 34), 0);
        assert_eq!(recovery_record_len(2, 34), 4);
    }

    #[test]
    fn space_reserve_and_release() {
        let mut w = Window::new(GEO, 34, 60);
        assert_eq!(w.available(), 63);
        w.push(tx(5, 60, 6, &[100, 101]));
        assert_eq!((w.head(), w.used()), (2, 6));
        let cost = w.intent_cost(2, &[70, 70]);
        assert_eq!(cost, 2 + 3); // a record of 2, reserve for one tag block
        w.push(LiveRecord {
            seq: 6,
            pos: 2,
            len: 2,
            kind: LiveKind::Intents {
                tag_blocks: vec![70],
            },
        });
        assert_eq!(w.available(), 63 - 8 - 3);
        w.push(tx(6, 4, 3, &[100]));

        // Block 101 pinned: record 5 must wait; 100 is newer in record 6.
        let pinned: HashSet<u64> = [100, 101].into();
        assert_eq!(w.releasable(6, &pinned), 0);
        let pinned: HashSet<u64> = [100].into();
        // Intent record 6 is released once transaction 6 committed.
        assert_eq!(w.releasable(5, &pinned), 1);
        assert_eq!(w.releasable(6, &pinned), 2);
        assert_eq!(w.tail_after(2), Some((4, 6)));
        w.release(2);
        assert_eq!((w.tail(), w.used(), w.reserve()), (4, 3, 0));
        assert_eq!(w.releasable(6, &pinned), 0); // 100 pinned, newest here
        w.release(1);
        assert_eq!((w.tail(), w.head(), w.used()), (7, 7, 0));
        assert_eq!(w.available(), 63);
    }
}
