//! The model: what the filesystem holds after each op of a workload, as
//! POSIX says, with abstract inode identities.
//!
//! What it promises:
//!
//! * [`Model::apply`] changes the model as the op would change a POSIX
//!   filesystem, or returns the error ([`Errno`]) it would fail with and
//!   changes nothing. Link counts follow the usual rule (a file: one per
//!   name; a directory: 2 + its subdirectories). Unlinked inodes leave the
//!   model at once: an orphan kept alive by an open handle is invisible
//!   after a crash anyway.
//! * It returns the op's [`Effects`]: which directory entries, file
//!   contents, link counts and xattr sets the op changed. The oracle uses
//!   them to tell which durability obligations a later op may have
//!   legitimately overridden.
//! * Identities are [`Id`]s handed out in creation order; the runner maps
//!   them to the inode numbers the real filesystem gave.
//!
//! Relies on: `workload.rs` for the bytes each op writes.

use super::workload::{data_bytes, xattr_value, Falloc, Op, RenameHow, WriteAt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An inode of the model.
pub type Id = u32;

/// The root directory.
pub const ROOT: Id = 1;
/// lost+found, which mkfs makes.
pub const LOST_FOUND: Id = 2;

/// What an inode holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file's bytes (its size is their length).
    File(Arc<Vec<u8>>),
    /// A directory's names.
    Dir(BTreeMap<String, Id>),
    /// A symlink's target.
    Symlink(String),
}

/// One inode of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub node: Node,
    pub nlink: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A directory's parent (itself for the root); 0 for other inodes.
    pub parent: Id,
}

/// Why an op fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    Invalid,
    NotPermitted,
    NoAttr,
}

/// What an op changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Directory entries added, removed or repointed: (directory, name).
    pub entries: Vec<(Id, String)>,
    /// Files whose bytes or size changed.
    pub data: Vec<Id>,
    /// Inodes whose link count changed (or that went away).
    pub links: Vec<Id>,
    /// Inodes whose xattrs changed.
    pub xattrs: Vec<Id>,
    /// The inode the op created.
    pub created: Option<Id>,
}

/// The filesystem as POSIX sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub inodes: BTreeMap<Id, Inode>,
    next_id: Id,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

fn dir_inode(parent: Id) -> Inode {
    Inode {
        node: Node::Dir(BTreeMap::new()),
        nlink: 2,
        xattrs: BTreeMap::new(),
        parent,
    }
}

/// The parent path and last name of `path` (`""` is the root).
pub fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

impl Model {
    /// A freshly made filesystem: the root and lost+found.
    pub fn new() -> Model {
        let mut root = dir_inode(ROOT);
        root.nlink = 3;
        if let Node::Dir(entries) = &mut root.node {
            entries.insert("lost+found".to_string(), LOST_FOUND);
        }
        let mut inodes = BTreeMap::new();
        inodes.insert(ROOT, root);
        inodes.insert(LOST_FOUND, dir_inode(ROOT));
        Model {
            inodes,
            next_id: LOST_FOUND + 1,
        }
    }

    /// The inode `id` (it must exist).
    pub fn inode(&self, id: Id) -> &Inode {
        &self.inodes[&id]
    }

    fn inode_mut(&mut self, id: Id) -> &mut Inode {
        self.inodes.get_mut(&id).expect("model inode")
    }

    /// The inode `path` names.
    pub fn resolve(&self, path: &str) -> Result<Id, Errno> {
        let mut at = ROOT;
        if path.is_empty() || path == "." {
            return Ok(at);
        }
        for name in path.split('/') {
            match &self.inode(at).node {
                Node::Dir(entries) => at = *entries.get(name).ok_or(Errno::NotFound)?,
                _ => return Err(Errno::NotDir),
            }
        }
        Ok(at)
    }

    /// The directory that would hold `path`, and the last name.
    fn parent_of<'p>(&self, path: &'p str) -> Result<(Id, &'p str), Errno> {
        let (dir, name) = split_path(path);
        if name.is_empty() || name == "." || name == ".." {
            return Err(Errno::Invalid);
        }
        let parent = self.resolve(dir)?;
        match self.inode(parent).node {
            Node::Dir(_) => Ok((parent, name)),
            _ => Err(Errno::NotDir),
        }
    }

    fn entries(&self, dir: Id) -> &BTreeMap<String, Id> {
        match &self.inode(dir).node {
            Node::Dir(e) => e,
            _ => unreachable!("not a directory"),
        }
    }

    fn entries_mut(&mut self, dir: Id) -> &mut BTreeMap<String, Id> {
        match &mut self.inode_mut(dir).node {
            Node::Dir(e) => e,
            _ => unreachable!("not a directory"),
        }
    }

    fn lookup(&self, dir: Id, name: &str) -> Option<Id> {
        self.entries(dir).get(name).copied()
    }

    fn is_dir(&self, id: Id) -> bool {
        matches!(self.inode(id).node, Node::Dir(_))
    }

    /// Whether `dir` is `ancestor` or lies below it.
    fn is_within(&self, mut dir: Id, ancestor: Id) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            if dir == ROOT {
                return false;
            }
            dir = self.inode(dir).parent;
        }
    }

    fn file_data(&self, id: Id) -> Result<&Arc<Vec<u8>>, Errno> {
        match &self.inode(id).node {
            Node::File(d) => Ok(d),
            Node::Dir(_) => Err(Errno::IsDir),
            Node::Symlink(_) => Err(Errno::Invalid),
        }
    }

    fn new_inode(&mut self, inode: Inode) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        self.inodes.insert(id, inode);
        id
    }

    /// Drops one link of `id`; the inode goes when none is left.
    fn drop_link(&mut self, id: Id) {
        let ino = self.inode_mut(id);
        ino.nlink -= 1;
        if ino.nlink == 0 {
            self.inodes.remove(&id);
        }
    }

    /// Applies `op`, whose bytes carry `stamp`. On error nothing changes.
    pub fn apply(&mut self, op: &Op, stamp: u64) -> Result<Effects, Errno> {
        let mut fx = Effects::default();
        match op {
            Op::Create(path) | Op::Mkdir(path) | Op::Symlink { path, .. } => {
                let (parent, name) = self.parent_of(path)?;
                if self.lookup(parent, name).is_some() {
                    return Err(Errno::Exists);
                }
                let inode = match op {
                    Op::Create(_) => Inode {
                        node: Node::File(Arc::new(Vec::new())),
                        nlink: 1,
                        xattrs: BTreeMap::new(),
                        parent: 0,
                    },
                    Op::Mkdir(_) => dir_inode(parent),
                    Op::Symlink { target, .. } => Inode {
                        node: Node::Symlink(target.clone()),
                        nlink: 1,
                        xattrs: BTreeMap::new(),
                        parent: 0,
                    },
                    _ => unreachable!(),
                };
                let id = self.new_inode(inode);
                self.entries_mut(parent).insert(name.to_string(), id);
                if matches!(op, Op::Mkdir(_)) {
                    self.inode_mut(parent).nlink += 1;
                    fx.links.push(parent);
                }
                fx.entries.push((parent, name.to_string()));
                fx.created = Some(id);
            }
            Op::Write { path, at, len } => {
                let id = self.resolve(path)?;
                let old = self.file_data(id)?;
                let offset = match at {
                    WriteAt::Append => old.len() as u64,
                    WriteAt::Offset(o) => *o,
                };
                let mut data = old.as_ref().clone();
                let end = (offset + len) as usize;
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[offset as usize..end].copy_from_slice(&data_bytes(stamp, offset, *len));
                self.set_data(id, data, &mut fx);
            }
            Op::Truncate { path, size } => {
                let id = self.resolve(path)?;
                let mut data = self.file_data(id)?.as_ref().clone();
                data.resize(*size as usize, 0);
                self.set_data(id, data, &mut fx);
            }
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                let id = self.resolve(path)?;
                if *len == 0 {
                    return Err(Errno::Invalid);
                }
                let mut data = self.file_data(id)?.as_ref().clone();
                let end = (offset + len) as usize;
                let start = *offset as usize;
                match mode {
                    Falloc::Allocate => {
                        if data.len() < end {
                            data.resize(end, 0);
                        }
                    }
                    Falloc::KeepSize => {}
                    Falloc::PunchHole => {
                        let stop = end.min(data.len());
                        if start < stop {
                            data[start..stop].fill(0);
                        }
                    }
                    Falloc::ZeroRange => {
                        if data.len() < end {
                            data.resize(end, 0);
                        }
                        data[start..end].fill(0);
                    }
                }
                self.set_data(id, data, &mut fx);
            }
            Op::Link { from, to } => {
                let id = self.resolve(from)?;
                if self.is_dir(id) {
                    return Err(Errno::NotPermitted);
                }
                let (parent, name) = self.parent_of(to)?;
                if self.lookup(parent, name).is_some() {
                    return Err(Errno::Exists);
                }
                self.entries_mut(parent).insert(name.to_string(), id);
                self.inode_mut(id).nlink += 1;
                fx.entries.push((parent, name.to_string()));
                fx.links.push(id);
            }
            Op::Unlink(path) => {
                let (parent, name) = self.parent_of(path)?;
                let id = self.lookup(parent, name).ok_or(Errno::NotFound)?;
                if self.is_dir(id) {
                    return Err(Errno::IsDir);
                }
                self.entries_mut(parent).remove(name);
                self.drop_link(id);
                fx.entries.push((parent, name.to_string()));
                fx.links.push(id);
            }
            Op::Rmdir(path) => {
                let (parent, name) = self.parent_of(path)?;
                let id = self.lookup(parent, name).ok_or(Errno::NotFound)?;
                if !self.is_dir(id) {
                    return Err(Errno::NotDir);
                }
                if !self.entries(id).is_empty() {
                    return Err(Errno::NotEmpty);
                }
                self.entries_mut(parent).remove(name);
                self.inodes.remove(&id);
                self.inode_mut(parent).nlink -= 1;
                fx.entries.push((parent, name.to_string()));
                fx.links.extend([id, parent]);
            }
            Op::Rename { from, to, how } => self.rename(from, to, *how, &mut fx)?,
            Op::SetXattr { path, name, len } => {
                let id = self.resolve(path)?;
                if matches!(self.inode(id).node, Node::Symlink(_)) {
                    return Err(Errno::NotPermitted);
                }
                self.inode_mut(id)
                    .xattrs
                    .insert(name.clone(), xattr_value(stamp, *len));
                fx.xattrs.push(id);
            }
            Op::RemoveXattr { path, name } => {
                let id = self.resolve(path)?;
                if self.inode_mut(id).xattrs.remove(name).is_none() {
                    return Err(Errno::NoAttr);
                }
                fx.xattrs.push(id);
            }
            Op::Fsync(path) | Op::Fdatasync(path) => {
                // A symlink cannot be opened to be synced.
                let id = self.resolve(path)?;
                if matches!(self.inode(id).node, Node::Symlink(_)) {
                    return Err(Errno::Invalid);
                }
            }
            Op::Syncfs => {}
        }
        Ok(fx)
    }

    fn set_data(&mut self, id: Id, data: Vec<u8>, fx: &mut Effects) {
        if let Node::File(old) = &self.inode(id).node {
            if **old == data {
                return;
            }
        }
        self.inode_mut(id).node = Node::File(Arc::new(data));
        fx.data.push(id);
    }

    fn rename(
        &mut self,
        from: &str,
        to: &str,
        how: RenameHow,
        fx: &mut Effects,
    ) -> Result<(), Errno> {
        let (fp, fname) = self.parent_of(from)?;
        let src = self.lookup(fp, fname).ok_or(Errno::NotFound)?;
        let (tp, tname) = self.parent_of(to)?;
        let dst = self.lookup(tp, tname);
        if fp == tp && fname == tname {
            // The workloads never rename a name onto itself.
            return Err(Errno::Invalid);
        }
        // A directory cannot move below itself.
        if self.is_dir(src) && self.is_within(tp, src) {
            return Err(Errno::Invalid);
        }
        fx.entries.push((fp, fname.to_string()));
        fx.entries.push((tp, tname.to_string()));
        match how {
            RenameHow::Exchange => {
                let dst = dst.ok_or(Errno::NotFound)?;
                if self.is_dir(dst) && self.is_within(fp, dst) {
                    return Err(Errno::Invalid);
                }
                self.entries_mut(fp).insert(fname.to_string(), dst);
                self.entries_mut(tp).insert(tname.to_string(), src);
                if fp != tp {
                    self.reparent(src, fp, tp, fx);
                    self.reparent(dst, tp, fp, fx);
                }
                return Ok(());
            }
            RenameHow::NoReplace if dst.is_some() => return Err(Errno::Exists),
            _ => {}
        }
        if let Some(dst) = dst {
            if dst == src {
                // Two links of one file: rename does nothing.
                fx.entries.clear();
                return Ok(());
            }
            match (self.is_dir(src), self.is_dir(dst)) {
                (true, false) => return Err(Errno::NotDir),
                (false, true) => return Err(Errno::IsDir),
                (true, true) if !self.entries(dst).is_empty() => return Err(Errno::NotEmpty),
                (true, true) => {
                    self.inodes.remove(&dst);
                    self.inode_mut(tp).nlink -= 1;
                    fx.links.extend([dst, tp]);
                }
                (false, false) => {
                    self.drop_link(dst);
                    fx.links.push(dst);
                }
            }
        }
        self.entries_mut(fp).remove(fname);
        self.entries_mut(tp).insert(tname.to_string(), src);
        if fp != tp {
            self.reparent(src, fp, tp, fx);
        }
        Ok(())
    }

    /// A directory `id` moved from `old` to `new`: the parents' link counts
    /// follow (non-directories change nothing).
    fn reparent(&mut self, id: Id, old: Id, new: Id, fx: &mut Effects) {
        if !self.is_dir(id) {
            return;
        }
        self.inode_mut(id).parent = new;
        self.inode_mut(old).nlink -= 1;
        self.inode_mut(new).nlink += 1;
        fx.links.extend([old, new]);
    }

    /// Every (directory, name) → inode entry, for comparisons.
    pub fn all_entries(&self) -> Vec<(Id, String, Id)> {
        let mut out = Vec::new();
        for (&dir, ino) in &self.inodes {
            if let Node::Dir(entries) = &ino.node {
                for (name, &child) in entries {
                    out.push((dir, name.clone(), child));
                }
            }
        }
        out
    }

    /// The paths naming `id` (one per link; directories have one).
    pub fn paths_of(&self, id: Id) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_paths(ROOT, String::new(), id, &mut out);
        out
    }

    fn collect_paths(&self, dir: Id, prefix: String, id: Id, out: &mut Vec<String>) {
        for (name, &child) in self.entries(dir) {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if child == id {
                out.push(path.clone());
            }
            if self.is_dir(child) {
                self.collect_paths(child, path, id, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(model: &mut Model, ops: &[&str]) -> Vec<Result<Effects, Errno>> {
        ops.iter()
            .enumerate()
            .map(|(i, line)| model.apply(&Op::parse(line).unwrap(), i as u64 + 1))
            .collect()
    }

    fn ok(model: &mut Model, ops: &[&str]) {
        for (i, r) in run(model, ops).into_iter().enumerate() {
            r.unwrap_or_else(|e| panic!("{}: {e:?}", ops[i]));
        }
    }

    #[test]
    fn link_counts_follow_names_and_subdirectories() {
        let mut m = Model::new();
        ok(
            &mut m,
            &[
                "mkdir A",
                "mkdir A/B",
                "create foo",
                "link foo A/l",
                "link foo A/B/m",
            ],
        );
        let a = m.resolve("A").unwrap();
        let foo = m.resolve("foo").unwrap();
        assert_eq!(m.inode(ROOT).nlink, 4);
        assert_eq!(m.inode(a).nlink, 3);
        assert_eq!(m.inode(foo).nlink, 3);
        assert_eq!(m.paths_of(foo), vec!["A/B/m", "A/l", "foo"]);
        ok(&mut m, &["rename A/B C", "unlink foo", "unlink A/l"]);
        assert_eq!(m.inode(a).nlink, 2);
        assert_eq!(m.inode(ROOT).nlink, 5);
        assert_eq!(m.inode(foo).nlink, 1);
        ok(&mut m, &["unlink C/m"]);
        assert!(!m.inodes.contains_key(&foo));
    }

    #[test]
    fn renames_replace_exchange_and_refuse() {
        let mut m = Model::new();
        ok(
            &mut m,
            &[
                "mkdir A",
                "mkdir B",
                "create A/x",
                "create y",
                "mkdir A/D",
                "create A/D/z",
            ],
        );
        let x = m.resolve("A/x").unwrap();
        let y = m.resolve("y").unwrap();
        let errs: Vec<Errno> = run(
            &mut m,
            &[
                "rename A A/D/E",
                "rename A/x B/nothere exchange",
                "rename A/x y noreplace",
                "rename y A",
                "rename A y",
                "rename nothere y",
                "rename B A",
            ],
        )
        .into_iter()
        .map(|r| r.unwrap_err())
        .collect();
        use Errno::*;
        assert_eq!(
            errs,
            [Invalid, NotFound, Exists, IsDir, NotDir, NotFound, NotEmpty]
        );
        ok(&mut m, &["rename A/x y"]);
        assert_eq!(m.resolve("y").unwrap(), x);
        assert!(!m.inodes.contains_key(&y));
        ok(&mut m, &["rename A/D B exchange"]);
        assert_eq!(m.inode(m.resolve("A").unwrap()).nlink, 3);
        assert!(m.resolve("B/z").is_ok(), "B is the old A/D");
        ok(&mut m, &["mkdir E", "rename B E"]);
        assert_eq!(m.inode(ROOT).nlink, 5, "root: lost+found, A, E");
    }

    #[test]
    fn data_ops_follow_posix() {
        let mut m = Model::new();
        ok(
            &mut m,
            &[
                "create f",
                "write f append 10",
                "write f at 20 5",
                "truncate f 22",
                "fallocate f allocate 0 30",
                "fallocate f punch-hole 2 4",
                "fallocate f keep-size 0 100",
            ],
        );
        let f = m.resolve("f").unwrap();
        let Node::File(d) = &m.inode(f).node else {
            panic!()
        };
        let mut want = data_bytes(2, 0, 10);
        want.resize(20, 0);
        want.extend(data_bytes(3, 20, 2));
        want.resize(30, 0);
        want[2..6].fill(0);
        assert_eq!(**d, want);
        let fx = run(&mut m, &["fallocate f keep-size 0 10"]).pop().unwrap();
        assert!(fx.unwrap().data.is_empty(), "nothing visible changed");
    }
}
