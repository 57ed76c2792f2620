//! `cairn simulate --prefetch`: meta's real fan-out scheduler
//! ([`cairn_meta::fanout`]) over a simulated group of thousands of nodes.
//!
//! The model: every node uploads and downloads at `bandwidth` bytes per
//! second each way; a transfer runs at `bandwidth / source_slots` (a
//! holder's upload is shared by its slots, a destination's download by its
//! `dest_slots` chunks at once, the same number by default), so one chunk
//! takes `chunk_bytes * source_slots / bandwidth` seconds. Events run in
//! time order; the scheduler is asked for new transfers after each one.
//! Optionally a fraction of the nodes fails at one moment mid-job: their
//! transfers fail as the scheduler would see it (a dead source is retried
//! elsewhere, a dead destination skipped).
//!
//! The naive way to compare with: every node pulls the file from the
//! durable copies, whose upload bandwidth they share.

use cairn_meta::fanout::{Failure, Fanout, FanoutConfig, Transfer};
use cairn_types::NodeId;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

#[derive(Clone, Debug)]
pub struct PrefetchSimConfig {
    pub nodes: usize,
    pub zones: usize,
    pub file_bytes: u64,
    pub chunk_bytes: u64,
    /// Durable copies of each chunk (on nodes outside the group).
    pub holders: usize,
    pub bandwidth: f64,
    /// Share of the group's nodes that fail at once, at `fail_at` of the
    /// ideal time (file size over bandwidth).
    pub fail_fraction: f64,
    pub fail_at: f64,
    pub seed: u64,
    pub fanout: FanoutConfig,
}

#[derive(Clone, Debug, Serialize)]
pub struct PrefetchSimResult {
    pub nodes: usize,
    pub fail_fraction: f64,
    pub failed_nodes: usize,
    /// Seconds until every surviving node held every chunk.
    pub seconds: f64,
    /// The floor: one node receiving the file at full bandwidth.
    pub ideal_seconds: f64,
    pub naive_seconds: f64,
    /// `seconds / ideal_seconds`.
    pub ratio_to_ideal: f64,
    pub nodes_complete: u64,
    pub copies: u64,
    pub max_upload_bytes: u64,
    pub mean_upload_bytes: f64,
    /// The most uploads any node ran at once (the cap is `source_slots`).
    pub max_concurrent_uploads: usize,
    pub source_slots: usize,
}

pub fn simulate_prefetch(cfg: &PrefetchSimConfig) -> PrefetchSimResult {
    let chunks = cfg.file_bytes.div_ceil(cfg.chunk_bytes).max(1) as usize;
    let mut fan = Fanout::new(chunks, cfg.fanout.clone());
    let zone = |i: usize| format!("z{}", i % cfg.zones.max(1));
    // Holders are nodes 0..holders, the group nodes holders..holders+nodes.
    for h in 0..cfg.holders {
        for c in 0..chunks {
            fan.add_holder(NodeId(h as u64), &zone(h), c);
        }
    }
    let first = cfg.holders;
    for i in first..first + cfg.nodes {
        fan.add_dest(NodeId(i as u64), &zone(i));
    }
    let rate = cfg.bandwidth / cfg.fanout.source_slots.max(1) as f64;
    let chunk_secs = cfg.chunk_bytes as f64 / rate;
    let ideal = cfg.file_bytes as f64 / cfg.bandwidth;
    let fail_time = ideal * cfg.fail_at;
    let mut dead: HashSet<NodeId> = HashSet::new();
    let mut failed_yet = cfg.fail_fraction <= 0.0;
    let mut rng = fastrand::Rng::with_seed(cfg.seed);
    // (end time in ns, sequence, transfer)
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut transfers: Vec<Transfer> = Vec::new();
    let mut seq = 0u64;
    let mut now = 0.0f64;
    let mut last_done = 0.0f64;
    let mut events = 0u64;
    loop {
        // As meta's worker does each round: waiters a wake-up missed.
        events += 1;
        if events.is_multiple_of(4096) {
            fan.poke();
        }
        let mut started = fan.assign();
        if started.is_empty() && heap.is_empty() {
            // As meta's worker does between rounds: any waiter missed.
            fan.poke();
            started = fan.assign();
            if started.is_empty() {
                break;
            }
        }
        for t in started {
            let end = now + chunk_secs;
            transfers.push(t);
            heap.push(Reverse(((end * 1e9) as u64, seq, transfers.len() - 1)));
            seq += 1;
        }
        let Some(Reverse((end_ns, _, idx))) = heap.pop() else {
            break;
        };
        let end = end_ns as f64 / 1e9;
        if !failed_yet && end >= fail_time {
            failed_yet = true;
            let n = ((cfg.nodes as f64) * cfg.fail_fraction).round() as usize;
            while dead.len() < n.min(cfg.nodes) {
                let i = first + rng.usize(..cfg.nodes);
                let id = NodeId(i as u64);
                if dead.insert(id) {
                    fan.set_alive(id, false);
                }
            }
        }
        now = end;
        let t = transfers[idx];
        if dead.contains(&t.dst) {
            fan.failed(&t, Failure::Destination("dead".into()));
        } else if dead.contains(&t.src) {
            fan.failed(&t, Failure::Source);
        } else {
            fan.done(&t);
            last_done = now;
        }
    }
    let p = fan.progress();
    let uploads = fan.upload_counts();
    let max_up = uploads.iter().map(|u| u.1).max().unwrap_or(0) * cfg.chunk_bytes;
    let mean_up = uploads.iter().map(|u| u.1).sum::<u64>() as f64 * cfg.chunk_bytes as f64
        / uploads.len().max(1) as f64;
    let naive = ideal.max(
        cfg.nodes as f64 * cfg.file_bytes as f64 / (cfg.holders.max(1) as f64 * cfg.bandwidth),
    );
    PrefetchSimResult {
        nodes: cfg.nodes,
        fail_fraction: cfg.fail_fraction,
        failed_nodes: dead.len(),
        seconds: last_done,
        ideal_seconds: ideal,
        naive_seconds: naive,
        ratio_to_ideal: last_done / ideal,
        nodes_complete: p.dests_done,
        copies: fan.copies_done,
        max_upload_bytes: max_up,
        mean_upload_bytes: mean_up,
        max_concurrent_uploads: uploads.iter().map(|u| u.2).max().unwrap_or(0),
        source_slots: cfg.fanout.source_slots,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(nodes: usize, fail: f64) -> PrefetchSimConfig {
        PrefetchSimConfig {
            nodes,
            zones: 4,
            file_bytes: 1 << 30,
            chunk_bytes: 32 << 20,
            holders: 3,
            bandwidth: 100.0 * (1 << 20) as f64,
            fail_fraction: fail,
            fail_at: 0.5,
            seed: 1,
            fanout: FanoutConfig::default(),
        }
    }

    #[test]
    fn completion_time_does_not_grow_with_the_group() {
        let small = simulate_prefetch(&cfg(100, 0.0));
        let large = simulate_prefetch(&cfg(2000, 0.0));
        assert_eq!(large.nodes_complete, 2000);
        assert_eq!(large.copies, 2000 * 32);
        assert!(large.max_concurrent_uploads <= 2);
        // A tree: depth grows with log(n), the chunk pipeline hides it.
        assert!(large.seconds < small.seconds * 1.5, "{small:?} {large:?}");
        assert!(large.ratio_to_ideal < 2.5, "{large:?}");
        assert!(large.naive_seconds > 50.0 * large.seconds);
    }

    #[test]
    fn failed_nodes_are_skipped_and_the_rest_complete() {
        let r = simulate_prefetch(&cfg(500, 0.1));
        assert_eq!(r.failed_nodes, 50);
        assert_eq!(r.nodes_complete, 450);
    }
}
