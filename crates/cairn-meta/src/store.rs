//! The `MetaStore` interface: a small transactional ordered key-value store.
//!
//! Shaped after etcd v3 so that an etcd backend can implement it one to one:
//! every key carries the store revision of its last modification, reads are
//! point gets and range scans, and writes are transactions that apply all of
//! their operations atomically iff every condition holds (etcd `Txn` with
//! `Compare`s). The namespace in [`crate::namespace`] is written once against
//! this trait.

use cairn_types::{Error, ErrorKind, Result};
use std::sync::Arc;

/// A transactional ordered key-value store with per-key modification revisions.
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Value and its modification revision (>0), or None.
    async fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>>;
    /// Keys in [start, end) in order, at most `limit`, each with value and revision.
    async fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>>;
    /// Apply all ops atomically iff every condition holds; returns the new store
    /// revision (the current one for a transaction without ops), or an error of
    /// kind [`ErrorKind::Conflict`] (retryable) when a condition failed, in
    /// which case nothing was applied.
    async fn commit(&self, txn: Txn) -> Result<u64>;
    /// Whether other meta servers may share this store (etcd): each then
    /// records its allocations in it, and none hands out metadata leases
    /// (it could not hold back another meta's change until they ran out).
    fn is_shared(&self) -> bool {
        false
    }
}

/// One key of a scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Store revision of the key's last modification.
    pub revision: u64,
}

/// Conditions, then operations applied in order if all conditions hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub conditions: Vec<Condition>,
    pub ops: Vec<Op>,
    /// May be acknowledged before it is on disk: it is made durable by the
    /// next durable commit, or within [`LAZY_DURABLE_WITHIN`] (stores that
    /// are always durable, as etcd, ignore it). For changes whose loss in
    /// a crash loses nothing acknowledged as durable: an empty file made
    /// by a create, which its writer's close commits durably.
    pub lazy: bool,
}

/// How long a [`Txn::lazy`] commit may stay off the disk at most.
pub const LAZY_DURABLE_WITHIN: std::time::Duration = std::time::Duration::from_millis(50);

/// A precondition of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The key's modification revision is exactly `revision`; 0 means the key is absent.
    /// (etcd: `Compare{MOD, EQUAL}`, or `Compare{VERSION, EQUAL, 0}` for absence.)
    Revision { key: Vec<u8>, revision: u64 },
    /// No key exists in [start, end). Needed to remove or replace an empty
    /// directory without racing a concurrent create inside it.
    /// (etcd: `Compare{VERSION, EQUAL, 0}` with `range_end`, which holds only
    /// for an empty range.)
    RangeEmpty { start: Vec<u8>, end: Vec<u8> },
}

/// A write of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Delete every key in [start, end).
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Require `key` to be at `revision` (0 = absent).
    pub fn when(mut self, key: impl Into<Vec<u8>>, revision: u64) -> Txn {
        self.conditions.push(Condition::Revision {
            key: key.into(),
            revision,
        });
        self
    }

    /// Require no key in [start, end).
    pub fn when_empty(mut self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Txn {
        self.conditions.push(Condition::RangeEmpty {
            start: start.into(),
            end: end.into(),
        });
        self
    }

    pub fn put(mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Txn {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    pub fn delete(mut self, key: impl Into<Vec<u8>>) -> Txn {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    pub fn delete_range(mut self, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Txn {
        self.ops.push(Op::DeleteRange {
            start: start.into(),
            end: end.into(),
        });
        self
    }
}

/// The conflict error every backend returns when a condition fails.
pub fn conflict_error() -> Error {
    Error::conflict("metadata transaction lost a race with a concurrent update; retry")
}

/// The smallest key greater than every key starting with `prefix`, for a range
/// scan over a prefix. Empty (meaning "no upper bound" is not supported) only
/// for an all-0xff prefix, which the namespace never uses.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// Behaviour every [`MetaStore`] must show. Call it on a fresh, empty store.
#[doc(hidden)]
pub async fn conformance_suite(store: Arc<dyn MetaStore>) {
    let s = store.as_ref();

    // Absent keys, empty scans, read-only commits.
    assert_eq!(s.get(b"a").await.unwrap(), None);
    assert!(s.scan(b"", b"\xff", 10).await.unwrap().is_empty());
    let rev0 = s.commit(Txn::new()).await.unwrap();

    // Put; revisions are positive and increase per transaction.
    let r1 = s
        .commit(Txn::new().put(b"b".to_vec(), b"1".to_vec()))
        .await
        .unwrap();
    assert!(r1 > rev0 && r1 > 0);
    assert_eq!(s.get(b"b").await.unwrap(), Some((b"1".to_vec(), r1)));
    let r2 = s
        .commit(
            Txn::new()
                .put(b"a".to_vec(), b"2".to_vec())
                .put(b"c".to_vec(), b"3".to_vec()),
        )
        .await
        .unwrap();
    assert!(r2 > r1);
    assert_eq!(s.get(b"a").await.unwrap(), Some((b"2".to_vec(), r2)));
    assert_eq!(s.get(b"c").await.unwrap(), Some((b"3".to_vec(), r2)));
    assert_eq!(
        s.get(b"b").await.unwrap(),
        Some((b"1".to_vec(), r1)),
        "untouched key keeps its revision"
    );
    // A read-only transaction does not move the revision.
    assert_eq!(
        s.commit(Txn::new().when(b"a".to_vec(), r2)).await.unwrap(),
        r2
    );

    // Scan: ordering, bounds, limits.
    let keys = |kvs: Vec<KeyValue>| kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.scan(b"", b"\xff", 10).await.unwrap()),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        keys(s.scan(b"a", b"c", 10).await.unwrap()),
        vec![b"a".to_vec(), b"b".to_vec()],
        "end is exclusive"
    );
    assert_eq!(
        keys(s.scan(b"a\0", b"z", 10).await.unwrap()),
        vec![b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        keys(s.scan(b"", b"\xff", 2).await.unwrap()),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert!(s.scan(b"", b"\xff", 0).await.unwrap().is_empty());
    assert!(
        s.scan(b"c", b"a", 10).await.unwrap().is_empty(),
        "inverted range is empty"
    );
    let kv = &s.scan(b"b", b"c", 1).await.unwrap()[0];
    assert_eq!((kv.value.as_slice(), kv.revision), (b"1".as_slice(), r1));
    // Binary keys sort bytewise, including prefixes.
    let rb = s
        .commit(
            Txn::new()
                .put(vec![b'p', 0xff], b"x".to_vec())
                .put(vec![b'p', 0x00], b"y".to_vec())
                .put(vec![b'p'], b"z".to_vec()),
        )
        .await
        .unwrap();
    let got = s.scan(b"p", &prefix_end(b"p"), 10).await.unwrap();
    assert_eq!(
        keys(got.clone()),
        vec![vec![b'p'], vec![b'p', 0], vec![b'p', 0xff]]
    );
    assert!(got.iter().all(|kv| kv.revision == rb));

    // Conditions: absence.
    let err = s
        .commit(
            Txn::new()
                .when(b"a".to_vec(), 0)
                .put(b"x".to_vec(), b"!".to_vec()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(
        s.get(b"x").await.unwrap(),
        None,
        "nothing applied on conflict"
    );
    let rx = s
        .commit(
            Txn::new()
                .when(b"x".to_vec(), 0)
                .put(b"x".to_vec(), b"new".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(s.get(b"x").await.unwrap(), Some((b"new".to_vec(), rx)));

    // Conditions: stale revision -> conflict, nothing applied, even the ops of passing conditions.
    let err = s
        .commit(
            Txn::new()
                .when(b"x".to_vec(), rx)
                .when(b"b".to_vec(), r1 + 1000)
                .put(b"x".to_vec(), b"lost".to_vec())
                .delete(b"a".to_vec()),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.kind.is_retryable());
    assert_eq!(s.get(b"x").await.unwrap(), Some((b"new".to_vec(), rx)));
    assert!(s.get(b"a").await.unwrap().is_some());
    let r3 = s
        .commit(
            Txn::new()
                .when(b"x".to_vec(), rx)
                .when(b"b".to_vec(), r1)
                .put(b"x".to_vec(), b"won".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(s.get(b"x").await.unwrap(), Some((b"won".to_vec(), r3)));

    // Range-empty condition.
    let err = s
        .commit(
            Txn::new()
                .when_empty(b"p".to_vec(), prefix_end(b"p"))
                .put(b"q".to_vec(), b"".to_vec()),
        )
        .await;
    assert_eq!(err.unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(s.get(b"q").await.unwrap(), None);
    s.commit(
        Txn::new()
            .when_empty(b"q".to_vec(), b"r".to_vec())
            .put(b"q".to_vec(), b"".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get(b"q").await.unwrap().unwrap().0,
        b"".to_vec(),
        "empty values are values"
    );

    // Delete and DeleteRange; ops apply in order within a transaction.
    s.commit(
        Txn::new()
            .delete(b"q".to_vec())
            .delete(b"never-existed".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(s.get(b"q").await.unwrap(), None);
    s.commit(
        Txn::new()
            .delete_range(b"p".to_vec(), prefix_end(b"p"))
            .put(vec![b'p', 7], b"after".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(
        keys(s.scan(b"p", &prefix_end(b"p"), 10).await.unwrap()),
        vec![vec![b'p', 7]]
    );
    s.commit(
        Txn::new()
            .put(b"y".to_vec(), b"1".to_vec())
            .delete(b"y".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(s.get(b"y").await.unwrap(), None);
    // A deleted key is absent again: revision 0 condition holds.
    s.commit(Txn::new().when(b"y".to_vec(), 0)).await.unwrap();

    // Concurrent conflicting committers: exactly one winner.
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let st = store.clone();
        tasks.push(tokio::spawn(async move {
            st.commit(
                Txn::new()
                    .when(b"race".to_vec(), 0)
                    .put(b"race".to_vec(), vec![i]),
            )
            .await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => winners += 1,
            Err(e) => assert_eq!(e.kind, ErrorKind::Conflict),
        }
    }
    assert_eq!(winners, 1);

    // Read-modify-write increments from many tasks all land (conditions are
    // checked against the effects of earlier transactions, also within one batch).
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let st = store.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    loop {
                        let (n, rev) = match st.get(b"counter").await.unwrap() {
                            Some((v, rev)) => (u64::from_be_bytes(v.try_into().unwrap()), rev),
                            None => (0, 0),
                        };
                        let txn = Txn::new()
                            .when(b"counter".to_vec(), rev)
                            .put(b"counter".to_vec(), (n + 1).to_be_bytes().to_vec());
                        match st.commit(txn).await {
                            Ok(_) => break,
                            Err(e) if e.kind == ErrorKind::Conflict => {
                                tokio::task::yield_now().await
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (v, _) = s.get(b"counter").await.unwrap().unwrap();
    assert_eq!(u64::from_be_bytes(v.try_into().unwrap()), 80);

    // Atomicity of multi-key transactions seen by concurrent readers: a and b
    // are always written together, so a reader never sees them differ.
    let writer = {
        let st = store.clone();
        tokio::spawn(async move {
            for i in 0..50u32 {
                let v = i.to_be_bytes().to_vec();
                st.commit(
                    Txn::new()
                        .put(b"pair/a".to_vec(), v.clone())
                        .put(b"pair/b".to_vec(), v),
                )
                .await
                .unwrap();
            }
        })
    };
    for _ in 0..50 {
        let kvs = s.scan(b"pair/", &prefix_end(b"pair/"), 10).await.unwrap();
        if kvs.len() == 2 {
            assert_eq!(kvs[0].value, kvs[1].value);
            assert_eq!(kvs[0].revision, kvs[1].revision);
        } else {
            assert!(kvs.is_empty());
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();

    // Revisions keep increasing.
    let last = s
        .commit(Txn::new().put(b"z".to_vec(), b"".to_vec()))
        .await
        .unwrap();
    assert!(last > r3);
}
