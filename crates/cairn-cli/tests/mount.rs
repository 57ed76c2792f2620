//! `cairn mount` as a real process against `cairn server`: it mounts, serves
//! files, and ends cleanly on SIGTERM and on `fusermount3 -u`. The file
//! system itself is exercised in crates/cairn-fuse/tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// A child killed when dropped; a mount point it leaves is detached.
struct Proc {
    child: Child,
    mountpoint: Option<PathBuf>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(m) = &self.mountpoint {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(m)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Proc {
    /// Wait for the process to exit on its own; fail after `limit`.
    fn exits_ok(mut self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "cairn exited with {status}");
                return;
            }
            assert!(Instant::now() < end, "cairn did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn spawn(config: &Path, args: &[&str], ready: &str, mountpoint: Option<&Path>) -> Proc {
    let mut child = Command::new(BIN)
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env("CAIRN_S3_LISTEN", "off")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cairn");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let proc = Proc {
        child,
        mountpoint: mountpoint.map(Path::to_path_buf),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(ready) => {
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return proc;
            }
            Ok(_) => {}
            Err(_) => panic!("cairn {args:?} did not print {ready:?}"),
        }
    }
}

fn is_mounted(p: &Path) -> bool {
    let p = p.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(p.to_str().unwrap()))
}

#[test]
fn mount_serves_files_and_ends_on_sigterm_and_fusermount() {
    if !Path::new("/dev/fuse").exists() || Command::new("fusermount3").arg("-V").output().is_err() {
        eprintln!("skipping: needs /dev/fuse and fusermount3 (Debian: fuse3)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let cache = dir.path().join("cache");
    let mount_args = ["mount", m, "--cache-dir", cache.to_str().unwrap()];
    let _server = spawn(
        &config,
        &[
            "server",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "try:",
        None,
    );

    // Found through the client config `cairn server` wrote; SIGTERM unmounts.
    let mount = spawn(&config, &mount_args, "mounted on", Some(&mnt));
    std::fs::write(mnt.join("hello.txt"), b"through the mount\n").unwrap();
    let cat = Command::new(BIN)
        .args(["cat", "/hello.txt"])
        .env("XDG_CONFIG_HOME", &config)
        .output()
        .unwrap();
    assert_eq!(cat.stdout, b"through the mount\n");
    unsafe { libc::kill(mount.child.id() as i32, libc::SIGTERM) };
    mount.exits_ok(Duration::from_secs(20));
    assert!(!is_mounted(&mnt), "SIGTERM left {m} mounted");

    // `fusermount3 -u` ends the process.
    let mount = spawn(&config, &mount_args, "mounted on", Some(&mnt));
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"through the mount\n"
    );
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    mount.exits_ok(Duration::from_secs(20));
}
