//! One optimistic transaction of the namespace: reads pin their keys,
//! resolution walks paths from the root, and the commit writes the
//! directory times and link counts the changes imply; [`retry`] runs an
//! operation until its transaction commits.

use super::*;

/// Attempts of one operation before it gives up with a retryable conflict.
pub(super) const MAX_ATTEMPTS: u32 = 20;

/// One optimistic transaction being built: reads pin their keys.
pub(super) struct Tx<'a> {
    pub(super) store: &'a dyn MetaStore,
    pub(super) pinned: HashSet<Vec<u8>>,
    pub(super) txn: Txn,
    /// Cues of the directory last resolved, merged from the root down.
    pub(super) inherited: Cues,
    /// The deepest directory on that walk whose own cues say
    /// `keep_together`: its subtree's chunks share one node set.
    pub(super) together: Option<InodeId>,
    /// Files resolved through a stub: their record is at [`shared_key`];
    /// with the record as this transaction last wrote it, so two names of
    /// one file dropped together count twice.
    pub(super) shared: HashMap<InodeId, Option<Inode>>,
    /// The directories this transaction resolved as parents: id → (entry
    /// key, record as read).
    pub(super) parents: HashMap<InodeId, (Vec<u8>, Inode)>,
    /// Directories whose entries this transaction changes, with the change
    /// in their count of subdirectories: [`Self::commit`] writes their
    /// times, and their records when the count moved.
    pub(super) changed: HashMap<InodeId, i32>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(store: &'a dyn MetaStore) -> Tx<'a> {
        Tx {
            store,
            pinned: HashSet::new(),
            txn: Txn::new(),
            inherited: Cues::default(),
            together: None,
            shared: HashMap::new(),
            parents: HashMap::new(),
            changed: HashMap::new(),
        }
    }

    /// An entry of directory `dir` (resolved as a parent by this
    /// transaction) is added, removed or renamed; `subdirs` is the change
    /// in its subdirectories.
    pub(super) fn entries_changed(&mut self, dir: InodeId, subdirs: i32) {
        *self.changed.entry(dir).or_insert(0) += subdirs;
    }

    /// Lay the times of directory `inode` (at entry `key`) over its record,
    /// pinning them: for a transaction that rewrites the directory's record,
    /// which then holds them (the times key goes).
    pub(super) async fn own_dir_times(&mut self, key: &[u8], inode: &mut Inode) -> Result<()> {
        if inode.kind != InodeKind::Directory {
            return Ok(());
        }
        let tkey = times_key(key);
        if let Some(t) = self.get::<DirTimes>(tkey.clone()).await? {
            t.apply(inode);
            self.delete(tkey);
        }
        Ok(())
    }

    /// The record an entry names: itself, or for a stub the shared record
    /// (pinned too).
    pub(super) async fn follow(&mut self, entry: Option<Inode>) -> Result<Option<Inode>> {
        match entry {
            Some(e) if is_stub(&e) => {
                let record = match self.shared.get(&e.id) {
                    Some(Some(written)) => Some(written.clone()),
                    _ => self.get::<Inode>(shared_key(e.id)).await?,
                };
                let record = record.ok_or_else(|| {
                    Error::corrupt(format!("the shared record of inode {} is missing", e.id))
                })?;
                self.shared.entry(e.id).or_insert(None);
                Ok(Some(record))
            }
            other => Ok(other),
        }
    }

    /// Where the record of `inode`, found at entry `key`, is written.
    pub(super) fn record_key(&self, key: &[u8], inode: &Inode) -> Vec<u8> {
        if self.shared.contains_key(&inode.id) {
            shared_key(inode.id)
        } else {
            key.to_vec()
        }
    }

    pub(super) fn pin(&mut self, key: Vec<u8>, revision: u64) {
        if self.pinned.insert(key.clone()) {
            self.txn
                .conditions
                .push(Condition::Revision { key, revision });
        }
    }

    pub(super) async fn get<T: Record>(&mut self, key: Vec<u8>) -> Result<Option<T>> {
        let got = self.store.get(&key).await?;
        self.pin(key, got.as_ref().map_or(0, |g| g.1));
        got.map(|(v, _)| decode(&v)).transpose()
    }

    /// Whether directory `dir` has no entries; if so, the commit requires it still has none.
    pub(super) async fn dir_is_empty(&mut self, dir: InodeId) -> Result<bool> {
        let (start, end) = (children_start(dir), children_end(dir));
        if self.store.scan(&start, &end, 1).await?.is_empty() {
            self.txn
                .conditions
                .push(Condition::RangeEmpty { start, end });
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Put a key that must not exist yet.
    pub(super) fn create<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.pin(key.clone(), 0);
        self.put(key, value);
    }

    pub(super) fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.txn = std::mem::take(&mut self.txn).put(key, encode(value));
    }

    pub(super) fn delete(&mut self, key: Vec<u8>) {
        self.txn = std::mem::take(&mut self.txn).delete(key);
    }

    /// `None` when a condition failed and the operation should start over.
    pub(super) async fn commit(mut self) -> Result<Option<u64>> {
        let now = now_ns();
        for (id, subdirs) in std::mem::take(&mut self.changed) {
            let Some((key, mut dir)) = self.parents.remove(&id) else {
                debug_assert!(false, "directory {id} changed but not resolved");
                continue;
            };
            self.put(
                times_key(&key),
                &DirTimes {
                    id,
                    mtime_ns: now,
                    ctime_ns: now,
                },
            );
            // 1: a directory made before meta counted (left as "unknown").
            if subdirs != 0 && dir.nlink >= 2 {
                dir.nlink = (i64::from(dir.nlink) + i64::from(subdirs)).max(2) as u32;
                self.put(key, &dir);
            }
        }
        let mark = PENDING_MARK
            .try_with(|m| m.borrow_mut().take())
            .ok()
            .flatten();
        let mut txn = self.txn;
        if let Some(k) = &mark {
            // A mark that exists already fails the condition: the request
            // was applied before, and is not applied again.
            txn = txn
                .when(k.clone(), 0)
                .put(k.clone(), now_ms().to_be_bytes().to_vec());
        }
        let r = self.store.commit(txn).await;
        if r.is_err() {
            if let Some(k) = mark {
                let _ = PENDING_MARK.try_with(|m| *m.borrow_mut() = Some(k));
            }
        }
        match r {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind == ErrorKind::Conflict => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn root(&mut self) -> Result<Inode> {
        self.get(ROOT_KEY.to_vec())
            .await?
            .ok_or_else(|| Error::internal("the root directory record is missing"))
    }

    /// Resolve `path` to a directory, pinning every entry on the way.
    pub(super) async fn resolve_dir(&mut self, path: &CairnPath) -> Result<Inode> {
        let mut cur = self.root().await?;
        let mut cur_key = ROOT_KEY.to_vec();
        let mut inherited = cur.cues.clone();
        let mut together = cur.cues.keep_together.filter(|t| *t).map(|_| cur.id);
        let mut walked = CairnPath::root();
        for name in path.components() {
            walked = walked.join(name)?;
            let key = entry_key(cur.id, name);
            match self.get::<Inode>(key.clone()).await? {
                None => return Err(Error::not_found(format!("{walked} does not exist"))),
                Some(i) if i.kind != InodeKind::Directory => {
                    return Err(Error::not_dir(format!(
                        "{walked} is a {}, not a directory",
                        kind_name(i.kind)
                    )))
                }
                Some(i) => {
                    inherited = inherited.merge(&i.cues);
                    match i.cues.keep_together {
                        Some(true) => together = Some(i.id),
                        Some(false) => together = None,
                        None => {}
                    }
                    cur = i;
                    cur_key = key;
                }
            }
        }
        self.inherited = inherited;
        self.together = together;
        self.parents
            .entry(cur.id)
            .or_insert_with(|| (cur_key, cur.clone()));
        Ok(cur)
    }

    /// The record of the existing file or directory `path` (the root
    /// included) and its key; `NotFound` if there is none.
    pub(super) async fn existing(&mut self, path: &CairnPath) -> Result<(Vec<u8>, Inode)> {
        if path.is_root() {
            return Ok((ROOT_KEY.to_vec(), self.root().await?));
        }
        let (_, key, entry) = self.resolve_entry(path).await?;
        let inode = entry.ok_or_else(|| Error::not_found(format!("{path} does not exist")))?;
        Ok((self.record_key(&key, &inode), inode))
    }

    /// Resolve `path`'s parent and read its entry: (parent, entry key,
    /// record; a hard-linked file's is its shared record, see
    /// [`Self::record_key`]).
    pub(super) async fn resolve_entry(
        &mut self,
        path: &CairnPath,
    ) -> Result<(Inode, Vec<u8>, Option<Inode>)> {
        let (parent_path, name) = path.split_last().expect("callers handle the root");
        let parent = self.resolve_dir(&parent_path).await?;
        let key = entry_key(parent.id, name);
        let entry = self.get(key.clone()).await?;
        let entry = self.follow(entry).await?;
        Ok((parent, key, entry))
    }
}

pub(super) async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    for n in 0..MAX_ATTEMPTS {
        if let Some(v) = attempt().await? {
            return Ok(v);
        }
        let cap_us = 100u64 << n.min(7);
        tokio::time::sleep(Duration::from_micros(fastrand::u64(0..=cap_us))).await;
    }
    Err(Error::conflict(format!(
        "{what}: gave up after {MAX_ATTEMPTS} attempts because of concurrent updates to the same paths; retry"
    )))
}
