//! rename through the `Fs` API: file over file, directory over an empty
//! directory, the NotEmpty / NotDir / IsDir / Invalid rules, moving into
//! one's own subtree, RENAME_NOREPLACE and RENAME_EXCHANGE, ".." and link
//! counts of moved directories, names of one inode, and a remount; then
//! threads renaming directories back and forth across each other's
//! parents (with creates and removals on the side) without deadlocking.

mod core_support;

use core_support::{opts, Legs, MIB};
use keelfs_fs::core::{Caller, Fs, LINK_MAX, RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT};
use keelfs_fs::error::FsError;
use keelfs_fs::format::superblock::ROOT_INODE;
use keelfs_fs::format::FileType;
use std::sync::Arc;
use std::thread;

const ROOT: u64 = ROOT_INODE;
const ME: Caller = Caller::ROOT;

fn err<T: std::fmt::Debug>(r: Result<T, FsError>) -> FsError {
    r.expect_err("an error")
}

fn ino(fs: &Fs, dir: u64, name: &[u8]) -> u64 {
    fs.lookup(dir, name).unwrap().ino
}

fn nlink(fs: &Fs, ino: u64) -> u32 {
    fs.getattr(ino).unwrap().nlink
}

fn rename(fs: &Fs, a: u64, an: &[u8], b: u64, bn: &[u8]) -> Result<(), FsError> {
    fs.rename(a, an, b, bn, 0, ME)
}

#[test]
fn files_move_and_replace() {
    let tmp = tempfile::tempdir().unwrap();
    let legs = Legs::images(tmp.path(), 2, 32 * MIB, &opts(4096));
    let fs = legs.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, ME).unwrap().ino;
    let b = fs.mkdir(ROOT, b"b", 0o755, ME).unwrap().ino;
    let f = fs.mknod(a, b"f", 0o644, 0, ME).unwrap().ino;
    fs.write(f, 0, b"content of f").unwrap();
    let g = fs.mknod(b, b"g", 0o644, 0, ME).unwrap().ino;
    let before = fs.getattr(f).unwrap();
    // Within a directory.
    rename(&fs, a, b"f", a, b"f2").unwrap();
    assert!(matches!(err(fs.lookup(a, b"f")), FsError::NotFound));
    assert_eq!(ino(&fs, a, b"f2"), f);
    assert!(fs.getattr(f).unwrap().ctime >= before.ctime);
    // Across directories, over an existing file: g loses its only link;
    // both directories change (mtime, ctime).
    fs.forget(g, 1).unwrap();
    let (a_before, b_before) = (fs.getattr(a).unwrap(), fs.getattr(b).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(5));
    rename(&fs, a, b"f2", b, b"g").unwrap();
    let (a_after, b_after) = (fs.getattr(a).unwrap(), fs.getattr(b).unwrap());
    assert!(a_after.mtime > a_before.mtime && a_after.ctime > a_before.ctime);
    assert!(b_after.mtime > b_before.mtime && b_after.ctime > b_before.ctime);
    assert_eq!(a_after.mtime, b_after.mtime);
    assert_eq!(fs.getattr(f).unwrap().ctime, a_after.mtime);
    assert_eq!(ino(&fs, b, b"g"), f);
    assert!(matches!(err(fs.getattr(g)), FsError::Stale));
    assert_eq!(fs.read(f, 0, 100).unwrap(), b"content of f");
    assert_eq!((nlink(&fs, a), nlink(&fs, b)), (2, 2));
    // Two names of one inode: nothing happens, both stay.
    fs.link(f, a, b"same").unwrap();
    rename(&fs, a, b"same", b, b"g").unwrap();
    assert_eq!((ino(&fs, a, b"same"), ino(&fs, b, b"g")), (f, f));
    assert_eq!(nlink(&fs, f), 2);
    // To itself.
    rename(&fs, b, b"g", b, b"g").unwrap();
    assert_eq!(ino(&fs, b, b"g"), f);
    // Missing source, bad names, bad flags.
    assert!(matches!(
        err(rename(&fs, a, b"nope", b, b"x")),
        FsError::NotFound
    ));
    assert!(matches!(
        err(rename(&fs, a, b"same", b, b"..")),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(fs.rename(a, b"same", b, b"x", RENAME_NOREPLACE | RENAME_EXCHANGE, ME)),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(fs.rename(a, b"same", b, b"x", 8, ME)),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(fs.rename(a, b"same", b, b"x", RENAME_WHITEOUT | RENAME_EXCHANGE, ME)),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(rename(&fs, f, b"x", b, b"y")),
        FsError::NotDir
    ));
    // NOREPLACE.
    let h = fs.mknod(b, b"h", 0o644, 0, ME).unwrap().ino;
    assert!(matches!(
        err(fs.rename(a, b"same", b, b"h", RENAME_NOREPLACE, ME)),
        FsError::Exists
    ));
    fs.rename(a, b"same", b, b"new", RENAME_NOREPLACE, ME)
        .unwrap();
    assert_eq!(ino(&fs, b, b"new"), f);
    assert_eq!(ino(&fs, b, b"h"), h);
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(ino(&fs, b, b"new"), f);
    assert_eq!(ino(&fs, b, b"g"), f);
    assert_eq!(nlink(&fs, f), 2);
    assert!(matches!(err(fs.lookup(a, b"same")), FsError::NotFound));
    fs.unmount().unwrap();
}

#[test]
fn directories_move_with_their_links() {
    let legs = Legs::mem(1, 32 * MIB, &opts(1024));
    let fs = legs.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, ME).unwrap().ino;
    let b = fs.mkdir(ROOT, b"b", 0o755, ME).unwrap().ino;
    let d = fs.mkdir(a, b"d", 0o755, ME).unwrap().ino;
    let deep = fs.mkdir(d, b"deep", 0o755, ME).unwrap().ino;
    fs.mknod(d, b"file", 0o644, 0, ME).unwrap();
    assert_eq!((nlink(&fs, a), nlink(&fs, b)), (3, 2));
    // Into its own subtree, or onto itself as a parent.
    assert!(matches!(
        err(rename(&fs, a, b"d", d, b"x")),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(rename(&fs, a, b"d", deep, b"x")),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(rename(&fs, ROOT, b"a", deep, b"x")),
        FsError::Invalid(_)
    ));
    // Across: ".." follows, the link counts of both parents too.
    rename(&fs, a, b"d", b, b"d").unwrap();
    assert_eq!(ino(&fs, b, b"d"), d);
    assert_eq!(fs.lookup(d, b"..").unwrap().ino, b);
    assert_eq!((nlink(&fs, a), nlink(&fs, b), nlink(&fs, d)), (2, 3, 3));
    let listed: Vec<(Vec<u8>, u64)> = {
        let mut v = Vec::new();
        fs.readdir(d, 0, |e| {
            v.push((e.name.clone(), e.ino));
            true
        })
        .unwrap();
        v
    };
    assert_eq!(listed[1], (b"..".to_vec(), b));
    // Over an empty directory (which goes), not over a full one.
    let empty = fs.mkdir(a, b"empty", 0o755, ME).unwrap().ino;
    fs.forget(empty, 1).unwrap();
    assert_eq!(nlink(&fs, a), 3);
    rename(&fs, b, b"d", a, b"empty").unwrap();
    assert!(matches!(err(fs.getattr(empty)), FsError::Stale));
    assert_eq!(ino(&fs, a, b"empty"), d);
    assert_eq!((nlink(&fs, a), nlink(&fs, b)), (3, 2));
    assert_eq!(fs.lookup(d, b"..").unwrap().ino, a);
    let full = fs.mkdir(b, b"full", 0o755, ME).unwrap().ino;
    fs.mknod(full, b"x", 0o644, 0, ME).unwrap();
    assert!(matches!(
        err(rename(&fs, a, b"empty", b, b"full")),
        FsError::NotEmpty
    ));
    // A directory over a file, a file over a directory.
    fs.mknod(b, b"plain", 0o644, 0, ME).unwrap();
    assert!(matches!(
        err(rename(&fs, a, b"empty", b, b"plain")),
        FsError::NotDir
    ));
    assert!(matches!(
        err(rename(&fs, b, b"plain", b, b"full")),
        FsError::IsDir
    ));
    // Over an ancestor of the source's directory: it cannot be empty.
    let leaf = fs.mkdir(deep, b"leaf", 0o755, ME).unwrap().ino;
    assert!(leaf > 0);
    assert!(matches!(
        err(rename(&fs, deep, b"leaf", ROOT, b"a")),
        FsError::NotEmpty
    ));
    // Within one directory, a directory keeps its links.
    rename(&fs, a, b"empty", a, b"renamed").unwrap();
    assert_eq!(nlink(&fs, a), 3);
    assert_eq!(fs.lookup(d, b"..").unwrap().ino, a);
    fs.unmount().unwrap();
    let fs = legs.mount();
    assert_eq!(fs.lookup(d, b"..").unwrap().ino, a);
    assert_eq!(ino(&fs, a, b"renamed"), d);
    assert_eq!((nlink(&fs, a), nlink(&fs, b), nlink(&fs, d)), (3, 3, 3));
    fs.unmount().unwrap();
}

#[test]
fn exchange_swaps_names_of_any_types() {
    let legs = Legs::mem(1, 32 * MIB, &opts(4096));
    let fs = legs.mount();
    let a = fs.mkdir(ROOT, b"a", 0o755, ME).unwrap().ino;
    let b = fs.mkdir(ROOT, b"b", 0o755, ME).unwrap().ino;
    let f = fs.mknod(a, b"f", 0o644, 0, ME).unwrap().ino;
    let d = fs.mkdir(b, b"d", 0o755, ME).unwrap().ino;
    fs.mknod(d, b"inside", 0o644, 0, ME).unwrap();
    assert_eq!((nlink(&fs, a), nlink(&fs, b)), (2, 3));
    fs.rename(a, b"f", b, b"d", RENAME_EXCHANGE, ME).unwrap();
    assert_eq!(ino(&fs, a, b"f"), d);
    assert_eq!(ino(&fs, b, b"d"), f);
    assert_eq!(fs.lookup(d, b"..").unwrap().ino, a);
    assert_eq!((nlink(&fs, a), nlink(&fs, b)), (3, 2));
    let kinds: Vec<(Vec<u8>, FileType)> = {
        let mut v = Vec::new();
        fs.readdir(a, 2, |e| {
            v.push((e.name.clone(), e.kind));
            true
        })
        .unwrap();
        v
    };
    assert_eq!(kinds, vec![(b"f".to_vec(), FileType::Directory)]);
    // Both must exist.
    assert!(matches!(
        err(fs.rename(a, b"f", b, b"none", RENAME_EXCHANGE, ME)),
        FsError::NotFound
    ));
    // Within one directory.
    let g = fs.mknod(a, b"g", 0o644, 0, ME).unwrap().ino;
    fs.rename(a, b"f", a, b"g", RENAME_EXCHANGE, ME).unwrap();
    assert_eq!((ino(&fs, a, b"f"), ino(&fs, a, b"g")), (g, d));
    assert_eq!(nlink(&fs, a), 3);
    // Not with an ancestor, either way round.
    let sub = fs.mkdir(d, b"sub", 0o755, ME).unwrap().ino;
    fs.mknod(sub, b"x", 0o644, 0, ME).unwrap();
    assert!(matches!(
        err(fs.rename(a, b"g", sub, b"x", RENAME_EXCHANGE, ME)),
        FsError::Invalid(_)
    ));
    assert!(matches!(
        err(fs.rename(sub, b"x", ROOT, b"a", RENAME_EXCHANGE, ME)),
        FsError::Invalid(_)
    ));
    fs.unmount().unwrap();
}

#[test]
fn parents_at_the_link_limit_refuse_one_more_subdirectory() {
    let legs = Legs::mem(1, 32 * MIB, &opts(4096));
    let fs = legs.mount();
    let full = fs.mkdir(ROOT, b"full", 0o755, ME).unwrap().ino;
    let d = fs.mkdir(ROOT, b"d", 0o755, ME).unwrap().ino;
    fs.mkdir(full, b"inner", 0o755, ME).unwrap();
    let f = fs.mknod(ROOT, b"f", 0o644, 0, ME).unwrap().ino;
    {
        // As if it had LINK_MAX − 2 subdirectories.
        let tx = fs.journal().start().unwrap();
        let cell = fs.inode(full).unwrap();
        let mut state = cell.write();
        state.links = LINK_MAX;
        fs.store_inode(&tx, &state).unwrap();
    }
    assert!(matches!(
        err(fs.mkdir(full, b"one-more", 0o755, ME)),
        FsError::TooManyLinks
    ));
    assert!(matches!(
        err(rename(&fs, ROOT, b"d", full, b"d")),
        FsError::TooManyLinks
    ));
    assert_eq!(fs.lookup(d, b"..").unwrap().ino, ROOT);
    // A file, a rename within, and a directory leaving are fine.
    rename(&fs, ROOT, b"f", full, b"f").unwrap();
    assert_eq!(ino(&fs, full, b"f"), f);
    rename(&fs, full, b"inner", full, b"inner2").unwrap();
    assert_eq!(nlink(&fs, full), LINK_MAX);
    rename(&fs, full, b"inner2", ROOT, b"inner").unwrap();
    assert_eq!(nlink(&fs, full), LINK_MAX - 1);
    rename(&fs, ROOT, b"d", full, b"d").unwrap();
    assert_eq!(nlink(&fs, full), LINK_MAX);
    fs.unmount().unwrap();
}

#[test]
fn concurrent_cross_directory_renames_do_not_deadlock() {
    let legs = Legs::mem(1, 64 * MIB, &opts(4096));
    let fs = Arc::new(legs.mount());
    // a/ and b/ each hold one directory per thread; threads move them back
    // and forth between a, b and a/x (a descendant of a) in opposite
    // directions, while others create and remove files in the same
    // directories.
    // x is made first, so the ancestor a has the larger inode number.
    let x = fs.mkdir(ROOT, b"x", 0o755, ME).unwrap().ino;
    let a = fs.mkdir(ROOT, b"a", 0o755, ME).unwrap().ino;
    let b = fs.mkdir(ROOT, b"b", 0o755, ME).unwrap().ino;
    rename(&fs, ROOT, b"x", a, b"x").unwrap();
    assert!(x < a);
    let dirs = [a, b, x];
    let threads = 4;
    for t in 0..threads {
        fs.mkdir(dirs[t % 3], format!("t{t}").as_bytes(), 0o755, ME)
            .unwrap();
    }
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let fs = Arc::clone(&fs);
            thread::spawn(move || {
                let name = format!("t{t}").into_bytes();
                let mut at = t % 3;
                for i in 0..300 {
                    let to = if t % 2 == 0 {
                        (at + 1) % 3
                    } else {
                        (at + 2) % 3
                    };
                    fs.rename(dirs[at], &name, dirs[to], &name, 0, ME).unwrap();
                    at = to;
                    let f = format!("f{t}-{i}").into_bytes();
                    fs.mknod(dirs[i % 3], &f, 0o644, 0, ME).unwrap();
                    fs.unlink(dirs[i % 3], &f, ME).unwrap();
                    // Moving a parent into its own child must fail, even
                    // while everything moves.
                    assert!(matches!(
                        fs.rename(ROOT, b"a", x, b"loop", 0, ME),
                        Err(FsError::Invalid(_))
                    ));
                }
                at
            })
        })
        .collect();
    // Readers lock a directory, then its children.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let fs = Arc::clone(&fs);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    fs.lookup(a, b"x").unwrap();
                    for d in [a, b, x] {
                        fs.readdirplus(d, 0, |_, _| true).unwrap();
                    }
                }
            })
        })
        .collect();
    // A deadlock fails the test instead of hanging it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let ends: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        let _ = done_tx.send(ends);
    });
    let ends = done_rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("renames deadlocked (or a thread panicked)");
    for (t, &at) in ends.iter().enumerate() {
        let d = fs.lookup(dirs[at], format!("t{t}").as_bytes()).unwrap().ino;
        assert_eq!(fs.lookup(d, b"..").unwrap().ino, dirs[at]);
    }
    // Link counts: 2 + subdirectories.
    let subdirs = |dir: u64| ends.iter().filter(|&&at| dirs[at] == dir).count() as u32;
    assert_eq!(nlink(&fs, a), 2 + 1 + subdirs(a));
    assert_eq!(nlink(&fs, b), 2 + subdirs(b));
    assert_eq!(nlink(&fs, x), 2 + subdirs(x));
    Arc::try_unwrap(fs).ok().unwrap().unmount().unwrap();
}
