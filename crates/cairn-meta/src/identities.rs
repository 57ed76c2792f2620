//! Client identities (`cairn key create NAME --native`): their names and
//! rights, kept in meta's store under `I/<name>`, so every meta on a shared
//! store sees the same ones. Keys are not stored: a client proves the
//! identity with a key derived from the cluster secret and the identity's
//! id, which meta and storage nodes recompute at the handshake.
//!
//! Every request of an identity is checked against the identities as meta
//! last read them, at most [`REFRESH`] ago: a revocation through any meta
//! refuses the identity's clients everywhere within that time, including
//! on connections opened before it.

use crate::store::{prefix_end, MetaStore, Txn};
use cairn_proto::{is_identity_name, IdentityId, IdentityInfo, Rights};
use cairn_types::{now_ms, Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PREFIX: &[u8] = b"I/";
/// How stale meta's view of the identities may be.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Meta reads the identities again for one it does not know at most this
/// often.
const MISS_RELOAD: Duration = Duration::from_millis(200);
/// At most this many identities per cluster (one per machine of a fleet,
/// several per person).
const MAX_IDENTITIES: usize = 100_000;

fn key(name: &str) -> Vec<u8> {
    [PREFIX, name.as_bytes()].concat()
}

type ById = HashMap<IdentityId, Arc<IdentityInfo>>;

pub struct Identities {
    store: Arc<dyn MetaStore>,
    /// Every identity by id, and when it was read.
    view: tokio::sync::Mutex<Option<(Instant, Arc<ById>)>>,
    /// Identities whose key another meta server may not know of yet.
    revoked_here: Mutex<Vec<IdentityId>>,
}

impl Identities {
    pub fn new(store: Arc<dyn MetaStore>) -> Identities {
        Identities {
            store,
            view: tokio::sync::Mutex::new(None),
            revoked_here: Mutex::new(Vec::new()),
        }
    }

    /// Every identity, read from the store now.
    pub async fn list(&self) -> Result<Vec<IdentityInfo>> {
        let rows = self
            .store
            .scan(PREFIX, &prefix_end(PREFIX), MAX_IDENTITIES)
            .await?;
        rows.iter()
            .map(|kv| {
                postcard::from_bytes::<IdentityInfo>(&kv.value).map_err(|e| {
                    Error::corrupt(format!(
                        "undecodable identity record {}: {e}",
                        String::from_utf8_lossy(&kv.key)
                    ))
                })
            })
            .collect()
    }

    /// The identity `id` as meta knows it now, or `PermissionDenied` if
    /// there is none (revoked, or never made on this cluster).
    pub async fn resolve(&self, id: IdentityId) -> Result<Arc<IdentityInfo>> {
        if self.revoked_here.lock().unwrap().contains(&id) {
            return Err(revoked(id));
        }
        let mut view = self.view.lock().await;
        if let Some((at, v)) = &*view {
            if at.elapsed() < REFRESH {
                if let Some(i) = v.get(&id) {
                    return Ok(i.clone());
                }
                // Made since the view was read (perhaps through another
                // meta): read again, at most every MISS_RELOAD.
                if let Some(wait) = MISS_RELOAD.checked_sub(at.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let fresh: Arc<ById> = Arc::new(
            self.list()
                .await?
                .into_iter()
                .map(|i| (i.id, Arc::new(i)))
                .collect(),
        );
        *view = Some((Instant::now(), fresh.clone()));
        self.revoked_here.lock().unwrap().clear();
        fresh.get(&id).cloned().ok_or_else(|| revoked(id))
    }

    /// Whether a new identity `name` with `rights` can be made: a valid
    /// name no identity has (checked again, atomically, by
    /// [`Identities::create`]) and at most 1000 prefixes.
    pub async fn check_new(&self, name: &str, rights: &Rights) -> Result<()> {
        if rights.prefixes.len() > 1000 {
            return Err(Error::invalid("an identity has at most 1000 prefixes"));
        }
        if !is_identity_name(name) {
            return Err(Error::invalid(format!(
                "{name:?} cannot name an identity: use 1 to 64 letters, digits, '.', '_' or '-'"
            )));
        }
        match self.store.get(&key(name)).await? {
            Some(_) => Err(taken(name)),
            None => Ok(()),
        }
    }

    /// Record a new identity; `AlreadyExists` if the name is taken.
    pub async fn create(&self, name: &str, rights: Rights) -> Result<IdentityInfo> {
        self.check_new(name, &rights).await?;
        let info = IdentityInfo {
            name: name.to_string(),
            id: IdentityId::generate(),
            rights,
            created_ms: now_ms(),
        };
        let value = postcard::to_allocvec(&info).expect("serialisable");
        let txn = Txn::new().when(key(name), 0).put(key(name), value);
        match self.store.commit(txn).await {
            Ok(_) => Ok(info),
            Err(e) if e.kind == ErrorKind::Conflict => Err(taken(name)),
            Err(e) => Err(e),
        }
    }

    /// Remove the identity `name`; its clients are refused at once on
    /// this meta, within [`REFRESH`] on the others.
    pub async fn revoke(&self, name: &str) -> Result<IdentityInfo> {
        let Some((bytes, rev)) = self.store.get(&key(name)).await? else {
            return Err(Error::not_found(format!("no identity is named {name}")));
        };
        let info: IdentityInfo = postcard::from_bytes(&bytes)
            .map_err(|e| Error::corrupt(format!("undecodable identity record {name}: {e}")))?;
        self.store
            .commit(Txn::new().when(key(name), rev).delete(key(name)))
            .await?;
        self.revoked_here.lock().unwrap().push(info.id);
        Ok(info)
    }
}

fn taken(name: &str) -> Error {
    Error::exists(format!(
        "an identity named {name} exists; revoke it first (`cairn key revoke {name}`)"
    ))
}

fn revoked(id: IdentityId) -> Error {
    Error::denied(format!(
        "authentication failed: identity {id} is not known to this cluster (revoked?)"
    ))
}
