//! Prefetch jobs: spread a set of file versions to every node of a group
//! as cache copies (`cairn prefetch --group G`, the `hot=G` cue).
//!
//! A job names its files at the versions it started with (their extents
//! are in the job record), so a file replaced meanwhile is still copied as
//! it was, and the job says so. Jobs are kept in the store under `J/<id>`
//! and run by the leader's [`PrefetchWorker`], which drives the pure
//! [`Fanout`] scheduler with real transfers: it asks a destination node to
//! fetch a chunk from the source the scheduler chose (`CacheFetch`; the
//! node checks every block and the whole against the chunk's checksums),
//! records each copy made (see [`crate::cache_copies`]), and feeds the
//! outcome back. Meta never carries bytes.
//!
//! A finished job keeps watching its group: a node that joins it, or comes
//! back, is filled in. A job ends when none of its files is current any
//! more (replaced or removed) and it has nothing left to copy, or when a
//! newer `hot=` version of the same file supersedes it.

use crate::fanout::{Failure, Fanout, FanoutConfig, Transfer};
use crate::server::Meta;
use crate::store::{prefix_end, Txn};
use crate::worker::{Pass, Worker};
use cairn_proto::{Capability, NodeAddr, PrefetchJobStatus, StorageRequest};
use cairn_types::{
    now_ms, CairnPath, ChunkId, Error, ErrorKind, Extent, InodeId, InodeKind, NodeId, Result,
    Version,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

const JOB_PREFIX: &[u8] = b"J/";
/// Most files one request may name (directories expanded).
const MAX_FILES: usize = 1_000_000;
/// A destination skipped as unreachable is tried again after this long.
const UNREACHABLE_RETRY_MS: u64 = 10_000;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a job looks its files up again (durable holders, versions).
const REFRESH_MS: u64 = 5_000;
/// How often the leader takes up jobs stored by other meta servers.
const LOAD_EVERY: Duration = Duration::from_secs(5);

fn job_key(id: u64) -> Vec<u8> {
    let mut k = JOB_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct JobFile {
    path: String,
    inode: InodeId,
    version: Version,
    extents: Vec<JobExtent>,
}

/// A replicated chunk of a job, in the layout job records have always had
/// (a stored job decodes whatever [`Extent`] becomes).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct JobExtent {
    chunk: ChunkId,
    len: u64,
    crc: u32,
    nodes: Vec<NodeId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct JobRecord {
    id: u64,
    group: String,
    files: Vec<JobFile>,
    started_ms: u64,
    done_ms: u64,
}

struct Job {
    rec: JobRecord,
    /// Built by the leader's worker.
    fan: Option<Fanout>,
    /// Flattened chunks of every file, in order (the fan-out's numbering).
    chunks: Vec<Extent>,
    copies_done: u64,
    bytes_done: u64,
    notes: Vec<String>,
    /// Destinations skipped as unreachable, with when.
    unreachable: HashMap<NodeId, u64>,
    /// The last failed copy, for the status.
    last_error: Option<String>,
    /// Durable holders and notes as last looked up, and when (a lookup per
    /// file, so not every round).
    durable: HashMap<ChunkId, Vec<NodeId>>,
    refreshed_ms: u64,
    /// Chunks no live node holds, while that stalls the job.
    waiting: Option<String>,
}

impl Job {
    fn new(rec: JobRecord) -> Job {
        // A chunk shared by two files (a hard link, say) is copied once.
        let mut seen = HashSet::new();
        let chunks = rec
            .files
            .iter()
            .flat_map(|f| f.extents.iter())
            .filter(|e| seen.insert(e.chunk))
            .map(|e| Extent::replicated(e.chunk, e.len, e.crc, e.nodes.clone()))
            .collect();
        Job {
            rec,
            fan: None,
            chunks,
            copies_done: 0,
            bytes_done: 0,
            notes: Vec::new(),
            unreachable: HashMap::new(),
            last_error: None,
            durable: HashMap::new(),
            refreshed_ms: 0,
            waiting: None,
        }
    }

    fn status(&self) -> PrefetchJobStatus {
        let mut st = PrefetchJobStatus {
            id: self.rec.id,
            group: self.rec.group.clone(),
            files: self.rec.files.iter().map(|f| f.path.clone()).collect(),
            chunks: self.chunks.len() as u64,
            bytes: self.chunks.iter().map(|e| e.len).sum(),
            copies_done: self.copies_done,
            bytes_done: self.bytes_done,
            notes: self.notes.iter().chain(&self.waiting).cloned().collect(),
            started_ms: self.rec.started_ms,
            done_ms: self.rec.done_ms,
            state: "running".into(),
            ..Default::default()
        };
        if let Some(fan) = &self.fan {
            let p = fan.progress();
            st.nodes = p.dests;
            st.nodes_done = p.dests_done;
            st.copies_total = self.copies_done + p.copies_missing + p.inflight;
            st.skipped = fan.skipped();
            if fan.is_complete() {
                st.state = if p.gave_up > 0 || (p.dests == 0 && !st.skipped.is_empty()) {
                    "failed".into()
                } else {
                    "done".into()
                };
                if p.gave_up > 0 {
                    st.notes.push(format!(
                        "{} chunk copies failed after retries (last: {})",
                        p.gave_up,
                        self.last_error.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
        st
    }
}

/// The jobs, shared between the request handlers and the worker.
#[derive(Default)]
pub struct PrefetchJobs {
    jobs: Mutex<BTreeMap<u64, Job>>,
    pub(crate) kick: Arc<Notify>,
}

impl PrefetchJobs {
    pub fn status(&self, ids: &[u64]) -> Vec<PrefetchJobStatus> {
        let jobs = self.jobs.lock().unwrap();
        jobs.values()
            .filter(|j| ids.is_empty() || ids.contains(&j.rec.id))
            .map(Job::status)
            .collect()
    }

    fn insert(&self, rec: JobRecord) {
        self.jobs.lock().unwrap().insert(rec.id, Job::new(rec));
        self.kick.notify_one();
    }
}

impl Meta {
    /// Every file at or below `paths`, with its current version.
    async fn prefetch_files(&self, paths: &[CairnPath]) -> Result<Vec<JobFile>> {
        let mut out = Vec::new();
        let mut stack: Vec<CairnPath> = paths.to_vec();
        while let Some(p) = stack.pop() {
            let inode = self.ns.lookup(&p).await?;
            match inode.kind {
                InodeKind::File => out.push(JobFile {
                    path: p.as_str().to_string(),
                    inode: inode.id,
                    version: inode.version,
                    extents: cacheable(inode.extents),
                }),
                InodeKind::Directory => {
                    let mut after: Option<String> = None;
                    loop {
                        let page = self.ns.list(&p, after.as_deref(), 1000).await?;
                        let Some(last) = page.last() else { break };
                        after = Some(last.name.clone());
                        for e in page {
                            match e.inode.kind {
                                InodeKind::File => out.push(JobFile {
                                    path: p.join(&e.name)?.as_str().to_string(),
                                    inode: e.inode.id,
                                    version: e.inode.version,
                                    extents: cacheable(e.inode.extents),
                                }),
                                InodeKind::Directory => stack.push(p.join(&e.name)?),
                                _ => {}
                            }
                        }
                        if out.len() > MAX_FILES {
                            return Err(Error::invalid(format!(
                                "more than {MAX_FILES} files to prefetch: name fewer paths"
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn check_group(&self, group: &str) -> Result<()> {
        cairn_types::check_group_name(group)?;
        let members = self.nodes.group_members(group);
        if members.is_empty() {
            return Err(Error::not_found(format!(
                "no storage node is in group {group:?}; start one with `cairn storage --group {group}` \
                 or add one with `cairn cluster group add NODE {group}`"
            )));
        }
        if !members.iter().any(|(_, _, up)| *up) {
            return Err(Error::unavailable(format!(
                "group {group:?} has {} node(s), none of them live",
                members.len()
            )));
        }
        Ok(())
    }

    /// `cairn prefetch`: start a job (or evict), answer its status.
    pub(crate) async fn handle_prefetch(
        &self,
        paths: Vec<CairnPath>,
        group: String,
        evict: bool,
    ) -> Result<Vec<PrefetchJobStatus>> {
        if paths.is_empty() {
            return Err(Error::invalid("prefetch needs at least one path"));
        }
        cairn_types::check_group_name(&group)?;
        let files = self.prefetch_files(&paths).await?;
        if evict {
            return Ok(vec![self.evict(&files, &group).await?]);
        }
        self.check_group(&group)?;
        let id = self.new_job(files, &group, None).await?;
        Ok(self.prefetch.status(&[id]))
    }

    /// Persist and start a job; with `supersede`, drop older jobs of the
    /// same path and group (a `hot=` file's previous versions).
    async fn new_job(
        &self,
        files: Vec<JobFile>,
        group: &str,
        supersede: Option<&str>,
    ) -> Result<u64> {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).expect("OS random source");
        let id = u64::from_be_bytes(b) >> 12; // fits a JSON number exactly
        let rec = JobRecord {
            id,
            group: group.to_string(),
            files,
            started_ms: now_ms(),
            done_ms: 0,
        };
        let value = postcard::to_stdvec(&rec).map_err(|e| Error::internal(e.to_string()))?;
        let mut txn = Txn::new().put(job_key(id), value);
        let old: Vec<u64> = match supersede {
            Some(path) => {
                let jobs = self.prefetch.jobs.lock().unwrap();
                jobs.values()
                    .filter(|j| {
                        j.rec.group == group
                            && j.rec.files.len() == 1
                            && j.rec.files[0].path == path
                    })
                    .map(|j| j.rec.id)
                    .collect()
            }
            None => Vec::new(),
        };
        for o in &old {
            txn = txn.delete(job_key(*o));
        }
        self.store.commit(txn).await?;
        {
            let mut jobs = self.prefetch.jobs.lock().unwrap();
            for o in &old {
                jobs.remove(o);
            }
        }
        info!(job = id, %group, files = rec.files.len(), "prefetch job started");
        self.prefetch.insert(rec);
        Ok(id)
    }

    /// A version committed under `hot=GROUP`: prefetch it.
    pub(crate) async fn prefetch_hot(
        &self,
        path: &CairnPath,
        inode: &cairn_types::Inode,
        group: &str,
    ) {
        if inode.extents.iter().all(|e| e.ec.is_some()) {
            return;
        }
        if let Err(e) = self.check_group(group) {
            warn!(%path, "hot={group}: not prefetched: {e}");
            return;
        }
        let file = JobFile {
            path: path.as_str().to_string(),
            inode: inode.id,
            version: inode.version,
            extents: cacheable(inode.extents.clone()),
        };
        if let Err(e) = self.new_job(vec![file], group, Some(path.as_str())).await {
            warn!(%path, "hot={group}: could not start the prefetch: {e}");
        }
    }

    /// Drop the group's cache copies of these files, and the jobs that
    /// would refill them.
    async fn evict(&self, files: &[JobFile], group: &str) -> Result<PrefetchJobStatus> {
        let members: HashSet<NodeId> = self
            .nodes
            .group_members(group)
            .into_iter()
            .map(|(a, _, _)| a.id)
            .collect();
        let mut by_node: BTreeMap<NodeId, Vec<ChunkId>> = BTreeMap::new();
        let mut bytes = 0u64;
        for f in files {
            for e in &f.extents {
                for n in self.cache.holders(e.chunk) {
                    if members.contains(&n) {
                        by_node.entry(n).or_default().push(e.chunk);
                        bytes += e.len;
                    }
                }
            }
        }
        // Jobs of this group over these files stop first, so none refills.
        let paths: HashSet<(&str, InodeId)> =
            files.iter().map(|f| (f.path.as_str(), f.inode)).collect();
        let gone: Vec<u64> = {
            let mut jobs = self.prefetch.jobs.lock().unwrap();
            let ids: Vec<u64> = jobs
                .values()
                .filter(|j| {
                    j.rec.group == group
                        && j.rec
                            .files
                            .iter()
                            .all(|f| paths.contains(&(f.path.as_str(), f.inode)))
                })
                .map(|j| j.rec.id)
                .collect();
            for id in &ids {
                jobs.remove(id);
            }
            ids
        };
        for id in gone {
            self.store.commit(Txn::new().delete(job_key(id))).await?;
        }
        let mut st = PrefetchJobStatus {
            group: group.to_string(),
            files: files.iter().map(|f| f.path.clone()).collect(),
            state: "evicted".into(),
            nodes: by_node.len() as u64,
            started_ms: now_ms(),
            ..Default::default()
        };
        for (node, chunks) in by_node {
            let Some(addr) = self.nodes.addr(node) else {
                continue;
            };
            let req = StorageRequest::DropCache {
                chunks: chunks.clone(),
            };
            match self.node_call::<()>(&addr.addr, &req).await {
                Ok(()) => {
                    let pairs: Vec<(ChunkId, NodeId)> = chunks.iter().map(|c| (*c, node)).collect();
                    self.cache.remove_many(&pairs).await?;
                    st.copies_done += chunks.len() as u64;
                    st.nodes_done += 1;
                }
                Err(e) => st.skipped.push((node, e.to_string())),
            }
        }
        st.bytes_done = bytes;
        st.done_ms = now_ms();
        Ok(st)
    }
}

/// A transfer's outcome, back from its task.
struct Outcome {
    job: u64,
    t: Transfer,
    len: u64,
    result: std::result::Result<(), (Failure, String)>,
}

/// Runs the jobs on the leader.
pub struct PrefetchWorker {
    meta: Arc<Meta>,
    /// When the stored jobs were last taken up (None: not as leader yet).
    loaded: Option<std::time::Instant>,
    tx: mpsc::UnboundedSender<Outcome>,
    rx: mpsc::UnboundedReceiver<Outcome>,
    inflight: usize,
    cfg: FanoutConfig,
}

impl PrefetchWorker {
    pub fn new(meta: Arc<Meta>, cfg: FanoutConfig) -> PrefetchWorker {
        let (tx, rx) = mpsc::unbounded_channel();
        PrefetchWorker {
            meta,
            loaded: None,
            tx,
            rx,
            inflight: 0,
            cfg,
        }
    }

    /// Take up the stored jobs: those another meta server started (or this
    /// one before it restarted), and drop those removed meanwhile (evicted
    /// through another meta server).
    async fn load(&self) -> Result<()> {
        let end = prefix_end(JOB_PREFIX);
        let kvs = self.meta.store.scan(JOB_PREFIX, &end, usize::MAX).await?;
        let mut jobs = self.meta.prefetch.jobs.lock().unwrap();
        let mut stored = HashSet::new();
        for kv in kvs {
            match postcard::from_bytes::<JobRecord>(&kv.value) {
                Ok(rec) => {
                    stored.insert(rec.id);
                    jobs.entry(rec.id).or_insert_with(|| Job::new(rec));
                }
                Err(e) => warn!("undecodable prefetch job record: {e}"),
            }
        }
        jobs.retain(|id, _| stored.contains(id));
        Ok(())
    }

    /// Current durable holders of a job's chunks, and which files are
    /// no longer current.
    async fn refresh(&self, rec: &JobRecord) -> (HashMap<ChunkId, Vec<NodeId>>, Vec<String>) {
        let mut holders = HashMap::new();
        let mut notes = Vec::new();
        for f in &rec.files {
            let current = match CairnPath::parse(&f.path) {
                Ok(p) => self.meta.ns.lookup(&p).await.ok(),
                Err(_) => None,
            };
            let extents = match current {
                Some(i) if i.id == f.inode && i.version == f.version => cacheable(i.extents),
                Some(i) => {
                    notes.push(format!(
                        "{} is now version {} ; this job copies version {}",
                        f.path, i.version, f.version
                    ));
                    f.extents.clone()
                }
                None => {
                    notes.push(format!(
                        "{} was removed; this job copies version {}",
                        f.path, f.version
                    ));
                    f.extents.clone()
                }
            };
            for e in extents {
                holders.insert(e.chunk, e.nodes);
            }
        }
        (holders, notes)
    }

    /// One round: bring each job's fan-out up to date with the cluster,
    /// start what it allows.
    async fn schedule(&mut self) -> Result<usize> {
        let meta = self.meta.clone();
        let ids: Vec<u64> = meta.prefetch.jobs.lock().unwrap().keys().copied().collect();
        let mut running = 0;
        for id in ids {
            let now = now_ms();
            let (rec, stale) = match meta.prefetch.jobs.lock().unwrap().get(&id) {
                Some(j) => (
                    j.rec.clone(),
                    j.fan.is_none() || now.saturating_sub(j.refreshed_ms) > REFRESH_MS,
                ),
                None => continue,
            };
            let fresh = if stale {
                Some(self.refresh(&rec).await)
            } else {
                None
            };
            let members = meta.nodes.group_members(&rec.group);
            let mut starts = Vec::new();
            let mut finished_now = false;
            let mut retire = false;
            {
                let mut jobs = meta.prefetch.jobs.lock().unwrap();
                let Some(job) = jobs.get_mut(&id) else {
                    continue;
                };
                if let Some((durable, notes)) = fresh {
                    job.durable = durable;
                    job.notes = notes;
                    job.refreshed_ms = now;
                }
                let durable = std::mem::take(&mut job.durable);
                let fan = job.fan.get_or_insert_with(|| {
                    let mut fan = Fanout::new(job.chunks.len(), self.cfg.clone());
                    for (i, e) in job.chunks.iter().enumerate() {
                        for n in durable.get(&e.chunk).unwrap_or(&e.nodes) {
                            fan.add_holder(*n, &meta.nodes.zone(*n), i);
                        }
                        for n in meta.cache.holders(e.chunk) {
                            fan.add_holder(n, &meta.nodes.zone(n), i);
                        }
                    }
                    fan
                });
                // Holders (durable nodes, earlier destinations) up or down.
                for (i, e) in job.chunks.iter().enumerate() {
                    for n in durable.get(&e.chunk).unwrap_or(&e.nodes) {
                        if !fan.holds(*n, i) {
                            fan.add_holder(*n, &meta.nodes.zone(*n), i);
                        }
                        fan.set_alive(*n, meta.nodes.is_live(*n));
                    }
                }
                // Skipped for a reason other than being out of reach (no
                // room): not tried again by this job.
                let refused: HashSet<NodeId> = fan
                    .skipped()
                    .into_iter()
                    .filter(|(_, why)| !why.starts_with("unreachable"))
                    .map(|(n, _)| n)
                    .collect();
                for (addr, zone, up) in &members {
                    let unreachable_since = job.unreachable.get(&addr.id).copied();
                    if *up
                        && (!fan.is_dest(addr.id)
                            && unreachable_since
                                .is_none_or(|t| now.saturating_sub(t) > UNREACHABLE_RETRY_MS))
                        && !refused.contains(&addr.id)
                    {
                        job.unreachable.remove(&addr.id);
                        fan.add_dest(addr.id, zone);
                    }
                    fan.set_alive(addr.id, *up);
                }
                fan.poke();
                for t in fan.assign() {
                    let e = &job.chunks[t.chunk];
                    starts.push((t, e.clone()));
                }
                if fan.is_complete() {
                    if job.rec.done_ms == 0 {
                        job.rec.done_ms = now;
                        finished_now = true;
                    }
                    // Nothing to copy any more and no file current: done for good.
                    retire = job.notes.len() == job.rec.files.len();
                } else {
                    running += 1;
                    if job.rec.done_ms != 0 {
                        job.rec.done_ms = 0; // filling in a node again
                    }
                    job.waiting = None;
                    if fan.is_stalled() {
                        let lost = fan.sourceless_chunks();
                        if !lost.is_empty() {
                            job.waiting = Some(format!(
                                "waiting for a live copy of {} chunk(s)",
                                lost.len()
                            ));
                        }
                    }
                }
                job.durable = durable;
            }
            if finished_now || retire {
                let latest = meta
                    .prefetch
                    .jobs
                    .lock()
                    .unwrap()
                    .get(&id)
                    .map(|j| j.rec.clone());
                if let Some(latest) = latest {
                    let txn = if retire {
                        Txn::new().delete(job_key(id))
                    } else {
                        let v = postcard::to_stdvec(&latest)
                            .map_err(|e| Error::internal(e.to_string()))?;
                        Txn::new().put(job_key(id), v)
                    };
                    meta.store.commit(txn).await?;
                }
                if finished_now {
                    info!(job = id, group = %rec.group, "prefetch job complete");
                }
                if retire {
                    debug!(job = id, "prefetch job retired: its files were replaced");
                    meta.prefetch.jobs.lock().unwrap().remove(&id);
                }
            }
            for (t, e) in starts {
                self.start(id, t, e);
            }
        }
        Ok(running)
    }

    fn start(&mut self, job: u64, t: Transfer, e: Extent) {
        let meta = self.meta.clone();
        let tx = self.tx.clone();
        self.inflight += 1;
        // The copy is in progress: the orphan sweep leaves the chunk alone.
        meta.recent.lock().unwrap().insert(e.chunk, now_ms());
        tokio::spawn(async move {
            let result = transfer(&meta, &t, &e).await;
            let _ = tx.send(Outcome {
                job,
                t,
                len: e.len,
                result,
            });
        });
    }

    async fn absorb(&mut self, o: Outcome) -> Result<()> {
        self.inflight = self.inflight.saturating_sub(1);
        let chunk = {
            let jobs = self.meta.prefetch.jobs.lock().unwrap();
            jobs.get(&o.job).map(|j| j.chunks[o.t.chunk].chunk)
        };
        if let (Ok(()), Some(c)) = (&o.result, chunk) {
            // Recorded before the scheduler counts it, so a copy it hands
            // on as a source is one meta knows of.
            self.meta.cache.add(c, o.t.dst, o.len).await?;
        }
        let mut jobs = self.meta.prefetch.jobs.lock().unwrap();
        let Some(job) = jobs.get_mut(&o.job) else {
            return Ok(());
        };
        let Some(fan) = job.fan.as_mut() else {
            return Ok(());
        };
        match o.result {
            Ok(()) => {
                fan.done(&o.t);
                job.copies_done += 1;
                job.bytes_done += o.len;
            }
            Err((f, msg)) => {
                job.last_error = Some(msg);
                if let Failure::Destination(why) = &f {
                    if why.starts_with("unreachable") {
                        job.unreachable.insert(o.t.dst, now_ms());
                    }
                }
                fan.failed(&o.t, f);
            }
        }
        Ok(())
    }
}

/// Have `t.dst` fetch the chunk from `t.src`; classify a failure, with
/// what went wrong for the job's status.
async fn transfer(
    meta: &Meta,
    t: &Transfer,
    e: &Extent,
) -> std::result::Result<(), (Failure, String)> {
    copy(meta, t, e).await.map_err(|(f, msg)| {
        (
            f,
            format!(
                "chunk {} to node {} from node {}: {msg}",
                e.chunk, t.dst, t.src
            ),
        )
    })
}

async fn copy(meta: &Meta, t: &Transfer, e: &Extent) -> std::result::Result<(), (Failure, String)> {
    let dest = |m: String| (Failure::Destination(m.clone()), m);
    let (Some(dst), Some(src)) = (meta.nodes.addr(t.dst), meta.nodes.addr(t.src)) else {
        return Err(dest("unreachable: unknown node".into()));
    };
    let get = || async {
        meta.peers
            .get(&dst.addr)
            .await
            .map_err(|e| dest(format!("unreachable: {e}")))
    };
    let mut p = get().await?;
    let req = StorageRequest::CacheFetch {
        chunk: e.chunk,
        len: e.len,
        crc: e.crc,
        sources: vec![NodeAddr {
            id: src.id,
            addr: src.addr,
        }],
        cap: Capability::sign(&meta.secret, e.chunk, false, None),
    };
    let mut answer: Result<std::result::Result<(), Error>> =
        p.conn.call(&req, TRANSFER_TIMEOUT).await;
    if p.reused
        && answer
            .as_ref()
            .is_err_and(|e| e.kind == ErrorKind::Unavailable)
    {
        // A pooled connection the node closed (it restarted): a new one.
        meta.peers.forget(&dst.addr);
        p = get().await?;
        answer = p.conn.call(&req, TRANSFER_TIMEOUT).await;
    }
    match answer {
        Ok(Ok(())) => {
            meta.peers.put(&dst.addr, p.conn);
            Ok(())
        }
        Ok(Err(err)) => {
            meta.peers.put(&dst.addr, p.conn);
            debug!(chunk = %e.chunk, src = %t.src, dst = %t.dst, "prefetch copy failed: {err}");
            let f = match err.kind {
                ErrorKind::NoSpace => Failure::Destination(format!("no room: {}", err.message)),
                ErrorKind::NotFound => Failure::SourceLost,
                _ => Failure::Source,
            };
            Err((f, err.to_string()))
        }
        // The connection to the destination broke.
        Err(err) => Err(dest(format!("unreachable: {err}"))),
    }
}

#[async_trait::async_trait]
impl Worker for PrefetchWorker {
    fn name(&self) -> &'static str {
        "prefetch"
    }

    async fn pass(&mut self) -> Result<Pass> {
        if !self.meta.election.is_leader() {
            self.loaded = None;
            // The leader records the copies it makes; catch up for reads.
            self.meta.cache.reload().await?;
            return Ok(Pass {
                state: "standby",
                progress: String::new(),
                next: Duration::from_secs(2),
            });
        }
        if self.loaded.is_none_or(|t| t.elapsed() >= LOAD_EVERY) {
            self.load().await?;
            self.loaded = Some(std::time::Instant::now());
        }
        let running = self.schedule().await?;
        // Take outcomes for a moment, then schedule again.
        if self.inflight > 0 {
            if let Ok(Some(o)) =
                tokio::time::timeout(Duration::from_millis(500), self.rx.recv()).await
            {
                self.absorb(o).await?;
            }
            while let Ok(o) = self.rx.try_recv() {
                self.absorb(o).await?;
            }
        }
        let jobs = self.meta.prefetch.jobs.lock().unwrap().len();
        Ok(Pass {
            state: if running > 0 { "busy" } else { "idle" },
            progress: format!(
                "{jobs} job(s), {running} running, {} copies in flight",
                self.inflight
            ),
            next: if self.inflight > 0 || running > 0 {
                Duration::from_millis(if self.inflight > 0 { 0 } else { 500 })
            } else {
                Duration::from_secs(2)
            },
        })
    }
}

/// The extents a prefetch copies: replicated chunks. An erasure-coded
/// chunk has no whole copy to hand on (its shards are read and decoded by
/// the reader), so it is left to be read from its shards; an offloaded one
/// (not yet) is read through from its remote store on first read.
fn cacheable(extents: Vec<Extent>) -> Vec<JobExtent> {
    extents
        .into_iter()
        .filter(|e| e.ec.is_none() && e.remote.is_none())
        .map(|e| JobExtent {
            chunk: e.chunk,
            len: e.len,
            crc: e.crc,
            nodes: e.nodes,
        })
        .collect()
}
