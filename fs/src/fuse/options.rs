//! Command line and `-o` mount options of the keelfs mount program.
//!
//! The program is invoked as `keelfs SOURCE MOUNTPOINT [-o OPTIONS]... [-f]`,
//! either by hand or by `mount.fuse3`, which `mount -t fuse.keelfs` runs and
//! which executes `/bin/sh -c "keelfs SRC MNT -o OPTS,dev,suid"` (it appends
//! `dev,suid` unless `nodev`/`nosuid` were given, and drops `user`, `users`,
//! `nouser`, `auto`, `noauto`, `nofail`, `_netdev` and empty options).
//!
//! Everything is validated here, before anything is mounted, into a typed
//! [`MountOptions`]:
//!
//! * SOURCE is kept exactly as given: it is the mount source that
//!   `/proc/mounts`, `findmnt -S` and `umount SOURCE` see. Its comma-separated
//!   parts are the mirror legs (`a.img,b.img`); `-o device=PATH` adds a leg
//!   (repeatable). Relative leg paths are made absolute against the current
//!   directory, because the daemon changes to `/`.
//! * Generic VFS options (`ro`, `nodev`, `noatime`, ...) become `MS_*` flags;
//!   for pairs such as `ro`/`rw` or `dev`/`nodev` the last one wins. A fresh
//!   mount starts from `nodev,nosuid` (the FUSE/libfuse default; `mount.fuse3`
//!   lifts it with `dev,suid`); `defaults` means `rw,dev,suid,exec,async`.
//! * FUSE options: `allow_other`, `allow_root`, `default_permissions`.
//! * keelfs options: `acl` (the default: POSIX ACLs, which make the kernel
//!   check permissions as with `default_permissions`), `noacl`, `degraded`,
//!   `cache_size=BYTES` (suffix K, M, G or T,
//!   binary, optional `B`/`iB`), `attr_timeout=SECS`, `entry_timeout=SECS`,
//!   `negative_timeout=SECS` (decimal seconds), `debug`, `device=PATH`,
//!   `fsname=NAME` (overrides the mount source shown in `/proc/mounts`),
//!   `subtype=NAME` (the mount type becomes `fuse.NAME`; without it the type is
//!   plain `fuse`, which is what xfstests' `df -T` check wants with
//!   `FSTYP=fuse`), `threads=N` (worker pool size), `logfile=PATH` (daemon log
//!   instead of /dev/null).
//! * Accepted and ignored: `auto`, `noauto`, `user`, `users`, `nouser`,
//!   `owner`, `group`, `nofail`, `_netdev`, `comment=...`, `x-*`.
//! * `remount`: see [`MountOptions::remount`]. On a remount, options only the
//!   daemon knows (keelfs options) and the kernel's own FUSE options that
//!   mount(8) copies from `/proc/self/mountinfo` (`user_id=`, `group_id=`,
//!   `rootmode=`, `max_read=`, `blksize=`) are ignored; on a fresh mount the
//!   kernel FUSE options are refused because keelfs sets them itself.
//!
//! A comma inside a value can be written as `\,` and a backslash as `\\`.
//! Anything else unknown is an error: the program exits before mounting.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use nix::mount::MsFlags;

/// Why the command line or an option was refused.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// clap's own error, including `--help` and `--version` output.
    #[error("{0}")]
    Cli(#[from] clap::Error),
    #[error("unknown mount option `{0}`")]
    Unknown(String),
    #[error("mount option `{0}` needs a value (`{0}=...`)")]
    MissingValue(String),
    #[error("mount option `{0}` takes no value")]
    UnexpectedValue(String),
    #[error("invalid value in mount option `{name}={value}`: {reason}")]
    InvalidValue {
        name: String,
        value: String,
        reason: String,
    },
    #[error("mount option `{0}` is set by keelfs itself and cannot be given")]
    Reserved(String),
    #[error("mount option `{name}` is not supported: {reason}")]
    Unsupported { name: String, reason: &'static str },
    #[error(
        "no device given: name the devices in SOURCE (`a.img,b.img`) or with `-o device=PATH`"
    )]
    NoLegs,
    #[error("empty device name in SOURCE `{0}`")]
    EmptyLeg(String),
    #[error("device {} is given twice", .0.display())]
    DuplicateLeg(PathBuf),
    #[error("empty MOUNTPOINT")]
    EmptyMountpoint,
    #[error("cannot read the current directory: {0}")]
    Cwd(std::io::Error),
}

/// The raw command line, as clap parses it.
#[derive(Debug, Parser)]
#[command(
    name = "keelfs",
    version,
    about = "Mount a keelfs filesystem (mirrored legs with integrity tags) over FUSE",
    after_help = "SOURCE names the devices: `a.img,b.img`. It is also the mount source shown \
                  in /proc/mounts.\nThe program returns once the filesystem is mounted and \
                  serving; `umount MOUNTPOINT` or SIGTERM stops it."
)]
struct Cli {
    /// Devices (legs), comma separated; also the mount source.
    source: String,
    /// Directory to mount on.
    mountpoint: PathBuf,
    /// Mount options, comma separated; may be repeated.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    options: Vec<String>,
    /// Stay in the foreground (do not daemonize).
    #[arg(short = 'f')]
    foreground: bool,
}

/// Access-time handling, one of the kernel's three modes; `None` in
/// [`VfsFlags::atime`] means the kernel default (`relatime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atime {
    NoAtime,
    RelAtime,
    StrictAtime,
}

/// One option's effect on the `MS_*` mount flags: bits to set and bits to
/// clear. Applied in command-line order, so the last of a pair wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlagEdit {
    set: MsFlags,
    clear: MsFlags,
}

impl FlagEdit {
    const fn set(bits: MsFlags) -> Self {
        FlagEdit {
            set: bits,
            clear: MsFlags::empty(),
        }
    }
    const fn clear(bits: MsFlags) -> Self {
        FlagEdit {
            set: MsFlags::empty(),
            clear: bits,
        }
    }
}

/// The generic VFS options, as an ordered list of flag edits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfsFlags {
    edits: Vec<FlagEdit>,
}

/// `MS_NOSYMFOLLOW` (Linux 5.10), which nix does not name.
pub const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);

/// The `MS_*` bits the VFS options can touch.
pub const VFS_FLAG_MASK: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_SYNCHRONOUS)
    .union(MsFlags::MS_DIRSYNC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME)
    .union(MsFlags::MS_LAZYTIME)
    .union(MS_NOSYMFOLLOW)
    .union(MsFlags::MS_SILENT);

/// What a fresh mount starts from before the options are applied.
pub const FRESH_MOUNT_BASE: MsFlags = MsFlags::MS_NODEV.union(MsFlags::MS_NOSUID);

impl VfsFlags {
    /// The flags for a fresh mount: [`FRESH_MOUNT_BASE`] with the options applied.
    pub fn fresh(&self) -> MsFlags {
        self.apply(FRESH_MOUNT_BASE)
    }

    /// `base` (for a remount: the mount's current flags) with the options applied.
    pub fn apply(&self, base: MsFlags) -> MsFlags {
        self.edits
            .iter()
            .fold(base, |flags, edit| (flags - edit.clear) | edit.set)
    }

    /// Whether a fresh mount is read-only.
    pub fn read_only(&self) -> bool {
        self.fresh().contains(MsFlags::MS_RDONLY)
    }

    /// The access-time mode of a fresh mount (`None`: kernel default, relatime).
    pub fn atime(&self) -> Option<Atime> {
        let flags = self.fresh();
        if flags.contains(MsFlags::MS_NOATIME) {
            Some(Atime::NoAtime)
        } else if flags.contains(MsFlags::MS_STRICTATIME) {
            Some(Atime::StrictAtime)
        } else if flags.contains(MsFlags::MS_RELATIME) {
            Some(Atime::RelAtime)
        } else {
            None
        }
    }

    fn push(&mut self, edit: FlagEdit) {
        self.edits.push(edit);
    }
}

/// Everything the mount program was asked to do, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// SOURCE exactly as given (the mount source unless `fsname=` is set).
    pub source: String,
    /// MOUNTPOINT, made absolute (not canonicalized: it may not exist yet).
    pub mountpoint: PathBuf,
    /// The mirror legs: SOURCE's parts, then every `device=`, absolute.
    pub legs: Vec<PathBuf>,
    /// `-f`: do not daemonize.
    pub foreground: bool,
    /// `remount` was given: change the flags of the existing FUSE mount at
    /// MOUNTPOINT with mount(2) `MS_REMOUNT` and exit; no daemon is started.
    /// mount(8) runs the helper this way for `mount -o remount,ro` on a
    /// `fuse.SUBTYPE` mount, passing the current options plus the new ones.
    pub remount: bool,
    /// Generic VFS flags.
    pub vfs: VfsFlags,
    pub allow_other: bool,
    pub allow_root: bool,
    pub default_permissions: bool,
    /// keelfs: POSIX ACLs (`acl`, the default; `noacl` turns them off).
    /// With ACLs the kernel checks permissions itself, as with
    /// `default_permissions`.
    pub acl: bool,
    /// keelfs: mount even when a leg is missing or failed.
    pub degraded: bool,
    /// keelfs: metadata cache size in bytes.
    pub cache_size: Option<u64>,
    pub attr_timeout: Option<Duration>,
    pub entry_timeout: Option<Duration>,
    pub negative_timeout: Option<Duration>,
    /// Debug logging.
    pub debug: bool,
    /// Mount source override.
    pub fsname: Option<String>,
    /// Mount type `fuse.SUBTYPE` instead of `fuse`.
    pub subtype: Option<String>,
    /// Worker pool size.
    pub threads: Option<usize>,
    /// Where the daemon logs (default: nowhere once daemonized).
    pub logfile: Option<PathBuf>,
    /// Options accepted and ignored (fstab/mount(8) bookkeeping, or not
    /// applicable to a remount), for a debug log line.
    pub ignored: Vec<String>,
}

/// Options mount(8)/fstab use for their own bookkeeping.
const IGNORED: &[&str] = &[
    "auto", "noauto", "user", "users", "nouser", "owner", "group", "nofail", "_netdev",
];

/// FUSE options the kernel shows in mountinfo and keelfs sets itself.
const KERNEL_FUSE_OPTIONS: &[&str] = &[
    "fd", "rootmode", "user_id", "group_id", "max_read", "blksize",
];

impl MountOptions {
    /// Parse a full command line (`args[0]` is the program name).
    pub fn from_args<I, T>(args: I) -> Result<MountOptions, OptionsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        let cwd = std::env::current_dir().map_err(OptionsError::Cwd)?;
        MountOptions::from_parts(
            &cli.source,
            &cli.mountpoint,
            &cli.options,
            cli.foreground,
            &cwd,
        )
    }

    /// Build from already split arguments. `option_args` are the values of
    /// the `-o` arguments (each comma separated); relative paths are resolved
    /// against `cwd`.
    pub fn from_parts(
        source: &str,
        mountpoint: &Path,
        option_args: &[String],
        foreground: bool,
        cwd: &Path,
    ) -> Result<MountOptions, OptionsError> {
        if mountpoint.as_os_str().is_empty() {
            return Err(OptionsError::EmptyMountpoint);
        }
        let items: Vec<String> = option_args
            .iter()
            .flat_map(|arg| split_options(arg))
            .filter(|item| !item.is_empty())
            .collect();
        let remount = items.iter().any(|item| item == "remount");

        let mut opts = MountOptions {
            source: source.to_owned(),
            mountpoint: cwd.join(mountpoint),
            legs: Vec::new(),
            foreground,
            remount,
            vfs: VfsFlags::default(),
            allow_other: false,
            allow_root: false,
            default_permissions: false,
            acl: true,
            degraded: false,
            cache_size: None,
            attr_timeout: None,
            entry_timeout: None,
            negative_timeout: None,
            debug: false,
            fsname: None,
            subtype: None,
            threads: None,
            logfile: None,
            ignored: Vec::new(),
        };
        let mut devices = Vec::new();
        for item in &items {
            opts.apply_one(item, &mut devices, cwd)?;
        }
        if !remount {
            opts.legs = collect_legs(source, &devices, cwd)?;
        }
        Ok(opts)
    }

    fn apply_one(
        &mut self,
        item: &str,
        devices: &mut Vec<String>,
        cwd: &Path,
    ) -> Result<(), OptionsError> {
        let (name, value) = match item.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (item, None),
        };
        if let Some(edit) = vfs_edit(name) {
            no_value(name, value)?;
            self.vfs.push(edit);
            return Ok(());
        }
        if name == "defaults" {
            no_value(name, value)?;
            self.vfs.push(FlagEdit::clear(
                MsFlags::MS_RDONLY
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_SYNCHRONOUS,
            ));
            return Ok(());
        }
        if IGNORED.contains(&name) || name.starts_with("x-") || name == "comment" {
            self.ignored.push(item.to_owned());
            return Ok(());
        }
        if KERNEL_FUSE_OPTIONS.contains(&name) {
            if self.remount {
                self.ignored.push(item.to_owned());
                return Ok(());
            }
            return Err(OptionsError::Reserved(name.to_owned()));
        }
        match name {
            "remount" => no_value(name, value)?,
            "allow_other" => {
                no_value(name, value)?;
                self.allow_other = true;
            }
            "allow_root" => {
                no_value(name, value)?;
                self.allow_root = true;
            }
            "default_permissions" => {
                no_value(name, value)?;
                self.default_permissions = true;
            }
            "bind" | "rbind" | "move" | "rmove" => {
                return Err(OptionsError::Unsupported {
                    name: name.to_owned(),
                    reason: "use mount(8) directly for bind and move mounts",
                })
            }
            "auto_unmount" => {
                return Err(OptionsError::Unsupported {
                    name: name.to_owned(),
                    reason: "keelfs unmounts itself on SIGTERM, SIGINT and SIGHUP",
                })
            }
            "drop_privileges" => {
                return Err(OptionsError::Unsupported {
                    name: name.to_owned(),
                    reason: "keelfs mounts with mount(2) itself and needs CAP_SYS_ADMIN",
                })
            }
            _ => return self.apply_keelfs(name, value, item, devices, cwd),
        }
        Ok(())
    }

    /// The keelfs-specific options; ignored (but still validated) on a remount.
    fn apply_keelfs(
        &mut self,
        name: &str,
        value: Option<&str>,
        item: &str,
        devices: &mut Vec<String>,
        cwd: &Path,
    ) -> Result<(), OptionsError> {
        let mut next = self.clone();
        match name {
            "degraded" => {
                no_value(name, value)?;
                next.degraded = true;
            }
            "acl" | "noacl" => {
                no_value(name, value)?;
                next.acl = name == "acl";
            }
            "debug" => {
                no_value(name, value)?;
                next.debug = true;
            }
            "cache_size" => {
                let value = need_value(name, value)?;
                next.cache_size =
                    Some(parse_size(value).map_err(|reason| invalid(name, value, reason))?);
            }
            "attr_timeout" | "entry_timeout" | "negative_timeout" => {
                let value = need_value(name, value)?;
                let secs = parse_seconds(value).map_err(|reason| invalid(name, value, reason))?;
                match name {
                    "attr_timeout" => next.attr_timeout = Some(secs),
                    "entry_timeout" => next.entry_timeout = Some(secs),
                    _ => next.negative_timeout = Some(secs),
                }
            }
            "device" => {
                let value = need_value(name, value)?;
                if value.is_empty() {
                    return Err(invalid(name, value, "empty path".into()));
                }
                if !self.remount {
                    devices.push(value.to_owned());
                }
            }
            "fsname" => {
                let value = need_value(name, value)?;
                if value.is_empty() || value.chars().any(char::is_whitespace) {
                    return Err(invalid(
                        name,
                        value,
                        "must be non-empty, without blanks".into(),
                    ));
                }
                next.fsname = Some(value.to_owned());
            }
            "subtype" => {
                let value = need_value(name, value)?;
                validate_subtype(value).map_err(|reason| invalid(name, value, reason))?;
                next.subtype = Some(value.to_owned());
            }
            "threads" => {
                let value = need_value(name, value)?;
                let n: usize = value
                    .parse()
                    .map_err(|_| invalid(name, value, "not a number".into()))?;
                if !(1..=1024).contains(&n) {
                    return Err(invalid(name, value, "must be 1 to 1024".into()));
                }
                next.threads = Some(n);
            }
            "logfile" => {
                let value = need_value(name, value)?;
                if value.is_empty() {
                    return Err(invalid(name, value, "empty path".into()));
                }
                next.logfile = Some(cwd.join(value));
            }
            _ => return Err(OptionsError::Unknown(item.to_owned())),
        }
        if self.remount {
            self.ignored.push(item.to_owned());
        } else {
            *self = next;
        }
        Ok(())
    }

    /// The mount source: `fsname=` if given, else SOURCE exactly as given
    /// (`none` if SOURCE is empty and the legs all come from `device=`).
    pub fn mount_source(&self) -> &str {
        match (&self.fsname, self.source.as_str()) {
            (Some(name), _) => name,
            (None, "") => "none",
            (None, source) => source,
        }
    }

    /// The mount type: `fuse`, or `fuse.SUBTYPE` with `subtype=`.
    pub fn fstype(&self) -> String {
        match &self.subtype {
            Some(subtype) => format!("fuse.{subtype}"),
            None => "fuse".to_owned(),
        }
    }

    /// The `MS_*` flags for a fresh mount.
    pub fn ms_flags(&self) -> MsFlags {
        self.vfs.fresh()
    }

    /// Whether the filesystem is to be mounted read-only.
    pub fn read_only(&self) -> bool {
        self.vfs.read_only()
    }
}

/// Split one `-o` argument on commas; `\,` is a literal comma and `\\` a
/// backslash.
pub fn split_options(arg: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                None => current.push('\\'),
            },
            ',' => items.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    items.push(current);
    items
}

/// The flag edit of a generic VFS option, if `name` is one.
fn vfs_edit(name: &str) -> Option<FlagEdit> {
    use MsFlags as F;
    let atime_modes = F::MS_NOATIME | F::MS_RELATIME | F::MS_STRICTATIME;
    Some(match name {
        "ro" => FlagEdit::set(F::MS_RDONLY),
        "rw" => FlagEdit::clear(F::MS_RDONLY),
        "nodev" => FlagEdit::set(F::MS_NODEV),
        "dev" => FlagEdit::clear(F::MS_NODEV),
        "nosuid" => FlagEdit::set(F::MS_NOSUID),
        "suid" => FlagEdit::clear(F::MS_NOSUID),
        "noexec" => FlagEdit::set(F::MS_NOEXEC),
        "exec" => FlagEdit::clear(F::MS_NOEXEC),
        "sync" => FlagEdit::set(F::MS_SYNCHRONOUS),
        "async" => FlagEdit::clear(F::MS_SYNCHRONOUS),
        "dirsync" => FlagEdit::set(F::MS_DIRSYNC),
        "nodiratime" => FlagEdit::set(F::MS_NODIRATIME),
        "diratime" => FlagEdit::clear(F::MS_NODIRATIME),
        "lazytime" => FlagEdit::set(F::MS_LAZYTIME),
        "nolazytime" => FlagEdit::clear(F::MS_LAZYTIME),
        "nosymfollow" => FlagEdit::set(MS_NOSYMFOLLOW),
        "symfollow" => FlagEdit::clear(MS_NOSYMFOLLOW),
        "silent" => FlagEdit::set(F::MS_SILENT),
        "loud" => FlagEdit::clear(F::MS_SILENT),
        "noatime" => FlagEdit {
            set: F::MS_NOATIME,
            clear: atime_modes - F::MS_NOATIME,
        },
        "relatime" => FlagEdit {
            set: F::MS_RELATIME,
            clear: atime_modes - F::MS_RELATIME,
        },
        "strictatime" => FlagEdit {
            set: F::MS_STRICTATIME,
            clear: atime_modes - F::MS_STRICTATIME,
        },
        "atime" => FlagEdit::clear(F::MS_NOATIME),
        "norelatime" => FlagEdit::clear(F::MS_RELATIME),
        "nostrictatime" => FlagEdit::clear(F::MS_STRICTATIME),
        _ => return None,
    })
}

fn no_value(name: &str, value: Option<&str>) -> Result<(), OptionsError> {
    match value {
        None => Ok(()),
        Some(_) => Err(OptionsError::UnexpectedValue(name.to_owned())),
    }
}

fn need_value<'a>(name: &str, value: Option<&'a str>) -> Result<&'a str, OptionsError> {
    value.ok_or_else(|| OptionsError::MissingValue(name.to_owned()))
}

fn invalid(name: &str, value: &str, reason: String) -> OptionsError {
    OptionsError::InvalidValue {
        name: name.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

/// The legs: SOURCE split on commas, then the `device=` values; absolute.
fn collect_legs(
    source: &str,
    devices: &[String],
    cwd: &Path,
) -> Result<Vec<PathBuf>, OptionsError> {
    let mut legs: Vec<PathBuf> = Vec::new();
    let from_source: Vec<&str> = if source.is_empty() {
        Vec::new()
    } else {
        source.split(',').collect()
    };
    if from_source.iter().any(|leg| leg.is_empty()) {
        return Err(OptionsError::EmptyLeg(source.to_owned()));
    }
    for leg in from_source
        .into_iter()
        .chain(devices.iter().map(String::as_str))
    {
        let path = cwd.join(leg);
        if legs.contains(&path) {
            return Err(OptionsError::DuplicateLeg(path));
        }
        legs.push(path);
    }
    if legs.is_empty() {
        return Err(OptionsError::NoLegs);
    }
    Ok(legs)
}

/// `123`, `64K`, `512M`, `2G`, `1T`, optionally followed by `B` or `iB`
/// (always binary multiples). Zero is refused.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err("expected a number of bytes, e.g. 64M".into());
    }
    let number: u64 = digits.parse().map_err(|_| "number too large".to_string())?;
    let unit = suffix
        .strip_suffix("iB")
        .or_else(|| suffix.strip_suffix('B'))
        .unwrap_or(suffix);
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("unknown size suffix `{suffix}` (use K, M, G or T)")),
    };
    if unit.is_empty() && !suffix.is_empty() && suffix != "B" {
        return Err(format!("unknown size suffix `{suffix}`"));
    }
    let bytes = number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| "size too large".to_string())?;
    if bytes == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(bytes)
}

/// Non-negative decimal seconds, at most one day.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err("expected seconds, e.g. 1 or 0.5".into());
    }
    let secs: f64 = text
        .parse()
        .map_err(|_| "expected seconds, e.g. 1 or 0.5".to_string())?;
    if secs > 86_400.0 {
        return Err("at most 86400 seconds".into());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn validate_subtype(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("empty subtype".into());
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '+'))
    {
        return Err("only letters, digits and _ - . + are allowed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str, opts: &str) -> Result<MountOptions, OptionsError> {
        MountOptions::from_parts(
            source,
            Path::new("/mnt/k"),
            &[opts.to_owned()],
            false,
            Path::new("/work"),
        )
    }

    fn ok(opts: &str) -> MountOptions {
        parse("a.img,b.img", opts).unwrap_or_else(|e| panic!("`{opts}` refused: {e}"))
    }

    #[test]
    fn every_documented_option_is_accepted() {
        let every = "rw,ro,allow_other,default_permissions,dev,suid,nodev,nosuid,exec,noexec,\
                     sync,dirsync,noatime,relatime,strictatime,nodiratime,lazytime,atime,diratime,\
                     async,defaults,auto,noauto,user,nouser,nofail,_netdev,x-systemd.automount,\
                     x-initrd.mount,noacl,degraded,cache_size=64M,attr_timeout=1.5,entry_timeout=2,\
                     negative_timeout=0,debug,device=c.img,fsname=keel,subtype=keelfs,\
                     users,owner,group,comment=hello,allow_root,threads=8,logfile=k.log,\
                     norelatime,nostrictatime,nolazytime,symfollow,nosymfollow,silent,loud";
        for item in split_options(every) {
            ok(&item);
        }
        let all = ok(every);
        assert!(all.allow_other && all.allow_root && all.default_permissions);
        assert!(all.degraded && all.debug && !all.acl);
        assert!(ok("").acl && ok("noacl,acl").acl);
        assert_eq!(all.cache_size, Some(64 << 20));
        assert_eq!(all.attr_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(all.entry_timeout, Some(Duration::from_secs(2)));
        assert_eq!(all.negative_timeout, Some(Duration::ZERO));
        assert_eq!(all.fsname.as_deref(), Some("keel"));
        assert_eq!(all.subtype.as_deref(), Some("keelfs"));
        assert_eq!(all.threads, Some(8));
        assert_eq!(all.logfile, Some(PathBuf::from("/work/k.log")));
        assert_eq!(
            all.legs,
            ["/work/a.img", "/work/b.img", "/work/c.img"].map(PathBuf::from)
        );
        assert_eq!(all.ignored.len(), 12, "{:?}", all.ignored);
    }

    #[test]
    fn unknown_and_malformed_options_are_errors() {
        for (opts, expect) in [
            ("bogus", "unknown mount option `bogus`"),
            ("ro,frobnicate=3", "unknown mount option `frobnicate=3`"),
            ("cache_size", "needs a value"),
            ("cache_size=", "invalid value"),
            ("cache_size=12Q", "unknown size suffix"),
            ("cache_size=0", "greater than zero"),
            ("cache_size=99999999999T", "too large"),
            ("attr_timeout=-1", "expected seconds"),
            ("attr_timeout=abc", "expected seconds"),
            ("entry_timeout=1e9", "expected seconds"),
            ("negative_timeout=100000", "at most"),
            ("ro=1", "takes no value"),
            ("degraded=yes", "takes no value"),
            ("subtype=", "empty subtype"),
            ("subtype=a/b", "only letters"),
            ("fsname=", "non-empty"),
            ("threads=0", "1 to 1024"),
            ("device=", "empty path"),
            ("fd=3", "set by keelfs itself"),
            ("user_id=0", "set by keelfs itself"),
            ("rootmode=40000", "set by keelfs itself"),
            ("bind", "not supported"),
            ("auto_unmount", "not supported"),
            ("drop_privileges", "not supported"),
            ("device=a.img", "given twice"),
        ] {
            let err = parse("a.img,b.img", opts).expect_err(opts).to_string();
            assert!(
                err.contains(expect),
                "`{opts}`: got `{err}`, want `{expect}`"
            );
        }
    }

    #[test]
    fn fresh_mount_defaults_to_nodev_nosuid() {
        let opts = ok("");
        assert_eq!(opts.ms_flags(), MsFlags::MS_NODEV | MsFlags::MS_NOSUID);
        assert!(!opts.read_only());
        assert_eq!(opts.fstype(), "fuse");
        assert_eq!(opts.mount_source(), "a.img,b.img");
        assert!(!opts.remount);
    }

    #[test]
    fn dev_suid_appended_by_mount_fuse3_lift_the_defaults() {
        let opts = ok("ro,noatime,dev,suid");
        assert_eq!(opts.ms_flags(), MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
        // mount.fuse3 does not append them after nodev/nosuid.
        let opts = ok("nodev,nosuid");
        assert_eq!(opts.ms_flags(), MsFlags::MS_NODEV | MsFlags::MS_NOSUID);
    }

    #[test]
    fn last_of_a_pair_wins() {
        assert!(!ok("ro,rw").read_only());
        assert!(ok("rw,ro").read_only());
        assert!(ok("noexec,exec,sync,async").ms_flags() == FRESH_MOUNT_BASE);
        assert_eq!(ok("noatime,relatime").vfs.atime(), Some(Atime::RelAtime));
        assert_eq!(
            ok("relatime,strictatime").vfs.atime(),
            Some(Atime::StrictAtime)
        );
        assert_eq!(ok("strictatime,noatime").vfs.atime(), Some(Atime::NoAtime));
        assert_eq!(ok("noatime,atime").vfs.atime(), None);
        assert_eq!(ok("nodev,ro,defaults").ms_flags(), MsFlags::empty());
        assert_eq!(ok("defaults,nodev").ms_flags(), MsFlags::MS_NODEV);
    }

    #[test]
    fn subtype_selects_fuse_dot_type_and_fsname_the_source() {
        let opts = ok("subtype=keelfs,fsname=pool0");
        assert_eq!(opts.fstype(), "fuse.keelfs");
        assert_eq!(opts.mount_source(), "pool0");
        assert_eq!(opts.source, "a.img,b.img");
    }

    #[test]
    fn legs_from_source_and_device_options() {
        let opts = parse("/dev/loop0", "device=/dev/loop1,device=rel/x.img").unwrap();
        assert_eq!(
            opts.legs,
            ["/dev/loop0", "/dev/loop1", "/work/rel/x.img"].map(PathBuf::from)
        );
        assert_eq!(
            parse("", "device=a").unwrap().legs,
            [PathBuf::from("/work/a")]
        );
        assert!(matches!(parse("", "ro"), Err(OptionsError::NoLegs)));
        assert!(matches!(
            parse("a.img,", ""),
            Err(OptionsError::EmptyLeg(_))
        ));
        assert!(matches!(
            parse("a,b,a", ""),
            Err(OptionsError::DuplicateLeg(_))
        ));
    }

    #[test]
    fn escaped_commas_and_empty_items() {
        assert_eq!(split_options(r"a,b\,c,,d\\"), ["a", "b,c", "", "d\\"]);
        let opts = parse("x.img", r"device=odd\,name.img,,ro").unwrap();
        assert_eq!(opts.legs[1], PathBuf::from("/work/odd,name.img"));
        assert!(opts.read_only());
    }

    #[test]
    fn remount_as_mount_8_passes_it() {
        // What mount(8) hands mount.fuse3 for `mount -o remount,ro MNT`
        // (observed on this machine with util-linux 2.38.1).
        let opts = ok("ro,nosuid,nodev,relatime,remount,user_id=0,group_id=0,allow_other");
        assert!(opts.remount);
        assert!(opts.legs.is_empty());
        let current = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        assert_eq!(
            opts.vfs.apply(current),
            current | MsFlags::MS_RDONLY | MsFlags::MS_RELATIME
        );
        assert_eq!(opts.ignored, ["user_id=0", "group_id=0"]);
        // keelfs options cannot change without restarting the daemon: ignored,
        // but still validated.
        let opts = ok("remount,rw,cache_size=1G,degraded,device=z.img,subtype=x");
        assert!(opts.cache_size.is_none() && !opts.degraded && opts.subtype.is_none());
        assert_eq!(opts.ignored.len(), 4);
        assert!(parse("a", "remount,cache_size=huge").is_err());
        assert!(parse("a", "remount,bogus").is_err());
        assert_eq!(
            ok("remount,rw").vfs.apply(MsFlags::MS_RDONLY),
            MsFlags::empty()
        );
    }

    #[test]
    fn command_line() {
        let opts = MountOptions::from_args([
            "keelfs",
            "/a.img,/b.img",
            "/mnt/x",
            "-o",
            "ro,dev",
            "-f",
            "-o",
            "debug",
        ])
        .unwrap();
        assert_eq!(opts.source, "/a.img,/b.img");
        assert_eq!(opts.mountpoint, PathBuf::from("/mnt/x"));
        assert!(opts.foreground && opts.debug && opts.read_only());
        assert_eq!(opts.ms_flags(), MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        let glued = MountOptions::from_args(["keelfs", "/a", "/m", "-oro"]).unwrap();
        assert!(glued.read_only());
        assert!(matches!(
            MountOptions::from_args(["keelfs", "/a"]),
            Err(OptionsError::Cli(_))
        ));
        assert!(matches!(
            MountOptions::from_args(["keelfs", "/a", "/m", "-x"]),
            Err(OptionsError::Cli(_))
        ));
    }

    #[test]
    fn sizes_and_seconds() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("8k"), Ok(8192));
        assert_eq!(parse_size("3MiB"), Ok(3 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("M").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("1Bi").is_err());
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("NaN").is_err());
    }
}
