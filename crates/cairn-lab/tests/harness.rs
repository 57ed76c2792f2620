//! The lab's own machinery, tested with what Cairn already does: the
//! network is made and removed (also a crashed run's leftovers), a cluster
//! starts on it, nodes are killed and restarted, the disk reader agrees with
//! the store, and the checker passes a clean run and catches a real loss.

use cairn_lab::{disk, model::Val, net::Network, Lab, LabConfig, NetMode, WorkloadConfig};
use std::process::Command;
use std::time::Duration;

fn netns_names() -> String {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn links() -> String {
    Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn network_is_removed_on_drop_and_leftovers_are_swept() {
    let net = Network::new(3);
    if net.mode != NetMode::Namespaces {
        eprintln!("cairn-lab: skipped: network namespaces need root and `ip netns` (and no CAIRN_LAB_LOOPBACK=1)");
        return;
    }
    let o = net.octet();
    let ns = format!("cairnlab-{o}-2");
    assert!(netns_names().contains(&ns));
    // The root namespace reaches a host through the bridge.
    let ping = Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "-o", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&ping.stdout).contains(&net.host(2).ip));
    drop(net);
    assert!(!netns_names().contains(&ns), "namespace removed on drop");
    assert!(
        !links().contains(&format!("clb-{o}:")),
        "bridge removed on drop"
    );

    // A crashed run: names of an octet whose owner pid is dead.
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let o = 255u8; // never handed out by the lab itself
    std::fs::create_dir_all("/run/cairn-lab").unwrap();
    std::fs::write(format!("/run/cairn-lab/{o}.pid"), dead_pid.to_string()).unwrap();
    let ok = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success());
    ok(&["netns", "add", &format!("cairnlab-{o}-0")]);
    ok(&["link", "add", &format!("clb-{o}"), "type", "bridge"]);
    ok(&[
        "link",
        "add",
        &format!("clv-{o}-0"),
        "type",
        "veth",
        "peer",
        "name",
        &format!("clp-{o}-0"),
    ]);
    cairn_lab::net::sweep_leftovers();
    assert!(!netns_names().contains(&format!("cairnlab-{o}-0")));
    let l = links();
    assert!(!l.contains(&format!("clb-{o}:")) && !l.contains(&format!("clv-{o}-0")));
    assert!(!std::path::Path::new(&format!("/run/cairn-lab/{o}.pid")).exists());
}

/// A run with node restarts inside the grace period: nothing to repair,
/// nothing lost; and the disk reader sees exactly the copies meta placed.
#[test]
fn clean_run_with_restarts_passes_and_disks_read_back() {
    let mut lab = Lab::start(LabConfig {
        dead_after: "30s".into(),
        ..LabConfig::default()
    });
    let w = lab.workload(WorkloadConfig {
        prefix: "h".into(),
        ..WorkloadConfig::default()
    });
    w.wait_acked(40, Duration::from_secs(120));
    lab.cluster.kill_node(0);
    lab.cluster.restart_node(0);
    lab.cluster.wait_live_nodes(5, Duration::from_secs(60));
    w.wait_acked(20, Duration::from_secs(120));
    let history = lab.stop(w);
    let report = lab.check("harness: restarts", &history, Duration::from_secs(120));
    assert!(report.present > 0, "{report}");

    // Every chunk meta lists is on disk, good, on rep nodes.
    assert!(lab.cluster.disk_shortfall(&report.chunk_list).is_none());
    // A flipped byte is seen by the disk reader.
    let (chunk, len, crc, _) = *report
        .chunk_list
        .iter()
        .find(|c| c.1 > 0)
        .expect("a non-empty chunk");
    let holder = (0..lab.cluster.node_count())
        .find(|&i| disk::live_chunks(lab.cluster.node_dir(i)).contains_key(&chunk))
        .expect("a node holds the chunk");
    let rec = disk::live_chunks(lab.cluster.node_dir(holder))[&chunk].clone();
    assert!(disk::copy_is_good(&rec, len, crc));
    disk::corrupt(&rec).unwrap();
    assert!(!disk::copy_is_good(&rec, len, crc));
    disk::corrupt(&rec).unwrap(); // the same flip again restores it
    assert!(disk::copy_is_good(&rec, len, crc));
}

/// The checker is not vacuous: a file deleted behind its back is a loss.
#[test]
fn checker_flags_a_lost_acknowledged_file() {
    let lab = Lab::start(LabConfig {
        nodes: 3,
        ..LabConfig::default()
    });
    let w = lab.workload(WorkloadConfig {
        tasks: 2,
        prefix: "c".into(),
        ..WorkloadConfig::default()
    });
    w.wait_acked(20, Duration::from_secs(120));
    let history = lab.stop(w);
    // Find a path certainly present and remove it out of band.
    let (path, _) = history
        .models
        .iter()
        .flat_map(|m| m.paths.iter())
        .find(|(_, s)| s.possible.len() == 1 && !s.possible.contains(&Val::Absent))
        .expect("a path with one acknowledged version");
    lab.cluster.cli(&["rm", path]).expect("rm");
    let report = cairn_lab::checker::check(
        "harness: sabotage",
        &lab.cluster,
        &lab.rt,
        &history,
        Duration::from_secs(60),
    );
    println!("{report}");
    assert_eq!(report.lost, 1, "{:?}", report.problems);
    assert!(
        report.problems[0].contains("missing"),
        "{:?}",
        report.problems
    );
}
