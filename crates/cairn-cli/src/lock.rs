//! `cairn lock PATH -- COMMAND`: run a command while holding an advisory
//! lock on a Cairn file, in the same table as every mount's `flock` and
//! `fcntl` locks, so scripts on machines without the mount take part
//! (as flock(1) does for local files).

use crate::commands::{connect, path};
use crate::Target;
use anyhow::{bail, Context, Result};
use cairn_client::PutOptions;
use cairn_proto::{LockAnswer, LockKind};
use cairn_types::{ErrorKind, Version};

#[derive(clap::Args)]
pub struct LockArgs {
    /// The file to lock (made, empty, if missing)
    path: String,
    /// A shared (reader) lock instead of an exclusive one
    #[arg(short, long)]
    shared: bool,
    /// Fail at once (exit 1) if another holder has it, instead of waiting
    #[arg(short, long)]
    nonblock: bool,
    /// How long the lock outlives this process if it dies or loses meta
    #[arg(long, default_value = "5s")]
    lease: String,
    /// The command to run while holding the lock
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    target: Target,
}

pub async fn run(a: LockArgs) -> Result<i32> {
    let lease = cairn_types::parse_duration(&a.lease).context("--lease")?;
    let c = connect(&a.target).await?;
    let p = path(&a.path)?;
    // Like flock(1), a missing file is made.
    let create = PutOptions {
        expected: Some(Version(0)),
        ..Default::default()
    };
    match c.put(&p, tokio::io::empty(), create).await {
        Ok(_) => {}
        Err(e) if matches!(e.kind, ErrorKind::AlreadyExists | ErrorKind::Conflict) => {}
        Err(e) => return Err(e.into()),
    }
    let session = c.lock_session(lease);
    let kind = if a.shared {
        LockKind::Shared
    } else {
        LockKind::Exclusive
    };
    let owner = std::process::id() as u64;
    let pid = std::process::id();
    match session
        .lock(&p, owner, kind, 0, u64::MAX, pid, !a.nonblock)
        .await?
    {
        LockAnswer::Granted => {}
        LockAnswer::Conflict(h) => {
            eprintln!(
                "cairn: {p} is locked ({:?}) by another holder (pid {} on its machine)",
                h.kind, h.pid
            );
            return Ok(1);
        }
        other => bail!("could not lock {p}: {other:?}"),
    }
    let command = a.command.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&command[0])
            .args(&command[1..])
            .status()
            .with_context(|| format!("running {}", command[0]))
    })
    .await?;
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = session.end().await;
            return Err(e);
        }
    };
    let lapsed = session.lapsed_count() > 0;
    session.end().await.context("releasing the lock")?;
    if lapsed {
        bail!("the lock on {p} lapsed while the command ran (meta was unreachable for longer than --lease): another holder may have had it");
    }
    Ok(status.code().unwrap_or(128 + 9))
}
