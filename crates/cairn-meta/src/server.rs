//! The meta process: answers namespace and placement requests, tracks
//! storage nodes, signs capabilities, and collects garbage chunks.

use crate::namespace::Namespace;
use crate::nodes::NodeTracker;
use cairn_proto::{
    Capability, ChunkAlloc, ClusterConfig, ClusterSecret, ClusterStatus, Conn, Credentials,
    IdentityId, IdentityInfo, Listener, MetaRequest, MetaResponse, MetaResult, Need, OpenFile,
    PathCues, Pool, Role, StorageRequest,
};
use cairn_types::{ChunkId, Cues, Error, ErrorKind, Extent, InodeKind, NodeId, Result};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Who sent a request: a storage node, the admin client key (every
/// right), or a client identity with the rights meta keeps for it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    pub identity: Option<Arc<IdentityInfo>>,
}

impl Caller {
    /// The name the audit log and errors give the caller.
    pub fn name(&self) -> &str {
        match (&self.identity, self.role) {
            (Some(i), _) => &i.name,
            (None, Role::Node) => "node",
            (None, Role::Client) => "admin",
        }
    }

    /// The identity capabilities are bound to.
    fn holder(&self) -> Option<IdentityId> {
        self.identity.as_ref().map(|i| i.id)
    }

    /// Refuse `req` unless the caller may send it, before anything runs.
    fn authorize(&self, req: &MetaRequest) -> Result<()> {
        let needs = req.needs();
        match (&self.identity, self.role) {
            (_, Role::Node) => Ok(()),
            (None, Role::Client) => match needs.contains(&Need::Node) {
                true => Err(Error::denied(format!(
                    "only storage nodes may {}",
                    req.op_name()
                ))),
                false => Ok(()),
            },
            (Some(i), Role::Client) => needs
                .iter()
                .try_for_each(|n| i.rights.check(n, &i.name, req.op_name())),
        }
    }

    /// The client id of a request (leases, allocations, request marks):
    /// an identity's own, so that no identity can pass for a client of
    /// another by naming its id.
    fn scope(&self, client: Option<u64>) -> Option<u64> {
        let Some(i) = &self.identity else {
            return client;
        };
        let mut h = blake3::Hasher::new_derive_key("cairn 2026 client scope v1");
        h.update(&i.id.0);
        h.update(&client.unwrap_or(0).to_be_bytes());
        let b = h.finalize();
        Some(u64::from_be_bytes(
            b.as_bytes()[..8].try_into().expect("8 bytes"),
        ))
    }
}

#[derive(Clone, Debug)]
pub struct MetaConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    pub chunk_size: u64,
    /// Files of at most this many bytes keep them in their metadata record
    /// where no `inline=` cue says otherwise (0: never).
    pub inline_max: u32,
    /// Redundancy of files whose writer does not ask for one.
    pub default_rep: u8,
    /// A node silent this long is dead and the repair planner re-creates
    /// its copies elsewhere (a shorter silence only makes it suspect: no new
    /// chunks, copies still counted).
    pub dead_after: Duration,
    /// How long a replaced or deleted version's chunks stay readable.
    pub gc_delay: Duration,
    pub gc_interval: Duration,
    pub repair: crate::repair::RepairConfig,
    /// Where the namespace lives: redb in `data_dir` (default) or etcd.
    pub store: crate::store_spec::StoreSpec,
    /// Metadata lease a client gets with each open: for this long it may
    /// open the same version again without asking, and a change by another
    /// client is acknowledged only once the lease has run out (0: none;
    /// off on a shared store, where another meta server could take the
    /// change).
    pub lease: Duration,
    /// Where to append the audit log (JSON lines), if anywhere.
    pub audit_log: Option<PathBuf>,
    /// Remote stores and how the tier planner offloads to them.
    pub tier: crate::tiering::TierConfig,
    /// Whether setting `rep=`/`ec=` on a directory converts the files
    /// below it in the background (else only `cairn convert` does).
    pub auto_convert: bool,
}

impl MetaConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> MetaConfig {
        MetaConfig {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:0".into(),
            chunk_size: 32 << 20,
            inline_max: DEFAULT_INLINE_MAX,
            default_rep: 3,
            dead_after: Duration::from_secs(15),
            gc_delay: Duration::from_secs(60),
            gc_interval: Duration::from_secs(2),
            repair: crate::repair::RepairConfig::default(),
            store: Default::default(),
            lease: Duration::from_secs(1),
            audit_log: None,
            auto_convert: true,
            tier: Default::default(),
        }
    }
}

/// The cluster's default `inline=` limit: a 4 KiB file costs one metadata
/// transaction and no storage-node round trip, while meta's store (and
/// etcd's quota) holds at most a page per file.
pub const DEFAULT_INLINE_MAX: u32 = 4096;

/// File names inside meta's data directory.
pub const SECRET_FILE: &str = "cluster.secret";
pub const CLIENT_KEY_FILE: &str = "client.key";

/// Load the cluster secret, or make one on first start (and the client key
/// derived from it, for the CLI on this machine).
pub fn load_or_create_secret(dir: &Path) -> Result<ClusterSecret> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::from(e).context(format!("creating {}", dir.display())))?;
    let path = dir.join(SECRET_FILE);
    let creds = if path.exists() {
        Credentials::load(&path)?
    } else {
        let c = Credentials::Cluster(ClusterSecret::generate());
        c.save(&path)?;
        c
    };
    let secret = creds.cluster().cloned().ok_or_else(|| {
        Error::invalid(format!(
            "{} holds a client key, not a cluster secret",
            path.display()
        ))
    })?;
    let client = dir.join(CLIENT_KEY_FILE);
    // Made now, or rewritten when it predates TLS (no CA certificate).
    let stale = match Credentials::load(&client) {
        Ok(Credentials::Client { key, ca: None }) => key == secret.client_key(),
        _ => !client.exists(),
    };
    if stale {
        secret.client_credentials().save(&client)?;
    }
    Ok(secret)
}

/// Where the fingerprint of the cluster secret lives in a shared store.
const SECRET_FINGERPRINT_KEY: &[u8] = b"K/secret-fingerprint";

/// Every meta server on one shared store must hold the same cluster
/// secret (clients and nodes prove themselves with keys made from it). The
/// first to start leaves the secret's fingerprint in the store; one that
/// finds another refuses to start, and says what to copy.
async fn check_shared_secret(
    store: &dyn crate::store::MetaStore,
    secret: &ClusterSecret,
    data_dir: &Path,
) -> Result<()> {
    let mine = secret.fingerprint().to_vec();
    loop {
        match store.get(SECRET_FINGERPRINT_KEY).await? {
            Some((theirs, _)) if theirs == mine => return Ok(()),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "this shared metadata store belongs to a cluster with another secret than {} holds: \
                     copy {SECRET_FILE} and {CLIENT_KEY_FILE} from the data directory of a meta server \
                     already on this store into {} (before its first start), then start again",
                    data_dir.join(SECRET_FILE).display(),
                    data_dir.display()
                )))
            }
            None => {
                let txn = crate::store::Txn::new()
                    .when(SECRET_FINGERPRINT_KEY, 0)
                    .put(SECRET_FINGERPRINT_KEY, mine.clone());
                match store.commit(txn).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind == ErrorKind::Conflict => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

pub struct Meta {
    pub(crate) ns: Namespace,
    /// The store under `ns`, for allocation records (`crate::alloc`).
    pub(crate) store: std::sync::Arc<dyn crate::store::MetaStore>,
    pub(crate) nodes: NodeTracker,
    pub(crate) secret: ClusterSecret,
    pub(crate) chunk_size: u64,
    inline_max: u32,
    pub(crate) default_rep: AtomicU8,
    pub(crate) peers: Pool,
    pending_garbage: AtomicU64,
    /// Chunks handed out (or being copied by repair) recently, with when:
    /// the orphan sweep never touches them, and a commit may only name a
    /// chunk still in here (or already in the file it replaces).
    pub(crate) recent: std::sync::Mutex<std::collections::HashMap<ChunkId, u64>>,
    /// Chunks handed out by this meta and not committed yet, with when, to
    /// which client, and whether they were discarded already: the only
    /// chunks a `Discard` may name.
    uncommitted: std::sync::Mutex<std::collections::HashMap<ChunkId, (u64, u64, bool)>>,
    pub(crate) repair_cfg: crate::repair::RepairConfig,
    /// Several meta servers may share the store (etcd; from
    /// [`MetaStore::is_shared`], never from a caller's config): each
    /// allocation is then also recorded in the store (`crate::alloc`), so
    /// that the leader's orphan sweep and every meta's commit check know
    /// the chunks the others handed out, and no metadata lease is given.
    pub(crate) shared_store: bool,
    pub(crate) repair_status: std::sync::Mutex<cairn_proto::RepairStatus>,
    pub(crate) started_ms: u64,
    /// Whether this meta runs the background work (repair, GC, sweep).
    pub(crate) election: crate::election::Election,
    /// Wakes the repair planner early: a commit left copies to make
    /// (`sync` below `rep`).
    pub(crate) repair_kick: Arc<tokio::sync::Notify>,
    /// Wakes the conversion worker: a job was recorded.
    pub(crate) convert_kick: Arc<tokio::sync::Notify>,
    pub(crate) auto_convert: bool,
    /// Cache copies (prefetched, read through) beside the durable ones.
    pub(crate) cache: crate::cache_copies::CacheCopies,
    pub(crate) prefetch: crate::prefetch::PrefetchJobs,
    /// Advisory locks (`flock`, POSIX record locks, `cairn lock`).
    pub(crate) locks: crate::locks::Locks,
    audit: Option<crate::audit::AuditLog>,
    /// Client identities and their rights.
    pub(crate) identities: crate::identities::Identities,
    /// Background workers, for `cluster status`.
    pub(crate) workers: crate::worker::Workers,
    /// Metadata leases given out: by file, (client, expiry in ms).
    leases: std::sync::Mutex<std::collections::HashMap<cairn_types::InodeId, Vec<(u64, u64)>>>,
    lease_ms: u32,
    /// Changes made so far; an open that saw one happen meanwhile grants
    /// no lease (it may have read the version just replaced).
    changes: AtomicU64,
    /// The remote tier: stores, last opens, store problems.
    pub(crate) tier: crate::tiering::TierState,
}

/// How to answer a retried change that was applied already: the state it
/// left (the file or directory it made or changed), or plain success.
enum Replay {
    Stat(cairn_types::CairnPath),
    Ok,
}

impl Replay {
    fn of(req: &MetaRequest) -> Replay {
        match req {
            MetaRequest::CommitFile { path, .. }
            | MetaRequest::CommitInline { path, .. }
            | MetaRequest::SetAttr { path, .. }
            | MetaRequest::SetCues { path, .. }
            | MetaRequest::MakeNode { path, .. }
            | MetaRequest::Mkdir { path, .. } => Replay::Stat(path.clone()),
            MetaRequest::Compose { dst, .. } | MetaRequest::Link { dst, .. } => {
                Replay::Stat(dst.clone())
            }
            _ => Replay::Ok,
        }
    }

    async fn answer(self, meta: &Meta) -> MetaResult {
        match self {
            Replay::Stat(p) => Ok(MetaResponse::Inode(meta.ns.lookup(&p).await?)),
            Replay::Ok => Ok(MetaResponse::Ok),
        }
    }
}

/// What a change touched, for the leases it must wait out.
enum Touched {
    File(cairn_types::InodeId),
    /// A directory: anything below it.
    All,
}

/// Whether a failed change certainly wrote nothing: any other failure
/// (unavailable, a timeout) may be a store transaction that still applies,
/// so what it would have taken must be kept.
pub(crate) fn certainly_not_applied(err: &Error) -> bool {
    matches!(
        err.kind,
        ErrorKind::NotFound
            | ErrorKind::AlreadyExists
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory
            | ErrorKind::DirectoryNotEmpty
            | ErrorKind::InvalidInput
            | ErrorKind::PermissionDenied
            | ErrorKind::Conflict
            | ErrorKind::TooLarge
    )
}

/// A stable 64-bit key for a path (FNV-1a), for `keep_together` of one file.
fn path_hash(path: &cairn_types::CairnPath) -> u64 {
    path.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

pub struct MetaHandle {
    pub addr: String,
    pub secret: ClusterSecret,
    pub meta: Arc<Meta>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MetaHandle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Stop as abruptly as a SIGKILL would, as far as the rest of the
    /// cluster can tell: no clean hand-over (the etcd leader lease is not
    /// revoked, so another meta takes over only once it expires).
    pub async fn kill(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        // Dropping the sender ends every open connection.
        drop(self.stop);
    }
}

impl Meta {
    /// Change the default redundancy (the embedded server sets it from its
    /// node count).
    pub fn set_default_rep(&self, rep: u8) {
        self.default_rep.store(rep, Ordering::Relaxed);
    }

    /// Whether this meta server runs the background work now (always, on
    /// the embedded store; the etcd election's winner otherwise).
    pub fn is_leader(&self) -> bool {
        self.election.is_leader()
    }

    /// What meta makes of a storage node right now.
    pub fn node_state(&self, node: NodeId) -> cairn_proto::NodeState {
        self.nodes.state(node)
    }
}

pub async fn start(cfg: MetaConfig) -> Result<MetaHandle> {
    let secret = load_or_create_secret(&cfg.data_dir)?;
    let store = cfg.store.open(&cfg.data_dir).await?;
    let shared_store = store.is_shared();
    if shared_store {
        check_shared_secret(store.as_ref(), &secret, &cfg.data_dir).await?;
    }
    let ns = Namespace::open(store.clone(), cfg.gc_delay).await?;
    let mut nodes = NodeTracker::load(store.clone(), cfg.dead_after).await?;
    nodes.suspect_after = cfg.repair.suspect_after.min(cfg.dead_after);
    let creds = Credentials::Cluster(secret.clone());
    let listener = Listener::bind(&cfg.listen, creds.clone()).await?;
    let addr = listener.local_addr().to_string();
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let election = match &cfg.store {
        crate::store_spec::StoreSpec::Embedded => crate::election::Election::always(),
        crate::store_spec::StoreSpec::Etcd(c) => {
            let (e, task) =
                crate::election::Election::etcd(c.clone(), addr.clone(), stop_rx.clone());
            tasks.push(task);
            e
        }
    };
    let meta = Arc::new(Meta {
        ns,
        store: store.clone(),
        nodes,
        secret: secret.clone(),
        chunk_size: cfg.chunk_size,
        inline_max: cfg.inline_max.min(cairn_types::MAX_INLINE),
        default_rep: AtomicU8::new(cfg.default_rep),
        peers: Pool::new(creds),
        pending_garbage: AtomicU64::new(0),
        recent: Default::default(),
        uncommitted: Default::default(),
        repair_cfg: cfg.repair.clone(),
        shared_store,
        repair_status: Default::default(),
        started_ms: cairn_types::now_ms(),
        election,
        repair_kick: Arc::new(tokio::sync::Notify::new()),
        convert_kick: Arc::new(tokio::sync::Notify::new()),
        auto_convert: cfg.auto_convert,
        cache: crate::cache_copies::CacheCopies::load(store.clone()).await?,
        prefetch: Default::default(),
        locks: crate::locks::Locks::new(store.clone()),
        audit: cfg
            .audit_log
            .as_deref()
            .map(crate::audit::AuditLog::open)
            .transpose()?,
        identities: crate::identities::Identities::new(store.clone()),
        workers: Default::default(),
        leases: Default::default(),
        lease_ms: if shared_store {
            0
        } else {
            cfg.lease.as_millis().min(u32::MAX as u128) as u32
        },
        changes: AtomicU64::new(0),
        tier: crate::tiering::TierState::new(cfg.tier.clone()),
    });
    // Node states and pending garbage, read at each scrape.
    let weak = Arc::downgrade(&meta);
    cairn_metrics::global().refresh(move |m| {
        let Some(meta) = weak.upgrade() else {
            return false;
        };
        let mut counts: BTreeMap<&'static str, i64> = [
            cairn_proto::NodeState::Live,
            cairn_proto::NodeState::Suspect,
            cairn_proto::NodeState::Dead,
            cairn_proto::NodeState::Full,
            cairn_proto::NodeState::Draining,
            cairn_proto::NodeState::Drained,
        ]
        .into_iter()
        .map(|s| (s.as_str(), 0))
        .collect();
        for n in meta.nodes.status() {
            *counts.entry(n.state.as_str()).or_default() += 1;
        }
        for (state, n) in counts {
            m.meta_nodes
                .get_or_create(&cairn_metrics::State { state })
                .set(n);
        }
        let set = cairn_metrics::Metrics::set;
        set(
            &m.meta_garbage,
            meta.pending_garbage.load(Ordering::Relaxed),
        );
        let r = meta.repair_status.lock().unwrap().clone();
        set(&m.repair_pending, r.chunks_pending);
        set(&m.repair_bytes_left, r.bytes_left);
        let copies = |outcome| {
            m.repair_copies
                .get_or_create(&cairn_metrics::Outcome { outcome })
                .clone()
        };
        cairn_metrics::Metrics::catch_up(&copies("done"), r.copies_done);
        cairn_metrics::Metrics::catch_up(&copies("failed"), r.copies_failed);
        cairn_metrics::Metrics::catch_up(&m.repair_orphans, r.orphans_deleted);
        true
    });
    tasks.extend([
        tokio::spawn({
            let meta = meta.clone();
            listener.serve(stop_rx.clone(), move |conn, stop| {
                serve_conn(meta.clone(), conn, stop)
            })
        }),
        meta.workers.spawn(
            GcWorker {
                meta: meta.clone(),
                every: cfg.gc_interval,
            },
            None,
            stop_rx.clone(),
        ),
        meta.workers.spawn(
            crate::repair::RepairWorker::new(meta.clone()),
            Some(meta.repair_kick.clone()),
            stop_rx.clone(),
        ),
        meta.workers.spawn(
            crate::prefetch::PrefetchWorker::new(meta.clone(), Default::default()),
            Some(meta.prefetch.kick.clone()),
            stop_rx.clone(),
        ),
        meta.workers.spawn(
            crate::tiering::TierWorker::new(meta.clone()),
            None,
            stop_rx.clone(),
        ),
        meta.workers.spawn(
            crate::convert::ConvertWorker::new(meta.clone()),
            Some(meta.convert_kick.clone()),
            stop_rx.clone(),
        ),
        meta.workers
            .spawn(crate::locks::LockSweeper::new(meta.clone()), None, stop_rx),
    ]);
    info!(%addr, data = %cfg.data_dir.display(), "meta serving");
    Ok(MetaHandle {
        addr,
        secret,
        meta,
        stop,
        tasks,
    })
}

async fn serve_conn(meta: Arc<Meta>, mut conn: Conn, mut stop: watch::Receiver<bool>) {
    loop {
        // A receiver cloned after the stop was sent sees no change: a
        // connection whose handshake ended after it must not be served.
        if *stop.borrow_and_update() {
            return;
        }
        let req: MetaRequest = tokio::select! {
            _ = stop.changed() => return,
            r = conn.recv() => match r {
                Ok(r) => r,
                Err(e) => {
                    if e.kind != ErrorKind::Unavailable {
                        debug!(peer = %conn.peer, "bad request: {e}");
                        let _ = conn.send(&MetaResult::Err(e)).await;
                    }
                    return;
                }
            },
        };
        let caller = match conn.identity {
            None => Caller {
                role: conn.role,
                identity: None,
            },
            Some(id) => match meta.identities.resolve(id).await {
                Ok(info) => Caller {
                    role: conn.role,
                    identity: Some(info),
                },
                Err(e) => {
                    let gone = e.kind == ErrorKind::PermissionDenied;
                    let _ = conn.send(&MetaResult::Err(e)).await;
                    if gone {
                        return;
                    }
                    continue;
                }
            },
        };
        let answer = meta.handle(&caller, req).await;
        if conn.send(&answer).await.is_err() {
            return;
        }
    }
}

impl Meta {
    /// Answer one request, counted and timed in the process's metrics
    /// under the name of the operation inside any envelope.
    pub async fn handle(&self, caller: &Caller, req: MetaRequest) -> MetaResult {
        let mut inner = &req;
        while let MetaRequest::As { req, .. } | MetaRequest::Once { req, .. } = inner {
            inner = req;
        }
        let op = inner.op_name();
        let started = std::time::Instant::now();
        let answer = self.handle_audited(caller, req).await;
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(e) => e.kind.as_str(),
        };
        cairn_metrics::global().meta_request(op, outcome, started.elapsed());
        answer
    }

    async fn handle_audited(&self, caller: &Caller, req: MetaRequest) -> MetaResult {
        let Some(audit) = &self.audit else {
            return self.handle_request(caller, req).await;
        };
        let (client, inner) = match &req {
            MetaRequest::As { client, req } => (Some(*client), &**req),
            r => (None, r),
        };
        let inner = match inner {
            MetaRequest::Once { req, .. } => (**req).clone(),
            r => r.clone(),
        };
        let answer = self.handle_request(caller, req).await;
        let outcome = answer
            .as_ref()
            .map(|_| ())
            .map_err(|e| (e.kind, e.message.clone()));
        if crate::audit::AuditLog::wanted(&inner, &outcome) {
            audit.record(caller.name(), client, &inner, &outcome);
        }
        answer
    }

    async fn handle_request(&self, caller: &Caller, req: MetaRequest) -> MetaResult {
        caller.authorize(&req)?;
        let (client, req) = match req {
            MetaRequest::As { client, req } => (Some(client), *req),
            r => (None, r),
        };
        let client = caller.scope(client);
        if matches!(req, MetaRequest::As { .. }) {
            return Err(Error::invalid(
                "a request on behalf of a client nests another",
            ));
        }
        let (once, req) = match req {
            MetaRequest::Once { id, req } => (Some(id), *req),
            r => (None, r),
        };
        if matches!(req, MetaRequest::Once { .. } | MetaRequest::As { .. }) {
            return Err(Error::invalid("a request with an id nests another"));
        }
        match once {
            Some(id) if req.is_namespace_change() => {
                let mark = crate::namespace::request_mark_key(client.unwrap_or(0), id);
                let replay = Replay::of(&req);
                let answer = crate::namespace::with_request_mark(
                    mark.clone(),
                    self.handle_change(caller, client, req),
                )
                .await;
                if answer.is_err() && self.ns.request_applied(&mark).await.unwrap_or(false) {
                    // A retry of a change already applied (its answer was
                    // lost): say so, as the first attempt would have.
                    debug!("answering a retried request from its first outcome");
                    return replay.answer(self).await;
                }
                answer
            }
            _ => self.handle_change(caller, client, req).await,
        }
    }

    async fn handle_change(
        &self,
        caller: &Caller,
        client: Option<u64>,
        req: MetaRequest,
    ) -> MetaResult {
        let before = self.touched_before(&req).await;
        // Changes whose answer names what they touched; new cues on a
        // directory change what every file below inherits.
        let changes_answer = matches!(
            req,
            MetaRequest::CommitFile { .. }
                | MetaRequest::CommitInline { .. }
                | MetaRequest::Compose { .. }
                | MetaRequest::SetAttr { .. }
                | MetaRequest::SetCues { .. }
                | MetaRequest::Link { .. }
        );
        let answer = self.handle_one(caller, client, req).await;
        if let Ok(a) = &answer {
            let mut touched = before;
            if let (true, MetaResponse::Inode(i)) = (changes_answer, a) {
                touched.push(match i.kind {
                    InodeKind::Directory => Touched::All,
                    _ => Touched::File(i.id),
                });
            }
            self.settle(client, touched).await;
        }
        answer
    }

    /// For a removal or rename, what it will touch (looked up before the
    /// change; only while leases are out).
    async fn touched_before(&self, req: &MetaRequest) -> Vec<Touched> {
        if self.leases.lock().unwrap().is_empty() {
            return Vec::new();
        }
        let paths: Vec<&cairn_types::CairnPath> = match req {
            MetaRequest::Remove { path, .. } | MetaRequest::Unlink { path, .. } => vec![path],
            MetaRequest::Rename { src, dst } | MetaRequest::RenameNoReplace { src, dst } => {
                vec![src, dst]
            }
            MetaRequest::RenameExchange { a, b } => vec![a, b],
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        for p in paths {
            match self.ns.lookup(p).await {
                Ok(i) if i.kind == InodeKind::Directory => out.push(Touched::All),
                Ok(i) => out.push(Touched::File(i.id)),
                Err(_) => {}
            }
        }
        out
    }

    /// After a change: wait until no other client's lease on what it
    /// touched can still be in use, so that once the change is
    /// acknowledged every open anywhere sees it.
    async fn settle(&self, client: Option<u64>, touched: Vec<Touched>) {
        if touched.is_empty() {
            return;
        }
        self.changes.fetch_add(1, Ordering::SeqCst);
        let now = cairn_types::now_ms();
        let mut until = 0u64;
        {
            let mut leases = self.leases.lock().unwrap();
            let mut take = |held: &mut Vec<(u64, u64)>| {
                held.retain(|(c, exp)| {
                    if Some(*c) == client || *exp <= now {
                        return *exp > now;
                    }
                    until = until.max(*exp);
                    false
                });
            };
            for t in &touched {
                match t {
                    Touched::File(id) => {
                        if let Some(held) = leases.get_mut(id) {
                            take(held);
                        }
                    }
                    Touched::All => leases.values_mut().for_each(&mut take),
                }
            }
            leases.retain(|_, held| !held.is_empty());
        }
        if until > now {
            tokio::time::sleep(Duration::from_millis(until - now)).await;
        }
    }

    /// A lease on `id` for `client`, unless a change happened since
    /// `seen` (the open may have read the version it replaced). Returns
    /// the lease's length.
    fn grant(&self, client: Option<u64>, id: cairn_types::InodeId, seen: u64) -> u32 {
        let Some(client) = client.filter(|_| self.lease_ms > 0) else {
            return 0;
        };
        let now = cairn_types::now_ms();
        // Meta's expiry runs a little past the client's, which counts from
        // before it sent the open.
        let exp = now + self.lease_ms as u64 + 50;
        let mut leases = self.leases.lock().unwrap();
        if leases.len() > 100_000 {
            leases.retain(|_, held| {
                held.retain(|(_, e)| *e > now);
                !held.is_empty()
            });
        }
        let held = leases.entry(id).or_default();
        held.retain(|(c, e)| *c != client && *e > now);
        held.push((client, exp));
        if self.changes.load(Ordering::SeqCst) != seen {
            held.pop();
            return 0;
        }
        self.lease_ms
    }

    async fn handle_one(
        &self,
        caller: &Caller,
        client: Option<u64>,
        req: MetaRequest,
    ) -> MetaResult {
        let holder = caller.holder();
        match req {
            MetaRequest::Register {
                node,
                addr,
                zone,
                stats,
            } => {
                info!(%node, %addr, %zone, "storage node registered");
                self.nodes.register(node, addr, zone, stats).await?;
                Ok(MetaResponse::Registered)
            }
            MetaRequest::Heartbeat { node, stats } => {
                self.nodes.heartbeat(node, stats)?;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::Config => Ok(MetaResponse::Config(ClusterConfig {
                chunk_size: self.chunk_size,
                default_rep: self.default_rep.load(Ordering::Relaxed),
                inline_max: self.inline_max,
            })),
            MetaRequest::Stat { path } => Ok(MetaResponse::Inode(self.ns.lookup(&path).await?)),
            MetaRequest::Versions { path } => {
                let mut versions = self.ns.versions(&path).await?;
                for v in &mut versions {
                    v.inline = None;
                }
                Ok(MetaResponse::Versions(versions))
            }
            MetaRequest::OpenVersion {
                path,
                version,
                host,
            } => {
                self.open(&path, host.as_deref(), None, Some(version), holder)
                    .await
            }
            MetaRequest::Open { path, host, known } => {
                let seen = self.changes.load(Ordering::SeqCst);
                let mut answer = self
                    .open(&path, host.as_deref(), known, None, holder)
                    .await?;
                match &mut answer {
                    MetaResponse::Open(o) => {
                        o.lease_ms = self.grant(client, o.inode.id, seen);
                    }
                    MetaResponse::Unchanged { lease_ms, .. } => {
                        if let Some((id, _)) = known {
                            *lease_ms = self.grant(client, id, seen);
                        }
                    }
                    _ => {}
                }
                Ok(answer)
            }
            MetaRequest::List {
                path,
                start_after,
                limit,
            } => {
                let limit = (limit as usize).clamp(1, 10_000);
                let mut entries = match caller.identity.as_deref() {
                    Some(i) if !i.rights.allows(&path, false) => {
                        self.list_on_the_way(&i.rights, &path, start_after, limit)
                            .await?
                    }
                    _ => self.ns.list(&path, start_after.as_deref(), limit).await?,
                };
                // Small files' bytes stay out of listings (a page stays
                // small); opening a file brings them.
                for e in &mut entries {
                    e.inode.inline = None;
                }
                Ok(MetaResponse::Entries(entries))
            }
            MetaRequest::Mkdir { path, parents } => {
                Ok(MetaResponse::Inode(self.ns.mkdir(&path, parents).await?))
            }
            MetaRequest::Unlink { path, dir } => {
                self.ns.unlink(&path, dir).await?;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::Remove { path, recursive } => {
                self.ns.remove(&path, recursive).await?;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::Rename { src, dst } => {
                self.ns.rename(&src, &dst).await?;
                self.convert_after_rename(&src, &dst).await;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::RenameNoReplace { src, dst } => {
                self.ns.rename_with(&src, &dst, false).await?;
                self.convert_after_rename(&src, &dst).await;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::RenameExchange { a, b } => {
                self.ns.exchange(&a, &b).await?;
                self.convert_after_rename(&a, &b).await;
                self.convert_after_rename(&b, &a).await;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::Link { src, dst } => {
                Ok(MetaResponse::Inode(self.ns.link(&src, &dst).await?))
            }
            MetaRequest::AllocChunk {
                path,
                cues,
                host,
                exclude,
                len,
            } => {
                // Storage nodes refuse chunks over their limit; here `len`
                // only sizes the placement.
                self.alloc(client, &path, &cues, host.as_deref(), &exclude, len, holder)
                    .await
            }
            MetaRequest::CommitInline {
                path,
                data,
                expected,
                mode,
                xattrs,
                cues,
            } => {
                cues.check(self.default_rep.load(Ordering::Relaxed))?;
                self.check_tier_cues(&cues)?;
                if data.len() > cairn_types::MAX_INLINE as usize {
                    return Err(Error::invalid(format!(
                        "{} bytes cannot be kept in metadata; at most {} (inline=)",
                        data.len(),
                        cairn_types::MAX_INLINE
                    )));
                }
                let committed = self
                    .ns
                    .commit_inline(&path, data, expected, mode, xattrs, &cues, self.inline_max)
                    .await?;
                Ok(match committed {
                    Ok(inode) => MetaResponse::Inode(inode),
                    Err(limit) => MetaResponse::NotInline { limit },
                })
            }
            MetaRequest::CommitFile {
                path,
                extents,
                expected,
                mode,
                chunk_size,
                xattrs,
                cues,
            } => {
                cues.check(self.default_rep.load(Ordering::Relaxed))?;
                for e in &extents {
                    if e.nodes.is_empty() {
                        return Err(Error::invalid(format!(
                            "extent of chunk {} names no node",
                            e.chunk
                        )));
                    }
                    if let Some(n) = e.nodes.iter().find(|n| self.nodes.addr(**n).is_none()) {
                        return Err(Error::invalid(format!(
                            "chunk {} names unknown node {n}",
                            e.chunk
                        )));
                    }
                    if let Some(ec) = &e.ec {
                        check_stripe(e, ec)?;
                    }
                    // Only meta's tier planner offloads a chunk.
                    if let Some(t) = &e.remote {
                        return Err(Error::invalid(format!(
                            "extent of chunk {} claims remote store {t}: only meta offloads chunks",
                            e.chunk
                        )));
                    }
                }
                self.check_commit_chunks(&path, &extents).await?;
                match self
                    .ns
                    .commit_file_with(
                        &path,
                        extents.clone(),
                        expected,
                        mode,
                        chunk_size,
                        xattrs,
                        &cues,
                    )
                    .await
                {
                    Ok(inode) => {
                        self.committed(&extents).await;
                        // Copies beyond `sync` are the planner's to make,
                        // and shards whose writes failed after `sync` its
                        // to rebuild, now.
                        let short = inode.cues.rep.is_some_and(|rep| {
                            inode.extents.iter().any(|e| e.nodes.len() < rep as usize)
                        });
                        if short || self.nodes.any_missing(&inode.extents) {
                            self.repair_kick.notify_one();
                        }
                        self.after_commit(&path, &inode).await;
                        Ok(MetaResponse::Inode(inode))
                    }
                    Err(e) => {
                        self.discard_failed_commit(client, &path, &extents, &e)
                            .await;
                        Err(e)
                    }
                }
            }
            MetaRequest::Compose {
                dst,
                sources,
                expected,
                mode,
                xattrs,
            } => {
                let inode = self
                    .ns
                    .compose(&dst, &sources, expected, mode, xattrs)
                    .await?;
                self.after_commit(&dst, &inode).await;
                Ok(MetaResponse::Inode(inode))
            }
            MetaRequest::ClusterStatus => Ok(MetaResponse::Status(self.status().await?)),
            MetaRequest::GetCues { path } => {
                let r = self.ns.cues(&path).await?;
                Ok(MetaResponse::Cues(PathCues {
                    own: r.entry.map(|i| i.cues),
                    inherited: r.inherited,
                    effective: r.effective,
                }))
            }
            MetaRequest::SetCues {
                path,
                cues,
                replace,
            } => {
                let r = self.ns.cues(&path).await?;
                let own = r.entry.as_ref().map(|i| i.cues.clone()).unwrap_or_default();
                let new_own = if replace {
                    cues.clone()
                } else {
                    own.merge(&cues)
                };
                r.inherited
                    .merge(&new_own)
                    .check(self.default_rep.load(Ordering::Relaxed))
                    .and_then(|()| self.check_tier_cues(&new_own))
                    .map_err(|e| e.context(format!("cues of {path}")))?;
                let inode = self.ns.set_cues(&path, &cues, replace).await?;
                info!(%path, cues = %inode.cues, "cues set");
                let redundancy = |c: &Cues| c.rep.is_some() || c.ec.is_some();
                if self.auto_convert
                    && inode.kind == InodeKind::Directory
                    && (redundancy(&cues) || (replace && redundancy(&own)))
                {
                    // The cue is set either way; the conversion can be
                    // asked for again (or run with `cairn convert`).
                    if let Err(e) = self.add_convert_job(&path).await {
                        warn!(%path, "could not record a conversion job: {e}");
                    }
                }
                Ok(MetaResponse::Inode(inode))
            }
            MetaRequest::MakeNode {
                path,
                node,
                mode,
                uid,
                gid,
            } => Ok(MetaResponse::Inode(
                self.ns.make_node(&path, &node, mode, uid, gid).await?,
            )),
            MetaRequest::SetAttr { path, id, changes } => Ok(MetaResponse::Inode(
                self.ns.set_attr(&path, id, &changes).await?,
            )),
            MetaRequest::Discard { extents } => {
                let (mine, refused) = self.discardable(client, &extents).await?;
                if let Some(c) = refused.first() {
                    return Err(Error::denied(format!(
                        "chunk {c} is not one this client was handed and has not committed: \
                         refusing to discard {} chunk(s); nothing was discarded",
                        refused.len()
                    )));
                }
                self.discard(&mine).await?;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::IdentityCreate { name, rights } => {
                // Refused before anything is made: a bad or taken name.
                self.identities.check_new(&name, &rights).await?;
                for r in &rights.prefixes {
                    self.ns.mkdir(&r.path, true).await.map_err(|e| {
                        e.context(format!("making the prefix {} of identity {name}", r.path))
                    })?;
                }
                let info = self.identities.create(&name, rights).await?;
                info!(identity = %name, id = %info.id, "identity created");
                let key = self.secret.identity_key(&info.id);
                let ca = cairn_proto::tls::ca_cert(&self.secret)?;
                Ok(MetaResponse::Identity { info, key, ca })
            }
            MetaRequest::IdentityList => {
                Ok(MetaResponse::Identities(self.identities.list().await?))
            }
            MetaRequest::IdentityRevoke { name } => {
                let info = self.identities.revoke(&name).await?;
                info!(identity = %name, id = %info.id, "identity revoked");
                Ok(MetaResponse::Ok)
            }
            MetaRequest::As { .. } | MetaRequest::Once { .. } => {
                Err(Error::invalid("nested request"))
            }
            MetaRequest::Drain { node, undo } => {
                info!(%node, undo, "drain requested");
                self.nodes.set_draining(node, !undo).await?;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::ReportCorrupt {
                chunk,
                node,
                detail,
            } => {
                warn!(%chunk, %node, "client reported a corrupt replica: {detail}");
                self.nodes.report_corrupt(chunk, node);
                Ok(MetaResponse::Ok)
            }
            MetaRequest::ReportMissing {
                chunk,
                node,
                detail,
            } => {
                warn!(%chunk, %node, "a writer's shard did not land: {detail}");
                self.nodes.report_missing(chunk, node);
                self.repair_kick.notify_one();
                Ok(MetaResponse::Ok)
            }
            MetaRequest::SetGroup { node, group, add } => {
                info!(%node, %group, add, "group membership changed");
                self.nodes.set_group(node, &group, add).await?;
                self.prefetch.kick.notify_one();
                Ok(MetaResponse::Ok)
            }
            MetaRequest::Groups => Ok(MetaResponse::Groups(self.nodes.groups())),
            MetaRequest::Prefetch {
                paths,
                group,
                evict,
            } => Ok(MetaResponse::Prefetch(
                self.handle_prefetch(paths, group, evict).await?,
            )),
            MetaRequest::PrefetchStatus { jobs } => {
                Ok(MetaResponse::Prefetch(self.prefetch.status(&jobs)))
            }
            MetaRequest::CacheReport {
                node,
                added,
                dropped,
            } => {
                let add: Vec<_> = added.iter().map(|(c, len)| (*c, node, *len)).collect();
                self.cache.add_many(&add).await?;
                let drop: Vec<_> = dropped.iter().map(|c| (*c, node)).collect();
                self.cache.remove_many(&drop).await?;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::LockSession { ttl_ms } => {
                let (session, ttl_ms) = self.locks.open_session(ttl_ms).await?;
                Ok(MetaResponse::LockSession { session, ttl_ms })
            }
            MetaRequest::LockKeepalive { session } => {
                Ok(MetaResponse::Lock(self.locks.keepalive(session).await?))
            }
            MetaRequest::LockEnd { session } => {
                self.locks.end_session(session).await?;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::Lock { lock, wait } => {
                let inode = self.ns.lookup(&lock.path).await?.id;
                Ok(MetaResponse::Lock(
                    self.locks.lock(inode, &lock, wait).await?,
                ))
            }
            MetaRequest::LockCancel { lock } => {
                let inode = self.ns.lookup(&lock.path).await?.id;
                self.locks.cancel(inode, lock.owner).await?;
                Ok(MetaResponse::Ok)
            }
            MetaRequest::TestLock { lock } => {
                let inode = self.ns.lookup(&lock.path).await?.id;
                Ok(MetaResponse::Lock(self.locks.test(inode, &lock).await?))
            }
            MetaRequest::TierStatus => Ok(MetaResponse::Tiers(self.tier_usage().await?)),
            MetaRequest::TierRecall { path } => {
                let (files, chunks, bytes) = self.tier_recall(&path).await?;
                Ok(MetaResponse::Recalled {
                    files,
                    chunks,
                    bytes,
                })
            }
            MetaRequest::TierVerify { tier } => {
                Ok(MetaResponse::TierVerify(self.tier_verify(&tier).await?))
            }
        }
    }

    /// A new version was committed: with `hot=GROUP` in effect, prefetch it.
    async fn after_commit(&self, path: &cairn_types::CairnPath, inode: &cairn_types::Inode) {
        // A new file has its directory's `hot` fixed on it; a replaced one
        // keeps its own, so a `hot=` set on the directory since counts only
        // through a lookup, which is skipped while no node is in a group.
        let group = match &inode.cues.hot {
            Some(g) => Some(g.clone()),
            None if self.nodes.has_groups() => match self.ns.cues(path).await {
                Ok(r) => r.effective.hot,
                Err(_) => None,
            },
            None => None,
        };
        if let Some(g) = group {
            self.prefetch_hot(path, inode, &g).await;
        }
        self.convert_if_off_layout(path, inode).await;
    }

    /// A commit took these chunks: no `Discard` may name them from now on.
    pub(crate) async fn committed(&self, extents: &[Extent]) {
        {
            let mut un = self.uncommitted.lock().unwrap();
            for e in extents {
                un.remove(&e.chunk);
            }
        }
        if self.shared_store {
            let chunks: Vec<ChunkId> = extents.iter().map(|e| e.chunk).collect();
            if let Err(e) = crate::alloc::mark_committed(self.store.as_ref(), &chunks).await {
                warn!("could not mark the allocation records of committed chunks: {e}");
            }
        }
    }

    /// Split `extents` into those `client` may discard (handed to it within
    /// the orphan window, by this meta or, on a shared store, another, and
    /// committed by no file) and the chunks it may not.
    async fn discardable(
        &self,
        client: Option<u64>,
        extents: &[Extent],
    ) -> Result<(Vec<Extent>, Vec<ChunkId>)> {
        let client = client.unwrap_or(0);
        let horizon =
            cairn_types::now_ms().saturating_sub(self.repair_cfg.orphan_after.as_millis() as u64);
        let (mut mine, mut refused, mut ask) = (Vec::new(), Vec::new(), Vec::new());
        {
            let un = self.uncommitted.lock().unwrap();
            for e in extents {
                match un.get(&e.chunk) {
                    // Discarded already (by its failed commit, say): done.
                    Some((_, c, true)) if *c == client => {}
                    Some((at, c, false)) if *c == client && *at >= horizon => mine.push(e.clone()),
                    Some(_) => refused.push(e.chunk),
                    None => ask.push(e.clone()),
                }
            }
        }
        for e in ask {
            let allowed = self.shared_store
                && match crate::alloc::lookup(self.store.as_ref(), e.chunk).await? {
                    Some(r) => !r.committed && r.client == client && r.at_ms >= horizon,
                    None => false,
                };
            if allowed {
                mine.push(e);
            } else {
                refused.push(e.chunk);
            }
        }
        Ok((mine, refused))
    }

    /// After a commit of `extents` to `path` failed with `err`, the chunks
    /// written for it only go to garbage, and only when the failure is
    /// certain: an `Unavailable` or a timeout may be a transaction that
    /// still applies. Kept as well: all of them when an earlier attempt of
    /// the same request committed them (its answer was lost, and this retry
    /// failed on the request's own mark), and those the file at `path`
    /// holds now. When the store cannot tell, nothing is discarded: a chunk
    /// kept wrongly is only an orphan, which the sweep deletes; one
    /// discarded wrongly is a lost acknowledged write.
    async fn discard_failed_commit(
        &self,
        client: Option<u64>,
        path: &cairn_types::CairnPath,
        extents: &[Extent],
        err: &Error,
    ) {
        if !certainly_not_applied(err) {
            debug!(%path, "keeping the chunks of a commit whose outcome is unknown: {err}");
            return;
        }
        if let Some(mark) = crate::namespace::pending_request_mark() {
            match self.ns.request_applied(&mark).await {
                Ok(false) => {}
                Ok(true) => {
                    debug!(%path, "a retried commit failed on its own mark: keeping its chunks");
                    return;
                }
                Err(e) => {
                    warn!(%path, "keeping the chunks of a failed commit (cannot tell whether it was applied before): {e}");
                    return;
                }
            }
        }
        let unheld = match self.unheld(path, extents).await {
            Ok(unheld) => unheld,
            Err(e) => {
                warn!(%path, "keeping the chunks of a failed commit (cannot read the file): {e}");
                return;
            }
        };
        let mine = match self.discardable(client, &unheld).await {
            Ok((mine, _)) => mine,
            Err(e) => {
                warn!(%path, "keeping the chunks of a failed commit: {e}");
                return;
            }
        };
        if let Err(e) = self.discard(&mine).await {
            warn!("could not discard the chunks of a failed commit: {e}");
        }
    }

    /// Those of `extents` whose chunk the file at `path` does not hold now.
    pub(crate) async fn unheld(
        &self,
        path: &cairn_types::CairnPath,
        extents: &[Extent],
    ) -> Result<Vec<Extent>> {
        let held = self.held_chunks(path).await?;
        Ok(extents
            .iter()
            .filter(|e| !held.contains(&e.chunk))
            .cloned()
            .collect())
    }

    /// The chunks the file at `path` holds now (none if there is no file).
    async fn held_chunks(&self, path: &cairn_types::CairnPath) -> Result<HashSet<ChunkId>> {
        match self.ns.lookup(path).await {
            Ok(inode) => Ok(inode.extents.iter().map(|e| e.chunk).collect()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(HashSet::new()),
            Err(e) => Err(e),
        }
    }

    /// Send chunks that will never be committed to garbage collection, and
    /// drop their allocation records (the garbage record protects them from
    /// the orphan sweep now).
    pub(crate) async fn discard(&self, extents: &[Extent]) -> Result<()> {
        {
            let mut un = self.uncommitted.lock().unwrap();
            for e in extents {
                if let Some(u) = un.get_mut(&e.chunk) {
                    u.2 = true;
                }
            }
        }
        self.ns.discard(extents).await?;
        if self.shared_store {
            let chunks: Vec<ChunkId> = extents.iter().map(|e| e.chunk).collect();
            if let Err(e) = crate::alloc::forget(self.store.as_ref(), &chunks).await {
                // They expire and the sweep deletes them.
                debug!("could not drop the allocation records of discarded chunks: {e}");
            }
        }
        Ok(())
    }

    /// A commit may name only chunks allocated within the orphan window
    /// (so the orphan sweep cannot have collected them) or chunks the file
    /// already holds. Anything else would commit a reference to bytes that
    /// may be gone. On a shared store, a chunk another meta handed out is
    /// known from its allocation record.
    async fn check_commit_chunks(
        &self,
        path: &cairn_types::CairnPath,
        extents: &[Extent],
    ) -> Result<()> {
        // A discarded chunk is garbage, due now: a commit (a retry of the
        // one whose failure discarded it, say) must not take it.
        let discarded: HashSet<ChunkId> = {
            let un = self.uncommitted.lock().unwrap();
            extents
                .iter()
                .map(|e| e.chunk)
                .filter(|c| un.get(c).is_some_and(|u| u.2))
                .collect()
        };
        let mut stale: Vec<ChunkId> = {
            let recent = self.recent.lock().unwrap();
            extents
                .iter()
                .map(|e| e.chunk)
                .filter(|c| !recent.contains_key(c) && !discarded.contains(c))
                .collect()
        };
        if !stale.is_empty() && self.shared_store {
            let horizon = cairn_types::now_ms()
                .saturating_sub(self.repair_cfg.orphan_after.as_millis() as u64);
            let mut unknown = Vec::new();
            for c in stale {
                match crate::alloc::allocated_at(self.store.as_ref(), c).await? {
                    Some(at) if at >= horizon => {}
                    _ => unknown.push(c),
                }
            }
            stale = unknown;
        }
        stale.extend(discarded);
        if stale.is_empty() {
            return Ok(());
        }
        let held = self.held_chunks(path).await.unwrap_or_default();
        match stale.iter().find(|c| !held.contains(c)) {
            None => Ok(()),
            Some(c) => Err(Error::conflict(format!(
                "chunk {c} was discarded, or not allocated within the last {:?} (meta restarted, or the write took too long); \
                 its copies may have been collected: write the file again",
                self.repair_cfg.orphan_after
            ))),
        }
    }

    /// Place a new chunk of the file at `path` per its effective cues.
    /// A page of the directory `path`, which an identity with `rights`
    /// only passes through on the way to its prefixes: the names on the
    /// way, and no other.
    async fn list_on_the_way(
        &self,
        rights: &cairn_proto::Rights,
        path: &cairn_types::CairnPath,
        mut start_after: Option<String>,
        limit: usize,
    ) -> Result<Vec<cairn_types::DirEntry>> {
        let mut out = Vec::new();
        loop {
            let page = self.ns.list(path, start_after.as_deref(), 1000).await?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            start_after = Some(last.name.clone());
            let done = page.len() < 1000;
            for e in page {
                if rights.shows(path, &e.name) {
                    out.push(e);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// A chunk for the file at `path`; its capability goes to `holder`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn alloc(
        &self,
        client: Option<u64>,
        path: &cairn_types::CairnPath,
        cues: &Cues,
        host: Option<&str>,
        exclude: &[NodeId],
        len: u64,
        holder: Option<IdentityId>,
    ) -> MetaResult {
        let r = self.ns.cues(path).await?;
        if let Some(i) = &r.entry {
            if i.kind == InodeKind::Directory {
                return Err(Error::is_dir(format!(
                    "{path} is a directory; it cannot be written as a file"
                )));
            }
            if i.cues.is_write_once() {
                return Err(Error::denied(format!(
                    "{path} is write-once (cue writeonce): it can be read or removed, not modified"
                )));
            }
        }
        let eff = r.effective.merge(cues);
        let default_rep = self.default_rep.load(Ordering::Relaxed);
        eff.check(default_rep)
            .and_then(|()| self.check_tier_cues(&eff))
            .map_err(|e| e.context(format!("writing {path}")))?;
        if let Some(ec) = eff.ec {
            return self
                .alloc_stripe(client, path, &eff, ec, host, exclude, len, holder)
                .await;
        }
        let rep = eff.rep.unwrap_or(default_rep).max(1);
        let sync = eff.sync.unwrap_or(rep).clamp(1, rep) as usize;
        // A keep_together subtree shares one node set; a single file so cued
        // keeps its own chunks together.
        let together = match eff.keep_together {
            Some(true) => Some(match r.together {
                Some(dir) if cues.keep_together.is_none() => dir.0,
                _ => path_hash(path),
            }),
            _ => None,
        };
        let req = crate::placement::PlaceRequest {
            cues: &eff,
            default_rep,
            want: rep as usize,
            have: &[],
            exclude,
            len,
            writer_host: host,
            together_key: together,
        };
        let mut nodes = self
            .nodes
            .place_with(&req)
            .map_err(|e| e.context(format!("writing {path} with cues {eff}")))?;
        // The first `sync` are written now; the planner makes the others.
        nodes.truncate(sync);
        let chunk = self.new_chunk(client, ChunkId).await?;
        let cap = Capability::sign(&self.secret, chunk, true, holder);
        Ok(MetaResponse::Alloc(ChunkAlloc {
            chunk,
            nodes,
            cap,
            rep,
            ec: None,
            sync: sync as u8,
        }))
    }

    /// Place a new erasure-coded chunk: K+M distinct nodes, spread over
    /// zones unless the cues place it otherwise.
    #[allow(clippy::too_many_arguments)]
    async fn alloc_stripe(
        &self,
        client: Option<u64>,
        path: &cairn_types::CairnPath,
        eff: &Cues,
        ec: cairn_types::EcScheme,
        host: Option<&str>,
        exclude: &[NodeId],
        len: u64,
        holder: Option<IdentityId>,
    ) -> MetaResult {
        let shards = ec.shards();
        let cues = Self::stripe_cues(eff, ec);
        let req = crate::placement::PlaceRequest {
            cues: &cues,
            default_rep: shards as u8,
            want: shards,
            have: &[],
            exclude,
            len: ec.shard_len(len),
            writer_host: host,
            together_key: None,
        };
        let nodes = self.nodes.place_with(&req).map_err(|e| {
            let live = self
                .nodes
                .status()
                .iter()
                .filter(|n| n.state == cairn_proto::NodeState::Live && !exclude.contains(&n.id))
                .count();
            let why = format!(
                "writing {path} with ec={ec}: it needs {shards} storage nodes taking chunks, \
                 {live} are live{}",
                if exclude.is_empty() {
                    String::new()
                } else {
                    format!(" besides {} that failed this write", exclude.len())
                }
            );
            if live < shards {
                Error {
                    kind: e.kind,
                    message: why,
                }
            } else {
                e.context(why)
            }
        })?;
        let chunk = self.new_chunk(client, ChunkId::stripe_from).await?;
        let cap = Capability::sign(&self.secret, chunk, true, holder);
        Ok(MetaResponse::Alloc(ChunkAlloc {
            chunk,
            nodes,
            cap,
            rep: 0,
            ec: Some(ec),
            sync: ec.sync(eff.sync),
        }))
    }

    /// The cues placement sees for the shards of an `ec` chunk: one
    /// "copy" per shard, spread over zones by default.
    pub(crate) fn stripe_cues(eff: &Cues, ec: cairn_types::EcScheme) -> Cues {
        Cues {
            rep: Some(ec.shards() as u8),
            ec: None,
            sync: None,
            place: eff.place.or(Some(cairn_types::PlaceScheme::Spread)),
            ..eff.clone()
        }
    }

    /// A fresh chunk id (from random bits through `make`), recorded as
    /// handed out so the orphan sweep leaves it alone until committed.
    async fn new_chunk(
        &self,
        client: Option<u64>,
        make: impl FnOnce(u128) -> ChunkId,
    ) -> Result<ChunkId> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).expect("OS random source");
        let chunk = make(u128::from_be_bytes(id));
        let now = cairn_types::now_ms();
        if self.shared_store {
            // One store write per chunk, so that every meta server
            // (and the sweeping leader) knows of it.
            crate::alloc::record(self.store.as_ref(), chunk, now, client.unwrap_or(0)).await?;
        }
        self.recent.lock().unwrap().insert(chunk, now);
        {
            let mut un = self.uncommitted.lock().unwrap();
            if un.len() > 100_000 {
                let horizon = now.saturating_sub(self.repair_cfg.orphan_after.as_millis() as u64);
                un.retain(|_, (at, _, _)| *at >= horizon);
            }
            un.insert(chunk, (now, client.unwrap_or(0), false));
        }
        Ok(chunk)
    }

    async fn open(
        &self,
        path: &cairn_types::CairnPath,
        host: Option<&str>,
        known: Option<(cairn_types::InodeId, cairn_types::Version)>,
        version: Option<cairn_types::Version>,
        holder: Option<IdentityId>,
    ) -> MetaResult {
        let r = self.ns.cues(path).await?;
        let mut inode = r
            .entry
            .ok_or_else(|| Error::not_found(format!("{path} does not exist")))?;
        if let Some(v) = version {
            inode = self.ns.version_of(path, inode, v).await?;
        }
        if inode.kind == InodeKind::File && inode.cues.cold_after_ms.is_some() {
            self.tier.touch(inode.id);
        }
        // The reader's cached version is current: a small answer, no
        // extents or capabilities. Not for a file with offloaded chunks:
        // an offload keeps the version, and a reader's cached extents may
        // name copies evicted since.
        if known == Some((inode.id, inode.version))
            && inode.kind != InodeKind::Directory
            && inode.extents.iter().all(|e| e.remote.is_none())
        {
            return Ok(MetaResponse::Unchanged {
                cues: r.effective,
                lease_ms: 0,
            });
        }
        if inode.kind == InodeKind::Directory {
            return Err(Error::is_dir(format!("{path} is a directory")));
        }
        if inode.kind.is_special() {
            return Err(Error::invalid(format!(
                "{path} is a {}: it has no content to read here",
                inode.kind.as_str()
            )));
        }
        let mut ids = HashSet::new();
        let mut caps = Vec::with_capacity(inode.extents.len());
        // How near each node is to the reader: 0 its own host, 1 a zone
        // where the reader's host runs nodes, 2 elsewhere.
        let status = self.nodes.status();
        let my_zones: HashSet<&str> = status
            .iter()
            .filter(|n| host.is_some_and(|h| h == n.host))
            .map(|n| n.zone.as_str())
            .collect();
        let nearness: BTreeMap<NodeId, u8> = status
            .iter()
            .map(|n| {
                let d = if host.is_some_and(|h| h == n.host) {
                    0
                } else if my_zones.contains(n.zone.as_str()) {
                    1
                } else {
                    2
                };
                (n.id, d)
            })
            .collect();
        let mut read_order = Vec::with_capacity(inode.extents.len());
        let mut any_cached = false;
        for (i, e) in inode.extents.iter_mut().enumerate() {
            if e.ec.is_some() {
                // Shards stay in shard order; the client picks which to read.
                ids.extend(e.nodes.iter().copied());
                caps.push(Capability::sign(&self.secret, e.chunk, false, holder));
                read_order.push(Vec::new());
                continue;
            }
            // Healthy, live replicas first, then nearest; the client tries
            // them in order.
            let key = |n: &NodeId| {
                (
                    self.nodes.is_corrupt(e.chunk, *n),
                    !self.nodes.is_live(*n),
                    nearness.get(n).copied().unwrap_or(2),
                )
            };
            e.nodes.sort_by_key(key);
            // The best equally good replicas take turns, chunk by chunk.
            if let Some(first) = e.nodes.first().map(key) {
                let tied = e.nodes.iter().take_while(|n| key(n) == first).count();
                e.nodes[..tied].rotate_left(i % tied.max(1));
            }
            ids.extend(e.nodes.iter().copied());
            caps.push(Capability::sign(&self.secret, e.chunk, false, holder));
            // Cache copies on live nodes join the order; at equal nearness
            // they go first, sparing the durable holders, and take turns.
            let cached: Vec<NodeId> = self
                .cache
                .holders(e.chunk)
                .into_iter()
                .filter(|n| self.nodes.is_live(*n) && !e.nodes.contains(n))
                .collect();
            if cached.is_empty() {
                read_order.push(Vec::new());
                continue;
            }
            any_cached = true;
            let mut order: Vec<(NodeId, bool)> = cached
                .iter()
                .map(|n| (*n, true))
                .chain(e.nodes.iter().map(|n| (*n, false)))
                .collect();
            let okey = |(n, cache): &(NodeId, bool)| {
                let (corrupt, down, near) = key(n);
                (corrupt, down, near, !cache)
            };
            order.sort_by_key(okey);
            if let Some(first) = order.first().map(okey) {
                let tied = order.iter().take_while(|o| okey(o) == first).count();
                order[..tied].rotate_left(fastrand::usize(..tied.max(1)));
            }
            ids.extend(cached);
            read_order.push(order.into_iter().map(|(n, _)| n).collect());
        }
        if !any_cached {
            read_order.clear();
        }
        // A live node on the reader's host, for reads through it; for an
        // offloaded chunk, else any live node (it reads the remote store).
        let remote = inode.extents.iter().any(|e| e.remote.is_some());
        let via = host
            .and_then(|h| status.iter().find(|n| n.host == h && n.state.is_up()))
            .or_else(|| {
                let live: Vec<_> = status
                    .iter()
                    .filter(|n| remote && n.state == cairn_proto::NodeState::Live)
                    .collect();
                (!live.is_empty()).then(|| live[fastrand::usize(..live.len())])
            })
            .map(|n| cairn_proto::NodeAddr {
                id: n.id,
                addr: n.addr.clone(),
            });
        let nodes = ids
            .into_iter()
            .filter_map(|id| self.nodes.addr(id))
            .collect();
        Ok(MetaResponse::Open(OpenFile {
            inode,
            cues: r.effective,
            nodes,
            caps,
            lease_ms: 0,
            read_order,
            via,
        }))
    }

    async fn status(&self) -> Result<ClusterStatus> {
        use cairn_proto::NodeState as S;
        let (mut chunks, mut bytes, mut under, mut unavailable) = (0u64, 0u64, 0u64, 0u64);
        let states: BTreeMap<NodeId, S> = self
            .nodes
            .status()
            .into_iter()
            .map(|n| (n.id, n.state))
            .collect();
        let state = |n: &NodeId| states.get(n).copied().unwrap_or(S::Dead);
        let nodes = &self.nodes;
        let mut tiers = self.tier_tally();
        self.ns
            .for_each_chunk(|file: &cairn_types::Inode, e: &Extent| {
                chunks += 1;
                bytes += e.len;
                tiers.add(e);
                // Offloaded: its store holds it (`tiers` says how much).
                if e.remote.is_some() {
                    return;
                }
                if let Some(ec) = &e.ec {
                    // Short of shards when any is lost; unavailable below K.
                    let (mut good, mut readable) = (0, 0);
                    for (c, n) in e.stored() {
                        if nodes.is_corrupt(c, n) {
                            continue;
                        }
                        good += usize::from(matches!(state(&n), S::Live | S::Full));
                        readable += usize::from(state(&n).is_up());
                    }
                    under += u64::from(good < ec.scheme.shards());
                    unavailable += u64::from(readable < ec.scheme.k as usize);
                    return;
                }
                let intact = |n: &&NodeId| !nodes.is_corrupt(e.chunk, **n);
                // A good copy is on a node in good standing; one on an
                // unreachable or draining node does not count.
                let good = e
                    .nodes
                    .iter()
                    .filter(intact)
                    .filter(|n| matches!(state(n), S::Live | S::Full))
                    .count();
                let readable = e
                    .nodes
                    .iter()
                    .filter(intact)
                    .filter(|n| state(n).is_up())
                    .count();
                let want = file.cues.rep.map_or(e.nodes.len(), |r| r as usize);
                if good < want.max(e.nodes.len()) {
                    under += 1;
                }
                if readable == 0 {
                    unavailable += 1;
                }
            })
            .await?;
        let tiers = tiers.finish();
        Ok(ClusterStatus {
            nodes: self.nodes.status(),
            chunks,
            logical_bytes: bytes,
            under_replicated_chunks: under,
            unavailable_chunks: unavailable,
            corrupt_replicas: self.nodes.corrupt_replicas(),
            pending_garbage_chunks: self.pending_garbage.load(Ordering::Relaxed),
            repair: self.repair_status.lock().unwrap().clone(),
            leader: self.election.is_leader(),
            workers: self.workers.status(),
            cache_copies: self.cache.count(),
            tiers,
        })
    }

    /// One pass of garbage collection: empty a batch of the trash, then
    /// delete due garbage chunks from every live node holding them. A chunk
    /// on a node that is down stays pending until the node is back.
    async fn collect_garbage(&self) -> Result<()> {
        while self.ns.purge_trash(1000).await? > 0 {}
        let due = self.ns.take_due_garbage(1000).await?;
        self.pending_garbage
            .store(due.len() as u64, Ordering::Relaxed);
        if due.is_empty() {
            return Ok(());
        }
        let mut by_node: BTreeMap<NodeId, Vec<ChunkId>> = BTreeMap::new();
        let mut cached: Vec<(ChunkId, NodeId)> = Vec::new();
        for (_, g) in &due {
            for n in &g.nodes {
                by_node.entry(*n).or_default().push(g.chunk);
            }
            // Cache copies go with their chunk.
            for n in self.cache.holders(g.chunk) {
                if !g.nodes.contains(&n) {
                    by_node.entry(n).or_default().push(g.chunk);
                    cached.push((g.chunk, n));
                }
            }
        }
        // Offloaded chunks (no replicas): their objects in the stores.
        let remote: Vec<ChunkId> = due
            .iter()
            .filter(|(_, g)| g.nodes.is_empty())
            .map(|(_, g)| g.chunk)
            .collect();
        let remote_failed = if remote.is_empty() {
            HashSet::new()
        } else {
            self.delete_remote(&remote).await
        };
        let mut failed: HashSet<NodeId> = HashSet::new();
        for (node, chunks) in by_node {
            let Some(addr) = self.nodes.addr(node) else {
                continue;
            }; // node forgotten: nothing to delete
            if !self.nodes.is_live(node) {
                failed.insert(node);
                continue;
            }
            let r: Result<()> = async {
                let mut p = self.peers.get(&addr.addr).await?;
                let answer: Result<(), Error> = p
                    .conn
                    .call(
                        &StorageRequest::DeleteChunks { chunks },
                        Duration::from_secs(30),
                    )
                    .await?;
                answer?;
                self.peers.put(&addr.addr, p.conn);
                Ok(())
            }
            .await;
            if let Err(e) = r {
                warn!(%node, "garbage collection on node failed: {e}");
                failed.insert(node);
            }
        }
        let done: Vec<Vec<u8>> = due
            .into_iter()
            .filter(|(_, g)| {
                !remote_failed.contains(&g.chunk)
                    && !g.nodes.iter().any(|n| failed.contains(n))
                    && !cached
                        .iter()
                        .any(|(c, n)| *c == g.chunk && failed.contains(n))
            })
            .map(|(k, g)| {
                self.nodes.forget_chunk(g.chunk);
                k
            })
            .collect();
        let n = done.len();
        // A cache copy on a node that could not delete it stays recorded
        // (and its chunk stays garbage) until it can.
        let cached_done: Vec<(ChunkId, NodeId)> = cached
            .into_iter()
            .filter(|(_, n)| !failed.contains(n))
            .collect();
        self.cache.remove_many(&cached_done).await?;
        self.ns.ack_garbage(done).await?;
        debug!(chunks = n, "garbage collected");
        Ok(())
    }
}

/// Garbage collection as a [`crate::worker::Worker`].
struct GcWorker {
    meta: Arc<Meta>,
    every: Duration,
}

#[async_trait::async_trait]
impl crate::worker::Worker for GcWorker {
    fn name(&self) -> &'static str {
        "gc"
    }

    fn retry_after(&self) -> Duration {
        self.every
    }

    async fn pass(&mut self) -> Result<crate::worker::Pass> {
        let standby = !self.meta.election.is_leader();
        if !standby {
            self.meta.collect_garbage().await?;
        }
        Ok(crate::worker::Pass {
            state: if standby { "standby" } else { "idle" },
            progress: format!(
                "{} chunk(s) due for deletion",
                self.meta.pending_garbage.load(Ordering::Relaxed)
            ),
            next: self.every,
        })
    }
}

/// An erasure-coded extent a client commits must be laid out as its scheme
/// says: one distinct node and one checksum per shard, shards as long as
/// the scheme makes them, a stripe id.
fn check_stripe(e: &Extent, ec: &cairn_types::EcShards) -> Result<()> {
    let shards = ec.scheme.shards();
    let distinct: std::collections::HashSet<&NodeId> = e.nodes.iter().collect();
    let bad = if e.nodes.len() != shards || distinct.len() != shards {
        Some(format!(
            "names {} nodes ({} distinct) for {shards} shards",
            e.nodes.len(),
            distinct.len()
        ))
    } else if ec.crcs.len() != shards {
        Some(format!(
            "has {} shard checksums for {shards} shards",
            ec.crcs.len()
        ))
    } else if ec.shard_len != ec.scheme.shard_len(e.len) {
        Some(format!(
            "has shards of {} bytes where ec={} makes {}",
            ec.shard_len,
            ec.scheme,
            ec.scheme.shard_len(e.len)
        ))
    } else if e.chunk.stripe() != e.chunk {
        Some("is not a stripe id".to_string())
    } else {
        None
    };
    match bad {
        Some(why) => Err(Error::invalid(format!(
            "erasure-coded chunk {} {why}",
            e.chunk
        ))),
        None => Ok(()),
    }
}
