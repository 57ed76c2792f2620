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
const HARD_TIMEOUT: Duration = Duration::from_secs(450);

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
    cluster: TestCluster,
    /// Last to go: the mounts and the cluster run on it.
    _rt: tokio::runtime::Runtime,
    done: Arc<AtomicBool>,
}

impl Env {
    fn new(n_mounts: usize) -> Env {
        Env::with(n_mounts, false, |_| {})
    }

    /// `allow_other` lets tests act as other users (root may set it).
    fn with(
        n_mounts: usize,
        allow_other: bool,
        tweak: impl FnOnce(&mut cairn_meta::server::MetaConfig),
    ) -> Env {
        Env::build(n_mounts, allow_other, tweak, Arc::new(|_, _| {}), |_, _| {})
    }

    /// [`Env::with`], also changing each storage node's config and each
    /// mount's options (by its index).
    fn build(
        n_mounts: usize,
        allow_other: bool,
        tweak: impl FnOnce(&mut cairn_meta::server::MetaConfig),
        node_tweak: cairn_testkit::NodeTweak,
        mount_tweak: impl Fn(usize, &mut MountOptions),
    ) -> Env {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cluster = rt.block_on(TestCluster::start_full(
            2,
            |c| {
                c.default_rep = 2;
                tweak(c);
            },
            node_tweak,
        ));
        let mut mounts = Vec::new();
        let mut dirs = Vec::new();
        for i in 0..n_mounts {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("mnt")).unwrap();
            // No chunk cache: the tests see what the cluster itself serves
            // (a removed file's chunks being collected, say).
            let client = rt.block_on(cluster.client_with(|c| c.cache_bytes = 0));
            let mut opts = MountOptions {
                writeback: false,
                cache_times: cairn_fuse::CacheTimes::DEFAULT,
                cache_dir: dir.path().join("cache"),
                cache_size: None,
                read_only: false,
                allow_other,
                lock_lease: std::time::Duration::from_secs(5),
                atime: cairn_fuse::Atime::default(),
                devices: false,
            };
            mount_tweak(i, &mut opts);
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
            cluster,
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

    fn cluster_client(&self) -> cairn_client::Client {
        self._rt.block_on(self.cluster.client())
    }

    fn stop_node(&mut self, i: usize) {
        self._rt.block_on(self.cluster.stop_node(i));
    }

    fn restart_node(&mut self, i: usize) {
        self._rt.block_on(self.cluster.restart_node(i));
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.mounts.clear();
        self.done.store(true, Ordering::Relaxed);
    }
}

/// A Python helper for scripts that check errnos: `expect(errno.X, fn,
/// *args)` fails unless `fn(*args)` raises OSError with that errno. Scripts
/// include it with `{PY_EXPECT}` (they import errno).
const PY_EXPECT: &str = r#"def expect(code, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        assert e.errno == code, f"{fn.__name__}{args}: got {errno.errorcode[e.errno]}, want {errno.errorcode[code]}"
        return
    raise AssertionError(f"{fn.__name__}{args} succeeded, want {errno.errorcode[code]}")"#;

/// Run a shell script; panic with its output unless it succeeds.
fn sh(script: &str) -> String {
    sh_within(120, script)
}

/// [`sh`] that is killed after `secs` seconds.
fn sh_within(secs: u32, script: &str) -> String {
    let secs = secs.to_string();
    let out = Command::new("timeout")
        .args([
            "-s", "KILL", &secs, "bash", "-euo", "pipefail", "-c", script,
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
{PY_EXPECT}
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
# Past what a file may be: EFBIG (EIO is only for an unreachable cluster),
# and the file is as it was.
expect(errno.EFBIG, os.truncate, m + "/file", 1 << 62)
with open(m + "/file", "r+b") as f:
    expect(errno.EFBIG, os.pwrite, f.fileno(), b"z", 1 << 62)
assert open(m + "/file").read() == "y"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, AT_FDCWD = 1, -100
def renameat2(a, b, flags):
    if libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
open(m + "/r1", "w").write("1"); open(m + "/r2", "w").write("2")
expect(errno.EEXIST, renameat2, m + "/r1", m + "/r2", RENAME_NOREPLACE)
expect(errno.EEXIST, renameat2, m + "/r1", m + "/d", RENAME_NOREPLACE)
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

/// Peak resident memory of this process so far, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb * 1024
}

#[test]
fn multi_gib_file_through_dd_in_bounded_memory() {
    if !fuse_available() {
        return;
    }
    const GIB: u64 = 1 << 30;
    let env = Env::new(1);
    let (mnt, tmp) = (env.mnt(0), env.scratch());
    // Two copies on the nodes' disks and the mount's staged copy, all in
    // this temp dir, beside what other tests write at the same time: a
    // full disk would show as ENOSPC from dd, so say so first.
    let avail = String::from_utf8(
        std::process::Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&tmp)
            .output()
            .expect("df runs")
            .stdout,
    )
    .unwrap();
    let avail: u64 = avail
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        avail >= 8 * GIB,
        "this test writes 2 GiB through the mount and needs 8 GiB free under {}; {} GiB are",
        tmp.display(),
        avail / GIB
    );
    // 2 GiB of distinct 1 MiB blocks (one seeded random block, each copy
    // stamped with its number, so a misplaced or repeated chunk shows).
    let gen = tmp.join("gen.py");
    std::fs::write(
        &gen,
        "import random, sys\n\
         random.seed(7); block = bytearray(random.randbytes(1 << 20)); out = sys.stdout.buffer\n\
         for i in range(2048):\n    block[:8] = i.to_bytes(8, 'little'); out.write(block)\n",
    )
    .unwrap();
    let before = peak_rss();
    let (mnt, gen) = (mnt.display(), gen.display());
    let sums = sh_within(
        400,
        &format!(
            "python3 {gen} | dd of={mnt}/big bs=4M iflag=fullblock status=none; \
         test $(stat -c %s {mnt}/big) -eq {}; \
         python3 {gen} | sha256sum; dd if={mnt}/big bs=4M status=none | sha256sum",
            2 * GIB
        ),
    );
    let lines: Vec<&str> = sums.lines().collect();
    assert_eq!(lines.len(), 2, "{sums}");
    assert_eq!(lines[0], lines[1], "what was read back differs");
    // Streamed, never held whole: the cluster, the client and the mount
    // (all in this process) grew by well under the file's size.
    let grown = peak_rss().saturating_sub(before);
    eprintln!("peak memory grew by {} MiB", grown >> 20);
    // (Other tests run in this process at the same time: the bound leaves
    // them room, and still fails if the file were held whole.)
    assert!(
        grown < 3 * GIB / 2,
        "peak memory grew by {grown} bytes for a 2 GiB file"
    );
}

#[test]
fn a_directory_of_100_000_entries_lists_whole() {
    if !fuse_available() {
        return;
    }
    const N: usize = 100_000;
    let env = Env::new(1);
    let client = env.cluster_client();
    // Made through the client, 64 at a time (the mount is what is tested).
    env._rt.block_on(async {
        client
            .mkdir(&cairn_types::CairnPath::parse("/many").unwrap(), false)
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..64 {
            let client = client.clone();
            tasks.spawn(async move {
                for i in (w..N).step_by(64) {
                    let p = cairn_types::CairnPath::parse(&format!("/many/f{i:06}")).unwrap();
                    client
                        .make_node(&p, cairn_types::NewNode::File, 0o644, (None, None))
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
    let mnt = env.mnt(0);
    sh_within(
        400,
        &format!(
            r#"python3 - <<'EOF'
import os
names = os.listdir("{}/many")
assert len(names) == {N}, len(names)
assert sorted(names) == ["f%06d" % i for i in range({N})]
EOF"#,
            mnt.display()
        ),
    );
}

#[test]
fn full_cluster_and_full_cache_are_enospc_and_a_dead_cluster_eio() {
    if !fuse_available() {
        return;
    }
    // Nodes that refuse every new chunk (as a full disk does) and a mount
    // that may stage at most 1 MiB.
    let full = Arc::new(AtomicBool::new(false));
    let flag = full.clone();
    let env = Env::build(
        1,
        false,
        |_| {},
        Arc::new(move |_, sc: &mut cairn_storage::StorageConfig| {
            if flag.load(Ordering::Relaxed) {
                sc.store.reserve_free = u64::MAX;
            }
        }),
        |_, o| o.cache_size = Some(1 << 20),
    );
    let m = env.mnt(0);
    let m = m.display();
    sh(&format!(
        r#"python3 - <<'EOF'
import errno, os
m = "{m}"
open(m + "/kept", "w").write("before")
# Past the mount's staging cap a write fails; what was written before it
# is the file's, and other files are untouched.
fd = os.open(m + "/big", os.O_WRONLY | os.O_CREAT)
written = 0
try:
    while written < (4 << 20):
        written += os.write(fd, b"x" * (256 << 10))
    raise SystemExit("4 MiB written past a 1 MiB cap")
except OSError as e:
    assert e.errno == errno.ENOSPC, e
os.close(fd)
assert 0 < written <= (1 << 20), written
assert os.path.getsize(m + "/big") == written
assert open(m + "/kept").read() == "before"
EOF"#
    ));
    // Now every storage node is full: a close that cannot upload is
    // ENOSPC, and the file keeps its last version in the cluster.
    let mut env = env;
    full.store(true, Ordering::Relaxed);
    for i in 0..2 {
        env.stop_node(i);
        env.restart_node(i);
    }
    let client = env.cluster_client();
    env._rt
        .block_on(cairn_testkit::wait_for(Duration::from_secs(30), || async {
            let s = client.cluster_status().await.ok()?;
            s.nodes
                .iter()
                .all(|n| n.state == cairn_proto::NodeState::Full)
                .then_some(())
        }));
    sh(&format!(
        r#"python3 - <<'EOF'
import errno, os
m = "{m}"
f = open(m + "/kept", "w")
# Larger than what meta keeps inline: it needs a storage node.
f.write("after" * 2000)
try:
    f.close(); raise SystemExit("close succeeded with every node full")
except OSError as e:
    assert e.errno == errno.ENOSPC, e
EOF"#
    ));
    // The cluster still has the last version (this mount may serve its
    // unsaved bytes until the kernel releases the file).
    let kept = env
        ._rt
        .block_on(client.get_bytes(&cairn_types::CairnPath::parse("/kept").unwrap()))
        .unwrap();
    assert_eq!(kept, b"before");
    // With no storage node reachable, a read is EIO (the one case for it).
    for i in 0..2 {
        env.stop_node(i);
    }
    sh(&format!(
        r#"python3 - <<'EOF'
import errno
try:
    open("{m}/big", "rb").read(); raise SystemExit("read with every node down")
except OSError as e:
    assert e.errno == errno.EIO, e
EOF"#
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
         echo one > {a}/sized; test $(stat -c %s {b}/sized) -eq 4; \
         echo 'grown, past the size b last saw' > {a}/sized; \
         test \"$(cat {b}/sized)\" = 'grown, past the size b last saw'; \
         echo one > {a}/app; test $(stat -c %s {b}/app) -eq 4; \
         echo 'grown by a' > {a}/app; echo tail >> {b}/app; \
         test \"$(cat {a}/app)\" = \"$(printf 'grown by a\\ntail')\"; \
         exec 3>{b}/shared; echo three >&3; exec 3>&-; test \"$(cat {a}/shared)\" = three; \
         mkdir {b}/dir; sleep 1.2; test -d {a}/dir"
    ));
}

#[test]
fn chmod_on_one_mount_survives_another_mounts_upload() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(2);
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    // a has the file open for writing while b changes its mode; a's
    // close uploads the content and leaves the mode as b set it.
    sh(&format!(
        "echo first > {a}/kept; exec 3>>{a}/kept; echo more >&3; \
         chmod 600 {b}/kept; echo last >&3; exec 3>&-"
    ));
    let client = env.cluster_client();
    let inode = env
        ._rt
        .block_on(client.stat(&cairn_types::CairnPath::parse("/kept").unwrap()))
        .unwrap();
    assert_eq!(inode.mode & 0o7777, 0o600);
    assert_eq!(inode.size, "first\nmore\nlast\n".len() as u64);
}

#[test]
fn attributes_and_xattrs_persist_across_mounts_and_are_enforced() {
    if !fuse_available() {
        return;
    }
    let env = Env::with(2, true, |_| {});
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    // chmod, chown, touch -d on mount a; mount b (which never looked at
    // these files, so nothing is cached there) sees them.
    sh(&format!(
        "mkdir {a}/d; echo data > {a}/d/f; chmod 640 {a}/d/f; chown 1234:2345 {a}/d/f; \
         touch -m -d '2001-02-03 04:05:06 UTC' {a}/d/f; chmod 1777 {a}/d; \
         test \"$(stat -c '%a %u %g %Y' {b}/d/f)\" = '640 1234 2345 981173106'; \
         test \"$(stat -c '%a' {b}/d)\" = 1777; \
         echo more >> {a}/d/f; test \"$(stat -c '%a %u %g' {b}/d/f)\" = '640 1234 2345'; \
         cp -p {a}/d/f {a}/d/copy; test \"$(stat -c '%Y' {a}/d/f)\" = \"$(stat -c '%Y' {b}/d/copy)\""
    ));
    // The kernel checks permissions against what the mount reports.
    sh(&format!(
        "as() {{ setpriv --reuid=\"$1\" --regid=\"$1\" --clear-groups -- \"${{@:2}}\"; }}; \
         echo secret > {a}/d/private; chmod 600 {a}/d/private; \
         if as 65534 cat {a}/d/private 2>/dev/null; then echo 'read a 600 root file'; exit 1; fi; \
         as 65534 sh -c 'echo mine > {a}/d/nobody.txt'; \
         test \"$(stat -c '%u %g %a' {b}/d/nobody.txt)\" = '65534 65534 644'; \
         as 65534 chmod 600 {a}/d/nobody.txt; \
         if as 65534 chown 0 {a}/d/nobody.txt 2>/dev/null; then echo 'chown by a user'; exit 1; fi; \
         if as 1000 cat {a}/d/nobody.txt 2>/dev/null; then echo 'read another user 600 file'; exit 1; fi; \
         as 65534 mkdir {a}/d/sub; test \"$(stat -c '%u' {b}/d/sub)\" = 65534; \
         chmod 755 {a}/d; if as 65534 touch {a}/d/new 2>/dev/null; then echo 'wrote a 755 root dir'; exit 1; fi"
    ));
    // Extended attributes: user.* only, kept across versions, errnos.
    sh(&format!(
        r#"python3 - <<'EOF'
import ctypes, errno, os
a, b = "{a}", "{b}"
{PY_EXPECT}
f = a + "/x"
open(f, "w").write("v1")
os.setxattr(f, "user.color", b"blue")
os.setxattr(f, "user.empty", b"")
os.setxattr(f, "user.big", os.urandom(60000))
assert os.getxattr(b + "/x", "user.color") == b"blue"
assert os.getxattr(b + "/x", "user.empty") == b""
assert sorted(os.listxattr(b + "/x")) == ["user.big", "user.color", "user.empty"]
open(f, "w").write("v2, a new version")
assert os.getxattr(b + "/x", "user.color") == b"blue", "kept across versions"
expect(errno.ENODATA, os.getxattr, f, "user.missing")
expect(errno.ENODATA, os.removexattr, f, "user.missing")
expect(errno.EEXIST, os.setxattr, f, "user.color", b"red", os.XATTR_CREATE)
expect(errno.ENODATA, os.setxattr, f, "user.nope", b"x", os.XATTR_REPLACE)
os.setxattr(f, "user.color", b"red", os.XATTR_REPLACE)
os.setxattr(f, "user.shape", b"round", os.XATTR_CREATE)
expect(errno.ENOTSUP, os.setxattr, f, "trusted.x", b"1")
expect(errno.ENODATA, os.getxattr, f, "security.capability")
expect(errno.ENOENT, os.getxattr, a + "/missing", "user.color")
expect(errno.E2BIG, os.setxattr, f, "user.huge", b"x" * 70000)
libc = ctypes.CDLL(None, use_errno=True)
def raw_get(path, name, size):
    buf = ctypes.create_string_buffer(max(size, 1))
    n = libc.getxattr(path.encode(), name.encode(), buf if size else None, ctypes.c_size_t(size))
    if n < 0:
        raise OSError(ctypes.get_errno(), "getxattr")
    return n, buf.raw[:n] if size else None
def raw_list(path, size):
    buf = ctypes.create_string_buffer(max(size, 1))
    n = libc.listxattr(path.encode(), buf if size else None, ctypes.c_size_t(size))
    if n < 0:
        raise OSError(ctypes.get_errno(), "listxattr")
    return n
assert raw_get(f, "user.color", 0) == (3, None), "size probe"
assert raw_get(f, "user.color", 3) == (3, b"red")
expect(errno.ERANGE, raw_get, f, "user.color", 2)
want = len(b"user.big\0user.color\0user.empty\0user.shape\0")
assert raw_list(f, 0) == want
expect(errno.ERANGE, raw_list, f, want - 1)
os.removexattr(f, "user.color")
assert "user.color" not in os.listxattr(b + "/x")
d = a + "/xd"; os.mkdir(d); os.setxattr(d, "user.dir", b"1")
assert os.getxattr(b + "/xd", "user.dir") == b"1"
EOF"#
    ));
}

#[test]
fn symlinks_links_and_their_errnos() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(2);
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    sh(&format!(
        r#"python3 - <<'EOF'
import errno, os, stat
a, b = "{a}", "{b}"
{PY_EXPECT}
os.mkdir(a + "/dir"); open(a + "/dir/target", "w").write("pointed at")
os.symlink("dir/target", a + "/rel")
os.symlink("/nonexistent/abs", a + "/dangling")
os.symlink("dir", a + "/dirlink")
assert os.readlink(b + "/rel") == "dir/target"
assert open(b + "/rel").read() == "pointed at"
assert stat.S_ISLNK(os.lstat(b + "/rel").st_mode)
assert os.lstat(b + "/rel").st_size == len("dir/target")
assert os.readlink(b + "/dangling") == "/nonexistent/abs"
assert os.listdir(b + "/dirlink") == ["target"]
assert sorted(os.listdir(b)) == ["dangling", "dir", "dirlink", "rel"]
expect(errno.ENOENT, open, b + "/dangling")
expect(errno.EEXIST, os.symlink, "x", a + "/rel")
expect(errno.EEXIST, os.symlink, "x", a + "/dir")
expect(errno.EINVAL, os.readlink, a + "/dir/target")
expect(errno.ENOTDIR, os.rmdir, a + "/dangling")
# Hard links: one file under two names, seen so by both mounts.
os.link(a + "/dir/target", a + "/hard")
assert os.stat(b + "/hard").st_ino == os.stat(b + "/dir/target").st_ino
assert os.stat(b + "/hard").st_nlink == 2 and os.stat(a + "/dir/target").st_nlink == 2
with open(a + "/hard", "a") as f:
    f.write(", twice")
assert open(b + "/dir/target").read() == "pointed at, twice"
with open(b + "/dir/target", "r+") as f:
    f.write("P")
assert open(a + "/hard").read() == "Pointed at, twice"
expect(errno.EEXIST, os.link, a + "/dir/target", a + "/rel")
expect(errno.EPERM, os.link, a + "/dir", a + "/dirhard")
expect(errno.ENOENT, os.link, a + "/missing", a + "/x")
os.unlink(a + "/hard")
assert os.stat(a + "/dir/target").st_nlink == 1
assert open(b + "/dir/target").read() == "Pointed at, twice"
expect(errno.ENOENT, os.stat, b + "/hard")
# mknod of a regular file makes one (special files: their own test).
os.mknod(a + "/plain", 0o600 | stat.S_IFREG)
assert stat.S_ISREG(os.stat(b + "/plain").st_mode)
# rename and remove symlinks
os.rename(a + "/rel", a + "/dir/moved")
assert os.readlink(b + "/dir/moved") == "dir/target"
os.rename(a + "/dangling", a + "/plain")
# (a, which renamed it: b may cache "plain" as the file it was for 1 s)
assert os.readlink(a + "/plain") == "/nonexistent/abs"
os.unlink(a + "/plain"); os.unlink(a + "/dirlink")
assert not os.path.lexists(a + "/plain") and not os.path.lexists(a + "/dirlink")
assert os.path.isdir(a + "/dir")
EOF"#
    ));
    // What the CLI shows of a symlink.
    let client = env.cluster_client();
    let rt = &env._rt;
    let inode = rt
        .block_on(client.stat(&cairn_types::CairnPath::parse("/dir/moved").unwrap()))
        .unwrap();
    assert_eq!(inode.kind, cairn_types::InodeKind::Symlink);
    assert_eq!(inode.target.as_deref(), Some("dir/target"));
}

#[test]
fn tar_rsync_git_and_sqlite_in_the_mount() {
    if !fuse_available() {
        return;
    }
    let tools = ["tar", "rsync", "git"];
    if let Some(t) = tools
        .iter()
        .find(|t| Command::new(t).arg("--version").output().is_err())
    {
        panic!("{t} is not installed (Debian: apt-get install {t}; .ci/run installs it)");
    }
    let env = Env::new(1);
    let (mnt, tmp) = (env.mnt(0), env.scratch());
    let (mnt, tmp) = (mnt.display(), tmp.display());
    // A tree with symlinks, modes and old mtimes.
    sh(&format!(
        "src={tmp}/src; mkdir -p $src/a/b $src/empty; echo top > $src/top; \
         head -c 2000000 /dev/urandom > $src/a/blob; for i in $(seq 1 50); do echo $i > $src/a/b/f$i; done; \
         ln -s ../top $src/a/up; ln -s a/b $src/blink; ln -s /does/not/exist $src/dangling; \
         ln $src/a/b/f4 $src/a/hard; ln $src/a/b/f4 $src/hard2; \
         chmod 600 $src/a/b/f1; chmod 755 $src/a/b/f2; chmod 700 $src/empty; \
         touch -h -d '2010-01-01 00:00:00 UTC' $src/a/b/f3; \
         mkdir {mnt}/t; tar -C $src -cf - . | tar -C {mnt}/t -xpf -; \
         diff -r --no-dereference $src {mnt}/t; \
         test \"$(readlink {mnt}/t/a/up)\" = ../top; test \"$(stat -c %a {mnt}/t/a/b/f1)\" = 600; \
         test \"$(stat -c '%h %i' {mnt}/t/a/hard)\" = \"$(stat -c '%h %i' {mnt}/t/a/b/f4)\"; \
         test \"$(stat -c %h {mnt}/t/hard2)\" = 3; \
         test \"$(stat -c %Y {mnt}/t/a/b/f3)\" = \"$(stat -c %Y $src/a/b/f3)\"; \
         mkdir {tmp}/back; tar -C {mnt}/t -cf - . | tar -C {tmp}/back -xpf -; \
         diff -r --no-dereference $src {tmp}/back; \
         test \"$(stat -c %h {tmp}/back/a/hard)\" = 3; \
         test \"$(stat -c %i {tmp}/back/hard2)\" = \"$(stat -c %i {tmp}/back/a/b/f4)\"; \
         rsync -aH $src/ {mnt}/r/; diff -r --no-dereference $src {mnt}/r; \
         test \"$(stat -c %i {mnt}/r/a/hard)\" = \"$(stat -c %i {mnt}/r/a/b/f4)\"; \
         test \"$(stat -c '%a %Y' {mnt}/r/a/b/f3)\" = \"$(stat -c '%a %Y' $src/a/b/f3)\"; \
         test \"$(stat -c %a {mnt}/r/empty)\" = 700; \
         echo changed > $src/a/b/f9; rsync -a --delete $src/ {mnt}/r/; diff -r --no-dereference $src {mnt}/r"
    ));
    // git: a repository in the mount, then cloned out of it.
    sh(&format!(
        "export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@x GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@x HOME={tmp}; \
         git config --global --add safe.directory '*'; \
         git init -q {mnt}/repo; cd {mnt}/repo; cp -r {tmp}/src/a .; echo '# hi' > README.md; \
         git add -A; git commit -qm first; echo more >> README.md; git commit -qam second; \
         git status --porcelain | (! grep .); git fsck --no-progress; \
         git clone -q {mnt}/repo {tmp}/clone; test \"$(git -C {tmp}/clone log --format=%s | tr '\\n' ' ')\" = 'second first '; \
         diff -r --no-dereference {tmp}/src/a {tmp}/clone/a; \
         git clone -q --bare {tmp}/clone {mnt}/bare.git; git -C {mnt}/bare.git log --oneline | wc -l | grep -qx 2"
    ));
    // sqlite: many small transactions at random offsets in one file, then
    // read back, also by a fresh connection.
    sh(&format!(
        r#"python3 - <<'EOF'
import os, random, sqlite3
random.seed(3)
db = "{mnt}/test.db"
con = sqlite3.connect(db)
con.execute("create table t (k integer primary key, v blob)")
want = {{}}
for i in range(300):
    k = random.randrange(1000)
    v = os.urandom(random.randrange(1, 3000))
    con.execute("insert or replace into t values (?, ?)", (k, v))
    want[k] = v
    if i % 10 == 0:
        con.commit()
    if i % 50 == 49:
        for dk in random.sample(sorted(want), 5):
            con.execute("delete from t where k = ?", (dk,)); del want[dk]
con.commit(); con.close()
con = sqlite3.connect(db)
assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
got = dict(con.execute("select k, v from t"))
assert got == want, (len(got), len(want))
EOF"#
    ));
}

#[test]
fn read_completes_when_a_storage_node_dies() {
    if !fuse_available() {
        return;
    }
    // 256 KiB chunks, two copies each: most of the file is read after the
    // kill, from the surviving copies.
    let mut env = Env::with(1, false, |c| c.chunk_size = 256 << 10);
    let (mnt, tmp) = (env.mnt(0), env.scratch());
    sh(&format!(
        "head -c 40M /dev/urandom > {t}/big; cp {t}/big {m}/big; sha256sum < {t}/big > {t}/want",
        t = tmp.display(),
        m = mnt.display()
    ));
    let script = format!(
        r#"import hashlib, os, time
h = hashlib.sha256()
with open("{m}/big", "rb", buffering=0) as f:
    h.update(f.read(2 << 20))
    open("{t}/started", "w").close()
    deadline = time.time() + 60
    while not os.path.exists("{t}/go"):
        assert time.time() < deadline, "never told to go on"
        time.sleep(0.02)
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
print(h.hexdigest() + "  -")"#,
        m = mnt.display(),
        t = tmp.display()
    );
    let reader = std::thread::spawn(move || {
        Command::new("timeout")
            .args(["-s", "KILL", "120", "python3", "-c", &script])
            .output()
            .unwrap()
    });
    let started = tmp.join("started");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(std::time::Instant::now() < deadline, "reader never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    env.stop_node(0);
    std::fs::write(tmp.join("go"), b"").unwrap();
    let out = reader.join().unwrap();
    assert!(
        out.status.success(),
        "read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = std::fs::read_to_string(tmp.join("want")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn removed_file_stays_readable_by_handles_that_have_it_open() {
    if !fuse_available() {
        return;
    }
    // Chunks of removed files are deleted from the nodes at once.
    let env = Env::with(2, false, |c| {
        c.gc_delay = Duration::ZERO;
        c.chunk_size = 1 << 20;
    });
    let (a, b) = (env.mnt(0), env.mnt(1));
    sh(&format!(
        r#"python3 - <<'EOF'
import hashlib, os, time
a, b = "{a}", "{b}"
data = os.urandom(6 << 20)
open(a + "/f", "wb").write(data)
ra = open(a + "/f", "rb", buffering=0)
rb = os.open(b + "/f", os.O_RDONLY)
assert ra.read(1000) == data[:1000]
wa = open(a + "/w", "w+b", buffering=0); wa.write(b"abc")
os.unlink(a + "/f"); os.unlink(a + "/w")
assert not os.path.exists(a + "/f")
assert os.fstat(ra.fileno()).st_size == len(data), "fstat of an unlinked open file"
assert os.fstat(ra.fileno()).st_nlink == 0 and os.fstat(wa.fileno()).st_nlink == 0
# Wait until the chunks are gone from the nodes: mount b, which only had
# it open for reading from Cairn, cannot read it any more.
deadline = time.time() + 60
while True:
    os.posix_fadvise(rb, 0, 0, os.POSIX_FADV_DONTNEED)
    try:
        os.pread(rb, 1 << 20, 0)
    except OSError:
        break
    assert time.time() < deadline, "the removed file's chunks were never collected"
    time.sleep(0.1)
# Mount a's handle kept a copy.
assert ra.read() == data[1000:]
assert os.pread(ra.fileno(), 10, 5 << 20) == data[5 << 20:(5 << 20) + 10]
wa.write(b"def"); wa.seek(0)
assert os.pread(wa.fileno(), 6, 0) == b"abcdef"
ra.close(); wa.close(); os.close(rb)
assert sorted(os.listdir(a)) == []
EOF"#,
        a = a.display(),
        b = b.display()
    ));
}

/// Cues through the mount: `user.cairn.cues` shows a path's effective cues,
/// sets a directory's (files created below follow them) and clears them.
#[test]
fn cues_are_readable_and_settable_as_an_xattr() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(1);
    let m = env.mnt(0);
    let m = m.display();
    sh(&format!(
        r#"mkdir {m}/one
python3 - <<'PY'
import errno, os
d = "{m}/one"
try:
    os.getxattr(d, "user.cairn.cues")
    raise SystemExit("no cues yet, expected ENODATA")
except OSError as e:
    assert e.errno == errno.ENODATA, e
os.setxattr(d, "user.cairn.cues", b"rep=1,lax")
assert os.getxattr(d, "user.cairn.cues") == b"rep=1,lax"
assert "user.cairn.cues" not in os.listxattr(d), "virtual: read by name, never listed"
with open(d + "/f", "wb") as f:
    f.write(b"x" * 100000)
# The file inherits: its effective cues are the directory's (the
# persistent ones, rep=1, were fixed on it when it was created).
assert os.getxattr(d + "/f", "user.cairn.cues") == b"rep=1,lax"
try:
    os.setxattr(d, "user.cairn.cues", b"colour=red")
    raise SystemExit("a bad cue must be refused")
except OSError as e:
    assert e.errno == errno.EINVAL, e
assert os.getxattr(d, "user.cairn.cues") == b"rep=1,lax", "unchanged"
PY"#
    ));
    let c = env.cluster_client();
    let f = env
        ._rt
        .block_on(c.stat(&cairn_types::CairnPath::parse("/one/f").unwrap()))
        .unwrap();
    assert!(f.extents.iter().all(|e| e.nodes.len() == 1), "{f:?}");
    assert_eq!(f.cues.rep, Some(1));
    sh(&format!(
        r#"python3 -c '
import os, errno
d = "{m}/one"
os.removexattr(d, "user.cairn.cues")
try:
    os.getxattr(d, "user.cairn.cues")
    raise SystemExit("cleared")
except OSError as e:
    assert e.errno == errno.ENODATA, e
'"#
    ));
}

/// `hot=GROUP` set through the mount: a file written below is prefetched
/// to the group when it is closed (committed).
#[test]
fn hot_cue_through_the_mount_prefetches_on_close() {
    if !fuse_available() {
        return;
    }
    let env = Env::build(
        1,
        false,
        |c| c.chunk_size = 256 * 1024,
        Arc::new(|_, sc| sc.groups = vec!["actor".into()]),
        |_, _| {},
    );
    let m = env.mnt(0);
    let m = m.display();
    sh(&format!(
        r#"mkdir {m}/models
python3 - <<'PY'
import os
os.setxattr("{m}/models", "user.cairn.cues", b"hot=actor,rep=1")
with open("{m}/models/w.bin", "wb") as f:
    f.write(os.urandom(1 << 20))
assert os.getxattr("{m}/models/w.bin", "user.cairn.cues") == b"rep=1,hot=actor"
PY"#
    ));
    let c = env.cluster_client();
    let copies = env._rt.block_on(async {
        cairn_testkit::wait_for(Duration::from_secs(60), || {
            let c = c.clone();
            async move {
                let s = c.cluster_status().await.unwrap();
                // Four chunks, one durable copy each; the other node caches.
                (s.cache_copies == 4).then_some(s.cache_copies)
            }
        })
        .await
    });
    assert_eq!(copies, 4);
}

/// Cues written inside mount paths (`.cue/LIST`, `.lax`, `.RepLevel=2`)
/// apply to that access only: the cued path lists, reads, creates and makes
/// directories at the plain path, a file written through `.cue/rep=1` gets
/// one copy while one written next to it through the plain path gets the
/// default two, a malformed or unknown cue is `EINVAL`, and other dot names
/// stay ordinary.
#[test]
fn cues_inside_mount_paths_apply_per_access() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(1);
    let m = env.mnt(0);
    let m = m.display();
    let scratch = env.scratch();
    let scratch = scratch.display();
    sh(&format!(
        r#"mkdir -p {m}/data/logs
head -c 300000 /dev/urandom > {scratch}/x
cp {scratch}/x {m}/data/file
# Listing and reading through cue paths.
test "$(ls {m}/data/.cue/rep=2,lax/)" = "$(ls {m}/data)"
test "$(ls {m}/data/.cue/rep=2,lax/)" = "$(printf 'file\nlogs')"
cmp {scratch}/x {m}/data/.maxtime=250,anyversion/file
cmp {scratch}/x {m}/data/.cue/lax/file
cmp {scratch}/x {m}/.cue/rep=2/data/.RepLevel=1/file
test -d {m}/data/.cue/rep=2,lax/logs
# Creating through a cue path: /data/logs/y, uploaded with rep=1; next to
# it a file through the plain path.
cp {scratch}/x {m}/data/.cue/rep=1/logs/y
cp {scratch}/x {m}/data/logs/plain
cmp {scratch}/x {m}/data/logs/y
cmp {scratch}/x {m}/data/.cue/rep=1/logs/y
mkdir -p {m}/data/.cue/rep=1/newdir
test -d {m}/data/newdir
# Virtual entries are never listed.
test "$(ls -A {m}/data)" = "$(printf 'file\nlogs\nnewdir')"
test "$(ls -A {m}/data/.cue)" = ""
# Ordinary dot names stay ordinary.
mkdir {m}/data/.git
echo hi > {m}/data/.git/HEAD
echo rc > {m}/data/.bashrc
test "$(cat {m}/data/.git/HEAD)" = hi
test "$(cat {m}/data/.cue/lax/.bashrc)" = rc
python3 - <<'PY'
import errno, os
m = "{m}"
for bad in ["/data/.cue/colour=red/file", "/data/.maxtime=soon/file",
            "/data/.cue/rep=0/file", "/data/.cue/.cue/lax/file",
            "/data/.cue/rep=2,colour=red"]:
    try:
        os.stat(m + bad)
        raise SystemExit(bad + ": a bad cue must be refused")
    except OSError as e:
        assert e.errno == errno.EINVAL, (bad, e)
for bad in ["/data/.cue/colour=red/new", "/data/.lax"]:
    try:
        open(m + bad, "w").close()
        raise SystemExit(bad + ": must be refused")
    except OSError as e:
        assert e.errno in (errno.EINVAL, errno.EISDIR), (bad, e)
# The access's cues show in the attribute through the cued path only.
assert os.getxattr(m + "/data/.cue/rep=1,lax/file", "user.cairn.cues") == b"rep=1,lax"
# The plain path keeps the file's own: the 2 copies it was written with.
assert os.getxattr(m + "/data/file", "user.cairn.cues") == b"rep=2"
PY
"#
    ));
    let c = env.cluster_client();
    let stat = |p: &str| {
        env._rt
            .block_on(c.stat(&cairn_types::CairnPath::parse(p).unwrap()))
            .unwrap()
    };
    let y = stat("/data/logs/y");
    assert!(!y.extents.is_empty());
    assert!(y.extents.iter().all(|e| e.nodes.len() == 1), "{y:?}");
    assert_eq!(y.cues.rep, Some(1));
    let plain = stat("/data/logs/plain");
    assert!(
        plain.extents.iter().all(|e| e.nodes.len() == 2),
        "{plain:?}"
    );
    assert_ne!(plain.cues.rep, Some(1));
    assert_eq!(stat("/data/newdir").kind, cairn_types::InodeKind::Directory);
    assert!(stat("/data").cues.is_empty(), "cues are per access");
}

/// flock and fcntl locks exclude across two mounts (meta keeps them):
/// exclusive excludes, shared coexist, byte ranges conflict only where they
/// overlap, F_GETLK names the holder's range and pid, a blocked F_SETLKW is
/// woken by the holder's unlock, and a waiter killed while blocked never
/// gets the lock.
#[test]
fn locks_exclude_across_two_mounts() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(2);
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    sh(&format!(
        r#"
echo x > {a}/job.lock
# Exclusive flock: held on mount a, refused on mount b, free again after.
flock -n {a}/job.lock -c 'if flock -n {b}/job.lock true; then echo BOTH; exit 1; fi; echo excluded'
# A flock goes with the last close of its open file, which the kernel
# tells the mount a moment after the holder exits: wait for it (-w).
flock -w 30 {b}/job.lock true
# Shared flocks coexist; an exclusive one waits for both to go.
flock -w 30 -s {a}/job.lock -c 'flock -s -n {b}/job.lock -c "flock -n {a}/job.lock true && exit 1 || echo shared"'
"#
    ));
    sh(&format!(
        r#"python3 - <<'EOF'
import errno, fcntl, os, signal, struct, subprocess, sys, time
{PY_EXPECT}
A, B = "{a}/ranges", "{b}/ranges"
open(A, "w").write("0123456789" * 10)
fa = os.open(A, os.O_RDWR)
fcntl.lockf(fa, fcntl.LOCK_EX, 10, 0)            # bytes 0..9 on mount a
child = r'''
import errno, fcntl, os, struct, sys
fb = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fb, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 20)   # 20..29: no overlap
try:
    fcntl.lockf(fb, fcntl.LOCK_SH | fcntl.LOCK_NB, 5, 5) # 5..9: overlaps
    sys.exit("overlapping lock granted")
except OSError as e:
    assert e.errno in (errno.EAGAIN, errno.EACCES), e
q = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 100, 0)
t, _, start, length, pid = struct.unpack("hhqqi", fcntl.fcntl(fb, fcntl.F_GETLK, q))
print(t, start, length, pid)
'''
out = subprocess.run([sys.executable, "-c", child, B], capture_output=True, text=True)
assert out.returncode == 0, out.stderr
t, start, length, pid = map(int, out.stdout.split())
assert (t, start, length, pid) == (fcntl.F_WRLCK, 0, 10, os.getpid()), out.stdout

# A blocked F_SETLKW on mount b is woken by the unlock on mount a.
waiter = subprocess.Popen([sys.executable, "-c", r'''
import fcntl, os, sys, time
fb = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fb, fcntl.LOCK_EX, 10, 0)
print("granted", flush=True)
time.sleep(2)
''', B], stdout=subprocess.PIPE, text=True)
time.sleep(1.5)
assert waiter.poll() is None, "the waiter did not block"
fcntl.lockf(fa, fcntl.LOCK_UN, 10, 0)
assert waiter.stdout.readline().strip() == "granted"
# Now mount b holds 0..9: a's non-blocking attempt fails, then succeeds
# once the waiter exits (its close drops its locks).
expect(errno.EAGAIN, fcntl.lockf, fa, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
waiter.wait(timeout=60)
fcntl.lockf(fa, fcntl.LOCK_EX, 10, 0)

# A handled signal interrupts a blocked F_SETLKW (EINTR; Python raises the
# handler's exception), and the interrupted waiter holds nothing after.
out = subprocess.run([sys.executable, "-c", r'''
import fcntl, os, signal, sys
def on_alarm(*_):
    raise TimeoutError("alarm")
signal.signal(signal.SIGALRM, on_alarm)
fb = os.open(sys.argv[1], os.O_RDWR)
signal.alarm(1)
try:
    fcntl.lockf(fb, fcntl.LOCK_EX, 10, 0)
    print("granted")
except TimeoutError:
    print("interrupted")
''', B], capture_output=True, text=True, timeout=60)
assert out.stdout.strip() == "interrupted", out

# A waiter killed while blocked gives up its place: it never holds the lock.
victim = subprocess.Popen([sys.executable, "-c", r'''
import fcntl, os, sys
fb = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fb, fcntl.LOCK_EX, 10, 0)
print("WRONG: granted", flush=True)
''', B], stdout=subprocess.PIPE, text=True)
time.sleep(1.5)
assert victim.poll() is None
victim.send_signal(signal.SIGKILL)
victim.wait(timeout=60)
fcntl.lockf(fa, fcntl.LOCK_UN, 10, 0)
# Another process on mount b takes the range at once.
out = subprocess.run([sys.executable, "-c", r'''
import fcntl, os, sys
fb = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fb, fcntl.LOCK_EX, 10, 0)
print("ok")
''', B], capture_output=True, text=True, timeout=60)
assert out.stdout.strip() == "ok", out
assert victim.stdout.read() == ""
print("ranges ok")
EOF"#
    ));
}

/// SQLite with writers on two mounts: rollback journal across mounts
/// (meta's locks serialize the transactions, taking a lock moves the open
/// database to the last holder's version), WAL between processes of one
/// mount (its -shm is shared memory, which only one kernel can share: WAL
/// across machines is unsupported by SQLite on any network file system).
#[test]
fn sqlite_writers_on_two_mounts_keep_every_row() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(2);
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    sh_within(
        400,
        &format!(
            r#"python3 - <<'EOF'
import multiprocessing as mp, sqlite3, time
N = 15
def worker(db, tag):
    for i in range(N):
        c = sqlite3.connect(db, timeout=60, isolation_level=None)
        c.execute("BEGIN IMMEDIATE")
        (seen,) = c.execute("SELECT count(*) FROM t").fetchone()
        c.execute("INSERT INTO t(tag, i, seen) VALUES (?, ?, ?)", (tag, i, seen))
        c.execute("COMMIT")
        c.close()
def run(mode, dbs):
    c = sqlite3.connect(dbs[0], isolation_level=None)
    c.execute(f"PRAGMA journal_mode={{mode}}")
    c.execute("CREATE TABLE t(tag, i, seen)")
    c.close()
    ps = [mp.Process(target=worker, args=(db, str(k))) for k, db in enumerate(dbs)]
    [p.start() for p in ps]
    [p.join(300) for p in ps]
    assert all(p.exitcode == 0 for p in ps), [p.exitcode for p in ps]
    for db in dbs:
        c = sqlite3.connect(db)
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = c.execute("SELECT tag, i, seen FROM t").fetchall()
        # Every transaction saw every earlier one: no lost rows, no two
        # transactions at once.
        assert len(rows) == N * len(dbs), (mode, len(rows))
        assert sorted(r[2] for r in rows) == list(range(N * len(dbs))), (mode, rows)
        c.close()
run("DELETE", ["{a}/rollback.db", "{b}/rollback.db"])
run("TRUNCATE", ["{b}/truncate.db", "{a}/truncate.db"])
run("PERSIST", ["{a}/persist.db", "{b}/persist.db"])
run("WAL", ["{a}/wal.db", "{a}/wal.db"])
print("sqlite ok")
EOF"#
        ),
    );
}

/// Small files kept in meta (inline) behave as any file through the mount:
/// created, grown past the inline limit into chunks, truncated back, hard
/// linked and renamed, seen by a second mount and by the client library.
#[test]
fn small_files_kept_in_meta_grow_shrink_link_and_rename() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(2);
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    let client = env.cluster_client();
    let stat = |p: &str| {
        let p = cairn_types::CairnPath::parse(p).unwrap();
        env._rt.block_on(client.stat(&p)).unwrap()
    };
    sh(&format!(
        r#"python3 - <<'EOF'
a, b = "{a}", "{b}"
open(a + "/s", "wb").write(b"x" * 100)
assert open(b + "/s", "rb").read() == b"x" * 100
EOF"#
    ));
    let s = stat("/s");
    assert!(s.is_inline() && s.extents.is_empty(), "{s:?}");
    // Grown past the limit by an append: chunks, every byte kept.
    sh(&format!(
        r#"python3 - <<'EOF'
a, b = "{a}", "{b}"
with open(a + "/s", "ab") as f:
    f.write(b"y" * 10000)
assert open(b + "/s", "rb").read() == b"x" * 100 + b"y" * 10000
EOF"#
    ));
    let grown = stat("/s");
    assert!(!grown.is_inline() && grown.extents.len() == 1, "{grown:?}");
    assert_eq!(grown.version.0, s.version.0 + 1);
    // Truncated back: in meta again; links and renames carry the bytes.
    sh(&format!(
        r#"python3 - <<'EOF'
import os
a, b = "{a}", "{b}"
os.truncate(a + "/s", 50)
assert open(b + "/s", "rb").read() == b"x" * 50
os.link(a + "/s", a + "/hard")
os.rename(a + "/s", a + "/moved")
assert open(b + "/hard", "rb").read() == b"x" * 50
assert open(b + "/moved", "rb").read() == b"x" * 50
assert os.stat(b + "/hard").st_ino == os.stat(b + "/moved").st_ino
assert os.stat(b + "/moved").st_size == 50
with open(b + "/hard", "r+b") as f:
    f.seek(10); f.write(b"Z")
assert open(a + "/moved", "rb").read() == b"x" * 10 + b"Z" + b"x" * 39
os.unlink(a + "/moved")
assert open(b + "/hard", "rb").read() == b"x" * 10 + b"Z" + b"x" * 39
EOF"#
    ));
    let back = stat("/hard");
    assert!(back.is_inline() && back.size == 50, "{back:?}");
    assert_eq!(
        env._rt
            .block_on(client.get_bytes(&cairn_types::CairnPath::parse("/hard").unwrap()))
            .unwrap()[10],
        b'Z'
    );
}

/// `--writeback`: closes return before the upload; the files reach the
/// cluster in close order (a later file is never visible before an earlier
/// one), fsync waits for its file, and unmounting uploads what is left.
#[test]
fn writeback_uploads_in_close_order_and_fsync_waits() {
    if !fuse_available() {
        return;
    }
    let mut env = Env::build(
        2,
        false,
        |_| {},
        Arc::new(|_, _| {}),
        |i, o| o.writeback = i == 0,
    );
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    sh(&format!(
        r#"python3 - <<'EOF'
import os, time
a, b = "{a}", "{b}"
os.mkdir(a + "/wb")
n = 300
for i in range(n):
    with open(f"{{a}}/wb/f{{i:04}}", "wb") as f:
        f.write(bytes([i % 251]) * (100 + 37 * i))
# This mount sees its own files at once.
assert open(a + "/wb/f0299", "rb").read() == bytes([299 % 251]) * (100 + 37 * 299)
# Another mount sees the names at once (creates are not deferred) and
# the bytes as they are uploaded: the files already whole are always a
# prefix of the close order.
def whole(i):
    try:
        return open(f"{{b}}/wb/f{{i:04}}", "rb").read() == bytes([i % 251]) * (100 + 37 * i)
    except FileNotFoundError:
        return False
deadline = time.time() + 120
while True:
    done = [whole(i) for i in range(n)]
    k = done.index(False) if False in done else n
    assert not any(done[k:]), f"file {{done.index(True, k)}} uploaded before file {{k}}"
    if k == n:
        break
    assert time.time() < deadline, f"{{k}} of {{n}} uploaded"
    time.sleep(0.2)
# fsync returns once the file is uploaded: the other mount reads it then.
fd = os.open(a + "/synced", os.O_WRONLY | os.O_CREAT)
os.write(fd, b"durable now")
os.fsync(fd)
assert open(b + "/synced", "rb").read() == b"durable now"
os.close(fd)
# Closed but maybe not uploaded when the mount goes.
for i in range(50):
    open(f"{{a}}/last{{i}}", "wb").write(b"last" * i)
EOF"#
    ));
    // Unmounting the write-back mount uploads what it still holds.
    env.mounts.remove(0);
    sh(&format!(
        r#"python3 - <<'EOF'
b = "{b}"
for i in range(50):
    assert open(f"{{b}}/last{{i}}", "rb").read() == b"last" * i, i
EOF"#
    ));
}

/// `--consistency strict` caches nothing: a name another mount creates is
/// seen at once even right after this mount found it missing, and so is a
/// size another mount wrote.
#[test]
fn strict_mounts_cache_no_names_or_attributes() {
    if !fuse_available() {
        return;
    }
    let env = Env::build(
        2,
        false,
        |_| {},
        Arc::new(|_, _| {}),
        |i, o| {
            if i == 1 {
                o.cache_times = cairn_fuse::CacheTimes::NONE;
            }
        },
    );
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    sh(&format!(
        r#"python3 - <<'EOF'
import os
a, b = "{a}", "{b}"
for i in range(20):
    assert not os.path.exists(f"{{b}}/n{{i}}")
    open(f"{{a}}/n{{i}}", "wb").write(b"x" * i)
    assert os.path.exists(f"{{b}}/n{{i}}"), i
    assert os.stat(f"{{b}}/n{{i}}").st_size == i, i
    open(f"{{a}}/n{{i}}", "ab").write(b"y")
    assert os.stat(f"{{b}}/n{{i}}").st_size == i + 1, i
    os.unlink(f"{{a}}/n{{i}}")
    assert not os.path.exists(f"{{b}}/n{{i}}"), i
EOF"#
    ));
}

/// Cairn's own bookkeeping (`/.cairn`, the S3 gateway's keys) is neither
/// listed nor reachable through the mount, nor can it be made there.
#[test]
fn the_system_directory_is_not_part_of_the_mount() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(1);
    let client = env.cluster_client();
    let p = |s: &str| cairn_types::CairnPath::parse(s).unwrap();
    env._rt
        .block_on(client.mkdir(&p("/.cairn/s3/keys"), true))
        .unwrap();
    env._rt
        .block_on(client.put_bytes(&p("/.cairn/s3/keys/AK"), b"secret", Default::default()))
        .unwrap();
    let m = env.mnt(0);
    let m = m.display();
    sh(&format!(
        r#"python3 - <<'EOF'
import errno, os
m = "{m}"
{PY_EXPECT}
open(m + "/visible", "w").write("x")
assert os.listdir(m) == ["visible"], os.listdir(m)
expect(errno.ENOENT, os.stat, m + "/.cairn")
expect(errno.ENOENT, open, m + "/.cairn/s3/keys/AK")
expect(errno.EACCES, os.mkdir, m + "/.cairn")
expect(errno.EACCES, os.rename, m + "/visible", m + "/.cairn")
os.mkdir(m + "/sub")
os.mkdir(m + "/sub/.cairn")  # only the top-level name is Cairn's
assert os.listdir(m + "/sub") == [".cairn"]
EOF"#
    ));
    // `df` shows what can be stored: the nodes' free space over the
    // default redundancy (2 here).
    let status = env._rt.block_on(client.cluster_status()).unwrap();
    let raw: u64 = status.nodes.iter().map(|n| n.stats.free).sum();
    let out = sh(&format!(
        "python3 -c 'import os; v = os.statvfs(\"{m}\"); print(v.f_bavail * v.f_frsize)'"
    ));
    let shown: u64 = out.trim().parse().unwrap();
    let want = raw / 2;
    assert!(
        shown.abs_diff(want) < want / 20 + (64 << 20),
        "df {shown}, want about {want}"
    );
}

/// FIFOs, sockets and device nodes exist in the namespace as what they are:
/// stat, chmod, rename, link and unlink work on them, another mount sees
/// them, and a FIFO carries data between local processes (the kernel
/// serves it). Device nodes are root's, as on ext4.
#[test]
fn fifos_sockets_and_device_nodes() {
    if !fuse_available() {
        return;
    }
    let env = Env::with(2, true, |_| {});
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    sh(&format!(
        r#"python3 - <<'EOF'
import errno, os, socket, stat, threading
a, b = "{a}", "{b}"
{PY_EXPECT}
os.mkfifo(a + "/fifo", 0o640)
st = os.stat(b + "/fifo")
assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640, oct(st.st_mode)
def writer():
    with open(a + "/fifo", "wb") as f:
        f.write(b"through the pipe")
t = threading.Thread(target=writer); t.start()
with open(a + "/fifo", "rb") as f:
    assert f.read() == b"through the pipe"
t.join()
s = socket.socket(socket.AF_UNIX)
s.bind(a + "/sock")
assert stat.S_ISSOCK(os.stat(b + "/sock").st_mode)
s.close()
os.mknod(a + "/tty", 0o600 | stat.S_IFCHR, os.makedev(5, 1))
st = os.stat(b + "/tty")
assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 5 and os.minor(st.st_rdev) == 1
os.mknod(a + "/disk", 0o600 | stat.S_IFBLK, os.makedev(8, 3))
assert stat.S_ISBLK(os.stat(b + "/disk").st_mode) and os.stat(b + "/disk").st_rdev == os.makedev(8, 3)
os.chmod(a + "/fifo", 0o600)
os.rename(a + "/fifo", a + "/fifo2")
os.link(a + "/fifo2", a + "/fifo3")
assert os.stat(b + "/fifo3").st_nlink == 2 and stat.S_IMODE(os.stat(b + "/fifo3").st_mode) == 0o600
assert sorted(os.listdir(b)) == ["disk", "fifo2", "fifo3", "sock", "tty"], os.listdir(b)
for n in ["disk", "fifo2", "fifo3", "sock", "tty"]:
    os.unlink(a + "/" + n)
assert os.listdir(b) == []
EOF"#
    ));
    // A device node needs root, as on ext4; a FIFO does not.
    let m = env.mnt(0);
    std::fs::create_dir(m.join("pub")).unwrap();
    sh(&format!("chmod 1777 {}/pub", m.display()));
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args)
            .output()
            .unwrap()
    };
    let fifo = m.join("pub/mine");
    assert!(as_nobody(&["mkfifo", fifo.to_str().unwrap()])
        .status
        .success());
    let dev = m.join("pub/dev");
    let out = as_nobody(&["mknod", dev.to_str().unwrap(), "c", "1", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not permitted"),
        "{err}"
    );
}

#[test]
fn erasure_coded_files_through_the_mount() {
    if !fuse_available() {
        return;
    }
    let mut env = Env::new(1);
    let m = env.mnt(0);
    let m = m.display();
    let scratch = env.scratch();
    let scratch = scratch.display();
    // Written through a cue path, then rewritten in place: the new version
    // keeps the file's ec=1+1 (one data and one parity shard, on both nodes).
    sh(&format!(
        r#"mkdir {m}/cold
head -c 3000000 /dev/urandom > {scratch}/x
cp {scratch}/x {m}/cold/.cue/ec=1+1/f
cmp {scratch}/x {m}/cold/f
head -c 12288 /dev/urandom > {scratch}/patch
dd if={scratch}/patch of={scratch}/x bs=4096 seek=100 conv=notrunc status=none
dd if={scratch}/patch of={m}/cold/f bs=4096 seek=100 conv=notrunc status=none
cmp {scratch}/x {m}/cold/f
python3 -c 'import os, sys; v = os.getxattr(sys.argv[1], "user.cairn.cues"); assert v == b"ec=1+1", v' {m}/cold/f
"#
    ));
    let c = env.cluster_client();
    let f = env
        ._rt
        .block_on(c.stat(&cairn_types::CairnPath::parse("/cold/f").unwrap()))
        .unwrap();
    assert!(f.version.0 >= 2, "{f:?}");
    assert!(
        f.extents
            .iter()
            .all(|e| e.ec.is_some() && e.nodes.len() == 2),
        "{f:?}"
    );
    // One node gone: the mount reads the file from the other's shard.
    let gone = env.cluster.node_index(f.extents[0].nodes[0]).unwrap();
    env.stop_node(gone);
    sh(&format!("cmp {scratch}/x {m}/cold/f"));
}

/// Where the Python that unprivileged users may run lives: root's own
/// `python3` may be one they cannot reach (pyenv under /root).
fn system_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Differences from the local file system that Cairn makes on purpose,
/// as probe keys, each with the reason.
const POSIX_DIFFERENCES: &[(&str, &str)] = &[
    (
        "/steps/time.utime_exact.pre_epoch/atime_ns",
        "times before 1970 are kept as 1970 (times are unsigned nanoseconds)",
    ),
    (
        "/steps/time.utime_exact.pre_epoch/mtime_ns",
        "times before 1970 are kept as 1970 (times are unsigned nanoseconds)",
    ),
];

/// The same sequence of calls (tests/posix_probe.py: each call's result
/// or errno, and the stat fields after it) on the mount and on a local
/// directory, as root and as an unprivileged user; every result must be
/// the same but for [`POSIX_DIFFERENCES`].
#[test]
fn posix_semantics_match_the_local_file_system() {
    if !fuse_available() {
        return;
    }
    let env = Env::build(
        1,
        true,
        |_| {},
        Arc::new(|_, _| {}),
        |_, o| o.devices = true,
    );
    let scratch = env.scratch();
    let probe = scratch.join("posix_probe.py");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/posix_probe.py"),
        &probe,
    )
    .unwrap();
    let local = scratch.join("local");
    let mnt = env.mnt(0);
    for base in [&local, &mnt] {
        std::fs::create_dir_all(base.join("root")).unwrap();
        std::fs::create_dir_all(base.join("user")).unwrap();
    }
    let (s, l, m, py) = (
        scratch.display(),
        local.display(),
        mnt.display(),
        system_python(),
    );
    // The unprivileged user reaches the probe and both trees.
    sh(&format!(
        "chmod 755 {s} {l} {l}/root {m}/root; chmod 644 {s}/posix_probe.py; \
         chmod 777 {l}/user {m}/user"
    ));
    let run = |dir: &str, user: bool| -> String {
        let out = match user {
            false => Command::new(py).arg(&probe).arg(dir).output(),
            true => Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", py])
                .arg(&probe)
                .args([dir, "--as-user"])
                .output(),
        }
        .unwrap();
        assert!(
            out.status.success(),
            "probe in {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for (sub, user) in [("root", false), ("user", true)] {
        let want = run(&format!("{l}/{sub}"), user);
        let got = run(&format!("{m}/{sub}"), user);
        let want_path = scratch.join(format!("{sub}-local.json"));
        let got_path = scratch.join(format!("{sub}-cairn.json"));
        std::fs::write(&want_path, &want).unwrap();
        std::fs::write(&got_path, &got).unwrap();
        // Flattened to one line per result, so a failure names each call.
        let diff = sh(&format!(
            r#"python3 - {want} {got} <<'EOF'
import json, sys
def flat(x, pre=""):
    if isinstance(x, dict):
        return {{k: v for key, val in x.items() for k, v in flat(val, pre + "/" + str(key)).items()}}
    if isinstance(x, list):
        out = {{}}
        for i, v in enumerate(x):
            key = v["name"] if isinstance(v, dict) and "name" in v else i
            out.update(flat(v, pre + "/" + str(key)))
        return out
    return {{pre: x}}
want, got = (flat(json.load(open(p))) for p in sys.argv[1:3])
assert len(want) > 500, len(want)
for k in sorted(set(want) | set(got)):
    if want.get(k) != got.get(k):
        print(k, "local:", want.get(k), "cairn:", got.get(k))
EOF"#,
            want = want_path.display(),
            got = got_path.display(),
        ));
        let unexpected: Vec<&str> = diff
            .lines()
            .filter(|l| {
                let key = l.split(' ').next().unwrap_or("");
                !POSIX_DIFFERENCES.iter().any(|(k, _)| *k == key)
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "as {sub}, the mount differs from the local file system:\n{}",
            unexpected.join("\n")
        );
    }
}

/// What build tools and packagers do: `make` decides by mtimes and runs a
/// recipe through a FIFO; `python -m venv` makes a virtual environment and
/// pip runs from it; `tar --xattrs` takes a tree of FIFOs, device nodes,
/// set-group-ID directories and extended attributes in and out, exact.
#[test]
fn make_venv_and_tar_with_special_files_in_the_mount() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(1);
    let (mnt, tmp) = (env.mnt(0), env.scratch());
    let (mnt, tmp) = (mnt.display(), tmp.display());
    sh(&format!(
        "mkdir {mnt}/build; cd {mnt}/build; echo hello > in.txt; \
         printf 'out.txt: in.txt | pipe\\n\\t(cat $< > pipe &); tr a-z A-Z < pipe > $@\\npipe:\\n\\tmkfifo $@\\n' > Makefile; \
         make -s; test \"$(cat out.txt)\" = HELLO; test -p pipe; \
         make | grep -q 'is up to date'; \
         echo again > in.txt; make -s; test \"$(cat out.txt)\" = AGAIN; \
         make | grep -q 'is up to date'"
    ));
    let py = system_python();
    sh_within(
        300,
        &format!(
            "{py} -m venv {mnt}/venv; {mnt}/venv/bin/python -c 'import sys; assert sys.prefix == \"{mnt}/venv\", sys.prefix'; \
             {mnt}/venv/bin/python -m pip --version | grep -q '{mnt}/venv'"
        ),
    );
    // Every attribute tar keeps, compared path by path (content by hash).
    let describe = r#"python3 - "$1" <<'EOF'
import hashlib, os, stat, sys
root = sys.argv[1]
for d, dirs, files in sorted(os.walk(root)):
    for n in sorted(dirs + files):
        p = os.path.join(d, n)
        s = os.lstat(p)
        x = sorted((a, os.getxattr(p, a, follow_symlinks=False)) for a in os.listxattr(p, follow_symlinks=False))
        h = hashlib.sha256(open(p, "rb").read()).hexdigest() if stat.S_ISREG(s.st_mode) else ""
        link = os.readlink(p) if stat.S_ISLNK(s.st_mode) else ""
        size = s.st_size if not stat.S_ISDIR(s.st_mode) else 0
        print(os.path.relpath(p, root), oct(s.st_mode), s.st_uid, s.st_gid, s.st_rdev, s.st_mtime_ns, size, h, link, x)
EOF"#;
    sh(&format!(
        "describe() {{ {describe}\n}}; \
         src={tmp}/src; mkdir -p $src/d/sub $src/shared; echo data > $src/d/f; head -c 300000 /dev/urandom > $src/d/big; \
         mkfifo -m 640 $src/d/fifo; mknod -m 600 $src/d/tty c 5 1; mknod -m 660 $src/d/disk b 8 3; \
         ln -s f $src/d/link; chown 1234:2345 $src/d/f; chmod 2775 $src/shared; chgrp 77 $src/shared; \
         setfattr -n user.origin -v robot7 $src/d/f 2>/dev/null || python3 -c \"import os; os.setxattr('$src/d/f', 'user.origin', b'robot7')\"; \
         python3 -c \"import os; os.setxattr('$src/d', 'user.kind', b'dir')\"; \
         touch -d '2011-12-13 14:15:16.123456789 UTC' $src/d/big; \
         tar --format=posix --xattrs --xattrs-include='*' -C $src -cpf {tmp}/in.tar .; \
         mkdir {mnt}/t; tar --xattrs --xattrs-include='*' -C {mnt}/t -xpf {tmp}/in.tar; \
         describe $src > {tmp}/want; test $(wc -l < {tmp}/want) = 9; grep -q user.origin {tmp}/want; \
         describe {mnt}/t > {tmp}/got; diff {tmp}/want {tmp}/got; \
         tar --format=posix --xattrs --xattrs-include='*' -C {mnt}/t -cpf {tmp}/out.tar .; \
         mkdir {tmp}/back; tar --xattrs --xattrs-include='*' -C {tmp}/back -xpf {tmp}/out.tar; \
         describe {tmp}/back > {tmp}/back.txt; diff {tmp}/want {tmp}/back.txt; \
         grep -q \"^d/tty 0o20600 0 0 $(python3 -c 'import os; print(os.makedev(5, 1))') \" {tmp}/got"
    ));
}

/// Taking a lock drops the names the kernel caches next to the locked
/// file: the last holder on another mount may have removed or made them
/// (SQLite checks for its journal with `access` right after locking).
#[test]
fn a_lock_refreshes_the_names_next_to_the_file() {
    if !fuse_available() {
        return;
    }
    let env = Env::new(2);
    let (a, b) = (env.mnt(0), env.mnt(1));
    let (a, b) = (a.display(), b.display());
    sh(&format!(
        r#"python3 - <<'EOF'
import fcntl, os
a, b = "{a}", "{b}"
os.mkdir(a + "/d")
for n in ("db", "db-journal"):
    open(a + "/d/" + n, "w").close()
# Mount b caches both names (1 s entry timeout), then a removes one.
assert os.path.exists(b + "/d/db-journal")
f = open(b + "/d/db", "r+")
os.unlink(a + "/d/db-journal")
fcntl.lockf(f, fcntl.LOCK_EX)
assert not os.path.exists(b + "/d/db-journal"), "a name removed by the last holder is still seen"
fcntl.lockf(f, fcntl.LOCK_UN)
f.close()
EOF"#
    ));
}
