//! The `mkfs.keelfs` program, run as a user runs it: exit status, messages,
//! what it writes and refuses to write.

use keelfs_engine::device::{DeviceRef, FileDevice};
use keelfs_fs::devset::{format_uuid, identify, probe_existing_filesystem};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

/// Cargo builds the program as `mkfs-keelfs` (a binary name cannot have a
/// dot); it is installed as `mkfs.keelfs`.
fn mkfs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mkfs-keelfs"))
}

fn run(args: &[&str], devices: &[&Path]) -> Output {
    mkfs().args(args).args(devices).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn identify_paths(paths: &[&Path]) -> keelfs_fs::devset::DeviceSet {
    let devs: Vec<DeviceRef> = paths
        .iter()
        .map(|p| Arc::new(FileDevice::open(p).unwrap()) as DeviceRef)
        .collect();
    identify(&devs).unwrap()
}

#[test]
fn formats_two_images() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 32 * MIB);
    let b = image(dir.path(), "b.img", 32 * MIB);
    let uuid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0";
    let o = run(
        &["-L", "tank", "-U", uuid, "-b", "2k", "-J", "4m"],
        &[&a, &b],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        uuid,
        "tank",
        "a.img",
        "b.img",
        "Block size: 2048",
        "Journal: 2048 blocks",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    let set = identify_paths(&[&a, &b]);
    let sb = set.superblock();
    assert_eq!(format_uuid(&sb.fs_uuid), uuid);
    assert_eq!(sb.label, "tank");
    assert_eq!(sb.layout.block_size, 2048);
    assert_eq!(sb.layout.journal.blocks, 2048);
    assert_eq!(set.legs().len(), 2);
    assert!(!set.report().is_degraded());
}

#[test]
fn refuses_an_existing_keelfs_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 16 * MIB);
    assert!(run(&["-q"], &[&a]).status.success());
    let before = std::fs::read(&a).unwrap();
    let first = identify_paths(&[&a]).fs_uuid();
    let o = run(&[], &[&a]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("a.img") && err.contains("keelfs") && err.contains("-F"),
        "{err}"
    );
    assert!(std::fs::read(&a).unwrap() == before, "refused run wrote");
    let o = run(&["-F", "-q"], &[&a]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "-q printed {}", stdout(&o));
    assert_ne!(identify_paths(&[&a]).fs_uuid(), first);
}

#[test]
fn refuses_an_ext4_image_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "ext4.img", 16 * MIB);
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&a)
        .status()
        .expect("mkfs.ext4 (e2fsprogs) must be installed");
    assert!(made.success());
    let before = std::fs::read(&a).unwrap();
    let o = run(&[], &[&a]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("ext4.img: contains an ext4 filesystem"),
        "{err}"
    );
    assert!(std::fs::read(&a).unwrap() == before);
    let o = run(&["-F"], &[&a]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("overwriting an ext4 filesystem"));
    let dev = FileDevice::open(&a).unwrap();
    assert!(probe_existing_filesystem(&dev).unwrap().contains("keelfs"));
}

#[test]
fn usage_errors_exit_1_with_the_usage_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 16 * MIB);
    let a_str = a.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["-b", "3000", a_str],
        &["-b", "128k", a_str],
        &["-b", "4q", a_str],
        &["--bogus", a_str],
        &[],
        &["-N", "5", "-i", "4k", a_str],
        &["-N", "0", a_str],
        &["-U", "nonsense", a_str],
        &["-J", "10x", a_str],
        &["-i", "abc", a_str],
    ];
    for args in cases {
        let o = mkfs().args(*args).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("Usage: mkfs.keelfs"), "{args:?}: {err}");
    }
    assert!(std::fs::read(&a).unwrap().iter().all(|&b| b == 0));
    let o = run(&["-V"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("mkfs.keelfs "), "{}", stdout(&o));
    let o = run(&["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("Exit status"));
}

#[test]
fn operational_errors_exit_1_naming_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 16 * MIB);
    let big = image(dir.path(), "big.img", 17 * MIB);
    let small = image(dir.path(), "small.img", MIB);
    let missing = dir.path().join("missing.img");
    let long_label = "x".repeat(65);
    let long_label_args = ["-L", long_label.as_str()];
    let cases: Vec<(Vec<&Path>, &[&str], &str)> = vec![
        (vec![&a, &big], &[], "big.img has 17825792 bytes"),
        (vec![&small], &[], "small.img: too small"),
        (vec![&missing], &[], "missing.img: cannot open"),
        (vec![&a, &a], &[], "given twice"),
        (vec![&a], &["-J", "16"], "bad -J"),
        (vec![&a], &long_label_args, "bad -L"),
    ];
    for (devices, args, want) in cases {
        let o = run(args, &devices);
        assert_eq!(o.status.code(), Some(1), "{want}");
        let err = stderr(&o);
        assert!(
            err.starts_with("mkfs.keelfs: ") && err.contains(want),
            "{want}: {err}"
        );
    }
    assert!(std::fs::read(&a).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 16 * MIB);
    // Some bytes where the metadata would go.
    let mut bytes = std::fs::read(&a).unwrap();
    for (i, b) in bytes.iter_mut().enumerate().step_by(4093) {
        *b = i as u8 | 1;
    }
    std::fs::write(&a, &bytes).unwrap();
    let o = run(&["-n"], &[&a]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("Dry run: nothing was written") && out.contains("tag_table"),
        "{out}"
    );
    assert!(std::fs::read(&a).unwrap() == bytes, "-n changed the image");
    // On an existing filesystem too.
    assert!(run(&["-q", "-F"], &[&a]).status.success());
    let formatted = std::fs::read(&a).unwrap();
    let o = run(&["-n"], &[&a]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("contains a keelfs filesystem"));
    assert!(std::fs::read(&a).unwrap() == formatted);
}

#[test]
fn mkfs_t_keelfs_runs_it() {
    let Some(mkfs8) = ["/usr/sbin/mkfs", "/sbin/mkfs", "/usr/bin/mkfs"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!("no mkfs(8) here: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mkfs-keelfs"), bin.join("mkfs.keelfs")).unwrap();
    let a = image(dir.path(), "a.img", 16 * MIB);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new(mkfs8)
        .args(["-t", "keelfs", "-L", "viamkfs"])
        .arg(&a)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(identify_paths(&[&a]).superblock().label, "viamkfs");
}
