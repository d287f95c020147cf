//! Test stack for the directory and xattr tests: a Bufio over a Volume over
//! MemDevice legs, the interim journal, and a test `MetaAllocator` (a
//! counter over a range of blocks that keeps the set of live blocks, so a
//! test can check that the tree holds exactly the blocks it allocated).
//!
//! Also: names with colliding hashes. The name hash is two CRC-32Cs of the
//! same name, and a CRC is affine: for names x and d of equal length,
//! crc(s, x ^ d) = crc(s, x) ^ raw(d), where raw is the CRC register after
//! d from a zero register, whatever the seed s. Appending to any r the four
//! bytes of raw(r) (little-endian) gives raw(r ‖ raw(r)) = 0, so
//! y = x ^ (r ‖ raw(r)) has exactly the hash of x, for both seeds at once.

#![allow(dead_code)]

use keelfs_engine::bufio::{BlockStore, Bufio, BufioConfig};
use keelfs_engine::device::{DeviceRef, MemDevice};
use keelfs_engine::integrity::Volume;
use keelfs_engine::mirror::MirrorSet;
use keelfs_fs::alloc::MetaAllocator;
use keelfs_fs::error::{FsError, FsResult};
use keelfs_fs::format::dir::name_hash;
use keelfs_fs::journal::{Journal, TxHandle};
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;

pub const UUID: [u8; 16] = *b"keelfs-dir-tests";

/// Hands out blocks `first..end` in order, never reusing one (freed blocks
/// are only recorded).
pub struct CountingAlloc {
    state: Mutex<AllocState>,
}

struct AllocState {
    next: u64,
    end: u64,
    live: BTreeSet<u64>,
}

impl CountingAlloc {
    pub fn new(first: u64, end: u64) -> CountingAlloc {
        CountingAlloc {
            state: Mutex::new(AllocState {
                next: first,
                end,
                live: BTreeSet::new(),
            }),
        }
    }

    /// Blocks allocated and not freed.
    pub fn live(&self) -> BTreeSet<u64> {
        self.state.lock().live.clone()
    }

    pub fn live_count(&self) -> u64 {
        self.state.lock().live.len() as u64
    }
}

impl MetaAllocator for CountingAlloc {
    fn alloc_meta(&self, _tx: &TxHandle<'_>, _goal: u64) -> FsResult<u64> {
        let mut st = self.state.lock();
        if st.next >= st.end {
            return Err(FsError::NoSpace);
        }
        let block = st.next;
        st.next += 1;
        st.live.insert(block);
        Ok(block)
    }

    fn free_meta(&self, tx: &TxHandle<'_>, block: u64) -> FsResult<()> {
        let mut st = self.state.lock();
        if !st.live.remove(&block) {
            panic!("block {block} freed but not allocated (or freed twice)");
        }
        tx.revoke(block);
        Ok(())
    }
}

/// A bufio cache over a volume over `legs` memory devices, a journal over
/// it, and an allocator over blocks 1.. of the device.
pub struct Stack {
    pub store: Arc<Volume>,
    pub cache: Arc<Bufio>,
    pub journal: Journal,
    pub alloc: CountingAlloc,
}

pub fn cache_config() -> BufioConfig {
    BufioConfig {
        memory_limit_bytes: 256 << 20,
        background_tick: None,
        ..BufioConfig::default()
    }
}

impl Stack {
    pub fn new(block_size: u32, blocks: u64, legs: usize) -> Stack {
        let devices: Vec<DeviceRef> = (0..legs)
            .map(|i| {
                Arc::new(MemDevice::new(
                    format!("leg{i}"),
                    blocks * u64::from(block_size),
                )) as DeviceRef
            })
            .collect();
        let set = Arc::new(MirrorSet::new(devices, block_size).unwrap());
        let store = Arc::new(Volume::new(set, UUID));
        let cache =
            Arc::new(Bufio::new(store.clone() as Arc<dyn BlockStore>, cache_config()).unwrap());
        let journal = Journal::new(cache.clone(), 1);
        Stack {
            store,
            cache,
            journal,
            alloc: CountingAlloc::new(1, blocks),
        }
    }

    /// Commits, then replaces the cache (and journal) by cold ones over the
    /// same volume: the next reads all miss.
    pub fn drop_cache(&mut self) {
        self.journal.commit().unwrap();
        let cache = Arc::new(
            Bufio::new(self.store.clone() as Arc<dyn BlockStore>, cache_config()).unwrap(),
        );
        let seq = self.journal.committed_seq();
        self.journal = Journal::new(cache.clone(), seq);
        self.cache = cache;
    }

    /// Store reads so far (bufio misses).
    pub fn misses(&self) -> u64 {
        self.cache.stats().misses
    }
}

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The CRC-32C register after `bytes` from a zero register, no final
/// inversion.
fn raw_crc(bytes: &[u8]) -> u32 {
    !crc32c::crc32c_append(0xffff_ffff, bytes)
}

/// `count` distinct names (valid: no NUL, no '/') with exactly the hash of
/// `base` (at least 5 bytes long), `base` first.
pub fn colliding_names(base: &[u8], count: usize, seed: u64) -> Vec<Vec<u8>> {
    assert!(base.len() >= 5);
    let mut rng = Rng::new(seed);
    let mut out = vec![base.to_vec()];
    let mut seen: BTreeSet<Vec<u8>> = out.iter().cloned().collect();
    while out.len() < count {
        let r: Vec<u8> = (0..base.len() - 4).map(|_| rng.next() as u8).collect();
        let mut d = r.clone();
        d.extend_from_slice(&raw_crc(&r).to_le_bytes());
        let y: Vec<u8> = base.iter().zip(&d).map(|(a, b)| a ^ b).collect();
        if y.contains(&0) || y.contains(&b'/') || !seen.insert(y.clone()) {
            continue;
        }
        assert_eq!(name_hash(&y), name_hash(base));
        out.push(y);
    }
    out
}
