//! Open files: a reader of one version with ranged reads, and a writer that
//! streams into a new version and commits it on close.

use crate::client::{exists_if_create, make_parents, open_file, RawBuf};
use crate::conn::{Conn, ForkGuard};
use crate::convert;
use crate::errors::to_py;
use bytes::{Buf, Bytes};
use cairn_client::{FileReader, PutOptions};
use cairn_types::{CairnPath, Cues, Error, ErrorKind, Inode, Result, Version};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::Mutex;
use tokio::sync::{mpsc, oneshot};

/// Reads at or above this size skip the read-ahead windows and go straight
/// to ranged chunk reads (the windows are 4 MiB).
const DIRECT_READ: u64 = 8 << 20;

/// One open version of a file.
#[pyclass(frozen, module = "cairn._native")]
pub struct NativeReader {
    inner: ForkGuard<(Arc<Conn>, Arc<FileReader>)>,
}

impl NativeReader {
    pub fn new(conn: Arc<Conn>, reader: FileReader) -> NativeReader {
        NativeReader {
            inner: ForkGuard::new((conn, Arc::new(reader))),
        }
    }

    fn parts(&self, py: Python<'_>) -> PyResult<&(Arc<Conn>, Arc<FileReader>)> {
        self.inner.get("file").map_err(|e| to_py(py, e))
    }
}

async fn read_range(r: &Arc<FileReader>, offset: u64, len: u64) -> Result<Vec<u8>> {
    if len >= DIRECT_READ {
        r.read_at(offset, len).await
    } else {
        r.read_at_ahead(offset, len).await
    }
}

#[pymethods]
impl NativeReader {
    #[getter]
    fn size(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.parts(py)?.1.size())
    }

    #[getter]
    fn version(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.parts(py)?.1.inode().version.0)
    }

    fn stat<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        convert::inode(py, self.parts(py)?.1.inode())
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the file). Reads
    /// near the previous one are served from read-ahead windows.
    fn read<'py>(&self, py: Python<'py>, offset: u64, len: u64) -> PyResult<Bound<'py, PyBytes>> {
        let (conn, r) = self.parts(py)?;
        let data = conn.run(py, read_range(r, offset, len))?;
        Ok(PyBytes::new(py, &data))
    }

    /// Read at `offset` into `buf`; returns the bytes read (0 at the end).
    fn readinto(&self, py: Python<'_>, offset: u64, buf: &Bound<'_, PyAny>) -> PyResult<usize> {
        let (conn, r) = self.parts(py)?;
        let mut raw = RawBuf::writable(py, buf)?;
        let n = conn.run(py, async move {
            // SAFETY: `buf` outlives this call and is writable.
            let out = unsafe { raw.slice_mut() };
            let data = read_range(r, offset, out.len() as u64).await?;
            out[..data.len()].copy_from_slice(&data);
            Ok(data.len())
        })?;
        Ok(n)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    Replace,
    Create,
    Append,
}

/// Pieces in flight to the put. A write of at least [`LEND_FROM`] bytes
/// sends one piece lent from its Python buffer and waits until the put has
/// copied it, so the writer holds no copy of its own; smaller ones (and, in
/// append mode, the current version) travel as owned pieces, a few queued.
const PIECES: usize = 4;
/// Largest owned piece the current version is streamed in.
const PIECE: usize = 4 << 20;
/// Writes this large are lent, not copied.
const LEND_FROM: usize = 64 << 10;

/// Bytes on their way from `write` to the put.
enum Piece {
    Owned(Bytes),
    Lent(Lent),
}

/// The bytes of a Python buffer, read in place by the put. `write` keeps the
/// buffer alive and waits for `done` (sent once the last byte is copied) or
/// for its sender to be dropped (the put ended without them) before it
/// returns, so nothing here reads the buffer after that.
struct Lent {
    ptr: *const u8,
    len: usize,
    at: usize,
    done: Option<oneshot::Sender<()>>,
}

// SAFETY: see `Lent`: the buffer outlives the piece's use, and only the
// reader of the put reads it.
unsafe impl Send for Lent {}

/// An `AsyncRead` over pieces sent through a channel. The end of the
/// channel is the end of the data only if the writer was not abandoned:
/// then it is an error, and the put fails without committing.
struct PieceReader {
    rx: mpsc::Receiver<std::io::Result<Piece>>,
    cur: Option<Piece>,
    aborted: Arc<AtomicBool>,
}

impl AsyncRead for PieceReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            match &mut self.cur {
                Some(Piece::Owned(b)) if !b.is_empty() => {
                    let n = b.len().min(buf.remaining());
                    buf.put_slice(&b[..n]);
                    b.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Some(Piece::Lent(l)) if l.at < l.len => {
                    let n = (l.len - l.at).min(buf.remaining());
                    // SAFETY: `at + n <= len` bytes of a buffer its `write`
                    // keeps alive until `done` is sent or dropped.
                    let part = unsafe { std::slice::from_raw_parts(l.ptr.add(l.at), n) };
                    buf.put_slice(part);
                    l.at += n;
                    if l.at == l.len {
                        if let Some(done) = l.done.take() {
                            let _ = done.send(());
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                _ => self.cur = None,
            }
            match self.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(p))) => self.cur = Some(p),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) if self.aborted.load(Ordering::SeqCst) => {
                    return Poll::Ready(Err(aborted()))
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
            }
        }
    }
}

fn aborted() -> std::io::Error {
    // Not `Interrupted`: readers retry that kind forever.
    std::io::Error::other("the file was abandoned before close; nothing was committed")
}

struct Writing {
    tx: mpsc::Sender<std::io::Result<Piece>>,
    task: tokio::task::JoinHandle<Result<Inode>>,
}

/// A file being written; nothing of it is visible until `close()` commits.
#[pyclass(frozen, module = "cairn._native")]
pub struct NativeWriter {
    conn: ForkGuard<Arc<Conn>>,
    state: ForkGuard<Mutex<Option<Writing>>>,
    aborted: Arc<AtomicBool>,
}

impl NativeWriter {
    pub fn start(
        py: Python<'_>,
        conn: Arc<Conn>,
        path: CairnPath,
        cues: Cues,
        mode: WriteMode,
    ) -> PyResult<NativeWriter> {
        let client = conn.client.clone();
        // Parents first (one round trip), since the put consumes data
        // before meta can refuse a missing directory; in append mode, the
        // current version, whose bytes go first and which must still be
        // current at the commit.
        let (expected, old) = conn.run(py, async {
            make_parents(&client, &path).await?;
            match mode {
                WriteMode::Replace => Ok((None, None)),
                WriteMode::Create => Ok((Some(Version(0)), None)),
                WriteMode::Append => match open_file(&client, &path, &cues, None).await {
                    Ok(r) => Ok((Some(r.inode().version), Some(r))),
                    Err(e) if e.kind == ErrorKind::NotFound => Ok((Some(Version(0)), None)),
                    Err(e) => Err(e),
                },
            }
        })?;
        let aborted = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(PIECES);
        let new_data = PieceReader {
            rx,
            cur: None,
            aborted: aborted.clone(),
        };
        let opts = PutOptions {
            cues,
            expected,
            ..PutOptions::default()
        };
        let task = conn.rt.spawn(async move {
            let expected = opts.expected;
            let put = match old {
                None => client.put(&path, new_data, opts).await,
                Some(r) => {
                    let (old_tx, old_rx) = mpsc::channel(PIECES);
                    let old_data = PieceReader {
                        rx: old_rx,
                        cur: None,
                        aborted: Arc::new(AtomicBool::new(false)),
                    };
                    tokio::spawn(stream_version(Arc::new(r), old_tx));
                    client.put(&path, old_data.chain(new_data), opts).await
                }
            };
            // An append that raced another writer stays a Conflict.
            put.map_err(|e| match mode {
                WriteMode::Create => exists_if_create(expected, e),
                _ => e,
            })
        });
        Ok(NativeWriter {
            conn: ForkGuard::new(conn),
            state: ForkGuard::new(Mutex::new(Some(Writing { tx, task }))),
            aborted,
        })
    }

    fn parts(&self, py: Python<'_>) -> PyResult<(&Arc<Conn>, &Mutex<Option<Writing>>)> {
        let conn = self.conn.get("file").map_err(|e| to_py(py, e))?;
        let state = self.state.get("file").map_err(|e| to_py(py, e))?;
        Ok((conn, state))
    }
}

/// Send every byte of an open version down `tx`, then end it; a failed
/// read is sent as an error, so the put fails instead of committing less.
async fn stream_version(r: Arc<FileReader>, tx: mpsc::Sender<std::io::Result<Piece>>) {
    let size = r.size();
    let mut at = 0;
    while at < size {
        let n = (PIECE as u64).min(size - at);
        let piece = match r.read_at_ahead(at, n).await {
            Ok(d) => Ok(Piece::Owned(Bytes::from(d))),
            Err(e) => Err(std::io::Error::other(format!(
                "reading the current version to append to it: {e}"
            ))),
        };
        let failed = piece.is_err();
        if tx.send(piece).await.is_err() || failed {
            return;
        }
        at += n;
    }
}

/// The put's own error, once its task is over.
async fn outcome(task: tokio::task::JoinHandle<Result<Inode>>) -> Result<Inode> {
    task.await
        .map_err(|e| Error::internal(format!("write task failed: {e}")))?
}

#[pymethods]
impl NativeWriter {
    /// Hand `data` to the new version; blocks (without the GIL) until the
    /// put has taken it: copied it (a large write, read in place) or queued
    /// it (a small one, copied, while the pieces in flight are not full).
    /// Returns the bytes taken.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let (conn, state) = self.parts(py)?;
        let raw = RawBuf::readable(py, data)?;
        let n = conn.run(py, async move {
            // SAFETY: `data` outlives this call, and no piece of it is read
            // after the call returns (see `Lent`).
            let bytes = unsafe { raw.slice() };
            let mut g = state.lock().await;
            let Some(w) = g.as_mut() else {
                return Err(Error::invalid("write to a closed file"));
            };
            if bytes.is_empty() {
                return Ok(0);
            }
            let taken = if bytes.len() < LEND_FROM {
                let piece = Piece::Owned(Bytes::copy_from_slice(bytes));
                w.tx.send(Ok(piece)).await.is_ok()
            } else {
                let (done_tx, done) = oneshot::channel();
                let piece = Piece::Lent(Lent {
                    ptr: bytes.as_ptr(),
                    len: bytes.len(),
                    at: 0,
                    done: Some(done_tx),
                });
                // Either way nothing reads the piece once this returns: it
                // was copied (`done`), or dropped unsent or with the reader,
                // or the reader is gone (a send racing its end can leave the
                // piece in the channel, unread, until the channel is freed).
                w.tx.send(Ok(piece)).await.is_ok()
                    && tokio::select! {
                        biased;
                        r = done => r.is_ok(),
                        _ = w.tx.closed() => false,
                    }
            };
            if !taken {
                // The put ended early: report why.
                let w = g.take().expect("checked above");
                drop(w.tx);
                return Err(match outcome(w.task).await {
                    Err(e) => e,
                    Ok(_) => Error::internal("the write ended before its data did"),
                });
            }
            Ok(bytes.len())
        })?;
        Ok(n)
    }

    /// Whether `close()` or `abort()` ran.
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        let (_, state) = self.parts(py)?;
        // Locked: a write is in progress, so the file is open.
        Ok(state.try_lock().is_ok_and(|g| g.is_none()))
    }

    /// Commit what was written as the file's new version; returns its stat.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let (conn, state) = self.parts(py)?;
        let inode = conn.run(py, async {
            let Some(w) = state.lock().await.take() else {
                return Ok(None);
            };
            drop(w.tx);
            outcome(w.task).await.map(Some)
        })?;
        inode.map(|i| convert::inode(py, &i)).transpose()
    }

    /// Give up: nothing is committed and the chunks stored so far are
    /// discarded.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let (conn, state) = self.parts(py)?;
        let aborted = &self.aborted;
        conn.run(py, async {
            if let Some(w) = state.lock().await.take() {
                aborted.store(true, Ordering::SeqCst);
                drop(w.tx);
                // The put fails, as it should: waiting for it waits for its
                // chunks to be discarded.
                let _ = outcome(w.task).await;
            }
            Ok(())
        })
    }
}

impl Drop for NativeWriter {
    fn drop(&mut self) {
        // Dropped without close (the Python object's own close commits):
        // the put must fail, not commit a truncated file.
        self.aborted.store(true, Ordering::SeqCst);
    }
}
