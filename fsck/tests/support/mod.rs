//! Shared helpers of the fsck tests: image files formatted with mkfs,
//! filesystems populated through the `Fs` API (files, directories,
//! symlinks, hard links, xattrs, sparse files), raw access to one block of
//! one leg (to damage it), finding where a structure lives, and running
//! fsck as a library or as the program.

#![allow(dead_code)]

use keelfs_engine::device::{DeviceRef, FileDevice};
use keelfs_engine::integrity::{meta_seal, Tag};
use keelfs_fs::core::{Caller, Fs, MountParams};
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::{
    DataArea, DirLeaf, DirNode, ExtentNode, Inode, InodeSlot, Layout, Superblock, META_HEADER_LEN,
};
use keelfs_fs::mkfs::{format, MkfsOptions};
use keelfs_fs::xattr;
use keelfs_fsck::{fsck_paths, Options, Outcome};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;

/// The legs of one filesystem: image files in a temporary directory.
pub struct Image {
    pub dir: tempfile::TempDir,
    pub paths: Vec<PathBuf>,
    pub block_size: u64,
}

impl Image {
    /// `legs` sparse images of `size` bytes, formatted with block size `bs`.
    pub fn new(legs: usize, size: u64, bs: u32) -> Image {
        Image::with_options(
            legs,
            size,
            &MkfsOptions {
                block_size: bs,
                ..MkfsOptions::default()
            },
        )
    }

    /// `legs` sparse images of `size` bytes, formatted with `opts`.
    pub fn with_options(legs: usize, size: u64, opts: &MkfsOptions) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = (0..legs)
            .map(|i| dir.path().join(format!("leg{i}.img")))
            .collect();
        let devices: Vec<DeviceRef> = paths
            .iter()
            .map(|p| Arc::new(FileDevice::create_image(p, size).unwrap()) as DeviceRef)
            .collect();
        format(&devices, opts).expect("mkfs");
        Image {
            dir,
            paths,
            block_size: u64::from(opts.block_size),
        }
    }

    /// The devices, opened (and locked) afresh. (Tests run in threads of
    /// one process: a program another test starts holds copies of every
    /// descriptor, locks included, until it execs; so the lock is waited
    /// for.)
    pub fn devices(&self) -> Vec<DeviceRef> {
        let opts = keelfs_engine::device::FileOpenOptions {
            read_only: false,
            lock: true,
            wait_for_lock: true,
        };
        self.paths
            .iter()
            .map(|p| Arc::new(FileDevice::open_with(p, opts).unwrap()) as DeviceRef)
            .collect()
    }

    /// Mounts it (no background threads).
    pub fn mount(&self) -> Fs {
        let params = MountParams {
            background_writeback: false,
            ..MountParams::default()
        };
        Fs::mount(self.devices(), &params).expect("mount")
    }

    /// fsck -n -f.
    pub fn check(&self) -> Outcome {
        fsck_paths(&self.paths, &Options::check())
    }

    /// fsck -y -f.
    pub fn repair(&self) -> Outcome {
        fsck_paths(&self.paths, &Options::repair())
    }

    /// The superblock (authoritative) and layout.
    pub fn superblock(&self) -> Superblock {
        let set = keelfs_fs::devset::identify(&self.devices()).unwrap();
        set.superblock().clone()
    }

    pub fn layout(&self) -> Layout {
        self.superblock().layout
    }

    /// Every leg's whole content.
    pub fn contents(&self) -> Vec<Vec<u8>> {
        self.paths
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    /// Block `block` of leg `leg`.
    pub fn read_block(&self, leg: usize, block: u64) -> Vec<u8> {
        let f = std::fs::File::open(&self.paths[leg]).unwrap();
        let mut buf = vec![0u8; self.block_size as usize];
        f.read_exact_at(&mut buf, block * self.block_size).unwrap();
        buf
    }

    /// Overwrites block `block` of leg `leg`.
    pub fn write_block(&self, leg: usize, block: u64, data: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.paths[leg])
            .unwrap();
        f.write_all_at(data, block * self.block_size).unwrap();
    }

    /// Flips bytes in the middle of block `block` on leg `leg` (a checksum
    /// no longer matches).
    pub fn damage(&self, leg: usize, block: u64) {
        let mut b = self.read_block(leg, block);
        let at = b.len() / 2 + 7;
        for x in &mut b[at..at + 4] {
            *x ^= 0x5a;
        }
        self.write_block(leg, block, &b);
    }

    /// Damages `block` on every leg.
    pub fn damage_all(&self, block: u64) {
        for leg in 0..self.paths.len() {
            self.damage(leg, block);
        }
    }

    /// Rewrites metadata block `block` on every leg after `change` edits it,
    /// resealed so that its tag stays valid (logical damage).
    pub fn edit_meta(&self, block: u64, change: impl Fn(&mut Vec<u8>)) {
        let uuid = self.superblock().fs_uuid;
        for leg in 0..self.paths.len() {
            let mut b = self.read_block(leg, block);
            change(&mut b);
            meta_seal(block, &uuid, &mut b);
            self.write_block(leg, block, &b);
        }
    }

    /// Rewrites inode `ino` (valid tags) after `change` edits it.
    pub fn edit_inode(&self, ino: u64, change: impl Fn(&mut Inode)) {
        let at = self.layout().inode_location(ino).unwrap();
        self.edit_meta(at.block, |b| {
            let slot = &mut b[META_HEADER_LEN + at.offset..META_HEADER_LEN + at.offset + 256];
            let InodeSlot::Used(mut inode) = InodeSlot::decode(slot).unwrap() else {
                panic!("inode {ino} is free");
            };
            change(&mut inode);
            inode.encode(slot).unwrap();
        });
    }

    /// Inode `ino` as leg 0 holds it.
    pub fn inode(&self, ino: u64) -> Inode {
        let at = self.layout().inode_location(ino).unwrap();
        let b = self.read_block(0, at.block);
        match InodeSlot::decode(&b[META_HEADER_LEN + at.offset..][..256]).unwrap() {
            InodeSlot::Used(i) => i,
            InodeSlot::Free { .. } => panic!("inode {ino} is free"),
        }
    }

    /// Runs the fsck.keelfs program with `args` then the legs.
    pub fn run(&self, args: &[&str]) -> Output {
        fsck_program()
            .args(args)
            .args(&self.paths)
            .output()
            .unwrap()
    }
}

/// The fsck.keelfs program (built as `fsck-keelfs`).
pub fn fsck_program() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fsck-keelfs"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ---- building trees through the Fs API ------------------------------------

/// Namespace operations on a mounted `Fs` (its own: mkdir, mknod, symlink,
/// link, unlink, setxattr), as root, each committed.
pub struct Tree<'f> {
    pub fs: &'f Fs,
}

impl<'f> Tree<'f> {
    pub fn new(fs: &'f Fs) -> Tree<'f> {
        Tree { fs }
    }

    /// mkdir `name` in `parent`.
    pub fn mkdir(&self, parent: u64, name: &str) -> u64 {
        let attr = self
            .fs
            .mkdir(parent, name.as_bytes(), 0o755, Caller::ROOT)
            .unwrap();
        self.fs.journal().commit().unwrap();
        attr.ino
    }

    /// A regular file `name` in `parent` holding `data`.
    pub fn file(&self, parent: u64, name: &str, data: &[u8]) -> u64 {
        let ino = self.node(parent, name, 0o100_644);
        if !data.is_empty() {
            self.fs.write(ino, 0, data).unwrap();
        }
        self.fs.journal().commit().unwrap();
        ino
    }

    /// A node of `mode` (file, fifo, socket, device) named `name`.
    pub fn node(&self, parent: u64, name: &str, mode: u32) -> u64 {
        let rdev = if mode & 0o170_000 == 0o020_000 {
            0x0103
        } else {
            0
        };
        let attr = self
            .fs
            .mknod(parent, name.as_bytes(), mode, rdev, Caller::ROOT)
            .unwrap();
        self.fs.journal().commit().unwrap();
        attr.ino
    }

    /// A symlink `name` → `target`.
    pub fn symlink(&self, parent: u64, name: &str, target: &str) -> u64 {
        let attr = self
            .fs
            .symlink(parent, name.as_bytes(), target.as_bytes(), Caller::ROOT)
            .unwrap();
        self.fs.journal().commit().unwrap();
        attr.ino
    }

    /// A hard link `name` in `parent` to `ino`.
    pub fn link(&self, parent: u64, name: &str, ino: u64) {
        self.fs.link(ino, parent, name.as_bytes()).unwrap();
        self.fs.journal().commit().unwrap();
    }

    /// Removes `name` from `parent` (an open file whose last link goes is
    /// put on the orphan list).
    pub fn unlink(&self, parent: u64, name: &str) {
        self.fs
            .unlink(parent, name.as_bytes(), Caller::ROOT)
            .unwrap();
        self.fs.journal().commit().unwrap();
    }

    /// Sets xattr `name` of `ino`.
    pub fn setxattr(&self, ino: u64, name: &str, value: &[u8]) {
        self.fs.setxattr(ino, name.as_bytes(), value, 0).unwrap();
        self.fs.journal().commit().unwrap();
    }
}

/// What a populated image holds, to find and to compare.
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// (path, inode, content) of every regular file written.
    pub files: Vec<(String, u64, Vec<u8>)>,
    /// Directory inodes: a small one, a big one (nodes above its leaves).
    pub small_dir: u64,
    pub big_dir: u64,
    /// A file with an extent tree of depth ≥ 1.
    pub fragmented: u64,
    /// A sparse file.
    pub sparse: u64,
    /// A symlink with an overflow block, and its target.
    pub long_link: u64,
    pub long_target: String,
    /// A file with xattrs in a chain of blocks, and one of them.
    pub xattr_file: u64,
    pub xattr_value: Vec<u8>,
}

/// Populates a mounted filesystem: directories (one big enough for
/// nodes), files of several sizes, a sparse file, a fragmented file (an
/// extent tree with index blocks), inline and long symlinks, a hard link,
/// special files, xattrs spanning several blocks.
pub fn populate(fs: &Fs) -> Population {
    let t = Tree::new(fs);
    let bs = fs.block_size() as usize;
    let mut p = Population::default();
    let docs = t.mkdir(ROOT_INODE, "docs");
    p.small_dir = docs;
    for (i, len) in [0usize, 100, 5000, 3 * bs + 17].into_iter().enumerate() {
        let name = format!("f{i}");
        let data = pattern(i as u64 + 1, len);
        let ino = t.file(docs, &name, &data);
        p.files.push((format!("docs/{name}"), ino, data));
    }
    let big = t.mkdir(ROOT_INODE, "big");
    p.big_dir = big;
    let names = 2 * bs / 20 + 60;
    for i in 0..names {
        let ino = t.node(big, &format!("entry-number-{i:05}"), 0o100_600);
        if i % 50 == 0 {
            let data = pattern(1000 + i as u64, 300);
            fs.write(ino, 0, &data).unwrap();
            p.files
                .push((format!("big/entry-number-{i:05}"), ino, data));
        }
    }
    fs.journal().commit().unwrap();
    // A fragmented file: data in every other block, holes between, so
    // every block is an extent of its own: more than the root's 5, and with
    // 1 KiB blocks more than a leaf block holds.
    let frag = t.file(ROOT_INODE, "fragmented", &[]);
    let blocks = 100;
    let mut frag_data = vec![0u8; (2 * blocks - 1) * bs];
    for i in 0..blocks {
        let chunk = pattern(5000 + i as u64, bs);
        fs.write(frag, (2 * i * bs) as u64, &chunk).unwrap();
        frag_data[2 * i * bs..(2 * i + 1) * bs].copy_from_slice(&chunk);
    }
    fs.journal().commit().unwrap();
    p.fragmented = frag;
    p.files.push(("fragmented".into(), frag, frag_data));
    // Sparse: a block at 0 and one far away.
    let sparse = t.file(ROOT_INODE, "sparse", b"start");
    fs.write(sparse, 200 * bs as u64, b"far away").unwrap();
    let mut sparse_data = vec![0u8; 200 * bs + 8];
    sparse_data[..5].copy_from_slice(b"start");
    sparse_data[200 * bs..].copy_from_slice(b"far away");
    p.sparse = sparse;
    p.files.push(("sparse".into(), sparse, sparse_data));
    // Symlinks.
    t.symlink(ROOT_INODE, "short-link", "docs/f1");
    let long_target = "d/".repeat(300) + "end";
    p.long_link = t.symlink(ROOT_INODE, "long-link", &long_target);
    p.long_target = long_target;
    // A hard link.
    let linked = p.files[2].1;
    t.link(ROOT_INODE, "hard-link", linked);
    // Special files.
    t.node(docs, "fifo", 0o010_644);
    t.node(docs, "socket", 0o140_644);
    t.node(docs, "chardev", 0o020_644);
    // Xattrs over several blocks.
    let xf = p.files[1].1;
    let value = pattern(77, bs + bs / 2);
    t.setxattr(xf, "user.small", b"v");
    t.setxattr(xf, "user.big", &value);
    p.xattr_file = xf;
    p.xattr_value = value;
    fs.journal().commit().unwrap();
    p
}

/// Reads a whole file.
pub fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let size = fs.getattr(ino).unwrap().size;
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let chunk = fs.read(ino, out.len() as u64, 1 << 20).unwrap();
        assert!(!chunk.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// Checks every file of `p` reads back as written, the links and xattrs.
pub fn verify_population(fs: &Fs, p: &Population) {
    for (path, ino, data) in &p.files {
        let got = read_all(fs, *ino);
        assert!(got == *data, "{path} (inode {ino}) reads back differently");
    }
    assert_eq!(fs.readlink(p.long_link).unwrap(), p.long_target.as_bytes());
    let cell = fs.inode(p.xattr_file).unwrap();
    let chain = cell.read().xattr;
    assert_eq!(
        xattr::get(fs.cache(), chain, b"user.big").unwrap(),
        p.xattr_value
    );
}

// ---- where things are ------------------------------------------------------

/// The blocks of a directory's tree: (leaves, nodes).
pub fn dir_blocks(img: &Image, ino: u64) -> (Vec<u64>, Vec<u64>) {
    let DataArea::Directory(root) = img.inode(ino).data else {
        panic!("{ino} is not a directory");
    };
    let mut leaves = Vec::new();
    let mut nodes = Vec::new();
    let Some(r) = root.root else {
        return (leaves, nodes);
    };
    let mut stack = vec![(r.block, root.depth)];
    while let Some((block, level)) = stack.pop() {
        let b = img.read_block(0, block);
        if level == 0 {
            DirLeaf::decode(&b[META_HEADER_LEN..]).unwrap();
            leaves.push(block);
        } else {
            let node = DirNode::decode(&b[META_HEADER_LEN..]).unwrap();
            nodes.push(block);
            for e in node.entries {
                stack.push((e.child.block, level - 1));
            }
        }
    }
    (leaves, nodes)
}

/// The extent node blocks and the (physical) data blocks of a file.
pub fn file_blocks(img: &Image, ino: u64) -> (Vec<u64>, Vec<u64>) {
    let DataArea::Extents(root) = img.inode(ino).data else {
        panic!("{ino} has no extents");
    };
    let mut nodes = Vec::new();
    let mut data = Vec::new();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        match node {
            ExtentNode::Leaf(entries) => {
                for e in entries {
                    data.extend(e.physical..e.physical + u64::from(e.length));
                }
            }
            ExtentNode::Index { entries, .. } => {
                for e in entries {
                    nodes.push(e.child.block);
                    let b = img.read_block(0, e.child.block);
                    stack.push(ExtentNode::decode_block(&b[META_HEADER_LEN..]).unwrap());
                }
            }
        }
    }
    (nodes, data)
}

/// The xattr chain blocks of an inode.
pub fn xattr_blocks(img: &Image, ino: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut next = img.inode(ino).xattr;
    while let Some(r) = next {
        out.push(r.block);
        let b = img.read_block(0, r.block);
        next = keelfs_fs::format::xattr::decode_xattr_block(&b[META_HEADER_LEN..])
            .unwrap()
            .0;
    }
    out
}

/// The tag of data block `block` as leg 0's tag table holds it.
pub fn tag_of(img: &Image, block: u64) -> Tag {
    let at = img.layout().tag_location(block).unwrap();
    let b = img.read_block(0, at.block);
    keelfs_fs::format::tag_table::read_tag(&b[META_HEADER_LEN..], at.offset).unwrap()
}

/// The path of a test image directory, for messages.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}

// ---- one populated image, copied for each test -------------------------------

struct Template {
    _dir: tempfile::TempDir,
    paths: Vec<PathBuf>,
    population: Population,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let img = Image::new(2, 16 * MIB, 4096);
        let fs = img.mount();
        let population = populate(&fs);
        fs.unmount().unwrap();
        let Image { dir, paths, .. } = img;
        Template {
            _dir: dir,
            paths,
            population,
        }
    })
}

/// A fresh copy of one populated 2-leg image with 4 KiB blocks (built once
/// per test program through the `Fs` API), and what it holds.
pub fn fresh_populated() -> (Image, Population) {
    let t = template();
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = t
        .paths
        .iter()
        .map(|p| {
            let to = dir.path().join(p.file_name().unwrap());
            std::fs::copy(p, &to).unwrap();
            to
        })
        .collect();
    (
        Image {
            dir,
            paths,
            block_size: 4096,
        },
        t.population.clone(),
    )
}

/// The (name, inode) entries of directory `ino`, as leg 0 holds them.
pub fn dir_entries(img: &Image, ino: u64) -> Vec<(String, u64)> {
    let (leaves, _) = dir_blocks(img, ino);
    let mut out = Vec::new();
    for block in leaves {
        let b = img.read_block(0, block);
        for e in DirLeaf::decode(&b[META_HEADER_LEN..]).unwrap().entries {
            out.push((String::from_utf8_lossy(&e.name).into_owned(), e.inode));
        }
    }
    out
}

/// Rewrites the root leaf of directory `ino` (depth 0) after `change`
/// edits it, its tag kept valid, and the entry count in the inode to match.
pub fn edit_root_leaf(img: &Image, ino: u64, change: impl Fn(&mut DirLeaf)) {
    let DataArea::Directory(root) = img.inode(ino).data else {
        panic!("{ino} is not a directory");
    };
    assert_eq!(root.depth, 0, "directory {ino} is not a single leaf");
    let block = root.root.unwrap().block;
    let count = std::cell::Cell::new(0u64);
    img.edit_meta(block, |b| {
        let mut leaf = DirLeaf::decode(&b[META_HEADER_LEN..]).unwrap();
        change(&mut leaf);
        count.set(leaf.entries.len() as u64);
        leaf.encode(&mut b[META_HEADER_LEN..]).unwrap();
    });
    img.edit_inode(ino, |i| {
        if let DataArea::Directory(r) = &mut i.data {
            r.entry_count = count.get();
        }
    });
}
