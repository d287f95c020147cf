//! The mount program's life: signals, mount, FUSE_INIT, fork, serve, unmount.
//!
//! [`run_main`] is the whole program for any `fuser::Filesystem`; [`serve`]
//! is the part after the filesystem was built. The sequence:
//!
//! 1. SIGINT, SIGTERM and SIGHUP are blocked first, in the only thread, so
//!    every thread created later inherits the mask and the signals stay
//!    pending until the signal thread takes them with `sigwait`.
//! 2. Options are parsed and checked; MOUNTPOINT is resolved and the source
//!    must not already be mounted. Then the caller's `build` opens the
//!    devices and builds the filesystem (it must not start threads).
//! 3. mount(2) by ourselves ([`super::mount::mount_fuse`]), then
//!    `fuser::Session::from_fd`, which answers FUSE_INIT (calling
//!    `Filesystem::init`), and raises the connection's readahead
//!    ([`super::mount::READ_AHEAD_KB`]). From here on the mount is live. Any failure so far
//!    exits non-zero with a message on stderr, before forking, and leaves
//!    nothing mounted.
//! 4. Unless `-f`: fork. The parent waits on a pipe until the child reports
//!    that it is serving (or why it could not), then exits 0 (or prints the
//!    child's error and exits 32) with `std::process::exit`, which runs no
//!    destructors: dropping the session in the parent would call `destroy`.
//!    The child calls setsid, changes to `/`, and points stdin at /dev/null
//!    and stdout/stderr at /dev/null or the `logfile=`.
//! 5. The child starts the signal thread (a signal unmounts, see
//!    [`super::mount::MountHandle::unmount`]), the optional remount watcher,
//!    and runs the after-fork hook, where the filesystem starts its worker
//!    pool. Then it reports ready and runs the session loop.
//! 6. The loop ends when the kernel drops the connection: after
//!    `umount MOUNTPOINT`/`umount SOURCE`, or after the signal thread's
//!    unmount (lazy if busy: then when the last file is closed). fuser then
//!    calls `Filesystem::destroy` exactly once: that is the flush hook. The
//!    program exits 0. If the loop failed instead, the mount is taken down.
//!
//! A remount (`-o remount,...`, which mount(8) runs for `mount -o remount`
//! on a `fuse.SUBTYPE` mount) starts no daemon: [`remount`] applies the new
//! flags with mount(2) `MS_REMOUNT` and exits. The kernel handles it without
//! the daemon; a daemon that wants to know (read-only now?) registers
//! [`Hooks::on_remount`], fed by a thread watching `/proc/self/mountinfo`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use fuser::{Filesystem, Notifier, Session, SessionACL};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::ForkResult;

use super::mount::{self, FuseMountSpec, MountError, MountHandle, Unmounted};
use super::options::{MountOptions, OptionsError};
use super::{report, Error};

/// The signals that make the daemon unmount and exit.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// Failures of the daemon machinery itself.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot block signals: {0}")]
    Signals(Errno),
    #[error(
        "{0} threads are running before the fork and would not survive it \
         (start threads in the after-fork hook, not while building the filesystem)"
    )]
    ThreadsBeforeFork(usize),
    #[error("cannot fork the daemon: {0}")]
    Fork(Errno),
    #[error("daemon setup failed: {what}: {errno}")]
    Setup { what: &'static str, errno: Errno },
    #[error("cannot open {}: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: io::Error,
    },
    #[error("starting the filesystem failed: {0}")]
    AfterFork(String),
    #[error("{0}")]
    Child(String),
    #[error("the FUSE session ended with an error: {0}")]
    Session(io::Error),
}

/// How fuser's session loop runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// fuser session loops reading `/dev/fuse` (`fuser::Config::n_threads`).
    /// With a pool of zero threads (the default) the loops run the requests
    /// themselves, so they are how many requests are served at once; one
    /// is enough when the filesystem hands requests to worker threads.
    pub session_threads: usize,
    /// Give each loop its own cloned `/dev/fuse` descriptor
    /// (`fuser::Config::clone_fd`); only matters with several loops.
    pub clone_fd: bool,
}

impl Default for ServeConfig {
    /// [`super::pool::default_threads`] loops, each on its own descriptor.
    fn default() -> Self {
        ServeConfig {
            session_threads: super::pool::default_threads(),
            clone_fd: true,
        }
    }
}

/// Called once in the serving process before the loop starts.
pub type AfterForkHook = Box<dyn FnOnce(&Notifier) -> Result<(), String> + Send>;
/// Called with the new read-only state when the mount is remounted.
pub type RemountHook = Box<dyn Fn(bool) + Send>;

/// The filesystem's hooks into the daemon's life (the unmount hook is
/// `Filesystem::destroy`).
#[derive(Default)]
pub struct Hooks {
    /// Runs in the serving process (after the fork; in the foreground
    /// process with `-f`) before requests are served: start worker pools and
    /// background threads here and keep the `Notifier` (clone it) for cache
    /// invalidation. An error unmounts and makes the program fail.
    pub after_fork: Option<AfterForkHook>,
    /// The superblock changed between read-only and read-write
    /// (`mount -o remount,ro|rw`).
    pub on_remount: Option<RemountHook>,
}

impl Hooks {
    /// Set [`Hooks::after_fork`].
    pub fn after_fork(
        mut self,
        hook: impl FnOnce(&Notifier) -> Result<(), String> + Send + 'static,
    ) -> Self {
        self.after_fork = Some(Box::new(hook));
        self
    }

    /// Set [`Hooks::on_remount`].
    pub fn on_remount(mut self, hook: impl Fn(bool) + Send + 'static) -> Self {
        self.on_remount = Some(Box::new(hook));
        self
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("after_fork", &self.after_fork.is_some())
            .field("on_remount", &self.on_remount.is_some())
            .finish()
    }
}

/// What `build` returns to [`run_main`].
pub type Built<FS> = (FS, ServeConfig, Hooks);
/// Error type of `build`.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

fn stop_sigset() -> SigSet {
    let mut set = SigSet::empty();
    for signal in STOP_SIGNALS {
        set.add(signal);
    }
    set
}

/// Block [`STOP_SIGNALS`] in the calling thread (and so in every thread it
/// creates later). Call before anything else; calling again is harmless.
pub fn block_stop_signals() -> Result<(), DaemonError> {
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_sigset()), None)
        .map_err(DaemonError::Signals)
}

/// Set up `env_logger`: to `logfile=` if given, else to stderr (which the
/// daemon points at /dev/null). Default level:
/// `debug` with `-o debug`; `info` in the foreground or with `logfile=`;
/// otherwise `warn`, so that mount(8) shows nothing on success. `RUST_LOG`
/// overrides.
pub fn init_logging(opts: &MountOptions) {
    let level = if opts.debug {
        "debug"
    } else if opts.foreground || opts.logfile.is_some() {
        "info"
    } else {
        "warn"
    };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    builder.format_timestamp_millis();
    // With logfile= everything goes there from the start, not only after the
    // fork (when stderr is pointed at it); if it cannot be opened, the
    // daemon reports that before forking.
    if let Some(file) = opts
        .logfile
        .as_deref()
        .and_then(|p| open_path(p, true).ok())
    {
        builder.target(env_logger::Target::Pipe(Box::new(file)));
    }
    let _ = builder.try_init();
}

/// The whole mount program, generic over the filesystem: parse `args`
/// (`args[0]` is the program name), handle `remount`, check the mount point
/// and source, `build` the filesystem, [`serve`] it. Returns the exit code;
/// every error was printed as `PROGRAM: message`.
pub fn run_main<FS, B>(args: impl IntoIterator<Item = OsString>, build: B) -> i32
where
    FS: Filesystem,
    B: FnOnce(&MountOptions) -> Result<Built<FS>, BuildError>,
{
    let args: Vec<OsString> = args.into_iter().collect();
    if let Some(arg0) = args.first() {
        let name = Path::new(arg0)
            .file_name()
            .map_or_else(|| arg0.to_string_lossy(), |n| n.to_string_lossy());
        super::set_program_name(&name);
    }
    let result = (|| {
        block_stop_signals()?;
        let opts = MountOptions::from_args(args)?;
        init_logging(&opts);
        if !opts.ignored.is_empty() {
            log::debug!("ignored options: {}", opts.ignored.join(","));
        }
        if opts.remount {
            return remount(&opts);
        }
        preflight(&opts)?;
        let (fs, config, hooks) = build(&opts).map_err(|e| Error::Filesystem(e.to_string()))?;
        serve(&opts, fs, config, hooks)
    })();
    match result {
        Ok(()) => 0,
        Err(err) => report(&err),
    }
}

/// Check, before building the filesystem, that the log file can be opened,
/// that MOUNTPOINT is a directory and that the mount source is not mounted
/// already. Returns the canonical mount point.
pub fn preflight(opts: &MountOptions) -> Result<PathBuf, Error> {
    if let Some(path) = &opts.logfile {
        open_path(path, true).map_err(|e| OptionsError::InvalidValue {
            name: "logfile".into(),
            value: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    let target = mount::check_mountpoint(&opts.mountpoint)?;
    mount::check_not_mounted(opts.mount_source())?;
    Ok(target)
}

/// Apply `-o remount,...` to the FUSE mount at MOUNTPOINT and return.
pub fn remount(opts: &MountOptions) -> Result<(), Error> {
    let before = mount::remount(&opts.mountpoint, |current| opts.vfs.apply(current))?;
    if before.source != opts.mount_source() {
        log::warn!(
            "{} is mounted from {:?}, not {:?}; remounted anyway",
            before.mount_point.display(),
            before.source,
            opts.mount_source()
        );
    }
    Ok(())
}

/// Mount `fs` as `opts` say and serve it until it is unmounted; see the
/// module documentation. Without `-f` this returns only in the daemon (the
/// original process exits inside).
pub fn serve<FS: Filesystem>(
    opts: &MountOptions,
    fs: FS,
    config: ServeConfig,
    hooks: Hooks,
) -> Result<(), Error> {
    block_stop_signals()?;
    let target = preflight(opts)?;
    let fstype = opts.fstype();
    let spec = FuseMountSpec {
        source: opts.mount_source(),
        target: &target,
        fstype: &fstype,
        flags: opts.ms_flags(),
        allow_other: opts.allow_other || opts.allow_root,
        default_permissions: opts.default_permissions,
    };
    let (fd, handle) = mount::mount_fuse(&spec)?;
    let handle = Arc::new(handle);
    let acl = if opts.allow_other {
        SessionACL::All
    } else if opts.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    let mut fuser_config = fuser::Config::default();
    fuser_config.acl = acl;
    fuser_config.n_threads = Some(config.session_threads.max(1));
    fuser_config.clone_fd = config.clone_fd;
    let session = match Session::from_fd(fs, fd, acl, fuser_config) {
        Ok(session) => session,
        Err(e) => {
            take_down(&handle);
            return Err(MountError::Handshake(e).into());
        }
    };
    log::info!(
        "mounted {:?} on {} as {fstype}",
        spec.source,
        target.display()
    );
    if let Err(e) = mount::set_read_ahead(handle.dev(), mount::READ_AHEAD_KB) {
        log::warn!("readahead left at the kernel's default: {e}");
    }
    let ready = if opts.foreground {
        Ready::Foreground
    } else {
        match daemonize(opts.logfile.as_deref(), &handle) {
            Ok(pipe) => Ready::Pipe(pipe),
            Err(e) => {
                drop(session);
                take_down(&handle);
                return Err(e.into());
            }
        }
    };
    run_daemon(session, &handle, hooks, ready)
}

/// Unmount after a failure; errors are only logged (the caller reports the
/// original failure).
fn take_down(handle: &MountHandle) {
    if let Err(e) = handle.unmount() {
        log::error!("{e}");
    }
}

/// The child's (or foreground process's) part: threads, hook, loop.
fn run_daemon<FS: Filesystem>(
    session: Session<FS>,
    handle: &Arc<MountHandle>,
    hooks: Hooks,
    ready: Ready,
) -> Result<(), Error> {
    let started = (|| {
        spawn_signal_thread(Arc::clone(handle))?;
        if let Some(hook) = hooks.on_remount {
            spawn_remount_watcher(Arc::clone(handle), hook)?;
        }
        if let Some(hook) = hooks.after_fork {
            hook(&session.notifier()).map_err(DaemonError::AfterFork)?;
        }
        Ok::<(), DaemonError>(())
    })();
    if let Err(e) = started {
        take_down(handle);
        ready.failed(&e.to_string());
        drop(session);
        return Err(e.into());
    }
    ready.serving();
    log::info!("serving {}", handle.target().display());
    let result = session.run();
    log::info!("session ended for {}", handle.target().display());
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            take_down(handle);
            Err(DaemonError::Session(e).into())
        }
    }
}

/// How the serving process tells the original one that it is up.
enum Ready {
    Foreground,
    Pipe(File),
}

impl Ready {
    fn serving(self) {
        if let Ready::Pipe(mut pipe) = self {
            let _ = pipe.write_all(b"OK");
        }
    }

    fn failed(self, message: &str) {
        if let Ready::Pipe(mut pipe) = self {
            let _ = pipe.write_all(format!("ERR {message}").as_bytes());
        }
    }
}

/// Threads of this process, from `/proc/self/task`.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |dir| dir.count())
}

fn open_path(path: &Path, append: bool) -> Result<File, DaemonError> {
    let mut options = File::options();
    if append {
        options.create(true).append(true);
    } else {
        options.read(true).write(true);
    }
    options.open(path).map_err(|source| DaemonError::Open {
        path: path.to_owned(),
        source,
    })
}

/// Fork. In the original process: wait for the child's report and exit
/// (never returns). In the child: detach and return the report pipe.
fn daemonize(logfile: Option<&Path>, handle: &MountHandle) -> Result<File, DaemonError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(DaemonError::ThreadsBeforeFork(threads));
    }
    let devnull = open_path(Path::new("/dev/null"), false)?;
    let log = logfile.map(|path| open_path(path, true)).transpose()?;
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|errno| DaemonError::Setup {
            what: "pipe",
            errno,
        })?;
    // SAFETY: fork(2) is sound here because this process has exactly one
    // thread (checked above), so no lock can be held by a thread that does not
    // exist in the child; the child continues with ordinary Rust code.
    match unsafe { nix::unistd::fork() } {
        Err(errno) => Err(DaemonError::Fork(errno)),
        Ok(ForkResult::Parent { child }) => {
            drop(write_end);
            let code = wait_for_child(File::from(read_end), child, handle);
            // No destructors: the session would call `destroy`.
            std::process::exit(code)
        }
        Ok(ForkResult::Child) => {
            drop(read_end);
            detach(&devnull, log.as_ref())?;
            Ok(File::from(write_end))
        }
    }
}

/// The child's new session, working directory and standard streams.
fn detach(devnull: &File, log: Option<&File>) -> Result<(), DaemonError> {
    let setup = |what| move |errno| DaemonError::Setup { what, errno };
    nix::unistd::setsid().map_err(setup("setsid"))?;
    nix::unistd::chdir("/").map_err(setup("chdir /"))?;
    let out = log.unwrap_or(devnull);
    nix::unistd::dup2_stdin(devnull.as_fd()).map_err(setup("stdin"))?;
    nix::unistd::dup2_stdout(out.as_fd()).map_err(setup("stdout"))?;
    nix::unistd::dup2_stderr(out.as_fd()).map_err(setup("stderr"))?;
    Ok(())
}

/// The original process: read the child's report. `OK`: exit 0. `ERR msg`:
/// print it, exit 32 (the child has unmounted). Nothing (the child died):
/// unmount here (this process still holds the connection, so the check in
/// [`MountHandle::unmount`] is sound), print why, exit 32.
fn wait_for_child(mut pipe: File, child: nix::unistd::Pid, handle: &MountHandle) -> i32 {
    let mut report_text = String::new();
    let _ = pipe.read_to_string(&mut report_text);
    if report_text == "OK" {
        return 0;
    }
    let message = match report_text.strip_prefix("ERR ") {
        Some(message) => message.to_owned(),
        None => {
            take_down(handle);
            let how = match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => format!("with status {code}"),
                Ok(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => format!("on {signal}"),
                Ok(other) => format!("({other:?})"),
                Err(errno) => format!("(waitpid: {errno})"),
            };
            format!("the daemon (pid {child}) exited {how} before it was serving")
        }
    };
    report(&Error::Daemon(DaemonError::Child(message)))
}

fn spawn_signal_thread(handle: Arc<MountHandle>) -> Result<(), DaemonError> {
    thread::Builder::new()
        .name("keelfs-signals".into())
        .spawn(move || {
            let set = stop_sigset();
            loop {
                let signal = match set.wait() {
                    Ok(signal) => signal,
                    Err(errno) => {
                        log::error!("sigwait failed: {errno}");
                        return;
                    }
                };
                log::info!("{signal}: unmounting {}", handle.target().display());
                match handle.unmount() {
                    Ok(Unmounted::Clean) => {}
                    Ok(Unmounted::Lazy) => log::warn!(
                        "{} was busy and is detached; serving open files until they are closed",
                        handle.target().display()
                    ),
                    Ok(Unmounted::AlreadyGone) => {
                        log::info!("{} is already unmounted", handle.target().display())
                    }
                    Err(e) => log::error!("{e}"),
                }
            }
        })
        .map(drop)
        .map_err(|source| DaemonError::Thread {
            what: "signal",
            source,
        })
}

/// Watch `/proc/self/mountinfo` (it polls `POLLPRI` on every mount table
/// change) and report changes of our superblock's read-only state.
fn spawn_remount_watcher(handle: Arc<MountHandle>, hook: RemountHook) -> Result<(), DaemonError> {
    let path = Path::new("/proc/self/mountinfo");
    let file = File::open(path).map_err(|source| DaemonError::Open {
        path: path.to_owned(),
        source,
    })?;
    thread::Builder::new()
        .name("keelfs-mountwatch".into())
        .spawn(move || watch_mounts(file, &handle, hook))
        .map(drop)
        .map_err(|source| DaemonError::Thread {
            what: "mount watcher",
            source,
        })
}

fn watch_mounts(mut file: File, handle: &MountHandle, hook: RemountHook) {
    let mut read_only = None;
    loop {
        let mut text = String::new();
        if file
            .rewind()
            .and_then(|()| file.read_to_string(&mut text))
            .is_err()
        {
            return;
        }
        if !handle.connected() {
            return;
        }
        let mounts = mount::parse_mountinfo(&text);
        let Some(ours) = handle.find(&mounts) else {
            return;
        };
        let now = ours.super_read_only();
        if read_only.is_some_and(|before| before != now) {
            log::info!("remounted {}", if now { "read-only" } else { "read-write" });
            hook(now);
        }
        read_only = Some(now);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}
