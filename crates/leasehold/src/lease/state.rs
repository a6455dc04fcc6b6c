//! The state of one held lease, shared by its guard and its client's renewal scheduler:
//! the local deadline (`valid_until`, monotonic, with drift), and a cancellation token that
//! is cancelled exactly once, with a reason, when the lease is lost (a renewal was refused,
//! or the deadline passed without a confirmed renewal) or ended by its holder. Once lost,
//! always lost: a late confirmation never revives a lease its holder was told is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::valid_until;
use crate::protocol::keys::LockKeys;

/// How much earlier than `valid_until` a lease is declared lost, to absorb timer latency
/// and the time it takes to signal many leases that share a deadline: half its drift
/// allowance, at least 2 ms.
pub(crate) fn deadline_margin(ttl: Duration) -> Duration {
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
    /// The client reconnected to its server (one server, or the master Sentinel names) at
    /// the same address and found a new `run_id`: Redis restarted, and its keys may be gone
    /// (without persistence they are, and another holder may be granted the lock at once).
    ServerRestarted,
}

impl LostReason {
    /// The reason as a metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            LostReason::Expired => "expired",
            LostReason::HeldByOther => "held_by_other",
            LostReason::DeadlinePassed => "deadline_passed",
            LostReason::Released => "released",
            LostReason::ServerRestarted => "server_restarted",
        }
    }
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::Expired => "the lease expired or the lock was removed",
            LostReason::HeldByOther => "another owner holds the lock",
            LostReason::DeadlinePassed => "the lease deadline passed without a confirmed renewal",
            LostReason::Released => "the guard was released",
            LostReason::ServerRestarted => {
                "Redis restarted (a new run_id at the same address): the lock may be gone"
            }
        })
    }
}

/// The shared state of one held lease.
pub(crate) struct LeaseState {
    pub name: Arc<str>,
    /// The labels of this lease's metrics.
    pub series: Arc<crate::metrics::Series>,
    pub keys: Arc<LockKeys>,
    pub owner_id: String,
    pub req: String,
    pub ttl: Duration,
    pub renew_every: Option<Duration>,
    pub token: u64,
    /// When the request that granted the lease was sent: renewals are due at
    /// `granted_at + k × renew_every`.
    pub(crate) granted_at: Instant,
    /// The local deadline and how much earlier it is declared lost (the margin of the
    /// lease it was computed from: the claim window while provisional, else the TTL).
    valid_until: Mutex<(Instant, Duration)>,
    /// The lease is the short one a release gave a waiter it made the holder (see
    /// [`provisional`](Self::provisional)) and no renewal has confirmed it yet.
    provisional: AtomicBool,
    cancel: CancellationToken,
    reason: OnceLock<LostReason>,
    ended: AtomicBool,
    pub(crate) registered: AtomicBool,
}

impl LeaseState {
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: Arc<str>,
        series: Arc<crate::metrics::Series>,
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
            series,
            keys,
            owner_id,
            req,
            ttl,
            renew_every,
            token,
            granted_at: sent_at,
            valid_until: Mutex::new((valid_until(sent_at, ttl), deadline_margin(ttl))),
            provisional: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            reason: OnceLock::new(),
            ended: AtomicBool::new(false),
            registered: AtomicBool::new(false),
        }
    }

    pub(crate) fn valid_until(&self) -> Instant {
        self.valid_until.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The grant is a release's handoff: the server's lease of it ends at least `lease`
    /// after a moment after `granted_at` (the send of the try whose details the release
    /// used; see `held_at_once`). Until a renewal confirms it, the local deadline is that
    /// one; the renewer confirms it at once.
    pub(crate) fn provisional(self, lease: Duration) -> Self {
        *self.valid_until.lock().unwrap_or_else(|e| e.into_inner()) =
            (valid_until(self.granted_at, lease), deadline_margin(lease));
        self.provisional.store(true, Ordering::Release);
        self
    }

    /// Whether the lease still waits for the renewal that confirms a handoff's grant.
    pub(crate) fn is_provisional(&self) -> bool {
        self.provisional.load(Ordering::Acquire)
    }

    /// A request that made the lease last `ttl` was sent at `sent_at` and confirmed.
    pub(crate) fn confirm(&self, sent_at: Instant, ttl: Duration) {
        if self.reason.get().is_some() {
            return; // once lost, always lost
        }
        let new = valid_until(sent_at, ttl);
        let mut v = self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        if new > v.0 {
            *v = (new, deadline_margin(ttl));
        }
        self.provisional.store(false, Ordering::Release);
    }

    /// Declare the lease lost (first reason wins).
    pub(crate) fn lose(&self, reason: LostReason) {
        if self.reason.set(reason).is_ok() {
            // Cancel first: holders must learn it before anything else is done.
            self.cancel.cancel();
            if reason != LostReason::Released {
                tracing::debug!(lock = %self.name, %reason, "lease lost");
                crate::metrics::lease_lost(&self.series, reason.label());
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
        let (until, margin) = *self.valid_until.lock().unwrap_or_else(|e| e.into_inner());
        until.checked_sub(margin).unwrap_or(until)
    }
}

/// What an explicit [`LockGuard::release`](crate::LockGuard::release) found at the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// This hold was released. If the same [`Owner`](crate::Owner) still has other holds, the lock stays
    /// held by it; otherwise the lock is free and waiters were woken.
    Released,
    /// The lease had already expired (or this hold had already ended): nothing was
    /// removed.
    Expired,
    /// Another owner holds the lock now: nothing was removed.
    HeldByOther,
}

impl std::fmt::Display for ReleaseOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReleaseOutcome::Released => "released",
            ReleaseOutcome::Expired => "the lease had already expired; nothing was removed",
            ReleaseOutcome::HeldByOther => "another owner holds the lock now; nothing was removed",
        })
    }
}

impl ReleaseOutcome {
    /// Whether this hold was actually released by the call.
    pub fn is_released(self) -> bool {
        self == ReleaseOutcome::Released
    }
}
