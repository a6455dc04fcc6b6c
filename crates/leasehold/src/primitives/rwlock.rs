//! Read-write locks: many readers or one writer, writer-preferring.
//!
//! The writer holds a lock hash like a plain lock (owner, token, request id). Readers are
//! a lease set: a sorted set of request id → expiry (ms, server clock) and a hash of their
//! fencing tokens, so every reader holds, renews and loses its own lease. A writer that
//! has to wait registers in a set of waiting writers with a short place lease, refreshed
//! while it waits; while any live writer is registered, new readers are refused (writer
//! preference, so a stream of readers cannot starve writers). A crashed waiting writer
//! stops refreshing and its place lapses, so it never blocks readers for longer than its
//! place lease. Readers and writers share one fencing counter. The writer's release and
//! the last reader's release hand the lock to the oldest waiting writer inside the
//! release script (waiting writers keep their arrival order and details at the server),
//! which holds it at once and confirms it by renewing, as a lock's waiter does; when no
//! writer waits, they are announced to the waiting readers on the lock's channel, as is
//! a waiting writer giving up.

use std::time::Duration;

use crate::error::Result;
use crate::lock::guard::LockGuard;
use crate::lock::{Lock, Mode};

/// A handle on the read-write lock called `name`. Cheap to clone; holds nothing by
/// itself. Get one from [`Client::rwlock`](crate::Client::rwlock).
///
/// Readers do not re-enter: a task that holds a read guard and asks for another while a
/// writer waits will wait behind that writer (writer preference), so do not nest reads.
///
/// ```no_run
/// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
/// let config = client.rwlock("config")?;
/// {
///     let r1 = config.read().await?;   // readers share the lock
///     let r2 = config.read().await?;
///     assert_ne!(r1.fencing_token(), r2.fencing_token());
/// }                                    // dropped: released in the background
/// let w = config.write().await?;      // waits for the readers, then excludes everyone
/// w.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RwLock {
    read: Lock,
    write: Lock,
}

crate::lock::guard::named_guard! {
    /// A reader's hold on a [`RwLock`], with a lease of its own. Derefs to [`LockGuard`]
    /// for the lease; dropping it releases in the background.
    ReadGuard(LockGuard), "the read lock is released in the background as soon as the guard is dropped", async
}

crate::lock::guard::named_guard! {
    /// The writer's hold on a [`RwLock`]. Derefs to [`LockGuard`] for the lease; dropping
    /// it releases in the background.
    WriteGuard(LockGuard), "the write lock is released in the background as soon as the guard is dropped", async
}

impl RwLock {
    pub(crate) fn new(read: Lock, write: Lock) -> Self {
        RwLock {
            read: read.with_mode(Mode::Read),
            write: write.with_mode(Mode::Write),
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        self.write.name()
    }

    fn both(self, f: impl Fn(Lock) -> Lock) -> Self {
        RwLock {
            read: f(self.read),
            write: f(self.write),
        }
    }

    /// Set the lease length of readers and writers (see [`Lock::ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.both(|l| l.ttl(ttl))
    }

    /// Turn the watchdog on or off (see [`Lock::auto_renew`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(self, on: bool) -> Self {
        self.both(|l| l.auto_renew(on))
    }

    /// How long [`read`](Self::read) and [`write`](Self::write) wait (see [`Lock::wait`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn wait(self, wait: Duration) -> Self {
        self.both(|l| l.wait(wait))
    }

    /// How long a waiting writer's place lives between refreshes (see
    /// [`Lock::place_ttl`]): a crashed waiting writer blocks new readers at most this long.
    /// Readers keep no place.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn place_ttl(mut self, place_ttl: Duration) -> Self {
        self.write = self.write.place_ttl(place_ttl);
        self
    }

    /// Check the settings of readers and writers, as every acquire does (see
    /// [`Lock::check`]).
    pub fn check(&self) -> Result<()> {
        self.read.check()?;
        self.write.check()
    }

    /// Acquire a read lock, waiting up to the wait setting (default 10 s) while a writer
    /// holds the lock or waits for it.
    ///
    /// # Cancel safety
    /// Cancel-safe as [`Lock::acquire`]: a possible grant of a dropped call is released in
    /// the background.
    pub async fn read(&self) -> Result<ReadGuard> {
        self.read.acquire().await.map(ReadGuard)
    }

    /// Acquire a read lock, waiting at most `wait`.
    ///
    /// # Cancel safety
    /// As for [`read`](Self::read).
    pub async fn read_timeout(&self, wait: Duration) -> Result<ReadGuard> {
        self.read.acquire_timeout(wait).await.map(ReadGuard)
    }

    /// Acquire a read lock only if no writer holds or waits for the lock now.
    ///
    /// # Cancel safety
    /// As for [`read`](Self::read).
    pub async fn try_read(&self) -> Result<ReadGuard> {
        self.read.try_acquire().await.map(ReadGuard)
    }

    /// Acquire the write lock, waiting up to the wait setting (default 10 s) for readers
    /// and another writer to leave. While it waits, new readers are refused.
    ///
    /// # Cancel safety
    /// Cancel-safe as [`Lock::acquire`]; cancelling also withdraws the writer's place, so
    /// readers are let in again at once.
    pub async fn write(&self) -> Result<WriteGuard> {
        self.write.acquire().await.map(WriteGuard)
    }

    /// Acquire the write lock, waiting at most `wait`.
    ///
    /// # Cancel safety
    /// As for [`write`](Self::write).
    pub async fn write_timeout(&self, wait: Duration) -> Result<WriteGuard> {
        self.write.acquire_timeout(wait).await.map(WriteGuard)
    }

    /// Acquire the write lock only if it is free of readers and writers now.
    ///
    /// # Cancel safety
    /// As for [`write`](Self::write).
    pub async fn try_write(&self) -> Result<WriteGuard> {
        self.write.try_acquire().await.map(WriteGuard)
    }
}
