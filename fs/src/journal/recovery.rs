//! Recovery: make the home locations hold exactly the committed state,
//! at mount (before the metadata cache exists) and in fsck.
//!
//! [`recover`] does, in this order (docs/format.md §10 "Recovery"):
//!
//! 1. read the journal superblock from every leg ([`jsb::read`]) and scan
//!    the ring from its tail ([`scan`]): the committed records, in order;
//! 2. replay: for every home block, the newest image of it in the window
//!    that no revoke cancels (a revoke in a record of sequence `r` cancels
//!    every image of that block in records of sequence `≤ r`), written home
//!    on every in-service leg (images are already sealed for their homes),
//!    then a flush;
//! 3. resolve the data intents of the window (`resolve.rs`): the blocks
//!    named by intents are read on every leg and a content and tag chosen;
//!    the tag-table blocks that change are logged as one more record (the
//!    *recovery record*, sequence `next`), flushed, written home and
//!    flushed (so a crash in the middle cannot tear them), and only then is
//!    the chosen content copied over the legs that differ, and flushed;
//! 4. move the tail past everything: the journal superblock gets the
//!    position after the last record and the first sequence the next
//!    mount may use, then a flush.
//!
//! Promises:
//! * Idempotent: a crash at any point of a recovery leaves a state that the
//!   next recovery brings to the same result (steps 2 and 3 only write what
//!   they would write again; the tail moves only once everything is
//!   durable).
//! * Bounded by the ring: at most J blocks are scanned per leg, and only
//!   blocks named in the window are read or written.
//! * Sequences restart above anything a crash can have left half-written:
//!   `next = max(last record + 2, oldest + 1)` (as jbd2 does), since only
//!   the record after the last committed one can have been in flight.
//! * With nothing in the ring, nothing is written (unless the legs hold
//!   different journal superblocks, which are then made to agree).
//!
//! Relies on: exclusive access to the volume (no cache, no other writer);
//! every leg that should count being in service in the mirror set.

use crate::error::{FsError, FsResult};
use crate::format::header::set_block_generation;
use crate::format::{DescriptorEntry, JournalSuperblock, Layout};
use keelfs_engine::integrity::{meta_check, Volume};
use keelfs_engine::mirror::Region;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::jsb;
use super::record;
use super::resolve::{self, IntentReport};
use super::ring::{record_len, RingGeometry};
use super::scan::{self, ImageRef, Scan};

/// Home writes per plugged batch during replay.
const REPLAY_BATCH: usize = 256;

/// What a recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The oldest sequence the journal superblock named: every transaction
    /// before it was already home.
    pub oldest_sequence: u64,
    /// Transaction records replayed (records with images or revokes).
    pub transactions_replayed: u64,
    /// Intent-only records found.
    pub intent_records: u64,
    /// Sequence of the first and last record found.
    pub first_sequence: Option<u64>,
    pub last_sequence: Option<u64>,
    /// Sequence of the last transaction record replayed: the filesystem is
    /// now as that transaction committed it.
    pub last_transaction: Option<u64>,
    /// Distinct home blocks written by replay.
    pub blocks_written: u64,
    /// Images not replayed because a revoke cancels them.
    pub images_revoked: u64,
    /// Copies of ring blocks that were bad on a leg and read from another.
    pub bad_ring_copies: u64,
    /// Data intents resolved.
    pub intents: IntentReport,
    /// Sequence of the recovery record written for the tag table, if any.
    pub recovery_record: Option<u64>,
    /// The tag-table blocks were written home leg by leg because the
    /// recovery record did not fit the ring (never expected).
    pub tags_written_without_record: bool,
    /// The sequence the journal continues with.
    pub next_sequence: u64,
    /// Whether the journal superblock was rewritten.
    pub superblock_written: bool,
}

impl RecoveryReport {
    /// Whether recovery found anything to do.
    pub fn found_records(&self) -> bool {
        self.first_sequence.is_some()
    }
}

/// Recover the journal of `volume`. See the module documentation.
pub fn recover(volume: &Volume, layout: &Layout) -> FsResult<RecoveryReport> {
    if volume.block_size() != layout.block_size as usize
        || volume.num_blocks() < layout.device_blocks
    {
        return Err(FsError::Invalid(format!(
            "recovery: a volume of {} blocks of {} bytes for a layout of {} blocks of {}",
            volume.num_blocks(),
            volume.block_size(),
            layout.device_blocks,
            layout.block_size
        )));
    }
    let found = jsb::read(volume, layout)?;
    let jsb = found.jsb;
    let scan = scan::scan(volume, layout, &jsb)?;
    let mut report = RecoveryReport {
        oldest_sequence: jsb.oldest_sequence,
        next_sequence: jsb.oldest_sequence,
        bad_ring_copies: scan.bad_copies,
        ..RecoveryReport::default()
    };
    let (Some(first), Some(last)) = (scan.records.first(), scan.records.last()) else {
        if found.legs_disagree {
            jsb::write(volume, layout, &jsb)?;
            report.superblock_written = true;
        }
        return Ok(report);
    };
    report.first_sequence = Some(first.seq);
    report.last_sequence = Some(last.seq);
    for r in &scan.records {
        if r.intent_only() {
            report.intent_records += 1;
        } else {
            report.transactions_replayed += 1;
            report.last_transaction = Some(r.seq);
        }
    }
    log::info!(
        "journal: recovering records {}..={} ({} transactions, {} intent records)",
        first.seq,
        last.seq,
        report.transactions_replayed,
        report.intent_records
    );

    replay(volume, &scan, &mut report)?;
    volume.set().flush()?;

    let geo = RingGeometry {
        start: jsb.ring_start,
        blocks: jsb.ring_blocks,
    };
    let mut next = (last.seq + 2).max(jsb.oldest_sequence + 1);
    let mut end = scan.end;
    let (plan, intents) = resolve::plan(volume, layout, &scan)?;
    report.intents = intents;
    if !plan.tag_blocks.is_empty() {
        let live: u64 = scan.records.iter().map(|r| r.len).sum();
        let changed = plan.tag_blocks.clone();
        let len = write_tag_blocks(volume, layout, geo, end, next, live, changed, &mut report)?;
        if let Some(len) = len {
            report.recovery_record = Some(next);
            end = geo.advance(end, len);
            next += 1;
        }
    }
    resolve::copy(volume, &plan)?;
    jsb::write(
        volume,
        layout,
        &JournalSuperblock {
            ring_start: jsb.ring_start,
            ring_blocks: jsb.ring_blocks,
            oldest_sequence: next,
            oldest_position: end,
        },
    )?;
    report.superblock_written = true;
    report.next_sequence = next;
    Ok(report)
}

/// Step 2: write the newest unrevoked image of every home block.
fn replay(volume: &Volume, scan: &Scan, report: &mut RecoveryReport) -> FsResult<()> {
    let mut revoked: HashMap<u64, u64> = HashMap::new();
    for r in &scan.records {
        for e in &r.entries {
            if let DescriptorEntry::Revoke { home } = e {
                let seq = revoked.entry(*home).or_insert(r.seq);
                *seq = (*seq).max(r.seq);
            }
        }
    }
    let mut newest: BTreeMap<u64, (u64, ImageRef)> = BTreeMap::new();
    for r in &scan.records {
        for image in &r.images {
            if revoked.get(&image.home).is_some_and(|&rv| rv >= r.seq) {
                report.images_revoked += 1;
                continue;
            }
            newest.insert(image.home, (r.seq, *image));
        }
    }
    let set = volume.set();
    let bs = volume.block_size();
    let all: Vec<(u64, (u64, ImageRef))> = newest.into_iter().collect();
    for batch in all.chunks(REPLAY_BATCH) {
        let mut plug = set.plug();
        for (home, (seq, image)) in batch {
            let mut bytes = vec![0u8; bs];
            set.read_leg(image.leg, image.address, &mut bytes)?;
            if let Err(m) = meta_check(*home, volume.fs_uuid(), &bytes, Some(*seq)) {
                return Err(FsError::Corrupt(format!(
                    "journal image of block {home} (record {seq}) changed on leg {} while \
                     recovering: {m}",
                    image.leg
                )));
            }
            plug.write_shared(*home, Arc::from(bytes))?;
        }
        plug.unplug()?;
        report.blocks_written += batch.len() as u64;
    }
    Ok(())
}

/// Step 3's writes: log the changed tag-table blocks as the recovery record
/// `seq` at ring position `pos` (after `live` live blocks), then write them
/// home. Returns the record's length, or `None` if it did not fit and the
/// blocks were written home leg by leg instead.
#[allow(clippy::too_many_arguments)]
fn write_tag_blocks(
    volume: &Volume,
    layout: &Layout,
    geo: RingGeometry,
    pos: u64,
    seq: u64,
    live: u64,
    changed: BTreeMap<u64, Vec<u8>>,
    report: &mut RecoveryReport,
) -> FsResult<Option<u64>> {
    let capacity = super::descriptor_capacity(layout);
    let set = volume.set();
    let mut images: Vec<(u64, Arc<[u8]>)> = Vec::with_capacity(changed.len());
    for (block, mut bytes) in changed {
        set_block_generation(&mut bytes, seq)?;
        volume.seal_run(block, &mut bytes);
        images.push((block, Arc::from(bytes)));
    }
    let len = record_len(images.len(), images.len(), capacity);
    let room = (geo.blocks - 1).saturating_sub(live);
    if len <= room {
        let entries: Vec<DescriptorEntry> = images
            .iter()
            .map(|(home, _)| DescriptorEntry::Image { home: *home })
            .collect();
        let built = record::build(
            volume,
            geo,
            pos,
            seq,
            &entries,
            images.iter().map(|(_, b)| b.clone()).collect(),
            capacity,
        )?;
        record::write(set, &built)?;
        let mut plug = set.plug();
        for (home, bytes) in &images {
            plug.write_shared(*home, bytes.clone())?;
        }
        plug.unplug()?;
        set.flush()?;
        return Ok(Some(built.len()));
    }
    log::warn!(
        "journal: recovery record of {len} blocks does not fit the {room} free ring blocks; \
         writing {} tag-table blocks home one leg at a time",
        images.len()
    );
    report.tags_written_without_record = true;
    for leg in set.in_service().legs().filter(|&l| l < set.num_legs()) {
        for (home, bytes) in &images {
            set.write_regions_sync(&[Region::new(leg, *home, 1)], bytes)?;
        }
        set.leg_device(leg).flush()?;
    }
    Ok(None)
}
