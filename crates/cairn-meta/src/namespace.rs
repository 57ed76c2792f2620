//! The namespace: paths → inodes → versions → extents, written once against
//! [`MetaStore`].
//!
//! Every operation reads what it needs, builds one [`Txn`] whose conditions pin
//! every key it read (by revision, 0 where it relied on absence), commits, and
//! retries from scratch on a conflict. Because each operation pins the whole
//! chain of directory entries it resolved, operations on overlapping paths
//! serialize, while creates of different names in one directory touch disjoint
//! keys and never conflict: a directory's mtime and ctime, which every create
//! in it moves, live in a key of their own that such transactions write
//! without reading (`m`, below), so they never pin it. Its link count moves
//! only with subdirectories (mkdir, rmdir, rename of a directory), which
//! rewrite the directory's record.
//!
//! Key layout (ids big endian, so scans run in id and name order):
//!
//! | key | value | |
//! | --- | --- | --- |
//! | `r` | [`Inode`] | the root directory |
//! | `d` parent(8) name | [`Inode`] | a directory entry with the child's full record inline, so a listing is one range scan and rename moves one value |
//! | `d` 0(8) id(16 hex) | [`Inode`] | the record of a file with hard links: each of its names is an entry holding a stub (`nlink` 0) that points here, and the record's `nlink` counts them |
//! | `n` id(8) | parent id and name | reserves the inode id (random ids, no hot counter key) and maps an inode back to its entry (for a hard-linked file, the name it was created with) |
//! | `t` id(8) | [`Inode`] | a detached directory whose contents the trash purger still has to delete |
//! | `g` due_ms(8) chunk(16) | [`GarbageChunk`] | a chunk to delete from its nodes once `due_ms` has passed |
//! | `m` parent(8) name, or `m` for the root | [`DirTimes`] | mtime and ctime of the directory at `d` parent(8) name, as its last entry change left them; they override its record's |
//! | `d` 0(8) id(16 hex) `.` version(16 hex) | [`Inode`] | an older version of file `id` kept by the `versions=` cue, as it was when replaced |
//!
//! Values are postcard-encoded [`Inode`]s. Postcard records carry no field
//! names, so every layout an older version wrote stays readable through
//! [`Record`]: `v1` is the inode before owners and symlinks (`uid`, `gid`,
//! `target`), read as an inode without them; `v2` the inode before hard
//! links (`nlink`), read as a file with one name; `v3` the inode before the
//! `hot=GROUP` cue, read with no such cue; `v4` the inode before inline
//! files (`inline`, the `inline=` cue), read as a chunked file; and the
//! record before nanosecond times ([`Inode::deserialize_before_times`])
//! reads with times at the millisecond and atime its mtime; the record
//! before kept versions ([`Inode::deserialize_before_versions`]) reads
//! without a `versions` cue.
//!
//! Hard links keep the common case cheap: a file with one name has its
//! record inline in its entry (lookup and listing cost nothing extra); the
//! first `link` moves the record to a key of its own under the unused
//! directory id 0, so it lies in the entry range that repair and
//! accounting already scan, and every name holds a stub.

use crate::store::{prefix_end, Condition, MetaStore, Txn};
use cairn_types::{
    now_ms, now_ns, AttrChanges, CairnPath, ChunkId, Cues, Error, ErrorKind, InodeId, NewNode,
    NodeId, Result, Version, XattrOp, XattrWhen, Xattrs, MAX_NAME_LEN, MAX_TARGET_LEN,
    MAX_XATTRS_LEN, MAX_XATTR_VALUE_LEN,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod keys;
mod layouts;
mod suite;
#[cfg(test)]
mod tests;
mod tx;

use keys::*;
pub use keys::{pending_request_mark, request_mark_key, with_request_mark, REQUEST_MARK_TTL_MS};
use layouts::{v1, v2, v3, v4, v5, v6};
pub use suite::{posix_suite, versions_suite};
use tx::{retry, Tx, MAX_ATTEMPTS};

/// Entries deleted per trash transaction.
const PURGE_BATCH: usize = 256;
/// Operations (and conditions) after which a trash transaction stops taking entries.
const PURGE_TXN_OPS: usize = 100;
/// Page size when walking every entry.
const WALK_PAGE: usize = 1024;

pub use cairn_types::{DirEntry, Extent, GarbageChunk, Inode, InodeKind};

/// What [`Namespace::cues`] finds for a path.
#[derive(Clone, Debug)]
pub struct ResolvedCues {
    /// The file or directory there, if any.
    pub entry: Option<Inode>,
    /// Merged from the root down to the parent directory.
    pub inherited: Cues,
    /// `inherited` overridden by the entry's own cues.
    pub effective: Cues,
    /// The directory whose `keep_together` subtree this path is in.
    pub together: Option<InodeId>,
}

/// The file system namespace over a [`MetaStore`]. Cheap to clone.
#[derive(Clone)]
pub struct Namespace {
    store: Arc<dyn MetaStore>,
    gc_delay: Duration,
}

impl Namespace {
    /// Open the namespace in `store`, creating the root directory if missing.
    /// Chunks of replaced or removed files become due for deletion `gc_delay`
    /// later, so readers of the old version can finish.
    pub async fn open(store: Arc<dyn MetaStore>, gc_delay: Duration) -> Result<Namespace> {
        let ns = Namespace { store, gc_delay };
        retry("create the root directory", || ns.ensure_root_once()).await?;
        Ok(ns)
    }

    async fn ensure_root_once(&self) -> Result<Option<()>> {
        if self.store.get(ROOT_KEY).await?.is_some() {
            return Ok(Some(()));
        }
        let root = new_dir(InodeId::ROOT, now_ms());
        let mut tx = Tx::new(self.store.as_ref());
        tx.create(ROOT_KEY.to_vec(), &root);
        tx.put(
            id_key(INODE, InodeId::ROOT),
            &InodeLink {
                parent: InodeId::ROOT,
                name: String::new(),
            },
        );
        Ok(tx.commit().await?.map(|_| ()))
    }

    fn due_ms(&self) -> u64 {
        now_ms().saturating_add(self.gc_delay.as_millis() as u64)
    }

    /// Queue the chunks of `old` that `keep` does not reference for deletion.
    fn add_garbage(&self, tx: &mut Tx<'_>, old: &[Extent], keep: &[Extent]) {
        let due = self.due_ms();
        for g in dropped(old, keep) {
            tx.put(garbage_key(due, g.chunk), &g);
        }
    }

    /// One name of file or symlink `node` (found through `tx`) goes away;
    /// with its last name the file goes, with the older versions it kept,
    /// and their chunks not in `keep` become garbage.
    async fn drop_name(&self, tx: &mut Tx<'_>, node: &Inode, keep: &[Extent]) -> Result<()> {
        let shared = tx.shared.contains_key(&node.id);
        if shared && node.nlink > 1 {
            let mut rest = node.clone();
            rest.nlink -= 1;
            rest.ctime_ns = now_ns();
            tx.put(shared_key(node.id), &rest);
            tx.shared.insert(node.id, Some(rest));
            return Ok(());
        }
        if shared {
            tx.delete(shared_key(node.id));
        }
        tx.delete(id_key(INODE, node.id));
        let mut chunks = node.extents.clone();
        for (key, old) in self.kept_versions(node.id).await? {
            tx.delete(key);
            chunks.extend(old.extents);
        }
        self.add_garbage(tx, &chunks, keep);
        Ok(())
    }

    /// The older versions of file `id` that the `versions=` cue kept,
    /// oldest first, with their keys. Read without pinning: every change
    /// to them also changes the file's record, which the caller pinned.
    async fn kept_versions(&self, id: InodeId) -> Result<Vec<(Vec<u8>, Inode)>> {
        let mut start = versions_start(id);
        let end = prefix_end(&start);
        let mut out = Vec::new();
        loop {
            let page = self.store.scan(&start, &end, WALK_PAGE).await?;
            let full = page.len() == WALK_PAGE;
            for kv in page {
                start = kv.key.clone();
                start.push(0);
                out.push((kv.key, decode(&kv.value)?));
            }
            if !full {
                return Ok(out);
            }
        }
    }

    /// Version `old` of a file is replaced by one that holds `current`:
    /// keep it as an older version if `keep` (the effective `versions=`
    /// cue) asks for any, push out the oldest beyond `keep`, and queue the
    /// chunks no remaining record holds for deletion.
    async fn retire(
        &self,
        tx: &mut Tx<'_>,
        old: &Inode,
        current: &[Extent],
        keep: u32,
    ) -> Result<()> {
        let mut kept = self.kept_versions(old.id).await?;
        if keep == 0 && kept.is_empty() {
            self.add_garbage(tx, &old.extents, current);
            return Ok(());
        }
        let mut gone = Vec::new();
        if keep > 0 {
            let key = version_key(old.id, old.version);
            tx.put(key.clone(), old);
            kept.push((key, old.clone()));
        } else {
            gone.extend(old.extents.iter().cloned());
        }
        let excess = kept.len().saturating_sub(keep as usize);
        for (key, record) in kept.drain(..excess) {
            tx.delete(key);
            gone.extend(record.extents);
        }
        let mut held = current.to_vec();
        held.extend(kept.into_iter().flat_map(|(_, r)| r.extents));
        self.add_garbage(tx, &gone, &held);
        Ok(())
    }

    /// Every version of the file at `path` that can be read: the current
    /// one first, then the older ones the `versions=` cue kept, newest
    /// first.
    pub async fn versions(&self, path: &CairnPath) -> Result<Vec<Inode>> {
        let (_, current) = Tx::new(self.store.as_ref()).existing(path).await?;
        if current.kind != InodeKind::File {
            return Err(Error::invalid(format!(
                "{path} is a {}; only files have versions",
                kind_name(current.kind)
            )));
        }
        let kept = self.kept_versions(current.id).await?;
        let mut out = vec![current];
        out.extend(kept.into_iter().rev().map(|(_, r)| r));
        Ok(out)
    }

    /// Version `version` of the file at `path`: the current one, or an
    /// older one the `versions=` cue kept (else `NotFound`, naming the
    /// versions there are).
    pub async fn version(&self, path: &CairnPath, version: Version) -> Result<Inode> {
        let (_, current) = Tx::new(self.store.as_ref()).existing(path).await?;
        self.version_of(path, current, version).await
    }

    /// [`Self::version`] of the file whose record, as `path` names it now,
    /// is `current`.
    pub async fn version_of(
        &self,
        path: &CairnPath,
        current: Inode,
        version: Version,
    ) -> Result<Inode> {
        if current.version == version {
            return Ok(current);
        }
        if current.kind == InodeKind::File && version < current.version {
            let key = version_key(current.id, version);
            if let Some((value, _)) = self.store.get(&key).await? {
                return decode(&value);
            }
        }
        let kept = match current.kind {
            InodeKind::File => self.kept_versions(current.id).await?,
            _ => Vec::new(),
        };
        let mut have: Vec<String> = kept.iter().map(|(_, r)| r.version.to_string()).collect();
        have.push(current.version.to_string());
        Err(Error::not_found(format!(
            "{path} has no version {version} (versions kept: {}; the versions= cue keeps older ones)",
            have.join(", ")
        )))
    }

    /// Give the file or symlink at `src` the further name `dst` (a hard
    /// link). A directory `src` is `PermissionDenied`, an existing `dst`
    /// `AlreadyExists`. Returns the file's record, `nlink` counting `dst`.
    pub async fn link(&self, src: &CairnPath, dst: &CairnPath) -> Result<Inode> {
        if src.is_root() || dst.is_root() {
            return Err(Error::denied("the root directory cannot be linked"));
        }
        retry("link", || self.link_once(src, dst)).await
    }

    async fn link_once(&self, src: &CairnPath, dst: &CairnPath) -> Result<Option<Inode>> {
        let mut tx = Tx::new(self.store.as_ref());
        let (_, src_key, file) = tx.resolve_entry(src).await?;
        let mut file = file.ok_or_else(|| Error::not_found(format!("{src} does not exist")))?;
        if file.kind == InodeKind::Directory {
            return Err(Error::denied(format!(
                "{src} is a directory; directories cannot have hard links"
            )));
        }
        let (dst_parent, dst_key, existing) = tx.resolve_entry(dst).await?;
        if let Some(e) = existing {
            return Err(Error::exists(format!(
                "{dst} already exists as a {}",
                kind_name(e.kind)
            )));
        }
        tx.entries_changed(dst_parent.id, 0);
        if !tx.shared.contains_key(&file.id) {
            // The first link: the record moves out of the entry.
            tx.pin(shared_key(file.id), 0);
            tx.put(src_key, &stub(&file));
        }
        file.nlink = file.nlink.max(1) + 1;
        file.ctime_ns = now_ns();
        tx.put(shared_key(file.id), &file);
        tx.create(dst_key, &stub(&file));
        Ok(tx.commit().await?.map(|_| file))
    }

    pub async fn lookup(&self, path: &CairnPath) -> Result<Inode> {
        let mut tx = Tx::new(self.store.as_ref());
        let (key, inode) = tx.existing(path).await?;
        self.with_times(&key, inode).await
    }

    /// `inode` (found at entry `key`) with its times, for a directory the
    /// ones its last change of entries left.
    async fn with_times(&self, key: &[u8], mut inode: Inode) -> Result<Inode> {
        if inode.kind == InodeKind::Directory {
            if let Some((v, _)) = self.store.get(&times_key(key)).await? {
                decode::<DirTimes>(&v)?.apply(&mut inode);
            }
        }
        Ok(inode)
    }

    /// The entry at `path` (None if missing; its parent must exist) with
    /// the cues it inherits and its effective ones.
    pub async fn cues(&self, path: &CairnPath) -> Result<ResolvedCues> {
        let mut tx = Tx::new(self.store.as_ref());
        if path.is_root() {
            let root = tx.root().await?;
            let effective = root.cues.clone();
            let together = effective.keep_together.filter(|t| *t).map(|_| root.id);
            return Ok(ResolvedCues {
                entry: Some(root),
                inherited: Cues::default(),
                effective,
                together,
            });
        }
        let (_, _, entry) = tx.resolve_entry(path).await?;
        let inherited = std::mem::take(&mut tx.inherited);
        let effective = match &entry {
            Some(i) => inherited.merge(&i.cues),
            None => inherited.clone(),
        };
        let mut together = tx.together;
        if let Some(i) = entry.as_ref().filter(|i| i.kind == InodeKind::Directory) {
            match i.cues.keep_together {
                Some(true) => together = Some(i.id),
                Some(false) => together = None,
                None => {}
            }
        }
        Ok(ResolvedCues {
            entry,
            inherited,
            effective,
            together,
        })
    }

    /// Set cues on the file or directory at `path`: merged over its own
    /// (`replace: false`) or instead of them (`replace: true`; with empty
    /// `cues`, a clear). Changing a directory's cues affects files created
    /// below it from now on; files keep the persistent cues they were
    /// created with.
    pub async fn set_cues(&self, path: &CairnPath, cues: &Cues, replace: bool) -> Result<Inode> {
        retry("set cues", || self.set_cues_once(path, cues, replace)).await
    }

    async fn set_cues_once(
        &self,
        path: &CairnPath,
        cues: &Cues,
        replace: bool,
    ) -> Result<Option<Inode>> {
        let mut tx = Tx::new(self.store.as_ref());
        let (key, mut inode) = tx.existing(path).await?;
        tx.own_dir_times(&key, &mut inode).await?;
        inode.cues = if replace {
            cues.clone()
        } else {
            inode.cues.merge(cues)
        };
        inode.ctime_ns = now_ns();
        tx.put(key, &inode);
        Ok(tx.commit().await?.map(|_| inode))
    }

    /// Create a directory; with `parents`, also missing ancestors, and an
    /// existing directory is fine (`mkdir -p`). Otherwise an existing entry is
    /// `AlreadyExists` and a missing parent `NotFound`.
    pub async fn mkdir(&self, path: &CairnPath, parents: bool) -> Result<Inode> {
        retry("mkdir", || self.mkdir_once(path, parents)).await
    }

    async fn mkdir_once(&self, path: &CairnPath, parents: bool) -> Result<Option<Inode>> {
        let mut tx = Tx::new(self.store.as_ref());
        let mut cur = tx.root().await?;
        let mut cur_key = ROOT_KEY.to_vec();
        if path.is_root() {
            return if parents {
                Ok(Some(cur))
            } else {
                Err(Error::exists("/ already exists"))
            };
        }
        let names: Vec<&str> = path.components().collect();
        let mut walked = CairnPath::root();
        let mut created = false;
        let now = now_ns();
        for (i, name) in names.iter().enumerate() {
            walked = walked.join(name)?;
            let last = i + 1 == names.len();
            let key = entry_key(cur.id, name);
            // Below a directory this transaction creates, nothing exists yet.
            let existing = if created {
                None
            } else {
                tx.get::<Inode>(key.clone()).await?
            };
            match existing {
                Some(dir) if dir.kind == InodeKind::Directory => {
                    if last {
                        return if parents {
                            Ok(Some(dir))
                        } else {
                            Err(Error::exists(format!("{walked} already exists")))
                        };
                    }
                    cur = dir;
                    cur_key = key;
                }
                Some(_) if last => {
                    return Err(Error::exists(format!("{walked} already exists as a file")))
                }
                Some(_) => {
                    return Err(Error::not_dir(format!(
                        "{walked} is a file, not a directory"
                    )))
                }
                None if !last && !parents => {
                    return Err(Error::not_found(format!(
                        "{walked} does not exist; create parents too (mkdir -p) or create it first"
                    )))
                }
                None => {
                    if !created {
                        // The existing directory the new ones go in.
                        tx.parents.insert(cur.id, (cur_key.clone(), cur.clone()));
                        tx.entries_changed(cur.id, 1);
                    }
                    let mut dir = new_dir(new_inode_id(), now);
                    if !last {
                        dir.nlink += 1; // the next one, made below it
                    }
                    tx.create(
                        id_key(INODE, dir.id),
                        &InodeLink {
                            parent: cur.id,
                            name: name.to_string(),
                        },
                    );
                    tx.put(key, &dir);
                    created = true;
                    cur = dir;
                }
            }
        }
        Ok(tx.commit().await?.map(|_| cur))
    }

    /// Create the file or replace its content with a new version, atomically.
    /// `expected`: None = any (create or overwrite); `Some(Version(0))` = must
    /// not exist; `Some(v)` = current version must be v. A failed expectation is
    /// an error of kind `Conflict`. The parent must exist and be a directory
    /// (`NotFound` / `NotADirectory`); replacing a directory is `IsADirectory`.
    /// Chunks of the replaced version that the new one does not reuse become
    /// garbage, due after the gc delay.
    pub async fn commit_file(
        &self,
        path: &CairnPath,
        extents: Vec<Extent>,
        expected: Option<Version>,
        mode: u32,
        chunk_size: u64,
    ) -> Result<Inode> {
        self.commit_file_with(
            path,
            extents,
            expected,
            Some(mode),
            chunk_size,
            None,
            &Cues::default(),
        )
        .await
    }

    /// [`Self::commit_file`] that also sets the file's extended attributes:
    /// `xattrs` None keeps those of the version it replaces (none for a new
    /// file), `Some` replaces them all, atomically with the content; `mode`
    /// None keeps the replaced version's (0o644 for a new file). The persistent
    /// part of `cues` (from the writer's path) is fixed on the file; see
    /// [`Self::next_version`].
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_file_with(
        &self,
        path: &CairnPath,
        extents: Vec<Extent>,
        expected: Option<Version>,
        mode: Option<u32>,
        chunk_size: u64,
        xattrs: Option<Xattrs>,
        cues: &Cues,
    ) -> Result<Inode> {
        let extents = &extents;
        let xattrs = &xattrs;
        retry("commit file", || {
            self.commit_file_once(path, extents, expected, mode, chunk_size, xattrs, cues)
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_file_once(
        &self,
        path: &CairnPath,
        extents: &[Extent],
        expected: Option<Version>,
        mode: Option<u32>,
        chunk_size: u64,
        xattrs: &Option<Xattrs>,
        cues: &Cues,
    ) -> Result<Option<Inode>> {
        if path.is_root() {
            return Err(Error::is_dir(
                "/ is the root directory; it cannot be written as a file",
            ));
        }
        let mut tx = Tx::new(self.store.as_ref());
        let (parent, key, existing) = tx.resolve_entry(path).await?;
        let (id, version, kept) = self
            .next_version(&mut tx, path, &parent, existing, expected, extents, cues)
            .await?;
        let mode = mode.or(kept.mode).unwrap_or(0o644);
        let inode = kept.into_file(id, version, mode, extents.to_vec(), chunk_size, xattrs);
        tx.put(tx.record_key(&key, &inode), &inode);
        Ok(tx.commit().await?.map(|_| inode))
    }

    /// Commit `data` as the next version of `path`, kept in the file's
    /// record instead of chunks (a small file), as [`Self::commit_file_with`]
    /// does for chunks. `Err(limit)`: the path's effective `inline=` limit
    /// (its directories' cues, the file's own, then `cues`; `default` where
    /// none is set; 0 where placement cues — `site`, `rep_sites`, `place` —
    /// say where the bytes go) is below `data.len()`, and nothing changed.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_inline(
        &self,
        path: &CairnPath,
        data: Vec<u8>,
        expected: Option<Version>,
        mode: Option<u32>,
        xattrs: Option<Xattrs>,
        cues: &Cues,
        default: u32,
    ) -> Result<std::result::Result<Inode, u32>> {
        let (data, xattrs) = (&data, &xattrs);
        retry("commit file", || {
            self.commit_inline_once(path, data, expected, mode, xattrs, cues, default)
        })
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_inline_once(
        &self,
        path: &CairnPath,
        data: &[u8],
        expected: Option<Version>,
        mode: Option<u32>,
        xattrs: &Option<Xattrs>,
        cues: &Cues,
        default: u32,
    ) -> Result<Option<std::result::Result<Inode, u32>>> {
        if path.is_root() {
            return Err(Error::is_dir(
                "/ is the root directory; it cannot be written as a file",
            ));
        }
        let mut tx = Tx::new(self.store.as_ref());
        let (parent, key, existing) = tx.resolve_entry(path).await?;
        let own = existing
            .as_ref()
            .map(|i| i.cues.clone())
            .unwrap_or_default();
        let eff = tx.inherited.merge(&own).merge(cues);
        // Cues that say where the bytes must be (a zone, zones, nodes)
        // keep them on storage nodes: meta's disk is not the place asked for.
        let limit = if eff.pins_placement() {
            0
        } else {
            eff.inline.unwrap_or(default)
        };
        if data.len() > limit as usize {
            return Ok(Some(Err(limit)));
        }
        let (id, version, kept) = self
            .next_version(&mut tx, path, &parent, existing, expected, &[], cues)
            .await?;
        let mode = mode.or(kept.mode).unwrap_or(0o644);
        let mut inode = kept.into_file(id, version, mode, Vec::new(), 0, xattrs);
        inode.size = data.len() as u64;
        inode.inline = (!data.is_empty()).then(|| data.to_vec());
        tx.put(tx.record_key(&key, &inode), &inode);
        Ok(tx.commit().await?.map(|_| Ok(inode)))
    }

    /// Commit `dst` as the concatenation of the files `sources`, in order,
    /// and remove the sources, atomically. The chunks change owner instead of
    /// being copied or collected: none of the sources' chunks becomes
    /// garbage, while the chunks of a replaced `dst` do (unless reused).
    /// `expected`, `mode` and `xattrs` as in [`Self::commit_file_with`]
    /// (`xattrs: None` keeps the replaced version's). A source that is
    /// missing is `NotFound`, a directory `IsADirectory`, one named twice or
    /// equal to `dst` `InvalidInput`.
    pub async fn compose(
        &self,
        dst: &CairnPath,
        sources: &[CairnPath],
        expected: Option<Version>,
        mode: u32,
        xattrs: Option<Xattrs>,
    ) -> Result<Inode> {
        let unique: HashSet<&CairnPath> = sources.iter().collect();
        if unique.len() != sources.len() || unique.contains(dst) || dst.is_root() {
            return Err(Error::invalid(format!(
                "compose {dst}: the sources must be distinct files other than the destination"
            )));
        }
        let xattrs = &xattrs;
        retry("compose", || {
            self.compose_once(dst, sources, expected, mode, xattrs)
        })
        .await
    }

    /// Identity, version and inherited attributes (extended attributes,
    /// owner, cues) of the file version about to be written at `path` over
    /// `existing`, checking `expected`: the replaced version's chunks not in
    /// `extents` become garbage (or an older version kept, as the
    /// `versions=` cue asks), a new file gets a fresh inode id. The
    /// file's cues: a new file fixes the persistent cues it inherits
    /// (`tx.inherited`, from resolving the parent) overridden by `req`'s; a
    /// new version keeps the file's own, overridden by `req`'s. A write-once
    /// file refuses a new version.
    #[allow(clippy::too_many_arguments)]
    async fn next_version(
        &self,
        tx: &mut Tx<'_>,
        path: &CairnPath,
        parent: &Inode,
        existing: Option<Inode>,
        expected: Option<Version>,
        extents: &[Extent],
        req: &Cues,
    ) -> Result<(InodeId, Version, Kept)> {
        match existing {
            Some(old) if old.kind == InodeKind::Directory => Err(Error::is_dir(format!(
                "{path} is a directory; it cannot be written as a file"
            ))),
            Some(old) if old.kind.is_special() => Err(Error::invalid(format!(
                "{path} is a {}; it has no content to write (remove it first)",
                kind_name(old.kind)
            ))),
            Some(old) if old.cues.is_write_once() => Err(Error::denied(format!(
                "{path} is write-once (cue writeonce): it can be read or removed, not modified"
            ))),
            Some(old) => {
                match expected {
                    Some(Version(0)) => {
                        return Err(Error::conflict(format!(
                            "{path} already exists (version {}) but was expected not to exist",
                            old.version
                        )))
                    }
                    Some(v) if v != old.version => {
                        return Err(Error::conflict(format!(
                            "{path} is at version {}, not the expected version {v}; someone else changed it",
                            old.version
                        )))
                    }
                    _ => {}
                }
                let keep = tx.inherited.merge(&old.cues).merge(&req.persistent());
                self.retire(tx, &old, extents, keep.versions.unwrap_or(0))
                    .await?;
                let kept = Kept {
                    xattrs: old.xattrs,
                    uid: old.uid,
                    gid: old.gid,
                    cues: old.cues.merge(&req.persistent()),
                    nlink: old.nlink,
                    mode: Some(old.mode),
                    atime_ns: Some(old.atime_ns),
                };
                Ok((old.id, Version(old.version.0 + 1), kept))
            }
            None => {
                if let Some(v) = expected.filter(|v| v.0 != 0) {
                    return Err(Error::conflict(format!(
                        "{path} does not exist but was expected at version {v}; someone else removed or renamed it"
                    )));
                }
                let id = new_inode_id();
                tx.entries_changed(parent.id, 0);
                let (_, name) = path.split_last().expect("not the root");
                let link = InodeLink {
                    parent: parent.id,
                    name: name.to_string(),
                };
                tx.create(id_key(INODE, id), &link);
                let kept = Kept {
                    xattrs: Xattrs::new(),
                    uid: None,
                    gid: None,
                    cues: tx.inherited.persistent().merge(&req.persistent()),
                    nlink: 1,
                    mode: None,
                    atime_ns: None,
                };
                Ok((id, Version(1), kept))
            }
        }
    }

    async fn compose_once(
        &self,
        dst: &CairnPath,
        sources: &[CairnPath],
        expected: Option<Version>,
        mode: u32,
        xattrs: &Option<Xattrs>,
    ) -> Result<Option<Inode>> {
        let mut tx = Tx::new(self.store.as_ref());
        let mut extents = Vec::new();
        let mut chunk_size = 0;
        // The chunks were placed by the first source's cues: the result
        // carries them (a staged S3 upload, say, placed as its key asked).
        let mut src_cues: Option<Cues> = None;
        // Sources that keep their bytes in their records (small files):
        // the result does too, when every source is such a file.
        let mut inline: Option<Vec<u8>> = None;
        // Older versions the sources kept go with them: their chunks are
        // garbage unless the result holds them.
        let mut source_versions = Vec::new();
        for src in sources {
            let (src_parent, key, entry) = tx.resolve_entry(src).await?;
            tx.entries_changed(src_parent.id, 0);
            let file = entry.ok_or_else(|| Error::not_found(format!("{src} does not exist")))?;
            if file.kind != InodeKind::File {
                return Err(Error::is_dir(format!(
                    "{src} is a {}, not a file",
                    kind_name(file.kind)
                )));
            }
            if tx.shared.contains_key(&file.id) {
                // Its chunks would then belong to two files.
                return Err(Error::invalid(format!(
                    "{src} has other names (hard links); compose takes files with one name"
                )));
            }
            tx.delete(key);
            tx.delete(id_key(INODE, file.id));
            for (k, old) in self.kept_versions(file.id).await? {
                tx.delete(k);
                source_versions.extend(old.extents);
            }
            chunk_size = chunk_size.max(file.chunk_size);
            src_cues.get_or_insert_with(|| file.cues.persistent());
            if file.is_inline() {
                let bytes = file.inline.unwrap_or_default();
                inline
                    .get_or_insert_with(Vec::new)
                    .extend_from_slice(&bytes);
            }
            extents.extend(file.extents);
        }
        if let Some(bytes) = &inline {
            // Meta writes no chunks: bytes in records cannot join chunks.
            if !extents.is_empty() || bytes.len() > cairn_types::MAX_INLINE as usize {
                return Err(Error::invalid(format!(
                    "compose {dst}: some sources keep their bytes in metadata (small files, inline=) and the result would not; write those sources with inline=0"
                )));
            }
        }
        self.add_garbage(&mut tx, &source_versions, &extents);
        let (parent, key, existing) = tx.resolve_entry(dst).await?;
        let (id, version, kept) = self
            .next_version(
                &mut tx,
                dst,
                &parent,
                existing,
                expected,
                &extents,
                &src_cues.unwrap_or_default(),
            )
            .await?;
        let mut inode = kept.into_file(id, version, mode, extents, chunk_size, xattrs);
        if let Some(bytes) = inline.filter(|b| !b.is_empty()) {
            inode.size = bytes.len() as u64;
            inode.inline = Some(bytes);
        }
        tx.put(tx.record_key(&key, &inode), &inode);
        Ok(tx.commit().await?.map(|_| inode))
    }

    /// Change the attributes of `path` (mode, owner, mtime, extended
    /// attributes) in one conditional transaction; the content and its
    /// version stay. With `id`, `path` must still name that inode (else
    /// `NotFound`: it was removed or replaced meanwhile). An extended
    /// attribute precondition that fails is `NotFound` or `AlreadyExists`
    /// (see [`XattrWhen`]), and nothing changes.
    pub async fn set_attr(
        &self,
        path: &CairnPath,
        id: Option<InodeId>,
        changes: &AttrChanges,
    ) -> Result<Inode> {
        retry("set attributes", || self.set_attr_once(path, id, changes)).await
    }

    async fn set_attr_once(
        &self,
        path: &CairnPath,
        id: Option<InodeId>,
        changes: &AttrChanges,
    ) -> Result<Option<Inode>> {
        let mut tx = Tx::new(self.store.as_ref());
        let (key, mut inode) = tx.existing(path).await?;
        if id.is_some_and(|id| id != inode.id) {
            return Err(Error::not_found(format!(
                "{path} was removed or replaced by another file meanwhile"
            )));
        }
        let seen = changes.atime_ns.is_none_or(|t| t <= inode.atime_ns);
        if changes.accessed && seen {
            // A read older than the recorded one: nothing to write.
            return self.with_times(&key, inode).await.map(Some);
        }
        tx.own_dir_times(&key, &mut inode).await?;
        apply_changes(path, &mut inode, changes)?;
        tx.put(key, &inode);
        // An access time may be lost in a crash (as ext4's, until written back).
        tx.txn.lazy = changes.accessed;
        Ok(tx.commit().await?.map(|_| inode))
    }

    /// Create an empty file, a directory or a symbolic link at `path` with
    /// this mode and owner, in one transaction. An existing entry of any
    /// kind is `AlreadyExists`; a missing parent `NotFound`.
    pub async fn make_node(
        &self,
        path: &CairnPath,
        node: &NewNode,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Inode> {
        if path.is_root() {
            return Err(Error::exists("/ already exists"));
        }
        if let NewNode::Symlink { target } = node {
            if target.is_empty() || target.len() > MAX_TARGET_LEN || target.contains('\0') {
                return Err(Error::invalid(format!(
                    "symbolic link target of {} bytes; it must be 1 to {MAX_TARGET_LEN} bytes without NUL",
                    target.len()
                )));
            }
        }
        retry("create", || self.make_node_once(path, node, mode, uid, gid)).await
    }

    async fn make_node_once(
        &self,
        path: &CairnPath,
        node: &NewNode,
        mode: u32,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<Option<Inode>> {
        let mut tx = Tx::new(self.store.as_ref());
        let (parent, key, existing) = tx.resolve_entry(path).await?;
        if let Some(e) = existing {
            return Err(Error::exists(format!(
                "{path} already exists as a {}",
                kind_name(e.kind)
            )));
        }
        let now = now_ns();
        let mut inode = new_dir(new_inode_id(), now);
        if !matches!(node, NewNode::Directory) {
            inode.nlink = 1;
        }
        tx.entries_changed(parent.id, matches!(node, NewNode::Directory).into());
        inode.mode = Inode::stored_mode(mode);
        inode.uid = uid;
        inode.gid = gid;
        if parent.mode & SET_GID != 0 {
            // A set-group-ID directory: what is made in it takes its group,
            // and a directory passes the bit on (as ext4 does).
            inode.gid = parent.gid.or(gid);
            if matches!(node, NewNode::Directory) {
                inode.mode |= SET_GID;
            }
        }
        match node {
            NewNode::Directory => {}
            NewNode::File => inode.kind = InodeKind::File,
            NewNode::Symlink { target } => {
                inode.kind = InodeKind::Symlink;
                inode.size = target.len() as u64;
                inode.mode = 0o777;
                inode.target = Some(target.clone());
            }
            NewNode::Special { kind, rdev } => {
                if !kind.is_special() {
                    return Err(Error::invalid(format!(
                        "{path}: a special file is a FIFO, socket or device node, not a {}",
                        kind_name(*kind)
                    )));
                }
                inode.kind = *kind;
                let device = matches!(kind, InodeKind::CharDevice | InodeKind::BlockDevice);
                inode.rdev = if device { *rdev } else { 0 };
            }
        }
        let (_, name) = path.split_last().expect("not the root");
        tx.create(
            id_key(INODE, inode.id),
            &InodeLink {
                parent: parent.id,
                name: name.to_string(),
            },
        );
        tx.put(key, &inode);
        // An empty file: its writer's close commits it durably (the
        // mount's does), else the store within LAZY_DURABLE_WITHIN.
        tx.txn.lazy = inode.kind == InodeKind::File;
        Ok(tx.commit().await?.map(|_| inode))
    }

    /// A page of directory `path` in name order, after `start_after` if given.
    pub async fn list(
        &self,
        path: &CairnPath,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DirEntry>> {
        let dir = self.lookup(path).await?;
        if dir.kind != InodeKind::Directory {
            return Err(Error::not_dir(format!("{path} is a file, not a directory")));
        }
        let start = match start_after {
            // Names never contain NUL, so name + NUL is the next possible key.
            Some(name) => {
                let mut k = entry_key(dir.id, name);
                k.push(0);
                k
            }
            None => children_start(dir.id),
        };
        let kvs = self
            .store
            .scan(&start, &children_end(dir.id), limit)
            .await?;
        // The times of this page's subdirectories: one scan of their keys.
        let mut times = HashMap::new();
        if let Some(last) = kvs.last() {
            let mut end = times_key(&last.key);
            end.push(0);
            for kv in self
                .store
                .scan(&times_key(&start), &end, usize::MAX)
                .await?
            {
                times.insert(kv.key, decode::<DirTimes>(&kv.value)?);
            }
        }
        let mut out = Vec::with_capacity(kvs.len());
        for kv in &kvs {
            let mut inode: Inode = decode(&kv.value)?;
            if is_stub(&inode) {
                // A hard-linked file: one more read, for its names only.
                let Some((v, _)) = self.store.get(&shared_key(inode.id)).await? else {
                    continue; // its last other name went meanwhile
                };
                inode = decode(&v)?;
            }
            if let Some(t) = times.get(&times_key(&kv.key)) {
                t.apply(&mut inode);
            }
            out.push(DirEntry {
                name: entry_name(&kv.key)?,
                inode,
            });
        }
        Ok(out)
    }

    /// Remove a file or an empty directory; a non-empty directory needs
    /// `recursive` (else `DirectoryNotEmpty`). The root cannot be removed.
    /// Recursive removal detaches the directory in one transaction (it is gone
    /// for every reader at once) and leaves its contents to [`Self::purge_trash`].
    pub async fn remove(&self, path: &CairnPath, recursive: bool) -> Result<()> {
        if path.is_root() {
            return Err(Error::invalid("the root directory cannot be removed"));
        }
        retry("remove", || self.remove_once(path, recursive, None)).await
    }

    /// POSIX `unlink` (`dir` false) or `rmdir` (`dir` true): [`Self::remove`]
    /// of a name that must be a non-directory (else `IsADirectory`) or an
    /// empty directory (else `NotADirectory`), checked in the same
    /// transaction.
    pub async fn unlink(&self, path: &CairnPath, dir: bool) -> Result<()> {
        if path.is_root() {
            return Err(Error::invalid("the root directory cannot be removed"));
        }
        retry("remove", || self.remove_once(path, false, Some(dir))).await
    }

    async fn remove_once(
        &self,
        path: &CairnPath,
        recursive: bool,
        want_dir: Option<bool>,
    ) -> Result<Option<()>> {
        let mut tx = Tx::new(self.store.as_ref());
        let (parent, key, entry) = tx.resolve_entry(path).await?;
        let node = entry.ok_or_else(|| Error::not_found(format!("{path} does not exist")))?;
        let is_dir = node.kind == InodeKind::Directory;
        tx.entries_changed(parent.id, -i32::from(is_dir));
        if is_dir {
            tx.delete(times_key(&key));
        }
        match (want_dir, is_dir) {
            (Some(false), true) => return Err(Error::is_dir(format!("{path} is a directory"))),
            (Some(true), false) => {
                return Err(Error::not_dir(format!(
                    "{path} is a {}, not a directory",
                    kind_name(node.kind)
                )))
            }
            _ => {}
        }
        tx.delete(key);
        match node.kind {
            InodeKind::Directory => {
                if tx.dir_is_empty(node.id).await? {
                    tx.delete(id_key(INODE, node.id));
                } else if recursive {
                    tx.put(id_key(TRASH, node.id), &node);
                } else {
                    return Err(Error::not_empty(format!(
                        "{path} is not empty; remove it recursively to delete it and everything below"
                    )));
                }
            }
            _ => self.drop_name(&mut tx, &node, &[]).await?,
        }
        Ok(tx.commit().await?.map(|_| ()))
    }

    /// Atomic rename. Replacing a file is allowed (its chunks become garbage),
    /// and so is replacing an empty directory with a directory. File over
    /// directory is `IsADirectory`, directory over file `NotADirectory`, a
    /// non-empty target `DirectoryNotEmpty`, a directory into its own subtree
    /// `InvalidInput`; `src == dst` is a no-op.
    pub async fn rename(&self, src: &CairnPath, dst: &CairnPath) -> Result<()> {
        self.rename_with(src, dst, true).await
    }

    /// [`Self::rename`]; without `replace`, an existing `dst` of any kind is
    /// `AlreadyExists`, checked in the same transaction (`RENAME_NOREPLACE`).
    pub async fn rename_with(&self, src: &CairnPath, dst: &CairnPath, replace: bool) -> Result<()> {
        if src.is_root() || dst.is_root() {
            return Err(Error::invalid(
                "the root directory cannot be renamed or replaced",
            ));
        }
        retry("rename", || self.rename_once(src, dst, replace)).await
    }

    async fn rename_once(
        &self,
        src: &CairnPath,
        dst: &CairnPath,
        replace: bool,
    ) -> Result<Option<()>> {
        let mut tx = Tx::new(self.store.as_ref());
        let (src_parent, src_key, moving) = tx.resolve_entry(src).await?;
        let mut moving = moving.ok_or_else(|| Error::not_found(format!("{src} does not exist")))?;
        if src == dst {
            return Ok(Some(()));
        }
        let moving_shared = tx.shared.contains_key(&moving.id);
        if moving.kind == InodeKind::Directory && dst.starts_with(src) {
            return Err(Error::invalid(format!(
                "cannot move directory {src} into its own subtree ({dst})"
            )));
        }
        let (dst_parent, dst_key, target) = tx.resolve_entry(dst).await?;
        let moving_dir = i32::from(moving.kind == InodeKind::Directory);
        let mut replaced_dir = false;
        if let Some(target) = target {
            if target.id == moving.id && replace {
                // Two names of one file: POSIX rename does nothing.
                return Ok(Some(()));
            }
            if !replace {
                return Err(Error::exists(format!(
                    "{dst} already exists as a {} (rename without replacing)",
                    kind_name(target.kind)
                )));
            }
            let dirs = (
                moving.kind == InodeKind::Directory,
                target.kind == InodeKind::Directory,
            );
            match dirs {
                (false, true) => {
                    return Err(Error::is_dir(format!(
                        "cannot replace directory {dst} with {} {src}",
                        kind_name(moving.kind)
                    )))
                }
                (true, false) => {
                    return Err(Error::not_dir(format!(
                        "cannot replace {} {dst} with directory {src}",
                        kind_name(target.kind)
                    )))
                }
                (true, true) => {
                    if !tx.dir_is_empty(target.id).await? {
                        return Err(Error::not_empty(format!(
                            "cannot replace {dst}: it is a non-empty directory"
                        )));
                    }
                }
                (false, false) => self.drop_name(&mut tx, &target, &moving.extents).await?,
            }
            if dirs.1 {
                tx.delete(id_key(INODE, target.id));
                replaced_dir = true;
            }
        }
        tx.entries_changed(src_parent.id, -moving_dir);
        tx.entries_changed(dst_parent.id, moving_dir - i32::from(replaced_dir));
        let now = now_ns();
        moving.ctime_ns = now;
        // A directory's times go with it (over those of a directory it replaces).
        let moved_times = match moving_dir {
            1 => tx.get::<DirTimes>(times_key(&src_key)).await?,
            _ => None,
        };
        if let Some(mut t) = moved_times {
            tx.delete(times_key(&src_key));
            t.ctime_ns = now;
            tx.put(times_key(&dst_key), &t);
        } else if replaced_dir {
            tx.delete(times_key(&dst_key));
        }
        let (_, dst_name) = dst.split_last().expect("not the root");
        tx.delete(src_key);
        if moving_shared {
            tx.put(dst_key, &stub(&moving));
            tx.put(shared_key(moving.id), &moving);
        } else {
            tx.put(dst_key, &moving);
        }
        tx.put(
            id_key(INODE, moving.id),
            &InodeLink {
                parent: dst_parent.id,
                name: dst_name.to_string(),
            },
        );
        Ok(tx.commit().await?.map(|_| ()))
    }

    /// Swap the entries `a` and `b` (both must exist) in one transaction:
    /// `renameat2(RENAME_EXCHANGE)`. Any kinds; a directory cannot be
    /// swapped with something inside it.
    pub async fn exchange(&self, a: &CairnPath, b: &CairnPath) -> Result<()> {
        if a.is_root() || b.is_root() {
            return Err(Error::invalid("the root directory cannot be exchanged"));
        }
        if a.starts_with(b) || b.starts_with(a) {
            return Err(Error::invalid(format!(
                "cannot exchange {a} and {b}: one is inside the other"
            )));
        }
        retry("exchange", || self.exchange_once(a, b)).await
    }

    async fn exchange_once(&self, a: &CairnPath, b: &CairnPath) -> Result<Option<()>> {
        let mut tx = Tx::new(self.store.as_ref());
        let mut sides = Vec::with_capacity(2);
        for path in [a, b] {
            let (parent, key, inode) = tx.resolve_entry(path).await?;
            let inode = inode.ok_or_else(|| Error::not_found(format!("{path} does not exist")))?;
            let times = match inode.kind {
                InodeKind::Directory => tx.get::<DirTimes>(times_key(&key)).await?,
                _ => None,
            };
            sides.push((parent, key, inode, times));
        }
        let (b_side, a_side) = (sides.pop().unwrap(), sides.pop().unwrap());
        if a_side.2.id == b_side.2.id {
            // Two names of one file: nothing changes.
            return Ok(Some(()));
        }
        let now = now_ns();
        let is_dir = |i: &Inode| i32::from(i.kind == InodeKind::Directory);
        // Each parent gains what arrives and loses what leaves.
        let a_gets = is_dir(&b_side.2) - is_dir(&a_side.2);
        tx.entries_changed(a_side.0.id, a_gets);
        tx.entries_changed(b_side.0.id, -a_gets);
        for ((_, _, inode, times), (parent, to, _, times_there), path) in
            [(&a_side, &b_side, b), (&b_side, &a_side, a)]
        {
            let mut inode = inode.clone();
            inode.ctime_ns = now;
            // A directory's own times go with it, over those of what was there.
            if let Some(mut t) = *times {
                t.ctime_ns = now;
                tx.put(times_key(to), &t);
            } else if times_there.is_some() {
                tx.delete(times_key(to));
            }
            if tx.shared.contains_key(&inode.id) {
                tx.put(to.clone(), &stub(&inode));
                tx.put(shared_key(inode.id), &inode);
            } else {
                tx.put(to.clone(), &inode);
            }
            let (_, name) = path.split_last().expect("not the root");
            tx.put(
                id_key(INODE, inode.id),
                &InodeLink {
                    parent: parent.id,
                    name: name.to_string(),
                },
            );
        }
        Ok(tx.commit().await?.map(|_| ()))
    }

    /// Background work for the owner to call periodically: purges one batch of
    /// trash, then returns up to `limit` garbage chunks whose delay has passed.
    /// They stay listed (and are returned again) until [`Self::ack_garbage`].
    pub async fn take_due_garbage(&self, limit: usize) -> Result<Vec<(Vec<u8>, GarbageChunk)>> {
        self.purge_trash(PURGE_BATCH).await?;
        let mut end = vec![GARBAGE];
        end.extend_from_slice(&now_ms().saturating_add(1).to_be_bytes());
        let kvs = self.store.scan(&[GARBAGE], &end, limit).await?;
        kvs.into_iter()
            .map(|kv| Ok((kv.key, decode(&kv.value)?)))
            .collect()
    }

    /// Send chunks that were written but will never be committed (a commit
    /// that failed its conditions) to garbage collection right away.
    pub async fn discard(&self, extents: &[Extent]) -> Result<()> {
        if extents.is_empty() {
            return Ok(());
        }
        let due = now_ms();
        let txn = extents
            .iter()
            .flat_map(Extent::garbage)
            .fold(Txn::new(), |txn, g| {
                txn.put(garbage_key(due, g.chunk), encode(&g))
            });
        self.store.commit(txn).await.map(|_| ())
    }

    /// Whether the request `mark` (see [`request_mark_key`]) was applied.
    pub async fn request_applied(&self, mark: &[u8]) -> Result<bool> {
        Ok(self.store.get(mark).await?.is_some())
    }

    /// Delete request marks older than [`REQUEST_MARK_TTL_MS`]; returns how many.
    pub async fn sweep_request_marks(&self) -> Result<usize> {
        let horizon = now_ms().saturating_sub(REQUEST_MARK_TTL_MS);
        let (start, end) = (vec![REQUEST_MARK], vec![REQUEST_MARK + 1]);
        let mut old = Vec::new();
        for kv in self.store.scan(&start, &end, usize::MAX).await? {
            let at = kv
                .value
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                .unwrap_or(0);
            if at < horizon {
                old.push(kv.key);
            }
        }
        for batch in old.chunks(100) {
            let txn = batch.iter().fold(Txn::new(), |t, k| t.delete(k.clone()));
            self.store.commit(txn).await?;
        }
        Ok(old.len())
    }

    /// Forget garbage chunks (keys from [`Self::take_due_garbage`]) once they
    /// were deleted from their nodes.
    pub async fn ack_garbage(&self, keys: Vec<Vec<u8>>) -> Result<()> {
        if let Some(bad) = keys.iter().find(|k| k.len() != 25 || k[0] != GARBAGE) {
            return Err(Error::invalid(format!("{bad:02x?} is not a garbage key")));
        }
        if keys.is_empty() {
            return Ok(());
        }
        let txn = keys.into_iter().fold(Txn::new(), |txn, k| txn.delete(k));
        self.store.commit(txn).await.map(|_| ())
    }

    /// Delete up to `max_entries` entries of removed directory trees, a batch
    /// per transaction, turning file chunks into garbage. Returns how many
    /// records were deleted (a file's entry counts once, a directory twice:
    /// its entry, then its emptied trash record); 0 when the trash is empty.
    pub async fn purge_trash(&self, max_entries: usize) -> Result<usize> {
        let mut done = 0;
        while done < max_entries {
            let n = retry("purge trash", || self.purge_batch_once(max_entries - done)).await?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    async fn purge_batch_once(&self, max_entries: usize) -> Result<Option<usize>> {
        let Some(trashed) = self
            .store
            .scan(&[TRASH], &[TRASH + 1], 1)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(Some(0));
        };
        let dir: Inode = decode(&trashed.value)?;
        let mut tx = Tx::new(self.store.as_ref());
        tx.pin(trashed.key.clone(), trashed.revision);
        let (start, end) = (children_start(dir.id), children_end(dir.id));
        let children = self
            .store
            .scan(&start, &end, max_entries.min(PURGE_BATCH))
            .await?;
        if children.is_empty() {
            tx.txn.conditions.push(Condition::RangeEmpty { start, end });
            tx.delete(trashed.key);
            tx.delete(id_key(INODE, dir.id));
            return Ok(tx.commit().await?.map(|_| 1));
        }
        let mut taken = 0;
        for kv in &children {
            // Stay within etcd's default limits (128 compares, 128 ops, 1.5 MiB
            // per transaction): one file's own chunks may still exceed them.
            let full = tx.txn.ops.len().max(tx.txn.conditions.len()) >= PURGE_TXN_OPS;
            if taken > 0 && full {
                break;
            }
            taken += 1;
            let child: Inode = decode(&kv.value)?;
            tx.pin(kv.key.clone(), kv.revision);
            tx.delete(kv.key.clone());
            match child.kind {
                InodeKind::Directory => {
                    tx.delete(times_key(&kv.key));
                    tx.put(id_key(TRASH, child.id), &child)
                }
                _ => {
                    let child = tx.follow(Some(child)).await?.expect("followed an entry");
                    self.drop_name(&mut tx, &child, &[]).await?;
                }
            }
        }
        Ok(tx.commit().await?.map(|_| taken))
    }

    /// Call `f` on every extent of every committed file (not the trash, not
    /// garbage). Pages through all entries; slow on big namespaces, meant for
    /// accounting and repair planning. Not a snapshot: files changed meanwhile
    /// may be seen in either version.
    /// A page of committed files, in key order after the entry key `after`,
    /// for background planners: each with its entry key, to hand back to
    /// [`Self::set_chunk_nodes`]. Directories are skipped, so a page may be
    /// shorter than `limit`; the second value is the key to continue after
    /// (None at the end).
    pub async fn scan_files(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<(Vec<u8>, Inode)>, Option<Vec<u8>>)> {
        let start = match after {
            Some(k) => {
                let mut s = k.to_vec();
                s.push(0);
                s
            }
            None => vec![ENTRY],
        };
        let page = self.store.scan(&start, &[ENTRY + 1], limit).await?;
        let next = (page.len() == limit)
            .then(|| page.last().map(|kv| kv.key.clone()))
            .flatten();
        let mut files = Vec::new();
        for kv in page {
            let inode: Inode = decode(&kv.value)?;
            // A stub's file is scanned at its shared record.
            if inode.kind == InodeKind::File && !is_stub(&inode) {
                files.push((kv.key, inode));
            }
        }
        Ok((files, next))
    }

    /// Replace the replica list of `chunk` in the file whose entry key is
    /// `key` (from [`Self::scan_files`]), without changing its version. Returns
    /// false if that file no longer holds the chunk (it was overwritten,
    /// removed or renamed meanwhile): a copy made for it is then garbage.
    pub async fn set_chunk_nodes(
        &self,
        key: &[u8],
        chunk: ChunkId,
        nodes: &[NodeId],
    ) -> Result<bool> {
        // An extent offloaded since the repair was planned keeps its empty
        // replica list: the copy made is an orphan, not a replica.
        self.update_extent(key, chunk, |e| {
            if e.remote.is_some() {
                return false;
            }
            e.nodes = nodes.to_vec();
            true
        })
        .await
    }

    /// Change the extent of `chunk` in the file whose entry key is `key`
    /// with `f`, without changing the file's version (its replicas, its
    /// remote store). Returns false if the file no longer holds the chunk,
    /// or `f` declines (answers false: nothing is written). If `f` drops
    /// the chunk's shard layout (an erasure-coded chunk offloaded whole),
    /// its shards become garbage in the same transaction, due after the gc
    /// delay.
    pub async fn update_extent(
        &self,
        key: &[u8],
        chunk: ChunkId,
        f: impl Fn(&mut Extent) -> bool,
    ) -> Result<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let Some((value, rev)) = self.store.get(key).await? else {
                return Ok(false);
            };
            let mut inode: Inode = decode(&value)?;
            let Some(ext) = inode.extents.iter_mut().find(|e| e.chunk == chunk) else {
                return Ok(false);
            };
            let shards = ext.ec.is_some().then(|| ext.garbage());
            if !f(ext) {
                return Ok(false);
            }
            let dropped = shards.filter(|_| ext.ec.is_none()).unwrap_or_default();
            let mut txn = Txn::new()
                .when(key.to_vec(), rev)
                .put(key.to_vec(), encode(&inode));
            let due = self.due_ms();
            for g in dropped {
                txn = txn.put(garbage_key(due, g.chunk), encode(&g));
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(true),
                Err(e) if e.kind == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!(
            "chunk {chunk}: its file kept changing; try again"
        )))
    }

    /// Replace every extent of the file whose entry key is `key` with
    /// `extents` (the same bytes laid out anew, by meta's conversion
    /// worker) as its next version, if it is still at `version` with the
    /// same size; its redundancy cue becomes `cues`' (`rep` or `ec`). Its
    /// mtime and ctime stay (the content did not change). The old chunks
    /// become garbage, due after the gc delay, so readers of the old
    /// version finish. Returns false if the file changed meanwhile: nothing is
    /// written.
    pub async fn relayout(
        &self,
        key: &[u8],
        version: Version,
        extents: &[Extent],
        cues: &Cues,
    ) -> Result<bool> {
        for _ in 0..MAX_ATTEMPTS {
            let Some((value, rev)) = self.store.get(key).await? else {
                return Ok(false);
            };
            let mut inode: Inode = decode(&value)?;
            let size: u64 = extents.iter().map(|e| e.len).sum();
            if inode.kind != InodeKind::File || inode.version != version || inode.size != size {
                return Ok(false);
            }
            let old = std::mem::replace(&mut inode.extents, extents.to_vec());
            inode.version = Version(version.0 + 1);
            inode.cues = inode.cues.merge(cues);
            // ctime stays too: a new layout is no use of the file, and must
            // not put off its cold_after.
            let due = self.due_ms();
            let mut txn = Txn::new()
                .when(key.to_vec(), rev)
                .put(key.to_vec(), encode(&inode));
            for g in dropped(&old, extents) {
                txn = txn.put(garbage_key(due, g.chunk), encode(&g));
            }
            match self.store.commit(txn).await {
                Ok(_) => return Ok(true),
                Err(e) if e.kind == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict("the file kept changing; try again"))
    }

    /// The entry key of `path` (for [`Self::update_extent`]) with its
    /// record; a hard-linked file's is its shared record's.
    pub async fn file_key(&self, path: &CairnPath) -> Result<(Vec<u8>, Inode)> {
        Tx::new(self.store.as_ref()).existing(path).await
    }

    /// The path of file or directory `id` now, from its parents' links;
    /// None for a hard-linked file (it has several) or one that went.
    pub async fn path_of(&self, id: InodeId) -> Result<Option<CairnPath>> {
        let mut names = Vec::new();
        let mut at = id;
        while at != InodeId::ROOT {
            let Some((value, _)) = self.store.get(&id_key(INODE, at)).await? else {
                return Ok(None);
            };
            let link: InodeLink = decode(&value)?;
            if link.parent == LINKED || names.len() > cairn_types::MAX_PATH_LEN {
                return Ok(None);
            }
            names.push(link.name);
            at = link.parent;
        }
        let mut path = CairnPath::root();
        for n in names.iter().rev() {
            path = path.join(n)?;
        }
        Ok(Some(path))
    }

    /// Every chunk waiting in garbage (due or not): the orphan sweep leaves
    /// these to the garbage collector and its delay.
    pub async fn garbage_chunks(&self) -> Result<HashSet<ChunkId>> {
        let mut out = HashSet::new();
        let mut start = vec![GARBAGE];
        loop {
            let page = self.store.scan(&start, &[GARBAGE + 1], WALK_PAGE).await?;
            for kv in &page {
                let g: GarbageChunk = decode(&kv.value)?;
                out.insert(g.chunk);
            }
            match page.last() {
                Some(kv) if page.len() == WALK_PAGE => {
                    start = kv.key.clone();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    /// Every chunk of every current file version, with its file.
    pub async fn for_each_chunk(&self, mut f: impl FnMut(&Inode, &Extent) + Send) -> Result<()> {
        let mut start = vec![ENTRY];
        let end = vec![ENTRY + 1];
        loop {
            let page = self.store.scan(&start, &end, WALK_PAGE).await?;
            for kv in &page {
                let inode: Inode = decode(&kv.value)?;
                for e in &inode.extents {
                    f(&inode, e);
                }
            }
            match page.last() {
                Some(kv) if page.len() == WALK_PAGE => {
                    start = kv.key.clone();
                    start.push(0);
                }
                _ => return Ok(()),
            }
        }
    }
}

/// The set-group-ID bit of a mode (`S_ISGID`).
const SET_GID: u32 = 0o2000;

fn new_dir(id: InodeId, now: u64) -> Inode {
    Inode {
        id,
        kind: InodeKind::Directory,
        size: 0,
        version: Version(1),
        mtime_ns: now,
        ctime_ns: now,
        atime_ns: now,
        mode: 0o755,
        extents: Vec::new(),
        chunk_size: 0,
        xattrs: Xattrs::new(),
        uid: None,
        gid: None,
        target: None,
        cues: Cues::default(),
        nlink: 2,
        inline: None,
        rdev: 0,
    }
}

/// The directory entry of one name of a shared (hard-linked) record.
fn stub(of: &Inode) -> Inode {
    let mut s = new_dir(of.id, 0);
    s.kind = of.kind;
    s.mode = 0;
    s.version = Version(0);
    s.nlink = 0;
    s
}

/// The garbage entries of the chunks of `old` that `keep` does not
/// reference, each chunk once.
fn dropped(old: &[Extent], keep: &[Extent]) -> Vec<GarbageChunk> {
    let keep: HashSet<ChunkId> = keep.iter().map(|e| e.chunk).collect();
    let mut seen = HashSet::new();
    old.iter()
        .filter(|e| !keep.contains(&e.chunk) && seen.insert(e.chunk))
        .flat_map(Extent::garbage)
        .collect()
}

fn is_stub(entry: &Inode) -> bool {
    entry.nlink == 0 && entry.kind != InodeKind::Directory
}

/// What a new version of a file inherits from the one it replaces.
struct Kept {
    xattrs: Xattrs,
    uid: Option<u32>,
    gid: Option<u32>,
    cues: Cues,
    nlink: u32,
    /// The replaced version's mode, for a commit that keeps it.
    mode: Option<u32>,
    /// The replaced version's atime (a write is no access).
    atime_ns: Option<u64>,
}

impl Kept {
    /// The file version's record, written now: `xattrs` replace the kept
    /// ones when given.
    fn into_file(
        self,
        id: InodeId,
        version: Version,
        mode: u32,
        extents: Vec<Extent>,
        chunk_size: u64,
        xattrs: &Option<Xattrs>,
    ) -> Inode {
        let now = now_ns();
        Inode {
            id,
            kind: InodeKind::File,
            size: extents.iter().map(|e| e.len).sum(),
            version,
            mtime_ns: now,
            ctime_ns: now,
            atime_ns: self.atime_ns.unwrap_or(now),
            mode,
            extents,
            chunk_size,
            xattrs: xattrs.clone().unwrap_or(self.xattrs),
            uid: self.uid,
            gid: self.gid,
            target: None,
            cues: self.cues,
            nlink: self.nlink,
            inline: None,
            rdev: 0,
        }
    }
}

fn kind_name(kind: InodeKind) -> &'static str {
    match kind {
        InodeKind::File => "file",
        InodeKind::Directory => "directory",
        InodeKind::Symlink => "symbolic link",
        InodeKind::Fifo => "FIFO",
        InodeKind::Socket => "socket",
        InodeKind::CharDevice => "character device",
        InodeKind::BlockDevice => "block device",
    }
}

/// Apply `changes` to `inode` (validated against the limits), or say why not.
fn apply_changes(path: &CairnPath, inode: &mut Inode, changes: &AttrChanges) -> Result<()> {
    let now = now_ns();
    let time = |t| if t == cairn_types::TIME_NOW { now } else { t };
    if let Some(mode) = changes.mode {
        inode.mode = Inode::stored_mode(mode);
    }
    if changes.uid.is_some() {
        inode.uid = changes.uid;
    }
    if changes.gid.is_some() {
        inode.gid = changes.gid;
    }
    if let Some(mtime) = changes.mtime_ns {
        inode.mtime_ns = time(mtime);
    }
    if let Some(atime) = changes.atime_ns {
        inode.atime_ns = time(atime);
    }
    for op in &changes.xattrs {
        match op {
            XattrOp::Set { name, value, when } => {
                if name.is_empty() || name.len() > MAX_NAME_LEN {
                    return Err(Error::invalid(format!(
                        "extended attribute name of {} bytes; the limit is {MAX_NAME_LEN}",
                        name.len()
                    )));
                }
                if value.len() > MAX_XATTR_VALUE_LEN {
                    return Err(Error::invalid(format!(
                        "extended attribute {name} of {path}: value of {} bytes; the limit is {MAX_XATTR_VALUE_LEN}",
                        value.len()
                    )));
                }
                let present = inode.xattrs.contains_key(name);
                match (when, present) {
                    (XattrWhen::Create, true) => {
                        return Err(Error::exists(format!(
                            "extended attribute {name} of {path} is already set"
                        )))
                    }
                    (XattrWhen::Replace, false) => {
                        return Err(Error::not_found(format!(
                            "extended attribute {name} of {path} is not set"
                        )))
                    }
                    _ => {}
                }
                inode.xattrs.insert(name.clone(), value.clone());
            }
            XattrOp::Remove { name } => {
                if inode.xattrs.remove(name).is_none() {
                    return Err(Error::not_found(format!(
                        "extended attribute {name} of {path} is not set"
                    )));
                }
            }
        }
    }
    let adds = changes
        .xattrs
        .iter()
        .any(|op| matches!(op, XattrOp::Set { .. }));
    let total: usize = inode.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if adds && total > MAX_XATTRS_LEN {
        return Err(Error::no_space(format!(
            "extended attributes of {path} would take {total} bytes; the limit is {MAX_XATTRS_LEN}"
        )));
    }
    if !changes.accessed {
        inode.ctime_ns = now;
    }
    Ok(())
}
