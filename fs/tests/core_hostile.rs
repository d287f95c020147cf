//! Hostile images: metadata blocks whose contents are wrong but whose seal
//! is right (a bug in another implementation, a crafted image, a stale
//! copy re-sealed by a broken tool). The integrity layer cannot catch them;
//! the decoders and the fs core must. For each seed, one to three sealed
//! metadata blocks of a populated filesystem get garbage (flipped bytes,
//! extreme integers at field positions, another block's payload of the same
//! kind, zeros) and are sealed again; then the filesystem is mounted and
//! walked (lookup, getattr, readdir, read, readlink, xattrs) and changed
//! (create, write, unlink, rename). Errors are expected; a panic or a hang
//! (10 s for the whole seed) fails the test and names the seed.
//!
//! `KEELFS_HOSTILE_SEEDS=N` runs N seeds (default 150).

mod core_support;

use core_support::*;
use keelfs_engine::device::{DeviceRef, MemDevice};
use keelfs_engine::integrity::{meta_check, meta_kind, meta_seal};
use keelfs_fs::core::{Caller, Fs};
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::FileType;
use keelfs_fs::format::META_HEADER_LEN;
use keelfs_fs::mkfs::MkfsOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::sync::{mpsc, Arc};
use std::time::Duration;

const SIZE: u64 = 32 * MIB;
const BS: u64 = 4096;

/// A populated one-leg image, and where its sealed metadata blocks are.
struct Template {
    image: Vec<u8>,
    uuid: [u8; 16],
    /// (block, kind) of every sealed block but the superblocks.
    sealed: Vec<(u64, u16)>,
}

fn build_template() -> Template {
    let legs = Legs::mem(1, SIZE, &MkfsOptions::default());
    let fs = legs.mount();
    let c = Caller::ROOT;
    let root = ROOT_INODE;
    // A directory big enough for index nodes.
    let big = fs.mkdir(root, b"big", 0o755, c).unwrap().ino;
    for i in 0..400 {
        let name = format!("entry-with-a-long-name-{i:05}");
        fs.mknod(big, name.as_bytes(), 0o100_644, 0, c).unwrap();
    }
    // Nested directories with files of several shapes.
    let mut dir = root;
    for d in 0..4 {
        dir = fs
            .mkdir(dir, format!("d{d}").as_bytes(), 0o755, c)
            .unwrap()
            .ino;
        let f = fs.mknod(dir, b"small", 0o100_644, 0, c).unwrap().ino;
        fs.write(f, 0, b"tiny inline content").unwrap();
        let f = fs.mknod(dir, b"medium", 0o100_644, 0, c).unwrap().ino;
        fs.write(f, 0, &pattern(d, 50_000)).unwrap();
        fs.symlink(dir, b"short", b"medium", c).unwrap();
        fs.symlink(dir, b"long", "x/".repeat(300).as_bytes(), c)
            .unwrap();
        fs.mknod(dir, b"fifo", 0o010_644, 0, c).unwrap();
    }
    // A fragmented file (an extent tree with index blocks) and a sparse one.
    let frag = fs.mknod(root, b"fragmented", 0o100_644, 0, c).unwrap().ino;
    for i in 0..600u64 {
        fs.write(frag, i * 2 * BS, &pattern(i, BS as usize))
            .unwrap();
    }
    let sparse = fs.mknod(root, b"sparse", 0o100_644, 0, c).unwrap().ino;
    fs.write(sparse, 5 * MIB, b"far out").unwrap();
    // Xattrs over several blocks, and a hard link.
    let x = fs.mknod(root, b"xattrs", 0o100_644, 0, c).unwrap().ino;
    for i in 0..6u64 {
        fs.setxattr(x, format!("user.v{i}").as_bytes(), &pattern(i, 3000), 0)
            .unwrap();
    }
    fs.link(x, big, b"hardlink").unwrap();
    fs.unmount().unwrap();

    let image = legs.mems[0].snapshot();
    let sb = keelfs_fs::devset::read_superblock(&*legs.devices[0]).unwrap();
    let uuid = sb.fs_uuid;
    let blocks = SIZE / BS;
    let sealed = (1..blocks - 1)
        .filter_map(|b| {
            let buf = &image[(b * BS) as usize..((b + 1) * BS) as usize];
            meta_check(b, &uuid, buf, None)
                .ok()
                .map(|()| (b, meta_kind(buf)))
        })
        .collect();
    Template {
        image,
        uuid,
        sealed,
    }
}

/// Damages one to three sealed blocks of a copy of the template.
fn hostile_copy(t: &Template, seed: u64) -> (Arc<MemDevice>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut image = t.image.clone();
    let mut what = Vec::new();
    for _ in 0..rng.random_range(1..=3) {
        let (block, kind) = t.sealed[rng.random_range(0..t.sealed.len())];
        let at = (block * BS) as usize;
        let payload = at + META_HEADER_LEN..at + BS as usize;
        let how = rng.random_range(0..4);
        match how {
            0 => {
                for _ in 0..rng.random_range(1..=8) {
                    let i = rng.random_range(payload.clone());
                    image[i] ^= 1 << rng.random_range(0..8);
                }
            }
            1 => {
                let interesting = [
                    0,
                    1,
                    2,
                    u64::MAX,
                    u64::from(u32::MAX),
                    SIZE / BS,
                    SIZE / BS - 1,
                    rng.random(),
                ];
                for _ in 0..rng.random_range(1..=4) {
                    let off = rng.random_range(0..(BS as usize - META_HEADER_LEN) / 8) * 8;
                    let v = interesting[rng.random_range(0..interesting.len())];
                    let i = payload.start + off;
                    // Sometimes a u32 field, sometimes a u64 one.
                    if rng.random_bool(0.5) {
                        image[i..i + 4].copy_from_slice(&(v as u32).to_le_bytes());
                    } else {
                        image[i..i + 8].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
            2 => {
                let same: Vec<u64> = t
                    .sealed
                    .iter()
                    .filter(|&&(b, k)| k == kind && b != block)
                    .map(|&(b, _)| b)
                    .collect();
                if let Some(&other) = same.get(rng.random_range(0..same.len().max(1))) {
                    let from = (other * BS) as usize;
                    let src = image[from + META_HEADER_LEN..from + BS as usize].to_vec();
                    image[payload.clone()].copy_from_slice(&src);
                }
            }
            _ => image[payload.clone()].fill(0),
        }
        meta_seal(block, &t.uuid, &mut image[at..at + BS as usize]);
        what.push(format!("block {block} (kind {kind}) damaged by way {how}"));
    }
    (Arc::new(MemDevice::from_image("hostile", image)), what)
}

/// Walks everything reachable, reading what can be read; returns how many
/// operations answered without error (for the record, not an assertion).
fn walk(fs: &Fs) -> usize {
    let mut ok = 0;
    let mut seen = HashSet::new();
    let mut todo = vec![ROOT_INODE];
    while let Some(dir) = todo.pop() {
        if !seen.insert(dir) || seen.len() > 5000 {
            continue;
        }
        let mut names = Vec::new();
        let r = fs.readdir(dir, 0, |e| {
            names.push((e.name.clone(), e.ino, e.kind));
            names.len() < 5000
        });
        ok += usize::from(r.is_ok());
        for (name, ino, kind) in names {
            if name == b"." || name == b".." {
                continue;
            }
            if let Ok(attr) = fs.lookup(dir, &name) {
                ok += 1;
                let _ = fs.getattr(attr.ino);
                let _ = fs.listxattr(attr.ino).map(|names| {
                    for n in names.iter().take(20) {
                        let _ = fs.getxattr(attr.ino, n);
                    }
                });
                match attr.kind {
                    FileType::Directory => todo.push(attr.ino),
                    FileType::Symlink => ok += usize::from(fs.readlink(attr.ino).is_ok()),
                    FileType::Regular => {
                        // Read at most 8 MiB, in 1 MiB pieces, from a few places.
                        let size = attr.size.min(1 << 40);
                        for off in [0, size / 2, size.saturating_sub(1 << 20)] {
                            ok += usize::from(fs.read(attr.ino, off, 1 << 20).is_ok());
                        }
                    }
                    _ => {}
                }
            }
            let _ = (ino, kind);
        }
    }
    ok
}

/// Changes the filesystem, ignoring errors.
fn change(fs: &Fs) {
    let c = Caller::ROOT;
    if let Ok(a) = fs.mknod(ROOT_INODE, b"new-file", 0o100_644, 0, c) {
        let _ = fs.write(a.ino, 0, &pattern(9, 70_000));
        let _ = fs.write(a.ino, 10 * MIB, b"x");
        let _ = fs.truncate(a.ino, 3000);
    }
    let _ = fs.mkdir(ROOT_INODE, b"new-dir", 0o755, c);
    let _ = fs.unlink(ROOT_INODE, b"fragmented", c);
    let _ = fs.rename(ROOT_INODE, b"sparse", ROOT_INODE, b"moved", 0, c);
    if let Ok(big) = fs.lookup(ROOT_INODE, b"big") {
        for i in 0..50 {
            let _ = fs.unlink(
                big.ino,
                format!("entry-with-a-long-name-{i:05}").as_bytes(),
                c,
            );
        }
        let _ = fs.mknod(big.ino, b"late", 0o100_644, 0, c);
    }
    if let Ok(x) = fs.lookup(ROOT_INODE, b"xattrs") {
        let _ = fs.setxattr(x.ino, b"user.new", &[7u8; 5000], 0);
        let _ = fs.removexattr(x.ino, b"user.v2");
    }
    let _ = fs.syncfs();
}

/// Operations that answered without error in a seed (0: it did not mount).
fn run_seed(t: &Template, seed: u64) -> Result<usize, String> {
    let (dev, what) = hostile_copy(t, seed);
    let devices = vec![dev as DeviceRef];
    let (tx, rx) = mpsc::channel();
    // A panic drops the sender without a message; a hang sends nothing.
    let handle = std::thread::spawn(move || {
        let mut answered = 0;
        if let Ok(fs) = Fs::mount(devices, &params()) {
            answered += walk(&fs);
            change(&fs);
            answered += walk(&fs);
            let _ = fs.unmount();
        }
        let _ = tx.send(answered);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(answered) => {
            let _ = handle.join();
            Ok(answered)
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(format!("seed {seed}: panicked; {}", what.join(", ")))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("seed {seed}: hung for 10 s; {}", what.join(", ")))
        }
    }
}

#[test]
fn sealed_garbage_in_metadata_never_panics_or_hangs() {
    let t = build_template();
    assert!(t.sealed.len() > 50, "{} sealed blocks", t.sealed.len());
    let seeds: u64 = std::env::var("KEELFS_HOSTILE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let mut failures = Vec::new();
    let mut walked = 0;
    for seed in 0..seeds {
        match run_seed(&t, seed) {
            Ok(answered) => walked += usize::from(answered > 500),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Most damage is local: the walk must have reached most of the tree in
    // most seeds, or it tested nothing.
    assert!(
        walked * 2 > seeds as usize,
        "only {walked} of {seeds} seeds mounted and walked the tree"
    );
}
