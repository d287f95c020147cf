//! The observer: everything a process can see of a mounted filesystem,
//! read through the fs core's API.
//!
//! What it promises:
//!
//! * [`observe`] walks the tree from the root: every directory listed
//!   (readdir), every name looked up (lookup must agree with readdir on
//!   the inode and its type; ".." must name the directory the walk came
//!   from), every inode's attributes (getattr), every regular file read in
//!   full, every symlink's target, every xattr of every inode. Lookups it
//!   makes are forgotten again.
//! * Any error on the way (a checksum failure is an I/O error from
//!   `read_data`: no good copy) makes it fail with the path and the error:
//!   after a crash nothing may read back as an error.
//! * A directory reached twice (a cycle or a second hard link to a
//!   directory) is an error too.
//!
//! Relies on: the fs core's public API.

use keelfs_fs::core::Fs;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::FileType;
use std::collections::{BTreeMap, VecDeque};

/// What an inode holds, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    File(Vec<u8>),
    /// Name → inode.
    Dir(BTreeMap<String, u64>),
    Symlink(String),
    /// A type the workloads never make.
    Other(FileType),
}

/// One inode, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub content: Content,
    pub nlink: u32,
    pub size: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The first path it was found at (for messages).
    pub path: String,
}

/// Every inode reachable from the root, by inode number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub nodes: BTreeMap<u64, Seen>,
}

impl Observed {
    /// The inode `ino`, if reachable.
    pub fn get(&self, ino: u64) -> Option<&Seen> {
        self.nodes.get(&ino)
    }

    /// The entry `name` of directory `dir`: `Err` if `dir` is not a
    /// reachable directory.
    pub fn entry(&self, dir: u64, name: &str) -> Result<Option<u64>, String> {
        match self.nodes.get(&dir).map(|s| &s.content) {
            Some(Content::Dir(entries)) => Ok(entries.get(name).copied()),
            Some(_) => Err(format!("inode {dir} is not a directory")),
            None => Err(format!("directory inode {dir} is not reachable")),
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Reads the whole tree of `fs`. See the module docs.
pub fn observe(fs: &Fs) -> Result<Observed, String> {
    let mut out = Observed::default();
    let mut queue = VecDeque::from([(ROOT_INODE, ROOT_INODE, String::new())]);
    while let Some((ino, parent, path)) = queue.pop_front() {
        let shown = if path.is_empty() { "/" } else { &path };
        if out.nodes.contains_key(&ino) {
            return Err(format!("directory {shown} (inode {ino}) is reached twice"));
        }
        let attr = fs
            .getattr(ino)
            .map_err(|e| format!("getattr {shown}: {e}"))?;
        let xattrs = read_xattrs(fs, ino).map_err(|e| format!("xattrs of {shown}: {e}"))?;
        // "..": the directory the walk came from.
        let dotdot = fs
            .lookup(ino, b"..")
            .map_err(|e| format!("lookup {shown}/..: {e}"))?;
        if dotdot.ino != parent {
            return Err(format!(
                "{shown}/.. is inode {} but the directory was found in inode {parent}",
                dotdot.ino
            ));
        }
        let _ = fs.forget(dotdot.ino, 1);
        let mut entries = BTreeMap::new();
        let mut listed = Vec::new();
        let mut err = None;
        fs.readdir(ino, 0, |e| {
            if e.name != b"." && e.name != b".." {
                listed.push((e.name.clone(), e.ino, e.kind));
            }
            true
        })
        .map_err(|e| format!("readdir {shown}: {e}"))?;
        for (name, child, kind) in listed {
            let name_s = text(&name);
            let child_path = join(&path, &name_s);
            if entries.insert(name_s.clone(), child).is_some() {
                return Err(format!("{shown}: name {name_s:?} listed twice"));
            }
            let looked = match fs.lookup(ino, &name) {
                Ok(a) => a,
                Err(e) => {
                    err.get_or_insert(format!("lookup {child_path}: {e} (readdir lists it)"));
                    continue;
                }
            };
            let _ = fs.forget(looked.ino, 1);
            if looked.ino != child || looked.kind != kind {
                return Err(format!(
                    "{child_path}: readdir says inode {child} ({kind:?}), lookup says inode {} \
                     ({:?})",
                    looked.ino, looked.kind
                ));
            }
            match kind {
                FileType::Directory => queue.push_back((child, ino, child_path)),
                _ => {
                    if let std::collections::btree_map::Entry::Vacant(slot) = out.nodes.entry(child)
                    {
                        slot.insert(read_leaf(fs, child, &child_path)?);
                    }
                }
            }
        }
        if let Some(e) = err {
            return Err(e);
        }
        out.nodes.insert(
            ino,
            Seen {
                content: Content::Dir(entries),
                nlink: attr.nlink,
                size: attr.size,
                xattrs,
                path: shown.to_string(),
            },
        );
    }
    Ok(out)
}

/// A non-directory inode: attributes, content, xattrs.
fn read_leaf(fs: &Fs, ino: u64, path: &str) -> Result<Seen, String> {
    let attr = fs
        .getattr(ino)
        .map_err(|e| format!("getattr {path}: {e}"))?;
    let content = match attr.kind {
        FileType::Regular => {
            let mut data = Vec::with_capacity(attr.size as usize);
            while (data.len() as u64) < attr.size {
                let chunk = fs
                    .read(ino, data.len() as u64, 1 << 20)
                    .map_err(|e| format!("read {path} at {}: {e}", data.len()))?;
                if chunk.is_empty() {
                    return Err(format!(
                        "read {path}: end of data at {} but the size is {}",
                        data.len(),
                        attr.size
                    ));
                }
                data.extend_from_slice(&chunk);
            }
            Content::File(data)
        }
        FileType::Symlink => Content::Symlink(text(
            &fs.readlink(ino)
                .map_err(|e| format!("readlink {path}: {e}"))?,
        )),
        other => Content::Other(other),
    };
    let xattrs = read_xattrs(fs, ino).map_err(|e| format!("xattrs of {path}: {e}"))?;
    Ok(Seen {
        content,
        nlink: attr.nlink,
        size: attr.size,
        xattrs,
        path: path.to_string(),
    })
}

fn read_xattrs(fs: &Fs, ino: u64) -> keelfs_fs::error::FsResult<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for name in fs.listxattr(ino)? {
        let value = fs.getxattr(ino, &name)?;
        out.insert(text(&name), value);
    }
    Ok(out)
}
