//! `cairn simulate`: compare placement schemes on a simulated cluster.

use anyhow::{Context, Result};
use cairn_sim::{simulate, SimConfig, SimReport};
use cairn_types::PlaceScheme;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Storage nodes in the simulated cluster
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Zones the nodes are dealt into (round-robin)
    #[arg(long, default_value_t = 1)]
    zones: usize,
    /// Chunks to place
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Copies per chunk
    #[arg(long, default_value_t = 3)]
    rep: u8,
    /// Schemes to compare, comma-separated
    #[arg(long, default_value = "random,buddy,min_copy,copyset,spread")]
    schemes: String,
    /// Numbers of simultaneous node failures, comma-separated
    #[arg(long, default_value = "2,3,5,10,20,50")]
    failures: String,
    /// Random failure draws per number of failures
    #[arg(long, default_value_t = 2000)]
    trials: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Copysets' scatter width
    #[arg(long, default_value_t = 4)]
    scatter_width: usize,
    /// Erasure-coding schemes to compare too, comma-separated (as 4+2,8+3):
    /// shards spread over zones, a chunk lost past M failed shards
    #[arg(long, default_value = "")]
    ec: String,
    /// Print the full results as JSON instead of the table (as every
    /// command's --json does)
    #[arg(long)]
    json: bool,
    /// Also write the full results as JSON to this file
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Draw P(loss), load balance and repair parallelism into this SVG file
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Simulate prefetch fan-out instead (meta's scheduler): completion
    /// time and per-node upload against group size and node failures
    #[arg(long)]
    prefetch: bool,
    /// Group sizes for --prefetch, comma-separated
    #[arg(long, default_value = "100,1000,10000")]
    prefetch_nodes: String,
    /// File size for --prefetch
    #[arg(long, default_value = "1GiB")]
    prefetch_size: String,
    /// Chunk size for --prefetch
    #[arg(long, default_value = "32MiB")]
    prefetch_chunk: String,
    /// Per-node bandwidth each way for --prefetch
    #[arg(long, default_value = "100MiB")]
    bandwidth: String,
    /// Shares of the group failing mid-job for --prefetch, comma-separated
    #[arg(long, default_value = "0,0.01,0.1")]
    fail: String,
}

fn list<T>(s: &str, what: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    let v = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(parse)
        .collect::<Result<Vec<T>>>()?;
    anyhow::ensure!(!v.is_empty(), "--{what} needs at least one value");
    Ok(v)
}

fn run_prefetch(a: &SimulateArgs) -> Result<()> {
    use cairn_sim::prefetch::{simulate_prefetch, PrefetchSimConfig};
    let sizes = list(&a.prefetch_nodes, "prefetch-nodes", |s| {
        s.parse::<usize>()
            .with_context(|| format!("--prefetch-nodes: {s:?} is not a node count"))
    })?;
    let fails = list(&a.fail, "fail", |s| {
        s.parse::<f64>()
            .ok()
            .filter(|f| (0.0..1.0).contains(f))
            .with_context(|| format!("--fail: {s:?} is not a share from 0 to 1"))
    })?;
    let mut results = Vec::new();
    eprintln!(
        "{:>7} {:>6} {:>9} {:>9} {:>10} {:>8} {:>12} {:>12} {:>9}",
        "nodes",
        "fail",
        "seconds",
        "ideal",
        "naive",
        "x ideal",
        "max upload",
        "mean upload",
        "complete"
    );
    for &n in &sizes {
        for &f in &fails {
            let cfg = PrefetchSimConfig {
                nodes: n,
                zones: a.zones,
                file_bytes: cairn_types::parse_size(&a.prefetch_size)?,
                chunk_bytes: cairn_types::parse_size(&a.prefetch_chunk)?,
                holders: a.rep as usize,
                bandwidth: cairn_types::parse_size(&a.bandwidth)? as f64,
                fail_fraction: f,
                fail_at: 0.5,
                seed: a.seed,
                fanout: Default::default(),
            };
            let r = simulate_prefetch(&cfg);
            eprintln!(
                "{:>7} {:>6} {:>9.1} {:>9.1} {:>10.1} {:>8.2} {:>12} {:>12} {:>9}",
                r.nodes,
                r.fail_fraction,
                r.seconds,
                r.ideal_seconds,
                r.naive_seconds,
                r.ratio_to_ideal,
                cairn_types::format_bytes(r.max_upload_bytes),
                cairn_types::format_bytes(r.mean_upload_bytes as u64),
                r.nodes_complete
            );
            results.push(r);
        }
    }
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(p) = &a.out {
        std::fs::write(p, json.clone() + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    if a.json || a.out.is_none() {
        println!("{json}");
    }
    Ok(())
}

pub fn run(a: SimulateArgs) -> Result<()> {
    if a.prefetch {
        return run_prefetch(&a);
    }
    let cfg = SimConfig {
        nodes: a.nodes,
        zones: a.zones,
        chunks: a.chunks,
        rep: a.rep,
        schemes: list(&a.schemes, "schemes", |s| Ok(PlaceScheme::parse(s)?))?,
        failures: list(&a.failures, "failures", |s| {
            s.parse::<usize>()
                .with_context(|| format!("--failures: {s:?} is not a number of nodes"))
        })?,
        trials: a.trials,
        seed: a.seed,
        scatter_width: a.scatter_width,
        ec: a
            .ec
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| e.parse().map_err(anyhow::Error::from))
            .collect::<Result<Vec<cairn_types::EcScheme>>>()?,
    };
    let report = simulate(&cfg)?;
    let json = serde_json::to_string_pretty(&report)?;
    match a.json {
        true => println!("{json}"),
        false => print!("{}", table(&report)),
    }
    if let Some(path) = &a.out {
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &a.plot {
        std::fs::write(path, cairn_sim::plot::svg(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A summary: per scheme, balance, repair peers and P(loss) for each k.
fn table(r: &SimReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} nodes in {} zone(s), {} chunks, rep={}, {} trials per k",
        r.nodes, r.zones, r.chunks, r.rep, r.trials
    );
    let ks: Vec<usize> = r.results[0].failures.iter().map(|f| f.k).collect();
    let _ = write!(
        out,
        "{:<9} {:>5} {:>7} {:>8} {:>7}   P(loss) for k failed:",
        "scheme", "space", "place", "max/mean", "repair"
    );
    for k in &ks {
        let _ = write!(out, " {:>9}", format!("k={k}"));
    }
    out.push('\n');
    for s in &r.results {
        let _ = write!(
            out,
            "{:<9} {:>4.2}x {:>6.1}s {:>8.3} {:>7.0}   {:<21}",
            s.scheme, s.storage_overhead, s.place_seconds, s.load.max_over_mean, s.repair.mean, ""
        );
        for f in &s.failures {
            let _ = write!(out, " {:>9.4}", f.p_loss);
        }
        out.push('\n');
        if let Some(cf) = s.failures.first().and_then(|f| f.closed_form_p_loss) {
            let _ = write!(out, "{:<9} {:>54}", "", "closed form:");
            let _ = write!(out, " {cf:>9.4}");
            for f in &s.failures[1..] {
                let _ = write!(out, " {:>9.4}", f.closed_form_p_loss.unwrap_or(cf));
            }
            out.push('\n');
        }
    }
    let _ = writeln!(out, "expected fraction of chunks lost:");
    for s in &r.results {
        let _ = write!(out, "{:<9} {:>54}", s.scheme, "");
        for f in &s.failures {
            let v = f.expected_lost_fraction;
            let v = if v == 0.0 {
                "0".to_string()
            } else {
                format!("{v:.2e}")
            };
            let _ = write!(out, " {v:>9}");
        }
        out.push('\n');
    }
    out
}
