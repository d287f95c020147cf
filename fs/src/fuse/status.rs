//! `keelfs status MOUNTPOINT`: what a running daemon reports about its legs,
//! its cache and its journal, and how the report gets out of the daemon.
//!
//! What it promises:
//!
//! * [`StatusReport::collect`] takes a snapshot of a mounted [`Fs`]: per
//!   leg (in member order) its health and its error counters, like
//!   `zpool status` (columns NAME STATE READ WRITE CKSUM HEALED: READ is
//!   failed device reads, WRITE failed writes and flushes, CKSUM copies that
//!   read fine but did not match their tag, HEALED blocks rewritten on that
//!   leg from a good copy; each counts the leg's whole life: the persistent
//!   counters of its superblock plus this mount's), members with no device, the bufio cache counters
//!   (hits, misses, bytes, dirty buffers), the journal's last committed
//!   sequence, space, and the request counters of the worker pool.
//! * Leg health: `ONLINE` (in service, no error counted), `DEGRADED` (in
//!   service, but it has had read, write or checksum errors), `FAILED`
//!   (out of service: a write or flush failed, or the superblock marks it
//!   failed), `STALE` (out of service: it missed writes before this mount),
//!   `RESYNCING` (taking writes but serving no read until its resync
//!   completes; the report has its progress), `SUSPECT` (in service and
//!   taking writes, but it failed reads: marked "needs check", read only
//!   when no other leg can serve, until a scrub finds it good), `MISSING`
//!   (a member no device was given for). Each leg is named by the device
//!   it has now (after `keelfs replace`, the new one; legs added with
//!   `keelfs add` are listed too). The filesystem as a whole is
//!   `ONLINE` when every member is, `UNAVAIL` when no leg is in service,
//!   else `DEGRADED`.
//! * Transport: the daemon listens on a Unix socket
//!   `/run/keelfs/fuse-MAJOR-MINOR.sock`, named after the device number of
//!   its FUSE superblock (what `stat MOUNTPOINT` reports as `st_dev`), so
//!   the client finds it from the mount point alone. Each connection gets
//!   one answer and is closed: the client first sends one request line
//!   (`status`, or `scrub start|status|pause|resume|cancel`; none at all,
//!   within 300 ms, means `status`), and a status answer is a report in the
//!   line format of [`StatusReport::encode`]. The socket is made at mount and removed at unmount; a socket
//!   left by a daemon that was killed refuses connections and is replaced
//!   by the next daemon with that device number.
//! * [`StatusReport::decode`] reads exactly what `encode` writes (fields are
//!   tab-separated; tabs, newlines and backslashes in names are escaped), and
//!   refuses anything else with a message, never a panic.
//!
//! Relies on: the engine's per-leg counters (`MirrorSet::leg_stats`), leg
//! states and the device set's mount-time report; `Bufio::stats`;
//! `Journal::committed_seq`.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::core::Fs;
use crate::devset::format_uuid;
use crate::format::superblock::MemberState;
use keelfs_engine::mirror::LegState;

/// Where the daemons' status sockets live.
pub const STATUS_DIR: &str = "/run/keelfs";
/// First line of every report: the format and its version.
const MAGIC: &str = "keelfs-status\t1";
/// How long a client waits for the daemon.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Health of one member of the mirror set (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegHealth {
    Online,
    Degraded,
    Failed,
    Stale,
    Resyncing,
    Suspect,
    Missing,
}

impl LegHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            LegHealth::Online => "ONLINE",
            LegHealth::Degraded => "DEGRADED",
            LegHealth::Failed => "FAILED",
            LegHealth::Stale => "STALE",
            LegHealth::Resyncing => "RESYNCING",
            LegHealth::Suspect => "SUSPECT",
            LegHealth::Missing => "MISSING",
        }
    }

    fn parse(text: &str) -> Option<LegHealth> {
        [
            LegHealth::Online,
            LegHealth::Degraded,
            LegHealth::Failed,
            LegHealth::Stale,
            LegHealth::Resyncing,
            LegHealth::Suspect,
            LegHealth::Missing,
        ]
        .into_iter()
        .find(|h| h.as_str() == text)
    }

    /// Whether I/O goes to a leg in this state.
    pub fn in_service(self) -> bool {
        matches!(
            self,
            LegHealth::Online | LegHealth::Degraded | LegHealth::Suspect
        )
    }
}

/// One member's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegStatus {
    /// The device path, or `member N (device uuid U)` for a missing one.
    pub name: String,
    pub member: u32,
    pub health: LegHealth,
    /// Failed device reads.
    pub read_errors: u64,
    /// Failed device writes and flushes.
    pub write_errors: u64,
    /// Copies that did not match their tag.
    pub checksum_errors: u64,
    /// Blocks rewritten on this leg from a good copy.
    pub healed: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// The bufio metadata cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStatus {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
    pub peak_bytes: u64,
    pub limit_bytes: u64,
    pub buffers: u64,
    pub dirty_buffers: u64,
}

/// Everything `keelfs status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The mount source (the legs as given).
    pub source: String,
    pub mountpoint: String,
    pub fs_uuid: String,
    pub label: String,
    pub read_only: bool,
    pub legs: Vec<LegStatus>,
    pub cache: CacheStatus,
    /// Sequence of the last committed journal transaction.
    pub committed_seq: u64,
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub inodes: u64,
    pub free_inodes: u64,
    /// Inodes in the inode cache.
    pub cached_inodes: u64,
    /// FUSE requests answered by the worker pool, and queued or running now.
    pub requests_done: u64,
    pub requests_queued: u64,
    /// Resyncs since mount: one line each (leg, state, blocks done).
    pub resyncs: Vec<String>,
}

impl StatusReport {
    /// A snapshot of `fs` mounted from `source` at `mountpoint`;
    /// `requests` is (answered, queued) of the worker pool.
    pub fn collect(fs: &Fs, source: &str, mountpoint: &Path, requests: (u64, u64)) -> Self {
        let set = fs.device_set();
        let report = set.report();
        let mirror = set.mirror();
        let sb = fs.superblock();
        let mut legs = Vec::new();
        for (i, leg) in set.legs().iter().enumerate() {
            let stats = mirror.leg_stats(i).snapshot();
            let totals = fs.leg_totals(i).unwrap_or_default();
            let member = leg.member;
            let recorded = sb.members.get(member as usize).map(|m| m.state);
            // The mount-time findings hold for the device found at mount.
            let found_at_mount = report.stale.iter().any(|s| s.device == leg.name());
            let health = match mirror.leg_state(i) {
                LegState::Failed if recorded == Some(MemberState::Resyncing) => {
                    LegHealth::Resyncing
                }
                LegState::Failed if found_at_mount => LegHealth::Stale,
                LegState::Failed => LegHealth::Failed,
                LegState::InService if mirror.is_suspect(i) => LegHealth::Suspect,
                LegState::InService if stats.io_errors() + stats.checksum_errors > 0 => {
                    LegHealth::Degraded
                }
                LegState::InService => LegHealth::Online,
                LegState::Resyncing => LegHealth::Resyncing,
            };
            legs.push(LegStatus {
                // The device the leg has now (a replace changes it).
                name: mirror.leg_device(i).name().to_owned(),
                member,
                health,
                read_errors: totals.read_errors,
                write_errors: totals.write_errors,
                checksum_errors: totals.checksum_errors,
                healed: totals.blocks_healed,
                bytes_read: stats.bytes_read,
                bytes_written: stats.bytes_written,
            });
        }
        for missing in &report.missing {
            legs.push(LegStatus {
                name: format!(
                    "member {} (device uuid {})",
                    missing.member,
                    format_uuid(&missing.device_uuid)
                ),
                member: missing.member,
                health: LegHealth::Missing,
                read_errors: 0,
                write_errors: 0,
                checksum_errors: 0,
                healed: 0,
                bytes_read: 0,
                bytes_written: 0,
            });
        }
        legs.sort_by_key(|l| l.member);
        let cache = fs.cache().stats();
        let (blocks, free_blocks, inodes, free_inodes) = match fs.statfs() {
            Ok(s) => (s.blocks, s.bfree, s.files, s.ffree),
            Err(_) => (0, 0, 0, 0),
        };
        StatusReport {
            source: source.to_owned(),
            mountpoint: mountpoint.display().to_string(),
            fs_uuid: format_uuid(&sb.fs_uuid),
            label: sb.label.clone(),
            read_only: fs.read_only(),
            legs,
            cache: CacheStatus {
                hits: cache.hits,
                misses: cache.misses,
                bytes: cache.current_bytes,
                peak_bytes: cache.peak_bytes,
                limit_bytes: cache.limit_bytes,
                buffers: cache.buffers,
                dirty_buffers: cache.dirty_buffers,
            },
            committed_seq: fs.journal().committed_seq(),
            block_size: fs.block_size(),
            blocks,
            free_blocks,
            inodes,
            free_inodes,
            cached_inodes: fs.inodes().cached() as u64,
            requests_done: requests.0,
            requests_queued: requests.1,
            resyncs: fs.resync_jobs().iter().map(|j| j.describe()).collect(),
        }
    }

    /// The state of the whole set (see the module docs).
    pub fn pool_state(&self) -> &'static str {
        if self.legs.iter().all(|l| l.health == LegHealth::Online) {
            "ONLINE"
        } else if self.legs.iter().any(|l| l.health.in_service()) {
            "DEGRADED"
        } else {
            "UNAVAIL"
        }
    }

    /// The wire form: one record per line, fields separated by tabs.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let mut line = |fields: &[&str]| {
            let escaped: Vec<String> = fields.iter().map(|f| escape(f)).collect();
            out.push_str(&escaped.join("\t"));
            out.push('\n');
        };
        line(&["keelfs-status", "1"]);
        line(&["source", &self.source]);
        line(&["mountpoint", &self.mountpoint]);
        line(&["uuid", &self.fs_uuid]);
        line(&["label", &self.label]);
        line(&["read_only", if self.read_only { "1" } else { "0" }]);
        for l in &self.legs {
            line(&[
                "leg",
                &l.name,
                &l.member.to_string(),
                l.health.as_str(),
                &l.read_errors.to_string(),
                &l.write_errors.to_string(),
                &l.checksum_errors.to_string(),
                &l.healed.to_string(),
                &l.bytes_read.to_string(),
                &l.bytes_written.to_string(),
            ]);
        }
        let c = &self.cache;
        let nums = |name: &str, values: &[u64]| {
            let mut v = vec![name.to_owned()];
            v.extend(values.iter().map(u64::to_string));
            v
        };
        for record in [
            nums(
                "cache",
                &[
                    c.hits,
                    c.misses,
                    c.bytes,
                    c.peak_bytes,
                    c.limit_bytes,
                    c.buffers,
                    c.dirty_buffers,
                ],
            ),
            nums("journal", &[self.committed_seq]),
            nums(
                "space",
                &[
                    self.block_size,
                    self.blocks,
                    self.free_blocks,
                    self.inodes,
                    self.free_inodes,
                    self.cached_inodes,
                ],
            ),
            nums("requests", &[self.requests_done, self.requests_queued]),
        ] {
            let refs: Vec<&str> = record.iter().map(String::as_str).collect();
            line(&refs);
        }
        for r in &self.resyncs {
            line(&["resync", r]);
        }
        line(&["end"]);
        out
    }

    /// Parses what [`encode`](Self::encode) wrote.
    pub fn decode(text: &str) -> Result<StatusReport, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err("not a keelfs status report (or an unknown version)".into());
        }
        let mut r = StatusReport {
            source: String::new(),
            mountpoint: String::new(),
            fs_uuid: String::new(),
            label: String::new(),
            read_only: false,
            legs: Vec::new(),
            cache: CacheStatus::default(),
            committed_seq: 0,
            block_size: 0,
            blocks: 0,
            free_blocks: 0,
            inodes: 0,
            free_inodes: 0,
            cached_inodes: 0,
            requests_done: 0,
            requests_queued: 0,
            resyncs: Vec::new(),
        };
        let mut ended = false;
        for line in lines {
            let fields: Vec<String> = line.split('\t').map(unescape).collect();
            let num = |i: usize| -> Result<u64, String> {
                fields
                    .get(i)
                    .and_then(|f| f.parse().ok())
                    .ok_or_else(|| format!("bad number in status line `{line}`"))
            };
            let text = |i: usize| -> Result<String, String> {
                fields
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("short status line `{line}`"))
            };
            match fields[0].as_str() {
                "source" => r.source = text(1)?,
                "mountpoint" => r.mountpoint = text(1)?,
                "uuid" => r.fs_uuid = text(1)?,
                "label" => r.label = text(1)?,
                "read_only" => r.read_only = num(1)? != 0,
                "leg" => r.legs.push(LegStatus {
                    name: text(1)?,
                    member: u32::try_from(num(2)?).map_err(|e| e.to_string())?,
                    health: LegHealth::parse(&text(3)?)
                        .ok_or_else(|| format!("bad leg state in `{line}`"))?,
                    read_errors: num(4)?,
                    write_errors: num(5)?,
                    checksum_errors: num(6)?,
                    healed: num(7)?,
                    bytes_read: num(8)?,
                    bytes_written: num(9)?,
                }),
                "cache" => {
                    r.cache = CacheStatus {
                        hits: num(1)?,
                        misses: num(2)?,
                        bytes: num(3)?,
                        peak_bytes: num(4)?,
                        limit_bytes: num(5)?,
                        buffers: num(6)?,
                        dirty_buffers: num(7)?,
                    }
                }
                "journal" => r.committed_seq = num(1)?,
                "space" => {
                    r.block_size = num(1)?;
                    r.blocks = num(2)?;
                    r.free_blocks = num(3)?;
                    r.inodes = num(4)?;
                    r.free_inodes = num(5)?;
                    r.cached_inodes = num(6)?;
                }
                "requests" => {
                    r.requests_done = num(1)?;
                    r.requests_queued = num(2)?;
                }
                "resync" => r.resyncs.push(text(1)?),
                "end" => ended = true,
                // Records a newer daemon adds are skipped.
                _ => {}
            }
        }
        if !ended {
            return Err("the status report was cut short".into());
        }
        Ok(r)
    }

    /// The human-readable form `keelfs status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "  pool: {}", self.source);
        let _ = writeln!(
            out,
            " mount: {} ({})",
            self.mountpoint,
            if self.read_only {
                "read-only"
            } else {
                "read-write"
            }
        );
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("  label {:?}", self.label)
        };
        let _ = writeln!(out, "  uuid: {}{label}", self.fs_uuid);
        let _ = writeln!(out, " state: {}", self.pool_state());
        let _ = writeln!(out, "config:\n");
        let width = self
            .legs
            .iter()
            .map(|l| l.name.chars().count() + 2)
            .chain([6])
            .max()
            .unwrap_or(6);
        let _ = writeln!(
            out,
            "\t{:<width$}  {:<9} {:>6} {:>6} {:>6} {:>7}",
            "NAME", "STATE", "READ", "WRITE", "CKSUM", "HEALED"
        );
        let sum = |f: fn(&LegStatus) -> u64| self.legs.iter().map(f).sum::<u64>();
        let _ = writeln!(
            out,
            "\t{:<width$}  {:<9} {:>6} {:>6} {:>6} {:>7}",
            "keelfs",
            self.pool_state(),
            sum(|l| l.read_errors),
            sum(|l| l.write_errors),
            sum(|l| l.checksum_errors),
            sum(|l| l.healed)
        );
        for l in &self.legs {
            let _ = writeln!(
                out,
                "\t{:<width$}  {:<9} {:>6} {:>6} {:>6} {:>7}",
                format!("  {}", l.name),
                l.health.as_str(),
                l.read_errors,
                l.write_errors,
                l.checksum_errors,
                l.healed
            );
        }
        let c = &self.cache;
        let lookups = c.hits + c.misses;
        let ratio = if lookups == 0 {
            String::new()
        } else {
            format!(" ({:.1}% hits)", c.hits as f64 * 100.0 / lookups as f64)
        };
        let _ = writeln!(
            out,
            "\ncache:   hits {}  misses {}{ratio}\n         {} in {} buffers (peak {}, limit {}), {} dirty",
            c.hits,
            c.misses,
            human(c.bytes),
            c.buffers,
            human(c.peak_bytes),
            human(c.limit_bytes),
            c.dirty_buffers
        );
        let _ = writeln!(out, "journal: committed sequence {}", self.committed_seq);
        let used = self.blocks.saturating_sub(self.free_blocks);
        let _ = writeln!(
            out,
            "space:   {} used of {} ({} free), inodes {} used of {}, {} cached",
            human(used * self.block_size),
            human(self.blocks * self.block_size),
            human(self.free_blocks * self.block_size),
            self.inodes.saturating_sub(self.free_inodes),
            self.inodes,
            self.cached_inodes
        );
        let _ = writeln!(
            out,
            "requests: {} answered, {} in progress",
            self.requests_done, self.requests_queued
        );
        for r in &self.resyncs {
            let _ = writeln!(out, "resync:  {r}");
        }
        let errors: u64 = self
            .legs
            .iter()
            .map(|l| l.read_errors + l.write_errors + l.checksum_errors)
            .sum();
        let _ = writeln!(
            out,
            "\nerrors: {}",
            if errors == 0 {
                "No known data errors".to_owned()
            } else {
                format!("{errors} device or checksum errors (healed where a good copy existed)")
            }
        );
        out
    }
}

/// Bytes with a binary unit.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The socket of the daemon serving the FUSE superblock with device
/// number (major, minor).
pub fn socket_path(dev: (u32, u32)) -> PathBuf {
    Path::new(STATUS_DIR).join(format!("fuse-{}-{}.sock", dev.0, dev.1))
}

/// Why a status query failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{}: {source}", .path.display())]
    Stat { path: PathBuf, source: io::Error },
    #[error(
        "{} is not a keelfs mount point, or its daemon does not answer \
         (no status socket {}: {source})",
        .mountpoint.display(), .socket.display()
    )]
    NoDaemon {
        mountpoint: PathBuf,
        socket: PathBuf,
        source: io::Error,
    },
    #[error("reading the status from {}: {source}", .socket.display())]
    Read { socket: PathBuf, source: io::Error },
    #[error("{0}")]
    Malformed(String),
}

/// Asks the daemon serving `mountpoint` for its report.
pub fn query(mountpoint: &Path) -> Result<StatusReport, StatusError> {
    let text = command(mountpoint, "status")?;
    StatusReport::decode(&text).map_err(StatusError::Malformed)
}

/// What the server sends each client, given the request line the client
/// sent (`""` when it sent none, as `keelfs status` before version 2 did:
/// that is a status request): an encoded report or a command's answer, or
/// `None` when there is nothing to say (the filesystem is going away).
pub type ReportSource = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How long the server waits for a client's request line.
const REQUEST_WAIT: Duration = Duration::from_millis(300);

/// Sends `request` (one line, e.g. `scrub start`) to the daemon serving
/// `mountpoint` and returns its answer.
pub fn command(mountpoint: &Path, request: &str) -> Result<String, StatusError> {
    let meta = std::fs::metadata(mountpoint).map_err(|source| StatusError::Stat {
        path: mountpoint.to_owned(),
        source,
    })?;
    let dev = meta.dev();
    let socket = socket_path((libc::major(dev), libc::minor(dev)));
    let mut stream = UnixStream::connect(&socket).map_err(|source| StatusError::NoDaemon {
        mountpoint: mountpoint.to_owned(),
        socket: socket.clone(),
        source,
    })?;
    let read_err = |source| StatusError::Read {
        socket: socket.clone(),
        source,
    };
    stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(read_err)?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(read_err)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(read_err)?;
    Ok(text)
}

/// Reads the client's request line (up to [`REQUEST_WAIT`]; none is "").
fn read_request(stream: &mut UnixStream) -> String {
    let _ = stream.set_read_timeout(Some(REQUEST_WAIT));
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] != b'\n' => line.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).trim().to_owned()
}

/// The daemon's status socket and the thread answering it.
pub struct StatusServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    /// Listens on `path` (replacing a stale socket there; the directory is
    /// created) and answers every connection with `report(request)`.
    pub fn start(path: PathBuf, report: ReportSource) -> io::Result<StatusServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        // Everyone may read the counters, as with `zpool status`.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("keelfs-status".into())
                .spawn(move || serve(&listener, &stop, &report))?
        };
        Ok(StatusServer {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops answering, joins the thread and removes the socket.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the accept; the thread sees the flag and leaves.
            let _ = UnixStream::connect(&self.path);
            let _ = thread.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.shut();
    }
}

fn serve(listener: &UnixListener, stop: &AtomicBool, report: &ReportSource) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let request = read_request(&mut stream);
        let text = report(&request).unwrap_or_default();
        if let Err(e) = stream.write_all(text.as_bytes()) {
            log::debug!("status client went away: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusReport {
        StatusReport {
            source: "/var/lib/keelfs/a.img,/var/lib/keelfs/b\tc.img".into(),
            mountpoint: "/mnt/keel fs".into(),
            fs_uuid: "0f0e0d0c-0b0a-4908-8706-050403020100".into(),
            label: "data\\set\n".into(),
            read_only: true,
            legs: vec![
                LegStatus {
                    name: "/var/lib/keelfs/a.img".into(),
                    member: 0,
                    health: LegHealth::Online,
                    read_errors: 0,
                    write_errors: 0,
                    checksum_errors: 0,
                    healed: 0,
                    bytes_read: 4096,
                    bytes_written: 8192,
                },
                LegStatus {
                    name: "/var/lib/keelfs/b\tc.img".into(),
                    member: 1,
                    health: LegHealth::Degraded,
                    read_errors: 1,
                    write_errors: 2,
                    checksum_errors: 3,
                    healed: 4,
                    bytes_read: 5,
                    bytes_written: 6,
                },
                LegStatus {
                    name: "member 2 (device uuid x)".into(),
                    member: 2,
                    health: LegHealth::Missing,
                    read_errors: 0,
                    write_errors: 0,
                    checksum_errors: 0,
                    healed: 0,
                    bytes_read: 0,
                    bytes_written: 0,
                },
            ],
            cache: CacheStatus {
                hits: 10,
                misses: 5,
                bytes: 1 << 20,
                peak_bytes: 2 << 20,
                limit_bytes: 64 << 20,
                buffers: 256,
                dirty_buffers: 3,
            },
            committed_seq: 17,
            block_size: 4096,
            blocks: 1000,
            free_blocks: 900,
            inodes: 256,
            free_inodes: 250,
            cached_inodes: 4,
            requests_done: 99,
            requests_queued: 1,
            resyncs: vec!["leg 1: running, 10 of 40 blocks (25.0%), 0 unverified".into()],
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let r = sample();
        assert_eq!(StatusReport::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn decode_refuses_garbage_without_panicking() {
        for text in [
            "",
            "hello\n",
            "keelfs-status\t1\n",
            "keelfs-status\t1\nleg\tx\n",
            "keelfs-status\t1\nleg\ta\t0\tWEIRD\t0\t0\t0\t0\t0\t0\nend\n",
            "keelfs-status\t1\ncache\t1\t2\nend\n",
            "keelfs-status\t2\nend\n",
        ] {
            assert!(StatusReport::decode(text).is_err(), "{text:?}");
        }
        // Unknown records from a newer daemon are skipped.
        let mut text = sample().encode();
        text = text.replace("end\n", "future\t1\t2\nend\n");
        assert!(StatusReport::decode(&text).is_ok());
    }

    #[test]
    fn pool_state_and_rendering() {
        let mut r = sample();
        assert_eq!(r.pool_state(), "DEGRADED");
        let text = r.render();
        for want in [
            "NAME",
            "STATE",
            "READ",
            "WRITE",
            "CKSUM",
            "HEALED",
            "DEGRADED",
            "MISSING",
            "hits 10",
            "misses 5",
            "3 dirty",
            "committed sequence 17",
        ] {
            assert!(text.contains(want), "`{want}` missing from\n{text}");
        }
        r.legs.truncate(1);
        assert_eq!(r.pool_state(), "ONLINE");
        assert!(r.render().contains("No known data errors"));
        r.legs[0].health = LegHealth::Failed;
        assert_eq!(r.pool_state(), "UNAVAIL");
    }

    #[test]
    fn server_answers_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let report = sample();
        let encoded = report.encode();
        let server =
            StatusServer::start(path.clone(), Box::new(move |_| Some(encoded.clone()))).unwrap();
        for _ in 0..3 {
            let mut text = String::new();
            UnixStream::connect(&path)
                .unwrap()
                .read_to_string(&mut text)
                .unwrap();
            assert_eq!(StatusReport::decode(&text).unwrap(), report);
        }
        server.stop();
        assert!(!path.exists());
        // A stale socket file is replaced.
        std::fs::write(&path, b"stale").unwrap();
        let server = StatusServer::start(path.clone(), Box::new(|_| None)).unwrap();
        let mut text = String::new();
        UnixStream::connect(&path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.is_empty());
        drop(server);
        assert!(!path.exists());
    }
}
