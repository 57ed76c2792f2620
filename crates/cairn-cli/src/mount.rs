//! `cairn mount`: the FUSE mount in the foreground until Ctrl-C, SIGTERM or
//! `fusermount3 -u`.

use crate::{commands, Target};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct MountArgs {
    /// An existing, empty directory
    mountpoint: PathBuf,
    /// Where files open for writing are staged [default: /var/tmp/cairn-mount]
    #[arg(long, env = "CAIRN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Stay in the foreground (the only mode for now)
    #[arg(long)]
    foreground: bool,
    /// Let other users use the mount
    #[arg(long)]
    allow_other: bool,
    /// Read-only mount
    #[arg(long)]
    ro: bool,
    #[command(flatten)]
    target: Target,
}

pub async fn run(a: MountArgs) -> Result<()> {
    let client = commands::connect(&a.target).await?;
    let opts = cairn_fuse::MountOptions {
        cache_dir: a
            .cache_dir
            .unwrap_or_else(|| PathBuf::from("/var/tmp/cairn-mount")),
        read_only: a.ro,
        allow_other: a.allow_other,
    };
    let mountpoint = a.mountpoint.clone();
    let rt = tokio::runtime::Handle::current();
    let mut mount =
        tokio::task::spawn_blocking(move || cairn_fuse::mount(client, rt, &mountpoint, opts))
            .await?
            .with_context(|| format!("cannot mount on {}", a.mountpoint.display()))?;
    tracing::info!(mountpoint = %a.mountpoint.display(), "mounted");
    // On stdout, like the server's banner: scripts wait for this line.
    println!("cairn: mounted on {}", a.mountpoint.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = mount.ended() => {
            eprintln!("cairn: unmounted");
            return Ok(());
        }
    }
    tokio::task::spawn_blocking(move || mount.unmount()).await?;
    eprintln!("cairn: unmounted");
    Ok(())
}
