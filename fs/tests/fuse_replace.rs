//! `keelfs replace MOUNTPOINT OLD NEW` through a real mount: a leg is
//! replaced by a fresh image while files are in use; the command shows the
//! resync's progress and ends with the new leg in service; the data reads
//! back, both legs are ONLINE in `keelfs status` (which names the new
//! device, not the old one), and the set of the old
//! leg and the new one is clean for fsck; the next mount uses the new leg.
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::fs;

use fuse_support::*;

#[test]
fn replace_a_leg_while_mounted() {
    if !can_mount("replace_a_leg_while_mounted") {
        return;
    }
    let fx = Fixture::new(2, 64 * MIB);
    let m = fx.mount("");
    let files: Vec<Vec<u8>> = (0..5).map(|i| pattern(0x2E9, i, 512 * 1024)).collect();
    for (i, data) in files.iter().enumerate() {
        fs::write(m.path(&format!("f{i}")), data).unwrap();
    }
    let fresh = fx.dir.path().join("fresh.img");
    fs::File::create(&fresh).unwrap().set_len(64 * MIB).unwrap();
    let small = fx.dir.path().join("small.img");
    fs::File::create(&small).unwrap().set_len(MIB).unwrap();
    let mnt = fx.mnt.to_str().unwrap();

    let (code, text) = keelfs(&["replace", mnt, "1", small.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("too small"), "{text}");
    let (code, text) = keelfs(&["replace", mnt, "9", fresh.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");

    let (code, text) = keelfs(&["replace", mnt, "1", fresh.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("replace started"), "{text}");
    assert!(text.contains(": finished"), "{text}");
    let (_, status) = keelfs(&["status", mnt]);
    assert!(status.contains(" state: ONLINE"), "{status}");
    // The leg is shown by the device it has now.
    let leg_lines: Vec<&str> = status.lines().filter(|l| l.starts_with("\t  ")).collect();
    assert!(
        leg_lines.iter().any(|l| l.contains("fresh.img")),
        "{status}"
    );
    assert!(
        !leg_lines.iter().any(|l| l.contains("leg1.img")),
        "{status}"
    );
    fs::write("/proc/sys/vm/drop_caches", b"1").unwrap();
    for (i, data) in files.iter().enumerate() {
        assert!(fs::read(m.path(&format!("f{i}"))).unwrap() == *data);
    }
    fs::write(m.path("after"), b"written after the replace").unwrap();
    m.unmount();

    let new_set = vec![fx.legs[0].clone(), fresh.clone()];
    fsck_if_available(&new_set);
    let m = fx.mount_source(&join_legs(&new_set), "");
    assert_eq!(
        fs::read(m.path("after")).unwrap(),
        b"written after the replace"
    );
    let (_, status) = keelfs(&["status", mnt]);
    assert!(status.contains(" state: ONLINE"), "{status}");
    // (`finish` would fsck the fixture's legs: the old one is no member.)
    m.unmount();
    fsck_if_available(&new_set);
}
