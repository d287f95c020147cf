//! fsck.keelfs given part of a set: comma-separated sources (an fstab
//! line's SOURCE reaches fsck as one argument) and members found among the
//! block devices by uuid. Leg 1 is put on a real loop device, damaged, and
//! fsck is given only leg 0: it must find leg 1 and report the damage;
//! with -S it must not look.

mod support;

use std::path::Path;
use std::process::Command;
use support::*;

fn code(o: &std::process::Output) -> i32 {
    o.status.code().expect("exited, not killed by a signal")
}

/// A loop device over an image file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(image: &Path) -> Option<Loop> {
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .ok()?;
        if !o.status.success() {
            return None;
        }
        Some(Loop(String::from_utf8_lossy(&o.stdout).trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn comma_separated_sources_name_every_leg() {
    let (img, pop) = fresh_populated();
    let joined = format!("{},{}", img.paths[0].display(), img.paths[1].display());
    let o = fsck_program()
        .args(["-n", "-f", "-S", &joined])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        !stdout(&o).contains("not given") && !stderr(&o).contains("not given"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    // Damage on leg 1 is seen through the comma list too.
    let (data, _) = file_blocks(&img, pop.fragmented);
    img.damage(1, data[0]);
    let o = fsck_program()
        .args(["-n", "-f", "-S", &joined])
        .output()
        .unwrap();
    assert_eq!(code(&o), 4, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn a_member_on_a_block_device_is_found_by_uuid() {
    let (img, pop) = fresh_populated();
    let (data, _) = file_blocks(&img, pop.fragmented);
    img.damage(1, data[0]);
    let Some(lo) = Loop::attach(&img.paths[1]) else {
        panic!("losetup failed: this test needs loop devices (root)");
    };
    let leg0 = img.paths[0].display().to_string();

    // Without the scan, leg 1 is "not given" and leg 0 alone is clean.
    let o = fsck_program()
        .args(["-n", "-f", "-S", &leg0])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    // With it, leg 1 is found on the loop device and its damage reported.
    let o = fsck_program().args(["-n", "-f", &leg0]).output().unwrap();
    assert!(
        stderr(&o).contains(&format!("member 1 of the set found on {}", lo.0)),
        "{}",
        stderr(&o)
    );
    assert_eq!(code(&o), 4, "{}{}", stdout(&o), stderr(&o));

    // And a repair through the found member heals it.
    let o = fsck_program().args(["-y", "-f", &leg0]).output().unwrap();
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    let o = fsck_program().args(["-n", "-f", &leg0]).output().unwrap();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    drop(lo);
    // The damage was repaired on the image under the loop device.
    let o = img.run(&["-n", "-f", "-S"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}
