//! What a mirror request names: regions of legs, and the per-leg answer.
//!
//! A [`Region`] is dm-io's `dm_io_region`: one leg, a first block, a block
//! count. [`ErrorBits`] is dm-io's `error_bits`: one bit per leg, set when
//! the request failed on that leg. The same bit set doubles as a set of
//! legs ([`ErrorBits::legs`], [`ErrorBits::with`]), which is why a mirror
//! set has at most [`MAX_LEGS`] legs.

use std::fmt;

/// The most legs a mirror set can have (one bit each in a `u64`).
pub const MAX_LEGS: usize = 64;

/// A run of blocks on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    pub leg: usize,
    pub block: u64,
    pub count: u64,
}

impl Region {
    pub fn new(leg: usize, block: u64, count: u64) -> Self {
        Region { leg, block, count }
    }
}

/// One bit per leg: set for each leg on which a request failed.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ErrorBits(u64);

impl ErrorBits {
    /// No leg failed.
    pub const NONE: ErrorBits = ErrorBits(0);

    /// Build from a raw mask (bit `i` = leg `i`).
    pub fn from_mask(mask: u64) -> Self {
        ErrorBits(mask)
    }

    /// Exactly the given legs.
    pub fn of_legs(legs: &[usize]) -> Self {
        legs.iter().fold(ErrorBits::NONE, |b, &l| b.with(l))
    }

    pub fn mask(self) -> u64 {
        self.0
    }

    /// No leg failed.
    pub fn is_clear(self) -> bool {
        self.0 == 0
    }

    pub fn has(self, leg: usize) -> bool {
        leg < MAX_LEGS && self.0 & (1 << leg) != 0
    }

    /// This set plus `leg`.
    #[must_use]
    pub fn with(self, leg: usize) -> Self {
        assert!(leg < MAX_LEGS, "leg {leg} out of range");
        ErrorBits(self.0 | 1 << leg)
    }

    pub fn set(&mut self, leg: usize) {
        *self = self.with(leg);
    }

    /// Legs in either set.
    #[must_use]
    pub fn union(self, other: ErrorBits) -> Self {
        ErrorBits(self.0 | other.0)
    }

    /// How many legs failed.
    pub fn count(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The failed legs, in increasing order.
    pub fn failed_legs(self) -> Vec<usize> {
        self.legs().collect()
    }

    /// Iterate over the set legs, in increasing order.
    pub fn legs(self) -> impl Iterator<Item = usize> {
        (0..MAX_LEGS).filter(move |&l| self.0 & (1 << l) != 0)
    }
}

impl fmt::Debug for ErrorBits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorBits{:?}", self.failed_legs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_legs() {
        let b = ErrorBits::NONE.with(0).with(3);
        assert!(!b.is_clear() && b.has(3) && !b.has(1) && !b.has(99));
        assert_eq!(b.failed_legs(), [0, 3]);
        assert_eq!(b.count(), 2);
        assert_eq!(b, ErrorBits::of_legs(&[3, 0]));
        assert_eq!(b.union(ErrorBits::of_legs(&[1])).mask(), 0b1011);
        assert!(ErrorBits::NONE.is_clear());
    }
}
