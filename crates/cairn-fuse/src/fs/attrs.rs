//! The handlers' work on attributes, links and removed-but-open files:
//! chmod/chown/utimens, extended attributes, mkdir/symlink/mknod, readlink,
//! and keeping a removed file for the handles that still read it.

use super::{errno, xattr, Errno, OpenHandle, Resolved, Shared};
use crate::staging::Staged;
use cairn_client::FileReader;
use cairn_types::{AttrChanges, ErrorKind, Inode, InodeId, NewNode};
use fuser::FileAttr;
use std::sync::Arc;
use tracing::warn;

impl Shared {
    pub(super) fn open_reader(&self, ino: u64) -> Option<Arc<FileReader>> {
        self.handles.lock().unwrap().values().find_map(|h| match h {
            OpenHandle::Reader(r) if r.inode().id.0 == ino => Some(r.clone()),
            _ => None,
        })
    }

    /// `ino` is about to be unlinked by this mount: give the handles that
    /// read it here a local copy, so they keep reading after meta collects
    /// its chunks (a program may hold a removed file open for as long as it
    /// likes). Best effort: if the copy fails (cache full, a node down),
    /// they read from Cairn until the garbage delay (`--gc-delay`) is over.
    pub(super) async fn keep_for_open_readers(&self, ino: u64) {
        let readers: Vec<(u64, Arc<FileReader>)> = {
            let handles = self.handles.lock().unwrap();
            handles
                .iter()
                .filter_map(|(fh, h)| match h {
                    OpenHandle::Reader(r) if r.inode().id.0 == ino => Some((*fh, r.clone())),
                    _ => None,
                })
                .collect()
        };
        let Some((_, first)) = readers.first() else {
            return;
        };
        // A staged file of it here (a writer) is kept already; readers of
        // an older version read that from Cairn until the garbage delay.
        if self.stages.peek(ino).is_some() {
            return;
        }
        let dir = self.stages.cache_dir.clone();
        let budget = self.stages.budget.clone();
        let inode = first.inode().clone();
        let source = first.clone();
        let made = self
            .stages
            .acquire(ino, || async move {
                let staged = Staged::create(&dir, budget, ino, inode, None).await?;
                staged.fill_from(&source).await?;
                Ok(staged)
            })
            .await;
        let staged = match made {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(
                    ino,
                    "could not keep a copy of a removed file for its readers: {e}"
                );
                return;
            }
        };
        let version = first.inode().version;
        let mut handles = self.handles.lock().unwrap();
        let mut first_use = true;
        for (fh, r) in readers {
            if r.inode().version != version || !handles.contains_key(&fh) {
                continue;
            }
            // The first handle takes the use `acquire` counted.
            if !first_use {
                self.stages.share(ino);
            }
            first_use = false;
            handles.insert(fh, OpenHandle::Staged(staged.clone()));
        }
        if first_use {
            // Every reader closed meanwhile.
            self.stages.release(ino);
        }
    }

    /// chmod, chown, utimens (and truncate) of `ino`.
    pub(super) async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        changes: AttrChanges,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        if let Some(size) = size {
            self.truncate(ino, size).await?;
        }
        // Nothing to change at all is `chown(f, -1, -1)`: its ctime moves,
        // as on ext4 (meta sets the ctime of every change).
        if changes != AttrChanges::default() || size.is_none() {
            self.change_attrs(ino, changes).await?;
        }
        self.getattr(ino).await
    }

    /// Apply `changes` to `ino` in meta. Unsaved writes are uploaded first:
    /// an explicit mtime (`cp -p`, `tar`, `rsync` set it on the open file)
    /// must not be overwritten by the upload at close.
    pub(super) async fn change_attrs(
        &self,
        ino: u64,
        changes: AttrChanges,
    ) -> Result<Inode, Errno> {
        let staged = self.stages.peek(ino);
        if let Some(s) = staged.as_ref().filter(|s| s.is_dirty()) {
            self.upload(s).await?;
        }
        let path = match self.live_path(ino).await {
            Ok(p) => p,
            // Open but unlinked here: nothing in meta to change.
            Err(e) => {
                return match staged {
                    Some(s) => Ok(s.inode()),
                    None => Err(e),
                }
            }
        };
        let real = self.real(ino);
        let id = (real != crate::inode_table::ROOT_INO).then_some(InodeId(real));
        let r = self.client.set_attr(&path, id, changes.clone()).await;
        let inode = match r {
            Ok(i) => i,
            Err(e) if e.kind == ErrorKind::NotFound && !changes.xattrs.is_empty() => {
                // The file, or the attribute a precondition named?
                return Err(match self.stat(&path).await {
                    Ok(i) if i.id.0 == real || id.is_none() => libc::ENODATA,
                    Ok(_) | Err(libc::ENOENT) => libc::ENOENT,
                    Err(other) => other,
                });
            }
            Err(e) if !changes.xattrs.is_empty() => return Err(xattr::errno(&e)),
            Err(e) => return Err(errno(&e)),
        };
        if let Some(s) = staged {
            s.set_inode(inode.clone());
        }
        Ok(inode)
    }

    /// mkdir, symlink, mknod: a new node owned by the caller, remembered
    /// (as a cued entry when made through cue components). The access's
    /// cues are not fixed on a directory made so: they are per access.
    pub(super) async fn make(
        &self,
        parent: u64,
        name: &str,
        r: Resolved,
        node: NewNode,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let inode = self
            .client
            .make_node(&r.path, node, mode & 0o7777, (Some(owner.0), Some(owner.1)))
            .await
            .map_err(|e| errno(&e))?;
        let ino = self.remember(parent, name, &r, inode.id.0)?;
        Ok(self.attr(ino, &inode, None))
    }

    pub(super) async fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let inode = self.inode(ino).await?;
        inode.target.map(String::into_bytes).ok_or(libc::EINVAL)
    }

    pub(super) async fn getxattr(&self, ino: u64, key: &str) -> Result<Vec<u8>, Errno> {
        if key == xattr::CUES {
            // The effective cues: the path's own over the inherited ones,
            // and under those of the access when reached through cue
            // components.
            let path = self.path(ino)?;
            let c = self.client.cues(&path).await.map_err(|e| errno(&e))?;
            let effective = c.effective.merge(&self.access_cues(ino));
            return match effective.is_empty() {
                true => Err(libc::ENODATA),
                false => Ok(effective.to_string().into_bytes()),
            };
        }
        let inode = self.inode(ino).await?;
        inode.xattrs.get(key).cloned().ok_or(libc::ENODATA)
    }

    pub(super) async fn listxattr(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        Ok(xattr::list(&self.inode(ino).await?))
    }

    /// Set (replace) or, with `None`, clear the cues of `ino`'s path.
    pub(super) async fn set_cues(&self, ino: u64, value: Option<&[u8]>) -> Result<(), Errno> {
        self.writable()?;
        let path = self.path(ino)?;
        let cues = match value {
            Some(v) => {
                let text = std::str::from_utf8(v).map_err(|_| libc::EINVAL)?;
                cairn_types::Cues::parse(text.trim_end_matches(['\0', '\n']))
                    .map_err(|_| libc::EINVAL)?
            }
            None => cairn_types::Cues::default(),
        };
        self.client
            .set_cues(&path, &cues, true)
            .await
            .map(|_| ())
            .map_err(|e| errno(&e))
    }
}
