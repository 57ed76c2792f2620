//! Placement cues on an in-process cluster of six nodes in three zones
//! (node i in zone z{i%3}, on host host-i): where the copies land.

use cairn_client::{Client, ClientConfig, PutOptions};
use cairn_testkit::{pattern, TestCluster};
use cairn_types::{split_path_cues, CairnPath, Cues, Extent, NodeId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(180), f)
        .await
        .expect("test exceeded its deadline")
}

async fn zoned_cluster(n: usize) -> TestCluster {
    TestCluster::start_full(
        n,
        |m| {
            m.default_rep = 3;
            m.chunk_size = 64 * 1024;
        },
        Arc::new(|i, sc| sc.zone = format!("z{}", i % 3)),
    )
    .await
}

/// Write `raw` (cues in its path) with 64 KiB chunks; its extents.
async fn put(cl: &Client, raw: &str, len: usize) -> Vec<Extent> {
    let (path, cues) = split_path_cues(raw).unwrap();
    let opts = PutOptions {
        chunk_size: Some(64 * 1024),
        cues,
        ..Default::default()
    };
    cl.put_bytes(&path, &pattern(len, len as u64), opts)
        .await
        .unwrap()
        .extents
}

/// zone and host of every node.
async fn layout(cl: &Client) -> HashMap<NodeId, (String, String)> {
    cl.cluster_status()
        .await
        .unwrap()
        .nodes
        .into_iter()
        .map(|n| (n.id, (n.zone, n.host)))
        .collect()
}

fn distinct(e: &Extent) -> usize {
    e.nodes.iter().collect::<BTreeSet<_>>().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_cues_spread_pin_and_split_copies() {
    deadline(async {
        let c = zoned_cluster(6).await;
        let cl = c.client().await;
        let nodes = layout(&cl).await;
        let zone = |n: &NodeId| nodes[n].0.clone();
        for e in put(&cl, "/.cue/place=spread,rep=3/spread", 40 * 65536).await {
            assert_eq!(distinct(&e), 3);
            let zones: BTreeSet<String> = e.nodes.iter().map(zone).collect();
            assert_eq!(zones.len(), 3, "spread over the three zones: {e:?}");
        }
        for e in put(&cl, "/.cue/site=z1,rep=2/pinned", 20 * 65536).await {
            assert_eq!(distinct(&e), 2);
            assert!(e.nodes.iter().all(|n| zone(n) == "z1"), "{e:?}");
        }
        for e in put(&cl, "/.cue/rep_sites=2,rep=3/split", 30 * 65536).await {
            let zones: BTreeSet<String> = e.nodes.iter().map(zone).collect();
            assert_eq!(zones.len(), 2, "exactly two zones: {e:?}");
        }
        // Two copies cannot stay in a zone of two nodes when three are asked.
        let (path, cues) = split_path_cues("/.cue/site=z1,rep=3/toomany").unwrap();
        let e = cl
            .put_bytes(
                &path,
                b"x",
                PutOptions {
                    cues,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(e.message.contains("z1"), "{e}");
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_puts_the_first_copy_on_the_writers_host() {
    deadline(async {
        let c = zoned_cluster(4).await;
        let nodes = layout(&c.client().await).await;
        let creds = cairn_meta::server::load_or_create_secret(&c.meta_cfg.data_dir)
            .unwrap()
            .client_credentials();
        for host in ["host-1", "host-3"] {
            let mut cfg = ClientConfig::new(vec![c.meta_addr()], creds.clone());
            cfg.host = Some(host.to_string());
            let cl = Client::connect(cfg).await.unwrap();
            let exts = put(
                &cl,
                &format!("/.cue/place=local,rep=2/from-{host}"),
                20 * 65536,
            )
            .await;
            for e in exts {
                assert_eq!(nodes[&e.nodes[0]].1, host, "{e:?}");
                assert_eq!(distinct(&e), 2);
            }
        }
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buddy_and_copyset_confine_chunks_to_few_node_sets() {
    deadline(async {
        let c = zoned_cluster(6).await;
        let cl = c.client().await;
        let sets = |exts: &[Extent]| -> BTreeSet<BTreeSet<NodeId>> {
            exts.iter()
                .map(|e| e.nodes.iter().copied().collect())
                .collect()
        };
        // Buddy: six nodes, rep 2 -> three fixed, disjoint sets.
        let buddy = sets(&put(&cl, "/.cue/place=buddy,rep=2/b", 60 * 65536).await);
        assert!(buddy.len() <= 3, "{buddy:?}");
        let all: Vec<NodeId> = buddy.iter().flatten().copied().collect();
        assert_eq!(
            all.len(),
            all.iter().collect::<BTreeSet<_>>().len(),
            "buddy sets are disjoint: {buddy:?}"
        );
        for s in &buddy {
            assert_eq!(s.len(), 2);
        }
        // Random: with 60 chunks over C(6,2) = 15 pairs, many more sets.
        let random = sets(&put(&cl, "/.cue/place=random,rep=2/r", 60 * 65536).await);
        assert!(random.len() > buddy.len(), "{random:?} vs {buddy:?}");
        // Copysets: fewer distinct sets than random placement uses.
        let copyset = sets(&put(&cl, "/.cue/place=copyset,rep=2/c", 60 * 65536).await);
        assert!(copyset.len() < random.len(), "{copyset:?} vs {random:?}");
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_copy_fills_nodes_evenly_and_keep_together_shares_one_set() {
    deadline(async {
        let c = zoned_cluster(5).await;
        let cl = c.client().await;
        let mut per_node: BTreeMap<NodeId, usize> = BTreeMap::new();
        for i in 0..4 {
            for e in put(&cl, &format!("/.cue/place=min_copy,rep=2/m{i}"), 25 * 65536).await {
                assert_eq!(distinct(&e), 2);
                for n in e.nodes {
                    *per_node.entry(n).or_default() += 1;
                }
            }
        }
        let (lo, hi) = (
            *per_node.values().min().unwrap(),
            *per_node.values().max().unwrap(),
        );
        assert_eq!(per_node.len(), 5, "{per_node:?}");
        assert!(hi - lo <= 2, "min_copy keeps counts level: {per_node:?}");

        // keep_together on a directory: every chunk of every file below it
        // on one node set.
        cl.mkdir(&p("/t/deep"), true).await.unwrap();
        cl.set_cues(
            &p("/t"),
            &Cues::parse("keep_together,rep=2").unwrap(),
            false,
        )
        .await
        .unwrap();
        let mut sets = BTreeSet::new();
        for f in ["/t/a", "/t/b", "/t/deep/c"] {
            for e in put(&cl, f, 10 * 65536).await {
                sets.insert(e.nodes.iter().copied().collect::<BTreeSet<_>>());
            }
        }
        assert_eq!(sets.len(), 1, "{sets:?}");
        c.shutdown().await;
    })
    .await
}

/// `n` nodes, rep 2, a dead node's copies re-created within seconds.
async fn repair_cluster(n: usize, node_tweak: cairn_testkit::NodeTweak) -> TestCluster {
    TestCluster::start_full(
        n,
        |m| {
            m.default_rep = 2;
            m.dead_after = Duration::from_secs(1);
            m.repair.interval = Duration::from_millis(200);
            m.repair.suspect_after = Duration::from_millis(500);
        },
        node_tweak,
    )
    .await
}

/// Repair re-creates a lost copy where the file's cues allow: with
/// `site=z1`, on the remaining node of zone z1, never elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_keeps_copies_where_the_cues_say() {
    deadline(async {
        let mut c = repair_cluster(6, Arc::new(|i, sc| sc.zone = format!("z{}", i % 2))).await;
        let cl = c.client().await;
        let nodes = layout(&cl).await;
        let exts = put(&cl, "/.cue/site=z1,rep=2/pinned", 8 * 65536).await;
        let victim = exts[0].nodes[0];
        let idx = c.node_index(victim).unwrap();
        c.stop_node(idx).await;
        let healed = cairn_testkit::wait_for(Duration::from_secs(60), || async {
            let i = cl.stat(&p("/pinned")).await.ok()?;
            i.extents
                .iter()
                .all(|e| e.nodes.len() == 2 && !e.nodes.contains(&victim))
                .then_some(i)
        })
        .await;
        for e in &healed.extents {
            assert_eq!(distinct(e), 2);
            assert!(e.nodes.iter().all(|n| nodes[n].0 == "z1"), "{e:?}");
        }
        c.shutdown().await;
    })
    .await
}

/// Repair keeps a keep_together file on one node set: every chunk that
/// lost the same copy gets the same replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_keeps_a_keep_together_file_on_one_set() {
    deadline(async {
        let mut c = repair_cluster(5, Arc::new(|_, _| {})).await;
        let cl = c.client().await;
        let exts = put(&cl, "/.cue/keep_together,rep=2/kt", 12 * 65536).await;
        let set = |e: &Extent| e.nodes.iter().copied().collect::<BTreeSet<_>>();
        let before: BTreeSet<_> = exts.iter().map(set).collect();
        assert_eq!(before.len(), 1, "{before:?}");
        let victim = exts[0].nodes[0];
        c.stop_node(c.node_index(victim).unwrap()).await;
        let healed = cairn_testkit::wait_for(Duration::from_secs(60), || async {
            let i = cl.stat(&p("/kt")).await.ok()?;
            i.extents
                .iter()
                .all(|e| e.nodes.len() == 2 && !e.nodes.contains(&victim))
                .then_some(i)
        })
        .await;
        let after: BTreeSet<_> = healed.extents.iter().map(set).collect();
        assert_eq!(after.len(), 1, "one set after repair: {after:?}");
        c.shutdown().await;
    })
    .await
}
