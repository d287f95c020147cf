//! Symlinks whose target does not fit in the inode (§5): one overflow
//! block (kind 13) holding the target.
//!
//! The block is claimed, checked on every leg against the generation the
//! inode records, and must hold exactly `size` bytes of target with zero
//! after them. A symlink whose target block has no good copy has lost its
//! target and is cleared (the entries naming it are dropped).

use crate::checker::Checker;
use crate::metadata::MetaRead;
use crate::report::Pass;
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::inode::decode_overflow;
use keelfs_fs::format::BlockRef;

impl Checker<'_> {
    /// Walks the overflow block of symlink `ino`.
    pub fn walk_overflow(&mut self, ino: u64, r: BlockRef) {
        let size = self.inodes.get(&ino).map_or(0, |rec| rec.inode.size);
        let problem = if !self.claim_meta(r.block, ino, "the symlink target block", Pass::Links) {
            Some(format!("block {} cannot be used", r.block))
        } else {
            match self.read_meta(
                r.block,
                BlockKind::Overflow,
                Some(r.generation),
                &|p| decode_overflow(p, size).map(|_| ()),
                &format!("symlink target block of inode {ino}"),
            ) {
                MetaRead::Good { .. } => None,
                MetaRead::Unwritten => Some("never written".to_string()),
                MetaRead::Lost(why) => Some(format!("no good copy: {why}")),
            }
        };
        match problem {
            None => {
                if let Some(rec) = self.inodes.get_mut(&ino) {
                    rec.overflow_block = Some(r.block);
                }
            }
            Some(why) => {
                self.report.error(
                    Pass::MetadataTags,
                    true,
                    format!(
                        "symlink {ino}: its target block {} is lost ({why}): the symlink is \
                         removed",
                        r.block
                    ),
                );
                self.clear_inode(ino);
            }
        }
    }
}
