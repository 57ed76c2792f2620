//! The remote tier against real, independent S3 servers: moto's server
//! (from PyPI) and the S3 gateway of a second Cairn cluster. Offload,
//! eviction of the local copies, read-through, a corrupt and a vanished
//! object, recall, garbage collection, `tier verify`, a store that goes
//! away, and credentials the store refuses.

use cairn_client::{Client, PutOptions};
use cairn_meta::tiering::TierConfig;
use cairn_testkit::moto::MotoServer;
use cairn_testkit::{fast_repair, pattern, wait_for, TestCluster};
use cairn_tier::{RemoteStore, TierSpec, Tiers};
use cairn_types::{CairnPath, ChunkId, Cues, ErrorKind, Inode};
use std::sync::Arc;
use std::time::Duration;

const CHUNK: u64 = 256 * 1024;

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
        chunk_size: Some(CHUNK),
        ..Default::default()
    }
}

fn spec(name: &str, bucket: &str, endpoint: &str, creds: &std::path::Path) -> TierSpec {
    format!(
        "{name}=s3://{bucket}/cairn-tier?endpoint={endpoint}&region=us-east-1&creds={}",
        creds.display()
    )
    .parse()
    .unwrap()
}

/// A cluster of 3 nodes (rep 3) whose meta and nodes know `tiers`, each
/// node keeping at most one chunk of cache copies.
async fn cluster(tiers: Tiers) -> TestCluster {
    let node_tiers = tiers.clone();
    TestCluster::start_full(
        3,
        move |m| {
            fast_repair(m);
            m.tier = TierConfig {
                tiers,
                interval: Duration::from_millis(100),
                rate: 0,
            };
        },
        Arc::new(move |_, sc| {
            sc.tiers = node_tiers.clone();
            sc.cache_capacity = Some(CHUNK);
        }),
    )
    .await
}

/// A moto server with `bucket`, the store "cold" in it (credentials in a
/// temp dir, returned to keep), and a [`cluster`] that knows the store.
async fn on_moto(bucket: &str) -> (MotoServer, tempfile::TempDir, RemoteStore, TestCluster) {
    let moto = MotoServer::start(bucket);
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::write(&creds, "access_key_id=test\nsecret_access_key=test\n").unwrap();
    let s = spec("cold", &moto.bucket, &moto.endpoint, &creds);
    let store = RemoteStore::new(s.clone()).unwrap();
    let c = cluster(Tiers::new(vec![s]).unwrap()).await;
    (moto, dir, store, c)
}

async fn offloaded(cl: &Client, path: &str) -> Inode {
    let path = p(path);
    wait_for(Duration::from_secs(60), || async {
        let i = cl.stat(&path).await.ok()?;
        (!i.extents.is_empty() && i.extents.iter().all(|e| e.remote.is_some())).then_some(i)
    })
    .await
}

/// Cache bytes meta counts for the chunks of store `tier`.
async fn cached(cl: &Client, tier: &str) -> (u64, u64) {
    let t = cl.tier_status().await.unwrap();
    let t = t.iter().find(|t| t.name == tier).unwrap();
    (t.bytes, t.cached_bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_read_through_recall_gc_and_verify_against_moto() {
    deadline(async {
        let (mut moto, _dir, store, c) = on_moto("cold-bucket").await;
        let cl = c.client().await;
        cl.mkdir(&p("/cold"), false).await.unwrap();
        cl.set_cues(
            &p("/cold"),
            &Cues::parse("tier=remote:cold").unwrap(),
            false,
        )
        .await
        .unwrap();
        let (a, b) = (pattern(CHUNK as usize, 1), pattern(CHUNK as usize - 999, 2));
        cl.put_bytes(&p("/cold/a"), &a, opts()).await.unwrap();
        cl.put_bytes(&p("/cold/b"), &b, opts()).await.unwrap();
        let fa = offloaded(&cl, "/cold/a").await;
        let fb = offloaded(&cl, "/cold/b").await;
        let (ca, cb) = (fa.extents[0].chunk, fb.extents[0].chunk);
        assert!(fa.extents[0].nodes.is_empty(), "no durable copies are left");
        // The objects are the chunks' bytes exactly.
        let (objects, foreign) = store.list().await.unwrap();
        assert_eq!(objects.get(&ca), Some(&(a.len() as u64)));
        assert_eq!(objects.get(&cb), Some(&(b.len() as u64)));
        assert!(foreign.is_empty(), "{foreign:?}");
        assert_eq!(&store.get(ca).await.unwrap()[..], &a[..]);
        // Each node keeps one chunk of cache copies: of the two, one at
        // most stays cached.
        let st = wait_for(Duration::from_secs(30), || async {
            let st = cl.cluster_status().await.ok()?;
            let t = st.tiers.iter().find(|t| t.name == "cold")?;
            (t.bytes == (a.len() + b.len()) as u64 && t.cached_bytes < t.bytes).then_some(st)
        })
        .await;
        assert_eq!(st.tiers[0].name, "local");
        assert_eq!(st.tiers[0].bytes, 0);
        for n in &st.nodes {
            assert!(
                n.stats.cache_bytes <= CHUNK,
                "{} over its cache budget",
                n.id
            );
        }
        assert_eq!(
            st.unavailable_chunks, 0,
            "offloaded chunks count as available"
        );
        // Both read back, through a node that fetches from the store.
        assert_eq!(cl.get_bytes(&p("/cold/a")).await.unwrap(), a);
        assert_eq!(cl.get_bytes(&p("/cold/b")).await.unwrap(), b);

        // A corrupt object is refused, never served; put right, it reads.
        let d = pattern(CHUNK as usize, 4);
        cl.put_bytes(&p("/cold/c"), &pattern(10_000, 3), opts())
            .await
            .unwrap();
        let cc = offloaded(&cl, "/cold/c").await.extents[0].chunk;
        cl.put_bytes(&p("/cold/d"), &d, opts()).await.unwrap();
        offloaded(&cl, "/cold/d").await;
        // d's copies push c's out of every node's cache.
        wait_for(Duration::from_secs(30), || async {
            let (_, cached) = cached(&cl, "cold").await;
            (cached <= d.len() as u64).then_some(())
        })
        .await;
        let fresh = c.client_with(|cfg| cfg.cache_bytes = 0).await;
        let mut bad = pattern(10_000, 3);
        bad[500] ^= 1;
        store.put(cc, bad.into()).await.unwrap();
        let e = fresh.get_bytes(&p("/cold/c")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt, "{e}");
        assert!(e.message.contains("remote store cold"), "{e}");
        store.put(cc, pattern(10_000, 3).into()).await.unwrap();
        assert_eq!(
            fresh.get_bytes(&p("/cold/c")).await.unwrap(),
            pattern(10_000, 3)
        );

        // Recall: pinned local, the chunk is back on nodes (the repair
        // planner makes all three copies) and its object is gone.
        cl.set_cues(&p("/cold/a"), &Cues::parse("tier=local").unwrap(), false)
            .await
            .unwrap();
        let (files, chunks, bytes) = cl.tier_recall(&p("/cold")).await.unwrap();
        assert_eq!((files, chunks), (4, 4), "every file of the tree");
        assert!(bytes > a.len() as u64);
        let back = wait_for(Duration::from_secs(60), || async {
            let i = cl.stat(&p("/cold/a")).await.ok()?;
            (i.extents[0].remote.is_none() && i.extents[0].nodes.len() == 3).then_some(i)
        })
        .await;
        assert_eq!(back.extents[0].chunk, ca);
        assert!(!store.list().await.unwrap().0.contains_key(&ca));
        assert_eq!(fresh.get_bytes(&p("/cold/a")).await.unwrap(), a);
        // The others still say tier=remote:cold: offloaded again.
        offloaded(&cl, "/cold/b").await;

        // Garbage collection deletes a removed file's object.
        cl.remove(&p("/cold/b"), false).await.unwrap();
        wait_for(Duration::from_secs(30), || async {
            (!store.list().await.ok()?.0.contains_key(&cb)).then_some(())
        })
        .await;

        // verify: clean, then an object no chunk names and a vanished one.
        offloaded(&cl, "/cold/c").await;
        offloaded(&cl, "/cold/d").await;
        let r = cl.tier_verify("cold").await.unwrap();
        assert!(r.unreferenced.is_empty() && r.missing.is_empty(), "{r:?}");
        let stray = ChunkId(0xdead_beef);
        store.put(stray, vec![1u8; 10].into()).await.unwrap();
        store.delete(cc).await.unwrap();
        let r = cl.tier_verify("cold").await.unwrap();
        assert_eq!(r.unreferenced, vec![(stray, 10)]);
        assert_eq!(r.missing.len(), 1);
        assert_eq!(r.missing[0].0, cc);
        let e = cl.tier_verify("nowhere").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        assert!(
            e.message.contains("cold"),
            "names the stores there are: {e}"
        );

        // The store goes away: a file waiting to go stays local and
        // readable, status says why, and an uncached chunk is a clear
        // Unavailable naming the store.
        moto.stop();
        let e = fresh.get_bytes(&p("/cold/c")).await.unwrap_err();
        assert!(
            matches!(
                e.kind,
                ErrorKind::Unavailable | ErrorKind::NotFound | ErrorKind::Corrupt
            ) && e.message.contains("remote store cold"),
            "{e}"
        );
        let late = pattern(50_000, 9);
        cl.put_bytes(&p("/cold/late"), &late, opts()).await.unwrap();
        let st = wait_for(Duration::from_secs(30), || async {
            let st = cl.cluster_status().await.ok()?;
            let t = st.tiers.iter().find(|t| t.name == "cold")?;
            t.problem.is_some().then_some(st)
        })
        .await;
        let t = st.tiers.iter().find(|t| t.name == "cold").unwrap();
        assert!(
            t.problem.as_ref().unwrap().contains("remote store cold"),
            "{t:?}"
        );
        let f = cl.stat(&p("/cold/late")).await.unwrap();
        assert!(f
            .extents
            .iter()
            .all(|e| e.remote.is_none() && !e.nodes.is_empty()));
        assert_eq!(fresh.get_bytes(&p("/cold/late")).await.unwrap(), late);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_cairn_as_remote_store_and_credentials_it_refuses() {
    deadline(async {
        // Cluster B and its S3 gateway: the remote store.
        let b = TestCluster::start(1, 1).await;
        let bcl = b.client().await;
        bcl.mkdir(&p("/far"), false).await.unwrap();
        let key = cairn_s3::create_key(&bcl, "tier", false, None)
            .await
            .unwrap();
        let gw = cairn_s3::start(
            b.client().await,
            cairn_s3::GatewayConfig {
                listen: "127.0.0.1:0".into(),
                domain: None,
                unauthenticated: false,
                tls: None,
            },
        )
        .await
        .unwrap();
        let endpoint = format!("http://{}", gw.addr);
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(
            &good,
            format!(
                "access_key_id={}\nsecret_access_key={}\n",
                key.access_key, key.secret_key
            ),
        )
        .unwrap();
        let wrong = dir.path().join("wrong");
        std::fs::write(
            &wrong,
            format!(
                "access_key_id={}\nsecret_access_key=not-the-secret\n",
                key.access_key
            ),
        )
        .unwrap();
        let far = spec("far", "far", &endpoint, &good);
        let denied = spec("denied", "far", &endpoint, &wrong);
        // Refused credentials are a clear error before any offload.
        let e = RemoteStore::new(denied.clone())
            .unwrap()
            .check()
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        assert!(e.message.contains("remote store denied"), "{e}");

        let a = cluster(Tiers::new(vec![far, denied]).unwrap()).await;
        let cl = a.client().await;
        for (d, cue) in [
            ("/logs", "cold_after=1s"),
            ("/secret", "tier=remote:denied"),
        ] {
            cl.mkdir(&p(d), false).await.unwrap();
            cl.set_cues(&p(d), &Cues::parse(cue).unwrap(), false)
                .await
                .unwrap();
        }
        // cold_after without a store name uses the first --tier.
        let data = pattern(2 * CHUNK as usize + 77, 5);
        cl.put_bytes(&p("/logs/run1"), &data, opts()).await.unwrap();
        let f = offloaded(&cl, "/logs/run1").await;
        assert_eq!(f.extents.len(), 3);
        assert!(f.extents.iter().all(|e| e.remote.as_deref() == Some("far")));
        // The objects are files of cluster B, under the bucket's prefix.
        let obj = format!("/far/cairn-tier/chunks/{}", f.extents[1].chunk);
        assert_eq!(bcl.stat(&p(&obj)).await.unwrap().size, CHUNK);
        let fresh = a.client_with(|cfg| cfg.cache_bytes = 0).await;
        assert_eq!(fresh.get_bytes(&p("/logs/run1")).await.unwrap(), data);
        // A store that refuses the credentials: the file stays local,
        // readable, and status says why.
        let s = pattern(30_000, 6);
        cl.put_bytes(&p("/secret/s"), &s, opts()).await.unwrap();
        let st = wait_for(Duration::from_secs(30), || async {
            let st = cl.cluster_status().await.ok()?;
            let t = st.tiers.iter().find(|t| t.name == "denied")?;
            t.problem.is_some().then_some(st)
        })
        .await;
        let t = st.tiers.iter().find(|t| t.name == "denied").unwrap();
        assert!(
            t.problem.as_ref().unwrap().contains("PermissionDenied")
                || t.problem.as_ref().unwrap().contains("denied"),
            "{t:?}"
        );
        let f = cl.stat(&p("/secret/s")).await.unwrap();
        assert!(f.extents.iter().all(|e| e.remote.is_none()));
        assert_eq!(fresh.get_bytes(&p("/secret/s")).await.unwrap(), s);
        // A cue naming a store meta does not know is refused, at cue set
        // and at write; nothing changes.
        let e = cl
            .set_cues(
                &p("/logs"),
                &Cues::parse("tier=remote:nowhere").unwrap(),
                false,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        assert!(e.message.contains("far"), "names the stores there are: {e}");
        assert_eq!(
            cl.cues(&p("/logs")).await.unwrap().own.unwrap().to_string(),
            "cold_after=1s"
        );
        let cued = PutOptions {
            cues: Cues::parse("tier=remote:nowhere").unwrap(),
            ..opts()
        };
        let e = cl.put_bytes(&p("/logs/x"), &s, cued).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        assert!(cl.stat(&p("/logs/x")).await.is_err());
        a.shutdown().await;
        gw.stop().await;
        b.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_coded_files_go_as_whole_chunks_and_come_back_as_shards() {
    deadline(async {
        let (_moto, _dir, store, c) = on_moto("ec-bucket").await;
        let cl = c.client().await;
        cl.mkdir(&p("/ec"), false).await.unwrap();
        cl.set_cues(
            &p("/ec"),
            &Cues::parse("ec=2+1,tier=remote:cold").unwrap(),
            false,
        )
        .await
        .unwrap();
        // Two whole chunks and a short one, as 2+1 stripes.
        let data = pattern(2 * CHUNK as usize + 12_345, 7);
        let f = cl.put_bytes(&p("/ec/log"), &data, opts()).await.unwrap();
        assert!(f.extents.iter().all(|e| e.ec.is_some()));
        let off = offloaded(&cl, "/ec/log").await;
        // Each chunk is one object of its bytes; no shard is left.
        let (objects, _) = store.list().await.unwrap();
        let mut at = 0usize;
        for (e, was) in off.extents.iter().zip(&f.extents) {
            assert_eq!(e.chunk, was.chunk);
            assert!(e.ec.is_none() && e.nodes.is_empty(), "{e:?}");
            assert_eq!(objects.get(&e.chunk), Some(&e.len));
            let end = at + e.len as usize;
            assert_eq!(&store.get(e.chunk).await.unwrap()[..], &data[at..end]);
            at = end;
        }
        let shards: Vec<ChunkId> = f
            .extents
            .iter()
            .flat_map(|e| e.stored())
            .map(|(s, _)| s)
            .collect();
        assert_eq!(shards.len(), 9);
        wait_for(Duration::from_secs(30), || async {
            let on_nodes = c.nodes_chunks().await;
            let left = shards
                .iter()
                .any(|s| on_nodes.iter().any(|n| n.contains(s)));
            (!left).then_some(())
        })
        .await;
        // Read through a node, checked against meta's checksums.
        let fresh = c.client_with(|cfg| cfg.cache_bytes = 0).await;
        assert_eq!(fresh.get_bytes(&p("/ec/log")).await.unwrap(), data);
        // Recalled, it comes back as replicas and is re-encoded as its
        // cue asks; the objects go.
        cl.set_cues(&p("/ec/log"), &Cues::parse("tier=local").unwrap(), false)
            .await
            .unwrap();
        let (files, chunks, _) = cl.tier_recall(&p("/ec/log")).await.unwrap();
        assert_eq!((files, chunks), (1, 3));
        let back = wait_for(Duration::from_secs(60), || async {
            let i = cl.stat(&p("/ec/log")).await.ok()?;
            let ok = i.extents.iter().all(|e| {
                e.remote.is_none() && e.ec.as_ref().is_some_and(|s| s.scheme.to_string() == "2+1")
            });
            ok.then_some(i)
        })
        .await;
        assert_eq!(back.extents.len(), 3);
        assert_eq!(fresh.get_bytes(&p("/ec/log")).await.unwrap(), data);
        for e in &off.extents {
            assert!(!store.list().await.unwrap().0.contains_key(&e.chunk));
        }
        c.shutdown().await;
    })
    .await
}
