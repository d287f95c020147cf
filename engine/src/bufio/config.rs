//! Tunables of a bufio cache.

use crate::error::{EngineError, EngineResult};
use std::time::Duration;

/// Tunables of a [`super::Bufio`] cache (see the module doc for the policy).
#[derive(Debug, Clone)]
pub struct BufioConfig {
    /// Cache size: bufio keeps the bytes of all cached buffers under this,
    /// except when every buffer is held, pinned or unwritable.
    pub memory_limit_bytes: u64,
    /// Clean buffers are never aged out below this many cached bytes.
    pub resident_min_bytes: u64,
    /// Background writeback starts when dirty buffers outnumber clean ones
    /// by more than this factor (dm-bufio's `DM_BUFIO_WRITEBACK_RATIO`), or
    /// when the cache is above its high watermark (7/8 of the limit).
    pub dirty_ratio: u32,
    /// Clean unheld buffers not used for this long are freed by the
    /// background thread.
    pub max_age: Duration,
    /// Blocks per writeback batch: background and reclaim writeback write at
    /// most this many buffers at a time, and every writeback copies at most
    /// this many blocks before handing them to the store.
    pub writeback_batch: usize,
    /// Period of the background thread (ageing, watermark checks). `None`:
    /// no background threads at all; `write_dirty_async` and `prefetch`
    /// then do their work in the caller, and nothing ages out (tests use
    /// this for determinism).
    pub background_tick: Option<Duration>,
}

impl Default for BufioConfig {
    fn default() -> Self {
        BufioConfig {
            memory_limit_bytes: 64 << 20,
            resident_min_bytes: 1 << 20,
            dirty_ratio: 3,
            max_age: Duration::from_secs(300),
            writeback_batch: 128,
            background_tick: Some(Duration::from_secs(1)),
        }
    }
}

impl BufioConfig {
    pub(crate) fn validate(&self, block_size: usize) -> EngineResult<()> {
        if block_size == 0 {
            return Err(EngineError::Invalid("bufio: store block size is 0".into()));
        }
        if self.memory_limit_bytes < block_size as u64 {
            return Err(EngineError::Invalid(format!(
                "bufio: memory limit {} is smaller than one block ({block_size})",
                self.memory_limit_bytes
            )));
        }
        if self.writeback_batch == 0 {
            return Err(EngineError::Invalid("bufio: writeback_batch is 0".into()));
        }
        if self.background_tick == Some(Duration::ZERO) {
            return Err(EngineError::Invalid("bufio: background_tick is 0".into()));
        }
        Ok(())
    }
}
