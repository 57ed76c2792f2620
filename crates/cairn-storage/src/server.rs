//! The storage node process: serves chunk reads and writes over the wire,
//! forwards writes down the replication chain, and keeps meta informed.

use crate::chunk_store::{ChunkStore, ChunkWriter, StoreOptions, MAX_CHUNK_LEN};
use cairn_proto::{
    Capability, ChunkAlloc, Conn, Credentials, GetChunkHeader, GetChunkResult, Listener,
    MetaClient, MetaRequest, MetaResponse, NodeAddr, NodeStats, Peer, Pool, PutOutcome, Role,
    StorageRequest, DATA_FRAME,
};
use cairn_types::{BlockCrcs, ChunkId, EcShards, Error, Extent, NodeId, Result, BLOCK_SIZE};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How long one hop waits for the rest of the chain to answer a write.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// Address given to meta and peers; defaults to the bound address.
    pub advertise: Option<String>,
    pub meta: Vec<String>,
    pub zone: String,
    /// The machine this node runs on, for `place=local`.
    pub host: String,
    pub heartbeat: Duration,
    /// How often sealed segments with mostly deleted data are rewritten.
    pub compact_every: Duration,
    /// Bytes per second the scrubber re-reads (0 = no scrubbing).
    pub scrub_rate: u64,
    /// Pause between two full scrubbing passes.
    pub scrub_pause: Duration,
    pub store: StoreOptions,
    /// Bytes per second of chunk data the node takes in (writes, copies)
    /// and sends out (reads), each way; 0: unlimited. For experiments that
    /// emulate slower nodes or links (`cairn bench --schemes --throttle`).
    pub throttle: u64,
    /// Groups the node starts in (`--group`), for prefetch jobs.
    pub groups: Vec<String>,
    /// Most bytes of cache copies kept (`--tier-cache`), read-through and
    /// offloaded chunks' copies among them; None: a fifth of the file
    /// system.
    pub cache_capacity: Option<u64>,
    /// Remote stores (`--tier`), for offloads and reads through.
    pub tiers: cairn_tier::Tiers,
}

impl StorageConfig {
    pub fn new(data_dir: impl Into<PathBuf>, meta: Vec<String>) -> StorageConfig {
        StorageConfig {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:0".into(),
            advertise: None,
            meta,
            zone: "default".into(),
            host: hostname(),
            heartbeat: Duration::from_secs(1),
            compact_every: Duration::from_secs(60),
            scrub_rate: 32 << 20,
            scrub_pause: Duration::from_secs(30),
            store: StoreOptions::default(),
            throttle: 0,
            groups: Vec::new(),
            cache_capacity: None,
            tiers: Default::default(),
        }
    }
}

struct Node {
    id: NodeId,
    store: Arc<ChunkStore>,
    secret: cairn_proto::ClusterSecret,
    peers: Pool,
    corrupt: Mutex<BTreeSet<ChunkId>>,
    /// Space the node keeps free on its file system.
    reserve: u64,
    /// A disk failure seen by a write (EIO, fsync failure): the node stops
    /// taking new chunks until restarted.
    problem: Mutex<Option<String>>,
    scrubbed: std::sync::atomic::AtomicU64,
    /// Limits on chunk bytes in and out (`StorageConfig::throttle`).
    rate_in: cairn_proto::Throttle,
    rate_out: cairn_proto::Throttle,
    host: String,
    groups: Vec<String>,
    /// Which chunks are cache copies, under the cache budget.
    cache: Mutex<crate::cache::CacheIndex>,
    /// Cache copies to tell meta of: made by reads through, dropped.
    report: Mutex<CacheReport>,
    /// One read through at a time per chunk: later readers wait for it.
    fetching: Mutex<std::collections::HashMap<ChunkId, Arc<tokio::sync::Mutex<()>>>>,
    served: std::sync::atomic::AtomicU64,
    tiers: cairn_tier::Tiers,
    /// This node's byte counters in the process's metrics.
    written: cairn_metrics::Counter,
    read: cairn_metrics::Counter,
}

impl Node {
    /// `n` chunk bytes come in (a write, a copy from a peer or a remote
    /// store): counted, and throttled to the node's rate.
    async fn take_in(&self, n: u64) {
        self.written.inc_by(n);
        self.rate_in.take(n).await;
    }

    /// `n` chunk bytes go out to a reader or a peer.
    async fn take_out(&self, n: u64) {
        self.read.inc_by(n);
        self.rate_out.take(n).await;
    }
}

/// Cache copies made (with their lengths) and dropped, not yet told to meta.
type CacheReport = (Vec<(ChunkId, u64)>, Vec<ChunkId>);

/// This machine's host name, or `localhost` when it has none.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).trim().to_string()
    } else {
        String::new()
    };
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// A running storage node. Dropping it does not stop it; call
/// [`StorageHandle::shutdown`].
pub struct StorageHandle {
    pub id: NodeId,
    pub addr: String,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StorageHandle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Load the node id kept in the data directory, or make one.
fn load_node_id(dir: &Path) -> Result<NodeId> {
    let path = dir.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|e: Error| e.context(path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).expect("OS random source");
            let id = NodeId(u64::from_be_bytes(b));
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{id}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

/// Open the store, bind, register with meta, and serve until shut down.
pub async fn start(cfg: StorageConfig, creds: Credentials) -> Result<StorageHandle> {
    let secret = creds.cluster().cloned().ok_or_else(|| {
        Error::invalid("a storage node needs the cluster secret, not a client key")
    })?;
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| Error::from(e).context(format!("creating {}", cfg.data_dir.display())))?;
    let id = load_node_id(&cfg.data_dir)?;
    let dir = cfg.data_dir.join("chunks");
    let opts = cfg.store.clone();
    let store = tokio::task::spawn_blocking(move || ChunkStore::open(&dir, opts))
        .await
        .map_err(|e| Error::internal(e.to_string()))??;
    let cache = {
        let capacity = cfg.cache_capacity.unwrap_or(store.stats().fs_total / 5);
        let dir = cfg.data_dir.clone();
        let index = crate::cache::CacheIndex::load(&dir, capacity, |c| store.info(c).is_some());
        Mutex::new(index)
    };
    let listener = Listener::bind(&cfg.listen, creds.clone()).await?;
    let addr = cfg
        .advertise
        .clone()
        .unwrap_or_else(|| listener.local_addr().to_string());
    let metrics = cairn_metrics::global();
    let label = cairn_metrics::Node {
        node: cairn_metrics::NodeId(id.0),
    };
    let node = Arc::new(Node {
        id,
        store: Arc::new(store),
        secret,
        peers: Pool::new(creds.clone()),
        corrupt: Mutex::new(BTreeSet::new()),
        reserve: cfg.store.reserve_free,
        problem: Mutex::new(None),
        scrubbed: Default::default(),
        rate_in: cairn_proto::Throttle::new(cfg.throttle),
        rate_out: cairn_proto::Throttle::new(cfg.throttle),
        host: cfg.host.clone(),
        groups: cfg.groups.clone(),
        cache,
        report: Default::default(),
        fetching: Default::default(),
        served: Default::default(),
        tiers: cfg.tiers.clone(),
        written: metrics.storage_written.get_or_create(&label).clone(),
        read: metrics.storage_read.get_or_create(&label).clone(),
    });
    // The chunk store's fill, read at each scrape while the node runs.
    let weak = Arc::downgrade(&node);
    metrics.refresh(move |m| {
        let Some(node) = weak.upgrade() else {
            m.forget_node(id.0);
            return false;
        };
        let s = node_stats(&node);
        let store = node.store.stats();
        let set = |f: &cairn_metrics::NodeGauges, v: u64| {
            cairn_metrics::Metrics::set(&f.get_or_create(&label), v)
        };
        set(&m.storage_segments, store.segments);
        set(
            &m.storage_reclaimable,
            store.disk_bytes.saturating_sub(store.live_bytes),
        );
        set(&m.storage_chunks, s.chunks);
        set(&m.storage_used, s.used);
        set(&m.storage_free, s.free);
        set(&m.storage_cache, s.cache_bytes);
        set(&m.storage_corrupt, s.corrupt_chunks.len() as u64);
        cairn_metrics::Metrics::catch_up(
            &m.storage_scrubbed.get_or_create(&label),
            s.scrubbed_bytes,
        );
        true
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn({
            let node = node.clone();
            listener.serve(stop_rx.clone(), move |conn, stop| {
                serve_conn(node.clone(), conn, stop)
            })
        }),
        tokio::spawn(compaction_worker(
            node.clone(),
            cfg.compact_every,
            stop_rx.clone(),
        )),
        tokio::spawn(scrub_worker(
            node.clone(),
            cfg.scrub_rate,
            cfg.scrub_pause,
            stop_rx.clone(),
        )),
    ];
    for m in &cfg.meta {
        let client = MetaClient::new(vec![m.clone()], creds.clone());
        let (node, addr, zone, stop) = (
            node.clone(),
            addr.clone(),
            cfg.zone.clone(),
            stop_rx.clone(),
        );
        tasks.push(tokio::spawn(heartbeat_worker(
            node,
            client,
            addr,
            zone,
            cfg.heartbeat,
            stop,
        )));
    }
    info!(node = %id, %addr, data = %cfg.data_dir.display(), "storage node serving");
    Ok(StorageHandle {
        id,
        addr,
        stop,
        tasks,
    })
}

async fn serve_conn(node: Arc<Node>, mut conn: Conn, mut stop: watch::Receiver<bool>) {
    loop {
        let req: StorageRequest = tokio::select! {
            _ = stop.changed() => return,
            r = conn.recv() => match r {
                Ok(r) => r,
                Err(e) => {
                    if e.kind != cairn_types::ErrorKind::Unavailable {
                        debug!(peer = %conn.peer, "bad request: {e}");
                        let _ = conn.send(&Err::<(), Error>(e)).await;
                    }
                    return;
                }
            },
        };
        let (op, started) = (req.op_name(), std::time::Instant::now());
        let keep = match req {
            StorageRequest::PutChunk {
                chunk,
                len,
                crcs,
                cap,
                chain,
            } => handle_put(&node, &mut conn, chunk, len, crcs, cap, chain).await,
            StorageRequest::GetChunk {
                chunk,
                offset,
                len,
                cap,
            } => handle_get(&node, &mut conn, chunk, offset, len, cap).await,
            StorageRequest::DeleteChunks { chunks } => {
                let r = if let Err(e) = node_only(conn.role, "deleting chunks") {
                    Err(e)
                } else {
                    delete_chunks(&node, chunks).await
                };
                conn.send(&r).await
            }
            StorageRequest::Replicate {
                chunk,
                len,
                crc,
                source,
                cap,
            } => {
                let r = if let Err(e) = node_only(conn.role, "replicating chunks") {
                    Err(e)
                } else {
                    replicate(&node, chunk, len, crc, &source, cap).await
                };
                conn.send(&r).await
            }
            StorageRequest::ListChunks => {
                let r = if let Err(e) = node_only(conn.role, "listing chunks") {
                    Err(e)
                } else {
                    Ok(node.store.list())
                };
                conn.send(&r).await
            }
            StorageRequest::Ping => conn.send(&Ok::<(), Error>(())).await,
            StorageRequest::CacheFetch {
                chunk,
                len,
                crc,
                sources,
                cap,
            } => {
                let r = if let Err(e) = node_only(conn.role, "prefetching chunks") {
                    Err(e)
                } else {
                    let from = Sources {
                        peers: &sources,
                        remote: None,
                    };
                    cache_fetch(&node, chunk, len, crc, from, cap).await
                };
                conn.send(&r).await
            }
            StorageRequest::GetChunkVia {
                chunk,
                offset,
                len,
                cap,
                chunk_len,
                crc,
                sources,
                remote,
            } => {
                let from = Sources {
                    peers: &sources,
                    remote: remote.as_deref(),
                };
                let peer = conn.peer_is();
                match read_through(&node, chunk, chunk_len, crc, from, &cap, &peer).await {
                    Ok(()) => handle_get(&node, &mut conn, chunk, offset, len, cap).await,
                    Err(e) => conn.send(&GetChunkResult::Err(e)).await,
                }
            }
            StorageRequest::Offload {
                chunk,
                len,
                crc,
                tier,
            } => {
                let r = if let Err(e) = node_only(conn.role, "offloading chunks") {
                    Err(e)
                } else {
                    offload(&node, chunk, len, crc, &tier).await
                };
                conn.send(&r).await
            }
            StorageRequest::Recall {
                chunk,
                len,
                crc,
                tier,
            } => {
                let r = if let Err(e) = node_only(conn.role, "recalling chunks") {
                    Err(e)
                } else {
                    recall(&node, chunk, len, crc, &tier).await
                };
                conn.send(&r).await
            }
            StorageRequest::MakeCache { chunks } => {
                let r = if let Err(e) = node_only(conn.role, "marking cache copies") {
                    Err(e)
                } else {
                    make_cache(&node, chunks).await
                };
                conn.send(&r).await
            }
            StorageRequest::RebuildShard {
                chunk,
                index,
                scheme,
                shard_len,
                crcs,
                sources,
                cap,
            } => {
                let r = if let Err(e) = node_only(conn.role, "rebuilding shards") {
                    Err(e)
                } else {
                    let stripe = Stripe {
                        chunk,
                        scheme,
                        shard_len,
                        crcs,
                    };
                    rebuild_shard(&node, &stripe, index as usize, &sources, cap).await
                };
                conn.send(&r).await
            }
            StorageRequest::Transcode {
                from,
                sources,
                cap,
                to,
            } => {
                let r = if let Err(e) = node_only(conn.role, "converting chunks") {
                    Err(e)
                } else {
                    transcode(&node, &from, &sources, cap, &to).await
                };
                conn.send(&r).await
            }
            StorageRequest::OffloadStripe {
                from,
                sources,
                cap,
                tier,
            } => {
                let r = if let Err(e) = node_only(conn.role, "offloading chunks") {
                    Err(e)
                } else {
                    offload_stripe(&node, &from, &sources, cap, &tier).await
                };
                conn.send(&r).await
            }
            StorageRequest::DropCache { chunks } => {
                let r = if let Err(e) = node_only(conn.role, "dropping cache copies") {
                    Err(e)
                } else {
                    drop_cache(&node, chunks, false).await
                };
                conn.send(&r).await
            }
        };
        cairn_metrics::global().storage_request(node.id.0, op, started.elapsed());
        if let Err(e) = keep {
            debug!(peer = %conn.peer, "connection closed: {e}");
            return;
        }
    }
}

/// Requests only meta and peer nodes may send (the node role).
fn node_only(role: Role, what: &str) -> Result<()> {
    if role == Role::Node {
        Ok(())
    } else {
        Err(Error::denied(format!("{what} needs the node role")))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("I/O task failed: {e}")))?
}

async fn delete_chunks(node: &Arc<Node>, chunks: Vec<ChunkId>) -> Result<()> {
    let store = node.store.clone();
    let deleted = chunks.clone();
    blocking(move || {
        for c in chunks {
            store.delete(c)?;
        }
        Ok(())
    })
    .await?;
    // A deleted copy is no longer a corrupt one, nor a cache copy.
    let mut cached = false;
    {
        let mut corrupt = node.corrupt.lock().unwrap();
        let mut cache = node.cache.lock().unwrap();
        for c in deleted {
            corrupt.remove(&c);
            cached |= cache.remove(c);
        }
    }
    if cached {
        save_cache(node).await;
    }
    Ok(())
}

async fn save_cache(node: &Arc<Node>) {
    let node = node.clone();
    let r = blocking(move || node.cache.lock().unwrap().save()).await;
    if let Err(e) = r {
        warn!("could not save the cache-copy index: {e}");
    }
}

/// Delete cache copies (never a durable copy); with `report`, tell meta.
async fn drop_cache(node: &Arc<Node>, chunks: Vec<ChunkId>, report: bool) -> Result<()> {
    let gone: Vec<ChunkId> = {
        let mut cache = node.cache.lock().unwrap();
        let gone: Vec<ChunkId> = chunks.into_iter().filter(|c| cache.remove(*c)).collect();
        cache.evicting.extend(gone.iter().copied());
        gone
    };
    if gone.is_empty() {
        return Ok(());
    }
    let store = node.store.clone();
    let g = gone.clone();
    let r = blocking(move || {
        for c in g {
            store.delete(c)?;
        }
        Ok(())
    })
    .await;
    {
        let mut cache = node.cache.lock().unwrap();
        for c in &gone {
            cache.evicting.remove(c);
        }
    }
    r?;
    {
        let mut corrupt = node.corrupt.lock().unwrap();
        for c in &gone {
            corrupt.remove(c);
        }
    }
    if report {
        node.report.lock().unwrap().1.extend(gone);
    }
    save_cache(node).await;
    Ok(())
}

/// A cache copy found corrupt is dropped, not repaired: the durable
/// copies are elsewhere. Returns whether `chunk` was a cache copy.
async fn drop_if_cached(node: &Arc<Node>, chunk: ChunkId) -> bool {
    if !node.cache.lock().unwrap().contains(chunk) {
        return false;
    }
    if let Err(e) = drop_cache(node, vec![chunk], true).await {
        warn!(%chunk, "could not drop a corrupt cache copy: {e}");
    }
    true
}

/// Make a cache copy of `chunk` from the first of `sources` that serves
/// it, within the cache budget (evicting the least recently read cache
/// copies; a chunk larger than the budget, or a disk without room, is
/// NoSpace).
async fn cache_fetch(
    node: &Arc<Node>,
    chunk: ChunkId,
    len: u64,
    crc: u32,
    sources: Sources<'_>,
    cap: Capability,
) -> Result<()> {
    if node.store.info(chunk).is_some_and(|i| i.crc_summary == crc)
        && !node.corrupt.lock().unwrap().contains(&chunk)
    {
        node.cache.lock().unwrap().touch(chunk);
        return Ok(()); // durable here, or cached already
    }
    let victims = {
        let mut cache = node.cache.lock().unwrap();
        cache.reserve(len).ok_or_else(|| {
            Error::no_space(format!(
                "chunk {chunk} of {} does not fit this node's cache of {}",
                cairn_types::format_bytes(len),
                cairn_types::format_bytes(cache.capacity)
            ))
        })?
    };
    let r = fetch_reserved(node, chunk, len, crc, sources, cap, victims).await;
    {
        let mut cache = node.cache.lock().unwrap();
        cache.release(len);
        if r.is_ok() {
            cache.insert(chunk, len);
        }
    }
    if r.is_ok() {
        save_cache(node).await;
    }
    r
}

/// The fetch of [`cache_fetch`] once room is reserved: delete the victims
/// taken out of the index, then copy.
async fn fetch_reserved(
    node: &Arc<Node>,
    chunk: ChunkId,
    len: u64,
    crc: u32,
    sources: Sources<'_>,
    cap: Capability,
    victims: Vec<ChunkId>,
) -> Result<()> {
    if !victims.is_empty() {
        debug!(count = victims.len(), "evicting cache copies for room");
        let store = node.store.clone();
        let v = victims.clone();
        let r = blocking(move || {
            for c in v {
                store.delete(c)?;
            }
            Ok(())
        })
        .await;
        {
            let mut cache = node.cache.lock().unwrap();
            for c in &victims {
                cache.evicting.remove(c);
            }
        }
        r?;
        node.report.lock().unwrap().1.extend(victims);
    }
    let free = node_stats(node).free;
    if free < len {
        return Err(Error::no_space(format!(
            "{} free on this node, chunk {chunk} needs {}",
            cairn_types::format_bytes(free),
            cairn_types::format_bytes(len)
        )));
    }
    let mut last = Error::unavailable(format!("chunk {chunk}: no source to copy it from"));
    for src in sources.peers.iter().filter(|s| s.id != node.id) {
        match copy_from_peer(node, chunk, len, crc, src, cap.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    match sources.remote {
        Some(tier) => fetch_remote(node, chunk, len, crc, tier).await,
        None => Err(last),
    }
}

/// Where a copy may come from: peers first (cache copies of an offloaded
/// chunk, durable copies), then a remote store.
#[derive(Clone, Copy)]
struct Sources<'a> {
    peers: &'a [NodeAddr],
    remote: Option<&'a str>,
}

/// Fetch `chunk` from the remote store `tier` and store it here (the
/// caller says whether as a cache copy). The store is not trusted: the
/// object must have the chunk's length and block checksums whose summary
/// is meta's `crc`.
async fn fetch_remote(
    node: &Arc<Node>,
    chunk: ChunkId,
    len: u64,
    crc: u32,
    tier: &str,
) -> Result<()> {
    let store = node.tiers.get(tier)?.clone();
    let data = store.get(chunk).await?;
    node.take_in(data.len() as u64).await;
    let chunks = node.store.clone();
    blocking(move || {
        let crcs = BlockCrcs::compute(&data);
        if data.len() as u64 != len || crcs.summary() != crc {
            return Err(Error::corrupt(format!(
                "remote store {}: the object of chunk {chunk} ({} bytes) does not match \
                 meta's checksums for its {len} bytes: it was changed or damaged there",
                store.spec,
                data.len()
            )));
        }
        chunks.delete(chunk)?;
        local_step(&chunks, chunk, len, &crcs, None, &data, true).map(|_| ())
    })
    .await?;
    node.corrupt.lock().unwrap().remove(&chunk);
    Ok(())
}

/// Send this node's copy of `chunk` to the remote store `tier`: read
/// whole (every block checked), checked against meta's `crc`, then one
/// PUT. Sending again is harmless: the object's bytes are the same.
async fn offload(node: &Arc<Node>, chunk: ChunkId, len: u64, crc: u32, tier: &str) -> Result<()> {
    let remote = node.tiers.get(tier)?.clone();
    let store = node.store.clone();
    let data = blocking(move || {
        let info = store
            .info(chunk)
            .ok_or_else(|| Error::not_found(format!("chunk {chunk} is not on this node")))?;
        if info.crc_summary != crc || info.len != len {
            return Err(Error::corrupt(format!(
                "chunk {chunk} here does not match meta's record"
            )));
        }
        store.read(chunk, 0, len)
    })
    .await?;
    node.take_out(len).await;
    remote.put(chunk, bytes::Bytes::from(data)).await
}

/// A durable copy of `chunk` from the remote store `tier` (a cache copy
/// here becomes the durable one).
async fn recall(node: &Arc<Node>, chunk: ChunkId, len: u64, crc: u32, tier: &str) -> Result<()> {
    // In turn with reads through of the chunk (which would mark it a
    // cache copy again).
    let r = async {
        // A copy being evicted is waited out, then fetched anew.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (promoted, evicting) = {
                let mut cache = node.cache.lock().unwrap();
                let promoted = cache.remove(chunk);
                (promoted, cache.evicting.contains(&chunk))
            };
            if promoted {
                node.report.lock().unwrap().1.push(chunk);
                save_cache(node).await;
            }
            if !evicting {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::unavailable(format!(
                    "chunk {chunk}: its cache copy here is still being deleted"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if node.store.info(chunk).is_some_and(|i| i.crc_summary == crc)
            && !node.corrupt.lock().unwrap().contains(&chunk)
        {
            return Ok(());
        }
        fetch_remote(node, chunk, len, crc, tier).await
    };
    chunk_turn(node, chunk, r).await
}

/// Copies here of offloaded chunks become cache copies; beyond the cache
/// budget the least recently read are dropped (and meta told).
async fn make_cache(node: &Arc<Node>, chunks: Vec<(ChunkId, u64)>) -> Result<()> {
    let victims = {
        let mut cache = node.cache.lock().unwrap();
        for (c, len) in chunks {
            if node.store.contains(c) {
                cache.insert(c, len);
            }
        }
        cache.victims(0).unwrap_or_default()
    };
    save_cache(node).await;
    drop_cache(node, victims, true).await
}

/// Before serving a read through this node: make sure a copy is here,
/// fetching it once for every reader waiting on it.
async fn read_through(
    node: &Arc<Node>,
    chunk: ChunkId,
    len: u64,
    crc: u32,
    sources: Sources<'_>,
    cap: &Capability,
    peer: &Peer,
) -> Result<()> {
    if node.store.info(chunk).is_some() {
        return Ok(());
    }
    cap.check(&node.secret, chunk, false, peer)?;
    chunk_turn(node, chunk, async {
        if node.store.info(chunk).is_some() {
            return Ok(());
        }
        let r = cache_fetch(node, chunk, len, crc, sources, cap.clone()).await;
        if r.is_ok() {
            node.report.lock().unwrap().0.push((chunk, len));
        }
        r
    })
    .await
}

/// Run `f` in `chunk`'s turn: reads through and recalls of one chunk run
/// one at a time, and later ones find what the earlier left.
async fn chunk_turn<T>(node: &Arc<Node>, chunk: ChunkId, f: impl Future<Output = T>) -> T {
    let lock = node
        .fetching
        .lock()
        .unwrap()
        .entry(chunk)
        .or_default()
        .clone();
    let _one = lock.lock().await;
    let r = f.await;
    node.fetching.lock().unwrap().remove(&chunk);
    r
}

/// Copy a chunk from a peer (repair, drain, rebalance) as a durable copy.
/// A cache copy already here becomes the durable one (and meta hears it is
/// no cache copy any more).
async fn replicate(
    node: &Arc<Node>,
    chunk: ChunkId,
    len: u64,
    crc: u32,
    source: &NodeAddr,
    cap: Capability,
) -> Result<()> {
    let promoted = {
        let mut cache = node.cache.lock().unwrap();
        cache.remove(chunk)
    };
    if promoted {
        node.report.lock().unwrap().1.push(chunk);
        save_cache(node).await;
    }
    if node.store.info(chunk).is_some_and(|i| i.crc_summary == crc)
        && !node.corrupt.lock().unwrap().contains(&chunk)
    {
        return Ok(()); // already here, intact as far as we know
    }
    copy_from_peer(node, chunk, len, crc, source, cap).await
}

/// An erasure-coded chunk as meta records it, for a rebuild.
struct Stripe {
    chunk: ChunkId,
    scheme: cairn_types::EcScheme,
    shard_len: u64,
    crcs: Vec<u32>,
}

/// Rebuild shard `index` of `stripe` from K other shards and store it
/// here. Shards are fetched whole, K at a time in parallel, each checked
/// against its own summary; a source that fails is replaced by the next.
/// The result is checked against meta's summary of the shard before it is
/// kept, so a wrong source shard cannot plant a wrong rebuild.
async fn rebuild_shard(
    node: &Arc<Node>,
    stripe: &Stripe,
    index: usize,
    sources: &[(u8, NodeAddr)],
    cap: Capability,
) -> Result<()> {
    let scheme = stripe.scheme;
    let (n, k) = (scheme.shards(), scheme.k as usize);
    if index >= n || stripe.crcs.len() != n || stripe.shard_len > MAX_CHUNK_LEN {
        return Err(Error::invalid(format!(
            "rebuild of shard {index} of ec={scheme} with {} checksums, shards of {} bytes",
            stripe.crcs.len(),
            stripe.shard_len
        )));
    }
    let target = stripe.chunk.shard(index);
    let want = stripe.crcs[index];
    if node
        .store
        .info(target)
        .is_some_and(|i| i.crc_summary == want)
        && !node.corrupt.lock().unwrap().contains(&target)
    {
        return Ok(());
    }
    let mut shards = gather_shards(node, stripe, Some(index), sources, cap)
        .await
        .map_err(|e| {
            e.context(format!(
                "rebuilding shard {index} of chunk {}",
                stripe.chunk
            ))
        })?;
    let shard_len = stripe.shard_len;
    let data = blocking(move || {
        scheme.fill(&mut shards, index >= k)?;
        shards[index]
            .take()
            .ok_or_else(|| Error::internal("the rebuild left the shard empty"))
    })
    .await?;
    let crcs = BlockCrcs::compute(&data);
    if crcs.summary() != want {
        return Err(Error::corrupt(format!(
            "shard {index} of chunk {} rebuilt from its peers does not match meta's checksum",
            stripe.chunk
        )));
    }
    let store = node.store.clone();
    blocking(move || {
        store.delete(target)?;
        local_step(&store, target, shard_len, &crcs, None, &data, true).map(|_| ())
    })
    .await?;
    node.corrupt.lock().unwrap().remove(&target);
    Ok(())
}

/// K shards of `stripe` (index = shard number; the others None), fetched
/// whole from `sources` (shard number, node), K at a time in parallel,
/// each checked against its own summary; a source that fails is replaced
/// by the next. Data shards first: with all of them no decoding is needed.
/// `skip`: a shard not to fetch (the one being rebuilt).
async fn gather_shards(
    node: &Arc<Node>,
    stripe: &Stripe,
    skip: Option<usize>,
    sources: &[(u8, NodeAddr)],
    cap: Capability,
) -> Result<Vec<Option<Vec<u8>>>> {
    let scheme = stripe.scheme;
    let (n, k) = (scheme.shards(), scheme.k as usize);
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut todo: Vec<&(u8, NodeAddr)> = sources
        .iter()
        .filter(|(i, _)| (*i as usize) < n && Some(*i as usize) != skip)
        .collect();
    // Data shards first: with all of them no decoding is needed for a
    // parity shard's inputs, and they are what reads hit anyway.
    todo.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    let mut have = 0;
    while have < k && !todo.is_empty() {
        let batch: Vec<&(u8, NodeAddr)> = todo.drain(..(k - have).min(todo.len())).collect();
        let mut set = tokio::task::JoinSet::new();
        for (i, addr) in batch.iter().map(|(i, a)| (*i as usize, a.clone())) {
            let (node, cap) = (node.clone(), cap.clone());
            let (chunk, len, crc) = (stripe.chunk.shard(i), stripe.shard_len, stripe.crcs[i]);
            set.spawn(async move {
                let got = fetch_whole(&node, chunk, len, crc, &addr, cap).await;
                (i, addr, got)
            });
        }
        while let Some(r) = set.join_next().await {
            let (i, addr, got) = r.map_err(|e| Error::internal(format!("fetch task: {e}")))?;
            match got {
                Ok(data) => {
                    shards[i] = Some(data);
                    have += 1;
                }
                Err(e) => failures.push(format!("shard {i} on {}: {e}", addr.addr)),
            }
        }
    }
    if have < k {
        return Err(Error::unavailable(format!(
            "ec={scheme}: {have} of the {k} shards needed could be read ({})",
            failures.join("; ")
        )));
    }
    Ok(shards)
}

/// A whole chunk of `len` bytes from `source`, every block checked and
/// the whole against `crc`.
async fn fetch_whole(
    node: &Arc<Node>,
    chunk: ChunkId,
    len: u64,
    crc: u32,
    source: &NodeAddr,
    cap: Capability,
) -> Result<Vec<u8>> {
    let mut p = node.peers.get(&source.addr).await?;
    let req = StorageRequest::GetChunk {
        chunk,
        offset: 0,
        len,
        cap,
    };
    let r: Result<Vec<u8>> = async {
        p.conn.send(&req).await?;
        let header = p.conn.recv::<GetChunkResult>().await??;
        let crcs = BlockCrcs(header.crcs);
        if header.len != len || crcs.summary() != crc {
            return Err(Error::corrupt(
                "the source's copy does not match meta's record",
            ));
        }
        let mut data = Vec::with_capacity(len as usize);
        while (data.len() as u64) < len {
            p.conn.read_data_frame_append(&mut data).await?;
        }
        node.take_in(len).await;
        if crcs.verify(0, &data).is_err() || data.len() as u64 != len {
            return Err(Error::corrupt("a block failed its checksum in transit"));
        }
        Ok(data)
    }
    .await;
    if r.is_ok() {
        node.peers.put(&source.addr, p.conn);
    }
    r
}

/// Read chunk `from` whole, check it, and write its bytes anew as `to`
/// lays them out (see `StorageRequest::Transcode`). Holds one chunk (and
/// its shards) in memory, as a rebuild does.
async fn transcode(
    node: &Arc<Node>,
    from: &Extent,
    sources: &[Option<NodeAddr>],
    cap: Capability,
    to: &ChunkAlloc,
) -> Result<Option<EcShards>> {
    let (data, crcs) = read_whole(node, from, sources, cap)
        .await
        .map_err(|e| e.context("nothing converted"))?;
    let Some(scheme) = to.ec else {
        push_chunk(node, to.chunk, &to.nodes, &to.cap, &data, &crcs).await?;
        return Ok(None);
    };
    if to.nodes.len() != scheme.shards() {
        return Err(Error::invalid(format!(
            "{} nodes for the {} shards of ec={scheme}",
            to.nodes.len(),
            scheme.shards()
        )));
    }
    let shard_len = scheme.shard_len(from.len);
    let coded = blocking(move || {
        let mut out: Vec<Vec<u8>> = (0..scheme.k as usize)
            .map(|i| scheme.data_shard(&data, shard_len, i).into_owned())
            .collect();
        out.extend(scheme.parity(&data)?);
        Ok(out
            .into_iter()
            .map(|s| {
                let c = BlockCrcs::compute(&s);
                (s, c)
            })
            .collect::<Vec<_>>())
    })
    .await?;
    let layout = EcShards {
        scheme,
        shard_len,
        crcs: coded.iter().map(|(_, c)| c.summary()).collect(),
    };
    let mut set = tokio::task::JoinSet::new();
    for (i, (shard, crcs)) in coded.into_iter().enumerate() {
        let (node, head, cap) = (node.clone(), to.nodes[i].clone(), to.cap.clone());
        let chunk = to.chunk.shard(i);
        set.spawn(async move { push_chunk(&node, chunk, &[head], &cap, &shard, &crcs).await });
    }
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let r = r.unwrap_or_else(|e| Err(Error::internal(format!("shard write task: {e}"))));
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(Some(layout)),
    }
}

/// Chunk `from` whole, from a local copy, a replica or K shards in
/// `sources` (aligned with `from.nodes`), with its block checksums,
/// checked against meta's summary `from.crc`.
async fn read_whole(
    node: &Arc<Node>,
    from: &Extent,
    sources: &[Option<NodeAddr>],
    cap: Capability,
) -> Result<(Vec<u8>, BlockCrcs)> {
    if from.len > MAX_CHUNK_LEN || sources.len() != from.nodes.len() {
        return Err(Error::invalid(format!(
            "reading chunk {} of {} bytes with {} sources for {} nodes",
            from.chunk,
            from.len,
            sources.len(),
            from.nodes.len()
        )));
    }
    let data: Vec<u8> = match &from.ec {
        None => read_replica(node, from, sources, cap).await?,
        Some(ec) => {
            let stripe = Stripe {
                chunk: from.chunk,
                scheme: ec.scheme,
                shard_len: ec.shard_len,
                crcs: ec.crcs.clone(),
            };
            let indexed: Vec<(u8, NodeAddr)> = sources
                .iter()
                .enumerate()
                .filter_map(|(i, a)| Some((i as u8, a.clone()?)))
                .collect();
            let mut shards = gather_shards(node, &stripe, None, &indexed, cap)
                .await
                .map_err(|e| e.context(format!("reading chunk {}", from.chunk)))?;
            let (scheme, len) = (ec.scheme, from.len as usize);
            blocking(move || {
                scheme.fill(&mut shards, false)?;
                let mut data = Vec::with_capacity(len);
                for s in shards.into_iter().take(scheme.k as usize) {
                    let s = s.ok_or_else(|| Error::internal("decoding left a data shard empty"))?;
                    let want = len - data.len();
                    data.extend_from_slice(&s[..s.len().min(want)]);
                }
                Ok(data)
            })
            .await?
        }
    };
    // The bytes as meta knows them, whichever way they were read.
    let (crcs, data) = blocking(move || Ok((BlockCrcs::compute(&data), data))).await?;
    if data.len() as u64 != from.len || crcs.summary() != from.crc {
        return Err(Error::corrupt(format!(
            "chunk {} as read does not match meta's checksum",
            from.chunk
        )));
    }
    Ok((data, crcs))
}

/// Send erasure-coded chunk `from`, decoded, to the remote store `tier` as
/// one object (see `StorageRequest::OffloadStripe`). Sending again is
/// harmless: the object's bytes are the same.
async fn offload_stripe(
    node: &Arc<Node>,
    from: &Extent,
    sources: &[Option<NodeAddr>],
    cap: Capability,
    tier: &str,
) -> Result<()> {
    let remote = node.tiers.get(tier)?.clone();
    let (data, _) = read_whole(node, from, sources, cap).await?;
    node.take_out(from.len).await;
    remote.put(from.chunk, bytes::Bytes::from(data)).await
}

/// The whole of replicated chunk `from`: the local copy if it is intact,
/// else from the first source that serves it.
async fn read_replica(
    node: &Arc<Node>,
    from: &Extent,
    sources: &[Option<NodeAddr>],
    cap: Capability,
) -> Result<Vec<u8>> {
    let chunk = from.chunk;
    let intact = node
        .store
        .info(chunk)
        .is_some_and(|i| i.crc_summary == from.crc && i.len == from.len)
        && !node.corrupt.lock().unwrap().contains(&chunk);
    let mut failures = Vec::new();
    if intact {
        let (store, len) = (node.store.clone(), from.len);
        match blocking(move || store.read(chunk, 0, len)).await {
            Ok(d) => return Ok(d),
            Err(e) => failures.push(format!("local copy: {e}")),
        }
    }
    for src in sources.iter().flatten() {
        match fetch_whole(node, chunk, from.len, from.crc, src, cap.clone()).await {
            Ok(d) => return Ok(d),
            Err(e) => failures.push(format!("{}: {e}", src.addr)),
        }
    }
    Err(Error::unavailable(format!(
        "chunk {chunk}: no copy could be read ({})",
        failures.join("; ")
    )))
}

/// Write `data` as chunk `chunk` down the chain `nodes` (head first), as
/// a client does, and wait for the chain's verdict.
async fn push_chunk(
    node: &Arc<Node>,
    chunk: ChunkId,
    nodes: &[NodeAddr],
    cap: &Capability,
    data: &[u8],
    crcs: &BlockCrcs,
) -> Result<()> {
    let head = nodes
        .first()
        .ok_or_else(|| Error::internal("an empty placement"))?;
    let ctx = |e: Error| e.context(format!("writing chunk {chunk} to {}", head.addr));
    let req = StorageRequest::PutChunk {
        chunk,
        len: data.len() as u64,
        crcs: crcs.clone(),
        cap: cap.clone(),
        chain: nodes[1..].to_vec(),
    };
    let mut p = node.peers.get(&head.addr).await.map_err(ctx)?;
    let r: Result<()> = async {
        p.conn.send(&req).await?;
        for piece in data.chunks(DATA_FRAME) {
            p.conn.write_frame(piece).await?;
        }
        p.conn.flush().await?;
        let outcome: Result<PutOutcome> = tokio::time::timeout(CHAIN_TIMEOUT, p.conn.recv())
            .await
            .map_err(|_| Error::timeout(format!("no acknowledgement in {CHAIN_TIMEOUT:?}")))??;
        match outcome? {
            PutOutcome::Stored => Ok(()),
            PutOutcome::Failed { addr, error, .. } => Err(error.context(format!(
                "at {}",
                if addr.is_empty() { &head.addr } else { &addr }
            ))),
        }
    }
    .await;
    match r {
        Ok(()) => {
            node.peers.put(&head.addr, p.conn);
            Ok(())
        }
        Err(e) => Err(ctx(e)),
    }
}

/// Stream a chunk from `source` into the local store, verifying every
/// block on the way and the whole against meta's checksum.
async fn copy_from_peer(
    node: &Arc<Node>,
    chunk: ChunkId,
    len: u64,
    crc: u32,
    source: &NodeAddr,
    cap: Capability,
) -> Result<()> {
    let ctx = |e: Error| e.context(format!("copying chunk {chunk} from {}", source.addr));
    let mut p = node.peers.get(&source.addr).await.map_err(ctx)?;
    let req = StorageRequest::GetChunk {
        chunk,
        offset: 0,
        len,
        cap,
    };
    let r: Result<()> = async {
        p.conn.send(&req).await?;
        let header = p.conn.recv::<GetChunkResult>().await??;
        let crcs = BlockCrcs(header.crcs);
        if header.len != len || crcs.summary() != crc {
            return Err(Error::corrupt(
                "the source's copy does not match meta's record",
            ));
        }
        // A corrupt local copy is replaced, not kept.
        let store = node.store.clone();
        blocking(move || store.delete(chunk).map(|_| ())).await?;
        let mut writer = None;
        let mut received = 0u64;
        let mut buf = Vec::with_capacity(DATA_FRAME);
        let crcs = Arc::new(crcs);
        while received < len || (len == 0 && writer.is_none()) {
            if len > 0 {
                p.conn.read_data_frame(&mut buf).await?;
                node.take_in(buf.len() as u64).await;
                received += buf.len() as u64;
            }
            let last = received >= len;
            let (store, crcs, w, data) = (
                node.store.clone(),
                crcs.clone(),
                writer.take(),
                std::mem::take(&mut buf),
            );
            let (w, data) = blocking(move || {
                local_step(&store, chunk, len, &crcs, w, &data, last).map(|w| (w, data))
            })
            .await?;
            writer = w;
            buf = data;
            if last {
                break;
            }
        }
        Ok(())
    }
    .await;
    match r {
        Ok(()) => {
            node.peers.put(&source.addr, p.conn);
            node.corrupt.lock().unwrap().remove(&chunk);
            Ok(())
        }
        Err(e) => Err(ctx(e)),
    }
}

/// Receive a chunk, store it, forward it down the chain. Returns Err only
/// when the connection is unusable; failures of the write itself are sent
/// to the caller as [`PutOutcome::Failed`].
async fn handle_put(
    node: &Arc<Node>,
    conn: &mut Conn,
    chunk: ChunkId,
    len: u64,
    crcs: BlockCrcs,
    cap: Capability,
    chain: Vec<NodeAddr>,
) -> Result<()> {
    let me = |error: Error| PutOutcome::Failed {
        node: node.id,
        addr: String::new(),
        error,
    };
    if len > MAX_CHUNK_LEN {
        // Refuse without reading the bytes, and close the connection.
        let e = Error::invalid(format!("chunk of {len} bytes exceeds {MAX_CHUNK_LEN}"));
        conn.send(&Ok::<PutOutcome, Error>(me(e.clone()))).await?;
        return Err(e);
    }
    let mut failure: Option<PutOutcome> = None;
    if let Err(e) = cap.check(&node.secret, chunk, true, &conn.peer_is()) {
        failure = Some(me(e));
    } else if crcs.0.len() != BlockCrcs::blocks_for(len) {
        failure = Some(me(Error::invalid(format!(
            "chunk {chunk}: {} block checksums for {len} bytes",
            crcs.0.len()
        ))));
    }

    // The local copy is opened lazily, with the first frame, so that a small
    // chunk costs one trip to the blocking pool (open, write, fsync) per node.
    let crcs_local = Arc::new(crcs.clone());
    let mut local_ok = failure.is_none();
    let mut writer: Option<ChunkWriter> = None;

    // Open the next hop. Its failure is reported, not fatal to our own copy.
    let mut down: Option<(NodeAddr, cairn_proto::Pooled)> = None;
    if failure.is_none() {
        if let Some(next) = chain.first() {
            let req = StorageRequest::PutChunk {
                chunk,
                len,
                crcs,
                cap,
                chain: chain[1..].to_vec(),
            };
            match node.peers.get(&next.addr).await {
                Ok(mut p) => match p.conn.send(&req).await {
                    Ok(()) => down = Some((next.clone(), p)),
                    Err(error) => {
                        failure = Some(PutOutcome::Failed {
                            node: next.id,
                            addr: next.addr.clone(),
                            error,
                        })
                    }
                },
                Err(error) => {
                    failure = Some(PutOutcome::Failed {
                        node: next.id,
                        addr: next.addr.clone(),
                        error,
                    })
                }
            }
        }
    }

    // Stream: each frame is written locally while it is forwarded.
    let mut received = 0u64;
    let mut buf = Vec::with_capacity(DATA_FRAME);
    while received < len {
        conn.read_data_frame(&mut buf).await?;
        node.take_in(buf.len() as u64).await;
        received += buf.len() as u64;
        if received > len {
            return Err(Error::invalid(format!(
                "chunk {chunk}: sender sent more than {len} bytes"
            )));
        }
        // Shared by the forward and the local write (no copy); back to
        // `buf` for the next frame once both are done.
        let data = Arc::new(std::mem::take(&mut buf));
        let fwd = async {
            if let Some((next, p)) = down.as_mut() {
                if let Err(error) = p.conn.write_frame(&data).await.and(p.conn.flush().await) {
                    return Some(PutOutcome::Failed {
                        node: next.id,
                        addr: next.addr.clone(),
                        error,
                    });
                }
            }
            None
        };
        let last = received == len;
        let local = async {
            if !local_ok {
                return Ok(None);
            }
            let (store, crcs, w, data) = (
                node.store.clone(),
                crcs_local.clone(),
                writer.take(),
                data.clone(),
            );
            blocking(move || local_step(&store, chunk, len, &crcs, w, &data[..], last)).await
        };
        let (fwd_err, local_res) = tokio::join!(fwd, local);
        if let Some(f) = fwd_err {
            down = None;
            failure.get_or_insert(f);
        }
        match local_res {
            Ok(w) => writer = w,
            Err(e) => {
                local_ok = false;
                if e.kind == cairn_types::ErrorKind::Internal {
                    // An I/O failure of our disk, not of this request.
                    warn!("disk problem, no longer taking new chunks: {e}");
                    *node.problem.lock().unwrap() = Some(format!("disk error: {e}"));
                }
                failure.get_or_insert(me(e));
            }
        }
        buf = Arc::try_unwrap(data).unwrap_or_default();
    }
    if len == 0 && local_ok {
        let (store, crcs) = (node.store.clone(), crcs_local.clone());
        if let Err(e) = blocking(move || local_step(&store, chunk, 0, &crcs, None, &[], true)).await
        {
            failure.get_or_insert(me(e));
        }
    }
    if let Some((next, mut p)) = down {
        let answer: Result<Result<PutOutcome, Error>> =
            tokio::time::timeout(CHAIN_TIMEOUT, p.conn.recv())
                .await
                .unwrap_or_else(|_| {
                    Err(Error::timeout(format!(
                        "{} did not acknowledge in {CHAIN_TIMEOUT:?}",
                        next.addr
                    )))
                });
        match answer {
            Ok(Ok(PutOutcome::Stored)) => node.peers.put(&next.addr, p.conn),
            Ok(Ok(f @ PutOutcome::Failed { .. })) => {
                node.peers.put(&next.addr, p.conn);
                failure.get_or_insert(f);
            }
            Ok(Err(error)) | Err(error) => {
                failure.get_or_insert(PutOutcome::Failed {
                    node: next.id,
                    addr: next.addr.clone(),
                    error,
                });
            }
        }
    }
    let outcome = failure.unwrap_or(PutOutcome::Stored);
    if let PutOutcome::Failed { error, .. } = &outcome {
        warn!(%chunk, "write failed: {error}");
    }
    conn.send(&Ok::<PutOutcome, Error>(outcome)).await
}

/// One frame of a chunk into the local store: open the chunk on the first
/// frame, write, and make it durable after the last.
fn local_step(
    store: &ChunkStore,
    chunk: ChunkId,
    len: u64,
    crcs: &BlockCrcs,
    w: Option<ChunkWriter>,
    data: &[u8],
    last: bool,
) -> Result<Option<ChunkWriter>> {
    let mut w = match w {
        Some(w) => w,
        None => store.begin_write(chunk, len, crcs)?,
    };
    if !data.is_empty() {
        w.write(data)?;
    }
    if last {
        w.finish()?;
        return Ok(None);
    }
    Ok(Some(w))
}

async fn handle_get(
    node: &Arc<Node>,
    conn: &mut Conn,
    chunk: ChunkId,
    offset: u64,
    len: u64,
    cap: Capability,
) -> Result<()> {
    let store = node.store.clone();
    let peer = conn.peer_is();
    let header: Result<GetChunkHeader> = async {
        cap.check(&node.secret, chunk, false, &peer)?;
        if !offset.is_multiple_of(BLOCK_SIZE as u64) {
            return Err(Error::invalid(format!(
                "offset {offset} is not a multiple of {BLOCK_SIZE}"
            )));
        }
        let info = store
            .info(chunk)
            .ok_or_else(|| Error::not_found(format!("chunk {chunk} is not on this node")))?;
        if offset.checked_add(len).is_none_or(|end| end > info.len) {
            return Err(Error::invalid(format!(
                "range {offset}+{len} is outside chunk {chunk} of {} bytes",
                info.len
            )));
        }
        let s = store.clone();
        let crcs = blocking(move || s.read_crcs(chunk)).await?;
        let first = (offset / BLOCK_SIZE as u64) as usize;
        let last = BlockCrcs::blocks_for(offset + len);
        Ok(GetChunkHeader {
            len,
            crcs: crcs.0[first..last].to_vec(),
        })
    }
    .await;
    let header = match header {
        Ok(h) => h,
        Err(e) => return conn.send(&GetChunkResult::Err(e)).await,
    };
    conn.send(&GetChunkResult::Ok(header)).await?;
    node.cache.lock().unwrap().touch(chunk);
    let mut pos = offset;
    let end = offset + len;
    // One buffer for every frame of the read: no fresh (zeroed) memory per
    // frame.
    let mut buf = Vec::new();
    while pos < end {
        let n = (end - pos).min(DATA_FRAME as u64);
        let s = store.clone();
        let mut b = std::mem::take(&mut buf);
        match blocking(move || s.read_into(chunk, pos, n, &mut b).map(|()| b)).await {
            Ok(data) => {
                node.take_out(data.len() as u64).await;
                node.served
                    .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                conn.write_frame(&data).await?;
                buf = data;
            }
            Err(e) => {
                if e.kind == cairn_types::ErrorKind::Corrupt {
                    warn!(%chunk, "corrupt replica: {e}");
                    if !drop_if_cached(node, chunk).await {
                        node.corrupt.lock().unwrap().insert(chunk);
                    }
                }
                return conn.abort_data(&e).await;
            }
        }
        pos += n;
    }
    conn.flush().await
}

fn node_stats(node: &Node) -> NodeStats {
    let s = node.store.stats();
    let (cache_bytes, cache_capacity) = {
        let c = node.cache.lock().unwrap();
        (c.bytes(), c.capacity)
    };
    let free = s.fs_free.saturating_sub(node.reserve);
    let mut problem = node.problem.lock().unwrap().clone();
    if problem.is_none() && free == 0 {
        problem = Some(format!(
            "disk full: {} free, {} reserved",
            cairn_types::format_bytes(s.fs_free),
            cairn_types::format_bytes(node.reserve)
        ));
    }
    NodeStats {
        chunks: s.chunks,
        used: s.live_bytes,
        free,
        total: s.fs_total,
        corrupt_chunks: node.corrupt.lock().unwrap().iter().copied().collect(),
        accepting_writes: problem.is_none(),
        problem,
        scrubbed_bytes: node.scrubbed.load(std::sync::atomic::Ordering::Relaxed),
        host: node.host.clone(),
        groups: node.groups.clone(),
        cache_bytes,
        cache_capacity,
        served_bytes: node.served.load(std::sync::atomic::Ordering::Relaxed),
        written_bytes: node.written.get(),
    }
}

/// Re-reads every chunk at a bounded rate and checks its checksums, so bit
/// rot is found before a reader needs the copy; corrupt chunks are reported
/// to meta with the next heartbeat, and meta has them replaced.
async fn scrub_worker(
    node: Arc<Node>,
    rate: u64,
    pause: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if rate == 0 {
        return;
    }
    loop {
        for chunk in node.store.list() {
            let Some(info) = node.store.info(chunk) else {
                continue;
            };
            let store = node.store.clone();
            let started = std::time::Instant::now();
            match blocking(move || store.verify(chunk)).await {
                Ok(()) => {}
                Err(e) if e.kind == cairn_types::ErrorKind::Corrupt => {
                    warn!(%chunk, "scrubber found a corrupt chunk: {e}");
                    if !drop_if_cached(&node, chunk).await {
                        node.corrupt.lock().unwrap().insert(chunk);
                    }
                }
                Err(e) if e.kind == cairn_types::ErrorKind::NotFound => {} // deleted meanwhile
                Err(e) => warn!(%chunk, "scrubber could not read chunk: {e}"),
            }
            node.scrubbed
                .fetch_add(info.len, std::sync::atomic::Ordering::Relaxed);
            // Throttle: this chunk's share of the rate, less the time it took.
            let budget = Duration::from_secs_f64(info.len as f64 / rate as f64);
            let wait = budget.saturating_sub(started.elapsed());
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Segment files below this share of live data are rewritten, so space
/// freed by deleted chunks returns to the file system.
const COMPACT_BELOW_LIVE_RATIO: f64 = 0.5;

/// Reclaims the space of deleted chunks in the background.
async fn compaction_worker(node: Arc<Node>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let store = node.store.clone();
        match blocking(move || store.compact(COMPACT_BELOW_LIVE_RATIO)).await {
            Ok(s) if s.segments_compacted > 0 => {
                info!(
                    segments = s.segments_compacted,
                    freed = s.bytes_freed,
                    "compacted"
                );
                if !s.corrupt.is_empty() {
                    warn!(chunks = ?s.corrupt, "corrupt chunks found while compacting");
                    node.corrupt.lock().unwrap().extend(s.corrupt);
                }
            }
            Ok(_) => {}
            Err(e) => warn!("compaction failed: {e}"),
        }
    }
}

/// Registers with one meta server, then heartbeats it: capacity, health
/// and corrupt chunks. A node runs one of these per meta server, so every
/// meta (several share an etcd store) knows which nodes are live.
async fn heartbeat_worker(
    node: Arc<Node>,
    meta: MetaClient,
    addr: String,
    zone: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut registered = false;
    loop {
        if registered {
            report_cache(&node, &meta).await;
        }
        let stats = node_stats(&node);
        let req = if registered {
            MetaRequest::Heartbeat {
                node: node.id,
                stats,
            }
        } else {
            MetaRequest::Register {
                node: node.id,
                addr: addr.clone(),
                zone: zone.clone(),
                stats,
            }
        };
        match meta.call(req).await {
            Ok(MetaResponse::Registered) => {
                info!(node = %node.id, meta = %meta.addrs().join(","), "registered with meta");
                registered = true;
                continue;
            }
            Ok(MetaResponse::Ok) => {}
            Ok(other) => warn!("unexpected answer from meta: {other:?}"),
            Err(e) if e.kind == cairn_types::ErrorKind::NotFound => registered = false,
            Err(e) => debug!("heartbeat failed: {e}"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Tell meta of the cache copies made by reads through and those dropped;
/// kept for the next heartbeat if meta does not answer.
async fn report_cache(node: &Arc<Node>, meta: &MetaClient) {
    let (added, dropped) = {
        let mut r = node.report.lock().unwrap();
        if r.0.is_empty() && r.1.is_empty() {
            return;
        }
        (std::mem::take(&mut r.0), std::mem::take(&mut r.1))
    };
    let req = MetaRequest::CacheReport {
        node: node.id,
        added: added.clone(),
        dropped: dropped.clone(),
    };
    if let Err(e) = meta.call(req).await {
        debug!("cache report failed, kept for later: {e}");
        let mut r = node.report.lock().unwrap();
        r.0.extend(added);
        r.1.extend(dropped);
    }
}
