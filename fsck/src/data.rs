//! Pass 4 (every data tag on every leg), with pass 3 for the tag table.
//!
//! The written extents of every file in use (unwritten extents have no
//! meaningful tags, §7) are sorted by physical block and walked alongside
//! the tag table, one tag-table block at a time: each tag-table block is
//! checked on every leg like any fixed block, then every written data block
//! it covers is verified on EACH leg with `Volume::verify_leg_data` against
//! its tag. A block good on some leg and bad on others is healed by repair
//! (the good copy, re-verified, is written over the bad ones); a block with
//! no good copy anywhere is reported and left (exit 4): fsck never
//! recomputes a tag over bytes it cannot vouch for.
//!
//! The one exception is a tag-table block that is lost (no good copy) or
//! was never written although it covers file data: the tags are gone, so
//! there is nothing to verify the data against. Repair then recomputes the
//! tags from the data, but only for blocks every leg holds identically
//! (with one leg, that is whatever it holds), and says so; blocks whose
//! legs differ are reported and left.

use crate::checker::{Checker, FsckError, Heal, HealCheck};
use crate::metadata::{any_payload, Expect, MetaRead};
use crate::report::Pass;
use keelfs_engine::integrity::{CopyProblem, Tag};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::layout::TAG_SIZE;
use keelfs_fs::format::tag_table::read_tag;
use std::collections::BTreeMap;

/// Tag-table blocks read per request.
const CHUNK: u64 = 64;

/// A written run of a file's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DataRun {
    physical: u64,
    len: u64,
    ino: u64,
    logical: u64,
}

impl DataRun {
    fn end(&self) -> u64 {
        self.physical + self.len
    }
}

impl Checker<'_> {
    /// Pass 4 and the tag table; see the module docs.
    pub fn check_data(&mut self) -> Result<(), FsckError> {
        let mut runs: Vec<DataRun> = self
            .inodes
            .iter()
            .filter(|(_, r)| r.kept())
            .flat_map(|(&ino, r)| {
                r.extents
                    .iter()
                    .filter(|e| !e.clone && !e.leaf.unwritten)
                    .map(move |e| DataRun {
                        physical: e.leaf.physical,
                        len: u64::from(e.leaf.length),
                        ino,
                        logical: e.leaf.logical,
                    })
            })
            .collect();
        runs.sort_by_key(|r| r.physical);
        let total: u64 = runs.iter().map(|r| r.len).sum();
        let mut done = 0u64;
        let region = self.layout.tag_table;
        let tpb = self.layout.tags_per_block();
        let data_start = self.layout.data.start;
        let n = self.layout.device_blocks;
        let mut cursor = 0usize;
        let mut index = 0u64;
        while index < region.blocks {
            let count = (region.blocks - index).min(CHUNK);
            let expect = Expect {
                kind: BlockKind::TagTable,
                gens: None,
                decode: &any_payload,
            };
            let reads = self.read_meta_run(region.start + index, count as usize, &expect, &|b| {
                format!("tag-table block {}", b - region.start)
            });
            for (k, read) in reads.into_iter().enumerate() {
                let t = index + k as u64;
                let block = region.start + t;
                let cover_start = data_start + t * tpb;
                let cover_end = (cover_start + tpb).min(n);
                // The pieces of runs this tag-table block covers.
                let mut pieces = Vec::new();
                while cursor < runs.len() && runs[cursor].end() <= cover_start {
                    cursor += 1;
                }
                let mut c = cursor;
                while c < runs.len() && runs[c].physical < cover_end {
                    let r = runs[c];
                    let s = r.physical.max(cover_start);
                    let e = r.end().min(cover_end);
                    if s < e {
                        pieces.push(DataRun {
                            physical: s,
                            len: e - s,
                            ino: r.ino,
                            logical: r.logical + (s - r.physical),
                        });
                    }
                    c += 1;
                }
                let tags_lost = match &read {
                    MetaRead::Good { .. } => None,
                    MetaRead::Unwritten => Some("was never written".to_string()),
                    MetaRead::Lost(why) => {
                        self.plan.reset_tag_blocks.insert(block);
                        Some(format!("has no good copy ({why})"))
                    }
                };
                if let Some(problem) = tags_lost {
                    if pieces.is_empty() {
                        if self.plan.reset_tag_blocks.contains(&block) {
                            self.report.error(
                                Pass::MetadataTags,
                                true,
                                format!(
                                    "tag-table block {t} (block {block}) {problem}; it covers \
                                     no file data and is rewritten"
                                ),
                            );
                        }
                        continue;
                    }
                    let inos: Vec<u64> = {
                        let mut v: Vec<u64> = pieces.iter().map(|p| p.ino).collect();
                        v.dedup();
                        v
                    };
                    self.report.error(
                        Pass::MetadataTags,
                        true,
                        format!(
                            "tag-table block {t} (block {block}) {problem}, but it covers data of \
                             inodes {}: their tags are recomputed from the data where every leg \
                             holds the same bytes (the data itself cannot be verified)",
                            crate::inodes::list(&inos)
                        ),
                    );
                    for p in &pieces {
                        self.plan
                            .recompute_tags
                            .extend(p.physical..p.physical + p.len);
                        done += p.len;
                    }
                    continue;
                }
                let payload = read.payload().unwrap_or_default().to_vec();
                for p in pieces {
                    let tags: Vec<Tag> = (p.physical..p.physical + p.len)
                        .map(|b| {
                            let offset = ((b - data_start) % tpb) as usize * TAG_SIZE;
                            read_tag(&payload, offset).unwrap_or_default()
                        })
                        .collect();
                    self.verify_data(p, &tags)?;
                    done += p.len;
                    self.progress.update(Pass::DataTags, done, total);
                }
            }
            index += count;
        }
        Ok(())
    }

    /// Verifies one run of data blocks on every leg against `tags`.
    fn verify_data(&mut self, run: DataRun, tags: &[Tag]) -> Result<(), FsckError> {
        let mut bad: BTreeMap<u64, Vec<(usize, String)>> = BTreeMap::new();
        for leg in 0..self.leg_count() {
            for b in self.set.volume().verify_leg_data(leg, run.physical, tags)? {
                let why = match b.problem {
                    CopyProblem::ReadError(e) => format!("read error: {e}"),
                    CopyProblem::Mismatch(m) => m.to_string(),
                };
                bad.entry(b.block).or_default().push((leg, why));
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        let legs = self.leg_count();
        // Group consecutive blocks with the same bad legs into one message.
        let mut groups: Vec<(u64, u64, Vec<usize>, String)> = Vec::new();
        for (&block, copies) in &bad {
            let bad_legs: Vec<usize> = copies.iter().map(|c| c.0).collect();
            let tag = tags[(block - run.physical) as usize];
            if let Some(source) = (0..legs).find(|l| !bad_legs.contains(l)) {
                self.plan.heals.push(Heal {
                    block,
                    source,
                    targets: bad_legs.clone(),
                    check: HealCheck::Data(tag),
                });
            }
            match groups.last_mut() {
                Some(g) if g.1 == block && g.2 == bad_legs => g.1 = block + 1,
                _ => groups.push((block, block + 1, bad_legs, copies[0].1.clone())),
            }
        }
        for (start, end, bad_legs, why) in groups {
            let blocks = crate::bitmaps::range_text(start, end);
            let logical = run.logical + (start - run.physical);
            if bad_legs.len() == legs {
                self.report.error(
                    Pass::DataTags,
                    false,
                    format!(
                        "inode {}: data blocks {blocks} (from logical block {logical}) have no \
                         good copy on any leg ({why}): left as they are",
                        run.ino
                    ),
                );
            } else {
                let names: Vec<String> = bad_legs.iter().map(|&l| self.leg_name(l)).collect();
                self.report.error(
                    Pass::DataTags,
                    true,
                    format!(
                        "inode {}: data blocks {blocks} (from logical block {logical}): bad copy \
                         on {} ({why})",
                        run.ino,
                        names.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }
}
