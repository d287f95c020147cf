//! File data: reading and writing a regular file's bytes.
//!
//! What it promises:
//!
//! * **Reads** map the range through the extent tree and read each
//!   physically contiguous run of written blocks with ONE
//!   `volume.read_data` call, checked against the tags from the tag table;
//!   holes and unwritten extents read as zeros; inline files (§5, ≤ 128
//!   bytes) are served from the inode. Nothing past the size is returned.
//! * **Writes** keep a file inline while it stays ≤ 128 bytes and move it
//!   to extents (one block) when it grows past that. Holes get new blocks,
//!   allocated as contiguous runs from a goal just after the file's
//!   previous block, written with one `volume.write_data` per run, their
//!   tags stored in the tag table and their extents inserted in the same
//!   transaction. Unwritten extents are written and become written. Blocks
//!   already written are overwritten in place: partial blocks are read,
//!   modified and written back, and for every block whose current tag is
//!   already committed (its generation is not the running transaction's),
//!   `tx.data_intent(block, old tag, new tag)` is called before the write,
//!   so recovery can resolve a torn overwrite (blocks written in the
//!   running transaction need none: the transaction that would publish
//!   them is not durable yet).
//! * **Short writes, never half-done ones.** The range is processed piece
//!   by piece in logical order and each piece is complete (data, tags,
//!   extent) before the next starts. When space runs out, the blocks of the
//!   failed piece are given back and the write returns the bytes that were
//!   completed, or `NoSpace` when none were; the file's size covers exactly
//!   what was written.
//! * **Nothing stale past the old size shows.** A shrink leaves the bytes
//!   of its new last block past the size as they were (`file_space.rs`), so
//!   a write that extends the file zeroes what lies between the old size
//!   and its data: in the partial blocks it reads, those bytes are zeroed
//!   before the new data goes in (bytes past the write's end are left as
//!   they are); the old last block, if the write does not reach it, and
//!   written blocks wholly between the old size and the write are handled
//!   by [`Fs::clear_past_eof`], in the same transaction.
//!
//! What it relies on: the caller holds the inode's lock (shared to read,
//! exclusive to write, with the journal handle taken before it); the extent
//! tree, tag table, allocator and volume.

use std::borrow::Cow;

use super::extent::{self, Piece, PieceKind, TreeWriter};
use super::inode::InodeState;
use super::time;
use super::Fs;
use crate::error::{FsError, FsResult};
use crate::format::inode::INLINE_MAX;
use crate::format::{DataArea, ExtentLeaf, ExtentNode, FileType, Tag};
use crate::journal::TxHandle;

/// Logs the intents of one overwrite (block, old tag, new tag) before it
/// happens, as one batch. (The interim journal takes them one by one and
/// cannot fail; the redo journal's `log_intents` takes the batch and
/// returns once it is durable — this is the one place to switch.)
fn log_intents(tx: &TxHandle<'_>, intents: &[(u64, Tag, Tag)]) -> FsResult<()> {
    tx.log_intents(intents)
}

/// Whether a write sets mtime and ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteTimes {
    /// Set both to now (POSIX, for a write the filesystem sees happen).
    Stamp,
    /// Leave them: whoever sent the data owns the times and sets them
    /// itself (the kernel's writeback cache: its write(2) stamped them in
    /// the page cache and it sends them with setattr).
    Keep,
}

/// The largest file size (Linux's `loff_t` limit).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// A physically contiguous run of written blocks.
struct Run {
    logical: u64,
    physical: u64,
    len: u64,
}

/// The written runs of `pieces`, adjacent pieces merged when physically
/// contiguous.
fn data_runs(pieces: &[Piece]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for p in pieces {
        if let PieceKind::Data { physical } = p.kind {
            if let Some(last) = runs.last_mut() {
                if last.logical + last.len == p.logical && last.physical + last.len == physical {
                    last.len += p.len;
                    continue;
                }
            }
            runs.push(Run {
                logical: p.logical,
                physical,
                len: p.len,
            });
        }
    }
    runs
}

impl Fs {
    /// Reads blocks `first .. first + count` of the file whose extent tree
    /// is `root` into a zeroed buffer (holes and unwritten blocks stay
    /// zero).
    pub(crate) fn read_blocks(
        &self,
        root: &ExtentNode,
        first: u64,
        count: u64,
    ) -> FsResult<Vec<u8>> {
        self.read_file_blocks(None, root, first, count)
    }

    /// [`Fs::read_blocks`] of inode `ino`, which a heal's log line names
    /// with the file offset of the block.
    pub(crate) fn read_file_blocks(
        &self,
        ino: Option<u64>,
        root: &ExtentNode,
        first: u64,
        count: u64,
    ) -> FsResult<Vec<u8>> {
        let bs = self.block_size();
        let mut buf = vec![0u8; (count * bs) as usize];
        let pieces = extent::map(&self.cache, root, first, first + count)?;
        for run in data_runs(&pieces) {
            let tags = self.tags.load(run.physical, run.len)?;
            let at = ((run.logical - first) * bs) as usize;
            let len = (run.len * bs) as usize;
            let describe = |block: u64| {
                let offset = (run.logical + block - run.physical) * bs;
                match ino {
                    Some(ino) => format!("inode {ino} offset {offset}"),
                    None => format!("file data at offset {offset}"),
                }
            };
            self.volume
                .read_data_for(run.physical, &mut buf[at..at + len], &tags, &describe)?;
        }
        Ok(buf)
    }

    /// Up to `size` bytes of the file at `offset` (fewer at the end).
    pub(crate) fn read_file(
        &self,
        state: &InodeState,
        offset: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        state.check_live()?;
        match state.file_type {
            FileType::Regular => {}
            FileType::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid("not a regular file".into())),
        }
        if offset >= state.size || size == 0 {
            return Ok(Vec::new());
        }
        let end = state.size.min(offset.saturating_add(u64::from(size)));
        match &state.data {
            DataArea::Inline(bytes) => {
                let end = (end as usize).min(bytes.len());
                Ok(bytes.get(offset as usize..end).unwrap_or_default().to_vec())
            }
            DataArea::Extents(root) => {
                let bs = self.block_size();
                let first = offset / bs;
                let last = (end - 1) / bs;
                let mut buf =
                    self.read_file_blocks(Some(state.ino()), root, first, last - first + 1)?;
                let head = (offset - first * bs) as usize;
                buf.truncate(head + (end - offset) as usize);
                buf.drain(..head);
                Ok(buf)
            }
            _ => Err(FsError::Corrupt(format!(
                "regular file {} has no data area of a file",
                state.ino()
            ))),
        }
    }

    /// A goal for new blocks of inode `ino` when nothing precedes them:
    /// the start of a group chosen by the inode number, so files created
    /// together spread over groups instead of interleaving.
    pub(crate) fn file_goal(&self, ino: u64) -> u64 {
        let groups = self.blocks.groups() as u64;
        let group = (ino.saturating_sub(1)) % groups.max(1);
        let goal = group * self.blocks.blocks_per_group();
        goal.max(self.layout.data.start)
    }

    /// The physical block just after the one logical block `logical − 1`
    /// maps to, if it maps to one.
    pub(crate) fn goal_after(&self, root: &ExtentNode, logical: u64, ino: u64) -> FsResult<u64> {
        if logical > 0 {
            if let Some(e) = extent::lookup(&self.cache, root, logical - 1)? {
                return Ok(e.physical + (logical - e.logical));
            }
        }
        Ok(self.file_goal(ino))
    }

    /// Writes `data` at `offset`; returns the bytes written (all of them,
    /// or fewer when space ran out part-way). Updates size, block count,
    /// mtime and ctime (unless `times` is [`WriteTimes::Keep`]), and stores
    /// the inode once.
    pub(crate) fn write_file(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        offset: u64,
        data: &[u8],
        times: WriteTimes,
    ) -> FsResult<usize> {
        state.check_live()?;
        match state.file_type {
            FileType::Regular => {}
            FileType::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid("not a regular file".into())),
        }
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::TooBig)?;
        let result = match &mut state.inode.data {
            DataArea::Inline(bytes) if end <= INLINE_MAX as u64 => {
                let (offset, end) = (offset as usize, end as usize);
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[offset..end].copy_from_slice(data);
                state.inode.size = bytes.len() as u64;
                Ok(data.len())
            }
            DataArea::Inline(bytes) => {
                // Moving to extents: undone if not even the first piece
                // could be written, so a failed write leaves the file
                // inline as it was.
                let old = std::mem::take(bytes);
                state.inode.data = DataArea::Inline(old.clone());
                let result = self
                    .make_extents(tx, state)
                    .and_then(|()| self.write_extents(tx, state, offset, data));
                if result.is_err()
                    && matches!(&state.inode.data, DataArea::Extents(root) if root.is_empty())
                {
                    state.inode.data = DataArea::Inline(old);
                }
                result
            }
            _ => self.write_extents(tx, state, offset, data),
        };
        if let Ok(written) = result {
            state.size = state.size.max(offset + written as u64);
            if times == WriteTimes::Stamp {
                let now = time::now();
                state.mtime = now;
                state.ctime = now;
            }
        }
        // Stored even after an error: the extent root may have changed.
        self.store_inode(tx, state)?;
        result
    }

    /// Moves an inline file's bytes to an extent (no-op for a file that
    /// has extents already). On failure the file is as it was.
    pub(crate) fn make_extents(&self, tx: &TxHandle<'_>, state: &mut InodeState) -> FsResult<()> {
        let bytes = match &state.inode.data {
            DataArea::Inline(bytes) => bytes.clone(),
            DataArea::Extents(_) => return Ok(()),
            _ => {
                return Err(FsError::Corrupt(format!(
                    "regular file {} has no data area of a file",
                    state.ino()
                )))
            }
        };
        state.inode.data = DataArea::Extents(ExtentNode::empty());
        if bytes.is_empty() {
            return Ok(());
        }
        match self.write_extents(tx, state, 0, &bytes) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(_) => Err(FsError::NoSpace),
            Err(e) => {
                state.inode.data = DataArea::Inline(bytes);
                Err(e)
            }
        }
    }

    /// The extent root of a file that has one.
    fn root_mut(state: &mut InodeState) -> FsResult<&mut ExtentNode> {
        let ino = state.ino();
        match &mut state.inode.data {
            DataArea::Extents(root) => Ok(root),
            _ => Err(FsError::Corrupt(format!("inode {ino} has no extent tree"))),
        }
    }

    /// Writes `data` at `offset` of an extent file (size not updated):
    /// bytes written, or `NoSpace` if not one piece could be done.
    fn write_extents(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        offset: u64,
        data: &[u8],
    ) -> FsResult<usize> {
        let bs = self.block_size();
        let end = offset + data.len() as u64;
        let (b0, b1) = (offset / bs, end.div_ceil(bs));
        let old_size = state.size;
        self.clear_past_eof(tx, state, end, b0)?;
        let ino = state.ino();
        let pieces = extent::map(&self.cache, Self::root_mut(state)?, b0, b1)?;
        // The whole block range, old bytes where partial blocks keep some;
        // whole blocks are written from `data` itself (no copy).
        let buf: Cow<'_, [u8]> = if offset % bs == 0 && end % bs == 0 {
            Cow::Borrowed(data)
        } else {
            Cow::Owned(self.block_image(state, &pieces, offset, data, old_size)?)
        };

        let mut goal = self.goal_after(Self::root_mut(state)?, b0, ino)?;
        let mut done = b0;
        for piece in &pieces {
            let at = ((piece.logical - b0) * bs) as usize;
            let bytes = &buf[at..at + (piece.len * bs) as usize];
            let result = match piece.kind {
                PieceKind::Hole => {
                    self.fill_hole(tx, state, piece.logical, bytes, &mut goal, &mut done)
                }
                PieceKind::Unwritten { physical } => {
                    self.write_unwritten(tx, state, piece.logical, physical, bytes)
                }
                PieceKind::Data { physical } => self.overwrite(tx, physical, bytes),
            };
            match result {
                Ok(()) => {
                    done = piece.end();
                    if let Some(p) = piece.physical_of(piece.end() - 1) {
                        goal = p + 1;
                    }
                }
                Err(FsError::NoSpace) => break,
                Err(e) => return Err(e),
            }
        }
        let written = (done * bs).min(end).saturating_sub(offset);
        if written == 0 {
            return Err(FsError::NoSpace);
        }
        Ok(written as usize)
    }

    /// The whole blocks `data` at `offset` touches, as they will be after
    /// the write: zeros, with the old bytes of a partial first or last
    /// block that holds data (but zeros from `old_size` up to `offset`:
    /// stale bytes a shrink left), and `data` over them.
    fn block_image(
        &self,
        state: &mut InodeState,
        pieces: &[Piece],
        offset: u64,
        data: &[u8],
        old_size: u64,
    ) -> FsResult<Vec<u8>> {
        let bs = self.block_size();
        let end = offset + data.len() as u64;
        let (b0, b1) = (offset / bs, end.div_ceil(bs));
        let mut buf = vec![0u8; ((b1 - b0) * bs) as usize];
        let mut partial = Vec::new();
        if offset % bs != 0 {
            partial.push(b0);
        }
        if end % bs != 0 && !partial.contains(&(b1 - 1)) {
            partial.push(b1 - 1);
        }
        for b in partial {
            let piece = pieces.iter().find(|p| p.logical <= b && b < p.end());
            if let Some(Piece {
                kind: PieceKind::Data { .. },
                ..
            }) = piece
            {
                let old = self.read_blocks(Self::root_mut(state)?, b, 1)?;
                let at = ((b - b0) * bs) as usize;
                buf[at..at + bs as usize].copy_from_slice(&old);
                // Bytes from the old size up to the new data are stale (a
                // shrink left them): the file shows zeros there. Bytes past
                // the write's end stay as they are (past the new size, they
                // may still be durable data of an uncommitted shrink).
                let from = old_size.max(b * bs);
                let to = offset.min((b + 1) * bs);
                if from < to {
                    let (from, to) = ((from - b * bs) as usize, (to - b * bs) as usize);
                    buf[at + from..at + to].fill(0);
                }
            }
        }
        let head = (offset - b0 * bs) as usize;
        buf[head..head + data.len()].copy_from_slice(data);
        Ok(buf)
    }

    /// Allocates and writes the hole at `logical` with `bytes` (whole
    /// blocks), run by run; `done` advances past each completed run.
    fn fill_hole(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        logical: u64,
        bytes: &[u8],
        goal: &mut u64,
        done: &mut u64,
    ) -> FsResult<()> {
        let bs = self.block_size();
        let total = bytes.len() as u64 / bs;
        let mut k = 0;
        while k < total {
            let want = (total - k).min(u64::from(crate::format::extent::EXTENT_MAX_LEN));
            let (physical, got) = self.blocks.alloc_blocks(tx, *goal, want)?;
            let chunk = &bytes[(k * bs) as usize..((k + got) * bs) as usize];
            let leaf = ExtentLeaf {
                logical: logical + k,
                length: got as u32,
                unwritten: false,
                physical,
            };
            if let Err(e) = self.publish_run(tx, state, leaf, Some(chunk)) {
                let _ = self.blocks.unalloc_blocks(tx, physical, got);
                return Err(e);
            }
            state.blocks += got;
            k += got;
            *goal = physical + got;
            *done = logical + k;
        }
        Ok(())
    }

    /// Writes `data` (if any) to the new run of `leaf`, stores its tags and
    /// inserts the extent.
    pub(crate) fn publish_run(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        leaf: ExtentLeaf,
        data: Option<&[u8]>,
    ) -> FsResult<()> {
        if let Some(data) = data {
            let (tags, failed) = self.volume.write_data(leaf.physical, tx.data_gen(), data)?;
            if !failed.is_clear() {
                log::warn!(
                    "data blocks {}+{}: write failed on legs {:?}",
                    leaf.physical,
                    leaf.length,
                    failed.failed_legs()
                );
            }
            self.tags.store(tx, leaf.physical, &tags)?;
        }
        let mut tree = TreeWriter::new(&self.cache, &self.blocks, tx, leaf.physical);
        let result = tree.insert(Self::root_mut(state)?, leaf);
        state.blocks = state.blocks.saturating_add_signed(tree.node_blocks_delta());
        result
    }

    /// Writes `bytes` over the unwritten run at `logical` → `physical` and
    /// marks it written.
    fn write_unwritten(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        logical: u64,
        physical: u64,
        bytes: &[u8],
    ) -> FsResult<()> {
        // Data and tags first: until the extent says "written" the blocks
        // read as zeros whatever they hold.
        let len = bytes.len() as u64 / self.block_size();
        let (tags, _) = self.volume.write_data(physical, tx.data_gen(), bytes)?;
        self.tags.store(tx, physical, &tags)?;
        self.convert_extent(tx, state, logical, len, physical, false)
    }

    /// Replaces the mapping of `logical .. logical + len` (one extent's
    /// worth, at `physical`) by the same blocks marked `unwritten` or not.
    pub(crate) fn convert_extent(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        logical: u64,
        len: u64,
        physical: u64,
        unwritten: bool,
    ) -> FsResult<()> {
        let mut tree = TreeWriter::new(&self.cache, &self.blocks, tx, physical);
        let leaf = ExtentLeaf {
            logical,
            length: len as u32,
            unwritten,
            physical,
        };
        let result = tree.replace(Self::root_mut(state)?, leaf);
        state.blocks = state.blocks.saturating_add_signed(tree.node_blocks_delta());
        result.map(|_| ())
    }

    /// Overwrites written blocks in place (see the module docs on intents).
    pub(crate) fn overwrite(&self, tx: &TxHandle<'_>, physical: u64, bytes: &[u8]) -> FsResult<()> {
        let count = bytes.len() as u64 / self.block_size();
        let old = self.tags.load(physical, count)?;
        let gen = tx.data_gen();
        let new = self.volume.data_tags(physical, gen, bytes);
        let intents: Vec<(u64, Tag, Tag)> = old
            .iter()
            .zip(&new)
            .enumerate()
            .filter(|(_, (o, _))| o.gen != gen)
            .map(|(i, (o, n))| (physical + i as u64, *o, *n))
            .collect();
        log_intents(tx, &intents)?;
        let failed = self.volume.write_data_tagged(physical, bytes, &new)?;
        if !failed.is_clear() {
            log::warn!(
                "data blocks {physical}+{count}: write failed on legs {:?}",
                failed.failed_legs()
            );
        }
        self.tags.store(tx, physical, &new)
    }
}
