//! The real `cairn` binary as separate processes: started, SIGKILLed,
//! restarted, driven through its CLI.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// A child process killed when dropped, so a failing test leaves nothing behind.
struct Proc {
    child: Child,
    /// What the process printed on its first lines, e.g. its address.
    banner: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// Spawn `cairn ARGS` and read stdout until a line containing `ready` appears.
fn spawn(env: &Env, args: &[&str], ready: &str) -> Proc {
    let mut child = Command::new(BIN)
        .args(args)
        .env("XDG_CONFIG_HOME", env.dir.path().join("config"))
        // `cairn server` serves S3 on a fixed port by default; tests run in parallel.
        .env("CAIRN_S3_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cairn");
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(ready);
                banner.push(line);
                if done {
                    // Keep draining stdout so the child never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return Proc { child, banner };
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cairn {args:?} did not print {ready:?}; it printed {banner:?}");
            }
        }
    }
}

/// `cairn server` on the data directory `data` in `env`, meta on a free
/// port, with `extra` arguments; returned once its banner is out.
fn server(env: &Env, extra: &[&str]) -> Proc {
    let data = env.path("data");
    let mut args = vec!["server", "--data", data.to_str().unwrap()];
    args.extend_from_slice(&["--listen", "127.0.0.1:0"]);
    args.extend_from_slice(extra);
    spawn(env, &args, "try:")
}

struct Env {
    dir: tempfile::TempDir,
    meta: String,
    secret: PathBuf,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            meta: String::new(),
            secret: PathBuf::new(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Run a client command against this cluster.
    fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, None)
    }

    fn cli_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("RUST_LOG", "error");
        if !self.meta.is_empty() {
            cmd.env("CAIRN_META", &self.meta)
                .env("CAIRN_SECRET_FILE", &self.secret);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        if let Some(data) = input {
            stdin.write_all(data).unwrap();
        }
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Vec<u8> {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "cairn {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }

    fn fails(&self, args: &[&str], expect: &str) {
        let o = self.cli(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "cairn {args:?} should fail");
        assert!(
            err.contains(expect),
            "cairn {args:?}: stderr {err:?} lacks {expect:?}"
        );
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_slice(&self.ok(args)).expect("valid JSON")
    }

    fn start_meta(&self, listen: &str) -> Proc {
        self.start_meta_with(listen, &[])
    }

    fn start_meta_with(&self, listen: &str, extra: &[&str]) -> Proc {
        let data = self.path("meta");
        let mut args = vec![
            "meta",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            listen,
            "--dead-after",
            "2s",
            "--gc-delay",
            "1s",
        ];
        args.extend_from_slice(extra);
        spawn(self, &args, "listening on")
    }

    fn start_storage(&self, i: usize) -> Proc {
        self.start_storage_with(i, &[])
    }

    fn start_storage_with(&self, i: usize, extra: &[&str]) -> Proc {
        let data = self.path(&format!("node-{i}"));
        let secret = self.path("meta/cluster.secret");
        let mut args = vec![
            "storage",
            "--data",
            data.to_str().unwrap(),
            "--meta",
            &self.meta,
            "--listen",
            "127.0.0.1:0",
            "--secret-file",
            secret.to_str().unwrap(),
            "--reserve",
            "0",
        ];
        args.extend_from_slice(extra);
        spawn(self, &args, "listening on")
    }

    fn wait_live(&self, n: usize) {
        wait(Duration::from_secs(30), || {
            let s = self.json(&["cluster", "status", "--json"]);
            s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["state"] == "live")
                .count()
                == n
        });
    }
}

fn wait(limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "condition not met within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn addr_after(banner: &[String], marker: &str) -> String {
    let line = banner
        .iter()
        .find(|l| l.contains(marker))
        .expect("banner line");
    line.split_whitespace()
        .find(|w| w.contains(':') && w.chars().next().unwrap().is_ascii_digit())
        .expect("an address")
        .to_string()
}

#[test]
fn separate_processes_survive_sigkill_of_any_of_them() {
    let mut env = Env::new();
    let meta = env.start_meta("127.0.0.1:0");
    env.meta = addr_after(&meta.banner, "listening on");
    env.secret = env.path("meta/client.key");
    let mut nodes: Vec<Option<Proc>> = (0..3).map(|i| Some(env.start_storage(i))).collect();
    env.wait_live(3);

    let big = pattern(5_000_000, 1);
    std::fs::write(env.path("big"), &big).unwrap();
    env.ok(&[
        "put",
        env.path("big").to_str().unwrap(),
        "/big",
        "--chunk-size",
        "1MiB",
    ]);
    let locate = env.json(&["locate", "/big", "--json"]);
    assert_eq!(locate["chunks"].as_array().unwrap().len(), 5);
    for c in locate["chunks"].as_array().unwrap() {
        assert_eq!(c["nodes"].as_array().unwrap().len(), 3);
    }
    // Many small acknowledged writes, then SIGKILL of everything.
    for i in 0..20 {
        env.cli_stdin(
            &["put", "-", &format!("/small-{i}")],
            Some(&pattern(5000, i)),
        );
    }
    nodes[0].take().unwrap().sigkill();
    let got = env.path("got");
    env.ok(&["get", "/big", got.to_str().unwrap()]);
    assert!(
        std::fs::read(&got).unwrap() == big,
        "read with one node SIGKILLed"
    );

    // A write that cannot get three live nodes fails clearly and leaves nothing.
    wait(Duration::from_secs(20), || {
        let s = env.json(&["cluster", "status", "--json"]);
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] == "dead")
            .count()
            == 1
    });
    let o = env.cli_stdin(&["put", "-", "/.cue/inline=0/nope"], Some(b"data"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2 of 3 storage node(s) live") && err.contains("rep=3"),
        "{err}"
    );
    env.fails(&["stat", "/nope"], "does not exist");
    let s = env.json(&["cluster", "status", "--json"]);
    assert!(s["under_replicated_chunks"].as_u64().unwrap() >= 25, "{s}");

    meta.sigkill();
    for n in nodes.iter_mut().flatten() {
        n.signal(libc::SIGKILL);
    }
    drop(nodes);
    let meta = env.start_meta(&env.meta.clone());
    let _nodes: Vec<Proc> = (0..3).map(|i| env.start_storage(i)).collect();
    env.wait_live(3);
    env.ok(&["get", "/big", got.to_str().unwrap()]);
    assert!(
        std::fs::read(&got).unwrap() == big,
        "read after SIGKILL of every process"
    );
    for i in 0..20 {
        assert_eq!(
            env.ok(&["cat", &format!("/small-{i}")]),
            pattern(5000, i),
            "small-{i}"
        );
    }
    let s = env.json(&["cluster", "status", "--json"]);
    assert_eq!(s["under_replicated_chunks"], 0, "{s}");
    drop(meta);
}

#[test]
fn one_command_server_with_local_config_restarts_with_its_data() {
    let env = Env::new();
    let data = env.path("data");
    let args = [
        "server",
        "--data",
        data.to_str().unwrap(),
        "--nodes",
        "3",
        "--listen",
        "127.0.0.1:0",
    ];
    let server = spawn(&env, &args, "try:");
    assert!(
        server.banner.iter().any(|l| l.contains("rep=3")),
        "{:?}",
        server.banner
    );
    // No --meta, no secret: the CLI finds the server through the config it wrote.
    env.cli_stdin(&["put", "-", "/hello.txt"], Some(b"hello cairn\n"));
    assert_eq!(env.ok(&["cat", "/hello.txt"]), b"hello cairn\n");
    let stat = env.json(&["stat", "/hello.txt", "--json"]);
    assert_eq!(stat["version"], 1);
    assert_eq!(stat["size"], 12);

    // Graceful shutdown on SIGTERM, then everything comes back.
    server.signal(libc::SIGTERM);
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert!(status.success(), "server exited with {status}");
    drop(server);
    let again = crate::server(&env, &[]);
    assert!(
        again
            .banner
            .iter()
            .filter(|l| l.contains("storage"))
            .count()
            >= 3,
        "node count remembered"
    );
    assert_eq!(env.ok(&["cat", "/hello.txt"]), b"hello cairn\n");
    env.cli_stdin(&["put", "-", "/hello.txt"], Some(b"v2"));
    assert_eq!(env.json(&["stat", "/hello.txt", "--json"])["version"], 2);

    // SIGKILL, restart: the acknowledged overwrite is there.
    again.sigkill();
    let _server = crate::server(&env, &[]);
    assert_eq!(env.ok(&["cat", "/hello.txt"]), b"v2");
}

/// `cairn bench --s3 --s3-peer` loads another S3 server the same way, in
/// turns with its own gateway: here a second `cairn server`, whose gateway
/// checks every signature, so the load generator's SigV4 is checked too.
#[test]
fn s3_bench_loads_a_peer_endpoint_in_turns() {
    let env = Env::new();
    let peer = server(&env, &["--nodes", "1"]);
    let key = env.json(&["key", "create", "bench-peer", "--json"]);
    let endpoints: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("data/endpoints.json")).unwrap()).unwrap();
    let url = endpoints["s3"].as_str().unwrap().to_string();
    let pid = peer.child.id().to_string();
    let dir = env.path("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let creds = format!(
        "{}:{}",
        key["access_key"].as_str().unwrap(),
        key["secret_key"].as_str().unwrap()
    );
    let args = [
        "bench",
        "--dir",
        dir.to_str().unwrap(),
        "--nodes",
        "1",
        "--s3",
        "--s3-peer",
        &url,
        "--s3-peer-pid",
        &pid,
        "--size",
        "8MiB",
        "--small-count",
        "40",
        "--small-size",
        "4KiB",
        "--concurrency",
        "4",
        "--runs",
        "1",
    ];
    let o = env.cli_stdin(&args, None);
    assert!(!o.status.success(), "no key, no run");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--s3-peer-key"));
    let mut with_key = args.to_vec();
    with_key.extend(["--s3-peer-key", &creds]);
    let v: serde_json::Value = serde_json::from_slice(&env.ok(&with_key)).expect("JSON");
    for k in [
        "put_mib_s",
        "get_mib_s",
        "small_puts_per_s",
        "small_gets_per_s",
    ] {
        assert!(v["s3"][k].as_f64().unwrap() > 0.0, "cairn {k}: {v}");
        assert!(v["s3_peer"][k].as_f64().unwrap() > 0.0, "peer {k}: {v}");
        assert!(v["s3_peer"]["cairn_to_peer"].is_object(), "{v}");
    }
    assert!(
        v["s3_peer"]["put_server_cpu_s_per_gib"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    // The direct figures beside them: disk probes, cold reads, CPU per GiB.
    for k in [
        "write_mib_s",
        "read_mib_s",
        "cold_read_mib_s",
        "read_cpu_s_per_gib",
    ] {
        assert!(v["rep1"][k].as_f64().unwrap() > 0.0, "rep1 {k}: {v}");
    }
    assert!(
        v["machine"]["disk_read_mib_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    // The load went to the peer's bucket.
    env.ok(&["stat", "/bench-s3"]);
    // A wrong secret is refused by the peer, and the bench says so.
    let mut bad = args.to_vec();
    let wrong = format!("{}:wrong", key["access_key"].as_str().unwrap());
    bad.extend(["--s3-peer-key", &wrong]);
    let o = env.cli_stdin(&bad, None);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP 403"),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "bench cleans up"
    );
}

#[test]
fn cli_commands_and_their_errors() {
    let env = Env::new();
    let _server = server(&env, &[]);

    env.ok(&["mkdir", "-p", "/a/b/c"]);
    env.ok(&["mkdir", "-p", "/a/b/c"]);
    env.fails(&["mkdir", "/a"], "exists");
    env.fails(&["mkdir", "/x/y"], "");
    let f = env.path("local.bin");
    std::fs::write(&f, pattern(100_000, 5)).unwrap();
    env.ok(&["put", f.to_str().unwrap(), "/a/b/"]);
    assert_eq!(env.ok(&["cat", "/a/b/local.bin"]), pattern(100_000, 5));
    let ls = String::from_utf8(env.ok(&["ls", "/a/b"])).unwrap();
    assert_eq!(ls, "c/\nlocal.bin\n");
    let ls = String::from_utf8(env.ok(&["ls", "-l", "/a/b"])).unwrap();
    assert!(
        ls.lines()
            .any(|l| l.starts_with('-') && l.contains("100000") && l.ends_with("local.bin")),
        "{ls}"
    );
    let json = env.json(&["ls", "--json", "/a/b"]);
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[1]["path"], "/a/b/local.bin");

    // Bad paths are refused before anything is sent.
    env.fails(&["stat", "/a/../b"], "'..' is not allowed");
    env.fails(&["mkdir", &format!("/{}", "n".repeat(256))], "limit is 255");
    env.fails(&["put", f.to_str().unwrap(), "/a//b"], "empty name");
    env.fails(
        &["put", f.to_str().unwrap(), "/a/b/local.bin/x"],
        "not a directory",
    );
    env.fails(
        &["get", "/missing", env.path("out").to_str().unwrap()],
        "does not exist",
    );
    assert!(!env.path("out").exists() && !env.path("out.cairn-part").exists());
    env.fails(&["cat", "/a"], "is a directory");
    env.fails(&["rm", "/a"], "not empty");
    env.fails(
        &["put", env.path("no-such-local").to_str().unwrap(), "/z"],
        "cannot open",
    );

    // mv is atomic and replaces; rm -r removes a tree.
    env.cli_stdin(&["put", "-", "/a/other"], Some(b"other"));
    env.ok(&["mv", "/a/other", "/a/b/local.bin"]);
    assert_eq!(env.ok(&["cat", "/a/b/local.bin"]), b"other");
    // ln gives a file a second name: a new version through one is the
    // other's; removing one leaves the other.
    env.ok(&["ln", "/a/b/local.bin", "/twin"]);
    assert_eq!(env.json(&["stat", "--json", "/twin"])["links"], 2);
    env.cli_stdin(&["put", "-", "/twin"], Some(b"through the twin"));
    assert_eq!(env.ok(&["cat", "/a/b/local.bin"]), b"through the twin");
    env.fails(&["ln", "/a/b/local.bin", "/twin"], "already exists");
    env.fails(
        &["ln", "/a/b", "/dirlink"],
        "directories cannot have hard links",
    );
    env.ok(&["rm", "-r", "/a"]);
    env.fails(&["stat", "/a/b"], "does not exist");
    assert_eq!(env.ok(&["cat", "/twin"]), b"through the twin");
    env.ok(&["rm", "/twin"]);
    let status = env.json(&["cluster", "status", "--json"]);
    assert_eq!(status["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(status["nodes"][0]["state"], "live");

    // Wrong credentials: a clear refusal. The client key `cairn server`
    // wrote carries the cluster CA; a wrong key with it fails the proof,
    // and a key file without it (from before TLS) says what is missing.
    let real = std::fs::read_to_string(env.path("data/meta/client.key")).unwrap();
    let ca = real.split_whitespace().last().unwrap();
    assert!(ca.starts_with("ca="), "{real}");
    let refusal = |key_file: String, expect: &str| {
        std::fs::write(env.path("bad.key"), key_file).unwrap();
        let o = Command::new(BIN)
            .args([
                "ls",
                "/",
                "--secret-file",
                env.path("bad.key").to_str().unwrap(),
            ])
            .env("XDG_CONFIG_HOME", env.path("config"))
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect), "{err}");
    };
    refusal(
        format!("cairn-client-key-v1 {} {ca}\n", "ab".repeat(32)),
        "authentication failed",
    );
    refusal(
        format!("cairn-client-key-v1 {}\n", "ab".repeat(32)),
        "no cluster CA",
    );
}

#[test]
fn killed_writer_leaves_nothing_visible() {
    let env = Env::new();
    let _server = server(&env, &[]);
    let mut child = Command::new(BIN)
        .args(["put", "-", "/partial", "--chunk-size", "1MiB"])
        .env("XDG_CONFIG_HOME", env.path("config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&pattern(5_000_000, 9)).unwrap();
    // Chunks are on the nodes by now; the version is not committed.
    wait(Duration::from_secs(20), || {
        let s = env.json(&["cluster", "status", "--json"]);
        s["nodes"][0]["chunks"].as_u64().unwrap() >= 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    env.fails(&["stat", "/partial"], "does not exist");
}

/// `maxtime` bounds how long a read waits on a node that stopped answering
/// (SIGSTOP: its connections open but nothing comes back, as in a
/// partition). Without it, the read would wait for the two-minute fetch
/// timeout.
#[test]
fn maxtime_bounds_reads_from_a_node_that_stopped_answering() {
    let mut env = Env::new();
    let meta = env.start_meta("127.0.0.1:0");
    env.meta = addr_after(&meta.banner, "listening on");
    env.secret = env.path("meta/client.key");
    let nodes: Vec<Proc> = (0..2).map(|i| env.start_storage(i)).collect();
    env.wait_live(2);
    let node_id = |i: usize| {
        std::fs::read_to_string(env.path(&format!("node-{i}/node.id")))
            .unwrap()
            .trim()
            .to_string()
    };
    let holders = |path: &str| -> Vec<String> {
        let l = env.json(&["locate", path, "--json"]);
        l["chunks"][0]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                n["id"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| n["id"].to_string())
            })
            .collect()
    };
    // inline=0: these files are about their chunks, not kept in meta.
    env.cli_stdin(
        &["put", "-", "/.cue/rep=2,inline=0/two"],
        Some(b"two copies"),
    );
    // Single-copy files until one lands on the node listed first for /two.
    let first = holders("/two")[0].clone();
    let victim = (0..2)
        .find(|i| first.contains(&node_id(*i)))
        .expect("a holder");
    let mut lonely = None;
    for i in 0..20 {
        let p = format!("/one-{i}");
        env.cli_stdin(
            &["put", "-", &format!("/.RepLevel=1,inline=0/one-{i}")],
            Some(b"one copy"),
        );
        if holders(&p)[0].contains(&node_id(victim)) {
            lonely = Some(p);
            break;
        }
    }
    let lonely = lonely.expect("some single-copy file on the victim node");

    nodes[victim].signal(libc::SIGSTOP);
    let t = Instant::now();
    assert_eq!(env.ok(&["cat", "/.cue/maxtime=1000/two"]), b"two copies");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let t = Instant::now();
    env.fails(&["cat", &format!("/.maxtime=500{lonely}")], "maxtime");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    nodes[victim].signal(libc::SIGCONT);
    assert_eq!(env.ok(&["cat", &lonely]), b"one copy");
    drop(nodes);
    drop(meta);
}

/// `cairn bench --schemes` on a small cluster of real storage processes:
/// valid JSON, and the damage it reports from metadata is what reading the
/// files finds.
#[test]
fn scheme_benchmark_reports_damage_that_reads_confirm() {
    let env = Env::new();
    let dir = env.path("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let out = env.ok(&[
        "bench",
        "--dir",
        dir.to_str().unwrap(),
        "--runs",
        "2",
        "--schemes",
        "random,buddy,min_copy",
        "--scheme-nodes",
        "5",
        "--scheme-rep",
        "2",
        "--scheme-files",
        "12",
        "--scheme-file-size",
        "512KiB",
        "--scheme-chunk-size",
        "128KiB",
        "--scheme-sizes",
        "256KiB,1MiB",
        "--scheme-kill",
        "1,2,4",
        "--scheme-throttle",
        "64MiB",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    assert_eq!(v["store_load"].as_array().unwrap().len(), 3 * 2, "{v}");
    for s in v["store_load"].as_array().unwrap() {
        assert_eq!(s["store_s"].as_array().unwrap().len(), 2);
        assert!(s["store_mib_s_median"].as_f64().unwrap() > 0.0);
    }
    let failures = v["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3);
    for f in failures {
        // 12 files of 4 chunks, 2 copies each.
        assert_eq!(f["fragments"], 12 * 4 * 2, "{f}");
        let steps = f["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3);
        let mut last = (0, 0);
        for s in steps {
            let damaged = s["damaged_files"].as_u64().unwrap();
            let lost = s["lost_fragments"].as_u64().unwrap();
            assert_eq!(damaged, s["unreadable_files"].as_u64().unwrap(), "{f}");
            assert!(damaged >= last.0 && lost >= last.1, "cumulative: {f}");
            last = (damaged, lost);
        }
        // One node of five down: no file lost with two copies on distinct nodes.
        assert_eq!(steps[0]["damaged_files"], 0, "{f}");
        // Four of five down: at most one node's worth of fragments survives.
        assert!(steps[2]["lost_fragments"].as_u64().unwrap() >= 48, "{f}");
    }
    // Nothing left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn fleet_groups_prefetch_hot_cue_and_locate_by_host() {
    let mut env = Env::new();
    let meta = env.start_meta("127.0.0.1:0");
    env.meta = addr_after(&meta.banner, "listening on");
    env.secret = env.path("meta/client.key");
    // Node 0 stores; nodes 1-3 are the group `actor`, each on its own host.
    // Throttled, so a prefetch takes long enough to kill a node during it.
    let node_args = |i: usize| -> Vec<String> {
        let mut a = vec![
            "--host".to_string(),
            format!("h{i}"),
            "--throttle".into(),
            "8MiB".into(),
        ];
        if i == 0 {
            a.extend(["--zone".into(), "store".into()]);
        } else {
            a.extend(["--group".into(), "actor".into()]);
        }
        a
    };
    let start = |env: &Env, i: usize| {
        let a = node_args(i);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        env.start_storage_with(i, &a)
    };
    let mut nodes: Vec<Option<Proc>> = (0..4).map(|i| Some(start(&env, i))).collect();
    env.wait_live(4);
    let groups = env.json(&["cluster", "groups", "--json"]);
    assert_eq!(groups[0]["group"], "actor");
    assert_eq!(groups[0]["nodes"].as_array().unwrap().len(), 3);
    let status = env.json(&["cluster", "status", "--json"]);
    let id_of = |host: &str| -> String {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["host"] == host)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["name"] == "prefetch"));
    // Groups change at run time.
    env.ok(&["cluster", "group", "add", &id_of("h0"), "actor"]);
    let g = env.json(&["cluster", "groups", "--json"]);
    assert_eq!(g[0]["nodes"].as_array().unwrap().len(), 4);
    env.ok(&["cluster", "group", "rm", &id_of("h0"), "actor"]);
    env.fails(
        &["cluster", "group", "add", "12345", "actor"],
        "no storage node",
    );
    env.fails(
        &["cluster", "group", "add", &id_of("h0"), "bad/name"],
        "group name",
    );

    let data = pattern(8 << 20, 4);
    std::fs::write(env.path("shard"), &data).unwrap();
    env.ok(&["mkdir", "-p", "/data/run1"]);
    let put = |dst: &str, cue: &str| {
        env.ok(&[
            "put",
            env.path("shard").to_str().unwrap(),
            dst,
            "--chunk-size",
            "1MiB",
            "--cue",
            cue,
        ]);
    };
    put("/data/run1/shard", "rep=1,site=store");
    env.fails(&["prefetch", "/nope", "--group", "actor"], "does not exist");
    env.fails(
        &["prefetch", "/data", "--group", "ghost"],
        "no storage node is in group",
    );
    // A node SIGKILLed during the job: the rest complete.
    let started = env.json(&[
        "prefetch",
        "/data",
        "--group",
        "actor",
        "--no-wait",
        "--json",
    ]);
    let job = started[0]["id"].as_u64().unwrap();
    nodes[3].take().unwrap().sigkill();
    wait(Duration::from_secs(60), || {
        let jobs = env.json(&["prefetch", "status", "--json"]);
        let j = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"].as_u64() == Some(job))
            .cloned()
            .unwrap();
        j["state"] == "done" && j["nodes_done"].as_u64().unwrap() >= 2
    });
    let hosts = env.json(&["locate", "--by-host", "/data", "--json"]);
    let held = |host: &str| -> (u64, u64) {
        hosts["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == host)
            .map(|h| {
                (
                    h["durable_bytes"].as_u64().unwrap(),
                    h["cached_bytes"].as_u64().unwrap(),
                )
            })
            .unwrap_or((0, 0))
    };
    assert_eq!(hosts["bytes"].as_u64().unwrap(), data.len() as u64);
    assert_eq!(held("h0"), (data.len() as u64, 0));
    assert_eq!(held("h1"), (0, data.len() as u64));
    assert_eq!(held("h2"), (0, data.len() as u64));
    // Back, the killed node is filled in.
    nodes[3] = Some(start(&env, 3));
    wait(Duration::from_secs(90), || {
        let hosts = env.json(&["locate", "--by-host", "/data", "--json"]);
        hosts["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["host"] == "h3" && h["cached_bytes"].as_u64() == Some(data.len() as u64))
    });
    // hot=actor on a write through the CLI: prefetched on commit.
    put("/ckpt", "rep=1,site=store,hot=actor");
    wait(Duration::from_secs(60), || {
        let hosts = env.json(&["locate", "--by-host", "/ckpt", "--json"]);
        ["h1", "h2", "h3"].iter().all(|want| {
            hosts["hosts"].as_array().unwrap().iter().any(|h| {
                h["host"] == *want && h["cached_bytes"].as_u64() == Some(data.len() as u64)
            })
        })
    });
    let table = String::from_utf8(env.ok(&["locate", "--by-host", "/data", "/ckpt"])).unwrap();
    assert!(table.contains("h1") && table.contains("cached"), "{table}");
    // Reads are unchanged.
    assert_eq!(env.ok(&["cat", "/ckpt"]), data);
    // Evict drops the group's copies of /data.
    let ev = env.json(&["prefetch", "--evict", "/data", "--group", "actor", "--json"]);
    assert_eq!(ev[0]["state"], "evicted");
    let hosts = env.json(&["locate", "--by-host", "/data", "--json"]);
    assert_eq!(held_in(&hosts, "h1"), 0);
    drop(nodes);
}

fn held_in(hosts: &serde_json::Value, host: &str) -> u64 {
    hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .map(|h| h["bytes"].as_u64().unwrap())
        .unwrap_or(0)
}

/// `put -r` / `get -r`: a tree with nested directories, modes, mtimes and
/// a symlink goes in and comes back the same; `put` makes missing parents
/// (`--no-parents` refuses); a file that cannot be written is listed and
/// makes the exit non-zero, the rest still arrive.
#[test]
fn put_and_get_whole_trees() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let _server = server(&env, &[]);
    let tree = env.path("tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::create_dir_all(tree.join("empty")).unwrap();
    for i in 0..40 {
        std::fs::write(tree.join(format!("a/f{i}")), pattern(i * 997, i as u64)).unwrap();
    }
    std::fs::write(tree.join("a/b/run.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        tree.join("a/b/run.sh"),
        std::fs::Permissions::from_mode(0o751),
    )
    .unwrap();
    std::os::unix::fs::symlink("../f3", tree.join("a/b/link")).unwrap();
    let t = tree.to_str().unwrap();
    let o = env.cli(&["put", "-r", "-j", "4", t, "/deep/er/tree"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = String::from_utf8_lossy(&o.stderr);
    assert!(
        summary.contains("41 files")
            && summary.contains("1 symlinks")
            && summary.contains("0 failed"),
        "{summary}"
    );
    // A second run over it is fine (same files, same link).
    env.ok(&["put", "-r", t, "/deep/er/tree"]);

    let out = env.path("out");
    env.ok(&["get", "-r", "/deep/er/tree", out.to_str().unwrap()]);
    for i in 0..40 {
        assert_eq!(
            std::fs::read(out.join(format!("a/f{i}"))).unwrap(),
            pattern(i * 997, i as u64)
        );
    }
    let run = std::fs::metadata(out.join("a/b/run.sh")).unwrap();
    assert_eq!(run.permissions().mode() & 0o7777, 0o751);
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (a, b) = (mtime(&tree.join("a/f7")), mtime(&out.join("a/f7")));
    let apart = a
        .duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap();
    assert!(
        apart < Duration::from_millis(2),
        "mtime {a:?} came back as {b:?}"
    );
    assert_eq!(
        std::fs::read_link(out.join("a/b/link")).unwrap(),
        std::path::Path::new("../f3")
    );
    assert!(out.join("empty").is_dir());

    // put of one file makes its parents, unless told not to.
    let one = env.path("one");
    std::fs::write(&one, b"one").unwrap();
    env.ok(&["put", one.to_str().unwrap(), "/new/parents/one"]);
    assert_eq!(env.ok(&["cat", "/new/parents/one"]), b"one");
    env.fails(
        &["put", "--no-parents", one.to_str().unwrap(), "/nope/one"],
        "does not exist",
    );
    env.fails(&["put", t, "/t"], "use put -r");

    // A failure is listed, the rest arrive, the exit is non-zero.
    env.ok(&["mkdir", "-p", "/clash/a/f5"]);
    let o = env.cli(&["put", "-r", t, "/clash"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("FAILED /clash/a/f5") && err.contains("1 failed"),
        "{err}"
    );
    assert_eq!(env.ok(&["cat", "/clash/a/f6"]), pattern(6 * 997, 6));
}

/// `cairn sync`: local to Cairn and back copies only what differs; a second
/// run copies nothing; `--dry-run` changes nothing; `--delete` removes what
/// the source lacks; `--checksum` finds a change size and mtime hide.
#[test]
fn sync_copies_only_what_differs() {
    let env = Env::new();
    let _server = server(&env, &[]);
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("d/f{i}")), pattern(1000 + i, i as u64)).unwrap();
    }
    std::fs::write(src.join("d/e/deep"), b"deep").unwrap();
    let s = src.to_str().unwrap();
    let copied = |o: &Output| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        let n: u64 = err
            .split(" copied")
            .next()
            .and_then(|h| h.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {err:?}"));
        n
    };
    assert_eq!(copied(&env.cli(&["sync", s, "cairn:/mirror"])), 21);
    assert_eq!(copied(&env.cli(&["sync", s, "cairn:/mirror"])), 0);
    // One new file, one changed: two copies; a dry run first changes nothing.
    std::fs::write(src.join("d/new"), b"new").unwrap();
    std::fs::write(src.join("d/f1"), b"changed").unwrap();
    let dry = env.cli(&["sync", "--dry-run", s, "cairn:/mirror"]);
    let listed = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        listed.contains("copy d/new") && listed.contains("copy d/f1"),
        "{listed}"
    );
    env.fails(&["stat", "/mirror/d/new"], "does not exist");
    assert_eq!(copied(&env.cli(&["sync", s, "cairn:/mirror"])), 2);
    assert_eq!(env.ok(&["cat", "/mirror/d/f1"]), b"changed");
    // Back to a local directory, whole, then nothing more.
    let back = env.path("back");
    let b = back.to_str().unwrap();
    assert_eq!(copied(&env.cli(&["sync", "cairn:/mirror", b])), 22);
    assert_eq!(copied(&env.cli(&["sync", "cairn:/mirror", b])), 0);
    assert_eq!(std::fs::read(back.join("d/e/deep")).unwrap(), b"deep");
    // --delete removes what the source no longer has.
    std::fs::remove_file(src.join("d/f2")).unwrap();
    std::fs::remove_dir_all(src.join("d/e")).unwrap();
    env.ok(&["sync", "--delete", s, "cairn:/mirror"]);
    env.fails(&["stat", "/mirror/d/f2"], "does not exist");
    env.fails(&["stat", "/mirror/d/e"], "does not exist");
    // Same size, same mtime, other bytes: only --checksum sees it.
    let f5 = src.join("d/f5");
    let mtime = std::fs::metadata(&f5).unwrap().modified().unwrap();
    let mut other = std::fs::read(&f5).unwrap();
    other[0] ^= 0xff;
    std::fs::write(&f5, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&f5)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(copied(&env.cli(&["sync", s, "cairn:/mirror"])), 0);
    assert_eq!(
        copied(&env.cli(&["sync", "--checksum", s, "cairn:/mirror"])),
        1
    );
    assert_eq!(env.ok(&["cat", "/mirror/d/f5"]), other);
    env.fails(&["sync", s, b], "must be a Cairn directory");
}

#[test]
fn erasure_coded_files_between_processes_survive_a_sigkilled_node() {
    let mut env = Env::new();
    let meta = env.start_meta("127.0.0.1:0");
    env.meta = addr_after(&meta.banner, "listening on");
    env.secret = env.path("meta/client.key");
    let mut nodes: Vec<Option<Proc>> = (0..3).map(|i| Some(env.start_storage(i))).collect();
    env.wait_live(3);
    env.ok(&["mkdir", "/cold"]);
    env.ok(&["cue", "set", "/cold", "ec=2+1"]);
    let data = pattern(3_000_001, 8);
    std::fs::write(env.path("log"), &data).unwrap();
    env.ok(&[
        "put",
        env.path("log").to_str().unwrap(),
        "/cold/log",
        "--chunk-size",
        "1MiB",
    ]);
    let locate = env.json(&["locate", "/cold/log", "--json"]);
    let chunks = locate["chunks"].as_array().unwrap();
    assert_eq!(chunks.len(), 3, "{locate}");
    for c in chunks {
        assert_eq!(c["ec"], "2+1", "{c}");
        let shards: Vec<u64> = c["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["shard"].as_u64().unwrap())
            .collect();
        assert_eq!(shards, vec![0, 1, 2]);
    }
    let text = String::from_utf8(env.ok(&["locate", "/cold/log"])).unwrap();
    assert!(
        text.contains("ec=2+1") && text.contains("shard 2 "),
        "{text}"
    );
    nodes[1].take().unwrap().sigkill();
    let got = env.path("got");
    env.ok(&["get", "/cold/log", got.to_str().unwrap()]);
    assert!(std::fs::read(&got).unwrap() == data, "degraded read");
    meta.sigkill();
    for n in nodes.into_iter().flatten() {
        n.sigkill();
    }
}

#[test]
fn convert_rewrites_files_in_their_directorys_redundancy() {
    let mut env = Env::new();
    // On demand only: meta's background conversion would race the CLI.
    let meta = env.start_meta_with("127.0.0.1:0", &["--no-auto-convert"]);
    env.meta = addr_after(&meta.banner, "listening on");
    env.secret = env.path("meta/client.key");
    let nodes: Vec<Proc> = (0..3).map(|i| env.start_storage(i)).collect();
    env.wait_live(3);
    let data = pattern(2_500_000, 4);
    std::fs::write(env.path("f"), &data).unwrap();
    for name in ["/data/a", "/data/sub/b"] {
        env.ok(&[
            "put",
            env.path("f").to_str().unwrap(),
            name,
            "--chunk-size",
            "1MiB",
        ]);
    }
    env.ok(&["put", "-", "/data/tiny"]); // empty: nothing to convert
    env.ok(&["cue", "set", "/data", "ec=2+1"]);
    let dry = String::from_utf8(env.ok(&["convert", "-r", "/data", "--dry-run"])).unwrap();
    assert!(
        dry.contains("rep=3 -> ec=2+1") && dry.contains("would convert 2 file(s)"),
        "{dry}"
    );
    let l = env.json(&["locate", "/data/a", "--json"]);
    assert!(l["chunks"][0]["ec"].is_null(), "a dry run changes nothing");
    let s = env.json(&["convert", "-r", "/data", "--json"]);
    assert_eq!(
        (s["converted"].as_u64(), s["skipped"].as_u64()),
        (Some(2), Some(1)),
        "{s}"
    );
    for name in ["/data/a", "/data/sub/b"] {
        let l = env.json(&["locate", name, "--json"]);
        for c in l["chunks"].as_array().unwrap() {
            assert_eq!(c["ec"], "2+1", "{l}");
        }
        let got = env.path("got");
        env.ok(&["get", name, got.to_str().unwrap()]);
        assert!(std::fs::read(&got).unwrap() == data, "{name} changed");
    }
    let s = env.json(&["convert", "-r", "/data", "--json"]);
    assert_eq!(
        (s["converted"].as_u64(), s["already"].as_u64()),
        (Some(0), Some(2)),
        "{s}"
    );
    // And back, for one file.
    env.ok(&["cue", "set", "/data/sub", "rep=2"]);
    env.ok(&["convert", "/data/sub/b"]);
    let l = env.json(&["locate", "/data/sub/b", "--json"]);
    assert!(l["chunks"][0]["ec"].is_null());
    assert_eq!(l["chunks"][0]["nodes"].as_array().unwrap().len(), 2, "{l}");
    env.fails(&["convert", "/data"], "add -r");
    meta.sigkill();
    for n in nodes {
        n.sigkill();
    }
}

#[test]
fn remote_tier_through_separate_processes_and_moto() {
    let moto = cairn_testkit::moto::MotoServer::start("tier-bucket");
    let mut env = Env::new();
    let creds = env.path("creds");
    std::fs::write(&creds, "access_key_id=test\nsecret_access_key=test\n").unwrap();
    let tier = format!(
        "cold=s3://{}/p?endpoint={}&creds={}",
        moto.bucket,
        moto.endpoint,
        creds.display()
    );
    let data = env.path("meta");
    let meta = spawn(
        &env,
        &[
            "meta",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--rep",
            "2",
            "--tier",
            &tier,
            "--tier-interval",
            "200ms",
        ],
        "listening on",
    );
    env.meta = addr_after(&meta.banner, "listening on");
    env.secret = env.path("meta/client.key");
    let nodes: Vec<Proc> = (0..2)
        .map(|i| env.start_storage_with(i, &["--tier", &tier, "--tier-cache", "1MiB"]))
        .collect();
    env.wait_live(2);
    env.ok(&["mkdir", "/old"]);
    env.ok(&["cue", "set", "/old", "cold_after=1s"]);
    // A store meta does not know is refused.
    env.fails(&["cue", "set", "/old", "tier=remote:nowhere"], "cold");
    let blob = pattern(3_000_000, 11);
    std::fs::write(env.path("blob"), &blob).unwrap();
    let src = env.path("blob");
    env.ok(&[
        "put",
        src.to_str().unwrap(),
        "/old/blob",
        "--chunk-size",
        "1MiB",
    ]);
    wait(Duration::from_secs(60), || {
        let t = env.json(&["tier", "status", "--json"]);
        t.as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "cold" && t["bytes"] == 3_000_000)
    });
    let loc = env.json(&["locate", "/old/blob", "--json"]);
    for c in loc["chunks"].as_array().unwrap() {
        assert_eq!(c["remote"], "cold", "{c}");
        assert!(c["nodes"].as_array().unwrap().is_empty(), "{c}");
    }
    let text = String::from_utf8(env.ok(&["cluster", "status"])).unwrap();
    assert!(text.contains("tiers:") && text.contains("cold"), "{text}");
    let got = env.path("got");
    env.ok(&["get", "/old/blob", got.to_str().unwrap()]);
    assert!(
        std::fs::read(&got).unwrap() == blob,
        "read through the store"
    );
    let v = env.json(&["tier", "verify", "cold", "--json"]);
    assert_eq!(v["objects"], 3, "{v}");
    assert!(v["missing"].as_array().unwrap().is_empty(), "{v}");
    env.ok(&["cue", "set", "/old/blob", "tier=local"]);
    let out = env.cli(&["tier", "recall", "/old/blob"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("recalled 1 file(s): 3 chunk(s)"));
    let loc = env.json(&["locate", "/old/blob", "--json"]);
    for c in loc["chunks"].as_array().unwrap() {
        assert!(c.get("remote").is_none(), "{c}");
    }
    env.fails(&["tier", "verify", "nowhere"], "no remote store");
    drop(nodes);
    meta.sigkill();
}

#[test]
fn kept_versions_read_by_number_after_collection() {
    let env = Env::new();
    let _server = server(&env, &["--gc-delay", "0s"]);
    env.ok(&["mkdir", "/k"]);
    env.ok(&["cue", "set", "/k", "versions=2"]);
    // Chunked versions (over the 4 KiB inline default) and a small one.
    let bodies: Vec<Vec<u8>> = vec![
        pattern(100_000, 1),
        pattern(70_000, 2),
        b"small".to_vec(),
        pattern(90_000, 4),
    ];
    let local = env.path("v.bin");
    for b in &bodies {
        std::fs::write(&local, b).unwrap();
        env.ok(&["put", local.to_str().unwrap(), "/k/f"]);
    }
    let listing = String::from_utf8(env.ok(&["versions", "/k/f"])).unwrap();
    let numbers: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(numbers, ["4", "3", "2"], "{listing}");
    assert!(listing.lines().next().unwrap().ends_with("(current)"));
    let json = String::from_utf8(env.ok(&["versions", "--json", "/k/f"])).unwrap();
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["current"].as_bool(), first["size"].as_u64()),
        (Some(true), Some(90_000))
    );
    // Version 1 was pushed out: its chunk is collected (gc delay 0), and
    // the kept versions still read whole.
    wait(Duration::from_secs(60), || {
        env.json(&["cluster", "status", "--json"])["pending_garbage_chunks"].as_u64() == Some(0)
    });
    for (v, body) in [(2, &bodies[1]), (3, &bodies[2]), (4, &bodies[3])] {
        assert_eq!(
            &env.ok(&["cat", "--version", &v.to_string(), "/k/f"]),
            body,
            "version {v}"
        );
    }
    let out = env.path("v2.bin");
    env.ok(&["get", "--version", "2", "/k/f", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), bodies[1]);
    env.fails(&["cat", "--version", "1", "/k/f"], "no version 1");
    // Removing the file removes its versions.
    env.ok(&["rm", "/k/f"]);
    env.fails(&["versions", "/k/f"], "does not exist");
}

/// GET `path` from `addr` over HTTP/1.1: (status, content type, body).
fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let (status, head, body) = http_get_with(addr, path, &[]);
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, ctype, body)
}

/// GET `path` from `addr` with extra header lines: (status, head, body).
fn http_get_with(addr: &str, path: &str, headers: &[&str]) -> (u16, String, String) {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// The `Authorization` header with the client key of a `cairn server`
/// (the file its banner names).
fn bearer(server: &Proc) -> String {
    let path = server
        .banner
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("client key"))
        .expect("the banner names the client key")
        .trim();
    let key = std::fs::read_to_string(path).unwrap();
    format!("Authorization: Bearer {}", key.trim())
}

/// The sum of every sample of `name` whose labels contain all of `labels`.
fn sample_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

#[test]
fn prometheus_metrics_of_meta_and_nodes() {
    let env = Env::new();
    let server = server(&env, &["--nodes", "3"]);
    // The address in the banner's `NAME http://ADDR...` line.
    let url_of = |name: &str| {
        server
            .banner
            .iter()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("http://")))
            .unwrap_or_else(|| panic!("the banner names no {name} URL"))
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_string()
    };
    let addr = url_of("metrics");
    let local = env.path("f.bin");
    let body = pattern(300_000, 9);
    std::fs::write(&local, &body).unwrap();
    env.ok(&["put", local.to_str().unwrap(), "/f.bin"]);
    assert_eq!(env.ok(&["cat", "/f.bin"]), body);
    env.fails(&["cat", "/missing"], "does not exist");
    // An unsigned S3 request: refused, and counted.
    assert_eq!(http_get(&url_of("s3"), "/").0, 403);

    // Metrics need the client key; probes need nothing.
    assert_eq!(http_get(&addr, "/metrics").0, 401);
    assert_eq!(
        http_get_with(&addr, "/metrics", &["Authorization: Bearer 00ff"]).0,
        401
    );
    assert_eq!(
        http_get(&addr, "/healthz"),
        (200, "text/plain; charset=utf-8".into(), "ok\n".into())
    );
    let (status, head, text) = http_get_with(&addr, "/metrics", &[&bearer(&server)]);
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let at_least = |name: &str, labels: &[&str], min: f64| {
        let got = sample_sum(&text, name, labels);
        assert!(
            got >= min,
            "{name}{labels:?} is {got}, expected at least {min}:\n{text}"
        );
    };
    at_least(
        "cairn_meta_requests_total",
        &["op=\"commit_file\"", "outcome=\"ok\""],
        1.0,
    );
    at_least(
        "cairn_meta_requests_total",
        &["op=\"open\"", "outcome=\"not_found\""],
        1.0,
    );
    at_least(
        "cairn_meta_request_duration_seconds_count",
        &["op=\"alloc_chunk\""],
        1.0,
    );
    // Three copies went in, one came out.
    at_least(
        "cairn_storage_written_bytes_total",
        &[],
        3.0 * body.len() as f64,
    );
    at_least("cairn_storage_read_bytes_total", &[], body.len() as f64);
    at_least("cairn_storage_requests_total", &["op=\"put_chunk\""], 1.0);
    at_least("cairn_storage_chunks", &[], 3.0);
    assert!(
        text.contains("\ncairn_storage_scrubbed_bytes_total{node=\""),
        "{text}"
    );
    at_least("cairn_storage_segments", &[], 3.0);
    at_least(
        "cairn_s3_requests_total",
        &["method=\"GET\"", "status=\"403\""],
        1.0,
    );
    assert_eq!(
        sample_sum(&text, "cairn_meta_nodes", &["state=\"live\""]),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample_sum(&text, "cairn_meta_nodes", &["state=\"dead\""]),
        0.0
    );
    assert!(
        text.contains("\ncairn_meta_repair_pending_chunks 0\n"),
        "{text}"
    );
    // An independent parser (the Prometheus project's Python client)
    // reads every family.
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             print(sorted(f.name for f in p(sys.stdin.read())))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the page: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = String::from_utf8(out.stdout).unwrap();
    for family in [
        "cairn_meta_requests",
        "cairn_storage_used_bytes",
        "cairn_meta_nodes",
    ] {
        assert!(
            names.contains(&format!("'{family}'")),
            "{family} not parsed: {names}"
        );
    }
    assert_eq!(http_get_with(&addr, "/other", &[&bearer(&server)]).0, 404);
}

#[test]
fn json_log_lines() {
    let env = Env::new();
    let data = env.path("data");
    let child = Command::new(BIN)
        .args([
            "server",
            "--log-format",
            "json",
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .env("XDG_CONFIG_HOME", env.path("config"))
        .env("CAIRN_S3_LISTEN", "off")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed when dropped, also if an assertion fails.
    let mut server = Proc {
        child,
        banner: Vec::new(),
    };
    let err = BufReader::new(server.child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut found = None;
    for line in err.lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["fields"]["message"] == "meta serving" {
            found = Some(v);
            break;
        }
        seen.push(line);
        assert!(seen.len() < 100, "no 'meta serving' line in {seen:?}");
    }
    drop(server);
    let v = found.expect("the server logged that meta serves");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["target"], "cairn_meta::server");
    assert!(
        v["fields"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{v}"
    );
    assert!(v["timestamp"].is_string(), "{v}");
}

#[test]
fn du_counts_logical_and_stored_bytes_per_directory() {
    let env = Env::new();
    let _server = server(&env, &["--nodes", "3"]);
    let local = env.path("f");
    let put = |len: usize, to: &str| {
        std::fs::write(&local, pattern(len, len as u64)).unwrap();
        env.ok(&["put", local.to_str().unwrap(), to]);
    };
    put(100_000, "/t/a/one");
    env.ok(&["mkdir", "-p", "/t/a/deep"]);
    env.ok(&["cue", "set", "/t/a/deep", "rep=2"]); // two copies below
    put(50_000, "/t/a/deep/two");
    put(10_000, "/t/a/deep/three");
    put(1_000, "/t/small"); // inline: in meta's record, not on the nodes
    env.ok(&["mkdir", "/t/empty"]);
    env.ok(&["ln", "/t/a/one", "/t/a/again"]); // counted once
    let lines: Vec<serde_json::Value> =
        String::from_utf8(env.ok(&["du", "-d", "1", "--json", "/t"]))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let get = |p: &str| {
        lines
            .iter()
            .find(|l| l["path"] == p)
            .unwrap_or_else(|| panic!("{p} not in {lines:?}"))
            .clone()
    };
    assert_eq!(
        lines.len(),
        3,
        "/t and its two subdirectories, not deeper: {lines:?}"
    );
    let t = get("/t");
    assert_eq!(t["files"], 4);
    assert_eq!(t["dirs"], 4);
    assert_eq!(t["logical_bytes"], 161_000);
    assert_eq!(t["stored_bytes"], 3 * 100_000 + 2 * 60_000);
    assert_eq!(t["inline_bytes"], 1_000);
    let a = get("/t/a");
    assert_eq!(
        (a["files"].as_u64(), a["logical_bytes"].as_u64()),
        (Some(3), Some(160_000))
    );
    assert_eq!(get("/t/empty")["files"], 0);
    // Text: sizes, files and the path; a file on its own.
    let text = String::from_utf8(env.ok(&["du", "/t/a/one"])).unwrap();
    assert!(text.trim_end().ends_with("1  /t/a/one"), "{text}");
    env.fails(&["du", "/nope"], "does not exist");
}

#[test]
fn systemd_units_verify_and_roles_tell_systemd_they_are_ready() {
    let env = Env::new();
    // The units, run with this build's binary, pass systemd's own checker.
    let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let dir = env.path("units");
    std::fs::create_dir_all(&dir).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = name.strip_suffix(".service") else {
            continue;
        };
        let text = std::fs::read_to_string(units.join(&name)).unwrap();
        assert!(text.contains("Type=notify"), "{name} waits for readiness");
        // A template is checked as an instance: a mount on /mnt/cairn.
        let as_named = match stem.strip_suffix('@') {
            Some(t) => format!("{t}@mnt-cairn.service"),
            None => name.clone(),
        };
        std::fs::write(
            dir.join(&as_named),
            text.replace("/usr/local/bin/cairn", BIN),
        )
        .unwrap();
        names.push(dir.join(as_named));
    }
    assert_eq!(names.len(), 4, "meta, storage, gateway, mount: {names:?}");
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&names)
        .output()
        .expect("systemd-analyze (Debian's systemd package)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && !err.contains("cairn"),
        "systemd-analyze verify: {err}"
    );

    // Under Type=notify a role says READY=1 on $NOTIFY_SOCKET once its
    // banner is out.
    let sock_path = env.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let data = env.path("data");
    let child = Command::new(BIN)
        .args([
            "server",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("XDG_CONFIG_HOME", env.path("config"))
        .env("CAIRN_S3_LISTEN", "off")
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Proc {
        child,
        banner: Vec::new(),
    };
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within 60 s");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // By then the whole banner is out.
    let out = BufReader::new(server.child.stdout.take().unwrap());
    let banner: Vec<String> = out
        .lines()
        .map_while(|l| l.ok())
        .take_while(|l| !l.starts_with("try:"))
        .collect();
    assert!(banner.iter().any(|l| l.contains("meta")), "{banner:?}");
}

/// `--tls off` on every process runs the cluster in clear, with the
/// banner saying so; a process that disagrees is refused with a message
/// naming the mismatch, either way round.
#[test]
fn tls_off_must_be_agreed_by_every_process() {
    let env = Env::new();
    let plain = server(&env, &["--tls", "off"]);
    let banner = plain.banner.join("\n");
    assert!(banner.contains("tls         OFF"), "{banner}");
    env.ok(&["--tls", "off", "mkdir", "/plain"]);
    env.fails(&["ls", "/"], "runs without TLS");
    drop(plain);

    // And a TLS cluster refuses a client with TLS off.
    let env = Env::new();
    let tls = server(&env, &[]);
    assert!(tls.banner.join("\n").contains("tls         on"));
    env.ok(&["mkdir", "/tls"]);
    env.fails(
        &["--tls", "off", "ls", "/"],
        "speaks TLS and this process runs with --tls off",
    );
}

/// A headless browser: Debian's `chromium` (installed by `.ci/run`).
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return name;
        }
    }
    panic!("no chromium to load the dashboard with (apt-get install chromium)");
}

/// Load `url` in headless Chromium with the profile in `profile` (its
/// cookies) and give what it rendered once the page's requests settled:
/// the DOM (`--dump-dom`), or with `screenshot` a PNG there.
fn browse(profile: &Path, url: &str, screenshot: Option<&Path>) -> String {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,1600",
        // Virtual time runs only while no request is pending, so the page's
        // fetches have answered before the DOM or picture is taken.
        "--virtual-time-budget=15000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match screenshot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dashboard_in_a_browser() {
    let env = Env::new();
    let server = server(&env, &["--nodes", "3"]);
    let login = server
        .banner
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("dashboard"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the banner has a dashboard login link")
        .to_string();
    let addr = login
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let local = env.path("log.bin");
    std::fs::write(&local, pattern(300_000, 4)).unwrap();
    env.ok(&["put", local.to_str().unwrap(), "/fleet/car42/run-7.bin"]);
    let status = env.json(&["cluster", "status", "--json"]);
    let nodes: Vec<(String, String)> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["addr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(nodes.len(), 3);

    // Without credentials: nothing but the login form and the probe.
    for path in ["/api/status", "/api/ls?path=/", "/app.js", "/metrics"] {
        assert_eq!(http_get(&addr, path).0, 401, "{path}");
    }
    let (code, _, page) = http_get(&addr, "/");
    assert_eq!(code, 401);
    assert!(page.contains("<form method=post action=/login>"), "{page}");
    assert_eq!(http_get(&addr, "/?token=0123456789abcdef").0, 401);
    // With the key, the JSON is there.
    let (code, _, body) = http_get_with(&addr, "/api/ls?path=/fleet/car42", &[&bearer(&server)]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"run-7.bin\""), "{body}");
    let (code, _, body) = http_get_with(&addr, "/api/file?path=/nope", &[&bearer(&server)]);
    assert_eq!(code, 404, "{body}");

    // The one-time link logs the browser in (a cookie in its profile) and
    // shows the nodes and, opened at the file, where its chunk is.
    let profile = env.path("browser");
    let dom = browse(&profile, &format!("{login}#/fleet/car42/run-7.bin"), None);
    for (id, node_addr) in &nodes {
        assert!(
            dom.contains(id.as_str()),
            "node {id} not on the page:\n{dom}"
        );
        assert!(
            dom.contains(&format!("{id} @ {node_addr}")),
            "the chunk's copy on {id} not shown:\n{dom}"
        );
    }
    assert!(dom.contains("run-7.bin"), "{dom}");
    assert!(dom.contains("3 of 3 nodes live"), "{dom}");
    // The link worked once: a second browser gets the login form.
    let other = browse(&env.path("other-browser"), &login, None);
    assert!(other.contains("login link was used"), "{other}");
    assert!(!other.contains(&nodes[0].0), "{other}");
    // The logged-in browser stays in; keep a picture for CI's artifacts.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../dashboard.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &profile,
        &format!("http://{addr}/#/fleet/car42/run-7.bin"),
        Some(&shot),
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
}

#[test]
fn a_config_file_sets_a_role_and_flags_and_variables_win() {
    let env = Env::new();
    let file = env.path("cairn.toml");
    std::fs::write(
        &file,
        "log-format = \"text\"\n\n[server]\nnodes = 2\nrep = 2\nmetrics-listen = \"off\"\ngc_delay = \"5s\"\n",
    )
    .unwrap();
    let conf = file.to_str().unwrap();
    let data = env.path("data");
    let server = spawn(
        &env,
        &[
            "--config",
            conf,
            "server",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
        "try:",
    );
    let storage = server
        .banner
        .iter()
        .filter(|l| l.contains("storage "))
        .count();
    assert_eq!(storage, 2, "{:?}", server.banner);
    assert!(
        server.banner.iter().any(|l| l.contains("rep=2")),
        "{:?}",
        server.banner
    );
    assert!(
        !server.banner.iter().any(|l| l.contains("metrics")),
        "{:?}",
        server.banner
    );
    drop(server);

    // The check prints where every setting comes from.
    let o = Command::new(BIN)
        .args(["config", "check", conf])
        .env("CAIRN_REP", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "nodes = 2",
        "# file line 4",
        "rep = 1",
        "# $CAIRN_REP",
        "gc-delay = 5s",
        "listen = 127.0.0.1:7420",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }

    // A mistake is named with its line, and nothing starts.
    std::fs::write(&file, "[server]\nnodes = 2\nrepp = 2\n").unwrap();
    let o = Command::new(BIN)
        .args(["--config", conf, "server", "--data"])
        .arg(env.path("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cairn.toml line 3: unknown key repp in [server]"),
        "{err}"
    );
    assert!(!env.path("never").exists());
    std::fs::write(&file, "[server]\nnodes = \"two\"\n").unwrap();
    let o = Command::new(BIN)
        .args(["--config", conf, "server", "--data"])
        .arg(env.path("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cairn.toml line 2 (nodes): invalid value 'two'"),
        "{err}"
    );
    assert!(!env.path("never").exists());
}

/// The meta address a `cairn server`'s banner names.
fn meta_of(server: &Proc) -> String {
    server
        .banner
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("meta"))
        .expect("the banner names meta")
        .trim()
        .to_string()
}

#[test]
fn tree_transfers_survive_bad_input() {
    let env = Env::new();
    let server = server(&env, &["--nodes", "1"]);
    // A sync into a local path under a file says which file is in the way.
    std::fs::write(env.path("plain"), b"x").unwrap();
    env.ok(&["mkdir", "-p", "/d"]);
    let into = env.path("plain/sub");
    env.fails(
        &["sync", "cairn:/d", into.to_str().unwrap()],
        &format!("{} is a file", env.path("plain").display()),
    );
    env.fails(
        &["sync", "cairn:/d", env.path("plain").to_str().unwrap()],
        "is a file, not a directory",
    );

    // A tree with a directory its reader cannot read: the rest arrives, the
    // directory is listed as failed, and --delete deletes nothing below it.
    let tree = env.path("tree");
    for d in ["ok", "locked"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
        std::fs::write(tree.join(d).join("f"), pattern(5000, 3)).unwrap();
    }
    env.ok(&["sync", tree.to_str().unwrap(), "cairn:/t"]);
    std::fs::write(tree.join("ok/g"), pattern(7000, 4)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    mode(env.dir.path(), 0o755);
    mode(&tree.join("locked"), 0o000);
    let key = env.path("client.key");
    let admin = server
        .banner
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("client key"))
        .unwrap()
        .trim()
        .to_string();
    std::fs::copy(&admin, &key).unwrap();
    mode(&key, 0o644);
    // As `nobody`, for whom mode 000 means something (root reads anything).
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["sync", "--delete", tree.to_str().unwrap(), "cairn:/t"])
        .env("CAIRN_META", meta_of(&server))
        .env("CAIRN_SECRET_FILE", &key)
        .env("XDG_CONFIG_HOME", env.path("nobody-config"))
        .output()
        .unwrap();
    mode(&tree.join("locked"), 0o755);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("FAILED locked: cannot list"), "{err}");
    assert_eq!(env.ok(&["cat", "/t/ok/g"]), pattern(7000, 4), "{err}");
    assert_eq!(env.ok(&["cat", "/t/locked/f"]), pattern(5000, 3), "{err}");

    // A file that keeps changing while it is read is never committed torn.
    let growing = env.path("growing.log");
    std::fs::write(&growing, pattern(32 << 20, 5)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, growing) = (stop.clone(), growing.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&growing)
                .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"line\n").unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let o = env.cli(&["put", growing.to_str().unwrap(), "/t/growing.log"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a changing file was committed: {err}");
    assert!(
        err.contains("kept changing while it was read (3 tries); not committed"),
        "{err}"
    );
    env.fails(&["stat", "/t/growing.log"], "does not exist");
    // A pipe has no size to hold it to: it streams as it comes.
    let o = env.cli_stdin(
        &["put", "/dev/stdin", "/t/piped"],
        Some(&pattern(70_000, 6)),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(env.ok(&["cat", "/t/piped"]), pattern(70_000, 6));
}

#[test]
fn ctrl_c_stops_tree_transfers_with_nothing_half_written() {
    let env = Env::new();
    let _server = server(&env, &["--nodes", "1"]);
    let tree = env.path("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let files = 48;
    for i in 0..files {
        std::fs::write(tree.join(format!("f{i:02}")), pattern(4 << 20, i)).unwrap();
    }
    env.ok(&["put", "-r", tree.to_str().unwrap(), "/t"]);
    let whole = |p: &Path, i: u64| std::fs::read(p).is_ok_and(|b| b == pattern(4 << 20, i));

    // `get -r`, one file at a time, interrupted once the first has landed.
    let out = env.path("out");
    let mut child = Command::new(BIN)
        .args(["get", "-r", "-j", "1", "/t", out.to_str().unwrap()])
        .env("XDG_CONFIG_HOME", env.path("config"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait(Duration::from_secs(60), || out.join("f00").exists());
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".cairn-part")),
        "a partial file is left: {names:?}"
    );
    for n in &names {
        let i: u64 = n[1..].parse().unwrap();
        assert!(whole(&out.join(n), i), "{n} is not whole");
    }
    if names.len() < files as usize {
        assert!(!status.success(), "{err}");
        assert!(err.contains("interrupted:"), "{err}");
    }
}

#[test]
fn ls_recursive_and_cp_inside_cairn() {
    let env = Env::new();
    let _server = server(&env, &["--nodes", "1"]);
    let local = env.path("f");
    std::fs::write(&local, pattern(3 << 20, 8)).unwrap();
    env.ok(&["put", local.to_str().unwrap(), "/a/b/x"]);
    env.ok(&["mkdir", "-p", "/a/b/c"]);
    env.ok(&["put", local.to_str().unwrap(), "/a/z"]);
    let listing = String::from_utf8(env.ok(&["ls", "-R", "/a"])).unwrap();
    assert_eq!(listing, "/a:\nb/\nz\n\n/a/b:\nc/\nx\n\n/a/b/c:\n");
    let all = env.json(&["ls", "-R", "--json", "/a"]);
    let paths: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/a/b", "/a/z", "/a/b/c", "/a/b/x"]);

    // A file, into a directory under its own name; a tree with -r only.
    env.ok(&["cp", "/a/z", "/a/b/c"]);
    assert_eq!(env.ok(&["cat", "/a/b/c/z"]), pattern(3 << 20, 8));
    env.fails(&["cp", "/a", "/t"], "use cp -r");
    env.fails(&["cp", "-r", "/a", "/a/b/t"], "into itself");
    env.ok(&["cp", "-r", "/a", "/t"]);
    assert_eq!(env.ok(&["cat", "/t/b/x"]), pattern(3 << 20, 8));
    assert_eq!(env.ok(&["cat", "/t/b/c/z"]), pattern(3 << 20, 8));
    // The copy shares nothing: changing the source leaves it as it was.
    std::fs::write(&local, b"new").unwrap();
    env.ok(&["put", local.to_str().unwrap(), "/a/b/x"]);
    assert_eq!(env.ok(&["cat", "/t/b/x"]), pattern(3 << 20, 8));
    let src = env.json(&["locate", "--json", "/a/z"]);
    let copy = env.json(&["locate", "--json", "/t/z"]);
    assert_ne!(src["chunks"][0]["chunk"], copy["chunks"][0]["chunk"]);
}
