//! `cairn mount`: the FUSE mount, in the background by default.
//!
//! Daemon mode re-runs this binary with `--foreground` in a new session
//! (stdin and stdout detached, stderr to a log file) rather than forking:
//! the tokio runtime is already running, and forking a multi-threaded
//! process is unsound. The parent waits for the child's "mounted on" line,
//! so it exits 0 only once the mount is live, and with the child's error
//! otherwise.

use crate::{commands, Target};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Set in the daemon's environment, with the parent's pid as the value.
const DAEMON_ENV: &str = "CAIRN_MOUNT_DAEMON";
/// What the mount prints on stdout once it is live; scripts and the
/// daemon's parent wait for it.
const READY: &str = "cairn: mounted on";

#[derive(clap::Args)]
pub struct MountArgs {
    /// An existing, empty directory
    mountpoint: PathBuf,
    /// Where files open for writing are staged [default: /var/tmp/cairn-mount]
    #[arg(long, env = "CAIRN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Cap on the bytes staged in the cache directory at once (e.g. 10GiB);
    /// writes past it fail with ENOSPC until files are closed [default: no cap]
    #[arg(long, env = "CAIRN_CACHE_SIZE")]
    cache_size: Option<String>,
    /// Bytes of file data kept on disk in CACHE_DIR/chunks for reads (chunks
    /// never change, so this cache is never stale and survives remounts;
    /// 0: none). Memory holds another 64 MiB.
    #[arg(long, default_value = "1GiB")]
    read_cache: String,
    /// Stay attached to the terminal instead of running in the background
    #[arg(long)]
    foreground: bool,
    /// The background mount's log (stderr) [default: CACHE_DIR/mount.log]
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Let other users use the mount
    #[arg(long)]
    allow_other: bool,
    /// Read-only mount
    #[arg(long)]
    ro: bool,
    /// How long this mount's flock/fcntl locks outlive it if it dies or
    /// loses meta (other machines wait that long for a dead holder's locks)
    #[arg(long, default_value = "5s")]
    lock_lease: String,
    /// Write-back: close returns once the file is staged on this machine's
    /// disk and uploads follow in the background, in close order; fsync
    /// still waits for its file, unmount for all. Risk: if this mount dies
    /// (crash, SIGKILL, power loss), files closed but not yet uploaded are
    /// lost, and other mounts see a new file empty until it is uploaded. Default:
    /// durable on close
    #[arg(long)]
    writeback: bool,
    /// How long the kernel keeps a name (and the attributes found with it)
    /// before asking again: longer is fewer round trips, but another
    /// mount's rename, remove or create shows only after it
    /// [default: 1s; 0s with --consistency strict]
    #[arg(long)]
    entry_timeout: Option<String>,
    /// How long the kernel keeps attributes (size, mtime, mode) fetched on
    /// their own: another mount's chmod or a size it wrote shows after it
    /// (an open always checks the version)
    /// [default: 1s; 0s with --consistency strict]
    #[arg(long)]
    attr_timeout: Option<String>,
    /// How long a name found missing stays missing for this kernel: another
    /// mount's new file shows after it (this mount's own creates at once;
    /// 0s: ask every time)
    /// [default: 1s; 0s with --consistency strict]
    #[arg(long)]
    negative_timeout: Option<String>,
    /// `strict`: cache no names or attributes at all (every stat and
    /// lookup asks meta), for files that several hosts change while others
    /// have them open; costs a round trip per call. Explicit timeouts win
    /// over it
    #[arg(long, value_parser = ["close-to-open", "strict"], default_value = "close-to-open")]
    consistency: String,
    /// Which reads record a file's access time: `relatime` (the first read
    /// after a change, or a day on; Linux's default), `strict` (the first
    /// read of every open), `off` (none: reads never write to meta)
    #[arg(long, value_parser = ["relatime", "strict", "off"], default_value = "relatime")]
    atime: String,
    /// Let device nodes in the mount open as the devices they name (as
    /// on a local disk). Off by default: any client holding the cluster's
    /// key can make device nodes, and they would reach this machine's
    /// devices
    #[arg(long)]
    dev: bool,
    /// Serve Prometheus metrics of this mount (kernel requests by
    /// operation, client cache lookups) at http://ADDR/metrics, to holders
    /// of the client key ("off": none)
    #[arg(long, default_value = "off", env = "CAIRN_METRICS_LISTEN")]
    metrics_listen: String,
    #[command(flatten)]
    target: Target,
}

impl MountArgs {
    fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/tmp/cairn-mount"))
    }
}

pub async fn run(a: MountArgs) -> Result<()> {
    let cache_size = a
        .cache_size
        .as_deref()
        .map(cairn_types::parse_size)
        .transpose()
        .context("--cache-size")?;
    if !a.foreground {
        return tokio::task::spawn_blocking(move || daemonize(&a)).await?;
    }
    let read_cache = cairn_types::parse_size(&a.read_cache).context("--read-cache")?;
    let lock_lease = cairn_types::parse_duration(&a.lock_lease).context("--lock-lease")?;
    let chunks_dir = a.cache_dir().join("chunks");
    let client = commands::connect_with(&a.target, |c| {
        if read_cache > 0 {
            c.disk_cache = Some((chunks_dir, read_cache));
        }
    })
    .await?;
    let base = match a.consistency.as_str() {
        "strict" => cairn_fuse::CacheTimes::NONE,
        _ => cairn_fuse::CacheTimes::DEFAULT,
    };
    let timeout = |given: &Option<String>, flag: &str, default| -> Result<_> {
        match given {
            Some(g) => cairn_types::parse_duration(g).with_context(|| format!("--{flag}")),
            None => Ok(default),
        }
    };
    let cache_times = cairn_fuse::CacheTimes {
        entry: timeout(&a.entry_timeout, "entry-timeout", base.entry)?,
        attr: timeout(&a.attr_timeout, "attr-timeout", base.attr)?,
        negative: timeout(&a.negative_timeout, "negative-timeout", base.negative)?,
    };
    let opts = cairn_fuse::MountOptions {
        cache_dir: a.cache_dir(),
        cache_size,
        read_only: a.ro,
        allow_other: a.allow_other,
        lock_lease,
        writeback: a.writeback,
        cache_times,
        atime: match a.atime.as_str() {
            "off" => cairn_fuse::Atime::Off,
            "strict" => cairn_fuse::Atime::Strict,
            _ => cairn_fuse::Atime::Relatime,
        },
        devices: a.dev,
    };
    let mountpoint = a.mountpoint.clone();
    let rt = tokio::runtime::Handle::current();
    let mut mount =
        tokio::task::spawn_blocking(move || cairn_fuse::mount(client, rt, &mountpoint, opts))
            .await?
            .with_context(|| format!("cannot mount on {}", a.mountpoint.display()))?;
    tracing::info!(mountpoint = %a.mountpoint.display(), "mounted");
    let (_, creds) = crate::config::resolve(a.target.meta.clone(), a.target.secret_file.clone())?;
    let metrics = crate::roles::start_http(&a.metrics_listen, &creds, None)
        .await?
        .map(|h| format!(", metrics {}", h.metrics))
        .unwrap_or_default();
    // On stdout, like the server's banner: scripts wait for this line.
    println!(
        "{READY} {} (pid {}{metrics})",
        a.mountpoint.display(),
        std::process::id()
    );
    crate::roles::ready()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hup.recv(), if std::env::var_os(DAEMON_ENV).is_none() => {}
        _ = mount.ended() => {
            eprintln!("cairn: unmounted");
            return Ok(());
        }
    }
    tokio::task::spawn_blocking(move || mount.unmount()).await?;
    eprintln!("cairn: unmounted");
    Ok(())
}

/// Start the mount as a detached child and return once it is live.
fn daemonize(a: &MountArgs) -> Result<()> {
    let cache_dir = a.cache_dir();
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create cache directory {}", cache_dir.display()))?;
    let log_path = a
        .log_file
        .clone()
        .unwrap_or_else(|| cache_dir.join("mount.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open log file {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the cairn binary to run")?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env(DAEMON_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background mount")?;
    let out = child.stdout.take().expect("piped");
    for line in BufReader::new(out).lines() {
        let line = line.context("reading the background mount's output")?;
        if line.starts_with(READY) {
            println!("{line}");
            eprintln!(
                "cairn: running in the background; log in {}",
                log_path.display()
            );
            return Ok(());
        }
    }
    // Its stdout closed before the mount was live: it failed.
    let status = child.wait()?;
    let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
    let last = tail
        .lines()
        .rev()
        .find(|l| l.contains("error"))
        .unwrap_or("see the log");
    bail!(
        "the background mount exited ({status}) before mounting: {last} (log: {})",
        log_path.display()
    )
}
