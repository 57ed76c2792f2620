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

/// K data shards and M parity shards. Decoding checks the bounds as
/// [`EcScheme::new`] does, so no scheme from the wire or a record is out
/// of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawScheme")]
pub struct EcScheme {
    pub k: u8,
    pub m: u8,
}

#[derive(Deserialize)]
struct RawScheme {
    k: u8,
    m: u8,
}

impl TryFrom<RawScheme> for EcScheme {
    type Error = Error;
    fn try_from(r: RawScheme) -> Result<EcScheme> {
        EcScheme::new(r.k, r.m)
    }
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

    /// Shards durable before a write is acknowledged under the cue
    /// `sync`: K+M without one; never fewer than K+1 (a stripe with only
    /// its K data shards would have no redundancy left), never more than
    /// K+M ([`crate::Cues::check`] refuses that).
    pub fn sync(self, sync: Option<u8>) -> u8 {
        let all = self.shards() as u8;
        sync.map_or(all, |s| s.clamp(self.k + 1, all))
    }

    /// Bytes per shard for a chunk of `len` bytes.
    pub fn shard_len(self, len: u64) -> u64 {
        len.div_ceil(self.k.max(1) as u64)
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
        let originals: Vec<&[u8]> = shards.iter().map(|c| c.as_ref()).collect();
        self.encode_pieces(&originals, s as usize)
    }

    /// Parity of K original shards of `s` bytes, coded [`PIECE`] bytes at a
    /// time: the codec makes several passes over its input, which stay in
    /// cache for a piece and would not for a whole shard.
    fn encode_pieces(self, originals: &[&[u8]], s: usize) -> Result<Vec<Vec<u8>>> {
        let (k, m) = (self.k as usize, self.m as usize);
        let err =
            |e: reed_solomon_simd::Error| Error::internal(format!("erasure coding ec={self}: {e}"));
        let mut out = vec![vec![0u8; s]; m];
        let mut enc: Option<(reed_solomon_simd::ReedSolomonEncoder, usize)> = None;
        let mut at = 0;
        while at < s {
            let n = PIECE.min(s - at);
            if enc.as_ref().map(|(_, len)| *len) != Some(n) {
                enc = Some((
                    reed_solomon_simd::ReedSolomonEncoder::new(k, m, n).map_err(err)?,
                    n,
                ));
            }
            let e = &mut enc.as_mut().expect("set above").0;
            for o in originals {
                e.add_original_shard(&o[at..at + n]).map_err(err)?;
            }
            let r = e.encode().map_err(err)?;
            for (p, piece) in out.iter_mut().zip(r.recovery_iter()) {
                p[at..at + n].copy_from_slice(piece);
            }
            at += n;
        }
        Ok(out)
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
        let s = *lens.iter().next().expect("one length");
        let err = |e: reed_solomon_simd::Error| {
            Error::internal(format!("erasure decoding ec={self}: {e}"))
        };
        let missing: Vec<usize> = (0..k).filter(|i| shards[*i].is_none()).collect();
        if !missing.is_empty() {
            let mut restored: Vec<Vec<u8>> = missing.iter().map(|_| vec![0u8; s]).collect();
            let mut dec: Option<(reed_solomon_simd::ReedSolomonDecoder, usize)> = None;
            let mut at = 0;
            while at < s {
                let n = PIECE.min(s - at);
                if dec.as_ref().map(|(_, len)| *len) != Some(n) {
                    dec = Some((
                        reed_solomon_simd::ReedSolomonDecoder::new(k, m, n).map_err(err)?,
                        n,
                    ));
                }
                let d = &mut dec.as_mut().expect("set above").0;
                for (i, sh) in shards.iter().enumerate() {
                    let Some(sh) = sh else { continue };
                    if i < k {
                        d.add_original_shard(i, &sh[at..at + n]).map_err(err)?;
                    } else {
                        d.add_recovery_shard(i - k, &sh[at..at + n]).map_err(err)?;
                    }
                }
                let r = d.decode().map_err(err)?;
                for (i, piece) in r.restored_original_iter() {
                    if let Some(slot) = missing.iter().position(|x| *x == i) {
                        restored[slot][at..at + n].copy_from_slice(piece);
                    }
                }
                at += n;
            }
            for (i, data) in missing.into_iter().zip(restored) {
                shards[i] = Some(data);
            }
        }
        if parity && shards[k..].iter().any(|s| s.is_none()) {
            let originals: Vec<&[u8]> = shards[..k].iter().flatten().map(Vec::as_slice).collect();
            let computed = self.encode_pieces(&originals, s)?;
            for (slot, p) in shards[k..].iter_mut().zip(computed) {
                if slot.is_none() {
                    *slot = Some(p);
                }
            }
        }
        Ok(())
    }
}

/// Bytes of each shard coded at once (see `encode_pieces`).
const PIECE: usize = 64 * 1024;

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
    fn schemes_out_of_bounds_do_not_decode() {
        use serde::de::value::{Error as ValueError, SeqDeserializer};
        let decode = |k: u8, m: u8| {
            EcScheme::deserialize(SeqDeserializer::<_, ValueError>::new([k, m].into_iter()))
        };
        for (k, m) in [(0, 1), (1, 0), (30, 3)] {
            assert!(decode(k, m).is_err(), "{k}+{m} decoded");
        }
        assert_eq!(decode(4, 2).unwrap(), EcScheme { k: 4, m: 2 });
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
    fn shards_of_many_pieces_rebuild() {
        // Shards longer than a piece, the last piece shorter.
        let s = EcScheme::new(3, 2).unwrap();
        let data: Vec<u8> = (0..(1usize << 20) + 777)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let sl = s.shard_len(data.len() as u64);
        assert!(sl as usize > 3 * PIECE && !(sl as usize).is_multiple_of(PIECE));
        let mut all: Vec<Vec<u8>> = (0..3)
            .map(|i| s.data_shard(&data, sl, i).into_owned())
            .collect();
        all.extend(s.parity(&data).unwrap());
        let mut partial: Vec<Option<Vec<u8>>> = all.iter().cloned().map(Some).collect();
        partial[0] = None;
        partial[4] = None;
        s.fill(&mut partial, true).unwrap();
        assert!(partial.iter().zip(&all).all(|(a, b)| a.as_ref() == Some(b)));
    }

    #[test]
    fn too_few_shards_is_unavailable() {
        let s = EcScheme::new(2, 1).unwrap();
        let mut shards = vec![Some(vec![0u8; 64]), None, None];
        let e = s.fill(&mut shards, false).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Unavailable, "{e}");
    }
}
