//! The Cairn client library: every front end (CLI, S3 gateway, FUSE mount,
//! Python) reads and writes files through [`Client`].
//!
//! Owns chunking, the write path (ask meta for a placement, stream the chunk
//! down the replication chain, re-place it elsewhere if a node fails, commit
//! the version), and the read path (open, fetch chunks from the first healthy
//! replica, verify every block checksum, fail over, read ahead). Does not own
//! policy: redundancy and placement come from meta.
//!
//! Guarantees: a `put` returns only after every chunk is durable on all its
//! replicas and the new version is committed; until then nothing of it is
//! visible. A read never returns bytes whose checksum does not match.

mod client;
mod read;
mod write;

pub use client::{Client, ClientConfig, PutOptions};
pub use read::FileReader;
