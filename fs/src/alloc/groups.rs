//! A bitmap of the §3 kind (the block bitmap or the inode bitmap), split
//! into allocation groups: one group per bitmap block.
//!
//! What it promises:
//!
//! * **Claims before bits.** Every allocation first *claims* items from an
//!   in-memory count of items that are free, not pending and not claimed
//!   ([`GroupedBitmap::claim`]); a claim that succeeds is a promise that the
//!   bits exist somewhere, so an operation can reserve everything it may
//!   need (a write's extent-tree splits) before changing anything, and fail
//!   with [`FsError::NoSpace`] with nothing changed. An unused claim goes
//!   back when it drops.
//! * **Groups.** Each group (bitmap block) has its own mutex, its count of
//!   clear bits and its pending ranges; allocators in different groups never
//!   share a lock, and a group's bitmap block is changed only under its
//!   mutex, through `tx.write`.
//! * **Freed items wait for the commit.** [`GroupedBitmap::free`] clears the
//!   bits in the caller's transaction but keeps the items *pending*: no
//!   allocation hands them out until that transaction is durable (an
//!   `after_commit` hook releases them), so a crash can never leave an item
//!   in use by two owners. [`GroupedBitmap::unalloc`] gives back items
//!   allocated in the running transaction and never published, at once.
//! * **Goal-directed runs.** [`GroupedBitmap::alloc_run`] returns the first
//!   run of free items at or after the goal (in the goal's group, then the
//!   following groups, wrapping round), as long as the caller wants and the
//!   claim allows, so consecutive allocations are contiguous.
//! * Bits outside the valid items (padding) are never handed out; a bitmap
//!   block of the wrong kind, a free of a clear bit, or counts that say a
//!   group has free bits it does not have are [`FsError::Corrupt`].
//!
//! What it relies on: bufio for the bitmap blocks (read and changed only
//! here, the bitmaps have no other writer while mounted); the journal's
//! `tx.write` and `tx.after_commit`.
//!
//! LOCK ORDER: a group mutex is taken after the journal handle and after
//! inode locks, before buffer guards, and never two at once. The
//! `after_commit` hook takes one group mutex alone. `available` is an
//! atomic.

use crate::core::meta::{payload, payload_mut, read_meta};
use crate::error::{FsError, FsResult};
use crate::format::bitmap;
use crate::format::header::BlockKind;
use crate::journal::TxHandle;
use keelfs_engine::bufio::Bufio;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Items reserved for one operation; unused ones go back on drop.
pub struct Claim<'a> {
    available: &'a AtomicU64,
    remaining: u64,
}

impl Claim<'_> {
    /// Items still claimed.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    fn consume(&mut self, n: u64) {
        debug_assert!(n <= self.remaining);
        self.remaining -= n.min(self.remaining);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.remaining > 0 {
            self.available.fetch_add(self.remaining, Ordering::AcqRel);
        }
    }
}

/// One group's in-memory state.
#[derive(Debug, Default)]
struct Group {
    /// Clear bits among the group's valid items (pending ones included).
    clear: u64,
    /// Items freed by transactions not yet durable: first item → count.
    pending: BTreeMap<u64, u64>,
    /// Sum of `pending`.
    pending_count: u64,
}

impl Group {
    /// The pending range containing `item`, as (first, end).
    fn pending_at(&self, item: u64) -> Option<(u64, u64)> {
        let (&first, &count) = self.pending.range(..=item).next_back()?;
        (item < first + count).then_some((first, first + count))
    }

    /// The first pending item after `item`.
    fn next_pending_after(&self, item: u64) -> Option<u64> {
        self.pending
            .range(item + 1..)
            .next()
            .map(|(&first, _)| first)
    }
}

struct Shared {
    groups: Vec<Mutex<Group>>,
    /// Items clear, not pending and not claimed.
    available: AtomicU64,
}

/// A §3 bitmap with per-block allocation groups. See the module docs.
pub struct GroupedBitmap {
    shared: Arc<Shared>,
    cache: Arc<Bufio>,
    kind: BlockKind,
    /// First bitmap block.
    start: u64,
    /// Valid items.
    items: u64,
    /// Items per bitmap block (8P).
    per_group: u64,
}

impl GroupedBitmap {
    /// Opens the bitmap of `items` items whose blocks start at `start`,
    /// counting the clear bits of every group (one read of every bitmap
    /// block).
    pub fn open(
        cache: Arc<Bufio>,
        kind: BlockKind,
        start: u64,
        blocks: u64,
        items: u64,
        per_group: u64,
    ) -> FsResult<GroupedBitmap> {
        if per_group == 0 || blocks != items.div_ceil(per_group) {
            return Err(FsError::Corrupt(format!(
                "{kind:?}: {blocks} bitmap blocks for {items} items"
            )));
        }
        let mut groups = Vec::with_capacity(blocks as usize);
        let mut available = 0;
        for g in 0..blocks {
            let buf = read_meta(&cache, start + g, kind, None)?;
            let data = buf.data();
            let valid = valid_bits(items, per_group, g);
            let clear = valid as u64 - bitmap::count_ones(payload(&data), valid) as u64;
            available += clear;
            groups.push(Mutex::new(Group {
                clear,
                ..Group::default()
            }));
        }
        Ok(GroupedBitmap {
            shared: Arc::new(Shared {
                groups,
                available: AtomicU64::new(available),
            }),
            cache,
            kind,
            start,
            items,
            per_group,
        })
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.shared.groups.len()
    }

    /// Clear bits (free items, pending ones included): the superblock's
    /// summary.
    pub fn clear_count(&self) -> u64 {
        self.shared.groups.iter().map(|g| g.lock().clear).sum()
    }

    /// Items that can be claimed now.
    pub fn available(&self) -> u64 {
        self.shared.available.load(Ordering::Acquire)
    }

    /// Claims exactly `n` items, or fails with `NoSpace` claiming none.
    pub fn claim(&self, n: u64) -> FsResult<Claim<'_>> {
        let available = &self.shared.available;
        let mut cur = available.load(Ordering::Acquire);
        loop {
            if cur < n {
                return Err(FsError::NoSpace);
            }
            match available.compare_exchange_weak(cur, cur - n, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Claim {
                        available,
                        remaining: n,
                    })
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Claims between 1 and `n` items (as many as are available), or fails
    /// with `NoSpace` when none is.
    pub fn claim_up_to(&self, n: u64) -> FsResult<Claim<'_>> {
        let available = &self.shared.available;
        let mut cur = available.load(Ordering::Acquire);
        loop {
            let take = cur.min(n);
            if take == 0 {
                return Err(FsError::NoSpace);
            }
            match available.compare_exchange_weak(
                cur,
                cur - take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(Claim {
                        available,
                        remaining: take,
                    })
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Allocates the first run of free items at or after `goal` (wrapping
    /// round), of at most `want` items and at most what `claim` holds, and
    /// consumes the claim. `prepare(first, count)` runs under the group's
    /// mutex before the bits are set; an error from it allocates nothing.
    /// Returns (first item, count).
    pub fn alloc_run(
        &self,
        tx: &TxHandle<'_>,
        claim: &mut Claim<'_>,
        goal: u64,
        want: u64,
        prepare: &mut dyn FnMut(u64, u64) -> FsResult<()>,
    ) -> FsResult<(u64, u64)> {
        let want = want.min(claim.remaining());
        if want == 0 {
            return Err(FsError::Invalid("allocation of nothing".into()));
        }
        let ngroups = self.groups() as u64;
        let goal = if goal < self.items { goal } else { 0 };
        let g0 = goal / self.per_group;
        let goal_local = goal % self.per_group;
        for step in 0..=ngroups {
            let g = (g0 + step) % ngroups;
            let valid = valid_bits(self.items, self.per_group, g) as u64;
            let (from, to) = match step {
                0 => (goal_local, valid),
                s if s == ngroups => (0, goal_local.min(valid)),
                _ => (0, valid),
            };
            if from >= to {
                continue;
            }
            let mut group = self.shared.groups[g as usize].lock();
            if group.clear == group.pending_count {
                continue;
            }
            let buf = read_meta(&self.cache, self.start + g, self.kind, None)?;
            let base = g * self.per_group;
            let found = {
                let data = buf.data();
                find_run(payload(&data), &group, base, from, to, want)
            };
            let Some((first_local, len)) = found else {
                continue;
            };
            prepare(base + first_local, len)?;
            {
                let mut w = tx.write(&buf);
                bitmap::set_range(payload_mut(&mut w), first_local as usize, len as usize)?;
            }
            group.clear -= len;
            claim.consume(len);
            return Ok((base + first_local, len));
        }
        Err(FsError::Corrupt(format!(
            "{:?}: the free counts promise {} items but no clear bit was found",
            self.kind,
            claim.remaining()
        )))
    }

    /// Clears the bits of `first .. first + count` in `tx`; the items become
    /// allocatable once `tx` is durable. Freeing a clear bit is corruption
    /// (and changes nothing).
    pub fn free(&self, tx: &TxHandle<'_>, first: u64, count: u64) -> FsResult<()> {
        self.clear_bits(tx, first, count, true)
    }

    /// Clears the bits of items allocated in the running transaction and
    /// never published (an operation that failed half-way): they are
    /// allocatable at once.
    pub fn unalloc(&self, tx: &TxHandle<'_>, first: u64, count: u64) -> FsResult<()> {
        self.clear_bits(tx, first, count, false)
    }

    fn clear_bits(&self, tx: &TxHandle<'_>, first: u64, count: u64, pending: bool) -> FsResult<()> {
        let end = first
            .checked_add(count)
            .filter(|&e| e <= self.items)
            .ok_or_else(|| {
                FsError::Corrupt(format!(
                    "{:?}: freeing items {first}+{count} beyond the {} items",
                    self.kind, self.items
                ))
            })?;
        let mut item = first;
        while item < end {
            let g = item / self.per_group;
            let base = g * self.per_group;
            let piece_end = end.min(base + self.per_group);
            let (lo, n) = (item - base, piece_end - item);
            let mut group = self.shared.groups[g as usize].lock();
            let buf = read_meta(&self.cache, self.start + g, self.kind, None)?;
            {
                let data = buf.data();
                let bits = payload(&data);
                for bit in lo..lo + n {
                    if !bitmap::test_bit(bits, bit as usize)? {
                        return Err(FsError::Corrupt(format!(
                            "{:?}: item {} freed but not in use",
                            self.kind,
                            base + bit
                        )));
                    }
                }
            }
            {
                let mut w = tx.write(&buf);
                let bits = payload_mut(&mut w);
                for bit in lo..lo + n {
                    bitmap::clear_bit(bits, bit as usize)?;
                }
            }
            group.clear += n;
            if pending {
                group.pending.insert(item, n);
                group.pending_count += n;
                let shared = Arc::clone(&self.shared);
                let (gi, key) = (g as usize, item);
                tx.after_commit(Box::new(move || {
                    let mut group = shared.groups[gi].lock();
                    if let Some(n) = group.pending.remove(&key) {
                        group.pending_count -= n;
                        shared.available.fetch_add(n, Ordering::AcqRel);
                    }
                }));
            } else {
                self.shared.available.fetch_add(n, Ordering::AcqRel);
            }
            drop(group);
            item = piece_end;
        }
        Ok(())
    }

    /// Whether `item`'s bit is set. Takes no group mutex (the caller may
    /// hold one): the answer is the bitmap block's content at the time.
    pub fn is_set(&self, item: u64) -> FsResult<bool> {
        if item >= self.items {
            return Err(FsError::Invalid(format!(
                "{:?}: item {item} beyond the {} items",
                self.kind, self.items
            )));
        }
        let g = item / self.per_group;
        let buf = read_meta(&self.cache, self.start + g, self.kind, None)?;
        let data = buf.data();
        Ok(bitmap::test_bit(
            payload(&data),
            (item % self.per_group) as usize,
        )?)
    }
}

/// Valid bits of group `g`.
fn valid_bits(items: u64, per_group: u64, g: u64) -> usize {
    items
        .saturating_sub(g.saturating_mul(per_group))
        .min(per_group) as usize
}

/// The first clear bit in `from..to`.
fn next_clear(bits: &[u8], from: u64, to: u64) -> Option<u64> {
    let to = to.min(bits.len() as u64 * 8);
    let mut bit = from;
    while bit < to {
        let byte = bits[(bit / 8) as usize];
        if bit % 8 == 0 && byte == 0xff {
            bit += 8;
            continue;
        }
        if bit % 64 == 0 && to - bit >= 64 {
            let at = (bit / 8) as usize;
            if bits[at..at + 8].iter().all(|&b| b == 0xff) {
                bit += 64;
                continue;
            }
        }
        if byte & (1 << (bit % 8)) == 0 {
            return Some(bit);
        }
        bit += 1;
    }
    None
}

/// The first run (local bit, length ≤ want) of clear, non-pending bits in
/// `from..to` of a group whose first item is `base`.
fn find_run(
    bits: &[u8],
    group: &Group,
    base: u64,
    from: u64,
    to: u64,
    want: u64,
) -> Option<(u64, u64)> {
    let mut pos = from;
    while pos < to {
        let start = next_clear(bits, pos, to)?;
        if let Some((_, pend_end)) = group.pending_at(base + start) {
            pos = pend_end - base;
            continue;
        }
        let limit = group
            .next_pending_after(base + start)
            .map_or(to, |p| (p - base).min(to))
            .min(start + want);
        let mut end = start + 1;
        while end < limit && bits[(end / 8) as usize] & (1 << (end % 8)) == 0 {
            end += 1;
        }
        return Some((start, end - start));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_skip_set_and_pending_bits() {
        let mut bits = vec![0u8; 16];
        bitmap::set_range(&mut bits, 0, 10).unwrap();
        bitmap::set_range(&mut bits, 20, 5).unwrap();
        let mut g = Group::default();
        assert_eq!(find_run(&bits, &g, 0, 0, 128, 100), Some((10, 10)));
        assert_eq!(find_run(&bits, &g, 0, 0, 128, 3), Some((10, 3)));
        g.pending.insert(1000 + 10, 4);
        assert_eq!(find_run(&bits, &g, 1000, 0, 128, 100), Some((14, 6)));
        g.pending.insert(1000 + 16, 1);
        assert_eq!(find_run(&bits, &g, 1000, 0, 128, 100), Some((14, 2)));
        assert_eq!(find_run(&bits, &g, 1000, 17, 19, 100), Some((17, 2)));
        assert_eq!(find_run(&bits, &g, 1000, 20, 25, 100), None);
        assert_eq!(next_clear(&[0xff; 16], 0, 128), None);
        let mut b = [0xffu8; 16];
        b[9] = 0x7f;
        assert_eq!(next_clear(&b, 0, 128), Some(79));
        assert_eq!(next_clear(&b, 0, 79), None);
    }
}
