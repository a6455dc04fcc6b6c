//! Lease state, renewal (the watchdog) and loss detection: one scheduler per client.
//!
//! Every guard shares a [`LeaseState`] with its client's scheduler. The state holds the
//! local deadline (`valid_until`, monotonic, with drift) and a cancellation token that is
//! cancelled exactly once, with a reason, when the lease is lost: a renewal was refused
//! (key gone, hold ended, or another owner), or the deadline passed without a confirmed
//! renewal (Redis unreachable or paused). The scheduler fires the deadline a little
//! *before* `valid_until`, so a holder is told before Redis could grant the lock to anyone
//! else (invariant 7).
//!
//! Auto-renewed leases are renewed every `interval`; leases due within the same window are
//! renewed together, in chunks of up to [`BATCH`] keys per script call, each key checked
//! against its own owner and request id with a per-key result. Renewal calls run in
//! their own tasks, so a slow Redis never delays a deadline. Ending a lease (release or
//! drop) stops its renewal at once; a renewal already in flight cannot refresh a released
//! hold, because the script checks the hold's request id.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Inner;
use crate::conn::Failure;
use crate::keys::LockKeys;
use crate::lease::{millis, valid_until};

/// A command is not sent with less time than this left for its reply.
pub(crate) const MIN_BUDGET: Duration = Duration::from_millis(5);

/// The most leases renewed by one script call.
pub const BATCH: usize = 1_000;

/// How much earlier than `valid_until` a lease is declared lost, to absorb timer latency
/// and the time it takes to signal many leases that share a deadline: half its drift
/// allowance, at least 2 ms.
fn deadline_margin(ttl: Duration) -> Duration {
    (crate::lease::drift(ttl) / 2).max(Duration::from_millis(2))
}

/// Why a lease ended without an explicit release by its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LostReason {
    /// A renewal found the lock gone, or this hold ended (the lease expired, an operator
    /// deleted the key, or Redis restarted without persistence).
    Expired,
    /// A renewal found the lock held by another owner.
    HeldByOther,
    /// The local deadline passed without a confirmed renewal (Redis unreachable, paused or
    /// too slow). The lock may still exist at the server, but it can no longer be relied on.
    DeadlinePassed,
    /// The holder released (or dropped) the guard. Only observable through a cancellation
    /// token or lease handle that outlived the guard.
    Released,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::Expired => "the lease expired or the lock was removed",
            LostReason::HeldByOther => "another owner holds the lock",
            LostReason::DeadlinePassed => "the lease deadline passed without a confirmed renewal",
            LostReason::Released => "the guard was released",
        })
    }
}

/// The shared state of one held lease.
pub(crate) struct LeaseState {
    pub name: Arc<str>,
    pub keys: Arc<LockKeys>,
    pub owner_id: String,
    pub req: String,
    pub ttl: Duration,
    pub renew_every: Option<Duration>,
    pub token: u64,
    valid_until: Mutex<Instant>,
    cancel: CancellationToken,
    reason: OnceLock<LostReason>,
    ended: AtomicBool,
    registered: AtomicBool,
}

impl LeaseState {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: Arc<str>,
        keys: Arc<LockKeys>,
        owner_id: String,
        req: String,
        ttl: Duration,
        renew_every: Option<Duration>,
        token: u64,
        sent_at: Instant,
    ) -> Self {
        LeaseState {
            name,
            keys,
            owner_id,
            req,
            ttl,
            renew_every,
            token,
            valid_until: Mutex::new(valid_until(sent_at, ttl)),
            cancel: CancellationToken::new(),
            reason: OnceLock::new(),
            ended: AtomicBool::new(false),
            registered: AtomicBool::new(false),
        }
    }

    pub(crate) fn valid_until(&self) -> Instant {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request that made the lease last `ttl` was sent at `sent_at` and confirmed.
    pub(crate) fn confirm(&self, sent_at: Instant, ttl: Duration) {
        if self.reason.get().is_some() {
            return; // once lost, always lost
        }
        let new = valid_until(sent_at, ttl);
        let mut v = self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        if new > *v {
            *v = new;
        }
    }

    /// Declare the lease lost (first reason wins).
    pub(crate) fn lose(&self, reason: LostReason) {
        if self.reason.set(reason).is_ok() {
            // Cancel first: holders must learn it before anything else is done.
            self.cancel.cancel();
            if reason != LostReason::Released {
                tracing::debug!(lock = %self.name, %reason, "lease lost");
                crate::metrics::lease_lost(&self.name, reason);
            }
        }
    }

    /// The holder is done with the lease: renewal stops now.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.lose(LostReason::Released);
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(crate) fn lost_reason(&self) -> Option<LostReason> {
        self.reason.get().copied()
    }

    pub(crate) fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Wait until the lease is lost; returns why.
    pub(crate) async fn lost(&self) -> LostReason {
        self.cancel.cancelled().await;
        self.lost_reason().unwrap_or(LostReason::Released)
    }

    pub(crate) fn fire_at(&self) -> Instant {
        self.valid_until()
            .checked_sub(deadline_margin(self.ttl))
            .unwrap_or_else(|| self.valid_until())
    }
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

enum Cmd {
    Watch(Arc<LeaseState>),
    RenewAt(Instant, Arc<LeaseState>),
}

struct Entry(Instant, u64, Arc<LeaseState>);

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

    fn push(self: &Arc<Self>, inner: &Arc<Inner>, cmd: Cmd, due: Instant) {
        let len = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.push(cmd);
            p.len()
        };
        if !self.started.swap(true, Ordering::AcqRel) {
            inner.handle.spawn(run(Arc::downgrade(inner), self.clone()));
        }
        if self.nanos(due) < self.next_wake.load(Ordering::Acquire) || len >= 4_096 {
            self.notify.notify_one();
        }
    }

    /// Start watching a lease: its deadline, and its renewals if it auto-renews.
    pub(crate) fn watch(self: &Arc<Self>, inner: &Arc<Inner>, lease: Arc<LeaseState>) {
        lease.registered.store(true, Ordering::Release);
        let due = match lease.renew_every {
            Some(every) => (Instant::now() + every).min(lease.fire_at()),
            None => lease.fire_at(),
        };
        self.push(inner, Cmd::Watch(lease), due);
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
        self.deadlines
            .push(Reverse(Entry(lease.fire_at(), self.seq, lease)));
    }

    fn push_renewal(&mut self, at: Instant, lease: Arc<LeaseState>) {
        self.seq += 1;
        self.renewals.push(Reverse(Entry(at, self.seq, lease)));
    }

    fn compact(&mut self) {
        self.deadlines.retain(|Reverse(e)| !e.2.is_ended());
        self.renewals.retain(|Reverse(e)| !e.2.is_ended());
    }
}

async fn run(inner: Weak<Inner>, r: Arc<Renewer>) {
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
            let Some(Reverse(Entry(_, _, lease))) = q.deadlines.pop() else {
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
                Cmd::Watch(lease) => {
                    if let Some(every) = lease.renew_every {
                        q.push_renewal(Instant::now() + every, lease.clone());
                    }
                    q.push_deadline(lease);
                }
                Cmd::RenewAt(at, lease) => q.push_renewal(at, lease),
            }
        }
        if r.ended_since_compaction.load(Ordering::Relaxed) >= 4_096 {
            r.ended_since_compaction.store(0, Ordering::Relaxed);
            q.compact();
        }
        r.watched.store(q.deadlines.len() as u64, Ordering::Relaxed);
        let now = Instant::now();

        // Renewals: everything due within the window goes out now, in batches.
        let mut batch = Vec::new();
        while let Some(Reverse(e)) = q.renewals.peek() {
            let window = e.2.renew_every.unwrap_or(Duration::ZERO) / 8;
            if e.0 > now + window {
                break;
            }
            let Some(Reverse(Entry(_, _, lease))) = q.renewals.pop() else {
                break;
            };
            if lease.is_ended() || lease.lost_reason().is_some() {
                continue;
            }
            batch.push(lease);
            if batch.len() == BATCH {
                spawn_batch(&client, std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            spawn_batch(&client, batch);
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

    /// `lease` was renewed by a request sent at `sent`: confirm it, schedule the next.
    pub(crate) fn renewed_one(&self, inner: &Arc<Inner>, lease: Arc<LeaseState>, sent: Instant) {
        lease.confirm(sent, lease.ttl);
        self.renewed.fetch_add(1, Ordering::Relaxed);
        crate::metrics::renewed(&lease.name);
        let every = lease.renew_every.unwrap_or(lease.ttl / 3);
        let at = sent + every;
        inner.renewer.push(inner, Cmd::RenewAt(at, lease), at);
    }

    /// The server refused to renew `lease`: it is lost.
    pub(crate) fn refused_one(&self, lease: Arc<LeaseState>, reason: LostReason) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        lease.lose(reason);
    }

    /// Renewing `lease` failed (no answer): try again soon, before its deadline.
    pub(crate) fn retry_soon(&self, inner: &Arc<Inner>, lease: Arc<LeaseState>) {
        let every = lease.renew_every.unwrap_or(lease.ttl / 3);
        let at =
            Instant::now() + (every / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        inner.renewer.push(inner, Cmd::RenewAt(at, lease), at);
    }
}

fn spawn_batch(client: &Arc<Inner>, batch: Vec<Arc<LeaseState>>) {
    if !client.nodes.is_empty() {
        crate::redlock::spawn_renewal(client, batch);
        return;
    }
    if client.cluster {
        // One script call may only touch one slot: one batch per slot.
        let mut by_slot: std::collections::HashMap<u16, Vec<Arc<LeaseState>>> =
            std::collections::HashMap::new();
        for lease in batch {
            by_slot
                .entry(crate::keys::slot(&lease.keys.lock))
                .or_default()
                .push(lease);
        }
        for (_, group) in by_slot {
            spawn_node_batch(client, group);
        }
        return;
    }
    spawn_node_batch(client, batch);
}

/// Renew `batch` (all on one node, and in one slot on a cluster): one script call for the
/// lock hashes among them and one for the lease-set members (permits, readers).
fn spawn_node_batch(client: &Arc<Inner>, batch: Vec<Arc<LeaseState>>) {
    let (members, hashes): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|l| matches!(l.keys.kind, crate::keys::Kind::Member { .. }));
    if !hashes.is_empty() {
        spawn_script_batch(client, hashes, false);
    }
    if !members.is_empty() {
        spawn_script_batch(client, members, true);
    }
}

/// Renew `batch` (leases of one kind, on one node and slot) with one script call.
fn spawn_script_batch(client: &Arc<Inner>, batch: Vec<Arc<LeaseState>>, members: bool) {
    let inner = client.clone();
    client.handle.spawn(async move {
        let mut inv = if members {
            inner.scripts.member_renew.prepare_invoke()
        } else {
            inner.scripts.renew.prepare_invoke()
        };
        for lease in &batch {
            if members {
                inv.key(&lease.keys.lock)
                    .key(&lease.keys.queue)
                    .arg(&lease.req)
                    .arg(millis(lease.ttl));
            } else {
                inv.key(&lease.keys.lock)
                    .arg(&lease.owner_id)
                    .arg(&lease.req)
                    .arg(millis(lease.ttl));
            }
        }
        let sent = Instant::now();
        // Never wait past the earliest deadline in the batch: after it, a late success
        // would refresh a lease its holder was already told is lost.
        let earliest = batch.iter().map(|l| l.fire_at()).min().unwrap_or(sent);
        let budget = inner
            .conn
            .response_timeout()
            .min(earliest.saturating_duration_since(sent));
        if budget < MIN_BUDGET {
            return; // too late to renew: the deadline fires
        }
        let result = inner.conn.eval_tagged(&mut inv, budget).await;
        inner.renewer.note_call(sent.elapsed());
        match result {
            Ok(codes) if codes.len() == batch.len() => {
                let refused = codes.iter().filter(|c| **c != 1).count();
                if refused > 0 {
                    tracing::warn!(leases = refused, "renewal refused: leases lost");
                }
                for (lease, code) in batch.into_iter().zip(codes) {
                    match code {
                        1 => inner.renewer.renewed_one(&inner, lease, sent),
                        -1 => inner.renewer.refused_one(lease, LostReason::HeldByOther),
                        _ => inner.renewer.refused_one(lease, LostReason::Expired),
                    }
                }
            }
            other => {
                inner.renewer.failed_calls.fetch_add(1, Ordering::Relaxed);
                let cause = match other {
                    Ok(codes) => format!("unexpected reply of {} codes", codes.len()),
                    Err(f) => describe(&f),
                };
                tracing::warn!(leases = batch.len(), %cause, "lease renewal failed; retrying");
                for lease in batch {
                    inner.renewer.retry_soon(&inner, lease);
                }
            }
        }
    });
}

fn describe(f: &Failure) -> String {
    f.describe()
}
