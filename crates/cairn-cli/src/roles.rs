//! The long-running roles: `cairn server` (everything in one process),
//! `cairn meta` and `cairn storage`.

use crate::config;
use anyhow::{bail, Context, Result};
use cairn_meta::server::{MetaConfig, CLIENT_KEY_FILE, SECRET_FILE};
use cairn_proto::Credentials;
use cairn_storage::{StorageConfig, StoreOptions};
use cairn_types::{parse_duration, parse_size};
use std::path::{Path, PathBuf};
use tracing::info;

#[derive(clap::Args, Clone, Debug)]
pub struct MetaOpts {
    /// Chunk size for new files
    #[arg(long, default_value = "32MiB")]
    chunk_size: String,
    /// Files up to this size keep their bytes in their metadata record (no
    /// chunks, no storage-node round trip), unless an `inline=` cue says
    /// otherwise; 0 turns it off. At most 64KiB
    #[arg(long, default_value = "4KiB")]
    inline_max: String,
    /// A storage node silent this long is dead and its chunks are re-created
    /// elsewhere (a grace period, so a restart does not start a repair storm)
    #[arg(long, default_value = "5m")]
    dead_after: String,
    /// How long replaced or deleted data stays readable before its chunks are collected
    #[arg(long, default_value = "60s")]
    gc_delay: String,
    /// Time between repair planner passes
    #[arg(long, default_value = "30s")]
    repair_interval: String,
    /// Bytes per second repair may copy (0: unlimited)
    #[arg(long, default_value = "64MiB")]
    repair_bandwidth: String,
    /// Chunk copies repair runs at once
    #[arg(long, default_value_t = 4)]
    repair_parallelism: usize,
    /// How long a chunk may be written but uncommitted before it counts as an orphan
    #[arg(long, default_value = "1h")]
    orphan_after: String,
    /// Metadata lease per open: a client re-opens the same version without
    /// asking for this long, and another client's change to the file waits
    /// it out (0s: no leases; always off on a shared etcd store)
    #[arg(long, default_value = "1s")]
    lease: String,
    /// Append a JSON line per namespace change and per refused request
    /// (who, what, which paths, the outcome) to this file
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// A remote store for the tier= and cold_after= cues, repeatable:
    /// NAME=s3://BUCKET[/PREFIX][?endpoint=URL&region=R&creds=FILE]
    /// (credentials: the creds file's access_key_id= and
    /// secret_access_key= lines, else AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY). Storage nodes need the same --tier
    #[arg(long = "tier", value_name = "NAME=s3://…")]
    tiers: Vec<String>,
    /// Time between the tier planner's passes over the namespace
    #[arg(long, default_value = "30s")]
    tier_interval: String,
    /// Bytes per second the tier planner offloads at most (0: unlimited)
    #[arg(long, default_value = "64MiB")]
    tier_rate: String,
    /// Leave files as they were written when rep= or ec= is set on their
    /// directory (convert them with `cairn convert`); by default the
    /// leader converts them in the background, at the repair bandwidth
    #[arg(long)]
    no_auto_convert: bool,
}

/// `--tier` specs as stores (no request sent yet).
pub fn parse_tiers(specs: &[String]) -> Result<cairn_tier::Tiers> {
    let specs = specs
        .iter()
        .map(|s| s.parse::<cairn_tier::TierSpec>())
        .collect::<cairn_types::Result<Vec<_>>>()?;
    Ok(cairn_tier::Tiers::new(specs)?)
}

#[derive(clap::Args)]
pub struct ServerArgs {
    /// Data directory
    #[arg(long, default_value = config::DEFAULT_DATA, env = "CAIRN_DATA")]
    data: PathBuf,
    /// Storage nodes to run (default: as many as the data directory has, at least 1)
    #[arg(long)]
    nodes: Option<usize>,
    /// Meta listen address (port 0 picks a free port)
    #[arg(long, default_value = config::DEFAULT_META)]
    listen: String,
    /// Default copies per chunk (default: the node count, at most 3)
    #[arg(long)]
    rep: Option<u8>,
    /// Space each storage node leaves free on its file system
    #[arg(long, default_value = "256MiB")]
    reserve: String,
    /// Do not write ~/.config/cairn/client.conf
    #[arg(long)]
    no_client_conf: bool,
    /// Groups for the storage nodes: "actor,gpu" puts every node in both;
    /// "0=actor;1,2=gpu" names nodes by index (node-0, node-1, ...)
    #[arg(long)]
    groups: Option<String>,
    /// S3 gateway listen address; "off" runs none
    #[arg(long, default_value = "127.0.0.1:7480", env = "CAIRN_S3_LISTEN")]
    s3_listen: String,
    #[command(flatten)]
    s3_tls: S3Tls,
    /// Most space per storage node for cache copies (prefetched, read
    /// through, or left by offloads to a remote tier), e.g. 10GiB (default:
    /// a fifth of the file system)
    #[arg(long, alias = "cache-capacity")]
    tier_cache: Option<String>,
    /// Serve Prometheus metrics of meta, every node and the S3 gateway at
    /// http://ADDR/metrics (port 0 picks a free port, printed at start);
    /// "off" serves none
    #[arg(long, default_value = "127.0.0.1:0", env = "CAIRN_METRICS_LISTEN")]
    metrics_listen: String,
    #[command(flatten)]
    meta: MetaOpts,
}

#[derive(clap::Args)]
pub struct GatewayArgs {
    /// Listen address
    #[arg(long, default_value = "127.0.0.1:7480", env = "CAIRN_S3_LISTEN")]
    listen: String,
    /// Base domain for virtual-hosted-style requests (bucket.DOMAIN)
    #[arg(long, env = "CAIRN_S3_DOMAIN")]
    domain: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics ("off": none)
    #[arg(long, default_value = "off", env = "CAIRN_METRICS_LISTEN")]
    metrics_listen: String,
    #[command(flatten)]
    tls: S3Tls,
    #[command(flatten)]
    target: crate::Target,
}

#[derive(clap::Args)]
pub struct MetaArgs {
    #[arg(long, default_value = "cairn-meta", env = "CAIRN_DATA")]
    data: PathBuf,
    #[arg(long, default_value = config::DEFAULT_META)]
    listen: String,
    /// Default copies per chunk
    #[arg(long, default_value_t = 3)]
    rep: u8,
    /// Metadata store: "embedded" (redb in --data) or
    /// etcd://HOST:PORT[,HOST:PORT...][/prefix], which several meta servers can share
    #[arg(long, default_value = "embedded", env = "CAIRN_META_STORE")]
    store: String,
    /// Serve Prometheus metrics at http://ADDR/metrics ("off": none)
    #[arg(long, default_value = "off", env = "CAIRN_METRICS_LISTEN")]
    metrics_listen: String,
    #[command(flatten)]
    meta: MetaOpts,
    #[command(subcommand)]
    tool: Option<crate::meta_tools::MetaCmd>,
}

#[derive(clap::Args)]
pub struct StorageArgs {
    #[arg(long, default_value = "cairn-storage", env = "CAIRN_DATA")]
    data: PathBuf,
    /// Meta address(es), comma-separated
    #[arg(long, env = "CAIRN_META")]
    meta: String,
    /// Listen address (port 0 picks a free port)
    #[arg(long, default_value = "0.0.0.0:7421")]
    listen: String,
    /// Address to tell meta and clients (default: the listen address, or the
    /// address this host uses to reach meta when listening on 0.0.0.0)
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long, default_value = "default")]
    zone: String,
    /// The machine's name, for `place=local` (default: its hostname)
    #[arg(long, env = "CAIRN_HOST")]
    host: Option<String>,
    /// The cluster secret (meta's DATA/cluster.secret)
    #[arg(long, env = "CAIRN_SECRET_FILE")]
    secret_file: PathBuf,
    /// Space to leave free on the file system
    #[arg(long, default_value = "256MiB")]
    reserve: String,
    /// Time between heartbeats to meta
    #[arg(long, default_value = "1s")]
    heartbeat: String,
    /// Bytes per second the scrubber re-reads to find bit rot (0: off)
    #[arg(long, default_value = "32MiB")]
    scrub_rate: String,
    /// Pause between two full scrubbing passes
    #[arg(long, default_value = "30s")]
    scrub_pause: String,
    /// Size at which a segment file is sealed (deleted data is reclaimed
    /// only from sealed segments)
    #[arg(long, default_value = "256MiB")]
    segment_size: String,
    /// Limit chunk data in and out of this node to this many bytes per
    /// second each way, e.g. 50MiB (0: unlimited); to emulate slow nodes
    #[arg(long, default_value = "0")]
    throttle: String,
    /// Groups this node is in, comma-separated (prefetch targets, `hot=GROUP`)
    #[arg(long, env = "CAIRN_GROUP")]
    group: Option<String>,
    /// Most space for cache copies (prefetched, read through, or left by
    /// offloads to a remote tier), e.g. 10GiB (default: a fifth of the
    /// file system)
    #[arg(long, alias = "tier-cache")]
    cache_capacity: Option<String>,
    /// A remote store this node offloads to and reads through from, as
    /// given to meta (repeatable): NAME=s3://BUCKET[/PREFIX][?endpoint=…]
    #[arg(long = "tier", value_name = "NAME=s3://…")]
    tiers: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics ("off": none)
    #[arg(long, default_value = "off", env = "CAIRN_METRICS_LISTEN")]
    metrics_listen: String,
}

/// `--group a,b`: validated group names.
pub fn parse_groups(list: Option<&str>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for g in list
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        cairn_types::check_group_name(g)?;
        out.push(g.to_string());
    }
    Ok(out)
}

fn meta_config(data: PathBuf, listen: String, rep: u8, o: &MetaOpts) -> Result<MetaConfig> {
    let mut c = MetaConfig::new(data);
    c.listen = listen;
    c.default_rep = rep;
    c.chunk_size = parse_size(&o.chunk_size)?;
    let inline = parse_size(&o.inline_max)?;
    if inline > cairn_types::MAX_INLINE as u64 {
        bail!("--inline-max {}: at most 64KiB", o.inline_max);
    }
    c.inline_max = inline as u32;
    c.dead_after = parse_duration(&o.dead_after)?;
    c.gc_delay = parse_duration(&o.gc_delay)?;
    c.repair.interval = parse_duration(&o.repair_interval)?;
    c.repair.bandwidth = parse_size(&o.repair_bandwidth)?;
    c.repair.parallelism = o.repair_parallelism.max(1);
    c.repair.orphan_after = parse_duration(&o.orphan_after)?;
    c.lease = parse_duration(&o.lease)?;
    c.audit_log = o.audit_log.clone();
    c.tier = cairn_meta::tiering::TierConfig {
        tiers: parse_tiers(&o.tiers)?,
        interval: parse_duration(&o.tier_interval)?,
        rate: parse_size(&o.tier_rate)?,
    };
    c.auto_convert = !o.no_auto_convert;
    Ok(c)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The groups of node `i` of `cairn server` per `--groups`.
fn server_groups(spec: Option<&str>, i: usize) -> Result<Vec<String>> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    if !spec.contains('=') {
        return parse_groups(Some(spec));
    }
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (idx, groups) = part
            .split_once('=')
            .with_context(|| format!("--groups {spec:?}: expected INDEXES=GROUPS; ..."))?;
        for n in idx.split(',') {
            let n: usize = n
                .trim()
                .parse()
                .with_context(|| format!("--groups {spec:?}: {n:?} is not a node index"))?;
            if n == i {
                out.extend(parse_groups(Some(&groups.replace('+', ",")))?);
            }
        }
    }
    Ok(out)
}

fn existing_nodes(data: &Path) -> usize {
    (0..)
        .take_while(|i| data.join(format!("node-{i}")).join("node.id").exists())
        .count()
}

pub async fn server(a: ServerArgs) -> Result<()> {
    let nodes = a.nodes.unwrap_or_else(|| existing_nodes(&a.data).max(1));
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let rep = a.rep.unwrap_or(nodes.min(3) as u8);
    if rep as usize > nodes {
        bail!("--rep {rep} needs at least {rep} storage nodes; this server runs {nodes} (use --nodes)");
    }
    let meta_dir = a.data.join("meta");
    let cfg = meta_config(meta_dir.clone(), a.listen.clone(), rep, &a.meta)?;
    let tiers = cfg.tier.tiers.clone();
    let meta = cairn_meta::server::start(cfg)
        .await
        .context("starting meta")?;
    let creds = Credentials::Cluster(meta.secret.clone());
    let mut storage = Vec::new();
    for i in 0..nodes {
        let mut sc = StorageConfig::new(a.data.join(format!("node-{i}")), vec![meta.addr.clone()]);
        sc.groups = server_groups(a.groups.as_deref(), i)?;
        sc.tiers = tiers.clone();
        sc.cache_capacity = a.tier_cache.as_deref().map(parse_size).transpose()?;
        sc.store = StoreOptions {
            reserve_free: parse_size(&a.reserve)?,
            ..StoreOptions::default()
        };
        storage.push(
            cairn_storage::start(sc, creds.clone())
                .await
                .with_context(|| format!("starting node-{i}"))?,
        );
    }
    // Serve only once every node has registered its (new) address, so the
    // first request after a restart does not go to where a node used to be.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while storage.iter().any(|s| !meta.meta.node_state(s.id).is_up()) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "storage nodes did not register with meta within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let key = meta_dir.join(CLIENT_KEY_FILE);
    let s3 = if a.s3_listen == "off" {
        None
    } else {
        let client = cairn_client::Client::connect(cairn_client::ClientConfig::new(
            vec![meta.addr.clone()],
            meta.secret.client_credentials(),
        ))
        .await
        .context("connecting the S3 gateway to meta")?;
        let cfg = cairn_s3::GatewayConfig {
            listen: a.s3_listen.clone(),
            domain: None,
            unauthenticated: false,
            tls: s3_tls(&a.s3_tls)?,
        };
        Some(
            cairn_s3::start(client, cfg)
                .await
                .context("starting the S3 gateway")?,
        )
    };
    let scheme = if a.s3_tls.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let s3_url = s3.as_ref().map(|g| format!("{scheme}://{}", g.addr));
    let http = meta_http(&a.metrics_listen, &meta.addr, &meta.secret).await?;
    let metrics = http.as_ref().map(|h| h.metrics.clone());
    let dashboard = http.as_ref().and_then(|h| h.dashboard.clone());
    let endpoints = serde_json::json!({
        "meta": meta.addr,
        "storage": storage.iter().map(|s| serde_json::json!({"id": s.id.to_string(), "addr": s.addr})).collect::<Vec<_>>(),
        "client_key": std::fs::canonicalize(&key).unwrap_or(key.clone()),
        "rep": rep,
        "s3": s3_url,
        "metrics": metrics,
        "dashboard_login": dashboard,
    });
    std::fs::write(
        a.data.join("endpoints.json"),
        serde_json::to_string_pretty(&endpoints)?,
    )?;
    println!("cairn server: data in {}", a.data.display());
    println!("  meta        {}", meta.addr);
    for (i, s) in storage.iter().enumerate() {
        println!("  storage     {} (node-{i}, id {})", s.addr, s.id);
    }
    println!("  redundancy  rep={rep}");
    println!("  client key  {}", key.display());
    if cairn_proto::tls::enabled() {
        println!("  tls         on (TLS 1.3; the cluster CA is in the client key)");
    } else {
        println!("  tls         OFF (--tls off): traffic is in clear; clients need --tls off too");
    }
    if let Some(u) = &s3_url {
        println!("  s3          {u} (make a key: cairn key create NAME)");
    }
    if let Some(u) = &metrics {
        println!("  metrics     {u} (Authorization: Bearer <client key>)");
    }
    if let Some(u) = &dashboard {
        println!("  dashboard   {u} (a one-time login link)");
    }
    if !a.no_client_conf {
        match config::write_client_conf(&meta.addr, &key) {
            Ok(p) => println!(
                "  client conf {} (the CLI on this machine uses it)",
                p.display()
            ),
            Err(e) => println!("  client conf not written: {e}"),
        }
    }
    println!("try: cairn put ./some-file /some-file && cairn ls -l /");
    ready()?;

    shutdown_signal().await;
    info!("shutting down");
    if let Some(g) = s3 {
        g.stop().await;
    }
    for s in storage {
        s.shutdown().await;
    }
    meta.shutdown().await;
    Ok(())
}

pub async fn meta(a: MetaArgs) -> Result<()> {
    if let Some(tool) = a.tool {
        return crate::meta_tools::run(tool).await;
    }
    let mut cfg = meta_config(a.data.clone(), a.listen, a.rep, &a.meta)?;
    cfg.store = a.store.parse()?;
    let store_name = cfg.store.to_string();
    let meta = cairn_meta::server::start(cfg)
        .await
        .context("starting meta")?;
    let http = meta_http(&a.metrics_listen, &meta.addr, &meta.secret).await?;
    println!("cairn meta: listening on {}", meta.addr);
    println!("  metadata       {store_name}");
    if let Some(h) = &http {
        println!("  metrics        {}", h.metrics);
        if let Some(d) = &h.dashboard {
            println!("  dashboard      {d} (a one-time login link)");
        }
    }
    println!(
        "  cluster secret {} (give it to storage nodes)",
        a.data.join(SECRET_FILE).display()
    );
    println!(
        "  client key     {} (give it to clients)",
        a.data.join(CLIENT_KEY_FILE).display()
    );
    ready()?;
    shutdown_signal().await;
    meta.shutdown().await;
    Ok(())
}

/// The banner is out and the role serves: flush stdout (scripts wait for
/// the banner) and tell a service manager, under a systemd unit of
/// `Type=notify` (`$NOTIFY_SOCKET`; nothing without one).
pub fn ready() -> Result<()> {
    use std::io::Write;
    std::io::stdout().flush()?;
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot tell the service manager this process is ready: {e}");
    }
    Ok(())
}

/// A process's HTTP port: where its metrics are, and for meta the
/// dashboard with a one-time login link.
pub(crate) struct Http {
    pub metrics: String,
    dashboard: Option<String>,
}

/// Serve the process's Prometheus metrics at `http://LISTEN/metrics` (and
/// `/healthz`) for as long as it runs, to holders of the key `creds`
/// accept; with `dashboard` (an admin client of the cluster) also the
/// dashboard at `/`. "off" serves nothing.
pub(crate) async fn start_http(
    listen: &str,
    creds: &Credentials,
    dashboard: Option<cairn_client::Client>,
) -> Result<Option<Http>> {
    if listen.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let l = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} for metrics and the dashboard (--metrics-listen)")
        })?;
    let base = format!("http://{}", l.local_addr()?);
    let creds = creds.clone();
    let access = std::sync::Arc::new(cairn_metrics::Access::new(move |k| {
        creds.accepts_web_key(k)
    }));
    let pages = dashboard.map(|c| {
        std::sync::Arc::new(crate::dashboard::Site(crate::dashboard::Dashboard::start(
            c,
        ))) as std::sync::Arc<dyn cairn_metrics::Pages>
    });
    let login = pages
        .is_some()
        .then(|| format!("{base}/?token={}", access.one_time_token()));
    tokio::spawn(cairn_metrics::serve(l, access, pages));
    Ok(Some(Http {
        metrics: format!("{base}/metrics"),
        dashboard: login,
    }))
}

/// Meta's HTTP port: metrics, and the dashboard through an admin client.
async fn meta_http(
    listen: &str,
    meta: &str,
    secret: &cairn_proto::ClusterSecret,
) -> Result<Option<Http>> {
    if listen.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let creds = secret.client_credentials();
    let admin = cairn_client::Client::connect(cairn_client::ClientConfig::new(
        vec![meta.to_string()],
        creds.clone(),
    ))
    .await
    .context("connecting the dashboard to meta")?;
    start_http(listen, &creds, Some(admin)).await
}

/// The address other hosts should use for a node listening on `listen`.
async fn advertise_addr(listen: &str, bound: std::net::SocketAddr, meta: &str) -> Result<String> {
    let ip: std::net::IpAddr = listen
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(listen)
        .trim_matches(['[', ']'])
        .parse()
        .unwrap_or(bound.ip());
    if !ip.is_unspecified() {
        return Ok(bound.to_string());
    }
    let s = tokio::net::TcpStream::connect(meta)
        .await
        .with_context(|| {
            format!("reaching meta at {meta} to learn this host's address (or pass --advertise)")
        })?;
    Ok(std::net::SocketAddr::new(s.local_addr()?.ip(), bound.port()).to_string())
}

pub async fn storage(a: StorageArgs) -> Result<()> {
    let creds = Credentials::load(&a.secret_file)?;
    if creds.cluster().is_none() {
        bail!(
            "{} is a client key; a storage node needs the cluster secret (meta's {SECRET_FILE})",
            a.secret_file.display()
        );
    }
    let meta: Vec<String> = a.meta.split(',').map(|s| s.trim().to_string()).collect();
    // Bind first so that port 0 works, then advertise what was bound.
    let probe = std::net::TcpListener::bind(&a.listen)
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let bound = probe.local_addr()?;
    drop(probe);
    let mut sc = StorageConfig::new(a.data.clone(), meta.clone());
    sc.listen = bound.to_string();
    sc.advertise = Some(match a.advertise {
        Some(x) => x,
        None => advertise_addr(&a.listen, bound, &meta[0]).await?,
    });
    sc.zone = a.zone;
    if let Some(h) = a.host {
        sc.host = h;
    }
    sc.heartbeat = parse_duration(&a.heartbeat)?;
    sc.scrub_rate = parse_size(&a.scrub_rate)?;
    sc.scrub_pause = parse_duration(&a.scrub_pause)?;
    sc.throttle = parse_size(&a.throttle)?;
    sc.groups = parse_groups(a.group.as_deref())?;
    sc.cache_capacity = a.cache_capacity.as_deref().map(parse_size).transpose()?;
    sc.tiers = parse_tiers(&a.tiers)?;
    sc.store = StoreOptions {
        reserve_free: parse_size(&a.reserve)?,
        segment_size: parse_size(&a.segment_size)?,
    };
    let node = cairn_storage::start(sc, creds.clone())
        .await
        .context("starting storage node")?;
    let metrics = start_http(&a.metrics_listen, &creds, None)
        .await?
        .map(|h| h.metrics);
    println!(
        "cairn storage: node {} listening on {} (data in {})",
        node.id,
        node.addr,
        a.data.display()
    );
    if let Some(u) = &metrics {
        println!("  metrics {u}");
    }
    ready()?;
    shutdown_signal().await;
    node.shutdown().await;
    Ok(())
}

/// HTTPS for an S3 gateway: a certificate chain and its key (PEM).
#[derive(clap::Args, Clone, Debug)]
pub struct S3Tls {
    /// Serve S3 over HTTPS with this certificate chain (PEM; with --s3-tls-key)
    #[arg(
        long = "s3-tls-cert",
        value_name = "FILE",
        env = "CAIRN_S3_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM)
    #[arg(
        long = "s3-tls-key",
        value_name = "FILE",
        env = "CAIRN_S3_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

fn s3_tls(t: &S3Tls) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>> {
    match (&t.tls_cert, &t.tls_key) {
        (Some(c), Some(k)) => Ok(Some(cairn_s3::tls_config(c, k)?)),
        _ => Ok(None),
    }
}

pub async fn gateway_s3(a: GatewayArgs) -> Result<()> {
    let client = crate::commands::connect(&a.target).await?;
    let cfg = cairn_s3::GatewayConfig {
        listen: a.listen,
        domain: a.domain,
        unauthenticated: false,
        tls: s3_tls(&a.tls)?,
    };
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let g = cairn_s3::start(client, cfg)
        .await
        .context("starting the S3 gateway")?;
    let (_, creds) = crate::config::resolve(a.target.meta.clone(), a.target.secret_file.clone())?;
    let metrics = start_http(&a.metrics_listen, &creds, None)
        .await?
        .map(|h| h.metrics);
    println!("cairn gateway s3: listening on {scheme}://{}", g.addr);
    if let Some(u) = &metrics {
        println!("  metrics {u}");
    }
    ready()?;
    shutdown_signal().await;
    g.stop().await;
    Ok(())
}
