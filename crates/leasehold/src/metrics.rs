//! Metrics through the `metrics` facade: no exporter is forced on library users.
//!
//! Install any `metrics` recorder (e.g. a Prometheus exporter) in the application to see
//! them. Every series carries the lock name as the `lock` label.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `leasehold_acquisitions_total` | counter | `lock`, `outcome` (`granted`, `contended`, `timed_out`, `ambiguous`, `error`) | acquire calls by result |
//! | `leasehold_contention_total` | counter | `lock` | acquire attempts refused because the lock was held |
//! | `leasehold_wait_seconds` | histogram | `lock` | time from calling acquire to the grant |
//! | `leasehold_hold_seconds` | histogram | `lock` | time from the grant to the release |
//! | `leasehold_renewals_total` | counter | `lock` | leases renewed by the watchdog |
//! | `leasehold_leases_lost_total` | counter | `lock`, `reason` | leases lost (`expired`, `held_by_other`, `deadline_passed`) |
//! | `leasehold_unknown_outcomes_total` | counter | `lock`, `op` | commands whose outcome was unknown (timeout, broken connection) |

use std::time::Duration;

pub(crate) fn acquisition(lock: &str, outcome: &'static str) {
    metrics::counter!("leasehold_acquisitions_total", "lock" => lock.to_string(), "outcome" => outcome)
        .increment(1);
}

pub(crate) fn contended(lock: &str) {
    metrics::counter!("leasehold_contention_total", "lock" => lock.to_string()).increment(1);
}

pub(crate) fn waited(lock: &str, d: Duration) {
    metrics::histogram!("leasehold_wait_seconds", "lock" => lock.to_string())
        .record(d.as_secs_f64());
}

pub(crate) fn held(lock: &str, d: Duration) {
    metrics::histogram!("leasehold_hold_seconds", "lock" => lock.to_string())
        .record(d.as_secs_f64());
}

pub(crate) fn renewed(lock: &str) {
    metrics::counter!("leasehold_renewals_total", "lock" => lock.to_string()).increment(1);
}

/// A lease was lost; `reason` is the label (see `LostReason::label`).
pub(crate) fn lease_lost(lock: &str, reason: &'static str) {
    metrics::counter!("leasehold_leases_lost_total", "lock" => lock.to_string(), "reason" => reason)
        .increment(1);
}

pub(crate) fn unknown_outcome(lock: &str, op: &'static str) {
    metrics::counter!("leasehold_unknown_outcomes_total", "lock" => lock.to_string(), "op" => op)
        .increment(1);
}
