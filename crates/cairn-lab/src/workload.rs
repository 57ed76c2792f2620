//! The workload: concurrent puts, overwrites, renames, deletes and reads
//! through `cairn-client`, each task on paths of its own, recording every
//! outcome into a [`Model`]. Reads made while faults are injected are
//! checked against the model as they happen.

use crate::model::{Model, Outcome, Val};
use cairn_client::{Client, ClientConfig, PutOptions};
use cairn_types::{CairnPath, ErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub tasks: usize,
    pub paths_per_task: usize,
    /// Largest small file; small files use the cluster's chunk size.
    pub small_max: u32,
    /// Medium files: this range of sizes, in chunks of `chunk_size`.
    pub medium: std::ops::Range<u32>,
    pub medium_percent: u32,
    pub chunk_size: u64,
    /// An operation not answered within this is abandoned (its paths tainted).
    pub op_timeout: Duration,
    /// Name prefix of every path, so two workloads can share a cluster.
    pub prefix: String,
    /// Pause of each task between operations: keeps the data rate (and so
    /// the disk use of garbage not yet collected) bounded.
    pub op_interval: Duration,
    /// Files written (multi-chunk) before the tasks start and never touched
    /// again: data older than any fault, which only repair can keep whole.
    pub stable_files: usize,
}

impl Default for WorkloadConfig {
    fn default() -> WorkloadConfig {
        WorkloadConfig {
            tasks: 6,
            paths_per_task: 5,
            small_max: 64 << 10,
            medium: (256 << 10)..(800 << 10),
            medium_percent: 20,
            chunk_size: 256 << 10,
            op_timeout: Duration::from_secs(90),
            prefix: "lab".into(),
            op_interval: Duration::from_millis(40),
            stable_files: 8,
        }
    }
}

/// Counters shared by the tasks, readable while the workload runs.
#[derive(Default, Debug)]
pub struct Stats {
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub renames: AtomicU64,
    pub reads: AtomicU64,
    pub unknown: AtomicU64,
    pub timed_out: AtomicU64,
    pub failed_reads: AtomicU64,
}

impl Stats {
    /// Mutations acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.puts.load(Relaxed) + self.deletes.load(Relaxed) + self.renames.load(Relaxed)
    }
}

/// What the workload did: one model per task, counters, and anything a read
/// saw that the model does not allow.
pub struct History {
    pub models: Vec<Model>,
    pub stats: Arc<Stats>,
    pub violations: Vec<String>,
}

pub struct Workload {
    stable: Model,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    violations: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<Model>>,
}

fn path(s: &str) -> CairnPath {
    CairnPath::parse(s).expect("lab path is valid")
}

/// Connect, retrying while meta is unreachable, for at most `limit`.
pub async fn connect(cfg: &ClientConfig, limit: Duration) -> Client {
    let end = Instant::now() + limit;
    loop {
        match Client::connect(cfg.clone()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < end => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cairn-lab: cannot connect to meta within {limit:?}: {e}"),
        }
    }
}

impl Workload {
    /// Start the workload on `rt`.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        client: ClientConfig,
        cfg: WorkloadConfig,
    ) -> Workload {
        let client = rt.block_on(connect(&client, Duration::from_secs(30)));
        let stable = rt.block_on(write_stable(&client, &cfg));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let violations = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..cfg.tasks)
            .map(|t| {
                let task = Task {
                    id: t,
                    client: client.clone(),
                    cfg: cfg.clone(),
                    stop: stop.clone(),
                    stats: stats.clone(),
                    violations: violations.clone(),
                    rng: fastrand::Rng::new(),
                };
                rt.spawn(task.run())
            })
            .collect();
        Workload {
            stable,
            stop,
            stats,
            violations,
            tasks,
        }
    }

    /// Paths of the files written before the tasks started.
    pub fn stable_paths(&self) -> Vec<String> {
        self.stable.paths.keys().cloned().collect()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Wait until `n` more mutations are acknowledged; panic after `limit`
    /// (the cluster stopped taking writes).
    pub fn wait_acked(&self, n: u64, limit: Duration) {
        let start = self.stats.acked();
        let end = Instant::now() + limit;
        while self.stats.acked() < start + n {
            assert!(
                Instant::now() < end,
                "cairn-lab: only {} of {n} operations acknowledged within {limit:?}",
                self.stats.acked() - start
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Let the workload run for `d` (the time faults have to act), then keep
    /// going until at least `min_acked` more mutations are acknowledged.
    pub fn run_for(&self, d: Duration, min_acked: u64, limit: Duration) {
        let start = self.stats.acked();
        std::thread::sleep(d);
        let done = self.stats.acked() - start;
        if done < min_acked {
            self.wait_acked(min_acked - done, limit);
        }
    }

    /// Stop the tasks (each finishes its operation in flight) and return the
    /// history.
    pub fn stop(self, rt: &tokio::runtime::Runtime) -> History {
        self.stop.store(true, Relaxed);
        let models = rt.block_on(async {
            let mut v = vec![self.stable];
            for t in self.tasks {
                v.push(t.await.expect("workload task panicked"));
            }
            v
        });
        History {
            models,
            stats: self.stats,
            violations: std::mem::take(&mut self.violations.lock().unwrap()),
        }
    }
}

struct Task {
    id: usize,
    client: Client,
    cfg: WorkloadConfig,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    violations: Arc<Mutex<Vec<String>>>,
    rng: fastrand::Rng,
}

impl Task {
    fn paths(&self) -> Vec<String> {
        (0..self.cfg.paths_per_task)
            .map(|k| format!("/{}-t{}-f{}", self.cfg.prefix, self.id, k))
            .collect()
    }

    fn outcome<T>(
        &self,
        r: Result<cairn_types::Result<T>, tokio::time::error::Elapsed>,
    ) -> Outcome {
        let o = match r {
            Ok(Ok(_)) => Outcome::Ok,
            Ok(Err(e)) if e.kind == ErrorKind::Timeout => Outcome::TimedOut,
            Ok(Err(_)) => Outcome::Unknown,
            Err(_) => Outcome::TimedOut,
        };
        match o {
            Outcome::Ok => {}
            Outcome::Unknown => {
                self.stats.unknown.fetch_add(1, Relaxed);
            }
            Outcome::TimedOut => {
                self.stats.timed_out.fetch_add(1, Relaxed);
            }
        }
        o
    }

    async fn run(mut self) -> Model {
        let paths = self.paths();
        let mut model = Model::new(&paths);
        let mut seq = 0u64;
        let timeout = self.cfg.op_timeout;
        while !self.stop.load(Relaxed) {
            let p = paths[self.rng.usize(..paths.len())].clone();
            let roll = self.rng.u32(0..100);
            let ok = if roll < 50 {
                seq += 1;
                let seed = ((self.id as u64) << 40) | seq;
                let medium = self.rng.u32(0..100) < self.cfg.medium_percent;
                let len = if medium {
                    self.rng.u32(self.cfg.medium.clone())
                } else {
                    self.rng.u32(0..=self.cfg.small_max)
                };
                let v = Val::Data { seed, len };
                let data = v.bytes().unwrap();
                let opts = PutOptions {
                    chunk_size: medium.then_some(self.cfg.chunk_size),
                    ..PutOptions::default()
                };
                let r =
                    tokio::time::timeout(timeout, self.client.put_bytes(&path(&p), &data, opts))
                        .await;
                let o = self.outcome(r);
                model.put(&p, v, o);
                if o == Outcome::Ok {
                    self.stats.puts.fetch_add(1, Relaxed);
                }
                o == Outcome::Ok
            } else if roll < 62 {
                let q = paths[self.rng.usize(..paths.len())].clone();
                if q == p {
                    continue;
                }
                let r =
                    tokio::time::timeout(timeout, self.client.rename(&path(&p), &path(&q))).await;
                let o = self.outcome(r);
                model.rename(&p, &q, o);
                if o == Outcome::Ok {
                    self.stats.renames.fetch_add(1, Relaxed);
                }
                o == Outcome::Ok
            } else if roll < 72 {
                let r = tokio::time::timeout(timeout, self.client.remove(&path(&p), false)).await;
                let o = self.outcome(r);
                model.delete(&p, o);
                if o == Outcome::Ok {
                    self.stats.deletes.fetch_add(1, Relaxed);
                }
                o == Outcome::Ok
            } else {
                match tokio::time::timeout(timeout, read_val(&self.client, &p, &model)).await {
                    Ok(Ok(seen)) => {
                        self.stats.reads.fetch_add(1, Relaxed);
                        if !model.allows(&p, &seen) {
                            self.violations.lock().unwrap().push(format!(
                                "read of {p} during the run returned {seen:?}; the model allows {:?}",
                                model.candidates(&p)
                            ));
                        }
                        true
                    }
                    _ => {
                        self.stats.failed_reads.fetch_add(1, Relaxed);
                        false
                    }
                }
            };
            if !ok {
                // Pace retries while the cluster is degraded (e.g. meta down),
                // so the log is not a storm of refused connections.
                tokio::time::sleep(Duration::from_millis(100 + self.rng.u64(0..100))).await;
            } else if !self.cfg.op_interval.is_zero() {
                tokio::time::sleep(self.cfg.op_interval).await;
            }
        }
        model
    }
}

/// Write the stable files, each acknowledged (retried until it is).
async fn write_stable(client: &Client, cfg: &WorkloadConfig) -> Model {
    let paths: Vec<String> = (0..cfg.stable_files)
        .map(|k| format!("/{}-stable-{k}", cfg.prefix))
        .collect();
    let mut model = Model::new(&paths);
    let mut rng = fastrand::Rng::new();
    for (k, p) in paths.iter().enumerate() {
        let v = Val::Data {
            seed: (u64::from(u16::MAX) << 40) | k as u64,
            len: rng.u32((cfg.chunk_size as u32 * 2)..(cfg.chunk_size as u32 * 5)),
        };
        let data = v.bytes().unwrap();
        let opts = PutOptions {
            chunk_size: Some(cfg.chunk_size),
            ..PutOptions::default()
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match client.put_bytes(&path(p), &data, opts.clone()).await {
                Ok(_) => break,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cairn-lab: writing stable file {p}: {e}"),
            }
        }
        model.put(p, v, Outcome::Ok);
    }
    model
}

/// Read `p` and name the value it holds: `Absent`, the model's candidate
/// whose bytes match, or `Data { seed: u64::MAX, len }` for bytes that
/// match no candidate.
pub async fn read_val(client: &Client, p: &str, model: &Model) -> cairn_types::Result<Val> {
    let bytes = match client.get_bytes(&path(p)).await {
        Ok(b) => b,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(Val::Absent),
        Err(e) => return Err(e),
    };
    Ok(identify(&bytes, &model.candidates(p)))
}

/// The candidate whose bytes are exactly `bytes`, or an impossible value.
pub fn identify(bytes: &[u8], candidates: &[Val]) -> Val {
    for c in candidates {
        if c.byte_len() == Some(bytes.len() as u64) && c.bytes().as_deref() == Some(bytes) {
            return *c;
        }
    }
    Val::Data {
        seed: u64::MAX,
        len: bytes.len() as u32,
    }
}
