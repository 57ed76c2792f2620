//! Erasure coding (`ec=K+M`) on an in-process cluster: shards on distinct
//! nodes, healthy and degraded reads, rebuilds after node loss and bit
//! rot, and clear refusals.

use cairn_client::PutOptions;
use cairn_testkit::{fast_repair as fast, pattern, wait_for, TestCluster};
use cairn_types::{CairnPath, Cues, ErrorKind, NodeId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    cairn_testkit::init_logs();
    tokio::time::timeout(Duration::from_secs(240), f)
        .await
        .expect("test exceeded its deadline")
}

fn opts() -> PutOptions {
    PutOptions {
        chunk_size: Some(256 * 1024),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_files_read_whole_ranged_and_degraded_and_are_rebuilt() {
    deadline(async {
        let mut c = TestCluster::start_with(8, fast).await;
        let cl = c.client().await;
        cl.mkdir(&p("/cold"), false).await.unwrap();
        cl.set_cues(&p("/cold"), &Cues::parse("ec=4+2").unwrap(), false)
            .await
            .unwrap();
        // Three whole chunks and a short last one.
        let data = pattern(3 * 256 * 1024 + 70_001, 3);
        let f = cl.put_bytes(&p("/cold/log"), &data, opts()).await.unwrap();
        assert_eq!(
            (f.cues.ec.map(|e| e.to_string()), f.cues.rep),
            (Some("4+2".into()), None)
        );
        assert_eq!(f.extents.len(), 4);
        let mut stored = 0;
        for e in &f.extents {
            let ec = e.ec.as_ref().expect("erasure-coded");
            let distinct: HashSet<&NodeId> = e.nodes.iter().collect();
            assert_eq!((e.nodes.len(), distinct.len(), ec.crcs.len()), (6, 6, 6));
            stored += e.stored_bytes();
        }
        // Storage is (K+M)/K of the data, up to shard alignment.
        let want = data.len() as u64 * 6 / 4;
        assert!(
            stored >= want && stored < want + 4 * 6 * 64,
            "{stored} vs {want}"
        );
        assert_eq!(cl.get_bytes(&p("/cold/log")).await.unwrap(), data);
        // Ranged reads touch only the shards holding the range.
        let r = cl.open(&p("/cold/log")).await.unwrap();
        for (off, len) in [
            (0u64, 10u64),
            (65_530, 20),
            (262_140, 9),
            (300_000, 200_000),
            (830_000, 50_000),
        ] {
            let got = r.read_at(off, len).await.unwrap();
            let end = ((off + len) as usize).min(data.len());
            assert_eq!(got, &data[off as usize..end], "{off}+{len}");
        }
        // M = 2 nodes of the first chunk die: reads go degraded.
        let first = f.extents[0].nodes.clone();
        let (a, b) = (first[0], first[3]);
        c.stop_node(c.node_index(a).unwrap()).await;
        c.stop_node(c.node_index(b).unwrap()).await;
        let fresh = c.client().await;
        assert_eq!(fresh.get_bytes(&p("/cold/log")).await.unwrap(), data);
        // Repair rebuilds the lost shards on the six nodes left.
        wait_for(Duration::from_secs(90), || async {
            let s = cl.cluster_status().await.ok()?;
            let open = cl.locate(&p("/cold/log")).await.ok()?;
            let moved = open
                .inode
                .extents
                .iter()
                .all(|e| !e.nodes.contains(&a) && !e.nodes.contains(&b));
            (s.under_replicated_chunks == 0 && moved && s.repair.copies_done >= 2).then_some(())
        })
        .await;
        // Two more of the original nodes go: still readable from the rebuilt shards.
        let open = cl.locate(&p("/cold/log")).await.unwrap();
        let rebuilt = &open.inode.extents[0].nodes;
        assert!(rebuilt.iter().collect::<HashSet<_>>().len() == 6);
        for victim in [rebuilt[1], rebuilt[2]] {
            c.stop_node(c.node_index(victim).unwrap()).await;
        }
        let fresh = c.client().await;
        assert_eq!(fresh.get_bytes(&p("/cold/log")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotten_shard_is_read_around_and_rebuilt_in_place() {
    deadline(async {
        let tweak: cairn_testkit::NodeTweak = Arc::new(|_, sc| {
            sc.scrub_rate = 256 << 20;
            sc.scrub_pause = Duration::from_millis(200);
        });
        let mut c = TestCluster::start_full(3, fast, tweak).await;
        let cl = c.client().await;
        let data = pattern(200_000, 9);
        let o = PutOptions {
            cues: Cues::parse("ec=2+1").unwrap(),
            ..opts()
        };
        let f = cl.put_bytes(&p("/rot"), &data, o).await.unwrap();
        // One stripe, one shard per node: rot data shard 0 on its node.
        let victim = f.extents[0].nodes[0];
        let i = c.node_index(victim).unwrap();
        let seg = c.segment_files(i).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = bytes.len() - 500;
        bytes[at] ^= 0x40;
        std::fs::write(&seg, &bytes).unwrap();
        let fresh = c.client().await;
        assert_eq!(fresh.get_bytes(&p("/rot")).await.unwrap(), data);
        // The reader reported it (or the scrubber found it): rebuilt where it was.
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            (s.repair.copies_done >= 1
                && s.corrupt_replicas.is_empty()
                && s.under_replicated_chunks == 0)
                .then_some(())
        })
        .await;
        let open = cl.locate(&p("/rot")).await.unwrap();
        assert_eq!(open.inode.extents[0].nodes, f.extents[0].nodes);
        // The rebuilt shard is good: with another node gone, K = 2 remain.
        c.stop_node(c.node_index(f.extents[0].nodes[2]).unwrap())
            .await;
        let fresh = c.client().await;
        assert_eq!(fresh.get_bytes(&p("/rot")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_refuses_what_it_cannot_do_and_changes_nothing() {
    deadline(async {
        let c = TestCluster::start_with(3, fast).await;
        let cl = c.client().await;
        let o = PutOptions {
            cues: Cues::parse("ec=4+2").unwrap(),
            ..opts()
        };
        let e = cl
            .put_bytes(&p("/wide"), &pattern(100_000, 1), o)
            .await
            .unwrap_err();
        assert!(
            e.message.contains("needs 6 storage nodes") && e.message.contains("3 are live"),
            "{e}"
        );
        assert_eq!(
            cl.stat(&p("/wide")).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        cl.mkdir(&p("/d"), false).await.unwrap();
        for bad in ["ec=3+0", "ec=40+10", "ec=4"] {
            let e = Cues::parse(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidInput, "{bad}: {e}");
        }
        // A cue list naming both: the later wins, never both.
        let both = Cues::parse("rep=2,ec=2+1").unwrap();
        let d = cl.set_cues(&p("/d"), &both, false).await.unwrap();
        assert_eq!(
            (d.cues.rep, d.cues.ec.map(|e| e.to_string())),
            (None, Some("2+1".into()))
        );
        // Small enough for 3 nodes: written as 2+1, even within the inline limit.
        let f = cl
            .put_bytes(&p("/d/f"), &pattern(100_000, 2), opts())
            .await
            .unwrap();
        assert!(f.extents[0].ec.is_some());
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_its_shards_on() {
    deadline(async {
        let mut c = TestCluster::start_with(4, fast).await;
        let cl = c.client().await;
        let o = PutOptions {
            cues: Cues::parse("ec=2+1").unwrap(),
            ..opts()
        };
        let data = pattern(600_000, 4);
        let f = cl.put_bytes(&p("/d"), &data, o).await.unwrap();
        let id = f.extents[0].nodes[1];
        cl.drain(id, false).await.unwrap();
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            let drained = s
                .nodes
                .iter()
                .any(|n| n.id == id && n.state == cairn_proto::NodeState::Drained);
            (drained && s.under_replicated_chunks == 0).then_some(())
        })
        .await;
        let open = cl.locate(&p("/d")).await.unwrap();
        for (old, new) in f.extents.iter().zip(&open.inode.extents) {
            assert!(!new.nodes.contains(&id));
            // Shards stay in their places, except the drained node's.
            for (a, b) in old.nodes.iter().zip(&new.nodes) {
                assert!(a == b || *a == id, "{old:?} -> {new:?}");
            }
        }
        c.stop_node(c.node_index(id).unwrap()).await;
        // Another node goes too: K = 2 shards of every chunk are left.
        let other = open.inode.extents[0].nodes[0];
        c.stop_node(c.node_index(other).unwrap()).await;
        let fresh = c.client().await;
        assert_eq!(fresh.get_bytes(&p("/d")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_ec_files_leave_no_shard_behind() {
    deadline(async {
        let c = TestCluster::start_with(3, fast).await;
        let cl = c.client().await;
        let o = PutOptions {
            cues: Cues::parse("ec=2+1").unwrap(),
            ..opts()
        };
        for i in 0..16 {
            cl.put_bytes(&p(&format!("/g{i}")), &pattern(1 << 20, i), o.clone())
                .await
                .unwrap();
        }
        // 16 MiB as 2+1: 8 MiB of shards on each node.
        for n in 0..3 {
            assert!(c.disk_bytes(n) >= 8 << 20, "node {n}: {}", c.disk_bytes(n));
        }
        for i in 0..16 {
            cl.remove(&p(&format!("/g{i}")), false).await.unwrap();
        }
        // Every shard is collected; compaction drops the sealed segments,
        // leaving at most the active one.
        wait_for(Duration::from_secs(60), || async {
            (0..3).all(|n| c.disk_bytes(n) <= 5 << 20).then_some(())
        })
        .await;
        c.shutdown().await;
    })
    .await
}

/// `sync=K+1` (here 3 of ec=2+2): a write is acknowledged without the
/// shard of a node that is down but not yet noticed; the writer reports
/// the shard missing, and repair rebuilds it where it belongs once the
/// node is back. Without the cue the same write cannot be placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_k_plus_one_acknowledges_without_a_silent_node() {
    deadline(async {
        // Meta keeps placing on a silent node for a minute.
        let mut c = TestCluster::start_with(4, |m| {
            fast(m);
            m.repair.suspect_after = Duration::from_secs(60);
            m.dead_after = Duration::from_secs(120);
        })
        .await;
        let cl = c.client().await;
        cl.mkdir(&p("/fleet"), false).await.unwrap();
        cl.set_cues(&p("/fleet"), &Cues::parse("ec=2+2").unwrap(), false)
            .await
            .unwrap();
        let silent = cl
            .cluster_status()
            .await
            .unwrap()
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|id| c.node_index(*id) == Some(3))
            .unwrap();
        c.stop_node(3).await;
        let data = pattern(3 * 256 * 1024 + 1234, 21);
        // All four shards wanted: the dead node's is refused, and there is
        // no fifth node to place it on.
        let e = cl
            .put_bytes(&p("/fleet/all"), &data, opts())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
        assert!(
            cl.stat(&p("/fleet/all")).await.is_err(),
            "nothing committed"
        );
        // Three of four suffice with sync=3.
        let o = PutOptions {
            cues: Cues::parse("sync=3").unwrap(),
            ..opts()
        };
        let f = cl.put_bytes(&p("/fleet/log"), &data, o).await.unwrap();
        assert_eq!(f.extents.len(), 4);
        assert!(f.extents.iter().all(|e| e.nodes.contains(&silent)));
        assert_eq!(cl.get_bytes(&p("/fleet/log")).await.unwrap(), data);
        // The missing shards count as under-replicated chunks...
        let s = cl.cluster_status().await.unwrap();
        assert_eq!(s.under_replicated_chunks, 4, "{s:?}");
        // ...and are rebuilt in place once their node is back.
        c.restart_node(3).await;
        wait_for(Duration::from_secs(90), || async {
            let s = cl.cluster_status().await.ok()?;
            (s.under_replicated_chunks == 0 && s.repair.copies_done >= 4).then_some(())
        })
        .await;
        let open = cl.locate(&p("/fleet/log")).await.unwrap();
        assert_eq!(open.inode.extents, f.extents, "rebuilt where they belong");
        // With two other nodes gone, K = 2 shards remain, one the rebuilt.
        c.stop_node(0).await;
        c.stop_node(1).await;
        let fresh = c.client().await;
        assert_eq!(fresh.get_bytes(&p("/fleet/log")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}
