//! Freshly made and populated filesystems are clean: fsck -n exits 0 for
//! several sizes, block sizes and 1, 2 or 3 legs, changes no byte, and
//! fsck -y on a clean filesystem writes nothing.

mod support;

use keelfs_fsck::{fsck_paths, Options, EXIT_CLEAN};
use support::*;

fn assert_clean(img: &Image, what: &str) {
    let o = img.check();
    let first = o.first();
    let errors: Vec<String> = first.errors().map(|f| f.to_string()).collect();
    assert_eq!(o.exit_code, EXIT_CLEAN, "{what}: {:?} {errors:#?}", o.error);
}

#[test]
fn fresh_filesystems_are_clean() {
    for (legs, size, bs) in [
        (1, 2 * MIB, 1024),
        (2, 16 * MIB, 4096),
        (3, 8 * MIB, 2048),
        (1, 64 * MIB, 4096),
        (2, 80 * MIB, 65536),
    ] {
        let img = Image::new(legs, size, bs);
        let before = img.contents();
        assert_clean(
            &img,
            &format!("{legs} legs, {size} bytes, {bs}-byte blocks"),
        );
        assert!(img.contents() == before, "fsck -n changed the image");
        // Without -f a clean filesystem is skipped.
        let o = fsck_paths(
            &img.paths,
            &Options {
                force: false,
                ..Options::check()
            },
        );
        assert!(o.skipped_clean);
        assert_eq!(o.exit_code, EXIT_CLEAN);
        // -y on a clean filesystem changes nothing.
        let o = img.repair();
        assert_eq!(o.exit_code, EXIT_CLEAN, "{:?}", o.last().findings());
        assert_eq!(o.blocks_written(), 0);
        assert!(img.contents() == before, "fsck -y changed a clean image");
    }
}

#[test]
fn populated_filesystems_are_clean() {
    for (legs, bs) in [(2, 4096), (1, 1024), (3, 2048)] {
        let img = Image::new(legs, 16 * MIB, bs);
        let fs = img.mount();
        let p = populate(&fs);
        fs.unmount().unwrap();
        let (leaves, nodes) = dir_blocks(&img, p.big_dir);
        assert!(
            !nodes.is_empty() && leaves.len() > 1,
            "big directory has nodes"
        );
        let (ext_nodes, _) = file_blocks(&img, p.fragmented);
        assert!(!ext_nodes.is_empty(), "fragmented file has an extent tree");
        assert!(xattr_blocks(&img, p.xattr_file).len() >= 2);
        let before = img.contents();
        assert_clean(&img, &format!("populated, {legs} legs, {bs}-byte blocks"));
        assert!(img.contents() == before, "fsck -n changed the image");
        let o = img.repair();
        assert_eq!(o.exit_code, EXIT_CLEAN, "{:?}", o.last().findings());
        assert!(img.contents() == before, "fsck -y changed a clean image");
        let fs = img.mount();
        verify_population(&fs, &p);
        fs.unmount().unwrap();
    }
}
