//! The allocators on their own: goal-directed runs, freed blocks held back
//! until the commit, metadata frees revoked, groups, inode-table blocks
//! initialised on first use (and refused when the bitmap says the block
//! should have been written), and a never-written tag-table block under
//! written data reported as corruption.

mod core_support;

use core_support::*;
use keelfs_fs::core::meta::payload_mut;
use keelfs_fs::error::FsError;
use keelfs_fs::format::bitmap::set_bit;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::DataArea;

#[test]
fn runs_start_at_the_goal_and_freed_blocks_wait_for_the_commit() {
    let legs = Legs::small();
    let fs = legs.mount();
    let start = fs.layout().data.start;
    let goal = start + 100;
    {
        let tx = fs.journal().start().unwrap();
        let blocks = fs.blocks();
        assert_eq!(blocks.alloc_blocks(&tx, goal, 10).unwrap(), (goal, 10));
        assert_eq!(blocks.alloc_blocks(&tx, goal, 5).unwrap(), (goal + 10, 5));
        // A run stops at the next used block.
        assert_eq!(
            blocks.alloc_blocks(&tx, goal - 3, 10).unwrap(),
            (goal - 3, 3)
        );
        let free = blocks.free_blocks();
        blocks.free_blocks_in(&tx, goal, 10).unwrap();
        assert_eq!(blocks.free_blocks(), free + 10, "counted free at once");
        // ... but not handed out before the commit.
        let (b, n) = blocks.alloc_blocks(&tx, goal, 4).unwrap();
        assert!(
            b >= goal + 15,
            "got {b}+{n}: freed blocks reused before the commit"
        );
        // Freeing a free block is corruption and changes nothing.
        let twice = blocks.free_blocks_in(&tx, goal + 2, 1);
        assert!(matches!(twice, Err(FsError::Corrupt(_))));
        // Blocks outside the data area are never freed.
        let fixed = blocks.free_blocks_in(&tx, 3, 1);
        assert!(matches!(fixed, Err(FsError::Corrupt(_))));
    }
    fs.journal().commit().unwrap();
    {
        let tx = fs.journal().start().unwrap();
        let blocks = fs.blocks();
        assert_eq!(blocks.alloc_blocks(&tx, goal, 10).unwrap(), (goal, 10));
        // unalloc gives blocks back at once.
        let (u, un) = blocks.alloc_blocks(&tx, start + 500, 3).unwrap();
        blocks.unalloc_blocks(&tx, u, un).unwrap();
        assert_eq!(blocks.alloc_blocks(&tx, start + 500, 3).unwrap(), (u, un));
    }
    fs.unmount().unwrap();
}

#[test]
fn freeing_a_metadata_block_revokes_it() {
    let legs = Legs::small();
    let fs = legs.mount();
    let block = {
        let tx = fs.journal().start().unwrap();
        let block = fs.meta_allocator().alloc_meta(&tx, 0).unwrap();
        let kind = keelfs_fs::format::BlockKind::Xattr;
        keelfs_fs::core::meta::init_meta(fs.cache(), &tx, block, kind).unwrap();
        block
    };
    fs.journal().commit().unwrap();
    assert!(fs.cache().is_cached(block));
    {
        let tx = fs.journal().start().unwrap();
        fs.meta_allocator().free_meta(&tx, block).unwrap();
    }
    fs.journal().commit().unwrap();
    assert!(
        !fs.cache().is_cached(block),
        "revoked blocks leave the cache"
    );
    assert!(!fs.blocks().is_allocated(block).unwrap());
    fs.unmount().unwrap();
}

#[test]
fn groups_spread_files_and_count_right() {
    // 1 KiB blocks: a group (bitmap block) covers 7808 blocks; 32 MiB
    // gives several groups.
    let legs = Legs::mem(2, 32 * MIB, &opts(1024));
    let fs = legs.mount();
    assert!(fs.blocks().groups() >= 4, "{} groups", fs.blocks().groups());
    let per = fs.blocks().blocks_per_group();
    let a = new_file(&fs);
    let b = new_file(&fs);
    fs.write(a, 0, &pattern(1, 8192)).unwrap();
    fs.write(b, 0, &pattern(2, 8192)).unwrap();
    let first_block = |ino: u64| {
        let cell = fs.inode(ino).unwrap();
        let state = cell.read();
        let DataArea::Extents(root) = &state.data else {
            panic!()
        };
        keelfs_fs::core::extent::lookup(fs.cache(), root, 0)
            .unwrap()
            .unwrap()
            .physical
    };
    assert_ne!(
        first_block(a) / per,
        first_block(b) / per,
        "consecutive inodes use different groups"
    );
    let free = fs.statfs().unwrap().bfree;
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(fs.statfs().unwrap().bfree, free);
    assert_eq!(fs.superblock().free_blocks, free);
    fs.unmount().unwrap();
}

#[test]
fn inode_table_blocks_are_initialised_on_first_use_and_checked() {
    let legs = Legs::small();
    let fs = legs.mount();
    let per_block = fs.layout().inodes_per_block();
    // 3 table blocks' worth of inodes: blocks 1 and 2 were never written.
    let inos: Vec<u64> = (0..3 * per_block).map(|_| new_file(&fs)).collect();
    assert_eq!(*inos.last().unwrap(), 3 * per_block + 2);
    for &ino in &inos {
        fs.write(ino, 0, &ino.to_le_bytes()).unwrap();
    }
    fs.unmount().unwrap();
    let fs = legs.mount();
    for &ino in &inos {
        assert_eq!(fs.read(ino, 0, 8).unwrap(), ino.to_le_bytes());
    }
    // Mark an inode of the (never written) 6th table block in use behind
    // the allocator's back: allocating in that block is then corruption.
    let victim = 5 * per_block + 3;
    let at = fs.layout().inode_bitmap_bit(victim).unwrap();
    {
        let tx = fs.journal().start().unwrap();
        let buf = fs.cache().read(at.block).unwrap();
        let mut w = tx.write(&buf);
        set_bit(payload_mut(&mut w), at.bit_in_block()).unwrap();
    }
    let tx = fs.journal().start().unwrap();
    let goal = 5 * per_block + 1;
    let ffree = fs.inode_allocator().available();
    let err = fs
        .inode_allocator()
        .alloc_inode(&tx, goal)
        .expect_err("allocation in a lost table block");
    assert!(matches!(err, FsError::Corrupt(_)), "{err}");
    assert!(!fs.inode_allocator().is_allocated(goal).unwrap());
    assert_eq!(
        fs.inode_allocator().available(),
        ffree,
        "the claim went back"
    );
    // Creating elsewhere still works.
    let cell = fs
        .create_inode(&tx, 0o100_644, 0, 0, 0, ROOT_INODE)
        .unwrap();
    assert!(cell.ino() < 5 * per_block);
    drop(legs);
}

#[test]
fn data_under_a_never_written_tag_block_is_reported_corrupt() {
    let legs = Legs::small();
    let fs = legs.mount();
    let ino = new_file(&fs);
    fs.write(ino, 0, &pattern(3, 8192)).unwrap();
    let tag_block = {
        let cell = fs.inode(ino).unwrap();
        let state = cell.read();
        let DataArea::Extents(root) = &state.data else {
            panic!()
        };
        let e = keelfs_fs::core::extent::lookup(fs.cache(), root, 0)
            .unwrap()
            .unwrap();
        fs.layout().tag_location(e.physical).unwrap().block
    };
    fs.unmount().unwrap();
    for m in &legs.mems {
        m.poke(tag_block * 4096, &[0u8; 4096]);
    }
    let fs = legs.mount();
    let err = fs.read(ino, 0, 100).expect_err("no tags for written data");
    assert!(
        matches!(err, FsError::Corrupt(ref m) if m.contains("tag-table")),
        "{err}"
    );
    fs.unmount().unwrap();
}
