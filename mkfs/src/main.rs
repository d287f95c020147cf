//! `mkfs.keelfs [options] DEVICE [DEVICE...]`: create a keelfs filesystem
//! whose legs are the devices given (image files or block devices), every
//! one a mirror of the others. `mkfs -t keelfs DEVICE` runs it once it is
//! on the PATH (mkfs(8) runs `mkfs.TYPE`).
//!
//! Options, in the spirit of mkfs.ext4:
//!
//! | option | meaning |
//! |---|---|
//! | `-L LABEL` | volume label, up to 64 bytes of UTF-8 |
//! | `-U UUID` | filesystem uuid (8-4-4-4-12 hex, or `random`) |
//! | `-b SIZE` | block size: 1024 … 65536, a power of two; `4096` or `4k` |
//! | `-N COUNT` | exactly this many inodes |
//! | `-i BYTES` | one inode per this many bytes of device (1k … 64m; default 16k) |
//! | `-J SIZE` | journal size: a plain number is blocks (64 … 1048576); with a `k`, `m` or `g` suffix it is bytes, rounded down to whole blocks |
//! | `-F` | overwrite an existing filesystem |
//! | `-q` | print nothing but errors |
//! | `-n` | dry run: check everything, print the layout, write nothing |
//! | `-V` | print the version |
//!
//! Without `-F`, a device that holds any recognisable filesystem (keelfs,
//! ext2/3/4, xfs, btrfs, swap, LUKS, vfat, NTFS, iso9660, squashfs, LVM2, a
//! partition table) is refused. All devices must hold the same number of
//! blocks and be large enough for the layout. Every message names the
//! device it is about.
//!
//! Exit status, as mkfs.ext4: 0 success; 1 for any error, usage errors
//! (unknown or malformed options, missing device) included. `--help` and
//! `-V` exit 0.
//!
//! What it relies on: `keelfs_fs::devset` to open the devices (locked, so
//! a mounted keelfs device is refused) and to probe them, and
//! `keelfs_fs::mkfs::format` for everything written.

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use keelfs_engine::device::DeviceRef;
use keelfs_fs::devset::{
    format_uuid, open_legs, parse_uuid, probe_existing_filesystem, random_uuid, LegOpenOptions,
};
use keelfs_fs::error::FsError;
use keelfs_fs::format::layout::{check_block_size, InodeSpec, DEFAULT_BLOCK_SIZE};
use keelfs_fs::format::Superblock;
use keelfs_fs::mkfs::{format, plan, MkfsOptions};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const PROG: &str = "mkfs.keelfs";

/// Exit status of every error, usage errors included (as mkfs.ext4).
const EXIT_ERROR: u8 = 1;

/// Journal size as given to `-J`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JournalSize {
    Blocks(u64),
    Bytes(u64),
}

#[derive(Debug, Parser)]
#[command(
    name = PROG,
    bin_name = PROG,
    version,
    about = "Create a keelfs filesystem mirrored on one or more devices",
    after_help = "A plain -J number is blocks; with a k, m or g suffix it is bytes. \
                  Sizes use binary units (k = 1024).\n\
                  Exit status: 0 success, 1 any error (usage errors included)."
)]
struct Cli {
    /// Volume label (up to 64 bytes)
    #[arg(short = 'L', long = "label", value_name = "LABEL")]
    label: Option<String>,

    /// Filesystem UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, or "random")
    #[arg(short = 'U', long = "uuid", value_name = "UUID", value_parser = parse_uuid_arg)]
    uuid: Option<[u8; 16]>,

    /// Block size in bytes: 1024 to 65536, a power of two (e.g. 4096 or 4k)
    #[arg(short = 'b', long = "block-size", value_name = "SIZE", value_parser = parse_block_size)]
    block_size: Option<u32>,

    /// Number of inodes
    #[arg(short = 'N', long = "inodes", value_name = "COUNT", conflicts_with = "bytes_per_inode",
          value_parser = clap::value_parser!(u64).range(1..))]
    inodes: Option<u64>,

    /// Bytes of device per inode (1k to 64m; default 16k)
    #[arg(short = 'i', long = "bytes-per-inode", value_name = "BYTES", value_parser = parse_bytes)]
    bytes_per_inode: Option<u64>,

    /// Journal size: blocks, or bytes with a k/m/g suffix
    #[arg(short = 'J', long = "journal-size", value_name = "SIZE", value_parser = parse_journal)]
    journal: Option<JournalSize>,

    /// Overwrite an existing filesystem
    #[arg(short = 'F', long = "force")]
    force: bool,

    /// Quiet: print nothing but errors
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,

    /// Dry run: print the layout, write nothing
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,

    /// The devices (image files or block devices), one per mirror leg
    #[arg(value_name = "DEVICE", required = true, num_args = 1..)]
    devices: Vec<PathBuf>,
}

/// `123`, `4k`, `64M`, `1g` (binary units).
fn parse_size(text: &str) -> Result<(u64, bool), String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                _ => return Err(format!("unknown size suffix '{c}' (use k, m, g or t)")),
            };
            (&t[..i], Some(shift))
        }
        _ => (t, None),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a number (with an optional k, m, g or t suffix)"))?;
    match shift {
        None => Ok((n, false)),
        Some(s) => n
            .checked_mul(1u64 << s)
            .map(|v| (v, true))
            .ok_or_else(|| format!("'{text}' is too large")),
    }
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_size(text).map(|(n, _)| n)
}

fn parse_block_size(text: &str) -> Result<u32, String> {
    let n = parse_bytes(text)?;
    let bs = u32::try_from(n).map_err(|_| format!("block size {n} is too large"))?;
    check_block_size(bs)
        .map_err(|_| format!("block size {n} is not a power of two from 1024 to 65536"))?;
    Ok(bs)
}

fn parse_journal(text: &str) -> Result<JournalSize, String> {
    Ok(match parse_size(text)? {
        (n, false) => JournalSize::Blocks(n),
        (n, true) => JournalSize::Bytes(n),
    })
}

fn parse_uuid_arg(text: &str) -> Result<[u8; 16], String> {
    if text.eq_ignore_ascii_case("random") {
        return Ok(random_uuid());
    }
    parse_uuid(text).ok_or_else(|| {
        format!("'{text}' is not a uuid (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, or random)")
    })
}

fn human(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn summary(sb: &Superblock, devices: &[DeviceRef], dry_run: bool) -> String {
    let mut s = String::new();
    let l = &sb.layout;
    let bs = u128::from(l.block_size);
    let _ = writeln!(
        s,
        "{} a keelfs filesystem with {} blocks of {} bytes and {} inodes, mirrored on {} device{}",
        if dry_run { "Would create" } else { "Creating" },
        l.device_blocks,
        l.block_size,
        l.inode_count,
        devices.len(),
        if devices.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(s, "Filesystem UUID: {}", format_uuid(&sb.fs_uuid));
    if !sb.label.is_empty() {
        let _ = writeln!(s, "Filesystem label: {}", sb.label);
    }
    let _ = writeln!(s, "Block size: {}", l.block_size);
    let _ = writeln!(
        s,
        "Blocks per leg: {} ({})",
        l.device_blocks,
        human(u128::from(l.device_blocks) * bs)
    );
    let _ = writeln!(s, "Inodes: {}", l.inode_count);
    let _ = writeln!(
        s,
        "Journal: {} blocks ({})",
        l.journal.blocks,
        human(u128::from(l.journal.blocks) * bs)
    );
    let _ = writeln!(
        s,
        "Data blocks: {} from block {} ({} free)",
        l.data.blocks, l.data.start, sb.free_blocks
    );
    let _ = writeln!(s, "Legs:");
    for (i, (dev, m)) in devices.iter().zip(&sb.members).enumerate() {
        let _ = writeln!(
            s,
            "  {i}: {}  (device uuid {})",
            dev.name(),
            if dry_run {
                "assigned when written".to_string()
            } else {
                format_uuid(&m.uuid)
            }
        );
    }
    if dry_run {
        let _ = writeln!(s, "Layout of every leg (blocks):");
        for (name, region) in l.regions() {
            let _ = writeln!(
                s,
                "  {name:<20} {:>12} .. {:>12}  ({} blocks)",
                region.start,
                region.end(),
                region.blocks
            );
        }
    }
    s
}

/// An error of `format`, with a field the options set named by its option.
fn describe(e: &FsError) -> String {
    let option = match e {
        FsError::Format(f) => match f.field() {
            Some("journal_blocks") => Some("-J (journal size)"),
            Some("inode_count") => Some("-N (inode count)"),
            Some("bytes_per_inode") => Some("-i (bytes per inode)"),
            Some("label") => Some("-L (label)"),
            Some("block_size") => Some("-b (block size)"),
            _ => None,
        },
        _ => None,
    };
    match option {
        Some(o) => format!("bad {o}: {e}"),
        None => e.to_string(),
    }
}

/// Prints to stdout; a closed stdout (`| head`) is not an error of mkfs.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Prints to stderr, ignoring a closed stderr likewise.
fn complain(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    complain(&format!("{PROG}: {message}\n"));
    ExitCode::from(EXIT_ERROR)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // Every usage error shows the usage line (clap leaves it out of
            // some, such as invalid values).
            let text = e.render().to_string();
            complain(&text);
            if !text.contains("Usage:") {
                complain(&format!("\n{}\n", Cli::command().render_usage()));
            }
            return ExitCode::from(EXIT_ERROR);
        }
    };
    run(cli)
}

fn run(cli: Cli) -> ExitCode {
    let block_size = cli.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    let journal_blocks = match cli.journal {
        None => None,
        Some(JournalSize::Blocks(n)) => Some(n),
        Some(JournalSize::Bytes(b)) => Some(b / u64::from(block_size)),
    };
    let inodes = match (cli.inodes, cli.bytes_per_inode) {
        (Some(n), _) => InodeSpec::Count(n),
        (None, Some(ratio)) => InodeSpec::BytesPerInode(ratio),
        (None, None) => InodeSpec::default(),
    };
    let opts = MkfsOptions {
        block_size,
        inodes,
        journal_blocks,
        label: cli.label.clone().unwrap_or_default(),
        fs_uuid: cli.uuid,
        dry_run: cli.dry_run,
    };
    let open = LegOpenOptions {
        read_only: cli.dry_run,
        wait_for_lock: false,
    };
    let devices = match open_legs(&cli.devices, open) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    // Sizes and options first: refuse what cannot work before looking at
    // what the devices hold.
    if let Err(e) = plan(&devices, &opts) {
        return fail(describe(&e));
    }
    for dev in &devices {
        if let Some(what) = probe_existing_filesystem(dev.as_ref()) {
            if cli.dry_run {
                if !cli.quiet {
                    say(&format!(
                        "{}: contains {what} (a real run needs -F)\n",
                        dev.name()
                    ));
                }
            } else if cli.force {
                if !cli.quiet {
                    say(&format!("{}: overwriting {what}\n", dev.name()));
                }
            } else {
                return fail(format!(
                    "{}: contains {what}; use -F to overwrite it",
                    dev.name()
                ));
            }
        }
    }
    let started = Instant::now();
    let sb = match format(&devices, &opts) {
        Ok(sb) => sb,
        Err(e) => return fail(describe(&e)),
    };
    if !cli.quiet {
        let mut text = summary(&sb, &devices, cli.dry_run);
        if cli.dry_run {
            text.push_str("Dry run: nothing was written.\n");
        } else {
            let _ = writeln!(text, "Done in {:.2} s.", started.elapsed().as_secs_f64());
        }
        say(&text);
    }
    ExitCode::SUCCESS
}
