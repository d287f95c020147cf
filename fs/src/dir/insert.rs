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
use crate::format::dir::key_base;
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
    check_name(name)?;
    if inode == 0 {
        return Err(FsError::Invalid("directory entry for inode 0".into()));
    }
    let collisions = scan_collisions(mt.cache, root, name, false)?;
    if collisions.found.is_some() {
        return Err(FsError::Exists);
    }
    let Some(c) = collisions.first_free() else {
        return Err(FsError::NoSpace);
    };
    let entry = DirEntry {
        key: key_base(name) | u64::from(c),
        inode,
        file_type,
        name: name.to_vec(),
    };
    let key = entry.key;
    let count = root
        .entry_count
        .checked_add(1)
        .ok_or_else(|| corrupt!("directory entry count overflows"))?;
    // The scan usually ends in the leaf the key goes to (its range rarely
    // straddles leaves); otherwise descend again.
    let path = match collisions.path {
        Some(path) if path.leaf_holds(key) => Some(path),
        _ => descend(mt.cache, root, key)?,
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
            let pos = match path.leaf.search(key) {
                Err(pos) => pos,
                Ok(_) => {
                    return Err(corrupt!(
                        "directory key {key:#x} is in use but was not in its collision range"
                    ))
                }
            };
            prepare_insert(mt, root, &path, entry.size())?;
            path.leaf.entries.insert(pos, entry);
            commit(mt, root, path)?;
            mt.release_reserve()?;
        }
    }
    root.entry_count = count;
    Ok(key)
}
