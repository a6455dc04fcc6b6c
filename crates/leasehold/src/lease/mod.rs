//! Lease arithmetic: how long a holder may believe it holds a lock; and (in `state.rs`) the
//! shared state of one held lease with its loss signal.
//!
//! The server's TTL starts when the server runs the acquire (or extend) script, which is
//! after the client sent it. So the holder measures from the *send* time on its own
//! monotonic clock and subtracts a drift allowance for clock-rate differences:
//! `valid_until = sent_at + ttl - drift`, `drift = ttl * 1% + 2 ms`.

use std::time::Duration;
use tokio::time::Instant;

pub(crate) mod renew;
mod state;

pub(crate) use state::{deadline_margin, LeaseState};
pub use state::{LostReason, ReleaseOutcome};

/// The smallest lease accepted.
pub const MIN_TTL: Duration = Duration::from_millis(10);
/// The largest lease accepted: a lock held for longer than a day without renewal is
/// almost certainly a bug.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The drift allowance for a lease of `ttl`: 1% of it plus 2 ms.
pub fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

/// The conservative local deadline of a lease whose request was sent at `sent_at`.
pub fn valid_until(sent_at: Instant, ttl: Duration) -> Instant {
    sent_at + ttl.saturating_sub(drift(ttl))
}

/// Milliseconds for Redis, rounded up so a lease is never shorter than asked.
pub(crate) fn millis(d: Duration) -> u64 {
    let ms = d.as_millis();
    let ms = if !d.as_nanos().is_multiple_of(1_000_000) {
        ms + 1
    } else {
        ms
    };
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_one_percent_plus_two_ms() {
        assert_eq!(drift(Duration::from_secs(1)), Duration::from_millis(12));
        assert_eq!(drift(Duration::from_secs(30)), Duration::from_millis(302));
    }

    #[test]
    fn valid_until_subtracts_drift_from_send_time() {
        let t = Instant::now();
        assert_eq!(
            valid_until(t, Duration::from_secs(10)),
            t + Duration::from_millis(10_000 - 102)
        );
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(millis(Duration::from_micros(1500)), 2);
        assert_eq!(millis(Duration::from_millis(7)), 7);
    }
}
