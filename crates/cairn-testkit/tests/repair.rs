//! Self-healing: repair after node loss, rejoin reconciliation, scrubbing,
//! drain, orphan collection and full disks, on an in-process cluster.

use cairn_client::PutOptions;
use cairn_proto::{ClusterStatus, NodeState};
use cairn_testkit::{fast_repair as fast, pattern, wait_for, TestCluster};
use cairn_types::{CairnPath, ErrorKind, NodeId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    cairn_testkit::init_logs();
    tokio::time::timeout(Duration::from_secs(180), f)
        .await
        .expect("test exceeded its deadline")
}

fn opts() -> PutOptions {
    PutOptions {
        chunk_size: Some(256 * 1024),
        ..Default::default()
    }
}

fn node(s: &ClusterStatus, id: NodeId) -> &cairn_proto::NodeStatus {
    s.nodes.iter().find(|n| n.id == id).unwrap()
}

/// Every chunk of `paths` has three copies on nodes in `allowed` states.
async fn fully_replicated(cl: &cairn_client::Client, paths: &[String]) -> Option<()> {
    let s = cl.cluster_status().await.ok()?;
    if s.under_replicated_chunks != 0 {
        return None;
    }
    for path in paths {
        let open = cl.locate(&p(path)).await.ok()?;
        for e in &open.inode.extents {
            let distinct: HashSet<_> = e.nodes.iter().collect();
            if distinct.len() != 3
                || e.nodes
                    .iter()
                    .any(|n| node(&s, *n).state != NodeState::Live)
            {
                return None;
            }
        }
    }
    Some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_node_is_repaired_and_reconciled_when_it_returns() {
    deadline(async {
        let mut c = TestCluster::start_with(4, fast).await;
        let cl = c.client().await;
        let mut paths = Vec::new();
        for i in 0..6 {
            let path = format!("/f{i}");
            cl.put_bytes(&p(&path), &pattern(700_000, i), opts())
                .await
                .unwrap();
            paths.push(path);
        }
        let dead = c.nodes[0].as_ref().unwrap().id;
        c.stop_node(0).await;
        let victim = c.node_addrs[0].clone();
        wait_for(Duration::from_secs(30), || async {
            let s = cl.cluster_status().await.ok()?;
            (node(&s, dead).state == NodeState::Dead).then_some(())
        })
        .await;
        // After the grace period the dead node's copies are re-created.
        wait_for(Duration::from_secs(60), || fully_replicated(&cl, &paths)).await;
        for (i, path) in paths.iter().enumerate() {
            assert_eq!(
                cl.get_bytes(&p(path)).await.unwrap(),
                pattern(700_000, i as u64)
            );
        }
        let s = cl.cluster_status().await.unwrap();
        assert!(s.repair.copies_done > 0);
        assert!(s
            .nodes
            .iter()
            .any(|n| n.addr == victim && n.state == NodeState::Dead));

        // The node comes back: its copies are now surplus and are swept.
        c.restart_node(0).await;
        let id = c.nodes[0].as_ref().unwrap().id;
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            let n = node(&s, id);
            (n.state == NodeState::Live && n.stats.chunks == 0).then_some(())
        })
        .await;
        for (i, path) in paths.iter().enumerate() {
            assert_eq!(
                cl.get_bytes(&p(path)).await.unwrap(),
                pattern(700_000, i as u64)
            );
        }
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrubber_finds_bit_rot_and_repair_replaces_the_copy() {
    deadline(async {
        let tweak: cairn_testkit::NodeTweak = Arc::new(|_, sc| {
            sc.scrub_rate = 256 << 20;
            sc.scrub_pause = Duration::from_millis(200);
        });
        let mut c = TestCluster::start_full(3, fast, tweak).await;
        let cl = c.client().await;
        let data = pattern(200_000, 5);
        let inode = cl.put_bytes(&p("/rot"), &data, opts()).await.unwrap();
        let chunk = inode.extents[0].chunk;
        let victim = inode.extents[0].nodes[1];
        let i = c.node_index(victim).unwrap();
        let seg = c.segment_files(i).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = bytes.len() - 500;
        bytes[at] ^= 0x40;
        std::fs::write(&seg, &bytes).unwrap();
        // Nobody reads the file: the scrubber finds the rot, repair replaces the copy.
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            let open = cl.locate(&p("/rot")).await.ok()?;
            let healed = s.repair.copies_done >= 1
                && s.under_replicated_chunks == 0
                && s.corrupt_replicas.is_empty()
                && open.inode.extents[0].nodes.len() == 3;
            healed.then_some(())
        })
        .await;
        // With no spare node, the copy was rewritten in place: the victim's
        // own copy now reads back intact.
        let open = cl.locate(&p("/rot")).await.unwrap();
        assert!(open.inode.extents[0].nodes.contains(&victim));
        assert_eq!(open.inode.extents[0].chunk, chunk);
        assert_eq!(cl.get_bytes(&p("/rot")).await.unwrap(), data);
        c.stop_node(c.node_index(inode.extents[0].nodes[0]).unwrap())
            .await;
        c.stop_node(c.node_index(inode.extents[0].nodes[2]).unwrap())
            .await;
        assert_eq!(cl.get_bytes(&p("/rot")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_node_can_be_stopped_without_loss() {
    deadline(async {
        let mut c = TestCluster::start_with(4, fast).await;
        let cl = c.client().await;
        let mut paths = Vec::new();
        for i in 0..5 {
            let path = format!("/d{i}");
            cl.put_bytes(&p(&path), &pattern(600_000, 10 + i), opts())
                .await
                .unwrap();
            paths.push(path);
        }
        let id = c.nodes[2].as_ref().unwrap().id;
        cl.drain(id, false).await.unwrap();
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            (node(&s, id).state == NodeState::Drained && s.under_replicated_chunks == 0)
                .then_some(())
        })
        .await;
        // New writes avoid the draining node.
        let i = cl
            .put_bytes(&p("/new"), &pattern(100_000, 1), opts())
            .await
            .unwrap();
        assert!(!i.extents[0].nodes.contains(&id));
        c.stop_node(2).await;
        for (i, path) in paths.iter().enumerate() {
            assert_eq!(
                cl.get_bytes(&p(path)).await.unwrap(),
                pattern(600_000, 10 + i as u64)
            );
        }
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_chunks_are_collected_and_cannot_be_committed_late() {
    deadline(async {
        let c = TestCluster::start_with(3, fast).await;
        let cl = c.client().await;
        cl.put_bytes(&p("/kept"), &pattern(100_000, 1), opts())
            .await
            .unwrap();
        // A writer that stores a chunk and dies before committing.
        let orphan = cl
            .write_chunk(&p("/lost"), bytes::Bytes::from(pattern(50_000, 2)), None)
            .await
            .unwrap();
        wait_for(Duration::from_secs(20), || async {
            let s = cl.cluster_status().await.ok()?;
            (s.nodes.iter().map(|n| n.stats.chunks).sum::<u64>() == 2 * 3).then_some(())
        })
        .await;
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            (s.repair.orphans_deleted >= 3
                && s.nodes.iter().map(|n| n.stats.chunks).sum::<u64>() == 3)
                .then_some(())
        })
        .await;
        // Committing it now would reference deleted bytes: refused.
        let e = cl
            .commit(&p("/lost"), vec![orphan], None, 0o644, 256 * 1024, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert_eq!(
            cl.get_bytes(&p("/kept")).await.unwrap(),
            pattern(100_000, 1)
        );
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_node_takes_no_new_chunks() {
    deadline(async {
        // Node 0 keeps more free space than any disk has: it is "full".
        let tweak: cairn_testkit::NodeTweak = Arc::new(|i, sc| {
            if i == 0 {
                sc.store.reserve_free = u64::MAX / 2;
            }
        });
        let c = TestCluster::start_full(4, fast, tweak).await;
        let cl = c.client().await;
        let full = c.nodes[0].as_ref().unwrap().id;
        wait_for(Duration::from_secs(20), || async {
            let s = cl.cluster_status().await.ok()?;
            (node(&s, full).state == NodeState::Full).then_some(())
        })
        .await;
        let s = cl.cluster_status().await.unwrap();
        assert!(node(&s, full)
            .stats
            .problem
            .as_deref()
            .unwrap_or("")
            .contains("disk full"));
        for i in 0..5 {
            let inode = cl
                .put_bytes(&p(&format!("/w{i}")), &pattern(300_000, i), opts())
                .await
                .unwrap();
            assert!(inode.extents.iter().all(|e| !e.nodes.contains(&full)));
        }
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_node_receives_chunks_by_rebalancing() {
    deadline(async {
        let mut c = TestCluster::start_with(3, |m| {
            fast(m);
            m.default_rep = 2;
            m.chunk_size = 256 * 1024;
        })
        .await;
        let cl = c.client().await;
        let mut paths = Vec::new();
        for i in 0..12 {
            let path = format!("/r{i}");
            cl.put_bytes(&p(&path), &pattern(1_000_000, 40 + i), opts())
                .await
                .unwrap();
            paths.push(path);
        }
        let i = c.add_node().await;
        let id = c.nodes[i].as_ref().unwrap().id;
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            let chunks: Vec<u64> = s.nodes.iter().map(|n| n.stats.chunks).collect();
            let newcomer = s.nodes.iter().find(|n| n.id == id)?.stats.chunks;
            // The newcomer holds about its share (within the planner's slack).
            (newcomer >= 8 && s.under_replicated_chunks == 0).then_some(chunks)
        })
        .await;
        for (k, path) in paths.iter().enumerate() {
            assert_eq!(
                cl.get_bytes(&p(path)).await.unwrap(),
                pattern(1_000_000, 40 + k as u64)
            );
        }
        c.shutdown().await;
    })
    .await
}

/// A node that comes back without copies files name there (its segments
/// lost, its identity kept) is found out by the orphan sweep, which
/// compares what files name on each node with what the node lists; repair
/// then puts the copies and shards back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_a_node_lost_quietly_are_found_and_replaced() {
    deadline(async {
        let mut c = TestCluster::start_with(3, fast).await;
        let cl = c.client().await;
        let data = pattern(600_000, 33);
        let rep = PutOptions {
            rep: Some(3),
            ..opts()
        };
        let striped = PutOptions {
            cues: cairn_types::Cues::parse("ec=2+1").unwrap(),
            ..opts()
        };
        cl.put_bytes(&p("/copies"), &data, rep).await.unwrap();
        cl.put_bytes(&p("/shards"), &data, striped).await.unwrap();
        let held = c.nodes_chunks().await[2].len();
        assert!(held >= 6, "node 2 holds a copy and a shard of each chunk");
        // Node 2 loses its segments while down and returns before meta
        // thinks it dead: its heartbeats report nothing wrong.
        c.stop_node(2).await;
        for seg in c.segment_files(2) {
            std::fs::remove_file(seg).unwrap();
        }
        c.restart_node(2).await;
        assert!(c.nodes_chunks().await[2].is_empty());
        wait_for(Duration::from_secs(90), || async {
            let s = cl.cluster_status().await.ok()?;
            let back = c.nodes_chunks().await[2].len();
            (s.under_replicated_chunks == 0 && back >= held).then_some(())
        })
        .await;
        // Everything is readable from node 2 alone plus one other for ec.
        c.stop_node(0).await;
        let fresh = c.client().await;
        assert_eq!(fresh.get_bytes(&p("/copies")).await.unwrap(), data);
        assert_eq!(fresh.get_bytes(&p("/shards")).await.unwrap(), data);
        c.stop_node(1).await;
        let fresh = c.client().await;
        assert_eq!(fresh.get_bytes(&p("/copies")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}
