//! Leader election on top of an auto-renewed lock.
//!
//! A [`Leadership`] is a value, not a flag on a shared object (seed 001): each campaign
//! that wins gets its own, with its own state, watch and loss signal, and nothing another
//! contender does in the same process can change it. Leadership ends when its lease is
//! lost (renewal refused, or no confirmed renewal before the deadline) or when it resigns;
//! campaigning again is one call.
//!
//! A leader may publish a value with its leadership (set at campaign, updated while
//! leading): it is stored with the grant, and each event of a leadership — elected, a new
//! value, resigned — is recorded in the election's log and announced, for observers
//! (`primitives/observe.rs`) who watch without campaigning.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::backend::leaders::Proclamation;
use crate::client::inspect::HolderInfo;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::lease::LostReason;
use crate::lock::guard::{Lease, LockGuard};
use crate::lock::holder::HolderMetadata;
use crate::lock::Lock;
use crate::ReleaseOutcome;

/// An election: contenders campaign for one leadership, held as an auto-renewed lease.
#[derive(Debug, Clone)]
pub struct Election {
    client: Client,
    name: String,
    lock: Lock,
    /// What a leader stores with its grant: host, pid, label and value.
    holder: HolderMetadata,
}

/// The longest value a leader may publish, in bytes.
pub const MAX_LEADER_VALUE: usize = 4096;

fn validate_value(value: &str) -> Result<()> {
    if value.len() > MAX_LEADER_VALUE {
        return Err(Error::invalid(format!(
            "leader value is {} bytes long: use at most {MAX_LEADER_VALUE}",
            value.len()
        )));
    }
    Ok(())
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
            holder: self.inner.holder.clone(),
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
        self.holder.label = Some(label.to_string());
        self.lock = self.lock.with_metadata(&self.holder);
        self
    }

    /// The value a leader elected through this handle publishes with its leadership (etcd's
    /// `Proclaim`, `etcdctl elect NAME VALUE`): stored with the grant, so it is there from
    /// the first moment of the term, shown by [`leader`](Self::leader) and announced to
    /// [observers](Self::observe). Update it while leading with [`Leadership::proclaim`].
    /// At most [`MAX_LEADER_VALUE`] bytes (checked at campaign).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn value(mut self, value: &str) -> Self {
        self.holder.value = Some(value.to_string());
        self.lock = self.lock.with_metadata(&self.holder);
        self
    }

    /// Check the election's settings, as every campaign does (see [`Lock::check`](crate::Lock::check)).
    pub fn check(&self) -> Result<()> {
        if let Some(value) = &self.holder.value {
            validate_value(value)?;
        }
        self.lock.check()
    }

    /// Watch this election without campaigning: the leader now, then every change of
    /// leader or value, in order (see [`Observer`](crate::Observer)). Not on RedLock
    /// clients.
    pub fn observe(&self) -> crate::Observer {
        crate::Observer::new(self.lock.inner.clone(), &self.name, self.lock.keys.clone())
    }

    /// Proclaim a new leadership (`elected`) in the election's log, where the topology
    /// keeps one; a leadership that cannot be announced is given up.
    async fn announced(&self, guard: LockGuard) -> Result<Leadership> {
        let leadership = Leadership::new(guard, self.holder.clone());
        if crate::backend::require(&self.lock.inner, crate::backend::Capability::LeadersLog).is_ok()
        {
            leadership.record("elected", None).await?;
        }
        Ok(leadership)
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait until this contender is elected. Where observers are possible (not RedLock),
    /// the election is recorded in the election's log before this returns; if that fails,
    /// the leadership is given up and the error returned.
    ///
    /// # Cancel safety
    /// Cancel-safe: as for [`Lock::acquire`]; a leadership granted as the future is dropped
    /// is given up in the background.
    pub async fn campaign(&self) -> Result<Leadership> {
        self.check()?;
        loop {
            match self.lock.acquire().await {
                Ok(guard) => return self.announced(guard).await,
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
        self.check()?;
        let guard = self.lock.try_acquire().await?;
        self.announced(guard).await
    }

    /// Who leads now, as the leader described itself; `None` if nobody does.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn leader(&self) -> Result<Option<HolderInfo>> {
        Ok(self.client.inspect(&self.name).await?.holder)
    }
}

/// What the log holds of a leadership, as far as this leader knows.
#[derive(Debug)]
struct Recorded {
    holder: HolderMetadata,
    /// The number of the proclamation `holder` came from.
    seq: u32,
    /// The number of the last proclamation sent: numbers are taken under the lock, so
    /// they follow the order the values were chosen in.
    sent: u32,
}

/// Being the leader: valid while [`is_leader`](Self::is_leader) is true.
#[must_use = "leadership is given up as soon as this value is dropped"]
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
    state: watch::Receiver<bool>,
    /// The stored metadata, with the value of the latest recorded proclamation.
    holder: Mutex<Recorded>,
}

impl Leadership {
    fn new(guard: LockGuard, holder: HolderMetadata) -> Self {
        let (tx, rx) = watch::channel(true);
        let lease = guard.lease();
        tokio::spawn(async move {
            let reason = lease.lost().await;
            tracing::debug!(election = %lease.name(), %reason, "leadership ended");
            let _ = tx.send(false);
        });
        Leadership {
            guard,
            state: rx,
            holder: Mutex::new(Recorded {
                holder,
                seq: 0,
                sent: 0,
            }),
        }
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.holder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `event` in the election's log, with `value` as the new value if given. The
    /// new value becomes this leader's own once recorded, unless a later proclamation was
    /// recorded first (the server keeps only the later one then, too).
    async fn record(&self, event: &str, value: Option<&str>) -> Result<()> {
        let (meta, proposed, seq) = {
            let mut recorded = self.recorded();
            recorded.sent += 1;
            let mut proposed = recorded.holder.clone();
            let meta = match value {
                Some(v) => {
                    proposed.value = Some(v.to_string());
                    proposed.to_json()
                }
                None => String::new(),
            };
            (meta, proposed, recorded.sent)
        };
        let value = proposed.value.clone().unwrap_or_default();
        let state = self.guard.lease_state();
        crate::backend::leaders::proclaim(
            self.guard.inner(),
            &Proclamation {
                keys: &state.keys,
                name: &state.name,
                owner_id: &state.owner_id,
                req: &state.req,
                event,
                value: &value,
                meta: &meta,
                seq,
            },
        )
        .await?;
        let mut recorded = self.recorded();
        if seq > recorded.seq {
            recorded.holder = proposed;
            recorded.seq = seq;
        }
        Ok(())
    }

    /// The value this leader publishes (empty if none): the latest one recorded.
    pub fn value(&self) -> String {
        self.recorded().holder.value.clone().unwrap_or_default()
    }

    /// Publish a new value with this leadership: stored with the grant and announced to
    /// observers, in order with every other change (etcd's `Proclaim`). At most
    /// [`MAX_LEADER_VALUE`] bytes.
    ///
    /// Fails with [`ErrorKind::NotHeld`](crate::ErrorKind::NotHeld) when the leadership
    /// is gone (nothing was published), with
    /// [`ErrorKind::Ambiguous`](crate::ErrorKind::Ambiguous) when it may have been
    /// published (no reply came, or the leadership was found gone after a send that got
    /// no reply), and with
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) on RedLock clients.
    ///
    /// Concurrent proclamations are ordered by when they were called: one overtaken on
    /// the way by a later one is not published (and returns `Ok`, having been superseded).
    ///
    /// # Cancel safety
    /// Cancel-safe: a dropped proclamation may or may not have been published; a later
    /// one is published after it either way.
    pub async fn proclaim(&self, value: &str) -> Result<()> {
        validate_value(value)?;
        crate::backend::require(self.guard.inner(), crate::backend::Capability::LeadersLog)?;
        self.record("proclaimed", Some(value)).await
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

    /// Step down: record the resignation for observers, then release the leadership lock
    /// so another contender can win at once.
    ///
    /// # Cancel safety
    /// As for [`LockGuard::release`].
    pub async fn resign(self) -> Result<ReleaseOutcome> {
        if crate::backend::require(self.guard.inner(), crate::backend::Capability::LeadersLog)
            .is_ok()
        {
            // Observers hear "resigned" before the lock is free (best effort: if it is not
            // recorded, they see the leadership end with its lease).
            if let Err(e) = self.record("resigned", None).await {
                tracing::debug!(election = %self.guard.name(), error = %e, "resignation not recorded");
            }
        }
        self.guard.release().await
    }
}
