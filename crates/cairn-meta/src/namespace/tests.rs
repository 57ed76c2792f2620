use super::layouts::{cues_v1, cues_v2, cues_v3, extent_v1};
use super::*;
use crate::store_redb::RedbStore;

use std::collections::BTreeMap;

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

fn ext(chunk: u128, len: u64) -> Extent {
    Extent::replicated(ChunkId(chunk), len, 7, vec![NodeId(1), NodeId(2)])
}

/// [`ext`] as layouts before erasure coding wrote it.
fn old_ext(chunk: u128, len: u64) -> extent_v1::Extent {
    extent_v1::Extent {
        chunk: ChunkId(chunk),
        len,
        crc: 7,
        nodes: vec![NodeId(1), NodeId(2)],
    }
}

async fn open_ns(gc_delay: Duration) -> (tempfile::TempDir, Namespace) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("meta.redb")).unwrap());
    (dir, Namespace::open(store, gc_delay).await.unwrap())
}

/// Every queued garbage chunk, due or not.
async fn pending_garbage(ns: &Namespace) -> Vec<ChunkId> {
    let kvs = ns
        .store
        .scan(&[GARBAGE], &[GARBAGE + 1], usize::MAX)
        .await
        .unwrap();
    kvs.iter()
        .map(|kv| decode::<GarbageChunk>(&kv.value).unwrap().chunk)
        .collect()
}

/// A 2+1 stripe of 1000 bytes on nodes 5, 6 and 7.
fn stripe_ext(stripe: ChunkId) -> Extent {
    let scheme = cairn_types::EcScheme::new(2, 1).unwrap();
    Extent {
        ec: Some(cairn_types::EcShards {
            scheme,
            shard_len: scheme.shard_len(1000),
            crcs: vec![11, 12, 13],
        }),
        ..Extent::replicated(stripe, 1000, 9, vec![NodeId(5), NodeId(6), NodeId(7)])
    }
}

fn kind<T>(r: Result<T>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind,
    }
}

fn set(name: &str, value: &[u8], when: XattrWhen) -> XattrOp {
    XattrOp::Set {
        name: name.to_string(),
        value: value.to_vec(),
        when,
    }
}

#[tokio::test]
async fn set_attr_changes_attributes_in_one_transaction() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let f = ns
        .commit_file(&p("/f"), vec![ext(1, 10)], None, 0o644, 10)
        .await
        .unwrap();
    assert_eq!((f.uid, f.gid), (None, None));
    let changes = AttrChanges {
        mode: Some(0o100600),
        uid: Some(1000),
        gid: Some(100),
        mtime_ns: Some(1_000_000_123_456_789),
        atime_ns: Some(7),
        xattrs: vec![set("user.a", b"1", XattrWhen::Create)],
        accessed: false,
    };
    let got = ns.set_attr(&p("/f"), Some(f.id), &changes).await.unwrap();
    assert_eq!(got.mode, 0o600, "the file type bits are not kept");
    assert_eq!(
        (got.uid, got.gid, got.mtime_ns, got.atime_ns),
        (Some(1000), Some(100), 1_000_000_123_456_789, 7),
        "times are kept to the nanosecond"
    );
    assert!(
        got.ctime_ns > f.ctime_ns,
        "a change of attributes is a ctime"
    );
    assert_eq!(got.version, f.version, "attributes are no new version");
    assert_eq!(got.extents, f.extents);
    assert_eq!(ns.lookup(&p("/f")).await.unwrap(), got);

    // Preconditions: nothing changes when one fails.
    let both = AttrChanges {
        mode: Some(0o777),
        xattrs: vec![
            set("user.b", b"2", XattrWhen::Always),
            set("user.a", b"x", XattrWhen::Create),
        ],
        ..AttrChanges::default()
    };
    let e = ns.set_attr(&p("/f"), None, &both).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists, "{e}");
    let replace = AttrChanges {
        xattrs: vec![set("user.zz", b"2", XattrWhen::Replace)],
        ..AttrChanges::default()
    };
    assert_eq!(
        kind(ns.set_attr(&p("/f"), None, &replace).await),
        ErrorKind::NotFound
    );
    let remove = AttrChanges {
        xattrs: vec![XattrOp::Remove {
            name: "user.zz".into(),
        }],
        ..AttrChanges::default()
    };
    assert_eq!(
        kind(ns.set_attr(&p("/f"), None, &remove).await),
        ErrorKind::NotFound
    );
    assert_eq!(ns.lookup(&p("/f")).await.unwrap(), got);

    // A new version keeps owner and attributes; a wrong id is NotFound.
    let v2 = ns
        .commit_file(&p("/f"), vec![ext(2, 3)], None, 0o640, 10)
        .await
        .unwrap();
    assert_eq!((v2.uid, v2.gid), (Some(1000), Some(100)));
    assert_eq!(v2.xattrs.get("user.a").map(Vec::as_slice), Some(&b"1"[..]));
    let other = AttrChanges {
        mode: Some(0o600),
        ..AttrChanges::default()
    };
    assert_eq!(
        kind(ns.set_attr(&p("/f"), Some(InodeId(12345)), &other).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(ns.set_attr(&p("/nope"), None, &other).await),
        ErrorKind::NotFound
    );

    // Limits: a value over 64 KiB, then the total.
    let big = AttrChanges {
        xattrs: vec![set(
            "user.big",
            &vec![0; MAX_XATTR_VALUE_LEN + 1],
            XattrWhen::Always,
        )],
        ..AttrChanges::default()
    };
    assert_eq!(
        kind(ns.set_attr(&p("/f"), None, &big).await),
        ErrorKind::InvalidInput
    );
    let mut total = AttrChanges::default();
    for i in 0..5 {
        total.xattrs.push(set(
            &format!("user.v{i}"),
            &vec![0; MAX_XATTR_VALUE_LEN],
            XattrWhen::Always,
        ));
    }
    assert_eq!(
        kind(ns.set_attr(&p("/f"), None, &total).await),
        ErrorKind::NoSpace
    );

    // The root too.
    let root = ns.set_attr(&p("/"), None, &other).await.unwrap();
    assert_eq!(root.mode, 0o600);
    assert_eq!(ns.lookup(&p("/")).await.unwrap().mode, 0o600);
}

#[tokio::test]
async fn inodes_of_the_v2_layout_decode_with_one_name() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let old = v2::Inode {
        id: InodeId(78),
        kind: InodeKind::Symlink,
        size: 3,
        version: Version(1),
        mtime_ms: 5,
        ctime_ms: 6,
        mode: 0o777,
        extents: vec![],
        chunk_size: 0,
        xattrs: Xattrs::new(),
        uid: Some(4),
        gid: Some(5),
        target: Some("abc".into()),
        cues: cues_v1::Cues {
            rep: Some(2),
            ..Default::default()
        },
    };
    let txn = Txn::new().put(entry_key(InodeId::ROOT, "l"), encode(&old));
    ns.store.commit(txn).await.unwrap();
    let got = ns.lookup(&p("/l")).await.unwrap();
    assert_eq!(
        (got.nlink, got.uid, got.target.as_deref()),
        (1, Some(4), Some("abc"))
    );
    assert_eq!(got.cues.rep, Some(2));
}

#[tokio::test]
async fn inodes_from_before_the_hot_cue_decode() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let old = v3::Inode {
        id: InodeId(79),
        kind: InodeKind::File,
        size: 0,
        version: Version(4),
        mtime_ms: 5,
        ctime_ms: 6,
        mode: 0o640,
        extents: vec![],
        chunk_size: 1 << 20,
        xattrs: Xattrs::new(),
        uid: None,
        gid: None,
        target: None,
        cues: cues_v1::Cues {
            rep: Some(1),
            hotspot: Some(true),
            ..Default::default()
        },
        nlink: 1,
    };
    let txn = Txn::new().put(entry_key(InodeId::ROOT, "h"), encode(&old));
    ns.store.commit(txn).await.unwrap();
    let got = ns.lookup(&p("/h")).await.unwrap();
    assert_eq!((got.version, got.mode, got.nlink), (Version(4), 0o640, 1));
    assert_eq!(got.cues, Cues::parse("rep=1,hotspot").unwrap());
    // Written back in the current layout, with the new cue.
    let hot = Cues::parse("hot=actor").unwrap();
    ns.set_cues(&p("/h"), &hot, false).await.unwrap();
    let got = ns.lookup(&p("/h")).await.unwrap();
    assert_eq!(got.cues.hot.as_deref(), Some("actor"));
    assert_eq!(got.cues.rep, Some(1));
}

async fn count_scanned(ns: &Namespace, id: InodeId) -> usize {
    let (files, _) = ns.scan_files(None, 10_000).await.unwrap();
    files.iter().filter(|(_, i)| i.id == id).count()
}

#[tokio::test]
async fn hard_links_share_one_record() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/d"), false).await.unwrap();
    let a = ns
        .commit_file(&p("/a"), vec![ext(1, 10)], None, 0o644, 10)
        .await
        .unwrap();
    assert_eq!(a.nlink, 1);
    assert_eq!(
        kind(ns.link(&p("/d"), &p("/x")).await),
        ErrorKind::PermissionDenied
    );
    assert_eq!(
        kind(ns.link(&p("/a"), &p("/d")).await),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(ns.link(&p("/nope"), &p("/y")).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(ns.link(&p("/a"), &p("/nodir/y")).await),
        ErrorKind::NotFound
    );
    let linked = ns.link(&p("/a"), &p("/d/b")).await.unwrap();
    assert_eq!((linked.id, linked.nlink), (a.id, 2));
    let b = ns.lookup(&p("/d/b")).await.unwrap();
    assert_eq!(b, ns.lookup(&p("/a")).await.unwrap());
    assert_eq!((b.nlink, b.extents.len()), (2, 1));
    // A new version through one name is the file of every name; only
    // the replaced chunk is garbage.
    let v2 = ns
        .commit_file(&p("/d/b"), vec![ext(2, 5)], Some(Version(1)), 0o600, 10)
        .await
        .unwrap();
    assert_eq!((v2.id, v2.version, v2.nlink), (a.id, Version(2), 2));
    assert_eq!(ns.lookup(&p("/a")).await.unwrap(), v2);
    assert_eq!(pending_garbage(&ns).await, vec![ChunkId(1)]);
    let changes = AttrChanges {
        mode: Some(0o640),
        ..AttrChanges::default()
    };
    ns.set_attr(&p("/a"), Some(a.id), &changes).await.unwrap();
    assert_eq!(ns.lookup(&p("/d/b")).await.unwrap().mode, 0o640);
    ns.set_cues(&p("/d/b"), &Cues::parse("rep=1").unwrap(), false)
        .await
        .unwrap();
    assert_eq!(ns.cues(&p("/a")).await.unwrap().effective.rep, Some(1));
    // Listings show the record; repair scans it once, at its own key.
    let listed = ns.list(&p("/d"), None, 10).await.unwrap();
    assert_eq!(listed[0].inode.extents, v2.extents);
    assert_eq!(listed[0].inode.nlink, 2);
    assert_eq!(count_scanned(&ns, a.id).await, 1);
    let (files, _) = ns.scan_files(None, 10_000).await.unwrap();
    let key = files.iter().find(|(_, i)| i.id == a.id).unwrap().0.clone();
    assert!(ns
        .set_chunk_nodes(&key, ChunkId(2), &[NodeId(9)])
        .await
        .unwrap());
    assert_eq!(
        ns.lookup(&p("/a")).await.unwrap().extents[0].nodes,
        vec![NodeId(9)]
    );
    // Renaming a name keeps the link; renaming one name over another
    // of the same file does nothing.
    ns.rename(&p("/d/b"), &p("/c")).await.unwrap();
    ns.rename(&p("/a"), &p("/c")).await.unwrap();
    assert_eq!(ns.lookup(&p("/a")).await.unwrap().nlink, 2);
    assert_eq!(ns.lookup(&p("/c")).await.unwrap().id, a.id);
    // Compose would hand the chunks to a second file.
    assert_eq!(
        kind(ns.compose(&p("/z"), &[p("/a")], None, 0o644, None).await),
        ErrorKind::InvalidInput
    );
    // Removing a name leaves the file to the others.
    ns.remove(&p("/a"), false).await.unwrap();
    assert_eq!(kind(ns.lookup(&p("/a")).await), ErrorKind::NotFound);
    let c = ns.lookup(&p("/c")).await.unwrap();
    assert_eq!((c.nlink, c.id), (1, a.id));
    assert_eq!(pending_garbage(&ns).await, vec![ChunkId(1)]);
    // Replacing a name by rename drops only that name.
    ns.link(&p("/c"), &p("/d/e")).await.unwrap();
    ns.commit_file(&p("/n"), vec![ext(3, 1)], None, 0o644, 1)
        .await
        .unwrap();
    ns.rename(&p("/n"), &p("/d/e")).await.unwrap();
    assert_eq!(ns.lookup(&p("/c")).await.unwrap().nlink, 1);
    assert_eq!(
        ns.lookup(&p("/d/e")).await.unwrap().extents[0].chunk,
        ChunkId(3)
    );
    assert_eq!(pending_garbage(&ns).await, vec![ChunkId(1)]);
    // Two names in a removed tree, a third outside: purging the tree
    // leaves the file; removing the last name collects it.
    ns.mkdir(&p("/t"), false).await.unwrap();
    ns.link(&p("/c"), &p("/t/x")).await.unwrap();
    ns.link(&p("/c"), &p("/t/y")).await.unwrap();
    assert_eq!(ns.lookup(&p("/c")).await.unwrap().nlink, 3);
    ns.remove(&p("/t"), true).await.unwrap();
    while ns.purge_trash(100).await.unwrap() > 0 {}
    let c = ns.lookup(&p("/c")).await.unwrap();
    assert_eq!((c.nlink, c.extents[0].chunk), (1, ChunkId(2)));
    ns.remove(&p("/c"), false).await.unwrap();
    let mut garbage = pending_garbage(&ns).await;
    garbage.sort();
    assert_eq!(garbage, vec![ChunkId(1), ChunkId(2)]);
    assert_eq!(count_scanned(&ns, a.id).await, 0);
    let ids = ns.store.scan(&[INODE], &[INODE + 1], 100).await.unwrap();
    assert!(ids.iter().all(|kv| kv.key != id_key(INODE, a.id)));
}

#[tokio::test]
async fn inodes_of_the_v1_layout_still_decode() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/d"), false).await.unwrap();
    let d = ns.lookup(&p("/d")).await.unwrap();
    let mut xattrs = Xattrs::new();
    xattrs.insert("s3.etag".into(), b"e".to_vec());
    let old = v1::Inode {
        id: InodeId(77),
        kind: InodeKind::File,
        size: 10,
        version: Version(3),
        mtime_ms: 5,
        ctime_ms: 6,
        mode: 0o640,
        extents: vec![old_ext(1, 10)],
        chunk_size: 10,
        xattrs,
    };
    // As an older meta wrote it, entry and inode link.
    let txn = Txn::new().put(entry_key(d.id, "old"), encode(&old)).put(
        id_key(INODE, InodeId(77)),
        encode(&InodeLink {
            parent: d.id,
            name: "old".into(),
        }),
    );
    ns.store.commit(txn).await.unwrap();
    let got = ns.lookup(&p("/d/old")).await.unwrap();
    assert_eq!(
        (got.id, got.size, got.version, got.mode),
        (InodeId(77), 10, Version(3), 0o640)
    );
    assert_eq!((got.uid, got.gid, got.target), (None, None, None));
    assert_eq!(
        got.xattrs.get("s3.etag").map(Vec::as_slice),
        Some(&b"e"[..])
    );
    assert_eq!(names(&ns, "/d").await, vec!["old".to_string()]);
    // Changing it writes the current layout.
    let changes = AttrChanges {
        uid: Some(9),
        ..AttrChanges::default()
    };
    ns.set_attr(&p("/d/old"), None, &changes).await.unwrap();
    assert_eq!(ns.lookup(&p("/d/old")).await.unwrap().uid, Some(9));
    let v2 = ns
        .commit_file(&p("/d/old"), vec![ext(2, 4)], Some(Version(3)), 0o600, 10)
        .await
        .unwrap();
    assert_eq!((v2.version, v2.uid), (Version(4), Some(9)));
    ns.remove(&p("/d"), true).await.unwrap();
    while ns.purge_trash(100).await.unwrap() > 0 {}
    assert!(pending_garbage(&ns).await.contains(&ChunkId(2)));
}

#[tokio::test]
async fn rename_without_replace_refuses_any_existing_target() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.commit_file(&p("/a"), vec![ext(1, 1)], None, 0o644, 1)
        .await
        .unwrap();
    ns.commit_file(&p("/b"), vec![ext(2, 1)], None, 0o644, 1)
        .await
        .unwrap();
    ns.mkdir(&p("/d"), false).await.unwrap();
    for dst in ["/b", "/d"] {
        let e = ns.rename_with(&p("/a"), &p(dst), false).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{dst}: {e}");
    }
    assert_eq!(ns.lookup(&p("/b")).await.unwrap().size, 1);
    assert!(pending_garbage(&ns).await.is_empty());
    ns.rename_with(&p("/a"), &p("/d/a"), false).await.unwrap();
    assert_eq!(names(&ns, "/d").await, vec!["a".to_string()]);
    ns.rename_with(&p("/d/a"), &p("/b"), true).await.unwrap();
    assert_eq!(pending_garbage(&ns).await, vec![ChunkId(2)]);
}

#[tokio::test]
async fn make_node_and_symlinks() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let d = ns
        .make_node(&p("/d"), &NewNode::Directory, 0o700, Some(7), Some(8))
        .await
        .unwrap();
    assert_eq!(
        (d.kind, d.mode, d.uid, d.gid),
        (InodeKind::Directory, 0o700, Some(7), Some(8))
    );
    let f = ns
        .make_node(&p("/d/f"), &NewNode::File, 0o600, Some(7), Some(8))
        .await
        .unwrap();
    assert_eq!(
        (f.kind, f.size, f.version),
        (InodeKind::File, 0, Version(1))
    );
    let link = NewNode::Symlink {
        target: "../elsewhere/x".into(),
    };
    let l = ns
        .make_node(&p("/d/l"), &link, 0, Some(7), Some(8))
        .await
        .unwrap();
    assert_eq!(l.kind, InodeKind::Symlink);
    assert_eq!(l.target.as_deref(), Some("../elsewhere/x"));
    assert_eq!(l.size, 14);
    for path in ["/d", "/d/f", "/d/l"] {
        let e = ns
            .make_node(&p(path), &NewNode::File, 0o644, None, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists, "{path}: {e}");
    }
    assert_eq!(
        kind(
            ns.make_node(&p("/missing/f"), &NewNode::File, 0o644, None, None)
                .await
        ),
        ErrorKind::NotFound
    );
    let bad = NewNode::Symlink {
        target: String::new(),
    };
    assert_eq!(
        kind(ns.make_node(&p("/d/e"), &bad, 0, None, None).await),
        ErrorKind::InvalidInput
    );
    // A symlink is no directory in a Cairn path (the kernel follows links).
    assert_eq!(
        kind(
            ns.make_node(&p("/d/l/x"), &NewNode::File, 0o644, None, None)
                .await
        ),
        ErrorKind::NotADirectory
    );
    // Rename over a file, never over a directory; then remove.
    ns.rename(&p("/d/l"), &p("/d/f")).await.unwrap();
    assert_eq!(
        ns.lookup(&p("/d/f")).await.unwrap().target.as_deref(),
        Some("../elsewhere/x")
    );
    ns.mkdir(&p("/d/sub"), false).await.unwrap();
    assert_eq!(
        kind(ns.rename(&p("/d/f"), &p("/d/sub")).await),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        kind(ns.rename(&p("/d/sub"), &p("/d/f")).await),
        ErrorKind::NotADirectory
    );
    ns.remove(&p("/d/f"), false).await.unwrap();
    assert_eq!(names(&ns, "/d").await, vec!["sub".to_string()]);
    // Symlinks in a trashed tree are purged.
    ns.make_node(&p("/d/sub/l"), &link, 0, None, None)
        .await
        .unwrap();
    ns.remove(&p("/d"), true).await.unwrap();
    while ns.purge_trash(100).await.unwrap() > 0 {}
    assert!(names(&ns, "/").await.is_empty());
}

#[tokio::test]
async fn compose_moves_chunks_without_collecting_them() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/up"), false).await.unwrap();
    ns.mkdir(&p("/b"), false).await.unwrap();
    ns.commit_file(&p("/up/1"), vec![ext(1, 10), ext(2, 5)], None, 0o644, 10)
        .await
        .unwrap();
    ns.commit_file(&p("/up/2"), vec![ext(3, 7)], None, 0o644, 10)
        .await
        .unwrap();
    ns.commit_file(&p("/b/o"), vec![ext(9, 1)], None, 0o644, 10)
        .await
        .unwrap();
    let v = ns.lookup(&p("/b/o")).await.unwrap().version;
    let sources = [p("/up/1"), p("/up/2")];
    assert_eq!(
        kind(
            ns.compose(&p("/b/o"), &sources, Some(Version(0)), 0o644, None)
                .await
        ),
        ErrorKind::Conflict
    );
    let mut attrs = Xattrs::new();
    attrs.insert("s3.etag".into(), b"x-2".to_vec());
    let got = ns
        .compose(&p("/b/o"), &sources, Some(v), 0o644, Some(attrs.clone()))
        .await
        .unwrap();
    assert_eq!(got.size, 22);
    assert_eq!(got.xattrs, attrs);
    let chunks: Vec<_> = got.extents.iter().map(|e| e.chunk).collect();
    assert_eq!(chunks, vec![ChunkId(1), ChunkId(2), ChunkId(3)]);
    assert!(names(&ns, "/up").await.is_empty());
    assert_eq!(pending_garbage(&ns).await, vec![ChunkId(9)]);
    assert_eq!(
        kind(ns.compose(&p("/b/o"), &sources, None, 0o644, None).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(
            ns.compose(&p("/b/x"), &[p("/b/o"), p("/b/o")], None, 0o644, None)
                .await
        ),
        ErrorKind::InvalidInput
    );
}

async fn inline(
    ns: &Namespace,
    path: &str,
    data: &[u8],
    cues: &str,
) -> std::result::Result<Inode, u32> {
    let cues = Cues::parse(cues).unwrap();
    ns.commit_inline(&p(path), data.to_vec(), None, None, None, &cues, 4096)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_files_keep_their_bytes_in_the_record() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/s"), false).await.unwrap();
    let f = inline(&ns, "/s/f", b"hello", "").await.unwrap();
    assert_eq!((f.size, f.version, f.mode), (5, Version(1), 0o644));
    assert!(f.is_inline() && f.extents.is_empty());
    assert_eq!(
        ns.lookup(&p("/s/f")).await.unwrap().inline.as_deref(),
        Some(&b"hello"[..])
    );
    // Over the cluster default, or a directory's lower limit: refused, nothing changes.
    assert_eq!(inline(&ns, "/s/f", &[7; 4097], "").await.unwrap_err(), 4096);
    ns.set_cues(&p("/s"), &Cues::parse("inline=0").unwrap(), false)
        .await
        .unwrap();
    assert_eq!(inline(&ns, "/s/f", b"x", "").await.unwrap_err(), 0);
    assert_eq!(ns.lookup(&p("/s/f")).await.unwrap(), f);
    // A writer's cue overrides the directory's, for that write only.
    let big = inline(&ns, "/s/f", &[7; 10_000], "inline=16KiB")
        .await
        .unwrap();
    assert_eq!((big.size, big.version), (10_000, Version(2)));
    assert_eq!(big.cues.inline, None, "not fixed on the file");
    // Grown past the limit: chunks, and nothing is left inline.
    let chunked = ns
        .commit_file(
            &p("/s/f"),
            vec![ext(1, 5000), ext(2, 6000)],
            None,
            0o644,
            1 << 20,
        )
        .await
        .unwrap();
    assert!(!chunked.is_inline() && chunked.inline.is_none());
    assert_eq!(chunked.size, 11_000);
    // Back to small: the chunks become garbage.
    let small = inline(&ns, "/s/f", b"tiny", "inline=4KiB").await.unwrap();
    assert_eq!((small.size, small.version), (4, Version(4)));
    assert_eq!(pending_garbage(&ns).await, vec![ChunkId(1), ChunkId(2)]);
    // A hard link and a rename carry the bytes; an empty file is not inline.
    ns.link(&p("/s/f"), &p("/s/g")).await.unwrap();
    ns.rename(&p("/s/f"), &p("/h")).await.unwrap();
    for name in ["/s/g", "/h"] {
        let i = ns.lookup(&p(name)).await.unwrap();
        assert_eq!(
            (i.inline.as_deref(), i.nlink),
            (Some(&b"tiny"[..]), 2),
            "{name}"
        );
    }
    let empty = inline(&ns, "/e", b"", "").await.unwrap();
    assert!(!empty.is_inline() && empty.inline.is_none() && empty.size == 0);
    // Expected versions hold as for chunks.
    let e = ns
        .commit_inline(
            &p("/h"),
            b"x".to_vec(),
            Some(Version(1)),
            None,
            None,
            &Cues::default(),
            4096,
        )
        .await;
    assert_eq!(kind(e), ErrorKind::Conflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn special_files_are_names_without_content() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let special = |kind, rdev| NewNode::Special { kind, rdev };
    let f = ns
        .make_node(
            &p("/f"),
            &special(InodeKind::Fifo, 9),
            0o640,
            Some(1),
            Some(2),
        )
        .await
        .unwrap();
    assert_eq!(
        (f.kind, f.rdev, f.mode, f.size),
        (InodeKind::Fifo, 0, 0o640, 0)
    );
    let d = ns
        .make_node(
            &p("/d"),
            &special(InodeKind::BlockDevice, 0x803),
            0o600,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(ns.lookup(&p("/d")).await.unwrap().rdev, d.rdev);
    assert_eq!(d.rdev, 0x803);
    let e = ns
        .make_node(&p("/x"), &special(InodeKind::File, 0), 0o600, None, None)
        .await;
    assert_eq!(kind(e), ErrorKind::InvalidInput);
    // No content: a write over one is refused; rename, link, remove work.
    let e = ns.commit_file(&p("/f"), vec![], None, 0o644, 1).await;
    assert_eq!(kind(e), ErrorKind::InvalidInput);
    ns.rename(&p("/f"), &p("/g")).await.unwrap();
    ns.link(&p("/g"), &p("/h")).await.unwrap();
    assert_eq!(ns.lookup(&p("/h")).await.unwrap().nlink, 2);
    ns.remove(&p("/g"), false).await.unwrap();
    ns.unlink(&p("/h"), false).await.unwrap();
    assert_eq!(
        kind(ns.unlink(&p("/d"), true).await),
        ErrorKind::NotADirectory
    );
    ns.unlink(&p("/d"), false).await.unwrap();
    assert!(names(&ns, "/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compose_joins_inline_sources_only_with_each_other() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    inline(&ns, "/a", b"abc", "").await.unwrap();
    inline(&ns, "/b", b"def", "").await.unwrap();
    let j = ns
        .compose(&p("/j"), &[p("/a"), p("/b")], None, 0o644, None)
        .await
        .unwrap();
    assert_eq!((j.size, j.inline.as_deref()), (6, Some(&b"abcdef"[..])));
    inline(&ns, "/c", b"ghi", "").await.unwrap();
    ns.commit_file(&p("/d"), vec![ext(5, 100)], None, 0o644, 1 << 20)
        .await
        .unwrap();
    let mixed = ns
        .compose(&p("/m"), &[p("/d"), p("/c")], None, 0o644, None)
        .await;
    assert_eq!(kind(mixed), ErrorKind::InvalidInput);
    assert!(ns.lookup(&p("/c")).await.is_ok(), "nothing changed");
}

#[tokio::test]
async fn inodes_from_before_inline_files_decode() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let old = v4::Inode {
        id: InodeId(81),
        kind: InodeKind::File,
        size: 100,
        version: Version(2),
        mtime_ms: 5,
        ctime_ms: 6,
        mode: 0o600,
        extents: vec![old_ext(3, 100)],
        chunk_size: 1 << 20,
        xattrs: Xattrs::new(),
        uid: Some(7),
        gid: None,
        target: None,
        cues: cues_v2::Cues {
            hot: Some("g".into()),
            ..Default::default()
        },
        nlink: 1,
    };
    let txn = Txn::new().put(entry_key(InodeId::ROOT, "o"), encode(&old));
    ns.store.commit(txn).await.unwrap();
    let got = ns.lookup(&p("/o")).await.unwrap();
    assert_eq!((got.version, got.size, got.uid), (Version(2), 100, Some(7)));
    assert_eq!((got.inline, got.extents.len()), (None, 1));
    assert_eq!(got.cues.hot.as_deref(), Some("g"));
}

#[tokio::test]
async fn inodes_from_before_erasure_coding_decode() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    // Several extents: the fields that follow each one's node list in the
    // current layout must not be read out of the next extent's bytes.
    let old = v5::Inode {
        id: InodeId(82),
        kind: InodeKind::File,
        size: 300,
        version: Version(4),
        mtime_ms: 5,
        ctime_ms: 6,
        mode: 0o644,
        extents: (0..3).map(|i| old_ext(u128::MAX - i, 100)).collect(),
        chunk_size: 100,
        xattrs: Xattrs::new(),
        uid: None,
        gid: Some(3),
        target: None,
        cues: cues_v3::Cues {
            rep: Some(2),
            inline: Some(0),
            ..Default::default()
        },
        nlink: 1,
        inline: None,
        rdev: 0,
    };
    let txn = Txn::new().put(entry_key(InodeId::ROOT, "o"), encode(&old));
    ns.store.commit(txn).await.unwrap();
    let got = ns.lookup(&p("/o")).await.unwrap();
    assert_eq!((got.version, got.size, got.gid), (Version(4), 300, Some(3)));
    let want: Vec<Extent> = (0..3).map(|i| ext(u128::MAX - i, 100)).collect();
    assert_eq!(got.extents, want);
    assert_eq!(
        (got.cues.rep, got.cues.inline, got.cues.ec),
        (Some(2), Some(0), None)
    );
}

#[tokio::test]
async fn inodes_from_before_the_remote_tier_decode() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let scheme = cairn_types::EcScheme::new(2, 1).unwrap();
    let shards = cairn_types::EcShards {
        scheme,
        shard_len: scheme.shard_len(100),
        crcs: vec![1, 2, 3],
    };
    let old = v6::Inode {
        v5: v5::Inode {
            id: InodeId(83),
            kind: InodeKind::File,
            size: 200,
            version: Version(2),
            mtime_ms: 5,
            ctime_ms: 6,
            mode: 0o644,
            extents: (0..2).map(|i| old_ext(u128::MAX - i, 100)).collect(),
            chunk_size: 100,
            xattrs: Xattrs::new(),
            uid: None,
            gid: None,
            target: None,
            cues: cues_v3::Cues::default(),
            nlink: 1,
            inline: None,
            rdev: 0,
        },
        ec: Some(scheme),
        stripes: vec![(1, shards.clone())],
    };
    let txn = Txn::new().put(entry_key(InodeId::ROOT, "t"), encode(&old));
    ns.store.commit(txn).await.unwrap();
    let got = ns.lookup(&p("/t")).await.unwrap();
    assert_eq!(got.cues.ec, Some(scheme));
    assert_eq!(
        (got.cues.tier.clone(), got.cues.cold_after_ms),
        (None, None)
    );
    assert_eq!(got.extents[0], ext(u128::MAX, 100));
    assert_eq!(got.extents[1].ec.as_ref(), Some(&shards));
    assert!(got.extents.iter().all(|e| e.remote.is_none()));
}

#[tokio::test]
async fn inline_files_from_before_erasure_coding_keep_their_bytes() {
    // Bytes that, were the `ec` cue decoded where v5 records keep `nlink`
    // and the inline data, would read as a scheme and fields of their own.
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let contents: [&[u8]; 4] = [b"A\0", &[7, 1, 3, 9, 9, 9], &[1, 1], &[0x41, 0x00, 0x00]];
    for (i, data) in contents.iter().enumerate() {
        let old = v5::Inode {
            id: InodeId(90 + i as u64),
            kind: InodeKind::File,
            size: data.len() as u64,
            version: Version(1),
            mtime_ms: 5,
            ctime_ms: 6,
            mode: 0o644,
            extents: Vec::new(),
            chunk_size: 1 << 20,
            xattrs: Xattrs::new(),
            uid: None,
            gid: None,
            target: None,
            cues: cues_v3::Cues::default(),
            nlink: 1,
            inline: Some(data.to_vec()),
            rdev: 0,
        };
        let name = format!("i{i}");
        let txn = Txn::new().put(entry_key(InodeId::ROOT, &name), encode(&old));
        ns.store.commit(txn).await.unwrap();
        let got = ns.lookup(&p(&format!("/{name}"))).await.unwrap();
        assert_eq!(got.inline.as_deref(), Some(*data), "{data:?}");
        assert_eq!(
            (got.nlink, got.cues.ec, got.size),
            (1, None, data.len() as u64)
        );
    }
}

#[tokio::test]
async fn erasure_coded_chunks_keep_their_shards_and_collect_each() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let scheme = cairn_types::EcScheme::new(2, 1).unwrap();
    let stripe = ChunkId::stripe_from(0x1234_5678_9abc_def0_u128 << 64);
    let ec_ext = stripe_ext(stripe);
    let cues = Cues::parse("ec=2+1,tier=remote:cold,cold_after=1h").unwrap();
    // A second extent, offloaded: the record keeps its store.
    let far = Extent {
        remote: Some("cold".into()),
        ..Extent::replicated(ChunkId(77 << 64), 10, 3, vec![])
    };
    let f = ns
        .commit_file_with(
            &p("/f"),
            vec![far.clone()],
            None,
            None,
            1 << 20,
            None,
            &cues,
        )
        .await
        .unwrap();
    assert_eq!(f.cues.tier, Some(cairn_types::Tier::Remote("cold".into())));
    let got = ns.lookup(&p("/f")).await.unwrap();
    assert_eq!(
        (got.extents, got.cues.cold_after_ms),
        (vec![far], Some(3_600_000))
    );
    let cues = Cues::parse("ec=2+1").unwrap();
    let f = ns
        .commit_file_with(
            &p("/e"),
            vec![ec_ext.clone()],
            None,
            None,
            1 << 20,
            None,
            &cues,
        )
        .await
        .unwrap();
    assert_eq!(f.cues.ec, Some(scheme));
    let got = ns.lookup(&p("/e")).await.unwrap();
    assert_eq!(got.extents, vec![ec_ext]);
    ns.remove(&p("/e"), false).await.unwrap();
    while ns.purge_trash(100).await.unwrap() > 0 {}
    let mut due: Vec<(ChunkId, Vec<NodeId>)> = ns
        .take_due_garbage(100)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, g)| (g.chunk, g.nodes))
        .collect();
    due.sort();
    assert_eq!(
        due,
        vec![
            (stripe.shard(0), vec![NodeId(5)]),
            (stripe.shard(1), vec![NodeId(6)]),
            (stripe.shard(2), vec![NodeId(7)]),
        ]
    );
}

async fn names(ns: &Namespace, path: &str) -> Vec<String> {
    ns.list(&p(path), None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mkdir_and_lookup() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let root = ns.lookup(&CairnPath::root()).await.unwrap();
    assert_eq!((root.id, root.kind), (InodeId::ROOT, InodeKind::Directory));
    assert_eq!(kind(ns.mkdir(&p("/a/b"), false).await), ErrorKind::NotFound);
    let c = ns.mkdir(&p("/a/b/c"), true).await.unwrap();
    assert_eq!(c.kind, InodeKind::Directory);
    assert_eq!(ns.lookup(&p("/a/b/c")).await.unwrap(), c);
    assert_eq!(
        ns.mkdir(&p("/a/b/c"), true).await.unwrap(),
        c,
        "mkdir -p of an existing dir is fine"
    );
    assert_eq!(
        kind(ns.mkdir(&p("/a/b/c"), false).await),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(ns.mkdir(&CairnPath::root(), false).await),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        ns.mkdir(&CairnPath::root(), true).await.unwrap().id,
        InodeId::ROOT
    );
    ns.commit_file(&p("/a/f"), vec![], None, 0o644, 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        kind(ns.mkdir(&p("/a/f"), true).await),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(ns.mkdir(&p("/a/f/x"), true).await),
        ErrorKind::NotADirectory
    );
    assert_eq!(
        kind(ns.lookup(&p("/a/f/x")).await),
        ErrorKind::NotADirectory
    );
    assert_eq!(kind(ns.lookup(&p("/nope")).await), ErrorKind::NotFound);
    assert_eq!(names(&ns, "/a").await, vec!["b", "f"]);
    assert_eq!(
        kind(ns.list(&p("/a/f"), None, 10).await),
        ErrorKind::NotADirectory
    );
    // Reopening keeps the root and everything else.
    let ns2 = Namespace::open(ns.store.clone(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(ns2.lookup(&p("/a/b/c")).await.unwrap(), c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overwrite_bumps_version_and_collects_old_chunks_after_delay() {
    let (_d, ns) = open_ns(Duration::from_millis(300)).await;
    assert_eq!(
        kind(ns.commit_file(&p("/x/f"), vec![], None, 0o644, 1).await),
        ErrorKind::NotFound
    );
    let v1 = ns
        .commit_file(&p("/f"), vec![ext(1, 10), ext(2, 5)], None, 0o644, 10)
        .await
        .unwrap();
    assert_eq!(
        (v1.version, v1.size, v1.kind),
        (Version(1), 15, InodeKind::File)
    );
    assert!(pending_garbage(&ns).await.is_empty());
    // An append reuses chunk 1 and replaces chunk 2.
    let v2 = ns
        .commit_file(&p("/f"), vec![ext(1, 10), ext(3, 10)], None, 0o600, 10)
        .await
        .unwrap();
    assert_eq!(
        (v2.id, v2.version, v2.size, v2.mode),
        (v1.id, Version(2), 20, 0o600)
    );
    assert_eq!(ns.lookup(&p("/f")).await.unwrap(), v2);
    assert_eq!(pending_garbage(&ns).await, vec![ChunkId(2)]);
    assert!(
        ns.take_due_garbage(100).await.unwrap().is_empty(),
        "not due before the delay"
    );
    // Due once the delay has passed (listing does not take it).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let due = loop {
        let due = ns.take_due_garbage(100).await.unwrap();
        if !due.is_empty() {
            break due;
        }
        assert!(std::time::Instant::now() < deadline, "never due");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(due.len(), 1);
    assert_eq!(
        due[0].1,
        GarbageChunk {
            chunk: ChunkId(2),
            nodes: vec![NodeId(1), NodeId(2)]
        }
    );
    assert_eq!(
        ns.take_due_garbage(100).await.unwrap().len(),
        1,
        "listed again until acked"
    );
    assert_eq!(
        kind(ns.ack_garbage(vec![b"d-not-garbage".to_vec()]).await),
        ErrorKind::InvalidInput
    );
    ns.ack_garbage(due.into_iter().map(|(k, _)| k).collect())
        .await
        .unwrap();
    assert!(ns.take_due_garbage(100).await.unwrap().is_empty());
    assert!(pending_garbage(&ns).await.is_empty());
    // Writing over a directory or the root.
    ns.mkdir(&p("/d"), false).await.unwrap();
    assert_eq!(
        kind(ns.commit_file(&p("/d"), vec![], None, 0o644, 1).await),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        kind(
            ns.commit_file(&CairnPath::root(), vec![], None, 0o644, 1)
                .await
        ),
        ErrorKind::IsADirectory
    );
    // for_each_chunk sees the current version only.
    let mut chunks = Vec::new();
    ns.for_each_chunk(|_, e| chunks.push(e.chunk))
        .await
        .unwrap();
    assert_eq!(chunks, vec![ChunkId(1), ChunkId(3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expected_version_conditions() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let f = p("/f");
    assert_eq!(
        kind(ns.commit_file(&f, vec![], Some(Version(1)), 0o644, 1).await),
        ErrorKind::Conflict
    );
    let v1 = ns
        .commit_file(&f, vec![ext(1, 1)], Some(Version(0)), 0o644, 1)
        .await
        .unwrap();
    assert_eq!(v1.version, Version(1));
    let err = ns
        .commit_file(&f, vec![ext(2, 1)], Some(Version(0)), 0o644, 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("expected not to exist"), "{err}");
    let err = ns
        .commit_file(&f, vec![ext(2, 1)], Some(Version(7)), 0o644, 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("not the expected version 7"), "{err}");
    let v2 = ns
        .commit_file(&f, vec![ext(2, 1)], Some(Version(1)), 0o644, 1)
        .await
        .unwrap();
    assert_eq!(v2.version, Version(2));
    assert_eq!(ns.lookup(&f).await.unwrap().extents, vec![ext(2, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_cases() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/a/b/c"), true).await.unwrap();
    ns.mkdir(&p("/empty"), false).await.unwrap();
    ns.mkdir(&p("/full/x"), true).await.unwrap();
    let f = ns
        .commit_file(&p("/a/f"), vec![ext(1, 1)], None, 0o644, 1)
        .await
        .unwrap();
    ns.commit_file(&p("/g"), vec![ext(2, 1)], None, 0o644, 1)
        .await
        .unwrap();

    // Plain move of a file to another directory keeps the inode.
    ns.rename(&p("/a/f"), &p("/a/b/f2")).await.unwrap();
    assert_eq!(kind(ns.lookup(&p("/a/f")).await), ErrorKind::NotFound);
    let moved = ns.lookup(&p("/a/b/f2")).await.unwrap();
    assert_eq!(
        (moved.id, moved.version, &moved.extents),
        (f.id, f.version, &f.extents)
    );
    // Replacing a file: the replaced file's chunks become garbage.
    ns.rename(&p("/g"), &p("/a/b/f2")).await.unwrap();
    assert_eq!(
        ns.lookup(&p("/a/b/f2")).await.unwrap().extents,
        vec![ext(2, 1)]
    );
    assert_eq!(pending_garbage(&ns).await, vec![ChunkId(1)]);
    // A directory moves with its subtree, cheaply.
    ns.rename(&p("/a/b"), &p("/moved")).await.unwrap();
    assert_eq!(
        ns.lookup(&p("/moved/c")).await.unwrap().kind,
        InodeKind::Directory
    );
    assert_eq!(names(&ns, "/moved").await, vec!["c", "f2"]);
    assert!(names(&ns, "/a").await.is_empty());
    // Directory over an empty directory is allowed.
    ns.rename(&p("/moved/c"), &p("/empty")).await.unwrap();
    assert_eq!(names(&ns, "/moved").await, vec!["f2"]);
    // Error cases.
    assert_eq!(
        kind(ns.rename(&p("/moved/f2"), &p("/full")).await),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        kind(ns.rename(&p("/full"), &p("/moved/f2")).await),
        ErrorKind::NotADirectory
    );
    assert_eq!(
        kind(ns.rename(&p("/moved"), &p("/full")).await),
        ErrorKind::DirectoryNotEmpty
    );
    assert_eq!(
        kind(ns.rename(&p("/moved"), &p("/moved/c/d")).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(ns.rename(&p("/moved"), &p("/moved/x")).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(ns.rename(&p("/nope"), &p("/x")).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(ns.rename(&p("/moved/f2"), &p("/nope/x")).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(ns.rename(&CairnPath::root(), &p("/x")).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(ns.rename(&p("/moved"), &CairnPath::root()).await),
        ErrorKind::InvalidInput
    );
    // src == dst is a no-op (when it exists).
    ns.rename(&p("/moved"), &p("/moved")).await.unwrap();
    assert_eq!(
        kind(ns.rename(&p("/nope"), &p("/nope")).await),
        ErrorKind::NotFound
    );
    assert_eq!(names(&ns, "/").await, vec!["a", "empty", "full", "moved"]);
    // Renamed into a sibling's subtree is fine: /a into /full/x.
    ns.rename(&p("/a"), &p("/full/x/a")).await.unwrap();
    assert_eq!(
        ns.lookup(&p("/full/x/a")).await.unwrap().kind,
        InodeKind::Directory
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_cases() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/d/e"), true).await.unwrap();
    ns.commit_file(&p("/d/f"), vec![ext(1, 1), ext(2, 1)], None, 0o644, 1)
        .await
        .unwrap();
    assert_eq!(
        kind(ns.remove(&CairnPath::root(), true).await),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(ns.remove(&p("/nope"), false).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(ns.remove(&p("/d"), false).await),
        ErrorKind::DirectoryNotEmpty
    );
    ns.remove(&p("/d/f"), false).await.unwrap();
    let mut g = pending_garbage(&ns).await;
    g.sort();
    assert_eq!(g, vec![ChunkId(1), ChunkId(2)]);
    ns.remove(&p("/d/e"), false).await.unwrap();
    ns.remove(&p("/d"), false).await.unwrap();
    assert!(names(&ns, "/").await.is_empty());
    assert_eq!(
        ns.purge_trash(100).await.unwrap(),
        0,
        "nothing went to the trash"
    );
    // Only the root's id record is left besides garbage.
    let ids = ns.store.scan(&[INODE], &[INODE + 1], 10).await.unwrap();
    assert_eq!(ids.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recursive_remove_of_a_big_tree_is_atomic_then_purged() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    // 50 directories of 99 files: 5,000 entries, created by 32 concurrent workers.
    let mut paths = Vec::new();
    for d in 0..50 {
        ns.mkdir(&p(&format!("/t/d{d:02}")), true).await.unwrap();
        for f in 0..99 {
            paths.push((p(&format!("/t/d{d:02}/f{f:02}")), (d * 100 + f) as u128));
        }
    }
    let paths = Arc::new(std::sync::Mutex::new(paths));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (ns, paths) = (ns.clone(), paths.clone());
            tokio::spawn(async move {
                loop {
                    let Some((path, chunk)) = paths.lock().unwrap().pop() else {
                        return;
                    };
                    ns.commit_file(&path, vec![ext(chunk, 1)], Some(Version(0)), 0o644, 1)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let mut before = 0;
    ns.for_each_chunk(|_, _| before += 1).await.unwrap();
    assert_eq!(before, 50 * 99);

    ns.remove(&p("/t"), true).await.unwrap();
    assert_eq!(kind(ns.lookup(&p("/t/d00/f00")).await), ErrorKind::NotFound);
    assert!(names(&ns, "/").await.is_empty());
    assert_eq!(
        kind(ns.mkdir(&p("/t/d00"), false).await),
        ErrorKind::NotFound
    );

    let mut purged = 0;
    loop {
        let n = ns.purge_trash(1000).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 1000);
        purged += n;
    }
    // Each directory counts twice: its entry, then its finished trash record.
    assert_eq!(purged, 1 + 2 * 50 + 50 * 99);
    let mut garbage = pending_garbage(&ns).await;
    garbage.sort();
    let mut want: Vec<ChunkId> = (0..50)
        .flat_map(|d| (0..99).map(move |f| ChunkId((d * 100 + f) as u128)))
        .collect();
    want.sort();
    assert_eq!(garbage, want);
    let mut after = 0;
    ns.for_each_chunk(|_, _| after += 1).await.unwrap();
    assert_eq!(after, 0);
    assert_eq!(
        ns.store
            .scan(&[ENTRY], &[ENTRY + 1], 10)
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        ns.store
            .scan(&[INODE], &[INODE + 1], 10)
            .await
            .unwrap()
            .len(),
        1,
        "only the root"
    );
    assert_eq!(ns.take_due_garbage(10_000).await.unwrap().len(), 50 * 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_pages_in_name_order() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/big"), false).await.unwrap();
    let tasks: Vec<_> = (0..3000u32)
        .map(|i| {
            let ns = ns.clone();
            tokio::spawn(async move {
                ns.commit_file(
                    &p(&format!("/big/n{:05}", (i * 7919) % 3000)),
                    vec![],
                    None,
                    0o644,
                    1,
                )
                .await
                .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    ns.mkdir(&p("/big/n00010/inner"), false).await.unwrap_err();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ns.list(&p("/big"), after.as_deref(), 128).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 128);
        assert!(page
            .iter()
            .all(|e| e.inode.kind == InodeKind::File && e.inode.mode == 0o644));
        after = Some(page.last().unwrap().name.clone());
        seen.extend(page.into_iter().map(|e| e.name));
    }
    let want: Vec<String> = (0..3000).map(|i| format!("n{i:05}")).collect();
    assert_eq!(seen, want);
    assert_eq!(
        ns.list(&p("/big"), Some("n02998"), 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        ns.list(&p("/big"), Some("a"), 1).await.unwrap()[0].name,
        "n00000"
    );
    assert!(ns.list(&p("/big"), None, 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_exclusive_creates_have_one_winner() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/dir"), false).await.unwrap();
    let tasks: Vec<_> = (0..8u128)
        .map(|i| {
            let ns = ns.clone();
            tokio::spawn(async move {
                ns.commit_file(&p("/dir/same"), vec![ext(i, 1)], Some(Version(0)), 0o644, 1)
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(inode) => winners.push(inode),
            Err(e) => assert_eq!(e.kind, ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(ns.lookup(&p("/dir/same")).await.unwrap(), winners[0]);

    // Different names in one directory never conflict with each other.
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let ns = ns.clone();
            tokio::spawn(async move {
                ns.commit_file(
                    &p(&format!("/dir/f{i:02}")),
                    vec![],
                    Some(Version(0)),
                    0o644,
                    1,
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(names(&ns, "/dir").await.len(), 65);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_racing_rmdir_never_orphans() {
    // A create inside a directory that is concurrently removed (non-recursive)
    // either lands before the rmdir (which then fails as non-empty) or fails.
    for round in 0..20 {
        let (_d, ns) = open_ns(Duration::ZERO).await;
        ns.mkdir(&p("/d"), false).await.unwrap();
        let a = {
            let ns = ns.clone();
            tokio::spawn(async move { ns.commit_file(&p("/d/f"), vec![], None, 0o644, 1).await })
        };
        let b = {
            let ns = ns.clone();
            tokio::spawn(async move { ns.remove(&p("/d"), false).await })
        };
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        match (a, b) {
            (Ok(_), Err(e)) => {
                assert_eq!(e.kind, ErrorKind::DirectoryNotEmpty, "round {round}");
                assert!(ns.lookup(&p("/d/f")).await.is_ok());
            }
            (Err(e), Ok(())) => assert_eq!(e.kind, ErrorKind::NotFound, "round {round}"),
            other => panic!("round {round}: {other:?}"),
        }
        let orphans = ns
            .store
            .scan(&[ENTRY], &[ENTRY + 1], 10)
            .await
            .unwrap()
            .len();
        let visible = if ns.lookup(&p("/d")).await.is_ok() {
            1 + names(&ns, "/d").await.len()
        } else {
            0
        };
        assert_eq!(orphans, visible, "round {round}");
    }
}

// ---- model test ----

#[derive(Clone, Debug)]
enum ModelOp {
    Mkdir(String, bool),
    Commit(String),
    Rename(String, String),
    Remove(String, bool),
    Link(String, String),
}

/// A file (which one: names of one file share it) or a directory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum K {
    F(u32),
    D,
}

/// path ("/a/b") -> kind; the root is implicit.
type Model = BTreeMap<String, K>;

fn ancestors(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    (1..parts.len())
        .map(|i| format!("/{}", parts[..i].join("/")))
        .collect()
}

fn check_parent(m: &Model, path: &str) -> std::result::Result<(), ErrorKind> {
    for a in ancestors(path) {
        match m.get(&a) {
            None => return Err(ErrorKind::NotFound),
            Some(K::F(_)) => return Err(ErrorKind::NotADirectory),
            Some(K::D) => {}
        }
    }
    Ok(())
}

fn under(path: &str, dir: &str) -> bool {
    path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/')
}

fn has_children(m: &Model, dir: &str) -> bool {
    m.keys().any(|k| under(k, dir))
}

fn model_apply(m: &mut Model, op: &ModelOp) -> std::result::Result<(), ErrorKind> {
    use ErrorKind::*;
    match op {
        ModelOp::Mkdir(path, parents) => {
            let mut chain = ancestors(path);
            chain.push(path.clone());
            let last = chain.len() - 1;
            let mut to_create = Vec::new();
            for (i, a) in chain.iter().enumerate() {
                match (m.get(a), i == last) {
                    (Some(K::D), true) => {
                        return if *parents { Ok(()) } else { Err(AlreadyExists) }
                    }
                    (Some(K::D), false) => {}
                    (Some(K::F(_)), true) => return Err(AlreadyExists),
                    (Some(K::F(_)), false) => return Err(NotADirectory),
                    (None, false) if !parents => return Err(NotFound),
                    (None, _) => {
                        // Once something is missing, everything below it is too.
                        to_create.extend(chain[i..].iter().cloned());
                        break;
                    }
                }
            }
            for a in to_create {
                m.insert(a, K::D);
            }
            Ok(())
        }
        ModelOp::Commit(path) => {
            check_parent(m, path)?;
            match m.get(path) {
                Some(K::D) => return Err(IsADirectory),
                Some(K::F(_)) => {} // a new version of the same file
                None => {
                    let next = m
                        .values()
                        .filter_map(|k| match k {
                            K::F(id) => Some(*id + 1),
                            K::D => None,
                        })
                        .max()
                        .unwrap_or(0);
                    m.insert(path.clone(), K::F(next));
                }
            }
            Ok(())
        }
        ModelOp::Link(src, dst) => {
            check_parent(m, src)?;
            let file = match m.get(src) {
                None => return Err(NotFound),
                Some(K::D) => return Err(PermissionDenied),
                Some(f) => *f,
            };
            check_parent(m, dst)?;
            if m.contains_key(dst) {
                return Err(AlreadyExists);
            }
            m.insert(dst.clone(), file);
            Ok(())
        }
        ModelOp::Remove(path, recursive) => {
            check_parent(m, path)?;
            match m.get(path) {
                None => Err(NotFound),
                Some(K::D) if has_children(m, path) && !recursive => Err(DirectoryNotEmpty),
                Some(_) => {
                    m.retain(|k, _| k != path && !under(k, path));
                    Ok(())
                }
            }
        }
        ModelOp::Rename(src, dst) => {
            check_parent(m, src)?;
            let Some(&sk) = m.get(src) else {
                return Err(NotFound);
            };
            if src == dst {
                return Ok(());
            }
            if sk == K::D && under(dst, src) {
                return Err(InvalidInput);
            }
            check_parent(m, dst)?;
            if m.get(dst) == Some(&sk) && sk != K::D {
                // Two names of one file: rename does nothing.
                return Ok(());
            }
            match (sk, m.get(dst)) {
                (K::F(_), Some(K::D)) => return Err(IsADirectory),
                (K::D, Some(K::F(_))) => return Err(NotADirectory),
                (K::D, Some(K::D)) if has_children(m, dst) => return Err(DirectoryNotEmpty),
                _ => {}
            }
            m.remove(dst);
            let moved: Vec<(String, K)> = m
                .iter()
                .filter(|(k, _)| *k == src || under(k, src))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            for (k, v) in moved {
                m.remove(&k);
                m.insert(format!("{dst}{}", &k[src.len()..]), v);
            }
            Ok(())
        }
    }
}

async fn ns_apply(ns: &Namespace, op: &ModelOp) -> std::result::Result<(), ErrorKind> {
    let r = match op {
        ModelOp::Mkdir(path, parents) => ns.mkdir(&p(path), *parents).await.map(|_| ()),
        ModelOp::Commit(path) => ns
            .commit_file(&p(path), vec![], None, 0o644, 1)
            .await
            .map(|_| ()),
        ModelOp::Rename(a, b) => ns.rename(&p(a), &p(b)).await,
        ModelOp::Remove(path, recursive) => ns.remove(&p(path), *recursive).await,
        ModelOp::Link(a, b) => ns.link(&p(a), &p(b)).await.map(|_| ()),
    };
    r.map_err(|e| e.kind)
}

async fn check_against_model(ns: &Namespace, m: &Model) {
    let mut dirs = vec!["/".to_string()];
    // Model file -> (inode id, names).
    let mut files: BTreeMap<u32, (InodeId, u32)> = BTreeMap::new();
    for (path, k) in m {
        let inode = ns
            .lookup(&p(path))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(inode.kind == InodeKind::Directory, *k == K::D, "{path}");
        match k {
            K::D => dirs.push(path.clone()),
            K::F(f) => {
                let seen = files.entry(*f).or_insert((inode.id, 0));
                assert_eq!(seen.0, inode.id, "{path}: names of one file, one inode");
                seen.1 += 1;
            }
        }
    }
    for (path, k) in m {
        if let K::F(f) = k {
            let inode = ns.lookup(&p(path)).await.unwrap();
            assert_eq!(inode.nlink, files[f].1, "{path}: nlink");
        }
    }
    for dir in dirs {
        let want: Vec<String> = m
            .keys()
            .filter(|k| ancestors(k).last().map_or("/", |s| s.as_str()) == dir)
            .map(|k| k.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(names(ns, &dir).await, want, "listing of {dir}");
    }
    // Everything stored is reachable: no orphans.
    let entries = ns
        .store
        .scan(&[ENTRY], &[ENTRY + 1], usize::MAX)
        .await
        .unwrap();
    let trash = ns.store.scan(&[TRASH], &[TRASH + 1], 1).await.unwrap();
    let linked = children_start(LINKED);
    let (shared, named): (Vec<_>, Vec<_>) =
        entries.iter().partition(|kv| kv.key.starts_with(&linked));
    if trash.is_empty() {
        assert_eq!(named.len(), m.len());
        let live: HashSet<InodeId> = files.values().map(|(id, _)| *id).collect();
        for kv in shared {
            let record: Inode = decode(&kv.value).unwrap();
            assert!(live.contains(&record.id), "orphaned shared record");
        }
    }
}

fn model_path() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..=3)
        .prop_map(|parts| format!("/{}", parts.join("/")))
}

fn model_op() -> impl proptest::strategy::Strategy<Value = ModelOp> {
    use proptest::prelude::*;
    prop_oneof![
        (model_path(), any::<bool>()).prop_map(|(p, b)| ModelOp::Mkdir(p, b)),
        model_path().prop_map(ModelOp::Commit),
        (model_path(), model_path()).prop_map(|(a, b)| ModelOp::Rename(a, b)),
        (model_path(), any::<bool>()).prop_map(|(p, b)| ModelOp::Remove(p, b)),
        (model_path(), model_path()).prop_map(|(a, b)| ModelOp::Link(a, b)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]
    #[test]
    fn namespace_matches_model(ops in proptest::collection::vec(model_op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (_d, ns) = open_ns(Duration::ZERO).await;
            let mut model = Model::new();
            for op in &ops {
                let want = model_apply(&mut model, op);
                let got = ns_apply(&ns, op).await;
                assert_eq!(got, want, "{op:?}");
                if fastrand::u8(..4) == 0 {
                    ns.purge_trash(3).await.unwrap();
                }
            }
            check_against_model(&ns, &model).await;
            while ns.purge_trash(100).await.unwrap() > 0 {}
            check_against_model(&ns, &model).await;
        });
    }
}

#[tokio::test]
async fn relayout_replaces_the_version_read_and_nothing_newer() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let v1 = ns
        .commit_file(&p("/f"), vec![ext(1, 10), ext(2, 5)], None, 0o644, 10)
        .await
        .unwrap();
    let (key, _) = ns.file_key(&p("/f")).await.unwrap();
    // A layout of another size is refused: it cannot hold the same bytes.
    let rep2 = Cues::parse("rep=2").unwrap();
    assert!(!ns
        .relayout(&key, v1.version, &[ext(3, 10)], &rep2)
        .await
        .unwrap());
    // The version read: replaced in one step, mtime kept, old chunks garbage.
    assert!(ns
        .relayout(&key, v1.version, &[ext(3, 10), ext(4, 5)], &rep2)
        .await
        .unwrap());
    let v2 = ns.lookup(&p("/f")).await.unwrap();
    assert_eq!(v2.version, Version(v1.version.0 + 1));
    assert_eq!(
        (v2.size, v2.mtime_ns, v2.cues.rep),
        (15, v1.mtime_ns, Some(2))
    );
    let chunks: Vec<ChunkId> = v2.extents.iter().map(|e| e.chunk).collect();
    assert_eq!(chunks, vec![ChunkId(3), ChunkId(4)]);
    let mut garbage = pending_garbage(&ns).await;
    garbage.sort();
    assert_eq!(garbage, vec![ChunkId(1), ChunkId(2)]);
    // A writer got there first: the stale relayout changes nothing.
    let v3 = ns
        .commit_file(&p("/f"), vec![ext(5, 15)], None, 0o644, 10)
        .await
        .unwrap();
    assert!(!ns
        .relayout(&key, v2.version, &[ext(6, 15)], &rep2)
        .await
        .unwrap());
    assert_eq!(ns.lookup(&p("/f")).await.unwrap(), v3);
}

#[tokio::test]
async fn an_extent_that_drops_its_shards_sends_them_to_garbage() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let stripe = ChunkId::stripe_from(0x4321_u128 << 64);
    let ec_ext = stripe_ext(stripe);
    ns.commit_file_with(
        &p("/f"),
        vec![ec_ext.clone()],
        None,
        None,
        1 << 20,
        None,
        &Cues::parse("ec=2+1").unwrap(),
    )
    .await
    .unwrap();
    let (key, _) = ns.file_key(&p("/f")).await.unwrap();
    // A change that keeps the shards (one moves) queues nothing.
    assert!(ns
        .update_extent(&key, stripe, |e| {
            e.nodes[0] = NodeId(8);
            true
        })
        .await
        .unwrap());
    assert!(pending_garbage(&ns).await.is_empty());
    // Offloaded whole: every shard is garbage, the chunk itself is not
    // (its object is the file's now).
    assert!(ns
        .update_extent(&key, stripe, |e| {
            e.nodes.clear();
            e.ec = None;
            e.remote = Some("cold".into());
            true
        })
        .await
        .unwrap());
    let mut garbage = pending_garbage(&ns).await;
    garbage.sort();
    let mut want: Vec<ChunkId> = (0..3).map(|i| stripe.shard(i)).collect();
    want.sort();
    assert_eq!(garbage, want);
}

#[tokio::test]
async fn posix_attributes_on_redb() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    posix_suite(&ns).await;
}

#[tokio::test]
async fn kept_versions_on_redb() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    versions_suite(&ns).await;
}

#[tokio::test]
async fn records_from_before_nanosecond_times_decode() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let mut inode = new_dir(InodeId(83), 5_000_000);
    inode.kind = InodeKind::File;
    inode.nlink = 1;
    inode.ctime_ns = 6_000_000;
    inode.atime_ns = 0;
    // The old layout is the current one without the times and the
    // versions cue at the end, which here are four zero bytes.
    let mut bytes = encode(&inode);
    assert_eq!(bytes.split_off(bytes.len() - 4), [0, 0, 0, 0]);
    let txn = Txn::new().put(entry_key(InodeId::ROOT, "old"), bytes);
    ns.store.commit(txn).await.unwrap();
    let got = ns.lookup(&p("/old")).await.unwrap();
    assert_eq!(
        (got.id, got.mtime_ns, got.ctime_ns, got.atime_ns),
        (InodeId(83), 5_000_000, 6_000_000, 5_000_000),
        "atime reads as the mtime"
    );
}

#[tokio::test]
async fn records_from_before_kept_versions_decode() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let inode = ns
        .commit_file(&p("/f"), vec![ext(1, 10)], None, 0o644, 10)
        .await
        .unwrap();
    // The old layout is the current one without the versions cue at the
    // end: one byte for None.
    let mut bytes = encode(&inode);
    assert_eq!(bytes.pop(), Some(0));
    let txn = Txn::new().put(entry_key(InodeId::ROOT, "old"), bytes);
    ns.store.commit(txn).await.unwrap();
    assert_eq!(ns.lookup(&p("/old")).await.unwrap(), inode);
    // And a record with the cue reads back with it.
    ns.set_cues(&p("/f"), &Cues::parse("versions=all").unwrap(), false)
        .await
        .unwrap();
    let f = ns.lookup(&p("/f")).await.unwrap();
    assert_eq!(f.cues.versions, Some(cairn_types::KEEP_ALL_VERSIONS));
}

/// Versions of `path` as (version, first chunk) pairs, newest first.
async fn versions_of(ns: &Namespace, path: &str) -> Vec<(u64, u128)> {
    ns.versions(&p(path))
        .await
        .unwrap()
        .iter()
        .map(|i| (i.version.0, i.extents.first().map_or(0, |e| e.chunk.0)))
        .collect()
}

#[tokio::test]
async fn the_versions_cue_keeps_older_versions_readable() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/k"), false).await.unwrap();
    ns.set_cues(&p("/k"), &Cues::parse("versions=2").unwrap(), false)
        .await
        .unwrap();
    for v in 1..=4u128 {
        ns.commit_file(&p("/k/f"), vec![ext(v, 10 * v as u64)], None, 0o644, 100)
            .await
            .unwrap();
    }
    // Two older versions kept; the first one pushed out, its chunk garbage.
    assert_eq!(versions_of(&ns, "/k/f").await, [(4, 4), (3, 3), (2, 2)]);
    assert_eq!(pending_garbage(&ns).await, [ChunkId(1)]);
    let v2 = ns.version(&p("/k/f"), Version(2)).await.unwrap();
    assert_eq!((v2.size, v2.extents[0].chunk), (20, ChunkId(2)));
    assert_eq!(ns.version(&p("/k/f"), Version(4)).await.unwrap().size, 40);
    let gone = ns.version(&p("/k/f"), Version(1)).await.unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound);
    assert!(gone.message.contains("2, 3, 4"), "{gone}");
    assert_eq!(
        kind(ns.version(&p("/k/f"), Version(9)).await),
        ErrorKind::NotFound
    );
    // Kept chunks are referenced: accounting, repair and the orphan
    // sweep see them; a listing does not show the versions.
    let mut chunks = Vec::new();
    ns.for_each_chunk(|_, e| chunks.push(e.chunk.0))
        .await
        .unwrap();
    chunks.sort();
    assert_eq!(chunks, [2, 3, 4]);
    let (files, _) = ns.scan_files(None, 100).await.unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(names(&ns, "/k").await, ["f"]);
    // A kept version's extent can be repaired through its key.
    let (key, _) = files.iter().find(|(_, i)| i.version == Version(2)).unwrap();
    assert!(ns
        .set_chunk_nodes(key, ChunkId(2), &[NodeId(8), NodeId(9)])
        .await
        .unwrap());
    let v2 = ns.version(&p("/k/f"), Version(2)).await.unwrap();
    assert_eq!(v2.extents[0].nodes, [NodeId(8), NodeId(9)]);
    // Small files keep their bytes in their kept versions too, and a
    // rename keeps the versions with the file.
    inline(&ns, "/k/f", b"small", "").await.unwrap();
    ns.rename(&p("/k/f"), &p("/k/g")).await.unwrap();
    assert_eq!(versions_of(&ns, "/k/g").await, [(5, 0), (4, 4), (3, 3)]);
    inline(&ns, "/k/g", b"smaller", "").await.unwrap();
    let v5 = ns.version(&p("/k/g"), Version(5)).await.unwrap();
    assert_eq!(v5.inline.as_deref(), Some(&b"small"[..]));
    let mut garbage = pending_garbage(&ns).await;
    garbage.sort();
    assert_eq!(garbage, [ChunkId(1), ChunkId(2), ChunkId(3)]);
    // Fewer versions asked for: the next commit pushes out the excess.
    ns.set_cues(&p("/k"), &Cues::parse("versions=0").unwrap(), false)
        .await
        .unwrap();
    ns.commit_file(&p("/k/g"), vec![ext(7, 70)], None, 0o644, 100)
        .await
        .unwrap();
    assert_eq!(versions_of(&ns, "/k/g").await, [(7, 7)]);
    let mut garbage = pending_garbage(&ns).await;
    garbage.sort();
    assert_eq!(garbage, [1, 2, 3, 4].map(ChunkId));
    // Directories have no versions.
    assert_eq!(kind(ns.versions(&p("/k")).await), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn removing_a_file_removes_its_kept_versions() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/k"), false).await.unwrap();
    ns.set_cues(&p("/k"), &Cues::parse("versions=all").unwrap(), false)
        .await
        .unwrap();
    for v in 1..=3u128 {
        ns.commit_file(&p("/k/f"), vec![ext(v, 10)], None, 0o644, 100)
            .await
            .unwrap();
    }
    // A hard link: the versions stay while a name is left.
    ns.link(&p("/k/f"), &p("/k/h")).await.unwrap();
    ns.commit_file(&p("/k/h"), vec![ext(4, 10)], None, 0o644, 100)
        .await
        .unwrap();
    assert_eq!(
        versions_of(&ns, "/k/f").await,
        [(4, 4), (3, 3), (2, 2), (1, 1)]
    );
    ns.remove(&p("/k/f"), false).await.unwrap();
    assert_eq!(versions_of(&ns, "/k/h").await.len(), 4);
    assert!(pending_garbage(&ns).await.is_empty());
    ns.remove(&p("/k/h"), false).await.unwrap();
    let mut garbage = pending_garbage(&ns).await;
    garbage.sort();
    assert_eq!(garbage, [1, 2, 3, 4].map(ChunkId));
    let (files, _) = ns.scan_files(None, 100).await.unwrap();
    assert!(files.is_empty(), "no kept version is left behind");
    // Through the trash too: a directory removed whole.
    ns.mkdir(&p("/k/d"), false).await.unwrap();
    for v in 5..=6u128 {
        ns.commit_file(&p("/k/d/x"), vec![ext(v, 10)], None, 0o644, 100)
            .await
            .unwrap();
    }
    ns.remove(&p("/k"), true).await.unwrap();
    ns.purge_trash(100).await.unwrap();
    let mut garbage = pending_garbage(&ns).await;
    garbage.sort();
    assert_eq!(garbage, [1, 2, 3, 4, 5, 6].map(ChunkId));
    let (files, _) = ns.scan_files(None, 100).await.unwrap();
    assert!(files.is_empty(), "no kept version is left behind");
}

#[tokio::test]
async fn compose_takes_its_sources_kept_versions_away() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    ns.mkdir(&p("/k"), false).await.unwrap();
    ns.set_cues(&p("/k"), &Cues::parse("versions=all").unwrap(), false)
        .await
        .unwrap();
    for c in 1..=2u128 {
        ns.commit_file(&p("/k/part"), vec![ext(c, 10)], None, 0o644, 100)
            .await
            .unwrap();
    }
    ns.commit_file(&p("/k/other"), vec![ext(3, 10)], None, 0o644, 100)
        .await
        .unwrap();
    ns.compose(
        &p("/k/whole"),
        &[p("/k/part"), p("/k/other")],
        None,
        0o644,
        None,
    )
    .await
    .unwrap();
    // The moved chunks (2, 3) stay; the part's kept version 1 is garbage.
    assert_eq!(pending_garbage(&ns).await, [ChunkId(1)]);
    let (files, _) = ns.scan_files(None, 100).await.unwrap();
    assert_eq!(files.len(), 1, "only the result is left: {files:?}");
    assert_eq!(versions_of(&ns, "/k/whole").await, [(1, 2)]);
}

/// Hostile bytes in meta's own records (a damaged store, or a store
/// another process wrote): arbitrary bytes and mutated valid records of
/// every kind decode to a value or an error, never a panic, and a length
/// field of 2^63 is an error, not an allocation.
#[tokio::test]
async fn damaged_records_decode_to_errors() {
    let (_d, ns) = open_ns(Duration::ZERO).await;
    let f = ns
        .commit_file(&p("/f"), vec![ext(9, 1 << 20)], None, 0o640, 1 << 20)
        .await
        .unwrap();
    ns.set_attr(
        &p("/f"),
        None,
        &cairn_types::AttrChanges {
            xattrs: vec![cairn_types::XattrOp::Set {
                name: "user.k".into(),
                value: b"v".to_vec(),
                when: cairn_types::XattrWhen::Always,
            }],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (raw, _) = ns
        .store
        .get(&entry_key(InodeId::ROOT, "f"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decode::<Inode>(&raw).unwrap().id, f.id);
    let garbage = encode(&GarbageChunk {
        chunk: ChunkId(9),
        nodes: vec![NodeId(1), NodeId(2)],
    });
    let samples = [raw, garbage];
    let decode_all = |b: &[u8]| {
        let _ = decode::<Inode>(b);
        let _ = decode::<GarbageChunk>(b);
        let _ = decode::<InodeLink>(b);
    };
    let huge: [&[u8]; 2] = [
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    ];
    for s in &samples {
        for at in 0..s.len() {
            for h in huge {
                let mut b = s[..at].to_vec();
                b.extend_from_slice(h);
                b.extend_from_slice(&s[at..]);
                decode_all(&b);
            }
        }
    }
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 2000,
        failure_persistence: None,
        ..Default::default()
    });
    use proptest::prelude::*;
    let edits = proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8);
    runner
        .run(
            &(
                0..samples.len(),
                edits,
                proptest::collection::vec(any::<u8>(), 0..256),
            ),
            |(which, edits, noise)| {
                decode_all(&noise);
                let mut b = samples[which].clone();
                for (at, byte, how) in edits {
                    if b.is_empty() {
                        break;
                    }
                    let i = at % b.len();
                    match how {
                        0 => b[i] = byte,
                        1 => b.insert(i, byte),
                        _ => {
                            b.remove(i);
                        }
                    }
                }
                decode_all(&b);
                Ok(())
            },
        )
        .unwrap();
}
