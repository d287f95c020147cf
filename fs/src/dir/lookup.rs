//! Finding a name: the scan of its collision range `base ..= base | 0xff`.
//!
//! Every name with the same key base lives in that range, usually in one
//! leaf: the scan reads the path to the leaf holding `base` (depth + 1
//! blocks) and goes on to the next leaf only while the next leaf's smallest
//! key is still inside the range. Inserting needs the whole range (to find
//! the smallest free collision counter); looking up stops at the name.

use super::check_name;
use super::path::{descend, Path};
use crate::error::FsResult;
use crate::format::dir::key_base;
use crate::format::{DirEntry, DirRoot, FileType};
use keelfs_engine::bufio::Bufio;

/// The inode and type `name` refers to, `None` if it is not there.
/// `NameTooLong` / `Invalid` for names no directory can hold.
pub fn lookup(cache: &Bufio, root: &DirRoot, name: &[u8]) -> FsResult<Option<(u64, FileType)>> {
    check_name(name)?;
    let found = scan_collisions(cache, root, name, true)?.found;
    Ok(found.map(|(e, _)| (e.inode, e.file_type)))
}

/// What the collision range of a name holds.
pub(crate) struct Collisions {
    /// The entry with that very name, and its index in `path`'s leaf.
    pub found: Option<(DirEntry, usize)>,
    /// `used[c]`: some name has key `base | c`.
    pub used: [bool; 256],
    /// The path to the leaf the scan ended in (`None`: empty directory):
    /// the leaf of the found entry, else the leaf whose range holds every
    /// key of the range not yet used.
    pub path: Option<Path>,
}

impl Collisions {
    /// The smallest collision counter no name of the base uses.
    pub fn first_free(&self) -> Option<u8> {
        (0..=255u8).find(|&c| !self.used[usize::from(c)])
    }
}

/// Scans the collision range of `name` (already checked); with
/// `stop_at_name`, stops as soon as the name is found (`used` is then
/// incomplete).
pub(crate) fn scan_collisions(
    cache: &Bufio,
    root: &DirRoot,
    name: &[u8],
    stop_at_name: bool,
) -> FsResult<Collisions> {
    let base = key_base(name);
    let end = base | 0xff;
    let mut out = Collisions {
        found: None,
        used: [false; 256],
        path: descend(cache, root, base)?,
    };
    let Some(path) = out.path.as_mut() else {
        return Ok(out);
    };
    let mut pos = path.leaf.search(base).unwrap_or_else(|i| i);
    loop {
        for (i, e) in path.leaf.entries.iter().enumerate().skip(pos) {
            if e.key > end {
                return Ok(out);
            }
            out.used[usize::from(e.key as u8)] = true;
            if e.name == name {
                out.found = Some((e.clone(), i));
                if stop_at_name {
                    return Ok(out);
                }
            }
        }
        if out.found.is_some() || !next_leaf_in_range(cache, path, end)? {
            return Ok(out);
        }
        pos = 0;
    }
}

/// Moves `path` to the next leaf if that leaf can hold keys up to `end`.
fn next_leaf_in_range(cache: &Bufio, path: &mut Path, end: u64) -> FsResult<bool> {
    match path.next_leaf_min_key() {
        Some(min) if min <= end => path.advance(cache),
        _ => Ok(false),
    }
}
