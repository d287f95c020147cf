//! bufio: the metadata block cache, after dm-bufio (placeholder: being built).
//!
//! Contract fixed here so the layers above can be written against it:
//!
//! * [`BlockStore`] is what bufio sits on (the integrity layer's metadata
//!   path implements it: tags are sealed on write and verified on read).
//! * [`Bufio`] hands out [`BufHandle`]s: holding a handle holds the buffer
//!   (it is never evicted while held); dropping it releases.

use crate::error::EngineResult;

/// The storage bufio reads and writes whole blocks on.
pub trait BlockStore: Send + Sync {
    /// Bytes per block.
    fn block_size(&self) -> usize;
    /// Number of addressable blocks.
    fn num_blocks(&self) -> u64;
    /// Read one block into `buf`, verified. `expect_gen` is the generation
    /// the caller's parent structure recorded, if any (catches lost writes).
    fn read_block(&self, block: u64, buf: &mut [u8], expect_gen: Option<u64>) -> EngineResult<()>;
    /// Write a run of adjacent blocks starting at `first`; `data.len()` is a
    /// multiple of the block size. The store may modify `data` (to seal
    /// tags into it).
    fn write_run(&self, first: u64, data: &mut [u8]) -> EngineResult<()>;
    /// Barrier: every write returned before this call is durable after it.
    fn flush(&self) -> EngineResult<()>;
    /// The blocks' contents are no longer needed.
    fn discard(&self, first: u64, count: u64) -> EngineResult<()>;
}
