//! FileDevice on a real block device: a loop device over a sparse image.
//!
//! Needs root and util-linux's losetup (the project's scripts install it;
//! CI runs as root). The loop device is detached even if the test fails.

use keelfs_engine::device::{Device, FileDevice};
use keelfs_engine::integrity::{Tag, Volume};
use keelfs_engine::mirror::MirrorSet;
use std::process::Command;
use std::sync::Arc;

struct Loop(String);

impl Loop {
    fn attach(image: &std::path::Path) -> Loop {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .expect("losetup runs");
        assert!(
            out.status.success(),
            "losetup failed (root needed): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn file_device_drives_a_loop_device_and_mirrors_onto_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("loop.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let lo = Loop::attach(&img);

    let dev = FileDevice::open(&lo.0).unwrap();
    assert!(dev.is_block_device());
    assert_eq!(dev.size(), 64 << 20);
    dev.write_at(1 << 20, &[0x5a; 8192]).unwrap();
    dev.flush().unwrap();
    let mut back = vec![0u8; 8192];
    dev.read_at(1 << 20, &mut back).unwrap();
    assert!(back.iter().all(|&b| b == 0x5a));
    // A second opener of the same block device is refused.
    assert!(FileDevice::open(&lo.0).is_err());

    // A two-leg mirror: the loop device and an image file.
    let other = FileDevice::create_image(dir.path().join("b.img"), 64 << 20).unwrap();
    let set = Arc::new(MirrorSet::new(vec![Arc::new(dev), Arc::new(other)], 4096).unwrap());
    let vol = Volume::new(set.clone(), [7; 16]);
    let data = vec![0xc3u8; 4 * 4096];
    let (tags, bits) = vol.write_data(100, 1, &data).unwrap();
    assert!(bits.is_clear());
    let mut got = vec![0u8; data.len()];
    vol.read_data(100, &mut got, &tags).unwrap();
    assert_eq!(got, data);
    let wrong: Vec<Tag> = tags
        .iter()
        .map(|t| Tag {
            gen: t.gen + 1,
            ..*t
        })
        .collect();
    assert!(vol.read_data(100, &mut got, &wrong).is_err());
}
