//! The acquire engine of one server — a single Redis, Sentinel's current master, or the
//! Cluster node that owns the lock's slot (the connector routes the call).
//!
//! One acquire call has one request id. Every time its script is sent — first try, retry
//! after a timeout or a broken connection — it carries that id, and the script counts a
//! request once: a retry of a granted request reports the same grant (invariant 3). If
//! the outcome is still unknown at the deadline, the call fails with
//! [`ErrorKind::Ambiguous`] and the possible grant is released in the background; the
//! same happens when the acquire future is dropped while a grant may exist (invariant 6).
//!
//! Waiting (invariant 8): after contention the caller subscribes to the lock's release
//! channel (one shared pub/sub connection per client; a subscription confirmed before the
//! first try, which lingers after a wait, is used at once) and sleeps until a release is
//! announced, or until the holder's remaining TTL runs out (expiry is not announced), or
//! its deadline; if the subscription is not confirmed it polls with jittered backoff
//! instead. Fair waiters and waiting writers keep a place at the server and refresh it.
//!
//! Handoff: a lock's release makes its oldest waiter the holder and names the try whose
//! details it used, with the server time from that try to the grant. The waiter holds at
//! once, on a lease of that time plus the claim window measured from that try's first send
//! (a time before the try ran), which the renewer confirms at once;
//! with too little of it left (or replica acknowledgements to wait for) it confirms with
//! one more try instead, even past its deadline. A wait that ends gives up its place before
//! it reports the timeout, ending a grant it never took (so "not acquired" is never said
//! while the server holds the lock for this call).
//!
//! Invariants: a request that may have been granted is released unless it became a
//! [`Grant`] (see `PendingGrant`); a place taken at the server is given up unless granted
//! (see `Registration`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::backend::{jitter, release_in_background, Grant, Hold, LockRequest};
use crate::client::context::Inner;
use crate::error::{Error, ErrorKind, Result};
use crate::net::conn::Failure;
use crate::net::wait::Heard;
use crate::protocol::keys::LockKeys;
use crate::protocol::scripts::{CLAIM_MS, RESERVATION_MS};
use crate::protocol::{Acquired, Mode};

enum Attempt {
    Granted {
        token: u64,
        count: u32,
        sent_at: Instant,
        /// Replica acknowledgements, when they were asked for (`None`: unknown).
        acks: Option<u32>,
    },
    Contended {
        /// Remaining ms of the holder's lease, or of the reservation if `reserved`.
        pttl: i64,
        /// The lock is free but reserved for the waiter it was handed to.
        reserved: bool,
        /// When this try was first sent (it may have left the caller's details).
        sent_at: Instant,
    },
}

/// How many refused tries' send times a waiter remembers (a release names the try whose
/// details it used; an older one is confirmed with a try instead).
const TRIES_KEPT: usize = 16;

/// Acquire `lock` on its server for `hold`, trying until `deadline` if `waiting`.
pub(crate) async fn acquire(
    lock: LockRequest<'_>,
    hold: &Hold,
    started: Instant,
    deadline: Instant,
    waiting: bool,
) -> Result<Grant> {
    let inner = lock.inner;
    // A grant of n > 1 permits is named for its weight (see PROTOCOL.md, "Weighted
    // permits"): every script reads n from the request id.
    let req = if lock.permits > 1 {
        format!("{}*{}", crate::random_id(), lock.permits)
    } else {
        crate::random_id()
    };
    let mut pending = PendingGrant {
        inner: inner.clone(),
        keys: lock.keys.clone(),
        owner_id: hold.owner_id.clone(),
        req: req.clone(),
        ttl: lock.ttl,
        armed: false,
        abandoned_connection: false,
    };
    let mut registration = Registration {
        inner: inner.clone(),
        keys: lock.keys.clone(),
        req: req.clone(),
        active: false,
    };
    let registers = matches!(
        lock.mode,
        Mode::Exclusive | Mode::Fair | Mode::Write | Mode::Permit(_)
    );
    // A confirmed subscription (another waiter's, or one lingering since this client's
    // last wait on the lock) is taken before the first try: its version, read before the
    // try, covers every release after it, so a refusal goes straight to waiting.
    let mut sub = if waiting {
        inner.waker.ready(&lock.keys.channel)
    } else {
        None
    };
    let mut backoff = Duration::from_millis(5);
    let mut attempts = 0u32;
    let mut queued = false;
    // The refused tries' numbers and first send times, latest last.
    let mut tries: std::collections::VecDeque<(u32, Instant)> = Default::default();
    // A release made this call the holder: the next try confirms it, even past the deadline.
    let mut heard_grant = false;
    loop {
        if attempts > 0 && Instant::now() >= deadline && !heard_grant {
            registration.leave_before_timeout(lock.name).await?;
            tracing::debug!(outcome = "timed_out", attempts, "lock not granted in time");
            crate::metrics::acquisition(lock.series, "timed_out");
            return Err(Error::timed_out(lock.name, started.elapsed()));
        }
        heard_grant = false;
        let seen = sub.as_ref().map(crate::net::wait::Subscription::version);
        attempts += 1;
        let resolve_by = deadline.max(Instant::now() + 2 * inner.conn.response_timeout());
        let wait_lease = if !waiting {
            Duration::ZERO
        } else if lock.mode.keeps_place() {
            lock.place_ttl
        } else {
            deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(500)
        };
        // A waiting try may queue the caller at the server (even one that ends in an
        // error, since scripts are not transactions): leave the queue unless granted.
        registration.active |= waiting && registers;
        match attempt(
            &lock,
            &hold.owner_id,
            &req,
            hold.reentrant,
            (wait_lease, queued, attempts),
            resolve_by,
            &mut pending,
        )
        .await?
        {
            Attempt::Granted {
                token,
                count,
                sent_at,
                acks,
            } => {
                pending.armed = false;
                // The script took the caller off the waiter queue.
                registration.active = false;
                granted(&lock, started, attempts, token, count);
                let shortfall = lock
                    .replica_acks
                    .and_then(|(wanted, _)| (acks.unwrap_or(0) < wanted).then_some((wanted, acks)));
                return Ok(Grant {
                    req,
                    token,
                    count,
                    start: sent_at,
                    shortfall,
                    claim: None,
                });
            }
            Attempt::Contended {
                pttl,
                reserved,
                sent_at,
            } => {
                if tries.len() == TRIES_KEPT {
                    tries.pop_front();
                }
                tries.push_back((attempts, sent_at));
                crate::metrics::contended(lock.series);
                if !waiting {
                    crate::metrics::acquisition(lock.series, "contended");
                    tracing::debug!(outcome = "contended", pttl, reserved, "lock is held");
                    let name = lock.name;
                    let why = match lock.mode {
                        Mode::Exclusive => format!("lock {name:?} is held by another owner"),
                        Mode::Fair => {
                            format!("fair lock {name:?} is held, or others are queued first")
                        }
                        Mode::Permit(_) => format!("semaphore {name:?}: every permit is held"),
                        Mode::Read => {
                            format!("read-write lock {name:?} is held or wanted by a writer")
                        }
                        Mode::Write => {
                            format!("read-write lock {name:?} is held by readers or a writer")
                        }
                    };
                    return Err(Error::new(ErrorKind::Contended, why));
                }
                queued = true;
                let now = Instant::now();
                if now >= deadline {
                    continue;
                }
                let Some(s) = sub.as_mut() else {
                    // Subscribe, then try again at once: a release between the failed
                    // attempt and the subscription would otherwise be missed.
                    sub = Some(inner.waker.subscribe(&lock.keys.channel, deadline).await);
                    continue;
                };
                let mut pause = if reserved && lock.mode.strict_order() {
                    // Someone is ahead: wait to be named by a release.
                    jitter(lock.refresh_every())
                } else if reserved {
                    // Handed to another waiter: retry if it does not claim the lock.
                    jitter(Duration::from_millis(
                        u64::try_from(pttl.max(1)).unwrap_or(1),
                    ))
                } else {
                    fallback_delay(pttl, s.is_confirmed(), &mut backoff)
                };
                if lock.mode.keeps_place() {
                    // Come back in time to refresh the place.
                    pause = pause.min(lock.refresh_every());
                }
                let mut wake = (now + pause).min(deadline);
                tracing::trace!(
                    pttl,
                    reserved,
                    pause_us = pause.as_micros() as u64,
                    "waiting for a release"
                );
                let mut seen = seen.unwrap_or_default();
                loop {
                    tokio::select! {
                        _ = s.changed_since(seen) => {
                            let (version, heard) = s.heard_since(seen, &req);
                            seen = version;
                            match heard {
                                Heard::Granted {
                                    token,
                                    try_no,
                                    waited_ms,
                                } => {
                                    if let Some((start, claim)) =
                                        held_at_once(&lock, &tries, try_no, waited_ms)
                                    {
                                        registration.active = false;
                                        granted(&lock, started, attempts, token, 1);
                                        return Ok(Grant {
                                            req,
                                            token,
                                            count: 1,
                                            start,
                                            shortfall: None,
                                            claim: Some(claim),
                                        });
                                    }
                                    heard_grant = true;
                                    break;
                                }
                                Heard::Named | Heard::Everyone => break,
                                // A grant nobody confirms lapses unannounced after its
                                // claim window: the waiter named next looks again then,
                                // and so do readers (only writers are named).
                                Heard::Next => wake = wake.min(after_claim_window()),
                                Heard::OthersGranted if lock.mode == Mode::Read => {
                                    wake = wake.min(after_claim_window());
                                }
                                // Held by the waiter it went to: wait for its release.
                                Heard::OthersGranted => {}
                                // Fair locks, permits: only the named waiter may take it
                                // (in order); keep waiting.
                                Heard::Others if lock.mode.strict_order() => {}
                                Heard::Others => {
                                    // Reserved for another waiter: retry only if it
                                    // fails to claim it.
                                    let grace = Duration::from_millis(RESERVATION_MS);
                                    wake = (Instant::now() + jitter(grace)).min(deadline);
                                }
                            }
                        }
                        _ = sleep_until(wake) => break,
                    }
                }
            }
        }
    }
}

/// When a grant made now lapses if nobody confirms it (with a little jitter).
fn after_claim_window() -> Instant {
    Instant::now() + Duration::from_millis(CLAIM_MS) + small_jitter()
}

/// Log and count a grant.
fn granted(lock: &LockRequest<'_>, started: Instant, attempts: u32, token: u64, count: u32) {
    tracing::debug!(
        outcome = "granted",
        token,
        count,
        attempts,
        waited_us = started.elapsed().as_micros() as u64,
        "lock granted"
    );
    crate::metrics::acquisition(lock.series, "granted");
    crate::metrics::waited(lock.series, started.elapsed());
}

/// A release made this waiter the holder using the details its try `try_no` left: the
/// lease (its start and length) it may hold at once, or `None` if it must confirm with a
/// try first (that try is not remembered, too little of the claim window is left, or
/// replica acknowledgements must follow the grant).
///
/// The server's lease is `min(ttl, CLAIM_MS)` from the release, which ran after the try
/// that left the details, which ran after that try was first sent: measured from the first
/// send, the local lease ends no later than the server's (the drift allowance on top).
/// When the message gives the server time from that try to the grant (`waited_ms`), the
/// server's lease ends `waited_ms + min(ttl, CLAIM_MS)` of server time after the try ran,
/// so that much (less the drift allowance on all of it) is measured from the first send.
fn held_at_once(
    lock: &LockRequest<'_>,
    tries: &std::collections::VecDeque<(u32, Instant)>,
    try_no: u32,
    waited_ms: Option<u64>,
) -> Option<(Instant, Duration)> {
    if lock.replica_acks.is_some() {
        return None;
    }
    let (_, start) = tries.iter().find(|(n, _)| *n == try_no)?;
    let claim = Duration::from_millis(CLAIM_MS).min(lock.ttl);
    let lease = claim + Duration::from_millis(waited_ms.unwrap_or(0));
    let fire = crate::lease::valid_until(*start, lease)
        .checked_sub(crate::lease::deadline_margin(lease))?;
    (fire.saturating_duration_since(Instant::now()) >= claim / 2).then_some((*start, lease))
}

/// The acquire script call of this lock's mode, for request `req`.
fn acquire_call<'a>(
    lock: &LockRequest<'a>,
    owner_id: &str,
    req: &str,
    reentrant: bool,
    (wait_lease, queued, try_no): (Duration, bool, u32),
) -> crate::protocol::scripts::Call<'a> {
    crate::protocol::Acquire {
        mode: lock.mode,
        keys: lock.keys,
        owner_id,
        req,
        ttl: lock.ttl,
        reentrant,
        wait_lease,
        queued,
        metadata: lock.metadata,
        try_no,
    }
    .call(&lock.inner.scripts)
}

/// Run the acquire script for `req` until its outcome is known or `resolve_by` passes.
async fn attempt(
    lock: &LockRequest<'_>,
    owner_id: &str,
    req: &str,
    reentrant: bool,
    (wait_lease, queued, try_no): (Duration, bool, u32),
    resolve_by: Instant,
    pending: &mut PendingGrant,
) -> Result<Attempt> {
    let inner = &lock.inner;
    let mut maybe_applied = false;
    let mut first_send: Option<Instant> = None;
    let mut not_sent = 0u32;
    let mut backoff = Duration::from_millis(10);
    let mut last: Option<Failure> = None;
    loop {
        let now = Instant::now();
        // Never send with next to no time left: the reply could not arrive, and the
        // connection would be discarded for nothing.
        if resolve_by.saturating_duration_since(now) < crate::net::conn::MIN_BUDGET
            && last.is_some()
        {
            let failure = last.take().map(|f| f.describe()).unwrap_or_default();
            if maybe_applied {
                crate::metrics::acquisition(lock.series, "ambiguous");
                tracing::warn!(
                    lock = %lock.name,
                    outcome = "ambiguous",
                    "acquire outcome unknown at the deadline; releasing the possible grant in the background"
                );
                return Err(Error::new(
                    ErrorKind::Ambiguous,
                    format!(
                        "lock {:?}: Redis may have granted the lock but its reply did not arrive in time ({failure}); the possible grant is being released",
                        lock.name
                    ),
                ));
            }
            return Err(Error::new(
                ErrorKind::Connection,
                format!("lock {:?}: {failure}", lock.name),
            ));
        }
        let budget = resolve_by
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        let sent_at = Instant::now();
        first_send.get_or_insert(sent_at);
        pending.armed = true;
        let mut inv = acquire_call(
            lock,
            owner_id,
            req,
            reentrant,
            (wait_lease, queued || maybe_applied, try_no),
        );
        let result = match lock.replica_acks {
            None => inner
                .conn
                .eval_tagged(&mut inv, budget)
                .await
                .map(|r| (r, None)),
            Some((replicas, wait)) => {
                inner
                    .ack_conn
                    .eval_tagged_then_wait(&mut inv, budget, replicas, wait)
                    .await
            }
        };
        match result {
            Ok((reply, acks)) => {
                return match Acquired::decode(&reply) {
                    Ok(Acquired::Granted { token, count }) => Ok(Attempt::Granted {
                        token,
                        count,
                        sent_at: first_send.unwrap_or(sent_at),
                        acks,
                    }),
                    Ok(Acquired::Refused { pttl, reserved }) => {
                        pending.armed = false;
                        Ok(Attempt::Contended {
                            pttl,
                            reserved,
                            sent_at: first_send.unwrap_or(sent_at),
                        })
                    }
                    Err(unexpected) => Err(Error::new(
                        ErrorKind::Server,
                        format!("lock {:?}: {unexpected}", lock.name),
                    )),
                };
            }
            Err(Failure::Server(e)) => {
                pending.armed = maybe_applied;
                if maybe_applied {
                    // An earlier try may have been granted; this error says nothing
                    // about it.
                    crate::metrics::acquisition(lock.series, "ambiguous");
                    return Err(Error::new(
                        ErrorKind::Ambiguous,
                        format!(
                            "lock {:?}: an earlier try's outcome is unknown and the retry failed ({e}); the possible grant is being released",
                            lock.name
                        ),
                    )
                    .with_source(e));
                }
                return Err(Error::from_redis(&format!("acquire {:?}", lock.name), e));
            }
            Err(f @ Failure::NotSent(_)) => {
                pending.armed = maybe_applied;
                if !maybe_applied {
                    first_send = None;
                    not_sent += 1;
                    if not_sent >= 3 {
                        return Err(Error::new(
                            ErrorKind::Connection,
                            format!("lock {:?}: {}", lock.name, f.describe()),
                        )
                        .with_source_opt(f.into_redis()));
                    }
                }
                last = Some(f);
                let pause = jitter(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(200));
                sleep_until((Instant::now() + pause).min(resolve_by)).await;
            }
            Err(f @ Failure::Unknown(_)) => {
                crate::metrics::unknown_outcome(lock.series, "acquire");
                maybe_applied = true;
                pending.abandoned_connection = true;
                tracing::warn!(
                    lock = %lock.name,
                    outcome = "unknown",
                    cause = %f.describe(),
                    "acquire outcome unknown; retrying the same request"
                );
                last = Some(f);
            }
        }
    }
}

/// A grant that may exist at the server but has no guard yet. If dropped while armed
/// (the acquire was cancelled or ended ambiguous), it releases the grant in the background.
pub(super) struct PendingGrant {
    pub(super) inner: Arc<Inner>,
    pub(super) keys: Arc<LockKeys>,
    pub(super) owner_id: String,
    pub(super) req: String,
    pub(super) ttl: Duration,
    pub(super) armed: bool,
    /// A try went out on a connection that was then abandoned (its outcome unknown): that
    /// command may still reach Redis after the release, so the release re-checks.
    pub(super) abandoned_connection: bool,
}

impl Drop for PendingGrant {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::debug!(lock = %self.keys.lock, "releasing a possible grant of a cancelled or ambiguous acquire");
        let fut = release_in_background(
            self.inner.clone(),
            self.keys.clone(),
            std::mem::take(&mut self.owner_id),
            std::mem::take(&mut self.req),
            Instant::now() + self.ttl,
            self.abandoned_connection && !self.inner.conn.can_fence(),
        );
        self.inner.spawn_background(fut);
    }
}

/// A waiter's place in the lock's queue at the server. If the acquire ends without the
/// grant (timed out, failed, cancelled), the place is given up in the background, and a
/// lock already handed to this waiter is handed on.
struct Registration {
    inner: Arc<Inner>,
    keys: Arc<LockKeys>,
    req: String,
    active: bool,
}

impl Registration {
    /// The wait ended without a grant: give up the place now, before the caller hears "not
    /// acquired". For a lock, a permit or a writer, this also ends a grant a release made meanwhile (the grant
    /// message may still be on its way); if that cannot be done, the outcome is unknown
    /// (the place is then given up in the background).
    ///
    /// # Cancel safety
    /// Cancel-safe: dropped before the reply, the registration stays active and its `Drop`
    /// gives the place up (and ends such a grant) in the background.
    async fn leave_before_timeout(&mut self, name: &str) -> Result<()> {
        if !self.active || !self.keys.kind.granted_by_release() {
            return Ok(());
        }
        let inv = crate::protocol::Leave {
            keys: &self.keys,
            req: &self.req,
        }
        .call(&self.inner.scripts);
        let budget = 2 * self.inner.conn.response_timeout();
        match self.inner.conn.eval::<i64>(&inv, budget).await {
            Ok(left) => {
                self.active = false;
                if left == 2 {
                    tracing::debug!(lock = %self.keys.lock, "the wait ended as a release made this waiter the holder; that grant was ended");
                }
                Ok(())
            }
            Err(f) => Err(Error::new(
                ErrorKind::Ambiguous,
                format!(
                    "lock {name:?}: the wait ended, and giving up the place failed ({}); a release may have made this call the holder meanwhile, and that possible grant is being ended in the background",
                    f.describe()
                ),
            )),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let inner = self.inner.clone();
        let keys = self.keys.clone();
        let req = std::mem::take(&mut self.req);
        self.inner.spawn_background(async move {
            let inv = crate::protocol::Leave {
                keys: &keys,
                req: &req,
            }
            .call(&inner.scripts);
            let budget = 2 * inner.conn.response_timeout();
            if let Err(f) = inner.conn.eval::<i64>(&inv, budget).await {
                // The place expires with its registration at the server anyway.
                tracing::debug!(lock = %keys.lock, cause = %f.describe(), "leaving the waiter queue failed");
            }
        });
    }
}

/// How long a waiter sleeps when nothing wakes it.
fn fallback_delay(pttl: i64, confirmed: bool, backoff: &mut Duration) -> Duration {
    // Unconfirmed waiters poll faster than a handoff reservation lapses, so they do not
    // miss a lock handed to them.
    let cap = Duration::from_millis(RESERVATION_MS / 2);
    let ttl_left = u64::try_from(pttl)
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis);
    match ttl_left {
        // Releases are announced; only expiry is not: sleep until the lease runs out.
        Some(left) if confirmed => left + small_jitter(),
        Some(left) => {
            let d = left.min(*backoff);
            *backoff = (*backoff * 2).min(cap);
            jitter(d)
        }
        None => {
            let d = *backoff;
            *backoff = (*backoff * 2).min(cap);
            jitter(d)
        }
    }
}

/// 1 to 5 ms, so waiters of an expired lock do not all retry at the same instant.
fn small_jitter() -> Duration {
    crate::backend::random_between(Duration::from_millis(1), Duration::from_millis(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::jitter;

    #[test]
    fn confirmed_waiters_sleep_until_the_lease_runs_out() {
        let mut b = Duration::from_millis(5);
        let d = fallback_delay(5_000, true, &mut b);
        assert!(
            d >= Duration::from_millis(5_001) && d <= Duration::from_millis(5_005),
            "{d:?}"
        );
        assert_eq!(b, Duration::from_millis(5));
    }

    #[test]
    fn unconfirmed_waiters_back_off_up_to_a_cap() {
        let mut b = Duration::from_millis(5);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = fallback_delay(60_000, false, &mut b);
        }
        assert!(last <= Duration::from_millis(60), "{last:?}");
        assert!(last >= Duration::from_millis(50), "{last:?}");
    }

    #[test]
    fn jitter_adds_at_most_a_fifth() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(100) && j <= Duration::from_millis(120));
        }
    }
}
