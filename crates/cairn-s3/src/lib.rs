//! The S3-compatible HTTP gateway of Cairn.
//!
//! Owns the S3 view of the namespace: buckets are top-level directories,
//! object keys are paths below them ([`names`]), object attributes
//! (ETag, Content-Type, user metadata) are file xattrs committed with the
//! content ([`attrs`]), access keys live in `/.cairn/s3/keys` ([`keys`]),
//! multipart uploads in `/.cairn/s3/uploads` ([`multipart`]). S3 error
//! codes are chosen only here ([`error`]). The S3 protocol itself (SigV4
//! headers and presigned URLs, aws-chunked bodies, XML, routing) is the
//! `s3s` crate's.
//!
//! Does not own storage: every byte goes through [`cairn_client::Client`],
//! like any other front end. Called by the `cairn` binary
//! (`cairn gateway s3`, and inside `cairn server`). Read first:
//! [`start`], [`CairnS3`].
//!
//! Guarantees: a PUT or multipart completion is visible all at once or not
//! at all (one metadata commit); a reader sees the old or the new object,
//! never a mix; conditional writes (`If-None-Match: *`, `If-Match`) are
//! checked atomically with the commit, so of two racing writers one gets
//! `PreconditionFailed`. Memory per request is bounded by the client's
//! write window and read-ahead, whatever the object size.

pub mod attrs;
pub mod body;
pub mod error;
mod gateway;
pub mod keys;
pub mod listing;
pub mod multipart;
pub mod names;
pub mod tagging;

pub use gateway::CairnS3;
pub use keys::{create_key, delete_keys, list_keys, KeyRecord, KeyStore};

use cairn_client::Client;
use hyper_util::rt::TokioIo;
use s3s::service::S3ServiceBuilder;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// How the gateway listens.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub listen: String,
    /// Base domain for virtual-hosted-style requests (`bucket.DOMAIN`);
    /// path-style requests work either way.
    pub domain: Option<String>,
    /// Serve without authentication: every request is allowed. Only for
    /// `cairn bench` on its private temporary cluster, to time the gateway
    /// without a signing client.
    #[doc(hidden)]
    pub unauthenticated: bool,
    /// Serve HTTPS with this certificate ([`tls_config`]); None: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The HTTPS side of a gateway: the certificate chain in `cert` and its
/// private key in `key` (PEM files, as certbot or an internal CA write
/// them). TLS 1.2 and 1.3, for the S3 clients in the field.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> cairn_types::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, p: &std::path::Path, e: &dyn std::fmt::Display| {
        cairn_types::Error::invalid(format!("{what} {}: {e}", p.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("cannot read the certificate file", cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("not a PEM certificate file:", cert, &e))?;
    if chain.is_empty() {
        return Err(bad("no certificate in", cert, &"(empty)"));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad("no private key in", key, &e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| cairn_types::Error::internal(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| bad("the certificate does not go with the key", key, &e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A running gateway; stops when dropped or on [`GatewayHandle::stop`].
pub struct GatewayHandle {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl GatewayHandle {
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Run until the gateway stops (it stops only when told to).
    pub async fn wait(mut self) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serve HTTP/1.1 on one connection (plain or TLS) until it ends or the
/// gateway stops.
async fn serve_http<IO, S>(io: IO, svc: S, peer: SocketAddr, mut stop: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "S3 connection ended: {e}");
            }
        }
        _ = stop.changed() => {}
    }
}

/// Bind and serve the S3 API over `client`.
pub async fn start(client: Client, cfg: GatewayConfig) -> cairn_types::Result<GatewayHandle> {
    let listener = TcpListener::bind(&cfg.listen).await.map_err(|e| {
        cairn_types::Error::from(e).context(format!("binding the S3 gateway to {}", cfg.listen))
    })?;
    let addr = listener.local_addr()?;
    let keys = Arc::new(KeyStore::new(client.clone()));
    let mut b = S3ServiceBuilder::new(CairnS3::new(client));
    if !cfg.unauthenticated {
        b.set_auth(keys::Auth(keys.clone()));
        b.set_access(keys::Auth(keys));
    }
    if let Some(d) = &cfg.domain {
        let host = s3s::host::SingleDomain::new(d).map_err(|e| {
            cairn_types::Error::invalid(format!("{d:?} is not a usable S3 domain: {e}"))
        })?;
        b.set_host(DomainWithPort(host));
    }
    let service = b.build();
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let (sock, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!("S3 gateway accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = sock.set_nodelay(true);
            let s3 = service.clone();
            // Each request counted and timed in the process's metrics.
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let s3 = s3.clone();
                    let method = req.method().clone();
                    let started = std::time::Instant::now();
                    async move {
                        let mut r = hyper::service::Service::call(&s3, req).await;
                        if let Ok(resp) = &mut r {
                            cairn_metrics::global().s3_request(
                                &method,
                                resp.status().as_u16(),
                                started.elapsed(),
                            );
                            with_request_id(resp);
                        }
                        r
                    }
                });
            let conn_stop = stopped.clone();
            let tls = cfg.tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_http(sock, svc, peer, conn_stop).await,
                    Some(tls) => {
                        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(sock);
                        match tokio::time::timeout(std::time::Duration::from_secs(10), accept).await
                        {
                            Ok(Ok(s)) => serve_http(s, svc, peer, conn_stop).await,
                            Ok(Err(e)) => tracing::debug!(%peer, "S3 TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%peer, "S3 TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        info!("S3 gateway stopped");
    });
    info!(%addr, "S3 gateway listening");
    Ok(GatewayHandle {
        addr,
        stop,
        task: Some(task),
    })
}

/// Name the request, as AWS does, in the `x-amz-request-id` header of
/// every response and in the `<RequestId>` of an error's body, so a
/// failure a client reports can be found in the gateway's logs.
fn with_request_id(resp: &mut hyper::Response<s3s::Body>) {
    let id = format!("{:016X}", fastrand::u64(..));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    if !(resp.status().is_client_error() || resp.status().is_server_error()) {
        return;
    }
    let Some(body) = resp.body().bytes() else {
        return;
    };
    let Some(end) = body
        .windows(8)
        .rposition(|w| w == b"</Error>")
        .filter(|_| !body.windows(11).any(|w| w == b"<RequestId>"))
    else {
        return;
    };
    let mut with = Vec::with_capacity(body.len() + 48);
    with.extend_from_slice(&body[..end]);
    with.extend_from_slice(format!("<RequestId>{id}</RequestId>").as_bytes());
    with.extend_from_slice(&body[end..]);
    if let Ok(v) = hyper::header::HeaderValue::from_str(&with.len().to_string()) {
        resp.headers_mut().insert(hyper::header::CONTENT_LENGTH, v);
    }
    *resp.body_mut() = s3s::Body::from(bytes::Bytes::from(with));
    tracing::debug!(request_id = %id, status = %resp.status(), "S3 error answered");
}

/// s3s matches the Host header against the base domain as it comes, but
/// clients send `bucket.domain:port` whenever the port is not 80: strip a
/// numeric port before matching.
struct DomainWithPort(s3s::host::SingleDomain);

impl s3s::host::S3Host for DomainWithPort {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let bare = match host.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        self.0.parse_host_header(bare)
    }
}
