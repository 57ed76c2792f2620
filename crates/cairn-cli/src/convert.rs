//! `cairn convert`: rewrite files in the redundancy their directory asks
//! for now (`ec=K+M` or `rep=N`), as new versions.
//!
//! Redundancy is fixed on a file when it is written; changing a
//! directory's cue changes what is written below it next. This brings
//! files already there into line: each is streamed through the client
//! (bounded memory) into a new version with the directory's redundancy,
//! committed only if the file is still the version read, so a writer
//! racing the conversion wins and nothing is lost. The old chunks are
//! collected as any replaced version's are.

use crate::commands::{self, path};
use crate::Target;
use anyhow::Result;
use cairn_client::{Client, PutOptions};
use cairn_types::{CairnPath, ErrorKind, Inode, InodeKind, Layout};
use serde_json::json;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// Files, or with -r directories and everything below them
    #[arg(required = true)]
    paths: Vec<String>,
    #[arg(short, long)]
    recursive: bool,
    /// Say what would be converted; change nothing
    #[arg(long)]
    dry_run: bool,
    /// A JSON summary
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Default)]
struct Tally {
    converted: u64,
    bytes: u64,
    already: u64,
    changed: u64,
    skipped: u64,
}

pub async fn run(a: ConvertArgs) -> Result<()> {
    let c = commands::connect(&a.target).await?;
    let default_rep = c.cluster_config().default_rep;
    let mut t = Tally::default();
    let mut stack: Vec<CairnPath> = a.paths.iter().map(|p| path(p)).collect::<Result<_>>()?;
    while let Some(p) = stack.pop() {
        let inode = c.stat(&p).await?;
        match inode.kind {
            InodeKind::Directory if a.recursive => {
                let mut after = None;
                loop {
                    let page = c.list_page(&p, after.clone(), 1000).await?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.name.clone());
                    for e in page {
                        if matches!(e.inode.kind, InodeKind::Directory | InodeKind::File) {
                            stack.push(p.join(&e.name)?);
                        }
                    }
                }
            }
            InodeKind::Directory => {
                anyhow::bail!("{p} is a directory; add -r to convert everything below it")
            }
            InodeKind::File => {
                let say = !a.json;
                let r = convert_one(&c, &p, inode, default_rep, a.dry_run, say, &mut t).await;
                match r {
                    Ok(()) => {}
                    // Removed meanwhile, or write-once: left as it is.
                    Err(e)
                        if matches!(e.kind, ErrorKind::NotFound | ErrorKind::PermissionDenied) =>
                    {
                        if say {
                            println!("{p}: left as it is: {e}");
                        }
                        t.skipped += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            _ => t.skipped += 1,
        }
    }
    let verb = if a.dry_run {
        "would convert"
    } else {
        "converted"
    };
    if a.json {
        println!(
            "{}",
            json!({"dry_run": a.dry_run, "converted": t.converted, "bytes": t.bytes,
                   "already": t.already, "changed_meanwhile": t.changed, "skipped": t.skipped})
        );
    } else {
        println!(
            "{verb} {} file(s), {}; {} already as their directory asks; {} changed meanwhile (left as written); {} without chunks",
            t.converted,
            cairn_types::format_bytes(t.bytes),
            t.already,
            t.changed,
            t.skipped
        );
    }
    Ok(())
}

/// Rewrite one file if its layout is not what its directory asks for;
/// with `say`, print what changes.
#[allow(clippy::too_many_arguments)]
async fn convert_one(
    c: &Client,
    p: &CairnPath,
    inode: Inode,
    default_rep: u8,
    dry_run: bool,
    say: bool,
    t: &mut Tally,
) -> cairn_types::Result<()> {
    if inode.extents.is_empty() {
        t.skipped += 1; // empty, or kept inline in its record
        return Ok(());
    }
    let dir = p
        .split_last()
        .map(|(d, _)| d)
        .unwrap_or_else(CairnPath::root);
    let want = Layout::wanted(&c.cues(&dir).await?.effective, default_rep);
    let cues = want.cues();
    let have = inode.layout().unwrap_or(Layout::Mixed);
    if have == want {
        t.already += 1;
        return Ok(());
    }
    if dry_run {
        if say {
            println!(
                "{p}: {have} -> {want} ({})",
                cairn_types::format_bytes(inode.size)
            );
        }
        t.converted += 1;
        t.bytes += inode.size;
        return Ok(());
    }
    let reader = c.open(p).await?;
    if reader.inode().version != inode.version {
        t.changed += 1;
        return Ok(());
    }
    let (mut w, r) = tokio::io::duplex(4 << 20);
    let copy = tokio::spawn(async move { reader.copy_to(&mut w).await });
    let opts = PutOptions {
        expected: Some(inode.version),
        chunk_size: Some(inode.chunk_size),
        cues,
        ..Default::default()
    };
    // A read that fails midway ends the pipe early: the put must then
    // fail too, never commit the part that arrived.
    let src = Exact {
        inner: r,
        left: inode.size,
    };
    let put = c.put(p, src, opts).await;
    let copied = copy
        .await
        .map_err(|e| cairn_types::Error::internal(format!("reading {p}: {e}")))?;
    match (put, copied) {
        (Ok(_), Ok(n)) if n == inode.size => {
            if say {
                println!("{p}: {have} -> {want}");
            }
            t.converted += 1;
            t.bytes += n;
        }
        (Err(e), _) if e.kind == ErrorKind::Conflict || e.kind == ErrorKind::AlreadyExists => {
            t.changed += 1;
        }
        (Err(e), _) => return Err(e.context(format!("converting {p}"))),
        (_, Err(e)) => return Err(e.context(format!("reading {p}"))),
        (Ok(_), Ok(n)) => {
            return Err(cairn_types::Error::internal(format!(
                "{p}: read {n} of {} bytes, yet the new version was committed",
                inode.size
            )))
        }
    }
    Ok(())
}

/// A source that must yield exactly `left` bytes: an end before them (or
/// more after them) is an error, so a put from it fails rather than
/// commits a short file.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Exact<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // Never more than is left, plus one byte once nothing is: that
        // byte, if it comes, is the error.
        let max = (buf.remaining() as u64).min(self.left.max(1)) as usize;
        let mut one = [0u8; 1];
        let mut sub = if self.left == 0 {
            tokio::io::ReadBuf::new(&mut one)
        } else {
            tokio::io::ReadBuf::new(buf.initialize_unfilled_to(max))
        };
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, &mut sub);
        let n = sub.filled().len();
        match r {
            Poll::Ready(Ok(())) if self.left == 0 && n > 0 => Poll::Ready(Err(
                std::io::Error::other("the file grew while it was read"),
            )),
            Poll::Ready(Ok(())) if n == 0 && self.left > 0 => {
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "the read of the old version stopped {} bytes short",
                        self.left
                    ),
                )))
            }
            Poll::Ready(Ok(())) => {
                if self.left > 0 {
                    buf.advance(n);
                    self.left -= n as u64;
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_short_or_long_source_is_an_error_not_an_end() {
        let mut buf = Vec::new();
        let mut short = Exact {
            inner: &b"abc"[..],
            left: 5,
        };
        let e = short.read_to_end(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        let mut long = Exact {
            inner: &b"abcdef"[..],
            left: 5,
        };
        assert!(long.read_to_end(&mut Vec::new()).await.is_err());
        let mut exact = Exact {
            inner: &b"abcde"[..],
            left: 5,
        };
        buf.clear();
        exact.read_to_end(&mut buf).await.unwrap();
        assert_eq!(buf, b"abcde");
    }
}
