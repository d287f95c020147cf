//! The core on image files (a 2-leg mirror of sparse files), mounting
//! degraded, and the integrity layer under file data: a corrupted data
//! block on one leg reads back right and is healed.

mod core_support;

use core_support::*;
use keelfs_engine::device::{DeviceRef, FileDevice};
use keelfs_fs::core::{Fs, MountParams};
use keelfs_fs::error::FsError;
use keelfs_fs::format::DataArea;
use keelfs_fs::mkfs::MkfsOptions;
use std::sync::Arc;

fn reopen(dir: &std::path::Path, legs: &[usize]) -> Vec<DeviceRef> {
    legs.iter()
        .map(|i| Arc::new(FileDevice::open(dir.join(format!("leg{i}.img"))).unwrap()) as DeviceRef)
        .collect()
}

#[test]
fn files_on_image_legs_survive_remounts_and_a_missing_leg() {
    let dir = tempfile::tempdir().unwrap();
    let legs = Legs::images(dir.path(), 2, 64 * MIB, &MkfsOptions::default());
    let fs = legs.mount();
    let big = new_file(&fs);
    let small = new_file(&fs);
    let big_data = pattern(1, 5 << 20);
    fs.write(big, 0, &big_data).unwrap();
    fs.write(small, 0, b"small file").unwrap();
    fs.unmount().unwrap();
    drop(legs);

    let fs = Fs::mount(reopen(dir.path(), &[1, 0]), &params()).unwrap();
    assert_bytes(&read_all(&fs, big), &big_data, "big");
    assert_eq!(read_all(&fs, small), b"small file");
    fs.write(small, 0, b"SMALL").unwrap();
    fs.unmount().unwrap();

    // One leg alone is a degraded set: refused unless asked for.
    let err = Fs::mount(reopen(dir.path(), &[0]), &params())
        .err()
        .expect("a degraded mount without -o degraded");
    assert!(
        matches!(err, FsError::Invalid(ref m) if m.contains("degraded")),
        "{err}"
    );
    let degraded = MountParams {
        degraded: true,
        read_only: true,
        ..params()
    };
    let fs = Fs::mount(reopen(dir.path(), &[0]), &degraded).unwrap();
    assert_bytes(&read_all(&fs, big), &big_data, "big, degraded");
    assert_eq!(read_all(&fs, small), b"SMALL file");
    fs.unmount().unwrap();
}

#[test]
fn a_corrupt_data_block_on_one_leg_is_read_from_the_other_and_healed() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    let data = pattern(2, 64 * 1024);
    fs.write(ino, 0, &data).unwrap();
    let physical = {
        let cell = fs.inode(ino).unwrap();
        let state = cell.read();
        let DataArea::Extents(root) = &state.data else {
            panic!()
        };
        keelfs_fs::core::extent::lookup(fs.cache(), root, 3)
            .unwrap()
            .map(|e| e.physical + 3 - e.logical)
            .unwrap()
    };
    fs.unmount().unwrap();
    legs.mems[0].poke(physical * 4096 + 100, b"garbage");
    legs.mems[1].poke(physical * 4096 + 200, b"more garbage");
    let fs = legs.mount();
    // Both legs bad in different places: no good copy of that block.
    assert!(matches!(
        fs.read(ino, 3 * 4096, 4096),
        Err(FsError::Engine(
            keelfs_engine::EngineError::NoGoodCopy { .. }
        ))
    ));
    fs.unmount().unwrap();
    // Repair leg 1 by hand; then leg 0's copy is healed from it on read.
    let good = &data[3 * 4096..4 * 4096];
    legs.mems[1].poke(physical * 4096, good);
    let fs = legs.mount();
    assert_bytes(&read_all(&fs, ino), &data, "healed read");
    let healed: u64 = fs.volume().set().stats().iter().map(|s| s.healed).sum();
    assert!(healed >= 1, "a heal was counted");
    fs.unmount().unwrap();
    assert_eq!(
        legs.mems[0].peek(physical * 4096, 4096),
        good,
        "leg 0 rewritten"
    );
}
