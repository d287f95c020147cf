//! Performance guards through a real mount: how many FUSE requests the
//! kernel sends for common work, counted in the daemon's debug log (fuser
//! logs every request it dispatches). Speed itself is measured by
//! `bench/compare.sh`, never by tests; these catch the changes that made
//! keelfs slow before (docs/benchmarks.md):
//!
//! * a cold sequential read comes in requests of 1 MiB (the mount raised
//!   the connection's readahead), not 128 KiB;
//! * creating a small file (open, write, close) costs one LOOKUP, CREATE,
//!   WRITE and RELEASE, no FLUSH (answered ENOSYS once), and at most seven
//!   requests in all (the kernel adds GETXATTR security.capability, a
//!   SETATTR with its times, and with killpriv a GETATTR, as timing and
//!   negotiation decide).
//!
//! Needs root and /dev/fuse (skipped otherwise).

mod fuse_support;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};

use fuse_support::*;

const OPTS: &str = "default_permissions,debug";

/// Requests dispatched so far, by operation name, from the daemon's log.
fn requests(fx: &Fixture) -> BTreeMap<String, usize> {
    let log = fs::read_to_string(fx.log()).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("fuser::request")) {
        // "... FUSE( 12) ino 0x0000000000000003 LOOKUP name ..."
        let mut words = line.split_whitespace();
        if words.by_ref().any(|w| w.starts_with("0x")) {
            if let Some(op) = words.next() {
                *counts.entry(op.to_owned()).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// `after` minus `before`, operations that did not change left out.
fn delta(
    before: &BTreeMap<String, usize>,
    after: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn a_cold_sequential_read_comes_in_big_requests() {
    if !can_mount("a_cold_sequential_read_comes_in_big_requests") {
        return;
    }
    const SIZE: usize = 16 * MIB as usize;
    let fx = Fixture::new(2, GIB);
    let m = fx.mount(OPTS);
    let data = pattern(7, 0, SIZE);
    {
        let mut f = File::create(m.path("big")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    // Mount again: nothing of the file is in the page cache.
    m.unmount();
    let m = fx.mount(OPTS);
    let dev = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(fx.mnt.to_str().unwrap()))
        .and_then(|l| l.split(' ').nth(2).map(str::to_owned))
        .expect("the mount is in mountinfo");
    let ra = fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb")).unwrap();
    assert_eq!(
        ra.trim(),
        keelfs_fs::fuse::mount::READ_AHEAD_KB.to_string(),
        "readahead of the connection"
    );
    let before = requests(&fx);
    let mut got = Vec::with_capacity(SIZE);
    File::open(m.path("big"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == data, "the file reads back");
    let reads = delta(&before, &requests(&fx))
        .get("READ")
        .copied()
        .unwrap_or(0);
    // 16 requests of 1 MiB; 128 KiB requests would be 128.
    assert!(
        (1..=24).contains(&reads),
        "{reads} READ requests for 16 MiB"
    );
    m.finish();
}

#[test]
fn a_small_file_costs_at_most_seven_requests_and_no_flush() {
    if !can_mount("a_small_file_costs_at_most_seven_requests_and_no_flush") {
        return;
    }
    const FILES: usize = 50;
    let fx = Fixture::new(2, GIB);
    // As bench/compare.sh mounts (the adapter checks permissions).
    let m = fx.mount("debug");
    fs::create_dir(m.path("d")).unwrap();
    // The first close answers the one FLUSH the kernel sends.
    fs::write(m.path("d/first"), b"x\n").unwrap();
    let before = requests(&fx);
    for i in 0..FILES {
        let mut f = File::create(m.path(&format!("d/f{i}"))).unwrap();
        f.write_all(b"x\n").unwrap();
    }
    let per_file = delta(&before, &requests(&fx));
    // One of each of these per file, and no FLUSH. (RELEASE is sent
    // asynchronously: the first file's may land in the count too.)
    let count = |op: &str| per_file.get(op).copied().unwrap_or(0);
    for op in ["LOOKUP", "CREATE", "WRITE"] {
        assert_eq!(
            count(op),
            FILES,
            "{op} requests for {FILES} small files: {per_file:?}"
        );
    }
    assert!(
        (FILES..=FILES + 1).contains(&count("RELEASE")),
        "RELEASE requests for {FILES} small files: {per_file:?}"
    );
    assert!(!per_file.contains_key("FLUSH"), "{per_file:?}");
    // The rest is the kernel's and depends on timing and on what was
    // negotiated: GETXATTR security.capability before each write, a
    // SETATTR with the times at close (or later, with other inodes'), a
    // GETATTR when killpriv needs the mode. At most seven requests a file.
    let total: usize = per_file.values().sum();
    assert!(
        total <= 7 * FILES + 1,
        "{total} requests for {FILES} small files: {per_file:?}"
    );
    m.finish();
}
