//! Garbage inside a filesystem: random blocks of a populated image are
//! overwritten (on every leg, or on one) with random bytes, with zeroes, or with
//! random payloads under a valid header (so the decoders, not the
//! checksums, must refuse them). fsck must never panic; -n reports and
//! changes nothing; -y leaves a filesystem a second check finds
//! consistent, but for data that has no good copy anywhere (exit 4, those
//! errors only); and the result mounts.

mod support;

use keelfs_engine::integrity::{meta_kind, meta_seal, META_MAGIC};
use keelfs_fsck::{Pass, EXIT_CLEAN, EXIT_CORRECTED, EXIT_UNCORRECTED};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;

/// Metadata blocks of the image worth hitting: everything fixed but the
/// superblocks and the journal ring, plus every block in use in the data
/// area.
fn targets(img: &Image, p: &Population) -> Vec<u64> {
    let l = img.layout();
    let mut v: Vec<u64> = vec![l.journal_superblock];
    v.extend(l.block_bitmap.start..l.block_bitmap.end());
    v.extend(l.inode_bitmap.start..l.inode_bitmap.end());
    v.extend(l.inode_table.start..l.inode_table.start + 40.min(l.inode_table.blocks));
    v.extend(l.tag_table.start..l.tag_table.end());
    let (leaves, nodes) = dir_blocks(img, p.big_dir);
    v.extend(leaves);
    v.extend(nodes);
    v.extend(dir_blocks(img, ROOT).0);
    v.extend(dir_blocks(img, p.small_dir).0);
    let (ext, data) = file_blocks(img, p.fragmented);
    v.extend(ext);
    v.extend(data.into_iter().take(10));
    v.extend(xattr_blocks(img, p.xattr_file));
    v
}

const ROOT: u64 = 1;

fn run_seed(seed: u64) {
    let (img, p) = fresh_populated();
    let mut rng = StdRng::seed_from_u64(seed);
    let targets = targets(&img, &p);
    let uuid = img.superblock().fs_uuid;
    let hits = rng.random_range(1..8);
    let mut what = Vec::new();
    for _ in 0..hits {
        let block = targets[rng.random_range(0..targets.len())];
        let original = img.read_block(0, block);
        let mut b = vec![0u8; img.block_size as usize];
        let how = rng.random_range(0..4);
        match how {
            0 => rng.fill(&mut b[..]),
            1 => {}
            _ => {
                // A valid header over garbage: same kind, random payload
                // (or a few bytes of the real payload changed).
                b.copy_from_slice(&original);
                if how == 2 {
                    rng.fill(&mut b[48..]);
                } else {
                    for _ in 0..4 {
                        let at = rng.random_range(48..b.len());
                        b[at] = rng.random();
                    }
                }
                if u32::from_le_bytes(b[..4].try_into().unwrap()) == META_MAGIC {
                    let _ = meta_kind(&b);
                    meta_seal(block, &uuid, &mut b);
                }
            }
        }
        // Mostly every leg; sometimes one (the others keep a good copy).
        let legs: Vec<usize> = if rng.random_bool(0.3) {
            vec![rng.random_range(0..img.paths.len())]
        } else {
            (0..img.paths.len()).collect()
        };
        what.push((block, how, legs.len()));
        for leg in legs {
            img.write_block(leg, block, &b);
        }
    }
    let context = format!("seed {seed}: {what:?}");
    let before = img.contents();
    let o = img.check();
    assert!(
        o.exit_code == EXIT_UNCORRECTED || o.exit_code == EXIT_CLEAN,
        "{context}: fsck -n exit {} {:?}",
        o.exit_code,
        o.error
    );
    assert!(
        img.contents() == before,
        "{context}: fsck -n changed the image"
    );
    let o = img.repair();
    assert!(
        [EXIT_CLEAN, EXIT_CORRECTED, EXIT_UNCORRECTED].contains(&o.exit_code),
        "{context}: fsck -y exit {} {:?}",
        o.exit_code,
        o.error
    );
    let o = img.check();
    let left: Vec<String> = o
        .first()
        .errors()
        .filter(|f| f.pass != Pass::DataTags || f.fixable)
        .map(|f| f.to_string())
        .collect();
    assert!(left.is_empty(), "{context}: after repair: {left:#?}");
    let fs = img.mount();
    fs.unmount().unwrap();
}

#[test]
fn random_garbage_never_panics_and_is_repaired() {
    let seeds: u64 = std::env::var("FSCK_GARBAGE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14);
    for seed in 0..seeds {
        run_seed(seed);
    }
}
