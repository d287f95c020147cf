//! The inode table: every block on every leg (pass 3), every slot decoded,
//! and the fields of every inode (pass 8).
//!
//! An inode-table block may be *unwritten* (zero on every leg, §3) only if
//! no inode it holds is marked in use; inodes marked in use in an unwritten
//! block, or in a block with no good copy, are lost (their bitmap bits are
//! cleared, entries naming them dropped; a block with no good copy is
//! rewritten holding free slots).
//!
//! A slot marked in use that does not decode is salvaged when the only
//! problems are fields fsck can set to a sound value without guessing
//! (nanoseconds ≥ 10⁹ → 0, unknown chattr bits → cleared, rdev of a
//! non-device → 0, parent of a non-directory → 0, a directory without a
//! parent → the namespace pass gives it one, an xattr generation without a
//! block → 0); the offsets patched are those of `docs/format.md` §5.
//! Anything else (an unknown file type, two data-area forms, a malformed
//! data area) clears the inode. A slot marked free must be a free slot
//! (§5); one that holds an inode is kept only if a directory names it
//! (the bitmap then gets fixed), and cleared otherwise.
//!
//! After the trees are walked, `check_inode_sizes` compares the blocks-held
//! field with the blocks counted, a directory's size with B × its blocks,
//! and a regular file's size with its written extents.

use crate::checker::{Checker, Fate, FsckError, InodeRec};
use crate::metadata::{any_payload, Expect, MetaRead};
use crate::report::Pass;
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::inode::{FLAG_DIR_INDEX, FLAG_EXTENTS, FLAG_INLINE, FLAG_OVERFLOW};
use keelfs_fs::format::layout::INODE_SIZE;
use keelfs_fs::format::le::get_u32;
use keelfs_fs::format::{DataArea, FileType, FormatError, Inode, InodeSlot, Problem};

/// Inode-table blocks read per request.
const CHUNK: u64 = 64;

/// §5 offsets of the fields salvage patches.
const OFF_FLAGS: usize = 80;
const OFF_GENERATION: usize = 84;
const OFF_RDEV: usize = 88;
const OFF_XATTR_GENERATION: usize = 104;
const OFF_PARENT: usize = 112;
/// The form flags and chattr flags §5 defines.
const KNOWN_FLAGS: u32 = FLAG_INLINE | FLAG_EXTENTS | FLAG_DIR_INDEX | FLAG_OVERFLOW | 0x1f0;

/// The name of a file type, for messages.
pub fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::Fifo => "fifo",
        FileType::CharDevice => "character device",
        FileType::Directory => "directory",
        FileType::BlockDevice => "block device",
        FileType::Regular => "regular file",
        FileType::Symlink => "symlink",
        FileType::Socket => "socket",
    }
}

/// Decodes a used slot, patching the fields named in the module docs;
/// the inode and what was patched, or `None` if it cannot be salvaged.
pub fn salvage(slot: &[u8]) -> Option<(Inode, Vec<String>)> {
    let mut s = slot.get(..INODE_SIZE)?.to_vec();
    let mut fixes = Vec::new();
    for _ in 0..16 {
        let e = match Inode::decode(&s) {
            Ok(inode) => return Some((inode, fixes)),
            Err(e) => e,
        };
        let FormatError::Invalid { field, problem, .. } = e else {
            return None;
        };
        match (field, &problem) {
            ("atime_nanos" | "mtime_nanos" | "ctime_nanos" | "btime_nanos", _) => {
                let at = 64
                    + 4 * ["atime_nanos", "mtime_nanos", "ctime_nanos", "btime_nanos"]
                        .iter()
                        .position(|f| *f == field)?;
                let old = get_u32(&s, at)?;
                s[at..at + 4].fill(0);
                fixes.push(format!("{field} {old} is not below 10⁹: set to 0"));
            }
            ("flags", Problem::UnknownBits { bits }) => {
                let flags = get_u32(&s, OFF_FLAGS)? & KNOWN_FLAGS;
                s[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&flags.to_le_bytes());
                fixes.push(format!("unknown flag bits {bits:#x} cleared"));
            }
            ("rdev", _) => {
                s[OFF_RDEV..OFF_RDEV + 8].fill(0);
                fixes.push("rdev of a non-device set to 0".to_string());
            }
            ("parent", Problem::NotZero) => {
                s[OFF_PARENT..OFF_PARENT + 8].fill(0);
                fixes.push("parent of a non-directory set to 0".to_string());
            }
            ("parent", _) => {
                // A directory without a parent: the namespace pass sets it.
                s[OFF_PARENT..OFF_PARENT + 8].copy_from_slice(&1u64.to_le_bytes());
                fixes.push("directory without a parent".to_string());
            }
            ("xattr_generation", _) => {
                s[OFF_XATTR_GENERATION..OFF_XATTR_GENERATION + 8].fill(0);
                fixes.push("xattr generation without an xattr block set to 0".to_string());
            }
            _ => return None,
        }
    }
    None
}

impl Checker<'_> {
    /// The inode numbers held by inode-table block `block`.
    pub fn inodes_of_table_block(&self, block: u64) -> std::ops::RangeInclusive<u64> {
        let ipb = self.layout.inodes_per_block();
        let first = (block - self.layout.inode_table.start) * ipb + 1;
        first..=(first + ipb - 1).min(self.layout.inode_count)
    }

    /// Reads the whole inode table on every leg into `self.inodes`.
    pub fn scan_inode_table(&mut self) -> Result<(), FsckError> {
        let region = self.layout.inode_table;
        let mut index = 0;
        while index < region.blocks {
            self.progress
                .update(Pass::MetadataTags, index, region.blocks);
            let n = (region.blocks - index).min(CHUNK);
            let expect = Expect {
                kind: BlockKind::InodeTable,
                gens: None,
                decode: &any_payload,
            };
            let reads = self.read_meta_run(region.start + index, n as usize, &expect, &|b| {
                format!("inode-table block {}", b - region.start)
            });
            for (k, read) in reads.into_iter().enumerate() {
                self.scan_table_block(region.start + index + k as u64, read);
            }
            index += n;
        }
        Ok(())
    }

    fn scan_table_block(&mut self, block: u64, read: MetaRead) {
        let inodes = self.inodes_of_table_block(block);
        let marked: Vec<u64> = inodes
            .clone()
            .filter(|&n| self.inode_bit(n) == Some(true))
            .collect();
        let payload = match &read {
            MetaRead::Good { bytes, .. } => &bytes[keelfs_fs::format::META_HEADER_LEN..],
            MetaRead::Unwritten => {
                if !marked.is_empty() {
                    self.report.error(
                        Pass::MetadataTags,
                        true,
                        format!(
                            "inode-table block {block} was never written, but inodes {} are \
                             marked in use: they are lost",
                            list(&marked)
                        ),
                    );
                }
                return;
            }
            MetaRead::Lost(why) => {
                self.report.error(
                    Pass::MetadataTags,
                    true,
                    format!(
                        "inode-table block {block} (inodes {}–{}) has no good copy ({why}): \
                         the inodes in use there ({}) are lost, and the block is rewritten with \
                         free slots",
                        inodes.start(),
                        inodes.end(),
                        if marked.is_empty() {
                            "none".to_string()
                        } else {
                            list(&marked)
                        }
                    ),
                );
                self.plan.reset_table_blocks.insert(block);
                return;
            }
        };
        let payload = payload.to_vec();
        let first = *inodes.start();
        for ino in inodes {
            let at = (ino - first) as usize * INODE_SIZE;
            let slot = &payload[at..at + INODE_SIZE];
            self.scan_slot(ino, slot);
        }
    }

    fn scan_slot(&mut self, ino: u64, slot: &[u8]) {
        let bit = self.inode_bit(ino);
        let generation = get_u32(slot, OFF_GENERATION).unwrap_or(0);
        match InodeSlot::decode(slot) {
            Ok(InodeSlot::Free { .. }) => {
                if bit == Some(true) {
                    self.report.error(
                        Pass::Links,
                        true,
                        format!("inode {ino} is marked in use but its slot is free"),
                    );
                }
            }
            Ok(InodeSlot::Used(inode)) => {
                self.inodes
                    .insert(ino, InodeRec::new(inode, bit.unwrap_or(true)));
            }
            Err(e) => match salvage(slot) {
                Some((inode, fixes)) => {
                    for f in &fixes {
                        self.report
                            .error(Pass::Links, true, format!("inode {ino}: {f}"));
                    }
                    let mut rec = InodeRec::new(inode, bit.unwrap_or(true));
                    rec.salvaged = true;
                    self.inodes.insert(ino, rec);
                }
                None if bit == Some(false) => {
                    self.report.error(
                        Pass::Links,
                        true,
                        format!("inode {ino} is free, but its slot is not cleared ({e}): cleared"),
                    );
                    self.plan.clear_slots.insert(ino, generation);
                }
                None => {
                    self.report.error(
                        Pass::Links,
                        true,
                        format!("inode {ino} is corrupt ({e}): it is cleared"),
                    );
                    self.plan.clear_slots.insert(ino, generation);
                }
            },
        }
    }

    /// Pass 8, after the trees: blocks held, directory sizes, regular file
    /// sizes against written extents.
    pub fn check_inode_sizes(&mut self) {
        let bs = self.layout.block_size as u64;
        let mut findings = Vec::new();
        for (&ino, rec) in self.inodes.iter_mut().filter(|(_, r)| r.kept()) {
            if rec.created {
                continue;
            }
            let rebuilding = rec.extents_rebuild || rec.dir_rebuild;
            if !rebuilding && rec.inode.blocks != rec.blocks_held() {
                findings.push(format!(
                    "inode {ino}: {} blocks held recorded, {} counted",
                    rec.inode.blocks,
                    rec.blocks_held()
                ));
                rec.inode.blocks = rec.blocks_held();
            }
            match rec.inode.file_type {
                FileType::Directory if !rec.dir_rebuild => {
                    let size = bs * rec.dir_blocks.len() as u64;
                    if rec.inode.size != size {
                        findings.push(format!(
                            "directory {ino}: size {} recorded, {size} for its {} blocks",
                            rec.inode.size,
                            rec.dir_blocks.len()
                        ));
                        rec.inode.size = size;
                    }
                }
                FileType::Regular if matches!(rec.inode.data, DataArea::Extents(_)) => {
                    let written_end = rec
                        .extents
                        .iter()
                        .filter(|e| !e.leaf.unwritten)
                        .filter_map(|e| e.leaf.logical_end())
                        .max()
                        .unwrap_or(0);
                    let size_blocks = rec.inode.size.div_ceil(bs);
                    let first_beyond = rec
                        .extents
                        .iter()
                        .filter(|e| !e.leaf.unwritten)
                        .any(|e| e.leaf.logical >= size_blocks);
                    if first_beyond {
                        let size = written_end.saturating_mul(bs);
                        findings.push(format!(
                            "inode {ino}: size {} but data is written up to byte {size}: size set \
                             to {size}",
                            rec.inode.size
                        ));
                        rec.inode.size = size;
                    }
                }
                _ => {}
            }
        }
        for f in findings {
            self.report.error(Pass::Links, true, f);
        }
    }

    /// Marks inode `ino` cleared (if it is held), with a reason already
    /// reported by the caller.
    pub fn clear_inode(&mut self, ino: u64) {
        if let Some(rec) = self.inodes.get_mut(&ino) {
            rec.fate = Fate::Clear;
        }
    }
}

/// "3, 4, 9" (at most 20 numbers, then "and N more").
pub fn list(numbers: &[u64]) -> String {
    let mut s: Vec<String> = numbers.iter().take(20).map(|n| n.to_string()).collect();
    if numbers.len() > 20 {
        s.push(format!("and {} more", numbers.len() - 20));
    }
    s.join(", ")
}
