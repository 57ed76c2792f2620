//! Advisory locks across machines: `flock` and POSIX byte-range locks of
//! every mount, and `cairn lock` / the Python package, in one table.
//!
//! Kept in the store beside the namespace, with the same transaction
//! discipline, so several metas on etcd never grant conflicting locks and a
//! restarted meta keeps what it granted:
//!
//! - `L/<inode>`: the file's [`LockRecord`]: locks held and owners queued
//!   for one, changed only by a transaction conditioned on the record's
//!   revision;
//! - `S/<session>`: a lock session's expiry (wall-clock ms). A client's
//!   locks live as long as it keeps its session alive; once the session
//!   lapses every request under it answers `SessionExpired` and its locks
//!   are ignored (and dropped from a record the next time it is written);
//! - `W/<session><owner>`: what an owner waits for, for deadlock detection.
//!
//! A waiting request queues in the record (first come, first served: a
//! waiter is granted only when no holder and no earlier waiter conflicts)
//! and meta holds its answer for [`HOLD`], woken by every lock change on
//! this meta and polling for changes made through others. Blocking
//! requests that meta answers `Waiting` ask again to keep their place; a
//! waiter that stops asking drops out of the queue after [`WAITER_STALE`].

use crate::store::{MetaStore, Txn};
use cairn_proto::{LockAnswer, LockHeld, LockKind, LockOwner, LockRequest};
use cairn_types::{now_ms, Error, ErrorKind, InodeId, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const LOCK_PREFIX: &[u8] = b"L/";
const SESSION_PREFIX: &[u8] = b"S/";
const WAIT_PREFIX: &[u8] = b"W/";

/// How long meta holds a blocked request's answer before `Waiting`.
pub const HOLD: Duration = Duration::from_secs(4);
/// How often a blocked request looks again (for changes through other metas).
const POLL: Duration = Duration::from_millis(200);
/// A queued waiter that has not asked again for this long is gone.
const WAITER_STALE: u64 = 3 * HOLD.as_millis() as u64;
/// A lapsed session's record is kept this long (its holder's next request
/// is answered `SessionExpired` rather than treated as a new session's).
const SESSION_GRACE_MS: u64 = 10 * 60 * 1000;
/// Bounds on a session's time to live.
pub const MIN_TTL_MS: u32 = 500;
pub const MAX_TTL_MS: u32 = 300_000;

/// The locks of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Disjoint per owner; an owner's ranges of one kind never touch.
    pub held: Vec<Held>,
    /// Queued blocking requests, in ticket order.
    pub waiting: Vec<Waiter>,
    pub next_ticket: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub owner: LockOwner,
    pub exclusive: bool,
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    pub pid: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub owner: LockOwner,
    pub exclusive: bool,
    pub start: u64,
    pub end: u64,
    pub ticket: u64,
    /// When the waiter last asked (wall-clock ms).
    pub seen_ms: u64,
}

/// What an owner waits for (`W/` records).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WaitRecord {
    inode: u64,
    exclusive: bool,
    start: u64,
    end: u64,
    seen_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SessionRecord {
    expires_ms: u64,
    ttl_ms: u32,
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

fn touches(a: (u64, u64), b: (u64, u64)) -> bool {
    a.1.checked_add(1) == Some(b.0) || b.1.checked_add(1) == Some(a.0)
}

impl LockRecord {
    /// A lock of another owner that conflicts with `owner` taking
    /// `start..=end` (shared or `exclusive`).
    pub fn conflict(
        &self,
        owner: LockOwner,
        exclusive: bool,
        start: u64,
        end: u64,
    ) -> Option<&Held> {
        self.held.iter().find(|h| {
            h.owner != owner
                && (h.exclusive || exclusive)
                && overlaps((h.start, h.end), (start, end))
        })
    }

    /// Whether `owner` holds exactly this kind of lock on all of `start..=end`.
    pub fn holds(&self, owner: LockOwner, exclusive: bool, start: u64, end: u64) -> bool {
        // An owner's ranges of one kind never touch, so one covers it all.
        self.held.iter().any(|h| {
            h.owner == owner && h.exclusive == exclusive && h.start <= start && end <= h.end
        })
    }

    /// Set `owner`'s lock on `start..=end` to `kind`, as POSIX does: what
    /// the owner held there is replaced (upgraded, downgraded, released),
    /// ranges split where the new one cuts them, and merged with the
    /// owner's touching ranges of the same kind.
    pub fn set(&mut self, owner: LockOwner, kind: LockKind, start: u64, end: u64, pid: u32) {
        let mut out = Vec::with_capacity(self.held.len() + 2);
        for h in self.held.drain(..) {
            if h.owner != owner || !overlaps((h.start, h.end), (start, end)) {
                out.push(h);
                continue;
            }
            if h.start < start {
                out.push(Held {
                    end: start - 1,
                    ..h.clone()
                });
            }
            if h.end > end {
                out.push(Held {
                    start: end + 1,
                    ..h.clone()
                });
            }
        }
        if kind != LockKind::Unlock {
            let mut new = Held {
                owner,
                exclusive: kind == LockKind::Exclusive,
                start,
                end,
                pid,
            };
            out.retain(|h| {
                let same = h.owner == owner && h.exclusive == new.exclusive;
                if same && touches((h.start, h.end), (new.start, new.end)) {
                    new.start = new.start.min(h.start);
                    new.end = new.end.max(h.end);
                    return false;
                }
                true
            });
            out.push(new);
        }
        out.sort_by_key(|h| (h.start, h.owner));
        self.held = out;
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty() && self.waiting.is_empty()
    }
}

fn lock_key(inode: InodeId) -> Vec<u8> {
    let mut k = LOCK_PREFIX.to_vec();
    k.extend_from_slice(&inode.0.to_be_bytes());
    k
}

fn session_key(session: u64) -> Vec<u8> {
    let mut k = SESSION_PREFIX.to_vec();
    k.extend_from_slice(&session.to_be_bytes());
    k
}

fn wait_key(owner: LockOwner) -> Vec<u8> {
    let mut k = WAIT_PREFIX.to_vec();
    k.extend_from_slice(&owner.session.to_be_bytes());
    k.extend_from_slice(&owner.owner.to_be_bytes());
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| Error::internal(e.to_string()))
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::corrupt(format!("{what} record: {e}")))
}

/// An end of `i64::MAX` or more (fcntl's `OFFSET_MAX`, a length of 0) is
/// "to the end of the file, however long".
fn normalize_end(end: u64) -> u64 {
    if end >= i64::MAX as u64 {
        u64::MAX
    } else {
        end
    }
}

fn held_answer(h: &Held) -> LockHeld {
    LockHeld {
        owner: h.owner,
        kind: if h.exclusive {
            LockKind::Exclusive
        } else {
            LockKind::Shared
        },
        start: h.start,
        end: h.end,
        pid: h.pid,
    }
}

/// The lock table of one meta server (the records are shared through the store).
pub struct Locks {
    store: Arc<dyn MetaStore>,
    /// Bumped on every change this meta makes; blocked requests watch it.
    changed: watch::Sender<u64>,
}

impl Locks {
    pub fn new(store: Arc<dyn MetaStore>) -> Locks {
        Locks {
            store,
            changed: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub async fn open_session(&self, ttl_ms: u32) -> Result<(u64, u32)> {
        let ttl_ms = ttl_ms.clamp(MIN_TTL_MS, MAX_TTL_MS);
        loop {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).map_err(|e| Error::internal(e.to_string()))?;
            let session = u64::from_le_bytes(b);
            if session == 0 {
                continue;
            }
            let rec = SessionRecord {
                expires_ms: now_ms() + ttl_ms as u64,
                ttl_ms,
            };
            let txn = Txn::new()
                .when(session_key(session), 0)
                .put(session_key(session), encode(&rec)?);
            match self.store.commit(txn).await {
                Ok(_) => return Ok((session, ttl_ms)),
                Err(e) if e.kind == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A session's record and revision, if it is still alive.
    async fn session(&self, session: u64) -> Result<Option<(SessionRecord, u64)>> {
        let Some((v, rev)) = self.store.get(&session_key(session)).await? else {
            return Ok(None);
        };
        let rec: SessionRecord = decode(&v, "lock session")?;
        Ok((rec.expires_ms > now_ms()).then_some((rec, rev)))
    }

    pub async fn keepalive(&self, session: u64) -> Result<LockAnswer> {
        loop {
            let Some((rec, rev)) = self.session(session).await? else {
                // Lapsed: remove the record, so it never comes back.
                let _ = self
                    .store
                    .commit(Txn::new().delete(session_key(session)))
                    .await;
                self.bump();
                return Ok(LockAnswer::SessionExpired);
            };
            let renewed = SessionRecord {
                expires_ms: now_ms() + rec.ttl_ms as u64,
                ..rec
            };
            let txn = Txn::new()
                .when(session_key(session), rev)
                .put(session_key(session), encode(&renewed)?);
            match self.store.commit(txn).await {
                Ok(_) => return Ok(LockAnswer::Granted),
                Err(e) if e.kind == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// End a session: its locks are released at once (they are ignored
    /// from now on, and removed from each record on its next change).
    pub async fn end_session(&self, session: u64) -> Result<()> {
        self.store
            .commit(Txn::new().delete(session_key(session)))
            .await?;
        self.bump();
        Ok(())
    }

    /// The file's record with every lock and waiter of a dead session (and
    /// every stale waiter) left out; `true` if anything was.
    async fn live_record(
        &self,
        inode: InodeId,
        alive: &mut HashMap<u64, bool>,
    ) -> Result<(LockRecord, u64, bool)> {
        let (mut rec, rev) = match self.store.get(&lock_key(inode)).await? {
            Some((v, rev)) => (decode::<LockRecord>(&v, "lock")?, rev),
            None => (LockRecord::default(), 0),
        };
        let mut sessions: Vec<u64> = rec.held.iter().map(|h| h.owner.session).collect();
        sessions.extend(rec.waiting.iter().map(|w| w.owner.session));
        sessions.sort_unstable();
        sessions.dedup();
        for s in sessions {
            if let std::collections::hash_map::Entry::Vacant(e) = alive.entry(s) {
                e.insert(self.session(s).await?.is_some());
            }
        }
        let now = now_ms();
        let before = (rec.held.len(), rec.waiting.len());
        rec.held.retain(|h| alive[&h.owner.session]);
        rec.waiting
            .retain(|w| alive[&w.owner.session] && w.seen_ms + WAITER_STALE > now);
        let pruned = before != (rec.held.len(), rec.waiting.len());
        Ok((rec, rev, pruned))
    }

    /// Write `rec` back if it is still at `rev` (deleting it when empty).
    fn put_record(txn: Txn, inode: InodeId, rec: &LockRecord, rev: u64) -> Result<Txn> {
        let txn = txn.when(lock_key(inode), rev);
        Ok(if rec.is_empty() {
            txn.delete(lock_key(inode))
        } else {
            txn.put(lock_key(inode), encode(rec)?)
        })
    }

    /// `F_GETLK`: whether `req` could be taken now.
    pub async fn test(&self, inode: InodeId, req: &LockRequest) -> Result<LockAnswer> {
        if self.session(req.owner.session).await?.is_none() {
            return Ok(LockAnswer::SessionExpired);
        }
        let end = normalize_end(req.end);
        check_range(req.start, end)?;
        if req.kind == LockKind::Unlock {
            return Ok(LockAnswer::Granted);
        }
        let (rec, _, _) = self.live_record(inode, &mut HashMap::new()).await?;
        let exclusive = req.kind == LockKind::Exclusive;
        Ok(match rec.conflict(req.owner, exclusive, req.start, end) {
            Some(h) => LockAnswer::Conflict(held_answer(h)),
            None => LockAnswer::Granted,
        })
    }

    /// Take, change or release a lock; with `wait`, queue behind a
    /// conflicting holder for up to [`HOLD`].
    pub async fn lock(&self, inode: InodeId, req: &LockRequest, wait: bool) -> Result<LockAnswer> {
        let end = normalize_end(req.end);
        check_range(req.start, end)?;
        let owner = req.owner;
        let exclusive = req.kind == LockKind::Exclusive;
        let deadline = tokio::time::Instant::now() + HOLD;
        let mut changed = self.changed.subscribe();
        // Whether this request queued itself: if its place is gone later,
        // it was cancelled (or went stale) and must not take the lock.
        let mut queued = false;
        loop {
            changed.borrow_and_update();
            let mut alive = HashMap::new();
            let Some(_) = self.session(owner.session).await? else {
                return Ok(LockAnswer::SessionExpired);
            };
            alive.insert(owner.session, true);
            let (mut rec, rev, pruned) = self.live_record(inode, &mut alive).await?;
            if req.kind == LockKind::Unlock {
                rec.set(owner, LockKind::Unlock, req.start, end, req.pid);
                // A release of everything also gives up a queued request.
                let mut txn = Txn::new();
                if req.start == 0 && end == u64::MAX {
                    rec.waiting.retain(|w| w.owner != owner);
                    txn = txn.delete(wait_key(owner));
                }
                let txn = Self::put_record(txn, inode, &rec, rev)?;
                match self.commit_change(txn).await? {
                    true => return Ok(LockAnswer::Granted),
                    false => continue,
                }
            }
            let mine = rec.waiting.iter().position(|w| w.owner == owner);
            if rec.holds(owner, exclusive, req.start, end) && mine.is_none() {
                // Already granted (a request this owner gave up on, say):
                // asking again changes nothing.
                return Ok(LockAnswer::Granted);
            }
            if queued && mine.is_none() {
                return Ok(LockAnswer::Waiting);
            }
            let holder = rec.conflict(owner, exclusive, req.start, end).cloned();
            // First come, first served: an earlier waiter wanting what this
            // request conflicts with goes first.
            let queued_before = wait
                && rec
                    .waiting
                    .iter()
                    .take(mine.unwrap_or(rec.waiting.len()))
                    .any(|w| {
                        w.owner != owner
                            && (w.exclusive || exclusive)
                            && overlaps((w.start, w.end), (req.start, end))
                            // One waiting for this owner cannot go first
                            // (that would be a cycle no holder shows).
                            && rec
                                .conflict(w.owner, w.exclusive, w.start, w.end)
                                .is_none_or(|h| h.owner != owner)
                    });
            if holder.is_none() && !queued_before {
                rec.set(owner, req.kind, req.start, end, req.pid);
                let mut txn = Txn::new();
                if let Some(i) = mine {
                    rec.waiting.remove(i);
                    txn = txn.delete(wait_key(owner));
                }
                let txn = Self::put_record(txn, inode, &rec, rev)?;
                match self.commit_change(txn).await? {
                    true => return Ok(LockAnswer::Granted),
                    false => continue,
                }
            }
            if !wait {
                if pruned {
                    // Leave the record without the dead sessions' locks.
                    let txn = Self::put_record(Txn::new(), inode, &rec, rev)?;
                    let _ = self.store.commit(txn).await;
                }
                let h = holder.expect("only a waiting request queues behind waiters");
                return Ok(LockAnswer::Conflict(held_answer(&h)));
            }
            if let Some(h) = &holder {
                if self.would_deadlock(owner, h.owner, &mut alive).await? {
                    if mine.is_some() {
                        rec.waiting.retain(|w| w.owner != owner);
                        let txn = Txn::new().delete(wait_key(owner));
                        let txn = Self::put_record(txn, inode, &rec, rev)?;
                        let _ = self.store.commit(txn).await;
                    }
                    return Ok(LockAnswer::Deadlock);
                }
            }
            // Queue (or refresh the place in the queue), then wait.
            let now = now_ms();
            let refresh = match mine {
                None => {
                    let ticket = rec.next_ticket;
                    rec.next_ticket += 1;
                    rec.waiting.push(Waiter {
                        owner,
                        exclusive,
                        start: req.start,
                        end,
                        ticket,
                        seen_ms: now,
                    });
                    true
                }
                Some(i) => {
                    let w = &mut rec.waiting[i];
                    let stale = w.seen_ms + 1000 < now
                        || (w.exclusive, w.start, w.end) != (exclusive, req.start, end);
                    if stale {
                        *w = Waiter {
                            owner,
                            exclusive,
                            start: req.start,
                            end,
                            ticket: w.ticket,
                            seen_ms: now,
                        };
                    }
                    stale || pruned
                }
            };
            if refresh {
                let wr = WaitRecord {
                    inode: inode.0,
                    exclusive,
                    start: req.start,
                    end,
                    seen_ms: now,
                };
                let txn = Txn::new().put(wait_key(owner), encode(&wr)?);
                let txn = Self::put_record(txn, inode, &rec, rev)?;
                match self.store.commit(txn).await {
                    Ok(_) => queued = true,
                    Err(e) if e.kind == ErrorKind::Conflict => continue,
                    Err(e) => return Err(e),
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(LockAnswer::Waiting);
            }
            let nap = POLL.min(deadline - now);
            let _ = tokio::time::timeout(nap, changed.changed()).await;
        }
    }

    /// Commit a change of the table; `false` when it lost a race (start
    /// over). Wakes this meta's blocked requests.
    async fn commit_change(&self, txn: Txn) -> Result<bool> {
        match self.store.commit(txn).await {
            Ok(_) => {
                self.bump();
                Ok(true)
            }
            Err(e) if e.kind == ErrorKind::Conflict => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Take `owner`'s queued request out of the file's queue; a request
    /// meta still holds for it then answers `Waiting` instead of taking
    /// the lock.
    pub async fn cancel(&self, inode: InodeId, owner: LockOwner) -> Result<()> {
        loop {
            let (mut rec, rev, _) = self.live_record(inode, &mut HashMap::new()).await?;
            rec.waiting.retain(|w| w.owner != owner);
            let txn = Self::put_record(Txn::new().delete(wait_key(owner)), inode, &rec, rev)?;
            if self.commit_change(txn).await? {
                return Ok(());
            }
        }
    }

    /// Tidy the table: delete sessions lapsed for a while, waits gone
    /// stale, and every lock and queued request of a dead session (requests
    /// already ignore them; this bounds what the store keeps). Returns what
    /// it removed: (sessions, records rewritten).
    pub async fn sweep(&self) -> Result<(usize, usize)> {
        let now = now_ms();
        let mut dead_sessions = 0;
        let end = crate::store::prefix_end(SESSION_PREFIX);
        for kv in self.store.scan(SESSION_PREFIX, &end, usize::MAX).await? {
            let lapsed = match decode::<SessionRecord>(&kv.value, "lock session") {
                Ok(r) => r.expires_ms + SESSION_GRACE_MS < now,
                Err(_) => true,
            };
            if lapsed {
                let txn = Txn::new().when(kv.key.clone(), kv.revision).delete(kv.key);
                if self.store.commit(txn).await.is_ok() {
                    dead_sessions += 1;
                }
            }
        }
        let end = crate::store::prefix_end(WAIT_PREFIX);
        for kv in self.store.scan(WAIT_PREFIX, &end, usize::MAX).await? {
            let stale = match decode::<WaitRecord>(&kv.value, "lock wait") {
                Ok(w) => w.seen_ms + WAITER_STALE < now,
                Err(_) => true,
            };
            if stale {
                let txn = Txn::new().when(kv.key.clone(), kv.revision).delete(kv.key);
                let _ = self.store.commit(txn).await;
            }
        }
        let mut rewritten = 0;
        let end = crate::store::prefix_end(LOCK_PREFIX);
        let mut alive = HashMap::new();
        for kv in self.store.scan(LOCK_PREFIX, &end, usize::MAX).await? {
            let Some(id) = kv
                .key
                .get(LOCK_PREFIX.len()..)
                .and_then(|b| b.try_into().ok())
            else {
                continue;
            };
            let inode = InodeId(u64::from_be_bytes(id));
            let (rec, rev, pruned) = self.live_record(inode, &mut alive).await?;
            if pruned || rec.is_empty() {
                let txn = Self::put_record(Txn::new(), inode, &rec, rev)?;
                if self.store.commit(txn).await.is_ok() {
                    rewritten += 1;
                }
            }
        }
        if dead_sessions + rewritten > 0 {
            self.bump();
        }
        Ok((dead_sessions, rewritten))
    }

    /// Whether `holder`, whose lock `owner` would wait for, itself waits
    /// for a lock `owner` holds (the two-owner cycle Linux reports as
    /// `EDEADLK`).
    async fn would_deadlock(
        &self,
        owner: LockOwner,
        holder: LockOwner,
        alive: &mut HashMap<u64, bool>,
    ) -> Result<bool> {
        let Some((v, _)) = self.store.get(&wait_key(holder)).await? else {
            return Ok(false);
        };
        let w: WaitRecord = decode(&v, "lock wait")?;
        if w.seen_ms + WAITER_STALE <= now_ms() {
            return Ok(false);
        }
        let (rec, _, _) = self.live_record(InodeId(w.inode), alive).await?;
        let still_waiting = rec.waiting.iter().any(|x| x.owner == holder);
        Ok(still_waiting
            && rec
                .conflict(holder, w.exclusive, w.start, w.end)
                .map(|h| h.owner)
                == Some(owner))
    }
}

/// The leader's periodic tidying of small records: [`Locks::sweep`], and
/// the request marks of retried changes past their time
/// ([`crate::Namespace::sweep_request_marks`]).
pub struct LockSweeper {
    meta: Arc<crate::server::Meta>,
}

impl LockSweeper {
    pub fn new(meta: Arc<crate::server::Meta>) -> LockSweeper {
        LockSweeper { meta }
    }
}

#[async_trait::async_trait]
impl crate::worker::Worker for LockSweeper {
    fn name(&self) -> &'static str {
        "sweep"
    }

    async fn pass(&mut self) -> Result<crate::worker::Pass> {
        let every = Duration::from_secs(60);
        if !self.meta.election.is_leader() {
            return Ok(crate::worker::Pass {
                state: "standby",
                progress: String::new(),
                next: every,
            });
        }
        let (sessions, records) = self.meta.locks.sweep().await?;
        let marks = self.meta.ns.sweep_request_marks().await?;
        Ok(crate::worker::Pass {
            state: "idle",
            progress: format!(
                "{sessions} lapsed lock sessions, {records} lock records, {marks} request marks cleared"
            ),
            next: every,
        })
    }
}

fn check_range(start: u64, end: u64) -> Result<()> {
    if start > end {
        return Err(Error::invalid(format!(
            "lock range starts at {start}, after its end {end}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn o(n: u64) -> LockOwner {
        LockOwner {
            session: 1,
            owner: n,
        }
    }

    #[test]
    fn split_merge_upgrade_downgrade() {
        let mut r = LockRecord::default();
        r.set(o(1), LockKind::Shared, 0, 99, 1);
        r.set(o(1), LockKind::Exclusive, 10, 19, 1);
        assert_eq!(
            r.held
                .iter()
                .map(|h| (h.start, h.end, h.exclusive))
                .collect::<Vec<_>>(),
            vec![(0, 9, false), (10, 19, true), (20, 99, false)]
        );
        // Downgrading the middle merges the three back into one.
        r.set(o(1), LockKind::Shared, 10, 19, 1);
        assert_eq!(r.held.len(), 1);
        assert_eq!((r.held[0].start, r.held[0].end), (0, 99));
        // Another owner: shared coexists, exclusive conflicts only where it overlaps.
        assert!(r.conflict(o(2), false, 50, 60).is_none());
        assert!(r.conflict(o(2), true, 50, 60).is_some());
        assert!(r.conflict(o(2), true, 100, u64::MAX).is_none());
        r.set(o(1), LockKind::Unlock, 0, u64::MAX, 1);
        assert!(r.held.is_empty());
    }

    #[derive(Clone, Debug)]
    struct Step {
        owner: u64,
        kind: LockKind,
        start: u64,
        len: u64,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            0u64..3,
            prop_oneof![
                Just(LockKind::Shared),
                Just(LockKind::Exclusive),
                Just(LockKind::Unlock)
            ],
            0u64..40,
            1u64..20,
        )
            .prop_map(|(owner, kind, start, len)| Step {
                owner,
                kind,
                start,
                len,
            })
    }

    proptest! {
        /// Against a model that keeps each owner's lock on each byte: the
        /// record holds exactly the same locks, in disjoint, non-touching
        /// ranges per owner and kind, and reports a conflict exactly when
        /// the model has one.
        #[test]
        fn record_matches_per_byte_model(steps in proptest::collection::vec(step(), 1..40)) {
            const N: usize = 64;
            let mut model = [[None::<bool>; 3]; N];
            let mut r = LockRecord::default();
            for s in steps {
                let end = s.start + s.len - 1;
                let excl = s.kind == LockKind::Exclusive;
                let conflict_model = (s.start..=end).any(|b| {
                    (0..3).any(|x| x != s.owner as usize
                        && model[b as usize][x].is_some_and(|e| e || excl))
                });
                if s.kind != LockKind::Unlock {
                    prop_assert_eq!(r.conflict(o(s.owner), excl, s.start, end).is_some(), conflict_model);
                    if conflict_model {
                        continue;
                    }
                }
                r.set(o(s.owner), s.kind, s.start, end, 7);
                for b in s.start..=end {
                    model[b as usize][s.owner as usize] =
                        (s.kind != LockKind::Unlock).then_some(excl);
                }
                for b in 0..N as u64 {
                    for x in 0..3u64 {
                        let got: Vec<_> = r.held.iter()
                            .filter(|h| h.owner == o(x) && h.start <= b && b <= h.end)
                            .map(|h| h.exclusive).collect();
                        prop_assert!(got.len() <= 1);
                        prop_assert_eq!(got.first().copied(), model[b as usize][x as usize]);
                    }
                }
                for a in &r.held {
                    for b in &r.held {
                        if a != b && a.owner == b.owner && a.exclusive == b.exclusive {
                            prop_assert!(!touches((a.start, a.end), (b.start, b.end)));
                        }
                    }
                }
            }
        }
    }

    fn req(session: u64, owner: u64, kind: LockKind, start: u64, end: u64) -> LockRequest {
        LockRequest {
            path: cairn_types::CairnPath::parse("/f").unwrap(),
            owner: LockOwner { session, owner },
            kind,
            start,
            end,
            pid: owner as u32,
        }
    }

    async fn table() -> (tempfile::TempDir, Arc<Locks>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> =
            Arc::new(crate::RedbStore::open(&dir.path().join("m.redb")).unwrap());
        (dir, Arc::new(Locks::new(store)))
    }

    /// Wait, with a deadline, until `session` has a request queued on `inode`.
    async fn queued(t: &Locks, inode: InodeId, session: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((v, _)) = t.store.get(&lock_key(inode)).await.unwrap() {
                let rec: LockRecord = decode(&v, "lock").unwrap();
                if rec.waiting.iter().any(|w| w.owner.session == session) {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session {session} never queued"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn sessions_waits_fifo_and_deadlock() {
        let (_d, t) = table().await;
        let f = InodeId(9);
        let g = InodeId(10);
        let (a, _) = t.open_session(5_000).await.unwrap();
        let (b, _) = t.open_session(5_000).await.unwrap();
        let (c, _) = t.open_session(5_000).await.unwrap();
        let ex = LockKind::Exclusive;
        assert_eq!(
            t.lock(f, &req(a, 1, ex, 0, u64::MAX), false).await.unwrap(),
            LockAnswer::Granted
        );
        match t.lock(f, &req(b, 1, ex, 5, 5), false).await.unwrap() {
            LockAnswer::Conflict(h) => assert_eq!((h.owner.session, h.pid), (a, 1)),
            other => panic!("{other:?}"),
        }
        // b then c queue; a's release lets b in first, c still waits.
        let t2 = t.clone();
        let wb = tokio::spawn(async move { t2.lock(f, &req(b, 1, ex, 0, 9), true).await });
        queued(&t, f, b).await;
        let t3 = t.clone();
        let wc = tokio::spawn(async move { t3.lock(f, &req(c, 1, ex, 0, 9), true).await });
        queued(&t, f, c).await;
        // While b waits for f, b holds g; a asking for g (which b holds)
        // while b waits for a is the two-owner cycle.
        assert_eq!(
            t.lock(g, &req(b, 1, ex, 0, 0), false).await.unwrap(),
            LockAnswer::Granted
        );
        assert_eq!(
            t.lock(g, &req(a, 1, ex, 0, 0), true).await.unwrap(),
            LockAnswer::Deadlock
        );
        assert_eq!(
            t.lock(f, &req(a, 1, LockKind::Unlock, 0, u64::MAX), false)
                .await
                .unwrap(),
            LockAnswer::Granted
        );
        assert_eq!(wb.await.unwrap().unwrap(), LockAnswer::Granted);
        // c is still queued: its answer is Waiting once the hold runs out.
        assert_eq!(wc.await.unwrap().unwrap(), LockAnswer::Waiting);
        // b asking again for what it holds, with waiters queued, is granted at once.
        assert_eq!(
            t.lock(f, &req(b, 1, ex, 0, 9), true).await.unwrap(),
            LockAnswer::Granted
        );
        // A cancelled waiter is not granted, though meta still holds its request.
        let t4 = t.clone();
        let (d, _) = t.open_session(5_000).await.unwrap();
        let wd = tokio::spawn(async move { t4.lock(f, &req(d, 1, ex, 0, 9), true).await });
        queued(&t, f, d).await;
        t.cancel(
            f,
            LockOwner {
                session: d,
                owner: 1,
            },
        )
        .await
        .unwrap();
        assert_eq!(wd.await.unwrap().unwrap(), LockAnswer::Waiting);
        // Ending b's session frees f for c.
        t.end_session(b).await.unwrap();
        assert_eq!(
            t.lock(f, &req(c, 1, ex, 0, 9), true).await.unwrap(),
            LockAnswer::Granted
        );
        assert_eq!(t.keepalive(b).await.unwrap(), LockAnswer::SessionExpired);
        assert_eq!(
            t.lock(f, &req(b, 2, ex, 20, 30), false).await.unwrap(),
            LockAnswer::SessionExpired
        );
    }

    #[tokio::test]
    async fn sweep_drops_dead_sessions_locks() {
        let (_d, t) = table().await;
        let (a, _) = t.open_session(60_000).await.unwrap();
        let ex = LockKind::Exclusive;
        assert_eq!(
            t.lock(InodeId(4), &req(a, 1, ex, 0, 9), false)
                .await
                .unwrap(),
            LockAnswer::Granted
        );
        assert_eq!(t.sweep().await.unwrap(), (0, 0));
        t.end_session(a).await.unwrap();
        assert_eq!(t.sweep().await.unwrap(), (0, 1));
        assert!(t.store.get(&lock_key(InodeId(4))).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn granted_locks_survive_a_meta_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = || -> Arc<dyn MetaStore> {
            Arc::new(crate::RedbStore::open(&dir.path().join("m.redb")).unwrap())
        };
        let t = Locks::new(open());
        let (a, _) = t.open_session(60_000).await.unwrap();
        let ex = LockKind::Exclusive;
        assert_eq!(
            t.lock(InodeId(5), &req(a, 1, ex, 0, 99), false)
                .await
                .unwrap(),
            LockAnswer::Granted
        );
        drop(t);
        let t = Locks::new(open());
        let (b, _) = t.open_session(60_000).await.unwrap();
        assert!(matches!(
            t.lock(InodeId(5), &req(b, 1, ex, 50, 50), false)
                .await
                .unwrap(),
            LockAnswer::Conflict(_)
        ));
        assert_eq!(t.keepalive(a).await.unwrap(), LockAnswer::Granted);
    }

    #[tokio::test]
    async fn a_lapsed_session_loses_its_locks_and_only_then() {
        let (_d, t) = table().await;
        let f = InodeId(3);
        let (a, ttl) = t.open_session(MIN_TTL_MS).await.unwrap();
        assert_eq!(ttl, MIN_TTL_MS);
        let (b, _) = t.open_session(60_000).await.unwrap();
        let ex = LockKind::Exclusive;
        assert_eq!(
            t.lock(f, &req(a, 1, ex, 0, u64::MAX), false).await.unwrap(),
            LockAnswer::Granted
        );
        // Kept alive past its first ttl, it still holds.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(t.keepalive(a).await.unwrap(), LockAnswer::Granted);
        }
        assert!(matches!(
            t.test(f, &req(b, 1, ex, 0, 0)).await.unwrap(),
            LockAnswer::Conflict(_)
        ));
        // Left alone, it lapses; b's waiting request gets the lock.
        assert_eq!(
            t.lock(f, &req(b, 1, ex, 0, 0), true).await.unwrap(),
            LockAnswer::Granted
        );
        assert_eq!(t.keepalive(a).await.unwrap(), LockAnswer::SessionExpired);
    }
}
