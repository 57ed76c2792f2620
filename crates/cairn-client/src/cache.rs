//! The client's caches. Chunk data never goes stale (chunks are immutable),
//! so the chunk cache needs only a byte budget. File metadata can go stale:
//! whether a cached entry may be used is decided per open by the
//! consistency cues (see `Client::open_cued`).

use bytes::Bytes;
use cairn_proto::OpenFile;
use cairn_types::{CairnPath, ChunkId};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// Byte ranges of chunks, least recently used evicted first once the cached
/// bytes exceed the budget.
pub(crate) struct ChunkCache {
    budget: u64,
    inner: Mutex<ChunkLru>,
}

#[derive(Default)]
struct ChunkLru {
    bytes: u64,
    tick: u64,
    /// (chunk, start) -> (data, last use)
    entries: HashMap<(ChunkId, u64), (Bytes, u64)>,
    /// last use -> key
    order: BTreeMap<u64, (ChunkId, u64)>,
}

impl ChunkCache {
    pub fn new(budget: u64) -> ChunkCache {
        ChunkCache {
            budget,
            inner: Mutex::new(ChunkLru::default()),
        }
    }

    /// Bytes `[start, start+len)` of `chunk`, if a cached range starting at
    /// `start` or at 0 covers them.
    pub fn get(&self, chunk: ChunkId, start: u64, len: u64) -> Option<Bytes> {
        if self.budget == 0 {
            return None;
        }
        let mut lru = self.inner.lock().unwrap();
        for from in [start, 0] {
            if let Some(data) = lru.touch((chunk, from)) {
                let (a, b) = ((start - from) as usize, (start - from + len) as usize);
                if b <= data.len() {
                    return Some(data.slice(a..b));
                }
            }
        }
        None
    }

    pub fn insert(&self, chunk: ChunkId, start: u64, data: Bytes) {
        let len = data.len() as u64;
        // One range may take a quarter of the budget: a long streaming read
        // must not flush everything else for data read once.
        if len == 0 || len > self.budget / 4 {
            return;
        }
        let mut lru = self.inner.lock().unwrap();
        lru.tick += 1;
        let tick = lru.tick;
        if let Some((old, t)) = lru.entries.insert((chunk, start), (data, tick)) {
            lru.order.remove(&t);
            lru.bytes -= old.len() as u64;
        }
        lru.order.insert(tick, (chunk, start));
        lru.bytes += len;
        while lru.bytes > self.budget {
            let Some((_, key)) = lru.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = lru.entries.remove(&key) {
                lru.bytes -= d.len() as u64;
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.inner.lock().unwrap().bytes
    }
}

impl ChunkLru {
    fn touch(&mut self, key: (ChunkId, u64)) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        let (data, t) = self.entries.get_mut(&key)?;
        let old = std::mem::replace(t, tick);
        let data = data.clone();
        self.order.remove(&old);
        self.order.insert(tick, key);
        Some(data)
    }
}

/// What an open learned from meta, and when.
#[derive(Clone)]
pub(crate) struct CachedOpen {
    pub open: OpenFile,
    /// When meta last confirmed this is the current version.
    pub fetched: Instant,
    /// When the read capabilities in `open` were signed.
    pub caps_at: Instant,
}

/// File metadata by path, at most `cap` entries (the oldest half dropped
/// when full).
pub(crate) struct MetaCache {
    cap: usize,
    entries: Mutex<HashMap<CairnPath, CachedOpen>>,
}

impl MetaCache {
    pub fn new(cap: usize) -> MetaCache {
        MetaCache {
            cap,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, path: &CairnPath) -> Option<CachedOpen> {
        self.entries.lock().unwrap().get(path).cloned()
    }

    pub fn insert(&self, path: &CairnPath, open: OpenFile) {
        if self.cap == 0 {
            return;
        }
        let mut m = self.entries.lock().unwrap();
        if m.len() >= self.cap && !m.contains_key(path) {
            let mut ages: Vec<Instant> = m.values().map(|c| c.fetched).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            m.retain(|_, c| c.fetched > cut);
        }
        let now = Instant::now();
        m.insert(
            path.clone(),
            CachedOpen {
                open,
                fetched: now,
                caps_at: now,
            },
        );
    }

    /// Meta confirmed the cached version of `path` is current; its
    /// effective cues are `cues`.
    pub fn confirm(&self, path: &CairnPath, cues: cairn_types::Cues) {
        if let Some(c) = self.entries.lock().unwrap().get_mut(path) {
            c.fetched = Instant::now();
            c.open.cues = cues;
        }
    }

    /// This client changed or removed `path` (or something under it).
    pub fn invalidate(&self, path: &CairnPath) {
        let mut m = self.entries.lock().unwrap();
        m.retain(|p, _| !p.starts_with(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_cache_stays_within_budget_and_serves_subranges() {
        let c = ChunkCache::new(1000);
        c.insert(ChunkId(1), 0, Bytes::from(vec![1u8; 200]));
        assert_eq!(c.get(ChunkId(1), 50, 100).unwrap().len(), 100);
        assert!(c.get(ChunkId(1), 150, 100).is_none());
        for i in 2..20 {
            c.insert(ChunkId(i), 0, Bytes::from(vec![i as u8; 200]));
            assert!(c.bytes() <= 1000);
        }
        // Oldest gone, newest there.
        assert!(c.get(ChunkId(1), 0, 10).is_none());
        assert_eq!(c.get(ChunkId(19), 0, 200).unwrap()[0], 19);
        // Too big for the budget: not cached.
        c.insert(ChunkId(99), 0, Bytes::from(vec![0u8; 300]));
        assert!(c.get(ChunkId(99), 0, 1).is_none());
    }
}
