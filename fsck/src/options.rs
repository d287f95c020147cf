//! What the user asked for: check only or repair, forced or not, how
//! talkative, and where progress goes.

/// Check only, or repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-n`: open the devices read-only and change nothing.
    Check,
    /// `-y` (and `-p`/`-a`, which are the same here: every fix fsck.keelfs
    /// makes is one it would make without asking): repair everything that
    /// can be repaired.
    Repair,
}

/// Where progress is reported (`-C fd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressTarget {
    /// No progress.
    #[default]
    None,
    /// `-C 0`: a percentage line on stderr, rewritten in place.
    Stderr,
    /// `-C fd` with fd > 0: lines `pass current total device` on that file
    /// descriptor, as e2fsck writes them for fsck(8).
    Fd(i32),
}

/// The options of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// `-f`: check even a filesystem that looks clean.
    pub force: bool,
    /// `-v`: list every problem.
    pub verbose: bool,
    pub progress: ProgressTarget,
}

impl Options {
    /// Check only, forced, quiet: what tests mostly want.
    pub fn check() -> Options {
        Options {
            mode: Mode::Check,
            force: true,
            verbose: false,
            progress: ProgressTarget::None,
        }
    }

    /// Repair, forced, quiet.
    pub fn repair() -> Options {
        Options {
            mode: Mode::Repair,
            ..Options::check()
        }
    }
}
