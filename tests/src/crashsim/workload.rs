//! Workloads: the filesystem operations a crash test runs, and their text
//! form.
//!
//! What it promises:
//!
//! * [`Op`] is one call a process makes (create, write, truncate,
//!   fallocate, link, unlink, rename, mkdir, rmdir, symlink, setxattr,
//!   removexattr) or one persistence call (fsync, fdatasync, syncfs).
//!   Paths are relative to the root and name at most a few levels
//!   (`foo`, `A/bar`); `.` is the root.
//! * Every op prints as one line and parses back ([`Op::parse`]), and a
//!   [`Workload`] prints as a few lines and parses back, so a failing
//!   workload can be written into a reproducer file and replayed exactly.
//! * The bytes an op writes are a pure function of its *stamp* (its place
//!   in the workload) and the file offset ([`data_byte`]), so any version
//!   of any file the model predicts can be recomputed, and two writes are
//!   told apart by their bytes.
//!
//! Relies on nothing but std.

use std::fmt;

/// Where a write starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteAt {
    /// At the end of the file (O_APPEND).
    Append,
    /// At this byte offset.
    Offset(u64),
}

/// fallocate(2) modes the workloads use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Falloc {
    /// Mode 0: allocate, and extend the size past the range.
    Allocate,
    /// FALLOC_FL_KEEP_SIZE: allocate past the size, which stays.
    KeepSize,
    /// FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE: deallocate; reads zero.
    PunchHole,
    /// FALLOC_FL_ZERO_RANGE: zero the range (extending the size).
    ZeroRange,
}

impl Falloc {
    /// The fallocate(2) mode bits.
    pub fn mode_bits(self) -> i32 {
        const KEEP_SIZE: i32 = 0x01;
        const PUNCH_HOLE: i32 = 0x02;
        const ZERO_RANGE: i32 = 0x10;
        match self {
            Falloc::Allocate => 0,
            Falloc::KeepSize => KEEP_SIZE,
            Falloc::PunchHole => PUNCH_HOLE | KEEP_SIZE,
            Falloc::ZeroRange => ZERO_RANGE,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Falloc::Allocate => "allocate",
            Falloc::KeepSize => "keep-size",
            Falloc::PunchHole => "punch-hole",
            Falloc::ZeroRange => "zero-range",
        }
    }
}

/// rename(2) / renameat2(2) flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RenameHow {
    /// rename(2): replaces an existing target.
    Plain,
    /// RENAME_NOREPLACE.
    NoReplace,
    /// RENAME_EXCHANGE: swaps the two names.
    Exchange,
}

/// One operation of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// A new empty regular file (mode 0644).
    Create(String),
    /// `len` bytes of this op's pattern at `at`.
    Write {
        path: String,
        at: WriteAt,
        len: u64,
    },
    /// ftruncate.
    Truncate {
        path: String,
        size: u64,
    },
    Fallocate {
        path: String,
        mode: Falloc,
        offset: u64,
        len: u64,
    },
    /// A hard link `to` of `from`.
    Link {
        from: String,
        to: String,
    },
    Unlink(String),
    Rename {
        from: String,
        to: String,
        how: RenameHow,
    },
    /// A new directory (mode 0755).
    Mkdir(String),
    Rmdir(String),
    /// A symlink at `path` pointing to `target`.
    Symlink {
        path: String,
        target: String,
    },
    /// Sets `name` to `len` bytes of this op's pattern.
    SetXattr {
        path: String,
        name: String,
        len: u64,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    /// fsync of a file or directory.
    Fsync(String),
    Fdatasync(String),
    Syncfs,
}

impl Op {
    /// Whether the op is a persistence point (fsync, fdatasync, syncfs).
    pub fn is_persistence(&self) -> bool {
        matches!(self, Op::Fsync(_) | Op::Fdatasync(_) | Op::Syncfs)
    }

    /// Parses the form [`fmt::Display`] prints.
    pub fn parse(line: &str) -> Result<Op, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> Result<u64, String> {
            let w = words
                .get(i)
                .ok_or_else(|| format!("{line:?}: missing argument {i}"))?;
            w.parse()
                .map_err(|e| format!("{line:?}: argument {i} ({w:?}): {e}"))
        };
        let word = |i: usize| -> Result<String, String> {
            words
                .get(i)
                .map(|w| w.to_string())
                .ok_or_else(|| format!("{line:?}: missing argument {i}"))
        };
        let arity = |n: usize| -> Result<(), String> {
            if words.len() == n {
                Ok(())
            } else {
                Err(format!("{line:?}: expected {} arguments", n - 1))
            }
        };
        let op = match words.first().copied() {
            Some("create") => {
                arity(2)?;
                Op::Create(word(1)?)
            }
            Some("write") => match words.get(2).copied() {
                Some("append") => {
                    arity(4)?;
                    Op::Write {
                        path: word(1)?,
                        at: WriteAt::Append,
                        len: num(3)?,
                    }
                }
                Some("at") => {
                    arity(5)?;
                    Op::Write {
                        path: word(1)?,
                        at: WriteAt::Offset(num(3)?),
                        len: num(4)?,
                    }
                }
                _ => return Err(format!("{line:?}: write PATH (append LEN | at OFF LEN)")),
            },
            Some("truncate") => {
                arity(3)?;
                Op::Truncate {
                    path: word(1)?,
                    size: num(2)?,
                }
            }
            Some("fallocate") => {
                arity(5)?;
                let mode = match words[2] {
                    "allocate" => Falloc::Allocate,
                    "keep-size" => Falloc::KeepSize,
                    "punch-hole" => Falloc::PunchHole,
                    "zero-range" => Falloc::ZeroRange,
                    other => return Err(format!("{line:?}: unknown fallocate mode {other:?}")),
                };
                Op::Fallocate {
                    path: word(1)?,
                    mode,
                    offset: num(3)?,
                    len: num(4)?,
                }
            }
            Some("link") => {
                arity(3)?;
                Op::Link {
                    from: word(1)?,
                    to: word(2)?,
                }
            }
            Some("unlink") => {
                arity(2)?;
                Op::Unlink(word(1)?)
            }
            Some("rename") => {
                let how = match words.get(3).copied() {
                    None => RenameHow::Plain,
                    Some("noreplace") => RenameHow::NoReplace,
                    Some("exchange") => RenameHow::Exchange,
                    Some(other) => return Err(format!("{line:?}: unknown rename flag {other:?}")),
                };
                if words.len() > 4 || words.len() < 3 {
                    return Err(format!("{line:?}: rename FROM TO [noreplace|exchange]"));
                }
                Op::Rename {
                    from: word(1)?,
                    to: word(2)?,
                    how,
                }
            }
            Some("mkdir") => {
                arity(2)?;
                Op::Mkdir(word(1)?)
            }
            Some("rmdir") => {
                arity(2)?;
                Op::Rmdir(word(1)?)
            }
            Some("symlink") => {
                arity(3)?;
                Op::Symlink {
                    path: word(1)?,
                    target: word(2)?,
                }
            }
            Some("setxattr") => {
                arity(4)?;
                Op::SetXattr {
                    path: word(1)?,
                    name: word(2)?,
                    len: num(3)?,
                }
            }
            Some("removexattr") => {
                arity(3)?;
                Op::RemoveXattr {
                    path: word(1)?,
                    name: word(2)?,
                }
            }
            Some("fsync") => {
                arity(2)?;
                Op::Fsync(word(1)?)
            }
            Some("fdatasync") => {
                arity(2)?;
                Op::Fdatasync(word(1)?)
            }
            Some("syncfs") => {
                arity(1)?;
                Op::Syncfs
            }
            _ => return Err(format!("{line:?}: unknown operation")),
        };
        Ok(op)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create(p) => write!(f, "create {p}"),
            Op::Write {
                path,
                at: WriteAt::Append,
                len,
            } => write!(f, "write {path} append {len}"),
            Op::Write {
                path,
                at: WriteAt::Offset(o),
                len,
            } => write!(f, "write {path} at {o} {len}"),
            Op::Truncate { path, size } => write!(f, "truncate {path} {size}"),
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => write!(f, "fallocate {path} {} {offset} {len}", mode.word()),
            Op::Link { from, to } => write!(f, "link {from} {to}"),
            Op::Unlink(p) => write!(f, "unlink {p}"),
            Op::Rename { from, to, how } => match how {
                RenameHow::Plain => write!(f, "rename {from} {to}"),
                RenameHow::NoReplace => write!(f, "rename {from} {to} noreplace"),
                RenameHow::Exchange => write!(f, "rename {from} {to} exchange"),
            },
            Op::Mkdir(p) => write!(f, "mkdir {p}"),
            Op::Rmdir(p) => write!(f, "rmdir {p}"),
            Op::Symlink { path, target } => write!(f, "symlink {path} {target}"),
            Op::SetXattr { path, name, len } => write!(f, "setxattr {path} {name} {len}"),
            Op::RemoveXattr { path, name } => write!(f, "removexattr {path} {name}"),
            Op::Fsync(p) => write!(f, "fsync {p}"),
            Op::Fdatasync(p) => write!(f, "fdatasync {p}"),
            Op::Syncfs => write!(f, "syncfs"),
        }
    }
}

/// A workload: the setup that builds the starting tree (run and made
/// durable before recording starts), then the recorded ops.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub setup: Vec<Op>,
    pub ops: Vec<Op>,
    /// Keep every inode the workload looked up known to the "kernel" (no
    /// FUSE forget until the end), so an unlinked file stays open as an
    /// orphan; otherwise every lookup is forgotten after each op.
    pub hold_refs: bool,
}

impl Workload {
    /// The stamp of op `k` of the recorded ops (setup op `i` has stamp
    /// `SETUP_STAMP + i`).
    pub fn stamp(k: usize) -> u64 {
        k as u64 + 1
    }

    /// One op per line with a `setup`/`ops` header, as in a reproducer.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("hold_refs {}\n", self.hold_refs));
        s.push_str("setup\n");
        for op in &self.setup {
            s.push_str(&format!("  {op}\n"));
        }
        s.push_str("ops\n");
        for op in &self.ops {
            s.push_str(&format!("  {op}\n"));
        }
        s.push_str("end\n");
        s
    }

    /// Parses [`Workload::to_text`]'s form from `lines` (stops after `end`).
    pub fn parse_lines<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Result<Workload, String> {
        let mut w = Workload {
            setup: Vec::new(),
            ops: Vec::new(),
            hold_refs: false,
        };
        let mut section = None;
        for line in lines.by_ref() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            match t {
                "setup" => section = Some(true),
                "ops" => section = Some(false),
                "end" => return Ok(w),
                _ if t.starts_with("hold_refs ") => {
                    w.hold_refs = t["hold_refs ".len()..]
                        .trim()
                        .parse()
                        .map_err(|e| format!("{t:?}: {e}"))?;
                }
                _ => match section {
                    Some(true) => w.setup.push(Op::parse(t)?),
                    Some(false) => w.ops.push(Op::parse(t)?),
                    None => return Err(format!("{t:?} before `setup` or `ops`")),
                },
            }
        }
        Err("workload without `end`".to_string())
    }

    /// The ops on one line, `; `-separated (for messages).
    pub fn summary(&self) -> String {
        let ops: Vec<String> = self.ops.iter().map(|o| o.to_string()).collect();
        let refs = if self.hold_refs { " [held refs]" } else { "" };
        format!("{}{refs}", ops.join("; "))
    }
}

/// Stamps of setup ops start here (recorded ops use 1, 2, ...).
pub const SETUP_STAMP: u64 = 1_000_000;

/// The byte an op with `stamp` writes at file offset `pos` (never the same
/// pattern for two stamps; zero is as likely as any other value).
pub fn data_byte(stamp: u64, pos: u64) -> u8 {
    let mut x = stamp
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(pos.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    x ^= x >> 31;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 29;
    (x >> 24) as u8
}

/// The bytes of a write with `stamp` covering file bytes `offset..offset+len`.
pub fn data_bytes(stamp: u64, offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len)
        .map(|p| data_byte(stamp, p))
        .collect()
}

/// The value a setxattr with `stamp` sets.
pub fn xattr_value(stamp: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| data_byte(stamp ^ 0x5a5a, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_print_and_parse_back() {
        let ops = vec![
            Op::Create("foo".into()),
            Op::Write {
                path: "A/bar".into(),
                at: WriteAt::Append,
                len: 1500,
            },
            Op::Write {
                path: "foo".into(),
                at: WriteAt::Offset(100),
                len: 3000,
            },
            Op::Truncate {
                path: "foo".into(),
                size: 0,
            },
            Op::Fallocate {
                path: "foo".into(),
                mode: Falloc::PunchHole,
                offset: 1024,
                len: 2048,
            },
            Op::Link {
                from: "foo".into(),
                to: "A/l".into(),
            },
            Op::Unlink("foo".into()),
            Op::Rename {
                from: "foo".into(),
                to: "B/foo".into(),
                how: RenameHow::Plain,
            },
            Op::Rename {
                from: "A".into(),
                to: "B".into(),
                how: RenameHow::Exchange,
            },
            Op::Rename {
                from: "foo".into(),
                to: "bar".into(),
                how: RenameHow::NoReplace,
            },
            Op::Mkdir("C".into()),
            Op::Rmdir("B".into()),
            Op::Symlink {
                path: "S".into(),
                target: "../foo".into(),
            },
            Op::SetXattr {
                path: "foo".into(),
                name: "user.a".into(),
                len: 20,
            },
            Op::RemoveXattr {
                path: "foo".into(),
                name: "user.a".into(),
            },
            Op::Fsync("A".into()),
            Op::Fdatasync("foo".into()),
            Op::Syncfs,
        ];
        for op in &ops {
            assert_eq!(&Op::parse(&op.to_string()).unwrap(), op, "{op}");
        }
        let w = Workload {
            setup: ops[..2].to_vec(),
            ops: ops.clone(),
            hold_refs: true,
        };
        let text = w.to_text();
        assert_eq!(Workload::parse_lines(&mut text.lines()).unwrap(), w);
    }

    #[test]
    fn bad_lines_are_refused() {
        for bad in [
            "",
            "create",
            "create a b",
            "write foo",
            "write foo at 1",
            "write foo append x",
            "fallocate foo sideways 0 1",
            "rename a",
            "rename a b c",
            "syncfs now",
            "frobnicate",
        ] {
            assert!(Op::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Workload::parse_lines(&mut "ops\n create a\n".lines()).is_err());
    }

    #[test]
    fn patterns_differ_between_stamps() {
        let a = data_bytes(1, 0, 4096);
        let b = data_bytes(2, 0, 4096);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 64, "{same} equal bytes");
        assert_eq!(data_bytes(1, 100, 10), a[100..110]);
    }
}
