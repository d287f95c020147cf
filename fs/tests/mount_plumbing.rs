//! Integration tests of the mount and daemon plumbing (`keelfs_fs::fuse`),
//! with real mounts. Needs root and /dev/fuse; for the mount(8) test also
//! mount.fuse3.
//!
//! This binary is two things (it has its own small harness, `harness = false`
//! in Cargo.toml):
//! * run under a name starting with `keelfs-hello` (`arg0`, or a symlink in
//!   /usr/local/sbin that mount.fuse3 finds), it is a mount program built with
//!   `daemon::run_main` around the fixture [`Hello`]: a read-only filesystem
//!   with two files, `hello` and `slow` (whose reads take 1.5 s), served
//!   through a `WorkerPool`. It records its life (`serving pid=N`, `remount
//!   ro|rw`, `destroy`) in `MOUNTPOINT.events`. SOURCE containing
//!   `fail-init` makes its `init` fail; containing `two-loops`, it runs two
//!   fuser session loops with cloned descriptors.
//! * otherwise it runs the tests below, one after the other. It makes itself
//!   a child subreaper, so the daemons (orphaned grandchildren) become its
//!   children and their exit status can be checked. Every mount is taken down
//!   by a guard (lazy unmount, kill) even when a test fails.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, Request,
};
use keelfs_fs::fuse::{daemon, Hooks, PoolConfig, ServeConfig, WorkerPool};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

// ---------------------------------------------------------------- fixture

const HELPER_PREFIX: &str = "keelfs-hello";
const CONTENT: &[u8] = b"hello from the keelfs mount plumbing\n";
const SLOW_READ: Duration = Duration::from_millis(1500);
const TTL: Duration = Duration::from_secs(1);

/// The fixture filesystem: `/hello` and `/slow`, read-only.
struct Hello {
    pool: WorkerPool,
    events: PathBuf,
    fail_init: bool,
}

fn record(events: &Path, line: &str) {
    if let Ok(mut file) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(events)
    {
        let _ = writeln!(file, "{line}");
    }
}

fn attr(ino: u64) -> Option<FileAttr> {
    let (kind, perm, nlink, size) = match ino {
        1 => (FileType::Directory, 0o755, 2, 0),
        2 | 3 => (FileType::RegularFile, 0o444, 1, CONTENT.len() as u64),
        _ => return None,
    };
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    Some(FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: 1,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    })
}

impl Filesystem for Hello {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        if self.fail_init {
            return Err(std::io::Error::other("the fixture refuses to start"));
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.pool.shutdown();
        record(&self.events, "destroy");
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match (parent.0, name.to_str()) {
            (1, Some("hello")) => 2,
            (1, Some("slow")) => 3,
            _ => return reply.error(Errno::ENOENT),
        };
        reply.entry(&TTL, &attr(ino).expect("known inode"), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match attr(ino.0) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != 1 {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (1, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
            (2, FileType::RegularFile, "hello"),
            (3, FileType::RegularFile, "slow"),
        ];
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let job = move || {
            if ino.0 == 3 {
                thread::sleep(SLOW_READ);
            }
            let start = (offset as usize).min(CONTENT.len());
            let end = (start + size as usize).min(CONTENT.len());
            reply.data(&CONTENT[start..end]);
        };
        // A refused job is dropped with its reply, which answers EIO.
        if let Err(rejected) = self.pool.spawn(job) {
            log::error!("read refused: {}", rejected.reason);
        }
    }
}

fn events_path(mountpoint: &Path) -> PathBuf {
    PathBuf::from(format!("{}.events", mountpoint.display()))
}

/// The mount program around the fixture.
fn helper_main() -> i32 {
    daemon::run_main(std::env::args_os(), |opts| {
        let pool = WorkerPool::new(PoolConfig {
            threads: opts.threads.unwrap_or(4),
            queue_depth: 16,
            name: "hello".into(),
        });
        let events = events_path(&opts.mountpoint);
        let fs = Hello {
            pool: pool.clone(),
            events: events.clone(),
            fail_init: opts.source.contains("fail-init"),
        };
        let on_remount = events.clone();
        let hooks = Hooks::default()
            .after_fork(move |_notifier| {
                pool.start().map_err(|e| e.to_string())?;
                record(&events, &format!("serving pid={}", std::process::id()));
                Ok(())
            })
            .on_remount(move |ro| {
                record(&on_remount, if ro { "remount ro" } else { "remount rw" })
            });
        let serve = if opts.source.contains("two-loops") {
            ServeConfig {
                session_threads: 2,
                clone_fd: true,
            }
        } else {
            ServeConfig::default()
        };
        Ok((fs, serve, hooks))
    })
}

// ---------------------------------------------------------------- helpers

/// A scratch directory with a mount point `mnt`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("keelfs-mnt")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        Scratch { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }
    fn events(&self, mnt: &Path) -> String {
        fs::read_to_string(events_path(mnt)).unwrap_or_default()
    }
}

/// Takes down whatever is still mounted on `mnt` and kills the daemon.
struct MountGuard {
    mnt: PathBuf,
    pid: Option<Pid>,
}

impl MountGuard {
    fn new(mnt: &Path) -> MountGuard {
        MountGuard {
            mnt: mnt.to_owned(),
            pid: None,
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if mount_entry(&self.mnt).is_some_and(|m| m.fstype.starts_with("fuse")) {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

/// A line of /proc/mounts, unescaped.
#[derive(Debug, Clone)]
struct Mounted {
    source: String,
    fstype: String,
    options: String,
}

fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out + rest
}

/// The visible (last) /proc/mounts entry for `mnt`.
fn mount_entry(mnt: &Path) -> Option<Mounted> {
    let text = fs::read_to_string("/proc/mounts").unwrap();
    text.lines().rev().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        (f.len() >= 4 && Path::new(&unescape(f[1])) == mnt).then(|| Mounted {
            source: unescape(f[0]),
            fstype: f[2].to_owned(),
            options: f[3].to_owned(),
        })
    })
}

fn has_option(m: &Mounted, option: &str) -> bool {
    m.options.split(',').any(|o| o == option)
}

/// Output of a finished command.
struct Run {
    status: ExitStatus,
    stderr: String,
}

/// Run `cmd` with a time limit, stdout/stderr captured in files (a daemon
/// holding a pipe must not hang the test).
fn run(mut cmd: Command, scratch: &Scratch) -> Run {
    let out = scratch.path(&format!("out-{}", rand_suffix()));
    let err = scratch.path(&format!("err-{}", rand_suffix()));
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish in time");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Run {
        status,
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The mount program, run as the fixture helper.
fn helper(args: &[&OsStr]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg0(HELPER_PREFIX).args(args);
    cmd
}

/// Mount with the helper (daemonized) and expect success; returns the
/// daemon's pid, from the fixture's `serving` record.
fn mount_ok(
    scratch: &Scratch,
    source: &str,
    mnt: &Path,
    options: &str,
    guard: &mut MountGuard,
) -> Pid {
    let mut args: Vec<&OsStr> = vec![source.as_ref(), mnt.as_os_str()];
    let log = format!("logfile={}", scratch.path("daemon.log").display());
    let options = if options.is_empty() {
        log
    } else {
        format!("{options},{log}")
    };
    args.extend([OsStr::new("-o"), options.as_ref()]);
    let r = run(helper(&args), scratch);
    assert!(
        r.status.success(),
        "mount failed: {:?} {}",
        r.status,
        r.stderr
    );
    let pid = daemon_pid(scratch, mnt);
    guard.pid = Some(pid);
    pid
}

fn daemon_pid(scratch: &Scratch, mnt: &Path) -> Pid {
    let events = scratch.events(mnt);
    let pid = events
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("serving pid="))
        .unwrap_or_else(|| panic!("no serving record in {events:?}"));
    Pid::from_raw(pid.parse().unwrap())
}

/// Wait for `pid` (our child, thanks to the subreaper) to exit.
fn wait_exit(pid: Pid, scratch: &Scratch) -> WaitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match nix::sys::wait::waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return status,
            Err(e) => panic!("waitpid({pid}): {e}"),
        }
        if Instant::now() > deadline {
            let log = fs::read_to_string(scratch.path("daemon.log")).unwrap_or_default();
            panic!("daemon {pid} did not exit; log:\n{log}");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn assert_hello(mnt: &Path) {
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), CONTENT);
}

/// The daemon exited 0 after destroy, and the mount is gone.
fn assert_clean_exit(pid: Pid, scratch: &Scratch, mnt: &Path, guard: &mut MountGuard) {
    let status = wait_exit(pid, scratch);
    guard.pid = None;
    assert_eq!(status, WaitStatus::Exited(pid, 0));
    assert!(mount_entry(mnt).is_none_or(|m| !m.fstype.starts_with("fuse")));
    assert!(
        scratch.events(mnt).lines().any(|l| l == "destroy"),
        "destroy hook not called"
    );
}

fn sh(cmd: &str, args: &[&OsStr], scratch: &Scratch) -> Run {
    let mut c = Command::new(cmd);
    c.args(args);
    run(c, scratch)
}

// ---------------------------------------------------------------- tests

fn returns_only_when_serving_and_sigterm_unmounts() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let mut guard = MountGuard::new(&mnt);
    // The legs as SOURCE, with a comma: it must show up exactly.
    let source = format!("{0}/a.img,{0}/b.img", s.dir.path().display());
    let pid = mount_ok(&s, &source, &mnt, "", &mut guard);
    // No retry: the mount must be live when the program has returned.
    assert_hello(&mnt);
    let m = mount_entry(&mnt).expect("mounted");
    assert_eq!(m.source, source);
    assert_eq!(m.fstype, "fuse");
    assert!(has_option(&m, "nodev") && has_option(&m, "nosuid"), "{m:?}");
    let df = Command::new("df")
        .args(["-T", "-P"])
        .arg(&mnt)
        .output()
        .unwrap();
    let df = String::from_utf8_lossy(&df.stdout);
    let line: Vec<&str> = df
        .lines()
        .nth(1)
        .expect("df line")
        .split_whitespace()
        .collect();
    assert_eq!((line[0], line[1]), (source.as_str(), "fuse"), "{df}");

    // xfstests' _check_if_dev_already_mounted.
    let findmnt = Command::new("findmnt")
        .args(["-rncv", "-S", &source, "-o", "SOURCE,TARGET"])
        .output()
        .unwrap();
    let expect = format!("{source} {}\n", mnt.display());
    assert_eq!(String::from_utf8_lossy(&findmnt.stdout), expect);

    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);
}

fn sigint_and_sighup_unmount_too() {
    for signal in [Signal::SIGINT, Signal::SIGHUP] {
        let s = Scratch::new();
        let mnt = s.mnt();
        let mut guard = MountGuard::new(&mnt);
        let pid = mount_ok(&s, "/dev/keelfs-test", &mnt, "", &mut guard);
        assert_hello(&mnt);
        nix::sys::signal::kill(pid, signal).unwrap();
        assert_clean_exit(pid, &s, &mnt, &mut guard);
    }
}

fn umount_mountpoint_or_source_stops_the_daemon() {
    for by in ["mountpoint", "single-leg source", "two-leg source"] {
        let s = Scratch::new();
        let mnt = s.mnt();
        let mut guard = MountGuard::new(&mnt);
        // The legs exist, as they will for keelfs (umount(8) canonicalizes
        // a source that is a file).
        let (a, b) = (s.path("a.img"), s.path("b.img"));
        fs::write(&a, b"").unwrap();
        fs::write(&b, b"").unwrap();
        let source = match by {
            "two-leg source" => format!("{},{}", a.display(), b.display()),
            _ => a.display().to_string(),
        };
        let pid = mount_ok(&s, &source, &mnt, "", &mut guard);
        let target = if by == "mountpoint" {
            mnt.as_os_str()
        } else {
            source.as_ref()
        };
        let r = sh("umount", &[target], &s);
        assert!(r.status.success(), "umount by {by}: {}", r.stderr);
        assert_clean_exit(pid, &s, &mnt, &mut guard);
    }
}

fn two_session_loops_with_clone_fd() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let mut guard = MountGuard::new(&mnt);
    let pid = mount_ok(&s, "two-loops.img", &mnt, "", &mut guard);
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let mnt = mnt.clone();
            thread::spawn(move || assert_hello(&mnt))
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);
}

fn subtype_and_fsname_options() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let mut guard = MountGuard::new(&mnt);
    let pid = mount_ok(&s, "x.img", &mnt, "subtype=keelfs", &mut guard);
    let m = mount_entry(&mnt).unwrap();
    assert_eq!(
        (m.source.as_str(), m.fstype.as_str()),
        ("x.img", "fuse.keelfs")
    );
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);

    let pid = mount_ok(&s, "x.img", &mnt, "fsname=pool0", &mut guard);
    let m = mount_entry(&mnt).unwrap();
    assert_eq!((m.source.as_str(), m.fstype.as_str()), ("pool0", "fuse"));
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);
}

fn generic_options_reach_the_kernel() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let mut guard = MountGuard::new(&mnt);
    let options = "rw,allow_other,default_permissions,dev,suid,exec,sync,dirsync,noatime,\
                   nodiratime,lazytime,async,auto,noauto,user,nouser,nofail,_netdev,\
                   x-systemd.requires=foo,degraded,cache_size=64M,attr_timeout=1.5,\
                   entry_timeout=1,negative_timeout=0,debug,device=/dev/null,relatime,\
                   strictatime,atime,diratime,defaults,noexec,nosuid,nodev,sync,ro,noatime";
    let pid = mount_ok(&s, "opts.img", &mnt, options, &mut guard);
    let m = mount_entry(&mnt).unwrap();
    for option in [
        "ro",
        "nosuid",
        "nodev",
        "noexec",
        "noatime",
        "sync",
        "allow_other",
        "default_permissions",
    ] {
        assert!(has_option(&m, option), "{option} missing in {m:?}");
    }
    assert!(!has_option(&m, "nodiratime"), "{m:?}");
    assert_hello(&mnt);
    let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
    assert!(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);
}

fn bad_options_fail_before_mounting() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let _guard = MountGuard::new(&mnt);
    for (options, code, message) in [
        ("bogus", 1, "unknown mount option `bogus`"),
        ("ro,cache_size=12Q", 1, "unknown size suffix"),
        ("fd=3", 1, "set by keelfs itself"),
    ] {
        let r = run(
            helper(&[
                "x.img".as_ref(),
                mnt.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ]),
            &s,
        );
        assert_eq!(r.status.code(), Some(code), "{options}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{options}: {}", r.stderr);
        assert!(r.stderr.starts_with(HELPER_PREFIX), "{}", r.stderr);
        assert!(mount_entry(&mnt).is_none());
    }
    let r = run(
        helper(&["x.img".as_ref(), s.path("nonexistent").as_os_str()]),
        &s,
    );
    assert_eq!(r.status.code(), Some(32), "{}", r.stderr);
    assert!(
        r.stderr.contains("mountpoint") && r.stderr.contains("No such file"),
        "{}",
        r.stderr
    );
    let r = run(helper(&["x.img".as_ref()]), &s);
    assert_eq!(r.status.code(), Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("Usage"), "{}", r.stderr);
    assert!(s.events(&mnt).is_empty(), "nothing may have been started");
}

fn init_failure_leaves_nothing_mounted() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let _guard = MountGuard::new(&mnt);
    let r = run(helper(&["fail-init.img".as_ref(), mnt.as_os_str()]), &s);
    assert_eq!(r.status.code(), Some(32), "{}", r.stderr);
    assert!(r.stderr.contains("handshake"), "{}", r.stderr);
    assert!(mount_entry(&mnt).is_none(), "left mounted");
    assert!(!s.events(&mnt).contains("serving"));
}

fn same_source_twice_fails_clearly() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let mnt2 = s.path("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let mut guard = MountGuard::new(&mnt);
    let _guard2 = MountGuard::new(&mnt2);
    let source = format!("{}/twice.img", s.dir.path().display());
    let pid = mount_ok(&s, &source, &mnt, "", &mut guard);
    let r = run(helper(&[source.as_ref(), mnt2.as_os_str()]), &s);
    assert_eq!(r.status.code(), Some(32), "{}", r.stderr);
    let expect = format!("{source} is already mounted on {}", mnt.display());
    assert!(r.stderr.contains(&expect), "{}", r.stderr);
    assert!(mount_entry(&mnt2).is_none());
    // The same mount point, too.
    let r = run(helper(&[source.as_ref(), mnt.as_os_str()]), &s);
    assert_eq!(r.status.code(), Some(32), "{}", r.stderr);
    assert_hello(&mnt);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);
}

fn mount_over_a_non_empty_directory() {
    let s = Scratch::new();
    let mnt = s.mnt();
    fs::write(mnt.join("underneath"), b"x").unwrap();
    let mut guard = MountGuard::new(&mnt);
    let pid = mount_ok(&s, "over.img", &mnt, "", &mut guard);
    assert_hello(&mnt);
    assert!(!mnt.join("underneath").exists());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);
    assert!(mnt.join("underneath").exists());
}

fn foreground_mode_stays_until_signalled() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let mut guard = MountGuard::new(&mnt);
    let mut child = helper(&["fg.img".as_ref(), mnt.as_os_str(), "-f".as_ref()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(s.path("fg.err")).unwrap())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    guard.pid = Some(pid);
    wait_for("the foreground mount", || scratch_serving(&s, &mnt));
    assert_eq!(daemon_pid(&s, &mnt), pid, "-f must not fork");
    assert_hello(&mnt);
    assert!(child.try_wait().unwrap().is_none(), "-f returned early");
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "foreground daemon did not exit");
        thread::sleep(Duration::from_millis(5));
    };
    guard.pid = None;
    assert_eq!(status.code(), Some(0), "signal {:?}", status.signal());
    assert!(mount_entry(&mnt).is_none());
    assert!(s.events(&mnt).contains("destroy"));
}

fn scratch_serving(s: &Scratch, mnt: &Path) -> bool {
    s.events(mnt).contains("serving")
}

fn a_slow_request_does_not_block_others() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let mut guard = MountGuard::new(&mnt);
    let pid = mount_ok(&s, "slow.img", &mnt, "", &mut guard);
    let slow_path = mnt.join("slow");
    let slow = thread::spawn(move || {
        let started = Instant::now();
        assert_eq!(fs::read(slow_path).unwrap(), CONTENT);
        started.elapsed()
    });
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_hello(&mnt);
    let fast = started.elapsed();
    assert!(
        fast < Duration::from_millis(700),
        "hello took {fast:?} behind a slow read"
    );
    let slow = slow.join().unwrap();
    assert!(slow >= SLOW_READ, "slow read took only {slow:?}");
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);
}

fn direct_remount_changes_flags_and_tells_the_daemon() {
    let s = Scratch::new();
    let mnt = s.mnt();
    let mut guard = MountGuard::new(&mnt);
    let pid = mount_ok(&s, "re.img", &mnt, "", &mut guard);
    for (option, ro) in [("remount,ro", true), ("remount,rw", false)] {
        let r = run(
            helper(&[
                "re.img".as_ref(),
                mnt.as_os_str(),
                "-o".as_ref(),
                option.as_ref(),
            ]),
            &s,
        );
        assert!(r.status.success(), "{option}: {}", r.stderr);
        let m = mount_entry(&mnt).unwrap();
        assert_eq!(has_option(&m, "ro"), ro, "{m:?}");
        assert!(
            has_option(&m, "nosuid"),
            "remount must keep the other flags: {m:?}"
        );
        let event = if ro { "remount ro" } else { "remount rw" };
        wait_for(event, || s.events(&mnt).lines().any(|l| l == event));
    }
    assert_hello(&mnt);
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert_clean_exit(pid, &s, &mnt, &mut guard);
}

/// The symlink mount.fuse3 finds (/bin/sh without PATH searches
/// /usr/local/sbin); removed on drop.
struct InstalledHelper {
    path: PathBuf,
}

impl Drop for InstalledHelper {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn mount_8_through_mount_fuse3() {
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        println!("  (skipped: mount.fuse3 not installed)");
        return;
    }
    let name = format!("{HELPER_PREFIX}-{}", std::process::id());
    let installed = InstalledHelper {
        path: Path::new("/usr/local/sbin").join(&name),
    };
    let _ = fs::remove_file(&installed.path);
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &installed.path).unwrap();
    let fstype = format!("fuse.{name}");

    let s = Scratch::new();
    let mnt = s.mnt();
    let mnt2 = s.path("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let mut guard = MountGuard::new(&mnt);
    let mut guard2 = MountGuard::new(&mnt2);
    let source = format!("{}/via-mount.img", s.dir.path().display());
    let log = format!("logfile={}", s.path("daemon.log").display());

    let mount = |source: &str, target: &Path, opts: &str| {
        let args: [&OsStr; 6] = [
            "-t".as_ref(),
            fstype.as_ref(),
            "-o".as_ref(),
            opts.as_ref(),
            source.as_ref(),
            target.as_os_str(),
        ];
        sh("mount", &args, &s)
    };

    // Without subtype= the mount is plain `fuse`, whatever -t said.
    let r = mount(&source, &mnt, &format!("nofail,x-test=1,{log}"));
    assert!(r.status.success(), "mount: {}", r.stderr);
    guard.pid = Some(daemon_pid(&s, &mnt));
    assert_hello(&mnt);
    let m = mount_entry(&mnt).unwrap();
    assert_eq!(
        (m.source.as_str(), m.fstype.as_str()),
        (source.as_str(), "fuse")
    );
    assert!(
        !has_option(&m, "nodev") && !has_option(&m, "nosuid"),
        "dev,suid appended: {m:?}"
    );

    // The same source again: refused while the first mount is up.
    let subtype_opts = format!("subtype={name},{log}");
    let r = mount(&source, &mnt2, &subtype_opts);
    assert_ne!(r.status.code(), Some(0), "same source mounted twice");
    assert!(r.stderr.contains("already mounted"), "{}", r.stderr);
    assert!(mount_entry(&mnt2).is_none());

    // With subtype= the type names the helper, so that mount(8) runs it
    // again for a remount.
    let r = mount(&format!("{source}2"), &mnt2, &subtype_opts);
    assert!(r.status.success(), "mount 2: {}", r.stderr);
    guard2.pid = Some(daemon_pid(&s, &mnt2));
    assert_eq!(mount_entry(&mnt2).unwrap().fstype, fstype);

    for (option, ro) in [("remount,ro", true), ("remount,rw", false)] {
        let r = sh(
            "mount",
            &["-o".as_ref(), option.as_ref(), mnt2.as_os_str()],
            &s,
        );
        assert!(r.status.success(), "mount -o {option}: {}", r.stderr);
        assert_eq!(has_option(&mount_entry(&mnt2).unwrap(), "ro"), ro);
        let event = if ro { "remount ro" } else { "remount rw" };
        wait_for(event, || s.events(&mnt2).lines().any(|l| l == event));
    }
    // A plain `fuse` mount: mount(8) would have mount.fuse3 run a command
    // named `fuse`; with -t naming the helper, or -i (no helper), it works.
    let args: [&OsStr; 5] = [
        "-t".as_ref(),
        fstype.as_ref(),
        "-o".as_ref(),
        "remount,ro".as_ref(),
        mnt.as_os_str(),
    ];
    let r = sh("mount", &args, &s);
    assert!(
        r.status.success(),
        "mount -t {fstype} -o remount,ro: {}",
        r.stderr
    );
    assert!(has_option(&mount_entry(&mnt).unwrap(), "ro"));
    let r = sh(
        "mount",
        &[
            "-i".as_ref(),
            "-o".as_ref(),
            "remount,rw".as_ref(),
            mnt.as_os_str(),
        ],
        &s,
    );
    assert!(r.status.success(), "mount -i -o remount,rw: {}", r.stderr);
    assert!(has_option(&mount_entry(&mnt).unwrap(), "rw"));

    for (target, guard) in [(&mnt, &mut guard), (&mnt2, &mut guard2)] {
        let pid = guard.pid.unwrap();
        let r = sh("umount", &[target.as_os_str()], &s);
        assert!(r.status.success(), "umount: {}", r.stderr);
        assert_clean_exit(pid, &s, target, guard);
    }
}

// ---------------------------------------------------------------- harness

type TestFn = fn();

const TESTS: &[(&str, TestFn)] = &[
    (
        "returns_only_when_serving_and_sigterm_unmounts",
        returns_only_when_serving_and_sigterm_unmounts,
    ),
    (
        "sigint_and_sighup_unmount_too",
        sigint_and_sighup_unmount_too,
    ),
    (
        "umount_mountpoint_or_source_stops_the_daemon",
        umount_mountpoint_or_source_stops_the_daemon,
    ),
    ("subtype_and_fsname_options", subtype_and_fsname_options),
    (
        "generic_options_reach_the_kernel",
        generic_options_reach_the_kernel,
    ),
    (
        "bad_options_fail_before_mounting",
        bad_options_fail_before_mounting,
    ),
    (
        "init_failure_leaves_nothing_mounted",
        init_failure_leaves_nothing_mounted,
    ),
    (
        "same_source_twice_fails_clearly",
        same_source_twice_fails_clearly,
    ),
    (
        "mount_over_a_non_empty_directory",
        mount_over_a_non_empty_directory,
    ),
    (
        "foreground_mode_stays_until_signalled",
        foreground_mode_stays_until_signalled,
    ),
    (
        "two_session_loops_with_clone_fd",
        two_session_loops_with_clone_fd,
    ),
    (
        "a_slow_request_does_not_block_others",
        a_slow_request_does_not_block_others,
    ),
    (
        "direct_remount_changes_flags_and_tells_the_daemon",
        direct_remount_changes_flags_and_tells_the_daemon,
    ),
    ("mount_8_through_mount_fuse3", mount_8_through_mount_fuse3),
];

fn main() {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&arg0)
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if name.starts_with(HELPER_PREFIX) {
        std::process::exit(helper_main());
    }

    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in TESTS {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<_> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        println!(
            "mount_plumbing: needs root and /dev/fuse; skipping {} tests",
            selected.len()
        );
        println!(
            "\ntest result: ok. 0 passed; 0 failed; {} ignored",
            selected.len()
        );
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");

    println!("\nrunning {} tests", selected.len());
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, test) in &selected {
        print!("test {name} ... ");
        let _ = std::io::stdout().flush();
        let t = Instant::now();
        match std::panic::catch_unwind(*test) {
            Ok(()) => println!("ok ({:.2}s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                println!("FAILED");
                failed.push(*name);
            }
        }
    }
    let result = if failed.is_empty() { "ok" } else { "FAILED" };
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {result}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        selected.len() - failed.len(),
        failed.len(),
        TESTS.len() - selected.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
