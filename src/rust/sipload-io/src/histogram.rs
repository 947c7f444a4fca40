//! Latency histograms in the layout `sipload/metrics/phases.py` merges.
//!
//! Every sipload histogram has one shape: values in µs, lowest 1, highest 1 hour, 3 significant digits.
//! For that shape HdrHistogram's counts index is `(b << 10) + (value >> b)` with
//! `b = bitlen(value | 2047) - 11` (`phases.bucket_index`). A [`Histogram`] here is a dense counts array
//! by that index; [`Histogram::buckets`] exports `(index, count)` pairs that Python's
//! `Histogram.from_buckets` turns into the real HdrHistogram without moving any value to another bucket.
#![forbid(unsafe_code)]

/// Lowest discernible value (µs).
pub const LOWEST_US: u64 = 1;
/// Highest trackable value (µs): one hour. Larger values are clamped to it (and counted as clamped).
pub const HIGHEST_US: u64 = 3_600_000_000;
/// Significant decimal digits of the shape.
pub const SIGNIFICANT_DIGITS: u32 = 3;

const SUB_BUCKET_MASK: u64 = 2047;
const SUB_BUCKET_BITS: u32 = 11;
const HALF_COUNT_BITS: u32 = 10;

/// Index of `value` (µs, clamped to `0..=HIGHEST_US`) in the counts array of the standard shape.
pub const fn bucket_index(value: u64) -> usize {
    let v = if value > HIGHEST_US { HIGHEST_US } else { value };
    // bit length of (v | 2047) is 64 - leading_zeros, at least 11
    let b = (64 - (v | SUB_BUCKET_MASK).leading_zeros()) - SUB_BUCKET_BITS;
    ((b << HALF_COUNT_BITS) as usize) + ((v >> b) as usize)
}

/// Number of indexes a value in `0..=HIGHEST_US` can have.
pub const INDEX_COUNT: usize = bucket_index(HIGHEST_US) + 1;

/// Bucket counts of one histogram of the standard shape, with the range of touched indexes so that
/// export and the per-interval reset cost what was recorded, not the whole array.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u64]>,
    lo: usize, // lowest touched index (INDEX_COUNT when empty)
    hi: usize, // highest touched index
    total: u64,
    clamped: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Self { counts: vec![0; INDEX_COUNT].into_boxed_slice(), lo: INDEX_COUNT, hi: 0, total: 0, clamped: 0 }
    }

    /// Count one value in µs. Negative values count as 0 and values above [`HIGHEST_US`] as
    /// `HIGHEST_US`, as `sipload/metrics/recorder.py` does; both are also counted in [`Self::clamped`].
    /// Returns whether the value was clamped.
    pub fn record(&mut self, value_us: i64) -> bool {
        let clamped = !(0..=HIGHEST_US as i64).contains(&value_us);
        let v = if value_us < 0 { 0 } else { value_us as u64 };
        self.record_index(bucket_index(v), 1);
        if clamped {
            self.clamped += 1;
        }
        clamped
    }

    /// Count `n` values in bucket `index`; an index outside the shape is ignored and returns false.
    pub fn record_index(&mut self, index: usize, n: u64) -> bool {
        let Some(slot) = self.counts.get_mut(index) else {
            return false;
        };
        if n == 0 {
            return true;
        }
        *slot = slot.saturating_add(n);
        self.total = self.total.saturating_add(n);
        self.lo = self.lo.min(index);
        self.hi = self.hi.max(index);
        true
    }

    /// Add every count of `other` to this histogram.
    pub fn merge(&mut self, other: &Histogram) {
        for (index, n) in other.buckets() {
            self.record_index(index, n);
        }
        self.clamped = self.clamped.saturating_add(other.clamped);
    }

    /// Values recorded since construction or the last reset.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Values that were outside `0..=HIGHEST_US` and were clamped.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Count in bucket `index` (0 outside the shape).
    pub fn count_at(&self, index: usize) -> u64 {
        self.counts.get(index).copied().unwrap_or(0)
    }

    /// The non-empty buckets as `(index, count)`, lowest index first.
    pub fn buckets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let range = if self.lo <= self.hi { self.lo..self.hi + 1 } else { 0..0 };
        self.counts[range.clone()].iter().zip(range).filter(|(n, _)| **n != 0).map(|(n, i)| (i, *n))
    }

    /// Empty the histogram (the start of a new interval); costs the touched range only.
    pub fn reset(&mut self) {
        if self.lo <= self.hi {
            self.counts[self.lo..=self.hi].fill(0);
        }
        self.lo = INDEX_COUNT;
        self.hi = 0;
        self.total = 0;
        self.clamped = 0;
    }

    /// The buckets, then reset: one interval's snapshot.
    pub fn take(&mut self) -> Vec<(usize, u64)> {
        let out = self.buckets().collect();
        self.reset();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formula as phases.py writes it, with Python's int.bit_length.
    fn python_formula(value: u64) -> usize {
        let bit_length = |x: u64| 64 - x.leading_zeros();
        let b = bit_length(value | 2047) - 11;
        ((b as usize) << 10) + (value >> b) as usize
    }

    #[test]
    fn index_of_the_edges_of_the_first_buckets() {
        // the first 2048 values have their own index; from 2048 on, each bucket holds half as many
        // sub-buckets of twice the width
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1), 1);
        assert_eq!(bucket_index(2047), 2047);
        assert_eq!(bucket_index(2048), (1 << 10) + 1024);
        assert_eq!(bucket_index(2049), (1 << 10) + 1024);
        assert_eq!(bucket_index(4095), (1 << 10) + 2047);
        assert_eq!(bucket_index(4096), (2 << 10) + 1024);
        assert_eq!(bucket_index(8191), (2 << 10) + 2047);
    }

    #[test]
    fn index_of_powers_of_two_and_neighbours() {
        for p in 0..32 {
            for v in [(1u64 << p).saturating_sub(1), 1 << p, (1 << p) + 1] {
                if v <= HIGHEST_US {
                    assert_eq!(bucket_index(v), python_formula(v), "value {v}");
                }
            }
        }
        assert_eq!(bucket_index(1 << 20), (10 << 10) + 1024);
    }

    #[test]
    fn highest_and_clamping_above_it() {
        // bitlen(3_600_000_000) = 32, b = 21, 3_600_000_000 >> 21 = 1716
        assert_eq!(bucket_index(HIGHEST_US), (21 << 10) + 1716);
        assert_eq!(INDEX_COUNT, 21 * 1024 + 1716 + 1);
        assert_eq!(bucket_index(HIGHEST_US + 1), bucket_index(HIGHEST_US));
        assert_eq!(bucket_index(u64::MAX), bucket_index(HIGHEST_US));
        let mut h = Histogram::new();
        assert!(h.record(i64::MAX));
        assert!(h.record(-5));
        assert!(!h.record(HIGHEST_US as i64));
        assert!(!h.record(0));
        assert_eq!(h.clamped(), 2);
        assert_eq!(h.buckets().collect::<Vec<_>>(), vec![(0, 2), (bucket_index(HIGHEST_US), 2)]);
    }

    #[test]
    fn formula_on_a_spread_of_values() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % (HIGHEST_US + 1)) >> (x % 32);
            assert_eq!(bucket_index(v), python_formula(v), "value {v}");
        }
    }

    #[test]
    fn record_merge_export_reset() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for v in [5, 5, 3000, 3001, 1_000_000] {
            a.record(v);
        }
        b.record(5);
        b.record(7);
        a.merge(&b);
        assert_eq!(a.total(), 7);
        let got: Vec<_> = a.buckets().collect();
        assert_eq!(
            got,
            vec![
                (5, 3),
                (7, 1),
                (bucket_index(3000), 2), // 3000 and 3001 share a 2-µs bucket
                (bucket_index(1_000_000), 1),
            ]
        );
        assert_eq!(a.take(), got);
        assert!(a.is_empty());
        assert_eq!(a.buckets().count(), 0);
        assert!(a.counts.iter().all(|n| *n == 0));
        a.record(9);
        assert_eq!(a.buckets().collect::<Vec<_>>(), vec![(9, 1)]);
    }

    #[test]
    fn record_index_outside_the_shape_is_ignored() {
        let mut h = Histogram::new();
        assert!(!h.record_index(INDEX_COUNT, 1));
        assert!(h.record_index(INDEX_COUNT - 1, 3));
        assert_eq!(h.count_at(INDEX_COUNT - 1), 3);
        assert_eq!(h.count_at(usize::MAX), 0);
        assert_eq!(h.total(), 3);
    }
}
