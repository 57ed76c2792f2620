//! The simulation: place chunks with the real placer, then fail nodes.

use cairn_meta::placement::{NodeInfo, PlaceRequest, Placer, PlacerConfig};
use cairn_types::{Cues, EcScheme, Error, NodeId, PlaceScheme, Result};
use serde::Serialize;
use std::time::Instant;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    /// Nodes are dealt round-robin into this many zones.
    pub zones: usize,
    pub chunks: usize,
    pub rep: u8,
    pub schemes: Vec<PlaceScheme>,
    /// Numbers of simultaneous node failures to try.
    pub failures: Vec<usize>,
    /// Failure draws per number of failures.
    pub trials: usize,
    pub seed: u64,
    /// Copysets' scatter width.
    pub scatter_width: usize,
    /// Erasure-coding schemes to compare too, each placed as `ec=K+M`
    /// is (K+M shards spread over zones); a chunk is lost when more
    /// than M of its shards are.
    pub ec: Vec<EcScheme>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1000,
            zones: 1,
            chunks: 100_000,
            rep: 3,
            schemes: vec![
                PlaceScheme::Random,
                PlaceScheme::Buddy,
                PlaceScheme::MinCopy,
                PlaceScheme::Copyset,
                PlaceScheme::Spread,
            ],
            failures: vec![2, 3, 5, 10, 20, 50],
            trials: 2000,
            seed: 1,
            scatter_width: PlacerConfig::default().scatter_width,
            ec: Vec::new(),
        }
    }
}

/// How one simulated layout keeps its chunks: `rep` copies placed by
/// `scheme`, or shards.
#[derive(Clone, Copy, Debug)]
enum Redundancy {
    Rep(u8, PlaceScheme),
    Ec(EcScheme),
}

impl Redundancy {
    /// Nodes each chunk occupies.
    fn width(self) -> usize {
        match self {
            Redundancy::Rep(r, _) => r as usize,
            Redundancy::Ec(e) => e.shards(),
        }
    }

    /// Of its nodes, how many a chunk survives losing.
    fn tolerance(self) -> usize {
        match self {
            Redundancy::Rep(r, _) => r as usize - 1,
            Redundancy::Ec(e) => e.m as usize,
        }
    }

    fn scheme(self) -> PlaceScheme {
        match self {
            Redundancy::Rep(_, s) => s,
            Redundancy::Ec(_) => PlaceScheme::Spread,
        }
    }

    fn name(self) -> String {
        match self {
            Redundancy::Rep(_, s) => s.name().to_string(),
            Redundancy::Ec(e) => format!("ec={e}"),
        }
    }

    /// Bytes stored per byte of data.
    fn overhead(self) -> f64 {
        match self {
            Redundancy::Rep(r, _) => r as f64,
            Redundancy::Ec(e) => e.shards() as f64 / e.k as f64,
        }
    }

    /// A seed salt distinct per layout.
    fn salt(self) -> u64 {
        match self {
            Redundancy::Rep(_, s) => s as u64 + 1,
            Redundancy::Ec(e) => 0x100 + ((e.k as u64) << 8) + e.m as u64,
        }
    }
}

/// Chunks per node.
#[derive(Clone, Debug, Serialize)]
pub struct LoadBalance {
    pub mean: f64,
    pub max: u64,
    pub min: u64,
    pub max_over_mean: f64,
    pub min_over_mean: f64,
}

/// Distinct other nodes holding copies of one node's chunks, over the
/// nodes that hold any.
#[derive(Clone, Debug, Serialize)]
pub struct RepairParallelism {
    pub mean: f64,
    pub min: usize,
    pub max: usize,
}

/// Outcome of `k` simultaneous failures.
#[derive(Clone, Debug, Serialize)]
pub struct FailureResult {
    pub k: usize,
    pub trials: usize,
    /// Fraction of trials in which some chunk lost every copy.
    pub p_loss: f64,
    /// Standard error of `p_loss`.
    pub p_loss_stderr: f64,
    /// Mean fraction of all chunks lost.
    pub expected_lost_fraction: f64,
    pub max_lost_chunks: u64,
    /// For `random`: `1 - (1 - C(k,rep)/C(n,rep))^chunks`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_form_p_loss: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SchemeResult {
    /// A placement scheme (with `rep` copies), or `ec=K+M`.
    pub scheme: String,
    /// Bytes stored per byte of data: `rep`, or (K+M)/K.
    pub storage_overhead: f64,
    /// Wall time to place every chunk.
    pub place_seconds: f64,
    pub load: LoadBalance,
    pub repair: RepairParallelism,
    pub failures: Vec<FailureResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    pub nodes: usize,
    pub zones: usize,
    pub chunks: usize,
    pub rep: u8,
    pub trials: usize,
    pub seed: u64,
    pub scatter_width: usize,
    pub results: Vec<SchemeResult>,
}

/// Probability that some chunk loses all copies when `k` of `n` nodes fail
/// and each of `chunks` chunks sits on a uniform random `rep`-subset.
pub fn closed_form_random(n: usize, rep: usize, chunks: usize, k: usize) -> f64 {
    if k < rep {
        return 0.0;
    }
    // C(k,rep)/C(n,rep) = prod (k-i)/(n-i).
    let p: f64 = (0..rep).map(|i| (k - i) as f64 / (n - i) as f64).product();
    -((chunks as f64) * (-p).ln_1p()).exp_m1()
}

fn check(cfg: &SimConfig) -> Result<()> {
    let rep = cfg.rep as usize;
    if rep == 0 || cfg.nodes < rep {
        return Err(Error::invalid(format!(
            "rep={} needs at least that many nodes (have --nodes {})",
            cfg.rep, cfg.nodes
        )));
    }
    if cfg.zones == 0 || cfg.zones > cfg.nodes {
        return Err(Error::invalid(format!(
            "--zones {} must be from 1 to the number of nodes ({})",
            cfg.zones, cfg.nodes
        )));
    }
    if cfg.nodes > u32::MAX as usize / 2 || cfg.chunks == 0 || cfg.trials == 0 {
        return Err(Error::invalid(
            "--nodes, --chunks and --trials must be positive (and nodes below 2^31)",
        ));
    }
    if let Some(e) = cfg.ec.iter().find(|e| e.shards() > cfg.nodes) {
        return Err(Error::invalid(format!(
            "ec={e} needs at least {} nodes (have --nodes {})",
            e.shards(),
            cfg.nodes
        )));
    }
    if let Some(k) = cfg.failures.iter().find(|k| **k > cfg.nodes) {
        return Err(Error::invalid(format!(
            "cannot fail {k} of {} nodes",
            cfg.nodes
        )));
    }
    Ok(())
}

/// Run every scheme of `cfg`; deterministic for `cfg.seed`.
pub fn simulate(cfg: &SimConfig) -> Result<SimReport> {
    check(cfg)?;
    let results = cfg
        .schemes
        .iter()
        .map(|s| Redundancy::Rep(cfg.rep, *s))
        .chain(cfg.ec.iter().map(|e| Redundancy::Ec(*e)))
        .map(|r| simulate_scheme(cfg, r))
        .collect::<Result<Vec<_>>>()?;
    Ok(SimReport {
        nodes: cfg.nodes,
        zones: cfg.zones,
        chunks: cfg.chunks,
        rep: cfg.rep,
        trials: cfg.trials,
        seed: cfg.seed,
        scatter_width: cfg.scatter_width,
        results,
    })
}

/// Chunk `c`'s copies are `copies[c*rep..(c+1)*rep]` (node indices); node
/// `v`'s chunks are `chunks[start[v]..start[v+1]]`.
struct Layout {
    rep: usize,
    copies: Vec<u32>,
    start: Vec<usize>,
    chunks: Vec<u32>,
}

impl Layout {
    fn new(n: usize, rep: usize, copies: Vec<u32>) -> Layout {
        let mut start = vec![0usize; n + 1];
        for &v in &copies {
            start[v as usize + 1] += 1;
        }
        for v in 0..n {
            start[v + 1] += start[v];
        }
        let mut fill = start.clone();
        let mut chunks = vec![0u32; copies.len()];
        for (i, &v) in copies.iter().enumerate() {
            chunks[fill[v as usize]] = (i / rep) as u32;
            fill[v as usize] += 1;
        }
        Layout {
            rep,
            copies,
            start,
            chunks,
        }
    }

    fn of(&self, v: u32) -> &[u32] {
        &self.chunks[self.start[v as usize]..self.start[v as usize + 1]]
    }

    fn copies(&self, c: u32) -> &[u32] {
        &self.copies[c as usize * self.rep..(c as usize + 1) * self.rep]
    }
}

fn seed_for(seed: u64, a: u64) -> u64 {
    let mut x = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

fn place_all(cfg: &SimConfig, red: Redundancy) -> Result<Vec<u32>> {
    let scheme = red.scheme();
    let n = cfg.nodes;
    let nodes: Vec<NodeInfo> = (0..n)
        .map(|i| NodeInfo {
            id: NodeId(i as u64 + 1),
            zone: format!("z{}", i % cfg.zones),
            host: format!("h{i}"),
            join_seq: i as u64,
            used: 0,
            free: u64::MAX / 4,
            accepting: true,
        })
        .collect();
    let hosts: Vec<String> = nodes.iter().map(|n| n.host.clone()).collect();
    let mut placer = Placer::new(
        nodes,
        PlacerConfig {
            scatter_width: cfg.scatter_width,
            seed: cfg.seed,
        },
    );
    let rep = red.width();
    let cues = Cues {
        rep: Some(rep as u8),
        place: Some(scheme),
        ..Cues::default()
    };
    let mut rng = fastrand::Rng::with_seed(seed_for(cfg.seed, red.salt()));
    let mut copies = Vec::with_capacity(cfg.chunks * rep);
    for _ in 0..cfg.chunks {
        // For `local`, each chunk is written from some node's host.
        let writer = (scheme == PlaceScheme::Local).then(|| hosts[rng.usize(..n)].as_str());
        let req = PlaceRequest {
            cues: &cues,
            default_rep: rep as u8,
            want: rep,
            have: &[],
            exclude: &[],
            len: 1,
            writer_host: writer,
            together_key: None,
        };
        for id in placer.place(&req, &mut rng)? {
            copies.push((id.0 - 1) as u32);
            placer.record(id, 1);
        }
    }
    Ok(copies)
}

fn simulate_scheme(cfg: &SimConfig, red: Redundancy) -> Result<SchemeResult> {
    let n = cfg.nodes;
    let rep = red.width();
    let t0 = Instant::now();
    let layout = Layout::new(n, rep, place_all(cfg, red)?);
    let place_seconds = t0.elapsed().as_secs_f64();

    let counts: Vec<u64> = (0..n)
        .map(|v| (layout.start[v + 1] - layout.start[v]) as u64)
        .collect();
    let mean = (cfg.chunks * rep) as f64 / n as f64;
    let (max, min) = (
        counts.iter().copied().max().unwrap_or(0),
        counts.iter().copied().min().unwrap_or(0),
    );
    let load = LoadBalance {
        mean,
        max,
        min,
        max_over_mean: max as f64 / mean,
        min_over_mean: min as f64 / mean,
    };

    let mut stamp = vec![u32::MAX; n];
    let (mut sum, mut holders, mut rmin, mut rmax) = (0usize, 0usize, usize::MAX, 0usize);
    for v in 0..n as u32 {
        let mine = layout.of(v);
        if mine.is_empty() {
            continue;
        }
        let mut peers = 0;
        for &c in mine {
            for &u in layout.copies(c) {
                if u != v && stamp[u as usize] != v {
                    stamp[u as usize] = v;
                    peers += 1;
                }
            }
        }
        sum += peers;
        holders += 1;
        rmin = rmin.min(peers);
        rmax = rmax.max(peers);
    }
    let repair = RepairParallelism {
        mean: sum as f64 / holders.max(1) as f64,
        min: if holders == 0 { 0 } else { rmin },
        max: rmax,
    };

    let failures = cfg
        .failures
        .iter()
        .map(|&k| fail(cfg, &layout, red, k))
        .collect();
    Ok(SchemeResult {
        scheme: red.name(),
        storage_overhead: red.overhead(),
        place_seconds,
        load,
        repair,
        failures,
    })
}

/// `cfg.trials` draws of `k` failed nodes; the draws depend on the seed and
/// `k` only, so every scheme faces the same failures.
fn fail(cfg: &SimConfig, layout: &Layout, red: Redundancy, k: usize) -> FailureResult {
    let tolerance = red.tolerance();
    let n = cfg.nodes;
    let mut rng = fastrand::Rng::with_seed(seed_for(cfg.seed, 1000 + k as u64));
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut failed = vec![false; n];
    let (mut hit, mut lost_total, mut lost_max) = (0usize, 0u64, 0u64);
    for _ in 0..cfg.trials {
        // Partial Fisher-Yates: the first k of `perm` are a uniform k-subset.
        for i in 0..k {
            let j = rng.usize(i..n);
            perm.swap(i, j);
            failed[perm[i] as usize] = true;
        }
        let mut lost = 0u64;
        for &v in &perm[..k] {
            for &c in layout.of(v) {
                let cs = layout.copies(c);
                // Counted once, at its first failed copy.
                let down: Vec<&u32> = cs.iter().filter(|u| failed[**u as usize]).collect();
                if down.len() > tolerance && *down[0] == v {
                    lost += 1;
                }
            }
        }
        for &v in &perm[..k] {
            failed[v as usize] = false;
        }
        hit += usize::from(lost > 0);
        lost_total += lost;
        lost_max = lost_max.max(lost);
    }
    let trials = cfg.trials as f64;
    let p = hit as f64 / trials;
    FailureResult {
        k,
        trials: cfg.trials,
        p_loss: p,
        p_loss_stderr: (p * (1.0 - p) / trials).sqrt(),
        expected_lost_fraction: lost_total as f64 / trials / cfg.chunks as f64,
        max_lost_chunks: lost_max,
        closed_form_p_loss: matches!(red, Redundancy::Rep(_, PlaceScheme::Random))
            .then(|| closed_form_random(n, cfg.rep as usize, cfg.chunks, k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(schemes: Vec<PlaceScheme>) -> SimConfig {
        SimConfig {
            nodes: 12,
            zones: 3,
            chunks: 20,
            rep: 3,
            schemes,
            failures: vec![3, 4, 5, 6],
            trials: 20_000,
            seed: 7,
            scatter_width: 4,
            ec: Vec::new(),
        }
    }

    #[test]
    fn erasure_coding_survives_m_failures_at_a_fraction_of_the_space() {
        let mut cfg = small(vec![PlaceScheme::Random]);
        cfg.failures = vec![2, 3];
        cfg.trials = 2000;
        cfg.ec = vec![EcScheme::new(4, 2).unwrap(), EcScheme::new(2, 1).unwrap()];
        let r = simulate(&cfg).unwrap();
        let (rep3, ec42, ec21) = (&r.results[0], &r.results[1], &r.results[2]);
        assert_eq!(
            (ec42.scheme.as_str(), ec42.storage_overhead),
            ("ec=4+2", 1.5)
        );
        assert_eq!(rep3.storage_overhead, 3.0);
        // Two failures: 4+2 and rep=3 lose nothing; 2+1 (one parity) can.
        assert_eq!(ec42.failures[0].p_loss, 0.0);
        assert_eq!(rep3.failures[0].p_loss, 0.0);
        assert!(ec21.failures[0].p_loss > 0.0);
        // Three: a chunk of 4+2 spans 6 of 12 nodes, so more are exposed.
        assert!(ec42.failures[1].p_loss > 0.0);
        assert!(ec42.failures[1].closed_form_p_loss.is_none());
        // Shards are spread: every node holds about as many.
        assert!(ec42.load.max_over_mean < 1.5, "{:?}", ec42.load);
        cfg.ec = vec![EcScheme::new(10, 4).unwrap()];
        assert!(simulate(&cfg).is_err(), "14 shards on 12 nodes");
    }

    #[test]
    fn random_matches_the_closed_form() {
        // Each run places a fresh layout; average over layouts so the
        // comparison is with the closed form's expectation over layouts.
        let mut sum = [0.0f64; 4];
        let layouts = 40;
        for s in 0..layouts {
            let mut cfg = small(vec![PlaceScheme::Random]);
            cfg.seed = s;
            cfg.trials = 2000;
            let r = simulate(&cfg).unwrap();
            for (i, f) in r.results[0].failures.iter().enumerate() {
                sum[i] += f.p_loss / layouts as f64;
            }
        }
        for (i, k) in [3, 4, 5, 6].into_iter().enumerate() {
            let want = closed_form_random(12, 3, 20, k);
            // 80,000 draws in all: a standard error under 0.002, but the
            // layouts add variance; 0.03 is many standard errors.
            assert!(
                (sum[i] - want).abs() < 0.03,
                "k={k}: simulated {} vs closed form {want}",
                sum[i]
            );
        }
    }

    #[test]
    fn buddy_and_copyset_lose_data_less_often_than_random() {
        let r = simulate(&small(vec![
            PlaceScheme::Random,
            PlaceScheme::Buddy,
            PlaceScheme::Copyset,
        ]))
        .unwrap();
        let p = |s: usize, k: usize| r.results[s].failures[k].p_loss;
        for k in 0..4 {
            assert!(p(1, k) < p(0, k), "buddy {} vs random {}", p(1, k), p(0, k));
            assert!(
                p(2, k) < p(0, k),
                "copyset {} vs random {}",
                p(2, k),
                p(0, k)
            );
        }
        // Buddy sets of 3 on 12 nodes: each node repairs from its 2 buddies.
        assert_eq!(r.results[1].repair.max, 2);
        assert!(r.results[0].repair.mean > r.results[2].repair.mean);
    }

    #[test]
    fn min_copy_balances_load_exactly() {
        let mut cfg = small(vec![PlaceScheme::MinCopy]);
        cfg.chunks = 40;
        let r = simulate(&cfg).unwrap();
        assert_eq!(r.results[0].load.max, 10);
        assert_eq!(r.results[0].load.min, 10);
    }

    #[test]
    fn the_closed_form_is_right_on_a_hand_case() {
        // 4 nodes, rep 2, 1 chunk, 2 failures: 1 of C(4,2)=6 pairs.
        assert!((closed_form_random(4, 2, 1, 2) - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(closed_form_random(10, 3, 5, 2), 0.0);
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut cfg = small(vec![PlaceScheme::Random]);
        cfg.failures = vec![13];
        assert!(simulate(&cfg).is_err());
        cfg.failures = vec![1];
        cfg.nodes = 2;
        assert!(simulate(&cfg).is_err());
    }
}
