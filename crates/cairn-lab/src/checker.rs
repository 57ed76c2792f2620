//! The final check, once the workload has stopped and faults are healed:
//! every path reads back as a value its model allows (an acknowledged file
//! byte-exact at its last acknowledged version, a deleted or renamed-away
//! path absent), nothing the workload never wrote exists, and every chunk of
//! every file has its full count of good copies on disk.

use crate::cluster::Cluster;
use crate::model::Val;
use crate::workload::{identify, History};
use cairn_client::Client;
use cairn_types::{CairnPath, ChunkId, ErrorKind};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// What the check found. `lost` counts every path whose content the model
/// does not allow (missing, stale, resurrected, corrupt or unreadable).
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: String,
    pub acked: u64,
    pub unknown: u64,
    pub timed_out: u64,
    pub reads: u64,
    pub faults: u64,
    pub files_verified: u64,
    pub present: u64,
    pub absent: u64,
    pub tainted: u64,
    pub chunks: u64,
    /// Every chunk of every file present at the end: (id, length, CRC-list
    /// checksum, copies wanted).
    pub chunk_list: Vec<(ChunkId, u64, u32, u8)>,
    pub repair_time: Option<Duration>,
    pub lost: u64,
    pub problems: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cairn-lab: {}: operations acknowledged {} (unknown outcome {}, timed out {}, reads {}), \
             faults injected {}, files verified {} ({} present, {} absent, {} integrity-only), \
             chunks {}, lost = {}",
            self.scenario,
            self.acked,
            self.unknown,
            self.timed_out,
            self.reads,
            self.faults,
            self.files_verified,
            self.present,
            self.absent,
            self.tainted,
            self.chunks,
            self.lost
        )?;
        if let Some(t) = self.repair_time {
            write!(f, ", redundancy restored in {:.1}s", t.as_secs_f64())?;
        }
        Ok(())
    }
}

impl Report {
    /// Print the summary and panic if anything was lost.
    pub fn assert_ok(&self) {
        println!("{self}");
        assert!(
            self.lost == 0 && self.problems.is_empty(),
            "cairn-lab: {}: {} problem(s):\n{}",
            self.scenario,
            self.problems.len(),
            self.problems.join("\n")
        );
    }
}

/// Read back every path of `history` and list the chunks of what exists
/// (id, length, CRC-list checksum, copies wanted).
pub async fn read_back(
    client: &Client,
    history: &History,
    rep: u8,
    limit: Duration,
    report: &mut Report,
) -> Vec<(ChunkId, u64, u32, u8)> {
    let end = Instant::now() + limit;
    let mut chunks = Vec::new();
    let mut ours = BTreeSet::new();
    for model in &history.models {
        for (p, state) in &model.paths {
            ours.insert(p.clone());
            report.files_verified += 1;
            if state.tainted {
                report.tainted += 1;
            }
            let path = CairnPath::parse(p).expect("valid path");
            let mut last_err = None;
            let seen = loop {
                let attempt = async {
                    let reader = match client.open(&path).await {
                        Ok(r) => r,
                        Err(e) if e.kind == ErrorKind::NotFound => return Ok((Val::Absent, None)),
                        Err(e) => return Err(e),
                    };
                    let inode = reader.inode().clone();
                    let bytes = reader.read_at(0, reader.size()).await?;
                    Ok((identify(&bytes, &model.candidates(p)), Some(inode)))
                };
                match attempt.await {
                    Ok(v) => break Some(v),
                    Err(e) if Instant::now() < end => {
                        last_err = Some(e);
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => {
                        last_err = Some(e);
                        break None;
                    }
                }
            };
            let Some((val, inode)) = seen else {
                report.lost += 1;
                report.problems.push(format!(
                    "{p}: unreadable ({}); the model allows {:?}",
                    last_err.map(|e| e.to_string()).unwrap_or_default(),
                    state.possible
                ));
                continue;
            };
            if !model.allows(p, &val) {
                report.lost += 1;
                report.problems.push(match val {
                    Val::Absent => format!("{p}: missing; acknowledged as {:?}", state.possible),
                    Val::Data {
                        seed: u64::MAX,
                        len,
                    } => format!(
                        "{p}: holds {len} bytes that match no version written; allowed {:?}",
                        state.possible
                    ),
                    v => format!("{p}: holds {v:?}; allowed {:?}", state.possible),
                });
                continue;
            }
            match inode {
                None => report.absent += 1,
                Some(inode) => {
                    report.present += 1;
                    for e in &inode.extents {
                        chunks.push((e.chunk, e.len, e.crc, rep));
                    }
                }
            }
        }
    }
    // Nothing but the workload's paths may exist: no resurrected names.
    let mut after = None;
    loop {
        match client
            .list_page(&CairnPath::root(), after.clone(), 1000)
            .await
        {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                for e in &page {
                    let p = format!("/{}", e.name);
                    if !ours.contains(&p) {
                        report.lost += 1;
                        report
                            .problems
                            .push(format!("{p}: exists but the workload never wrote it"));
                    }
                }
                after = page.last().map(|e| e.name.clone());
            }
            Err(e) => {
                report.problems.push(format!("listing / failed: {e}"));
                break;
            }
        }
    }
    report.chunks = chunks.len() as u64;
    chunks
}

/// The whole end-of-run check: settle, read back, check copies on disk.
/// `history` comes from a stopped workload; faults must be healed.
pub fn check(
    scenario: &str,
    cluster: &Cluster,
    rt: &tokio::runtime::Runtime,
    history: &History,
    settle_limit: Duration,
) -> Report {
    let mut report = Report {
        scenario: scenario.to_string(),
        acked: history.stats.acked(),
        unknown: history.stats.unknown.load(Relaxed),
        timed_out: history.stats.timed_out.load(Relaxed),
        reads: history.stats.reads.load(Relaxed),
        faults: cluster.faults(),
        ..Report::default()
    };
    for v in &history.violations {
        report.lost += 1;
        report.problems.push(v.clone());
    }
    let client = rt.block_on(crate::workload::connect(
        &cluster.client_config(),
        Duration::from_secs(30),
    ));
    // Reads first (they also make the client report corrupt copies it
    // meets), then wait for redundancy on exactly the chunks that exist.
    let chunks = rt.block_on(read_back(
        &client,
        history,
        cluster.cfg.rep,
        Duration::from_secs(60),
        &mut report,
    ));
    match cluster.wait_settled(&chunks, settle_limit) {
        Ok(t) => report.repair_time = Some(t),
        Err(e) => report.problems.push(e),
    }
    report.chunk_list = chunks;
    report
}
