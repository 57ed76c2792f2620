//! The node tracker: which storage nodes exist, where they are, how full
//! they are, and whether they are live. Registrations are persisted so a
//! restarted meta can serve reads before the first heartbeats arrive;
//! liveness is in memory only, rebuilt from heartbeats.
//!
//! Placement itself is [`crate::placement`]; the tracker feeds it the node
//! table (state, zone, host, join order, load) and keeps the load current
//! between heartbeats by counting what it allocates.

use crate::placement::{NodeInfo, PlaceRequest, Placer, PlacerConfig};
use crate::store::{MetaStore, Txn};
use cairn_proto::{NodeAddr, NodeState, NodeStats, NodeStatus};
use cairn_types::{now_ms, ChunkId, Cues, Error, NodeId, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NODE_PREFIX: &[u8] = b"N/";

/// Persisted node records, oldest first; [`NodeRecord`] is the current one.
mod v1 {
    #[derive(serde::Deserialize)]
    pub(super) struct NodeRecord {
        pub addr: String,
        pub zone: String,
        pub draining: bool,
    }
}

/// Before groups.
mod v2 {
    #[derive(serde::Deserialize)]
    pub(super) struct NodeRecord {
        pub addr: String,
        pub zone: String,
        pub draining: bool,
        pub host: String,
        pub join_seq: u64,
    }
}

#[derive(Serialize, Deserialize)]
struct NodeRecord {
    addr: String,
    zone: String,
    /// Set by `cairn cluster drain`: move every chunk off this node.
    draining: bool,
    host: String,
    /// Order of first registration: buddy sets and copysets are cut in this
    /// order, so it must survive restarts of meta.
    join_seq: u64,
    /// Groups the node is in (`--group`, `cairn cluster group add`).
    groups: BTreeSet<String>,
}

impl NodeRecord {
    /// The current record, or a v2 one (no groups), or a v1 one (join
    /// order and host unknown: the caller assigns a join sequence).
    fn decode(bytes: &[u8]) -> std::result::Result<(NodeRecord, bool), postcard::Error> {
        // An older record is a strict prefix of a newer one, so the newer
        // layout fails on it.
        if let Ok(r) = postcard::from_bytes::<NodeRecord>(bytes) {
            return Ok((r, false));
        }
        if let Ok(r) = postcard::from_bytes::<v2::NodeRecord>(bytes) {
            return Ok((
                NodeRecord {
                    addr: r.addr,
                    zone: r.zone,
                    draining: r.draining,
                    host: r.host,
                    join_seq: r.join_seq,
                    groups: BTreeSet::new(),
                },
                false,
            ));
        }
        let old: v1::NodeRecord = postcard::from_bytes(bytes)?;
        Ok((
            NodeRecord {
                addr: old.addr,
                zone: old.zone,
                draining: old.draining,
                host: String::new(),
                join_seq: 0,
                groups: BTreeSet::new(),
            },
            true,
        ))
    }
}

#[derive(Clone, Debug)]
struct NodeEntry {
    addr: String,
    zone: String,
    host: String,
    join_seq: u64,
    stats: NodeStats,
    /// Bytes placed here that `stats.used` does not show yet (counted at
    /// the chunk size, an upper bound): the sum of `allocs`.
    allocated: u64,
    /// Those placements, oldest first: (when, bytes not yet seen in
    /// `used`). A heartbeat takes what `used` grew by off the oldest, and
    /// drops those older than [`ALLOC_SETTLED`] (landed or failed by then).
    allocs: std::collections::VecDeque<(u64, u64)>,
    /// Last heartbeat, or when this meta started for a node it has not
    /// heard from yet: silence is counted from there, so a restart of meta
    /// does not declare every node dead.
    last_heartbeat_ms: u64,
    heard: bool,
    draining: bool,
    /// Draining and no longer holding any chunk a file needs.
    drained: bool,
    groups: BTreeSet<String>,
}

/// After this long, a placement's write has landed (and shows in the
/// node's `used`) or failed.
const ALLOC_SETTLED: Duration = Duration::from_secs(5);

pub struct NodeTracker {
    store: Arc<dyn MetaStore>,
    nodes: Mutex<BTreeMap<NodeId, NodeEntry>>,
    /// Replicas clients reported corrupt, until the node stops reporting them.
    corrupt: Mutex<BTreeSet<(ChunkId, NodeId)>>,
    /// Copies (or shards) a file names that their node does not hold: a
    /// shard write that had not landed when an `ec` write with `sync=`
    /// below K+M was acknowledged and then failed (its writer says so), or
    /// one the orphan sweep found absent from the node's listing. Kept
    /// until repaired or listed again (the node cannot report what it
    /// never had); repair treats them as corrupt copies.
    missing: Mutex<BTreeSet<(ChunkId, NodeId)>>,
    /// Join sequence for the next new node.
    next_seq: AtomicU64,
    placer: Mutex<(Placer, fastrand::Rng)>,
    pub dead_after: Duration,
    /// Silence after which a node gets no new chunks (but its copies still
    /// count): a few missed heartbeats.
    pub suspect_after: Duration,
}

fn encode(rec: &NodeRecord) -> Result<Vec<u8>> {
    postcard::to_stdvec(rec).map_err(|e| Error::internal(e.to_string()))
}

fn record(e: &NodeEntry, draining: bool) -> NodeRecord {
    NodeRecord {
        addr: e.addr.clone(),
        zone: e.zone.clone(),
        draining,
        host: e.host.clone(),
        join_seq: e.join_seq,
        groups: e.groups.clone(),
    }
}

fn node_key(id: NodeId) -> Vec<u8> {
    let mut k = NODE_PREFIX.to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

impl NodeTracker {
    pub async fn load(store: Arc<dyn MetaStore>, dead_after: Duration) -> Result<NodeTracker> {
        let mut nodes = BTreeMap::new();
        let mut migrate = Vec::new();
        let end = crate::store::prefix_end(NODE_PREFIX);
        for kv in store.scan(NODE_PREFIX, &end, usize::MAX).await? {
            let id = NodeId(u64::from_be_bytes(
                kv.key[NODE_PREFIX.len()..]
                    .try_into()
                    .map_err(|_| Error::corrupt("malformed node key in the metadata store"))?,
            ));
            let (rec, old) = NodeRecord::decode(&kv.value)
                .map_err(|e| Error::corrupt(format!("node record {id}: {e}")))?;
            if old {
                migrate.push(id);
            }
            nodes.insert(
                id,
                NodeEntry {
                    addr: rec.addr,
                    zone: rec.zone,
                    host: rec.host,
                    join_seq: rec.join_seq,
                    allocated: 0,
                    allocs: Default::default(),
                    stats: NodeStats::default(),
                    last_heartbeat_ms: now_ms(),
                    heard: false,
                    draining: rec.draining,
                    drained: false,
                    groups: rec.groups,
                },
            );
        }
        // v1 records join after every numbered node, in id order; written
        // back so the order is fixed from now on.
        let mut next = nodes.values().map(|e| e.join_seq + 1).max().unwrap_or(1);
        let mut txn = Txn::new();
        for id in &migrate {
            let e = nodes.get_mut(id).expect("just loaded");
            e.join_seq = next;
            next += 1;
            txn = txn.put(node_key(*id), encode(&record(e, e.draining))?);
        }
        if !migrate.is_empty() {
            store.commit(txn).await?;
        }
        Ok(NodeTracker {
            store,
            nodes: Mutex::new(nodes),
            corrupt: Mutex::new(BTreeSet::new()),
            missing: Mutex::new(BTreeSet::new()),
            next_seq: AtomicU64::new(next),
            placer: Mutex::new((
                Placer::new(Vec::new(), PlacerConfig::default()),
                fastrand::Rng::new(),
            )),
            dead_after,
            suspect_after: Duration::from_secs(5).min(dead_after),
        })
    }

    async fn persist(&self, id: NodeId, rec: &NodeRecord) -> Result<()> {
        self.store
            .commit(Txn::new().put(node_key(id), encode(rec)?))
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
        let known = self
            .nodes
            .lock()
            .unwrap()
            .get(&id)
            .map(|e| (e.draining, e.join_seq, e.groups.clone()));
        let (draining, join_seq, mut groups) = match known {
            Some(k) => k,
            None => (
                false,
                self.next_seq.fetch_add(1, Ordering::Relaxed),
                BTreeSet::new(),
            ),
        };
        // The groups a node starts in join those it was given at run time.
        for g in &stats.groups {
            cairn_types::check_group_name(g)?;
            groups.insert(g.clone());
        }
        let rec = NodeRecord {
            addr: addr.clone(),
            zone: zone.clone(),
            draining,
            host: stats.host.clone(),
            join_seq,
            groups: groups.clone(),
        };
        self.persist(id, &rec).await?;
        let entry = NodeEntry {
            addr,
            zone,
            host: rec.host,
            join_seq,
            allocated: 0,
            allocs: Default::default(),
            stats: NodeStats::default(),
            last_heartbeat_ms: now_ms(),
            heard: true,
            draining,
            drained: false,
            groups,
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
            record(e, draining)
        };
        self.persist(id, &rec).await?;
        if let Some(e) = self.nodes.lock().unwrap().get_mut(&id) {
            e.draining = draining;
            e.drained = false;
        }
        Ok(())
    }

    /// Put a node in a group, or take it out; persisted.
    pub async fn set_group(&self, id: NodeId, group: &str, add: bool) -> Result<()> {
        cairn_types::check_group_name(group)?;
        let rec = {
            let nodes = self.nodes.lock().unwrap();
            let e = nodes.get(&id).ok_or_else(|| {
                Error::not_found(format!(
                    "no storage node {id}; `cairn cluster status` lists the nodes"
                ))
            })?;
            let mut rec = record(e, e.draining);
            if add {
                rec.groups.insert(group.to_string());
            } else if !rec.groups.remove(group) {
                return Err(Error::not_found(format!(
                    "node {id} is not in group {group:?}"
                )));
            }
            rec
        };
        self.persist(id, &rec).await?;
        if let Some(e) = self.nodes.lock().unwrap().get_mut(&id) {
            e.groups = rec.groups;
        }
        Ok(())
    }

    /// Every group with its members and the members live now.
    pub fn groups(&self) -> Vec<cairn_proto::GroupInfo> {
        let now = now_ms();
        let nodes = self.nodes.lock().unwrap();
        let mut out: BTreeMap<String, cairn_proto::GroupInfo> = BTreeMap::new();
        for (id, e) in nodes.iter() {
            let up = self.state_of(e, now).is_up();
            for g in &e.groups {
                let gi = out
                    .entry(g.clone())
                    .or_insert_with(|| cairn_proto::GroupInfo {
                        name: g.clone(),
                        nodes: Vec::new(),
                        live: Vec::new(),
                    });
                gi.nodes.push(*id);
                if up {
                    gi.live.push(*id);
                }
            }
        }
        out.into_values().collect()
    }

    /// Whether any node is in any group.
    pub fn has_groups(&self) -> bool {
        self.nodes
            .lock()
            .unwrap()
            .values()
            .any(|e| !e.groups.is_empty())
    }

    /// Members of `group` with their zones and whether they answer.
    pub fn group_members(&self, group: &str) -> Vec<(NodeAddr, String, bool)> {
        let now = now_ms();
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .filter(|(_, e)| e.groups.contains(group))
            .map(|(id, e)| {
                (
                    NodeAddr {
                        id: *id,
                        addr: e.addr.clone(),
                    },
                    e.zone.clone(),
                    self.state_of(e, now).is_up(),
                )
            })
            .collect()
    }

    /// A node's zone ("" for one meta does not know).
    pub fn zone(&self, id: NodeId) -> String {
        self.nodes
            .lock()
            .unwrap()
            .get(&id)
            .map(|e| e.zone.clone())
            .unwrap_or_default()
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
        if !stats.host.is_empty() {
            e.host = stats.host.clone();
        }
        // A heartbeat sampled before a placed chunk landed does not show
        // it: keep counting what `used` has not taken in yet.
        let mut grew = stats.used.saturating_sub(e.stats.used);
        while grew > 0 {
            let Some(front) = e.allocs.front_mut() else {
                break;
            };
            let seen = front.1.min(grew);
            front.1 -= seen;
            grew -= seen;
            if front.1 == 0 {
                e.allocs.pop_front();
            }
        }
        let horizon = now_ms().saturating_sub(ALLOC_SETTLED.as_millis() as u64);
        while e.allocs.front().is_some_and(|a| a.0 < horizon) {
            e.allocs.pop_front();
        }
        e.allocated = e.allocs.iter().map(|a| a.1).sum();
        e.stats = stats;
        e.last_heartbeat_ms = now_ms();
        e.heard = true;
        Ok(())
    }

    pub fn report_corrupt(&self, chunk: ChunkId, node: NodeId) {
        self.corrupt.lock().unwrap().insert((chunk, node));
    }

    /// `node` does not hold `chunk`, which a file names there.
    pub fn report_missing(&self, chunk: ChunkId, node: NodeId) {
        self.missing.lock().unwrap().insert((chunk, node));
    }

    /// What the orphan sweep learnt from `node`'s listing: `absent` are
    /// chunks files name there that it does not hold; of the marks already
    /// there, only those `still` says are still wanted stay (not held,
    /// and named there or still being written).
    pub fn sweep_missing(
        &self,
        node: NodeId,
        absent: &[ChunkId],
        still: impl Fn(&ChunkId) -> bool,
    ) {
        let mut missing = self.missing.lock().unwrap();
        missing.retain(|(c, n)| *n != node || still(c));
        missing.extend(absent.iter().map(|c| (*c, node)));
    }

    /// The corrupt or missing copy was deleted or replaced.
    pub fn clear_corrupt(&self, chunk: ChunkId, node: NodeId) {
        self.corrupt.lock().unwrap().remove(&(chunk, node));
        self.missing.lock().unwrap().remove(&(chunk, node));
    }

    pub fn forget_chunk(&self, chunk: ChunkId) {
        self.corrupt.lock().unwrap().retain(|(c, _)| *c != chunk);
        self.missing.lock().unwrap().retain(|(c, _)| *c != chunk);
    }

    /// Whether `node`'s copy of `chunk` is bad: reported corrupt, or
    /// missing (see [`NodeTracker::report_missing`]).
    pub fn is_corrupt(&self, chunk: ChunkId, node: NodeId) -> bool {
        self.corrupt.lock().unwrap().contains(&(chunk, node))
            || self.missing.lock().unwrap().contains(&(chunk, node))
    }

    /// Whether any shard or copy of these extents is known missing.
    pub fn any_missing(&self, extents: &[cairn_types::Extent]) -> bool {
        let missing = self.missing.lock().unwrap();
        !missing.is_empty()
            && extents
                .iter()
                .any(|e| e.stored().iter().any(|cn| missing.contains(cn)))
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
                host: e.host.clone(),
                state: self.state_of(e, now),
                last_heartbeat_ms: e.last_heartbeat_ms,
                stats: e.stats.clone(),
                groups: e.groups.iter().cloned().collect(),
            })
            .collect()
    }

    /// `rep` distinct live nodes with room for `len` bytes, none of
    /// `exclude`, by the default scheme (random, weighted towards free space
    /// so nodes fill evenly).
    pub fn place(&self, rep: usize, len: u64, exclude: &[NodeId]) -> Result<Vec<NodeAddr>> {
        let cues = Cues::default();
        self.place_with(&PlaceRequest {
            cues: &cues,
            default_rep: rep.min(u8::MAX as usize) as u8,
            want: rep,
            have: &[],
            exclude,
            len,
            writer_host: None,
            together_key: None,
        })
    }

    /// Nodes for `req.want` copies by the request's cues (see
    /// [`crate::placement`]); only live nodes take chunks. The bytes placed
    /// count towards each node's load until its next heartbeat reports them.
    pub fn place_with(&self, req: &PlaceRequest) -> Result<Vec<NodeAddr>> {
        let now = now_ms();
        let mut nodes = self.nodes.lock().unwrap();
        let infos: Vec<NodeInfo> = nodes
            .iter()
            .map(|(id, e)| {
                let state = self.state_of(e, now);
                // A node that refuses writes (a full or failing disk) is one
                // without room: with too few others, the write is out of
                // space (ENOSPC), not out of reach.
                let full = state == NodeState::Full;
                NodeInfo {
                    id: *id,
                    zone: e.zone.clone(),
                    host: e.host.clone(),
                    join_seq: e.join_seq,
                    used: e.stats.used.saturating_add(e.allocated),
                    free: if full {
                        0
                    } else {
                        e.stats.free.saturating_sub(e.allocated)
                    },
                    // Only nodes in good standing take new chunks: not
                    // suspect, dead, draining, full or failing.
                    accepting: state == NodeState::Live || full,
                }
            })
            .collect();
        let placed = {
            let mut guard = self.placer.lock().unwrap();
            let (placer, rng) = &mut *guard;
            placer.update(infos);
            placer.place(req, rng)
        };
        let ids = placed.map_err(|e| {
            let count = |want: &[NodeState]| {
                nodes
                    .values()
                    .filter(|e| want.contains(&self.state_of(e, now)))
                    .count()
            };
            let mut state = format!(
                "{} of {} storage node(s) live",
                count(&[NodeState::Live]),
                nodes.len()
            );
            for (n, what) in [
                (count(&[NodeState::Dead, NodeState::Suspect]), "unreachable"),
                (count(&[NodeState::Full]), "full"),
                (
                    count(&[NodeState::Draining, NodeState::Drained]),
                    "draining",
                ),
            ] {
                if n > 0 {
                    state.push_str(&format!(", {n} {what}"));
                }
            }
            Error::new(e.kind, format!("{} [cluster: {state}]", e.message))
        })?;
        Ok(ids
            .into_iter()
            .map(|id| {
                let e = nodes.get_mut(&id).expect("placer only knows tracked nodes");
                e.allocated = e.allocated.saturating_add(req.len);
                e.allocs.push_back((now_ms(), req.len));
                NodeAddr {
                    id,
                    addr: e.addr.clone(),
                }
            })
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

    /// Bytes placed on a node count against its room until its heartbeat
    /// shows them in `used`, also across a heartbeat sampled before they
    /// landed.
    #[tokio::test]
    async fn placements_count_until_a_heartbeat_shows_them() {
        let dir = tempfile::tempdir().unwrap();
        let t = tracker(Arc::new(
            RedbStore::open(&dir.path().join("m.redb")).unwrap(),
        ))
        .await;
        let mut st = NodeStats {
            free: 1000,
            total: 1000,
            accepting_writes: true,
            ..Default::default()
        };
        t.register(NodeId(1), "127.0.0.1:1".into(), "z".into(), st.clone())
            .await
            .unwrap();
        t.place(1, 400, &[]).unwrap();
        t.place(1, 400, &[]).unwrap();
        assert!(t.place(1, 400, &[]).is_err(), "800 of 1000 bytes placed");
        // A heartbeat from before the writes landed changes nothing.
        t.heartbeat(NodeId(1), st.clone()).unwrap();
        assert!(t.place(1, 400, &[]).is_err(), "still 800 placed");
        // One write landed: 400 placed and not yet seen, 400 used.
        st.used = 400;
        st.free = 600;
        t.heartbeat(NodeId(1), st.clone()).unwrap();
        assert!(t.place(1, 400, &[]).is_err(), "600 free, 400 of it placed");
        t.place(1, 100, &[]).unwrap();
    }

    fn stats(host: &str) -> NodeStats {
        NodeStats {
            free: 1 << 30,
            total: 1 << 31,
            accepting_writes: true,
            host: host.into(),
            ..Default::default()
        }
    }

    async fn tracker(store: Arc<dyn MetaStore>) -> NodeTracker {
        NodeTracker::load(store, Duration::from_secs(10))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn host_and_join_order_survive_restarts_and_v1_records_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> =
            Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
        // A node registered by a meta from before join sequences.
        let old = postcard::to_stdvec(&("127.0.0.1:9", "z", false)).unwrap();
        store
            .commit(Txn::new().put(node_key(NodeId(50)), old))
            .await
            .unwrap();
        let t = tracker(store.clone()).await;
        for (id, host) in [(7, "b"), (3, "a")] {
            t.register(
                NodeId(id),
                format!("127.0.0.1:{id}"),
                "z".into(),
                stats(host),
            )
            .await
            .unwrap();
        }
        let seqs = |t: &NodeTracker| -> Vec<(u64, u64, String)> {
            let nodes = t.nodes.lock().unwrap();
            let mut v: Vec<_> = nodes
                .iter()
                .map(|(id, e)| (e.join_seq, id.0, e.host.clone()))
                .collect();
            v.sort();
            v
        };
        let before = seqs(&t);
        assert_eq!(
            before.iter().map(|s| s.1).collect::<Vec<_>>(),
            [50, 7, 3],
            "{before:?}"
        );
        assert_eq!(before[1].2, "b");
        let status = t.status();
        assert_eq!(status.iter().find(|s| s.id == NodeId(3)).unwrap().host, "a");
        // Registering again keeps the place in the order.
        t.register(NodeId(7), "127.0.0.1:77".into(), "z".into(), stats("b"))
            .await
            .unwrap();
        assert_eq!(seqs(&t), before);
        let t2 = tracker(store.clone()).await;
        assert_eq!(seqs(&t2), before);
        t2.register(NodeId(1), "127.0.0.1:1".into(), "z".into(), stats("c"))
            .await
            .unwrap();
        assert_eq!(seqs(&t2).last().unwrap().1, 1);
    }

    #[tokio::test]
    async fn place_with_follows_cues_and_counts_allocations() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> =
            Arc::new(RedbStore::open(&dir.path().join("m.redb")).unwrap());
        let t = tracker(store).await;
        for i in 1..=4 {
            t.register(
                NodeId(i),
                format!("127.0.0.1:{i}"),
                "z".into(),
                stats(&format!("host-{i}")),
            )
            .await
            .unwrap();
        }
        let local = Cues::parse("place=local,rep=2").unwrap();
        for _ in 0..20 {
            let got = t
                .place_with(&PlaceRequest {
                    cues: &local,
                    default_rep: 3,
                    want: 2,
                    have: &[],
                    exclude: &[],
                    len: 100,
                    writer_host: Some("host-3"),
                    together_key: None,
                })
                .unwrap();
            assert_eq!(got[0].id, NodeId(3));
            assert_ne!(got[1].id, NodeId(3));
        }
        // Until the next heartbeat, allocations count as load: min_copy
        // goes round the nodes instead of hitting the emptiest one.
        for i in 1..=4 {
            t.heartbeat(NodeId(i), stats("h")).unwrap();
        }
        let min = Cues::parse("place=min_copy,rep=1").unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            let got = t
                .place_with(&PlaceRequest {
                    cues: &min,
                    default_rep: 3,
                    want: 1,
                    have: &[],
                    exclude: &[],
                    len: 1 << 20,
                    writer_host: None,
                    together_key: None,
                })
                .unwrap();
            seen.insert(got[0].id);
        }
        assert_eq!(seen.len(), 4);
        let site = Cues::parse("site=elsewhere").unwrap();
        let e = t
            .place_with(&PlaceRequest {
                cues: &site,
                default_rep: 1,
                want: 1,
                have: &[],
                exclude: &[],
                len: 1,
                writer_host: None,
                together_key: None,
            })
            .unwrap_err();
        assert!(
            e.message.contains("[cluster: 4 of 4 storage node(s) live]"),
            "{e}"
        );
    }
}
