//! Client identities with scoped rights, end to end: meta checks every
//! request against the identity's prefixes and admin right and refuses
//! with `PermissionDenied`, changing nothing; capabilities are bound to
//! the identity they were handed to; a revoked identity is refused on
//! connections it already holds.

use cairn_client::{Client, PutOptions};
use cairn_proto::{
    connect, Credentials, GetChunkResult, MetaClient, MetaRequest, MetaResponse, PathRight, Rights,
    StorageRequest,
};
use cairn_testkit::{pattern, wait_for, TestCluster};
use cairn_types::{CairnPath, Cues, ErrorKind, Extent};
use std::time::Duration;

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(180), f)
        .await
        .expect("test exceeded its deadline")
}

/// Files written as chunks, so that reads go to storage nodes.
fn chunked() -> PutOptions {
    PutOptions {
        cues: Cues {
            inline: Some(0),
            ..Default::default()
        },
        ..PutOptions::default()
    }
}

fn rights(rw: &[&str], ro: &[&str]) -> Rights {
    let mut prefixes = Vec::new();
    for (list, write) in [(rw, true), (ro, false)] {
        for path in list {
            prefixes.push(PathRight {
                path: p(path),
                write,
            });
        }
    }
    Rights {
        admin: false,
        prefixes,
    }
}

async fn client_as(c: &TestCluster, creds: &Credentials) -> Client {
    let creds = creds.clone();
    c.client_with(move |cfg| cfg.creds = creds).await
}

fn denied<T: std::fmt::Debug>(r: cairn_types::Result<T>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.kind, ErrorKind::PermissionDenied, "{what}: {e}");
}

/// Everything under `/`, as (path, size), from the admin's view.
async fn tree(admin: &Client) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![CairnPath::root()];
    while let Some(d) = todo.pop() {
        for e in admin.list_all(&d).await.unwrap() {
            let path = d.join(&e.name).unwrap();
            if e.inode.kind == cairn_types::InodeKind::Directory {
                todo.push(path.clone());
            }
            out.push((path.to_string(), e.inode.size));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_held_to_their_prefixes() {
    deadline(async {
        let c = TestCluster::start(2, 2).await;
        let admin = c.client().await;
        let train = pattern(300_000, 1);
        admin.mkdir(&p("/datasets"), true).await.unwrap();
        admin.mkdir(&p("/fleet/car41"), true).await.unwrap();
        admin
            .put_bytes(&p("/datasets/train.bin"), &train, chunked())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        admin
            .put_bytes(&p("/fleet/car41/log"), b"car41's", PutOptions::default())
            .await
            .unwrap();
        admin.mkdir(&p("/other"), true).await.unwrap();
        let (info, creds) = admin
            .identity_create("car42", rights(&["/fleet/car42"], &["/datasets"]))
            .await
            .unwrap();
        assert_eq!(info.name, "car42");
        // Its prefix was made for it.
        assert!(admin.stat(&p("/fleet/car42")).await.is_ok());
        let car = client_as(&c, &creds).await;

        // Inside its prefixes: write and read; read-only data is read
        // from storage nodes with capabilities bound to it.
        car.put_bytes(&p("/fleet/car42/a"), &pattern(200_000, 2), chunked())
            .await
            .unwrap();
        assert_eq!(
            car.get_bytes(&p("/fleet/car42/a")).await.unwrap(),
            pattern(200_000, 2)
        );
        car.rename(&p("/fleet/car42/a"), &p("/fleet/car42/b"))
            .await
            .unwrap();
        assert_eq!(
            car.get_bytes(&p("/datasets/train.bin")).await.unwrap(),
            train
        );
        // On the way to its prefixes: stat, and listings showing only the way.
        assert!(car.stat(&p("/fleet")).await.is_ok());
        let names = |v: Vec<cairn_types::DirEntry>| -> Vec<String> {
            v.into_iter().map(|e| e.name).collect()
        };
        assert_eq!(
            names(car.list_all(&CairnPath::root()).await.unwrap()),
            ["datasets", "fleet"]
        );
        assert_eq!(names(car.list_all(&p("/fleet")).await.unwrap()), ["car42"]);
        assert_eq!(
            names(admin.list_all(&p("/fleet")).await.unwrap()),
            ["car41", "car42"]
        );

        let before = tree(&admin).await;
        // Everything else is refused and changes nothing.
        denied(
            car.put_bytes(&p("/datasets/x"), b"x", PutOptions::default())
                .await,
            "write into a read-only prefix",
        );
        denied(
            car.put_bytes(&p("/fleet/car41/x"), b"x", PutOptions::default())
                .await,
            "write into another car's prefix",
        );
        denied(
            car.put_bytes(&p("/fleet/car41/big"), &pattern(100_000, 3), chunked())
                .await,
            "a chunked write outside",
        );
        denied(car.get_bytes(&p("/fleet/car41/log")).await, "read outside");
        denied(car.stat(&p("/fleet/car41/log")).await, "stat outside");
        denied(car.list_all(&p("/fleet/car41")).await, "list outside");
        denied(car.remove(&CairnPath::root(), true).await, "rm -r /");
        denied(car.remove(&p("/fleet"), true).await, "rm -r /fleet");
        denied(
            car.remove(&p("/datasets/train.bin"), false).await,
            "rm of read-only data",
        );
        denied(
            car.rename(&p("/fleet/car42/b"), &p("/fleet/car41/b")).await,
            "rename out of the prefix",
        );
        denied(
            car.rename(&p("/fleet/car41/log"), &p("/fleet/car42/log"))
                .await,
            "rename into the prefix",
        );
        denied(
            car.link(&p("/datasets/train.bin"), &p("/fleet/car42/t"))
                .await,
            "hard link of read-only data",
        );
        denied(car.mkdir(&p("/top"), false).await, "mkdir at the top");
        denied(
            car.set_cues(&CairnPath::root(), &Cues::parse("rep=1").unwrap(), false)
                .await,
            "cluster-wide cues",
        );
        denied(
            car.set_cues(&p("/datasets"), &Cues::parse("rep=1").unwrap(), false)
                .await,
            "cues on read-only data",
        );
        denied(
            car.drain(cairn_types::NodeId(1), false).await,
            "drain a node",
        );
        denied(
            car.identity_create("car43", Rights::all()).await,
            "make an identity",
        );
        denied(car.identities().await, "list identities");
        denied(car.identity_revoke("car42").await, "revoke itself");
        assert_eq!(
            tree(&admin).await,
            before,
            "a refused request changed something"
        );
        assert_eq!(admin.identities().await.unwrap().len(), 1);
        c.shutdown().await;
    })
    .await
}

/// A capability captured from one client is refused to every other: a
/// client outside the data's prefix cannot read its chunks with it, nor
/// can the admin key's clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_capabilities_serve_only_their_holder() {
    deadline(async {
        let c = TestCluster::start(1, 1).await;
        let admin = c.client().await;
        let data = pattern(100_000, 4);
        admin.mkdir(&p("/datasets"), true).await.unwrap();
        admin
            .put_bytes(&p("/datasets/secret.bin"), &data, chunked())
            .await
            .unwrap();
        let (_, reader) = admin
            .identity_create("reader", rights(&[], &["/datasets"]))
            .await
            .unwrap();
        let (_, thief) = admin
            .identity_create("thief", rights(&["/fleet/thief"], &[]))
            .await
            .unwrap();
        let open = client_as(&c, &reader)
            .await
            .locate(&p("/datasets/secret.bin"))
            .await
            .unwrap();
        let ext = &open.inode.extents[0];
        let node = open.nodes.iter().find(|n| n.id == ext.nodes[0]).unwrap();
        let get = StorageRequest::GetChunk {
            chunk: ext.chunk,
            offset: 0,
            len: 4096,
            cap: open.caps[0].clone(),
        };
        let try_with = |creds: Credentials| {
            let (addr, get) = (node.addr.clone(), get.clone());
            async move {
                let mut conn = connect(&addr, &creds, Duration::from_secs(5)).await?;
                let r: GetChunkResult = conn.call(&get, Duration::from_secs(5)).await?;
                r.map(|_| ())
            }
        };
        // Its holder reads with it (the request is well formed)...
        try_with(reader.clone()).await.unwrap();
        // ...nobody else does.
        denied(try_with(thief.clone()).await, "another identity");
        let admin_key = c.meta.as_ref().unwrap().secret.client_credentials();
        denied(try_with(admin_key).await, "the admin key");
        // And the thief's own request for the file is refused by meta.
        denied(
            client_as(&c, &thief)
                .await
                .locate(&p("/datasets/secret.bin"))
                .await,
            "open outside",
        );
        c.shutdown().await;
    })
    .await
}

/// A revoked identity is refused from its next request on, on the
/// connection it already has and on new ones; a new identity of the same
/// name has another key, and the old credentials stay refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_identities_are_refused_at_once() {
    deadline(async {
        let c = TestCluster::start(1, 1).await;
        let admin = c.client().await;
        let (_, old) = admin
            .identity_create("laptop", rights(&["/home/ann"], &[]))
            .await
            .unwrap();
        let laptop = client_as(&c, &old).await;
        laptop
            .put_bytes(&p("/home/ann/notes"), b"v1", PutOptions::default())
            .await
            .unwrap();
        admin.identity_revoke("laptop").await.unwrap();
        denied(
            laptop
                .put_bytes(&p("/home/ann/notes"), b"v2", PutOptions::default())
                .await,
            "a write after the revocation",
        );
        denied(laptop.stat(&p("/home/ann/notes")).await, "a read after it");
        let again = old.clone();
        let e = Client::connect(cairn_client::ClientConfig::new(vec![c.meta_addr()], again))
            .await
            .err()
            .expect("a new connection of a revoked identity is refused");
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        let e = admin.identity_revoke("laptop").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound);

        let (_, new) = admin
            .identity_create("laptop", rights(&["/home/ann"], &[]))
            .await
            .unwrap();
        assert_ne!(new.encode(), old.encode());
        assert_eq!(
            client_as(&c, &new)
                .await
                .get_bytes(&p("/home/ann/notes"))
                .await
                .unwrap(),
            b"v1"
        );
        let e = Client::connect(cairn_client::ClientConfig::new(vec![c.meta_addr()], old))
            .await
            .err()
            .expect("the old credentials stay refused");
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        let e = admin
            .identity_create("laptop", Rights::all())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        // A bad name is refused before anything is made.
        let e = admin
            .identity_create("bad name", rights(&["/made/never"], &[]))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput, "{e}");
        let e = admin.stat(&p("/made")).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
        c.shutdown().await;
    })
    .await
}

/// Chunks handed to one identity can be discarded by no other, even one
/// that names the same client id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_cannot_discard_each_others_chunks() {
    deadline(async {
        let c = TestCluster::start(1, 1).await;
        let admin = c.client().await;
        let (_, a) = admin
            .identity_create("a", rights(&["/shared"], &[]))
            .await
            .unwrap();
        let (_, b) = admin
            .identity_create("b", rights(&["/shared"], &[]))
            .await
            .unwrap();
        let as_client = |req: MetaRequest| MetaRequest::As {
            client: 7,
            req: Box::new(req),
        };
        let alloc = MetaRequest::AllocChunk {
            path: p("/shared/f"),
            cues: Cues::default(),
            host: None,
            exclude: vec![],
            len: 10,
        };
        let meta_a = MetaClient::new(vec![c.meta_addr()], a);
        let ext = match meta_a.call(as_client(alloc)).await.unwrap() {
            MetaResponse::Alloc(al) => {
                Extent::replicated(al.chunk, 10, 0, al.nodes.iter().map(|n| n.id).collect())
            }
            other => panic!("{other:?}"),
        };
        let discard = MetaRequest::Discard {
            extents: vec![ext.clone()],
        };
        let meta_b = MetaClient::new(vec![c.meta_addr()], b);
        denied(
            meta_b.call(as_client(discard.clone())).await,
            "discard another identity's chunk",
        );
        meta_a.call(as_client(discard)).await.unwrap();
        c.shutdown().await;
    })
    .await
}

/// The audit log names the identity of every change and every refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_names_identities() {
    deadline(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let log2 = log.clone();
        let c = TestCluster::start_with(1, move |m| m.audit_log = Some(log2)).await;
        let admin = c.client().await;
        let (_, creds) = admin
            .identity_create("car7", rights(&["/fleet/car7"], &[]))
            .await
            .unwrap();
        let car = client_as(&c, &creds).await;
        car.mkdir(&p("/fleet/car7/run1"), false).await.unwrap();
        denied(car.mkdir(&p("/fleet/car8"), false).await, "outside");
        let lines: Vec<serde_json::Value> = wait_for(Duration::from_secs(10), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() >= 3).then_some(lines)
        })
        .await;
        let find = |op: &str, path: &str| {
            lines
                .iter()
                .find(|l| l["op"] == op && l["paths"][0] == path)
                .unwrap_or_else(|| panic!("no {op} of {path} in {lines:?}"))
                .clone()
        };
        let made = lines.iter().find(|l| l["op"] == "identity_create").unwrap();
        assert_eq!(made["identity"], "admin");
        let ok = find("mkdir", "/fleet/car7/run1");
        assert_eq!(ok["identity"], "car7");
        assert_eq!(ok["outcome"], "ok");
        let refused = find("mkdir", "/fleet/car8");
        assert_eq!(refused["identity"], "car7");
        assert_eq!(refused["outcome"], "PermissionDenied");
        c.shutdown().await;
    })
    .await
}
