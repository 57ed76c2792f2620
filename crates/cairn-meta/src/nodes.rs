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
    /// Set by `cairn cluster drain`: move every chunk off this node.
    draining: bool,
}

#[derive(Clone, Debug)]
struct NodeEntry {
    addr: String,
    zone: String,
    stats: NodeStats,
    /// Last heartbeat, or when this meta started for a node it has not
    /// heard from yet: silence is counted from there, so a restart of meta
    /// does not declare every node dead.
    last_heartbeat_ms: u64,
    heard: bool,
    draining: bool,
    /// Draining and no longer holding any chunk a file needs.
    drained: bool,
}

pub struct NodeTracker {
    store: Arc<dyn MetaStore>,
    nodes: Mutex<BTreeMap<NodeId, NodeEntry>>,
    /// Replicas clients reported corrupt, until the node stops reporting them.
    corrupt: Mutex<BTreeSet<(ChunkId, NodeId)>>,
    pub dead_after: Duration,
    /// Silence after which a node gets no new chunks (but its copies still
    /// count): a few missed heartbeats.
    pub suspect_after: Duration,
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
                    last_heartbeat_ms: now_ms(),
                    heard: false,
                    draining: rec.draining,
                    drained: false,
                },
            );
        }
        Ok(NodeTracker {
            store,
            nodes: Mutex::new(nodes),
            corrupt: Mutex::new(BTreeSet::new()),
            dead_after,
            suspect_after: Duration::from_secs(5).min(dead_after),
        })
    }

    async fn persist(&self, id: NodeId, rec: &NodeRecord) -> Result<()> {
        let value = postcard::to_stdvec(rec).map_err(|e| Error::internal(e.to_string()))?;
        self.store
            .commit(Txn::new().put(node_key(id), value))
            .await?;
        Ok(())
    }

    pub async fn register(
        &self,
        id: NodeId,
        addr: String,
        zone: String,
        stats: NodeStats,
    ) -> Result<()> {
        let draining = self
            .nodes
            .lock()
            .unwrap()
            .get(&id)
            .is_some_and(|e| e.draining);
        let rec = NodeRecord {
            addr: addr.clone(),
            zone: zone.clone(),
            draining,
        };
        self.persist(id, &rec).await?;
        let entry = NodeEntry {
            addr,
            zone,
            stats: NodeStats::default(),
            last_heartbeat_ms: now_ms(),
            heard: true,
            draining,
            drained: false,
        };
        self.nodes.lock().unwrap().insert(id, entry);
        self.heartbeat(id, stats)
    }

    /// Start (or with `undo`, stop) moving every chunk off a node.
    pub async fn set_draining(&self, id: NodeId, draining: bool) -> Result<()> {
        let rec = {
            let nodes = self.nodes.lock().unwrap();
            let e = nodes
                .get(&id)
                .ok_or_else(|| Error::not_found(format!("no storage node {id}")))?;
            NodeRecord {
                addr: e.addr.clone(),
                zone: e.zone.clone(),
                draining,
            }
        };
        self.persist(id, &rec).await?;
        if let Some(e) = self.nodes.lock().unwrap().get_mut(&id) {
            e.draining = draining;
            e.drained = false;
        }
        Ok(())
    }

    /// The repair planner found that a draining node holds nothing needed.
    pub fn set_drained(&self, id: NodeId, drained: bool) {
        if let Some(e) = self.nodes.lock().unwrap().get_mut(&id) {
            e.drained = e.draining && drained;
        }
    }

    /// NotFound for a node this meta does not know: it must register again.
    pub fn heartbeat(&self, id: NodeId, stats: NodeStats) -> Result<()> {
        let mut nodes = self.nodes.lock().unwrap();
        let e = nodes
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("node {id} is not registered")))?;
        // The node's own list is authoritative for its copies: a chunk it no
        // longer reports (deleted, replaced) is clean again.
        {
            let mut corrupt = self.corrupt.lock().unwrap();
            corrupt.retain(|(_, n)| *n != id);
            corrupt.extend(stats.corrupt_chunks.iter().map(|c| (*c, id)));
        }
        e.stats = stats;
        e.last_heartbeat_ms = now_ms();
        e.heard = true;
        Ok(())
    }

    pub fn report_corrupt(&self, chunk: ChunkId, node: NodeId) {
        self.corrupt.lock().unwrap().insert((chunk, node));
    }

    /// The corrupt copy was deleted or replaced.
    pub fn clear_corrupt(&self, chunk: ChunkId, node: NodeId) {
        self.corrupt.lock().unwrap().remove(&(chunk, node));
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

    fn state_of(&self, e: &NodeEntry, now: u64) -> NodeState {
        let silent = now.saturating_sub(e.last_heartbeat_ms);
        if silent > self.dead_after.as_millis() as u64 {
            NodeState::Dead
        } else if !e.heard || silent > self.suspect_after.as_millis() as u64 {
            NodeState::Suspect
        } else if e.drained {
            NodeState::Drained
        } else if e.draining {
            NodeState::Draining
        } else if !e.stats.accepting_writes {
            NodeState::Full
        } else {
            NodeState::Live
        }
    }

    /// The node's state, or Dead for a node meta does not know.
    pub fn state(&self, id: NodeId) -> NodeState {
        let now = now_ms();
        let nodes = self.nodes.lock().unwrap();
        nodes
            .get(&id)
            .map_or(NodeState::Dead, |e| self.state_of(e, now))
    }

    /// Whether the node answers, so its copies can be read.
    pub fn is_live(&self, id: NodeId) -> bool {
        self.state(id).is_up()
    }

    /// Nodes that answer, with their addresses.
    pub fn up_nodes(&self) -> Vec<NodeAddr> {
        let now = now_ms();
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .filter(|(_, e)| self.state_of(e, now).is_up())
            .map(|(id, e)| NodeAddr {
                id: *id,
                addr: e.addr.clone(),
            })
            .collect()
    }

    pub fn draining_nodes(&self) -> Vec<NodeId> {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .filter(|(_, e)| e.draining)
            .map(|(id, _)| *id)
            .collect()
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
            .filter(|e| self.state_of(e, now).is_up())
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
                state: self.state_of(e, now),
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
        let states: Vec<(NodeId, &NodeEntry, NodeState)> = nodes
            .iter()
            .map(|(id, e)| (*id, e, self.state_of(e, now)))
            .collect();
        // Only nodes in good standing take new chunks: not suspect, dead,
        // draining, full or failing.
        let live = states
            .iter()
            .filter(|(_, _, s)| *s == NodeState::Live)
            .count();
        let mut candidates: Vec<(NodeId, String, u64)> = states
            .iter()
            .filter(|(id, e, s)| {
                *s == NodeState::Live && !exclude.contains(id) && e.stats.free > len
            })
            .map(|(id, e, _)| (*id, e.addr.clone(), e.stats.free))
            .collect();
        if candidates.len() < rep {
            let count =
                |want: &[NodeState]| states.iter().filter(|(_, _, s)| want.contains(s)).count();
            let full = count(&[NodeState::Full])
                + states
                    .iter()
                    .filter(|(_, e, s)| *s == NodeState::Live && e.stats.free <= len)
                    .count();
            let mut msg = format!(
                "cannot place {rep} copies: {live} of {} storage node(s) live",
                nodes.len()
            );
            let mut why = Vec::new();
            for (n, what) in [
                (count(&[NodeState::Dead, NodeState::Suspect]), "unreachable"),
                (full, "full"),
                (
                    count(&[NodeState::Draining, NodeState::Drained]),
                    "draining",
                ),
                (exclude.len(), "failed during this write"),
            ] {
                if n > 0 {
                    why.push(format!("{n} {what}"));
                }
            }
            if !why.is_empty() {
                msg.push_str(&format!(" ({})", why.join(", ")));
            }
            msg.push_str(&format!(
                "; {rep} needed for rep={rep}. Start more nodes with 'cairn storage' or write with a lower rep"
            ));
            return Err(if full > 0 && live + full >= rep {
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
            accepting_writes: true,
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
