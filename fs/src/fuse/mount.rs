//! mount(2) and umount2(2) for FUSE, and `/proc/self/mountinfo`.
//!
//! keelfs mounts by itself instead of through fuser's `Session::new`, whose
//! unmount-on-drop can unmount a filesystem that someone else mounted later on
//! the same path. [`mount_fuse`] opens `/dev/fuse`, calls mount(2) with type
//! `fuse` or `fuse.SUBTYPE`, the source exactly as given, and data
//! `fd=N,rootmode=40000,user_id=U,group_id=G[,allow_other][,default_permissions]`,
//! and returns the descriptor (for `fuser::Session::from_fd`) with a
//! [`MountHandle`].
//!
//! The handle identifies the mount by the device number of its superblock and
//! keeps a duplicate of the `/dev/fuse` descriptor. [`MountHandle::unmount`]
//! unmounts only when (a) the FUSE connection is still up (`poll` on the
//! descriptor reports no `POLLERR`; the kernel aborts the connection before it
//! frees the superblock and its device number, so while it is up the number
//! cannot belong to anyone else), and (b) the topmost mount at the mount point
//! carries that device number. It tries a plain umount2 first and falls back to
//! `MNT_DETACH` only if the mount is busy.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// `rootmode=` for the FUSE mount: a directory; permissions come from the
/// filesystem's first GETATTR (as libfuse does).
const ROOTMODE: &str = "40000";

/// Why mounting, remounting or unmounting failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mountpoint {}: {source}", .path.display())]
    Mountpoint { path: PathBuf, source: io::Error },
    #[error("mountpoint {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{what} is already mounted on {}", .target.display())]
    AlreadyMounted { what: String, target: PathBuf },
    #[error("cannot open /dev/fuse: {0} (is the fuse module loaded? try `modprobe fuse`)")]
    DevFuse(io::Error),
    #[error("mount of {what} on {} failed: {errno}{hint}", .target.display())]
    Mount {
        what: String,
        target: PathBuf,
        errno: Errno,
        hint: &'static str,
    },
    #[error("the FUSE handshake (INIT) failed: {0}")]
    Handshake(io::Error),
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(io::Error),
    #[error("mounted on {}, but the mount is missing from /proc/self/mountinfo", .0.display())]
    Vanished(PathBuf),
    #[error("nothing is mounted on {}", .0.display())]
    NotMounted(PathBuf),
    #[error("{} is a {fstype} mount, not a FUSE mount", .target.display())]
    NotFuse { target: PathBuf, fstype: String },
    #[error("remount of {} failed: {errno}", .target.display())]
    Remount { target: PathBuf, errno: Errno },
    #[error("unmount of {} failed: {errno}", .target.display())]
    Unmount { target: PathBuf, errno: Errno },
    #[error("our mount on {} is covered by another mount or was moved: not unmounting", .0.display())]
    Covered(PathBuf),
}

/// One line of `/proc/self/mountinfo`, unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u64,
    pub parent_id: u64,
    /// Device number of the superblock (major, minor).
    pub dev: (u32, u32),
    pub root: String,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,nodev,relatime`).
    pub mount_options: String,
    pub fstype: String,
    pub source: String,
    /// Superblock options (`rw,user_id=0,group_id=0`).
    pub super_options: String,
}

impl MountInfo {
    /// `fuse`, `fuse.*`, `fuseblk` or `fuseblk.*`.
    pub fn is_fuse(&self) -> bool {
        let t = self.fstype.as_str();
        t == "fuse" || t == "fuseblk" || t.starts_with("fuse.") || t.starts_with("fuseblk.")
    }

    /// Whether the superblock is read-only (what a legacy `remount,ro` changes).
    pub fn super_read_only(&self) -> bool {
        self.super_options.split(',').any(|o| o == "ro")
    }

    /// The current `MS_*` flags, as the base of a remount.
    pub fn flags(&self) -> MsFlags {
        let mut flags = MsFlags::empty();
        let mut atime_seen = false;
        for option in self.mount_options.split(',') {
            flags |= match option {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "nosymfollow" => super::options::MS_NOSYMFOLLOW,
                "noatime" => {
                    atime_seen = true;
                    MsFlags::MS_NOATIME
                }
                "relatime" => {
                    atime_seen = true;
                    MsFlags::MS_RELATIME
                }
                _ => MsFlags::empty(),
            };
        }
        if !atime_seen {
            flags |= MsFlags::MS_STRICTATIME;
        }
        for option in self.super_options.split(',') {
            flags |= match option {
                "ro" => MsFlags::MS_RDONLY,
                "sync" => MsFlags::MS_SYNCHRONOUS,
                "dirsync" => MsFlags::MS_DIRSYNC,
                "lazytime" => MsFlags::MS_LAZYTIME,
                _ => MsFlags::empty(),
            };
        }
        flags
    }
}

/// Undo mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let octal = &bytes[i + 1..i + 4];
            if octal.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = octal.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let mount_id = l.next()?.parse().ok()?;
    let parent_id = l.next()?.parse().ok()?;
    let (major, minor) = l.next()?.split_once(':')?;
    let dev = (major.parse().ok()?, minor.parse().ok()?);
    let root = unescape(l.next()?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let mount_options = l.next()?.to_owned();
    let mut r = right.splitn(3, ' ');
    let fstype = unescape(r.next()?);
    let source = unescape(r.next()?);
    let super_options = r.next().unwrap_or("").to_owned();
    Some(MountInfo {
        mount_id,
        parent_id,
        dev,
        root,
        mount_point,
        mount_options,
        fstype,
        source,
        super_options,
    })
}

/// Parse the text of a mountinfo file; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_line).collect()
}

/// Read and parse `/proc/self/mountinfo`.
pub fn read_mountinfo() -> Result<Vec<MountInfo>, MountError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    Ok(parse_mountinfo(&text))
}

/// The mount that is visible at `target`: of the mounts on that path, the one
/// no other mount on the same path is stacked on.
pub fn top_mount_at<'a>(mounts: &'a [MountInfo], target: &Path) -> Option<&'a MountInfo> {
    let here: Vec<&MountInfo> = mounts.iter().filter(|m| m.mount_point == target).collect();
    here.iter()
        .rev()
        .find(|m| !here.iter().any(|other| other.parent_id == m.mount_id))
        .copied()
}

/// Resolve MOUNTPOINT to the canonical path the kernel will show, and check
/// that it is a directory. Mounting over a non-empty directory is allowed.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    let canonical = path
        .canonicalize()
        .map_err(|source| MountError::Mountpoint {
            path: path.to_owned(),
            source,
        })?;
    let meta = std::fs::metadata(&canonical).map_err(|source| MountError::Mountpoint {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(MountError::NotADirectory(path.to_owned()));
    }
    Ok(canonical)
}

/// Refuse to serve a source that a FUSE mount already shows: two daemons on
/// the same devices would corrupt them. (The device layer's exclusive lock on
/// every leg is the authoritative guard; this check gives the clear message
/// for the common case.)
pub fn check_not_mounted(mount_source: &str) -> Result<(), MountError> {
    match read_mountinfo()?
        .into_iter()
        .find(|m| m.is_fuse() && m.source == mount_source)
    {
        Some(m) => Err(MountError::AlreadyMounted {
            what: mount_source.to_owned(),
            target: m.mount_point,
        }),
        None => Ok(()),
    }
}

/// What [`mount_fuse`] mounts.
#[derive(Debug, Clone)]
pub struct FuseMountSpec<'a> {
    /// Mount source, exactly as `/proc/mounts` is to show it.
    pub source: &'a str,
    /// Canonical mount point (see [`check_mountpoint`]).
    pub target: &'a Path,
    /// `fuse` or `fuse.SUBTYPE`.
    pub fstype: &'a str,
    /// `MS_*` flags.
    pub flags: MsFlags,
    pub allow_other: bool,
    pub default_permissions: bool,
}

impl FuseMountSpec<'_> {
    /// The mount(2) data string for `/dev/fuse` descriptor `fd`.
    pub fn data(&self, fd: i32) -> String {
        let mut data = format!(
            "fd={fd},rootmode={ROOTMODE},user_id={},group_id={}",
            nix::unistd::getuid(),
            nix::unistd::getgid()
        );
        if self.allow_other {
            data.push_str(",allow_other");
        }
        if self.default_permissions {
            data.push_str(",default_permissions");
        }
        data
    }
}

fn mount_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => " (mounting needs root / CAP_SYS_ADMIN)",
        Errno::ENODEV => " (the kernel has no FUSE support: try `modprobe fuse`)",
        Errno::EINVAL => " (the kernel refused the mount options)",
        _ => "",
    }
}

/// Mount a FUSE filesystem at `spec.target`. Returns the `/dev/fuse`
/// descriptor to hand to `fuser::Session::from_fd` and the handle to unmount
/// with. The kernel has queued FUSE_INIT: nothing on the mount answers until
/// the session's handshake has run.
pub fn mount_fuse(spec: &FuseMountSpec<'_>) -> Result<(OwnedFd, MountHandle), MountError> {
    let dev_fuse: OwnedFd = File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(MountError::DevFuse)?
        .into();
    let conn = dev_fuse.try_clone().map_err(MountError::DevFuse)?;
    // What was mounted before, to recognize our mount afterwards even if
    // something got stacked on top of it in between.
    let before: Vec<(u64, (u32, u32))> = read_mountinfo()?
        .iter()
        .map(|m| (m.mount_id, m.dev))
        .collect();
    let data = spec.data(dev_fuse.as_raw_fd());
    log::debug!(
        "mount({:?}, {}, {:?}, {:?}, {data:?})",
        spec.source,
        spec.target.display(),
        spec.fstype,
        spec.flags
    );
    nix::mount::mount(
        Some(spec.source),
        spec.target,
        Some(spec.fstype),
        spec.flags,
        Some(data.as_str()),
    )
    .map_err(|errno| MountError::Mount {
        what: spec.source.to_owned(),
        target: spec.target.to_owned(),
        errno,
        hint: mount_hint(errno),
    })?;
    let ours = read_mountinfo()?.into_iter().find(|m| {
        m.mount_point == spec.target
            && m.fstype == spec.fstype
            && m.source == spec.source
            && !before.contains(&(m.mount_id, m.dev))
    });
    match ours {
        Some(m) => Ok((
            dev_fuse,
            MountHandle {
                target: spec.target.to_owned(),
                dev: m.dev,
                conn,
                lock: Mutex::new(()),
            },
        )),
        // Already gone again. Nothing to unmount: without knowing which mount
        // is ours, unmounting the path could hit someone else's. Closing the
        // descriptors aborts the connection.
        None => Err(MountError::Vanished(spec.target.to_owned())),
    }
}

/// How [`MountHandle::unmount`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// umount2 succeeded: the kernel ends the session.
    Clean,
    /// The mount was busy and was detached (`MNT_DETACH`): the session ends
    /// when the last open file on it is closed.
    Lazy,
    /// Already gone (unmounted from outside, or the connection is down).
    AlreadyGone,
}

/// A FUSE mount made by [`mount_fuse`], tracked by superblock device number.
#[derive(Debug)]
pub struct MountHandle {
    target: PathBuf,
    dev: (u32, u32),
    /// A duplicate of the `/dev/fuse` descriptor, to ask whether the
    /// connection is still up.
    conn: OwnedFd,
    /// Serializes unmounts (signal thread against the main thread).
    lock: Mutex<()>,
}

/// Kernel readahead for a FUSE mount, in KiB. The kernel's default for a
/// FUSE connection is 128 KiB, so a sequential reader is sent 128 KiB
/// requests one window at a time; a larger window makes it send requests
/// of `max_pages` (1 MiB) several at once, which the session loops serve in
/// parallel (and the mirror spreads over its legs).
pub const READ_AHEAD_KB: u32 = 4096;

/// Sets the readahead of the backing device info of FUSE connection `dev`
/// (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`; root only). Done after
/// FUSE_INIT, which caps readahead at the negotiated `max_readahead`.
pub fn set_read_ahead(dev: (u32, u32), kb: u32) -> io::Result<()> {
    let path = format!("/sys/class/bdi/{}:{}/read_ahead_kb", dev.0, dev.1);
    std::fs::write(path, format!("{kb}\n"))
}

impl MountHandle {
    /// The canonical mount point.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The superblock's device number (major, minor).
    pub fn dev(&self) -> (u32, u32) {
        self.dev
    }

    /// Whether the FUSE connection is still up (the kernel has not aborted it,
    /// which it does when the superblock goes away).
    pub fn connected(&self) -> bool {
        let mut fds = [PollFd::new(self.conn.as_fd(), PollFlags::empty())];
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => !fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL)),
            Err(_) => false,
        }
    }

    /// This mount's line in `mounts`, if it is still attached somewhere.
    /// Only meaningful while [`connected`](Self::connected).
    pub fn find<'a>(&self, mounts: &'a [MountInfo]) -> Option<&'a MountInfo> {
        mounts.iter().find(|m| m.dev == self.dev && m.is_fuse())
    }

    /// Unmount, if and only if the mount visible at the mount point is still
    /// this one (see the module documentation). Busy: detach lazily.
    pub fn unmount(&self) -> Result<Unmounted, MountError> {
        let _serial = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !self.connected() {
            return Ok(Unmounted::AlreadyGone);
        }
        let mounts = read_mountinfo()?;
        let visible = top_mount_at(&mounts, &self.target).is_some_and(|m| m.dev == self.dev);
        if !visible {
            return match self.find(&mounts) {
                Some(_) => Err(MountError::Covered(self.target.clone())),
                None => Ok(Unmounted::AlreadyGone),
            };
        }
        let unmount = |flags| nix::mount::umount2(&self.target, flags | MntFlags::UMOUNT_NOFOLLOW);
        match unmount(MntFlags::empty()) {
            Ok(()) => Ok(Unmounted::Clean),
            Err(Errno::EBUSY) => {
                log::warn!(
                    "{} is busy: detaching it; the filesystem stops when the last file is closed",
                    self.target.display()
                );
                match unmount(MntFlags::MNT_DETACH) {
                    Ok(()) => Ok(Unmounted::Lazy),
                    Err(Errno::EINVAL | Errno::ENOENT) => Ok(Unmounted::AlreadyGone),
                    Err(errno) => Err(MountError::Unmount {
                        target: self.target.clone(),
                        errno,
                    }),
                }
            }
            Err(Errno::EINVAL | Errno::ENOENT) => Ok(Unmounted::AlreadyGone),
            Err(errno) => Err(MountError::Unmount {
                target: self.target.clone(),
                errno,
            }),
        }
    }
}

/// Change the flags of the FUSE mount at `target` (mount(2) `MS_REMOUNT`).
/// `edit` maps the current flags to the new ones. The kernel handles this for
/// FUSE without involving the daemon (it syncs the filesystem when going
/// read-only). Returns the mount as it was before.
pub fn remount(
    target: &Path,
    edit: impl FnOnce(MsFlags) -> MsFlags,
) -> Result<MountInfo, MountError> {
    let target = check_mountpoint(target)?;
    let mounts = read_mountinfo()?;
    let top = top_mount_at(&mounts, &target)
        .ok_or_else(|| MountError::NotMounted(target.clone()))?
        .clone();
    if !top.is_fuse() {
        return Err(MountError::NotFuse {
            target,
            fstype: top.fstype,
        });
    }
    let flags = edit(top.flags()) | MsFlags::MS_REMOUNT;
    log::debug!("remount {}: {:?}", target.display(), flags);
    nix::mount::mount::<str, Path, str, str>(None, &target, None, flags, None)
        .map_err(|errno| MountError::Remount { target, errno })?;
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/root rw
40 22 0:40 / /tmp/with\\040space rw,nosuid,nodev,relatime shared:20 - fuse a.img,b.img rw,user_id=0,group_id=0
41 40 0:41 / /tmp/with\\040space rw,nosuid,nodev,noatime - fuse.keelfs odd\\134name ro,user_id=0,group_id=0,allow_other
42 22 0:42 / /mnt/x ro,nodev - fuse.keelfs x.img rw,sync,user_id=0,group_id=0
garbage line
";

    #[test]
    fn parses_and_unescapes_mountinfo() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(mounts.len(), 4);
        let m = &mounts[1];
        assert_eq!((m.mount_id, m.parent_id, m.dev), (40, 22, (0, 40)));
        assert_eq!(m.mount_point, PathBuf::from("/tmp/with space"));
        assert_eq!(
            (m.fstype.as_str(), m.source.as_str()),
            ("fuse", "a.img,b.img")
        );
        assert_eq!(m.super_options, "rw,user_id=0,group_id=0");
        assert_eq!(mounts[2].source, "odd\\name");
        assert!(m.is_fuse() && mounts[2].is_fuse() && !mounts[0].is_fuse());
    }

    #[test]
    fn top_mount_is_the_one_stacked_last() {
        let mounts = parse_mountinfo(SAMPLE);
        let top = top_mount_at(&mounts, Path::new("/tmp/with space")).unwrap();
        assert_eq!(top.mount_id, 41);
        assert!(top_mount_at(&mounts, Path::new("/nowhere")).is_none());
    }

    #[test]
    fn current_flags_for_remount() {
        let mounts = parse_mountinfo(SAMPLE);
        assert_eq!(
            mounts[1].flags(),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RELATIME
        );
        assert_eq!(
            mounts[2].flags(),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME | MsFlags::MS_RDONLY
        );
        assert!(mounts[2].super_read_only() && !mounts[1].super_read_only());
        assert_eq!(
            mounts[3].flags(),
            MsFlags::MS_RDONLY
                | MsFlags::MS_NODEV
                | MsFlags::MS_STRICTATIME
                | MsFlags::MS_SYNCHRONOUS
        );
    }

    #[test]
    fn mount_data_string() {
        let spec = FuseMountSpec {
            source: "a,b",
            target: Path::new("/m"),
            fstype: "fuse",
            flags: MsFlags::empty(),
            allow_other: true,
            default_permissions: true,
        };
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        assert_eq!(
            spec.data(7),
            format!(
                "fd=7,rootmode=40000,user_id={uid},group_id={gid},allow_other,default_permissions"
            )
        );
        let plain = FuseMountSpec {
            allow_other: false,
            default_permissions: false,
            ..spec
        };
        assert_eq!(
            plain.data(3),
            format!("fd=3,rootmode=40000,user_id={uid},group_id={gid}")
        );
    }

    #[test]
    fn mountpoint_checks() {
        let dir = std::env::temp_dir();
        assert!(check_mountpoint(&dir).is_ok());
        assert!(matches!(
            check_mountpoint(Path::new("/nonexistent/keelfs/mnt")),
            Err(MountError::Mountpoint { .. })
        ));
        assert!(matches!(
            check_mountpoint(Path::new("/proc/self/status")),
            Err(MountError::NotADirectory(_))
        ));
    }
}
