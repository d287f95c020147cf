//! Full disks through a real mount.
//!
//! * keelfs itself full: writes fail with ENOSPC (never EIO, never a short
//!   file that claims more than it holds), what was written and fsync'ed
//!   before stays intact, removing a file gives its space back, and the
//!   same amount can be written again; fsck is clean.
//! * The store under the image files full (sparse legs bigger than the
//!   tmpfs they live on): writes fail with an error, never silently; the
//!   daemon still unmounts; once the store has room again the set mounts,
//!   everything fsync'ed before is there, and it checks clean.
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use fuse_support::*;
use keelfs_engine::device::{DeviceRef, FileDevice};
use keelfs_fs::mkfs::{format, MkfsOptions};

/// Appends 1 MiB chunks to `path` until a write fails; returns the bytes
/// written and the error.
fn fill(path: &Path, seed: u64) -> (Vec<u8>, std::io::Error) {
    let mut f = fs::File::create(path).unwrap();
    let mut written = Vec::new();
    for i in 0.. {
        let chunk = pattern(seed, i, MIB as usize);
        match f.write_all(&chunk).and_then(|()| f.sync_data()) {
            Ok(()) => written.extend_from_slice(&chunk),
            Err(e) => return (written, e),
        }
        assert!(i < 10_000, "never ran out of space");
    }
    unreachable!()
}

#[test]
fn a_full_filesystem_says_enospc_and_gives_space_back() {
    if !can_mount("a_full_filesystem_says_enospc_and_gives_space_back") {
        return;
    }
    let fx = Fixture::new(2, 64 * MIB);
    let m = fx.mount("");
    fs::write(m.path("keep"), pattern(1, 0, 300_000)).unwrap();
    Command::new("sync").status().unwrap();

    let (written, err) = fill(&m.path("big"), 2);
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(
        written.len() as u64 > 30 * MIB,
        "only {} bytes fit",
        written.len()
    );
    // The file holds at least every chunk that was fsync'ed, and those
    // bytes are exactly what was written, read from the filesystem, not the
    // page cache.
    fs::write("/proc/sys/vm/drop_caches", b"3").unwrap();
    let back = fs::read(m.path("big")).unwrap();
    assert!(back.len() >= written.len());
    assert!(
        back[..written.len()] == written[..],
        "fsync'ed data changed"
    );
    assert_eq!(fs::read(m.path("keep")).unwrap(), pattern(1, 0, 300_000));
    // Metadata operations that need no space still work; creating a file
    // either works or says ENOSPC.
    fs::rename(m.path("keep"), m.path("kept")).unwrap();
    match fs::write(m.path("tiny"), b"x") {
        Ok(()) => {}
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}"),
    }

    // Removing the big file gives its space back (once the kernel forgets
    // the inode and the freeing transaction commits): the same amount fits
    // again.
    let statvfs = || nix::sys::statvfs::statvfs(&fx.mnt).unwrap();
    let free_full = statvfs().blocks_free();
    let block = statvfs().fragment_size();
    fs::remove_file(m.path("big")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        Command::new("sync").status().unwrap();
        let free = statvfs().blocks_free();
        if (free - free_full) * block >= written.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "space not given back: {free_full} -> {free} blocks of {block}, {} bytes written",
            written.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (again, err) = fill(&m.path("big2"), 3);
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(
        again.len() >= written.len(),
        "{} bytes fit the second time, {} the first",
        again.len(),
        written.len()
    );
    fs::remove_file(m.path("big2")).unwrap();
    m.finish();
}

/// A tmpfs of `bytes`, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(bytes: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("keelfs-store-")
            .tempdir()
            .unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed");
        Tmpfs(dir)
    }

    fn resize(&self, bytes: u64) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(self.0.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount of the tmpfs failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_full_store_under_the_legs_fails_loudly_and_loses_nothing_fsynced() {
    if !can_mount("a_full_store_under_the_legs_fails_loudly_and_loses_nothing_fsynced") {
        return;
    }
    let store = Tmpfs::new(40 * MIB);
    let dir = tempfile::Builder::new()
        .prefix("keelfs-fuse-")
        .tempdir_in(store.0.path())
        .unwrap();
    let legs: Vec<_> = (0..2)
        .map(|i| {
            let p = dir.path().join(format!("leg{i}.img"));
            fs::File::create(&p).unwrap().set_len(256 * MIB).unwrap();
            p
        })
        .collect();
    let devices: Vec<DeviceRef> = legs
        .iter()
        .map(|p| std::sync::Arc::new(FileDevice::open(p).unwrap()) as DeviceRef)
        .collect();
    format(&devices, &MkfsOptions::default()).expect("mkfs");
    drop(devices);
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let fx = Fixture {
        dir: tempfile::Builder::new()
            .prefix("keelfs-log-")
            .tempdir()
            .unwrap(),
        legs,
        mnt,
    };
    let m = fx.mount("");
    let keep = pattern(4, 0, 2 * MIB as usize);
    {
        let mut f = fs::File::create(m.path("keep")).unwrap();
        f.write_all(&keep).unwrap();
        f.sync_all().unwrap();
    }
    fs::File::open(&fx.mnt).unwrap().sync_all().unwrap();

    // 2 legs × 40 MiB cannot fit in a 40 MiB store.
    let (written, err) = fill(&m.path("big"), 5);
    assert!(
        (written.len() as u64) < 40 * MIB,
        "{} bytes written to a store of 40 MiB holding two copies",
        written.len()
    );
    assert!(
        matches!(err.raw_os_error(), Some(libc::EIO) | Some(libc::ENOSPC)),
        "{err}"
    );
    let (_, status) = keelfs(&["status", fx.mnt.to_str().unwrap()]);
    assert!(
        status.contains("FAILED") || status.contains("DEGRADED"),
        "{status}"
    );
    // The daemon lets go when asked.
    assert!(
        unmount_and_wait(&fx.mnt, &fx.legs),
        "the daemon did not unmount"
    );
    m.unmounted_elsewhere();

    // Room again: the set mounts (replaying its journal) and holds what was
    // fsync'ed; after it, the set checks clean (`finish` runs fsck).
    store.resize(600 * MIB);
    let m = fx.mount("");
    assert!(fs::read(m.path("keep")).unwrap() == keep);
    fs::write(m.path("after"), b"the store has room again").unwrap();
    m.finish();
}
