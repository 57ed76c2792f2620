use crate::cache::{ChunkCache, MetaCache};
use cairn_proto::{
    ClusterConfig, ClusterStatus, Credentials, MetaClient, MetaRequest, MetaResponse, OpenFile,
    PathCues, Pool,
};
use cairn_types::{
    AttrChanges, CairnPath, Cues, DirEntry, Error, Inode, InodeId, NewNode, Result, Version,
};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct ClientConfig {
    pub meta: Vec<String>,
    pub creds: Credentials,
    /// Chunk writes in flight per file.
    pub write_window: usize,
    /// Bytes a sequential reader fetches ahead of what it has handed out
    /// (per open stream).
    pub read_ahead: u64,
    /// This machine's host name, for `place=local` (the storage node on
    /// the writer's host gets the first copy) and for reading from the
    /// nearest copy.
    pub host: Option<String>,
    /// Byte budget of the in-memory chunk cache (0: none).
    pub cache_bytes: u64,
    /// An on-disk tier for the chunk cache: a directory (kept across
    /// restarts; every file is checked against its CRC32C when read) and
    /// its byte budget.
    pub disk_cache: Option<(std::path::PathBuf, u64)>,
    /// Files whose metadata is kept for the consistency cues (`lax`,
    /// `anyversion`, `bestversion`, `writeonce`).
    pub meta_cache_entries: usize,
}

impl ClientConfig {
    pub fn new(meta: Vec<String>, creds: Credentials) -> ClientConfig {
        ClientConfig {
            meta,
            creds,
            write_window: 3,
            read_ahead: 64 << 20,
            host: local_host_name(),
            cache_bytes: 64 << 20,
            disk_cache: None,
            meta_cache_entries: 10_000,
        }
    }
}

/// Options of one write.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Copies per chunk; meta's default when None.
    pub rep: Option<u8>,
    /// None: create or overwrite. Some(Version(0)): only create.
    /// Some(v): only replace version v.
    pub expected: Option<Version>,
    /// Chunk size; the cluster's when None.
    pub chunk_size: Option<u64>,
    pub mode: Option<u32>,
    /// Extended attributes of the new version; None keeps the old ones.
    pub xattrs: Option<cairn_types::Xattrs>,
    /// The writer's cues (from its path, say): placement and redundancy
    /// for a new file, over those it inherits. `rep`, if set, overrides
    /// their `rep`.
    pub cues: Cues,
}

impl PutOptions {
    /// The cues this write asks for.
    pub(crate) fn request_cues(&self) -> Cues {
        let mut c = self.cues.clone();
        if self.rep.is_some() {
            c.rep = self.rep;
            c.ec = None;
        }
        c
    }
}

/// The machine's host name (`CAIRN_HOST` overrides it), as storage nodes
/// report theirs.
pub fn local_host_name() -> Option<String> {
    if let Ok(h) = std::env::var("CAIRN_HOST") {
        return Some(h).filter(|h| !h.is_empty());
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

pub(crate) struct Inner {
    pub meta: MetaClient,
    pub storage: Pool,
    pub config: ClusterConfig,
    pub write_window: usize,
    pub read_ahead: u64,
    pub host: Option<String>,
    /// Random, for meta's per-client metadata leases.
    pub id: u64,
    pub chunks: ChunkCache,
    pub files: MetaCache,
    /// Directories whose `inline=` limit meta reported when it refused to
    /// keep a file inline, with when: writes there skip the attempt for a
    /// while (see [`crate::write`]).
    pub inline_limits:
        std::sync::Mutex<std::collections::HashMap<CairnPath, (u32, std::time::Instant)>>,
    /// Byte budget of shard writes left running after their stripe's
    /// write was acknowledged (see [`Client::settle`]).
    pub stragglers: Arc<tokio::sync::Semaphore>,
}

/// A handle on a cluster; cheap to clone, safe to share across tasks.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        let meta = MetaClient::new(cfg.meta.clone(), cfg.creds.clone());
        let config = match meta.call(MetaRequest::Config).await? {
            MetaResponse::Config(c) => c,
            other => return Err(unexpected(other)),
        };
        let mut storage = Pool::new(cfg.creds);
        storage.connect_timeout = Duration::from_secs(3);
        Ok(Client {
            inner: Arc::new(Inner {
                meta,
                storage,
                config,
                write_window: cfg.write_window.max(1),
                read_ahead: cfg.read_ahead.max(1 << 20),
                host: cfg.host,
                id: fastrand::u64(..),
                chunks: match &cfg.disk_cache {
                    Some((dir, budget)) => ChunkCache::with_disk(cfg.cache_bytes, dir, *budget)
                        .map_err(|e| {
                            Error::from(e)
                                .context(format!("chunk cache directory {}", dir.display()))
                        })?,
                    None => ChunkCache::new(cfg.cache_bytes),
                },
                files: MetaCache::new(cfg.meta_cache_entries),
                inline_limits: Default::default(),
                stragglers: Arc::new(tokio::sync::Semaphore::new(
                    crate::write::STRAGGLER_BUDGET as usize,
                )),
            }),
        })
    }

    pub fn cluster_config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// Send a request that changes `paths`: their cached metadata is
    /// dropped before it is sent and again once it is answered, so an open
    /// that raced the change cannot leave the old version cached.
    pub(crate) async fn change(
        &self,
        paths: &[&CairnPath],
        req: MetaRequest,
    ) -> Result<MetaResponse> {
        for p in paths {
            self.inner.files.invalidate(p);
        }
        let r = self.meta(req).await;
        for p in paths {
            self.inner.files.invalidate(p);
        }
        if let Ok(MetaResponse::Inode(i)) = &r {
            if i.nlink > 1 {
                // Its other names are cached under other paths.
                self.inner.files.invalidate_inode(i.id);
            }
        }
        r
    }

    /// Ask meta, as this client (meta's leases are per client).
    pub(crate) async fn meta(&self, req: MetaRequest) -> Result<MetaResponse> {
        // A change carries an id, so that meta applies it once however
        // often it is sent (MetaClient re-sends after a lost answer).
        let req = if req.is_namespace_change() {
            MetaRequest::Once {
                id: fastrand::u128(..),
                req: Box::new(req),
            }
        } else {
            req
        };
        let req = MetaRequest::As {
            client: self.inner.id,
            req: Box::new(req),
        };
        self.inner.meta.call(req).await
    }

    pub async fn stat(&self, path: &CairnPath) -> Result<Inode> {
        match self.meta(MetaRequest::Stat { path: path.clone() }).await? {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// Inode, chunk locations and read capabilities of a file.
    pub async fn locate(&self, path: &CairnPath) -> Result<OpenFile> {
        let req = MetaRequest::Open {
            path: path.clone(),
            host: self.inner.host.clone(),
            known: None,
        };
        match self.meta(req).await? {
            MetaResponse::Open(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Every readable version of the file at `path`: the current one
    /// first, then the older ones its `versions=` cue kept, newest first.
    pub async fn versions(&self, path: &CairnPath) -> Result<Vec<Inode>> {
        match self
            .meta(MetaRequest::Versions { path: path.clone() })
            .await?
        {
            MetaResponse::Versions(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Inode, chunk locations and read capabilities of version `version`
    /// of a file (the current one, or one its `versions=` cue kept).
    pub async fn locate_version(
        &self,
        path: &CairnPath,
        version: cairn_types::Version,
    ) -> Result<OpenFile> {
        let req = MetaRequest::OpenVersion {
            path: path.clone(),
            version,
            host: self.inner.host.clone(),
        };
        match self.meta(req).await? {
            MetaResponse::Open(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// One page of a directory listing, in name order, after `start_after`.
    pub async fn list_page(
        &self,
        path: &CairnPath,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<DirEntry>> {
        match self
            .meta(MetaRequest::List {
                path: path.clone(),
                start_after,
                limit,
            })
            .await?
        {
            MetaResponse::Entries(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Every entry of a directory, in name order, fetched a page at a time.
    pub async fn list_all(&self, path: &CairnPath) -> Result<Vec<DirEntry>> {
        let mut out: Vec<DirEntry> = Vec::new();
        loop {
            let after = out.last().map(|e| e.name.clone());
            let page = self.list_page(path, after, 1000).await?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }

    pub async fn mkdir(&self, path: &CairnPath, parents: bool) -> Result<Inode> {
        match self
            .meta(MetaRequest::Mkdir {
                path: path.clone(),
                parents,
            })
            .await?
        {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// POSIX `unlink` (`dir` false) or `rmdir` (`dir` true) in one
    /// request: the kind is checked by meta as it removes.
    pub async fn unlink(&self, path: &CairnPath, dir: bool) -> Result<()> {
        let req = MetaRequest::Unlink {
            path: path.clone(),
            dir,
        };
        match self.change(&[path], req).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn remove(&self, path: &CairnPath, recursive: bool) -> Result<()> {
        match self
            .change(
                &[path],
                MetaRequest::Remove {
                    path: path.clone(),
                    recursive,
                },
            )
            .await?
        {
            MetaResponse::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn rename(&self, src: &CairnPath, dst: &CairnPath) -> Result<()> {
        match self
            .change(
                &[src, dst],
                MetaRequest::Rename {
                    src: src.clone(),
                    dst: dst.clone(),
                },
            )
            .await?
        {
            MetaResponse::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// The cues of `path`: its own, inherited, effective.
    pub async fn cues(&self, path: &CairnPath) -> Result<PathCues> {
        match self
            .meta(MetaRequest::GetCues { path: path.clone() })
            .await?
        {
            MetaResponse::Cues(c) => Ok(c),
            other => Err(unexpected(other)),
        }
    }

    /// Merge `cues` over `path`'s own (or replace them, `replace`; empty
    /// `cues` with `replace` clears them).
    pub async fn set_cues(&self, path: &CairnPath, cues: &Cues, replace: bool) -> Result<Inode> {
        match self
            .change(
                &[path],
                MetaRequest::SetCues {
                    path: path.clone(),
                    cues: cues.clone(),
                    replace,
                },
            )
            .await?
        {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// Create an empty file, a directory or a symlink with `mode` and owner,
    /// atomically; `AlreadyExists` if `path` exists.
    pub async fn make_node(
        &self,
        path: &CairnPath,
        node: NewNode,
        mode: u32,
        owner: (Option<u32>, Option<u32>),
    ) -> Result<Inode> {
        let req = MetaRequest::MakeNode {
            path: path.clone(),
            node,
            mode,
            uid: owner.0,
            gid: owner.1,
        };
        match self.change(&[path], req).await? {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// Bytes in the chunk cache: in memory, and on disk.
    pub fn cached_bytes(&self) -> (u64, u64) {
        (self.inner.chunks.bytes(), self.inner.chunks.disk_bytes())
    }

    /// Change attributes of `path` (of inode `id` only, when given) in one
    /// transaction; the content and its version stay.
    pub async fn set_attr(
        &self,
        path: &CairnPath,
        id: Option<InodeId>,
        changes: AttrChanges,
    ) -> Result<Inode> {
        let req = MetaRequest::SetAttr {
            path: path.clone(),
            id,
            changes,
        };
        match self.change(&[path], req).await? {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// Give the file or symlink `src` the further name `dst` (a hard
    /// link): both name one file, changed through either. Returns the
    /// file's inode.
    pub async fn link(&self, src: &CairnPath, dst: &CairnPath) -> Result<Inode> {
        let req = MetaRequest::Link {
            src: src.clone(),
            dst: dst.clone(),
        };
        match self.change(&[src, dst], req).await? {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// [`Client::rename`] that fails with `AlreadyExists` instead of
    /// replacing an existing `dst`, atomically.
    pub async fn rename_noreplace(&self, src: &CairnPath, dst: &CairnPath) -> Result<()> {
        let req = MetaRequest::RenameNoReplace {
            src: src.clone(),
            dst: dst.clone(),
        };
        match self.change(&[src, dst], req).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Swap `a` and `b` (both must exist), atomically: each name then
    /// leads to what the other did (`RENAME_EXCHANGE`).
    pub async fn rename_exchange(&self, a: &CairnPath, b: &CairnPath) -> Result<()> {
        let req = MetaRequest::RenameExchange {
            a: a.clone(),
            b: b.clone(),
        };
        match self.change(&[a, b], req).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Move every chunk off `node` (or stop doing so).
    pub async fn drain(&self, node: cairn_types::NodeId, undo: bool) -> Result<()> {
        match self.meta(MetaRequest::Drain { node, undo }).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        match self.meta(MetaRequest::ClusterStatus).await? {
            MetaResponse::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Bytes per tier: on storage nodes, and in each remote store.
    pub async fn tier_status(&self) -> Result<Vec<cairn_proto::TierUsage>> {
        match self.meta(MetaRequest::TierStatus).await? {
            MetaResponse::Tiers(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Bring the offloaded chunks of `path` (a directory: everything
    /// below) back onto storage nodes: (files, chunks, bytes) recalled.
    pub async fn tier_recall(&self, path: &cairn_types::CairnPath) -> Result<(u64, u64, u64)> {
        let req = MetaRequest::TierRecall { path: path.clone() };
        match self.meta(req).await? {
            MetaResponse::Recalled {
                files,
                chunks,
                bytes,
            } => Ok((files, chunks, bytes)),
            other => Err(unexpected(other)),
        }
    }

    /// Compare remote store `tier` with the namespace.
    pub async fn tier_verify(&self, tier: &str) -> Result<cairn_proto::TierReport> {
        let req = MetaRequest::TierVerify {
            tier: tier.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::TierVerify(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Put `node` in `group` (`add`) or take it out.
    pub async fn set_group(&self, node: cairn_types::NodeId, group: &str, add: bool) -> Result<()> {
        let req = MetaRequest::SetGroup {
            node,
            group: group.to_string(),
            add,
        };
        match self.meta(req).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Admin: make the client identity `name` with `rights`. Returns it
    /// and the credentials its clients load (meta hands the key out once).
    pub async fn identity_create(
        &self,
        name: &str,
        rights: cairn_proto::Rights,
    ) -> Result<(cairn_proto::IdentityInfo, Credentials)> {
        let req = MetaRequest::IdentityCreate {
            name: name.to_string(),
            rights,
        };
        match self.meta(req).await? {
            MetaResponse::Identity { info, key, ca } => {
                let creds = Credentials::Identity {
                    name: info.name.clone(),
                    id: info.id,
                    key,
                    ca: Some(ca.into()),
                };
                Ok((info, creds))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Admin: every client identity.
    pub async fn identities(&self) -> Result<Vec<cairn_proto::IdentityInfo>> {
        match self.meta(MetaRequest::IdentityList).await? {
            MetaResponse::Identities(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Admin: remove the client identity `name`.
    pub async fn identity_revoke(&self, name: &str) -> Result<()> {
        let req = MetaRequest::IdentityRevoke {
            name: name.to_string(),
        };
        match self.meta(req).await? {
            MetaResponse::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn groups(&self) -> Result<Vec<cairn_proto::GroupInfo>> {
        match self.meta(MetaRequest::Groups).await? {
            MetaResponse::Groups(g) => Ok(g),
            other => Err(unexpected(other)),
        }
    }

    /// Start spreading `paths` (directories recursively) to every node of
    /// `group` as cache copies, or with `evict` drop those copies.
    pub async fn prefetch(
        &self,
        paths: &[CairnPath],
        group: &str,
        evict: bool,
    ) -> Result<Vec<cairn_proto::PrefetchJobStatus>> {
        let req = MetaRequest::Prefetch {
            paths: paths.to_vec(),
            group: group.to_string(),
            evict,
        };
        match self.meta(req).await? {
            MetaResponse::Prefetch(j) => Ok(j),
            other => Err(unexpected(other)),
        }
    }

    /// Prefetch jobs (these ids; every one when empty).
    pub async fn prefetch_status(
        &self,
        jobs: &[u64],
    ) -> Result<Vec<cairn_proto::PrefetchJobStatus>> {
        let req = MetaRequest::PrefetchStatus {
            jobs: jobs.to_vec(),
        };
        match self.meta(req).await? {
            MetaResponse::Prefetch(j) => Ok(j),
            other => Err(unexpected(other)),
        }
    }

    /// Wait until the jobs `ids` are done (or failed), calling `progress`
    /// with their status every poll; returns their last status.
    pub async fn prefetch_wait(
        &self,
        ids: &[u64],
        mut progress: impl FnMut(&[cairn_proto::PrefetchJobStatus]),
    ) -> Result<Vec<cairn_proto::PrefetchJobStatus>> {
        loop {
            let st = self.prefetch_status(ids).await?;
            progress(&st);
            // A job gone from the list was retired (its files replaced).
            if st.iter().all(|j| j.state != "running") {
                return Ok(st);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

pub(crate) fn unexpected(r: MetaResponse) -> Error {
    Error::internal(format!("meta sent an unexpected answer: {r:?}"))
}
