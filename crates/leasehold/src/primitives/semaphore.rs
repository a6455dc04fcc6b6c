//! Semaphores: up to N holders per name, each permit a lease of its own.
//!
//! A semaphore's permits live in one sorted set at the server (request id → expiry, in ms
//! of the server clock) with a hash of their fencing tokens; every key shares the
//! semaphore's hash tag. Acquire is one script that first reclaims expired permits, then
//! grants a permit only while fewer than N unexpired ones exist, so there are never more
//! than N holders (counted against the acquirer's N: lowering N grants nothing until enough
//! holders have left, and revokes no one). Each permit is renewed by the client's watchdog
//! like a lock, carries its own fencing token and loss signal, and is released with a
//! check of its request id. Waiters queue at the server, and permits are granted in
//! arrival order: with f permits free only the f oldest live waiters may take one. A
//! release grants its permit to the oldest waiter inside the release script (a fresh
//! token, a lease of the claim window) and tells it on the semaphore's channel; the waiter
//! holds it at once and its renewal confirms it (see `PROTOCOL.md`, "Permit handoff"). An
//! expired permit is not announced, so waiters also sleep no longer than the earliest
//! permit's remaining lease, and a waiter refreshes its place every third of its lifetime
//! (a waiter that died holds up those behind it until its place lapses).
//!
//! One grant may take n permits at once ([`Semaphore::acquire_many`]): its request id says
//! n, and it is n members of the set with one expiry, so counting live members still
//! counts permits; it is granted only when its n and those of every waiter ahead fit.

use std::time::Duration;

use crate::error::Result;
use crate::lock::guard::LockGuard;
use crate::lock::{Lock, Mode};
use crate::validate::validate_capacity;

pub use crate::validate::MAX_PERMITS;

/// A handle on the semaphore called `name`, with N permits. Cheap to clone; holds no
/// permit by itself. Get one from [`Client::semaphore`](crate::Client::semaphore).
///
/// ```no_run
/// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
/// // At most 5 exports run at once, across every process using this name.
/// let exports = client.semaphore("exports", 5)?;
/// let permit = exports.acquire().await?;        // waits up to 10 s by default
/// let token = permit.fencing_token();           // this permit's own token
/// // ... work, while the watchdog renews the permit's lease ...
/// permit.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Semaphore {
    lock: Lock,
    capacity: u32,
}

crate::lock::guard::named_guard! {
    /// One permit of a [`Semaphore`], held until its lease runs out.
    ///
    /// Derefs to [`LockGuard`] for the lease: [`fencing_token`](crate::Lease::fencing_token),
    /// [`lost`](crate::Lease::lost), [`extend`](LockGuard::extend) and the rest. Dropping it
    /// releases the permit in the background; [`release`](Self::release) reports the
    /// outcome.
    Permit(LockGuard), "the permit is released in the background as soon as it is dropped", async
}

impl Permit {
    /// How many permits this grant holds (1, or n from
    /// [`Semaphore::acquire_many`]); [`release`](Self::release) returns them all.
    pub fn permits(&self) -> u32 {
        crate::protocol::permits_of(self.0.request_id())
    }
}

impl Semaphore {
    pub(crate) fn new(lock: Lock, capacity: u32) -> Result<Self> {
        validate_capacity(capacity)?;
        Ok(Semaphore {
            lock: lock.with_mode(Mode::Permit(capacity)),
            capacity,
        })
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        self.lock.name()
    }

    /// The number of permits this handle grants up to.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The same semaphore with `capacity` permits (1 to [`MAX_PERMITS`]). Changing the
    /// capacity is safe while permits are held: acquires through this handle grant only
    /// while fewer than `capacity` unexpired permits exist, and no holder is revoked.
    /// Every acquirer counts against its own capacity, so during a change the bound is the
    /// largest capacity still in use. Acquires check the capacity (see [`Lock::check`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn with_capacity(mut self, capacity: u32) -> Self {
        self.lock = self.lock.with_mode(Mode::Permit(capacity));
        self.capacity = capacity;
        self
    }

    /// Set each permit's lease length (see [`Lock::ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.lock = self.lock.ttl(ttl);
        self
    }

    /// Turn the watchdog on or off for permits (see [`Lock::auto_renew`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.lock = self.lock.auto_renew(on);
        self
    }

    /// Renew permits every `every` (see [`Lock::renew_every`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.lock = self.lock.renew_every(every);
        self
    }

    /// How long [`acquire`](Self::acquire) waits for a permit (see [`Lock::wait`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.lock = self.lock.wait(wait);
        self
    }

    /// Check the semaphore's settings together, as every acquire does (see
    /// [`Lock::check`]).
    pub fn check(&self) -> Result<()> {
        self.lock.check()
    }

    /// Take a permit, waiting up to the wait setting (default 10 s) for one to be free.
    ///
    /// Fails as [`Lock::acquire`] does: [`ErrorKind::TimedOut`](crate::ErrorKind::TimedOut),
    /// [`ErrorKind::Ambiguous`](crate::ErrorKind::Ambiguous) (the possible permit is
    /// released in the background), [`ErrorKind::Connection`](crate::ErrorKind::Connection).
    /// A retried request is granted once: a reply lost on the way never costs a permit.
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped after Redis may have granted a permit, that
    /// permit is released in the background; a permit never outlives its lease unreleased.
    pub async fn acquire(&self) -> Result<Permit> {
        self.lock.acquire().await.map(Permit)
    }

    /// Take a permit, waiting at most `wait`.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn acquire_timeout(&self, wait: Duration) -> Result<Permit> {
        self.lock.acquire_timeout(wait).await.map(Permit)
    }

    /// Take a permit if one is free now; fails with
    /// [`ErrorKind::Contended`](crate::ErrorKind::Contended) when all are held.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn try_acquire(&self) -> Result<Permit> {
        self.lock.try_acquire().await.map(Permit)
    }

    /// This handle with acquires of `permits` permits each.
    fn taking(&self, permits: u32) -> Lock {
        let mut lock = self.lock.clone();
        lock.permits = permits;
        lock
    }

    /// Take `permits` permits at once (1 to the capacity, at most
    /// [`MAX_PERMITS_PER_GRANT`](crate::MAX_PERMITS_PER_GRANT)), waiting up to the wait setting
    /// (default 10 s): one grant with one lease, one fencing token and one loss signal,
    /// released together. Grants go in arrival order: while this request waits, later
    /// requests — even for one permit — wait behind it, so a large request is never
    /// starved by small ones (Redisson's `acquire(permits)`, tokio's `acquire_many`).
    ///
    /// Fails as [`acquire`](Self::acquire) does, and with
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for 0 permits, or more
    /// than the capacity or [`MAX_PERMITS_PER_GRANT`](crate::MAX_PERMITS_PER_GRANT).
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
    /// let gpus = client.semaphore("gpus", 8)?;
    /// let big = gpus.acquire_many(3).await?; // three of the eight, or wait in line
    /// assert_eq!(big.permits(), 3);
    /// big.release().await?; // all three
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire): permits possibly granted to a dropped future are
    /// released in the background, all together.
    pub async fn acquire_many(&self, permits: u32) -> Result<Permit> {
        self.taking(permits).acquire().await.map(Permit)
    }

    /// Take `permits` permits at once, waiting at most `wait`.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn acquire_many_timeout(&self, permits: u32, wait: Duration) -> Result<Permit> {
        self.taking(permits).acquire_timeout(wait).await.map(Permit)
    }

    /// Take `permits` permits at once if they are free now and no one waits ahead; fails
    /// with [`ErrorKind::Contended`](crate::ErrorKind::Contended) otherwise.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn try_acquire_many(&self, permits: u32) -> Result<Permit> {
        self.taking(permits).try_acquire().await.map(Permit)
    }

    /// How many unexpired permits are held right now, by anyone.
    ///
    /// # Cancel safety
    /// Cancel-safe: a read-only script.
    pub async fn held(&self) -> Result<u32> {
        let inner = &self.lock.inner;
        inner.check_open()?;
        let inv = inner.scripts.sem_count.key(&self.lock.keys.lock);
        let budget = inner.conn.connect_timeout() + inner.conn.response_timeout();
        let n: i64 = inner.conn.eval(&inv, budget).await.map_err(|f| {
            crate::net::failure::failure_error(&format!("count {:?}", self.name()), f)
        })?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }
}
