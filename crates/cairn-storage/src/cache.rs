//! The node's cache copies: chunks it holds for readers (prefetched by a
//! job, or read through for its host's readers) beyond the durable copies
//! meta placed here. They live in the chunk store like any chunk; this
//! index says which ones are cache copies, how large, and when each was
//! last read, so the node can keep them under its budget by evicting the
//! least recently read, and never a durable copy.
//!
//! The index is a small text file beside the store (`cache-copies`, one
//! `CHUNK LEN` line per copy), rewritten through a temporary file and a
//! rename on every change. Lost (a crash between the copy and the
//! rewrite), a cache copy looks durable to the node: it then stays until
//! its chunk is collected, which wastes room but loses nothing.

use cairn_types::{ChunkId, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const INDEX_FILE: &str = "cache-copies";

#[derive(Default)]
pub struct CacheIndex {
    entries: HashMap<ChunkId, (u64, u64)>,
    bytes: u64,
    /// Room promised to copies being fetched.
    reserved: u64,
    tick: u64,
    pub capacity: u64,
    path: PathBuf,
    /// Copies taken out of the index to be deleted, until they are: a
    /// recall that finds its chunk here waits for the delete instead of
    /// taking a copy about to vanish.
    pub evicting: std::collections::HashSet<ChunkId>,
}

impl CacheIndex {
    /// Load the index of `dir`; entries `present` rejects (chunks no
    /// longer in the store) are dropped.
    pub fn load(dir: &Path, capacity: u64, present: impl Fn(ChunkId) -> bool) -> CacheIndex {
        let path = dir.join(INDEX_FILE);
        let mut idx = CacheIndex {
            capacity,
            path,
            ..Default::default()
        };
        if let Ok(text) = std::fs::read_to_string(&idx.path) {
            for line in text.lines() {
                let mut parts = line.split_whitespace();
                let (Some(c), Some(l)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let (Ok(c), Ok(len)) = (c.parse::<ChunkId>(), l.parse::<u64>()) else {
                    continue;
                };
                if present(c) {
                    idx.insert(c, len);
                }
            }
        }
        idx
    }

    pub fn contains(&self, c: ChunkId) -> bool {
        self.entries.contains_key(&c)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A read of `c`: it is the most recently read now.
    pub fn touch(&mut self, c: ChunkId) {
        self.tick += 1;
        if let Some(e) = self.entries.get_mut(&c) {
            e.1 = self.tick;
        }
    }

    pub fn insert(&mut self, c: ChunkId, len: u64) {
        self.tick += 1;
        if let Some((old, _)) = self.entries.insert(c, (len, self.tick)) {
            self.bytes -= old;
        }
        self.bytes += len;
    }

    pub fn remove(&mut self, c: ChunkId) -> bool {
        match self.entries.remove(&c) {
            Some((len, _)) => {
                self.bytes -= len;
                true
            }
            None => false,
        }
    }

    /// Cache copies to evict, least recently read first, so that `need`
    /// more bytes fit the budget; None if they cannot fit even with every
    /// cache copy gone.
    pub fn victims(&self, need: u64) -> Option<Vec<ChunkId>> {
        if need > self.capacity {
            return None;
        }
        let mut over = (self.bytes + self.reserved + need).saturating_sub(self.capacity);
        if over == 0 {
            return Some(Vec::new());
        }
        let mut by_age: Vec<(u64, ChunkId, u64)> = self
            .entries
            .iter()
            .map(|(c, (len, t))| (*t, *c, *len))
            .collect();
        by_age.sort_unstable();
        let mut out = Vec::new();
        for (_, c, len) in by_age {
            if over == 0 {
                break;
            }
            out.push(c);
            over = over.saturating_sub(len);
        }
        Some(out)
    }

    /// Make room for a copy of `need` bytes about to be fetched: take the
    /// victims out of the index (the caller deletes them) and hold the room
    /// until [`CacheIndex::release`], so fetches running at once do not
    /// both count the same free room.
    pub fn reserve(&mut self, need: u64) -> Option<Vec<ChunkId>> {
        let victims = self.victims(need)?;
        for v in &victims {
            self.remove(*v);
            self.evicting.insert(*v);
        }
        self.reserved += need;
        Some(victims)
    }

    pub fn release(&mut self, need: u64) {
        self.reserved = self.reserved.saturating_sub(need);
    }

    /// Write the index (temporary file, then rename).
    pub fn save(&self) -> Result<()> {
        let mut text = String::with_capacity(self.entries.len() * 42);
        for (c, (len, _)) in &self.entries {
            text.push_str(&format!("{c} {len}\n"));
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_read_within_budget_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = CacheIndex::load(dir.path(), 100, |_| true);
        for i in 1..=4 {
            idx.insert(ChunkId(i), 25);
        }
        idx.touch(ChunkId(1));
        assert_eq!(idx.victims(0), Some(vec![]));
        assert_eq!(idx.victims(30), Some(vec![ChunkId(2), ChunkId(3)]));
        assert_eq!(idx.victims(101), None);
        // Two fetches at once each get room of their own.
        assert_eq!(idx.reserve(25), Some(vec![ChunkId(2)]));
        assert_eq!(idx.reserve(25), Some(vec![ChunkId(3)]));
        idx.insert(ChunkId(5), 25);
        idx.release(25);
        idx.release(25);
        assert_eq!(idx.bytes(), 75);
        idx.save().unwrap();
        let again = CacheIndex::load(dir.path(), 100, |c| c != ChunkId(4));
        assert_eq!((again.len(), again.bytes()), (2, 50));
        assert!(again.contains(ChunkId(1)) && again.contains(ChunkId(5)));
        assert!(!again.contains(ChunkId(4)) && !again.contains(ChunkId(2)));
    }
}
