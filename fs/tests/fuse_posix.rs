//! POSIX semantics of a mounted keelfs, through the kernel: every FUSE
//! operation the adapter forwards, exercised with std::fs, libc calls (via
//! nix) and ordinary tools (cp, mv, ln, tar, find, stat, df, setfattr,
//! getfattr, chmod, chown). Each test mounts its own two-leg mirror with
//! `keelfs` and ends with `Mounted::finish`: unmount, fsck -n when there is
//! one, mount again and compare the whole tree.
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{
    symlink, DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};

use fuse_support::*;
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use nix::unistd::{lseek, Whence};

const OPTS: &str = "default_permissions";

fn fixture(test: &str) -> Option<Fixture> {
    can_mount(test).then(|| Fixture::new(2, 512 * MIB))
}

#[test]
fn files_directories_and_their_errors() {
    let Some(fx) = fixture("files_directories_and_their_errors") else {
        return;
    };
    let m = fx.mount(OPTS);
    let root = fx.mnt.clone();
    fs::write(m.path("a.txt"), b"hello keelfs\n").unwrap();
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"hello keelfs\n");
    assert_eq!(fs::metadata(m.path("a.txt")).unwrap().len(), 13);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(m.path("d1/d2/d3"))
        .unwrap();
    assert_eq!(
        fs::metadata(m.path("d1/d2")).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    // Directory link counts: 2 + subdirectories.
    assert_eq!(fs::metadata(m.path("d1")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(m.path("d1/d2/d3")).unwrap().nlink(), 2);
    let root_links = fs::metadata(&root).unwrap().nlink();
    fs::create_dir(m.path("d4")).unwrap();
    assert_eq!(fs::metadata(&root).unwrap().nlink(), root_links + 1);

    // Errors, as a local filesystem gives them.
    assert_eq!(errno_of(fs::create_dir(m.path("d1"))), libc::EEXIST);
    assert_eq!(errno_of(fs::remove_dir(m.path("d1"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(fs::remove_dir(m.path("a.txt"))), libc::ENOTDIR);
    assert_eq!(errno_of(fs::remove_file(m.path("d4"))), libc::EISDIR);
    assert_eq!(errno_of(File::open(m.path("nope"))), libc::ENOENT);
    assert_eq!(errno_of(File::open(m.path("a.txt/x"))), libc::ENOTDIR);
    let long = "x".repeat(256);
    assert_eq!(errno_of(File::create(m.path(&long))), libc::ENAMETOOLONG);
    let longest = "y".repeat(255);
    File::create(m.path(&longest)).unwrap();
    assert_eq!(
        errno_of(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(m.path("a.txt"))
        ),
        libc::EEXIST
    );

    // readdir sees exactly what is there (readdirplus and plain readdir).
    let mut names: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec!["a.txt", "d1", "d4", "lost+found", longest.as_str()];
    want.sort();
    assert_eq!(names, want);
    let found = ok("find", &[root.to_str().unwrap(), "-mindepth", "1"]);
    assert_eq!(found.lines().count(), 7, "{found}");
    let ls = ok("ls", &["-la", m.path("d1").to_str().unwrap()]);
    assert!(
        ls.contains(" d2") && ls.contains(" .") && ls.contains(" .."),
        "{ls}"
    );

    fs::remove_dir_all(m.path("d1")).unwrap();
    fs::remove_file(m.path(&longest)).unwrap();
    assert!(!m.path("d1").exists());
    m.finish();
}

#[test]
fn rename_over_names_and_with_flags() {
    let Some(fx) = fixture("rename_over_names_and_with_flags") else {
        return;
    };
    let m = fx.mount(OPTS);
    fs::write(m.path("src"), b"new").unwrap();
    fs::write(m.path("dst"), b"old contents").unwrap();
    let mut held = File::open(m.path("dst")).unwrap();
    fs::rename(m.path("src"), m.path("dst")).unwrap();
    assert_eq!(fs::read(m.path("dst")).unwrap(), b"new");
    assert!(!m.path("src").exists());
    // The replaced file lives on for whoever holds it open.
    let mut old = String::new();
    held.read_to_string(&mut old).unwrap();
    assert_eq!(old, "old contents");
    assert_eq!(held.metadata().unwrap().nlink(), 0);
    drop(held);

    // Directories: over an empty one yes, a non-empty one no; type mismatches.
    fs::create_dir_all(m.path("da/inner")).unwrap();
    fs::create_dir(m.path("empty")).unwrap();
    fs::create_dir_all(m.path("full/x")).unwrap();
    fs::rename(m.path("da"), m.path("empty")).unwrap();
    assert!(m.path("empty/inner").is_dir());
    assert_eq!(
        errno_of(fs::rename(m.path("empty"), m.path("full"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(fs::rename(m.path("dst"), m.path("full"))),
        libc::EISDIR
    );
    assert_eq!(
        errno_of(fs::rename(m.path("full"), m.path("dst"))),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(fs::rename(m.path("full"), m.path("full/x/y"))),
        libc::EINVAL
    );
    // Across directories, and ".." follows a moved directory.
    fs::rename(m.path("empty/inner"), m.path("full/x/inner")).unwrap();
    assert_eq!(fs::metadata(m.path("full/x")).unwrap().nlink(), 3);
    assert_eq!(fs::metadata(m.path("empty")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(m.path("full/x/inner/..")).unwrap().ino(),
        fs::metadata(m.path("full/x")).unwrap().ino()
    );
    ok(
        "mv",
        &[
            m.path("dst").to_str().unwrap(),
            m.path("full/").to_str().unwrap(),
        ],
    );
    assert_eq!(fs::read(m.path("full/dst")).unwrap(), b"new");

    // renameat2 flags.
    fs::write(m.path("p"), b"P").unwrap();
    fs::write(m.path("q"), b"Q").unwrap();
    let err = renameat2(
        AT_FDCWD,
        &m.path("p"),
        AT_FDCWD,
        &m.path("q"),
        RenameFlags::RENAME_NOREPLACE,
    )
    .unwrap_err();
    assert_eq!(err, nix::errno::Errno::EEXIST);
    renameat2(
        AT_FDCWD,
        &m.path("p"),
        AT_FDCWD,
        &m.path("q"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert_eq!(fs::read(m.path("p")).unwrap(), b"Q");
    assert_eq!(fs::read(m.path("q")).unwrap(), b"P");
    renameat2(
        AT_FDCWD,
        &m.path("p"),
        AT_FDCWD,
        &m.path("full/x"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    assert!(m.path("p").is_dir() && m.path("full/x").is_file());
    renameat2(
        AT_FDCWD,
        &m.path("q"),
        AT_FDCWD,
        &m.path("r"),
        RenameFlags::RENAME_NOREPLACE,
    )
    .unwrap();
    let err = renameat2(
        AT_FDCWD,
        &m.path("zzz"),
        AT_FDCWD,
        &m.path("r"),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap_err();
    assert_eq!(err, nix::errno::Errno::ENOENT);
    m.finish();
}

#[test]
fn hard_links_across_directories_and_symlinks() {
    let Some(fx) = fixture("hard_links_across_directories_and_symlinks") else {
        return;
    };
    let m = fx.mount(OPTS);
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::create_dir(m.path("c")).unwrap();
    fs::write(m.path("a/b/f"), b"linked").unwrap();
    fs::hard_link(m.path("a/b/f"), m.path("c/g")).unwrap();
    ok(
        "ln",
        &[
            m.path("a/b/f").to_str().unwrap(),
            m.path("h").to_str().unwrap(),
        ],
    );
    let ino = fs::metadata(m.path("a/b/f")).unwrap().ino();
    for name in ["c/g", "h"] {
        let meta = fs::metadata(m.path(name)).unwrap();
        assert_eq!((meta.ino(), meta.nlink()), (ino, 3), "{name}");
    }
    fs::OpenOptions::new()
        .append(true)
        .open(m.path("c/g"))
        .unwrap()
        .write_all(b"+more")
        .unwrap();
    assert_eq!(fs::read(m.path("h")).unwrap(), b"linked+more");
    fs::remove_file(m.path("a/b/f")).unwrap();
    assert_eq!(fs::metadata(m.path("h")).unwrap().nlink(), 2);
    assert_eq!(fs::read(m.path("c/g")).unwrap(), b"linked+more");
    assert_eq!(
        errno_of(fs::hard_link(m.path("a"), m.path("dirlink"))),
        libc::EPERM
    );
    assert_eq!(
        errno_of(fs::hard_link(m.path("h"), m.path("c/g"))),
        libc::EEXIST
    );

    // Symlinks: short (inline) and long (overflow block) targets.
    symlink("c/g", m.path("short")).unwrap();
    let long_target = format!("{}/target", "d".repeat(300));
    symlink(&long_target, m.path("long")).unwrap();
    ok(
        "ln",
        &["-s", "/etc/hostname", m.path("abs").to_str().unwrap()],
    );
    assert_eq!(
        fs::read_link(m.path("short")).unwrap().to_str(),
        Some("c/g")
    );
    assert_eq!(
        fs::read_link(m.path("long")).unwrap().to_str(),
        Some(long_target.as_str())
    );
    assert_eq!(fs::read(m.path("short")).unwrap(), b"linked+more");
    let meta = fs::symlink_metadata(m.path("long")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(meta.len(), long_target.len() as u64);
    let stat = ok("stat", &["-c", "%F %h", m.path("short").to_str().unwrap()]);
    assert_eq!(stat.trim(), "symbolic link 1");
    m.finish();
}

#[test]
fn unlink_while_open_keeps_the_file_until_closed() {
    let Some(fx) = fixture("unlink_while_open_keeps_the_file_until_closed") else {
        return;
    };
    let m = fx.mount(OPTS);
    let free_before = nix::sys::statvfs::statvfs(&fx.mnt).unwrap().blocks_free();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("victim"))
        .unwrap();
    let data = pattern(7, 0, 8 * MIB as usize);
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    fs::remove_file(m.path("victim")).unwrap();
    assert!(!m.path("victim").exists());
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    // Still readable and writable through the descriptor.
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 0).unwrap();
    assert!(back == data);
    f.write_all_at(b"still here", 100).unwrap();
    f.sync_all().unwrap();
    let mut small = [0u8; 10];
    f.read_exact_at(&mut small, 100).unwrap();
    assert_eq!(&small, b"still here");
    let in_use = nix::sys::statvfs::statvfs(&fx.mnt).unwrap().blocks_free();
    assert!(
        in_use + 2000 < free_before,
        "the open file's blocks are held"
    );
    // A name with the same path is a new file.
    fs::write(m.path("victim"), b"new").unwrap();
    drop(f);
    // The last close frees the blocks (once the kernel forgets the inode).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let free = nix::sys::statvfs::statvfs(&fx.mnt).unwrap().blocks_free();
        if free + 16 >= free_before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "blocks of the unlinked file were not freed: {free} < {free_before}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(fs::read(m.path("victim")).unwrap(), b"new");
    m.finish();
}

#[test]
fn sparse_files_seek_data_hole_and_fallocate() {
    let Some(fx) = fixture("sparse_files_seek_data_hole_and_fallocate") else {
        return;
    };
    let m = fx.mount(OPTS);
    let path = m.path("sparse");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let gib = GIB as i64;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"middle", GIB).unwrap();
    f.set_len(2 * GIB).unwrap();
    f.sync_all().unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 2 * GIB);
    assert!(meta.blocks() < 1024, "sparse: {} blocks", meta.blocks());
    // Holes read as zeroes.
    let mut buf = vec![1u8; 4096];
    f.read_exact_at(&mut buf, GIB / 2).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    // SEEK_DATA / SEEK_HOLE.
    assert_eq!(lseek(&f, 0, Whence::SeekData).unwrap(), 0);
    let hole = lseek(&f, 0, Whence::SeekHole).unwrap();
    assert!(hole > 0 && hole <= 1 << 20, "first hole at {hole}");
    let data = lseek(&f, hole, Whence::SeekData).unwrap();
    assert!(data <= gib && data > hole, "data at {data}");
    assert_eq!(lseek(&f, gib + 10, Whence::SeekData).unwrap(), gib + 10);
    let end_hole = lseek(&f, gib, Whence::SeekHole).unwrap();
    assert!(
        end_hole > gib && end_hole < 2 * gib,
        "hole after middle {end_hole}"
    );
    assert_eq!(
        lseek(&f, end_hole, Whence::SeekData).unwrap_err(),
        nix::errno::Errno::ENXIO
    );
    assert_eq!(
        lseek(&f, 2 * gib - 1, Whence::SeekHole).unwrap(),
        2 * gib - 1
    );
    assert_eq!(
        lseek(&f, 2 * gib, Whence::SeekData).unwrap_err(),
        nix::errno::Errno::ENXIO
    );

    // fallocate: preallocate (keep size), punch a hole, zero a range.
    use nix::fcntl::{fallocate, FallocateFlags};
    let g = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("prealloc"))
        .unwrap();
    fallocate(&g, FallocateFlags::empty(), 0, 4 << 20).unwrap();
    assert_eq!(g.metadata().unwrap().len(), 4 << 20);
    assert!(g.metadata().unwrap().blocks() >= 8192);
    fallocate(&g, FallocateFlags::FALLOC_FL_KEEP_SIZE, 4 << 20, 1 << 20).unwrap();
    assert_eq!(g.metadata().unwrap().len(), 4 << 20);
    g.write_all_at(&[0xAB; 1 << 20], 0).unwrap();
    g.sync_all().unwrap();
    fallocate(
        &g,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        4096,
        8192,
    )
    .unwrap();
    let mut back = vec![0u8; 16384];
    g.read_exact_at(&mut back, 0).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0xAB));
    assert!(back[4096..12288].iter().all(|&b| b == 0));
    assert!(back[12288..].iter().all(|&b| b == 0xAB));
    assert_eq!(g.metadata().unwrap().len(), 4 << 20);
    // truncate down and up again reads zeroes past the cut.
    g.set_len(100).unwrap();
    g.set_len(8192).unwrap();
    g.read_exact_at(&mut back[..8192], 0).unwrap();
    assert!(back[..100].iter().all(|&b| b == 0xAB));
    assert!(back[100..8192].iter().all(|&b| b == 0));
    // cp keeps sparseness; du sees it.
    ok(
        "cp",
        &[
            "--sparse=always",
            path.to_str().unwrap(),
            m.path("copy").to_str().unwrap(),
        ],
    );
    let copy = fs::metadata(m.path("copy")).unwrap();
    assert_eq!(copy.len(), 2 * GIB);
    assert!(
        copy.blocks() < 4096,
        "copy is sparse: {} blocks",
        copy.blocks()
    );
    let mut head = [0u8; 6];
    File::open(m.path("copy"))
        .unwrap()
        .read_exact_at(&mut head, GIB)
        .unwrap();
    assert_eq!(&head, b"middle");
    drop((f, g));
    m.finish();
}

/// setxattr(2) with flags (the tools cannot pass them).
fn setxattr(path: &std::path::Path, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // value pointer and length describe a live slice.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// getxattr(2) into a buffer of `size` bytes: the length or the errno.
fn getxattr(path: &std::path::Path, name: &str, size: usize) -> Result<Vec<u8>, i32> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    // SAFETY: NUL-terminated strings; the buffer pointer and length describe
    // a live, writable allocation.
    let rc = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(rc as usize);
    Ok(buf)
}

#[test]
fn extended_attributes() {
    let Some(fx) = fixture("extended_attributes") else {
        return;
    };
    let m = fx.mount(OPTS);
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    let fs_ = f.to_str().unwrap();
    ok("setfattr", &["-n", "user.color", "-v", "blue", fs_]);
    ok("setfattr", &["-n", "trusted.secret", "-v", "0x00ff", fs_]);
    let dump = ok("getfattr", &["-d", "-e", "text", "-m", "-", fs_]);
    assert!(dump.contains("user.color=\"blue\""), "{dump}");
    let hex = ok("getfattr", &["-e", "hex", "-n", "trusted.secret", fs_]);
    assert!(hex.contains("trusted.secret=0x00ff"), "{hex}");
    // POSIX ACLs are on (fuse_semantics.rs tests them): an ACL without
    // entries is a removal, of nothing here.
    assert_eq!(
        setxattr(&f, "system.posix_acl_access", &[2, 0, 0, 0], 0),
        Ok(())
    );
    let value = ok("getfattr", &["--only-values", "-n", "user.color", fs_]);
    assert_eq!(value, "blue");
    // A big value (64 KiB, the Linux limit).
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    setxattr(&f, "user.big", &big, 0).unwrap();
    assert_eq!(getxattr(&f, "user.big", 70000).unwrap(), big);
    // Size query and a buffer too small.
    assert_eq!(getxattr(&f, "user.color", 0).unwrap().len(), 0);
    assert_eq!(getxattr(&f, "user.color", 2), Err(libc::ERANGE));
    // XATTR_CREATE / XATTR_REPLACE.
    assert_eq!(
        setxattr(&f, "user.color", b"red", libc::XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        setxattr(&f, "user.none", b"red", libc::XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    setxattr(&f, "user.color", b"red", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&f, "user.color", 100).unwrap(), b"red");
    assert_eq!(getxattr(&f, "user.none", 100), Err(libc::ENODATA));
    ok("setfattr", &["-x", "user.big", fs_]);
    assert_eq!(getxattr(&f, "user.big", 100), Err(libc::ENODATA));
    assert!(run("setfattr", &["-x", "user.big", fs_]).is_err());
    let names = ok("getfattr", &["-m", "-", fs_]);
    assert!(
        names.contains("user.color") && !names.contains("user.big"),
        "{names}"
    );
    // Directories carry attributes too.
    fs::create_dir(m.path("d")).unwrap();
    ok(
        "setfattr",
        &["-n", "user.dir", "-v", "yes", m.path("d").to_str().unwrap()],
    );
    assert_eq!(getxattr(&m.path("d"), "user.dir", 10).unwrap(), b"yes");
    m.finish();
}

#[test]
fn attributes_owners_times_and_special_files() {
    let Some(fx) = fixture("attributes_owners_times_and_special_files") else {
        return;
    };
    let m = fx.mount(OPTS);
    let f = m.path("f");
    fs::write(&f, b"data").unwrap();
    let fs_ = f.to_str().unwrap();
    ok("chmod", &["4751", fs_]);
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o4751);
    ok("chown", &["1234:5678", fs_]);
    let meta = fs::metadata(&f).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    // chown clears setuid (Linux does, for root too).
    assert_eq!(meta.mode() & 0o7777, 0o751, "setuid survived chown");
    std::os::unix::fs::chown(&f, Some(0), None).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().uid(), 0);
    // Times: explicit, and "now".
    ok("touch", &["-m", "-d", "@1000000000.25", fs_]);
    ok("touch", &["-a", "-d", "@1100000000", fs_]);
    let meta = fs::metadata(&f).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_000_000_000, 250_000_000)
    );
    assert_eq!(meta.atime(), 1_100_000_000);
    let before = meta.ctime();
    ok("touch", &[fs_]);
    let meta = fs::metadata(&f).unwrap();
    assert!(meta.mtime() > 1_600_000_000 && meta.ctime() >= before);
    // A write moves mtime; a rename keeps it.
    ok("touch", &["-m", "-d", "@1000000000", fs_]);
    fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"!")
        .unwrap();
    assert!(fs::metadata(&f).unwrap().mtime() > 1_600_000_000);
    let stat = ok("stat", &["-c", "%s %a %U", fs_]);
    assert_eq!(stat.trim(), "5 751 root");

    // Special files.
    nix::unistd::mkfifo(
        &m.path("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::metadata(m.path("fifo")).unwrap().file_type()
    ));
    let dev = nix::sys::stat::makedev(4, 64);
    nix::sys::stat::mknod(
        &m.path("tty"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        dev,
    )
    .unwrap();
    let meta = fs::metadata(m.path("tty")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &meta.file_type()
    ));
    assert_eq!(meta.rdev(), dev);
    let sock = std::os::unix::net::UnixListener::bind(m.path("sock")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(
        &fs::metadata(m.path("sock")).unwrap().file_type()
    ));
    drop(sock);
    m.finish();
}

#[test]
fn mmap_read_and_write() {
    let Some(fx) = fixture("mmap_read_and_write") else {
        return;
    };
    let m = fx.mount(OPTS);
    let len = 3 * 1024 * 1024 + 123;
    let data = pattern(3, 1, len);
    fs::write(m.path("r"), &data).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("r"))
        .unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a shared read-write mapping of `len` bytes of an open file;
    // the slice made from it is used only while the mapping exists (it is
    // unmapped below), and nothing else maps or truncates the file meanwhile.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let view = std::slice::from_raw_parts_mut(p.cast::<u8>(), len);
        assert!(view[..] == data[..], "mmap read differs");
        view[..11].copy_from_slice(b"mmap-write!");
        view[len - 4..].copy_from_slice(b"tail");
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(p, len), 0);
    }
    drop(f);
    let mut want = data.clone();
    want[..11].copy_from_slice(b"mmap-write!");
    want[len - 4..].copy_from_slice(b"tail");
    assert!(fs::read(m.path("r")).unwrap() == want);
    // Read what mmap wrote after dropping the page cache, from the daemon.
    fs::write("/proc/sys/vm/drop_caches", b"1").unwrap();
    assert!(fs::read(m.path("r")).unwrap() == want);
    m.finish();
}

#[test]
fn statfs_df_and_space_accounting() {
    let Some(fx) = fixture("statfs_df_and_space_accounting") else {
        return;
    };
    let m = fx.mount(OPTS);
    let s = nix::sys::statvfs::statvfs(&fx.mnt).unwrap();
    assert_eq!(s.block_size(), 4096);
    assert_eq!(s.blocks() * s.fragment_size(), 512 * MIB);
    assert!(s.blocks_free() <= s.blocks() && s.blocks_free() > s.blocks() * 9 / 10);
    assert!(s.files() > 1000 && s.files_free() < s.files());
    assert_eq!(s.name_max(), 255);
    let df = ok("df", &["-B1", fx.mnt.to_str().unwrap()]);
    assert!(df.contains(&(512 * MIB).to_string()), "{df}");
    let dfi = ok("df", &["-i", fx.mnt.to_str().unwrap()]);
    assert!(dfi.lines().count() == 2, "{dfi}");
    let mut f = File::create(m.path("fill")).unwrap();
    let chunk = pattern(1, 1, MIB as usize);
    for _ in 0..32 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let after = nix::sys::statvfs::statvfs(&fx.mnt).unwrap();
    let used = (s.blocks_free() - after.blocks_free()) * 4096;
    assert!((32 * MIB..34 * MIB).contains(&used), "used {used}");
    assert!(after.files_free() < s.files_free());
    fs::remove_file(m.path("fill")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while nix::sys::statvfs::statvfs(&fx.mnt).unwrap().blocks_free() < s.blocks_free() {
        assert!(std::time::Instant::now() < deadline, "space not returned");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    m.finish();
}

#[test]
fn copies_archives_and_copy_file_range() {
    let Some(fx) = fixture("copies_archives_and_copy_file_range") else {
        return;
    };
    let m = fx.mount(OPTS);
    // A small tree with every kind of name.
    fs::create_dir_all(m.path("tree/sub/deeper")).unwrap();
    for i in 0..40 {
        let data = pattern(i, 0, (i as usize * 3779) % 200_000);
        fs::write(m.path(&format!("tree/sub/file{i}")), data).unwrap();
    }
    fs::write(m.path("tree/sub/deeper/x"), b"deep").unwrap();
    symlink("sub/deeper/x", m.path("tree/link")).unwrap();
    fs::hard_link(m.path("tree/sub/file3"), m.path("tree/hard3")).unwrap();
    ok(
        "chmod",
        &["640", m.path("tree/sub/file7").to_str().unwrap()],
    );

    // cp -a, then diff.
    ok(
        "cp",
        &[
            "-a",
            m.path("tree").to_str().unwrap(),
            m.path("copy").to_str().unwrap(),
        ],
    );
    ok(
        "diff",
        &[
            "-r",
            "--no-dereference",
            m.path("tree").to_str().unwrap(),
            m.path("copy").to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::metadata(m.path("copy/sub/file7")).unwrap().mode() & 0o777,
        0o640
    );
    // tar out and back in.
    let tarball = fx.dir.path().join("t.tar");
    ok(
        "tar",
        &[
            "-C",
            fx.mnt.to_str().unwrap(),
            "-cf",
            tarball.to_str().unwrap(),
            "tree",
        ],
    );
    fs::create_dir(m.path("untar")).unwrap();
    ok(
        "tar",
        &[
            "-C",
            m.path("untar").to_str().unwrap(),
            "-xf",
            tarball.to_str().unwrap(),
        ],
    );
    ok(
        "diff",
        &[
            "-r",
            "--no-dereference",
            m.path("tree").to_str().unwrap(),
            m.path("untar/tree").to_str().unwrap(),
        ],
    );
    assert_eq!(
        fs::metadata(m.path("untar/tree/hard3")).unwrap().ino(),
        fs::metadata(m.path("untar/tree/sub/file3")).unwrap().ino()
    );
    let count = ok("find", &[m.path("untar").to_str().unwrap(), "-type", "f"]);
    assert_eq!(count.lines().count(), 42);

    // copy_file_range (std::io::copy uses it between files).
    let src_data = pattern(9, 9, 5 * MIB as usize + 17);
    fs::write(m.path("cfr-src"), &src_data).unwrap();
    let mut src = File::open(m.path("cfr-src")).unwrap();
    let mut dst = File::create(m.path("cfr-dst")).unwrap();
    let n = std::io::copy(&mut src, &mut dst).unwrap();
    assert_eq!(n, src_data.len() as u64);
    drop((src, dst));
    assert!(fs::read(m.path("cfr-dst")).unwrap() == src_data);
    let src = File::open(m.path("cfr-src")).unwrap();
    let dst = OpenOptions::new()
        .write(true)
        .open(m.path("cfr-dst"))
        .unwrap();
    let mut off_in: i64 = 4096;
    let mut off_out: i64 = 100;
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the duration of the call and the
    // offsets point at live locals.
    let copied = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            8192,
            0,
        )
    };
    assert_eq!(copied, 8192);
    drop(dst);
    let got = fs::read(m.path("cfr-dst")).unwrap();
    assert!(got[100..100 + 8192] == src_data[4096..4096 + 8192]);
    drop(src);
    m.finish();
}

#[test]
fn open_flags_fsync_and_appends() {
    let Some(fx) = fixture("open_flags_fsync_and_appends") else {
        return;
    };
    let m = fx.mount(OPTS);
    let p = m.path("f");
    fs::write(&p, b"0123456789").unwrap();
    // O_TRUNC.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(b"ab").unwrap();
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"ab");
    // O_APPEND from two descriptors.
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"c").unwrap();
    b.write_all(b"d").unwrap();
    a.write_all(b"e").unwrap();
    a.sync_all().unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"abcde");
    // Write-only open, then a partial page write (the kernel reads the page).
    let mut w = OpenOptions::new().write(true).open(&p).unwrap();
    w.seek(SeekFrom::Start(1)).unwrap();
    w.write_all(b"B").unwrap();
    w.sync_all().unwrap();
    drop(w);
    assert_eq!(fs::read(&p).unwrap(), b"aBcde");
    // O_CREAT|O_EXCL.
    assert_eq!(
        errno_of(OpenOptions::new().write(true).create_new(true).open(&p)),
        libc::EEXIST
    );
    let n = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(m.path("new"))
        .unwrap();
    assert_eq!(n.metadata().unwrap().mode() & 0o777, 0o600);
    // fsync of a directory.
    File::open(&fx.mnt).unwrap().sync_all().unwrap();
    // Writes far past the end.
    let far = OpenOptions::new().write(true).open(m.path("new")).unwrap();
    far.write_all_at(b"far", 10 * MIB).unwrap();
    far.sync_all().unwrap();
    assert_eq!(fs::metadata(m.path("new")).unwrap().len(), 10 * MIB + 3);
    drop((a, b, n, far));
    m.finish();
}
