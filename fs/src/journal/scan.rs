//! Finding the committed records in the ring, from the tail, on every leg.
//!
//! What it promises ([`scan`]):
//!
//! * It walks from the journal superblock's tail and accepts a record at
//!   the current position only if all of this holds for blocks taken, each,
//!   from some in-service leg (the legs are read separately: after a crash
//!   each leg may hold a different subset of the last unflushed writes):
//!   - its first descriptor is a sealed descriptor block for that ring
//!     address whose sequence `s` follows the chain: the first record has
//!     `s ≥` the superblock's oldest sequence, a later one `s >` the
//!     previous record's, or `s =` it when the previous one carried data
//!     intents only (intent records precede their transaction's record and
//!     share its sequence);
//!   - every further descriptor block (while `more` is set) is sealed for
//!     its ring address with generation `s`;
//!   - every image is sealed for the home block its entry names, with
//!     generation `s` (a copy that fails this on one leg is taken from
//!     another: counted in `bad_copies`);
//!   - the commit block is sealed for its ring address with generation
//!     `s`, names `s` and the number of blocks before it, and its crc
//!     matches those blocks as found.
//! * It stops at the first position where no leg offers such a record, or
//!   when the live part would exceed J − 1 blocks. Nothing after a gap is
//!   looked at: the commit of a record is written only once every earlier
//!   record is durable, so a later valid record cannot exist.
//! * A record that validates but names a home block the journal never logs
//!   (the superblocks, the journal itself, beyond the device) or an intent
//!   outside the data area is corruption: an error, never replayed.
//! * Memory stays bounded by one chunk of ring blocks per leg: images are
//!   not kept, only where a good copy was found; replay reads them again.
//!
//! Relies on: the writer's order (`record.rs`): the commit block is written
//! after a flush of the descriptors and images, and records are written in
//! sequence order; a stale block left from an earlier lap carries a smaller
//! sequence than every live record (`recovery.rs` restarts sequences above
//! anything a crash may have left half-written).

use crate::error::{FsError, FsResult};
use crate::format::header::{block_kind, BlockKind};
use crate::format::META_HEADER_LEN;
use crate::format::{Commit, Descriptor, DescriptorEntry, JournalSuperblock, Layout};
use keelfs_engine::integrity::{meta_check, Volume};

use super::journaled;
use super::ring::RingGeometry;

/// Ring blocks read from a leg at a time.
const CHUNK_BLOCKS: u64 = 64;

/// Where the good copy of one image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImageRef {
    pub home: u64,
    /// The ring block holding it.
    pub address: u64,
    /// The leg whose copy is good.
    pub leg: usize,
}

/// One committed record found in the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedRecord {
    pub seq: u64,
    pub pos: u64,
    pub len: u64,
    pub entries: Vec<DescriptorEntry>,
    pub images: Vec<ImageRef>,
}

impl ScannedRecord {
    /// Whether the record carries data intents only.
    pub fn intent_only(&self) -> bool {
        self.entries
            .iter()
            .all(|e| matches!(e, DescriptorEntry::DataIntent { .. }))
    }
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scan {
    pub records: Vec<ScannedRecord>,
    /// The position after the last record (the tail if none).
    pub end: u64,
    /// Copies of record blocks that were bad on some leg and taken from
    /// another.
    pub bad_copies: u64,
}

/// Reads ring blocks from each leg, a chunk at a time.
pub(crate) struct RingReader<'a> {
    volume: &'a Volume,
    geo: RingGeometry,
    legs: Vec<usize>,
    /// Per leg, the chunk last read.
    chunks: Vec<Option<Chunk>>,
}

/// Consecutive ring blocks read from one leg: the first position, and the
/// blocks (`None` where the device could not read).
type Chunk = (u64, Vec<Option<Vec<u8>>>);

impl<'a> RingReader<'a> {
    pub fn new(volume: &'a Volume, geo: RingGeometry) -> RingReader<'a> {
        let set = volume.set();
        let legs: Vec<usize> = set
            .in_service()
            .legs()
            .filter(|&l| l < set.num_legs())
            .collect();
        RingReader {
            volume,
            geo,
            chunks: vec![None; legs.len()],
            legs,
        }
    }

    /// The in-service legs, in index order.
    pub fn legs(&self) -> &[usize] {
        &self.legs
    }

    /// Ring position `pos` as leg number `i` (an index into
    /// [`legs`](Self::legs)) holds it, or `None` if unreadable.
    pub fn block(&mut self, i: usize, pos: u64) -> Option<&[u8]> {
        let pos = pos % self.geo.blocks;
        let cached = matches!(&self.chunks[i], Some((start, blocks))
            if pos >= *start && pos < start + blocks.len() as u64);
        if !cached {
            let start = pos;
            let count = CHUNK_BLOCKS.min(self.geo.blocks - pos);
            self.chunks[i] = Some((start, self.read_chunk(self.legs[i], start, count)));
        }
        let (start, blocks) = self.chunks[i].as_ref()?;
        blocks[(pos - start) as usize].as_deref()
    }

    fn read_chunk(&self, leg: usize, start: u64, count: u64) -> Vec<Option<Vec<u8>>> {
        let bs = self.volume.block_size();
        let set = self.volume.set();
        let mut buf = vec![0u8; bs * count as usize];
        if set.read_leg(leg, self.geo.address(start), &mut buf).is_ok() {
            return buf.chunks_exact(bs).map(|b| Some(b.to_vec())).collect();
        }
        // One unreadable sector fails the whole request: read block by block.
        (0..count)
            .map(|k| {
                let mut one = vec![0u8; bs];
                set.read_leg(leg, self.geo.address(start + k), &mut one)
                    .ok()
                    .map(|()| one)
            })
            .collect()
    }
}

/// Scan the ring from `jsb`'s tail. See the module documentation.
pub(crate) fn scan(volume: &Volume, layout: &Layout, jsb: &JournalSuperblock) -> FsResult<Scan> {
    let geo = RingGeometry {
        start: jsb.ring_start,
        blocks: jsb.ring_blocks,
    };
    let mut reader = RingReader::new(volume, geo);
    let mut scan = Scan {
        records: Vec::new(),
        end: jsb.oldest_position,
        bad_copies: 0,
    };
    let mut live = 0u64;
    loop {
        let prev = scan.records.last();
        let follows = |seq: u64| match prev {
            None => seq >= jsb.oldest_sequence,
            Some(p) => seq > p.seq || (seq == p.seq && p.intent_only()),
        };
        let room = (geo.blocks - 1).saturating_sub(live);
        let mut found = None;
        for (seq, first, bytes) in first_descriptors(volume, &mut reader, scan.end, &follows) {
            let parsed = parse_record(volume, &mut reader, scan.end, seq, (first, bytes), room);
            if let Some((record, bad)) = parsed {
                found = Some((record, bad));
                break;
            }
        }
        let Some((record, bad)) = found else {
            break;
        };
        check_entries(layout, &record)?;
        scan.bad_copies += bad;
        live += record.len;
        scan.end = geo.advance(record.pos, record.len);
        scan.records.push(record);
    }
    Ok(scan)
}

/// The distinct sealed descriptor blocks at `pos` on the legs whose
/// sequence `follows` the chain, highest sequence first: (sequence, the
/// descriptor, its bytes).
fn first_descriptors(
    volume: &Volume,
    reader: &mut RingReader<'_>,
    pos: u64,
    follows: &dyn Fn(u64) -> bool,
) -> Vec<(u64, Descriptor, Vec<u8>)> {
    let address = reader.geo.address(pos);
    let mut found: Vec<(u64, Descriptor, Vec<u8>)> = Vec::new();
    for i in 0..reader.legs().len() {
        let Some(block) = reader.block(i, pos) else {
            continue;
        };
        let Some((seq, descriptor)) = descriptor(volume, address, block, None) else {
            continue;
        };
        if follows(seq) && !found.iter().any(|(_, _, b)| b == block) {
            found.push((seq, descriptor, block.to_vec()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

/// A sealed descriptor block for `address` (of generation `seq` if given).
fn descriptor(
    volume: &Volume,
    address: u64,
    block: &[u8],
    seq: Option<u64>,
) -> Option<(u64, Descriptor)> {
    meta_check(address, volume.fs_uuid(), block, seq).ok()?;
    if block_kind(block).ok()? != BlockKind::JournalDescriptor {
        return None;
    }
    let gen = crate::format::header::block_generation(block).ok()?;
    let d = Descriptor::decode(&block[META_HEADER_LEN..]).ok()?;
    Some((gen, d))
}

/// The whole record at `pos` starting with descriptor `first` (decoded,
/// and its bytes) of sequence `seq`, if it is committed and at most `room`
/// blocks long; with the count of bad copies passed over.
fn parse_record(
    volume: &Volume,
    reader: &mut RingReader<'_>,
    pos: u64,
    seq: u64,
    first: (Descriptor, Vec<u8>),
    room: u64,
) -> Option<(ScannedRecord, u64)> {
    let geo = reader.geo;
    let legs = reader.legs().len();
    let uuid = *volume.fs_uuid();
    let mut bad = 0u64;
    let mut crc = 0u32;
    let mut len = 0u64;
    let mut entries = Vec::new();

    // Descriptors.
    let (first, first_bytes) = first;
    let mut descriptor_blocks = vec![first];
    crc = crc32c::crc32c_append(crc, &first_bytes);
    len += 1;
    while descriptor_blocks.last()?.more {
        if len + 1 >= room {
            return None;
        }
        let at = geo.advance(pos, len);
        let (d, block) = (0..legs).find_map(|i| {
            let block = reader.block(i, at)?;
            let (_, d) = descriptor(volume, geo.address(at), block, Some(seq))?;
            Some((d, block.to_vec()))
        })?;
        crc = crc32c::crc32c_append(crc, &block);
        len += 1;
        descriptor_blocks.push(d);
    }
    for d in descriptor_blocks {
        entries.extend(d.entries);
    }

    // Images, in entry order.
    let mut images = Vec::new();
    for home in entries.iter().filter(|e| e.has_image()).map(|e| e.home()) {
        if len + 1 >= room {
            return None;
        }
        let at = geo.advance(pos, len);
        let mut chosen = None;
        for i in 0..legs {
            let Some(block) = reader.block(i, at) else {
                bad += 1;
                continue;
            };
            if meta_check(home, &uuid, block, Some(seq)).is_ok() {
                crc = crc32c::crc32c_append(crc, block);
                chosen = Some(reader.legs()[i]);
                break;
            }
            bad += 1;
        }
        let leg = chosen?;
        images.push(ImageRef {
            home,
            address: geo.address(at),
            leg,
        });
        len += 1;
    }

    // The commit block.
    if len + 1 > room {
        return None;
    }
    let at = geo.advance(pos, len);
    let committed = (0..legs).any(|i| {
        reader.block(i, at).is_some_and(|block| {
            meta_check(geo.address(at), &uuid, block, Some(seq)).is_ok()
                && block_kind(block).ok() == Some(BlockKind::JournalCommit)
                && Commit::decode(&block[META_HEADER_LEN..])
                    .is_ok_and(|c| c.sequence == seq && c.blocks == len && c.crc == crc)
        })
    });
    if !committed {
        return None;
    }
    // Bad copies only count once the record is known to be real.
    Some((
        ScannedRecord {
            seq,
            pos,
            len: len + 1,
            entries,
            images,
        },
        bad,
    ))
}

/// Refuse a committed record that names blocks the journal never logs.
fn check_entries(layout: &Layout, record: &ScannedRecord) -> FsResult<()> {
    for e in &record.entries {
        let ok = match e {
            DescriptorEntry::Image { home } | DescriptorEntry::Revoke { home } => {
                journaled(layout, *home)
            }
            DescriptorEntry::DataIntent { home, .. } => layout.is_data_block(*home),
        };
        if !ok {
            return Err(FsError::Corrupt(format!(
                "journal record {} at ring position {}: entry {e:?} names a block the journal \
                 never logs",
                record.seq, record.pos
            )));
        }
    }
    Ok(())
}
