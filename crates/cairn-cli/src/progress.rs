//! Progress of long commands (put, get, sync, prefetch, drain) on stderr:
//! a bar (indicatif) when stderr is a terminal, a plain line every few
//! seconds when it is not (logs of scripts and CI), nothing with `-q` or
//! `--json`. Counting is atomics shared by the transfers in flight.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

static QUIET: AtomicBool = AtomicBool::new(false);

/// `cairn -q`: no progress at all (the final summary stays).
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// How often a plain progress line is printed when stderr is no terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

struct Counts {
    what: String,
    started: Instant,
    bytes: AtomicU64,
    files: AtomicU64,
    total_bytes: Option<u64>,
    total_files: Option<u64>,
}

impl Counts {
    /// `put: 12 of 40 files, 1.2 GiB of 3.0 GiB, 150.3 MiB/s, 14 s left`.
    fn line(&self) -> String {
        let (b, f) = (
            self.bytes.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed),
        );
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = b as f64 / secs;
        let mut s = format!("{}: ", self.what);
        match self.total_files {
            Some(t) if t > 1 => s += &format!("{f} of {t} files, "),
            None if f > 0 => s += &format!("{f} files, "),
            _ => {}
        }
        s += &cairn_types::format_bytes(b);
        if let Some(t) = self.total_bytes {
            s += &format!(" of {}", cairn_types::format_bytes(t));
        }
        s += &format!(", {}/s", cairn_types::format_bytes(rate as u64));
        if let (Some(t), true) = (self.total_bytes, rate > 0.0) {
            s += &format!(", {:.0} s left", t.saturating_sub(b) as f64 / rate);
        }
        s
    }
}

/// The progress of one command.
#[derive(Clone)]
pub struct Progress {
    counts: Arc<Counts>,
    bar: Option<ProgressBar>,
    ticker: Option<Arc<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    /// Start showing progress of `what` (known totals give a bar and an
    /// ETA); `quiet` (a `--json` command) shows none.
    pub fn start(
        what: &str,
        total_bytes: Option<u64>,
        total_files: Option<u64>,
        quiet: bool,
    ) -> Progress {
        let counts = Arc::new(Counts {
            what: what.to_string(),
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            files: AtomicU64::new(0),
            total_bytes,
            total_files,
        });
        let mut p = Progress {
            counts: counts.clone(),
            bar: None,
            ticker: None,
        };
        if quiet || QUIET.load(Ordering::Relaxed) {
            return p;
        }
        if std::io::stderr().is_terminal() {
            let bar = match total_bytes {
                Some(t) => ProgressBar::new(t).with_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template(
                        "{prefix} {spinner} {bytes} {binary_bytes_per_sec} {msg}",
                    )
                    .expect("a valid template"),
                ),
            };
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            p.bar = Some(bar);
        } else {
            p.ticker = Some(Arc::new(tokio::spawn(async move {
                let mut t = tokio::time::interval(LINE_EVERY);
                t.tick().await;
                loop {
                    t.tick().await;
                    eprintln!("{}", counts.line());
                }
            })));
        }
        p
    }

    pub fn add_bytes(&self, n: u64) {
        self.counts.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// Where a job reported by others stands (bytes done in all).
    pub fn set_bytes(&self, n: u64) {
        self.counts.bytes.store(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
    }

    pub fn file_done(&self) {
        let f = self.counts.files.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(b) = &self.bar {
            match self.counts.total_files {
                Some(t) if t > 1 => b.set_message(format!("{f}/{t} files")),
                None => b.set_message(format!("{f} files")),
                _ => {}
            }
        }
    }

    /// Stop showing progress (the caller prints its summary next).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(t) = &self.ticker {
            t.abort();
        }
    }

    /// `inner`, counting what passes through it.
    pub fn counted<T>(&self, inner: T) -> Counted<T> {
        Counted {
            inner,
            progress: self.clone(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // The last clone stops the ticker (also on an early return).
        if let Some(t) = self.ticker.take() {
            if Arc::strong_count(&t) == 1 {
                t.abort();
            }
        }
    }
}

/// A reader or writer whose bytes count towards a [`Progress`].
pub struct Counted<T> {
    inner: T,
    progress: Progress,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.progress
                .add_bytes((buf.filled().len() - before) as u64);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.progress.add_bytes(n as u64);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_what_passes_and_says_it_in_a_line() {
        let p = Progress::start("put", Some(3 << 20), Some(2), true);
        let mut r = p.counted(&[7u8; 1 << 20][..]);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.unwrap();
        let mut w = p.counted(Vec::new());
        w.write_all(&[1u8; 1 << 20]).await.unwrap();
        p.file_done();
        let line = p.counts.line();
        assert!(
            line.starts_with("put: 1 of 2 files, 2.0 MiB of 3.0 MiB, "),
            "{line}"
        );
        assert!(line.ends_with(" s left"), "{line}");
        let q = Progress::start("get", None, None, true);
        q.add_bytes(10);
        assert!(
            q.counts.line().starts_with("get: 10 B, "),
            "{}",
            q.counts.line()
        );
        p.finish();
    }
}
