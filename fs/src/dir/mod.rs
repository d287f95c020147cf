//! Directories: the B+tree of docs/format.md §8 over the codecs of
//! `format::dir`.
//!
//! A directory is a tree of metadata blocks keyed by
//! `key = key_base(name) | c`: leaves (kind 10) hold the names sorted by
//! key, nodes (kind 11) hold `(smallest key below, child, child's
//! generation)` entries. The root (block, generation, depth, entry count)
//! lives in the directory inode's data area as a [`DirRoot`]: every
//! operation here takes the `DirRoot` by reference and changes it in
//! memory; **the caller stores the inode afterwards** (in the same
//! transaction), and adjusts the inode's "blocks held" by
//! [`MetaTx::blocks_delta`].
//!
//! # Generations
//!
//! A parent records the generation of each child (§2: a leg that lost a
//! write still has a block with a valid crc but an older generation), and
//! children are read with `read_expect(block, generation)`; the generation
//! in a cached block's header is checked against the parent's record too.
//! Writing a block through the journal sets its generation to the
//! transaction's sequence, so **after changing a block, the entry pointing
//! at it must be updated, and the block holding that entry is changed in
//! turn, up to the root in the inode.** Every change therefore rewrites the
//! path from the changed leaf to the root ([`update`]); the walk up stops
//! early where a parent already records the new (block, generation) — a
//! second change of the same leaf in the same transaction writes the leaf
//! only.
//!
//! For the same reason the leaves' "next leaf" pointers are not kept: a
//! generation-checked forward chain would have to be rewritten from the
//! first leaf on whenever a leaf changes (each rewrite changes the
//! generation the previous leaf records), O(n) per update. This code writes
//! every leaf with next leaf 0 and never follows the field; readdir walks
//! the nodes instead (the cursor keeps the path, so moving to the next leaf
//! reads one block, occasionally a node too).
//!
//! # Keys, collisions, offsets
//!
//! Names whose bases collide take the smallest free counter `c` of their
//! base; a 257th name with one base is refused (`NoSpace`). The names of one
//! base occupy the key range `base ..= base | 0xff`, which may straddle a
//! leaf boundary: lookups scan that range and go on to the next leaf only
//! when its smallest key (the separator in the parent) is inside the range.
//! Readdir offsets are keys: the offset after an entry is `key + 1` (0, 1
//! and 2 — the start, "." and ".." — are the caller's), so an offset stays
//! valid whatever is added or removed between calls: every entry present
//! both before and after is returned exactly once, and resuming at an
//! offset whose entry was removed simply continues with the next key.
//!
//! # Shape policy
//!
//! * A leaf that overflows is split in two at the byte midpoint; a node that
//!   overflows is split in half; a root that splits gets a new root above
//!   it (depth + 1, at most 8).
//! * A leaf left empty by a removal is freed and its entry removed from its
//!   parent; a node left empty likewise. A leaf under 1/4 full (bytes) is
//!   merged with a sibling in the same parent when the two fit in 3/4 of a
//!   block; a node under 1/4 of its capacity likewise (the gap between 1/4
//!   and 3/4 keeps a merge from being split again by the next insert). A
//!   root node left with a single child is freed and the child becomes the
//!   root (depth − 1). An empty directory has no block at all.
//! * So every leaf but the root is at least 1/4 full, or has no sibling it
//!   fits with; the depth stays O(log n) and a lookup reads depth + 1 blocks
//!   (a few more only in the rare case of a collision range straddling
//!   leaves). With 4 KiB blocks (168 entries per node, ~100–200 names per
//!   leaf) a million names need depth 2: 3 block reads.
//!
//! # Relies on
//!
//! The caller holds the directory inode's lock: exclusive for
//! [`insert`], [`remove`], [`replace`] and [`destroy`], at least shared for
//! [`lookup`], [`readdir`] and [`is_empty`]; nothing here locks. Lookup
//! and readdir take no journal handle (they change nothing).

mod destroy;
mod insert;
mod lookup;
mod path;
mod readdir;
mod remove;
mod tree;
mod update;
mod verify;

pub use destroy::destroy;
pub use insert::{insert, insert_with};
pub use lookup::lookup;
pub use readdir::readdir;
pub use remove::{remove, replace};
pub use verify::{verify, TreeStats};

use crate::error::{FsError, FsResult};
use crate::format::dir::{validate_name, NAME_MAX};
use crate::format::DirRoot;
use keelfs_engine::bufio::Bufio;

pub use crate::format::dir::{DOTDOT_OFFSET, DOT_OFFSET};
pub use crate::meta_tx::MetaTx;

/// Checks a name given by a caller: `NameTooLong` over 255 bytes,
/// `Invalid` if empty, "." or "..", or containing '/' or NUL.
pub fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    validate_name(name).map_err(|_| {
        FsError::Invalid(format!(
            "directory entry name {:?}: empty, \".\", \"..\", or contains '/' or NUL",
            String::from_utf8_lossy(name)
        ))
    })
}

/// Names in the directory ("." and ".." not counted).
pub fn count(root: &DirRoot) -> u64 {
    root.entry_count
}

/// Whether the directory holds no name. Reads at most the root block, to
/// check the count against it (a count of 0 over a non-empty root is
/// corruption, not emptiness).
pub fn is_empty(cache: &Bufio, root: &DirRoot) -> FsResult<bool> {
    let Some(at) = root.root else {
        return Ok(true);
    };
    let empty = match tree::load(cache, at, root.depth)? {
        tree::Block::Leaf(leaf) => leaf.entries.is_empty(),
        tree::Block::Node(_) => false,
    };
    if empty != (root.entry_count == 0) {
        return Err(crate::error::corrupt!(
            "directory root block {} disagrees with the entry count {}",
            at.block,
            root.entry_count
        ));
    }
    Ok(empty)
}
