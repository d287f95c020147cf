//! An inode's extended attributes: one blob (docs/format.md §9) stored in a
//! chain of xattr blocks (kind 12), whose first block and generation the
//! inode holds (`Inode::xattr`).
//!
//! What it promises:
//! * [`get`], [`list`] read the chain; [`set`], [`remove`] rewrite it in the
//!   caller's transaction and change the `Option<BlockRef>` they are given
//!   in memory — **the caller stores the inode afterwards**, and adjusts its
//!   "blocks held" by [`MetaTx::blocks_delta`]. A chain left with no
//!   attribute is freed (the reference becomes `None`).
//! * Each chain block records the next one's generation, so a rewrite
//!   changes every block before the last one that changed. A rewrite reuses
//!   the chain's blocks in order, allocates more or frees the surplus, and
//!   skips the blocks at the end whose bytes (next pointer included) stay
//!   the same.
//! * Names and values follow Linux: names are full names with a namespace
//!   prefix ("user.", "trusted.", "security.", "system."; the ACL names
//!   "system.posix_acl_access"/"_default" are stored verbatim, values
//!   untouched). Errors: an empty name `Range` (ERANGE), a name over 255
//!   bytes `NameTooLong`, a prefix alone ("user.") or a NUL `Invalid`, an
//!   unknown prefix `NotSupported` (EOPNOTSUPP), a value over 65536 bytes
//!   `ValueTooLarge` (E2BIG), a missing attribute `NoAttr` (ENODATA),
//!   create-only over an existing one `Exists`, and a blob that would grow
//!   past [`XATTR_BLOB_MAX`] `NoSpace` (ENOSPC, as ext4 when its xattr
//!   space is full). The kernel checks name length and value size before a
//!   FUSE request is made; the checks here are for every other caller.
//! * A chain read from disk is checked block by block (kind, generation,
//!   format) and bounded: more blocks than a maximal blob needs, or a loop,
//!   is `Corrupt`, never a hang.
//!
//! Relies on: the caller holding the inode's lock (exclusive to change,
//! shared to read) and the journal handle taken before it.

use crate::error::{corrupt, FsError, FsResult};
use crate::format::xattr::{
    block_blob_capacity, decode_blob, decode_xattr_block, encode_blob, encode_xattr_block,
    split_blob, split_name, XATTR_NAME_MAX, XATTR_VALUE_MAX,
};
use crate::format::{BlockKind, BlockRef, Xattr, XattrNamespace};
use crate::meta_tx::{read_block, MetaTx};
use keelfs_engine::bufio::Bufio;
use std::collections::HashSet;

/// Largest blob (all of one inode's attributes, 6 bytes of header each)
/// this code writes: room for a few maximal values. Reading accepts up to
/// [`XATTR_BLOB_READ_MAX`].
pub const XATTR_BLOB_MAX: usize = 256 * 1024;
/// Largest blob read back before the chain is called corrupt.
pub const XATTR_BLOB_READ_MAX: usize = 16 * 1024 * 1024;

/// What [`set`] may do (setxattr's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// Create or replace (flags 0).
    Upsert,
    /// Fail with `Exists` if the attribute is there (`XATTR_CREATE`).
    CreateOnly,
    /// Fail with `NoAttr` if it is not (`XATTR_REPLACE`).
    ReplaceOnly,
}

impl SetMode {
    /// From setxattr flags: `XATTR_CREATE` = 1, `XATTR_REPLACE` = 2; both
    /// or any other bit is `Invalid`.
    pub fn from_flags(flags: u32) -> FsResult<SetMode> {
        match flags {
            0 => Ok(SetMode::Upsert),
            1 => Ok(SetMode::CreateOnly),
            2 => Ok(SetMode::ReplaceOnly),
            other => Err(FsError::Invalid(format!("setxattr flags {other:#x}"))),
        }
    }
}

/// The namespace and stored name of a full attribute name, with the
/// errors of the module doc.
pub fn parse_name(full: &[u8]) -> FsResult<(XattrNamespace, &[u8])> {
    if full.is_empty() {
        return Err(FsError::Range);
    }
    if full.len() > XATTR_NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if full.contains(&0) {
        return Err(FsError::Invalid("attribute name contains NUL".into()));
    }
    split_name(full).map_err(|_| {
        let known = XattrNamespace::ALL
            .iter()
            .any(|ns| full.starts_with(ns.prefix()));
        if known {
            FsError::Invalid(format!(
                "attribute name {:?} has nothing after its prefix",
                String::from_utf8_lossy(full)
            ))
        } else {
            FsError::NotSupported
        }
    })
}

/// Every attribute of the chain starting at `chain`, in stored order.
pub fn read_all(cache: &Bufio, chain: Option<BlockRef>) -> FsResult<Vec<Xattr>> {
    let (_, blob) = read_chain(cache, chain)?;
    Ok(decode_blob(&blob)?)
}

/// The value of attribute `name`; `NoAttr` if there is none.
pub fn get(cache: &Bufio, chain: Option<BlockRef>, name: &[u8]) -> FsResult<Vec<u8>> {
    let (namespace, stored) = parse_name(name)?;
    read_all(cache, chain)?
        .into_iter()
        .find(|x| x.namespace == namespace && x.name == stored)
        .map(|x| x.value)
        .ok_or(FsError::NoAttr)
}

/// The full names of every attribute, in stored order.
pub fn list(cache: &Bufio, chain: Option<BlockRef>) -> FsResult<Vec<Vec<u8>>> {
    Ok(read_all(cache, chain)?
        .iter()
        .map(Xattr::full_name)
        .collect())
}

/// Sets attribute `name` to `value` as `mode` allows. A new attribute goes
/// at the end of the blob; a replaced one keeps its place.
pub fn set(
    mt: &MetaTx<'_, '_>,
    chain: &mut Option<BlockRef>,
    name: &[u8],
    value: &[u8],
    mode: SetMode,
) -> FsResult<()> {
    let (namespace, stored) = parse_name(name)?;
    if value.len() > XATTR_VALUE_MAX {
        return Err(FsError::ValueTooLarge);
    }
    let (blocks, blob) = read_chain(mt.cache, *chain)?;
    let mut xattrs = decode_blob(&blob)?;
    let existing = xattrs
        .iter_mut()
        .find(|x| x.namespace == namespace && x.name == stored);
    match (existing, mode) {
        (Some(_), SetMode::CreateOnly) => return Err(FsError::Exists),
        (None, SetMode::ReplaceOnly) => return Err(FsError::NoAttr),
        (Some(x), _) => x.value = value.to_vec(),
        (None, _) => xattrs.push(Xattr {
            namespace,
            name: stored.to_vec(),
            value: value.to_vec(),
        }),
    }
    let new_blob = encode_blob(&xattrs)?;
    if new_blob.len() > XATTR_BLOB_MAX && new_blob.len() > blob.len() {
        return Err(FsError::NoSpace);
    }
    write_chain(mt, chain, &blocks, &new_blob)
}

/// Removes attribute `name`; `NoAttr` if there is none. Frees the chain
/// when it was the last one.
pub fn remove(mt: &MetaTx<'_, '_>, chain: &mut Option<BlockRef>, name: &[u8]) -> FsResult<()> {
    let (namespace, stored) = parse_name(name)?;
    let (blocks, blob) = read_chain(mt.cache, *chain)?;
    let mut xattrs = decode_blob(&blob)?;
    let before = xattrs.len();
    xattrs.retain(|x| !(x.namespace == namespace && x.name == stored));
    if xattrs.len() == before {
        return Err(FsError::NoAttr);
    }
    write_chain(mt, chain, &blocks, &encode_blob(&xattrs)?)
}

/// Frees the whole chain (the inode is being deleted).
pub fn destroy(mt: &MetaTx<'_, '_>, chain: &mut Option<BlockRef>) -> FsResult<()> {
    let (blocks, _) = read_chain(mt.cache, *chain)?;
    write_chain(mt, chain, &blocks, &[])
}

/// One block of a chain as read: where it is and its payload.
struct ChainBlock {
    at: BlockRef,
    payload: Vec<u8>,
}

/// Reads the chain from `chain`: its blocks in order and the joined blob.
fn read_chain(cache: &Bufio, chain: Option<BlockRef>) -> FsResult<(Vec<ChainBlock>, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut blob = Vec::new();
    let mut seen = HashSet::new();
    let mut next = chain;
    while let Some(at) = next {
        if !seen.insert(at.block) {
            return Err(corrupt!("xattr chain loops back to block {}", at.block));
        }
        let payload = read_block(cache, at, BlockKind::Xattr)?;
        let (following, piece) = decode_xattr_block(&payload)?;
        if blob.len() + piece.len() > XATTR_BLOB_READ_MAX {
            return Err(corrupt!(
                "xattr chain from block {} holds more than {XATTR_BLOB_READ_MAX} bytes",
                chain.map_or(0, |c| c.block)
            ));
        }
        blob.extend_from_slice(piece);
        next = following;
        blocks.push(ChainBlock { at, payload });
    }
    Ok((blocks, blob))
}

/// Stores `blob` in a chain reusing `old` blocks in order, allocating or
/// freeing the difference, and points `chain` at its first block (`None`
/// for an empty blob).
fn write_chain(
    mt: &MetaTx<'_, '_>,
    chain: &mut Option<BlockRef>,
    old: &[ChainBlock],
    blob: &[u8],
) -> FsResult<()> {
    let p = mt.payload_len();
    if block_blob_capacity(p) == 0 {
        return Err(FsError::Invalid(format!(
            "blocks of {p} payload bytes hold no xattr"
        )));
    }
    let pieces: Vec<&[u8]> = if blob.is_empty() {
        Vec::new()
    } else {
        split_blob(blob, p).collect()
    };
    // Where each piece goes: the old blocks in order, then new ones, all
    // allocated before anything is written (all or none).
    let goal = old.last().map_or(0, |b| b.at.block);
    mt.reserve(pieces.len().saturating_sub(old.len()), goal)?;
    let mut homes: Vec<(u64, Option<&ChainBlock>)> = Vec::with_capacity(pieces.len());
    for i in 0..pieces.len() {
        match old.get(i) {
            Some(b) => homes.push((b.at.block, Some(b))),
            None => homes.push((mt.alloc_block(goal)?, None)),
        }
    }
    // Last block first: each block records the next one's reference.
    let mut next: Option<BlockRef> = None;
    let mut payload = vec![0u8; p];
    for (piece, (block, previous)) in pieces.iter().zip(&homes).rev() {
        encode_xattr_block(next, piece, &mut payload)?;
        next = Some(match previous {
            Some(b) if b.payload == payload => b.at,
            Some(b) => mt.write(*block, Some(b.at.generation), BlockKind::Xattr, &payload)?,
            None => mt.write(*block, None, BlockKind::Xattr, &payload)?,
        });
    }
    for b in old.iter().skip(pieces.len()) {
        mt.free_block(b.at.block)?;
    }
    *chain = next;
    Ok(())
}
