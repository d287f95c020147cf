//! Mirror legs: a leg that missed writes (stale) is found and resynced
//! block by block; a member not given is only noted; with three legs, a
//! block bad on two of them is healed from the third.

mod support;

use keelfs_engine::device::DeviceRef;
use keelfs_fs::core::{Fs, MountParams};
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fsck::{fsck_paths, Options, Outcome, EXIT_CLEAN, EXIT_CORRECTED, EXIT_UNCORRECTED};
use support::*;

fn messages(o: &Outcome) -> String {
    o.first()
        .findings()
        .iter()
        .map(|f| format!("  {f}\n"))
        .collect()
}

fn mount_legs(devices: Vec<DeviceRef>, degraded: bool) -> Fs {
    let params = MountParams {
        background_writeback: false,
        degraded,
        ..MountParams::default()
    };
    Fs::mount(devices, &params).expect("mount")
}

#[test]
fn a_stale_leg_is_resynced() {
    let (img, p) = fresh_populated();
    // Leg 1 is away while leg 0 takes new files and changes.
    let leg0 = img.devices().remove(0);
    let fs = mount_legs(vec![leg0], true);
    let t = Tree::new(&fs);
    let news = t.mkdir(ROOT_INODE, "while-away");
    let mut added = Vec::new();
    for i in 0..20 {
        let data = pattern(700 + i, 3000 + 997 * i as usize);
        let ino = t.file(news, &format!("n{i}"), &data);
        added.push((ino, data));
    }
    let changed = pattern(99, 4096 * 3);
    fs.write(p.files[3].1, 0, &changed).unwrap();
    fs.unmount().unwrap();

    let o = img.check();
    assert_eq!(o.exit_code, EXIT_UNCORRECTED, "{}", messages(&o));
    assert!(o.first().mentions("stale"), "{}", messages(&o));
    let o = img.repair();
    assert_eq!(o.exit_code, EXIT_CORRECTED, "{:?}", o.last().findings());
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{}", messages(&o));
    // Leg 1 alone now holds everything.
    let leg1 = img.devices().remove(1);
    let fs = mount_legs(vec![leg1], true);
    for (ino, data) in &added {
        assert!(
            read_all(&fs, *ino) == *data,
            "inode {ino} on the resynced leg"
        );
    }
    assert_eq!(read_all(&fs, p.files[3].1)[..changed.len()], changed[..]);
    fs.unmount().unwrap();
}

#[test]
fn a_member_not_given_is_noted() {
    let img = Image::new(2, 16 * MIB, 4096);
    let one = [img.paths[0].clone()];
    let before = img.contents();
    let o = fsck_paths(&one, &Options::check());
    assert_eq!(o.exit_code, EXIT_CLEAN, "{}", messages(&o));
    assert!(o
        .first()
        .findings()
        .iter()
        .any(|f| f.message.contains("member 1") && f.message.contains("not given")));
    let o = fsck_paths(&one, &Options::repair());
    assert_eq!(o.exit_code, EXIT_CLEAN, "{:?}", o.last().findings());
    assert!(img.contents() == before);
}

#[test]
fn three_legs_heal_from_the_one_good_copy() {
    let img = Image::new(3, 16 * MIB, 2048);
    let fs = img.mount();
    let p = populate(&fs);
    fs.unmount().unwrap();
    let leaf = dir_blocks(&img, p.big_dir).0[1];
    let data = file_blocks(&img, p.fragmented).1[7];
    let table = img.layout().inode_location(p.files[2].1).unwrap().block;
    for b in [leaf, data, table] {
        img.damage(0, b);
        img.damage(2, b);
    }
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_UNCORRECTED);
    // Two bad copies of each metadata block; the data block's in one line.
    assert_eq!(o.first().error_count(), 5, "{}", messages(&o));
    let o = img.repair();
    assert_eq!(o.exit_code, EXIT_CORRECTED, "{:?}", o.last().findings());
    for b in [leaf, data, table] {
        let good = img.read_block(1, b);
        assert!(img.read_block(0, b) == good && img.read_block(2, b) == good);
    }
    assert_eq!(img.check().exit_code, EXIT_CLEAN);
    let fs = img.mount();
    verify_population(&fs, &p);
    fs.unmount().unwrap();
}

#[test]
fn a_lost_write_is_found_by_its_generation() {
    let (img, p) = fresh_populated();
    // The small directory's leaf as it is now, then a change to it.
    let leaf = dir_blocks(&img, p.small_dir).0[0];
    let old = img.read_block(1, leaf);
    let fs = img.mount();
    Tree::new(&fs).file(p.small_dir, "late", b"written after");
    fs.unmount().unwrap();
    assert_eq!(dir_blocks(&img, p.small_dir).0[0], leaf, "changed in place");
    // Leg 1 "lost" the write: it still holds the old, well-sealed leaf.
    img.write_block(1, leaf, &old);
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_UNCORRECTED);
    assert!(o.first().mentions("expected"), "{}", messages(&o));
    let o = img.repair();
    assert_eq!(o.exit_code, EXIT_CORRECTED, "{:?}", o.last().findings());
    assert!(img.read_block(1, leaf) == img.read_block(0, leaf));
    assert_eq!(img.check().exit_code, EXIT_CLEAN);
    assert!(dir_entries(&img, p.small_dir).iter().any(|e| e.0 == "late"));
}

#[test]
fn a_crash_is_replayed_and_a_sound_filesystem_marked_clean() {
    let (img, p) = fresh_populated();
    let fs = img.mount();
    let t = Tree::new(&fs);
    let d = t.mkdir(ROOT_INODE, "after");
    for i in 0..10 {
        t.file(d, &format!("x{i}"), &pattern(i, 5000));
    }
    fs.journal().commit().unwrap();
    drop(fs); // a crash: not unmounted, summary counts not written
    assert!(!img.superblock().state.clean_unmount);
    // The redo journal holds the committed transactions: -n replays them in
    // memory only and finds the result sound (exit 0, nothing written); -y
    // replays them first, as a mount would.
    let before = img.contents();
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{}", messages(&o));
    assert!(o.replayed_in_memory.is_some());
    assert!(img.contents() == before, "-n wrote something");
    let o = img.repair();
    assert!(o.replayed.is_some());
    assert_eq!(o.exit_code, EXIT_CORRECTED, "{:?}", o.last().findings());
    assert_eq!(img.check().exit_code, EXIT_CLEAN);
    // A crash right after a mount (which replays the journal): nothing to
    // replay, not cleanly unmounted, sound. -n is clean; -y only marks it
    // clean, which is no correction.
    drop(img.mount());
    assert!(!img.superblock().state.clean_unmount);
    let o = img.check();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{}", messages(&o));
    assert!(o
        .first()
        .findings()
        .iter()
        .any(|f| f.message.contains("not cleanly")));
    let o = img.repair();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{:?}", o.last().findings());
    assert!(img.superblock().state.clean_unmount);
    let o = fsck_paths(
        &img.paths,
        &Options {
            force: false,
            ..Options::check()
        },
    );
    assert!(o.skipped_clean);
    let fs = img.mount();
    verify_population(&fs, &p);
    fs.unmount().unwrap();
}
