//! Journal records (§10): the journal superblock (kind 2), descriptor
//! blocks (kind 3) and commit blocks (kind 4). Only the records; writing,
//! checkpointing and recovery are the journal's.
//!
//! A transaction at ring position p is: one or more descriptor blocks, then
//! one image per `Image` entry of those descriptors (in entry order), then
//! a commit block. The header generation of descriptors and commit is the
//! transaction's sequence (set with [`header`](super::header)).

use super::layout::{Layout, JOURNAL_MAX_BLOCKS, JOURNAL_MIN_BLOCKS, JOURNAL_START};
use super::le::{Reader, Writer};
use super::tag_table::{decode_tag, encode_tag};
use super::{check_range, check_zero, FormatError, Problem, Structure, Tag};

/// Bytes of the journal superblock record.
pub const JOURNAL_SUPERBLOCK_LEN: usize = 32;
/// Bytes of the descriptor header.
pub const DESCRIPTOR_HEADER_LEN: usize = 8;
/// Bytes of one descriptor entry.
pub const DESCRIPTOR_ENTRY_LEN: usize = 28;
/// Bytes of the commit record.
pub const COMMIT_LEN: usize = 24;

/// Descriptor header flag: another descriptor block follows this one.
pub const DESCRIPTOR_MORE: u32 = 1;
/// Entry flag: the home block is revoked (no image).
pub const ENTRY_REVOKE: u32 = 1;
/// Entry flag: an in-place data overwrite intent (no image).
pub const ENTRY_DATA_INTENT: u32 = 2;

/// The journal superblock (block 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalSuperblock {
    /// First block of the ring (2).
    pub ring_start: u64,
    /// J.
    pub ring_blocks: u64,
    /// Sequence of the oldest transaction still needed.
    pub oldest_sequence: u64,
    /// Its position in the ring, 0..J, relative to `ring_start`.
    pub oldest_position: u64,
}

const JSB: Structure = Structure::JournalSuperblock;
const DESC: Structure = Structure::JournalDescriptor;
const COMMIT: Structure = Structure::JournalCommit;

impl JournalSuperblock {
    /// An empty journal for `layout`: next transaction `first_sequence` at
    /// position 0.
    pub fn new(layout: &Layout, first_sequence: u64) -> JournalSuperblock {
        JournalSuperblock {
            ring_start: layout.journal.start,
            ring_blocks: layout.journal.blocks,
            oldest_sequence: first_sequence,
            oldest_position: 0,
        }
    }

    /// Checks the record, and that it matches `layout` if given.
    pub fn validate(&self, layout: Option<&Layout>) -> Result<(), FormatError> {
        check_range(
            JSB,
            "ring_start",
            self.ring_start,
            JOURNAL_START,
            JOURNAL_START,
        )?;
        check_range(
            JSB,
            "ring_blocks",
            self.ring_blocks,
            JOURNAL_MIN_BLOCKS,
            JOURNAL_MAX_BLOCKS,
        )?;
        check_range(
            JSB,
            "oldest_position",
            self.oldest_position,
            0,
            self.ring_blocks - 1,
        )?;
        if let Some(layout) = layout {
            if self.ring_blocks != layout.journal.blocks {
                return Err(FormatError::invalid(
                    JSB,
                    "ring_blocks",
                    Problem::Mismatch {
                        expected: layout.journal.blocks,
                        found: self.ring_blocks,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Writes the record into a whole payload (rest zero).
    pub fn encode(&self, payload: &mut [u8]) -> Result<(), FormatError> {
        self.validate(None)?;
        let mut w = Writer::new(payload, JSB);
        w.require(JOURNAL_SUPERBLOCK_LEN)?;
        w.zero_all();
        w.u64(0, self.ring_start)?;
        w.u64(8, self.ring_blocks)?;
        w.u64(16, self.oldest_sequence)?;
        w.u64(24, self.oldest_position)
    }

    /// Reads the record from a whole payload.
    pub fn decode(payload: &[u8]) -> Result<JournalSuperblock, FormatError> {
        let r = Reader::new(payload, JSB);
        r.require(JOURNAL_SUPERBLOCK_LEN)?;
        check_zero(JSB, "unused", &payload[JOURNAL_SUPERBLOCK_LEN..])?;
        let jsb = JournalSuperblock {
            ring_start: r.u64(0)?,
            ring_blocks: r.u64(8)?,
            oldest_sequence: r.u64(16)?,
            oldest_position: r.u64(24)?,
        };
        jsb.validate(None)?;
        Ok(jsb)
    }
}

/// One descriptor entry (28 bytes: home block 8, flags 4, old tag 8, new
/// tag 8; tags zero unless the entry is a data intent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DescriptorEntry {
    /// Flags 0: the next image in the transaction is `home`'s new content.
    Image { home: u64 },
    /// Flags 1: earlier images of `home` must not be replayed.
    Revoke { home: u64 },
    /// Flags 2: data block `home` is overwritten in place; on disk it holds
    /// content matching `old` or `new` (or is torn).
    DataIntent { home: u64, old: Tag, new: Tag },
}

impl DescriptorEntry {
    /// The block the entry is about.
    pub fn home(&self) -> u64 {
        match *self {
            DescriptorEntry::Image { home }
            | DescriptorEntry::Revoke { home }
            | DescriptorEntry::DataIntent { home, .. } => home,
        }
    }

    /// Whether an image block follows for this entry.
    pub fn has_image(&self) -> bool {
        matches!(self, DescriptorEntry::Image { .. })
    }
}

/// Entries a descriptor block with a payload of `payload_len` holds.
pub fn descriptor_capacity(payload_len: usize) -> usize {
    payload_len.saturating_sub(DESCRIPTOR_HEADER_LEN) / DESCRIPTOR_ENTRY_LEN
}

/// A descriptor block: entry count (4), flags (4), entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// Another descriptor block of the same transaction follows.
    pub more: bool,
    pub entries: Vec<DescriptorEntry>,
}

impl Descriptor {
    /// Number of images that follow for this descriptor's entries.
    pub fn image_count(&self) -> usize {
        self.entries.iter().filter(|e| e.has_image()).count()
    }

    /// Writes the descriptor into a whole payload (rest zero).
    pub fn encode(&self, payload: &mut [u8]) -> Result<(), FormatError> {
        check_range(
            DESC,
            "entry_count",
            self.entries.len() as u64,
            1,
            descriptor_capacity(payload.len()) as u64,
        )?;
        let mut w = Writer::new(payload, DESC);
        w.zero_all();
        w.u32(0, self.entries.len() as u32)?;
        w.u32(4, if self.more { DESCRIPTOR_MORE } else { 0 })?;
        for (i, e) in self.entries.iter().enumerate() {
            let at = DESCRIPTOR_HEADER_LEN + i * DESCRIPTOR_ENTRY_LEN;
            w.u64(at, e.home())?;
            let (flags, old, new) = match *e {
                DescriptorEntry::Image { .. } => (0, Tag::default(), Tag::default()),
                DescriptorEntry::Revoke { .. } => (ENTRY_REVOKE, Tag::default(), Tag::default()),
                DescriptorEntry::DataIntent { old, new, .. } => (ENTRY_DATA_INTENT, old, new),
            };
            w.u32(at + 8, flags)?;
            w.bytes(at + 12, &encode_tag(old))?;
            w.bytes(at + 20, &encode_tag(new))?;
        }
        Ok(())
    }

    /// Reads a descriptor from a whole payload.
    pub fn decode(payload: &[u8]) -> Result<Descriptor, FormatError> {
        let r = Reader::new(payload, DESC);
        r.require(DESCRIPTOR_HEADER_LEN)?;
        let count = r.u32(0)? as usize;
        check_range(
            DESC,
            "entry_count",
            count as u64,
            1,
            descriptor_capacity(payload.len()) as u64,
        )?;
        let flags = r.u32(4)?;
        if flags & !DESCRIPTOR_MORE != 0 {
            return Err(FormatError::invalid(
                DESC,
                "flags",
                Problem::UnknownBits {
                    bits: (flags & !DESCRIPTOR_MORE).into(),
                },
            ));
        }
        let end = DESCRIPTOR_HEADER_LEN + count * DESCRIPTOR_ENTRY_LEN;
        check_zero(DESC, "unused", &payload[end..])?;
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let at = DESCRIPTOR_HEADER_LEN + i * DESCRIPTOR_ENTRY_LEN;
            let home = r.u64(at)?;
            let entry_flags = r.u32(at + 8)?;
            let tags = r.bytes(at + 12, 16)?;
            let entry = match entry_flags {
                0 | ENTRY_REVOKE => {
                    check_zero(DESC, "tags", tags)?;
                    if entry_flags == 0 {
                        DescriptorEntry::Image { home }
                    } else {
                        DescriptorEntry::Revoke { home }
                    }
                }
                ENTRY_DATA_INTENT => DescriptorEntry::DataIntent {
                    home,
                    old: decode_tag(r.array(at + 12)?),
                    new: decode_tag(r.array(at + 20)?),
                },
                other => {
                    return Err(FormatError::invalid(
                        DESC,
                        "entry_flags",
                        Problem::UnknownValue {
                            value: other.into(),
                        },
                    ))
                }
            };
            entries.push(entry);
        }
        Ok(Descriptor {
            more: flags & DESCRIPTOR_MORE != 0,
            entries,
        })
    }
}

/// The commit record: sequence (8), blocks (8), crc (4), zero (4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// The transaction's sequence (also its header generation).
    pub sequence: u64,
    /// Descriptor and image blocks of the transaction (the commit block
    /// itself not counted), at least 1.
    pub blocks: u64,
    /// [`Commit::checksum`] of those blocks.
    pub crc: u32,
}

impl Commit {
    /// crc32c over the transaction's descriptor and image blocks, in ring
    /// order, each block's B bytes exactly as written.
    pub fn checksum<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> u32 {
        blocks.into_iter().fold(0, crc32c::crc32c_append)
    }

    /// Writes the record into a whole payload (rest zero).
    pub fn encode(&self, payload: &mut [u8]) -> Result<(), FormatError> {
        check_range(COMMIT, "blocks", self.blocks, 1, u64::MAX)?;
        let mut w = Writer::new(payload, COMMIT);
        w.require(COMMIT_LEN)?;
        w.zero_all();
        w.u64(0, self.sequence)?;
        w.u64(8, self.blocks)?;
        w.u32(16, self.crc)
    }

    /// Reads the record from a whole payload.
    pub fn decode(payload: &[u8]) -> Result<Commit, FormatError> {
        let r = Reader::new(payload, COMMIT);
        r.require(COMMIT_LEN)?;
        check_zero(COMMIT, "reserved", r.bytes(20, 4)?)?;
        check_zero(COMMIT, "unused", &payload[COMMIT_LEN..])?;
        let blocks = r.u64(8)?;
        check_range(COMMIT, "blocks", blocks, 1, u64::MAX)?;
        Ok(Commit {
            sequence: r.u64(0)?,
            blocks,
            crc: r.u32(16)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn journal_superblock() {
        let layout = Layout::new(100_000, 4096, 100, 1024).unwrap();
        let jsb = JournalSuperblock {
            oldest_position: 5,
            ..JournalSuperblock::new(&layout, 0x77)
        };
        let mut payload = vec![0xffu8; 4048];
        jsb.encode(&mut payload).unwrap();
        assert_eq!(
            &payload[..32],
            &[
                2, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, //
                0x77, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
            ]
        );
        assert_eq!(JournalSuperblock::decode(&payload), Ok(jsb));
        assert!(jsb.validate(Some(&layout)).is_ok());
        let other = Layout::new(100_000, 4096, 100, 2048).unwrap();
        assert!(jsb.validate(Some(&other)).is_err());
        let mut bad = payload.clone();
        bad[25] = 4; // position 1029 ≥ J
        assert_eq!(
            JournalSuperblock::decode(&bad).unwrap_err().field(),
            Some("oldest_position")
        );
        let mut bad = payload.clone();
        bad[0] = 3;
        assert_eq!(
            JournalSuperblock::decode(&bad).unwrap_err().field(),
            Some("ring_start")
        );
        let mut bad = payload.clone();
        bad[40] = 3;
        assert_eq!(
            JournalSuperblock::decode(&bad).unwrap_err().field(),
            Some("unused")
        );
    }

    #[test]
    fn golden_descriptor_and_commit() {
        let d = Descriptor {
            more: true,
            entries: vec![
                DescriptorEntry::Image { home: 0x10 },
                DescriptorEntry::Revoke { home: 0x11 },
                DescriptorEntry::DataIntent {
                    home: 0x12,
                    old: Tag { crc: 1, gen: 2 },
                    new: Tag { crc: 3, gen: 4 },
                },
            ],
        };
        assert_eq!(d.image_count(), 1);
        let mut payload = vec![0xffu8; 976];
        d.encode(&mut payload).unwrap();
        let mut want = [0u8; 8 + 3 * 28];
        want[0] = 3;
        want[4] = 1;
        want[8] = 0x10;
        want[36] = 0x11;
        want[44] = 1;
        want[64] = 0x12;
        want[72] = 2;
        want[76] = 1;
        want[80] = 2;
        want[84] = 3;
        want[88] = 4;
        assert_eq!(&payload[..want.len()], &want[..]);
        assert!(payload[want.len()..].iter().all(|&b| b == 0));
        assert_eq!(Descriptor::decode(&payload), Ok(d));
        assert_eq!(descriptor_capacity(976), 34);

        let field = |offset: usize, value: u8| {
            let mut bad = payload.clone();
            bad[offset] = value;
            Descriptor::decode(&bad).unwrap_err().field()
        };
        assert_eq!(field(0, 0), Some("entry_count"));
        assert_eq!(field(0, 35), Some("entry_count"));
        assert_eq!(field(4, 2), Some("flags"));
        assert_eq!(field(16, 3), Some("entry_flags"));
        assert_eq!(field(20, 1), Some("tags")); // tags on an image entry
        assert_eq!(field(200, 1), Some("unused"));

        let commit = Commit {
            sequence: 0x0102,
            blocks: 4,
            crc: 0xa0b0_c0d0,
        };
        let mut payload = vec![0xffu8; 976];
        commit.encode(&mut payload).unwrap();
        assert_eq!(
            &payload[..24],
            &[2, 1, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0xd0, 0xc0, 0xb0, 0xa0, 0, 0, 0, 0]
        );
        assert_eq!(Commit::decode(&payload), Ok(commit));
        let mut bad = payload.clone();
        bad[8] = 0;
        assert_eq!(Commit::decode(&bad).unwrap_err().field(), Some("blocks"));
        let mut bad = payload.clone();
        bad[21] = 1;
        assert_eq!(Commit::decode(&bad).unwrap_err().field(), Some("reserved"));
        assert_eq!(
            Commit::checksum([&b"1234"[..], b"56789"]),
            crc32c::crc32c(b"123456789")
        );
    }

    fn tag() -> impl Strategy<Value = Tag> {
        any::<(u32, u32)>().prop_map(|(crc, gen)| Tag { crc, gen })
    }

    fn entry() -> impl Strategy<Value = DescriptorEntry> {
        prop_oneof![
            any::<u64>().prop_map(|home| DescriptorEntry::Image { home }),
            any::<u64>().prop_map(|home| DescriptorEntry::Revoke { home }),
            (any::<u64>(), tag(), tag()).prop_map(|(home, old, new)| DescriptorEntry::DataIntent {
                home,
                old,
                new
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn descriptor_round_trip(more in any::<bool>(), entries in prop::collection::vec(entry(), 1..=34)) {
            let d = Descriptor { more, entries };
            let mut payload = vec![0u8; 976];
            d.encode(&mut payload).unwrap();
            prop_assert_eq!(Descriptor::decode(&payload).unwrap(), d);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
            let _ = JournalSuperblock::decode(&bytes);
            let _ = Descriptor::decode(&bytes);
            let _ = Commit::decode(&bytes);
        }
    }
}
