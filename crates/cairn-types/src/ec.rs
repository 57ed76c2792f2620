//! Erasure coding of one chunk (`ec=K+M`): Reed-Solomon with K data and M
//! parity shards, each stored as a chunk of its own on its own node.
//!
//! A chunk of `len` bytes is cut into K data shards of
//! [`EcScheme::shard_len`] bytes each, in order (shard 0 holds the first
//! bytes), the last ones padded with zeros; M parity shards follow. Any K
//! of the K+M rebuild the rest. A read of a byte range reads only the data
//! shards that hold it: no decoding while they are healthy.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

/// Most shards (K+M) one chunk may have.
pub const MAX_SHARDS: usize = 32;
/// Shard lengths are a multiple of this (the codec works on pairs of
/// bytes; 64 keeps every shard aligned for its SIMD paths).
pub const SHARD_ALIGN: u64 = 64;

/// K data shards and M parity shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EcScheme {
    pub k: u8,
    pub m: u8,
}

impl EcScheme {
    /// K ≥ 1 data and M ≥ 1 parity shards, K+M ≤ [`MAX_SHARDS`].
    pub fn new(k: u8, m: u8) -> Result<EcScheme> {
        if k == 0 || m == 0 || k as usize + m as usize > MAX_SHARDS {
            return Err(Error::invalid(format!(
                "ec={k}+{m}: expected K+M with K ≥ 1 data and M ≥ 1 parity shards, \
                 K+M at most {MAX_SHARDS} (as ec=4+2); for no parity use rep=1"
            )));
        }
        Ok(EcScheme { k, m })
    }

    /// K+M.
    pub fn shards(self) -> usize {
        self.k as usize + self.m as usize
    }

    /// Bytes per shard for a chunk of `len` bytes.
    pub fn shard_len(self, len: u64) -> u64 {
        len.div_ceil(self.k as u64)
            .next_multiple_of(SHARD_ALIGN)
            .max(SHARD_ALIGN)
    }

    /// Data shard `i` of `data`, padded with zeros to `shard_len`.
    pub fn data_shard(self, data: &[u8], shard_len: u64, i: usize) -> Cow<'_, [u8]> {
        let s = shard_len as usize;
        let from = (i * s).min(data.len());
        let to = ((i + 1) * s).min(data.len());
        if to - from == s {
            return Cow::Borrowed(&data[from..to]);
        }
        let mut v = vec![0u8; s];
        v[..to - from].copy_from_slice(&data[from..to]);
        Cow::Owned(v)
    }

    /// The M parity shards of `data`.
    pub fn parity(self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        let s = self.shard_len(data.len() as u64);
        let shards: Vec<Cow<'_, [u8]>> = (0..self.k as usize)
            .map(|i| self.data_shard(data, s, i))
            .collect();
        reed_solomon_simd::encode(self.k as usize, self.m as usize, &shards)
            .map_err(|e| Error::internal(format!("erasure coding ec={self}: {e}")))
    }

    /// Fill the missing entries of `shards` (K+M of them, index = shard
    /// number, each `shard_len` bytes when present) from the ones present:
    /// the data shards always, the parity shards too with `parity`. Fails
    /// when fewer than K are present.
    pub fn fill(self, shards: &mut [Option<Vec<u8>>], parity: bool) -> Result<()> {
        let (k, m) = (self.k as usize, self.m as usize);
        if shards.len() != k + m {
            return Err(Error::invalid(format!(
                "ec={self} has {} shards, got {}",
                k + m,
                shards.len()
            )));
        }
        let present = shards.iter().filter(|s| s.is_some()).count();
        if present < k {
            return Err(Error::unavailable(format!(
                "ec={self}: {present} of {} shards readable, {k} needed to rebuild",
                k + m
            )));
        }
        let lens: std::collections::HashSet<usize> =
            shards.iter().flatten().map(|s| s.len()).collect();
        if lens.len() != 1 {
            return Err(Error::corrupt(format!(
                "ec={self}: shards of different lengths"
            )));
        }
        if shards[..k].iter().any(|s| s.is_none()) {
            let restored = reed_solomon_simd::decode(
                k,
                m,
                shards[..k]
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s))),
                shards[k..]
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.as_ref().map(|s| (i, s))),
            )
            .map_err(|e| Error::internal(format!("erasure decoding ec={self}: {e}")))?;
            for (i, data) in restored {
                shards[i] = Some(data);
            }
        }
        if parity && shards[k..].iter().any(|s| s.is_none()) {
            let computed = reed_solomon_simd::encode(k, m, shards[..k].iter().flatten())
                .map_err(|e| Error::internal(format!("erasure coding ec={self}: {e}")))?;
            for (slot, p) in shards[k..].iter_mut().zip(computed) {
                if slot.is_none() {
                    *slot = Some(p);
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for EcScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

impl std::str::FromStr for EcScheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<EcScheme> {
        let bad = || {
            Error::invalid(format!(
                "ec={s}: expected K+M, data and parity shards, as ec=4+2"
            ))
        };
        let (k, m) = s.trim().split_once('+').ok_or_else(bad)?;
        let k: u8 = k.trim().parse().map_err(|_| bad())?;
        let m: u8 = m.trim().parse().map_err(|_| bad())?;
        EcScheme::new(k, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_refuses_with_reasons() {
        let s: EcScheme = "4+2".parse().unwrap();
        assert_eq!((s.k, s.m, s.shards()), (4, 2, 6));
        assert_eq!(s.to_string(), "4+2");
        for bad in ["3+0", "0+2", "40+10", "4", "4+x", "+2", "31+2"] {
            let e = bad.parse::<EcScheme>().unwrap_err();
            assert_eq!(e.kind, crate::ErrorKind::InvalidInput, "{bad}: {e}");
        }
        assert!("30+2".parse::<EcScheme>().is_ok());
    }

    #[test]
    fn shard_lengths_cover_the_chunk_aligned() {
        let s = EcScheme::new(4, 2).unwrap();
        assert_eq!(s.shard_len(4 << 20), 1 << 20);
        assert_eq!(s.shard_len(1), SHARD_ALIGN);
        assert_eq!(s.shard_len(4 * 64 + 1), 128);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        /// Any M shards lost (and at most M), the data comes back whole,
        /// and so does every parity shard.
        #[test]
        fn any_k_shards_rebuild_the_rest(
            k in 1u8..8, m in 1u8..5, len in 1usize..5000, seed: u64, lose: Vec<usize>
        ) {
            let s = EcScheme::new(k, m).unwrap();
            let mut x = seed | 1;
            let data: Vec<u8> = (0..len).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
            let sl = s.shard_len(len as u64);
            let mut all: Vec<Vec<u8>> = (0..k as usize).map(|i| s.data_shard(&data, sl, i).into_owned()).collect();
            all.extend(s.parity(&data).unwrap());
            let mut partial: Vec<Option<Vec<u8>>> = all.iter().cloned().map(Some).collect();
            for i in lose.iter().take(m as usize) {
                partial[i % s.shards()] = None;
            }
            s.fill(&mut partial, true).unwrap();
            let rebuilt: Vec<Vec<u8>> = partial.into_iter().map(Option::unwrap).collect();
            prop_assert_eq!(&rebuilt, &all);
            let joined: Vec<u8> = rebuilt[..k as usize].concat();
            prop_assert_eq!(&joined[..len], &data[..]);
        }
    }

    #[test]
    fn too_few_shards_is_unavailable() {
        let s = EcScheme::new(2, 1).unwrap();
        let mut shards = vec![Some(vec![0u8; 64]), None, None];
        let e = s.fill(&mut shards, false).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unavailable, "{e}");
    }
}
