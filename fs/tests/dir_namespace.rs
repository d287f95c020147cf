//! Namespace operations through the `Fs` API on image files: lookup,
//! mknod of every type, mkdir, symlink/readlink, link, unlink, rmdir with
//! their error codes, link counts and times, the sticky bit, setgid
//! directories, readdir and readdirplus, extended attributes, and a
//! remount that shows everything again.

mod core_support;

use core_support::{opts, Legs, MIB};
use keelfs_fs::core::{Caller, DirListEntry, FileAttr, Fs, LINK_MAX};
use keelfs_fs::error::FsError;
use keelfs_fs::format::superblock::{LOST_FOUND_INODE, ROOT_INODE};
use keelfs_fs::format::FileType;
use std::collections::BTreeMap;

const ROOT: u64 = ROOT_INODE;
const ME: Caller = Caller::ROOT;

fn image_legs(dir: &tempfile::TempDir) -> Legs {
    Legs::images(dir.path(), 2, 32 * MIB, &opts(4096))
}

/// Every entry of a listing from offset 0, in order.
fn list(fs: &Fs, ino: u64) -> Vec<DirListEntry> {
    let mut out = Vec::new();
    fs.readdir(ino, 0, |e| {
        out.push(e.clone());
        true
    })
    .unwrap();
    out
}

/// Name → (inode, type).
type Names = BTreeMap<Vec<u8>, (u64, FileType)>;

/// The names of a directory, without "." and "..".
fn names(fs: &Fs, ino: u64) -> Names {
    list(fs, ino)
        .into_iter()
        .skip(2)
        .map(|e| (e.name, (e.ino, e.kind)))
        .collect()
}

fn err<T: std::fmt::Debug>(r: Result<T, FsError>) -> FsError {
    r.expect_err("an error")
}

#[test]
fn mknod_makes_every_type() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let cases: [(&[u8], u32, u64, FileType); 6] = [
        (b"file", 0o100_640, 0, FileType::Regular),
        (b"untyped", 0o600, 0, FileType::Regular),
        (b"fifo", 0o010_644, 0, FileType::Fifo),
        (b"sock", 0o140_755, 0, FileType::Socket),
        (b"chr", 0o020_600, 0x0501, FileType::CharDevice),
        (b"blk", 0o060_660, 0x0803, FileType::BlockDevice),
    ];
    let who = Caller::new(1000, 100);
    for (name, mode, rdev, kind) in cases {
        let a = fs.mknod(ROOT, name, mode, rdev, who).unwrap();
        assert_eq!(a.kind, kind, "{name:?}");
        assert_eq!(u32::from(a.perm), mode & 0o7777);
        assert_eq!(a.rdev, rdev);
        assert_eq!((a.uid, a.gid, a.nlink), (1000, 100, 1));
        assert_eq!(fs.lookup(ROOT, name).unwrap(), a);
    }
    assert!(matches!(
        err(fs.mknod(ROOT, b"d", 0o040_755, 0, ME)),
        FsError::NotPermitted
    ));
    assert!(matches!(
        err(fs.mknod(ROOT, b"l", 0o120_777, 0, ME)),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(fs.mknod(ROOT, b"file", 0o100_644, 0, ME)),
        FsError::Exists
    ));
    assert!(matches!(
        err(fs.mknod(ROOT, b"a/b", 0o100_644, 0, ME)),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(fs.mknod(ROOT, &[b'x'; 256], 0o100_644, 0, ME)),
        FsError::NameTooLong
    ));
    let file = fs.lookup(ROOT, b"file").unwrap().ino;
    assert!(matches!(
        err(fs.mknod(file, b"x", 0o100_644, 0, ME)),
        FsError::NotDir
    ));
    assert!(matches!(err(fs.lookup(file, b"x")), FsError::NotDir));
    assert!(matches!(err(fs.lookup(ROOT, b"nope")), FsError::NotFound));
    // readdir reports the types.
    let listed = names(&fs, ROOT);
    for (name, _, _, kind) in cases {
        assert_eq!(listed[name].1, kind);
    }
    assert_eq!(
        listed[&b"lost+found"[..]],
        (LOST_FOUND_INODE, FileType::Directory)
    );
    fs.unmount().unwrap();
}

#[test]
fn mkdir_counts_links_and_sets_times() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let root_before = fs.getattr(ROOT).unwrap();
    assert_eq!(root_before.nlink, 3); // ".", "..", lost+found's ".."
    let a = fs.mkdir(ROOT, b"a", 0o755, ME).unwrap();
    assert_eq!((a.kind, a.nlink, a.perm), (FileType::Directory, 2, 0o755));
    let root = fs.getattr(ROOT).unwrap();
    assert_eq!(root.nlink, 4);
    assert_eq!(root.mtime, a.ctime);
    assert_eq!(root.ctime, a.ctime);
    assert!(root.mtime >= root_before.mtime);
    let b = fs.mkdir(a.ino, b"b", 0o700, ME).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, 3);
    assert_eq!(fs.lookup(b.ino, b"..").unwrap().ino, a.ino);
    assert_eq!(fs.lookup(b.ino, b".").unwrap().ino, b.ino);
    assert_eq!(fs.lookup(ROOT, b"..").unwrap().ino, ROOT);
    assert!(matches!(
        err(fs.mkdir(ROOT, b"a", 0o755, ME)),
        FsError::Exists
    ));
    // An empty directory holds no block; one name gives it one.
    assert_eq!((b.size, b.blocks), (0, 0));
    fs.mknod(b.ino, b"f", 0o644, 0, ME).unwrap();
    let b = fs.getattr(b.ino).unwrap();
    assert_eq!((b.size, b.blocks), (4096, 8));
    fs.unmount().unwrap();
}

#[test]
fn setgid_directories_hand_down_their_group() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let user = Caller::new(1000, 1000);
    let shared = fs.mkdir(ROOT, b"shared", 0o2775, user).unwrap();
    fs.setattr(
        shared.ino,
        &keelfs_fs::core::SetAttr {
            gid: Some(50),
            ..Default::default()
        },
    )
    .unwrap();
    let f = fs.mknod(shared.ino, b"f", 0o644, 0, user).unwrap();
    assert_eq!((f.uid, f.gid), (1000, 50));
    let d = fs.mkdir(shared.ino, b"d", 0o755, user).unwrap();
    assert_eq!((d.gid, d.perm), (50, 0o2755));
    let plain = fs.mkdir(ROOT, b"plain", 0o755, user).unwrap();
    assert_eq!(fs.mknod(plain.ino, b"f", 0o644, 0, user).unwrap().gid, 1000);
    fs.unmount().unwrap();
}

#[test]
fn symlinks_inline_and_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let short = b"../target".to_vec();
    let long: Vec<u8> = (0..3000).map(|i| b'a' + (i % 26) as u8).collect();
    let s = fs.symlink(ROOT, b"short", &short, ME).unwrap();
    let l = fs.symlink(ROOT, b"long", &long, ME).unwrap();
    assert_eq!((s.kind, s.size, s.perm), (FileType::Symlink, 9, 0o777));
    assert_eq!(l.size, 3000);
    assert_eq!(fs.readlink(s.ino).unwrap(), short);
    assert_eq!(fs.readlink(l.ino).unwrap(), long);
    assert!(matches!(
        err(fs.symlink(ROOT, b"too-long", &vec![b'x'; 4096], ME)),
        FsError::NameTooLong
    ));
    assert!(matches!(
        err(fs.symlink(ROOT, b"empty", b"", ME)),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(fs.symlink(ROOT, b"short", b"x", ME)),
        FsError::Exists
    ));
    assert_eq!(names(&fs, ROOT)[&b"long"[..]], (l.ino, FileType::Symlink));
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(fs.readlink(l.ino).unwrap(), long);
    fs.unmount().unwrap();
}

#[test]
fn hard_links_across_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, ME).unwrap().ino;
    let b = fs.mkdir(ROOT, b"b", 0o755, ME).unwrap().ino;
    let f = fs.mknod(a, b"f", 0o644, 0, ME).unwrap();
    fs.write(f.ino, 0, b"shared bytes").unwrap();
    let linked = fs.link(f.ino, b, b"g").unwrap();
    assert_eq!(linked.nlink, 2);
    assert!(linked.ctime >= f.ctime);
    assert_eq!(fs.lookup(b, b"g").unwrap().ino, f.ino);
    fs.link(f.ino, ROOT, b"h").unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, 3);
    assert!(matches!(err(fs.link(f.ino, b, b"g")), FsError::Exists));
    assert!(matches!(
        err(fs.link(a, b, b"dirlink")),
        FsError::NotPermitted
    ));
    assert!(matches!(err(fs.link(f.ino, f.ino, b"x")), FsError::NotDir));
    // Links of a directory do not change with hard links of files.
    assert_eq!(fs.getattr(b).unwrap().nlink, 2);
    fs.unlink(a, b"f", ME).unwrap();
    fs.unlink(ROOT, b"h", ME).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, 1);
    assert_eq!(fs.read(f.ino, 0, 100).unwrap(), b"shared bytes");
    assert!(matches!(err(fs.lookup(a, b"f")), FsError::NotFound));
    fs.unmount().unwrap();
    let fs = legs.mount();
    let g = fs.lookup(b, b"g").unwrap();
    assert_eq!((g.ino, g.nlink), (f.ino, 1));
    assert_eq!(fs.read(g.ino, 0, 100).unwrap(), b"shared bytes");
    fs.unmount().unwrap();
}

#[test]
fn link_count_limit() {
    let legs = Legs::mem(1, 64 * MIB, &opts(4096));
    let fs = legs.mount();
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).unwrap().ino;
    let f = fs.mknod(d, b"f", 0o644, 0, ME).unwrap().ino;
    for i in 1..LINK_MAX {
        fs.link(f, d, format!("l{i}").as_bytes()).unwrap();
    }
    assert_eq!(fs.getattr(f).unwrap().nlink, LINK_MAX);
    assert!(matches!(
        err(fs.link(f, d, b"one-more")),
        FsError::TooManyLinks
    ));
    fs.unlink(d, b"l1", ME).unwrap();
    fs.link(f, d, b"one-more").unwrap();
    fs.unmount().unwrap();
}

#[test]
fn unlink_and_rmdir_errors_and_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let free_before = fs.statfs().unwrap();
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).unwrap().ino;
    let sub = fs.mkdir(d, b"sub", 0o755, ME).unwrap().ino;
    let f = fs.mknod(d, b"f", 0o644, 0, ME).unwrap().ino;
    assert!(matches!(err(fs.unlink(d, b"sub", ME)), FsError::IsDir));
    assert!(matches!(err(fs.rmdir(d, b"f", ME)), FsError::NotDir));
    assert!(matches!(err(fs.rmdir(ROOT, b"d", ME)), FsError::NotEmpty));
    assert!(matches!(err(fs.rmdir(d, b".", ME)), FsError::Invalid(_)));
    assert!(matches!(err(fs.rmdir(d, b"..", ME)), FsError::NotEmpty));
    assert!(matches!(err(fs.unlink(d, b"nope", ME)), FsError::NotFound));
    assert!(matches!(err(fs.rmdir(d, b"nope", ME)), FsError::NotFound));
    assert!(matches!(err(fs.unlink(f, b"x", ME)), FsError::NotDir));
    let before = fs.getattr(d).unwrap();
    assert_eq!(before.nlink, 3);
    fs.rmdir(d, b"sub", ME).unwrap();
    let after = fs.getattr(d).unwrap();
    assert_eq!(after.nlink, 2);
    assert!(after.mtime >= before.mtime && after.ctime >= before.ctime);
    // The kernel still knows `sub` (mkdir counted a lookup): it lives on,
    // with no links, and nothing can be created in it.
    let gone = fs.getattr(sub).unwrap();
    assert_eq!(gone.nlink, 0);
    assert!(matches!(
        err(fs.mknod(sub, b"x", 0o644, 0, ME)),
        FsError::NotFound
    ));
    fs.forget(sub, 1).unwrap();
    assert!(matches!(err(fs.getattr(sub)), FsError::Stale));
    fs.unlink(d, b"f", ME).unwrap();
    fs.forget(f, 1).unwrap();
    assert!(matches!(err(fs.getattr(f)), FsError::Stale));
    fs.rmdir(ROOT, b"d", ME).unwrap();
    fs.forget(d, 1).unwrap();
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 3);
    // Everything given back.
    let free_after = fs.statfs().unwrap();
    assert_eq!(free_after.bfree, free_before.bfree);
    assert_eq!(free_after.ffree, free_before.ffree);
    fs.unmount().unwrap();
}

#[test]
fn an_open_unlinked_file_lives_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let f = fs.mknod(ROOT, b"f", 0o644, 0, ME).unwrap().ino;
    fs.write(f, 0, b"still here").unwrap();
    fs.open(f).unwrap();
    fs.forget(f, 1).unwrap();
    fs.unlink(ROOT, b"f", ME).unwrap();
    assert_eq!(fs.read(f, 0, 100).unwrap(), b"still here");
    assert_eq!(fs.getattr(f).unwrap().nlink, 0);
    fs.release(f).unwrap();
    assert!(matches!(err(fs.getattr(f)), FsError::Stale));
    fs.unmount().unwrap();
}

#[test]
fn the_sticky_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let owner = Caller::new(1, 1);
    let alice = Caller::new(2, 2);
    let bob = Caller::new(3, 3);
    let tmpdir = fs.mkdir(ROOT, b"tmp", 0o1777, owner).unwrap().ino;
    for n in [&b"a1"[..], b"a2", b"a3", b"a4", b"a5"] {
        fs.mknod(tmpdir, n, 0o644, 0, alice).unwrap();
    }
    let alices_dir = fs.mkdir(tmpdir, b"adir", 0o755, alice).unwrap().ino;
    assert!(alices_dir > 0);
    assert!(matches!(
        err(fs.unlink(tmpdir, b"a1", bob)),
        FsError::NotPermitted
    ));
    assert!(matches!(
        err(fs.rmdir(tmpdir, b"adir", bob)),
        FsError::NotPermitted
    ));
    assert!(matches!(
        err(fs.rename(tmpdir, b"a1", tmpdir, b"mine", 0, bob)),
        FsError::NotPermitted
    ));
    // Bob's own file may not replace Alice's either.
    fs.mknod(tmpdir, b"b1", 0o644, 0, bob).unwrap();
    assert!(matches!(
        err(fs.rename(tmpdir, b"b1", tmpdir, b"a2", 0, bob)),
        FsError::NotPermitted
    ));
    fs.unlink(tmpdir, b"a1", alice).unwrap();
    fs.unlink(tmpdir, b"a2", owner).unwrap();
    fs.unlink(tmpdir, b"a3", Caller::ROOT).unwrap();
    fs.rename(tmpdir, b"a4", tmpdir, b"a4-renamed", 0, alice)
        .unwrap();
    fs.rmdir(tmpdir, b"adir", alice).unwrap();
    // Without the sticky bit anyone may.
    let open = fs.mkdir(ROOT, b"open", 0o777, owner).unwrap().ino;
    fs.mknod(open, b"a", 0o644, 0, alice).unwrap();
    fs.unlink(open, b"a", bob).unwrap();
    fs.unmount().unwrap();
}

#[test]
fn readdir_offsets_and_readdirplus() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).unwrap().ino;
    let mut made = BTreeMap::new();
    for i in 0..300u32 {
        let name = format!("n{i:03}").into_bytes();
        let a = if i % 10 == 0 {
            fs.mkdir(d, &name, 0o755, ME).unwrap()
        } else {
            fs.mknod(d, &name, 0o644, 0, ME).unwrap()
        };
        made.insert(name, (a.ino, a.kind));
    }
    let all = list(&fs, d);
    assert_eq!(all.len(), 302);
    assert_eq!(
        (
            &all[0].name[..],
            all[0].ino,
            all[0].kind,
            all[0].next_offset
        ),
        (&b"."[..], d, FileType::Directory, 1)
    );
    assert_eq!(
        (
            &all[1].name[..],
            all[1].ino,
            all[1].kind,
            all[1].next_offset
        ),
        (&b".."[..], ROOT, FileType::Directory, 2)
    );
    assert_eq!(names(&fs, d), made);
    assert_eq!(fs.getattr(d).unwrap().nlink, 2 + 30);
    // Resuming at each offset gives the rest.
    for cut in [0usize, 1, 2, 150, 301] {
        let mut rest = Vec::new();
        fs.readdir(d, all[cut].next_offset, |e| {
            rest.push(e.name.clone());
            true
        })
        .unwrap();
        let want: Vec<Vec<u8>> = all[cut + 1..].iter().map(|e| e.name.clone()).collect();
        assert_eq!(rest, want, "after entry {cut}");
    }
    // A callback that stops: the entry refused is the first of the next call.
    let mut first = Vec::new();
    let mut offset = 0;
    fs.readdir(d, 0, |e| {
        if first.len() == 5 {
            return false;
        }
        first.push(e.name.clone());
        offset = e.next_offset;
        true
    })
    .unwrap();
    let mut next = None;
    fs.readdir(d, offset, |e| {
        next = Some(e.name.clone());
        false
    })
    .unwrap();
    assert_eq!(next.as_ref(), Some(&all[5].name));
    // readdirplus: attributes, and a lookup counted per entry taken.
    let mut plus: Vec<(DirListEntry, FileAttr)> = Vec::new();
    fs.readdirplus(d, 0, |e, a| {
        plus.push((e.clone(), a.clone()));
        true
    })
    .unwrap();
    assert_eq!(plus.len(), 302);
    assert_eq!(plus[0].1.ino, d);
    assert_eq!(plus[1].1.ino, ROOT);
    for (e, a) in &plus[2..] {
        assert_eq!((a.ino, a.kind), (e.ino, e.kind));
        assert_eq!(a, &fs.getattr(e.ino).unwrap());
    }
    // Each file was counted by mknod and by readdirplus: two forgets free
    // an unlinked one, one does not.
    let (e, _) = &plus[3];
    fs.unlink(d, &e.name, ME).ok();
    fs.rmdir(d, &e.name, ME).ok();
    fs.forget(e.ino, 1).unwrap();
    assert!(fs.getattr(e.ino).is_ok());
    fs.forget(e.ino, 1).unwrap();
    assert!(matches!(err(fs.getattr(e.ino)), FsError::Stale));
    let file = plus[2..]
        .iter()
        .find(|(e, _)| e.kind == FileType::Regular)
        .unwrap()
        .0
        .ino;
    assert!(matches!(
        err(fs.readdir(file, 0, |_| true)),
        FsError::NotDir
    ));
    fs.unmount().unwrap();
}

#[test]
fn xattrs_through_the_fs() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let f = fs.mknod(ROOT, b"f", 0o644, 0, ME).unwrap();
    // A valid POSIX ACL the mode bits cannot say (a named user), so it is
    // stored: u::rw-, u:1000:r--, g::r--, m::r--, o::r--.
    let acl: Vec<u8> = [
        &[2u8, 0, 0, 0][..],
        &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff],
        &[2, 0, 4, 0, 0xe8, 0x03, 0, 0],
        &[4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
        &[0x10, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
        &[0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff],
    ]
    .concat();
    fs.setxattr(f.ino, b"user.color", b"blue", 0).unwrap();
    fs.setxattr(f.ino, b"system.posix_acl_access", &acl, 0)
        .unwrap();
    let big: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
    fs.setxattr(f.ino, b"trusted.big", &big, 0).unwrap();
    let a = fs.getattr(f.ino).unwrap();
    assert!(a.ctime >= f.ctime);
    // 65536 + entries, 4048 bytes of blob per block: 17 blocks of 8 sectors.
    assert_eq!(a.blocks, 17 * 8);
    assert!(matches!(
        err(fs.setxattr(f.ino, b"user.color", b"red", 1)),
        FsError::Exists
    ));
    assert!(matches!(
        err(fs.setxattr(f.ino, b"user.none", b"x", 2)),
        FsError::NoAttr
    ));
    assert!(matches!(
        err(fs.setxattr(f.ino, b"bogus.x", b"x", 0)),
        FsError::NotSupported
    ));
    assert!(matches!(
        err(fs.setxattr(f.ino, b"user.v", &vec![0; 65537], 0)),
        FsError::ValueTooLarge
    ));
    fs.setxattr(f.ino, b"user.color", b"red", 2).unwrap();
    // Directories have xattrs too (a default ACL).
    fs.setxattr(ROOT, b"system.posix_acl_default", &acl, 0)
        .unwrap();
    fs.unmount().unwrap();

    let fs = legs.mount();
    assert_eq!(fs.getxattr(f.ino, b"user.color").unwrap(), b"red");
    assert_eq!(fs.getxattr(f.ino, b"system.posix_acl_access").unwrap(), acl);
    assert_eq!(fs.getxattr(f.ino, b"trusted.big").unwrap(), big);
    assert_eq!(fs.getxattr(ROOT, b"system.posix_acl_default").unwrap(), acl);
    assert_eq!(
        fs.listxattr(f.ino).unwrap(),
        vec![
            b"user.color".to_vec(),
            b"system.posix_acl_access".to_vec(),
            b"trusted.big".to_vec()
        ]
    );
    fs.removexattr(f.ino, b"trusted.big").unwrap();
    assert!(matches!(
        err(fs.removexattr(f.ino, b"trusted.big")),
        FsError::NoAttr
    ));
    assert!(matches!(
        err(fs.getxattr(f.ino, b"trusted.big")),
        FsError::NoAttr
    ));
    assert_eq!(fs.getattr(f.ino).unwrap().blocks, 8);
    fs.removexattr(f.ino, b"user.color").unwrap();
    fs.removexattr(f.ino, b"system.posix_acl_access").unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().blocks, 0);
    assert!(fs.listxattr(f.ino).unwrap().is_empty());
    fs.unmount().unwrap();
}

#[test]
fn a_remount_shows_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = image_legs(&tmp);
    let fs = legs.mount();
    let mut expect: Vec<(u64, Names)> = Vec::new();
    let top = fs.mkdir(ROOT, b"top", 0o755, ME).unwrap().ino;
    let mut dirs = vec![top];
    for i in 0..20u32 {
        let d = fs
            .mkdir(
                dirs[i as usize / 4],
                format!("dir{i}").as_bytes(),
                0o755,
                ME,
            )
            .unwrap()
            .ino;
        dirs.push(d);
        for j in 0..50u32 {
            let name = format!("file-{i}-{j}");
            let ino = fs.mknod(d, name.as_bytes(), 0o644, 0, ME).unwrap().ino;
            if j % 7 == 0 {
                fs.write(ino, 0, name.as_bytes()).unwrap();
            }
        }
        fs.symlink(d, b"link", format!("../dir{i}").as_bytes(), ME)
            .unwrap();
    }
    for j in (0..50u32).step_by(3) {
        fs.unlink(dirs[3], format!("file-2-{j}").as_bytes(), ME)
            .unwrap();
    }
    let root_attr = fs.getattr(ROOT).unwrap();
    for &d in &dirs {
        expect.push((d, names(&fs, d)));
    }
    let attrs: Vec<FileAttr> = dirs.iter().map(|&d| fs.getattr(d).unwrap()).collect();
    fs.unmount().unwrap();

    let fs = legs.mount();
    assert_eq!(fs.getattr(ROOT).unwrap(), root_attr);
    for ((d, want), attr) in expect.iter().zip(&attrs) {
        assert_eq!(&names(&fs, *d), want);
        assert_eq!(&fs.getattr(*d).unwrap(), attr);
    }
    assert_eq!(fs.lookup(ROOT, b"top").unwrap().nlink, 2 + 4);
    let f = fs.lookup(dirs[1], b"file-0-7").unwrap();
    assert_eq!(fs.read(f.ino, 0, 100).unwrap(), b"file-0-7");
    let l = fs.lookup(dirs[5], b"link").unwrap();
    assert_eq!(fs.readlink(l.ino).unwrap(), b"../dir4");
    fs.unmount().unwrap();
}

#[test]
fn running_out_of_inodes_or_blocks_leaks_nothing() {
    let options = keelfs_fs::mkfs::MkfsOptions {
        inodes: keelfs_fs::format::layout::InodeSpec::Count(300),
        ..opts(1024)
    };
    let legs = Legs::mem(1, 8 * MIB, &options);
    let fs = legs.mount();
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).unwrap().ino;
    // Out of inodes: the name is not added.
    let mut made = 0;
    let e = loop {
        match fs.mknod(d, format!("file-{made}").as_bytes(), 0o644, 0, ME) {
            Ok(a) => {
                fs.forget(a.ino, 1).unwrap();
                made += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(e, FsError::NoSpace), "{e:?}");
    assert_eq!(fs.statfs().unwrap().ffree, 0);
    assert_eq!(names(&fs, d).len(), made);
    assert!(matches!(
        err(fs.lookup(d, format!("file-{made}").as_bytes())),
        FsError::NotFound
    ));
    // Free some inodes, then fill every block with file data: a name that
    // needs a new directory block fails, and its inode is given back.
    for i in 0..200 {
        fs.unlink(d, format!("file-{i}").as_bytes(), ME).unwrap();
    }
    // Freed inodes are handed out again once the freeing is committed.
    fs.journal().commit().unwrap();
    let big = fs.mknod(ROOT, b"big", 0o644, 0, ME).unwrap().ino;
    let mut offset = 0u64;
    for size in [256 * 1024, 1024] {
        let chunk = vec![0x5a; size];
        while let Ok(n) = fs.write(big, offset, &chunk) {
            offset += n as u64;
            if n < size {
                break;
            }
        }
    }
    assert!(fs.statfs().unwrap().bfree < 8);
    let ffree = fs.statfs().unwrap().ffree;
    assert!(ffree > 0);
    let mut failed = None;
    for i in 0..5000 {
        match fs.mknod(
            d,
            format!("long-name-to-fill-the-leaves-{i:05}").as_bytes(),
            0o644,
            0,
            ME,
        ) {
            Ok(a) => fs.forget(a.ino, 1).unwrap(),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    assert!(matches!(failed, Some(FsError::NoSpace)), "{failed:?}");
    let after = fs.statfs().unwrap();
    assert!(
        after.ffree > 0,
        "the failure was the blocks, not the inodes"
    );
    assert_eq!(
        ffree - after.ffree,
        names(&fs, d).len() as u64 - (made as u64 - 200),
        "every inode made is named"
    );
    fs.unmount().unwrap();
    let fs = legs.mount();
    let listed = names(&fs, d);
    for (name, (ino, _)) in &listed {
        assert_eq!(fs.lookup(d, name).unwrap().ino, *ino);
    }
    fs.unmount().unwrap();
}
