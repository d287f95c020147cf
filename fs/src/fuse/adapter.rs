//! The keelfs FUSE adapter: `impl fuser::Filesystem` over the fs core.
//!
//! What it promises:
//!
//! * **Every request runs on the worker pool.** Each method copies what it
//!   needs out of the request, moves it with its `Reply*` into a job and
//!   hands the job to the [`WorkerPool`], so one slow request (an fsync, a
//!   read that waits for a failing leg) never holds up the others. A job
//!   enters the caller's I/O context (`IoContextTable::get(pid)` +
//!   `ioctx::enter`) for its whole length, so the engine schedules its I/O
//!   at the caller's `ionice` class. Requests the kernel makes on its own
//!   behalf (pid 0: writeback, forget) run in the default context. A job
//!   the pool refuses (not started, shut down) runs inline.
//! * **Errors become errno in one place**, `errno.rs`; every EIO and
//!   EUCLEAN is logged with the operation and the inode.
//! * **Lookup counts.** The core counts one kernel reference per entry it
//!   returns (lookup, create, mknod, mkdir, symlink, link, each
//!   readdirplus entry the kernel takes) and `forget`/`batch_forget`
//!   subtract; open handles are counted by `open`/`create` and `release`.
//!   An inode unlinked while referenced stays until the last of both goes
//!   (the core's orphan list).
//! * **Kernel caching** (negotiated in `init`; see docs/mount.md): big
//!   writes (max_write 1 MiB), writeback cache, readdirplus (auto), parallel
//!   directory operations, async reads, cached symlinks; entries and
//!   attributes are cached for `entry_timeout`/`attr_timeout` (default 1 s),
//!   negative lookups for `negative_timeout` (default 0: not cached).
//!   Files are opened keeping their page cache, except when a read must
//!   update atime (the kernel never does for FUSE; `core/atime.rs` says
//!   when, from the mount's atime mode): then the open drops the cache so
//!   the read reaches the filesystem.
//!   keelfs is the only writer of its devices and every change goes through
//!   the kernel, so nothing needs invalidating behind the kernel's back.
//!   Writeback cache: the kernel owns size and mtime of regular files and
//!   sends them with setattr; writes may come later, from another handle or
//!   with pid 0 (they are not checked against the opener); a write-only open
//!   may be read (the kernel needs whole pages), so reads do not look at the
//!   open mode; O_APPEND offsets are computed by the kernel.
//! * **Permissions.** With `default_permissions` or POSIX ACLs (the
//!   default, `core/acl.rs`) the kernel checks mode bits and ACLs before a
//!   request is sent (and with `allow_other` other users reach the
//!   filesystem: `SessionACL::All`). Without either, the adapter checks the
//!   mode bits itself (`adapter_perm.rs`), and `access(2)` is answered from
//!   them.
//! * **setuid/setgid** are cleared here, as Linux clears them
//!   (`core/privs.rs`): FUSE_HANDLE_KILLPRIV_V2 leaves it to the
//!   filesystem on write (the kernel flags a write that must clear them),
//!   truncate, fallocate and chown, and the kernel's own fallback knows
//!   less than the VFS rules (it keeps setgid on a file without group
//!   execute written by a non-member).
//!
//! * **chattr flags** (immutable, append-only, nodump, noatime): the
//!   kernel turns FS_IOC_GETFLAGS/SETFLAGS and FS_IOC_FSGETXATTR/
//!   FSSETXATTR into FUSE ioctls (after checking ownership and
//!   CAP_LINUX_IMMUTABLE); the fs core keeps and enforces them
//!   (`core/chattr.rs`), opens included, since the kernel does not know
//!   them. Other ioctls are ENOTTY.
//! * **File handles** (name_to_handle_at / open_by_handle_at, NFS export):
//!   with FUSE_EXPORT_SUPPORT a handle holds the inode number and its
//!   generation (the one every entry reply carries: the slot's reuse
//!   count); the kernel finds an inode it forgot by looking up "." in it
//!   and a directory's parent by "..", which the fs core answers from the
//!   inode table (a freed inode is ESTALE, a reused one fails the
//!   generation check).
//!
//! Lifecycle: [`KeelFs::new`] before the mount (no threads). The daemon's
//! after-fork hook mounts the fs core and gives it to the adapter through
//! [`AdapterHandle::install`], starts the pool and the status socket.
//! `destroy` (after the kernel ended the session) drains the pool, stops
//! the status socket and unmounts the fs core (commit, flush, superblocks
//! clean).
//!
//! The operations themselves are in `adapter_entry.rs` (namespace and
//! directories), `adapter_file.rs` (file data, attributes, xattrs).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use keelfs_engine::ioctx::{self, IoContextTable};
use parking_lot::{Mutex, RwLock};

use super::errno::reply_errno;
use super::options::{Atime, MountOptions};
use super::pool::WorkerPool;
use super::scrub_ctl::ScrubControl;
use super::status::{StatusReport, StatusServer};
use crate::core::atime::AtimeMode;
use crate::core::{time, Caller, FileAttr, Fs};
use crate::error::{FsError, FsResult};
use crate::format::FileType;

/// Largest write the kernel is asked to send (and the readahead ceiling).
pub const MAX_WRITE: u32 = 1 << 20;
/// Default lifetime of cached entries and attributes.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

/// How the adapter answers the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterConfig {
    /// How long the kernel may cache a name → inode.
    pub entry_ttl: Duration,
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may cache "no such name" (0: not at all).
    pub negative_ttl: Duration,
    /// The kernel checks permissions (mount option `default_permissions`);
    /// otherwise the adapter does.
    pub default_permissions: bool,
    /// Ask for the kernel's writeback cache.
    pub writeback_cache: bool,
    /// POSIX ACLs (FUSE_POSIX_ACL): the kernel checks permissions against
    /// them (and the mode bits) itself, stops applying the umask (the fs
    /// core does: FUSE_DONT_MASK), and the ACL attributes are stored and
    /// interpreted by the fs core (`core/acl.rs`). Off: they are
    /// EOPNOTSUPP.
    pub posix_acl: bool,
    /// When reads update atime (the mount's `noatime`, `relatime`,
    /// `strictatime`; the kernel leaves atime of FUSE files to us).
    pub atime: AtimeMode,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            entry_ttl: DEFAULT_TTL,
            attr_ttl: DEFAULT_TTL,
            negative_ttl: Duration::ZERO,
            default_permissions: false,
            writeback_cache: true,
            posix_acl: false,
            atime: AtimeMode::RelAtime,
        }
    }
}

impl AdapterConfig {
    /// The configuration the mount options ask for. With ACLs (`acl`, the
    /// default) the kernel checks permissions whatever the options say,
    /// as with `default_permissions`. Without either but with
    /// `allow_other`, names are not cached
    /// unless `entry_timeout` says otherwise: the kernel walks cached names
    /// without asking, so the adapter's search-permission check on
    /// directories would be skipped for other users.
    pub fn from_options(opts: &MountOptions) -> AdapterConfig {
        let defaults = AdapterConfig::default();
        let kernel_checks = opts.default_permissions || opts.acl;
        let default_entry_ttl = if opts.allow_other && !kernel_checks {
            Duration::ZERO
        } else {
            defaults.entry_ttl
        };
        AdapterConfig {
            entry_ttl: opts.entry_timeout.unwrap_or(default_entry_ttl),
            attr_ttl: opts.attr_timeout.unwrap_or(defaults.attr_ttl),
            negative_ttl: opts.negative_timeout.unwrap_or(defaults.negative_ttl),
            default_permissions: kernel_checks,
            writeback_cache: defaults.writeback_cache,
            posix_acl: opts.acl,
            atime: match opts.vfs.atime() {
                Some(Atime::NoAtime) => AtimeMode::NoAtime,
                Some(Atime::StrictAtime) => AtimeMode::StrictAtime,
                Some(Atime::RelAtime) | None => AtimeMode::RelAtime,
            },
        }
    }
}

/// Stripes of [`Shared::times_lock`].
const TIME_LOCK_STRIPES: usize = 64;

/// What the adapter and its jobs share.
pub(super) struct Shared {
    /// The mounted fs core: `None` before `install` and after `destroy`.
    fs: RwLock<Option<Arc<Fs>>>,
    pub(super) pool: WorkerPool,
    contexts: IoContextTable,
    pub(super) config: AdapterConfig,
    status: Mutex<Option<StatusServer>>,
    /// `keelfs scrub` (through the status socket).
    scrub: ScrubControl,
    /// Serializes, per inode (striped), a write from the page cache with
    /// the restoring of the times it must not change, against setattr
    /// (see `adapter_file.rs`). Taken before any fs core lock, never under
    /// one.
    time_locks: Box<[Mutex<()>]>,
    /// Tells the kernel about changes it did not ask for (set once, after
    /// the fork).
    notifier: OnceLock<Notifier>,
    /// Open handles with write access, per inode: only while one is open
    /// can the kernel's page cache hold data we have not seen (closing
    /// flushes it).
    writers: Mutex<HashMap<u64, u32>>,
}

impl Shared {
    fn fs(&self) -> Option<Arc<Fs>> {
        self.fs.read().clone()
    }

    /// A handle of `ino` with write access was opened (`true`) or closed.
    pub(super) fn count_writer(&self, ino: u64, opened: bool) {
        let mut writers = self.writers.lock();
        let n = writers.entry(ino).or_insert(0);
        if opened {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                writers.remove(&ino);
            }
        }
    }

    /// Makes the kernel write back the dirty pages of `ino` (and drop its
    /// cached pages), so that what we answer about the data (SEEK_DATA /
    /// SEEK_HOLE) covers writes still in its page cache. Only done while a
    /// handle with write access is open: otherwise nothing can be dirty.
    /// The kernel sends the writes (to other workers) before this returns;
    /// hold no lock across it.
    pub(super) fn flush_dirty_pages(&self, ino: u64) {
        if !self.writers.lock().contains_key(&ino) {
            return;
        }
        if let Some(notifier) = self.notifier.get() {
            if let Err(e) = notifier.inval_inode(INodeNo(ino), 0, 0) {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    log::warn!("writing back the pages of inode {ino}: {e}");
                }
            }
        }
    }

    /// The kernel forgets what it caches of inode `ino`'s attributes (after
    /// a change it did not ask for, such as setuid cleared on fallocate).
    /// Data pages stay; no inode lock is needed, so this may be sent while
    /// a request on the inode is pending.
    pub(super) fn invalidate_attrs(&self, ino: u64) {
        if let Some(notifier) = self.notifier.get() {
            if let Err(e) = notifier.inval_inode(INodeNo(ino), -1, 0) {
                // ENOENT: the kernel does not hold the inode; nothing cached.
                if e.raw_os_error() != Some(libc::ENOENT) {
                    log::warn!("invalidating the attributes of inode {ino}: {e}");
                }
            }
        }
    }

    /// The time lock of inode `ino`.
    pub(super) fn times_lock(&self, ino: u64) -> parking_lot::MutexGuard<'_, ()> {
        self.time_locks[(ino as usize) % TIME_LOCK_STRIPES].lock()
    }
}

/// The keelfs `fuser::Filesystem`. See the module docs.
pub struct KeelFs {
    pub(super) shared: Arc<Shared>,
}

/// Gives the adapter its mounted filesystem after the fork (the adapter
/// itself is inside fuser's session by then).
#[derive(Clone)]
pub struct AdapterHandle {
    shared: Arc<Shared>,
}

impl AdapterHandle {
    /// The session's notifier, for changes the kernel must hear about.
    pub fn set_notifier(&self, notifier: Notifier) {
        let _ = self.shared.notifier.set(notifier);
    }

    /// From now on requests are served by `fs`.
    pub fn install(&self, fs: Fs) {
        fs.set_atime_mode(self.shared.config.atime);
        let fs = Arc::new(fs);
        // Legs found behind the others at mount are resynced meanwhile.
        if let Err(e) = Fs::start_resync(&fs) {
            log::error!("{e}");
        }
        *self.shared.fs.write() = Some(fs);
    }

    /// The mounted filesystem, if installed.
    pub fn fs(&self) -> Option<Arc<Fs>> {
        self.shared.fs()
    }

    /// Serve `keelfs status` on the Unix socket `socket` for the mount of
    /// `source` at `mountpoint`; the socket goes away in `destroy`.
    pub fn start_status(
        &self,
        socket: PathBuf,
        source: &str,
        mountpoint: &Path,
    ) -> std::io::Result<()> {
        let weak = Arc::downgrade(&self.shared);
        let source = source.to_owned();
        let mountpoint = mountpoint.to_owned();
        let server = StatusServer::start(
            socket,
            Box::new(move |request: &str| {
                let shared = weak.upgrade()?;
                let fs = shared.fs()?;
                if let Some(scrub) = request.strip_prefix("scrub ") {
                    return Some(shared.scrub.command(&fs, scrub.trim()));
                }
                if let Some(args) = request.strip_prefix("add ") {
                    return Some(super::add_ctl::command(&fs, args.trim_end_matches('\n')));
                }
                if let Some(args) = request.strip_prefix("replace ") {
                    return Some(super::replace_ctl::command(
                        &fs,
                        args.trim_end_matches('\n'),
                    ));
                }
                let pool = &shared.pool;
                let report = StatusReport::collect(
                    &fs,
                    &source,
                    &mountpoint,
                    (pool.completed(), pool.queued() as u64),
                );
                Some(report.encode())
            }),
        )?;
        *self.shared.status.lock() = Some(server);
        Ok(())
    }

    /// A remount changed the mount to read-only (`true`) or back: going
    /// read-only makes everything durable now, as a local filesystem's
    /// remount does.
    pub fn remounted(&self, read_only: bool) {
        if !read_only {
            return;
        }
        if let Some(fs) = self.fs() {
            if let Err(e) = fs.sync_all() {
                log::error!("sync on remount read-only: {e}");
            }
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Who {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Who {
    /// The owner of what the request creates (no umask).
    pub fn caller(self) -> Caller {
        Caller::new(self.uid, self.gid)
    }

    /// The creator of a new inode, with the umask the request carries.
    pub fn creator(self, umask: u32) -> Caller {
        Caller {
            umask,
            ..self.caller()
        }
    }

    /// Whether the caller belongs to group `gid` (primary or
    /// supplementary).
    pub fn in_group(self, gid: u32) -> bool {
        super::adapter_perm::in_group(self, gid)
    }
}

/// What a job gets to work with.
pub(super) struct Ctx<'a> {
    pub fs: &'a Fs,
    pub who: Who,
    pub config: &'a AdapterConfig,
    pub shared: &'a Shared,
}

/// Answering a request with an errno, for every reply type.
pub(super) trait Fail {
    fn fail(self, errno: Errno);
}

macro_rules! fail_impl {
    ($($t:ty),*) => {$(
        impl Fail for $t {
            fn fail(self, errno: Errno) {
                self.error(errno)
            }
        }
    )*};
}

fail_impl!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyEmpty,
    ReplyOpen,
    ReplyWrite,
    ReplyStatfs,
    ReplyCreate,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyXattr,
    ReplyLseek,
    ReplyIoctl
);

/// Answers `reply` with `ok(reply, value)` or with the errno of the error.
pub(super) fn answer<T, R: Fail>(
    reply: R,
    op: &str,
    ino: u64,
    result: FsResult<T>,
    ok: impl FnOnce(R, T),
) {
    match result {
        Ok(value) => ok(reply, value),
        Err(e) => reply.fail(reply_errno(op, ino, &e)),
    }
}

/// Runs `op`; if it runs out of space while blocks or inodes freed by
/// transactions not yet committed are waiting to become free again, commits
/// (which releases them) and runs it once more, as ext4 retries an
/// allocation after forcing a journal commit.
pub(super) fn retry_on_nospace<T>(fs: &Fs, mut op: impl FnMut() -> FsResult<T>) -> FsResult<T> {
    match op() {
        Err(FsError::NoSpace) if space_pending(fs) => {
            log::debug!("out of space with frees pending: committing and retrying");
            fs.journal().commit()?;
            op()
        }
        other => other,
    }
}

/// Whether blocks or inodes freed by uncommitted transactions exist.
pub(super) fn space_pending(fs: &Fs) -> bool {
    fs.blocks().free_blocks() > fs.blocks().available()
        || fs.inode_allocator().free_inodes() > fs.inode_allocator().available()
}

/// The fuser view of an inode's attributes.
pub(super) fn fuse_attr(a: &FileAttr) -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: time::to_system(a.atime),
        mtime: time::to_system(a.mtime),
        ctime: time::to_system(a.ctime),
        crtime: time::to_system(a.crtime),
        kind: fuse_kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        // The kernel's encoding of the dev_t it sent with mknod, kept as is.
        rdev: a.rdev as u32,
        blksize: a.blksize,
        flags: 0,
    }
}

/// The fuser file type of a keelfs one.
pub(super) fn fuse_kind(kind: FileType) -> fuser::FileType {
    match kind {
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::CharDevice => fuser::FileType::CharDevice,
        FileType::Directory => fuser::FileType::Directory,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
        FileType::Regular => fuser::FileType::RegularFile,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Socket => fuser::FileType::Socket,
    }
}

/// A `TimeOrNow` as the core's `TimeSet`.
pub(super) fn time_set(t: TimeOrNow) -> crate::core::TimeSet {
    match t {
        TimeOrNow::Now => crate::core::TimeSet::Now,
        TimeOrNow::SpecificTime(t) => crate::core::TimeSet::At(time::from_system(t)),
    }
}

/// The generation the kernel pairs with an inode number.
pub(super) fn generation(a: &FileAttr) -> Generation {
    Generation(u64::from(a.generation))
}

impl KeelFs {
    /// An adapter whose requests run on `pool` (started later, after the
    /// fork) and which serves nothing until a filesystem is installed.
    pub fn new(config: AdapterConfig, pool: WorkerPool) -> KeelFs {
        KeelFs {
            shared: Arc::new(Shared {
                fs: RwLock::new(None),
                pool,
                contexts: IoContextTable::new(),
                config,
                status: Mutex::new(None),
                scrub: ScrubControl::default(),
                time_locks: (0..TIME_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
                notifier: OnceLock::new(),
                writers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The handle to install the mounted filesystem with.
    pub fn handle(&self) -> AdapterHandle {
        AdapterHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs `job` on the worker pool in the caller's I/O context. Without a
    /// mounted filesystem the job is dropped, and with it its reply, which
    /// fuser then answers with EIO.
    pub(super) fn run<F>(&self, req: &Request, job: F)
    where
        F: FnOnce(&Ctx<'_>) + Send + 'static,
    {
        let who = Who {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        };
        let shared = Arc::clone(&self.shared);
        let task = move || {
            let Some(fs) = shared.fs() else {
                log::error!("a request arrived while no filesystem is mounted: answering EIO");
                return;
            };
            let _scope = (who.pid != 0).then(|| ioctx::enter(shared.contexts.get(who.pid)));
            job(&Ctx {
                fs: &fs,
                who,
                config: &shared.config,
                shared: &shared,
            });
        };
        if let Err(rejected) = self.shared.pool.spawn(task) {
            log::debug!("running a request inline: {}", rejected.reason);
            (rejected.job)();
        }
    }

    /// Ask for every capability that makes FUSE fast (see the module docs),
    /// each on its own so one the kernel lacks does not cost the others,
    /// and for those the semantics need (POSIX ACLs when configured: a
    /// kernel without them fails the mount, since permissions would
    /// otherwise go unchecked).
    fn negotiate(&self, config: &mut KernelConfig) -> std::io::Result<()> {
        if self.shared.config.posix_acl {
            config
                .add_capabilities(InitFlags::FUSE_POSIX_ACL | InitFlags::FUSE_DONT_MASK)
                .map_err(|missing| {
                    std::io::Error::other(format!(
                        "the kernel does not offer {missing:?}: mount with -o noacl"
                    ))
                })?;
        }
        let mut wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2
            | InitFlags::FUSE_EXPORT_SUPPORT;
        if self.shared.config.writeback_cache {
            wanted |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        for flag in wanted.iter() {
            if let Err(missing) = config.add_capabilities(flag) {
                log::info!("the kernel does not offer {missing:?}");
            }
        }
        if let Err(max) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(max);
        }
        if let Err(max) = config.set_max_readahead(MAX_WRITE) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        let _ = config.set_time_granularity(Duration::from_nanos(1));
        Ok(())
    }
}

impl Filesystem for KeelFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.negotiate(config)
    }

    fn destroy(&mut self) {
        self.shared.pool.shutdown();
        if let Some(server) = self.shared.status.lock().take() {
            server.stop();
        }
        self.shared.scrub.shutdown();
        let Some(mut fs) = self.shared.fs.write().take() else {
            return;
        };
        fs.stop_resync();
        // A status snapshot may still hold the filesystem for a moment.
        for _ in 0..500 {
            match Arc::try_unwrap(fs) {
                Ok(fs) => {
                    match fs.unmount() {
                        Ok(()) => log::info!("unmounted cleanly"),
                        Err(e) => log::error!("unmount: {e}"),
                    }
                    return;
                }
                Err(shared) => {
                    fs = shared;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        log::error!("the filesystem is still in use at unmount: syncing instead");
        if let Err(e) = fs.sync_all() {
            log::error!("sync at unmount: {e}");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.lookup_op(req, parent.0, name, reply);
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        self.forget_op(req, vec![(ino.0, nlookup)]);
    }

    // batch_forget: fuser's default calls `forget` for each node (its
    // `ForgetOne` type is not exported, so it cannot be overridden).

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.getattr_op(req, ino.0, reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = crate::core::SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(time::from_system),
            crtime: crtime.map(time::from_system),
        };
        self.setattr_op(req, ino.0, set, reply);
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.readlink_op(req, ino.0, reply);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.mknod_op(req, parent.0, name, mode, umask, rdev, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.mkdir_op(req, parent.0, name, mode, umask, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.unlink_op(req, parent.0, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.unlink_op(req, parent.0, name, true, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.symlink_op(req, parent.0, link_name, target, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.rename_op(
            req,
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
            reply,
        );
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.link_op(req, ino.0, newparent.0, newname, reply);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.open_op(req, ino.0, flags.0, reply);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.read_op(req, ino.0, offset, size, reply);
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let from_cache = write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        // HANDLE_KILLPRIV_V2: the kernel asks us to clear setuid/setgid.
        let kill_privs = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        self.write_op(
            req,
            ino.0,
            offset,
            data.to_vec(),
            from_cache,
            kill_privs,
            reply,
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes are answered once they reached the devices; nothing is
        // buffered here, and locks are the kernel's: nothing to do. ENOSYS
        // tells the kernel so, once: it sends no FLUSH again (two requests
        // less per open-write-close; close(2) still waits for the page
        // cache's writeback and reports its errors).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.release_op(req, ino.0, flags.0, reply);
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync_op(req, ino.0, datasync, reply);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.opendir_op(req, ino.0, flags.0, reply);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.readdir_op(req, ino.0, offset, reply);
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.readdirplus_op(req, ino.0, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        // Directory handles hold nothing: listings resume from offsets.
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync_op(req, ino.0, datasync, reply);
    }

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.statfs_op(req, ino.0, reply);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            return reply.error(Errno::EINVAL);
        }
        self.setxattr_op(req, ino.0, name, value.to_vec(), flags, reply);
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.getxattr_op(req, ino.0, name, size, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.listxattr_op(req, ino.0, size, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.removexattr_op(req, ino.0, name, reply);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.access_op(req, ino.0, mask.bits(), reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.create_op(req, parent.0, name, mode, umask, flags, reply);
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.fallocate_op(req, ino.0, offset, length, mode, reply);
    }

    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.ioctl_op(req, ino.0, cmd, in_data.to_vec(), out_size, reply);
    }

    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.lseek_op(req, ino.0, offset, whence, reply);
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        self.copy_file_range_op(req, ino_in.0, offset_in, ino_out.0, offset_out, len, reply);
    }
}
