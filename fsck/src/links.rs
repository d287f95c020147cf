//! Passes 7 and 8 on the namespace: which entries stand, which directory
//! is each directory's parent, what is reachable from the root, what goes
//! to lost+found, and every inode's link count.
//!
//! In order:
//!
//! 1. The root (inode 1) must be a directory in use; if it is not, a new,
//!    empty root is made and everything is reconnected under it.
//! 2. Every entry of every directory must name an inode in use, other than
//!    the root and the directory itself, with the type the inode has.
//!    Entries naming a free or cleared inode are dropped; a wrong type is
//!    corrected.
//! 3. A directory may be named once: if several entries name it, the one in
//!    the directory its `..` field names is kept (else the first), the
//!    others are dropped.
//! 4. Directories that cannot be reached from the root (their name was
//!    lost, or they form a loop) and inodes no entry names (other than
//!    pending orphans) are reconnected into lost+found as `#INODE`. If
//!    lost+found is itself unreachable it is reconnected into the root; if
//!    it is missing (and needed) it is made.
//! 5. Link counts: a directory has 2 + its subdirectories (the root's `..`
//!    is itself), anything else one per entry naming it; a directory's
//!    parent field names the directory that names it.
//!
//! Changes go into the model: dropped and added entries mark the directory
//! for a rebuild; inode fields are set on the inode's desired value.

use crate::checker::{Checker, Fate, InodeRec};
use crate::inodes::type_name;
use crate::report::Pass;
use keelfs_fs::format::superblock::{LOST_FOUND_INODE, ROOT_INODE};
use keelfs_fs::format::{DataArea, DirEntry, DirRoot, FileType, Inode, Timestamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Permissions of a directory fsck makes (the root, lost+found).
const NEW_DIR_PERMISSIONS: u16 = 0o755;

fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos(),
    }
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl Checker<'_> {
    /// Passes 7 and 8 on the namespace; see the module docs.
    pub fn check_namespace(&mut self) {
        self.ensure_root();
        self.check_entries();
        let mut parents = self.choose_parents();
        self.reconnect(&mut parents);
        self.check_link_counts(&parents);
    }

    fn is_kept_dir(&self, ino: u64) -> bool {
        self.kept(ino)
            .is_some_and(|r| r.inode.file_type == FileType::Directory)
    }

    /// Makes a new, empty directory `ino` whose parent is `parent`.
    fn create_dir(&mut self, ino: u64, parent: u64) {
        let generation = self
            .inodes
            .get(&ino)
            .map(|r| r.original.generation.wrapping_add(1))
            .or_else(|| self.plan.clear_slots.get(&ino).map(|g| g.wrapping_add(1)))
            .unwrap_or(0);
        self.plan.clear_slots.remove(&ino);
        let t = now();
        let mut inode = Inode::new(FileType::Directory, NEW_DIR_PERMISSIONS);
        inode.parent = parent;
        inode.links = 2;
        inode.generation = generation;
        inode.data = DataArea::Directory(DirRoot::empty());
        inode.atime = t;
        inode.mtime = t;
        inode.ctime = t;
        inode.btime = t;
        let mut rec = InodeRec::new(inode, false);
        rec.fate = Fate::Keep;
        rec.created = true;
        rec.walked = true;
        rec.dir_rebuild = true;
        self.inodes.insert(ino, rec);
    }

    fn ensure_root(&mut self) {
        if self.is_kept_dir(ROOT_INODE) {
            return;
        }
        let what = match self.inodes.get(&ROOT_INODE) {
            Some(r) if r.kept() => format!("a {}", type_name(r.inode.file_type)),
            Some(_) => "cleared".to_string(),
            None => "missing".to_string(),
        };
        self.report.error(
            Pass::Directories,
            true,
            format!(
                "the root directory (inode 1) is {what}: a new, empty root is made and \
                 everything is reconnected to lost+found"
            ),
        );
        self.create_dir(ROOT_INODE, ROOT_INODE);
    }

    /// Step 2: drops entries naming what is not there, corrects types.
    fn check_entries(&mut self) {
        let dirs: Vec<u64> = self.kept_dirs();
        let count = self.layout.inode_count;
        for d in dirs {
            let entries = match self.inodes.get_mut(&d) {
                Some(rec) => std::mem::take(&mut rec.entries),
                None => continue,
            };
            let mut kept = Vec::with_capacity(entries.len());
            let mut changed = false;
            for mut e in entries {
                let t = e.inode;
                let target = self.inodes.get(&t);
                let reason = if t > count {
                    Some(format!("names inode {t}, beyond the last inode {count}"))
                } else if t == ROOT_INODE {
                    Some("names the root directory".to_string())
                } else if t == d {
                    Some("names the directory itself".to_string())
                } else {
                    match target {
                        Some(r) if r.kept() => None,
                        Some(r) if r.fate == Fate::Clear => {
                            Some(format!("names inode {t}, which is cleared"))
                        }
                        _ => Some(format!("names inode {t}, which is free")),
                    }
                };
                if let Some(reason) = reason {
                    self.report.error(
                        Pass::Directories,
                        true,
                        format!("directory {d}: entry '{}' {reason}: removed", show(&e.name)),
                    );
                    changed = true;
                    continue;
                }
                let actual = target.map(|r| r.inode.file_type);
                if let Some(actual) = actual.filter(|&a| a != e.file_type) {
                    self.report.error(
                        Pass::Directories,
                        true,
                        format!(
                            "directory {d}: entry '{}' says {} but inode {t} is a {}: corrected",
                            show(&e.name),
                            type_name(e.file_type),
                            type_name(actual)
                        ),
                    );
                    e.file_type = actual;
                    changed = true;
                }
                kept.push(e);
            }
            if let Some(rec) = self.inodes.get_mut(&d) {
                rec.entries = kept;
                rec.dir_rebuild |= changed;
            }
        }
    }

    fn kept_dirs(&self) -> Vec<u64> {
        self.inodes
            .iter()
            .filter(|(_, r)| r.kept() && r.inode.file_type == FileType::Directory)
            .map(|(&n, _)| n)
            .collect()
    }

    /// Removes the entries of directory `d` naming `target` (all, or all
    /// but the first if `keep_one`), reporting each with `why`.
    fn drop_entries_naming(&mut self, d: u64, target: u64, keep_one: bool, why: &str) {
        let Some(rec) = self.inodes.get_mut(&d) else {
            return;
        };
        let mut kept_one = false;
        let mut dropped = Vec::new();
        rec.entries.retain(|e| {
            if e.inode != target {
                return true;
            }
            if keep_one && !kept_one {
                kept_one = true;
                return true;
            }
            dropped.push(e.name.clone());
            false
        });
        if !dropped.is_empty() {
            rec.dir_rebuild = true;
        }
        for name in dropped {
            self.report.error(
                Pass::Directories,
                true,
                format!("directory {d}: entry '{}' {why}: removed", show(&name)),
            );
        }
    }

    /// Step 3: one parent per directory. Returns child → parent.
    fn choose_parents(&mut self) -> BTreeMap<u64, u64> {
        let mut incoming: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for d in self.kept_dirs() {
            let Some(rec) = self.inodes.get(&d) else {
                continue;
            };
            for e in &rec.entries {
                if e.file_type == FileType::Directory {
                    incoming.entry(e.inode).or_default().push(d);
                }
            }
        }
        let mut parents = BTreeMap::new();
        for (child, dirs) in incoming {
            let recorded = self.kept(child).map_or(0, |r| r.inode.parent);
            let chosen = if dirs.contains(&recorded) {
                recorded
            } else {
                dirs[0]
            };
            parents.insert(child, chosen);
            if dirs.len() > 1 {
                let distinct: BTreeSet<u64> = dirs.iter().copied().collect();
                for d in distinct {
                    let why =
                        format!("names directory {child}, which directory {chosen} names already");
                    self.drop_entries_naming(d, child, d == chosen, &why);
                }
            }
        }
        parents
    }

    /// The directories reachable from `from` through `parents`.
    fn reach(&self, from: u64, parents: &BTreeMap<u64, u64>, reached: &mut BTreeSet<u64>) {
        let mut children: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for (&c, &p) in parents {
            children.entry(p).or_default().push(c);
        }
        let mut queue = VecDeque::from([from]);
        reached.insert(from);
        while let Some(d) = queue.pop_front() {
            for &c in children.get(&d).map(|v| &v[..]).unwrap_or_default() {
                if reached.insert(c) {
                    queue.push_back(c);
                }
            }
        }
    }

    /// Non-directory inodes in use that no entry names, except pending
    /// orphans.
    fn unnamed_files(&self) -> Vec<u64> {
        let named = self.named_inodes();
        self.inodes
            .iter()
            .filter(|(n, r)| {
                r.kept()
                    && r.inode.file_type != FileType::Directory
                    && !named.contains(n)
                    && !self.orphans.contains(n)
            })
            .map(|(&n, _)| n)
            .collect()
    }

    /// A free inode number for a new directory (lost+found's own first).
    fn free_inode(&self) -> Option<u64> {
        let free = |n: u64| self.inodes.get(&n).is_none_or(|r| r.fate == Fate::Clear);
        if LOST_FOUND_INODE <= self.layout.inode_count && free(LOST_FOUND_INODE) {
            return Some(LOST_FOUND_INODE);
        }
        (2..=self.layout.inode_count).find(|&n| free(n))
    }

    /// A name not yet in directory `d`: `base`, or `base.1`, `base.2`, …
    fn unique_name(&self, d: u64, base: &str) -> Vec<u8> {
        let taken: BTreeSet<&[u8]> = self
            .inodes
            .get(&d)
            .map(|r| r.entries.iter().map(|e| &e.name[..]).collect())
            .unwrap_or_default();
        let mut name = base.as_bytes().to_vec();
        let mut i = 0;
        while taken.contains(&name[..]) {
            i += 1;
            name = format!("{base}.{i}").into_bytes();
        }
        name
    }

    /// Adds an entry `name` → `ino` to directory `d` (its key is given at
    /// the rebuild).
    fn add_entry(&mut self, d: u64, name: Vec<u8>, ino: u64) {
        let file_type = self
            .inodes
            .get(&ino)
            .map_or(FileType::Regular, |r| r.inode.file_type);
        if let Some(rec) = self.inodes.get_mut(&d) {
            rec.entries.push(DirEntry {
                key: 0,
                inode: ino,
                file_type,
                name,
            });
            rec.dir_rebuild = true;
        }
    }

    /// lost+found, reachable from the root (made or reconnected if need
    /// be); `None` if no inode is free to make it.
    fn ensure_lost_found(
        &mut self,
        parents: &mut BTreeMap<u64, u64>,
        reached: &mut BTreeSet<u64>,
    ) -> Option<u64> {
        if let Some(lf) = self.lost_found {
            return Some(lf);
        }
        let recorded = self.sb.lost_found_inode;
        let lf = if recorded != 0 && recorded != ROOT_INODE && self.is_kept_dir(recorded) {
            if !reached.contains(&recorded) {
                if let Some(&old) = parents.get(&recorded) {
                    self.drop_entries_naming(
                        old,
                        recorded,
                        false,
                        "names lost+found, which is not reachable from the root",
                    );
                }
                let name = self.unique_name(ROOT_INODE, "lost+found");
                self.report.error(
                    Pass::Links,
                    true,
                    format!(
                        "lost+found (inode {recorded}) is not reachable from the root: \
                         reconnected as /{}",
                        show(&name)
                    ),
                );
                self.add_entry(ROOT_INODE, name, recorded);
                parents.insert(recorded, ROOT_INODE);
                self.reach(recorded, parents, reached);
            }
            recorded
        } else {
            let Some(n) = self.free_inode() else {
                self.report.error(
                    Pass::Links,
                    false,
                    "lost+found is missing and no inode is free to make it",
                );
                return None;
            };
            let name = self.unique_name(ROOT_INODE, "lost+found");
            self.report.error(
                Pass::Links,
                true,
                format!("lost+found is missing: made as inode {n}, /{}", show(&name)),
            );
            self.create_dir(n, ROOT_INODE);
            self.add_entry(ROOT_INODE, name, n);
            parents.insert(n, ROOT_INODE);
            reached.insert(n);
            self.plan.superblocks = true;
            n
        };
        if self.sb.lost_found_inode != lf {
            self.sb.lost_found_inode = lf;
            self.plan.superblocks = true;
        }
        self.lost_found = Some(lf);
        Some(lf)
    }

    /// Step 4: reconnects what cannot be reached.
    fn reconnect(&mut self, parents: &mut BTreeMap<u64, u64>) {
        let mut reached = BTreeSet::new();
        self.reach(ROOT_INODE, parents, &mut reached);
        let unreachable: Vec<u64> = self
            .kept_dirs()
            .into_iter()
            .filter(|d| !reached.contains(d))
            .collect();
        let unnamed = self.unnamed_files();
        if unreachable.is_empty() && unnamed.is_empty() {
            let recorded = self.sb.lost_found_inode;
            if recorded != 0 && !self.is_kept_dir(recorded) {
                self.report.error(
                    Pass::Links,
                    true,
                    format!(
                        "the superblock names inode {recorded} as lost+found, which is not a \
                         directory in use: the superblock forgets it"
                    ),
                );
                self.sb.lost_found_inode = 0;
                self.plan.superblocks = true;
            }
            return;
        }
        let Some(lf) = self.ensure_lost_found(parents, &mut reached) else {
            return;
        };
        for d in unreachable {
            if reached.contains(&d) {
                continue;
            }
            // Climb to the top of d's detached subtree (or into its loop).
            let mut top = d;
            let mut seen = BTreeSet::from([d]);
            let mut looped = false;
            while let Some(&p) = parents.get(&top) {
                if !seen.insert(p) {
                    looped = true;
                    break;
                }
                top = p;
            }
            if looped {
                if let Some(&p) = parents.get(&top) {
                    self.drop_entries_naming(
                        p,
                        top,
                        false,
                        &format!("closes a loop of directories through {top}"),
                    );
                }
            }
            let name = self.unique_name(lf, &format!("#{top}"));
            self.report.error(
                Pass::Links,
                true,
                format!(
                    "directory {top} is not reachable from the root: reconnected to \
                     /lost+found as {}",
                    show(&name)
                ),
            );
            self.add_entry(lf, name, top);
            parents.insert(top, lf);
            self.reach(top, parents, &mut reached);
        }
        for ino in self.unnamed_files() {
            let Some(rec) = self.inodes.get(&ino) else {
                continue;
            };
            let kind = type_name(rec.inode.file_type);
            let size = rec.inode.size;
            let name = self.unique_name(lf, &format!("#{ino}"));
            self.report.error(
                Pass::Links,
                true,
                format!(
                    "inode {ino} (a {kind} of {size} bytes) is in no directory: reconnected to \
                     /lost+found as {}",
                    show(&name)
                ),
            );
            self.add_entry(lf, name, ino);
        }
    }

    /// Step 5: link counts and parent fields.
    fn check_link_counts(&mut self, parents: &BTreeMap<u64, u64>) {
        let mut refs: BTreeMap<u64, u32> = BTreeMap::new();
        let mut subdirs: BTreeMap<u64, u32> = BTreeMap::new();
        for (&d, rec) in self.inodes.iter().filter(|(_, r)| r.kept()) {
            for e in &rec.entries {
                *refs.entry(e.inode).or_default() += 1;
                if e.file_type == FileType::Directory {
                    *subdirs.entry(d).or_default() += 1;
                }
            }
        }
        let mut findings = Vec::new();
        for (&ino, rec) in self.inodes.iter_mut().filter(|(_, r)| r.kept()) {
            let named = refs.get(&ino).copied().unwrap_or(0);
            rec.refs = named;
            let is_dir = rec.inode.file_type == FileType::Directory;
            if !is_dir && named == 0 && self.orphans.contains(&ino) {
                continue;
            }
            let expected = if is_dir {
                2u32.saturating_add(subdirs.get(&ino).copied().unwrap_or(0))
            } else {
                named
            };
            if rec.inode.links != expected {
                if !rec.created {
                    findings.push(format!(
                        "inode {ino} ({}): link count is {}, should be {expected}",
                        type_name(rec.inode.file_type),
                        rec.inode.links
                    ));
                }
                rec.inode.links = expected;
            }
            if is_dir {
                let parent = if ino == ROOT_INODE {
                    ROOT_INODE
                } else {
                    parents.get(&ino).copied().unwrap_or(ROOT_INODE)
                };
                if rec.inode.parent != parent {
                    if !rec.created {
                        findings.push(format!(
                            "directory {ino}: its parent ('..') is {}, should be {parent}",
                            rec.inode.parent
                        ));
                    }
                    rec.inode.parent = parent;
                }
            }
        }
        for f in findings {
            self.report.error(Pass::Links, true, f);
        }
    }
}
