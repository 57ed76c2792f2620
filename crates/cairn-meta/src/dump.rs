//! `cairn meta export` / `cairn meta import`: every key of a [`MetaStore`]
//! as a stream, so a namespace moves between the embedded store and etcd
//! without touching the file bytes on the storage nodes.
//!
//! Format, version 1 (integers big endian):
//!
//! ```text
//! "CAIRN-META-DUMP\n"  u32 version
//! ( 'K' u32 key_len key u32 value_len value )*     in key order
//! 'E' u64 record_count u32 crc32c(every record byte)
//! ```
//!
//! Revisions are not carried: a store assigns its own, and the namespace
//! only ever compares a revision with one it read from the same store.
//! The trailer makes a truncated or damaged dump an error, not a smaller
//! namespace. Memory stays bounded: both sides stream in pages.

use crate::store::{MetaStore, Txn};
use cairn_types::{Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAGIC: &[u8; 16] = b"CAIRN-META-DUMP\n";
const VERSION: u32 = 1;
const RECORD: u8 = b'K';
const END: u8 = b'E';
/// Keys per export page.
const PAGE: usize = 1000;
/// Limits of one import transaction, below etcd's defaults (128 ops, 1.5 MiB).
const BATCH_OPS: usize = 100;
const BATCH_BYTES: usize = 1 << 20;
/// Larger than any key or value a store accepts: a length beyond it means a damaged dump.
const MAX_FIELD: u32 = 64 << 20;

/// Bounds of the whole key space (every namespace and node key is in it).
fn all_keys() -> (Vec<u8>, Vec<u8>) {
    (Vec::new(), vec![0xff; 16])
}

/// What an export or import moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    pub keys: u64,
    pub bytes: u64,
}

/// Write every key of `store` to `out`. Stop the meta servers first: the
/// dump is read page by page, not as one snapshot.
pub async fn export(
    store: &dyn MetaStore,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<DumpStats> {
    let io = |e: std::io::Error| Error::from(e).context("writing the dump");
    out.write_all(MAGIC).await.map_err(io)?;
    out.write_all(&VERSION.to_be_bytes()).await.map_err(io)?;
    let (mut from, end) = all_keys();
    let mut crc = 0u32;
    let mut stats = DumpStats::default();
    loop {
        let page = store.scan(&from, &end, PAGE).await?;
        for kv in &page {
            let mut rec = Vec::with_capacity(9 + kv.key.len() + kv.value.len());
            rec.push(RECORD);
            rec.extend_from_slice(&(kv.key.len() as u32).to_be_bytes());
            rec.extend_from_slice(&kv.key);
            rec.extend_from_slice(&(kv.value.len() as u32).to_be_bytes());
            rec.extend_from_slice(&kv.value);
            crc = crc32c::crc32c_append(crc, &rec);
            out.write_all(&rec).await.map_err(io)?;
            stats.keys += 1;
            stats.bytes += (kv.key.len() + kv.value.len()) as u64;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => {
                from = last.key.clone();
                from.push(0);
            }
            _ => break,
        }
    }
    out.write_all(&[END]).await.map_err(io)?;
    out.write_all(&stats.keys.to_be_bytes()).await.map_err(io)?;
    out.write_all(&crc.to_be_bytes()).await.map_err(io)?;
    out.flush().await.map_err(io)?;
    Ok(stats)
}

/// Load a dump into `store`. An empty store is required unless `force`,
/// which first deletes everything the store holds (under its prefix).
/// The import is committed in batches: if it fails half way (a damaged
/// dump, an unreachable store), run it again with `force`.
pub async fn import(
    store: &dyn MetaStore,
    input: &mut (impl AsyncRead + Unpin),
    force: bool,
) -> Result<DumpStats> {
    let (start, end) = all_keys();
    if !store.scan(&start, &end, 1).await?.is_empty() {
        if !force {
            return Err(Error::exists(
                "the target metadata store is not empty; import only into a new store, \
                 or pass --force to replace everything it holds",
            ));
        }
        store
            .commit(Txn::new().delete_range(start.clone(), end.clone()))
            .await?;
    }
    let bad = |what: &str| Error::corrupt(format!("not a complete Cairn metadata dump: {what}"));
    let io = read_err;
    let mut magic = [0u8; 16];
    input.read_exact(&mut magic).await.map_err(io)?;
    if &magic != MAGIC {
        return Err(bad("wrong header"));
    }
    let version = input.read_u32().await.map_err(io)?;
    if version != VERSION {
        return Err(Error::invalid(format!(
            "metadata dump format version {version} is not supported (this cairn reads {VERSION})"
        )));
    }
    let mut crc = 0u32;
    let mut stats = DumpStats::default();
    let mut batch = Txn::new();
    let mut batch_bytes = 0usize;
    let mut last_key: Option<Vec<u8>> = None;
    loop {
        let tag = input.read_u8().await.map_err(io)?;
        if tag == END {
            let count = input.read_u64().await.map_err(io)?;
            let want = input.read_u32().await.map_err(io)?;
            if count != stats.keys || want != crc {
                return Err(bad("record count or checksum does not match"));
            }
            break;
        }
        if tag != RECORD {
            return Err(bad("unknown record"));
        }
        let key = read_field(input).await?;
        let value = read_field(input).await?;
        if key.is_empty() || last_key.as_ref().is_some_and(|l| *l >= key) {
            return Err(bad("keys out of order"));
        }
        let mut rec = vec![RECORD];
        rec.extend_from_slice(&(key.len() as u32).to_be_bytes());
        rec.extend_from_slice(&key);
        rec.extend_from_slice(&(value.len() as u32).to_be_bytes());
        rec.extend_from_slice(&value);
        crc = crc32c::crc32c_append(crc, &rec);
        stats.keys += 1;
        stats.bytes += (key.len() + value.len()) as u64;
        if !batch.ops.is_empty()
            && (batch.ops.len() >= BATCH_OPS || batch_bytes + rec.len() > BATCH_BYTES)
        {
            store.commit(std::mem::take(&mut batch)).await?;
            batch_bytes = 0;
        }
        batch_bytes += rec.len();
        last_key = Some(key.clone());
        batch = batch.put(key, value);
    }
    if !batch.ops.is_empty() {
        store.commit(batch).await?;
    }
    Ok(stats)
}

async fn read_field(input: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>> {
    let len = input.read_u32().await.map_err(read_err)?;
    if len > MAX_FIELD {
        return Err(Error::corrupt(
            "not a complete Cairn metadata dump: oversized record",
        ));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf).await.map_err(read_err)?;
    Ok(buf)
}

fn read_err(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::corrupt("the metadata dump is truncated")
    } else {
        Error::from(e).context("reading the dump")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_redb::RedbStore;
    use cairn_types::ErrorKind;
    use std::sync::Arc;

    #[tokio::test]
    async fn round_trip_refuses_non_empty_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let a: Arc<dyn MetaStore> = Arc::new(RedbStore::open(&dir.path().join("a")).unwrap());
        let mut txn = Txn::new();
        for i in 0..2500u32 {
            txn = txn.put(
                format!("k{i:05}").into_bytes(),
                vec![i as u8; (i % 7) as usize],
            );
        }
        a.commit(txn).await.unwrap();
        let mut dump = Vec::new();
        let st = export(a.as_ref(), &mut dump).await.unwrap();
        assert_eq!(st.keys, 2500);

        let b: Arc<dyn MetaStore> = Arc::new(RedbStore::open(&dir.path().join("b")).unwrap());
        assert_eq!(
            import(b.as_ref(), &mut dump.as_slice(), false)
                .await
                .unwrap(),
            st
        );
        let all = |s: Arc<dyn MetaStore>| async move {
            s.scan(b"", &[0xff; 16], usize::MAX)
                .await
                .unwrap()
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(a.clone()).await, all(b.clone()).await);

        let err = import(b.as_ref(), &mut dump.as_slice(), false)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        let truncated = &dump[..dump.len() - 20];
        let err = import(b.as_ref(), &mut &truncated[..], true)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Corrupt, "{err}");
        let mut flipped = dump.clone();
        flipped[100] ^= 1;
        assert!(import(b.as_ref(), &mut flipped.as_slice(), true)
            .await
            .is_err());
        import(b.as_ref(), &mut dump.as_slice(), true)
            .await
            .unwrap();
        assert_eq!(all(a).await, all(b).await);
    }
}
