//! The `fuser::Filesystem` implementation.
//!
//! fuser runs one session thread that decodes kernel requests and calls
//! these handlers. Each handler only validates its arguments, then spawns
//! a task on the tokio runtime that does the work and answers through the
//! reply object (replies are `Send`), so the session thread never waits on
//! the network or the disk and many requests (kernel read-ahead, parallel
//! programs) are in flight at once. That is simpler than fuser's
//! multi-threaded loop and scales with the runtime, not with a thread count.

use crate::error::{check_name, errno};
use crate::inode_table::{Access, InodeTable, ROOT_INO};
use crate::staging::{StageTable, Staged};
use crate::xattr;

mod attrs;
mod locks;
use cairn_client::{Client, FileReader};
use cairn_types::{
    component_cues, now_ns, AttrChanges, CairnPath, Cues, ErrorKind, Inode, InodeKind, NewNode,
    XattrOp, CUE_DIR, MAX_TARGET_LEN, SYSTEM_DIR,
};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use libc::c_int;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tracing::warn;

/// How long the kernel may keep what the mount told it (see
/// [`crate::MountOptions`]).
#[derive(Clone, Copy, Debug)]
pub struct CacheTimes {
    /// A name's entry, and the attributes that come with it (lookup,
    /// create, mkdir, readdirplus: fuser gives both one lifetime).
    pub entry: Duration,
    /// Attributes asked for on their own (getattr, setattr).
    pub attr: Duration,
    /// A name found missing (0: the kernel asks every time).
    pub negative: Duration,
}

impl CacheTimes {
    /// Short, so other mounts' changes show within a second.
    pub const DEFAULT: CacheTimes = CacheTimes {
        entry: Duration::from_secs(1),
        attr: Duration::from_secs(1),
        negative: Duration::from_secs(1),
    };
    /// Nothing cached: every call asks; for files shared across hosts
    /// while open.
    pub const NONE: CacheTimes = CacheTimes {
        entry: Duration::ZERO,
        attr: Duration::ZERO,
        negative: Duration::ZERO,
    };
}
/// Entries asked of meta per readdir call: about what fits the kernel's
/// one-page readdir buffer, so little is fetched twice.
const DIR_PAGE: u32 = 128;
/// Largest kernel read and write request.
pub const MAX_IO: u32 = 1 << 20;
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

type Errno = c_int;

enum OpenHandle {
    /// Opened read-only with nothing staged: reads go to that version.
    Reader(Arc<FileReader>),
    Staged(Arc<Staged>),
    Dir(Arc<Mutex<DirCursor>>),
}

/// Where a directory listing is: the names of the offsets last handed out,
/// since the kernel resumes from one of them.
struct DirCursor {
    /// The directory's.
    ino: u64,
    names: HashMap<i64, String>,
}

/// Where a name in a directory leads.
struct Resolved {
    /// The Cairn path (a cue component's is its directory's).
    path: CairnPath,
    /// The cues of the access when reached through cue components; None on
    /// a plain path.
    cues: Option<Cues>,
    /// A `.cue` directory.
    cue_dir: bool,
    /// The name is a cue component, not a name in Cairn.
    component: bool,
}

pub(crate) struct Shared {
    client: Client,
    read_only: bool,
    uid: u32,
    gid: u32,
    inodes: Mutex<InodeTable>,
    stages: StageTable,
    handles: Mutex<HashMap<u64, OpenHandle>>,
    next_fh: AtomicU64,
    /// Tells the kernel to drop cached attributes; set once the session
    /// runs.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    locks: locks::MountLocks,
    /// With `--writeback`: closed files waiting for their upload, in close
    /// order (see [`upload_in_background`]).
    writeback: Option<tokio::sync::mpsc::Sender<Job>>,
    ttl: CacheTimes,
    atime: crate::Atime,
    /// Read handles whose first read records an access time.
    atime_due: Mutex<HashSet<u64>>,
    /// Access times being recorded, by ino: each lock is held until meta
    /// has the time, and a getattr waits for it.
    atime_pending: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Directories removed here while open, as they were (an `fstat` of
    /// the open one shows them, with no links), until their last close.
    removed_dirs: Mutex<HashMap<u64, Inode>>,
}

/// Work for the write-back uploader.
enum Job {
    /// Upload a closed file, then let its staged copy go.
    Upload(Arc<Staged>),
    /// Answer once every job before this one is done.
    Drain(std::sync::mpsc::Sender<()>),
}

/// How long an unmount waits for write-back uploads to finish.
const WRITEBACK_DRAIN: Duration = Duration::from_secs(600);

/// Closed files queued for upload at most; a close waits for room.
const WRITEBACK_QUEUE: usize = 4096;

/// The write-back uploader: one file at a time, in close order, so a file
/// closed after another never lands before it. A failed upload is tried
/// again (the cluster may be down for a while) unless the failure is one
/// retrying cannot mend; the staged copy stays readable here meanwhile.
async fn upload_in_background(
    s: std::sync::Weak<Shared>,
    mut rx: tokio::sync::mpsc::Receiver<Job>,
) {
    while let Some(job) = rx.recv().await {
        let staged = match job {
            Job::Upload(st) => st,
            Job::Drain(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let Some(s) = s.upgrade() else { return };
        let mut wait = Duration::from_millis(100);
        loop {
            match s.upload(&staged).await {
                Ok(()) => break,
                Err(libc::EIO | libc::ENOSPC | libc::ESTALE) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(
                        ino = staged.ino,
                        "write-back upload failed for good (errno {e}); this file's last writes are lost"
                    );
                    break;
                }
            }
        }
        let ino = staged.ino;
        drop(staged);
        s.stages.release(ino);
    }
}

pub struct CairnFs {
    shared: Arc<Shared>,
    rt: Handle,
    /// Dropped with the session: tells the mount the kernel let go.
    pub(crate) _ended: tokio::sync::oneshot::Sender<()>,
}

impl CairnFs {
    pub(crate) fn new(
        client: Client,
        rt: Handle,
        opts: &crate::MountOptions,
        ended: tokio::sync::oneshot::Sender<()>,
        notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    ) -> CairnFs {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let (queue, jobs) = tokio::sync::mpsc::channel(WRITEBACK_QUEUE);
        let shared = Arc::new(Shared {
            locks: locks::MountLocks::new(client.lock_session(opts.lock_lease)),
            client,
            read_only: opts.read_only,
            uid,
            gid,
            inodes: Mutex::new(InodeTable::new()),
            stages: StageTable::new(opts.cache_dir.clone(), opts.cache_size),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            notifier,
            writeback: opts.writeback.then_some(queue),
            ttl: opts.cache_times,
            atime: opts.atime,
            atime_due: Mutex::new(HashSet::new()),
            atime_pending: Mutex::new(HashMap::new()),
            removed_dirs: Mutex::new(HashMap::new()),
        });
        if opts.writeback {
            rt.spawn(upload_in_background(Arc::downgrade(&shared), jobs));
        }
        CairnFs {
            shared,
            rt,
            _ended: ended,
        }
    }

    /// Answer a kernel request `op` on the runtime, counted and timed in
    /// the process's metrics.
    fn spawn<F>(&self, op: &'static str, f: impl FnOnce(Arc<Shared>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let work = f(self.shared.clone());
        self.rt.spawn(async move {
            work.await;
            cairn_metrics::global().mount_request(op, started.elapsed());
        });
    }
}

fn ns_to_time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// A time `utimensat` sets, in nanoseconds since the epoch (times before
/// it are kept as the epoch).
fn time_to_ns(t: TimeOrNow) -> u64 {
    match t {
        // Meta's clock, which also sets the ctime: equal, as on ext4.
        TimeOrNow::Now => cairn_types::TIME_NOW,
        TimeOrNow::SpecificTime(t) => t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    }
}

/// Attributes for "." and ".." in a `readdirplus` reply, which the kernel
/// does not keep.
fn dot_attr(ino: u64) -> FileAttr {
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: MAX_IO,
        flags: 0,
    }
}

fn file_type(kind: InodeKind) -> FileType {
    match kind {
        InodeKind::Directory => FileType::Directory,
        InodeKind::File => FileType::RegularFile,
        InodeKind::Symlink => FileType::Symlink,
        InodeKind::Fifo => FileType::NamedPipe,
        InodeKind::Socket => FileType::Socket,
        InodeKind::CharDevice => FileType::CharDevice,
        InodeKind::BlockDevice => FileType::BlockDevice,
    }
}

impl Shared {
    /// The attributes of `inode` as the kernel's `ino` (its own, or a cued
    /// entry's).
    fn attr(&self, ino: u64, inode: &Inode, size: Option<u64>) -> FileAttr {
        let (default_perm, nlink) = match inode.kind {
            // 2 + its subdirectories (records from before they were
            // counted say 1; one removed while open, 0).
            InodeKind::Directory => (
                0o755,
                if inode.nlink == 0 {
                    0
                } else {
                    inode.nlink.max(2)
                },
            ),
            InodeKind::Symlink => (0o777, inode.nlink),
            // 0 only for a file open here whose last name is gone.
            _ => (0o644, inode.nlink),
        };
        let perm = inode.perm().map_or(default_perm, |p| p as u16);
        let kind = file_type(inode.kind);
        let size = size.unwrap_or(inode.size);
        if inode.kind == InodeKind::File {
            self.inodes.lock().unwrap().shown(ino, inode.version.0);
        }
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: ns_to_time(inode.atime_ns),
            mtime: ns_to_time(inode.mtime_ns),
            ctime: ns_to_time(inode.ctime_ns.max(inode.mtime_ns)),
            crtime: ns_to_time(inode.ctime_ns),
            kind,
            perm,
            nlink,
            // Files written by the CLI or S3 have no owner: the mounting user's.
            uid: inode.uid.unwrap_or(self.uid),
            gid: inode.gid.unwrap_or(self.gid),
            rdev: inode.rdev,
            blksize: MAX_IO,
            flags: 0,
        }
    }

    fn path(&self, ino: u64) -> Result<CairnPath, Errno> {
        self.inodes.lock().unwrap().path(ino).ok_or(libc::ENOENT)
    }

    /// `ino` was opened at `version`. If the kernel was last shown another
    /// version, its cached attributes (the size above all, which bounds
    /// its reads) are dropped: close-to-open holds for the size too, not
    /// only for the bytes.
    fn opened(&self, ino: u64, version: cairn_types::Version) {
        let stale = self.inodes.lock().unwrap().shown_version(ino) != Some(version.0);
        if stale {
            // Attributes only (no page was kept past open).
            self.attrs_changed(ino);
        }
    }

    /// A name that still leads to `ino`. A file with hard links may have
    /// lost the name the kernel last found it by (unlinked by another
    /// mount): its known names are tried, the latest first, and the dead
    /// ones forgotten. A file with one known name costs nothing extra.
    async fn live_path(&self, ino: u64) -> Result<CairnPath, Errno> {
        let paths = self.inodes.lock().unwrap().paths(ino);
        if paths.len() <= 1 {
            return paths.into_iter().next().ok_or(libc::ENOENT);
        }
        let real = self.real(ino);
        for p in &paths {
            match self.stat(p).await {
                Ok(i) if i.id.0 == real => return Ok(p.clone()),
                Ok(_) | Err(libc::ENOENT) | Err(libc::ENOTDIR) => {
                    self.inodes.lock().unwrap().unlinked_from(ino, p)
                }
                Err(e) => return Err(e),
            }
        }
        Err(libc::ENOENT)
    }

    /// The Cairn inode id behind the kernel's `ino`.
    fn real(&self, ino: u64) -> u64 {
        self.inodes.lock().unwrap().real(ino)
    }

    /// The cues of the access `ino` was reached by (none for plain paths).
    fn access_cues(&self, ino: u64) -> Cues {
        let access = self.inodes.lock().unwrap().access(ino);
        access.map(|a| a.cues).unwrap_or_default()
    }

    /// Where `name` in `parent` leads. A cue component (`.cue`, a cue list
    /// after it, `.lax`, `.RepLevel=2`) leads to the parent directory with
    /// more cues; a malformed or unknown cue in one is `EINVAL`.
    fn resolve(&self, parent: u64, name: &OsStr) -> Result<Resolved, Errno> {
        let name = check_name(name)?;
        if parent == ROOT_INO && name == SYSTEM_DIR {
            // Cairn's own bookkeeping (S3 keys): not part of the file system.
            return Err(libc::ENOENT);
        }
        let dir = self.path(parent)?;
        let access = self.inodes.lock().unwrap().access(parent);
        let cues = access.as_ref().map(|a| a.cues.clone()).unwrap_or_default();
        let bad_cue = |e: cairn_types::Error| {
            warn!(%dir, name, "{e}");
            libc::EINVAL
        };
        let component = |cues: Cues, cue_dir| Resolved {
            path: dir.clone(),
            cues: Some(cues),
            cue_dir,
            component: true,
        };
        if access.as_ref().is_some_and(|a| a.cue_dir) {
            let more = Cues::parse(name).map_err(bad_cue)?;
            return Ok(component(cues.merge(&more), false));
        }
        if name == CUE_DIR {
            return Ok(component(cues, true));
        }
        if let Some(more) = component_cues(name) {
            return Ok(component(cues.merge(&more.map_err(bad_cue)?), false));
        }
        Ok(Resolved {
            path: dir.join(name).map_err(|e| errno(&e))?,
            cues: access.map(|a| a.cues),
            cue_dir: false,
            component: false,
        })
    }

    /// The Cairn path `name` in `parent` names, for calls that make, remove
    /// or rename it: a cue component names no entry of its own (`EINVAL`).
    fn child(&self, parent: u64, name: &OsStr) -> Result<Resolved, Errno> {
        if parent == ROOT_INO && name == SYSTEM_DIR {
            return Err(libc::EACCES);
        }
        let r = self.resolve(parent, name)?;
        if r.component {
            return Err(libc::EINVAL);
        }
        Ok(r)
    }

    /// The kernel got `r` (Cairn inode `real`), named `name` in `parent`:
    /// the ino to give it.
    fn remember(&self, parent: u64, name: &str, r: &Resolved, real: u64) -> Result<u64, Errno> {
        let mut table = self.inodes.lock().unwrap();
        match &r.cues {
            None if table.remember(real, r.path.clone()) => Ok(real),
            None => {
                warn!(real, path = %r.path, "inode id equals a cued entry's ino; retry once the kernel forgets it");
                Err(libc::EIO)
            }
            Some(cues) => {
                let access = Access {
                    real,
                    cues: cues.clone(),
                    cue_dir: r.cue_dir,
                };
                Ok(table.remember_cued(parent, name, r.path.clone(), access))
            }
        }
    }

    fn writable(&self) -> Result<(), Errno> {
        if self.read_only {
            Err(libc::EROFS)
        } else {
            Ok(())
        }
    }

    fn add_handle(&self, h: OpenHandle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(fh, h);
        fh
    }

    fn staged_handle(&self, fh: u64) -> Result<Arc<Staged>, Errno> {
        match self.handles.lock().unwrap().get(&fh) {
            Some(OpenHandle::Staged(s)) => Ok(s.clone()),
            _ => Err(libc::EBADF),
        }
    }

    async fn stat(&self, path: &CairnPath) -> Result<Inode, Errno> {
        self.client.stat(path).await.map_err(|e| errno(&e))
    }

    /// Attributes of `ino`, with the staged size when this mount has it open
    /// for writing.
    async fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        self.atime_settled(ino).await;
        let staged = self.stages.peek(ino);
        if let Some(s) = staged.as_ref().filter(|s| s.is_dirty()) {
            // Being written here: the attributes this mount will commit
            // are the file's until then (another mount's chmod shows after
            // the close, as its bytes would).
            let size = s.len_now().map_err(|e| errno(&e))?;
            let mut inode = s.inode();
            if self.inodes.lock().unwrap().paths(ino).is_empty() && inode.nlink <= 1 {
                inode.nlink = 0; // unlinked here while open
            }
            return Ok(self.attr(ino, &inode, Some(size)));
        }
        let inode = self.inode(ino).await?;
        let size = staged.map(|s| s.len_now()).transpose();
        Ok(self.attr(ino, &inode, size.map_err(|e| errno(&e))?))
    }

    /// The size this mount has staged of `ino`, if it has it open for writing.
    fn staged_size(&self, ino: u64) -> Result<Option<u64>, Errno> {
        let staged = self.stages.peek(ino);
        staged
            .map(|s| s.len_now())
            .transpose()
            .map_err(|e| errno(&e))
    }

    /// The current record of `ino`: from meta while its name still leads to
    /// it, else what this mount has staged of it (open, unlinked).
    async fn inode(&self, ino: u64) -> Result<Inode, Errno> {
        let staged = self.stages.peek(ino);
        let real = self.real(ino);
        let inode = match self.live_path(ino).await {
            Ok(path) => match self.stat(&path).await {
                // The name now belongs to another file: this ino is gone.
                Ok(i) if i.id.0 != real => None,
                Ok(i) => Some(i),
                Err(libc::ENOENT) => None,
                Err(e) => return Err(e),
            },
            Err(_) => None,
        };
        let mut inode = match (inode, &staged) {
            (Some(i), _) => return Ok(i),
            (None, Some(s)) => s.inode(),
            (None, None) => match self.open_reader(real) {
                // Removed (here or elsewhere) while a program has it open.
                Some(r) => r.inode().clone(),
                None => match self.removed_dirs.lock().unwrap().get(&ino) {
                    Some(d) => return Ok(d.clone()),
                    None => return Err(libc::ENOENT),
                },
            },
        };
        // Its last name is gone: `fstat` shows no links, as on ext4 (a file
        // with other names this mount never saw keeps its last count).
        if inode.nlink <= 1 {
            inode.nlink = 0;
        }
        Ok(inode)
    }

    /// Stage `ino` for writing: copied from Cairn on first use unless
    /// `truncate`.
    async fn stage(
        &self,
        ino: u64,
        path: &CairnPath,
        truncate: bool,
    ) -> Result<Arc<Staged>, Errno> {
        let client = self.client.clone();
        let dir = self.stages.cache_dir.clone();
        let budget = self.stages.budget.clone();
        let p = path.clone();
        let cues = self.access_cues(ino);
        let (staged, fresh) = self
            .stages
            .acquire(ino, || async move {
                let reader = client.open_cued(&p, &cues).await?;
                let inode = reader.inode().clone();
                if inode.kind == InodeKind::Directory {
                    return Err(cairn_types::Error::is_dir(format!("{p} is a directory")));
                }
                let copy = (!truncate && inode.size > 0).then_some(reader);
                Staged::create(&dir, budget, ino, inode, copy).await
            })
            .await
            .map_err(|e| errno(&e))?;
        if truncate && (fresh || staged.len_now().map_err(|e| errno(&e))? > 0) {
            if let Err(e) = staged.set_len(0).await {
                self.stages.release(ino);
                return Err(errno(&e));
            }
        }
        Ok(staged)
    }

    async fn upload(&self, staged: &Staged) -> Result<(), Errno> {
        // Unlinked on this mount while open: nothing to write back to.
        let Ok(path) = self.live_path(staged.ino).await else {
            return Ok(());
        };
        let cues = self.access_cues(staged.ino);
        staged.upload(&self.client, &path, cues).await.map_err(|e| {
            warn!(%path, "writing back failed: {e}");
            errno(&e)
        })
    }

    /// Open `ino` for `uid`.
    async fn open(&self, ino: u64, flags: i32, uid: u32) -> Result<u64, Errno> {
        let path = self.live_path(ino).await?;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if write {
            self.writable()?;
            let truncate = flags & libc::O_TRUNC != 0;
            let staged = self.stage(ino, &path, truncate).await?;
            if truncate {
                self.kill_priv(ino, &staged, uid).await;
            }
            self.opened(ino, staged.inode().version);
            return Ok(self.add_handle(OpenHandle::Staged(staged)));
        }
        if let Some(staged) = self.stages.share(ino) {
            // This mount's unsaved writes are the file's content here.
            return Ok(self.add_handle(OpenHandle::Staged(staged)));
        }
        let cues = self.access_cues(ino);
        let reader = self
            .client
            .open_cued(&path, &cues)
            .await
            .map_err(|e| errno(&e))?;
        if reader.inode().kind == InodeKind::Directory {
            return Err(libc::EISDIR);
        }
        self.opened(ino, reader.inode().version);
        let due = self.atime_due(reader.inode());
        let fh = self.add_handle(OpenHandle::Reader(Arc::new(reader)));
        if due {
            self.atime_due.lock().unwrap().insert(fh);
        }
        Ok(fh)
    }

    /// Whether a read of `inode` now records its access time (`--atime`).
    fn atime_due(&self, inode: &Inode) -> bool {
        if self.read_only {
            return false;
        }
        match self.atime {
            crate::Atime::Off => false,
            crate::Atime::Relatime => inode.relatime_due(now_ns()),
            crate::Atime::Strict => true,
        }
    }

    /// `O_TRUNC` by `uid` of a staged file: as for a write, set-user-ID
    /// goes, and set-group-ID with group execute, unless root does it.
    /// The kernel does that for writes and truncates, not for opens
    /// (`FUSE_ATOMIC_O_TRUNC`): they are the file system's to do.
    async fn kill_priv(&self, ino: u64, staged: &Staged, uid: u32) {
        let mode = staged.inode().mode;
        let mut kept = mode & !0o4000;
        if mode & 0o2010 == 0o2010 {
            kept &= !0o2000;
        }
        if uid == 0 || kept == mode {
            return;
        }
        let changes = AttrChanges {
            mode: Some(kept),
            ..AttrChanges::default()
        };
        if let Err(e) = self.change_attrs(ino, changes).await {
            warn!(ino, "could not clear set-user/group-ID on truncation: {e}");
        }
    }

    /// The first read of handle `fh` of `ino`.
    fn read_through(self: &Arc<Self>, ino: u64, fh: u64) {
        if self.atime_due.lock().unwrap().remove(&fh) {
            self.record_access(ino);
        }
    }

    /// A listing of directory `ino` begins.
    fn dir_listed(self: &Arc<Self>, ino: u64) {
        if self.atime == crate::Atime::Off || self.read_only {
            return; // not even the stat
        }
        let s = self.clone();
        tokio::spawn(async move {
            if let Ok(inode) = s.inode(ino).await {
                if s.atime_due(&inode) {
                    s.record_access(ino);
                }
            }
        });
    }

    /// Record a read of `ino` now as its access time, in the background:
    /// a read does not wait for meta, a stat after it does.
    fn record_access(self: &Arc<Self>, ino: u64) {
        let changes = AttrChanges {
            atime_ns: Some(now_ns()),
            accessed: true,
            ..AttrChanges::default()
        };
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let Ok(held) = lock.clone().try_lock_owned() else {
            unreachable!("a new lock is free");
        };
        self.atime_pending.lock().unwrap().insert(ino, lock.clone());
        // The kernel asks again (and waits) instead of answering a stat
        // from the attributes it has.
        self.attrs_changed(ino);
        let s = self.clone();
        tokio::spawn(async move {
            if let Ok(path) = s.live_path(ino).await {
                let id = (ino != ROOT_INO).then_some(cairn_types::InodeId(s.real(ino)));
                if let Err(e) = s.client.set_attr(&path, id, changes).await {
                    // Read-only meta, the file replaced meanwhile: the read
                    // stands without its atime.
                    tracing::debug!(%path, "atime not recorded: {e}");
                }
            }
            drop(held);
            let mut pending = s.atime_pending.lock().unwrap();
            if pending.get(&ino).is_some_and(|l| Arc::ptr_eq(l, &lock)) {
                pending.remove(&ino);
            }
            drop(pending);
            // Attributes the kernel got meanwhile (a listing's) are old.
            s.attrs_changed(ino);
        });
    }

    /// Wait for an access time of `ino` being recorded.
    async fn atime_settled(&self, ino: u64) {
        let lock = self.atime_pending.lock().unwrap().get(&ino).cloned();
        if let Some(lock) = lock {
            let _ = lock.lock().await;
        }
    }

    /// A directory handle open on `ino`, if any.
    fn open_dir(&self, handles: &HashMap<u64, OpenHandle>, ino: u64) -> Option<u64> {
        handles.iter().find_map(|(fh, h)| match h {
            OpenHandle::Dir(c) if c.lock().unwrap().ino == ino => Some(*fh),
            _ => None,
        })
    }

    /// The ino of a directory open here whose path is `path`.
    fn open_dir_at(&self, path: &CairnPath) -> Option<u64> {
        let dirs: Vec<u64> = (self.handles.lock().unwrap().values())
            .filter_map(|h| match h {
                OpenHandle::Dir(c) => Some(c.lock().unwrap().ino),
                _ => None,
            })
            .collect();
        let inodes = self.inodes.lock().unwrap();
        dirs.into_iter()
            .find(|ino| inodes.path(*ino).as_ref() == Some(path))
    }

    /// Drop the kernel's cached attributes of `ino`.
    fn attrs_changed(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(ino, -1, 0) {
                warn!(ino, "could not invalidate the kernel's attributes: {e}");
            }
        }
    }

    async fn read(
        self: &Arc<Self>,
        ino: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        self.read_through(ino, fh);
        let h = match self.handles.lock().unwrap().get(&fh) {
            Some(OpenHandle::Reader(r)) => OpenHandle::Reader(r.clone()),
            Some(OpenHandle::Staged(s)) => OpenHandle::Staged(s.clone()),
            _ => return Err(libc::EBADF),
        };
        let r = match h {
            OpenHandle::Reader(r) => r.read_at_ahead(offset, size as u64).await,
            OpenHandle::Staged(s) => s.read_at(offset, size as usize).await,
            OpenHandle::Dir(_) => unreachable!(),
        };
        r.map_err(|e| errno(&e))
    }

    async fn create(
        &self,
        parent: u64,
        name: String,
        r: Resolved,
        mode: u32,
        flags: i32,
        owner: (u32, u32),
    ) -> Result<(FileAttr, u64), Errno> {
        self.writable()?;
        let path = r.path.clone();
        let made = self
            .client
            .make_node(
                &path,
                NewNode::File,
                mode & 0o7777,
                (Some(owner.0), Some(owner.1)),
            )
            .await;
        let (inode, fresh) = match made {
            Ok(i) => (i, true),
            // Created by someone else since the kernel's lookup.
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                if flags & libc::O_EXCL != 0 {
                    return Err(libc::EEXIST);
                }
                let i = self.stat(&path).await?;
                match i.kind {
                    InodeKind::File => {}
                    InodeKind::Directory => return Err(libc::EISDIR),
                    _ => return Err(libc::EEXIST),
                }
                (i, false)
            }
            Err(e) => return Err(errno(&e)),
        };
        let ino = self.remember(parent, &name, &r, inode.id.0)?;
        let staged = if fresh {
            // Empty and just made: nothing to read from Cairn.
            let dir = self.stages.cache_dir.clone();
            let budget = self.stages.budget.clone();
            let made = self
                .stages
                .acquire(ino, || {
                    Staged::create(&dir, budget, ino, inode.clone(), None)
                })
                .await;
            made.map(|(s, _)| {
                s.mark_dirty();
                s
            })
            .map_err(|e| errno(&e))
        } else {
            self.stage(ino, &path, flags & libc::O_TRUNC != 0).await
        };
        let staged = match staged {
            Ok(s) => s,
            Err(e) => {
                self.inodes.lock().unwrap().forget(ino, 1);
                return Err(e);
            }
        };
        if !fresh && flags & libc::O_TRUNC != 0 {
            self.kill_priv(ino, &staged, owner.0).await;
        }
        let size = staged.len_now().map_err(|e| errno(&e))?;
        let attr = self.attr(ino, &staged.inode(), Some(size));
        Ok((attr, self.add_handle(OpenHandle::Staged(staged))))
    }

    async fn truncate(&self, ino: u64, size: u64) -> Result<(), Errno> {
        self.writable()?;
        if let Some(staged) = self.stages.peek(ino) {
            // Written back with the handle's next flush.
            return staged.set_len(size).await.map_err(|e| errno(&e));
        }
        let path = self.live_path(ino).await?;
        let staged = self.stage(ino, &path, size == 0).await?;
        let r = async {
            staged.set_len(size).await.map_err(|e| errno(&e))?;
            self.upload(&staged).await
        }
        .await;
        self.stages.release(ino);
        r
    }

    /// The entries after `offset`: "." and ".." (offsets 1 and 2), then one
    /// page of the listing (offsets from 3 on).
    async fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: i64,
    ) -> Result<Vec<(u64, i64, FileType, String)>, Errno> {
        let items = self.dir_items(ino, fh, offset).await?;
        Ok(items
            .into_iter()
            .map(|(ino, off, name, inode)| {
                let kind = inode.map_or(FileType::Directory, |i| file_type(i.kind));
                (ino, off, kind, name)
            })
            .collect())
    }

    /// [`Self::readdir`] with each entry's attributes, which the kernel
    /// caches as a lookup's: `ls -l`, `find` and `rm -r` then cost no
    /// lookup per entry. Every entry handed over is a lookup reference.
    async fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: i64,
        reply: &mut fuser::ReplyDirectoryPlus,
    ) -> Result<(), Errno> {
        let items = self.dir_items(ino, fh, offset).await?;
        for (child, off, name, inode) in items {
            let Some(inode) = inode else {
                // "." and "..": the kernel takes no reference on them.
                if reply.add(child, off, &name, &self.ttl.entry, &dot_attr(child), 0) {
                    break;
                }
                continue;
            };
            let Ok(r) = self.resolve(ino, OsStr::new(&name)) else {
                continue;
            };
            let Ok(kino) = self.remember(ino, &name, &r, inode.id.0) else {
                continue;
            };
            let size = self.staged_size(kino)?;
            let attr = self.attr(kino, &inode, size);
            if reply.add(kino, off, &name, &self.ttl.entry, &attr, 0) {
                // No room: the kernel did not get it.
                self.inodes.lock().unwrap().forget(kino, 1);
                break;
            }
        }
        Ok(())
    }

    /// The entries after `offset` as (ino, offset, name, record): "." and
    /// ".." (no record), then one page of the listing.
    async fn dir_items(
        &self,
        ino: u64,
        fh: u64,
        offset: i64,
    ) -> Result<Vec<(u64, i64, String, Option<Inode>)>, Errno> {
        let cursor = match self.handles.lock().unwrap().get(&fh) {
            Some(OpenHandle::Dir(c)) => c.clone(),
            _ => return Err(libc::EBADF),
        };
        let path = self.path(ino)?;
        let cue_dir = self
            .inodes
            .lock()
            .unwrap()
            .access(ino)
            .is_some_and(|a| a.cue_dir);
        let mut out = Vec::new();
        if offset < 1 {
            out.push((ino, 1, ".".to_string(), None));
        }
        if offset < 2 {
            out.push((ino, 2, "..".to_string(), None));
        }
        let start_after = if offset <= 2 {
            None
        } else {
            let name = cursor.lock().unwrap().names.get(&offset).cloned();
            Some(name.ok_or(libc::EINVAL)?)
        };
        if cue_dir {
            // Any cue list is a name in it: there is nothing to list.
            return Ok(out);
        }
        let page = self
            .client
            .list_page(&path, start_after, DIR_PAGE)
            .await
            .map_err(|e| errno(&e))?;
        let mut names = HashMap::new();
        let mut next = offset.max(2);
        for entry in page {
            next += 1;
            let hidden = ino == ROOT_INO && entry.name == SYSTEM_DIR;
            if hidden || entry.name == CUE_DIR || component_cues(&entry.name).is_some() {
                // Made by hand in meta: its name is a cue component here.
                names.insert(next, entry.name);
                continue;
            }
            names.insert(next, entry.name.clone());
            out.push((entry.inode.id.0, next, entry.name, Some(entry.inode)));
        }
        cursor.lock().unwrap().names = names;
        Ok(out)
    }

    async fn rename(&self, src: CairnPath, dst: CairnPath, flags: u32) -> Result<(), Errno> {
        self.writable()?;
        if flags & RENAME_EXCHANGE != 0 {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(libc::EINVAL);
            }
            self.client
                .rename_exchange(&src, &dst)
                .await
                .map_err(|e| errno(&e))?;
            self.inodes.lock().unwrap().exchanged(&src, &dst);
            return Ok(());
        }
        let reading = self
            .handles
            .lock()
            .unwrap()
            .values()
            .any(|h| matches!(h, OpenHandle::Reader(_)));
        if reading && flags & RENAME_NOREPLACE == 0 {
            // A file the rename replaces goes like an unlinked one.
            if let Ok(old) = self.stat(&dst).await {
                if old.kind == InodeKind::File && old.nlink <= 1 {
                    self.keep_for_open_readers(old.id.0).await;
                }
            }
        }
        let renamed = if flags & RENAME_NOREPLACE != 0 {
            self.client.rename_noreplace(&src, &dst).await
        } else {
            self.client.rename(&src, &dst).await
        };
        renamed.map_err(|e| errno(&e))?;
        self.inodes.lock().unwrap().renamed(&src, &dst);
        Ok(())
    }

    /// Name the file at `src` also `name` in `parent` (resolved to `r`).
    async fn link(
        &self,
        src: &CairnPath,
        parent: u64,
        name: &str,
        r: Resolved,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let inode = self
            .client
            .link(src, &r.path)
            .await
            .map_err(|e| errno(&e))?;
        let ino = self.remember(parent, name, &r, inode.id.0)?;
        // This mount's unsaved writes are the file's size under every name.
        let size = self.staged_size(ino)?;
        Ok(self.attr(ino, &inode, size))
    }

    async fn statfs(&self) -> Result<(u64, u64), Errno> {
        let s = self.client.cluster_status().await.map_err(|e| errno(&e))?;
        // What a user can store: each byte takes `rep` copies.
        let rep = u64::from(self.client.cluster_config().default_rep.max(1));
        let total: u64 = s.nodes.iter().map(|n| n.stats.total).sum();
        let free: u64 = s.nodes.iter().map(|n| n.stats.free).sum();
        Ok((total / rep, free / rep))
    }
}

/// Answer a reply with a handler's result.
macro_rules! answer {
    ($r:expr, |$v:pat_param| $ok:expr, $reply:ident $(,)?) => {
        match $r {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    };
}

impl Filesystem for CairnFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), c_int> {
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        // O_TRUNC arrives with open (not as a separate truncate that would
        // commit an empty version first); lookups and readdirs in one
        // directory run in parallel; listings carry attributes
        // (readdirplus), where the kernel finds that worth it.
        // Locks are meta's (`fs::locks`), not the kernel's.
        let wanted = fuser::consts::FUSE_ATOMIC_O_TRUNC
            | fuser::consts::FUSE_PARALLEL_DIROPS
            | fuser::consts::FUSE_DO_READDIRPLUS
            | fuser::consts::FUSE_READDIRPLUS_AUTO
            | fuser::consts::FUSE_POSIX_LOCKS
            | fuser::consts::FUSE_FLOCK_LOCKS;
        if let Err(missing) = config.add_capabilities(wanted) {
            let _ = config.add_capabilities(wanted & !missing);
        }
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let r = match self.shared.resolve(parent, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let name = name.to_string_lossy().into_owned();
        self.spawn("lookup", |s| async move {
            let r = async {
                let inode = s.stat(&r.path).await?;
                if r.component && inode.kind != InodeKind::Directory {
                    return Err(libc::ENOTDIR);
                }
                let ino = s.remember(parent, &name, &r, inode.id.0)?;
                let size = s.staged_size(ino)?;
                Ok(s.attr(ino, &inode, size))
            }
            .await;
            match r {
                // A negative entry: the kernel need not ask again for a
                // while (`cp` looks a new name up twice before creating it);
                // a create here replaces it at once.
                Err(libc::ENOENT) if !s.ttl.negative.is_zero() => {
                    reply.entry(&s.ttl.negative, &dot_attr(0), 0)
                }
                r => answer!(r, |a| reply.entry(&s.ttl.entry, &a, 0), reply),
            }
        });
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        self.shared.inodes.lock().unwrap().forget(ino, nlookup);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        self.spawn("getattr", |s| async move {
            answer!(s.getattr(ino).await, |a| reply.attr(&s.ttl.attr, &a), reply);
        });
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // Who may change what (chown only by root, chmod and utimens by the
        // owner) the kernel has checked: the mount runs with
        // `default_permissions`. Times are kept to the nanosecond.
        let changes = AttrChanges {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            mtime_ns: mtime.map(time_to_ns),
            atime_ns: atime.map(time_to_ns),
            ..AttrChanges::default()
        };
        self.spawn("setattr", |s| async move {
            answer!(
                s.setattr(ino, size, changes).await,
                |a| reply.attr(&s.ttl.attr, &a),
                reply
            );
        });
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(req, parent, name, NewNode::Directory, mode & !umask, reply);
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        // FIFOs and sockets are names with attributes here: the kernel
        // serves their opens locally. Device nodes only for root, as on ext4.
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG => {
                return self.make(req, parent, name, NewNode::File, mode & !umask, reply);
            }
            libc::S_IFIFO => InodeKind::Fifo,
            libc::S_IFSOCK => InodeKind::Socket,
            libc::S_IFCHR | libc::S_IFBLK if req.uid() != 0 => return reply.error(libc::EPERM),
            libc::S_IFCHR => InodeKind::CharDevice,
            libc::S_IFBLK => InodeKind::BlockDevice,
            _ => return reply.error(libc::EINVAL),
        };
        let node = NewNode::Special { kind, rdev };
        self.make(req, parent, name, node, mode & !umask, reply);
    }

    fn symlink(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str();
        if target.len() > MAX_TARGET_LEN {
            return reply.error(libc::ENAMETOOLONG);
        }
        let Some(target) = target.to_str() else {
            return reply.error(libc::EINVAL);
        };
        let node = NewNode::Symlink {
            target: target.to_string(),
        };
        self.make(req, parent, link_name, node, 0o777, reply);
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        self.spawn("readlink", |s| async move {
            answer!(s.readlink(ino).await, |t| reply.data(&t), reply);
        });
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let paths = self
            .shared
            .path(ino)
            .and_then(|src| Ok((src, self.shared.child(newparent, newname)?)));
        let (src, r) = match paths {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let name = newname.to_string_lossy().into_owned();
        self.spawn("link", |s| async move {
            answer!(
                s.link(&src, newparent, &name, r).await,
                |a| reply.entry(&s.ttl.entry, &a, 0),
                reply
            );
        });
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if name == xattr::CUES {
            let value = value.to_vec();
            return self.spawn("setxattr", |s| async move {
                answer!(s.set_cues(ino, Some(&value)).await, |()| reply.ok(), reply);
            });
        }
        let op = xattr::key(name, true).and_then(|name| {
            if position != 0 {
                return Err(libc::EINVAL);
            }
            Ok(XattrOp::Set {
                name,
                value: value.to_vec(),
                when: xattr::when(flags)?,
            })
        });
        self.change_xattr(ino, op, reply);
    }

    fn removexattr(&mut self, _req: &Request<'_>, ino: u64, name: &OsStr, reply: ReplyEmpty) {
        if name == xattr::CUES {
            return self.spawn("removexattr", |s| async move {
                answer!(s.set_cues(ino, None).await, |()| reply.ok(), reply);
            });
        }
        let op = xattr::key(name, false).map(|name| XattrOp::Remove { name });
        self.change_xattr(ino, op, reply);
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        let key = match xattr::key(name, false) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        self.spawn("getxattr", |s| async move {
            let r = s.getxattr(ino, &key).await;
            reply_xattr(r, size, reply);
        });
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        self.spawn("listxattr", |s| async move {
            reply_xattr(s.listxattr(ino).await, size, reply);
        });
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, true, reply);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        let paths = self
            .shared
            .child(parent, name)
            .and_then(|src| Ok((src.path, self.shared.child(newparent, newname)?.path)));
        let (src, dst) = match paths {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        self.spawn("rename", |s| async move {
            answer!(s.rename(src, dst, flags).await, |()| reply.ok(), reply);
        });
    }

    fn open(&mut self, req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let uid = req.uid();
        self.spawn("open", |s| async move {
            // No FOPEN_KEEP_CACHE: the kernel drops its cached pages on every
            // open, which is what makes close-to-open hold across mounts.
            answer!(
                s.open(ino, flags, uid).await,
                |fh| reply.opened(fh, 0),
                reply
            );
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        self.spawn("read", |s| async move {
            let r = s.read(ino, fh, offset.max(0) as u64, size).await;
            answer!(r, |d| reply.data(&d), reply);
        });
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let staged = match self.shared.staged_handle(fh) {
            Ok(s) => s,
            Err(e) => return reply.error(e),
        };
        if data.len() <= crate::staging::INLINE_IO && flags & libc::O_APPEND == 0 {
            // A page-cache copy: answered here, without a hand-off to the
            // runtime and back.
            let r = staged.write_now(data, offset.max(0) as u64);
            return answer!(r.map_err(|e| errno(&e)), |n| reply.written(n as u32), reply);
        }
        let data = data.to_vec();
        self.spawn("write", |_| async move {
            let r = async {
                // O_APPEND: at the end of the file as this mount has it,
                // whatever size the kernel last cached (another mount may
                // have grown it since). The kernel holds the inode lock
                // across a write, so appends here do not interleave.
                let offset = if flags & libc::O_APPEND != 0 {
                    staged.len_now()?
                } else {
                    offset.max(0) as u64
                };
                staged.write_at(data, offset).await
            }
            .await;
            answer!(r.map_err(|e| errno(&e)), |n| reply.written(n as u32), reply);
        });
    }

    fn flush(&mut self, _req: &Request<'_>, ino: u64, fh: u64, lock_owner: u64, reply: ReplyEmpty) {
        // A close by the process: its POSIX locks on the file go.
        let Some(gave_up) = self.shared.lock_owner_closed(ino, lock_owner) else {
            if self.shared.writeback.is_some() {
                // Uploaded after the last close (release), in order.
                return reply.ok();
            }
            return self.sync(fh, reply);
        };
        let staged = match self.shared.handles.lock().unwrap().get(&fh) {
            Some(OpenHandle::Staged(s)) => Some(s.clone()),
            _ => None,
        };
        self.spawn("flush", |s| async move {
            let r = match &staged {
                Some(st) => s.upload(st).await,
                None => Ok(()),
            };
            s.release_lock_owner(ino, lock_owner, gave_up).await;
            answer!(r, |()| reply.ok(), reply);
        });
    }

    fn getlk(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let kind = match locks::lock_kind(typ) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        self.spawn("getlk", |s| async move {
            let r = s.get_lock(ino, lock_owner, kind, start, end).await;
            answer!(
                r,
                |(start, end, typ, pid)| reply.locked(start, end, typ, pid),
                reply
            );
        });
    }

    fn setlk(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        lock_owner: u64,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let kind = match locks::lock_kind(typ) {
            Ok(k) => k,
            Err(e) => return reply.error(e),
        };
        let s = self.shared.clone();
        let task = self.rt.spawn(async move {
            let r = if sleep {
                s.set_lock_wait(ino, lock_owner, kind, start, end, pid)
                    .await
            } else {
                s.set_lock(ino, lock_owner, kind, start, end, pid, false)
                    .await
            };
            answer!(r, |()| reply.ok(), reply);
        });
        if sleep {
            self.shared
                .locks
                .add_wait(ino, lock_owner, task.abort_handle());
        }
    }

    fn destroy(&mut self) {
        if let Some(queue) = self.shared.writeback.clone() {
            // Unmounted: files still to upload are uploaded first.
            let (tx, rx) = std::sync::mpsc::channel();
            self.rt.spawn(async move {
                let _ = queue.send(Job::Drain(tx)).await;
            });
            if rx.recv_timeout(WRITEBACK_DRAIN).is_err() {
                tracing::error!("unmounted with files still to upload after {WRITEBACK_DRAIN:?}; their last writes are lost");
            }
        }
        // Unmounted: every lock this mount holds goes now, not at the
        // end of its lease.
        let s = self.shared.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.rt.spawn(async move {
            let _ = s.locks.session.end().await;
            let _ = tx.send(());
        });
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(fh, reply);
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = self.shared.handles.lock().unwrap().remove(&fh);
        self.shared.atime_due.lock().unwrap().remove(&fh);
        // The last close of an open file that took a `flock`: it goes.
        let flock = lock_owner.and_then(|o| Some((o, self.shared.lock_owner_closed(ino, o)?)));
        if let Some((owner, gave_up)) = flock {
            return self.spawn("release", |s| async move {
                let r = match h {
                    Some(OpenHandle::Staged(staged)) => {
                        let r = s.upload(&staged).await;
                        let staged_ino = staged.ino;
                        drop(staged);
                        s.stages.release(staged_ino);
                        r
                    }
                    _ => Ok(()),
                };
                s.release_lock_owner(ino, owner, gave_up).await;
                answer!(r, |()| reply.ok(), reply);
            });
        }
        let Some(OpenHandle::Staged(staged)) = h else {
            return reply.ok();
        };
        if let Some(queue) = self.shared.writeback.clone() {
            if staged.is_dirty() {
                // Queued; the staged copy goes once uploaded.
                return self.spawn("release", |_| async move {
                    match queue.send(Job::Upload(staged)).await {
                        Ok(()) => reply.ok(),
                        Err(_) => reply.error(libc::EIO),
                    }
                });
            }
        }
        self.spawn("release", |s| async move {
            let r = s.upload(&staged).await;
            // The staged file's own ino: a reader of a removed file may
            // have been moved to a copy staged under the Cairn inode id.
            let staged_ino = staged.ino;
            drop(staged);
            s.stages.release(staged_ino);
            answer!(r, |()| reply.ok(), reply);
        });
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let cursor = DirCursor {
            ino,
            names: HashMap::new(),
        };
        let fh = self
            .shared
            .add_handle(OpenHandle::Dir(Arc::new(Mutex::new(cursor))));
        reply.opened(fh, 0);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn("readdir", |s| async move {
            if offset == 0 {
                s.dir_listed(ino);
            }
            match s.readdir(ino, fh, offset).await {
                Ok(entries) => {
                    for (child, off, kind, name) in entries {
                        if reply.add(child, off, kind, name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        self.spawn("readdirplus", |s| async move {
            if offset == 0 {
                s.dir_listed(ino);
            }
            match s.readdirplus(ino, fh, offset, &mut reply).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        let mut handles = self.shared.handles.lock().unwrap();
        handles.remove(&fh);
        if self.shared.open_dir(&handles, ino).is_none() {
            self.shared.removed_dirs.lock().unwrap().remove(&ino);
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        self.spawn("statfs", |s| async move {
            const BSIZE: u64 = 4096;
            answer!(
                s.statfs().await,
                |(total, free)| {
                    let (blocks, bfree) = (total / BSIZE, free / BSIZE);
                    reply.statfs(
                        blocks,
                        bfree,
                        bfree,
                        u64::MAX / 2,
                        u64::MAX / 2,
                        BSIZE as u32,
                        255,
                        BSIZE as u32,
                    )
                },
                reply,
            );
        });
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = match self.shared.child(parent, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let name = name.to_string_lossy().into_owned();
        let owner = (req.uid(), req.gid());
        self.spawn("create", |s| async move {
            answer!(
                s.create(parent, name, r, mode & !umask, flags, owner).await,
                |(attr, fh)| reply.created(&s.ttl.entry, &attr, 0, fh, 0),
                reply,
            );
        });
    }
}

impl CairnFs {
    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let path = match self.shared.child(parent, name) {
            Ok(r) => r.path,
            Err(e) => return reply.error(e),
        };
        self.spawn("remove", |s| async move {
            let r = async {
                s.writable()?;
                let reading = s
                    .handles
                    .lock()
                    .unwrap()
                    .values()
                    .any(|h| matches!(h, OpenHandle::Reader(_)));
                if reading {
                    // A program reading the file keeps its bytes (the stat
                    // says which file that is), as with a local file.
                    let inode = s.stat(&path).await?;
                    if inode.kind == InodeKind::File && inode.nlink <= 1 {
                        s.keep_for_open_readers(inode.id.0).await;
                    }
                }
                // A directory open here keeps its attributes for `fstat`.
                let open_dir = dir.then(|| s.open_dir_at(&path)).flatten();
                let kept = match open_dir {
                    Some(ino) => Some((ino, s.stat(&path).await?)),
                    None => None,
                };
                // One request: meta checks the kind as it removes.
                s.client.unlink(&path, dir).await.map_err(|e| errno(&e))?;
                s.inodes.lock().unwrap().unlinked(&path);
                if let Some((ino, mut inode)) = kept {
                    inode.nlink = 0;
                    s.removed_dirs.lock().unwrap().insert(ino, inode);
                }
                Ok(())
            }
            .await;
            answer!(r, |()| reply.ok(), reply);
        });
    }

    fn make(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        node: NewNode,
        mode: u32,
        reply: ReplyEntry,
    ) {
        let r = match self.shared.child(parent, name) {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let name = name.to_string_lossy().into_owned();
        let owner = (req.uid(), req.gid());
        self.spawn("make", |s| async move {
            answer!(
                s.make(parent, &name, r, node, mode, owner).await,
                |a| reply.entry(&s.ttl.entry, &a, 0),
                reply
            );
        });
    }

    fn change_xattr(&mut self, ino: u64, op: Result<XattrOp, Errno>, reply: ReplyEmpty) {
        let op = match op.and_then(|op| self.shared.writable().map(|()| op)) {
            Ok(op) => op,
            Err(e) => return reply.error(e),
        };
        let changes = AttrChanges {
            xattrs: vec![op],
            ..AttrChanges::default()
        };
        self.spawn("change_xattr", |s| async move {
            answer!(s.change_attrs(ino, changes).await, |_| reply.ok(), reply);
        });
    }

    fn sync(&mut self, fh: u64, reply: ReplyEmpty) {
        let staged = match self.shared.handles.lock().unwrap().get(&fh) {
            Some(OpenHandle::Staged(s)) => s.clone(),
            _ => return reply.ok(),
        };
        self.spawn("sync", |s| async move {
            answer!(s.upload(&staged).await, |()| reply.ok(), reply);
        });
    }
}

fn reply_xattr(r: Result<Vec<u8>, Errno>, size: u32, reply: ReplyXattr) {
    let data = match r {
        Ok(d) => d,
        Err(e) => return reply.error(e),
    };
    match xattr::fit(data.len(), size) {
        Ok(xattr::Fit::Size(n)) => reply.size(n),
        Ok(xattr::Fit::Data) => reply.data(&data),
        Err(e) => reply.error(e),
    }
}
