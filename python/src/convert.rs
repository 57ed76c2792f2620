//! Cairn records as Python dicts (the Python half wraps them in dataclasses).

use cairn_proto::{OpenFile, PathCues};
use cairn_types::{Cues, Inode, InodeKind};
use pyo3::prelude::*;
use pyo3::types::PyDict;

pub fn kind_str(k: InodeKind) -> &'static str {
    k.as_str()
}

pub fn inode<'py>(py: Python<'py>, i: &Inode) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("type", kind_str(i.kind))?;
    d.set_item("size", i.size)?;
    d.set_item("version", i.version.0)?;
    d.set_item("inode", i.id.0)?;
    d.set_item("mode", i.mode & 0o7777)?;
    d.set_item("mtime_ms", i.mtime_ms())?;
    d.set_item("ctime_ms", i.ctime_ms())?;
    d.set_item("mtime_ns", i.mtime_ns)?;
    d.set_item("ctime_ns", i.ctime_ns)?;
    d.set_item("atime_ns", i.atime_ns)?;
    d.set_item("chunk_size", i.chunk_size)?;
    d.set_item("chunks", i.extents.len())?;
    d.set_item("inline", i.is_inline())?;
    d.set_item("cues", i.cues.to_string())?;
    d.set_item("nlink", i.nlink)?;
    d.set_item("target", i.target.as_deref())?;
    d.set_item("uid", i.uid)?;
    d.set_item("gid", i.gid)?;
    Ok(d)
}

fn cue_str(c: &Cues) -> String {
    c.to_string()
}

pub fn path_cues<'py>(py: Python<'py>, c: &PathCues) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("own", c.own.as_ref().map(cue_str))?;
    d.set_item("inherited", cue_str(&c.inherited))?;
    d.set_item("effective", cue_str(&c.effective))?;
    Ok(d)
}

pub fn located<'py>(py: Python<'py>, path: &str, o: &OpenFile) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("path", path)?;
    d.set_item("size", o.inode.size)?;
    d.set_item("version", o.inode.version.0)?;
    d.set_item("inline", o.inode.is_inline())?;
    let addr = |id| {
        o.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.addr.clone())
            .unwrap_or_default()
    };
    let mut chunks = Vec::with_capacity(o.inode.extents.len());
    let mut offset = 0u64;
    for (i, e) in o.inode.extents.iter().enumerate() {
        let c = PyDict::new(py);
        c.set_item("index", i)?;
        c.set_item("chunk", e.chunk.to_string())?;
        c.set_item("offset", offset)?;
        c.set_item("size", e.len)?;
        c.set_item("crc32c", format!("{:08x}", e.crc))?;
        // An erasure-coded chunk lists its shards, shard i on nodes[i], as
        // `cairn locate --json` does.
        let nodes = e
            .stored()
            .into_iter()
            .enumerate()
            .map(|(s, (shard, n))| {
                let nd = PyDict::new(py);
                nd.set_item("id", n.to_string())?;
                nd.set_item("addr", addr(n))?;
                if e.ec.is_some() {
                    nd.set_item("shard", s)?;
                    nd.set_item("shard_chunk", shard.to_string())?;
                }
                Ok(nd)
            })
            .collect::<PyResult<Vec<_>>>()?;
        if let Some(ec) = &e.ec {
            c.set_item("ec", ec.scheme.to_string())?;
            c.set_item("shard_size", ec.shard_len)?;
        }
        c.set_item("nodes", nodes)?;
        chunks.push(c);
        offset += e.len;
    }
    d.set_item("chunks", chunks)?;
    Ok(d)
}
