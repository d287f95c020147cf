//! Resync of a run of blocks: copy verified content from the in-service
//! legs to one resyncing leg, fenced against concurrent writes.
//!
//! Promises ([`Volume::resync_run`]):
//! * the run is held *exclusive* in the mirror set's block-range fence
//!   while the sources are read and the target is written. Every write
//!   through the mirror set — the volume's, and the filesystem's journal
//!   ring, written straight to the set — holds its range shared and
//!   chooses its legs only once it holds it, and a resyncing leg receives
//!   every write ([`crate::mirror::LegState::Resyncing`]), so for each
//!   block either a write finished before the copy (the copy reads its
//!   bytes from the source) or it starts after the copy (and overwrites
//!   the copy on every leg, the target included): the copy never puts old
//!   bytes over a newer write;
//! * each block is taken from a copy that passes its check — for
//!   [`ResyncCheck::Meta`] the valid copy with the highest generation, for
//!   [`ResyncCheck::Data`] the first copy matching its tag; a block with
//!   no verified copy (never written, not metadata, or bad everywhere) is
//!   copied as the first readable leg holds it, so the legs end up byte
//!   identical, and is reported in [`ResyncRun::unverified`]
//!   (with [`ResyncCheck::Raw`] every block is copied that way, unreported);
//! * the source legs are read, never written (no heals here: a heal would
//!   need the fence this holds); the target is written with an explicit
//!   region, so a failure there fails the target leg, and is an error.
//!
//! Relies on: the caller having put the target in the `Resyncing` state
//! *before* it decided which blocks to copy, and every write to those
//! blocks going through the mirror set (writes straight to a device are
//! not fenced).

use super::{data_check, meta_check, meta_gen, Tag, Volume};
use crate::error::{EngineError, EngineResult};
use crate::mirror::Region;

/// How the source copies of a run are verified.
#[derive(Debug, Clone, Copy)]
pub enum ResyncCheck<'a> {
    /// Metadata blocks: sealed header; the newest valid generation wins.
    Meta,
    /// Data blocks, each against its tag.
    Data(&'a [Tag]),
    /// Not verified (e.g. journal blocks whose validity the journal decides).
    Raw,
}

/// What a resync of a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResyncRun {
    /// Blocks written to the target.
    pub copied: u64,
    /// Blocks copied with no verified source copy (see the module docs).
    pub unverified: Vec<u64>,
}

impl Volume {
    /// Copies `count` blocks at `first` to leg `target` from the in-service
    /// legs; see the module docs.
    pub fn resync_run(
        &self,
        first: u64,
        count: u64,
        target: usize,
        check: ResyncCheck<'_>,
    ) -> EngineResult<ResyncRun> {
        let bs = self.block_size;
        let n = count as usize;
        self.set.check_range(first, n * bs)?;
        if let ResyncCheck::Data(tags) = check {
            if tags.len() != n {
                return Err(EngineError::Invalid(format!(
                    "{} tags for {count} blocks",
                    tags.len()
                )));
            }
        }
        let uuid = self.fs_uuid;
        let verified = |i: usize, b: &[u8]| -> Option<u64> {
            let block = first + i as u64;
            match check {
                ResyncCheck::Meta => meta_check(block, &uuid, b, None).ok().map(|_| meta_gen(b)),
                ResyncCheck::Data(tags) => data_check(block, b, &tags[i]).ok().map(|_| 0),
                ResyncCheck::Raw => None,
            }
        };
        let fence = self.set.fence_exclusive(first, count);
        let sources: Vec<usize> = self
            .set
            .read_order()
            .into_iter()
            .filter(|&l| l != target)
            .collect();
        if sources.is_empty() {
            return Err(EngineError::NoLegs);
        }
        let mut copies: Vec<Vec<u8>> = Vec::with_capacity(sources.len());
        let mut last_err = None;
        for &leg in &sources {
            let mut buf = vec![0u8; n * bs];
            match self.set.read_leg(leg, first, &mut buf) {
                Ok(()) => copies.push(buf),
                Err(EngineError::Device(e)) => last_err = Some(e),
                Err(e) => return Err(e),
            }
            // Data: one good source is enough unless it has bad blocks.
            if !matches!(check, ResyncCheck::Meta) {
                if let Some(c) = copies.last() {
                    let all_good = matches!(check, ResyncCheck::Raw)
                        || (0..n).all(|i| verified(i, &c[i * bs..(i + 1) * bs]).is_some());
                    if all_good {
                        break;
                    }
                }
            }
        }
        if copies.is_empty() {
            return Err(last_err.map_or(EngineError::NoLegs, EngineError::Device));
        }
        let mut out = copies[0].clone();
        let mut run = ResyncRun {
            copied: count,
            unverified: Vec::new(),
        };
        for i in 0..n {
            let range = i * bs..(i + 1) * bs;
            let best = copies
                .iter()
                .filter_map(|c| verified(i, &c[range.clone()]).map(|g| (g, c)))
                .max_by_key(|(g, _)| *g);
            match best {
                Some((_, c)) => out[range.clone()].copy_from_slice(&c[range]),
                None if matches!(check, ResyncCheck::Raw) => {}
                None => run.unverified.push(first + i as u64),
            }
        }
        self.set
            .write_regions_held(&fence, &[Region::new(target, first, count)], &out)?;
        Ok(run)
    }
}
