//! `cairn bench --schemes`: the storage mini project's two experiments (seed
//! 002), on a real local cluster of storage processes, for each placement
//! scheme:
//!
//! 1. store and load times of files of several sizes over repeated runs,
//!    optionally with every node throttled to a byte rate (the node really
//!    limits its chunk traffic; the original's throttle did nothing);
//! 2. store files, then SIGKILL nodes cumulatively with repair off and count
//!    damaged files and lost fragments at each step, both from metadata and
//!    by reading every file.
//!
//! One fresh cluster (a meta process and N storage processes) per scheme, so
//! the schemes do not share load or failures. Results as JSON on stdout and a
//! table on stderr. Reports, never asserts.

use crate::bench::{median, pattern};
use anyhow::{bail, Context, Result};
use cairn_client::{Client, ClientConfig, PutOptions};
use cairn_proto::{Credentials, NodeState};
use cairn_types::{parse_size, CairnPath, Cues, NodeId, PlaceScheme};
use serde_json::json;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct SchemeArgs {
    /// Placement schemes to compare (comma-separated)
    #[arg(long = "schemes", value_name = "LIST")]
    pub schemes: Option<String>,
    /// Storage processes per cluster
    #[arg(long = "scheme-nodes", id = "scheme_nodes", default_value_t = 12)]
    pub nodes: usize,
    /// Zones the nodes are spread over (round robin)
    #[arg(long = "scheme-zones", id = "scheme_zones", default_value_t = 3)]
    pub zones: usize,
    /// Copies per chunk
    #[arg(long = "scheme-rep", id = "scheme_rep", default_value_t = 3)]
    pub rep: u8,
    /// File sizes of the store/load experiment
    #[arg(
        long = "scheme-sizes",
        id = "scheme_sizes",
        default_value = "1MiB,16MiB,64MiB"
    )]
    pub sizes: String,
    /// Chunk size of the clusters (files span several chunks: fragments)
    #[arg(
        long = "scheme-chunk-size",
        id = "scheme_chunk_size",
        default_value = "1MiB"
    )]
    pub chunk_size: String,
    /// Files stored before nodes are killed
    #[arg(long = "scheme-files", id = "scheme_files", default_value_t = 100)]
    pub files: usize,
    /// Size of each of those files
    #[arg(
        long = "scheme-file-size",
        id = "scheme_file_size",
        default_value = "4MiB"
    )]
    pub file_size: String,
    /// Cumulative numbers of nodes killed (steps past nodes-1 are skipped)
    #[arg(
        long = "scheme-kill",
        id = "scheme_kill",
        default_value = "2,3,4,6,8,10"
    )]
    pub kill: String,
    /// Limit every node's chunk traffic to this rate, each way (0: none)
    #[arg(long = "scheme-throttle", id = "scheme_throttle", default_value = "0")]
    pub throttle: String,
    /// Seed of the kill order (the same order for every scheme)
    #[arg(long = "scheme-seed", id = "scheme_seed", default_value_t = 2)]
    pub seed: u64,
}

/// A child process SIGKILLed when dropped.
pub(crate) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cairn ARGS` and wait for its "listening on ADDR" line.
pub(crate) fn spawn(args: &[&str]) -> Result<(Proc, String)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a cairn process")?;
    let out = child.stdout.take().expect("piped");
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .with_context(|| format!("cairn {args:?} did not start"))?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or("").to_string();
            // Keep draining so the child never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return Ok((proc, addr));
        }
    }
}

/// A meta process and `n` storage processes in `dir`, repair off.
struct Cluster {
    _meta: Proc,
    nodes: Vec<Option<Proc>>,
    ids: Vec<NodeId>,
    client: Client,
    /// Reads nothing from caches: what the cluster itself still has.
    uncached: Client,
}

impl Cluster {
    async fn start(dir: &Path, a: &SchemeArgs) -> Result<Cluster> {
        let meta_dir = dir.join("meta");
        let d = meta_dir.to_str().context("non-UTF-8 temp dir")?;
        let (meta, addr) = spawn(&[
            "meta",
            "--data",
            d,
            "--listen",
            "127.0.0.1:0",
            "--chunk-size",
            &a.chunk_size,
            // Repair off: the second experiment counts what failures destroy.
            "--dead-after",
            "1000h",
            "--repair-interval",
            "1000h",
        ])?;
        let secret = meta_dir.join("cluster.secret");
        let mut nodes = Vec::new();
        let mut ids = Vec::new();
        for i in 0..a.nodes {
            let nd = dir.join(format!("node-{i}"));
            let zone = format!("zone-{}", i % a.zones.max(1));
            let (p, _) = spawn(&[
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
                &zone,
                "--throttle",
                &a.throttle,
            ])?;
            let id: NodeId = std::fs::read_to_string(nd.join("node.id"))?
                .trim()
                .parse()
                .map_err(|e: cairn_types::Error| anyhow::anyhow!("{e}"))?;
            nodes.push(Some(p));
            ids.push(id);
        }
        let creds = Credentials::load(&meta_dir.join("client.key"))?;
        let client = Client::connect(ClientConfig::new(vec![addr.clone()], creds.clone())).await?;
        let mut cfg = ClientConfig::new(vec![addr], creds);
        cfg.cache_bytes = 0;
        cfg.meta_cache_entries = 0;
        let uncached = Client::connect(cfg).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let live = client
                .cluster_status()
                .await?
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Live)
                .count();
            if live == a.nodes {
                break;
            }
            if Instant::now() > deadline {
                bail!("only {live} of {} storage nodes came up", a.nodes);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Cluster {
            _meta: meta,
            nodes,
            ids,
            client,
            uncached,
        })
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A seeded permutation of `0..n`: the order nodes are killed in.
fn kill_order(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut v);
    v
}

/// Run both experiments for every scheme; `runs` repetitions of each
/// store/load timing.
pub async fn run(a: SchemeArgs, base: &Path, runs: usize) -> Result<()> {
    let runs = runs.max(1);
    let schemes: Vec<PlaceScheme> = a
        .schemes
        .as_deref()
        .unwrap_or("random,buddy,min_copy,copyset,spread")
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| PlaceScheme::parse(s.trim()))
        .collect::<cairn_types::Result<_>>()?;
    let sizes: Vec<u64> = a
        .sizes
        .split(',')
        .map(|s| parse_size(s.trim()))
        .collect::<cairn_types::Result<_>>()?;
    let kills: Vec<usize> = a
        .kill
        .split(',')
        .map(|s| s.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .context("--scheme-kill: comma-separated counts")?;
    let file_size = parse_size(&a.file_size)? as usize;
    if a.nodes < a.rep as usize {
        bail!(
            "--scheme-nodes {} is fewer than --scheme-rep {}",
            a.nodes,
            a.rep
        );
    }
    let order = kill_order(a.nodes, a.seed);
    let mut store_load = Vec::new();
    let mut failures = Vec::new();
    let mut table = Vec::new();
    for (si, scheme) in schemes.iter().enumerate() {
        let dir: PathBuf = base.join(format!("schemes-{}-{si}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let result = one_scheme(&a, *scheme, &dir, &sizes, &kills, &order, file_size, runs).await;
        let _ = std::fs::remove_dir_all(&dir);
        let (sl, fl, row) = result.with_context(|| format!("scheme {scheme}"))?;
        store_load.extend(sl);
        failures.push(fl);
        table.push(row);
    }
    eprintln!(
        "{:<10} {:>14} {:>14}   damaged files (lost fragments) after killing {}",
        "scheme", "store MiB/s", "load MiB/s", a.kill
    );
    for row in &table {
        eprintln!("{row}");
    }
    let out = json!({
        "experiment": "placement schemes (cairn bench --schemes)",
        "nodes": a.nodes,
        "zones": a.zones,
        "rep": a.rep,
        "chunk_size": parse_size(&a.chunk_size)?,
        "throttle_bytes_per_s": parse_size(&a.throttle)?,
        "runs": runs,
        "kill_order_seed": a.seed,
        "store_load": store_load,
        "failures": failures,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

type SchemeResult = (Vec<serde_json::Value>, serde_json::Value, String);

#[allow(clippy::too_many_arguments)]
async fn one_scheme(
    a: &SchemeArgs,
    scheme: PlaceScheme,
    dir: &Path,
    sizes: &[u64],
    kills: &[usize],
    order: &[usize],
    file_size: usize,
    runs: usize,
) -> Result<SchemeResult> {
    let mut cluster = Cluster::start(dir, a).await?;
    let c = cluster.client.clone();
    let cues = Cues {
        rep: Some(a.rep),
        place: Some(scheme),
        ..Cues::default()
    };
    let opts = PutOptions {
        cues: cues.clone(),
        ..PutOptions::default()
    };
    // Experiment 1: store and load times.
    let mut store_load = Vec::new();
    let mut summary_store = Vec::new();
    let mut summary_load = Vec::new();
    for &size in sizes {
        let data = pattern(size as usize, size);
        let (mut st, mut ld) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let p = CairnPath::parse(&format!("/timing/{size}-{run}"))?;
            c.mkdir(&CairnPath::parse("/timing")?, true).await?;
            let t = Instant::now();
            c.put_bytes(&p, &data, opts.clone()).await?;
            st.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let got = c.get_bytes(&p).await?;
            ld.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(got == data, "{p} read back differently");
            c.remove(&p, false).await?;
        }
        let mib = size as f64 / (1 << 20) as f64;
        let (ms, ml) = (median(&st), median(&ld));
        summary_store.push(mib / ms);
        summary_load.push(mib / ml);
        store_load.push(json!({
            "scheme": scheme.name(),
            "size": size,
            "store_s": st.iter().map(|x| round(*x)).collect::<Vec<_>>(),
            "load_s": ld.iter().map(|x| round(*x)).collect::<Vec<_>>(),
            "store_mib_s_median": round(mib / ms),
            "load_mib_s_median": round(mib / ml),
        }));
    }
    // Experiment 2: store files, kill nodes cumulatively, count the damage.
    let files: Vec<CairnPath> = (0..a.files)
        .map(|i| CairnPath::parse(&format!("/fail/f{i:04}")))
        .collect::<cairn_types::Result<_>>()?;
    c.mkdir(&CairnPath::parse("/fail")?, true).await?;
    for (i, p) in files.iter().enumerate() {
        c.put_bytes(p, &pattern(file_size, i as u64), opts.clone())
            .await?;
    }
    let mut layouts = Vec::new();
    for p in &files {
        layouts.push(c.stat(p).await?.extents);
    }
    let mut steps = Vec::new();
    let mut killed: BTreeSet<NodeId> = BTreeSet::new();
    let mut cells = Vec::new();
    for &k in kills {
        if k >= a.nodes {
            continue;
        }
        for &i in order.iter().take(k) {
            if let Some(mut p) = cluster.nodes[i].take() {
                let _ = p.0.kill();
                let _ = p.0.wait();
            }
            killed.insert(cluster.ids[i]);
        }
        let (mut damaged, mut lost_fragments, mut lost_chunks) = (0usize, 0usize, 0usize);
        for exts in &layouts {
            let mut file_damaged = false;
            for e in exts {
                let gone = e.nodes.iter().filter(|n| killed.contains(n)).count();
                lost_fragments += gone;
                if gone == e.nodes.len() {
                    lost_chunks += 1;
                    file_damaged = true;
                }
            }
            damaged += file_damaged as usize;
        }
        // Every file read back: the metadata's verdict, checked.
        let mut unreadable = 0usize;
        for (i, p) in files.iter().enumerate() {
            let (path, cues) = (p.clone(), Cues::parse("maxtime=5000")?);
            let ok = match cluster.uncached.open_cued(&path, &cues).await {
                Ok(r) => match r.read_at(0, file_size as u64).await {
                    Ok(d) => d == pattern(file_size, i as u64),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            unreadable += (!ok) as usize;
        }
        cells.push(format!("{damaged} ({lost_fragments})"));
        steps.push(json!({
            "killed": k,
            "damaged_files": damaged,
            "unreadable_files": unreadable,
            "lost_chunks": lost_chunks,
            "lost_fragments": lost_fragments,
        }));
    }
    let failures = json!({
        "scheme": scheme.name(),
        "files": a.files,
        "file_size": file_size,
        "fragments": layouts.iter().map(|l| l.iter().map(|e| e.nodes.len()).sum::<usize>()).sum::<usize>(),
        "steps": steps,
    });
    let row = format!(
        "{:<10} {:>14} {:>14}   {}",
        scheme.name(),
        format!("{:.1}", median(&summary_store)),
        format!("{:.1}", median(&summary_load)),
        cells.join("  ")
    );
    Ok((store_load, failures, row))
}
