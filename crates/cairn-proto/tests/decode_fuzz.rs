//! Hostile bytes at every message decoder a peer can reach: arbitrary
//! bytes and mutated valid encodings of requests and answers decode to a
//! value or an error, never a panic; a length field of 2^63 is an error,
//! not an allocation. A bounded number of cases runs in `cargo test`
//! (`PROPTEST_CASES=100000 cargo test -p cairn-proto --test decode_fuzz`
//! runs longer).

use cairn_proto::{
    Capability, ClusterSecret, LockKind, LockOwner, LockRequest, MetaRequest, MetaResult,
    StorageRequest,
};
use cairn_types::{BlockCrcs, CairnPath, ChunkId, Cues, Error, Extent, NodeId, Version};
use proptest::prelude::*;

fn decode_all(bytes: &[u8]) {
    let _ = postcard::from_bytes::<MetaRequest>(bytes);
    let _ = postcard::from_bytes::<MetaResult>(bytes);
    let _ = postcard::from_bytes::<StorageRequest>(bytes);
    let _ = postcard::from_bytes::<Capability>(bytes);
    let _ = postcard::from_bytes::<Error>(bytes);
    let _ = postcard::from_bytes::<cairn_proto::NodeStats>(bytes);
}

/// Valid encodings of messages with strings, vectors, options and nested
/// enums: the starting points for mutation.
fn samples() -> Vec<Vec<u8>> {
    let p = CairnPath::parse("/fleet/car42/log.bin").unwrap();
    let ext = Extent::replicated(
        ChunkId(0x1234_5678_9abc_def0_1122_3344_5566_7788),
        1 << 20,
        0xdead_beef,
        vec![NodeId(1), NodeId(2), NodeId(3)],
    );
    let scheme = cairn_types::EcScheme::new(2, 1).unwrap();
    let striped = Extent {
        ec: Some(cairn_types::EcShards {
            scheme,
            shard_len: scheme.shard_len(1 << 20),
            crcs: vec![1, 2, 3],
        }),
        ..ext.clone()
    };
    let secret = ClusterSecret::generate();
    let reqs = [
        MetaRequest::CommitFile {
            path: p.clone(),
            extents: vec![ext.clone(), striped],
            expected: Some(Version(3)),
            mode: Some(0o644),
            chunk_size: 32 << 20,
            xattrs: None,
            cues: Cues::parse("rep=2,place=spread,hot=actors").unwrap(),
        },
        MetaRequest::Lock {
            lock: LockRequest {
                path: p.clone(),
                owner: LockOwner {
                    session: u64::MAX,
                    owner: 7,
                },
                kind: LockKind::Exclusive,
                start: 0,
                end: u64::MAX,
                pid: 42,
            },
            wait: true,
        },
        MetaRequest::As {
            client: 9,
            req: Box::new(MetaRequest::Discard {
                extents: vec![ext.clone()],
            }),
        },
        MetaRequest::Prefetch {
            paths: vec![p.clone(), p.clone()],
            group: "actors".into(),
            evict: false,
        },
        MetaRequest::IdentityCreate {
            name: "car42".into(),
            rights: cairn_proto::Rights {
                admin: false,
                prefixes: vec![cairn_proto::PathRight {
                    path: p.clone(),
                    write: true,
                }],
            },
        },
    ];
    let mut out: Vec<Vec<u8>> = reqs
        .iter()
        .map(|r| postcard::to_stdvec(r).unwrap())
        .collect();
    let put = StorageRequest::PutChunk {
        chunk: ext.chunk,
        len: 1 << 20,
        crcs: BlockCrcs::compute(&vec![7u8; 200_000]),
        cap: Capability::sign(
            &secret,
            ext.chunk,
            true,
            Some(cairn_proto::IdentityId([7; 16])),
        ),
        chain: vec![],
    };
    out.push(postcard::to_stdvec(&put).unwrap());
    let answer: MetaResult = Err(Error::conflict("lost a race"));
    out.push(postcard::to_stdvec(&answer).unwrap());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        which in 0usize..7,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<usize>(),
    ) {
        let mut bytes = samples()[which].clone();
        for (at, byte, how) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at % bytes.len();
            match how {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        decode_all(&bytes);
        let n = bytes.len();
        decode_all(&bytes[..cut % (n + 1)]);
    }
}

#[test]
fn huge_length_fields_are_errors_not_allocations() {
    // Each sample with a varint of 2^63 - 1 (and of u64::MAX) spliced in
    // at every position: a length that large must fail on the bytes that
    // are not there, not reserve memory for them.
    let huge: [&[u8]; 2] = [
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    ];
    for s in samples() {
        for at in 0..s.len() {
            for h in huge {
                let mut b = s[..at].to_vec();
                b.extend_from_slice(h);
                b.extend_from_slice(&s[at..]);
                decode_all(&b);
            }
        }
    }
    // A path of 2^63 bytes, say, is refused.
    let mut b = vec![0u8]; // the first request variant
    b.extend_from_slice(huge[0]);
    assert!(postcard::from_bytes::<MetaRequest>(&b).is_err());
}
