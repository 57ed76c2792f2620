//! Whole trees: `cairn put -r LOCAL_DIR PATH` and `cairn get -r PATH
//! LOCAL_DIR`. Files go in parallel (`-j`), directories are made first,
//! symlinks and modes (and mtimes) are kept as the mount keeps them, and a
//! summary ends the run; any failure is listed and makes the exit non-zero.

use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use cairn_client::{Client, PutOptions};
use cairn_types::{AttrChanges, CairnPath, ErrorKind, InodeKind, NewNode};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::task::JoinSet;

/// Default parallel transfers: enough to keep a few nodes busy.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 4)
        .unwrap_or(8)
        .clamp(4, 32)
}

/// What a tree transfer did.
#[derive(Default)]
struct Summary {
    files: u64,
    bytes: u64,
    links: u64,
    dirs: u64,
    skipped: Vec<String>,
    failed: Vec<(String, String)>,
    /// Ctrl-C stopped the transfer.
    interrupted: bool,
}

impl Summary {
    fn finish(self, what: &str, started: Instant) -> Result<()> {
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        eprintln!(
            "{what}: {} files, {} bytes ({:.1} MiB/s), {} directories, {} symlinks in {:.1} s; {} skipped, {} failed",
            self.files,
            self.bytes,
            self.bytes as f64 / (1 << 20) as f64 / secs,
            self.dirs,
            self.links,
            secs,
            self.skipped.len(),
            self.failed.len()
        );
        for s in &self.skipped {
            eprintln!("  skipped {s}");
        }
        for (p, e) in &self.failed {
            eprintln!("  FAILED {p}: {e}");
        }
        if self.interrupted {
            bail!(
                "interrupted: {} files were copied whole; the files in flight were stopped and left nothing half-written",
                self.files
            );
        }
        if !self.failed.is_empty() {
            bail!(
                "{} of {} transfers failed",
                self.failed.len(),
                self.files as usize + self.failed.len()
            );
        }
        Ok(())
    }
}

/// A local file being uploaded, which ends in an error instead of at its
/// end if the file changed while it was read (its size or modification
/// time differ from when it was opened, or fewer or more bytes came), so
/// that a torn copy is never committed. Checked with one `fstat` at the
/// end. A change within the file system's timestamp granularity that keeps
/// the size is not seen (as with rsync).
pub(crate) struct Unchanged {
    file: tokio::fs::File,
    stat: std::fs::File,
    path: PathBuf,
    size: u64,
    mtime: Option<std::time::SystemTime>,
    read: u64,
    /// Only a regular file has a size to hold it to (a pipe or a device,
    /// `cairn put /dev/stdin`, streams as it comes).
    regular: bool,
}

impl Unchanged {
    pub(crate) async fn open(path: &Path) -> Result<Unchanged> {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let m = f.metadata()?;
        let stat = f.try_clone()?;
        Ok(Unchanged {
            file: tokio::fs::File::from_std(f),
            stat,
            path: path.to_path_buf(),
            size: m.len(),
            mtime: m.modified().ok(),
            read: 0,
            regular: m.is_file(),
        })
    }

    /// Whether the file now differs from when it was opened.
    fn changed(&self) -> bool {
        match self.stat.metadata() {
            Ok(m) => m.len() != self.size || m.modified().ok() != self.mtime,
            Err(_) => true,
        }
    }
}

impl tokio::io::AsyncRead for Unchanged {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let r = std::pin::Pin::new(&mut self.file).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            self.read += n;
            let torn = (n == 0 && room && (self.read != self.size || self.changed()))
                || self.read > self.size;
            if torn && self.regular {
                // An error hands back nothing read by this call.
                buf.set_filled(before);
                return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                    "{} changed while it was read; not committed",
                    self.path.display()
                ))));
            }
        }
        r
    }
}

/// Upload the local file `local` as `path`, whole and as it was at one
/// moment: a file that changes while it is read is read again (three
/// tries), and never committed torn.
pub(crate) async fn put_local(
    c: &Client,
    local: &Path,
    path: &CairnPath,
    opts: PutOptions,
    progress: &Progress,
) -> Result<cairn_types::Inode> {
    const TRIES: usize = 3;
    for attempt in 1..=TRIES {
        let f = Unchanged::open(local).await?;
        let (size, mtime, regular) = (f.size, f.mtime, f.regular);
        match c.put(path, progress.counted(f), opts.clone()).await {
            Ok(i) => return Ok(i),
            Err(e) => {
                let now = std::fs::metadata(local).ok();
                let moved = now.is_none_or(|m| m.len() != size || m.modified().ok() != mtime);
                if !moved || !regular {
                    return Err(e.into());
                }
                if attempt == TRIES {
                    bail!(
                        "{} kept changing while it was read ({TRIES} tries); not committed",
                        local.display()
                    );
                }
            }
        }
    }
    unreachable!("the last try returns")
}

/// Set once Ctrl-C (SIGINT) arrives during a tree transfer: no new file
/// starts, the ones in flight are stopped (an upload stopped before its
/// commit leaves nothing visible; a download's partial file is removed),
/// and the summary says what was done.
#[derive(Clone, Default)]
pub(crate) struct Interrupt(Arc<std::sync::atomic::AtomicBool>);

impl Interrupt {
    /// Watch for Ctrl-C from now on.
    pub(crate) fn watch() -> Interrupt {
        let i = Interrupt::default();
        let flag = i.0.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        i
    }

    pub(crate) fn happened(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A free transfer slot, or none once Ctrl-C came.
pub(crate) async fn slot(
    gate: &Arc<tokio::sync::Semaphore>,
    stop: &Interrupt,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let acquire = gate.clone().acquire_owned();
    tokio::pin!(acquire);
    loop {
        if stop.happened() {
            return None;
        }
        tokio::select! {
            p = &mut acquire => return p.ok(),
            _ = tick.tick() => {}
        }
    }
}

/// Local partial files of downloads in flight, removed if they are
/// stopped.
#[derive(Clone, Default)]
pub(crate) struct Partial(Arc<std::sync::Mutex<std::collections::HashSet<PathBuf>>>);

impl Partial {
    pub(crate) fn add(&self, p: &Path) {
        self.0.lock().unwrap().insert(p.to_path_buf());
    }

    pub(crate) fn done(&self, p: &Path) {
        self.0.lock().unwrap().remove(p);
    }

    /// Remove what is left (after the downloads were stopped).
    pub(crate) fn remove_all(&self) {
        for p in self.0.lock().unwrap().drain() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bytes and files of regular files under `dir` (for progress; what
/// cannot be read counts as nothing, the transfer reports it).
fn local_totals(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) if m.is_file() => {
                    bytes += m.len();
                    files += 1;
                }
                _ => {}
            }
        }
    }
    (bytes, files)
}

fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Make `path` a directory (an existing one is fine).
async fn ensure_dir(c: &Client, path: &CairnPath) -> Result<()> {
    match c.mkdir(path, true).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `cairn put -r`: every file, directory and symlink under `local` into `dst`.
pub async fn put_tree(
    c: &Client,
    local: &Path,
    dst: &CairnPath,
    opts: PutOptions,
    jobs: usize,
) -> Result<()> {
    let started = Instant::now();
    let top = std::fs::symlink_metadata(local)
        .with_context(|| format!("cannot read {}", local.display()))?;
    if !top.is_dir() {
        bail!(
            "{} is not a directory (put -r copies a directory tree)",
            local.display()
        );
    }
    let mut sum = Summary::default();
    let (total_bytes, total_files) = local_totals(local);
    let progress = Progress::start("put", Some(total_bytes), Some(total_files), false);
    let gate = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks: JoinSet<(String, Result<u64>)> = JoinSet::new();
    let mut todo: Vec<(PathBuf, CairnPath)> = vec![(local.to_path_buf(), dst.clone())];
    let stop = Interrupt::watch();
    'walk: while let Some((dir, cdir)) = todo.pop() {
        ensure_dir(c, &cdir)
            .await
            .with_context(|| format!("making {cdir}"))?;
        sum.dirs += 1;
        let listed = std::fs::read_dir(&dir).and_then(|d| d.collect::<std::io::Result<Vec<_>>>());
        let mut entries = match listed {
            Ok(e) => e,
            Err(err) => {
                // An unreadable directory: the rest still goes.
                sum.failed
                    .push((dir.display().to_string(), format!("cannot list: {err}")));
                continue;
            }
        };
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if stop.happened() {
                break 'walk;
            }
            let lpath = e.path();
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                sum.skipped
                    .push(format!("{} (name is not UTF-8)", lpath.display()));
                continue;
            };
            let cpath = match cdir.join(&name) {
                Ok(p) => p,
                Err(err) => {
                    sum.failed
                        .push((lpath.display().to_string(), err.to_string()));
                    continue;
                }
            };
            let meta = match std::fs::symlink_metadata(&lpath) {
                Ok(m) => m,
                Err(err) => {
                    sum.failed
                        .push((lpath.display().to_string(), err.to_string()));
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                todo.push((lpath, cpath));
            } else if ft.is_symlink() {
                let target = match std::fs::read_link(&lpath) {
                    Ok(t) => t.to_string_lossy().into_owned(),
                    Err(err) => {
                        sum.failed
                            .push((lpath.display().to_string(), err.to_string()));
                        continue;
                    }
                };
                match put_symlink(c, &cpath, &target).await {
                    Ok(()) => sum.links += 1,
                    Err(err) => sum.failed.push((cpath.to_string(), err.to_string())),
                }
            } else if ft.is_file() {
                let Some(permit) = slot(&gate, &stop).await else {
                    break 'walk;
                };
                let (c, mut o, progress) = (c.clone(), opts.clone(), progress.clone());
                o.mode = Some(meta.mode() & 0o7777);
                let mtime = mtime_ns(&meta);
                tasks.spawn(async move {
                    let _permit = permit;
                    let r = async {
                        let inode = put_local(&c, &lpath, &cpath, o, &progress).await?;
                        let keep = AttrChanges {
                            mtime_ns: Some(mtime),
                            ..Default::default()
                        };
                        c.set_attr(&cpath, Some(inode.id), keep).await?;
                        anyhow::Ok(inode.size)
                    }
                    .await;
                    (cpath.to_string(), r)
                });
            } else {
                sum.skipped.push(format!(
                    "{} (not a file, directory or symlink)",
                    lpath.display()
                ));
            }
            while let Some(done) = tasks.try_join_next() {
                record(&mut sum, &progress, done);
            }
        }
    }
    finish_tasks(&mut tasks, &mut sum, &progress, &stop, None).await;
    sum.finish("put", started)
}

fn record(
    sum: &mut Summary,
    progress: &Progress,
    done: std::result::Result<(String, Result<u64>), tokio::task::JoinError>,
) {
    match done {
        Ok((_, Ok(n))) => {
            progress.file_done();
            sum.files += 1;
            sum.bytes += n;
        }
        Ok((p, Err(e))) => sum.failed.push((p, format!("{e:#}"))),
        Err(e) => sum.failed.push(("(a transfer task)".into(), e.to_string())),
    }
}

async fn put_symlink(c: &Client, path: &CairnPath, target: &str) -> Result<()> {
    let node = || NewNode::Symlink {
        target: target.to_string(),
    };
    match c.make_node(path, node(), 0o777, (None, None)).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind == ErrorKind::AlreadyExists => {
            // Replace what is there unless it is the same link already.
            let i = c.stat(path).await?;
            if i.target.as_deref() == Some(target) {
                return Ok(());
            }
            if i.kind == InodeKind::Directory {
                bail!("{path} is a directory, the local one a symlink");
            }
            c.remove(path, false).await?;
            c.make_node(path, node(), 0o777, (None, None)).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `cairn get -r`: every file, directory and symlink under `src` into `local`.
pub async fn get_tree(c: &Client, src: &CairnPath, local: &Path, jobs: usize) -> Result<()> {
    let started = Instant::now();
    let top = c.stat(src).await?;
    if top.kind != InodeKind::Directory {
        bail!("{src} is not a directory (get -r copies a directory tree)");
    }
    let mut sum = Summary::default();
    let progress = Progress::start("get", None, None, false);
    let (stop, partial) = (Interrupt::watch(), Partial::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks: JoinSet<(String, Result<u64>)> = JoinSet::new();
    let mut todo: Vec<(CairnPath, PathBuf)> = vec![(src.clone(), local.to_path_buf())];
    'walk: while let Some((cdir, dir)) = todo.pop() {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
        sum.dirs += 1;
        let mut after: Option<String> = None;
        loop {
            let page = c.list_page(&cdir, after.clone(), 1000).await?;
            for e in &page {
                if stop.happened() {
                    break 'walk;
                }
                let cpath = cdir.join(&e.name)?;
                let lpath = dir.join(&e.name);
                match e.inode.kind {
                    InodeKind::Directory => todo.push((cpath, lpath)),
                    InodeKind::Symlink => {
                        let target = e.inode.target.clone().unwrap_or_default();
                        let _ = std::fs::remove_file(&lpath);
                        match std::os::unix::fs::symlink(&target, &lpath) {
                            Ok(()) => sum.links += 1,
                            Err(err) => sum
                                .failed
                                .push((lpath.display().to_string(), err.to_string())),
                        }
                    }
                    InodeKind::File => {
                        let Some(permit) = slot(&gate, &stop).await else {
                            break 'walk;
                        };
                        let (c, progress, partial) = (c.clone(), progress.clone(), partial.clone());
                        let (mode, mtime) = (e.inode.mode & 0o7777, e.inode.mtime_ns);
                        tasks.spawn(async move {
                            let _permit = permit;
                            let to = Target {
                                path: &lpath,
                                mode,
                                mtime_ns: mtime,
                            };
                            let r = get_file(&c, &cpath, to, &progress, &partial).await;
                            (cpath.to_string(), r)
                        });
                    }
                    // FIFOs, sockets and device nodes have no bytes to copy.
                    InodeKind::Fifo
                    | InodeKind::Socket
                    | InodeKind::CharDevice
                    | InodeKind::BlockDevice => {}
                }
                while let Some(done) = tasks.try_join_next() {
                    record(&mut sum, &progress, done);
                }
            }
            match page.last() {
                Some(l) if page.len() == 1000 => after = Some(l.name.clone()),
                _ => break,
            }
        }
    }
    finish_tasks(&mut tasks, &mut sum, &progress, &stop, Some(&partial)).await;
    sum.finish("get", started)
}

/// Where a downloaded file goes, with the mode and mtime it gets.
struct Target<'a> {
    path: &'a Path,
    mode: u32,
    mtime_ns: u64,
}

/// One file, beside its target and renamed at the end, so a failure
/// leaves no partial file.
async fn get_file(
    c: &Client,
    src: &CairnPath,
    to: Target<'_>,
    progress: &Progress,
    partial: &Partial,
) -> Result<u64> {
    let reader = c.open(src).await?;
    let size = reader.size();
    let tmp = PathBuf::from(format!("{}.cairn-part", to.path.display()));
    partial.add(&tmp);
    let r = async {
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        reader.copy_to(&mut progress.counted(&mut f)).await?;
        f.sync_all().await?;
        let f = f.into_std().await;
        let mode = if to.mode == 0 { 0o644 } else { to.mode };
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.set_modified(UNIX_EPOCH + Duration::from_nanos(to.mtime_ns))?;
        drop(f);
        tokio::fs::rename(&tmp, to.path)
            .await
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), to.path.display()))?;
        anyhow::Ok(size)
    }
    .await;
    if r.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    partial.done(&tmp);
    r
}

/// Hand every task's outcome to `done` as it ends; once Ctrl-C came,
/// abort the rest (aborted ones are not handed on).
pub(crate) async fn join_all<T: 'static>(
    tasks: &mut JoinSet<T>,
    stop: &Interrupt,
    mut done: impl FnMut(std::result::Result<T, tokio::task::JoinError>),
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !tasks.is_empty() {
        if stop.happened() {
            tasks.abort_all();
        }
        tokio::select! {
            next = tasks.join_next() => match next {
                Some(Err(e)) if e.is_cancelled() => {}
                Some(r) => done(r),
                None => break,
            },
            _ = tick.tick() => {}
        }
    }
}

/// Wait for the transfers in flight, or after Ctrl-C stop them (and
/// remove the partial files of stopped downloads).
async fn finish_tasks(
    tasks: &mut JoinSet<(String, Result<u64>)>,
    sum: &mut Summary,
    progress: &Progress,
    stop: &Interrupt,
    partial: Option<&Partial>,
) {
    join_all(tasks, stop, |done| record(sum, progress, done)).await;
    if let Some(p) = partial {
        p.remove_all();
    }
    sum.interrupted = stop.happened();
    progress.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_file_changed_while_read_ends_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 1 << 20]).unwrap();
        let mut whole = Vec::new();
        Unchanged::open(&p)
            .await
            .unwrap()
            .read_to_end(&mut whole)
            .await
            .unwrap();
        assert_eq!(whole.len(), 1 << 20);

        // Appended to, rewritten in place with a new mtime, truncated:
        // each is seen at the end.
        type Change = fn(&Path);
        let changes: [Change; 3] = [
            |p| {
                let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
                f.write_all(b"more").unwrap();
            },
            |p| {
                let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
                    .unwrap();
            },
            |p| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .unwrap()
                    .set_len(1000)
                    .unwrap();
            },
        ];
        for change in changes {
            std::fs::write(&p, vec![1u8; 1 << 20]).unwrap();
            let mut r = Unchanged::open(&p).await.unwrap();
            let mut half = vec![0u8; 1 << 19];
            r.read_exact(&mut half[..1000]).await.unwrap();
            change(&p);
            let mut rest = Vec::new();
            let e = r.read_to_end(&mut rest).await.unwrap_err();
            assert!(e.to_string().contains("changed while it was read"), "{e}");
        }
    }
}
