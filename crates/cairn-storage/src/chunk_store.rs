//! The on-disk store of immutable chunks of one storage node.
//!
//! # Layout
//!
//! Chunks live in append-only segment files `DIR/seg-<16 hex>.log`, one
//! *active* segment taking new records and any number of sealed ones. A new
//! segment is started when a record would take the active one past
//! [`StoreOptions::segment_size`]. A record is a 64-byte header, the chunk's
//! block CRC list (4 bytes LE per [`BLOCK_SIZE`] block) and the data:
//!
//! ```text
//!  0  magic "CRNS"          4  kind (1 chunk, 2 tombstone)
//!  5  abort marker          6  reserved (0)
//!  8  seq u64              16  chunk id u128
//! 32  data len u64         40  crc count u32
//! 44  crc32c of the crc list (= BlockCrcs::summary)
//! 48  reserved (0)         60  crc32c of bytes 0..60 with byte 5 zeroed
//! ```
//!
//! The header checksum covers the CRC list through the list's own checksum
//! at byte 44, so opening a store reads headers only, never lists or data.
//! Byte 5 is outside the checksum so that marking a record dead (a writer
//! dropped without `finish`) is a single-byte write that cannot tear.
//!
//! # Ordering and crash recovery
//!
//! Every record gets a sequence number when it is reserved; for one chunk id
//! the record with the highest number wins, a tombstone winning a tie (and
//! killing every chunk record with a number up to its own). Compaction copies
//! records *with their original number*, so a copy can never resurrect a
//! chunk deleted (or rewritten) after the copy's source was written, in
//! whatever segment the copy lands.
//!
//! Headers are written under the allocation lock, in reservation order,
//! before any later record can be fsynced, and `fdatasync` flushes the whole
//! file; so when a record is acknowledged, every earlier header of its
//! segment is durable. `open` walks each segment header by header and stops
//! at the first header that is invalid or whose record runs past the end of
//! the file: that is a torn tail. It is left in place (never truncated, so a
//! damaged header in the middle cannot make us destroy good records after
//! it) and new writes go to a fresh segment. A record whose *data* is bad (a
//! crash mid-write of an unacknowledged chunk, or bit rot) is found on read
//! and reported as [`ErrorKind::Corrupt`].
//!
//! # Memory
//!
//! The index keeps 32 bytes per chunk besides the 16-byte id (segment,
//! offset, length, sequence number, CRC-list checksum). CRC lists stay on
//! disk and are read (at most 4 KiB for a 64 MiB chunk) next to the data on
//! every read, and checked against the summary kept in memory.

use cairn_types::{BlockCrcs, ChunkId, Error, ErrorKind, Result, BLOCK_SIZE};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tracing::warn;

/// Largest chunk the store accepts. Chunks are ~64 MiB; this bound keeps
/// lengths in 32 bits in the index and reservations sane.
pub const MAX_CHUNK_LEN: u64 = 1 << 30;

const MAGIC: [u8; 4] = *b"CRNS";
const HDR: u64 = 64;
const KIND_CHUNK: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
const ABORT_BYTE: u64 = 5;
const ABORTED: u8 = 0xA5;
/// Compaction and `verify` move data in pieces of this size.
const PIECE: u64 = 4 << 20;

/// Tuning of a [`ChunkStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// A new segment file is started when a record would take the active
    /// one past this size.
    pub segment_size: u64,
    /// `begin_write` fails with [`ErrorKind::NoSpace`] rather than leave less
    /// free space than this on the file system. Deletes and compaction are
    /// exempt, so that a full node can still free space.
    pub reserve_free: u64,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            segment_size: 256 << 20,
            reserve_free: 256 << 20,
        }
    }
}

/// What [`ChunkStore::info`] knows without touching the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkInfo {
    pub len: u64,
    /// [`BlockCrcs::summary`] of the chunk.
    pub crc_summary: u32,
}

/// Space accounting; byte counts include record headers and CRC lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub chunks: u64,
    /// Bytes of records that are still readable.
    pub live_bytes: u64,
    /// Sum of segment sizes: live bytes plus what compaction can reclaim.
    pub disk_bytes: u64,
    /// Segment files.
    pub segments: u64,
    pub fs_total: u64,
    /// Space available to this process on the file system.
    pub fs_free: u64,
}

/// What one [`ChunkStore::compact`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactStats {
    pub segments_compacted: u64,
    pub chunks_moved: u64,
    /// Bytes written into the active segment (moved chunks, kept tombstones).
    pub bytes_moved: u64,
    /// Size of the segment files removed.
    pub bytes_freed: u64,
    pub tombstones_kept: u64,
    /// Chunks whose data failed its checksums while being moved. They are
    /// gone from this node now; replicas elsewhere must restore them.
    pub corrupt: Vec<ChunkId>,
}

/// The chunk store of one data directory. Thread-safe; share it in an `Arc`.
/// All methods block on disk I/O (call them from `spawn_blocking`).
pub struct ChunkStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    opts: StoreOptions,
    /// Taken before `state` when both are needed, never after.
    alloc: Mutex<Alloc>,
    state: RwLock<State>,
    compacting: Mutex<()>,
    /// Bytes reserved by writers and not yet released; counted against
    /// `reserve_free` because statvfs does not see them yet.
    pending: AtomicU64,
    _lock: File,
}

struct Alloc {
    active: Arc<Segment>,
    next_seq: u64,
}

struct State {
    index: HashMap<ChunkId, Entry>,
    segs: BTreeMap<u32, Arc<Segment>>,
    /// Ids with a writer in progress; a second writer of the same id would
    /// let an unfinished record shadow a finished one after a crash.
    writing: HashSet<ChunkId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    off: u64,
    seq: u64,
    seg: u32,
    len: u32,
    crc_sum: u32,
}

impl Entry {
    fn blocks(&self) -> usize {
        BlockCrcs::blocks_for(self.len as u64)
    }
    fn extent(&self) -> u64 {
        HDR + 4 * self.blocks() as u64 + self.len as u64
    }
    fn data_off(&self) -> u64 {
        self.off + HDR + 4 * self.blocks() as u64
    }
}

struct Segment {
    id: u32,
    path: PathBuf,
    file: File,
    /// End of the last reservation (the active segment) or the file size.
    len: AtomicU64,
    live: AtomicU64,
    /// Lowest sequence number of any chunk record in the file, dead or
    /// alive: a tombstone may be dropped only when no segment could still
    /// hold a record it kills.
    min_chunk_seq: AtomicU64,
    /// Reservations not yet finished; compaction leaves the segment alone
    /// while there are any.
    writers: AtomicUsize,
    sync: Mutex<SyncState>,
    synced: Condvar,
}

#[derive(Default)]
struct SyncState {
    started: u64,
    done: u64,
    running: bool,
    /// After a failed fdatasync the kernel may have dropped dirty pages, so
    /// no later sync of this file can be trusted.
    poisoned: Option<Error>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

fn seg_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{:016x}.log", id))
}

fn parse_seg_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::from(e).context(format!("syncing directory {}", dir.display())))
}

#[allow(clippy::unnecessary_cast)] // field types differ between platforms
fn statvfs(path: &Path) -> Result<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{} contains a NUL byte", path.display())))?;
    // SAFETY: `c` is a valid C string and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::from(std::io::Error::last_os_error())
            .context(format!("statvfs {}", path.display())));
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// pread that reports a short file as corruption of `id` (a record whose
/// data never fully arrived) rather than as an I/O failure.
fn pread(seg: &Segment, buf: &mut [u8], off: u64, id: ChunkId) -> Result<()> {
    seg.file.read_exact_at(buf, off).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt(format!(
                "chunk {id}: data in {} is cut short (a write that never completed?)",
                seg.path.display()
            ))
        } else {
            Error::from(e).context(format!("reading chunk {id} from {}", seg.path.display()))
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Chunk,
    Tombstone,
}

#[derive(Clone, Copy, Debug)]
struct Header {
    kind: Kind,
    aborted: bool,
    seq: u64,
    id: ChunkId,
    len: u64,
    crc_count: u32,
    crc_sum: u32,
}

impl Header {
    fn chunk(id: ChunkId, len: u64, crcs: &BlockCrcs) -> Header {
        Header {
            kind: Kind::Chunk,
            aborted: false,
            seq: 0,
            id,
            len,
            crc_count: crcs.0.len() as u32,
            crc_sum: crcs.summary(),
        }
    }

    fn tombstone(id: ChunkId, seq: u64) -> Header {
        Header {
            kind: Kind::Tombstone,
            aborted: false,
            seq,
            id,
            len: 0,
            crc_count: 0,
            crc_sum: 0,
        }
    }

    fn extent(&self) -> u64 {
        HDR + 4 * self.crc_count as u64 + self.len
    }

    fn encode(&self) -> [u8; HDR as usize] {
        let mut b = [0u8; HDR as usize];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = match self.kind {
            Kind::Chunk => KIND_CHUNK,
            Kind::Tombstone => KIND_TOMBSTONE,
        };
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..32].copy_from_slice(&self.id.0.to_le_bytes());
        b[32..40].copy_from_slice(&self.len.to_le_bytes());
        b[40..44].copy_from_slice(&self.crc_count.to_le_bytes());
        b[44..48].copy_from_slice(&self.crc_sum.to_le_bytes());
        let c = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&c.to_le_bytes());
        if self.aborted {
            b[ABORT_BYTE as usize] = ABORTED;
        }
        b
    }

    fn decode(raw: &[u8; HDR as usize]) -> Option<Header> {
        let mut b = *raw;
        b[ABORT_BYTE as usize] = 0;
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        if b[0..4] != MAGIC || u32_at(60) != crc32c::crc32c(&b[..60]) {
            return None;
        }
        if b[6..8] != [0, 0] || b[48..60].iter().any(|&x| x != 0) {
            return None;
        }
        let h = Header {
            kind: match b[4] {
                KIND_CHUNK => Kind::Chunk,
                KIND_TOMBSTONE => Kind::Tombstone,
                _ => return None,
            },
            aborted: raw[ABORT_BYTE as usize] == ABORTED,
            seq: u64_at(8),
            id: ChunkId(u128::from_le_bytes(b[16..32].try_into().unwrap())),
            len: u64_at(32),
            crc_count: u32_at(40),
            crc_sum: u32_at(44),
        };
        let sane = match h.kind {
            Kind::Chunk => {
                h.len <= MAX_CHUNK_LEN && h.crc_count as usize == BlockCrcs::blocks_for(h.len)
            }
            Kind::Tombstone => h.len == 0 && h.crc_count == 0,
        };
        sane.then_some(h)
    }
}

/// Walk the valid records of a segment file. Returns them and where the
/// valid part ends.
fn scan(file: &File, file_len: u64) -> Result<(Vec<(u64, Header)>, u64)> {
    let mut out = Vec::new();
    let mut off = 0u64;
    let mut buf = [0u8; HDR as usize];
    while off + HDR <= file_len {
        file.read_exact_at(&mut buf, off)?;
        let Some(h) = Header::decode(&buf) else { break };
        let end = off + h.extent();
        if end > file_len {
            break;
        }
        out.push((off, h));
        off = end;
    }
    Ok((out, off))
}

impl Segment {
    fn new(id: u32, path: PathBuf, file: File, len: u64) -> Segment {
        Segment {
            id,
            path,
            file,
            len: AtomicU64::new(len),
            live: AtomicU64::new(0),
            min_chunk_seq: AtomicU64::new(u64::MAX),
            writers: AtomicUsize::new(0),
            sync: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
        }
    }

    fn create(dir: &Path, id: u32) -> Result<Segment> {
        let path = seg_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::from(e).context(format!("creating {}", path.display())))?;
        sync_dir(dir)?;
        Ok(Segment::new(id, path, file, 0))
    }

    fn is_poisoned(&self) -> bool {
        lock(&self.sync).poisoned.is_some()
    }

    /// Group commit: make everything written to this file before the call
    /// durable. One caller runs fdatasync; callers that arrive meanwhile wait
    /// for the next one, which covers all of them.
    fn sync(&self) -> Result<()> {
        let mut st = lock(&self.sync);
        // A sync already running may have started before our writes.
        let need = st.started + 1;
        loop {
            if st.done >= need {
                return Ok(());
            }
            if let Some(e) = &st.poisoned {
                return Err(e.clone());
            }
            if st.running {
                st = self.synced.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.running = true;
            st.started += 1;
            let generation = st.started;
            drop(st);
            let r = self.file.sync_data();
            st = lock(&self.sync);
            st.running = false;
            match r {
                Ok(()) => st.done = generation,
                Err(e) => {
                    let e = Error::from(e).context(format!(
                        "fdatasync of {} failed; writes to it since the last sync may be lost",
                        self.path.display()
                    ));
                    warn!("{e}");
                    st.poisoned = Some(e);
                }
            }
            self.synced.notify_all();
        }
    }
}

/// Space taken in a segment for one record. Dropped without being committed,
/// the record is marked dead on disk.
struct Reservation {
    inner: Arc<Inner>,
    seg: Arc<Segment>,
    off: u64,
    hdr: Header,
    committed: bool,
    /// Whether `hdr.id` is in `State::writing` on our behalf.
    registered: bool,
}

impl Reservation {
    fn data_off(&self) -> u64 {
        self.off + HDR + 4 * self.hdr.crc_count as u64
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: if this does not reach the disk, the record is
            // found to be damaged on read instead.
            let _ = self
                .seg
                .file
                .write_all_at(&[ABORTED], self.off + ABORT_BYTE);
        }
        if self.registered {
            write(&self.inner.state).writing.remove(&self.hdr.id);
        }
        self.inner.pending.fetch_sub(self.hdr.extent(), SeqCst);
        self.seg.writers.fetch_sub(1, SeqCst);
    }
}

/// Streams one chunk into the store; from [`ChunkStore::begin_write`].
///
/// Every [`BLOCK_SIZE`] block is checked against its CRC as soon as it is
/// complete. Dropped without [`ChunkWriter::finish`], the chunk is not
/// stored.
pub struct ChunkWriter {
    /// `None` when the chunk is already stored with the same checksums: the
    /// bytes are checked and discarded.
    res: Option<Reservation>,
    id: ChunkId,
    len: u64,
    crcs: BlockCrcs,
    /// Bytes checked (and written); always a multiple of BLOCK_SIZE or `len`.
    done: u64,
    partial: Vec<u8>,
    failed: Option<Error>,
}

impl std::fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("received", &(self.done + self.partial.len() as u64))
            .field("duplicate", &self.res.is_none())
            .finish()
    }
}

impl ChunkWriter {
    fn new(res: Option<Reservation>, id: ChunkId, len: u64, crcs: BlockCrcs) -> ChunkWriter {
        ChunkWriter {
            res,
            id,
            len,
            crcs,
            done: 0,
            partial: Vec::new(),
            failed: None,
        }
    }

    pub fn id(&self) -> ChunkId {
        self.id
    }

    /// True when the store already held this chunk with the same checksums:
    /// the bytes are still checked, but nothing is written.
    pub fn is_duplicate(&self) -> bool {
        self.res.is_none()
    }

    /// Append the next piece of the chunk. After an error the writer is
    /// unusable and the chunk must be sent again from the start.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.write_inner(data);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn block_len(&self, start: u64) -> usize {
        (self.len - start).min(BLOCK_SIZE as u64) as usize
    }

    fn write_inner(&mut self, mut data: &[u8]) -> Result<()> {
        let total = self.done + self.partial.len() as u64 + data.len() as u64;
        if total > self.len {
            return Err(Error::invalid(format!(
                "chunk {}: received {total} bytes for a chunk of {}",
                self.id, self.len
            )));
        }
        while !data.is_empty() {
            if self.partial.is_empty() && data.len() >= self.block_len(self.done) {
                // Whole blocks straight from the caller's buffer.
                let mut n = 0usize;
                let mut pos = self.done;
                while pos < self.len && data.len() - n >= self.block_len(pos) {
                    let bl = self.block_len(pos);
                    self.check_block(pos, &data[n..n + bl])?;
                    n += bl;
                    pos += bl as u64;
                }
                self.persist(&data[..n])?;
                data = &data[n..];
            } else {
                let bl = self.block_len(self.done);
                let take = (bl - self.partial.len()).min(data.len());
                self.partial.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.partial.len() == bl {
                    let block = std::mem::take(&mut self.partial);
                    self.check_block(self.done, &block)?;
                    self.persist(&block)?;
                    self.partial = block;
                    self.partial.clear();
                }
            }
        }
        Ok(())
    }

    fn check_block(&self, start: u64, block: &[u8]) -> Result<()> {
        let idx = (start / BLOCK_SIZE as u64) as usize;
        if crc32c::crc32c(block) != self.crcs.0[idx] {
            return Err(Error::corrupt(format!(
                "chunk {}: block {idx} (bytes {start}..{}) does not match its checksum",
                self.id,
                start + block.len() as u64
            )));
        }
        Ok(())
    }

    fn persist(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(res) = &self.res {
            res.seg
                .file
                .write_all_at(bytes, res.data_off() + self.done)
                .map_err(|e| {
                    Error::from(e).context(format!(
                        "writing chunk {} to {}",
                        self.id,
                        res.seg.path.display()
                    ))
                })?;
        }
        self.done += bytes.len() as u64;
        Ok(())
    }

    fn check_complete(&self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.done != self.len {
            return Err(Error::invalid(format!(
                "chunk {}: finished after {} of {} bytes",
                self.id,
                self.done + self.partial.len() as u64,
                self.len
            )));
        }
        Ok(())
    }

    /// Check that every byte arrived, make the chunk durable (fsync shared
    /// with concurrent writers) and only then make it readable.
    pub fn finish(mut self) -> Result<()> {
        self.check_complete()?;
        let Some(mut res) = self.res.take() else {
            return Ok(());
        };
        res.seg.sync()?;
        let inner = res.inner.clone();
        let mut st = write(&inner.state);
        let e = Entry {
            off: res.off,
            seq: res.hdr.seq,
            seg: res.seg.id,
            len: self.len as u32,
            crc_sum: res.hdr.crc_sum,
        };
        if let Some(old) = st.index.insert(self.id, e) {
            // Replacing a copy found damaged (see `begin_write`).
            if let Some(s) = st.segs.get(&old.seg) {
                s.live.fetch_sub(old.extent(), SeqCst);
            }
        }
        res.seg.live.fetch_add(e.extent(), SeqCst);
        st.writing.remove(&self.id);
        res.registered = false;
        res.committed = true;
        Ok(())
    }

    /// For compaction: the complete, unsynced record.
    fn into_reservation(mut self) -> Result<Reservation> {
        self.check_complete()?;
        Ok(self.res.take().expect("copies always have a reservation"))
    }
}

impl ChunkStore {
    /// Open (or create) the store in `dir`. Reads every record header, no
    /// data. Fails with [`ErrorKind::Unavailable`] if another `ChunkStore`
    /// has the directory open.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<ChunkStore> {
        if opts.segment_size == 0 {
            return Err(Error::invalid("segment_size must be more than 0"));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::from(e).context(format!("creating {}", dir.display())))?;
        let lock_path = dir.join("LOCK");
        let lock_file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::from(e).context(format!("opening {}", lock_path.display())))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock_file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::unavailable(format!(
                "chunk store {} is in use by another process (or another store in this one)",
                dir.display()
            )));
        }

        let mut ids = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::from(e).context(format!("listing {}", dir.display())))?;
        for entry in entries {
            let entry = entry?;
            if let Some(id) = entry.file_name().to_str().and_then(parse_seg_name) {
                let id = u32::try_from(id).map_err(|_| {
                    Error::internal(format!(
                        "segment number {id:x} in {} is too large",
                        dir.display()
                    ))
                })?;
                ids.push(id);
            }
        }
        ids.sort_unstable();

        let mut index: HashMap<ChunkId, Entry> = HashMap::new();
        // Highest tombstone per id, needed only here: segments are not in
        // sequence order once compaction has moved records.
        let mut tombs: HashMap<ChunkId, u64> = HashMap::new();
        let mut segs: BTreeMap<u32, Arc<Segment>> = BTreeMap::new();
        let mut max_seq = 0u64;
        let mut last_clean = false;
        for &id in &ids {
            let path = seg_path(dir, id);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::from(e).context(format!("opening {}", path.display())))?;
            let file_len = file.metadata()?.len();
            let (records, valid_end) = scan(&file, file_len)
                .map_err(|e| e.context(format!("scanning {}", path.display())))?;
            if valid_end < file_len {
                warn!(
                    "{}: {} bytes after offset {valid_end} are not a valid record (torn tail \
                     or damage); chunks there are not indexed",
                    path.display(),
                    file_len - valid_end
                );
            }
            last_clean = valid_end == file_len;
            let seg = Arc::new(Segment::new(id, path, file, file_len));
            segs.insert(id, seg.clone());
            for (off, h) in records {
                max_seq = max_seq.max(h.seq);
                match h.kind {
                    Kind::Chunk => {
                        seg.min_chunk_seq.fetch_min(h.seq, SeqCst);
                        if h.aborted
                            || tombs.get(&h.id).is_some_and(|&t| t >= h.seq)
                            || index.get(&h.id).is_some_and(|e| e.seq > h.seq)
                        {
                            continue;
                        }
                        let e = Entry {
                            off,
                            seq: h.seq,
                            seg: id,
                            len: h.len as u32,
                            crc_sum: h.crc_sum,
                        };
                        if let Some(old) = index.insert(h.id, e) {
                            segs[&old.seg].live.fetch_sub(old.extent(), SeqCst);
                        }
                        seg.live.fetch_add(e.extent(), SeqCst);
                    }
                    Kind::Tombstone => {
                        if h.aborted {
                            continue;
                        }
                        let t = tombs.entry(h.id).or_insert(h.seq);
                        *t = (*t).max(h.seq);
                        if index.get(&h.id).is_some_and(|e| e.seq <= h.seq) {
                            let old = index.remove(&h.id).unwrap();
                            segs[&old.seg].live.fetch_sub(old.extent(), SeqCst);
                        }
                    }
                }
            }
        }

        let active = match segs.values().next_back() {
            Some(last) if last_clean && last.len.load(SeqCst) < opts.segment_size => last.clone(),
            last => {
                let id = match last {
                    Some(s) => s.id.checked_add(1).ok_or_else(|| {
                        Error::internal(format!("{}: out of segment numbers", dir.display()))
                    })?,
                    None => 0,
                };
                let seg = Arc::new(Segment::create(dir, id)?);
                segs.insert(id, seg.clone());
                seg
            }
        };
        Ok(ChunkStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                opts,
                alloc: Mutex::new(Alloc {
                    active,
                    next_seq: max_seq + 1,
                }),
                state: RwLock::new(State {
                    index,
                    segs,
                    writing: HashSet::new(),
                }),
                compacting: Mutex::new(()),
                pending: AtomicU64::new(0),
                _lock: lock_file,
            }),
        })
    }

    /// Start storing chunk `id` of `len` bytes with checksums `crcs`; the
    /// data follows through [`ChunkWriter::write`].
    ///
    /// If the chunk is already stored with the same checksums (a retry), the
    /// writer checks and discards the bytes ([`ChunkWriter::is_duplicate`]).
    /// With other checksums: [`ErrorKind::AlreadyExists`]. While another
    /// writer of the same id is running: [`ErrorKind::Conflict`].
    pub fn begin_write(&self, id: ChunkId, len: u64, crcs: &BlockCrcs) -> Result<ChunkWriter> {
        if len > MAX_CHUNK_LEN {
            return Err(Error::invalid(format!(
                "chunk {id}: {len} bytes is more than the {MAX_CHUNK_LEN} a chunk may have"
            )));
        }
        if crcs.0.len() != BlockCrcs::blocks_for(len) {
            return Err(Error::invalid(format!(
                "chunk {id}: {} block checksums for {len} bytes, expected {}",
                crcs.0.len(),
                BlockCrcs::blocks_for(len)
            )));
        }
        let existing = self.lookup_opt(id)?;
        if let Some((e, seg)) = &existing {
            if e.len as u64 != len || e.crc_sum != crcs.summary() {
                return Err(Error::exists(format!(
                    "chunk {id} is already stored with other contents ({} bytes, checksum \
                     {:08x}); chunk ids are never reused",
                    e.len, e.crc_sum
                )));
            }
            // Same checksums: a retry. Only trust the stored copy if it is
            // intact; an unacknowledged record torn by a crash looks the
            // same in the index.
            match self.inner.verify_entry(id, e, seg) {
                Ok(()) => return Ok(ChunkWriter::new(None, id, len, crcs.clone())),
                Err(err) if err.kind == ErrorKind::Corrupt => {
                    warn!("{err}; storing it again");
                }
                Err(err) => return Err(err),
            }
        }
        let hdr = Header::chunk(id, len, crcs);
        self.inner.check_space(hdr.extent())?;
        {
            let mut st = write(&self.inner.state);
            if st.writing.contains(&id) {
                return Err(Error::conflict(format!(
                    "chunk {id} is being written already"
                )));
            }
            if st.index.get(&id).copied() != existing.map(|(e, _)| e) {
                return Err(Error::conflict(format!(
                    "chunk {id} changed while being written"
                )));
            }
            st.writing.insert(id);
        }
        match self.inner.reserve(hdr, &crcs.0, true) {
            Ok(mut res) => {
                res.registered = true;
                Ok(ChunkWriter::new(Some(res), id, len, crcs.clone()))
            }
            Err(e) => {
                write(&self.inner.state).writing.remove(&id);
                Err(e)
            }
        }
    }

    /// Store a whole chunk at once: `begin_write`, `write`, `finish`.
    pub fn put(&self, id: ChunkId, data: &[u8], crcs: &BlockCrcs) -> Result<()> {
        let mut w = self.begin_write(id, data.len() as u64, crcs)?;
        w.write(data)?;
        w.finish()
    }

    /// `len` bytes of chunk `id` from `offset`, checked against the block
    /// checksums.
    pub fn read(&self, id: ChunkId, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(id, offset, len, &mut buf)?;
        Ok(buf)
    }

    /// [`Self::read`] into `buf` (its length becomes `len`). A buffer
    /// reused from read to read is not zeroed again: only growth is.
    pub fn read_into(&self, id: ChunkId, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<()> {
        let (e, seg) = self.lookup(id)?;
        let clen = e.len as u64;
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= clen)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "range {offset}+{len} is outside chunk {id} of {clen} bytes"
                ))
            })?;
        if len == 0 {
            buf.clear();
            return Ok(());
        }
        let crcs = self.inner.crc_list(id, &e, &seg)?;
        let bs = BLOCK_SIZE as u64;
        let first = offset / bs;
        let start = first * bs;
        let stop = (end.div_ceil(bs) * bs).min(clen);
        buf.resize((stop - start) as usize, 0);
        pread(&seg, buf, e.data_off() + start, id)?;
        check_blocks(id, &seg, &crcs, first as usize, buf)?;
        buf.truncate((end - start) as usize);
        if offset > start {
            buf.drain(..(offset - start) as usize);
        }
        Ok(())
    }

    /// The block checksums of chunk `id`.
    pub fn read_crcs(&self, id: ChunkId) -> Result<BlockCrcs> {
        let (e, seg) = self.lookup(id)?;
        self.inner.crc_list(id, &e, &seg)
    }

    /// Read all of chunk `id` and check every block (for a scrubber).
    pub fn verify(&self, id: ChunkId) -> Result<()> {
        let (e, seg) = self.lookup(id)?;
        self.inner.verify_entry(id, &e, &seg)
    }

    pub fn info(&self, id: ChunkId) -> Option<ChunkInfo> {
        read(&self.inner.state).index.get(&id).map(|e| ChunkInfo {
            len: e.len as u64,
            crc_summary: e.crc_sum,
        })
    }

    pub fn contains(&self, id: ChunkId) -> bool {
        read(&self.inner.state).index.contains_key(&id)
    }

    /// Every stored chunk, sorted.
    pub fn list(&self) -> Vec<ChunkId> {
        let mut ids: Vec<ChunkId> = read(&self.inner.state).index.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Delete chunk `id`: a durable tombstone, then gone from the index.
    /// `Ok(false)` if it was not stored.
    pub fn delete(&self, id: ChunkId) -> Result<bool> {
        if !self.contains(id) {
            return Ok(false);
        }
        let mut res = self.inner.reserve(Header::tombstone(id, 0), &[], true)?;
        res.seg.sync()?;
        let mut st = write(&self.inner.state);
        res.committed = true;
        match st.index.get(&id) {
            Some(e) if e.seq < res.hdr.seq => {
                let e = *e;
                st.index.remove(&id);
                if let Some(s) = st.segs.get(&e.seg) {
                    s.live.fetch_sub(e.extent(), SeqCst);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub fn stats(&self) -> StoreStats {
        let (fs_total, fs_free) = statvfs(&self.inner.dir).unwrap_or((0, 0));
        let st = read(&self.inner.state);
        StoreStats {
            chunks: st.index.len() as u64,
            live_bytes: st.segs.values().map(|s| s.live.load(SeqCst)).sum(),
            disk_bytes: st.segs.values().map(|s| s.len.load(SeqCst)).sum(),
            segments: st.segs.len() as u64,
            fs_total,
            fs_free,
        }
    }

    /// Rewrite every sealed segment whose live bytes are below
    /// `max_live_ratio` of its size: live chunks are copied (and their
    /// checksums checked) into the active segment, then the old file is
    /// removed. Safe to run while reads and writes go on; one compaction
    /// runs at a time.
    pub fn compact(&self, max_live_ratio: f64) -> Result<CompactStats> {
        let inner = &self.inner;
        let _one_at_a_time = lock(&inner.compacting);
        let active = lock(&inner.alloc).active.id;
        let candidates: Vec<Arc<Segment>> = read(&inner.state)
            .segs
            .values()
            .filter(|s| {
                let size = s.len.load(SeqCst);
                s.id < active
                    && s.writers.load(SeqCst) == 0
                    && (size == 0 || (s.live.load(SeqCst) as f64) < max_live_ratio * size as f64)
            })
            .cloned()
            .collect();
        let mut stats = CompactStats::default();
        for seg in candidates {
            inner.compact_segment(&seg, &mut stats)?;
        }
        Ok(stats)
    }

    fn lookup_opt(&self, id: ChunkId) -> Result<Option<(Entry, Arc<Segment>)>> {
        let st = read(&self.inner.state);
        if st.writing.contains(&id) {
            return Err(Error::conflict(format!(
                "chunk {id} is being written already"
            )));
        }
        Ok(st.index.get(&id).map(|e| (*e, st.segs[&e.seg].clone())))
    }

    fn lookup(&self, id: ChunkId) -> Result<(Entry, Arc<Segment>)> {
        let st = read(&self.inner.state);
        let e = st
            .index
            .get(&id)
            .ok_or_else(|| Error::not_found(format!("chunk {id} is not on this node")))?;
        Ok((*e, st.segs[&e.seg].clone()))
    }
}

fn check_blocks(
    id: ChunkId,
    seg: &Segment,
    crcs: &BlockCrcs,
    first: usize,
    data: &[u8],
) -> Result<()> {
    crcs.verify(first, data).map_err(|b| {
        Error::corrupt(format!(
            "chunk {id}: block {b} (bytes {}..) in {} does not match its checksum",
            b as u64 * BLOCK_SIZE as u64,
            seg.path.display()
        ))
    })
}

fn parse_crcs(raw: &[u8]) -> BlockCrcs {
    BlockCrcs(
        raw.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

impl Inner {
    fn check_space(&self, extent: u64) -> Result<()> {
        if self.opts.reserve_free == 0 {
            return Ok(());
        }
        let (_, free) = statvfs(&self.dir)?;
        let pending = self.pending.load(SeqCst);
        let after = free.saturating_sub(pending).saturating_sub(extent);
        if after < self.opts.reserve_free {
            return Err(Error::no_space(format!(
                "{}: {free} bytes free ({pending} promised to writes in progress); writing \
                 {extent} more would leave less than reserve_free={}; delete data, compact, \
                 or add disks",
                self.dir.display(),
                self.opts.reserve_free
            )));
        }
        Ok(())
    }

    /// Reserve a record in the active segment and write its header and CRC
    /// list, under the allocation lock so headers land in file order.
    fn reserve(
        self: &Arc<Self>,
        mut hdr: Header,
        crcs: &[u32],
        fresh_seq: bool,
    ) -> Result<Reservation> {
        let extent = hdr.extent();
        let mut alloc = lock(&self.alloc);
        self.roll_if_needed(&mut alloc, extent)?;
        if fresh_seq {
            hdr.seq = alloc.next_seq;
            alloc.next_seq += 1;
        }
        hdr.aborted = false;
        let mut buf = Vec::with_capacity(HDR as usize + 4 * crcs.len());
        buf.extend_from_slice(&hdr.encode());
        for c in crcs {
            buf.extend_from_slice(&c.to_le_bytes());
        }
        let seg = alloc.active.clone();
        let off = seg.len.load(SeqCst);
        if let Err(e) = seg.file.write_all_at(&buf, off) {
            // Nobody reserved after us (we hold the lock): cut off the partial
            // header so the next record's header follows a valid one.
            let _ = seg.file.set_len(off);
            return Err(Error::from(e).context(format!("writing to {}", seg.path.display())));
        }
        seg.len.store(off + extent, SeqCst);
        if hdr.kind == Kind::Chunk {
            seg.min_chunk_seq.fetch_min(hdr.seq, SeqCst);
        }
        seg.writers.fetch_add(1, SeqCst);
        self.pending.fetch_add(extent, SeqCst);
        Ok(Reservation {
            inner: self.clone(),
            seg,
            off,
            hdr,
            committed: false,
            registered: false,
        })
    }

    fn roll_if_needed(&self, alloc: &mut Alloc, extent: u64) -> Result<()> {
        let end = alloc.active.len.load(SeqCst);
        let full = end > 0 && end.saturating_add(extent) > self.opts.segment_size;
        if !full && !alloc.active.is_poisoned() {
            return Ok(());
        }
        let id = alloc.active.id.checked_add(1).ok_or_else(|| {
            Error::internal(format!("{}: out of segment numbers", self.dir.display()))
        })?;
        let seg = Arc::new(Segment::create(&self.dir, id)?);
        write(&self.state).segs.insert(id, seg.clone());
        alloc.active = seg;
        Ok(())
    }

    fn crc_list(&self, id: ChunkId, e: &Entry, seg: &Segment) -> Result<BlockCrcs> {
        let mut raw = vec![0u8; 4 * e.blocks()];
        pread(seg, &mut raw, e.off + HDR, id)?;
        if crc32c::crc32c(&raw) != e.crc_sum {
            return Err(Error::corrupt(format!(
                "chunk {id}: its block checksum list in {} is damaged",
                seg.path.display()
            )));
        }
        Ok(parse_crcs(&raw))
    }

    fn verify_entry(&self, id: ChunkId, e: &Entry, seg: &Segment) -> Result<()> {
        let crcs = self.crc_list(id, e, seg)?;
        let len = e.len as u64;
        let mut buf = vec![0u8; len.min(PIECE) as usize];
        let mut pos = 0u64;
        while pos < len {
            let n = (len - pos).min(PIECE) as usize;
            pread(seg, &mut buf[..n], e.data_off() + pos, id)?;
            check_blocks(
                id,
                seg,
                &crcs,
                (pos / BLOCK_SIZE as u64) as usize,
                &buf[..n],
            )?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Copy the chunk record at `off` of `seg` into the active segment,
    /// keeping its sequence number; checks every block on the way.
    fn copy_chunk(self: &Arc<Self>, seg: &Segment, off: u64, h: &Header) -> Result<Reservation> {
        let mut raw = vec![0u8; 4 * h.crc_count as usize];
        pread(seg, &mut raw, off + HDR, h.id)?;
        if crc32c::crc32c(&raw) != h.crc_sum {
            return Err(Error::corrupt(format!(
                "chunk {}: its block checksum list in {} is damaged",
                h.id,
                seg.path.display()
            )));
        }
        let crcs = parse_crcs(&raw);
        let res = self.reserve(*h, &crcs.0, false)?;
        let mut w = ChunkWriter::new(Some(res), h.id, h.len, crcs);
        let data_off = off + HDR + raw.len() as u64;
        let mut buf = vec![0u8; h.len.min(PIECE) as usize];
        let mut pos = 0u64;
        while pos < h.len {
            let n = (h.len - pos).min(PIECE) as usize;
            pread(seg, &mut buf[..n], data_off + pos, h.id)?;
            w.write(&buf[..n])?;
            pos += n as u64;
        }
        w.into_reservation()
    }

    fn compact_segment(
        self: &Arc<Self>,
        seg: &Arc<Segment>,
        stats: &mut CompactStats,
    ) -> Result<()> {
        let file_len = seg.file.metadata()?.len();
        let (records, _) = scan(&seg.file, file_len)
            .map_err(|e| e.context(format!("scanning {}", seg.path.display())))?;
        // (old offset, copy) for chunks, (old offset, tombstone) for chunks
        // found corrupt, and tombstones carried forward.
        let mut moves: Vec<(u64, Reservation)> = Vec::new();
        let mut kills: Vec<(u64, Reservation)> = Vec::new();
        let mut kept: Vec<Reservation> = Vec::new();
        for (off, h) in records {
            if h.aborted {
                continue;
            }
            match h.kind {
                Kind::Chunk => {
                    let live = read(&self.state)
                        .index
                        .get(&h.id)
                        .is_some_and(|e| e.seg == seg.id && e.off == off);
                    if !live {
                        continue;
                    }
                    match self.copy_chunk(seg, off, &h) {
                        Ok(res) => moves.push((off, res)),
                        Err(e) if e.kind == ErrorKind::Corrupt => {
                            warn!("compaction drops a damaged chunk: {e}");
                            stats.corrupt.push(h.id);
                            // Same sequence number: kills this record and
                            // older ones, never a newer rewrite.
                            let t = Header::tombstone(h.id, h.seq);
                            kills.push((off, self.reserve(t, &[], false)?));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Kind::Tombstone => {
                    let needed = {
                        let st = read(&self.state);
                        let superseded = st.index.get(&h.id).is_some_and(|e| e.seq > h.seq);
                        !superseded
                            && st
                                .segs
                                .values()
                                .any(|s| s.id != seg.id && s.min_chunk_seq.load(SeqCst) <= h.seq)
                    };
                    if needed {
                        kept.push(self.reserve(h, &[], false)?);
                    }
                }
            }
        }

        let mut touched: BTreeMap<u32, Arc<Segment>> = BTreeMap::new();
        for res in moves
            .iter()
            .map(|m| &m.1)
            .chain(kills.iter().map(|k| &k.1))
            .chain(&kept)
        {
            touched.insert(res.seg.id, res.seg.clone());
            stats.bytes_moved += res.hdr.extent();
        }
        for s in touched.values() {
            s.sync()?;
        }

        {
            let mut st = write(&self.state);
            for (old_off, res) in &mut moves {
                res.committed = true;
                let Some(e) = st.index.get_mut(&res.hdr.id) else {
                    continue;
                };
                if e.seg != seg.id || e.off != *old_off {
                    // Deleted meanwhile; the copy is dead by its old seq.
                    continue;
                }
                e.seg = res.seg.id;
                e.off = res.off;
                let ext = e.extent();
                seg.live.fetch_sub(ext, SeqCst);
                res.seg.live.fetch_add(ext, SeqCst);
                stats.chunks_moved += 1;
            }
            for (old_off, res) in &mut kills {
                res.committed = true;
                let id = res.hdr.id;
                if st
                    .index
                    .get(&id)
                    .is_some_and(|e| e.seg == seg.id && e.off == *old_off)
                {
                    let e = st.index.remove(&id).unwrap();
                    seg.live.fetch_sub(e.extent(), SeqCst);
                }
            }
            for res in &mut kept {
                res.committed = true;
            }
            stats.tombstones_kept += kept.len() as u64;
            st.segs.remove(&seg.id);
        }
        drop((moves, kills, kept));
        // Readers holding the Arc<Segment> keep reading the unlinked file.
        std::fs::remove_file(&seg.path)
            .map_err(|e| Error::from(e).context(format!("removing {}", seg.path.display())))?;
        sync_dir(&self.dir)?;
        stats.segments_compacted += 1;
        stats.bytes_freed += seg.len.load(SeqCst).max(file_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const KIB: usize = 1024;

    fn opts(segment_size: u64) -> StoreOptions {
        StoreOptions {
            segment_size,
            reserve_free: 0,
        }
    }

    fn open(dir: &Path, segment_size: u64) -> ChunkStore {
        ChunkStore::open(dir, opts(segment_size)).unwrap()
    }

    fn data(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn put(s: &ChunkStore, id: u128, d: &[u8]) {
        s.put(ChunkId(id), d, &BlockCrcs::compute(d)).unwrap();
    }

    fn get(s: &ChunkStore, id: u128) -> Vec<u8> {
        let len = s.info(ChunkId(id)).unwrap().len;
        s.read(ChunkId(id), 0, len).unwrap()
    }

    fn extent(len: usize) -> u64 {
        HDR + 4 * BlockCrcs::blocks_for(len as u64) as u64 + len as u64
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    }

    fn flip(path: &Path, off: u64) {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, off).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], off).unwrap();
    }

    const SIZES: [usize; 6] = [0, 1, 64 * KIB - 1, 64 * KIB, 64 * KIB + 1, 5 << 20];

    #[test]
    fn store_is_send_sync_and_writer_is_send() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send + 'static>() {}
        send_sync::<ChunkStore>();
        send::<ChunkWriter>();
    }

    #[test]
    fn round_trip_sizes_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        for (i, &len) in SIZES.iter().enumerate() {
            put(&s, i as u128, &data(i as u64, len));
        }
        for (i, &len) in SIZES.iter().enumerate() {
            let d = data(i as u64, len);
            assert_eq!(get(&s, i as u128), d, "size {len}");
            let info = s.info(ChunkId(i as u128)).unwrap();
            assert_eq!(info.len, len as u64);
            assert_eq!(info.crc_summary, BlockCrcs::compute(&d).summary());
            assert_eq!(
                s.read_crcs(ChunkId(i as u128)).unwrap(),
                BlockCrcs::compute(&d)
            );
            s.verify(ChunkId(i as u128)).unwrap();
        }
        let stats = s.stats();
        assert_eq!(stats.chunks, SIZES.len() as u64);
        let want: u64 = SIZES.iter().map(|&l| extent(l)).sum();
        assert_eq!(stats.live_bytes, want);
        assert_eq!(stats.disk_bytes, want);
        assert!(stats.fs_total > 0);
        drop(s);

        let s = open(dir.path(), 1 << 30);
        assert_eq!(
            s.list(),
            (0..SIZES.len() as u128).map(ChunkId).collect::<Vec<_>>()
        );
        for (i, &len) in SIZES.iter().enumerate() {
            assert_eq!(get(&s, i as u128), data(i as u64, len));
        }
        assert_eq!(
            s.stats().live_bytes,
            SIZES.iter().map(|&l| extent(l)).sum::<u64>()
        );
        assert_eq!(
            s.read(ChunkId(99), 0, 0).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert!(s.info(ChunkId(99)).is_none());
    }

    #[test]
    fn ranged_reads_at_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let len = 3 * BLOCK_SIZE + 100;
        let d = data(7, len);
        put(&s, 1, &d);
        let b = BLOCK_SIZE as u64;
        let cases = [
            (0, 0),
            (0, 1),
            (b - 1, 2),
            (b, b),
            (b - 1, b + 2),
            (2 * b, b + 100),
            (3 * b, 100),
            (3 * b + 99, 1),
            (len as u64, 0),
            (5, len as u64 - 5),
        ];
        for (off, n) in cases {
            let got = s.read(ChunkId(1), off, n).unwrap();
            assert_eq!(got, &d[off as usize..(off + n) as usize], "{off}+{n}");
        }
        for (off, n) in [(0, len as u64 + 1), (len as u64, 1), (u64::MAX, 2)] {
            assert_eq!(
                s.read(ChunkId(1), off, n).unwrap_err().kind,
                ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn streamed_in_odd_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let d = data(3, 5 * BLOCK_SIZE + 17);
        let crcs = BlockCrcs::compute(&d);
        let mut w = s.begin_write(ChunkId(1), d.len() as u64, &crcs).unwrap();
        assert!(!w.is_duplicate());
        let mut rest = &d[..];
        for n in [1, 100, BLOCK_SIZE, 2 * BLOCK_SIZE + 5, 3, usize::MAX]
            .iter()
            .cycle()
        {
            let n = (*n).min(rest.len());
            w.write(&rest[..n]).unwrap();
            rest = &rest[n..];
            if rest.is_empty() {
                break;
            }
        }
        assert!(!s.contains(ChunkId(1)), "readable only after finish");
        w.finish().unwrap();
        assert_eq!(get(&s, 1), d);
    }

    #[test]
    fn torn_tail_loses_only_the_torn_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        put(&s, 1, &data(1, 100 * KIB));
        put(&s, 2, &data(2, 3000));
        put(&s, 3, &data(3, 200 * KIB));
        drop(s);
        let seg = &segments(dir.path())[0];
        let f = OpenOptions::new().write(true).open(seg).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 100 * KIB as u64).unwrap();
        drop(f);

        let s = open(dir.path(), 1 << 30);
        assert_eq!(get(&s, 1), data(1, 100 * KIB));
        assert_eq!(get(&s, 2), data(2, 3000));
        assert!(!s.contains(ChunkId(3)));
        put(&s, 3, &data(33, 5000));
        put(&s, 4, &data(4, 70 * KIB));
        drop(s);
        let s = open(dir.path(), 1 << 30);
        assert_eq!(
            s.list(),
            vec![ChunkId(1), ChunkId(2), ChunkId(3), ChunkId(4)]
        );
        assert_eq!(get(&s, 3), data(33, 5000));
        assert_eq!(get(&s, 4), data(4, 70 * KIB));
    }

    #[test]
    fn flipped_data_byte_is_reported_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let lens = [10 * KIB, 200 * KIB, 10 * KIB];
        for (i, &l) in lens.iter().enumerate() {
            put(&s, i as u128, &data(i as u64, l));
        }
        drop(s);
        // Byte 70000 of chunk 1: block 1.
        let off = extent(lens[0]) + HDR + 4 * 4 + 70_000;
        flip(&segments(dir.path())[0], off);

        let s = open(dir.path(), 1 << 30);
        let e = s.read(ChunkId(1), 0, 200 * KIB as u64).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(
            e.message.contains("block 1") && e.message.contains(&ChunkId(1).to_string()),
            "{e}"
        );
        assert_eq!(s.verify(ChunkId(1)).unwrap_err().kind, ErrorKind::Corrupt);
        // Blocks 0 and 2 are fine.
        assert_eq!(
            s.read(ChunkId(1), 0, 1000).unwrap(),
            &data(1, 200 * KIB)[..1000]
        );
        assert_eq!(
            s.read(ChunkId(1), 2 * BLOCK_SIZE as u64, 10).unwrap().len(),
            10
        );
        assert_eq!(get(&s, 0), data(0, lens[0]));
        assert_eq!(get(&s, 2), data(2, lens[2]));
        s.verify(ChunkId(2)).unwrap();
    }

    #[test]
    fn corrupt_header_in_the_middle_keeps_what_precedes() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        for i in 0..4u128 {
            put(&s, i, &data(i as u64, 20 * KIB));
        }
        drop(s);
        flip(&segments(dir.path())[0], 2 * extent(20 * KIB) + 20);

        let s = open(dir.path(), 1 << 30);
        assert_eq!(s.list(), vec![ChunkId(0), ChunkId(1)]);
        assert_eq!(get(&s, 1), data(1, 20 * KIB));
        put(&s, 9, &data(9, 1000));
        drop(s);
        let s = open(dir.path(), 1 << 30);
        assert_eq!(s.list(), vec![ChunkId(0), ChunkId(1), ChunkId(9)]);
    }

    #[test]
    fn delete_survives_reopen_and_id_can_be_reused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        put(&s, 1, &data(1, 1000));
        put(&s, 2, &data(2, 1000));
        assert!(s.delete(ChunkId(1)).unwrap());
        assert!(!s.delete(ChunkId(1)).unwrap());
        assert!(!s.delete(ChunkId(77)).unwrap());
        assert_eq!(
            s.read(ChunkId(1), 0, 1).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(s.stats().live_bytes, extent(1000));
        drop(s);
        let s = open(dir.path(), 1 << 30);
        assert_eq!(s.list(), vec![ChunkId(2)]);
        put(&s, 1, &data(11, 3000));
        assert_eq!(get(&s, 1), data(11, 3000));
        drop(s);
        let s = open(dir.path(), 1 << 30);
        assert_eq!(get(&s, 1), data(11, 3000));
        assert!(s.delete(ChunkId(1)).unwrap());
        drop(s);
        let s = open(dir.path(), 1 << 30);
        assert_eq!(s.list(), vec![ChunkId(2)]);
    }

    #[test]
    fn wrong_data_is_refused_at_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let d = data(1, 3 * BLOCK_SIZE);
        let crcs = BlockCrcs::compute(&d);
        let mut bad = d.clone();
        bad[BLOCK_SIZE + 3] ^= 1;
        let mut w = s.begin_write(ChunkId(1), d.len() as u64, &crcs).unwrap();
        w.write(&bad[..BLOCK_SIZE]).unwrap();
        let e = w.write(&bad[BLOCK_SIZE..]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.message.contains("block 1"), "{e}");
        assert_eq!(w.finish().unwrap_err().kind, ErrorKind::Corrupt);
        assert!(!s.contains(ChunkId(1)));

        // Wrong number of checksums, too much data, too little data.
        assert_eq!(
            s.begin_write(ChunkId(2), 10, &BlockCrcs(vec![]))
                .unwrap_err()
                .kind,
            ErrorKind::InvalidInput
        );
        let mut w = s
            .begin_write(ChunkId(2), 10, &BlockCrcs::compute(&[0; 10]))
            .unwrap();
        assert_eq!(w.write(&[0; 11]).unwrap_err().kind, ErrorKind::InvalidInput);
        drop(w);
        let mut w = s
            .begin_write(ChunkId(3), 10, &BlockCrcs::compute(&[0; 10]))
            .unwrap();
        w.write(&[0; 9]).unwrap();
        assert_eq!(w.finish().unwrap_err().kind, ErrorKind::InvalidInput);
        drop(s);
        let s = open(dir.path(), 1 << 30);
        assert!(s.list().is_empty());
        put(&s, 1, &d);
        assert_eq!(get(&s, 1), d);
    }

    #[test]
    fn dropped_writer_is_never_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let d = data(1, 100 * KIB);
        let mut w = s
            .begin_write(ChunkId(1), d.len() as u64, &BlockCrcs::compute(&d))
            .unwrap();
        w.write(&d).unwrap();
        assert_eq!(
            s.begin_write(ChunkId(1), 1, &BlockCrcs::compute(&[1]))
                .err()
                .unwrap()
                .kind,
            ErrorKind::Conflict
        );
        drop(w);
        put(&s, 2, &data(2, 10));
        assert!(!s.contains(ChunkId(1)));
        drop(s);
        let s = open(dir.path(), 1 << 30);
        assert_eq!(s.list(), vec![ChunkId(2)]);
        put(&s, 1, &d);
        assert_eq!(get(&s, 1), d);
    }

    #[test]
    fn rewriting_an_existing_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let d = data(1, 100 * KIB);
        put(&s, 1, &d);
        let before = s.stats().disk_bytes;
        let mut w = s
            .begin_write(ChunkId(1), d.len() as u64, &BlockCrcs::compute(&d))
            .unwrap();
        assert!(w.is_duplicate());
        w.write(&d).unwrap();
        w.finish().unwrap();
        assert_eq!(s.stats().disk_bytes, before);
        let other = data(2, 100 * KIB);
        let e = s
            .put(ChunkId(1), &other, &BlockCrcs::compute(&other))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert_eq!(get(&s, 1), d);
    }

    #[test]
    fn retry_repairs_a_damaged_copy() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        let d = data(1, 100 * KIB);
        put(&s, 1, &d);
        drop(s);
        flip(&segments(dir.path())[0], extent(0) + 8 + 50);
        let s = open(dir.path(), 1 << 30);
        assert_eq!(s.verify(ChunkId(1)).unwrap_err().kind, ErrorKind::Corrupt);
        let mut w = s
            .begin_write(ChunkId(1), d.len() as u64, &BlockCrcs::compute(&d))
            .unwrap();
        assert!(!w.is_duplicate());
        w.write(&d).unwrap();
        w.finish().unwrap();
        assert_eq!(get(&s, 1), d);
        assert_eq!(s.stats().live_bytes, extent(d.len()));
        drop(s);
        let s = open(dir.path(), 1 << 30);
        assert_eq!(get(&s, 1), d);
    }

    #[test]
    fn reserve_free_refuses_writes_but_not_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 1 << 30);
        put(&s, 1, &data(1, 1000));
        drop(s);
        let s = ChunkStore::open(
            dir.path(),
            StoreOptions {
                segment_size: 1 << 30,
                reserve_free: u64::MAX,
            },
        )
        .unwrap();
        let e = s
            .put(ChunkId(2), &[1, 2, 3], &BlockCrcs::compute(&[1, 2, 3]))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoSpace);
        assert_eq!(get(&s, 1), data(1, 1000));
        assert!(s.delete(ChunkId(1)).unwrap());
        assert!(s.list().is_empty());
    }

    #[test]
    fn second_open_of_the_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _s = open(dir.path(), 1 << 30);
        let e = ChunkStore::open(dir.path(), opts(1 << 30)).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Unavailable);
    }

    #[test]
    fn concurrent_writers_then_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(open(dir.path(), 256 * KIB as u64));
        let threads: Vec<_> = (0..16u128)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..200u128 {
                        let id = t * 1000 + i;
                        put(&s, id, &data(id as u64, 100 + (id as usize * 37) % 3000));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.list().len(), 3200);
        drop(s);
        let s = open(dir.path(), 256 * KIB as u64);
        assert_eq!(s.list().len(), 3200);
        for t in 0..16u128 {
            for i in 0..200u128 {
                let id = t * 1000 + i;
                assert_eq!(
                    get(&s, id),
                    data(id as u64, 100 + (id as usize * 37) % 3000)
                );
            }
        }
        assert!(segments(dir.path()).len() > 5);
    }

    #[test]
    fn segments_roll_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 200 * KIB as u64);
        for i in 0..10u128 {
            put(&s, i, &data(i as u64, 90 * KIB));
        }
        put(&s, 10, &data(10, 500 * KIB)); // bigger than a segment: alone in one
        put(&s, 11, &data(11, 10));
        assert!(
            segments(dir.path()).len() >= 6,
            "{:?}",
            segments(dir.path())
        );
        drop(s);
        let s = open(dir.path(), 200 * KIB as u64);
        for i in 0..10u128 {
            assert_eq!(get(&s, i), data(i as u64, 90 * KIB));
        }
        assert_eq!(get(&s, 10), data(10, 500 * KIB));
        assert_eq!(get(&s, 11), data(11, 10));
    }

    #[test]
    fn compaction_reclaims_space_and_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 256 * KIB as u64;
        let s = open(dir.path(), seg);
        for i in 0..40u128 {
            put(&s, i, &data(i as u64, 30 * KIB));
        }
        for i in 0..40u128 {
            if i % 4 != 0 {
                assert!(s.delete(ChunkId(i)).unwrap());
            }
        }
        let before = s.stats();
        let files_before = segments(dir.path()).len();
        let cs = s.compact(0.5).unwrap();
        let after = s.stats();
        assert!(cs.segments_compacted >= 3, "{cs:?}");
        assert!(
            cs.chunks_moved > 0 && cs.bytes_freed > cs.bytes_moved,
            "{cs:?}"
        );
        assert!(cs.corrupt.is_empty());
        assert!(after.disk_bytes < before.disk_bytes, "{before:?} {after:?}");
        assert_eq!(after.live_bytes, before.live_bytes);
        assert!(segments(dir.path()).len() < files_before);
        let check = |s: &ChunkStore| {
            assert_eq!(
                s.list(),
                (0..40u128)
                    .filter(|i| i % 4 == 0)
                    .map(ChunkId)
                    .collect::<Vec<_>>()
            );
            for i in (0..40u128).step_by(4) {
                assert_eq!(get(s, i), data(i as u64, 30 * KIB));
            }
        };
        check(&s);
        drop(s);
        let s = open(dir.path(), seg);
        check(&s);
        assert_eq!(s.stats().live_bytes, before.live_bytes);
        // Nothing is ever below a ratio of 0.
        put(&s, 100, &data(100, 10));
        assert_eq!(s.compact(0.0).unwrap(), CompactStats::default());
    }

    #[test]
    fn compaction_keeps_tombstones_whose_victims_remain() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 256 * KIB as u64;
        let s = open(dir.path(), seg);
        // Segment 0: the victim and a big live chunk keeping it over the ratio.
        put(&s, 1, &data(1, 10 * KIB));
        put(&s, 2, &data(2, 200 * KIB));
        // Segment 1: the tombstone among dead filler.
        put(&s, 3, &data(3, 100 * KIB));
        assert!(s.delete(ChunkId(1)).unwrap());
        put(&s, 4, &data(4, 100 * KIB));
        assert!(s.delete(ChunkId(3)).unwrap());
        assert!(s.delete(ChunkId(4)).unwrap());
        put(&s, 5, &data(5, 200 * KIB)); // rolls, so segment 1 is sealed
        let cs = s.compact(0.5).unwrap();
        assert!(
            cs.segments_compacted >= 1 && cs.tombstones_kept >= 1,
            "{cs:?}"
        );
        assert_eq!(segments(dir.path()).len(), 2, "segment 0 must survive");
        drop(s);
        let s = open(dir.path(), seg);
        assert_eq!(s.list(), vec![ChunkId(2), ChunkId(5)]);
    }

    #[test]
    fn compaction_reports_corrupt_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 256 * KIB as u64;
        let s = open(dir.path(), seg);
        put(&s, 1, &data(1, 30 * KIB));
        put(&s, 2, &data(2, 30 * KIB));
        put(&s, 3, &data(3, 180 * KIB));
        put(&s, 4, &data(4, 100 * KIB)); // rolls
        assert!(s.delete(ChunkId(3)).unwrap());
        drop(s);
        flip(
            &segments(dir.path())[0],
            extent(30 * KIB) + extent(0) + 4 + 100,
        );
        let s = open(dir.path(), seg);
        let cs = s.compact(0.5).unwrap();
        assert_eq!(cs.corrupt, vec![ChunkId(2)]);
        assert_eq!(cs.chunks_moved, 1);
        assert_eq!(s.list(), vec![ChunkId(1), ChunkId(4)]);
        drop(s);
        let s = open(dir.path(), seg);
        assert_eq!(s.list(), vec![ChunkId(1), ChunkId(4)]);
        assert_eq!(get(&s, 1), data(1, 30 * KIB));
    }

    #[test]
    fn reads_and_writes_during_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 128 * KIB as u64;
        let s = Arc::new(open(dir.path(), seg));
        for i in 0..60u128 {
            put(&s, i, &data(i as u64, 20 * KIB));
        }
        for i in (0..60u128).filter(|i| i % 3 != 0) {
            s.delete(ChunkId(i)).unwrap();
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(SeqCst) || n == 0 {
                    for i in (0..60u128).step_by(3) {
                        assert_eq!(get(&s, i), data(i as u64, 20 * KIB));
                    }
                    n += 1;
                }
            })
        };
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 100..160u128 {
                    put(&s, i, &data(i as u64, 5 * KIB));
                    if i % 2 == 0 {
                        s.delete(ChunkId(i)).unwrap();
                    }
                }
            })
        };
        let cs = s.compact(0.5).unwrap();
        writer.join().unwrap();
        stop.store(true, SeqCst);
        reader.join().unwrap();
        assert!(cs.segments_compacted > 0);
        let want: Vec<ChunkId> = (0..60u128)
            .filter(|i| i % 3 == 0)
            .chain((100..160).filter(|i| i % 2 == 1))
            .map(ChunkId)
            .collect();
        assert_eq!(s.list(), want);
        drop(s);
        let s = open(dir.path(), seg);
        assert_eq!(s.list(), want);
        for &id in &want {
            s.verify(id).unwrap();
        }
    }

    /// A damaged segment file (bytes changed, inserted or cut anywhere,
    /// headers and checksums included) never panics the store, never makes
    /// it allocate what a length field claims, and never serves bytes other
    /// than those written: opening and reading either give the written
    /// bytes or an error.
    #[test]
    fn damaged_segments_never_serve_wrong_bytes() {
        let lens = [0usize, 1, 1000, BLOCK_SIZE, BLOCK_SIZE + 7, 150 * KIB];
        let written: BTreeMap<u128, Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| (i as u128, data(i as u64 + 7, len)))
            .collect();
        let template = tempfile::tempdir().unwrap();
        {
            let s = open(template.path(), 200 * KIB as u64);
            for (id, d) in &written {
                put(&s, *id, d);
            }
        }
        let segments: Vec<std::path::PathBuf> = std::fs::read_dir(template.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        assert!(!segments.is_empty());
        let edits = proptest::collection::vec((any::<u64>(), any::<u8>(), 0u8..4), 1..6);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        runner
            .run(&(0..segments.len(), edits), |(which, edits)| {
                let dir = tempfile::tempdir().unwrap();
                for e in std::fs::read_dir(template.path()).unwrap() {
                    let e = e.unwrap();
                    std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
                }
                let victim = dir.path().join(segments[which].file_name().unwrap());
                let mut bytes = std::fs::read(&victim).unwrap();
                for (at, byte, how) in edits {
                    if bytes.is_empty() {
                        break;
                    }
                    let i = (at % bytes.len() as u64) as usize;
                    match how {
                        0 => bytes[i] = byte,
                        1 => bytes[i] ^= 1 << (byte % 8),
                        2 => bytes.insert(i, byte),
                        _ => bytes.truncate(i),
                    }
                }
                std::fs::write(&victim, &bytes).unwrap();
                let Ok(s) = ChunkStore::open(dir.path(), opts(200 * KIB as u64)) else {
                    return Ok(());
                };
                for id in s.list() {
                    let Some(want) = written.get(&id.0) else {
                        // A damaged header may name a chunk never written;
                        // its bytes must not pass their checksums.
                        prop_assert!(
                            s.verify(id).is_err() || s.info(id).is_some_and(|i| i.len == 0)
                        );
                        continue;
                    };
                    let len = s.info(id).map_or(0, |i| i.len);
                    if let Ok(got) = s.read(id, 0, len) {
                        prop_assert_eq!(&got, want, "chunk {} read back other bytes", id);
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write { id: u8, len: usize, seed: u8 },
        Delete { id: u8 },
        Reopen,
        Compact { ratio: f64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let len = prop_oneof![
            Just(0usize),
            Just(1),
            Just(1000),
            Just(BLOCK_SIZE),
            Just(BLOCK_SIZE + 7),
            Just(150 * KIB)
        ];
        prop_oneof![
            6 => (0u8..8, len, 0u8..2).prop_map(|(id, len, seed)| Op::Write { id, len, seed }),
            3 => (0u8..8).prop_map(|id| Op::Delete { id }),
            1 => Just(Op::Reopen),
            2 => (0.0f64..1.0).prop_map(|ratio| Op::Compact { ratio }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let seg = 200 * KIB as u64;
            let mut s = open(dir.path(), seg);
            let mut model: BTreeMap<ChunkId, Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Write { id, len, seed } => {
                        let id = ChunkId(id as u128);
                        let d = data(seed as u64 * 1000 + len as u64, len);
                        let r = s.put(id, &d, &BlockCrcs::compute(&d));
                        match model.get(&id) {
                            Some(old) if *old == d => r.unwrap(),
                            Some(_) => prop_assert_eq!(r.unwrap_err().kind, ErrorKind::AlreadyExists),
                            None => {
                                r.unwrap();
                                model.insert(id, d);
                            }
                        }
                    }
                    Op::Delete { id } => {
                        let id = ChunkId(id as u128);
                        prop_assert_eq!(s.delete(id).unwrap(), model.remove(&id).is_some());
                    }
                    Op::Reopen => {
                        drop(s);
                        s = open(dir.path(), seg);
                    }
                    Op::Compact { ratio } => {
                        let cs = s.compact(ratio).unwrap();
                        prop_assert!(cs.corrupt.is_empty());
                    }
                }
                prop_assert_eq!(s.list(), model.keys().copied().collect::<Vec<_>>());
                let live: u64 = model.values().map(|d| extent(d.len())).sum();
                prop_assert_eq!(s.stats().live_bytes, live);
            }
            for (id, d) in &model {
                prop_assert_eq!(&get(&s, id.0), d);
            }
            drop(s);
            let s = open(dir.path(), seg);
            prop_assert_eq!(s.list(), model.keys().copied().collect::<Vec<_>>());
            for (id, d) in &model {
                prop_assert_eq!(&get(&s, id.0), d);
            }
            let live: u64 = model.values().map(|d| extent(d.len())).sum();
            prop_assert_eq!(s.stats().live_bytes, live);
        }
    }
}
