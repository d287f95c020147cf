//! Model-based property test of bufio: random operation sequences against
//! a model (each block's logical content, the test's handles and pins),
//! with a cache of 4 blocks over 12 so that eviction and reclaim writeback
//! happen all the time. Checked after every step: bytes read back, hold
//! counts, pinned set, `get` never handing out unloaded data, the memory
//! bound after allocations, and that no pinned block is ever written.

mod bufio_support;

use bufio_support::MemStore;
use keelfs_engine::bufio::{BufHandle, Bufio, BufioConfig};
use keelfs_engine::error::EngineError;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

const BS: usize = 32;
const BLOCKS: u64 = 12;
const LIMIT: u64 = 4;
const MAX_HANDLES: usize = 6;
const PARTIAL: std::ops::Range<usize> = 4..12;

#[derive(Debug, Clone)]
enum Op {
    Read(u64),
    NewBuf(u64),
    Get(u64),
    Write {
        handle: usize,
        byte: u8,
        partial: bool,
    },
    Release(usize),
    Pin(usize),
    Unpin(usize),
    WriteDirtySync,
    WriteDirtyAsync,
    Flush,
    Forget(u64),
    Discard(u64, u64),
    ReleaseMove(usize, u64),
    FailWrites(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let block = 0..BLOCKS;
    let handle = 0..MAX_HANDLES;
    prop_oneof![
        6 => block.clone().prop_map(Op::Read),
        2 => block.clone().prop_map(Op::NewBuf),
        2 => block.clone().prop_map(Op::Get),
        6 => (handle.clone(), any::<u8>(), any::<bool>())
            .prop_map(|(handle, byte, partial)| Op::Write { handle, byte, partial }),
        5 => handle.clone().prop_map(Op::Release),
        2 => handle.clone().prop_map(Op::Pin),
        2 => handle.clone().prop_map(Op::Unpin),
        1 => Just(Op::WriteDirtySync),
        1 => Just(Op::WriteDirtyAsync),
        1 => Just(Op::Flush),
        1 => block.clone().prop_map(Op::Forget),
        1 => (block.clone(), 1..4u64).prop_map(|(b, n)| Op::Discard(b, n)),
        2 => (handle, block).prop_map(|(h, b)| Op::ReleaseMove(h, b)),
        1 => any::<bool>().prop_map(Op::FailWrites),
    ]
}

struct Model {
    /// What every block must read back as.
    logical: Vec<Vec<u8>>,
    /// Block of each of the test's handles (parallel to the handle vector).
    handle_blocks: Vec<u64>,
    pins: HashMap<u64, u32>,
    failing: bool,
}

impl Model {
    fn holders(&self, block: u64) -> u32 {
        self.handle_blocks.iter().filter(|&&b| b == block).count() as u32
    }

    fn pinned(&self, block: u64) -> bool {
        self.pins.get(&block).is_some_and(|&n| n > 0)
    }

    fn unevictable(&self) -> u64 {
        let set: BTreeSet<u64> = self
            .handle_blocks
            .iter()
            .copied()
            .chain(self.pins.iter().filter(|(_, &n)| n > 0).map(|(&b, _)| b))
            .collect();
        set.len() as u64
    }
}

fn initial(block: u64) -> Vec<u8> {
    (0..BS)
        .map(|i| (block as u8).wrapping_mul(31) ^ i as u8)
        .collect()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = Arc::new(MemStore::new(BS, BLOCKS));
    for block in 0..BLOCKS {
        store.put(block, &initial(block));
    }
    let bufio = Bufio::new(
        store.clone(),
        BufioConfig {
            memory_limit_bytes: LIMIT * BS as u64,
            resident_min_bytes: 0,
            dirty_ratio: 2,
            max_age: Duration::from_secs(3600),
            writeback_batch: 3,
            background_tick: None,
        },
    )
    .unwrap();
    let mut model = Model {
        logical: (0..BLOCKS).map(initial).collect(),
        handle_blocks: Vec::new(),
        pins: HashMap::new(),
        failing: false,
    };
    let mut handles: Vec<BufHandle<'_>> = Vec::new();

    for (step, op) in ops.into_iter().enumerate() {
        // Whether this step added a buffer (a miss): the memory policy acts
        // on allocation, so the bound is checked then.
        let mut allocated = false;
        let before = bufio.stats();
        match op {
            Op::Read(block) => {
                if handles.len() < MAX_HANDLES {
                    let handle = bufio.read(block).unwrap();
                    prop_assert_eq!(
                        &*handle.data(),
                        &model.logical[block as usize][..],
                        "step {} read {}",
                        step,
                        block
                    );
                    handles.push(handle);
                    model.handle_blocks.push(block);
                    allocated = bufio.stats().misses > before.misses;
                }
            }
            Op::NewBuf(block) => {
                if handles.len() < MAX_HANDLES {
                    let handle = bufio.new_buf(block).unwrap();
                    prop_assert!(handle.data().iter().all(|&b| b == 0));
                    handle.mark_dirty();
                    model.logical[block as usize] = vec![0; BS];
                    handles.push(handle);
                    model.handle_blocks.push(block);
                    allocated = bufio.stats().hits == before.hits;
                }
            }
            Op::Get(block) => match bufio.get(block) {
                Some(handle) => {
                    prop_assert_eq!(
                        &*handle.data(),
                        &model.logical[block as usize][..],
                        "step {} get {}",
                        step,
                        block
                    );
                    if handles.len() < MAX_HANDLES {
                        handles.push(handle);
                        model.handle_blocks.push(block);
                    }
                }
                None => {
                    prop_assert!(
                        model.holders(block) == 0 && !model.pinned(block),
                        "step {}: get({}) missed a held or pinned block",
                        step,
                        block
                    );
                }
            },
            Op::Write {
                handle,
                byte,
                partial,
            } => {
                if !handles.is_empty() {
                    let i = handle % handles.len();
                    let block = model.handle_blocks[i] as usize;
                    let h = &handles[i];
                    if partial {
                        h.data_mut()[PARTIAL].fill(byte);
                        h.mark_partial_dirty(PARTIAL.start, PARTIAL.end).unwrap();
                        model.logical[block][PARTIAL].fill(byte);
                    } else {
                        h.data_mut().fill(byte);
                        h.mark_dirty();
                        model.logical[block].fill(byte);
                    }
                }
            }
            Op::Release(handle) => {
                if !handles.is_empty() {
                    let i = handle % handles.len();
                    drop(handles.remove(i));
                    model.handle_blocks.remove(i);
                }
            }
            Op::Pin(handle) => {
                if !handles.is_empty() {
                    let i = handle % handles.len();
                    handles[i].pin();
                    let block = model.handle_blocks[i];
                    *model.pins.entry(block).or_default() += 1;
                    store.set_forbidden(block, true);
                }
            }
            Op::Unpin(handle) => {
                if !handles.is_empty() {
                    let i = handle % handles.len();
                    let block = model.handle_blocks[i];
                    let result = handles[i].unpin();
                    if model.pinned(block) {
                        result.unwrap();
                        let count = model.pins.get_mut(&block).unwrap();
                        *count -= 1;
                        if *count == 0 {
                            store.set_forbidden(block, false);
                        }
                    } else {
                        prop_assert!(matches!(result, Err(EngineError::Invalid(_))));
                    }
                }
            }
            Op::WriteDirtySync | Op::Flush => {
                let flush = matches!(op, Op::Flush);
                let result = if flush {
                    bufio.flush()
                } else {
                    bufio.write_dirty_sync()
                };
                if !model.failing {
                    result.unwrap();
                    for block in (0..BLOCKS).filter(|&b| !model.pinned(b)) {
                        prop_assert_eq!(
                            &store.content(block),
                            &model.logical[block as usize],
                            "step {} block {} not written",
                            step,
                            block
                        );
                        if flush {
                            prop_assert_eq!(
                                &store.stable_content(block),
                                &model.logical[block as usize]
                            );
                        }
                    }
                }
            }
            Op::WriteDirtyAsync => bufio.write_dirty_async(),
            Op::Forget(block) => {
                let dropped = bufio.forget(block);
                if model.holders(block) > 0 || model.pinned(block) {
                    prop_assert!(
                        !dropped,
                        "step {}: forgot held or pinned block {}",
                        step,
                        block
                    );
                }
                if dropped {
                    model.logical[block as usize] = store.content(block);
                }
                prop_assert!(!bufio.is_cached(block) || !dropped);
            }
            Op::Discard(block, count) => {
                let end = (block + count).min(BLOCKS);
                let busy = (block..end).any(|b| model.holders(b) > 0 || model.pinned(b));
                if !busy {
                    bufio.discard(block, end - block).unwrap();
                    for b in block..end {
                        prop_assert!(!bufio.is_cached(b));
                        model.logical[b as usize] = vec![0; BS];
                    }
                }
            }
            Op::ReleaseMove(handle, new_block) => {
                if !handles.is_empty() {
                    let i = handle % handles.len();
                    let old_block = model.handle_blocks.remove(i);
                    let h = handles.remove(i);
                    let result = bufio.release_move(h, new_block);
                    let refused = new_block != old_block
                        && (model.pinned(old_block)
                            || model.holders(new_block) > 0
                            || model.pinned(new_block));
                    if refused {
                        prop_assert!(
                            matches!(result, Err(EngineError::Invalid(_))),
                            "step {}: {:?}",
                            step,
                            result
                        );
                    } else if model.failing {
                        // The old block's write may fail: then nothing moved.
                        if result.is_ok() {
                            model.logical[new_block as usize] =
                                model.logical[old_block as usize].clone();
                        }
                    } else {
                        result.unwrap();
                        model.logical[new_block as usize] =
                            model.logical[old_block as usize].clone();
                        allocated = new_block != old_block;
                    }
                }
            }
            Op::FailWrites(fail) => {
                store.fail_all_writes.store(fail, SeqCst);
                model.failing = fail;
            }
        }

        // Invariants after every step.
        prop_assert_eq!(
            store.violations(),
            Vec::<u64>::new(),
            "step {}: a pinned block was written",
            step
        );
        for block in 0..BLOCKS {
            let holders = model.holders(block);
            let actual = bufio.hold_count(block);
            if holders > 0 {
                prop_assert_eq!(
                    actual,
                    Some(holders),
                    "step {} hold count of {}",
                    step,
                    block
                );
            } else {
                prop_assert!(
                    actual.unwrap_or(0) == 0,
                    "step {}: {} held {:?}",
                    step,
                    block,
                    actual
                );
            }
            if model.pinned(block) {
                prop_assert!(
                    bufio.is_cached(block),
                    "step {}: pinned {} evicted",
                    step,
                    block
                );
            }
        }
        let pinned: Vec<u64> = (0..BLOCKS).filter(|&b| model.pinned(b)).collect();
        prop_assert_eq!(bufio.pinned_blocks(), pinned.clone());
        let stats = bufio.stats();
        prop_assert_eq!(stats.pinned_buffers, pinned.len() as u64);
        let held: BTreeSet<u64> = model.handle_blocks.iter().copied().collect();
        prop_assert_eq!(stats.held_buffers, held.len() as u64);
        prop_assert!(stats.dirty_buffers <= stats.buffers);
        if allocated && !model.failing {
            let bound = LIMIT.max(model.unevictable()) * BS as u64;
            prop_assert!(
                stats.current_bytes <= bound,
                "step {}: {} bytes > {}",
                step,
                stats.current_bytes,
                bound
            );
        }
    }

    // Release everything, unpin everything, flush: the store is the model.
    drop(handles);
    store.fail_all_writes.store(false, SeqCst);
    for (block, count) in model.pins.clone() {
        for _ in 0..count {
            bufio.unpin_block(block).unwrap();
        }
        store.set_forbidden(block, false);
    }
    bufio.flush().unwrap();
    for block in 0..BLOCKS {
        prop_assert_eq!(
            &store.stable_content(block),
            &model.logical[block as usize],
            "final store block {}",
            block
        );
        let handle = bufio.read(block).unwrap();
        prop_assert_eq!(&*handle.data(), &model.logical[block as usize][..]);
    }
    let stats = bufio.stats();
    prop_assert_eq!(
        (
            stats.dirty_buffers,
            stats.held_buffers,
            stats.pinned_buffers
        ),
        (0, 0, 0)
    );
    prop_assert!(stats.current_bytes <= LIMIT * BS as u64);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn bufio_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
