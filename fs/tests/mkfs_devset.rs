//! mkfs and the device set together: format legs (memory and sparse image
//! files), then identify them and check every block mkfs promises; damage
//! legs in the ways a mount meets (bad primary, foreign leg, missing,
//! stale, failed, garbage, truncated) and check the answer.

use keelfs_engine::device::{
    Device, DeviceRef, Fault, FaultDevice, FaultRule, FileDevice, MemDevice, Op,
};
use keelfs_engine::integrity::{meta_seal, Volume};
use keelfs_engine::mirror::LegState;
use keelfs_engine::EngineError;
use keelfs_fs::devset::{
    identify, open_legs, probe_existing_filesystem, read_superblock, read_superblock_copy,
    write_superblocks, DevSetError, LegOpenOptions, SuperblockCopy,
};
use keelfs_fs::error::FsError;
use keelfs_fs::format::bitmap::{count_ones, padding_is_set, test_bit};
use keelfs_fs::format::superblock::MemberState;
use keelfs_fs::format::{
    DataArea, DirLeaf, FileType, Inode, InodeSlot, InodeSpec, JournalSuperblock, Layout,
    Superblock, META_HEADER_LEN,
};
use keelfs_fs::mkfs::{format, MkfsOptions};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn mem_legs(count: usize, size: u64) -> (Vec<Arc<MemDevice>>, Vec<DeviceRef>) {
    let mems: Vec<Arc<MemDevice>> = (0..count)
        .map(|i| Arc::new(MemDevice::new(format!("mem{i}"), size)))
        .collect();
    let refs = mems.iter().map(|m| m.clone() as DeviceRef).collect();
    (mems, refs)
}

fn meta(vol: &Volume, block: u64) -> Vec<u8> {
    let mut buf = vec![0u8; vol.block_size()];
    vol.read_meta(block, &mut buf, Some(1))
        .unwrap_or_else(|e| panic!("block {block}: {e}"));
    buf
}

fn is_unwritten(vol: &Volume, block: u64) -> bool {
    let mut buf = vec![0u8; vol.block_size()];
    matches!(
        vol.read_meta(block, &mut buf, None),
        Err(EngineError::Unwritten { .. })
    )
}

/// Checks everything mkfs promises about a fresh set, `exhaustive` = every
/// bitmap bit one by one (small devices only).
fn check_fresh(devices: &[DeviceRef], written: &Superblock, exhaustive: bool) {
    let set = identify(devices).unwrap();
    let l = written.layout;
    assert!(!set.report().is_degraded(), "{:?}", set.report());
    assert_eq!(set.generation(), 1);
    assert_eq!(set.legs().len(), devices.len());
    // Every leg's copy equals the written one except the device fields.
    for (i, dev) in devices.iter().enumerate() {
        let found = read_superblock_copy(dev.as_ref()).unwrap();
        assert_eq!(found.copy, SuperblockCopy::Primary);
        assert_eq!(found.generation, 1);
        let sb = found.superblock;
        assert_eq!(sb.device_index, i as u32);
        assert_eq!(sb.device_uuid, written.members[i].uuid);
        assert_eq!(sb, written.for_member(i as u32).unwrap());
        // The backup is the same copy, at N−1.
        let mut backup = vec![0u8; l.block_size as usize];
        dev.read_at(l.backup_superblock * u64::from(l.block_size), &mut backup)
            .unwrap();
        keelfs_engine::integrity::meta_check(l.backup_superblock, &sb.fs_uuid, &backup, Some(1))
            .unwrap();
        assert_eq!(Superblock::decode(&backup[META_HEADER_LEN..]).unwrap(), sb);
    }
    let distinct: std::collections::HashSet<_> = written.members.iter().map(|m| m.uuid).collect();
    assert_eq!(distinct.len(), devices.len(), "device uuids are distinct");
    assert_eq!(written.free_blocks, l.data.blocks - 1);
    assert_eq!(written.free_inodes, l.inode_count - 2);
    assert_eq!(written.lost_found_inode, 2);

    let vol = set.volume();
    let jsb = JournalSuperblock::decode(&meta(vol, 1)[META_HEADER_LEN..]).unwrap();
    assert_eq!(jsb, JournalSuperblock::new(&l, 2));

    // Block bitmap: blocks before data_start, the root leaf and N−1.
    let used = |b: u64| b <= l.data.start || b == l.backup_superblock;
    let mut ones = 0;
    for m in 0..l.block_bitmap.blocks {
        let block = meta(vol, l.block_bitmap.start + m);
        let payload = &block[META_HEADER_LEN..];
        let valid = l.valid_bits_in_bitmap_block(l.device_blocks, m);
        assert!(padding_is_set(payload, valid), "padding of block {m}");
        ones += count_ones(payload, valid) as u64;
    }
    assert_eq!(ones, l.data.start + 2, "used blocks");
    assert!(l.block_bitmap.blocks >= 1);
    for b in [
        0,
        l.data.start - 1,
        l.data.start,
        l.data.start + 1,
        l.backup_superblock - 1,
        l.backup_superblock,
    ] {
        let at = l.block_bitmap_bit(b).unwrap();
        let block = meta(vol, at.block);
        assert_eq!(
            test_bit(&block[META_HEADER_LEN..], at.bit_in_block()).unwrap(),
            used(b),
            "block {b}"
        );
    }
    if exhaustive {
        for b in 0..l.device_blocks {
            let at = l.block_bitmap_bit(b).unwrap();
            let block = meta(vol, at.block);
            assert_eq!(
                test_bit(&block[META_HEADER_LEN..], at.bit_in_block()).unwrap(),
                used(b),
                "block {b}"
            );
        }
    }
    // Inode bitmap: inodes 1 and 2.
    let mut ones = 0;
    for m in 0..l.inode_bitmap.blocks {
        let block = meta(vol, l.inode_bitmap.start + m);
        let payload = &block[META_HEADER_LEN..];
        let valid = l.valid_bits_in_bitmap_block(l.inode_count, m);
        assert!(padding_is_set(payload, valid));
        ones += count_ones(payload, valid);
        if m == 0 {
            assert_eq!(payload[0] & 0b111, 0b011);
        }
    }
    assert_eq!(ones, 2, "used inodes");

    // Inodes 1 and 2.
    let at = l.inode_location(1).unwrap();
    let table = meta(vol, at.block);
    let root = Inode::decode(&table[META_HEADER_LEN + at.offset..]).unwrap();
    let at2 = l.inode_location(2).unwrap();
    let table2 = meta(vol, at2.block);
    let lf = Inode::decode(&table2[META_HEADER_LEN + at2.offset..]).unwrap();
    for (inode, links) in [(&root, 3), (&lf, 2)] {
        assert_eq!(inode.file_type, FileType::Directory);
        assert_eq!(inode.permissions, 0o755);
        assert_eq!((inode.uid, inode.gid, inode.parent), (0, 0, 1));
        assert_eq!(inode.links, links);
        assert!(inode.mtime.secs > 1_600_000_000);
        assert_eq!(inode.ctime, inode.mtime);
    }
    let DataArea::Directory(root_dir) = &root.data else {
        panic!("root data area {:?}", root.data)
    };
    assert_eq!(root_dir.entry_count, 1);
    let leaf_ref = root_dir.root.unwrap();
    assert_eq!((leaf_ref.block, leaf_ref.generation), (l.data.start, 1));
    let leaf = DirLeaf::decode(&meta(vol, l.data.start)[META_HEADER_LEN..]).unwrap();
    assert_eq!(leaf.entries.len(), 1);
    assert_eq!(leaf.entries[0].name, b"lost+found");
    assert_eq!(leaf.entries[0].inode, 2);
    assert_eq!(leaf.entries[0].file_type, FileType::Directory);
    assert!(matches!(&lf.data, DataArea::Directory(d) if d.root.is_none()));
    // Every other slot of that block is free.
    let per = l.inodes_per_block() as usize;
    for slot in 2..per {
        let off = META_HEADER_LEN + slot * 256;
        assert_eq!(
            InodeSlot::decode(&table[off..off + 256]).unwrap(),
            InodeSlot::Free { generation: 0 }
        );
    }
    // The rest of the inode table and the whole tag table: never written.
    if l.inode_table.blocks > 1 {
        assert!(is_unwritten(vol, l.inode_table.start + 1));
        assert!(is_unwritten(vol, l.inode_table.end() - 1));
    }
    assert!(is_unwritten(vol, l.tag_table.start));
    assert!(is_unwritten(vol, l.tag_table.end() - 1));
    assert!(is_unwritten(vol, l.journal.start));
}

#[test]
fn one_two_and_three_memory_legs() {
    for legs in 1..=3 {
        let (_mems, devs) = mem_legs(legs, 16 * MIB);
        let opts = MkfsOptions {
            label: format!("legs{legs}"),
            ..MkfsOptions::default()
        };
        let sb = format(&devs, &opts).unwrap();
        assert_eq!(sb.members.len(), legs);
        assert_eq!(sb.label, format!("legs{legs}"));
        assert!(sb.members.iter().all(|m| m.state == MemberState::InUse));
        check_fresh(&devs, &sb, true);
    }
}

#[test]
fn small_blocks_explicit_inodes_journal_and_uuid() {
    let (_mems, devs) = mem_legs(2, 8 * MIB);
    let opts = MkfsOptions {
        block_size: 1024,
        inodes: InodeSpec::Count(100),
        journal_blocks: Some(64),
        fs_uuid: Some([7; 16]),
        ..MkfsOptions::default()
    };
    let sb = format(&devs, &opts).unwrap();
    assert_eq!(sb.fs_uuid, [7; 16]);
    assert_eq!(sb.layout, Layout::new(8192, 1024, 100, 64).unwrap());
    check_fresh(&devs, &sb, true);
}

#[test]
fn dry_run_writes_nothing() {
    let (mems, devs) = mem_legs(2, 16 * MIB);
    mems[0].poke(0, &[0xab; 4096]);
    let before: Vec<Vec<u8>> = mems.iter().map(|m| m.snapshot()).collect();
    let sb = format(
        &devs,
        &MkfsOptions {
            dry_run: true,
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    assert_eq!(sb.layout.device_blocks, 4096);
    for (m, b) in mems.iter().zip(&before) {
        assert!(m.snapshot() == *b, "{} changed", m.name());
    }
}

#[test]
fn sparse_images_format_fast_and_stay_sparse() {
    let dir = tempfile::tempdir().unwrap();
    for (size, bs, legs, limit_alloc) in [
        (16 * MIB, 4096, 2, 8 * MIB),
        (1024 * MIB + 512, 1024, 1, 8 * MIB),
        (100 * 1024 * MIB, 4096, 2, 16 * MIB),
    ] {
        let paths: Vec<_> = (0..legs)
            .map(|i| dir.path().join(format!("{size}-{i}.img")))
            .collect();
        let devs: Vec<DeviceRef> = paths
            .iter()
            .map(|p| {
                let d = FileDevice::create_image(p, size).unwrap();
                // Stale bytes where the metadata will go must not survive.
                d.write_at(4096 * 3, &[0x5a; 4096]).unwrap();
                Arc::new(d) as DeviceRef
            })
            .collect();
        let started = Instant::now();
        let sb = format(
            &devs,
            &MkfsOptions {
                block_size: bs,
                ..MkfsOptions::default()
            },
        )
        .unwrap();
        let took = started.elapsed();
        eprintln!("mkfs of {legs} x {size} bytes (B={bs}): {took:?}");
        assert!(took < Duration::from_secs(20), "mkfs took {took:?}");
        for p in &paths {
            let allocated = std::fs::metadata(p).unwrap().blocks() * 512;
            assert!(
                allocated <= limit_alloc,
                "{} has {allocated} bytes allocated",
                p.display()
            );
        }
        drop(devs);
        let devs = open_legs(&paths, LegOpenOptions::default()).unwrap();
        check_fresh(&devs, &sb, size <= 16 * MIB);
        let mut stale = vec![0u8; 4096];
        devs[0].read_at(4096 * 3, &mut stale).unwrap();
        assert!(stale.iter().all(|&b| b == 0));
        drop(devs);
        for p in &paths {
            std::fs::remove_file(p).unwrap();
        }
    }
}

/// Overwrites bytes of a leg's block 0 (the primary superblock).
fn damage_primary(mem: &MemDevice, offset: u64) {
    let old = mem.peek(offset, 1)[0];
    mem.poke(offset, &[old ^ 0xff]);
}

#[test]
fn bad_primary_falls_back_to_the_backup() {
    let (mems, devs) = mem_legs(2, 16 * MIB);
    let sb = format(&devs, &MkfsOptions::default()).unwrap();
    damage_primary(&mems[1], 200); // inside the payload: crc fails
    let found = read_superblock_copy(devs[1].as_ref()).unwrap();
    assert_eq!(found.copy, SuperblockCopy::Backup);
    assert!(
        found.primary_problem.as_deref().unwrap().contains("crc"),
        "{found:?}"
    );
    assert_eq!(found.superblock, sb.for_member(1).unwrap());
    let set = identify(&devs).unwrap();
    assert_eq!(set.report().backup_used, vec![1]);
    assert!(!set.report().is_degraded());
    // Block size field destroyed, or the whole block zeroed: still found.
    damage_primary(&mems[0], 72);
    assert_eq!(
        read_superblock_copy(devs[0].as_ref()).unwrap().copy,
        SuperblockCopy::Backup
    );
    mems[1].poke(0, &[0; 4096]);
    assert_eq!(
        read_superblock(devs[1].as_ref()).unwrap(),
        sb.for_member(1).unwrap()
    );

    // A 64 KiB-block filesystem on a device whose size is not a multiple of
    // its blocks: the backup is found with the size recorded in block 0.
    let mem = Arc::new(MemDevice::new("odd", 80 * MIB + 3 * 4096));
    let dev: DeviceRef = mem.clone();
    let sb = format(
        std::slice::from_ref(&dev),
        &MkfsOptions {
            block_size: 65536,
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    damage_primary(&mem, 1000);
    let found = read_superblock_copy(dev.as_ref()).unwrap();
    assert_eq!((found.copy, found.superblock), (SuperblockCopy::Backup, sb));
}

#[test]
fn no_backup_of_an_earlier_filesystem_survives_mkfs() {
    // 1 KiB blocks first: their backup sits in the last KiB, past the end
    // of the 2 KiB-block filesystem made next.
    let mem = Arc::new(MemDevice::new("leg", 16 * MIB + 1024));
    let dev: DeviceRef = mem.clone();
    let devs = std::slice::from_ref(&dev);
    let old = format(
        devs,
        &MkfsOptions {
            block_size: 1024,
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    let new = format(
        devs,
        &MkfsOptions {
            block_size: 2048,
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    assert_ne!(old.fs_uuid, new.fs_uuid);
    // Without a readable block size in block 0, every candidate is tried.
    damage_primary(&mem, 72);
    let found = read_superblock_copy(dev.as_ref()).unwrap();
    assert_eq!(found.copy, SuperblockCopy::Backup);
    assert_eq!(found.superblock.fs_uuid, new.fs_uuid);
}

fn err_of<T: std::fmt::Debug>(r: Result<T, FsError>) -> FsError {
    r.expect_err("expected an error")
}

#[test]
fn foreign_and_duplicate_legs_are_refused_by_name() {
    let (a_mems, a) = mem_legs(2, 16 * MIB);
    let (_b, b) = mem_legs(1, 16 * MIB);
    format(&a, &MkfsOptions::default()).unwrap();
    format(&b, &MkfsOptions::default()).unwrap();
    let e = err_of(identify(&[a[0].clone(), b[0].clone()]));
    assert!(
        matches!(e, FsError::DeviceSet(DevSetError::ForeignFilesystem { ref device, .. }) if device == "mem0"),
        "{e}"
    );
    assert!(e.to_string().contains("another keelfs filesystem"), "{e}");
    // A copy of leg 0 given with leg 0.
    let copy: DeviceRef = Arc::new(MemDevice::from_image("copy", a_mems[0].snapshot()));
    let e = err_of(identify(&[a[0].clone(), copy.clone()]));
    assert!(
        matches!(
            e,
            FsError::DeviceSet(DevSetError::DuplicateMember { index: 0, .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("copy"), "{e}");
    // Three devices for a two-leg filesystem.
    let e = err_of(identify(&[a[0].clone(), a[1].clone(), copy]));
    assert!(
        matches!(
            e,
            FsError::DeviceSet(DevSetError::TooManyLegs {
                given: 3,
                members: 2
            })
        ),
        "{e}"
    );
    assert!(matches!(
        err_of(identify(&[])),
        FsError::DeviceSet(DevSetError::NoDevices)
    ));
}

#[test]
fn missing_failed_and_stale_legs_are_reported() {
    let (_mems, devs) = mem_legs(3, 16 * MIB);
    let sb = format(&devs, &MkfsOptions::default()).unwrap();
    // Leg 1 not given.
    let set = identify(&[devs[0].clone(), devs[2].clone()]).unwrap();
    let r = set.report();
    assert!(r.is_degraded());
    assert_eq!(r.missing.len(), 1);
    assert_eq!(r.missing[0].member, 1);
    assert_eq!(r.missing[0].device_uuid, sb.members[1].uuid);
    assert_eq!(
        set.legs().iter().map(|l| l.member).collect::<Vec<_>>(),
        [0, 2]
    );
    assert!(r.describe()[0].contains("missing"), "{:?}", r.describe());

    // Leg 1 misses transactions (out of service while legs 0 and 2 took
    // transaction 5, as their table records): it is stale, and out of
    // service.
    let set = identify(&devs).unwrap();
    set.mirror().mark_failed(1);
    let mut newer = set.superblock().clone();
    newer.members[0].last_transaction = 5;
    newer.members[2].last_transaction = 5;
    let bits = write_superblocks(&set, &newer, 5).unwrap();
    assert!(bits.is_clear());
    let set = identify(&[devs[2].clone(), devs[1].clone(), devs[0].clone()]).unwrap();
    assert_eq!(set.generation(), 5);
    let r = set.report();
    assert_eq!(r.stale.len(), 1);
    assert_eq!(
        (r.stale[0].member, r.stale[0].generation, r.stale[0].newest),
        (1, 1, 5)
    );
    assert_eq!(r.stale[0].device, "mem1");
    assert!(r.is_degraded() && r.missing.is_empty());
    assert_eq!(set.mirror().leg_state(1), LegState::Failed);
    assert_eq!(set.mirror().leg_state(0), LegState::InService);
    assert_eq!(set.superblock().device_index, 0);

    // Member 2 marked failed in the table: reported, not written, out of
    // service.
    let mut failed = set.superblock().clone();
    failed.members[2].state = MemberState::Failed;
    failed.members[0].last_transaction = 6;
    write_superblocks(&set, &failed, 6).unwrap();
    let set = identify(&devs).unwrap();
    let r = set.report();
    assert_eq!(r.failed, vec![2]);
    assert_eq!(r.stale.iter().map(|s| s.member).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(set.mirror().leg_state(2), LegState::Failed);
    assert_eq!(
        read_superblock_copy(devs[2].as_ref()).unwrap().generation,
        5
    );
}

#[test]
fn a_leg_that_missed_only_a_superblock_write_is_not_stale() {
    // A power cut between the legs' superblock writes: leg 1 keeps
    // generation 1, but the newest table (leg 0's) records that it holds
    // transaction 7 too: it missed nothing and is trusted.
    let (_mems, devs) = mem_legs(2, 16 * MIB);
    format(&devs, &MkfsOptions::default()).unwrap();
    let set = identify(&devs).unwrap();
    let mut sb = set.superblock().clone();
    sb.members[0].last_transaction = 7;
    sb.members[1].last_transaction = 7;
    set.mirror().mark_failed(1); // only leg 0 gets the write
    write_superblocks(&set, &sb, 7).unwrap();
    assert_eq!(
        read_superblock_copy(devs[1].as_ref()).unwrap().generation,
        1
    );
    let set = identify(&devs).unwrap();
    assert_eq!(set.generation(), 7);
    assert!(!set.report().is_degraded(), "{:?}", set.report());
    assert_eq!(set.mirror().in_service().count(), 2);
    // The same leg, when the table says it holds an older transaction,
    // was away: stale.
    sb.members[0].last_transaction = 8;
    sb.members[1].last_transaction = 3;
    let set = identify(&devs).unwrap();
    set.mirror().mark_failed(1);
    write_superblocks(&set, &sb, 8).unwrap();
    let set = identify(&devs).unwrap();
    let r = set.report();
    assert_eq!(
        r.stale
            .iter()
            .map(|s| (s.member, s.generation, s.newest))
            .collect::<Vec<_>>(),
        [(1, 3, 8)]
    );
    assert_eq!(set.mirror().leg_state(1), LegState::Failed);
}

#[test]
fn a_member_flagged_needs_check_is_suspect_but_in_use() {
    let (_mems, devs) = mem_legs(2, 16 * MIB);
    format(&devs, &MkfsOptions::default()).unwrap();
    let set = identify(&devs).unwrap();
    let mut sb = set.superblock().clone();
    sb.members[1].needs_check = true;
    write_superblocks(&set, &sb, 1).unwrap();
    let set = identify(&devs).unwrap();
    let r = set.report();
    assert_eq!(r.needs_check, vec![1]);
    assert!(!r.is_degraded(), "in use, not degraded");
    assert!(set.mirror().is_suspect(1) && !set.mirror().is_suspect(0));
    assert_eq!(set.mirror().leg_state(1), LegState::InService);
    assert_eq!(set.mirror().read_order()[0], 0, "read last");
}

#[test]
fn garbage_truncated_and_tiny_devices_are_clear_errors() {
    // Random garbage.
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut garbage = vec![0u8; 4 * MIB as usize];
    for b in garbage.iter_mut() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *b = seed as u8;
    }
    let dev: DeviceRef = Arc::new(MemDevice::from_image("garbage", garbage));
    let e = err_of(identify(std::slice::from_ref(&dev)));
    assert!(
        matches!(e, FsError::DeviceSet(DevSetError::NotKeelfs { .. })),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("garbage: not a keelfs device"),
        "{e}"
    );
    assert_eq!(probe_existing_filesystem(dev.as_ref()), None);

    // Zeroes, and a device too small for a superblock.
    let e = err_of(read_superblock(&MemDevice::new("zero", MIB)));
    assert!(e.to_string().contains("all zeroes"), "{e}");
    let e = err_of(read_superblock(&MemDevice::new("tiny", 512)));
    assert!(e.to_string().contains("only 512 bytes"), "{e}");

    // A formatted leg cut to half its size.
    let (mems, devs) = mem_legs(1, 16 * MIB);
    format(&devs, &MkfsOptions::default()).unwrap();
    let half = mems[0].snapshot()[..8 * MIB as usize].to_vec();
    let cut: DeviceRef = Arc::new(MemDevice::from_image("cut", half));
    let e = err_of(identify(&[cut]));
    assert!(
        matches!(
            e,
            FsError::DeviceSet(DevSetError::Truncated { blocks: 4096, .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("cut: truncated"), "{e}");

    // Damage anywhere in block 0 or N−1 never panics.
    let image = mems[0].snapshot();
    for offset in (0..4096)
        .step_by(97)
        .chain((16 * MIB as usize - 4096..16 * MIB as usize).step_by(89))
    {
        let mut img = image.clone();
        img[offset] ^= 0x41;
        let len = img.len();
        img[(offset + 4096) % len] ^= 0x10;
        let _ = read_superblock_copy(&MemDevice::from_image("flipped", img));
    }
}

#[test]
fn features_decide_refusal_and_read_only() {
    let (mems, devs) = mem_legs(1, 16 * MIB);
    let sb = format(&devs, &MkfsOptions::default()).unwrap();
    let set_word = |offset: usize, value: u32| {
        for block in [0, sb.layout.backup_superblock] {
            let at = block * 4096;
            let mut b = mems[0].peek(at, 4096);
            b[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
            meta_seal(block, &sb.fs_uuid, &mut b);
            mems[0].poke(at, &b);
        }
    };
    set_word(68, 0x100); // ro_compat
    let set = identify(&devs).unwrap();
    assert!(set.report().read_only_required);
    set_word(64, 0x8000_0000); // incompat
    let e = err_of(identify(&devs));
    assert!(
        matches!(
            e,
            FsError::DeviceSet(DevSetError::UnsupportedFeatures {
                bits: 0x8000_0000,
                ..
            })
        ),
        "{e}"
    );
}

#[test]
fn unequal_too_small_and_bad_counts_are_refused() {
    let (_m, mut devs) = mem_legs(2, 16 * MIB);
    devs.push(Arc::new(MemDevice::new("big", 16 * MIB + 4096)));
    let e = err_of(format(&devs, &MkfsOptions::default()));
    let msg = e.to_string();
    assert!(
        matches!(e, FsError::DeviceSet(DevSetError::UnequalSizes { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("big has 16781312 bytes = 4097 blocks") && msg.contains("mem0"),
        "{msg}"
    );
    // A size difference below one block is no difference.
    devs[2] = Arc::new(MemDevice::new("big", 16 * MIB + 2048));
    format(&devs, &MkfsOptions::default()).unwrap();

    let (_m, small) = mem_legs(1, 2 * MIB);
    let e = err_of(format(&small, &MkfsOptions::default()));
    assert!(
        matches!(e, FsError::DeviceSet(DevSetError::TooSmall { min_blocks, .. }) if min_blocks > 512),
        "{e}"
    );
    assert!(e.to_string().contains("mem0: too small"), "{e}");
    // The minimum it names is exact.
    let FsError::DeviceSet(DevSetError::TooSmall { min_blocks, .. }) = e else {
        unreachable!()
    };
    let (_m, fits) = mem_legs(1, min_blocks * 4096);
    format(&fits, &MkfsOptions::default()).unwrap();
    let (_m, short) = mem_legs(1, (min_blocks - 1) * 4096);
    assert!(format(&short, &MkfsOptions::default()).is_err());

    let (_m, nine) = mem_legs(9, 16 * MIB);
    assert!(matches!(
        err_of(format(&nine, &MkfsOptions::default())),
        FsError::DeviceSet(DevSetError::LegCount { given: 9 })
    ));
    assert!(matches!(
        err_of(format(&[], &MkfsOptions::default())),
        FsError::DeviceSet(DevSetError::LegCount { given: 0 })
    ));
    let (_m, one) = mem_legs(1, 16 * MIB);
    let bad = [
        MkfsOptions {
            block_size: 3000,
            ..MkfsOptions::default()
        },
        MkfsOptions {
            label: "x".repeat(65),
            ..MkfsOptions::default()
        },
        MkfsOptions {
            journal_blocks: Some(10),
            ..MkfsOptions::default()
        },
        MkfsOptions {
            inodes: InodeSpec::Count(1),
            ..MkfsOptions::default()
        },
    ];
    for opts in bad {
        let e = err_of(format(&one, &opts));
        assert!(matches!(e, FsError::Format(_)), "{e}");
    }
}

#[test]
fn a_failing_leg_fails_mkfs_with_its_name() {
    let (_m, mut devs) = mem_legs(2, 16 * MIB);
    let fault = Arc::new(FaultDevice::new(devs[1].clone()));
    devs[1] = fault.clone();
    // The zeroing itself fails.
    let rule = fault
        .add_rule(FaultRule::new(Op::Write, Fault::Fail).times(1))
        .unwrap();
    let e = err_of(format(&devs, &MkfsOptions::default()));
    assert!(e.to_string().contains("mem1"), "{e}");
    assert_eq!(fault.fired(rule), Some(1));
    // A sealed write (the block bitmap, after the zeroing) fails.
    fault
        .add_rule(
            FaultRule::new(Op::Write, Fault::Fail)
                .range(4096 * 1026..4096 * 1027)
                .skip(1),
        )
        .unwrap();
    let e = err_of(format(&devs, &MkfsOptions::default()));
    assert!(
        e.to_string().contains("block bitmap") && e.to_string().contains("mem1"),
        "{e}"
    );
    assert!(matches!(
        identify(&devs),
        Err(FsError::DeviceSet(DevSetError::NotKeelfs { .. }))
    ));
}

#[test]
fn probe_names_existing_filesystems() {
    let (mems, devs) = mem_legs(1, 16 * MIB);
    assert_eq!(probe_existing_filesystem(devs[0].as_ref()), None);
    let cases: &[(u64, &[u8], &str)] = &[
        (0, b"XFSB", "xfs"),
        (0, b"LUKS\xba\xbe", "LUKS"),
        (0, b"hsqs", "squashfs"),
        (65600, b"_BHRfS_M", "btrfs"),
        (4086, b"SWAPSPACE2", "swap"),
        (32769, b"CD001", "iso9660"),
        (512, b"EFI PART", "GPT"),
    ];
    for &(offset, magic, name) in cases {
        mems[0].poke(0, &vec![0; 72 * 1024]);
        mems[0].poke(offset, magic);
        let found = probe_existing_filesystem(devs[0].as_ref()).unwrap_or_default();
        assert!(found.contains(name), "{name}: {found:?}");
    }
    mems[0].poke(0, &vec![0; 72 * 1024]);
    mems[0].poke(510, &[0x55, 0xaa]);
    mems[0].poke(82, b"FAT32");
    assert!(probe_existing_filesystem(devs[0].as_ref())
        .unwrap()
        .contains("vfat"));
    mems[0].poke(82, b"\0\0\0\0\0");
    mems[0].poke(446 + 4, &[0x83]);
    assert!(probe_existing_filesystem(devs[0].as_ref())
        .unwrap()
        .contains("MBR"));

    format(
        &devs,
        &MkfsOptions {
            label: "tank".into(),
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    let found = probe_existing_filesystem(devs[0].as_ref()).unwrap();
    assert!(
        found.contains("keelfs") && found.contains("tank"),
        "{found}"
    );

    // A real ext4 image, if mkfs.ext4 is here.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let made = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let dev = FileDevice::open(&img).unwrap();
        assert_eq!(
            probe_existing_filesystem(&dev).as_deref(),
            Some("an ext4 filesystem")
        );
        let e = err_of(identify(&[Arc::new(dev) as DeviceRef]));
        assert!(e.to_string().contains("ext4"), "{e}");
    } else {
        eprintln!("mkfs.ext4 not available: real ext4 probe skipped");
    }
}

#[test]
fn open_legs_refuses_the_same_device_twice_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    drop(FileDevice::create_image(&a, 16 * MIB).unwrap());
    drop(FileDevice::create_image(&b, 16 * MIB).unwrap());
    let link = dir.path().join("link.img");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let e = err_of(open_legs(&[&a, &b, &link], LegOpenOptions::default()));
    assert!(
        matches!(e, FsError::DeviceSet(DevSetError::GivenTwice { .. })),
        "{e}"
    );
    assert!(
        e.to_string().contains("link.img") && e.to_string().contains("a.img"),
        "{e}"
    );
    let devs = open_legs(&[&a, &b], LegOpenOptions::default()).unwrap();
    format(&devs, &MkfsOptions::default()).unwrap();
    let e = err_of(open_legs(
        &[&b],
        LegOpenOptions {
            read_only: true,
            ..LegOpenOptions::default()
        },
    ));
    assert!(e.to_string().contains("in use"), "{e}");
    drop(devs);
    let ro = open_legs(
        &[&a, &b],
        LegOpenOptions {
            read_only: true,
            ..LegOpenOptions::default()
        },
    )
    .unwrap();
    assert!(ro[0].write_at(0, &[0; 4096]).is_err());
    assert_eq!(identify(&ro).unwrap().legs().len(), 2);
}
