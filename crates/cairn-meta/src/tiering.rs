//! The remote tier (seed 000's third level): chunks of files whose cues
//! say so (`tier=remote:NAME`, or `cold_after=` once the file has been
//! neither read nor written for that long) move to an S3-compatible store,
//! stay in the namespace, and come back on read.
//!
//! Offload of one chunk, by the leader's [`TierWorker`]:
//!
//! 1. a live node holding a copy sends it, checked, to the store as one
//!    object (`StorageRequest::Offload`); an erasure-coded chunk is read
//!    from K shards, decoded and checked by a shard's node, and sent as
//!    one object of the chunk's bytes (`OffloadStripe`);
//! 2. the extent is rewritten in one transaction: its store recorded, its
//!    replica list emptied (the file's version does not change); a
//!    stripe's shards become garbage in that transaction;
//! 3. the former replicas are recorded as cache copies, and their nodes
//!    told so (`MakeCache`): they stay, under each node's cache budget.
//!
//! A crash between 1 and 2 leaves the chunk where it was (and an object no
//! chunk names, which `cairn tier verify` lists); between 2 and 3, copies
//! meta no longer knows of, which the orphan sweep deletes. Either way the
//! chunk stays readable.
//!
//! Reads of an offloaded chunk go to its cache copies, else through a
//! storage node that fetches the object, checks it against the chunk's
//! checksums and keeps a cache copy (`GetChunkVia` with `remote`). Garbage
//! collection deletes the object with the chunk; `cairn tier recall` brings
//! chunks back as durable copies, up to the file's `rep` (a file whose
//! cues ask for `ec=` is then re-encoded by the convert worker).
//!
//! When a file was last read is kept in memory only (an open costs no
//! write): a restarted meta counts `cold_after` from its own start, which
//! can only make an offload later, never earlier.
//!
//! An erasure-coded chunk goes as one object of its decoded bytes rather
//! than one per shard: a read-through is one GET of a checksummed unit,
//! the store's own redundancy is not paid on top of parity, and the object
//! is the same whatever the file's layout was.

use crate::server::Meta;
use cairn_proto::{Capability, StorageRequest, TierReport, TierUsage};
use cairn_types::{
    now_ms, CairnPath, ChunkId, EcScheme, Error, ErrorKind, Extent, Inode, InodeId, InodeKind,
    Layout, NodeId, Result, Tier,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Settings of the remote tier on a meta server.
#[derive(Clone, Debug)]
pub struct TierConfig {
    pub tiers: cairn_tier::Tiers,
    /// Pause between two passes over the namespace.
    pub interval: Duration,
    /// Bytes per second offloaded at most (0: unlimited).
    pub rate: u64,
}

impl Default for TierConfig {
    fn default() -> TierConfig {
        TierConfig {
            tiers: Default::default(),
            interval: Duration::from_secs(30),
            rate: 64 << 20,
        }
    }
}

/// Meta's tier state: the stores, when files were last opened, and what
/// is wrong with a store now.
#[derive(Default)]
pub struct TierState {
    pub cfg: TierConfig,
    accessed: Mutex<HashMap<InodeId, u64>>,
    problems: Mutex<BTreeMap<String, String>>,
    chunk_locks: Mutex<HashMap<ChunkId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a chunk is offloaded or recalled.
struct ChunkGuard<'a> {
    state: &'a TierState,
    chunk: ChunkId,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for ChunkGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.state.chunk_locks.lock().unwrap();
        // Forget the lock once no one else waits on it.
        if locks
            .get(&self.chunk)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            locks.remove(&self.chunk);
        }
    }
}

/// Files opened, at most this many remembered (the oldest half is
/// forgotten past it: they count as opened when meta started).
const MAX_ACCESSED: usize = 1 << 20;

impl TierState {
    pub fn new(cfg: TierConfig) -> TierState {
        TierState {
            cfg,
            ..Default::default()
        }
    }

    /// A read or write of file `id` now (`cold_after` counts from it).
    pub fn touch(&self, id: InodeId) {
        let mut a = self.accessed.lock().unwrap();
        if a.len() >= MAX_ACCESSED {
            let mut times: Vec<u64> = a.values().copied().collect();
            let mid = times.len() / 2;
            let (_, cut, _) = times.select_nth_unstable(mid);
            let cut = *cut;
            a.retain(|_, t| *t > cut);
        }
        a.insert(id, now_ms());
    }

    fn last_access(&self, id: InodeId) -> u64 {
        self.accessed.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    fn set_problem(&self, tier: &str, problem: Option<String>) {
        let mut p = self.problems.lock().unwrap();
        match problem {
            Some(m) => {
                if p.get(tier) != Some(&m) {
                    warn!(tier, "remote store cannot be used: {m}");
                }
                p.insert(tier.to_string(), m);
            }
            None => {
                if p.remove(tier).is_some() {
                    info!(tier, "remote store reachable again");
                }
            }
        }
    }

    /// Offload and recall of one chunk, one at a time: a recall between an
    /// offload's commit and its `MakeCache` would otherwise see its new
    /// durable copies made cache copies (and evicted) afterwards.
    async fn lock_chunk(&self, chunk: ChunkId) -> ChunkGuard<'_> {
        let lock = self
            .chunk_locks
            .lock()
            .unwrap()
            .entry(chunk)
            .or_default()
            .clone();
        let guard = lock.lock_owned().await;
        ChunkGuard {
            state: self,
            chunk,
            _guard: guard,
        }
    }

    fn problem(&self, tier: &str) -> Option<String> {
        self.problems.lock().unwrap().get(tier).cloned()
    }

    /// Check every store; remember (and log) what fails.
    pub async fn check(&self) {
        for s in self.cfg.tiers.all() {
            let r = s.check().await;
            self.set_problem(s.name(), r.err().map(|e| e.message));
        }
    }
}

/// Bytes per tier, extent by extent: see [`Meta::tier_tally`].
pub(crate) struct TierTally<'a> {
    local: TierUsage,
    remote: BTreeMap<String, TierUsage>,
    cache: &'a crate::cache_copies::CacheCopies,
}

impl TierTally<'_> {
    pub(crate) fn add(&mut self, e: &Extent) {
        let u = match &e.remote {
            None => &mut self.local,
            Some(t) => self.remote.entry(t.clone()).or_insert_with(|| TierUsage {
                name: t.clone(),
                problem: Some("not given to this meta with --tier".into()),
                ..Default::default()
            }),
        };
        u.chunks += 1;
        u.bytes += e.len;
        if e.remote.is_some() && !self.cache.holders(e.chunk).is_empty() {
            u.cached_bytes += e.len;
        }
    }

    /// `local` first, then each remote store by name.
    pub(crate) fn finish(self) -> Vec<TierUsage> {
        std::iter::once(self.local)
            .chain(self.remote.into_values())
            .collect()
    }
}

/// Whether a failed store request says the store (not the chunk) is
/// unusable now: unreachable, or the credentials refused.
fn store_down(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::PermissionDenied
    )
}

impl Meta {
    /// Whether the tier cues of `cues` name stores this meta knows.
    pub(crate) fn check_tier_cues(&self, cues: &cairn_types::Cues) -> Result<()> {
        let tiers = &self.tier.cfg.tiers;
        match &cues.tier {
            Some(Tier::Remote(n)) => tiers
                .get(n)
                .map(|_| ())
                .map_err(|e| Error::invalid(format!("cue tier=remote:{n}: {}", e.message))),
            None if cues.cold_after_ms.is_some() && tiers.is_empty() => Err(Error::invalid(
                "cue cold_after needs a remote store to move files to: meta was given none \
                 (--tier); or give tier=ec:K+M to erasure-code cold files on the nodes",
            )),
            _ => Ok(()),
        }
    }

    /// The store `inode` should be offloaded to now, if any.
    fn offload_target(&self, inode: &Inode, now: u64) -> Option<String> {
        let c = &inode.cues;
        let tier = match &c.tier {
            Some(Tier::Local | Tier::Ec(_)) => return None,
            Some(Tier::Remote(n)) => n.clone(),
            None => {
                c.cold_after_ms?;
                self.tier.cfg.tiers.default_name()?.to_string()
            }
        };
        self.cold_enough(inode, now).then_some(tier)
    }

    /// The scheme `inode` should be erasure-coded with now, by the cold
    /// policy `tier=ec:K+M` (once `cold_after` has passed), if it is not
    /// so already. Files with offloaded chunks are left alone.
    fn cold_scheme(&self, inode: &Inode, now: u64) -> Option<EcScheme> {
        let Some(Tier::Ec(scheme)) = inode.cues.tier else {
            return None;
        };
        // Write-once files are never rewritten, and a hard-linked one has
        // no one path to convert it by.
        if inode.cues.is_write_once() || inode.nlink > 1 {
            return None;
        }
        let local = inode.extents.iter().all(|e| e.remote.is_none());
        let coded = inode.layout().is_none_or(|l| l == Layout::Ec(scheme));
        (local && !coded && inode.cues.cold_after_ms.is_some() && self.cold_enough(inode, now))
            .then_some(scheme)
    }

    /// Whether `inode` was neither read nor written for its `cold_after`
    /// (true without one).
    fn cold_enough(&self, inode: &Inode, now: u64) -> bool {
        let Some(after) = inode.cues.cold_after_ms else {
            return true;
        };
        // ctime, not mtime: a writer may set mtime to the past (sync
        // keeps the source's), while the write itself sets ctime.
        let last = inode
            .ctime_ms()
            .max(inode.mtime_ms())
            .max(self.tier.last_access(inode.id))
            .max(self.started_ms);
        now.saturating_sub(last) >= after
    }

    /// Erasure-code a cold file as its cold policy asks (a conversion, as
    /// the convert worker makes them). Returns the bytes converted.
    async fn encode_cold(&self, inode: &Inode, scheme: EcScheme) -> Result<u64> {
        // By its one path: a hard-linked file has several, and is left.
        let Some(path) = self.ns.path_of(inode.id).await? else {
            return Ok(0);
        };
        match self.convert_file(&path, Layout::Ec(scheme)).await? {
            crate::convert::Outcome::Converted(n) => Ok(n),
            _ => Ok(0),
        }
    }

    /// Offload one chunk of the file whose entry key is `key` (steps in
    /// the module doc). Returns false if the file changed meanwhile (the
    /// object is then deleted again).
    async fn offload_extent(&self, key: &[u8], ext: &Extent, tier: &str) -> Result<bool> {
        let _one = self.tier.lock_chunk(ext.chunk).await;
        let store = self.tier.cfg.tiers.get(tier)?.clone();
        // A replica is sent by a node holding it; an erasure-coded chunk,
        // decoded, by a shard's node that gathers K shards.
        let sources = self.readable_sources(ext);
        let req = match ext.ec {
            None => StorageRequest::Offload {
                chunk: ext.chunk,
                len: ext.len,
                crc: ext.crc,
                tier: tier.to_string(),
            },
            Some(_) => StorageRequest::OffloadStripe {
                from: ext.clone(),
                sources: sources.clone(),
                cap: Capability::sign(&self.secret, ext.chunk, false, None),
                tier: tier.to_string(),
            },
        };
        let mut failures = Vec::new();
        let mut sent = false;
        for (i, n) in ext.nodes.iter().enumerate() {
            if !self.nodes.is_live(*n) {
                continue;
            }
            let Some(addr) = &sources[i] else {
                continue;
            };
            match self.node_call::<()>(&addr.addr, &req).await {
                Ok(()) => {
                    sent = true;
                    break;
                }
                // The store refused or cannot be reached: no other node
                // will do better.
                Err(e) if store_down(&e) && e.message.contains("remote store") => {
                    return Err(e.context(format!("offloading chunk {}", ext.chunk)));
                }
                Err(e) => failures.push(format!("{}: {e}", addr.addr)),
            }
        }
        if !sent {
            return Err(Error::unavailable(format!(
                "offloading chunk {}: no live node could send its copy ({})",
                ext.chunk,
                failures.join("; ")
            )));
        }
        // Only the extent as it was planned: repair may have changed its
        // copies meanwhile, or a recall brought it back (next pass).
        let former: Mutex<Vec<NodeId>> = Mutex::default();
        let changed = self
            .ns
            .update_extent(key, ext.chunk, |e| {
                if e.remote.is_some() || e.nodes != ext.nodes || e.ec != ext.ec {
                    return false;
                }
                *former.lock().unwrap() = std::mem::take(&mut e.nodes);
                e.remote = Some(tier.to_string());
                // The object holds the chunk's bytes: its shards go to
                // garbage with this change (see update_extent).
                e.ec = None;
                true
            })
            .await?;
        if !changed {
            if let Err(e) = store.delete(ext.chunk).await {
                warn!(chunk = %ext.chunk, "could not delete the object of a chunk whose file changed: {e}");
            }
            return Ok(false);
        }
        if ext.ec.is_some() {
            return Ok(true);
        }
        let former = former.into_inner().unwrap();
        let copies: Vec<(ChunkId, NodeId, u64)> =
            former.iter().map(|n| (ext.chunk, *n, ext.len)).collect();
        self.cache.add_many(&copies).await?;
        for n in &former {
            let Some(addr) = self.nodes.addr(*n) else {
                continue;
            };
            let req = StorageRequest::MakeCache {
                chunks: vec![(ext.chunk, ext.len)],
            };
            if let Err(e) = self.node_call::<()>(&addr.addr, &req).await {
                // The copy stays durable to the node until its chunk is
                // collected: room wasted, nothing lost.
                warn!(node = %n, chunk = %ext.chunk, "could not make a copy a cache copy: {e}");
            }
        }
        Ok(true)
    }

    /// Delete the objects of collected chunks that had no replicas (the
    /// offloaded ones) from every store; answers the chunks whose object
    /// could not be deleted (they stay garbage, for the next pass).
    pub(crate) async fn delete_remote(&self, chunks: &[ChunkId]) -> HashSet<ChunkId> {
        let mut failed = HashSet::new();
        for s in self.tier.cfg.tiers.all() {
            // A store known to be down: try again once it is back, rather
            // than wait out a timeout per chunk.
            if self.tier.problem(s.name()).is_some() {
                failed.extend(chunks.iter().copied());
                continue;
            }
            for c in chunks {
                if let Err(e) = s.delete(*c).await {
                    warn!(chunk = %c, tier = s.name(), "could not delete a collected chunk's object: {e}");
                    failed.insert(*c);
                }
            }
        }
        failed
    }

    /// Bytes per tier, from one walk of the namespace.
    pub(crate) async fn tier_usage(&self) -> Result<Vec<TierUsage>> {
        let mut tally = self.tier_tally();
        self.ns.for_each_chunk(|_, e| tally.add(e)).await?;
        Ok(tally.finish())
    }

    /// A count of bytes per tier, to feed extents from a namespace walk
    /// (`cluster status` counts them in its own).
    pub(crate) fn tier_tally(&self) -> TierTally<'_> {
        let remote = self
            .tier
            .cfg
            .tiers
            .all()
            .map(|s| {
                let u = TierUsage {
                    name: s.name().to_string(),
                    location: s.spec.to_string(),
                    problem: self.tier.problem(s.name()),
                    ..Default::default()
                };
                (u.name.clone(), u)
            })
            .collect();
        TierTally {
            local: TierUsage {
                name: "local".into(),
                ..Default::default()
            },
            remote,
            cache: &self.cache,
        }
    }

    /// Bring the offloaded chunks of the files at `path` back onto storage
    /// nodes as durable copies: each onto its live cache holders, then other
    /// live nodes up to the file's `rep` (the repair planner then places
    /// them as the cues ask). An object is deleted once its chunk is back.
    pub(crate) async fn tier_recall(&self, path: &CairnPath) -> Result<(u64, u64, u64)> {
        // The leader offloads; recalls run beside it, one chunk at a time.
        if !self.election.is_leader() {
            return Err(Error::unavailable(
                "tier recall runs on the meta server that leads (it runs the offloads); \
                 this one is on standby: ask the leader",
            ));
        }
        let top = self.ns.lookup(path).await?;
        let mut files = Vec::new();
        if top.kind == InodeKind::Directory {
            let mut dirs = vec![path.clone()];
            while let Some(d) = dirs.pop() {
                let mut after: Option<String> = None;
                loop {
                    let page = self.ns.list(&d, after.as_deref(), 1000).await?;
                    for e in &page {
                        let p = d.join(&e.name)?;
                        match e.inode.kind {
                            InodeKind::Directory => dirs.push(p),
                            InodeKind::File => files.push(p),
                            _ => {}
                        }
                    }
                    match page.last() {
                        Some(e) if page.len() == 1000 => after = Some(e.name.clone()),
                        _ => break,
                    }
                }
            }
        } else {
            files.push(path.clone());
        }
        let (mut nfiles, mut nchunks, mut nbytes) = (0, 0, 0);
        for f in files {
            let (key, inode) = match self.ns.file_key(&f).await {
                Ok(k) => k,
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            self.tier.touch(inode.id);
            let mut any = false;
            for ext in inode.extents.iter().filter(|e| e.remote.is_some()) {
                let want = inode
                    .cues
                    .rep
                    .unwrap_or(self.default_rep.load(std::sync::atomic::Ordering::Relaxed))
                    as usize;
                self.recall_extent(&key, ext, want.max(1))
                    .await
                    .map_err(|e| e.context(format!("recalling {f}")))?;
                any = true;
                nchunks += 1;
                nbytes += ext.len;
            }
            nfiles += u64::from(any);
            // Back as replicas: a file that asks for ec= is re-encoded.
            if any && inode.cues.ec.is_some() {
                if let Ok(now) = self.ns.lookup(&f).await {
                    self.convert_if_off_layout(&f, &now).await;
                }
            }
        }
        if nchunks > 0 {
            self.repair_kick.notify_one();
        }
        Ok((nfiles, nchunks, nbytes))
    }

    async fn recall_extent(&self, key: &[u8], ext: &Extent, want: usize) -> Result<()> {
        let _one = self.tier.lock_chunk(ext.chunk).await;
        let tier = ext.remote.clone().expect("an offloaded extent");
        let store = self.tier.cfg.tiers.get(&tier)?.clone();
        let mut targets: Vec<NodeId> = self
            .cache
            .holders(ext.chunk)
            .into_iter()
            .filter(|n| self.nodes.is_live(*n))
            .collect();
        // Then other live nodes, up to the file's redundancy, so the object
        // is deleted only once the chunk is as safe on nodes as `rep` asks
        // (the repair planner moves copies where the cues want them).
        let mut others: Vec<NodeId> = self
            .nodes
            .up_nodes()
            .into_iter()
            .map(|n| n.id)
            .filter(|n| self.nodes.is_live(*n) && !targets.contains(n))
            .collect();
        fastrand::shuffle(&mut others);
        targets.extend(others.into_iter().take(want.saturating_sub(targets.len())));
        if targets.is_empty() {
            return Err(Error::unavailable(format!(
                "chunk {}: no live storage node to bring it back to",
                ext.chunk
            )));
        }
        // "Allocated recently": the orphan sweep leaves the new durable
        // copies alone until the extent names them.
        self.recent.lock().unwrap().insert(ext.chunk, now_ms());
        let req = StorageRequest::Recall {
            chunk: ext.chunk,
            len: ext.len,
            crc: ext.crc,
            tier: tier.clone(),
        };
        let (mut back, mut failures) = (Vec::new(), Vec::new());
        for n in targets {
            let Some(addr) = self.nodes.addr(n) else {
                continue;
            };
            match self.node_call::<()>(&addr.addr, &req).await {
                Ok(()) => back.push(n),
                Err(e) => failures.push(format!("{}: {e}", addr.addr)),
            }
        }
        if back.is_empty() {
            return Err(Error::unavailable(format!(
                "chunk {} could not be brought back from remote store {tier} ({})",
                ext.chunk,
                failures.join("; ")
            )));
        }
        let changed = self
            .ns
            .update_extent(key, ext.chunk, |e| {
                if e.remote.is_none() {
                    return false;
                }
                e.remote = None;
                e.nodes = back.clone();
                true
            })
            .await?;
        let copies: Vec<(ChunkId, NodeId)> = back.iter().map(|n| (ext.chunk, *n)).collect();
        self.cache.remove_many(&copies).await?;
        if changed {
            if let Err(e) = store.delete(ext.chunk).await {
                warn!(chunk = %ext.chunk, "recalled, but its object stays in the store: {e}");
            }
        }
        Ok(())
    }

    /// Compare store `tier` with the namespace (see `TierVerify`).
    pub(crate) async fn tier_verify(&self, tier: &str) -> Result<TierReport> {
        let store = self.tier.cfg.tiers.get(tier)?.clone();
        let (objects, foreign) = store.list().await?;
        let mut named: BTreeMap<ChunkId, (u64, InodeId)> = BTreeMap::new();
        self.ns
            .for_each_chunk(|f, e| {
                if e.remote.as_deref() == Some(tier) {
                    named.insert(e.chunk, (e.len, f.id));
                }
            })
            .await?;
        let garbage = self.ns.garbage_chunks().await?;
        let mut r = TierReport {
            objects: objects.len() as u64,
            foreign,
            ..Default::default()
        };
        for (c, size) in &objects {
            match named.get(c) {
                None if !garbage.contains(c) => r.unreferenced.push((*c, *size)),
                Some((len, _)) if len != size => r.wrong_size.push((*c, *size, *len)),
                _ => {}
            }
        }
        for (c, (_, id)) in &named {
            if !objects.contains_key(c) {
                r.missing.push((*c, format!("file inode {id}")));
            }
        }
        Ok(r)
    }
}

/// The leader's offloader: a page of files per pass, offloading the chunks
/// of those whose cues say so, at most `rate` bytes per second.
pub struct TierWorker {
    meta: Arc<Meta>,
    cursor: Option<Vec<u8>>,
    throttle: cairn_proto::Throttle,
    last_check: Option<Instant>,
    offloaded: u64,
    bytes: u64,
    /// Cold files erasure-coded by their `tier=ec:K+M`, and their bytes.
    encoded: u64,
    encoded_bytes: u64,
    failed: u64,
}

/// Files looked at per pass.
const TIER_PAGE: usize = 256;

impl TierWorker {
    pub fn new(meta: Arc<Meta>) -> TierWorker {
        let rate = meta.tier.cfg.rate;
        TierWorker {
            meta,
            cursor: None,
            throttle: cairn_proto::Throttle::new(rate),
            last_check: None,
            offloaded: 0,
            bytes: 0,
            encoded: 0,
            encoded_bytes: 0,
            failed: 0,
        }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for TierWorker {
    fn name(&self) -> &'static str {
        "tier"
    }

    fn retry_after(&self) -> Duration {
        self.meta.tier.cfg.interval
    }

    async fn pass(&mut self) -> Result<crate::worker::Pass> {
        let meta = self.meta.clone();
        let interval = meta.tier.cfg.interval;
        if !meta.election.is_leader() {
            return Ok(crate::worker::Pass {
                state: "standby",
                progress: "not the leader".into(),
                next: interval,
            });
        }
        // Stores are checked again each interval, sooner once one is down.
        let stores = !meta.tier.cfg.tiers.is_empty();
        if stores && self.last_check.is_none_or(|t| t.elapsed() >= interval) {
            meta.tier.check().await;
            self.last_check = Some(Instant::now());
        }
        let (files, next) = meta
            .ns
            .scan_files(self.cursor.as_deref(), TIER_PAGE)
            .await?;
        let now = now_ms();
        let mut last_err: Option<Error> = None;
        for (key, inode) in files {
            if let Some(scheme) = meta.cold_scheme(&inode, now) {
                self.throttle.take(inode.size).await;
                match meta.encode_cold(&inode, scheme).await {
                    Ok(0) => {}
                    Ok(n) => {
                        self.encoded += 1;
                        self.encoded_bytes += n;
                    }
                    Err(e) => {
                        warn!("{e}");
                        self.failed += 1;
                        last_err = Some(e);
                    }
                }
                continue;
            }
            let Some(tier) = meta.offload_target(&inode, now) else {
                continue;
            };
            if let Some(p) = meta.tier.problem(&tier) {
                last_err = Some(Error::unavailable(format!("remote store {tier}: {p}")));
                continue;
            }
            for ext in inode
                .extents
                .iter()
                .filter(|e| e.remote.is_none() && !e.nodes.is_empty())
            {
                self.throttle.take(ext.len).await;
                match meta.offload_extent(&key, ext, &tier).await {
                    Ok(true) => {
                        self.offloaded += 1;
                        self.bytes += ext.len;
                    }
                    Ok(false) => break, // the file changed: next pass
                    Err(e) => {
                        self.failed += 1;
                        if store_down(&e) && e.message.contains("remote store") {
                            meta.tier.set_problem(&tier, Some(e.message.clone()));
                        }
                        last_err = Some(e);
                        break;
                    }
                }
            }
        }
        self.cursor = next;
        if let Some(e) = last_err {
            return Err(e);
        }
        Ok(crate::worker::Pass {
            state: "idle",
            progress: format!(
                "{}{} chunk(s) offloaded ({}), {} cold file(s) erasure-coded ({}), {} failed",
                if stores {
                    ""
                } else {
                    "no remote store (--tier); "
                },
                self.offloaded,
                cairn_types::format_bytes(self.bytes),
                self.encoded,
                cairn_types::format_bytes(self.encoded_bytes),
                self.failed
            ),
            next: match (self.cursor.is_some(), stores) {
                (true, true) => Duration::ZERO,
                // Only the cold policy tier=ec to look for: a gentler
                // walk (about 5,000 files a second) on clusters that may
                // never use it.
                (true, false) => Duration::from_millis(50),
                (false, _) => interval,
            },
        })
    }
}
