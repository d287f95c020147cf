//! A regular file's space: truncate, fallocate (allocate, keep size, punch
//! hole, zero range) and SEEK_DATA / SEEK_HOLE.
//!
//! What it promises:
//!
//! * **truncate** to a smaller size frees every block wholly past the new
//!   size (preallocated blocks past the old size included) and leaves the
//!   rest of the new last block as it was: no data is written, so a crash
//!   before the transaction commits finds the old size over the old bytes
//!   (zeroing them in place before the commit would destroy durable data).
//!   Bytes past the size are never read, and every extension zeroes them
//!   (next point). To a larger size it extends the file (a hole). An
//!   inline file stays inline while the new size is ≤ 128 bytes. The
//!   blocks are freed from the end in steps of [`TAIL_STEP`] extents, one
//!   transaction each (the first one sets the size); a crash in between
//!   leaves blocks past the size, which is legal (preallocation) and freed
//!   by the next truncate, or by an extension over them.
//! * **Zero on extension** ([`Fs::clear_past_eof`]): whatever makes a file
//!   larger — a write past the end, truncate up, fallocate without
//!   `KEEP_SIZE` — first makes every byte between the old and the new size
//!   read as zero, in the transaction that sets the new size: the old last
//!   block's bytes from the old size up to the new size are zeroed in place
//!   (an overwrite, with its intents, like any write), and written blocks
//!   wholly between the old and the new size (left by an interrupted
//!   shrink) are freed.
//!   No byte at or past the new size is written: until the transaction
//!   commits, a crash may show the zeros (the extension's own content,
//!   landed early as an overwrite's may) but never destroys a byte the
//!   committed size still covers. So no stale byte is ever read back,
//!   whatever shrinks and crashes came before, and no crash state holds a
//!   byte that is neither the committed one nor the new one.
//! * **fallocate** mode 0 allocates unwritten extents over the holes of the
//!   range (they read as zeros) and extends the size; `KEEP_SIZE` leaves
//!   the size; `PUNCH_HOLE` (with `KEEP_SIZE`, as Linux requires) frees the
//!   whole blocks of the range and zeroes the partial ones; `ZERO_RANGE`
//!   does the same and then allocates unwritten extents over the whole
//!   blocks, extending the size unless `KEEP_SIZE`. Other modes
//!   (collapse, insert, unshare) are `NotSupported`. Running out of space
//!   part-way leaves the blocks allocated so far (as Linux filesystems do)
//!   and fails with `NoSpace`; the tree stays consistent.
//! * **SEEK_DATA / SEEK_HOLE**: unwritten extents count as holes (as on
//!   ext4 and xfs without dirty pages); every file has a hole at its end;
//!   an offset at or past the size is `NoSuchOffset` (ENXIO).
//!
//! What it relies on: the caller holds the inode's lock (exclusive for
//! truncate and fallocate, with the journal handle taken first; shared for
//! seeking); the extent tree, allocator and the overwrite path of
//! `file.rs`. Timestamps and storing the inode are the caller's.

use super::extent::{self, PieceKind, TreeWriter};
use super::file::MAX_FILE_SIZE;
use super::inode::InodeState;
use super::Fs;
use crate::error::{FsError, FsResult};
use crate::format::inode::INLINE_MAX;
use crate::format::{DataArea, ExtentLeaf, FileType};
use crate::journal::TxHandle;

/// Extents freed per transaction when a file shrinks or is freed: each
/// step touches one extent leaf and at most this many bitmap blocks, so a
/// file of any fragmentation is freed in transactions the journal can take.
pub const TAIL_STEP: usize = 64;

/// `fallocate` mode bits (Linux `FALLOC_FL_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FallocMode(pub i32);

impl FallocMode {
    pub const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
    pub const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
    pub const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;

    fn has(self, bit: i32) -> bool {
        self.0 & bit != 0
    }

    /// Checks the mode and the range; returns the range's end.
    pub fn check(self, offset: u64, len: u64) -> FsResult<u64> {
        let known = Self::KEEP_SIZE | Self::PUNCH_HOLE | Self::ZERO_RANGE;
        if self.0 & !known != 0 {
            return Err(FsError::NotSupported);
        }
        let (punch, zero) = (self.has(Self::PUNCH_HOLE), self.has(Self::ZERO_RANGE));
        if punch && !self.has(Self::KEEP_SIZE) {
            return Err(FsError::NotSupported);
        }
        if punch && zero {
            return Err(FsError::Invalid(
                "punch hole and zero range together".into(),
            ));
        }
        if len == 0 {
            return Err(FsError::Invalid("fallocate of 0 bytes".into()));
        }
        offset
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::TooBig)
    }
}

/// SEEK_DATA or SEEK_HOLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekKind {
    Data,
    Hole,
}

fn check_regular(state: &InodeState) -> FsResult<()> {
    state.check_live()?;
    match state.file_type {
        FileType::Regular => Ok(()),
        FileType::Directory => Err(FsError::IsDir),
        _ => Err(FsError::Invalid("not a regular file".into())),
    }
}

impl Fs {
    /// Sets the size of a regular file (see the module docs). Does not
    /// touch timestamps or store the inode. Frees at most one step's worth
    /// ([`TAIL_STEP`] extents) of the blocks past the new size; returns
    /// whether more remain, for [`Fs::free_tail`] in later transactions
    /// (blocks past the size are legal in between: preallocation).
    pub(crate) fn truncate_file(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        size: u64,
    ) -> FsResult<bool> {
        check_regular(state)?;
        if size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        if let DataArea::Inline(bytes) = &mut state.inode.data {
            if size <= INLINE_MAX as u64 {
                bytes.resize(size as usize, 0);
                state.inode.size = size;
                return Ok(false);
            }
            self.make_extents(tx, state)?;
        }
        let bs = self.block_size();
        let mut more = false;
        if size <= state.size {
            // Shrinking (or truncating to the size) also drops blocks
            // preallocated past the size. The new last block's bytes past
            // the size stay as they are (see the module docs).
            more = self.free_tail(tx, state, size.div_ceil(bs))?;
        } else {
            self.clear_past_eof(tx, state, size, u64::MAX)?;
        }
        state.size = size;
        Ok(more)
    }

    /// Frees one step (at most [`TAIL_STEP`] extents, from the end) of
    /// what the file maps at or after logical block `from`; returns
    /// whether more may remain.
    pub(crate) fn free_tail(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        from: u64,
    ) -> FsResult<bool> {
        let DataArea::Extents(root) = &state.data else {
            return Ok(false);
        };
        let Some(cut) = extent::tail_cut(&self.cache, root, from, TAIL_STEP)? else {
            return Ok(false);
        };
        self.free_range(tx, state, cut, u64::MAX)?;
        Ok(cut > from)
    }

    /// Removes logical blocks `start .. end` from the tree and frees them.
    fn free_range(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        start: u64,
        end: u64,
    ) -> FsResult<()> {
        let DataArea::Extents(root) = &mut state.inode.data else {
            return Ok(());
        };
        let mut tree = TreeWriter::new(&self.cache, &self.blocks, tx, 0);
        let result = tree.remove(root, start, end);
        state.inode.blocks = state
            .inode
            .blocks
            .saturating_add_signed(tree.node_blocks_delta());
        for e in result? {
            self.blocks
                .free_blocks_in(tx, e.physical, u64::from(e.length))?;
            state.inode.blocks = state.inode.blocks.saturating_sub(u64::from(e.length));
        }
        Ok(())
    }

    /// Before the size grows from `state.size` to `new_size`: makes every
    /// byte in between read as zero (see the module docs). Logical blocks
    /// from `rewritten_from` on are the caller's: it rewrites them whole and
    /// zeroes what it reads past the old size (the write path); the others
    /// pass `u64::MAX`. Does not change the size.
    pub(crate) fn clear_past_eof(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        new_size: u64,
        rewritten_from: u64,
    ) -> FsResult<()> {
        let old = state.size;
        if new_size <= old || !matches!(state.data, DataArea::Extents(_)) {
            return Ok(());
        }
        let bs = self.block_size();
        let last = old / bs;
        if old % bs != 0 && last < rewritten_from {
            // Up to the new size only: bytes past it may still be durable
            // data (a shrink in this same, uncommitted transaction).
            let to = (new_size - last * bs).min(bs);
            self.zero_in_block(tx, state, last, (old % bs) as usize, to as usize)?;
        }
        let (first, end) = (old.div_ceil(bs), new_size.div_ceil(bs).min(rewritten_from));
        if first >= end {
            return Ok(());
        }
        let DataArea::Extents(root) = &state.data else {
            return Ok(());
        };
        if extent::last_end(&self.cache, root)? <= first {
            return Ok(());
        }
        let stale: Vec<(u64, u64)> = extent::map(&self.cache, root, first, end)?
            .into_iter()
            .filter(|p| matches!(p.kind, PieceKind::Data { .. }))
            .map(|p| (p.logical, p.end()))
            .collect();
        for (start, stop) in stale {
            self.free_range(tx, state, start, stop)?;
        }
        Ok(())
    }

    /// Zeroes bytes `from .. to` of logical block `block` (in place, with
    /// its intents) if it holds written data and they are not zero already
    /// (holes and unwritten blocks read as zeros).
    fn zero_in_block(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        block: u64,
        from: usize,
        to: usize,
    ) -> FsResult<()> {
        let DataArea::Extents(root) = &state.data else {
            return Ok(());
        };
        let Some(e) = extent::lookup(&self.cache, root, block)? else {
            return Ok(());
        };
        if e.unwritten {
            return Ok(());
        }
        let mut bytes = self.read_blocks(root, block, 1)?;
        if bytes[from..to].iter().all(|&b| b == 0) {
            return Ok(());
        }
        bytes[from..to].fill(0);
        self.overwrite(tx, e.physical + (block - e.logical), &bytes)
    }

    /// fallocate (see the module docs). Does not touch timestamps or store
    /// the inode.
    pub(crate) fn fallocate_file(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        offset: u64,
        len: u64,
        mode: FallocMode,
    ) -> FsResult<()> {
        check_regular(state)?;
        let end = mode.check(offset, len)?;
        let punch = mode.has(FallocMode::PUNCH_HOLE);
        let zero = mode.has(FallocMode::ZERO_RANGE);
        let keep = mode.has(FallocMode::KEEP_SIZE);
        if let DataArea::Inline(bytes) = &mut state.inode.data {
            let new_size = if keep {
                state.inode.size
            } else {
                state.inode.size.max(end)
            };
            // Zeroing needs only the bytes; allocating a range that reaches
            // past the inline area needs real blocks.
            let fits = if punch || zero {
                new_size
            } else {
                end.max(new_size)
            };
            if fits <= INLINE_MAX as u64 {
                if punch || zero {
                    let to = (end as usize).min(bytes.len());
                    if (offset as usize) < to {
                        bytes[offset as usize..to].fill(0);
                    }
                }
                bytes.resize(new_size as usize, 0);
                state.inode.size = new_size;
                return Ok(());
            }
            self.make_extents(tx, state)?;
        }
        if !keep {
            self.clear_past_eof(tx, state, end, u64::MAX)?;
        }
        let bs = self.block_size();
        if punch || zero {
            let (full0, full1) = (offset.div_ceil(bs), end / bs);
            let (first, last) = (offset / bs, (end - 1) / bs);
            if full0 < full1 {
                self.free_range(tx, state, full0, full1)?;
            }
            if first == last && (offset % bs != 0 || end % bs != 0) {
                let to = if end % bs == 0 { bs } else { end % bs };
                self.zero_in_block(tx, state, first, (offset % bs) as usize, to as usize)?;
            } else {
                if offset % bs != 0 {
                    self.zero_in_block(tx, state, first, (offset % bs) as usize, bs as usize)?;
                }
                if end % bs != 0 {
                    self.zero_in_block(tx, state, last, 0, (end % bs) as usize)?;
                }
            }
            if zero && full0 < full1 {
                self.allocate_unwritten(tx, state, full0, full1)?;
            }
        } else {
            self.allocate_unwritten(tx, state, offset / bs, end.div_ceil(bs))?;
        }
        if !keep {
            state.size = state.size.max(end);
        }
        Ok(())
    }

    /// Allocates unwritten extents over the holes of logical blocks
    /// `start .. end`.
    fn allocate_unwritten(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        start: u64,
        end: u64,
    ) -> FsResult<()> {
        let ino = state.ino();
        let DataArea::Extents(root) = &state.data else {
            return Ok(());
        };
        let pieces = extent::map(&self.cache, root, start, end)?;
        let mut goal = self.goal_after(root, start, ino)?;
        for piece in pieces {
            if piece.kind != PieceKind::Hole {
                if let Some(p) = piece.physical_of(piece.end() - 1) {
                    goal = p + 1;
                }
                continue;
            }
            let mut k = 0;
            while k < piece.len {
                let want = (piece.len - k).min(u64::from(crate::format::extent::EXTENT_MAX_LEN));
                let (physical, got) = self.blocks.alloc_blocks(tx, goal, want)?;
                let leaf = ExtentLeaf {
                    logical: piece.logical + k,
                    length: got as u32,
                    unwritten: true,
                    physical,
                };
                if let Err(e) = self.publish_run(tx, state, leaf, None) {
                    let _ = self.blocks.unalloc_blocks(tx, physical, got);
                    return Err(e);
                }
                state.blocks += got;
                k += got;
                goal = physical + got;
            }
        }
        Ok(())
    }

    /// SEEK_DATA / SEEK_HOLE from `offset` (see the module docs).
    pub(crate) fn seek_file(
        &self,
        state: &InodeState,
        offset: u64,
        kind: SeekKind,
    ) -> FsResult<u64> {
        check_regular(state)?;
        let size = state.size;
        if offset >= size {
            return Err(FsError::NoSuchOffset);
        }
        let root = match &state.data {
            DataArea::Inline(_) => {
                return Ok(match kind {
                    SeekKind::Data => offset,
                    SeekKind::Hole => size,
                })
            }
            DataArea::Extents(root) => root,
            _ => {
                return Err(FsError::Corrupt(format!(
                    "inode {} has no extent tree",
                    state.ino()
                )))
            }
        };
        let bs = self.block_size();
        let mut pos = offset / bs;
        let last = size.div_ceil(bs);
        // Walk leaf by leaf: the number of steps is the number of leaves
        // passed, whatever the size of the holes.
        while pos < last {
            let bound = extent::find_leaf(&self.cache, root, pos)?
                .next_bound
                .map_or(last, |b| b.min(last))
                .max(pos + 1);
            for piece in extent::map(&self.cache, root, pos, bound)? {
                let is_data = matches!(piece.kind, PieceKind::Data { .. });
                if is_data == (kind == SeekKind::Data) {
                    let at = (piece.logical * bs).max(offset);
                    return match kind {
                        SeekKind::Data if at >= size => Err(FsError::NoSuchOffset),
                        SeekKind::Data => Ok(at),
                        SeekKind::Hole => Ok(at.min(size)),
                    };
                }
            }
            pos = bound;
        }
        match kind {
            SeekKind::Data => Err(FsError::NoSuchOffset),
            SeekKind::Hole => Ok(size),
        }
    }
}
