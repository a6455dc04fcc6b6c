//! Owners: the identity that holds a lock, and with it explicit reentrancy.
//!
//! By default every acquire is its own owner, so acquiring a lock you already hold waits
//! like anyone else (no accidental reentrancy). An [`Owner`] is an explicit identity — not
//! a thread id — that may be shared by tasks and threads; locks acquired with the same
//! owner re-enter. The hold count lives on the server (one field per hold, keyed by the
//! acquire's request id, so a retried acquire is never counted twice) and the grant ends
//! when the last hold is released. The fencing token does not change on re-entry.
//!
//! An owner's id is random unless the caller names it ([`Owner::named`]): a process that
//! restarts under the same name recognizes the holds its earlier life left behind.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A lock-holding identity that may re-enter the locks it holds.
///
/// Cloning an `Owner` yields the same identity.
///
/// ```no_run
/// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
/// let owner = leasehold::Owner::new();
/// let lock = client.lock("accounts/7")?.owner(&owner);
/// let outer = lock.acquire().await?;
/// let inner = lock.acquire().await?; // re-enters: same fencing token, hold count 2
/// assert_eq!(inner.fencing_token(), outer.fencing_token());
/// inner.release().await?;
/// outer.release().await?; // the lock is free now
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Owner {
    inner: Arc<OwnerInner>,
}

struct OwnerInner {
    id: String,
    /// Live local holds per lock key, so a re-entrant acquire skips the local queue.
    holds: Mutex<HashMap<String, usize>>,
}

impl Owner {
    /// A new, unique owner.
    pub fn new() -> Self {
        Owner::with_id(crate::random_id())
    }

    /// An owner with a caller-chosen id, so that a process which restarts can recognize
    /// (re-enter) the holds its earlier life left behind: acquiring a lock whose live
    /// hold has this owner id succeeds at once, with the same fencing token and a hold
    /// count one higher. The earlier life's hold is not released by this; it counts until
    /// it is released by force or its lease runs out (nothing renews it any more), so the
    /// lock stays held by this owner at least that long.
    ///
    /// **Two live processes must never use the same id.** Holds are checked by owner id,
    /// so two processes sharing one would both hold the lock at once. Use something
    /// unique to one process at a time: a host name with a service name, a pod name, a
    /// job id.
    ///
    /// The id must be 1 to [`MAX_OWNER_ID_LEN`](crate::MAX_OWNER_ID_LEN) bytes of ASCII letters, digits and
    /// `- _ . : @ / + =`; anything else is
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput). Random ids are 32 hex
    /// digits, so a name of that shape is refused as well, to keep the two apart.
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
    /// let owner = leasehold::Owner::named("billing@host-7")?;
    /// // After a crash and restart, this re-enters the hold the crashed process left.
    /// let guard = client.lock("nightly-invoices")?.owner(&owner).try_acquire().await?;
    /// println!("token {} (holds: {})", guard.fencing_token(), guard.hold_count());
    /// # Ok(()) }
    /// ```
    pub fn named(id: &str) -> crate::Result<Self> {
        crate::validate::validate_owner_id(id)?;
        Ok(Owner::with_id(id.to_string()))
    }

    fn with_id(id: String) -> Self {
        Owner {
            inner: Arc::new(OwnerInner {
                id,
                holds: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The identity stored with the lock.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub(crate) fn holds_locally(&self, key: &str) -> bool {
        self.lock_holds().get(key).is_some_and(|n| *n > 0)
    }

    pub(crate) fn add_hold(&self, key: &str) {
        *self.lock_holds().entry(key.to_string()).or_insert(0) += 1;
    }

    pub(crate) fn remove_hold(&self, key: &str) {
        let mut holds = self.lock_holds();
        if let Some(n) = holds.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                holds.remove(key);
            }
        }
    }

    fn lock_holds(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.inner.holds.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Owner {
    fn default() -> Self {
        Owner::new()
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owner").field("id", &self.inner.id).finish()
    }
}

impl PartialEq for Owner {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}

impl Eq for Owner {}
