//! The wire between Cairn processes: length-prefixed frames over TLS 1.3
//! ([`tls`]; TCP with `--tls off`), a challenge-response handshake keyed
//! by the cluster secret (or a client identity's key), signed chunk
//! capabilities bound to their holder, the rights of client identities
//! ([`Rights`], [`MetaRequest::needs`]), and the request/response messages
//! of meta and storage nodes.
//!
//! Owns no state. Called by meta, storage and client. Read first: [`Conn`],
//! [`MetaRequest`], [`StorageRequest`], [`Capability`], [`Credentials`].
//!
//! Why a hand-written transport rather than gRPC/tonic: chunk bytes must stream
//! through a replication chain as raw frames without re-encoding or buffering,
//! and tonic + prost + hyper would dominate build time on a 2-core machine. The
//! framing is 4 bytes of length and nothing else; messages are postcard-encoded
//! serde enums, so malformed input is a decode error, never a crash.

mod access;
mod auth;
mod frame;
mod messages;
mod pool;
mod throttle;
pub mod tls;

pub use access::{IdentityInfo, Need, PathRight, Rights};
pub use auth::{
    is_identity_name, Capability, ClusterSecret, Credentials, IdentityId, Peer, Role, CAP_TTL_MS,
};
pub use frame::{connect, handshake, Conn, Listener, DATA_FRAME, MAX_FRAME};
pub use messages::*;
pub use pool::{MetaClient, Pool, Pooled};
pub use throttle::Throttle;
