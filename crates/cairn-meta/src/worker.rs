//! Background work of meta as named workers (Garage's `Worker`): garbage
//! collection, the repair planner (re-replication, drain, rebalance,
//! orphan sweep) and prefetch jobs each implement [`Worker`], and one
//! runner drives them all: it waits between passes (or until kicked),
//! stops on the shutdown signal, and keeps a [`WorkerStatus`] per worker
//! that `cairn cluster status` lists.

use cairn_proto::WorkerStatus;
use cairn_types::Result;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::warn;

/// What a pass did, and when the next should run.
pub struct Pass {
    /// `idle`, `busy` or `standby`.
    pub state: &'static str,
    pub progress: String,
    /// Wait before the next pass (a kick ends it early); zero runs the
    /// next at once.
    pub next: Duration,
}

#[async_trait::async_trait]
pub trait Worker: Send + 'static {
    fn name(&self) -> &'static str;
    /// One unit of work. Dropped (cancelled) at a safe point if the
    /// process shuts down meanwhile.
    async fn pass(&mut self) -> Result<Pass>;
    /// The interval to wait after a failed pass.
    fn retry_after(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// The statuses of every worker, shared with the status handler.
#[derive(Clone, Default)]
pub struct Workers {
    slots: Arc<Mutex<Vec<Arc<Mutex<WorkerStatus>>>>>,
}

impl Workers {
    pub fn status(&self) -> Vec<WorkerStatus> {
        self.slots
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.lock().unwrap().clone())
            .collect()
    }

    fn slot(&self, name: &str) -> Arc<Mutex<WorkerStatus>> {
        let s = Arc::new(Mutex::new(WorkerStatus {
            name: name.to_string(),
            state: "idle".into(),
            ..Default::default()
        }));
        self.slots.lock().unwrap().push(s.clone());
        s
    }

    /// Run `w` until `stop` fires; `kick` wakes it between passes.
    pub fn spawn(
        &self,
        mut w: impl Worker,
        kick: Option<Arc<Notify>>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let slot = self.slot(w.name());
        tokio::spawn(async move {
            loop {
                slot.lock().unwrap().state = "busy".into();
                let r = tokio::select! {
                    _ = stop.changed() => break,
                    r = w.pass() => r,
                };
                let next = {
                    let mut st = slot.lock().unwrap();
                    st.passes += 1;
                    match r {
                        Ok(p) => {
                            st.state = p.state.into();
                            st.progress = p.progress;
                            st.last_error = None;
                            p.next
                        }
                        Err(e) => {
                            warn!(worker = w.name(), "pass failed: {e}");
                            st.state = "idle".into();
                            st.last_error = Some(e.to_string());
                            w.retry_after()
                        }
                    }
                };
                if next.is_zero() {
                    continue;
                }
                let kicked = async {
                    match &kick {
                        Some(k) => k.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(next) => {}
                    _ = kicked => {}
                }
            }
            slot.lock().unwrap().state = "stopped".into();
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u32);

    #[async_trait::async_trait]
    impl Worker for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }
        async fn pass(&mut self) -> Result<Pass> {
            self.0 += 1;
            if self.0 == 2 {
                return Err(cairn_types::Error::unavailable("second pass fails"));
            }
            Ok(Pass {
                state: "idle",
                progress: format!("pass {}", self.0),
                next: Duration::from_secs(3600),
            })
        }
        fn retry_after(&self) -> Duration {
            Duration::from_secs(3600)
        }
    }

    #[tokio::test]
    async fn a_worker_reports_passes_errors_and_stops() {
        let workers = Workers::default();
        let kick = Arc::new(Notify::new());
        let (stop, rx) = watch::channel(false);
        let h = workers.spawn(Counter(0), Some(kick.clone()), rx);
        let wait_for = |passes: u64| {
            let workers = workers.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let st = workers.status().remove(0);
                    if st.passes >= passes && st.state != "busy" {
                        return st;
                    }
                    assert!(tokio::time::Instant::now() < deadline, "{st:?}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let st = wait_for(1).await;
        assert_eq!(
            (st.name.as_str(), st.progress.as_str()),
            ("counter", "pass 1")
        );
        kick.notify_one();
        let st = wait_for(2).await;
        assert!(st.last_error.unwrap().contains("second pass fails"));
        kick.notify_one();
        let st = wait_for(3).await;
        assert!(st.last_error.is_none());
        stop.send(true).unwrap();
        h.await.unwrap();
        assert_eq!(workers.status()[0].state, "stopped");
    }
}
