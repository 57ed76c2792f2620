//! A cluster of real `cairn` processes, one per lab host: meta on host 0,
//! storage node `i` on host `i + 1`, each storage node on a tmpfs of its own
//! when the lab runs as root. Every fault the lab can inject is a method
//! here; every wait has a deadline.

use crate::disk;
use crate::net::{NetMode, Network};
use crate::process::{cairn_bin, tail, Proc};
use cairn_client::ClientConfig;
use cairn_proto::Credentials;
use cairn_types::ChunkId;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const META_PORT: u16 = 7420;
const STORAGE_PORT: u16 = 7421;
const START_LIMIT: Duration = Duration::from_secs(60);

/// How a lab cluster is shaped and tuned. Durations and sizes are passed to
/// the binary in its own units (`2s`, `64MiB`).
#[derive(Clone, Debug)]
pub struct LabConfig {
    pub nodes: usize,
    pub rep: u8,
    pub heartbeat: String,
    pub dead_after: String,
    pub repair_interval: String,
    pub repair_bandwidth: String,
    pub repair_parallelism: u32,
    pub orphan_after: String,
    pub gc_delay: String,
    pub scrub_rate: String,
    pub scrub_pause: String,
    /// Segment size of each node's store: small, so deleted data is
    /// reclaimed on the small lab disks.
    pub segment_size: String,
    pub reserve: String,
    /// Size of the tmpfs each storage node gets (root only).
    pub node_disk: u64,
}

impl Default for LabConfig {
    fn default() -> LabConfig {
        LabConfig {
            nodes: 5,
            rep: 3,
            heartbeat: "300ms".into(),
            dead_after: "4s".into(),
            repair_interval: "500ms".into(),
            repair_bandwidth: "256MiB".into(),
            repair_parallelism: 4,
            orphan_after: "5s".into(),
            gc_delay: "2s".into(),
            scrub_rate: "64MiB".into(),
            scrub_pause: "1s".into(),
            segment_size: "16MiB".into(),
            reserve: "16MiB".into(),
            node_disk: 512 << 20,
        }
    }
}

/// The `--flags` a role of the binary knows, read from its `--help` once,
/// so the lab runs against a binary that lacks newer options (it says which).
fn known_flags(role: &str) -> &'static HashSet<String> {
    static META: OnceLock<HashSet<String>> = OnceLock::new();
    static STORAGE: OnceLock<HashSet<String>> = OnceLock::new();
    let cell = if role == "meta" { &META } else { &STORAGE };
    cell.get_or_init(|| {
        let out = Command::new(cairn_bin())
            .args([role, "--help"])
            .output()
            .expect("cairn --help");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .filter_map(|w| w.strip_prefix("--"))
            .map(|w| {
                w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                    .to_string()
            })
            .collect()
    })
}

fn role_args(role: &str, flags: &[(&str, String)]) -> Vec<String> {
    let known = known_flags(role);
    let mut args = vec![role.to_string()];
    let mut missing = Vec::new();
    for (f, v) in flags {
        if known.contains(*f) {
            args.push(format!("--{f}"));
            args.push(v.clone());
        } else {
            missing.push(*f);
        }
    }
    if !missing.is_empty() {
        static SAID: OnceLock<()> = OnceLock::new();
        SAID.get_or_init(|| {
            eprintln!(
                "cairn-lab: this cairn binary has no `{role}` option(s) {missing:?}; left out"
            )
        });
    }
    args
}

struct NodeSlot {
    proc: Option<Proc>,
    id: String,
    dir: PathBuf,
    cut: bool,
}

/// A running lab cluster. Dropping it kills every process and removes the
/// network and the disks, also when a test panics.
pub struct Cluster {
    pub cfg: LabConfig,
    meta: Option<Proc>,
    nodes: Vec<NodeSlot>,
    mounted: Vec<PathBuf>,
    faults: u64,
    net: Network,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Start meta and `cfg.nodes` storage nodes and wait until every node is
    /// live.
    pub fn start(cfg: LabConfig) -> Cluster {
        let net = Network::new(cfg.nodes + 1);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{}-", disk::TEMP_PREFIX, std::process::id()))
            .tempdir()
            .expect("temp dir");
        let mut c = Cluster {
            cfg,
            meta: None,
            nodes: Vec::new(),
            mounted: Vec::new(),
            faults: 0,
            net,
            dir,
        };
        std::fs::create_dir_all(c.dir.path().join("logs")).unwrap();
        std::fs::create_dir_all(c.dir.path().join("config")).unwrap();
        c.start_meta();
        let root = unsafe { libc::geteuid() } == 0;
        for i in 0..c.cfg.nodes {
            let dir = c.dir.path().join(format!("node-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            if root {
                match disk::mount_tmpfs(&dir, c.cfg.node_disk) {
                    Ok(()) => c.mounted.push(dir.clone()),
                    Err(e) => eprintln!("cairn-lab: no tmpfs for node-{i} ({e})"),
                }
            }
            c.nodes.push(NodeSlot {
                proc: None,
                id: String::new(),
                dir,
                cut: false,
            });
            c.start_node(i);
        }
        c.wait_live_nodes(c.cfg.nodes, Duration::from_secs(60));
        eprintln!(
            "cairn-lab: cluster up: meta {} and {} storage nodes ({:?}, data in {})",
            c.meta_addr(),
            c.cfg.nodes,
            c.net.mode,
            c.dir.path().display()
        );
        c
    }

    pub fn mode(&self) -> NetMode {
        self.net.mode
    }

    pub fn can_partition(&self) -> bool {
        self.net.can_partition()
    }

    pub fn can_fill_disk(&self) -> bool {
        self.mounted.len() == self.nodes.len()
    }

    pub fn meta_addr(&self) -> String {
        format!("{}:{META_PORT}", self.net.host(0).ip)
    }

    pub fn node_addr(&self, i: usize) -> String {
        format!("{}:{STORAGE_PORT}", self.net.host(i + 1).ip)
    }

    pub fn node_id(&self, i: usize) -> &str {
        &self.nodes[i].id
    }

    pub fn node_dir(&self, i: usize) -> &Path {
        &self.nodes[i].dir
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn meta_dir(&self) -> PathBuf {
        self.dir.path().join("meta")
    }

    pub fn client_key(&self) -> PathBuf {
        self.meta_dir().join("client.key")
    }

    pub fn client_config(&self) -> ClientConfig {
        let creds = Credentials::load(&self.client_key()).expect("client key");
        ClientConfig::new(vec![self.meta_addr()], creds)
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.faults
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{name}.log"))
    }

    fn start_meta(&mut self) {
        let c = &self.cfg;
        let flags = [
            ("data", self.meta_dir().display().to_string()),
            ("listen", self.meta_addr()),
            ("rep", c.rep.to_string()),
            ("dead-after", c.dead_after.clone()),
            ("repair-interval", c.repair_interval.clone()),
            ("repair-bandwidth", c.repair_bandwidth.clone()),
            ("repair-parallelism", c.repair_parallelism.to_string()),
            ("orphan-after", c.orphan_after.clone()),
            ("gc-delay", c.gc_delay.clone()),
        ];
        let mut cmd = self.net.command(0, &cairn_bin());
        cmd.args(role_args("meta", &flags)).env("RUST_LOG", "info");
        self.meta = Some(Proc::spawn(
            cmd,
            &self.log("meta"),
            "listening on",
            START_LIMIT,
        ));
    }

    fn start_node(&mut self, i: usize) {
        let c = &self.cfg;
        let dir = &self.nodes[i].dir;
        let flags = [
            ("data", dir.display().to_string()),
            ("meta", self.meta_addr()),
            ("listen", self.node_addr(i)),
            ("advertise", self.node_addr(i)),
            (
                "secret-file",
                self.meta_dir().join("cluster.secret").display().to_string(),
            ),
            ("reserve", c.reserve.clone()),
            ("heartbeat", c.heartbeat.clone()),
            ("scrub-rate", c.scrub_rate.clone()),
            ("scrub-pause", c.scrub_pause.clone()),
            ("segment-size", c.segment_size.clone()),
        ];
        let mut cmd = self.net.command(i + 1, &cairn_bin());
        cmd.args(role_args("storage", &flags))
            .env("RUST_LOG", "info");
        let p = Proc::spawn(
            cmd,
            &self.log(&format!("node-{i}")),
            "listening on",
            START_LIMIT,
        );
        // "cairn storage: node <id> listening on ADDR …"
        let id = p
            .banner
            .iter()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                while let Some(x) = w.next() {
                    if x == "node" {
                        return w.next().map(str::to_string);
                    }
                }
                None
            })
            .unwrap_or_default();
        self.nodes[i].id = id;
        self.nodes[i].proc = Some(p);
    }

    pub fn node_running(&self, i: usize) -> bool {
        self.nodes[i].proc.is_some()
    }

    pub fn meta_running(&self) -> bool {
        self.meta.is_some()
    }

    pub fn node_cut(&self, i: usize) -> bool {
        self.nodes[i].cut
    }

    /// SIGKILL storage node `i`.
    pub fn kill_node(&mut self, i: usize) {
        let p = self.nodes[i].proc.take().expect("node is running");
        p.kill();
        self.faults += 1;
        eprintln!("cairn-lab: fault: SIGKILL node-{i}");
    }

    /// Start node `i` again on its data directory and address.
    pub fn restart_node(&mut self, i: usize) {
        assert!(self.nodes[i].proc.is_none(), "node-{i} is running");
        self.start_node(i);
        eprintln!("cairn-lab: restarted node-{i}");
    }

    pub fn kill_meta(&mut self) {
        self.meta.take().expect("meta is running").kill();
        self.faults += 1;
        eprintln!("cairn-lab: fault: SIGKILL meta");
    }

    pub fn restart_meta(&mut self) {
        assert!(self.meta.is_none(), "meta is running");
        self.start_meta();
        eprintln!("cairn-lab: restarted meta");
    }

    /// Cut node `i` off the network (namespaces only).
    pub fn partition(&mut self, i: usize) {
        self.net.cut(i + 1);
        self.nodes[i].cut = true;
        self.faults += 1;
        eprintln!("cairn-lab: fault: partitioned node-{i}");
    }

    pub fn heal(&mut self, i: usize) {
        self.net.heal(i + 1);
        self.nodes[i].cut = false;
        eprintln!("cairn-lab: healed node-{i}");
    }

    /// Corrupt one copy of up to `max` chunks, spread over the running
    /// nodes, never two copies of the same chunk; only chunks in `only`
    /// when given. Returns (chunk, node).
    pub fn corrupt_one_copy_each(
        &mut self,
        max: usize,
        only: Option<&HashSet<ChunkId>>,
    ) -> Vec<(ChunkId, usize)> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.node_running(i))
            .collect();
        let mut per_node: Vec<Vec<disk::Record>> = running
            .iter()
            .map(|&i| {
                let mut v: Vec<_> = disk::live_chunks(&self.nodes[i].dir)
                    .into_values()
                    .filter(|r| r.len > 0 && only.is_none_or(|o| o.contains(&r.chunk)))
                    .collect();
                fastrand::shuffle(&mut v);
                v
            })
            .collect();
        let mut taken = BTreeSet::new();
        let mut out = Vec::new();
        'outer: loop {
            let mut progress = false;
            for (k, &i) in running.iter().enumerate() {
                if out.len() >= max {
                    break 'outer;
                }
                while let Some(r) = per_node[k].pop() {
                    if taken.insert(r.chunk) {
                        if disk::corrupt(&r).is_ok() {
                            out.push((r.chunk, i));
                            progress = true;
                        }
                        break;
                    }
                }
            }
            if !progress {
                break;
            }
        }
        self.faults += out.len() as u64;
        eprintln!(
            "cairn-lab: fault: corrupted one copy of {} chunks",
            out.len()
        );
        out
    }

    /// Delete every segment file of a stopped node (its disk is lost).
    pub fn wipe_node(&mut self, i: usize) {
        assert!(!self.node_running(i), "stop node-{i} before wiping it");
        let n = disk::wipe_segments(&self.nodes[i].dir);
        self.faults += 1;
        eprintln!("cairn-lab: fault: deleted {n} segment files of node-{i}");
    }

    /// Fill node `i`'s disk until `leave` bytes are free.
    pub fn fill_disk(&mut self, i: usize, leave: u64) {
        assert!(
            self.can_fill_disk(),
            "filling a disk needs the per-node tmpfs"
        );
        let n = disk::fill(&self.nodes[i].dir, leave).expect("fallocate filler");
        self.faults += 1;
        eprintln!(
            "cairn-lab: fault: filled node-{i}'s disk with {} MiB",
            n >> 20
        );
    }

    pub fn unfill_disk(&mut self, i: usize) {
        disk::unfill(&self.nodes[i].dir);
        eprintln!("cairn-lab: freed node-{i}'s disk");
    }

    /// Run a client command of the binary against this cluster.
    pub fn cli(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        let mut child = Command::new(cairn_bin())
            .args(args)
            .env("CAIRN_META", self.meta_addr())
            .env("CAIRN_SECRET_FILE", self.client_key())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("cairn {args:?} did not finish within 30s"));
                }
            }
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `cairn cluster status --json`, or why it failed.
    pub fn status(&self) -> Result<Value, String> {
        let out = self.cli(&["cluster", "status", "--json"])?;
        serde_json::from_slice(&out).map_err(|e| format!("status is not JSON: {e}"))
    }

    /// The status entry of node `i` (matched by address).
    pub fn node_status<'a>(&self, status: &'a Value, i: usize) -> Option<&'a Value> {
        let addr = self.node_addr(i);
        status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["addr"].as_str() == Some(addr.as_str()))
    }

    pub fn node_state(&self, status: &Value, i: usize) -> Option<String> {
        Some(self.node_status(status, i)?["state"].as_str()?.to_string())
    }

    /// Poll status until `pred` holds; panic after `limit` with the last
    /// status seen.
    pub fn wait_status(
        &self,
        limit: Duration,
        what: &str,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + limit;
        loop {
            let last = match self.status() {
                Ok(s) if pred(&s) => return s,
                other => other,
            };
            assert!(
                Instant::now() < end,
                "cairn-lab: {what}: not within {limit:?}; last status: {}",
                match &last {
                    Ok(v) => v.to_string(),
                    Err(e) => e.clone(),
                }
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until `n` nodes are `live`.
    pub fn wait_live_nodes(&self, n: usize, limit: Duration) {
        self.wait_status(limit, &format!("{n} live nodes"), |s| {
            s["nodes"]
                .as_array()
                .map(|a| a.iter().filter(|n| n["state"] == "live").count())
                == Some(n)
        });
    }

    /// Wait until node `i` shows `state`.
    pub fn wait_node_state(&self, i: usize, state: &str, limit: Duration) {
        self.wait_status(limit, &format!("node-{i} {state}"), |s| {
            self.node_state(s, i).as_deref() == Some(state)
        });
    }

    /// Wait until redundancy is whole again: every reachable node is up in
    /// meta's eyes, meta counts no chunk short of copies, and — checked on
    /// the disks themselves, not taken from meta — every chunk in `chunks`
    /// (id, length, CRC-list checksum) has at least `rep` good copies on
    /// running, reachable nodes. Returns how long it took.
    pub fn wait_settled(
        &self,
        chunks: &[(ChunkId, u64, u32, u8)],
        limit: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let end = start + limit;
        loop {
            let why = match self.status() {
                Err(e) => e,
                Ok(s) => match self.settled_in(&s) {
                    Some(reason) => reason,
                    None => match self.disk_shortfall(chunks) {
                        None => return Ok(start.elapsed()),
                        Some(r) => r,
                    },
                },
            };
            if Instant::now() >= end {
                let status = self.status().map(|s| s.to_string()).unwrap_or_else(|e| e);
                return Err(format!(
                    "redundancy not restored within {limit:?}: {why}; status: {status}"
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Why the status is not settled, or None.
    fn settled_in(&self, s: &Value) -> Option<String> {
        for i in 0..self.nodes.len() {
            if self.node_running(i) && !self.nodes[i].cut {
                let state = self.node_state(s, i).unwrap_or_default();
                if !matches!(state.as_str(), "live" | "full" | "draining" | "drained") {
                    return Some(format!("node-{i} is {state:?}"));
                }
            }
        }
        let under = s["under_replicated_chunks"].as_u64();
        let unavailable = s["unavailable_chunks"].as_u64().unwrap_or(0);
        if under != Some(0) || unavailable != 0 {
            return Some(format!(
                "meta counts {under:?} under-replicated, {unavailable} unavailable chunks; \
                 repair {}",
                s["repair"]
            ));
        }
        None
    }

    /// A chunk with fewer than its copies on disk, or None.
    pub fn disk_shortfall(&self, chunks: &[(ChunkId, u64, u32, u8)]) -> Option<String> {
        let maps: Vec<_> = (0..self.nodes.len())
            .filter(|&i| self.node_running(i) && !self.nodes[i].cut)
            .map(|i| (i, disk::live_chunks(&self.nodes[i].dir)))
            .collect();
        for &(chunk, len, crc, rep) in chunks {
            let (good, bad): (Vec<usize>, Vec<usize>) = maps
                .iter()
                .filter(|(_, m)| m.contains_key(&chunk))
                .map(|(i, m)| (*i, disk::copy_is_good(&m[&chunk], len, crc)))
                .fold((Vec::new(), Vec::new()), |(mut g, mut b), (i, ok)| {
                    if ok {
                        g.push(i)
                    } else {
                        b.push(i)
                    }
                    (g, b)
                });
            if good.len() < rep as usize {
                return Some(format!(
                    "chunk {chunk} has {} good copies on disk (nodes {good:?}; bad copies on \
                     {bad:?}), needs {rep}",
                    good.len()
                ));
            }
        }
        None
    }

    /// The last lines of every process log, for a failing test.
    pub fn log_tails(&self, n: usize) -> String {
        let mut s = String::new();
        let mut names = vec!["meta".to_string()];
        names.extend((0..self.nodes.len()).map(|i| format!("node-{i}")));
        for name in names {
            s.push_str(&format!("--- {name} ---\n{}\n", tail(&self.log(&name), n)));
        }
        s
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("CAIRN_LAB_LOGS").is_some() {
            eprintln!("cairn-lab: process logs:\n{}", self.log_tails(25));
        }
        for n in &mut self.nodes {
            if let Some(p) = n.proc.take() {
                p.kill();
            }
        }
        if let Some(m) = self.meta.take() {
            m.kill();
        }
        self.net.kill_all();
        for m in &self.mounted {
            disk::unmount(m);
        }
        if std::env::var_os("CAIRN_LAB_KEEP").is_some() {
            let keep = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!("cairn-lab: kept {}", keep.keep().display());
        }
        // Then `net` drops (namespaces, veths, bridge) and `dir` is removed.
    }
}
