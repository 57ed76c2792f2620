//! `NativeClient`: one method per client operation, each parsing its paths
//! (with any in-path cues), running the operation with the GIL released and
//! converting the answer.

use crate::conn::{Conn, ConnSlot};
use crate::convert;
use crate::errors::to_py;
use crate::file::{NativeReader, NativeWriter, WriteMode};
use cairn_client::{Client, ClientConfig, PutOptions};
use cairn_proto::Credentials;
use cairn_types::{split_path_cues, CairnPath, Cues, Error, ErrorKind, Inode, Result, Version};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::path::PathBuf;
use std::sync::Arc;

/// A cluster handle; the Python `cairn.Client` wraps one.
#[pyclass(frozen, module = "cairn._native")]
pub struct NativeClient {
    slot: ConnSlot,
}

/// A path and the cues written in it, with `extra` (a cue list) over them.
pub fn cued(py: Python<'_>, raw: &str, extra: Option<&str>) -> PyResult<(CairnPath, Cues)> {
    let parsed = split_path_cues(raw).and_then(|(p, c)| {
        let extra = extra.map(Cues::parse).transpose()?.unwrap_or_default();
        Ok((p, c.merge(&extra)))
    });
    parsed.map_err(|e| to_py(py, e))
}

fn path(py: Python<'_>, raw: &str) -> PyResult<CairnPath> {
    Ok(cued(py, raw, None)?.0)
}

/// Bytes of a Python object, reachable without the GIL: a `bytes` object,
/// or `(address, length)` of a C-contiguous buffer the Python half pinned
/// with ctypes (`cairn._buf`). The stable ABI this module is built for
/// (abi3, CPython >= 3.9) has no buffer protocol before 3.11, hence the
/// addresses. The caller keeps the object alive, and the buffer exported
/// (so it cannot move), until the call returns.
pub struct RawBuf {
    ptr: *mut u8,
    pub len: usize,
}

// SAFETY: only used while the object it came from is alive and pinned, and
// only on one thread at a time.
unsafe impl Send for RawBuf {}

impl RawBuf {
    /// A readable buffer: `bytes`, or `(address, length)`.
    pub fn readable(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<RawBuf> {
        if let Ok(b) = obj.downcast::<PyBytes>() {
            let s = b.as_bytes();
            return Ok(RawBuf {
                ptr: s.as_ptr() as *mut u8,
                len: s.len(),
            });
        }
        RawBuf::writable(py, obj)
    }

    /// A writable buffer: `(address, length)`.
    pub fn writable(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<RawBuf> {
        let (addr, len): (usize, usize) = obj.extract().map_err(|_| {
            to_py(
                py,
                Error::invalid("expected bytes or a pinned buffer (address, length)"),
            )
        })?;
        if addr == 0 && len != 0 {
            return Err(to_py(py, Error::invalid("null buffer address")));
        }
        Ok(RawBuf {
            ptr: addr as *mut u8,
            len,
        })
    }

    /// SAFETY: the object this came from must be alive and pinned.
    pub unsafe fn slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        std::slice::from_raw_parts(self.ptr, self.len)
    }

    /// SAFETY: as [`Self::slice`], and the buffer must be writable.
    pub unsafe fn slice_mut(&mut self) -> &mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        std::slice::from_raw_parts_mut(self.ptr, self.len)
    }
}

/// Make the parent directories of `path` (like `mkdir -p`).
pub async fn make_parents(client: &Client, path: &CairnPath) -> Result<()> {
    match path.split_last() {
        Some((parent, _)) if !parent.is_root() => client.mkdir(&parent, true).await.map(|_| ()),
        _ => Ok(()),
    }
}

/// `put` that makes missing parent directories, as object stores and
/// `cairn put` do: a put into a missing directory fails before any chunk is
/// stored (meta refuses the placement), so it is tried again once they exist.
async fn put_with_parents<F, Fut>(client: &Client, path: &CairnPath, mut put: F) -> Result<Inode>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Inode>>,
{
    match put().await {
        Err(e) if e.kind == ErrorKind::NotFound && path.split_last().is_some() => {
            make_parents(client, path).await?;
            put().await
        }
        r => r,
    }
}

/// A create-only write (expected version 0) that found the file there is
/// `FileExistsError`, as `open(..., "x")` is, rather than a lost race.
pub fn exists_if_create(expected: Option<Version>, e: Error) -> Error {
    if expected == Some(Version(0)) && e.kind == ErrorKind::Conflict {
        Error::new(ErrorKind::AlreadyExists, e.message)
    } else {
        e
    }
}

fn put_options(cues: Cues, expected: Option<u64>) -> PutOptions {
    PutOptions {
        cues,
        expected: expected.map(Version),
        ..PutOptions::default()
    }
}

impl NativeClient {
    fn conn(&self, py: Python<'_>) -> PyResult<Arc<Conn>> {
        self.slot.get(py)
    }
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (meta, secret_file, threads=None, cache_bytes=None, read_ahead_bytes=None))]
    fn new(
        py: Python<'_>,
        meta: Vec<String>,
        secret_file: PathBuf,
        threads: Option<usize>,
        cache_bytes: Option<u64>,
        read_ahead_bytes: Option<u64>,
    ) -> PyResult<NativeClient> {
        if meta.is_empty() {
            return Err(to_py(py, Error::invalid("no meta address given")));
        }
        let creds = Credentials::load(&secret_file).map_err(|e| {
            to_py(
                py,
                e.context(
                    "hint: pass secret_file= or set CAIRN_SECRET_FILE to the cluster's client.key \
                     (a 'cairn server' writes it to DATA/meta/client.key)",
                ),
            )
        })?;
        let mut cfg = ClientConfig::new(meta, creds);
        if let Some(b) = cache_bytes {
            cfg.cache_bytes = b;
        }
        if let Some(r) = read_ahead_bytes {
            cfg.read_ahead = r;
        }
        let threads = threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8)
        });
        let me = NativeClient {
            slot: ConnSlot::new(cfg, threads.max(1)),
        };
        // Connect now, so a wrong address or key fails here.
        me.conn(py)?;
        Ok(me)
    }

    /// Meta addresses, as given.
    #[getter]
    fn meta(&self) -> Vec<String> {
        self.slot.config().meta.clone()
    }

    /// The cluster's chunk size and default redundancy.
    fn cluster_config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let conn = self.conn(py)?;
        let c = conn.client.cluster_config();
        let d = PyDict::new(py);
        d.set_item("chunk_size", c.chunk_size)?;
        d.set_item("default_rep", c.default_rep)?;
        Ok(d)
    }

    /// Every readable version of a file, the current one first, then the
    /// older ones its `versions=` cue kept, newest first.
    fn versions<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let p = self::path(py, path)?;
        let conn = self.conn(py)?;
        let all = conn.run(py, conn.client.versions(&p))?;
        all.iter().map(|i| convert::inode(py, i)).collect()
    }

    fn stat<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyDict>> {
        let p = self::path(py, path)?;
        let conn = self.conn(py)?;
        let i = conn.run(py, conn.client.stat(&p))?;
        convert::inode(py, &i)
    }

    /// Every entry of a directory, in name order, as (name, stat) pairs.
    fn list<'py>(
        &self,
        py: Python<'py>,
        path: &str,
    ) -> PyResult<Vec<(String, Bound<'py, PyDict>)>> {
        let p = self::path(py, path)?;
        let conn = self.conn(py)?;
        let client = &conn.client;
        let entries = conn.run(py, async {
            const PAGE: u32 = 1000;
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = client.list_page(&p, after.take(), PAGE).await?;
                let done = (page.len() as u32) < PAGE;
                after = page.last().map(|e| e.name.clone());
                all.extend(page);
                if done {
                    return Ok(all);
                }
            }
        })?;
        entries
            .into_iter()
            .map(|e| Ok((e.name, convert::inode(py, &e.inode)?)))
            .collect()
    }

    #[pyo3(signature = (path, parents=false))]
    fn mkdir<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        parents: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let p = self::path(py, path)?;
        let conn = self.conn(py)?;
        let i = conn.run(py, conn.client.mkdir(&p, parents))?;
        convert::inode(py, &i)
    }

    #[pyo3(signature = (path, recursive=false))]
    fn remove(&self, py: Python<'_>, path: &str, recursive: bool) -> PyResult<()> {
        let p = self::path(py, path)?;
        let conn = self.conn(py)?;
        conn.run(py, conn.client.remove(&p, recursive))
    }

    /// Rename atomically; `replace=False` fails with `FileExistsError`
    /// instead of replacing an existing `dst`.
    #[pyo3(signature = (src, dst, replace=true))]
    fn rename(&self, py: Python<'_>, src: &str, dst: &str, replace: bool) -> PyResult<()> {
        let (s, d) = (self::path(py, src)?, self::path(py, dst)?);
        let conn = self.conn(py)?;
        if replace {
            conn.run(py, conn.client.rename(&s, &d))
        } else {
            conn.run(py, conn.client.rename_noreplace(&s, &d))
        }
    }

    fn link<'py>(&self, py: Python<'py>, src: &str, dst: &str) -> PyResult<Bound<'py, PyDict>> {
        let (s, d) = (self::path(py, src)?, self::path(py, dst)?);
        let conn = self.conn(py)?;
        let i = conn.run(py, conn.client.link(&s, &d))?;
        convert::inode(py, &i)
    }

    fn locate<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyDict>> {
        let p = self::path(py, path)?;
        let conn = self.conn(py)?;
        let o = conn.run(py, conn.client.locate(&p))?;
        convert::located(py, p.as_str(), &o)
    }

    fn cues<'py>(&self, py: Python<'py>, path: &str) -> PyResult<Bound<'py, PyDict>> {
        let p = self::path(py, path)?;
        let conn = self.conn(py)?;
        let c = conn.run(py, conn.client.cues(&p))?;
        convert::path_cues(py, &c)
    }

    /// Merge `cues` over the path's own, or replace them (`replace`; an
    /// empty list then clears them).
    #[pyo3(signature = (path, cues, replace=false))]
    fn set_cues<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        cues: &str,
        replace: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let p = self::path(py, path)?;
        let c = Cues::parse(cues).map_err(|e| to_py(py, e))?;
        let conn = self.conn(py)?;
        let i = conn.run(py, conn.client.set_cues(&p, &c, replace))?;
        convert::inode(py, &i)
    }

    /// Write `data` (any bytes-like object) as the next version of `path`.
    /// `expected`: 0 = only create, N = only replace version N.
    #[pyo3(signature = (path, data, cues=None, expected=None, xattrs=None))]
    fn put<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        data: &Bound<'py, PyAny>,
        cues: Option<&str>,
        expected: Option<u64>,
        xattrs: Option<std::collections::BTreeMap<String, Vec<u8>>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (p, c) = cued(py, path, cues)?;
        let raw = RawBuf::readable(py, data)?;
        let conn = self.conn(py)?;
        let client = &conn.client;
        let mut opts = put_options(c, expected);
        opts.xattrs = xattrs;
        let i = conn.run(py, async move {
            // SAFETY: `data` outlives this call.
            let bytes = unsafe { raw.slice() };
            put_with_parents(client, &p, || client.put(&p, bytes, opts.clone()))
                .await
                .map_err(|e| exists_if_create(opts.expected, e))
        })?;
        convert::inode(py, &i)
    }

    /// Write the local file `local` as the next version of `path`.
    #[pyo3(signature = (path, local, cues=None, expected=None))]
    fn put_file<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        local: PathBuf,
        cues: Option<&str>,
        expected: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (p, c) = cued(py, path, cues)?;
        let conn = self.conn(py)?;
        let client = &conn.client;
        let opts = put_options(c, expected);
        let i = conn.run(py, async {
            put_with_parents(client, &p, || async {
                let f = tokio::fs::File::open(&local).await.map_err(|e| {
                    Error::from(e).context(format!("cannot open {}", local.display()))
                })?;
                client.put(&p, f, opts.clone()).await
            })
            .await
            .map_err(|e| exists_if_create(opts.expected, e))
        })?;
        convert::inode(py, &i)
    }

    /// The whole file as `bytes`, streamed straight into the new object.
    #[pyo3(signature = (path, cues=None, version=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        cues: Option<&str>,
        version: Option<u64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (p, c) = cued(py, path, cues)?;
        let conn = self.conn(py)?;
        let reader = conn.run(py, open_file(&conn.client, &p, &c, version))?;
        let size = usize::try_from(reader.size())
            .map_err(|_| to_py(py, Error::invalid("the file does not fit in memory")))?;
        // A bytes object filled in place before anyone sees it (CPython's
        // own idiom), so the file is copied once, with no zero-fill first.
        // SAFETY: a new, unshared object of `size` bytes, or null on failure.
        let obj = unsafe {
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), size as pyo3::ffi::Py_ssize_t)
        };
        if obj.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `obj` is a new reference to a bytes object.
        let bytes = unsafe { Bound::from_owned_ptr(py, obj).downcast_into_unchecked::<PyBytes>() };
        let mut raw = RawBuf {
            // SAFETY: `obj` is a bytes object; its buffer holds `size` bytes.
            ptr: unsafe { pyo3::ffi::PyBytes_AsString(obj) } as *mut u8,
            len: size,
        };
        conn.run(py, async move {
            // SAFETY: `bytes` is alive until this returns and nobody else has it.
            let out = unsafe { raw.slice_mut() };
            reader
                .copy_to(&mut std::io::Cursor::new(out))
                .await
                .map(|_| ())
        })?;
        Ok(bytes)
    }

    /// Read the whole file into `buf` (a writable bytes-like object at least
    /// as large as the file), with no copy in between; returns its size.
    #[pyo3(signature = (path, buf, cues=None, version=None))]
    fn get_into(
        &self,
        py: Python<'_>,
        path: &str,
        buf: &Bound<'_, PyAny>,
        cues: Option<&str>,
        version: Option<u64>,
    ) -> PyResult<u64> {
        let (p, c) = cued(py, path, cues)?;
        let mut raw = RawBuf::writable(py, buf)?;
        let conn = self.conn(py)?;
        let client = &conn.client;
        let n = conn.run(py, async move {
            let r = open_file(client, &p, &c, version).await?;
            let size = r.size();
            if size > raw.len as u64 {
                return Err(Error::invalid(format!(
                    "{p} has {size} bytes; the buffer holds only {}",
                    raw.len
                )));
            }
            // SAFETY: `buf` outlives this call and is writable.
            let out = unsafe { raw.slice_mut() };
            let mut w = std::io::Cursor::new(&mut out[..size as usize]);
            r.copy_to(&mut w).await
        })?;
        Ok(n)
    }

    /// Several whole files at once, `concurrency` in flight: one GIL release
    /// for a batch (a dataset's `__getitems__`).
    #[pyo3(signature = (paths, concurrency=16))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<String>,
        concurrency: usize,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let parsed = paths
            .iter()
            .map(|raw| cued(py, raw, None))
            .collect::<PyResult<Vec<_>>>()?;
        let conn = self.conn(py)?;
        let client = conn.client.clone();
        let datas = conn.run(py, async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
            let tasks: Vec<_> = parsed
                .into_iter()
                .map(|(p, c)| {
                    let (client, sem) = (client.clone(), sem.clone());
                    tokio::spawn(async move {
                        let _permit = sem.acquire_owned().await;
                        let r = open_file(&client, &p, &c, None).await?;
                        let mut out = Vec::with_capacity(r.size() as usize);
                        r.copy_to(&mut out).await?;
                        Ok::<_, Error>(out)
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(
                    t.await
                        .map_err(|e| Error::internal(format!("read task failed: {e}")))??,
                );
            }
            Ok(out)
        })?;
        Ok(datas.iter().map(|d| PyBytes::new(py, d)).collect())
    }

    /// Copy `path` to the local file `local`: written beside it, flushed to
    /// disk and renamed into place, so a failed copy leaves no partial file
    /// (as `cairn get` does). Returns the bytes copied.
    #[pyo3(signature = (path, local, cues=None, version=None))]
    fn get_file(
        &self,
        py: Python<'_>,
        path: &str,
        local: PathBuf,
        cues: Option<&str>,
        version: Option<u64>,
    ) -> PyResult<u64> {
        let (p, c) = cued(py, path, cues)?;
        let conn = self.conn(py)?;
        let client = &conn.client;
        conn.run(py, async move {
            let r = open_file(client, &p, &c, version).await?;
            let mut tmp = local.clone().into_os_string();
            tmp.push(".cairn-part");
            let tmp = PathBuf::from(tmp);
            let io = |e: std::io::Error, what: &str| {
                Error::from(e).context(format!("{what} {}", tmp.display()))
            };
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| io(e, "cannot create"))?;
            let copied = match r.copy_to(&mut f).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e);
                }
            };
            f.sync_all().await.map_err(|e| io(e, "cannot flush"))?;
            tokio::fs::rename(&tmp, &local)
                .await
                .map_err(|e| io(e, "cannot rename"))?;
            Ok(copied)
        })
    }

    /// Open a version of `path` for ranged reads (the current one, or
    /// `version`); it stays readable after the file is replaced, until
    /// meta collects its chunks (never, while its `versions=` cue keeps
    /// it).
    #[pyo3(signature = (path, cues=None, version=None))]
    fn open_reader(
        &self,
        py: Python<'_>,
        path: &str,
        cues: Option<&str>,
        version: Option<u64>,
    ) -> PyResult<NativeReader> {
        let (p, c) = cued(py, path, cues)?;
        let conn = self.conn(py)?;
        let reader = conn.run(py, open_file(&conn.client, &p, &c, version))?;
        Ok(NativeReader::new(conn, reader))
    }

    /// Open `path` for writing: mode "w" (replace), "x" (only create) or
    /// "a" (append: the current content, then what is written). The new
    /// version is committed by `close()`.
    #[pyo3(signature = (path, mode="w", cues=None))]
    fn open_writer(
        &self,
        py: Python<'_>,
        path: &str,
        mode: &str,
        cues: Option<&str>,
    ) -> PyResult<NativeWriter> {
        let (p, c) = cued(py, path, cues)?;
        let mode = match mode {
            "w" => WriteMode::Replace,
            "x" => WriteMode::Create,
            "a" => WriteMode::Append,
            other => {
                return Err(to_py(
                    py,
                    Error::invalid(format!("write mode {other:?}: expected w, x or a")),
                ))
            }
        };
        let conn = self.conn(py)?;
        NativeWriter::start(py, conn, p, c, mode)
    }

    /// This machine's host name, as storage nodes report theirs.
    #[staticmethod]
    fn local_host() -> Option<String> {
        cairn_client::local_host_name()
    }

    /// Put the storage node `node` (its id, as `nodes()` shows it) in
    /// `group`, or take it out (`add=False`).
    #[pyo3(signature = (node, group, add=true))]
    fn set_group(&self, py: Python<'_>, node: &str, group: &str, add: bool) -> PyResult<()> {
        let id: cairn_types::NodeId = node
            .parse()
            .map_err(|_| to_py(py, Error::invalid(format!("{node:?} is not a node id"))))?;
        let conn = self.conn(py)?;
        conn.run(py, conn.client.set_group(id, group, add))
    }

    /// An advisory whole-file lock on `path` (made, empty, if missing),
    /// shared with every mount's flock/fcntl locks and `cairn lock`; it
    /// outlives this process by at most `lease` seconds if it dies.
    #[pyo3(signature = (path, shared=false, lease=5.0))]
    fn lock(
        &self,
        py: Python<'_>,
        path: &str,
        shared: bool,
        lease: f64,
    ) -> PyResult<crate::lock::NativeLock> {
        let p = self::path(py, path)?;
        if !(lease.is_finite() && lease > 0.0) {
            return Err(to_py(
                py,
                Error::invalid(format!(
                    "lease must be a positive number of seconds, not {lease}"
                )),
            ));
        }
        let conn = self.conn(py)?;
        let create = PutOptions {
            expected: Some(Version(0)),
            ..PutOptions::default()
        };
        let client = conn.client.clone();
        let target = p.clone();
        conn.run(py, async move {
            let put = || client.put(&target, tokio::io::empty(), create.clone());
            match put_with_parents(&client, &target, put).await {
                Ok(_) => Ok(()),
                Err(e) if matches!(e.kind, ErrorKind::AlreadyExists | ErrorKind::Conflict) => {
                    Ok(())
                }
                Err(e) => Err(e),
            }
        })?;
        Ok(crate::lock::NativeLock::new(
            conn,
            p,
            shared,
            std::time::Duration::from_secs_f64(lease),
        ))
    }

    /// Every node group: name, member node ids, the live ones.
    fn groups<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let conn = self.conn(py)?;
        let gs = conn.run(py, conn.client.groups())?;
        gs.iter()
            .map(|g| {
                let d = PyDict::new(py);
                d.set_item("name", g.name.as_str())?;
                d.set_item(
                    "nodes",
                    g.nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                )?;
                d.set_item(
                    "live",
                    g.live.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                )?;
                Ok(d)
            })
            .collect()
    }

    /// Storage nodes: id, address, zone, host, state, groups.
    fn nodes<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let conn = self.conn(py)?;
        let s = conn.run(py, conn.client.cluster_status())?;
        s.nodes
            .iter()
            .map(|n| {
                let d = PyDict::new(py);
                d.set_item("id", n.id.to_string())?;
                d.set_item("addr", n.addr.as_str())?;
                d.set_item("zone", n.zone.as_str())?;
                d.set_item("host", n.host.as_str())?;
                d.set_item("state", n.state.as_str())?;
                d.set_item("groups", n.groups.clone())?;
                Ok(d)
            })
            .collect()
    }
}

/// Open a file for reading with the opener's cues, at `version` if given
/// (the current one or one its `versions=` cue kept); a symlink is refused,
/// as Cairn paths do not follow links.
pub async fn open_file(
    client: &Client,
    p: &CairnPath,
    c: &Cues,
    version: Option<u64>,
) -> Result<cairn_client::FileReader> {
    let r = match version {
        Some(v) => client.open_version(p, Version(v)).await?,
        None => client.open_cued(p, c).await?,
    };
    if let Some(t) = &r.inode().target {
        return Err(Error::invalid(format!(
            "{p} is a symbolic link to {t}; read its target instead"
        )));
    }
    Ok(r)
}
