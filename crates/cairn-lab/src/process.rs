//! Child processes of the lab: started, their banner read, SIGKILLed when
//! dropped so a failing test leaves nothing running.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `cairn` binary: `$CAIRN_BIN`, else `target/<profile>/cairn` beside
/// the running test executable (`target/<profile>/deps/…`).
pub fn cairn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut candidates = Vec::new();
    for dir in exe.ancestors().skip(1).take(3) {
        candidates.push(dir.join("cairn"));
    }
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "the cairn binary is not built (looked for {candidates:?}); run `cargo build -p cairn-cli` \
         (with --release for a release test run), or set CAIRN_BIN"
    );
}

/// A child process, killed when dropped.
pub struct Proc {
    child: Child,
    /// The lines it printed up to and including its ready line.
    pub banner: Vec<String>,
    pub log: PathBuf,
}

impl Proc {
    /// Spawn `cmd`, its stderr to `log`, and read stdout until a line that
    /// contains `ready`, for at most `limit`.
    pub fn spawn(mut cmd: Command, log: &Path, ready: &str, limit: Duration) -> Proc {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err));
        // If the test process dies without unwinding, its children die too.
        // (Only valid because every spawn happens on a long-lived thread:
        // the signal fires when the spawning *thread* exits.)
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let what = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = line.contains(ready);
                    banner.push(line);
                    if done {
                        // Keep draining stdout so the child never blocks on a full pipe.
                        std::thread::spawn(move || while rx.recv().is_ok() {});
                        return Proc {
                            child,
                            banner,
                            log: log.to_path_buf(),
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{what} did not print {ready:?} within {limit:?}; it printed {banner:?}; \
                         its log:\n{}",
                        tail(log, 30)
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
