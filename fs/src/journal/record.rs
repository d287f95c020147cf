//! Writing one record to the ring (docs/format.md §10): descriptor blocks,
//! images, then the commit block.
//!
//! What it promises:
//!
//! * [`build`] lays a record out at a ring position: descriptor blocks
//!   (kind 3, generation = the record's sequence, sealed for their ring
//!   address; `more` set on all but the last), the images in the order of
//!   their `Image` entries (already sealed for their home address, written
//!   as they are), and a commit block (kind 4, generation = sequence,
//!   sealed for its ring address) whose crc covers the descriptors and
//!   images exactly as written. The whole record may wrap past the end of
//!   the ring.
//! * [`write`] writes it with the two write-ordered flushes of §10: the
//!   descriptors and images (one plugged, merged write per run and leg),
//!   a flush — which also makes durable every data block written before
//!   the call (ordered data) —, then the commit block and a second flush.
//!   When it returns `Ok`, the record is durable on every in-service leg.
//! * The commit block's changing bytes (header and the 24-byte record) all
//!   lie in its first 512-byte sector; a torn commit write still fails its
//!   crc unless the rest of the block was already zero.
//!
//! Relies on: the caller holding the ring lock (one record at a time, at
//! the head) and having checked the space; `images` being whole blocks
//! sealed for their homes with generation = sequence.

use crate::error::{FsError, FsResult};
use crate::format::header::{set_block_generation, set_block_kind, BlockKind};
use crate::format::{Commit, Descriptor, DescriptorEntry, META_HEADER_LEN};
use keelfs_engine::integrity::Volume;
use keelfs_engine::mirror::MirrorSet;
use std::sync::Arc;

use super::ring::{descriptor_blocks, RingGeometry};

/// A record laid out at its ring position, ready to write.
pub(crate) struct BuiltRecord {
    /// Descriptors and images: (block address, bytes), in ring order.
    pub body: Vec<(u64, Arc<[u8]>)>,
    /// The commit block: (block address, bytes).
    pub commit: (u64, Arc<[u8]>),
}

impl BuiltRecord {
    /// Ring blocks the record occupies.
    pub fn len(&self) -> u64 {
        self.body.len() as u64 + 1
    }
}

/// A fresh metadata block of `kind` and generation `seq`, payload zero.
pub(crate) fn empty_block(block_size: usize, kind: BlockKind, seq: u64) -> FsResult<Vec<u8>> {
    let mut block = vec![0u8; block_size];
    set_block_kind(&mut block, kind)?;
    set_block_generation(&mut block, seq)?;
    Ok(block)
}

/// Lay out a record of sequence `seq` at ring position `pos`. `entries`
/// must name one image per `Image` entry, in order, in `images`.
pub(crate) fn build(
    volume: &Volume,
    geo: RingGeometry,
    pos: u64,
    seq: u64,
    entries: &[DescriptorEntry],
    images: Vec<Arc<[u8]>>,
    capacity: usize,
) -> FsResult<BuiltRecord> {
    let image_entries = entries.iter().filter(|e| e.has_image()).count();
    if image_entries != images.len() || entries.is_empty() {
        return Err(FsError::Invalid(format!(
            "journal record {seq}: {} entries with {image_entries} images, {} images given",
            entries.len(),
            images.len()
        )));
    }
    let bs = volume.block_size();
    let descriptors = descriptor_blocks(entries.len(), capacity) as usize;
    let mut body: Vec<(u64, Arc<[u8]>)> = Vec::with_capacity(descriptors + images.len());
    let mut at = pos;
    for (i, chunk) in entries.chunks(capacity.max(1)).enumerate() {
        let mut block = empty_block(bs, BlockKind::JournalDescriptor, seq)?;
        Descriptor {
            more: i + 1 < descriptors,
            entries: chunk.to_vec(),
        }
        .encode(&mut block[META_HEADER_LEN..])?;
        let address = geo.address(at);
        volume.seal_run(address, &mut block);
        body.push((address, Arc::from(block)));
        at = geo.advance(at, 1);
    }
    for image in images {
        if image.len() != bs {
            return Err(FsError::Invalid(format!(
                "journal record {seq}: an image of {} bytes",
                image.len()
            )));
        }
        body.push((geo.address(at), image));
        at = geo.advance(at, 1);
    }
    let crc = Commit::checksum(body.iter().map(|(_, b)| &b[..]));
    let mut block = empty_block(bs, BlockKind::JournalCommit, seq)?;
    Commit {
        sequence: seq,
        blocks: body.len() as u64,
        crc,
    }
    .encode(&mut block[META_HEADER_LEN..])?;
    let address = geo.address(at);
    volume.seal_run(address, &mut block);
    Ok(BuiltRecord {
        body,
        commit: (address, Arc::from(block)),
    })
}

/// Write `record`: body, flush, commit block, flush.
pub(crate) fn write(set: &MirrorSet, record: &BuiltRecord) -> FsResult<()> {
    let mut plug = set.plug();
    for (address, bytes) in &record.body {
        plug.write_shared(*address, bytes.clone())?;
    }
    plug.unplug()?;
    set.flush()?;
    let (address, bytes) = &record.commit;
    set.write_shared_sync(*address, bytes.clone())?;
    set.flush()?;
    Ok(())
}
