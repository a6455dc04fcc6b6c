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
/// passed without a confirmed renewal — through [`lost`](Self::lost) and
/// [`cancellation_token`](Self::cancellation_token), never through a panic.
#[must_use = "the lock is released in the background as soon as the guard is dropped"]
pub struct LockGuard {
    inner: Arc<Inner>,
    state: Arc<LeaseState>,
    owner: Option<Owner>,
    hold_key: String,
    count: u32,
    granted_at: Instant,
    done: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("name", &self.state.name)
            .field("fencing_token", &self.state.token)
            .field("hold_count", &self.count)
            .field("remaining", &self.remaining())
            .field("auto_renew", &self.state.renew_every)
            .field("lost", &self.state.lost_reason())
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
        LockGuard {
            inner,
            state,
            owner,
            hold_key,
            count,
            granted_at: Instant::now(),
            done: false,
        }
    }

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

    /// The owner's hold count right after this hold was granted (1 unless re-entered).
    pub fn hold_count(&self) -> u32 {
        self.count
    }

    /// The owner id stored with the lock.
    pub fn owner_id(&self) -> &str {
        &self.state.owner_id
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
    /// (through [`lease`](Self::lease) handles).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes; dropping the future changes nothing.
    pub async fn lost(&self) -> LostReason {
        self.state.lost().await
    }

    /// A token cancelled when the lease is lost, or when this guard is released or
    /// dropped. Hand it to work that must stop when the lock can no longer be relied on.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.state.cancellation_token()
    }

    /// A cheap, clonable view of this lease for other tasks: fencing token, deadline and
    /// the loss signal.
    pub fn lease(&self) -> Lease {
        Lease {
            state: self.state.clone(),
        }
    }

    /// Make the lease last at least `ttl` from now (it is never shortened).
    ///
    /// Fails with [`ErrorKind::NotHeld`](crate::ErrorKind::NotHeld) — expired, or held by
    /// another owner — when the hold is gone; the guard then holds nothing.
    ///
    /// # Cancel safety
    /// Cancel-safe: extending is idempotent at the server; a cancelled extend may or may
    /// not have lengthened the lease, and [`valid_until`](Self::valid_until) keeps the
    /// older, conservative deadline.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        validate_ttl(ttl)?;
        self.inner.check_open()?;
        crate::backend::extend(&self.inner, &self.state, ttl).await
    }

    /// Release this hold and report what the server found.
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped before the outcome is known, the release is
    /// finished in the background (tracked by [`Client::shutdown`](crate::Client::shutdown)).
    pub async fn release(mut self) -> Result<ReleaseOutcome> {
        let inner = self.inner.clone();
        let st = self.state.clone();
        let resolve_by = Instant::now() + 2 * inner.conn.response_timeout();
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
        if !self.state.is_ended() {
            self.state.end();
            self.inner.renewer.ended(&self.state);
            crate::metrics::held(&self.state.name, self.granted_at.elapsed());
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

    /// The fencing token of the grant.
    pub fn fencing_token(&self) -> u64 {
        self.state.token
    }

    /// See [`LockGuard::valid_until`].
    pub fn valid_until(&self) -> std::time::Instant {
        self.state.valid_until().into_std()
    }

    /// See [`LockGuard::remaining`].
    pub fn remaining(&self) -> Duration {
        self.state
            .valid_until()
            .saturating_duration_since(Instant::now())
    }

    /// Whether the lease was lost or ended.
    pub fn is_lost(&self) -> bool {
        self.state.lost_reason().is_some()
    }

    /// Why the lease was lost or ended, if it was.
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.state.lost_reason()
    }

    /// Resolves when the lease is lost, or ended by release or drop of its guard
    /// ([`LostReason::Released`]).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes.
    pub async fn lost(&self) -> LostReason {
        self.state.lost().await
    }

    /// See [`LockGuard::cancellation_token`].
    pub fn cancellation_token(&self) -> CancellationToken {
        self.state.cancellation_token()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.end_lease();
        self.finish();
        crate::backend::release_dropped(&self.inner, &self.state);
    }
}

/// A guard type of another primitive (a permit, a reader's or writer's hold): a named
/// [`LockGuard`] that derefs to it and releases by value.
macro_rules! lease_guard {
    ($(#[$doc:meta])* $name:ident, $must_use:literal) => {
        $(#[$doc])*
        #[must_use = $must_use]
        #[derive(Debug)]
        pub struct $name(LockGuard);

        impl std::ops::Deref for $name {
            type Target = LockGuard;
            fn deref(&self) -> &LockGuard {
                &self.0
            }
        }

        impl $name {
            /// Release this hold and report what the server found.
            ///
            /// # Cancel safety
            /// As for [`LockGuard::release`]: a dropped release finishes in the background.
            pub async fn release(self) -> $crate::Result<$crate::ReleaseOutcome> {
                self.0.release().await
            }

            /// The underlying guard (e.g. to keep guards of several kinds in one list).
            pub fn into_guard(self) -> LockGuard {
                self.0
            }
        }
    };
}
pub(crate) use lease_guard;
