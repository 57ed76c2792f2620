//! Streaming between HTTP bodies and the client library, with bounded
//! buffers: an upload is hashed (MD5, for the ETag) on its way into
//! [`cairn_client::Client::put_with_attrs`]; a download is the client's
//! read stream, its pieces passed on as they are.

use cairn_client::FileReader;
use futures_util::TryStreamExt;
use md5::{Digest, Md5};
use s3s::dto::StreamingBlob;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::StreamReader;

/// Pieces queued between the reading task and the HTTP response.
const QUEUED: usize = 2;

/// An upload body as an `AsyncRead` (s3s has already decoded aws-chunked).
pub fn blob_reader(blob: StreamingBlob) -> impl AsyncRead + Unpin + Send {
    StreamReader::new(blob.map_err(std::io::Error::other))
}

/// Hashes what passes through; also counts it.
pub struct Hashing<R> {
    inner: R,
    state: Arc<Mutex<(Md5, u64)>>,
    /// The MD5 the request's `Content-MD5` promised: at the end a body
    /// that differs is an error, before anything is committed.
    expect: Option<[u8; 16]>,
    mismatch: Arc<std::sync::atomic::AtomicBool>,
}

impl<R> Hashing<R> {
    pub fn new(inner: R) -> (Hashing<R>, HashHandle) {
        Hashing::expecting(inner, None)
    }

    /// A hashing reader that fails at its end unless the MD5 is `expect`.
    pub fn expecting(inner: R, expect: Option<[u8; 16]>) -> (Hashing<R>, HashHandle) {
        let state = Arc::new(Mutex::new((Md5::new(), 0)));
        let mismatch = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (
            Hashing {
                inner,
                state: state.clone(),
                expect,
                mismatch: mismatch.clone(),
            },
            HashHandle(state, mismatch),
        )
    }
}

/// The far end of a [`Hashing`] reader, to read the digest once it is drained.
#[derive(Clone)]
pub struct HashHandle(Arc<Mutex<(Md5, u64)>>, Arc<std::sync::atomic::AtomicBool>);

impl HashHandle {
    /// The MD5 so far and the byte count.
    pub fn digest(&self) -> ([u8; 16], u64) {
        let st = self.0.lock().unwrap();
        (st.0.clone().finalize().into(), st.1)
    }

    /// Whether the body ended with another MD5 than `Content-MD5` said.
    pub fn mismatched(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The MD5 a `Content-MD5` header names (base64 of 16 bytes); anything
/// else is `InvalidDigest`, as AWS answers.
pub fn content_md5(h: Option<&str>) -> s3s::S3Result<Option<[u8; 16]>> {
    use base64::Engine;
    let Some(h) = h else { return Ok(None) };
    base64::engine::general_purpose::STANDARD
        .decode(h.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Some)
        .ok_or_else(|| s3s::s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))
}

/// A body whose MD5 was not its `Content-MD5`.
pub fn bad_digest() -> s3s::S3Error {
    s3s::s3_error!(
        BadDigest,
        "The Content-MD5 you specified did not match what we received."
    )
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            let ended = new.is_empty() && room;
            let mut st = self.state.lock().unwrap();
            st.0.update(new);
            st.1 += new.len() as u64;
            if let (true, Some(want)) = (ended, self.expect) {
                let got: [u8; 16] = st.0.clone().finalize().into();
                if got != want {
                    self.mismatch
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    return Poll::Ready(Err(std::io::Error::other(
                        "the body's MD5 is not its Content-MD5",
                    )));
                }
            }
        }
        r
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes `[start, end)` of an open file version as a response body: the
/// client's [`cairn_client::ReadStream`] (read-ahead across chunks, the
/// same for ranges), its pieces handed to the response as they are, no
/// copy. A task drives the stream so the body stays `Sync`; the channel
/// holds at most [`QUEUED`] pieces beyond the stream's read-ahead budget.
pub fn download(reader: FileReader, start: u64, end: u64) -> StreamingBlob {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(QUEUED);
    tokio::spawn(async move {
        let mut stream = reader.stream(start, end);
        while let Some(piece) = stream.next().await {
            let failed = piece.is_err();
            if let Err(e) = &piece {
                // The body ends short of its Content-Length: the client
                // sees a broken download, never wrong bytes.
                tracing::warn!("download failed midway: {e}");
            }
            let piece = piece.map_err(std::io::Error::other);
            if tx.send(piece).await.is_err() || failed {
                // The client went away (dropping the stream cancels its
                // read-ahead), or the read failed.
                break;
            }
        }
    });
    StreamingBlob::wrap(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

/// Read and drop a request body that will not be stored, up to a limit,
/// so that an early error answer leaves the connection usable. Past the
/// limit the connection is closed instead.
pub async fn drain(blob: Option<StreamingBlob>) {
    const LIMIT: usize = 8 << 20;
    let Some(mut blob) = blob else { return };
    let mut seen = 0;
    while let Ok(Some(b)) = blob.try_next().await {
        seen += b.len();
        if seen > LIMIT {
            return;
        }
    }
}
