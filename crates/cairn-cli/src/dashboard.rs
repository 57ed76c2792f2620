//! The web dashboard meta's HTTP port serves at `/` (with `cairn server`
//! and `cairn meta`): storage nodes, repair and prefetch progress, the
//! cluster's throughput over the last minutes, and a read-only file
//! browser (directories, sizes, versions, cues, chunk locations).
//!
//! The page, its script and its style are compiled into the binary (no
//! CDN, nothing fetched elsewhere); the script reads the JSON under
//! `/api/` that this module answers through an admin client of the
//! cluster, the same calls the CLI makes. Who may see it is checked by
//! [`cairn_metrics::serve`] before any of this runs.

use crate::commands::{chunk_rows, inode_json, status_json};
use cairn_client::Client;
use cairn_metrics::{reply, PageFuture, Pages, Reply, StatusCode};
use cairn_proto::NodeState;
use cairn_types::{CairnPath, ErrorKind, NodeId};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// How often the throughput is sampled, and how many samples are kept
/// (six minutes).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const SAMPLES: usize = 72;
/// Entries of a directory one listing request returns at most.
const PAGE: u32 = 500;

/// Bytes per second the storage nodes served and took in over one sample.
#[derive(Clone, Copy)]
struct Rate {
    t_ms: u64,
    read: f64,
    written: f64,
}

/// The samples and what the last sample saw of each node.
#[derive(Default)]
struct Throughput {
    rates: VecDeque<Rate>,
    last: HashMap<NodeId, (u64, u64)>,
    last_ms: u64,
}

impl Throughput {
    /// Take one sample: each node's counters since the last one (a node
    /// that restarted, whose counters went back, counts from zero).
    fn add(&mut self, t_ms: u64, nodes: impl Iterator<Item = (NodeId, u64, u64)>) {
        let (mut read, mut written) = (0u64, 0u64);
        let mut seen = HashMap::new();
        for (id, r, w) in nodes {
            let (r0, w0) = self.last.get(&id).copied().unwrap_or((r, w));
            read += if r >= r0 { r - r0 } else { r };
            written += if w >= w0 { w - w0 } else { w };
            seen.insert(id, (r, w));
        }
        let first = self.last_ms == 0;
        let secs = t_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last = seen;
        self.last_ms = t_ms;
        if first || secs <= 0.0 {
            return;
        }
        if self.rates.len() == SAMPLES {
            self.rates.pop_front();
        }
        self.rates.push_back(Rate {
            t_ms,
            read: read as f64 / secs,
            written: written as f64 / secs,
        });
    }

    fn json(&self) -> Value {
        Value::Array(
            self.rates
                .iter()
                .map(|r| json!({"t_ms": r.t_ms, "read_bps": r.read, "write_bps": r.written}))
                .collect(),
        )
    }
}

/// The dashboard of one cluster, answering through `client`.
pub struct Dashboard {
    client: Client,
    throughput: Mutex<Throughput>,
}

impl Dashboard {
    /// The dashboard, and its sampler running until the process ends.
    pub fn start(client: Client) -> Arc<Dashboard> {
        let d = Arc::new(Dashboard {
            client,
            throughput: Mutex::default(),
        });
        let weak = Arc::downgrade(&d);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(d) = weak.upgrade() else { return };
                if let Ok(s) = d.client.cluster_status().await {
                    let nodes = s
                        .nodes
                        .iter()
                        .filter(|n| n.state != NodeState::Dead)
                        .map(|n| (n.id, n.stats.served_bytes, n.stats.written_bytes));
                    d.throughput
                        .lock()
                        .unwrap()
                        .add(cairn_types::now_ms(), nodes);
                }
            }
        });
        d
    }

    async fn status(&self) -> Result<Value, cairn_types::Error> {
        let s = self.client.cluster_status().await?;
        let jobs = self.client.prefetch_status(&[]).await.unwrap_or_default();
        Ok(json!({
            "status": status_json(&s),
            "prefetch": jobs.iter().map(crate::fleet::job_json).collect::<Vec<_>>(),
            "throughput": self.throughput.lock().unwrap().json(),
        }))
    }

    async fn listing(&self, p: &CairnPath, after: Option<String>) -> Result<Value, Failed> {
        let entries = self.client.list_page(p, after, PAGE).await?;
        let more = entries.len() == PAGE as usize;
        let rows: Vec<Value> = entries
            .iter()
            .map(|e| {
                let mut j = inode_json(&e.name, &e.inode);
                j["name"] = json!(e.name);
                j
            })
            .collect();
        Ok(json!({"path": p.as_str(), "entries": rows, "more": more}))
    }

    async fn file(&self, p: &CairnPath) -> Result<Value, Failed> {
        let stat = self.client.stat(p).await?;
        let mut out = json!({"path": p.as_str(), "stat": inode_json(p.as_str(), &stat)});
        if stat.kind == cairn_types::InodeKind::File {
            let versions = self.client.versions(p).await.unwrap_or_default();
            out["versions"] = versions.iter().map(|i| inode_json(p.as_str(), i)).collect();
            let (_, rows) = chunk_rows(&self.client, p).await?;
            out["chunks"] = json!(rows);
        }
        if let Ok(c) = self.client.cues(p).await {
            out["cues"] = json!(c.effective.to_string());
            out["own_cues"] = json!(c.own.map(|o| o.to_string()));
        }
        Ok(out)
    }

    async fn api(&self, path: &str, query: &str) -> Reply {
        let arg = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let target = || -> Result<CairnPath, Failed> {
            let raw = arg("path").unwrap_or_else(|| "/".into());
            CairnPath::parse(&raw).map_err(Failed::from)
        };
        let answer = match path {
            "/api/status" => self.status().await.map_err(Failed::from),
            "/api/ls" => match target() {
                Ok(p) => self.listing(&p, arg("after")).await,
                Err(e) => Err(e),
            },
            "/api/file" => match target() {
                Ok(p) => self.file(&p).await,
                Err(e) => Err(e),
            },
            _ => Err(Failed(StatusCode::NOT_FOUND, format!("no {path} here"))),
        };
        match answer {
            Ok(v) => reply(StatusCode::OK, "application/json", v.to_string()),
            Err(Failed(code, msg)) => reply(
                code,
                "application/json",
                json!({ "error": msg }).to_string(),
            ),
        }
    }
}

/// A request the API could not answer: the HTTP status and why.
struct Failed(StatusCode, String);

impl From<cairn_types::Error> for Failed {
    fn from(e: cairn_types::Error) -> Failed {
        let code = match e.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::InvalidInput | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failed(code, e.to_string())
    }
}

impl From<anyhow::Error> for Failed {
    fn from(e: anyhow::Error) -> Failed {
        match e.downcast::<cairn_types::Error>() {
            Ok(e) => e.into(),
            Err(e) => Failed(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")),
        }
    }
}

/// The dashboard as the pages of an HTTP port.
pub struct Site(pub Arc<Dashboard>);

impl Pages for Site {
    fn page(&self, path: &str, query: &str) -> PageFuture {
        let (d, path, query) = (self.0.clone(), path.to_string(), query.to_string());
        Box::pin(async move {
            match path.as_str() {
                "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", INDEX),
                "/app.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
                "/app.css" => reply(StatusCode::OK, "text/css; charset=utf-8", STYLE),
                p if p.starts_with("/api/") => d.api(p, &query).await,
                _ => reply(
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "not here\n",
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_the_change_per_second_of_every_node() {
        let mut t = Throughput::default();
        let (a, b) = (NodeId(1), NodeId(2));
        t.add(1_000, [(a, 100, 50), (b, 0, 0)].into_iter());
        assert!(t.rates.is_empty(), "the first sample is the baseline");
        t.add(3_000, [(a, 300, 50), (b, 200, 400)].into_iter());
        let r = t.rates[0];
        assert_eq!((r.read, r.written), (200.0, 200.0));
        // b restarted (its counters went back), a new node c appeared.
        t.add(
            5_000,
            [(a, 300, 50), (b, 10, 0), (NodeId(3), 7, 7)].into_iter(),
        );
        let r = t.rates[1];
        assert_eq!((r.read, r.written), (5.0, 0.0));
        for i in 0..2 * SAMPLES as u64 {
            t.add(7_000 + i * 1000, std::iter::empty());
        }
        assert_eq!(t.rates.len(), SAMPLES);
    }
}
