//! The mounted filesystem's superblock: the in-memory copy and the writes
//! of every leg's copies.
//!
//! The superblock is not journalled (each leg has its own copy, with its own
//! device fields), so it is written whole, through
//! [`crate::devset::write_superblocks`]: every primary, a flush, every backup, a
//! flush. It is written at mount (state "not clean", mount count, last
//! mount time; and, on a filesystem of an earlier keelfs, once more when
//! the orphan list moves to the root inode), at `syncfs` (free counts), at
//! unmount (state "clean") and when errors or failed legs are recorded.
//! Nothing the journal protects lives in it: the orphan list is anchored
//! in the root inode (docs/format.md §5.1), so a crash between a commit
//! and a superblock write loses no consistency, only summaries.
//!
//! What it promises:
//!
//! * every write carries the current member table: a leg that was in
//!   service at mount (or was put under resync since) and has failed since
//!   is recorded `Failed`, a leg being resynced is recorded `Resyncing`
//!   and `InUse` again once back in service, and each
//!   member's persistent error counters are those found at mount plus what
//!   the mirror counted since; in-service members record the transaction
//!   written as the last they hold, and whether they need a check (the
//!   mirror finds them suspect: they failed reads);
//! * a leg added while mounted ([`SuperblockKeeper::attach`]) or a device
//!   put in a leg's place ([`SuperblockKeeper::replaced`]) gets counters
//!   of its own, starting at zero;
//! * header generations never go backwards (the set's authoritative copy
//!   is the one with the highest generation);
//! * writes are serialised by the superblock's mutex, which is held across
//!   the I/O: it is taken alone (commit hooks take it with the journal's
//!   commit lock held, so nobody may commit while holding it).

use crate::devset::{write_superblocks, DeviceSet, SetLeg};
use crate::error::FsResult;
use crate::format::superblock::{MemberCounters, MemberState};
use crate::format::Superblock;
use keelfs_engine::mirror::LegState;
use keelfs_engine::stats::StatsSnapshot;
use parking_lot::Mutex;

struct Inner {
    sb: Superblock,
    /// Highest header generation written or found.
    generation: u64,
}

/// The superblock of a mounted filesystem. See the module docs.
pub struct SuperblockKeeper {
    set: DeviceSet,
    inner: Mutex<Inner>,
    /// Mirror leg → its counters at mount (or when it got its device).
    /// Lock order: leaf, like `tracked`.
    baseline: Mutex<Vec<StatsSnapshot>>,
    /// Member → its persistent counters at mount (or zero for a device
    /// new since). Lock order: leaf.
    mount_counters: Mutex<Vec<MemberCounters>>,
    /// Mirror leg → in service at mount, or put under resync since: a
    /// failure of it is to be recorded.
    tracked: Mutex<Vec<bool>>,
}

impl SuperblockKeeper {
    /// Keeps the superblock of `set` (its authoritative copy).
    pub fn new(set: DeviceSet) -> SuperblockKeeper {
        let sb = set.superblock().clone();
        let mirror = set.mirror();
        let baseline = mirror.stats();
        let in_service_at_mount = (0..mirror.num_legs())
            .map(|p| mirror.leg_state(p) == LegState::InService)
            .collect();
        let mount_counters = sb.members.iter().map(|m| m.counters).collect();
        let generation = set.generation();
        SuperblockKeeper {
            set,
            inner: Mutex::new(Inner { sb, generation }),
            baseline: Mutex::new(baseline),
            mount_counters: Mutex::new(mount_counters),
            tracked: Mutex::new(in_service_at_mount),
        }
    }

    /// From now on a failure of mirror leg `leg` is recorded (a leg put
    /// under resync).
    pub fn track(&self, leg: usize) {
        if let Some(t) = self.tracked.lock().get_mut(leg) {
            *t = true;
        }
    }

    /// Records `leg`, just attached to the mirror set as mirror leg
    /// `position` (the one after the last), as a leg of the set: tracked,
    /// counters from zero. The caller adds its member entry with the next
    /// [`Self::write`].
    pub fn attach(&self, position: usize, leg: SetLeg) -> FsResult<()> {
        let member = leg.member as usize;
        if position != self.set.legs().len() {
            return Err(crate::error::FsError::Invalid(format!(
                "mirror leg {position} attached, but the set has {} legs",
                self.set.legs().len()
            )));
        }
        self.set.push_leg(leg);
        let now = self.set.mirror().stats();
        {
            let mut baseline = self.baseline.lock();
            baseline.resize(position + 1, StatsSnapshot::default());
            if let Some(s) = now.get(position) {
                baseline[position] = *s;
            }
        }
        {
            let mut counters = self.mount_counters.lock();
            if counters.len() <= member {
                counters.resize(member + 1, MemberCounters::default());
            }
            counters[member] = MemberCounters::default();
        }
        let mut tracked = self.tracked.lock();
        tracked.resize(position + 1, false);
        tracked[position] = true;
        Ok(())
    }

    /// Records that mirror leg `leg` is now `new` (a replacement device):
    /// its counters start again from zero.
    pub fn replaced(&self, leg: usize, new: SetLeg) {
        let member = new.member as usize;
        self.set.set_leg(leg, new);
        if let (Some(b), Some(now)) = (
            self.baseline.lock().get_mut(leg),
            self.set.mirror().stats().get(leg),
        ) {
            *b = *now;
        }
        if let Some(c) = self.mount_counters.lock().get_mut(member) {
            *c = MemberCounters::default();
        }
    }

    /// The device set.
    pub fn set(&self) -> &DeviceSet {
        &self.set
    }

    /// A copy of the superblock as last changed.
    pub fn snapshot(&self) -> Superblock {
        self.inner.lock().sb.clone()
    }

    /// The highest generation written (or found at mount).
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    /// Applies `change` and writes every in-service leg's copy with header
    /// generation `generation` (or the last one written, if higher).
    pub fn write(&self, generation: u64, change: impl FnOnce(&mut Superblock)) -> FsResult<()> {
        let mut inner = self.inner.lock();
        change(&mut inner.sb);
        let generation = generation.max(inner.generation);
        self.refresh_members(&mut inner.sb, generation);
        inner.sb.last_written = super::time::now().secs.max(0) as u64;
        let failed = write_superblocks(&self.set, &inner.sb, generation)?;
        if !failed.is_clear() {
            log::warn!("superblock write failed on legs {:?}", failed.failed_legs());
        }
        inner.generation = generation;
        Ok(())
    }

    fn refresh_members(&self, sb: &mut Superblock, generation: u64) {
        let mirror = self.set.mirror();
        let now = mirror.stats();
        let tracked = self.tracked.lock().clone();
        for (p, leg) in self.set.legs().iter().enumerate() {
            let Some(member) = sb.members.get_mut(leg.member as usize) else {
                continue;
            };
            match mirror.leg_state(p) {
                LegState::InService => {
                    member.last_transaction = member.last_transaction.max(generation);
                    if member.state == MemberState::Resyncing {
                        member.state = MemberState::InUse;
                    }
                    member.needs_check = mirror.is_suspect(p);
                }
                LegState::Resyncing => member.state = MemberState::Resyncing,
                LegState::Failed if tracked.get(p).copied().unwrap_or(false) => {
                    member.state = MemberState::Failed;
                }
                LegState::Failed => {}
            }
            if let Some(total) = self.totals_with(&now, p) {
                member.counters = total;
            }
        }
    }

    /// Mirror leg `leg`'s error counters over its whole life: what its
    /// superblock held at mount plus what the mirror counted since.
    pub fn leg_totals(&self, leg: usize) -> Option<MemberCounters> {
        self.totals_with(&self.set.mirror().stats(), leg)
    }

    fn totals_with(&self, now: &[StatsSnapshot], leg: usize) -> Option<MemberCounters> {
        let member = self.set.leg(leg)?.member as usize;
        let (base, cur, at_mount) = (
            *self.baseline.lock().get(leg)?,
            now.get(leg)?,
            *self.mount_counters.lock().get(member)?,
        );
        Some(MemberCounters {
            read_errors: at_mount.read_errors + cur.read_errors.saturating_sub(base.read_errors),
            write_errors: at_mount.write_errors
                + (cur.write_errors + cur.flush_errors)
                    .saturating_sub(base.write_errors + base.flush_errors),
            checksum_errors: at_mount.checksum_errors
                + cur.checksum_errors.saturating_sub(base.checksum_errors),
            blocks_healed: at_mount.blocks_healed + cur.healed.saturating_sub(base.healed),
        })
    }
}
