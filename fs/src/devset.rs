//! The set of legs a filesystem lives on: opening them, reading and
//! writing their superblocks, and deciding which of them can be trusted.
//!
//! What this module promises:
//!
//! * [`open_legs`] opens each path as a [`FileDevice`] under an exclusive
//!   `flock` (read-only if asked; optionally waiting for the lock, for a
//!   remount racing the old daemon), and refuses a device given twice
//!   (the same file or block device under two names) before opening it.
//! * [`read_superblock`] / [`read_superblock_copy`] find the superblock of
//!   one leg: the primary at block 0 if it is sound, else the backup at
//!   block N−1 (see "Finding the backup" below), and say which copy was
//!   used and why the primary was not. Whatever the bytes on the device,
//!   the answer is a superblock or an [`FsError`] naming the device: never
//!   a panic.
//! * [`identify`] reads every leg and checks that they form one set: the
//!   same filesystem uuid, the same layout, distinct member indexes that the
//!   newest member table agrees with. It picks the authoritative superblock
//!   (highest header generation) and reports, as a typed [`SetReport`],
//!   members with no device (missing), members marked failed or resyncing,
//!   stale legs, legs read from their backup copy, and whether unknown
//!   read-only-compatible features force a read-only mount. Failed,
//!   resyncing and stale legs are taken out of service in the set's
//!   [`MirrorSet`], so nothing is read from them until a resync puts them
//!   back; members flagged "needs check" are suspect in it (read last).
//!   Unknown incompatible features are refused.
//! * Stale is judged by what the newest superblock says of the member, not
//!   by the leg's own superblock: a leg is stale when the newest member
//!   table's `last_transaction` for it is older than the newest generation
//!   (transactions were committed while it was away). A leg whose own
//!   superblock is merely older — a power cut between the legs' superblock
//!   writes, which are not atomic across legs — but which the newest table
//!   records as holding the newest transaction missed nothing and is
//!   trusted.
//! * The set can grow while mounted ([`DeviceSet::push_leg`], `keelfs
//!   add`) and a leg's device can change ([`DeviceSet::set_leg`], `keelfs
//!   replace`): [`DeviceSet::legs`] is a snapshot of the legs as they are
//!   now. Its mirror set has room for [`MAX_MEMBERS`] legs.
//! * [`write_superblocks`] writes each leg its own copy (the per-device
//!   fields differ, so this cannot be one mirrored write): every primary,
//!   a flush, every backup, a flush. A crash at any instant leaves each leg
//!   with at least one sound copy, old or new.
//! * [`probe_existing_filesystem`] recognises keelfs and a small table of
//!   other filesystems and partition tables, so `mkfs.keelfs` can refuse to
//!   overwrite them without `-F`.
//!
//! Finding the backup: the backup superblock is block N−1 of a leg, and N
//! is recorded in the superblock being looked for. So when the primary is
//! bad, the candidates are, in this order: (B, N) as recorded in the first
//! bytes of block 0 if those are still readable (magic, version and a valid
//! block size at offset 72, N at offset 80, N·B within the device), then
//! for each valid block size B (4096 first, then 1024 upwards) the last
//! whole B-byte block of the device (N = ⌊size / B⌋). The first candidate
//! that passes the metadata check for its address (magic, crc, address
//! N−1, the uuid it carries, kind 1) and decodes to a superblock recording
//! exactly that B and N is used. `mkfs.keelfs` zeroes the last 128 KiB of
//! every leg before writing, which covers every candidate position, so no
//! backup of an earlier filesystem can be mistaken for the new one's.
//!
//! What it relies on: the [`format`](crate::format) codecs for the §4
//! superblock, the engine's `meta_check`/`meta_seal` for the §2 header, and
//! `MirrorSet::write_regions_sync` for writes aimed at one leg.

use crate::error::FsError;
use crate::format::header::BlockKind;
use crate::format::layout::{MAX_BLOCK_SIZE, MIN_BLOCK_SIZE};
use crate::format::le;
use crate::format::superblock::{MemberState, Superblock, MAX_MEMBERS};
use crate::format::{FormatError, Problem, META_HEADER_LEN};
use keelfs_engine::device::{Device, DeviceRef, FileDevice, FileOpenOptions, SECTOR};
use keelfs_engine::integrity::{
    meta_check, meta_gen, meta_kind, meta_seal, meta_set_gen, meta_set_kind, TagMismatch, Volume,
};
use keelfs_engine::mirror::{ErrorBits, LegState, MirrorConfig, MirrorSet, Region};
use keelfs_engine::{DeviceError, EngineError};
use parking_lot::RwLock;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Bytes read from the start of block 0 to learn the block size (§4).
pub const SUPERBLOCK_PEEK_LEN: usize = 1024;

/// Offset (from the block start) of N in the superblock (§4).
const DEVICE_BLOCKS_OFFSET: usize = 80;

/// Why a device cannot be used as a leg of the set it was given for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DevSetError {
    /// No device at all.
    #[error("no devices given")]
    NoDevices,
    /// The same file or block device given twice.
    #[error("{device}: given twice (it is the same device as {first})")]
    GivenTwice { device: String, first: String },
    /// No keelfs superblock, primary or backup.
    #[error("{device}: not a keelfs device: {reason}")]
    NotKeelfs { device: String, reason: String },
    /// The superblock records more blocks than the device has.
    #[error(
        "{device}: truncated: its superblock records {blocks} blocks of {block_size} bytes \
         ({} bytes) but the device has only {size} bytes",
        u128::from(*.blocks) * u128::from(*.block_size)
    )]
    Truncated {
        device: String,
        blocks: u64,
        block_size: u32,
        size: u64,
    },
    /// A keelfs device of another filesystem.
    #[error(
        "{device}: belongs to another keelfs filesystem (uuid {}), not to {} like {first}",
        format_uuid(.found), format_uuid(.expected)
    )]
    ForeignFilesystem {
        device: String,
        found: [u8; 16],
        expected: [u8; 16],
        first: String,
    },
    /// Two devices claim the same member index (one is a copy).
    #[error(
        "{device} and {other} are both member {index} of the set (device uuid {}): \
         one is a copy of the other",
        format_uuid(.uuid)
    )]
    DuplicateMember {
        device: String,
        other: String,
        index: u32,
        uuid: [u8; 16],
    },
    /// More devices than the set has members.
    #[error("{given} devices given, but the filesystem has {members} legs")]
    TooManyLegs { given: usize, members: usize },
    /// The device is a leg of this filesystem no longer (removed, replaced).
    #[error("{device}: not a member of this filesystem's mirror set: {reason}")]
    NotAMember { device: String, reason: String },
    /// Legs whose superblocks contradict each other.
    #[error("{device}: superblock disagrees with {other}'s: {what}")]
    Inconsistent {
        device: String,
        other: String,
        what: String,
    },
    /// Incompatible features this version does not know.
    #[error(
        "{device}: the filesystem uses incompatible features {bits:#x} this keelfs does not \
         know; refusing to use it"
    )]
    UnsupportedFeatures { device: String, bits: u64 },
    /// mkfs: the legs differ in usable size.
    #[error(
        "legs differ in size: {}; every leg must hold the same number of {block_size}-byte \
         blocks (sizes are rounded down to whole blocks, with no tolerance)",
        describe_sizes(.sizes)
    )]
    UnequalSizes {
        /// (device, size in bytes, usable blocks).
        sizes: Vec<(String, u64, u64)>,
        block_size: u32,
    },
    /// mkfs: the legs are too small for the layout.
    #[error(
        "{device}: too small: {size} bytes ({blocks} blocks of {block_size} bytes); these \
         options need at least {min_blocks} blocks ({} bytes)",
        u128::from(*.min_blocks) * u128::from(*.block_size)
    )]
    TooSmall {
        device: String,
        size: u64,
        blocks: u64,
        block_size: u32,
        min_blocks: u64,
    },
    /// mkfs: a filesystem has 1 to 8 legs.
    #[error("{given} devices given: a keelfs filesystem has 1 to {max} legs", max = MAX_MEMBERS)]
    LegCount { given: usize },
    /// A write that had to reach these legs did not.
    #[error("writing {what} failed on {}", .devices.join(", "))]
    WriteFailed { what: String, devices: Vec<String> },
}

fn describe_sizes(sizes: &[(String, u64, u64)]) -> String {
    sizes
        .iter()
        .map(|(d, bytes, blocks)| format!("{d} has {bytes} bytes = {blocks} blocks"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- uuids -------------------------------------------------------------

/// A uuid as 8-4-4-4-12 lowercase hex.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Parses 32 hex digits, with or without the dashes of the 8-4-4-4-12 form.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let t = text.trim();
    let dashed = t.len() == 36
        && [8, 13, 18, 23]
            .iter()
            .all(|&i| t.as_bytes().get(i) == Some(&b'-'));
    let hex: String = if dashed {
        t.chars().filter(|&c| c != '-').collect()
    } else {
        t.to_string()
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, b) in uuid.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(uuid)
}

/// A random (version 4) uuid.
pub fn random_uuid() -> [u8; 16] {
    let mut uuid: [u8; 16] = rand::random();
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

// ---- opening -----------------------------------------------------------

/// How [`open_legs`] opens devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegOpenOptions {
    /// Open read-only (fsck -n, mkfs -n, a read-only mount).
    pub read_only: bool,
    /// Wait for another process's lock instead of failing at once.
    pub wait_for_lock: bool,
}

/// Identity of a file or block device, to catch one given twice.
fn device_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    if meta.file_type().is_block_device() {
        Some((u64::MAX, meta.rdev()))
    } else {
        Some((meta.dev(), meta.ino()))
    }
}

/// Opens each path as a leg: a [`FileDevice`] under an exclusive `flock`.
/// A device given twice (under the same or another name) is refused before
/// anything is opened.
pub fn open_legs<P: AsRef<Path>>(
    paths: &[P],
    opts: LegOpenOptions,
) -> Result<Vec<DeviceRef>, FsError> {
    if paths.is_empty() {
        return Err(DevSetError::NoDevices.into());
    }
    let mut seen: Vec<((u64, u64), String)> = Vec::new();
    for p in paths {
        let name = p.as_ref().display().to_string();
        if let Some(id) = device_identity(p.as_ref()) {
            if let Some((_, first)) = seen.iter().find(|(other, _)| *other == id) {
                return Err(DevSetError::GivenTwice {
                    device: name,
                    first: first.clone(),
                }
                .into());
            }
            seen.push((id, name));
        }
    }
    let file_opts = FileOpenOptions {
        read_only: opts.read_only,
        lock: true,
        wait_for_lock: opts.wait_for_lock,
    };
    paths
        .iter()
        .map(|p| {
            let dev = FileDevice::open_with(p, file_opts)?;
            Ok(Arc::new(dev) as DeviceRef)
        })
        .collect()
}

// ---- one leg's superblock -------------------------------------------------

/// Which copy of a leg's superblock was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuperblockCopy {
    /// Block 0.
    Primary,
    /// Block N−1 (the primary was unreadable or failed its checks).
    Backup,
}

impl fmt::Display for SuperblockCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SuperblockCopy::Primary => "primary",
            SuperblockCopy::Backup => "backup",
        })
    }
}

/// A leg's superblock as found on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSuperblock {
    pub superblock: Superblock,
    /// The header generation: the last transaction checkpointed on this leg.
    pub generation: u64,
    /// Which copy it came from.
    pub copy: SuperblockCopy,
    /// Why the primary was not used, when the backup was.
    pub primary_problem: Option<String>,
}

/// Why one copy was not accepted.
enum CopyProblem {
    /// Unreadable, not sealed, or not a superblock at all.
    Bad(String),
    /// A sealed superblock block whose payload the codec refuses.
    Format(FormatError),
}

impl fmt::Display for CopyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyProblem::Bad(s) => f.write_str(s),
            CopyProblem::Format(e) => write!(f, "{e}"),
        }
    }
}

fn read_bytes(dev: &dyn Device, offset: u64, len: usize) -> Result<Vec<u8>, DeviceError> {
    let mut buf = vec![0u8; len];
    dev.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// Reads and checks the superblock copy at `address` for block size
/// `block_size`; `expect_blocks` is the N it must record.
fn check_copy(
    dev: &dyn Device,
    block_size: u32,
    address: u64,
    expect_blocks: Option<u64>,
) -> Result<(Superblock, u64), CopyProblem> {
    let bs = u64::from(block_size);
    let offset = address
        .checked_mul(bs)
        .filter(|o| o.checked_add(bs).is_some_and(|end| end <= dev.size()))
        .ok_or_else(|| CopyProblem::Bad("beyond the end of the device".into()))?;
    let buf = read_bytes(dev, offset, block_size as usize)
        .map_err(|e| CopyProblem::Bad(format!("read error: {e}")))?;
    let uuid: [u8; 16] = le::get_array(&buf, 24).unwrap_or_default();
    match meta_check(address, &uuid, &buf, None) {
        Ok(()) => {}
        Err(TagMismatch::Unwritten) => return Err(CopyProblem::Bad("all zeroes".into())),
        Err(TagMismatch::BadMagic { .. }) => {
            return Err(CopyProblem::Bad("no keelfs metadata header".into()))
        }
        Err(m) => return Err(CopyProblem::Bad(m.to_string())),
    }
    let kind = meta_kind(&buf);
    if kind != BlockKind::Superblock.to_u16() {
        return Err(CopyProblem::Bad(format!(
            "a metadata block of kind {kind}, not a superblock"
        )));
    }
    let sb = Superblock::decode(&buf[META_HEADER_LEN..]).map_err(CopyProblem::Format)?;
    if sb.fs_uuid != uuid {
        return Err(CopyProblem::Bad(
            "the header's filesystem uuid differs from the superblock's".into(),
        ));
    }
    if sb.layout.block_size != block_size {
        return Err(CopyProblem::Bad(format!(
            "records block size {}, found with {block_size}",
            sb.layout.block_size
        )));
    }
    if let Some(n) = expect_blocks {
        if sb.layout.device_blocks != n {
            return Err(CopyProblem::Bad(format!(
                "records {} blocks, found at the end of {n}",
                sb.layout.device_blocks
            )));
        }
    }
    Ok((sb, meta_gen(&buf)))
}

/// The block sizes a backup is looked for with, in order.
fn block_size_candidates() -> impl Iterator<Item = u32> {
    std::iter::once(4096).chain(
        (MIN_BLOCK_SIZE.trailing_zeros()..=MAX_BLOCK_SIZE.trailing_zeros())
            .map(|s| 1u32 << s)
            .filter(|&b| b != 4096),
    )
}

fn incompat_bits(problem: &CopyProblem) -> Option<u64> {
    match problem {
        CopyProblem::Format(FormatError::Invalid {
            field: "incompat_features",
            problem: Problem::UnknownBits { bits },
            ..
        }) => Some(*bits),
        _ => None,
    }
}

/// The superblock of one leg; see [`read_superblock_copy`].
pub fn read_superblock(dev: &dyn Device) -> Result<Superblock, FsError> {
    read_superblock_copy(dev).map(|found| found.superblock)
}

/// The superblock of one leg: the primary (block 0) if it passes the
/// metadata check for address 0 and the uuid it carries, has kind 1 and
/// decodes; otherwise the backup, found as the module documentation says.
/// Errors: a device error reading block 0, [`DevSetError::NotKeelfs`] when
/// no copy is sound, [`DevSetError::UnsupportedFeatures`] for unknown
/// incompatible features, [`DevSetError::Truncated`] when the device is
/// smaller than the superblock says.
pub fn read_superblock_copy(dev: &dyn Device) -> Result<FoundSuperblock, FsError> {
    let name = dev.name().to_string();
    let size = dev.size();
    let not_keelfs = |reason: String| -> FsError {
        DevSetError::NotKeelfs {
            device: name.clone(),
            reason,
        }
        .into()
    };
    if size < SUPERBLOCK_PEEK_LEN as u64 {
        return Err(not_keelfs(format!(
            "the device has only {size} bytes, too few for a superblock"
        )));
    }
    let head = read_bytes(dev, 0, SUPERBLOCK_PEEK_LEN)?;
    let mut backups: Vec<(u32, u64)> = Vec::new();
    let primary_problem = match Superblock::peek_block_size(&head) {
        Ok(bs) => {
            let recorded = le::get_u64(&head, DEVICE_BLOCKS_OFFSET).unwrap_or(0);
            if recorded >= 1
                && recorded
                    .checked_mul(u64::from(bs))
                    .is_some_and(|end| end <= size)
            {
                backups.push((bs, recorded));
            }
            match check_copy(dev, bs, 0, None) {
                Ok((superblock, generation)) => {
                    return finish(
                        dev,
                        FoundSuperblock {
                            superblock,
                            generation,
                            copy: SuperblockCopy::Primary,
                            primary_problem: None,
                        },
                    )
                }
                Err(p) => p,
            }
        }
        Err(_) if head.iter().all(|&b| b == 0) => CopyProblem::Bad("all zeroes".into()),
        Err(e) => CopyProblem::Format(e),
    };
    for bs in block_size_candidates() {
        let n = size / u64::from(bs);
        if n >= 1 && !backups.contains(&(bs, n)) {
            backups.push((bs, n));
        }
    }
    let mut backup_problems: Vec<((u32, u64), CopyProblem)> = Vec::new();
    for &(bs, n) in &backups {
        match check_copy(dev, bs, n - 1, Some(n)) {
            Ok((superblock, generation)) => {
                return finish(
                    dev,
                    FoundSuperblock {
                        superblock,
                        generation,
                        copy: SuperblockCopy::Backup,
                        primary_problem: Some(primary_problem.to_string()),
                    },
                )
            }
            Err(p) => backup_problems.push(((bs, n), p)),
        }
    }
    if let Some(bits) = std::iter::once(&primary_problem)
        .chain(backup_problems.iter().map(|(_, p)| p))
        .find_map(incompat_bits)
    {
        return Err(DevSetError::UnsupportedFeatures { device: name, bits }.into());
    }
    let backup = match backup_problems.first() {
        Some(((bs, n), p)) => format!("backup superblock (block {} of {bs} bytes): {p}", n - 1),
        None => "no room for a backup superblock".to_string(),
    };
    Err(not_keelfs(format!(
        "primary superblock: {primary_problem}; {backup}"
    )))
}

/// The checks on a found superblock that concern the device, not the copy.
fn finish(dev: &dyn Device, found: FoundSuperblock) -> Result<FoundSuperblock, FsError> {
    let l = &found.superblock.layout;
    let need = u128::from(l.device_blocks) * u128::from(l.block_size);
    if need > u128::from(dev.size()) {
        return Err(DevSetError::Truncated {
            device: dev.name().to_string(),
            blocks: l.device_blocks,
            block_size: l.block_size,
            size: dev.size(),
        }
        .into());
    }
    Ok(found)
}

// ---- the set -------------------------------------------------------------

/// One device of an identified set.
#[derive(Debug, Clone)]
pub struct SetLeg {
    pub device: DeviceRef,
    /// Its index in the member table.
    pub member: u32,
    /// Its device uuid.
    pub device_uuid: [u8; 16],
    /// Its own superblock's header generation.
    pub generation: u64,
    /// Which copy of its superblock was read.
    pub copy: SuperblockCopy,
    /// Why its primary was not used, when the backup was.
    pub primary_problem: Option<String>,
}

impl SetLeg {
    /// The device's name (its path).
    pub fn name(&self) -> &str {
        self.device.name()
    }
}

/// A member of the set with no device given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingMember {
    pub member: u32,
    pub device_uuid: [u8; 16],
    pub state: MemberState,
}

/// A leg that missed writes: the newest member table records an older
/// last transaction for it than the newest generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleLeg {
    pub member: u32,
    pub device: String,
    /// The last transaction the newest member table says it holds.
    pub generation: u64,
    /// The newest generation of the set.
    pub newest: u64,
}

/// What [`identify`] found out about the set, for the mount program (which
/// requires `-o degraded` when [`SetReport::is_degraded`]) and for resync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetReport {
    /// Members in the authoritative table, absent ones included (M).
    pub member_count: usize,
    /// Members (not absent) for which no device was given.
    pub missing: Vec<MissingMember>,
    /// Members the authoritative table marks failed, given or not.
    pub failed: Vec<u32>,
    /// Members the authoritative table marks as being resynced.
    pub resyncing: Vec<u32>,
    /// Given legs that missed transactions (see [`StaleLeg`]).
    pub stale: Vec<StaleLeg>,
    /// Members the authoritative table flags "needs check" (they failed
    /// reads): in use, read last until a scrub finds them good.
    pub needs_check: Vec<u32>,
    /// Given legs whose superblock came from the backup copy.
    pub backup_used: Vec<u32>,
    /// Unknown read-only-compatible features: mount read-only only.
    pub read_only_required: bool,
}

impl SetReport {
    /// Whether some member is missing, failed, resyncing or stale: the set
    /// works, but with less redundancy than it should have.
    pub fn is_degraded(&self) -> bool {
        !self.missing.is_empty()
            || !self.failed.is_empty()
            || !self.resyncing.is_empty()
            || !self.stale.is_empty()
    }

    /// One line per finding, for messages and logs.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for m in &self.missing {
            lines.push(format!(
                "member {} (device uuid {}) is missing",
                m.member,
                format_uuid(&m.device_uuid)
            ));
        }
        for m in &self.failed {
            lines.push(format!("member {m} is marked failed"));
        }
        for m in &self.resyncing {
            lines.push(format!("member {m} is being resynced"));
        }
        for s in &self.stale {
            lines.push(format!(
                "member {} ({}) is stale: it holds transaction {}, the newest is {}",
                s.member, s.device, s.generation, s.newest
            ));
        }
        for m in &self.needs_check {
            lines.push(format!("member {m} failed reads and needs a check (scrub)"));
        }
        for m in &self.backup_used {
            lines.push(format!("member {m}: primary superblock bad, backup used"));
        }
        if self.read_only_required {
            lines.push("unknown read-only-compatible features: read-only only".into());
        }
        lines
    }
}

/// The legs of one filesystem, identified and checked. Leg `i` of
/// [`DeviceSet::mirror`] is `legs()[i]`; legs given at identify are in
/// member-index order, legs added since follow.
pub struct DeviceSet {
    superblock: Superblock,
    generation: u64,
    /// Lock order: leaf (held only to copy or change the list).
    legs: RwLock<Vec<SetLeg>>,
    mirror: Arc<MirrorSet>,
    volume: Arc<Volume>,
    report: SetReport,
}

impl fmt::Debug for DeviceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSet")
            .field("fs_uuid", &format_uuid(&self.superblock.fs_uuid))
            .field("generation", &self.generation)
            .field("legs", &*self.legs.read())
            .field("report", &self.report)
            .finish()
    }
}

impl DeviceSet {
    /// [`open_legs`] then [`identify`].
    pub fn open<P: AsRef<Path>>(paths: &[P], opts: LegOpenOptions) -> Result<DeviceSet, FsError> {
        identify(&open_legs(paths, opts)?)
    }

    /// The authoritative superblock (the newest; its device fields are
    /// those of the leg it was read from).
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Its header generation: the newest of the set.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The legs as they are now (a copy), in mirror leg order: those given,
    /// in member-index order, then those added since.
    pub fn legs(&self) -> Vec<SetLeg> {
        self.legs.read().clone()
    }

    /// Mirror leg `leg`, if there is one.
    pub fn leg(&self, leg: usize) -> Option<SetLeg> {
        self.legs.read().get(leg).cloned()
    }

    /// Records a leg just attached to the mirror set (at mirror position
    /// `legs().len()`).
    pub(crate) fn push_leg(&self, leg: SetLeg) {
        self.legs.write().push(leg);
    }

    /// Records that mirror leg `leg` is now `new` (a replacement device).
    pub(crate) fn set_leg(&self, leg: usize, new: SetLeg) {
        if let Some(l) = self.legs.write().get_mut(leg) {
            *l = new;
        }
    }

    /// The mirror set over the legs, with failed, resyncing and stale legs
    /// out of service.
    pub fn mirror(&self) -> &Arc<MirrorSet> {
        &self.mirror
    }

    /// The integrity-checked view of the mirror set (one per set: its
    /// write fence must see every write).
    pub fn volume(&self) -> &Arc<Volume> {
        &self.volume
    }

    /// What is missing, failed or stale.
    pub fn report(&self) -> &SetReport {
        &self.report
    }

    /// The filesystem uuid.
    pub fn fs_uuid(&self) -> [u8; 16] {
        self.superblock.fs_uuid
    }

    /// The mirror leg holding member `member`, if it was given.
    pub fn leg_of_member(&self, member: u32) -> Option<usize> {
        self.legs.read().iter().position(|l| l.member == member)
    }
}

fn inconsistent(device: &str, other: &str, what: impl Into<String>) -> FsError {
    DevSetError::Inconsistent {
        device: device.to_string(),
        other: other.to_string(),
        what: what.into(),
    }
    .into()
}

/// Reads every leg's superblock and checks that the legs form one set; see
/// the module documentation. Errors name the offending device.
pub fn identify(devices: &[DeviceRef]) -> Result<DeviceSet, FsError> {
    if devices.is_empty() {
        return Err(DevSetError::NoDevices.into());
    }
    let mut found = Vec::with_capacity(devices.len());
    for dev in devices {
        match read_superblock_copy(dev.as_ref()) {
            Ok(f) => found.push(f),
            Err(FsError::DeviceSet(DevSetError::NotKeelfs { device, reason })) => {
                let reason = match probe_foreign(dev.as_ref()) {
                    Some(what) => format!("it holds {what} ({reason})"),
                    None => reason,
                };
                return Err(DevSetError::NotKeelfs { device, reason }.into());
            }
            Err(e) => return Err(e),
        }
    }
    let first = &found[0].superblock;
    let first_name = devices[0].name();
    for (dev, f) in devices.iter().zip(&found).skip(1) {
        let sb = &f.superblock;
        if sb.fs_uuid != first.fs_uuid {
            return Err(DevSetError::ForeignFilesystem {
                device: dev.name().to_string(),
                found: sb.fs_uuid,
                expected: first.fs_uuid,
                first: first_name.to_string(),
            }
            .into());
        }
        if sb.layout != first.layout {
            return Err(inconsistent(
                dev.name(),
                first_name,
                "the layouts (size, block size, inode count or journal) differ",
            ));
        }
    }
    // The authoritative copy: the highest generation; on a tie, the lowest
    // member index.
    let auth = (0..found.len())
        .max_by_key(|&i| {
            (
                found[i].generation,
                std::cmp::Reverse(found[i].superblock.device_index),
            )
        })
        .unwrap_or(0);
    let auth_sb = found[auth].superblock.clone();
    let auth_gen = found[auth].generation;
    let auth_name = devices[auth].name().to_string();
    let members = &auth_sb.members;
    if devices.len() > members.len() {
        return Err(DevSetError::TooManyLegs {
            given: devices.len(),
            members: members.len(),
        }
        .into());
    }
    let mut legs: Vec<SetLeg> = Vec::with_capacity(devices.len());
    for (dev, f) in devices.iter().zip(&found) {
        let sb = &f.superblock;
        let index = sb.device_index;
        let entry = members.get(index as usize);
        match entry {
            Some(m) if m.uuid == sb.device_uuid && m.state != MemberState::Absent => {}
            Some(m) if m.state == MemberState::Absent => {
                return Err(DevSetError::NotAMember {
                    device: dev.name().to_string(),
                    reason: format!("member {index} was removed (according to {auth_name})"),
                }
                .into())
            }
            Some(m) => {
                return Err(DevSetError::NotAMember {
                    device: dev.name().to_string(),
                    reason: format!(
                        "it is device {} at index {index}, but {auth_name} says member {index} \
                         is device {} (replaced?)",
                        format_uuid(&sb.device_uuid),
                        format_uuid(&m.uuid)
                    ),
                }
                .into())
            }
            None => {
                return Err(DevSetError::NotAMember {
                    device: dev.name().to_string(),
                    reason: format!(
                        "it claims index {index}, but {auth_name} says the set has {} members",
                        members.len()
                    ),
                }
                .into())
            }
        }
        if let Some(other) = legs.iter().find(|l| l.member == index) {
            return Err(DevSetError::DuplicateMember {
                device: dev.name().to_string(),
                other: other.name().to_string(),
                index,
                uuid: sb.device_uuid,
            }
            .into());
        }
        // A leg with an older superblock may have missed a leg being added
        // (its table is shorter); at the same generation the tables agree.
        if f.generation == auth_gen && sb.members.len() != members.len() {
            return Err(inconsistent(
                dev.name(),
                &auth_name,
                format!("{} members against {}", sb.members.len(), members.len()),
            ));
        }
        let same_uuids = sb
            .members
            .iter()
            .zip(members)
            .all(|(a, b)| a.uuid == b.uuid);
        if f.generation == auth_gen && !same_uuids {
            return Err(inconsistent(
                dev.name(),
                &auth_name,
                format!("the member tables differ at the same generation {auth_gen}"),
            ));
        }
        legs.push(SetLeg {
            device: dev.clone(),
            member: index,
            device_uuid: sb.device_uuid,
            generation: f.generation,
            copy: f.copy,
            primary_problem: f.primary_problem.clone(),
        });
    }
    legs.sort_by_key(|l| l.member);

    let mut report = SetReport {
        member_count: members.len(),
        read_only_required: auth_sb.read_only_required(),
        ..SetReport::default()
    };
    for (i, m) in members.iter().enumerate() {
        let i = i as u32;
        if m.state != MemberState::Absent && !legs.iter().any(|l| l.member == i) {
            report.missing.push(MissingMember {
                member: i,
                device_uuid: m.uuid,
                state: m.state,
            });
        }
        match m.state {
            MemberState::Failed => report.failed.push(i),
            MemberState::Resyncing => report.resyncing.push(i),
            MemberState::Absent | MemberState::InUse => {}
        }
        if m.needs_check && m.state == MemberState::InUse {
            report.needs_check.push(i);
        }
    }
    // Stale: by what the newest table says the member holds (see the
    // module docs), not by the leg's own superblock generation.
    let holds = |l: &SetLeg| members[l.member as usize].last_transaction;
    for l in &legs {
        if holds(l) < auth_gen {
            report.stale.push(StaleLeg {
                member: l.member,
                device: l.name().to_string(),
                generation: holds(l),
                newest: auth_gen,
            });
        }
        if l.copy == SuperblockCopy::Backup {
            report.backup_used.push(l.member);
        }
    }

    let block_size = auth_sb.layout.block_size;
    let config = MirrorConfig {
        max_legs: MAX_MEMBERS,
        ..MirrorConfig::default()
    };
    let mirror = Arc::new(MirrorSet::with_config(
        legs.iter().map(|l| l.device.clone()).collect(),
        block_size,
        config,
    )?);
    for (p, l) in legs.iter().enumerate() {
        let m = &members[l.member as usize];
        let untrusted =
            matches!(m.state, MemberState::Failed | MemberState::Resyncing) || holds(l) < auth_gen;
        if untrusted {
            mirror.mark_failed(p);
        } else if m.needs_check {
            mirror.mark_suspect(p);
        }
    }
    let volume = Volume::new(mirror.clone(), auth_sb.fs_uuid).with_kind_names(kind_name);
    Ok(DeviceSet {
        volume: Arc::new(volume),
        superblock: auth_sb,
        generation: auth_gen,
        legs: RwLock::new(legs),
        mirror,
        report,
    })
}

/// The name of metadata block kind `kind` (§2), for log lines.
fn kind_name(kind: u16) -> Option<&'static str> {
    Some(match BlockKind::from_u16(kind).ok()? {
        BlockKind::Superblock => "superblock",
        BlockKind::JournalSuperblock => "journal superblock",
        BlockKind::JournalDescriptor => "journal descriptor",
        BlockKind::JournalCommit => "journal commit",
        BlockKind::BlockBitmap => "block bitmap",
        BlockKind::InodeBitmap => "inode bitmap",
        BlockKind::InodeTable => "inode table",
        BlockKind::TagTable => "tag table",
        BlockKind::ExtentNode => "extent node",
        BlockKind::DirLeaf => "directory leaf",
        BlockKind::DirNode => "directory node",
        BlockKind::Xattr => "xattr block",
        BlockKind::Overflow => "symlink overflow",
        BlockKind::JournalRevoke => "journal revoke",
    })
}

// ---- writing superblocks -------------------------------------------------

/// The sealed block holding member `member`'s copy of `sb` at `address`.
pub fn encode_superblock_block(
    sb: &Superblock,
    member: u32,
    address: u64,
    generation: u64,
) -> Result<Vec<u8>, FsError> {
    let copy = sb.for_member(member)?;
    let mut buf = vec![0u8; sb.layout.block_size as usize];
    copy.encode(&mut buf[META_HEADER_LEN..])?;
    meta_set_kind(&mut buf, BlockKind::Superblock.to_u16());
    meta_set_gen(&mut buf, generation);
    meta_seal(address, &sb.fs_uuid, &mut buf);
    Ok(buf)
}

/// Writes each leg's own copy of `sb` (`for_member` of its index), sealed
/// with header generation `generation`: every primary (block 0), a flush,
/// every backup (block N−1), a flush. Only legs in service in the mirror
/// set whose member entry is neither failed nor absent are written.
/// Returns the legs on which a write or flush failed (the mirror set marks
/// them failed); an error if no leg took both copies, or if `sb` is not a
/// superblock of this set.
pub fn write_superblocks(
    set: &DeviceSet,
    sb: &Superblock,
    generation: u64,
) -> Result<ErrorBits, FsError> {
    if sb.fs_uuid != set.superblock.fs_uuid || sb.layout != set.superblock.layout {
        return Err(FsError::Invalid(
            "write_superblocks: the superblock is not this set's (uuid or layout differ)".into(),
        ));
    }
    let targets: Vec<(usize, u32)> =
        set.legs()
            .iter()
            .enumerate()
            .filter(|(p, l)| {
                set.mirror.leg_state(*p) == LegState::InService
                    && sb.members.get(l.member as usize).is_some_and(|m| {
                        !matches!(m.state, MemberState::Failed | MemberState::Absent)
                    })
            })
            .map(|(p, l)| (p, l.member))
            .collect();
    write_superblock_copies(&set.mirror, &targets, sb, generation)
}

/// Writes `sb` to `targets` (mirror leg, member index): primaries, flush,
/// backups, flush. See [`write_superblocks`].
pub(crate) fn write_superblock_copies(
    mirror: &MirrorSet,
    targets: &[(usize, u32)],
    sb: &Superblock,
    generation: u64,
) -> Result<ErrorBits, FsError> {
    if targets.is_empty() {
        return Err(EngineError::NoLegs.into());
    }
    let backup = sb.layout.backup_superblock;
    let mut failed = ErrorBits::NONE;
    for address in [0, backup] {
        for &(leg, member) in targets {
            if failed.has(leg) {
                continue;
            }
            let buf = encode_superblock_block(sb, member, address, generation)?;
            match mirror.write_regions_sync(&[Region::new(leg, address, 1)], &buf) {
                Ok(bits) => failed = failed.union(bits),
                Err(EngineError::Invalid(e)) => return Err(EngineError::Invalid(e).into()),
                Err(_) => failed.set(leg),
            }
        }
        match mirror.flush() {
            Ok(bits) => failed = failed.union(bits),
            Err(_) => {
                for &(leg, _) in targets {
                    failed.set(leg);
                }
            }
        }
    }
    if targets.iter().all(|&(leg, _)| failed.has(leg)) {
        return Err(DevSetError::WriteFailed {
            what: "the superblocks".into(),
            devices: targets
                .iter()
                .map(|&(leg, _)| mirror.leg_device(leg).name().to_string())
                .collect(),
        }
        .into());
    }
    Ok(failed)
}

// ---- probing -------------------------------------------------------------

/// Bytes read from the start of a device to look for signatures: enough
/// for btrfs's superblock at 64 KiB and swap at the end of a 64 KiB page.
const PROBE_LEN: u64 = 72 * 1024;

/// What an existing filesystem (of any kind) on `dev` looks like, if there
/// is one: keelfs (a sound primary or backup superblock), or one of a small
/// table of common signatures (ext2/3/4, xfs, btrfs, swap, LUKS, vfat,
/// NTFS, iso9660, squashfs, LVM2, GPT and MBR partition tables). `None`
/// when nothing is recognised, or the device cannot be read.
pub fn probe_existing_filesystem(dev: &dyn Device) -> Option<String> {
    if let Ok(found) = read_superblock_copy(dev) {
        let sb = &found.superblock;
        let label = if sb.label.is_empty() {
            String::new()
        } else {
            format!(", label \"{}\"", sb.label)
        };
        return Some(format!(
            "a keelfs filesystem (uuid {}{label}, leg {} of {})",
            format_uuid(&sb.fs_uuid),
            sb.device_index,
            sb.members.len()
        ));
    }
    probe_foreign(dev)
}

/// The signature table of [`probe_existing_filesystem`], keelfs excepted.
fn probe_foreign(dev: &dyn Device) -> Option<String> {
    let len = PROBE_LEN.min(dev.size() - dev.size() % SECTOR);
    if len == 0 {
        return None;
    }
    let head = read_bytes(dev, 0, len as usize).ok()?;
    let at = |offset: usize, magic: &[u8]| le::get_bytes(&head, offset, magic.len()) == Some(magic);
    let name = |s: &str| Some(s.to_string());
    if at(0, b"LUKS\xba\xbe") {
        return name("a LUKS encrypted volume");
    }
    if at(0, b"XFSB") {
        return name("an xfs filesystem");
    }
    if at(0, b"hsqs") {
        return name("a squashfs filesystem");
    }
    if at(65600, b"_BHRfS_M") {
        return name("a btrfs filesystem");
    }
    if at(1080, &[0x53, 0xef]) {
        // s_feature_compat (0x5c) and s_feature_incompat (0x60).
        let compat = le::get_u32(&head, 1024 + 0x5c).unwrap_or(0);
        let incompat = le::get_u32(&head, 1024 + 0x60).unwrap_or(0);
        // extents, 64bit, flex_bg: ext4; has_journal: ext3.
        return name(if incompat & (0x40 | 0x80 | 0x200) != 0 {
            "an ext4 filesystem"
        } else if compat & 0x4 != 0 {
            "an ext3 filesystem"
        } else {
            "an ext2 filesystem"
        });
    }
    if at(32769, b"CD001") {
        return name("an iso9660 filesystem");
    }
    if at(536, b"LVM2 001") || at(24, b"LVM2 001") {
        return name("an LVM2 physical volume");
    }
    for page in [4096usize, 8192, 16384, 65536] {
        if at(page - 10, b"SWAPSPACE2") || at(page - 10, b"SWAP-SPACE") {
            return name("swap space");
        }
    }
    let boot_signature = at(510, &[0x55, 0xaa]);
    if boot_signature && at(3, b"NTFS    ") {
        return name("an NTFS filesystem");
    }
    if boot_signature && (at(54, b"FAT12") || at(54, b"FAT16") || at(82, b"FAT32")) {
        return name("a vfat filesystem");
    }
    if at(512, b"EFI PART") || at(4096, b"EFI PART") {
        return name("a GPT partition table");
    }
    if boot_signature {
        // Four 16-byte entries at 446: status 0x00 or 0x80, some type set.
        let entries: Vec<&[u8]> = (0..4)
            .filter_map(|i| le::get_bytes(&head, 446 + 16 * i, 16))
            .collect();
        let statuses_ok = entries.iter().all(|e| e[0] == 0 || e[0] == 0x80);
        let some_partition = entries.iter().any(|e| e[4] != 0);
        if entries.len() == 4 && statuses_ok && some_partition {
            return name("an MBR partition table");
        }
    }
    None
}
