//! Adding a leg to a mounted filesystem (`keelfs add`): a single device
//! becomes a two-way mirror, a two-way mirror a three-way one, up to the
//! format's [`MAX_MEMBERS`].
//!
//! What it promises ([`Fs::add_leg`], [`Fs::start_add`]):
//!
//! * the new device must hold every block of the set (`N × B` bytes at
//!   least) and, unless forced, hold no filesystem `probe` recognises
//!   (keelfs or another: adding formats it);
//! * its own superblock copies (primary, flush, backup, flush) are written
//!   first, straight to the device, carrying the grown member table (the
//!   new member at the next index, with a new device uuid, `Resyncing`);
//!   then it is attached to the mirror set and put in the `Resyncing`
//!   state (from then on it receives every write, serves no read), and
//!   every in-service leg's superblock records the grown table;
//! * then it is resynced online at idle priority ([`Fs::resync_leg`], the
//!   same machinery as a replace), with progress in the resync jobs, and
//!   ends `InUse`, in service;
//! * crash safety, by the order of the superblock writes: a crash before
//!   the old legs record the new member leaves them a set without it (a
//!   mount given the new device too is refused: one device more than the
//!   set has legs, or a device claiming an index the table does not
//!   have); a crash after leaves the
//!   new member recorded `Resyncing`, and the next mount resyncs it from
//!   the start. Nothing that can fail but the final superblock write comes
//!   after the attach.
//!
//! Relies on: `MirrorSet::attach_leg` (room for [`MAX_MEMBERS`] legs, see
//! `devset::identify`); the superblock keeper (its lock taken alone); the
//! resync module.

use super::resync::ResyncProgress;
use super::Fs;
use crate::devset::{
    encode_superblock_block, probe_existing_filesystem, random_uuid, SetLeg, SuperblockCopy,
};
use crate::error::{FsError, FsResult};
use crate::format::superblock::{Member, MemberState, MAX_MEMBERS};
use keelfs_engine::device::DeviceRef;
use std::sync::Arc;

impl Fs {
    /// Makes `device` a new leg of the set, in the `Resyncing` state (see
    /// the module docs), and returns its mirror leg number; the caller
    /// resyncs it ([`Fs::resync_leg`]). `force` adds a device that holds a
    /// filesystem.
    pub fn add_leg(&self, device: DeviceRef, force: bool) -> FsResult<usize> {
        self.check_writable()?;
        let members = self.keeper.snapshot().members.len();
        if members >= MAX_MEMBERS {
            return Err(FsError::Invalid(format!(
                "the set has {members} members, the most a keelfs filesystem can have"
            )));
        }
        self.check_leg_size(&device)?;
        if !force {
            if let Some(what) = probe_existing_filesystem(device.as_ref()) {
                return Err(FsError::Invalid(format!(
                    "{} holds {what}; adding it as a leg would overwrite it \
                     (give -f to add it anyway)",
                    device.name()
                )));
            }
        }
        let mirror = Arc::clone(self.volume.set());
        if mirror.num_legs() >= mirror.max_legs() {
            return Err(FsError::Invalid(format!(
                "the mirror set has room for {} legs, all in use",
                mirror.max_legs()
            )));
        }
        let member = members as u32;
        let uuid = random_uuid();
        let entry = Member {
            uuid,
            state: MemberState::Resyncing,
            ..Member::default()
        };
        // The new device's own superblocks first (see the module docs).
        let mut sb = self.keeper.snapshot();
        sb.members.push(entry);
        let generation = self.keeper.generation();
        let bs = self.block_size();
        for address in [0, sb.layout.backup_superblock] {
            let block = encode_superblock_block(&sb, member, address, generation)?;
            device
                .write_at(address * bs, &block)
                .and_then(|()| device.flush())
                .map_err(keelfs_engine::EngineError::Device)?;
        }
        let leg = mirror.attach_leg(device.clone())?;
        mirror.mark_resyncing(leg);
        log::info!(
            "{} added as leg {leg} (member {member}): resyncing it",
            device.name()
        );
        self.keeper.attach(
            leg,
            SetLeg {
                device,
                member,
                device_uuid: uuid,
                generation,
                copy: SuperblockCopy::Primary,
                primary_problem: None,
            },
        )?;
        self.keeper
            .write(self.journal.committed_seq(), |sb| sb.members.push(entry))?;
        Ok(leg)
    }

    /// Adds `device` ([`Fs::add_leg`]) and resyncs it on a background
    /// thread, after cancelling the resyncs running (they start again from
    /// their beginning on that thread, with the new leg's). Returns the
    /// progress of the new leg's resync.
    pub fn start_add(
        fs: &Arc<Fs>,
        device: DeviceRef,
        force: bool,
    ) -> FsResult<Arc<ResyncProgress>> {
        fs.check_writable()?;
        fs.stop_resync();
        let added = fs.add_leg(device, force);
        let jobs = Fs::spawn_resync(fs)?;
        let leg = added?;
        jobs.into_iter()
            .find(|j| j.leg == leg)
            .ok_or_else(|| FsError::Invalid(format!("leg {leg} is not being resynced")))
    }
}
