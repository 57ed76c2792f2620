//! One process's connection to a cluster, and the rules for crossing a fork.

use cairn_client::{Client, ClientConfig};
use cairn_types::{Error, Result};
use pyo3::prelude::*;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex};

/// A runtime and a connected client, valid in the process `pid` only.
pub struct Conn {
    pub pid: u32,
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
}

impl Conn {
    /// Run `fut` to completion on this connection's runtime with the GIL
    /// released.
    pub fn run<T, F>(&self, py: Python<'_>, fut: F) -> PyResult<T>
    where
        T: Send,
        F: Future<Output = Result<T>> + Send,
    {
        py.allow_threads(|| self.rt.block_on(fut))
            .map_err(|e| crate::errors::to_py(py, e))
    }
}

/// `T` that is dropped normally in the process that made it and leaked in
/// any other: after a fork the child's copy refers to runtime threads,
/// sockets and tasks of the parent, and dropping it could block on a thread
/// that does not exist in the child.
pub struct ForkGuard<T> {
    pid: u32,
    value: ManuallyDrop<T>,
}

impl<T> ForkGuard<T> {
    pub fn new(value: T) -> ForkGuard<T> {
        ForkGuard {
            pid: std::process::id(),
            value: ManuallyDrop::new(value),
        }
    }

    /// The value, in the process that made it; an error after a fork.
    pub fn get(&self, what: &str) -> Result<&T> {
        if self.pid == std::process::id() {
            Ok(&self.value)
        } else {
            Err(Error::invalid(format!(
                "this {what} was opened in process {} before a fork; open it again in this process",
                self.pid
            )))
        }
    }
}

impl<T> Drop for ForkGuard<T> {
    fn drop(&mut self) {
        if self.pid == std::process::id() {
            // SAFETY: dropped once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
    }
}

/// The connection of the current process, made on first use in each
/// process.
pub struct ConnSlot {
    cfg: ClientConfig,
    threads: usize,
    slot: Mutex<Option<ForkGuard<Arc<Conn>>>>,
}

impl ConnSlot {
    pub fn new(cfg: ClientConfig, threads: usize) -> ConnSlot {
        ConnSlot {
            cfg,
            threads,
            slot: Mutex::new(None),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The current process's connection, connecting (with the GIL released)
    /// if this process has none yet.
    pub fn get(&self, py: Python<'_>) -> PyResult<Arc<Conn>> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        py.allow_threads(|| self.connect())
            .map_err(|e| crate::errors::to_py(py, e))
    }

    fn current(&self) -> Option<Arc<Conn>> {
        // The lock is only ever held for these few instructions, so a fork
        // cannot catch another thread holding it for long.
        let g = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().and_then(|c| c.get("client").ok().cloned())
    }

    fn connect(&self) -> Result<Arc<Conn>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads)
            .thread_name("cairn-py")
            .enable_all()
            .build()
            .map_err(|e| Error::from(e).context("starting the client's I/O threads"))?;
        let client = rt
            .block_on(Client::connect(self.cfg.clone()))
            .map_err(|e| {
                e.context(format!(
                "connecting to meta at {} (is a cluster running? start one with 'cairn server')",
                self.cfg.meta.join(",")
            ))
            })?;
        let fresh = Arc::new(Conn {
            pid: std::process::id(),
            rt,
            client,
        });
        let mut g = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.as_ref().and_then(|c| c.get("client").ok()) {
            // Another thread of this process connected meanwhile: use its
            // connection (and its caches); ours is dropped after the lock.
            let theirs = c.clone();
            drop(g);
            drop(fresh);
            return Ok(theirs);
        }
        // A parent's connection, if any, is leaked by its ForkGuard.
        *g = Some(ForkGuard::new(fresh.clone()));
        Ok(fresh)
    }
}
