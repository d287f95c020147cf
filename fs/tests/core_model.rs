//! Random writes, truncates, punches and preallocations against a plain
//! byte vector, then an unmount and a remount; the file's block count must
//! match what its extent tree holds, and deleting the file must give every
//! block back.

mod core_support;

use core_support::*;
use keelfs_fs::core::extent;
use keelfs_fs::core::Fs;
use keelfs_fs::format::DataArea;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, len: usize, seed: u64 },
    Truncate { size: u64 },
    Punch { offset: u64, len: u64 },
    Zero { offset: u64, len: u64, keep: bool },
    Prealloc { offset: u64, len: u64, keep: bool },
    Remount,
}

const SPAN: u64 = 200_000;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..SPAN, 1usize..20_000, any::<u64>())
            .prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        2 => (0..SPAN).prop_map(|size| Op::Truncate { size }),
        2 => (0..SPAN, 1..30_000u64).prop_map(|(offset, len)| Op::Punch { offset, len }),
        1 => (0..SPAN, 1..30_000u64, any::<bool>())
            .prop_map(|(offset, len, keep)| Op::Zero { offset, len, keep }),
        1 => (0..SPAN, 1..30_000u64, any::<bool>())
            .prop_map(|(offset, len, keep)| Op::Prealloc { offset, len, keep }),
        1 => Just(Op::Remount),
    ]
}

/// The blocks the file's tree holds: data blocks plus node blocks.
fn tree_blocks(fs: &Fs, ino: u64) -> u64 {
    let cell = fs.inode(ino).unwrap();
    let state = cell.read();
    match &state.data {
        DataArea::Inline(_) => 0,
        DataArea::Extents(root) => {
            let mut data = 0;
            extent::for_each(fs.cache(), root, &mut |e| {
                data += u64::from(e.length);
                Ok(())
            })
            .unwrap();
            data + extent::node_blocks(fs.cache(), root).unwrap().len() as u64
        }
        other => panic!("{other:?}"),
    }
}

fn run(bs: u32, ops: &[Op]) {
    let legs = Legs::mem(2, 8 * MIB, &opts(bs));
    let mut fs = legs.mount();
    let free0 = fs.statfs().unwrap().bfree;
    let ino = new_file(&fs);
    let mut model: Vec<u8> = Vec::new();
    for op in ops {
        match *op {
            Op::Write { offset, len, seed } => {
                let data = pattern(seed, len);
                assert_eq!(fs.write(ino, offset, &data).unwrap(), len);
                let end = offset as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[offset as usize..end].copy_from_slice(&data);
            }
            Op::Truncate { size } => {
                fs.truncate(ino, size).unwrap();
                model.resize(size as usize, 0);
            }
            Op::Punch { offset, len } => {
                fs.fallocate(
                    ino,
                    offset,
                    len,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                )
                .unwrap();
                let end = ((offset + len) as usize).min(model.len());
                if (offset as usize) < end {
                    model[offset as usize..end].fill(0);
                }
            }
            Op::Zero { offset, len, keep } => {
                let mode =
                    libc::FALLOC_FL_ZERO_RANGE | if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
                fs.fallocate(ino, offset, len, mode).unwrap();
                let end = (offset + len) as usize;
                if !keep && model.len() < end {
                    model.resize(end, 0);
                }
                let end = end.min(model.len());
                if (offset as usize) < end {
                    model[offset as usize..end].fill(0);
                }
            }
            Op::Prealloc { offset, len, keep } => {
                let mode = if keep { libc::FALLOC_FL_KEEP_SIZE } else { 0 };
                fs.fallocate(ino, offset, len, mode).unwrap();
                let end = (offset + len) as usize;
                if !keep && model.len() < end {
                    model.resize(end, 0);
                }
            }
            Op::Remount => {
                fs.unmount().unwrap();
                fs = legs.mount();
            }
        }
        assert_eq!(fs.getattr(ino).unwrap().size, model.len() as u64, "{op:?}");
    }
    assert_bytes(&read_all(&fs, ino), &model, "before remount");
    let attr = fs.getattr(ino).unwrap();
    assert_eq!(
        attr.blocks * 512 / u64::from(bs),
        tree_blocks(&fs, ino),
        "block count"
    );
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_bytes(&read_all(&fs, ino), &model, "after remount");
    // Deleting the file gives every block back.
    {
        let tx = fs.journal().start().unwrap();
        let cell = fs.inode(ino).unwrap();
        let mut state = cell.write();
        fs.drop_link(&tx, &cell, &mut state).unwrap();
    }
    fs.syncfs().unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0, "blocks leaked");
    fs.unmount().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn random_operations_match_a_byte_vector_1k(ops in prop::collection::vec(op(), 1..40)) {
        run(1024, &ops);
    }

    #[test]
    fn random_operations_match_a_byte_vector_4k(ops in prop::collection::vec(op(), 1..40)) {
        run(4096, &ops);
    }
}
