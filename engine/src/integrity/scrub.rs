//! Scrub of a run of blocks: every in-service leg read and checked, every
//! bad copy healed from a good one.
//!
//! Promises:
//! * [`Volume::scrub_data`] checks every in-service leg's copy of each block
//!   against its data tag; [`Volume::scrub_meta`] checks metadata headers,
//!   and since a fixed or unparented block has no recorded generation, the
//!   highest generation found valid on some leg is the one expected of all
//!   (a leg holding an older, well-formed copy missed a write);
//! * bad copies with a good copy elsewhere are rewritten from it by the
//!   same heal as reads use (fenced against concurrent writes, re-verified
//!   first, logged once), counted as checksum errors and heals on their
//!   leg; the legs that had any bad copy are in [`ScrubRun::bad_legs`];
//! * blocks zero on every leg (never written) are neither bad nor lost,
//!   and for `scrub_meta` neither are blocks no leg holds a metadata
//!   header in (returned in [`ScrubRun::not_meta`]);
//! * blocks with no good copy on any leg are returned in
//!   [`ScrubRun::lost`], changed nowhere (never a guess).
//!
//! Relies on: the caller running in the I/O context it wants the reads to
//! have (scrub runs idle-class), and on the same fence as every write.

use super::{data_check, meta_check, meta_gen};
use super::{BadCopy, Check, CopyProblem, Describe, Tag, TagMismatch, Volume};
use crate::error::{EngineError, EngineResult};
use crate::mirror::ErrorBits;

/// What a scrub of a run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubRun {
    /// Copies found bad (on any leg).
    pub bad_copies: u64,
    /// Blocks with at least one bad copy and a good one (healed).
    pub repaired: u64,
    /// Blocks with no good copy on any in-service leg.
    pub lost: Vec<u64>,
    /// [`Volume::scrub_meta`]: blocks no leg holds a metadata header in
    /// (not metadata: left alone, not counted).
    pub not_meta: Vec<u64>,
    /// The legs on which some copy was bad (read error or mismatch).
    pub bad_legs: ErrorBits,
}

impl Volume {
    /// Scrubs data blocks `first ..` against `expected` on every leg.
    pub fn scrub_data(&self, first: u64, expected: &[Tag]) -> EngineResult<ScrubRun> {
        self.scrub_data_for(first, expected, &|_| "data".to_string())
    }

    /// [`Volume::scrub_data`], with `describe(block)` saying what a block
    /// is in the log line of its heal.
    pub fn scrub_data_for(
        &self,
        first: u64,
        expected: &[Tag],
        describe: &dyn Fn(u64) -> String,
    ) -> EngineResult<ScrubRun> {
        let check = |i: usize, b: &[u8]| data_check(first + i as u64, b, &expected[i]);
        let describe = |block: u64, _: &[u8]| describe(block);
        self.scrub_with(first, expected.len() as u64, &check, false, &describe)
    }

    /// Scrubs metadata blocks `first .. first + count` on every leg, the
    /// newest valid generation of each block being the one expected.
    pub fn scrub_meta(&self, first: u64, count: u64) -> EngineResult<ScrubRun> {
        let uuid = *self.fs_uuid();
        let check = |i: usize, b: &[u8]| meta_check(first + i as u64, &uuid, b, None);
        let describe = |_: u64, good: &[u8]| self.describe_meta(good);
        self.scrub_with(first, count, &check, true, &describe)
    }

    fn scrub_with(
        &self,
        first: u64,
        count: u64,
        check: &Check<'_>,
        meta: bool,
        describe: &Describe<'_>,
    ) -> EngineResult<ScrubRun> {
        let bs = self.block_size;
        let n = count as usize;
        self.set.check_range(first, n * bs)?;
        let legs: Vec<usize> = self.set.in_service().legs().collect();
        if legs.is_empty() {
            return Err(EngineError::NoLegs);
        }
        // copies[k]: leg legs[k]'s bytes, or None if the read failed.
        let mut copies: Vec<Option<Vec<u8>>> = Vec::with_capacity(legs.len());
        for &leg in &legs {
            let mut buf = vec![0u8; n * bs];
            copies.push(match self.set.read_leg(leg, first, &mut buf) {
                Ok(()) => Some(buf),
                Err(EngineError::Device(_)) => None,
                Err(e) => return Err(e),
            });
        }
        // For metadata: the newest generation valid somewhere, per block.
        let newest: Vec<Option<u64>> = (0..n)
            .map(|i| {
                copies
                    .iter()
                    .flatten()
                    .map(|c| &c[i * bs..(i + 1) * bs])
                    .filter(|b| meta && check(i, b).is_ok())
                    .map(meta_gen)
                    .max()
            })
            .collect();
        let full_check = |i: usize, b: &[u8]| -> Result<(), TagMismatch> {
            check(i, b)?;
            match newest[i] {
                Some(expected) if meta_gen(b) != expected => Err(TagMismatch::StaleGeneration {
                    expected,
                    found: meta_gen(b),
                }),
                _ => Ok(()),
            }
        };
        let mut good_leg: Vec<Option<usize>> = vec![None; n];
        let mut bad: Vec<BadCopy> = Vec::new();
        let mut unwritten = vec![0usize; n];
        for (k, &leg) in legs.iter().enumerate() {
            for i in 0..n {
                let problem = match &copies[k] {
                    None => CopyProblem::ReadError("device read failed".into()),
                    Some(c) => match full_check(i, &c[i * bs..(i + 1) * bs]) {
                        Ok(()) => {
                            good_leg[i].get_or_insert(leg);
                            continue;
                        }
                        Err(m) => {
                            if m == TagMismatch::Unwritten {
                                unwritten[i] += 1;
                            }
                            CopyProblem::Mismatch(m)
                        }
                    },
                };
                bad.push(BadCopy {
                    leg,
                    block: first + i as u64,
                    problem,
                });
            }
        }
        let never_written = |i: usize| unwritten[i] == legs.len();
        // A "metadata" block no leg holds a header in is not metadata at
        // all (data, or a block allocated but not yet written home).
        let mut has_header = vec![false; n];
        for (i, h) in has_header.iter_mut().enumerate() {
            *h = good_leg[i].is_some()
                || bad.iter().any(|b| {
                    b.block == first + i as u64
                        && !matches!(
                            b.problem,
                            CopyProblem::Mismatch(TagMismatch::BadMagic { .. })
                                | CopyProblem::Mismatch(TagMismatch::Unwritten)
                        )
                });
        }
        let mut run = ScrubRun::default();
        bad.retain(|b| {
            let i = (b.block - first) as usize;
            if never_written(i) {
                return false;
            }
            if meta && !has_header[i] {
                if !run.not_meta.contains(&b.block) {
                    run.not_meta.push(b.block);
                }
                return false;
            }
            true
        });
        for b in &bad {
            if let CopyProblem::Mismatch(m) = &b.problem {
                if good_leg[(b.block - first) as usize].is_none() {
                    log::warn!("scrub: leg {} block {}: {m}", b.leg, b.block);
                }
                self.set.leg_stats(b.leg).record_checksum_errors(1);
            }
            run.bad_copies += 1;
            run.bad_legs.set(b.leg);
        }
        let mut repaired = vec![false; n];
        for b in &bad {
            let i = (b.block - first) as usize;
            if good_leg[i].is_some() {
                repaired[i] = true;
            } else if !run.lost.contains(&b.block) {
                run.lost.push(b.block);
            }
        }
        run.repaired = repaired.iter().filter(|r| **r).count() as u64;
        if run.repaired > 0 {
            self.heal(first, &good_leg, &bad, &full_check, describe);
        }
        for &block in &run.lost {
            log::error!("scrub: block {block}: no good copy on any leg");
        }
        Ok(run)
    }
}
