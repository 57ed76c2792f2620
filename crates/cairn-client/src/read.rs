use crate::client::Client;
use cairn_proto::{Capability, GetChunkResult, MetaRequest, OpenFile, StorageRequest};
use cairn_types::{
    BlockCrcs, CairnPath, Error, ErrorKind, Extent, Inode, NodeId, Result, BLOCK_SIZE,
};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
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
}

impl Client {
    pub async fn open(&self, path: &CairnPath) -> Result<FileReader> {
        let open = self.locate(path).await?;
        let mut starts = Vec::with_capacity(open.inode.extents.len());
        let mut pos = 0;
        for e in &open.inode.extents {
            starts.push(pos);
            pos += e.len;
        }
        let addrs = open.nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
        Ok(FileReader {
            client: self.clone(),
            open,
            starts,
            addrs,
        })
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

    /// Read up to `len` bytes at `offset` (fewer at the end of the file).
    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size());
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

    /// Stream the whole version into `w`, `read_ahead` chunks in flight.
    pub async fn copy_to<W: AsyncWrite + Unpin>(self, w: &mut W) -> Result<u64> {
        let me = std::sync::Arc::new(self);
        let n = me.open.inode.extents.len();
        let ahead = me.client.inner.read_ahead;
        let mut inflight: VecDeque<tokio::task::JoinHandle<Result<Vec<u8>>>> = VecDeque::new();
        let mut next = 0;
        let mut written = 0u64;
        let result: Result<()> = async {
            loop {
                while next < n && inflight.len() < ahead {
                    let r = me.clone();
                    let idx = next;
                    inflight.push_back(tokio::spawn(async move {
                        let len = r.open.inode.extents[idx].len;
                        r.fetch(idx, 0, len).await
                    }));
                    next += 1;
                }
                let Some(h) = inflight.pop_front() else { break };
                let data = h
                    .await
                    .map_err(|e| Error::internal(format!("read task failed: {e}")))??;
                w.write_all(&data)
                    .await
                    .map_err(|e| Error::from(e).context("writing the output"))?;
                written += data.len() as u64;
            }
            w.flush()
                .await
                .map_err(|e| Error::from(e).context("writing the output"))?;
            Ok(())
        }
        .await;
        for h in inflight {
            h.abort();
        }
        result.map(|_| written)
    }

    /// Bytes `[off, off+len)` of extent `idx`, from the first replica that
    /// can serve them intact.
    async fn fetch(&self, idx: usize, off: u64, len: u64) -> Result<Vec<u8>> {
        let ext = &self.open.inode.extents[idx];
        let cap = &self.open.caps[idx];
        let start = off - off % BLOCK_SIZE as u64;
        let end = (off + len)
            .div_ceil(BLOCK_SIZE as u64)
            .saturating_mul(BLOCK_SIZE as u64)
            .min(ext.len);
        let mut failures = Vec::new();
        for node in &ext.nodes {
            let Some(addr) = self.addrs.get(node) else {
                failures.push(format!("node {node}: address unknown"));
                continue;
            };
            match self.fetch_from(addr, ext, cap, start, end - start).await {
                Ok(data) => {
                    let skip = (off - start) as usize;
                    return Ok(data[skip..skip + len as usize].to_vec());
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
        Err(Error::unavailable(format!(
            "no replica of chunk {} could be read ({})",
            ext.chunk,
            failures.join("; ")
        )))
    }

    async fn fetch_from(
        &self,
        addr: &str,
        ext: &Extent,
        cap: &Capability,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let pool = &self.client.inner.storage;
        let req = StorageRequest::GetChunk {
            chunk: ext.chunk,
            offset: off,
            len,
            cap: cap.clone(),
        };
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
                let mut data = Vec::with_capacity(len as usize);
                while (data.len() as u64) < len {
                    p.conn.read_data_frame_append(&mut data).await?;
                }
                if data.len() as u64 != len {
                    return Err(Error::invalid(format!(
                        "{addr} sent {} bytes, promised {len}",
                        data.len()
                    )));
                }
                let crcs = BlockCrcs(header.crcs);
                if off == 0 && len == ext.len && crcs.summary() != ext.crc {
                    return Err(Error::corrupt(format!(
                        "chunk {} checksums differ from meta's record",
                        ext.chunk
                    )));
                }
                if let Err(block) = crcs.verify(0, &data) {
                    return Err(Error::corrupt(format!(
                        "chunk {} block {} failed its checksum in transit",
                        ext.chunk,
                        block + (off / BLOCK_SIZE as u64) as usize
                    )));
                }
                Ok(data)
            })
            .await
            .unwrap_or_else(|_| {
                Err(Error::timeout(format!(
                    "{addr} took over {FETCH_TIMEOUT:?}"
                )))
            });
            match r {
                Ok(data) => {
                    pool.put(addr, p.conn);
                    return Ok(data);
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
