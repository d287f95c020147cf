//! Finding the members of a mirror set that were not named.
//!
//! Every leg's superblock carries the whole member table (each member's
//! device uuid, docs/format.md §4), so one leg is enough to know which
//! devices are missing. This module looks for them the way `btrfs device
//! scan` does: it reads the superblock of every block device the kernel
//! lists in /sys/class/block and keeps those whose filesystem uuid is the
//! set's and whose own device uuid is one the set is missing. Image files
//! cannot be found this way (there is no list of them); they must be named.
//!
//! Relies on `devset::read_superblock` for the one way a superblock is
//! found on a device. Devices are opened read-only and without the
//! exclusive lock, and only their superblock area is read: scanning never
//! writes and never blocks a mounted set.

use crate::devset::{read_superblock, read_superblock_copy};
use crate::format::superblock::MemberState;
use keelfs_engine::device::{FileDevice, FileOpenOptions};
use std::path::{Path, PathBuf};

/// A member found by [`find_missing_members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundMember {
    /// The block device that holds it (`/dev/NAME`).
    pub path: PathBuf,
    /// Its index in the member table.
    pub member: u32,
}

/// Splits mount-style sources (`a.img,b.img`) into one path per leg, the
/// way the mount program reads SOURCE; empty pieces are dropped.
pub fn split_sources<P: AsRef<Path>>(sources: &[P]) -> Vec<PathBuf> {
    sources
        .iter()
        .flat_map(|s| {
            s.as_ref()
                .to_string_lossy()
                .split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn open_unlocked(path: &Path) -> Option<FileDevice> {
    FileDevice::open_with(
        path,
        FileOpenOptions {
            read_only: true,
            lock: false,
            wait_for_lock: false,
        },
    )
    .ok()
}

/// The block devices the kernel lists, as `/dev/NAME` paths that exist.
pub fn block_device_candidates() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|name| PathBuf::from("/dev").join(name))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    out
}

/// Looks among `candidates` for the members of the set on `given` that
/// `given` does not include. Nothing is found when no given device holds a
/// readable keelfs superblock, or when every member in the table (absent
/// entries aside) is already given. A candidate is taken only if its
/// superblock names the same filesystem uuid and carries a missing
/// member's device uuid at that member's index; the first such candidate
/// wins for each member.
pub fn find_missing_members(given: &[PathBuf], candidates: &[PathBuf]) -> Vec<FoundMember> {
    let given_sbs: Vec<_> = given
        .iter()
        .filter_map(|p| open_unlocked(p))
        .filter_map(|d| read_superblock_copy(&d).ok())
        .collect();
    // The newest superblock (highest generation) names the set.
    let Some(table) = given_sbs
        .iter()
        .max_by_key(|found| found.generation)
        .map(|found| &found.superblock)
    else {
        return Vec::new();
    };
    let have: Vec<[u8; 16]> = given_sbs
        .iter()
        .map(|found| found.superblock.device_uuid)
        .collect();
    let mut missing: Vec<(u32, [u8; 16])> = table
        .members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.state != MemberState::Absent && !have.contains(&m.uuid))
        .map(|(i, m)| (i as u32, m.uuid))
        .collect();
    let given_ids: Vec<_> = given.iter().filter_map(|p| identity(p)).collect();
    let mut found = Vec::new();
    for cand in candidates {
        if missing.is_empty() {
            break;
        }
        if identity(cand).is_some_and(|id| given_ids.contains(&id)) {
            continue;
        }
        let Some(dev) = open_unlocked(cand) else {
            continue;
        };
        let Ok(sb) = read_superblock(&dev) else {
            continue;
        };
        if sb.fs_uuid != table.fs_uuid {
            continue;
        }
        if let Some(pos) = missing
            .iter()
            .position(|&(i, uuid)| i == sb.device_index && uuid == sb.device_uuid)
        {
            let (member, _) = missing.remove(pos);
            found.push(FoundMember {
                path: cand.clone(),
                member,
            });
        }
    }
    found
}

/// (device, inode) of a file, or (MAX, rdev) of a block device.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path).ok()?;
    if meta.file_type().is_block_device() {
        Some((u64::MAX, meta.rdev()))
    } else {
        Some((meta.dev(), meta.ino()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_comma_lists_like_mount_sources() {
        let got = split_sources(&["a.img,b.img", "c.img", ",d,"]);
        let want: Vec<PathBuf> = ["a.img", "b.img", "c.img", "d"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn nothing_found_for_a_device_without_keelfs() {
        let dir = std::env::temp_dir().join(format!("keelfs-scan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("plain.img");
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let one = std::slice::from_ref(&p);
        assert!(find_missing_members(one, one).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
