//! Growing and mending a mounted mirror through a real mount:
//!
//! * `keelfs add MOUNTPOINT NEW` turns a single-device filesystem into a
//!   two-way mirror, then a three-way one: the command shows the resync's
//!   progress and ends with the new leg in service (ONLINE in `keelfs
//!   status`); a device too small, or holding a filesystem, is refused.
//!   Then the FIRST image's data region is zeroed while unmounted: every
//!   file still reads back exactly (healed from the added legs), and after
//!   a scrub `fsck.keelfs -n` finds every leg clean.
//! * Re-adding a returned leg: a leg whose image lives on a small tmpfs
//!   fails its writes when the tmpfs fills up (it is marked FAILED, the
//!   filesystem goes on degraded); once there is room again, `keelfs
//!   replace MOUNTPOINT LEG LEG` brings it back through the daemon's own
//!   handle, resynced, ONLINE, and the set mounts without -o degraded.
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuse_support::*;
use keelfs_engine::device::{DeviceRef, FileDevice};

/// Leg lines of `keelfs status`: (name, state).
fn leg_states(mnt: &str) -> Vec<(String, String)> {
    let (code, text) = keelfs(&["status", mnt]);
    assert_eq!(code, 0, "{text}");
    text.lines()
        .filter(|l| l.starts_with("\t  "))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[1].to_string())
        })
        .collect()
}

/// A sparse image of `size` bytes at `path`.
fn image(path: &Path, size: u64) -> PathBuf {
    fs::File::create(path).unwrap().set_len(size).unwrap();
    path.to_owned()
}

/// Zeroes the data area of the keelfs leg `image` (its superblocks, bitmaps,
/// tables and journal stay).
fn zero_data_area(image: &Path) {
    let sb = keelfs_fs::devset::read_superblock(&FileDevice::open(image).unwrap()).unwrap();
    let l = sb.layout;
    let bs = u64::from(l.block_size);
    let f = fs::OpenOptions::new().write(true).open(image).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let (mut at, end) = (l.data.start * bs, (l.data.start + l.data.blocks) * bs);
    while at < end {
        let n = (end - at).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], at).unwrap();
        at += n as u64;
    }
    f.sync_all().unwrap();
}

#[test]
fn add_legs_to_a_single_device_filesystem_then_heal_from_them() {
    if !can_mount("add_legs_to_a_single_device_filesystem_then_heal_from_them") {
        return;
    }
    let mut fx = Fixture::new(1, 64 * MIB);
    let m = fx.mount("");
    let mnt = fx.mnt.to_str().unwrap().to_string();
    fs::create_dir(m.path("dir")).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let name = if i % 2 == 0 {
                format!("f{i}")
            } else {
                format!("dir/f{i}")
            };
            (name, pattern(0xADD, i, 100 * 1024 + i as usize * 4099))
        })
        .collect();
    for (name, data) in &files {
        fs::write(m.path(name), data).unwrap();
    }
    assert_eq!(leg_states(&mnt).len(), 1);

    // Refused: too small, holding a filesystem, already a leg.
    let small = image(&fx.dir.path().join("small.img"), MIB);
    let (code, text) = keelfs(&["add", &mnt, small.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("too small"), "{text}");
    let other = Fixture::new(1, 64 * MIB);
    let (code, text) = keelfs(&["add", &mnt, other.legs[0].to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("holds a keelfs filesystem"), "{text}");
    let (code, text) = keelfs(&["add", &mnt, fx.legs[0].to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("keelfs replace"), "{text}");

    // One device becomes a two-way mirror, then a three-way one.
    let mut added = Vec::new();
    for k in 1..=2 {
        let new = image(&fx.dir.path().join(format!("added{k}.img")), 64 * MIB);
        let (code, text) = keelfs(&["add", &mnt, new.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
        assert!(text.contains(&format!("add started: leg {k}")), "{text}");
        assert!(text.contains(": finished"), "{text}");
        let states = leg_states(&mnt);
        assert_eq!(states.len(), k + 1, "{states:?}");
        assert!(states.iter().all(|(_, s)| s == "ONLINE"), "{states:?}");
        assert!(
            states[k].0.ends_with(&format!("added{k}.img")),
            "{states:?}"
        );
        fs::write(m.path(&format!("after-add{k}")), b"written with more legs").unwrap();
        added.push(new);
    }
    m.unmount();
    fx.legs.extend(added);
    fsck_if_available(&fx.legs);

    // The first image loses its whole data area: the added legs serve.
    zero_data_area(&fx.legs[0]);
    let m = fx.mount("");
    fs::write("/proc/sys/vm/drop_caches", b"3").unwrap();
    for (name, data) in &files {
        assert!(fs::read(m.path(name)).unwrap() == *data, "{name}");
    }
    for k in 1..=2 {
        assert_eq!(
            fs::read(m.path(&format!("after-add{k}"))).unwrap(),
            b"written with more legs"
        );
    }
    let (code, text) = keelfs(&["scrub", &mnt]);
    assert_eq!(code, 0, "{text}");
    let (_, status) = keelfs(&["status", &mnt]);
    let leg0 = status
        .lines()
        .find(|l| l.contains("leg0.img") && l.starts_with("\t  "))
        .unwrap_or_else(|| panic!("{status}"));
    let healed: u64 = leg0.split_whitespace().nth(5).unwrap().parse().unwrap();
    assert!(
        healed >= files.len() as u64,
        "leg 0 healed {healed}: {status}"
    );
    m.finish();
}

/// A tmpfs of `size` bytes mounted at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: u64) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        Tmpfs(dir.to_owned())
    }

    /// Fills it up with a file `filler`.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut f = fs::File::create(&path).unwrap();
        let chunk = vec![0x55u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_failed_leg_that_comes_back_is_re_added_by_replace_with_itself() {
    if !can_mount("a_failed_leg_that_comes_back_is_re_added_by_replace_with_itself") {
        return;
    }
    let mut fx = Fixture::unformatted(1, 64 * MIB);
    // Declared after `fx`: unmounted before its directory is removed.
    let tmpfs = Tmpfs::mount(&fx.dir.path().join("small-disk"), 80 * MIB);
    fx.legs.push(image(&tmpfs.0.join("leg1.img"), 64 * MIB));
    let devices: Vec<DeviceRef> = fx
        .legs
        .iter()
        .map(|p| Arc::new(FileDevice::open(p).unwrap()) as DeviceRef)
        .collect();
    keelfs_fs::mkfs::format(&devices, &Default::default()).unwrap();
    drop(devices);
    let m = fx.mount("");
    let mnt = fx.mnt.to_str().unwrap().to_string();
    let leg1 = fx.legs[1].to_str().unwrap().to_string();
    let before = pattern(0xBAC, 0, 512 * 1024);
    fs::write(m.path("before"), &before).unwrap();

    // The tmpfs fills up: leg 1's writes to new blocks fail.
    let filler = tmpfs.fill();
    let during = pattern(0xBAC, 1, 2 << 20);
    fs::write(m.path("during"), &during).unwrap();
    fs::File::open(m.path("during"))
        .unwrap()
        .sync_all()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let states = leg_states(&mnt);
        if states[1].1 == "FAILED" {
            break;
        }
        assert!(Instant::now() < deadline, "leg 1 never failed: {states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, status) = keelfs(&["status", &mnt]);
    assert!(status.contains(" state: DEGRADED"), "{status}");

    // Room again: the same leg is given back.
    fs::remove_file(filler).unwrap();
    let (code, text) = keelfs(&["replace", &mnt, &leg1, &leg1]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("replace started: leg 1"), "{text}");
    assert!(text.contains(": finished"), "{text}");
    let states = leg_states(&mnt);
    assert!(states.iter().all(|(_, s)| s == "ONLINE"), "{states:?}");
    assert_eq!(states[1].0, leg1, "the leg keeps its device");
    // Leg 1 holds what was written while it was out (before any read
    // could heal it there).
    let image1 = fs::read(&fx.legs[1]).unwrap();
    let blocks: std::collections::HashSet<&[u8]> = image1.chunks(4096).collect();
    let missing = during
        .chunks(4096)
        .filter(|chunk| chunk.len() == 4096 && !blocks.contains(chunk))
        .count();
    assert_eq!(missing, 0, "blocks of `during` missing on the re-added leg");
    fs::write("/proc/sys/vm/drop_caches", b"3").unwrap();
    assert!(fs::read(m.path("before")).unwrap() == before);
    assert!(fs::read(m.path("during")).unwrap() == during);
    // Back to a full mirror: a normal (not degraded) mount after fsck.
    m.finish();
}
