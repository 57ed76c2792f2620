//! The metadata store on a real 3-member etcd cluster: the `MetaStore`
//! conformance suite, two namespaces (as two meta servers would) racing on
//! the same names, member loss, total loss and recovery, and migration from
//! the embedded store.

use cairn_meta::store::conformance_suite;
use cairn_meta::{dump, MetaStore, Namespace, RedbStore, Txn};
use cairn_testkit::etcd::EtcdCluster;
use cairn_types::{CairnPath, ErrorKind, InodeId, InodeKind, Version};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

/// A hang fails the test instead of stalling CI.
async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test exceeded its deadline")
}

async fn namespace(c: &EtcdCluster, prefix: &str) -> Namespace {
    let store: Arc<dyn MetaStore> = Arc::new(c.store(prefix).await);
    Namespace::open(store, Duration::from_secs(60))
        .await
        .unwrap()
}

/// Every entry under `dir`, depth first, as (path, inode id, kind).
async fn walk(ns: &Namespace, dir: &str) -> Vec<(String, InodeId, InodeKind)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_string()];
    while let Some(d) = todo.pop() {
        let mut after: Option<String> = None;
        loop {
            let page = ns.list(&p(&d), after.as_deref(), 100).await.unwrap();
            for e in &page {
                let path = format!("{}/{}", d.trim_end_matches('/'), e.name);
                if e.inode.kind == InodeKind::Directory {
                    todo.push(path.clone());
                }
                out.push((path, e.inode.id, e.inode.kind));
            }
            match page.last() {
                Some(l) if page.len() == 100 => after = Some(l.name.clone()),
                _ => break,
            }
        }
    }
    out
}

/// The namespace's own invariants, checked on the raw keys: one entry per
/// inode, no inode reserved without an entry (no orphan), no entry whose
/// parent directory is gone.
async fn check_consistent(ns: &Namespace, store: &dyn MetaStore) -> Vec<(String, InodeId)> {
    let tree = walk(ns, "/").await;
    let ids: HashSet<InodeId> = tree.iter().map(|t| t.1).collect();
    assert_eq!(ids.len(), tree.len(), "an inode appears under two names");
    let entries = store.scan(b"d", b"e", usize::MAX).await.unwrap();
    assert_eq!(
        entries.len(),
        tree.len(),
        "directory entries unreachable from the root (orphans)"
    );
    let links = store.scan(b"n", b"o", usize::MAX).await.unwrap();
    assert_eq!(
        links.len(),
        tree.len() + 1,
        "inode ids reserved without an entry (the +1 is the root)"
    );
    for (path, id, _) in &tree {
        assert_eq!(ns.lookup(&p(path)).await.unwrap().id, *id, "{path}");
    }
    tree.into_iter().map(|(p, id, _)| (p, id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_etcd() {
    deadline(async {
        let c = EtcdCluster::start(3).await;
        conformance_suite(Arc::new(c.store("conformance").await)).await;
        // Prefixes isolate namespaces sharing one cluster.
        let other = c.store("other").await;
        assert_eq!(other.get(b"a").await.unwrap(), None);
        assert!(other.scan(b"", b"\xff", 10).await.unwrap().is_empty());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posix_attributes_on_etcd() {
    deadline(async {
        let c = EtcdCluster::start(1).await;
        // Directory times and link counts ride along in the same
        // transactions: etcd refuses a key twice in one.
        cairn_meta::namespace::posix_suite(&namespace(&c, "posix").await).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_versions_on_etcd() {
    deadline(async {
        let c = EtcdCluster::start(1).await;
        cairn_meta::namespace::versions_suite(&namespace(&c, "versions").await).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_meta_servers_race_on_the_same_names() {
    deadline(async {
        let c = EtcdCluster::start(3).await;
        let a = namespace(&c, "race").await;
        let b = namespace(&c, "race").await;
        a.mkdir(&p("/d"), true).await.unwrap();
        b.mkdir(&p("/d"), true).await.unwrap();
        const NAMES: usize = 40;

        // Creates: both servers create every name; exactly one wins each.
        let create = |ns: Namespace| {
            tokio::spawn(async move {
                let mut won = BTreeMap::new();
                for i in 0..NAMES {
                    let path = p(&format!("/d/f{i}"));
                    match ns
                        .commit_file(&path, vec![], Some(Version(0)), 0o644, 1 << 20)
                        .await
                    {
                        Ok(inode) => {
                            won.insert(i, inode.id);
                        }
                        Err(e) => assert!(
                            matches!(e.kind, ErrorKind::Conflict | ErrorKind::AlreadyExists),
                            "{e}"
                        ),
                    }
                }
                won
            })
        };
        let (wa, wb) = (create(a.clone()), create(b.clone()));
        let (wa, wb) = (wa.await.unwrap(), wb.await.unwrap());
        assert_eq!(
            wa.len() + wb.len(),
            NAMES,
            "every name has exactly one winner"
        );
        for (i, id) in wa.iter().chain(wb.iter()) {
            assert_eq!(a.lookup(&p(&format!("/d/f{i}"))).await.unwrap().id, *id);
        }

        // Renames to fresh names and deletes, on the same sources from both
        // servers at once; plus read-modify-write updates of one counter file.
        a.commit_file(&p("/counter"), vec![], Some(Version(0)), 0o644, 1)
            .await
            .unwrap();
        let deleted = Arc::new(AtomicU64::new(0));
        let bumps = Arc::new(AtomicU64::new(0));
        let churn = |ns: Namespace, who: &'static str| {
            let (deleted, bumps) = (deleted.clone(), bumps.clone());
            tokio::spawn(async move {
                for i in 0..NAMES {
                    let src = p(&format!("/d/f{i}"));
                    let r = if i % 3 == 0 {
                        ns.remove(&src, false).await.map(|_| true)
                    } else {
                        ns.rename(&src, &p(&format!("/d/r{i}-{who}")))
                            .await
                            .map(|_| false)
                    };
                    match r {
                        Ok(true) => {
                            deleted.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => {}
                        Err(e) => assert!(
                            matches!(e.kind, ErrorKind::NotFound | ErrorKind::Conflict),
                            "{e}"
                        ),
                    }
                    let cur = ns.lookup(&p("/counter")).await.unwrap().version;
                    if ns
                        .commit_file(&p("/counter"), vec![], Some(cur), 0o644, 1)
                        .await
                        .is_ok()
                    {
                        bumps.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        let (ta, tb) = (churn(a.clone(), "a"), churn(b.clone(), "b"));
        ta.await.unwrap();
        tb.await.unwrap();

        let store = c.store("race").await;
        let tree = check_consistent(&a, &store).await;
        let files: Vec<_> = tree.iter().filter(|(p, _)| p.starts_with("/d/")).collect();
        assert_eq!(
            files.len() as u64,
            NAMES as u64 - deleted.load(Ordering::SeqCst),
            "created files = present + acknowledged deletes: {files:?}"
        );
        assert!(
            files.iter().all(|(p, _)| p.starts_with("/d/r")),
            "every surviving file was renamed exactly once: {files:?}"
        );
        assert_eq!(
            a.lookup(&p("/counter")).await.unwrap().version.0,
            1 + bumps.load(Ordering::SeqCst),
            "no lost update"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_continues_when_the_leader_member_is_killed() {
    deadline(async {
        let mut c = EtcdCluster::start(3).await;
        let ns = namespace(&c, "kill1").await;
        ns.mkdir(&p("/w"), false).await.unwrap();
        let mut acked = Vec::new();
        let mut failed = 0;
        let mut i = 0;
        let started = Instant::now();
        let mut killed_at = None;
        // Write for a while; kill one member early on. Writes whose outcome
        // is unknown may fail (retryable); every acknowledged one must stay,
        // and writes must succeed again soon after.
        while i < 150 {
            if i == 30 {
                // The leader: the member whose loss costs an election.
                let leader = c.leader().await.expect("a leader");
                c.kill(leader);
                killed_at = Some(Instant::now());
            }
            let path = format!("/w/f{i}");
            match ns
                .commit_file(&p(&path), vec![], Some(Version(0)), 0o644, 1)
                .await
            {
                Ok(_) => acked.push(path),
                Err(e) => {
                    assert!(e.kind.is_retryable(), "{e}");
                    failed += 1;
                }
            }
            i += 1;
        }
        let since_kill = killed_at.unwrap().elapsed();
        assert!(failed <= 10, "{failed} writes failed after one member died");
        assert!(acked.len() >= 140);
        for path in &acked {
            ns.lookup(&p(path)).await.unwrap();
        }
        // A fresh connection through the surviving members works too.
        let ns2 = namespace(&c, "kill1").await;
        // Writes reported as failed may still have been applied.
        let all = walk(&ns2, "/w").await.len();
        assert!(all >= acked.len() && all <= 150, "{all}");
        eprintln!(
            "one member killed: {} acked, {failed} failed, {since_kill:?} since kill, {:?} total",
            acked.len(),
            started.elapsed()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_members_down_is_unavailable_then_recovers() {
    deadline(async {
        let mut c = EtcdCluster::start(3).await;
        let mut cfg = c.config("down");
        cfg.timeout = Duration::from_secs(2);
        let store: Arc<dyn MetaStore> =
            Arc::new(cairn_meta::EtcdStore::connect(cfg.clone()).await.unwrap());
        let ns = Namespace::open(store.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        ns.mkdir(&p("/keep"), false).await.unwrap();
        for i in 0..10 {
            ns.commit_file(&p(&format!("/keep/f{i}")), vec![], None, 0o644, 1)
                .await
                .unwrap();
        }
        for i in 0..3 {
            c.kill(i);
        }
        let t = Instant::now();
        let err = ns.lookup(&p("/keep/f1")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
        assert!(
            err.message.contains(&c.endpoints()[0]),
            "the error names the endpoints: {err}"
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let err = ns
            .commit_file(&p("/keep/new"), vec![], None, 0o644, 1)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
        let err = cairn_meta::EtcdStore::connect(cfg).await.err().unwrap();
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
        eprintln!("error while etcd is down: {err}");

        for i in 0..3 {
            c.restart(i);
        }
        c.wait_healthy(Duration::from_secs(30)).await;
        // The same store object recovers by itself.
        let t = Instant::now();
        loop {
            match ns.lookup(&p("/keep/f9")).await {
                Ok(_) => break,
                Err(e) if t.elapsed() < Duration::from_secs(20) => {
                    assert!(e.kind.is_retryable(), "{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no recovery: {e}"),
            }
        }
        ns.commit_file(&p("/keep/after"), vec![], Some(Version(0)), 0o644, 1)
            .await
            .unwrap();
        let tree = check_consistent(&ns, store.as_ref()).await;
        let names: HashSet<_> = tree.iter().map(|t| t.0.as_str()).collect();
        for i in 0..10 {
            assert!(names.contains(format!("/keep/f{i}").as_str()));
        }
        assert!(names.contains("/keep/after"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_from_embedded_import_into_etcd() {
    deadline(async {
        let c = EtcdCluster::start(3).await;
        let dir = tempfile::tempdir().unwrap();
        let redb: Arc<dyn MetaStore> =
            Arc::new(RedbStore::open(&dir.path().join("meta.redb")).unwrap());
        let src = Namespace::open(redb.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        src.mkdir(&p("/a/b/c"), true).await.unwrap();
        for i in 0..300 {
            src.commit_file(&p(&format!("/a/b/f{i:03}")), vec![], None, 0o600, 4096)
                .await
                .unwrap();
        }
        src.commit_file(&p("/a/top"), vec![], None, 0o644, 1)
            .await
            .unwrap();
        src.rename(&p("/a/top"), &p("/a/b/c/moved")).await.unwrap();

        let mut dumped = Vec::new();
        let out = dump::export(redb.as_ref(), &mut dumped).await.unwrap();
        let etcd: Arc<dyn MetaStore> = Arc::new(c.store("migrated").await);
        let got = dump::import(etcd.as_ref(), &mut dumped.as_slice(), false)
            .await
            .unwrap();
        assert_eq!(out, got);
        // A second import must not merge into what is there.
        let err = dump::import(etcd.as_ref(), &mut dumped.as_slice(), false)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);

        let dst = Namespace::open(etcd.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        let mut before: Vec<_> = walk(&src, "/")
            .await
            .into_iter()
            .map(|(p, id, _)| (p, id))
            .collect();
        let mut after = check_consistent(&dst, etcd.as_ref()).await;
        before.sort();
        after.sort();
        assert_eq!(before, after);
        assert_eq!(
            dst.lookup(&p("/a/b/f007")).await.unwrap(),
            src.lookup(&p("/a/b/f007")).await.unwrap()
        );
        // And the migrated namespace keeps working.
        dst.commit_file(&p("/a/b/f007"), vec![], None, 0o600, 4096)
            .await
            .unwrap();
        assert_eq!(
            dst.lookup(&p("/a/b/f007")).await.unwrap().version,
            Version(2)
        );
        // Recursive removal purges in transactions within etcd's default limits.
        dst.remove(&p("/a"), true).await.unwrap();
        while dst.purge_trash(10_000).await.unwrap() > 0 {}
        let left = check_consistent(&dst, etcd.as_ref()).await;
        assert!(left.is_empty(), "{left:?}");
        let garbage = etcd.scan(b"g", b"h", usize::MAX).await.unwrap();
        assert!(garbage.is_empty(), "empty files leave no garbage");
        etcd.commit(Txn::new()).await.unwrap();
    })
    .await
}

/// Two meta servers over one etcd cluster, storage nodes heartbeating both,
/// a client listing both: when the meta it uses dies, it fails over, and
/// every acknowledged file is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_meta_servers_on_etcd_and_client_failover() {
    deadline(async {
        use cairn_client::{Client, ClientConfig, PutOptions};
        use cairn_meta::server::{MetaConfig, CLIENT_KEY_FILE, SECRET_FILE};
        use cairn_meta::store_spec::StoreSpec;
        use cairn_proto::Credentials;

        let etcd = EtcdCluster::start(3).await;
        let dir = tempfile::tempdir().unwrap();
        let meta_cfg = |name: &str| {
            let mut m = MetaConfig::new(dir.path().join(name));
            m.store = StoreSpec::Etcd(etcd.config("/two-metas/"));
            m.default_rep = 2;
            m
        };
        let a = cairn_meta::server::start(meta_cfg("meta-a")).await.unwrap();
        // Every meta server of a cluster holds the same secret.
        std::fs::create_dir_all(dir.path().join("meta-b")).unwrap();
        for f in [SECRET_FILE, CLIENT_KEY_FILE] {
            std::fs::copy(
                dir.path().join("meta-a").join(f),
                dir.path().join("meta-b").join(f),
            )
            .unwrap();
        }
        // A meta with a secret of its own refuses the store, saying what to copy.
        let err = match cairn_meta::server::start(meta_cfg("meta-stranger")).await {
            Ok(_) => panic!("a meta with another cluster secret started on the shared store"),
            Err(e) => e,
        };
        assert!(
            err.message.contains("another secret") && err.message.contains(SECRET_FILE),
            "{err}"
        );
        let b = cairn_meta::server::start(meta_cfg("meta-b")).await.unwrap();
        let metas = vec![a.addr.clone(), b.addr.clone()];
        let creds = Credentials::Cluster(a.secret.clone());
        let mut nodes = Vec::new();
        for i in 0..3 {
            let mut sc = cairn_storage::StorageConfig::new(
                dir.path().join(format!("node-{i}")),
                metas.clone(),
            );
            sc.heartbeat = Duration::from_millis(200);
            sc.store.reserve_free = 0;
            nodes.push(cairn_storage::start(sc, creds.clone()).await.unwrap());
        }
        let client_creds = a.secret.client_credentials();
        let cl = Client::connect(ClientConfig::new(metas.clone(), client_creds.clone()))
            .await
            .unwrap();
        // Both metas see the nodes live.
        for m in [&a.addr, &b.addr] {
            let only = Client::connect(ClientConfig::new(vec![m.clone()], client_creds.clone()))
                .await
                .unwrap();
            cairn_testkit::wait_for(Duration::from_secs(30), || async {
                let s = only.cluster_status().await.ok()?;
                (s.nodes
                    .iter()
                    .filter(|n| n.state == cairn_proto::NodeState::Live)
                    .count()
                    == 3)
                    .then_some(())
            })
            .await;
        }
        let before = cairn_testkit::pattern(700_000, 1);
        cl.put_bytes(&p("/before"), &before, PutOptions::default())
            .await
            .unwrap();
        // A strict read through meta A right after meta B replaced the
        // file sees the new version: no metadata lease is handed out over
        // a shared store, where A cannot hold back B's change.
        let via =
            |m: &String| Client::connect(ClientConfig::new(vec![m.clone()], client_creds.clone()));
        let (via_a, via_b) = (via(&a.addr).await.unwrap(), via(&b.addr).await.unwrap());
        for i in 0..5u64 {
            let v = cairn_testkit::pattern(1000, 10 + i);
            via_b
                .put_bytes(&p("/leased"), &v, PutOptions::default())
                .await
                .unwrap();
            assert_eq!(
                via_a.get_bytes(&p("/leased")).await.unwrap(),
                v,
                "round {i}"
            );
        }
        // A rename whose answer through meta A was lost, sent again
        // through meta B, is applied once and answered as done.
        {
            use cairn_proto::{MetaClient, MetaRequest};
            let raw = |m: &String| MetaClient::new(vec![m.clone()], client_creds.clone());
            let once = || MetaRequest::As {
                client: 77,
                req: Box::new(MetaRequest::Once {
                    id: 0xfeed,
                    req: Box::new(MetaRequest::Rename {
                        src: p("/leased"),
                        dst: p("/renamed"),
                    }),
                }),
            };
            raw(&a.addr).call(once()).await.unwrap();
            raw(&b.addr).call(once()).await.unwrap();
            assert!(via_b.stat(&p("/renamed")).await.is_ok());

            // A commit through meta A that died after committing, before
            // marking its allocation records committed (the records are
            // set back to say so), sent again through meta B: B answers
            // it as done and keeps its chunks (discarding them, as chunks
            // of a failed commit, would lose the acknowledged file).
            let data = cairn_testkit::pattern(200_000, 3);
            let ext = via_a
                .write_chunk(&p("/retried"), bytes::Bytes::from(data.clone()), None)
                .await
                .unwrap();
            let store = etcd.store("/two-metas/").await;
            let key = [&[b'A'][..], &ext.chunk.0.to_be_bytes()].concat();
            let record = store.get(&key).await.unwrap().expect("allocation record").0;
            let client = u64::from_be_bytes(record[8..16].try_into().unwrap());
            let commit = || MetaRequest::As {
                client,
                req: Box::new(MetaRequest::Once {
                    id: 0xbeef,
                    req: Box::new(MetaRequest::CommitFile {
                        path: p("/retried"),
                        extents: vec![ext.clone()],
                        expected: None,
                        mode: None,
                        chunk_size: 256 * 1024,
                        xattrs: None,
                        cues: Default::default(),
                    }),
                }),
            };
            raw(&a.addr).call(commit()).await.unwrap();
            let mut unmarked = record.clone();
            *unmarked.last_mut().unwrap() = 0;
            store
                .commit(Txn::new().put(key.clone(), unmarked))
                .await
                .unwrap();
            raw(&b.addr).call(commit()).await.unwrap();
            let ns = Namespace::open(Arc::new(store), Duration::from_secs(60))
                .await
                .unwrap();
            assert!(
                !ns.garbage_chunks().await.unwrap().contains(&ext.chunk),
                "the chunk of a committed file was sent to garbage"
            );
            assert_eq!(via_b.get_bytes(&p("/retried")).await.unwrap(), data);
        }
        a.shutdown().await;
        // The same client now talks to meta B.
        assert_eq!(cl.get_bytes(&p("/before")).await.unwrap(), before);
        let after = cairn_testkit::pattern(300_000, 2);
        cl.put_bytes(&p("/after"), &after, PutOptions::default())
            .await
            .unwrap();
        assert_eq!(cl.get_bytes(&p("/after")).await.unwrap(), after);
        assert_eq!(cl.list_page(&p("/"), None, 10).await.unwrap().len(), 4);
        for n in nodes {
            n.shutdown().await;
        }
        b.shutdown().await;
    })
    .await
}

/// Two meta servers on one etcd cluster: exactly one is leader (runs repair
/// and garbage collection). The leader dies without a hand-over (its lease
/// is not revoked) while a client writes: the other takes over within
/// seconds, writes go on, no acknowledged file is lost, and the new
/// leader's repair planner re-creates the copies of a storage node that
/// dies afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_dies_and_the_other_meta_takes_over_the_background_work() {
    deadline(async {
        cairn_testkit::init_logs();
        use cairn_client::{Client, ClientConfig, PutOptions};
        use cairn_meta::server::{MetaConfig, CLIENT_KEY_FILE, SECRET_FILE};
        use cairn_meta::store_spec::StoreSpec;
        use cairn_proto::{Credentials, NodeState};

        let etcd = EtcdCluster::start(3).await;
        let dir = tempfile::tempdir().unwrap();
        let meta_cfg = |name: &str| {
            let mut m = MetaConfig::new(dir.path().join(name));
            m.store = StoreSpec::Etcd(etcd.config("/election/"));
            m.default_rep = 2;
            m.dead_after = Duration::from_millis(1500);
            m.gc_delay = Duration::from_millis(100);
            m.repair.interval = Duration::from_millis(200);
            m.repair.suspect_after = Duration::from_millis(1000);
            m.repair.bandwidth = 0;
            m
        };
        let a = cairn_meta::server::start(meta_cfg("meta-a")).await.unwrap();
        std::fs::create_dir_all(dir.path().join("meta-b")).unwrap();
        for f in [SECRET_FILE, CLIENT_KEY_FILE] {
            std::fs::copy(
                dir.path().join("meta-a").join(f),
                dir.path().join("meta-b").join(f),
            )
            .unwrap();
        }
        let b = cairn_meta::server::start(meta_cfg("meta-b")).await.unwrap();
        let mut metas = vec![Some(a), Some(b)];
        let addrs: Vec<String> = metas
            .iter()
            .map(|m| m.as_ref().unwrap().addr.clone())
            .collect();
        let secret = metas[0].as_ref().unwrap().secret.clone();
        let creds = Credentials::Cluster(secret.clone());
        let mut nodes = Vec::new();
        for i in 0..4 {
            let mut sc = cairn_storage::StorageConfig::new(
                dir.path().join(format!("node-{i}")),
                addrs.clone(),
            );
            sc.heartbeat = Duration::from_millis(200);
            sc.store.reserve_free = 0;
            nodes.push(Some(cairn_storage::start(sc, creds.clone()).await.unwrap()));
        }
        let client_creds = secret.client_credentials();
        let cl = Client::connect(ClientConfig::new(addrs.clone(), client_creds.clone()))
            .await
            .unwrap();
        // One client per meta server, to ask each what it is.
        let mut only = Vec::new();
        for m in &addrs {
            only.push(
                Client::connect(ClientConfig::new(vec![m.clone()], client_creds.clone()))
                    .await
                    .unwrap(),
            );
        }
        // Exactly one leader, and both metas see every node live.
        let leader = cairn_testkit::wait_for(Duration::from_secs(30), || async {
            let mut leaders = Vec::new();
            for (i, c) in only.iter().enumerate() {
                let s = c.cluster_status().await.ok()?;
                if s.nodes
                    .iter()
                    .filter(|n| n.state == NodeState::Live)
                    .count()
                    != 4
                {
                    return None;
                }
                if s.leader {
                    leaders.push(i);
                }
            }
            (leaders.len() == 1).then(|| leaders[0])
        })
        .await;
        let other = 1 - leader;
        assert!(!only[other].cluster_status().await.unwrap().leader);

        // A writer that keeps going through the kill.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = Arc::new(std::sync::Mutex::new(Vec::<(String, u64)>::new()));
        let opts = PutOptions {
            chunk_size: Some(256 * 1024),
            ..Default::default()
        };
        let writer = {
            let (cl, stop, acked, opts) = (cl.clone(), stop.clone(), acked.clone(), opts.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("/w{i}");
                    if cl
                        .put_bytes(&p(&path), &cairn_testkit::pattern(300_000, i), opts.clone())
                        .await
                        .is_ok()
                    {
                        acked.lock().unwrap().push((path, i));
                    }
                    i += 1;
                }
            })
        };
        cairn_testkit::wait_for(Duration::from_secs(30), || async {
            (acked.lock().unwrap().len() >= 3).then_some(())
        })
        .await;
        // The leader dies without handing over.
        let killed = Instant::now();
        metas[leader].take().unwrap().kill().await;
        cairn_testkit::wait_for(Duration::from_secs(15), || async {
            only[other]
                .cluster_status()
                .await
                .ok()?
                .leader
                .then_some(())
        })
        .await;
        let took = killed.elapsed();
        assert!(took < Duration::from_secs(10), "takeover took {took:?}");
        // Writes continue.
        let at_takeover = acked.lock().unwrap().len();
        cairn_testkit::wait_for(Duration::from_secs(30), || async {
            (acked.lock().unwrap().len() >= at_takeover + 3).then_some(())
        })
        .await;
        stop.store(true, Ordering::Relaxed);
        writer.await.unwrap();
        let acked = acked.lock().unwrap().clone();
        for (path, seed) in &acked {
            assert_eq!(
                cl.get_bytes(&p(path)).await.unwrap(),
                cairn_testkit::pattern(300_000, *seed),
                "{path} lost"
            );
        }

        // The new leader repairs: a storage node dies, its copies come back.
        let survivor = &only[other];
        let dead_node = nodes[0].as_ref().unwrap().id;
        nodes[0].take().unwrap().shutdown().await;
        cairn_testkit::wait_for(Duration::from_secs(60), || async {
            let s = survivor.cluster_status().await.ok()?;
            if s.under_replicated_chunks != 0 || s.repair.copies_done == 0 {
                return None;
            }
            for (path, _) in &acked {
                let open = survivor.locate(&p(path)).await.ok()?;
                for e in &open.inode.extents {
                    let distinct: HashSet<_> = e.nodes.iter().collect();
                    if distinct.len() != 2 || e.nodes.contains(&dead_node) {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await;
        for (path, seed) in &acked {
            assert_eq!(
                cl.get_bytes(&p(path)).await.unwrap(),
                cairn_testkit::pattern(300_000, *seed)
            );
        }
        for n in nodes.into_iter().flatten() {
            n.shutdown().await;
        }
        for m in metas.into_iter().flatten() {
            m.shutdown().await;
        }
    })
    .await
}

/// Two meta servers on one etcd cluster: the leader's orphan sweep knows
/// the chunks the other meta handed out (allocation records in etcd). A
/// chunk written through meta B and never committed is swept by the leader
/// (whichever it is) after the orphan window and cannot be committed late;
/// a chunk written through B and committed through A in time is accepted;
/// one written through the follower is not swept while a sweep runs within
/// its window; expired allocation records are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_sweep_with_two_meta_servers() {
    deadline(async {
        use cairn_client::{Client, ClientConfig, PutOptions};
        use cairn_meta::server::{MetaConfig, CLIENT_KEY_FILE, SECRET_FILE};
        use cairn_meta::store_spec::StoreSpec;
        use cairn_proto::{Credentials, NodeState};

        let etcd = EtcdCluster::start(3).await;
        let dir = tempfile::tempdir().unwrap();
        let orphan_after = Duration::from_secs(3);
        let meta_cfg = |name: &str| {
            let mut m = MetaConfig::new(dir.path().join(name));
            m.store = StoreSpec::Etcd(etcd.config("/sweep/"));
            m.default_rep = 2;
            m.gc_delay = Duration::from_millis(100);
            m.repair.interval = Duration::from_millis(200);
            m.repair.orphan_after = orphan_after;
            m.repair.bandwidth = 0;
            m
        };
        let a = cairn_meta::server::start(meta_cfg("meta-a")).await.unwrap();
        std::fs::create_dir_all(dir.path().join("meta-b")).unwrap();
        for f in [SECRET_FILE, CLIENT_KEY_FILE] {
            std::fs::copy(
                dir.path().join("meta-a").join(f),
                dir.path().join("meta-b").join(f),
            )
            .unwrap();
        }
        let b = cairn_meta::server::start(meta_cfg("meta-b")).await.unwrap();
        let addrs = vec![a.addr.clone(), b.addr.clone()];
        let creds = Credentials::Cluster(a.secret.clone());
        let mut nodes = Vec::new();
        for i in 0..3 {
            let mut sc = cairn_storage::StorageConfig::new(
                dir.path().join(format!("node-{i}")),
                addrs.clone(),
            );
            sc.heartbeat = Duration::from_millis(200);
            sc.store.reserve_free = 0;
            nodes.push(cairn_storage::start(sc, creds.clone()).await.unwrap());
        }
        let client_creds = a.secret.client_credentials();
        let mut only = Vec::new();
        for m in &addrs {
            only.push(
                Client::connect(ClientConfig::new(vec![m.clone()], client_creds.clone()))
                    .await
                    .unwrap(),
            );
        }
        let (ca, cb) = (&only[0], &only[1]);
        let leader = cairn_testkit::wait_for(Duration::from_secs(30), || async {
            let mut leaders = Vec::new();
            for (i, c) in only.iter().enumerate() {
                let s = c.cluster_status().await.ok()?;
                let live = s.nodes.iter().filter(|n| n.state == NodeState::Live);
                if live.count() != 3 {
                    return None;
                }
                if s.leader {
                    leaders.push(i);
                }
            }
            (leaders.len() == 1).then(|| leaders[0])
        })
        .await;
        let stored = || async {
            let s = ca.cluster_status().await.ok()?;
            Some(s.nodes.iter().map(|n| n.stats.chunks).sum::<u64>())
        };
        let swept = || async {
            let mut n = 0;
            for c in &only {
                n += c.cluster_status().await.ok()?.repair.orphans_deleted;
            }
            Some(n)
        };
        let opts = PutOptions {
            chunk_size: Some(256 * 1024),
            ..Default::default()
        };
        ca.put_bytes(
            &p("/kept"),
            &cairn_testkit::pattern(100_000, 1),
            opts.clone(),
        )
        .await
        .unwrap();
        // Written through B, never committed.
        let orphan = cb
            .write_chunk(
                &p("/lost"),
                bytes::Bytes::from(cairn_testkit::pattern(50_000, 2)),
                None,
            )
            .await
            .unwrap();
        // Written through B, committed through A in time: A knows of it
        // only from the allocation record.
        let late = cb
            .write_chunk(
                &p("/late"),
                bytes::Bytes::from(cairn_testkit::pattern(60_000, 3)),
                None,
            )
            .await
            .unwrap();
        ca.commit(&p("/late"), vec![late], None, 0o644, 256 * 1024, None)
            .await
            .unwrap();
        cairn_testkit::wait_for(Duration::from_secs(20), || async {
            (stored().await? == 3 * 2).then_some(())
        })
        .await;
        // The leader sweeps B's orphan (both copies) after the window.
        cairn_testkit::wait_for(Duration::from_secs(40), || async {
            (swept().await? >= 2 && stored().await? == 2 * 2).then_some(())
        })
        .await;
        assert!(
            only[leader]
                .cluster_status()
                .await
                .unwrap()
                .repair
                .orphans_deleted
                >= 2,
            "the leader swept"
        );
        // Committing it now would reference deleted bytes: refused, on
        // either meta.
        for c in [ca, cb] {
            let e = c
                .commit(
                    &p("/lost"),
                    vec![orphan.clone()],
                    None,
                    0o644,
                    256 * 1024,
                    None,
                )
                .await
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        }
        // A chunk the follower hands out survives the leader's sweeps
        // within its window, and the leader accepts its commit.
        let follower = &only[1 - leader];
        let before = swept().await.unwrap();
        let fresh = follower
            .write_chunk(
                &p("/fresh"),
                bytes::Bytes::from(cairn_testkit::pattern(70_000, 4)),
                None,
            )
            .await
            .unwrap();
        let written = Instant::now();
        tokio::time::sleep(orphan_after * 2 / 3).await;
        only[leader]
            .commit(&p("/fresh"), vec![fresh], None, 0o644, 256 * 1024, None)
            .await
            .unwrap();
        assert!(written.elapsed() < orphan_after);
        assert_eq!(swept().await.unwrap(), before, "nothing else was swept");
        for (path, len, seed) in [
            ("/kept", 100_000, 1),
            ("/late", 60_000, 3),
            ("/fresh", 70_000, 4),
        ] {
            assert_eq!(
                ca.get_bytes(&p(path)).await.unwrap(),
                cairn_testkit::pattern(len, seed),
                "{path}"
            );
        }
        // Allocation records expire and are deleted by the sweep.
        let store = etcd.store("/sweep/").await;
        cairn_testkit::wait_for(Duration::from_secs(30), || async {
            store
                .scan(b"A", b"B", 10)
                .await
                .ok()?
                .is_empty()
                .then_some(())
        })
        .await;
        for n in nodes {
            n.shutdown().await;
        }
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
}

/// Two meta servers' lock tables over one etcd never grant conflicting
/// locks: owners of both race for one exclusive range, blocking and not;
/// whoever holds it checks that nobody else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_metas_never_grant_conflicting_locks() {
    deadline(async {
        use cairn_meta::locks::Locks;
        use cairn_proto::{LockAnswer, LockKind, LockOwner, LockRequest};
        let c = EtcdCluster::start(3).await;
        let tables = [
            Arc::new(Locks::new(Arc::new(c.store("locks").await))),
            Arc::new(Locks::new(Arc::new(c.store("locks").await))),
        ];
        let inside = Arc::new(AtomicU64::new(0));
        let granted = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for k in 0..6u64 {
            let t = tables[k as usize % 2].clone();
            let (inside, granted) = (inside.clone(), granted.clone());
            tasks.push(tokio::spawn(async move {
                let (session, _) = t.open_session(30_000).await.unwrap();
                let req = |kind| LockRequest {
                    path: p("/db"),
                    owner: LockOwner { session, owner: 1 },
                    kind,
                    start: 100,
                    end: 199,
                    pid: k as u32,
                };
                for round in 0..6 {
                    // Odd owners only try; even ones wait their turn.
                    let wait = k % 2 == 0;
                    let a = t
                        .lock(InodeId(7), &req(LockKind::Exclusive), wait)
                        .await
                        .unwrap();
                    match a {
                        LockAnswer::Granted => {
                            assert_eq!(
                                inside.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two holders at once"
                            );
                            granted.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            inside.fetch_sub(1, Ordering::SeqCst);
                            let u = t
                                .lock(InodeId(7), &req(LockKind::Unlock), false)
                                .await
                                .unwrap();
                            assert_eq!(u, LockAnswer::Granted);
                        }
                        LockAnswer::Conflict(h) => assert_ne!(h.owner.session, session),
                        LockAnswer::Waiting if wait => {}
                        other => panic!("round {round}: {other:?}"),
                    }
                }
                t.end_session(session).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Every waiting owner got it each round it was not answered Waiting;
        // at least the waiters' rounds were granted.
        assert!(granted.load(Ordering::SeqCst) >= 6, "{granted:?}");
    })
    .await;
}

/// Two meta servers on one etcd share the client identities: one made
/// through meta A works through meta B at once, and one revoked through A
/// is refused by B within seconds, on the connection its client holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_shared_and_revoked_on_every_meta() {
    deadline(async {
        use cairn_client::{Client, ClientConfig, PutOptions};
        use cairn_meta::server::{MetaConfig, CLIENT_KEY_FILE, SECRET_FILE};
        use cairn_meta::store_spec::StoreSpec;
        use cairn_proto::{PathRight, Rights};

        let etcd = EtcdCluster::start(3).await;
        let dir = tempfile::tempdir().unwrap();
        let meta_cfg = |name: &str| {
            let mut m = MetaConfig::new(dir.path().join(name));
            m.store = StoreSpec::Etcd(etcd.config("/identities/"));
            m
        };
        let a = cairn_meta::server::start(meta_cfg("meta-a")).await.unwrap();
        std::fs::create_dir_all(dir.path().join("meta-b")).unwrap();
        for f in [SECRET_FILE, CLIENT_KEY_FILE] {
            std::fs::copy(
                dir.path().join("meta-a").join(f),
                dir.path().join("meta-b").join(f),
            )
            .unwrap();
        }
        let b = cairn_meta::server::start(meta_cfg("meta-b")).await.unwrap();
        let admin_a = Client::connect(ClientConfig::new(
            vec![a.addr.clone()],
            a.secret.client_credentials(),
        ))
        .await
        .unwrap();
        let rights = Rights {
            admin: false,
            prefixes: vec![PathRight {
                path: p("/fleet/car9"),
                write: true,
            }],
        };
        let (_, creds) = admin_a.identity_create("car9", rights).await.unwrap();
        // Through B, at once: it reads the identities again for one it
        // does not know.
        let car = Client::connect(ClientConfig::new(vec![b.addr.clone()], creds))
            .await
            .unwrap();
        car.put_bytes(&p("/fleet/car9/hello"), b"hi", PutOptions::default())
            .await
            .unwrap();
        let e = car
            .put_bytes(&p("/fleet/x"), b"hi", PutOptions::default())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        admin_a.identity_revoke("car9").await.unwrap();
        let started = Instant::now();
        let e = cairn_testkit::wait_for(Duration::from_secs(20), || async {
            car.stat(&p("/fleet/car9/hello")).await.err()
        })
        .await;
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        eprintln!(
            "meta B refused the revoked identity after {:?}",
            started.elapsed()
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await
}
