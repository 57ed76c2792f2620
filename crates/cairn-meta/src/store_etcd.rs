//! [`EtcdStore`]: the [`MetaStore`] on an etcd v3 cluster, so that several
//! stateless meta servers can share one namespace that survives the loss of
//! a machine.
//!
//! The mapping is one to one, which is why the trait has etcd's shape:
//!
//! - every key lives under a prefix (`/cairn/` by default), so one etcd
//!   cluster can hold several namespaces and ordered range scans stay scans;
//! - a key's revision is etcd's `mod_revision` (> 0, changes on every write);
//! - a commit is exactly one etcd `Txn`: `Condition::Revision` becomes
//!   `Compare{MOD == r}` (or `Compare{VERSION == 0}` for absence) and
//!   `Condition::RangeEmpty` becomes `Compare{VERSION == 0}` over the range,
//!   which etcd evaluates against every key in it and which therefore holds
//!   only for an empty range. A failed compare is a [`ErrorKind::Conflict`].
//! - etcd refuses a Txn that puts a key twice or puts a key another op of
//!   the same Txn deletes, while the trait applies ops in order; [`plan_ops`]
//!   reduces the ops to their net effect first.
//!
//! Under failure: every call has a deadline. Reads are retried on transient
//! errors (a dead member, a leader election) until it passes; a commit is
//! retried only when etcd cannot have seen it (the connection was refused,
//! no leader), because a retried Txn whose first attempt applied would
//! report a false conflict. A commit whose outcome is unknown is an
//! [`ErrorKind::Unavailable`] error saying so. Nothing is cached, so a meta
//! server never serves state another meta server has changed.

use crate::store::{conflict_error, Condition, KeyValue, MetaStore, Op, Txn};
use cairn_types::{Error, ErrorKind, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient,
    Txn as EtcdTxn, TxnOp,
};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};
use tracing::debug;

/// Keys per scan request; halved when a page of large values is too big to receive.
const SCAN_PAGE: usize = 1024;
/// Largest response the client accepts (etcd's own request limit is 1.5 MiB
/// by default, so this leaves room for a page of large directory entries).
const MAX_RESPONSE: usize = 64 << 20;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs or HOST:PORT of the members; the client balances and fails over between them.
    pub endpoints: Vec<String>,
    /// Every key of this namespace starts with it; must not be empty.
    pub prefix: Vec<u8>,
    /// Deadline of one store call, retries included.
    pub timeout: Duration,
}

impl EtcdConfig {
    pub const DEFAULT_PREFIX: &'static str = "/cairn/";

    pub fn new(endpoints: Vec<String>, prefix: impl Into<Vec<u8>>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: prefix.into(),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The [`MetaStore`] on etcd. Cheap to share: one gRPC channel per store.
pub struct EtcdStore {
    kv: KvClient,
    cfg: EtcdConfig,
}

impl EtcdStore {
    /// Connect and check that the cluster answers; an unreachable cluster is
    /// an [`ErrorKind::Unavailable`] error naming the endpoints.
    pub async fn connect(cfg: EtcdConfig) -> Result<EtcdStore> {
        if cfg.endpoints.is_empty() {
            return Err(Error::invalid("no etcd endpoints given"));
        }
        if cfg.prefix.is_empty() {
            return Err(Error::invalid(
                "the etcd key prefix must not be empty (etcd has no empty key)",
            ));
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1).min(cfg.timeout))
            .with_timeout(cfg.timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_require_leader(true);
        let client = Client::connect(&cfg.endpoints, Some(opts))
            .await
            .map_err(|e| {
                Error::invalid(format!(
                    "cannot use etcd endpoints {}: {e}",
                    cfg.endpoints.join(",")
                ))
            })?;
        let kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE);
        let store = EtcdStore { kv, cfg };
        // Fail at start, with a clear message, rather than on the first request.
        store.get(b"").await.map_err(|mut e| {
            if e.kind == ErrorKind::Unavailable {
                e.message = format!(
                    "{}; check that etcd runs and that --store lists its client addresses",
                    e.message
                );
            }
            e
        })?;
        Ok(store)
    }

    pub fn config(&self) -> &EtcdConfig {
        &self.cfg
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.cfg.prefix.len() + key.len());
        k.extend_from_slice(&self.cfg.prefix);
        k.extend_from_slice(key);
        k
    }

    fn strip(&self, key: Vec<u8>) -> Result<Vec<u8>> {
        match key.strip_prefix(self.cfg.prefix.as_slice()) {
            Some(k) => Ok(k.to_vec()),
            None => Err(Error::internal("etcd returned a key outside the prefix")),
        }
    }

    fn endpoints(&self) -> String {
        self.cfg.endpoints.join(",")
    }

    /// Run one etcd request with the store's deadline, retrying transient
    /// failures; `idempotent` says whether a request etcd may have applied
    /// can be sent again.
    async fn call<T, F, Fut>(&self, what: &str, idempotent: bool, mut f: F) -> Result<T>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.cfg.timeout;
        let mut backoff = Duration::from_millis(20);
        let mut last: Option<etcd_client::Error> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let e = match tokio::time::timeout(left, f(self.kv.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => break,
            };
            match classify(&e) {
                Failure::NotSent => {}
                Failure::Ambiguous if idempotent => {}
                Failure::Ambiguous => {
                    return Err(Error::unavailable(format!(
                        "etcd at {} failed during {what}, which may or may not have been \
                         applied: {}; re-read before retrying",
                        self.endpoints(),
                        describe(&e)
                    )))
                }
                Failure::Fatal => return Err(self.fatal(what, &e)),
            }
            debug!(what, error = %describe(&e), "etcd request failed; retrying");
            last = Some(e);
            let nap = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(nap).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        Err(Error::unavailable(format!(
            "etcd at {} did not complete {what} within {:?}{}",
            self.endpoints(),
            self.cfg.timeout,
            last.map(|e| format!(": {}", describe(&e)))
                .unwrap_or_default()
        )))
    }

    fn fatal(&self, what: &str, e: &etcd_client::Error) -> Error {
        let msg = describe(e);
        let kind = if msg.contains("too many operations in txn") {
            return Error::invalid(format!(
                "{what}: etcd refused a transaction with too many operations ({msg}): \
                 replacing or deleting a file touches one key per chunk; start etcd \
                 with a larger --max-txn-ops (e.g. 16384)"
            ));
        } else if msg.contains("request is too large") {
            return Error::invalid(format!(
                "{what}: etcd refused a request over its size limit ({msg}): a directory \
                 entry holds a file's whole extent list, so this file has too many \
                 chunks for etcd; use a larger --chunk-size, or raise etcd's \
                 --max-request-bytes"
            ));
        } else if msg.contains("database space exceeded") {
            return Error::no_space(format!(
                "{what}: etcd at {} is full ({msg}): compact and defragment it, raise \
                 --quota-backend-bytes, then `etcdctl alarm disarm`",
                self.endpoints()
            ));
        } else if matches!(
            e,
            etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_)
        ) {
            ErrorKind::InvalidInput
        } else {
            ErrorKind::Internal
        };
        Error::new(
            kind,
            format!("etcd at {} refused {what}: {msg}", self.endpoints()),
        )
    }
}

enum Failure {
    /// etcd cannot have applied the request: safe to send again.
    NotSent,
    /// The request may have been applied.
    Ambiguous,
    /// Retrying cannot help.
    Fatal,
}

fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut m = s.message().to_string();
            let mut src = std::error::Error::source(s);
            while let Some(cause) = src {
                let c = cause.to_string();
                if !m.contains(&c) {
                    m = format!("{m}: {c}");
                }
                src = cause.source();
            }
            m
        }
        e => e.to_string(),
    }
}

fn classify(e: &etcd_client::Error) -> Failure {
    // gRPC status codes.
    const CANCELLED: i32 = 1;
    const UNKNOWN: i32 = 2;
    const DEADLINE_EXCEEDED: i32 = 4;
    const RESOURCE_EXHAUSTED: i32 = 8;
    const ABORTED: i32 = 10;
    const UNAVAILABLE: i32 = 14;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => Failure::NotSent,
        etcd_client::Error::GRpcStatus(s) => {
            let msg = describe(e);
            let never_proposed = msg.contains("connect")
                || msg.contains("no leader")
                || msg.contains("too many requests")
                || msg.contains("not capable");
            match s.code() as i32 {
                UNAVAILABLE | DEADLINE_EXCEEDED | UNKNOWN | CANCELLED | ABORTED
                | RESOURCE_EXHAUSTED
                    if never_proposed =>
                {
                    Failure::NotSent
                }
                UNAVAILABLE | DEADLINE_EXCEEDED | UNKNOWN | CANCELLED | ABORTED => {
                    Failure::Ambiguous
                }
                _ => Failure::Fatal,
            }
        }
        _ => Failure::Fatal,
    }
}

/// A pair of byte strings: a key and its value, or a range start and end.
pub type KeyBytes = (Vec<u8>, Vec<u8>);

/// The net effect of `ops` applied in order, as etcd accepts it: delete
/// ranges `[start, end)` (applied first) and puts, where no put key lies in
/// any delete range and no key is put twice.
pub fn plan_ops(ops: Vec<Op>) -> (Vec<KeyBytes>, Vec<KeyBytes>) {
    let mut puts: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut dels: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for op in ops {
        match op {
            Op::Put { key, value } => {
                puts.insert(key, value);
            }
            Op::Delete { key } => {
                puts.remove(&key);
                let mut end = key.clone();
                end.push(0);
                dels.push((key, end));
            }
            Op::DeleteRange { start, end } => {
                if start < end {
                    puts.retain(|k, _| !(k >= &start && k < &end));
                    dels.push((start, end));
                }
            }
        }
    }
    // A put still present came after every delete covering its key: cut the
    // key out of those ranges (the delete of it is overwritten anyway).
    let mut cut = Vec::with_capacity(dels.len());
    for (start, end) in dels {
        let mut from = start;
        for k in puts.range(from.clone()..end.clone()).map(|(k, _)| k) {
            if from < *k {
                cut.push((from.clone(), k.clone()));
            }
            from = k.clone();
            from.push(0);
        }
        if from < end {
            cut.push((from, end));
        }
    }
    (puts.into_iter().collect(), cut)
}

#[async_trait::async_trait]
impl MetaStore for EtcdStore {
    fn is_shared(&self) -> bool {
        true
    }

    async fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>> {
        let full = self.full(key);
        let mut resp = self
            .call("a read", true, |mut kv| {
                let full = full.clone();
                async move { kv.get(full, None).await }
            })
            .await?;
        Ok(resp.take_kvs().into_iter().next().map(|kv| {
            let rev = kv.mod_revision() as u64;
            (kv.into_key_value().1, rev)
        }))
    }

    async fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        if limit == 0 || start >= end {
            return Ok(out);
        }
        let to = self.full(end);
        let mut from = self.full(start);
        // Later pages read at the first page's revision: one consistent snapshot.
        let mut at_rev = 0i64;
        let mut page = SCAN_PAGE;
        while out.len() < limit {
            let want = (limit - out.len()).min(page);
            let opts = GetOptions::new()
                .with_range(to.clone())
                .with_limit(want as i64)
                .with_revision(at_rev);
            let got = self
                .call("a range scan", true, |mut kv| {
                    let (from, opts) = (from.clone(), opts.clone());
                    async move { kv.get(from, Some(opts)).await }
                })
                .await;
            let mut resp = match got {
                Err(e) if page > 1 && e.message.contains("message length too large") => {
                    page /= 2;
                    continue;
                }
                r => r?,
            };
            if at_rev == 0 {
                at_rev = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let n = kvs.len();
            for kv in kvs {
                let revision = kv.mod_revision() as u64;
                let (key, value) = kv.into_key_value();
                out.push(KeyValue {
                    key: self.strip(key)?,
                    value,
                    revision,
                });
            }
            if !more || n < want {
                break;
            }
            from = self.full(&out.last().expect("n > 0").key);
            from.push(0);
        }
        Ok(out)
    }

    async fn commit(&self, txn: Txn) -> Result<u64> {
        let compares: Vec<Compare> = txn
            .conditions
            .iter()
            .filter_map(|c| match c {
                Condition::Revision { key, revision: 0 } => {
                    Some(Compare::version(self.full(key), CompareOp::Equal, 0))
                }
                Condition::Revision { key, revision } => Some(Compare::mod_revision(
                    self.full(key),
                    CompareOp::Equal,
                    i64::try_from(*revision).unwrap_or(i64::MAX),
                )),
                // An inverted or empty range is trivially empty.
                Condition::RangeEmpty { start, end } if start >= end => None,
                Condition::RangeEmpty { start, end } => Some(
                    Compare::version(self.full(start), CompareOp::Equal, 0)
                        .with_range(self.full(end)),
                ),
            })
            .collect();
        let (puts, dels) = plan_ops(txn.ops);
        let mut ops: Vec<TxnOp> = dels
            .into_iter()
            .map(|(s, e)| {
                TxnOp::delete(
                    self.full(&s),
                    Some(DeleteOptions::new().with_range(self.full(&e))),
                )
            })
            .collect();
        ops.extend(
            puts.into_iter()
                .map(|(k, v)| TxnOp::put(self.full(&k), v, None)),
        );
        let etxn = EtcdTxn::new().when(compares).and_then(ops);
        let resp = self
            .call("a transaction", false, |mut kv| {
                let etxn = etxn.clone();
                async move { kv.txn(etxn).await }
            })
            .await?;
        if !resp.succeeded() {
            return Err(conflict_error());
        }
        Ok(resp.header().map_or(0, |h| h.revision()) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn apply_in_order(ops: &[Op]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut m = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    m.insert(key.clone(), value.clone());
                }
                Op::Delete { key } => {
                    m.remove(key);
                }
                Op::DeleteRange { start, end } => m.retain(|k, _| !(k >= start && k < end)),
            }
        }
        m
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(0u8..4, 0..3)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (key(), any::<u8>()).prop_map(|(key, v)| Op::Put {
                key,
                value: vec![v]
            }),
            key().prop_map(|key| Op::Delete { key }),
            (key(), key()).prop_map(|(start, end)| Op::DeleteRange { start, end }),
        ]
    }

    proptest! {
        #[test]
        fn plan_has_the_net_effect_and_no_overlap(
            initial in prop::collection::btree_map(key(), any::<u8>(), 0..8),
            ops in prop::collection::vec(op(), 0..8),
        ) {
            let mut before: BTreeMap<Vec<u8>, Vec<u8>> =
                initial.into_iter().map(|(k, v)| (k, vec![v])).collect();
            let mut with_ops = vec![];
            for (k, v) in &before {
                with_ops.push(Op::Put { key: k.clone(), value: v.clone() });
            }
            with_ops.extend(ops.iter().cloned());
            let expected = apply_in_order(&with_ops);

            let (puts, dels) = plan_ops(ops);
            for (s, e) in &dels {
                prop_assert!(s < e);
                for (k, _) in &puts {
                    prop_assert!(!(k >= s && k < e), "put {k:?} inside delete {s:?}..{e:?}");
                }
                before.retain(|k, _| !(k >= s && k < e));
            }
            before.extend(puts);
            prop_assert_eq!(before, expected);
        }
    }
}
