//! Removing a name, and pointing an existing name at another inode (rename
//! over an existing target).
//!
//! Both find the name's entry by its collision range, change the leaf that
//! holds it and commit it: a leaf left empty is freed, one under 1/4 full
//! may merge with a sibling (the shape policy in the module doc).

use super::check_name;
use super::lookup::scan_collisions;
use super::path::Path;
use super::update::commit;
use crate::error::{corrupt, FsError, FsResult};
use crate::format::{DirEntry, DirRoot, FileType};
use crate::meta_tx::MetaTx;
use keelfs_engine::bufio::Bufio;

/// Removes `name`; returns the inode and type it named. `NotFound` if it
/// is not there.
pub fn remove(mt: &MetaTx<'_, '_>, root: &mut DirRoot, name: &[u8]) -> FsResult<(u64, FileType)> {
    let (mut path, pos) = find_entry(mt.cache, root, name)?;
    let count = root
        .entry_count
        .checked_sub(1)
        .ok_or_else(|| corrupt!("directory with an entry has an entry count of 0"))?;
    let old = path.leaf.entries.remove(pos);
    commit(mt, root, path)?;
    root.entry_count = count;
    Ok((old.inode, old.file_type))
}

/// Points the existing `name` at (`inode`, `file_type`); returns what it
/// named before. `NotFound` if it is not there. The key (and so the readdir
/// offset) of the name stays the same.
pub fn replace(
    mt: &MetaTx<'_, '_>,
    root: &mut DirRoot,
    name: &[u8],
    inode: u64,
    file_type: FileType,
) -> FsResult<(u64, FileType)> {
    if inode == 0 {
        return Err(FsError::Invalid("directory entry for inode 0".into()));
    }
    let (mut path, pos) = find_entry(mt.cache, root, name)?;
    let entry: &mut DirEntry = &mut path.leaf.entries[pos];
    let old = (entry.inode, entry.file_type);
    entry.inode = inode;
    entry.file_type = file_type;
    commit(mt, root, path)?;
    Ok(old)
}

/// The path to the leaf holding `name`, and the entry's index in it.
fn find_entry(cache: &Bufio, root: &DirRoot, name: &[u8]) -> FsResult<(Path, usize)> {
    check_name(name)?;
    let scan = scan_collisions(cache, root, name, true)?;
    let ((_, pos), path) = scan.found.zip(scan.path).ok_or(FsError::NotFound)?;
    Ok((path, pos))
}
