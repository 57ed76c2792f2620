use crate::auth::{Credentials, IdentityId, Peer, Role};
use bytes::BufMut;
use cairn_types::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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
/// (in the hello, in capabilities, and their requests).
pub const PROTOCOL: u32 = 3;

/// The client's answer to the challenge: the role it claims, the proof,
/// its protocol version (after role and proof, so that a server of
/// version 1 still reads those and answers), and the identity it proves
/// (None: a node, or the admin client key).
#[derive(Serialize, Deserialize)]
struct Hello {
    role: Role,
    proof: [u8; 32],
    protocol: u32,
    identity: Option<IdentityId>,
}

/// Hello as clients of protocol 2 sent it.
#[derive(Deserialize)]
struct HelloV2 {
    role: Role,
    proof: [u8; 32],
    protocol: u32,
}

/// Hello as clients of protocol 1 sent it.
#[derive(Deserialize)]
struct HelloV1 {
    role: Role,
    proof: [u8; 32],
}

/// Bytes of the server's challenge; the protocol version follows it.
const CHALLENGE: usize = 16;

fn mismatch(peer: &str, theirs: u32, ours: u32, we: &str) -> Error {
    Error::invalid(format!(
        "{peer} speaks Cairn protocol {theirs} and this {we} speaks {ours}: run the same Cairn \
         release on both (`cairn --version`)"
    ))
}

/// One authenticated connection. Requests on a connection are sequential:
/// send a request, read its response; pools hold several connections.
pub struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: BufWriter<OwnedWriteHalf>,
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
        Ok(Conn {
            rd: BufReader::with_capacity(IO_BUF, r),
            wr: BufWriter::with_capacity(IO_BUF, w),
            role,
            identity: None,
            peer,
        })
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

    /// Read one frame into `buf` (cleared first), refusing frames over `max`.
    pub async fn read_frame_into(&mut self, buf: &mut Vec<u8>, max: usize) -> Result<()> {
        let peer = self.peer;
        let len = self.rd.read_u32().await.map_err(|e| closed(e, &peer))? as usize;
        if len > max.min(MAX_FRAME) {
            return Err(Error::invalid(format!(
                "peer {peer} sent a frame of {len} bytes (limit {max})"
            )));
        }
        buf.clear();
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
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Error::from(e).context(format!("cannot connect to {addr}")))?;
        let mut conn = Conn::new(stream, creds.role())?;
        let frame = conn.read_frame(64).await?;
        let theirs = match frame.len() {
            // A server of protocol 1 sends the bare challenge.
            CHALLENGE => 1,
            n if n == CHALLENGE + 4 => {
                u32::from_be_bytes(frame[CHALLENGE..].try_into().expect("4 bytes"))
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{addr} is not a Cairn server (bad handshake)"
                )))
            }
        };
        if theirs != protocol {
            return Err(mismatch(
                &format!("the server at {addr}"),
                theirs,
                protocol,
                "client",
            ));
        }
        let challenge: [u8; CHALLENGE] = frame[..CHALLENGE].try_into().expect("16 bytes");
        conn.send(&Hello {
            role: creds.role(),
            proof: creds.prove(&challenge),
            protocol,
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
}

impl Listener {
    pub async fn bind(addr: &str, creds: Credentials) -> Result<Listener> {
        let inner = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::from(e).context(format!("cannot listen on {addr}")))?;
        Ok(Listener { inner, creds })
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
                        conns.spawn(async move {
                            match handshake(s, &creds).await {
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

/// Server side of the handshake: challenge, check the proof, answer.
pub async fn handshake(stream: TcpStream, creds: &Credentials) -> Result<Conn> {
    handshake_speaking(stream, creds, PROTOCOL).await
}

/// [`handshake`] as a server of protocol `protocol` (tests of mismatches).
async fn handshake_speaking(stream: TcpStream, creds: &Credentials, protocol: u32) -> Result<Conn> {
    let mut conn = Conn::new(stream, Role::Client)?;
    let fut = async {
        let mut challenge = [0u8; CHALLENGE];
        getrandom::getrandom(&mut challenge).expect("OS random source");
        let mut frame = challenge.to_vec();
        frame.extend_from_slice(&protocol.to_be_bytes());
        conn.write_frame(&frame).await?;
        conn.flush().await?;
        let body = conn.read_frame(MAX_FRAME).await?;
        let hello = match postcard::from_bytes::<Hello>(&body) {
            Ok(h) => h,
            Err(e) => {
                if let Ok(old) = postcard::from_bytes::<HelloV2>(&body) {
                    Hello {
                        role: old.role,
                        proof: old.proof,
                        protocol: old.protocol,
                        identity: None,
                    }
                } else if let Ok(old) = postcard::from_bytes::<HelloV1>(&body) {
                    // A client of protocol 1 reads the versioned
                    // challenge's first 16 bytes and answers without a
                    // version.
                    Hello {
                        role: old.role,
                        proof: old.proof,
                        protocol: 1,
                        identity: None,
                    }
                } else {
                    return Err(Error::invalid(format!(
                        "malformed message from {}: {e}",
                        conn.peer
                    )));
                }
            }
        };
        if hello.protocol != protocol {
            let err = mismatch(
                &format!("the client at {}", conn.peer),
                hello.protocol,
                protocol,
                "server",
            );
            let _ = conn.send(&Err::<(), Error>(err.clone())).await;
            return Err(err);
        }
        if creds.check(
            hello.role,
            hello.identity.as_ref(),
            &challenge,
            &hello.proof,
        ) {
            conn.role = hello.role;
            conn.identity = hello.identity;
            conn.send(&Ok::<(), Error>(())).await?;
            Ok(())
        } else {
            let err = Error::denied("authentication failed: wrong cluster secret or client key");
            let _ = conn.send(&Err::<(), Error>(err.clone())).await;
            Err(err)
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, fut)
        .await
        .map_err(|_| Error::timeout("handshake timed out"))??;
    Ok(conn)
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
            let mut c = handshake(s, &creds).await?;
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
        let client = Credentials::Client(secret.client_key());
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
        };
        let l = Listener::bind("127.0.0.1:0", creds.clone()).await.unwrap();
        let addr = l.local_addr().to_string();
        let h = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let s = l.accept().await?;
                seen.push(handshake(s, &creds).await.map(|c| c.peer_is()));
            }
            Ok::<_, Error>(seen)
        });
        connect(&addr, &car, Duration::from_secs(5)).await.unwrap();
        let forged = Credentials::Identity {
            name: "car43".into(),
            id: crate::IdentityId::generate(),
            key: secret.identity_key(&id),
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
        let client = Credentials::Client(secret.client_key());
        for (server_speaks, client_speaks) in [
            (PROTOCOL + 1, PROTOCOL),
            (PROTOCOL, PROTOCOL + 1),
            (1, PROTOCOL),
            (PROTOCOL, 1),
            (PROTOCOL, 2),
        ] {
            let l = Listener::bind("127.0.0.1:0", creds.clone()).await.unwrap();
            let addr = l.local_addr().to_string();
            let c2 = creds.clone();
            let h = tokio::spawn(async move {
                let s = l.accept().await?;
                if server_speaks == 1 {
                    // A server of protocol 1: the bare challenge, a
                    // version-less hello.
                    let mut conn = Conn::new(s, Role::Client)?;
                    conn.write_frame(&[7u8; CHALLENGE]).await?;
                    conn.flush().await?;
                    let _: HelloV1 = conn.recv().await?;
                    return Ok(());
                }
                handshake_speaking(s, &c2, server_speaks).await.map(|_| ())
            });
            let got = if client_speaks == 2 {
                // A client of protocol 2: a hello without an identity.
                let stream = TcpStream::connect(&addr).await.unwrap();
                let mut conn = Conn::new(stream, Role::Client).unwrap();
                let frame = conn.read_frame(64).await.unwrap();
                let challenge: [u8; CHALLENGE] = frame[..CHALLENGE].try_into().unwrap();
                #[derive(Serialize)]
                struct V2 {
                    role: Role,
                    proof: [u8; 32],
                    protocol: u32,
                }
                conn.send(&V2 {
                    role: client.role(),
                    proof: client.prove(&challenge),
                    protocol: 2,
                })
                .await
                .unwrap();
                conn.recv::<Result<(), Error>>().await.unwrap().map(|_| ())
            } else if client_speaks == 1 {
                // A client of protocol 1: reads 16 bytes of challenge and
                // answers without a version.
                let stream = TcpStream::connect(&addr).await.unwrap();
                let mut conn = Conn::new(stream, Role::Client).unwrap();
                let frame = conn.read_frame(64).await.unwrap();
                let challenge: [u8; CHALLENGE] = frame[..CHALLENGE].try_into().unwrap();
                #[derive(Serialize)]
                struct Old {
                    role: Role,
                    proof: [u8; 32],
                }
                conn.send(&Old {
                    role: client.role(),
                    proof: client.prove(&challenge),
                })
                .await
                .unwrap();
                conn.recv::<Result<(), Error>>().await.unwrap().map(|_| ())
            } else {
                connect_speaking(&addr, &client, Duration::from_secs(5), client_speaks)
                    .await
                    .map(|_| ())
            };
            let e = got.expect_err("a mismatch is refused");
            let want = format!("protocol {server_speaks}");
            let also = format!("speaks {client_speaks}");
            let (a, b) = if e.message.contains("the server at") {
                (want, also)
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
    }

    #[tokio::test]
    async fn wrong_key_is_refused() {
        let (addr, h) = server(Credentials::Cluster(ClusterSecret::generate())).await;
        let stranger = Credentials::Client(ClusterSecret::generate().client_key());
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
            let mut c = handshake(l.accept().await?, &creds).await?;
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
