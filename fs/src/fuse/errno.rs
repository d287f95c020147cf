//! The one place where a filesystem error becomes an errno.
//!
//! Promises: [`errno_of`] maps every [`FsError`] to the errno a Linux
//! filesystem would return for the same condition (table below); [`reply_errno`]
//! is what the FUSE adapter calls for every failed request: it maps, and
//! logs every EIO and EUCLEAN with the operation and the inode (the
//! administrator's trail to a failing leg or a corrupt block), everything
//! else at debug level only (ENOENT and friends are normal traffic).
//!
//! | FsError | errno |
//! |---|---|
//! | NotFound | ENOENT |
//! | Exists | EEXIST |
//! | NotDir | ENOTDIR |
//! | IsDir | EISDIR |
//! | NotEmpty | ENOTEMPTY |
//! | NoSpace | ENOSPC |
//! | NameTooLong | ENAMETOOLONG |
//! | TooManyLinks | EMLINK |
//! | CrossDevice | EXDEV |
//! | Invalid | EINVAL |
//! | NotPermitted | EPERM |
//! | AccessDenied | EACCES |
//! | NoAttr | ENODATA |
//! | Range | ERANGE |
//! | TooBig | EFBIG |
//! | ValueTooLarge | E2BIG |
//! | ReadOnly | EROFS |
//! | NotSupported | EOPNOTSUPP |
//! | Stale | ESTALE |
//! | NoSuchOffset | ENXIO |
//! | Busy | EBUSY |
//! | NoIoctl | ENOTTY |
//! | Corrupt, Format | EUCLEAN ("Structure needs cleaning", what ext4 and xfs return as EFSCORRUPTED) |
//! | Engine(Invalid) | EINVAL |
//! | Engine(anything else: NoGoodCopy, Device, WriteFailed, FlushFailed, NoLegs, Unwritten), DeviceSet | EIO |
//!
//! Relies on nothing but the error types.

use crate::error::FsError;
use fuser::Errno;
use keelfs_engine::EngineError;

/// The errno for `err` (see the module table).
pub fn errno_of(err: &FsError) -> Errno {
    let code = match err {
        FsError::NotFound => libc::ENOENT,
        FsError::Exists => libc::EEXIST,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::NoSpace => libc::ENOSPC,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::TooManyLinks => libc::EMLINK,
        FsError::CrossDevice => libc::EXDEV,
        FsError::Invalid(_) => libc::EINVAL,
        FsError::NotPermitted => libc::EPERM,
        FsError::AccessDenied => libc::EACCES,
        FsError::NoAttr => libc::ENODATA,
        FsError::Range => libc::ERANGE,
        FsError::TooBig => libc::EFBIG,
        FsError::ValueTooLarge => libc::E2BIG,
        FsError::ReadOnly => libc::EROFS,
        FsError::NotSupported => libc::EOPNOTSUPP,
        FsError::Stale => libc::ESTALE,
        FsError::NoSuchOffset => libc::ENXIO,
        FsError::Busy => libc::EBUSY,
        FsError::NoIoctl => libc::ENOTTY,
        FsError::Corrupt(_) | FsError::Format(_) => libc::EUCLEAN,
        FsError::Engine(EngineError::Invalid(_)) => libc::EINVAL,
        FsError::Engine(_) | FsError::DeviceSet(_) => libc::EIO,
    };
    Errno::from_i32(code)
}

/// The errno to answer a failed `op` on inode `ino` with; logs the I/O and
/// corruption errors (see the module docs).
pub fn reply_errno(op: &str, ino: u64, err: &FsError) -> Errno {
    let errno = errno_of(err);
    let code = i32::from(errno);
    if code == libc::EIO || code == libc::EUCLEAN {
        log::error!("{op} on inode {ino}: {err} (answered {})", errno_name(code));
    } else {
        log::debug!("{op} on inode {ino}: {err}");
    }
    errno
}

fn errno_name(code: i32) -> &'static str {
    match code {
        libc::EIO => "EIO",
        libc::EUCLEAN => "EUCLEAN",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{FormatError, Structure};
    use keelfs_engine::DeviceError;

    #[test]
    fn every_condition_has_its_errno() {
        let io = || std::io::Error::other("boom");
        let cases: Vec<(FsError, i32)> = vec![
            (FsError::NotFound, libc::ENOENT),
            (FsError::Exists, libc::EEXIST),
            (FsError::NotDir, libc::ENOTDIR),
            (FsError::IsDir, libc::EISDIR),
            (FsError::NotEmpty, libc::ENOTEMPTY),
            (FsError::NoSpace, libc::ENOSPC),
            (FsError::NameTooLong, libc::ENAMETOOLONG),
            (FsError::TooManyLinks, libc::EMLINK),
            (FsError::CrossDevice, libc::EXDEV),
            (FsError::Invalid("x".into()), libc::EINVAL),
            (FsError::NotPermitted, libc::EPERM),
            (FsError::AccessDenied, libc::EACCES),
            (FsError::NoAttr, libc::ENODATA),
            (FsError::Range, libc::ERANGE),
            (FsError::TooBig, libc::EFBIG),
            (FsError::ValueTooLarge, libc::E2BIG),
            (FsError::ReadOnly, libc::EROFS),
            (FsError::NotSupported, libc::EOPNOTSUPP),
            (FsError::Stale, libc::ESTALE),
            (FsError::NoSuchOffset, libc::ENXIO),
            (FsError::Busy, libc::EBUSY),
            (FsError::NoIoctl, libc::ENOTTY),
            (FsError::Corrupt("bad".into()), libc::EUCLEAN),
            (
                FsError::Format(FormatError::Truncated {
                    structure: Structure::Inode,
                    need: 256,
                    have: 3,
                }),
                libc::EUCLEAN,
            ),
            (
                FsError::Engine(EngineError::NoGoodCopy {
                    block: 7,
                    legs: 2,
                    detail: "tags".into(),
                }),
                libc::EIO,
            ),
            (
                FsError::Engine(EngineError::Device(DeviceError::Io {
                    device: "a.img".into(),
                    op: "read",
                    offset: 0,
                    source: io(),
                })),
                libc::EIO,
            ),
            (FsError::Engine(EngineError::NoLegs), libc::EIO),
            (FsError::Engine(EngineError::FlushFailed), libc::EIO),
            (
                FsError::Engine(EngineError::WriteFailed { block: 1 }),
                libc::EIO,
            ),
            (
                FsError::Engine(EngineError::Unwritten { block: 1 }),
                libc::EIO,
            ),
            (
                FsError::Engine(EngineError::Invalid("len".into())),
                libc::EINVAL,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(i32::from(errno_of(&err)), want, "{err:?}");
            assert_eq!(i32::from(reply_errno("test", 1, &err)), want, "{err:?}");
        }
    }
}
