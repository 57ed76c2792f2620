//! The meta service: the namespace (paths → inodes → versions → extents),
//! the node tracker, placement ([`placement`]: the one placer, also driven
//! by the simulator), capabilities, garbage collection, and the
//! repair planner ([`repair`]: re-replication, drain, rebalance, orphan
//! sweep) that one meta at a time runs ([`election`]).
//!
//! Owns every piece of metadata and no file bytes. The namespace is written
//! once against [`MetaStore`] (ordered keys, range scans, atomic
//! transactions with revision conditions); [`RedbStore`] is the embedded
//! implementation, group-committing concurrent transactions into one fsync;
//! [`store_etcd`] shares one namespace between several meta servers.
//! Called over the wire by clients and storage nodes ([`server`]).
//!
//! Read first: [`MetaStore`], [`Namespace`], [`server::Meta::handle`].
//! Under failure: every namespace change is one durable transaction, so a
//! crash at any moment leaves either the old or the new state; node liveness
//! is rebuilt from heartbeats after a restart.

pub(crate) mod alloc;
pub mod audit;
pub mod cache_copies;
pub mod convert;
pub mod dump;
pub mod election;
pub mod fanout;
pub mod identities;
pub mod locks;
pub mod namespace;
pub mod nodes;
pub mod placement;
pub mod prefetch;
pub mod repair;
pub mod server;
pub mod store;
pub mod store_etcd;
pub mod store_redb;
pub mod store_spec;
pub mod tiering;
pub mod worker;

pub use namespace::Namespace;
pub use store::{Condition, KeyValue, MetaStore, Op, Txn};
pub use store_etcd::{EtcdConfig, EtcdStore};
pub use store_redb::RedbStore;
pub use store_spec::StoreSpec;
