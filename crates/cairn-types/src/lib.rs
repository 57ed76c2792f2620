//! Shared vocabulary of Cairn: identifier newtypes, validated namespace paths,
//! chunk checksums and the error type that crosses the network with its kind
//! intact.
//!
//! Owns no I/O. Every other crate depends on it; it depends on nothing of ours.
//! Read first: [`CairnPath`], [`ChunkId`], [`Error`], [`BlockCrcs`].

mod attrs;
mod checksum;
pub mod cues;
pub mod ec;
mod error;
mod ids;
mod inode;
mod path;
mod units;

pub use attrs::{
    AttrChanges, NewNode, XattrOp, XattrWhen, MAX_TARGET_LEN, MAX_XATTRS_LEN, MAX_XATTR_VALUE_LEN,
};
pub use checksum::{BlockCrcs, BLOCK_SIZE};
pub use cues::{
    component_cues, split_path_cues, Consistency, Cues, PlaceScheme, Tier, VersionPolicy,
    Writability, CUE_DIR, KEEP_ALL_VERSIONS, MAX_INLINE,
};
pub use ec::EcScheme;
pub use error::{Error, ErrorKind, Result};
pub use ids::{ChunkId, InodeId, NodeId, Version};
pub use inode::{DirEntry, EcShards, Extent, GarbageChunk, Inode, InodeKind, Layout, Xattrs};
pub use path::{CairnPath, MAX_NAME_LEN, MAX_PATH_LEN};
pub use units::{format_bytes, format_duration_ms, parse_duration, parse_size};

/// Unix time in milliseconds; the clock every record and capability uses.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A time in [`AttrChanges`] that meta replaces with the time it applies
/// the change at, which is also the ctime it sets (`UTIME_NOW`).
pub const TIME_NOW: u64 = u64::MAX;

/// Unix time in nanoseconds: file times (mtime, ctime, atime).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Longest node group name.
pub const MAX_GROUP_LEN: usize = 64;

/// The top-level directory where Cairn's front ends keep their own state
/// (the S3 gateway's keys and uploads): not a bucket, and neither listed
/// nor reachable through the mount.
pub const SYSTEM_DIR: &str = ".cairn";

/// A remote store's name (`cairn meta --tier NAME=s3://…`, the
/// `tier=remote:NAME` cue): the same characters as a group name.
pub fn check_tier_name(name: &str) -> Result<&str> {
    check_group_name(name).map_err(|_| {
        Error::invalid(format!(
            "tier name {name:?}: use 1 to {MAX_GROUP_LEN} letters, digits, '-', '_' or '.'"
        ))
    })
}

/// A node group name (`cairn storage --group`, the `hot=GROUP` cue): 1 to
/// 64 letters, digits, `-`, `_` or `.`, so it fits in a path's cue list
/// and a command line unquoted.
pub fn check_group_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= MAX_GROUP_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(name)
    } else {
        Err(Error::invalid(format!(
            "group name {name:?}: use 1 to {MAX_GROUP_LEN} letters, digits, '-', '_' or '.'"
        )))
    }
}
