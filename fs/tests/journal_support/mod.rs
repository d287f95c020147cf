//! Shared by the journal tests: a mirror set of in-memory legs (optionally
//! recorded, for crash tests), formatted the way mkfs lays out a journal
//! (journal superblock, zeroed ring, block bitmap), with a bufio cache and
//! a journal on top; recognisable block contents; a small deterministic
//! PRNG; and a sampler of per-leg crash points over the recorded logs.

#![allow(dead_code)]

use keelfs_engine::bufio::{BufHandle, Bufio, BufioConfig};
use keelfs_engine::device::{CrashPoint, DeviceRef, MemDevice, RecordedOp, RecordingDevice};
use keelfs_engine::integrity::{meta_check, Volume};
use keelfs_engine::mirror::{MirrorConfig, MirrorSet};
use keelfs_engine::EngineError;
use keelfs_fs::format::bitmap::{clear_bit, set_padding};
use keelfs_fs::format::header::{set_block_generation, set_block_kind, BlockKind};
use keelfs_fs::format::tag_table::write_tag;
use keelfs_fs::format::{JournalSuperblock, Layout, Tag, META_HEADER_LEN};
use keelfs_fs::journal::{recover, Journal, JournalConfig, TxHandle};
use std::sync::Arc;

pub const UUID: [u8; 16] = *b"keelfs-jrnl-test";
/// The journal superblock's first sequence after mkfs.
pub const FIRST_SEQUENCE: u64 = 2;

/// A small filesystem layout: `blocks` blocks of `block_size`, a ring of
/// `ring` blocks.
pub fn layout(blocks: u64, block_size: u32, ring: u64) -> Layout {
    let per_block = (u64::from(block_size) - 48) / 256;
    Layout::new(blocks, block_size, per_block * 2, ring).unwrap()
}

/// A mirror set over `devices` (few threads: tests build many).
pub fn mirror(devices: Vec<DeviceRef>, block_size: u32) -> Arc<MirrorSet> {
    Arc::new(
        MirrorSet::with_config(
            devices,
            block_size,
            MirrorConfig {
                slots_per_leg: 2,
                workers_per_leg: 1,
                ..MirrorConfig::default()
            },
        )
        .unwrap(),
    )
}

pub fn volume(devices: Vec<DeviceRef>, block_size: u32) -> Arc<Volume> {
    Arc::new(Volume::new(mirror(devices, block_size), UUID))
}

/// A fresh metadata block of `kind`, generation `gen`, payload zero.
pub fn meta_block(layout: &Layout, kind: BlockKind, gen: u64) -> Vec<u8> {
    let mut b = vec![0u8; layout.block_size as usize];
    set_block_kind(&mut b, kind).unwrap();
    set_block_generation(&mut b, gen).unwrap();
    b
}

/// Format zeroed legs as mkfs does for the journal: journal superblock
/// (generation 1, empty, next sequence 2 at position 0), zeroed ring, and
/// the block bitmap with every block in use but `free`.
pub fn format(mems: &[Arc<MemDevice>], layout: &Layout, free: &[u64]) {
    let devices: Vec<DeviceRef> = mems.iter().map(|m| m.clone() as DeviceRef).collect();
    let vol = volume(devices, layout.block_size);
    let mut jsb = meta_block(layout, BlockKind::JournalSuperblock, 1);
    JournalSuperblock::new(layout, FIRST_SEQUENCE)
        .encode(&mut jsb[META_HEADER_LEN..])
        .unwrap();
    vol.write_meta(layout.journal_superblock, &mut jsb).unwrap();
    for i in 0..layout.block_bitmap.blocks {
        let mut b = meta_block(layout, BlockKind::BlockBitmap, 1);
        b[META_HEADER_LEN..].fill(0xff);
        let valid = layout.valid_bits_in_bitmap_block(layout.device_blocks, i);
        set_padding(&mut b[META_HEADER_LEN..], valid);
        for &f in free {
            let at = layout.block_bitmap_bit(f).unwrap();
            if at.block == layout.block_bitmap.start + i {
                clear_bit(&mut b[META_HEADER_LEN..], at.bit_in_block()).unwrap();
            }
        }
        vol.write_meta(layout.block_bitmap.start + i, &mut b)
            .unwrap();
    }
    vol.set().flush().unwrap();
}

/// Zeroed memory legs.
pub fn mem_legs(layout: &Layout, legs: usize) -> Vec<Arc<MemDevice>> {
    (0..legs)
        .map(|i| {
            Arc::new(MemDevice::new(
                format!("leg{i}"),
                layout.device_blocks * u64::from(layout.block_size),
            ))
        })
        .collect()
}

/// A cache over `volume` without background threads.
pub fn cache(volume: &Arc<Volume>, limit_blocks: u64) -> Arc<Bufio> {
    let bs = volume.block_size() as u64;
    Arc::new(
        Bufio::new(
            volume.clone(),
            BufioConfig {
                memory_limit_bytes: limit_blocks * bs,
                resident_min_bytes: 0,
                background_tick: None,
                writeback_batch: 16,
                ..BufioConfig::default()
            },
        )
        .unwrap(),
    )
}

/// Journal settings for tests: no background thread.
pub fn quiet() -> JournalConfig {
    JournalConfig {
        commit_interval: None,
        max_transaction_blocks: None,
    }
}

/// A journal over legs, optionally recorded.
pub struct Rig {
    pub layout: Layout,
    pub mems: Vec<Arc<MemDevice>>,
    pub recs: Vec<Arc<RecordingDevice>>,
    pub volume: Arc<Volume>,
    pub cache: Arc<Bufio>,
    pub journal: Journal,
}

impl Rig {
    /// A journal over `mems` (already formatted): recovered, then opened.
    /// With `record`, each leg is wrapped in a recording device first.
    pub fn open(
        layout: Layout,
        mems: Vec<Arc<MemDevice>>,
        record: bool,
        cache_blocks: u64,
        config: JournalConfig,
    ) -> Rig {
        let recs: Vec<Arc<RecordingDevice>> = if record {
            mems.iter()
                .map(|m| Arc::new(RecordingDevice::new(m.clone()).unwrap()))
                .collect()
        } else {
            Vec::new()
        };
        let devices: Vec<DeviceRef> = if record {
            recs.iter().map(|r| r.clone() as DeviceRef).collect()
        } else {
            mems.iter().map(|m| m.clone() as DeviceRef).collect()
        };
        let volume = volume(devices, layout.block_size);
        recover(&volume, &layout).unwrap();
        let cache = cache(&volume, cache_blocks);
        let journal = Journal::open(cache.clone(), volume.clone(), &layout, config).unwrap();
        Rig {
            layout,
            mems,
            recs,
            volume,
            cache,
            journal,
        }
    }

    /// A new, formatted rig.
    pub fn new(layout: Layout, legs: usize, free: &[u64], config: JournalConfig) -> Rig {
        let mems = mem_legs(&layout, legs);
        format(&mems, &layout, free);
        Rig::open(layout, mems, false, 64, config)
    }

    /// Mark every leg's log.
    pub fn mark(&self, name: &str) -> usize {
        let mut at = 0;
        for r in &self.recs {
            at = r.mark(name);
        }
        at
    }
}

/// The payload byte `i` of metadata block `block` as transaction `key`
/// writes it.
pub fn pattern_byte(block: u64, key: u64, i: usize) -> u8 {
    let x = block
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(key.wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
        .wrapping_add(i as u64 / 8);
    (x >> ((i % 8) * 8)) as u8
}

/// Fill `block`'s payload (a whole block buffer) with its pattern for
/// `key`, and set its kind.
pub fn fill_pattern(buf: &mut [u8], block: u64, key: u64) {
    set_block_kind(buf, BlockKind::ExtentNode).unwrap();
    for (i, b) in buf[META_HEADER_LEN..].iter_mut().enumerate() {
        *b = pattern_byte(block, key, i);
    }
}

/// Whether `buf` is `block` sealed with generation `gen` and the pattern
/// of `key`.
pub fn is_pattern(buf: &[u8], block: u64, gen: u64, key: u64) -> bool {
    meta_check(block, &UUID, buf, Some(gen)).is_ok()
        && buf[META_HEADER_LEN..]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == pattern_byte(block, key, i))
}

/// Recognisable data bytes for version `key` of data block `block`.
pub fn data_bytes(block: u64, key: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| pattern_byte(block ^ 0x5555, key, i))
        .collect()
}

/// Hold `block` for a change: from the cache, from disk, or fresh if it
/// was never written (or `fresh`: reallocated, whatever it holds).
pub fn hold<'c>(cache: &'c Bufio, block: u64, fresh: bool) -> BufHandle<'c> {
    if let Some(h) = cache.get(block) {
        return h;
    }
    if fresh {
        return cache.new_buf(block).unwrap();
    }
    match cache.read(block) {
        Ok(h) => h,
        Err(EngineError::Unwritten { .. }) => cache.new_buf(block).unwrap(),
        Err(e) => panic!("block {block}: {e}"),
    }
}

/// Write `block` in `tx` with the pattern of `key`.
pub fn write_pattern(cache: &Bufio, tx: &TxHandle<'_>, block: u64, key: u64, fresh: bool) {
    let h = hold(cache, block, fresh);
    let mut w = tx.write(&h);
    fill_pattern(&mut w, block, key);
}

/// Store `tag` for data block `block` in the tag table, in `tx`.
pub fn store_tag(cache: &Bufio, layout: &Layout, tx: &TxHandle<'_>, block: u64, tag: Tag) {
    let at = layout.tag_location(block).unwrap();
    let h = hold(cache, at.block, false);
    let mut w = tx.write(&h);
    set_block_kind(&mut w, BlockKind::TagTable).unwrap();
    write_tag(&mut w[META_HEADER_LEN..], at.offset, tag).unwrap();
}

/// The tag the tag table on disk holds for `block` (`None` if the
/// tag-table block is unwritten).
pub fn disk_tag(volume: &Volume, layout: &Layout, block: u64) -> Option<Tag> {
    let at = layout.tag_location(block).unwrap();
    let mut buf = vec![0u8; layout.block_size as usize];
    match volume.read_meta(at.block, &mut buf, None) {
        Ok(()) => Some(
            keelfs_fs::format::tag_table::read_tag(&buf[META_HEADER_LEN..], at.offset).unwrap(),
        ),
        Err(EngineError::Unwritten { .. }) => None,
        Err(e) => panic!("tag-table block {}: {e}", at.block),
    }
}

/// Block `block` as leg `leg` of `volume` holds it.
pub fn leg_block(volume: &Volume, leg: usize, block: u64) -> Vec<u8> {
    let mut buf = vec![0u8; volume.block_size()];
    volume.set().read_leg(leg, block, &mut buf).unwrap();
    buf
}

/// splitmix64: a small deterministic PRNG.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// The cut positions of a leg's log: the index of each flush (a cut just
/// before it), then the log's end.
pub fn epoch_ends(ops: &[RecordedOp]) -> Vec<usize> {
    let mut ends: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i] == RecordedOp::Flush)
        .collect();
    ends.push(ops.len());
    ends
}

/// Up to `max` crash points of one leg cut at `n`: the edge cases
/// (nothing landed, everything in order, each prefix), then random subsets
/// in random orders with some multi-sector writes torn.
pub fn leg_points(
    rec: &RecordingDevice,
    ops: &[RecordedOp],
    n: usize,
    rng: &mut Rng,
    max: usize,
) -> Vec<CrashPoint> {
    let updates = rec.unflushed_writes(n).unwrap();
    let mut points = vec![
        CrashPoint::new(n, vec![]),
        CrashPoint::new(n, updates.clone()),
    ];
    for end in 1..updates.len() {
        points.push(CrashPoint::new(n, updates[..end].to_vec()));
    }
    let mut tries = 0;
    while points.len() < max && tries < max * 4 && !updates.is_empty() {
        tries += 1;
        let mut keep: Vec<usize> = updates
            .iter()
            .copied()
            .filter(|_| rng.chance(1, 2))
            .collect();
        rng.shuffle(&mut keep);
        let mut point = CrashPoint::new(n, keep.clone());
        for &i in &keep {
            let sectors = ops[i].sectors() as u32;
            if sectors > 1 && rng.chance(1, 3) {
                let landed: Vec<u32> = (0..sectors).filter(|_| rng.chance(1, 2)).collect();
                point = point.with_torn(i, landed);
            }
        }
        if !points.contains(&point) {
            points.push(point);
        }
    }
    points.truncate(max.max(2));
    points
}

/// The crash states explored per flush epoch: `KEELFS_CRASH_STATES` or
/// `default`.
pub fn states_per_epoch(default: usize) -> usize {
    std::env::var("KEELFS_CRASH_STATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Memory legs holding the images the per-leg crash points leave.
pub fn materialise(recs: &[Arc<RecordingDevice>], points: &[CrashPoint]) -> Vec<Arc<MemDevice>> {
    recs.iter()
        .zip(points)
        .map(|(r, p)| Arc::new(r.materialise(p).unwrap()))
        .collect()
}

/// Print the reproducer of a state.
pub fn reproducer(points: &[CrashPoint]) -> String {
    points
        .iter()
        .enumerate()
        .map(|(leg, p)| format!("leg{leg}: {p}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A device whose flushes take `delay` (so concurrent commits pile up),
/// and that counts them.
#[derive(Debug)]
pub struct SlowFlush {
    pub inner: DeviceRef,
    pub delay: std::time::Duration,
    pub flushes: std::sync::atomic::AtomicU64,
}

impl SlowFlush {
    pub fn new(inner: DeviceRef, delay: std::time::Duration) -> SlowFlush {
        SlowFlush {
            inner,
            delay,
            flushes: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl keelfs_engine::device::Device for SlowFlush {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> keelfs_engine::error::DeviceResult<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> keelfs_engine::error::DeviceResult<()> {
        self.inner.write_at(offset, buf)
    }
    fn write_vectored_at(
        &self,
        offset: u64,
        bufs: &[&[u8]],
    ) -> keelfs_engine::error::DeviceResult<()> {
        self.inner.write_vectored_at(offset, bufs)
    }
    fn flush(&self) -> keelfs_engine::error::DeviceResult<()> {
        std::thread::sleep(self.delay);
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> keelfs_engine::error::DeviceResult<()> {
        self.inner.discard(offset, len)
    }
}

/// A journal over `mems` (formatted) whose legs flush slowly.
pub fn slow_rig(
    layout: Layout,
    mems: Vec<Arc<MemDevice>>,
    delay: std::time::Duration,
    config: JournalConfig,
) -> Rig {
    let devices: Vec<DeviceRef> = mems
        .iter()
        .map(|m| Arc::new(SlowFlush::new(m.clone(), delay)) as DeviceRef)
        .collect();
    let volume = volume(devices, layout.block_size);
    recover(&volume, &layout).unwrap();
    let cache = cache(&volume, 256);
    let journal = Journal::open(cache.clone(), volume.clone(), &layout, config).unwrap();
    Rig {
        layout,
        mems,
        recs: Vec::new(),
        volume,
        cache,
        journal,
    }
}

/// The volume over the same memory legs, as after a power cut that lost
/// nothing acknowledged (memory devices keep every write).
pub fn reopen(rig: &Rig) -> Arc<Volume> {
    let devices: Vec<DeviceRef> = rig.mems.iter().map(|m| m.clone() as DeviceRef).collect();
    volume(devices, rig.layout.block_size)
}
