//! Extended attributes (§9): an inode's chain of xattr blocks.
//!
//! Every block of the chain is claimed, checked on every leg against the
//! generation its predecessor (or the inode) records, and decoded; the
//! blob they hold together must decode. A chain that breaks anywhere (a
//! block with no good copy, a block claimed twice, a blob that does not
//! decode) loses the inode's xattrs: repair sets its xattr pointer to none,
//! and the blocks become free.

use crate::checker::Checker;
use crate::metadata::MetaRead;
use crate::report::Pass;
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::xattr::{decode_blob, decode_xattr_block};
use keelfs_fs::format::BlockRef;

impl Checker<'_> {
    /// Walks the xattr chain of inode `ino`, starting at `first`.
    pub fn walk_xattrs(&mut self, ino: u64, first: BlockRef) {
        let mut blob = Vec::new();
        let mut blocks = Vec::new();
        let mut next = Some(first);
        let mut problem = None;
        while let Some(r) = next {
            if !self.claim_meta(r.block, ino, "an xattr block", Pass::Links) {
                problem = Some(format!("block {} cannot be used", r.block));
                break;
            }
            let read = self.read_meta(
                r.block,
                BlockKind::Xattr,
                Some(r.generation),
                &|p| decode_xattr_block(p).map(|_| ()),
                &format!("xattr block of inode {ino}"),
            );
            let decoded = read.payload().and_then(|p| decode_xattr_block(p).ok());
            let Some((following, piece)) = decoded else {
                let why = match read {
                    MetaRead::Lost(why) => why,
                    _ => "never written".to_string(),
                };
                self.report.error(
                    Pass::MetadataTags,
                    true,
                    format!(
                        "inode {ino}: xattr block {} has no good copy ({why})",
                        r.block
                    ),
                );
                problem = Some(format!("block {} has no good copy", r.block));
                break;
            };
            blob.extend_from_slice(piece);
            blocks.push(r.block);
            next = following;
        }
        if problem.is_none() {
            if let Err(e) = decode_blob(&blob) {
                problem = Some(format!("they do not decode: {e}"));
            }
        }
        let Some(rec) = self.inodes.get_mut(&ino) else {
            return;
        };
        match problem {
            None => rec.xattr_blocks = blocks,
            Some(why) => {
                rec.inode.xattr = None;
                self.report.error(
                    Pass::Links,
                    true,
                    format!("inode {ino}: its extended attributes are lost ({why}): removed"),
                );
            }
        }
    }
}
