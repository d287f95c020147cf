//! `keelfs scrub MOUNTPOINT` through a real mount: copies damaged on one
//! leg's image file while mounted are found and repaired by the scrub,
//! counted in `keelfs status`, and `fsck.keelfs -n` finds both legs clean
//! afterwards; a block damaged on every leg is reported as unrepairable
//! (exit 2) and reads fail with EIO.
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use fuse_support::*;

/// Overwrites 16 bytes of `image` at `offset` (as dd would).
fn smash(image: &Path, offset: u64) {
    let f = fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(b"dd was here!!!!!", offset).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn scrub_repairs_one_leg_damaged_while_mounted() {
    if !can_mount("scrub_repairs_one_leg_damaged_while_mounted") {
        return;
    }
    let fx = Fixture::new(2, 128 * MIB);
    let m = fx.mount("");
    let files: Vec<Vec<u8>> = (0..6).map(|i| pattern(0x5C2B, i, 256 * 1024)).collect();
    fs::create_dir(m.path("dir")).unwrap();
    for (i, data) in files.iter().enumerate() {
        fs::write(m.path(&format!("dir/f{i}")), data).unwrap();
    }
    let mnt = fx.mnt.to_str().unwrap();
    assert_eq!(keelfs(&["status", mnt]).0, 0);
    Command::new("sync").status().unwrap();
    // Damage the first block of every file on leg 0, while mounted.
    for data in &files {
        let at = blocks_starting_with(&fx.legs[0], &data[..64]);
        assert_eq!(at.len(), 1);
        smash(&fx.legs[0], at[0] + 1000);
    }
    let (code, text) = keelfs(&["scrub", mnt]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("scrub: finished"), "{text}");
    assert!(
        text.contains("6 bad copies, 6 repaired, 0 unrepairable"),
        "{text}"
    );
    let (_, status) = keelfs(&["status", mnt]);
    let leg0 = status
        .lines()
        .find(|l| l.contains("leg0.img") && l.starts_with("\t  "))
        .unwrap_or_else(|| panic!("{status}"));
    let cols: Vec<&str> = leg0.split_whitespace().collect();
    assert_eq!((cols[4], cols[5]), ("6", "6"), "CKSUM HEALED: {status}");
    fs::write("/proc/sys/vm/drop_caches", b"1").unwrap();
    for (i, data) in files.iter().enumerate() {
        assert!(fs::read(m.path(&format!("dir/f{i}"))).unwrap() == *data);
    }
    m.unmount();
    // fsck checks every leg's copy of every block.
    fsck_if_available(&fx.legs);
    // The counts survive the remount.
    let m = fx.mount("");
    let (_, status) = keelfs(&["status", mnt]);
    assert!(
        status
            .lines()
            .any(|l| l.contains("leg0.img") && l.split_whitespace().nth(4) == Some("6")),
        "{status}"
    );
    m.finish();
}

#[test]
fn scrub_reports_a_block_bad_on_every_leg() {
    if !can_mount("scrub_reports_a_block_bad_on_every_leg") {
        return;
    }
    let fx = Fixture::new(2, 128 * MIB);
    let m = fx.mount("");
    let doomed = pattern(0xD00, 0, 64 * 1024);
    let fine = pattern(0xF1E, 0, 64 * 1024);
    fs::write(m.path("doomed"), &doomed).unwrap();
    fs::write(m.path("fine"), &fine).unwrap();
    m.unmount();
    for leg in &fx.legs {
        let at = blocks_starting_with(leg, &doomed[..64]);
        smash(leg, at[0] + 100);
    }
    let m = fx.mount("");
    let mnt = fx.mnt.to_str().unwrap();
    let (code, text) = keelfs(&["scrub", mnt]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("1 unrepairable"), "{text}");
    assert_eq!(errno_of(fs::read(m.path("doomed"))), libc::EIO);
    assert!(fs::read(m.path("fine")).unwrap() == fine);
    fs::remove_file(m.path("doomed")).unwrap();
    m.finish();
}
