//! Scale through a real mount: a 2 GiB file written and read back after a
//! remount (every byte compared), 50,000 files in one directory, and
//! several processes writing at once. Each test ends with
//! `Mounted::finish` (unmount, fsck -n when there is one, mount again,
//! compare the tree).
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use fuse_support::*;

const OPTS: &str = "default_permissions";

#[test]
fn two_gib_file_written_and_read_back() {
    if !can_mount("two_gib_file_written_and_read_back") {
        return;
    }
    const SIZE: u64 = 2 * GIB;
    const CHUNK: usize = MIB as usize;
    let fx = Fixture::new(2, 3 * GIB);
    let m = fx.mount(OPTS);
    let started = Instant::now();
    {
        let mut f = File::create(m.path("big")).unwrap();
        for i in 0..SIZE / CHUNK as u64 {
            f.write_all(&pattern(0xB16, i, CHUNK)).unwrap();
        }
        f.sync_all().unwrap();
    }
    let wrote = started.elapsed();
    assert_eq!(fs::metadata(m.path("big")).unwrap().len(), SIZE);
    // Read back from the devices, not the page cache: mount again.
    m.unmount();
    let m = fx.mount(OPTS);
    let started = Instant::now();
    let mut f = File::open(m.path("big")).unwrap();
    let mut buf = vec![0u8; CHUNK];
    for i in 0..SIZE / CHUNK as u64 {
        f.read_exact(&mut buf).unwrap();
        assert!(
            buf == pattern(0xB16, i, CHUNK),
            "chunk {i} (bytes {}..) differs",
            i * CHUNK as u64
        );
    }
    assert_eq!(f.read(&mut buf).unwrap(), 0, "data past 2 GiB");
    drop(f);
    eprintln!(
        "2 GiB: written in {:.1} s, read in {:.1} s",
        wrote.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let used = fs::metadata(m.path("big")).unwrap().blocks() * 512;
    assert!(used >= SIZE, "{used} bytes held for a 2 GiB file");
    m.finish();
}

#[test]
fn fifty_thousand_files_in_one_directory() {
    if !can_mount("fifty_thousand_files_in_one_directory") {
        return;
    }
    const FILES: usize = 50_000;
    let fx = Fixture::new(2, GIB);
    let m = fx.mount(OPTS);
    let dir = m.path("many");
    fs::create_dir(&dir).unwrap();
    let started = Instant::now();
    // Four creators at once (parallel directory operations).
    std::thread::scope(|s| {
        for t in 0..4 {
            let dir = &dir;
            s.spawn(move || {
                for i in (t..FILES).step_by(4) {
                    let mut f = File::create(dir.join(format!("file-{i:06}"))).unwrap();
                    if i % 1000 == 0 {
                        f.write_all(format!("content of {i}").as_bytes()).unwrap();
                    }
                }
            });
        }
    });
    let created = started.elapsed();
    let names: BTreeSet<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), FILES);
    assert!(names.contains("file-000000") && names.contains("file-049999"));
    let count = ok("find", &[dir.to_str().unwrap(), "-type", "f"]);
    assert_eq!(count.lines().count(), FILES);
    for i in (0..FILES).step_by(7919) {
        let path = dir.join(format!("file-{i:06}"));
        assert!(path.is_file(), "{}", path.display());
    }
    assert_eq!(
        fs::read_to_string(dir.join("file-042000")).unwrap(),
        "content of 42000"
    );
    assert!(!dir.join("file-050000").exists());
    // Remove every other one (four at once), then list again.
    std::thread::scope(|s| {
        for t in 0..4 {
            let dir = &dir;
            s.spawn(move || {
                for i in (2 * t..FILES).step_by(8) {
                    fs::remove_file(dir.join(format!("file-{i:06}"))).unwrap();
                }
            });
        }
    });
    assert_eq!(fs::read_dir(&dir).unwrap().count(), FILES / 2);
    eprintln!(
        "{FILES} files: created in {:.1} s, all done in {:.1} s",
        created.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    m.finish();
}

#[test]
fn several_processes_write_at_once() {
    if !can_mount("several_processes_write_at_once") {
        return;
    }
    const WRITERS: usize = 4;
    const LINES: usize = 500;
    let fx = Fixture::new(2, GIB);
    let m = fx.mount(OPTS);
    let shared = m.path("shared.log");
    // Each process appends its lines to one shared file (O_APPEND, one
    // write per line) and writes a 24 MiB file of its own.
    let children: Vec<_> = (0..WRITERS)
        .map(|w| {
            let script = format!(
                "i=0; while [ $i -lt {LINES} ]; do \
                   printf 'writer %d line %05d ................................\\n' {w} $i >&3; \
                   i=$((i+1)); \
                 done; \
                 head -c 25165824 /dev/zero | tr '\\0' '{c}' > '{own}'",
                c = (b'a' + w as u8) as char,
                own = m.path(&format!("own-{w}")).display()
            );
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&shared)
                .unwrap();
            Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("exec 3>&0; {script}"))
                .stdin(Stdio::from(log))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let lines: Vec<String> = BufReader::new(File::open(&shared).unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lines.len(), WRITERS * LINES);
    for w in 0..WRITERS {
        let mine: Vec<usize> = lines
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix(&format!("writer {w} line "))?;
                assert!(
                    rest.ends_with("................................"),
                    "torn: {l}"
                );
                rest[..5].parse().ok()
            })
            .collect();
        assert_eq!(mine, (0..LINES).collect::<Vec<_>>(), "writer {w}");
        let own = fs::read(m.path(&format!("own-{w}"))).unwrap();
        assert_eq!(own.len(), 24 * MIB as usize);
        let c = b'a' + w as u8;
        assert!(own.iter().all(|&b| b == c), "own-{w} content");
    }
    m.finish();
}
