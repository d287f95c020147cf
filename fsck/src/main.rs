//! `fsck.keelfs [-n | -y | -p | -a] [-f] [-v] [-S] [-C fd] DEVICE [DEVICE...]`:
//! check (and repair) the keelfs filesystem whose mirror legs are the
//! devices given. Installed as `fsck.keelfs`, so `fsck -t keelfs DEVICE`
//! runs it (fsck(8) runs `fsck.TYPE`); cargo builds it as `fsck-keelfs`.
//! A DEVICE may be a comma-separated list, as the mount SOURCE is (fsck(8)
//! passes an fstab line's source as one argument). Members of the set that
//! were not given are looked for among the block devices by uuid
//! (`keelfs_fs::member_scan`); image files must be named.
//!
//! | option | meaning |
//! |---|---|
//! | `-n` | check only: open the devices read-only, change nothing (the default) |
//! | `-y` | repair everything that can be repaired |
//! | `-p`, `-a` | "preen": the same as `-y` here, since every fix fsck.keelfs makes is one it would make without asking (e2fsck's preen asks about some) |
//! | `-f` | check even a filesystem that looks clean |
//! | `-v` | list every problem |
//! | `-S` | do not look for members that were not given |
//! | `-C fd` | progress: fd 0 a percentage line on stderr, fd > 0 lines `pass current total device` for fsck(8) |
//! | `-t TYPE`, `-T`, `-N` | as fsck(8) may pass them: `-t` must name keelfs, `-T` is ignored, `-N` prints what would be done and exits |
//! | `-V`, `--version`; `--help` | print the version or the usage and exit 0 |
//!
//! Options combine (`-fy`, `-C0`). Exit status as fsck(8): 0 no errors,
//! 1 errors corrected, 4 errors left uncorrected, 8 operational error
//! (cannot open, not keelfs, I/O failure), 16 usage or syntax error.
//!
//! Relies on the `keelfs_fsck` library for everything but the command
//! line and the printing.

use keelfs_fsck::{
    fsck_paths, Finding, Mode, Options, Outcome, Pass, ProgressTarget, Severity, EXIT_CLEAN,
    EXIT_CORRECTED, EXIT_OPERATIONAL, EXIT_USAGE,
};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const PROG: &str = "fsck.keelfs";

const USAGE: &str = "\
Usage: fsck.keelfs [-n | -y | -p | -a] [-f] [-v] [-S] [-C fd] DEVICE [DEVICE...]

Check (and repair) a keelfs filesystem; give every mirror leg of it. A
DEVICE may be a comma-separated list (a.img,b.img). Members not given are
looked for among the block devices by uuid.

  -n      check only: open read-only, change nothing (the default)
  -y      repair everything that can be repaired
  -p, -a  repair what is safe without asking (the same as -y)
  -f      check even if the filesystem looks clean
  -v      list every problem
  -S      do not look for members that were not given
  -C fd   show progress (fd 0: on stderr; fd > 0: for fsck(8))
  -V      print the version

Exit status: 0 no errors, 1 errors corrected, 4 errors left uncorrected,
8 operational error, 16 usage error.
";

/// Whether to look for members that were not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    BlockDevices,
    Off,
}

/// The command line, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(Options, Vec<PathBuf>, Scan),
    DryRun(Options, Vec<PathBuf>),
    Help,
    Version,
}

fn parse(args: &[String]) -> Result<Command, String> {
    let mut mode: Option<(Mode, char)> = None;
    let mut force = false;
    let mut verbose = false;
    let mut dry_run = false;
    let mut scan = Scan::BlockDevices;
    let mut progress = ProgressTarget::None;
    let mut devices = Vec::new();
    let mut i = 0;
    let mut options_done = false;
    let mut set_mode = |m: Mode, c: char| -> Result<(), String> {
        match mode {
            Some((old, oc)) if old != m || (oc == 'n') != (c == 'n') => Err(format!(
                "only one of the options -n, -y and -p/-a may be given (-{oc} and -{c})"
            )),
            _ => {
                mode = Some((m, c));
                Ok(())
            }
        }
    };
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if options_done || !arg.starts_with('-') || arg == "-" {
            devices.push(PathBuf::from(arg));
            continue;
        }
        match arg.as_str() {
            "--" => {
                options_done = true;
                continue;
            }
            "--help" => return Ok(Command::Help),
            "--version" => return Ok(Command::Version),
            _ if arg.starts_with("--") => return Err(format!("unknown option '{arg}'")),
            _ => {}
        }
        let flags: Vec<char> = arg[1..].chars().collect();
        let mut k = 0;
        while k < flags.len() {
            let c = flags[k];
            k += 1;
            match c {
                'n' => set_mode(Mode::Check, 'n')?,
                'y' => set_mode(Mode::Repair, 'y')?,
                'p' | 'a' => set_mode(Mode::Repair, 'p')?,
                'f' => force = true,
                'v' => verbose = true,
                'T' => {}
                'N' => dry_run = true,
                'S' => scan = Scan::Off,
                'V' => return Ok(Command::Version),
                'C' | 't' => {
                    let value: String = if k < flags.len() {
                        let v = flags[k..].iter().collect();
                        k = flags.len();
                        v
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Err(format!("option -{c} needs a value"));
                    };
                    if c == 'C' {
                        let fd: i32 = value.parse().map_err(|_| {
                            format!("-C needs a file descriptor number, not '{value}'")
                        })?;
                        progress = match fd {
                            0 => ProgressTarget::Stderr,
                            fd if fd > 0 => ProgressTarget::Fd(fd),
                            _ => ProgressTarget::None,
                        };
                    } else if !value
                        .split(',')
                        .any(|t| matches!(t, "keelfs" | "fuse.keelfs"))
                    {
                        return Err(format!(
                            "-t {value}: this is fsck.keelfs, it checks keelfs filesystems only"
                        ));
                    }
                }
                other => return Err(format!("unknown option -{other}")),
            }
        }
    }
    let devices = keelfs_fs::member_scan::split_sources(&devices);
    if devices.is_empty() {
        return Err("no device given".to_string());
    }
    let opts = Options {
        mode: mode.map_or(Mode::Check, |m| m.0),
        force,
        verbose,
        progress,
    };
    Ok(if dry_run {
        Command::DryRun(opts, devices)
    } else {
        Command::Run(opts, devices, scan)
    })
}

/// `devices` plus the members of their set found among the block devices.
fn with_found_members(mut devices: Vec<PathBuf>, scan: Scan) -> Vec<PathBuf> {
    if scan == Scan::Off {
        return devices;
    }
    let candidates = keelfs_fs::member_scan::block_device_candidates();
    for found in keelfs_fs::member_scan::find_missing_members(&devices, &candidates) {
        complain(&format!(
            "{PROG}: member {} of the set found on {}\n",
            found.member,
            found.path.display()
        ));
        devices.push(found.path);
    }
    devices
}

fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

fn complain(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn finding_line(f: &Finding) -> String {
    let status = match (f.severity, f.fixable) {
        (Severity::Note, _) => "",
        (Severity::Error, true) => "",
        (Severity::Error, false) => " [cannot be fixed]",
    };
    format!("{f}{status}\n")
}

/// What to print for a run.
fn describe(outcome: &Outcome, opts: &Options, device: &str) -> String {
    let mut s = String::new();
    if outcome.skipped_clean {
        let u = outcome.usage;
        s.push_str(&format!(
            "{device}: clean, {}/{} files, {}/{} blocks\n",
            u.inodes_used, u.inodes, u.blocks_used, u.blocks
        ));
        return s;
    }
    if let Some(replayed) = &outcome.replayed {
        s.push_str(&format!("{replayed}\n"));
    }
    if let Some(replayed) = &outcome.replayed_in_memory {
        s.push_str(&format!(
            "{replayed}\n(in memory only, nothing was written: a mount or fsck.keelfs -y writes it)\n"
        ));
    }
    if let Some(why) = &outcome.replay_failed {
        s.push_str(&format!("journal not replayed: {why}\n"));
    }
    let first = outcome.first();
    if opts.verbose {
        for f in first.findings() {
            s.push_str(&finding_line(f));
        }
        for (round, r) in outcome.reports.iter().enumerate().skip(1) {
            if r.findings().is_empty() {
                continue;
            }
            s.push_str(&format!("After repair {round}:\n"));
            for f in r.findings() {
                s.push_str(&finding_line(f));
            }
        }
    } else {
        for f in first
            .findings()
            .iter()
            .filter(|f| f.severity == Severity::Note)
        {
            s.push_str(&finding_line(f));
        }
        for pass in Pass::ALL {
            let (errors, _) = first.counts(pass);
            if errors == 0 {
                continue;
            }
            s.push_str(&format!(
                "{pass} ({}): {errors} problem{} (-v lists them)\n",
                pass.title(),
                if errors == 1 { "" } else { "s" },
            ));
        }
        // What is left is always worth a line each.
        if opts.mode == Mode::Repair && outcome.reports.len() > 1 {
            for f in outcome.last().errors() {
                s.push_str(&format!("left: {}", finding_line(f)));
            }
        }
    }
    for r in &outcome.repairs {
        for p in &r.problems {
            s.push_str(&format!("repair: {p}\n"));
        }
    }
    let u = outcome.usage;
    let last = outcome.last();
    let errors = first.error_count();
    let status = match (opts.mode, outcome.exit_code) {
        (_, EXIT_CLEAN) => "clean".to_string(),
        (_, EXIT_CORRECTED) if errors == 0 => {
            "journal replayed\n***** FILESYSTEM WAS MODIFIED *****".to_string()
        }
        (_, EXIT_CORRECTED) => format!(
            "{errors} problem{} corrected\n***** FILESYSTEM WAS MODIFIED *****",
            if errors == 1 { "" } else { "s" }
        ),
        (Mode::Check, _) => format!(
            "{errors} problem{} found, left uncorrected (fsck.keelfs -y repairs {})",
            if errors == 1 { "" } else { "s" },
            if first.unfixable_count() == errors {
                "none of them".to_string()
            } else {
                format!("{}", errors - first.unfixable_count())
            }
        ),
        (Mode::Repair, _) => format!(
            "{} problem{} left uncorrected",
            last.error_count(),
            if last.error_count() == 1 { "" } else { "s" }
        ),
    };
    s.push_str(&format!(
        "{device}: {status}\n{device}: {}/{} files, {}/{} blocks\n",
        u.inodes_used, u.inodes, u.blocks_used, u.blocks
    ));
    s
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            complain(&format!("{PROG}: {e}\n\n{USAGE}"));
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    let (opts, devices) = match command {
        Command::Help => {
            say(USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            say(&format!("{PROG} {}\n", env!("CARGO_PKG_VERSION")));
            return ExitCode::SUCCESS;
        }
        Command::DryRun(opts, devices) => {
            let names: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
            say(&format!(
                "{PROG}: would {} {}\n",
                if opts.mode == Mode::Repair {
                    "check and repair"
                } else {
                    "check"
                },
                names.join(" ")
            ));
            return ExitCode::SUCCESS;
        }
        Command::Run(opts, devices, scan) => (opts, with_found_members(devices, scan)),
    };
    let device = devices[0].display().to_string();
    let outcome = fsck_paths(&devices, &opts);
    if let Some(e) = &outcome.error {
        complain(&format!("{PROG}: {e}\n"));
        return ExitCode::from(EXIT_OPERATIONAL as u8);
    }
    say(&describe(&outcome, &opts, &device));
    ExitCode::from(outcome.exit_code.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_fsck_style_options() {
        let Ok(Command::Run(o, d, _)) = parse(&args("-fy -v -C0 a.img b.img")) else {
            panic!()
        };
        assert_eq!(o.mode, Mode::Repair);
        assert!(o.force && o.verbose);
        assert_eq!(o.progress, ProgressTarget::Stderr);
        assert_eq!(d.len(), 2);
        let Ok(Command::Run(o, _, _)) = parse(&args("-a -t keelfs -T -C 5 x")) else {
            panic!()
        };
        assert_eq!(o.mode, Mode::Repair);
        assert_eq!(o.progress, ProgressTarget::Fd(5));
        let Ok(Command::Run(o, _, _)) = parse(&args("x")) else {
            panic!()
        };
        assert_eq!(o.mode, Mode::Check);
        let Ok(Command::Run(_, d, scan)) = parse(&args("-S a.img,b.img c.img")) else {
            panic!()
        };
        assert_eq!(d, ["a.img", "b.img", "c.img"].map(PathBuf::from));
        assert_eq!(scan, Scan::Off);
        assert!(matches!(parse(&args("-N -y x")), Ok(Command::DryRun(..))));
        assert_eq!(parse(&args("--help")), Ok(Command::Help));
        assert_eq!(parse(&args("-V")), Ok(Command::Version));
        assert!(parse(&args("-p -a x")).is_ok());
    }

    #[test]
    fn refuses_bad_command_lines() {
        for bad in [
            "",
            "-n -y x",
            "-q x",
            "-C",
            "-C x y",
            "-t ext4 x",
            "--frobnicate x",
            "-f",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }
}
