//! The fault scenarios of the lab, short versions for CI: 5 storage nodes,
//! rep=3, a concurrent workload of puts, overwrites, renames, deletes and
//! reads while one kind of fault is injected; then every acknowledged file
//! must read back byte-exact and every chunk must have its 3 good copies.

use cairn_lab::{Lab, LabConfig, WorkloadConfig};
use std::time::Duration;

const ACKS: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(120);

fn workload(prefix: &str) -> WorkloadConfig {
    WorkloadConfig {
        prefix: prefix.into(),
        ..WorkloadConfig::default()
    }
}

#[test]
fn kill_two_nodes_at_once_during_writes() {
    let mut lab = Lab::start(LabConfig::default());
    let w = lab.workload(workload("k2"));
    w.wait_acked(30, ACKS);
    lab.cluster.kill_node(1);
    lab.cluster.kill_node(3);
    // Writes go on with 3 of 5 nodes, before and after they are declared dead.
    w.run_for(Duration::from_secs(2), 10, ACKS);
    lab.cluster
        .wait_node_state(1, "dead", Duration::from_secs(60));
    lab.cluster
        .wait_node_state(3, "dead", Duration::from_secs(60));
    w.run_for(Duration::from_secs(3), 20, ACKS);
    let history = lab.stop(w);
    lab.check("kill 2 nodes", &history, SETTLE);

    // They come back: reconciled, still nothing lost or short.
    lab.cluster.restart_node(1);
    lab.cluster.restart_node(3);
    lab.cluster.wait_live_nodes(5, Duration::from_secs(60));
    lab.check("kill 2 nodes, after rejoin", &history, SETTLE);
}

#[test]
fn partition_one_node_past_the_grace_period_and_heal() {
    let mut lab = Lab::start(LabConfig::default());
    if !lab.cluster.can_partition() {
        eprintln!(
            "cairn-lab: skipped partition scenario: network namespaces need root and `ip netns`"
        );
        return;
    }
    let w = lab.workload(workload("part"));
    w.wait_acked(30, ACKS);
    lab.cluster.partition(2);
    w.run_for(Duration::from_secs(2), 10, ACKS);
    lab.cluster
        .wait_node_state(2, "dead", Duration::from_secs(60));
    // Repair runs while the node is away and writes go on.
    w.run_for(Duration::from_secs(3), 20, ACKS);
    lab.cluster.heal(2);
    lab.cluster.wait_live_nodes(5, Duration::from_secs(60));
    w.run_for(Duration::from_secs(1), 10, ACKS);
    lab.finish("partition past grace", w, SETTLE);
}

#[test]
fn kill_meta_during_writes_and_restart_it() {
    let mut lab = Lab::start(LabConfig::default());
    let w = lab.workload(workload("meta"));
    for _ in 0..2 {
        w.wait_acked(30, ACKS);
        lab.cluster.kill_meta();
        // Writes fail while meta is down; give them time to.
        w.run_for(Duration::from_millis(1500), 0, ACKS);
        lab.cluster.restart_meta();
        lab.cluster.wait_live_nodes(5, Duration::from_secs(60));
    }
    w.wait_acked(30, ACKS);
    lab.finish("kill meta", w, SETTLE);
}

#[test]
fn corrupt_one_copy_of_many_chunks() {
    let mut lab = Lab::start(LabConfig::default());
    let w = lab.workload(workload("rot"));
    w.wait_acked(30, ACKS);
    // The stable files are never rewritten: their chunks stay referenced,
    // so each corrupted copy must be found and replaced.
    let stable = lab.chunks_of(&w.stable_paths());
    let corrupted = lab.cluster.corrupt_one_copy_each(60, Some(&stable));
    assert!(
        corrupted.len() >= 16,
        "only {} chunks to corrupt",
        corrupted.len()
    );
    w.run_for(Duration::from_secs(1), 5, ACKS);
    let (_, report) = lab.finish("corrupt one copy", w, SETTLE);
    for (c, _) in &corrupted {
        assert!(report.chunk_list.iter().any(|x| x.0 == *c), "{c} checked");
    }
}

#[test]
fn fill_one_nodes_disk() {
    let mut lab = Lab::start(LabConfig::default());
    if !lab.cluster.can_fill_disk() {
        eprintln!("cairn-lab: skipped disk-full scenario: per-node tmpfs needs root");
        return;
    }
    let w = lab.workload(workload("full"));
    w.wait_acked(30, ACKS);
    lab.cluster.fill_disk(4, 4 << 20);
    lab.cluster
        .wait_node_state(4, "full", Duration::from_secs(60));
    // Writes continue on the other four.
    w.run_for(Duration::from_secs(3), 30, ACKS);
    let history = lab.stop(w);
    lab.check("disk full", &history, SETTLE);
    let s = lab.cluster.status().expect("status");
    assert_eq!(
        lab.cluster.node_state(&s, 4).as_deref(),
        Some("full"),
        "{s}"
    );
    // Space comes back: the node takes writes again.
    lab.cluster.unfill_disk(4);
    lab.cluster
        .wait_node_state(4, "live", Duration::from_secs(60));
}
