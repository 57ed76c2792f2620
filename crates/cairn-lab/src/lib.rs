//! The fault lab: real `cairn` processes as separate hosts, faults injected
//! on purpose, and a Jepsen-style check that nothing acknowledged was lost.
//!
//! Owns: the lab network ([`net`]: one Linux network namespace per host on a
//! private bridge, or loopback addresses without root), the processes and
//! their faults ([`Cluster`]: SIGKILL and restart, partition and heal,
//! corrupt or delete chunk files, fill a disk), the workload ([`Workload`])
//! and the model and checker ([`model`], [`checker`]). Does not own any
//! behaviour of Cairn itself: it drives the `cairn` binary and
//! `cairn-client` from outside, and reads storage nodes' segment files
//! directly only to corrupt them and to count good copies independently of
//! meta.
//!
//! Called by the scenario tests in `tests/` and by the soak
//! (`CAIRN_LAB_SOAK_SECS`). Read first: [`Lab`], then [`Cluster`] and
//! [`model::Model`].
//!
//! Under failure: a lab cleans up after itself on drop, also when a test
//! panics (processes killed, tmpfs unmounted, namespaces, veths and bridge
//! deleted); a lab whose test process was SIGKILLed is swept by the next
//! lab that starts (its pid file names a dead process). Children also get
//! `PR_SET_PDEATHSIG`, so they die with the test process.
//!
//! This is test infrastructure: its operations panic with a message naming
//! what failed instead of returning errors, like `cairn-testkit`.

pub mod checker;
pub mod cluster;
pub mod disk;
pub mod model;
pub mod net;
pub mod process;
pub mod workload;

pub use checker::Report;
pub use cluster::{Cluster, LabConfig};
pub use net::NetMode;
pub use workload::{History, Workload, WorkloadConfig};

use std::time::Duration;

/// A cluster, a runtime for the checker's client, and the glue of a
/// scenario: start a workload, stop it and check.
pub struct Lab {
    pub rt: tokio::runtime::Runtime,
    pub cluster: Cluster,
}

impl Lab {
    pub fn start(cfg: LabConfig) -> Lab {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        Lab {
            rt,
            cluster: Cluster::start(cfg),
        }
    }

    pub fn workload(&self, cfg: WorkloadConfig) -> Workload {
        Workload::start(&self.rt, self.cluster.client_config(), cfg)
    }

    /// The chunks of the files at `paths` now.
    pub fn chunks_of(&self, paths: &[String]) -> std::collections::HashSet<cairn_types::ChunkId> {
        let client = self.rt.block_on(workload::connect(
            &self.cluster.client_config(),
            Duration::from_secs(30),
        ));
        self.rt.block_on(async {
            let mut out = std::collections::HashSet::new();
            for p in paths {
                let path = cairn_types::CairnPath::parse(p).expect("valid path");
                let inode = client.stat(&path).await.expect("stat");
                out.extend(inode.extents.iter().map(|e| e.chunk));
            }
            out
        })
    }

    /// Stop `w` (each task finishes its operation in flight).
    pub fn stop(&self, w: Workload) -> History {
        w.stop(&self.rt)
    }

    /// Read everything back, wait for redundancy (at most `settle`), print
    /// the summary and panic on any loss. Faults must be healed first.
    pub fn check(&self, scenario: &str, history: &History, settle: Duration) -> Report {
        let report = checker::check(scenario, &self.cluster, &self.rt, history, settle);
        report.assert_ok();
        report
    }

    /// [`Lab::stop`] then [`Lab::check`].
    pub fn finish(&self, scenario: &str, w: Workload, settle: Duration) -> (History, Report) {
        let history = self.stop(w);
        let report = self.check(scenario, &history, settle);
        (history, report)
    }
}
