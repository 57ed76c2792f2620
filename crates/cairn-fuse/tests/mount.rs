//! A real FUSE mount of an in-process cluster, driven by real tools (cp,
//! diff, dd, sha256sum, python3). Needs /dev/fuse and `fusermount3`; skips
//! with a message when either is missing.

use cairn_fuse::{Mount, MountOptions};
use cairn_testkit::TestCluster;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A test that runs longer than this has hung: unmount and fail.
const HARD_TIMEOUT: Duration = Duration::from_secs(150);

fn fuse_available() -> bool {
    if !Path::new("/dev/fuse").exists() {
        eprintln!("skipping: /dev/fuse is absent");
        return false;
    }
    if Command::new("fusermount3").arg("-V").output().is_err() {
        eprintln!("skipping: fusermount3 is not installed (Debian: fuse3)");
        return false;
    }
    true
}

/// A cluster and mounts of it, torn down in order (mounts first) even when
/// the test panics; a watchdog detaches the mounts and aborts on a hang.
struct Env {
    mounts: Vec<Mount>,
    dirs: Vec<tempfile::TempDir>,
    _cluster: TestCluster,
    /// Last to go: the mounts and the cluster run on it.
    _rt: tokio::runtime::Runtime,
    done: Arc<AtomicBool>,
}

impl Env {
    fn new(n_mounts: usize) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = rt.block_on(TestCluster::start(2, 2));
        let mut mounts = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..n_mounts {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("mnt")).unwrap();
            let client = rt.block_on(cluster.client());
            let opts = MountOptions {
                cache_dir: dir.path().join("cache"),
                read_only: false,
                allow_other: false,
            };
            let m = cairn_fuse::mount(client, rt.handle().clone(), &dir.path().join("mnt"), opts)
                .expect("mount");
            mounts.push(m);
            dirs.push(dir);
        }
        let done = Arc::new(AtomicBool::new(false));
        let points: Vec<PathBuf> = mounts
            .iter()
            .map(|m| m.mountpoint().to_path_buf())
            .collect();
        let flag = done.clone();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < HARD_TIMEOUT {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("mount test hung for {HARD_TIMEOUT:?}: detaching the mounts and aborting");
            for p in points {
                let _ = Command::new("fusermount3")
                    .args(["-u", "-z"])
                    .arg(p)
                    .status();
            }
            std::process::abort();
        });
        Env {
            mounts,
            dirs,
            _cluster: cluster,
            _rt: rt,
            done,
        }
    }

    fn mnt(&self, i: usize) -> PathBuf {
        self.mounts[i].mountpoint().to_path_buf()
    }

    fn scratch(&self) -> PathBuf {
        self.dirs[0].path().to_path_buf()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.mounts.clear();
        self.done.store(true, Ordering::Relaxed);
    }
}

/// Run a shell script; panic with its output unless it succeeds.
fn sh(script: &str) -> String {
    let out = Command::new("timeout")
        .args([
            "-s", "KILL", "120", "bash", "-euo", "pipefail", "-c", script,
        ])
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn tools_round_trip_random_writes_and_errnos() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(1);
    let (mnt, tmp) = (env.mnt(0), env.scratch());
    let (mnt, tmp) = (mnt.display(), tmp.display());

    // cp -r of a small tree, and back, byte for byte.
    sh(&format!(
        "src={tmp}/src; mkdir -p $src/a/b $src/empty; \
         echo hello > $src/top.txt; head -c 300000 /dev/urandom > $src/a/blob; \
         for i in $(seq 1 300); do echo file $i > $src/a/b/f$i; done; : > $src/a/zero; \
         cp -r $src {mnt}/tree; diff -r $src {mnt}/tree; \
         cp -r {mnt}/tree {tmp}/back; diff -r $src {tmp}/back; \
         test \"$(ls {mnt}/tree/a/b)\" = \"$(ls $src/a/b)\"; \
         mv {mnt}/tree/a/b {mnt}/tree/moved; cat {mnt}/tree/moved/f7 | grep -qx 'file 7'; \
         test ! -e {mnt}/tree/a/b; truncate -s 5 {mnt}/tree/top.txt; \
         test \"$(cat {mnt}/tree/top.txt)\" = hello; rm {mnt}/tree/top.txt; test ! -e {mnt}/tree/top.txt"
    ));

    // Writes at random offsets (over and past the end), then read back.
    sh(&format!(
        r#"python3 - <<'EOF'
import os, random
random.seed(7)
path = "{mnt}/random.bin"
ref = bytearray(os.urandom(3_000_000))
with open(path, "wb") as f:
    f.write(ref)
with open(path, "r+b") as f:
    for _ in range(200):
        off = random.randrange(0, len(ref) + 100_000)
        data = os.urandom(random.randrange(1, 70_000))
        f.seek(off)
        f.write(data)
        if off > len(ref):
            ref.extend(b"\0" * (off - len(ref)))
        ref[off:off + len(data)] = data
        if random.random() < 0.1:
            f.flush(); os.fsync(f.fileno())
with open(path, "rb") as f:
    got = f.read()
assert got == bytes(ref), "content differs after random writes"
with open(path, "ab") as f:
    f.write(b"tail")
assert open(path, "rb").read() == bytes(ref) + b"tail"
EOF"#
    ));

    // errno cases.
    sh(&format!(
        r#"python3 - <<'EOF'
import errno, os
m = "{mnt}"
def expect(code, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        assert e.errno == code, f"{{fn.__name__}}{{args}}: got {{errno.errorcode[e.errno]}}, want {{errno.errorcode[code]}}"
        return
    raise AssertionError(f"{{fn.__name__}}{{args}} succeeded, want {{errno.errorcode[code]}}")
os.mkdir(m + "/d"); open(m + "/d/f", "w").write("x"); open(m + "/file", "w").write("y")
expect(errno.ENOENT, os.stat, m + "/missing")
expect(errno.ENOENT, open, m + "/missing/x")
expect(errno.EEXIST, os.mkdir, m + "/d")
expect(errno.EEXIST, os.open, m + "/file", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
expect(errno.ENOTEMPTY, os.rmdir, m + "/d")
expect(errno.ENOTDIR, os.mkdir, m + "/file/sub")
expect(errno.ENOTDIR, os.rmdir, m + "/file")
expect(errno.EISDIR, os.unlink, m + "/d")
expect(errno.EISDIR, open, m + "/d", "w")
expect(errno.ENAMETOOLONG, open, m + "/" + "n" * 300, "w")
expect(errno.ENAMETOOLONG, os.mkdir, m + "/" + "n" * 300)
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, AT_FDCWD = 1, -100
def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
open(m + "/r1", "w").write("1"); open(m + "/r2", "w").write("2")
expect(errno.EEXIST, renameat2, m + "/r1", m + "/r2", RENAME_NOREPLACE)
renameat2(m + "/r1", m + "/r3", RENAME_NOREPLACE)
os.rename(m + "/r3", m + "/d/r")
os.rename(m + "/d/r", m + "/r2")
assert open(m + "/r2").read() == "1" and not os.path.exists(m + "/r1")
os.unlink(m + "/r2")
os.unlink(m + "/d/f"); os.rmdir(m + "/d")
assert not os.path.exists(m + "/d")
st = os.statvfs(m)
assert st.f_blocks > 0, st
EOF"#
    ));
}

#[test]
fn large_file_through_dd() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(1);
    let (mnt, tmp) = (env.mnt(0), env.scratch());
    let (mnt, tmp) = (mnt.display(), tmp.display());
    sh(&format!(
        "head -c 96M /dev/urandom > {tmp}/big; \
         dd if={tmp}/big of={mnt}/big bs=1M status=none; \
         test $(stat -c %s {mnt}/big) -eq 100663296; \
         a=$(sha256sum < {tmp}/big); b=$(dd if={mnt}/big bs=1M status=none | sha256sum); \
         test \"$a\" = \"$b\"; rm {tmp}/big"
    ));
}

#[test]
fn close_to_open_across_two_mounts() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(2);
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    sh(&format!(
        "echo one > {a}/shared; test \"$(cat {b}/shared)\" = one; \
         echo two > {a}/shared; test \"$(cat {b}/shared)\" = two; \
         exec 3>{b}/shared; echo three >&3; exec 3>&-; test \"$(cat {a}/shared)\" = three; \
         mkdir {b}/dir; sleep 1.2; test -d {a}/dir"
    ));
}
