//! POSIX attribute behaviour every meta store must give the namespace:
//! directory times and link counts, nanosecond times, access times,
//! set-group-ID directories. Run on redb by the unit tests and on etcd by
//! the testkit (whose transactions refuse a key twice).

use super::Namespace;
use cairn_types::{now_ns, AttrChanges, CairnPath, Inode, NewNode};

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

/// Wait until the clock is past `t`: a change after this shows a later time.
fn past(t: u64) {
    while now_ns() <= t {
        std::thread::yield_now();
    }
}

async fn get(ns: &Namespace, path: &str) -> Inode {
    ns.lookup(&p(path)).await.unwrap()
}

/// The record of `name` in `dir`'s listing.
async fn listed(ns: &Namespace, dir: &str, name: &str) -> Inode {
    let page = ns.list(&p(dir), None, 1000).await.unwrap();
    page.into_iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} not listed in {dir}"))
        .inode
}

/// Call on a fresh namespace; uses `/posix` and below.
#[doc(hidden)]
pub async fn posix_suite(ns: &Namespace) {
    let file = |mode| (NewNode::File, mode);
    let dir = |mode| (NewNode::Directory, mode);
    let make = |path: &'static str, (node, mode): (NewNode, u32), gid: Option<u32>| async move {
        ns.make_node(&p(path), &node, mode, Some(1000), gid)
            .await
            .unwrap()
    };

    // A new directory: 2 links; its parent gains one.
    let root_links = get(ns, "/").await.nlink;
    let top = make("/posix", dir(0o755), None).await;
    assert_eq!(top.nlink, 2);
    assert_eq!(get(ns, "/").await.nlink, root_links + 1);

    // An entry made: the directory's mtime and ctime move, its links not.
    let before = get(ns, "/posix").await;
    past(before.mtime_ns.max(before.ctime_ns));
    let f = make("/posix/f", file(0o644), None).await;
    let after = get(ns, "/posix").await;
    assert!(after.mtime_ns > before.mtime_ns && after.ctime_ns > before.ctime_ns);
    assert_eq!(after.nlink, 2, "a file is no link of its directory");
    assert!(f.mtime_ns >= after.mtime_ns.saturating_sub(1_000_000_000));
    assert_eq!(
        listed(ns, "/", "posix").await.mtime_ns,
        after.mtime_ns,
        "a listing shows the same times as a lookup"
    );

    // Subdirectories count; rmdir takes the link back.
    make("/posix/a", dir(0o755), None).await;
    make("/posix/b", dir(0o755), None).await;
    assert_eq!(get(ns, "/posix").await.nlink, 4);
    make("/posix/a/s", dir(0o755), None).await;
    make("/posix/b/s2", dir(0o755), None).await;
    assert_eq!(get(ns, "/posix/a").await.nlink, 3);

    // A directory moved between parents: both change, counts follow, and
    // the moved one's ctime moves (its "..").
    let (a0, b0, s0) = (
        get(ns, "/posix/a").await,
        get(ns, "/posix/b").await,
        get(ns, "/posix/a/s").await,
    );
    past(a0.mtime_ns.max(b0.mtime_ns).max(s0.ctime_ns));
    ns.rename(&p("/posix/a/s"), &p("/posix/b/s")).await.unwrap();
    let (a1, b1, s1) = (
        get(ns, "/posix/a").await,
        get(ns, "/posix/b").await,
        get(ns, "/posix/b/s").await,
    );
    assert_eq!((a1.nlink, b1.nlink), (2, 4));
    assert!(a1.mtime_ns > a0.mtime_ns && b1.mtime_ns > b0.mtime_ns);
    assert!(s1.ctime_ns > s0.ctime_ns, "a moved directory's ctime");
    assert_eq!(s1.mtime_ns, s0.mtime_ns, "its own entries did not change");

    // Replacing an empty directory by another: the replaced one's link
    // goes, the moved one's arrives.
    make("/posix/a/t", dir(0o755), None).await;
    assert_eq!(get(ns, "/posix/a").await.nlink, 3);
    ns.rename_with(&p("/posix/b/s2"), &p("/posix/a/t"), true)
        .await
        .unwrap();
    assert_eq!(get(ns, "/posix/a").await.nlink, 3);
    assert_eq!(get(ns, "/posix/b").await.nlink, 3);

    // A rename in one directory: its links stay, its times move.
    let b2 = get(ns, "/posix/b").await;
    past(b2.mtime_ns);
    ns.rename(&p("/posix/b/s"), &p("/posix/b/s3"))
        .await
        .unwrap();
    let b3 = get(ns, "/posix/b").await;
    assert_eq!(b3.nlink, 3);
    assert!(b3.mtime_ns > b2.mtime_ns);

    // An exchange of a directory and a file across parents: the link
    // counts follow the directory, both parents' times and both ctimes move.
    make("/posix/xa", dir(0o755), None).await;
    make("/posix/xb", dir(0o755), None).await;
    make("/posix/xa/d", dir(0o755), None).await;
    make("/posix/xa/d/inside", file(0o644), None).await;
    let xf = make("/posix/xb/f", file(0o600), None).await;
    let (xa0, xd0) = (get(ns, "/posix/xa").await, get(ns, "/posix/xa/d").await);
    past(xa0.mtime_ns.max(xd0.ctime_ns).max(xf.ctime_ns));
    ns.exchange(&p("/posix/xa/d"), &p("/posix/xb/f"))
        .await
        .unwrap();
    let (xa1, xb1) = (get(ns, "/posix/xa").await, get(ns, "/posix/xb").await);
    assert_eq!((xa1.nlink, xb1.nlink), (2, 3));
    assert!(xa1.mtime_ns > xa0.mtime_ns && xb1.mtime_ns > xa0.mtime_ns);
    let (d, f) = (get(ns, "/posix/xb/f").await, get(ns, "/posix/xa/d").await);
    assert_eq!((d.id, f.id), (xd0.id, xf.id));
    assert!(d.ctime_ns > xd0.ctime_ns && f.ctime_ns > xf.ctime_ns);
    assert_eq!(d.mtime_ns, xd0.mtime_ns, "its times went with it");
    get(ns, "/posix/xb/f/inside").await;
    let inside = ns
        .exchange(&p("/posix/xb/f"), &p("/posix/xb/f/inside"))
        .await;
    assert_eq!(
        inside.unwrap_err().kind,
        cairn_types::ErrorKind::InvalidInput
    );
    let missing = ns.exchange(&p("/posix/xa/d"), &p("/posix/xa/none")).await;
    assert_eq!(missing.unwrap_err().kind, cairn_types::ErrorKind::NotFound);
    ns.exchange(&p("/posix/xa/d"), &p("/posix/xb/f"))
        .await
        .unwrap();
    assert_eq!(get(ns, "/posix/xa/d").await.id, xd0.id);
    assert_eq!(get(ns, "/posix/xa").await.nlink, 3);
    ns.remove(&p("/posix/xa"), true).await.unwrap();
    ns.remove(&p("/posix/xb"), true).await.unwrap();

    // mkdir -p: each new directory holds the next; a recursive remove
    // takes the top one's link back.
    let links = get(ns, "/posix").await.nlink;
    ns.mkdir(&p("/posix/m/n/o"), true).await.unwrap();
    assert_eq!(get(ns, "/posix").await.nlink, links + 1);
    assert_eq!(get(ns, "/posix/m").await.nlink, 3);
    assert_eq!(get(ns, "/posix/m/n").await.nlink, 3);
    assert_eq!(get(ns, "/posix/m/n/o").await.nlink, 2);
    ns.remove(&p("/posix/m"), true).await.unwrap();
    assert_eq!(get(ns, "/posix").await.nlink, links);

    // rmdir, unlink.
    ns.unlink(&p("/posix/b/s3"), true).await.unwrap();
    assert_eq!(get(ns, "/posix/b").await.nlink, 2);
    let d0 = get(ns, "/posix").await;
    past(d0.mtime_ns);
    ns.unlink(&p("/posix/f"), false).await.unwrap();
    let d1 = get(ns, "/posix").await;
    assert!(d1.mtime_ns > d0.mtime_ns && d1.ctime_ns > d0.ctime_ns);

    // A chmod of a directory: its ctime moves, its mtime not; the times
    // its entries gave it stay.
    past(d1.ctime_ns);
    let chmod = AttrChanges {
        mode: Some(0o700),
        ..AttrChanges::default()
    };
    let d2 = ns.set_attr(&p("/posix"), None, &chmod).await.unwrap();
    assert_eq!((d2.mode, d2.mtime_ns), (0o700, d1.mtime_ns));
    assert!(d2.ctime_ns > d1.ctime_ns);
    assert_eq!(get(ns, "/posix").await, d2);

    // Times to the nanosecond; a read's atime never moves back and leaves
    // ctime alone.
    let g = make("/posix/g", file(0o644), None).await;
    let set = AttrChanges {
        mtime_ns: Some(1_234_567_891_987_654_321),
        atime_ns: Some(1_234_567_890_123_456_789),
        ..AttrChanges::default()
    };
    let g1 = ns.set_attr(&p("/posix/g"), Some(g.id), &set).await.unwrap();
    assert_eq!(
        (g1.mtime_ns, g1.atime_ns),
        (1_234_567_891_987_654_321, 1_234_567_890_123_456_789)
    );
    assert_eq!(get(ns, "/posix/g").await, g1);
    assert_eq!(listed(ns, "/posix", "g").await.atime_ns, g1.atime_ns);
    let read = |t| AttrChanges {
        atime_ns: Some(t),
        accessed: true,
        ..AttrChanges::default()
    };
    let back = ns.set_attr(&p("/posix/g"), Some(g.id), &read(5)).await;
    assert_eq!(back.unwrap().atime_ns, g1.atime_ns);
    let now = now_ns();
    let g2 = ns.set_attr(&p("/posix/g"), Some(g.id), &read(now)).await;
    let g2 = g2.unwrap();
    assert_eq!((g2.atime_ns, g2.ctime_ns), (now, g1.ctime_ns));
    assert_eq!(get(ns, "/posix/g").await.atime_ns, now);

    // A set-group-ID directory: entries take its group, subdirectories the
    // bit too.
    let sgid = AttrChanges {
        mode: Some(0o2775),
        gid: Some(50),
        ..AttrChanges::default()
    };
    make("/posix/shared", dir(0o755), Some(7)).await;
    ns.set_attr(&p("/posix/shared"), None, &sgid).await.unwrap();
    let f = make("/posix/shared/f", file(0o644), Some(7)).await;
    assert_eq!((f.gid, f.mode), (Some(50), 0o644));
    let sub = make("/posix/shared/sub", dir(0o755), Some(7)).await;
    assert_eq!((sub.gid, sub.mode), (Some(50), 0o2755));
    let deeper = make("/posix/shared/sub/f", file(0o600), Some(7)).await;
    assert_eq!(deeper.gid, Some(50));
    let plain = make("/posix/a/f", file(0o644), Some(7)).await;
    assert_eq!(plain.gid, Some(7));
}

/// Kept versions (the `versions=` cue) every meta store must give: a
/// commit that keeps the old version and pushes out the oldest, a removal
/// that takes them all, in one transaction each. Call on a fresh
/// namespace; uses `/kept` and below.
#[doc(hidden)]
pub async fn versions_suite(ns: &Namespace) {
    use cairn_types::{ChunkId, Cues, Extent, NodeId, Version};
    let ext = |c: u128| vec![Extent::replicated(ChunkId(c), 10, 7, vec![NodeId(1)])];
    let numbers = |vs: Vec<Inode>| vs.iter().map(|i| i.version.0).collect::<Vec<_>>();
    ns.mkdir(&p("/kept/d"), true).await.unwrap();
    ns.set_cues(&p("/kept"), &Cues::parse("versions=2").unwrap(), false)
        .await
        .unwrap();
    for c in 1..=4 {
        ns.commit_file(&p("/kept/f"), ext(c), None, 0o644, 10)
            .await
            .unwrap();
    }
    assert_eq!(
        numbers(ns.versions(&p("/kept/f")).await.unwrap()),
        [4, 3, 2]
    );
    let v3 = ns.version(&p("/kept/f"), Version(3)).await.unwrap();
    assert_eq!(v3.extents[0].chunk, ChunkId(3));
    // A hard-linked file keeps its versions through either name.
    ns.link(&p("/kept/f"), &p("/kept/d/g")).await.unwrap();
    ns.commit_file(&p("/kept/d/g"), ext(5), None, 0o644, 10)
        .await
        .unwrap();
    assert_eq!(
        numbers(ns.versions(&p("/kept/f")).await.unwrap()),
        [5, 4, 3]
    );
    ns.remove(&p("/kept/f"), false).await.unwrap();
    assert_eq!(
        numbers(ns.versions(&p("/kept/d/g")).await.unwrap()),
        [5, 4, 3]
    );
    // The last name goes with the versions, through the trash.
    ns.remove(&p("/kept"), true).await.unwrap();
    ns.purge_trash(1000).await.unwrap();
    let (files, _) = ns.scan_files(None, 1000).await.unwrap();
    assert!(
        files.iter().all(|(_, i)| i.id != v3.id),
        "a kept version outlived its file"
    );
}
