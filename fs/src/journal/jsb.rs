//! Reading and writing the journal superblock (block 1, kind 2): where the
//! oldest record still needed starts, and its sequence.
//!
//! What it promises:
//!
//! * [`read`] looks at every in-service leg, keeps the copies that are
//!   sealed journal superblocks matching the layout, and returns the one
//!   with the highest oldest sequence (a leg whose last update did not land
//!   holds an older but still usable tail: the space it covers is only
//!   reused after an update is flushed on every leg). It also says whether
//!   the legs disagree, so recovery can rewrite it.
//! * [`write`] seals and writes a new one (header generation = its oldest
//!   sequence, so generations only grow) and flushes: when it returns, the
//!   new tail is durable on every in-service leg.
//! * Torn writes cannot mix two versions: every byte that changes between
//!   two journal superblocks (header crc and generation, the 32-byte
//!   record) lies in the first 512-byte sector, the rest of the block is
//!   always zero.
//!
//! Relies on: the layout's ring geometry; the engine's seal.

use crate::error::{FsError, FsResult};
use crate::format::header::{block_kind, BlockKind};
use crate::format::{JournalSuperblock, Layout, META_HEADER_LEN};
use keelfs_engine::integrity::{meta_check, Volume};

use super::record::empty_block;

/// The journal superblock as found on the legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FoundJsb {
    pub jsb: JournalSuperblock,
    /// Some in-service leg holds something else (an older copy, a bad one).
    pub legs_disagree: bool,
}

/// Read the journal superblock from every in-service leg (see the module
/// documentation).
pub(crate) fn read(volume: &Volume, layout: &Layout) -> FsResult<FoundJsb> {
    let set = volume.set();
    let block = layout.journal_superblock;
    let mut buf = vec![0u8; volume.block_size()];
    let mut copies: Vec<Option<(JournalSuperblock, Vec<u8>)>> = Vec::new();
    let mut problems = Vec::new();
    for leg in set.in_service().legs() {
        if leg >= set.num_legs() {
            continue;
        }
        let decoded = set
            .read_leg(leg, block, &mut buf)
            .map_err(|e| e.to_string())
            .and_then(|()| decode(volume, layout, &buf));
        match decoded {
            Ok(jsb) => copies.push(Some((jsb, buf.clone()))),
            Err(why) => {
                problems.push(format!("leg {leg}: {why}"));
                copies.push(None);
            }
        }
    }
    let best = copies
        .iter()
        .flatten()
        .max_by_key(|(jsb, _)| jsb.oldest_sequence)
        .cloned();
    match best {
        Some((jsb, bytes)) => Ok(FoundJsb {
            jsb,
            legs_disagree: copies
                .iter()
                .any(|c| c.as_ref().is_none_or(|(_, b)| *b != bytes)),
        }),
        None if copies.is_empty() => Err(FsError::Engine(keelfs_engine::EngineError::NoLegs)),
        None => Err(FsError::Corrupt(format!(
            "journal superblock (block {block}) is unusable on every leg: {}",
            problems.join("; ")
        ))),
    }
}

fn decode(volume: &Volume, layout: &Layout, buf: &[u8]) -> Result<JournalSuperblock, String> {
    meta_check(layout.journal_superblock, volume.fs_uuid(), buf, None)
        .map_err(|m| m.to_string())?;
    let kind = block_kind(buf).map_err(|e| e.to_string())?;
    if kind != BlockKind::JournalSuperblock {
        return Err(format!("block kind {kind:?}, not a journal superblock"));
    }
    let jsb = JournalSuperblock::decode(&buf[META_HEADER_LEN..]).map_err(|e| e.to_string())?;
    jsb.validate(Some(layout)).map_err(|e| e.to_string())?;
    Ok(jsb)
}

/// Write `jsb` to every in-service leg and flush.
pub(crate) fn write(volume: &Volume, layout: &Layout, jsb: &JournalSuperblock) -> FsResult<()> {
    jsb.validate(Some(layout))?;
    let mut block = empty_block(
        volume.block_size(),
        BlockKind::JournalSuperblock,
        jsb.oldest_sequence,
    )?;
    jsb.encode(&mut block[META_HEADER_LEN..])?;
    volume.write_meta(layout.journal_superblock, &mut block)?;
    volume.set().flush()?;
    Ok(())
}
