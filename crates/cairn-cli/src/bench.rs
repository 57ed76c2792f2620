//! `cairn bench`: throughput of a cluster beside the machine's own limits,
//! measured in the same run, printed as JSON. Reports, never asserts.

use crate::{commands, Target};
use anyhow::{Context, Result};
use cairn_client::{Client, ClientConfig, PutOptions};
use cairn_proto::Credentials;
use cairn_types::{parse_size, CairnPath};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Size of the large file
    #[arg(long, default_value = "1GiB")]
    size: String,
    /// Number of small files
    #[arg(long, default_value_t = 4000)]
    small_count: usize,
    /// Size of each small file
    #[arg(long, default_value = "16KiB")]
    small_size: String,
    /// Concurrent small-file operations
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Storage nodes of the temporary local cluster
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where the temporary cluster and the disk probe live (default: system temp dir)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Repetitions; medians are reported
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Benchmark an existing cluster instead of starting a temporary one
    #[arg(long)]
    existing: bool,
    /// Also measure through an S3 gateway on the temporary cluster
    #[arg(long, conflicts_with = "existing")]
    s3: bool,
    /// With --s3: also load this other S3 endpoint (http://HOST:PORT) the
    /// same way, in turns with Cairn's gateway within each run, and print
    /// the ratios (the key comes from --s3-peer-key)
    #[arg(long, requires = "s3", value_name = "URL")]
    s3_peer: Option<String>,
    /// The peer's key as ACCESS:SECRET (or set CAIRN_BENCH_PEER_KEY)
    #[arg(
        long,
        env = "CAIRN_BENCH_PEER_KEY",
        hide_env_values = true,
        value_name = "ACCESS:SECRET"
    )]
    s3_peer_key: Option<String>,
    /// The peer's region (Garage's default is "garage")
    #[arg(long, default_value = "us-east-1")]
    s3_peer_region: String,
    /// The peer's bucket (created if missing)
    #[arg(long, default_value = "bench-s3")]
    s3_peer_bucket: String,
    /// The peer server's process id, to report its CPU per GiB (Linux
    /// /proc; several servers: several --s3-peer-pid)
    #[arg(long, value_name = "PID")]
    s3_peer_pid: Vec<u32>,
    /// Also measure erasure coding with this scheme (as 4+2): write and
    /// read beside rep=3, a degraded read with M nodes stopped (at the
    /// end; temporary cluster only), and encode/decode CPU
    #[arg(long, value_name = "K+M")]
    ec: Option<cairn_types::EcScheme>,
    /// Also measure what TLS costs: in each run, the same large rep=1
    /// file and small files on a second temporary cluster with TLS off,
    /// in turns with this one (temporary cluster only)
    #[arg(long, conflicts_with = "existing")]
    tls_cost: bool,
    /// Compare placement schemes instead (see the --scheme-* options)
    #[command(flatten)]
    schemes: crate::bench_schemes::SchemeArgs,
    #[command(flatten)]
    prefetch: crate::bench_prefetch::PrefetchBenchArgs,
    #[command(flatten)]
    locks: crate::bench_locks::LockBenchArgs,
    #[command(flatten)]
    target: Target,
}

/// Pseudo-random bytes of a given length, produced on the fly so the
/// benchmark itself never holds the file.
pub(crate) struct Pattern {
    block: Arc<Vec<u8>>,
    left: u64,
    pos: usize,
}

impl Pattern {
    pub(crate) fn new(block: Arc<Vec<u8>>, len: u64) -> Pattern {
        Pattern {
            block,
            left: len,
            pos: 0,
        }
    }
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64)
            .min(self.left)
            .min((self.block.len() - self.pos) as u64) as usize;
        let pos = self.pos;
        buf.put_slice(&self.block[pos..pos + n]);
        self.pos = (pos + n) % self.block.len();
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

fn random_block(len: usize) -> Vec<u8> {
    pattern(len, 1)
}

/// `len` pseudo-random bytes, the same for the same `seed` (xorshift).
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x: u64 = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(crate) fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process (client and, for a temporary
/// cluster, every server too), from /proc.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(round(kb / 1024.0))
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The disk under `dir` and memcpy: the limits the figures are compared
/// with. The disk as fio measures it: `size` bytes written sequentially in
/// 1 MiB O_DIRECT writes with one fsync at the end (fio's `end_fsync`), then
/// read back with O_DIRECT (cold: the page cache is bypassed). A file
/// system without O_DIRECT (tmpfs) is measured buffered, with the file's
/// cached pages dropped before the read.
fn machine_limits(dir: &Path, size: u64, block: &[u8]) -> Result<[(&'static str, f64); 3]> {
    const PIECE: usize = 1 << 20;
    let path = dir.join("disk-probe.bin");
    let _ = std::fs::remove_file(&path);
    let direct = |create: bool| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        if create {
            o.write(true).create(true).truncate(true);
        } else {
            o.read(true);
        }
        o.custom_flags(libc::O_DIRECT).open(&path)
    };
    let mut buf = AlignedBuf::new(PIECE);
    let t = Instant::now();
    let (mut f, is_direct) = match direct(true) {
        Ok(f) => (f, true),
        Err(_) => (std::fs::File::create(&path)?, false),
    };
    let mut written = 0u64;
    while written < size {
        let n = (size - written).min(PIECE as u64) as usize;
        let at = (written % block.len() as u64) as usize;
        let take = n.min(block.len() - at);
        buf[..take].copy_from_slice(&block[at..at + take]);
        // O_DIRECT writes whole aligned pieces; the file is cut back below.
        let whole = if is_direct {
            n.next_multiple_of(4096)
        } else {
            n
        };
        f.write_all(&buf[..whole])?;
        written += n as u64;
    }
    f.set_len(size)?;
    f.sync_all()?;
    let write = mbps(size, t.elapsed());
    drop(f);
    let mut f = if is_direct {
        direct(false)?
    } else {
        let f = std::fs::File::open(&path)?;
        drop_cached(&f);
        f
    };
    let t = Instant::now();
    let mut read_bytes = 0u64;
    loop {
        let n = f.read(&mut buf[..])?;
        if n == 0 {
            break;
        }
        read_bytes += n as u64;
    }
    let read = mbps(read_bytes, t.elapsed());
    std::fs::remove_file(&path)?;
    let src = vec![1u8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    let t = Instant::now();
    for _ in 0..16 {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let memcpy = mbps(16 * (64 << 20), t.elapsed());
    Ok([
        ("disk_write_mib_s", write),
        ("disk_read_mib_s", read),
        ("memcpy_mib_s", memcpy),
    ])
}

/// A zeroed buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, layout }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `layout.size()` initialised bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Ask the kernel to drop `f`'s cached pages (clean ones: the storage
/// nodes' files are fsync'd), so the next read of it comes from the disk.
fn drop_cached(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; advice only.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// [`drop_cached`] for every file under `dir`.
fn drop_cached_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => drop_cached_tree(&p),
            Ok(t) if t.is_file() => {
                if let Ok(f) = std::fs::File::open(&p) {
                    drop_cached(&f);
                }
            }
            _ => {}
        }
    }
}

/// CPU seconds this process has used (user and system, every thread:
/// for a temporary cluster, client and servers together).
pub(crate) fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU seconds per GiB of `bytes` moved while `cpu` seconds were used.
fn per_gib(cpu: f64, bytes: u64) -> f64 {
    cpu / (bytes as f64 / (1u64 << 30) as f64)
}

/// One large-file measurement: MiB/s and CPU-s per GiB of the write, the
/// warm read (right after the write) and, where the cluster's files are
/// on this machine, the cold read (their cached pages dropped first).
struct Large {
    write: (f64, f64),
    read: (f64, f64),
    cold_read: Option<(f64, f64)>,
}

impl Large {
    fn record(&self, prefix: &str, samples: &mut BTreeMap<String, Vec<f64>>) {
        let mut put = |k: &str, v: f64| samples.entry(format!("{prefix}_{k}")).or_default().push(v);
        put("write_mib_s", self.write.0);
        put("write_cpu_s_per_gib", self.write.1);
        put("read_mib_s", self.read.0);
        put("read_cpu_s_per_gib", self.read.1);
        if let Some((r, c)) = self.cold_read {
            put("cold_read_mib_s", r);
            put("cold_read_cpu_s_per_gib", c);
        }
    }
}

async fn large(
    c: &Client,
    name: &str,
    size: u64,
    rep: u8,
    block: &Arc<Vec<u8>>,
    cold: Option<&Path>,
) -> Result<Large> {
    let opts = PutOptions {
        rep: Some(rep),
        ..Default::default()
    };
    let r = large_with(c, name, size, opts, block, cold).await?;
    c.remove(&CairnPath::parse(name)?, false).await?;
    Ok(r)
}

/// Write then read `size` bytes at `name` with `opts`; the file stays.
/// With `cold` (the cluster's data directory), a cold read follows.
async fn large_with(
    c: &Client,
    name: &str,
    size: u64,
    opts: PutOptions,
    block: &Arc<Vec<u8>>,
    cold: Option<&Path>,
) -> Result<Large> {
    let p = CairnPath::parse(name)?;
    let (t, cpu) = (Instant::now(), cpu_seconds());
    c.put(&p, Pattern::new(block.clone(), size), opts).await?;
    let write = (mbps(size, t.elapsed()), per_gib(cpu_seconds() - cpu, size));
    let read = read_all(c, &p).await?;
    let cold_read = match cold {
        Some(dir) => {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || drop_cached_tree(&dir)).await?;
            Some(read_all(c, &p).await?)
        }
        None => None,
    };
    Ok(Large {
        write,
        read,
        cold_read,
    })
}

/// MiB/s and CPU-s per GiB of one whole read of `p`.
async fn read_all(c: &Client, p: &CairnPath) -> Result<(f64, f64)> {
    let (t, cpu) = (Instant::now(), cpu_seconds());
    let n = c.get(p, &mut tokio::io::sink()).await?;
    Ok((mbps(n, t.elapsed()), per_gib(cpu_seconds() - cpu, n)))
}

/// MiB/s of erasure coding one 64 MiB block with `ec` (encode: the M
/// parity shards; decode: M data shards rebuilt from the rest), on one
/// core.
fn ec_cpu(ec: cairn_types::EcScheme, block: &[u8]) -> Result<(f64, f64)> {
    let t = Instant::now();
    let parity = ec.parity(block)?;
    let enc = mbps(block.len() as u64, t.elapsed());
    let sl = ec.shard_len(block.len() as u64);
    let mut shards: Vec<Option<Vec<u8>>> = (0..ec.k as usize)
        .map(|i| Some(ec.data_shard(block, sl, i).into_owned()))
        .chain(parity.into_iter().map(Some))
        .collect();
    for s in shards.iter_mut().take(ec.m.min(ec.k) as usize) {
        *s = None;
    }
    let t = Instant::now();
    ec.fill(&mut shards, false)?;
    let dec = mbps(block.len() as u64, t.elapsed());
    Ok((enc, dec))
}

async fn small(c: &Client, count: usize, size: usize, conc: usize) -> Result<(f64, f64)> {
    let dir = CairnPath::parse("/bench-small")?;
    c.mkdir(&dir, true).await?;
    let data = Arc::new(random_block(size));
    let run = |get: bool| {
        let c = c.clone();
        let data = data.clone();
        let dir = dir.clone();
        async move {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = Vec::new();
            let t = Instant::now();
            for _ in 0..conc {
                let (c, data, dir, next) = (c.clone(), data.clone(), dir.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= count {
                            return anyhow::Ok(());
                        }
                        let p = dir.join(&format!("f{i:07}"))?;
                        if get {
                            let got = c.get_bytes(&p).await?;
                            anyhow::ensure!(got.len() == data.len(), "short read of {p}");
                        } else {
                            c.put_bytes(&p, &data, PutOptions::default()).await?;
                        }
                    }
                }));
            }
            for t in tasks {
                t.await??;
            }
            anyhow::Ok(count as f64 / t.elapsed().as_secs_f64())
        }
    };
    let puts = run(false).await?;
    let gets = run(true).await?;
    c.remove(&dir, true).await?;
    Ok((puts, gets))
}

type Local = (
    cairn_meta::server::MetaHandle,
    Vec<cairn_storage::StorageHandle>,
);

/// A temporary cluster of meta and `n` storage nodes in `dir`, and a
/// client of it once every node is live.
async fn start_local(dir: &Path, n: usize) -> Result<(Local, Client)> {
    let mut mc = cairn_meta::server::MetaConfig::new(dir.join("meta"));
    mc.default_rep = n.min(3) as u8;
    let meta = cairn_meta::server::start(mc).await?;
    let creds = Credentials::Cluster(meta.secret.clone());
    let mut nodes = Vec::new();
    for i in 0..n {
        let sc = cairn_storage::StorageConfig::new(
            dir.join(format!("node-{i}")),
            vec![meta.addr.clone()],
        );
        nodes.push(cairn_storage::start(sc, creds.clone()).await?);
    }
    let client_creds = meta.secret.client_credentials();
    let c = Client::connect(ClientConfig::new(vec![meta.addr.clone()], client_creds)).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .cluster_status()
        .await?
        .nodes
        .iter()
        .filter(|n| n.state == cairn_proto::NodeState::Live)
        .count()
        < n
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "storage nodes did not register within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(((meta, nodes), c))
}

async fn stop_local((meta, nodes): Local) {
    for n in nodes {
        n.shutdown().await;
    }
    meta.shutdown().await;
}

/// One turn of the S3 load against `ep`: a large object PUT and GET, then
/// small objects, recorded under `prefix`; with `pids`, those processes'
/// CPU per GiB of the large transfers too.
#[allow(clippy::too_many_arguments)]
async fn s3_turn(
    ep: &crate::bench_s3::Endpoint,
    prefix: &str,
    size: u64,
    block: &Arc<Vec<u8>>,
    a: &BenchArgs,
    small_size: usize,
    pids: &[u32],
    samples: &mut BTreeMap<String, Vec<f64>>,
) -> Result<()> {
    let mut put = |k: &str, v: f64| samples.entry(format!("{prefix}_{k}")).or_default().push(v);
    let gib = size as f64 / (1u64 << 30) as f64;
    let server_cpu = || {
        pids.iter()
            .filter_map(|p| process_cpu_seconds(*p))
            .sum::<f64>()
    };
    let before = server_cpu();
    let [w, r] =
        crate::bench_s3::large(ep, size, Pattern::new(block.clone(), size), server_cpu).await?;
    put("put_mib_s", w.0);
    put("put_cpu_s_per_gib", w.1);
    put("get_mib_s", r.0);
    put("get_cpu_s_per_gib", r.1);
    if !pids.is_empty() {
        put("put_server_cpu_s_per_gib", (w.2 - before) / gib);
        put("get_server_cpu_s_per_gib", (r.2 - w.2) / gib);
    }
    let data = Arc::new(random_block(small_size));
    let (p, g) = crate::bench_s3::small(ep, a.small_count, data, a.concurrency).await?;
    put("small_puts_per_s", p);
    put("small_gets_per_s", g);
    Ok(())
}

/// The S3 figures recorded under `prefix`, as JSON.
fn s3_figures(m: &dyn Fn(&str) -> f64, prefix: &str) -> serde_json::Value {
    let k = |x: &str| m(&format!("{prefix}_{x}"));
    json!({
        "put_mib_s": round(k("put_mib_s")), "get_mib_s": round(k("get_mib_s")),
        "put_cpu_s_per_gib": round(k("put_cpu_s_per_gib")),
        "get_cpu_s_per_gib": round(k("get_cpu_s_per_gib")),
        "small_puts_per_s": k("small_puts_per_s").round(),
        "small_gets_per_s": k("small_gets_per_s").round(),
    })
}

/// CPU seconds (user and system) process `pid` has used, from /proc.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz.max(1.0))
}

pub async fn run(a: BenchArgs) -> Result<()> {
    if a.prefetch.prefetch {
        let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
        return crate::bench_prefetch::run(a.prefetch, &base, a.runs).await;
    }
    if a.schemes.schemes.is_some() {
        let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
        return crate::bench_schemes::run(a.schemes, &base, a.runs).await;
    }
    let size = parse_size(&a.size)?;
    let small_size = parse_size(&a.small_size)? as usize;
    // The peer first: a wrong key fails before any cluster starts.
    let peer = match &a.s3_peer {
        Some(url) => {
            let key = a.s3_peer_key.as_deref().context(
                "--s3-peer needs the peer's key: --s3-peer-key ACCESS:SECRET or CAIRN_BENCH_PEER_KEY",
            )?;
            let (access, secret) = key
                .split_once(':')
                .context("--s3-peer-key is ACCESS:SECRET")?;
            let ep = crate::bench_s3::Endpoint::from_url(
                url,
                &a.s3_peer_bucket,
                access,
                secret,
                &a.s3_peer_region,
            )?;
            ep.make_bucket().await.context("the peer's bucket")?;
            Some(ep)
        }
        None => None,
    };
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let tmp = base.join(format!("cairn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let block = Arc::new(random_block(64 << 20));

    let mut handles = None;
    let client = if a.existing {
        commands::connect(&a.target).await?
    } else {
        let (h, c) = start_local(&tmp, a.nodes).await?;
        handles = Some(h);
        c
    };

    if a.locks.locks {
        let r = crate::bench_locks::run(&a.locks, &client, a.runs).await;
        drop(handles);
        let _ = std::fs::remove_dir_all(&tmp);
        return r;
    }
    let gateway = if a.s3 {
        client
            .mkdir(
                &CairnPath::parse(&format!("/{}", crate::bench_s3::BUCKET))?,
                true,
            )
            .await?;
        let key = cairn_s3::create_key(&client, "bench", false, None).await?;
        let cfg = cairn_s3::GatewayConfig {
            listen: "127.0.0.1:0".into(),
            domain: None,
            unauthenticated: false,
            tls: None,
        };
        let g = cairn_s3::start(client.clone(), cfg).await?;
        let ep = crate::bench_s3::Endpoint::from_url(
            &format!("http://{}", g.addr),
            crate::bench_s3::BUCKET,
            &key.access_key,
            &key.secret_key,
            "us-east-1",
        )?;
        Some((g, ep))
    } else {
        None
    };
    // With --tls-cost, a second cluster with TLS off, measured in turns
    // with this one (TLS is chosen per process: the switch is flipped for
    // its turns; every connection it needs is made then).
    let plain = if a.tls_cost && handles.is_some() {
        cairn_proto::tls::set_enabled(false);
        let r = start_local(&tmp.join("plain"), a.nodes).await;
        cairn_proto::tls::set_enabled(true);
        Some(r?)
    } else {
        None
    };
    // Every figure is measured `runs` times, interleaved with the machine's
    // limits so that both see the same noise; medians are reported.
    let live = client.cluster_status().await?.nodes.len();
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // Cold reads where the cluster's files are on this machine.
    let cold = handles.is_some().then_some(tmp.as_path());
    for _ in 0..a.runs.max(1) {
        let limits = {
            let (dir, block) = (tmp.clone(), block.clone());
            tokio::task::spawn_blocking(move || machine_limits(&dir, size, &block)).await??
        };
        for (k, v) in limits {
            samples.entry(k.into()).or_default().push(v);
        }
        large(&client, "/bench-rep1.bin", size, 1, &block, cold)
            .await
            .context("rep=1 large file")?
            .record("rep1", &mut samples);
        if live >= 3 {
            large(&client, "/bench-rep3.bin", size, 3, &block, cold)
                .await
                .context("rep=3 large file")?
                .record("rep3", &mut samples);
        }
        if let Some(ec) = a.ec.filter(|e| live >= e.shards()) {
            let opts = PutOptions {
                cues: cairn_types::Cues {
                    ec: Some(ec),
                    ..Default::default()
                },
                ..Default::default()
            };
            // The last run's file stays for the degraded read.
            large_with(&client, "/bench-ec.bin", size, opts, &block, None)
                .await
                .context("ec large file")?
                .record("ec", &mut samples);
            let b = block.clone();
            let (enc, dec) = tokio::task::spawn_blocking(move || ec_cpu(ec, &b)).await??;
            samples
                .entry("ec_encode_mib_s".into())
                .or_default()
                .push(enc);
            samples
                .entry("ec_decode_mib_s".into())
                .or_default()
                .push(dec);
        }
        let (puts, gets) = small(&client, a.small_count, small_size, a.concurrency)
            .await
            .context("small files")?;
        samples
            .entry("small_puts_per_s".into())
            .or_default()
            .push(puts);
        samples
            .entry("small_gets_per_s".into())
            .or_default()
            .push(gets);
        if let Some((_, pc)) = &plain {
            cairn_proto::tls::set_enabled(false);
            let r = async {
                let l = large(pc, "/bench-rep1.bin", size, 1, &block, None)
                    .await
                    .context("rep=1 large file, TLS off")?;
                let (w, r) = (l.write.0, l.read.0);
                let (puts, gets) = small(pc, a.small_count, small_size, a.concurrency)
                    .await
                    .context("small files, TLS off")?;
                anyhow::Ok([w, r, puts, gets])
            }
            .await;
            cairn_proto::tls::set_enabled(true);
            let keys = [
                "plain_rep1_write_mib_s",
                "plain_rep1_read_mib_s",
                "plain_small_puts_per_s",
                "plain_small_gets_per_s",
            ];
            for (k, v) in keys.into_iter().zip(r?) {
                samples.entry(k.into()).or_default().push(v);
            }
        }
        if let Some((_, ep)) = &gateway {
            s3_turn(ep, "s3", size, &block, &a, small_size, &[], &mut samples)
                .await
                .context("S3 through Cairn's gateway")?;
        }
        if let Some(ep) = &peer {
            s3_turn(
                ep,
                "peer",
                size,
                &block,
                &a,
                small_size,
                &a.s3_peer_pid,
                &mut samples,
            )
            .await
            .with_context(|| format!("S3 through the peer {}", ep.host))?;
        }
    }
    // Degraded reads: M storage nodes stopped, every chunk short of M
    // shards (each chunk has a shard on every node when nodes = K+M).
    if let (Some(ec), Some((meta, nodes))) = (a.ec.filter(|e| live >= e.shards()), handles.as_mut())
    {
        for n in nodes.drain(..ec.m as usize) {
            n.shutdown().await;
        }
        let creds = meta.secret.client_credentials();
        let cfg = ClientConfig::new(vec![meta.addr.clone()], creds);
        for _ in 0..a.runs.max(1) {
            // A fresh client: nothing cached from the healthy reads.
            let fresh = Client::connect(cfg.clone()).await?;
            let (r, _) = read_all(&fresh, &CairnPath::parse("/bench-ec.bin")?)
                .await
                .context("degraded ec read")?;
            samples
                .entry("ec_degraded_read_mib_s".into())
                .or_default()
                .push(r);
        }
    }
    let m = |k: &str| samples.get(k).map(|v| median(v)).unwrap_or(f64::NAN);
    let (disk_w, disk_r) = (m("disk_write_mib_s"), m("disk_read_mib_s"));
    // The same figures for rep=1 and rep=3: throughput, ratios to the
    // disk, CPU per GiB, and the cold read where measured.
    let rep = |p: &str| {
        let k = |x: &str| m(&format!("{p}_{x}"));
        let mut o = json!({
            "write_mib_s": round(k("write_mib_s")), "read_mib_s": round(k("read_mib_s")),
            "write_cpu_s_per_gib": round(k("write_cpu_s_per_gib")),
            "read_cpu_s_per_gib": round(k("read_cpu_s_per_gib")),
            "write_ratio_to_disk": round(k("write_mib_s") / disk_w),
            "read_ratio_to_memcpy": round(k("read_mib_s") / m("memcpy_mib_s")),
        });
        if samples.contains_key(&format!("{p}_cold_read_mib_s")) {
            o["cold_read_mib_s"] = json!(round(k("cold_read_mib_s")));
            o["cold_read_cpu_s_per_gib"] = json!(round(k("cold_read_cpu_s_per_gib")));
            o["cold_read_ratio_to_disk"] = json!(round(k("cold_read_mib_s") / disk_r));
        }
        o
    };
    // How far apart the runs were: (max - min) / median, per figure.
    let spread: serde_json::Map<_, _> = samples
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, v)| {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
            (k.clone(), json!(round((hi - lo) / median(v))))
        })
        .collect();
    let mut out = json!({
        "runs": a.runs.max(1),
        "large_file_bytes": size,
        "note": "CPU figures are this process's (client and, for a temporary cluster, every server) per GiB moved; cold reads drop the cluster's cached file pages first; the disk is measured with O_DIRECT (write with one fsync at the end, read cold)",
        "machine": {"disk_write_mib_s": round(disk_w), "disk_read_mib_s": round(disk_r),
                    "memcpy_mib_s": round(m("memcpy_mib_s"))},
        "rep1": rep("rep1"),
        "small_files": {"count": a.small_count, "size": small_size, "concurrency": a.concurrency,
                        "puts_per_s": m("small_puts_per_s").round(), "gets_per_s": m("small_gets_per_s").round()},
        "peak_rss_mib": peak_rss_mib(),
        "spread": spread,
        "samples": samples.iter().map(|(k, v)| (k.to_string(), json!(v.iter().map(|x| round(*x)).collect::<Vec<_>>()))).collect::<serde_json::Map<_, _>>(),
    });
    if live >= 3 {
        out["rep3"] = rep("rep3");
        out["rep3"]["write_ratio_to_disk_over_3"] =
            json!(round(m("rep3_write_mib_s") / (disk_w / 3.0)));
        if samples.contains_key("rep3_cold_read_mib_s") {
            out["rep3"]["cold_read_ratio_to_rep1"] =
                json!(round(m("rep3_cold_read_mib_s") / m("rep1_cold_read_mib_s")));
        }
    }
    if let Some(ec) = a.ec.filter(|e| live >= e.shards()) {
        out["ec"] = json!({
            "scheme": ec.to_string(),
            "storage_overhead": round(ec.shards() as f64 / ec.k as f64),
            "write_mib_s": round(m("ec_write_mib_s")), "read_mib_s": round(m("ec_read_mib_s")),
            "write_ratio_to_rep3": round(m("ec_write_mib_s") / m("rep3_write_mib_s")),
            "read_ratio_to_rep3": round(m("ec_read_mib_s") / m("rep3_read_mib_s")),
            "degraded_read_mib_s": round(m("ec_degraded_read_mib_s")),
            "degraded_ratio_to_healthy": round(m("ec_degraded_read_mib_s") / m("ec_read_mib_s")),
            "degraded_nodes_stopped": if handles.is_some() { ec.m as usize } else { 0 },
            "encode_mib_s_one_core": round(m("ec_encode_mib_s")),
            "decode_mib_s_one_core": round(m("ec_decode_mib_s")),
            "encode_cpu_s_per_gib": round(1024.0 / m("ec_encode_mib_s")),
            "decode_cpu_s_per_gib": round(1024.0 / m("ec_decode_mib_s")),
        });
    }
    if let Some((g, _)) = gateway {
        let direct_w = m(if live >= 3 {
            "rep3_write_mib_s"
        } else {
            "rep1_write_mib_s"
        });
        let direct_r = m(if live >= 3 {
            "rep3_read_mib_s"
        } else {
            "rep1_read_mib_s"
        });
        out["s3"] = s3_figures(&m, "s3");
        out["s3"]["note"] = json!("through the S3 gateway on the same cluster, default redundancy; requests signed (SigV4, UNSIGNED-PAYLOAD) over plain HTTP/1.1; CPU: this whole process (load generator, gateway, cluster)");
        for (k, v) in [
            ("put_ratio_to_disk", m("s3_put_mib_s") / disk_w),
            ("put_ratio_to_direct", m("s3_put_mib_s") / direct_w),
            ("get_ratio_to_direct", m("s3_get_mib_s") / direct_r),
            (
                "small_puts_ratio_to_direct",
                m("s3_small_puts_per_s") / m("small_puts_per_s"),
            ),
            (
                "small_gets_ratio_to_direct",
                m("s3_small_gets_per_s") / m("small_gets_per_s"),
            ),
        ] {
            out["s3"][k] = json!(round(v));
        }
        if let Some(ep) = &peer {
            let mut p = s3_figures(&m, "peer");
            p["endpoint"] = json!(ep.host);
            p["note"] = json!("the same load against the peer, in turns with Cairn's gateway; put/get_cpu_s_per_gib here are this process's CPU meanwhile, the load generator's alone (subtract them from Cairn's figures for Cairn's servers alone); put/get_server_cpu_s_per_gib from /proc of --s3-peer-pid");
            for w in ["put", "get"] {
                if samples.contains_key(&format!("peer_{w}_server_cpu_s_per_gib")) {
                    p[format!("{w}_server_cpu_s_per_gib")] =
                        json!(round(m(&format!("peer_{w}_server_cpu_s_per_gib"))));
                }
            }
            p["cairn_to_peer"] = json!({
                "put": round(m("s3_put_mib_s") / m("peer_put_mib_s")),
                "get": round(m("s3_get_mib_s") / m("peer_get_mib_s")),
                "small_puts": round(m("s3_small_puts_per_s") / m("peer_small_puts_per_s")),
                "small_gets": round(m("s3_small_gets_per_s") / m("peer_small_gets_per_s")),
            });
            out["s3_peer"] = p;
        }
        g.stop().await;
    }
    if let Some((h, _)) = plain {
        stop_local(h).await;
        out["tls"] = json!({
            "note": "rep=1 large file and small files on this cluster (TLS on) and on a second one in the same process with TLS off, measured in turns within each run",
            "on": {"rep1_write_mib_s": round(m("rep1_write_mib_s")), "rep1_read_mib_s": round(m("rep1_read_mib_s")),
                   "small_puts_per_s": m("small_puts_per_s").round(), "small_gets_per_s": m("small_gets_per_s").round()},
            "off": {"rep1_write_mib_s": round(m("plain_rep1_write_mib_s")), "rep1_read_mib_s": round(m("plain_rep1_read_mib_s")),
                    "small_puts_per_s": m("plain_small_puts_per_s").round(), "small_gets_per_s": m("plain_small_gets_per_s").round()},
            "on_to_off": {
                "rep1_write": round(m("rep1_write_mib_s") / m("plain_rep1_write_mib_s")),
                "rep1_read": round(m("rep1_read_mib_s") / m("plain_rep1_read_mib_s")),
                "small_puts": round(m("small_puts_per_s") / m("plain_small_puts_per_s")),
                "small_gets": round(m("small_gets_per_s") / m("plain_small_gets_per_s")),
            },
        });
    }
    println!("{}", serde_json::to_string_pretty(&out)?);

    if let Some(h) = handles {
        stop_local(h).await;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
