//! fsck.keelfs: checks and repairs a keelfs filesystem on its mirrored
//! devices (`docs/format.md`), the library behind the `fsck.keelfs`
//! program.
//!
//! A check reads every structure from EVERY leg and judges each copy
//! (never through the engine's healing read path, so `-n` writes nothing):
//!
//! 1. superblocks (both copies on every leg) and set membership;
//! 2. the journal (replay of committed transactions is the journal's
//!    `recover`, not yet merged: see `journal.rs`);
//! 3. every reachable metadata block on every leg, against the generation
//!    its parent records; fixed blocks compared by generation;
//! 4. every written data block on every leg against its tag;
//! 5. bitmaps against what is reachable; cross-linked blocks;
//! 6. extents; 7. directory structure; 8. link counts, orphans,
//!    lost+found, inode fields; 9. the superblock's free counts.
//!
//! The passes build a model of what the filesystem should be
//! (`checker.rs`); a repair (`repair.rs`) writes the difference, every
//! block to every leg, and a check runs again to confirm. Where no good
//! copy of something exists, fsck removes the reference when that is safe
//! (a lost directory leaf: its inodes go to lost+found; a lost extent node:
//! the file loses those extents) and otherwise reports and leaves it (a
//! data block with no good copy: exit 4, every time).
//!
//! Entry points: [`fsck_paths`] and [`fsck_devices`], with [`Options`];
//! the [`Outcome`] holds every [`Report`] and the fsck(8) exit status.

pub mod bitmaps;
pub mod bits;
pub mod checker;
pub mod data;
pub mod dirs;
pub mod extents;
pub mod inodes;
pub mod journal;
pub mod links;
pub mod metadata;
pub mod options;
pub mod orphans;
pub mod progress;
pub mod repair;
pub mod report;
pub mod run;
pub mod superblock;
pub mod symlinks;
pub mod walk;
pub mod xattrs;

pub use checker::FsckError;
pub use options::{Mode, Options, ProgressTarget};
pub use report::{
    Finding, Pass, Report, Severity, EXIT_CLEAN, EXIT_CORRECTED, EXIT_OPERATIONAL,
    EXIT_UNCORRECTED, EXIT_USAGE,
};
pub use run::{fsck_devices, fsck_paths, Outcome, Usage};
