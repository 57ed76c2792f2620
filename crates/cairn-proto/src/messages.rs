//! Requests and responses. Every response is `Result<T, cairn_types::Error>`
//! so the error kind crosses the network intact.

use crate::Capability;
use cairn_types::{
    BlockCrcs, CairnPath, ChunkId, Cues, DirEntry, Error, Extent, Inode, NodeId, Version,
};
use serde::{Deserialize, Serialize};

/// Capacity and health a storage node reports with each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStats {
    pub chunks: u64,
    /// Bytes of live chunk data.
    pub used: u64,
    /// Bytes the node can still take (file-system free space less its reserve).
    pub free: u64,
    pub total: u64,
    /// Chunks found corrupt since start (by reads or scrubbing).
    pub corrupt_chunks: Vec<ChunkId>,
    /// False when the disk is full (free space under the node's reserve)
    /// or failing: meta then places no new chunks here.
    pub accepting_writes: bool,
    /// Why the node is not accepting writes, for `cluster status`.
    pub problem: Option<String>,
    /// Bytes verified by the scrubber since start.
    pub scrubbed_bytes: u64,
    /// The machine the node runs on (`--host`, default its hostname), for
    /// `place=local`. Rides with the stats rather than on `Register` alone
    /// so a meta that restarted learns it from the next heartbeat.
    pub host: String,
}

/// Where a node is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub id: NodeId,
    pub addr: String,
}

/// Requests to meta. Storage-node requests need the node role.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaRequest {
    Register {
        node: NodeId,
        addr: String,
        zone: String,
        stats: NodeStats,
    },
    /// Sent every second or so to every meta server; meta answers `Ok`.
    Heartbeat {
        node: NodeId,
        stats: NodeStats,
    },
    /// Cluster-wide defaults a client needs before writing.
    Config,
    Stat {
        path: CairnPath,
    },
    /// Everything needed to read a file: its inode, where its chunks are, and
    /// read capabilities.
    Open {
        path: CairnPath,
        /// The reader's host: each chunk's replicas come nearest first
        /// (same host, then same zone), equally near ones rotated from
        /// chunk to chunk so a large read draws on all of them.
        host: Option<String>,
        /// The version the reader has cached (inode id and version): if the
        /// path still names it, meta answers `Unchanged` with the current
        /// effective cues instead of the extents and fresh capabilities.
        known: Option<(cairn_types::InodeId, Version)>,
    },
    List {
        path: CairnPath,
        start_after: Option<String>,
        limit: u32,
    },
    Mkdir {
        path: CairnPath,
        parents: bool,
    },
    Remove {
        path: CairnPath,
        recursive: bool,
    },
    Rename {
        src: CairnPath,
        dst: CairnPath,
    },
    /// A new chunk id for a chunk of the file at `path`, the nodes to write
    /// it to (a replication chain: as many as the effective `sync` cue asks
    /// to be durable before the write is acknowledged, all `rep` copies
    /// without one), placed per the effective placement cues, and a write
    /// capability. `cues`: the writer's cues (from its path or options),
    /// over the file's own and inherited ones. `host`: the writer's host,
    /// for `place=local`. `exclude` lists nodes that just failed this client.
    AllocChunk {
        path: CairnPath,
        cues: Cues,
        host: Option<String>,
        exclude: Vec<NodeId>,
        /// Bytes of the chunk (the client has them in hand): nodes need
        /// room for them, and they count towards the nodes' load until
        /// the next heartbeat.
        len: u64,
    },
    /// `xattrs`: None keeps the replaced version's, Some replaces them.
    /// `cues`: the writer's cues; their persistent part is fixed on the file.
    /// `mode`: None keeps the replaced version's (0o644 for a new file).
    CommitFile {
        path: CairnPath,
        extents: Vec<Extent>,
        expected: Option<Version>,
        mode: Option<u32>,
        chunk_size: u64,
        xattrs: Option<cairn_types::Xattrs>,
        cues: Cues,
    },
    /// The cues of `path`: its own, inherited and effective.
    GetCues {
        path: CairnPath,
    },
    /// Merge `cues` over the path's own cues, or replace them (`replace`;
    /// with empty `cues`, clear them).
    SetCues {
        path: CairnPath,
        cues: Cues,
        replace: bool,
    },
    ClusterStatus,
    /// Chunks a client wrote but will not commit (its write failed or was
    /// abandoned): delete them from these nodes.
    Discard {
        extents: Vec<Extent>,
    },
    /// Move every chunk off a node (or stop doing so with `undo`).
    Drain {
        node: NodeId,
        undo: bool,
    },
    /// A client found a corrupt replica while reading.
    ReportCorrupt {
        chunk: ChunkId,
        node: NodeId,
        detail: String,
    },
    /// Commit `dst` as the concatenation of the files `sources` (in order)
    /// and remove the sources, in one transaction, without copying bytes:
    /// the chunks move from the sources to `dst` (an S3 multipart complete).
    /// `expected` and `xattrs` as in `CommitFile`.
    Compose {
        dst: CairnPath,
        sources: Vec<CairnPath>,
        expected: Option<Version>,
        mode: u32,
        xattrs: Option<cairn_types::Xattrs>,
    },
    // New variants go last: postcard numbers variants by position.
    /// Create an empty file, a directory or a symlink with this mode and
    /// owner in one transaction (the mount's create, mkdir, symlink); an
    /// existing entry is `AlreadyExists`. Answers the new inode.
    MakeNode {
        path: CairnPath,
        node: cairn_types::NewNode,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// Change mode, owner, mtime and extended attributes of `path` in one
    /// transaction (chmod, chown, utimens, setxattr, removexattr); with `id`,
    /// only if `path` still names that inode. Answers the updated inode.
    SetAttr {
        path: CairnPath,
        id: Option<cairn_types::InodeId>,
        changes: cairn_types::AttrChanges,
    },
    /// `Rename` that fails with `AlreadyExists` if `dst` exists, checked in
    /// the rename's transaction (`RENAME_NOREPLACE`).
    RenameNoReplace {
        src: CairnPath,
        dst: CairnPath,
    },
    /// `req` on behalf of the client `client` (a random id per client): the
    /// metadata leases meta grants are per client, and a client's own
    /// changes never wait for its own leases.
    As {
        client: u64,
        req: Box<MetaRequest>,
    },
    /// Give the file or symlink `src` the further name `dst` (a hard
    /// link). Answers the file's inode, `nlink` counting the new name.
    Link {
        src: CairnPath,
        dst: CairnPath,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub chunk_size: u64,
    pub default_rep: u8,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenFile {
    pub inode: Inode,
    /// The file's effective cues (inherited, overridden by its own).
    pub cues: Cues,
    /// How long the client may treat this as the current version without
    /// asking again (a metadata lease; 0: none). Meta holds back the
    /// acknowledgement of any change to the file by another client until
    /// the lease has run out.
    pub lease_ms: u32,
    /// Addresses of every node named by the extents.
    pub nodes: Vec<NodeAddr>,
    /// One read capability per extent, in extent order.
    pub caps: Vec<Capability>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkAlloc {
    pub chunk: ChunkId,
    /// Replication chain, head first: the copies to make before the write
    /// is acknowledged (`sync` of them; all `rep` without a `sync` cue).
    pub nodes: Vec<NodeAddr>,
    pub cap: Capability,
    /// The file's effective redundancy; the client commits it as the
    /// file's `rep` cue, and meta's planner makes the copies beyond `nodes`.
    pub rep: u8,
}

/// What meta makes of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Heartbeating, taking new chunks.
    Live,
    /// Missed a few heartbeats: no new chunks, copies still count.
    Suspect,
    /// Silent longer than the grace period: its copies are re-created elsewhere.
    Dead,
    /// Live, but its disk is full or failing: no new chunks.
    Full,
    /// Being emptied on request: no new chunks, copies moving elsewhere.
    Draining,
    /// Drained: holds no chunk any file needs; safe to stop.
    Drained,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Live => "live",
            NodeState::Suspect => "suspect",
            NodeState::Dead => "dead",
            NodeState::Full => "full",
            NodeState::Draining => "draining",
            NodeState::Drained => "drained",
        }
    }

    /// Whether the node answers (its copies can be read).
    pub fn is_up(self) -> bool {
        !matches!(self, NodeState::Dead | NodeState::Suspect)
    }
}

/// Progress of the repair planner.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RepairStatus {
    /// Chunks the last full pass found short of redundancy or misplaced.
    pub chunks_pending: u64,
    /// Bytes those chunks still need copied.
    pub bytes_left: u64,
    /// Copy rate over the last pass.
    pub bytes_per_s: u64,
    pub copies_done: u64,
    pub copies_failed: u64,
    /// Unreferenced chunks deleted from nodes (orphans, surplus copies).
    pub orphans_deleted: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub addr: String,
    pub zone: String,
    pub host: String,
    pub state: NodeState,
    pub last_heartbeat_ms: u64,
    pub stats: NodeStats,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    pub chunks: u64,
    pub logical_bytes: u64,
    /// Chunks with fewer live, healthy copies than their redundancy asks.
    pub under_replicated_chunks: u64,
    /// Chunks with no live, healthy copy at all.
    pub unavailable_chunks: u64,
    pub corrupt_replicas: Vec<(ChunkId, NodeId)>,
    pub pending_garbage_chunks: u64,
    pub repair: RepairStatus,
    /// Whether the meta server that answered runs the background work
    /// (repair, garbage collection): always with one meta server; with
    /// several on etcd, the one that won the election.
    pub leader: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MetaResponse {
    Ok,
    Registered,
    Config(ClusterConfig),
    Inode(Inode),
    Open(OpenFile),
    Entries(Vec<DirEntry>),
    Alloc(ChunkAlloc),
    Status(ClusterStatus),
    Cues(PathCues),
    /// An `Open` whose `known` version is still current: the file's
    /// effective cues and a new lease (as in [`OpenFile::lease_ms`]).
    Unchanged {
        cues: Cues,
        lease_ms: u32,
    },
}

/// The cues of a path: set on it (`own`; `None` if the path does not exist
/// yet), inherited from its directories, and the two merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathCues {
    pub own: Option<Cues>,
    pub inherited: Cues,
    pub effective: Cues,
}

pub type MetaResult = Result<MetaResponse, Error>;

/// Requests to a storage node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum StorageRequest {
    /// Followed by `len` bytes in data frames. The node writes them, forwards
    /// them to `chain[0]` (which gets `chain[1..]`), and answers once its own
    /// copy is durable and the rest of the chain has answered.
    PutChunk {
        chunk: ChunkId,
        len: u64,
        crcs: BlockCrcs,
        cap: Capability,
        chain: Vec<NodeAddr>,
    },
    /// Answered by [`GetChunkHeader`] then the bytes in data frames.
    /// `offset` must be a multiple of [`cairn_types::BLOCK_SIZE`].
    GetChunk {
        chunk: ChunkId,
        offset: u64,
        len: u64,
        cap: Capability,
    },
    /// Node role only (meta's garbage collector, peers).
    DeleteChunks {
        chunks: Vec<ChunkId>,
    },
    /// Node role only (meta's repair planner): fetch the chunk from
    /// `source` with `cap`, verify it against `crc`, store it here.
    Replicate {
        chunk: ChunkId,
        len: u64,
        crc: u32,
        source: NodeAddr,
        cap: Capability,
    },
    /// Node role only: every chunk this node holds.
    ListChunks,
    Ping,
}

/// The answer to a write: success, or which hop of the chain failed and why,
/// so the client can exclude that node and re-place the chunk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PutOutcome {
    Stored,
    Failed {
        node: NodeId,
        addr: String,
        error: Error,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetChunkHeader {
    /// Length the node will send.
    pub len: u64,
    /// Checksums of the blocks covering the range, for the client to verify.
    pub crcs: Vec<u32>,
}

pub type GetChunkResult = Result<GetChunkHeader, Error>;
