//! Pass 1: superblocks and set membership on every leg.
//!
//! `devset::identify` has already found each leg's superblock (primary, or
//! the backup if the primary was bad), checked that the legs form one set
//! and picked the authoritative (newest) superblock. This pass reports what
//! it found (members missing, failed, resyncing; stale legs) and then reads
//! BOTH copies (block 0 and block N−1) on every leg itself: each must pass
//! the metadata check, be a superblock, decode, carry the authoritative
//! generation, and equal the authoritative superblock as written for that
//! leg's member index (`Superblock::for_member`). Any copy that is not so
//! is planned to be rewritten; repair rewrites every leg's two copies.
//!
//! Failed or resyncing members that were given, and stale legs, are
//! resynced by the other passes (every block they hold is compared with the
//! good copies and rewritten where it differs); repair then marks them in
//! use again. A missing member is only noted: fsck checks what it is given.

use crate::checker::Checker;
use crate::report::Pass;
use keelfs_engine::integrity::{meta_check, meta_gen, meta_kind};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::superblock::MemberState;
use keelfs_fs::format::{Superblock, META_HEADER_LEN};

impl Checker<'_> {
    /// Pass 1; see the module documentation.
    pub fn check_superblocks(&mut self) -> Result<(), crate::checker::FsckError> {
        let set_report = self.set.report().clone();
        let p = Pass::Superblocks;
        for m in &set_report.missing {
            self.report.note(
                p,
                format!(
                    "member {} (device uuid {}) was not given: it is not checked",
                    m.member,
                    keelfs_fs::devset::format_uuid(&m.device_uuid)
                ),
            );
        }
        // A given leg that is neither failed, resyncing nor stale.
        let trusted_legs = self
            .set
            .legs()
            .iter()
            .filter(|l| {
                let state = self
                    .sb
                    .members
                    .get(l.member as usize)
                    .map(|m| m.state)
                    .unwrap_or(MemberState::Absent);
                state == MemberState::InUse && l.generation == self.sb_gen
            })
            .count();
        for (state, members) in [
            ("failed", &set_report.failed),
            ("being resynced", &set_report.resyncing),
        ] {
            for &m in members {
                let Some(leg) = self.set.leg_of_member(m) else {
                    continue;
                };
                if trusted_legs > 0 {
                    self.report.error(
                        p,
                        true,
                        format!(
                            "{} is marked {state}: every block is checked against the other \
                             legs, and the member is marked in use once resynced",
                            self.leg_name(leg)
                        ),
                    );
                    self.plan.members_in_use.push(m);
                    self.plan.superblocks = true;
                } else {
                    self.report.note(
                        p,
                        format!(
                            "{} is marked {state} and no other leg was given: it is checked \
                             as it is",
                            self.leg_name(leg)
                        ),
                    );
                }
            }
        }
        for s in &set_report.stale {
            if let Some(leg) = self.set.leg_of_member(s.member) {
                self.report.error(
                    p,
                    true,
                    format!(
                        "{} is stale: it holds transaction {}, the newest is {}; its \
                         blocks are checked against the other legs",
                        self.leg_name(leg),
                        s.generation,
                        s.newest
                    ),
                );
                self.plan.superblocks = true;
            }
        }
        if set_report.read_only_required {
            self.report.note(
                p,
                "the filesystem has read-only-compatible features this fsck.keelfs does not know",
            );
        }
        // The "errors" mark is judged once the whole check is done
        // (`judge_errors_mark`).
        if !self.sb.state.clean_unmount {
            self.report
                .note(p, "the filesystem was not cleanly unmounted");
            if self.mode == crate::options::Mode::Repair {
                // Marked clean once checked (not a fix by itself).
                self.plan.superblocks = true;
            }
        }
        for leg in 0..self.leg_count() {
            for (address, which) in [(0, "primary"), (self.layout.backup_superblock, "backup")] {
                if let Some(why) = self.superblock_copy_problem(leg, address) {
                    self.report.error(
                        p,
                        true,
                        format!("{} superblock on {}: {why}", which, self.leg_name(leg)),
                    );
                    self.plan.superblocks = true;
                }
            }
        }
        Ok(())
    }

    /// The state's "errors" mark, once every pass has run: right while
    /// errors that cannot be fixed remain (a note), an error otherwise (a
    /// repair clears it).
    pub fn judge_errors_mark(&mut self) {
        if !self.sb.state.errors {
            return;
        }
        let left = self.report.unfixable_count();
        if left > 0 {
            self.report.note(
                Pass::Superblocks,
                format!(
                    "the filesystem is marked as having errors, rightly: {left} cannot be fixed"
                ),
            );
        } else {
            self.report.error(
                Pass::Superblocks,
                true,
                "the filesystem is marked as having errors: a repair clears the mark",
            );
        }
        self.plan.superblocks = true;
    }

    /// What is wrong with the superblock copy at `address` on `leg`, if
    /// anything.
    fn superblock_copy_problem(&mut self, leg: usize, address: u64) -> Option<String> {
        let mut buf = vec![0u8; self.block_size()];
        if let Err(e) = self.mirror().read_leg(leg, address, &mut buf) {
            return Some(format!("read error: {e}"));
        }
        if let Err(m) = meta_check(address, &self.uuid, &buf, None) {
            return Some(m.to_string());
        }
        if meta_kind(&buf) != BlockKind::Superblock.to_u16() {
            return Some(format!("holds a block of kind {}", meta_kind(&buf)));
        }
        let found = match Superblock::decode(&buf[META_HEADER_LEN..]) {
            Ok(sb) => sb,
            Err(e) => return Some(format!("does not decode: {e}")),
        };
        let gen = meta_gen(&buf);
        self.max_gen = self.max_gen.max(gen);
        if gen < self.sb_gen {
            return Some(format!(
                "stale copy of generation {gen}, newest {}",
                self.sb_gen
            ));
        }
        let member = self.set.legs().get(leg).map(|l| l.member).unwrap_or(0);
        match self.sb.for_member(member) {
            Ok(want) if want == found && gen == self.sb_gen => None,
            Ok(_) if gen != self.sb_gen => Some(format!(
                "generation {gen} differs from the authoritative {}",
                self.sb_gen
            )),
            Ok(_) => Some("differs from the authoritative superblock".to_string()),
            Err(e) => Some(format!("member {member}: {e}")),
        }
    }
}
