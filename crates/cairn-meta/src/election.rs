//! Which meta server runs the background work (repair planner, rebalance,
//! orphan sweep, garbage collection).
//!
//! On the embedded store there is one meta server, and it is always the
//! leader. On etcd, every meta server campaigns through etcd's election API
//! on `<prefix>leader` with a lease of [`LEASE_TTL`] kept alive every third
//! of it. The winner is leader until the lease is next due to expire as far
//! as it knows (the time it sent its last answered keep-alive plus the TTL
//! granted): if keep-alives stop being answered (etcd unreachable, the meta
//! process stalled) it stops considering itself leader no later than etcd
//! lets another meta win, and campaigns again with a new lease. A meta
//! server that dies stops renewing; its lease expires and the next
//! campaigner takes over within [`LEASE_TTL`] plus one round trip. A meta
//! server shut down cleanly revokes its lease, so the handover is
//! immediate.

use crate::store_etcd::EtcdConfig;
use cairn_types::{Error, Result};
use etcd_client::{Client, ConnectOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// Lease of the etcd leader key, in seconds.
pub const LEASE_TTL: i64 = 3;

/// Whether this meta server is the one that runs background work.
#[derive(Clone)]
pub struct Election {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Always,
    /// Leader until this instant (None: not leader).
    Etcd(Arc<Mutex<Option<Instant>>>),
}

impl Election {
    /// The only meta server: always the leader.
    pub fn always() -> Election {
        Election {
            inner: Inner::Always,
        }
    }

    /// Campaign on etcd until `stop` fires; `value` (the meta's address)
    /// is what the leader key holds. Returns the election and the task
    /// running it.
    pub fn etcd(
        cfg: EtcdConfig,
        value: String,
        stop: watch::Receiver<bool>,
    ) -> (Election, tokio::task::JoinHandle<()>) {
        let state = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run(cfg, value, state.clone(), stop));
        (
            Election {
                inner: Inner::Etcd(state),
            },
            task,
        )
    }

    pub fn is_leader(&self) -> bool {
        match &self.inner {
            Inner::Always => true,
            Inner::Etcd(s) => s.lock().unwrap().is_some_and(|t| Instant::now() < t),
        }
    }
}

fn etcd_err(what: &str, e: etcd_client::Error) -> Error {
    Error::unavailable(format!("leader election: {what}: {e}"))
}

async fn run(
    cfg: EtcdConfig,
    value: String,
    state: Arc<Mutex<Option<Instant>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut name = cfg.prefix.clone();
    name.extend_from_slice(b"leader");
    let mut client: Option<Client> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let r = async {
            if client.is_none() {
                // No request timeout: a campaign waits as long as another
                // meta server leads.
                let opts = ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(1))
                    .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
                    .with_require_leader(true);
                client = Some(
                    Client::connect(&cfg.endpoints, Some(opts))
                        .await
                        .map_err(|e| etcd_err("connecting", e))?,
                );
            }
            let c = client.clone().unwrap();
            term(c, &name, &value, &state, &mut stop).await
        }
        .await;
        *state.lock().unwrap() = None;
        match r {
            Ok(()) => return, // stopped
            Err(e) => warn!("{e}; campaigning again"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// One lease: campaign, lead while the lease lives. Ok(()) when stopped.
async fn term(
    mut client: Client,
    name: &[u8],
    value: &str,
    state: &Mutex<Option<Instant>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let call = Duration::from_secs(LEASE_TTL as u64);
    let lease = tokio::time::timeout(call, client.lease_grant(LEASE_TTL, None))
        .await
        .map_err(|_| Error::unavailable("leader election: granting a lease timed out"))?
        .map_err(|e| etcd_err("granting a lease", e))?
        .id();
    let r = lead(&mut client, lease, name, value, state, stop).await;
    *state.lock().unwrap() = None;
    // Give the key up at once (clean stop, or a lease we can no longer
    // trust); if etcd does not answer, the lease expires on its own.
    let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
    r
}

async fn lead(
    client: &mut Client,
    lease: i64,
    name: &[u8],
    value: &str,
    state: &Mutex<Option<Instant>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let (mut keeper, mut answers) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| etcd_err("keeping the lease alive", e))?;
    let period = Duration::from_millis(LEASE_TTL as u64 * 1000 / 3);
    // Renew the lease; the instant up to which it surely lives.
    macro_rules! renew {
        () => {
            renew(&mut keeper, &mut answers, period)
        };
    }
    let mut election = client.election_client();
    let campaign = election.campaign(name.to_vec(), value.as_bytes().to_vec(), lease);
    tokio::pin!(campaign);
    let mut tick = tokio::time::interval(period);
    // Wait to win, keeping the lease alive meanwhile.
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = &mut campaign => {
                r.map_err(|e| etcd_err("campaigning", e))?;
                break;
            }
            _ = tick.tick() => { renew!().await?; }
        }
    }
    // Elected: leader up to what the latest renewal guarantees.
    let until = renew!().await?;
    *state.lock().unwrap() = Some(until);
    info!(%value, "this meta server is now the leader (runs repair and garbage collection)");
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = tick.tick() => match renew!().await {
                Ok(until) => *state.lock().unwrap() = Some(until),
                Err(e) => {
                    warn!("stepping down as leader: {e}");
                    return Err(e);
                }
            },
        }
    }
}

/// Renew the lease once; the instant up to which it surely lives (sent
/// before etcd extended it, so etcd cannot expire it earlier).
async fn renew(
    keeper: &mut etcd_client::LeaseKeeper,
    answers: &mut etcd_client::LeaseKeepAliveStream,
    within: Duration,
) -> Result<Instant> {
    let sent = Instant::now();
    let ttl = tokio::time::timeout(within, async {
        keeper.keep_alive().await?;
        answers.message().await
    })
    .await
    .map_err(|_| Error::unavailable("leader election: lease keep-alive timed out"))?
    .map_err(|e| etcd_err("keeping the lease alive", e))?
    .map(|a| a.ttl())
    .unwrap_or(0);
    if ttl <= 0 {
        return Err(Error::unavailable("leader election: the lease expired"));
    }
    Ok(sent + Duration::from_secs(ttl as u64))
}
