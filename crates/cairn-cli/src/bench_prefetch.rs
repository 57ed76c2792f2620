//! `cairn bench --prefetch`: how long until every node of a group holds a
//! file, on real processes: a meta process, one source storage node holding
//! the file's only durable copy, and N group nodes, every node throttled to
//! the same rate B each way (`cairn storage --throttle`).
//!
//! For each N it measures, in the same run and on the same cluster:
//! - the prefetch job (`cairn prefetch --group`): the fan-out tree;
//! - the naive way: N readers at once pulling the file from the durable
//!   copy, whose upload they share;
//!
//! and reports both beside the floor, size / B. JSON on stdout, a table on
//! stderr. Reports, never asserts.

use crate::bench::median;
use crate::bench_schemes::{spawn, Proc};
use anyhow::{bail, Context, Result};
use cairn_client::{Client, ClientConfig, PutOptions};
use cairn_proto::{Credentials, NodeState};
use cairn_types::{parse_size, CairnPath, Cues};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct PrefetchBenchArgs {
    /// Measure prefetch fan-out against naive pulls (see --prefetch-*)
    #[arg(long)]
    pub prefetch: bool,
    /// Group sizes to measure, comma-separated
    #[arg(long, default_value = "4,8,12")]
    pub prefetch_nodes: String,
    /// File to spread
    #[arg(long, default_value = "1GiB")]
    pub prefetch_size: String,
    /// Every node's rate each way, B
    #[arg(long, default_value = "32MiB")]
    pub prefetch_throttle: String,
    /// Chunk size of the cluster (the pipeline's grain)
    #[arg(long, default_value = "8MiB")]
    pub prefetch_chunk: String,
    /// Concurrent `hotspot` readers of one file, spread over the group's hosts
    #[arg(long, default_value_t = 64)]
    pub hotspot_readers: usize,
    /// Size of the file the hotspot readers read
    #[arg(long, default_value = "32MiB")]
    pub hotspot_size: String,
}

struct Cluster {
    _procs: Vec<Proc>,
    client: Client,
    uncached: Vec<Client>,
    addr: String,
    creds: Credentials,
}

/// Bytes the source node (host bench-host-0) has served, once its next
/// heartbeats have reported them.
async fn source_served(c: &Client) -> Result<u64> {
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = c.cluster_status().await?;
    s.nodes
        .iter()
        .find(|n| n.host == "bench-host-0")
        .map(|n| n.stats.served_bytes)
        .context("the source node is gone")
}

/// `readers` concurrent `hotspot` readers of a fresh file, reader r on
/// host bench-host-(1 + r mod n): bytes the durable copy served, over the
/// file's size.
async fn hotspot(c: &Cluster, n: usize, a: &PrefetchBenchArgs) -> Result<serde_json::Value> {
    let size = parse_size(&a.hotspot_size)?;
    let path = CairnPath::parse("/bench/hotspot.bin")?;
    let block = std::sync::Arc::new(crate::bench::pattern(1 << 20, 9));
    let opts = PutOptions {
        cues: Cues::parse("rep=1,site=source")?,
        ..Default::default()
    };
    c.client
        .put(&path, crate::bench::Pattern::new(block, size), opts)
        .await?;
    let before = source_served(&c.client).await?;
    let cues = Cues::parse("hotspot")?;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..a.hotspot_readers {
        let mut cfg = ClientConfig::new(vec![c.addr.clone()], c.creds.clone());
        cfg.cache_bytes = 0;
        cfg.meta_cache_entries = 0;
        cfg.host = Some(format!("bench-host-{}", 1 + r % n));
        let reader = Client::connect(cfg).await?;
        let (path, cues) = (path.clone(), cues.clone());
        tasks.push(tokio::spawn(async move {
            let f = reader.open_cued(&path, &cues).await?;
            f.copy_to(&mut tokio::io::sink()).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    let served = source_served(&c.client).await? - before;
    Ok(
        json!({"readers": a.hotspot_readers, "size_bytes": size, "seconds": secs,
              "durable_served_bytes": served,
              "durable_served_over_size": served as f64 / size as f64}),
    )
}

async fn start(dir: &Path, n: usize, a: &PrefetchBenchArgs) -> Result<Cluster> {
    let meta_dir = dir.join("meta");
    let d = meta_dir.to_str().context("non-UTF-8 temp dir")?;
    let (meta, addr) = spawn(&[
        "meta",
        "--data",
        d,
        "--listen",
        "127.0.0.1:0",
        "--chunk-size",
        &a.prefetch_chunk,
        "--rep",
        "1",
    ])?;
    let secret = meta_dir.join("cluster.secret");
    let mut procs = vec![meta];
    for i in 0..=n {
        let nd = dir.join(format!("node-{i}"));
        let (zone, group) = if i == 0 {
            ("source", "")
        } else {
            ("fleet", "fleet")
        };
        let host = format!("bench-host-{i}");
        let mut args = vec![
            "storage",
            "--data",
            nd.to_str().context("non-UTF-8 temp dir")?,
            "--meta",
            &addr,
            "--listen",
            "127.0.0.1:0",
            "--secret-file",
            secret.to_str().context("non-UTF-8 temp dir")?,
            "--reserve",
            "0",
            "--scrub-rate",
            "0",
            "--zone",
            zone,
            "--host",
            &host,
            "--throttle",
            &a.prefetch_throttle,
        ];
        if !group.is_empty() {
            args.extend(["--group", group]);
        }
        let (p, _) = spawn(&args)?;
        procs.push(p);
    }
    let creds = Credentials::load(&meta_dir.join("client.key"))?;
    let client = Client::connect(ClientConfig::new(vec![addr.clone()], creds.clone())).await?;
    let mut uncached = Vec::new();
    for _ in 0..n {
        let mut cfg = ClientConfig::new(vec![addr.clone()], creds.clone());
        cfg.cache_bytes = 0;
        cfg.meta_cache_entries = 0;
        uncached.push(Client::connect(cfg).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = client
            .cluster_status()
            .await?
            .nodes
            .iter()
            .filter(|s| s.state == NodeState::Live)
            .count();
        if live == n + 1 {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {live} of {} storage nodes came up", n + 1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Cluster {
        _procs: procs,
        client,
        uncached,
        addr,
        creds,
    })
}

pub async fn run(a: PrefetchBenchArgs, base: &Path, runs: usize) -> Result<()> {
    let sizes: Vec<usize> = a
        .prefetch_nodes
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .context("--prefetch-nodes: comma-separated node counts")?;
    let size = parse_size(&a.prefetch_size)?;
    let rate = parse_size(&a.prefetch_throttle)?;
    if rate == 0 {
        bail!("--prefetch-throttle must be a rate above 0");
    }
    let ideal = size as f64 / rate as f64;
    let block = std::sync::Arc::new(crate::bench::pattern(8 << 20, 7));
    let mut results = Vec::new();
    eprintln!(
        "{:>5} {:>10} {:>10} {:>10} {:>12} {:>12} {:>16}",
        "nodes", "ideal s", "tree s", "naive s", "tree/ideal", "naive/ideal", "hotspot durable"
    );
    for &n in &sizes {
        let dir = base.join(format!("cairn-bench-prefetch-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let c = start(&dir, n, &a).await?;
        let path = CairnPath::parse("/bench/prefetch.bin")?;
        c.client.mkdir(&CairnPath::parse("/bench")?, true).await?;
        let opts = PutOptions {
            cues: Cues::parse("rep=1,site=source")?,
            ..Default::default()
        };
        c.client
            .put(&path, crate::bench::Pattern::new(block.clone(), size), opts)
            .await?;
        let (mut tree, mut naive) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            // No cache copies from an earlier run: readers see the source only.
            c.client
                .prefetch(std::slice::from_ref(&path), "fleet", true)
                .await?;
            // Naive: every node's worth of readers pulls from the source.
            let t = Instant::now();
            let mut tasks = Vec::new();
            for r in &c.uncached {
                let (r, path) = (r.clone(), path.clone());
                tasks.push(tokio::spawn(async move {
                    let mut sink = tokio::io::sink();
                    r.get(&path, &mut sink).await
                }));
            }
            for t in tasks {
                t.await??;
            }
            naive.push(t.elapsed().as_secs_f64());
            // The fan-out.
            let t = Instant::now();
            let jobs = c
                .client
                .prefetch(std::slice::from_ref(&path), "fleet", false)
                .await?;
            let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
            let st = c.client.prefetch_wait(&ids, |_| {}).await?;
            tree.push(t.elapsed().as_secs_f64());
            if st.iter().any(|j| j.state != "done") {
                bail!("prefetch did not complete: {st:?}");
            }
        }
        let (tr, nv) = (median(&tree), median(&naive));
        let hot = if a.hotspot_readers > 0 {
            hotspot(&c, n, &a).await?
        } else {
            json!(null)
        };
        eprintln!(
            "{:>5} {:>10.1} {:>10.1} {:>10.1} {:>12.2} {:>12.2} {:>16.2}",
            n,
            ideal,
            tr,
            nv,
            tr / ideal,
            nv / ideal,
            hot["durable_served_over_size"].as_f64().unwrap_or(0.0)
        );
        results.push(
            json!({"nodes": n, "size_bytes": size, "rate_bytes_per_s": rate,
            "ideal_s": ideal, "tree_s": tr, "naive_s": nv, "tree_runs_s": tree,
            "naive_runs_s": naive, "tree_over_ideal": tr / ideal, "naive_over_ideal": nv / ideal,
            "hotspot": hot}),
        );
        drop(c);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"prefetch": results}))?
    );
    Ok(())
}
