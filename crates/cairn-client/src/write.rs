use crate::client::{unexpected, Client, PutOptions};
use bytes::Bytes;
use cairn_proto::{ChunkAlloc, MetaRequest, MetaResponse, PutOutcome, StorageRequest, DATA_FRAME};
use cairn_types::{
    BlockCrcs, CairnPath, ChunkId, Cues, Error, ErrorKind, Extent, Inode, NodeId, Result, Xattrs,
    BLOCK_SIZE, MAX_INLINE,
};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::warn;

/// Attempts to place one chunk before a write gives up.
const PLACE_ATTEMPTS: usize = 5;
/// Largest chunk a client will make; bounds its memory per chunk in flight.
pub const MAX_CHUNK: u64 = 256 << 20;
type FinishAttrs<'a> = Box<dyn FnOnce() -> Xattrs + Send + 'a>;

const CHAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes of shards a client keeps writing after their stripe's write was
/// acknowledged (`sync=` below K+M under `ec`).
pub(crate) const STRAGGLER_BUDGET: u32 = 64 << 20;
/// The first read of a put: a file that ends within it may be kept inline.
const INLINE_PROBE: u64 = MAX_INLINE as u64 + 1;
/// How long a directory's `inline=` limit learnt from meta is trusted.
const INLINE_HINT_TTL: Duration = Duration::from_secs(30);
/// Directories whose limit is remembered at most.
const INLINE_HINTS: usize = 1024;

impl Client {
    /// Write `src` to `path` as a new version. Reads at most one chunk ahead
    /// of the chunks in flight, so memory is bounded by
    /// `(write_window + 1) * chunk_size` whatever the file size.
    pub async fn put<R: AsyncRead + Unpin>(
        &self,
        path: &CairnPath,
        src: R,
        opts: PutOptions,
    ) -> Result<Inode> {
        self.put_inner(path, src, opts, None).await
    }

    async fn put_inner<R: AsyncRead + Unpin>(
        &self,
        path: &CairnPath,
        mut src: R,
        opts: PutOptions,
        mut finish: Option<FinishAttrs<'_>>,
    ) -> Result<Inode> {
        let chunk_size = opts.chunk_size.unwrap_or(self.inner.config.chunk_size);
        if !(BLOCK_SIZE as u64..=MAX_CHUNK).contains(&chunk_size) {
            return Err(Error::invalid(format!(
                "chunk size {chunk_size} is outside {BLOCK_SIZE}..={MAX_CHUNK} bytes"
            )));
        }
        let mut cues = opts.request_cues();
        let mut extents = Vec::new();
        let mut rep = None;
        // The attributes `finish` computed for an inline attempt meta refused.
        let mut finished: Option<Option<Xattrs>> = None;
        let mut inflight: VecDeque<tokio::task::JoinHandle<Result<(Extent, u8)>>> = VecDeque::new();
        let result: Result<Option<Inode>> = async {
            let mut first = true;
            loop {
                // A small file is read whole into a small buffer first: no
                // chunk-sized allocation for it, no regrowing for a large one.
                let probe = if first {
                    INLINE_PROBE.min(chunk_size)
                } else {
                    0
                };
                let mut buf = Vec::with_capacity(probe as usize);
                read_up_to(&mut src, probe, &mut buf).await?;
                if buf.len() as u64 == probe {
                    let mut whole = Vec::with_capacity(chunk_size as usize);
                    whole.extend_from_slice(&buf);
                    buf = whole;
                    read_up_to(&mut src, chunk_size - probe, &mut buf).await?;
                }
                if buf.is_empty() {
                    break;
                }
                let last = (buf.len() as u64) < chunk_size;
                if first && last && self.may_inline(path, &cues, buf.len()) {
                    // The whole file is in hand: try keeping it in its record.
                    let xattrs = match finish.take() {
                        Some(f) => Some(f()),
                        None => opts.xattrs.clone(),
                    };
                    match self
                        .commit_inline(path, &buf, opts.expected, opts.mode, &xattrs, &cues)
                        .await?
                    {
                        Some(inode) => return Ok(Some(inode)),
                        None => finished = Some(xattrs),
                    }
                }
                first = false;
                while inflight.len() >= self.inner.write_window {
                    let (e, r) = join(inflight.pop_front().unwrap()).await?;
                    extents.push(e);
                    rep = Some(r);
                }
                let me = self.clone();
                let p = path.clone();
                let c = cues.clone();
                inflight.push_back(tokio::spawn(async move {
                    me.write_chunk_cued(&p, Bytes::from(buf), &c).await
                }));
                if last {
                    break;
                }
            }
            while let Some(h) = inflight.pop_front() {
                let (e, r) = join(h).await?;
                extents.push(e);
                rep = Some(r);
            }
            Ok(None)
        }
        .await;
        match result {
            Ok(Some(inline)) => return Ok(inline),
            Ok(None) => {}
            Err(e) => {
                for h in inflight {
                    h.abort();
                }
                self.discard(extents).await;
                return Err(e);
            }
        }
        let xattrs = match (finished, finish) {
            (Some(x), _) => x,
            (None, Some(f)) => Some(f()),
            (None, None) => opts.xattrs,
        };
        let mode = opts.mode;
        // The redundancy the chunks were placed for becomes the file's.
        match extents.iter().find_map(|e| e.ec.as_ref()) {
            Some(ec) => {
                cues.ec = Some(ec.scheme);
                cues.rep = None;
            }
            None if cues.rep.is_none() => cues.rep = rep.filter(|r| *r > 0),
            None => {}
        }
        self.commit_cued(
            path,
            extents,
            opts.expected,
            mode,
            chunk_size,
            xattrs,
            &cues,
        )
        .await
    }

    /// [`Client::put`] whose extended attributes are computed from the
    /// bytes written (an S3 gateway's MD5 ETag, say): `finish` runs after the
    /// source is drained and every chunk stored, just before the commit.
    pub async fn put_with_attrs<R: AsyncRead + Unpin>(
        &self,
        path: &CairnPath,
        src: R,
        opts: PutOptions,
        finish: impl FnOnce() -> Xattrs + Send,
    ) -> Result<Inode> {
        self.put_inner(path, src, opts, Some(Box::new(finish)))
            .await
    }

    /// Write a whole buffer as `path`.
    pub async fn put_bytes(
        &self,
        path: &CairnPath,
        data: &[u8],
        opts: PutOptions,
    ) -> Result<Inode> {
        self.put(path, data, opts).await
    }

    /// Whether a whole file of `len` bytes at `path` may be kept in its
    /// metadata record: the writer's `inline=` cue decides; else what meta
    /// last said of the file's directory, while that is fresh; else any
    /// file up to [`MAX_INLINE`] is offered (a directory's cue may allow
    /// more than the cluster default), and a refusal costs one round trip.
    fn may_inline(&self, path: &CairnPath, cues: &Cues, len: usize) -> bool {
        if cues.pins_placement() {
            return false; // the bytes go where placement cues say (see meta)
        }
        let limit = match cues.inline {
            Some(l) => l,
            None => {
                let dir = path.split_last().map(|(d, _)| d);
                let known =
                    dir.and_then(|d| self.inner.inline_limits.lock().unwrap().get(&d).copied());
                match known {
                    Some((l, at)) if at.elapsed() < INLINE_HINT_TTL => l,
                    _ => MAX_INLINE,
                }
            }
        };
        len <= limit as usize
    }

    /// Commit `data` as the next version of `path`, kept in its record.
    /// None: meta keeps files that large at `path` in chunks (remembered
    /// for its directory); nothing changed.
    async fn commit_inline(
        &self,
        path: &CairnPath,
        data: &[u8],
        expected: Option<cairn_types::Version>,
        mode: Option<u32>,
        xattrs: &Option<Xattrs>,
        cues: &Cues,
    ) -> Result<Option<Inode>> {
        let req = MetaRequest::CommitInline {
            path: path.clone(),
            data: data.to_vec(),
            expected,
            mode,
            xattrs: xattrs.clone(),
            cues: cues.clone(),
        };
        match self.change(&[path], req).await? {
            MetaResponse::Inode(i) => Ok(Some(i)),
            MetaResponse::NotInline { limit } => {
                if let Some((dir, _)) = path.split_last() {
                    let mut known = self.inner.inline_limits.lock().unwrap();
                    if known.len() >= INLINE_HINTS {
                        known.clear();
                    }
                    known.insert(dir, (limit, std::time::Instant::now()));
                }
                Ok(None)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Commit chunks already written as the next version of `path`.
    pub async fn commit(
        &self,
        path: &CairnPath,
        extents: Vec<Extent>,
        expected: Option<cairn_types::Version>,
        mode: u32,
        chunk_size: u64,
        xattrs: Option<Xattrs>,
    ) -> Result<Inode> {
        let cues = Cues::default();
        let mode = Some(mode);
        self.commit_cued(path, extents, expected, mode, chunk_size, xattrs, &cues)
            .await
    }

    /// [`Client::commit`] with the writer's cues (their persistent part is
    /// fixed on a new file); `mode` None keeps the replaced version's.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_cued(
        &self,
        path: &CairnPath,
        extents: Vec<Extent>,
        expected: Option<cairn_types::Version>,
        mode: Option<u32>,
        chunk_size: u64,
        xattrs: Option<Xattrs>,
        cues: &Cues,
    ) -> Result<Inode> {
        let req = MetaRequest::CommitFile {
            path: path.clone(),
            extents,
            expected,
            mode,
            chunk_size,
            xattrs,
            cues: cues.clone(),
        };
        match self.change(&[path], req).await? {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// Commit `dst` as the concatenation of the files `sources` and remove
    /// them, atomically and without moving bytes (their chunks become
    /// `dst`'s). `expected` and `xattrs` as in [`PutOptions`].
    pub async fn compose(
        &self,
        dst: &CairnPath,
        sources: Vec<CairnPath>,
        expected: Option<cairn_types::Version>,
        mode: u32,
        xattrs: Option<Xattrs>,
    ) -> Result<Inode> {
        let mut changed: Vec<&CairnPath> = sources.iter().collect();
        changed.push(dst);
        let req = MetaRequest::Compose {
            dst: dst.clone(),
            sources: sources.clone(),
            expected,
            mode,
            xattrs,
        };
        match self.change(&changed, req).await? {
            MetaResponse::Inode(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// Best effort: tell meta these chunks will never be committed. If this
    /// fails too, the chunks stay orphans on their nodes.
    async fn discard(&self, extents: Vec<Extent>) {
        if extents.is_empty() {
            return;
        }
        if let Err(e) = self.meta(MetaRequest::Discard { extents }).await {
            warn!("could not discard chunks of a failed write: {e}");
        }
    }

    /// Store one chunk of `path` on `rep` nodes (meta's default if None).
    pub async fn write_chunk(
        &self,
        path: &CairnPath,
        data: Bytes,
        rep: Option<u8>,
    ) -> Result<Extent> {
        let cues = Cues {
            rep,
            ..Cues::default()
        };
        Ok(self.write_chunk_cued(path, data, &cues).await?.0)
    }

    /// Store one chunk of `path` where its cues (over the writer's `cues`)
    /// place it; returns its extent and the file's redundancy. A node that
    /// fails is excluded and the chunk placed again, so one dead node never
    /// fails a write while enough others are live.
    pub async fn write_chunk_cued(
        &self,
        path: &CairnPath,
        data: Bytes,
        cues: &Cues,
    ) -> Result<(Extent, u8)> {
        let crcs = BlockCrcs::compute(&data);
        let mut exclude: Vec<NodeId> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        // Every node tried was out of space: the write fails as a full
        // disk does (ENOSPC through the mount), not as an outage.
        let mut all_full = true;
        let out_of_reach = |e: Error, all_full: bool| {
            if all_full && e.kind == ErrorKind::Unavailable {
                Error::no_space(e.message)
            } else {
                e
            }
        };
        for _ in 0..PLACE_ATTEMPTS {
            let req = MetaRequest::AllocChunk {
                path: path.clone(),
                cues: cues.clone(),
                host: self.inner.host.clone(),
                exclude: exclude.clone(),
                len: data.len() as u64,
            };
            let alloc = match self.meta(req).await {
                Ok(MetaResponse::Alloc(a)) => a,
                Ok(other) => return Err(unexpected(other)),
                Err(e) if failures.is_empty() => return Err(e),
                Err(e) => {
                    let e = e.context(format!("after failures ({})", failures.join("; ")));
                    return Err(out_of_reach(e, all_full));
                }
            };
            let mut ext = Extent::replicated(
                alloc.chunk,
                data.len() as u64,
                crcs.summary(),
                alloc.nodes.iter().map(|n| n.id).collect(),
            );
            let sent = match alloc.ec {
                None => self.send_chain(&alloc, &data, &crcs).await,
                Some(scheme) => self.send_stripe(&alloc, scheme, &data, &mut ext).await,
            };
            match sent {
                Ok(()) => return Ok((ext, alloc.rep)),
                Err((node, addr, e)) => {
                    warn!(chunk = %alloc.chunk, %node, %addr, "replica write failed, placing again: {e}");
                    // Some nodes may hold a copy or shard: have them deleted.
                    self.discard(vec![ext]).await;
                    if e.kind == ErrorKind::Corrupt || e.kind == ErrorKind::InvalidInput {
                        // Our own bytes or request were bad: another node will not help.
                        return Err(e);
                    }
                    all_full &= e.kind == ErrorKind::NoSpace;
                    failures.push(format!("{addr}: {e}"));
                    exclude.push(node);
                }
            }
        }
        let e = Error::unavailable(format!(
            "could not store a chunk after {PLACE_ATTEMPTS} placements: {}",
            failures.join("; ")
        ));
        Err(out_of_reach(e, all_full))
    }

    /// Erasure-code one chunk (`ec=K+M`) and write its K+M shards to
    /// their nodes at once, each to its node alone; `ext` gets the
    /// shards' layout (also on failure, so the written shards can be
    /// discarded). The write stands once `alloc.sync` shards are durable
    /// (all K+M without a `sync=` cue; see below for the others); on
    /// failure, names the first node to blame.
    async fn send_stripe(
        &self,
        alloc: &ChunkAlloc,
        scheme: cairn_types::EcScheme,
        data: &Bytes,
        ext: &mut Extent,
    ) -> Result<(), (NodeId, String, Error)> {
        let shards = scheme.shards();
        if alloc.nodes.len() != shards {
            let e = Error::internal(format!(
                "meta placed {} nodes for ec={scheme}",
                alloc.nodes.len()
            ));
            return Err((NodeId(0), String::new(), e));
        }
        let shard_len = scheme.shard_len(data.len() as u64);
        let encode = {
            let data = data.clone();
            move || -> Result<Vec<(Bytes, BlockCrcs)>> {
                let mut out = Vec::with_capacity(shards);
                for i in 0..scheme.k as usize {
                    let shard = match scheme.data_shard(&data, shard_len, i) {
                        std::borrow::Cow::Borrowed(_) => {
                            let at = i * shard_len as usize;
                            data.slice(at..at + shard_len as usize)
                        }
                        std::borrow::Cow::Owned(v) => Bytes::from(v),
                    };
                    out.push(shard);
                }
                out.extend(scheme.parity(&data)?.into_iter().map(Bytes::from));
                Ok(out
                    .into_iter()
                    .map(|s| {
                        let c = BlockCrcs::compute(&s);
                        (s, c)
                    })
                    .collect())
            }
        };
        let coded = tokio::task::spawn_blocking(encode)
            .await
            .map_err(|e| Error::internal(format!("encoding task failed: {e}")))
            .and_then(|r| r)
            .map_err(|e| (NodeId(0), String::new(), e))?;
        ext.ec = Some(cairn_types::EcShards {
            scheme,
            shard_len,
            crcs: coded.iter().map(|(_, c)| c.summary()).collect(),
        });
        let mut set = tokio::task::JoinSet::new();
        for (i, (shard, crcs)) in coded.into_iter().enumerate() {
            let one = ChunkAlloc {
                chunk: alloc.chunk.shard(i),
                nodes: vec![alloc.nodes[i].clone()],
                cap: alloc.cap.clone(),
                rep: 1,
                ec: None,
                sync: 1,
            };
            let me = self.clone();
            set.spawn(async move { (i, me.send_chain(&one, &shard, &crcs).await) });
        }
        // Acknowledged once `need` shards are durable (the `sync` cue); a
        // shard that fails after that is reported missing, for repair.
        let need = (alloc.sync as usize).clamp(scheme.k as usize + 1, shards);
        let (mut stored, mut failed) = (0, Vec::new());
        let mut pending = vec![true; shards];
        while stored < need {
            let Some(r) = set.join_next().await else {
                break;
            };
            if let Ok((i, _)) = &r {
                pending[*i] = false;
            }
            match r {
                Ok((_, Ok(()))) => stored += 1,
                Ok((i, Err(e))) => failed.push((i, e)),
                Err(e) => {
                    let e = Error::internal(format!("shard write task failed: {e}"));
                    failed.push((usize::MAX, (NodeId(0), String::new(), e)));
                }
            }
            if failed.len() > shards - need {
                // Too few can still land: dropping the set stops the rest.
                return Err(failed.swap_remove(0).1);
            }
        }
        // (A shard whose task died unnamed is left to the orphan sweep,
        // which finds it missing from its node's listing.)
        for (i, (_, addr, e)) in failed.into_iter().filter(|f| f.0 < shards) {
            self.report_missing(alloc.chunk.shard(i), alloc.nodes[i].id, &addr, &e)
                .await;
        }
        if set.is_empty() {
            return Ok(());
        }
        // The rest finish in the background, within a byte budget: past
        // it, this write waits for them as if `sync` were K+M.
        // A data shard is a slice of the chunk's buffer, which it keeps
        // whole while its write runs; parity shards are buffers of their own.
        let k = scheme.k as usize;
        let parity = pending[k..].iter().filter(|p| **p).count() as u64 * shard_len;
        let data_held = if pending[..k].iter().any(|p| *p) {
            data.len() as u64
        } else {
            0
        };
        let held = (data_held + parity).min(u32::MAX as u64) as u32;
        let (me, chunk) = (self.clone(), alloc.chunk);
        let nodes: Vec<NodeId> = alloc.nodes.iter().map(|n| n.id).collect();
        let stragglers = async move {
            while let Some(r) = set.join_next().await {
                if let Ok((i, Err((_, addr, e)))) = r {
                    me.report_missing(chunk.shard(i), nodes[i], &addr, &e).await;
                }
            }
        };
        match self.inner.stragglers.clone().try_acquire_many_owned(held) {
            Ok(permit) => {
                tokio::spawn(async move {
                    stragglers.await;
                    drop(permit);
                });
            }
            Err(_) => stragglers.await,
        }
        Ok(())
    }

    /// Tell meta that a shard this client's write named did not land, so
    /// repair rebuilds it (it is not in the node's reports: it never was).
    async fn report_missing(&self, shard: ChunkId, node: NodeId, addr: &str, e: &Error) {
        warn!(%shard, %node, %addr, "shard write failed after the write was acknowledged: {e}");
        let req = MetaRequest::ReportMissing {
            chunk: shard,
            node,
            detail: format!("write to {addr} failed: {e}"),
        };
        if let Err(e) = self.meta(req).await {
            // The orphan sweep finds it missing from the node's listing.
            warn!(%shard, %node, "could not report a missing shard: {e}");
        }
    }

    /// Wait, at most `deadline`, for shard writes still running after
    /// their write was acknowledged (`sync=` below K+M under `ec`); a
    /// process about to exit calls it so they land rather than being
    /// rebuilt by repair. Returns whether they all finished.
    pub async fn settle(&self, deadline: Duration) -> bool {
        let sem = &self.inner.stragglers;
        tokio::time::timeout(deadline, sem.acquire_many(STRAGGLER_BUDGET))
            .await
            .is_ok_and(|p| p.is_ok())
    }

    /// Stream one chunk to the head of the chain and wait for the chain's
    /// verdict. On failure, names the node to blame.
    async fn send_chain(
        &self,
        alloc: &ChunkAlloc,
        data: &Bytes,
        crcs: &BlockCrcs,
    ) -> Result<(), (NodeId, String, Error)> {
        let head = alloc.nodes.first().ok_or_else(|| {
            (
                NodeId(0),
                String::new(),
                Error::internal("meta returned an empty placement"),
            )
        })?;
        let blame_head = |e: Error| (head.id, head.addr.clone(), e);
        let req = StorageRequest::PutChunk {
            chunk: alloc.chunk,
            len: data.len() as u64,
            crcs: crcs.clone(),
            cap: alloc.cap.clone(),
            chain: alloc.nodes[1..].to_vec(),
        };
        let pool = &self.inner.storage;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut p = pool.get(&head.addr).await.map_err(blame_head)?;
            let sent: Result<()> = async {
                p.conn.send(&req).await?;
                for piece in data.chunks(DATA_FRAME) {
                    p.conn.write_frame(piece).await?;
                }
                p.conn.flush().await
            }
            .await;
            if let Err(e) = sent {
                pool.forget(&head.addr);
                if p.reused && attempt == 1 {
                    continue; // a stale pooled connection; try a fresh one
                }
                return Err(blame_head(e));
            }
            let outcome: Result<Result<PutOutcome, Error>> =
                tokio::time::timeout(CHAIN_TIMEOUT, p.conn.recv())
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::timeout(format!(
                            "{} did not acknowledge in {CHAIN_TIMEOUT:?}",
                            head.addr
                        )))
                    });
            return match outcome {
                Ok(Ok(PutOutcome::Stored)) => {
                    pool.put(&head.addr, p.conn);
                    Ok(())
                }
                Ok(Ok(PutOutcome::Failed { node, addr, error })) => {
                    pool.put(&head.addr, p.conn);
                    let addr = if addr.is_empty() {
                        alloc
                            .nodes
                            .iter()
                            .find(|n| n.id == node)
                            .map(|n| n.addr.clone())
                            .unwrap_or_default()
                    } else {
                        addr
                    };
                    Err((node, addr, error))
                }
                Ok(Err(e)) | Err(e) => {
                    pool.forget(&head.addr);
                    Err(blame_head(e))
                }
            };
        }
    }
}

/// Append up to `n` more bytes of `src` to `buf` (fewer at its end).
async fn read_up_to<R: AsyncRead + Unpin>(src: &mut R, n: u64, buf: &mut Vec<u8>) -> Result<()> {
    src.take(n)
        .read_to_end(buf)
        .await
        .map_err(|e| Error::from(e).context("reading the input"))?;
    Ok(())
}

async fn join<T>(h: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    h.await
        .map_err(|e| Error::internal(format!("chunk task failed: {e}")))?
}
