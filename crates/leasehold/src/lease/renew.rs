//! The renewal scheduler (the watchdog) and deadline watch: one per client.
//!
//! Every guard shares a [`LeaseState`] (in `lease/state.rs`) with its client's scheduler.
//! The scheduler fires a lease's deadline a little *before* `valid_until`, so a holder is
//! told before Redis could grant the lock to anyone else (invariant 7).
//!
//! Auto-renewed leases are renewed on their own schedule: renewal k is due at
//! `grant + k × interval` (the grant's send time), whatever else the scheduler holds, and is
//! never sent late; it may go out up to a batching window (an eighth of the interval, at
//! most 250 ms) early, together with the others due by then, in chunks of up to [`BATCH`]
//! keys per script call, each key checked against its own owner and request id with a
//! per-key result. A call waits for its reply no longer than the earliest deadline in it,
//! so leases near their deadline are sent in calls of their own ([`plan`]), and a lease
//! that cannot be sent in time is retried until its deadline decides, never dropped.
//! Renewal calls run in their own tasks, so a slow Redis never delays a deadline. Ending a lease (release or
//! drop) stops its renewal at once; a renewal already in flight cannot refresh a released
//! hold, because the script checks the hold's request id.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::lease::{LeaseState, LostReason};
use crate::net::conn::MIN_BUDGET;
use crate::protocol::RenewItem;

/// The most leases renewed by one script call.
pub const BATCH: usize = 1_000;

/// The most a renewal is sent ahead of its due time so that it shares a call with others
/// due soon after: an eighth of the interval, at most 250 ms. It is never sent late.
fn batch_window(every: Option<Duration>) -> Duration {
    (every.unwrap_or(Duration::ZERO) / 8).min(Duration::from_millis(250))
}

/// The next due time after `due` on a schedule of `every`, past `now` (a renewal that was
/// retried for longer than an interval skips the times already gone).
fn next_due(due: Instant, every: Duration, now: Instant) -> Instant {
    let next = due + every;
    if next > now || every.is_zero() {
        return next;
    }
    let behind = now.saturating_duration_since(next).as_nanos();
    let steps = behind / every.as_nanos() + 1;
    next + every * u32::try_from(steps).unwrap_or(u32::MAX)
}

/// How a batch of due renewals is sent: each call's budget is bounded by the earliest lease
/// deadline in it (a late reply must not refresh a lease already declared lost), so leases
/// whose deadline is near go in calls of their own instead of shortening everyone's budget,
/// and leases too close to their deadline to be sent at all are retried (their deadline
/// decides), never dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Index groups of the batch, each sent as one call with its budget.
    pub calls: Vec<(Duration, Vec<usize>)>,
    /// Indexes that cannot be sent in time now.
    pub too_late: Vec<usize>,
}

/// Split renewals whose deadlines are `deadlines` (sent at `now`, with replies awaited at
/// most `timeout`) into calls; see [`Plan`].
pub(crate) fn plan(deadlines: &[Instant], now: Instant, timeout: Duration) -> Plan {
    let mut urgent: Vec<(Duration, usize)> = Vec::new();
    let mut normal = Vec::new();
    let mut too_late = Vec::new();
    for (i, at) in deadlines.iter().enumerate() {
        let left = at.saturating_duration_since(now);
        if left < MIN_BUDGET {
            too_late.push(i);
        } else if left < timeout {
            urgent.push((left, i));
        } else {
            normal.push(i);
        }
    }
    let mut calls = Vec::new();
    if !normal.is_empty() {
        calls.push((timeout, normal));
    }
    // Urgent leases, earliest deadline first, grouped so that each call's budget is at
    // least half of the largest remaining time in it.
    urgent.sort_unstable();
    let mut group: Vec<usize> = Vec::new();
    let mut budget = Duration::ZERO;
    for (left, i) in urgent {
        if group.is_empty() {
            budget = left;
        } else if left > budget * 2 {
            calls.push((budget, std::mem::take(&mut group)));
            budget = left;
        }
        group.push(i);
    }
    if !group.is_empty() {
        calls.push((budget, group));
    }
    Plan { calls, too_late }
}

/// Counters of the renewal scheduler, for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenewalStats {
    /// Renewal script calls sent.
    pub calls: u64,
    /// Leases renewed successfully.
    pub renewed: u64,
    /// Renewals refused by the server (the lease was lost).
    pub refused: u64,
    /// Renewal calls that failed (connection, timeout); their leases are retried.
    pub failed_calls: u64,
    /// Leases currently watched by the scheduler.
    pub watched: u64,
    /// Total time renewal calls took, from send to reply (µs), summed over calls.
    pub call_micros: u64,
}

/// One renewal of one lease: the lease and the time the renewal is due. The next renewal
/// is due one interval after this one (not after the moment it was sent), so a lease keeps
/// its schedule `granted_at + k × interval` whatever else the scheduler holds.
pub(crate) struct Renewal {
    pub lease: Arc<LeaseState>,
    pub due: Instant,
}

impl Renewal {
    /// This lease as an item of a renewal call.
    pub(crate) fn item(&self) -> RenewItem<'_> {
        RenewItem {
            keys: &self.lease.keys,
            owner_id: &self.lease.owner_id,
            req: &self.lease.req,
            ttl: self.lease.ttl,
        }
    }
}

enum Cmd {
    /// Start watching a lease; its first renewal (if it auto-renews) is due at `.1`.
    Watch(Arc<LeaseState>, Option<Instant>),
    /// Send a renewal at `.0` (its due time, or a retry before it).
    RenewAt(Instant, Renewal),
    /// Declare every lease watched so far lost (their server restarted).
    LoseAll(LostReason),
}

/// A queue entry: when it is due, a sequence number (FIFO among equal times), the lease and
/// the renewal's own due time (for deadlines: the same as the first field).
struct Entry(Instant, u64, Arc<LeaseState>, Instant);

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

/// What the scheduler renews through: the client's context, which knows its topology
/// (implemented in `backend.rs`, the topology seam).
pub(crate) trait Renewals: Send + Sync + Sized + 'static {
    /// This client's scheduler.
    fn renewer(&self) -> &Arc<Renewer>;
    /// Where the scheduler's tasks run.
    fn handle(&self) -> &tokio::runtime::Handle;
    /// How long a renewal reply is awaited at most.
    fn response_timeout(&self) -> Duration;
    /// Send `batch` (due now); each lease's outcome is reported back to the scheduler with
    /// [`Renewer::renewed_one`], [`Renewer::refused_one`] or [`Renewer::retry_soon`].
    fn send(self: &Arc<Self>, batch: Vec<Renewal>);
    /// Started with the scheduler: watch the connection for what ends every lease at once
    /// (a server restart), and report it with [`Renewer::lose_all`].
    fn watch_connection(self: &Arc<Self>);
}

/// The per-client renewal scheduler (its task starts on first use).
pub(crate) struct Renewer {
    pending: Mutex<Vec<Cmd>>,
    notify: Notify,
    /// The instant the task sleeps until, as nanoseconds after `base`; u64::MAX = idle.
    next_wake: AtomicU64,
    base: Instant,
    started: AtomicBool,
    ended_since_compaction: AtomicUsize,
    calls: AtomicU64,
    renewed: AtomicU64,
    refused: AtomicU64,
    failed_calls: AtomicU64,
    watched: AtomicU64,
    call_micros: AtomicU64,
}

impl Renewer {
    pub(crate) fn new() -> Self {
        Renewer {
            pending: Mutex::new(Vec::new()),
            notify: Notify::new(),
            next_wake: AtomicU64::new(u64::MAX),
            base: Instant::now(),
            started: AtomicBool::new(false),
            ended_since_compaction: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            renewed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            watched: AtomicU64::new(0),
            call_micros: AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> RenewalStats {
        RenewalStats {
            calls: self.calls.load(Ordering::Relaxed),
            renewed: self.renewed.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            failed_calls: self.failed_calls.load(Ordering::Relaxed),
            watched: self.watched.load(Ordering::Relaxed),
            call_micros: self.call_micros.load(Ordering::Relaxed),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn push<R: Renewals>(self: &Arc<Self>, inner: &Arc<R>, cmd: Cmd, due: Instant) {
        let len = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.push(cmd);
            p.len()
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            inner
                .handle()
                .spawn(run(Arc::downgrade(inner), self.clone()));
            inner.watch_connection();
        }
        if self.nanos(due) < self.next_wake.load(Ordering::Acquire) || len >= 4_096 {
            self.notify.notify_one();
        }
    }

    /// Start watching a lease: its deadline, and its renewals if it auto-renews.
    pub(crate) fn watch<R: Renewals>(self: &Arc<Self>, inner: &Arc<R>, lease: Arc<LeaseState>) {
        lease.registered.store(true, Ordering::Release);
        // A handoff's short grant is confirmed at once (also for leases that do not
        // auto-renew: that one renewal gives them the TTL they asked for).
        let first = if lease.is_provisional() {
            Some(Instant::now())
        } else {
            lease.renew_every.map(|every| lease.granted_at + every)
        };
        let wake = first.map_or(lease.fire_at(), |at| at.min(lease.fire_at()));
        self.push(inner, Cmd::Watch(lease, first), wake);
    }

    /// Declare every lease watched so far lost for `reason` (leases watched later are not
    /// touched). A no-op before the first lease.
    pub(crate) fn lose_all<R: Renewals>(self: &Arc<Self>, inner: &Arc<R>, reason: LostReason) {
        if self.started.load(Ordering::Acquire) {
            self.push(inner, Cmd::LoseAll(reason), Instant::now());
            self.notify.notify_one();
        }
    }

    /// A watched lease ended; lets the scheduler compact its queues in time.
    pub(crate) fn ended(&self, lease: &LeaseState) {
        if lease.registered.load(Ordering::Acquire)
            && self.ended_since_compaction.fetch_add(1, Ordering::Relaxed) == 4_096
        {
            self.notify.notify_one();
        }
    }

    /// Wake the task so it notices that its client is gone.
    pub(crate) fn client_dropped(&self) {
        self.notify.notify_one();
    }
}

struct Queues {
    deadlines: BinaryHeap<Reverse<Entry>>,
    renewals: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Queues {
    fn push_deadline(&mut self, lease: Arc<LeaseState>) {
        self.seq += 1;
        let at = lease.fire_at();
        self.deadlines.push(Reverse(Entry(at, self.seq, lease, at)));
    }

    fn push_renewal(&mut self, at: Instant, r: Renewal) {
        self.seq += 1;
        self.renewals
            .push(Reverse(Entry(at, self.seq, r.lease, r.due)));
    }

    fn compact(&mut self) {
        self.deadlines.retain(|Reverse(e)| !e.2.is_ended());
        self.renewals.retain(|Reverse(e)| !e.2.is_ended());
    }
}

async fn run<R: Renewals>(inner: Weak<R>, r: Arc<Renewer>) {
    let mut q = Queues {
        deadlines: BinaryHeap::new(),
        renewals: BinaryHeap::new(),
        seq: 0,
    };
    loop {
        let Some(client) = inner.upgrade() else {
            return;
        };
        // Deadlines first (before queued commands, however many): declare lost what has
        // not been confirmed in time.
        let now = Instant::now();
        let mut lost_now = 0usize;
        while let Some(Reverse(e)) = q.deadlines.peek() {
            if e.0 > now {
                break;
            }
            let Some(Reverse(Entry(_, _, lease, _))) = q.deadlines.pop() else {
                break;
            };
            if lease.is_ended() || lease.lost_reason().is_some() {
                continue;
            }
            if now >= lease.fire_at() {
                lease.lose(LostReason::DeadlinePassed);
                lost_now += 1;
            } else {
                q.push_deadline(lease);
            }
        }
        if lost_now > 0 {
            tracing::warn!(
                leases = lost_now,
                "leases lost: no renewal confirmed before their deadline"
            );
        }
        let cmds = std::mem::take(&mut *r.pending.lock().unwrap_or_else(|e| e.into_inner()));
        for cmd in cmds {
            match cmd {
                Cmd::Watch(lease, first) => {
                    if let Some(due) = first {
                        let r = Renewal {
                            lease: lease.clone(),
                            due,
                        };
                        q.push_renewal(due, r);
                    }
                    q.push_deadline(lease);
                }
                Cmd::RenewAt(at, r) => q.push_renewal(at, r),
                Cmd::LoseAll(reason) => {
                    let mut lost = 0usize;
                    for Reverse(Entry(_, _, lease, _)) in q.deadlines.iter() {
                        if !lease.is_ended() && lease.lost_reason().is_none() {
                            lease.lose(reason);
                            lost += 1;
                        }
                    }
                    if lost > 0 {
                        tracing::warn!(leases = lost, %reason, "leases lost");
                    }
                }
            }
        }
        if r.ended_since_compaction.load(Ordering::Relaxed) >= 4_096 {
            r.ended_since_compaction.store(0, Ordering::Relaxed);
            q.compact();
        }
        r.watched.store(q.deadlines.len() as u64, Ordering::Relaxed);
        let now = Instant::now();

        // Renewals: once the earliest is due, everything due within the window goes out
        // with it, in batches (a wake-up for a deadline sends nothing early).
        let mut batch = Vec::new();
        let head_due = q.renewals.peek().is_some_and(|Reverse(e)| e.0 <= now);
        while let Some(Reverse(e)) = q.renewals.peek() {
            if !head_due || e.0 > now + batch_window(e.2.renew_every) {
                break;
            }
            let Some(Reverse(Entry(_, _, lease, due))) = q.renewals.pop() else {
                break;
            };
            if lease.is_ended() || lease.lost_reason().is_some() {
                continue;
            }
            batch.push(Renewal { lease, due });
            if batch.len() == BATCH {
                client.send(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            client.send(batch);
        }

        let next = [q.deadlines.peek(), q.renewals.peek()]
            .into_iter()
            .flatten()
            .map(|Reverse(e)| e.0)
            .min();
        let wake_nanos = next.map_or(u64::MAX, |t| r.nanos(t));
        r.next_wake.store(wake_nanos, Ordering::Release);
        let notified = r.notify.notified();
        // Commands queued after we drained but before we published `next_wake` must not be
        // slept through.
        let has_pending = !r
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        drop(client);
        if has_pending {
            continue;
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            None => notified.await,
        }
    }
}

impl Renewer {
    /// Count one renewal round (one call, or one call per node).
    pub(crate) fn note_call(&self, took: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.call_micros.fetch_add(took, Ordering::Relaxed);
    }

    /// `r.lease` was renewed by a request sent at `sent`: confirm it, schedule the next
    /// renewal one interval after this one's due time.
    pub(crate) fn renewed_one<R: Renewals>(&self, inner: &Arc<R>, r: Renewal, sent: Instant) {
        let Renewal { lease, due } = r;
        lease.confirm(sent, lease.ttl);
        self.renewed.fetch_add(1, Ordering::Relaxed);
        crate::metrics::renewed(&lease.series);
        let Some(every) = lease.renew_every else {
            return; // a handoff's confirmation of a lease that does not auto-renew
        };
        let at = next_due(due, every, sent);
        inner
            .renewer()
            .push(inner, Cmd::RenewAt(at, Renewal { lease, due: at }), at);
    }

    /// A renewal call failed (connection, timeout, a reply of the wrong shape).
    pub(crate) fn note_failed_call(&self) {
        self.failed_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The server refused to renew `lease`: it is lost.
    pub(crate) fn refused_one(&self, lease: Arc<LeaseState>, reason: LostReason) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        lease.lose(reason);
    }

    /// Renewing `r.lease` failed (no answer) or could not be sent: try again soon, before
    /// its deadline, keeping its schedule.
    pub(crate) fn retry_soon<R: Renewals>(&self, inner: &Arc<R>, r: Renewal) {
        let every = r.lease.renew_every.unwrap_or(r.lease.ttl / 3);
        let now = Instant::now();
        let soon = now + (every / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        // Leave the last attempt enough time for its reply.
        let last_chance = r
            .lease
            .fire_at()
            .checked_sub(inner.response_timeout() / 2 + MIN_BUDGET)
            .unwrap_or(now)
            .max(now + MIN_BUDGET);
        let at = soon.min(last_chance);
        inner.renewer().push(inner, Cmd::RenewAt(at, r), at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_lease_too_close_to_its_deadline_does_not_take_the_rest_of_the_batch_with_it() {
        let now = Instant::now();
        let timeout = 250 * MS;
        // Lease 0 cannot be sent in time; 1 and 2 have whole intervals left.
        let p = plan(
            &[now + 2 * MS, now + 2_000 * MS, now + 900 * MS],
            now,
            timeout,
        );
        assert_eq!(p.too_late, vec![0]);
        assert_eq!(p.calls, vec![(timeout, vec![1, 2])]);
    }

    #[test]
    fn urgent_leases_get_calls_of_their_own_with_their_own_budget() {
        let now = Instant::now();
        let timeout = 250 * MS;
        let p = plan(
            &[
                now + 20 * MS,
                now + 5_000 * MS,
                now + 30 * MS,
                now + 200 * MS,
            ],
            now,
            timeout,
        );
        assert!(p.too_late.is_empty());
        assert_eq!(
            p.calls,
            vec![
                (timeout, vec![1]),
                (20 * MS, vec![0, 2]),
                (200 * MS, vec![3])
            ]
        );
    }

    #[test]
    fn every_lease_of_a_batch_is_either_sent_or_retried() {
        let now = Instant::now();
        let deadlines: Vec<Instant> = (0..200u32).map(|i| now + i * 7 * MS).collect();
        let p = plan(&deadlines, now, 250 * MS);
        let mut seen: Vec<usize> = p.calls.iter().flat_map(|(_, g)| g.clone()).collect();
        seen.extend(&p.too_late);
        seen.sort_unstable();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        for (budget, group) in &p.calls {
            for i in group {
                assert!(
                    deadlines[*i] >= now + *budget,
                    "lease {i} would be waited for past its deadline"
                );
            }
        }
    }

    #[test]
    fn the_next_renewal_keeps_the_schedule_of_the_grant() {
        let t0 = Instant::now();
        let every = 1_000 * MS;
        // Sent early (batched) or a little late: the next one is one interval after the due time.
        assert_eq!(next_due(t0 + every, every, t0 + 900 * MS), t0 + 2 * every);
        assert_eq!(next_due(t0 + every, every, t0 + 1_100 * MS), t0 + 2 * every);
        // Retried for longer than an interval: the missed times are skipped.
        assert_eq!(next_due(t0 + every, every, t0 + 3_500 * MS), t0 + 4 * every);
        assert_eq!(next_due(t0 + every, every, t0 + 2 * every), t0 + 3 * every);
    }

    #[test]
    fn renewals_are_sent_at_most_an_eighth_of_the_interval_and_250_ms_early() {
        assert_eq!(batch_window(Some(800 * MS)), 100 * MS);
        assert_eq!(batch_window(Some(10_000 * MS)), 250 * MS);
        assert_eq!(batch_window(None), Duration::ZERO);
    }
}
