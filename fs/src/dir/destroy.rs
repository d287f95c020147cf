//! Freeing the blocks of an empty directory (rmdir, or the last close of a
//! removed directory).

use super::verify::blocks_bottom_up;
use crate::error::{FsError, FsResult};
use crate::format::DirRoot;
use crate::meta_tx::MetaTx;

/// Frees every block of the directory and leaves `root` empty. `NotEmpty`
/// (and nothing freed) if it still holds a name. Reads every block first
/// (an empty directory has at most a root leaf, but an older writer may
/// have left empty blocks behind).
pub fn destroy(mt: &MetaTx<'_, '_>, root: &mut DirRoot) -> FsResult<()> {
    if root.entry_count != 0 {
        return Err(FsError::NotEmpty);
    }
    let blocks = blocks_bottom_up(mt.cache, root)?;
    if blocks.iter().any(|&(_, names)| names > 0) {
        return Err(FsError::NotEmpty);
    }
    for (at, _) in blocks {
        mt.free_block(at.block)?;
    }
    *root = DirRoot::empty();
    Ok(())
}
