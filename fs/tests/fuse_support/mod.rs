//! Shared fixture of the FUSE integration tests (`fuse_*.rs`): image files
//! formatted as a mirror set, real mounts through the `keelfs` binary cargo
//! built for this package, and checks after each test.
//!
//! * [`Fixture::new`] makes sparse image files in a fresh directory and
//!   formats them with `keelfs_fs::mkfs::format` (the library
//!   `mkfs.keelfs` is built on), plus an empty mount point.
//! * [`Fixture::mount`] runs `keelfs LEGS MNT -o OPTS,logfile=...`; the
//!   returned [`Mounted`] takes the mount down when dropped, even when the
//!   test fails (umount, then a lazy umount and SIGKILL of the daemon if it
//!   does not let go of its legs), and prints the daemon's log on failure.
//! * [`Mounted::finish`] is the end of every test: it records what the
//!   tree holds (names, types, modes, owners, link counts, sizes, mtimes,
//!   contents, symlink targets), unmounts, waits for the daemon to release
//!   the legs, runs `fsck.keelfs -n` when one is built or installed, then
//!   mounts again and checks that the tree is exactly what it was.
//!
//! Tests need root and /dev/fuse; without them they print why and pass.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelfs_engine::device::{DeviceRef, FileDevice, FileOpenOptions};
use keelfs_fs::fuse::mount::read_mountinfo;
use keelfs_fs::mkfs::{format, MkfsOptions};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// The mount program under test.
pub fn keelfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keelfs")
}

/// Whether real mounts can be made here; prints why not.
pub fn can_mount(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("{test}: needs root and /dev/fuse; skipped");
        return false;
    }
    true
}

/// Image files and a mount point in a scratch directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub legs: Vec<PathBuf>,
    pub mnt: PathBuf,
}

impl Fixture {
    /// `legs` sparse images of `size` bytes, formatted as one mirror set.
    pub fn new(legs: usize, size: u64) -> Fixture {
        let fx = Fixture::unformatted(legs, size);
        let devices = fx.open_devices();
        format(&devices, &MkfsOptions::default()).expect("mkfs");
        fx
    }

    /// `legs` sparse images of `size` bytes, all zero.
    pub fn unformatted(legs: usize, size: u64) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("keelfs-fuse-")
            .tempdir()
            .unwrap();
        // Other users (the permission tests) must reach the mount point.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let legs: Vec<PathBuf> = (0..legs)
            .map(|i| {
                let path = dir.path().join(format!("leg{i}.img"));
                let file = fs::File::create(&path).unwrap();
                file.set_len(size).unwrap();
                path
            })
            .collect();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        Fixture { dir, legs, mnt }
    }

    fn open_devices(&self) -> Vec<DeviceRef> {
        self.legs
            .iter()
            .map(|p| Arc::new(FileDevice::open(p).unwrap()) as DeviceRef)
            .collect()
    }

    /// SOURCE naming every leg.
    pub fn source(&self) -> String {
        join_legs(&self.legs)
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Runs `keelfs SOURCE MNT -o OPTS` and returns its output.
    pub fn run_keelfs(&self, source: &str, opts: &str) -> Output {
        let mut all = format!("logfile={}", self.log().display());
        if !opts.is_empty() {
            all = format!("{opts},{all}");
        }
        Command::new(keelfs_bin())
            .arg(source)
            .arg(&self.mnt)
            .arg("-o")
            .arg(all)
            .output()
            .expect("run keelfs")
    }

    /// Mounts every leg with `opts`; panics with keelfs's message if that
    /// fails.
    pub fn mount(&self, opts: &str) -> Mounted<'_> {
        self.mount_source(&self.source(), opts)
    }

    /// Mounts `source` with `opts`.
    pub fn mount_source(&self, source: &str, opts: &str) -> Mounted<'_> {
        let out = self.run_keelfs(source, opts);
        let mounted = Mounted {
            fx: self,
            source: source.to_owned(),
            opts: opts.to_owned(),
            down: false,
        };
        assert!(
            out.status.success(),
            "keelfs {source} {} -o {opts} failed ({}): {}",
            self.mnt.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(&self.mnt),
            "keelfs exited 0 but nothing is mounted"
        );
        mounted
    }
}

pub fn join_legs(legs: &[PathBuf]) -> String {
    legs.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a FUSE filesystem is mounted at `mnt`.
pub fn is_mounted(mnt: &Path) -> bool {
    let mnt = mnt.canonicalize().unwrap_or_else(|_| mnt.to_owned());
    read_mountinfo()
        .unwrap_or_default()
        .iter()
        .any(|m| m.mount_point == mnt && m.is_fuse())
}

/// Whether every leg can be locked, i.e. no daemon holds it.
fn legs_free(legs: &[PathBuf]) -> bool {
    legs.iter().all(|p| {
        FileDevice::open_with(
            p,
            FileOpenOptions {
                read_only: true,
                lock: true,
                wait_for_lock: false,
            },
        )
        .is_ok()
    })
}

/// Pids of keelfs daemons serving `mnt` (from /proc/*/cmdline).
pub fn daemons_of(mnt: &Path) -> Vec<i32> {
    let want = mnt.as_os_str().to_string_lossy().into_owned();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        (args.iter().any(|a| a == &want) && args.first()?.contains("keelfs")).then_some(pid)
    })
    .collect()
}

/// `umount MNT` as a user would run it, retried for up to 10 s while it
/// says the mount is busy (a process another test thread is starting holds
/// copies of this process's descriptors until it execs; under load the
/// kernel may also finish closing files a moment after close returns).
pub fn umount_retrying(mnt: &Path) -> Output {
    let busy_until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("umount").arg(mnt).output().expect("umount");
        let busy = String::from_utf8_lossy(&out.stderr).contains("busy");
        if out.status.success() || !busy || Instant::now() > busy_until {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unmounts `mnt` and waits until the daemon let go of `legs`; lazily
/// unmounts and kills what does not go away in time. Returns whether the
/// ordinary way worked.
pub fn unmount_and_wait(mnt: &Path, legs: &[PathBuf]) -> bool {
    let mut clean = true;
    // Tests run in parallel threads: a child another thread is spawning
    // holds copies of this process's descriptors until its exec, which can
    // make the mount busy for a moment. Busy is retried for a while.
    let busy_until = Instant::now() + Duration::from_secs(10);
    while is_mounted(mnt) {
        let out = Command::new("umount").arg(mnt).output().expect("umount");
        if out.status.success() {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("busy") && Instant::now() < busy_until {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        eprintln!("umount {}: {stderr}", mnt.display());
        clean = false;
        let _ = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH);
        break;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !legs_free(legs) {
        if Instant::now() > deadline {
            eprintln!("the daemon of {} did not exit: killing it", mnt.display());
            clean = false;
            for pid in daemons_of(mnt) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(500));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    clean
}

/// A live mount of a [`Fixture`]; unmounted when dropped.
pub struct Mounted<'a> {
    pub fx: &'a Fixture,
    pub source: String,
    pub opts: String,
    /// Already unmounted by [`Mounted::unmount`].
    down: bool,
}

impl<'a> Mounted<'a> {
    /// A guard for a mount of `fx` made some other way (mount(8)); `source`
    /// and `opts` are what [`Mounted::finish`] mounts again with.
    pub fn adopt(fx: &'a Fixture, source: &str, opts: &str) -> Mounted<'a> {
        Mounted {
            fx,
            source: source.to_owned(),
            opts: opts.to_owned(),
            down: false,
        }
    }

    /// The mount was taken down some other way (umount(8) by the test):
    /// dropping the guard must not unmount whatever is mounted there next.
    pub fn unmounted_elsewhere(mut self) {
        self.down = true;
    }

    /// Path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.fx.path(rel)
    }

    /// Unmount and wait for the daemon to exit; asserts it went cleanly.
    pub fn unmount(mut self) {
        let clean = unmount_and_wait(&self.fx.mnt, &self.fx.legs);
        self.down = true;
        assert!(clean, "unmount was not clean");
    }

    /// The end of a test (see the module docs): manifest, unmount, fsck,
    /// remount, compare, unmount.
    pub fn finish(self) {
        let before = manifest(&self.fx.mnt);
        let fx = self.fx;
        let source = self.source.clone();
        let opts = self.opts.clone();
        self.unmount();
        fsck_if_available(&fx.legs);
        let again = fx.mount_source(&source, &opts);
        let after = manifest(&fx.mnt);
        if before != after {
            let diff: Vec<String> = before
                .iter()
                .filter(|(k, v)| after.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: before {v:?}, after {:?}", after.get(k)))
                .chain(
                    after
                        .keys()
                        .filter(|k| !before.contains_key(*k))
                        .map(|k| format!("{k}: new after remount")),
                )
                .take(20)
                .collect();
            panic!(
                "the tree changed across unmount and mount:\n{}",
                diff.join("\n")
            );
        }
        again.unmount();
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if !self.down {
            unmount_and_wait(&self.fx.mnt, &self.fx.legs);
        }
        if std::thread::panicking() {
            let log = fs::read_to_string(self.fx.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- daemon log (last lines) ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// What one name in the tree holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    /// crc32c of the content (files up to 8 MiB; else of the first and
    /// last MiB), the target of a symlink, nothing for others.
    pub content: String,
}

/// Every name under `root` (not `root` itself), by relative path.
pub fn manifest(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.unwrap();
            let path = e.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = meta.file_type();
            let content = if ft.is_symlink() {
                fs::read_link(&path).unwrap().display().to_string()
            } else if ft.is_file() {
                content_sum(&path, meta.len())
            } else {
                String::new()
            };
            if ft.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                rel,
                Entry {
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    nlink: meta.nlink(),
                    size: if ft.is_dir() { 0 } else { meta.size() },
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    content,
                },
            );
        }
    }
    out
}

fn content_sum(path: &Path, len: u64) -> String {
    let mut f = fs::File::open(path).unwrap();
    if len <= 8 * MIB {
        let mut data = Vec::new();
        f.read_to_end(&mut data).unwrap();
        return format!("{:08x}", crc32c::crc32c(&data));
    }
    use std::os::unix::fs::FileExt;
    let mut head = vec![0u8; MIB as usize];
    let mut tail = vec![0u8; MIB as usize];
    f.read_exact_at(&mut head, 0).unwrap();
    f.read_exact_at(&mut tail, len - MIB).unwrap();
    format!(
        "{:08x}-{:08x}",
        crc32c::crc32c(&head),
        crc32c::crc32c(&tail)
    )
}

/// The fsck program, if one was built next to `keelfs` or installed.
pub fn fsck_program() -> Option<PathBuf> {
    let built = Path::new(keelfs_bin()).with_file_name("fsck-keelfs");
    let installed = ["/usr/local/sbin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join("fsck.keelfs"));
    std::iter::once(built)
        .chain(installed)
        .find(|p| p.is_file())
}

/// `fsck.keelfs -n LEGS` must find the filesystem clean (when there is one).
pub fn fsck_if_available(legs: &[PathBuf]) {
    let Some(fsck) = fsck_program() else {
        return;
    };
    let out = Command::new(&fsck)
        .arg("-n")
        .args(legs)
        .output()
        .expect("run fsck");
    assert!(
        out.status.success(),
        "{} -n found problems ({}):\n{}{}",
        fsck.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `program args` and returns its output; `Err(stderr)` if it failed.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// As [`run`], panicking on failure.
pub fn ok(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The raw OS error of a failed std call.
pub fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("no OS error in {e}")),
    }
}

/// Bytes of a deterministic pseudo-random stream (xorshift), `seed` and
/// chunk `index` chosen by the caller.
pub fn pattern(seed: u64, index: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// crc32c and mtime of every leg, to check that a refused mount wrote
/// nothing.
pub fn leg_fingerprint(legs: &[PathBuf]) -> Vec<(u32, i64, i64)> {
    legs.iter()
        .map(|p| {
            let data = fs::read(p).unwrap();
            let meta = fs::metadata(p).unwrap();
            (crc32c::crc32c(&data), meta.mtime(), meta.mtime_nsec())
        })
        .collect()
}

/// The uid and gid of the unprivileged test user, created if needed.
pub fn test_user() -> (u32, u32) {
    static USER: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *USER.get_or_init(|| {
        const NAME: &str = "keelfs-test";
        if run("id", &["-u", NAME]).is_err() {
            // A parallel test binary may have made it meanwhile.
            let _ = run(
                "useradd",
                &["--system", "--no-create-home", "--shell", "/bin/sh", NAME],
            );
        }
        let uid = ok("id", &["-u", NAME]).trim().parse().unwrap();
        let gid = ok("id", &["-g", NAME]).trim().parse().unwrap();
        (uid, gid)
    })
}

/// Runs `sh -c script` as `uid`:`gid` with no supplementary groups; returns
/// (success, stdout, stderr).
pub fn sh_as(uid: u32, gid: u32, script: &str) -> (bool, String, String) {
    use std::os::unix::process::CommandExt;
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C")
        .output()
        .expect("sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the `keelfs` program (status, scrub, replace…): exit code and
/// everything it printed.
pub fn keelfs(args: &[&str]) -> (i32, String) {
    let out = Command::new(keelfs_bin()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Offsets of the 4 KiB blocks of `image` that start with `head`.
pub fn blocks_starting_with(image: &Path, head: &[u8]) -> Vec<u64> {
    let data = std::fs::read(image).unwrap();
    data.chunks(4096)
        .enumerate()
        .filter(|(_, block)| block.starts_with(head))
        .map(|(i, _)| i as u64 * 4096)
        .collect()
}
