//! The `keelfs` mount program: through mount(8), `keelfs status`, refused
//! mounts (each a clear message, an exit code, nothing mounted, nothing
//! written to the legs), degraded and read-only mounts, and permissions as
//! another user with `allow_other` (checked by the kernel with
//! `default_permissions`, by the adapter without).
//!
//! Needs root and /dev/fuse (skipped otherwise); the mount(8) test also
//! needs mount.fuse3.

mod fuse_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use fuse_support::*;

/// `keelfs status MNT`: its output, asserting success.
fn status(mnt: &Path) -> String {
    let out = Command::new(keelfs_bin())
        .arg("status")
        .arg(mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keelfs status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A mount helper named `keelfs-test-PID` in /usr/local/sbin pointing at
/// the binary under test (a unique name, so an installed `keelfs` is never
/// replaced by a test build); removed when dropped.
struct Helper {
    link: std::path::PathBuf,
    fstype: String,
}

impl Helper {
    fn install() -> Helper {
        let name = format!("keelfs-test-{}", std::process::id());
        let link = Path::new("/usr/local/sbin").join(&name);
        let _ = fs::remove_file(&link);
        fs::create_dir_all("/usr/local/sbin").unwrap();
        std::os::unix::fs::symlink(keelfs_bin(), &link).unwrap();
        Helper {
            link,
            fstype: format!("fuse.{name}"),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.link);
    }
}

#[test]
fn mount_8_status_and_umount() {
    if !can_mount("mount_8_status_and_umount") {
        return;
    }
    if !Path::new("/sbin/mount.fuse3").exists() && !Path::new("/usr/sbin/mount.fuse3").exists() {
        eprintln!("mount_8_status_and_umount: mount.fuse3 not installed; skipped");
        return;
    }
    let fx = Fixture::new(2, 256 * MIB);
    let helper = Helper::install();
    let opts = format!(
        "allow_other,default_permissions,logfile={}",
        fx.log().display()
    );
    let out = Command::new("mount")
        .args(["-t", &helper.fstype, &fx.source()])
        .arg(&fx.mnt)
        .args(["-o", &opts])
        .output()
        .unwrap();
    // From here on the guard takes the mount down whatever happens.
    let m = Mounted::adopt(&fx, &fx.source(), "allow_other,default_permissions");
    assert!(
        out.status.success(),
        "mount -t {}: {}",
        helper.fstype,
        String::from_utf8_lossy(&out.stderr)
    );
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.contains(fx.mnt.to_str().unwrap()))
        .expect("in /proc/mounts");
    assert!(line.starts_with(&format!("{} ", fx.source())), "{line}");
    assert!(
        line.contains(" fuse ") && line.contains("allow_other"),
        "{line}"
    );
    // mount.fuse3 passes dev,suid: the mount has neither nodev nor nosuid.
    assert!(
        !line.contains("nodev") && !line.contains("nosuid"),
        "{line}"
    );

    fs::write(m.path("hello"), b"through mount(8)").unwrap();
    let text = status(&fx.mnt);
    for want in [
        "state: ONLINE",
        "NAME",
        "READ",
        "WRITE",
        "CKSUM",
        "HEALED",
        "leg0.img",
        "leg1.img",
        "hits",
        "misses",
        "dirty",
        "journal: committed sequence",
    ] {
        assert!(text.contains(want), "`{want}` missing from status:\n{text}");
    }
    let leg_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("\t  /")).collect();
    assert_eq!(leg_lines.len(), 2, "{text}");
    assert!(leg_lines.iter().all(|l| l.contains("ONLINE")), "{text}");
    // Not a keelfs mount: a clear error.
    let out = Command::new(keelfs_bin())
        .args(["status", "/"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a keelfs mount point"));

    // The status socket is named after the mount's device number, and goes
    // away with the daemon.
    let dev = fs::metadata(&fx.mnt).unwrap().dev();
    let socket = keelfs_fs::fuse::status::socket_path((libc::major(dev), libc::minor(dev)));
    assert!(socket.exists(), "{}", socket.display());
    let out = umount_retrying(&fx.mnt);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.unmounted_elsewhere();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "status socket left behind"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Unmount done by umount(8) above; finish mounts again and compares.
    let again = fx.mount("allow_other,default_permissions");
    assert_eq!(fs::read(again.path("hello")).unwrap(), b"through mount(8)");
    again.finish();
    drop(helper);
}

/// Flips one byte of `image` at `offset`.
fn flip(image: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn bad_copies_are_healed_counted_and_unreadable_data_is_eio() {
    if !can_mount("bad_copies_are_healed_counted_and_unreadable_data_is_eio") {
        return;
    }
    let fx = Fixture::new(2, 128 * MIB);
    let good = pattern(0x600D, 0, MIB as usize);
    let lost = pattern(0x1057, 0, 64 * 1024);
    let m = fx.mount("");
    fs::write(m.path("healable"), &good).unwrap();
    fs::write(m.path("doomed"), &lost).unwrap();
    m.unmount();
    // One copy of "healable" bad (leg 1), both copies of "doomed" bad.
    let healable = blocks_starting_with(&fx.legs[1], &good[..64]);
    assert_eq!(healable.len(), 1, "the file's first block on leg 1");
    flip(&fx.legs[1], healable[0] + 100);
    for leg in &fx.legs {
        let doomed = blocks_starting_with(leg, &lost[..64]);
        assert_eq!(doomed.len(), 1);
        flip(leg, doomed[0] + 7);
    }
    let m = fx.mount("");
    assert_eq!(errno_of(fs::read(m.path("doomed"))), libc::EIO);
    // A read goes to one leg (they take turns): read until leg 1 served one.
    let leg1_counts = || {
        let text = status(&fx.mnt);
        let line = text
            .lines()
            .find(|l| l.starts_with("\t  /") && l.contains("leg1.img"))
            .unwrap_or_else(|| panic!("{text}"))
            .to_owned();
        // NAME STATE READ WRITE CKSUM HEALED
        let cols: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        (cols[1].clone(), cols[5].parse::<u64>().unwrap(), text)
    };
    let mut tries = 0;
    while leg1_counts().1 == 0 {
        tries += 1;
        assert!(tries < 50, "leg 1 never served a read: {}", leg1_counts().2);
        fs::write("/proc/sys/vm/drop_caches", b"1").unwrap();
        assert!(
            fs::read(m.path("healable")).unwrap() == good,
            "healed read differs"
        );
    }
    let (state, healed, text) = leg1_counts();
    assert_eq!((state.as_str(), healed), ("DEGRADED", 1), "{text}");
    assert!(text.contains("state: DEGRADED"), "{text}");
    // The healed copy is good again: the next mount reads it without errors.
    fs::remove_file(m.path("doomed")).unwrap();
    m.unmount();
    let log = fs::read_to_string(fx.log()).unwrap();
    assert!(
        log.contains("read on inode") && log.contains("EIO"),
        "EIO not logged with its inode:\n{log}"
    );
    let m = fx.mount("");
    assert!(fs::read(m.path("healable")).unwrap() == good);
    let text = status(&fx.mnt);
    assert!(text.contains("state: ONLINE"), "{text}");
    m.finish();
}

/// Checks a refused mount: exit code, message, nothing mounted, legs
/// untouched.
fn refused(fx: &Fixture, source: &str, opts: &str, code: i32, message: &str) {
    let before = leg_fingerprint(&fx.legs);
    let out = fx.run_keelfs(source, opts);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "keelfs {source} -o {opts}: {stderr}"
    );
    assert!(
        stderr.contains(message),
        "keelfs {source} -o {opts}: `{message}` not in: {stderr}"
    );
    assert!(stderr.starts_with("keelfs: "), "{stderr}");
    assert!(!is_mounted(&fx.mnt), "mounted anyway");
    assert_eq!(leg_fingerprint(&fx.legs), before, "the legs were written");
}

#[test]
fn bad_mounts_are_refused_and_change_nothing() {
    if !can_mount("bad_mounts_are_refused_and_change_nothing") {
        return;
    }
    let fx = Fixture::new(2, 64 * MIB);
    let missing = fx.dir.path().join("nope.img");
    refused(
        &fx,
        &format!("{},{}", fx.legs[0].display(), missing.display()),
        "",
        32,
        "No such file or directory",
    );
    refused(
        &fx,
        &fx.source(),
        "bogus_option",
        1,
        "unknown mount option `bogus_option`",
    );
    refused(&fx, &fx.source(), "cache_size=lots", 1, "cache_size");
    // One leg of two: degraded, refused without -o degraded.
    refused(
        &fx,
        &fx.legs[0].display().to_string(),
        "",
        32,
        "-o degraded",
    );
    // The same leg twice.
    refused(
        &fx,
        &format!("{},{}", fx.legs[0].display(), fx.legs[0].display()),
        "",
        1,
        "given twice",
    );
    // An unformatted image.
    let blank = Fixture::unformatted(1, 64 * MIB);
    refused(&blank, &blank.source(), "", 32, "not a keelfs device");
    // A leg of another filesystem.
    let other = Fixture::new(1, 64 * MIB);
    let mixed = format!("{},{}", fx.legs[0].display(), other.legs[0].display());
    refused(&fx, &mixed, "", 32, "another keelfs filesystem");
    // A mount point that does not exist.
    let out = Command::new(keelfs_bin())
        .arg(fx.source())
        .arg(fx.dir.path().join("no-such-dir"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(32));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-dir"));
    // A set that is mounted already.
    let m = fx.mount("");
    let out = fx.run_keelfs(&fx.source(), "");
    assert_eq!(out.status.code(), Some(32));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already mounted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.finish();
}

#[test]
fn degraded_and_read_only_mounts() {
    if !can_mount("degraded_and_read_only_mounts") {
        return;
    }
    let fx = Fixture::new(2, 128 * MIB);
    let m = fx.mount("");
    fs::write(m.path("kept"), b"on both legs").unwrap();
    m.unmount();

    // Read-only: visible, not writable, nothing written to the legs.
    let before = leg_fingerprint(&fx.legs);
    let ro = fx.mount("ro");
    assert_eq!(fs::read(ro.path("kept")).unwrap(), b"on both legs");
    assert_eq!(errno_of(fs::write(ro.path("new"), b"x")), libc::EROFS);
    assert!(status(&fx.mnt).contains("read-only"));
    ro.unmount();
    assert_eq!(leg_fingerprint(&fx.legs), before, "a read-only mount wrote");

    // One leg missing, with -o degraded: works, and says so.
    let one = fx.legs[0].display().to_string();
    let m = fx.mount_source(&one, "degraded");
    assert_eq!(fs::read(m.path("kept")).unwrap(), b"on both legs");
    let text = status(&fx.mnt);
    assert!(text.contains("state: DEGRADED"), "{text}");
    assert!(text.contains("MISSING"), "{text}");
    fs::write(m.path("while-degraded"), b"one leg only").unwrap();
    m.unmount();

    // The leg that was away is stale now: fsck -n says so, fsck -y brings
    // it up to date from the other leg, and the whole set mounts again.
    if let Some(fsck) = fsck_program() {
        let run = |flag: &str| {
            std::process::Command::new(&fsck)
                .arg(flag)
                .args(&fx.legs)
                .output()
                .expect("run fsck")
        };
        let check = run("-n");
        assert_eq!(
            check.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let repair = run("-y");
        assert_eq!(
            repair.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&repair.stdout)
        );
        let again = run("-n");
        assert!(
            again.status.success(),
            "{}",
            String::from_utf8_lossy(&again.stdout)
        );
        let both = fx.mount("");
        assert_eq!(
            fs::read(both.path("while-degraded")).unwrap(),
            b"one leg only"
        );
        assert!(!status(&fx.mnt).contains("DEGRADED"));
        both.finish();
    }
}

#[test]
fn permissions_checked_by_the_kernel_with_default_permissions() {
    if !can_mount("permissions_checked_by_the_kernel_with_default_permissions") {
        return;
    }
    let (uid, gid) = test_user();
    let fx = Fixture::new(2, 128 * MIB);
    let m = fx.mount("allow_other,default_permissions");
    permission_checks(&fx, uid, gid);
    m.finish();
}

#[test]
fn permissions_checked_by_the_adapter_without_default_permissions() {
    if !can_mount("permissions_checked_by_the_adapter_without_default_permissions") {
        return;
    }
    let (uid, gid) = test_user();
    let fx = Fixture::new(2, 128 * MIB);
    let m = fx.mount("allow_other");
    permission_checks(&fx, uid, gid);
    // access(2) is answered by the adapter here.
    let root_only = m.path("root-only");
    fs::write(&root_only, b"x").unwrap();
    fs::set_permissions(&root_only, fs::Permissions::from_mode(0o600)).unwrap();
    let (ok_r, _, _) = sh_as(uid, gid, &format!("test -r '{}'", root_only.display()));
    assert!(!ok_r, "access(R_OK) allowed on a 0600 root file");
    let (ok_x, _, _) = sh_as(0, 0, &format!("test -x '{}'", root_only.display()));
    assert!(!ok_x, "access(X_OK) allowed without any x bit");
    m.finish();
}

/// What an unprivileged user may and may not do; the same answers whoever
/// checks.
fn permission_checks(fx: &Fixture, uid: u32, gid: u32) {
    let mnt = fx.mnt.display().to_string();
    fs::set_permissions(&fx.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(fx.path("pub")).unwrap();
    fs::set_permissions(fx.path("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::create_dir(fx.path("priv")).unwrap();
    fs::set_permissions(fx.path("priv"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(fx.path("priv/secret"), b"s").unwrap();
    fs::write(fx.path("ro"), b"readable").unwrap();
    fs::set_permissions(fx.path("ro"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(fx.path("sticky")).unwrap();
    fs::set_permissions(fx.path("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(fx.path("sticky/roots"), b"r").unwrap();
    fs::write(fx.path("suid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(fx.path("suid"), fs::Permissions::from_mode(0o4777)).unwrap();

    let may = |script: &str| {
        let (ok, out, err) = sh_as(uid, gid, script);
        assert!(ok, "as uid {uid}: `{script}` failed: {err}");
        out
    };
    let may_not = |script: &str, why: &str| {
        let (ok, _, err) = sh_as(uid, gid, script);
        assert!(!ok, "as uid {uid}: `{script}` succeeded");
        assert!(err.contains(why), "`{script}`: `{why}` not in: {err}");
    };
    assert_eq!(may(&format!("cat {mnt}/ro")), "readable");
    may(&format!("ls {mnt}/pub"));
    may(&format!(
        "echo mine > {mnt}/pub/mine && mkdir {mnt}/pub/d && chmod 600 {mnt}/pub/mine"
    ));
    let meta = fs::metadata(fx.path("pub/mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    assert_eq!(meta.mode() & 0o777, 0o600);
    may_not(&format!("ls {mnt}/priv"), "Permission denied");
    may_not(&format!("cat {mnt}/priv/secret"), "Permission denied");
    may_not(&format!("echo x >> {mnt}/ro"), "Permission denied");
    may_not(&format!("touch {mnt}/newfile"), "Permission denied");
    may_not(&format!("rm -f {mnt}/ro"), "Permission denied");
    may_not(&format!("chmod 777 {mnt}/ro"), "Operation not permitted");
    may_not(&format!("chown {uid} {mnt}/ro"), "Operation not permitted");
    may_not(
        &format!("chown 0 {mnt}/pub/mine"),
        "Operation not permitted",
    );
    // touch reports its open's EACCES rather than utimensat's EPERM.
    may_not(&format!("touch -d @1 {mnt}/ro"), "cannot touch");
    may_not(&format!("rm {mnt}/sticky/roots"), "Operation not permitted");
    may_not(&format!("mv {mnt}/ro {mnt}/pub/"), "Permission denied");
    // Root's file in a world-writable dir: the user may delete it (no
    // sticky bit), and write into a world-writable setuid file, which
    // loses its setuid bit.
    may(&format!("printf more >> {mnt}/suid"));
    let mode = fs::metadata(fx.path("suid")).unwrap().mode();
    assert_eq!(
        mode & 0o7777,
        0o777,
        "setuid kept after a write by another user"
    );
    // Root chowning a setuid file clears the bit too.
    fs::set_permissions(fx.path("ro"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::chown(fx.path("ro"), Some(uid), None).unwrap();
    assert_eq!(fs::metadata(fx.path("ro")).unwrap().mode() & 0o7777, 0o755);
    // And the user owns it now.
    may(&format!("chmod 600 {mnt}/ro && touch -d @1 {mnt}/ro"));
}

#[test]
fn mount_right_after_umount_waits_for_the_old_daemon() {
    if !can_mount("mount_right_after_umount_waits_for_the_old_daemon") {
        return;
    }
    let fx = Fixture::new(2, 256 * MIB);
    let m = fx.mount("");
    // Enough unflushed work that the old daemon is still busy after umount
    // returns (a plain `fuse` mount unmounts asynchronously).
    let data = pattern(5, 5, 64 * MIB as usize);
    fs::write(m.path("big"), &data).unwrap();
    for i in 0..200 {
        fs::write(m.path(&format!("small-{i}")), b"x").unwrap();
    }
    // umount(8), not the guard: it waits for nothing but the kernel.
    let umount = || Command::new("umount").arg(&fx.mnt).output().unwrap();
    let mut out = umount();
    for _ in 0..100 {
        // Busy only while a child spawned by a parallel test holds our
        // descriptors until its exec.
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("busy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        out = umount();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.unmounted_elsewhere();
    // No waiting here: the new mount waits for the old daemon's locks.
    let again = fx.mount("");
    assert!(fs::read(again.path("big")).unwrap() == data);
    // big, small-0 … small-199, lost+found.
    assert_eq!(fs::read_dir(&fx.mnt).unwrap().count(), 202);
    again.finish();
}
