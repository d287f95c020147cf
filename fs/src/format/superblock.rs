//! The superblock (§4, kind 1; blocks 0 and N−1 of every leg).
//!
//! [`Superblock`] holds every field of §4 except the constants (magic,
//! version, root inode 1), which the codec writes and checks. The regions
//! it records are held as a [`Layout`]; the decoder recomputes the §3 layout
//! from (N, B, I, J) and refuses a superblock whose regions differ from it.
//! The per-device fields (this device's uuid and index) differ between legs;
//! [`Superblock::for_member`] gives the copy for one leg.

use super::layout::{check_block_size, Layout, JOURNAL_SUPERBLOCK_BLOCK};
use super::le::{Reader, Writer};
use super::{check_range, check_zero, FormatError, Problem, Structure, FORMAT_VERSION};
use super::{payload_len, META_HEADER_LEN};

/// `KEELFS\0\0`.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"KEELFS\0\0";
/// The root directory's inode number.
pub const ROOT_INODE: u64 = 1;
/// lost+found's inode number as mkfs makes it.
pub const LOST_FOUND_INODE: u64 = 2;
/// Most devices in a mirror set.
pub const MAX_MEMBERS: usize = 8;
/// Bytes of the label field.
pub const LABEL_LEN: usize = 64;
/// Bytes of the payload the superblock uses (block offsets 48..880).
pub const SUPERBLOCK_LEN: usize = at(880);

/// Compatible features this version knows (none).
pub const KNOWN_COMPAT_FEATURES: u32 = 0;
/// Incompatible features this version knows (none).
pub const KNOWN_INCOMPAT_FEATURES: u32 = 0;
/// Read-only-compatible feature 0x1: the orphan list is anchored in the
/// root inode's `next_orphan` (journalled, §5.1) and the superblock's
/// orphan head (offset 304) is 0 and ignored. Without it (an image made by
/// an earlier keelfs) the superblock holds the head; a read-write mount
/// moves it to the root and sets the feature. Read-only-compatible: a
/// keelfs that does not know it reads everything right, but would lose
/// the list if it wrote.
pub const RO_COMPAT_ORPHANS_IN_ROOT: u32 = 1 << 0;
/// Read-only-compatible features this version knows.
pub const KNOWN_RO_COMPAT_FEATURES: u32 = RO_COMPAT_ORPHANS_IN_ROOT;

/// Payload offset of a field §4 gives as an offset from the block start.
const fn at(block_offset: usize) -> usize {
    block_offset - META_HEADER_LEN
}

const MAGIC: usize = at(48);
const VERSION: usize = at(56);
const COMPAT: usize = at(60);
const INCOMPAT: usize = at(64);
const RO_COMPAT: usize = at(68);
const BLOCK_SIZE: usize = at(72);
const ZERO_76: usize = at(76);
const DEVICE_BLOCKS: usize = at(80);
const FS_UUID: usize = at(88);
const LABEL: usize = at(104);
const JOURNAL_SB: usize = at(168);
const JOURNAL_START: usize = at(176);
const JOURNAL_BLOCKS: usize = at(184);
const BLOCK_BITMAP_START: usize = at(192);
const BLOCK_BITMAP_BLOCKS: usize = at(200);
const INODE_BITMAP_START: usize = at(208);
const INODE_BITMAP_BLOCKS: usize = at(216);
const INODE_TABLE_START: usize = at(224);
const INODE_TABLE_BLOCKS: usize = at(232);
const TAG_TABLE_START: usize = at(240);
const TAG_TABLE_BLOCKS: usize = at(248);
const DATA_START: usize = at(256);
const INODE_COUNT: usize = at(264);
const ROOT: usize = at(272);
const LOST_FOUND: usize = at(280);
const FREE_BLOCKS: usize = at(288);
const FREE_INODES: usize = at(296);
const ORPHAN_HEAD: usize = at(304);
const CREATED: usize = at(312);
const LAST_MOUNTED: usize = at(320);
const LAST_WRITTEN: usize = at(328);
const STATE: usize = at(336);
const MOUNT_COUNT: usize = at(340);
const DEVICE_UUID: usize = at(344);
const DEVICE_INDEX: usize = at(360);
const MEMBER_COUNT: usize = at(364);
const MEMBER_TABLE: usize = at(368);
const COUNTER_TABLE: usize = at(624);
const MEMBER_ENTRY_LEN: usize = 32;
/// Member flags (the word at entry offset 20): the member failed reads and
/// is to be checked (a scrub that finds it good clears it).
pub const MEMBER_NEEDS_CHECK: u32 = 1;
/// Member flag bits this version knows; others are refused.
const KNOWN_MEMBER_FLAGS: u32 = MEMBER_NEEDS_CHECK;
const COUNTER_ENTRY_LEN: usize = 32;

const STATE_CLEAN: u32 = 1 << 0;
const STATE_ERRORS: u32 = 1 << 1;

const S: Structure = Structure::Superblock;

/// The state word (offset 336).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SuperblockState {
    /// Bit 0: the filesystem was unmounted cleanly.
    pub clean_unmount: bool,
    /// Bit 1: errors were found and not yet repaired.
    pub errors: bool,
}

impl SuperblockState {
    /// The on-disk word.
    pub fn to_bits(self) -> u32 {
        (if self.clean_unmount { STATE_CLEAN } else { 0 })
            | (if self.errors { STATE_ERRORS } else { 0 })
    }

    /// From the on-disk word; unknown bits are refused.
    pub fn from_bits(bits: u32) -> Result<SuperblockState, FormatError> {
        let unknown = bits & !(STATE_CLEAN | STATE_ERRORS);
        if unknown != 0 {
            return Err(FormatError::invalid(
                S,
                "state",
                Problem::UnknownBits {
                    bits: unknown.into(),
                },
            ));
        }
        Ok(SuperblockState {
            clean_unmount: bits & STATE_CLEAN != 0,
            errors: bits & STATE_ERRORS != 0,
        })
    }
}

/// A member's state in the member table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum MemberState {
    /// No device at this index.
    #[default]
    Absent = 0,
    /// In use and up to date.
    InUse = 1,
    /// Failed: not read, not written.
    Failed = 2,
    /// Being resynced from the others.
    Resyncing = 3,
}

impl MemberState {
    /// The on-disk number.
    pub fn to_u32(self) -> u32 {
        self as u32
    }

    /// From the on-disk number.
    pub fn from_u32(value: u32) -> Result<MemberState, FormatError> {
        Ok(match value {
            0 => MemberState::Absent,
            1 => MemberState::InUse,
            2 => MemberState::Failed,
            3 => MemberState::Resyncing,
            _ => {
                return Err(FormatError::invalid(
                    S,
                    "member_state",
                    Problem::UnknownValue {
                        value: value.into(),
                    },
                ))
            }
        })
    }
}

/// Persistent per-member error counters (offset 624, 32 bytes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemberCounters {
    pub read_errors: u64,
    pub write_errors: u64,
    pub checksum_errors: u64,
    pub blocks_healed: u64,
}

/// One member of the mirror set: its member-table entry (offset 368) and
/// its counters (offset 624), which share an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Member {
    /// The device's uuid.
    pub uuid: [u8; 16],
    pub state: MemberState,
    /// It failed reads: reads avoid it until a scrub finds it good (member
    /// flag [`MEMBER_NEEDS_CHECK`]).
    pub needs_check: bool,
    /// Last transaction this member is known to hold.
    pub last_transaction: u64,
    pub counters: MemberCounters,
}

/// The superblock, every field of §4 but the constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// N, B, I, J and every region (offsets 72, 80, 168–264).
    pub layout: Layout,
    pub compat_features: u32,
    /// Unknown bits refuse the filesystem.
    pub incompat_features: u32,
    /// Unknown bits force read-only: see [`Superblock::read_only_required`].
    pub ro_compat_features: u32,
    pub fs_uuid: [u8; 16],
    /// Up to 64 bytes of UTF-8, no NUL.
    pub label: String,
    /// 0 when there is none (it was removed), else 2..=I.
    pub lost_found_inode: u64,
    /// Summary; the block bitmap is authoritative.
    pub free_blocks: u64,
    /// Summary; the inode bitmap is authoritative.
    pub free_inodes: u64,
    /// First inode of the orphan list, 0 = empty — only without
    /// [`RO_COMPAT_ORPHANS_IN_ROOT`] (an image of an earlier keelfs); with
    /// it, always written 0 and ignored (the root inode anchors the list).
    pub orphan_head: u64,
    /// Unix seconds.
    pub created: u64,
    pub last_mounted: u64,
    pub last_written: u64,
    pub state: SuperblockState,
    pub mount_count: u32,
    /// The uuid of the device this copy is on.
    pub device_uuid: [u8; 16],
    /// Its index in [`Superblock::members`].
    pub device_index: u32,
    /// The mirror set, 1..=8 members; the member count M is its length.
    pub members: Vec<Member>,
    /// Payload bytes past the fields above. Zero unless a compatible
    /// feature (possibly one this version does not know) uses them; kept
    /// as found so rewriting the superblock never destroys a newer
    /// version's compatible data.
    pub compat_tail: Vec<u8>,
}

fn in_superblock(e: FormatError) -> FormatError {
    match e {
        FormatError::Invalid { field, problem, .. } => FormatError::invalid(S, field, problem),
        FormatError::Truncated { need, have, .. } => FormatError::Truncated {
            structure: S,
            need,
            have,
        },
    }
}

impl Superblock {
    /// A fresh superblock for a set of devices (mkfs): every member in use,
    /// this copy for member 0, every block of the data area and every inode
    /// free (mkfs subtracts what it allocates), lost+found at inode 2.
    pub fn new(layout: Layout, fs_uuid: [u8; 16], member_uuids: &[[u8; 16]]) -> Superblock {
        let members: Vec<Member> = member_uuids
            .iter()
            .map(|&uuid| Member {
                uuid,
                state: MemberState::InUse,
                ..Member::default()
            })
            .collect();
        Superblock {
            layout,
            compat_features: 0,
            incompat_features: 0,
            ro_compat_features: RO_COMPAT_ORPHANS_IN_ROOT,
            fs_uuid,
            label: String::new(),
            lost_found_inode: LOST_FOUND_INODE,
            free_blocks: layout.data.blocks,
            free_inodes: layout.inode_count,
            orphan_head: 0,
            created: 0,
            last_mounted: 0,
            last_written: 0,
            state: SuperblockState::default(),
            mount_count: 0,
            device_uuid: member_uuids.first().copied().unwrap_or_default(),
            device_index: 0,
            members,
            compat_tail: Vec::new(),
        }
    }

    /// This superblock as written on member `index`'s device.
    pub fn for_member(&self, index: u32) -> Result<Superblock, FormatError> {
        let member = self.members.get(index as usize).ok_or_else(|| {
            FormatError::invalid(
                S,
                "device_index",
                Problem::OutOfRange {
                    value: index.into(),
                    min: 0,
                    max: self.members.len().saturating_sub(1) as u64,
                },
            )
        })?;
        Ok(Superblock {
            device_index: index,
            device_uuid: member.uuid,
            ..self.clone()
        })
    }

    /// Whether the orphan list is anchored in the root inode
    /// ([`RO_COMPAT_ORPHANS_IN_ROOT`]) rather than in this superblock.
    pub fn orphans_in_root(&self) -> bool {
        self.ro_compat_features & RO_COMPAT_ORPHANS_IN_ROOT != 0
    }

    /// Whether unknown read-only-compatible features force a read-only
    /// mount.
    pub fn read_only_required(&self) -> bool {
        self.ro_compat_features & !KNOWN_RO_COMPAT_FEATURES != 0
    }

    /// The block size recorded in the first bytes of block 0 (header
    /// included), so a reader knows how much to read before decoding.
    /// Needs at least 80 bytes; checks magic and version.
    pub fn peek_block_size(block_start: &[u8]) -> Result<u32, FormatError> {
        let r = Reader::new(block_start, S);
        let payload = r.bytes(META_HEADER_LEN, at(80))?;
        let r = Reader::new(payload, S);
        check_magic_and_version(&r)?;
        let block_size = r.u32(BLOCK_SIZE)?;
        check_block_size(block_size).map_err(in_superblock)?;
        Ok(block_size)
    }

    /// Checks everything a decoder would, on the value.
    pub fn validate(&self) -> Result<(), FormatError> {
        let l = &self.layout;
        let recomputed = Layout::new(
            l.device_blocks,
            l.block_size,
            l.inode_count,
            l.journal.blocks,
        )
        .map_err(in_superblock)?;
        if recomputed != *l {
            return Err(FormatError::invalid(
                S,
                "layout",
                Problem::Inconsistent("regions differ from the §3 layout of (N, B, I, J)"),
            ));
        }
        check_features(
            self.compat_features,
            self.incompat_features,
            self.ro_compat_features,
        )?;
        if self.lost_found_inode != 0 {
            check_range(
                S,
                "lost_found_inode",
                self.lost_found_inode,
                2,
                l.inode_count,
            )?;
        }
        if self.orphan_head != 0 {
            check_range(S, "orphan_head", self.orphan_head, 1, l.inode_count)?;
        }
        if self.label.len() > LABEL_LEN {
            return Err(FormatError::invalid(
                S,
                "label",
                Problem::TooLong {
                    len: self.label.len() as u64,
                    max: LABEL_LEN as u64,
                },
            ));
        }
        if self.label.contains('\0') {
            return Err(FormatError::invalid(S, "label", Problem::InvalidName));
        }
        check_range(
            S,
            "member_count",
            self.members.len() as u64,
            1,
            MAX_MEMBERS as u64,
        )?;
        check_range(
            S,
            "device_index",
            self.device_index.into(),
            0,
            self.members.len() as u64 - 1,
        )?;
        if self.members[self.device_index as usize].uuid != self.device_uuid {
            return Err(FormatError::invalid(
                S,
                "device_uuid",
                Problem::Inconsistent("differs from the member table entry at device_index"),
            ));
        }
        Ok(())
    }

    /// Writes the superblock into a payload of exactly B − 48 bytes (every
    /// byte: reserved ones zero). Refuses a value [`Superblock::decode`]
    /// would refuse; on error the payload's content is unspecified.
    pub fn encode(&self, payload: &mut [u8]) -> Result<(), FormatError> {
        self.validate()?;
        check_payload_len(payload.len(), self.layout.block_size)?;
        let l = &self.layout;
        let mut w = Writer::new(payload, S);
        w.zero_all();
        w.bytes(MAGIC, &SUPERBLOCK_MAGIC)?;
        w.u32(VERSION, FORMAT_VERSION)?;
        w.u32(COMPAT, self.compat_features)?;
        w.u32(INCOMPAT, self.incompat_features)?;
        w.u32(RO_COMPAT, self.ro_compat_features)?;
        w.u32(BLOCK_SIZE, l.block_size)?;
        w.u64(DEVICE_BLOCKS, l.device_blocks)?;
        w.bytes(FS_UUID, &self.fs_uuid)?;
        w.bytes(LABEL, self.label.as_bytes())?;
        w.u64(JOURNAL_SB, l.journal_superblock)?;
        w.u64(JOURNAL_START, l.journal.start)?;
        w.u64(JOURNAL_BLOCKS, l.journal.blocks)?;
        w.u64(BLOCK_BITMAP_START, l.block_bitmap.start)?;
        w.u64(BLOCK_BITMAP_BLOCKS, l.block_bitmap.blocks)?;
        w.u64(INODE_BITMAP_START, l.inode_bitmap.start)?;
        w.u64(INODE_BITMAP_BLOCKS, l.inode_bitmap.blocks)?;
        w.u64(INODE_TABLE_START, l.inode_table.start)?;
        w.u64(INODE_TABLE_BLOCKS, l.inode_table.blocks)?;
        w.u64(TAG_TABLE_START, l.tag_table.start)?;
        w.u64(TAG_TABLE_BLOCKS, l.tag_table.blocks)?;
        w.u64(DATA_START, l.data.start)?;
        w.u64(INODE_COUNT, l.inode_count)?;
        w.u64(ROOT, ROOT_INODE)?;
        w.u64(LOST_FOUND, self.lost_found_inode)?;
        w.u64(FREE_BLOCKS, self.free_blocks)?;
        w.u64(FREE_INODES, self.free_inodes)?;
        w.u64(ORPHAN_HEAD, self.orphan_head)?;
        w.u64(CREATED, self.created)?;
        w.u64(LAST_MOUNTED, self.last_mounted)?;
        w.u64(LAST_WRITTEN, self.last_written)?;
        w.u32(STATE, self.state.to_bits())?;
        w.u32(MOUNT_COUNT, self.mount_count)?;
        w.bytes(DEVICE_UUID, &self.device_uuid)?;
        w.u32(DEVICE_INDEX, self.device_index)?;
        w.u32(MEMBER_COUNT, self.members.len() as u32)?;
        for (i, m) in self.members.iter().enumerate() {
            let e = MEMBER_TABLE + i * MEMBER_ENTRY_LEN;
            w.bytes(e, &m.uuid)?;
            w.u32(e + 16, m.state.to_u32())?;
            if m.needs_check {
                w.u32(e + 20, MEMBER_NEEDS_CHECK)?;
            }
            w.u64(e + 24, m.last_transaction)?;
            let c = COUNTER_TABLE + i * COUNTER_ENTRY_LEN;
            w.u64(c, m.counters.read_errors)?;
            w.u64(c + 8, m.counters.write_errors)?;
            w.u64(c + 16, m.counters.checksum_errors)?;
            w.u64(c + 24, m.counters.blocks_healed)?;
        }
        if !self.compat_tail.is_empty() {
            if self.compat_features == 0 {
                return Err(FormatError::invalid(S, "reserved_tail", Problem::NotZero));
            }
            w.bytes(SUPERBLOCK_LEN, &self.compat_tail)?;
        }
        Ok(())
    }

    /// Reads and checks a superblock from a payload of exactly B − 48 bytes.
    pub fn decode(payload: &[u8]) -> Result<Superblock, FormatError> {
        let r = Reader::new(payload, S);
        r.require(SUPERBLOCK_LEN)?;
        check_magic_and_version(&r)?;
        let compat_features = r.u32(COMPAT)?;
        let incompat_features = r.u32(INCOMPAT)?;
        let ro_compat_features = r.u32(RO_COMPAT)?;
        check_features(compat_features, incompat_features, ro_compat_features)?;
        let block_size = r.u32(BLOCK_SIZE)?;
        check_block_size(block_size).map_err(in_superblock)?;
        check_payload_len(payload.len(), block_size)?;
        check_zero(S, "reserved_76", r.bytes(ZERO_76, 4)?)?;

        let layout = Layout::new(
            r.u64(DEVICE_BLOCKS)?,
            block_size,
            r.u64(INODE_COUNT)?,
            r.u64(JOURNAL_BLOCKS)?,
        )
        .map_err(in_superblock)?;
        let recorded = [
            ("journal_superblock", JOURNAL_SB, JOURNAL_SUPERBLOCK_BLOCK),
            ("journal_start", JOURNAL_START, layout.journal.start),
            (
                "block_bitmap_start",
                BLOCK_BITMAP_START,
                layout.block_bitmap.start,
            ),
            (
                "block_bitmap_blocks",
                BLOCK_BITMAP_BLOCKS,
                layout.block_bitmap.blocks,
            ),
            (
                "inode_bitmap_start",
                INODE_BITMAP_START,
                layout.inode_bitmap.start,
            ),
            (
                "inode_bitmap_blocks",
                INODE_BITMAP_BLOCKS,
                layout.inode_bitmap.blocks,
            ),
            (
                "inode_table_start",
                INODE_TABLE_START,
                layout.inode_table.start,
            ),
            (
                "inode_table_blocks",
                INODE_TABLE_BLOCKS,
                layout.inode_table.blocks,
            ),
            ("tag_table_start", TAG_TABLE_START, layout.tag_table.start),
            (
                "tag_table_blocks",
                TAG_TABLE_BLOCKS,
                layout.tag_table.blocks,
            ),
            ("data_start", DATA_START, layout.data.start),
            ("root_inode", ROOT, ROOT_INODE),
        ];
        for (field, offset, expected) in recorded {
            let found = r.u64(offset)?;
            if found != expected {
                return Err(FormatError::invalid(
                    S,
                    field,
                    Problem::Mismatch { expected, found },
                ));
            }
        }

        let label = decode_label(r.bytes(LABEL, LABEL_LEN)?)?;
        let state = SuperblockState::from_bits(r.u32(STATE)?)?;
        let member_count = r.u32(MEMBER_COUNT)?;
        check_range(
            S,
            "member_count",
            member_count.into(),
            1,
            MAX_MEMBERS as u64,
        )?;
        let mut members = Vec::with_capacity(member_count as usize);
        for i in 0..MAX_MEMBERS {
            let e = MEMBER_TABLE + i * MEMBER_ENTRY_LEN;
            let c = COUNTER_TABLE + i * COUNTER_ENTRY_LEN;
            if i >= member_count as usize {
                check_zero(S, "member_table", r.bytes(e, MEMBER_ENTRY_LEN)?)?;
                check_zero(S, "member_counters", r.bytes(c, COUNTER_ENTRY_LEN)?)?;
                continue;
            }
            let flags = r.u32(e + 20)?;
            if flags & !KNOWN_MEMBER_FLAGS != 0 {
                return Err(FormatError::invalid(
                    S,
                    "member_flags",
                    Problem::UnknownBits {
                        bits: u64::from(flags & !KNOWN_MEMBER_FLAGS),
                    },
                ));
            }
            members.push(Member {
                uuid: r.array(e)?,
                state: MemberState::from_u32(r.u32(e + 16)?)?,
                needs_check: flags & MEMBER_NEEDS_CHECK != 0,
                last_transaction: r.u64(e + 24)?,
                counters: MemberCounters {
                    read_errors: r.u64(c)?,
                    write_errors: r.u64(c + 8)?,
                    checksum_errors: r.u64(c + 16)?,
                    blocks_healed: r.u64(c + 24)?,
                },
            });
        }
        // Fields a future compatible feature may use are only required to be
        // zero while no compatible feature is set.
        if compat_features == 0 {
            check_zero(S, "reserved_tail", &payload[SUPERBLOCK_LEN..])?;
        }

        let sb = Superblock {
            layout,
            compat_features,
            incompat_features,
            ro_compat_features,
            fs_uuid: r.array(FS_UUID)?,
            label,
            lost_found_inode: r.u64(LOST_FOUND)?,
            free_blocks: r.u64(FREE_BLOCKS)?,
            free_inodes: r.u64(FREE_INODES)?,
            orphan_head: r.u64(ORPHAN_HEAD)?,
            created: r.u64(CREATED)?,
            last_mounted: r.u64(LAST_MOUNTED)?,
            last_written: r.u64(LAST_WRITTEN)?,
            state,
            mount_count: r.u32(MOUNT_COUNT)?,
            device_uuid: r.array(DEVICE_UUID)?,
            device_index: r.u32(DEVICE_INDEX)?,
            members,
            compat_tail: if compat_features == 0 {
                Vec::new()
            } else {
                let tail = &payload[SUPERBLOCK_LEN..];
                let used = tail.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                tail[..used].to_vec()
            },
        };
        sb.validate()?;
        Ok(sb)
    }
}

fn check_magic_and_version(r: &Reader<'_>) -> Result<(), FormatError> {
    let magic: [u8; 8] = r.array(MAGIC)?;
    if magic != SUPERBLOCK_MAGIC {
        return Err(FormatError::invalid(
            S,
            "magic",
            Problem::BadMagic {
                expected: u64::from_le_bytes(SUPERBLOCK_MAGIC),
                found: u64::from_le_bytes(magic),
            },
        ));
    }
    let version = r.u32(VERSION)?;
    if version != FORMAT_VERSION {
        return Err(FormatError::invalid(
            S,
            "version",
            Problem::UnsupportedVersion {
                found: version.into(),
            },
        ));
    }
    Ok(())
}

fn check_features(_compat: u32, incompat: u32, _ro_compat: u32) -> Result<(), FormatError> {
    // Unknown compatible features are ignored; unknown read-only-compatible
    // ones are reported by `read_only_required`.
    let unknown = incompat & !KNOWN_INCOMPAT_FEATURES;
    if unknown != 0 {
        return Err(FormatError::invalid(
            S,
            "incompat_features",
            Problem::UnknownBits {
                bits: unknown.into(),
            },
        ));
    }
    Ok(())
}

fn check_payload_len(len: usize, block_size: u32) -> Result<(), FormatError> {
    let expected = payload_len(block_size).unwrap_or(0);
    if len != expected {
        return Err(FormatError::invalid(
            S,
            "block_size",
            Problem::Inconsistent("payload length is not block size − 48"),
        ));
    }
    Ok(())
}

fn decode_label(raw: &[u8]) -> Result<String, FormatError> {
    let len = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    check_zero(S, "label", &raw[len..])?;
    let text = std::str::from_utf8(&raw[..len])
        .map_err(|_| FormatError::invalid(S, "label", Problem::InvalidUtf8))?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::layout::Geometry;
    use proptest::prelude::*;

    fn sample() -> Superblock {
        // 64 MiB at 4 KiB: N = 16384, J = 1024, I = 4096 exactly.
        let layout = Layout::new(16384, 4096, 4096, 1024).unwrap();
        let mut sb = Superblock::new(layout, [0x11; 16], &[[0xa1; 16], [0xb2; 16]]);
        sb.label = "keel".to_string();
        sb.free_blocks = 0x0102;
        sb.free_inodes = 0x0304;
        sb.orphan_head = 7;
        sb.created = 0x6000_0000;
        sb.last_mounted = 0x6000_0001;
        sb.last_written = 0x6000_0002;
        sb.state = SuperblockState {
            clean_unmount: true,
            errors: false,
        };
        sb.mount_count = 5;
        sb.members[1].state = MemberState::Resyncing;
        sb.members[1].last_transaction = 0x99;
        sb.members[0].counters.checksum_errors = 3;
        sb.members[1].counters.blocks_healed = 4;
        sb.for_member(1).unwrap()
    }

    fn encoded(sb: &Superblock) -> Vec<u8> {
        let mut payload = vec![0xee; sb.layout.block_size as usize - 48];
        sb.encode(&mut payload).unwrap();
        payload
    }

    /// Writes `bytes` at a §4 offset (from the block start).
    fn put(payload: &mut [u8], block_offset: usize, bytes: &[u8]) {
        payload[block_offset - 48..block_offset - 48 + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn golden_bytes() {
        let l = Layout::new(16384, 4096, 4096, 1024).unwrap();
        // 16384/32384 → 1 block bitmap; 4096 inodes → 1 inode bitmap;
        // 4096/15 → 274 table blocks; (16384 − 1302)/507 → 30 tag blocks.
        assert_eq!(l.inode_table.blocks, 274);
        assert_eq!(l.tag_table.blocks, 30);
        let mut want = vec![0u8; 4048];
        put(&mut want, 48, b"KEELFS\0\0");
        put(&mut want, 56, &[1, 0, 0, 0]);
        put(&mut want, 68, &[1, 0, 0, 0]); // RO_COMPAT_ORPHANS_IN_ROOT
        put(&mut want, 72, &[0, 0x10, 0, 0]);
        put(&mut want, 80, &[0, 0x40, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 88, &[0x11; 16]);
        put(&mut want, 104, b"keel");
        put(&mut want, 168, &[1, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 176, &[2, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 184, &[0, 4, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 192, &[0x02, 0x04, 0, 0, 0, 0, 0, 0]); // 1026
        put(&mut want, 200, &[1, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 208, &[0x03, 0x04, 0, 0, 0, 0, 0, 0]); // 1027
        put(&mut want, 216, &[1, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 224, &[0x04, 0x04, 0, 0, 0, 0, 0, 0]); // 1028
        put(&mut want, 232, &[0x12, 0x01, 0, 0, 0, 0, 0, 0]); // 274
        put(&mut want, 240, &[0x16, 0x05, 0, 0, 0, 0, 0, 0]); // 1302
        put(&mut want, 248, &[30, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 256, &[0x34, 0x05, 0, 0, 0, 0, 0, 0]); // 1332
        put(&mut want, 264, &[0, 0x10, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 272, &[1, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 280, &[2, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 288, &[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 296, &[0x04, 0x03, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 304, &[7, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 312, &[0, 0, 0, 0x60, 0, 0, 0, 0]);
        put(&mut want, 320, &[1, 0, 0, 0x60, 0, 0, 0, 0]);
        put(&mut want, 328, &[2, 0, 0, 0x60, 0, 0, 0, 0]);
        put(&mut want, 336, &[1, 0, 0, 0]);
        put(&mut want, 340, &[5, 0, 0, 0]);
        put(&mut want, 344, &[0xb2; 16]);
        put(&mut want, 360, &[1, 0, 0, 0]);
        put(&mut want, 364, &[2, 0, 0, 0]);
        put(&mut want, 368, &[0xa1; 16]);
        put(&mut want, 384, &[1, 0, 0, 0]);
        put(&mut want, 400, &[0xb2; 16]);
        put(&mut want, 416, &[3, 0, 0, 0]);
        put(&mut want, 424, &[0x99, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 624 + 16, &[3, 0, 0, 0, 0, 0, 0, 0]);
        put(&mut want, 624 + 32 + 24, &[4, 0, 0, 0, 0, 0, 0, 0]);
        let got = encoded(&sample());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "byte at block offset {}", i + 48);
        }
        assert_eq!(Superblock::decode(&want).unwrap(), sample());
    }

    #[test]
    fn peek_block_size_reads_block_start() {
        let sb = sample();
        let mut block = vec![0u8; 4096];
        sb.encode(&mut block[48..]).unwrap();
        assert_eq!(Superblock::peek_block_size(&block[..1024]), Ok(4096));
        assert!(Superblock::peek_block_size(&block[..79]).is_err());
        assert_eq!(Superblock::peek_block_size(&block[..80]), Ok(4096));
        block[48] = b'X';
        assert!(Superblock::peek_block_size(&block[..1024]).is_err());
    }

    fn corrupt(offset_in_block: usize, bytes: &[u8]) -> FormatError {
        let mut p = encoded(&sample());
        put(&mut p, offset_in_block, bytes);
        Superblock::decode(&p).unwrap_err()
    }

    #[test]
    fn bad_fields_are_refused_by_name() {
        let cases: &[(usize, &[u8], &str)] = &[
            (48, b"KEELFS\0\x01", "magic"),
            (56, &[2, 0, 0, 0], "version"),
            (64, &[1, 0, 0, 0], "incompat_features"),
            (72, &[0, 0x30, 0, 0], "block_size"),
            (72, &[0, 0x08, 0, 0], "block_size"), // valid size, wrong payload length
            (76, &[1], "reserved_76"),
            (80, &[0, 0x05, 0, 0, 0, 0, 0, 0], "device_blocks"),
            (104, &[0xff], "label"),
            (110, b"x", "label"), // text after the NUL padding
            (168, &[2], "journal_superblock"),
            (192, &[0x03, 0x04], "block_bitmap_start"),
            (232, &[0x13, 0x01], "inode_table_blocks"),
            (256, &[0x35, 0x05], "data_start"),
            (264, &[0, 0, 0, 0, 1], "inode_count"),
            (272, &[2], "root_inode"),
            (280, &[1], "lost_found_inode"),
            (304, &[0, 0x20], "orphan_head"),
            (336, &[4], "state"),
            (360, &[2], "device_index"),
            (344, &[0xa1], "device_uuid"),
            (364, &[0], "member_count"),
            (364, &[9], "member_count"),
            (384, &[4], "member_state"),
            (388, &[2], "member_flags"),
            (432, &[1], "member_table"),
            (624 + 64, &[1], "member_counters"),
            (880, &[1], "reserved_tail"),
        ];
        for &(offset, bytes, field) in cases {
            let e = corrupt(offset, bytes);
            assert_eq!(e.structure(), Structure::Superblock, "{e}");
            assert_eq!(e.field(), Some(field), "offset {offset}: {e}");
        }
    }

    #[test]
    fn unknown_ro_compat_is_reported_and_compat_ignored() {
        let mut p = encoded(&sample());
        put(&mut p, 68, &[0, 0, 0, 0x80]);
        put(&mut p, 60, &[1]);
        put(&mut p, 900, &[1]); // tail tolerated once a compat feature is set
        let sb = Superblock::decode(&p).unwrap();
        assert!(sb.read_only_required());
        assert!(!sample().read_only_required());
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        let mut sb = sample();
        sb.label = "x".repeat(65);
        assert!(sb.encode(&mut [0u8; 4048]).is_err());
        let mut sb = sample();
        sb.members.clear();
        assert!(sb.encode(&mut [0u8; 4048]).is_err());
        let mut sb = sample();
        sb.layout.data.start += 1;
        assert!(sb.encode(&mut [0u8; 4048]).is_err());
        assert!(sample().encode(&mut [0u8; 4047]).is_err());
        assert!(sample().for_member(2).is_err());
    }

    fn layout_strategy() -> impl Strategy<Value = Layout> {
        (10u32..=16, 2000u64..1 << 30, 2u64..200_000, 64u64..4000)
            .prop_filter_map("fits", |(shift, n, inodes, journal)| {
                Layout::new(n, 1 << shift, inodes, journal).ok()
            })
    }

    fn member_strategy() -> impl Strategy<Value = Member> {
        (
            any::<[u8; 16]>(),
            0u32..4,
            any::<bool>(),
            any::<u64>(),
            any::<[u64; 4]>(),
        )
            .prop_map(|(uuid, state, needs_check, last_transaction, c)| Member {
                uuid,
                state: MemberState::from_u32(state).unwrap(),
                needs_check,
                last_transaction,
                counters: MemberCounters {
                    read_errors: c[0],
                    write_errors: c[1],
                    checksum_errors: c[2],
                    blocks_healed: c[3],
                },
            })
    }

    fn superblock_strategy() -> impl Strategy<Value = Superblock> {
        (
            layout_strategy(),
            prop::collection::vec(member_strategy(), 1..=8),
            any::<prop::sample::Index>(),
            "[a-zA-Z0-9 _éß-]{0,21}",
            any::<([u8; 16], u32, u64, u64, [u64; 3], u32, bool, bool)>(),
            (any::<u64>(), any::<u64>()),
        )
            .prop_map(|(layout, members, index, label, misc, (lf, orphan))| {
                let (fs_uuid, ro_compat, free_blocks, free_inodes, times, mounts, clean, errors) =
                    misc;
                let index = index.index(members.len());
                let i = layout.inode_count;
                Superblock {
                    layout,
                    compat_features: 0,
                    incompat_features: 0,
                    ro_compat_features: ro_compat,
                    fs_uuid,
                    label,
                    lost_found_inode: if lf % 5 == 0 { 0 } else { 2 + lf % (i - 1) },
                    free_blocks,
                    free_inodes,
                    orphan_head: if orphan % 3 == 0 { 0 } else { 1 + orphan % i },
                    created: times[0],
                    last_mounted: times[1],
                    last_written: times[2],
                    state: SuperblockState {
                        clean_unmount: clean,
                        errors,
                    },
                    mount_count: mounts,
                    device_uuid: members[index].uuid,
                    device_index: index as u32,
                    members,
                    compat_tail: Vec::new(),
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn round_trip(sb in superblock_strategy()) {
            let payload = encoded(&sb);
            prop_assert_eq!(Superblock::decode(&payload).unwrap(), sb);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
            let _ = Superblock::decode(&bytes);
            let _ = Superblock::peek_block_size(&bytes);
        }

        #[test]
        fn unknown_compat_data_survives_a_rewrite(tail in prop::collection::vec(any::<u8>(), 1..96)) {
            let layout = Layout::compute(&Geometry::new(8192, 1024)).unwrap();
            let mut sb = Superblock::new(layout, [1; 16], &[[2; 16]]);
            let mut p = encoded(&sb);
            p[COMPAT] = 0x80; // a compatible feature this version does not know
            p[SUPERBLOCK_LEN..SUPERBLOCK_LEN + tail.len()].copy_from_slice(&tail);
            sb = Superblock::decode(&p).unwrap();
            prop_assert_eq!(encoded(&sb), p);
        }

        #[test]
        fn flipped_bytes_never_panic(flips in prop::collection::vec((0usize..976, any::<u8>()), 1..8)) {
            let layout = Layout::compute(&Geometry::new(8192, 1024)).unwrap();
            let sb = Superblock::new(layout, [1; 16], &[[2; 16]]);
            let mut p = encoded(&sb);
            for (at, value) in flips {
                p[at] = value;
            }
            if let Ok(decoded) = Superblock::decode(&p) {
                prop_assert_eq!(encoded(&decoded), p);
            }
        }
    }
}
