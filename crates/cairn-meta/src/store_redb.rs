//! The embedded [`MetaStore`]: one redb file in the meta server's data directory.
//!
//! Each value is stored as its modification revision (8 bytes, big endian)
//! followed by the caller's bytes; the global revision counter lives in a
//! second table. Writes go through one committer thread that groups every
//! queued transaction into a single durable redb write transaction, so many
//! concurrent clients share one fsync. Reads use redb read transactions on the
//! blocking pool.

use crate::store::{conflict_error, Condition, KeyValue, MetaStore, Op, Txn, LAZY_DURABLE_WITHIN};
use cairn_types::{Error, Result};
use redb::{Database, Durability, ReadableTable, Table, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION: &str = "revision";

/// Queued transactions waiting for the committer; callers wait beyond this.
const QUEUE_DEPTH: usize = 1024;
/// Most transactions folded into one redb commit.
const MAX_BATCH: usize = 512;

struct Request {
    txn: Txn,
    reply: oneshot::Sender<Result<u64>>,
}

/// A [`MetaStore`] in a local redb file, with group commit.
pub struct RedbStore {
    db: Arc<Database>,
    queue: Option<mpsc::Sender<Request>>,
    committer: Option<JoinHandle<()>>,
    /// The last revision known to be on disk (lazy commits after it are not).
    durable: Arc<AtomicU64>,
}

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("metadata store (redb): {e}"))
}

impl RedbStore {
    /// Open or create the store at `path` (a file). Blocks briefly while redb
    /// checks the file; call it before serving, or from `spawn_blocking`.
    pub fn open(path: &Path) -> Result<RedbStore> {
        let db = Database::create(path).map_err(|e| db_err(e).context(path.display()))?;
        let revision = {
            let mut w = db.begin_write().map_err(db_err)?;
            w.set_durability(Durability::Immediate);
            w.open_table(KV).map_err(db_err)?;
            let rev = {
                let meta = w.open_table(META).map_err(db_err)?;
                let rev = meta
                    .get(REVISION)
                    .map_err(db_err)?
                    .map(|g| g.value())
                    .unwrap_or(0);
                rev
            };
            w.commit().map_err(db_err)?;
            rev
        };
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let durable = Arc::new(AtomicU64::new(revision));
        let committer_db = db.clone();
        let committer = std::thread::Builder::new()
            .name("cairn-meta-commit".into())
            .spawn({
                let durable = durable.clone();
                move || committer_loop(committer_db, rx, revision, &durable)
            })
            .map_err(|e| {
                Error::internal(format!("cannot start the metadata committer thread: {e}"))
            })?;
        Ok(RedbStore {
            db,
            queue: Some(tx),
            committer: Some(committer),
            durable,
        })
    }

    /// The last revision known to be on disk: every commit up to it
    /// survives a crash; a lazy one after it may not.
    pub fn durable_revision(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue stops the committer after its current batch; joining
        // it releases the database file so the store can be reopened at once.
        self.queue.take();
        if let Some(handle) = self.committer.take() {
            let _ = handle.join();
        }
    }
}

fn split_value(raw: &[u8]) -> (u64, &[u8]) {
    let (rev, value) = raw.split_at(8);
    (u64::from_be_bytes(rev.try_into().expect("8 bytes")), value)
}

fn encode_value(revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn committer_loop(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Request>,
    mut revision: u64,
    durable: &AtomicU64,
) {
    // Waits with a deadline while a lazy commit is not yet on disk; without
    // one (the OS refused a timer), every commit is durable.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| tracing::warn!("metadata committer: no timer ({e}); every commit is durable"))
        .ok();
    // Since when commits acknowledged lazily wait for the disk.
    let mut lazy_since: Option<std::time::Instant> = None;
    loop {
        let first = match (lazy_since, &timer) {
            (None, _) | (_, None) => rx.blocking_recv(),
            (Some(t), Some(timer)) => {
                let left = LAZY_DURABLE_WITHIN.saturating_sub(t.elapsed());
                match timer.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                    Ok(r) => r,
                    Err(_) => {
                        // Nothing else came: put the lazy commits on disk now.
                        match persist(&db, revision) {
                            Ok(()) => {
                                lazy_since = None;
                                durable.store(revision, Ordering::Release);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "making lazy metadata commits durable failed")
                            }
                        }
                        continue;
                    }
                }
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let overdue = lazy_since.is_some_and(|t| t.elapsed() >= LAZY_DURABLE_WITHIN);
        let on_disk = timer.is_none() || overdue || batch.iter().any(|r| !r.txn.lazy);
        match apply_batch(&db, revision, &batch, on_disk) {
            Ok((new_revision, results)) => {
                if on_disk {
                    lazy_since = None;
                    durable.store(new_revision, Ordering::Release);
                } else if new_revision != revision {
                    lazy_since.get_or_insert_with(std::time::Instant::now);
                }
                revision = new_revision;
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, txns = batch.len(), "metadata commit failed");
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }
    if lazy_since.is_some() {
        if let Err(e) = persist(&db, revision) {
            tracing::error!(error = %e, "making lazy metadata commits durable failed");
        }
    }
}

/// A durable commit that changes nothing: every lazy commit before it is
/// then on disk too (redb persists the whole state at a durable commit).
fn persist(db: &Database, revision: u64) -> Result<()> {
    let mut w = db.begin_write().map_err(db_err)?;
    w.set_durability(Durability::Immediate);
    {
        let mut meta = w.open_table(META).map_err(db_err)?;
        meta.insert(REVISION, revision).map_err(db_err)?;
    }
    w.commit().map_err(db_err)
}

/// Evaluate and apply a batch in one redb write transaction (on disk when
/// it returns if `durable`, else with the next durable one). Each transaction
/// sees the effects of the earlier ones in the batch. Returns the revision
/// after the batch and one result per transaction; on error nothing was
/// committed.
fn apply_batch(
    db: &Database,
    mut revision: u64,
    batch: &[Request],
    durable: bool,
) -> Result<(u64, Vec<Result<u64>>)> {
    let mut w = db.begin_write().map_err(db_err)?;
    w.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    let mut results = Vec::with_capacity(batch.len());
    let mut wrote = false;
    {
        let mut kv = w.open_table(KV).map_err(db_err)?;
        for req in batch {
            if !conditions_hold(&kv, &req.txn.conditions)? {
                results.push(Err(conflict_error()));
                continue;
            }
            if req.txn.ops.is_empty() {
                results.push(Ok(revision));
                continue;
            }
            revision += 1;
            wrote = true;
            for op in &req.txn.ops {
                apply_op(&mut kv, revision, op)?;
            }
            results.push(Ok(revision));
        }
        if wrote {
            let mut meta = w.open_table(META).map_err(db_err)?;
            meta.insert(REVISION, revision).map_err(db_err)?;
        }
    }
    if wrote {
        w.commit().map_err(db_err)?;
    } else {
        w.abort().map_err(db_err)?;
    }
    Ok((revision, results))
}

fn conditions_hold(kv: &Table<&[u8], &[u8]>, conditions: &[Condition]) -> Result<bool> {
    for cond in conditions {
        let holds = match cond {
            Condition::Revision { key, revision } => {
                let current = kv
                    .get(key.as_slice())
                    .map_err(db_err)?
                    .map(|g| split_value(g.value()).0)
                    .unwrap_or(0);
                current == *revision
            }
            Condition::RangeEmpty { start, end } => {
                start >= end
                    || kv
                        .range(start.as_slice()..end.as_slice())
                        .map_err(db_err)?
                        .next()
                        .is_none()
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

fn apply_op(kv: &mut Table<&[u8], &[u8]>, revision: u64, op: &Op) -> Result<()> {
    match op {
        Op::Put { key, value } => {
            kv.insert(key.as_slice(), encode_value(revision, value).as_slice())
                .map_err(db_err)?;
        }
        Op::Delete { key } => {
            kv.remove(key.as_slice()).map_err(db_err)?;
        }
        Op::DeleteRange { start, end } => {
            if start < end {
                kv.retain_in(start.as_slice()..end.as_slice(), |_, _| false)
                    .map_err(db_err)?;
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl MetaStore for RedbStore {
    async fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, u64)>> {
        // A point read of a B-tree whose hot pages are cached takes
        // microseconds: cheaper inline than a hop to the blocking pool,
        // which dominated metadata latency under load.
        let r = self.db.begin_read().map_err(db_err)?;
        let kv = r.open_table(KV).map_err(db_err)?;
        let got = kv.get(key).map_err(db_err)?;
        Ok(got.map(|g| {
            let (rev, value) = split_value(g.value());
            (value.to_vec(), rev)
        }))
    }

    async fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KeyValue>> {
        if limit == 0 || start >= end {
            return Ok(Vec::new());
        }
        let db = self.db.clone();
        let (start, end) = (start.to_vec(), end.to_vec());
        let run = move || {
            let r = db.begin_read().map_err(db_err)?;
            let kv = r.open_table(KV).map_err(db_err)?;
            let mut out = Vec::new();
            for item in kv
                .range(start.as_slice()..end.as_slice())
                .map_err(db_err)?
                .take(limit)
            {
                let (k, v) = item.map_err(db_err)?;
                let (revision, value) = split_value(v.value());
                out.push(KeyValue {
                    key: k.value().to_vec(),
                    value: value.to_vec(),
                    revision,
                });
            }
            Ok(out)
        };
        // Short scans (a page of a listing, a path lookup) run inline like
        // `get`; long ones go to the blocking pool.
        if limit <= 1024 {
            run()
        } else {
            blocking(run).await
        }
    }

    async fn commit(&self, txn: Txn) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| Error::unavailable("metadata store is closed"))?;
        queue
            .send(Request { txn, reply })
            .await
            .map_err(|_| Error::internal("metadata committer thread has stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("metadata committer thread has stopped"))?
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("metadata read task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance_suite;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redb_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("meta.redb")).unwrap());
        conformance_suite(store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redb_reopen_keeps_data_and_revision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let rev = {
            let store = RedbStore::open(&path).unwrap();
            store
                .commit(Txn::new().put(b"k".to_vec(), b"v".to_vec()))
                .await
                .unwrap();
            store
                .commit(Txn::new().put(b"k2".to_vec(), b"v2".to_vec()))
                .await
                .unwrap()
        };
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get(b"k2").await.unwrap(), Some((b"v2".to_vec(), rev)));
        assert_eq!(store.scan(b"", b"\xff", 10).await.unwrap().len(), 2);
        let next = store
            .commit(Txn::new().put(b"k3".to_vec(), b"".to_vec()))
            .await
            .unwrap();
        assert!(next > rev, "revision counter survives a restart");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lazy_commits_are_seen_at_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let lazy = |k: &[u8]| {
            let mut t = Txn::new().put(k.to_vec(), b"v".to_vec());
            t.lazy = true;
            t
        };
        {
            let store = RedbStore::open(&path).unwrap();
            let r1 = store.commit(lazy(b"a")).await.unwrap();
            assert_eq!(store.get(b"a").await.unwrap(), Some((b"v".to_vec(), r1)));
            // Made durable by the timer, then by a durable commit, then at close.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while store.durable_revision() < r1 {
                assert!(std::time::Instant::now() < deadline, "never made durable");
                tokio::time::sleep(LAZY_DURABLE_WITHIN / 5).await;
            }
            store.commit(lazy(b"b")).await.unwrap();
            let rc = store
                .commit(Txn::new().put(b"c".to_vec(), b"v".to_vec()))
                .await
                .unwrap();
            assert!(store.durable_revision() >= rc);
            store.commit(lazy(b"d")).await.unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let keys: Vec<Vec<u8>> = store
            .scan(b"", b"\xff", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(
            keys,
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_batches_concurrent_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> =
            Arc::new(RedbStore::open(&dir.path().join("meta.redb")).unwrap());
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let st = store.clone();
                tokio::spawn(async move {
                    let key = format!("k/{i:04}").into_bytes();
                    st.commit(
                        Txn::new()
                            .when(key.clone(), 0)
                            .put(key, i.to_be_bytes().to_vec()),
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut revs = Vec::new();
        for t in tasks {
            revs.push(t.await.unwrap());
        }
        revs.sort();
        revs.dedup();
        assert_eq!(revs.len(), 200, "each transaction gets its own revision");
        assert_eq!(store.scan(b"k/", b"k0", 1000).await.unwrap().len(), 200);
    }
}
