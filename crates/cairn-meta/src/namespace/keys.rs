//! Keys and records of the namespace (the layout table is in the parent
//! module's docs): key builders, the directory-times record, encoding and
//! decoding of every record with its older layouts, request marks.

use super::*;

pub(super) const ROOT_KEY: &[u8] = b"r";
pub(super) const ENTRY: u8 = b'd';
pub(super) const INODE: u8 = b'n';
pub(super) const TRASH: u8 = b't';
pub(super) const GARBAGE: u8 = b'g';
pub(super) const DIR_TIMES: u8 = b'm';
/// Parent id of shared (hard-linked) file records; no directory has it.
pub(super) const LINKED: InodeId = InodeId(0);
// `A` (allocation records, crate::alloc), `N/` (nodes) are used elsewhere.

/// Value of an `n` key.
#[derive(Serialize, Deserialize)]
pub(super) struct InodeLink {
    pub(super) parent: InodeId,
    pub(super) name: String,
}

pub(super) fn entry_key(parent: InodeId, name: &str) -> Vec<u8> {
    let mut k = children_start(parent);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn children_start(parent: InodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(ENTRY);
    k.extend_from_slice(&parent.0.to_be_bytes());
    k
}

pub(super) fn children_end(parent: InodeId) -> Vec<u8> {
    prefix_end(&children_start(parent))
}

pub(super) fn id_key(prefix: u8, id: InodeId) -> Vec<u8> {
    let mut k = vec![prefix];
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// Where the record of hard-linked file `id` lives.
pub(super) fn shared_key(id: InodeId) -> Vec<u8> {
    entry_key(LINKED, &format!("{:016x}", id.0))
}

/// Where kept version `version` of file `id` lives (the `versions=` cue):
/// next to the file's shared record, under the unused directory id 0, so
/// repair, accounting and the orphan sweep, which scan every entry, see
/// its chunks too. Versions of one file are one range, oldest first.
pub(super) fn version_key(id: InodeId, version: Version) -> Vec<u8> {
    let mut k = versions_start(id);
    k.extend_from_slice(format!("{:016x}", version.0).as_bytes());
    k
}

/// The first key of file `id`'s kept versions; [`prefix_end`] of it ends them.
pub(super) fn versions_start(id: InodeId) -> Vec<u8> {
    entry_key(LINKED, &format!("{:016x}.", id.0))
}

/// Where the times of the directory whose record is at `entry` (its entry
/// key, or [`ROOT_KEY`]) live: the entry key with another first byte, so a
/// directory's subdirectories' times are one range too.
pub(super) fn times_key(entry: &[u8]) -> Vec<u8> {
    let mut k = entry.to_vec();
    k[0] = DIR_TIMES;
    k
}

/// A directory's mtime and ctime as its last change of entries left them
/// (value of an `m` key). `id` names the directory they belong to.
///
/// Why a key of their own, not the directory's record: every create,
/// unlink and rename in a directory changes its times, and rewriting the
/// record would make each such transaction depend on it, so that creates
/// by many writers in one directory (a dataset landing, `cp -r`) would
/// conflict and retry. The times key is written without being read
/// (last writer wins, as times should), and only a change of the link
/// count (a subdirectory made or removed) rewrites the record.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(super) struct DirTimes {
    pub(super) id: InodeId,
    pub(super) mtime_ns: u64,
    pub(super) ctime_ns: u64,
}

impl DirTimes {
    /// Lay these times over `dir`, if they are its.
    pub(super) fn apply(self, dir: &mut Inode) {
        if self.id == dir.id {
            dir.mtime_ns = self.mtime_ns;
            dir.ctime_ns = self.ctime_ns;
        }
    }
}

impl Record for DirTimes {
    fn decode(bytes: &[u8]) -> Result<Self> {
        postcard_decode(bytes)
    }
}

/// A record of the layout before kept versions.
pub(super) struct BeforeVersions(pub(super) Inode);

impl<'de> Deserialize<'de> for BeforeVersions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Inode::deserialize_before_versions(d).map(BeforeVersions)
    }
}

/// A record of the layout before nanosecond times.
pub(super) struct BeforeTimes(pub(super) Inode);

impl<'de> Deserialize<'de> for BeforeTimes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Inode::deserialize_before_times(d).map(BeforeTimes)
    }
}

pub(super) fn garbage_key(due_ms: u64, chunk: ChunkId) -> Vec<u8> {
    let mut k = vec![GARBAGE];
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(&chunk.0.to_be_bytes());
    k
}

pub(super) fn entry_name(key: &[u8]) -> Result<String> {
    String::from_utf8(key[9..].to_vec())
        .map_err(|_| Error::corrupt("directory entry name is not UTF-8"))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("namespace records always serialize")
}

pub(super) fn decode<T: Record>(bytes: &[u8]) -> Result<T> {
    T::decode(bytes)
}

pub(super) fn postcard_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::corrupt(format!("undecodable metadata record: {e}")))
}

/// A value the namespace stores, decoded from any layout it had.
pub(super) trait Record: Sized {
    fn decode(bytes: &[u8]) -> Result<Self>;
}

impl Record for InodeLink {
    fn decode(bytes: &[u8]) -> Result<Self> {
        postcard_decode(bytes)
    }
}

impl Record for GarbageChunk {
    fn decode(bytes: &[u8]) -> Result<Self> {
        postcard_decode(bytes)
    }
}

impl Record for Inode {
    /// The current layout, else the one before kept versions, the one
    /// before nanosecond times, v6, v5,
    /// v4, v3, v2, v1. An older record ends
    /// where a newer layout's fields begin, so it never decodes as a newer
    /// one; and the current layout must take every byte of the record.
    fn decode(bytes: &[u8]) -> Result<Self> {
        let current = postcard::take_from_bytes::<Inode>(bytes).and_then(|(i, rest)| {
            if rest.is_empty() {
                Ok(i)
            } else {
                Err(postcard::Error::DeserializeBadEncoding)
            }
        });
        current
            .map_err(|e| Error::corrupt(format!("undecodable metadata record: {e}")))
            .or_else(|e| {
                if let Ok((BeforeVersions(old), [])) = postcard::take_from_bytes(bytes) {
                    return Ok(old);
                }
                if let Ok((BeforeTimes(old), [])) = postcard::take_from_bytes(bytes) {
                    return Ok(old);
                }
                // Every byte, as for the current layout: a record with more
                // is no v6 one (it would lose what follows).
                if let Ok((old, [])) = postcard::take_from_bytes::<v6::Inode>(bytes) {
                    return Ok(old.into());
                }
                if let Ok(old) = postcard::from_bytes::<v5::Inode>(bytes) {
                    return Ok(old.into());
                }
                if let Ok(old) = postcard::from_bytes::<v4::Inode>(bytes) {
                    return Ok(old.into());
                }
                if let Ok(old) = postcard::from_bytes::<v3::Inode>(bytes) {
                    return Ok(old.into());
                }
                if let Ok(old) = postcard::from_bytes::<v2::Inode>(bytes) {
                    return Ok(old.into());
                }
                match postcard::from_bytes::<v1::Inode>(bytes) {
                    Ok(old) => Ok(v2::Inode::from(old).into()),
                    Err(_) => Err(e),
                }
            })
    }
}

/// First byte of a request mark: `q` + client (8 bytes) + request id (16),
/// value the time it was applied. Written in the transaction that applies
/// a `MetaRequest::Once` change, so the change and the proof that it
/// happened are one; swept after [`REQUEST_MARK_TTL_MS`].
pub(super) const REQUEST_MARK: u8 = b'q';
pub const REQUEST_MARK_TTL_MS: u64 = 15 * 60 * 1000;

tokio::task_local! {
    /// The mark the next committed transaction of this request writes.
    pub(super) static PENDING_MARK: std::cell::RefCell<Option<Vec<u8>>>;
}

pub fn request_mark_key(client: u64, id: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(REQUEST_MARK);
    k.extend_from_slice(&client.to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Run `f` (one request's handling) so that its first committed
/// namespace transaction also writes `mark`, which must not exist yet.
pub async fn with_request_mark<F: Future>(mark: Vec<u8>, f: F) -> F::Output {
    PENDING_MARK
        .scope(std::cell::RefCell::new(Some(mark)), f)
        .await
}

/// The mark of the request being handled (see [`with_request_mark`]), if
/// it has one and no transaction of this attempt has written it.
pub fn pending_request_mark() -> Option<Vec<u8>> {
    PENDING_MARK.try_with(|m| m.borrow().clone()).ok().flatten()
}

/// Random, never 0 (unused) or 1 (the root); uniqueness is enforced by the `n` key.
pub(super) fn new_inode_id() -> InodeId {
    InodeId(fastrand::u64(2..u64::MAX))
}
