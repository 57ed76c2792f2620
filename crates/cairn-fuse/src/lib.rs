//! `cairn mount`: the Cairn namespace as a POSIX file system through FUSE.
//!
//! Owns the translation from kernel requests to [`cairn_client::Client`]
//! calls, the ino ↔ path table, the local staging of files open for writing,
//! and the mapping of error kinds to errno (nowhere else). Does not own
//! reading or writing file bytes from storage nodes (the client does) nor
//! any policy. Called by `cairn mount` in cairn-cli and by tests.
//!
//! Read first: [`mount`], then `fs.rs` (the handlers), `staging.rs`.
//!
//! Consistency is close-to-open: a file written through the mount becomes a
//! new Cairn version when it is flushed (every close), fsynced or released,
//! and an open anywhere after that sees it. Until then the writes live only
//! in the local cache file: if this process dies, unflushed writes are lost,
//! never half-applied (a version is committed whole or not at all).
//! Attributes and entries are cached by the kernel for one second.
//!
//! Mode, owner, mtime and `user.*` extended attributes live in meta and
//! change in one transaction each (`SetAttr`); files, directories and
//! symlinks are created with their owner and mode in one (`MakeNode`). The
//! kernel checks permissions (`default_permissions`) against what getattr
//! reports.
//!
//! Not in this cut: hard links (`EPERM`: a name is a file's only record in
//! Cairn).

mod error;
mod fs;
mod inode_table;
mod staging;
mod xattr;

pub use error::{errno, MountError};
pub use fs::CacheTimes;

use cairn_client::Client;
use fuser::{BackgroundSession, MountOption};
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Where files open for writing are staged.
    pub cache_dir: PathBuf,
    /// Cap on the bytes staged there at once (None: the disk's free space).
    pub cache_size: Option<u64>,
    pub read_only: bool,
    /// Let other users than the mounting one use the mount (needs
    /// `user_allow_other` in /etc/fuse.conf unless root).
    pub allow_other: bool,
    /// How long this mount's `flock`/`fcntl` locks outlive it if it dies
    /// or is cut off from meta (it keeps them alive while it runs).
    pub lock_lease: std::time::Duration,
    /// Write-back: a close returns once the file is staged on this
    /// machine's disk, and uploads follow in the background in close order
    /// (`fsync` still waits for its file). A crash of this mount loses the
    /// files closed but not yet uploaded; other mounts see a file only
    /// once it is uploaded (its name at once, empty until then).
    pub writeback: bool,
    /// How long the kernel caches names, attributes and missing names.
    pub cache_times: CacheTimes,
    /// Which reads record an access time.
    pub atime: Atime,
    /// Device nodes in the mount open as the devices they name (mount
    /// option `dev`). Off by default (`nodev`): any client with the
    /// cluster's key can make device nodes, and this machine's devices
    /// are not theirs to hand out.
    pub devices: bool,
}

/// Which reads of a file record its access time (`--atime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Atime {
    /// None (`noatime`): reads never write to meta.
    Off,
    /// The first read after a change, or a day after the last recorded
    /// one (Linux's default, `relatime`): what `mutt` and `tmpwatch`
    /// need, at one meta write per file per change.
    #[default]
    Relatime,
    /// The first read of every open (`strictatime`; reads within one open
    /// do not each write).
    Strict,
}

/// A live mount; dropping it unmounts.
pub struct Mount {
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Mount `client`'s namespace on `mountpoint`. Requests run on `rt`.
pub fn mount(
    client: Client,
    rt: Handle,
    mountpoint: &Path,
    opts: MountOptions,
) -> Result<Mount, MountError> {
    std::fs::create_dir_all(&opts.cache_dir).map_err(|source| MountError::CacheDir {
        path: opts.cache_dir.clone(),
        source,
    })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let notifier = std::sync::Arc::new(std::sync::OnceLock::new());
    let fs = fs::CairnFs::new(client, rt, &opts, tx, notifier.clone());
    let mut options = vec![
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
        MountOption::DefaultPermissions,
        MountOption::CUSTOM(format!("max_read={}", fs::MAX_IO)),
    ];
    options.push(if opts.read_only {
        MountOption::RO
    } else {
        MountOption::RW
    });
    if opts.devices {
        options.push(MountOption::Dev);
    }
    if opts.atime == Atime::Off {
        options.push(MountOption::NoAtime);
    }
    if opts.allow_other {
        options.push(MountOption::AllowOther);
    }
    let session =
        fuser::spawn_mount2(fs, mountpoint, &options).map_err(|source| MountError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    let _ = notifier.set(session.notifier());
    Ok(Mount {
        mountpoint: mountpoint.to_path_buf(),
        session: Some(session),
        ended: Some(rx),
    })
}

impl Mount {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Resolves when the kernel ends the session (`fusermount3 -u`, `umount`).
    pub async fn ended(&mut self) {
        if let Some(rx) = self.ended.as_mut() {
            let _ = rx.await;
            self.ended = None;
        }
    }

    /// Unmount now. A busy mount point is detached lazily (`fusermount3 -u
    /// -z`): it disappears once the last program inside leaves.
    pub fn unmount(mut self) {
        self.unmount_inner();
    }

    fn unmount_inner(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        drop(session);
        if is_mounted(&self.mountpoint) {
            let _ = std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.unmount_inner();
    }
}

fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(canon) = mountpoint.canonicalize() else {
        return false;
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = canon.to_string_lossy().replace(' ', "\\040");
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want.as_str()))
}
