//! `keelfs`: the keelfs mount program and `keelfs status`.
//!
//! ```text
//! keelfs SOURCE MOUNTPOINT [-o OPTIONS]... [-f]     mount (mount -t fuse.keelfs runs this)
//! keelfs status MOUNTPOINT                          per-leg health, errors, cache, journal
//! keelfs scrub MOUNTPOINT [start|status|pause|resume|cancel|wait]
//!                                                   online scrub (default: start, then
//!                                                   show progress until it ends)
//! keelfs replace MOUNTPOINT OLD NEW                 replace leg OLD (member index or path)
//!                                                   by device NEW, resync it, show progress;
//!                                                   NEW = OLD's device re-adds a failed leg
//! keelfs add [-f] MOUNTPOINT NEW                    add device NEW as a new leg (one device
//!                                                   becomes a mirror), resync it, show progress
//! ```
//!
//! Mounting (docs/mount.md has the options and exit codes):
//!
//! 1. Open every leg under its exclusive lock, read-only for `-o ro`. A leg
//!    still locked by a daemon that is shutting down (a plain `fuse` mount
//!    unmounts asynchronously) is waited for, at most [`LOCK_WAIT`].
//! 2. Identify the set and refuse, before anything is mounted and without
//!    writing anything, a set with missing, failed, resyncing or stale legs
//!    unless `-o degraded`, and a set whose unknown read-only-compatible
//!    features allow only `-o ro`. The check's engine threads end with it.
//! 3. `daemon::run_main` mounts and forks; in the serving process the
//!    after-fork hook identifies the set again, mounts the fs core
//!    (`Fs::mount_set`, which marks the superblocks mounted), hands it to the
//!    adapter, starts the worker pool and the status socket
//!    (`/run/keelfs/fuse-MAJOR-MINOR.sock`).
//! 4. On unmount the adapter's `destroy` unmounts the fs core: commit,
//!    flush, superblocks written clean.
//!
//! A leg literally named `status` has to be given as `./status`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use keelfs_engine::device::DeviceRef;
use keelfs_engine::{DeviceError, EngineError};
use keelfs_fs::core::{Fs, MountParams};
use keelfs_fs::devset::{self, DeviceSet, LegOpenOptions};
use keelfs_fs::error::FsError;
use keelfs_fs::fuse::daemon::{self, BuildError, Built};
use keelfs_fs::fuse::{
    mount, status, AdapterConfig, Hooks, KeelFs, MountOptions, PoolConfig, ServeConfig, WorkerPool,
};

/// How long a mount waits for a leg another process holds locked.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long to wait for the identify check's threads to be gone.
const THREADS_GONE_WAIT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let code = if args.get(1).is_some_and(|a| a == "status") {
        status_main(&args)
    } else if args.get(1).is_some_and(|a| a == "scrub") {
        scrub_main(&args)
    } else if args.get(1).is_some_and(|a| a == "replace") {
        replace_main(&args)
    } else if args.get(1).is_some_and(|a| a == "add") {
        add_main(&args)
    } else {
        keelfs_fs::fuse::memory::apply();
        daemon::run_main(args, build)
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `keelfs status MOUNTPOINT`.
fn status_main(args: &[OsString]) -> i32 {
    let rest = &args[2..];
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "Usage: keelfs status MOUNTPOINT\n\n\
             Shows the health and error counts of every leg of the keelfs filesystem\n\
             mounted at MOUNTPOINT, its cache counters and its journal state."
        );
        return 0;
    }
    let [mountpoint] = rest else {
        eprintln!("keelfs: usage: keelfs status MOUNTPOINT");
        return 1;
    };
    match status::query(Path::new(mountpoint)) {
        Ok(report) => {
            print!("{}", report.render());
            0
        }
        Err(e) => {
            eprintln!("keelfs: {e}");
            1
        }
    }
}

/// `keelfs scrub MOUNTPOINT [COMMAND]`: COMMAND is sent to the daemon;
/// without one (or with `wait`) the scrub is started (unless `wait`) and
/// its progress shown every second until it ends. Exit 0 when it finished
/// with nothing unrepairable, 2 when blocks had no good copy, 1 on errors.
fn scrub_main(args: &[OsString]) -> i32 {
    let rest = &args[2..];
    let usage = "keelfs: usage: keelfs scrub MOUNTPOINT [start|status|pause|resume|cancel|wait]";
    let (mountpoint, cmd) = match rest {
        [m] => (m, "run"),
        [m, c] => match c.to_str() {
            Some(c @ ("start" | "status" | "pause" | "resume" | "cancel" | "wait")) => (m, c),
            _ => {
                eprintln!("{usage}");
                return 1;
            }
        },
        _ => {
            eprintln!("{usage}");
            return 1;
        }
    };
    let mountpoint = Path::new(mountpoint);
    let send = |c: &str| status::command(mountpoint, &format!("scrub {c}"));
    let first = match cmd {
        "run" => "start",
        "wait" => "status",
        c => c,
    };
    let answer = match send(first) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keelfs: {e}");
            return 1;
        }
    };
    print!("{answer}");
    if answer.starts_with("error:") {
        return 1;
    }
    if cmd != "run" && cmd != "wait" {
        return 0;
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let line = match send("status") {
            Ok(l) => l,
            Err(e) => {
                eprintln!("keelfs: {e}");
                return 1;
            }
        };
        print!("{line}");
        if !line.starts_with("scrub: running") && !line.starts_with("scrub: paused") {
            let unrepairable = line
                .trim()
                .split(", ")
                .find_map(|f| f.strip_suffix(" unrepairable"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
            return if line.starts_with("scrub: finished") && unrepairable == 0 {
                0
            } else if unrepairable > 0 {
                2
            } else {
                1
            };
        }
    }
}

/// `keelfs replace MOUNTPOINT OLD NEW`: asks the daemon to replace leg OLD
/// by NEW (NEW the device OLD already has: re-add it after a failure),
/// then shows the resync's progress every second until it ends. Exit 0
/// when the new leg is in service, 1 otherwise.
fn replace_main(args: &[OsString]) -> i32 {
    let [mountpoint, old, new] = &args[2..] else {
        eprintln!("keelfs: usage: keelfs replace MOUNTPOINT OLD NEW");
        return 1;
    };
    let (Some(old), Some(new)) = (old.to_str(), new.to_str()) else {
        eprintln!("keelfs: OLD and NEW must be valid UTF-8");
        return 1;
    };
    // The daemon opens NEW itself: give it an absolute path.
    let new = std::path::absolute(new).map_or(new.to_string(), |p| p.display().to_string());
    let mountpoint = Path::new(mountpoint);
    let request = format!("replace {old}\t{new}");
    start_and_follow(mountpoint, &request, "replace started: leg ")
}

/// `keelfs add [-f] MOUNTPOINT NEW`: asks the daemon to add NEW as a new
/// leg, then shows its resync's progress until it ends. Exit 0 when the
/// new leg is in service, 1 otherwise.
fn add_main(args: &[OsString]) -> i32 {
    let usage = "keelfs: usage: keelfs add [-f] MOUNTPOINT NEW";
    let (force, rest) = match &args[2..] {
        [flag, rest @ ..] if flag == "-f" || flag == "--force" => (true, rest),
        rest => (false, rest),
    };
    let [mountpoint, new] = rest else {
        eprintln!("{usage}");
        return 1;
    };
    let Some(new) = new.to_str() else {
        eprintln!("keelfs: NEW must be valid UTF-8");
        return 1;
    };
    let new = std::path::absolute(new).map_or(new.to_string(), |p| p.display().to_string());
    let request = format!("add {}{new}", if force { "-f " } else { "" });
    start_and_follow(Path::new(mountpoint), &request, "add started: leg ")
}

/// Sends `request`; if the answer starts with `started` (followed by the
/// leg number), shows that leg's resync progress every half second until
/// it ends. Exit 0 when it finished (the leg is in service), 1 otherwise.
fn start_and_follow(mountpoint: &Path, request: &str, started: &str) -> i32 {
    let answer = match status::command(mountpoint, request) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("keelfs: {e}");
            return 1;
        }
    };
    print!("{answer}");
    let Some(leg) = answer
        .strip_prefix(started)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return 1;
    };
    let prefix = format!("leg {leg}:");
    let mut last_shown = String::new();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let report = match status::query(mountpoint) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("keelfs: {e}");
                return 1;
            }
        };
        let Some(line) = report.resyncs.iter().rev().find(|l| l.starts_with(&prefix)) else {
            continue;
        };
        if *line != last_shown {
            println!("resync: {line}");
            last_shown = line.clone();
        }
        if line.contains(": finished") {
            return 0;
        }
        if line.contains(": failed") || line.contains(": cancelled") {
            return 1;
        }
    }
}

/// Whether `e` says a leg is locked by another process.
fn lock_busy(e: &FsError) -> bool {
    matches!(
        e,
        FsError::Engine(EngineError::Device(DeviceError::Open { source, .. }))
            if source.kind() == std::io::ErrorKind::WouldBlock
    )
}

/// Opens the legs, waiting up to [`LOCK_WAIT`] for a lock held elsewhere.
fn open_legs(legs: &[PathBuf], read_only: bool) -> Result<Vec<DeviceRef>, String> {
    let deadline = Instant::now() + LOCK_WAIT;
    let opts = LegOpenOptions {
        read_only,
        wait_for_lock: false,
    };
    let mut logged = false;
    loop {
        match devset::open_legs(legs, opts) {
            Err(e) if lock_busy(&e) && Instant::now() < deadline => {
                if !logged {
                    log::info!("{e}: waiting up to {LOCK_WAIT:?} for it");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if lock_busy(&e) => {
                return Err(format!(
                    "{e} (still locked after {}s: is it mounted or being checked?)",
                    LOCK_WAIT.as_secs()
                ))
            }
            other => return other.map_err(|e| e.to_string()),
        }
    }
}

/// The checks made before anything is mounted (see the module docs).
fn check_set(set: &DeviceSet, opts: &MountOptions) -> Result<(), String> {
    let report = set.report();
    if report.is_degraded() && !opts.degraded {
        return Err(format!(
            "refusing to mount a degraded set: {}; mount with -o degraded to use it anyway \
             (with less redundancy)",
            report.describe().join("; ")
        ));
    }
    if report.read_only_required && !opts.read_only() {
        return Err(
            "this filesystem has features this keelfs does not know; it can only be \
             mounted read-only (-o ro)"
                .into(),
        );
    }
    Ok(())
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count())
}

/// Waits until the process is single-threaded again (joined threads can
/// linger in /proc for a moment), so the daemon may fork.
fn wait_single_threaded() {
    let deadline = Instant::now() + THREADS_GONE_WAIT;
    while thread_count() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn build(opts: &MountOptions) -> Result<Built<KeelFs>, BuildError> {
    // Resolved now: after the mount, looking at the mount point would ask
    // the filesystem itself, which does not answer before the fork.
    let target = mount::check_mountpoint(&opts.mountpoint)?;
    let devices = open_legs(&with_found_members(&opts.legs), opts.read_only())?;
    {
        let set = devset::identify(&devices)?;
        check_set(&set, opts)?;
    }
    wait_single_threaded();

    let defaults = MountParams::default();
    let params = MountParams {
        read_only: opts.read_only(),
        degraded: opts.degraded,
        cache_bytes: opts.cache_size.unwrap_or(defaults.cache_bytes),
        ..defaults
    };
    let mut pool_config = PoolConfig::default();
    if let Some(threads) = opts.threads {
        pool_config.threads = threads;
    }
    let pool = WorkerPool::new(pool_config);
    let fs = KeelFs::new(AdapterConfig::from_options(opts), pool.clone());
    let handle = fs.handle();
    let remount_handle = handle.clone();
    let source = opts.mount_source().to_owned();
    let hooks = Hooks::default()
        .after_fork(move |notifier| {
            let set = devset::identify(&devices).map_err(|e| e.to_string())?;
            let mounted = Fs::mount_set(set, &params).map_err(|e| e.to_string())?;
            handle.set_notifier(notifier.clone());
            handle.install(mounted);
            pool.start().map_err(|e| e.to_string())?;
            if let Some(dev) = mounted_dev(&target) {
                if let Err(e) = handle.start_status(status::socket_path(dev), &source, &target) {
                    log::warn!("no status socket (keelfs status will not work): {e}");
                }
            }
            Ok(())
        })
        .on_remount(move |read_only| remount_handle.remounted(read_only));
    Ok((fs, ServeConfig::default(), hooks))
}

/// The legs named, plus members of their set found among the block
/// devices by uuid (as `btrfs device scan` would): a set on /dev/loop0 and
/// /dev/loop1 mounts from either one. Image files are never found: they
/// must be named.
fn with_found_members(named: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    use keelfs_fs::member_scan::{block_device_candidates, find_missing_members};
    let mut legs = named.to_vec();
    for found in find_missing_members(named, &block_device_candidates()) {
        log::info!(
            "member {} of the set found on {}",
            found.member,
            found.path.display()
        );
        legs.push(found.path);
    }
    legs
}

/// The device number of the FUSE mount now at `target`, from
/// /proc/self/mountinfo (a stat of `target` would ask the filesystem,
/// which is not serving yet).
fn mounted_dev(target: &Path) -> Option<(u32, u32)> {
    let mounts = mount::read_mountinfo().ok()?;
    let top = mount::top_mount_at(&mounts, target)?;
    top.is_fuse().then_some(top.dev)
}
