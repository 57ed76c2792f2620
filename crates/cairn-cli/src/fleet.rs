//! Fleet commands: node groups, `cairn prefetch`, `cairn locate --by-host`.

use crate::commands::{connect, cued};
use crate::progress::Progress;
use crate::Target;
use anyhow::{bail, Context, Result};
use cairn_proto::PrefetchJobStatus;
use cairn_types::{format_bytes, CairnPath, InodeKind, NodeId};
use serde_json::json;
use std::collections::BTreeMap;

fn node_id(s: &str) -> Result<NodeId> {
    s.parse()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{s:?} is not a node id (`cairn cluster status` lists them)"))
}

pub async fn group_set(t: &Target, node: &str, group: &str, add: bool) -> Result<()> {
    let c = connect(t).await?;
    c.set_group(node_id(node)?, group, add).await?;
    Ok(())
}

pub async fn groups(t: &Target, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let gs = c.groups().await?;
    if json_out {
        let v: Vec<_> = gs
            .iter()
            .map(|g| {
                json!({"group": g.name,
                "nodes": g.nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "live": g.live.iter().map(|n| n.to_string()).collect::<Vec<_>>()})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    if gs.is_empty() {
        println!("no groups (start nodes with `cairn storage --group G` or use `cairn cluster group add NODE G`)");
    }
    for g in gs {
        let nodes: Vec<String> = g
            .nodes
            .iter()
            .map(|n| {
                if g.live.contains(n) {
                    n.to_string()
                } else {
                    format!("{n} (down)")
                }
            })
            .collect();
        println!(
            "{}: {} node(s), {} live: {}",
            g.name,
            g.nodes.len(),
            g.live.len(),
            nodes.join(", ")
        );
    }
    Ok(())
}

pub(crate) fn job_json(j: &PrefetchJobStatus) -> serde_json::Value {
    json!({"id": j.id, "group": j.group, "files": j.files, "state": j.state,
           "chunks": j.chunks, "bytes": j.bytes, "nodes": j.nodes, "nodes_done": j.nodes_done,
           "copies_done": j.copies_done, "copies_total": j.copies_total, "bytes_done": j.bytes_done,
           "skipped": j.skipped.iter().map(|(n, why)| json!({"node": n.to_string(), "why": why})).collect::<Vec<_>>(),
           "notes": j.notes, "started_ms": j.started_ms, "done_ms": j.done_ms})
}

fn job_line(j: &PrefetchJobStatus) -> String {
    let mut s = format!(
        "job {} to {}: {} — {}/{} nodes, {}/{} copies, {} of {} x {} node(s)",
        j.id,
        j.group,
        j.state,
        j.nodes_done,
        j.nodes,
        j.copies_done,
        j.copies_total,
        format_bytes(j.bytes_done),
        format_bytes(j.bytes),
        j.nodes
    );
    for (n, why) in &j.skipped {
        s.push_str(&format!("\n  skipped node {n}: {why}"));
    }
    for note in &j.notes {
        s.push_str(&format!("\n  note: {note}"));
    }
    s
}

pub struct PrefetchOpts {
    pub group: String,
    pub no_wait: bool,
    pub json: bool,
    pub evict: bool,
}

pub async fn prefetch(t: &Target, raw: &[String], o: PrefetchOpts) -> Result<()> {
    let c = connect(t).await?;
    let paths: Vec<CairnPath> = raw
        .iter()
        .map(|p| cued(p).map(|(p, _)| p))
        .collect::<Result<_>>()?;
    let started = c.prefetch(&paths, &o.group, o.evict).await?;
    let ids: Vec<u64> = started.iter().map(|j| j.id).collect();
    let last = if o.evict || o.no_wait {
        started
    } else {
        // The bytes to copy: each job's files to each of its nodes.
        let total: u64 = started.iter().map(|j| j.bytes * j.nodes.max(1)).sum();
        let progress = Progress::start("prefetch", Some(total), None, o.json);
        let st = c
            .prefetch_wait(&ids, |jobs| {
                progress.set_bytes(jobs.iter().map(|j| j.bytes_done).sum());
            })
            .await;
        progress.finish();
        st?
    };
    if o.json {
        println!(
            "{}",
            serde_json::Value::Array(last.iter().map(job_json).collect())
        );
    } else {
        for j in &last {
            println!("{}", job_line(j));
        }
    }
    if last.iter().any(|j| j.state == "failed") {
        bail!("prefetch failed on some nodes (see above)");
    }
    Ok(())
}

pub async fn prefetch_status(t: &Target, json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let jobs = c.prefetch_status(&[]).await?;
    if json_out {
        println!(
            "{}",
            serde_json::Value::Array(jobs.iter().map(job_json).collect())
        );
        return Ok(());
    }
    if jobs.is_empty() {
        println!("no prefetch jobs");
    }
    for j in &jobs {
        println!("{}", job_line(j));
    }
    Ok(())
}

/// Bytes held per host: durable and cache copies of the files at `raw`.
pub async fn locate_by_host(t: &Target, raw: &[String], json_out: bool) -> Result<()> {
    let c = connect(t).await?;
    let status = c.cluster_status().await?;
    let host_of: BTreeMap<NodeId, String> = status
        .nodes
        .iter()
        .map(|n| (n.id, n.host.clone()))
        .collect();
    let mut per_host: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let (mut files, mut total) = (0u64, 0u64);
    let mut stack: Vec<CairnPath> = raw
        .iter()
        .map(|p| cued(p).map(|(p, _)| p))
        .collect::<Result<_>>()?;
    while let Some(p) = stack.pop() {
        let inode = c.stat(&p).await?;
        match inode.kind {
            InodeKind::Directory => {
                let mut after: Option<String> = None;
                loop {
                    let page = c.list_page(&p, after.clone(), 1000).await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.name.clone());
                    for e in page {
                        let child = p.join(&e.name)?;
                        match e.inode.kind {
                            InodeKind::Directory | InodeKind::File => stack.push(child),
                            _ => {}
                        }
                    }
                }
            }
            InodeKind::File => {
                let open = c.locate(&p).await?;
                files += 1;
                total += open.inode.size;
                for (i, e) in open.inode.extents.iter().enumerate() {
                    if let Some(ec) = &e.ec {
                        // A host holds shards: their bytes, durable.
                        for n in &e.nodes {
                            if let Some(h) = host_of.get(n) {
                                per_host.entry(h.to_string()).or_default().0 += ec.shard_len;
                            }
                        }
                        continue;
                    }
                    let all = open.read_order.get(i).filter(|o| !o.is_empty());
                    // Per host, a chunk counts once: durable if any copy
                    // on the host is, else cached.
                    let mut seen: BTreeMap<&str, bool> = BTreeMap::new();
                    for n in all.unwrap_or(&e.nodes) {
                        let Some(h) = host_of.get(n) else { continue };
                        let durable = e.nodes.contains(n);
                        let d = seen.entry(h.as_str()).or_insert(false);
                        *d |= durable;
                    }
                    for (h, durable) in seen {
                        let entry = per_host.entry(h.to_string()).or_default();
                        if durable {
                            entry.0 += e.len;
                        } else {
                            entry.1 += e.len;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for (_, v) in per_host.iter_mut() {
        v.2 = v.0 + v.1;
    }
    let mut rows: Vec<(String, (u64, u64, u64))> = per_host.into_iter().collect();
    rows.sort_by(|a, b| b.1 .2.cmp(&a.1 .2).then(a.0.cmp(&b.0)));
    if json_out {
        let hosts: Vec<_> = rows
            .iter()
            .map(|(h, (d, c, t))| {
                json!({"host": h, "durable_bytes": d, "cached_bytes": c, "bytes": t,
                       "fraction": if total > 0 { *t as f64 / total as f64 } else { 0.0 }})
            })
            .collect();
        println!(
            "{}",
            json!({"files": files, "bytes": total, "hosts": hosts})
        );
        return Ok(());
    }
    println!("{files} file(s), {}", format_bytes(total));
    println!(
        "  {:<24} {:>12} {:>12} {:>12} {:>8}",
        "host", "durable", "cached", "total", "of data"
    );
    for (h, (d, cch, tt)) in rows {
        println!(
            "  {:<24} {:>12} {:>12} {:>12} {:>7.1}%",
            h,
            format_bytes(d),
            format_bytes(cch),
            format_bytes(tt),
            if total > 0 {
                tt as f64 * 100.0 / total as f64
            } else {
                0.0
            }
        );
    }
    Ok(())
}
