//! Semantic cues on an in-process multi-node cluster: each family shown by
//! what it does to copies, placement, writes and reads.

use cairn_client::PutOptions;
use cairn_testkit::{pattern, wait_for, TestCluster};
use cairn_types::{split_path_cues, CairnPath, Cues, ErrorKind, VersionPolicy};
use std::time::Duration;

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(180), f)
        .await
        .expect("test exceeded its deadline")
}

fn cues(s: &str) -> Cues {
    Cues::parse(s).unwrap()
}

/// Put with the cues written in `raw`'s path, as the CLI does.
fn cued_put(raw: &str) -> (CairnPath, PutOptions) {
    let (path, cues) = split_path_cues(raw).unwrap();
    (
        path,
        PutOptions {
            chunk_size: Some(256 * 1024),
            cues,
            ..Default::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rep_is_inherited_fixed_at_creation_and_settable_in_the_path() {
    deadline(async {
        // What a write fixes, without meta's background conversion (which
        // brings existing files to a new directory cue: tests/convert.rs).
        let c = TestCluster::start_with(4, |m| {
            m.default_rep = 3;
            m.auto_convert = false;
        })
        .await;
        let cl = c.client().await;
        cl.mkdir(&p("/d/sub"), true).await.unwrap();
        cl.set_cues(&p("/d"), &cues("rep=2,place=random"), false)
            .await
            .unwrap();
        cl.set_cues(&p("/d/sub"), &cues("rep=1"), false)
            .await
            .unwrap();
        let pc = cl.cues(&p("/d/sub")).await.unwrap();
        assert_eq!(pc.own, Some(cues("rep=1")));
        assert_eq!(pc.inherited, cues("rep=2,place=random"));
        assert_eq!(pc.effective, cues("rep=1,place=random"));

        let data = pattern(700_000, 1);
        let (path, opts) = cued_put("/d/f");
        let f = cl.put_bytes(&path, &data, opts).await.unwrap();
        assert_eq!(f.extents.len(), 3);
        assert!(f.extents.iter().all(|e| e.nodes.len() == 2), "{f:?}");
        assert_eq!(f.cues.rep, Some(2));
        let (path, opts) = cued_put("/d/sub/g");
        let g = cl.put_bytes(&path, &data, opts).await.unwrap();
        assert!(g.extents.iter().all(|e| e.nodes.len() == 1));
        // A cue in the path overrides the directories', for this file.
        let (path, opts) = cued_put("/d/sub/.cue/rep=3/h");
        assert_eq!(path, p("/d/sub/h"));
        let h = cl.put_bytes(&path, &data, opts).await.unwrap();
        assert!(h.extents.iter().all(|e| e.nodes.len() == 3));
        assert_eq!(
            cl.cues(&p("/d/sub/h")).await.unwrap().effective.rep,
            Some(3)
        );
        // WheelFS spelling.
        let (path, opts) = cued_put("/d/.RepLevel=1/w");
        let w = cl.put_bytes(&path, &data, opts).await.unwrap();
        assert!(w.extents.iter().all(|e| e.nodes.len() == 1));

        // Changing the directory later does not change files already made
        // (until converted), even when they are rewritten; new files follow
        // the new cue.
        cl.set_cues(&p("/d"), &cues("rep=3"), false).await.unwrap();
        let (path, opts) = cued_put("/d/f");
        let f2 = cl.put_bytes(&path, &data, opts).await.unwrap();
        assert!(f2.extents.iter().all(|e| e.nodes.len() == 2), "{f2:?}");
        let (path, opts) = cued_put("/d/new");
        let n = cl.put_bytes(&path, &data, opts).await.unwrap();
        assert!(n.extents.iter().all(|e| e.nodes.len() == 3));
        // Clear: the path inherits again.
        cl.set_cues(&p("/d/sub"), &Cues::default(), true)
            .await
            .unwrap();
        let pc = cl.cues(&p("/d/sub")).await.unwrap();
        assert_eq!(pc.own, Some(Cues::default()));
        assert_eq!(pc.effective.rep, Some(3));
        // Bad cues change nothing and say why.
        let e = cl
            .set_cues(&p("/d"), &cues("rep=2,sync=3"), false)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        assert_eq!(
            cl.cues(&p("/d")).await.unwrap().own,
            Some(cues("rep=3,place=random"))
        );
        let e = cl
            .set_cues(&p("/nope"), &cues("rep=2"), false)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert!(split_path_cues("/d/.cue/rep=9x/f").is_err());
        // Too many copies for the cluster: a clear error, nothing written.
        let (path, opts) = cued_put("/d/.cue/rep=5/toomany");
        let e = cl.put_bytes(&path, &data, opts).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
        assert!(e.message.contains("rep=5"), "{e}");
        assert_eq!(
            cl.stat(&p("/d/toomany")).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_acknowledges_early_and_the_planner_completes_the_copies() {
    deadline(async {
        let c = TestCluster::start(3, 3).await;
        let cl = c.client().await;
        let data = pattern(600_000, 2);
        let (path, opts) = cued_put("/.cue/rep=3,sync=1/s");
        let f = cl.put_bytes(&path, &data, opts).await.unwrap();
        // Acknowledged with one durable copy per chunk...
        assert!(f.extents.iter().all(|e| e.nodes.len() == 1), "{f:?}");
        assert_eq!(f.cues.rep, Some(3));
        assert_eq!(f.cues.sync, Some(1));
        // ...tracked as short of redundancy, and completed in the background.
        let done = wait_for(Duration::from_secs(60), || async {
            let i = cl.stat(&p("/s")).await.ok()?;
            i.extents.iter().all(|e| e.nodes.len() == 3).then_some(i)
        })
        .await;
        for e in &done.extents {
            let mut n = e.nodes.clone();
            n.sort();
            n.dedup();
            assert_eq!(n.len(), 3, "three distinct nodes");
        }
        let s = wait_for(Duration::from_secs(30), || async {
            let s = cl.cluster_status().await.ok()?;
            (s.under_replicated_chunks == 0).then_some(s)
        })
        .await;
        assert_eq!(s.unavailable_chunks, 0);
        assert_eq!(cl.get_bytes(&p("/s")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writeonce_files_refuse_a_second_write_but_can_be_removed() {
    deadline(async {
        let c = TestCluster::start(2, 2).await;
        let cl = c.client().await;
        cl.mkdir(&p("/logs"), false).await.unwrap();
        cl.set_cues(&p("/logs"), &cues(".WriteOnce"), false)
            .await
            .unwrap();
        let (path, opts) = cued_put("/logs/run1");
        cl.put_bytes(&path, b"first", opts.clone()).await.unwrap();
        let e = cl
            .put_bytes(&path, b"second", opts.clone())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        assert!(e.message.contains("write-once"), "{e}");
        assert_eq!(cl.get_bytes(&path).await.unwrap(), b"first");
        // Also when the directory stops being write-once: the file is.
        cl.set_cues(&p("/logs"), &cues("writemany"), false)
            .await
            .unwrap();
        assert!(cl.put_bytes(&path, b"third", opts.clone()).await.is_err());
        cl.remove(&path, false).await.unwrap();
        cl.put_bytes(&path, b"fresh", opts).await.unwrap();
        assert_eq!(cl.get_bytes(&path).await.unwrap(), b"fresh");
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_cues_decide_when_cached_metadata_will_do() {
    deadline(async {
        // No leases here: this is about the cues (leases have their own test).
        let mut c = TestCluster::start_with(2, |m| {
            m.default_rep = 2;
            m.lease = Duration::ZERO;
        })
        .await;
        let reader = c.client().await;
        let writer = c.client().await;
        let opts = PutOptions::default();
        writer
            .put_bytes(&p("/f"), b"v1", opts.clone())
            .await
            .unwrap();
        let read = |cl: &cairn_client::Client, raw: &str| {
            let cl = cl.clone();
            let raw = raw.to_string();
            async move {
                let (path, cues) = split_path_cues(&raw).unwrap();
                let r = cl.open_cued(&path, &cues).await?;
                r.read_at(0, 100).await
            }
        };
        assert_eq!(read(&reader, "/f").await.unwrap(), b"v1");
        writer
            .put_bytes(&p("/f"), b"v2", opts.clone())
            .await
            .unwrap();
        // strict/latest (default) sees the new version at once; lax and
        // anyversion may use what this client has cached.
        assert_eq!(
            read(&reader, "/.cue/lax,maxtime=60000/f").await.unwrap(),
            b"v1"
        );
        assert_eq!(read(&reader, "/.anyversion/f").await.unwrap(), b"v1");
        assert_eq!(read(&reader, "/f").await.unwrap(), b"v2");
        assert_eq!(read(&reader, "/.anyversion/f").await.unwrap(), b"v2");
        // A short lax window expires.
        writer
            .put_bytes(&p("/f"), b"v3", opts.clone())
            .await
            .unwrap();
        let got = wait_for(Duration::from_secs(10), || async {
            let v = read(&reader, "/.cue/lax,maxtime=50/f").await.ok()?;
            (v == b"v3").then_some(v)
        })
        .await;
        assert_eq!(got, b"v3");

        // Meta stopped: strict fails clearly, anyversion serves the cached
        // version (bytes from the chunk cache), bestversion settles for it
        // within maxtime.
        assert_eq!(read(&reader, "/f").await.unwrap(), b"v3");
        c.meta.take().unwrap().shutdown().await;
        let e = read(&reader, "/f").await.unwrap_err();
        assert!(
            matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout),
            "{e}"
        );
        assert_eq!(read(&reader, "/.anyversion/f").await.unwrap(), b"v3");
        let t = std::time::Instant::now();
        assert_eq!(
            read(&reader, "/.bestversion,maxtime=500/f").await.unwrap(),
            b"v3"
        );
        assert!(t.elapsed() < Duration::from_secs(20));
        // Never seen by this client: nothing to settle for.
        assert!(read(&writer, "/.anyversion/other").await.is_err());
        let (_, c2) = split_path_cues("/.anyversion/f").unwrap();
        assert_eq!(c2.version, Some(VersionPolicy::AnyVersion));
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wholefile_fetches_everything_on_the_first_read() {
    deadline(async {
        let mut c = TestCluster::start(2, 2).await;
        let cl = c.client().await;
        let data = pattern(900_000, 3);
        let opts = PutOptions {
            chunk_size: Some(256 * 1024),
            ..Default::default()
        };
        cl.put_bytes(&p("/w"), &data, opts).await.unwrap();
        let r = cl.open_cued(&p("/w"), &cues("wholefile")).await.unwrap();
        assert_eq!(r.read_at(0, 10).await.unwrap(), &data[..10]);
        // Every node gone: the rest of the file is already here.
        c.stop_node(0).await;
        c.stop_node(1).await;
        assert_eq!(r.read_at(10, data.len() as u64).await.unwrap(), &data[10..]);
        // Without the cue, a read of a chunk not yet fetched fails.
        let cl2 = c.client().await;
        let plain = cl2.open(&p("/w")).await.unwrap();
        assert!(plain.read_at(800_000, 10).await.is_err());
        c.shutdown().await;
    })
    .await
}

/// The on-disk chunk cache keeps file data across clients (a remount, a
/// new process): read once, then readable with every storage node down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cache_serves_chunks_across_clients() {
    deadline(async {
        let mut c = TestCluster::start(2, 2).await;
        let cache = tempfile::tempdir().unwrap();
        let dir = cache.path().join("chunks");
        let data = pattern(700_000, 9);
        let opts = PutOptions {
            chunk_size: Some(256 * 1024),
            ..Default::default()
        };
        c.client()
            .await
            .put_bytes(&p("/d"), &data, opts)
            .await
            .unwrap();
        let with_disk = |d: std::path::PathBuf| {
            move |cfg: &mut cairn_client::ClientConfig| {
                cfg.cache_bytes = 1 << 20;
                cfg.disk_cache = Some((d, 64 << 20));
            }
        };
        let first = c.client_with(with_disk(dir.clone())).await;
        assert_eq!(first.get_bytes(&p("/d")).await.unwrap(), data);
        // The disk copies are written in the background.
        wait_for(Duration::from_secs(20), || async {
            (first.cached_bytes().1 >= data.len() as u64).then_some(())
        })
        .await;
        drop(first);
        c.stop_node(0).await;
        c.stop_node(1).await;
        let second = c.client_with(with_disk(dir.clone())).await;
        assert!(second.cached_bytes().1 >= data.len() as u64);
        let r = second.open(&p("/d")).await.unwrap();
        assert_eq!(r.read_at(0, data.len() as u64).await.unwrap(), data);
        // Without the cache the nodes are needed.
        assert!(c.client().await.get_bytes(&p("/d")).await.is_err());
        c.shutdown().await;
    })
    .await
}

/// Metadata leases: within its lease a client's strict open needs no
/// round trip to meta (it works with meta stopped), and a change by
/// another client is acknowledged only once the lease is over, so an open
/// after the writer's close always sees the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_strict_opens_local_and_changes_wait_for_them() {
    deadline(async {
        let mut c = TestCluster::start_with(2, |m| {
            m.default_rep = 2;
            m.lease = Duration::from_secs(4);
        })
        .await;
        let reader = c.client().await;
        let writer = c.client().await;
        let read = |cl: &cairn_client::Client| {
            let cl = cl.clone();
            async move { cl.open(&p("/f")).await?.read_at(0, 100).await }
        };
        writer
            .put_bytes(&p("/f"), b"v1", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(read(&reader).await.unwrap(), b"v1");
        // The writer's close returns only after the reader's lease ran out...
        writer
            .put_bytes(&p("/f"), b"v2", PutOptions::default())
            .await
            .unwrap();
        // ...so the reader's next strict open sees v2, not its cached v1.
        assert_eq!(read(&reader).await.unwrap(), b"v2");
        // The writer's own lease never holds up its own writes.
        assert_eq!(read(&writer).await.unwrap(), b"v2");
        writer
            .put_bytes(&p("/f"), b"v3", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(read(&writer).await.unwrap(), b"v3");
        // Within a fresh lease, strict opens are served locally: meta can
        // be gone.
        assert_eq!(read(&reader).await.unwrap(), b"v3");
        c.meta.take().unwrap().shutdown().await;
        assert_eq!(read(&reader).await.unwrap(), b"v3");
        // Past the lease, a strict open must ask, and fails without meta.
        wait_for(Duration::from_secs(30), || async {
            read(&reader).await.is_err().then_some(())
        })
        .await;
        c.shutdown().await;
    })
    .await
}
