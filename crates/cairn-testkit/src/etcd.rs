//! A real etcd cluster for tests: N `etcd` processes on loopback ports the OS
//! picks, each in its own temp dir, SIGKILLed on drop (also when the test
//! panics). Members can be killed and restarted on their data.
//!
//! Needs the `etcd` binary (Debian: `apt-get install etcd-server`), or its
//! path in `CAIRN_ETCD`.

use cairn_meta::{EtcdConfig, EtcdStore};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
}

fn etcd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_ETCD") {
        return p.into();
    }
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("etcd not found: install it (Debian: apt-get install etcd-server) or set CAIRN_ETCD");
}

fn free_ports(n: usize) -> Vec<u16> {
    // Hold all listeners until every port is known, so no port repeats.
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    ls.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

impl EtcdCluster {
    /// Start `n` members and wait until the cluster has a leader and answers.
    pub async fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy(Duration::from_secs(30)).await;
        c
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        std::fs::create_dir_all(&data).expect("member dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .expect("member log");
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(etcd_binary())
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", data.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=cairn-test")
            // etcd's defaults otherwise (128 ops per transaction, 1.5 MiB per
            // request), so the tests show Cairn works within them.
            // Fast failover: tests kill members on purpose.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    /// HOST:PORT of every member's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The `--store` URL for this cluster with a key prefix, e.g. `etcd://a,b,c/test`.
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{prefix}", self.endpoints().join(","))
    }

    pub fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig::new(self.endpoints(), format!("/{prefix}/"))
    }

    /// A store on this cluster under `prefix`.
    pub async fn store(&self, prefix: &str) -> EtcdStore {
        EtcdStore::connect(self.config(prefix))
            .await
            .unwrap_or_else(|e| panic!("connect to etcd: {e}\n{}", self.logs()))
    }

    /// Index of the member that leads, as the running members see it.
    pub async fn leader(&self) -> Option<usize> {
        // Each member reports its own id and the leader's.
        let mut ids = Vec::new();
        let mut leader = None;
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let ep = format!("127.0.0.1:{}", m.client_port);
            let Ok(mut c) = etcd_client::Client::connect([ep], None).await else {
                continue;
            };
            let Ok(st) = c.status().await else { continue };
            leader = leader.or(Some(st.leader()));
            if let Some(h) = st.header() {
                ids.push((i, h.member_id()));
            }
        }
        let leader = leader?;
        ids.into_iter()
            .find(|(_, id)| *id == leader)
            .map(|(i, _)| i)
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start a killed member again on its data.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i);
    }

    /// Wait until the running members form a cluster that answers writes.
    pub async fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut cfg = self.config("health");
        cfg.timeout = Duration::from_secs(2);
        loop {
            let err = match EtcdStore::connect(cfg.clone()).await {
                Ok(s) => match cairn_meta::MetaStore::commit(
                    &s,
                    cairn_meta::Txn::new().put(b"probe".to_vec(), b"".to_vec()),
                )
                .await
                {
                    Ok(_) => return,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if Instant::now() > deadline {
                panic!(
                    "etcd cluster not healthy within {within:?}: {err}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tail of every member's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                .unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            out.push_str(&format!("--- etcd {} log (last lines)\n", m.name));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
