//! The soak: the scenarios' workload with random faults, one after another,
//! for `CAIRN_LAB_SOAK_SECS` seconds (20 by default, what CI runs):
//!
//! ```sh
//! cargo build -p cairn-cli && CAIRN_LAB_SOAK_SECS=600 cargo test -p cairn-lab --test soak -- --nocapture
//! ```
//!
//! `CAIRN_LAB_SEED` replays a run's choice of faults (the seed is printed).

use cairn_lab::{Lab, LabConfig, WorkloadConfig};
use std::time::{Duration, Instant};

#[test]
fn soak_with_random_faults() {
    let secs: u64 = std::env::var("CAIRN_LAB_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CAIRN_LAB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("cairn-lab: soak for {secs}s, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut lab = Lab::start(LabConfig::default());
    let nodes = lab.cluster.node_count();
    let w = lab.workload(WorkloadConfig {
        prefix: "soak".into(),
        ..WorkloadConfig::default()
    });
    let acks = Duration::from_secs(120);
    let live = Duration::from_secs(60);
    w.wait_acked(20, acks);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let hold = Duration::from_millis(rng.u64(500..3000));
        match rng.u32(0..6) {
            0 => {
                let i = rng.usize(..nodes);
                lab.cluster.kill_node(i);
                w.run_for(hold, 0, acks);
                lab.cluster.restart_node(i);
            }
            1 => {
                let i = rng.usize(..nodes);
                let j = (i + 1 + rng.usize(..nodes - 1)) % nodes;
                lab.cluster.kill_node(i);
                lab.cluster.kill_node(j);
                w.run_for(hold, 0, acks);
                lab.cluster.restart_node(i);
                lab.cluster.restart_node(j);
            }
            2 if lab.cluster.can_partition() => {
                let i = rng.usize(..nodes);
                lab.cluster.partition(i);
                w.run_for(hold * 2, 0, acks);
                lab.cluster.heal(i);
            }
            3 => {
                lab.cluster.kill_meta();
                w.run_for(hold / 2, 0, acks);
                lab.cluster.restart_meta();
            }
            4 => {
                lab.cluster.corrupt_one_copy_each(rng.usize(5..20), None);
            }
            _ => {
                // A quiet spell: writes must flow.
                w.run_for(hold, 10, acks);
            }
        }
        lab.cluster.wait_live_nodes(nodes, live);
        w.wait_acked(5, acks);
    }
    lab.finish(
        &format!("soak {secs}s seed {seed}"),
        w,
        Duration::from_secs(180),
    );
}
