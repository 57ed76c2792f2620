//! `cairn bench --locks`: lock round trips through meta's lock table,
//! uncontended (one owner taking and releasing a lock) and contended
//! (several owners, each on its own session, handing one exclusive lock
//! around), beside a plain meta round trip (`stat`) measured in the same
//! run. JSON, medians of `--runs`.

use crate::bench::median;
use anyhow::Result;
use cairn_client::{Client, PutOptions};
use cairn_proto::{LockAnswer, LockKind};
use cairn_types::{AttrChanges, CairnPath, Version};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct LockBenchArgs {
    /// Measure lock round trips (see --lock-*)
    #[arg(long)]
    pub locks: bool,
    /// Lock/unlock pairs per uncontended run
    #[arg(long, default_value_t = 2000)]
    pub lock_ops: usize,
    /// Owners contending for one lock
    #[arg(long, default_value_t = 4)]
    pub lock_owners: usize,
    /// Length of each contended run, s
    #[arg(long, default_value_t = 3.0)]
    pub lock_secs: f64,
}

pub async fn run(a: &LockBenchArgs, c: &Client, runs: usize) -> Result<()> {
    let path = CairnPath::parse("/bench-locks.lock")?;
    let create = PutOptions {
        expected: Some(Version(0)),
        ..Default::default()
    };
    let _ = c.put(&path, tokio::io::empty(), create).await;
    let (mut stat, mut pairs, mut handoffs) = (Vec::new(), Vec::new(), Vec::new());
    let mut chmod = Vec::new();
    for _ in 0..runs.max(1) {
        // A plain meta round trip, the floor of any lock request.
        let t = Instant::now();
        for _ in 0..a.lock_ops {
            c.stat(&path).await?;
        }
        stat.push(a.lock_ops as f64 / t.elapsed().as_secs_f64());
        // A durable namespace change (chmod): one store transaction, as a
        // lock or an unlock is.
        let t = Instant::now();
        for i in 0..a.lock_ops {
            let changes = AttrChanges {
                mode: Some(0o600 | (i as u32 & 0o44)),
                ..Default::default()
            };
            c.set_attr(&path, None, changes).await?;
        }
        chmod.push(a.lock_ops as f64 / t.elapsed().as_secs_f64());

        let s = c.lock_session(Duration::from_secs(10));
        let t = Instant::now();
        for _ in 0..a.lock_ops {
            let got = s
                .lock(&path, 1, LockKind::Exclusive, 0, u64::MAX, 0, false)
                .await?;
            anyhow::ensure!(got == LockAnswer::Granted, "uncontended lock: {got:?}");
            s.lock(&path, 1, LockKind::Unlock, 0, u64::MAX, 0, false)
                .await?;
        }
        pairs.push(a.lock_ops as f64 / t.elapsed().as_secs_f64());
        s.end().await?;

        let end = Instant::now() + Duration::from_secs_f64(a.lock_secs);
        let mut tasks = Vec::new();
        for k in 0..a.lock_owners.max(2) {
            let (c, path) = (c.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                let s = c.lock_session(Duration::from_secs(10));
                let mut n = 0u64;
                while Instant::now() < end {
                    let got = s
                        .lock(&path, k as u64, LockKind::Exclusive, 0, u64::MAX, 0, true)
                        .await?;
                    anyhow::ensure!(got == LockAnswer::Granted, "contended lock: {got:?}");
                    n += 1;
                    s.lock(&path, k as u64, LockKind::Unlock, 0, u64::MAX, 0, false)
                        .await?;
                }
                s.end().await?;
                anyhow::Ok(n)
            }));
        }
        let t = Instant::now();
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        handoffs.push(total as f64 / t.elapsed().as_secs_f64());
    }
    let (stat, pairs, handoffs) = (median(&stat), median(&pairs), median(&handoffs));
    let chmod = median(&chmod);
    let ratio = |x: f64| (x * 100.0).round() / 100.0;
    let out = json!({
        "runs": runs.max(1),
        "meta_stat_per_s": stat.round(),
        "meta_chmod_per_s": chmod.round(),
        "uncontended_lock_unlock_pairs_per_s": pairs.round(),
        // A pair is two durable changes: 1.0 means a lock or an unlock
        // costs what a chmod does.
        "uncontended_pair_vs_two_chmods": ratio(pairs * 2.0 / chmod),
        "contended_owners": a.lock_owners.max(2),
        "contended_grants_per_s": handoffs.round(),
        "contended_grant_vs_two_chmods": ratio(handoffs * 2.0 / chmod),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
