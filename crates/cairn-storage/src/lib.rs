//! The storage node: owns chunk bytes on one data directory.
//!
//! [`ChunkStore`] keeps immutable, checksummed chunks in log-structured
//! segment files with group-committed fsyncs; [`server`] serves them over the
//! wire and forwards writes down the replication chain. Meta never sends chunk
//! bytes here; clients do, with capabilities meta signed. Guarantee: a write
//! is acknowledged only after this node's copy is fsynced and every later hop
//! of the chain has acknowledged its own.

pub mod chunk_store;
pub mod server;

pub use chunk_store::{
    ChunkInfo, ChunkStore, ChunkWriter, CompactStats, StoreOptions, StoreStats, MAX_CHUNK_LEN,
};
pub use server::{start, StorageConfig, StorageHandle};
