//! Owners: the identity that holds a lock, and with it explicit reentrancy.
//!
//! By default every acquire is its own owner, so acquiring a lock you already hold waits
//! like anyone else (no accidental reentrancy). An [`Owner`] is an explicit identity — not
//! a thread id — that may be shared by tasks and threads; locks acquired with the same
//! owner re-enter. The hold count lives on the server (one field per hold, keyed by the
//! acquire's request id, so a retried acquire is never counted twice) and the grant ends
//! when the last hold is released. The fencing token does not change on re-entry.

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
