//! The Cairn client library: every front end (CLI, S3 gateway, FUSE mount,
//! Python) reads and writes files through [`Client`].
//!
//! Owns chunking, the write path (ask meta for a placement, stream the chunk
//! down the replication chain, re-place it elsewhere if a node fails, commit
//! the version), and the read path (open, fetch chunks from the first healthy
//! replica, verify every block checksum, fail over, read ahead). Does not own
//! policy: redundancy and placement come from meta.
//!
//! Guarantees: a `put` returns only after every chunk is durable on as many
//! replicas as its cues demand (all of them, or `sync=N`) and the new version
//! is committed; until then nothing of it is visible. A read never returns
//! bytes whose checksum does not match.
//!
//! Cues a client applies itself: the consistency cues decide whether an open
//! may use cached metadata (`lax`, `anyversion`, `bestversion`, write-once
//! files) and how long it waits on unreachable nodes (`maxtime`); `wholefile`
//! fetches a whole file on first read; `hotspot` spreads reads over all
//! replicas. Chunk data is cached in memory within a byte budget, and
//! optionally on disk; meta's leases let a strict open reuse cached metadata
//! for their length.

mod cache;
mod client;
mod locks;
mod read;
mod write;

pub use client::{local_host_name, Client, ClientConfig, PutOptions};
pub use locks::LockSession;
pub use read::{FileReader, ReadStream};
