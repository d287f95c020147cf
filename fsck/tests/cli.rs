//! The fsck.keelfs program as fsck(8) and a user run it: exit statuses,
//! messages, option handling, what -n leaves alone, garbage and truncated
//! images (exit 8, never a panic).

mod support;

use keelfs_engine::device::FileDevice;
use rand::{Rng, SeedableRng};
use support::*;

fn code(o: &std::process::Output) -> i32 {
    o.status.code().expect("exited, not killed by a signal")
}

#[test]
fn bad_command_lines_exit_16_with_a_message() {
    let img = Image::new(1, 8 * MIB, 4096);
    for args in [
        vec!["-n", "-y"],
        vec!["-q"],
        vec!["--frobnicate"],
        vec!["-C"],
        vec!["-C", "x"],
        vec!["-t", "ext4"],
    ] {
        let o = img.run(&args);
        assert_eq!(code(&o), 16, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("Usage:"), "{args:?}: {}", stderr(&o));
    }
    let o = fsck_program().output().unwrap();
    assert_eq!(code(&o), 16);
    assert!(stderr(&o).contains("no device given"));
    let o = fsck_program().arg("--help").output().unwrap();
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("Usage:"));
    let o = fsck_program().arg("-V").output().unwrap();
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("fsck.keelfs"));
}

#[test]
fn options_fsck_passes_are_accepted() {
    let img = Image::new(2, 8 * MIB, 4096);
    let o = img.run(&["-a", "-C", "0", "-t", "keelfs", "-T"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("clean"), "{}", stdout(&o));
    let o = img.run(&["-fp", "-C0"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains('%'),
        "progress on stderr: {}",
        stderr(&o)
    );
    let o = img.run(&["-N", "-y"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("would check and repair"));
}

#[test]
fn check_only_leaves_every_byte_and_reports_problems() {
    let img = Image::new(2, 8 * MIB, 4096);
    let l = img.layout();
    img.damage(1, l.inode_table.start);
    let before = img.contents();
    let o = img.run(&["-n", "-f"]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    assert!(stdout(&o).contains("Pass 3"), "{}", stdout(&o));
    assert!(stdout(&o).contains("left uncorrected"), "{}", stdout(&o));
    let o = img.run(&["-nfv"]);
    assert_eq!(code(&o), 4);
    assert!(
        stdout(&o).contains(&format!(
            "inode-table block 0 (block {})",
            l.inode_table.start
        )),
        "{}",
        stdout(&o)
    );
    assert!(img.contents() == before, "fsck -n changed the image");
    let o = img.run(&["-y", "-f"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(stdout(&o).contains("FILESYSTEM WAS MODIFIED"));
    let o = img.run(&["-n", "-f"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn a_filesystem_marked_with_errors_is_checked_without_f() {
    let img = Image::new(1, 8 * MIB, 4096);
    let o = img.run(&["-n"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("clean"));
    let mut sb = img.superblock();
    sb.state.errors = true;
    let set = keelfs_fs::devset::identify(&img.devices()).unwrap();
    keelfs_fs::devset::write_superblocks(&set, &sb, set.generation()).unwrap();
    drop(set);
    let o = img.run(&["-y"]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(!img.superblock().state.errors);
    let o = img.run(&["-n"]);
    assert_eq!(code(&o), 0);
}

#[test]
fn garbage_and_truncated_images_exit_8() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Random bytes.
    let junk = dir.path().join("junk.img");
    let bytes: Vec<u8> = (0..4 * MIB).map(|_| rng.random()).collect();
    std::fs::write(&junk, &bytes).unwrap();
    // All zeroes.
    let zero = dir.path().join("zero.img");
    FileDevice::create_image(&zero, 4 * MIB).unwrap();
    // Tiny.
    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, [0u8; 100]).unwrap();
    for p in [&junk, &zero, &tiny] {
        for mode in ["-n", "-y"] {
            let o = fsck_program().args([mode, "-f"]).arg(p).output().unwrap();
            assert_eq!(code(&o), 8, "{}: {}", p.display(), stderr(&o));
            assert!(stderr(&o).contains("not a keelfs device"), "{}", stderr(&o));
        }
    }
    // A missing file.
    let o = fsck_program()
        .arg("-n")
        .arg(dir.path().join("nope.img"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 8);
    assert!(stderr(&o).contains("nope.img"), "{}", stderr(&o));
    // Truncated: a valid filesystem cut in half.
    let img = Image::new(1, 8 * MIB, 4096);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.paths[0])
        .unwrap();
    f.set_len(4 * MIB).unwrap();
    let o = img.run(&["-n", "-f"]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
    // Legs of two different filesystems.
    let a = Image::new(1, 8 * MIB, 4096);
    let b = Image::new(1, 8 * MIB, 4096);
    let o = fsck_program()
        .args(["-n", "-f"])
        .arg(&a.paths[0])
        .arg(&b.paths[0])
        .output()
        .unwrap();
    assert_eq!(code(&o), 8);
    assert!(
        stderr(&o).contains("another keelfs filesystem"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_mounted_filesystem_is_refused() {
    let img = Image::new(1, 8 * MIB, 4096);
    let fs = img.mount();
    let o = img.run(&["-n", "-f"]);
    assert_eq!(code(&o), 8, "{}", stderr(&o));
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    fs.unmount().unwrap();
}

#[test]
fn fsck_t_keelfs_runs_it() {
    // fsck(8) runs fsck.TYPE found on its search path (which ends with
    // $PATH); skip where util-linux fsck is not installed.
    let Some(fsck) = ["/usr/sbin/fsck", "/sbin/fsck"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return;
    };
    let img = Image::new(1, 8 * MIB, 4096);
    let bin = img.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fsck-keelfs"), bin.join("fsck.keelfs")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = std::process::Command::new(fsck)
        .env("PATH", path)
        .args(["-t", "keelfs", "-n", "-f"])
        .arg(&img.paths[0])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("clean"), "{}", stdout(&o));
    img.damage(0, img.layout().inode_table.start);
    let o = std::process::Command::new(fsck)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .args(["-t", "keelfs", "-y", "-f"])
        .arg(&img.paths[0])
        .output()
        .unwrap();
    // One leg, no good copy of that inode-table block: its inodes (the
    // root's) are lost; the repair makes a new root.
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
}
