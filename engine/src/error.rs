//! Typed errors of the engine's layers.
//!
//! `DeviceError` is what one device says; `EngineError` is what the mirror,
//! integrity and bufio layers say about a request as a whole. The FUSE
//! adapter converts them to errno once, at its boundary; nothing below it
//! speaks errno.

use std::io;

/// An error from one device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{device}: {op} at byte {offset}: {source}")]
    Io {
        device: String,
        op: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{device}: access of {len} bytes at byte {offset} is beyond the end ({size} bytes)")]
    OutOfRange {
        device: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("{device}: access of {len} bytes at byte {offset} is not {align}-byte aligned")]
    Misaligned {
        device: String,
        offset: u64,
        len: u64,
        align: u64,
    },
    #[error("{device}: injected {op} fault at byte {offset}")]
    Injected {
        device: String,
        op: &'static str,
        offset: u64,
    },
    #[error("{device}: cannot open: {source}")]
    Open {
        device: String,
        #[source]
        source: io::Error,
    },
}

/// An error from a request to the engine (mirror, integrity or bufio layer).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A device failed and no other leg could serve the request.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Every leg was tried and none held a copy whose tag matched.
    /// Never accompanied by data: the caller gets this, not wrong bytes.
    #[error("block {block}: no good copy on any of {legs} legs ({detail})")]
    NoGoodCopy {
        block: u64,
        legs: usize,
        detail: String,
    },
    /// Every leg holds zeroes where a metadata block was expected: the block
    /// was never written (mkfs leaves large tables zeroed and the fs
    /// initialises them on first use). Not counted as corruption.
    #[error("block {block}: never written")]
    Unwritten { block: u64 },
    /// A write reached no leg at all.
    #[error("block {block}: write failed on every leg")]
    WriteFailed { block: u64 },
    /// A flush failed on every leg.
    #[error("flush failed on every leg")]
    FlushFailed,
    /// No leg of the mirror set is in service.
    #[error("no leg of the mirror set is in service")]
    NoLegs,
    /// The request itself is malformed (length, range, alignment).
    #[error("invalid request: {0}")]
    Invalid(String),
}

pub type DeviceResult<T> = Result<T, DeviceError>;
pub type EngineResult<T> = Result<T, EngineError>;
