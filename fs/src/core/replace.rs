//! Replacing a leg with a new device while mounted (`keelfs replace`).
//!
//! What it promises ([`Fs::replace_leg`]):
//!
//! * the new device must hold every block of the set (`N × B` bytes at
//!   least); the leg it replaces may be failed, resyncing (its resyncs are
//!   cancelled first) or in service (then another leg must be in service:
//!   it is taken out first; a resync of it must have been stopped:
//!   [`Fs::start_replace`] stops them);
//! * the device is swapped into the mirror set in the `Resyncing` state
//!   (from then on it receives every write), the member gets a new device
//!   uuid recorded `Resyncing` in every in-service leg's member table, and
//!   the new device gets its own superblock copies (primary and backup)
//!   with that uuid; the old device is then no member any more (a later
//!   mount refuses it: "replaced?"); the device set names the new device
//!   from then on (`keelfs status` shows it), with counters from zero;
//! * re-adding a returned leg is a replace by the device the leg already
//!   has (`keelfs replace MNT DEV DEV`): the same handle, a new member
//!   uuid, a full resync;
//! * then the leg is resynced ([`Fs::resync_leg`]) and ends `InUse`.
//!   A crash during the resync leaves the new device recorded
//!   `Resyncing`: the next mount resyncs it again.
//!
//! Relies on: `MirrorSet::replace_device`; the superblock keeper (its
//! lock taken alone); the resync module.

use super::resync::ResyncProgress;
use super::Fs;
use crate::devset::{random_uuid, write_superblock_copies, SetLeg, SuperblockCopy};
use crate::error::{FsError, FsResult};
use crate::format::superblock::{MemberCounters, MemberState};
use keelfs_engine::device::DeviceRef;
use keelfs_engine::mirror::LegState;

impl Fs {
    /// A device that is to become a leg (replace, add) must hold the
    /// whole filesystem.
    pub(super) fn check_leg_size(&self, device: &DeviceRef) -> FsResult<()> {
        let need = self.layout.device_blocks * self.block_size();
        if device.size() < need {
            return Err(FsError::Invalid(format!(
                "{}: {} bytes is too small: the filesystem needs {need} bytes per leg",
                device.name(),
                device.size()
            )));
        }
        Ok(())
    }

    /// Replaces mirror leg `leg` by `device` and resyncs it; see the module
    /// docs. `progress` reports the resync.
    pub fn replace_leg(
        &self,
        leg: usize,
        device: DeviceRef,
        progress: &ResyncProgress,
    ) -> FsResult<()> {
        self.check_writable()?;
        let mirror = std::sync::Arc::clone(self.volume.set());
        if leg >= mirror.num_legs() {
            return Err(FsError::Invalid(format!(
                "no mirror leg {leg} (the set has {})",
                mirror.num_legs()
            )));
        }
        self.check_leg_size(&device)?;
        match mirror.leg_state(leg) {
            LegState::InService => {
                if mirror.in_service().count() < 2 {
                    return Err(FsError::Invalid(format!(
                        "leg {leg} is the only leg in service: it cannot be replaced"
                    )));
                }
                mirror.mark_failed(leg);
            }
            LegState::Resyncing => {
                // The caller stopped its resync (`Fs::start_replace` does).
                mirror.mark_failed(leg);
            }
            LegState::Failed => {}
        }
        mirror.replace_device(leg, device.clone())?;
        mirror.mark_resyncing(leg);
        self.keeper.track(leg);
        let member = self
            .keeper
            .set()
            .leg(leg)
            .map(|l| l.member)
            .ok_or_else(|| FsError::Invalid(format!("no mirror leg {leg} in the device set")))?;
        let uuid = random_uuid();
        self.keeper.replaced(
            leg,
            SetLeg {
                device: device.clone(),
                member,
                device_uuid: uuid,
                generation: self.keeper.generation(),
                copy: SuperblockCopy::Primary,
                primary_problem: None,
            },
        );
        log::info!(
            "leg {leg} (member {member}) replaced by {}: resyncing it",
            device.name()
        );
        self.keeper.write(self.journal.committed_seq(), |sb| {
            if let Some(m) = sb.members.get_mut(member as usize) {
                m.uuid = uuid;
                m.state = MemberState::Resyncing;
                m.last_transaction = 0;
                m.counters = MemberCounters::default();
            }
        })?;
        let sb = self.keeper.snapshot();
        let failed =
            write_superblock_copies(&mirror, &[(leg, member)], &sb, self.keeper.generation())?;
        if failed.has(leg) {
            return Err(FsError::Invalid(format!(
                "writing the superblocks of {} failed",
                device.name()
            )));
        }
        self.resync_leg(leg, progress)
    }
}
