//! Resolving data intents after a crash (DESIGN.md "For an overwrite in
//! place"; docs/format.md §10).
//!
//! A data intent `(block, old, new)` is logged, durably, before the
//! filesystem overwrites a data block in place, so after a crash the block
//! may hold its old content, its new content, or a torn mix on each leg,
//! while the tag table holds whatever the last committed transaction
//! stored. [`resolve`] runs after replay (so the tag table and the block
//! bitmap are as committed) and, for exactly the blocks named by intents in
//! the window:
//!
//! * skips a block the block bitmap says is free (its tag means nothing),
//!   and a block logged as a metadata image after its last intent (it was
//!   freed and reused as metadata; replay wrote it);
//! * builds the tags its content may legitimately match, in order of
//!   preference: the tag the tag table holds now (the committed state; it
//!   also covers a block reallocated and rewritten by a later committed
//!   transaction), then the `new` and `old` tags of its intents from the
//!   last to the first;
//! * reads the block on every in-service leg and takes the leg whose
//!   content matches the most preferred of those tags (ties: the lowest
//!   leg): that content is kept, copied over every leg that holds anything
//!   else (so the legs agree), and its tag stored;
//! * only when no leg matches any of them (torn on every leg) accepts the
//!   lowest readable leg's content as it is, tags it with the newest
//!   intent's generation, copies it to the other legs, and reports the
//!   block as torn. Tags are never recomputed for a block that matches.
//!
//! [`plan`] only reads and decides; [`copy`] writes the data copies.
//! Recovery logs the changed tag-table blocks (a block never written since
//! mkfs is initialised as an empty tag-table block) in a record and writes
//! them home *before* copying data: if power fails in between, the next
//! recovery finds the decided tag in the tag table, the kept leg still
//! matching it (it is never written), and decides the same again — even
//! when a torn copy happens to leave another leg matching an older tag.
//!
//! Relies on: replay having been flushed; exclusive access to the volume.

use crate::error::FsResult;
use crate::format::bitmap::test_bit;
use crate::format::header::{block_kind, BlockKind};
use crate::format::tag_table::{read_tag, write_tag};
use crate::format::{DescriptorEntry, Layout, Tag, META_HEADER_LEN};
use keelfs_engine::integrity::Volume;
use keelfs_engine::mirror::Region;
use keelfs_engine::EngineError;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use super::record::empty_block;
use super::scan::Scan;

/// What resolving the intents found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentReport {
    /// Distinct blocks named by intents in the window.
    pub blocks: u64,
    /// Blocks whose content matched one of their legitimate tags.
    pub matched: u64,
    /// Copies written over legs that held something else.
    pub legs_repaired: u64,
    /// Blocks torn on every leg: accepted as they were and re-tagged.
    pub torn: Vec<u64>,
    /// Blocks skipped because the block bitmap says they are free.
    pub skipped_free: u64,
    /// Blocks skipped because they were reused as metadata.
    pub skipped_metadata: u64,
    /// Blocks that could not be resolved (unreadable on every leg, or their
    /// tag-table block unreadable), with why.
    pub unresolved: Vec<(u64, String)>,
    /// Tags that changed in the tag table.
    pub tags_updated: u64,
}

/// What resolving the intents will write: the changed tag-table blocks
/// (whole blocks, header to be set by the caller) and the data copies.
#[derive(Default)]
pub(crate) struct Plan {
    pub tag_blocks: BTreeMap<u64, Vec<u8>>,
    /// (block, the content kept, the legs that need it).
    pub copies: Vec<(u64, Vec<u8>, Vec<usize>)>,
}

/// The intents on one block, in window order, and the index (in the scan)
/// of the record holding the last one.
struct Chain {
    intents: Vec<(Tag, Tag)>,
    last_record: usize,
}

/// Decide how to resolve the intents of `scan` (reads only).
pub(crate) fn plan(
    volume: &Volume,
    layout: &Layout,
    scan: &Scan,
) -> FsResult<(Plan, IntentReport)> {
    let mut report = IntentReport::default();
    let mut chains: BTreeMap<u64, Chain> = BTreeMap::new();
    for (i, r) in scan.records.iter().enumerate() {
        for e in &r.entries {
            if let DescriptorEntry::DataIntent { home, old, new } = *e {
                let chain = chains.entry(home).or_insert(Chain {
                    intents: Vec::new(),
                    last_record: i,
                });
                chain.intents.push((old, new));
                chain.last_record = i;
            }
        }
    }
    report.blocks = chains.len() as u64;
    let mut plan = Plan::default();
    if chains.is_empty() {
        return Ok((plan, report));
    }
    let mut bitmaps: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
    let mut tag_blocks: BTreeMap<u64, (Vec<u8>, bool)> = BTreeMap::new();
    let set = volume.set();
    let legs: Vec<usize> = set
        .in_service()
        .legs()
        .filter(|&l| l < set.num_legs())
        .collect();
    let bs = volume.block_size();

    for (&block, chain) in &chains {
        let reused_as_metadata = scan.records[chain.last_record + 1..]
            .iter()
            .any(|r| r.images.iter().any(|im| im.home == block));
        if reused_as_metadata {
            report.skipped_metadata += 1;
            continue;
        }
        if !allocated(volume, layout, block, &mut bitmaps) {
            report.skipped_free += 1;
            continue;
        }
        let at = match layout.tag_location(block) {
            Ok(at) => at,
            Err(e) => {
                report.unresolved.push((block, e.to_string()));
                continue;
            }
        };
        let (tag_block, changed) = match tag_blocks.entry(at.block) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => match load_tag_block(volume, at.block) {
                Ok(bytes) => e.insert((bytes, false)),
                Err(why) => {
                    log::error!("journal: data intent on block {block}: {why}");
                    report.unresolved.push((block, why));
                    continue;
                }
            },
        };
        let current = read_tag(&tag_block[META_HEADER_LEN..], at.offset)?;

        // Legitimate tags, most preferred first.
        let mut accept: Vec<Tag> = vec![current];
        for &(old, new) in chain.intents.iter().rev() {
            for t in [new, old] {
                if !accept.contains(&t) {
                    accept.push(t);
                }
            }
        }

        // Each leg's content and the newest tag it matches.
        let mut copies: Vec<(usize, Option<Vec<u8>>, Option<usize>)> = Vec::new();
        for &leg in &legs {
            let mut data = vec![0u8; bs];
            match set.read_leg(leg, block, &mut data) {
                Ok(()) => {
                    let rank = accept.iter().position(|t| t.matches(block, &data));
                    copies.push((leg, Some(data), rank));
                }
                Err(_) => copies.push((leg, None, None)),
            }
        }
        let best = copies
            .iter()
            .filter_map(|(leg, data, rank)| Some((rank.as_ref()?, leg, data.as_ref()?)))
            .min_by_key(|(rank, leg, _)| (**rank, **leg));
        let (tag, content) = match best {
            Some((&rank, _, data)) => {
                report.matched += 1;
                (accept[rank], data.clone())
            }
            None => {
                let Some((leg, data)) = copies
                    .iter()
                    .find_map(|(leg, data, _)| Some((*leg, data.as_ref()?)))
                else {
                    report
                        .unresolved
                        .push((block, "unreadable on every leg".to_string()));
                    continue;
                };
                let gen = chain.intents.last().map_or(current.gen, |(_, new)| new.gen);
                log::warn!(
                    "journal: data block {block} is torn on every leg (matches none of {} \
                     logged tags); keeping leg {leg}'s content and re-tagging it",
                    accept.len()
                );
                report.torn.push(block);
                (Tag::compute(block, gen, data), data.clone())
            }
        };
        let targets: Vec<usize> = copies
            .iter()
            .filter(|(_, data, _)| data.as_deref() != Some(&content[..]))
            .map(|(leg, _, _)| *leg)
            .collect();
        if !targets.is_empty() {
            report.legs_repaired += targets.len() as u64;
            plan.copies.push((block, content, targets));
        }
        if tag != current {
            write_tag(&mut tag_block[META_HEADER_LEN..], at.offset, tag)?;
            *changed = true;
            report.tags_updated += 1;
        }
    }
    plan.tag_blocks = tag_blocks
        .into_iter()
        .filter(|(_, (_, changed))| *changed)
        .map(|(b, (bytes, _))| (b, bytes))
        .collect();
    Ok((plan, report))
}

/// Write the data copies of `plan` and flush.
pub(crate) fn copy(volume: &Volume, plan: &Plan) -> FsResult<()> {
    let set = volume.set();
    for (block, content, legs) in &plan.copies {
        for &leg in legs {
            set.write_regions_sync(&[Region::new(leg, *block, 1)], content)?;
        }
    }
    if !plan.copies.is_empty() {
        set.flush()?;
    }
    Ok(())
}

/// Whether the block bitmap says `block` is in use (or cannot tell: then
/// it is treated as in use, which only costs a resolution).
fn allocated(
    volume: &Volume,
    layout: &Layout,
    block: u64,
    bitmaps: &mut HashMap<u64, Option<Vec<u8>>>,
) -> bool {
    let Ok(bit) = layout.block_bitmap_bit(block) else {
        return true;
    };
    let bitmap = bitmaps.entry(bit.block).or_insert_with(|| {
        let mut buf = vec![0u8; volume.block_size()];
        match volume.read_meta(bit.block, &mut buf, None) {
            Ok(()) => Some(buf),
            Err(e) => {
                log::warn!("journal: block bitmap block {}: {e}", bit.block);
                None
            }
        }
    });
    match bitmap {
        Some(buf) => test_bit(&buf[META_HEADER_LEN..], bit.bit_in_block()).unwrap_or(true),
        None => true,
    }
}

/// The tag-table block `block` as committed, or a fresh one if it was
/// never written.
fn load_tag_block(volume: &Volume, block: u64) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; volume.block_size()];
    match volume.read_meta(block, &mut buf, None) {
        Ok(()) => match block_kind(&buf) {
            Ok(BlockKind::TagTable) => Ok(buf),
            other => Err(format!("tag-table block {block} has kind {other:?}")),
        },
        Err(EngineError::Unwritten { .. }) => {
            empty_block(volume.block_size(), BlockKind::TagTable, 0).map_err(|e| e.to_string())
        }
        Err(e) => Err(format!("tag-table block {block}: {e}")),
    }
}
