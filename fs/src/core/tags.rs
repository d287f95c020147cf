//! The tag table (§7): where the tag of every data block is kept.
//!
//! What it promises:
//!
//! * [`TagTable::load`] returns the tags of a run of data blocks, reading
//!   each tag-table block once; a tag-table block that was never written
//!   (mkfs leaves them zeroed) holds no tag anybody stored, so asking it for
//!   the tags of written data is [`FsError::Corrupt`] (the data would fail
//!   its check anyway; this says why);
//! * [`TagTable::store`] records the tags of a run in the caller's
//!   transaction (`tx.write`), initialising a never-written tag-table block
//!   on first use. Unlike inode-table blocks, the bitmap cannot say whether
//!   a tag block should have been written (metadata blocks and unwritten
//!   extents are in use without a tag), so the rule is: a never-written tag
//!   block never held a tag, and initialising it loses nothing. The
//!   initialisation only sets the header kind (the zeroed payload is left
//!   as it is), is serialised by one mutex and re-checked under it, so it
//!   can never wipe a tag stored concurrently.
//!
//! What it relies on: the layout's `tag_location`, bufio and the journal.
//! LOCK ORDER: `init` after inode locks, before buffer guards.

use super::meta::{init_meta, payload, payload_mut, read_meta};
use crate::error::{FsError, FsResult};
use crate::format::header::BlockKind;
use crate::format::layout::TAG_SIZE;
use crate::format::tag_table::{read_tag, write_tag};
use crate::format::{Layout, Tag};
use crate::journal::TxHandle;
use keelfs_engine::bufio::{BufHandle, Bufio};
use keelfs_engine::EngineError;
use parking_lot::Mutex;
use std::sync::Arc;

/// The tag table of a mounted filesystem.
pub struct TagTable {
    cache: Arc<Bufio>,
    layout: Layout,
    init: Mutex<()>,
}

impl TagTable {
    pub fn new(cache: Arc<Bufio>, layout: &Layout) -> TagTable {
        TagTable {
            cache,
            layout: *layout,
            init: Mutex::new(()),
        }
    }

    /// Splits `first .. first + count` into pieces that share a tag-table
    /// block: (tag block, payload offset of the first tag, blocks).
    fn pieces(&self, first: u64, count: u64) -> FsResult<Vec<(u64, usize, u64)>> {
        let per_block = self.layout.tags_per_block();
        let mut out = Vec::new();
        let mut b = first;
        let end = first
            .checked_add(count)
            .ok_or_else(|| FsError::Corrupt(format!("data blocks {first}+{count} overflow")))?;
        while b < end {
            let at = self
                .layout
                .tag_location(b)
                .map_err(|e| FsError::Corrupt(format!("data block {b} has no tag slot: {e}")))?;
            let in_block = per_block - (at.offset / TAG_SIZE) as u64;
            let n = in_block.min(end - b);
            out.push((at.block, at.offset, n));
            b += n;
        }
        Ok(out)
    }

    /// The tags of data blocks `first .. first + count`.
    pub fn load(&self, first: u64, count: u64) -> FsResult<Vec<Tag>> {
        let mut tags = Vec::with_capacity(count as usize);
        for (block, offset, n) in self.pieces(first, count)? {
            let buf = match read_meta(&self.cache, block, BlockKind::TagTable, None) {
                Ok(buf) => buf,
                Err(FsError::Engine(EngineError::Unwritten { .. })) => {
                    return Err(FsError::Corrupt(format!(
                        "tag-table block {block} was never written, but data blocks it covers \
                         are in use (from block {first})"
                    )))
                }
                Err(e) => return Err(e),
            };
            let data = buf.data();
            let p = payload(&data);
            for i in 0..n as usize {
                tags.push(read_tag(p, offset + i * TAG_SIZE)?);
            }
        }
        Ok(tags)
    }

    /// Records `tags` for data blocks `first ..` in `tx`.
    pub fn store(&self, tx: &TxHandle<'_>, first: u64, tags: &[Tag]) -> FsResult<()> {
        let mut done = 0usize;
        for (block, offset, n) in self.pieces(first, tags.len() as u64)? {
            let buf = self.ready(tx, block)?;
            let mut w = tx.write(&buf);
            let p = payload_mut(&mut w);
            for (i, tag) in tags[done..done + n as usize].iter().enumerate() {
                write_tag(p, offset + i * TAG_SIZE, *tag)?;
            }
            done += n as usize;
        }
        Ok(())
    }

    /// Holds tag-table block `block`, initialising it if never written.
    fn ready(&self, tx: &TxHandle<'_>, block: u64) -> FsResult<BufHandle<'_>> {
        match read_meta(&self.cache, block, BlockKind::TagTable, None) {
            Err(FsError::Engine(EngineError::Unwritten { .. })) => {}
            other => return other,
        }
        let _init = self.init.lock();
        match read_meta(&self.cache, block, BlockKind::TagTable, None) {
            Err(FsError::Engine(EngineError::Unwritten { .. })) => {}
            other => return other,
        }
        init_meta(&self.cache, tx, block, BlockKind::TagTable)
    }
}
