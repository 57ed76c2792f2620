//! The node tracker: which storage nodes exist, where they are, how full
//! they are, and whether they are live. Registrations are persisted so a
//! restarted meta can serve reads before the first heartbeats arrive;
//! liveness is in memory only, rebuilt from heartbeats.

use crate::store::{MetaStore, Txn};
use cairn_proto::{NodeAddr, NodeState, NodeStats, NodeStatus};
use cairn_types::{now_ms, ChunkId, Error, NodeId, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NODE_PREFIX: &[u8] = b"N/";

#[derive(Serialize, Deserialize)]
struct NodeRecord {
    addr: String,
    zone: String,
}

#[derive(Clone, Debug)]
struct NodeEntry {
    addr: String,
    zone: String,
    stats: NodeStats,
    /// 0 until the first heartbeat since this meta started.
    last_heartbeat_ms: u64,
}

pub struct NodeTracker {
    store: Arc<dyn MetaStore>,
    nodes: Mutex<BTreeMap<NodeId, NodeEntry>>,
    /// Replicas clients reported corrupt, until the node stops reporting them.
    corrupt: Mutex<BTreeSet<(ChunkId, NodeId)>>,
    pub dead_after: Duration,
}

fn node_key(id: NodeId) -> Vec<u8> {
    let mut k = NODE_PREFIX.to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

impl NodeTracker {
    pub async fn load(store: Arc<dyn MetaStore>, dead_after: Duration) -> Result<NodeTracker> {
        let mut nodes = BTreeMap::new();
        let end = crate::store::prefix_end(NODE_PREFIX);
        for kv in store.scan(NODE_PREFIX, &end, usize::MAX).await? {
            let id = NodeId(u64::from_be_bytes(
                kv.key[NODE_PREFIX.len()..]
                    .try_into()
                    .map_err(|_| Error::corrupt("malformed node key in the metadata store"))?,
            ));
            let rec: NodeRecord = postcard::from_bytes(&kv.value)
                .map_err(|e| Error::corrupt(format!("node record {id}: {e}")))?;
            nodes.insert(
                id,
                NodeEntry {
                    addr: rec.addr,
                    zone: rec.zone,
                    stats: NodeStats::default(),
                    last_heartbeat_ms: 0,
                },
            );
        }
        Ok(NodeTracker {
            store,
            nodes: Mutex::new(nodes),
            corrupt: Mutex::new(BTreeSet::new()),
            dead_after,
        })
    }

    pub async fn register(
        &self,
        id: NodeId,
        addr: String,
        zone: String,
        stats: NodeStats,
    ) -> Result<()> {
        let rec = NodeRecord {
            addr: addr.clone(),
            zone: zone.clone(),
        };
        let value = postcard::to_stdvec(&rec).map_err(|e| Error::internal(e.to_string()))?;
        self.store
            .commit(Txn::new().put(node_key(id), value))
            .await?;
        self.nodes.lock().unwrap().insert(
            id,
            NodeEntry {
                addr,
                zone,
                stats: NodeStats::default(),
                last_heartbeat_ms: 0,
            },
        );
        self.heartbeat(id, stats)
    }

    /// NotFound for a node this meta does not know: it must register again.
    pub fn heartbeat(&self, id: NodeId, stats: NodeStats) -> Result<()> {
        let mut nodes = self.nodes.lock().unwrap();
        let e = nodes
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("node {id} is not registered")))?;
        // A replica the node no longer reports corrupt (deleted, rewritten) is clean again.
        let reported: BTreeSet<ChunkId> = stats.corrupt_chunks.iter().copied().collect();
        {
            let mut corrupt = self.corrupt.lock().unwrap();
            for c in &reported {
                corrupt.insert((*c, id));
            }
        }
        e.stats = stats;
        e.last_heartbeat_ms = now_ms();
        Ok(())
    }

    pub fn report_corrupt(&self, chunk: ChunkId, node: NodeId) {
        self.corrupt.lock().unwrap().insert((chunk, node));
    }

    pub fn forget_chunk(&self, chunk: ChunkId) {
        self.corrupt.lock().unwrap().retain(|(c, _)| *c != chunk);
    }

    pub fn is_corrupt(&self, chunk: ChunkId, node: NodeId) -> bool {
        self.corrupt.lock().unwrap().contains(&(chunk, node))
    }

    pub fn corrupt_replicas(&self) -> Vec<(ChunkId, NodeId)> {
        self.corrupt.lock().unwrap().iter().copied().collect()
    }

    fn live(&self, e: &NodeEntry, now: u64) -> bool {
        e.last_heartbeat_ms > 0
            && now.saturating_sub(e.last_heartbeat_ms) <= self.dead_after.as_millis() as u64
    }

    pub fn is_live(&self, id: NodeId) -> bool {
        let now = now_ms();
        self.nodes
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|e| self.live(e, now))
    }

    pub fn addr(&self, id: NodeId) -> Option<NodeAddr> {
        self.nodes.lock().unwrap().get(&id).map(|e| NodeAddr {
            id,
            addr: e.addr.clone(),
        })
    }

    pub fn known(&self) -> usize {
        self.nodes.lock().unwrap().len()
    }

    pub fn live_count(&self) -> usize {
        let now = now_ms();
        self.nodes
            .lock()
            .unwrap()
            .values()
            .filter(|e| self.live(e, now))
            .count()
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        let now = now_ms();
        self.nodes
            .lock()
            .unwrap()
            .iter()
            .map(|(id, e)| NodeStatus {
                id: *id,
                addr: e.addr.clone(),
                zone: e.zone.clone(),
                state: if self.live(e, now) {
                    NodeState::Live
                } else {
                    NodeState::Dead
                },
                last_heartbeat_ms: e.last_heartbeat_ms,
                stats: e.stats.clone(),
            })
            .collect()
    }

    /// `rep` distinct live nodes with room for `len` bytes, none of
    /// `exclude`, chosen at random weighted towards free space so nodes fill
    /// evenly.
    pub fn place(&self, rep: usize, len: u64, exclude: &[NodeId]) -> Result<Vec<NodeAddr>> {
        let now = now_ms();
        let nodes = self.nodes.lock().unwrap();
        let live: Vec<(&NodeId, &NodeEntry)> =
            nodes.iter().filter(|(_, e)| self.live(e, now)).collect();
        let mut candidates: Vec<(NodeId, String, u64)> = live
            .iter()
            .filter(|(id, e)| !exclude.contains(id) && e.stats.free > len)
            .map(|(id, e)| (**id, e.addr.clone(), e.stats.free))
            .collect();
        if candidates.len() < rep {
            let full = live.iter().filter(|(_, e)| e.stats.free <= len).count();
            let mut msg = format!(
                "cannot place {rep} copies: {} of {} storage node(s) live",
                live.len(),
                nodes.len()
            );
            if full > 0 {
                msg.push_str(&format!(", {full} of them full"));
            }
            if !exclude.is_empty() {
                msg.push_str(&format!(", {} failed during this write", exclude.len()));
            }
            msg.push_str(&format!(
                "; {rep} needed for rep={rep}. Start more nodes with 'cairn storage' or write with a lower rep"
            ));
            return Err(if full > 0 && live.len() >= rep {
                Error::no_space(msg)
            } else {
                Error::unavailable(msg)
            });
        }
        // Weighted sampling without replacement (Efraimidis-Spirakis keys).
        let mut keyed: Vec<(f64, NodeId, String)> = candidates
            .drain(..)
            .map(|(id, addr, free)| {
                let w = (free.max(1) as f64).sqrt();
                (
                    fastrand::f64().max(f64::MIN_POSITIVE).powf(1.0 / w),
                    id,
                    addr,
                )
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(keyed
            .into_iter()
            .take(rep)
            .map(|(_, id, addr)| NodeAddr { id, addr })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store_redb::RedbStore;

    #[tokio::test]
    async fn placement_is_distinct_and_live() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> =
            Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
        let t = NodeTracker::load(store.clone(), Duration::from_secs(10))
            .await
            .unwrap();
        let stats = NodeStats {
            free: 1 << 30,
            total: 1 << 31,
            ..Default::default()
        };
        for i in 1..=4 {
            t.register(
                NodeId(i),
                format!("127.0.0.1:{i}"),
                "z".into(),
                stats.clone(),
            )
            .await
            .unwrap();
        }
        for _ in 0..200 {
            let p = t.place(3, 100, &[NodeId(2)]).unwrap();
            let ids: BTreeSet<NodeId> = p.iter().map(|n| n.id).collect();
            assert_eq!(ids.len(), 3);
            assert!(!ids.contains(&NodeId(2)));
        }
        let e = t.place(4, 100, &[NodeId(2)]).unwrap_err();
        assert!(e.message.contains("4 of 4 storage node(s) live"), "{e}");
        assert!(t.place(1, 2 << 30, &[]).is_err());
        // Registrations survive a restart of meta, liveness does not.
        let t2 = NodeTracker::load(store, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(t2.known(), 4);
        assert_eq!(t2.live_count(), 0);
        assert!(t2.heartbeat(NodeId(9), stats).is_err());
    }
}
