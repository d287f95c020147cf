//! Integrity tags after bio-integrity: generated on write, verified on read.
//!
//! A [`Volume`] is the integrity-protected view of a [`MirrorSet`]. Every
//! block has a tag binding its content to its address and a generation
//! ([`tag`] fixes the formats):
//! * metadata blocks carry theirs inside, in a 48-byte header sealed by
//!   [`Volume::write_meta`] and checked by [`Volume::read_meta`] (magic,
//!   crc, address, fs uuid and, when the parent recorded one, generation);
//! * data blocks have theirs apart: [`Volume::write_data`] computes and
//!   returns them for the fs to store in its tag table, and
//!   [`Volume::read_data`] checks each block against the tag it is given.
//!
//! Promises (invariant 1 of the design):
//! * No read returns bytes that do not match their tag. A copy that fails
//!   (device error or mismatch) is passed over for the next in-service leg;
//!   the first good copy is returned, and every bad copy seen on the way is
//!   rewritten from it (healed) and counted on its leg (`checksum_errors`
//!   or `read_errors`, then `healed`).
//! * Each heal is logged once, as a warning: the leg and its device, the
//!   blocks, why the copy was bad, the leg it was copied from, and what the
//!   blocks are — for metadata the kind in the good copy's header (named
//!   by [`Volume::with_kind_names`]), for data what the caller says
//!   ([`Volume::read_data_for`]: the filesystem names the file and offset).
//! * With no good copy on any in-service leg the caller gets
//!   [`EngineError::NoGoodCopy`] and the offending blocks of its buffer are
//!   zeroed: never the bad bytes.
//! * A heal never undoes a newer write: it holds its blocks exclusive in the
//!   mirror set's block-range fence (which every write through the set
//!   holds shared), re-reads the good copy and re-verifies it before
//!   writing it out, and skips a block that changed.
//! * Copies on legs the read did not need are not looked at (as in btrfs
//!   and ZFS, finding those is scrub's job: [`Volume::verify_leg_meta`] and
//!   [`Volume::verify_leg_data`] check one leg without healing).
//!
//! Relies on: the mirror layer for fan-out, leg state and counters; the
//! filesystem to keep data tags (and, for lost-write detection, the
//! generations of metadata blocks) in the structures that point at them;
//! every write to the blocks going through the `MirrorSet` (whose fence
//! keeps heals from undoing them). Failed legs are neither read nor
//! healed: they may hold stale but well-formed blocks.
//!
//! Lock order: a block range of the mirror's fence (shared for writes,
//! exclusive for heals; never two at once), then the mirror's scheduler
//! slots.

mod resync;
mod scrub;
pub mod tag;

pub use resync::{ResyncCheck, ResyncRun};
pub use scrub::ScrubRun;
pub use tag::{
    data_check, meta_block, meta_check, meta_gen, meta_kind, meta_seal, meta_set_gen,
    meta_set_kind, Tag, TagMismatch, META_HEADER_LEN, META_MAGIC,
};

use crate::bufio::BlockStore;
use crate::error::{EngineError, EngineResult};
use crate::mirror::{ErrorBits, MirrorSet, Region};
use std::fmt;
use std::sync::Arc;

/// Blocks read at a time when checking a leg.
const VERIFY_CHUNK_BLOCKS: u64 = 256;

/// Why a copy of a block on one leg is bad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyProblem {
    /// The device could not read it (the message of the device error).
    ReadError(String),
    /// It read, but does not match its tag.
    Mismatch(TagMismatch),
}

impl fmt::Display for CopyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyProblem::ReadError(e) => write!(f, "read error: {e}"),
            CopyProblem::Mismatch(m) => write!(f, "{m}"),
        }
    }
}

/// A bad copy: block `block` on leg `leg`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCopy {
    pub leg: usize,
    pub block: u64,
    pub problem: CopyProblem,
}

/// A tag check of one block of a request: (index in the request, bytes).
type Check<'a> = dyn Fn(usize, &[u8]) -> Result<(), TagMismatch> + 'a;

/// What a block is, for the log line of its heal: (block, good copy).
type Describe<'a> = dyn Fn(u64, &[u8]) -> String + 'a;

/// Names of the metadata block kinds (the `kind` of the 48-byte header),
/// which the filesystem chooses.
pub type KindNames = fn(u16) -> Option<&'static str>;

/// The integrity-protected view of a mirror set. See the module docs.
pub struct Volume {
    set: Arc<MirrorSet>,
    fs_uuid: [u8; 16],
    block_size: usize,
    kind_names: Option<KindNames>,
}

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("set", &self.set)
            .field("fs_uuid", &self.fs_uuid)
            .finish()
    }
}

impl Volume {
    pub fn new(set: Arc<MirrorSet>, fs_uuid: [u8; 16]) -> Volume {
        let block_size = set.block_size() as usize;
        Volume {
            set,
            fs_uuid,
            block_size,
            kind_names: None,
        }
    }

    /// Names metadata kinds in heal log lines with `names`.
    #[must_use]
    pub fn with_kind_names(mut self, names: KindNames) -> Volume {
        self.kind_names = Some(names);
        self
    }

    /// "metadata (kind NAME)" for a metadata block whose good copy is `good`.
    fn describe_meta(&self, good: &[u8]) -> String {
        let kind = meta_kind(good);
        match self.kind_names.and_then(|f| f(kind)) {
            Some(name) => format!("metadata ({name}, kind {kind})"),
            None => format!("metadata (kind {kind})"),
        }
    }

    /// The mirror set underneath (states, counters).
    pub fn set(&self) -> &Arc<MirrorSet> {
        &self.set
    }

    pub fn fs_uuid(&self) -> &[u8; 16] {
        &self.fs_uuid
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> u64 {
        self.set.num_blocks()
    }

    fn blocks_in(&self, buf: &[u8]) -> usize {
        buf.len() / self.block_size
    }

    // ---- metadata -----------------------------------------------------

    /// Read metadata block `block`, verified (and of generation
    /// `expect_gen`, if given); heals bad copies met on the way.
    pub fn read_meta(
        &self,
        block: u64,
        buf: &mut [u8],
        expect_gen: Option<u64>,
    ) -> EngineResult<()> {
        self.check_one_block(buf)?;
        self.read_meta_run(block, buf, expect_gen.as_ref().map(std::slice::from_ref))
    }

    /// Read a run of metadata blocks at `first`, each verified (against
    /// `expect_gens[i]` too, if given: one generation per block).
    pub fn read_meta_run(
        &self,
        first: u64,
        buf: &mut [u8],
        expect_gens: Option<&[u64]>,
    ) -> EngineResult<()> {
        self.set.check_range(first, buf.len())?;
        if let Some(g) = expect_gens {
            self.check_count(g.len(), buf, "generations")?;
        }
        let uuid = self.fs_uuid;
        let check =
            |i: usize, b: &[u8]| meta_check(first + i as u64, &uuid, b, expect_gens.map(|g| g[i]));
        let describe = |_: u64, good: &[u8]| self.describe_meta(good);
        self.read_verified(first, buf, &check, &describe)
    }

    /// Seal (magic, address, uuid, crc) each block of `buf` for a run at
    /// `first`; the generation and kind must already be set.
    pub fn seal_run(&self, first: u64, buf: &mut [u8]) {
        for (i, b) in buf.chunks_exact_mut(self.block_size).enumerate() {
            meta_seal(first + i as u64, &self.fs_uuid, b);
        }
    }

    /// Seal metadata block `block` and write it to every in-service leg.
    pub fn write_meta(&self, block: u64, buf: &mut [u8]) -> EngineResult<ErrorBits> {
        self.check_one_block(buf)?;
        self.write_meta_run(block, buf)
    }

    /// Seal a run of metadata blocks and write it in one request.
    pub fn write_meta_run(&self, first: u64, buf: &mut [u8]) -> EngineResult<ErrorBits> {
        self.set.check_range(first, buf.len())?;
        self.seal_run(first, buf);
        self.set.write_sync(first, buf)
    }

    // ---- data ---------------------------------------------------------

    /// The tags of `data` (whole blocks) written at `first` with `gen`.
    pub fn data_tags(&self, first: u64, gen: u32, data: &[u8]) -> Vec<Tag> {
        data.chunks(self.block_size)
            .enumerate()
            .map(|(i, b)| Tag::compute(first + i as u64, gen, b))
            .collect()
    }

    /// Tag `data` and write it at `first` in one request; the tags are for
    /// the fs to keep.
    pub fn write_data(
        &self,
        first: u64,
        gen: u32,
        data: &[u8],
    ) -> EngineResult<(Vec<Tag>, ErrorBits)> {
        self.set.check_range(first, data.len())?;
        // The tags depend on nothing the write changes: compute them while
        // the other legs are being written.
        let mut tags = Vec::new();
        let bits = self.set.write_sync_while(first, data, || {
            tags = self.data_tags(first, gen, data);
        })?;
        Ok((tags, bits))
    }

    /// Write `data` whose tags the caller computed earlier (e.g. logged in
    /// a journal intent). The tags are checked against the data first, so
    /// a buffer changed since is refused instead of written as "corrupt".
    pub fn write_data_tagged(
        &self,
        first: u64,
        data: &[u8],
        tags: &[Tag],
    ) -> EngineResult<ErrorBits> {
        self.set.check_range(first, data.len())?;
        self.check_count(tags.len(), data, "tags")?;
        for (i, (b, t)) in data.chunks(self.block_size).zip(tags).enumerate() {
            let block = first + i as u64;
            if let Err(m) = data_check(block, b, t) {
                return Err(EngineError::Invalid(format!(
                    "block {block}: the data to write does not match its tag ({m})"
                )));
            }
        }
        self.set.write_sync(first, data)
    }

    /// Read data blocks at `first`, each checked against `expected[i]`:
    /// the range is read from one leg, and each bad block from the next
    /// legs; bad copies met are healed.
    pub fn read_data(&self, first: u64, buf: &mut [u8], expected: &[Tag]) -> EngineResult<()> {
        self.read_data_for(first, buf, expected, &|_| "data".to_string())
    }

    /// [`Volume::read_data`], with `describe(block)` saying what a block is
    /// in the log line of its heal (e.g. "inode 12 offset 8192").
    pub fn read_data_for(
        &self,
        first: u64,
        buf: &mut [u8],
        expected: &[Tag],
        describe: &dyn Fn(u64) -> String,
    ) -> EngineResult<()> {
        self.set.check_range(first, buf.len())?;
        self.check_count(expected.len(), buf, "tags")?;
        let check = |i: usize, b: &[u8]| data_check(first + i as u64, b, &expected[i]);
        self.read_verified(first, buf, &check, &|block, _| describe(block))
    }

    // ---- checks of one leg, without healing ---------------------------

    /// Check `count` metadata blocks at `first` on `leg` alone (with their
    /// generations, if given). Reports bad copies; changes nothing, counts
    /// nothing.
    pub fn verify_leg_meta(
        &self,
        leg: usize,
        first: u64,
        count: u64,
        expect_gens: Option<&[u64]>,
    ) -> EngineResult<Vec<BadCopy>> {
        if let Some(g) = expect_gens {
            if g.len() as u64 != count {
                return Err(EngineError::Invalid(format!(
                    "{} generations for {count} blocks",
                    g.len()
                )));
            }
        }
        let uuid = self.fs_uuid;
        let check =
            |i: usize, b: &[u8]| meta_check(first + i as u64, &uuid, b, expect_gens.map(|g| g[i]));
        self.verify_leg_with(leg, first, count, &check)
    }

    /// Check data blocks at `first` on `leg` alone against `expected`.
    /// Reports bad copies; changes nothing, counts nothing.
    pub fn verify_leg_data(
        &self,
        leg: usize,
        first: u64,
        expected: &[Tag],
    ) -> EngineResult<Vec<BadCopy>> {
        let check = |i: usize, b: &[u8]| data_check(first + i as u64, b, &expected[i]);
        self.verify_leg_with(leg, first, expected.len() as u64, &check)
    }

    fn verify_leg_with(
        &self,
        leg: usize,
        first: u64,
        count: u64,
        check: &Check<'_>,
    ) -> EngineResult<Vec<BadCopy>> {
        let bs = self.block_size;
        let mut bad = Vec::new();
        let mut buf = Vec::new();
        let mut done = 0u64;
        while done < count {
            let n = (count - done).min(VERIFY_CHUNK_BLOCKS);
            buf.resize(n as usize * bs, 0);
            let start = first + done;
            match self.set.read_leg(leg, start, &mut buf) {
                Ok(()) => {
                    for (k, b) in buf.chunks_exact(bs).enumerate() {
                        if let Err(m) = check(done as usize + k, b) {
                            bad.push(BadCopy {
                                leg,
                                block: start + k as u64,
                                problem: CopyProblem::Mismatch(m),
                            });
                        }
                    }
                }
                Err(EngineError::Device(e)) => {
                    let msg = e.to_string();
                    bad.extend((0..n).map(|k| BadCopy {
                        leg,
                        block: start + k,
                        problem: CopyProblem::ReadError(msg.clone()),
                    }));
                }
                Err(e) => return Err(e),
            }
            done += n;
        }
        Ok(bad)
    }

    // ---- the read path ------------------------------------------------

    /// Read `buf` at `first` so that every block passes `check`: the whole
    /// range from the first leg of the read order, then whatever is still
    /// bad from the next legs, in runs. Heal, then report.
    ///
    /// A device read error fails the whole run it was reading on that leg
    /// (a device does not say which sector failed), so the whole run is
    /// rewritten there: a rewrite is also what makes a disk remap a bad
    /// sector.
    fn read_verified(
        &self,
        first: u64,
        buf: &mut [u8],
        check: &Check<'_>,
        describe: &Describe<'_>,
    ) -> EngineResult<()> {
        let bs = self.block_size;
        let n = self.blocks_in(buf);
        let order = self.set.read_order_near(first);
        if order.is_empty() {
            return Err(EngineError::NoLegs);
        }
        // good_leg[i]: the leg block i was read from and verified on.
        let mut good_leg: Vec<Option<usize>> = vec![None; n];
        let mut bad: Vec<BadCopy> = Vec::new();
        for &leg in &order {
            let runs = runs_of(n, |i| good_leg[i].is_none());
            if runs.is_empty() {
                break;
            }
            for (start, end) in runs {
                let block = first + start as u64;
                match self
                    .set
                    .read_leg(leg, block, &mut buf[start * bs..end * bs])
                {
                    Ok(()) => {
                        for i in start..end {
                            match check(i, &buf[i * bs..(i + 1) * bs]) {
                                Ok(()) => good_leg[i] = Some(leg),
                                Err(m) => bad.push(BadCopy {
                                    leg,
                                    block: first + i as u64,
                                    problem: CopyProblem::Mismatch(m),
                                }),
                            }
                        }
                    }
                    Err(EngineError::Device(e)) => {
                        let msg = e.to_string();
                        bad.extend((start..end).map(|i| BadCopy {
                            leg,
                            block: first + i as u64,
                            problem: CopyProblem::ReadError(msg.clone()),
                        }));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // A block that is zero on every leg was never written: that is the
        // caller's business, not corruption. Every other mismatch counts.
        let never_written = |block: u64| {
            good_leg[(block - first) as usize].is_none()
                && bad
                    .iter()
                    .filter(|b| b.block == block)
                    .all(|b| matches!(b.problem, CopyProblem::Mismatch(TagMismatch::Unwritten)))
        };
        for b in &bad {
            if let CopyProblem::Mismatch(_) = &b.problem {
                if !never_written(b.block) {
                    self.set.leg_stats(b.leg).record_checksum_errors(1);
                }
            }
        }
        if !bad.is_empty() {
            self.heal(first, &good_leg, &bad, check, describe);
        }
        let Some(lost) = good_leg.iter().position(Option::is_none) else {
            return Ok(());
        };
        if never_written(first + lost as u64) {
            for (start, end) in runs_of(n, |i| good_leg[i].is_none()) {
                buf[start * bs..end * bs].fill(0);
            }
            return Err(EngineError::Unwritten {
                block: first + lost as u64,
            });
        }
        for (start, end) in runs_of(n, |i| good_leg[i].is_none()) {
            buf[start * bs..end * bs].fill(0);
        }
        let block = first + lost as u64;
        let detail = bad
            .iter()
            .filter(|b| b.block == block)
            .map(|b| format!("leg {}: {}", b.leg, b.problem))
            .collect::<Vec<_>>()
            .join("; ");
        log::error!("block {block}: no good copy ({detail})");
        Err(EngineError::NoGoodCopy {
            block,
            legs: order.len(),
            detail,
        })
    }

    /// Rewrite every bad copy that has a good one, in runs of blocks that
    /// share a source leg and a set of bad legs.
    fn heal(
        &self,
        first: u64,
        good_leg: &[Option<usize>],
        bad: &[BadCopy],
        check: &Check<'_>,
        describe: &Describe<'_>,
    ) {
        let mut bad_legs = vec![ErrorBits::NONE; good_leg.len()];
        for b in bad {
            let i = (b.block - first) as usize;
            if good_leg[i].is_some() {
                bad_legs[i].set(b.leg);
            }
        }
        let mut i = 0;
        while i < good_leg.len() {
            let key = (good_leg[i], bad_legs[i]);
            let mut j = i + 1;
            while j < good_leg.len() && (good_leg[j], bad_legs[j]) == key {
                j += 1;
            }
            if let (Some(source), targets) = key {
                if !targets.is_clear() {
                    let offset_check = |k: usize, b: &[u8]| check(i + k, b);
                    let run = HealRun {
                        block: first + i as u64,
                        count: j - i,
                        source,
                        targets,
                    };
                    self.heal_run(&run, &offset_check, bad, describe);
                }
            }
            i = j;
        }
    }

    /// Copy a run from its source leg to its target legs, under the
    /// fence, re-verifying each block first; log each heal once.
    fn heal_run(&self, run: &HealRun, check: &Check<'_>, bad: &[BadCopy], describe: &Describe<'_>) {
        let bs = self.block_size;
        let HealRun {
            block,
            count,
            source,
            targets,
        } = *run;
        let fence = self.set.fence_exclusive(block, count as u64);
        let targets: Vec<usize> = targets
            .legs()
            .filter(|&l| self.set.in_service().has(l))
            .collect();
        let mut copy = vec![0u8; count * bs];
        if let Err(e) = self.set.read_leg(source, block, &mut copy) {
            log::warn!("heal of blocks {block}+{count}: re-reading leg {source} failed: {e}");
            return;
        }
        // Blocks that changed since the read (a newer write) are left be.
        let still_good = |k: usize| check(k, &copy[k * bs..(k + 1) * bs]).is_ok();
        for (start, end) in runs_of(count, still_good) {
            let n = (end - start) as u64;
            let at = block + start as u64;
            let regions: Vec<Region> = targets.iter().map(|&leg| Region::new(leg, at, n)).collect();
            let bytes = &copy[start * bs..end * bs];
            match self.set.write_regions_held(&fence, &regions, bytes) {
                Ok(failed) => {
                    let what = describe(at, &bytes[..bs]);
                    for &leg in targets.iter().filter(|&&l| !failed.has(l)) {
                        self.set.leg_stats(leg).record_healed(n);
                        let why = bad
                            .iter()
                            .find(|b| b.leg == leg && b.block == at)
                            .map_or_else(|| "bad copy".to_string(), |b| b.problem.to_string());
                        let blocks = if n == 1 {
                            format!("block {at}")
                        } else {
                            format!("blocks {at}+{n}")
                        };
                        log::warn!(
                            "healed leg {leg} ({}) {blocks}: {what}: {why}; rewritten from leg {source}",
                            self.set.leg_device(leg).name()
                        );
                    }
                }
                Err(e) => log::warn!("heal of blocks {at}+{n} failed: {e}"),
            }
        }
    }

    fn check_one_block(&self, buf: &[u8]) -> EngineResult<()> {
        if buf.len() != self.block_size {
            return Err(EngineError::Invalid(format!(
                "a buffer of {} bytes for one {}-byte block",
                buf.len(),
                self.block_size
            )));
        }
        Ok(())
    }

    fn check_count(&self, have: usize, buf: &[u8], what: &str) -> EngineResult<()> {
        if have != self.blocks_in(buf) {
            return Err(EngineError::Invalid(format!(
                "{have} {what} for {} blocks",
                self.blocks_in(buf)
            )));
        }
        Ok(())
    }
}

/// A run of blocks to heal: `count` blocks at `block`, copied from leg
/// `source` to legs `targets`.
#[derive(Debug, Clone, Copy)]
struct HealRun {
    block: u64,
    count: usize,
    source: usize,
    targets: ErrorBits,
}

/// The maximal runs `[start, end)` of `0..n` where `pred` holds.
fn runs_of(n: usize, pred: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < n {
        if !pred(i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && pred(i) {
            i += 1;
        }
        runs.push((start, i));
    }
    runs
}

/// The metadata path bufio sits on: blocks are sealed on write and
/// verified (and healed) on read.
impl BlockStore for Volume {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.set.num_blocks()
    }

    fn read_block(&self, block: u64, buf: &mut [u8], expect_gen: Option<u64>) -> EngineResult<()> {
        self.read_meta(block, buf, expect_gen)
    }

    /// Seal each block, then one merged write per leg.
    fn write_run(&self, first: u64, data: &mut [u8]) -> EngineResult<()> {
        self.write_meta_run(first, data).map(|_| ())
    }

    fn flush(&self) -> EngineResult<()> {
        self.set.flush().map(|_| ())
    }

    fn discard(&self, first: u64, count: u64) -> EngineResult<()> {
        self.set.discard(first, count).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::runs_of;

    #[test]
    fn runs_are_maximal() {
        let v = [true, true, false, true, false, false, true];
        assert_eq!(runs_of(v.len(), |i| v[i]), [(0, 2), (3, 4), (6, 7)]);
        assert!(runs_of(3, |_| false).is_empty());
    }
}
