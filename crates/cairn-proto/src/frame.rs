use crate::auth::{Credentials, IdentityId, Peer, Role};
use bytes::BufMut;
use cairn_types::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// Largest frame accepted, control or data. Anything larger is refused
/// before a byte of it is buffered.
pub const MAX_FRAME: usize = 32 << 20;
/// Chunk bytes travel in frames of at most this size, so that every hop of a
/// replication chain can write and forward a piece while the next arrives.
pub const DATA_FRAME: usize = 1 << 20;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const IO_BUF: usize = 256 * 1024;

/// The version of Cairn's wire protocol (the request and response types
/// of meta and storage nodes, and their encoding). Both ends of a
/// connection must speak the same one: postcard encodings carry no field
/// names, so a peer of another version would misread messages. Raise it
/// with every change to a wire type; the handshake then names both
/// versions instead of failing later with a malformed message.
///
/// 1 was every build before versions were exchanged; 2 adds them, with
/// the `Versions` and `OpenVersion` requests; 3 adds client identities
/// (in the hello, in capabilities, and their requests); 4 adds TLS (the
/// preamble); 5 adds the bytes a node took in to its heartbeat.
pub const PROTOCOL: u32 = 5;

/// The server's first frame since protocol 4, before any TLS: one of
/// these 16 bytes, then its protocol version. It reads as a challenge
/// and a version to a client of protocol 2 or 3, which then names the
/// version mismatch.
const PREAMBLE_TLS: &[u8; 16] = b"CAIRN-TLS-ON\0\0\0\0";
const PREAMBLE_PLAIN: &[u8; 16] = b"CAIRN-TLS-OFF\0\0\0";

/// The client's answer to the challenge: the role it claims, the proof,
/// and the identity it proves (None: a node, or the admin client key).
/// The protocol versions were compared at the preamble.
#[derive(Serialize, Deserialize)]
struct Hello {
    role: Role,
    proof: [u8; 32],
    identity: Option<IdentityId>,
}

/// Bytes of the server's challenge, and of the preamble's marker (the
/// protocol version follows the marker, as it followed the challenge of
/// servers of protocols 2 and 3).
const CHALLENGE: usize = 16;

/// The two halves of a connection: a TCP socket's, or a TLS stream's.
type Rd = Box<dyn AsyncRead + Send + Unpin>;
type Wr = Box<dyn AsyncWrite + Send + Unpin>;

/// One authenticated connection (over TLS unless `--tls off`). Requests
/// on a connection are sequential: send a request, read its response;
/// pools hold several connections.
pub struct Conn {
    rd: BufReader<Rd>,
    wr: BufWriter<Wr>,
    /// The authenticated role of the peer (server side) or of ourselves
    /// (client side).
    pub role: Role,
    /// The identity the peer proved (server side), if it is a client
    /// holding one; None for nodes and the admin client key.
    pub identity: Option<IdentityId>,
    pub peer: SocketAddr,
}

fn closed(e: std::io::Error, peer: &SocketAddr) -> Error {
    Error::from(e).context(format!("connection to {peer}"))
}

impl Conn {
    fn new(stream: TcpStream, role: Role) -> Result<Conn> {
        // Without NODELAY, small responses wait for delayed ACKs (~40 ms).
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let (r, w) = stream.into_split();
        Ok(Self::over(Box::new(r), Box::new(w), role, peer))
    }

    /// A connection over a TLS stream.
    fn tls<S>(stream: S, role: Role, peer: SocketAddr) -> Conn
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        Self::over(Box::new(r), Box::new(w), role, peer)
    }

    fn over(r: Rd, w: Wr, role: Role, peer: SocketAddr) -> Conn {
        Conn {
            rd: BufReader::with_capacity(IO_BUF, r),
            wr: BufWriter::with_capacity(IO_BUF, w),
            role,
            identity: None,
            peer,
        }
    }

    /// Who the peer proved to be (server side).
    pub fn peer_is(&self) -> Peer {
        Peer {
            role: self.role,
            identity: self.identity,
        }
    }

    /// Queue one frame; it leaves on the next [`Conn::flush`] or when the
    /// buffer fills.
    pub async fn write_frame(&mut self, body: &[u8]) -> Result<()> {
        if body.len() > MAX_FRAME {
            return Err(Error::invalid(format!(
                "frame of {} bytes exceeds {MAX_FRAME}",
                body.len()
            )));
        }
        let peer = self.peer;
        self.wr
            .write_u32(body.len() as u32)
            .await
            .map_err(|e| closed(e, &peer))?;
        self.wr.write_all(body).await.map_err(|e| closed(e, &peer))
    }

    pub async fn flush(&mut self) -> Result<()> {
        let peer = self.peer;
        self.wr.flush().await.map_err(|e| closed(e, &peer))
    }

    /// Read one frame into `buf` (which becomes the frame), refusing frames
    /// over `max`. A buffer reused from frame to frame is not zeroed again
    /// (only growth is): the bytes read overwrite it.
    pub async fn read_frame_into(&mut self, buf: &mut Vec<u8>, max: usize) -> Result<()> {
        let peer = self.peer;
        let len = self.rd.read_u32().await.map_err(|e| closed(e, &peer))? as usize;
        if len > max.min(MAX_FRAME) {
            return Err(Error::invalid(format!(
                "peer {peer} sent a frame of {len} bytes (limit {max})"
            )));
        }
        buf.resize(len, 0);
        self.rd
            .read_exact(buf)
            .await
            .map_err(|e| closed(e, &peer))?;
        Ok(())
    }

    pub async fn read_frame(&mut self, max: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_frame_into(&mut buf, max).await?;
        Ok(buf)
    }

    /// Data frames are never empty: an empty frame says the sender hit an
    /// error mid-stream, and the error follows as a message.
    pub async fn abort_data(&mut self, err: &Error) -> Result<()> {
        self.write_frame(&[]).await?;
        self.send(err).await
    }

    /// Read one data frame (at most [`DATA_FRAME`] bytes) into `buf`, or the
    /// error the sender aborted the stream with.
    pub async fn read_data_frame(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.read_frame_into(buf, DATA_FRAME).await?;
        if buf.is_empty() {
            let e: Error = self.recv().await?;
            return Err(e);
        }
        Ok(())
    }

    /// Read one data frame and append it to `out` without an intermediate
    /// copy or a zero-fill first; returns its length. An aborted stream
    /// returns the sender's error.
    pub async fn read_data_frame_append(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        let len = self.data_frame_len(usize::MAX).await?;
        let peer = self.peer;
        out.reserve(len);
        let mut left = len;
        while left > 0 {
            // Reads into the spare capacity (tokio tracks what it filled).
            let n = self
                .rd
                .read_buf(&mut (&mut *out).limit(left))
                .await
                .map_err(|e| closed(e, &peer))?;
            if n == 0 {
                return Err(closed(std::io::ErrorKind::UnexpectedEof.into(), &peer));
            }
            left -= n;
        }
        Ok(len)
    }

    /// Read one data frame into the front of `out`, which must have room
    /// for it; returns its length. An aborted stream returns the sender's
    /// error.
    pub async fn read_data_frame_into(&mut self, out: &mut [u8]) -> Result<usize> {
        let len = self.data_frame_len(out.len()).await?;
        let peer = self.peer;
        self.rd
            .read_exact(&mut out[..len])
            .await
            .map_err(|e| closed(e, &peer))?;
        Ok(len)
    }

    /// The length of the next data frame, at most `room` (else an error);
    /// an empty frame announces the sender's error, which is returned.
    async fn data_frame_len(&mut self, room: usize) -> Result<usize> {
        let peer = self.peer;
        let len = self.rd.read_u32().await.map_err(|e| closed(e, &peer))? as usize;
        if len > DATA_FRAME || len > room {
            return Err(Error::invalid(format!(
                "peer {peer} sent a data frame of {len} bytes, more than the {} expected",
                DATA_FRAME.min(room)
            )));
        }
        if len == 0 {
            let e: Error = self.recv().await?;
            return Err(e);
        }
        Ok(len)
    }

    /// Send one message and flush.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<()> {
        let body = postcard::to_stdvec(msg).map_err(|e| Error::internal(format!("encode: {e}")))?;
        self.write_frame(&body).await?;
        self.flush().await
    }

    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        let body = self.read_frame(MAX_FRAME).await?;
        postcard::from_bytes(&body)
            .map_err(|e| Error::invalid(format!("malformed message from {}: {e}", self.peer)))
    }

    /// Send a request and wait for its response, all within `timeout`.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &mut self,
        req: &Q,
        timeout: Duration,
    ) -> Result<A> {
        let peer = self.peer;
        tokio::time::timeout(timeout, async {
            self.send(req).await?;
            self.recv().await
        })
        .await
        .map_err(|_| Error::timeout(format!("{peer} did not answer within {timeout:?}")))?
    }
}

/// Open an authenticated connection.
pub async fn connect(addr: &str, creds: &Credentials, timeout: Duration) -> Result<Conn> {
    connect_speaking(addr, creds, timeout, PROTOCOL).await
}

/// [`connect`] as a client of protocol `protocol` (tests of mismatches).
async fn connect_speaking(
    addr: &str,
    creds: &Credentials,
    timeout: Duration,
    protocol: u32,
) -> Result<Conn> {
    let fut = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::from(e).context(format!("cannot connect to {addr}")))?;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let bad = || Error::invalid(format!("{addr} is not a Cairn server (bad handshake)"));
        let len = stream.read_u32().await.map_err(|e| closed(e, &peer))? as usize;
        if len > 64 {
            return Err(bad());
        }
        let mut first = vec![0u8; len];
        stream
            .read_exact(&mut first)
            .await
            .map_err(|e| closed(e, &peer))?;
        let version = |f: &[u8]| u32::from_be_bytes(f[CHALLENGE..].try_into().expect("4 bytes"));
        let (tls, theirs) = match first.len() {
            n if n == CHALLENGE + 4 && first[..CHALLENGE] == PREAMBLE_TLS[..] => {
                (true, version(&first))
            }
            n if n == CHALLENGE + 4 && first[..CHALLENGE] == PREAMBLE_PLAIN[..] => {
                (false, version(&first))
            }
            // Servers before the preamble: a bare challenge (protocol
            // 1), or a challenge and the version (2 and 3).
            CHALLENGE => (false, 1),
            n if n == CHALLENGE + 4 => (false, version(&first)),
            _ => return Err(bad()),
        };
        if theirs != protocol {
            return Err(Error::invalid(format!(
                "the server at {addr} speaks Cairn protocol {theirs} and this client speaks \
                 {protocol}: run the same Cairn release on both (`cairn --version`)"
            )));
        }
        let mut conn = match (tls, crate::tls::enabled()) {
            (true, true) => {
                let ca = creds.ca().ok_or_else(|| {
                    Error::invalid(format!(
                        "the server at {addr} speaks TLS, and these credentials carry no cluster \
                         CA certificate (a client.key from before TLS): copy client.key from \
                         meta's data directory again"
                    ))
                })?;
                let cfg = crate::tls::client_config(&ca)?;
                let tls = tokio_rustls::TlsConnector::from(cfg)
                    .connect(crate::tls::server_name(), stream)
                    .await
                    .map_err(|e| {
                        Error::denied(format!(
                            "the server at {addr} is not a server of this cluster (TLS: {e})"
                        ))
                    })?;
                Conn::tls(tls, creds.role(), peer)
            }
            (false, false) => Conn::new(stream, creds.role())?,
            (true, false) => {
                return Err(Error::invalid(format!(
                    "the server at {addr} speaks TLS and this process runs with --tls off: \
                     drop --tls off (CAIRN_TLS)"
                )))
            }
            (false, true) => {
                return Err(Error::invalid(format!(
                    "the server at {addr} runs without TLS (--tls off): refusing to send \
                     requests in clear; run this process with --tls off too, or the server with TLS"
                )))
            }
        };
        let challenge: [u8; CHALLENGE] =
            conn.read_frame(64).await?.try_into().map_err(|_| bad())?;
        conn.send(&Hello {
            role: creds.role(),
            proof: creds.prove(&challenge),
            identity: creds.identity(),
        })
        .await?;
        let verdict: Result<(), Error> = conn.recv().await?;
        verdict.map_err(|e| e.context(addr))?;
        Ok(conn)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::timeout(format!("connecting to {addr} took longer than {timeout:?}")))?
}

/// A listening socket that authenticates every connection before handing it on.
pub struct Listener {
    inner: TcpListener,
    creds: Credentials,
    /// The TLS side of this server (None: `--tls off`).
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Listener {
    pub async fn bind(addr: &str, creds: Credentials) -> Result<Listener> {
        let inner = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::from(e).context(format!("cannot listen on {addr}")))?;
        let tls = match (crate::tls::enabled(), creds.cluster()) {
            (true, Some(secret)) => Some(crate::tls::server_config(secret)?),
            _ => None,
        };
        Ok(Listener { inner, creds, tls })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .local_addr()
            .expect("bound socket has an address")
    }

    /// Accept the next TCP connection. The handshake is done by
    /// [`handshake`], which callers run in the connection's own task so a
    /// slow or hostile peer never stalls the accept loop.
    pub async fn accept(&self) -> Result<TcpStream> {
        let (s, _) = self.inner.accept().await?;
        Ok(s)
    }

    pub fn credentials(&self) -> Credentials {
        self.creds.clone()
    }

    /// Accept connections until `stop` turns true. Each connection is
    /// authenticated in a task of its own (a slow or hostile peer never
    /// stalls the accept loop) and then handed to `serve` with the stop signal.
    /// On stop, returns once every connection has ended (they see the
    /// signal and finish the request in hand), or after [`DRAIN_TIMEOUT`]
    /// with the rest aborted: what they hold (a node's store, say) is
    /// released when this returns.
    pub async fn serve<F, Fut>(self, mut stop: tokio::sync::watch::Receiver<bool>, serve: F)
    where
        F: Fn(Conn, tokio::sync::watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let serve = std::sync::Arc::new(serve);
        let mut conns = tokio::task::JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            tokio::select! {
                _ = stop.changed() => break,
                s = self.accept() => match s {
                    Ok(s) => {
                        let (creds, stop, serve) = (self.creds.clone(), stop.clone(), serve.clone());
                        let tls = self.tls.clone();
                        conns.spawn(async move {
                            match handshake(s, &creds, tls.as_ref()).await {
                                Ok(conn) => serve(conn, stop).await,
                                Err(e) => tracing::debug!("handshake failed: {e}"),
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        }
    }
}

/// How long a stopping server waits for its connections to end.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Server side of the handshake: the preamble, TLS (with `tls`), then
/// challenge, check the proof, answer.
pub async fn handshake(
    stream: TcpStream,
    creds: &Credentials,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Conn> {
    handshake_speaking(stream, creds, tls, PROTOCOL).await
}

/// [`handshake`] as a server of protocol `protocol` (tests of mismatches).
async fn handshake_speaking(
    mut stream: TcpStream,
    creds: &Credentials,
    tls: Option<&Arc<rustls::ServerConfig>>,
    protocol: u32,
) -> Result<Conn> {
    let fut = async {
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let mut first = Vec::with_capacity(4 + CHALLENGE + 4);
        first.extend_from_slice(&((CHALLENGE + 4) as u32).to_be_bytes());
        first.extend_from_slice(match tls {
            Some(_) => PREAMBLE_TLS,
            None => PREAMBLE_PLAIN,
        });
        first.extend_from_slice(&protocol.to_be_bytes());
        stream
            .write_all(&first)
            .await
            .map_err(|e| closed(e, &peer))?;
        let mut conn = match tls {
            Some(cfg) => {
                let s = tokio_rustls::TlsAcceptor::from(cfg.clone())
                    .accept(stream)
                    .await
                    .map_err(|e| Error::invalid(format!("TLS with {peer} failed: {e}")))?;
                Conn::tls(s, Role::Client, peer)
            }
            None => Conn::new(stream, Role::Client)?,
        };
        let mut challenge = [0u8; CHALLENGE];
        getrandom::getrandom(&mut challenge).expect("OS random source");
        conn.write_frame(&challenge).await?;
        conn.flush().await?;
        let body = conn.read_frame(MAX_FRAME).await?;
        let hello = postcard::from_bytes::<Hello>(&body)
            .map_err(|e| Error::invalid(format!("malformed message from {}: {e}", conn.peer)))?;
        if creds.check(
            hello.role,
            hello.identity.as_ref(),
            &challenge,
            &hello.proof,
        ) {
            conn.role = hello.role;
            conn.identity = hello.identity;
            conn.send(&Ok::<(), Error>(())).await?;
            Ok(conn)
        } else {
            let err = Error::denied("authentication failed: wrong cluster secret or client key");
            let _ = conn.send(&Err::<(), Error>(err.clone())).await;
            Err(err)
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| Error::timeout("handshake timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ClusterSecret;

    async fn server(creds: Credentials) -> (String, tokio::task::JoinHandle<Result<Vec<u8>>>) {
        let l = Listener::bind("127.0.0.1:0", creds.clone()).await.unwrap();
        let addr = l.local_addr().to_string();
        let h = tokio::spawn(async move {
            let s = l.accept().await?;
            let mut c = handshake(s, &creds, l.tls.as_ref()).await?;
            let got = c.read_frame(1024).await?;
            c.send(&"pong").await?;
            Ok(got)
        });
        (addr, h)
    }

    #[tokio::test]
    async fn handshake_and_echo() {
        let secret = ClusterSecret::generate();
        let (addr, h) = server(Credentials::Cluster(secret.clone())).await;
        let client = secret.client_credentials();
        let mut c = connect(&addr, &client, Duration::from_secs(5))
            .await
            .unwrap();
        c.write_frame(b"ping").await.unwrap();
        c.flush().await.unwrap();
        let pong: String = c.recv().await.unwrap();
        assert_eq!(pong, "pong");
        assert_eq!(h.await.unwrap().unwrap(), b"ping");
    }

    /// A client identity proves itself with its own key; the server's end
    /// of the connection names it. A key presented for another identity
    /// is refused.
    #[tokio::test]
    async fn identities_prove_themselves() {
        let secret = ClusterSecret::generate();
        let creds = Credentials::Cluster(secret.clone());
        let id = crate::IdentityId::generate();
        let car = Credentials::Identity {
            name: "car42".into(),
            id,
            key: secret.identity_key(&id),
            ca: secret.client_credentials().ca(),
        };
        let l = Listener::bind("127.0.0.1:0", creds.clone()).await.unwrap();
        let addr = l.local_addr().to_string();
        let h = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let s = l.accept().await?;
                seen.push(
                    handshake(s, &creds, l.tls.as_ref())
                        .await
                        .map(|c| c.peer_is()),
                );
            }
            Ok::<_, Error>(seen)
        });
        connect(&addr, &car, Duration::from_secs(5)).await.unwrap();
        let forged = Credentials::Identity {
            name: "car43".into(),
            id: crate::IdentityId::generate(),
            key: secret.identity_key(&id),
            ca: secret.client_credentials().ca(),
        };
        let e = connect(&addr, &forged, Duration::from_secs(5))
            .await
            .err()
            .expect("another identity's key is refused");
        assert_eq!(e.kind, cairn_types::ErrorKind::PermissionDenied, "{e}");
        let seen = h.await.unwrap().unwrap();
        let first = seen[0].as_ref().unwrap();
        assert_eq!(first.role, Role::Client);
        assert_eq!(first.identity, Some(id));
        assert!(seen[1].is_err());
    }

    /// Peers of another protocol version are refused at the handshake,
    /// with both versions named, whichever side is older.
    #[tokio::test]
    async fn protocol_versions_must_match() {
        let secret = ClusterSecret::generate();
        let creds = Credentials::Cluster(secret.clone());
        let client = secret.client_credentials();
        for (server_speaks, client_speaks) in [
            (PROTOCOL + 1, PROTOCOL),
            (PROTOCOL, PROTOCOL + 1),
            (1, PROTOCOL),
            (3, PROTOCOL),
        ] {
            let l = Listener::bind("127.0.0.1:0", creds.clone()).await.unwrap();
            let addr = l.local_addr().to_string();
            let (c2, tls) = (creds.clone(), l.tls.clone());
            let h = tokio::spawn(async move {
                let mut s = l.accept().await?;
                if server_speaks < 4 {
                    // A server before the preamble: the challenge, bare
                    // (protocol 1) or with the version.
                    let mut frame = vec![7u8; CHALLENGE];
                    if server_speaks > 1 {
                        frame.extend_from_slice(&server_speaks.to_be_bytes());
                    }
                    s.write_all(&(frame.len() as u32).to_be_bytes()).await?;
                    s.write_all(&frame).await?;
                    return Ok(());
                }
                handshake_speaking(s, &c2, tls.as_ref(), server_speaks)
                    .await
                    .map(|_| ())
            });
            let e = connect_speaking(&addr, &client, Duration::from_secs(5), client_speaks)
                .await
                .err()
                .expect("a mismatch is refused");
            let (a, b) = if e.message.contains("the server at") {
                (
                    format!("protocol {server_speaks}"),
                    format!("speaks {client_speaks}"),
                )
            } else {
                (
                    format!("protocol {client_speaks}"),
                    format!("speaks {server_speaks}"),
                )
            };
            assert!(
                e.message.contains(&a) && e.message.contains(&b),
                "server {server_speaks}, client {client_speaks}: {e}"
            );
            assert_eq!(e.kind, cairn_types::ErrorKind::InvalidInput);
            let _ = h.await;
        }
        // Clients of protocols 2 and 3 read the preamble as a challenge
        // and a version, and name the mismatch themselves.
        let l = Listener::bind("127.0.0.1:0", creds.clone()).await.unwrap();
        let addr = l.local_addr().to_string();
        let tls = l.tls.clone();
        let h = tokio::spawn(async move {
            let s = l.accept().await.unwrap();
            let _ = handshake(s, &creds, tls.as_ref()).await;
        });
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        let len = raw.read_u32().await.unwrap() as usize;
        let mut first = vec![0u8; len];
        raw.read_exact(&mut first).await.unwrap();
        assert_eq!(len, CHALLENGE + 4);
        assert_eq!(first[CHALLENGE..], PROTOCOL.to_be_bytes());
        drop(raw);
        h.await.unwrap();
    }

    /// TLS and plain ends refuse each other with a message that says so;
    /// a client holding another cluster's CA refuses the server; with TLS
    /// off on both ends the handshake works.
    #[tokio::test]
    async fn tls_mismatches_are_named() {
        let secret = ClusterSecret::generate();
        let creds = Credentials::Cluster(secret.clone());
        let (addr, _h) = server(creds.clone()).await;
        // Another cluster's CA: the server is not trusted.
        let stranger = Credentials::Client {
            key: secret.client_key(),
            ca: ClusterSecret::generate().client_credentials().ca(),
        };
        let e = connect(&addr, &stranger, Duration::from_secs(5))
            .await
            .err()
            .expect("another cluster's CA refuses the server");
        assert_eq!(e.kind, cairn_types::ErrorKind::PermissionDenied, "{e}");
        assert!(e.message.contains("not a server of this cluster"), "{e}");
        // No CA at all (a key file from before TLS).
        let bare = Credentials::Client {
            key: secret.client_key(),
            ca: None,
        };
        let (addr, _h) = server(creds.clone()).await;
        let e = connect(&addr, &bare, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(e.message.contains("no cluster CA"), "{e}");
        // A plain server: a TLS client refuses to talk in clear.
        let l = Listener {
            tls: None,
            ..Listener::bind("127.0.0.1:0", creds.clone()).await.unwrap()
        };
        let addr = l.local_addr().to_string();
        let c2 = creds.clone();
        let h = tokio::spawn(async move {
            let s = l.accept().await.unwrap();
            let _ = handshake(s, &c2, None).await;
            let s = l.accept().await.unwrap();
            handshake(s, &c2, None).await.map(|_| ())
        });
        let e = connect(&addr, &secret.client_credentials(), Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(e.message.contains("without TLS"), "{e}");
        // Both plain: fine (the switch is per process; this test's
        // client end runs the plain path directly).
        let mut raw = TcpStream::connect(&addr).await.unwrap();
        let len = raw.read_u32().await.unwrap() as usize;
        let mut first = vec![0u8; len];
        raw.read_exact(&mut first).await.unwrap();
        assert_eq!(first[..CHALLENGE], PREAMBLE_PLAIN[..]);
        let mut conn = Conn::new(raw, Role::Client).unwrap();
        let frame = conn.read_frame(64).await.unwrap();
        let challenge: [u8; CHALLENGE] = frame.try_into().unwrap();
        let client = secret.client_credentials();
        conn.send(&Hello {
            role: Role::Client,
            proof: client.prove(&challenge),
            identity: None,
        })
        .await
        .unwrap();
        let verdict: Result<(), Error> = conn.recv().await.unwrap();
        verdict.unwrap();
        h.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn wrong_key_is_refused() {
        let (addr, h) = server(Credentials::Cluster(ClusterSecret::generate())).await;
        let stranger = ClusterSecret::generate().client_credentials();
        let e = connect(&addr, &stranger, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, cairn_types::ErrorKind::PermissionDenied);
        assert!(h.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn oversized_and_garbage_frames_are_refused() {
        let secret = ClusterSecret::generate();
        let (addr, h) = server(Credentials::Cluster(secret.clone())).await;
        let mut c = connect(&addr, &Credentials::Cluster(secret), Duration::from_secs(5))
            .await
            .unwrap();
        c.write_frame(&vec![0u8; 2048]).await.unwrap();
        c.flush().await.unwrap();
        let e = h.await.unwrap().unwrap_err();
        assert_eq!(e.kind, cairn_types::ErrorKind::InvalidInput);

        // A raw socket that speaks nonsense gets an error, not a crash.
        let secret = ClusterSecret::generate();
        let (addr, h) = server(Credentials::Cluster(secret)).await;
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&[0, 0, 0, 3, 1, 2, 3]).await.unwrap();
        assert!(h.await.unwrap().is_err());
    }

    /// Data frames append to a vector or fill a slice exactly; a frame
    /// larger than the room left is refused, as is one past DATA_FRAME.
    #[tokio::test]
    async fn data_frames_append_and_fill() {
        let secret = ClusterSecret::generate();
        let l = Listener::bind("127.0.0.1:0", Credentials::Cluster(secret.clone()))
            .await
            .unwrap();
        let addr = l.local_addr().to_string();
        let creds = Credentials::Cluster(secret.clone());
        let h = tokio::spawn(async move {
            let mut c = handshake(l.accept().await?, &creds, l.tls.as_ref()).await?;
            let mut grown = b"x".to_vec();
            let a = c.read_data_frame_append(&mut grown).await?;
            let b = c.read_data_frame_append(&mut grown).await?;
            let mut slice = [0u8; 5];
            let n = c.read_data_frame_into(&mut slice).await?;
            let too_big = c.read_data_frame_into(&mut [0u8; 2]).await;
            Ok::<_, Error>((grown, a + b, slice, n, too_big.err()))
        });
        let mut c = connect(&addr, &Credentials::Cluster(secret), Duration::from_secs(5))
            .await
            .unwrap();
        for piece in [&b"abc"[..], b"defg", b"hijkl", b"mno"] {
            c.write_frame(piece).await.unwrap();
        }
        c.flush().await.unwrap();
        let (grown, appended, slice, n, too_big) = h.await.unwrap().unwrap();
        assert_eq!((grown.as_slice(), appended), (&b"xabcdefg"[..], 7));
        assert_eq!((&slice, n), (b"hijkl", 5));
        assert_eq!(too_big.unwrap().kind, cairn_types::ErrorKind::InvalidInput);
    }
}
