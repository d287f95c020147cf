//! A device that injects faults into chosen requests (after dm-flakey and
//! dm-error).
//!
//! [`FaultDevice`] wraps any device and passes every request through to it,
//! except requests a [`FaultRule`] picks out. A rule names an [`Op`] kind and
//! a byte range (it matches requests overlapping the range), may let its first
//! `skip` matches through, fires at most `times` times (or forever), and says
//! what goes wrong ([`Fault`]): the request fails, a bit is flipped in the data
//! read or stored, a write/discard/flush is acknowledged but never done, or
//! the request is served at another offset. A whole-device switch
//! ([`FaultDevice::kill`] / [`FaultDevice::revive`]) makes every request fail,
//! as a leg that disappears.
//!
//! Promises:
//! * Rules can be added and removed from any thread while I/O is in flight.
//!   Each request consults the rule set once, under one lock, so it sees the
//!   set either before or after a change, and rule counters are exact.
//! * At most one fault per request: every rule counts each request it matches
//!   (so `skip` means the same whatever other rules exist), and the earliest
//!   added rule that is due fires. A vectored write is one request.
//! * A malformed request (misaligned, out of range) gets the error a healthy
//!   device gives, whatever the rules say, and counts for no rule: faults are
//!   injected only into requests the device would accept.
//! * A rule that could never do what it says (a bit flip on a flush, an empty
//!   range, a misaligned misdirect target, ...) is refused when added with an
//!   [`InvalidRule`], never silently ignored.
//! * Injected failures are [`DeviceError::Injected`], named after the inner
//!   device, so the layers above see an ordinary device error (EIO).
//!
//! Relies on: the inner device keeping the [`Device`] contract. Corruption
//! "on the medium" (a flipped or misdirected write) goes to the inner device;
//! put a [`super::RecordingDevice`] *under* a `FaultDevice` if a crash test
//! should see what the medium saw.

use super::{check_range, Device, DeviceRef, SECTOR};
use crate::error::{DeviceError, DeviceResult};
use parking_lot::Mutex;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which kind of request a rule matches. `Write` also matches
/// `write_zeroes`, which is a write of zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Read,
    Write,
    Flush,
    Discard,
}

impl Op {
    /// The name used in [`DeviceError::Injected`].
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Discard => "discard",
        }
    }
}

/// What happens to a request a rule fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail with [`DeviceError::Injected`]. Any op.
    Fail,
    /// Flip bit `bit` (0 = least significant) of the byte at device offset
    /// `offset`: in the data returned (Read; the medium is untouched) or in
    /// the data stored (Write; acknowledged as success). The rule matches
    /// only requests that contain that byte.
    FlipBit { offset: u64, bit: u8 },
    /// Acknowledge without passing the request on: a lost write (Write), a
    /// discard that did nothing (Discard), a flush that lied (Flush).
    Drop,
    /// Serve the request at byte `to` instead of where it was addressed:
    /// store the write there (Write), read from there (Read), discard there
    /// (Discard). Succeeds if the inner device accepts the target range.
    Misdirect { to: u64 },
}

impl Fault {
    fn applies_to(self, op: Op) -> bool {
        match self {
            Fault::Fail => true,
            Fault::FlipBit { .. } => matches!(op, Op::Read | Op::Write),
            Fault::Drop => matches!(op, Op::Write | Op::Flush | Op::Discard),
            Fault::Misdirect { .. } => matches!(op, Op::Read | Op::Write | Op::Discard),
        }
    }
}

/// One rule: which requests, how many of them, what fault.
///
/// Build with [`FaultRule::new`] and the chained setters:
/// `FaultRule::new(Op::Write, Fault::Drop).range(0..4096).skip(2).times(1)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub op: Op,
    /// Device bytes; a request matches if it overlaps them. Flushes have no
    /// range and match every `Op::Flush` rule whatever its range.
    pub range: Range<u64>,
    /// How many matching requests to let through before firing.
    pub skip: u64,
    /// Fire at most this many times; `None` is forever.
    pub times: Option<u64>,
    pub fault: Fault,
}

impl FaultRule {
    /// A rule on every `op` request anywhere on the device, firing forever.
    pub fn new(op: Op, fault: Fault) -> Self {
        FaultRule {
            op,
            range: 0..u64::MAX,
            skip: 0,
            times: None,
            fault,
        }
    }

    /// Match only requests overlapping `range` (device bytes).
    pub fn range(mut self, range: Range<u64>) -> Self {
        self.range = range;
        self
    }

    /// Let the first `k` matching requests through.
    pub fn skip(mut self, k: u64) -> Self {
        self.skip = k;
        self
    }

    /// Fire at most `n` times.
    pub fn times(mut self, n: u64) -> Self {
        self.times = Some(n);
        self
    }

    fn validate(&self) -> Result<(), InvalidRule> {
        if !self.fault.applies_to(self.op) {
            return Err(InvalidRule::NotApplicable {
                op: self.op,
                fault: self.fault,
            });
        }
        if self.range.is_empty() {
            return Err(InvalidRule::EmptyRange(self.range.clone()));
        }
        if self.times == Some(0) {
            return Err(InvalidRule::NeverFires);
        }
        match self.fault {
            Fault::FlipBit { bit, .. } if bit >= 8 => Err(InvalidRule::BitIndex(bit)),
            Fault::FlipBit { offset, .. } if !self.range.contains(&offset) => {
                Err(InvalidRule::FlipOutsideRange {
                    offset,
                    range: self.range.clone(),
                })
            }
            Fault::Misdirect { to } if to % SECTOR != 0 => Err(InvalidRule::MisalignedTarget(to)),
            _ => Ok(()),
        }
    }

    fn matches(&self, op: Op, offset: u64, len: u64) -> bool {
        if op != self.op {
            return false;
        }
        if op == Op::Flush {
            return true;
        }
        let end = offset.saturating_add(len);
        let overlaps = len > 0 && offset < self.range.end && self.range.start < end;
        match self.fault {
            Fault::FlipBit { offset: byte, .. } => overlaps && offset <= byte && byte < end,
            _ => overlaps,
        }
    }
}

/// Why [`FaultDevice::add_rule`] refused a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRule {
    #[error("{fault:?} cannot apply to a {op:?} request")]
    NotApplicable { op: Op, fault: Fault },
    #[error("byte range {0:?} is empty: the rule would never match")]
    EmptyRange(Range<u64>),
    #[error("a rule that fires 0 times never fires")]
    NeverFires,
    #[error("bit index {0} is not in 0..8")]
    BitIndex(u8),
    #[error("byte {offset} to flip is outside the rule's range {range:?}")]
    FlipOutsideRange { offset: u64, range: Range<u64> },
    #[error("misdirect target {0} is not {SECTOR}-byte aligned")]
    MisalignedTarget(u64),
}

/// Names a rule added to a [`FaultDevice`], to count or remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(u64);

#[derive(Debug)]
struct ActiveRule {
    id: RuleId,
    rule: FaultRule,
    matched: u64,
    fired: u64,
}

impl ActiveRule {
    fn is_due(&self) -> bool {
        self.matched > self.rule.skip && self.rule.times.is_none_or(|n| self.fired < n)
    }
}

#[derive(Debug, Default)]
struct RuleSet {
    next_id: u64,
    rules: Vec<ActiveRule>,
}

/// A device that passes requests to `inner` except those its rules pick out.
#[derive(Debug)]
pub struct FaultDevice {
    inner: DeviceRef,
    rules: Mutex<RuleSet>,
    dead: AtomicBool,
}

impl FaultDevice {
    /// A pass-through wrapper with no rules, alive.
    pub fn new(inner: DeviceRef) -> Self {
        FaultDevice {
            inner,
            rules: Mutex::new(RuleSet::default()),
            dead: AtomicBool::new(false),
        }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &DeviceRef {
        &self.inner
    }

    /// Add a rule; it applies to every request that consults the rules
    /// after this returns.
    pub fn add_rule(&self, rule: FaultRule) -> Result<RuleId, InvalidRule> {
        rule.validate()?;
        let mut set = self.rules.lock();
        let id = RuleId(set.next_id);
        set.next_id += 1;
        set.rules.push(ActiveRule {
            id,
            rule,
            matched: 0,
            fired: 0,
        });
        Ok(id)
    }

    /// Remove a rule. Returns how many times it fired, or `None` if there is
    /// no such rule (never added, or already removed).
    pub fn remove_rule(&self, id: RuleId) -> Option<u64> {
        let mut set = self.rules.lock();
        let pos = set.rules.iter().position(|r| r.id == id)?;
        Some(set.rules.remove(pos).fired)
    }

    /// Remove every rule.
    pub fn clear_rules(&self) {
        self.rules.lock().rules.clear();
    }

    /// How many times a rule has fired, or `None` if there is no such rule.
    pub fn fired(&self, id: RuleId) -> Option<u64> {
        self.rules
            .lock()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.fired)
    }

    /// How many requests a rule has matched (fired or not), or `None`.
    pub fn matched(&self, id: RuleId) -> Option<u64> {
        self.rules
            .lock()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.matched)
    }

    /// Make every request fail, as a device that has disappeared. Rules are
    /// kept (and count nothing) until [`FaultDevice::revive`].
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    /// Undo [`FaultDevice::kill`]: the device is back, contents as they were.
    pub fn revive(&self) {
        self.dead.store(false, Ordering::SeqCst);
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    fn injected(&self, op: Op, offset: u64) -> DeviceError {
        DeviceError::Injected {
            device: self.inner.name().to_string(),
            op: op.as_str(),
            offset,
        }
    }

    /// Check the request as a healthy device would, then whether the device
    /// is dead, then pick the fault (if any) for it.
    fn plan(&self, op: Op, offset: u64, len: u64) -> DeviceResult<Option<Fault>> {
        if op != Op::Flush {
            check_range(self.inner.name(), self.inner.size(), offset, len)?;
        }
        if self.is_dead() {
            return Err(self.injected(op, offset));
        }
        let mut set = self.rules.lock();
        let mut chosen = None;
        for r in set.rules.iter_mut() {
            if !r.rule.matches(op, offset, len) {
                continue;
            }
            r.matched += 1;
            if chosen.is_none() && r.is_due() {
                r.fired += 1;
                chosen = Some(r.rule.fault);
            }
        }
        Ok(chosen)
    }

    /// Pass a write of `parts` (back to back) at `offset` on, as one request.
    fn forward_write(&self, offset: u64, parts: &[&[u8]]) -> DeviceResult<()> {
        match parts {
            [one] => self.inner.write_at(offset, one),
            _ => self.inner.write_vectored_at(offset, parts),
        }
    }

    fn write_parts(&self, offset: u64, parts: &[&[u8]]) -> DeviceResult<()> {
        let len: u64 = parts.iter().map(|p| p.len() as u64).sum();
        match self.plan(Op::Write, offset, len)? {
            Some(Fault::Fail) => Err(self.injected(Op::Write, offset)),
            Some(Fault::Drop) => Ok(()),
            Some(Fault::Misdirect { to }) => self.forward_write(to, parts),
            Some(Fault::FlipBit { offset: byte, bit }) => {
                let mut data = parts.concat();
                if let Some(b) = data.get_mut((byte - offset) as usize) {
                    *b ^= 1 << bit;
                }
                self.inner.write_at(offset, &data)
            }
            None => self.forward_write(offset, parts),
        }
    }
}

impl Device for FaultDevice {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        match self.plan(Op::Read, offset, buf.len() as u64)? {
            Some(Fault::Fail) => Err(self.injected(Op::Read, offset)),
            Some(Fault::Misdirect { to }) => self.inner.read_at(to, buf),
            Some(Fault::FlipBit { offset: byte, bit }) => {
                self.inner.read_at(offset, buf)?;
                if let Some(b) = buf.get_mut((byte - offset) as usize) {
                    *b ^= 1 << bit;
                }
                Ok(())
            }
            // `Drop` is refused for reads by `add_rule`.
            Some(Fault::Drop) | None => self.inner.read_at(offset, buf),
        }
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> DeviceResult<()> {
        self.write_parts(offset, &[buf])
    }

    fn write_vectored_at(&self, offset: u64, bufs: &[&[u8]]) -> DeviceResult<()> {
        self.write_parts(offset, bufs)
    }

    fn flush(&self) -> DeviceResult<()> {
        match self.plan(Op::Flush, 0, 0)? {
            Some(Fault::Fail) => Err(self.injected(Op::Flush, 0)),
            Some(Fault::Drop) => Ok(()),
            // Bit flips and misdirects are refused for flushes by `add_rule`.
            _ => self.inner.flush(),
        }
    }

    /// A write of zeroes, as far as rules go: `Op::Write` rules match it
    /// and fire on it as on a write of `len` zero bytes.
    fn write_zeroes(&self, offset: u64, len: u64) -> DeviceResult<()> {
        match self.plan(Op::Write, offset, len)? {
            Some(Fault::Fail) => Err(self.injected(Op::Write, offset)),
            Some(Fault::Drop) => Ok(()),
            Some(Fault::Misdirect { to }) => self.inner.write_zeroes(to, len),
            Some(Fault::FlipBit { offset: byte, bit }) => {
                self.inner.write_zeroes(offset, len)?;
                // The rule matched, so `byte` lies inside the range: store
                // its sector with the one bit flipped.
                let sector = byte - byte % SECTOR;
                let mut buf = [0u8; SECTOR as usize];
                buf[(byte - sector) as usize] ^= 1 << bit;
                self.inner.write_at(sector, &buf)
            }
            None => self.inner.write_zeroes(offset, len),
        }
    }

    fn discard(&self, offset: u64, len: u64) -> DeviceResult<()> {
        match self.plan(Op::Discard, offset, len)? {
            Some(Fault::Fail) => Err(self.injected(Op::Discard, offset)),
            Some(Fault::Drop) => Ok(()),
            Some(Fault::Misdirect { to }) => self.inner.discard(to, len),
            // Bit flips are refused for discards by `add_rule`.
            Some(Fault::FlipBit { .. }) | None => self.inner.discard(offset, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const SIZE: u64 = 64 * 1024;

    fn setup() -> (Arc<MemDevice>, FaultDevice) {
        let mem = Arc::new(MemDevice::new("leg0", SIZE));
        let fault = FaultDevice::new(mem.clone());
        (mem, fault)
    }

    fn is_injected(r: &DeviceResult<()>, op: &str) -> bool {
        matches!(r, Err(DeviceError::Injected { op: o, .. }) if *o == op)
    }

    #[test]
    fn without_rules_everything_passes_through() {
        let (mem, dev) = setup();
        dev.write_at(512, &[3; 1024]).unwrap();
        dev.write_vectored_at(4096, &[&[4; 512], &[5; 512]])
            .unwrap();
        dev.discard(1024, 512).unwrap();
        dev.flush().unwrap();
        assert_eq!(mem.flush_count(), 1);
        let mut b = [0u8; 1024];
        dev.read_at(512, &mut b).unwrap();
        assert!(b[..512].iter().all(|&x| x == 3) && b[512..].iter().all(|&x| x == 0));
        assert_eq!(mem.peek(4096, 1024), [[4u8; 512], [5; 512]].concat());
        assert_eq!(dev.name(), "leg0");
        assert_eq!(dev.size(), SIZE);
    }

    #[test]
    fn fail_applies_to_each_op_kind_in_its_range_only() {
        let (mem, dev) = setup();
        for op in [Op::Read, Op::Write, Op::Discard] {
            dev.add_rule(FaultRule::new(op, Fault::Fail).range(8192..8704))
                .unwrap();
        }
        let mut b = [0u8; 512];
        // Requests overlapping 8192..8704 fail; their neighbours do not.
        assert!(is_injected(&dev.write_at(8192 - 512, &[1; 1024]), "write"));
        assert!(is_injected(&dev.read_at(8192, &mut b), "read"));
        assert!(is_injected(&dev.discard(8192, 512), "discard"));
        dev.write_at(8704, &[1; 512]).unwrap();
        dev.write_at(8192 - 512, &[1; 512]).unwrap();
        dev.read_at(8704, &mut b).unwrap();
        dev.discard(0, 512).unwrap();
        // The failed write stored nothing.
        assert_eq!(mem.peek(8192, 512), vec![0; 512]);
        dev.flush().unwrap();
        dev.add_rule(FaultRule::new(Op::Flush, Fault::Fail))
            .unwrap();
        assert!(is_injected(&dev.flush(), "flush"));
        assert_eq!(mem.flush_count(), 1);
    }

    #[test]
    fn flip_bit_on_read_corrupts_only_the_returned_data() {
        let (mem, dev) = setup();
        mem.poke(1024, &[0xF0; 512]);
        let id = dev
            .add_rule(FaultRule::new(
                Op::Read,
                Fault::FlipBit {
                    offset: 1030,
                    bit: 0,
                },
            ))
            .unwrap();
        // A read that does not contain byte 1030 is untouched and not counted.
        let mut b = [0u8; 512];
        dev.read_at(512, &mut b).unwrap();
        assert_eq!(dev.fired(id), Some(0));
        let mut b = [0u8; 1024];
        dev.read_at(512, &mut b).unwrap();
        assert_eq!(b[1030 - 512], 0xF1);
        let flipped = b.iter().filter(|&&x| x != 0 && x != 0xF0).count();
        assert_eq!(flipped, 1);
        assert_eq!(mem.peek(1030, 1), [0xF0]);
        assert_eq!(dev.fired(id), Some(1));
    }

    #[test]
    fn flip_bit_on_write_stores_corruption_and_acknowledges() {
        let (mem, dev) = setup();
        dev.add_rule(FaultRule::new(
            Op::Write,
            Fault::FlipBit {
                offset: 2047,
                bit: 7,
            },
        ))
        .unwrap();
        dev.write_at(1536, &[0x01; 1024]).unwrap();
        let stored = mem.peek(1536, 1024);
        assert_eq!(stored[2047 - 1536], 0x81);
        assert_eq!(stored.iter().filter(|&&x| x != 0x01).count(), 1);
    }

    #[test]
    fn vectored_write_is_one_request_and_corrupted_as_a_whole() {
        let (mem, dev) = setup();
        let id = dev
            .add_rule(FaultRule::new(
                Op::Write,
                Fault::FlipBit {
                    offset: 600,
                    bit: 1,
                },
            ))
            .unwrap();
        dev.write_vectored_at(0, &[&[0; 512], &[0; 512]]).unwrap();
        assert_eq!(dev.matched(id), Some(1));
        assert_eq!(mem.peek(600, 1), [0x02]);
        assert_eq!(mem.peek(0, 1024).iter().filter(|&&x| x != 0).count(), 1);
    }

    #[test]
    fn drop_acknowledges_but_does_nothing() {
        let (mem, dev) = setup();
        mem.poke(0, &[7; 1024]);
        for op in [Op::Write, Op::Flush, Op::Discard] {
            dev.add_rule(FaultRule::new(op, Fault::Drop).times(1))
                .unwrap();
        }
        dev.write_at(0, &[9; 512]).unwrap();
        dev.discard(512, 512).unwrap();
        dev.flush().unwrap();
        assert_eq!(mem.peek(0, 1024), vec![7; 1024]);
        assert_eq!(mem.flush_count(), 0);
        // Each rule fired once; the next requests go through.
        dev.write_at(0, &[9; 512]).unwrap();
        dev.discard(512, 512).unwrap();
        dev.flush().unwrap();
        assert_eq!(mem.peek(0, 1024), [[9u8; 512], [0; 512]].concat());
        assert_eq!(mem.flush_count(), 1);
    }

    #[test]
    fn write_zeroes_is_a_write_to_the_rules() {
        let (mem, dev) = setup();
        mem.poke(0, &[7; 8192]);
        dev.add_rule(
            FaultRule::new(Op::Write, Fault::Fail)
                .range(0..512)
                .times(1),
        )
        .unwrap();
        assert!(is_injected(&dev.write_zeroes(0, 1024), "write"));
        assert_eq!(mem.peek(0, 1024), vec![7; 1024]);
        dev.add_rule(FaultRule::new(Op::Write, Fault::Drop).times(1))
            .unwrap();
        dev.write_zeroes(0, 1024).unwrap();
        assert_eq!(mem.peek(0, 1024), vec![7; 1024]);
        dev.add_rule(
            FaultRule::new(
                Op::Write,
                Fault::FlipBit {
                    offset: 700,
                    bit: 2,
                },
            )
            .times(1),
        )
        .unwrap();
        dev.write_zeroes(0, 2048).unwrap();
        let got = mem.peek(0, 2048);
        assert_eq!(got[700], 4);
        assert_eq!(got.iter().filter(|&&x| x != 0).count(), 1);
        dev.add_rule(FaultRule::new(Op::Write, Fault::Misdirect { to: 4096 }).times(1))
            .unwrap();
        dev.write_zeroes(2048, 1024).unwrap();
        assert_eq!(mem.peek(2048, 1024), vec![7; 1024]);
        assert_eq!(mem.peek(4096, 1024), vec![0; 1024]);
        assert_eq!(mem.peek(5120, 512), vec![7; 512]);
    }

    #[test]
    fn misdirect_serves_the_request_elsewhere() {
        let (mem, dev) = setup();
        let w = dev
            .add_rule(FaultRule::new(Op::Write, Fault::Misdirect { to: 16384 }).times(1))
            .unwrap();
        dev.write_at(4096, &[6; 1024]).unwrap();
        assert_eq!(mem.peek(4096, 1024), vec![0; 1024]);
        assert_eq!(mem.peek(16384, 1024), vec![6; 1024]);
        assert_eq!(dev.fired(w), Some(1));

        dev.add_rule(FaultRule::new(Op::Read, Fault::Misdirect { to: 16384 }).times(1))
            .unwrap();
        let mut b = [0u8; 512];
        dev.read_at(0, &mut b).unwrap();
        assert_eq!(b, [6; 512]);

        dev.add_rule(FaultRule::new(Op::Discard, Fault::Misdirect { to: 16384 }).times(1))
            .unwrap();
        dev.discard(0, 512).unwrap();
        assert_eq!(mem.peek(16384, 1024), [[0u8; 512], [6; 512]].concat());

        // A target past the end is the inner device's out-of-range error.
        dev.add_rule(FaultRule::new(Op::Write, Fault::Misdirect { to: SIZE }))
            .unwrap();
        assert!(matches!(
            dev.write_at(0, &[1; 512]),
            Err(DeviceError::OutOfRange { .. })
        ));
    }

    #[test]
    fn skip_and_times_count_matches_exactly() {
        let (_mem, dev) = setup();
        let id = dev
            .add_rule(
                FaultRule::new(Op::Write, Fault::Fail)
                    .range(0..512)
                    .skip(2)
                    .times(3),
            )
            .unwrap();
        let results: Vec<bool> = (0..8)
            .map(|_| dev.write_at(0, &[1; 512]).is_err())
            .collect();
        assert_eq!(
            results,
            [false, false, true, true, true, false, false, false]
        );
        assert_eq!(dev.fired(id), Some(3));
        assert_eq!(dev.matched(id), Some(8));
        // Requests outside the range or of another kind are not matches.
        dev.write_at(512, &[1; 512]).unwrap();
        dev.read_at(0, &mut [0; 512]).unwrap();
        assert_eq!(dev.matched(id), Some(8));
    }

    #[test]
    fn earliest_due_rule_fires_and_every_rule_counts() {
        let (mem, dev) = setup();
        let drop_first = dev
            .add_rule(FaultRule::new(Op::Write, Fault::Drop).times(1))
            .unwrap();
        let fail_next = dev
            .add_rule(FaultRule::new(Op::Write, Fault::Fail).times(1))
            .unwrap();
        let fail_third = dev
            .add_rule(FaultRule::new(Op::Write, Fault::Fail).skip(2).times(1))
            .unwrap();
        // Both of the first two rules are due: only the earlier one fires.
        dev.write_at(0, &[1; 512]).unwrap();
        assert_eq!(mem.peek(0, 1), [0]);
        assert_eq!(
            (dev.fired(drop_first), dev.fired(fail_next)),
            (Some(1), Some(0))
        );
        assert!(dev.write_at(0, &[2; 512]).is_err());
        assert_eq!(dev.fired(fail_next), Some(1));
        // The third rule counted the two requests others took: its skip is
        // over and it fires now.
        assert!(dev.write_at(0, &[3; 512]).is_err());
        dev.write_at(0, &[4; 512]).unwrap();
        assert_eq!(mem.peek(0, 1), [4]);
        assert_eq!(dev.fired(fail_third), Some(1));
        assert_eq!(dev.matched(fail_third), Some(4));
    }

    #[test]
    fn removed_rules_stop_firing() {
        let (_mem, dev) = setup();
        let id = dev.add_rule(FaultRule::new(Op::Read, Fault::Fail)).unwrap();
        let mut b = [0u8; 512];
        assert!(dev.read_at(0, &mut b).is_err());
        assert!(dev.read_at(0, &mut b).is_err());
        assert_eq!(dev.remove_rule(id), Some(2));
        assert_eq!(dev.remove_rule(id), None);
        assert_eq!(dev.fired(id), None);
        dev.read_at(0, &mut b).unwrap();

        dev.add_rule(FaultRule::new(Op::Read, Fault::Fail)).unwrap();
        dev.add_rule(FaultRule::new(Op::Write, Fault::Fail))
            .unwrap();
        dev.clear_rules();
        dev.read_at(0, &mut b).unwrap();
        dev.write_at(0, &b).unwrap();
    }

    #[test]
    fn dead_device_fails_everything_until_revived() {
        let (mem, dev) = setup();
        let id = dev
            .add_rule(FaultRule::new(Op::Write, Fault::Drop))
            .unwrap();
        dev.kill();
        assert!(dev.is_dead());
        let mut b = [0u8; 512];
        assert!(is_injected(&dev.read_at(0, &mut b), "read"));
        assert!(is_injected(&dev.write_at(0, &[1; 512]), "write"));
        assert!(is_injected(&dev.flush(), "flush"));
        assert!(is_injected(&dev.discard(0, 512), "discard"));
        assert_eq!(dev.matched(id), Some(0));
        assert_eq!(mem.flush_count(), 0);
        dev.revive();
        assert!(!dev.is_dead());
        dev.remove_rule(id);
        dev.write_at(0, &[1; 512]).unwrap();
        dev.read_at(0, &mut b).unwrap();
        assert_eq!(b, [1; 512]);
    }

    #[test]
    fn malformed_requests_get_the_ordinary_error_and_count_nothing() {
        let (_mem, dev) = setup();
        let id = dev
            .add_rule(FaultRule::new(Op::Write, Fault::Drop))
            .unwrap();
        assert!(matches!(
            dev.write_at(1, &[0; 512]),
            Err(DeviceError::Misaligned { .. })
        ));
        assert!(matches!(
            dev.write_at(SIZE, &[0; 512]),
            Err(DeviceError::OutOfRange { .. })
        ));
        dev.kill();
        assert!(matches!(
            dev.discard(0, 100),
            Err(DeviceError::Misaligned { .. })
        ));
        assert_eq!(dev.matched(id), Some(0));
    }

    #[test]
    fn rules_that_cannot_work_are_refused() {
        let (_mem, dev) = setup();
        let bad = [
            (
                FaultRule::new(Op::Read, Fault::Drop),
                "cannot apply to a Read",
            ),
            (
                FaultRule::new(Op::Flush, Fault::FlipBit { offset: 0, bit: 0 }),
                "cannot apply to a Flush",
            ),
            (
                FaultRule::new(Op::Flush, Fault::Misdirect { to: 0 }),
                "cannot apply to a Flush",
            ),
            (
                FaultRule::new(Op::Discard, Fault::FlipBit { offset: 0, bit: 0 }),
                "cannot apply to a Discard",
            ),
            (
                FaultRule::new(Op::Write, Fault::Fail).range(512..512),
                "is empty",
            ),
            (FaultRule::new(Op::Write, Fault::Fail).times(0), "0 times"),
            (
                FaultRule::new(Op::Write, Fault::FlipBit { offset: 0, bit: 8 }),
                "bit index 8",
            ),
            (
                FaultRule::new(Op::Write, Fault::FlipBit { offset: 0, bit: 0 }).range(512..1024),
                "outside the rule's range",
            ),
            (
                FaultRule::new(Op::Write, Fault::Misdirect { to: 100 }),
                "not 512-byte aligned",
            ),
        ];
        for (rule, why) in bad {
            let e = dev.add_rule(rule.clone()).unwrap_err();
            assert!(e.to_string().contains(why), "{rule:?}: {e}");
        }
        dev.write_at(0, &[1; 512]).unwrap();
    }

    /// Workers write and read all over the device while the main thread adds
    /// and removes a rule failing writes to one region. Every failure a worker
    /// sees must be one the rule counted, and the rule's effect must be
    /// immediate once added and gone once removed.
    #[test]
    fn rules_change_safely_while_io_is_in_flight() {
        let mem = Arc::new(MemDevice::new("leg0", SIZE));
        let dev = Arc::new(FaultDevice::new(mem));
        let failures = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let region = 0..(SIZE / 2);
        let counted = std::thread::scope(|s| {
            for t in 0..3u64 {
                let (dev, failures, stop) = (&dev, &failures, &stop);
                s.spawn(move || {
                    let mut block = t;
                    let mut buf = [0u8; 1024];
                    while !stop.load(Ordering::SeqCst) {
                        let off = (block % (SIZE / 1024)) * 1024;
                        match dev.write_at(off, &[t as u8; 1024]) {
                            Ok(()) => {}
                            Err(DeviceError::Injected { .. }) => {
                                assert!(off < SIZE / 2, "fault outside the rule's range");
                                failures.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => panic!("unexpected error {e}"),
                        }
                        dev.read_at(off, &mut buf).unwrap();
                        block += 7;
                    }
                });
            }
            let mut counted = 0;
            for _ in 0..20 {
                let id = dev
                    .add_rule(FaultRule::new(Op::Write, Fault::Fail).range(region.clone()))
                    .unwrap();
                // Effective at once, even with other threads mid-request.
                assert!(dev.write_at(0, &[9; 512]).is_err());
                // Give the workers a chance to run into it.
                let deadline = Instant::now() + Duration::from_millis(100);
                while dev.fired(id) < Some(2) && Instant::now() < deadline {
                    std::thread::yield_now();
                }
                // Our own failed write is one of the rule's firings.
                counted += dev.remove_rule(id).unwrap() - 1;
                dev.write_at(0, &[9; 512]).unwrap();
            }
            stop.store(true, Ordering::SeqCst);
            counted
        });
        let observed = failures.load(Ordering::SeqCst);
        assert!(observed > 0, "workers never hit the injected fault");
        assert_eq!(observed, counted);
    }
}
