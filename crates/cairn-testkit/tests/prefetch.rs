//! Fleet distribution on in-process clusters: groups, prefetch jobs, the
//! `hot=` cue, cache copies (local reads, eviction, garbage collection) and
//! `hotspot` reads through the reader's node. Node i runs on host `host-i`.

use cairn_client::{Client, PutOptions};
use cairn_proto::{ClusterStatus, NodeStatus};
use cairn_storage::{ChunkStore, StoreOptions};
use cairn_testkit::{pattern, wait_for, TestCluster};
use cairn_types::{CairnPath, Cues, Extent, NodeId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const CHUNK: u64 = 256 * 1024;

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(240), f)
        .await
        .expect("test exceeded its deadline")
}

/// `n` nodes; those `in_group` picks are in group `actor`.
async fn cluster(
    n: usize,
    in_group: fn(usize) -> bool,
    meta: impl FnOnce(&mut cairn_meta::server::MetaConfig),
    node: impl Fn(usize, &mut cairn_storage::StorageConfig) + Send + Sync + 'static,
) -> TestCluster {
    TestCluster::start_full(
        n,
        |m| {
            m.default_rep = 2;
            m.chunk_size = CHUNK;
            meta(m);
        },
        Arc::new(move |i, sc| {
            if in_group(i) {
                sc.groups = vec!["actor".into()];
            }
            node(i, sc);
        }),
    )
    .await
}

async fn put(cl: &Client, path: &str, len: usize, seed: u64, cues: &str) -> Vec<Extent> {
    if let Some((parent, _)) = p(path).split_last() {
        cl.mkdir(&parent, true).await.unwrap();
    }
    let opts = PutOptions {
        chunk_size: Some(CHUNK),
        cues: Cues::parse(cues).unwrap(),
        ..Default::default()
    };
    cl.put_bytes(&p(path), &pattern(len, seed), opts)
        .await
        .unwrap()
        .extents
}

async fn status(cl: &Client) -> ClusterStatus {
    cl.cluster_status().await.unwrap()
}

fn by_host(s: &ClusterStatus, host: &str) -> NodeStatus {
    s.nodes.iter().find(|n| n.host == host).unwrap().clone()
}

/// Served bytes per node, from heartbeats every live node sent after this
/// call began (so they count every read finished before it).
async fn served(cl: &Client) -> BTreeMap<NodeId, u64> {
    let since = cairn_types::now_ms();
    wait_for(Duration::from_secs(30), || {
        let cl = cl.clone();
        async move {
            let s = status(&cl).await;
            s.nodes
                .iter()
                .filter(|n| n.state == cairn_proto::NodeState::Live)
                .all(|n| n.last_heartbeat_ms > since)
                .then(|| {
                    s.nodes
                        .iter()
                        .map(|n| (n.id, n.stats.served_bytes))
                        .collect()
                })
        }
    })
    .await
}

async fn prefetch_and_wait(cl: &Client, paths: &[&str]) -> cairn_proto::PrefetchJobStatus {
    let paths: Vec<CairnPath> = paths.iter().map(|s| p(s)).collect();
    let jobs = cl.prefetch(&paths, "actor", false).await.unwrap();
    let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
    cl.prefetch_wait(&ids, |_| {}).await.unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefetch_gives_every_group_node_every_chunk_and_reads_stay_local() {
    deadline(async {
        // Nodes 2..=6 are the group; files go to nodes 0 and 1 (site).
        let mut c = cluster(
            7,
            |i| i >= 2,
            |_| {},
            |i, sc| {
                sc.zone = if i < 2 {
                    "store".into()
                } else {
                    "fleet".into()
                }
            },
        )
        .await;
        let cl = c.client().await;
        let groups = cl.groups().await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].nodes.len(), 5);
        let data = pattern(5 * CHUNK as usize + 1000, 3);
        let ext = put(&cl, "/maps/tiles.bin", data.len(), 3, "site=store").await;
        assert_eq!(ext.len(), 6);
        let st = prefetch_and_wait(&cl, &["/maps"]).await;
        assert_eq!(st.state, "done", "{st:?}");
        assert_eq!((st.nodes, st.nodes_done), (5, 5));
        assert_eq!(st.copies_done, 30);
        assert_eq!(status(&cl).await.cache_copies, 30);
        let s = status(&cl).await;
        assert!(s.workers.iter().any(|w| w.name == "prefetch"));
        assert!(s.workers.iter().any(|w| w.name == "repair"));
        // A reader on host-4 reads its own node's copy: no other node serves.
        let before = served(&cl).await;
        let local = c
            .client_with(|cfg| {
                cfg.host = Some("host-4".into());
                cfg.cache_bytes = 0;
            })
            .await;
        assert_eq!(local.get_bytes(&p("/maps/tiles.bin")).await.unwrap(), data);
        let after = served(&cl).await;
        let me = by_host(&status(&cl).await, "host-4").id;
        for (n, b) in &after {
            let delta = b - before[n];
            if *n == me {
                assert!(delta >= data.len() as u64, "local node served {delta}");
            } else {
                assert_eq!(delta, 0, "node {n} served a read meant to stay local");
            }
        }
        // Durability is unchanged: still two durable copies, on the store zone.
        let again = cl.stat(&p("/maps/tiles.bin")).await.unwrap();
        assert!(again.extents.iter().all(|e| e.nodes.len() == 2));
        assert_eq!(s.under_replicated_chunks, 0);
        // Bad input changes nothing.
        let e = cl
            .prefetch(&[p("/maps")], "nobody", false)
            .await
            .unwrap_err();
        assert_eq!(e.kind, cairn_types::ErrorKind::NotFound, "{e}");
        let e = cl
            .prefetch(&[p("/no/such")], "actor", false)
            .await
            .unwrap_err();
        assert_eq!(e.kind, cairn_types::ErrorKind::NotFound, "{e}");
        // Every copy is intact on disk.
        let members: Vec<usize> = (2..7).collect();
        for &i in &members {
            c.stop_node(i).await;
        }
        for &i in &members {
            let store =
                ChunkStore::open(&c.node_dir(i).join("chunks"), StoreOptions::default()).unwrap();
            for e in &ext {
                let info = store.info(e.chunk).expect("cache copy on disk");
                assert_eq!(info.crc_summary, e.crc);
                store.verify(e.chunk).unwrap();
            }
        }
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_cue_prefetches_each_version_and_gc_takes_the_cache_copies() {
    deadline(async {
        let c = cluster(
            4,
            |i| i >= 1,
            |m| m.gc_delay = Duration::from_millis(300),
            |_, _| {},
        )
        .await;
        let cl = c.client().await;
        cl.mkdir(&p("/ckpt"), true).await.unwrap();
        cl.set_cues(&p("/ckpt"), &Cues::parse("hot=actor,rep=1").unwrap(), false)
            .await
            .unwrap();
        let v1 = put(&cl, "/ckpt/model.pt", 3 * CHUNK as usize, 1, "").await;
        // Every member without the durable copy gets a cache copy.
        let members = cl.groups().await.unwrap().remove(0).nodes;
        assert_eq!(members.len(), 3);
        let want = |ext: &[Extent]| -> u64 {
            ext.iter()
                .map(|e| 3 - e.nodes.iter().filter(|n| members.contains(n)).count() as u64)
                .sum::<u64>()
        };
        let w1 = want(&v1);
        wait_for(Duration::from_secs(60), || {
            let cl = cl.clone();
            async move {
                let s = status(&cl).await;
                (s.cache_copies == w1 && cl.prefetch_status(&[]).await.unwrap()[0].state == "done")
                    .then_some(())
            }
        })
        .await;
        // A new version replaces the job; the old chunks and their cache
        // copies are collected.
        let v2 = put(&cl, "/ckpt/model.pt", 2 * CHUNK as usize, 2, "").await;
        let w2 = want(&v2);
        wait_for(Duration::from_secs(60), || {
            let cl = cl.clone();
            async move {
                let s = status(&cl).await;
                let jobs = cl.prefetch_status(&[]).await.unwrap();
                let cached: u64 = s.nodes.iter().map(|n| n.stats.cache_bytes).sum();
                (s.cache_copies == w2
                    && jobs.len() == 1
                    && jobs[0].state == "done"
                    && cached == w2 * CHUNK)
                    .then_some(())
            }
        })
        .await;
        let holders: Vec<NodeId> = status(&cl).await.nodes.iter().map(|n| n.id).collect();
        assert_eq!(holders.len(), 4);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_eviction_keeps_durable_copies_and_evict_drops_cache_copies() {
    deadline(async {
        // Node 0 holds 3 chunks of cache copies at most.
        let mut c = cluster(
            3,
            |i| i <= 1,
            |_| {},
            |i, sc| {
                if i == 0 {
                    sc.cache_capacity = Some(3 * CHUNK);
                }
                if i == 2 {
                    sc.zone = "far".into();
                }
            },
        )
        .await;
        let cl = c.client_with(|cfg| cfg.host = Some("host-0".into())).await;
        let durable = pattern(2 * CHUNK as usize, 9);
        put(&cl, "/a", durable.len(), 9, "rep=1,place=local").await;
        let n0 = by_host(&status(&cl).await, "host-0").id;
        // B and C live on node 2 only; node 0 can cache 3 of their 4 chunks.
        put(&cl, "/b", 2 * CHUNK as usize, 10, "rep=1,site=far").await;
        put(&cl, "/c", 2 * CHUNK as usize, 11, "rep=1,site=far").await;
        let st = prefetch_and_wait(&cl, &["/b"]).await;
        assert_eq!(st.state, "done", "{st:?}");
        let st = prefetch_and_wait(&cl, &["/c"]).await;
        assert_eq!(st.state, "done", "{st:?}");
        // Node 0 evicted a cache copy of /b for /c; its durable /a stays.
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = by_host(&status(&cl).await, "host-0");
            if s.stats.cache_bytes <= 3 * CHUNK && s.stats.cache_bytes > 0 {
                break;
            }
            assert!(std::time::Instant::now() < end, "{s:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.stop_node(1).await;
        c.stop_node(2).await;
        let fresh = c.client_with(|cfg| cfg.cache_bytes = 0).await;
        assert_eq!(fresh.get_bytes(&p("/a")).await.unwrap(), durable);
        c.restart_node(1).await;
        c.restart_node(2).await;
        c.wait_live(3).await;
        // Evict drops the group's cache copies, never /a's durable one.
        let ev = cl.prefetch(&[p("/c")], "actor", true).await.unwrap();
        assert_eq!(ev[0].state, "evicted");
        assert!(ev[0].copies_done >= 1, "{:?}", ev[0]);
        let cached_c: usize = {
            let open = cl.locate(&p("/c")).await.unwrap();
            let ext = &open.inode.extents;
            open.read_order
                .iter()
                .zip(ext)
                .map(|(o, e)| o.iter().filter(|n| !e.nodes.contains(n)).count())
                .sum()
        };
        let jobs = cl.prefetch_status(&[]).await.unwrap();
        assert_eq!(cached_c, 0, "cache copies of /c left: {ev:?} {jobs:?}");
        assert_eq!(fresh.get_bytes(&p("/a")).await.unwrap(), durable);
        let _ = n0;
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_lost_mid_prefetch_is_skipped_then_filled_in() {
    deadline(async {
        // Throttled nodes so the job takes a while.
        let mut c = cluster(
            5,
            |i| i >= 1,
            |m| {
                m.dead_after = Duration::from_secs(2);
                m.repair.suspect_after = Duration::from_millis(800);
            },
            |i, sc| {
                sc.throttle = 4 << 20;
                if i == 0 {
                    sc.zone = "store".into();
                }
            },
        )
        .await;
        let cl = c.client().await;
        let data = pattern(8 * CHUNK as usize, 5);
        // The only durable copies are on node 0, outside the group.
        let ext = put(&cl, "/run/shard", data.len(), 5, "rep=1,site=store").await;
        let victim = 3;
        let victim_id = c.nodes[victim].as_ref().unwrap().id;
        let jobs = cl.prefetch(&[p("/run")], "actor", false).await.unwrap();
        c.stop_node(victim).await;
        let mut last = None;
        let st = tokio::time::timeout(
            Duration::from_secs(60),
            cl.prefetch_wait(&[jobs[0].id], |s| last = Some(s.to_vec())),
        )
        .await
        .unwrap_or_else(|_| panic!("the job did not finish: {last:?}"))
        .unwrap()
        .remove(0);
        assert_eq!(st.state, "done", "{st:?}");
        assert!(st.nodes >= 3, "{st:?}");
        // Back, it is filled in.
        c.restart_node(victim).await;
        wait_for(Duration::from_secs(90), || {
            let cl = cl.clone();
            let ext = ext.clone();
            async move {
                let open = cl.locate(&p("/run/shard")).await.unwrap();
                let all = ext.iter().enumerate().all(|(i, _)| {
                    open.read_order
                        .get(i)
                        .is_some_and(|o| o.contains(&victim_id))
                });
                all.then_some(())
            }
        })
        .await;
        let st = cl.prefetch_status(&[jobs[0].id]).await.unwrap().remove(0);
        let st = if st.state == "running" {
            cl.prefetch_wait(&[jobs[0].id], |_| {})
                .await
                .unwrap()
                .remove(0)
        } else {
            st
        };
        assert_eq!(st.state, "done", "{st:?}");
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hotspot_readers_read_through_their_node_and_spare_the_durable_copies() {
    deadline(async {
        // The file lives on node 0 (zone store); readers are elsewhere.
        let c = cluster(
            6,
            |_| false,
            |_| {},
            |i, sc| {
                if i == 0 {
                    sc.zone = "store".into();
                }
            },
        )
        .await;
        let cl = c.client().await;
        let data = pattern(4 * CHUNK as usize, 8);
        let ext = put(&cl, "/hot/weights", data.len(), 8, "rep=1,site=store").await;
        let durable: Vec<NodeId> = ext.iter().map(|e| e.nodes[0]).collect();
        let before = served(&cl).await;
        // Ten readers on each of five other hosts, all at once.
        let hosts: Vec<String> = (1..6).map(|i| format!("host-{i}")).collect();
        let cues = Cues::parse("hotspot").unwrap();
        let mut tasks = Vec::new();
        for h in &hosts {
            for _ in 0..10 {
                let r = c
                    .client_with(|cfg| {
                        cfg.host = Some(h.clone());
                        cfg.cache_bytes = 0;
                    })
                    .await;
                let (cues, want) = (cues.clone(), data.clone());
                tasks.push(tokio::spawn(async move {
                    let f = r.open_cued(&p("/hot/weights"), &cues).await.unwrap();
                    let got = f.read_at(0, want.len() as u64).await.unwrap();
                    assert!(got == want, "a hotspot read returned other bytes");
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let after = served(&cl).await;
        let from_durable: u64 = durable
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .iter()
            .map(|n| after[n] - before[n])
            .sum();
        // 50 readers on 5 hosts: the durable holders serve each host's node
        // at most once per chunk, not each reader.
        assert!(
            from_durable <= 5 * data.len() as u64,
            "durable holders served {from_durable} bytes for a {} byte file",
            data.len()
        );
        assert!(status(&cl).await.cache_copies >= 4);
        c.shutdown().await;
    })
    .await
}
