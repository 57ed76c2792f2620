//! `flock(2)` and `fcntl(2)` record locks, held in meta's lock table so
//! that they exclude across every mount (and `cairn lock`, and Python).
//!
//! The mount asks the kernel for remote locking (`FUSE_POSIX_LOCKS`,
//! `FUSE_FLOCK_LOCKS`): every lock request comes here with the kernel's lock
//! owner (a process's file table for POSIX locks, the open file for
//! `flock`), and none is kept in the kernel. Releases follow the kernel's
//! calls: a `flush` (any `close` by the process) drops the owner's POSIX
//! locks, a `release` with the flock flag (the last close of the open file)
//! its `flock`. Only owners that asked for a lock on a file cost a request
//! at close; everything else closes as before.
//!
//! Blocking requests (`F_SETLKW`, blocking `flock`) wait in meta's queue.
//! A signal must interrupt them, but fuser answers the kernel's `INTERRUPT`
//! itself (not supported), after which the kernel waits for the answer
//! even for `SIGKILL`. So the mount watches the waiting thread's pending
//! signals (`/proc/<tid>/status`) and, once one is pending, leaves meta's
//! queue and answers `EINTR`, as a local file system's wait would.

use super::{errno, Errno, OpenHandle, Shared};
use cairn_proto::{LockAnswer, LockKind};
use cairn_types::CairnPath;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::warn;

/// The mount's lock state beside its lock session.
pub(crate) struct MountLocks {
    pub(crate) session: cairn_client::LockSession,
    /// (kernel ino, lock owner) that asked for a lock here.
    owners: Mutex<HashSet<(u64, u64)>>,
    /// Blocked requests, to give up when their owner closes the file.
    waits: Mutex<HashMap<(u64, u64), Vec<tokio::task::AbortHandle>>>,
}

impl MountLocks {
    pub(crate) fn new(session: cairn_client::LockSession) -> MountLocks {
        MountLocks {
            session,
            owners: Default::default(),
            waits: Default::default(),
        }
    }

    pub(crate) fn add_wait(&self, ino: u64, owner: u64, task: tokio::task::AbortHandle) {
        let mut waits = self.waits.lock().unwrap();
        let list = waits.entry((ino, owner)).or_default();
        list.retain(|t| !t.is_finished());
        list.push(task);
    }
}

/// Whether process `tid` has a signal pending that it does not block
/// (`SigPnd`/`ShdPnd` less `SigBlk` in `/proc/<tid>/status`). One this
/// mount cannot see (another pid namespace) never is.
fn signal_pending(tid: u32) -> bool {
    if tid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{tid}/status")) else {
        return false;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    (field("SigPnd:") | field("ShdPnd:")) & !field("SigBlk:") != 0
}

/// Resolves once thread `tid` has a signal pending.
pub(super) async fn signalled(tid: u32) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if signal_pending(tid) {
            return;
        }
    }
}

/// fcntl's lock type as a [`LockKind`].
pub(super) fn lock_kind(typ: i32) -> Result<LockKind, Errno> {
    match typ {
        libc::F_RDLCK => Ok(LockKind::Shared),
        libc::F_WRLCK => Ok(LockKind::Exclusive),
        libc::F_UNLCK => Ok(LockKind::Unlock),
        _ => Err(libc::EINVAL),
    }
}

/// The kernel's end of file range (`OFFSET_MAX`) for meta's `u64::MAX`.
fn kernel_end(end: u64) -> u64 {
    end.min(i64::MAX as u64)
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn set_lock(
        &self,
        ino: u64,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
        pid: u32,
        wait: bool,
    ) -> Result<(), Errno> {
        let path = self.path(ino)?;
        if kind != LockKind::Unlock {
            self.locks.owners.lock().unwrap().insert((ino, owner));
        } else if let Some(staged) = self.stages.peek(ino) {
            // What was written under the lock is in Cairn before the
            // next holder can take it.
            self.upload(&staged).await?;
        }
        let answer = self
            .locks
            .session
            .lock(&path, owner, kind, start, end, pid, wait)
            .await
            .map_err(|e| errno(&e))?;
        match answer {
            LockAnswer::Granted if kind != LockKind::Unlock => {
                self.refresh_for_lock(ino, &path).await;
                Ok(())
            }
            LockAnswer::Granted => Ok(()),
            LockAnswer::Conflict(_) => Err(libc::EAGAIN),
            LockAnswer::Deadlock => Err(libc::EDEADLK),
            LockAnswer::Waiting | LockAnswer::SessionExpired => Err(libc::ENOLCK),
        }
    }

    /// A lock was granted: what this mount has open of the file moves to
    /// the latest version (the last holder's writes), and the kernel drops
    /// the pages it cached of the old one. Best effort: a failure leaves
    /// the open version, as without the lock.
    async fn refresh_for_lock(&self, ino: u64, path: &CairnPath) {
        let cues = self.access_cues(ino);
        let changed = if let Some(staged) = self.stages.peek(ino) {
            match staged.refresh(&self.client, path, &cues).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(%path, "refreshing the open file after a lock: {e}");
                    false
                }
            }
        } else {
            self.refresh_readers(ino, path, &cues).await
        };
        if changed {
            if let Some(n) = self.notifier.get() {
                if let Err(e) = n.inval_inode(ino, 0, 0) {
                    warn!(ino, "could not invalidate the kernel's pages: {e}");
                }
            }
        }
        self.forget_names_near(path).await;
    }

    /// The names the kernel caches next to a file just locked are looked
    /// up again: the last holder may have made or removed companions of
    /// it (SQLite's journal, which the next holder checks with `access`
    /// and must not see when it is gone, nor miss when it is there).
    async fn forget_names_near(&self, path: &CairnPath) {
        let (Some(n), Some((dir, _))) = (self.notifier.get().cloned(), path.split_last()) else {
            return;
        };
        let Some((dir_ino, names)) = self.inodes.lock().unwrap().known_children(&dir) else {
            return;
        };
        // On a thread of its own: the kernel takes the directory's lock,
        // which a request of ours in that directory may hold while it
        // waits for this runtime to answer it.
        let done = tokio::task::spawn_blocking(move || {
            for name in names {
                // ENOENT: the kernel had already let it go.
                if let Err(e) = n.inval_entry(dir_ino, std::ffi::OsStr::new(&name)) {
                    if e.raw_os_error() != Some(libc::ENOENT) {
                        warn!(%dir, name, "could not invalidate the kernel's entry: {e}");
                    }
                }
            }
        });
        let _ = done.await;
    }

    /// Move this mount's read handles of `ino` to the latest version.
    async fn refresh_readers(&self, ino: u64, path: &CairnPath, cues: &cairn_types::Cues) -> bool {
        let real = self.real(ino);
        let open_version = self.handles.lock().unwrap().values().find_map(|h| match h {
            OpenHandle::Reader(r) if r.inode().id.0 == real => Some(r.inode().version),
            _ => None,
        });
        let Some(version) = open_version else {
            return false;
        };
        let fresh = match self.client.open_cued(path, cues).await {
            Ok(r) if r.inode().version != version && r.inode().id.0 == real => Arc::new(r),
            _ => return false,
        };
        for h in self.handles.lock().unwrap().values_mut() {
            if let OpenHandle::Reader(r) = h {
                if r.inode().id.0 == real {
                    *r = fresh.clone();
                }
            }
        }
        true
    }

    /// A blocking [`Shared::set_lock`] that a signal to the waiting thread
    /// interrupts (`EINTR`; the request leaves meta's queue).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn set_lock_wait(
        &self,
        ino: u64,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
        pid: u32,
    ) -> Result<(), Errno> {
        tokio::select! {
            r = self.set_lock(ino, owner, kind, start, end, pid, true) => r,
            _ = signalled(pid) => {
                if let Ok(path) = self.path(ino) {
                    if let Err(e) = self.locks.session.cancel(&path, owner, kind, start, end).await {
                        warn!(%path, owner, "leaving the lock queue: {e}");
                    }
                }
                Err(libc::EINTR)
            }
        }
    }

    /// `F_GETLK`: the conflicting lock as (start, end, type, pid), or
    /// `F_UNLCK` when the request could be granted.
    pub(super) async fn get_lock(
        &self,
        ino: u64,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
    ) -> Result<(u64, u64, i32, u32), Errno> {
        let path = self.path(ino)?;
        let answer = self
            .locks
            .session
            .test(&path, owner, kind, start, end)
            .await
            .map_err(|e| errno(&e))?;
        Ok(match answer {
            LockAnswer::Conflict(h) => {
                let typ = match h.kind {
                    LockKind::Exclusive => libc::F_WRLCK,
                    _ => libc::F_RDLCK,
                };
                (h.start, kernel_end(h.end), typ, h.pid)
            }
            _ => (start, kernel_end(end), libc::F_UNLCK, 0),
        })
    }

    /// The owner closed the file: if it asked for locks on it here, give
    /// up its blocked requests and answer whether it had any (`None`: it
    /// never asked for a lock, nothing to release).
    pub(super) fn lock_owner_closed(&self, ino: u64, owner: u64) -> Option<bool> {
        if !self.locks.owners.lock().unwrap().remove(&(ino, owner)) {
            return None;
        }
        let waits = self.locks.waits.lock().unwrap().remove(&(ino, owner));
        let mut gave_up = false;
        for t in waits.into_iter().flatten() {
            gave_up |= !t.is_finished();
            t.abort();
        }
        Some(gave_up)
    }

    /// Release every lock `owner` holds on `ino` (after
    /// [`Shared::lock_owner_closed`]).
    pub(super) async fn release_lock_owner(self: &Arc<Self>, ino: u64, owner: u64, gave_up: bool) {
        let Ok(path) = self.path(ino) else { return };
        let unlock = move |s: Arc<Shared>, path: CairnPath| async move {
            let r = s
                .locks
                .session
                .lock(&path, owner, LockKind::Unlock, 0, u64::MAX, 0, false)
                .await;
            if let Err(e) = r {
                warn!(%path, owner, "releasing locks at close: {e}");
            }
        };
        unlock(self.clone(), path.clone()).await;
        if gave_up {
            // A request given up may still be granted while meta holds it
            // (up to its hold time): release once more after that.
            let s = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(META_HOLD + Duration::from_secs(1)).await;
                unlock(s, path).await;
            });
        }
    }
}

/// How long meta holds a blocked request before answering `Waiting`
/// (`cairn_meta::locks::HOLD`).
const META_HOLD: Duration = Duration::from_secs(4);
