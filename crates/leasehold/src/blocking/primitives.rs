//! Blocking semaphores and read-write locks, and their guards: each a named blocking
//! [`LockGuard`] over the async guard, sharing the client's runtime.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{LockGuard, Shared};
use crate::error::Result;

crate::lock::guard::named_guard! {
    /// One permit of a blocking [`Semaphore`], held until its lease runs out: the blocking
    /// counterpart of [`crate::Permit`]. Derefs to [`LockGuard`] for the lease; dropping
    /// it releases the permit in the background.
    Permit(LockGuard), "the permit is released in the background as soon as it is dropped", blocking
}

crate::lock::guard::named_guard! {
    /// A reader's hold on a blocking [`RwLock`]: the blocking counterpart of
    /// [`crate::ReadGuard`]. Derefs to [`LockGuard`] for the lease; dropping it releases in
    /// the background.
    ReadGuard(LockGuard), "the read lock is released in the background as soon as the guard is dropped", blocking
}

crate::lock::guard::named_guard! {
    /// The writer's hold on a blocking [`RwLock`]: the blocking counterpart of
    /// [`crate::WriteGuard`]. Derefs to [`LockGuard`] for the lease; dropping it releases
    /// in the background.
    WriteGuard(LockGuard), "the write lock is released in the background as soon as the guard is dropped", blocking
}

/// A handle on the semaphore called `name`, for synchronous code: the blocking counterpart
/// of [`crate::Semaphore`]. Cheap to clone; holds no permit by itself.
#[derive(Clone)]
pub struct Semaphore {
    pub(super) sem: crate::Semaphore,
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Semaphore")
            .field(&self.sem)
            .finish()
    }
}

impl Semaphore {
    fn map(self, f: impl FnOnce(crate::Semaphore) -> crate::Semaphore) -> Self {
        Semaphore {
            sem: f(self.sem),
            shared: self.shared,
        }
    }

    /// Check the semaphore's settings together (see [`crate::Lock::check`]).
    pub fn check(&self) -> Result<()> {
        self.sem.check()
    }

    fn permit(&self, permit: crate::Permit) -> Permit {
        Permit(LockGuard {
            guard: permit.into_guard(),
            shared: self.shared.clone(),
        })
    }

    /// The semaphore's name.
    pub fn name(&self) -> &str {
        self.sem.name()
    }

    /// The number of permits this handle grants up to.
    pub fn capacity(&self) -> u32 {
        self.sem.capacity()
    }

    /// The same semaphore with `capacity` permits (see
    /// [`crate::Semaphore::with_capacity`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn with_capacity(self, capacity: u32) -> Self {
        self.map(|s| s.with_capacity(capacity))
    }

    /// Set each permit's lease length (see [`crate::Lock::ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.map(|s| s.ttl(ttl))
    }

    /// Turn the watchdog on or off for permits (see [`crate::Lock::auto_renew`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(self, on: bool) -> Self {
        self.map(|s| s.auto_renew(on))
    }

    /// Renew permits every `every` (see [`crate::Lock::renew_every`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn renew_every(self, every: Duration) -> Self {
        self.map(|s| s.renew_every(every))
    }

    /// How long [`acquire`](Self::acquire) waits for a permit (see [`crate::Lock::wait`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn wait(self, wait: Duration) -> Self {
        self.map(|s| s.wait(wait))
    }

    /// Take a permit, waiting up to the wait setting (default 10 s) for one to be free.
    /// Fails as [`crate::Semaphore::acquire`] does.
    ///
    /// # Blocking
    /// Blocks until a permit is granted or the wait runs out (plus, if an outcome is
    /// unknown, up to twice the response timeout to resolve it). Panics if called from
    /// async code (see the [module docs](crate::blocking)).
    pub fn acquire(&self) -> Result<Permit> {
        self.shared
            .block_on(self.sem.acquire())
            .map(|p| self.permit(p))
    }

    /// Take a permit, waiting at most `wait`.
    ///
    /// # Blocking
    /// As for [`acquire`](Self::acquire), with `wait` as the wait setting.
    pub fn acquire_timeout(&self, wait: Duration) -> Result<Permit> {
        self.shared
            .block_on(self.sem.acquire_timeout(wait))
            .map(|p| self.permit(p))
    }

    /// Take a permit if one is free now; fails with
    /// [`ErrorKind::Contended`](crate::ErrorKind::Contended) when all are held.
    ///
    /// # Blocking
    /// Blocks for one round trip (up to twice the response timeout if its outcome is
    /// unknown), never for a holder. Panics if called from async code (see the
    /// [module docs](crate::blocking)).
    pub fn try_acquire(&self) -> Result<Permit> {
        self.shared
            .block_on(self.sem.try_acquire())
            .map(|p| self.permit(p))
    }

    /// Take `permits` permits at once, in arrival order, waiting up to the wait setting.
    /// Fails as [`crate::Semaphore::acquire_many`] does.
    ///
    /// # Blocking
    /// As for [`acquire`](Self::acquire).
    pub fn acquire_many(&self, permits: u32) -> Result<Permit> {
        self.shared
            .block_on(self.sem.acquire_many(permits))
            .map(|p| self.permit(p))
    }

    /// Take `permits` permits at once if they are free now and no one waits ahead.
    ///
    /// # Blocking
    /// As for [`try_acquire`](Self::try_acquire).
    pub fn try_acquire_many(&self, permits: u32) -> Result<Permit> {
        self.shared
            .block_on(self.sem.try_acquire_many(permits))
            .map(|p| self.permit(p))
    }

    /// How many unexpired permits are held right now, by anyone.
    ///
    /// # Blocking
    /// Blocks for one round trip, at most the connect timeout plus the response timeout.
    /// Panics if called from async code (see the [module docs](crate::blocking)).
    pub fn held(&self) -> Result<u32> {
        self.shared.block_on(self.sem.held())
    }
}

/// A handle on the read-write lock called `name`, for synchronous code: the blocking
/// counterpart of [`crate::RwLock`]. Cheap to clone; holds nothing by itself.
///
/// Readers do not re-enter: a thread that holds a read guard and asks for another while a
/// writer waits will wait behind that writer, so do not nest reads.
#[derive(Clone)]
pub struct RwLock {
    pub(super) rw: crate::RwLock,
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for RwLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::RwLock").field(&self.rw).finish()
    }
}

impl RwLock {
    fn map(self, f: impl FnOnce(crate::RwLock) -> crate::RwLock) -> Self {
        RwLock {
            rw: f(self.rw),
            shared: self.shared,
        }
    }

    /// Check the settings of readers and writers (see [`crate::Lock::check`]).
    pub fn check(&self) -> Result<()> {
        self.rw.check()
    }

    fn guard(&self, guard: crate::LockGuard) -> LockGuard {
        LockGuard {
            guard,
            shared: self.shared.clone(),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.rw.name()
    }

    /// Set the lease length of readers and writers (see [`crate::RwLock::ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.map(|r| r.ttl(ttl))
    }

    /// Turn the watchdog on or off (see [`crate::RwLock::auto_renew`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(self, on: bool) -> Self {
        self.map(|r| r.auto_renew(on))
    }

    /// How long [`read`](Self::read) and [`write`](Self::write) wait (see
    /// [`crate::RwLock::wait`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn wait(self, wait: Duration) -> Self {
        self.map(|r| r.wait(wait))
    }

    /// How long a waiting writer's place lives between refreshes (see
    /// [`crate::RwLock::place_ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn place_ttl(self, place_ttl: Duration) -> Self {
        self.map(|r| r.place_ttl(place_ttl))
    }

    /// Acquire a read lock, waiting up to the wait setting (default 10 s) while a writer
    /// holds the lock or waits for it.
    ///
    /// # Blocking
    /// Blocks until granted or the wait runs out (plus, if an outcome is unknown, up to
    /// twice the response timeout to resolve it). Panics if called from async code (see
    /// the [module docs](crate::blocking)).
    pub fn read(&self) -> Result<ReadGuard> {
        self.shared
            .block_on(self.rw.read())
            .map(|g| ReadGuard(self.guard(g.into_guard())))
    }

    /// Acquire a read lock, waiting at most `wait`.
    ///
    /// # Blocking
    /// As for [`read`](Self::read), with `wait` as the wait setting.
    pub fn read_timeout(&self, wait: Duration) -> Result<ReadGuard> {
        self.shared
            .block_on(self.rw.read_timeout(wait))
            .map(|g| ReadGuard(self.guard(g.into_guard())))
    }

    /// Acquire a read lock only if no writer holds or waits for the lock now.
    ///
    /// # Blocking
    /// Blocks for one round trip (up to twice the response timeout if its outcome is
    /// unknown), never for a holder. Panics if called from async code (see the
    /// [module docs](crate::blocking)).
    pub fn try_read(&self) -> Result<ReadGuard> {
        self.shared
            .block_on(self.rw.try_read())
            .map(|g| ReadGuard(self.guard(g.into_guard())))
    }

    /// Acquire the write lock, waiting up to the wait setting (default 10 s) for readers
    /// and another writer to leave. While it waits, new readers are refused.
    ///
    /// # Blocking
    /// As for [`read`](Self::read).
    pub fn write(&self) -> Result<WriteGuard> {
        self.shared
            .block_on(self.rw.write())
            .map(|g| WriteGuard(self.guard(g.into_guard())))
    }

    /// Acquire the write lock, waiting at most `wait`.
    ///
    /// # Blocking
    /// As for [`write`](Self::write), with `wait` as the wait setting.
    pub fn write_timeout(&self, wait: Duration) -> Result<WriteGuard> {
        self.shared
            .block_on(self.rw.write_timeout(wait))
            .map(|g| WriteGuard(self.guard(g.into_guard())))
    }

    /// Acquire the write lock only if it is free of readers and writers now.
    ///
    /// # Blocking
    /// As for [`try_read`](Self::try_read).
    pub fn try_write(&self) -> Result<WriteGuard> {
        self.shared
            .block_on(self.rw.try_write())
            .map(|g| WriteGuard(self.guard(g.into_guard())))
    }
}
