//! `cairn bench --s3`: the same large-object and small-object figures as
//! the direct client, through an S3 gateway on the benchmark's own
//! cluster, and with `--s3-peer` through any other S3 endpoint in turns
//! with it. The load generator speaks HTTP/1.1 on kept-alive connections
//! and signs every request (SigV4 with `UNSIGNED-PAYLOAD`, as the AWS SDKs
//! do over TLS), so the figures time the servers (HTTP, signatures, S3
//! semantics, MD5) rather than a client SDK. The signing is written here
//! (a few lines of HMAC) because the AWS SDK for Rust would add hundreds of
//! crates to the build for a load generator.

use anyhow::{bail, ensure, Context, Result};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const BUCKET: &str = "bench-s3";

/// An S3 endpoint to load: where, which bucket, and the key to sign with.
#[derive(Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The `Host` header (the URL's host and port).
    pub host: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl Endpoint {
    /// An endpoint from an `http://HOST:PORT` URL.
    pub fn from_url(
        url: &str,
        bucket: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
    ) -> Result<Endpoint> {
        let hostport = url
            .strip_prefix("http://")
            .with_context(|| format!("{url:?}: the load generator speaks plain http:// only"))?
            .trim_end_matches('/');
        let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .with_context(|| format!("resolving {hostport}"))?
            .next()
            .with_context(|| format!("{hostport} resolves to no address"))?;
        Ok(Endpoint {
            addr,
            host: hostport.to_string(),
            bucket: bucket.to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            region: region.to_string(),
        })
    }

    /// Create the bucket; one that exists already (and is ours) will do.
    pub async fn make_bucket(&self) -> Result<()> {
        let mut c = Conn::open(self).await?;
        let path = format!("/{}", self.bucket);
        match c.call_status("PUT", &path, 0, tokio::io::empty()).await? {
            (200..=299, _) | (409, _) => Ok(()),
            (status, _) => bail!("creating bucket {}: HTTP {status}", self.bucket),
        }
    }

    /// The SigV4 `Authorization` and `x-amz-date` headers of a request.
    fn sign(&self, method: &str, path: &str) -> (String, String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (y, mo, d) = civil_from_days((now / 86_400) as i64);
        let secs = now % 86_400;
        let date = format!("{y:04}{mo:02}{d:02}");
        let stamp = format!(
            "{date}T{:02}{:02}{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        let signed = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!(
            "{method}\n{path}\n\nhost:{}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{stamp}\n\n{signed}\nUNSIGNED-PAYLOAD",
            self.host
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac_sha256(format!("AWS4{}", self.secret_key).as_bytes(), &date);
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac_sha256(&key, part);
        }
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={}",
            self.access_key,
            hex(&hmac_sha256(&key, &to_sign))
        );
        (auth, stamp)
    }
}

fn hmac_sha256(key: &[u8], msg: &str) -> Vec<u8> {
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Year, month, day of a day count since 1970-01-01 (H. Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// One kept-alive HTTP/1.1 connection to an endpoint.
pub struct Conn {
    s: BufReader<TcpStream>,
    ep: Endpoint,
}

impl Conn {
    pub async fn open(ep: &Endpoint) -> Result<Conn> {
        let s = TcpStream::connect(ep.addr)
            .await
            .with_context(|| format!("connecting to {}", ep.host))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s: BufReader::new(s),
            ep: ep.clone(),
        })
    }

    /// [`Self::call_status`], failing on a status other than 2xx.
    pub async fn call<R: AsyncRead + Unpin>(
        &mut self,
        method: &str,
        path: &str,
        len: u64,
        body: R,
    ) -> Result<u64> {
        match self.call_status(method, path, len, body).await? {
            (200..=299, got) => Ok(got),
            (status, _) => bail!("{method} {path}: HTTP {status}"),
        }
    }

    /// Send a signed request with a body of `len` bytes from `body`;
    /// returns the status and the response body's length (read and
    /// dropped).
    pub async fn call_status<R: AsyncRead + Unpin>(
        &mut self,
        method: &str,
        path: &str,
        len: u64,
        body: R,
    ) -> Result<(u16, u64)> {
        let (auth, stamp) = self.ep.sign(method, path);
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\n\
             x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: {stamp}\r\n\
             Authorization: {auth}\r\n\r\n",
            self.ep.host
        );
        self.s.get_mut().write_all(head.as_bytes()).await?;
        let sent = tokio::io::copy(&mut body.take(len), self.s.get_mut()).await?;
        ensure!(sent == len, "request body short: {sent} of {len} bytes");
        let mut line = String::new();
        self.s.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut clen = 0u64;
        loop {
            line.clear();
            self.s.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    clen = v.trim().parse()?;
                }
            }
        }
        let got = tokio::io::copy(&mut (&mut self.s).take(clen), &mut tokio::io::sink()).await?;
        ensure!(got == clen, "response body short: {got} of {clen} bytes");
        Ok((status, got))
    }
}

/// PUT then GET one object of `size` bytes: MiB/s, this process's CPU-s
/// per GiB (load generator, and gateway and cluster when in-process), and
/// `probe()` (another CPU reading) at the end of each.
pub async fn large<R: AsyncRead + Unpin>(
    ep: &Endpoint,
    size: u64,
    src: R,
    probe: impl Fn() -> f64,
) -> Result<[(f64, f64, f64); 2]> {
    use crate::bench::{cpu_seconds, mbps};
    let gib = size as f64 / (1u64 << 30) as f64;
    let mut c = Conn::open(ep).await?;
    let path = format!("/{}/large.bin", ep.bucket);
    let (t, cpu) = (Instant::now(), cpu_seconds());
    c.call("PUT", &path, size, src).await?;
    let w = (
        mbps(size, t.elapsed()),
        (cpu_seconds() - cpu) / gib,
        probe(),
    );
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let n = c.call("GET", &path, 0, tokio::io::empty()).await?;
    ensure!(n == size, "GET returned {n} of {size} bytes");
    let r = (mbps(n, t.elapsed()), (cpu_seconds() - cpu) / gib, probe());
    c.call("DELETE", &path, 0, tokio::io::empty()).await?;
    Ok([w, r])
}

/// `count` objects of `data` PUT, then GET, over `conc` connections; ops/s.
pub async fn small(
    ep: &Endpoint,
    count: usize,
    data: Arc<Vec<u8>>,
    conc: usize,
) -> Result<(f64, f64)> {
    let mut rates = Vec::new();
    for method in ["PUT", "GET", "DELETE"] {
        let next = Arc::new(AtomicUsize::new(0));
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..conc {
            let (next, data, ep) = (next.clone(), data.clone(), ep.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::open(&ep).await?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return anyhow::Ok(());
                    }
                    let path = format!("/{}/small/o{i:07}", ep.bucket);
                    if method == "PUT" {
                        c.call(method, &path, data.len() as u64, &data[..]).await?;
                    } else {
                        c.call(method, &path, 0, tokio::io::empty()).await?;
                    }
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        rates.push(count as f64 / t.elapsed().as_secs_f64());
    }
    Ok((rates[0], rates[1]))
}
