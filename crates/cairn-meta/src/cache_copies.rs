//! Cache copies: chunk copies on nodes beyond the durable replicas, made by
//! prefetch jobs (`cairn prefetch`, the `hot=` cue) or by a node reading
//! through for its host's readers (`hotspot`). They never count towards a
//! file's `rep`, the repair planner neither makes nor replaces them, nodes
//! evict them under their cache budget (and say so), and garbage collection
//! deletes them with their chunk.
//!
//! Kept in the store under `C/<chunk><node>` (value: the chunk's length),
//! so a restarted or new leader knows them, and in memory for reads. On a
//! shared store a follower's memory may lag; a copy listed that is gone
//! costs a reader one failover, never wrong bytes (every read is checked).

use crate::store::{prefix_end, MetaStore, Txn};
use cairn_types::{ChunkId, Error, NodeId, Result};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

const PREFIX: &[u8] = b"C/";

fn key(chunk: ChunkId, node: NodeId) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&chunk.0.to_be_bytes());
    k.extend_from_slice(&node.0.to_be_bytes());
    k
}

fn parse_key(k: &[u8]) -> Option<(ChunkId, NodeId)> {
    let rest = k.strip_prefix(PREFIX)?;
    if rest.len() != 24 {
        return None;
    }
    let chunk = u128::from_be_bytes(rest[..16].try_into().ok()?);
    let node = u64::from_be_bytes(rest[16..].try_into().ok()?);
    Some((ChunkId(chunk), NodeId(node)))
}

pub struct CacheCopies {
    store: Arc<dyn MetaStore>,
    holders: Mutex<HashMap<ChunkId, BTreeSet<NodeId>>>,
}

impl CacheCopies {
    pub async fn load(store: Arc<dyn MetaStore>) -> Result<CacheCopies> {
        let c = CacheCopies {
            store,
            holders: Default::default(),
        };
        c.reload().await?;
        Ok(c)
    }

    /// Read every record again (a follower catching up with the leader).
    pub async fn reload(&self) -> Result<()> {
        let mut map: HashMap<ChunkId, BTreeSet<NodeId>> = HashMap::new();
        let end = prefix_end(PREFIX);
        for kv in self.store.scan(PREFIX, &end, usize::MAX).await? {
            let (c, n) = parse_key(&kv.key)
                .ok_or_else(|| Error::corrupt("malformed cache-copy key in the metadata store"))?;
            map.entry(c).or_default().insert(n);
        }
        *self.holders.lock().unwrap() = map;
        Ok(())
    }

    pub async fn add(&self, chunk: ChunkId, node: NodeId, len: u64) -> Result<()> {
        self.add_many(&[(chunk, node, len)]).await
    }

    pub async fn add_many(&self, copies: &[(ChunkId, NodeId, u64)]) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        // etcd takes a bounded number of operations per transaction.
        for batch in copies.chunks(64) {
            let mut txn = Txn::new();
            for (c, n, len) in batch {
                txn = txn.put(key(*c, *n), len.to_be_bytes().to_vec());
            }
            self.store.commit(txn).await?;
        }
        let mut h = self.holders.lock().unwrap();
        for (c, n, _) in copies {
            h.entry(*c).or_default().insert(*n);
        }
        Ok(())
    }

    pub async fn remove_many(&self, copies: &[(ChunkId, NodeId)]) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        for batch in copies.chunks(64) {
            let mut txn = Txn::new();
            for (c, n) in batch {
                txn = txn.delete(key(*c, *n));
            }
            self.store.commit(txn).await?;
        }
        let mut h = self.holders.lock().unwrap();
        for (c, n) in copies {
            if let Some(set) = h.get_mut(c) {
                set.remove(n);
                if set.is_empty() {
                    h.remove(c);
                }
            }
        }
        Ok(())
    }

    /// Nodes holding a cache copy of `chunk`.
    pub fn holders(&self, chunk: ChunkId) -> Vec<NodeId> {
        self.holders
            .lock()
            .unwrap()
            .get(&chunk)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn holds(&self, chunk: ChunkId, node: NodeId) -> bool {
        self.holders
            .lock()
            .unwrap()
            .get(&chunk)
            .is_some_and(|s| s.contains(&node))
    }

    /// Forget every cache copy of `chunk` (collected); returns the nodes
    /// that held one, to delete it from.
    pub async fn forget_chunk(&self, chunk: ChunkId) -> Result<Vec<NodeId>> {
        let nodes = self.holders(chunk);
        let pairs: Vec<(ChunkId, NodeId)> = nodes.iter().map(|n| (chunk, *n)).collect();
        self.remove_many(&pairs).await?;
        Ok(nodes)
    }

    pub fn count(&self) -> u64 {
        self.holders
            .lock()
            .unwrap()
            .values()
            .map(|s| s.len() as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_redb::RedbStore;

    #[tokio::test]
    async fn copies_survive_a_reload_and_go_with_their_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> =
            Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
        let c = CacheCopies::load(store.clone()).await.unwrap();
        let (a, b) = (ChunkId(7), ChunkId(u128::MAX));
        c.add_many(&[(a, NodeId(1), 10), (a, NodeId(2), 10), (b, NodeId(1), 5)])
            .await
            .unwrap();
        let again = CacheCopies::load(store.clone()).await.unwrap();
        assert_eq!(again.holders(a), vec![NodeId(1), NodeId(2)]);
        assert!(again.holds(b, NodeId(1)) && !again.holds(b, NodeId(2)));
        assert_eq!(again.count(), 3);
        assert_eq!(
            again.forget_chunk(a).await.unwrap(),
            vec![NodeId(1), NodeId(2)]
        );
        again.remove_many(&[(b, NodeId(1))]).await.unwrap();
        let last = CacheCopies::load(store).await.unwrap();
        assert_eq!(last.count(), 0);
    }
}
