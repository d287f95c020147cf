//! An in-memory `BlockStore` for the bufio tests: counts reads, writes and
//! runs, records the order and length of every run, injects failures,
//! blocks chosen reads or writes until released, flags writes of blocks the
//! test declared forbidden (pinned), and scribbles over the bytes it is
//! handed (as the integrity layer seals tags) to prove bufio's own copy is
//! untouched.

#![allow(dead_code)]

use keelfs_engine::bufio::BlockStore;
use keelfs_engine::error::{EngineError, EngineResult};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

/// Makes chosen operations wait until opened.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

#[derive(Default)]
struct GateState {
    closed_on: Option<u64>,
    waiting: usize,
}

impl Gate {
    /// From now on, operations on `block` wait until `open`.
    pub fn close_on(&self, block: u64) {
        self.state.lock().closed_on = Some(block);
    }

    pub fn open(&self) {
        self.state.lock().closed_on = None;
        self.cv.notify_all();
    }

    /// Wait until some operation is blocked at the gate (panics after 10 s).
    pub fn wait_for_waiter(&self) {
        let mut st = self.state.lock();
        while st.waiting == 0 {
            assert!(
                !self
                    .cv
                    .wait_for(&mut st, Duration::from_secs(10))
                    .timed_out(),
                "nobody reached the gate"
            );
        }
    }

    fn pass(&self, block: u64) {
        let mut st = self.state.lock();
        if st.closed_on != Some(block) {
            return;
        }
        st.waiting += 1;
        self.cv.notify_all();
        while st.closed_on == Some(block) {
            self.cv.wait(&mut st);
        }
        st.waiting -= 1;
    }
}

pub struct MemStore {
    block_size: usize,
    /// What reads see.
    blocks: Mutex<Vec<Vec<u8>>>,
    /// As of the last flush.
    stable: Mutex<Vec<Vec<u8>>>,
    pub reads: AtomicU64,
    read_counts: Mutex<HashMap<u64, u64>>,
    /// `expect_gen` of every read, in order.
    pub expect_gens: Mutex<Vec<(u64, Option<u64>)>>,
    /// Every `write_run`, in call order: (first block, block count).
    runs: Mutex<Vec<(u64, u64)>>,
    pub flushes: AtomicU64,
    pub discards: Mutex<Vec<(u64, u64)>>,
    pub fail_all_writes: AtomicBool,
    fail_write_blocks: Mutex<HashSet<u64>>,
    fail_read_blocks: Mutex<HashSet<u64>>,
    /// Blocks that must not be written now (the tests' pinned blocks).
    forbidden: Mutex<HashSet<u64>>,
    violations: Mutex<Vec<u64>>,
    pub read_gate: Gate,
    pub write_gate: Gate,
}

impl MemStore {
    pub fn new(block_size: usize, num_blocks: u64) -> Self {
        let zero = vec![vec![0; block_size]; num_blocks as usize];
        MemStore {
            block_size,
            blocks: Mutex::new(zero.clone()),
            stable: Mutex::new(zero),
            reads: AtomicU64::new(0),
            read_counts: Mutex::default(),
            expect_gens: Mutex::default(),
            runs: Mutex::default(),
            flushes: AtomicU64::new(0),
            discards: Mutex::default(),
            fail_all_writes: AtomicBool::new(false),
            fail_write_blocks: Mutex::default(),
            fail_read_blocks: Mutex::default(),
            forbidden: Mutex::default(),
            violations: Mutex::default(),
            read_gate: Gate::default(),
            write_gate: Gate::default(),
        }
    }

    /// Store `bytes` as `block`'s content directly (test setup).
    pub fn put(&self, block: u64, bytes: &[u8]) {
        self.blocks.lock()[block as usize].copy_from_slice(bytes);
    }

    /// `block`'s content as reads see it.
    pub fn content(&self, block: u64) -> Vec<u8> {
        self.blocks.lock()[block as usize].clone()
    }

    /// `block`'s content as of the last flush.
    pub fn stable_content(&self, block: u64) -> Vec<u8> {
        self.stable.lock()[block as usize].clone()
    }

    pub fn reads_of(&self, block: u64) -> u64 {
        self.read_counts.lock().get(&block).copied().unwrap_or(0)
    }

    pub fn runs(&self) -> Vec<(u64, u64)> {
        self.runs.lock().clone()
    }

    pub fn take_runs(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.runs.lock())
    }

    /// Blocks written so far (sum of run lengths).
    pub fn blocks_written(&self) -> u64 {
        self.runs.lock().iter().map(|&(_, n)| n).sum()
    }

    pub fn fail_writes_of(&self, block: u64, fail: bool) {
        let mut set = self.fail_write_blocks.lock();
        if fail {
            set.insert(block);
        } else {
            set.remove(&block);
        }
    }

    pub fn fail_reads_of(&self, block: u64, fail: bool) {
        let mut set = self.fail_read_blocks.lock();
        if fail {
            set.insert(block);
        } else {
            set.remove(&block);
        }
    }

    pub fn set_forbidden(&self, block: u64, forbidden: bool) {
        let mut set = self.forbidden.lock();
        if forbidden {
            set.insert(block);
        } else {
            set.remove(&block);
        }
    }

    /// Writes that touched a forbidden block.
    pub fn violations(&self) -> Vec<u64> {
        self.violations.lock().clone()
    }

    fn injected(what: &str, block: u64) -> EngineError {
        EngineError::Invalid(format!("injected {what} failure at block {block}"))
    }
}

impl BlockStore for MemStore {
    fn block_size(&self) -> usize {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.blocks.lock().len() as u64
    }

    fn read_block(&self, block: u64, buf: &mut [u8], expect_gen: Option<u64>) -> EngineResult<()> {
        assert_eq!(buf.len(), self.block_size);
        self.read_gate.pass(block);
        self.expect_gens.lock().push((block, expect_gen));
        self.reads.fetch_add(1, SeqCst);
        *self.read_counts.lock().entry(block).or_default() += 1;
        if self.fail_read_blocks.lock().contains(&block) {
            return Err(Self::injected("read", block));
        }
        buf.copy_from_slice(&self.blocks.lock()[block as usize]);
        Ok(())
    }

    fn write_run(&self, first: u64, data: &mut [u8]) -> EngineResult<()> {
        assert!(!data.is_empty() && data.len() % self.block_size == 0);
        let count = (data.len() / self.block_size) as u64;
        self.write_gate.pass(first);
        self.runs.lock().push((first, count));
        {
            let forbidden = self.forbidden.lock();
            let mut violations = self.violations.lock();
            violations.extend((first..first + count).filter(|b| forbidden.contains(b)));
        }
        if self.fail_all_writes.load(SeqCst) {
            return Err(Self::injected("write", first));
        }
        let failing = self.fail_write_blocks.lock();
        if let Some(bad) = (first..first + count).find(|b| failing.contains(b)) {
            return Err(Self::injected("write", bad));
        }
        drop(failing);
        let mut blocks = self.blocks.lock();
        for (i, chunk) in data.chunks(self.block_size).enumerate() {
            blocks[(first + i as u64) as usize].copy_from_slice(chunk);
        }
        drop(blocks);
        // "Seal" the caller's copy: bufio must not care.
        data.fill(0xA5);
        Ok(())
    }

    fn flush(&self) -> EngineResult<()> {
        self.flushes.fetch_add(1, SeqCst);
        let blocks = self.blocks.lock().clone();
        *self.stable.lock() = blocks;
        Ok(())
    }

    fn discard(&self, first: u64, count: u64) -> EngineResult<()> {
        self.discards.lock().push((first, count));
        let mut blocks = self.blocks.lock();
        for block in first..first + count {
            blocks[block as usize].fill(0);
        }
        Ok(())
    }
}

/// A block's worth of `byte`.
pub fn filled(block_size: usize, byte: u8) -> Vec<u8> {
    vec![byte; block_size]
}
