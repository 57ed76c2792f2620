//! `cairn sync SRC DST`: make DST a copy of SRC, moving only what differs
//! (size and mtime by default, content with `--checksum`). Either side is a
//! local directory or a Cairn one written `cairn:/path`. Files land whole
//! or not at all (a Cairn write commits at its end; a local one is renamed
//! into place), so an interrupted sync leaves no partial file and the next
//! run finishes the job; a second run right after the first copies nothing.

use crate::progress::Progress;
use crate::transfer::{join_all, put_local, slot, Interrupt, Partial};
use anyhow::{bail, Context, Result};
use cairn_client::{Client, PutOptions};
use cairn_types::{AttrChanges, CairnPath, ErrorKind, InodeKind};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

#[derive(clap::Args)]
pub struct SyncArgs {
    /// Source: a local directory, or cairn:/path
    src: String,
    /// Destination: a local directory, or cairn:/path
    dst: String,
    /// Also remove what the destination has and the source does not
    #[arg(long)]
    delete: bool,
    /// Say what would be done; change nothing
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Compare content (CRC32C of both sides) instead of size and mtime
    #[arg(long, short = 'c')]
    checksum: bool,
    /// Parallel file transfers [default: 4 per core, 4 to 32]
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    #[command(flatten)]
    target: crate::Target,
    /// What the summary line calls the run (`cp -r` runs a sync).
    #[arg(skip)]
    label: Option<&'static str>,
}

#[derive(Clone)]
enum Side {
    Local(PathBuf),
    Cairn(CairnPath),
}

fn side(raw: &str) -> Result<Side> {
    Ok(match raw.strip_prefix("cairn:") {
        Some(p) => Side::Cairn(CairnPath::parse(p)?),
        None => Side::Local(PathBuf::from(raw)),
    })
}

/// One entry of a tree, by its path relative to the tree's top.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Dir,
    File { size: u64, mtime_ns: u64, mode: u32 },
    Link(String),
}

/// Partial files a `get` leaves only if it is killed mid-file.
const PART: &str = ".cairn-part";

/// What a listing found, and the directories (relative paths) it could
/// not read, with why.
type Listing = (BTreeMap<String, Entry>, Vec<(String, String)>);

fn list_local(top: &Path) -> Result<Listing> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    match std::fs::metadata(top) {
        Err(_) => return Ok((out, problems)),
        Ok(m) if !m.is_dir() => bail!("{} is a file, not a directory", top.display()),
        Ok(_) => {}
    }
    let mut todo = vec![(top.to_path_buf(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(d) => d,
            Err(e) if rel.is_empty() => {
                return Err(e).with_context(|| format!("cannot list {}", dir.display()))
            }
            Err(e) => {
                problems.push((rel, format!("cannot list: {e}")));
                continue;
            }
        };
        for e in entries {
            let Ok(e) = e else {
                problems.push((rel.clone(), "cannot list it whole".into()));
                continue;
            };
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.ends_with(PART) {
                continue;
            }
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let m = match std::fs::symlink_metadata(e.path()) {
                Ok(m) => m,
                Err(err) => {
                    problems.push((r, err.to_string()));
                    continue;
                }
            };
            if m.is_dir() {
                out.insert(r.clone(), Entry::Dir);
                todo.push((e.path(), r));
            } else if m.file_type().is_symlink() {
                match std::fs::read_link(e.path()) {
                    Ok(t) => out.insert(r, Entry::Link(t.to_string_lossy().into_owned())),
                    Err(err) => {
                        problems.push((r, err.to_string()));
                        continue;
                    }
                };
            } else if m.is_file() {
                let mtime_ns = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                out.insert(
                    r,
                    Entry::File {
                        size: m.len(),
                        mtime_ns,
                        mode: m.mode() & 0o7777,
                    },
                );
            }
        }
    }
    Ok((out, problems))
}

async fn list_cairn(c: &Client, top: &CairnPath) -> Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    match c.stat(top).await {
        Ok(i) if i.kind == InodeKind::Directory => {}
        Ok(_) => bail!("{top} is not a directory"),
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    }
    let mut todo = vec![(top.clone(), String::new())];
    while let Some((dir, rel)) = todo.pop() {
        let mut after: Option<String> = None;
        loop {
            let page = c.list_page(&dir, after.clone(), 1000).await?;
            for e in &page {
                let r = if rel.is_empty() {
                    e.name.clone()
                } else {
                    format!("{rel}/{}", e.name)
                };
                let entry = match e.inode.kind {
                    InodeKind::Directory => {
                        todo.push((dir.join(&e.name)?, r.clone()));
                        Entry::Dir
                    }
                    InodeKind::Symlink => Entry::Link(e.inode.target.clone().unwrap_or_default()),
                    // FIFOs, sockets and device nodes are not synced.
                    InodeKind::Fifo
                    | InodeKind::Socket
                    | InodeKind::CharDevice
                    | InodeKind::BlockDevice => continue,
                    InodeKind::File => Entry::File {
                        size: e.inode.size,
                        mtime_ns: e.inode.mtime_ns,
                        mode: e.inode.mode & 0o7777,
                    },
                };
                out.insert(r, entry);
            }
            match page.last() {
                Some(l) if page.len() == 1000 => after = Some(l.name.clone()),
                _ => break,
            }
        }
    }
    Ok(out)
}

async fn list(c: &Client, s: &Side) -> Result<Listing> {
    match s {
        Side::Local(p) => list_local(p),
        Side::Cairn(p) => Ok((list_cairn(c, p).await?, Vec::new())),
    }
}

fn cairn_at(top: &CairnPath, rel: &str) -> Result<CairnPath> {
    let mut p = top.clone();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        p = p.join(part)?;
    }
    Ok(p)
}

/// CRC32C of a file's bytes on either side.
async fn checksum(c: &Client, s: &Side, rel: &str) -> Result<u32> {
    let mut crc = 0u32;
    match s {
        Side::Local(top) => {
            let mut f = tokio::fs::File::open(top.join(rel)).await?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
            }
        }
        Side::Cairn(top) => {
            let r = c.open(&cairn_at(top, rel)?).await?;
            let mut off = 0;
            while off < r.size() {
                let piece = r.read_at(off, 8 << 20).await?;
                if piece.is_empty() {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &piece);
                off += piece.len() as u64;
            }
        }
    }
    Ok(crc)
}

/// What the copies in flight share: progress, and the partial files to
/// remove if Ctrl-C stops them.
#[derive(Clone)]
struct Flight {
    progress: Progress,
    partial: Partial,
}

/// Copy one file from `src` to `dst` (whole, or not at all), keeping its
/// mode and mtime.
async fn copy_file(
    c: &Client,
    src: &Side,
    dst: &Side,
    rel: &str,
    mode: u32,
    mtime_ns: u64,
    flight: &Flight,
) -> Result<u64> {
    let progress = &flight.progress;
    match (src, dst) {
        (Side::Local(s), Side::Cairn(d)) => {
            let to = cairn_at(d, rel)?;
            let opts = PutOptions {
                mode: Some(mode),
                ..Default::default()
            };
            let inode = put_local(c, &s.join(rel), &to, opts, progress).await?;
            let keep = AttrChanges {
                mtime_ns: Some(mtime_ns),
                ..Default::default()
            };
            c.set_attr(&to, Some(inode.id), keep).await?;
            Ok(inode.size)
        }
        (Side::Cairn(s), Side::Local(d)) => {
            let local = d.join(rel);
            let reader = c.open(&cairn_at(s, rel)?).await?;
            let size = reader.size();
            let tmp = PathBuf::from(format!("{}{PART}", local.display()));
            flight.partial.add(&tmp);
            let mut f = tokio::fs::File::create(&tmp).await?;
            if let Err(e) = reader.copy_to(&mut progress.counted(&mut f)).await {
                let _ = tokio::fs::remove_file(&tmp).await;
                flight.partial.done(&tmp);
                return Err(e.into());
            }
            f.sync_all().await?;
            let f = f.into_std().await;
            f.set_permissions(std::fs::Permissions::from_mode(if mode == 0 {
                0o644
            } else {
                mode
            }))?;
            f.set_modified(UNIX_EPOCH + Duration::from_nanos(mtime_ns))?;
            drop(f);
            tokio::fs::rename(&tmp, &local).await?;
            flight.partial.done(&tmp);
            Ok(size)
        }
        (Side::Cairn(s), Side::Cairn(d)) => {
            let (from, to) = (cairn_at(s, rel)?, cairn_at(d, rel)?);
            let reader = c.open(&from).await?;
            // Stream through a bounded pipe: never the whole file in memory.
            let (mut w, r) = tokio::io::duplex(4 << 20);
            let feed = tokio::spawn(async move { reader.copy_to(&mut w).await });
            let opts = PutOptions {
                mode: Some(mode),
                ..Default::default()
            };
            let inode = c.put(&to, progress.counted(r), opts).await?;
            feed.await??;
            let keep = AttrChanges {
                mtime_ns: Some(mtime_ns),
                ..Default::default()
            };
            c.set_attr(&to, Some(inode.id), keep).await?;
            Ok(inode.size)
        }
        (Side::Local(_), Side::Local(_)) => bail!("one side of a sync must be cairn:/path"),
    }
}

/// The first existing non-directory on the way to `p` (itself included).
fn first_file_on(p: &Path) -> Option<PathBuf> {
    p.ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|a| a.symlink_metadata().is_ok_and(|m| !m.is_dir()))
        .map(Path::to_path_buf)
}

async fn make_dir(c: &Client, dst: &Side, rel: &str) -> Result<()> {
    match dst {
        Side::Local(d) => {
            let p = d.join(rel);
            std::fs::create_dir_all(&p).with_context(|| match first_file_on(&p) {
                Some(f) => format!("cannot make {}: {} is a file", p.display(), f.display()),
                None => format!("cannot make {}", p.display()),
            })
        }
        Side::Cairn(d) => match c.mkdir(&cairn_at(d, rel)?, true).await {
            Err(e) if e.kind != ErrorKind::AlreadyExists => Err(e.into()),
            _ => Ok(()),
        },
    }
}

async fn make_link(c: &Client, dst: &Side, rel: &str, target: &str) -> Result<()> {
    remove(c, dst, rel, false).await.ok();
    match dst {
        Side::Local(d) => Ok(std::os::unix::fs::symlink(target, d.join(rel))?),
        Side::Cairn(d) => {
            let node = cairn_types::NewNode::Symlink {
                target: target.to_string(),
            };
            c.make_node(&cairn_at(d, rel)?, node, 0o777, (None, None))
                .await?;
            Ok(())
        }
    }
}

async fn remove(c: &Client, dst: &Side, rel: &str, dir: bool) -> Result<()> {
    match dst {
        Side::Local(d) if dir => Ok(std::fs::remove_dir_all(d.join(rel))?),
        Side::Local(d) => Ok(std::fs::remove_file(d.join(rel))?),
        Side::Cairn(d) => Ok(c.remove(&cairn_at(d, rel)?, dir).await?),
    }
}

pub async fn run(a: SyncArgs) -> Result<()> {
    let (src, dst) = (side(&a.src)?, side(&a.dst)?);
    if matches!((&src, &dst), (Side::Local(_), Side::Local(_))) {
        bail!("one side of a sync must be a Cairn directory, written cairn:/path");
    }
    let started = Instant::now();
    let c = crate::commands::connect(&a.target).await?;
    let (from, unread) = list(&c, &src).await?;
    if from.is_empty() {
        if let Side::Local(p) = &src {
            if !p.is_dir() {
                bail!("{} is not a directory", p.display());
            }
        }
    }
    let (to, unread_dst) = list(&c, &dst).await?;
    // Under what could not be read nothing is deleted: its files are not
    // known to be extra.
    let unread_under = |rel: &str| {
        unread
            .iter()
            .any(|(p, _)| rel == p || rel.starts_with(&format!("{p}/")))
    };
    let say = |what: &str, rel: &str| {
        if a.dry_run {
            println!("{what} {rel}");
        }
    };
    // What to do: directories first (in path order, parents before children).
    let mut copies = Vec::new();
    let (mut links, mut dirs) = (0u64, 0u64);
    if !a.dry_run {
        make_dir(&c, &dst, "").await?;
    }
    for (rel, e) in &from {
        let there = to.get(rel);
        match e {
            Entry::Dir => {
                if there != Some(&Entry::Dir) {
                    if let Some(t) = there {
                        say("remove", rel);
                        if !a.dry_run {
                            remove(&c, &dst, rel, matches!(t, Entry::Dir)).await?;
                        }
                    }
                    say("mkdir", rel);
                    dirs += 1;
                    if !a.dry_run {
                        make_dir(&c, &dst, rel).await?;
                    }
                }
            }
            Entry::Link(target) => {
                if there != Some(e) {
                    say("link", rel);
                    links += 1;
                    if !a.dry_run {
                        make_link(&c, &dst, rel, target).await?;
                    }
                }
            }
            Entry::File {
                size,
                mtime_ns,
                mode,
            } => {
                let differs = match there {
                    Some(Entry::File {
                        size: s2,
                        mtime_ns: m2,
                        ..
                    }) if !a.checksum => s2 != size || m2 != mtime_ns,
                    Some(Entry::File { size: s2, .. }) => {
                        s2 != size
                            || checksum(&c, &src, rel).await? != checksum(&c, &dst, rel).await?
                    }
                    _ => true,
                };
                if differs {
                    if let Some(Entry::Dir) = there {
                        say("remove", rel);
                        if !a.dry_run {
                            remove(&c, &dst, rel, true).await?;
                        }
                    }
                    say("copy", rel);
                    copies.push((rel.clone(), *mode, *mtime_ns));
                }
            }
        }
    }
    let mut removed = 0u64;
    if a.delete {
        // Deepest first, skipping what a removed directory took with it.
        let mut gone: Vec<&String> = Vec::new();
        for (rel, e) in to.iter().rev() {
            if from.contains_key(rel)
                || unread_under(rel)
                || gone.iter().any(|g| rel.starts_with(&format!("{g}/")))
            {
                continue;
            }
            say("delete", rel);
            removed += 1;
            if !a.dry_run {
                remove(&c, &dst, rel, matches!(e, Entry::Dir)).await?;
            }
            if matches!(e, Entry::Dir) {
                gone.push(rel);
            }
        }
    }
    let (mut files, mut bytes, mut failed) = (0u64, 0u64, Vec::new());
    let mut interrupted = false;
    for (rel, why) in unread.iter().chain(&unread_dst) {
        failed.push((rel.clone(), why.clone()));
    }
    if !a.dry_run {
        let jobs = a.jobs.unwrap_or_else(crate::transfer::default_jobs).max(1);
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs));
        let total: u64 = copies
            .iter()
            .map(|(rel, ..)| match from.get(rel) {
                Some(Entry::File { size, .. }) => *size,
                _ => 0,
            })
            .sum();
        let progress = Progress::start("sync", Some(total), Some(copies.len() as u64), false);
        let flight = Flight {
            progress: progress.clone(),
            partial: Partial::default(),
        };
        let stop = Interrupt::watch();
        let mut tasks = tokio::task::JoinSet::new();
        for (rel, mode, mtime) in copies.iter().cloned() {
            let Some(permit) = slot(&gate, &stop).await else {
                break;
            };
            let (c, src, dst, f) = (c.clone(), src.clone(), dst.clone(), flight.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let r = copy_file(&c, &src, &dst, &rel, mode, mtime, &f).await;
                (rel, r)
            });
        }
        join_all(&mut tasks, &stop, |done| match done {
            Ok((_, Ok(n))) => {
                progress.file_done();
                files += 1;
                bytes += n;
            }
            Ok((rel, Err(e))) => failed.push((rel, format!("{e:#}"))),
            Err(e) => failed.push(("(a copy task)".into(), e.to_string())),
        })
        .await;
        flight.partial.remove_all();
        interrupted = stop.happened();
        progress.finish();
    }
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    eprintln!(
        "{}{}: {} files to copy, {} copied ({} bytes, {:.1} MiB/s), {} directories, {} symlinks, {} deleted, {} failed, {} unchanged, in {:.1} s",
        a.label.unwrap_or("sync"),
        if a.dry_run { " (dry run)" } else { "" },
        copies.len(),
        files,
        bytes,
        bytes as f64 / (1 << 20) as f64 / secs,
        dirs,
        links,
        removed,
        failed.len(),
        from.len().saturating_sub(copies.len() + dirs as usize + links as usize),
        secs
    );
    for (rel, e) in &failed {
        eprintln!("  FAILED {rel}: {e}");
    }
    if interrupted {
        bail!("interrupted: {files} files were copied whole; the copies in flight were stopped and left nothing half-written; run the sync again to finish");
    }
    if !failed.is_empty() {
        bail!("{} of {} copies failed", failed.len(), copies.len());
    }
    Ok(())
}

/// `cairn cp [-r] SRC DST` inside Cairn: a new file (or tree) with the
/// source's bytes, modes and symlinks, streamed through this client in
/// bounded memory. The copy shares no chunks with its source: sharing
/// them would need a reference count per chunk in meta, updated by every
/// commit and removal and read by garbage collection, a cost every write
/// would pay for the benefit of copies alone.
pub async fn cp(
    target: crate::Target,
    src: &str,
    dst: &str,
    recursive: bool,
    jobs: Option<usize>,
) -> Result<()> {
    let c = crate::commands::connect(&target).await?;
    let from = crate::commands::path(src)?;
    let mut to = crate::commands::path(dst)?;
    let s = c.stat(&from).await?;
    // Like cp(1): into an existing directory, under the source's name.
    if let (Ok(d), Some((_, name))) = (c.stat(&to).await, from.split_last()) {
        if d.kind == InodeKind::Directory {
            to = to.join(name)?;
        }
    }
    if to == from || to.as_str().starts_with(&format!("{}/", from.as_str())) {
        bail!("cannot copy {from} into itself ({to})");
    }
    match s.kind {
        InodeKind::Directory if !recursive => {
            bail!("{from} is a directory: use cp -r to copy a tree")
        }
        InodeKind::Directory => {
            run(SyncArgs {
                src: format!("cairn:{from}"),
                dst: format!("cairn:{to}"),
                delete: false,
                dry_run: false,
                checksum: false,
                jobs,
                target,
                label: Some("cp"),
            })
            .await
        }
        InodeKind::File => {
            let reader = c.open(&from).await?;
            let progress = Progress::start("cp", Some(reader.size()), None, false);
            let (mut w, r) = tokio::io::duplex(4 << 20);
            let feed = tokio::spawn(async move { reader.copy_to(&mut w).await });
            let opts = PutOptions {
                mode: Some(s.mode & 0o7777),
                ..Default::default()
            };
            let put = c.put(&to, progress.counted(r), opts).await;
            progress.finish();
            let inode = put?;
            feed.await??;
            eprintln!("{to}: {} bytes, version {}", inode.size, inode.version);
            Ok(())
        }
        _ => bail!(
            "{from} is a {}: only files and trees are copied",
            s.kind.as_str()
        ),
    }
}
