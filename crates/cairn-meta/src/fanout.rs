//! The prefetch fan-out scheduler: which node copies which chunk from whom,
//! next. Pure (no I/O, no clock), so meta's prefetch worker and the
//! simulator (`cairn simulate --prefetch`) drive the same code.
//!
//! DI-store's scheduler, made chunk-pipelined: every holder of a chunk
//! (a durable copy, or a destination that just received it) offers
//! `source_slots` concurrent uploads; every destination pulls up to
//! `dest_slots` chunks at once, lowest chunk first, looking at most
//! `lookahead` chunks past the first it lacks. A node that has a chunk is a
//! source for it at once, so chunk k+1 flows from the root while chunk k is
//! forwarded further down: the copies spread as a tree whose fan-out per
//! holder is bounded, and the upload any one node does is bounded by its
//! slots, not by the group's size. Sources in the destination's zone are
//! preferred.
//!
//! Failures: a transfer that failed because of its source is retried from
//! another (up to `max_attempts` per chunk and destination); one that
//! failed because of its destination (unreachable, no room) skips that
//! destination. A node that dies is neither a source nor a destination
//! until it is alive again, when it is filled in.

use cairn_types::NodeId;
use std::collections::{HashMap, HashSet, VecDeque};

#[derive(Clone, Debug)]
pub struct FanoutConfig {
    /// Uploads one holder serves at once.
    pub source_slots: usize,
    /// Chunks one destination fetches at once.
    pub dest_slots: usize,
    /// Tries of one chunk for one destination before giving up on it.
    pub max_attempts: u32,
    /// How many chunks without a free source a destination passes over
    /// (rarest first) before it waits.
    pub lookahead: usize,
}

impl Default for FanoutConfig {
    fn default() -> FanoutConfig {
        FanoutConfig {
            source_slots: 2,
            dest_slots: 2,
            max_attempts: 4,
            lookahead: 64,
        }
    }
}

/// One chunk copy to make: `dst` fetches chunk number `chunk` from `src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transfer {
    pub chunk: usize,
    pub src: NodeId,
    pub dst: NodeId,
}

/// Whose fault a failed transfer was.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The source could not serve the chunk: try another.
    Source,
    /// The source does not hold the chunk (any more): it is no source for it.
    SourceLost,
    /// The destination cannot take copies (no room, unreachable): skip it.
    Destination(String),
}

struct Member {
    id: NodeId,
    zone: String,
    alive: bool,
    dest: bool,
    skipped: Option<String>,
    up: usize,
    down: usize,
    /// Per chunk: holds it.
    has: Vec<bool>,
    /// Per chunk: listed in `avail` (as a source with a free slot, maybe).
    listed: Vec<bool>,
    /// First chunk it may still want.
    next: usize,
    /// Uploads served in all, and the most at once.
    uploads: u64,
    peak_up: usize,
}

pub struct Fanout {
    cfg: FanoutConfig,
    nchunks: usize,
    members: Vec<Member>,
    index: HashMap<NodeId, usize>,
    inflight: HashSet<(usize, usize)>,
    attempts: HashMap<(usize, usize), u32>,
    gave_up: HashSet<(usize, usize)>,
    /// (chunk, destination, source) that failed: that destination tries
    /// other sources for that chunk.
    bad: HashSet<(usize, usize, usize)>,
    /// Per chunk: how many nodes hold it.
    count: Vec<u32>,
    /// Per chunk: holders that may have a free upload slot (checked when
    /// picked; re-listed when a slot frees).
    avail: Vec<Vec<usize>>,
    /// Per chunk: destinations that found no free source for it.
    waiting: Vec<VecDeque<usize>>,
    in_waiting: HashSet<(usize, usize)>,
    ready: VecDeque<usize>,
    in_ready: Vec<bool>,
    pub copies_done: u64,
}

/// Progress of a fan-out, for status and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FanoutProgress {
    /// Live destinations not skipped, and those holding every chunk.
    pub dests: u64,
    pub dests_done: u64,
    /// Copies the live destinations still lack, and are in flight.
    pub copies_missing: u64,
    pub inflight: u64,
    pub gave_up: u64,
}

impl Fanout {
    pub fn new(nchunks: usize, cfg: FanoutConfig) -> Fanout {
        Fanout {
            cfg,
            nchunks,
            members: Vec::new(),
            index: HashMap::new(),
            inflight: HashSet::new(),
            attempts: HashMap::new(),
            gave_up: HashSet::new(),
            bad: HashSet::new(),
            count: vec![0; nchunks],
            avail: vec![Vec::new(); nchunks],
            waiting: vec![VecDeque::new(); nchunks],
            in_waiting: HashSet::new(),
            ready: VecDeque::new(),
            in_ready: Vec::new(),
            copies_done: 0,
        }
    }

    pub fn chunks(&self) -> usize {
        self.nchunks
    }

    fn member(&mut self, id: NodeId, zone: &str) -> usize {
        if let Some(&i) = self.index.get(&id) {
            return i;
        }
        let i = self.members.len();
        self.members.push(Member {
            id,
            zone: zone.to_string(),
            alive: true,
            dest: false,
            skipped: None,
            up: 0,
            down: 0,
            has: vec![false; self.nchunks],
            listed: vec![false; self.nchunks],
            next: 0,
            uploads: 0,
            peak_up: 0,
        });
        self.in_ready.push(false);
        self.index.insert(id, i);
        i
    }

    fn list(&mut self, m: usize, chunk: usize) {
        if !self.members[m].listed[chunk] {
            self.members[m].listed[chunk] = true;
            self.avail[chunk].push(m);
        }
    }

    fn make_ready(&mut self, m: usize) {
        if !self.in_ready[m] {
            self.in_ready[m] = true;
            self.ready.push_back(m);
        }
    }

    /// Wake up to `n` destinations waiting for a source of `chunk`.
    fn wake(&mut self, chunk: usize, n: usize) {
        for _ in 0..n {
            let Some(d) = self.waiting[chunk].pop_front() else {
                return;
            };
            self.in_waiting.remove(&(chunk, d));
            self.make_ready(d);
        }
    }

    /// `id` holds chunk number `chunk` (a durable copy, or a cache copy
    /// made earlier): it can serve it.
    pub fn add_holder(&mut self, id: NodeId, zone: &str, chunk: usize) {
        let m = self.member(id, zone);
        if chunk >= self.nchunks || self.members[m].has[chunk] {
            return;
        }
        self.members[m].has[chunk] = true;
        self.count[chunk] += 1;
        self.list(m, chunk);
        let slots = self.cfg.source_slots;
        self.wake(chunk, slots);
    }

    /// `id` should hold every chunk. Adding it again revives a skipped one.
    pub fn add_dest(&mut self, id: NodeId, zone: &str) {
        let m = self.member(id, zone);
        let mem = &mut self.members[m];
        mem.dest = true;
        mem.alive = true;
        mem.skipped = None;
        mem.next = 0;
        self.make_ready(m);
    }

    pub fn is_dest(&self, id: NodeId) -> bool {
        self.index
            .get(&id)
            .is_some_and(|&m| self.members[m].dest && self.members[m].skipped.is_none())
    }

    pub fn skipped(&self) -> Vec<(NodeId, String)> {
        self.members
            .iter()
            .filter_map(|m| m.skipped.clone().map(|s| (m.id, s)))
            .collect()
    }

    /// A node died (false) or came back (true). A dead node is no source
    /// and no destination; a returning destination is filled in.
    pub fn set_alive(&mut self, id: NodeId, alive: bool) {
        let Some(&m) = self.index.get(&id) else {
            return;
        };
        if self.members[m].alive == alive {
            return;
        }
        self.members[m].alive = alive;
        if alive {
            self.members[m].next = 0;
            for c in 0..self.nchunks {
                if self.members[m].has[c] {
                    self.list(m, c);
                    self.wake(c, 1);
                }
            }
            if self.members[m].dest {
                self.make_ready(m);
            }
        }
    }

    /// Make every live destination look again for work: wake-ups are
    /// targeted (a freed slot wakes one waiter), so a driver calls this
    /// now and then to pick up any waiter a wake-up missed.
    pub fn poke(&mut self) {
        for m in 0..self.members.len() {
            let mem = &self.members[m];
            if mem.dest && mem.alive && mem.skipped.is_none() && mem.has.iter().any(|h| !h) {
                self.make_ready(m);
            }
        }
    }

    /// Whether `id` holds chunk `chunk` as far as the fan-out knows.
    pub fn holds(&self, id: NodeId, chunk: usize) -> bool {
        self.index
            .get(&id)
            .is_some_and(|&m| self.members[m].has.get(chunk).copied().unwrap_or(false))
    }

    fn wants(&self, d: usize, k: usize) -> bool {
        !self.members[d].has[k]
            && !self.inflight.contains(&(k, d))
            && !self.gave_up.contains(&(k, d))
    }

    fn pick_source(&mut self, k: usize, d: usize) -> Option<usize> {
        let slots = self.cfg.source_slots;
        let mut best = None;
        let mut i = self.avail[k].len();
        let mut scanned = 0;
        while i > 0 && scanned < 16 {
            i -= 1;
            let s = self.avail[k][i];
            let m = &self.members[s];
            if !m.alive || !m.has[k] || m.up >= slots {
                // Re-listed when it frees a slot or comes back.
                self.members[s].listed[k] = false;
                self.avail[k].swap_remove(i);
                continue;
            }
            if s == d || self.bad.contains(&(k, d, s)) {
                continue;
            }
            scanned += 1;
            if m.zone == self.members[d].zone {
                return Some(s);
            }
            best.get_or_insert(s);
        }
        best
    }

    /// The transfers to start now.
    pub fn assign(&mut self) -> Vec<Transfer> {
        let mut out = Vec::new();
        while let Some(d) = self.ready.pop_front() {
            self.in_ready[d] = false;
            {
                let m = &self.members[d];
                if !m.alive || !m.dest || m.skipped.is_some() {
                    continue;
                }
            }
            // Skip what is settled at the front.
            while self.members[d].next < self.nchunks {
                let k = self.members[d].next;
                if self.members[d].has[k] || self.gave_up.contains(&(k, d)) {
                    self.members[d].next += 1;
                } else {
                    break;
                }
            }
            // Rarest first (BitTorrent's rule): the chunks fewest nodes
            // hold, ties broken differently per destination, so the
            // durable holders seed every chunk once early and every node
            // soon has something others lack to upload.
            let mut wanted: Vec<(u32, usize, usize)> = (self.members[d].next..self.nchunks)
                .filter(|&k| self.wants(d, k))
                .map(|k| (self.count[k], (k + d * 7) % self.nchunks, k))
                .collect();
            wanted.sort_unstable();
            let mut missed = 0;
            for (_, _, k) in wanted {
                if self.members[d].down >= self.cfg.dest_slots || missed >= self.cfg.lookahead {
                    break;
                }
                match self.pick_source(k, d) {
                    Some(s) => {
                        let src = &mut self.members[s];
                        src.up += 1;
                        src.uploads += 1;
                        src.peak_up = src.peak_up.max(src.up);
                        let src_id = src.id;
                        self.members[d].down += 1;
                        self.inflight.insert((k, d));
                        out.push(Transfer {
                            chunk: k,
                            src: src_id,
                            dst: self.members[d].id,
                        });
                    }
                    None => {
                        missed += 1;
                        if self.in_waiting.insert((k, d)) {
                            self.waiting[k].push_back(d);
                        }
                    }
                }
            }
        }
        out
    }

    fn finish(&mut self, t: &Transfer) -> Option<(usize, usize)> {
        let (s, d) = (*self.index.get(&t.src)?, *self.index.get(&t.dst)?);
        if !self.inflight.remove(&(t.chunk, d)) {
            return None;
        }
        self.members[s].up = self.members[s].up.saturating_sub(1);
        self.members[d].down = self.members[d].down.saturating_sub(1);
        // The source has a free slot again: for each chunk it holds.
        for c in 0..self.nchunks {
            if self.members[s].has[c] && self.members[s].alive {
                self.list(s, c);
            }
        }
        for c in 0..self.nchunks {
            if self.members[s].has[c] && !self.waiting[c].is_empty() {
                self.wake(c, 1);
                break;
            }
        }
        Some((s, d))
    }

    /// `t` succeeded: its destination holds the chunk and serves it on.
    pub fn done(&mut self, t: &Transfer) {
        let Some((_, d)) = self.finish(t) else {
            return;
        };
        if !self.members[d].has[t.chunk] {
            self.members[d].has[t.chunk] = true;
            self.count[t.chunk] += 1;
            self.copies_done += 1;
        }
        if self.members[d].alive {
            self.list(d, t.chunk);
            let slots = self.cfg.source_slots;
            self.wake(t.chunk, slots);
        }
        self.make_ready(d);
    }

    /// `t` failed.
    pub fn failed(&mut self, t: &Transfer, why: Failure) {
        let Some((s, d)) = self.finish(t) else {
            return;
        };
        match why {
            Failure::Destination(msg) => self.members[d].skipped = Some(msg),
            Failure::Source | Failure::SourceLost => {
                if matches!(why, Failure::SourceLost) && self.members[s].has[t.chunk] {
                    self.members[s].has[t.chunk] = false;
                    self.count[t.chunk] -= 1;
                }
                self.bad.insert((t.chunk, d, s));
                let n = self.attempts.entry((t.chunk, d)).or_default();
                *n += 1;
                if *n >= self.cfg.max_attempts {
                    self.gave_up.insert((t.chunk, d));
                }
            }
        }
        self.make_ready(d);
    }

    /// Every live destination not skipped holds every chunk (or gave up
    /// on it), and nothing is in flight.
    pub fn is_complete(&self) -> bool {
        self.inflight.is_empty() && {
            let p = self.progress();
            p.dests_done == p.dests
        }
    }

    /// Nothing in flight and nothing startable, yet incomplete: no live
    /// node holds some chunk a destination lacks.
    pub fn is_stalled(&self) -> bool {
        self.inflight.is_empty() && self.ready.is_empty() && !self.is_complete()
    }

    /// Chunks no live node holds.
    pub fn sourceless_chunks(&self) -> Vec<usize> {
        (0..self.nchunks)
            .filter(|&c| !self.members.iter().any(|m| m.alive && m.has[c]))
            .collect()
    }

    pub fn progress(&self) -> FanoutProgress {
        let mut p = FanoutProgress {
            inflight: self.inflight.len() as u64,
            ..Default::default()
        };
        for (i, m) in self.members.iter().enumerate() {
            if !m.dest || !m.alive || m.skipped.is_some() {
                continue;
            }
            p.dests += 1;
            let lacking = (0..self.nchunks)
                .filter(|&c| !m.has[c] && !self.gave_up.contains(&(c, i)))
                .count() as u64;
            let given_up = (0..self.nchunks)
                .filter(|&c| self.gave_up.contains(&(c, i)))
                .count() as u64;
            p.copies_missing += lacking;
            p.gave_up += given_up;
            // Done: nothing left that can still be made.
            if lacking == 0 {
                p.dests_done += 1;
            }
        }
        p
    }

    /// Per node: uploads served and the most at once (never above
    /// `source_slots`).
    pub fn upload_counts(&self) -> Vec<(NodeId, u64, usize)> {
        self.members
            .iter()
            .map(|m| (m.id, m.uploads, m.peak_up))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run transfers to completion in rounds (every transfer of a round
    /// takes one step), failing those `fail` picks.
    fn run(f: &mut Fanout, mut fail: impl FnMut(&Transfer) -> Option<Failure>) -> usize {
        let mut rounds = 0;
        loop {
            let ts = f.assign();
            if ts.is_empty() {
                return rounds;
            }
            rounds += 1;
            for t in &ts {
                match fail(t) {
                    Some(why) => f.failed(t, why),
                    None => f.done(t),
                }
            }
            assert!(rounds < 10_000, "no progress");
        }
    }

    #[test]
    fn every_destination_gets_every_chunk_with_bounded_uploads() {
        for n in [1usize, 4, 12, 100] {
            let chunks = 8;
            let mut f = Fanout::new(chunks, FanoutConfig::default());
            for c in 0..chunks {
                f.add_holder(NodeId(0), "z", c);
            }
            for i in 1..=n as u64 {
                f.add_dest(NodeId(i), if i % 2 == 0 { "a" } else { "b" });
            }
            let rounds = run(&mut f, |_| None);
            assert!(f.is_complete(), "n={n}");
            for i in 1..=n as u64 {
                for c in 0..chunks {
                    assert!(f.holds(NodeId(i), c));
                }
            }
            assert_eq!(f.copies_done, (n * chunks) as u64);
            for (_, _, peak) in f.upload_counts() {
                assert!(peak <= 2);
            }
            // A tree: rounds grow with log(n) plus the chunk count, not n.
            let bound = chunks * 2 + 2 * (usize::BITS - n.leading_zeros()) as usize + 4;
            assert!(rounds <= bound, "n={n}: {rounds} rounds > {bound}");
        }
    }

    #[test]
    fn source_failures_retry_elsewhere_and_dead_destinations_are_skipped() {
        let mut f = Fanout::new(4, FanoutConfig::default());
        for c in 0..4 {
            f.add_holder(NodeId(0), "z", c);
            f.add_holder(NodeId(1), "z", c);
        }
        for i in 2..10 {
            f.add_dest(NodeId(i), "z");
        }
        let mut failed_once = HashSet::new();
        run(&mut f, |t| {
            if t.dst == NodeId(5) {
                return Some(Failure::Destination("no room".into()));
            }
            if t.src == NodeId(0) && failed_once.insert((t.chunk, t.dst)) {
                return Some(Failure::Source);
            }
            None
        });
        assert!(f.is_complete());
        assert_eq!(f.skipped(), vec![(NodeId(5), "no room".to_string())]);
        for i in (2..10).filter(|i| *i != 5) {
            assert!((0..4).all(|c| f.holds(NodeId(i), c)), "node {i}");
        }
        // A node dies mid-way and returns: it is filled in.
        let mut g = Fanout::new(2, FanoutConfig::default());
        g.add_holder(NodeId(0), "z", 0);
        g.add_holder(NodeId(0), "z", 1);
        g.add_dest(NodeId(1), "z");
        g.add_dest(NodeId(2), "z");
        g.set_alive(NodeId(2), false);
        run(&mut g, |_| None);
        assert!(g.is_complete());
        assert!(!g.holds(NodeId(2), 0));
        g.set_alive(NodeId(2), true);
        assert!(!g.is_complete());
        run(&mut g, |_| None);
        assert!(g.is_complete() && g.holds(NodeId(2), 1));
    }

    #[test]
    fn a_chunk_without_a_live_source_stalls() {
        let mut f = Fanout::new(2, FanoutConfig::default());
        f.add_holder(NodeId(0), "z", 0);
        f.add_holder(NodeId(9), "z", 1);
        f.set_alive(NodeId(9), false);
        f.add_dest(NodeId(1), "z");
        run(&mut f, |_| None);
        assert!(f.is_stalled());
        assert_eq!(f.sourceless_chunks(), vec![1]);
        f.set_alive(NodeId(9), true);
        run(&mut f, |_| None);
        assert!(f.is_complete());
    }
}
