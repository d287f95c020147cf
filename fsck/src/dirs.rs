//! Pass 7: directory index structure (§8).
//!
//! Walking a directory's B+tree checks, beyond what the codecs check within
//! one block: every child is in the data area, claimed once, good on some
//! leg with the generation its parent records, a node of the level its
//! parent implies (leaves at level 0); every key lies in the range its
//! parent gives its subtree and keys increase across leaves; a next-leaf
//! pointer, where a leaf has one (writers store 0, §8), names the next leaf
//! in key order with its generation; the entry count in the inode matches;
//! no name appears twice. Names under a block that has no good copy are
//! lost: the inodes they named are reconnected to lost+found by the
//! namespace pass. Anything wrong makes repair rebuild the directory from
//! the entries that remain ([`build_directory`]).
//!
//! Whether each entry's inode is in use, of the type the entry says, and
//! named only once if it is a directory, is the namespace pass's
//! (`links.rs`).

use crate::checker::Checker;
use crate::metadata::{Decoder, MetaRead};
use crate::report::Pass;
use keelfs_fs::format::dir::{key_base, leaf_entry_size, node_capacity, LEAF_HEADER_LEN};
use keelfs_fs::format::header::BlockKind;
use keelfs_fs::format::{
    BlockRef, DirEntry, DirLeaf, DirNode, DirNodeEntry, DirRoot, FormatError, Problem, Structure,
};
use std::collections::{HashMap, HashSet};

/// What a walk of one directory gathers.
#[derive(Default)]
struct DirWalk {
    entries: Vec<DirEntry>,
    blocks: Vec<u64>,
    /// Leaves in tree order: (the leaf, its next pointer).
    leaves: Vec<(BlockRef, Option<BlockRef>)>,
    bad: bool,
    lost: bool,
    last_key: Option<u64>,
}

/// The blocks of a rebuilt directory: its root for the inode and the blocks
/// to write as (block, kind, payload).
pub struct BuiltDirectory {
    pub root: DirRoot,
    pub blocks: Vec<(u64, BlockKind, Vec<u8>)>,
}

impl Checker<'_> {
    fn dir_problem(&mut self, ino: u64, st: &mut DirWalk, what: String) {
        self.report
            .error(Pass::Directories, true, format!("directory {ino}: {what}"));
        st.bad = true;
    }

    /// Walks directory `ino` whose root is `root`.
    pub fn walk_dir(&mut self, ino: u64, root: &DirRoot) {
        let mut st = DirWalk::default();
        if let Some(r) = root.root {
            self.walk_dir_block(ino, r, root.depth, 0, None, &mut st);
        }
        if !st.lost {
            // §8: writers store next leaf 0 and readers do not follow it; a
            // leaf that does name a next leaf must name the right one.
            for i in 0..st.leaves.len() {
                let want = st.leaves.get(i + 1).map(|l| l.0);
                let (leaf, next) = st.leaves[i];
                if next.is_some() && next != want {
                    self.dir_problem(
                        ino,
                        &mut st,
                        format!(
                            "leaf at block {} points to {} as the next leaf, expected {} or none",
                            leaf.block,
                            describe_ref(next),
                            describe_ref(want)
                        ),
                    );
                    break;
                }
            }
            if st.entries.len() as u64 != root.entry_count {
                let found = st.entries.len();
                self.dir_problem(
                    ino,
                    &mut st,
                    format!("entry count is {}, found {found} entries", root.entry_count),
                );
            }
        }
        let mut names = HashSet::new();
        let mut kept = Vec::with_capacity(st.entries.len());
        let mut duplicates = Vec::new();
        for e in std::mem::take(&mut st.entries) {
            if names.insert(e.name.clone()) {
                kept.push(e);
            } else {
                duplicates.push(e);
            }
        }
        for e in duplicates {
            self.dir_problem(
                ino,
                &mut st,
                format!(
                    "name '{}' appears twice: the second entry (inode {}) is removed",
                    String::from_utf8_lossy(&e.name),
                    e.inode
                ),
            );
        }
        if let Some(rec) = self.inodes.get_mut(&ino) {
            rec.entries = kept;
            rec.dir_blocks = st.blocks;
            rec.dir_rebuild |= st.bad || st.lost;
        }
    }

    fn walk_dir_block(
        &mut self,
        ino: u64,
        r: BlockRef,
        level: u16,
        lo: u64,
        hi: Option<u64>,
        st: &mut DirWalk,
    ) {
        let what = if level == 0 {
            "a directory leaf"
        } else {
            "a directory node"
        };
        if !self.claim_meta(r.block, ino, what, Pass::Directories) {
            st.bad = true;
            st.lost = true;
            return;
        }
        let (kind, decode): (BlockKind, Decoder<'_>) = if level == 0 {
            (BlockKind::DirLeaf, &|p| DirLeaf::decode(p).map(|_| ()))
        } else {
            (BlockKind::DirNode, &|p| DirNode::decode(p).map(|_| ()))
        };
        let read = self.read_meta(
            r.block,
            kind,
            Some(r.generation),
            decode,
            &format!("{} of inode {ino}", &what[2..]),
        );
        let payload = match &read {
            MetaRead::Good { .. } => read.payload().unwrap_or_default().to_vec(),
            MetaRead::Unwritten | MetaRead::Lost(_) => {
                let why = match read {
                    MetaRead::Lost(why) => why,
                    _ => "never written".to_string(),
                };
                self.report.error(
                    Pass::MetadataTags,
                    true,
                    format!(
                        "directory {ino}: {} at block {} has no good copy ({why}): the names \
                         in it are lost and their inodes are reconnected to lost+found",
                        &what[2..],
                        r.block
                    ),
                );
                st.bad = true;
                st.lost = true;
                return;
            }
        };
        st.blocks.push(r.block);
        if level == 0 {
            let Ok(leaf) = DirLeaf::decode(&payload) else {
                return;
            };
            st.leaves.push((r, leaf.next));
            for e in leaf.entries {
                if e.key < lo || hi.is_some_and(|h| e.key >= h) {
                    self.dir_problem(
                        ino,
                        st,
                        format!(
                            "key {:#x} of '{}' lies outside its leaf's range",
                            e.key,
                            String::from_utf8_lossy(&e.name)
                        ),
                    );
                }
                if st.last_key.is_some_and(|k| e.key <= k) {
                    self.dir_problem(
                        ino,
                        st,
                        format!(
                            "key {:#x} of '{}' is out of order",
                            e.key,
                            String::from_utf8_lossy(&e.name)
                        ),
                    );
                }
                st.last_key = Some(st.last_key.map_or(e.key, |k| k.max(e.key)));
                st.entries.push(e);
            }
        } else {
            let Ok(node) = DirNode::decode(&payload) else {
                return;
            };
            if node.level != level {
                self.dir_problem(
                    ino,
                    st,
                    format!(
                        "node at block {} has level {}, expected {level}",
                        r.block, node.level
                    ),
                );
                st.lost = true;
                return;
            }
            for (i, e) in node.entries.iter().enumerate() {
                let child_lo = if i == 0 { lo } else { e.min_key };
                if i > 0 && e.min_key < lo {
                    self.dir_problem(
                        ino,
                        st,
                        format!(
                            "node at block {}: key {:#x} lies below its range",
                            r.block, e.min_key
                        ),
                    );
                }
                let child_hi = node.entries.get(i + 1).map(|n| n.min_key).or(hi);
                self.walk_dir_block(ino, e.child, level - 1, child_lo, child_hi, st);
            }
        }
    }
}

fn describe_ref(r: Option<BlockRef>) -> String {
    match r {
        Some(r) => format!("block {} (generation {})", r.block, r.generation),
        None => "none".to_string(),
    }
}

/// Gives every entry a key (§8): an entry whose key is sound and unique
/// keeps it (so readdir offsets survive), the others get the smallest free
/// collision counter of their name's hash. Returns the entries, sorted by
/// key, and those that could not get a key (257 names with one hash).
pub fn assign_keys(entries: Vec<DirEntry>) -> (Vec<DirEntry>, Vec<DirEntry>) {
    let mut used: HashSet<u64> = HashSet::new();
    let mut keyed = Vec::with_capacity(entries.len());
    let mut pending = Vec::new();
    for e in entries {
        if e.key & !0xff == key_base(&e.name) && used.insert(e.key) {
            keyed.push(e);
        } else {
            pending.push(e);
        }
    }
    let mut next_free: HashMap<u64, u16> = HashMap::new();
    let mut refused = Vec::new();
    for mut e in pending {
        let base = key_base(&e.name);
        let c = next_free.entry(base).or_insert(0);
        while *c <= 0xff && used.contains(&(base | u64::from(*c))) {
            *c += 1;
        }
        if *c > 0xff {
            refused.push(e);
            continue;
        }
        e.key = base | u64::from(*c);
        used.insert(e.key);
        keyed.push(e);
    }
    keyed.sort_by_key(|e| e.key);
    (keyed, refused)
}

/// A fresh B+tree holding `entries` (sorted by key, keys sound and
/// unique): leaves filled in key order (next leaf 0, §8), nodes above them until
/// one block is the root. Every block gets header generation `gen`;
/// `alloc` gives a free block.
pub fn build_directory(
    entries: &[DirEntry],
    payload_len: usize,
    gen: u64,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> Result<BuiltDirectory, FormatError> {
    if entries.is_empty() {
        return Ok(BuiltDirectory {
            root: DirRoot::empty(),
            blocks: Vec::new(),
        });
    }
    let no_space = |s| {
        FormatError::invalid(
            s,
            "child",
            Problem::Inconsistent("no free block for a directory block"),
        )
    };
    // Leaves: as many entries as fit.
    let mut groups: Vec<Vec<DirEntry>> = Vec::new();
    let mut used = LEAF_HEADER_LEN;
    for e in entries {
        let size = leaf_entry_size(e.name.len());
        if groups.is_empty() || used + size > payload_len {
            groups.push(Vec::new());
            used = LEAF_HEADER_LEN;
        }
        used += size;
        if let Some(g) = groups.last_mut() {
            g.push(e.clone());
        }
    }
    let mut leaf_blocks = Vec::with_capacity(groups.len());
    for _ in &groups {
        leaf_blocks.push(alloc().ok_or_else(|| no_space(Structure::DirLeaf))?);
    }
    let mut blocks = Vec::new();
    let mut level: Vec<(u64, u64)> = Vec::new();
    for (i, group) in groups.into_iter().enumerate() {
        // §8: writers store next leaf 0 (readers go through the nodes).
        let leaf = DirLeaf {
            next: None,
            entries: group,
        };
        let mut payload = vec![0u8; payload_len];
        leaf.encode(&mut payload)?;
        level.push((leaf.entries[0].key, leaf_blocks[i]));
        blocks.push((leaf_blocks[i], BlockKind::DirLeaf, payload));
    }
    let capacity = node_capacity(payload_len).max(2);
    let mut depth = 0u16;
    while level.len() > 1 {
        depth += 1;
        let mut next = Vec::new();
        for chunk in level.chunks(capacity) {
            let block = alloc().ok_or_else(|| no_space(Structure::DirNode))?;
            let node = DirNode {
                level: depth,
                entries: chunk
                    .iter()
                    .map(|&(min_key, child)| DirNodeEntry {
                        min_key,
                        child: BlockRef {
                            block: child,
                            generation: gen,
                        },
                    })
                    .collect(),
            };
            let mut payload = vec![0u8; payload_len];
            node.encode(&mut payload)?;
            blocks.push((block, BlockKind::DirNode, payload));
            next.push((chunk[0].0, block));
        }
        level = next;
    }
    Ok(BuiltDirectory {
        root: DirRoot {
            root: Some(BlockRef {
                block: level[0].1,
                generation: gen,
            }),
            depth,
            entry_count: entries.len() as u64,
        },
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelfs_fs::format::dir::dir_key;
    use keelfs_fs::format::FileType;

    fn entry(name: &str, key: u64) -> DirEntry {
        DirEntry {
            key,
            inode: 5,
            file_type: FileType::Regular,
            name: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn keys_are_kept_when_sound_and_assigned_otherwise() {
        let a = entry("a", dir_key(b"a", 3));
        let b = entry("b", 0); // unsound
        let a2 = entry("a2", dir_key(b"a2", 0));
        let (keyed, refused) = assign_keys(vec![a.clone(), b, a2.clone()]);
        assert!(refused.is_empty());
        assert!(keyed.contains(&a));
        assert!(keyed.contains(&a2));
        let b = keyed.iter().find(|e| e.name == b"b").unwrap();
        assert_eq!(b.key, dir_key(b"b", 0));
        assert!(keyed.windows(2).all(|w| w[0].key < w[1].key));
    }

    #[test]
    fn big_directories_get_nodes() {
        let (entries, _) = assign_keys(
            (0..500)
                .map(|i| entry(&format!("file-{i:04}"), 0))
                .collect(),
        );
        let mut next = 100u64;
        let mut alloc = || {
            next += 1;
            Some(next)
        };
        let built = build_directory(&entries, 976, 9, &mut alloc).unwrap();
        assert!(built.root.depth >= 1);
        assert_eq!(built.root.entry_count, 500);
        let leaves = built
            .blocks
            .iter()
            .filter(|b| b.1 == BlockKind::DirLeaf)
            .count();
        assert!(leaves > 10);
        for (_, kind, payload) in &built.blocks {
            match kind {
                BlockKind::DirLeaf => {
                    DirLeaf::decode(payload).unwrap();
                }
                _ => {
                    DirNode::decode(payload).unwrap();
                }
            }
        }
        assert!(build_directory(&[], 976, 9, &mut alloc)
            .unwrap()
            .blocks
            .is_empty());
    }
}
