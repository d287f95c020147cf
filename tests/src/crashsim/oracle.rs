//! The oracle: is what a crash image shows, once mounted, a state the
//! workload could have left?
//!
//! For a cut of the logs (leg 0's log index `n`), from the recording's
//! marks:
//!
//! * ops `0..hi` had started (op `hi − 1` may have been running): the
//!   filesystem may be in any model state up to `states[hi]`;
//! * the persistence steps (fsync, fdatasync, syncfs, the final unmount)
//!   whose "done" mark precedes `n` had returned.
//!
//! Two checks, both must pass:
//!
//! 1. **Durability** ([`check_durability`], what POSIX and the brief ask,
//!    per persistence point): after fsync(F) returned, F's bytes and size,
//!    its link count, xattrs and every name it had are present; after
//!    fdatasync(F), its bytes and size; after fsync(D) of a directory, D's
//!    names (present ones present, removed ones absent) and link count;
//!    after syncfs or the unmount, all of that for everything. An
//!    obligation lapses when a later op that had started before the cut
//!    changed the same thing (a later write to F, a later rename of the
//!    name, a later link or unlink of F — after which F may be gone and
//!    its inode number reused —, ...): then only check 2 judges it.
//! 2. **Atomicity** ([`check_prefix`]): the whole tree (names, inode
//!    identities, types, link counts, sizes, symlink targets, xattrs) is
//!    exactly the model state after some op prefix `j` with `lo ≤ j ≤ hi`
//!    (every op is atomic: a rename never shows both names or neither),
//!    and every file's bytes are `states[j]`'s, except that each 512-byte
//!    sector may instead hold what a later started op wrote there (an
//!    in-place overwrite may land before the transaction that records it
//!    commits, and a torn one may land in part): that op's state's bytes
//!    up to its size, and `states[j]`'s past it. The filesystem never
//!    writes a byte past the size an op leaves (a shrink writes no data;
//!    an extension zeroes only up to its new size), so a sector across a
//!    later state's end holds the later bytes before it and the old ones
//!    after it; anything else there — zeros over bytes the size still
//!    covers, say — fails. With `global_fsync`
//!    (keelfs's own promise: fsync commits the whole journal), `lo` is the
//!    op after the last persistence point passed, so nothing done before
//!    any fsync may be lost; without it `lo` is 0.
//!
//! Relies on: the recording's model states, effects, inode map and marks
//! (`recorder.rs`) and an [`Observed`] tree (`observe.rs`).

use super::model::{Effects, Id, Model, Node};
use super::observe::{Content, Observed, Seen};
use super::recorder::{Recording, StepKind};
use super::workload::Op;
use std::collections::BTreeSet;

/// Bytes judged together when a file's content may mix versions.
pub const SECTOR: usize = 512;

/// What the marks before a cut say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutInfo {
    /// Ops that had started.
    pub started: usize,
    /// Persistence steps that had returned: `Some(k)` op k, `None` the
    /// final unmount.
    pub persisted: Vec<Option<usize>>,
    /// The model state after the last persistence point passed (0 if none).
    pub durable_state: usize,
}

impl CutInfo {
    /// What leg 0's cut at log index `n` tells.
    pub fn at(rec: &Recording, n: usize) -> CutInfo {
        let mut started = 0;
        let mut persisted = Vec::new();
        let mut durable_state = 0;
        for step in &rec.steps {
            match step.kind {
                StepKind::Mount => {}
                StepKind::Op(k) => {
                    if step.start < n {
                        started = k + 1;
                    }
                    if step.done < n && rec.workload.ops[k].is_persistence() {
                        persisted.push(Some(k));
                        durable_state = k + 1;
                    }
                }
                StepKind::Unmount => {
                    if step.done < n {
                        persisted.push(None);
                        durable_state = rec.workload.ops.len();
                    }
                }
            }
        }
        CutInfo {
            started,
            persisted,
            durable_state,
        }
    }
}

/// Which things ops in a range changed.
#[derive(Default)]
struct Changed {
    entries: BTreeSet<(Id, String)>,
    data: BTreeSet<Id>,
    links: BTreeSet<Id>,
    xattrs: BTreeSet<Id>,
}

impl Changed {
    fn of(effects: &[Effects]) -> Changed {
        let mut c = Changed::default();
        for fx in effects {
            c.entries.extend(fx.entries.iter().cloned());
            c.data.extend(fx.data.iter().copied());
            c.links.extend(fx.links.iter().copied());
            c.xattrs.extend(fx.xattrs.iter().copied());
        }
        c
    }
}

/// What the oracle concluded about a tree that passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// The model state it matched.
    pub state: usize,
}

/// Judges an observed tree against the recording for a cut.
pub fn judge(
    rec: &Recording,
    cut: &CutInfo,
    seen: &Observed,
    global_fsync: bool,
) -> Result<Judgement, String> {
    check_durability(rec, cut, seen)?;
    let lo = if global_fsync { cut.durable_state } else { 0 };
    let state = check_prefix(rec, lo, cut.started, seen)?;
    Ok(Judgement { state })
}

fn ino(rec: &Recording, id: Id) -> u64 {
    rec.inos.get(&id).copied().unwrap_or(0)
}

fn describe(model: &Model, id: Id) -> String {
    model
        .paths_of(id)
        .first()
        .cloned()
        .unwrap_or_else(|| format!("inode #{id}"))
}

/// Check 1 of the module docs.
pub fn check_durability(rec: &Recording, cut: &CutInfo, seen: &Observed) -> Result<(), String> {
    for p in &cut.persisted {
        let (state_index, later_from, what) = match p {
            Some(k) => (k + 1, k + 1, format!("op {k} ({})", rec.workload.ops[*k])),
            None => (
                rec.workload.ops.len(),
                rec.workload.ops.len(),
                "the unmount".into(),
            ),
        };
        let state = &rec.states[state_index];
        let later = Changed::of(&rec.effects[later_from.min(cut.started)..cut.started]);
        let ob = Obligations {
            rec,
            state,
            later: &later,
            seen,
            what: &what,
        };
        match p.map(|k| &rec.workload.ops[k]) {
            Some(Op::Fsync(path)) | Some(Op::Fdatasync(path)) => {
                let datasync = matches!(p.map(|k| &rec.workload.ops[k]), Some(Op::Fdatasync(_)));
                let id = state
                    .resolve(path)
                    .map_err(|e| format!("{what}: the model cannot resolve {path}: {e:?}"))?;
                match &state.inode(id).node {
                    Node::Dir(_) => ob.dir(id, state_index)?,
                    _ if datasync => ob.data(id)?,
                    _ => ob.file(id)?,
                }
            }
            _ => {
                // syncfs or unmount: everything.
                for (&id, inode) in &state.inodes {
                    match inode.node {
                        Node::Dir(_) => ob.dir(id, state_index)?,
                        _ => ob.file(id)?,
                    }
                }
            }
        }
    }
    Ok(())
}

struct Obligations<'a> {
    rec: &'a Recording,
    state: &'a Model,
    later: &'a Changed,
    seen: &'a Observed,
    what: &'a str,
}

impl Obligations<'_> {
    /// The observed inode of `id`, or `None` when a later op changed its
    /// links (it may be gone, and its number reused by a newer inode);
    /// an error if it must be there and is not.
    fn node(&self, id: Id) -> Result<Option<&Seen>, String> {
        if self.later.links.contains(&id) {
            return Ok(None);
        }
        match self.seen.get(ino(self.rec, id)) {
            Some(s) => Ok(Some(s)),
            None => Err(format!(
                "{} returned before the crash, but {} (inode {}) is gone",
                self.what,
                describe(self.state, id),
                ino(self.rec, id)
            )),
        }
    }

    /// fdatasync: bytes and size.
    fn data(&self, id: Id) -> Result<(), String> {
        if self.later.data.contains(&id) {
            return Ok(());
        }
        let Some(seen) = self.node(id)? else {
            return Ok(());
        };
        match (&self.state.inode(id).node, &seen.content) {
            (Node::File(want), Content::File(got)) => {
                if **want != *got {
                    return Err(format!(
                        "{} returned before the crash, but {}: {}",
                        self.what,
                        describe(self.state, id),
                        bytes_diff(got, want)
                    ));
                }
            }
            (Node::Symlink(want), Content::Symlink(got)) if want == got => {}
            (want, got) => {
                return Err(format!(
                    "{} returned before the crash, but {} holds {} (expected {})",
                    self.what,
                    describe(self.state, id),
                    content_kind(got),
                    node_kind(want)
                ))
            }
        }
        Ok(())
    }

    /// fsync of a non-directory: bytes, size, links, xattrs, names.
    fn file(&self, id: Id) -> Result<(), String> {
        self.data(id)?;
        self.links_and_xattrs(id)?;
        for path in self.state.paths_of(id) {
            let (dir_path, name) = super::model::split_path(&path);
            let dir = self
                .state
                .resolve(dir_path)
                .map_err(|e| format!("model: {dir_path}: {e:?}"))?;
            self.entry(dir, name, Some(id))?;
        }
        Ok(())
    }

    fn links_and_xattrs(&self, id: Id) -> Result<(), String> {
        let Some(seen) = self.node(id)? else {
            return Ok(());
        };
        let want = self.state.inode(id);
        if seen.nlink != want.nlink {
            return Err(format!(
                "{} returned before the crash, but {} has {} links (expected {})",
                self.what,
                describe(self.state, id),
                seen.nlink,
                want.nlink
            ));
        }
        if !self.later.xattrs.contains(&id) && seen.xattrs != want.xattrs {
            return Err(format!(
                "{} returned before the crash, but the xattrs of {} are {:?} (expected {:?})",
                self.what,
                describe(self.state, id),
                seen.xattrs.keys().collect::<Vec<_>>(),
                want.xattrs.keys().collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    /// fsync of a directory: its names (present and removed), links,
    /// xattrs.
    fn dir(&self, id: Id, state_index: usize) -> Result<(), String> {
        self.links_and_xattrs(id)?;
        let Node::Dir(entries) = &self.state.inode(id).node else {
            return Ok(());
        };
        for (name, &child) in entries {
            self.entry(id, name, Some(child))?;
        }
        // Names it had before and no longer has must stay gone.
        let mut gone = BTreeSet::new();
        for earlier in &self.rec.states[..state_index] {
            if let Some(Node::Dir(old)) = earlier.inodes.get(&id).map(|i| &i.node) {
                gone.extend(old.keys().filter(|n| !entries.contains_key(*n)).cloned());
            }
        }
        for name in gone {
            self.entry(id, &name, None)?;
        }
        Ok(())
    }

    fn entry(&self, dir: Id, name: &str, want: Option<Id>) -> Result<(), String> {
        if self.later.entries.contains(&(dir, name.to_string())) || self.later.links.contains(&dir)
        {
            return Ok(());
        }
        let dir_ino = ino(self.rec, dir);
        let got = match self.seen.entry(dir_ino, name) {
            Ok(got) => got,
            Err(e) => {
                return Err(format!(
                    "{} returned before the crash, but {}: {e}",
                    self.what,
                    describe(self.state, dir)
                ))
            }
        };
        let want_ino = want.map(|id| ino(self.rec, id));
        if got != want_ino {
            let dir_name = if dir == super::model::ROOT {
                String::new()
            } else {
                format!("{}/", describe(self.state, dir))
            };
            return Err(format!(
                "{} returned before the crash, but {dir_name}{name} is {} (expected {})",
                self.what,
                got.map_or("absent".to_string(), |i| format!("inode {i}")),
                want_ino.map_or("absent".to_string(), |i| format!("inode {i}"))
            ));
        }
        Ok(())
    }
}

fn node_kind(n: &Node) -> &'static str {
    match n {
        Node::File(_) => "a file",
        Node::Dir(_) => "a directory",
        Node::Symlink(_) => "a symlink",
    }
}

fn content_kind(c: &Content) -> &'static str {
    match c {
        Content::File(_) => "a file",
        Content::Dir(_) => "a directory",
        Content::Symlink(_) => "a symlink",
        Content::Other(_) => "a special file",
    }
}

/// "3000 bytes, expected 5000" or "bytes differ from offset 1024".
pub fn bytes_diff(got: &[u8], want: &[u8]) -> String {
    if got.len() != want.len() {
        return format!("{} bytes, expected {}", got.len(), want.len());
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    let last = got.iter().zip(want).rposition(|(a, b)| a != b).unwrap_or(0);
    format!("bytes {first}..={last} differ (of {})", got.len())
}

/// Check 2 of the module docs: the state `j` in `lo..=hi` it matches.
pub fn check_prefix(
    rec: &Recording,
    lo: usize,
    hi: usize,
    seen: &Observed,
) -> Result<usize, String> {
    let lo = lo.min(hi);
    let mut first_diff = None;
    for j in (lo..=hi).rev() {
        let diff = metadata_diff(rec, j, seen).or_else(|| content_diff(rec, j, hi, seen));
        match diff {
            None => return Ok(j),
            Some(d) => {
                first_diff.get_or_insert((j, d.clone()));
                if j == lo && lo != hi {
                    let (top, top_diff) = first_diff.take().unwrap();
                    return Err(format!(
                        "the tree matches no state the ops could leave (states {lo}..={hi}); \
                         against state {top}: {top_diff}; against state {lo}: {d}"
                    ));
                }
            }
        }
    }
    let (j, d) = first_diff.unwrap_or((hi, String::new()));
    Err(format!("the tree does not match state {j}: {d}"))
}

/// The first difference between the tree's metadata and model state `j`.
fn metadata_diff(rec: &Recording, j: usize, seen: &Observed) -> Option<String> {
    let state = &rec.states[j];
    let want: BTreeSet<u64> = state.inodes.keys().map(|&id| ino(rec, id)).collect();
    let got: BTreeSet<u64> = seen.nodes.keys().copied().collect();
    if want != got {
        let extra: Vec<String> = got
            .difference(&want)
            .map(|i| format!("{} (inode {i})", seen.nodes[i].path))
            .collect();
        let missing: Vec<String> = state
            .inodes
            .keys()
            .filter(|&&id| !got.contains(&ino(rec, id)))
            .map(|&id| format!("{} (inode {})", describe(state, id), ino(rec, id)))
            .collect();
        return Some(format!(
            "reachable inodes differ: unexpected [{}], missing [{}]",
            extra.join(", "),
            missing.join(", ")
        ));
    }
    for (&id, inode) in &state.inodes {
        let s = &seen.nodes[&ino(rec, id)];
        let name = &s.path;
        match (&inode.node, &s.content) {
            (Node::File(d), Content::File(got)) => {
                if got.len() != d.len() {
                    return Some(format!("{name}: size {} (expected {})", got.len(), d.len()));
                }
            }
            (Node::Dir(entries), Content::Dir(got)) => {
                let want: Vec<(&String, u64)> =
                    entries.iter().map(|(n, &c)| (n, ino(rec, c))).collect();
                let got: Vec<(&String, u64)> = got.iter().map(|(n, &c)| (n, c)).collect();
                if want != got {
                    return Some(format!("{name}/: entries {got:?} (expected {want:?})"));
                }
            }
            (Node::Symlink(t), Content::Symlink(got)) => {
                if t != got {
                    return Some(format!("{name}: symlink to {got:?} (expected {t:?})"));
                }
            }
            (want, got) => {
                return Some(format!(
                    "{name}: {} (expected {})",
                    content_kind(got),
                    node_kind(want)
                ))
            }
        }
        if s.nlink != inode.nlink {
            return Some(format!(
                "{name}: {} links (expected {})",
                s.nlink, inode.nlink
            ));
        }
        if s.xattrs != inode.xattrs {
            return Some(format!(
                "{name}: xattrs {:?} (expected {:?})",
                s.xattrs.keys().collect::<Vec<_>>(),
                inode.xattrs.keys().collect::<Vec<_>>()
            ));
        }
    }
    None
}

/// The first sector of a file whose bytes are neither state `j`'s nor
/// what a later started op (up to state `hi`) wrote there.
fn content_diff(rec: &Recording, j: usize, hi: usize, seen: &Observed) -> Option<String> {
    let state = &rec.states[j];
    for (&id, inode) in &state.inodes {
        let Node::File(want) = &inode.node else {
            continue;
        };
        let s = &seen.nodes[&ino(rec, id)];
        let Content::File(got) = &s.content else {
            continue;
        };
        if **want == *got {
            continue;
        }
        let mut start = 0;
        while start < got.len() {
            let end = (start + SECTOR).min(got.len());
            let piece = &got[start..end];
            let ok = piece == &want[start..end]
                || rec.states[j + 1..=hi].iter().any(|later| {
                    let Some(Node::File(d)) = later.inodes.get(&id).map(|i| &i.node) else {
                        return false;
                    };
                    // What the later op wrote: its bytes up to its size;
                    // past that size it changes nothing (bytes a shrink
                    // leaves there are never rewritten before the commit).
                    (start..end)
                        .all(|p| piece[p - start] == if p < d.len() { d[p] } else { want[p] })
                });
            if !ok {
                return Some(format!(
                    "{}: bytes {start}..{end} are none of the versions of states {j}..={hi}",
                    s.path
                ));
            }
            start = end;
        }
    }
    None
}
