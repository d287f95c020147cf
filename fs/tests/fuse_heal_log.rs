//! Heals are logged, once each, through a real mount: a data block of a
//! file damaged on one leg is healed when a read meets it, and the
//! daemon's log (`-o logfile=`) has one warning naming the leg, the block,
//! the file's inode and the offset in the file; a damaged directory block
//! healed by a scrub is logged with its metadata kind.
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use fuse_support::*;

/// Overwrites 16 bytes of `image` at `offset` (as dd would).
fn smash(image: &Path, offset: u64) {
    let f = fs::OpenOptions::new().write(true).open(image).unwrap();
    f.write_all_at(b"dd was here!!!!!", offset).unwrap();
    f.sync_all().unwrap();
}

/// The daemon log's heal lines.
fn heal_lines(fx: &Fixture) -> Vec<String> {
    fs::read_to_string(fx.log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("healed leg"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_heal_is_logged_once_with_inode_and_offset_or_block_kind() {
    if !can_mount("each_heal_is_logged_once_with_inode_and_offset_or_block_kind") {
        return;
    }
    let fx = Fixture::new(2, 64 * MIB);
    let m = fx.mount("");
    let data = pattern(0x10C, 0, 64 * 1024);
    fs::write(m.path("victim"), &data).unwrap();
    fs::create_dir(m.path("d")).unwrap();
    let name = "a-name-only-this-directory-block-holds";
    fs::write(m.path(&format!("d/{name}")), b"x").unwrap();
    let ino = fs::metadata(m.path("victim")).unwrap().ino();
    m.unmount();

    // Block 5 of the file and the directory's leaf, damaged on leg 0.
    let offset = 5 * 4096u64;
    let at = blocks_starting_with(&fx.legs[0], &data[offset as usize..offset as usize + 64]);
    assert_eq!(at.len(), 1);
    smash(&fx.legs[0], at[0] + 100);
    // The leaf in the data area (not its image in the journal ring).
    let device = keelfs_engine::device::FileDevice::open(&fx.legs[0]).unwrap();
    let data_start = keelfs_fs::devset::read_superblock(&device)
        .unwrap()
        .layout
        .data
        .start;
    drop(device);
    let image = fs::read(&fx.legs[0]).unwrap();
    let from = data_start as usize * 4096;
    let leaf = (from
        + image[from..]
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .expect("the directory leaf")) as u64;
    smash(&fx.legs[0], leaf);
    drop(image);

    let m = fx.mount("");
    let want = format!("inode {ino} offset {offset}");
    let mut tries = 0;
    while !heal_lines(&fx).iter().any(|l| l.contains(&want)) {
        // Reads alternate between the legs: read until one met leg 0.
        tries += 1;
        assert!(tries < 40, "no heal logged: {:?}", heal_lines(&fx));
        fs::write("/proc/sys/vm/drop_caches", b"1").unwrap();
        assert!(fs::read(m.path("victim")).unwrap() == data);
    }
    for _ in 0..4 {
        fs::write("/proc/sys/vm/drop_caches", b"1").unwrap();
        assert!(fs::read(m.path("victim")).unwrap() == data);
    }
    let mnt = fx.mnt.to_str().unwrap();
    let (code, text) = keelfs(&["scrub", mnt]);
    assert_eq!(code, 0, "{text}");
    let lines = heal_lines(&fx);
    let data_lines: Vec<&String> = lines.iter().filter(|l| l.contains(&want)).collect();
    assert_eq!(data_lines.len(), 1, "logged once: {lines:?}");
    let line = data_lines[0];
    let block = at[0] / 4096;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("healed leg 0"), "{line}");
    assert!(line.contains(&format!("block {block}")), "{line}");
    assert!(line.contains("leg0.img"), "{line}");
    assert!(line.contains("rewritten from leg 1"), "{line}");
    let leaf_block = leaf / 4096;
    let meta: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("block {leaf_block}:")))
        .collect();
    assert_eq!(meta.len(), 1, "the leaf's heal logged once: {lines:?}");
    assert!(meta[0].contains("directory leaf"), "{}", meta[0]);
    assert!(meta[0].contains("healed leg 0"), "{}", meta[0]);
    m.finish();
}
