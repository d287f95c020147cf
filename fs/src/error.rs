//! Errors of the filesystem core.
//!
//! Every operation of the fs core returns an [`FsError`]: POSIX-meaningful
//! conditions by name (the FUSE adapter maps them to errno once, at its
//! boundary), engine errors carried up unchanged, and corruption with a
//! sentence saying what is wrong and where. Nothing here speaks errno.

use crate::format::FormatError;
use keelfs_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("no space left on device")]
    NoSpace,
    #[error("file name too long")]
    NameTooLong,
    #[error("too many links")]
    TooManyLinks,
    #[error("cross-device link")]
    CrossDevice,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("operation not permitted")]
    NotPermitted,
    #[error("permission denied")]
    AccessDenied,
    #[error("no such attribute")]
    NoAttr,
    #[error("result does not fit the buffer")]
    Range,
    #[error("file too large")]
    TooBig,
    /// An extended attribute value over 64 KiB (E2BIG).
    #[error("attribute value too large")]
    ValueTooLarge,
    #[error("read-only filesystem")]
    ReadOnly,
    #[error("operation not supported")]
    NotSupported,
    #[error("stale file handle")]
    Stale,
    #[error("no data or hole past the offset")]
    NoSuchOffset,
    #[error("device or resource busy")]
    Busy,
    #[error("inappropriate ioctl for this file")]
    NoIoctl,
    #[error("filesystem is corrupt: {0}")]
    Corrupt(String),
    #[error("on-disk structure: {0}")]
    Format(#[from] FormatError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A device cannot be used as a leg of the set (mkfs, mount, fsck).
    #[error(transparent)]
    DeviceSet(#[from] crate::devset::DevSetError),
}

impl From<keelfs_engine::DeviceError> for FsError {
    fn from(e: keelfs_engine::DeviceError) -> Self {
        FsError::Engine(EngineError::Device(e))
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// Shorthand for a corruption error with a formatted message.
#[allow(unused_macros)]
macro_rules! corrupt {
    ($($arg:tt)*) => { $crate::error::FsError::Corrupt(format!($($arg)*)) };
}
#[allow(unused_imports)]
pub(crate) use corrupt;
