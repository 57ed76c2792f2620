//! `cairn bench --s3`: the same large-object and small-object figures as
//! the direct client, through an S3 gateway on the benchmark's own
//! cluster. The load generator speaks plain HTTP/1.1 on kept-alive
//! connections and the gateway runs without authentication, so the figures
//! time the gateway (HTTP, S3 semantics, MD5) rather than a client SDK.

use anyhow::{bail, ensure, Context, Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub const BUCKET: &str = "bench-s3";

/// One kept-alive HTTP/1.1 connection to the gateway.
pub struct Conn {
    s: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s: BufReader::new(s),
            host: addr.to_string(),
        })
    }

    /// Send a request with a body of `len` bytes from `body`; returns the
    /// response body's length (read and dropped).
    pub async fn call<R: AsyncRead + Unpin>(
        &mut self,
        method: &str,
        path: &str,
        len: u64,
        body: R,
    ) -> Result<u64> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\n\r\n",
            self.host
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
        if !(200..300).contains(&status) {
            bail!("{method} {path}: HTTP {status}");
        }
        ensure!(got == clen, "response body short: {got} of {clen} bytes");
        Ok(got)
    }
}

/// PUT then GET one object of `size` bytes; MiB/s and CPU-s per GiB
/// (this process's: load generator, gateway and cluster) each way.
pub async fn large<R: AsyncRead + Unpin>(
    addr: SocketAddr,
    size: u64,
    src: R,
) -> Result<[(f64, f64); 2]> {
    use crate::bench::{cpu_seconds, mbps};
    let gib = size as f64 / (1u64 << 30) as f64;
    let mut c = Conn::open(addr).await?;
    let path = format!("/{BUCKET}/large.bin");
    let (t, cpu) = (Instant::now(), cpu_seconds());
    c.call("PUT", &path, size, src).await?;
    let w = (mbps(size, t.elapsed()), (cpu_seconds() - cpu) / gib);
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let n = c.call("GET", &path, 0, tokio::io::empty()).await?;
    ensure!(n == size, "GET returned {n} of {size} bytes");
    let r = (mbps(n, t.elapsed()), (cpu_seconds() - cpu) / gib);
    c.call("DELETE", &path, 0, tokio::io::empty()).await?;
    Ok([w, r])
}

/// `count` objects of `data` PUT, then GET, over `conc` connections; ops/s.
pub async fn small(
    addr: SocketAddr,
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
            let (next, data) = (next.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::open(addr).await?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return anyhow::Ok(());
                    }
                    let path = format!("/{BUCKET}/small/o{i:07}");
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
