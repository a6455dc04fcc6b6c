//! The topology seam: where one server, Sentinel, Cluster and RedLock differ in how a
//! client's server work is done, and what each cannot do ([`require`]). It holds the
//! release, extend and background release of a hold (a quorum on RedLock, one server
//! otherwise) and the renewal dispatch (a RedLock batch goes to every node with a quorum
//! tally, a Cluster batch is split by slot, one server gets one call per kind),
//! implementing the scheduler's [`Renewals`] for the client context. [`acquire`] sends a
//! lock request to the one-server engine (`node.rs`) or to RedLock's quorum rounds
//! (`quorum.rs`); both return grant data ([`Grant`]) that the caller turns into a guard.
//! Reading one keyspace (inspect, list, force release) is in `keyspace.rs`.
//!
//! Invariants: every renewal call waits for its reply no longer than the earliest deadline
//! among its leases (see [`plan`](crate::lease::renew::plan)); each lease's outcome goes back to
//! the scheduler exactly once per call.

use std::sync::Arc;
use std::time::Duration;

pub(crate) mod cleanup;
pub(crate) mod diagnose;
pub(crate) mod keyspace;
pub(crate) mod leaders;
mod node;
pub(crate) mod quorum;
pub(crate) mod set;

use tokio::time::Instant;

use crate::client::context::Inner;
use crate::error::{Error, ErrorKind, NotHeldReason, Result};
use crate::lease::renew::{Renewal, Renewals, Renewer};
use crate::lease::{LeaseState, LostReason, ReleaseOutcome};
use crate::net::conn::{Failure, MIN_BUDGET};
use crate::net::failure::{failure_error, outcome_error};
use crate::protocol::keys::{Kind, LockKeys};
use crate::protocol::{Extend, Kept, Mode, Release, Released};

/// The kind of deployment a client talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server, found directly or through Sentinel.
    Server,
    /// Redis Cluster.
    Cluster,
    /// RedLock: a majority of independent masters.
    RedLock,
}

impl Topology {
    pub(crate) fn of(inner: &Inner) -> Self {
        if !inner.nodes.is_empty() {
            Topology::RedLock
        } else if inner.cluster {
            Topology::Cluster
        } else {
            Topology::Server
        }
    }

    fn name(self) -> &'static str {
        match self {
            Topology::Server => "one server",
            Topology::Cluster => "Redis Cluster",
            Topology::RedLock => "RedLock",
        }
    }
}

/// What an operation needs that not every topology has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capability {
    /// `WAIT` for replica acknowledgements after a grant (one master, or Sentinel).
    ReplicaAcks,
    /// Waiter queues and lease sets on the server: fair locks, semaphores, read-write
    /// locks (not across RedLock's independent masters).
    ServerQueues,
    /// An election's leaders' log: observers and proclaimed values (one log, so not
    /// across RedLock's independent masters).
    LeadersLog,
}

/// Whether the client's topology can do `what`; the error names both.
pub(crate) fn require(inner: &Inner, what: Capability) -> Result<()> {
    let topology = Topology::of(inner);
    let supported = match what {
        Capability::ReplicaAcks => topology == Topology::Server,
        Capability::ServerQueues | Capability::LeadersLog => topology != Topology::RedLock,
    };
    if supported {
        return Ok(());
    }
    let (operation, instead) = match what {
        Capability::ReplicaAcks => (
            "replica acknowledgements",
            "they need a single master (or Sentinel)",
        ),
        Capability::ServerQueues => (
            "fair locks, semaphores and read-write locks",
            "use a plain lock, or one server, Sentinel or Cluster",
        ),
        Capability::LeadersLog => (
            "election observers and proclaimed values",
            "campaign without a value, or use one server, Sentinel or Cluster",
        ),
    };
    Err(Error::invalid(format!(
        "{operation} are not supported on a {} client: {instead}",
        topology.name()
    )))
}

/// Who acquires, as decided by the lock before any server call.
pub(crate) struct Hold {
    pub owner_id: String,
    pub reentrant: bool,
    pub hold_key: String,
}

/// What one acquire asks for: the lock, its mode and its lease settings.
#[derive(Clone, Copy)]
pub(crate) struct LockRequest<'a> {
    pub inner: &'a Arc<Inner>,
    pub name: &'a Arc<str>,
    pub keys: &'a Arc<LockKeys>,
    pub mode: Mode,
    pub ttl: Duration,
    /// How long a waiting caller's place at the server lives between refreshes.
    pub place_ttl: Duration,
    pub metadata: &'a Arc<str>,
    /// The labels of this lock's metrics.
    pub series: &'a Arc<crate::metrics::Series>,
    /// Replica acknowledgements to wait for after a grant (one server only).
    pub replica_acks: Option<(u32, Duration)>,
    /// The permits one grant takes (semaphores; 1 for everything else).
    pub permits: u32,
}

impl LockRequest<'_> {
    /// How often a waiter refreshes its place: a third of its lifetime.
    pub(crate) fn refresh_every(&self) -> Duration {
        self.place_ttl / 3
    }
}

/// A grant, for the caller to turn into a lease and a guard at once: its lease runs from
/// `start` (the first send, or a RedLock round's start, so the time taken is subtracted).
pub(crate) struct Grant {
    pub req: String,
    pub token: u64,
    pub count: u32,
    pub start: Instant,
    /// Replica acknowledgements asked for and fewer heard: (wanted, heard; `None` if
    /// `WAIT` failed). The caller releases the grant and reports the shortfall.
    pub shortfall: Option<(u32, Option<u32>)>,
    /// A release made the caller the holder, and the server's lease of that grant ends at
    /// least this long after a moment after `start` (the claim window, plus the server
    /// time from the try to the grant when the message gave it): the lease is provisional
    /// until a renewal confirms it (see `LeaseState::provisional`).
    pub claim: Option<Duration>,
}

/// Acquire `lock` for `hold` on the client's topology, until `deadline` if `waiting`.
pub(crate) async fn acquire(
    lock: LockRequest<'_>,
    hold: &Hold,
    started: Instant,
    deadline: Instant,
    waiting: bool,
) -> Result<Grant> {
    match Topology::of(lock.inner) {
        Topology::RedLock => quorum::acquire(lock, hold, started, deadline, waiting).await,
        Topology::Server | Topology::Cluster => {
            node::acquire(lock, hold, started, deadline, waiting).await
        }
    }
}

/// A uniformly random duration in `lo..=hi` (microsecond steps).
pub(crate) fn random_between(lo: Duration, hi: Duration) -> Duration {
    use rand::Rng;
    let lo = u64::try_from(lo.as_micros()).unwrap_or(u64::MAX);
    let hi = u64::try_from(hi.as_micros()).unwrap_or(u64::MAX).max(lo);
    Duration::from_micros(rand::rng().random_range(lo..=hi))
}

/// `d` plus up to 20% (at least 1 µs) of random jitter.
pub(crate) fn jitter(d: Duration) -> Duration {
    d + random_between(Duration::ZERO, (d / 5).max(Duration::from_micros(1)))
}

/// Check that Redis answers: the server, or a majority of RedLock's nodes.
pub(crate) async fn ping(inner: &Arc<Inner>) -> Result<()> {
    if Topology::of(inner) == Topology::RedLock {
        return ping_quorum(inner).await;
    }
    let budget = inner.conn.connect_timeout() + inner.conn.response_timeout();
    match inner
        .conn
        .query::<String>(&redis::cmd("PING"), budget)
        .await
    {
        Ok(_) => Ok(()),
        Err(f) => Err(failure_error("PING", f)),
    }
}

/// RedLock: ping every node; a majority must answer.
async fn ping_quorum(inner: &Arc<Inner>) -> Result<()> {
    let nodes = &inner.nodes;
    let pings = nodes
        .iter()
        .map(|n| async move { (n.display_url.clone(), Box::pin(ping(n)).await) });
    let results = futures_util::future::join_all(pings).await;
    let failures: Vec<crate::NodeFailure> = results
        .into_iter()
        .filter_map(|(node, r)| {
            r.err().map(|e| crate::NodeFailure {
                node,
                reason: e.to_string(),
            })
        })
        .collect();
    let answered = nodes.len() - failures.len();
    let needed = crate::backend::quorum::quorum(nodes.len());
    if answered >= needed {
        return Ok(());
    }
    let list = crate::error::list_failures(&failures);
    Err(Error::new(
        ErrorKind::NoQuorum { answered, needed },
        format!(
            "PING: only {answered} of {} RedLock nodes answered ({list})",
            nodes.len()
        ),
    )
    .with_node_failures(failures))
}

/// Make `st`'s hold last at least `ttl` from now (see [`LockGuard::extend`](crate::LockGuard::extend)).
pub(crate) async fn extend(inner: &Arc<Inner>, st: &LeaseState, ttl: Duration) -> Result<()> {
    let span =
        tracing::debug_span!("leasehold.extend", lock = %st.name, ttl_ms = ttl.as_millis() as u64);
    tracing::Instrument::instrument(extend_in_span(inner, st, ttl), span).await
}

async fn extend_in_span(inner: &Arc<Inner>, st: &LeaseState, ttl: Duration) -> Result<()> {
    let lost = |reason: LostReason| {
        Error::new(
            ErrorKind::LeaseLost(reason),
            format!("lock {:?}: the lease was already lost: {reason}", st.name),
        )
    };
    if Topology::of(inner) == Topology::RedLock {
        if let Some(reason) = st.lost_reason() {
            return Err(lost(reason));
        }
        return crate::backend::quorum::extend(inner, st, ttl).await;
    }
    let resolve_by =
        Instant::now() + (2 * inner.conn.response_timeout()).max(2 * crate::net::conn::MIN_BUDGET);
    let mut last: Option<Failure> = None;
    let mut saw_unknown = false;
    let mut first_send = None;
    while resolve_by.saturating_duration_since(Instant::now()) >= crate::net::conn::MIN_BUDGET {
        let sent = Instant::now();
        first_send.get_or_insert(sent);
        let mut inv = Extend {
            keys: &st.keys,
            owner_id: &st.owner_id,
            req: &st.req,
            ttl,
        }
        .call(&inner.scripts);
        match inner.conn.eval_tagged(&mut inv, resolve_by - sent).await {
            Ok(reply) => {
                let outcome = match Kept::decode_extend(&reply) {
                    Kept::Confirmed => match st.lost_reason() {
                        // Declared lost meanwhile (its deadline passed): the holder
                        // was told, so the extension does not count.
                        Some(reason) => Err(lost(reason)),
                        None => {
                            st.confirm(first_send.unwrap_or(sent), ttl);
                            Ok(())
                        }
                    },
                    Kept::HeldByOther => {
                        st.lose(LostReason::HeldByOther);
                        Err(Error::not_held(&st.name, NotHeldReason::HeldByOther))
                    }
                    Kept::NotHeld => {
                        st.lose(LostReason::Expired);
                        Err(Error::not_held(&st.name, NotHeldReason::Expired))
                    }
                };
                tracing::debug!(lock = %st.name, ok = outcome.is_ok(), "extend");
                return outcome;
            }
            Err(Failure::Server(e)) if saw_unknown => {
                // An earlier try may have been applied; this error says nothing about it.
                last = Some(Failure::Unknown(Some(e)));
                break;
            }
            Err(Failure::Server(e)) => {
                return Err(Error::from_redis(&format!("extend {:?}", st.name), e))
            }
            Err(f) => {
                if matches!(f, Failure::NotSent(_)) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                saw_unknown |= matches!(f, Failure::Unknown(_));
                last = Some(f);
            }
        }
    }
    // No try fitted in the time: nothing was sent.
    let last = last.unwrap_or(Failure::NotSent(None));
    let last = if saw_unknown && !matches!(last, Failure::Unknown(_)) {
        Failure::Unknown(last.into_redis())
    } else {
        last
    };
    Err(outcome_error(
        &format!("extend {:?}", st.name),
        last,
        "the lease's deadline is unchanged (the watchdog keeps renewing it while it lives)",
    ))
}

/// Release `st`'s hold (see [`LockGuard::release`](crate::LockGuard::release)). Returns
/// the outcome and whether the hold is settled; if not (the outcome is unknown), the
/// caller keeps releasing it in the background.
pub(crate) async fn release(
    inner: &Arc<Inner>,
    st: &LeaseState,
    lease_ok_at_send: bool,
    resolve_by: Instant,
) -> (Result<ReleaseOutcome>, bool) {
    let span = tracing::debug_span!("leasehold.release", lock = %st.name);
    tracing::Instrument::instrument(
        release_in_span(inner, st, lease_ok_at_send, resolve_by),
        span,
    )
    .await
}

async fn release_in_span(
    inner: &Arc<Inner>,
    st: &LeaseState,
    lease_ok_at_send: bool,
    resolve_by: Instant,
) -> (Result<ReleaseOutcome>, bool) {
    if Topology::of(inner) == Topology::RedLock {
        // Nodes that did not answer are released in the background already.
        return (
            crate::backend::quorum::release(inner, st, lease_ok_at_send).await,
            true,
        );
    }
    let outcome = {
        let result = release_once(inner, &st.keys, &st.owner_id, &st.req, resolve_by).await;
        match result {
            Ok((released, saw_unknown)) => {
                let outcome = match released {
                    Released::Freed | Released::StillHeld => ReleaseOutcome::Released,
                    // After a reply was lost, "not ours" most likely means our own release
                    // was applied (and perhaps someone took the lock since); if the lease
                    // was still valid when we sent it, say so.
                    _ if saw_unknown && lease_ok_at_send => ReleaseOutcome::Released,
                    Released::HeldByOther => ReleaseOutcome::HeldByOther,
                    Released::NotHeld => ReleaseOutcome::Expired,
                };
                if released == Released::Freed {
                    notify_local(inner, &st.keys);
                }
                tracing::debug!(lock = %st.name, outcome = ?outcome, "release");
                Ok(outcome)
            }
            Err(f) => {
                // Keep trying in the background; the lease expires by itself at worst.
                let err = outcome_error(
                    &format!("release {:?}", st.name),
                    f,
                    "the release is retried in the background, and the lease expires by its TTL at worst",
                );
                tracing::warn!(lock = %st.name, error = %err, "release failed; retrying in the background");
                Err(err)
            }
        }
    };
    let settled = outcome.is_ok();
    (outcome, settled)
}

/// Release a dropped guard's hold in the background.
pub(crate) fn release_dropped(inner: &Arc<Inner>, st: &LeaseState) {
    if Topology::of(inner) == Topology::RedLock {
        crate::backend::quorum::release_dropped(inner, st);
        return;
    }
    let fut = release_in_background(
        inner.clone(),
        st.keys.clone(),
        st.owner_id.clone(),
        st.req.clone(),
        st.valid_until() + crate::lease::drift(st.ttl) + Duration::from_millis(100),
        false,
    );
    inner.spawn_background(fut);
}

/// Wake this client's waiters of a lock it just freed, without waiting for the round trip
/// through Redis. Not for locks and fair locks on one server or Cluster, nor for semaphore
/// permits: their release made the oldest waiter the holder (or reserved the lock for it,
/// or named it) and told it, so a local
/// wake-up would only send tries that are refused. RedLock waiters hold no place at the
/// nodes and retry on it.
fn notify_local(inner: &Inner, keys: &LockKeys) {
    // A writer's release may grant no writer (none waits): then this client's readers
    // are woken locally as before.
    let handed_on = keys.kind.granted_by_release()
        && keys.kind != Kind::Writer
        && !(keys.kind == Kind::Lock && Topology::of(inner) == Topology::RedLock);
    if !handed_on {
        inner.waker.notify_local(&keys.channel);
    }
}

/// Run the release script until its outcome is known or `resolve_by` passes. Returns what
/// it answered and whether an earlier try's outcome was unknown.
pub(crate) async fn release_once(
    inner: &Inner,
    keys: &LockKeys,
    owner_id: &str,
    req: &str,
    resolve_by: Instant,
) -> std::result::Result<(Released, bool), Failure> {
    let release = Release {
        keys,
        owner_id,
        req,
    };
    // Boxed, as every engine future is: a caller's future would otherwise nest too deep.
    let (reply, saw_unknown) =
        Box::pin(resolve(inner, || release.call(&inner.scripts), resolve_by)).await?;
    Ok((Released::decode(&reply), saw_unknown))
}

/// Run a tagged script call (made afresh by `call` for each try: the same request) until
/// its outcome is known or `resolve_by` passes; a try whose outcome is unknown is re-run
/// on a fresh connection. Returns the reply and whether an earlier try's outcome was
/// unknown, or the failure — `Unknown` if any try may have been applied.
pub(crate) async fn resolve<'a>(
    inner: &'a Inner,
    mut call: impl FnMut() -> crate::protocol::scripts::Call<'a>,
    resolve_by: Instant,
) -> std::result::Result<(Vec<i64>, bool), Failure> {
    let mut saw_unknown = false;
    let mut last = None;
    while resolve_by.saturating_duration_since(Instant::now()) >= crate::net::conn::MIN_BUDGET {
        let mut inv = call();
        let budget = resolve_by.saturating_duration_since(Instant::now());
        match inner.conn.eval_tagged(&mut inv, budget).await {
            Ok(reply) => return Ok((reply, saw_unknown)),
            // An earlier try may have been applied; this error says nothing about it.
            Err(Failure::Server(e)) if saw_unknown => return Err(Failure::Unknown(Some(e))),
            Err(f @ Failure::Server(_)) => return Err(f),
            Err(f) => {
                if matches!(f, Failure::Unknown(_)) {
                    saw_unknown = true;
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                last = Some(f);
            }
        }
    }
    // One try that may have been applied makes the whole outcome unknown.
    Err(match last {
        Some(f) if saw_unknown && !matches!(f, Failure::Unknown(_)) => {
            Failure::Unknown(f.into_redis())
        }
        Some(f) => f,
        // No try fitted in the time: nothing was sent.
        None => Failure::NotSent(None),
    })
}

/// Release one hold in the background: retried while the lease could still be alive.
///
/// Retries stop at `give_up` (when the lease would have expired anyway). With `recheck`
/// (the grant of a cancelled or ambiguous acquire whose command may still be on its way to
/// Redis on an abandoned connection that could not be fenced off), a "nothing there"
/// answer is checked again a few times (after 50 ms, 250 ms, 1 s and 3 s).
pub(crate) async fn release_in_background(
    inner: Arc<Inner>,
    keys: Arc<LockKeys>,
    owner_id: String,
    req: String,
    give_up: Instant,
    recheck: bool,
) {
    let started = Instant::now();
    let give_up = give_up.min(started + Duration::from_secs(300));
    let mut rechecks = if recheck {
        &[50u64, 250, 1_000, 3_000][..]
    } else {
        &[][..]
    };
    let mut pause = Duration::from_millis(20);
    let mut maybe_applied = false;
    loop {
        let resolve_by = Instant::now()
            + (2 * inner.conn.response_timeout()).max(2 * crate::net::conn::MIN_BUDGET);
        match release_once(&inner, &keys, &owner_id, &req, resolve_by).await {
            Ok((released, _)) => {
                if released == Released::Freed {
                    notify_local(&inner, &keys);
                }
                tracing::debug!(lock = %keys.lock, outcome = ?released, "background release");
                if released == Released::NotHeld {
                    if let Some((first, rest)) = rechecks.split_first() {
                        let at = started + Duration::from_millis(*first);
                        if at < give_up {
                            rechecks = rest;
                            tokio::time::sleep_until(at).await;
                            continue;
                        }
                    }
                }
                return;
            }
            Err(f) => {
                maybe_applied |= matches!(f, Failure::Unknown(_));
                if matches!(f, Failure::Server(_)) || Instant::now() + pause >= give_up {
                    if maybe_applied {
                        tracing::warn!(lock = %keys.lock, cause = %f.describe(), "background release unconfirmed: a try may have been applied (its reply never came); if not, the lease expires by its TTL");
                    } else {
                        tracing::warn!(lock = %keys.lock, cause = %f.describe(), "background release not sent; the lease expires by its TTL");
                    }
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

impl Renewals for Inner {
    fn renewer(&self) -> &Arc<Renewer> {
        &self.renewer
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    fn response_timeout(&self) -> Duration {
        self.conn.response_timeout()
    }

    fn send(self: &Arc<Self>, batch: Vec<Renewal>) {
        spawn_batch(self, batch);
    }

    /// One server (or Sentinel's master): a restart, seen as a new `run_id` at the same
    /// address when the client reconnects, ends every lease held there at once. When the
    /// server ends the connection, the client reconnects right away (not at the next
    /// command), so a restarted server is noticed within a reconnect.
    fn watch_connection(self: &Arc<Self>) {
        if Topology::of(self) != Topology::Server {
            return;
        }
        let weak = Arc::downgrade(self);
        self.conn.on_restart(Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.renewer.lose_all(&inner, LostReason::ServerRestarted);
            }
        }));
        let broke = self.conn.broken();
        let weak = Arc::downgrade(self);
        self.handle.spawn(async move {
            let mut pause = Duration::from_millis(20);
            let mut up_since: Option<tokio::time::Instant> = None;
            loop {
                broke.notified().await;
                // A connection that is ended again at once (a server that drops clients
                // right after the handshake) is not reconnected in a tight loop: the
                // back-off is reset only after a connection stayed up for a second.
                match up_since {
                    Some(at) if at.elapsed() >= Duration::from_secs(1) => {
                        pause = Duration::from_millis(20);
                    }
                    Some(_) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    None => {}
                }
                // Bounded: about ten minutes of tries per outage, backing off to 1 s.
                for _ in 0..600 {
                    let Some(inner) = weak.upgrade() else {
                        return;
                    };
                    if inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    let up = inner.conn.reconnect().await;
                    drop(inner);
                    if up {
                        up_since = Some(tokio::time::Instant::now());
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        });
    }
}

fn spawn_batch(client: &Arc<Inner>, batch: Vec<Renewal>) {
    let topology = Topology::of(client);
    if topology == Topology::RedLock {
        crate::backend::quorum::spawn_renewal(client, batch);
        return;
    }
    if topology == Topology::Cluster {
        // One script call may only touch one slot: one batch per slot.
        let mut by_slot: std::collections::HashMap<u16, Vec<Renewal>> =
            std::collections::HashMap::new();
        for r in batch {
            by_slot
                .entry(crate::protocol::keys::slot(&r.lease.keys.lock))
                .or_default()
                .push(r);
        }
        for (_, group) in by_slot {
            spawn_node_batch(client, group);
        }
        return;
    }
    spawn_node_batch(client, batch);
}

/// Renew `batch` (all on one node, and in one slot on a cluster): script calls for the
/// lock hashes among them and for the lease-set members (permits, readers), split by
/// [`plan`](crate::lease::renew::plan).
fn spawn_node_batch(client: &Arc<Inner>, batch: Vec<Renewal>) {
    let (members, hashes): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| {
        matches!(
            r.lease.keys.kind,
            crate::protocol::keys::Kind::Member { .. }
        )
    });
    for (group, members) in [(hashes, false), (members, true)] {
        if group.is_empty() {
            continue;
        }
        in_planned_calls(client, group, |calls, reply_by| {
            spawn_script_batch(client, calls, members, reply_by);
        });
    }
}

/// Split `batch` by [`plan`](crate::lease::renew::plan): leases too close to their deadline
/// are retried, the others are handed to `send` in groups, each with the time its reply
/// is awaited until.
pub(crate) fn in_planned_calls(
    client: &Arc<Inner>,
    batch: Vec<Renewal>,
    mut send: impl FnMut(Vec<Renewal>, Instant),
) {
    let now = Instant::now();
    let deadlines: Vec<Instant> = batch.iter().map(|r| r.lease.fire_at()).collect();
    let plan = crate::lease::renew::plan(&deadlines, now, client.conn.response_timeout());
    let mut slots: Vec<Option<Renewal>> = batch.into_iter().map(Some).collect();
    for i in plan.too_late {
        if let Some(r) = slots[i].take() {
            client.renewer.retry_soon(client, r);
        }
    }
    for (budget, idx) in plan.calls {
        let group: Vec<Renewal> = idx.into_iter().filter_map(|i| slots[i].take()).collect();
        send(group, now + budget);
    }
}

/// Renew `batch` (leases of one kind, on one node and slot) with one script call whose
/// reply is awaited until `reply_by` at the latest.
fn spawn_script_batch(client: &Arc<Inner>, batch: Vec<Renewal>, members: bool, reply_by: Instant) {
    let inner = client.clone();
    let span = tracing::debug_span!("leasehold.renew", leases = batch.len(), members);
    client.handle.spawn(tracing::Instrument::instrument(
        async move {
            let items = batch.iter().map(Renewal::item);
            let mut inv = crate::protocol::renew(&inner.scripts, members, items);
            let sent = Instant::now();
            // Never wait past the earliest deadline in the batch: after it, a late success
            // would refresh a lease its holder was already told is lost.
            let budget = reply_by.saturating_duration_since(sent);
            if budget < MIN_BUDGET {
                // The task started too late (a busy runtime): try again, the deadline decides.
                for r in batch {
                    inner.renewer.retry_soon(&inner, r);
                }
                return;
            }
            let result = inner.conn.eval_tagged(&mut inv, budget).await;
            inner.renewer.note_call(sent.elapsed());
            let decoded = match result {
                Ok(codes) => {
                    crate::protocol::decode_renewals(&codes, batch.len()).map_err(|u| u.to_string())
                }
                Err(f) => Err(f.describe()),
            };
            match decoded {
                Ok(kept) => {
                    let mut refused = 0;
                    for (r, k) in batch.into_iter().zip(kept) {
                        let reason = match k {
                            Kept::Confirmed => {
                                inner.renewer.renewed_one(&inner, r, sent);
                                continue;
                            }
                            // Released while the renewal was on its way (a grant's
                            // confirmation can trail a quick release): ended, not lost.
                            _ if r.lease.is_ended() => continue,
                            Kept::HeldByOther => LostReason::HeldByOther,
                            Kept::NotHeld => LostReason::Expired,
                        };
                        refused += 1;
                        inner.renewer.refused_one(r.lease, reason);
                    }
                    if refused > 0 {
                        tracing::warn!(leases = refused, "renewal refused: leases lost");
                    }
                }
                Err(cause) => {
                    inner.renewer.note_failed_call();
                    tracing::warn!(leases = batch.len(), %cause, "lease renewal failed; retrying");
                    for r in batch {
                        inner.renewer.retry_soon(&inner, r);
                    }
                }
            }
        },
        span,
    ));
}
