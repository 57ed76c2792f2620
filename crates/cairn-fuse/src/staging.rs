//! Files open for writing, staged in a local cache file.
//!
//! Cairn versions are immutable, so a write at any offset cannot change
//! stored chunks: the file is staged whole in an (unlinked) cache file under
//! `--cache-dir` — copied from Cairn on open unless truncated, streamed
//! chunk by chunk, never whole in memory — and uploaded as a new version on
//! flush, fsync and release. All handles of one ino on this mount share one
//! staged file, so they see each other's writes.
//!
//! `--cache-size` caps the bytes of all staged files together
//! ([`CacheBudget`]): a write, truncate or open for writing that would go
//! over it fails with `ENOSPC` (every staged byte belongs to a file still
//! open, so there is nothing clean to evict), and the space comes back when
//! the file's last handle is released.

use cairn_client::{Client, FileReader, PutOptions};
use cairn_types::{CairnPath, Cues, Error, Inode, Result};
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::OnceCell;

/// The byte cap on all staged files of one mount.
pub struct CacheBudget {
    limit: Option<u64>,
    used: AtomicU64,
}

impl CacheBudget {
    pub fn new(limit: Option<u64>) -> CacheBudget {
        CacheBudget {
            limit,
            used: AtomicU64::new(0),
        }
    }

    fn take(&self, n: u64) -> Result<()> {
        let Some(limit) = self.limit else {
            self.used.fetch_add(n, Ordering::Relaxed);
            return Ok(());
        };
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&total| total <= limit)
            })
            .map(|_| ())
            .map_err(|used| {
                Error::no_space(format!(
                    "the mount's cache is full: {used} of {limit} bytes (--cache-size) are held by files open for writing, {n} more needed; close some or raise --cache-size"
                ))
            })
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::Relaxed);
    }
}

pub struct Staged {
    pub ino: u64,
    file: Arc<std::fs::File>,
    budget: Arc<CacheBudget>,
    /// Bytes charged to the budget: the cache file's length.
    charged: Mutex<u64>,
    /// Last known inode (mode, times); the size is the cache file's.
    inode: Mutex<Inode>,
    /// (writes so far, writes included in the last upload).
    generations: Mutex<(u64, u64)>,
    /// One upload at a time; a write during an upload is uploaded next time.
    upload: tokio::sync::Mutex<()>,
}

/// Cache-file reads and writes up to this size run on the calling thread:
/// a page-cache copy of a few pages costs less than handing it to another
/// thread and back (what small files are made of). Larger ones go to the
/// blocking pool.
pub const INLINE_IO: usize = 128 << 10;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("cache file task failed: {e}")))?
        .map_err(|e| Error::from(e).context("cache file"))
}

impl Staged {
    /// A new empty cache file; filled from `reader` when given.
    pub async fn create(
        cache_dir: &Path,
        budget: Arc<CacheBudget>,
        ino: u64,
        inode: Inode,
        reader: Option<FileReader>,
    ) -> Result<Staged> {
        // An open and an unlink in a local directory: quick enough to run here.
        let file =
            tempfile::tempfile_in(cache_dir).map_err(|e| Error::from(e).context("cache file"))?;
        let file = Arc::new(file);
        let staged = Staged {
            ino,
            file,
            budget,
            charged: Mutex::new(0),
            inode: Mutex::new(inode),
            generations: Mutex::new((0, 0)),
            upload: tokio::sync::Mutex::new(()),
        };
        if let Some(reader) = reader {
            staged.charge_len(reader.inode().size)?;
            let mut out = tokio::fs::File::from_std(staged.file.try_clone()?);
            reader.copy_to(&mut out).await?;
            out.flush().await?;
        }
        Ok(staged)
    }

    /// Copy the version `reader` has open into this (new, empty) file, a
    /// bounded piece at a time.
    pub async fn fill_from(&self, reader: &FileReader) -> Result<()> {
        const PIECE: u64 = 4 << 20;
        self.charge_len(reader.size())?;
        let mut off = 0;
        while off < reader.size() {
            let data = reader.read_at(off, PIECE).await?;
            let n = data.len() as u64;
            let f = self.file.clone();
            blocking(move || f.write_all_at(&data, off)).await?;
            off += n;
        }
        Ok(())
    }

    /// Charge the budget for a cache file of `len` bytes (or give back).
    fn charge_len(&self, len: u64) -> Result<()> {
        let mut charged = self.charged.lock().unwrap();
        if len > *charged {
            self.budget.take(len - *charged)?;
        } else {
            self.budget.give_back(*charged - len);
        }
        *charged = len;
        Ok(())
    }

    /// Charge for growing to at least `len` (a write at any offset).
    fn charge_at_least(&self, len: u64) -> Result<()> {
        let mut charged = self.charged.lock().unwrap();
        if len > *charged {
            self.budget.take(len - *charged)?;
            *charged = len;
        }
        Ok(())
    }

    /// Take attributes changed meanwhile (mode, owner) into the next upload.
    pub fn set_inode(&self, inode: Inode) {
        *self.inode.lock().unwrap() = inode;
    }

    /// Whether writes since the last upload are still only here.
    pub fn is_dirty(&self) -> bool {
        let g = self.generations.lock().unwrap();
        g.0 != g.1
    }

    pub fn inode(&self) -> Inode {
        self.inode.lock().unwrap().clone()
    }

    /// Count the file as changed: the next flush uploads it even if
    /// nothing is written (a file just created, whose create meta may
    /// acknowledge before it is on disk: the close makes it durable).
    /// Until the upload, its mtime and ctime are those of this change (a
    /// `stat` of the open file shows them; meta's commit time follows).
    pub fn mark_dirty(&self) {
        self.generations.lock().unwrap().0 += 1;
        let now = cairn_types::now_ns();
        let mut inode = self.inode.lock().unwrap();
        inode.mtime_ns = now;
        inode.ctime_ns = now;
    }

    /// The cache file's length (an fstat: no need to leave the thread).
    pub fn len_now(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::from(e).context("cache file"))
    }

    pub async fn write_at(&self, data: Vec<u8>, offset: u64) -> Result<usize> {
        if data.len() <= INLINE_IO {
            return self.write_now(&data, offset);
        }
        let f = self.file.clone();
        let n = data.len();
        self.charge_at_least(offset.saturating_add(n as u64))?;
        if let Err(e) = blocking(move || f.write_all_at(&data, offset)).await {
            self.recharge();
            return Err(e);
        }
        self.mark_dirty();
        Ok(n)
    }

    /// [`Self::write_at`] on this thread, for writes up to [`INLINE_IO`].
    pub fn write_now(&self, data: &[u8], offset: u64) -> Result<usize> {
        self.charge_at_least(offset.saturating_add(data.len() as u64))?;
        if let Err(e) = self.file.write_all_at(data, offset) {
            self.recharge();
            return Err(Error::from(e).context("cache file"));
        }
        self.mark_dirty();
        Ok(data.len())
    }

    /// After a failed write or truncate: charge what the file holds.
    fn recharge(&self) {
        if let Ok(len) = self.len_now() {
            let _ = self.charge_len(len);
        }
    }

    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len <= INLINE_IO {
            return read_exact_at(&self.file, offset, len)
                .map_err(|e| Error::from(e).context("cache file"));
        }
        let f = self.file.clone();
        blocking(move || read_exact_at(&f, offset, len)).await
    }
}

/// Up to `len` bytes at `offset` (fewer at the end of the file).
fn read_exact_at(f: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read_at(&mut buf[got..], offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    Ok(buf)
}

impl Staged {
    pub async fn set_len(&self, len: u64) -> Result<()> {
        let f = self.file.clone();
        let grow = len > *self.charged.lock().unwrap();
        if grow {
            self.charge_len(len)?;
        }
        if let Err(e) = blocking(move || f.set_len(len)).await {
            self.recharge();
            return Err(e);
        }
        if !grow {
            self.charge_len(len)?;
        }
        self.mark_dirty();
        Ok(())
    }

    /// Upload the cache file as the next version of `path`, with the cues
    /// of the access that opened it, if anything changed since the last
    /// upload. Last writer wins, as with a local file two programs rewrite.
    pub async fn upload(&self, client: &Client, path: &CairnPath, cues: Cues) -> Result<()> {
        let _one = self.upload.lock().await;
        let generation = {
            let g = self.generations.lock().unwrap();
            if g.0 == g.1 {
                return Ok(());
            }
            g.0
        };
        // No mode: the new version keeps the one in meta, so a chmod made
        // meanwhile (on any mount) is not undone by this upload.
        let opts = PutOptions {
            cues,
            ..PutOptions::default()
        };
        let len = self.len_now()?;
        let inode = if len <= INLINE_IO as u64 {
            // A small file: read here, sent from memory.
            let data = read_exact_at(&self.file, 0, len as usize)
                .map_err(|e| Error::from(e).context("cache file"))?;
            client.put(path, &data[..], opts).await?
        } else {
            let mut src = tokio::fs::File::from_std(self.file.try_clone()?);
            src.seek(std::io::SeekFrom::Start(0)).await?;
            client.put(path, src, opts).await?
        };
        *self.inode.lock().unwrap() = inode;
        let mut g = self.generations.lock().unwrap();
        g.1 = g.1.max(generation);
        Ok(())
    }
}

impl Staged {
    /// Take in a newer version of `path` committed elsewhere, unless this
    /// mount has writes of its own still to upload (they win, as at
    /// upload). Answers whether the content changed. For lock-to-unlock
    /// coherence: a program that takes a lock sees what the last holder
    /// wrote, although it keeps the file open.
    pub async fn refresh(&self, client: &Client, path: &CairnPath, cues: &Cues) -> Result<bool> {
        let _one = self.upload.lock().await;
        if self.is_dirty() {
            return Ok(false);
        }
        let reader = client.open_cued(path, cues).await?;
        if reader.inode().version == self.inode().version {
            return Ok(false);
        }
        let f = self.file.clone();
        blocking(move || f.set_len(0)).await?;
        self.charge_len(0)?;
        self.fill_from(&reader).await?;
        let (f, len) = (self.file.clone(), reader.size());
        blocking(move || f.set_len(len)).await?;
        *self.inode.lock().unwrap() = reader.inode().clone();
        Ok(true)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.budget.give_back(*self.charged.get_mut().unwrap());
    }
}

struct Slot {
    cell: Arc<OnceCell<Arc<Staged>>>,
    opens: usize,
}

/// Staged files by ino, each with the number of handles (or truncates) using it.
pub struct StageTable {
    pub cache_dir: PathBuf,
    pub budget: Arc<CacheBudget>,
    slots: Mutex<HashMap<u64, Slot>>,
}

impl StageTable {
    pub fn new(cache_dir: PathBuf, cache_size: Option<u64>) -> StageTable {
        StageTable {
            cache_dir,
            budget: Arc::new(CacheBudget::new(cache_size)),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The staged file of `ino`, made by `init` if this mount has none yet.
    /// Pair every successful call with [`StageTable::release`].
    pub async fn acquire<F, Fut>(&self, ino: u64, init: F) -> Result<(Arc<Staged>, bool)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Staged>>,
    {
        let cell = {
            let mut slots = self.slots.lock().unwrap();
            let slot = slots.entry(ino).or_insert_with(|| Slot {
                cell: Arc::new(OnceCell::new()),
                opens: 0,
            });
            slot.opens += 1;
            slot.cell.clone()
        };
        let mut fresh = false;
        let r = cell
            .get_or_try_init(|| async {
                fresh = true;
                init().await.map(Arc::new)
            })
            .await;
        match r {
            Ok(s) => Ok((s.clone(), fresh)),
            Err(e) => {
                self.release(ino);
                Err(e)
            }
        }
    }

    /// Drop one use; the staged file goes when its last user does.
    pub fn release(&self, ino: u64) {
        let mut slots = self.slots.lock().unwrap();
        if let Some(slot) = slots.get_mut(&ino) {
            slot.opens -= 1;
            if slot.opens == 0 {
                slots.remove(&ino);
            }
        }
    }

    /// One more use of the staged file of `ino`, if one is ready.
    pub fn share(&self, ino: u64) -> Option<Arc<Staged>> {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&ino)?;
        let staged = slot.cell.get()?.clone();
        slot.opens += 1;
        Some(staged)
    }

    /// The staged file of `ino` if one is open and ready.
    pub fn peek(&self, ino: u64) -> Option<Arc<Staged>> {
        let slots = self.slots.lock().unwrap();
        slots.get(&ino).and_then(|s| s.cell.get().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_the_cap_and_takes_back() {
        let b = CacheBudget::new(Some(100));
        b.take(60).unwrap();
        let e = b.take(41).unwrap_err();
        assert_eq!(e.kind, cairn_types::ErrorKind::NoSpace, "{e}");
        b.take(40).unwrap();
        b.give_back(50);
        b.take(50).unwrap();
        assert_eq!(b.used.load(Ordering::Relaxed), 100);
        let unlimited = CacheBudget::new(None);
        unlimited.take(u64::MAX / 2).unwrap();
    }
}
