//! Repair (`-y`, `-p`): make the disk agree with the model a check built.
//!
//! Every block fsck writes goes to EVERY given leg, stale and failed ones
//! included (they are being resynced), with explicit per-leg regions
//! (`MirrorSet::write_regions_sync`); metadata blocks are sealed with one
//! new generation G, above every generation seen on the filesystem, and the
//! journal superblock is left saying that the next transaction is G + 1.
//! In order:
//!
//! 1. heals: each bad copy is rewritten from the good copy on another leg,
//!    re-verified first (a metadata check, or the data tag);
//! 2. cross-linked data: blocks a file shares with another are copied to
//!    new blocks for the later file (with tags for their new address);
//! 3. extent trees and directories marked for a rebuild are built afresh
//!    in new blocks (old blocks are freed by the bitmaps below; new blocks
//!    are taken only from blocks nothing claimed when the check ran, so a
//!    crash in the middle of a repair never has two structures in one
//!    block);
//! 4. tags recomputed where the tag table was lost and the legs agree;
//! 5. inodes: every changed, cleared or new inode, grouped by inode-table
//!    block; tag-table blocks with new tags;
//! 6. both bitmaps, from what is in use (only blocks that differ);
//! 7. a flush of every leg, the journal superblock, then every leg's
//!    superblocks: primaries, flush, backups, flush. The superblock gets
//!    the counted free blocks and inodes, an empty orphan list, the
//!    lost+found inode, state clean (errors set if some were left), and
//!    every given member in use with last transaction G.
//!
//! Nothing is written when there is nothing to change. A repair is not
//! atomic (as e2fsck's is not); a crash in the middle leaves a filesystem
//! that another run of fsck repairs.

use crate::bitmaps::Which;
use crate::checker::{Checker, FileExtent, FsckError, HealCheck};
use crate::dirs::{assign_keys, build_directory};
use crate::extents::{build_extent_tree, merge_extents};
use keelfs_engine::integrity::{
    data_check, meta_check, meta_seal, meta_set_gen, meta_set_kind, Tag,
};
use keelfs_engine::mirror::Region;
use keelfs_fs::devset::encode_superblock_block;
use keelfs_fs::format::bitmap::{set_bit, set_padding};
use keelfs_fs::format::extent::ExtentLeaf;
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::layout::{INODE_SIZE, JOURNAL_SUPERBLOCK_BLOCK, TAG_SIZE};
use keelfs_fs::format::superblock::{MemberState, SuperblockState};
use keelfs_fs::format::tag_table::{read_tag, write_tag};
use keelfs_fs::format::{DataArea, FileType, InodeSlot, JournalSuperblock, META_HEADER_LEN};
use std::collections::{BTreeMap, HashMap};

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Blocks written (each to every leg).
    pub blocks_written: u64,
    /// The generation the repair wrote with (0 if nothing was written).
    pub generation: u64,
    /// What could not be done.
    pub problems: Vec<String>,
}

/// Hands out blocks of the data area nothing uses or used.
struct Allocator {
    avoid: crate::bits::Bits,
    start: u64,
    end: u64,
    cursor: u64,
}

impl Allocator {
    fn next(&mut self) -> Option<u64> {
        let b = self
            .avoid
            .first_clear_in(self.cursor, self.end)
            .or_else(|| self.avoid.first_clear_in(self.start, self.cursor))?;
        self.avoid.set(b);
        self.cursor = b + 1;
        Some(b)
    }
}

/// One repair of the filesystem `c` checked.
struct Repair {
    gen: u64,
    stats: RepairStats,
    alloc: Allocator,
    /// Good tag-table blocks read so far (for clones).
    tag_blocks: HashMap<u64, Option<Vec<u8>>>,
}

/// Repairs what `c` found; see the module docs. Returns what was done; an
/// error only if a write reached no leg at all.
pub fn repair(c: &mut Checker<'_>) -> Result<RepairStats, FsckError> {
    if c.journal_pending {
        return Ok(RepairStats::default());
    }
    let jsb_next = c.journal_sb.map_or(0, |j| j.oldest_sequence);
    let gen = c.max_gen.max(c.sb_gen).max(jsb_next) + 1;
    let l = c.layout;
    let mut avoid = c.claimed.clone();
    let usage = c.block_usage();
    for b in (l.data.start..l.data.end()).filter(|&b| usage.get(b)) {
        avoid.set(b);
    }
    let mut r = Repair {
        gen,
        stats: RepairStats::default(),
        alloc: Allocator {
            avoid,
            start: l.data.start,
            end: l.data.end(),
            cursor: l.data.start,
        },
        tag_blocks: HashMap::new(),
    };
    r.heal(c)?;
    r.clone_shared(c)?;
    r.rebuild_extents(c)?;
    r.rebuild_dirs(c)?;
    r.recompute_tags(c);
    r.settle_inode_fields(c);
    r.write_inodes(c)?;
    r.write_tags(c)?;
    r.write_bitmap(c, Which::Blocks)?;
    r.write_bitmap(c, Which::Inodes)?;
    if r.stats.blocks_written > 0 || c.plan.superblocks || c.plan.journal_superblock {
        r.flush(c);
        r.write_journal_superblock(c)?;
        r.write_superblocks(c)?;
        r.stats.generation = gen;
    }
    Ok(r.stats)
}

impl Repair {
    /// Writes `buf` at `block` on every leg.
    fn write_block(
        &mut self,
        c: &Checker<'_>,
        block: u64,
        buf: &[u8],
        what: &str,
    ) -> Result<(), FsckError> {
        let regions: Vec<Region> = (0..c.leg_count())
            .map(|leg| Region::new(leg, block, 1))
            .collect();
        self.write_regions(c, &regions, buf, what)
    }

    fn write_regions(
        &mut self,
        c: &Checker<'_>,
        regions: &[Region],
        buf: &[u8],
        what: &str,
    ) -> Result<(), FsckError> {
        match c.mirror().write_regions_sync(regions, buf) {
            Ok(failed) => {
                for leg in failed.legs() {
                    self.stats
                        .problems
                        .push(format!("writing {what} to {} failed", c.leg_name(leg)));
                }
                self.stats.blocks_written += 1;
                Ok(())
            }
            Err(e) => Err(FsckError::WriteFailed {
                what: what.to_string(),
                detail: e.to_string(),
            }),
        }
    }

    /// Seals `payload` as a metadata block of `kind` at `block` with this
    /// repair's generation and writes it on every leg.
    fn write_meta(
        &mut self,
        c: &Checker<'_>,
        block: u64,
        kind: BlockKind,
        payload: &[u8],
        what: &str,
    ) -> Result<(), FsckError> {
        let mut buf = vec![0u8; c.block_size()];
        buf[META_HEADER_LEN..].copy_from_slice(&payload[..c.block_size() - META_HEADER_LEN]);
        meta_set_kind(&mut buf, kind.to_u16());
        meta_set_gen(&mut buf, self.gen);
        meta_seal(block, &c.uuid, &mut buf);
        self.write_block(c, block, &buf, what)
    }

    /// Step 1: heals.
    fn heal(&mut self, c: &Checker<'_>) -> Result<(), FsckError> {
        for h in c.plan.heals.clone() {
            let mut buf = vec![0u8; c.block_size()];
            let sound = c.mirror().read_leg(h.source, h.block, &mut buf).is_ok()
                && match h.check {
                    HealCheck::Meta(gen) => meta_check(h.block, &c.uuid, &buf, gen).is_ok(),
                    HealCheck::Data(tag) => data_check(h.block, &buf, &tag).is_ok(),
                };
            if !sound {
                self.stats.problems.push(format!(
                    "block {}: the good copy on {} is good no more; not healed",
                    h.block,
                    c.leg_name(h.source)
                ));
                continue;
            }
            let regions: Vec<Region> = h
                .targets
                .iter()
                .map(|&leg| Region::new(leg, h.block, 1))
                .collect();
            self.write_regions(c, &regions, &buf, &format!("block {}", h.block))?;
        }
        Ok(())
    }

    /// The tag of data block `block`, from a good tag-table copy.
    fn tag_of(&mut self, c: &Checker<'_>, block: u64) -> Option<Tag> {
        let at = c.layout.tag_location(block).ok()?;
        let table = self
            .tag_blocks
            .entry(at.block)
            .or_insert_with(|| c.read_good(at.block, BlockKind::TagTable, None))
            .as_ref()?;
        read_tag(&table[META_HEADER_LEN..], at.offset).ok()
    }

    /// The bytes of data block `block` and the tag they carry: a copy that
    /// matches its tag, or, with no tag, the bytes every leg agrees on.
    fn good_data(&mut self, c: &Checker<'_>, block: u64) -> Option<(Vec<u8>, Tag)> {
        let tag = self.tag_of(c, block);
        let mut copies = Vec::new();
        for leg in 0..c.leg_count() {
            let mut buf = vec![0u8; c.block_size()];
            if c.mirror().read_leg(leg, block, &mut buf).is_err() {
                continue;
            }
            if let Some(t) = tag {
                if data_check(block, &buf, &t).is_ok() {
                    return Some((buf, t));
                }
            }
            copies.push(buf);
        }
        if tag.is_none() && !copies.is_empty() && copies.iter().all(|b| *b == copies[0]) {
            let t = Tag::compute(block, self.gen as u32, &copies[0]);
            return copies.into_iter().next().map(|b| (b, t));
        }
        None
    }

    /// Step 2: copies cross-linked blocks for their later claimants.
    fn clone_shared(&mut self, c: &mut Checker<'_>) -> Result<(), FsckError> {
        let inos: Vec<u64> = c
            .inodes
            .iter()
            .filter(|(_, r)| r.kept() && r.extents.iter().any(|e| e.clone))
            .map(|(&n, _)| n)
            .collect();
        for ino in inos {
            let extents = c
                .inodes
                .get(&ino)
                .map(|r| r.extents.clone())
                .unwrap_or_default();
            let mut out: Vec<FileExtent> = Vec::with_capacity(extents.len());
            for fe in extents {
                if !fe.clone {
                    out.push(fe);
                    continue;
                }
                let e = fe.leaf;
                for i in 0..u64::from(e.length) {
                    let Some(new) = self.alloc.next() else {
                        self.stats.problems.push(format!(
                            "inode {ino}: no free block to copy block {} to: left as a hole",
                            e.physical + i
                        ));
                        continue;
                    };
                    if !e.unwritten {
                        let old = e.physical + i;
                        let (bytes, tag) = match self.good_data(c, old) {
                            Some((bytes, tag)) => {
                                let t = Tag::compute(new, tag.gen, &bytes);
                                (bytes, t)
                            }
                            None => {
                                // No good copy to copy: the copy keeps the
                                // bytes, and a tag they cannot match, so
                                // reading it is an error, never wrong data.
                                let mut buf = vec![0u8; c.block_size()];
                                let _ = c.mirror().read_leg(0, old, &mut buf);
                                (buf, Tag::default())
                            }
                        };
                        self.write_block(c, new, &bytes, &format!("a copy of block {old}"))?;
                        c.plan.tag_updates.insert(new, tag);
                    }
                    out.push(FileExtent {
                        leaf: ExtentLeaf {
                            logical: e.logical + i,
                            length: 1,
                            unwritten: e.unwritten,
                            physical: new,
                        },
                        clone: false,
                    });
                }
            }
            if let Some(rec) = c.inodes.get_mut(&ino) {
                rec.extents = merge_extents(out);
                rec.extents_rebuild = true;
            }
        }
        Ok(())
    }

    /// Step 3a: extent trees.
    fn rebuild_extents(&mut self, c: &mut Checker<'_>) -> Result<(), FsckError> {
        let inos: Vec<u64> = c
            .inodes
            .iter()
            .filter(|(_, r)| {
                r.kept() && r.extents_rebuild && matches!(r.inode.data, DataArea::Extents(_))
            })
            .map(|(&n, _)| n)
            .collect();
        let payload_len = c.layout.payload_len();
        for ino in inos {
            let mut leaves: Vec<ExtentLeaf> = c
                .inodes
                .get(&ino)
                .map(|r| r.extents.iter().map(|e| e.leaf).collect())
                .unwrap_or_default();
            leaves.sort_by_key(|e| e.logical);
            let alloc = &mut self.alloc;
            let built = build_extent_tree(&leaves, payload_len, self.gen, &mut || alloc.next());
            let (root, writes) = match built {
                Ok(b) => b,
                Err(e) => {
                    self.stats.problems.push(format!(
                        "inode {ino}: its extent tree cannot be rebuilt: {e}"
                    ));
                    continue;
                }
            };
            for (block, payload) in &writes {
                self.write_meta(
                    c,
                    *block,
                    BlockKind::ExtentNode,
                    payload,
                    &format!("an extent node of inode {ino}"),
                )?;
            }
            if let Some(rec) = c.inodes.get_mut(&ino) {
                rec.inode.data = DataArea::Extents(root);
                rec.extent_nodes = writes.iter().map(|w| w.0).collect();
                rec.extents_rebuild = false;
            }
        }
        Ok(())
    }

    /// Step 3b: directories.
    fn rebuild_dirs(&mut self, c: &mut Checker<'_>) -> Result<(), FsckError> {
        let inos: Vec<u64> = c
            .inodes
            .iter()
            .filter(|(_, r)| r.kept() && r.dir_rebuild && r.inode.file_type == FileType::Directory)
            .map(|(&n, _)| n)
            .collect();
        let payload_len = c.layout.payload_len();
        for ino in inos {
            let entries = c
                .inodes
                .get_mut(&ino)
                .map(|r| std::mem::take(&mut r.entries))
                .unwrap_or_default();
            let (entries, refused) = assign_keys(entries);
            for e in refused {
                self.stats.problems.push(format!(
                    "directory {ino}: no key is free for '{}' (inode {}): it is left out",
                    String::from_utf8_lossy(&e.name),
                    e.inode
                ));
            }
            let alloc = &mut self.alloc;
            let built = match build_directory(&entries, payload_len, self.gen, &mut || alloc.next())
            {
                Ok(b) => b,
                Err(e) => {
                    self.stats
                        .problems
                        .push(format!("directory {ino} cannot be rebuilt: {e}"));
                    if let Some(rec) = c.inodes.get_mut(&ino) {
                        rec.entries = entries;
                    }
                    continue;
                }
            };
            for (block, kind, payload) in &built.blocks {
                self.write_meta(c, *block, *kind, payload, &format!("directory {ino}"))?;
            }
            if let Some(rec) = c.inodes.get_mut(&ino) {
                rec.inode.data = DataArea::Directory(built.root);
                rec.dir_blocks = built.blocks.iter().map(|b| b.0).collect();
                rec.entries = entries;
                rec.dir_rebuild = false;
            }
        }
        Ok(())
    }

    /// Step 4: tags of data whose tag-table block was lost.
    fn recompute_tags(&mut self, c: &mut Checker<'_>) {
        for block in c.plan.recompute_tags.clone() {
            let mut copies = Vec::new();
            for leg in 0..c.leg_count() {
                let mut buf = vec![0u8; c.block_size()];
                if c.mirror().read_leg(leg, block, &mut buf).is_ok() {
                    copies.push(buf);
                }
            }
            if copies.is_empty() || copies.iter().any(|b| *b != copies[0]) {
                self.stats.problems.push(format!(
                    "data block {block}: its tag is lost and the legs hold different bytes: \
                     left without a valid tag"
                ));
                continue;
            }
            c.plan
                .tag_updates
                .insert(block, Tag::compute(block, self.gen as u32, &copies[0]));
        }
    }

    /// Blocks held and directory sizes after the rebuilds.
    fn settle_inode_fields(&mut self, c: &mut Checker<'_>) {
        let bs = c.layout.block_size as u64;
        for rec in c.inodes.values_mut().filter(|r| r.kept()) {
            rec.inode.blocks = rec.blocks_held();
            if rec.inode.file_type == FileType::Directory {
                rec.inode.size = bs * rec.dir_blocks.len() as u64;
            }
        }
    }

    /// Step 5a: inode-table blocks.
    fn write_inodes(&mut self, c: &Checker<'_>) -> Result<(), FsckError> {
        let mut by_block: BTreeMap<u64, Vec<(u64, InodeSlot)>> = BTreeMap::new();
        let mut put = |c: &Checker<'_>, ino: u64, slot: InodeSlot| {
            if let Ok(at) = c.layout.inode_location(ino) {
                by_block.entry(at.block).or_default().push((ino, slot));
            }
        };
        for (&ino, rec) in &c.inodes {
            if rec.kept() {
                if rec.created || rec.salvaged || rec.inode != rec.original {
                    put(c, ino, InodeSlot::Used(rec.inode.clone()));
                }
            } else if !rec.created {
                put(
                    c,
                    ino,
                    InodeSlot::Free {
                        generation: rec.original.generation,
                    },
                );
            }
        }
        for (&ino, &generation) in &c.plan.clear_slots {
            if c.kept(ino).is_none() && !c.inodes.contains_key(&ino) {
                put(c, ino, InodeSlot::Free { generation });
            }
        }
        for &block in &c.plan.reset_table_blocks {
            by_block.entry(block).or_default();
        }
        let payload_len = c.layout.payload_len();
        for (block, slots) in by_block {
            let mut payload = if c.plan.reset_table_blocks.contains(&block) {
                vec![0u8; payload_len]
            } else {
                c.read_good(block, BlockKind::InodeTable, None)
                    .map(|b| b[META_HEADER_LEN..].to_vec())
                    .unwrap_or_else(|| vec![0u8; payload_len])
            };
            for (ino, slot) in slots {
                let Ok(at) = c.layout.inode_location(ino) else {
                    continue;
                };
                let Some(dst) = payload.get_mut(at.offset..at.offset + INODE_SIZE) else {
                    continue;
                };
                if let Err(e) = slot.encode(dst) {
                    self.stats
                        .problems
                        .push(format!("inode {ino} cannot be written: {e}"));
                }
            }
            self.write_meta(
                c,
                block,
                BlockKind::InodeTable,
                &payload,
                &format!("inode-table block {block}"),
            )?;
        }
        Ok(())
    }

    /// Step 5b: tag-table blocks with new tags.
    fn write_tags(&mut self, c: &Checker<'_>) -> Result<(), FsckError> {
        let mut by_block: BTreeMap<u64, Vec<(usize, Tag)>> = BTreeMap::new();
        for (&block, &tag) in &c.plan.tag_updates {
            if let Ok(at) = c.layout.tag_location(block) {
                by_block.entry(at.block).or_default().push((at.offset, tag));
            }
        }
        for &block in &c.plan.reset_tag_blocks {
            by_block.entry(block).or_default();
        }
        let payload_len = c.layout.payload_len();
        for (block, tags) in by_block {
            let mut payload = if c.plan.reset_tag_blocks.contains(&block) {
                vec![0u8; payload_len]
            } else {
                c.read_good(block, BlockKind::TagTable, None)
                    .map(|b| b[META_HEADER_LEN..].to_vec())
                    .unwrap_or_else(|| vec![0u8; payload_len])
            };
            for (offset, tag) in tags {
                debug_assert_eq!(offset % TAG_SIZE, 0);
                let _ = write_tag(&mut payload, offset, tag);
            }
            self.write_meta(
                c,
                block,
                BlockKind::TagTable,
                &payload,
                &format!("tag-table block {block}"),
            )?;
        }
        Ok(())
    }

    /// Step 6: one bitmap, block by block where it differs.
    fn write_bitmap(&mut self, c: &Checker<'_>, which: Which) -> Result<(), FsckError> {
        let usage = match which {
            Which::Blocks => c.block_usage(),
            Which::Inodes => c.inode_usage(),
        };
        let (kind, rewrite) = match which {
            Which::Blocks => (BlockKind::BlockBitmap, &c.plan.block_bitmap_rewrite),
            Which::Inodes => (BlockKind::InodeBitmap, &c.plan.inode_bitmap_rewrite),
        };
        let (region, items) = c.bitmap_geometry(which);
        let bits = c.layout.bits_per_bitmap_block();
        let payload_len = c.layout.payload_len();
        for m in 0..region.blocks {
            let valid = c.layout.valid_bits_in_bitmap_block(items, m);
            let first = m * bits;
            let mut desired = vec![0u8; payload_len];
            let mut i = usage.first_set_in(first, first + valid as u64);
            while let Some(item) = i {
                let _ = set_bit(&mut desired, (item - first) as usize);
                i = usage.first_set_in(item + 1, first + valid as u64);
            }
            set_padding(&mut desired, valid);
            let block = region.start + m;
            let current = c.read_good(block, kind, None);
            let same = current
                .as_ref()
                .is_some_and(|b| b[META_HEADER_LEN..] == desired[..]);
            if !same || rewrite.contains(&m) {
                self.write_meta(c, block, kind, &desired, &format!("{kind:?} block {m}"))?;
            }
        }
        Ok(())
    }

    /// A barrier on every leg.
    fn flush(&mut self, c: &Checker<'_>) {
        for leg in c.set.legs() {
            if let Err(e) = leg.device.flush() {
                self.stats
                    .problems
                    .push(format!("flushing {} failed: {e}", leg.name()));
            }
        }
    }

    /// Step 7a: the journal superblock: an empty ring whose next
    /// transaction is G + 1 (its header generation is its oldest sequence,
    /// as the journal writes it, so generations only grow).
    fn write_journal_superblock(&mut self, c: &Checker<'_>) -> Result<(), FsckError> {
        let mut jsb = c
            .journal_sb
            .unwrap_or_else(|| JournalSuperblock::new(&c.layout, 0));
        jsb.oldest_sequence = self.gen + 1;
        let mut payload = vec![0u8; c.layout.payload_len()];
        jsb.encode(&mut payload)?;
        let gen = self.gen;
        self.gen = jsb.oldest_sequence;
        let written = self.write_meta(
            c,
            JOURNAL_SUPERBLOCK_BLOCK,
            BlockKind::JournalSuperblock,
            &payload,
            "the journal superblock",
        );
        self.gen = gen;
        written
    }

    /// Step 7b: every leg's superblocks.
    fn write_superblocks(&mut self, c: &Checker<'_>) -> Result<(), FsckError> {
        let l = c.layout;
        let mut sb = c.sb.clone();
        sb.free_blocks = l.data.blocks - c.block_usage().count_in(l.data.start, l.data.end());
        sb.free_inodes = l.inode_count - c.inode_usage().count_in(0, l.inode_count);
        if c.plan.orphan_list_reset {
            sb.orphan_head = 0;
        }
        sb.state = SuperblockState {
            clean_unmount: true,
            errors: c.report.unfixable_count() > 0,
        };
        sb.last_written = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(sb.last_written, |d| d.as_secs());
        for &m in &c.plan.members_in_use {
            if let Some(member) = sb.members.get_mut(m as usize) {
                member.state = MemberState::InUse;
            }
        }
        for leg in c.set.legs() {
            if let Some(member) = sb.members.get_mut(leg.member as usize) {
                member.last_transaction = self.gen;
            }
        }
        for address in [0, l.backup_superblock] {
            for (p, leg) in c.set.legs().iter().enumerate() {
                let buf = encode_superblock_block(&sb, leg.member, address, self.gen)?;
                self.write_regions(
                    c,
                    &[Region::new(p, address, 1)],
                    &buf,
                    &format!("the superblock at block {address}"),
                )?;
            }
            self.flush(c);
        }
        Ok(())
    }
}
