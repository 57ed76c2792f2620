//! The file and cluster commands, thin over `cairn-client`.

use crate::progress::Progress;
use crate::{config, Target};
use anyhow::{Context, Result};
use cairn_client::{Client, ClientConfig, PutOptions};
use cairn_proto::{ClusterStatus, NodeState};
use cairn_types::{format_bytes, parse_size, CairnPath, Cues, DirEntry, Inode, InodeKind};
use serde_json::json;
use std::io::Write;

pub async fn connect(t: &Target) -> Result<Client> {
    connect_with(t, |_| {}).await
}

/// [`connect`] with a client configuration `tweak` changes.
pub async fn connect_with(t: &Target, tweak: impl FnOnce(&mut ClientConfig)) -> Result<Client> {
    let (meta, creds) = config::resolve(t.meta.clone(), t.secret_file.clone())?;
    let mut cfg = ClientConfig::new(meta.clone(), creds);
    tweak(&mut cfg);
    Client::connect(cfg).await.map_err(|e| {
        anyhow::anyhow!("{e}\nhint: is a cluster running? start one with 'cairn server', or point --meta/CAIRN_META at it")
    })
}

/// A path, with any cue components (`/.cue/rep=2/...`) checked and dropped.
pub(crate) fn path(raw: &str) -> Result<CairnPath> {
    Ok(cairn_types::split_path_cues(raw)?.0)
}

/// A path and the cues written inside it.
pub(crate) fn cued(raw: &str) -> Result<(CairnPath, Cues)> {
    Ok(cairn_types::split_path_cues(raw)?)
}

fn kind_str(i: &Inode) -> &'static str {
    i.kind.as_str()
}

fn time_str(ms: u64) -> String {
    // UTC, ISO 8601, without a date library: days since the epoch to a civil date.
    let secs = ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(crate) fn inode_json(path: &str, i: &Inode) -> serde_json::Value {
    json!({
        "path": path,
        "type": kind_str(i),
        "inode": i.id.0,
        "size": i.size,
        "version": i.version.0,
        "mode": format!("{:o}", i.mode & 0o7777),
        "mtime_ms": i.mtime_ms(),
        "mtime_ns": i.mtime_ns,
        "ctime_ms": i.ctime_ms(),
        "ctime_ns": i.ctime_ns,
        "atime_ns": i.atime_ns,
        "chunks": i.extents.len(),
        "inline": i.is_inline(),
        "chunk_size": i.chunk_size,
        "cues": i.cues.to_string(),
        "target": i.target,
        "uid": i.uid,
        "gid": i.gid,
        "links": i.nlink,
    })
}

/// How `cairn put` goes about it.
pub struct PutHow {
    pub recursive: bool,
    pub jobs: usize,
    /// Make missing parent directories.
    pub parents: bool,
}

pub async fn put(
    t: &Target,
    local: &str,
    dst: &str,
    rep: Option<u8>,
    chunk_size: Option<String>,
    cue: Option<String>,
    how: PutHow,
) -> Result<()> {
    let c = connect(t).await?;
    let (mut dst, mut cues) = cued(dst)?;
    if let Some(list) = cue {
        cues = cues.merge(&Cues::parse(&list)?);
    }
    if how.recursive {
        if !how.parents {
            if let Some((parent, _)) = dst.split_last() {
                c.stat(&parent)
                    .await
                    .with_context(|| format!("{parent} (--no-parents)"))?;
            }
        }
        let opts = PutOptions {
            rep,
            chunk_size: chunk_size.map(|s| parse_size(&s)).transpose()?,
            cues,
            ..PutOptions::default()
        };
        let r =
            crate::transfer::put_tree(&c, std::path::Path::new(local), &dst, opts, how.jobs).await;
        settle(&c).await;
        return r;
    }
    if std::path::Path::new(local).is_dir() {
        anyhow::bail!("{local} is a directory: use put -r to copy a tree");
    }
    // Like cp: putting into an existing directory keeps the local name.
    if let Ok(i) = c.stat(&dst).await {
        if i.kind == InodeKind::Directory {
            let name = std::path::Path::new(local)
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|_| local != "-")
                .with_context(|| format!("{dst} is a directory; give the full destination path"))?;
            dst = dst.join(name)?;
        }
    }
    let opts = PutOptions {
        rep,
        chunk_size: chunk_size.map(|s| parse_size(&s)).transpose()?,
        cues,
        ..PutOptions::default()
    };
    if how.parents {
        // As `aws s3 cp`, rclone and gsutil do: fleet paths are deep.
        if let Some((parent, _)) = dst.split_last() {
            if !parent.is_root() && c.stat(&parent).await.is_err() {
                c.mkdir(&parent, true)
                    .await
                    .with_context(|| format!("making {parent}"))?;
            }
        }
    }
    let inode = if local == "-" {
        let p = Progress::start("put", None, None, false);
        let r = c.put(&dst, p.counted(tokio::io::stdin()), opts).await;
        p.finish();
        r?
    } else {
        let local = std::path::Path::new(local);
        let size = std::fs::metadata(local).ok().map(|m| m.len());
        let p = Progress::start("put", size, None, false);
        let r = crate::transfer::put_local(&c, local, &dst, opts, &p).await;
        p.finish();
        r?
    };
    eprintln!("{dst}: {} bytes, version {}", inode.size, inode.version);
    settle(&c).await;
    Ok(())
}

/// Before the process exits: give shard writes still running after their
/// write was acknowledged (`ec` with `sync=` below K+M) time to land, so
/// repair need not rebuild them.
async fn settle(c: &Client) {
    if !c.settle(std::time::Duration::from_secs(30)).await {
        eprintln!(
            "warning: some shard writes had not finished after 30 s; repair will rebuild them"
        );
    }
}

pub async fn get_tree(t: &Target, src: &str, local: &str, jobs: usize) -> Result<()> {
    let c = connect(t).await?;
    crate::transfer::get_tree(&c, &path(src)?, std::path::Path::new(local), jobs).await
}

pub async fn get(t: &Target, src: &str, local: &str, version: Option<u64>) -> Result<()> {
    let c = connect(t).await?;
    let (src, cues) = cued(src)?;
    let reader = match version {
        Some(v) => c.open_version(&src, cairn_types::Version(v)).await?,
        None => c.open_cued(&src, &cues).await?,
    };
    // A symlink (made through a mount) has no bytes of its own; Cairn paths
    // do not follow links.
    if let Some(target) = &reader.inode().target {
        anyhow::bail!("{src} is a symbolic link to {target}; read its target instead");
    }
    if local == "-" {
        let mut out = tokio::io::stdout();
        reader.copy_to(&mut out).await?;
        return Ok(());
    }
    // Write beside the target and rename, so a failed get leaves no partial file.
    let tmp = format!("{local}.cairn-part");
    let mut f = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot create {tmp}"))?;
    let p = Progress::start("get", Some(reader.size()), None, false);
    let r = reader.copy_to(&mut p.counted(&mut f)).await;
    p.finish();
    if let Err(e) = r {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e.into());
    }
    f.sync_all().await?;
    tokio::fs::rename(&tmp, local)
        .await
        .with_context(|| format!("cannot rename {tmp} to {local}"))?;
    Ok(())
}

pub async fn ls(t: &Target, p: &str, long: bool, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let p = path(p)?;
    let inode = c.stat(&p).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if inode.kind != InodeKind::Directory {
        let (parent, name) = p.split_last().expect("the root is a directory");
        let entry = DirEntry {
            name: name.to_string(),
            inode,
        };
        return print_entries(&mut out, &[entry], &parent, long, json_out, true, true);
    }
    let mut after: Option<String> = None;
    let mut first = true;
    loop {
        let page = c.list_page(&p, after.clone(), 1000).await?;
        let last_page = page.len() < 1000;
        print_entries(&mut out, &page, &p, long, json_out, first, last_page)?;
        first = false;
        if last_page {
            break;
        }
        after = page.last().map(|e| e.name.clone());
    }
    Ok(())
}

/// `cairn ls -R`: every directory under `p`, depth first in name order,
/// streamed page by page (a big tree is never held whole).
pub async fn ls_recursive(t: &Target, p: &str, long: bool, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let top = path(p)?;
    if c.stat(&top).await?.kind != InodeKind::Directory {
        return ls(t, p, long, json_out).await;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut todo = vec![top];
    let mut printed = false;
    while let Some(dir) = todo.pop() {
        if !json_out {
            if printed {
                writeln!(out)?;
            }
            writeln!(out, "{dir}:")?;
            printed = true;
        }
        let mut after: Option<String> = None;
        let mut subdirs = Vec::new();
        loop {
            let page = c.list_page(&dir, after.clone(), 1000).await?;
            let last_page = page.len() < 1000;
            if json_out {
                if !page.is_empty() {
                    print_entries(&mut out, &page, &dir, long, true, !printed, false)?;
                    printed = true;
                }
            } else {
                print_entries(&mut out, &page, &dir, long, false, false, false)?;
            }
            for e in &page {
                if e.inode.kind == InodeKind::Directory {
                    subdirs.push(dir.join(&e.name)?);
                }
            }
            if last_page {
                break;
            }
            after = page.last().map(|e| e.name.clone());
        }
        // Depth first, in name order: the stack takes them reversed.
        todo.extend(subdirs.into_iter().rev());
    }
    if json_out {
        writeln!(out, "{}]", if printed { "\n" } else { "[" })?;
    }
    Ok(())
}

/// Streams a listing page by page; JSON output is one array overall.
fn print_entries(
    out: &mut impl Write,
    entries: &[DirEntry],
    dir: &CairnPath,
    long: bool,
    json_out: bool,
    first: bool,
    last: bool,
) -> Result<()> {
    if json_out {
        if first {
            write!(out, "[")?;
        }
        for (i, e) in entries.iter().enumerate() {
            let full = dir.join(&e.name).map(|p| p.to_string()).unwrap_or_default();
            let mut v = inode_json(&full, &e.inode);
            v["name"] = json!(e.name);
            if !(first && i == 0) {
                write!(out, ",")?;
            }
            write!(out, "\n  {v}")?;
        }
        if last {
            writeln!(out, "\n]")?;
        }
        return Ok(());
    }
    for e in entries {
        let slash = if e.inode.kind == InodeKind::Directory {
            "/"
        } else {
            ""
        };
        if long {
            let t = match e.inode.kind {
                InodeKind::Directory => 'd',
                InodeKind::File => '-',
                InodeKind::Symlink => 'l',
                InodeKind::Fifo => 'p',
                InodeKind::Socket => 's',
                InodeKind::CharDevice => 'c',
                InodeKind::BlockDevice => 'b',
            };
            let arrow = match &e.inode.target {
                Some(target) => format!(" -> {target}"),
                None => String::new(),
            };
            writeln!(
                out,
                "{t} {:>12} v{:<4} {} {}{slash}{arrow}",
                e.inode.size,
                e.inode.version.0,
                time_str(e.inode.mtime_ms()),
                e.name
            )?;
        } else {
            writeln!(out, "{}{slash}", e.name)?;
        }
    }
    Ok(())
}

pub async fn stat(t: &Target, p: &str, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let p = path(p)?;
    let i = c.stat(&p).await?;
    if json_out {
        println!("{}", inode_json(p.as_str(), &i));
    } else {
        println!("path:     {p}");
        println!("type:     {}", kind_str(&i));
        if let Some(target) = &i.target {
            println!("target:   {target}");
        }
        println!("size:     {} ({})", i.size, format_bytes(i.size));
        println!("version:  {}", i.version);
        if i.is_inline() {
            println!("chunks:   none (kept in metadata: inline)");
        } else {
            println!("chunks:   {}", i.extents.len());
        }
        println!("mode:     {:o}", i.mode & 0o7777);
        if let (Some(uid), Some(gid)) = (i.uid, i.gid) {
            println!("owner:    {uid}:{gid}");
        }
        println!("modified: {}", time_str(i.mtime_ms()));
        println!("inode:    {}", i.id);
        if i.nlink > 1 {
            println!("links:    {} (names of this file)", i.nlink);
        }
        if !i.cues.is_empty() {
            println!("cues:     {}", i.cues);
        }
    }
    Ok(())
}

/// What a tree holds, for `cairn du`.
#[derive(Default, Clone, Copy)]
struct Usage {
    files: u64,
    dirs: u64,
    /// File bytes, one copy.
    logical: u64,
    /// Bytes on storage nodes: every durable copy or shard.
    stored: u64,
    /// Bytes of small files kept in meta's records (inline).
    inline: u64,
}

impl Usage {
    fn add(&mut self, o: Usage) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.logical += o.logical;
        self.stored += o.stored;
        self.inline += o.inline;
    }

    fn of_file(i: &Inode) -> Usage {
        Usage {
            files: 1,
            logical: i.size,
            stored: i.extents.iter().map(|e| e.stored_bytes()).sum(),
            inline: if i.is_inline() { i.size } else { 0 },
            ..Usage::default()
        }
    }
}

/// The usage of the tree at `p` (a directory), adding it to `shown` if
/// `depth` is Some, and every directory up to that many levels below
/// (deepest first, as `du` prints). A file with several names counts once
/// (`seen`).
fn tree_usage<'a>(
    c: &'a cairn_client::Client,
    p: CairnPath,
    depth: Option<usize>,
    seen: &'a mut std::collections::HashSet<cairn_types::InodeId>,
    shown: &'a mut Vec<(CairnPath, Usage)>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Usage>> + Send + 'a>> {
    Box::pin(async move {
        let mut u = Usage {
            dirs: 1,
            ..Usage::default()
        };
        for e in c.list_all(&p).await? {
            match e.inode.kind {
                InodeKind::Directory => {
                    let child = p.join(&e.name)?;
                    let below = depth.and_then(|d| d.checked_sub(1));
                    let below = tree_usage(c, child, below, seen, shown).await?;
                    u.add(below);
                }
                InodeKind::File if e.inode.nlink <= 1 || seen.insert(e.inode.id) => {
                    u.add(Usage::of_file(&e.inode))
                }
                _ => {}
            }
        }
        if depth.is_some() {
            shown.push((p, u));
        }
        Ok(u)
    })
}

pub async fn du(t: &Target, paths: &[String], depth: usize, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for raw in paths {
        let root = path(raw)?;
        let inode = c.stat(&root).await?;
        let mut shown = Vec::new();
        match inode.kind {
            InodeKind::Directory => {
                let mut seen = Default::default();
                tree_usage(&c, root.clone(), Some(depth), &mut seen, &mut shown).await?;
            }
            InodeKind::File => shown.push((root.clone(), Usage::of_file(&inode))),
            _ => shown.push((root.clone(), Usage::default())),
        }
        for (p, u) in shown {
            if json_out {
                let j = json!({
                    "path": p.as_str(),
                    "files": u.files,
                    "dirs": u.dirs,
                    "logical_bytes": u.logical,
                    "stored_bytes": u.stored,
                    "inline_bytes": u.inline,
                });
                writeln!(out, "{j}")?;
            } else {
                writeln!(
                    out,
                    "{:>10}  {:>10}  {:>8}  {p}",
                    format_bytes(u.logical),
                    format_bytes(u.stored),
                    u.files
                )?;
            }
        }
    }
    Ok(())
}

pub async fn versions(t: &Target, p: &str, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let p = path(p)?;
    let versions = c.versions(&p).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, i) in versions.iter().enumerate() {
        if json_out {
            let mut j = inode_json(p.as_str(), i);
            j["current"] = json!(n == 0);
            writeln!(out, "{j}")?;
        } else {
            let current = if n == 0 { "  (current)" } else { "" };
            writeln!(
                out,
                "{:>8}  {:>12}  {}{current}",
                i.version.0,
                i.size,
                time_str(i.mtime_ms())
            )?;
        }
    }
    Ok(())
}

pub async fn mkdir(t: &Target, p: &str, parents: bool) -> Result<()> {
    let c = connect(t).await?;
    c.mkdir(&path(p)?, parents).await?;
    Ok(())
}

pub async fn rm(t: &Target, p: &str, recursive: bool) -> Result<()> {
    let c = connect(t).await?;
    Ok(c.remove(&path(p)?, recursive).await?)
}

pub async fn ln(t: &Target, src: &str, dst: &str) -> Result<()> {
    let c = connect(t).await?;
    let src = path(src)?;
    let mut dst = path(dst)?;
    // Like ln(1): into an existing directory, under the source's name.
    if let (Ok(d), Some((_, name))) = (c.stat(&dst).await, src.split_last()) {
        if d.kind == InodeKind::Directory {
            dst = dst.join(name)?;
        }
    }
    let inode = c.link(&src, &dst).await?;
    println!("{dst}: {} names", inode.nlink);
    Ok(())
}

pub async fn mv(t: &Target, src: &str, dst: &str) -> Result<()> {
    let c = connect(t).await?;
    let src = path(src)?;
    let mut dst = path(dst)?;
    if let (Ok(d), Some((_, name))) = (c.stat(&dst).await, src.split_last()) {
        if d.kind == InodeKind::Directory
            && c.stat(&src)
                .await
                .is_ok_and(|s| s.kind != InodeKind::Directory)
        {
            dst = dst.join(name)?;
        }
    }
    c.rename(&src, &dst).await?;
    Ok(())
}

/// Where each chunk of a file is: offset, size, checksum, and its
/// copies or shards with their nodes' addresses and states (`cairn
/// locate`, the dashboard).
pub(crate) async fn chunk_rows(
    c: &Client,
    p: &CairnPath,
) -> Result<(cairn_proto::OpenFile, Vec<serde_json::Value>)> {
    let open = c.locate(p).await?;
    let status = c.cluster_status().await.ok();
    let state = |id| {
        status
            .as_ref()
            .and_then(|s| s.nodes.iter().find(|n| n.id == id))
            .map(|n| n.state.as_str())
            .unwrap_or("unknown")
    };
    let addr = |id| {
        open.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.addr.clone())
            .unwrap_or_default()
    };
    let mut offset = 0u64;
    let mut rows = Vec::new();
    for (i, e) in open.inode.extents.iter().enumerate() {
        // An erasure-coded chunk lists its shards: shard i on nodes[i].
        let nodes: Vec<_> = e
            .stored()
            .into_iter()
            .enumerate()
            .map(|(s, (chunk, n))| {
                let mut v = json!({"id": n.to_string(), "addr": addr(n), "state": state(n)});
                if e.ec.is_some() {
                    v["shard"] = json!(s);
                    v["shard_chunk"] = json!(chunk.to_string());
                }
                v
            })
            .collect();
        let mut row = json!({"index": i, "chunk": e.chunk.to_string(), "offset": offset, "size": e.len,
                         "crc32c": format!("{:08x}", e.crc), "nodes": nodes});
        if let Some(ec) = &e.ec {
            row["ec"] = json!(ec.scheme.to_string());
            row["shard_size"] = json!(ec.shard_len);
        }
        if let Some(t) = &e.remote {
            row["remote"] = json!(t);
            row["cached_on"] = json!(open
                .read_order
                .get(i)
                .map(|o| o.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap_or_default());
        }
        rows.push(row);
        offset += e.len;
    }
    Ok((open, rows))
}

pub async fn locate(t: &Target, p: &str, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let p = path(p)?;
    let (open, rows) = chunk_rows(&c, &p).await?;
    if json_out {
        println!(
            "{}",
            json!({"path": p.as_str(), "size": open.inode.size, "version": open.inode.version.0, "inline": open.inode.is_inline(), "chunks": rows})
        );
        return Ok(());
    }
    if open.inode.is_inline() {
        println!(
            "{p}: {} bytes, version {}, kept in metadata (inline): no chunks",
            open.inode.size, open.inode.version
        );
        return Ok(());
    }
    println!(
        "{p}: {} bytes, version {}, {} chunk(s)",
        open.inode.size,
        open.inode.version,
        rows.len()
    );
    for r in rows {
        let nodes: Vec<String> = r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let shard = n["shard"]
                    .as_u64()
                    .map_or(String::new(), |s| format!("shard {s} "));
                format!(
                    "{shard}{}@{} ({})",
                    n["id"].as_str().unwrap(),
                    n["addr"].as_str().unwrap(),
                    n["state"].as_str().unwrap()
                )
            })
            .collect();
        let ec = r["ec"]
            .as_str()
            .map_or(String::new(), |e| format!("  ec={e}"));
        let nodes = match r["remote"].as_str() {
            Some(t) => vec![format!(
                "remote store {t} (cache copies on {})",
                r["cached_on"].as_array().map_or(0, |a| a.len())
            )],
            None => nodes,
        };
        println!(
            "  #{:<4} {}  offset {:>12}  size {:>10}  crc32c {}{ec}  on {}",
            r["index"],
            r["chunk"].as_str().unwrap(),
            r["offset"],
            r["size"],
            r["crc32c"].as_str().unwrap(),
            nodes.join(", ")
        );
    }
    Ok(())
}

pub fn status_json(s: &ClusterStatus) -> serde_json::Value {
    let nodes: Vec<_> = s
        .nodes
        .iter()
        .map(|n| {
            json!({"id": n.id.to_string(), "addr": n.addr, "zone": n.zone, "host": n.host,
                   "state": n.state.as_str(), "accepting_writes": n.stats.accepting_writes,
                   "problem": n.stats.problem, "scrubbed_bytes": n.stats.scrubbed_bytes,
                   "last_heartbeat_ms": n.last_heartbeat_ms, "chunks": n.stats.chunks,
                   "used_bytes": n.stats.used, "free_bytes": n.stats.free, "total_bytes": n.stats.total,
                   "groups": n.groups, "cache_bytes": n.stats.cache_bytes,
                   "cache_capacity": n.stats.cache_capacity, "served_bytes": n.stats.served_bytes,
                   "written_bytes": n.stats.written_bytes,
                   "corrupt_chunks": n.stats.corrupt_chunks.iter().map(|c| c.to_string()).collect::<Vec<_>>()})
        })
        .collect();
    json!({
        "nodes": nodes,
        "live_nodes": s.nodes.iter().filter(|n| n.state == NodeState::Live).count(),
        "chunks": s.chunks,
        "logical_bytes": s.logical_bytes,
        "under_replicated_chunks": s.under_replicated_chunks,
        "unavailable_chunks": s.unavailable_chunks,
        "corrupt_replicas": s.corrupt_replicas.iter().map(|(c, n)| json!({"chunk": c.to_string(), "node": n.to_string()})).collect::<Vec<_>>(),
        "pending_garbage_chunks": s.pending_garbage_chunks,
        "leader": s.leader,
        "cache_copies": s.cache_copies,
        "tiers": crate::tier::usage_json(&s.tiers),
        "workers": s.workers.iter().map(|w| json!({"name": w.name, "state": w.state,
            "progress": w.progress, "passes": w.passes, "last_error": w.last_error})).collect::<Vec<_>>(),
        "repair": {"chunks_pending": s.repair.chunks_pending, "bytes_left": s.repair.bytes_left,
                   "bytes_per_s": s.repair.bytes_per_s, "copies_done": s.repair.copies_done,
                   "copies_failed": s.repair.copies_failed, "orphans_deleted": s.repair.orphans_deleted},
    })
}

pub async fn cluster_status(t: &Target, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let s = c.cluster_status().await?;
    if json_out {
        println!("{}", status_json(&s));
        return Ok(());
    }
    let live = s
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Live)
        .count();
    println!(
        "meta: {}",
        if s.leader {
            "leader (runs repair and garbage collection)"
        } else {
            "standby (another meta server runs repair and garbage collection)"
        }
    );
    println!("nodes: {live} live of {}", s.nodes.len());
    println!(
        "  {:<16}  {:<21}  {:<8}  {:<12}  {:<8}  {:>8}  {:>10}  {:>10}  {:>10}  groups",
        "id", "addr", "zone", "host", "state", "chunks", "used", "free", "cached"
    );
    for n in &s.nodes {
        let state = n.state.as_str();
        println!(
            "  {:<16}  {:<21}  {:<8}  {:<12}  {:<8}  {:>8}  {:>10}  {:>10}  {:>10}  {}",
            n.id.to_string(),
            n.addr,
            n.zone,
            n.host,
            state,
            n.stats.chunks,
            format_bytes(n.stats.used),
            format_bytes(n.stats.free),
            format_bytes(n.stats.cache_bytes),
            if n.groups.is_empty() {
                "-".to_string()
            } else {
                n.groups.join(",")
            }
        );
    }
    println!(
        "chunks: {} ({} of file data)",
        s.chunks,
        format_bytes(s.logical_bytes)
    );
    println!("under-replicated chunks: {}", s.under_replicated_chunks);
    for n in &s.nodes {
        if let Some(p) = &n.stats.problem {
            println!("node {} takes no new chunks: {p}", n.id);
        }
    }
    if s.repair.chunks_pending > 0 {
        println!(
            "repairing: {} chunk(s), {} left to copy at {}/s",
            s.repair.chunks_pending,
            format_bytes(s.repair.bytes_left),
            format_bytes(s.repair.bytes_per_s)
        );
    }
    if s.unavailable_chunks > 0 {
        println!(
            "UNAVAILABLE chunks (no live copy): {}",
            s.unavailable_chunks
        );
    }
    for (c, n) in &s.corrupt_replicas {
        println!("corrupt replica: chunk {c} on node {n}");
    }
    if s.pending_garbage_chunks > 0 {
        println!(
            "garbage chunks waiting for deletion: {}",
            s.pending_garbage_chunks
        );
    }
    if s.cache_copies > 0 {
        println!(
            "cache copies (prefetched, read through): {}",
            s.cache_copies
        );
    }
    if s.tiers.len() > 1 {
        println!("tiers:");
        for t in &s.tiers {
            println!(
                "  {:<10} {} in {} chunk(s){}{}",
                t.name,
                format_bytes(t.bytes),
                t.chunks,
                if t.name == "local" {
                    String::new()
                } else {
                    format!(", {} cached on nodes", format_bytes(t.cached_bytes))
                },
                t.problem
                    .as_ref()
                    .map(|p| format!(" (UNUSABLE: {p})"))
                    .unwrap_or_default()
            );
        }
    }
    println!("workers:");
    for w in &s.workers {
        println!(
            "  {:<10} {:<8} {}{}",
            w.name,
            w.state,
            w.progress,
            w.last_error
                .as_ref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn key_create(
    t: &Target,
    name: &str,
    read_only: bool,
    bucket: Option<String>,
    json_out: bool,
) -> Result<()> {
    let c = connect(t).await?;
    let k = cairn_s3::create_key(&c, name, read_only, bucket).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&k)?);
    } else {
        println!("name        {}", k.name);
        println!("access key  {}", k.access_key);
        println!("secret key  {}", k.secret_key);
        println!(
            "rights      {}{}",
            if k.read_only {
                "read-only"
            } else {
                "read-write"
            },
            k.bucket
                .as_ref()
                .map(|b| format!(", bucket {b} only"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The rights `cairn key create --native` gives.
pub fn native_rights(
    prefix: &[String],
    read_prefix: &[String],
    read_only: bool,
    admin: bool,
) -> Result<cairn_proto::Rights> {
    if !admin && prefix.is_empty() && read_prefix.is_empty() {
        anyhow::bail!(
            "an identity needs --prefix PATH, --read-prefix PATH or --admin (else it may do nothing)"
        );
    }
    let mut prefixes = Vec::new();
    for (list, write) in [(prefix, !read_only), (read_prefix, false)] {
        for p in list {
            prefixes.push(cairn_proto::PathRight {
                path: path(p)?,
                write,
            });
        }
    }
    Ok(cairn_proto::Rights { admin, prefixes })
}

fn describe_rights(r: &cairn_proto::Rights) -> String {
    let mut parts: Vec<String> = Vec::new();
    if r.admin {
        parts.push("admin".into());
    }
    for p in &r.prefixes {
        parts.push(format!("{} {}", if p.write { "rw" } else { "ro" }, p.path));
    }
    parts.join(", ")
}

pub async fn identity_create(
    t: &Target,
    name: &str,
    rights: cairn_proto::Rights,
    out: Option<&std::path::Path>,
    json_out: bool,
) -> Result<()> {
    let c = connect(t).await?;
    let (info, creds) = c.identity_create(name, rights).await?;
    if let Some(f) = out {
        creds.save(f)?;
    }
    if json_out {
        let mut v = serde_json::json!({
            "name": info.name,
            "id": info.id.to_string(),
            "rights": info.rights,
        });
        if out.is_none() {
            v["credentials"] = creds.encode().trim_end().into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    eprintln!("identity {} ({})", info.name, describe_rights(&info.rights));
    match out {
        Some(f) => eprintln!(
            "credentials written to {}: give the client --secret-file {} (or CAIRN_SECRET_FILE)",
            f.display(),
            f.display()
        ),
        None => {
            eprintln!("credentials (keep them secret; save as a file with mode 0600 and pass it with --secret-file):");
            print!("{}", creds.encode());
        }
    }
    Ok(())
}

pub async fn key_list(t: &Target, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let ids = c.identities().await?;
    let keys = cairn_s3::list_keys(&c).await?;
    if json_out {
        let v = serde_json::json!({
            "identities": ids.iter().map(|i| serde_json::json!({
                "name": i.name,
                "id": i.id.to_string(),
                "rights": i.rights,
                "created_ms": i.created_ms,
            })).collect::<Vec<_>>(),
            "s3_keys": keys.iter().map(|k| serde_json::json!({
                "name": k.name,
                "access_key": k.access_key,
                "read_only": k.read_only,
                "bucket": k.bucket,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<6} {:<24} {:<22} RIGHTS",
        "KIND", "NAME", "ID / ACCESS KEY"
    );
    for i in &ids {
        let id = i.id.to_string();
        println!(
            "{:<6} {:<24} {:<22} {}",
            "native",
            i.name,
            &id[..16],
            describe_rights(&i.rights)
        );
    }
    for k in &keys {
        let mut rights = if k.read_only { "ro" } else { "rw" }.to_string();
        rights.push_str(&match &k.bucket {
            Some(b) => format!(" bucket {b}"),
            None => " every bucket".into(),
        });
        println!("{:<6} {:<24} {:<22} {rights}", "s3", k.name, k.access_key);
    }
    Ok(())
}

pub async fn key_revoke(t: &Target, name: &str) -> Result<()> {
    let c = connect(t).await?;
    let mut found = false;
    match c.identity_revoke(name).await {
        Ok(()) => {
            eprintln!("identity {name} revoked");
            found = true;
        }
        Err(e) if e.kind == cairn_types::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    for k in cairn_s3::delete_keys(&c, name).await? {
        eprintln!("S3 key {} ({}) revoked", k.access_key, k.name);
        found = true;
    }
    if !found {
        anyhow::bail!("no identity or S3 key is named {name} (see `cairn key list`)");
    }
    Ok(())
}

pub async fn drain(t: &Target, node: &str, wait: bool, undo: bool) -> Result<()> {
    let c = connect(t).await?;
    let id: cairn_types::NodeId = node.parse()?;
    c.drain(id, undo).await?;
    if undo {
        eprintln!("node {id} takes new chunks again");
        return Ok(());
    }
    eprintln!("draining node {id}: its chunks are being copied to other nodes");
    if !wait {
        eprintln!("follow with 'cairn cluster status'; the node is safe to stop when its state is 'drained'");
        return Ok(());
    }
    // The node's live bytes are what has to move; progress is how much
    // of that is no longer waiting.
    let mut progress: Option<Progress> = None;
    loop {
        let s = c.cluster_status().await?;
        let n = s
            .nodes
            .iter()
            .find(|n| n.id == id)
            .context("the node disappeared")?;
        if n.state == NodeState::Drained {
            if let Some(p) = &progress {
                p.finish();
            }
            eprintln!("node {id} is drained: it can be stopped with no chunk short of redundancy");
            return Ok(());
        }
        let p = progress
            .get_or_insert_with(|| Progress::start("drain", Some(n.stats.used), None, false));
        p.set_bytes(n.stats.used.saturating_sub(s.repair.bytes_left));
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// `cairn cue get`: own, inherited and effective cues.
pub async fn cue_get(t: &Target, p: &str, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let p = path(p)?;
    let pc = c.cues(&p).await?;
    let own = pc.own.clone().unwrap_or_default();
    if json_out {
        println!(
            "{}",
            json!({
                "path": p.as_str(),
                "exists": pc.own.is_some(),
                "own": own.to_string(),
                "inherited": pc.inherited.to_string(),
                "effective": pc.effective.to_string(),
            })
        );
    } else {
        let show = |c: &Cues| {
            if c.is_empty() {
                "(none)".to_string()
            } else {
                c.to_string()
            }
        };
        println!("path:      {p}");
        println!("own:       {}", show(&own));
        println!("inherited: {}", show(&pc.inherited));
        println!("effective: {}", show(&pc.effective));
    }
    Ok(())
}

/// `cairn cue set PATH LIST` (merged over the path's own cues) and `cairn
/// cue clear PATH`.
pub async fn cue_set(t: &Target, p: &str, list: Option<&str>) -> Result<()> {
    let c = connect(t).await?;
    let p = path(p)?;
    let inode = match list {
        Some(l) => {
            let cues = Cues::parse(l)?;
            if cues.is_empty() {
                anyhow::bail!("no cues given; to remove a path's cues use 'cairn cue clear {p}'");
            }
            c.set_cues(&p, &cues, false).await?
        }
        None => c.set_cues(&p, &Cues::default(), true).await?,
    };
    eprintln!(
        "{p}: cues {}",
        if inode.cues.is_empty() {
            "(none)".to_string()
        } else {
            inode.cues.to_string()
        }
    );
    Ok(())
}
