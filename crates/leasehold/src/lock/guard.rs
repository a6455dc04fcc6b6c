//! Holding a lock: the guard, its lease deadline, extend and release.
//!
//! A [`LockGuard`] is the only proof of holding (no shared "is locked" flag exists). Its
//! lease deadline is judged on the local monotonic clock from the send time of the request
//! that set the TTL, minus drift. Release and extend are token-checked scripts and report
//! distinct outcomes (invariant 4). Dropping a guard releases in the background, tracked
//! so that [`Client::shutdown`](crate::Client::shutdown) drains it (invariant 5).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::context::Inner;
use crate::error::Result;
use crate::lease::{LeaseState, LostReason, ReleaseOutcome};
use crate::lock::owner::Owner;
use crate::validate::validate_ttl;
use tokio_util::sync::CancellationToken;

/// Proof of holding a lock, until its lease runs out.
///
/// Owned (`Send + 'static`): move it into a spawned task freely. Dropping it releases the
/// hold in the background; call [`release`](Self::release) to learn the outcome.
///
/// A guard learns when its lease is lost — a renewal was refused, or its local deadline
/// passed without a confirmed renewal — through [`lost`](Lease::lost) and
/// [`cancellation_token`](Lease::cancellation_token), never through a panic.
#[must_use = "the lock is released in the background as soon as the guard is dropped"]
pub struct LockGuard {
    inner: Arc<Inner>,
    lease: Lease,
    owner: Option<Owner>,
    hold_key: String,
    count: u32,
    granted_at: Instant,
    done: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.lease.state.name)
            .field("fencing_token", &self.lease.state.token)
            .field("hold_count", &self.count)
            .field("remaining", &self.remaining())
            .field("auto_renew", &self.lease.state.renew_every)
            .field("lost", &self.lease.state.lost_reason())
            .finish()
    }
}

impl LockGuard {
    pub(crate) fn new(
        inner: Arc<Inner>,
        state: Arc<LeaseState>,
        owner: Option<Owner>,
        hold_key: String,
        count: u32,
    ) -> Self {
        inner.renewer.watch(&inner, state.clone());
        crate::metrics::holding(&state.series, true);
        LockGuard {
            inner,
            lease: Lease { state },
            owner,
            hold_key,
            count,
            granted_at: Instant::now(),
            done: false,
        }
    }

    /// The client this guard's hold was granted through.
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The state of this guard's lease.
    pub(crate) fn lease_state(&self) -> &Arc<LeaseState> {
        &self.lease.state
    }

    /// The owner's hold count right after this hold was granted (1 unless re-entered).
    pub fn hold_count(&self) -> u32 {
        self.count
    }

    /// A cheap, clonable view of this lease for other tasks: fencing token, deadline and
    /// the loss signal.
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// Make the lease last at least `ttl` from now (it is never shortened).
    ///
    /// Fails with [`ErrorKind::NotHeld`](crate::ErrorKind::NotHeld) — expired, or held by
    /// another owner — when the hold is gone; the guard then holds nothing.
    /// Fails with [`ErrorKind::Ambiguous`](crate::ErrorKind::Ambiguous) when no reply came
    /// even after re-running the same extend on a fresh connection: it may have been
    /// applied, and the deadline stays the older one.
    ///
    /// # Cancel safety
    /// Cancel-safe: extending is idempotent at the server; a cancelled extend may or may
    /// not have lengthened the lease, and [`valid_until`](Lease::valid_until) keeps the
    /// older, conservative deadline.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        validate_ttl(ttl)?;
        self.inner.check_open()?;
        crate::backend::extend(&self.inner, &self.lease.state, ttl).await
    }

    /// Release this hold and report what the server found: released, already expired, or
    /// held by another owner. A release whose reply is lost is re-run (same request) on a
    /// fresh connection and reported by what that finds. When no reply comes at all before
    /// two response timeouts pass, the error is
    /// [`ErrorKind::Ambiguous`](crate::ErrorKind::Ambiguous) (it may have been applied) and
    /// the release goes on in the background; a connection error means it was never sent.
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped before the outcome is known, the release is
    /// finished in the background (tracked by [`Client::shutdown`](crate::Client::shutdown)).
    pub async fn release(mut self) -> Result<ReleaseOutcome> {
        let inner = self.inner.clone();
        let st = self.lease.state.clone();
        let resolve_by = Instant::now()
            + (2 * inner.conn.response_timeout()).max(2 * crate::net::conn::MIN_BUDGET);
        let lease_ok_at_send = Instant::now() < st.valid_until() && st.lost_reason().is_none();
        // Renewal stops now, before the release is sent.
        self.end_lease();
        // From here on, dropping `self` (e.g. cancellation) releases in the background.
        let (outcome, settled) =
            crate::backend::release(&inner, &st, lease_ok_at_send, resolve_by).await;
        if settled {
            // Otherwise dropping the guard keeps releasing in the background.
            self.finish();
        }
        outcome
    }

    /// Stop renewing and signal the end of the lease (idempotent).
    fn end_lease(&mut self) {
        if !self.lease.state.is_ended() {
            self.lease.state.end();
            self.inner.renewer.ended(&self.lease.state);
            crate::metrics::held(&self.lease.state.series, self.granted_at.elapsed());
            crate::metrics::holding(&self.lease.state.series, false);
        }
    }

    /// Mark the hold as finished locally (no background release on drop).
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(o) = &self.owner {
            o.remove_hold(&self.hold_key);
        }
    }
}

/// A clonable view of a held lease, for tasks that must know whether the lock can still be
/// relied on. It does not keep the lock held: the [`LockGuard`] does.
#[derive(Clone)]
pub struct Lease {
    state: Arc<LeaseState>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.state.name)
            .field("fencing_token", &self.state.token)
            .field("lost", &self.state.lost_reason())
            .finish()
    }
}

impl Lease {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The fencing token of this grant: strictly greater than that of every earlier grant
    /// of the same lock name. Pass it to the protected resource and have it refuse writes
    /// with a smaller token than it has seen. Unchanged on re-entry.
    pub fn fencing_token(&self) -> u64 {
        self.state.token
    }

    /// The owner id stored with the lock.
    pub fn owner_id(&self) -> &str {
        &self.state.owner_id
    }

    /// The request id of the acquire that was granted this lease.
    pub(crate) fn request_id(&self) -> &str {
        &self.state.req
    }

    /// The lease length this hold was granted with (and is renewed to).
    pub fn ttl(&self) -> Duration {
        self.state.ttl
    }

    /// How often the watchdog renews this lease, or `None` if it is not renewed.
    pub fn renew_every(&self) -> Option<Duration> {
        self.state.renew_every
    }

    /// The local (monotonic) instant until which this holder may assume it holds the lock:
    /// send time of the last confirmed request that set the TTL (acquire, renewal or
    /// extend), plus the TTL, minus drift (1% of the TTL + 2 ms).
    pub fn valid_until(&self) -> std::time::Instant {
        self.state.valid_until().into_std()
    }

    /// Time left until [`valid_until`](Self::valid_until); zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.state
            .valid_until()
            .saturating_duration_since(Instant::now())
    }

    /// Whether the local lease deadline has passed (the lock may now be someone else's).
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.state.valid_until()
    }

    /// Whether the lease has been declared lost; see [`lost`](Self::lost).
    pub fn is_lost(&self) -> bool {
        self.state.lost_reason().is_some()
    }

    /// Why the lease was lost, if it was.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.state.lost_reason()
    }

    /// Resolves when the lease is lost: a renewal was refused (the key is gone, the hold
    /// ended, or another owner holds the lock) or the local deadline passed without a
    /// confirmed renewal. It resolves no later than [`valid_until`](Self::valid_until), so
    /// before Redis could grant the lock to anyone else. Any number of tasks may await it
    /// (through clones of the [`Lease`]), and it also resolves, with
    /// [`LostReason::Released`], when the guard is released or dropped.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes; dropping the future changes nothing.
    pub async fn lost(&self) -> LostReason {
        self.state.lost().await
    }

    /// A token cancelled when the lease is lost, or when its guard is released or
    /// dropped. Hand it to work that must stop when the lock can no longer be relied on.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.state.cancellation_token()
    }
}

/// A guard reads as its lease: [`fencing_token`](Lease::fencing_token),
/// [`valid_until`](Lease::valid_until), [`lost`](Lease::lost) and the rest are
/// [`Lease`]'s, written once.
impl std::ops::Deref for LockGuard {
    type Target = Lease;
    fn deref(&self) -> &Lease {
        &self.lease
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.end_lease();
        self.finish();
        crate::backend::release_dropped(&self.inner, &self.lease.state);
    }
}

/// A guard type of another primitive (a permit, a reader's or writer's hold): a named
/// guard that derefs to the lock guard it wraps (and through it to its [`Lease`]) and
/// releases by value; `async` for the async API, `blocking` for [`crate::blocking`]. The
/// one guard macro of the crate.
macro_rules! named_guard {
    (@common $(#[$doc:meta])* $name:ident($guard:ty), $must_use:literal) => {
        $(#[$doc])*
        #[must_use = $must_use]
        #[derive(Debug)]
        pub struct $name($guard);

        impl std::ops::Deref for $name {
            type Target = $guard;
            fn deref(&self) -> &$guard {
                &self.0
            }
        }

        impl $name {
            /// The underlying guard (e.g. to keep guards of several kinds in one list).
            pub fn into_guard(self) -> $guard {
                self.0
            }
        }
    };
    ($(#[$doc:meta])* $name:ident($guard:ty), $must_use:literal, async) => {
        $crate::lock::guard::named_guard!(@common $(#[$doc])* $name($guard), $must_use);

        impl $name {
            /// Release this hold and report what the server found.
            ///
            /// # Cancel safety
            /// As for [`LockGuard::release`](crate::LockGuard::release): a dropped release
            /// finishes in the background.
            pub async fn release(self) -> $crate::Result<$crate::ReleaseOutcome> {
                self.0.release().await
            }
        }
    };
    ($(#[$doc:meta])* $name:ident($guard:ty), $must_use:literal, blocking) => {
        $crate::lock::guard::named_guard!(@common $(#[$doc])* $name($guard), $must_use);

        impl $name {
            /// Release this hold and report what the server found.
            ///
            /// # Blocking
            /// As for [`blocking::LockGuard::release`](crate::blocking::LockGuard::release).
            pub fn release(self) -> $crate::Result<$crate::ReleaseOutcome> {
                self.0.release()
            }
        }
    };
}
pub(crate) use named_guard;
