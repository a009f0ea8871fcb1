//! Slices: a fixed share of a queue for one runner.
//!
//! The hash space is the first 64 bits of an entry's SHA-1, as an unsigned
//! integer. Slice `K/N` (numbered from 1, as Mailman's logs print them) is the
//! exact integer range `[ceil((K-1)·2⁶⁴/N), ceil(K·2⁶⁴/N))`, computed with
//! 128-bit arithmetic: membership is `⌊prefix·N / 2⁶⁴⌋ = K-1`, so every entry
//! belongs to exactly one slice of any N, with no rounding gap or overlap.
//!
//! An entry keeps its id, and so its slice, when it moves from one queue to
//! another (seed 003: Mailman re-hashed on every requeue, so one post hopped
//! between machines). A slice also knows which bucket directories it needs to
//! list, which is what keeps a sliced runner's scan proportional to its share.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};

/// The largest N accepted.
pub const MAX_SLICES: u32 = 65_536;

/// Slice K of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slice {
    k: u32,
    n: u32,
}

impl Slice {
    /// The whole queue (1/1).
    pub const ALL: Slice = Slice { k: 1, n: 1 };

    /// Slice `k` of `n`, numbered from 1.
    pub fn new(k: u32, n: u32) -> Result<Slice> {
        if n == 0 || n > MAX_SLICES || k == 0 || k > n {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "bad slice {k}/{n}: want K/N with 1 <= K <= N <= {MAX_SLICES} (slices are numbered from 1)"
                ),
            ));
        }
        Ok(Slice { k, n })
    }

    /// K.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// N.
    pub fn n(&self) -> u32 {
        self.n
    }

    /// Whether a hash prefix falls in this slice.
    pub fn contains(&self, prefix: u64) -> bool {
        ((u128::from(prefix) * u128::from(self.n)) >> 64) as u32 == self.k - 1
    }

    /// The first prefix of the slice.
    fn lo(&self) -> u128 {
        (u128::from(self.k - 1) << 64).div_ceil(u128::from(self.n))
    }

    /// One past the last prefix of the slice.
    fn hi(&self) -> u128 {
        (u128::from(self.k) << 64).div_ceil(u128::from(self.n))
    }

    /// The bucket directories (first hash byte) that can hold entries of this slice.
    pub fn buckets(&self) -> std::ops::RangeInclusive<u8> {
        let first = (self.lo() >> 56) as u8;
        let last = ((self.hi() - 1) >> 56) as u8;
        first..=last
    }

    /// Whether this is the whole queue.
    pub fn is_all(&self) -> bool {
        self.n == 1
    }
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl FromStr for Slice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Slice> {
        let bad = || {
            Error::new(
                ErrorKind::Invalid,
                format!("bad slice {s:?}: want K/N, e.g. 2/4"),
            )
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k = k.parse().map_err(|_| bad())?;
        let n = n.parse().map_err(|_| bad())?;
        Slice::new(k, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn every_prefix_is_in_exactly_one_slice_for_n_1_to_16() {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let mut samples: Vec<u64> = (0..20_000).map(|_| xorshift(&mut seed)).collect();
        samples.extend([0, 1, u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1]);
        for n in 1..=16u32 {
            // Every boundary and its neighbours, too.
            let mut all = samples.clone();
            for k in 1..=n {
                let lo = Slice::new(k, n).unwrap().lo();
                if lo <= u128::from(u64::MAX) {
                    let lo = lo as u64;
                    all.extend([lo, lo.wrapping_sub(1), lo.wrapping_add(1)]);
                }
            }
            for &p in &all {
                let owners: Vec<u32> = (1..=n)
                    .filter(|&k| Slice::new(k, n).unwrap().contains(p))
                    .collect();
                assert_eq!(owners.len(), 1, "prefix {p:#x} n={n} owners={owners:?}");
                let s = Slice::new(owners[0], n).unwrap();
                assert!(
                    s.buckets().contains(&((p >> 56) as u8)),
                    "bucket of {p:#x} not listed for {s}"
                );
                assert!(u128::from(p) >= s.lo() && u128::from(p) < s.hi());
            }
        }
    }

    #[test]
    fn slices_parse_and_refuse_nonsense() {
        assert_eq!("2/4".parse::<Slice>().unwrap(), Slice::new(2, 4).unwrap());
        for bad in ["0/3", "4/3", "1/0", "x/2", "1", "1/2/3", "-1/2"] {
            assert!(bad.parse::<Slice>().is_err(), "{bad}");
        }
        assert_eq!(Slice::ALL.buckets(), 0..=255);
        assert_eq!(Slice::new(1, 2).unwrap().buckets(), 0..=127);
        assert_eq!(Slice::new(2, 2).unwrap().buckets(), 128..=255);
    }
}
