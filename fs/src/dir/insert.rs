//! Adding a name.
//!
//! The collision range of the name is scanned first (`Exists` if the name
//! is there; otherwise the smallest free counter gives the key), then the
//! entry goes into the leaf whose range holds the key and the leaf is
//! committed (split if it overflows, the change carried up to the root).

use super::check_name;
use super::lookup::scan_collisions;
use super::path::descend;
use super::tree::new_leaf;
use super::update::{commit, prepare_insert};
use crate::error::{corrupt, FsError, FsResult};
use crate::format::dir::{key_base, leaf_entry_size};
use crate::format::{DirEntry, DirLeaf, DirRoot, FileType};
use crate::meta_tx::MetaTx;

/// Adds `name` → (`inode`, `file_type`). Returns the entry's key (its
/// readdir offset is key + 1).
///
/// Errors: `NameTooLong` / `Invalid` for a name no directory can hold,
/// `Invalid` for inode 0, `Exists` if the name is there, `NoSpace` if 256
/// names already share the name's hash base (or the tree is at its
/// maximum depth and full), `NoSpace` from the allocator, and I/O errors.
/// Every block the insert needs is allocated before anything is written,
/// so on an error other than an I/O error in the middle of writing, nothing
/// has changed.
pub fn insert(
    mt: &MetaTx<'_, '_>,
    root: &mut DirRoot,
    name: &[u8],
    inode: u64,
    file_type: FileType,
) -> FsResult<u64> {
    insert_with(mt, root, name, || Ok((inode, file_type, ()))).map(|(key, ())| key)
}

/// As [`insert`], for a name whose inode is made only once the name is
/// known to be free and the tree has its blocks: `make` runs after the
/// checks and the block reservation, before the tree changes, and returns
/// the inode, its type and anything else the caller wants back. If `make`
/// fails, nothing is changed. If it succeeds, only an I/O error can still
/// fail the insert (the caller then undoes what `make` did).
pub fn insert_with<T>(
    mt: &MetaTx<'_, '_>,
    root: &mut DirRoot,
    name: &[u8],
    make: impl FnOnce() -> FsResult<(u64, FileType, T)>,
) -> FsResult<(u64, T)> {
    check_name(name)?;
    let collisions = scan_collisions(mt.cache, root, name, false)?;
    if collisions.found.is_some() {
        return Err(FsError::Exists);
    }
    let Some(c) = collisions.first_free() else {
        return Err(FsError::NoSpace);
    };
    let key = key_base(name) | u64::from(c);
    let count = root
        .entry_count
        .checked_add(1)
        .ok_or_else(|| corrupt!("directory entry count overflows"))?;
    let entry_size = leaf_entry_size(name.len());
    // The scan usually ends in the leaf the key goes to (its range rarely
    // straddles leaves); otherwise descend again.
    let path = match collisions.path {
        Some(path) if path.leaf_holds(key) => Some(path),
        _ => descend(mt.cache, root, key)?,
    };
    let pos = match &path {
        None => 0,
        Some(path) => match path.leaf.search(key) {
            Err(pos) => pos,
            Ok(_) => {
                return Err(corrupt!(
                    "directory key {key:#x} is in use but was not in its collision range"
                ))
            }
        },
    };
    match &path {
        None => mt.reserve(1, 0)?,
        Some(path) => prepare_insert(mt, root, path, entry_size)?,
    }
    let made = make().and_then(|(inode, file_type, extra)| {
        if inode == 0 {
            return Err(FsError::Invalid("directory entry for inode 0".into()));
        }
        Ok((inode, file_type, extra))
    });
    let (inode, file_type, extra) = match made {
        Ok(made) => made,
        Err(e) => {
            mt.release_reserve()?;
            return Err(e);
        }
    };
    let entry = DirEntry {
        key,
        inode,
        file_type,
        name: name.to_vec(),
    };
    match path {
        None => {
            let leaf = DirLeaf {
                next: None,
                entries: vec![entry],
            };
            root.root = Some(new_leaf(mt, 0, &leaf)?);
            root.depth = 0;
        }
        Some(mut path) => {
            path.leaf.entries.insert(pos, entry);
            commit(mt, root, path)?;
        }
    }
    mt.release_reserve()?;
    root.entry_count = count;
    Ok((key, extra))
}
