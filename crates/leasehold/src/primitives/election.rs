//! Leader election on top of an auto-renewed lock.
//!
//! A [`Leadership`] is a value, not a flag on a shared object (seed 001): each campaign
//! that wins gets its own, with its own state, watch and loss signal, and nothing another
//! contender does in the same process can change it. Leadership ends when its lease is
//! lost (renewal refused, or no confirmed renewal before the deadline) or when it resigns;
//! campaigning again is one call.

use std::time::Duration;

use tokio::sync::watch;

use crate::client::inspect::HolderInfo;
use crate::client::Client;
use crate::error::Result;
use crate::lease::LostReason;
use crate::lock::guard::{Lease, LockGuard};
use crate::lock::Lock;
use crate::ReleaseOutcome;

/// An election: contenders campaign for one leadership, held as an auto-renewed lease.
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    name: String,
    lock: Lock,
}

impl Client {
    /// An election called `name` (it uses the lock of that name). Leadership is a 30 s
    /// lease (the client's default) renewed every 10 s while the leader lives.
    pub fn election(&self, name: &str) -> Result<Election> {
        let lock = self.lock(name)?;
        Ok(Election {
            client: self.clone(),
            name: name.to_string(),
            lock,
        })
    }
}

impl Election {
    /// Set the leadership lease's TTL (renewed every third of it; see [`Lock::ttl`](crate::Lock::ttl)).
    /// A shorter lease hands leadership over sooner when a leader dies, at the cost of
    /// more renewals.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.lock = self.lock.ttl(ttl);
        self
    }

    /// Label the leader (shown by [`leader`](Self::leader); see [`Lock::label`](crate::Lock::label)).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn label(mut self, label: &str) -> Self {
        self.lock = self.lock.label(label);
        self
    }

    /// Check the election's settings, as every campaign does (see [`Lock::check`](crate::Lock::check)).
    pub fn check(&self) -> Result<()> {
        self.lock.check()
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait until this contender is elected.
    ///
    /// # Cancel safety
    /// Cancel-safe: as for [`Lock::acquire`]; a leadership granted as the future is dropped
    /// is given up in the background.
    pub async fn campaign(&self) -> Result<Leadership> {
        loop {
            match self.lock.acquire().await {
                Ok(guard) => return Ok(Leadership::new(guard)),
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Try once: fails with [`ErrorKind::Contended`](crate::ErrorKind::Contended) if
    /// someone else leads.
    ///
    /// # Cancel safety
    /// As for [`campaign`](Self::campaign).
    pub async fn try_campaign(&self) -> Result<Leadership> {
        self.lock.try_acquire().await.map(Leadership::new)
    }

    /// Who leads now, as the leader described itself; `None` if nobody does.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn leader(&self) -> Result<Option<HolderInfo>> {
        Ok(self.client.inspect(&self.name).await?.holder)
    }
}

/// Being the leader: valid while [`is_leader`](Self::is_leader) is true.
#[must_use = "leadership is given up as soon as this value is dropped"]
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
    state: watch::Receiver<bool>,
}

impl Leadership {
    fn new(guard: LockGuard) -> Self {
        let (tx, rx) = watch::channel(true);
        let lease = guard.lease();
        tokio::spawn(async move {
            let reason = lease.lost().await;
            tracing::debug!(election = %lease.name(), %reason, "leadership ended");
            let _ = tx.send(false);
        });
        Leadership { guard, state: rx }
    }

    /// Whether this leadership still holds. Becomes false, and stays false, when the lease
    /// is lost or the leader resigns.
    pub fn is_leader(&self) -> bool {
        *self.state.borrow() && !self.guard.is_lost()
    }

    /// A receiver of the leadership state (`true` while leading).
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.state.clone()
    }

    /// Resolves when leadership is lost, with the reason.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes.
    pub async fn lost(&self) -> LostReason {
        self.guard.lost().await
    }

    /// The fencing token of this term: larger than any earlier leader's.
    pub fn fencing_token(&self) -> u64 {
        self.guard.fencing_token()
    }

    /// A clonable view of the leadership lease for other tasks.
    pub fn lease(&self) -> Lease {
        self.guard.lease()
    }

    /// Step down: release the leadership lock so another contender can win at once.
    ///
    /// # Cancel safety
    /// As for [`LockGuard::release`].
    pub async fn resign(self) -> Result<ReleaseOutcome> {
        self.guard.release().await
    }
}
