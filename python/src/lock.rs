//! Advisory locks on Cairn files, in the table every mount's `flock` and
//! `fcntl` locks and `cairn lock` use (`cairn_client::LockSession`).

use crate::conn::{Conn, ForkGuard};
use crate::errors::to_py;
use cairn_client::LockSession;
use cairn_proto::{LockAnswer, LockKind};
use cairn_types::{CairnPath, Error};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one blocking step runs before Python gets to see Ctrl-C.
const STEP: Duration = Duration::from_millis(500);

/// A whole-file lock of one owner: this object.
#[pyclass(frozen, module = "cairn._native")]
pub struct NativeLock {
    inner: ForkGuard<(Arc<Conn>, Arc<LockSession>)>,
    path: CairnPath,
    kind: LockKind,
    owner: u64,
    held: AtomicBool,
    /// The session's lapse count when the lock was granted.
    lapsed_at_grant: AtomicU64,
}

impl NativeLock {
    pub fn new(conn: Arc<Conn>, path: CairnPath, shared: bool, lease: Duration) -> NativeLock {
        let session = Arc::new(conn.client.lock_session(lease));
        NativeLock {
            inner: ForkGuard::new((conn, session)),
            path,
            kind: if shared {
                LockKind::Shared
            } else {
                LockKind::Exclusive
            },
            owner: fastrand::u64(..) | 1,
            held: AtomicBool::new(false),
            lapsed_at_grant: AtomicU64::new(0),
        }
    }

    fn parts(&self, py: Python<'_>) -> PyResult<&(Arc<Conn>, Arc<LockSession>)> {
        self.inner.get("lock").map_err(|e| to_py(py, e))
    }
}

#[pymethods]
impl NativeLock {
    /// Take the lock; with `blocking`, wait for it (up to `timeout`
    /// seconds; None: as long as it takes). Answers whether it was taken.
    #[pyo3(signature = (blocking=true, timeout=None))]
    fn acquire(&self, py: Python<'_>, blocking: bool, timeout: Option<f64>) -> PyResult<bool> {
        if self.held.load(Ordering::SeqCst) {
            return Err(to_py(
                py,
                Error::invalid(format!("{} is already locked by this object", self.path)),
            ));
        }
        let (conn, session) = self.parts(py)?;
        let deadline = timeout
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(|t| Instant::now() + Duration::from_secs_f64(t));
        let pid = std::process::id();
        loop {
            // One step at a time, so that Ctrl-C is seen; asking again as
            // the same owner keeps the place in meta's queue (and a grant
            // meta made meanwhile is found, not lost).
            let step = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(STEP),
                None => STEP,
            };
            let ask = session.lock(
                &self.path,
                self.owner,
                self.kind,
                0,
                u64::MAX,
                pid,
                blocking,
            );
            let r: PyResult<Option<LockAnswer>> = conn.run(py, async {
                match tokio::time::timeout(step.max(Duration::from_millis(1)), ask).await {
                    Ok(r) => r.map(Some),
                    Err(_) => Ok(None),
                }
            });
            let gave_up = match r {
                Ok(Some(LockAnswer::Granted)) => {
                    self.lapsed_at_grant
                        .store(session.lapsed_count(), Ordering::SeqCst);
                    self.held.store(true, Ordering::SeqCst);
                    return Ok(true);
                }
                Ok(Some(LockAnswer::Conflict(_))) => return Ok(false),
                Ok(Some(LockAnswer::Deadlock)) => {
                    return Err(to_py(
                        py,
                        Error::conflict(format!("locking {} would deadlock", self.path)),
                    ))
                }
                Ok(Some(other)) => {
                    return Err(to_py(
                        py,
                        Error::unavailable(format!("could not lock {}: {other:?}", self.path)),
                    ))
                }
                Ok(None) => deadline.is_some_and(|d| Instant::now() >= d),
                Err(e) => return Err(e),
            };
            let interrupted = py.check_signals();
            if gave_up || interrupted.is_err() {
                // Nothing was held before: releasing everything leaves
                // the queue and undoes a grant made as we gave up.
                let _ = conn.run(
                    py,
                    session.lock(
                        &self.path,
                        self.owner,
                        LockKind::Unlock,
                        0,
                        u64::MAX,
                        pid,
                        false,
                    ),
                );
                interrupted?;
                return Ok(false);
            }
        }
    }

    /// Release the lock (no error if it is not held).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let (conn, session) = self.parts(py)?;
        self.held.store(false, Ordering::SeqCst);
        let pid = std::process::id();
        conn.run(py, async {
            session
                .lock(
                    &self.path,
                    self.owner,
                    LockKind::Unlock,
                    0,
                    u64::MAX,
                    pid,
                    false,
                )
                .await
                .map(|_| ())
        })
    }

    /// Whether this object holds the lock, as far as it knows; False once
    /// its session lapsed (meta unreachable past the lease: another holder
    /// may have it now).
    #[getter]
    fn held(&self, py: Python<'_>) -> PyResult<bool> {
        let (_, session) = self.parts(py)?;
        let lapsed = session.lapsed_count() != self.lapsed_at_grant.load(Ordering::SeqCst);
        Ok(self.held.load(Ordering::SeqCst) && !lapsed)
    }

    /// End the lock's session (releasing it).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let (conn, session) = self.parts(py)?;
        self.held.store(false, Ordering::SeqCst);
        conn.run(py, session.end())
    }
}
