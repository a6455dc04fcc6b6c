//! Lock sets: several named locks held together, all or none, without deadlock.
//!
//! A [`LockSet`] takes its members in one canonical order — their names sorted bytewise;
//! on Redis Cluster by hash slot first, then name — whatever order the caller listed them
//! in. Two callers naming the same locks in different orders therefore wait in the same
//! order, and no cycle of waiters can form: whoever holds a member waits only for members
//! that come after it. The members one script can reach together (all of them on one
//! server or through Sentinel, those sharing a slot on Cluster) are tried in one script
//! (`backend/set.rs`): all granted in one round trip, or none. A group refused there, when
//! the caller waits, and every member on RedLock or of a fair set, is taken member by
//! member with the lock's own idempotent acquire, waiting and handoff. When a member cannot
//! be had (the wait runs out, it is contended for `try_acquire`, a connection fails), the
//! members already taken are released before the error is returned, so a failed acquire
//! holds nothing. The [`LockSetGuard`] holds every member's lease, each renewed by the
//! watchdog with its own fencing token; the set is lost as soon as any member is.

use std::sync::OnceLock;
use std::time::Duration;

use futures_util::future::{join_all, select_all};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::lease::{LostReason, ReleaseOutcome};
use crate::lock::guard::LockGuard;
use crate::lock::owner::Owner;
use crate::lock::Lock;

/// The most locks one [`LockSet`] may name.
pub const MAX_LOCK_SET: usize = 64;

/// A handle on several locks taken together, all or none. Cheap to clone; holds nothing
/// by itself. Get one from [`Client::locks`](crate::Client::locks).
///
/// The members are taken in one canonical order (their names sorted; on Redis Cluster by
/// hash slot, then name), so callers that list the same names in different orders never
/// deadlock; each member is a [`Lock`] with the set's settings.
///
/// ```no_run
/// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
/// // A transfer between two accounts: both locks or neither, in any listed order.
/// let accounts = client.locks(["accounts/7", "accounts/3"])?;
/// let held = accounts.acquire().await?;
/// for (name, token) in held.fencing_tokens() {
///     println!("{name}: token {token}"); // accounts/3 first (on one server): sorted
/// }
/// held.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct LockSet {
    /// In canonical order.
    members: Vec<Lock>,
    wait: Duration,
}

impl LockSet {
    /// The set of `members` (already validated lock handles); refuses an empty set, a
    /// name listed twice and more than [`MAX_LOCK_SET`] names.
    pub(crate) fn new(mut members: Vec<Lock>, wait: Duration) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::invalid("a lock set needs at least one lock name"));
        }
        if members.len() > MAX_LOCK_SET {
            return Err(Error::invalid(format!(
                "a lock set of {} names is too large: use at most {MAX_LOCK_SET}",
                members.len()
            )));
        }
        // The canonical order: by name; on Cluster by hash slot first, so that the members
        // of one slot are neighbours (one script takes them together).
        let inner = members[0].inner.clone();
        members.sort_by_cached_key(|l| {
            (
                crate::backend::set::order_key(&inner, &l.keys.lock),
                l.name().as_bytes().to_vec(),
            )
        });
        if let Some(w) = members.windows(2).find(|w| w[0].name() == w[1].name()) {
            return Err(Error::invalid(format!(
                "lock {:?} is listed twice in one lock set: name each lock once",
                w[0].name()
            )));
        }
        Ok(LockSet { members, wait })
    }

    /// The members' names, in the order they are taken (the canonical order).
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.members.iter().map(Lock::name)
    }

    /// The members, in the order they are taken.
    pub fn members(&self) -> &[Lock] {
        &self.members
    }

    fn each(mut self, f: impl Fn(Lock) -> Lock) -> Self {
        self.members = self.members.into_iter().map(f).collect();
        self
    }

    /// Each member's lease length (see [`Lock::ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn ttl(self, ttl: Duration) -> Self {
        self.each(|l| l.ttl(ttl))
    }

    /// Turn the watchdog on or off for every member (see [`Lock::auto_renew`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn auto_renew(self, on: bool) -> Self {
        self.each(|l| l.auto_renew(on))
    }

    /// Renew every member every `every` (see [`Lock::renew_every`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn renew_every(self, every: Duration) -> Self {
        self.each(|l| l.renew_every(every))
    }

    /// Store `label` with every member (see [`Lock::label`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn label(self, label: &str) -> Self {
        self.each(|l| l.label(label))
    }

    /// Make every member a fair lock (see [`Lock::fair`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn fair(self) -> Self {
        self.each(Lock::fair)
    }

    /// A fair member's place lifetime (see [`Lock::place_ttl`]).
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn place_ttl(self, place_ttl: Duration) -> Self {
        self.each(|l| l.place_ttl(place_ttl))
    }

    /// Acquire every member as `owner` (see [`Lock::owner`]): members the owner holds
    /// already are re-entered.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn owner(self, owner: &Owner) -> Self {
        self.each(|l| l.owner(owner))
    }

    /// How long [`acquire`](Self::acquire) waits for the whole set (default 10 s): one
    /// deadline for all members together.
    #[must_use = "a setter returns the changed value and consumes the original"]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self.members = self.members.into_iter().map(|l| l.wait(wait)).collect();
        self
    }

    /// Check the settings of every member, as every acquire does (see [`Lock::check`]).
    pub fn check(&self) -> Result<()> {
        self.members.iter().try_for_each(Lock::check)
    }

    /// Acquire every member, waiting up to the set's wait setting (default 10 s) for all
    /// of them together.
    ///
    /// Fails as [`Lock::acquire`] does, for the first member that cannot be had (the
    /// error names it); the members already taken are released first, so a failed
    /// acquire holds nothing.
    ///
    /// # Cancel safety
    /// Cancel-safe with respect to the locks: members already taken, or possibly granted,
    /// when the future is dropped are released in the background (as for
    /// [`Lock::acquire`]).
    pub async fn acquire(&self) -> Result<LockSetGuard> {
        self.acquire_until(Instant::now() + self.wait, true).await
    }

    /// Acquire every member, waiting at most `wait` for all of them together.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn acquire_timeout(&self, wait: Duration) -> Result<LockSetGuard> {
        crate::lock::validate_wait(wait)?;
        self.acquire_until(Instant::now() + wait, true).await
    }

    /// Try each member once, without waiting: fails with
    /// [`ErrorKind::Contended`](crate::ErrorKind::Contended) naming the first member
    /// that is held, after releasing the members taken before it.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn try_acquire(&self) -> Result<LockSetGuard> {
        self.acquire_until(Instant::now(), false).await
    }

    async fn acquire_until(&self, deadline: Instant, waiting: bool) -> Result<LockSetGuard> {
        self.check()?;
        let inner = &self.members[0].inner;
        let mut held = Vec::with_capacity(self.members.len());
        // The members one script could reach together: one group on one server, one per
        // slot on Cluster (neighbours in the canonical order).
        let key = |l: &Lock| crate::backend::set::order_key(inner, &l.keys.lock);
        for group in self.members.chunk_by(|a, b| key(a) == key(b)) {
            if let Err(e) = Self::take(group, deadline, waiting, &mut held).await {
                // All or none: give back what was taken before reporting.
                join_all(held.into_iter().map(LockGuard::release)).await;
                return Err(e);
            }
        }
        Ok(LockSetGuard::new(held))
    }

    /// Take `group` (members one script may reach) into `held`: in one script where that
    /// works, else member by member.
    async fn take(
        group: &[Lock],
        deadline: Instant,
        waiting: bool,
        held: &mut Vec<LockGuard>,
    ) -> Result<()> {
        if let Some(guards) = Self::at_once(group, waiting).await? {
            held.extend(guards);
            return Ok(());
        }
        for lock in group {
            held.push(lock.acquire_until(deadline, waiting).await?);
        }
        Ok(())
    }
}

impl LockSet {
    /// Every member of `group` in one script, where one script reaches them all (one
    /// server, or one Cluster slot) and the group has several members, each a plain lock:
    /// `Some` when held. `None` when the members must be taken one by one: the topology
    /// or a member does not allow it, or (`waiting`) a member is held or another task of
    /// this client waits for one.
    /// Without `waiting`, a held member is [`ErrorKind::Contended`](crate::ErrorKind) at
    /// once, with nothing taken even for a moment.
    async fn at_once(group: &[Lock], waiting: bool) -> Result<Option<Vec<LockGuard>>> {
        use crate::backend::set::{AtOnce, Member};
        // A group of one is its lock, acquired as the lock is.
        if group.len() == 1 || !group.iter().all(Lock::joins_at_once) {
            return Ok(None);
        }
        let inner = &group[0].inner;
        inner.check_open()?;
        let holds: Vec<_> = group.iter().map(Lock::hold).collect();
        // As a single acquire does: tasks of this client queue locally per lock, and a
        // set does not pass a task queued for one of its members.
        let mut places = Vec::with_capacity(group.len());
        for (lock, hold) in group.iter().zip(&holds) {
            if lock
                .owner
                .as_ref()
                .is_some_and(|o| o.holds_locally(&hold.hold_key))
            {
                continue;
            }
            match inner.queue(&lock.keys.lock).try_acquire_owned() {
                Ok(place) => places.push(place),
                Err(_) if waiting => return Ok(None),
                // As a lone try would be refused for it: nothing is taken.
                Err(_) => {
                    return Err(Error::new(
                        crate::ErrorKind::Contended,
                        format!(
                            "lock {:?} is wanted by another task of this client",
                            lock.name()
                        ),
                    ))
                }
            }
        }
        let series: Vec<_> = group.iter().map(Lock::series).collect();
        let members: Vec<Member<'_>> = group
            .iter()
            .zip(&series)
            .zip(&holds)
            .map(|((lock, series), hold)| Member {
                lock: lock.request(series),
                hold,
            })
            .collect();
        if !crate::backend::set::reachable(inner, &members) {
            return Ok(None);
        }
        match crate::backend::set::acquire(inner, &members).await? {
            AtOnce::Granted(grants) => {
                drop(members);
                // No await from here on: every grant becomes a guard at once.
                let guards = group
                    .iter()
                    .zip(grants)
                    .zip(holds)
                    .zip(&series)
                    .map(|(((lock, grant), hold), series)| lock.guard_for(grant, hold, series))
                    .collect();
                Ok(Some(guards))
            }
            AtOnce::Refused { .. } if waiting => Ok(None),
            AtOnce::Refused { index } => {
                let lock = &group[index];
                crate::metrics::contended(&series[index]);
                crate::metrics::acquisition(&series[index], "contended");
                Err(Error::new(
                    crate::ErrorKind::Contended,
                    format!("lock {:?} is held by another owner", lock.name()),
                ))
            }
        }
    }
}

/// Proof of holding every lock of a [`LockSet`], until the first member's lease runs out.
///
/// Dropping it releases every member in the background; [`release`](Self::release)
/// reports each outcome. The set is lost when any member is: [`lost`](Self::lost) and
/// [`cancellation_token`](Self::cancellation_token) fire for the first member lost.
#[must_use = "the locks are released in the background as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockSetGuard {
    /// In canonical order.
    members: Vec<LockGuard>,
    /// Cancelled when any member's lease is lost, released or dropped; made (with the
    /// task that cancels it) only when first asked for.
    any_lost: OnceLock<CancellationToken>,
}

impl LockSetGuard {
    fn new(members: Vec<LockGuard>) -> Self {
        LockSetGuard {
            members,
            any_lost: OnceLock::new(),
        }
    }

    /// Every member's guard, in the canonical order.
    pub fn members(&self) -> &[LockGuard] {
        &self.members
    }

    /// The guard of the member called `name`.
    pub fn get(&self, name: &str) -> Option<&LockGuard> {
        self.members.iter().find(|g| g.name() == name)
    }

    /// Each member's name and fencing token, in canonical order. Pass each token to the
    /// resource its lock protects.
    pub fn fencing_tokens(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.members.iter().map(|g| (g.name(), g.fencing_token()))
    }

    /// The earliest member deadline: until then this holder may assume it holds every
    /// member (see [`Lease::valid_until`](crate::Lease::valid_until)).
    pub fn valid_until(&self) -> std::time::Instant {
        self.members
            .iter()
            .map(|g| g.valid_until())
            .min()
            .expect("a lock set has members")
    }

    /// Time left until [`valid_until`](Self::valid_until); zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.valid_until()
            .saturating_duration_since(std::time::Instant::now())
    }

    /// Whether any member's lease has been declared lost.
    pub fn is_lost(&self) -> bool {
        self.members.iter().any(|g| g.is_lost())
    }

    /// The members whose leases were lost, with why.
    pub fn lost_members(&self) -> Vec<(&str, LostReason)> {
        self.members
            .iter()
            .filter_map(|g| g.lost_reason().map(|r| (g.name(), r)))
            .collect()
    }

    /// Resolves when any member's lease is lost (or released), with the first such
    /// member's name and reason; see [`Lease::lost`](crate::Lease::lost).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only observes; dropping the future changes nothing.
    pub async fn lost(&self) -> (&str, LostReason) {
        let (reason, i, _) = select_all(self.members.iter().map(|g| Box::pin(g.lost()))).await;
        (self.members[i].name(), reason)
    }

    /// A token cancelled when any member's lease is lost, released or dropped.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.any_lost
            .get_or_init(|| {
                let any = CancellationToken::new();
                let tokens: Vec<_> = self
                    .members
                    .iter()
                    .map(|g| g.cancellation_token())
                    .collect();
                let fire = any.clone();
                // Ends with the first member's token: at the latest when the guard is
                // dropped. Spawned on the client's runtime, so any thread may ask.
                self.members[0].inner().handle.spawn(async move {
                    select_all(tokens.iter().map(|t| Box::pin(t.cancelled()))).await;
                    fire.cancel();
                });
                any
            })
            .clone()
    }

    /// Release every member (all at once) and report each outcome, in canonical order.
    /// Every member is released even when one fails; the error is then the first one.
    ///
    /// # Cancel safety
    /// Cancel-safe: members whose release is dropped unfinished are released in the
    /// background (as for [`LockGuard::release`]).
    pub async fn release(self) -> Result<Vec<(String, ReleaseOutcome)>> {
        let names: Vec<String> = self.members.iter().map(|g| g.name().to_string()).collect();
        let outcomes = join_all(self.members.into_iter().map(LockGuard::release)).await;
        names
            .into_iter()
            .zip(outcomes)
            .map(|(name, outcome)| outcome.map(|o| (name, o)))
            .collect()
    }
}
