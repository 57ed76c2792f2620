use crate::cache::CachedOpen;
use crate::client::Client;
use bytes::Bytes;
use cairn_proto::{
    Capability, GetChunkResult, MetaRequest, MetaResponse, OpenFile, StorageRequest,
};
use cairn_types::{
    BlockCrcs, CairnPath, ChunkId, Consistency, Cues, Error, ErrorKind, Extent, Inode, NodeId,
    Result, VersionPolicy, BLOCK_SIZE,
};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::warn;

const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// An open version of a file. It keeps reading that version even if the
/// file is overwritten meanwhile (until its chunks are collected, which meta
/// delays).
pub struct FileReader {
    client: Client,
    open: OpenFile,
    /// File offset where each extent starts.
    starts: Vec<u64>,
    addrs: HashMap<NodeId, String>,
    /// The effective cues of this open (the file's, the opener's on top).
    cues: Cues,
    /// With `wholefile`: every chunk, fetched on the first read.
    whole: tokio::sync::OnceCell<Vec<Bytes>>,
    /// Read-ahead state of [`FileReader::read_at_ahead`].
    ahead: std::sync::Mutex<Ahead>,
    /// Nodes a shard read of this reader just failed on, with when: the
    /// next stripes read around them for [`SHUN`] rather than trying
    /// them (and a degraded read) chunk after chunk.
    shunned: std::sync::Mutex<HashMap<NodeId, Instant>>,
}

/// How long an erasure-coded read leaves out a node that failed it.
const SHUN: Duration = Duration::from_secs(5);

/// Sequential reads through [`FileReader::read_at_ahead`] fetch windows of
/// this many bytes (or to the end of the chunk), whole, ...
const WINDOW: u64 = 4 << 20;
/// ... and this many windows past the one read, in parallel.
const AHEAD_WINDOWS: usize = 2;

/// A window: extent index and offset in its chunk.
type WindowKey = (usize, u64);

#[derive(Default)]
struct Ahead {
    /// Where the last read ended: reads near it are sequential.
    next: u64,
    /// Windows fetched or being fetched, in file order; those behind the
    /// reader are dropped, so a stream holds a few windows at most.
    windows: std::collections::BTreeMap<WindowKey, std::sync::Arc<tokio::sync::OnceCell<Bytes>>>,
}

/// How long `lax` lets cached metadata be used without `maxtime`.
const LAX_TTL: Duration = Duration::from_secs(3);

/// Whether a cached open may be used without asking meta, per the cues.
fn cache_usable(c: &CachedOpen, cues: &Cues) -> bool {
    if c.open.inode.cues.is_write_once() || cues.version == Some(VersionPolicy::AnyVersion) {
        return true;
    }
    // Under meta's lease no other client's change can have been
    // acknowledged: even a strict open may take the cached version.
    if c.lease_until.is_some_and(|t| Instant::now() < t) {
        return true;
    }
    cues.consistency == Some(Consistency::Lax)
        && c.fetched.elapsed() < cues.maxtime_ms.map_or(LAX_TTL, Duration::from_millis)
}

/// Read capabilities in a cached open this old are refreshed when meta
/// can be reached.
const CAP_REFRESH: Duration = Duration::from_millis(cairn_proto::CAP_TTL_MS / 2);

impl Client {
    pub async fn open(&self, path: &CairnPath) -> Result<FileReader> {
        self.open_cued(path, &Cues::default()).await
    }

    /// Open `path` with the opener's cues (from its path, say) over the
    /// file's. The consistency cues decide whether cached metadata will do:
    /// `strict`/`latest` (the default) always ask meta; `lax` uses what is
    /// cached for `maxtime` (3 s without); `anyversion` uses any cached
    /// version without asking; `bestversion` asks, and settles for the
    /// cached version if meta cannot answer within `maxtime`. Write-once
    /// files are cached for good.
    pub async fn open_cued(&self, path: &CairnPath, cues: &Cues) -> Result<FileReader> {
        let files = &self.inner.files;
        let cached = files.get(path);
        if let Some(c) = &cached {
            let eff = c.open.cues.merge(cues);
            if cache_usable(c, &eff) && c.fetched.elapsed() < CAP_REFRESH {
                return Ok(self.reader(c.open.clone(), eff));
            }
        }
        let maxtime = cached
            .as_ref()
            .map_or(cues.maxtime_ms, |c| c.open.cues.merge(cues).maxtime_ms)
            .map(Duration::from_millis);
        // A cached version with capabilities still good is revalidated:
        // meta answers in a few bytes when it is current.
        let known = cached
            .as_ref()
            .filter(|c| c.caps_at.elapsed() < CAP_REFRESH)
            .map(|c| (c.open.inode.id, c.open.inode.version));
        let sent = Instant::now();
        let ticket = files.ticket();
        let fresh = match maxtime {
            Some(t) => tokio::time::timeout(t, self.revalidate(path, known, sent, ticket))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::timeout(format!(
                        "meta did not answer for {path} within maxtime={}ms",
                        t.as_millis()
                    )))
                }),
            None => self.revalidate(path, known, sent, ticket).await,
        };
        match fresh {
            Ok(Some(open)) => {
                files.insert(path, open.clone(), sent, ticket);
                let eff = open.cues.merge(cues);
                Ok(self.reader(open, eff))
            }
            Ok(None) => {
                let mut open = cached
                    .map(|c| c.open)
                    .ok_or_else(|| Error::internal("meta confirmed a version not cached"))?;
                if let Some(c) = files.get(path) {
                    open.cues = c.open.cues;
                }
                let eff = open.cues.merge(cues);
                Ok(self.reader(open, eff))
            }
            Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) => {
                // Meta is out of reach: a cache the cues allow will do.
                match cached {
                    Some(c) => {
                        let eff = c.open.cues.merge(cues);
                        let settle = eff.version == Some(VersionPolicy::BestVersion);
                        if settle || cache_usable(&c, &eff) {
                            warn!(%path, version = %c.open.inode.version, "meta unreachable; reading the cached version: {e}");
                            Ok(self.reader(c.open, eff))
                        } else {
                            Err(e)
                        }
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// A reader of version `version` of `path`: the current one, or an
    /// older one its `versions=` cue kept. Not cached: a kept version
    /// never changes, and the next open of the path sees the current one.
    pub async fn open_version(
        &self,
        path: &CairnPath,
        version: cairn_types::Version,
    ) -> Result<FileReader> {
        let open = self.locate_version(path, version).await?;
        let cues = open.cues.clone();
        Ok(self.reader(open, cues))
    }

    /// Open `path` at meta; `None` when `known` is still its current
    /// version (the cache entry is then confirmed, with fresh cues).
    async fn revalidate(
        &self,
        path: &CairnPath,
        known: Option<(cairn_types::InodeId, cairn_types::Version)>,
        sent: Instant,
        ticket: crate::cache::Ticket,
    ) -> Result<Option<OpenFile>> {
        let req = MetaRequest::Open {
            path: path.clone(),
            host: self.inner.host.clone(),
            known,
        };
        match self.meta(req).await? {
            MetaResponse::Open(o) => Ok(Some(o)),
            MetaResponse::Unchanged { cues, lease_ms } if known.is_some() => {
                self.inner.files.confirm(path, cues, lease_ms, sent, ticket);
                Ok(None)
            }
            other => Err(crate::client::unexpected(other)),
        }
    }

    fn reader(&self, open: OpenFile, cues: Cues) -> FileReader {
        let mut starts = Vec::with_capacity(open.inode.extents.len());
        let mut pos = 0;
        for e in &open.inode.extents {
            starts.push(pos);
            pos += e.len;
        }
        let addrs = open.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        FileReader {
            client: self.clone(),
            open,
            starts,
            addrs,
            cues,
            whole: tokio::sync::OnceCell::new(),
            ahead: Default::default(),
            shunned: Default::default(),
        }
    }

    /// Read the whole file into `w`, with chunks fetched ahead in parallel.
    pub async fn get<W: AsyncWrite + Unpin>(&self, path: &CairnPath, w: &mut W) -> Result<u64> {
        self.open(path).await?.copy_to(w).await
    }

    /// A small convenience for tests and tools: the whole file in memory.
    pub async fn get_bytes(&self, path: &CairnPath) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get(path, &mut out).await?;
        Ok(out)
    }
}

impl FileReader {
    pub fn inode(&self) -> &Inode {
        &self.open.inode
    }

    pub fn size(&self) -> u64 {
        self.open.inode.size
    }

    /// The bytes of a file kept in its metadata record, if it is one.
    fn inline(&self) -> Result<Option<&[u8]>> {
        if !self.open.inode.is_inline() {
            return Ok(None);
        }
        match &self.open.inode.inline {
            Some(d) if d.len() as u64 == self.size() => Ok(Some(d)),
            _ => Err(Error::corrupt(format!(
                "inode {} keeps its bytes in metadata, but meta sent {} of {}",
                self.open.inode.id,
                self.open.inode.inline.as_ref().map_or(0, |d| d.len()),
                self.size()
            ))),
        }
    }

    /// The effective cues of this open.
    pub fn cues(&self) -> &Cues {
        &self.cues
    }

    /// Read up to `len` bytes at `offset` (fewer at the end of the file).
    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size());
        if let Some(data) = self.inline()? {
            let (from, to) = (offset.min(end) as usize, end as usize);
            return Ok(data[from..to].to_vec());
        }
        if self.cues.wholefile == Some(true) && end > offset {
            let whole = self.whole.get_or_try_init(|| self.fetch_whole()).await?;
            let mut out = Vec::with_capacity((end - offset) as usize);
            let mut pos = offset;
            while pos < end {
                let idx = self.starts.partition_point(|s| *s <= pos) - 1;
                let in_chunk = (pos - self.starts[idx]) as usize;
                let n = (whole[idx].len() - in_chunk).min((end - pos) as usize);
                out.extend_from_slice(&whole[idx][in_chunk..in_chunk + n]);
                pos += n as u64;
            }
            return Ok(out);
        }
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        while pos < end {
            let idx = self.starts.partition_point(|s| *s <= pos) - 1;
            let ext = &self.open.inode.extents[idx];
            let in_chunk = pos - self.starts[idx];
            let n = (ext.len - in_chunk).min(end - pos);
            out.extend_from_slice(&self.fetch(idx, in_chunk, n).await?);
            pos += n;
        }
        Ok(out)
    }

    /// [`Self::read_at`] for a reader that may read sequentially (the
    /// mount): a read near where the last one ended is served from whole
    /// windows of [`WINDOW`] bytes, and the next [`AHEAD_WINDOWS`] windows
    /// (across chunks) are fetched in the background meanwhile, so a
    /// stream of small reads keeps several large fetches in flight. Other
    /// reads go straight to [`Self::read_at`].
    pub async fn read_at_ahead(
        self: &std::sync::Arc<Self>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size());
        let sequential = {
            let mut a = self.ahead.lock().unwrap();
            let near = offset.abs_diff(a.next) <= WINDOW * AHEAD_WINDOWS as u64;
            a.next = end;
            near
        };
        let inline = self.open.inode.is_inline();
        if !sequential || end <= offset || self.cues.wholefile == Some(true) || inline {
            return self.read_at(offset, len).await;
        }
        // The windows [offset, end) needs, then those to fetch ahead.
        let mut needed = Vec::new();
        let mut key = Some(self.window_of(offset));
        while let Some(k) = key {
            if self.window_file_offset(k) >= end {
                break;
            }
            needed.push(k);
            key = self.window_after(k);
        }
        let mut later = Vec::new();
        while let Some(k) = key.filter(|_| later.len() < AHEAD_WINDOWS) {
            later.push(k);
            key = self.window_after(k);
        }
        let cells: Vec<_> = {
            let mut a = self.ahead.lock().unwrap();
            let first = needed[0];
            a.windows = a.windows.split_off(&first);
            needed
                .iter()
                .chain(&later)
                .map(|k| a.windows.entry(*k).or_default().clone())
                .collect()
        };
        for (k, cell) in later.iter().zip(&cells[needed.len()..]) {
            if cell.initialized() {
                continue;
            }
            let (me, k, cell) = (self.clone(), *k, cell.clone());
            tokio::spawn(async move {
                // A failure here only means the read itself fetches it.
                let _ = cell.get_or_try_init(|| me.fetch_window(k)).await;
            });
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (k, cell) in needed.iter().zip(&cells) {
            let data = cell.get_or_try_init(|| self.fetch_window(*k)).await?;
            let at = self.window_file_offset(*k);
            let from = offset.max(at) - at;
            let to = (end.min(at + data.len() as u64) - at) as usize;
            out.extend_from_slice(&data[from as usize..to]);
        }
        Ok(out)
    }

    /// The window holding file offset `pos` (which is inside the file).
    fn window_of(&self, pos: u64) -> WindowKey {
        let idx = self.starts.partition_point(|s| *s <= pos) - 1;
        let in_chunk = pos - self.starts[idx];
        (idx, in_chunk - in_chunk % WINDOW)
    }

    fn window_file_offset(&self, (idx, at): WindowKey) -> u64 {
        self.starts[idx] + at
    }

    fn window_len(&self, (idx, at): WindowKey) -> u64 {
        WINDOW.min(self.open.inode.extents[idx].len - at)
    }

    /// The window after `k`, into the next non-empty chunk; None at the
    /// end.
    fn window_after(&self, k: WindowKey) -> Option<WindowKey> {
        let (idx, at) = k;
        let next = at + self.window_len(k);
        if next < self.open.inode.extents[idx].len {
            return Some((idx, next));
        }
        let extents = &self.open.inode.extents;
        (idx + 1..extents.len())
            .find(|i| extents[*i].len > 0)
            .map(|i| (i, 0))
    }

    async fn fetch_window(&self, k: WindowKey) -> Result<Bytes> {
        self.fetch(k.0, k.1, self.window_len(k)).await
    }

    /// Stream the whole version into `w` (see [`ReadStream`]).
    pub async fn copy_to<W: AsyncWrite + Unpin>(self, w: &mut W) -> Result<u64> {
        let end = self.size();
        let mut stream = self.stream(0, end);
        let mut written = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = piece?;
            w.write_all(&piece)
                .await
                .map_err(|e| Error::from(e).context("writing the output"))?;
            written += piece.len() as u64;
        }
        w.flush()
            .await
            .map_err(|e| Error::from(e).context("writing the output"))?;
        Ok(written)
    }

    /// Bytes `[start, end)` of this version (clamped to its size), in
    /// order, as a [`ReadStream`].
    pub fn stream(self, start: u64, end: u64) -> ReadStream {
        let end = end.min(self.size());
        let start = start.min(end);
        let budget = self.client.inner.read_ahead;
        // Inline and `wholefile` versions are read whole (`next` is unused).
        let whole = self.open.inode.is_inline() || self.cues.wholefile == Some(true);
        let next = (start < end && !whole).then(|| self.window_of(start));
        ReadStream {
            reader: std::sync::Arc::new(self),
            start,
            pos: start,
            end,
            next,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            budget,
        }
    }

    /// Every chunk of the file, the read-ahead budget's worth at a time
    /// (`wholefile`).
    async fn fetch_whole(&self) -> Result<Vec<Bytes>> {
        let largest = self.open.inode.extents.iter().map(|e| e.len).max();
        let ahead = (self.client.inner.read_ahead / largest.unwrap_or(1).max(1)).max(1) as usize;
        let mut out = Vec::with_capacity(self.open.inode.extents.len());
        for group in (0..self.open.inode.extents.len())
            .collect::<Vec<_>>()
            .chunks(ahead)
        {
            let parts = futures_join_all(group.iter().map(|&idx| {
                let len = self.open.inode.extents[idx].len;
                self.fetch(idx, 0, len)
            }))
            .await;
            for p in parts {
                out.push(p?);
            }
        }
        Ok(out)
    }

    /// Bytes `[off, off+len)` of extent `idx`: from the chunk cache, else
    /// from the first replica that serves them intact. With `maxtime`, the
    /// replicas share that budget: one that does not answer in its share is
    /// given up for the next, and the read fails with a timeout once the
    /// budget is spent. With `hotspot`, replicas are tried from a random one.
    async fn fetch(&self, idx: usize, off: u64, len: u64) -> Result<Bytes> {
        let ext = &self.open.inode.extents[idx];
        let cap = &self.open.caps[idx];
        let start = off - off % BLOCK_SIZE as u64;
        let end = (off + len)
            .div_ceil(BLOCK_SIZE as u64)
            .saturating_mul(BLOCK_SIZE as u64)
            .min(ext.len);
        let skip = (off - start) as usize;
        let cache = &self.client.inner.chunks;
        if let Some(data) = cache.get_off_thread(ext.chunk, start, end - start).await {
            return Ok(data.slice(skip..skip + len as usize));
        }
        if ext.ec.is_some() {
            let data = Bytes::from(self.fetch_stripe(ext, cap, start, end).await?);
            cache.insert(ext.chunk, start, data.clone());
            return Ok(data.slice(skip..skip + len as usize));
        }
        // Meta's order (cache copies included, nearest first), else the
        // durable copies in meta's order.
        let order: Vec<NodeId> = match self.open.read_order.get(idx) {
            Some(o) if !o.is_empty() => o.clone(),
            _ => ext.nodes.clone(),
        };
        // `hotspot`: read through the storage node on this host, which
        // fetches the chunk once and serves every later reader.
        if self.cues.hotspot == Some(true) {
            if let Some(via) = self.open.via.as_ref().filter(|v| !order.contains(&v.id)) {
                match self
                    .fetch_via(via, ext, cap, &order, start, end - start)
                    .await
                {
                    Ok(data) => {
                        let data = Bytes::from(data);
                        cache.insert(ext.chunk, start, data.clone());
                        return Ok(data.slice(skip..skip + len as usize));
                    }
                    Err(e) => {
                        warn!(chunk = %ext.chunk, via = %via.addr, "read through the local node failed, reading directly: {e}")
                    }
                }
            }
        }
        let deadline = self
            .cues
            .maxtime_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let mut failures = Vec::new();
        for (i, node) in order.iter().enumerate() {
            let Some(addr) = self.addrs.get(node) else {
                failures.push(format!("node {node}: address unknown"));
                continue;
            };
            let attempt = self.fetch_from(addr, ext, cap, start, end - start);
            let got = match deadline {
                None => attempt.await,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    let share = left / (order.len() - i) as u32;
                    tokio::time::timeout(share, attempt)
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::timeout(format!(
                                "no answer within {}ms (maxtime)",
                                share.as_millis()
                            )))
                        })
                }
            };
            match got {
                Ok(data) => {
                    let data = Bytes::from(data);
                    cache.insert(ext.chunk, start, data.clone());
                    return Ok(data.slice(skip..skip + len as usize));
                }
                Err(e) => {
                    warn!(chunk = %ext.chunk, %node, %addr, "replica read failed, trying the next: {e}");
                    if e.kind == ErrorKind::Corrupt {
                        let report = MetaRequest::ReportCorrupt {
                            chunk: ext.chunk,
                            node: *node,
                            detail: e.message.clone(),
                        };
                        let _ = self.client.meta(report).await;
                    }
                    failures.push(format!("{addr}: {e}"));
                }
            }
        }
        // Offloaded: a storage node reads it through from the remote store
        // (and keeps a cache copy for the next readers).
        if let Some(tier) = &ext.remote {
            let Some(via) = self.open.via.as_ref() else {
                return Err(Error::unavailable(format!(
                    "chunk {} is in remote store {tier} and no live storage node can read it through{}",
                    ext.chunk,
                    if failures.is_empty() { String::new() } else { format!(" ({})", failures.join("; ")) }
                )));
            };
            let data = self
                .fetch_via(via, ext, cap, &[], start, end - start)
                .await
                .map_err(|e| {
                    e.context(format!(
                        "chunk {} from remote store {tier} through {}",
                        ext.chunk, via.addr
                    ))
                })?;
            let data = Bytes::from(data);
            cache.insert(ext.chunk, start, data.clone());
            return Ok(data.slice(skip..skip + len as usize));
        }
        let msg = format!(
            "no replica of chunk {} could be read ({})",
            ext.chunk,
            failures.join("; ")
        );
        Err(match deadline {
            Some(_) => Error::timeout(msg),
            None => Error::unavailable(msg),
        })
    }

    /// Bytes `[start, end)` of an erasure-coded chunk: from the data
    /// shards that hold them, in parallel, while they answer (within half
    /// of `maxtime`, if set); else a degraded read that rebuilds the data
    /// from any K whole shards and checks it against meta's summary.
    async fn fetch_stripe(
        &self,
        ext: &Extent,
        cap: &Capability,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>> {
        let ec = ext.ec.as_ref().expect("an erasure-coded extent");
        let s = ec.shard_len;
        let block = BLOCK_SIZE as u64;
        // (shard, shard-local range read, where the wanted bytes lie in it)
        let mut parts = Vec::new();
        let mut pos = start;
        while pos < end {
            let j = (pos / s) as usize;
            let (lo, hi) = (pos - j as u64 * s, (end - j as u64 * s).min(s));
            let from = lo - lo % block;
            let to = hi.div_ceil(block).saturating_mul(block).min(s);
            parts.push((j, from, to, (lo - from) as usize, (hi - lo) as usize));
            pos = (j as u64 + 1) * s;
        }
        let n = ext.nodes.len();
        let mut failed: Vec<bool> = {
            let mut shunned = self.shunned.lock().unwrap();
            shunned.retain(|_, at| at.elapsed() < SHUN);
            ext.nodes.iter().map(|n| shunned.contains_key(n)).collect()
        };
        if parts.iter().any(|p| failed[p.0]) {
            // A shard's node just failed this reader: straight to K others
            // (the failed nodes too, last, when fewer than K are left).
            let whole = match self.rebuild_stripe(ext, cap, vec![None; n], &failed).await {
                Err(e) if e.kind == ErrorKind::Unavailable => {
                    self.rebuild_stripe(ext, cap, vec![None; n], &vec![false; n])
                        .await?
                }
                r => r?,
            };
            return Ok(trim(whole, start, end));
        }
        // Each shard's range lands in its own stretch of one buffer, in
        // order: only the first can start before the wanted bytes and only
        // the last run past them, so trimming its ends is all that is left
        // (no copy on the healthy path). Zeroed: a large one comes as
        // fresh pages, with nothing to fill.
        let mut buf = vec![0u8; parts.iter().map(|p| (p.2 - p.1) as usize).sum()];
        let got = {
            let mut rest = buf.as_mut_slice();
            let mut reads = Vec::with_capacity(parts.len());
            for &(j, from, to, _, _) in &parts {
                let (dst, tail) = std::mem::take(&mut rest).split_at_mut((to - from) as usize);
                rest = tail;
                reads.push(self.fetch_shard_into(ext, cap, j, from, to - from, Dst::Fill(dst)));
            }
            let healthy = futures_join_all(reads);
            match self.cues.maxtime_ms {
                Some(ms) => tokio::time::timeout(Duration::from_millis(ms / 2), healthy)
                    .await
                    .ok(),
                None => Some(healthy.await),
            }
        };
        let mut known: Vec<Option<Vec<u8>>> = vec![None; n];
        if let Some(got) = got {
            if got.iter().all(|r| r.is_ok()) {
                let skip = parts.first().map_or(0, |p| p.3) as u64;
                return Ok(trim(buf, skip, skip + end - start));
            }
            // Whole shards that did arrive count towards the K needed.
            let mut at = 0;
            for (r, &(j, from, to, _, _)) in got.into_iter().zip(&parts) {
                let n = (to - from) as usize;
                match r {
                    Ok(()) if from == 0 && to == s => known[j] = Some(buf[at..at + n].to_vec()),
                    Ok(()) => {}
                    Err(e) => {
                        failed[j] = true;
                        self.shun(ext.nodes[j], &e);
                    }
                }
                at += n;
            }
        }
        warn!(chunk = %ext.chunk, "a data shard did not answer in full; reading degraded");
        let whole = self.rebuild_stripe(ext, cap, known, &failed).await?;
        Ok(trim(whole, start, end))
    }

    /// Remember a node that failed as a node (down, unreachable, too
    /// slow), not over one shard (missing, corrupt).
    fn shun(&self, node: NodeId, e: &Error) {
        if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) {
            self.shunned.lock().unwrap().insert(node, Instant::now());
        }
    }

    /// Bytes `[off, off+len)` of shard `i` of `ext`, from its node; a
    /// corrupt shard is reported to meta.
    async fn fetch_shard(
        &self,
        ext: &Extent,
        cap: &Capability,
        i: usize,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.fetch_shard_into(ext, cap, i, off, len, Dst::Grow(&mut data))
            .await?;
        Ok(data)
    }

    /// [`Self::fetch_shard`] into `dst`.
    async fn fetch_shard_into(
        &self,
        ext: &Extent,
        cap: &Capability,
        i: usize,
        off: u64,
        len: u64,
        dst: Dst<'_>,
    ) -> Result<()> {
        let ec = ext.ec.as_ref().expect("an erasure-coded extent");
        let (node, chunk) = (ext.nodes[i], ext.chunk.shard(i));
        let addr = self
            .addrs
            .get(&node)
            .ok_or_else(|| Error::unavailable(format!("node {node}: address unknown")))?;
        let req = StorageRequest::GetChunk {
            chunk,
            offset: off,
            len,
            cap: cap.clone(),
        };
        let got = self
            .fetch_into(addr, (chunk, ec.shard_len, ec.crcs[i]), req, off, len, dst)
            .await;
        if let Err(e) = &got {
            warn!(%chunk, %node, %addr, "shard read failed: {e}");
            if e.kind == ErrorKind::Corrupt {
                let report = MetaRequest::ReportCorrupt {
                    chunk,
                    node,
                    detail: e.message.clone(),
                };
                let _ = self.client.meta(report).await;
            }
        }
        got
    }

    /// The whole chunk `ext` rebuilt from any K of its shards: those in
    /// `shards` already, then others read whole (data shards first, as
    /// many at a time as are missing; not those that just `failed`),
    /// checked against meta's summary.
    async fn rebuild_stripe(
        &self,
        ext: &Extent,
        cap: &Capability,
        mut shards: Vec<Option<Vec<u8>>>,
        failed: &[bool],
    ) -> Result<Vec<u8>> {
        let ec = ext.ec.as_ref().expect("an erasure-coded extent");
        let (k, n) = (ec.scheme.k as usize, ec.scheme.shards());
        let tried: Vec<bool> = (0..n).map(|i| shards[i].is_some() || failed[i]).collect();
        let mut untried = (0..n).filter(|i| !tried[*i]);
        let mut have = shards.iter().filter(|s| s.is_some()).count();
        let mut failures = Vec::new();
        loop {
            let batch: Vec<usize> = untried.by_ref().take(k.saturating_sub(have)).collect();
            if batch.is_empty() {
                break;
            }
            let got = futures_join_all(
                batch
                    .iter()
                    .map(|&i| self.fetch_shard(ext, cap, i, 0, ec.shard_len)),
            )
            .await;
            for (i, r) in batch.into_iter().zip(got) {
                match r {
                    Ok(d) => {
                        shards[i] = Some(d);
                        have += 1;
                    }
                    Err(e) => {
                        self.shun(ext.nodes[i], &e);
                        failures.push(format!("shard {i}: {e}"));
                    }
                }
            }
        }
        if have < k {
            return Err(Error::unavailable(format!(
                "chunk {} (ec={}): {have} of {n} shards could be read, {k} needed ({})",
                ext.chunk,
                ec.scheme,
                failures.join("; ")
            )));
        }
        let (scheme, len, crc, chunk) = (ec.scheme, ext.len as usize, ext.crc, ext.chunk);
        tokio::task::spawn_blocking(move || {
            scheme.fill(&mut shards, false)?;
            // The data shards in order, grown from the first (not copied).
            let mut data_shards = shards.into_iter().take(k).flatten();
            let mut data: Vec<u8> = data_shards.next().unwrap_or_default();
            data.reserve(len.saturating_sub(data.len()));
            for d in data_shards {
                data.extend_from_slice(&d);
            }
            data.truncate(len);
            if BlockCrcs::compute(&data).summary() != crc {
                return Err(Error::corrupt(format!(
                    "chunk {chunk} rebuilt from its shards does not match meta's checksum"
                )));
            }
            Ok(data)
        })
        .await
        .map_err(|e| Error::internal(format!("decoding task failed: {e}")))?
    }

    async fn fetch_via(
        &self,
        via: &cairn_proto::NodeAddr,
        ext: &Extent,
        cap: &Capability,
        order: &[NodeId],
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let sources = order
            .iter()
            .filter_map(|n| {
                self.addrs.get(n).map(|a| cairn_proto::NodeAddr {
                    id: *n,
                    addr: a.clone(),
                })
            })
            .collect();
        let req = StorageRequest::GetChunkVia {
            chunk: ext.chunk,
            offset: off,
            len,
            cap: cap.clone(),
            chunk_len: ext.len,
            crc: ext.crc,
            sources,
            remote: ext.remote.clone(),
        };
        self.fetch_with(&via.addr, (ext.chunk, ext.len, ext.crc), req, off, len)
            .await
    }

    async fn fetch_from(
        &self,
        addr: &str,
        ext: &Extent,
        cap: &Capability,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let req = StorageRequest::GetChunk {
            chunk: ext.chunk,
            offset: off,
            len,
            cap: cap.clone(),
        };
        self.fetch_with(addr, (ext.chunk, ext.len, ext.crc), req, off, len)
            .await
    }

    /// Send a chunk read (`GetChunk` or `GetChunkVia`) and take the bytes,
    /// each block checked; a read of the whole chunk (`whole`: its id,
    /// length and checksum summary) also against meta's summary.
    async fn fetch_with(
        &self,
        addr: &str,
        whole: (ChunkId, u64, u32),
        req: StorageRequest,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.fetch_into(addr, whole, req, off, len, Dst::Grow(&mut data))
            .await?;
        Ok(data)
    }

    /// [`Self::fetch_with`] into `dst`: `len` bytes.
    async fn fetch_into(
        &self,
        addr: &str,
        whole: (ChunkId, u64, u32),
        req: StorageRequest,
        off: u64,
        len: u64,
        mut dst: Dst<'_>,
    ) -> Result<()> {
        let (chunk, chunk_len, chunk_crc) = whole;
        let pool = &self.client.inner.storage;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut p = pool.get(addr).await?;
            let r = tokio::time::timeout(FETCH_TIMEOUT, async {
                p.conn.send(&req).await?;
                let header = p.conn.recv::<GetChunkResult>().await??;
                if header.len != len {
                    return Err(Error::invalid(format!(
                        "{addr} offered {} bytes, asked {len}",
                        header.len
                    )));
                }
                let data: &[u8] = match &mut dst {
                    Dst::Fill(out) => {
                        let mut got = 0;
                        while got < out.len() {
                            got += p.conn.read_data_frame_into(&mut out[got..]).await?;
                        }
                        out
                    }
                    Dst::Grow(out) => {
                        out.clear();
                        out.reserve_exact(len as usize);
                        while (out.len() as u64) < len {
                            p.conn.read_data_frame_append(out).await?;
                        }
                        if out.len() as u64 != len {
                            return Err(Error::invalid(format!(
                                "{addr} sent {} bytes, promised {len}",
                                out.len()
                            )));
                        }
                        out
                    }
                };
                let crcs = BlockCrcs(header.crcs);
                if off == 0 && len == chunk_len && crcs.summary() != chunk_crc {
                    return Err(Error::corrupt(format!(
                        "chunk {chunk} checksums differ from meta's record"
                    )));
                }
                if let Err(block) = crcs.verify(0, data) {
                    return Err(Error::corrupt(format!(
                        "chunk {chunk} block {} failed its checksum in transit",
                        block + (off / BLOCK_SIZE as u64) as usize
                    )));
                }
                Ok(())
            })
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(format!(
                    "{addr} took over {FETCH_TIMEOUT:?}"
                )))
            });
            match r {
                Ok(()) => {
                    pool.put(addr, p.conn);
                    return Ok(());
                }
                Err(e) if p.reused && attempt == 1 && e.kind == ErrorKind::Unavailable => {
                    pool.forget(addr);
                }
                Err(e) => {
                    // The stream may be mid-frame: never reuse this connection.
                    if e.kind != ErrorKind::NotFound && e.kind != ErrorKind::PermissionDenied {
                        pool.forget(addr);
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Bytes of one file version in order, as the `Bytes` the storage nodes
/// sent (checked, never copied): the one sequential reader every front end
/// consumes (`get`, S3 GET bodies, Python's whole-file reads). Windows of
/// [`WINDOW`] bytes are fetched ahead across chunk ends, as many as the
/// client's read-ahead byte budget holds; consecutive chunks come from
/// different replicas where meta offers several equally near (its read
/// order takes turns chunk by chunk). Dropping the stream cancels what it
/// fetched ahead.
pub struct ReadStream {
    reader: std::sync::Arc<FileReader>,
    /// Where the stream began, the next byte to hand out, and where to
    /// stop.
    start: u64,
    pos: u64,
    end: u64,
    /// The next window to start fetching.
    next: Option<WindowKey>,
    /// Pieces being fetched, in file order: file offset, length, task.
    inflight: VecDeque<(u64, u64, tokio::task::JoinHandle<Result<Bytes>>)>,
    inflight_bytes: u64,
    budget: u64,
}

impl ReadStream {
    /// The next piece, `None` at the end. After an error the stream ends.
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        if self.pos >= self.end {
            return None;
        }
        let r = self.reader.clone();
        if r.open.inode.is_inline() || r.cues.wholefile == Some(true) {
            let got = r.read_at(self.pos, self.end - self.pos).await;
            self.pos = self.end;
            return Some(got.map(Bytes::from));
        }
        // A read that one window holds (a small file, a short range) is
        // fetched right here: no task to spawn.
        if let (true, Some(k)) = (self.inflight.is_empty(), self.next) {
            let (at, in_chunk, len) = self.piece(k);
            if at + len >= self.end {
                self.next = None;
                let got = r.fetch(k.0, in_chunk, len).await;
                return Some(self.take(at, got));
            }
        }
        // Start windows while the budget allows (always the one needed).
        while let Some(k) = self.next {
            let (at, in_chunk, len) = self.piece(k);
            if at >= self.end
                || (!self.inflight.is_empty() && self.inflight_bytes + len > self.budget)
            {
                break;
            }
            let me = r.clone();
            let task = tokio::spawn(async move { me.fetch(k.0, in_chunk, len).await });
            self.inflight.push_back((at, len, task));
            self.inflight_bytes += len;
            self.next = r.window_after(k);
        }
        let (at, len, task) = self.inflight.pop_front()?;
        self.inflight_bytes -= len;
        let got = match task.await {
            Ok(got) => got,
            Err(e) => Err(Error::internal(format!("read task failed: {e}"))),
        };
        Some(self.take(at, got))
    }

    /// What of window `k` the stream needs: its file offset, offset in
    /// its chunk, and length (a range's ends cut the first and last
    /// windows, so a short range fetches only its blocks).
    fn piece(&self, k: WindowKey) -> (u64, u64, u64) {
        let at = self.reader.window_file_offset(k);
        let lo = self.start.max(at);
        let hi = self.end.min(at + self.reader.window_len(k)).max(lo);
        (lo, k.1 + (lo - at), hi - lo)
    }

    /// What the reader gets of a piece fetched from file offset `at`; after
    /// an error the stream ends.
    fn take(&mut self, at: u64, got: Result<Bytes>) -> Result<Bytes> {
        let data = match got {
            Ok(d) => d,
            Err(e) => {
                self.stop();
                return Err(e);
            }
        };
        let from = (self.pos - at) as usize;
        let to = (self.end.min(at + data.len() as u64) - at) as usize;
        if self.pos < at || from >= to {
            self.stop();
            return Err(Error::internal(format!(
                "piece at {at} of {} bytes does not hold offset {}",
                data.len(),
                self.pos
            )));
        }
        self.pos = at + to as u64;
        Ok(data.slice(from..to))
    }

    /// End the stream: cancel the windows in flight.
    fn stop(&mut self) {
        self.pos = self.end;
        self.next = None;
        for (_, _, t) in self.inflight.drain(..) {
            t.abort();
        }
        self.inflight_bytes = 0;
    }
}

impl Drop for ReadStream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bytes `[start, end)` of `v`, in `v` itself when they are most of it
/// (a copy only when `start` is not 0); else copied out, so a small range
/// kept in the chunk cache does not hold a whole chunk's buffer.
fn trim(mut v: Vec<u8>, start: u64, end: u64) -> Vec<u8> {
    let (start, end) = (start as usize, end as usize);
    if (end - start) * 2 < v.capacity() {
        return v[start..end].to_vec();
    }
    v.truncate(end);
    v.drain(..start);
    v
}

/// Where a chunk read puts its bytes.
enum Dst<'a> {
    /// Exactly this slice (its length is the read's).
    Fill(&'a mut [u8]),
    /// This vector, cleared first; grown without a zero-fill.
    Grow(&'a mut Vec<u8>),
}

/// Run futures concurrently and collect their results in order (what
/// `futures::future::join_all` does, without the dependency).
async fn futures_join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
