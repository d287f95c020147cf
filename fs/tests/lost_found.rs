//! Removing lost+found (as `rm -rf MNT/*` does) leaves a filesystem that
//! fsck finds clean: the superblock stops naming the removed directory.

mod core_support;

use core_support::*;
use keelfs_fs::core::{Caller, Fs};
use keelfs_fs::devset::read_superblock;
use keelfs_fs::format::superblock::ROOT_INODE;

#[test]
fn rmdir_of_lost_found_clears_it_from_the_superblock() {
    let legs = Legs::small();
    let fs = legs.mount();
    assert_eq!(fs.superblock().lost_found_inode, 2);
    fs.rmdir(ROOT_INODE, b"lost+found", Caller::ROOT).unwrap();
    assert_eq!(fs.superblock().lost_found_inode, 0);
    Fs::unmount(fs).unwrap();
    for dev in &legs.devices {
        assert_eq!(read_superblock(dev.as_ref()).unwrap().lost_found_inode, 0);
    }
    let mut check = keelfs_fsck::Options::check();
    check.force = true;
    let outcome = keelfs_fsck::fsck_devices(&legs.devices, &check);
    assert_eq!(
        outcome.exit_code, 0,
        "{:?} {:?}",
        outcome.error, outcome.reports
    );
}
