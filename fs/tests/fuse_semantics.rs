//! Linux semantics that xfstests checks and that the FUSE adapter and the
//! fs core must provide themselves, through a real mount: POSIX ACLs
//! (mode bits, chmod, inheritance, umask, setgid), clearing setuid/setgid
//! on writes by others, access times per mount option, file handles,
//! chattr flags, SEEK_DATA/SEEK_HOLE and rename flags.
//!
//! Each test mounts its own two-leg mirror with `keelfs` and ends with
//! `Mounted::finish` (unmount, fsck -n, mount again, compare the tree).
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use fuse_support::*;

const OPTS: &str = "allow_other,default_permissions";

fn fixture(test: &str) -> Option<Fixture> {
    can_mount(test).then(|| Fixture::new(2, 256 * MIB))
}

/// The permission bits as `stat -c %a` shows them (as xfstests reads
/// them): statx for the mode alone, which the kernel answers from its
/// cache while the mode is valid there — std's metadata asks for more
/// (the birth time, blocks) and would fetch fresh attributes, hiding a
/// stale cache.
fn mode_of(path: &Path) -> u32 {
    let out = ok("stat", &["-c", "%a", p(path)]);
    u32::from_str_radix(out.trim(), 8).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// setxattr(2) of raw bytes (through setfattr's hex form), for values the
/// ACL tools would never send; the errno on failure.
fn raw_setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    match run(
        "setfattr",
        &["-n", name, "-v", &format!("0x{hex}"), p(path)],
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.contains("Invalid argument") => Err(libc::EINVAL),
        Err(e) if e.contains("not supported") => Err(libc::EOPNOTSUPP),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn posix_acls_set_mode_bits_follow_chmod_and_grant_access() {
    let Some(fx) = fixture("posix_acls_set_mode_bits_follow_chmod_and_grant_access") else {
        return;
    };
    let (uid, gid) = test_user();
    let m = fx.mount(OPTS);
    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.join("secret");
    fs::write(&f, b"ok\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
    let read = format!("cat {}", p(&f));
    assert!(
        !sh_as(uid, gid, &read).0,
        "0600 root file readable by others"
    );

    // A named user entry grants what the mode bits do not; the mask shows
    // up as the group bits.
    ok("setfacl", &["-m", &format!("u:{uid}:r"), p(&f)]);
    assert_eq!(mode_of(&f), 0o640);
    let (good, out, err) = sh_as(uid, gid, &read);
    assert!(good && out == "ok\n", "ACL did not grant read: {err}");
    let acl = ok("getfacl", &["-n", "--omit-header", p(&f)]);
    assert!(acl.contains(&format!("user:{uid}:r--")), "{acl}");
    assert!(acl.contains("mask::r--"), "{acl}");

    // chmod rewrites the mask: g-r takes the named user's read away.
    ok("chmod", &["g-r", p(&f)]);
    assert_eq!(mode_of(&f), 0o600);
    let acl = ok("getfacl", &["-n", "--omit-header", p(&f)]);
    assert!(acl.contains("mask::---"), "{acl}");
    assert!(!sh_as(uid, gid, &read).0, "mask did not take read away");
    ok("chmod", &["g+r", p(&f)]);
    assert!(sh_as(uid, gid, &read).0);

    // An ACL the mode bits say entirely is not stored: only the mode changes.
    let g = dir.join("plain");
    fs::write(&g, b"").unwrap();
    ok("setfacl", &["--set", "u::rwx,g::r-x,o::--x", p(&g)]);
    assert_eq!(mode_of(&g), 0o751);
    assert!(getxattr_err(&g, "system.posix_acl_access") == libc::ENODATA);
    // Removing every extended entry leaves a plain file.
    ok("setfacl", &["-b", p(&f)]);
    assert!(getxattr_err(&f, "system.posix_acl_access") == libc::ENODATA);
    assert!(!sh_as(uid, gid, &read).0);
    let plain_mode = mode_of(&f);

    // Malformed ACLs are refused (EINVAL), nothing stored.
    let no_other: Vec<u8> = [
        2u32.to_le_bytes().as_slice(),
        &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff],
    ]
    .concat();
    assert_eq!(
        raw_setxattr(&f, "system.posix_acl_access", &no_other),
        Err(libc::EINVAL)
    );
    assert_eq!(mode_of(&f), plain_mode);

    // A default ACL is for directories only.
    assert!(run("setfacl", &["-d", "-m", "u::rwx", p(&f)]).is_err());

    // A non-member owner setting an ACL on its setgid file loses setgid.
    let own = dir.join("own");
    fs::write(&own, b"").unwrap();
    std::os::unix::fs::chown(&own, Some(uid), Some(0)).unwrap();
    fs::set_permissions(&own, fs::Permissions::from_mode(0o2770)).unwrap();
    let (good, _, err) = sh_as(uid, gid, &format!("setfacl -m g::r-x {}", p(&own)));
    assert!(good, "{err}");
    assert_eq!(
        mode_of(&own),
        0o750,
        "setgid survived an ACL set by a non-member"
    );
    // uid 0 keeps it.
    fs::set_permissions(&own, fs::Permissions::from_mode(0o2770)).unwrap();
    ok("setfacl", &["-m", &format!("u:{uid}:rx"), p(&own)]);
    assert_eq!(mode_of(&own) & 0o2000, 0o2000);

    // Everything survives a remount (finish compares modes; ACLs here).
    m.unmount();
    let m = fx.mount(OPTS);
    let f = m.path("d/secret");
    let acl = ok("getfacl", &["-n", "--omit-header", p(&m.path("d/own"))]);
    assert!(acl.contains(&format!("user:{uid}:r-x")), "{acl}");
    assert_eq!(mode_of(&f), plain_mode);
    m.finish();
}

/// The errno of getxattr(2) on `name` (0 if it succeeded).
fn getxattr_err(path: &Path, name: &str) -> i32 {
    match xattr_get(path, name) {
        Ok(_) => 0,
        Err(e) => e,
    }
}

fn xattr_get(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let out = std::process::Command::new("getfattr")
        .args(["--absolute-names", "-e", "hex", "-n", name, p(path)])
        .output()
        .unwrap();
    if out.status.success() {
        return Ok(out.stdout);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(if err.contains("No such attribute") {
        libc::ENODATA
    } else if err.contains("not supported") {
        libc::EOPNOTSUPP
    } else {
        -1
    })
}

#[test]
fn default_acls_are_inherited_and_replace_the_umask() {
    let Some(fx) = fixture("default_acls_are_inherited_and_replace_the_umask") else {
        return;
    };
    let (uid, _) = test_user();
    let m = fx.mount(OPTS);
    // Without a default ACL the umask applies (the kernel leaves it to us).
    let plain = m.path("plain");
    fs::create_dir(&plain).unwrap();
    ok(
        "sh",
        &[
            "-c",
            &format!(
                "umask 027 && cd {} && touch f && mkdir d && mknod p p",
                p(&plain)
            ),
        ],
    );
    assert_eq!(mode_of(&plain.join("f")), 0o640);
    assert_eq!(mode_of(&plain.join("d")), 0o750);
    assert_eq!(mode_of(&plain.join("p")), 0o640);

    // With one, the umask is ignored and the ACL masks the mode.
    let dir = m.path("inherit");
    fs::create_dir(&dir).unwrap();
    ok(
        "setfacl",
        &[
            "-d",
            "-m",
            &format!("u::rwx,g::r-x,o::---,u:{uid}:rwx,m::rwx"),
            p(&dir),
        ],
    );
    ok(
        "sh",
        &[
            "-c",
            &format!(
                "umask 077 && cd {} && touch f && mkdir sub && ln -s f link",
                p(&dir)
            ),
        ],
    );
    let f = dir.join("f");
    // touch asks 0666: user rw, mask rw (named entry), other none.
    assert_eq!(mode_of(&f), 0o660);
    let acl = ok("getfacl", &["-n", "--omit-header", p(&f)]);
    assert!(acl.contains(&format!("user:{uid}:rwx")), "{acl}");
    assert!(acl.contains("mask::rw-"), "{acl}");
    let sub = dir.join("sub");
    assert_eq!(mode_of(&sub), 0o770);
    let acl = ok("getfacl", &["-n", "--omit-header", p(&sub)]);
    assert!(acl.contains(&format!("default:user:{uid}:rwx")), "{acl}");
    // A grandchild inherits through the new directory's default ACL.
    fs::write(sub.join("g"), b"").unwrap();
    let acl = ok("getfacl", &["-n", "--omit-header", p(&sub.join("g"))]);
    assert!(acl.contains(&format!("user:{uid}:rwx")), "{acl}");
    // Symlinks get nothing.
    assert_eq!(
        fs::symlink_metadata(dir.join("link")).unwrap().mode() & 0o777,
        0o777
    );

    // A minimal default ACL: no access ACL is stored for the children.
    let min = m.path("minimal");
    fs::create_dir(&min).unwrap();
    ok("setfacl", &["-d", "--set", "u::rwx,g::r-x,o::r-x", p(&min)]);
    ok("sh", &["-c", &format!("umask 077 && touch {}/f", p(&min))]);
    assert_eq!(mode_of(&min.join("f")), 0o644);
    assert_eq!(
        getxattr_err(&min.join("f"), "system.posix_acl_access"),
        libc::ENODATA
    );
    m.finish();
}

#[test]
fn noacl_mounts_refuse_acls() {
    let Some(fx) = fixture("noacl_mounts_refuse_acls") else {
        return;
    };
    let m = fx.mount("noacl,default_permissions");
    let f = m.path("f");
    fs::write(&f, b"").unwrap();
    assert!(run("setfacl", &["-m", "u:1:r", p(&f)]).is_err());
    assert_eq!(
        getxattr_err(&f, "system.posix_acl_access"),
        libc::EOPNOTSUPP
    );
    m.finish();
}

#[test]
fn writes_by_others_clear_setuid_and_setgid() {
    let Some(fx) = fixture("writes_by_others_clear_setuid_and_setgid") else {
        return;
    };
    let (uid, gid) = test_user();
    // suid as mount(8) passes it (a nosuid mount behaves otherwise).
    let m = fx.mount(&format!("{OPTS},suid"));
    let dir = m.path("d");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let f = dir.join("f");
    fs::write(&f, vec![b'x'; 192 << 10]).unwrap();
    // Nothing dirty in the page cache: writeback would make the kernel
    // fetch fresh attributes and hide a stale mode (generic/683 syncs too).
    fs::File::open(&f).unwrap().sync_all().unwrap();
    // (mode before, what the test user does, mode after): generic/683-685
    // and the write and truncate cases, by a user outside the file's group.
    // A fallocate inside the file changes no size, so the kernel would keep
    // showing the mode it cached if we did not tell it.
    let cases = [
        (0o6666, "fallocate -o 65536 -l 65536 F", 0o666),
        (
            0o6676,
            "dd if=/dev/zero of=F bs=4k count=1 conv=notrunc oflag=direct status=none",
            0o676,
        ),
        (0o6666, "echo x >> F", 0o666),
        (0o6676, "echo x >> F", 0o676),
        (0o6766, "truncate -s 3 F", 0o766),
        (0o6777, "fallocate -l 65536 F", 0o777),
        (0o6666, "fallocate -p -o 0 -l 4096 F", 0o666),
    ];
    for (before, action, after) in cases {
        fs::set_permissions(&f, fs::Permissions::from_mode(before)).unwrap();
        let script = action.replace('F', p(&f));
        let (good, _, err) = sh_as(uid, gid, &script);
        assert!(good, "{script}: {err}");
        assert_eq!(
            mode_of(&f),
            after,
            "{before:o} after `{action}` by another user"
        );
    }
    // A member of the file's group keeps setgid on a file its group may
    // not execute (only setuid goes); uid 0 keeps both.
    std::os::unix::fs::chown(&f, None, Some(gid)).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6666)).unwrap();
    assert!(sh_as(uid, gid, &format!("echo y >> {}", p(&f))).0);
    assert_eq!(mode_of(&f), 0o2666);
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
    ok(
        "sh",
        &["-c", &format!("echo z >> {0} && truncate -s 1 {0}", p(&f))],
    );
    ok("fallocate", &["-l", "8192", p(&f)]);
    assert_eq!(mode_of(&f), 0o6777);
    // chown clears setuid even for root (and setgid with group execute).
    ok("chown", &[&uid.to_string(), p(&f)]);
    assert_eq!(mode_of(&f), 0o777);
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6745)).unwrap();
    ok("chgrp", &["0", p(&f)]);
    assert_eq!(mode_of(&f), 0o2745);
    m.finish();
}

/// atime as `stat` shows it.
fn atime_of(path: &Path) -> (i64, i64) {
    let m = fs::metadata(path).unwrap();
    (m.atime(), m.atime_nsec())
}

fn cat(path: &Path) {
    let _ = fs::read(path).unwrap();
}

#[test]
fn access_times_follow_the_mount_option() {
    let Some(fx) = fixture("access_times_follow_the_mount_option") else {
        return;
    };
    let pause = || std::thread::sleep(std::time::Duration::from_millis(30));
    // relatime (the default): the first read after a change updates atime,
    // the next does not — even though the data is in the page cache.
    let m = fx.mount(OPTS);
    let f = m.path("f");
    fs::write(&f, b"aaa\n").unwrap();
    let created = atime_of(&f);
    pause();
    cat(&f);
    let first = atime_of(&f);
    assert!(first > created, "relatime: first read left atime alone");
    pause();
    cat(&f);
    assert_eq!(atime_of(&f), first, "relatime: second read moved atime");
    m.unmount();

    // strictatime: every read.
    let m = fx.mount(&format!("{OPTS},strictatime"));
    let f = m.path("f");
    let before = atime_of(&f);
    pause();
    cat(&f);
    let once = atime_of(&f);
    assert!(once > before, "strictatime: read left atime alone");
    pause();
    cat(&f);
    assert!(
        atime_of(&f) > once,
        "strictatime: second read left atime alone"
    );
    m.unmount();

    // noatime: none, not even after a change.
    let m = fx.mount(&format!("{OPTS},noatime"));
    let f = m.path("f");
    fs::write(&f, b"bbb\n").unwrap();
    let before = atime_of(&f);
    pause();
    cat(&f);
    assert_eq!(atime_of(&f), before, "noatime: read moved atime");
    m.finish();
}

#[test]
fn times_stamped_here_and_by_the_kernel_stay_in_event_order() {
    let Some(fx) = fixture("times_stamped_here_and_by_the_kernel_stay_in_event_order") else {
        return;
    };
    let m = fx.mount(OPTS);
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    // A fifo's ctime is ours; a hard link's ctime on a regular file is the
    // kernel's (writeback cache), taken from its coarse clock. The link
    // comes later, so its ctime must not be earlier (generic/423).
    for i in 0..40 {
        let fifo = m.path(&format!("p{i}"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = m.path(&format!("l{i}"));
        fs::hard_link(&f, &link).unwrap();
        let (a, b) = (fs::metadata(&fifo).unwrap(), fs::metadata(&link).unwrap());
        assert!(
            (b.ctime(), b.ctime_nsec()) >= (a.ctime(), a.ctime_nsec()),
            "link {i} ctime {}.{:09} before fifo ctime {}.{:09}",
            b.ctime(),
            b.ctime_nsec(),
            a.ctime(),
            a.ctime_nsec()
        );
    }
    m.finish();
}

/// name_to_handle_at(2) and open_by_handle_at(2) through python3's ctypes
/// (neither std nor nix has them): `handle PATH` prints the handle as
/// "TYPE:HEX"; `open MOUNT TYPE:HEX` opens it and prints what it reads (a
/// file's bytes, or a directory's sorted names), or "errno N".
const HANDLE_TOOL: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class FH(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("data", ctypes.c_ubyte * 128)]
if sys.argv[1] == "handle":
    fh = FH(); fh.bytes = 128; mnt = ctypes.c_int()
    if libc.name_to_handle_at(-100, sys.argv[2].encode(), ctypes.byref(fh), ctypes.byref(mnt), 0) != 0:
        print("errno", ctypes.get_errno()); sys.exit(0)
    print("%d:%s" % (fh.type, bytes(fh.data[:fh.bytes]).hex()))
else:
    kind, data = sys.argv[3].split(":")
    raw = bytes.fromhex(data)
    fh = FH(); fh.bytes = len(raw); fh.type = int(kind)
    fh.data[:len(raw)] = list(raw)
    mfd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECTORY)
    fd = libc.open_by_handle_at(mfd, ctypes.byref(fh), os.O_RDONLY)
    if fd < 0:
        print("errno", ctypes.get_errno()); sys.exit(0)
    if os.path.isdir("/proc/self/fd/%d" % fd):
        print(" ".join(sorted(os.listdir(fd))))
    else:
        print(os.read(fd, 4096).decode())
"#;

fn handle_tool(args: &[&str]) -> String {
    let mut all = vec!["-c", HANDLE_TOOL];
    all.extend_from_slice(args);
    ok("python3", &all).trim().to_owned()
}

#[test]
fn file_handles_outlive_the_kernel_cache_and_go_stale_when_freed() {
    let Some(fx) = fixture("file_handles_outlive_the_kernel_cache_and_go_stale_when_freed") else {
        return;
    };
    let m = fx.mount(OPTS);
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/kept"), b"kept data").unwrap();
    fs::write(m.path("d/gone"), b"gone data").unwrap();
    let kept = handle_tool(&["handle", p(&m.path("d/kept"))]);
    let gone = handle_tool(&["handle", p(&m.path("d/gone"))]);
    let dir = handle_tool(&["handle", p(&m.path("d"))]);
    assert!(!kept.starts_with("errno"), "{kept}");
    let gone_ino = fs::metadata(m.path("d/gone")).unwrap().ino();
    fs::remove_file(m.path("d/gone")).unwrap();
    // A new mount knows none of these inodes: the kernel must ask keelfs
    // for them by number ("." lookups).
    m.unmount();
    let m = fx.mount(OPTS);
    let mnt = p(&fx.mnt);
    assert_eq!(handle_tool(&["open", mnt, &kept]), "kept data");
    assert_eq!(handle_tool(&["open", mnt, &dir]), "kept");
    assert_eq!(
        handle_tool(&["open", mnt, &gone]),
        format!("errno {}", libc::ESTALE)
    );
    // A new file in the freed slot has another generation: the old handle
    // stays stale.
    for i in 0..64 {
        let path = m.path(&format!("d/new{i}"));
        fs::write(&path, b"new").unwrap();
        if fs::metadata(&path).unwrap().ino() == gone_ino {
            assert_eq!(
                handle_tool(&["open", mnt, &gone]),
                format!("errno {}", libc::ESTALE)
            );
            break;
        }
    }
    m.finish();
}

/// The flags `lsattr -d` shows for `path` (the letters before the name).
fn lsattr(path: &Path) -> String {
    let out = ok("lsattr", &["-d", p(path)]);
    out.split_whitespace().next().unwrap_or("").to_owned()
}

fn fails_with_eperm(script: &str) {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not permitted"),
        "`{script}` was allowed or failed otherwise: {err}"
    );
}

#[test]
fn chattr_flags_are_kept_and_enforced() {
    let Some(fx) = fixture("chattr_flags_are_kept_and_enforced") else {
        return;
    };
    let (uid, gid) = test_user();
    let m = fx.mount(OPTS);
    let f = m.path("f");
    fs::write(&f, b"data\n").unwrap();
    let fp = p(&f);

    // Immutable: readable, nothing else.
    ok("chattr", &["+i", fp]);
    assert!(lsattr(&f).contains('i'), "{}", lsattr(&f));
    assert_eq!(fs::read(&f).unwrap(), b"data\n");
    for script in [
        format!("echo more >> {fp}"),
        format!("truncate -s 0 {fp}"),
        format!("rm -f {fp}"),
        format!("mv {fp} {fp}.moved"),
        format!("ln {fp} {fp}.link"),
        format!("chmod 600 {fp}"),
        format!("chown 1 {fp}"),
        format!("touch -d @1000 {fp}"),
        format!("setfattr -n user.x -v 1 {fp}"),
        format!("fallocate -l 1M {fp}"),
    ] {
        fails_with_eperm(&script);
    }
    // Only CAP_LINUX_IMMUTABLE changes it, even for the owner.
    std::os::unix::fs::chown(&f, Some(uid), Some(gid)).unwrap_err();
    let (good, _, _) = sh_as(uid, gid, &format!("chattr -i {fp}"));
    assert!(!good, "a user cleared immutable");
    ok("chattr", &["-i", fp]);
    ok("sh", &["-c", &format!("echo more >> {fp}")]);

    // Append-only: appends only.
    let a = m.path("log");
    fs::write(&a, b"1\n").unwrap();
    let ap = p(&a);
    ok("xfs_io", &["-c", "chattr +a", ap]);
    assert!(ok("xfs_io", &["-r", "-c", "lsattr", ap]).contains('a'));
    ok("sh", &["-c", &format!("echo 2 >> {ap}")]);
    assert_eq!(fs::read(&a).unwrap(), b"1\n2\n");
    for script in [
        format!("echo 3 > {ap}"),
        format!("truncate -s 1 {ap}"),
        format!("rm -f {ap}"),
        format!("chmod 600 {ap}"),
        format!("fallocate -p -o 0 -l 1 {ap}"),
        format!("touch -d @1000 {ap}"),
    ] {
        fails_with_eperm(&script);
    }
    // utime(NULL) is allowed (generic/079).
    ok("touch", &[ap]);

    // Directories: immutable takes no new names, append-only loses none.
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("old"), b"").unwrap();
    ok("chattr", &["+i", p(&d)]);
    fails_with_eperm(&format!("touch {}/new", p(&d)));
    ok("chattr", &["-i", p(&d)]);
    fs::create_dir(d.join("sub")).unwrap();
    fs::write(d.join("sub/x"), b"").unwrap();
    ok("chattr", &["=a", p(&d)]);
    ok("touch", &[p(&d.join("new"))]);
    ok("touch", &[p(&d)]);
    fails_with_eperm(&format!("rm {}/old", p(&d)));
    // Refused for the flag even though the directory is not empty.
    fails_with_eperm(&format!("rmdir {}/sub", p(&d)));

    // nodump and noatime are kept; an unsupported flag is refused.
    let n = m.path("n");
    fs::write(&n, b"x").unwrap();
    ok("chattr", &["+dA", p(&n)]);
    // chattr sets ctime. The kernel shows it for a directory; for a
    // regular file it keeps its own ctime while it caches the inode (the
    // writeback cache), so generic/277 is an expected failure.
    let e = m.path("e");
    fs::create_dir(&e).unwrap();
    let ctime = || ok("stat", &["-c", "%z", p(&e)]);
    let before = ctime();
    std::thread::sleep(std::time::Duration::from_millis(30));
    ok("chattr", &["+d", p(&e)]);
    assert_ne!(ctime(), before, "chattr left ctime alone");
    assert!(run("chattr", &["+S", p(&n)]).is_err(), "sync flag accepted");
    // The owner may change flags other than i and a.
    std::os::unix::fs::chown(&n, Some(uid), Some(gid)).unwrap();
    let (good, _, err) = sh_as(uid, gid, &format!("chattr -d {}", p(&n)));
    assert!(good, "{err}");

    // Everything is on disk: a new mount shows the same flags.
    m.unmount();
    let m = fx.mount(OPTS);
    assert!(lsattr(&m.path("f")).chars().all(|c| c == '-'));
    assert!(lsattr(&m.path("log")).contains('a'));
    assert!(lsattr(&m.path("d")).contains('a'));
    let flags = lsattr(&m.path("n"));
    assert!(flags.contains('A') && !flags.contains('d'), "{flags}");
    for path in ["log", "d"] {
        ok("chattr", &["-a", p(&m.path(path))]);
    }
    m.finish();
}

#[test]
fn seek_data_and_hole_see_writes_still_in_the_page_cache() {
    let Some(fx) = fixture("seek_data_and_hole_see_writes_still_in_the_page_cache") else {
        return;
    };
    use nix::unistd::{lseek, Whence};
    use std::os::unix::fs::FileExt;
    let m = fx.mount(OPTS);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("sparse"))
        .unwrap();
    // What xfstests' seek_sanity_test probes first: one byte written
    // past a hole, nothing synced (the writeback cache holds it).
    f.write_at(b"a", 8192).unwrap();
    assert_eq!(lseek(&f, 0, Whence::SeekData), Ok(8192));
    assert_eq!(lseek(&f, 0, Whence::SeekHole), Ok(0));
    f.set_len(0).unwrap();
    f.write_at(b"a", 2).unwrap();
    assert_eq!(lseek(&f, 0, Whence::SeekData), Ok(0));
    // Two blocks of data, then a hole to the end.
    f.set_len(0).unwrap();
    f.write_at(&[b'x'; 8192], 0).unwrap();
    f.set_len(1 << 20).unwrap();
    assert_eq!(lseek(&f, 0, Whence::SeekHole), Ok(8192));
    assert_eq!(
        lseek(&f, 8192, Whence::SeekData),
        Err(nix::errno::Errno::ENXIO)
    );
    // Negative offsets: ENXIO too (generic/448).
    assert_eq!(
        lseek(&f, -1, Whence::SeekHole),
        Err(nix::errno::Errno::ENXIO)
    );
    assert_eq!(
        lseek(&f, i64::MIN, Whence::SeekData),
        Err(nix::errno::Errno::ENXIO)
    );
    // The data survived being pushed out of the page cache.
    let mut back = vec![0u8; 8192];
    f.read_exact_at(&mut back, 0).unwrap();
    assert!(back.iter().all(|&b| b == b'x'));
    drop(f);
    m.finish();
}

#[test]
fn rename_whiteout_leaves_a_character_device() {
    let Some(fx) = fixture("rename_whiteout_leaves_a_character_device") else {
        return;
    };
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    use std::os::unix::fs::FileTypeExt;
    let m = fx.mount(OPTS);
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/src"), b"moved").unwrap();
    fs::write(m.path("d/old"), b"replaced").unwrap();
    renameat2(
        AT_FDCWD,
        &m.path("d/src"),
        AT_FDCWD,
        &m.path("d/old"),
        RenameFlags::RENAME_WHITEOUT,
    )
    .unwrap();
    assert_eq!(fs::read(m.path("d/old")).unwrap(), b"moved");
    let w = fs::symlink_metadata(m.path("d/src")).unwrap();
    assert!(w.file_type().is_char_device(), "{:?}", w.file_type());
    assert_eq!((w.rdev(), w.mode() & 0o7777, w.nlink()), (0, 0, 1));
    // With NOREPLACE onto a free name, across directories.
    fs::create_dir(m.path("e")).unwrap();
    renameat2(
        AT_FDCWD,
        &m.path("d/old"),
        AT_FDCWD,
        &m.path("e/new"),
        RenameFlags::RENAME_WHITEOUT | RenameFlags::RENAME_NOREPLACE,
    )
    .unwrap();
    assert!(fs::symlink_metadata(m.path("d/old"))
        .unwrap()
        .file_type()
        .is_char_device());
    // Not with EXCHANGE.
    assert_eq!(
        renameat2(
            AT_FDCWD,
            &m.path("e/new"),
            AT_FDCWD,
            &m.path("d/src"),
            RenameFlags::RENAME_WHITEOUT | RenameFlags::RENAME_EXCHANGE,
        ),
        Err(nix::errno::Errno::EINVAL)
    );
    m.finish();
}
