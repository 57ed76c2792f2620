//! Advisory locks through meta's lock table (`cairn_meta::locks`): the
//! mount's `flock`/`fcntl` locks, `cairn lock`, the Python package.
//!
//! A [`LockSession`] opens a session with meta on its first lock and keeps
//! it alive in the background (every third of its time to live). Once meta
//! says the session lapsed (this client was cut off or stalled for longer
//! than the lease) every lock taken under it is gone — another client may
//! hold it now — and the next request opens a new session: a lock must be
//! taken again, never silently assumed.

use crate::client::unexpected;
use crate::Client;
use cairn_proto::{LockAnswer, LockKind, LockOwner, LockRequest, MetaRequest, MetaResponse};
use cairn_types::{CairnPath, Result};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::warn;

/// A client's lock session with meta; cheap to share (`Arc`).
pub struct LockSession {
    client: Client,
    ttl_ms: u32,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// The live session, as far as this client knows, and its keepalive.
    current: Option<(u64, tokio::task::JoinHandle<()>)>,
    /// Sessions meta reported lapsed (their locks are gone).
    lapsed: u64,
}

impl Client {
    /// A lock session whose locks outlive this client by at most `ttl`
    /// once it stops keeping them alive (it dies, or is cut off).
    pub fn lock_session(&self, ttl: Duration) -> LockSession {
        LockSession {
            client: self.clone(),
            ttl_ms: ttl.as_millis().clamp(1, u32::MAX as u128) as u32,
            state: Default::default(),
        }
    }
}

impl LockSession {
    /// The session id, opening a session if there is none.
    async fn session(&self) -> Result<u64> {
        if let Some((s, _)) = &self.state.lock().unwrap().current {
            return Ok(*s);
        }
        let (session, ttl_ms) = match self
            .client
            .meta(MetaRequest::LockSession {
                ttl_ms: self.ttl_ms,
            })
            .await?
        {
            MetaResponse::LockSession { session, ttl_ms } => (session, ttl_ms),
            other => return Err(unexpected(other)),
        };
        let keepalive = tokio::spawn(keep_alive(
            self.client.clone(),
            self.state.clone(),
            session,
            Duration::from_millis(ttl_ms as u64 / 3),
        ));
        let mut st = self.state.lock().unwrap();
        if let Some((s, _)) = &st.current {
            // Another task opened one meanwhile: use it, end ours (it
            // lapses on its own if this end is lost).
            keepalive.abort();
            let (c, ours) = (self.client.clone(), session);
            tokio::spawn(async move {
                let _ = c.meta(MetaRequest::LockEnd { session: ours }).await;
            });
            return Ok(*s);
        }
        st.current = Some((session, keepalive));
        Ok(session)
    }

    /// Forget `session` after meta said it lapsed.
    fn lapsed(&self, session: u64) {
        lapse(&self.state, session);
    }

    /// How many sessions lapsed so far (each lost every lock it held).
    pub fn lapsed_count(&self) -> u64 {
        self.state.lock().unwrap().lapsed
    }

    /// Take, change or release (`LockKind::Unlock`) `owner`'s lock on
    /// bytes `start..=end` of `path`. With `wait`, blocks (in meta's queue)
    /// until it is granted or would deadlock; dropping the future gives up
    /// the wait once meta notices (the owner's next release, or a few
    /// seconds). Answers `Granted`, `Conflict` (not waiting) or `Deadlock`.
    #[allow(clippy::too_many_arguments)]
    pub async fn lock(
        &self,
        path: &CairnPath,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
        pid: u32,
        wait: bool,
    ) -> Result<LockAnswer> {
        let mut renewed = false;
        loop {
            let session = self.session().await?;
            let lock = LockRequest {
                path: path.clone(),
                owner: LockOwner { session, owner },
                kind,
                start,
                end,
                pid,
            };
            let answer = match self.client.meta(MetaRequest::Lock { lock, wait }).await? {
                MetaResponse::Lock(a) => a,
                other => return Err(unexpected(other)),
            };
            match answer {
                LockAnswer::Waiting if wait => continue,
                LockAnswer::SessionExpired => {
                    self.lapsed(session);
                    // Nothing is held under a lapsed session: a release is done.
                    if kind == LockKind::Unlock {
                        return Ok(LockAnswer::Granted);
                    }
                    if renewed {
                        return Ok(LockAnswer::SessionExpired);
                    }
                    renewed = true;
                }
                a => return Ok(a),
            }
        }
    }

    /// Give up `owner`'s waiting request for this lock (its caller was
    /// interrupted): meta drops it from the queue and does not grant it.
    pub async fn cancel(
        &self,
        path: &CairnPath,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
    ) -> Result<()> {
        let current = self.state.lock().unwrap().current.as_ref().map(|(s, _)| *s);
        let Some(session) = current else {
            return Ok(());
        };
        let lock = LockRequest {
            path: path.clone(),
            owner: LockOwner { session, owner },
            kind,
            start,
            end,
            pid: 0,
        };
        self.client.meta(MetaRequest::LockCancel { lock }).await?;
        Ok(())
    }

    /// Whether `owner` could take the lock now (`F_GETLK`): `Granted` or
    /// `Conflict(holder)`.
    pub async fn test(
        &self,
        path: &CairnPath,
        owner: u64,
        kind: LockKind,
        start: u64,
        end: u64,
    ) -> Result<LockAnswer> {
        for _ in 0..2 {
            let session = self.session().await?;
            let lock = LockRequest {
                path: path.clone(),
                owner: LockOwner { session, owner },
                kind,
                start,
                end,
                pid: 0,
            };
            match self.client.meta(MetaRequest::TestLock { lock }).await? {
                MetaResponse::Lock(LockAnswer::SessionExpired) => self.lapsed(session),
                MetaResponse::Lock(a) => return Ok(a),
                other => return Err(unexpected(other)),
            }
        }
        Ok(LockAnswer::SessionExpired)
    }

    /// End the session: every lock under it is released at once.
    pub async fn end(&self) -> Result<()> {
        let current = self.state.lock().unwrap().current.take();
        if let Some((session, keepalive)) = current {
            keepalive.abort();
            self.client.meta(MetaRequest::LockEnd { session }).await?;
        }
        Ok(())
    }
}

impl Drop for LockSession {
    fn drop(&mut self) {
        // Without an `end`, the session lapses after its time to live.
        if let Some((_, keepalive)) = self.state.lock().unwrap().current.take() {
            keepalive.abort();
        }
    }
}

fn lapse(state: &Mutex<State>, session: u64) {
    let mut st = state.lock().unwrap();
    if matches!(&st.current, Some((s, _)) if *s == session) {
        let (_, keepalive) = st.current.take().unwrap();
        keepalive.abort();
        st.lapsed += 1;
        warn!(session, "lock session lapsed: its locks are released");
    }
}

async fn keep_alive(client: Client, state: Arc<Mutex<State>>, session: u64, every: Duration) {
    let every = every.max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        match client.meta(MetaRequest::LockKeepalive { session }).await {
            Ok(MetaResponse::Lock(LockAnswer::SessionExpired)) => {
                // `lapse` aborts this task: do it from another.
                let state = state.clone();
                tokio::spawn(async move { lapse(&state, session) });
                return;
            }
            Ok(_) => {}
            // Meta unreachable: keep trying; meta decides when it lapsed.
            Err(e) => warn!(session, "lock keepalive: {e}"),
        }
    }
}
