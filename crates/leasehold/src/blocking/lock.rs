//! Blocking locks and their guards: [`Lock`] runs the async lock's acquires to completion
//! on the client's runtime; [`LockGuard`] wraps the async guard, dropping it (which starts
//! the background release on the runtime) before its share of the runtime.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::error::Result;
use crate::{Lease, LostReason, Owner, ReleaseOutcome};

/// A handle on one named lock, for synchronous code: the blocking counterpart of
/// [`crate::Lock`].
///
/// Cheap to clone (and `Send + Sync`): share it with threads. Holds no lock by itself.
#[derive(Clone)]
pub struct Lock {
    pub(super) lock: crate::Lock,
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Lock").field(&self.lock).finish()
    }
}

impl Lock {
    fn map(self, f: impl FnOnce(crate::Lock) -> crate::Lock) -> Self {
        Lock {
            lock: f(self.lock),
            shared: self.shared,
        }
    }

    /// Check this lock's settings together (see [`crate::Lock::check`]).
    pub fn check(&self) -> Result<()> {
        self.lock.check()
    }

    fn guard(&self, guard: crate::LockGuard) -> LockGuard {
        LockGuard {
            guard,
            shared: self.shared.clone(),
        }
    }

    /// Make this a fair lock (see [`crate::Lock::fair`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn fair(self) -> Self {
        self.map(crate::Lock::fair)
    }

    /// Set the lease length (see [`crate::Lock::ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.map(|l| l.ttl(ttl))
    }

    /// Turn the watchdog on or off (see [`crate::Lock::auto_renew`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(self, on: bool) -> Self {
        self.map(|l| l.auto_renew(on))
    }

    /// Renew every `every` (see [`crate::Lock::renew_every`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn renew_every(self, every: Duration) -> Self {
        self.map(|l| l.renew_every(every))
    }

    /// How long [`acquire`](Self::acquire) waits (see [`crate::Lock::wait`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn wait(self, wait: Duration) -> Self {
        self.map(|l| l.wait(wait))
    }

    /// Label the holder (see [`crate::Lock::label`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn label(self, label: &str) -> Self {
        self.map(|l| l.label(label))
    }

    /// How long a waiting caller's place lives at the server (see
    /// [`crate::Lock::place_ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn place_ttl(self, place_ttl: Duration) -> Self {
        self.map(|l| l.place_ttl(place_ttl))
    }

    /// Require replica acknowledgements of every grant (see
    /// [`crate::Lock::replica_acks`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn replica_acks(self, replicas: u32, timeout: Duration) -> Self {
        self.map(|l| l.replica_acks(replicas, timeout))
    }

    /// Acquire as `owner`, so that acquires by the same owner re-enter (see [`Owner`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn owner(self, owner: &Owner) -> Self {
        self.map(|l| l.owner(owner))
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.lock.name()
    }

    /// Whether this lock is fair.
    pub fn is_fair(&self) -> bool {
        self.lock.is_fair()
    }

    /// The lease length used by acquires.
    pub fn lease_ttl(&self) -> Duration {
        self.lock.lease_ttl()
    }

    /// The renewal interval acquires will use, if the watchdog is on.
    pub fn effective_renewal(&self) -> Option<Duration> {
        self.lock.effective_renewal()
    }

    /// The Redis key of the lock.
    pub fn redis_key(&self) -> &str {
        self.lock.redis_key()
    }

    /// The Redis key of the lock's fencing counter.
    pub fn fence_key(&self) -> &str {
        self.lock.fence_key()
    }

    /// Acquire the lock, waiting up to the lock's wait setting (default 10 s). Fails as
    /// [`crate::Lock::acquire`] does.
    ///
    /// # Blocking
    /// Blocks until the lock is granted or the wait runs out (plus, if an outcome is
    /// unknown, up to twice the response timeout to resolve it). Other threads of this
    /// process wait in line behind it, first come, first served. Panics if called from
    /// async code (see the [module docs](crate::blocking)).
    pub fn acquire(&self) -> Result<LockGuard> {
        self.shared
            .block_on(self.lock.acquire())
            .map(|g| self.guard(g))
    }

    /// Acquire the lock, waiting at most `wait`.
    ///
    /// # Blocking
    /// As for [`acquire`](Self::acquire), with `wait` as the wait setting.
    pub fn acquire_timeout(&self, wait: Duration) -> Result<LockGuard> {
        self.shared
            .block_on(self.lock.acquire_timeout(wait))
            .map(|g| self.guard(g))
    }

    /// Try once, without waiting for a holder: fails with
    /// [`ErrorKind::Contended`](crate::ErrorKind::Contended) if the lock is held (see
    /// [`crate::Lock::try_acquire`]).
    ///
    /// # Blocking
    /// Blocks for one round trip (up to twice the response timeout if its outcome is
    /// unknown), never for a holder. Panics if called from async code (see the
    /// [module docs](crate::blocking)).
    pub fn try_acquire(&self) -> Result<LockGuard> {
        self.shared
            .block_on(self.lock.try_acquire())
            .map(|g| self.guard(g))
    }
}

/// Proof of holding a lock, until its lease runs out: the blocking counterpart of
/// [`crate::LockGuard`].
///
/// `Send`: move it to another thread freely. Dropping it releases the hold in the
/// background, on the client's runtime, whatever thread drops it; call
/// [`release`](Self::release) to learn the outcome. The watchdog renews its lease on the
/// runtime's threads; [`is_lost`](crate::Lease::is_lost), [`wait_lost`](Self::wait_lost) and
/// [`cancellation_token`](crate::Lease::cancellation_token) tell when the lease is lost.
#[must_use = "the lock is released in the background as soon as the guard is dropped"]
pub struct LockGuard {
    // Field order matters: the async guard is dropped (spawning its background release on
    // the runtime) before this guard's share of the runtime.
    pub(super) guard: crate::LockGuard,
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::LockGuard")
            .field(&self.guard)
            .finish()
    }
}

/// The guard reads as its lease: [`fencing_token`](Lease::fencing_token),
/// [`valid_until`](Lease::valid_until), [`is_lost`](Lease::is_lost),
/// [`cancellation_token`](Lease::cancellation_token) and the rest are [`Lease`]'s
/// (its synchronous getters work from any thread).
impl std::ops::Deref for LockGuard {
    type Target = Lease;
    fn deref(&self) -> &Lease {
        &self.guard
    }
}

impl LockGuard {
    /// The owner's hold count right after this hold was granted (1 unless re-entered).
    pub fn hold_count(&self) -> u32 {
        self.guard.hold_count()
    }

    /// A cheap, clonable view of this lease (fencing token, deadline, loss) for other
    /// threads. It does not keep the lock held, nor the client's runtime alive; its
    /// synchronous getters work anywhere.
    pub fn lease(&self) -> Lease {
        self.guard.lease()
    }

    /// Wait until the lease is lost, at most `timeout`; returns why, or `None` if it is
    /// still held when `timeout` passes. Loss is declared no later than
    /// [`valid_until`](Lease::valid_until) (see [`Lease::lost`]).
    ///
    /// # Blocking
    /// Returns at once if the lease is already lost; otherwise blocks at most `timeout`.
    /// Panics if called from async code (see the [module docs](crate::blocking)).
    pub fn wait_lost(&self, timeout: Duration) -> Option<LostReason> {
        if let Some(reason) = self.lost_reason() {
            return Some(reason);
        }
        self.shared
            .block_on(async { tokio::time::timeout(timeout, self.guard.lost()).await.ok() })
    }

    /// Make the lease last at least `ttl` from now (see [`crate::LockGuard::extend`]).
    ///
    /// # Blocking
    /// Blocks for one round trip, at most twice the response timeout. Panics if called
    /// from async code (see the [module docs](crate::blocking)).
    pub fn extend(&self, ttl: Duration) -> Result<()> {
        self.shared.block_on(self.guard.extend(ttl))
    }

    /// Release this hold and report what the server found (see
    /// [`crate::LockGuard::release`]).
    ///
    /// # Blocking
    /// Blocks for one round trip, at most twice the response timeout; if the outcome is
    /// still unknown then, it fails and the release goes on in the background. Panics if
    /// called from async code (see the [module docs](crate::blocking)).
    pub fn release(self) -> Result<ReleaseOutcome> {
        let LockGuard { guard, shared } = self;
        shared.block_on(guard.release())
    }
}
