//! # leasehold
//!
//! Distributed locks on Redis that are correct by construction.
//!
//! A leasehold lock is a **lease**: its holder owns it until a deadline that it judges on
//! its own monotonic clock, conservatively (send time + TTL − drift). Every grant carries
//! a **fencing token** that strictly increases per lock name, for the protected resource to
//! check. Acquire is one atomic, idempotent server-side script that always sets a TTL, so
//! a cancelled task, a timeout or a retried command can neither leave a lock without a TTL
//! nor misreport a granted lock as refused. Release and extend are checked against the
//! holder, so a late holder can never remove someone else's lock.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn demo() -> leasehold::Result<()> {
//! let client = leasehold::Client::new("redis://127.0.0.1:6379/")?;
//! let lock = client.lock("invoices/2026-11")?.ttl(Duration::from_secs(30));
//!
//! let guard = lock.acquire().await?;          // waits up to 10 s by default
//! let token = guard.fencing_token();          // hand this to the resource you protect
//! println!("holding with token {token}, {:?} left", guard.remaining());
//! guard.extend(Duration::from_secs(30)).await?;
//! let outcome = guard.release().await?;       // Released / Expired / HeldByOther
//! assert!(outcome.is_released());
//! client.shutdown().await;                    // drains background releases
//! # Ok(()) }
//! ```
//!
//! A lock's lease is the client's default (30 s) or [`Lock::ttl`], and a watchdog renews it
//! every third of that while the guard lives, unless [`Lock::auto_renew`] turns it off; one
//! scheduler per client renews due leases in batches. Setters never fail and their order
//! does not matter: each acquire checks the settings together ([`Lock::check`]). A guard learns that its lease is
//! lost through [`LockGuard::lost`](crate::Lease::lost) and [`LockGuard::cancellation_token`](crate::Lease::cancellation_token), no later than
//! its deadline; [`Lock::run`] runs work under a lock and cancels it on loss. See also
//! [`Client::election`] for leader election and [`Client::inspect`] for who holds a lock.
//! Metrics are emitted through the `metrics` facade; see [`mod@metrics`] for their names.
//!
//! Beyond the lock: [`Lock::fair`] (or [`Client::fair_lock`]) serves waiters strictly in
//! arrival order across processes; [`Client::semaphore`] grants up to N permits, each a
//! lease of its own; [`Client::rwlock`] is a writer-preferring read-write lock whose
//! readers each hold their own lease. [`blocking`] offers all of them to synchronous code.
//!
//! Beyond one Redis, only the builder changes: [`Client::sentinel_builder`] follows the
//! master Sentinel names (with optional replica acknowledgements, [`Lock::replica_acks`]),
//! [`Client::redlock_builder`] locks a majority of independent masters, and
//! [`Client::cluster_builder`] works on Redis Cluster with sharded pub/sub.
//!
//! See `PROTOCOL.md` in the repository for the key layout and the scripts' contracts.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backend;
pub mod blocking;
mod client;
mod error;
pub mod lease;
mod lock;
pub mod metrics;
mod net;
mod primitives;
mod protocol;
mod validate;

pub use client::diagnose::{Check, CheckStatus, Diagnosis};
pub use client::inspect::{HolderInfo, HolderMetadata, LockInfo, NodeView};
pub use client::inspect_sets::{MemberInfo, RwLockInfo, SemaphoreInfo, INSPECT_MEMBERS};
pub use client::listing::{Listed, Listing, PrimitiveKind, LIST_LIMIT};
pub use client::{
    redact_url, Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT,
    DEFAULT_TTL, DEFAULT_WAIT,
};
pub use error::{Error, ErrorKind, NodeFailure, NotHeldReason, Result};
pub use lease::renew::{RenewalStats, BATCH as RENEWAL_BATCH};
pub use lease::{LostReason, ReleaseOutcome};
pub use lock::guard::{Lease, LockGuard};
pub use lock::owner::Owner;
pub use lock::{Lock, OnLost, DEFAULT_PLACE_TTL};
pub use net::coalesce::BatchStats;
pub use net::tls::{TlsConfig, TlsProblem};
pub use primitives::election::{Election, Leadership, MAX_LEADER_VALUE};
pub use primitives::lock_set::{LockSet, LockSetGuard, MAX_LOCK_SET};
pub use primitives::observe::{Leader, Observer};
pub use primitives::rwlock::{ReadGuard, RwLock, WriteGuard};
pub use primitives::semaphore::{Permit, Semaphore, MAX_PERMITS};
pub use protocol::keys::{DEFAULT_PREFIX, MAX_NAME_LEN};
pub use protocol::scripts;
pub use validate::MAX_OWNER_ID_LEN;
pub use validate::MAX_PERMITS_PER_GRANT;

/// A random 128-bit identifier in hex (owner ids, request ids).
pub(crate) fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
