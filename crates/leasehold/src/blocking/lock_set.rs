//! Blocking lock sets: [`LockSet`] runs the async set's acquires to completion on the
//! client's runtime; [`LockSetGuard`] wraps the async guard, dropping it (which starts the
//! members' background releases on the runtime) before its share of the runtime.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::Result;
use crate::{LostReason, Owner, ReleaseOutcome};

/// A handle on several locks taken together, all or none, for synchronous code: the
/// blocking counterpart of [`crate::LockSet`] (members taken in sorted order, so callers
/// listing them in any order never deadlock). Cheap to clone; holds nothing by itself.
#[derive(Clone)]
pub struct LockSet {
    pub(super) set: crate::LockSet,
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for LockSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::LockSet").field(&self.set).finish()
    }
}

impl LockSet {
    fn map(self, f: impl FnOnce(crate::LockSet) -> crate::LockSet) -> Self {
        LockSet {
            set: f(self.set),
            shared: self.shared,
        }
    }

    fn guard(&self, guard: crate::LockSetGuard) -> LockSetGuard {
        LockSetGuard {
            guard,
            shared: self.shared.clone(),
        }
    }

    /// The members' names, in the order they are taken (the canonical order).
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.set.names()
    }

    /// Each member's lease length (see [`crate::LockSet::ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.map(|s| s.ttl(ttl))
    }

    /// Turn the watchdog on or off for every member (see [`crate::LockSet::auto_renew`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(self, on: bool) -> Self {
        self.map(|s| s.auto_renew(on))
    }

    /// How long [`acquire`](Self::acquire) waits for the whole set (see
    /// [`crate::LockSet::wait`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn wait(self, wait: Duration) -> Self {
        self.map(|s| s.wait(wait))
    }

    /// Store `label` with every member (see [`crate::LockSet::label`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn label(self, label: &str) -> Self {
        self.map(|s| s.label(label))
    }

    /// Acquire every member as `owner` (see [`crate::LockSet::owner`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn owner(self, owner: &Owner) -> Self {
        self.map(|s| s.owner(owner))
    }

    /// Check the settings of every member (see [`crate::LockSet::check`]).
    pub fn check(&self) -> Result<()> {
        self.set.check()
    }

    /// Acquire every member, waiting up to the set's wait setting (default 10 s) for all
    /// of them together. Fails as [`crate::LockSet::acquire`] does, holding nothing.
    ///
    /// # Blocking
    /// Blocks until every member is granted or the wait runs out (plus, if an outcome is
    /// unknown, up to twice the response timeout to resolve it). Panics if called from
    /// async code (see the [module docs](crate::blocking)).
    pub fn acquire(&self) -> Result<LockSetGuard> {
        self.shared
            .block_on(self.set.acquire())
            .map(|g| self.guard(g))
    }

    /// Acquire every member, waiting at most `wait` for all of them together.
    ///
    /// # Blocking
    /// As for [`acquire`](Self::acquire), with `wait` as the wait setting.
    pub fn acquire_timeout(&self, wait: Duration) -> Result<LockSetGuard> {
        self.shared
            .block_on(self.set.acquire_timeout(wait))
            .map(|g| self.guard(g))
    }

    /// Try once, without waiting: fails with
    /// [`ErrorKind::Contended`](crate::ErrorKind::Contended) naming a held member.
    ///
    /// # Blocking
    /// Blocks for a round trip per script (one on one server), never for a holder.
    /// Panics if called from async code (see the [module docs](crate::blocking)).
    pub fn try_acquire(&self) -> Result<LockSetGuard> {
        self.shared
            .block_on(self.set.try_acquire())
            .map(|g| self.guard(g))
    }
}

/// Proof of holding every lock of a [`LockSet`]: the blocking counterpart of
/// [`crate::LockSetGuard`]. Dropping it releases every member in the background, on the
/// client's runtime; [`release`](Self::release) reports each outcome.
#[must_use = "the locks are released in the background as soon as the guard is dropped"]
pub struct LockSetGuard {
    // Field order matters: the async guard is dropped (spawning its background releases
    // on the runtime) before this guard's share of the runtime.
    guard: crate::LockSetGuard,
    shared: Arc<Shared>,
}

impl fmt::Debug for LockSetGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::LockSetGuard")
            .field(&self.guard)
            .finish()
    }
}

impl LockSetGuard {
    /// Each member's name and fencing token, in canonical order.
    pub fn fencing_tokens(&self) -> Vec<(String, u64)> {
        self.guard
            .fencing_tokens()
            .map(|(n, t)| (n.to_string(), t))
            .collect()
    }

    /// Each member's lease (fencing token, deadline, loss), in canonical order.
    pub fn leases(&self) -> Vec<crate::Lease> {
        self.guard.members().iter().map(|g| g.lease()).collect()
    }

    /// Whether any member's lease has been declared lost.
    pub fn is_lost(&self) -> bool {
        self.guard.is_lost()
    }

    /// A token cancelled when any member's lease is lost, released or dropped.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.guard.cancellation_token()
    }

    /// Wait until any member's lease is lost, at most `timeout`; returns that member's
    /// name and why, or `None` if every member is still held when `timeout` passes.
    ///
    /// # Blocking
    /// Blocks at most `timeout`. Panics if called from async code (see the
    /// [module docs](crate::blocking)).
    pub fn wait_lost(&self, timeout: Duration) -> Option<(String, LostReason)> {
        self.shared.block_on(async {
            tokio::time::timeout(timeout, self.guard.lost())
                .await
                .ok()
                .map(|(name, reason)| (name.to_string(), reason))
        })
    }

    /// Release every member and report each outcome (see
    /// [`crate::LockSetGuard::release`]).
    ///
    /// # Blocking
    /// Blocks for the releases' round trips, at most twice the response timeout; members
    /// whose outcome is still unknown then are released in the background. Panics if
    /// called from async code (see the [module docs](crate::blocking)).
    pub fn release(self) -> Result<Vec<(String, ReleaseOutcome)>> {
        let LockSetGuard { guard, shared } = self;
        shared.block_on(guard.release())
    }
}
