//! A byte-rate limit shared by tasks: each caller reserves its bytes and
//! waits until the rate allows them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Spaces transfers out so that they average `bandwidth` bytes per second
/// (0: unlimited). Reservations are first come, first served.
pub struct Throttle {
    bandwidth: u64,
    next: Mutex<Instant>,
}

impl Throttle {
    pub fn new(bandwidth: u64) -> Throttle {
        Throttle {
            bandwidth,
            next: Mutex::new(Instant::now()),
        }
    }

    pub fn bandwidth(&self) -> u64 {
        self.bandwidth
    }

    /// Wait until `bytes` more fit the rate.
    pub async fn take(&self, bytes: u64) {
        if self.bandwidth == 0 {
            return;
        }
        let start = {
            let mut next = self.next.lock().unwrap();
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / self.bandwidth as f64);
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_the_rate() {
        let t = Throttle::new(100_000);
        let begin = std::time::Instant::now();
        for _ in 0..5 {
            t.take(10_000).await;
        }
        // The fifth 10,000-byte take may start 0.4 s after the first, not
        // sooner (a lower bound only: a loaded machine is only slower).
        assert!(
            begin.elapsed() >= Duration::from_millis(390),
            "{:?}",
            begin.elapsed()
        );
        let free = Throttle::new(0);
        free.take(1 << 40).await;
    }
}
