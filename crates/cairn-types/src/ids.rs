use serde::{Deserialize, Serialize};
use std::fmt;

/// A file or directory in the namespace. The root is always [`InodeId::ROOT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InodeId(pub u64);

impl InodeId {
    pub const ROOT: InodeId = InodeId(1);
}

impl fmt::Display for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An immutable blob of file data. Allocated by meta, random so that two meta
/// servers (or a restarted one) never hand out the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkId(pub u128);

/// Low bits of a chunk id that number the shards of an erasure-coded
/// chunk: meta allocates such a chunk (a *stripe*) an id with these bits
/// clear, and shard `i` is stored under the id with them set to `i + 1`.
const SHARD_BITS: u128 = 0x3f;

impl ChunkId {
    /// The id shard `i` (< 63) of this stripe is stored under.
    pub fn shard(self, i: usize) -> ChunkId {
        debug_assert!((i as u128) < SHARD_BITS);
        ChunkId((self.0 & !SHARD_BITS) | (i as u128 + 1))
    }

    /// An id for a new stripe (its shard bits clear) from random bits.
    pub fn stripe_from(random: u128) -> ChunkId {
        ChunkId(random & !SHARD_BITS)
    }

    /// The stripe this id would be a shard of.
    pub fn stripe(self) -> ChunkId {
        ChunkId(self.0 & !SHARD_BITS)
    }

    /// Whether a capability for `self` allows access to `other`: the same
    /// chunk, or a shard of the stripe `self`.
    pub fn covers(self, other: ChunkId) -> bool {
        self == other || (self.0 & SHARD_BITS == 0 && other.stripe() == self)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::str::FromStr for ChunkId {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        u128::from_str_radix(s, 16)
            .map(ChunkId)
            .map_err(|_| crate::Error::invalid(format!("'{s}' is not a chunk id (32 hex digits)")))
    }
}

/// A storage node, stable across restarts (kept in the node's data directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| crate::Error::invalid(format!("'{s}' is not a node id (16 hex digits)")))
    }
}

/// The version of a file; every committed overwrite increments it by one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
