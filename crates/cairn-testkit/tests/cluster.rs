//! End-to-end tests of an in-process cluster: meta and storage nodes on
//! loopback ports, talking over real TCP, storing on real disks.

use cairn_client::PutOptions;
use cairn_proto::{connect, Capability, ClusterSecret, GetChunkResult, StorageRequest};
use cairn_testkit::{pattern, wait_for, TestCluster};
use cairn_types::{CairnPath, ErrorKind, Version};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn p(s: &str) -> CairnPath {
    CairnPath::parse(s).unwrap()
}

/// Every test gets a hard deadline so a hang fails instead of stalling CI.
async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(180), f)
        .await
        .expect("test exceeded its deadline")
}

/// A small file written as chunks, not kept in meta (`inline=0`): for
/// tests of what storage nodes do with them.
fn chunked() -> PutOptions {
    PutOptions {
        cues: cairn_types::Cues {
            inline: Some(0),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn small_chunks() -> PutOptions {
    PutOptions {
        chunk_size: Some(256 * 1024),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_many_sizes() {
    deadline(async {
        let c = TestCluster::start(3, 3).await;
        let cl = c.client().await;
        let chunk = 256 * 1024;
        for (i, len) in [
            0,
            1,
            65535,
            65536,
            65537,
            chunk - 1,
            chunk,
            chunk + 1,
            3 * chunk + 12345,
        ]
        .into_iter()
        .enumerate()
        {
            let data = pattern(len, i as u64);
            let path = p(&format!("/f{i}"));
            let inode = cl.put_bytes(&path, &data, small_chunks()).await.unwrap();
            assert_eq!(inode.size, len as u64);
            // Up to the cluster's inline limit the bytes stay in meta.
            let inline = (1..=4096).contains(&len);
            assert_eq!(inode.is_inline(), inline, "{len} bytes");
            let chunks = if inline { 0 } else { len.div_ceil(chunk) };
            assert_eq!(inode.extents.len(), chunks);
            assert!(
                inode.extents.iter().all(|e| e.nodes.len() == 3),
                "three distinct replicas"
            );
            for e in &inode.extents {
                let mut ids = e.nodes.clone();
                ids.sort();
                ids.dedup();
                assert_eq!(ids.len(), 3);
            }
            assert_eq!(cl.get_bytes(&path).await.unwrap(), data, "len {len}");
            // Ranged reads across chunk and block boundaries.
            if len > 70000 {
                let r = cl.open(&path).await.unwrap();
                for (off, n) in [
                    (1u64, 70000u64),
                    (65535, 2),
                    (chunk as u64 - 3, 10),
                    (len as u64 - 5, 100),
                ] {
                    let got = r.read_at(off, n).await.unwrap();
                    let end = (off + n).min(len as u64) as usize;
                    assert_eq!(got, &data[off as usize..end], "range {off}+{n} of {len}");
                }
            }
        }
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_two_dead_nodes_of_three() {
    deadline(async {
        let mut c = TestCluster::start(3, 3).await;
        let cl = c.client().await;
        let data = pattern(1_000_000, 7);
        cl.put_bytes(&p("/x"), &data, small_chunks()).await.unwrap();
        c.stop_node(0).await;
        assert_eq!(cl.get_bytes(&p("/x")).await.unwrap(), data);
        c.stop_node(2).await;
        assert_eq!(cl.get_bytes(&p("/x")).await.unwrap(), data);
        // Writes need three live nodes for rep=3 and say so.
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_replaces_a_dead_node_and_refuses_without_enough_nodes() {
    deadline(async {
        // Meta still thinks a stopped node is live (long dead_after): the
        // client's write to it fails, and the chunk is placed elsewhere.
        let mut c = TestCluster::start_with(4, |m| {
            m.default_rep = 3;
            m.dead_after = Duration::from_secs(60);
        })
        .await;
        let cl = c.client().await;
        c.stop_node(1).await;
        let mut replicas = 0;
        for i in 0..6 {
            let data = pattern(600_000, i);
            let path = p(&format!("/w{i}"));
            let inode = cl.put_bytes(&path, &data, small_chunks()).await.unwrap();
            assert_eq!(cl.get_bytes(&path).await.unwrap(), data);
            for e in inode.extents {
                assert_eq!(e.nodes.len(), 3);
                replicas += 3;
            }
        }
        // Copies left by chains that broke at the dead node are discarded.
        wait_for(Duration::from_secs(20), || async {
            let s = cl.cluster_status().await.ok()?;
            let live = s
                .nodes
                .iter()
                .filter(|n| n.state == cairn_proto::NodeState::Live);
            (live.map(|n| n.stats.chunks).sum::<u64>() == replicas).then_some(())
        })
        .await;
        c.shutdown().await;

        // Two nodes for rep=3: a clear error, nothing visible; a file
        // small enough for meta to keep needs no node.
        let c = TestCluster::start(2, 3).await;
        let cl = c.client().await;
        let small = cl
            .put_bytes(&p("/small"), b"abc", PutOptions::default())
            .await;
        assert!(small.unwrap().is_inline());
        assert_eq!(cl.get_bytes(&p("/small")).await.unwrap(), b"abc");
        let e = cl
            .put_bytes(&p("/nope"), b"abc", chunked())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(
            e.message.contains("2 of 2 storage node(s) live") && e.message.contains("rep=3"),
            "{e}"
        );
        assert_eq!(
            cl.stat(&p("/nope")).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_replica_is_never_returned_and_is_reported() {
    deadline(async {
        let c = TestCluster::start(2, 2).await;
        let cl = c.client().await;
        let data = pattern(300_000, 3);
        let inode = cl
            .put_bytes(&p("/c"), &data, PutOptions::default())
            .await
            .unwrap();
        let first = inode.extents[0].nodes[0];
        // Flip a byte of the chunk data on the node clients try first.
        let i = c
            .nodes
            .iter()
            .position(|n| n.as_ref().unwrap().id == first)
            .unwrap();
        let seg = c.segment_files(i).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = bytes.len() - 1000;
        bytes[at] ^= 0xff;
        std::fs::write(&seg, &bytes).unwrap();

        assert_eq!(cl.get_bytes(&p("/c")).await.unwrap(), data);
        let s = wait_for(Duration::from_secs(10), || async {
            let s = cl.cluster_status().await.ok()?;
            (!s.corrupt_replicas.is_empty()).then_some(s)
        })
        .await;
        assert_eq!(s.corrupt_replicas[0], (inode.extents[0].chunk, first));
        assert_eq!(s.under_replicated_chunks, 1);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwrite_versions_and_garbage_collection() {
    deadline(async {
        let c = TestCluster::start_with(2, |m| {
            m.default_rep = 2;
            m.gc_delay = Duration::from_millis(300);
        })
        .await;
        let cl = c.client().await;
        let v1 = cl
            .put_bytes(&p("/v"), &pattern(500_000, 1), small_chunks())
            .await
            .unwrap();
        assert_eq!(v1.version, Version(1));
        let v2 = cl
            .put_bytes(&p("/v"), &pattern(10, 2), small_chunks())
            .await
            .unwrap();
        assert_eq!(v2.version, Version(2));
        assert_eq!(cl.get_bytes(&p("/v")).await.unwrap(), pattern(10, 2));
        // Conditional writes.
        let e = cl
            .put_bytes(
                &p("/v"),
                b"x",
                PutOptions {
                    expected: Some(Version(0)),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(e.unwrap_err().kind, ErrorKind::Conflict);
        let e = cl
            .put_bytes(
                &p("/v"),
                b"x",
                PutOptions {
                    expected: Some(Version(1)),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(e.unwrap_err().kind, ErrorKind::Conflict);
        cl.put_bytes(
            &p("/v"),
            b"x",
            PutOptions {
                expected: Some(Version(2)),
                ..chunked()
            },
        )
        .await
        .unwrap();
        // The chunks of versions 1 and 2 leave both nodes.
        wait_for(Duration::from_secs(20), || async {
            let s = cl.cluster_status().await.ok()?;
            s.nodes.iter().all(|n| n.stats.chunks == 1).then_some(())
        })
        .await;
        cl.remove(&p("/v"), false).await.unwrap();
        wait_for(Duration::from_secs(20), || async {
            let s = cl.cluster_status().await.ok()?;
            s.nodes.iter().all(|n| n.stats.chunks == 0).then_some(())
        })
        .await;
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_old_or_new_never_a_mix() {
    deadline(async {
        let c = TestCluster::start(2, 2).await;
        let cl = c.client().await;
        let len = 700_000;
        cl.put_bytes(&p("/m"), &vec![0u8; len], small_chunks())
            .await
            .unwrap();
        let writer = {
            let cl = cl.clone();
            tokio::spawn(async move {
                for v in 1..=8u8 {
                    cl.put_bytes(&p("/m"), &vec![v; len], small_chunks())
                        .await
                        .unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads < 3 {
            let got = cl.get_bytes(&p("/m")).await.unwrap();
            assert_eq!(got.len(), len);
            assert!(
                got.iter().all(|b| *b == got[0]),
                "a read mixed two versions"
            );
            reads += 1;
        }
        writer.await.unwrap();
        assert_eq!(cl.get_bytes(&p("/m")).await.unwrap(), vec![8u8; len]);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_through_the_wire() {
    deadline(async {
        let c = TestCluster::start(1, 1).await;
        let cl = c.client().await;
        cl.mkdir(&p("/a/b"), true).await.unwrap();
        cl.put_bytes(&p("/a/b/f"), b"hello", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(
            cl.put_bytes(&p("/a/b/f/g"), b"x", PutOptions::default())
                .await
                .unwrap_err()
                .kind,
            ErrorKind::NotADirectory
        );
        assert_eq!(
            cl.put_bytes(&p("/missing/f"), b"x", PutOptions::default())
                .await
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            cl.remove(&p("/a"), false).await.unwrap_err().kind,
            ErrorKind::DirectoryNotEmpty
        );
        cl.put_bytes(&p("/a/g"), b"other", PutOptions::default())
            .await
            .unwrap();
        cl.rename(&p("/a/g"), &p("/a/b/f")).await.unwrap();
        assert_eq!(cl.get_bytes(&p("/a/b/f")).await.unwrap(), b"other");
        assert_eq!(
            cl.stat(&p("/a/g")).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        cl.remove(&p("/a"), true).await.unwrap();
        assert_eq!(
            cl.stat(&p("/a/b/f")).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert!(cl.list_page(&p("/"), None, 100).await.unwrap().is_empty());
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_100k_entries_pages_in_order() {
    deadline(async {
        let c = TestCluster::start(1, 1).await;
        let cl = c.client().await;
        cl.mkdir(&p("/big"), false).await.unwrap();
        let n = 100_000usize;
        let mut tasks = Vec::new();
        for t in 0..32 {
            let cl = cl.clone();
            tasks.push(tokio::spawn(async move {
                for i in (t..n).step_by(32) {
                    // Empty files: a metadata-only commit each.
                    cl.commit(
                        &p(&format!("/big/e{i:06}")),
                        Vec::new(),
                        None,
                        0o644,
                        1 << 20,
                        None,
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut after = None;
        let mut seen = 0usize;
        loop {
            let page = cl.list_page(&p("/big"), after.clone(), 5000).await.unwrap();
            for (k, e) in page.iter().enumerate() {
                assert_eq!(e.name, format!("e{:06}", seen + k));
            }
            seen += page.len();
            if page.len() < 5000 {
                break;
            }
            after = page.last().map(|e| e.name.clone());
        }
        assert_eq!(seen, n);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_of_meta_and_nodes_keeps_everything() {
    deadline(async {
        let mut c = TestCluster::start(3, 3).await;
        let cl = c.client().await;
        let data = pattern(900_000, 11);
        cl.put_bytes(&p("/keep"), &data, small_chunks())
            .await
            .unwrap();
        c.restart_meta().await;
        for i in 0..3 {
            c.stop_node(i).await;
            c.restart_node(i).await;
        }
        c.wait_live(3).await;
        let cl = c.client().await;
        assert_eq!(cl.get_bytes(&p("/keep")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_servers_stay_up() {
    deadline(async {
        let c = TestCluster::start(1, 1).await;
        let cl = c.client().await;
        let inode = cl.put_bytes(&p("/ok"), b"fine", chunked()).await.unwrap();
        let node_addr = c.nodes[0].as_ref().unwrap().addr.clone();
        let stranger = ClusterSecret::generate().client_credentials();

        // Garbage and truncated frames on both ports, with and without a handshake.
        for addr in [c.meta_addr(), node_addr.clone()] {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
                .await
                .unwrap();
            drop(s);
            assert_eq!(
                connect(&addr, &stranger, Duration::from_secs(5))
                    .await
                    .err()
                    .unwrap()
                    .kind,
                ErrorKind::PermissionDenied
            );
        }
        let client_creds = cairn_meta::server::load_or_create_secret(&c.meta_cfg.data_dir)
            .unwrap()
            .client_credentials();
        let mut conn = connect(&node_addr, &client_creds, Duration::from_secs(5))
            .await
            .unwrap();
        conn.write_frame(&[9, 9, 9]).await.unwrap();
        conn.flush().await.unwrap();
        let r: Result<(), cairn_types::Error> = conn.recv().await.unwrap();
        assert_eq!(r.unwrap_err().kind, ErrorKind::InvalidInput);

        // A forged capability, an unknown chunk.
        let forged = Capability::sign(
            &ClusterSecret::generate(),
            inode.extents[0].chunk,
            false,
            None,
        );
        let mut conn = connect(&node_addr, &client_creds, Duration::from_secs(5))
            .await
            .unwrap();
        let req = StorageRequest::GetChunk {
            chunk: inode.extents[0].chunk,
            offset: 0,
            len: 4,
            cap: forged,
        };
        let r: GetChunkResult = conn.call(&req, Duration::from_secs(5)).await.unwrap();
        assert_eq!(r.unwrap_err().kind, ErrorKind::PermissionDenied);
        // Clients cannot delete chunks.
        let r: Result<(), cairn_types::Error> = conn
            .call(
                &StorageRequest::DeleteChunks {
                    chunks: vec![inode.extents[0].chunk],
                },
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(r.unwrap_err().kind, ErrorKind::PermissionDenied);

        // Nothing changed, everything still serves.
        assert_eq!(cl.get_bytes(&p("/ok")).await.unwrap(), b"fine");
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_data_returns_disk_space() {
    deadline(async {
        let c = TestCluster::start_with(1, |m| {
            m.default_rep = 1;
            m.gc_delay = Duration::from_millis(100);
        })
        .await;
        let cl = c.client().await;
        for i in 0..12 {
            cl.put_bytes(&p(&format!("/d{i}")), &pattern(1 << 20, i), small_chunks())
                .await
                .unwrap();
        }
        let before = c.disk_bytes(0);
        assert!(before >= 12 << 20, "{before}");
        for i in 0..12 {
            cl.remove(&p(&format!("/d{i}")), false).await.unwrap();
        }
        // Garbage collection deletes the chunks; compaction drops the
        // sealed segments, leaving at most the active one.
        wait_for(Duration::from_secs(30), || async {
            (c.disk_bytes(0) <= 5 << 20).then_some(())
        })
        .await;
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_attributes_follow_versions() {
    deadline(async {
        let c = TestCluster::start(1, 1).await;
        let cl = c.client().await;
        let attrs: cairn_types::Xattrs =
            [("s3.content-type".to_string(), b"text/plain".to_vec())].into();
        let opts = PutOptions {
            xattrs: Some(attrs.clone()),
            ..Default::default()
        };
        cl.put_bytes(&p("/x"), b"one", opts).await.unwrap();
        assert_eq!(cl.stat(&p("/x")).await.unwrap().xattrs, attrs);
        // An overwrite without attributes keeps them.
        cl.put_bytes(&p("/x"), b"two", PutOptions::default())
            .await
            .unwrap();
        assert_eq!(cl.stat(&p("/x")).await.unwrap().xattrs, attrs);
        // Attributes computed from the bytes, committed with them.
        let i = cl
            .put_with_attrs(&p("/x"), &b"three"[..], PutOptions::default(), || {
                [("s3.etag".to_string(), b"abc".to_vec())].into()
            })
            .await
            .unwrap();
        assert_eq!(i.version, Version(3));
        let got = cl.stat(&p("/x")).await.unwrap().xattrs;
        assert_eq!(got.len(), 1);
        assert_eq!(got["s3.etag"], b"abc");
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_report_their_host() {
    deadline(async {
        // Nodes 1 and 2 share a machine; node 0 has its own.
        let c = TestCluster::start_full(
            3,
            |m| m.default_rep = 1,
            std::sync::Arc::new(|i, sc: &mut cairn_storage::StorageConfig| {
                if i > 0 {
                    sc.host = "shared".into();
                }
            }),
        )
        .await;
        let s = c.client().await.cluster_status().await.unwrap();
        let mut hosts: Vec<String> = s.nodes.iter().map(|n| n.host.clone()).collect();
        hosts.sort();
        assert_eq!(hosts, ["host-0", "shared", "shared"]);
        c.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_serves_sequential_and_random_reads_exactly() {
    deadline(async {
        let c = TestCluster::start(2, 2).await;
        let cl = c.client_with(|cfg| cfg.cache_bytes = 0).await;
        // Chunks of 10 MiB: read-ahead windows (4 MiB) inside chunks and
        // across their ends, and a short last chunk.
        let len = 23 * (1 << 20) + 5;
        let data = pattern(len, 11);
        let opts = PutOptions {
            chunk_size: Some(10 << 20),
            ..Default::default()
        };
        cl.put_bytes(&p("/ra"), &data, opts).await.unwrap();
        let r = std::sync::Arc::new(cl.open(&p("/ra")).await.unwrap());
        let check = |off: usize, got: Vec<u8>, want: usize| {
            let end = (off + want).min(len);
            assert_eq!(got.len(), end - off, "length at {off}");
            assert!(got == data[off..end], "bytes at {off}");
        };
        // A stream of small reads to the end, then past it.
        let mut off = 0;
        while off < len {
            check(
                off,
                r.read_at_ahead(off as u64, 128 << 10).await.unwrap(),
                128 << 10,
            );
            off += 128 << 10;
        }
        assert!(r.read_at_ahead(len as u64, 10).await.unwrap().is_empty());
        // A jump, then 1 MiB reads across a chunk end; then random reads.
        let mut off = 9 * (1 << 20) + 7;
        for _ in 0..5 {
            check(
                off,
                r.read_at_ahead(off as u64, 1 << 20).await.unwrap(),
                1 << 20,
            );
            off += 1 << 20;
        }
        for i in 0..40u64 {
            let off = (i * 7_919_993) as usize % len;
            let n = 1 + (i as usize * 104_729) % (3 << 20);
            check(off, r.read_at_ahead(off as u64, n as u64).await.unwrap(), n);
        }
        c.shutdown().await;
    })
    .await
}

/// The streaming reader every front end uses: exact bytes for whole and
/// ranged reads inside chunks and across their ends, with a read-ahead
/// budget smaller than a chunk and larger than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_stream_yields_exact_bytes_for_whole_and_ranged_reads() {
    deadline(async {
        let c = TestCluster::start(2, 2).await;
        let len = 23 * (1 << 20) + 5;
        let data = pattern(len, 12);
        let opts = PutOptions {
            chunk_size: Some(10 << 20),
            ..Default::default()
        };
        c.client()
            .await
            .put_bytes(&p("/st"), &data, opts)
            .await
            .unwrap();
        for budget in [1 << 20, 64 << 20] {
            let cl = c
                .client_with(|cfg| {
                    cfg.cache_bytes = 0;
                    cfg.read_ahead = budget;
                })
                .await;
            let ranges = [
                (0, len),
                (7, len - 3),
                (9 * (1 << 20) + 7, 11 * (1 << 20)),
                (4 << 20, 8 << 20),
                (len - 1, len),
                (5, 5),
                (len, len + 10),
                (3, len + 100),
            ];
            for (start, end) in ranges {
                let r = cl.open(&p("/st")).await.unwrap();
                let mut s = r.stream(start as u64, end as u64);
                let mut got = Vec::new();
                let mut pieces = 0;
                while let Some(piece) = s.next().await {
                    got.extend_from_slice(&piece.unwrap());
                    pieces += 1;
                }
                let want = &data[start.min(len)..end.min(len)];
                assert_eq!(got.len(), want.len(), "length of {start}..{end}");
                assert!(got == want, "bytes of {start}..{end} (budget {budget})");
                assert!(s.next().await.is_none(), "the stream stays ended");
                if want.len() > 10 << 20 {
                    assert!(pieces > 2, "a long read comes in windows, not whole");
                }
            }
        }
        c.shutdown().await;
    })
    .await
}

/// A replica stopped while a stream reads: the stream goes on from the
/// other copy, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_stream_survives_a_replica_stopped_midway() {
    deadline(async {
        let mut c = TestCluster::start(2, 2).await;
        let len = 40 << 20;
        let data = pattern(len, 13);
        let opts = PutOptions {
            chunk_size: Some(4 << 20),
            ..Default::default()
        };
        let cl = c
            .client_with(|cfg| {
                cfg.cache_bytes = 0;
                cfg.read_ahead = 4 << 20;
            })
            .await;
        cl.put_bytes(&p("/kill"), &data, opts).await.unwrap();
        let r = cl.open(&p("/kill")).await.unwrap();
        let mut s = r.stream(0, len as u64);
        let mut got = s.next().await.unwrap().unwrap().to_vec();
        c.stop_node(0).await;
        while let Some(piece) = s.next().await {
            got.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(got.len(), len);
        assert!(got == data, "bytes after the stop");
        c.shutdown().await;
    })
    .await
}

/// A stream dropped early stops fetching: the nodes serve its read-ahead
/// budget at most, not the rest of the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_stream_dropped_early_stops_fetching() {
    deadline(async {
        let c = TestCluster::start(1, 1).await;
        let len = 96 << 20;
        let data = pattern(len, 14);
        let cl = c
            .client_with(|cfg| {
                cfg.cache_bytes = 0;
                cfg.read_ahead = 8 << 20;
            })
            .await;
        cl.put_bytes(&p("/early"), &data, PutOptions::default())
            .await
            .unwrap();
        let before = served_when_settled(&cl).await;
        let r = cl.open(&p("/early")).await.unwrap();
        let mut s = r.stream(0, len as u64);
        let first = s.next().await.unwrap().unwrap();
        assert!(first[..] == data[..first.len()]);
        drop(s);
        let settled = served_when_settled(&cl).await;
        let read = settled - before;
        assert!(
            read <= 16 << 20,
            "a dropped stream fetched {read} bytes of a {len}-byte file"
        );
        // A short range fetches its blocks, not a whole window.
        let r = cl.open(&p("/early")).await.unwrap();
        let mut s = r.stream(5 << 20, (5 << 20) + 100);
        assert!(s.next().await.unwrap().unwrap()[..] == data[5 << 20..(5 << 20) + 100]);
        assert!(s.next().await.is_none());
        let read = served_when_settled(&cl).await - settled;
        assert!(read <= 64 << 10, "a 100-byte range fetched {read} bytes");
        c.shutdown().await;
    })
    .await
}

/// The bytes every storage node has served, once it stops changing:
/// heartbeats (every 200 ms) carry each node's count, and two readings
/// 600 ms apart agree.
async fn served_when_settled(cl: &cairn_client::Client) -> u64 {
    let served = || async {
        let s = cl.cluster_status().await.unwrap();
        s.nodes.iter().map(|n| n.stats.served_bytes).sum::<u64>()
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = served().await;
    loop {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let now = served().await;
        if now == last {
            return now;
        }
        assert!(std::time::Instant::now() < end, "the nodes kept serving");
        last = now;
    }
}

/// `Discard` names only chunks the asking client was handed and no commit
/// took: committed data of a file (its writer's retried commit included)
/// and another client's fresh chunks are refused, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_refuses_committed_and_foreign_chunks() {
    deadline(async {
        use cairn_proto::{MetaClient, MetaRequest, MetaResponse};
        use cairn_types::{Cues, Extent};
        let c = TestCluster::start_with(2, |m| {
            m.default_rep = 2;
            m.gc_delay = Duration::from_millis(100);
        })
        .await;
        let cl = c.client().await;
        let data = pattern(300_000, 3);
        cl.put_bytes(&p("/kept"), &data, PutOptions::default())
            .await
            .unwrap();
        let committed: Vec<Extent> = cl.locate(&p("/kept")).await.unwrap().inode.extents;
        let meta = MetaClient::new(
            vec![c.meta_addr()],
            c.meta.as_ref().unwrap().secret.client_credentials(),
        );
        let as_client = |id: u64, req: MetaRequest| MetaRequest::As {
            client: id,
            req: Box::new(req),
        };
        let discard = |extents: Vec<Extent>| MetaRequest::Discard { extents };
        // Nobody may discard a committed chunk.
        for id in [1, 2] {
            let e = meta
                .call(as_client(id, discard(committed.clone())))
                .await
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        }
        // A fresh chunk: only the client it was handed to may discard it,
        // and once discarded, saying so again is fine.
        let alloc = MetaRequest::AllocChunk {
            path: p("/fresh"),
            cues: Cues::default(),
            host: None,
            exclude: vec![],
            len: 10,
        };
        let fresh = match meta.call(as_client(7, alloc)).await.unwrap() {
            MetaResponse::Alloc(a) => Extent {
                chunk: a.chunk,
                nodes: a.nodes.iter().map(|n| n.id).collect(),
                ..committed[0].clone()
            },
            other => panic!("{other:?}"),
        };
        let e = meta
            .call(as_client(8, discard(vec![fresh.clone()])))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        // A mixed request is refused whole.
        let mixed = vec![fresh.clone(), committed[0].clone()];
        let e = meta.call(as_client(7, discard(mixed))).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::PermissionDenied, "{e}");
        meta.call(as_client(7, discard(vec![fresh.clone()])))
            .await
            .unwrap();
        meta.call(as_client(7, discard(vec![fresh.clone()])))
            .await
            .unwrap();
        // A discarded chunk is garbage: a commit naming it (a retry of a
        // commit whose failure discarded it, say) is refused, nothing changes.
        let commit = MetaRequest::CommitFile {
            path: p("/fresh"),
            extents: vec![fresh],
            expected: None,
            mode: None,
            chunk_size: 256 * 1024,
            xattrs: None,
            cues: Cues::default(),
        };
        let e = meta.call(as_client(7, commit)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict, "{e}");
        assert_eq!(
            cl.stat(&p("/fresh")).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        // Once garbage collection has run twice more, past the delay of the
        // discarded chunk, the file is whole.
        let gc_passes = || async {
            let st = cl.cluster_status().await.unwrap();
            st.workers
                .iter()
                .find(|w| w.name == "gc")
                .map_or(0, |w| w.passes)
        };
        let before = gc_passes().await;
        wait_for(Duration::from_secs(60), || async {
            (gc_passes().await >= before + 2).then_some(())
        })
        .await;
        assert_eq!(cl.get_bytes(&p("/kept")).await.unwrap(), data);
        c.shutdown().await;
    })
    .await
}

/// A change sent again with the same request id (its answer was lost) is
/// applied once and answered as a success: a rename does not fail with
/// "not found", a commit does not make a second version, a remove does not
/// report a missing file. Another id is another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_change_is_applied_once() {
    deadline(async {
        use cairn_proto::{MetaClient, MetaRequest, MetaResponse};
        let c = TestCluster::start(2, 2).await;
        let cl = c.client().await;
        cl.put_bytes(&p("/a"), b"a", chunked()).await.unwrap();
        let meta = MetaClient::new(
            vec![c.meta_addr()],
            c.meta.as_ref().unwrap().secret.client_credentials(),
        );
        let once = |id: u128, req: MetaRequest| MetaRequest::As {
            client: 5,
            req: Box::new(MetaRequest::Once {
                id,
                req: Box::new(req),
            }),
        };
        let rename = || MetaRequest::Rename {
            src: p("/a"),
            dst: p("/b"),
        };
        for _ in 0..3 {
            meta.call(once(1, rename())).await.unwrap();
        }
        assert!(cl.stat(&p("/b")).await.is_ok());
        // Without the id's protection the same rename is a new request.
        let e = meta.call(once(2, rename())).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{e}");

        // A commit sent three times makes one version.
        let inode = cl.stat(&p("/b")).await.unwrap();
        let commit = || MetaRequest::CommitFile {
            path: p("/b"),
            extents: inode.extents.clone(),
            expected: Some(inode.version),
            mode: None,
            chunk_size: 1 << 20,
            xattrs: None,
            cues: Default::default(),
        };
        let mut versions = Vec::new();
        for _ in 0..3 {
            match meta.call(once(3, commit())).await.unwrap() {
                MetaResponse::Inode(i) => versions.push(i.version),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(versions, vec![Version(inode.version.0 + 1); 3]);
        assert_eq!(
            cl.stat(&p("/b")).await.unwrap().version,
            Version(inode.version.0 + 1)
        );
        assert_eq!(cl.get_bytes(&p("/b")).await.unwrap(), b"a");

        // A remove sent twice is one success.
        let rm = || MetaRequest::Remove {
            path: p("/b"),
            recursive: false,
        };
        meta.call(once(4, rm())).await.unwrap();
        meta.call(once(4, rm())).await.unwrap();
        assert_eq!(
            cl.stat(&p("/b")).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        c.shutdown().await;
    })
    .await
}

/// `--audit-log`: a JSON line per namespace change and per refused
/// request, with the client, the operation, its paths and the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_changes_and_refusals() {
    deadline(async {
        use cairn_proto::{MetaClient, MetaRequest};
        let log = tempfile::NamedTempFile::new().unwrap();
        let path = log.path().to_path_buf();
        let c = TestCluster::start_with(2, |m| {
            m.default_rep = 2;
            m.audit_log = Some(path.clone());
        })
        .await;
        let cl = c.client().await;
        cl.put_bytes(&p("/audited"), b"x", chunked()).await.unwrap();
        cl.rename(&p("/audited"), &p("/moved")).await.unwrap();
        assert!(cl.remove(&p("/nothing"), false).await.is_err());
        cl.stat(&p("/moved")).await.unwrap();
        let extents = cl.locate(&p("/moved")).await.unwrap().inode.extents;
        let meta = MetaClient::new(
            vec![c.meta_addr()],
            c.meta.as_ref().unwrap().secret.client_credentials(),
        );
        let refused = MetaRequest::As {
            client: 0xabc,
            req: Box::new(MetaRequest::Discard { extents }),
        };
        assert!(meta.call(refused).await.is_err());
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ops: Vec<(&str, &str)> = lines
            .iter()
            .map(|l| (l["op"].as_str().unwrap(), l["outcome"].as_str().unwrap()))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("commit_file", "ok"),
                ("rename", "ok"),
                ("remove", "NotFound"),
                ("discard", "PermissionDenied")
            ],
            "{lines:?}"
        );
        assert_eq!(lines[1]["paths"], serde_json::json!(["/audited", "/moved"]));
        assert_eq!(lines[3]["client"], "0000000000000abc");
        // Reads are not audited.
        assert!(!ops.iter().any(|(op, _)| *op == "Stat" || *op == "Open"));
        c.shutdown().await;
    })
    .await
}
