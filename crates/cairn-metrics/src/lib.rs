//! Prometheus metrics of a Cairn process, and the HTTP endpoint that
//! serves them (`GET /metrics`, the OpenMetrics text format).
//!
//! One registry per process ([`global`]), as Prometheus clients keep a
//! default one: every role in the process (meta, each storage node of a
//! `cairn server`) records into it, storage nodes under a `node` label.
//! Counters and histograms are updated where the work happens (atomics, no
//! lock on the request path); gauges of state that lives elsewhere (node
//! states, chunk store fill) are set by refreshers the roles register,
//! called on each scrape.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

mod http;
pub use http::{reply, serve, Access, PageFuture, Pages, Reply};
pub use hyper::StatusCode;

pub use prometheus_client::metrics::counter::Counter;

/// A request to meta, by operation and outcome (`ok` or an error kind).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetaOp {
    pub op: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    pub op: &'static str,
}

/// A storage node's id as a label value: 16 hex digits, as `cairn
/// cluster status` and the logs write it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct NodeId(pub u64);

impl EncodeLabelValue for NodeId {
    fn encode(&self, e: &mut LabelValueEncoder) -> std::fmt::Result {
        use std::fmt::Write;
        write!(e, "{:016x}", self.0)
    }
}

/// A request to a storage node, by node id and operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeOp {
    pub node: NodeId,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Node {
    pub node: NodeId,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    pub state: &'static str,
}

/// An S3 request by HTTP method and response status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Http {
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Method {
    pub method: &'static str,
}

/// A lookup in one of a client's caches and how it went (`memory`,
/// `disk`, `hit` or `miss`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Lookup {
    pub cache: &'static str,
    pub outcome: &'static str,
}

/// Request latencies by the labels `L`.
type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;
/// A gauge per storage node.
pub type NodeGauges = Family<Node, Gauge>;
/// Sets gauges before a scrape; false once what it reports is gone.
type Refresher = Box<dyn FnMut(&Metrics) -> bool + Send>;

/// Request latencies from 50 µs to about 14 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 4.0, 10))
}

/// Every metric a Cairn process keeps.
pub struct Metrics {
    /// `cairn_meta_requests_total{op, outcome}`.
    pub meta_requests: Family<MetaOp, Counter>,
    /// `cairn_meta_request_duration_seconds{op}`.
    pub meta_seconds: Latencies<Op>,
    /// `cairn_meta_nodes{state}`: storage nodes meta knows, by state.
    pub meta_nodes: Family<State, Gauge>,
    /// `cairn_meta_pending_garbage_chunks`: chunks waiting for collection.
    pub meta_garbage: Gauge,
    /// `cairn_meta_repair_pending_chunks`, `cairn_meta_repair_bytes_left`:
    /// what the repair planner's last pass found to copy.
    pub repair_pending: Gauge,
    pub repair_bytes_left: Gauge,
    /// `cairn_meta_repair_copies_total{outcome}` (`done`, `failed`) and
    /// `cairn_meta_repair_orphans_deleted_total`.
    pub repair_copies: Family<Outcome, Counter>,
    pub repair_orphans: Counter,
    /// `cairn_storage_requests_total{node, op}`.
    pub storage_requests: Family<NodeOp, Counter>,
    /// `cairn_storage_request_duration_seconds{node, op}`.
    pub storage_seconds: Latencies<NodeOp>,
    /// `cairn_storage_written_bytes_total{node}`: chunk bytes taken in
    /// (writes, copies from peers, recalls).
    pub storage_written: Family<Node, Counter>,
    /// `cairn_storage_read_bytes_total{node}`: chunk bytes sent out.
    pub storage_read: Family<Node, Counter>,
    /// `cairn_storage_chunks{node}`, `cairn_storage_used_bytes{node}`,
    /// `cairn_storage_free_bytes{node}`, `cairn_storage_cache_bytes{node}`,
    /// `cairn_storage_corrupt_chunks{node}`.
    pub storage_chunks: NodeGauges,
    pub storage_used: NodeGauges,
    pub storage_free: NodeGauges,
    pub storage_cache: NodeGauges,
    pub storage_corrupt: NodeGauges,
    /// `cairn_storage_segments{node}`: segment files;
    /// `cairn_storage_reclaimable_bytes{node}`: bytes of deleted or
    /// replaced records in them, which compaction gives back.
    pub storage_segments: NodeGauges,
    pub storage_reclaimable: NodeGauges,
    /// `cairn_storage_scrubbed_bytes_total{node}`: bytes the scrubber
    /// re-read and checked.
    pub storage_scrubbed: Family<Node, Counter>,
    /// `cairn_s3_requests_total{method, status}`.
    pub s3_requests: Family<Http, Counter>,
    /// `cairn_s3_request_duration_seconds{method}`: until the response's
    /// headers (a GET's body streams after).
    pub s3_seconds: Latencies<Method>,
    /// `cairn_mount_requests_total{op}` and
    /// `cairn_mount_request_duration_seconds{op}`: kernel (FUSE) requests
    /// a mount answered, and their time until the reply.
    pub mount_requests: Family<Op, Counter>,
    pub mount_seconds: Latencies<Op>,
    /// `cairn_client_cache_lookups_total{cache, outcome}`: the client's
    /// caches (`chunks`: file data, in memory or on disk; `opens`: a
    /// file's metadata) answering a read, or not.
    pub cache_lookups: Family<Lookup, Counter>,
    registry: Registry,
    refreshers: Mutex<Vec<Refresher>>,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            meta_requests: Family::default(),
            meta_seconds: Family::new_with_constructor(latency),
            meta_nodes: Family::default(),
            meta_garbage: Gauge::default(),
            repair_pending: Gauge::default(),
            repair_bytes_left: Gauge::default(),
            repair_copies: Family::default(),
            repair_orphans: Counter::default(),
            storage_requests: Family::default(),
            storage_seconds: Family::new_with_constructor(latency),
            storage_written: Family::default(),
            storage_read: Family::default(),
            storage_chunks: Family::default(),
            storage_used: Family::default(),
            storage_free: Family::default(),
            storage_cache: Family::default(),
            storage_corrupt: Family::default(),
            storage_scrubbed: Family::default(),
            storage_segments: Family::default(),
            storage_reclaimable: Family::default(),
            s3_requests: Family::default(),
            s3_seconds: Family::new_with_constructor(latency),
            mount_requests: Family::default(),
            mount_seconds: Family::new_with_constructor(latency),
            cache_lookups: Family::default(),
            registry: Registry::with_prefix("cairn"),
            refreshers: Mutex::new(Vec::new()),
        };
        let r = &mut m.registry;
        r.register(
            "meta_requests",
            "Requests meta answered, by operation and outcome (ok or the error kind)",
            m.meta_requests.clone(),
        );
        r.register(
            "meta_request_duration_seconds",
            "Time meta took to answer a request, by operation",
            m.meta_seconds.clone(),
        );
        r.register(
            "meta_nodes",
            "Storage nodes meta knows, by state",
            m.meta_nodes.clone(),
        );
        r.register(
            "meta_pending_garbage_chunks",
            "Chunks of replaced or removed files waiting to be deleted from their nodes",
            m.meta_garbage.clone(),
        );
        r.register(
            "meta_repair_pending_chunks",
            "Chunks the repair planner's last pass found short of redundancy or misplaced",
            m.repair_pending.clone(),
        );
        r.register(
            "meta_repair_bytes_left",
            "Bytes those chunks still need copied",
            m.repair_bytes_left.clone(),
        );
        r.register(
            "meta_repair_copies",
            "Chunk copies repair made (done) or could not make (failed)",
            m.repair_copies.clone(),
        );
        r.register(
            "meta_repair_orphans_deleted",
            "Unreferenced chunks (orphans, surplus copies) repair deleted from nodes",
            m.repair_orphans.clone(),
        );
        r.register(
            "storage_requests",
            "Requests a storage node handled, by operation",
            m.storage_requests.clone(),
        );
        r.register(
            "storage_request_duration_seconds",
            "Time a storage node took to handle a request, by operation",
            m.storage_seconds.clone(),
        );
        r.register(
            "storage_written_bytes",
            "Chunk bytes a storage node took in (client writes, copies from peers, recalls from a remote store)",
            m.storage_written.clone(),
        );
        r.register(
            "storage_read_bytes",
            "Chunk bytes a storage node sent out (to readers, peers and remote stores)",
            m.storage_read.clone(),
        );
        r.register(
            "storage_chunks",
            "Chunks a storage node holds",
            m.storage_chunks.clone(),
        );
        r.register(
            "storage_used_bytes",
            "Bytes a storage node's chunk store takes on disk",
            m.storage_used.clone(),
        );
        r.register(
            "storage_free_bytes",
            "Free bytes on a storage node's file system",
            m.storage_free.clone(),
        );
        r.register(
            "storage_cache_bytes",
            "Bytes of cache copies (prefetch, hot=, read-through) a storage node holds",
            m.storage_cache.clone(),
        );
        r.register(
            "storage_corrupt_chunks",
            "Chunks a storage node found corrupt and has not yet had repaired",
            m.storage_corrupt.clone(),
        );
        r.register(
            "storage_segments",
            "Segment files of a storage node's chunk store",
            m.storage_segments.clone(),
        );
        r.register(
            "storage_reclaimable_bytes",
            "Bytes of deleted or replaced records in a storage node's segments, which compaction gives back",
            m.storage_reclaimable.clone(),
        );
        r.register(
            "storage_scrubbed_bytes",
            "Bytes a storage node's scrubber re-read and checked",
            m.storage_scrubbed.clone(),
        );
        r.register(
            "s3_requests",
            "Requests the S3 gateway answered, by HTTP method and status",
            m.s3_requests.clone(),
        );
        r.register(
            "s3_request_duration_seconds",
            "Time the S3 gateway took to the response's headers, by HTTP method",
            m.s3_seconds.clone(),
        );
        r.register(
            "mount_requests",
            "Kernel (FUSE) requests a mount answered, by operation",
            m.mount_requests.clone(),
        );
        r.register(
            "mount_request_duration_seconds",
            "Time a mount took to answer a kernel request, by operation",
            m.mount_seconds.clone(),
        );
        r.register(
            "client_cache_lookups",
            "Lookups in a client's caches (chunks: file data; opens: file metadata), by outcome (memory, disk, hit, miss)",
            m.cache_lookups.clone(),
        );
        m
    }

    /// One kernel request a mount answered after `took`.
    pub fn mount_request(&self, op: &'static str, took: Duration) {
        self.mount_requests.get_or_create(&Op { op }).inc();
        self.mount_seconds
            .get_or_create(&Op { op })
            .observe(took.as_secs_f64());
    }

    /// One lookup in a client cache.
    pub fn cache_lookup(&self, cache: &'static str, outcome: &'static str) {
        self.cache_lookups
            .get_or_create(&Lookup { cache, outcome })
            .inc();
    }

    /// Call `f` before each scrape, to set gauges from state kept
    /// elsewhere; it returns false once what it reports is gone (a
    /// stopped node), and is then dropped.
    pub fn refresh(&self, f: impl FnMut(&Metrics) -> bool + Send + 'static) {
        self.refreshers.lock().unwrap().push(Box::new(f));
    }

    /// One request answered by meta.
    pub fn meta_request(&self, op: &'static str, outcome: &'static str, took: Duration) {
        self.meta_requests
            .get_or_create(&MetaOp { op, outcome })
            .inc();
        self.meta_seconds
            .get_or_create(&Op { op })
            .observe(took.as_secs_f64());
    }

    /// One request handled by storage node `node`.
    pub fn storage_request(&self, node: u64, op: &'static str, took: Duration) {
        let l = NodeOp {
            node: NodeId(node),
            op,
        };
        self.storage_requests.get_or_create(&l).inc();
        self.storage_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }

    /// One S3 request answered with `status` after `took`.
    pub fn s3_request(&self, method: &hyper::Method, status: u16, took: Duration) {
        let method = match *method {
            hyper::Method::GET => "GET",
            hyper::Method::PUT => "PUT",
            hyper::Method::POST => "POST",
            hyper::Method::DELETE => "DELETE",
            hyper::Method::HEAD => "HEAD",
            hyper::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.s3_requests
            .get_or_create(&Http { method, status })
            .inc();
        self.s3_seconds
            .get_or_create(&Method { method })
            .observe(took.as_secs_f64());
    }

    /// Set gauge `g` to a count kept as u64 (saturating).
    pub fn set(g: &Gauge, v: u64) {
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
    }

    /// Bring counter `c` up to `total`, a running count kept elsewhere
    /// (a count that went back, after a restart, is left alone).
    pub fn catch_up(c: &Counter, total: u64) {
        if let Some(d) = total.checked_sub(c.get()).filter(|d| *d > 0) {
            c.inc_by(d);
        }
    }

    /// Drop every series of storage node `node` (it stopped).
    pub fn forget_node(&self, node: u64) {
        let n = Node { node: NodeId(node) };
        for f in [
            &self.storage_chunks,
            &self.storage_used,
            &self.storage_free,
            &self.storage_cache,
            &self.storage_corrupt,
            &self.storage_segments,
            &self.storage_reclaimable,
        ] {
            f.remove(&n);
        }
    }

    /// Everything, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        {
            let mut fs = self.refreshers.lock().unwrap();
            fs.retain_mut(|f| f(self));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}
