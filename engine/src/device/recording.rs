//! A device that records every update so a test can cut the power anywhere
//! (after dm-log-writes and CrashMonkey).
//!
//! [`RecordingDevice`] passes every request through to the device it wraps
//! and appends each acknowledged write, discard and flush to a log
//! ([`RecordedOp`]), with named marks a test adds between them ("fsync
//! returned"). It keeps the inner device's contents from the moment
//! recording started (the durable base) and builds the image a power cut
//! would leave. A cut is a [`CrashPoint`]:
//!
//! * ops `0..n` of the log had been acknowledged when the power went;
//! * everything up to the last flush before `n` is durable;
//! * each write or discard after that flush (an *unflushed update*) may be
//!   lost or may have landed, independently; those that landed may have
//!   landed in any order, which matters where they overlap (`keep` lists
//!   them in landing order);
//! * a landed update may be torn: only some of its 512-byte sectors landed,
//!   each one wholly old or wholly new (`torn`);
//! * a discard that landed zeroes its range (what our devices read back).
//!
//! [`RecordingDevice::crash_points`] picks cuts worth testing: for every flush
//! epoch, the edge cases (nothing landed, everything in order, each update
//! alone, each prefix) and then seeded random subsets, orders and tears.
//!
//! Promises:
//! * The log is in the order the inner device applied the updates (the log
//!   lock is held across each inner write, discard and flush), so replaying
//!   the whole log over the base gives the inner device's contents, and the
//!   image with every update kept in order is the device as it was at `n`.
//! * A request the inner device refused is not logged (it was never
//!   acknowledged), nor is an empty one.
//! * A [`CrashPoint`] prints as one line (`n=12 keep=[5,7,6] torn={7:0b101}`)
//!   and parses back, so a failing cut can be written out as a reproducer.
//! * Bad cuts (beyond the log, keeping a flushed or non-update op, ...) are
//!   refused with a [`CrashPointError`], never a panic.
//!
//! Relies on:
//! * Nobody writes the inner device except through this wrapper while
//!   recording, or the base and the log no longer describe it. Put the
//!   recorder directly over the medium (a [`MemDevice`]) and any
//!   [`super::FaultDevice`] above it, so the log holds what the medium got.
//! * The device is test-sized: the base and every write are kept in memory.
//!
//! Mirror sets: give each leg its own `RecordingDevice`. Each leg has its own
//! volatile cache, so its own log, flush epochs and crash cut: after a power
//! cut the legs may hold different subsets of their unflushed writes, and a
//! leg that failed before the cut simply has a shorter log. To cut every leg
//! at one instant, add the same mark to every leg at that instant and enumerate
//! each leg's cuts at its own mark position ([`RecordingDevice::crash_points_at`]).
//!
//! Not modelled: FUA writes (the engine does not issue them), garbage or
//! shorn sectors inside a torn write (FAST'13 saw them on some SSDs), and
//! discards that leave anything but zeroes.

use super::{Device, DeviceRef, MemDevice, SECTOR};
use crate::error::{DeviceError, DeviceResult};
use parking_lot::Mutex;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

/// One entry of the log.
#[derive(Clone, PartialEq, Eq)]
pub enum RecordedOp {
    /// An acknowledged write (a vectored write is one entry).
    Write { offset: u64, data: Arc<[u8]> },
    /// An acknowledged discard.
    Discard { offset: u64, len: u64 },
    /// An acknowledged flush: every update before it is durable.
    Flush,
    /// A test's named mark; changes nothing on the device.
    Mark(String),
}

impl RecordedOp {
    /// The device bytes an update changes; `None` for flushes and marks.
    pub fn extent(&self) -> Option<Range<u64>> {
        match self {
            RecordedOp::Write { offset, data } => Some(*offset..offset + data.len() as u64),
            RecordedOp::Discard { offset, len } => Some(*offset..offset + len),
            RecordedOp::Flush | RecordedOp::Mark(_) => None,
        }
    }

    /// Whether this is a write or a discard: an update a crash may lose.
    pub fn is_update(&self) -> bool {
        self.extent().is_some()
    }

    /// How many sectors an update covers (0 for flushes and marks).
    pub fn sectors(&self) -> u64 {
        self.extent().map_or(0, |e| (e.end - e.start) / SECTOR)
    }
}

impl fmt::Debug for RecordedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordedOp::Write { offset, data } => f
                .debug_struct("Write")
                .field("offset", offset)
                .field("len", &data.len())
                .finish(),
            RecordedOp::Discard { offset, len } => f
                .debug_struct("Discard")
                .field("offset", offset)
                .field("len", len)
                .finish(),
            RecordedOp::Flush => f.write_str("Flush"),
            RecordedOp::Mark(name) => f.debug_tuple("Mark").field(name).finish(),
        }
    }
}

/// One state a power cut can leave a device in. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CrashPoint {
    /// Ops `0..n` of the log had been acknowledged when the power went.
    pub n: usize,
    /// Log indices of the unflushed updates that landed, in landing order.
    pub keep: Vec<usize>,
    /// For torn updates (indices in `keep`): which of their sectors landed,
    /// 0 being the update's first 512 bytes. A kept update with no entry
    /// landed whole.
    pub torn: BTreeMap<usize, BTreeSet<u32>>,
}

impl CrashPoint {
    /// A cut at `n` where the updates `keep` landed whole, in that order.
    pub fn new(n: usize, keep: Vec<usize>) -> Self {
        CrashPoint {
            n,
            keep,
            torn: BTreeMap::new(),
        }
    }

    /// The same cut with update `index` torn: only `sectors` of it landed.
    pub fn with_torn(mut self, index: usize, sectors: impl IntoIterator<Item = u32>) -> Self {
        self.torn.insert(index, sectors.into_iter().collect());
        self
    }

    /// Parse the form [`fmt::Display`] prints, e.g. `n=12 keep=[5,7,6]
    /// torn={7:0b101}` (bit i of a mask is sector i; `torn` is optional).
    pub fn parse(s: &str) -> Result<Self, CrashPointError> {
        Self::parse_fields(&mut Cursor(s)).map_err(|reason| CrashPointError::Parse {
            input: s.to_string(),
            reason,
        })
    }

    fn parse_fields(c: &mut Cursor<'_>) -> Result<Self, String> {
        c.expect("n")?;
        c.expect("=")?;
        let n = c.number()?;
        c.expect("keep")?;
        c.expect("=")?;
        let keep = c.list("[", "]", |c| c.number())?;
        let mut torn = BTreeMap::new();
        if c.eat("torn") {
            c.expect("=")?;
            let entries = c.list("{", "}", |c| {
                let index = c.number()?;
                c.expect(":")?;
                Ok((index, c.mask()?))
            })?;
            for (index, sectors) in entries {
                if torn.insert(index, sectors).is_some() {
                    return Err(format!("op {index} is torn twice"));
                }
            }
        }
        if !c.at_end() {
            return Err(format!("unexpected {:?}", c.0.trim_start()));
        }
        Ok(CrashPoint { n, keep, torn })
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n={} keep=[", self.n)?;
        for (k, index) in self.keep.iter().enumerate() {
            let sep = if k == 0 { "" } else { "," };
            write!(f, "{sep}{index}")?;
        }
        f.write_str("]")?;
        if !self.torn.is_empty() {
            f.write_str(" torn={")?;
            for (k, (index, sectors)) in self.torn.iter().enumerate() {
                let sep = if k == 0 { "" } else { "," };
                write!(f, "{sep}{index}:0b")?;
                match sectors.last() {
                    None => f.write_str("0")?,
                    Some(&top) => {
                        for s in (0..=top).rev() {
                            f.write_str(if sectors.contains(&s) { "1" } else { "0" })?;
                        }
                    }
                }
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

impl FromStr for CrashPoint {
    type Err = CrashPointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CrashPoint::parse(s)
    }
}

/// The unparsed rest of a [`CrashPoint`] string. Every token may be preceded
/// by whitespace.
struct Cursor<'a>(&'a str);

impl Cursor<'_> {
    fn eat(&mut self, token: &str) -> bool {
        match self.0.trim_start().strip_prefix(token) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected {token:?} at {:?}", self.0.trim_start()))
        }
    }

    fn at_end(&self) -> bool {
        self.0.trim().is_empty()
    }

    fn digits(&mut self, radix: u32) -> &str {
        let rest = self.0.trim_start();
        let end = rest
            .find(|ch: char| !ch.is_digit(radix))
            .unwrap_or(rest.len());
        let (digits, rest) = rest.split_at(end);
        self.0 = rest;
        digits
    }

    fn number(&mut self) -> Result<usize, String> {
        let digits = self.digits(10);
        digits
            .parse()
            .map_err(|e| format!("expected a number, got {digits:?}: {e}"))
    }

    /// `0b` and binary digits, bit i (from the right) being sector i.
    fn mask(&mut self) -> Result<BTreeSet<u32>, String> {
        self.expect("0b")?;
        let digits = self.digits(2);
        if digits.is_empty() {
            return Err("expected binary digits after 0b".to_string());
        }
        let mut sectors = BTreeSet::new();
        for (bit, ch) in digits.bytes().rev().enumerate() {
            if ch == b'1' {
                let bit = u32::try_from(bit).map_err(|_| "sector mask too long".to_string())?;
                sectors.insert(bit);
            }
        }
        Ok(sectors)
    }

    /// `open item (, item)* close`, possibly empty.
    fn list<T>(
        &mut self,
        open: &str,
        close: &str,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        self.expect(open)?;
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(",")?;
        }
    }
}

/// Why a crash image could not be built, or a crash point not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrashPointError {
    #[error("cut at {n} is beyond the end of the log ({len} ops)")]
    BeyondLog { n: usize, len: usize },
    #[error("op {index} is not a write or discard after the last flush before {n}")]
    NotUnflushed { index: usize, n: usize },
    #[error("op {0} is kept twice")]
    KeptTwice(usize),
    #[error("op {0} is torn but not kept")]
    TornNotKept(usize),
    #[error("op {index} covers {sectors} sectors: it has no sector {sector}")]
    NoSuchSector {
        index: usize,
        sector: u32,
        sectors: u64,
    },
    #[error("cannot parse crash point {input:?}: {reason}")]
    Parse { input: String, reason: String },
}

/// A device that passes requests through and logs every update. See the
/// module documentation.
pub struct RecordingDevice {
    inner: DeviceRef,
    base: Vec<u8>,
    log: Mutex<Vec<RecordedOp>>,
}

impl fmt::Debug for RecordingDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingDevice")
            .field("inner", &self.inner)
            .field("logged_ops", &self.len())
            .finish()
    }
}

impl RecordingDevice {
    /// Start recording `inner`: its current contents become the durable base.
    pub fn new(inner: DeviceRef) -> DeviceResult<Self> {
        let size = inner.size() - inner.size() % SECTOR;
        let len = usize::try_from(size).map_err(|_| DeviceError::OutOfRange {
            device: inner.name().to_string(),
            offset: 0,
            len: size,
            size: usize::MAX as u64,
        })?;
        let mut base = vec![0; len];
        inner.read_at(0, &mut base)?;
        Ok(RecordingDevice {
            inner,
            base,
            log: Mutex::new(Vec::new()),
        })
    }

    /// The wrapped device.
    pub fn inner(&self) -> &DeviceRef {
        &self.inner
    }

    /// The contents when recording started.
    pub fn base(&self) -> &[u8] {
        &self.base
    }

    /// How many ops the log holds.
    pub fn len(&self) -> usize {
        self.log.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.lock().is_empty()
    }

    /// A copy of the log (written data is shared, not copied).
    pub fn ops(&self) -> Vec<RecordedOp> {
        self.log.lock().clone()
    }

    /// Append a named mark; returns its log index, which is the cut "just
    /// before the mark" (ops issued before it, none after).
    pub fn mark(&self, name: impl Into<String>) -> usize {
        let mut log = self.log.lock();
        log.push(RecordedOp::Mark(name.into()));
        log.len() - 1
    }

    /// The log index of the first mark called `name`.
    pub fn find_mark(&self, name: &str) -> Option<usize> {
        self.log
            .lock()
            .iter()
            .position(|op| matches!(op, RecordedOp::Mark(m) if m == name))
    }

    /// Every mark with its log index, in log order.
    pub fn marks(&self) -> Vec<(usize, String)> {
        self.log
            .lock()
            .iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                RecordedOp::Mark(m) => Some((i, m.clone())),
                _ => None,
            })
            .collect()
    }

    /// The log indices of the flushes.
    pub fn flush_points(&self) -> Vec<usize> {
        flush_points(&self.log.lock())
    }

    /// The log indices of the updates a cut at `n` may lose: the writes and
    /// discards after the last flush before `n`.
    pub fn unflushed_writes(&self, n: usize) -> Result<Vec<usize>, CrashPointError> {
        let ops = self.ops_before(n)?;
        Ok(unflushed_updates(&ops))
    }

    /// The image a cut at `n` leaves when the unflushed updates `survivors`
    /// landed whole, in that order, and no others.
    pub fn crash_image(&self, n: usize, survivors: &[usize]) -> Result<Vec<u8>, CrashPointError> {
        self.crash_image_at(&CrashPoint::new(n, survivors.to_vec()))
    }

    /// The image the cut `point` leaves.
    pub fn crash_image_at(&self, point: &CrashPoint) -> Result<Vec<u8>, CrashPointError> {
        let ops = self.ops_before(point.n)?;
        let durable = check_point(&ops, point)?;
        let mut image = self.base.clone();
        for op in &ops[..durable] {
            apply(&mut image, op, None);
        }
        for index in &point.keep {
            apply(&mut image, &ops[*index], point.torn.get(index));
        }
        Ok(image)
    }

    /// A memory device holding the image the cut `point` leaves.
    pub fn materialise(&self, point: &CrashPoint) -> Result<MemDevice, CrashPointError> {
        let name = format!("{} cut at {}", self.inner.name(), point.n);
        Ok(MemDevice::from_image(name, self.crash_image_at(point)?))
    }

    /// Cuts worth testing, up to `max_per_flush_epoch` for each flush epoch
    /// (the ops before the first flush, between two flushes, after the last).
    ///
    /// Each epoch is cut at its end (just before its closing flush, or at the
    /// end of the log), so every mark in it counts as passed; any subset of
    /// its updates may have landed. In order, until the cap: nothing landed,
    /// everything in order, each update alone, each prefix, then random
    /// subsets in random orders with some multi-sector updates torn, drawn
    /// from `rng`. Points are deduplicated after putting `keep` in a
    /// canonical order (orders that differ only by swapping updates that do
    /// not overlap give the same image), so the same seed and log always
    /// give the same list.
    pub fn crash_points<R: Rng>(&self, rng: &mut R, max_per_flush_epoch: usize) -> Vec<CrashPoint> {
        let ops = self.ops();
        let mut ends = flush_points(&ops);
        ends.push(ops.len());
        ends.into_iter()
            .flat_map(|n| sample_points(&ops[..n], rng, max_per_flush_epoch))
            .collect()
    }

    /// As [`RecordingDevice::crash_points`] for the one cut `n` (for instance
    /// a mark's position, to cut every leg of a mirror set at one instant).
    pub fn crash_points_at<R: Rng>(
        &self,
        n: usize,
        rng: &mut R,
        max: usize,
    ) -> Result<Vec<CrashPoint>, CrashPointError> {
        let ops = self.ops_before(n)?;
        Ok(sample_points(&ops, rng, max))
    }

    /// A copy of ops `0..n` of the log.
    fn ops_before(&self, n: usize) -> Result<Vec<RecordedOp>, CrashPointError> {
        let log = self.log.lock();
        match log.get(..n) {
            Some(ops) => Ok(ops.to_vec()),
            None => Err(CrashPointError::BeyondLog { n, len: log.len() }),
        }
    }

    /// Run `io` on the inner device with the log locked, and log `op` if it
    /// succeeded, so the log order is the order the inner device saw.
    fn logged(&self, op: RecordedOp, io: impl FnOnce() -> DeviceResult<()>) -> DeviceResult<()> {
        let mut log = self.log.lock();
        io()?;
        if op.extent().is_none_or(|e| !e.is_empty()) {
            log.push(op);
        }
        Ok(())
    }
}

impl Device for RecordingDevice {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.inner.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        let op = RecordedOp::Write {
            offset,
            data: Arc::from(buf),
        };
        self.logged(op, || self.inner.write_at(offset, buf))
    }

    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> DeviceResult<()> {
        let op = RecordedOp::Write {
            offset,
            data: Arc::from(bufs.concat()),
        };
        self.logged(op, || self.inner.write_vectored_at(offset, bufs))
    }

    fn flush(&self) -> DeviceResult<()> {
        self.logged(RecordedOp::Flush, || self.inner.flush())
    }

    /// Logged as a write of `len` zero bytes (which is what it is, and what
    /// a crash cut may lose or tear like any write).
    fn write_zeroes(&self, offset: u64, len: u64) -> DeviceResult<()> {
        let zeroes = usize::try_from(len).map_err(|_| DeviceError::OutOfRange {
            device: self.inner.name().to_string(),
            offset,
            len,
            size: self.inner.size(),
        })?;
        let op = RecordedOp::Write {
            offset,
            data: Arc::from(vec![0u8; zeroes]),
        };
        self.logged(op, || self.inner.write_zeroes(offset, len))
    }

    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        let op = RecordedOp::Discard { offset, len };
        self.logged(op, || self.inner.discard(offset, len))
    }
}

fn flush_points(ops: &[RecordedOp]) -> Vec<usize> {
    (0..ops.len())
        .filter(|&i| ops[i] == RecordedOp::Flush)
        .collect()
}

/// How many ops of `ops` are durable: those up to and including the last flush.
fn durable_len(ops: &[RecordedOp]) -> usize {
    ops.iter()
        .rposition(|op| *op == RecordedOp::Flush)
        .map_or(0, |f| f + 1)
}

fn unflushed_updates(ops: &[RecordedOp]) -> Vec<usize> {
    (durable_len(ops)..ops.len())
        .filter(|&i| ops[i].is_update())
        .collect()
}

/// Check `point` against `ops` (the log cut at `point.n`); returns how many
/// of the ops are durable.
fn check_point(ops: &[RecordedOp], point: &CrashPoint) -> Result<usize, CrashPointError> {
    let durable = durable_len(ops);
    let mut kept = HashSet::new();
    for &index in &point.keep {
        if index < durable || !ops.get(index).is_some_and(RecordedOp::is_update) {
            return Err(CrashPointError::NotUnflushed { index, n: point.n });
        }
        if !kept.insert(index) {
            return Err(CrashPointError::KeptTwice(index));
        }
    }
    for (&index, landed) in &point.torn {
        if !kept.contains(&index) {
            return Err(CrashPointError::TornNotKept(index));
        }
        let sectors = ops[index].sectors();
        if let Some(&sector) = landed.last() {
            if u64::from(sector) >= sectors {
                return Err(CrashPointError::NoSuchSector {
                    index,
                    sector,
                    sectors,
                });
            }
        }
    }
    Ok(durable)
}

/// Apply an update to `image`: whole, or only the sectors in `landed`.
fn apply(image: &mut [u8], op: &RecordedOp, landed: Option<&BTreeSet<u32>>) {
    let Some(extent) = op.extent() else {
        return;
    };
    let whole = 0..extent.end - extent.start;
    let parts: Vec<Range<u64>> = match landed {
        None => vec![whole],
        Some(sectors) => sectors
            .iter()
            .map(|&s| u64::from(s) * SECTOR..(u64::from(s) + 1) * SECTOR)
            .filter(|part| part.end <= whole.end)
            .collect(),
    };
    for part in parts {
        let at = (extent.start + part.start) as usize..(extent.start + part.end) as usize;
        let Some(target) = image.get_mut(at) else {
            continue;
        };
        match op {
            RecordedOp::Write { data, .. } => {
                target.copy_from_slice(&data[part.start as usize..part.end as usize])
            }
            _ => target.fill(0),
        }
    }
}

/// Do two logged updates touch a common byte?
fn overlap(ops: &[RecordedOp], a: usize, b: usize) -> bool {
    match (ops[a].extent(), ops[b].extent()) {
        (Some(x), Some(y)) => x.start < y.end && y.start < x.end,
        _ => false,
    }
}

/// The canonical form of a cut at `ops.len()`: torn masks that landed every
/// sector dropped, updates none of whose sectors landed dropped, and `keep`
/// in the smallest order by index among the orders that reach it by swapping
/// neighbours that do not overlap (the lexicographic normal form of the
/// trace). Two cuts with the same canonical form leave the same image.
fn canonical(
    ops: &[RecordedOp],
    keep: Vec<usize>,
    torn: BTreeMap<usize, BTreeSet<u32>>,
) -> CrashPoint {
    let mut torn = torn;
    torn.retain(|&i, landed| (landed.len() as u64) < ops[i].sectors());
    let mut rest: Vec<usize> = keep
        .into_iter()
        .filter(|i| torn.get(i).is_none_or(|landed| !landed.is_empty()))
        .collect();
    torn.retain(|_, landed| !landed.is_empty());
    let mut ordered = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        // An update may go next if nothing before it in `rest` overlaps it.
        let next = (0..rest.len())
            .filter(|&j| (0..j).all(|i| !overlap(ops, rest[i], rest[j])))
            .min_by_key(|&j| rest[j])
            .unwrap_or(0);
        ordered.push(rest.remove(next));
    }
    CrashPoint {
        n: ops.len(),
        keep: ordered,
        torn,
    }
}

/// Up to `max` distinct cuts at `ops.len()`, edge cases first.
fn sample_points<R: Rng>(ops: &[RecordedOp], rng: &mut R, max: usize) -> Vec<CrashPoint> {
    let updates = unflushed_updates(ops);
    let mut points = Vec::new();
    let mut seen = HashSet::new();
    let mut offer = |keep: Vec<usize>, torn: BTreeMap<usize, BTreeSet<u32>>| {
        if points.len() < max {
            let point = canonical(ops, keep, torn);
            if seen.insert(point.clone()) {
                points.push(point);
            }
        }
        points.len() < max
    };
    offer(vec![], BTreeMap::new());
    offer(updates.clone(), BTreeMap::new());
    for &u in &updates {
        offer(vec![u], BTreeMap::new());
    }
    for end in 2..updates.len() {
        offer(updates[..end].to_vec(), BTreeMap::new());
    }
    // Random cuts; with few updates there are few distinct ones, so give up
    // after a bounded number of tries.
    for _ in 0..max.saturating_mul(4) {
        let mut keep: Vec<usize> = updates
            .iter()
            .copied()
            .filter(|_| rng.random_bool(0.5))
            .collect();
        keep.shuffle(rng);
        let mut torn = BTreeMap::new();
        for &i in &keep {
            let sectors = u32::try_from(ops[i].sectors()).unwrap_or(u32::MAX);
            if sectors > 1 && rng.random_bool(0.25) {
                let landed = (0..sectors).filter(|_| rng.random_bool(0.5)).collect();
                torn.insert(i, landed);
            }
        }
        if !offer(keep, torn) {
            break;
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const SIZE: u64 = 16 * SECTOR;

    fn recorder() -> (Arc<MemDevice>, RecordingDevice) {
        let mem = Arc::new(MemDevice::new("leg0", SIZE));
        mem.poke(0, &[0xEE; SIZE as usize]);
        let rec = RecordingDevice::new(mem.clone()).unwrap();
        (mem, rec)
    }

    fn sectors_of(image: &[u8], first: u64, count: u64) -> Vec<u8> {
        let s = (first * SECTOR) as usize;
        image[s..s + (count * SECTOR) as usize].to_vec()
    }

    fn fill(byte: u8, sectors: u64) -> Vec<u8> {
        vec![byte; (sectors * SECTOR) as usize]
    }

    #[test]
    fn logs_acknowledged_updates_in_order_and_passes_through() {
        let (mem, rec) = recorder();
        assert!(rec.is_empty());
        rec.write_at(0, &fill(1, 1)).unwrap();
        rec.write_vectored_at(SECTOR, &[&fill(2, 1), &fill(3, 1)])
            .unwrap();
        let m = rec.mark("fsync returned");
        rec.flush().unwrap();
        rec.discard(0, SECTOR).unwrap();
        let expected = vec![
            RecordedOp::Write {
                offset: 0,
                data: Arc::from(fill(1, 1)),
            },
            RecordedOp::Write {
                offset: SECTOR,
                data: Arc::from([fill(2, 1), fill(3, 1)].concat()),
            },
            RecordedOp::Mark("fsync returned".into()),
            RecordedOp::Flush,
            RecordedOp::Discard {
                offset: 0,
                len: SECTOR,
            },
        ];
        assert_eq!(rec.ops(), expected);
        assert_eq!((m, rec.len()), (2, 5));
        assert_eq!(rec.flush_points(), vec![3]);
        assert_eq!(mem.flush_count(), 1);
        let mut b = vec![0u8; 3 * SECTOR as usize];
        rec.read_at(0, &mut b).unwrap();
        assert_eq!(b, [fill(0, 1), fill(2, 1), fill(3, 1)].concat());
        assert_eq!(rec.base(), &vec![0xEE; SIZE as usize][..]);
        assert_eq!((rec.name(), rec.size()), ("leg0", SIZE));
    }

    #[test]
    fn write_zeroes_is_logged_as_a_write_of_zeroes() {
        let (mem, rec) = recorder();
        rec.write_zeroes(SECTOR, 2 * SECTOR).unwrap();
        assert_eq!(
            rec.ops(),
            vec![RecordedOp::Write {
                offset: SECTOR,
                data: Arc::from(fill(0, 2)),
            }]
        );
        assert_eq!(
            mem.peek(0, 4 * SECTOR as usize),
            [fill(0xEE, 1), fill(0, 2), fill(0xEE, 1)].concat()
        );
        // A cut that loses it leaves the old bytes; one that keeps it, zeroes.
        assert_eq!(
            sectors_of(&rec.crash_image(1, &[]).unwrap(), 1, 1),
            fill(0xEE, 1)
        );
        assert_eq!(
            sectors_of(&rec.crash_image(1, &[0]).unwrap(), 1, 2),
            fill(0, 2)
        );
        assert!(rec.write_zeroes(SIZE, SECTOR).is_err());
        assert_eq!(rec.len(), 1);
    }

    #[test]
    fn refused_and_empty_requests_are_not_logged() {
        let (_mem, rec) = recorder();
        assert!(rec.write_at(SIZE, &fill(1, 1)).is_err());
        assert!(rec.write_at(1, &fill(1, 1)).is_err());
        assert!(rec.discard(0, 100).is_err());
        rec.write_at(0, &[]).unwrap();
        rec.discard(0, 0).unwrap();
        assert!(rec.is_empty(), "{:?}", rec.ops());
    }

    /// Log: W0 A@s0, F1, W2 B@s0-1, W3 C@s1-2, W4 D@s8, M5, D6 discard s8-9.
    fn scenario() -> RecordingDevice {
        let (_mem, rec) = recorder();
        rec.write_at(0, &fill(b'A', 1)).unwrap();
        rec.flush().unwrap();
        rec.write_at(0, &fill(b'B', 2)).unwrap();
        rec.write_at(SECTOR, &fill(b'C', 2)).unwrap();
        rec.write_at(8 * SECTOR, &fill(b'D', 1)).unwrap();
        rec.mark("after D");
        rec.discard(8 * SECTOR, 2 * SECTOR).unwrap();
        rec
    }

    #[test]
    fn flushed_prefix_is_durable_and_nothing_else_without_survivors() {
        let rec = scenario();
        assert_eq!(rec.unflushed_writes(7).unwrap(), vec![2, 3, 4, 6]);
        assert_eq!(rec.unflushed_writes(1).unwrap(), vec![0]);
        assert_eq!(rec.unflushed_writes(2).unwrap(), Vec::<usize>::new());
        let image = rec.crash_image(7, &[]).unwrap();
        assert_eq!(sectors_of(&image, 0, 1), fill(b'A', 1));
        assert_eq!(sectors_of(&image, 1, 15), fill(0xEE, 15));
        // Before the flush, even the first write may be lost.
        assert_eq!(rec.crash_image(1, &[]).unwrap(), rec.base());
    }

    #[test]
    fn overlapping_survivors_land_in_the_order_given() {
        let rec = scenario();
        let b_then_c = rec.crash_image(7, &[2, 3]).unwrap();
        assert_eq!(
            sectors_of(&b_then_c, 0, 3),
            [fill(b'B', 1), fill(b'C', 2)].concat()
        );
        let c_then_b = rec.crash_image(7, &[3, 2]).unwrap();
        assert_eq!(
            sectors_of(&c_then_b, 0, 3),
            [fill(b'B', 2), fill(b'C', 1)].concat()
        );
        for image in [&b_then_c, &c_then_b] {
            assert_eq!(sectors_of(image, 3, 13), fill(0xEE, 13));
        }
        // C alone: the durable A under it survives in sector 0.
        let c_only = rec.crash_image(7, &[3]).unwrap();
        assert_eq!(
            sectors_of(&c_only, 0, 3),
            [fill(b'A', 1), fill(b'C', 2)].concat()
        );
    }

    #[test]
    fn torn_write_lands_only_the_chosen_sectors() {
        let rec = scenario();
        let point = CrashPoint::new(7, vec![2, 3]).with_torn(3, [1]);
        let image = rec.crash_image_at(&point).unwrap();
        assert_eq!(
            sectors_of(&image, 0, 3),
            [fill(b'B', 2), fill(b'C', 1)].concat()
        );
        let point = CrashPoint::new(7, vec![3, 2]).with_torn(2, [0]);
        let image = rec.crash_image_at(&point).unwrap();
        assert_eq!(
            sectors_of(&image, 0, 3),
            [fill(b'B', 1), fill(b'C', 2)].concat()
        );
        let point = CrashPoint::new(7, vec![2]).with_torn(2, []);
        assert_eq!(
            rec.crash_image_at(&point).unwrap(),
            rec.crash_image(7, &[]).unwrap()
        );
    }

    #[test]
    fn discard_after_the_last_flush_may_or_may_not_happen() {
        let rec = scenario();
        let kept = rec.crash_image(7, &[4, 6]).unwrap();
        assert_eq!(sectors_of(&kept, 8, 2), fill(0, 2));
        let lost = rec.crash_image(7, &[4]).unwrap();
        assert_eq!(
            sectors_of(&lost, 8, 2),
            [fill(b'D', 1), fill(0xEE, 1)].concat()
        );
        let discard_then_write = rec.crash_image(7, &[6, 4]).unwrap();
        assert_eq!(
            sectors_of(&discard_then_write, 8, 2),
            [fill(b'D', 1), fill(0, 1)].concat()
        );
        let half = rec
            .crash_image_at(&CrashPoint::new(7, vec![4, 6]).with_torn(6, [1]))
            .unwrap();
        assert_eq!(
            sectors_of(&half, 8, 2),
            [fill(b'D', 1), fill(0, 1)].concat()
        );
    }

    #[test]
    fn marks_are_found_and_change_no_image() {
        let rec = scenario();
        let m = rec.find_mark("after D").unwrap();
        assert_eq!(m, 5);
        assert_eq!(rec.find_mark("never"), None);
        assert_eq!(rec.marks(), vec![(5, "after D".to_string())]);
        assert_eq!(rec.unflushed_writes(m).unwrap(), vec![2, 3, 4]);
        assert_eq!(
            rec.crash_image(m, &[2, 3, 4]).unwrap(),
            rec.crash_image(m + 1, &[2, 3, 4]).unwrap()
        );
        assert!(
            rec.crash_image(m, &[6]).is_err(),
            "discard 6 comes after the mark"
        );
    }

    #[test]
    fn bad_cuts_are_refused() {
        let rec = scenario();
        let cases = [
            (
                CrashPoint::new(8, vec![]),
                CrashPointError::BeyondLog { n: 8, len: 7 },
            ),
            (
                CrashPoint::new(7, vec![0]),
                CrashPointError::NotUnflushed { index: 0, n: 7 },
            ),
            (
                CrashPoint::new(7, vec![1]),
                CrashPointError::NotUnflushed { index: 1, n: 7 },
            ),
            (
                CrashPoint::new(7, vec![5]),
                CrashPointError::NotUnflushed { index: 5, n: 7 },
            ),
            (
                CrashPoint::new(4, vec![4]),
                CrashPointError::NotUnflushed { index: 4, n: 4 },
            ),
            (
                CrashPoint::new(7, vec![99]),
                CrashPointError::NotUnflushed { index: 99, n: 7 },
            ),
            (
                CrashPoint::new(7, vec![2, 3, 2]),
                CrashPointError::KeptTwice(2),
            ),
            (
                CrashPoint::new(7, vec![2]).with_torn(3, [0]),
                CrashPointError::TornNotKept(3),
            ),
            (
                CrashPoint::new(7, vec![2]).with_torn(2, [2]),
                CrashPointError::NoSuchSector {
                    index: 2,
                    sector: 2,
                    sectors: 2,
                },
            ),
        ];
        for (point, expected) in cases {
            assert_eq!(rec.crash_image_at(&point), Err(expected), "{point}");
        }
        assert!(rec.unflushed_writes(8).is_err());
        assert!(rec
            .crash_points_at(8, &mut StdRng::seed_from_u64(1), 10)
            .is_err());
    }

    #[test]
    fn materialise_gives_a_device_holding_the_image() {
        let rec = scenario();
        let point = CrashPoint::new(7, vec![3, 2]).with_torn(3, [0]);
        let dev = rec.materialise(&point).unwrap();
        assert_eq!(dev.snapshot(), rec.crash_image_at(&point).unwrap());
        assert_eq!(dev.size(), SIZE);
    }

    /// A random workload on a MemDevice, with a snapshot of the device after
    /// every op taken by the test itself: the oracle the images must match.
    struct Workload {
        rec: RecordingDevice,
        /// `after[n]`: the device after ops `0..n`.
        after: Vec<Vec<u8>>,
        flushes: Vec<usize>,
    }

    fn workload(seed: u64, ops: usize) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed);
        let mem = Arc::new(MemDevice::new("leg0", SIZE));
        mem.poke(0, &vec![0xEE; SIZE as usize]);
        let rec = RecordingDevice::new(mem.clone()).unwrap();
        let mut after = vec![mem.snapshot()];
        let mut flushes = Vec::new();
        for i in 0..ops {
            let sectors = rng.random_range(1..=4u64);
            let first = rng.random_range(0..=16 - sectors);
            match rng.random_range(0..10) {
                0..=1 => {
                    flushes.push(i);
                    rec.flush().unwrap();
                }
                2 => rec.discard(first * SECTOR, sectors * SECTOR).unwrap(),
                _ => {
                    let data: Vec<u8> = (0..sectors * SECTOR).map(|_| rng.random()).collect();
                    rec.write_at(first * SECTOR, &data).unwrap();
                }
            }
            after.push(mem.snapshot());
        }
        Workload {
            rec,
            after,
            flushes,
        }
    }

    /// The model of a crash image: the snapshot at the last flush, then each
    /// survivor's landed sectors copied from the snapshot taken right after it.
    fn model_image(w: &Workload, point: &CrashPoint) -> Vec<u8> {
        let durable = w
            .flushes
            .iter()
            .rev()
            .find(|&&f| f < point.n)
            .map_or(0, |f| f + 1);
        let mut image = w.after[durable].clone();
        let ops = w.rec.ops();
        for &i in &point.keep {
            let extent = ops[i].extent().unwrap();
            for s in 0..ops[i].sectors() {
                if point
                    .torn
                    .get(&i)
                    .is_some_and(|landed| !landed.contains(&(s as u32)))
                {
                    continue;
                }
                let at = (extent.start + s * SECTOR) as usize
                    ..(extent.start + (s + 1) * SECTOR) as usize;
                image[at.clone()].copy_from_slice(&w.after[i + 1][at]);
            }
        }
        image
    }

    #[test]
    fn crash_images_match_a_model_built_from_snapshots() {
        for seed in 0..6 {
            let w = workload(seed, 40);
            assert_eq!(w.rec.flush_points(), w.flushes);
            let mut rng = StdRng::seed_from_u64(seed + 100);
            for n in 0..=w.rec.len() {
                let unflushed = w.rec.unflushed_writes(n).unwrap();
                // Everything in order: the device as it was at n.
                assert_eq!(
                    w.rec.crash_image(n, &unflushed).unwrap(),
                    w.after[n],
                    "seed {seed} n {n}"
                );
                // Random subsets, orders and tears against the model.
                for _ in 0..5 {
                    let mut keep: Vec<usize> = unflushed
                        .iter()
                        .copied()
                        .filter(|_| rng.random_bool(0.5))
                        .collect();
                    keep.shuffle(&mut rng);
                    let mut point = CrashPoint::new(n, keep.clone());
                    for &i in &keep {
                        let sectors = w.rec.ops()[i].sectors() as u32;
                        if rng.random_bool(0.3) {
                            point =
                                point.with_torn(i, (0..sectors).filter(|_| rng.random_bool(0.5)));
                        }
                    }
                    let image = w.rec.crash_image_at(&point).unwrap();
                    assert!(image == model_image(&w, &point), "seed {seed}: {point}");
                }
            }
        }
    }

    #[test]
    fn enumerated_points_are_valid_and_match_the_model() {
        let w = workload(7, 60);
        let points = w.rec.crash_points(&mut StdRng::seed_from_u64(3), 40);
        assert!(points.len() > 40);
        for point in &points {
            let image = w.rec.crash_image_at(point).unwrap();
            assert!(image == model_image(&w, point), "{point}");
        }
    }

    #[test]
    fn enumeration_covers_the_edge_cases_of_every_epoch() {
        let w = workload(11, 60);
        let ops = w.rec.ops();
        let points = w.rec.crash_points(&mut StdRng::seed_from_u64(5), 1000);
        let set: HashSet<&CrashPoint> = points.iter().collect();
        assert_eq!(set.len(), points.len(), "duplicates");
        let mut ends = w.flushes.clone();
        ends.push(ops.len());
        for &n in &ends {
            let updates = w.rec.unflushed_writes(n).unwrap();
            let has = |keep: &[usize]| set.contains(&CrashPoint::new(n, keep.to_vec()));
            assert!(has(&[]), "n={n}: nothing landed");
            assert!(has(&updates), "n={n}: everything landed");
            for &u in &updates {
                assert!(has(&[u]), "n={n}: only {u} landed");
            }
            for end in 0..=updates.len() {
                assert!(has(&updates[..end]), "n={n}: prefix of {end}");
            }
        }
        // Only cuts at epoch ends.
        assert!(points.iter().all(|p| ends.contains(&p.n)));
        // Reorderings of overlapping updates and torn updates occur.
        assert!(points
            .iter()
            .any(|p| p.keep.windows(2).any(|k| k[0] > k[1])));
        assert!(points.iter().any(|p| !p.torn.is_empty()));
    }

    #[test]
    fn enumeration_orders_only_overlapping_updates_out_of_index_order() {
        let w = workload(13, 60);
        let ops = w.rec.ops();
        let points = w.rec.crash_points(&mut StdRng::seed_from_u64(9), 200);
        for p in &points {
            for pair in p.keep.windows(2) {
                if pair[0] > pair[1] {
                    assert!(overlap(&ops, pair[0], pair[1]), "{p}: not canonical");
                }
            }
            for (i, landed) in &p.torn {
                assert!(
                    !landed.is_empty() && (landed.len() as u64) < ops[*i].sectors(),
                    "{p}"
                );
            }
        }
        // Two orders of non-overlapping updates give one canonical point.
        let rec = scenario();
        let a = canonical(&rec.ops(), vec![4, 2, 3], BTreeMap::new());
        let b = canonical(&rec.ops(), vec![2, 4, 3], BTreeMap::new());
        let c = canonical(&rec.ops(), vec![2, 3, 4], BTreeMap::new());
        assert_eq!(a, c);
        assert_eq!(b, c);
        let d = canonical(&rec.ops()[..7], vec![3, 4, 2], BTreeMap::new());
        assert_eq!(d.keep, vec![3, 2, 4]);
    }

    #[test]
    fn enumeration_is_deterministic_for_a_seed_and_respects_the_cap() {
        let w = workload(17, 60);
        let one = w.rec.crash_points(&mut StdRng::seed_from_u64(42), 25);
        let two = w.rec.crash_points(&mut StdRng::seed_from_u64(42), 25);
        assert_eq!(one, two);
        let other = w.rec.crash_points(&mut StdRng::seed_from_u64(43), 25);
        assert_ne!(one, other);
        let epochs = w.flushes.len() + 1;
        for n in w.flushes.iter().copied().chain([w.rec.len()]) {
            assert!(one.iter().filter(|p| p.n == n).count() <= 25);
        }
        assert!(one.len() <= 25 * epochs);
        // With a cap of 2: nothing and everything, per epoch.
        let two_each = w.rec.crash_points(&mut StdRng::seed_from_u64(42), 2);
        for p in &two_each {
            let updates = w.rec.unflushed_writes(p.n).unwrap();
            assert!(p.keep.is_empty() || p.keep == updates, "{p}");
        }
        assert!(w
            .rec
            .crash_points(&mut StdRng::seed_from_u64(42), 0)
            .is_empty());
    }

    #[test]
    fn crash_point_prints_compactly_and_parses_back() {
        let p = CrashPoint::new(123, vec![5, 7, 6]).with_torn(7, [0, 2]);
        assert_eq!(p.to_string(), "n=123 keep=[5,7,6] torn={7:0b101}");
        assert_eq!(
            CrashPoint::parse("n=123 keep=[5,7,6] torn={7:0b101}").unwrap(),
            p
        );
        assert_eq!(
            " n = 123 keep=[ 5, 7 ,6 ] torn={ 7 : 0b0101 } "
                .parse::<CrashPoint>()
                .unwrap(),
            p
        );
        assert_eq!(CrashPoint::new(0, vec![]).to_string(), "n=0 keep=[]");
        let empty_tear = CrashPoint::new(9, vec![3]).with_torn(3, []);
        assert_eq!(empty_tear.to_string(), "n=9 keep=[3] torn={3:0b0}");
        assert_eq!(
            CrashPoint::parse("n=9 keep=[3] torn={3:0b0}").unwrap(),
            empty_tear
        );
    }

    #[test]
    fn malformed_crash_points_are_refused() {
        for bad in [
            "",
            "n=",
            "n=1",
            "keep=[1] n=2",
            "n=-1 keep=[]",
            "n=1 keep=[1,]",
            "n=1 keep=[1",
            "n=1 keep=[1] torn={1:101}",
            "n=1 keep=[1] torn={1:0b}",
            "n=1 keep=[1] torn={1:0b2}",
            "n=1 keep=[1] torn={1:0b1,1:0b10}",
            "n=1 keep=[1] extra",
            "n=99999999999999999999999 keep=[]",
        ] {
            let e = CrashPoint::parse(bad).unwrap_err();
            assert!(matches!(e, CrashPointError::Parse { .. }), "{bad:?}: {e}");
        }
    }

    fn any_crash_point() -> impl Strategy<Value = CrashPoint> {
        (
            any::<usize>(),
            prop::collection::vec(any::<usize>(), 0..8),
            prop::collection::btree_map(
                any::<usize>(),
                prop::collection::btree_set(0u32..300, 0..10),
                0..4,
            ),
        )
            .prop_map(|(n, keep, torn)| CrashPoint { n, keep, torn })
    }

    proptest! {
        #[test]
        fn crash_point_round_trips_through_its_string(p in any_crash_point()) {
            prop_assert_eq!(CrashPoint::parse(&p.to_string()).unwrap(), p);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,40}", t in "[nkeptor=\\[\\]{}:,0-9b ]{0,40}") {
            let _ = CrashPoint::parse(&s);
            let _ = CrashPoint::parse(&t);
        }
    }
}
