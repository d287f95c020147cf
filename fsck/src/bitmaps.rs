//! Pass 5 (bitmaps against reachability) and pass 9 (summary counts), and
//! the loading of both bitmaps (their blocks checked on every leg, pass 3).
//!
//! What should be in use is computed, never read: every block before
//! `data_start` and the backup superblock, plus, for every inode that stays
//! in use, its data extents and its metadata blocks ([`Checker::block_usage`];
//! a block two files claim counts once: the second claimant gets a copy).
//! The inodes in use are the records that stay ([`Checker::inode_usage`]).
//! A bit set on disk for a block nothing uses is a leak; a used block whose
//! bit is clear is an error that would let the allocator hand it out twice.
//! Bitmap blocks with no good copy, never written, or whose padding bits
//! (§3) are not all set are rewritten whatever their bits say.

use crate::bits::Bits;
use crate::checker::{Checker, FsckError};
use crate::metadata::{any_payload, Expect, MetaRead};
use crate::report::Pass;
use keelfs_fs::format::bitmap::{padding_is_set, test_bit};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::Region;

/// Bitmap blocks read per request.
const CHUNK: u64 = 64;

/// Which bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Blocks,
    Inodes,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Blocks => "block bitmap",
            Which::Inodes => "inode bitmap",
        }
    }

    fn kind(self) -> BlockKind {
        match self {
            Which::Blocks => BlockKind::BlockBitmap,
            Which::Inodes => BlockKind::InodeBitmap,
        }
    }
}

/// "7" or "7–9".
pub fn range_text(start: u64, end: u64) -> String {
    if end == start + 1 {
        format!("{start}")
    } else {
        format!("{start}–{}", end - 1)
    }
}

impl Checker<'_> {
    /// The region and item count of a bitmap.
    pub fn bitmap_geometry(&self, which: Which) -> (Region, u64) {
        match which {
            Which::Blocks => (self.layout.block_bitmap, self.layout.device_blocks),
            Which::Inodes => (self.layout.inode_bitmap, self.layout.inode_count),
        }
    }

    /// Reads both bitmaps from every leg into the model.
    pub fn load_bitmaps(&mut self) -> Result<(), FsckError> {
        self.load_bitmap(Which::Blocks);
        self.load_bitmap(Which::Inodes);
        Ok(())
    }

    fn load_bitmap(&mut self, which: Which) {
        let (region, items) = self.bitmap_geometry(which);
        let bits = self.layout.bits_per_bitmap_block();
        let mut index = 0;
        while index < region.blocks {
            let n = (region.blocks - index).min(CHUNK);
            let expect = Expect {
                kind: which.kind(),
                gens: None,
                decode: &any_payload,
            };
            let name = which.name();
            let reads = self.read_meta_run(region.start + index, n as usize, &expect, &|b| {
                format!("{name} block {}", b - region.start)
            });
            for (k, read) in reads.into_iter().enumerate() {
                let m = index + k as u64;
                let block = region.start + m;
                let valid = self.layout.valid_bits_in_bitmap_block(items, m);
                let problem = match &read {
                    MetaRead::Good { .. } => None,
                    MetaRead::Unwritten => Some("was never written".to_string()),
                    MetaRead::Lost(why) => Some(format!("has no good copy ({why})")),
                };
                if let Some(problem) = problem {
                    self.report.error(
                        Pass::Bitmaps,
                        true,
                        format!(
                            "{name} block {m} (block {block}) {problem}: it is rebuilt from \
                             what is in use"
                        ),
                    );
                    match which {
                        Which::Blocks => {
                            self.block_bitmap_unknown.insert(m);
                            self.plan.block_bitmap_rewrite.insert(m);
                        }
                        Which::Inodes => {
                            self.inode_bitmap_unknown.insert(m);
                            self.plan.inode_bitmap_rewrite.insert(m);
                        }
                    }
                    continue;
                }
                let Some(payload) = read.payload() else {
                    continue;
                };
                if !padding_is_set(payload, valid) {
                    self.report.error(
                        Pass::Bitmaps,
                        true,
                        format!("{name} block {m}: padding bits after the last item are not set"),
                    );
                    match which {
                        Which::Blocks => self.plan.block_bitmap_rewrite.insert(m),
                        Which::Inodes => self.plan.inode_bitmap_rewrite.insert(m),
                    };
                }
                let target = match which {
                    Which::Blocks => &mut self.disk_block_bitmap,
                    Which::Inodes => &mut self.disk_inode_bitmap,
                };
                let first_item = m * bits;
                for (j, byte) in payload.iter().enumerate().take(valid.div_ceil(8)) {
                    if *byte == 0 {
                        continue;
                    }
                    for bit in 0..8 {
                        let i = j * 8 + bit;
                        if i < valid && test_bit(payload, i).unwrap_or(false) {
                            target.set(first_item + i as u64);
                        }
                    }
                }
            }
            index += n;
        }
    }

    /// Whether inode `ino` is in use according to the on-disk bitmap;
    /// `None` when that part of the bitmap is unknown.
    pub fn inode_bit(&self, ino: u64) -> Option<bool> {
        let m = (ino - 1) / self.layout.bits_per_bitmap_block();
        if self.inode_bitmap_unknown.contains(&m) {
            return None;
        }
        Some(self.disk_inode_bitmap.get(ino - 1))
    }

    /// The blocks that should be marked in use.
    pub fn block_usage(&self) -> Bits {
        let l = self.layout;
        let mut used = Bits::new(l.device_blocks);
        used.set_range(0, l.data.start);
        used.set(l.backup_superblock);
        for rec in self.inodes.values().filter(|r| r.kept()) {
            for b in rec.meta_blocks() {
                used.set(b);
            }
            for e in rec.extents.iter().filter(|e| !e.clone) {
                used.set_range(e.leaf.physical, u64::from(e.leaf.length));
            }
        }
        used
    }

    /// The inodes that should be marked in use (bit n − 1 for inode n).
    pub fn inode_usage(&self) -> Bits {
        let mut used = Bits::new(self.layout.inode_count);
        for (&ino, _) in self.inodes.iter().filter(|(_, r)| r.kept()) {
            used.set(ino - 1);
        }
        used
    }

    /// Pass 5; see the module documentation.
    pub fn check_bitmaps(&mut self) {
        let usage = self.block_usage();
        let disk = self.disk_block_bitmap.clone();
        let unknown = self.block_bitmap_unknown.clone();
        self.compare_bitmap(Which::Blocks, &disk, &usage, &unknown);
        let usage = self.inode_usage();
        let disk = self.disk_inode_bitmap.clone();
        let unknown = self.inode_bitmap_unknown.clone();
        self.compare_bitmap(Which::Inodes, &disk, &usage, &unknown);
    }

    fn compare_bitmap(
        &mut self,
        which: Which,
        disk: &Bits,
        usage: &Bits,
        unknown: &std::collections::BTreeSet<u64>,
    ) {
        let bits = self.layout.bits_per_bitmap_block();
        let len = usage.len();
        let mut i = 0u64;
        while i < len {
            if unknown.contains(&(i / bits)) {
                i = (i / bits + 1) * bits;
                continue;
            }
            let differs = |k: u64| disk.get(k) != usage.get(k);
            if i % 64 == 0 && disk.word(i / 64) == usage.word(i / 64) {
                i += 64;
                continue;
            }
            if !differs(i) {
                i += 1;
                continue;
            }
            let leaked = disk.get(i);
            let start = i;
            while i < len && differs(i) && disk.get(i) == leaked && !unknown.contains(&(i / bits)) {
                i += 1;
            }
            let message = match (which, leaked) {
                (Which::Blocks, true) => format!(
                    "blocks {} are marked in use in the block bitmap but nothing uses them",
                    range_text(start, i)
                ),
                (Which::Blocks, false) => format!(
                    "blocks {} are in use but marked free in the block bitmap",
                    range_text(start, i)
                ),
                (Which::Inodes, true) => format!(
                    "inodes {} are marked in use in the inode bitmap but are not in use",
                    range_text(start + 1, i + 1)
                ),
                (Which::Inodes, false) => format!(
                    "inodes {} are in use but marked free in the inode bitmap",
                    range_text(start + 1, i + 1)
                ),
            };
            self.report.error(Pass::Bitmaps, true, message);
        }
    }

    /// Pass 9: the superblock's free counts against what is in use.
    pub fn check_counts(&mut self) {
        let l = self.layout;
        let used = self.block_usage().count_in(l.data.start, l.data.end());
        let free_blocks = l.data.blocks - used;
        let free_inodes = l.inode_count - self.inode_usage().count_in(0, l.inode_count);
        for (what, recorded, counted) in [
            ("free blocks", self.sb.free_blocks, free_blocks),
            ("free inodes", self.sb.free_inodes, free_inodes),
        ] {
            if recorded == counted {
                continue;
            }
            let message = format!("the superblock records {recorded} {what}, counted {counted}");
            if self.sb.state.clean_unmount {
                self.report.error(Pass::Counts, true, message);
            } else {
                // The summaries are brought up to date at unmount (§4:
                // "the bitmaps are authoritative"); after a crash they lag.
                self.report.note(
                    Pass::Counts,
                    format!("{message} (not cleanly unmounted; updated by a repair)"),
                );
            }
            self.plan.superblocks = true;
        }
    }
}
