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
    spawn_env(config, args, ready, mountpoint, &[]).0
}

/// [`spawn`] with more environment; also returns the line that said `ready`.
fn spawn_env(
    config: &Path,
    args: &[&str],
    ready: &str,
    mountpoint: Option<&Path>,
    envs: &[(&str, &str)],
) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
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
                return (proc, line);
            }
            Ok(_) => {}
            Err(_) => panic!("cairn {args:?} did not print {ready:?}"),
        }
    }
}

/// Whether this machine cannot mount (says so, for the skipped test).
fn no_fuse() -> bool {
    let missing =
        !Path::new("/dev/fuse").exists() || Command::new("fusermount3").arg("-V").output().is_err();
    if missing {
        eprintln!("skipping: needs /dev/fuse and fusermount3 (Debian: fuse3)");
    }
    missing
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
    if no_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let cache = dir.path().join("cache");
    let mount_args = [
        "mount",
        m,
        "--foreground",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
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

    // `fusermount3 -u` ends the process. This mount serves its metrics.
    let with_metrics: Vec<&str> = mount_args
        .iter()
        .copied()
        .chain(["--metrics-listen", "127.0.0.1:0"])
        .collect();
    let (mount, line) = spawn_env(&config, &with_metrics, "mounted on", Some(&mnt), &[]);
    assert_eq!(
        std::fs::read(mnt.join("hello.txt")).unwrap(),
        b"through the mount\n"
    );
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no metrics URL in {line:?}"))
        .trim_end_matches(')');
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let key = std::fs::read_to_string(data.join("meta/client.key")).unwrap();
    assert!(scrape(addr, None).starts_with("HTTP/1.1 401"));
    let page = scrape(addr, Some(key.trim()));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for series in [
        "cairn_mount_requests_total{op=\"lookup\"}",
        "cairn_mount_requests_total{op=\"read\"}",
        "cairn_mount_request_duration_seconds_count{op=\"open\"}",
        "cairn_client_cache_lookups_total{cache=\"opens\",outcome=\"miss\"}",
    ] {
        let n: f64 = page
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .unwrap_or_else(|| panic!("no {series} in\n{page}"))
            .trim()
            .parse()
            .unwrap();
        assert!(n >= 1.0, "{series} is {n}");
    }
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    mount.exits_ok(Duration::from_secs(20));
}

/// `GET /metrics` from `addr`, with the client key as a bearer token if
/// given: the whole response.
fn scrape(addr: &str, key: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A background mount found by its pid: killed and detached when dropped.
struct Daemon {
    pid: i32,
    mountpoint: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if alive(self.pid) {
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.mountpoint)
            .stderr(Stdio::null())
            .status();
    }
}

fn alive(pid: i32) -> bool {
    // Not our child (it was re-parented when the daemon's parent exited):
    // signal 0 says whether it still exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Run `cairn` to completion with a deadline (a background mount that kept
/// our pipes would hang `output()`).
fn run_with_deadline(config: &Path, args: &[&str], limit: Duration) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("XDG_CONFIG_HOME", config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(cmd.output().expect("run cairn"));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("cairn {args:?} did not finish within {limit:?}"))
}

#[test]
fn mount_backgrounds_once_live_and_caps_its_cache() {
    if no_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let data = dir.path().join("data");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let cache = dir.path().join("cache");
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

    // The parent returns 0 only once the mount is live, and leaves the
    // mount running in the background.
    let args = [
        "mount",
        m,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--cache-size",
        "1MiB",
    ];
    let out = run_with_deadline(&config, &args, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = stdout
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"));
    let daemon = Daemon {
        pid,
        mountpoint: mnt.clone(),
    };
    assert!(
        is_mounted(&mnt),
        "the parent exited before the mount was live"
    );
    assert!(alive(pid));

    // Files open for writing may stage 1 MiB together; past it, ENOSPC.
    let script = format!(
        r#"import errno, os
def write_all(f, data):
    while data:
        data = data[f.write(data):]
open("{m}/small", "wb").write(b"x" * 600_000)
f = open("{m}/big", "wb", buffering=0)
try:
    write_all(f, b"y" * (2 << 20))
    raise AssertionError("wrote 2 MiB through a 1 MiB cache")
except OSError as e:
    assert e.errno == errno.ENOSPC, e
f.close()
a = open("{m}/a", "wb", buffering=0); a.write(b"1" * 700_000)
b = open("{m}/b", "wb", buffering=0)
try:
    b.write(b"2" * 700_000)
    raise AssertionError("two open files staged 1.4 MiB through a 1 MiB cache")
except OSError as e:
    assert e.errno == errno.ENOSPC, e
a.close()
b.write(b"2" * 700_000); b.close()
assert os.path.getsize("{m}/b") == 700_000 and os.path.getsize("{m}/small") == 600_000
"#
    );
    let py = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );

    // The CLI shows what the mount made: symlinks, owners.
    std::os::unix::fs::symlink("small", mnt.join("link")).unwrap();
    let ls = run_with_deadline(&config, &["ls", "-l", "/"], Duration::from_secs(30));
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines()
            .any(|l| l.starts_with('l') && l.ends_with("link -> small")),
        "{ls}"
    );
    let st = run_with_deadline(&config, &["stat", "/link"], Duration::from_secs(30));
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.contains("symlink") && st.contains("target:   small"),
        "{st}"
    );
    let cat = run_with_deadline(&config, &["cat", "/link"], Duration::from_secs(30));
    assert!(!cat.status.success());
    assert!(String::from_utf8_lossy(&cat.stderr).contains("symbolic link to small"));
    let st = run_with_deadline(&config, &["stat", "/small"], Duration::from_secs(30));
    let owner = unsafe { format!("owner:    {}:{}", libc::getuid(), libc::getgid()) };
    assert!(String::from_utf8_lossy(&st.stdout).contains(&owner));

    // `fusermount3 -u` ends the background process.
    assert!(Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the background mount did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(daemon);

    // A mount that cannot start makes the parent fail, with the reason.
    let missing = dir.path().join("no-such-dir");
    let bad = [
        "mount",
        missing.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let out = run_with_deadline(&config, &bad, Duration::from_secs(60));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("before mounting"), "{err}");
}

/// `cairn meta` and `nodes` `cairn storage` processes in `dir`, all live.
struct Cluster {
    _meta: Proc,
    meta: String,
    client_key: PathBuf,
    nodes: Vec<Proc>,
}

impl Cluster {
    fn start(config: &Path, dir: &Path, nodes: usize) -> Cluster {
        let d = |p: &str| dir.join(p);
        let (meta_proc, banner) = spawn_env(
            config,
            &[
                "meta",
                "--data",
                d("meta").to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            "listening on",
            None,
            &[],
        );
        let meta = banner
            .split_whitespace()
            .find(|w| w.contains(':') && w.starts_with(|c: char| c.is_ascii_digit()))
            .expect("meta's address")
            .to_string();
        let secret = d("meta/cluster.secret");
        let nodes = (0..nodes)
            .map(|i| {
                let data = d(&format!("node-{i}"));
                let args = [
                    "storage",
                    "--data",
                    data.to_str().unwrap(),
                    "--meta",
                    &meta,
                    "--listen",
                    "127.0.0.1:0",
                    "--secret-file",
                    secret.to_str().unwrap(),
                    "--reserve",
                    "0",
                ];
                spawn_env(config, &args, "listening on", None, &[]).0
            })
            .collect::<Vec<_>>();
        let c = Cluster {
            _meta: meta_proc,
            meta,
            client_key: d("meta/client.key"),
            nodes,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = run_cli(config, &c.env(), &["cluster", "status"]);
            let s = String::from_utf8(out).unwrap();
            if s.matches(" live").count() >= c.nodes.len() {
                return c;
            }
            assert!(Instant::now() < deadline, "nodes never live: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The environment that points a client at this cluster.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("CAIRN_META".into(), self.meta.clone()),
            (
                "CAIRN_SECRET_FILE".into(),
                self.client_key.to_str().unwrap().into(),
            ),
        ]
    }
}

fn strs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Run a `cairn` command against `env`'s cluster; it must succeed.
fn run_cli(config: &Path, env: &[(String, String)], args: &[&str]) -> Vec<u8> {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("XDG_CONFIG_HOME", config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cairn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn read_through_the_mount_completes_when_a_storage_process_is_killed() {
    if no_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p);
    let config = d("config");
    std::fs::create_dir(d("mnt")).unwrap();
    let cluster = Cluster::start(&config, dir.path(), 2);
    let env = cluster.env();
    let mut nodes = cluster.nodes;
    let cli = |args: &[&str]| run_cli(&config, &env, args);
    // 40 MiB in 256 KiB chunks, two copies each.
    let big = d("big");
    let mut data = vec![0u8; 40 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    std::fs::write(&big, &data).unwrap();
    cli(&[
        "put",
        big.to_str().unwrap(),
        "/big",
        "--rep",
        "2",
        "--chunk-size",
        "256KiB",
    ]);
    let mnt = d("mnt");
    let cache = d("cache");
    let mount_args = [
        "mount",
        mnt.to_str().unwrap(),
        "--foreground",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let _mount = spawn_env(&config, &mount_args, "mounted on", Some(&mnt), &strs(&env)).0;

    let script = format!(
        r#"import os, sys, time
want = open("{big}", "rb").read()
got = bytearray()
with open("{mnt}/big", "rb", buffering=0) as f:
    got += f.read(2 << 20)
    open("{started}", "w").close()
    deadline = time.time() + 60
    while not os.path.exists("{go}"):
        assert time.time() < deadline, "never told to go on"
        time.sleep(0.02)
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        got += b
assert bytes(got) == want, "content differs"
"#,
        big = big.display(),
        mnt = mnt.display(),
        started = d("started").display(),
        go = d("go").display(),
    );
    let reader = std::thread::spawn(move || {
        Command::new("timeout")
            .args(["-s", "KILL", "120", "python3", "-c", &script])
            .output()
            .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d("started").exists() {
        assert!(Instant::now() < deadline, "the reader never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let node = nodes.remove(0);
    drop(node); // SIGKILL
    std::fs::write(d("go"), b"").unwrap();
    let out = reader.join().unwrap();
    assert!(
        out.status.success(),
        "read through the mount failed after a storage node was killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Locks through real `cairn mount` processes: a flock held through one
/// mount excludes the other mount and `cairn lock`; SIGKILL of the holding
/// mount releases it once its lease runs out, and not before; `cairn lock`
/// holds it while its command runs and passes on the exit code.
#[test]
fn a_killed_mounts_locks_go_after_its_lease_and_cairn_lock_shares_them() {
    if no_fuse() {
        return;
    }
    const LEASE: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let data = dir.path().join("data");
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
    let mount = |name: &str| {
        let mnt = dir.path().join(name);
        std::fs::create_dir(&mnt).unwrap();
        let cache = dir.path().join(format!("{name}-cache"));
        let args = [
            "mount",
            mnt.to_str().unwrap(),
            "--foreground",
            "--lock-lease",
            "3s",
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        (spawn(&config, &args, "mounted on", Some(&mnt)), mnt)
    };
    let (mount_a, a) = mount("a");
    let (_mount_b, b) = mount("b");
    std::fs::write(a.join("job.lock"), b"").unwrap();
    let try_flock = |m: &Path| {
        Command::new("flock")
            .arg("-n")
            .arg(m.join("job.lock"))
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    let cairn_lock = |args: &[&str]| {
        Command::new(BIN)
            .arg("lock")
            .args(args)
            .env("XDG_CONFIG_HOME", &config)
            .env("RUST_LOG", "error")
            .status()
            .unwrap()
            .code()
    };

    // `cairn lock` excludes the mounts while its command runs, and exits
    // with the command's code.
    let inner = format!(
        "if flock -n {} true; then exit 1; else exit 7; fi",
        b.join("job.lock").display()
    );
    assert_eq!(
        cairn_lock(&["/job.lock", "--", "sh", "-c", &inner]),
        Some(7)
    );

    // A holder on mount a, as its own process.
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import fcntl, os, sys, time\n\
             fd = os.open(sys.argv[1], os.O_RDWR)\n\
             fcntl.flock(fd, fcntl.LOCK_EX)\n\
             print('locked', flush=True)\n\
             time.sleep(600)",
        ])
        .arg(a.join("job.lock"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    assert!(!try_flock(&b), "both mounts hold the exclusive flock");
    assert_eq!(cairn_lock(&["-n", "/job.lock", "--", "true"]), Some(1));

    // SIGKILL the holder's mount: the lock stays for the lease, then goes.
    let mut mount_a = mount_a;
    mount_a.child.kill().unwrap();
    mount_a.child.wait().unwrap();
    let killed = Instant::now();
    let held_after_kill = !try_flock(&b);
    if killed.elapsed() < LEASE / 3 {
        assert!(
            held_after_kill,
            "the lock went with the mount, before its lease ran out"
        );
    }
    let end = killed + Duration::from_secs(60);
    while !try_flock(&b) {
        assert!(Instant::now() < end, "the dead mount's lock never went");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The mount renews every third of the lease: the lock lives at least
    // two thirds of it past the kill.
    assert!(
        killed.elapsed() >= LEASE * 2 / 3 - Duration::from_millis(100),
        "{:?}",
        killed.elapsed()
    );
    let _ = holder.kill();
    let _ = holder.wait();
    drop(mount_a);
    assert_eq!(cairn_lock(&["-n", "/job.lock", "--", "true"]), Some(0));
}

/// What a close acknowledged is durable: right after `cp -r` of small files
/// (kept in meta) and larger ones (chunks) returns, the mount and a storage
/// node are SIGKILLed, and every file reads back byte-exact through a new
/// mount, as do removals and renames made before the kill.
#[test]
fn closed_files_survive_sigkill_of_the_mount_and_of_a_storage_node() {
    if no_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p);
    let config = d("config");
    let cluster = Cluster::start(&config, dir.path(), 3);
    let env = cluster.env();
    let mut nodes = cluster.nodes;
    // A tree of empty, small (inline) and chunked files.
    let src = d("src");
    for i in 0..120usize {
        let sub = src.join(format!("d{}", i % 6));
        std::fs::create_dir_all(&sub).unwrap();
        let len = match i % 4 {
            0 => 0,
            1 => 100 + i,
            2 => 2048,
            _ => 20_000 + 997 * i,
        };
        let data: Vec<u8> = (0..len).map(|j| (j * 31 + i * 7) as u8).collect();
        std::fs::write(sub.join(format!("f{i}")), data).unwrap();
    }
    let mount = |name: &str| {
        std::fs::create_dir(d(name)).unwrap();
        let (mnt, cache) = (d(name), d(&format!("{name}-cache")));
        let args = [
            "mount",
            mnt.to_str().unwrap(),
            "--foreground",
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        spawn_env(&config, &args, "mounted on", Some(&d(name)), &strs(&env)).0
    };
    let a = mount("a");
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (a_dir, b_dir) = (d("a"), d("b"));
    let (srcs, am, bm) = (src.display(), a_dir.display(), b_dir.display());
    sh(&format!(
        "cp -r {srcs} {am}/tree && mv {am}/tree/d0/f0 {am}/tree/d0/renamed && rm {am}/tree/d1/f1"
    ));
    // Killed right after the last call returned, with no unmount.
    drop(nodes.remove(0));
    drop(a);
    let b = mount("b");
    sh(&format!(
        "mv {srcs}/d0/f0 {srcs}/d0/renamed && rm {srcs}/d1/f1 && diff -r {srcs} {bm}/tree"
    ));
    drop(b);
}

/// Run `cairn` with extra environment: (success, stdout, stderr).
fn try_cli(config: &Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env("XDG_CONFIG_HOME", config)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An identity made with `cairn key create --native` is held to its
/// prefixes by the CLI and through a mount (EACCES, nothing changed), is
/// listed with its rights, and is refused once revoked.
#[test]
fn identities_through_the_cli_and_a_mount() {
    if no_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let data = dir.path().join("data");
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
    let admin = |args: &[&str]| {
        let (ok, out, err) = try_cli(&config, &[], args);
        assert!(ok, "cairn {args:?}: {err}");
        out
    };
    let key = dir.path().join("car42.key");
    admin(&[
        "key",
        "create",
        "car42",
        "--native",
        "--prefix",
        "/fleet/car42",
        "--read-prefix",
        "/datasets",
        "--out",
        key.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.starts_with("cairn-identity-v1 car42 "), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let local = dir.path().join("f.bin");
    std::fs::write(&local, b"training data").unwrap();
    let l = local.to_str().unwrap();
    admin(&["put", l, "/datasets/d.bin"]);
    admin(&["put", l, "/fleet/car41/log"]);
    let listed: serde_json::Value =
        serde_json::from_str(&admin(&["key", "list", "--json"])).unwrap();
    let ids = listed["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0]["name"], "car42");
    assert_eq!(ids[0]["rights"]["prefixes"][0]["path"], "/fleet/car42");
    assert_eq!(ids[0]["rights"]["prefixes"][1]["write"], false);

    let as_car = [("CAIRN_SECRET_FILE", key.to_str().unwrap())];
    let car = |args: &[&str]| try_cli(&config, &as_car, args);
    assert!(car(&["put", l, "/fleet/car42/a"]).0);
    let (ok, _, err) = car(&["put", l, "/datasets/x"]);
    assert!(!ok && err.contains("may not change /datasets/x"), "{err}");
    let (ok, _, err) = car(&["key", "create", "me2", "--native", "--admin"]);
    assert!(!ok && err.contains("admin"), "{err}");
    let (ok, out, _) = car(&["ls", "/"]);
    assert!(ok);
    let names: Vec<&str> = out
        .split_whitespace()
        .filter(|w| w.ends_with('/'))
        .collect();
    assert_eq!(names, ["datasets/", "fleet/"], "{out}");

    // Through a mount of the identity: the kernel sees EACCES.
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let cache = dir.path().join("cache");
    let _mount = spawn_env(
        &config,
        &[
            "mount",
            mnt.to_str().unwrap(),
            "--foreground",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        "mounted on",
        Some(&mnt),
        &as_car,
    )
    .0;
    std::fs::write(mnt.join("fleet/car42/b"), b"from the car").unwrap();
    assert_eq!(
        std::fs::read(mnt.join("datasets/d.bin")).unwrap(),
        b"training data"
    );
    let eacces = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{what}: {e}");
    };
    // A write is committed when the file is flushed (fsync, close), as
    // on NFS: fsync reports what close would.
    let write_synced = |path: PathBuf| -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(path)?;
        f.write_all(b"x")?;
        f.sync_all()
    };
    eacces(write_synced(mnt.join("fleet/car41/x")), "create outside");
    eacces(
        write_synced(mnt.join("datasets/d.bin")),
        "overwrite read-only",
    );
    eacces(
        std::fs::remove_file(mnt.join("datasets/d.bin")),
        "unlink read-only",
    );
    eacces(std::fs::create_dir(mnt.join("top")), "mkdir at the top");
    eacces(
        std::fs::read(mnt.join("fleet/car41/log")).map(|_| ()),
        "read outside",
    );
    // Nothing changed; what the car wrote is there.
    assert_eq!(admin(&["cat", "/datasets/d.bin"]), "training data");
    assert_eq!(admin(&["cat", "/fleet/car41/log"]), "training data");
    assert_eq!(admin(&["cat", "/fleet/car42/b"]), "from the car");
    assert!(!try_cli(&config, &[], &["stat", "/top"]).0);

    admin(&["key", "revoke", "car42"]);
    let (ok, _, err) = car(&["cat", "/fleet/car42/b"]);
    assert!(!ok && err.contains("not known"), "{err}");
    let (ok, _, err) = try_cli(&config, &[], &["key", "revoke", "car42"]);
    assert!(!ok && err.contains("no identity"), "{err}");
}
