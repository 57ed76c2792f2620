//! The repair planner: restores redundancy after node loss, bit rot and
//! drains, and sweeps chunks no file references from the nodes.
//!
//! Each pass walks every committed file. A copy counts if its node is in
//! good standing (live or full) or only briefly silent (suspect: a restart
//! must not start a repair storm) and the node has not reported it
//! corrupt. A chunk with fewer counting copies than its file asked for is
//! copied node-to-node (meta never touches the bytes) from a readable copy
//! to a node chosen by placement, throttled in bandwidth and parallelism;
//! then the file's replica list is updated, conditioned on the file still
//! holding the chunk. Copies replaced on reachable nodes (corrupt,
//! draining) are deleted; copies on dead nodes are swept if those nodes
//! come back.
//!
//! The orphan sweep deletes, from every reachable node, chunks that no file
//! references, that are not waiting in garbage, and that were not handed out
//! within `orphan_after` (a write in progress): leftovers of crashed
//! writers, of a meta crash between a write and its commit, and surplus
//! copies of a node that rejoined after its chunks were re-created
//! elsewhere. The namespace is walked twice around the nodes' listings, and
//! a chunk is only deleted if neither walk saw it, so a rename racing the
//! walk cannot make a live chunk look orphaned.

use crate::server::Meta;
use cairn_proto::{Capability, NodeState, StorageRequest};
use cairn_types::{now_ms, ChunkId, Error, Extent, NodeId, Result};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

#[derive(Clone, Debug)]
pub struct RepairConfig {
    /// Time between planner passes.
    pub interval: Duration,
    /// Bytes per second repair may copy in all (0: unlimited).
    pub bandwidth: u64,
    /// Chunk copies in flight at once.
    pub parallelism: usize,
    /// How long a handed-out chunk may stay uncommitted before the sweep
    /// may collect it; also the least time after a meta start before the
    /// first sweep.
    pub orphan_after: Duration,
    /// Silence after which a node takes no new chunks.
    pub suspect_after: Duration,
}

impl Default for RepairConfig {
    fn default() -> RepairConfig {
        RepairConfig {
            interval: Duration::from_secs(30),
            bandwidth: 64 << 20,
            parallelism: 4,
            orphan_after: Duration::from_secs(3600),
            suspect_after: Duration::from_secs(5),
        }
    }
}

const SCAN_PAGE: usize = 1000;
const RPC_TIMEOUT: Duration = Duration::from_secs(300);

/// One chunk short of its copies.
struct Task {
    key: Vec<u8>,
    ext: Extent,
    /// Copies that count.
    keep: Vec<NodeId>,
    /// Readable copies to copy from.
    sources: Vec<NodeId>,
    /// Copies to replace (dead, corrupt, draining), worst first.
    replace: Vec<NodeId>,
    /// Where the new copy goes, for a rebalancing move; placement decides
    /// otherwise.
    target: Option<NodeId>,
    /// Copies the chunk should have: its file's `rep` cue (the length of
    /// its list for files written before cues).
    want: usize,
    /// The file's cues, for placing new copies.
    cues: cairn_types::Cues,
}

impl Task {
    /// Bytes one new copy (or shard) moves.
    fn bytes_per_copy(&self) -> u64 {
        self.ext.ec.as_ref().map_or(self.ext.len, |ec| ec.shard_len)
    }

    /// Bad copies to replace plus copies never made.
    fn copies_to_make(&self) -> usize {
        self.replace.len()
            + self
                .want
                .saturating_sub(self.keep.len() + self.replace.len())
    }
}

/// Plans moves of healthy copies from the fullest live nodes to the
/// emptiest (a node just added, say), a bounded number per pass.
struct Balancer {
    /// Projected bytes used per live node.
    used: HashMap<NodeId, u64>,
    mean: u64,
    slack: u64,
    budget: usize,
}

impl Balancer {
    fn new(meta: &Meta, budget: usize) -> Balancer {
        let used: HashMap<NodeId, u64> = meta
            .nodes
            .status()
            .into_iter()
            .filter(|n| n.state == NodeState::Live)
            .map(|n| (n.id, n.stats.used))
            .collect();
        let mean = if used.is_empty() {
            0
        } else {
            used.values().sum::<u64>() / used.len() as u64
        };
        // Imbalance under two chunks or a tenth of the mean is left alone.
        let slack = (2 * meta.chunk_size).max(mean / 10);
        let budget = if used.len() < 2 { 0 } else { budget };
        Balancer {
            used,
            mean,
            slack,
            budget,
        }
    }

    fn plan(&mut self, key: &[u8], ext: &Extent) -> Option<Task> {
        // Shards are not moved for balance (a drain or repair moves them).
        if self.budget == 0 || ext.ec.is_some() {
            return None;
        }
        let from = *ext
            .nodes
            .iter()
            .filter(|n| {
                self.used
                    .get(n)
                    .is_some_and(|u| *u > self.mean + self.slack)
            })
            .max_by_key(|n| self.used[n])?;
        let to = self
            .used
            .iter()
            .filter(|(n, u)| !ext.nodes.contains(n) && **u + self.slack < self.mean)
            .min_by_key(|(_, u)| **u)
            .map(|(n, _)| *n)?;
        self.budget -= 1;
        *self.used.get_mut(&from).unwrap() -= ext.len;
        *self.used.get_mut(&to).unwrap() += ext.len;
        let keep = ext.nodes.iter().copied().filter(|n| *n != from).collect();
        Some(Task {
            key: key.to_vec(),
            ext: ext.clone(),
            keep,
            sources: vec![from],
            replace: vec![from],
            target: Some(to),
            want: ext.nodes.len(),
            cues: cairn_types::Cues::default(),
        })
    }
}

/// The repair planner as a [`crate::worker::Worker`]: a pass every
/// `interval` (or when a commit leaves copies to make), sweeping orphans
/// every `orphan_after / 2` once this meta has been up and leader that long.
pub(crate) struct RepairWorker {
    meta: Arc<Meta>,
    last_sweep: Instant,
    /// Since when this meta has been leader, as far as the passes saw.
    leader_since: Option<Instant>,
    /// The first pass waits one interval (nodes heartbeat first).
    started: bool,
}

impl RepairWorker {
    pub(crate) fn new(meta: Arc<Meta>) -> RepairWorker {
        RepairWorker {
            meta,
            last_sweep: Instant::now(),
            leader_since: None,
            started: false,
        }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for RepairWorker {
    fn name(&self) -> &'static str {
        "repair"
    }

    fn retry_after(&self) -> Duration {
        self.meta.repair_cfg.interval
    }

    async fn pass(&mut self) -> Result<crate::worker::Pass> {
        let meta = self.meta.clone();
        let interval = meta.repair_cfg.interval;
        let idle = |state: &'static str, progress: String| crate::worker::Pass {
            state,
            progress,
            next: interval,
        };
        if !self.started {
            self.started = true;
            return Ok(idle("idle", "first pass after one interval".into()));
        }
        let orphan_after = meta.repair_cfg.orphan_after;
        let horizon = now_ms().saturating_sub(orphan_after.as_millis() as u64);
        // Every meta prunes its own allocations (a follower never sweeps).
        meta.recent.lock().unwrap().retain(|_, t| *t >= horizon);
        if !meta.election.is_leader() {
            self.leader_since = None;
            return Ok(idle("standby", "not the leader".into()));
        }
        let since = *self.leader_since.get_or_insert_with(Instant::now);
        let up_long_enough =
            now_ms().saturating_sub(meta.started_ms) > orphan_after.as_millis() as u64;
        // Repair copies are protected by the repairer's in-memory `recent`
        // map only (on a shared store the leader is the only repairer). A
        // previous leader's copies still in flight are not in ours, so a
        // new leader waits out the orphan window before its first sweep.
        let leader_long_enough = !meta.shared_store || since.elapsed() >= orphan_after;
        let sweep =
            up_long_enough && leader_long_enough && self.last_sweep.elapsed() >= orphan_after / 2;
        meta.repair_pass(sweep).await?;
        if sweep {
            self.last_sweep = Instant::now();
        }
        let st = meta.repair_status.lock().unwrap().clone();
        Ok(idle(
            "idle",
            format!(
                "{} chunk(s) pending ({} left), {} copies made, {} failed, {} orphans deleted",
                st.chunks_pending,
                cairn_types::format_bytes(st.bytes_left),
                st.copies_done,
                st.copies_failed,
                st.orphans_deleted
            ),
        ))
    }
}

impl Meta {
    /// Every chunk each node should hold, from one walk of the namespace,
    /// and the chunks that need copies.
    /// Returns what each node should hold, repairs, and rebalancing moves.
    async fn walk(
        &self,
        plan: bool,
    ) -> Result<(HashMap<NodeId, HashSet<ChunkId>>, Vec<Task>, Vec<Task>)> {
        let mut expected: HashMap<NodeId, HashSet<ChunkId>> = HashMap::new();
        let mut tasks = Vec::new();
        let mut moves = Vec::new();
        let mut balancer = Balancer::new(
            self,
            if plan {
                self.repair_cfg.parallelism.max(1) * 4
            } else {
                0
            },
        );
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            let (files, next) = self.ns.scan_files(cursor.as_deref(), SCAN_PAGE).await?;
            for (key, inode) in files {
                for ext in &inode.extents {
                    for (c, n) in ext.stored() {
                        expected.entry(n).or_default().insert(c);
                    }
                    if ext.remote.is_some() {
                        // Offloaded: the store holds it; node copies are
                        // cache copies, which repair neither makes nor moves.
                        continue;
                    }
                    if plan && ext.ec.is_some() {
                        tasks.extend(self.classify_stripe(&key, ext, &inode.cues));
                    } else if plan {
                        if let Some(t) = self.classify(&key, ext, &inode.cues) {
                            tasks.push(t);
                        } else if let Some(m) = balancer.plan(&key, ext) {
                            moves.push(m);
                        }
                    }
                }
            }
            match next {
                Some(k) => cursor = Some(k),
                None => return Ok((expected, tasks, moves)),
            }
        }
    }

    fn classify(&self, key: &[u8], ext: &Extent, cues: &cairn_types::Cues) -> Option<Task> {
        let want = cues.rep.map_or(ext.nodes.len(), |r| r as usize);
        let (mut keep, mut sources, mut replace) = (Vec::new(), Vec::new(), Vec::new());
        for n in &ext.nodes {
            let state = self.nodes.state(*n);
            let corrupt = self.nodes.is_corrupt(ext.chunk, *n);
            let counts = !corrupt
                && matches!(
                    state,
                    NodeState::Live | NodeState::Full | NodeState::Suspect
                );
            if counts {
                keep.push(*n);
            } else {
                replace.push(*n);
            }
            if !corrupt && state.is_up() {
                sources.push(*n);
            }
        }
        if replace.is_empty() && keep.len() >= want {
            return None;
        }
        // Prefer copying from nodes in good standing.
        sources.sort_by_key(|n| !keep.contains(n));
        Some(Task {
            key: key.to_vec(),
            ext: ext.clone(),
            keep,
            sources,
            replace,
            target: None,
            want,
            cues: cues.clone(),
        })
    }

    /// An erasure-coded chunk with shards to rebuild or move: `replace`
    /// holds the nodes of the bad shards (a stripe's nodes are distinct,
    /// so a node names its shard), `sources` those of readable ones.
    fn classify_stripe(&self, key: &[u8], ext: &Extent, cues: &cairn_types::Cues) -> Option<Task> {
        let (mut keep, mut sources, mut replace) = (Vec::new(), Vec::new(), Vec::new());
        for (c, n) in ext.stored() {
            let state = self.nodes.state(n);
            let corrupt = self.nodes.is_corrupt(c, n);
            if !corrupt
                && matches!(
                    state,
                    NodeState::Live | NodeState::Full | NodeState::Suspect
                )
            {
                keep.push(n);
            } else {
                replace.push(n);
            }
            if !corrupt && state.is_up() {
                sources.push(n);
            }
        }
        if replace.is_empty() {
            return None;
        }
        Some(Task {
            key: key.to_vec(),
            want: ext.nodes.len(),
            ext: ext.clone(),
            keep,
            sources,
            replace,
            target: None,
            cues: cues.clone(),
        })
    }

    /// Restore the shards of an erasure-coded chunk: a shard still
    /// readable where it is (a draining node's) is copied; a lost or
    /// corrupt one is rebuilt from K others by its new node. Each goes to
    /// a node placement picks away from the other shards (a corrupt shard
    /// on a reachable node is rebuilt in place); then the chunk's node
    /// list is updated in shard order.
    async fn repair_stripe(&self, task: Task) -> Result<u64> {
        let Task {
            key,
            ext,
            sources,
            replace,
            cues,
            ..
        } = task;
        let Some(ec) = ext.ec.clone() else {
            return Err(Error::internal("not an erasure-coded chunk"));
        };
        let k = ec.scheme.k as usize;
        if sources.len() < k {
            return Err(Error::unavailable(format!(
                "chunk {} (ec={}): only {} of {} shards readable, {k} needed",
                ext.chunk,
                ec.scheme,
                sources.len(),
                ext.nodes.len()
            )));
        }
        let index_of = |n: NodeId| ext.nodes.iter().position(|x| *x == n);
        let shard_sources: Vec<(u8, cairn_proto::NodeAddr)> = sources
            .iter()
            .filter_map(|n| Some((index_of(*n)? as u8, self.nodes.addr(*n)?)))
            .collect();
        let place_cues = Meta::stripe_cues(&cues, ec.scheme);
        let cap = Capability::sign(&self.secret, ext.chunk, false, None);
        let mut list = ext.nodes.clone();
        let mut exclude = ext.nodes.clone();
        let (mut made, mut healed, mut released) = (Vec::new(), 0u64, Vec::new());
        let mut last_err = None;
        for bad in replace {
            let Some(i) = index_of(bad) else { continue };
            let shard = ext.chunk.shard(i);
            let corrupt = self.nodes.is_corrupt(shard, bad);
            let up = self.nodes.state(bad).is_up();
            let target = if corrupt && up {
                match self.nodes.addr(bad) {
                    Some(a) => a,
                    None => continue,
                }
            } else {
                let have: Vec<NodeId> = list.iter().copied().filter(|n| *n != bad).collect();
                let req = crate::placement::PlaceRequest {
                    cues: &place_cues,
                    default_rep: ext.nodes.len() as u8,
                    want: 1,
                    have: &have,
                    exclude: &exclude,
                    len: ec.shard_len,
                    writer_host: None,
                    together_key: None,
                };
                match self.nodes.place_with(&req) {
                    Ok(mut t) => t.remove(0),
                    Err(e) => {
                        last_err = Some(e);
                        continue;
                    }
                }
            };
            exclude.push(target.id);
            self.recent.lock().unwrap().insert(shard, now_ms());
            let source = self.nodes.addr(bad).filter(|_| up && !corrupt);
            let req = match source {
                Some(source) => StorageRequest::Replicate {
                    chunk: shard,
                    len: ec.shard_len,
                    crc: ec.crcs[i],
                    source,
                    cap: cap.clone(),
                },
                None => StorageRequest::RebuildShard {
                    chunk: ext.chunk,
                    index: i as u8,
                    scheme: ec.scheme,
                    shard_len: ec.shard_len,
                    crcs: ec.crcs.clone(),
                    sources: shard_sources.clone(),
                    cap: cap.clone(),
                },
            };
            match self.node_call::<()>(&target.addr, &req).await {
                Ok(()) if target.id == bad => {
                    self.nodes.clear_corrupt(shard, bad);
                    healed += 1;
                }
                Ok(()) => {
                    list[i] = target.id;
                    made.push((shard, target.id));
                    released.push((shard, bad));
                }
                Err(e) => last_err = Some(e),
            }
        }
        let done = made.len() as u64 + healed;
        if done == 0 {
            return Err(last_err.unwrap_or_else(|| Error::unavailable("no shard could be rebuilt")));
        }
        if made.is_empty() {
            return Ok(done);
        }
        if !self.ns.set_chunk_nodes(&key, ext.chunk, &list).await? {
            // The file let go of the chunk meanwhile: the new shards are garbage.
            let orphans: Vec<Extent> = made
                .iter()
                .map(|(c, n)| Extent::replicated(*c, ec.shard_len, 0, vec![*n]))
                .collect();
            self.ns.discard(&orphans).await?;
            return Ok(0);
        }
        for (shard, n) in released {
            self.delete_replaced(shard, n).await;
        }
        Ok(done)
    }

    /// Delete a copy the list no longer names from its node, if that node
    /// is reachable (a dead node's copies are swept when it returns).
    async fn delete_replaced(&self, chunk: ChunkId, n: NodeId) {
        if self.nodes.is_corrupt(chunk, n) || self.nodes.state(n).is_up() {
            if let Some(a) = self.nodes.addr(n) {
                let req = StorageRequest::DeleteChunks {
                    chunks: vec![chunk],
                };
                if self.node_call::<()>(&a.addr, &req).await.is_ok() {
                    self.nodes.clear_corrupt(chunk, n);
                }
            }
        }
    }

    /// One planner pass; with `sweep`, also collect orphans.
    pub(crate) async fn repair_pass(self: &Arc<Self>, sweep: bool) -> Result<()> {
        let started = Instant::now();
        let (expected, mut tasks, moves) = self.walk(true).await?;
        // Rebalance only a healthy cluster: repairs come first.
        let rebalancing = tasks.is_empty() && !moves.is_empty();
        if rebalancing {
            debug!(
                moves = moves.len(),
                "rebalancing towards the emptiest nodes"
            );
            tasks = moves;
        }
        let draining = self.nodes.draining_nodes();
        for d in &draining {
            let holds = expected.get(d).is_some_and(|s| !s.is_empty());
            self.nodes.set_drained(*d, !holds);
        }
        let bytes_left: u64 = tasks
            .iter()
            .map(|t| t.bytes_per_copy() * t.copies_to_make() as u64)
            .sum();
        {
            let mut st = self.repair_status.lock().unwrap();
            st.chunks_pending = tasks.len() as u64;
            st.bytes_left = bytes_left;
        }
        if !tasks.is_empty() {
            info!(chunks = tasks.len(), bytes = bytes_left, "repairing");
        }
        let throttle = Arc::new(cairn_proto::Throttle::new(self.repair_cfg.bandwidth));
        let permits = Arc::new(Semaphore::new(self.repair_cfg.parallelism.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for task in tasks {
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore open");
            let (me, throttle) = (self.clone(), throttle.clone());
            set.spawn(async move {
                let _permit = permit;
                let len = task.bytes_per_copy();
                let n = task.copies_to_make() as u64;
                throttle.take(len * n).await;
                let r = me.repair_chunk(task).await;
                let mut st = me.repair_status.lock().unwrap();
                st.bytes_left = st.bytes_left.saturating_sub(len * n);
                st.chunks_pending = st.chunks_pending.saturating_sub(1);
                match r {
                    Ok(copies) => {
                        st.copies_done += copies;
                        copies * len
                    }
                    Err(e) => {
                        st.copies_failed += 1;
                        debug!("repair of a chunk failed: {e}");
                        0
                    }
                }
            });
        }
        let mut copied = 0u64;
        while let Some(r) = set.join_next().await {
            copied += r.unwrap_or(0);
        }
        if copied > 0 {
            let rate = (copied as f64 / started.elapsed().as_secs_f64()) as u64;
            self.repair_status.lock().unwrap().bytes_per_s = rate;
            info!(bytes = copied, rate, "repair pass done");
        }
        if sweep {
            self.sweep_orphans(expected).await?;
        }
        Ok(())
    }

    /// Copy one chunk to new nodes until it has its copies again; returns
    /// how many copies were made.
    async fn repair_chunk(&self, task: Task) -> Result<u64> {
        if task.ext.ec.is_some() {
            return self.repair_stripe(task).await;
        }
        let Task {
            key,
            ext,
            keep,
            sources,
            replace,
            target: forced,
            want,
            cues,
        } = task;
        if sources.is_empty() {
            return Err(Error::unavailable(format!(
                "chunk {}: no readable copy left",
                ext.chunk
            )));
        }
        let mut exclude = ext.nodes.clone();
        let mut made = Vec::new();
        let mut healed = Vec::new();
        let mut last_err = None;
        // Each bad copy is replaced; copies the chunk never had (its write
        // made only `sync` of them) are added.
        let missing = want.saturating_sub(keep.len() + replace.len());
        let slots: Vec<Option<NodeId>> = replace
            .iter()
            .copied()
            .map(Some)
            .chain(std::iter::repeat_n(None, missing))
            .collect();
        for slot in &slots {
            // A corrupt copy on a reachable node is rewritten where it is
            // (new bytes, new place in the node's log); anything else moves.
            let in_place = slot.is_some_and(|bad| {
                self.nodes.is_corrupt(ext.chunk, bad) && self.nodes.state(bad).is_up()
            });
            let target = if in_place || forced.is_some() {
                let Some(at) = forced.or(*slot) else {
                    continue;
                };
                match self.nodes.addr(at) {
                    Some(a) => a,
                    None => continue,
                }
            } else {
                // New copies follow the file's placement cues, next to the
                // copies it keeps (a buddy set is completed, say).
                let have: Vec<NodeId> = keep.iter().chain(made.iter()).copied().collect();
                // keep_together: chunks that shared a node set and lost the
                // same copy share the survivors, and so one key: each gets
                // the same replacement, and the set stays one.
                let together = (cues.keep_together == Some(true)).then(|| {
                    let mut ids: Vec<u64> = have.iter().map(|n| n.0).collect();
                    ids.sort_unstable();
                    ids.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, id| {
                        (h ^ id).wrapping_mul(0x100_0000_01b3)
                    })
                });
                let req = crate::placement::PlaceRequest {
                    cues: &cues,
                    default_rep: want.max(1) as u8,
                    want: 1,
                    have: &have,
                    exclude: &exclude,
                    len: ext.len,
                    writer_host: None,
                    together_key: together,
                };
                match self.nodes.place_with(&req) {
                    Ok(mut t) => t.remove(0),
                    Err(e) => {
                        last_err = Some(e);
                        continue;
                    }
                }
            };
            exclude.push(target.id);
            // Protects the new copy from the orphan sweep until the list
            // names it. In memory only, also on a shared store: there the
            // leader is the only repairer and the only sweeper (a new
            // leader waits out the orphan window, see repair_worker).
            self.recent.lock().unwrap().insert(ext.chunk, now_ms());
            for src in &sources {
                let Some(source) = self.nodes.addr(*src) else {
                    continue;
                };
                let cap = Capability::sign(&self.secret, ext.chunk, false, None);
                let req = StorageRequest::Replicate {
                    chunk: ext.chunk,
                    len: ext.len,
                    crc: ext.crc,
                    source,
                    cap,
                };
                match self.node_call::<()>(&target.addr, &req).await {
                    Ok(()) => {
                        if let Some(bad) = slot.filter(|_| in_place) {
                            self.nodes.clear_corrupt(ext.chunk, bad);
                            healed.push(bad);
                        } else {
                            made.push(target.id);
                        }
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
            }
        }
        if made.is_empty() && healed.is_empty() {
            return Err(last_err.unwrap_or_else(|| Error::unavailable("no copy could be made")));
        }
        let copies = (made.len() + healed.len()) as u64;
        if made.is_empty() {
            return Ok(copies); // healed in place: the list is unchanged
        }
        // The list keeps the length the file asked for: a copy still to be
        // replaced stays listed until it is.
        let want = want.max(ext.nodes.len());
        let mut list: Vec<NodeId> = keep
            .iter()
            .chain(healed.iter())
            .chain(made.iter())
            .copied()
            .collect();
        let mut released = Vec::new();
        for n in replace.iter().rev().filter(|n| !healed.contains(n)) {
            if list.len() < want {
                list.push(*n);
            } else {
                released.push(*n);
            }
        }
        if !self.ns.set_chunk_nodes(&key, ext.chunk, &list).await? {
            // The file let go of the chunk meanwhile: our copies are garbage.
            self.ns
                .discard(&[Extent {
                    nodes: made.clone(),
                    ..ext
                }])
                .await?;
            return Ok(0);
        }
        for n in released {
            self.delete_replaced(ext.chunk, n).await;
        }
        Ok(copies)
    }

    pub(crate) async fn node_call<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        req: &StorageRequest,
    ) -> Result<T> {
        let mut p = self.peers.get(addr).await?;
        let answer: Result<T, Error> = match p.conn.call(req, RPC_TIMEOUT).await {
            Ok(a) => a,
            // A pooled connection the node closed (it restarted): once
            // more on a new one.
            Err(e) if p.reused && e.kind == cairn_types::ErrorKind::Unavailable => {
                self.peers.forget(addr);
                p = self.peers.get(addr).await?;
                p.conn.call(req, RPC_TIMEOUT).await?
            }
            Err(e) => return Err(e),
        };
        self.peers.put(addr, p.conn);
        answer
    }

    async fn sweep_orphans(&self, first: HashMap<NodeId, HashSet<ChunkId>>) -> Result<()> {
        let horizon = now_ms().saturating_sub(self.repair_cfg.orphan_after.as_millis() as u64);
        self.recent.lock().unwrap().retain(|_, t| *t >= horizon);
        let mut listings = Vec::new();
        for node in self.nodes.up_nodes() {
            match self
                .node_call::<Vec<ChunkId>>(&node.addr, &StorageRequest::ListChunks)
                .await
            {
                Ok(chunks) => listings.push((node, chunks)),
                Err(e) => debug!(node = %node.id, "cannot list chunks for the orphan sweep: {e}"),
            }
        }
        // Allocation records (other meta servers' allocations on a shared
        // store), read after the listings: a chunk a node listed was
        // allocated, so recorded, before it was written. Records are only
        // removed once expired or discarded (see crate::alloc).
        let mut allocated: HashSet<ChunkId> = HashSet::new();
        let mut expired: Vec<ChunkId> = Vec::new();
        for (chunk, at) in crate::alloc::all(self.store.as_ref()).await? {
            if at >= horizon {
                allocated.insert(chunk);
            } else {
                expired.push(chunk);
            }
        }
        let (second, _, _) = self.walk(false).await?;
        let garbage = self.ns.garbage_chunks().await?;
        if !self.election.is_leader() {
            return Ok(()); // another meta may be repairing now
        }
        let mut deleted = 0u64;
        let mut absent_total = 0usize;
        for (node, chunks) in listings {
            let referenced = |c: &ChunkId| {
                first.get(&node.id).is_some_and(|s| s.contains(c))
                    || second.get(&node.id).is_some_and(|s| s.contains(c))
            };
            let holds: HashSet<ChunkId> = chunks.iter().copied().collect();
            let orphans: Vec<ChunkId> = {
                let recent = self.recent.lock().unwrap();
                // Neither swept nor missed: a chunk whose write (or
                // repair) may still be on its way. A shard is protected as
                // its stripe is.
                let settled = |c: &ChunkId| {
                    let stripe = c.stripe();
                    !recent.contains_key(c)
                        && !recent.contains_key(&stripe)
                        && !allocated.contains(c)
                        && !allocated.contains(&stripe)
                };
                // Named there by both walks (so not moved meanwhile), yet
                // not held: a copy or shard that never landed or was lost.
                let named = second.get(&node.id);
                let absent: Vec<ChunkId> = match (first.get(&node.id), named) {
                    (Some(a), Some(b)) => a
                        .iter()
                        .filter(|c| b.contains(c) && !holds.contains(c) && settled(c))
                        .copied()
                        .collect(),
                    _ => Vec::new(),
                };
                if !absent.is_empty() {
                    warn!(node = %node.id, chunks = absent.len(), "node lacks chunks files name there: repairing them");
                }
                absent_total += absent.len();
                // Older marks stay while not held and named there, or while
                // their write may still land.
                self.nodes.sweep_missing(node.id, &absent, |c| {
                    !holds.contains(c) && (named.is_some_and(|s| s.contains(c)) || !settled(c))
                });
                chunks
                    .into_iter()
                    .filter(|c| {
                        !referenced(c)
                            && !self.cache.holds(*c, node.id)
                            && !garbage.contains(c)
                            && settled(c)
                    })
                    .collect()
            };
            for batch in orphans.chunks(1000) {
                let req = StorageRequest::DeleteChunks {
                    chunks: batch.to_vec(),
                };
                match self.node_call::<()>(&node.addr, &req).await {
                    Ok(()) => deleted += batch.len() as u64,
                    Err(e) => warn!(node = %node.id, "orphan sweep could not delete: {e}"),
                }
            }
        }
        // Expired records protect nothing (a commit naming their chunk is
        // refused), whether or not the chunk was committed meanwhile.
        if let Err(e) = crate::alloc::forget(self.store.as_ref(), &expired).await {
            warn!("orphan sweep could not delete expired allocation records: {e}");
        }
        if deleted > 0 {
            info!(chunks = deleted, "orphan sweep deleted unreferenced chunks");
        }
        self.repair_status.lock().unwrap().orphans_deleted += deleted;
        if absent_total > 0 {
            self.repair_kick.notify_one();
        }
        Ok(())
    }
}
