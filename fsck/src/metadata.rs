//! Pass 3's mechanism: read a metadata block (or a run of them) from EVERY
//! leg, judge each copy, pick the good one, and report (and plan to heal)
//! every bad copy.
//!
//! A copy is good when it passes the engine's `meta_check` for its address
//! and the filesystem uuid (and the generation its parent records, when it
//! has a parent), carries the expected kind, and decodes with the format
//! codec the caller names. This is exactly the check
//! `Volume::verify_leg_meta` applies to one leg; fsck makes it itself on
//! bytes read once per leg with `MirrorSet::read_leg`, because it needs
//! both the generation of every copy (blocks at fixed places have no
//! parent, so their copies are compared by generation, §2) and the bytes
//! of the good one, which `verify_leg_meta` does not return. Nothing here
//! goes through `Volume::read_meta`, which heals as it reads: under `-n`
//! nothing may be written.
//!
//! Choosing: with an expected generation, the first good copy (good copies
//! of one generation should be identical; one that differs is bad). Without
//! one, the newest good copy; older ones are stale (the leg missed a
//! write). A block zero on every leg is *unwritten* (§3), which only the
//! caller can judge. No good copy anywhere: *lost*.

use crate::checker::{Checker, Heal, HealCheck};
use crate::report::Pass;
use keelfs_engine::integrity::{meta_check, meta_gen, meta_kind, TagMismatch};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::{FormatError, META_HEADER_LEN};

/// Decodes a payload, or says why not.
pub type Decoder<'d> = &'d dyn Fn(&[u8]) -> Result<(), FormatError>;

/// A decoder that accepts every payload.
pub fn any_payload(_: &[u8]) -> Result<(), FormatError> {
    Ok(())
}

/// What a metadata block read must be.
pub struct Expect<'d> {
    pub kind: BlockKind,
    /// One expected generation per block of the run, if the blocks have
    /// parents.
    pub gens: Option<&'d [u64]>,
    /// The codec check of the payload.
    pub decode: Decoder<'d>,
}

/// The outcome of reading one metadata block on every leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaRead {
    /// A good copy (the whole block, header included) and its generation.
    Good { bytes: Vec<u8>, gen: u64 },
    /// Zero on every leg.
    Unwritten,
    /// No good copy; why, leg by leg.
    Lost(String),
}

impl MetaRead {
    /// The payload of a good copy.
    pub fn payload(&self) -> Option<&[u8]> {
        match self {
            MetaRead::Good { bytes, .. } => bytes.get(META_HEADER_LEN..),
            _ => None,
        }
    }
}

/// One leg's verdict on one copy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Good(u64),
    Zero,
    Bad(String),
}

/// The bytes of a run on one leg, with per-block read errors.
struct LegRun {
    bytes: Vec<u8>,
    errors: Vec<Option<String>>,
}

fn kind_name(kind: u16) -> String {
    match BlockKind::from_u16(kind) {
        Ok(k) => format!("{k:?}"),
        Err(_) => format!("unknown kind {kind}"),
    }
}

impl Checker<'_> {
    /// `count` blocks at `first` as leg `leg` holds them.
    fn read_leg_run(&self, leg: usize, first: u64, count: usize) -> LegRun {
        let bs = self.block_size();
        let mut bytes = vec![0u8; count * bs];
        let mut errors = vec![None; count];
        if let Err(e) = self.mirror().read_leg(leg, first, &mut bytes) {
            if count == 1 {
                errors[0] = Some(e.to_string());
            } else {
                // Find out which blocks fail.
                for (i, chunk) in bytes.chunks_exact_mut(bs).enumerate() {
                    if let Err(e) = self.mirror().read_leg(leg, first + i as u64, chunk) {
                        errors[i] = Some(e.to_string());
                    }
                }
            }
        }
        LegRun { bytes, errors }
    }

    /// Reads metadata block `block` on every leg; see the module docs.
    /// `what` names it in messages.
    pub fn read_meta(
        &mut self,
        block: u64,
        kind: BlockKind,
        gen: Option<u64>,
        decode: Decoder<'_>,
        what: &str,
    ) -> MetaRead {
        let gens = gen.map(|g| [g]);
        let expect = Expect {
            kind,
            gens: gens.as_ref().map(|g| &g[..]),
            decode,
        };
        self.read_meta_run(block, 1, &expect, &|_| what.to_string())
            .pop()
            .unwrap_or(MetaRead::Lost("nothing read".into()))
    }

    /// Reads `count` metadata blocks at `first` on every leg, one result per
    /// block; bad copies are reported (pass 3) and planned for healing.
    /// `what(block)` names a block in messages.
    pub fn read_meta_run(
        &mut self,
        first: u64,
        count: usize,
        expect: &Expect<'_>,
        what: &dyn Fn(u64) -> String,
    ) -> Vec<MetaRead> {
        let bs = self.block_size();
        let runs: Vec<LegRun> = (0..self.leg_count())
            .map(|leg| self.read_leg_run(leg, first, count))
            .collect();
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let block = first + i as u64;
            let gen = expect.gens.and_then(|g| g.get(i).copied());
            fn slice(run: &LegRun, i: usize, bs: usize) -> &[u8] {
                &run.bytes[i * bs..(i + 1) * bs]
            }
            let copy = |run| slice(run, i, bs);
            let verdicts: Vec<Verdict> = runs
                .iter()
                .map(|run| match &run.errors[i] {
                    Some(e) => Verdict::Bad(format!("read error: {e}")),
                    None => self.judge(block, copy(run), gen, expect),
                })
                .collect();
            for v in &verdicts {
                if let Verdict::Good(g) = v {
                    self.max_gen = self.max_gen.max(*g);
                }
            }
            let best = match gen {
                Some(_) => verdicts.iter().position(|v| matches!(v, Verdict::Good(_))),
                None => (0..verdicts.len())
                    .filter_map(|l| match verdicts[l] {
                        Verdict::Good(g) => Some((g, std::cmp::Reverse(l))),
                        _ => None,
                    })
                    .max()
                    .map(|(_, std::cmp::Reverse(l))| l),
            };
            let Some(best) = best else {
                if verdicts.iter().all(|v| *v == Verdict::Zero) {
                    out.push(MetaRead::Unwritten);
                } else {
                    let detail = verdicts
                        .iter()
                        .enumerate()
                        .map(|(l, v)| {
                            let why = match v {
                                Verdict::Zero => "all zeroes".to_string(),
                                Verdict::Bad(why) => why.clone(),
                                Verdict::Good(_) => "good".to_string(),
                            };
                            format!("{}: {why}", self.leg_name(l))
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    out.push(MetaRead::Lost(detail));
                }
                continue;
            };
            let best_gen = match verdicts[best] {
                Verdict::Good(g) => g,
                _ => 0,
            };
            let good = copy(&runs[best]).to_vec();
            let mut bad: Vec<(usize, String)> = Vec::new();
            for (l, v) in verdicts.iter().enumerate() {
                let why = match v {
                    _ if l == best => continue,
                    Verdict::Good(g) if *g < best_gen => {
                        format!("stale copy of generation {g}, newest {best_gen}")
                    }
                    Verdict::Good(_) if copy(&runs[l]) == &good[..] => continue,
                    Verdict::Good(g) => {
                        format!("generation {g} copy differs from {}'s", self.leg_name(best))
                    }
                    Verdict::Zero => "zeroed (a lost write)".to_string(),
                    Verdict::Bad(why) => why.clone(),
                };
                bad.push((l, why));
            }
            if !bad.is_empty() {
                let name = what(block);
                for (l, why) in &bad {
                    self.report.error(
                        Pass::MetadataTags,
                        true,
                        format!(
                            "{name} (block {block}): bad copy on {}: {why}",
                            self.leg_name(*l)
                        ),
                    );
                }
                self.plan.heals.push(Heal {
                    block,
                    source: best,
                    targets: bad.iter().map(|(l, _)| *l).collect(),
                    check: HealCheck::Meta(gen),
                });
            }
            out.push(MetaRead::Good {
                bytes: good,
                gen: best_gen,
            });
        }
        out
    }

    /// One copy's verdict.
    fn judge(&self, block: u64, copy: &[u8], gen: Option<u64>, expect: &Expect<'_>) -> Verdict {
        match meta_check(block, &self.uuid, copy, gen) {
            Ok(()) => {}
            Err(TagMismatch::Unwritten) => return Verdict::Zero,
            Err(m) => return Verdict::Bad(m.to_string()),
        }
        let kind = meta_kind(copy);
        if kind != expect.kind.to_u16() {
            return Verdict::Bad(format!(
                "holds a {} block, expected {:?}",
                kind_name(kind),
                expect.kind
            ));
        }
        if let Err(e) = (expect.decode)(&copy[META_HEADER_LEN..]) {
            return Verdict::Bad(format!("does not decode: {e}"));
        }
        Verdict::Good(meta_gen(copy))
    }
}

impl Checker<'_> {
    /// The good copy of metadata block `block` (the newest, if no
    /// generation is expected), read silently: for repair, which reports
    /// nothing and only needs the bytes to modify.
    pub fn read_good(&self, block: u64, kind: BlockKind, gen: Option<u64>) -> Option<Vec<u8>> {
        let mut best: Option<(u64, Vec<u8>)> = None;
        for leg in 0..self.leg_count() {
            let mut buf = vec![0u8; self.block_size()];
            if self.mirror().read_leg(leg, block, &mut buf).is_err() {
                continue;
            }
            if meta_check(block, &self.uuid, &buf, gen).is_err() || meta_kind(&buf) != kind.to_u16()
            {
                continue;
            }
            let g = meta_gen(&buf);
            if best.as_ref().is_none_or(|(bg, _)| g > *bg) {
                best = Some((g, buf));
            }
        }
        best.map(|(_, b)| b)
    }
}
