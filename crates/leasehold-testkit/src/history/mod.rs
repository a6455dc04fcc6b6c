//! [`History`]: an append-only, thread-safe log of what lock holders believed
//! and did during a run, for a Jepsen-style [`check`] afterwards.
//!
//! Workers record each hold's life — [`acquired`](History::acquired), then
//! [`released`](History::released) or [`lost`](History::lost) — and every
//! write to the protected resource ([`FencedResource`](crate::FencedResource)
//! records its own). Invariants: events are only ever appended; a recorder
//! takes its timestamp from the monotonic clock while it holds the log's lock,
//! so the order of recording is the order of the timestamps; grants are
//! numbered per lock name from 1 in the order their `Acquired` events are
//! recorded, and never repeat for a name (an `Acquired` passed to
//! [`record`](History::record) moves the counter past its grant).

mod check;
mod report;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

pub use check::check;
pub use report::{
    HoldSpan, OutsideReason, Overlap, Report, SpanEnd, StaleWrite, WorkAfterLost, WriteInfo,
    WriteOutsideHold,
};

/// One entry of a [`History`]: what happened, to which hold, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened, on the monotonic clock.
    pub at: Instant,
    /// The lock name.
    pub name: String,
    /// The hold it concerns; unique per hold, e.g. `"worker-3#17"`.
    pub holder: String,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The holder was granted the lock and from now on believes it holds it.
    Acquired {
        /// The grant's fencing token, if the lock issues any.
        token: Option<u64>,
        /// The recorder's sequence number for this grant of this name.
        grant: u64,
    },
    /// The holder stopped believing it holds the lock, to release it.
    Released,
    /// The holder was told its lease was lost.
    LostNotified,
    /// The holder wrote to the protected resource.
    Write {
        /// The token the write carried (`None` for a lock without tokens).
        token: Option<u64>,
        /// The writer's grant.
        grant: u64,
        /// Whether the resource applied the write.
        accepted: bool,
    },
}

/// One hold of a lock, as a worker passes it to writes and to the recorders.
///
/// Made by [`History::acquired`]; the fields are public so tests can build
/// holds by hand.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hold {
    /// The lock name.
    pub name: String,
    /// Unique per hold, e.g. `"worker-3#17"`.
    pub holder: String,
    /// The recorder's sequence number for this grant of `name`.
    pub grant: u64,
    /// The grant's fencing token, if the lock issues any.
    pub token: Option<u64>,
}

/// A thread-safe, append-only event log shared by every worker of a run.
///
/// Record in the order the worker's beliefs change: call
/// [`acquired`](Self::acquired) after the lock was granted,
/// [`released`](Self::released) *before* sending the release (so the next
/// holder's grant cannot be recorded ahead of it), and [`lost`](Self::lost)
/// as soon as the lease-lost signal fires. A re-entrant acquisition of a lock
/// already held is the same hold: do not record it again.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Event>,
    /// Last grant handed out per lock name.
    last_grant: HashMap<String, u64>,
}

impl History {
    /// An empty history, ready to share between workers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Appends `event` as given (its `at` included).
    pub fn record(&self, event: Event) {
        let mut inner = self.lock();
        if let EventKind::Acquired { grant, .. } = event.kind {
            let last = inner.last_grant.entry(event.name.clone()).or_insert(0);
            *last = (*last).max(grant);
        }
        inner.events.push(event);
    }

    /// Every event so far, sorted by time (ties keep recording order).
    pub fn events(&self) -> Vec<Event> {
        let mut events = self.lock().events.clone();
        events.sort_by_key(|event| event.at);
        events
    }

    /// Records that `holder` was granted `name` (with `token`, if the lock
    /// issues tokens) and returns the hold, numbered with the next grant of
    /// `name`.
    #[must_use = "pass the hold to writes and to `released` / `lost`"]
    pub fn acquired(&self, name: &str, holder: &str, token: Option<u64>) -> Hold {
        let mut inner = self.lock();
        let last = inner.last_grant.entry(name.to_owned()).or_insert(0);
        *last += 1;
        let grant = *last;
        inner.push(name, holder, EventKind::Acquired { token, grant });
        Hold {
            name: name.to_owned(),
            holder: holder.to_owned(),
            grant,
            token,
        }
    }

    /// Records that `hold` stopped believing it holds its lock, to release it.
    pub fn released(&self, hold: &Hold) {
        self.lock()
            .push(&hold.name, &hold.holder, EventKind::Released);
    }

    /// Records that `hold` was told its lease was lost.
    pub fn lost(&self, hold: &Hold) {
        self.lock()
            .push(&hold.name, &hold.holder, EventKind::LostNotified);
    }

    /// Records a write by `hold`, carrying its token, that the resource
    /// `accepted` or refused. [`FencedResource`](crate::FencedResource) calls
    /// this itself; use it for resources of your own.
    pub fn wrote(&self, hold: &Hold, accepted: bool) {
        let kind = EventKind::Write {
            token: hold.token,
            grant: hold.grant,
            accepted,
        };
        self.lock().push(&hold.name, &hold.holder, kind);
    }

    /// [`check`]s every event so far.
    pub fn check(&self) -> Report {
        check(&self.events())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Appends an event stamped now; the caller holds the lock, so stamps are
    /// in recording order.
    fn push(&mut self, name: &str, holder: &str, kind: EventKind) {
        self.events.push(Event {
            at: Instant::now(),
            name: name.to_owned(),
            holder: holder.to_owned(),
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn grants_count_up_per_name_independently() {
        let history = History::new();
        let a1 = history.acquired("a", "w1#1", None);
        let b1 = history.acquired("b", "w2#1", Some(40));
        let a2 = history.acquired("a", "w3#1", None);
        assert_eq!((a1.grant, b1.grant, a2.grant), (1, 1, 2));
        assert_eq!(b1.token, Some(40));
        assert_eq!(a2.name, "a");
        assert_eq!(a2.holder, "w3#1");
    }

    #[test]
    fn recorded_acquire_moves_the_grant_counter_past_it() {
        let history = History::new();
        history.record(Event {
            at: Instant::now(),
            name: "a".into(),
            holder: "w1#1".into(),
            kind: EventKind::Acquired {
                token: None,
                grant: 7,
            },
        });
        assert_eq!(history.acquired("a", "w2#1", None).grant, 8);
    }

    #[test]
    fn events_come_back_sorted_by_time_whatever_the_recording_order() {
        let history = History::new();
        let base = Instant::now();
        for (ms, holder) in [(30, "c"), (10, "a"), (20, "b"), (10, "a2")] {
            history.record(Event {
                at: base + Duration::from_millis(ms),
                name: "n".into(),
                holder: holder.into(),
                kind: EventKind::Released,
            });
        }
        let holders: Vec<_> = history.events().into_iter().map(|e| e.holder).collect();
        assert_eq!(holders, ["a", "a2", "b", "c"]);
    }

    #[test]
    fn recorders_log_the_hold_life_in_order() {
        let history = History::new();
        let hold = history.acquired("a", "w1#1", Some(5));
        history.wrote(&hold, true);
        history.lost(&hold);
        history.released(&hold);
        let kinds: Vec<_> = history.events().into_iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Acquired {
                    token: Some(5),
                    grant: 1
                },
                EventKind::Write {
                    token: Some(5),
                    grant: 1,
                    accepted: true
                },
                EventKind::LostNotified,
                EventKind::Released,
            ]
        );
        assert!(history.check().is_clean());
    }
}
