//! The FUSE side of keelfs: mount options, mounting, the daemon and the
//! worker pool. Generic over any `fuser::Filesystem`; the keelfs adapter
//! plugs in through [`daemon::run_main`].
//!
//! * [`options`]: `keelfs SOURCE MOUNTPOINT [-o OPTIONS] [-f]` into a typed
//!   [`MountOptions`] (legs, VFS flags, FUSE and keelfs options, remount).
//! * [`mount`]: mount(2) of type `fuse`/`fuse.SUBTYPE` with our own
//!   `/dev/fuse` descriptor, a [`mount::MountHandle`] that unmounts only our
//!   own mount, `MS_REMOUNT`, `/proc/self/mountinfo`.
//! * [`daemon`]: signals, FUSE_INIT before the fork, daemonizing, the signal
//!   thread, the session loop, exit codes.
//! * [`pool`]: [`WorkerPool`], a bounded-queue thread pool started after the
//!   fork, to which the adapter hands each request with its `Reply*`.
//! * [`adapter`]: [`KeelFs`], the keelfs `fuser::Filesystem` over the fs
//!   core (with `adapter_entry.rs`, `adapter_file.rs`, `adapter_perm.rs`);
//!   [`errno`]: the one mapping of `FsError` to errno; [`status`]: what
//!   `keelfs status` reports and the daemon's status socket; [`memory`]:
//!   the allocator policy that keeps the daemon's memory bounded.
//!
//! The program in a few lines:
//!
//! ```no_run
//! # struct MyFs; impl fuser::Filesystem for MyFs {}
//! use keelfs_fs::fuse::{daemon, Hooks, PoolConfig, ServeConfig, WorkerPool};
//!
//! let code = daemon::run_main(std::env::args_os(), |opts| {
//!     // Open the legs (opts.legs), check the format: errors end the program
//!     // with exit code 32 before anything is mounted. Start no threads here.
//!     let pool = WorkerPool::new(PoolConfig::default());
//!     let fs = MyFs; // holds a clone of `pool`; destroy() calls pool.shutdown()
//!     let hooks = Hooks::default().after_fork(move |_notifier| {
//!         pool.start().map_err(|e| e.to_string())
//!     });
//!     Ok((fs, ServeConfig::default(), hooks))
//! });
//! std::process::exit(code);
//! ```
//!
//! Exit codes (mount(8) helper conventions): [`EXIT_OK`] 0; [`EXIT_USAGE`] 1
//! for a bad command line or option; [`EXIT_SYSTEM`] 2 for a system error
//! (fork, signals, threads) or a session that ended in error;
//! [`EXIT_MOUNT_FAILURE`] 32 when the filesystem could not be mounted or
//! brought up (the number mount(8) itself uses). Every message goes to stderr
//! as `PROGRAM: message`, from [`report`] only.

use std::sync::OnceLock;

pub mod adapter;
mod adapter_entry;
mod adapter_file;
mod adapter_perm;
pub mod add_ctl;
pub mod daemon;
pub mod errno;
pub mod memory;
pub mod mount;
pub mod options;
pub mod pool;
pub mod replace_ctl;
pub mod scrub_ctl;
pub mod status;

pub use adapter::{AdapterConfig, AdapterHandle, KeelFs};
pub use daemon::{run_main, serve, DaemonError, Hooks, ServeConfig};
pub use mount::{MountError, MountHandle};
pub use options::{MountOptions, OptionsError};
pub use pool::{PoolConfig, PoolError, WorkerPool};

/// Success.
pub const EXIT_OK: i32 = 0;
/// Bad command line or mount option.
pub const EXIT_USAGE: i32 = 1;
/// System error: fork, signals, threads, or the session loop failed.
pub const EXIT_SYSTEM: i32 = 2;
/// The filesystem could not be mounted or brought up.
pub const EXIT_MOUNT_FAILURE: i32 = 32;

/// Any failure of the mount program.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Options(#[from] OptionsError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// Building the filesystem (opening and checking the devices) failed.
    #[error("{0}")]
    Filesystem(String),
}

impl Error {
    /// The program's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Options(OptionsError::Cli(e)) if !e.use_stderr() => EXIT_OK,
            Error::Options(_) => EXIT_USAGE,
            Error::Mount(_) | Error::Filesystem(_) => EXIT_MOUNT_FAILURE,
            Error::Daemon(DaemonError::AfterFork(_) | DaemonError::Child(_)) => EXIT_MOUNT_FAILURE,
            Error::Daemon(_) => EXIT_SYSTEM,
        }
    }
}

static PROGRAM: OnceLock<String> = OnceLock::new();

/// The name messages are prefixed with (default `keelfs`).
pub fn program_name() -> &'static str {
    PROGRAM.get().map_or("keelfs", String::as_str)
}

pub(crate) fn set_program_name(name: &str) {
    let _ = PROGRAM.set(name.to_owned());
}

/// Print `err` (clap's help and usage as clap formats them, everything else
/// as `PROGRAM: message` on stderr, which the daemon points at its log) and
/// return its exit code.
pub fn report(err: &Error) -> i32 {
    match err {
        Error::Options(OptionsError::Cli(e)) => {
            let _ = e.print();
        }
        _ => {
            eprintln!("{}: {err}", program_name());
        }
    }
    err.exit_code()
}
