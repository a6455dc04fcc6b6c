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

use crate::conn::Failure;
use crate::context::Inner;
use crate::error::{Error, NotHeldReason, Result};
use crate::failure::failure_error;
use crate::keys::{Kind, LockKeys};
use crate::lease::{LeaseState, LostReason, ReleaseOutcome};
use crate::owner::Owner;
use crate::protocol::{Extend, Kept, Release, Released};
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
        let inner = &self.inner;
        let st = &self.state;
        let lost = |reason: LostReason| {
            Error::new(
                crate::ErrorKind::LeaseLost(reason),
                format!("lock {:?}: the lease was already lost: {reason}", st.name),
            )
        };

        if !inner.nodes.is_empty() {
            if let Some(reason) = st.lost_reason() {
                return Err(lost(reason));
            }
            return crate::redlock::extend(inner, st, ttl).await;
        }
        let resolve_by = Instant::now() + 2 * inner.conn.response_timeout();
        let mut last: Option<Failure> = None;
        let mut first_send = None;
        while resolve_by.saturating_duration_since(Instant::now()) >= crate::conn::MIN_BUDGET {
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
                Err(Failure::Server(e)) => {
                    return Err(Error::from_redis(&format!("extend {:?}", st.name), e))
                }
                Err(f) => {
                    if matches!(f, Failure::NotSent(_)) {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    last = Some(f);
                }
            }
        }
        Err(failure_error(
            &format!("extend {:?}", st.name),
            last.unwrap_or(Failure::Unknown(None)),
        ))
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
        if !inner.nodes.is_empty() {
            let outcome = crate::redlock::release(&inner, &st, lease_ok_at_send).await;
            // Nodes that did not answer are released in the background already.
            self.finish();
            return outcome;
        }
        let result = release_once(&inner, &st.keys, &st.owner_id, &st.req, resolve_by).await;
        match result {
            Ok((released, saw_unknown)) => {
                self.finish();
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
                    notify_local(&inner, &st.keys);
                }
                tracing::debug!(lock = %st.name, outcome = ?outcome, "release");
                Ok(outcome)
            }
            Err(f) => {
                // Keep trying in the background; the lease expires by itself at worst.
                let err = failure_error(&format!("release {:?}", st.name), f);
                tracing::warn!(lock = %st.name, error = %err, "release failed; retrying in the background");
                Err(err)
            }
        }
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
        let st = &self.state;
        if !self.inner.nodes.is_empty() {
            crate::redlock::release_dropped(&self.inner, st);
            return;
        }
        let fut = release_in_background(
            self.inner.clone(),
            st.keys.clone(),
            st.owner_id.clone(),
            st.req.clone(),
            st.valid_until() + crate::lease::drift(st.ttl) + Duration::from_millis(100),
            false,
        );
        self.inner.spawn_background(fut);
    }
}

/// Wake this client's waiters of a lock it just freed, without waiting for the round trip
/// through Redis; not for fair locks, whose release names the one waiter it goes to.
fn notify_local(inner: &Inner, keys: &LockKeys) {
    if keys.kind != Kind::FairLock {
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
    let mut saw_unknown = false;
    let mut last = None;
    let release = Release {
        keys,
        owner_id,
        req,
    };
    while resolve_by.saturating_duration_since(Instant::now()) >= crate::conn::MIN_BUDGET {
        let mut inv = release.call(&inner.scripts);
        let budget = resolve_by.saturating_duration_since(Instant::now());
        match inner.conn.eval_tagged(&mut inv, budget).await {
            Ok(reply) => return Ok((Released::decode(&reply), saw_unknown)),
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
    Err(last.unwrap_or(Failure::Unknown(None)))
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
    loop {
        let resolve_by = Instant::now() + 2 * inner.conn.response_timeout();
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
                if matches!(f, Failure::Server(_)) || Instant::now() + pause >= give_up {
                    tracing::warn!(lock = %keys.lock, cause = %f.describe(), "background release gave up; the lease will expire by its TTL");
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
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
