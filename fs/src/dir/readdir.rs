//! Listing a directory from a readdir offset.
//!
//! Offsets are keys (§8): the entry with key k is returned by a readdir
//! from any offset ≤ k, and the offset after it is k + 1. Offsets 0, 1 and
//! 2 (start, ".", "..") all mean "from the first name" here; "." and ".."
//! are the caller's. Because an offset names a point in key order, not a
//! position in a block, a listing continued after names were added or
//! removed returns every name present throughout exactly once, and never
//! one twice (keys only grow along the scan: an entry whose key is not
//! above the previous one, which only a corrupt tree could hold, is
//! skipped).

use super::path::descend;
use crate::error::FsResult;
use crate::format::dir::{MAX_KEY, MIN_KEY};
use crate::format::{DirEntry, DirRoot};
use keelfs_engine::bufio::Bufio;

/// Calls `emit(entry, offset_after_entry)` for each name with a key ≥
/// `offset`, in key order, until it returns `false` (the entry it was
/// given then counts as not taken: resume from the offset after the last
/// entry taken). Reads the path to the first leaf, then one block per
/// further leaf (plus nodes where the walk crosses into another subtree).
pub fn readdir(
    cache: &Bufio,
    root: &DirRoot,
    offset: u64,
    mut emit: impl FnMut(&DirEntry, u64) -> bool,
) -> FsResult<()> {
    let from = offset.max(MIN_KEY);
    if from > MAX_KEY {
        return Ok(());
    }
    let Some(mut path) = descend(cache, root, from)? else {
        return Ok(());
    };
    let mut pos = path.leaf.search(from).unwrap_or_else(|i| i);
    let mut last: Option<u64> = None;
    loop {
        for e in &path.leaf.entries[pos..] {
            if e.key < from || last.is_some_and(|k| e.key <= k) {
                continue;
            }
            last = Some(e.key);
            if !emit(e, e.key + 1) {
                return Ok(());
            }
        }
        if !path.advance(cache)? {
            return Ok(());
        }
        pos = 0;
    }
}
