//! In-process Cairn clusters for tests: one meta and N storage nodes on
//! ports the OS picks, in a temp dir of their own, torn down on drop.
//!
//! Read first: [`TestCluster`]. Nodes can be stopped (the process-level
//! equivalent of a crash without fsync loss: the store is closed) and
//! restarted on the same directory; chunk files can be corrupted on purpose.

pub mod etcd;
pub mod moto;

use cairn_client::{Client, ClientConfig};
use cairn_meta::server::{MetaConfig, MetaHandle};
use cairn_proto::Credentials;
use cairn_storage::{StorageConfig, StorageHandle};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub meta: Option<MetaHandle>,
    pub meta_cfg: MetaConfig,
    pub nodes: Vec<Option<StorageHandle>>,
    /// Addresses nodes had, so a restarted node keeps its address.
    pub node_addrs: Vec<String>,
    /// Applied to every storage node's config (also on restart).
    pub node_tweak: NodeTweak,
}

/// Changes a test makes to storage node `i`'s config (its `host` starts as
/// `host-<i>`, its `zone` as `default`).
pub type NodeTweak = std::sync::Arc<dyn Fn(usize, &mut StorageConfig) + Send + Sync>;

impl TestCluster {
    /// Start meta with `default_rep` and `n` storage nodes, and wait until
    /// every node is live.
    pub async fn start(n: usize, default_rep: u8) -> TestCluster {
        Self::start_with(n, |c| c.default_rep = default_rep).await
    }

    pub async fn start_with(n: usize, tweak: impl FnOnce(&mut MetaConfig)) -> TestCluster {
        Self::start_full(n, tweak, std::sync::Arc::new(|_, _| {})).await
    }

    /// Start with changes to meta's config and to each node's.
    pub async fn start_full(
        n: usize,
        tweak: impl FnOnce(&mut MetaConfig),
        node_tweak: NodeTweak,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut meta_cfg = MetaConfig::new(dir.path().join("meta"));
        meta_cfg.gc_interval = Duration::from_millis(200);
        tweak(&mut meta_cfg);
        let meta = cairn_meta::server::start(meta_cfg.clone())
            .await
            .expect("meta starts");
        let mut c = TestCluster {
            dir,
            meta: Some(meta),
            meta_cfg,
            nodes: Vec::new(),
            node_addrs: Vec::new(),
            node_tweak,
        };
        for i in 0..n {
            let h = c.spawn_node(i, "127.0.0.1:0".into()).await;
            c.node_addrs.push(h.addr.clone());
            c.nodes.push(Some(h));
        }
        c.wait_live(n).await;
        c
    }

    pub fn meta_addr(&self) -> String {
        self.meta.as_ref().expect("meta running").addr.clone()
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    fn secret(&self) -> cairn_proto::ClusterSecret {
        cairn_meta::server::load_or_create_secret(&self.meta_cfg.data_dir).expect("secret")
    }

    async fn spawn_node(&self, i: usize, listen: String) -> StorageHandle {
        self.try_spawn_node(i, listen)
            .await
            .expect("storage node starts")
    }

    pub async fn client(&self) -> Client {
        self.client_with(|_| {}).await
    }

    /// A client whose configuration `tweak` changes (no caches, say).
    pub async fn client_with(&self, tweak: impl FnOnce(&mut ClientConfig)) -> Client {
        let creds = self.secret().client_credentials();
        let mut cfg = ClientConfig::new(vec![self.meta_addr()], creds);
        tweak(&mut cfg);
        Client::connect(cfg).await.expect("client connects")
    }

    /// Stop node `i` (its port closes; meta notices only after dead_after).
    pub async fn stop_node(&mut self, i: usize) {
        if let Some(h) = self.nodes[i].take() {
            h.shutdown().await;
        }
    }

    /// Start node `i` again on its old directory and address.
    pub async fn restart_node(&mut self, i: usize) {
        let addr = self.node_addrs[i].clone();
        let end = Instant::now() + Duration::from_secs(10);
        // The old socket or store lock may linger briefly; retry.
        loop {
            if let Ok(h) = self.try_spawn_node(i, addr.clone()).await {
                self.nodes[i] = Some(h);
                return;
            }
            assert!(Instant::now() < end, "node {i} did not restart");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn try_spawn_node(&self, i: usize, listen: String) -> cairn_types::Result<StorageHandle> {
        let mut sc = StorageConfig::new(self.node_dir(i), vec![self.meta_addr()]);
        sc.listen = listen;
        sc.heartbeat = Duration::from_millis(200);
        sc.compact_every = Duration::from_millis(200);
        sc.store.reserve_free = 0;
        sc.store.segment_size = 4 << 20;
        sc.scrub_rate = 0;
        // One "machine" per node, so place=local can be told apart
        // in-process; a tweak may put several nodes on one host.
        sc.host = format!("host-{i}");
        (self.node_tweak)(i, &mut sc);
        cairn_storage::start(sc, Credentials::Cluster(self.secret())).await
    }

    pub async fn restart_meta(&mut self) {
        if let Some(m) = self.meta.take() {
            let addr = m.addr.clone();
            m.shutdown().await;
            self.meta_cfg.listen = addr;
        }
        let cfg = self.meta_cfg.clone();
        let m = wait_for(Duration::from_secs(10), || {
            let cfg = cfg.clone();
            async move { cairn_meta::server::start(cfg).await.ok() }
        })
        .await;
        self.meta = Some(m);
    }

    /// Wait until `n` nodes are live according to meta.
    pub async fn wait_live(&self, n: usize) {
        let c = self.client().await;
        wait_for(Duration::from_secs(30), || async {
            let s = c.cluster_status().await.ok()?;
            (s.nodes.iter().filter(|x| x.state.is_up()).count() >= n).then_some(())
        })
        .await;
    }

    /// Start one more storage node; returns its index.
    pub async fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let h = self.spawn_node(i, "127.0.0.1:0".into()).await;
        self.node_addrs.push(h.addr.clone());
        self.nodes.push(Some(h));
        i
    }

    /// Index of the node with id `id`.
    pub fn node_index(&self, id: cairn_types::NodeId) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|h| h.id == id))
    }

    /// The chunks (and shards) on every running node, as each lists them.
    pub async fn nodes_chunks(&self) -> Vec<std::collections::HashSet<cairn_types::ChunkId>> {
        let creds = Credentials::Cluster(self.secret());
        let mut out = Vec::new();
        for h in self.nodes.iter().flatten() {
            let mut conn = cairn_proto::connect(&h.addr, &creds, Duration::from_secs(10))
                .await
                .expect("node answers");
            let r: cairn_types::Result<Vec<cairn_types::ChunkId>> = conn
                .call(
                    &cairn_proto::StorageRequest::ListChunks,
                    Duration::from_secs(10),
                )
                .await
                .expect("node lists its chunks");
            out.push(r.expect("node lists its chunks").into_iter().collect());
        }
        out
    }

    /// Every segment file of node `i`.
    pub fn segment_files(&self, i: usize) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.node_dir(i).join("chunks"))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.retain(|p| p.extension().is_some_and(|e| e == "log"));
        v.sort();
        v
    }

    /// Bytes of segment files on node `i`'s disk.
    pub fn disk_bytes(&self, i: usize) -> u64 {
        self.segment_files(i)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    pub async fn shutdown(mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(h) = n.take() {
                h.shutdown().await;
            }
        }
        if let Some(m) = self.meta.take() {
            m.shutdown().await;
        }
    }
}

/// Poll `f` until it yields Some, or panic after `deadline`.
pub async fn wait_for<T, F, Fut>(deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Meta settings for repair tests: rep=3, a node dead after 1.5 s of
/// silence, garbage due after 100 ms, a planner pass every 200 ms with no
/// bandwidth limit, orphans swept after 2 s.
pub fn fast_repair(m: &mut MetaConfig) {
    m.default_rep = 3;
    m.dead_after = Duration::from_millis(1500);
    m.gc_delay = Duration::from_millis(100);
    m.repair.interval = Duration::from_millis(200);
    m.repair.suspect_after = Duration::from_millis(1000);
    m.repair.orphan_after = Duration::from_secs(2);
    m.repair.bandwidth = 0;
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

/// Log to the test's output when RUST_LOG is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
