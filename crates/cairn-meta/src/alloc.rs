//! Allocation records for meta servers sharing one store (etcd).
//!
//! On the embedded store there is one meta server and it remembers the
//! chunks it handed out in memory (`Meta::recent`). Several meta servers on
//! one etcd store cannot: a leader sweeping orphans must also know the
//! chunks the others just handed out, and a meta accepting a commit must
//! know chunks another meta allocated. So on a shared store every
//! allocation is also written as a key `A` + chunk id (big-endian) whose
//! value is the allocation time (ms since the epoch, big-endian u64).
//!
//! A record is not removed when its chunk is committed: removing it would
//! drop the chunk's protection at the moment it gains a reference, and a
//! sweep whose namespace walks race that commit and a rename could then
//! see neither. Records expire instead: one older than the orphan window
//! protects nothing (a commit naming its chunk is refused), so the sweep
//! deletes it, together with its chunk if no file references that. A
//! discarded chunk's record is removed at once (the chunk is in garbage).
//! The cost is one key per chunk written within the last orphan window
//! and a half (~40 bytes each). Times are wall-clock times of different
//! meta servers: their clocks must agree to well within `--orphan-after`.

use crate::store::{prefix_end, MetaStore, Txn};
use cairn_types::{ChunkId, Result};

/// First byte of every allocation record.
pub(crate) const ALLOC: u8 = b'A';
/// Records read or deleted per store request.
const PAGE: usize = 1000;
/// Deletes per transaction (etcd allows 128 operations by default).
const TXN_OPS: usize = 100;

pub(crate) fn alloc_key(chunk: ChunkId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(ALLOC);
    k.extend_from_slice(&chunk.0.to_be_bytes());
    k
}

/// A record's value: the allocation time, then (since `Discard` checks
/// them) the client it was handed to and whether a commit took it.
fn decode(key: &[u8], value: &[u8]) -> Option<(ChunkId, u64)> {
    let id: [u8; 16] = key.get(1..17)?.try_into().ok()?;
    let at: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some((ChunkId(u128::from_be_bytes(id)), u64::from_be_bytes(at)))
}

fn value(at_ms: u64, client: u64, committed: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.extend_from_slice(&at_ms.to_be_bytes());
    v.extend_from_slice(&client.to_be_bytes());
    v.push(committed as u8);
    v
}

/// Record that `chunk` was handed out at `at_ms` to `client` (0: unknown).
pub(crate) async fn record(
    store: &dyn MetaStore,
    chunk: ChunkId,
    at_ms: u64,
    client: u64,
) -> Result<()> {
    store
        .commit(Txn::new().put(alloc_key(chunk), value(at_ms, client, false)))
        .await
        .map(|_| ())
}

/// When `chunk` was handed out, if its record is still there.
pub(crate) async fn allocated_at(store: &dyn MetaStore, chunk: ChunkId) -> Result<Option<u64>> {
    Ok(lookup(store, chunk).await?.map(|r| r.at_ms))
}

/// What a record says of its chunk.
pub(crate) struct AllocRecord {
    pub at_ms: u64,
    /// The client it was handed to (0: unknown, an older record).
    pub client: u64,
    pub committed: bool,
}

pub(crate) async fn lookup(store: &dyn MetaStore, chunk: ChunkId) -> Result<Option<AllocRecord>> {
    let key = alloc_key(chunk);
    let Some((v, _)) = store.get(&key).await? else {
        return Ok(None);
    };
    let Some((_, at_ms)) = decode(&key, &v) else {
        return Ok(None);
    };
    let client = v
        .get(8..16)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0);
    Ok(Some(AllocRecord {
        at_ms,
        client,
        committed: v.get(16).is_some_and(|b| *b != 0),
    }))
}

/// Mark the records of `chunks` as taken by a commit (a later `Discard`
/// naming them is refused). Records keep protecting their chunks from the
/// sweep until they expire.
pub(crate) async fn mark_committed(store: &dyn MetaStore, chunks: &[ChunkId]) -> Result<()> {
    for c in chunks {
        if let Some(r) = lookup(store, *c).await? {
            if !r.committed {
                let txn = Txn::new().put(alloc_key(*c), value(r.at_ms, r.client, true));
                store.commit(txn).await?;
            }
        }
    }
    Ok(())
}

/// Every allocation record: (chunk, when). An undecodable record is
/// returned with time 0 (expired), so that it gets deleted.
pub(crate) async fn all(store: &dyn MetaStore) -> Result<Vec<(ChunkId, u64)>> {
    let end = prefix_end(&[ALLOC]);
    let mut start = vec![ALLOC];
    let mut out = Vec::new();
    loop {
        let page = store.scan(&start, &end, PAGE).await?;
        for kv in &page {
            match decode(&kv.key, &kv.value) {
                Some(r) => out.push(r),
                None if kv.key.len() == 17 => {
                    let id: [u8; 16] = kv.key[1..].try_into().expect("length checked");
                    out.push((ChunkId(u128::from_be_bytes(id)), 0));
                }
                None => {}
            }
        }
        match page.last() {
            Some(kv) if page.len() == PAGE => {
                start = kv.key.clone();
                start.push(0);
            }
            _ => return Ok(out),
        }
    }
}

/// Delete the records of `chunks` (absent ones are fine).
pub(crate) async fn forget(store: &dyn MetaStore, chunks: &[ChunkId]) -> Result<()> {
    for batch in chunks.chunks(TXN_OPS) {
        let txn = batch
            .iter()
            .fold(Txn::new(), |txn, c| txn.delete(alloc_key(*c)));
        store.commit(txn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_redb::RedbStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn record_read_list_forget() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> =
            Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
        let s = store.as_ref();
        let (a, b) = (ChunkId(7), ChunkId(u128::MAX));
        assert_eq!(allocated_at(s, a).await.unwrap(), None);
        record(s, a, 1000, 5).await.unwrap();
        record(s, b, 2000, 6).await.unwrap();
        assert_eq!(allocated_at(s, a).await.unwrap(), Some(1000));
        let r = lookup(s, a).await.unwrap().unwrap();
        assert_eq!((r.at_ms, r.client, r.committed), (1000, 5, false));
        mark_committed(s, &[a]).await.unwrap();
        let r = lookup(s, a).await.unwrap().unwrap();
        assert_eq!((r.at_ms, r.client, r.committed), (1000, 5, true));
        // An older record (the time alone) still reads.
        store
            .commit(Txn::new().put(alloc_key(ChunkId(3)), 77u64.to_be_bytes().to_vec()))
            .await
            .unwrap();
        let r = lookup(s, ChunkId(3)).await.unwrap().unwrap();
        assert_eq!((r.at_ms, r.client, r.committed), (77, 0, false));
        forget(s, &[ChunkId(3)]).await.unwrap();
        let mut got = all(s).await.unwrap();
        got.sort();
        assert_eq!(got, vec![(a, 1000), (b, 2000)]);
        forget(s, &[a, ChunkId(99)]).await.unwrap();
        assert_eq!(allocated_at(s, a).await.unwrap(), None);
        assert_eq!(all(s).await.unwrap(), vec![(b, 2000)]);
    }
}
