//! Reading and creating metadata blocks through the cache, with the checks
//! every user of a metadata block needs.
//!
//! What it promises:
//!
//! * [`read_meta`] holds a block of a known [`BlockKind`] (optionally of an
//!   expected generation, for blocks whose parent records one) and refuses a
//!   block of another kind with [`FsError::Corrupt`]: the engine checks
//!   magic, crc, address and uuid, this checks what the block is *for*;
//! * [`init_meta`] hands out a block that was never written (or was just
//!   allocated) as a zeroed buffer of the given kind, declared to the
//!   transaction, so the caller only fills the payload.
//!
//! What it relies on: bufio (`read`, `read_expect`, `new_buf`) and the
//! journal's [`TxHandle::write`], which sets the header generation on drop.
//! Lock order: these take one buffer's data lock at a time and release it
//! before returning (except the guard [`init_meta`] returns).

use crate::error::{FsError, FsResult};
use crate::format::header::{self, BlockKind};
use crate::journal::{TxHandle, TxWrite};
use keelfs_engine::bufio::{BufHandle, Bufio};

/// Holds metadata block `block`, which must be of `kind` (and, when given,
/// of generation `expect_gen`).
pub fn read_meta(
    cache: &Bufio,
    block: u64,
    kind: BlockKind,
    expect_gen: Option<u64>,
) -> FsResult<BufHandle<'_>> {
    let buf = match expect_gen {
        Some(gen) => cache.read_expect(block, gen)?,
        None => cache.read(block)?,
    };
    check_kind(&buf, kind)?;
    Ok(buf)
}

/// Fails unless the held block's header records `kind`.
pub fn check_kind(buf: &BufHandle<'_>, kind: BlockKind) -> FsResult<()> {
    let data = buf.data();
    match header::block_kind(&data) {
        Ok(k) if k == kind => Ok(()),
        Ok(k) => Err(FsError::Corrupt(format!(
            "block {} is a {k:?} block where a {kind:?} block was expected",
            buf.block()
        ))),
        Err(e) => Err(FsError::Corrupt(format!("block {}: {e}", buf.block()))),
    }
}

/// A new metadata block `block` of `kind` with a zero payload, held and
/// declared to `tx` (the caller has just allocated it, or it was never
/// written). Returns the handle; write the payload with `tx.write`.
pub fn init_meta<'c>(
    cache: &'c Bufio,
    tx: &TxHandle<'_>,
    block: u64,
    kind: BlockKind,
) -> FsResult<BufHandle<'c>> {
    let buf = cache.new_buf(block)?;
    {
        let mut w = tx.write(&buf);
        set_kind(&mut w, kind)?;
    }
    Ok(buf)
}

/// Records `kind` in the header of a block being written.
pub fn set_kind(w: &mut TxWrite<'_>, kind: BlockKind) -> FsResult<()> {
    header::set_block_kind(w, kind)?;
    Ok(())
}

/// The payload of a whole block.
pub fn payload(block: &[u8]) -> &[u8] {
    &block[crate::format::META_HEADER_LEN.min(block.len())..]
}

/// The payload of a whole block, writable.
pub fn payload_mut(block: &mut [u8]) -> &mut [u8] {
    let at = crate::format::META_HEADER_LEN.min(block.len());
    &mut block[at..]
}

/// The header generation of a held block.
pub fn generation(buf: &BufHandle<'_>) -> u64 {
    header::block_generation(&buf.data()).unwrap_or(0)
}
