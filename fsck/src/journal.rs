//! Pass 2: the journal (§10).
//!
//! The journal superblock (block 1) is checked on every leg like any fixed
//! block. Then the ring: if the transaction at the journal superblock's
//! position is committed (descriptors of its sequence, their images, and a
//! commit block whose block count and crc match, on some leg), the journal
//! must be replayed before anything else is looked at.
//!
//! Replay is the journal's own `keelfs_fs::journal::recover` ([`replay`]),
//! run by a repair before anything else is read, as at mount (images
//! written home on the in-service legs, data intents resolved, the tail
//! moved past everything). Under `-n` the same replay runs over in-memory
//! overlays of the devices (`run.rs`): nothing is written and the check
//! sees what the next mount will. Only a journal that cannot be replayed
//! (a malformed record) is left in the ring, and then it is an error
//! (exit 4) and the check looks at the filesystem without it. A ring holding no
//! committed transaction (an empty ring, or a torn last transaction that
//! recovery discards) needs nothing.
//!
//! A journal superblock with no good copy, or never written, is rewritten
//! by repair as an empty journal.

use crate::checker::{Checker, FsckError};
use crate::report::Pass;
use keelfs_engine::integrity::{meta_check, meta_kind};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::journal::{Commit, Descriptor, JournalSuperblock};
use keelfs_fs::format::layout::JOURNAL_SUPERBLOCK_BLOCK;
use keelfs_fs::format::META_HEADER_LEN;

use crate::metadata::MetaRead;
use keelfs_fs::devset::DeviceSet;

/// What [`replay`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Committed transactions, written home; the text says what.
    Records(String),
    /// No transaction, but a journal superblock the legs disagreed on,
    /// rewritten.
    SuperblockOnly(String),
}

/// Replays the journal of `set` (a repair, before the check): every
/// committed transaction is written home on the in-service legs (stale and
/// failed legs are resynced by the check afterwards) and the journal is
/// left empty. Returns what was written, or `None` if nothing was; the
/// caller identifies the set again afterwards.
pub fn replay(set: &DeviceSet) -> Result<Option<Replayed>, FsckError> {
    let layout = set.superblock().layout;
    let r = keelfs_fs::journal::recover(set.volume(), &layout)?;
    if !r.found_records() {
        // Recovery rewrites a journal superblock the legs disagree on.
        return Ok(r.superblock_written.then(|| {
            Replayed::SuperblockOnly(
                "journal superblock rewritten: the legs held different copies".to_string(),
            )
        }));
    }
    let mut text = format!(
        "journal replayed: {} transactions (sequences {}..={}), {} blocks written home, {} \
         data intents ({} torn, {} unresolved); the journal continues at sequence {}",
        r.transactions_replayed,
        r.first_sequence.unwrap_or(0),
        r.last_sequence.unwrap_or(0),
        r.blocks_written,
        r.intents.blocks,
        r.intents.torn.len(),
        r.intents.unresolved.len(),
        r.next_sequence
    );
    for (block, why) in &r.intents.unresolved {
        text.push_str(&format!("\n  data block {block}: intent unresolved: {why}"));
    }
    Ok(Some(Replayed::Records(text)))
}

/// A committed transaction found in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedTransaction {
    pub sequence: u64,
    /// Descriptor and image blocks.
    pub blocks: u64,
}

impl Checker<'_> {
    /// Pass 2; see the module documentation.
    pub fn check_journal(&mut self) -> Result<(), FsckError> {
        let layout = self.layout;
        let decode =
            move |p: &[u8]| JournalSuperblock::decode(p).and_then(|j| j.validate(Some(&layout)));
        let read = self.read_meta(
            JOURNAL_SUPERBLOCK_BLOCK,
            BlockKind::JournalSuperblock,
            None,
            &decode,
            "journal superblock",
        );
        let jsb = match read {
            MetaRead::Good { bytes, .. } => {
                JournalSuperblock::decode(&bytes[META_HEADER_LEN..]).ok()
            }
            MetaRead::Unwritten => {
                self.report.error(
                    Pass::Journal,
                    true,
                    "the journal superblock was never written: an empty journal is written",
                );
                self.plan.journal_superblock = true;
                None
            }
            MetaRead::Lost(why) => {
                self.report.error(
                    Pass::Journal,
                    true,
                    format!(
                        "the journal superblock has no good copy ({why}): an empty journal is \
                         written, and whatever the journal held is lost"
                    ),
                );
                self.plan.journal_superblock = true;
                None
            }
        };
        let Some(jsb) = jsb else {
            return Ok(());
        };
        self.max_gen = self.max_gen.max(jsb.oldest_sequence.saturating_sub(1));
        self.journal_sb = Some(jsb);
        if let Some(tx) = self.committed_transaction(&jsb) {
            self.journal_pending = true;
            self.report.error(
                Pass::Journal,
                true,
                format!(
                    "the journal holds committed transactions (from sequence {}, {} blocks) \
                     that were not replayed: the filesystem is checked as it is; a repair \
                     (-y) or a mount replays them",
                    tx.sequence, tx.blocks
                ),
            );
        }
        Ok(())
    }

    /// The first transaction of the ring, if some leg holds it committed.
    pub fn committed_transaction(&self, jsb: &JournalSuperblock) -> Option<CommittedTransaction> {
        (0..self.leg_count()).find_map(|leg| self.committed_on_leg(leg, jsb))
    }

    /// The first transaction of the ring on `leg`, if it is committed there.
    fn committed_on_leg(
        &self,
        leg: usize,
        jsb: &JournalSuperblock,
    ) -> Option<CommittedTransaction> {
        let ring = jsb.ring_blocks.min(self.layout.journal.blocks);
        if ring == 0 {
            return None;
        }
        let seq = jsb.oldest_sequence;
        let bs = self.block_size();
        let address = |pos: u64| self.layout.journal.start + (jsb.oldest_position + pos) % ring;
        let read = |pos: u64| -> Option<Vec<u8>> {
            let mut buf = vec![0u8; bs];
            self.mirror().read_leg(leg, address(pos), &mut buf).ok()?;
            Some(buf)
        };
        let sealed = |buf: &[u8], pos: u64, kind: BlockKind| {
            meta_check(address(pos), &self.uuid, buf, Some(seq)).is_ok()
                && meta_kind(buf) == kind.to_u16()
        };
        let mut raw: Vec<Vec<u8>> = Vec::new();
        let mut images = 0u64;
        loop {
            let pos = raw.len() as u64;
            if pos >= ring {
                return None;
            }
            let buf = read(pos)?;
            if !sealed(&buf, pos, BlockKind::JournalDescriptor) {
                return None;
            }
            let d = Descriptor::decode(&buf[META_HEADER_LEN..]).ok()?;
            images += d.image_count() as u64;
            raw.push(buf);
            if !d.more {
                break;
            }
        }
        let descriptors = raw.len() as u64;
        let blocks = descriptors.checked_add(images)?;
        if blocks >= ring {
            return None;
        }
        for pos in descriptors..blocks {
            raw.push(read(pos)?);
        }
        let commit_buf = read(blocks)?;
        if !sealed(&commit_buf, blocks, BlockKind::JournalCommit) {
            return None;
        }
        let commit = Commit::decode(&commit_buf[META_HEADER_LEN..]).ok()?;
        let crc = Commit::checksum(raw.iter().map(|b| &b[..]));
        (commit.sequence == seq && commit.blocks == blocks && commit.crc == crc).then_some(
            CommittedTransaction {
                sequence: seq,
                blocks,
            },
        )
    }
}
