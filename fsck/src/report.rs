//! What a check found: one [`Finding`] per problem, tagged with the pass
//! that found it, and the exit status of fsck(8) the whole run ends with.
//!
//! A finding is an *error* (the filesystem is not as the format requires;
//! an error makes `-n` exit 4) or a *note* (worth saying, changes nothing:
//! a member not given, orphans left for the mount to finish). An error is
//! *fixable* when the repair plan holds a fix for it. Nothing here does
//! I/O; `main.rs` prints.

use std::fmt;

/// Exit status: no errors.
pub const EXIT_CLEAN: i32 = 0;
/// Exit status: errors were found and corrected (the filesystem was changed).
pub const EXIT_CORRECTED: i32 = 1;
/// Exit status: errors were left uncorrected.
pub const EXIT_UNCORRECTED: i32 = 4;
/// Exit status: operational error (cannot open, not keelfs, I/O failure).
pub const EXIT_OPERATIONAL: i32 = 8;
/// Exit status: usage or syntax error.
pub const EXIT_USAGE: i32 = 16;

/// The passes of a check, in the order they run (numbered as in the
/// crate documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pass {
    /// 1: superblocks and set membership on every leg.
    Superblocks,
    /// 2: the journal.
    Journal,
    /// 3: every metadata block on every leg.
    MetadataTags,
    /// 4: every data block on every leg.
    DataTags,
    /// 5: bitmaps against reachability.
    Bitmaps,
    /// 6: extents.
    Extents,
    /// 7: directory structure.
    Directories,
    /// 8: link counts, orphans, inode fields.
    Links,
    /// 9: summary counts.
    Counts,
}

impl Pass {
    /// Every pass, in order.
    pub const ALL: [Pass; 9] = [
        Pass::Superblocks,
        Pass::Journal,
        Pass::MetadataTags,
        Pass::DataTags,
        Pass::Bitmaps,
        Pass::Extents,
        Pass::Directories,
        Pass::Links,
        Pass::Counts,
    ];

    /// Its number, 1 … 9.
    pub fn number(self) -> u32 {
        self as u32 + 1
    }

    /// What it checks.
    pub fn title(self) -> &'static str {
        match self {
            Pass::Superblocks => "superblocks and mirror set",
            Pass::Journal => "journal",
            Pass::MetadataTags => "metadata blocks on every leg",
            Pass::DataTags => "data blocks on every leg",
            Pass::Bitmaps => "block and inode bitmaps",
            Pass::Extents => "extents",
            Pass::Directories => "directory structure",
            Pass::Links => "link counts, orphans and inode fields",
            Pass::Counts => "summary counts",
        }
    }
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pass {}", self.number())
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Information; not an inconsistency.
    Note,
    /// An inconsistency.
    Error,
}

/// One problem (or note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub pass: Pass,
    pub severity: Severity,
    pub message: String,
    /// Whether the repair plan fixes it (errors only).
    pub fixable: bool,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Note => write!(f, "{}: note: {}", self.pass, self.message),
            Severity::Error => write!(f, "{}: {}", self.pass, self.message),
        }
    }
}

/// Every finding of one check, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    findings: Vec<Finding>,
}

impl Report {
    /// An empty report.
    pub fn new() -> Report {
        Report::default()
    }

    /// Records an error; `fixable` if the repair plan fixes it.
    pub fn error(&mut self, pass: Pass, fixable: bool, message: impl Into<String>) {
        self.findings.push(Finding {
            pass,
            severity: Severity::Error,
            message: message.into(),
            fixable,
        });
    }

    /// Records a note.
    pub fn note(&mut self, pass: Pass, message: impl Into<String>) {
        self.findings.push(Finding {
            pass,
            severity: Severity::Note,
            message: message.into(),
            fixable: false,
        });
    }

    /// Every finding, in order.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    /// Whether no error was found.
    pub fn is_clean(&self) -> bool {
        self.error_count() == 0
    }

    /// Number of errors the repair plan does not fix.
    pub fn unfixable_count(&self) -> usize {
        self.errors().filter(|f| !f.fixable).count()
    }

    /// (errors, notes) found by `pass`.
    pub fn counts(&self, pass: Pass) -> (usize, usize) {
        let of = |s: Severity| {
            self.findings
                .iter()
                .filter(|f| f.pass == pass && f.severity == s)
                .count()
        };
        (of(Severity::Error), of(Severity::Note))
    }

    /// Whether some error mentions `text` (for tests and scripts).
    pub fn mentions(&self, text: &str) -> bool {
        self.errors().any(|f| f.message.contains(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_notes() {
        let mut r = Report::new();
        assert!(r.is_clean());
        r.note(Pass::Superblocks, "member 1 missing");
        assert!(r.is_clean());
        r.error(Pass::Bitmaps, true, "block 7 leaked");
        r.error(Pass::DataTags, false, "block 9: no good copy");
        assert_eq!(r.error_count(), 2);
        assert_eq!(r.unfixable_count(), 1);
        assert_eq!(r.counts(Pass::Bitmaps), (1, 0));
        assert_eq!(r.counts(Pass::Superblocks), (0, 1));
        assert!(r.mentions("leaked"));
        assert_eq!(Pass::Counts.number(), 9);
        assert_eq!(
            r.findings()[1].to_string(),
            "Pass 5: block 7 leaked".to_string()
        );
    }
}
