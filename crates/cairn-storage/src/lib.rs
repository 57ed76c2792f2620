//! The storage node: owns chunk bytes on one data directory.
//!
//! [`ChunkStore`] keeps immutable, checksummed chunks in log-structured
//! segment files with group-committed fsyncs; [`server`] serves them over the
//! wire, forwards writes down the replication chain, copies chunks from peers
//! when meta's repair planner asks, scrubs for bit rot at a bounded rate, and
//! compacts segments to return deleted chunks' space. Meta never sends chunk
//! bytes here; clients and peers do, with capabilities meta signed. Guarantee: a write
//! is acknowledged only after this node's copy is fsynced and every later hop
//! of the chain has acknowledged its own.

pub mod cache;
pub mod chunk_store;
pub mod server;

pub use chunk_store::{
    ChunkInfo, ChunkStore, ChunkWriter, CompactStats, StoreOptions, StoreStats, MAX_CHUNK_LEN,
};
pub use server::{hostname, start, StorageConfig, StorageHandle};
