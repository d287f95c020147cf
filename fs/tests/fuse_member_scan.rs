//! Mounting a set by naming one of its legs when the others are block
//! devices: the mount program finds them by uuid (fs/src/member_scan.rs),
//! as `btrfs device scan` does. Leg 1 of a fresh set is put on a real loop
//! device; `keelfs LEG0 MNT` mounts the whole mirror, not a degraded one.
//!
//! Needs root, /dev/fuse and loop devices (skipped without the first two).

mod fuse_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use fuse_support::*;

/// A loop device over an image file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(image: &Path) -> Loop {
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .expect("losetup");
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Loop(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn members_on_block_devices_are_found_by_uuid() {
    if !can_mount("members_on_block_devices_are_found_by_uuid") {
        return;
    }
    let fx = Fixture::new(2, 64 * MIB);
    let lo = Loop::attach(&fx.legs[1]);
    let leg0 = fx.legs[0].display().to_string();
    let m = fx.mount_source(&leg0, "");
    let mnt = fx.mnt.to_str().unwrap();
    let (code, status) = keelfs(&["status", mnt]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("state: ONLINE"), "{status}");
    assert!(status.contains(&lo.0), "the loop device is a leg: {status}");
    fs::write(m.path("on-both"), pattern(3, 0, 300_000)).unwrap();
    m.unmount();
    drop(lo);
    // Both images hold the file: each leg alone checks clean and has it.
    fsck_if_available(&fx.legs);
    let m = fx.mount("");
    assert_eq!(fs::read(m.path("on-both")).unwrap(), pattern(3, 0, 300_000));
    m.finish();
}
