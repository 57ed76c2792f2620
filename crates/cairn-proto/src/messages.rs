//! Requests and responses. Every response is `Result<T, cairn_types::Error>`
//! so the error kind crosses the network intact.

use crate::{Capability, IdentityInfo, Rights};
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
    /// Groups the node was started in (`cairn storage --group`); meta adds
    /// them to the node's groups when it registers.
    pub groups: Vec<String>,
    /// Bytes of cache copies (prefetched or read through) held, and the
    /// most the node keeps (`--cache-capacity`).
    pub cache_bytes: u64,
    pub cache_capacity: u64,
    /// Chunk bytes sent to readers and peers since start.
    pub served_bytes: u64,
    /// Chunk bytes taken in (writes, copies, repairs) since start.
    pub written_bytes: u64,
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
    /// POSIX `unlink` (`dir` false: a file or symlink, else `IsADirectory`)
    /// or `rmdir` (`dir` true: an empty directory, else `NotADirectory`
    /// or `DirectoryNotEmpty`), checked and applied in one transaction.
    Unlink {
        path: CairnPath,
        dir: bool,
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
    /// A small file's bytes as the next version of `path`, kept in its
    /// record instead of chunks: one transaction, no storage node. Fields
    /// as in `CommitFile`. Answers `Inode`, or `NotInline` when `data` is
    /// longer than the path's effective `inline=` limit (the writer then
    /// stores chunks and sends `CommitFile`).
    CommitInline {
        path: CairnPath,
        data: Vec<u8>,
        expected: Option<Version>,
        mode: Option<u32>,
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
    /// Put a node in a group (`add`) or take it out.
    SetGroup {
        node: NodeId,
        group: String,
        add: bool,
    },
    /// Every group with its nodes.
    Groups,
    /// Give every live node of `group` a cache copy of every chunk of the
    /// files at `paths` (directories recursively); with `evict`, drop
    /// those copies instead. Answers the jobs started.
    Prefetch {
        paths: Vec<CairnPath>,
        group: String,
        evict: bool,
    },
    /// Prefetch jobs and their progress (these ids; all when empty).
    PrefetchStatus {
        jobs: Vec<u64>,
    },
    /// Node role: cache copies the node made itself (a read-through) or
    /// dropped (evicted, found corrupt, promoted to a durable copy).
    CacheReport {
        node: NodeId,
        added: Vec<(ChunkId, u64)>,
        dropped: Vec<ChunkId>,
    },
    /// Open a lock session: the locks taken under it last while the client
    /// keeps the session alive (`LockKeepalive` well within `ttl_ms`).
    /// Answers [`MetaResponse::LockSession`].
    LockSession {
        ttl_ms: u32,
    },
    /// Keep a lock session alive; answers `Lock(Granted)`, or
    /// `Lock(SessionExpired)` once it has lapsed (its locks are gone).
    LockKeepalive {
        session: u64,
    },
    /// End a lock session, releasing every lock taken under it.
    LockEnd {
        session: u64,
    },
    /// Take, change or release (`Unlock`) the lock of `owner` on bytes
    /// `start..=end` of the file at `path` (`end` = `u64::MAX` or
    /// `i64::MAX`: to the end of the file, however long). With `wait`, a
    /// conflicting request queues (first come, first served) and meta holds
    /// the answer a few seconds; `Lock(Waiting)` means ask again to keep the
    /// place. Answers [`MetaResponse::Lock`].
    Lock {
        lock: LockRequest,
        wait: bool,
    },
    /// Give up a waiting `Lock` request of `lock.owner` (its caller was
    /// interrupted): it leaves the queue and a request meta still holds
    /// for it is not granted.
    LockCancel {
        lock: LockRequest,
    },
    /// A namespace change sent with a request id (random per request,
    /// kept across its retries): meta applies it at most once, and answers
    /// a retry of one already applied (through any meta on a shared store)
    /// as a success instead of applying it again.
    Once {
        id: u128,
        req: Box<MetaRequest>,
    },
    /// Whether `lock` could be taken now: `Lock(Granted)` or
    /// `Lock(Conflict(holder))` (fcntl's `F_GETLK`). Changes nothing.
    TestLock {
        lock: LockRequest,
    },
    /// Bytes per tier: on storage nodes, and in each remote store.
    TierStatus,
    /// Bring the offloaded chunks of the files at `path` (a directory:
    /// every file below it) back onto storage nodes.
    TierRecall {
        path: CairnPath,
    },
    /// Compare remote store `tier` with the namespace: objects no chunk
    /// references, and offloaded chunks whose object is missing or of the
    /// wrong size.
    TierVerify {
        tier: String,
    },
    /// A writer's shard (`chunk` is the shard's id) did not land on
    /// `node`: its write was acknowledged without it (`sync=` below K+M
    /// under `ec`) and then failed. Repair rebuilds it.
    ReportMissing {
        chunk: ChunkId,
        node: NodeId,
        detail: String,
    },
    /// Swap the entries `a` and `b`, both of which must exist, in one
    /// transaction (`RENAME_EXCHANGE`).
    RenameExchange {
        a: CairnPath,
        b: CairnPath,
    },
    /// Every readable version of the file at `path`: the current one
    /// first, then the older ones its `versions=` cue kept, newest first
    /// (records without their inline bytes). Answers `Versions`.
    Versions {
        path: CairnPath,
    },
    /// `Open` of version `version` of `path`: the current one or an older
    /// one the `versions=` cue kept (else `NotFound`). Answers `Open`,
    /// with no lease: a kept version never changes.
    OpenVersion {
        path: CairnPath,
        version: Version,
        host: Option<String>,
    },
    /// Admin: make the client identity `name` with `rights` (its prefixes
    /// are made as directories). Answers `Identity` with the key, which
    /// meta hands out this once.
    IdentityCreate {
        name: String,
        rights: Rights,
    },
    /// Admin: every client identity. Answers `Identities`.
    IdentityList,
    /// Admin: remove the client identity `name`; its clients are refused
    /// from their next request on (within seconds on every meta).
    IdentityRevoke {
        name: String,
    },
}

impl MetaRequest {
    /// Changes to the namespace, which a retry must not apply twice.
    pub fn is_namespace_change(&self) -> bool {
        matches!(
            self,
            MetaRequest::CommitFile { .. }
                | MetaRequest::CommitInline { .. }
                | MetaRequest::Compose { .. }
                | MetaRequest::SetAttr { .. }
                | MetaRequest::SetCues { .. }
                | MetaRequest::Link { .. }
                | MetaRequest::MakeNode { .. }
                | MetaRequest::Mkdir { .. }
                | MetaRequest::Remove { .. }
                | MetaRequest::Unlink { .. }
                | MetaRequest::Rename { .. }
                | MetaRequest::RenameNoReplace { .. }
                | MetaRequest::RenameExchange { .. }
        )
    }
}

/// The kind of a byte-range or whole-file lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Readers: any number of owners at once (`F_RDLCK`, `LOCK_SH`).
    Shared,
    /// One owner (`F_WRLCK`, `LOCK_EX`).
    Exclusive,
    /// Release (`F_UNLCK`, `LOCK_UN`).
    Unlock,
}

/// Who holds a lock: a lock session and, inside it, the owner the client
/// names (the kernel's lock owner on a mount: a process's file table for
/// POSIX locks, an open file for `flock`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LockOwner {
    pub session: u64,
    pub owner: u64,
}

/// One lock request of a session's owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    pub path: CairnPath,
    pub owner: LockOwner,
    pub kind: LockKind,
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    /// The process asking, reported to `TestLock` callers.
    pub pid: u32,
}

/// A lock held: whose, which bytes (inclusive), by which process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHeld {
    pub owner: LockOwner,
    pub kind: LockKind,
    pub start: u64,
    pub end: u64,
    pub pid: u32,
}

/// The outcome of a lock request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockAnswer {
    Granted,
    /// Not granted: another owner holds a conflicting lock (one of them).
    Conflict(LockHeld),
    /// Queued behind a conflicting holder; ask again to keep the place.
    Waiting,
    /// Waiting would deadlock: the holder waits for a lock this owner
    /// holds (`EDEADLK`).
    Deadlock,
    /// The session lapsed (or never was): its locks are gone; open a new one.
    SessionExpired,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub chunk_size: u64,
    pub default_rep: u8,
    /// Files of at most this many bytes are kept in their metadata record
    /// where no `inline=` cue says otherwise (0: never).
    pub inline_max: u32,
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
    /// Per extent, every node to read it from, best first: durable copies
    /// and cache copies (`hot=`, prefetch, read-through), same host first,
    /// then same zone. Empty: read `extents[i].nodes` in order.
    pub read_order: Vec<Vec<NodeId>>,
    /// A live storage node on the reader's host, through which `hotspot`
    /// reads go (it keeps a cache copy and serves every later reader).
    pub via: Option<NodeAddr>,
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
    /// Erasure-coded (`ec=K+M`): `nodes` are the K+M shards' nodes in
    /// shard order, shard `i` written as `chunk.shard(i)` to `nodes[i]`
    /// alone (no chain); `cap` covers every shard.
    pub ec: Option<cairn_types::EcScheme>,
    /// Erasure-coded: how many shards must be durable before the write is
    /// acknowledged (the `sync` cue, K+1 to K+M; K+M without one). The
    /// others are written too, without waiting for them. Replicated: the
    /// length of `nodes`.
    pub sync: u8,
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
    /// Groups the node is in (`cairn cluster group add`, `--group`).
    pub groups: Vec<String>,
}

/// What one background worker of meta is doing, for `cluster status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// `gc`, `repair`, `prefetch`.
    pub name: String,
    /// `idle`, `busy`, `standby` (not the leader), `stopped`.
    pub state: String,
    /// What it did or is doing, for people.
    pub progress: String,
    /// Passes run since start.
    pub passes: u64,
    /// The last error, if the last pass failed.
    pub last_error: Option<String>,
}

/// One prefetch job: a set of file versions being spread to a group.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PrefetchJobStatus {
    pub id: u64,
    pub group: String,
    /// Files the job copies, each at the version it started with.
    pub files: Vec<String>,
    /// `running`, `done` (every reachable node holds every chunk; nodes
    /// that join later are still filled in), `failed`.
    pub state: String,
    pub chunks: u64,
    pub bytes: u64,
    /// Destination nodes (live group members) and those complete.
    pub nodes: u64,
    pub nodes_done: u64,
    /// Chunk copies made, and the copies the job needs in all.
    pub copies_done: u64,
    pub copies_total: u64,
    pub bytes_done: u64,
    /// Nodes skipped, with why (no room, unreachable, ...).
    pub skipped: Vec<(NodeId, String)>,
    /// Remarks: a file replaced since the job started, a source lost.
    pub notes: Vec<String>,
    pub started_ms: u64,
    /// When every destination was complete (0 while running).
    pub done_ms: u64,
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
    /// Background workers of the answering meta.
    pub workers: Vec<WorkerStatus>,
    /// Cache copies meta knows of (prefetched or read through).
    pub cache_copies: u64,
    /// File bytes per tier: `local`, then each remote store.
    pub tiers: Vec<TierUsage>,
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
    Groups(Vec<GroupInfo>),
    Prefetch(Vec<PrefetchJobStatus>),
    LockSession {
        session: u64,
        ttl_ms: u32,
    },
    Lock(LockAnswer),
    /// A `CommitInline` refused: the path keeps files over `limit` bytes
    /// in chunks. Nothing changed.
    NotInline {
        limit: u32,
    },
    Tiers(Vec<TierUsage>),
    /// Files and chunks a `TierRecall` brought back.
    Recalled {
        files: u64,
        chunks: u64,
        bytes: u64,
    },
    TierVerify(TierReport),
    Versions(Vec<Inode>),
    /// A new identity, the key its clients prove themselves with, and the
    /// cluster's CA certificate (DER) they check servers against.
    Identity {
        info: IdentityInfo,
        key: [u8; 32],
        ca: Vec<u8>,
    },
    Identities(Vec<IdentityInfo>),
}

/// What one tier holds: `local` (storage nodes) or a remote store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierUsage {
    /// `local`, or the remote store's name.
    pub name: String,
    /// Where it is (`s3://bucket/prefix at endpoint`); empty for local.
    pub location: String,
    pub chunks: u64,
    /// File bytes (one copy) in this tier.
    pub bytes: u64,
    /// Of those, bytes with a cache copy on a storage node (remote tiers).
    pub cached_bytes: u64,
    /// Why the store cannot be used now, if it cannot.
    pub problem: Option<String>,
}

/// The answer of `TierVerify`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierReport {
    pub objects: u64,
    /// Objects no file's chunk (nor garbage awaiting collection) names.
    pub unreferenced: Vec<(ChunkId, u64)>,
    /// Offloaded chunks whose object is not in the store: the file path.
    pub missing: Vec<(ChunkId, String)>,
    /// Objects whose size is not their chunk's: (chunk, object, chunk).
    pub wrong_size: Vec<(ChunkId, u64, u64)>,
    /// Names under the chunks prefix that are no chunk id.
    pub foreign: Vec<String>,
}

/// A node group and its members.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub nodes: Vec<NodeId>,
    /// Members meta sees live now.
    pub live: Vec<NodeId>,
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
    /// Node role only (meta's prefetch scheduler): fetch the chunk from
    /// the first of `sources` that serves it, verify it against `crc`, and
    /// keep it as a cache copy (evictable, never counted as durable).
    CacheFetch {
        chunk: ChunkId,
        len: u64,
        crc: u32,
        sources: Vec<NodeAddr>,
        cap: Capability,
    },
    /// A read through this node (`hotspot`, an offloaded chunk): answered
    /// as `GetChunk`; if the node has no copy it first fetches the whole
    /// chunk (`chunk_len` bytes, checksum summary `crc`) from `sources`,
    /// else from the remote store `remote`, keeps it as a cache copy and
    /// tells meta, so later readers find it here.
    GetChunkVia {
        chunk: ChunkId,
        offset: u64,
        len: u64,
        cap: Capability,
        chunk_len: u64,
        crc: u32,
        sources: Vec<NodeAddr>,
        remote: Option<String>,
    },
    /// Node role only (meta's tier planner): send this node's copy of
    /// `chunk`, checked block by block and against `crc`, to the remote
    /// store `tier` as one object.
    Offload {
        chunk: ChunkId,
        len: u64,
        crc: u32,
        tier: String,
    },
    /// Node role only (`cairn tier recall`): fetch `chunk` from the remote
    /// store `tier`, check it against `crc`, and keep it as a durable copy.
    Recall {
        chunk: ChunkId,
        len: u64,
        crc: u32,
        tier: String,
    },
    /// Node role only (meta's tier planner): these durable copies are now
    /// cache copies (their chunks were offloaded), kept under the node's
    /// cache budget.
    MakeCache {
        chunks: Vec<(ChunkId, u64)>,
    },
    /// Node role only: drop these cache copies (`prefetch --evict`);
    /// durable copies are kept.
    DropCache {
        chunks: Vec<ChunkId>,
    },
    /// Node role only (meta's repair planner): rebuild shard `index` of the
    /// erasure-coded chunk `chunk` from K of the other shards, fetched
    /// from `sources` (shard number, node), check it against
    /// `crcs[index]`, and store it here as `chunk.shard(index)`. `crcs` are
    /// every shard's checksum summaries; `cap` covers the stripe.
    RebuildShard {
        chunk: ChunkId,
        index: u8,
        scheme: cairn_types::EcScheme,
        shard_len: u64,
        crcs: Vec<u32>,
        sources: Vec<(u8, NodeAddr)>,
        cap: Capability,
    },
    /// Node role only (meta's conversion worker, `rep=` <-> `ec=`): read
    /// the whole chunk `from` (a local copy, else a replica or K shards
    /// from `sources`, aligned with `from.nodes`, None where a node cannot
    /// serve), check it against `from.crc`, and write the same bytes as
    /// `to` lays them out: down `to.nodes` as a replication chain, or as
    /// K+M shards, shard `i` to `to.nodes[i]`. `cap` reads `from`.
    /// Answers the new shards' layout (None for replicas); nothing is
    /// committed, the caller does that.
    Transcode {
        from: cairn_types::Extent,
        sources: Vec<Option<NodeAddr>>,
        cap: Capability,
        to: ChunkAlloc,
    },
    /// Node role only (meta's tier planner): read erasure-coded chunk
    /// `from` whole from K of its shards (`sources` as for `Transcode`),
    /// check it against `from.crc`, and send the decoded bytes to the
    /// remote store `tier` as one object, named by the chunk's id.
    OffloadStripe {
        from: cairn_types::Extent,
        sources: Vec<Option<NodeAddr>>,
        cap: Capability,
        tier: String,
    },
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

impl MetaRequest {
    /// The operation's name in metrics and logs (`commit_file`); an `As` or `Once` envelope is named for itself.
    pub fn op_name(&self) -> &'static str {
        match self {
            MetaRequest::Register { .. } => "register",
            MetaRequest::Heartbeat { .. } => "heartbeat",
            MetaRequest::Config => "config",
            MetaRequest::Stat { .. } => "stat",
            MetaRequest::Open { .. } => "open",
            MetaRequest::List { .. } => "list",
            MetaRequest::Mkdir { .. } => "mkdir",
            MetaRequest::Remove { .. } => "remove",
            MetaRequest::Unlink { .. } => "unlink",
            MetaRequest::Rename { .. } => "rename",
            MetaRequest::AllocChunk { .. } => "alloc_chunk",
            MetaRequest::CommitFile { .. } => "commit_file",
            MetaRequest::CommitInline { .. } => "commit_inline",
            MetaRequest::GetCues { .. } => "get_cues",
            MetaRequest::SetCues { .. } => "set_cues",
            MetaRequest::ClusterStatus => "cluster_status",
            MetaRequest::Discard { .. } => "discard",
            MetaRequest::Drain { .. } => "drain",
            MetaRequest::ReportCorrupt { .. } => "report_corrupt",
            MetaRequest::Compose { .. } => "compose",
            MetaRequest::MakeNode { .. } => "make_node",
            MetaRequest::SetAttr { .. } => "set_attr",
            MetaRequest::RenameNoReplace { .. } => "rename_no_replace",
            MetaRequest::As { .. } => "as",
            MetaRequest::Link { .. } => "link",
            MetaRequest::SetGroup { .. } => "set_group",
            MetaRequest::Groups => "groups",
            MetaRequest::Prefetch { .. } => "prefetch",
            MetaRequest::PrefetchStatus { .. } => "prefetch_status",
            MetaRequest::CacheReport { .. } => "cache_report",
            MetaRequest::LockSession { .. } => "lock_session",
            MetaRequest::LockKeepalive { .. } => "lock_keepalive",
            MetaRequest::LockEnd { .. } => "lock_end",
            MetaRequest::Lock { .. } => "lock",
            MetaRequest::LockCancel { .. } => "lock_cancel",
            MetaRequest::Once { .. } => "once",
            MetaRequest::TestLock { .. } => "test_lock",
            MetaRequest::TierStatus => "tier_status",
            MetaRequest::TierRecall { .. } => "tier_recall",
            MetaRequest::TierVerify { .. } => "tier_verify",
            MetaRequest::ReportMissing { .. } => "report_missing",
            MetaRequest::RenameExchange { .. } => "rename_exchange",
            MetaRequest::Versions { .. } => "versions",
            MetaRequest::OpenVersion { .. } => "open_version",
            MetaRequest::IdentityCreate { .. } => "identity_create",
            MetaRequest::IdentityList => "identity_list",
            MetaRequest::IdentityRevoke { .. } => "identity_revoke",
        }
    }
}

impl StorageRequest {
    /// The operation's name in metrics and logs (`put_chunk`).
    pub fn op_name(&self) -> &'static str {
        match self {
            StorageRequest::PutChunk { .. } => "put_chunk",
            StorageRequest::GetChunk { .. } => "get_chunk",
            StorageRequest::DeleteChunks { .. } => "delete_chunks",
            StorageRequest::Replicate { .. } => "replicate",
            StorageRequest::ListChunks => "list_chunks",
            StorageRequest::Ping => "ping",
            StorageRequest::CacheFetch { .. } => "cache_fetch",
            StorageRequest::GetChunkVia { .. } => "get_chunk_via",
            StorageRequest::Offload { .. } => "offload",
            StorageRequest::Recall { .. } => "recall",
            StorageRequest::MakeCache { .. } => "make_cache",
            StorageRequest::DropCache { .. } => "drop_cache",
            StorageRequest::RebuildShard { .. } => "rebuild_shard",
            StorageRequest::Transcode { .. } => "transcode",
            StorageRequest::OffloadStripe { .. } => "offload_stripe",
        }
    }
}
