//! Background conversion between redundancies (`rep=N` <-> `ec=K+M`).
//!
//! Redundancy is fixed on a file when it is written. Setting `rep=` or
//! `ec=` on a directory records a conversion job for it (a key per path in
//! meta's store, so it survives a meta restart; a rename into a directory
//! that asks for another redundancy, and a commit whose chunks are not
//! what the file's cues say, record one for what they touched); the leader's
//! [`ConvertWorker`] walks the directory's subtree a page of entries per
//! pass and brings every file whose layout is not what its directory asks
//! for now into line (a subdirectory with a `rep=`/`ec=` of its own asks
//! for that). Per file:
//!
//! 1. each chunk gets a new chunk from the allocator, placed as a write
//!    with the new cues would be;
//! 2. a storage node reads the old chunk whole (its own copy, a replica,
//!    or K shards), checks it against meta's checksum and writes it anew:
//!    a replication chain, or K+M shards (`StorageRequest::Transcode`), so
//!    the bytes go node to node, never through meta;
//! 3. the new extents are committed as the file's next version in one
//!    transaction, only if the file is still the version read (a writer
//!    racing the conversion wins: the new chunks are discarded, and the
//!    writer's version is converted in turn, since a rewrite keeps the
//!    file's old redundancy). The old chunks become garbage after the gc
//!    delay, as a replaced version's.
//!
//! The job is deleted after a walk with no failure (and no newer job for
//! the same directory meanwhile); otherwise it stays and the walk runs
//! again later. Files already converted cost a listing entry on a re-walk,
//! so a crash anywhere only repeats work. Offloaded files (`tier=`) and
//! write-once ones are left as they are. The copying is throttled by the
//! repair bandwidth; `cairn cluster status` shows the worker's progress.

use crate::server::Meta;
use crate::store::Txn;
use cairn_proto::{Capability, MetaResponse, NodeAddr, StorageRequest};
use cairn_types::{
    CairnPath, Cues, EcShards, Error, ErrorKind, Extent, Inode, InodeKind, Layout, Result,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Keys of conversion jobs: this, then the directory's path.
const JOB_PREFIX: &[u8] = b"X/";
/// Directory entries looked at per pass.
const PAGE: usize = 256;
/// Times in a row a file is converted anew after a writer changed it.
const MAX_RACES: u32 = 3;

fn job_key(path: &CairnPath) -> Vec<u8> {
    [JOB_PREFIX, path.as_str().as_bytes()].concat()
}

/// What became of one file.
pub(crate) enum Outcome {
    Converted(u64),
    Already,
    /// Removed or renamed meanwhile: nothing to do here.
    Gone,
    /// A writer committed a new version meanwhile: the new chunks were
    /// discarded and the writer's version stands (to be converted anew).
    Raced,
    /// Nothing to convert, or not to be converted (offloaded, write-once).
    Skipped,
}

impl Meta {
    /// Record that the files below directory `path` are to be brought to
    /// the redundancy its cues ask for now, and wake the worker.
    pub(crate) async fn add_convert_job(&self, path: &CairnPath) -> Result<()> {
        let at = cairn_types::now_ms().to_be_bytes().to_vec();
        self.store.commit(Txn::new().put(job_key(path), at)).await?;
        info!(%path, "conversion job recorded");
        self.convert_kick.notify_one();
        Ok(())
    }

    /// After a commit: a writer that allocated its chunks before a
    /// conversion changed the file's redundancy (or before its directory's
    /// cue changed) commits chunks of the old layout under the new cues.
    /// Such a file gets a job of its own, so it is converted in turn.
    pub(crate) async fn convert_if_off_layout(&self, path: &CairnPath, inode: &Inode) {
        if !self.auto_convert || !off_layout(inode) {
            return;
        }
        if let Err(e) = self.add_convert_job(path).await {
            warn!(%path, "could not record a conversion job: {e}");
        }
    }

    /// After a rename: what moved into a directory that asks for another
    /// redundancy than the one it left is converted to the new one (a
    /// subtree with its own `rep=`/`ec=` keeps it: the walk finds nothing).
    pub(crate) async fn convert_after_rename(&self, src: &CairnPath, dst: &CairnPath) {
        let (Some((from, _)), Some((to, _))) = (src.split_last(), dst.split_last()) else {
            return;
        };
        if !self.auto_convert {
            return;
        }
        // A job waiting for what moved (or below it) moves with it.
        let pending = self.convert_jobs_below(src).await.unwrap_or(true);
        let differs = from != to && {
            let default_rep = self.default_rep.load(Ordering::Relaxed);
            let wanted =
                |c: &crate::namespace::ResolvedCues| Layout::wanted(&c.effective, default_rep);
            match (self.ns.cues(&from).await, self.ns.cues(&to).await) {
                (Ok(a), Ok(b)) => wanted(&a) != wanted(&b),
                // The old directory went meanwhile: look at what moved.
                _ => true,
            }
        };
        if differs || pending {
            if let Err(e) = self.add_convert_job(dst).await {
                warn!(path = %dst, "could not record a conversion job: {e}");
            }
        }
    }

    /// The waiting job after key `after` (round robin, so a job that
    /// keeps failing does not hold up the others): its key, revision and
    /// directory.
    async fn next_convert_job(
        &self,
        after: Option<&[u8]>,
    ) -> Result<Option<(Vec<u8>, u64, CairnPath)>> {
        let end = crate::store::prefix_end(JOB_PREFIX);
        let mut jobs = Vec::new();
        if let Some(after) = after {
            let from = [after, &[0u8]].concat();
            jobs = self.store.scan(&from, &end, 1).await?;
        }
        if jobs.is_empty() {
            jobs = self.store.scan(JOB_PREFIX, &end, 1).await?;
        }
        let Some(kv) = jobs.into_iter().next() else {
            return Ok(None);
        };
        let path = std::str::from_utf8(&kv.key[JOB_PREFIX.len()..])
            .map_err(|_| Error::internal("a conversion job's key is not UTF-8"))
            .and_then(CairnPath::parse)?;
        Ok(Some((kv.key, kv.revision, path)))
    }

    /// Whether a job waits for `path` or something below it.
    async fn convert_jobs_below(&self, path: &CairnPath) -> Result<bool> {
        let start = job_key(path);
        let end = crate::store::prefix_end(&start);
        let jobs = self.store.scan(&start, &end, 1000).await?;
        let below = format!("{}/", path.as_str().trim_end_matches('/'));
        Ok(jobs.iter().any(|kv| {
            let p = &kv.key[JOB_PREFIX.len()..];
            p == path.as_str().as_bytes() || p.starts_with(below.as_bytes())
        }))
    }

    /// Waiting jobs (for the worker's progress line).
    async fn convert_jobs_waiting(&self) -> Result<usize> {
        let end = crate::store::prefix_end(JOB_PREFIX);
        Ok(self.store.scan(JOB_PREFIX, &end, 10_000).await?.len())
    }

    /// Convert file `path` to `want` unless it is so already (module doc).
    pub(crate) async fn convert_file(&self, path: &CairnPath, want: Layout) -> Result<Outcome> {
        let (key, inode) = match self.ns.file_key(path).await {
            Ok(k) => k,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(Outcome::Gone),
            Err(e) => return Err(e),
        };
        let Some(have) = inode.layout() else {
            return Ok(Outcome::Skipped);
        };
        if have == want {
            return Ok(Outcome::Already);
        }
        if inode.cues.is_write_once() || inode.extents.iter().any(|e| e.remote.is_some()) {
            return Ok(Outcome::Skipped);
        }
        let mut cues = want.cues();
        // A file's own sync= stays within its new rep=.
        if let (Layout::Rep(n), Some(sync)) = (want, inode.cues.sync) {
            cues.sync = Some(sync.min(n));
        }
        let mut made: Vec<Extent> = Vec::with_capacity(inode.extents.len());
        let r = self.transcode_all(path, &inode, &cues, &mut made).await;
        // The error, and whether it is the commit's (whose outcome an
        // error may leave unknown).
        let r = match r {
            Ok(()) => {
                self.still_recent(&made);
                let r = self.ns.relayout(&key, inode.version, &made, &cues).await;
                r.map_err(|e| (e, true))
            }
            Err(e) => Err((e, false)),
        };
        match r {
            Ok(true) => {
                self.committed(&made).await;
                self.repair_kick.notify_one();
                info!(%path, from = %have, to = %want, "converted");
                Ok(Outcome::Converted(inode.size))
            }
            Ok(false) => {
                self.discard_unheld(path, &made).await;
                Ok(Outcome::Raced)
            }
            Err((e, commit)) => {
                // Only after a failure that certainly committed nothing (an
                // etcd transaction whose answer was lost may have applied):
                // otherwise the chunks are left to the orphan sweep.
                if !commit || crate::server::certainly_not_applied(&e) {
                    self.discard_unheld(path, &made).await;
                }
                Err(e.context(format!("converting {path} from {have} to {want}")))
            }
        }
    }

    /// Send the new chunks of a conversion that did not commit to garbage,
    /// but none the file holds now (a commit whose answer was lost, then
    /// retried as a conflict, did take them); if the file cannot be read,
    /// the orphan sweep gets them later instead.
    async fn discard_unheld(&self, path: &CairnPath, made: &[Extent]) {
        let unheld = match self.unheld(path, made).await {
            Ok(unheld) => unheld,
            Err(e) => {
                warn!(%path, "keeping the chunks of a failed conversion for the orphan sweep: {e}");
                return;
            }
        };
        if let Err(e) = self.discard(&unheld).await {
            warn!(%path, "could not discard the chunks of a failed conversion: {e}");
        }
    }

    /// The new chunks of a conversion in progress count as handed out
    /// just now, so the orphan sweep leaves them however long the file
    /// takes.
    fn still_recent(&self, made: &[Extent]) {
        let now = cairn_types::now_ms();
        let mut recent = self.recent.lock().unwrap();
        for e in made {
            recent.insert(e.chunk, now);
        }
    }

    /// Where each copy or shard of `ext` can be read (aligned with its
    /// nodes): None on a node that is down or reported it corrupt.
    pub(crate) fn readable_sources(&self, ext: &Extent) -> Vec<Option<NodeAddr>> {
        ext.stored()
            .into_iter()
            .map(|(stored, n)| {
                let readable = self.nodes.state(n).is_up() && !self.nodes.is_corrupt(stored, n);
                readable.then(|| self.nodes.addr(n)).flatten()
            })
            .collect()
    }

    /// Write every chunk of `inode` anew with `cues`, pushing each new
    /// extent onto `made` before its bytes are written (so a failure can
    /// discard it).
    async fn transcode_all(
        &self,
        path: &CairnPath,
        inode: &Inode,
        cues: &cairn_types::Cues,
        made: &mut Vec<Extent>,
    ) -> Result<()> {
        // A window of chunks at a time (the repair parallelism), each on
        // its own node: reads, coding and writes of several chunks overlap.
        let window = self.repair_cfg.parallelism.max(1);
        for exts in inode.extents.chunks(window) {
            let first = made.len();
            let mut reqs = Vec::with_capacity(exts.len());
            for ext in exts {
                let alloc = match self
                    .alloc(None, path, cues, None, &[], ext.len, None)
                    .await?
                {
                    MetaResponse::Alloc(a) => a,
                    other => return Err(Error::internal(format!("allocation answered {other:?}"))),
                };
                made.push(Extent {
                    chunk: alloc.chunk,
                    len: ext.len,
                    crc: ext.crc,
                    nodes: alloc.nodes.iter().map(|n| n.id).collect(),
                    ec: alloc.ec.map(|scheme| EcShards {
                        scheme,
                        shard_len: scheme.shard_len(ext.len),
                        crcs: Vec::new(),
                    }),
                    remote: None,
                });
                let sources = self.readable_sources(ext);
                // A node with a whole copy reads it from its own disk;
                // else the first new node gathers the bytes.
                let worker = match (&ext.ec, sources.iter().flatten().next()) {
                    (None, Some(a)) => a.clone(),
                    _ => alloc
                        .nodes
                        .first()
                        .cloned()
                        .ok_or_else(|| Error::internal("an empty placement"))?,
                };
                let req = StorageRequest::Transcode {
                    from: ext.clone(),
                    sources,
                    cap: Capability::sign(&self.secret, ext.chunk, false, None),
                    to: alloc,
                };
                reqs.push((ext.chunk, worker, req));
            }
            self.still_recent(made);
            let answers = futures_util::future::join_all(reqs.iter().map(
                |(chunk, worker, req)| async move {
                    self.node_call::<Option<EcShards>>(&worker.addr, req)
                        .await
                        .map_err(|e| e.context(format!("chunk {chunk} on {}", worker.addr)))
                },
            ))
            .await;
            for (i, (answer, (_, worker, _))) in answers.into_iter().zip(&reqs).enumerate() {
                let new = &mut made[first + i];
                match (&mut new.ec, answer?) {
                    (Some(planned), Some(got)) if got.shard_len == planned.shard_len => {
                        *planned = got
                    }
                    (None, None) => {}
                    _ => {
                        return Err(Error::internal(format!(
                            "{} answered a layout other than the one asked for",
                            worker.addr
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether some chunk of `inode` on storage nodes (offloaded ones aside)
/// is kept otherwise than its cues say: an
/// erasure-coding scheme other than its `ec=`, shards where it asks for
/// replicas, or more replicas than its `rep=` (fewer is repair's to fix).
fn off_layout(inode: &Inode) -> bool {
    let mut local = inode.extents.iter().filter(|e| e.remote.is_none());
    local.any(|e| match (&e.ec, inode.cues.ec) {
        (Some(have), Some(want)) => have.scheme != want,
        (None, None) => inode.cues.rep.is_some_and(|r| e.nodes.len() > r as usize),
        _ => true,
    })
}

/// Where a walk over a job's subtree is.
struct Walk {
    key: Vec<u8>,
    revision: u64,
    root: CairnPath,
    /// Directories still to list.
    dirs: Vec<CairnPath>,
    /// The directory being listed, what it asks for, and the last name
    /// listed.
    current: Option<(CairnPath, Cues, Option<String>)>,
    failed: u64,
    last_error: Option<Error>,
}

/// The leader's converter: a page of one job's subtree per pass.
pub struct ConvertWorker {
    meta: Arc<Meta>,
    throttle: cairn_proto::Throttle,
    walk: Option<Walk>,
    /// The key of the last job walked (where the next search starts).
    last_job: Option<Vec<u8>>,
    /// The job whose last walk left files unconverted, and why (until a
    /// walk of that job succeeds).
    last_failure: Option<(Vec<u8>, String)>,
    files: u64,
    bytes: u64,
    changed: u64,
    failed: u64,
}

impl ConvertWorker {
    pub fn new(meta: Arc<Meta>) -> ConvertWorker {
        let rate = meta.repair_cfg.bandwidth;
        ConvertWorker {
            meta,
            throttle: cairn_proto::Throttle::new(rate),
            walk: None,
            last_job: None,
            last_failure: None,
            files: 0,
            bytes: 0,
            changed: 0,
            failed: 0,
        }
    }

    fn progress(&self, waiting: usize) -> String {
        let now = match &self.walk {
            Some(w) => format!("converting below {}; ", w.root),
            None => String::new(),
        };
        let failure = match &self.last_failure {
            Some((_, e)) => format!("; last failure: {e}"),
            None => String::new(),
        };
        format!(
            "{now}{} job(s) waiting; {} file(s) converted ({}), {} changed meanwhile, {} failed{failure}",
            waiting,
            self.files,
            cairn_types::format_bytes(self.bytes),
            self.changed,
            self.failed
        )
    }

    /// One page of the walk; Ok(true) once the walk is over.
    async fn step(&mut self) -> Result<bool> {
        let meta = self.meta.clone();
        let default_rep = meta.default_rep.load(Ordering::Relaxed);
        let walk = self.walk.as_mut().expect("a walk");
        if walk.current.is_none() {
            let Some(dir) = walk.dirs.pop() else {
                return Ok(true);
            };
            let entry = match meta.ns.cues(&dir).await {
                Ok(r) => r,
                // Removed or renamed meanwhile: nothing there to convert.
                Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                    return Ok(false)
                }
                Err(e) => {
                    walk.dirs.push(dir); // the next pass tries it again
                    return Err(e);
                }
            };
            match entry.entry.as_ref().map(|i| i.kind) {
                Some(InodeKind::Directory) => {
                    walk.current = Some((dir, entry.effective, None));
                }
                // A job for one file (a writer committed chunks of the
                // layout it had before a conversion): what its directory
                // asks for.
                Some(InodeKind::File) => {
                    let parent = dir
                        .split_last()
                        .map(|(d, _)| d)
                        .unwrap_or_else(CairnPath::root);
                    let eff = match meta.ns.cues(&parent).await {
                        Ok(r) => r.effective,
                        Err(e) => {
                            walk.dirs.push(dir);
                            return Err(e);
                        }
                    };
                    let as_asked = |l: Layout| l.satisfies(&eff, default_rep);
                    if entry
                        .entry
                        .as_ref()
                        .and_then(|i| i.layout())
                        .is_none_or(as_asked)
                    {
                        return Ok(false);
                    }
                    let want = Layout::wanted(&eff, default_rep);
                    let mut tally = Tally::default();
                    self.convert_one(&dir, want, &mut tally).await;
                    self.walk.as_mut().expect("a walk").add(tally);
                    return Ok(false);
                }
                _ => return Ok(false),
            }
        }
        let (dir, eff, after) = walk.current.clone().expect("set above");
        let want = Layout::wanted(&eff, default_rep);
        let page = match meta.ns.list(&dir, after.as_deref(), PAGE).await {
            Ok(p) => p,
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                walk.current = None;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        walk.current = match page.last() {
            Some(last) if page.len() == PAGE => {
                Some((dir.clone(), eff.clone(), Some(last.name.clone())))
            }
            _ => None,
        };
        let mut tally = Tally::default();
        for e in &page {
            let p = dir.join(&e.name)?;
            match e.inode.kind {
                InodeKind::Directory => tally.dirs.push(p),
                // No chunks, or as asked already: nothing to do.
                InodeKind::File
                    if e.inode
                        .layout()
                        .is_some_and(|l| !l.satisfies(&eff, default_rep)) =>
                {
                    self.throttle.take(e.inode.size).await;
                    self.convert_one(&p, want, &mut tally).await;
                }
                _ => {}
            }
        }
        self.walk.as_mut().expect("a walk").add(tally);
        Ok(false)
    }

    /// Convert file `path` to `want`. A writer's new version wins; it is
    /// then converted in turn, a few times at most (a file written all the
    /// time is left to a later walk).
    async fn convert_one(&mut self, path: &CairnPath, want: Layout, tally: &mut Tally) {
        let mut raced = 0;
        let r = loop {
            match self.meta.convert_file(path, want).await {
                Ok(Outcome::Raced) if raced < MAX_RACES => {
                    raced += 1;
                    self.changed += 1;
                }
                Ok(Outcome::Raced) => {
                    break Err(Error::conflict(format!(
                        "{path} kept changing while being converted"
                    )))
                }
                other => break other,
            }
        };
        match r {
            Ok(Outcome::Converted(n)) => {
                self.files += 1;
                self.bytes += n;
            }
            Ok(Outcome::Raced | Outcome::Gone | Outcome::Already | Outcome::Skipped) => {}
            Err(err) => {
                warn!("{err}");
                self.failed += 1;
                tally.failed += 1;
                tally.last_error = Some(err);
            }
        }
    }
}

/// What one step of a walk found, added to the walk after it.
#[derive(Default)]
struct Tally {
    dirs: Vec<CairnPath>,
    failed: u64,
    last_error: Option<Error>,
}

impl Walk {
    fn add(&mut self, t: Tally) {
        self.dirs.extend(t.dirs);
        self.failed += t.failed;
        if t.last_error.is_some() {
            self.last_error = t.last_error;
        }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for ConvertWorker {
    fn name(&self) -> &'static str {
        "convert"
    }

    fn retry_after(&self) -> Duration {
        self.meta.repair_cfg.interval
    }

    async fn pass(&mut self) -> Result<crate::worker::Pass> {
        let meta = self.meta.clone();
        let interval = meta.repair_cfg.interval;
        if !meta.election.is_leader() {
            self.walk = None;
            return Ok(crate::worker::Pass {
                state: "standby",
                progress: "not the leader".into(),
                next: interval,
            });
        }
        if self.walk.is_none() {
            let after = self.last_job.as_deref();
            let Some((key, revision, root)) = meta.next_convert_job(after).await? else {
                return Ok(crate::worker::Pass {
                    state: "idle",
                    progress: self.progress(0),
                    next: interval,
                });
            };
            self.last_job = Some(key.clone());
            self.walk = Some(Walk {
                key,
                revision,
                dirs: vec![root.clone()],
                root,
                current: None,
                failed: 0,
                last_error: None,
            });
        }
        if !self.step().await? {
            return Ok(crate::worker::Pass {
                state: "busy",
                progress: self.progress(meta.convert_jobs_waiting().await?),
                next: Duration::ZERO,
            });
        }
        let walk = self.walk.take().expect("a walk");
        if let Some(e) = walk.last_error {
            // The job stays: the next walk retries what failed.
            let e = e.context(format!(
                "{} file(s) below {} could not be converted; trying again later",
                walk.failed, walk.root
            ));
            self.last_failure = Some((walk.key, e.to_string()));
            return Err(e);
        }
        if self
            .last_failure
            .as_ref()
            .is_some_and(|(k, _)| *k == walk.key)
        {
            self.last_failure = None;
        }
        // Done, unless the directory's cues changed again meanwhile (a
        // newer job for it, with another revision).
        let done = Txn::new()
            .when(walk.key.clone(), walk.revision)
            .delete(walk.key);
        match meta.store.commit(done).await {
            Ok(_) => info!(dir = %walk.root, "conversion job done"),
            Err(e) if e.kind == ErrorKind::Conflict => {}
            Err(e) => return Err(e),
        }
        Ok(crate::worker::Pass {
            state: "idle",
            progress: self.progress(meta.convert_jobs_waiting().await?),
            next: Duration::ZERO,
        })
    }
}
