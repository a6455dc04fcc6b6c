//! The lock handle: a named lock's lease and wait settings, and acquiring it.
//!
//! [`Lock`] holds settings only; an acquire waits in the client's local queue (tasks of one
//! client that want the same lock queue locally, first come first served, so only the head
//! of that queue talks to Redis and a release wakes one task per client), then hands the
//! request to the backend seam ([`crate::backend::acquire`]), which returns grant data; the
//! grant becomes a [`LockGuard`] with no await in between, so nothing can drop it unowned.
//! The idempotent acquire, waiting and unknown outcomes are in `backend/node.rs` (one
//! server) and `backend/quorum.rs` (RedLock).

pub(crate) mod guard;
pub(crate) mod holder;
pub(crate) mod owner;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{timeout_at, Instant};
use tracing::Instrument;

use crate::backend::Capability;
use crate::client::context::Inner;
use crate::error::{human, Error, ErrorKind, Result};
use crate::lease::LeaseState;
use crate::lease::MAX_TTL;
use crate::lock::guard::LockGuard;
use crate::lock::owner::Owner;
use crate::protocol::keys::LockKeys;
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
    /// `None`: the watchdog renews every ttl/3; `Some`: the caller's interval.
    renew_every: Option<Duration>,
    auto_renew: bool,
    on_lost: OnLost,
    wait: Duration,
    pub(crate) owner: Option<Owner>,
    /// The holder label asked for (checked by [`Lock::check`]).
    label: Option<String>,
    pub(crate) metadata: Arc<str>,
    replica_acks: Option<(u32, Duration)>,
    pub(crate) mode: Mode,
    /// `None`: [`DEFAULT_PLACE_TTL`].
    place_ttl: Option<Duration>,
    /// [`Lock::fair`] was asked of a lock that cannot be fair (a semaphore's or a
    /// read-write lock's).
    fair_refused: bool,
    /// The `group` label of this lock's metrics.
    metrics_group: Option<Arc<str>>,
    /// The permits one acquire takes (a semaphore's; 1 otherwise).
    pub(crate) permits: u32,
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

impl Lock {
    pub(crate) fn new(inner: Arc<Inner>, name: &str, keys: LockKeys) -> Self {
        Lock {
            replica_acks: inner.replica_acks,
            ttl: inner.default_ttl,
            renew_every: None,
            auto_renew: true,
            on_lost: OnLost::Cancel,
            label: None,
            metadata: inner.holder_json.clone(),
            wait: inner.default_wait,
            inner,
            name: Arc::from(name),
            keys: Arc::new(keys),
            owner: None,
            mode: Mode::Exclusive,
            place_ttl: None,
            fair_refused: false,
            metrics_group: None,
            permits: 1,
        }
    }

    pub(crate) fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        if let (Mode::Permit(capacity), crate::protocol::keys::Kind::Member { .. }) =
            (mode, &self.keys.kind)
        {
            // A permit's release names the waiter a freed permit goes to: it needs N.
            Arc::make_mut(&mut self.keys).kind = crate::protocol::keys::Kind::Member {
                announce_all: true,
                capacity,
            };
        }
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
        match self.keys.kind {
            crate::protocol::keys::Kind::Lock => {
                let mut keys = (*self.keys).clone();
                keys.kind = crate::protocol::keys::Kind::FairLock;
                self.keys = Arc::new(keys);
                self.mode = Mode::Fair;
            }
            crate::protocol::keys::Kind::FairLock => {}
            _ => self.fair_refused = true,
        }
        self
    }

    /// How long a waiting caller's place lives at the server between refreshes (fair
    /// locks, and writers of a read-write lock): 100 ms to 60 s, default
    /// [`DEFAULT_PLACE_TTL`]. Shorter skips a crashed waiter sooner and costs more
    /// refreshes. On a lock whose waiters keep no place (a plain lock, a semaphore),
    /// acquires fail with [`ErrorKind::InvalidInput`].
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn place_ttl(mut self, place_ttl: Duration) -> Self {
        self.place_ttl = Some(place_ttl);
        self
    }

    /// Whether this lock is fair (see [`fair`](Self::fair)).
    pub fn is_fair(&self) -> bool {
        self.mode == Mode::Fair
    }

    /// Set the lease length: 10 ms to 24 h, default the client's (30 s). The watchdog
    /// renews the lease every third of it while the guard lives, unless
    /// [`auto_renew(false)`](Self::auto_renew) fixes it (then the holder extends it, or
    /// finishes in time).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Turn the watchdog on (the default) or off for this lock's leases. Off, a lease
    /// lasts its TTL unless the holder extends it.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = on;
        self
    }

    /// Renew every `every` (default: a third of the lease). Must be at least 1 ms and
    /// shorter than the lease minus its drift allowance, or the lease would lapse between
    /// renewals; checked against the final TTL, whatever the order of the calls.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// Label the holder with `label` (stored with the grant beside host name and pid, and
    /// shown by [`Client::inspect`](crate::Client::inspect)): at most 256 bytes of
    /// printable text.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn label(mut self, label: &str) -> Self {
        let mut holder = self.inner.holder.clone();
        holder.label = Some(label.to_string());
        self.metadata = Arc::from(holder.to_json());
        self.label = Some(label.to_string());
        self
    }

    /// The holder metadata stored with a grant, whole (an election's leader adds its
    /// value to it). Its label is checked as [`label`](Self::label)'s.
    pub(crate) fn with_metadata(mut self, holder: &crate::lock::holder::HolderMetadata) -> Self {
        self.metadata = Arc::from(holder.to_json());
        self.label = holder.label.clone();
        self
    }

    /// Label this lock's metrics with `group` (e.g. `billing`): a bounded label for
    /// dashboards, unlike the lock name (see [`crate::metrics`]). At most 64 bytes of
    /// printable text.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn metrics_group(mut self, group: &str) -> Self {
        self.metrics_group = Some(Arc::from(group));
        self
    }

    /// The labels of this lock's metrics: its kind, group, and name if the client asks.
    pub(crate) fn series(&self) -> Arc<crate::metrics::Series> {
        let kind = match self.mode {
            Mode::Exclusive => "lock",
            Mode::Fair => "fair_lock",
            Mode::Permit(_) => "semaphore",
            Mode::Read => "rwlock_read",
            Mode::Write => "rwlock_write",
        };
        let name = self.inner.metrics_lock_names.then_some(&*self.name);
        crate::metrics::Series::new(kind, self.metrics_group.as_deref(), name)
    }

    /// What [`run`](Self::run) does when the lease is lost (default: cancel the work).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn on_lost(mut self, on_lost: OnLost) -> Self {
        self.on_lost = on_lost;
        self
    }

    /// An auto-renewed lease must outlast one slow renewal: a renewal sent when due may
    /// wait a whole response timeout for its reply, and must still land before the lease's
    /// local deadline. A shorter TTL would be lost by a merely slow reply (a fixed lease,
    /// `auto_renew(false)`, is not renewed and is not held to this).
    fn check_ttl_fits_the_response_timeout(&self) -> Result<()> {
        let Some(every) = self.effective_renewal() else {
            return Ok(());
        };
        let rt = self.inner.conn.response_timeout();
        // What a renewal sent when due has before the lease is declared lost: the usable
        // lease (TTL minus drift, minus the margin the deadline fires early by) after the
        // interval. The interval is this lock's (`renew_every`) or a third of the TTL,
        // at most half the usable lease.
        let left = |ttl: Duration| {
            let usable = ttl.saturating_sub(crate::lease::drift(ttl));
            let every = self.renew_every.unwrap_or(ttl / 3).min(usable / 2);
            usable
                .saturating_sub(crate::lease::deadline_margin(ttl))
                .saturating_sub(every)
        };
        let room = left(self.ttl);
        if room >= rt {
            return Ok(());
        }
        // The shortest TTL that fits with this lock's schedule.
        let mut fits = rt;
        for _ in 0..200 {
            if left(fits) >= rt {
                break;
            }
            fits += rt / 64 + Duration::from_millis(1);
        }
        let shorter = if room >= Duration::from_millis(1) {
            format!(", or a response timeout of at most {}", human(room))
        } else {
            String::new()
        };
        Err(Error::invalid(format!(
            "lock {:?}: a lease TTL of {} is too short to renew with a response timeout of {}: a renewal sent when due (every {}) could not wait one response timeout before the lease's deadline; use a TTL of at least {}{shorter}",
            self.name,
            human(self.ttl),
            human(rt),
            human(every),
            human(fits)
        )))
    }

    /// The renewal interval acquires will use, if the watchdog is on.
    pub fn effective_renewal(&self) -> Option<Duration> {
        self.auto_renew.then(|| {
            let every = self.renew_every.unwrap_or(self.ttl / 3);
            let usable = self.ttl.saturating_sub(crate::lease::drift(self.ttl));
            every.min(usable / 2).max(Duration::from_millis(1))
        })
    }

    /// Set how long [`acquire`](Self::acquire) waits for the lock (at most 24 h).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Count a grant only once `replicas` replicas have acknowledged it (Redis `WAIT`
    /// after the acquire script, on the same connection), within `timeout`. With fewer
    /// acknowledgements — any shortfall, not only zero — the grant is released before the
    /// call returns, and acquire fails with
    /// [`ErrorKind::NotReplicated`](crate::ErrorKind::NotReplicated). Use it on a
    /// replicated master (e.g. with [`Client::sentinel_builder`](crate::Client::sentinel_builder))
    /// so that a grant survives a failover to a replica that acknowledged it.
    ///
    /// Replicas: 1 to 64; timeout: 1 ms to 60 s; not on Cluster or RedLock clients.
    /// Acquires that wait for acknowledgements use a connection of their own, because
    /// `WAIT` blocks the connection it runs on.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replica_acks = Some((replicas, timeout));
        self
    }

    /// Check this lock's settings together, as every acquire does first: the error
    /// ([`ErrorKind::InvalidInput`]) names the setting and what to use instead. Setters
    /// never fail, and their order does not matter; call this to find a mistake before
    /// the first acquire.
    ///
    /// ```no_run
    /// # fn demo(client: leasehold::Client) {
    /// use std::time::Duration;
    /// let lock = client.lock("reports").unwrap()
    ///     .renew_every(Duration::from_secs(20))
    ///     .ttl(Duration::from_secs(10)); // a renewal every 20 s cannot keep a 10 s lease
    /// assert!(lock.check().unwrap_err().is_invalid_input());
    /// # }
    /// ```
    pub fn check(&self) -> Result<()> {
        validate_ttl(self.ttl)?;
        if let Some(every) = self.renew_every {
            if !self.auto_renew {
                return Err(Error::invalid(format!(
                    "lock {:?}: renew_every({}) has no effect with auto_renew(false)",
                    self.name,
                    human(every)
                )));
            }
            let usable = self.ttl.saturating_sub(crate::lease::drift(self.ttl));
            if every < Duration::from_millis(1) || every >= usable {
                return Err(Error::invalid(format!(
                    "renewal interval {} must be at least 1 ms and shorter than the lease {} minus its drift allowance",
                    human(every),
                    human(self.ttl)
                )));
            }
        }
        self.check_ttl_fits_the_response_timeout()?;
        if let Some(group) = &self.metrics_group {
            if group.is_empty() || group.len() > 64 || group.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "metrics group must be 1 to 64 bytes of printable text",
                ));
            }
        }
        if let Some(label) = &self.label {
            if label.len() > 256 || label.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "holder label must be at most 256 bytes of printable text",
                ));
            }
        }
        validate_wait(self.wait)?;
        if let Some((replicas, timeout)) = self.replica_acks {
            if replicas == 0
                || replicas > 64
                || timeout < Duration::from_millis(1)
                || timeout > Duration::from_secs(60)
            {
                return Err(Error::invalid(format!(
                    "replica acknowledgements: {replicas} replicas within {} is out of range: use 1 to 64 replicas and 1 ms to 60 s",
                    human(timeout)
                )));
            }
            crate::backend::require(&self.inner, Capability::ReplicaAcks)?;
        }
        if let Some(place_ttl) = self.place_ttl {
            if !self.mode.keeps_place() {
                return Err(Error::invalid(format!(
                    "lock {:?}: place_ttl applies only to fair locks, semaphores and read-write locks' writers, whose waiters keep a place at the server",
                    self.name
                )));
            }
            if place_ttl < Duration::from_millis(100) || place_ttl > Duration::from_secs(60) {
                return Err(Error::invalid(format!(
                    "place ttl {} is out of range: use 100 ms to 60 s",
                    human(place_ttl)
                )));
            }
        }
        if self.fair_refused {
            return Err(Error::invalid(format!(
                "{:?}: fair() applies only to plain locks (semaphores and read-write locks queue by their own rules)",
                self.name
            )));
        }
        if let Mode::Permit(capacity) = self.mode {
            crate::validate::validate_capacity(capacity)?;
            crate::validate::validate_permits(self.permits, capacity)?;
        }
        if self.mode != Mode::Exclusive {
            crate::backend::require(&self.inner, Capability::ServerQueues)?;
        }
        Ok(())
    }

    fn place_lifetime(&self) -> Duration {
        self.place_ttl.unwrap_or(DEFAULT_PLACE_TTL)
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
    /// [`ErrorKind::Connection`] when Redis cannot be reached,
    /// [`ErrorKind::ForeignKey`] when a key under this lock's name holds another type of
    /// value (something else writes under leasehold's prefix), and [`ErrorKind::Server`]
    /// when Redis refuses the script for another reason.
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

    pub(crate) async fn acquire_until(
        &self,
        deadline: Instant,
        waiting: bool,
    ) -> Result<LockGuard> {
        self.inner.check_open()?;
        self.check()?;
        let span = tracing::debug_span!("leasehold.acquire", lock = %self.name, waiting);
        // Boxed: the acquire engine's future nests deeply, and a caller's own future would
        // otherwise need a raised `recursion_limit` to compile.
        Box::pin(self.acquire_inner(deadline, waiting).instrument(span)).await
    }

    async fn acquire_inner(&self, deadline: Instant, waiting: bool) -> Result<LockGuard> {
        let started = Instant::now();
        let inner = &self.inner;
        let hold = self.hold();
        let reentering = self
            .owner
            .as_ref()
            .is_some_and(|o| o.holds_locally(&hold.hold_key));
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
                        crate::metrics::acquisition(&self.series(), "timed_out");
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

        let series = self.series();
        let request = self.request(&series);
        let grant = crate::backend::acquire(request, &hold, started, deadline, waiting).await?;
        let shortfall = grant.shortfall;
        let guard = self.guard_for(grant, hold, &series);
        if let Some((wanted, acks)) = shortfall {
            return Err(self.not_replicated(guard, wanted, acks).await);
        }
        Ok(guard)
    }

    /// Whether a lock set may take this member in one script with the others: a plain
    /// (not fair) lock, without replica acknowledgements.
    pub(crate) fn joins_at_once(&self) -> bool {
        self.mode == Mode::Exclusive && self.replica_acks.is_none()
    }

    /// Who holds an acquire of this lock: the owner's id (re-entrant), or a fresh one.
    pub(crate) fn hold(&self) -> crate::backend::Hold {
        let (owner_id, reentrant) = match &self.owner {
            Some(o) => (o.id().to_string(), true),
            None => (crate::random_id(), false),
        };
        crate::backend::Hold {
            owner_id,
            reentrant,
            hold_key: format!("{}/{}", self.inner.id, self.keys.lock),
        }
    }

    /// The request an acquire of this lock makes of the backend.
    pub(crate) fn request<'a>(
        &'a self,
        series: &'a Arc<crate::metrics::Series>,
    ) -> crate::backend::LockRequest<'a> {
        crate::backend::LockRequest {
            inner: &self.inner,
            name: &self.name,
            keys: &self.keys,
            mode: self.mode,
            ttl: self.ttl,
            place_ttl: self.place_lifetime(),
            metadata: &self.metadata,
            series,
            replica_acks: self.replica_acks,
            permits: self.permits,
        }
    }

    /// Make `grant` (of `hold`) a guard of this lock, with no await: the grant is owned by
    /// a guard (which releases it) at once.
    pub(crate) fn guard_for(
        &self,
        grant: crate::backend::Grant,
        hold: crate::backend::Hold,
        series: &Arc<crate::metrics::Series>,
    ) -> LockGuard {
        if let Some(o) = &self.owner {
            o.add_hold(&hold.hold_key);
        }
        let mut state = LeaseState::new(
            self.name.clone(),
            series.clone(),
            self.keys.clone(),
            hold.owner_id,
            grant.req,
            self.ttl,
            self.effective_renewal(),
            grant.token,
            grant.start,
        );
        if let Some(claim) = grant.claim {
            state = state.provisional(claim);
        }
        LockGuard::new(
            self.inner.clone(),
            Arc::new(state),
            self.owner.clone(),
            hold.hold_key,
            grant.count,
        )
    }

    /// Release a grant that too few replicas acknowledged, and describe the shortfall.
    async fn not_replicated(&self, guard: LockGuard, wanted: u32, acks: Option<u32>) -> Error {
        let acked = acks.unwrap_or(0);
        crate::metrics::acquisition(&self.series(), "not_replicated");
        let released = match guard.release().await {
            Ok(outcome) => format!("the grant was released ({outcome})"),
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
}

pub(crate) fn validate_wait(wait: Duration) -> Result<()> {
    if wait > MAX_TTL {
        return Err(Error::invalid(format!(
            "wait {} is too long: use at most {}",
            human(wait),
            human(MAX_TTL)
        )));
    }
    Ok(())
}
