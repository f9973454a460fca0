//! Idle detection: every frame in or out touches the session's [`Activity`]; a watchdog
//! ends the session when nothing moved for the configured time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Cancels `gone` once `activity` has been idle for `timeout`; returns when either happens.
pub(crate) async fn watchdog(activity: Activity, timeout: Duration, gone: CancellationToken) {
    loop {
        let idle = activity.idle_for();
        if idle >= timeout {
            tracing::info!(?timeout, "stream idle too long, closing it");
            gone.cancel();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(timeout - idle) => {}
            _ = gone.cancelled() => return,
        }
    }
}
