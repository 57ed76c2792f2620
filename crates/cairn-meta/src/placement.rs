//! Placement: which storage nodes get the copies of a chunk.
//!
//! The one implementation, used by meta ([`crate::nodes::NodeTracker`]) and
//! by the simulator (`cairn-sim`). It is pure: given the node table, a
//! request and a seeded RNG, the answer is deterministic; it does no I/O and
//! knows nothing of heartbeats (the caller says which nodes are
//! `accepting`).
//!
//! Schemes ([`PlaceScheme`], from the `place` cue; none set is the
//! *default*: random weighted towards free space so nodes fill evenly):
//!
//! - `random`: uniform over eligible nodes.
//! - `buddy`: nodes are cut into fixed sets of `rep` in join order, a set
//!   taking nodes of as many zones as it can (see `derive_buddy`); nodes
//!   left over at the end join the last set. All copies of a chunk go to one set; a
//!   set is picked with probability proportional to its size, so every node
//!   gets the same share. A repair (`have` not empty) completes the set of
//!   `have`'s members; when that set lacks eligible members (one is dead) or
//!   when no set is healthy, copies go to any eligible node (logged at
//!   debug): availability over the set invariant. A node that joins
//!   changes at most the last set, so sets stay fixed as a cluster grows.
//! - `min_copy`: each copy to the eligible node with the fewest bytes stored
//!   (ties by node id), from a cluster-wide load index that
//!   [`Placer::record`] keeps current.
//! - `copyset`: Copysets (Cidon et al., ATC'13): `P = ceil(S / (rep-1))`
//!   seeded permutations of the nodes, each cut into groups of `rep`; a chunk
//!   takes a random primary, then one of the primary's copysets.
//! - `spread`: copies over as many zones as possible, random within a zone.
//! - `local`: the first copy on a node on the writer's host, the rest random.
//!
//! Constraints that apply to every scheme: `site=ZONE` keeps every copy in
//! that zone (sets and copysets are then formed within the zone);
//! `rep_sites=N` spreads the copies (with `have`) over exactly N zones, no
//! zone holding more than `ceil(copies / N)`. `keep_together` with a
//! [`PlaceRequest::together_key`] replaces every random choice by rendezvous
//! (highest-random-weight) hashing of the key with node ids (or set members),
//! so all chunks of one key land on the same nodes while those stay
//! eligible, and unrelated nodes coming and going do not move them. With
//! `min_copy`, `keep_together` wins (load cannot be stable per key).
//!
//! Every answer holds distinct nodes, none in `have` or `exclude`, each
//! accepting and with more than `len` bytes free.

use cairn_types::{format_bytes, Cues, Error, NodeId, PlaceScheme, Result};
use std::collections::{BTreeSet, HashMap};
use tracing::debug;

/// What the placer knows of one storage node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    pub zone: String,
    pub host: String,
    /// Order of first registration; fixes buddy sets and copysets.
    pub join_seq: u64,
    /// Bytes stored (or allocated) on the node: the load `min_copy` balances.
    pub used: u64,
    /// Bytes the node can still take.
    pub free: u64,
    /// Live and taking new chunks (not suspect, dead, full or draining).
    pub accepting: bool,
}

/// Tunables that fix the derived structures.
#[derive(Clone, Debug)]
pub struct PlacerConfig {
    /// Copysets' scatter width `S`: each node shares copysets with about
    /// this many others.
    pub scatter_width: usize,
    /// Seeds the copyset permutations (stable for a given node set).
    pub seed: u64,
}

impl Default for PlacerConfig {
    fn default() -> Self {
        PlacerConfig {
            scatter_width: 4,
            seed: 0x6361_6972_6e21,
        }
    }
}

/// One placement decision.
#[derive(Clone, Debug)]
pub struct PlaceRequest<'a> {
    /// The file's effective cues: `rep`, `place`, `site`, `rep_sites` and
    /// `keep_together` are read.
    pub cues: &'a Cues,
    /// `rep` when the cues do not set it.
    pub default_rep: u8,
    /// Copies to add.
    pub want: usize,
    /// Copies that exist and count (a repair completes these).
    pub have: &'a [NodeId],
    /// Nodes not to use (failed during this write).
    pub exclude: &'a [NodeId],
    /// Bytes of the chunk; a node needs more than this free.
    pub len: u64,
    /// The writer's host, for `place=local`.
    pub writer_host: Option<&'a str>,
    /// Chunks with the same key land together when `keep_together` is set
    /// (say the file's or the cue-carrying directory's inode).
    pub together_key: Option<u64>,
}

impl PlaceRequest<'_> {
    pub fn rep(&self) -> usize {
        self.cues.rep.unwrap_or(self.default_rep).max(1) as usize
    }
}

/// Groups of nodes (buddy sets or copysets) for one `(rep, site)`.
#[derive(Default)]
struct Groups {
    sets: Vec<Vec<u32>>,
    /// Node index → the groups that hold it.
    of_node: Vec<Vec<u32>>,
}

/// The node table and everything derived from it. Build once, then
/// [`place`](Placer::place) and [`record`](Placer::record) as chunks come.
pub struct Placer {
    cfg: PlacerConfig,
    /// In join order.
    nodes: Vec<NodeInfo>,
    index: HashMap<NodeId, u32>,
    zone_names: Vec<String>,
    zone_of: Vec<u32>,
    /// Accepting nodes, in join order; per zone.
    pool: Vec<u32>,
    pool_in_zone: Vec<Vec<u32>>,
    by_host: HashMap<String, Vec<u32>>,
    /// `(used, id, index)` of accepting nodes, for `min_copy`.
    load: BTreeSet<(u64, NodeId, u32)>,
    buddy: HashMap<(usize, Option<u32>), Groups>,
    copysets: HashMap<(usize, Option<u32>), Groups>,
}

/// Random choices, or rendezvous choices for `keep_together`.
enum Chooser<'r> {
    Rng(&'r mut fastrand::Rng),
    Hrw(u64),
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Rendezvous weight of `item` for `key`.
fn hrw(key: u64, item: u64) -> u64 {
    splitmix(key ^ splitmix(item))
}

impl Chooser<'_> {
    /// One element of `list` that passes `ok`: uniform at random, or the
    /// highest rendezvous weight (`weight` names an element).
    fn pick(
        &mut self,
        list: &[u32],
        weight: impl Fn(u32) -> u64,
        mut ok: impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        if list.is_empty() {
            return None;
        }
        match self {
            Chooser::Rng(rng) => {
                // Rejection sampling keeps a pick O(1) on big clusters; the
                // shuffled scan is for when most of the list is ineligible.
                for _ in 0..16 {
                    let i = list[rng.usize(..list.len())];
                    if ok(i) {
                        return Some(i);
                    }
                }
                let mut order = list.to_vec();
                rng.shuffle(&mut order);
                order.into_iter().find(|i| ok(*i))
            }
            Chooser::Hrw(key) => list
                .iter()
                .copied()
                .filter(|i| ok(*i))
                .max_by_key(|i| hrw(*key, weight(*i))),
        }
    }

    /// `list` in the order choices should try it.
    fn order(&mut self, list: &[u32], weight: impl Fn(u32) -> u64) -> Vec<u32> {
        let mut v = list.to_vec();
        match self {
            Chooser::Rng(rng) => rng.shuffle(&mut v),
            Chooser::Hrw(key) => v.sort_by_key(|i| std::cmp::Reverse(hrw(*key, weight(*i)))),
        }
        v
    }
}

/// The `rep_sites` rule: copies over exactly `sites` zones, at most `cap`
/// in one.
struct ZoneRule {
    sites: usize,
    cap: usize,
    total: usize,
    /// Zone → copies there (including `have`).
    counts: Vec<(u32, usize)>,
    placed: usize,
}

impl ZoneRule {
    fn allows(&self, zone: u32) -> bool {
        let distinct = self.counts.len();
        match self.counts.iter().find(|(z, _)| *z == zone) {
            Some((_, c)) => {
                *c < self.cap && self.total - self.placed > self.sites.saturating_sub(distinct)
            }
            None => distinct < self.sites,
        }
    }

    fn add(&mut self, zone: u32) {
        self.placed += 1;
        match self.counts.iter_mut().find(|(z, _)| *z == zone) {
            Some((_, c)) => *c += 1,
            None => self.counts.push((zone, 1)),
        }
    }
}

/// State of one `place` call: who is chosen and what is allowed.
struct Fill<'a> {
    req: &'a PlaceRequest<'a>,
    site: Option<u32>,
    chosen: Vec<u32>,
    rule: Option<ZoneRule>,
}

impl Placer {
    pub fn new(nodes: Vec<NodeInfo>, cfg: PlacerConfig) -> Placer {
        let mut p = Placer {
            cfg,
            nodes,
            index: HashMap::new(),
            zone_names: Vec::new(),
            zone_of: Vec::new(),
            pool: Vec::new(),
            pool_in_zone: Vec::new(),
            by_host: HashMap::new(),
            load: BTreeSet::new(),
            buddy: HashMap::new(),
            copysets: HashMap::new(),
        };
        p.nodes.sort_by_key(|n| (n.join_seq, n.id));
        p.nodes.dedup_by_key(|n| n.id);
        for (i, n) in p.nodes.iter().enumerate() {
            p.index.insert(n.id, i as u32);
            let z = match p.zone_names.iter().position(|z| *z == n.zone) {
                Some(z) => z,
                None => {
                    p.zone_names.push(n.zone.clone());
                    p.zone_names.len() - 1
                }
            };
            p.zone_of.push(z as u32);
            p.by_host.entry(n.host.clone()).or_default().push(i as u32);
        }
        p.reindex();
        p
    }

    fn reindex(&mut self) {
        self.pool.clear();
        self.pool_in_zone = vec![Vec::new(); self.zone_names.len()];
        self.load.clear();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.accepting {
                self.pool.push(i as u32);
                self.pool_in_zone[self.zone_of[i] as usize].push(i as u32);
                self.load.insert((n.used, n.id, i as u32));
            }
        }
    }

    /// Replace the node table. When the nodes themselves (ids, zones, hosts,
    /// join order) are unchanged only their load and state are refreshed,
    /// and buddy sets and copysets are kept.
    pub fn update(&mut self, mut nodes: Vec<NodeInfo>) {
        nodes.sort_by_key(|n| (n.join_seq, n.id));
        let same = nodes.len() == self.nodes.len()
            && nodes.iter().zip(&self.nodes).all(|(a, b)| {
                a.id == b.id && a.zone == b.zone && a.host == b.host && a.join_seq == b.join_seq
            });
        if same {
            self.nodes = nodes;
            self.reindex();
        } else {
            *self = Placer::new(nodes, self.cfg.clone());
        }
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.index.get(&id).map(|i| &self.nodes[*i as usize])
    }

    /// `bytes` more (or, negative, fewer) stored on `node`.
    pub fn record(&mut self, node: NodeId, bytes: i64) {
        let Some(&i) = self.index.get(&node) else {
            return;
        };
        let n = &mut self.nodes[i as usize];
        let was = n.used;
        n.used = n.used.saturating_add_signed(bytes);
        n.free = n.free.saturating_add_signed(-bytes);
        if n.accepting {
            self.load.remove(&(was, node, i));
            self.load.insert((n.used, node, i));
        }
    }

    /// The buddy sets for `rep` copies (all zones), as node ids.
    pub fn buddy_sets(&mut self, rep: usize) -> Vec<Vec<NodeId>> {
        let key = (rep.max(1), None);
        if !self.buddy.contains_key(&key) {
            let g = self.derive_buddy(key.0, None);
            self.buddy.insert(key, g);
        }
        self.ids_of(&self.buddy[&key].sets)
    }

    /// The copysets for `rep` copies (all zones), as node ids.
    pub fn copysets(&mut self, rep: usize) -> Vec<Vec<NodeId>> {
        let key = (rep.max(1), None);
        if !self.copysets.contains_key(&key) {
            let g = self.derive_copysets(key.0, None);
            self.copysets.insert(key, g);
        }
        self.ids_of(&self.copysets[&key].sets)
    }

    fn ids_of(&self, sets: &[Vec<u32>]) -> Vec<Vec<NodeId>> {
        sets.iter()
            .map(|s| s.iter().map(|i| self.nodes[*i as usize].id).collect())
            .collect()
    }

    /// Nodes in `site` (all when `None`), in join order.
    fn members(&self, site: Option<u32>) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|i| site.is_none_or(|z| self.zone_of[*i as usize] == z))
            .collect()
    }

    /// Cut `order` into groups of `rep`, the remainder joining the last.
    fn cut(&self, order: &[u32], rep: usize, groups: &mut Groups) {
        let full = order.len() / rep;
        for g in 0..full {
            let end = if g + 1 == full {
                order.len()
            } else {
                (g + 1) * rep
            };
            let set: Vec<u32> = order[g * rep..end].to_vec();
            let gid = groups.sets.len() as u32;
            for i in &set {
                groups.of_node[*i as usize].push(gid);
            }
            groups.sets.push(set);
        }
    }

    /// Buddy sets, formed in join order and never changed by later joins:
    /// joining nodes wait in a queue until it holds `rep` nodes of as many
    /// zones as have been seen so far (at most `rep`); the set takes the
    /// oldest node of each zone, then the oldest others. A queue of
    /// `2·rep - 1` nodes forms a set with the zones it has, so an
    /// unbalanced zone cannot starve the rest. What remains at the end is
    /// the only unstable part: `rep` or more nodes form a last set,
    /// fewer join the last set.
    fn derive_buddy(&self, rep: usize, site: Option<u32>) -> Groups {
        let mut g = Groups {
            sets: Vec::new(),
            of_node: vec![Vec::new(); self.nodes.len()],
        };
        let zone = |i: &u32| self.zone_of[*i as usize];
        let mut waiting: Vec<u32> = Vec::new();
        let mut seen: Vec<u32> = Vec::new();
        let push = |g: &mut Groups, set: Vec<u32>| {
            let gid = g.sets.len() as u32;
            for i in &set {
                g.of_node[*i as usize].push(gid);
            }
            g.sets.push(set);
        };
        for i in self.members(site) {
            if !seen.contains(&zone(&i)) {
                seen.push(zone(&i));
            }
            waiting.push(i);
            let mut firsts: Vec<u32> = Vec::new();
            for w in &waiting {
                if !firsts.iter().any(|f| zone(f) == zone(w)) {
                    firsts.push(*w);
                }
            }
            let diverse = firsts.len() >= rep.min(seen.len());
            if waiting.len() >= rep && (diverse || waiting.len() >= 2 * rep - 1) {
                let mut set: Vec<u32> = firsts.into_iter().take(rep).collect();
                for w in &waiting {
                    if set.len() == rep {
                        break;
                    }
                    if !set.contains(w) {
                        set.push(*w);
                    }
                }
                set.sort_unstable();
                waiting.retain(|w| !set.contains(w));
                push(&mut g, set);
            }
        }
        if waiting.len() >= rep {
            push(&mut g, waiting);
        } else if let Some(last) = g.sets.len().checked_sub(1) {
            for w in waiting {
                g.of_node[w as usize].push(last as u32);
                g.sets[last].push(w);
            }
        }
        g
    }

    fn derive_copysets(&self, rep: usize, site: Option<u32>) -> Groups {
        let members = self.members(site);
        let perms = if rep <= 1 {
            1
        } else {
            self.cfg.scatter_width.max(1).div_ceil(rep - 1)
        };
        let mut g = Groups {
            sets: Vec::new(),
            of_node: vec![Vec::new(); self.nodes.len()],
        };
        for p in 0..perms as u64 {
            let mut rng = fastrand::Rng::with_seed(splitmix(
                self.cfg.seed ^ splitmix(((rep as u64) << 32) | p),
            ));
            let mut order = members.clone();
            rng.shuffle(&mut order);
            self.cut(&order, rep, &mut g);
        }
        g
    }

    /// Choose `req.want` nodes for a chunk; see the module doc for schemes.
    pub fn place(&mut self, req: &PlaceRequest, rng: &mut fastrand::Rng) -> Result<Vec<NodeId>> {
        if req.want == 0 {
            return Ok(Vec::new());
        }
        let rep = req.rep();
        let site = match &req.cues.site {
            None => None,
            Some(s) => match self.zone_names.iter().position(|z| z == s) {
                Some(z) => Some(z as u32),
                None => {
                    return Err(Error::unavailable(format!(
                        "cue site={s}: no storage node is in zone {s:?} (zones: {}); start one with 'cairn storage --zone {s}' or change the cue",
                        if self.zone_names.is_empty() { "none".to_string() } else { self.zone_names.join(", ") }
                    )))
                }
            },
        };
        let mut fill = Fill {
            req,
            site,
            chosen: Vec::with_capacity(req.want),
            rule: None,
        };
        if let Some(n) = req.cues.rep_sites {
            let sites = n as usize;
            let zones_with_room = match site {
                Some(z) => usize::from(!self.pool_in_zone[z as usize].is_empty()),
                None => self.pool_in_zone.iter().filter(|p| !p.is_empty()).count(),
            };
            if zones_with_room < sites {
                return Err(Error::unavailable(format!(
                    "cue rep_sites={sites}: only {zones_with_room} zone(s) have a live storage node taking chunks (zones known: {}); start nodes in more zones or lower rep_sites",
                    self.zone_names.join(", ")
                )));
            }
            let total = req.have.len() + req.want;
            let mut counts: Vec<(u32, usize)> = Vec::new();
            for h in req.have {
                if let Some(&i) = self.index.get(h) {
                    let z = self.zone_of[i as usize];
                    match counts.iter_mut().find(|(c, _)| *c == z) {
                        Some((_, c)) => *c += 1,
                        None => counts.push((z, 1)),
                    }
                }
            }
            fill.rule = Some(ZoneRule {
                sites,
                cap: total.div_ceil(sites),
                total,
                placed: counts.iter().map(|(_, c)| c).sum(),
                counts,
            });
        }
        let together = match (req.cues.keep_together, req.together_key) {
            (Some(true), Some(k)) => Some(k),
            _ => None,
        };
        let mut chooser = match together {
            Some(k) => Chooser::Hrw(k),
            None => Chooser::Rng(rng),
        };
        let scheme = req.cues.place;
        match scheme {
            None if together.is_none() => self.fill_default(&mut fill, &mut chooser),
            Some(PlaceScheme::Buddy) => self.fill_grouped(&mut fill, &mut chooser, rep, true),
            Some(PlaceScheme::Copyset) => self.fill_grouped(&mut fill, &mut chooser, rep, false),
            Some(PlaceScheme::MinCopy) if together.is_none() => self.fill_min_copy(&mut fill),
            Some(PlaceScheme::Spread) if fill.rule.is_none() => {
                self.fill_spread(&mut fill, &mut chooser)
            }
            Some(PlaceScheme::Local) => {
                self.fill_local(&mut fill, &mut chooser);
                self.fill_random(&mut fill, &mut chooser);
            }
            _ => self.fill_random(&mut fill, &mut chooser),
        }
        if fill.chosen.len() < req.want {
            return Err(self.shortfall(&fill, rep));
        }
        Ok(fill
            .chosen
            .iter()
            .map(|i| self.nodes[*i as usize].id)
            .collect())
    }

    /// Whether node `i` may take one more copy now.
    fn ok(&self, f: &Fill, i: u32) -> bool {
        let n = &self.nodes[i as usize];
        n.accepting
            && n.free > f.req.len
            && f.site.is_none_or(|z| self.zone_of[i as usize] == z)
            && !f.chosen.contains(&i)
            && !f.req.have.contains(&n.id)
            && !f.req.exclude.contains(&n.id)
            && f.rule
                .as_ref()
                .is_none_or(|r| r.allows(self.zone_of[i as usize]))
    }

    fn take(&self, f: &mut Fill, i: u32) {
        f.chosen.push(i);
        if let Some(r) = &mut f.rule {
            r.add(self.zone_of[i as usize]);
        }
    }

    fn pool_for(&self, f: &Fill) -> &[u32] {
        match f.site {
            Some(z) => &self.pool_in_zone[z as usize],
            None => &self.pool,
        }
    }

    fn weight_of(&self) -> impl Fn(u32) -> u64 + '_ {
        |i| self.nodes[i as usize].id.0
    }

    fn fill_random(&self, f: &mut Fill, ch: &mut Chooser) {
        let pool = self.pool_for(f);
        while f.chosen.len() < f.req.want {
            match ch.pick(pool, self.weight_of(), |i| self.ok(f, i)) {
                Some(i) => self.take(f, i),
                None => return,
            }
        }
    }

    /// No scheme asked for: random weighted by the square root of free
    /// space, so emptier nodes fill faster without starving the others.
    fn fill_default(&self, f: &mut Fill, ch: &mut Chooser) {
        let Chooser::Rng(rng) = ch else {
            return self.fill_random(f, ch);
        };
        // Weighted sampling without replacement (Efraimidis-Spirakis keys).
        let mut keyed: Vec<(f64, u32)> = self
            .pool_for(f)
            .iter()
            .map(|&i| {
                let w = (self.nodes[i as usize].free.max(1) as f64).sqrt();
                (rng.f64().max(f64::MIN_POSITIVE).powf(1.0 / w), i)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, i) in keyed {
            if f.chosen.len() == f.req.want {
                break;
            }
            if self.ok(f, i) {
                self.take(f, i);
            }
        }
    }

    fn fill_min_copy(&self, f: &mut Fill) {
        for &(_, _, i) in &self.load {
            if f.chosen.len() == f.req.want {
                break;
            }
            if self.ok(f, i) {
                self.take(f, i);
            }
        }
    }

    fn fill_spread(&self, f: &mut Fill, ch: &mut Chooser) {
        let zones: Vec<u32> = match f.site {
            Some(z) => vec![z],
            None => (0..self.zone_names.len() as u32).collect(),
        };
        let mut count = vec![0usize; self.zone_names.len()];
        for h in f.req.have {
            if let Some(&i) = self.index.get(h) {
                count[self.zone_of[i as usize] as usize] += 1;
            }
        }
        let mut open: Vec<u32> = zones
            .into_iter()
            .filter(|z| !self.pool_in_zone[*z as usize].is_empty())
            .collect();
        while f.chosen.len() < f.req.want && !open.is_empty() {
            let least = open.iter().map(|z| count[*z as usize]).min().unwrap_or(0);
            let tied: Vec<u32> = open
                .iter()
                .copied()
                .filter(|z| count[*z as usize] == least)
                .collect();
            let zone_weight = |z: u32| {
                self.zone_names[z as usize]
                    .bytes()
                    .fold(1u64 << 63, |h, b| splitmix(h ^ u64::from(b)))
            };
            let Some(z) = ch.pick(&tied, zone_weight, |_| true) else {
                break;
            };
            match ch.pick(&self.pool_in_zone[z as usize], self.weight_of(), |i| {
                self.ok(f, i)
            }) {
                Some(i) => {
                    self.take(f, i);
                    count[z as usize] += 1;
                }
                None => open.retain(|o| *o != z),
            }
        }
    }

    fn fill_local(&self, f: &mut Fill, ch: &mut Chooser) {
        if !f.req.have.is_empty() {
            return;
        }
        let Some(host) = f.req.writer_host else {
            debug!("place=local without a writer host: placing at random");
            return;
        };
        let local = self.by_host.get(host).map(Vec::as_slice).unwrap_or(&[]);
        match ch.pick(local, self.weight_of(), |i| self.ok(f, i)) {
            Some(i) => self.take(f, i),
            None => debug!(
                host,
                "place=local: no eligible storage node on the writer's host; placing at random"
            ),
        }
    }

    /// Buddy sets (`buddy`) or copysets: all copies within one group.
    fn fill_grouped(&mut self, f: &mut Fill, ch: &mut Chooser, rep: usize, buddy: bool) {
        let key = (rep, f.site);
        let cache = if buddy {
            &mut self.buddy
        } else {
            &mut self.copysets
        };
        let groups = match cache.remove(&key) {
            Some(g) => g,
            None if buddy => self.derive_buddy(rep, f.site),
            None => self.derive_copysets(rep, f.site),
        };
        let done = self.fill_from_groups(f, ch, &groups, buddy);
        let cache = if buddy {
            &mut self.buddy
        } else {
            &mut self.copysets
        };
        cache.insert(key, groups);
        if !done {
            debug!(
                scheme = if buddy { "buddy" } else { "copyset" },
                have = f.req.have.len(),
                "no group has enough eligible members; placing on any eligible node"
            );
            f.chosen.clear();
            if let Some(r) = &mut f.rule {
                r.counts.clear();
                r.placed = 0;
                for h in f.req.have {
                    if let Some(&i) = self.index.get(h) {
                        let z = self.zone_of[i as usize];
                        r.placed += 1;
                        match r.counts.iter_mut().find(|(c, _)| *c == z) {
                            Some((_, c)) => *c += 1,
                            None => r.counts.push((z, 1)),
                        }
                    }
                }
            }
            self.fill_random(f, ch);
        }
    }

    /// Try to take all `want` copies from group `g`, `first` (if any)
    /// included; leaves `f` unchanged on failure.
    fn try_group(&self, f: &mut Fill, ch: &mut Chooser, set: &[u32], first: Option<u32>) -> bool {
        let (chosen, placed, counts) = (
            f.chosen.len(),
            f.rule.as_ref().map(|r| r.placed),
            f.rule.as_ref().map(|r| r.counts.clone()),
        );
        if let Some(p) = first {
            if !self.ok(f, p) {
                return false;
            }
            self.take(f, p);
        }
        for i in ch.order(set, self.weight_of()) {
            if f.chosen.len() == f.req.want {
                break;
            }
            if self.ok(f, i) {
                self.take(f, i);
            }
        }
        if f.chosen.len() == f.req.want {
            return true;
        }
        f.chosen.truncate(chosen);
        if let (Some(r), Some(p), Some(c)) = (&mut f.rule, placed, counts) {
            r.placed = p;
            r.counts = c;
        }
        false
    }

    fn fill_from_groups(
        &self,
        f: &mut Fill,
        ch: &mut Chooser,
        groups: &Groups,
        buddy: bool,
    ) -> bool {
        if groups.sets.is_empty() {
            return false;
        }
        let set_weight = |g: u32| {
            groups.sets[g as usize]
                .iter()
                .fold(0u64, |h, i| splitmix(h ^ self.nodes[*i as usize].id.0))
        };
        if let Some(first) = f.req.have.first() {
            // Repair: complete a group that holds every existing copy.
            let Some(&i) = self.index.get(first) else {
                return false;
            };
            let have_idx: Vec<u32> = f
                .req
                .have
                .iter()
                .filter_map(|h| self.index.get(h).copied())
                .collect();
            let cands: Vec<u32> = groups.of_node[i as usize]
                .iter()
                .copied()
                .filter(|g| {
                    have_idx
                        .iter()
                        .all(|h| groups.sets[*g as usize].contains(h))
                })
                .collect();
            return ch
                .order(&cands, set_weight)
                .into_iter()
                .any(|g| self.try_group(f, ch, &groups.sets[g as usize], None));
        }
        if let Chooser::Rng(_) = ch {
            // A random eligible node, then its group: buddy sets are picked in
            // proportion to their size, copysets through a random primary.
            for _ in 0..16 {
                let Some(p) = ch.pick(self.pool_for(f), |_| 0, |i| self.ok(f, i)) else {
                    return false;
                };
                let gs = &groups.of_node[p as usize];
                if gs.is_empty() {
                    continue;
                }
                let g = match ch {
                    Chooser::Rng(rng) => gs[rng.usize(..gs.len())],
                    Chooser::Hrw(_) => unreachable!(),
                };
                let first = (!buddy).then_some(p);
                if self.try_group(f, ch, &groups.sets[g as usize], first) {
                    return true;
                }
            }
        }
        let all: Vec<u32> = (0..groups.sets.len() as u32).collect();
        ch.order(&all, set_weight)
            .into_iter()
            .any(|g| self.try_group(f, ch, &groups.sets[g as usize], None))
    }

    /// Why `want` nodes could not be found, in terms a user can act on.
    fn shortfall(&self, f: &Fill, rep: usize) -> Error {
        let req = f.req;
        let (mut down, mut full, mut other_zone, mut holding, mut failed, mut eligible) =
            (0, 0, 0, 0, 0, 0);
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.accepting {
                down += 1;
            } else if f.site.is_some_and(|z| self.zone_of[i] != z) {
                other_zone += 1;
            } else if req.have.contains(&n.id) {
                holding += 1;
            } else if req.exclude.contains(&n.id) {
                failed += 1;
            } else if n.free <= req.len {
                full += 1;
            } else {
                eligible += 1;
            }
        }
        let mut why = Vec::new();
        for (count, what) in [
            (down, "not live or not taking chunks".to_string()),
            (full, format!("without room for {}", format_bytes(req.len))),
            (
                other_zone,
                format!("outside zone {}", req.cues.site.as_deref().unwrap_or("")),
            ),
            (holding, "already holding a copy".into()),
            (failed, "failed during this write".into()),
        ] {
            if count > 0 {
                why.push(format!("{count} {what}"));
            }
        }
        let mut msg = format!(
            "cannot place {} cop{} (rep={rep}): {eligible} of {} storage node(s) can take one",
            req.want,
            if req.want == 1 { "y" } else { "ies" },
            self.nodes.len()
        );
        if !why.is_empty() {
            msg.push_str(&format!(" ({})", why.join(", ")));
        }
        if eligible >= req.want {
            if let Some(r) = &f.rule {
                msg.push_str(&format!(
                    ", but not over exactly {} zone(s) with at most {} copies in one (rep_sites={}); start nodes in more zones or lower rep_sites",
                    r.sites, r.cap, r.sites
                ));
                return Error::unavailable(msg);
            }
        }
        msg.push_str(". Start more nodes with 'cairn storage' or write with a lower rep");
        if full > 0 && eligible + full >= req.want {
            Error::no_space(msg)
        } else {
            Error::unavailable(msg)
        }
    }
}

#[cfg(test)]
mod tests;
