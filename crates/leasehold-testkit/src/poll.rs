//! Waiting for a condition the only way this kit allows: polling it with a
//! deadline, never sleeping a fixed time and hoping.
//!
//! Invariant: each helper evaluates its condition at least once, at most
//! `timeout / POLL_INTERVAL + 2` times, and returns by the deadline plus one
//! evaluation of the condition.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// Pause between two evaluations of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

fn max_polls(timeout: Duration) -> u128 {
    timeout.as_millis() / POLL_INTERVAL.as_millis() + 2
}

/// Evaluates `condition` every 5 ms until it returns `true` or `timeout`
/// passes; returns whether it became true. Blocks the thread.
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    for _ in 0..max_polls(timeout) {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    false
}

/// Async [`poll_until`]: awaits `condition()` every 5 ms until it yields
/// `true` or `timeout` passes; returns whether it became true.
///
/// # Cancel safety
///
/// Cancelling drops the condition future being awaited, if any.
pub async fn poll_until_async<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    for _ in 0..max_polls(timeout) {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_until_stops_when_the_condition_holds() {
        let mut calls = 0;
        assert!(poll_until(Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
    }

    #[test]
    fn poll_until_gives_up_at_the_deadline() {
        let start = Instant::now();
        assert!(!poll_until(Duration::from_millis(30), || false));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
