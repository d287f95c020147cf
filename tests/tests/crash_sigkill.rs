//! Process-level crash: a real keelfs mount (the `keelfs` mount program,
//! in the foreground as a child process, so SIGKILL hits the daemon
//! itself) is killed in the middle of a write-heavy workload with fsyncs.
//! Then the filesystem is mounted again (journal recovery runs), every
//! file whose fsync returned must be intact (write-once files exactly;
//! append-only logs at least up to their last fdatasync'ed length), every
//! file in the tree must read without an error, and after a clean unmount
//! `fsck -n` (the fsck library) must find nothing. Three rounds, each
//! killing at a different moment, on the same legs.
//!
//! The mount program is `$KEELFS_BIN`, else the workspace's
//! `target/debug/keelfs` after `cargo build -p keelfs-fs --bin keelfs`
//! (run here, so the binary is current). Needs root and /dev/fuse;
//! without them the test says so and passes.

use keelfs_fs::mkfs::{format, MkfsOptions};
use keelfs_fsck::{fsck_paths, Options, EXIT_CLEAN};
use keelfs_tests::crashsim::workload::data_bytes;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LEG_BYTES: u64 = 512 << 20;
const WRITERS: usize = 3;
const ROUNDS: usize = 3;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The mount program (see the module docs).
fn keelfs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEELFS_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "-q", "-p", "keelfs-fs", "--bin", "keelfs"])
        .current_dir(workspace())
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "building the keelfs mount program failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = target.join("debug/keelfs");
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

fn can_mount() -> bool {
    // SAFETY-free check of root: /proc/self/status's Uid line.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    if !root || !Path::new("/dev/fuse").exists() {
        eprintln!("crash_sigkill: needs root and /dev/fuse; skipped");
        return false;
    }
    true
}

fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&want.as_str()) && l.contains(" - fuse")
        })
}

/// Starts `keelfs LEGS MNT -f` and waits until it is mounted.
fn mount(bin: &Path, legs: &str, mnt: &Path, log: &Path) -> Child {
    let mut child = Command::new(bin)
        .arg(legs)
        .arg(mnt)
        .arg("-f")
        .arg("-o")
        .arg(format!("logfile={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keelfs");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !is_mounted(mnt) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("keelfs exited ({status}) before mounting: {err}");
        }
        assert!(Instant::now() < deadline, "keelfs did not mount in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// `umount MNT`, retried for up to 10 s while the mount is busy (under
/// load the kernel can finish closing the workload's files a moment late).
fn umount_retrying(mnt: &Path) -> std::process::Output {
    let busy_until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("umount").arg(mnt).output().unwrap();
        let busy = String::from_utf8_lossy(&out.stderr).contains("busy");
        if out.status.success() || !busy || Instant::now() > busy_until {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to 60 s for the daemon to exit; kills it (and detaches its
/// mount) if it does not, so a failure never hangs the test.
fn wait_or_kill(child: &mut Child, mnt: &Path) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What must be on disk: write-once files (path → stamp, length) and
/// append logs (path → stamp, length fdatasync'ed).
#[derive(Default)]
struct Durable {
    files: BTreeMap<PathBuf, (u64, u64)>,
    logs: BTreeMap<PathBuf, (u64, u64)>,
}

/// One writer: write-once files with fsync, appends to its log with
/// fdatasync, and files never synced, until `stop` or an error (the
/// daemon is gone).
fn writer(
    t: usize,
    round: usize,
    mnt: PathBuf,
    durable: Arc<Mutex<Durable>>,
    syncs: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let log_path = mnt.join(format!("log-{t}"));
    let log_stamp = 9_000 + t as u64;
    let mut log = match OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => f,
        Err(_) => return,
    };
    let mut log_len = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let stamp = ((round * WRITERS + t) as u64) << 32 | i;
        let len = 4096 + (stamp.wrapping_mul(2654435761) % (384 << 10));
        let path = mnt.join(format!("r{round}-w{t}-{i}"));
        let step = || -> std::io::Result<()> {
            let mut f = File::create(&path)?;
            f.write_all(&data_bytes(stamp, 0, len))?;
            f.sync_all()?;
            durable
                .lock()
                .unwrap()
                .files
                .insert(path.clone(), (stamp, len));
            syncs.fetch_add(1, Ordering::Relaxed);
            Ok(())
        };
        if step().is_err() {
            return;
        }
        // Never synced: may or may not survive.
        let scratch = mnt.join(format!("r{round}-w{t}-{i}.tmp"));
        if fs::write(&scratch, data_bytes(stamp ^ 1, 0, len / 2)).is_err() {
            return;
        }
        if i % 2 == 0 {
            let rec = data_bytes(log_stamp, log_len, 1000);
            if log.write_all(&rec).is_err() || log.sync_data().is_err() {
                return;
            }
            log_len += 1000;
            durable
                .lock()
                .unwrap()
                .logs
                .insert(log_path.clone(), (log_stamp, log_len));
            syncs.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn read_all(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = Vec::new();
    File::open(path)?.read_to_end(&mut v)?;
    Ok(v)
}

/// Reads every file under `dir`; returns how many, or the first error.
fn read_tree(dir: &Path) -> Result<usize, String> {
    let mut n = 0;
    for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let ty = e.file_type().map_err(|e| format!("{}: {e}", e))?;
        if ty.is_dir() {
            n += read_tree(&e.path())?;
        } else if ty.is_file() {
            read_all(&e.path()).map_err(|err| format!("reading {}: {err}", e.path().display()))?;
            n += 1;
        }
    }
    Ok(n)
}

#[test]
fn sigkill_during_fsync_heavy_writes_loses_nothing_fsynced() {
    if !can_mount() {
        return;
    }
    let bin = keelfs_bin();
    let dir = tempfile::Builder::new()
        .prefix("keelfs-sigkill-")
        .tempdir()
        .unwrap();
    let legs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("leg{i}.img")))
        .collect();
    for p in &legs {
        File::create(p).unwrap().set_len(LEG_BYTES).unwrap();
    }
    {
        let devs: Vec<keelfs_engine::device::DeviceRef> = legs
            .iter()
            .map(|p| {
                Arc::new(keelfs_engine::device::FileDevice::open(p).unwrap())
                    as keelfs_engine::device::DeviceRef
            })
            .collect();
        format(&devs, &MkfsOptions::default()).expect("mkfs");
    }
    let source = legs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let log = dir.path().join("daemon.log");
    let durable = Arc::new(Mutex::new(Durable::default()));

    for round in 0..ROUNDS {
        let mut child = mount(&bin, &source, &mnt, &log);
        let stop = Arc::new(AtomicBool::new(false));
        let syncs = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (m, d, s, st) = (mnt.clone(), durable.clone(), syncs.clone(), stop.clone());
                std::thread::spawn(move || writer(t, round, m, d, s, st))
            })
            .collect();
        // Kill at a different moment each round, in the thick of it.
        let want = 20 + 25 * round;
        let deadline = Instant::now() + Duration::from_secs(20);
        while syncs.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(7 * round as u64));
        child.kill().expect("SIGKILL the daemon");
        let status = child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        for w in writers {
            w.join().unwrap();
        }
        let fsyncs = syncs.load(Ordering::Relaxed);
        assert!(
            fsyncs >= want.min(10),
            "round {round}: only {fsyncs} fsyncs before the kill"
        );
        println!("round {round}: killed the daemon ({status}) after {fsyncs} fsyncs");

        // Mount again: recovery runs. Everything fsync'ed is there.
        let mut child = mount(&bin, &source, &mnt, &log);
        let d = durable.lock().unwrap();
        let mut problems = Vec::new();
        for (path, &(stamp, len)) in &d.files {
            match read_all(path) {
                Ok(got) if got == data_bytes(stamp, 0, len) => {}
                Ok(got) => problems.push(format!(
                    "{}: {} bytes, expected {len} (or different bytes)",
                    path.display(),
                    got.len()
                )),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        for (path, &(stamp, len)) in &d.logs {
            match read_all(path) {
                Ok(got)
                    if got.len() as u64 >= len
                        && got[..len as usize] == data_bytes(stamp, 0, len)[..] => {}
                Ok(got) => problems.push(format!(
                    "{}: {} bytes, expected at least {len} fdatasync'ed ones intact",
                    path.display(),
                    got.len()
                )),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        let files = read_tree(&mnt);
        drop(d);
        let out = umount_retrying(&mnt);
        let exit = wait_or_kill(&mut child, &mnt);
        assert!(
            problems.is_empty(),
            "round {round}: fsync'ed data lost after SIGKILL:\n{}",
            problems.join("\n")
        );
        let files = files.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(exit.success(), "the remounted daemon exited {exit}");
        let outcome = fsck_paths(&legs, &Options::check());
        assert_eq!(
            outcome.exit_code,
            EXIT_CLEAN,
            "round {round}: fsck -n after the remount: {:?} {:?}",
            outcome.error,
            outcome
                .first()
                .errors()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
        );
        let (nfiles, nlogs) = {
            let d = durable.lock().unwrap();
            (d.files.len(), d.logs.len())
        };
        println!(
            "round {round}: remounted, {nfiles} fsync'ed files and {nlogs} logs intact, {files} \
             files read, fsck clean"
        );
    }
}
