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
/// bytes exceed the budget. With a disk tier, every range cached is also
/// written (off the async threads) to a file in a directory with a budget
/// of its own, which outlives the process, and read back from there when
/// memory no longer has it (checked against the CRC32C kept beside it).
/// Disk writes are best effort: at most [`DISK_INFLIGHT`] bytes wait for
/// the disk, and a range that would go past that is not written, so a
/// slow cache disk neither holds memory nor slows reads down.
pub(crate) struct ChunkCache {
    budget: u64,
    inner: Mutex<Lru<Bytes>>,
    disk: Option<std::sync::Arc<DiskCache>>,
}

/// Bytes handed to the disk tier and not yet written.
const DISK_INFLIGHT: u64 = 32 << 20;

/// A cached range: a chunk and the offset the range starts at.
type Key = (ChunkId, u64);

/// Least-recently-used bookkeeping by bytes, shared by the memory tier (the
/// values are the bytes) and the disk tier (the values are `()`, the bytes
/// live in files).
struct Lru<V> {
    bytes: u64,
    tick: u64,
    /// key -> (value, its size, last use)
    entries: HashMap<Key, (V, u64, u64)>,
    /// last use -> key
    order: BTreeMap<u64, Key>,
}

impl<V: Clone> Lru<V> {
    fn new() -> Lru<V> {
        Lru {
            bytes: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The value of `key`, now the most recently used.
    fn touch(&mut self, key: Key) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (v, _, t) = self.entries.get_mut(&key)?;
        let old = std::mem::replace(t, tick);
        let v = v.clone();
        self.order.remove(&old);
        self.order.insert(tick, key);
        Some(v)
    }

    /// Add (or replace) `key`, then evict the least recently used until at
    /// most `budget` bytes remain; returns the evicted keys.
    fn insert(&mut self, key: Key, v: V, size: u64, budget: u64) -> Vec<Key> {
        self.remove(key);
        self.tick += 1;
        let tick = self.tick;
        self.entries.insert(key, (v, size, tick));
        self.order.insert(tick, key);
        self.bytes += size;
        let mut evicted = Vec::new();
        while self.bytes > budget {
            let Some((_, k)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, size, _)) = self.entries.remove(&k) {
                self.bytes -= size;
                evicted.push(k);
            }
        }
        evicted
    }

    fn remove(&mut self, key: Key) {
        if let Some((_, size, t)) = self.entries.remove(&key) {
            self.bytes -= size;
            self.order.remove(&t);
        }
    }
}

/// The on-disk tier: one file per range, `<chunk>-<start>`, whose first 4
/// bytes are the CRC32C of the rest; oldest files go first past the budget.
struct DiskCache {
    dir: std::path::PathBuf,
    budget: u64,
    state: Mutex<Lru<()>>,
    /// Bytes queued for writing (see [`DISK_INFLIGHT`]).
    inflight: std::sync::atomic::AtomicU64,
}

impl DiskCache {
    /// Take over what an earlier process left in `dir` (chunks never
    /// change, so a range cached once stays right; files are checked on
    /// every read), oldest first, within the budget; anything else there
    /// is removed.
    fn open(dir: &std::path::Path, budget: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let key = e.file_name().to_str().and_then(|n| {
                let (c, s) = n.split_once('-')?;
                Some((c.parse::<ChunkId>().ok()?, s.parse::<u64>().ok()?))
            });
            let meta = e.metadata()?;
            match key {
                Some(k) if meta.is_file() && meta.len() > 4 => {
                    let when = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    found.push((when, k, meta.len() - 4));
                }
                _ => {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        found.sort();
        let cache = DiskCache {
            dir: dir.to_path_buf(),
            budget,
            state: Mutex::new(Lru::new()),
            inflight: std::sync::atomic::AtomicU64::new(0),
        };
        let mut drop = Vec::new();
        {
            let mut st = cache.state.lock().unwrap();
            for (_, k, len) in found {
                drop.extend(st.insert(k, (), len, budget));
            }
        }
        for k in drop {
            let _ = std::fs::remove_file(cache.file(k));
        }
        Ok(cache)
    }

    fn file(&self, key: (ChunkId, u64)) -> std::path::PathBuf {
        self.dir.join(format!("{}-{}", key.0, key.1))
    }

    /// The cached range (its start, and its bytes) holding `[start,
    /// start+len)` of `chunk`: the one starting there, else the whole chunk.
    fn find(&self, chunk: ChunkId, start: u64, len: u64) -> Option<(u64, Bytes)> {
        [start, 0]
            .into_iter()
            .find_map(|from| Some((from, self.get((chunk, from), start - from + len)?)))
    }

    /// The cached range at `key` if it holds at least `need` bytes: the
    /// file is read only then.
    fn get(&self, key: (ChunkId, u64), need: u64) -> Option<Bytes> {
        {
            let mut st = self.state.lock().unwrap();
            if st.entries.get(&key)?.1 < need {
                return None;
            }
            st.touch(key)?;
        }
        let raw = std::fs::read(self.file(key)).ok()?;
        let (crc, data) = raw.split_at_checked(4)?;
        if u32::from_le_bytes(crc.try_into().ok()?) != crc32c::crc32c(data) {
            tracing::warn!(path = %self.file(key).display(), "cache file corrupt; dropped");
            self.remove(key);
            return None;
        }
        Some(Bytes::copy_from_slice(data))
    }

    fn put(&self, key: (ChunkId, u64), data: &[u8]) {
        let len = data.len() as u64;
        if len > self.budget / 4 {
            return;
        }
        let written = std::fs::File::create(self.file(key)).and_then(|mut f| {
            use std::io::Write;
            f.write_all(&crc32c::crc32c(data).to_le_bytes())?;
            f.write_all(data)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(self.file(key));
            return; // a full or failing cache disk only costs cache hits
        }
        let evicted = self.state.lock().unwrap().insert(key, (), len, self.budget);
        for k in evicted {
            let _ = std::fs::remove_file(self.file(k));
        }
    }

    fn remove(&self, key: (ChunkId, u64)) {
        self.state.lock().unwrap().remove(key);
        let _ = std::fs::remove_file(self.file(key));
    }

    fn bytes(&self) -> u64 {
        self.state.lock().unwrap().bytes
    }
}

/// Bytes `[start, start+len)` of a chunk out of a cached range of it that
/// begins at `from`, if it holds them.
fn fits(from: u64, data: Bytes, start: u64, len: u64) -> Option<Bytes> {
    let (a, b) = ((start - from) as usize, (start - from + len) as usize);
    (b <= data.len()).then(|| data.slice(a..b))
}

impl ChunkCache {
    pub fn new(budget: u64) -> ChunkCache {
        ChunkCache {
            budget,
            inner: Mutex::new(Lru::new()),
            disk: None,
        }
    }

    /// With a disk tier of `disk_budget` bytes in `dir` (emptied first).
    pub fn with_disk(
        budget: u64,
        dir: &std::path::Path,
        disk_budget: u64,
    ) -> std::io::Result<ChunkCache> {
        Ok(ChunkCache {
            budget,
            inner: Mutex::new(Lru::new()),
            disk: Some(std::sync::Arc::new(DiskCache::open(dir, disk_budget)?)),
        })
    }

    /// Bytes `[start, start+len)` of `chunk`, if a cached range starting at
    /// `start` or at 0 covers them. The disk tier is read on this thread:
    /// async code uses [`Self::get_off_thread`].
    #[cfg(test)]
    pub fn get(&self, chunk: ChunkId, start: u64, len: u64) -> Option<Bytes> {
        if let Some(hit) = self.get_memory(chunk, start, len) {
            return Some(hit);
        }
        let found = self.disk.as_ref().and_then(|d| d.find(chunk, start, len));
        self.disk_outcome(chunk, start, len, found)
    }

    /// [`Self::get`] with the disk tier read on the blocking pool, so a
    /// slow cache disk never stalls the runtime's threads.
    pub async fn get_off_thread(&self, chunk: ChunkId, start: u64, len: u64) -> Option<Bytes> {
        if let Some(hit) = self.get_memory(chunk, start, len) {
            return Some(hit);
        }
        let found = match self.disk.clone() {
            Some(d) => tokio::task::spawn_blocking(move || d.find(chunk, start, len))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        self.disk_outcome(chunk, start, len, found)
    }

    fn get_memory(&self, chunk: ChunkId, start: u64, len: u64) -> Option<Bytes> {
        if self.budget == 0 {
            return None;
        }
        let mut lru = self.inner.lock().unwrap();
        for from in [start, 0] {
            if let Some(hit) = lru
                .touch((chunk, from))
                .and_then(|d| fits(from, d, start, len))
            {
                cairn_metrics::global().cache_lookup("chunks", "memory");
                return Some(hit);
            }
        }
        None
    }

    /// The outcome of a disk-tier lookup: a range found goes back into
    /// memory (it is being used again).
    fn disk_outcome(
        &self,
        chunk: ChunkId,
        start: u64,
        len: u64,
        found: Option<(u64, Bytes)>,
    ) -> Option<Bytes> {
        let metrics = cairn_metrics::global();
        match found
            .and_then(|(from, data)| Some((from, fits(from, data.clone(), start, len)?, data)))
        {
            Some((from, hit, data)) => {
                self.insert_memory(chunk, from, data);
                metrics.cache_lookup("chunks", "disk");
                Some(hit)
            }
            None => {
                metrics.cache_lookup("chunks", "miss");
                None
            }
        }
    }

    pub fn insert(&self, chunk: ChunkId, start: u64, data: Bytes) {
        if let Some(d) = &self.disk {
            use std::sync::atomic::Ordering::Relaxed;
            let len = data.len() as u64;
            let queued = d.inflight.fetch_add(len, Relaxed);
            if queued + len > DISK_INFLIGHT {
                // The disk is behind: skip this range rather than queue it.
                d.inflight.fetch_sub(len, Relaxed);
            } else {
                let (d, data) = (d.clone(), data.clone());
                let put = move || {
                    d.put((chunk, start), &data);
                    d.inflight.fetch_sub(len, Relaxed);
                };
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn_blocking(put);
                    }
                    Err(_) => put(),
                }
            }
        }
        self.insert_memory(chunk, start, data);
    }

    fn insert_memory(&self, chunk: ChunkId, start: u64, data: Bytes) {
        let len = data.len() as u64;
        // One range may take a quarter of the budget: a long streaming read
        // must not flush everything else for data read once.
        if len == 0 || len > self.budget / 4 {
            return;
        }
        self.inner
            .lock()
            .unwrap()
            .insert((chunk, start), data, len, self.budget);
    }

    /// Bytes cached in memory.
    pub fn bytes(&self) -> u64 {
        self.inner.lock().unwrap().bytes
    }

    /// Bytes cached on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.bytes())
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
    /// Until when meta's lease lets this be taken as the current version
    /// without asking (counted from before the request was sent).
    pub lease_until: Option<Instant>,
}

fn lease_end(sent: Instant, lease_ms: u32) -> Option<Instant> {
    (lease_ms > 0).then(|| sent + std::time::Duration::from_millis(lease_ms as u64))
}

/// File metadata by path, at most `cap` entries (the oldest half dropped
/// when full).
///
/// An answer from meta is kept only if no change by this client was
/// invalidated between the request and the answer: an open racing this
/// client's own commit may carry the version the commit replaced, and
/// keeping it (with a lease) would hide the client's own write from it.
pub(crate) struct MetaCache {
    cap: usize,
    entries: Mutex<MetaEntries>,
}

#[derive(Default)]
struct MetaEntries {
    map: HashMap<CairnPath, CachedOpen>,
    /// Bumped by every invalidation.
    generation: u64,
}

/// What [`MetaCache::ticket`] hands out before a request to meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

impl MetaCache {
    pub fn new(cap: usize) -> MetaCache {
        MetaCache {
            cap,
            entries: Mutex::new(MetaEntries::default()),
        }
    }

    /// Taken before asking meta; the answer is kept only with a ticket
    /// no invalidation has overtaken.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.entries.lock().unwrap().generation)
    }

    pub fn get(&self, path: &CairnPath) -> Option<CachedOpen> {
        let found = self.entries.lock().unwrap().map.get(path).cloned();
        let outcome = if found.is_some() { "hit" } else { "miss" };
        cairn_metrics::global().cache_lookup("opens", outcome);
        found
    }

    /// Keep what an open sent at `sent` (holding `ticket`) returned.
    pub fn insert(&self, path: &CairnPath, open: OpenFile, sent: Instant, ticket: Ticket) {
        if self.cap == 0 {
            return;
        }
        let mut e = self.entries.lock().unwrap();
        if e.generation != ticket.0 {
            return;
        }
        let m = &mut e.map;
        if m.len() >= self.cap && !m.contains_key(path) {
            let mut ages: Vec<Instant> = m.values().map(|c| c.fetched).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            m.retain(|_, c| c.fetched > cut);
        }
        let lease_until = lease_end(sent, open.lease_ms);
        m.insert(
            path.clone(),
            CachedOpen {
                open,
                fetched: sent,
                caps_at: sent,
                lease_until,
            },
        );
    }

    /// Meta confirmed (for an open sent at `sent`) that the cached version
    /// of `path` is current; its effective cues are `cues`, its new lease
    /// `lease_ms`.
    pub fn confirm(
        &self,
        path: &CairnPath,
        cues: cairn_types::Cues,
        lease_ms: u32,
        sent: Instant,
        ticket: Ticket,
    ) {
        let mut e = self.entries.lock().unwrap();
        if e.generation != ticket.0 {
            return;
        }
        if let Some(c) = e.map.get_mut(path) {
            c.fetched = sent;
            c.open.cues = cues;
            c.lease_until = lease_end(sent, lease_ms);
        }
    }

    /// This client changed file `id` (a hard-linked one: under any name).
    pub fn invalidate_inode(&self, id: cairn_types::InodeId) {
        let mut e = self.entries.lock().unwrap();
        e.generation += 1;
        e.map.retain(|_, c| c.open.inode.id != id);
    }

    /// This client changed or removed `path` (or something under it).
    pub fn invalidate(&self, path: &CairnPath) {
        let mut e = self.entries.lock().unwrap();
        e.generation += 1;
        e.map.retain(|p, _| !p.starts_with(path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_of(version: u64) -> OpenFile {
        use cairn_types::{Inode, InodeId, InodeKind, Version};
        OpenFile {
            inode: Inode {
                id: InodeId(7),
                kind: InodeKind::File,
                size: 0,
                version: Version(version),
                mtime_ns: 0,
                ctime_ns: 0,
                atime_ns: 0,
                mode: 0o644,
                extents: vec![],
                chunk_size: 1 << 20,
                xattrs: Default::default(),
                uid: None,
                gid: None,
                target: None,
                cues: Default::default(),
                nlink: 1,
                inline: None,
                rdev: 0,
            },
            cues: Default::default(),
            lease_ms: 1000,
            nodes: vec![],
            caps: vec![],
            read_order: vec![],
            via: None,
        }
    }

    #[test]
    fn an_answer_overtaken_by_an_own_change_is_not_kept() {
        let m = MetaCache::new(16);
        let p = CairnPath::parse("/f").unwrap();
        // An open is sent, this client commits a new version meanwhile,
        // then the open's (older) answer arrives: it must not be kept.
        let t = m.ticket();
        m.invalidate(&p);
        m.insert(&p, open_of(1), Instant::now(), t);
        assert!(m.get(&p).is_none());
        // Nor may it renew an entry's lease.
        let t = m.ticket();
        m.insert(&p, open_of(2), Instant::now(), t);
        let before = m.get(&p).unwrap().lease_until;
        let t = m.ticket();
        m.invalidate(&CairnPath::parse("/other").unwrap());
        m.confirm(&p, Default::default(), 60_000, Instant::now(), t);
        assert_eq!(m.get(&p).unwrap().lease_until, before);
        // An answer nothing overtook is kept.
        let t = m.ticket();
        m.insert(&p, open_of(3), Instant::now(), t);
        assert_eq!(m.get(&p).unwrap().open.inode.version.0, 3);
    }

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

    #[test]
    fn disk_tier_keeps_what_memory_evicts_and_drops_corrupt_files() {
        // (No runtime here: the disk writes happen inline.)
        let dir = tempfile::tempdir().unwrap();
        let c = ChunkCache::with_disk(1000, dir.path(), 2000).unwrap();
        for i in 0..20u64 {
            c.insert(ChunkId(i as u128), 0, Bytes::from(vec![i as u8; 200]));
        }
        assert!(c.bytes() <= 1000);
        assert!(c.disk_bytes() <= 2000);
        // Evicted from memory, found on disk.
        assert_eq!(c.get(ChunkId(12), 10, 5).unwrap()[..], [12u8; 5]);
        // Oldest gone from both tiers.
        assert!(c.get(ChunkId(0), 0, 1).is_none());
        // A damaged file is never served.
        let victim = dir.path().join(format!("{}-0", ChunkId(13)));
        let mut raw = std::fs::read(&victim).unwrap();
        raw[10] ^= 1;
        std::fs::write(&victim, raw).unwrap();
        assert!(c.get(ChunkId(13), 0, 1).is_none());
        assert!(!victim.exists());
        // Bigger than a quarter of memory: straight to disk.
        c.insert(ChunkId(50), 0, Bytes::from(vec![5u8; 400]));
        assert_eq!(c.get(ChunkId(50), 0, 400).unwrap().len(), 400);
        // A new cache over the same directory takes over what is there,
        // within its budget; strays are removed.
        let before = c.disk_bytes();
        drop(c);
        std::fs::write(dir.path().join("stray"), b"x").unwrap();
        let c = ChunkCache::with_disk(1000, dir.path(), 2000).unwrap();
        assert_eq!(c.disk_bytes(), before);
        assert_eq!(c.get(ChunkId(50), 0, 400).unwrap().len(), 400);
        assert!(!dir.path().join("stray").exists());
        let small = ChunkCache::with_disk(1000, dir.path(), 500).unwrap();
        assert!(small.disk_bytes() <= 500);
    }

    #[test]
    fn disk_tier_reads_off_the_runtime_threads_find_the_same() {
        let dir = tempfile::tempdir().unwrap();
        // Written inline (no runtime yet); read from a runtime.
        let c = ChunkCache::with_disk(1000, dir.path(), 4000).unwrap();
        for i in 0..12u64 {
            c.insert(ChunkId(i as u128), 0, Bytes::from(vec![i as u8; 200]));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // ChunkId(1) left memory and is on disk only.
            assert!(c.get_memory(ChunkId(1), 0, 1).is_none());
            let hit = c.get_off_thread(ChunkId(1), 20, 30).await.unwrap();
            assert_eq!(hit[..], [1u8; 30]);
            // ... and back in memory now.
            assert_eq!(c.get_memory(ChunkId(1), 0, 200).unwrap().len(), 200);
            assert!(c.get_off_thread(ChunkId(1), 150, 100).await.is_none());
            assert!(c.get_off_thread(ChunkId(77), 0, 1).await.is_none());
        });
    }
}
