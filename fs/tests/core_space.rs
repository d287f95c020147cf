//! Running out of space and inodes: the failing operation changes nothing
//! it should not, space freed becomes usable after the commit, and
//! everything still reads back — before and after a remount.

mod core_support;

use core_support::*;
use keelfs_fs::core::Fs;
use keelfs_fs::error::FsError;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::DataArea;

/// Writes `chunk`-byte pieces to `ino` until space runs out; returns the
/// bytes written (the last write may be short).
fn fill(fs: &Fs, ino: u64, chunk: usize, seed: u64) -> Vec<u8> {
    let mut written = Vec::new();
    loop {
        let data = pattern(seed + written.len() as u64, chunk);
        match fs.write(ino, written.len() as u64, &data) {
            Ok(n) => {
                assert!(n > 0);
                written.extend_from_slice(&data[..n]);
                if n < chunk {
                    // A short write: the next one has no space at all.
                    let again = fs.write(ino, written.len() as u64, &data[n..]);
                    assert!(matches!(again, Err(FsError::NoSpace)), "{again:?}");
                    return written;
                }
            }
            Err(FsError::NoSpace) => return written,
            Err(e) => panic!("{e}"),
        }
    }
}

fn delete(fs: &Fs, ino: u64) {
    let tx = fs.journal().start().unwrap();
    let cell = fs.inode(ino).unwrap();
    let mut state = cell.write();
    fs.drop_link(&tx, &cell, &mut state).unwrap();
}

#[test]
fn filling_the_filesystem_then_freeing_space() {
    let legs = Legs::mem(2, 2 * MIB, &opts(1024));
    let fs = legs.mount();
    let free = fs.statfs().unwrap().bfree;
    let a = new_file(&fs);
    let a_data = fill(&fs, a, 10_000, 1);
    assert_eq!(
        a_data.len() as u64,
        free * 1024,
        "every free block was used"
    );
    assert_eq!(fs.getattr(a).unwrap().size, a_data.len() as u64);
    assert_eq!(fs.statfs().unwrap().bfree, 0);
    assert_bytes(&read_all(&fs, a), &a_data, "full file");
    // Another file cannot get a block; a small (inline) one still works.
    let b = new_file(&fs);
    assert!(matches!(
        fs.write(b, 0, &[1u8; 2000]),
        Err(FsError::NoSpace)
    ));
    assert_eq!(fs.getattr(b).unwrap().size, 0);
    fs.write(b, 0, b"tiny").unwrap();
    assert!(matches!(
        fs.fallocate(b, 0, 100_000, 0),
        Err(FsError::NoSpace)
    ));
    // Freed blocks wait for the commit.
    fs.truncate(a, a_data.len() as u64 / 2).unwrap();
    assert!(matches!(
        fs.write(b, 0, &[1u8; 2000]),
        Err(FsError::NoSpace)
    ));
    fs.fsync(a, false).unwrap();
    let c = new_file(&fs);
    let c_data = fill(&fs, c, 7_000, 2);
    assert!(
        c_data.len() as u64 >= free * 1024 / 2 - 2048,
        "wrote {}",
        c_data.len()
    );
    assert_bytes(&read_all(&fs, a), &a_data[..a_data.len() / 2], "a after");
    assert_bytes(&read_all(&fs, c), &c_data, "c");
    assert_eq!(read_all(&fs, b), b"tiny");
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_bytes(
        &read_all(&fs, a),
        &a_data[..a_data.len() / 2],
        "a remounted",
    );
    assert_bytes(&read_all(&fs, c), &c_data, "c remounted");
    // Deleting everything gives all the space back.
    delete(&fs, a);
    delete(&fs, b);
    delete(&fs, c);
    fs.syncfs().unwrap();
    let s = fs.statfs().unwrap();
    let l = fs.layout();
    assert_eq!(
        s.blocks - s.bfree,
        l.data.start + 2,
        "only the fixed blocks stay used"
    );
    fs.unmount().unwrap();
}

#[test]
fn an_extent_split_without_a_free_block_fails_cleanly() {
    let legs = Legs::mem(2, 2 * MIB, &opts(1024));
    let fs = legs.mount();
    // File a: five one-block extents fill its in-inode root.
    let a = new_file(&fs);
    let mut a_model = vec![0u8; 0];
    for i in 0..5u64 {
        let d = pattern(i, 1024);
        fs.write(a, 2 * i * 1024, &d).unwrap();
        a_model.resize((2 * i as usize + 1) * 1024, 0);
        a_model[2 * i as usize * 1024..].copy_from_slice(&d);
    }
    {
        let cell = fs.inode(a).unwrap();
        let state = cell.read();
        let DataArea::Extents(root) = &state.data else {
            panic!()
        };
        assert_eq!((root.len(), root.depth()), (5, 0));
    }
    // Fill the rest, then give back exactly one block.
    let b = new_file(&fs);
    let b_data = fill(&fs, b, 10_000, 3);
    let keep = (b_data.len() as u64 / 1024 - 1) * 1024;
    fs.truncate(b, keep).unwrap();
    fs.fsync(b, false).unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, 1);
    // A sixth extent needs a data block and a node block: refused, and
    // neither a block nor the file changes.
    let more = pattern(99, 1024);
    assert!(matches!(
        fs.write(a, 20 * 1024, &more),
        Err(FsError::NoSpace)
    ));
    assert_eq!(fs.statfs().unwrap().bfree, 1);
    assert_bytes(&read_all(&fs, a), &a_model, "a unchanged");
    // Punching a hole inside one extent of b (which would split it) needs
    // a node block too: refused, nothing changed.
    let punch = fs.fallocate(
        b,
        10 * 1024,
        1024,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    );
    assert!(matches!(punch, Err(FsError::NoSpace)), "{punch:?}");
    assert_bytes(&read_all(&fs, b), &b_data[..keep as usize], "b unchanged");
    // With more room the same write works.
    fs.truncate(b, keep - 4096).unwrap();
    fs.fsync(b, false).unwrap();
    assert_eq!(fs.write(a, 20 * 1024, &more).unwrap(), 1024);
    a_model.resize(21 * 1024, 0);
    a_model[20 * 1024..].copy_from_slice(&more);
    assert_bytes(&read_all(&fs, a), &a_model, "a extended");
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_bytes(&read_all(&fs, a), &a_model, "a remounted");
    assert_bytes(
        &read_all(&fs, b),
        &b_data[..keep as usize - 4096],
        "b remounted",
    );
    fs.unmount().unwrap();
}

#[test]
fn running_out_of_inodes() {
    let mut o = opts(1024);
    o.inodes = keelfs_fs::format::InodeSpec::Count(64);
    let legs = Legs::mem(1, 2 * MIB, &o);
    let fs = legs.mount();
    let free = fs.statfs().unwrap().ffree;
    let mut made = Vec::new();
    loop {
        let tx = fs.journal().start().unwrap();
        match fs.create_inode(&tx, 0o100_644, 0, 0, 0, ROOT_INODE) {
            Ok(cell) => made.push(cell.ino()),
            Err(FsError::NoSpace) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(made.len() as u64, free);
    assert_eq!(fs.statfs().unwrap().ffree, 0);
    let mut sorted = made.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), made.len(), "an inode was handed out twice");
    // A freed inode is reusable after the commit, with a new generation.
    let victim = made[10];
    let gen = fs.getattr(victim).unwrap().generation;
    delete(&fs, victim);
    {
        let tx = fs.journal().start().unwrap();
        let early = fs.create_inode(&tx, 0o100_644, 0, 0, 0, ROOT_INODE);
        assert!(matches!(early, Err(FsError::NoSpace)));
    }
    fs.journal().commit().unwrap();
    {
        let tx = fs.journal().start().unwrap();
        let again = fs
            .create_inode(&tx, 0o100_644, 0, 0, 0, ROOT_INODE)
            .unwrap();
        assert_eq!(again.ino(), victim);
    }
    assert_eq!(fs.getattr(victim).unwrap().generation, gen + 1);
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(fs.statfs().unwrap().ffree, 0);
    assert_eq!(fs.getattr(victim).unwrap().generation, gen + 1);
    fs.unmount().unwrap();
}

#[test]
fn fragmented_files_shrink_and_free_in_steps() {
    let legs = Legs::mem(2, 16 * MIB, &opts(1024));
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap().bfree;
    let ino = new_file(&fs);
    // 1500 one-block extents (every other block), a hole between each.
    let mut model = vec![0u8; 3000 * 1024];
    for i in 0..1500usize {
        let d = pattern(i as u64, 1024);
        fs.write(ino, (2 * i * 1024) as u64, &d).unwrap();
        model[2 * i * 1024..(2 * i + 1) * 1024].copy_from_slice(&d);
    }
    model.truncate(2999 * 1024);
    let extents = |fs: &keelfs_fs::core::Fs| {
        let cell = fs.inode(ino).unwrap();
        let state = cell.read();
        let DataArea::Extents(root) = &state.data else {
            panic!()
        };
        let mut n = 0;
        keelfs_fs::core::extent::for_each(fs.cache(), root, &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        n
    };
    assert_eq!(extents(&fs), 1500);
    // Shrink to 100 KiB: 1450 extents go, many steps' worth.
    fs.truncate(ino, 100 * 1024 + 10).unwrap();
    model.truncate(100 * 1024 + 10);
    assert_eq!(extents(&fs), 51);
    assert_bytes(&read_all(&fs, ino), &model, "shrunk");
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_bytes(&read_all(&fs, ino), &model, "shrunk, remounted");
    // An open, unlinked fragmented file is freed in steps at its release.
    fs.truncate(ino, 3000 * 1024).unwrap();
    for i in 0..1500usize {
        fs.write(ino, (2 * i * 1024) as u64, &pattern(i as u64, 1024))
            .unwrap();
    }
    fs.open(ino).unwrap();
    delete(&fs, ino);
    fs.release(ino).unwrap();
    assert!(matches!(fs.getattr(ino), Err(FsError::Stale)));
    fs.syncfs().unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    fs.unmount().unwrap();
}

#[test]
fn large_fallocate_and_punch_run_in_steps() {
    // 1 KiB blocks: a fallocate step is 8 MiB.
    let legs = Legs::mem(2, 32 * MIB, &opts(1024));
    let fs = legs.mount();
    let free0 = fs.statfs().unwrap().bfree;
    let ino = new_file(&fs);
    fs.fallocate(ino, 0, 20 * MIB, 0).unwrap();
    let a = fs.getattr(ino).unwrap();
    assert_eq!(a.size, 20 * MIB);
    assert!(a.blocks * 512 >= 20 * MIB);
    assert!(read_all(&fs, ino).iter().all(|&b| b == 0));
    // More than there is: NoSpace, with what fitted kept.
    let more = fs.fallocate(ino, 20 * MIB, 64 * MIB, 0);
    assert!(matches!(more, Err(FsError::NoSpace)), "{more:?}");
    assert_eq!(fs.statfs().unwrap().bfree, 0);
    // A punch over an enormous range frees everything, quickly.
    fs.fallocate(
        ino,
        0,
        1 << 60,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    assert_eq!(fs.getattr(ino).unwrap().blocks, 0);
    fs.syncfs().unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    fs.unmount().unwrap();
}
