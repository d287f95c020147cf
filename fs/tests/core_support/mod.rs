//! Shared helpers of the `core_*` tests: formatting legs (memory or image
//! files), mounting with deterministic parameters, making files without
//! directories, and a few assertions.

#![allow(dead_code)]

use keelfs_engine::device::{DeviceRef, FileDevice, MemDevice};
use keelfs_fs::core::{Fs, MountParams};
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::mkfs::{format, MkfsOptions};
use std::path::Path;
use std::sync::Arc;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

/// Legs of one filesystem.
pub struct Legs {
    pub mems: Vec<Arc<MemDevice>>,
    pub devices: Vec<DeviceRef>,
}

impl Legs {
    /// `count` memory legs of `size` bytes, formatted with `opts`.
    pub fn mem(count: usize, size: u64, opts: &MkfsOptions) -> Legs {
        let mems: Vec<Arc<MemDevice>> = (0..count)
            .map(|i| Arc::new(MemDevice::new(format!("mem{i}"), size)))
            .collect();
        let devices: Vec<DeviceRef> = mems.iter().map(|m| m.clone() as DeviceRef).collect();
        format(&devices, opts).expect("mkfs");
        Legs { mems, devices }
    }

    /// Two 16 MiB memory legs, 4 KiB blocks.
    pub fn small() -> Legs {
        Legs::mem(2, 16 * MIB, &MkfsOptions::default())
    }

    /// `count` sparse image files of `size` bytes in `dir`, formatted.
    pub fn images(dir: &Path, count: usize, size: u64, opts: &MkfsOptions) -> Legs {
        let devices: Vec<DeviceRef> = (0..count)
            .map(|i| {
                let dev = FileDevice::create_image(dir.join(format!("leg{i}.img")), size)
                    .expect("create image");
                Arc::new(dev) as DeviceRef
            })
            .collect();
        format(&devices, opts).expect("mkfs");
        Legs {
            mems: Vec::new(),
            devices,
        }
    }

    /// Mounts with the test parameters.
    pub fn mount(&self) -> Fs {
        Fs::mount(self.devices.clone(), &params()).expect("mount")
    }
}

/// Deterministic mount parameters: no background threads.
pub fn params() -> MountParams {
    MountParams {
        background_writeback: false,
        ..MountParams::default()
    }
}

/// mkfs options with block size `bs`.
pub fn opts(bs: u32) -> MkfsOptions {
    MkfsOptions {
        block_size: bs,
        ..MkfsOptions::default()
    }
}

/// A new regular file (no directory entry), 0644, owned by root.
pub fn new_file(fs: &Fs) -> u64 {
    let tx = fs.journal().start().unwrap();
    let cell = fs
        .create_inode(&tx, 0o100_644, 0, 0, 0, ROOT_INODE)
        .expect("create inode");
    cell.ino()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Reads the whole file.
pub fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let size = fs.getattr(ino).unwrap().size;
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let chunk = fs.read(ino, out.len() as u64, 1 << 20).unwrap();
        assert!(!chunk.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// Asserts two byte strings are equal, naming the first difference (never
/// printing megabytes).
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes, expected {}; first difference at byte {first} (got {:?}, expected {:?})",
        got.len(),
        want.len(),
        got.get(first),
        want.get(first)
    );
}
