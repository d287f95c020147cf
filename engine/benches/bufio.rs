//! bufio hit and miss paths.
//!
//! * `hit/1_thread`, `hit/2_threads`: `read` + drop of cached blocks
//!   (1024 cached 4 KiB blocks, cycled; the two threads start half the
//!   cache plus half the shard count apart, so they work in different
//!   shards). Throughput is lookups in total.
//! * `miss`: `read` + drop cycling over 16384 blocks of an in-memory store
//!   through a 1024-block cache: every read misses, evicts and copies.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keelfs_engine::bufio::{BlockStore, Bufio, BufioConfig};
use keelfs_engine::error::EngineResult;
use parking_lot::RwLock;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BS: usize = 4096;
const CACHED: u64 = 1024;

struct MemStore {
    blocks: RwLock<Vec<u8>>,
    num_blocks: u64,
}

impl MemStore {
    fn new(num_blocks: u64) -> Self {
        MemStore {
            blocks: RwLock::new(vec![7; BS * num_blocks as usize]),
            num_blocks,
        }
    }
}

impl BlockStore for MemStore {
    fn block_size(&self) -> usize {
        BS
    }
    fn num_blocks(&self) -> u64 {
        self.num_blocks
    }
    fn read_block(&self, block: u64, buf: &mut [u8], _expect_gen: Option<u64>) -> EngineResult<()> {
        let start = block as usize * BS;
        buf.copy_from_slice(&self.blocks.read()[start..start + BS]);
        Ok(())
    }
    fn write_run(&self, first: u64, data: &mut [u8]) -> EngineResult<()> {
        let start = first as usize * BS;
        self.blocks.write()[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> EngineResult<()> {
        Ok(())
    }
    fn discard(&self, _first: u64, _count: u64) -> EngineResult<()> {
        Ok(())
    }
}

fn cache(num_blocks: u64, limit_blocks: u64) -> Bufio {
    let config = BufioConfig {
        memory_limit_bytes: limit_blocks * BS as u64,
        ..BufioConfig::default()
    };
    Bufio::new(Arc::new(MemStore::new(num_blocks)), config).unwrap()
}

fn read_loop(bufio: &Bufio, start: u64, iters: u64, modulo: u64) {
    let mut block = start;
    for _ in 0..iters {
        let handle = bufio.read(block).unwrap();
        black_box(handle.data()[0]);
        drop(handle);
        block += 1;
        if block == modulo {
            block = 0;
        }
    }
}

fn hits(c: &mut Criterion) {
    let bufio = cache(CACHED, 2 * CACHED);
    read_loop(&bufio, 0, CACHED, CACHED);
    let mut group = c.benchmark_group("hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_thread", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            read_loop(&bufio, 0, iters, CACHED);
            start.elapsed()
        })
    });
    group.bench_function("2_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| read_loop(&bufio, 0, iters / 2, CACHED));
                s.spawn(|| read_loop(&bufio, CACHED / 2 + 8, iters - iters / 2, CACHED));
            });
            start.elapsed()
        })
    });
    group.finish();
    assert_eq!(bufio.stats().misses, CACHED);
}

fn misses(c: &mut Criterion) {
    const STORE_BLOCKS: u64 = 16 * CACHED;
    let bufio = cache(STORE_BLOCKS, CACHED);
    let mut group = c.benchmark_group("miss");
    group.throughput(Throughput::Elements(1));
    let mut next = 0;
    group.bench_function("read_evict", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            read_loop(&bufio, next, iters, STORE_BLOCKS);
            next = (next + iters) % STORE_BLOCKS;
            start.elapsed()
        })
    });
    group.finish();
    let stats = bufio.stats();
    assert_eq!(stats.hits, 0, "the miss bench hit the cache");
    assert!(stats.current_bytes <= CACHED * BS as u64);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = hits, misses
}
criterion_main!(benches);
