//! Acquiring a lock: the local queue, the idempotent acquire, waiting, unknown outcomes.
//!
//! One acquire call has one request id. Every time its script is sent — first try, retry
//! after a timeout or a broken connection — it carries that id, and the script counts a
//! request once: a retry of a granted request reports the same grant (invariant 3). If
//! the outcome is still unknown at the deadline, the call fails with
//! [`ErrorKind::Ambiguous`](crate::ErrorKind::Ambiguous) and the possible grant is
//! released in the background; the same happens when the acquire future is dropped while
//! a grant may exist (invariant 6).
//!
//! Waiting (invariant 8): tasks of one client that want the same lock queue locally, first
//! come first served, and only the head of that queue talks to Redis. After contention the
//! head subscribes to the lock's release channel (one shared pub/sub connection per
//! client) and sleeps until a release is announced, or until the holder's remaining TTL
//! runs out (expiry is not announced), or its deadline; if the subscription is not
//! confirmed it polls with jittered backoff instead.

pub(crate) mod guard;
pub(crate) mod holder;
pub(crate) mod owner;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::{sleep_until, timeout_at, Instant};
use tracing::Instrument;

use crate::backend::{release_in_background, Capability};
use crate::client::context::Inner;
use crate::error::{Error, ErrorKind, Result};
use crate::lease::LeaseState;
use crate::lease::MAX_TTL;
use crate::lock::guard::LockGuard;
use crate::lock::owner::Owner;
use crate::net::conn::Failure;
use crate::protocol::keys::LockKeys;
use crate::protocol::Acquired;
use crate::validate::validate_ttl;

/// A handle on one named lock, with its lease and wait settings.
///
/// Cheap to clone; holds no lock by itself. Get one from [`Client::lock`](crate::Client::lock).
#[derive(Clone)]
pub struct Lock {
    pub(crate) inner: Arc<Inner>,
    pub(crate) name: Arc<str>,
    pub(crate) keys: Arc<LockKeys>,
    pub(crate) ttl: Duration,
    /// `None`: the watchdog renews every ttl/3 unless `fixed`; `Some`: explicit interval.
    renew_every: Option<Duration>,
    /// The caller fixed the lease length with [`Lock::ttl`] (no renewal unless asked).
    fixed: bool,
    auto_renew: Option<bool>,
    on_lost: OnLost,
    wait: Duration,
    pub(crate) owner: Option<Owner>,
    pub(crate) metadata: Arc<str>,
    replica_acks: Option<(u32, Duration)>,
    pub(crate) mode: Mode,
    place_ttl: Duration,
}

pub(crate) use crate::protocol::Mode;

/// How long a fair-lock waiter's (or waiting writer's) place lives at the server without
/// being refreshed; waiters refresh it every third of that. A waiter that crashes is skipped
/// at most this long (plus one refresh interval) after its last refresh.
pub const DEFAULT_PLACE_TTL: Duration = Duration::from_secs(3);

/// What [`Lock::run`] does to the closure's future when the lease is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnLost {
    /// Drop (cancel) the closure's future at its next `.await` point and return
    /// [`ErrorKind::LeaseLost`]. The default.
    #[default]
    Cancel,
    /// Let the closure run to completion; it can watch [`Lease::lost`](crate::Lease::lost)
    /// itself. `run` still reports [`ErrorKind::LeaseLost`] afterwards.
    Notify,
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("renew_every", &self.effective_renewal())
            .field("wait", &self.wait)
            .field("owner", &self.owner)
            .field("mode", &self.mode)
            .finish()
    }
}

enum Attempt {
    Granted {
        token: u64,
        count: u32,
        sent_at: Instant,
        /// Replica acknowledgements, when they were asked for (`None`: unknown).
        acks: Option<u32>,
    },
    Contended {
        /// Remaining ms of the holder's lease, or of the reservation if `reserved`.
        pttl: i64,
        /// The lock is free but reserved for the waiter it was handed to.
        reserved: bool,
    },
}

impl Lock {
    pub(crate) fn new(inner: Arc<Inner>, name: &str, keys: LockKeys) -> Self {
        Lock {
            replica_acks: inner.replica_acks,
            ttl: inner.default_ttl,
            renew_every: None,
            fixed: false,
            auto_renew: None,
            on_lost: OnLost::Cancel,
            metadata: inner.holder_json.clone(),
            wait: inner.default_wait,
            inner,
            name: Arc::from(name),
            keys: Arc::new(keys),
            owner: None,
            mode: Mode::Exclusive,
            place_ttl: DEFAULT_PLACE_TTL,
        }
    }

    pub(crate) fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Make this a **fair** lock: strictly first come, first served across processes.
    ///
    /// Every waiter (in every process, and every task of this client) takes a place in a
    /// queue at the server, ordered by the server's clock. A free lock goes only to the
    /// oldest live waiter; a release wakes that waiter only. A waiter keeps its place by
    /// refreshing it (every third of [`place_ttl`](Self::place_ttl), default 3 s); one that
    /// crashes or stops refreshing is skipped within `place_ttl` plus one refresh interval.
    /// Cancelling or timing out gives the place up at once. Holding works as for any lock:
    /// the same guard, lease, renewal, loss signal and fencing token.
    ///
    /// Fairness holds among fair acquirers: use either fair or plain acquires for one
    /// name. [`try_acquire`](Self::try_acquire) on a fair lock fails with
    /// [`ErrorKind::Contended`] while anyone is queued. Not supported on RedLock clients.
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
    /// let lock = client.lock("payouts")?.fair();
    /// let guard = lock.acquire().await?; // served in arrival order
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn fair(mut self) -> Self {
        if self.keys.kind == crate::protocol::keys::Kind::Lock {
            let mut keys = (*self.keys).clone();
            keys.kind = crate::protocol::keys::Kind::FairLock;
            self.keys = Arc::new(keys);
            self.mode = Mode::Fair;
        }
        self
    }

    /// How long a waiting caller's place lives at the server between refreshes (fair
    /// locks, and writers of a read-write lock): 100 ms to 60 s, default
    /// [`DEFAULT_PLACE_TTL`]. Shorter skips a crashed waiter sooner and costs more refreshes.
    pub fn place_ttl(mut self, place_ttl: Duration) -> Result<Self> {
        if place_ttl < Duration::from_millis(100) || place_ttl > Duration::from_secs(60) {
            return Err(Error::invalid(format!(
                "place ttl {place_ttl:?} is out of range: use 100 ms to 60 s"
            )));
        }
        self.place_ttl = place_ttl;
        Ok(self)
    }

    /// Whether this lock is fair (see [`fair`](Self::fair)).
    pub fn is_fair(&self) -> bool {
        self.mode == Mode::Fair
    }

    fn refresh_every(&self) -> Duration {
        self.place_ttl / 3
    }

    /// Fix the lease length (at least 10 ms, at most 24 h). A fixed lease is not renewed
    /// by the watchdog (unless [`auto_renew`](Self::auto_renew) asks for it): the holder
    /// extends it, or finishes in time. Without this call, a lock takes the client's
    /// default lease (30 s) and the watchdog renews it every third of that.
    pub fn ttl(mut self, ttl: Duration) -> Result<Self> {
        validate_ttl(ttl)?;
        self.ttl = ttl;
        self.fixed = true;
        Ok(self)
    }

    /// Turn the watchdog on or off for this lock's leases.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = Some(on);
        self
    }

    /// Renew every `every` (default: a third of the lease). Must be shorter than the lease
    /// minus its drift allowance, or the lease would lapse between renewals.
    pub fn renew_every(mut self, every: Duration) -> Result<Self> {
        let usable = self.ttl.saturating_sub(crate::lease::drift(self.ttl));
        if every < Duration::from_millis(1) || every >= usable {
            return Err(Error::invalid(format!(
                "renewal interval {every:?} must be at least 1 ms and shorter than the lease {:?} minus its drift allowance",
                self.ttl
            )));
        }
        self.renew_every = Some(every);
        self.auto_renew.get_or_insert(true);
        Ok(self)
    }

    /// Label the holder with `label` (stored with the grant beside host name and pid, and
    /// shown by [`Client::inspect`](crate::Client::inspect)). At most 256 bytes.
    pub fn label(mut self, label: &str) -> Result<Self> {
        if label.len() > 256 || label.chars().any(char::is_control) {
            return Err(Error::invalid(
                "holder label must be at most 256 bytes of printable text",
            ));
        }
        let mut holder = self.inner.holder.clone();
        holder.label = Some(label.to_string());
        self.metadata = Arc::from(holder.to_json());
        Ok(self)
    }

    /// What [`run`](Self::run) does when the lease is lost (default: cancel the work).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn on_lost(mut self, on_lost: OnLost) -> Self {
        self.on_lost = on_lost;
        self
    }

    /// The renewal interval acquires will use, if the watchdog is on.
    pub fn effective_renewal(&self) -> Option<Duration> {
        let on = self.auto_renew.unwrap_or(!self.fixed);
        on.then(|| {
            let every = self.renew_every.unwrap_or(self.ttl / 3);
            let usable = self.ttl.saturating_sub(crate::lease::drift(self.ttl));
            every.min(usable / 2).max(Duration::from_millis(1))
        })
    }

    /// Set how long [`acquire`](Self::acquire) waits for the lock (at most 24 h).
    pub fn wait(mut self, wait: Duration) -> Result<Self> {
        validate_wait(wait)?;
        self.wait = wait;
        Ok(self)
    }

    /// Count a grant only once `replicas` replicas have acknowledged it (Redis `WAIT`
    /// after the acquire script, on the same connection), within `timeout`. With fewer
    /// acknowledgements — any shortfall, not only zero — the grant is released before the
    /// call returns, and acquire fails with
    /// [`ErrorKind::NotReplicated`](crate::ErrorKind::NotReplicated). Use it on a
    /// replicated master (e.g. with [`Client::sentinel_builder`](crate::Client::sentinel_builder))
    /// so that a grant survives a failover to a replica that acknowledged it.
    ///
    /// Replicas: 1 to 64; timeout: 1 ms to 60 s. Acquires that wait for acknowledgements
    /// use a connection of their own, because `WAIT` blocks the connection it runs on.
    pub fn replica_acks(mut self, replicas: u32, timeout: Duration) -> Result<Self> {
        if replicas == 0
            || replicas > 64
            || timeout < Duration::from_millis(1)
            || timeout > Duration::from_secs(60)
        {
            return Err(Error::invalid(format!(
                "replica acknowledgements: {replicas} replicas within {timeout:?} is out of range: use 1 to 64 replicas and 1 ms to 60 s"
            )));
        }
        crate::backend::require(&self.inner, Capability::ReplicaAcks)?;
        self.replica_acks = Some((replicas, timeout));
        Ok(self)
    }

    /// Acquire as `owner`: acquires by the same owner re-enter (see [`Owner`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn owner(mut self, owner: &Owner) -> Self {
        self.owner = Some(owner.clone());
        self
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lease length used by acquires.
    pub fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    /// The Redis key of the lock (useful for inspection and tests).
    pub fn redis_key(&self) -> &str {
        &self.keys.lock
    }

    /// The Redis key of the lock's fencing counter.
    pub fn fence_key(&self) -> &str {
        &self.keys.fence
    }

    /// Acquire the lock, waiting up to the lock's wait setting (default 10 s).
    ///
    /// Fails with [`ErrorKind::TimedOut`] when the wait runs out,
    /// [`ErrorKind::Ambiguous`] when Redis may have granted the lock but the reply could
    /// not be obtained in time (the possible grant is released in the background),
    /// [`ErrorKind::Connection`] when Redis cannot be reached, and
    /// [`ErrorKind::Server`] when Redis refuses the script (e.g. `WRONGTYPE`: a key under
    /// this lock's name is not a leasehold lock).
    ///
    /// # Cancel safety
    /// Cancel-safe with respect to the lock: if the future is dropped after Redis may have
    /// granted the lock, that grant is released in the background (tracked by
    /// [`Client::shutdown`](crate::Client::shutdown)); a grant never outlives its TTL
    /// unreleased, and the key always carries a TTL. The caller's place in the local queue
    /// is given up.
    pub async fn acquire(&self) -> Result<LockGuard> {
        self.acquire_until(Instant::now() + self.wait, true).await
    }

    /// Acquire the lock, waiting at most `wait`.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn acquire_timeout(&self, wait: Duration) -> Result<LockGuard> {
        validate_wait(wait)?;
        self.acquire_until(Instant::now() + wait, true).await
    }

    /// Try once, without waiting for a holder: fails with [`ErrorKind::Contended`] if the
    /// lock is held (or another task of this client is queued for it). An unknown outcome
    /// is still resolved, within twice the response timeout.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn try_acquire(&self) -> Result<LockGuard> {
        self.acquire_until(Instant::now(), false).await
    }

    /// Acquire the lock (waiting as [`acquire`](Self::acquire) does), run `work` with a
    /// [`Lease`](crate::Lease) view of it, and release it.
    ///
    /// If the lease is lost while `work` runs (a renewal was refused, or its deadline
    /// passed without a confirmed renewal), then with [`OnLost::Cancel`] (the default)
    /// `work`'s future is dropped at its next `.await` point and `run` returns
    /// [`ErrorKind::LeaseLost`]. Work already done, or a request already sent by `work`, is
    /// not undone: protect the resource itself with the lease's fencing token. With
    /// [`OnLost::Notify`], `work` runs to completion (it can watch `lease.lost()`), and
    /// `run` still returns `LeaseLost`, since the result was produced without the lock.
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
    /// let report = client.lock("reports/daily")?
    ///     .run(|lease| async move {
    ///         // ... long work; pass lease.fencing_token() to the store ...
    ///         format!("written with token {}", lease.fencing_token())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancelling `run` drops `work` and releases the lock in the background (as dropping
    /// a guard does); an acquire in progress is cancelled as described for
    /// [`acquire`](Self::acquire).
    pub async fn run<F, Fut, T>(&self, work: F) -> Result<T>
    where
        F: FnOnce(crate::Lease) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let guard = self.acquire().await?;
        let lease = guard.lease();
        let lost = |reason: crate::LostReason| {
            Error::new(
                ErrorKind::LeaseLost(reason),
                format!("lock {:?}: lease lost while work ran: {reason}", self.name),
            )
        };
        let output = match self.on_lost {
            OnLost::Cancel => {
                let work = work(lease.clone());
                tokio::select! {
                    biased;
                    reason = lease.lost() => {
                        tracing::warn!(lock = %self.name, %reason, "lease lost; cancelling the work");
                        drop(guard);
                        return Err(lost(reason));
                    }
                    out = work => out,
                }
            }
            OnLost::Notify => work(lease.clone()).await,
        };
        if let Some(reason) = guard.lost_reason() {
            drop(guard);
            return Err(lost(reason));
        }
        match guard.release().await? {
            crate::ReleaseOutcome::Released => Ok(output),
            crate::ReleaseOutcome::HeldByOther => Err(lost(crate::LostReason::HeldByOther)),
            _ => Err(lost(crate::LostReason::Expired)),
        }
    }

    async fn acquire_until(&self, deadline: Instant, waiting: bool) -> Result<LockGuard> {
        self.inner.check_open()?;
        let span = tracing::debug_span!("leasehold.acquire", lock = %self.name, waiting);
        self.acquire_inner(deadline, waiting).instrument(span).await
    }

    async fn acquire_inner(&self, deadline: Instant, waiting: bool) -> Result<LockGuard> {
        let started = Instant::now();
        let inner = &self.inner;
        let hold_key = format!("{}/{}", inner.id, self.keys.lock);
        let (owner_id, reentrant) = match &self.owner {
            Some(o) => (o.id().to_string(), true),
            None => (crate::random_id(), false),
        };
        let reentering = self
            .owner
            .as_ref()
            .is_some_and(|o| o.holds_locally(&hold_key));
        if self.mode != Mode::Exclusive {
            crate::backend::require(inner, Capability::ServerQueues)?;
        }
        // Tasks of one client that wait queue locally, so one of them at a time waits at
        // the server and a release wakes one task per client. Fair waiters each keep a
        // place of their own instead; permits and readers that do not wait never queue
        // (a free permit or a shared read is not refused because another task asks).
        let local_queue = match self.mode {
            Mode::Exclusive | Mode::Write => true,
            Mode::Fair => false,
            Mode::Permit(_) | Mode::Read => waiting,
        };
        let _queue_place = if reentering || !local_queue {
            None
        } else {
            let queue = inner.queue(&self.keys.lock);
            let place = if waiting {
                match timeout_at(deadline, queue.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::debug!(outcome = "timed_out", "waited in the local queue");
                        crate::metrics::acquisition(&self.name, "timed_out");
                        return Err(Error::timed_out(&self.name, started.elapsed()));
                    }
                }
            } else {
                match queue.try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::Contended,
                            format!(
                                "lock {:?} is wanted by another task of this client",
                                self.name
                            ),
                        ))
                    }
                }
            };
            Some(place)
        };

        if !inner.nodes.is_empty() {
            let hold = crate::backend::quorum::Hold {
                owner_id,
                reentrant,
                hold_key,
            };
            let quorum = crate::backend::quorum::QuorumLock {
                inner,
                name: &self.name,
                keys: &self.keys,
                ttl: self.ttl,
                metadata: &self.metadata,
            };
            let grant =
                crate::backend::quorum::acquire(quorum, &hold, started, deadline, waiting).await?;
            // No await from here on: the grant becomes a guard (which releases it) at once.
            if let Some(o) = &self.owner {
                o.add_hold(&hold.hold_key);
            }
            let state = Arc::new(LeaseState::new(
                self.name.clone(),
                self.keys.clone(),
                hold.owner_id,
                grant.req,
                self.ttl,
                self.effective_renewal(),
                grant.token,
                grant.start,
            ));
            return Ok(LockGuard::new(
                inner.clone(),
                state,
                self.owner.clone(),
                hold.hold_key,
                grant.count,
            ));
        }
        let req = crate::random_id();
        let mut pending = PendingGrant {
            inner: inner.clone(),
            keys: self.keys.clone(),
            owner_id: owner_id.clone(),
            req: req.clone(),
            ttl: self.ttl,
            armed: false,
            abandoned_connection: false,
        };
        let mut registration = Registration {
            inner: inner.clone(),
            keys: self.keys.clone(),
            req: req.clone(),
            active: false,
        };
        let registers = matches!(self.mode, Mode::Exclusive | Mode::Fair | Mode::Write);
        let mut sub = None;
        let mut backoff = Duration::from_millis(5);
        let mut attempts = 0u32;
        let mut queued = false;
        loop {
            if attempts > 0 && Instant::now() >= deadline {
                tracing::debug!(outcome = "timed_out", attempts, "lock not granted in time");
                crate::metrics::acquisition(&self.name, "timed_out");
                return Err(Error::timed_out(&self.name, started.elapsed()));
            }
            let seen = sub.as_ref().map(crate::net::wait::Subscription::version);
            attempts += 1;
            let resolve_by = deadline.max(Instant::now() + 2 * inner.conn.response_timeout());
            let wait_lease = if !waiting {
                Duration::ZERO
            } else if self.mode.keeps_place() {
                self.place_ttl
            } else {
                deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(500)
            };
            // A waiting try may queue the caller at the server (even one that ends in an
            // error, since scripts are not transactions): leave the queue unless granted.
            registration.active |= waiting && registers;
            match self
                .attempt(
                    &owner_id,
                    &req,
                    reentrant,
                    (wait_lease, queued),
                    resolve_by,
                    &mut pending,
                )
                .await?
            {
                Attempt::Granted {
                    token,
                    count,
                    sent_at,
                    acks,
                } => {
                    pending.armed = false;
                    // The script took the caller off the waiter queue.
                    registration.active = false;
                    if let Some(o) = &self.owner {
                        o.add_hold(&hold_key);
                    }
                    tracing::debug!(
                        outcome = "granted",
                        token,
                        count,
                        attempts,
                        waited_us = started.elapsed().as_micros() as u64,
                        "lock granted"
                    );
                    crate::metrics::acquisition(&self.name, "granted");
                    crate::metrics::waited(&self.name, started.elapsed());
                    let state = Arc::new(LeaseState::new(
                        self.name.clone(),
                        self.keys.clone(),
                        owner_id,
                        req,
                        self.ttl,
                        self.effective_renewal(),
                        token,
                        sent_at,
                    ));
                    let guard =
                        LockGuard::new(inner.clone(), state, self.owner.clone(), hold_key, count);
                    if let Some((wanted, _)) = self.replica_acks {
                        let acked = acks.unwrap_or(0);
                        if acked < wanted {
                            return Err(self.not_replicated(guard, wanted, acks).await);
                        }
                    }
                    return Ok(guard);
                }
                Attempt::Contended { pttl, reserved } => {
                    crate::metrics::contended(&self.name);
                    if !waiting {
                        crate::metrics::acquisition(&self.name, "contended");
                        tracing::debug!(outcome = "contended", pttl, reserved, "lock is held");
                        let name = &self.name;
                        let why = match self.mode {
                            Mode::Exclusive => format!("lock {name:?} is held by another owner"),
                            Mode::Fair => {
                                format!("fair lock {name:?} is held, or others are queued first")
                            }
                            Mode::Permit(_) => format!("semaphore {name:?}: every permit is held"),
                            Mode::Read => {
                                format!("read-write lock {name:?} is held or wanted by a writer")
                            }
                            Mode::Write => {
                                format!("read-write lock {name:?} is held by readers or a writer")
                            }
                        };
                        return Err(Error::new(ErrorKind::Contended, why));
                    }
                    queued = true;
                    let now = Instant::now();
                    if now >= deadline {
                        continue;
                    }
                    let Some(s) = sub.as_mut() else {
                        // Subscribe, then try again at once: a release between the failed
                        // attempt and the subscription would otherwise be missed.
                        sub = Some(inner.waker.subscribe(&self.keys.channel, deadline).await);
                        continue;
                    };
                    let mut pause = if reserved && self.mode == Mode::Fair {
                        // Someone is ahead: wait to be named by a release.
                        jitter(self.refresh_every())
                    } else if reserved {
                        // Handed to another waiter: retry if it does not claim the lock.
                        jitter(Duration::from_millis(
                            u64::try_from(pttl.max(1)).unwrap_or(1),
                        ))
                    } else {
                        fallback_delay(pttl, s.is_confirmed(), &mut backoff)
                    };
                    if self.mode.keeps_place() {
                        // Come back in time to refresh the place.
                        pause = pause.min(self.refresh_every());
                    }
                    let mut wake = (now + pause).min(deadline);
                    tracing::trace!(
                        pttl,
                        reserved,
                        pause_us = pause.as_micros() as u64,
                        "waiting for a release"
                    );
                    let mut seen = seen.unwrap_or_default();
                    loop {
                        tokio::select! {
                            _ = s.changed_since(seen) => {
                                let (version, handed_to) = s.latest();
                                seen = version;
                                if handed_to.is_empty() || *handed_to == *req {
                                    break;
                                }
                                if self.mode == Mode::Fair {
                                    // Fair: only the named waiter may take it; keep waiting.
                                    continue;
                                }
                                // Handed to another waiter: retry only if it fails to claim.
                                let grace = Duration::from_millis(crate::protocol::scripts::RESERVATION_MS);
                                wake = (Instant::now() + jitter(grace)).min(deadline);
                            }
                            _ = sleep_until(wake) => break,
                        }
                    }
                }
            }
        }
    }

    /// Release a grant that too few replicas acknowledged, and describe the shortfall.
    async fn not_replicated(&self, guard: LockGuard, wanted: u32, acks: Option<u32>) -> Error {
        let acked = acks.unwrap_or(0);
        crate::metrics::acquisition(&self.name, "not_replicated");
        let released = match guard.release().await {
            Ok(outcome) => format!("the grant was released ({outcome:?})"),
            Err(e) => format!("releasing the grant failed ({e}); it is retried in the background"),
        };
        let heard = match acks {
            Some(n) => format!("{n} acknowledged"),
            None => "WAIT failed, so none are known to have it".to_string(),
        };
        tracing::warn!(lock = %self.name, wanted, acked, "grant not acknowledged by enough replicas");
        Error::new(
            ErrorKind::NotReplicated { wanted, acked },
            format!(
                "lock {:?}: {wanted} replica acknowledgements required within {:?}, {heard}; {released}",
                self.name,
                self.replica_acks.map(|(_, t)| t).unwrap_or_default()
            ),
        )
    }

    /// The acquire script call of this lock's mode, for request `req`.
    fn acquire_call(
        &self,
        owner_id: &str,
        req: &str,
        reentrant: bool,
        wait_lease: Duration,
        queued: bool,
    ) -> crate::protocol::scripts::Call<'_> {
        crate::protocol::Acquire {
            mode: self.mode,
            keys: &self.keys,
            owner_id,
            req,
            ttl: self.ttl,
            reentrant,
            wait_lease,
            queued,
            metadata: &self.metadata,
        }
        .call(&self.inner.scripts)
    }

    /// Run the acquire script for `req` until its outcome is known or `resolve_by` passes.
    async fn attempt(
        &self,
        owner_id: &str,
        req: &str,
        reentrant: bool,
        (wait_lease, queued): (Duration, bool),
        resolve_by: Instant,
        pending: &mut PendingGrant,
    ) -> Result<Attempt> {
        let inner = &self.inner;
        let mut maybe_applied = false;
        let mut first_send: Option<Instant> = None;
        let mut not_sent = 0u32;
        let mut backoff = Duration::from_millis(10);
        let mut last: Option<Failure> = None;
        loop {
            let now = Instant::now();
            // Never send with next to no time left: the reply could not arrive, and the
            // connection would be discarded for nothing.
            if resolve_by.saturating_duration_since(now) < crate::net::conn::MIN_BUDGET
                && last.is_some()
            {
                let failure = last.take().map(|f| f.describe()).unwrap_or_default();
                if maybe_applied {
                    crate::metrics::acquisition(&self.name, "ambiguous");
                    tracing::warn!(
                        lock = %self.name,
                        outcome = "ambiguous",
                        "acquire outcome unknown at the deadline; releasing the possible grant in the background"
                    );
                    return Err(Error::new(
                        ErrorKind::Ambiguous,
                        format!(
                            "lock {:?}: Redis may have granted the lock but its reply did not arrive in time ({failure}); the possible grant is being released",
                            self.name
                        ),
                    ));
                }
                return Err(Error::new(
                    ErrorKind::Connection,
                    format!("lock {:?}: {failure}", self.name),
                ));
            }
            let budget = resolve_by
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            let sent_at = Instant::now();
            first_send.get_or_insert(sent_at);
            pending.armed = true;
            let mut inv = self.acquire_call(
                owner_id,
                req,
                reentrant,
                wait_lease,
                queued || maybe_applied,
            );
            let result = match self.replica_acks {
                None => inner
                    .conn
                    .eval_tagged(&mut inv, budget)
                    .await
                    .map(|r| (r, None)),
                Some((replicas, wait)) => {
                    inner
                        .ack_conn
                        .eval_tagged_then_wait(&mut inv, budget, replicas, wait)
                        .await
                }
            };
            match result {
                Ok((reply, acks)) => {
                    return match Acquired::decode(&reply) {
                        Ok(Acquired::Granted { token, count }) => Ok(Attempt::Granted {
                            token,
                            count,
                            sent_at: first_send.unwrap_or(sent_at),
                            acks,
                        }),
                        Ok(Acquired::Refused { pttl, reserved }) => {
                            pending.armed = false;
                            Ok(Attempt::Contended { pttl, reserved })
                        }
                        Err(unexpected) => Err(Error::new(
                            ErrorKind::Server,
                            format!("lock {:?}: {unexpected}", self.name),
                        )),
                    };
                }
                Err(Failure::Server(e)) => {
                    pending.armed = maybe_applied;
                    if maybe_applied {
                        // An earlier try may have been granted; this error says nothing
                        // about it.
                        crate::metrics::acquisition(&self.name, "ambiguous");
                        return Err(Error::new(
                            ErrorKind::Ambiguous,
                            format!(
                                "lock {:?}: an earlier try's outcome is unknown and the retry failed ({e}); the possible grant is being released",
                                self.name
                            ),
                        )
                        .with_source(e));
                    }
                    return Err(Error::from_redis(&format!("acquire {:?}", self.name), e));
                }
                Err(f @ Failure::NotSent(_)) => {
                    pending.armed = maybe_applied;
                    if !maybe_applied {
                        first_send = None;
                        not_sent += 1;
                        if not_sent >= 3 {
                            return Err(Error::new(
                                ErrorKind::Connection,
                                format!("lock {:?}: {}", self.name, f.describe()),
                            )
                            .with_source_opt(f.into_redis()));
                        }
                    }
                    last = Some(f);
                    let pause = jitter(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                    sleep_until((Instant::now() + pause).min(resolve_by)).await;
                }
                Err(f @ Failure::Unknown(_)) => {
                    crate::metrics::unknown_outcome(&self.name, "acquire");
                    maybe_applied = true;
                    pending.abandoned_connection = true;
                    tracing::warn!(
                        lock = %self.name,
                        outcome = "unknown",
                        cause = %f.describe(),
                        "acquire outcome unknown; retrying the same request"
                    );
                    last = Some(f);
                }
            }
        }
    }
}

/// A grant that may exist at the server but has no guard yet. If dropped while armed
/// (the acquire was cancelled or ended ambiguous), it releases the grant in the background.
struct PendingGrant {
    inner: Arc<Inner>,
    keys: Arc<LockKeys>,
    owner_id: String,
    req: String,
    ttl: Duration,
    armed: bool,
    /// A try went out on a connection that was then abandoned (its outcome unknown): that
    /// command may still reach Redis after the release, so the release re-checks.
    abandoned_connection: bool,
}

impl Drop for PendingGrant {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::debug!(lock = %self.keys.lock, "releasing a possible grant of a cancelled or ambiguous acquire");
        let fut = release_in_background(
            self.inner.clone(),
            self.keys.clone(),
            std::mem::take(&mut self.owner_id),
            std::mem::take(&mut self.req),
            Instant::now() + self.ttl,
            self.abandoned_connection && !self.inner.conn.can_fence(),
        );
        self.inner.spawn_background(fut);
    }
}

/// A waiter's place in the lock's queue at the server. If the acquire ends without the
/// grant (timed out, failed, cancelled), the place is given up in the background, and a
/// lock already handed to this waiter is handed on.
struct Registration {
    inner: Arc<Inner>,
    keys: Arc<LockKeys>,
    req: String,
    active: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let inner = self.inner.clone();
        let keys = self.keys.clone();
        let req = std::mem::take(&mut self.req);
        self.inner.spawn_background(async move {
            let inv = crate::protocol::Leave {
                keys: &keys,
                req: &req,
            }
            .call(&inner.scripts);
            let budget = 2 * inner.conn.response_timeout();
            if let Err(f) = inner.conn.eval::<i64>(&inv, budget).await {
                // The place expires with its registration at the server anyway.
                tracing::debug!(lock = %keys.lock, cause = %f.describe(), "leaving the waiter queue failed");
            }
        });
    }
}

fn validate_wait(wait: Duration) -> Result<()> {
    if wait > MAX_TTL {
        return Err(Error::invalid(format!(
            "wait {wait:?} is too long: use at most {MAX_TTL:?}"
        )));
    }
    Ok(())
}

/// Add up to 20% random jitter.
pub(crate) fn jitter(d: Duration) -> Duration {
    let max = (d.as_micros() / 5).max(1) as u64;
    d + Duration::from_micros(rand::rng().random_range(0..=max))
}

/// How long a waiter sleeps when nothing wakes it.
fn fallback_delay(pttl: i64, confirmed: bool, backoff: &mut Duration) -> Duration {
    // Unconfirmed waiters poll faster than a handoff reservation lapses, so they do not
    // miss a lock handed to them.
    let cap = Duration::from_millis(crate::protocol::scripts::RESERVATION_MS / 2);
    let ttl_left = u64::try_from(pttl)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    match ttl_left {
        // Releases are announced; only expiry is not: sleep until the lease runs out.
        Some(left) if confirmed => left + small_jitter(),
        Some(left) => {
            let d = left.min(*backoff);
            *backoff = (*backoff * 2).min(cap);
            jitter(d)
        }
        None => {
            let d = *backoff;
            *backoff = (*backoff * 2).min(cap);
            jitter(d)
        }
    }
}

/// 1 to 5 ms, so waiters of an expired lock do not all retry at the same instant.
fn small_jitter() -> Duration {
    Duration::from_micros(rand::rng().random_range(1_000..=5_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmed_waiters_sleep_until_the_lease_runs_out() {
        let mut b = Duration::from_millis(5);
        let d = fallback_delay(5_000, true, &mut b);
        assert!(
            d >= Duration::from_millis(5_001) && d <= Duration::from_millis(5_005),
            "{d:?}"
        );
        assert_eq!(b, Duration::from_millis(5));
    }

    #[test]
    fn unconfirmed_waiters_back_off_up_to_a_cap() {
        let mut b = Duration::from_millis(5);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = fallback_delay(60_000, false, &mut b);
        }
        assert!(last <= Duration::from_millis(60), "{last:?}");
        assert!(last >= Duration::from_millis(50), "{last:?}");
    }

    #[test]
    fn jitter_adds_at_most_a_fifth() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(100) && j <= Duration::from_millis(120));
        }
    }
}
