//! File data through the public API of `Fs` on 2-leg memory mirrors:
//! inline files and their move to extents, sparse files, holes and
//! SEEK_DATA/SEEK_HOLE, truncate both ways, every fallocate mode,
//! copy_file_range, symlinks, attributes and statfs, a 2 GiB sparse file,
//! and everything surviving an unmount and a remount.

mod core_support;

use core_support::*;
use keelfs_fs::core::{SetAttr, TimeSet, Whence};
use keelfs_fs::error::FsError;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::{DataArea, FileType, Timestamp};

const FL_KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
const FL_PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE;
const FL_ZERO: i32 = libc::FALLOC_FL_ZERO_RANGE;

fn is_inline(fs: &keelfs_fs::core::Fs, ino: u64) -> bool {
    matches!(fs.inode(ino).unwrap().read().data, DataArea::Inline(_))
}

#[test]
fn small_files_stay_inline_and_move_to_extents_when_they_grow() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    assert!(is_inline(&fs, ino));
    fs.write(ino, 0, b"hello").unwrap();
    fs.write(ino, 100, b"world").unwrap();
    assert!(is_inline(&fs, ino));
    let mut model = vec![0u8; 105];
    model[..5].copy_from_slice(b"hello");
    model[100..].copy_from_slice(b"world");
    assert_bytes(&read_all(&fs, ino), &model, "contents");
    assert_eq!(fs.getattr(ino).unwrap().blocks, 0);
    // Exactly 128 bytes still fits.
    fs.write(ino, 105, &[7u8; 23]).unwrap();
    model.extend_from_slice(&[7u8; 23]);
    assert!(is_inline(&fs, ino));
    // One more byte moves it to a block.
    fs.write(ino, 128, b"!").unwrap();
    model.push(b'!');
    assert!(!is_inline(&fs, ino));
    assert_bytes(&read_all(&fs, ino), &model, "contents");
    assert_eq!(fs.getattr(ino).unwrap().blocks, 8, "one 4 KiB block");
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_bytes(&read_all(&fs, ino), &model, "contents");
    fs.unmount().unwrap();
}

#[test]
fn a_write_far_past_an_inline_file_keeps_its_bytes() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    fs.write(ino, 0, b"head").unwrap();
    fs.write(ino, 1 << 20, b"tail").unwrap();
    let data = read_all(&fs, ino);
    assert_eq!(data.len(), (1 << 20) + 4);
    assert_eq!(&data[..4], b"head");
    assert!(data[4..1 << 20].iter().all(|&b| b == 0));
    assert_eq!(&data[1 << 20..], b"tail");
    assert_eq!(
        fs.getattr(ino).unwrap().blocks,
        16,
        "two blocks, the rest a hole"
    );
    fs.unmount().unwrap();
}

#[test]
fn sparse_files_read_zeros_and_seek_data_and_holes() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    let bs = 4096u64;
    // Data at blocks 2..4 and 10, a hole elsewhere; size 20 blocks.
    fs.write(ino, 2 * bs + 100, &pattern(2, 2 * bs as usize))
        .unwrap();
    fs.write(ino, 10 * bs, &pattern(3, 10)).unwrap();
    fs.truncate(ino, 20 * bs).unwrap();
    let data = read_all(&fs, ino);
    assert_eq!(data.len() as u64, 20 * bs);
    assert!(data[..(2 * bs + 100) as usize].iter().all(|&b| b == 0));
    assert_eq!(
        &data[(2 * bs + 100) as usize..(4 * bs + 100) as usize],
        &pattern(2, 2 * bs as usize)[..]
    );
    assert!(data[(10 * bs + 10) as usize..].iter().all(|&b| b == 0));

    assert_eq!(fs.lseek(ino, 0, Whence::Data).unwrap(), 2 * bs);
    assert_eq!(fs.lseek(ino, 2 * bs + 5, Whence::Data).unwrap(), 2 * bs + 5);
    assert_eq!(fs.lseek(ino, 0, Whence::Hole).unwrap(), 0);
    assert_eq!(fs.lseek(ino, 2 * bs, Whence::Hole).unwrap(), 5 * bs);
    assert_eq!(fs.lseek(ino, 5 * bs, Whence::Data).unwrap(), 10 * bs);
    assert_eq!(fs.lseek(ino, 10 * bs, Whence::Hole).unwrap(), 11 * bs);
    assert!(matches!(
        fs.lseek(ino, 11 * bs, Whence::Data),
        Err(FsError::NoSuchOffset)
    ));
    assert!(matches!(
        fs.lseek(ino, 20 * bs, Whence::Hole),
        Err(FsError::NoSuchOffset)
    ));
    assert_eq!(fs.lseek(ino, 19 * bs, Whence::Hole).unwrap(), 19 * bs);
    // A file that ends in data has its hole at the end.
    let full = new_file(&fs);
    fs.write(full, 0, &pattern(4, 3 * bs as usize)).unwrap();
    assert_eq!(fs.lseek(full, 10, Whence::Hole).unwrap(), 3 * bs);
    assert_eq!(fs.lseek(full, 10, Whence::Data).unwrap(), 10);
    // Inline files are all data.
    let small = new_file(&fs);
    fs.write(small, 0, b"abc").unwrap();
    assert_eq!(fs.lseek(small, 1, Whence::Data).unwrap(), 1);
    assert_eq!(fs.lseek(small, 1, Whence::Hole).unwrap(), 3);
    assert!(matches!(
        fs.lseek(small, 3, Whence::Data),
        Err(FsError::NoSuchOffset)
    ));
    fs.unmount().unwrap();
}

#[test]
fn truncate_down_frees_blocks_then_up_is_a_hole_of_zeros() {
    let legs = Legs::small();
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap().bfree;
    let ino = new_file(&fs);
    let data = pattern(5, 40_000);
    fs.write(ino, 0, &data).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().blocks, 10 * 8);
    fs.truncate(ino, 5000).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, 5000);
    assert_eq!(fs.getattr(ino).unwrap().blocks, 2 * 8);
    assert_eq!(read_all(&fs, ino), &data[..5000]);
    // Growing again shows zeros where the old bytes were.
    fs.truncate(ino, 12_000).unwrap();
    let grown = read_all(&fs, ino);
    assert_eq!(&grown[..5000], &data[..5000]);
    assert!(grown[5000..].iter().all(|&b| b == 0), "old bytes came back");
    assert_eq!(fs.getattr(ino).unwrap().blocks, 2 * 8);
    // A write just past the size within the last block sees zeros before it.
    fs.write(ino, 12_000, b"x").unwrap();
    let after = read_all(&fs, ino);
    assert!(after[5000..12_000].iter().all(|&b| b == 0));
    // Freed blocks come back after the commit.
    fs.truncate(ino, 0).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().blocks, 0);
    fs.fsync(ino, false).unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    // Inline truncation.
    let small = new_file(&fs);
    fs.write(small, 0, b"0123456789").unwrap();
    fs.truncate(small, 4).unwrap();
    fs.truncate(small, 8).unwrap();
    assert_eq!(read_all(&fs, small), b"0123\0\0\0\0");
    assert!(is_inline(&fs, small));
    fs.truncate(small, 1000).unwrap();
    assert!(!is_inline(&fs, small));
    let moved = read_all(&fs, small);
    assert_eq!(&moved[..8], b"0123\0\0\0\0");
    assert!(moved[8..].iter().all(|&b| b == 0));
    fs.unmount().unwrap();
}

/// A 10000-byte file (4 KiB blocks), committed, then shrunk to 5000: the
/// bytes 5000..8192 of its last block stay on disk as they were.
fn shrunk_file(fs: &keelfs_fs::core::Fs, seed: u64) -> (u64, Vec<u8>) {
    let ino = new_file(fs);
    let data = pattern(seed, 10_000);
    fs.write(ino, 0, &data).unwrap();
    fs.fsync(ino, false).unwrap();
    fs.truncate(ino, 5000).unwrap();
    (ino, data)
}

#[track_caller]
fn zeros_past(got: &[u8], data: &[u8], from: usize, what: &str) {
    assert_bytes(&got[..from], &data[..from], what);
    if let Some(p) = got[from..].iter().position(|&b| b != 0) {
        panic!("{what}: stale byte at {} of {}", from + p, got.len());
    }
}

#[test]
fn a_shrink_writes_no_data_and_a_crash_before_its_commit_keeps_the_old_bytes() {
    let legs = Legs::small();
    let fs = legs.mount();
    let (ino, data) = shrunk_file(&fs, 70);
    assert_eq!(read_all(&fs, ino), &data[..5000]);
    drop(fs); // crash: the shrink never committed
    let fs = legs.mount();
    assert_bytes(
        &read_all(&fs, ino),
        &data,
        "the old size shows the old bytes",
    );
    fs.unmount().unwrap();
}

#[test]
fn every_extension_after_a_shrink_shows_zeros_past_the_old_size() {
    let legs = Legs::small();
    let fs = legs.mount();
    for commit_between in [false, true] {
        let what = |w: &str| format!("{w} (shrink committed first: {commit_between})");
        let shrink = |seed| {
            let (ino, data) = shrunk_file(&fs, seed);
            if commit_between {
                fs.fsync(ino, false).unwrap();
            }
            (ino, data)
        };
        // Truncate up (the brief's case): 5000..8192 read zero.
        let (ino, data) = shrink(71);
        fs.truncate(ino, 10_000).unwrap();
        let got = read_all(&fs, ino);
        assert_eq!(got.len(), 10_000);
        zeros_past(&got, &data, 5000, &what("truncate up"));
        // A write past the end, beyond the old last block.
        let (ino, data) = shrink(72);
        fs.write(ino, 9000, b"far").unwrap();
        let got = read_all(&fs, ino);
        assert_eq!(&got[9000..], b"far");
        zeros_past(
            &got[..9000],
            &data,
            5000,
            &what("write past the last block"),
        );
        // A write past the end, inside the old last block.
        let (ino, data) = shrink(73);
        fs.write(ino, 6000, b"near").unwrap();
        let got = read_all(&fs, ino);
        assert_eq!(&got[6000..], b"near");
        zeros_past(
            &got[..6000],
            &data,
            5000,
            &what("write inside the last block"),
        );
        // An append exactly at the end, and then growing over the rest.
        let (ino, data) = shrink(74);
        fs.write(ino, 5000, b"at").unwrap();
        fs.truncate(ino, 10_000).unwrap();
        let got = read_all(&fs, ino);
        assert_eq!(&got[5000..5002], b"at");
        zeros_past(&got[5002..], &[], 0, &what("append, then truncate up"));
        assert_bytes(&got[..5000], &data[..5000], &what("append"));
        // fallocate that extends the size, plain and zero-range.
        for (seed, mode) in [(75, 0), (76, FL_ZERO)] {
            let (ino, data) = shrink(seed);
            fs.fallocate(ino, 7000, 3000, mode).unwrap();
            let got = read_all(&fs, ino);
            assert_eq!(got.len(), 10_000);
            zeros_past(&got, &data, 5000, &what(&format!("fallocate mode {mode}")));
        }
        // fallocate with KEEP_SIZE changes no size: the stale bytes stay
        // out of sight until a later extension zeroes them.
        let (ino, data) = shrink(77);
        fs.fallocate(ino, 0, 12_000, FL_KEEP_SIZE).unwrap();
        assert_eq!(fs.getattr(ino).unwrap().size, 5000);
        fs.truncate(ino, 12_000).unwrap();
        zeros_past(
            &read_all(&fs, ino),
            &data,
            5000,
            &what("keep-size, then up"),
        );
    }
    fs.unmount().unwrap();
}

#[test]
fn extensions_after_a_shrink_survive_a_crash_as_old_or_new_never_stale() {
    for fsync_shrink in [false, true] {
        let legs = Legs::small();
        let fs = legs.mount();
        let (ino, data) = shrunk_file(&fs, 80);
        if fsync_shrink {
            fs.fsync(ino, false).unwrap();
        }
        fs.truncate(ino, 10_000).unwrap();
        drop(fs); // crash: the truncate up never committed
        let fs = legs.mount();
        let got = read_all(&fs, ino);
        if fsync_shrink {
            // The shrink is durable: 5000 bytes, and growing shows zeros.
            assert_bytes(&got, &data[..5000], "the committed shrink");
            fs.truncate(ino, 10_000).unwrap();
            zeros_past(&read_all(&fs, ino), &data, 5000, "grown after the crash");
        } else {
            // Neither committed: the old size; the old last block holds
            // its old bytes, or the zeros of the later truncate up (its
            // own content, landed before its commit), never anything else.
            assert_eq!(got.len(), 10_000);
            assert_bytes(&got[..5000], &data[..5000], "below the shrink");
            assert_bytes(&got[8192..], &data[8192..], "the block past the last");
            let tail = &got[5000..8192];
            assert!(
                tail == &data[5000..8192] || tail.iter().all(|&b| b == 0),
                "bytes 5000..8192 are neither the old ones nor zeros"
            );
        }
        fs.unmount().unwrap();
    }
}

#[test]
fn written_blocks_an_interrupted_shrink_left_past_the_size_never_show() {
    let legs = Legs::small();
    let fs = legs.mount();
    // What a crash between the steps of a long shrink leaves (or a write
    // racing its later steps): the size is set, written blocks remain past
    // it.
    let leave = |seed| {
        let ino = new_file(&fs);
        let data = pattern(seed, 40_000);
        fs.write(ino, 0, &data).unwrap();
        let tx = fs.journal().start().unwrap();
        let cell = fs.inode(ino).unwrap();
        let mut state = cell.write();
        state.size = 5000;
        fs.store_inode(&tx, &state).unwrap();
        (ino, data)
    };
    let (ino, data) = leave(90);
    fs.truncate(ino, 40_000).unwrap();
    zeros_past(&read_all(&fs, ino), &data, 5000, "truncate up");
    assert_eq!(
        fs.getattr(ino).unwrap().blocks,
        2 * 8,
        "the stale blocks were freed"
    );
    let (ino, data) = leave(91);
    fs.write(ino, 30_000, b"far").unwrap();
    zeros_past(&read_all(&fs, ino)[..30_000], &data, 5000, "write far past");
    let (ino, data) = leave(92);
    fs.write(ino, 12_000, b"in a stale block").unwrap();
    zeros_past(
        &read_all(&fs, ino)[..12_000],
        &data,
        5000,
        "write into a stale block",
    );
    let (ino, data) = leave(93);
    fs.fallocate(ino, 0, 40_000, 0).unwrap();
    zeros_past(&read_all(&fs, ino), &data, 5000, "fallocate");
    fs.unmount().unwrap();
}

#[test]
fn fallocate_modes() {
    let legs = Legs::small();
    let fs = legs.mount();
    let bs = 4096u64;
    // Mode 0: unwritten blocks, size extended, reads zeros, counts blocks.
    let ino = new_file(&fs);
    fs.fallocate(ino, 0, 8 * bs, 0).unwrap();
    let a = fs.getattr(ino).unwrap();
    assert_eq!((a.size, a.blocks), (8 * bs, 64));
    assert!(read_all(&fs, ino).iter().all(|&b| b == 0));
    // Unwritten extents are holes for SEEK_DATA.
    assert!(matches!(
        fs.lseek(ino, 0, Whence::Data),
        Err(FsError::NoSuchOffset)
    ));
    // Writing into them makes data, with zeros around a partial write.
    fs.write(ino, bs + 10, b"abc").unwrap();
    let d = read_all(&fs, ino);
    assert_eq!(&d[(bs + 10) as usize..(bs + 13) as usize], b"abc");
    assert_eq!(d.iter().filter(|&&b| b != 0).count(), 3);
    assert_eq!(fs.getattr(ino).unwrap().blocks, 64, "no new block");
    assert_eq!(fs.lseek(ino, 0, Whence::Data).unwrap(), bs);
    assert_eq!(fs.lseek(ino, bs, Whence::Hole).unwrap(), 2 * bs);

    // KEEP_SIZE: blocks but no size.
    let keep = new_file(&fs);
    fs.write(keep, 0, &pattern(6, 100)).unwrap();
    fs.fallocate(keep, 0, 4 * bs, FL_KEEP_SIZE).unwrap();
    let k = fs.getattr(keep).unwrap();
    assert_eq!((k.size, k.blocks), (100, 32));
    assert_eq!(read_all(&fs, keep), pattern(6, 100));
    // Truncating to the size drops the preallocation.
    fs.truncate(keep, 100).unwrap();
    assert_eq!(fs.getattr(keep).unwrap().blocks, 8);

    // PUNCH_HOLE: whole blocks freed, partial ones zeroed, size kept.
    let p = new_file(&fs);
    let data = pattern(7, (6 * bs) as usize);
    fs.write(p, 0, &data).unwrap();
    assert!(matches!(
        fs.fallocate(p, 0, bs, FL_PUNCH),
        Err(FsError::NotSupported)
    ));
    fs.fallocate(p, bs + 100, 3 * bs, FL_PUNCH | FL_KEEP_SIZE)
        .unwrap();
    let pa = fs.getattr(p).unwrap();
    assert_eq!(pa.size, 6 * bs);
    assert_eq!(pa.blocks, 4 * 8, "blocks 2 and 3 freed");
    let mut model = data.clone();
    model[(bs + 100) as usize..(4 * bs + 100) as usize].fill(0);
    assert_bytes(&read_all(&fs, p), &model, "contents");
    assert_eq!(fs.lseek(p, 0, Whence::Hole).unwrap(), 2 * bs);
    assert_eq!(fs.lseek(p, 2 * bs, Whence::Data).unwrap(), 4 * bs);
    // Punching within one block.
    fs.fallocate(p, 10, 20, FL_PUNCH | FL_KEEP_SIZE).unwrap();
    model[10..30].fill(0);
    assert_bytes(&read_all(&fs, p), &model, "contents");

    // ZERO_RANGE: zeros, blocks stay allocated (unwritten), size extended.
    let z = new_file(&fs);
    let zd = pattern(8, (4 * bs) as usize);
    fs.write(z, 0, &zd).unwrap();
    fs.fallocate(z, 100, 2 * bs, FL_ZERO).unwrap();
    let mut zm = zd.clone();
    zm[100..(2 * bs + 100) as usize].fill(0);
    assert_bytes(&read_all(&fs, z), &zm, "contents");
    assert_eq!(fs.getattr(z).unwrap().blocks, 4 * 8);
    fs.fallocate(z, 4 * bs, 2 * bs, FL_ZERO).unwrap();
    assert_eq!(fs.getattr(z).unwrap().size, 6 * bs);
    fs.fallocate(z, 6 * bs, bs, FL_ZERO | FL_KEEP_SIZE).unwrap();
    assert_eq!(fs.getattr(z).unwrap().size, 6 * bs);
    zm.resize((6 * bs) as usize, 0);
    assert_bytes(&read_all(&fs, z), &zm, "zero-extended");

    // Inline files: punching zeroes bytes.
    let i = new_file(&fs);
    fs.write(i, 0, b"abcdefgh").unwrap();
    fs.fallocate(i, 2, 3, FL_PUNCH | FL_KEEP_SIZE).unwrap();
    assert_eq!(read_all(&fs, i), b"ab\0\0\0fgh");

    // Unsupported modes and bad arguments.
    for mode in [
        libc::FALLOC_FL_COLLAPSE_RANGE,
        libc::FALLOC_FL_INSERT_RANGE,
        0x40,
    ] {
        assert!(matches!(
            fs.fallocate(ino, 0, bs, mode),
            Err(FsError::NotSupported)
        ));
    }
    assert!(matches!(
        fs.fallocate(ino, 0, 0, 0),
        Err(FsError::Invalid(_))
    ));
    assert!(matches!(
        fs.fallocate(ino, u64::MAX - 10, 100, 0),
        Err(FsError::TooBig)
    ));

    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_bytes(&read_all(&fs, p), &model, "contents");
    assert_bytes(&read_all(&fs, z), &zm, "contents");
    fs.unmount().unwrap();
}

#[test]
fn copy_file_range_copies_bytes() {
    let legs = Legs::small();
    let fs = legs.mount();
    let src = new_file(&fs);
    let dst = new_file(&fs);
    let data = pattern(9, 3 << 20);
    fs.write(src, 0, &data).unwrap();
    assert_eq!(
        fs.copy_file_range(src, 1000, dst, 5, 2 << 20).unwrap(),
        2 << 20
    );
    let got = read_all(&fs, dst);
    assert_eq!(got.len(), 5 + (2 << 20));
    assert!(got[..5].iter().all(|&b| b == 0));
    assert_eq!(&got[5..], &data[1000..1000 + (2 << 20)]);
    // Past the end of the source: what there is.
    let n = fs
        .copy_file_range(src, (3 << 20) - 10, dst, 0, 100)
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(fs.copy_file_range(src, 3 << 20, dst, 0, 100).unwrap(), 0);
    // Overlapping ranges of one file are refused.
    assert!(fs.copy_file_range(src, 0, src, 10, 100).is_err());
    fs.unmount().unwrap();
}

#[test]
fn symlinks_inline_and_overflow() {
    let legs = Legs::small();
    let fs = legs.mount();
    let short = b"../some/target".to_vec();
    let long: Vec<u8> = (0..3000).map(|i| b'a' + (i % 26) as u8).collect();
    let (a, b) = {
        let tx = fs.journal().start().unwrap();
        let a = fs.create_symlink(&tx, &short, 1, 2, ROOT_INODE).unwrap();
        let b = fs.create_symlink(&tx, &long, 1, 2, ROOT_INODE).unwrap();
        assert!(matches!(
            fs.create_symlink(&tx, &vec![b'x'; 5000], 0, 0, ROOT_INODE),
            Err(FsError::NameTooLong)
        ));
        assert!(matches!(
            fs.create_symlink(&tx, b"", 0, 0, ROOT_INODE),
            Err(FsError::Invalid(_))
        ));
        (a.ino(), b.ino())
    };
    assert_eq!(fs.readlink(a).unwrap(), short);
    assert_eq!(fs.readlink(b).unwrap(), long);
    let attr = fs.getattr(b).unwrap();
    assert_eq!(attr.kind, FileType::Symlink);
    assert_eq!(attr.size, 3000);
    assert_eq!(attr.blocks, 8);
    assert_eq!((attr.uid, attr.gid, attr.perm), (1, 2, 0o777));
    assert!(fs.read(a, 0, 10).is_err());
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(fs.readlink(a).unwrap(), short);
    assert_eq!(fs.readlink(b).unwrap(), long);
    fs.unmount().unwrap();
}

#[test]
fn attributes_and_timestamps() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    let a0 = fs.getattr(ino).unwrap();
    assert_eq!(a0.kind, FileType::Regular);
    assert_eq!((a0.perm, a0.nlink, a0.size, a0.blocks), (0o644, 1, 0, 0));
    assert_eq!(a0.blksize, 4096);
    assert_eq!(a0.mtime, a0.ctime);
    std::thread::sleep(std::time::Duration::from_millis(5));
    fs.write(ino, 0, b"data").unwrap();
    let a1 = fs.getattr(ino).unwrap();
    assert!(a1.mtime > a0.mtime && a1.ctime > a0.ctime);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let a2 = fs
        .setattr(
            ino,
            &SetAttr {
                mode: Some(0o100_600),
                uid: Some(42),
                gid: Some(43),
                ..SetAttr::default()
            },
        )
        .unwrap();
    assert_eq!((a2.perm, a2.uid, a2.gid), (0o600, 42, 43));
    assert!(a2.ctime > a1.ctime);
    assert_eq!(a2.mtime, a1.mtime, "chmod/chown leave mtime");
    let t = Timestamp {
        secs: 1_000_000_000,
        nanos: 123_456_789,
    };
    let a3 = fs
        .setattr(
            ino,
            &SetAttr {
                atime: Some(TimeSet::At(t)),
                mtime: Some(TimeSet::At(t)),
                ..SetAttr::default()
            },
        )
        .unwrap();
    assert_eq!((a3.atime, a3.mtime), (t, t));
    assert!(a3.ctime >= a2.ctime);
    // A read refreshes an atime that is not after mtime (relatime).
    fs.read(ino, 0, 4).unwrap();
    assert!(fs.getattr(ino).unwrap().atime > t);
    let before = fs.getattr(ino).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    fs.truncate(ino, 2).unwrap();
    let a4 = fs.getattr(ino).unwrap();
    assert!(a4.mtime > before.mtime && a4.ctime > before.ctime);
    // Devices keep rdev; a directory records its parent.
    let (dev, dir) = {
        let tx = fs.journal().start().unwrap();
        let dev = fs
            .create_inode(&tx, 0o020_600, 0, 0, 0x0801, ROOT_INODE)
            .unwrap();
        let dir = fs
            .create_inode(&tx, 0o040_755, 0, 0, 0, ROOT_INODE)
            .unwrap();
        (dev.ino(), dir.ino())
    };
    assert_eq!(fs.getattr(dev).unwrap().rdev, 0x0801);
    assert_eq!(fs.getattr(dev).unwrap().kind, FileType::CharDevice);
    assert_eq!(fs.inode(dir).unwrap().read().parent, ROOT_INODE);
    assert!(matches!(fs.read(dir, 0, 1), Err(FsError::IsDir)));
    assert!(matches!(fs.write(dir, 0, b"x"), Err(FsError::IsDir)));
    fs.unmount().unwrap();
    let fs = legs.mount();
    let again = fs.getattr(ino).unwrap();
    assert_eq!(again, a4);
    assert!(matches!(fs.getattr(12345), Err(FsError::Stale)));
    assert!(matches!(fs.getattr(0), Err(FsError::Stale)));
    fs.unmount().unwrap();
}

#[test]
fn statfs_adds_up() {
    let legs = Legs::small();
    let fs = legs.mount();
    let sb = fs.superblock();
    let l = sb.layout;
    let s = fs.statfs().unwrap();
    assert_eq!(s.blocks, l.device_blocks);
    assert_eq!(s.bsize, 4096);
    assert_eq!(s.namelen, 255);
    assert_eq!(s.files, l.inode_count);
    assert_eq!(s.ffree, l.inode_count - 2);
    // Used = every fixed metadata block, the backup superblock and the
    // root directory's leaf.
    assert_eq!(s.blocks - s.bfree, l.data.start + 1 + 1);
    let ino = new_file(&fs);
    fs.write(ino, 0, &pattern(1, 10 * 4096)).unwrap();
    let s2 = fs.statfs().unwrap();
    assert_eq!(s.bfree - s2.bfree, 10);
    assert_eq!(s.ffree - s2.ffree, 1);
    fs.unmount().unwrap();
    // The superblock summary matches after unmount.
    let fs = legs.mount();
    let sb = fs.superblock();
    assert_eq!(sb.free_blocks, s2.bfree);
    assert_eq!(sb.free_inodes, s2.ffree);
    fs.unmount().unwrap();
}

#[test]
fn two_gib_sparse_file() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    let two_gib = 2u64 << 30;
    let head = pattern(10, 10_000);
    let tail = pattern(11, 10_000);
    fs.write(ino, 0, &head).unwrap();
    fs.write(ino, two_gib - tail.len() as u64, &tail).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().size, two_gib);
    assert_eq!(fs.read(ino, 0, 10_000).unwrap(), head);
    assert_eq!(fs.read(ino, two_gib - 10_000, 20_000).unwrap(), tail);
    assert!(fs
        .read(ino, 1 << 30, 65536)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_eq!(fs.lseek(ino, 10_000, Whence::Hole).unwrap(), 12_288);
    assert_eq!(
        fs.lseek(ino, 12_288, Whence::Data).unwrap(),
        (two_gib - 10_000) / 4096 * 4096
    );
    // Beyond the largest size: EFBIG.
    assert!(matches!(
        fs.write(ino, i64::MAX as u64, b"x"),
        Err(FsError::TooBig)
    ));
    assert!(matches!(fs.truncate(ino, u64::MAX), Err(FsError::TooBig)));
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(fs.read(ino, two_gib - 10_000, 20_000).unwrap(), tail);
    fs.unmount().unwrap();
}

#[test]
fn contiguous_writes_get_contiguous_blocks() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    for i in 0..64u64 {
        fs.write(ino, i * 4096, &pattern(i, 4096)).unwrap();
    }
    let cell = fs.inode(ino).unwrap();
    let state = cell.read();
    let DataArea::Extents(root) = &state.data else {
        panic!("not extents")
    };
    assert_eq!(root.len(), 1, "64 appends make one extent: {root:?}");
    fs.unmount().unwrap();
}

#[test]
fn read_only_mounts_change_nothing() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    fs.write(ino, 0, b"keep").unwrap();
    fs.unmount().unwrap();
    let before: Vec<Vec<u8>> = legs.mems.iter().map(|m| m.snapshot()).collect();
    let params = keelfs_fs::core::MountParams {
        read_only: true,
        ..params()
    };
    let fs = keelfs_fs::core::Fs::mount(legs.devices.clone(), &params).unwrap();
    assert_eq!(fs.read(ino, 0, 10).unwrap(), b"keep");
    assert!(matches!(fs.write(ino, 0, b"x"), Err(FsError::ReadOnly)));
    assert!(matches!(fs.truncate(ino, 0), Err(FsError::ReadOnly)));
    fs.unmount().unwrap();
    let after: Vec<Vec<u8>> = legs.mems.iter().map(|m| m.snapshot()).collect();
    assert!(before == after, "a read-only mount wrote to a leg");
}

#[test]
fn seeking_across_enormous_holes_is_quick() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    let far = 1u64 << 61;
    fs.write(ino, 4096, b"near").unwrap();
    fs.write(ino, far, b"far").unwrap();
    let t = std::time::Instant::now();
    assert_eq!(
        fs.lseek(ino, 8192, Whence::Data).unwrap(),
        far / 4096 * 4096
    );
    assert_eq!(fs.lseek(ino, 0, Whence::Data).unwrap(), 4096);
    assert_eq!(fs.lseek(ino, 4096, Whence::Hole).unwrap(), 8192);
    assert_eq!(fs.lseek(ino, far, Whence::Hole).unwrap(), far + 3);
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(fs.read(ino, far, 10).unwrap(), b"far");
    fs.unmount().unwrap();
}
