//! Background conversion between redundancies: setting `ec=` or `rep=` on
//! a directory re-encodes the files below it (meta's `convert` worker),
//! resumes after a meta restart, retries until enough nodes are live, and
//! never overrides a writer.

use cairn_client::{Client, PutOptions};
use cairn_testkit::{fast_repair as fast, pattern, wait_for, TestCluster};
use cairn_types::{CairnPath, Cues, Layout};
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

fn layout(s: &str) -> Layout {
    let c = Cues::parse(s).unwrap();
    match c.ec {
        Some(e) => Layout::Ec(e),
        None => Layout::Rep(c.rep.unwrap()),
    }
}

async fn layout_of(cl: &Client, path: &str) -> Option<Layout> {
    cl.locate(&p(path)).await.ok()?.inode.layout()
}

/// Wait until every file of `files` is laid out as `want`.
async fn wait_layout(cl: &Client, files: &[&str], want: Layout) {
    wait_for(Duration::from_secs(120), || async {
        for f in files {
            if layout_of(cl, f).await? != want {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// The convert worker's status line.
async fn convert_status(cl: &Client) -> (String, Option<String>) {
    let s = cl.cluster_status().await.unwrap();
    let w = s.workers.iter().find(|w| w.name == "convert").unwrap();
    (w.progress.clone(), w.last_error.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_ec_then_rep_on_a_directory_converts_its_files() {
    deadline(async {
        let c = TestCluster::start_with(6, fast).await;
        let cl = c.client().await;
        cl.mkdir(&p("/d/sub"), true).await.unwrap();
        cl.mkdir(&p("/d/pinned"), true).await.unwrap();
        cl.set_cues(&p("/d/pinned"), &Cues::parse("rep=2").unwrap(), false)
            .await
            .unwrap();
        let big = pattern(3 * 256 * 1024 + 70_001, 1);
        let one = pattern(100_000, 2);
        let deep = pattern(300_000, 3);
        let pinned = pattern(200_000, 4);
        let small = b"inline bytes".to_vec();
        let before = cl.put_bytes(&p("/d/big"), &big, opts()).await.unwrap();
        cl.put_bytes(&p("/d/one"), &one, opts()).await.unwrap();
        cl.put_bytes(&p("/d/sub/deep"), &deep, opts())
            .await
            .unwrap();
        cl.put_bytes(&p("/d/pinned/p"), &pinned, opts())
            .await
            .unwrap();
        cl.put_bytes(&p("/d/small"), &small, opts()).await.unwrap();
        let files = ["/d/big", "/d/one", "/d/sub/deep"];
        wait_layout(&cl, &files, layout("rep=3")).await;

        cl.set_cues(&p("/d"), &Cues::parse("ec=4+2").unwrap(), false)
            .await
            .unwrap();
        wait_layout(&cl, &files, layout("ec=4+2")).await;
        // The bytes are the same, the file's mtime too; a new version.
        assert_eq!(cl.get_bytes(&p("/d/big")).await.unwrap(), big);
        assert_eq!(cl.get_bytes(&p("/d/one")).await.unwrap(), one);
        assert_eq!(cl.get_bytes(&p("/d/sub/deep")).await.unwrap(), deep);
        let after = cl.locate(&p("/d/big")).await.unwrap().inode;
        assert_eq!((after.size, after.mtime_ns), (before.size, before.mtime_ns));
        assert!(after.version > before.version);
        assert_eq!((after.cues.rep, after.cues.ec), (None, layout_ec("4+2")));
        for e in &after.extents {
            let ec = e.ec.as_ref().expect("shards");
            assert_eq!((e.nodes.len(), ec.crcs.len()), (6, 6));
        }
        // A subdirectory with its own rep= keeps it; inline files have no
        // chunks to convert.
        assert_eq!(layout_of(&cl, "/d/pinned/p").await, Some(layout("rep=2")));
        assert_eq!(cl.get_bytes(&p("/d/small")).await.unwrap(), small);
        // The old replicas are collected: no chunk is short, no garbage
        // left, and the worker says what it did.
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            (s.pending_garbage_chunks == 0 && s.under_replicated_chunks == 0).then_some(())
        })
        .await;
        let (progress, err) = convert_status(&cl).await;
        assert!(progress.contains("3 file(s) converted"), "{progress}");
        assert_eq!(err, None);

        // And back: rep=2 on the whole tree.
        cl.set_cues(&p("/d"), &Cues::parse("rep=2").unwrap(), false)
            .await
            .unwrap();
        wait_layout(&cl, &files, layout("rep=2")).await;
        assert_eq!(cl.get_bytes(&p("/d/big")).await.unwrap(), big);
        assert_eq!(cl.get_bytes(&p("/d/sub/deep")).await.unwrap(), deep);
        let back = cl.locate(&p("/d/big")).await.unwrap().inode;
        assert!(back
            .extents
            .iter()
            .all(|e| e.ec.is_none() && e.nodes.len() == 2));
        // Moved out to a directory with the default rep=3, it follows.
        cl.mkdir(&p("/plain"), false).await.unwrap();
        cl.rename(&p("/d/big"), &p("/plain/big")).await.unwrap();
        wait_layout(&cl, &["/plain/big"], layout("rep=3")).await;
        assert_eq!(cl.get_bytes(&p("/plain/big")).await.unwrap(), big);
        c.shutdown().await;
    })
    .await
}

fn layout_ec(s: &str) -> Option<cairn_types::EcScheme> {
    Cues::parse(&format!("ec={s}")).unwrap().ec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_waits_for_enough_nodes_and_survives_a_meta_restart() {
    deadline(async {
        // Slow copying (1 MiB/s), so the restart lands mid-job.
        let mut c = TestCluster::start_with(4, |m| {
            fast(m);
            m.repair.bandwidth = 1 << 20;
        })
        .await;
        let cl = c.client().await;
        cl.mkdir(&p("/logs"), false).await.unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("/logs/f{i}")).collect();
        let files: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        for (i, f) in files.iter().enumerate() {
            cl.put_bytes(&p(f), &pattern(600_000, i as u64), opts())
                .await
                .unwrap();
        }
        // ec=4+2 needs six nodes; four are live. The cue is set, the
        // files stay as they were and readable, and the worker says why.
        cl.set_cues(&p("/logs"), &Cues::parse("ec=4+2").unwrap(), false)
            .await
            .unwrap();
        let progress = wait_for(Duration::from_secs(60), || async {
            let (progress, _) = convert_status(&cl).await;
            progress.contains("last failure").then_some(progress)
        })
        .await;
        assert!(
            progress.contains("4 file(s) below /logs could not be converted"),
            "{progress}"
        );
        for (i, f) in files.iter().enumerate() {
            assert_eq!(layout_of(&cl, f).await, Some(layout("rep=3")));
            assert_eq!(
                cl.get_bytes(&p(f)).await.unwrap(),
                pattern(600_000, i as u64)
            );
        }
        // The directory moves: its waiting job moves with it.
        cl.rename(&p("/logs"), &p("/archive")).await.unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("/archive/f{i}")).collect();
        let files: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        // Two more nodes: the job, still recorded, goes through; a meta
        // restart in the middle only delays it.
        c.add_node().await;
        c.add_node().await;
        wait_for(Duration::from_secs(60), || async {
            for f in &files {
                if layout_of(&cl, f).await == Some(layout("ec=4+2")) {
                    return Some(());
                }
            }
            None
        })
        .await;
        c.restart_meta().await;
        let cl = c.client().await;
        wait_layout(&cl, &files, layout("ec=4+2")).await;
        for (i, f) in files.iter().enumerate() {
            assert_eq!(
                cl.get_bytes(&p(f)).await.unwrap(),
                pattern(600_000, i as u64)
            );
        }
        // The job is done and gone.
        wait_for(Duration::from_secs(30), || async {
            let (progress, err) = convert_status(&cl).await;
            let done = progress.contains("0 job(s) waiting") && !progress.contains("failure");
            (err.is_none() && done).then_some(())
        })
        .await;
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_racing_a_conversion_wins() {
    deadline(async {
        let c = TestCluster::start_with(6, fast).await;
        let cl = c.client().await;
        cl.mkdir(&p("/w"), false).await.unwrap();
        for i in 0..8 {
            cl.put_bytes(&p(&format!("/w/f{i}")), &pattern(400_000, i), opts())
                .await
                .unwrap();
        }
        cl.set_cues(&p("/w"), &Cues::parse("ec=2+1").unwrap(), false)
            .await
            .unwrap();
        // Overwrite every file while the worker converts them.
        let mut last = Vec::new();
        for round in 0..3u64 {
            last.clear();
            for i in 0..8u64 {
                let data = pattern(300_000 + round as usize * 1000, 100 * round + i);
                cl.put_bytes(&p(&format!("/w/f{i}")), &data, opts())
                    .await
                    .unwrap();
                last.push(data);
            }
        }
        let names: Vec<String> = (0..8).map(|i| format!("/w/f{i}")).collect();
        let files: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        // Whatever the worker did, the last write of each file is what is
        // read. A rewrite whose chunks were all placed before its file's
        // conversion and committed after it keeps the file's old
        // redundancy (the writer wins), until the cue is set again.
        for (i, f) in files.iter().enumerate() {
            assert_eq!(cl.get_bytes(&p(f)).await.unwrap(), last[i], "{f}");
        }
        cl.set_cues(&p("/w"), &Cues::parse("ec=2+1").unwrap(), false)
            .await
            .unwrap();
        wait_layout(&cl, &files, layout("ec=2+1")).await;
        wait_for(Duration::from_secs(60), || async {
            let s = cl.cluster_status().await.ok()?;
            (s.pending_garbage_chunks == 0 && s.under_replicated_chunks == 0).then_some(())
        })
        .await;
        for (i, f) in files.iter().enumerate() {
            assert_eq!(cl.get_bytes(&p(f)).await.unwrap(), last[i], "{f}");
        }
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_begun_before_a_conversion_is_converted_after_it() {
    deadline(async {
        let c = TestCluster::start_with(4, fast).await;
        let cl = c.client().await;
        cl.mkdir(&p("/w"), false).await.unwrap();
        cl.put_bytes(&p("/w/f"), &pattern(100_000, 1), opts())
            .await
            .unwrap();
        let disk = |c: &TestCluster| (0..4).map(|i| c.disk_bytes(i)).sum::<u64>();
        let before = disk(&c);
        // A writer starts rewriting the file: its first chunk is placed
        // and stored as rep=3, the file's redundancy then.
        let data = pattern(400_000, 2);
        let (mut tx, rx) = tokio::io::duplex(64 * 1024);
        let writer = {
            let cl = cl.clone();
            tokio::spawn(async move { cl.put(&p("/w/f"), rx, opts()).await })
        };
        use tokio::io::AsyncWriteExt;
        tx.write_all(&data[..300_000]).await.unwrap();
        wait_for(Duration::from_secs(30), || async {
            (disk(&c) >= before + 3 * 256 * 1024).then_some(())
        })
        .await;
        // Meanwhile the directory goes to ec=2+1 and the file's current
        // version is converted.
        cl.set_cues(&p("/w"), &Cues::parse("ec=2+1").unwrap(), false)
            .await
            .unwrap();
        wait_layout(&cl, &["/w/f"], layout("ec=2+1")).await;
        // The writer finishes: its version wins, with chunks of the old
        // layout, and is converted in turn.
        tx.write_all(&data[300_000..]).await.unwrap();
        drop(tx);
        let written = writer.await.unwrap().unwrap();
        assert_eq!(cl.get_bytes(&p("/w/f")).await.unwrap(), data);
        wait_for(Duration::from_secs(60), || async {
            let now = cl.locate(&p("/w/f")).await.ok()?.inode;
            (now.version > written.version && now.layout() == Some(layout("ec=2+1"))).then_some(())
        })
        .await;
        assert_eq!(cl.get_bytes(&p("/w/f")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}

/// A worker's status.
async fn worker(cl: &Client, name: &str) -> cairn_proto::WorkerStatus {
    let s = cl.cluster_status().await.unwrap();
    s.workers.into_iter().find(|w| w.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_files_are_erasure_coded_by_their_cold_policy() {
    deadline(async {
        // No remote store: tier=ec:K+M needs none.
        let c = TestCluster::start_with(4, |m| {
            fast(m);
            m.tier.interval = Duration::from_millis(100);
        })
        .await;
        let cl = c.client().await;
        cl.mkdir(&p("/logs"), false).await.unwrap();
        let e = cl
            .set_cues(&p("/logs"), &Cues::parse("tier=ec:2+1").unwrap(), false)
            .await
            .unwrap_err();
        assert!(e.message.contains("cold_after"), "{e}");
        cl.set_cues(
            &p("/logs"),
            &Cues::parse("cold_after=1s,tier=ec:2+1").unwrap(),
            false,
        )
        .await
        .unwrap();
        // Written hot: replicated.
        let data = pattern(3 * 256 * 1024 + 5, 11);
        let f = cl.put_bytes(&p("/logs/a"), &data, opts()).await.unwrap();
        assert_eq!(f.layout(), Some(layout("rep=3")));
        // Cold after a second (stat is no use of the file; an open is):
        // erasure-coded on the nodes, same bytes.
        let a = wait_for(Duration::from_secs(60), || async {
            let i = cl.stat(&p("/logs/a")).await.ok()?;
            (i.layout() == Some(layout("ec=2+1"))).then_some(i)
        })
        .await;
        assert_eq!(cl.get_bytes(&p("/logs/a")).await.unwrap(), data);
        assert_eq!(a.mtime_ns, f.mtime_ns);
        let tier = worker(&cl, "tier").await;
        assert!(
            tier.progress.contains("1 cold file(s) erasure-coded"),
            "{}",
            tier.progress
        );
        // A later rep= on the directory converts hot files, and leaves
        // the cold ones as their policy made them.
        let before = worker(&cl, "convert").await.passes;
        cl.set_cues(&p("/logs"), &Cues::parse("rep=2").unwrap(), false)
            .await
            .unwrap();
        wait_for(Duration::from_secs(60), || async {
            let w = worker(&cl, "convert").await;
            let done = w.passes >= before + 3
                && w.state == "idle"
                && w.progress.contains("0 job(s) waiting");
            done.then_some(())
        })
        .await;
        let now = cl.stat(&p("/logs/a")).await.unwrap();
        assert_eq!(now.version, a.version, "left as it was");
        assert_eq!(now.layout(), Some(layout("ec=2+1")));
        c.shutdown().await;
    })
    .await
}
