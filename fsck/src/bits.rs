//! A plain fixed-length bit set, for the checker's own maps of which blocks
//! and inodes are in use (one bit per block of the device, one per inode).
//!
//! Promises: every index outside `0..len` reads as clear and is ignored by
//! the writers, so a number taken from a corrupt disk can never panic here.
//! Memory is `len / 8` bytes.

/// A set of `len` bits, all clear at first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bits {
    words: Vec<u64>,
    len: u64,
}

impl Bits {
    /// `len` clear bits.
    pub fn new(len: u64) -> Bits {
        Bits {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    /// Number of bits.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set has no bits at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether bit `i` is set (`false` outside the set).
    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns whether it was set before.
    pub fn set(&mut self, i: u64) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let was = *w & (1 << (i % 64)) != 0;
        *w |= 1 << (i % 64);
        was
    }

    /// Clears bit `i`.
    pub fn clear(&mut self, i: u64) {
        if i < self.len {
            self.words[(i / 64) as usize] &= !(1 << (i % 64));
        }
    }

    /// Sets or clears bit `i`.
    pub fn put(&mut self, i: u64, value: bool) {
        if value {
            self.set(i);
        } else {
            self.clear(i);
        }
    }

    /// The 64 bits `64·w .. 64·w + 64` as one word (bit `64·w + k` is bit
    /// k); 0 past the end.
    pub fn word(&self, w: u64) -> u64 {
        usize::try_from(w)
            .ok()
            .and_then(|w| self.words.get(w))
            .copied()
            .unwrap_or(0)
    }

    /// Sets bits `start .. start + count` (clipped to the set).
    pub fn set_range(&mut self, start: u64, count: u64) {
        let end = start.saturating_add(count).min(self.len);
        let mut i = start;
        while i < end {
            if i % 64 == 0 && end - i >= 64 {
                self.words[(i / 64) as usize] = u64::MAX;
                i += 64;
            } else {
                self.set(i);
                i += 1;
            }
        }
    }

    /// The first set bit in `start .. end`, if any.
    pub fn first_set_in(&self, start: u64, end: u64) -> Option<u64> {
        let end = end.min(self.len);
        let mut i = start;
        while i < end {
            let w = self.words[(i / 64) as usize] >> (i % 64);
            if w == 0 {
                i = (i / 64 + 1) * 64;
                continue;
            }
            let at = i + u64::from(w.trailing_zeros());
            return (at < end).then_some(at);
        }
        None
    }

    /// The first clear bit in `start .. end`, if any.
    pub fn first_clear_in(&self, start: u64, end: u64) -> Option<u64> {
        let end = end.min(self.len);
        let mut i = start;
        while i < end {
            let w = !self.words[(i / 64) as usize] >> (i % 64);
            if w == 0 {
                i = (i / 64 + 1) * 64;
                continue;
            }
            let at = i + u64::from(w.trailing_zeros());
            return (at < end).then_some(at);
        }
        None
    }

    /// Number of set bits in `start .. end`.
    pub fn count_in(&self, start: u64, end: u64) -> u64 {
        let end = end.min(self.len);
        let mut n = 0;
        let mut i = start;
        while i < end {
            if i % 64 == 0 && end - i >= 64 {
                n += u64::from(self.words[(i / 64) as usize].count_ones());
                i += 64;
            } else {
                n += u64::from(self.get(i));
                i += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_search() {
        let mut b = Bits::new(200);
        assert!(!b.set(3));
        assert!(b.set(3));
        b.set_range(64, 70);
        assert!(!b.get(63) && b.get(64) && b.get(133) && !b.get(134));
        assert_eq!(b.count_in(0, 200), 71);
        assert_eq!(b.first_set_in(4, 200), Some(64));
        assert_eq!(b.first_set_in(134, 200), None);
        assert_eq!(b.first_clear_in(64, 200), Some(134));
        assert_eq!(b.first_clear_in(64, 100), None);
        b.clear(64);
        assert_eq!(b.first_set_in(4, 200), Some(65));
        // Out of range is ignored.
        assert!(!b.set(500));
        assert!(!b.get(500));
        b.set_range(190, 1000);
        assert_eq!(b.count_in(190, u64::MAX), 10);
    }
}
