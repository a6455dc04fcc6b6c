//! A synchronous API over the async library, for code that has no async runtime.
//!
//! A blocking [`Client`] owns a small multi-thread Tokio runtime (two worker threads named
//! `leasehold-blocking`) and an async [`crate::Client`] built on it. Its [`Lock`],
//! [`Semaphore`] and [`RwLock`] handles mirror the async ones, and their guards
//! ([`LockGuard`], [`Permit`], [`ReadGuard`], [`WriteGuard`]) release on drop like the async
//! guards do. Every method that talks to Redis runs the async method to completion on the
//! runtime while the calling thread waits, so results, errors, fencing tokens, renewal and
//! loss detection are exactly those of the async API.
//!
//! Invariants: the runtime lives as long as *any* handle or guard of its client (they share
//! it through one `Arc`), so a guard may outlive the client that issued it and its release
//! on drop always has a runtime to run on; a guard's async half is dropped (spawning its
//! background release) before its share of the runtime; and when the last handle or guard
//! goes, pending background releases are drained (for at most [`DRAIN_ON_DROP`]) before the
//! runtime stops. The watchdog renews leases on the runtime's own threads, so a holder's
//! thread may block or compute for as long as it likes without losing its lease.
//!
//! # Blocking behaviour
//!
//! Each method documents how long it may block. Call them from plain threads (or, in an
//! async program, from [`tokio::task::spawn_blocking`]). Never call them from async code
//! (a task, or a future run by `block_on`): like [`tokio::runtime::Runtime::block_on`],
//! they **panic** there, because blocking would stall the executor's thread. Use
//! [`crate::Client`] in async code. Dropping a handle or guard never panics, in any
//! context (see [`Client`] for what dropping the last one does).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! fn main() -> leasehold::Result<()> {
//!     let client = leasehold::blocking::Client::new("redis://127.0.0.1:6379/")?;
//!     let lock = client.lock("invoices/2026-11")?.ttl(Duration::from_secs(30));
//!
//!     let guard = lock.acquire()?;               // blocks up to 10 s by default
//!     let token = guard.fencing_token();         // hand this to the resource you protect
//!     println!("holding with token {token}, {:?} left", guard.remaining());
//!     guard.extend(Duration::from_secs(30))?;
//!     let outcome = guard.release()?;            // Released / Expired / HeldByOther
//!     assert!(outcome.is_released());
//!     client.shutdown();                         // drains background releases
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::error::{Error, Result};
use crate::{LockInfo, RenewalStats};

mod lock;
mod lock_set;
mod primitives;

pub use lock::{Lock, LockGuard};
pub use lock_set::{LockSet, LockSetGuard};
pub use primitives::{Permit, ReadGuard, RwLock, Semaphore, WriteGuard};

/// How long dropping the last handle or guard of a blocking [`Client`] waits for pending
/// background releases before it stops the runtime. Releases still running then are
/// abandoned; their leases expire by their TTL.
pub const DRAIN_ON_DROP: Duration = Duration::from_secs(5);

/// Worker threads of a blocking client's runtime.
const WORKER_THREADS: usize = 2;

/// A runtime that may be dropped anywhere: in async code (where dropping a runtime would
/// panic) it is shut down in the background instead.
struct OwnedRuntime(Option<Runtime>);

impl OwnedRuntime {
    fn get(&self) -> &Runtime {
        self.0
            .as_ref()
            .expect("a blocking client's runtime is only taken out when it is dropped")
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            if Handle::try_current().is_ok() {
                rt.shutdown_background();
            }
            // Otherwise `rt` is dropped here, which waits for its threads to stop.
        }
    }
}

/// What every handle and guard of one blocking client shares: the async client and the
/// runtime it runs on.
pub(crate) struct Shared {
    pub(super) client: crate::Client,
    rt: OwnedRuntime,
}

impl Shared {
    /// Run `fut` to completion on the runtime, blocking this thread.
    ///
    /// Panics when called from async code, as `Runtime::block_on` does.
    pub(super) fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.get().block_on(fut)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle or guard is gone: drain background releases, then stop.
        let client = self.client.clone();
        let rt = std::mem::replace(&mut self.rt, OwnedRuntime(None));
        let drain = move || {
            rt.get().block_on(async {
                // Bounded: an unreachable Redis must not hang the dropping thread.
                let _ = tokio::time::timeout(DRAIN_ON_DROP, client.shutdown()).await;
            });
            drop(rt);
        };
        if Handle::try_current().is_err() {
            drain();
            return;
        }
        // In async code we may neither block nor drop a runtime: drain on a thread of its
        // own. If that thread cannot be started, the closure (and with it the runtime) is
        // dropped here and the runtime is shut down in the background.
        let _ = std::thread::Builder::new()
            .name("leasehold-blocking-drop".into())
            .spawn(drain);
    }
}

/// A connection to Redis for synchronous code: the blocking counterpart of
/// [`crate::Client`].
///
/// Cheap to clone (an `Arc`); clones share one runtime and one async client. Handles and
/// guards it issues keep that runtime alive, so they may outlive the client.
///
/// Dropping the last clone, handle and guard waits (at most [`DRAIN_ON_DROP`]) for the
/// background releases of dropped guards, then stops the runtime; in async code it does
/// that on a thread of its own instead of blocking. [`shutdown`](Self::shutdown) drains
/// explicitly and stops new acquires.
///
/// ```no_run
/// use std::time::Duration;
///
/// # fn main() -> leasehold::Result<()> {
/// let builder = leasehold::Client::builder("redis://127.0.0.1:6379/")
///     .response_timeout(Duration::from_millis(500));
/// let client = leasehold::blocking::Client::from_builder(builder)?;
/// let lock = client.lock("reports/nightly")?;
///
/// let workers: Vec<_> = (0..4)
///     .map(|i| {
///         let lock = lock.clone();
///         std::thread::spawn(move || -> leasehold::Result<()> {
///             let guard = lock.acquire()?;      // one thread at a time, across processes
///             println!("worker {i} holds token {}", guard.fencing_token());
///             Ok(())                            // dropped: released in the background
///         })
///     })
///     .collect();
/// for w in workers {
///     w.join().expect("worker panicked")?;
/// }
/// client.shutdown();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Client")
            .field(&self.shared.client)
            .finish()
    }
}

impl Client {
    /// A blocking client for `url` with default settings (see [`crate::Client::builder`]
    /// for the URL forms). Starts the client's runtime; does no I/O.
    ///
    /// # Blocking
    /// Does not block (beyond starting two threads).
    pub fn new(url: impl Into<String>) -> Result<Self> {
        Client::from_builder(crate::Client::builder(url))
    }

    /// A blocking client with the settings of `builder` (from [`crate::Client::builder`],
    /// [`crate::Client::sentinel_builder`], [`crate::Client::redlock_builder`] or
    /// [`crate::Client::cluster_builder`]). Starts the client's runtime and builds the
    /// async client on it; fails as [`crate::ClientBuilder::build`] does, or with
    /// [`ErrorKind::Connection`](crate::ErrorKind::Connection) if the runtime's threads
    /// cannot be started.
    ///
    /// # Blocking
    /// Does not block (beyond starting two threads). May be called anywhere, async code
    /// included.
    pub fn from_builder(builder: crate::ClientBuilder) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("leasehold-blocking")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::new(
                    crate::ErrorKind::Connection,
                    format!("cannot start the leasehold blocking runtime: {e}"),
                )
            })?;
        let rt = OwnedRuntime(Some(rt));
        let client = {
            let _entered = rt.get().enter();
            builder.build()?
        };
        Ok(Client {
            shared: Arc::new(Shared { client, rt }),
        })
    }

    /// A handle on the lock called `name` (see [`crate::Client::lock`]). Does no I/O.
    pub fn lock(&self, name: &str) -> Result<Lock> {
        Ok(Lock {
            lock: self.shared.client.lock(name)?,
            shared: self.shared.clone(),
        })
    }

    /// A handle on several locks taken together, all or none (see
    /// [`crate::Client::locks`]). Does no I/O.
    pub fn locks<I, S>(&self, names: I) -> Result<LockSet>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(LockSet {
            set: self.shared.client.locks(names)?,
            shared: self.shared.clone(),
        })
    }

    /// A handle on the **fair** lock called `name` (see [`crate::Client::fair_lock`]).
    /// Does no I/O.
    pub fn fair_lock(&self, name: &str) -> Result<Lock> {
        Ok(self.lock(name)?.fair())
    }

    /// A handle on the semaphore called `name` with `capacity` permits, 1 to
    /// [`MAX_PERMITS`](crate::MAX_PERMITS) (see [`crate::Client::semaphore`]). Does no I/O.
    pub fn semaphore(&self, name: &str, capacity: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            sem: self.shared.client.semaphore(name, capacity)?,
            shared: self.shared.clone(),
        })
    }

    /// A handle on the read-write lock called `name` (see [`crate::Client::rwlock`]).
    /// Does no I/O.
    pub fn rwlock(&self, name: &str) -> Result<RwLock> {
        Ok(RwLock {
            rw: self.shared.client.rwlock(name)?,
            shared: self.shared.clone(),
        })
    }

    /// Check that Redis answers (see [`crate::Client::ping`]).
    ///
    /// # Blocking
    /// Blocks until Redis answers, at most the connect timeout plus the response timeout.
    /// Panics if called from async code (see the [module docs](self)).
    pub fn ping(&self) -> Result<()> {
        self.shared.block_on(self.shared.client.ping())
    }

    /// Read lock `name`'s holder, TTL, fencing token and waiters without taking it (see
    /// [`crate::Client::inspect`]).
    ///
    /// # Blocking
    /// Blocks for one round trip, at most the connect timeout plus the response timeout.
    /// Panics if called from async code (see the [module docs](self)).
    pub fn inspect(&self, name: &str) -> Result<LockInfo> {
        self.shared.block_on(self.shared.client.inspect(name))
    }

    /// The locks, semaphores and read-write locks matching `pattern`, at most `limit`
    /// (see [`crate::Client::list`]).
    ///
    /// # Blocking
    /// Blocks for the `SCAN` round trips. Panics if called from async code (see the
    /// [module docs](self)).
    pub fn list(&self, pattern: &str, limit: usize) -> Result<crate::Listing> {
        self.shared
            .block_on(self.shared.client.list(pattern, limit))
    }

    /// A semaphore's held permits (see [`crate::Client::inspect_semaphore`]).
    ///
    /// # Blocking
    /// Blocks for one round trip. Panics if called from async code (see the
    /// [module docs](self)).
    pub fn inspect_semaphore(&self, name: &str) -> Result<crate::SemaphoreInfo> {
        self.shared
            .block_on(self.shared.client.inspect_semaphore(name))
    }

    /// A read-write lock's writer and readers (see [`crate::Client::inspect_rwlock`]).
    ///
    /// # Blocking
    /// Blocks for two round trips. Panics if called from async code (see the
    /// [module docs](self)).
    pub fn inspect_rwlock(&self, name: &str) -> Result<crate::RwLockInfo> {
        self.shared
            .block_on(self.shared.client.inspect_rwlock(name))
    }

    /// The number of background releases still running.
    pub fn pending_releases(&self) -> usize {
        self.shared.client.pending_releases()
    }

    /// Counters of this client's renewal scheduler (the watchdog).
    pub fn renewal_stats(&self) -> RenewalStats {
        self.shared.client.renewal_stats()
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        self.shared.client.key_prefix()
    }

    /// Stop accepting new acquires (on every clone and handle of this client) and wait for
    /// every background release to finish (see [`crate::Client::shutdown`]). Guards still
    /// held keep their leases until they are released or dropped.
    ///
    /// # Blocking
    /// Blocks until the background releases are done, at most
    /// [`crate::Client::shutdown_bound`] (6 s with the default timeouts). Use
    /// [`shutdown_timeout`](Self::shutdown_timeout) for another bound. Panics if called
    /// from async code (see the [module docs](self)).
    pub fn shutdown(self) {
        self.shared.block_on(self.shared.client.shutdown());
    }

    /// [`shutdown`](Self::shutdown), waiting at most `limit`; returns whether every
    /// background release finished in time (the others go on while the runtime lives).
    ///
    /// # Blocking
    /// Blocks at most `limit`. Panics if called from async code (see the
    /// [module docs](self)).
    pub fn shutdown_timeout(self, limit: Duration) -> bool {
        self.shared
            .block_on(self.shared.client.shutdown_within(limit))
            == 0
    }
}
