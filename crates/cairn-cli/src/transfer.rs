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
    while let Some((dir, cdir)) = todo.pop() {
        ensure_dir(c, &cdir)
            .await
            .with_context(|| format!("making {cdir}"))?;
        sum.dirs += 1;
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
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
            let meta = std::fs::symlink_metadata(&lpath)?;
            let ft = meta.file_type();
            if ft.is_dir() {
                todo.push((lpath, cpath));
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&lpath)?.to_string_lossy().into_owned();
                match put_symlink(c, &cpath, &target).await {
                    Ok(()) => sum.links += 1,
                    Err(err) => sum.failed.push((cpath.to_string(), err.to_string())),
                }
            } else if ft.is_file() {
                let permit = gate.clone().acquire_owned().await.expect("never closed");
                let (c, mut o, progress) = (c.clone(), opts.clone(), progress.clone());
                o.mode = Some(meta.mode() & 0o7777);
                let mtime = mtime_ns(&meta);
                tasks.spawn(async move {
                    let _permit = permit;
                    let r = async {
                        let f = tokio::fs::File::open(&lpath)
                            .await
                            .with_context(|| format!("cannot open {}", lpath.display()))?;
                        let inode = c.put(&cpath, progress.counted(f), o).await?;
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
    while let Some(done) = tasks.join_next().await {
        record(&mut sum, &progress, done);
    }
    progress.finish();
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
    let gate = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks: JoinSet<(String, Result<u64>)> = JoinSet::new();
    let mut todo: Vec<(CairnPath, PathBuf)> = vec![(src.clone(), local.to_path_buf())];
    while let Some((cdir, dir)) = todo.pop() {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
        sum.dirs += 1;
        let mut after: Option<String> = None;
        loop {
            let page = c.list_page(&cdir, after.clone(), 1000).await?;
            for e in &page {
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
                        let permit = gate.clone().acquire_owned().await.expect("never closed");
                        let (c, progress) = (c.clone(), progress.clone());
                        let (mode, mtime) = (e.inode.mode & 0o7777, e.inode.mtime_ns);
                        tasks.spawn(async move {
                            let _permit = permit;
                            let r = get_file(&c, &cpath, &lpath, mode, mtime, &progress).await;
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
    while let Some(done) = tasks.join_next().await {
        record(&mut sum, &progress, done);
    }
    progress.finish();
    sum.finish("get", started)
}

/// One file, beside its target and renamed at the end, so a failure
/// leaves no partial file.
async fn get_file(
    c: &Client,
    src: &CairnPath,
    local: &Path,
    mode: u32,
    mtime_ns: u64,
    progress: &Progress,
) -> Result<u64> {
    let reader = c.open(src).await?;
    let size = reader.size();
    let tmp = PathBuf::from(format!("{}.cairn-part", local.display()));
    let mut f = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = reader.copy_to(&mut progress.counted(&mut f)).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e.into());
    }
    f.sync_all().await?;
    let f = f.into_std().await;
    let mode = if mode == 0 { 0o644 } else { mode };
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.set_modified(UNIX_EPOCH + Duration::from_nanos(mtime_ns))?;
    drop(f);
    tokio::fs::rename(&tmp, local)
        .await
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), local.display()))?;
    Ok(size)
}
