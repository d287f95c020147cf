//! Bitmap block payloads (§3): the block bitmap and the inode bitmap.
//!
//! Bit k of payload byte j is bit `8j + k` of the block (LSB first); which
//! item that bit stands for is [`Layout`](super::layout::Layout)'s business
//! (`block_bitmap_bit`, `inode_bitmap_bit`). Bits past the last item of the
//! last bitmap block are padding, kept set so an allocator never hands them
//! out ([`set_padding`], [`padding_is_set`]). All bit indices here are
//! within one block's payload.

use super::{FormatError, Problem, Structure};

fn locate(bitmap: &[u8], bit: usize) -> Result<(usize, u8), FormatError> {
    if bit / 8 >= bitmap.len() {
        return Err(FormatError::invalid(
            Structure::Bitmap,
            "bit",
            Problem::OutOfRange {
                value: bit as u64,
                min: 0,
                max: (bitmap.len() as u64 * 8).saturating_sub(1),
            },
        ));
    }
    Ok((bit / 8, 1u8 << (bit % 8)))
}

/// Whether `bit` is set.
pub fn test_bit(bitmap: &[u8], bit: usize) -> Result<bool, FormatError> {
    let (byte, mask) = locate(bitmap, bit)?;
    Ok(bitmap[byte] & mask != 0)
}

/// Sets `bit`; returns whether it was already set.
pub fn set_bit(bitmap: &mut [u8], bit: usize) -> Result<bool, FormatError> {
    let (byte, mask) = locate(bitmap, bit)?;
    let was = bitmap[byte] & mask != 0;
    bitmap[byte] |= mask;
    Ok(was)
}

/// Clears `bit`; returns whether it was set.
pub fn clear_bit(bitmap: &mut [u8], bit: usize) -> Result<bool, FormatError> {
    let (byte, mask) = locate(bitmap, bit)?;
    let was = bitmap[byte] & mask != 0;
    bitmap[byte] &= !mask;
    Ok(was)
}

/// Sets bits `start .. start + count`.
pub fn set_range(bitmap: &mut [u8], start: usize, count: usize) -> Result<(), FormatError> {
    if count == 0 {
        return Ok(());
    }
    let last = start
        .checked_add(count - 1)
        .ok_or_else(|| FormatError::invalid(Structure::Bitmap, "bit", Problem::Overflow))?;
    locate(bitmap, last)?;
    for bit in start..=last {
        bitmap[bit / 8] |= 1 << (bit % 8);
    }
    Ok(())
}

/// The first clear bit in `start..end` (bounded by the bitmap's size).
fn find_zero_in(bitmap: &[u8], start: usize, end: usize) -> Option<usize> {
    let end = end.min(bitmap.len().saturating_mul(8));
    let mut bit = start;
    while bit < end {
        let byte = bitmap[bit / 8];
        if bit % 8 == 0 && byte == 0xff {
            bit += 8;
            continue;
        }
        if byte & (1 << (bit % 8)) == 0 {
            return Some(bit);
        }
        bit += 1;
    }
    None
}

/// The first clear bit below `limit` at or after `hint`, wrapping round to
/// the start; `None` if every bit below `limit` is set. `limit` is the
/// number of valid bits in this block (use it to keep padding out).
pub fn find_first_zero(bitmap: &[u8], hint: usize, limit: usize) -> Option<usize> {
    let hint = if hint < limit { hint } else { 0 };
    find_zero_in(bitmap, hint, limit).or_else(|| find_zero_in(bitmap, 0, hint))
}

/// Number of set bits below `limit`.
pub fn count_ones(bitmap: &[u8], limit: usize) -> usize {
    let limit = limit.min(bitmap.len().saturating_mul(8));
    let whole = limit / 8;
    let mut ones: usize = bitmap[..whole]
        .iter()
        .map(|b| b.count_ones() as usize)
        .sum();
    if limit % 8 != 0 {
        ones += (bitmap[whole] & ((1u8 << (limit % 8)) - 1)).count_ones() as usize;
    }
    ones
}

/// Sets every bit from `valid_bits` to the end (the padding after the last
/// item).
pub fn set_padding(bitmap: &mut [u8], valid_bits: usize) {
    let total = bitmap.len().saturating_mul(8);
    for bit in valid_bits.min(total)..total {
        bitmap[bit / 8] |= 1 << (bit % 8);
    }
}

/// Whether every bit from `valid_bits` to the end is set.
pub fn padding_is_set(bitmap: &[u8], valid_bits: usize) -> bool {
    let total = bitmap.len().saturating_mul(8);
    (valid_bits.min(total)..total).all(|bit| bitmap[bit / 8] & (1 << (bit % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bits_are_lsb_first() {
        let mut bitmap = [0u8; 4];
        assert!(!set_bit(&mut bitmap, 0).unwrap());
        assert!(!set_bit(&mut bitmap, 9).unwrap());
        assert!(set_bit(&mut bitmap, 9).unwrap());
        assert!(!set_bit(&mut bitmap, 31).unwrap());
        assert_eq!(bitmap, [0x01, 0x02, 0x00, 0x80]);
        assert!(test_bit(&bitmap, 9).unwrap());
        assert!(clear_bit(&mut bitmap, 9).unwrap());
        assert!(!clear_bit(&mut bitmap, 9).unwrap());
        assert!(!test_bit(&bitmap, 9).unwrap());
        assert!(test_bit(&bitmap, 32).is_err());
        assert!(set_bit(&mut bitmap, usize::MAX).is_err());
        assert!(clear_bit(&mut [], 0).is_err());
    }

    #[test]
    fn find_first_zero_wraps_and_respects_limit() {
        let mut bitmap = [0xffu8; 8];
        clear_bit(&mut bitmap, 3).unwrap();
        clear_bit(&mut bitmap, 40).unwrap();
        assert_eq!(find_first_zero(&bitmap, 0, 64), Some(3));
        assert_eq!(find_first_zero(&bitmap, 4, 64), Some(40));
        assert_eq!(find_first_zero(&bitmap, 41, 64), Some(3));
        assert_eq!(find_first_zero(&bitmap, 4, 40), Some(3)); // 40 is past the limit
        assert_eq!(find_first_zero(&bitmap, 1000, 64), Some(3));
        assert_eq!(find_first_zero(&bitmap, 0, 1000), Some(3));
        set_bit(&mut bitmap, 3).unwrap();
        assert_eq!(find_first_zero(&bitmap, 0, 40), None);
        assert_eq!(find_first_zero(&[], 0, 10), None);
    }

    #[test]
    fn counting_ranges_and_padding() {
        let mut bitmap = [0u8; 4];
        set_range(&mut bitmap, 3, 10).unwrap();
        assert_eq!(bitmap, [0xf8, 0x1f, 0, 0]);
        assert_eq!(count_ones(&bitmap, 32), 10);
        assert_eq!(count_ones(&bitmap, 5), 2);
        assert_eq!(count_ones(&bitmap, 1000), 10);
        assert!(set_range(&mut bitmap, 30, 3).is_err());
        assert!(set_range(&mut bitmap, usize::MAX, 2).is_err());
        set_range(&mut bitmap, 32, 0).unwrap();
        assert!(!padding_is_set(&bitmap, 20));
        set_padding(&mut bitmap, 20);
        assert_eq!(bitmap, [0xf8, 0x1f, 0xf0, 0xff]);
        assert!(padding_is_set(&bitmap, 20));
        assert_eq!(find_first_zero(&bitmap, 13, 20), Some(13));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn agrees_with_a_bool_model(
            bits in prop::collection::vec(any::<bool>(), 1..200),
            hint in 0usize..250,
            limit in 0usize..250,
        ) {
            let mut bitmap = vec![0u8; bits.len().div_ceil(8)];
            for (i, &b) in bits.iter().enumerate() {
                if b {
                    set_bit(&mut bitmap, i).unwrap();
                }
            }
            let valid = limit.min(bitmap.len() * 8);
            let model = |i: usize| bits.get(i).copied().unwrap_or(false);
            prop_assert_eq!(count_ones(&bitmap, limit), (0..valid).filter(|&i| model(i)).count());
            let start = if hint < limit { hint } else { 0 };
            let want = (start..valid).chain(0..start.min(valid)).find(|&i| !model(i));
            prop_assert_eq!(find_first_zero(&bitmap, hint, limit), want);
        }
    }
}
