//! Metrics through the `metrics` facade: no exporter is forced on library users.
//!
//! Install any `metrics` recorder (e.g. `metrics-exporter-prometheus`) in the application
//! to see them; [`describe`] gives every series its unit and description (a client calls
//! it when it is built; call it again if the recorder is installed later).
//!
//! Labels are bounded by default: `kind` (`lock`, `fair_lock`, `semaphore`,
//! `rwlock_read`, `rwlock_write`) and, if the lock sets one with
//! [`Lock::metrics_group`](crate::Lock::metrics_group), `group`. The lock name becomes the
//! `lock` label only with
//! [`ClientBuilder::metrics_lock_names`](crate::ClientBuilder::metrics_lock_names): names
//! like `order/{id}` would make a series per order.
//!
//! | name | kind | unit | extra labels | meaning |
//! |---|---|---|---|---|
//! | `leasehold_acquisitions_total` | counter | count | `outcome` (`granted`, `contended`, `timed_out`, `ambiguous`, `not_replicated`, `no_quorum`) | acquire calls by result |
//! | `leasehold_contention_total` | counter | count | | acquire attempts refused because the lock was held |
//! | `leasehold_wait_seconds` | histogram | seconds | | time from calling acquire to the grant |
//! | `leasehold_hold_seconds` | histogram | seconds | | time from the grant to the release |
//! | `leasehold_leases_held` | gauge | count | | leases granted and not yet released or dropped |
//! | `leasehold_renewals_total` | counter | count | | leases renewed by the watchdog |
//! | `leasehold_leases_lost_total` | counter | count | `reason` (`expired`, `held_by_other`, `deadline_passed`) | leases lost |
//! | `leasehold_unknown_outcomes_total` | counter | count | `op` | commands whose outcome was unknown (timeout, broken connection) |

use std::sync::Arc;
use std::time::Duration;

use metrics::{Label, Unit};

/// The labels every series of one lock carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Series {
    labels: Vec<Label>,
}

impl Series {
    /// `kind`, then `group` and `lock` when given.
    pub(crate) fn new(kind: &'static str, group: Option<&str>, name: Option<&str>) -> Arc<Self> {
        let mut labels = vec![Label::from_static_parts("kind", kind)];
        if let Some(group) = group {
            labels.push(Label::new("group", group.to_string()));
        }
        if let Some(name) = name {
            labels.push(Label::new("lock", name.to_string()));
        }
        Arc::new(Series { labels })
    }

    fn with(&self, key: &'static str, value: &'static str) -> Vec<Label> {
        let mut labels = self.labels.clone();
        labels.push(Label::from_static_parts(key, value));
        labels
    }
}

/// Give every leasehold series its unit and description in the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "leasehold_acquisitions_total",
        Unit::Count,
        "Acquire calls by outcome"
    );
    describe_counter!(
        "leasehold_contention_total",
        Unit::Count,
        "Acquire attempts refused because the lock was held"
    );
    describe_histogram!(
        "leasehold_wait_seconds",
        Unit::Seconds,
        "Time from calling acquire to the grant"
    );
    describe_histogram!(
        "leasehold_hold_seconds",
        Unit::Seconds,
        "Time from the grant to the release"
    );
    describe_gauge!(
        "leasehold_leases_held",
        Unit::Count,
        "Leases granted and not yet released or dropped"
    );
    describe_counter!(
        "leasehold_renewals_total",
        Unit::Count,
        "Leases renewed by the watchdog"
    );
    describe_counter!(
        "leasehold_leases_lost_total",
        Unit::Count,
        "Leases lost, by reason"
    );
    describe_counter!(
        "leasehold_unknown_outcomes_total",
        Unit::Count,
        "Commands whose outcome was unknown (timeout, broken connection), by operation"
    );
}

pub(crate) fn acquisition(s: &Series, outcome: &'static str) {
    metrics::counter!("leasehold_acquisitions_total", s.with("outcome", outcome)).increment(1);
}

pub(crate) fn contended(s: &Series) {
    metrics::counter!("leasehold_contention_total", s.labels.clone()).increment(1);
}

pub(crate) fn waited(s: &Series, d: Duration) {
    metrics::histogram!("leasehold_wait_seconds", s.labels.clone()).record(d.as_secs_f64());
}

/// A lease was granted (`true`) or ended (`false`).
pub(crate) fn holding(s: &Series, granted: bool) {
    let gauge = metrics::gauge!("leasehold_leases_held", s.labels.clone());
    if granted {
        gauge.increment(1.0);
    } else {
        gauge.decrement(1.0);
    }
}

pub(crate) fn held(s: &Series, d: Duration) {
    metrics::histogram!("leasehold_hold_seconds", s.labels.clone()).record(d.as_secs_f64());
}

pub(crate) fn renewed(s: &Series) {
    metrics::counter!("leasehold_renewals_total", s.labels.clone()).increment(1);
}

/// A lease was lost; `reason` is the label (see `LostReason::label`).
pub(crate) fn lease_lost(s: &Series, reason: &'static str) {
    metrics::counter!("leasehold_leases_lost_total", s.with("reason", reason)).increment(1);
}

pub(crate) fn unknown_outcome(s: &Series, op: &'static str) {
    metrics::counter!("leasehold_unknown_outcomes_total", s.with("op", op)).increment(1);
}
