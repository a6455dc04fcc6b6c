//! RedLock: one lock over N independent masters, held by a majority.
//!
//! Acquire sends the ordinary acquire script (without joining any waiter queue) to every
//! node at once, each bounded by the node timeout, and stops listening as soon as a
//! majority (N/2 + 1) granted it or every node answered. The lease is valid until
//! `start + ttl − drift`, where `start` is the time the round began, so the time the round
//! took is already subtracted. A round without a quorum within validity releases the
//! request on *every* node — including nodes that refused or did not answer, since a reply
//! may have been lost — and, if the caller waits, is retried after a random delay.
//!
//! Fencing tokens: each node issues its own increasing token. The grant's token is the
//! largest one among the nodes that granted it; if they differ, that token is written back
//! (`raise_fence.lua`) to the nodes that granted, while they still hold the grant, and the
//! grant only counts once a majority took it. Any later grant needs a majority too, which
//! shares a node with that majority, and that node cannot grant again before this grant
//! ended there — after its counter was raised. So each grant's token is strictly greater
//! than every earlier grant's. In the steady state all counters agree and no second round
//! is needed. PROTOCOL.md states the rule.
//!
//! Renewal, extend and release go to every node; renewal and extend count only with a
//! majority confirming within validity, and the lease is lost once a majority refused it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::backend::{Grant, Hold, LockRequest};
use crate::client::context::Inner;
use crate::error::{Error, ErrorKind, NodeFailure, Result};
use crate::lease::renew::Renewal;
use crate::lease::valid_until;
use crate::lease::LeaseState;
use crate::lease::ReleaseOutcome;
use crate::net::conn::Failure;
use crate::protocol::keys::LockKeys;
use crate::protocol::{Acquire, Acquired, Extend, Kept, Mode, RaiseFence, Release, Released};

/// The number of nodes that make a majority of `n`.
pub(crate) fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// What one node answered to one request.
enum NodeReply {
    Granted {
        token: u64,
        count: u32,
    },
    Contended {
        pttl: i64,
    },
    /// No answer; `maybe_applied`: the request may have run there (sent, outcome unknown).
    Failed {
        reason: String,
        maybe_applied: bool,
    },
}

/// What is known of one node's part in one acquire round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Sent, no answer yet (or no longer listened to): it may run there.
    InFlight,
    Granted,
    /// Refused, or never sent: nothing to take back.
    Nothing,
    /// Failed with an unknown outcome.
    MaybeApplied,
}

impl Part {
    fn may_hold(self) -> bool {
        self != Part::Nothing
    }
}

fn node_name(node: &Inner) -> String {
    node.display_url.clone()
}

async fn node_acquire(
    node: Arc<Inner>,
    keys: Arc<LockKeys>,
    hold: (String, String, bool),
    ttl: Duration,
    metadata: Arc<str>,
    budget: Duration,
) -> NodeReply {
    let (owner_id, req, reentrant) = hold;
    // Quorum rounds never queue at a node: waiting is the rounds' retries.
    let mut inv = Acquire {
        mode: Mode::Exclusive,
        keys: &keys,
        owner_id: &owner_id,
        req: &req,
        ttl,
        reentrant,
        wait_lease: Duration::ZERO,
        queued: false,
        metadata: &metadata,
        try_no: 1,
    }
    .call(&node.scripts);
    match node.conn.eval_tagged(&mut inv, budget).await {
        Ok(reply) => match Acquired::decode(&reply) {
            Ok(Acquired::Granted { token, count }) => NodeReply::Granted { token, count },
            Ok(Acquired::Refused { pttl, .. }) => NodeReply::Contended { pttl },
            Err(unexpected) => NodeReply::Failed {
                reason: unexpected.to_string(),
                maybe_applied: true,
            },
        },
        Err(f) => NodeReply::Failed {
            reason: f.describe(),
            maybe_applied: !matches!(f, Failure::NotSent(_)),
        },
    }
}

/// A request that may have been granted on some nodes and has no guard yet: dropped while
/// armed (the acquire was cancelled), it is released in the background on every node where
/// it may have run ([`crate::backend::cleanup`]).
struct Pending {
    inner: Arc<Inner>,
    keys: Arc<LockKeys>,
    owner_id: String,
    req: String,
    ttl: Duration,
    parts: Vec<Part>,
    armed: bool,
}

impl Pending {
    /// Hand every node where the request may hold to the background clean-up.
    fn release_later(&mut self, only: impl Fn(usize) -> bool) {
        for (i, part) in self.parts.iter_mut().enumerate() {
            if part.may_hold() && only(i) {
                crate::backend::cleanup::release_later(
                    &self.inner.nodes[i],
                    &self.keys,
                    &self.owner_id,
                    &self.req,
                    self.ttl,
                );
                *part = Part::Nothing;
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.armed {
            self.release_later(|_| true);
        }
    }
}

/// Acquire `lock` on a majority of the client's nodes.
pub(crate) async fn acquire(
    lock: LockRequest<'_>,
    hold: &Hold,
    started: Instant,
    deadline: Instant,
    waiting: bool,
) -> Result<Grant> {
    let inner = lock.inner;
    let n = inner.nodes.len();
    let needed = quorum(n);
    let budget = inner.node_timeout;
    let mut backoff = Duration::from_millis(10);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let req = crate::random_id();
        let mut pending = Pending {
            inner: inner.clone(),
            keys: lock.keys.clone(),
            owner_id: hold.owner_id.clone(),
            req: req.clone(),
            ttl: lock.ttl,
            parts: vec![Part::InFlight; n],
            armed: true,
        };
        let start = Instant::now();
        let validity_end = valid_until(start, lock.ttl);
        // The first round always gets the whole node timeout (one complete attempt, as
        // `try_acquire` promises); later rounds stop listening at the caller's deadline.
        let round_end = if attempts == 1 {
            start + budget
        } else {
            (start + budget).min(deadline.max(start + crate::net::conn::MIN_BUDGET))
        };
        let mut round: FuturesUnordered<_> = inner
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let fut = node_acquire(
                    node.clone(),
                    lock.keys.clone(),
                    (hold.owner_id.clone(), req.clone(), hold.reentrant),
                    lock.ttl,
                    lock.metadata.clone(),
                    round_end.saturating_duration_since(start),
                );
                async move { (i, fut.await) }
            })
            .collect();
        let mut granted: Vec<(usize, u64, u32)> = Vec::new();
        let mut contended: Vec<i64> = Vec::new();
        let mut failures: Vec<NodeFailure> = Vec::new();
        while let Ok(Some((i, reply))) = timeout_at(round_end, round.next()).await {
            pending.parts[i] = match reply {
                NodeReply::Granted { token, count } => {
                    granted.push((i, token, count));
                    Part::Granted
                }
                NodeReply::Contended { pttl } => {
                    contended.push(pttl);
                    Part::Nothing
                }
                NodeReply::Failed {
                    reason,
                    maybe_applied,
                } => {
                    failures.push(NodeFailure {
                        node: node_name(&inner.nodes[i]),
                        reason,
                    });
                    if maybe_applied {
                        Part::MaybeApplied
                    } else {
                        Part::Nothing
                    }
                }
            };
            if granted.len() >= needed {
                break; // the stragglers' answers cannot change the outcome
            }
        }
        drop(round);
        if granted.len() < needed {
            for (i, part) in pending.parts.iter().enumerate() {
                if *part == Part::InFlight {
                    failures.push(NodeFailure {
                        node: node_name(&inner.nodes[i]),
                        reason: "no reply in time".into(),
                    });
                }
            }
        }
        let mut outcome_failures = failures.clone();
        if granted.len() >= needed && Instant::now() + crate::net::conn::MIN_BUDGET < validity_end {
            let token = granted.iter().map(|g| g.1).max().unwrap_or_default();
            let count = granted.iter().map(|g| g.2).max().unwrap_or(1);
            let agreed = granted.iter().all(|g| g.1 == token);
            let settled = if agreed {
                true
            } else {
                let (raised, raise_failures) =
                    raise_fences(inner, lock.keys, &hold.owner_id, &req, token, &granted).await;
                outcome_failures.extend(raise_failures);
                raised >= needed
            };
            if settled && Instant::now() + crate::net::conn::MIN_BUDGET < validity_end {
                pending.armed = false;
                tracing::debug!(
                    outcome = "granted",
                    token,
                    nodes = granted.len(),
                    attempts,
                    "RedLock quorum granted"
                );
                crate::metrics::acquisition(lock.series, "granted");
                crate::metrics::waited(lock.series, started.elapsed());
                return Ok(Grant {
                    req,
                    token,
                    count,
                    start,
                    shortfall: None,
                    claim: None,
                });
            }
        }
        // No quorum within validity: take back whatever may have been granted. Nodes that
        // granted just answered: release there now, within the caller's wait (so the next
        // round does not meet this one's grant). Nodes whose outcome is unknown, and
        // releases that fail, go to the background clean-up, which releases as soon as the
        // node answers again.
        let parts = pending.parts.clone();
        pending.release_later(|i| parts[i] != Part::Granted);
        let now = Instant::now();
        let release_budget = if waiting {
            budget.min(deadline.saturating_duration_since(now))
        } else {
            budget
        };
        let grants: Vec<usize> = (0..n)
            .filter(|i| pending.parts[*i] == Part::Granted)
            .collect();
        if release_budget >= crate::net::conn::MIN_BUDGET && !grants.is_empty() {
            let results = release_on(
                inner,
                &grants,
                lock.keys,
                &hold.owner_id,
                &req,
                release_budget,
            )
            .await;
            for (i, r) in grants.iter().zip(results) {
                if r.is_ok() {
                    pending.parts[*i] = Part::Nothing;
                }
            }
        }
        pending.release_later(|_| true);
        pending.armed = false;
        let answered = granted.len() + contended.len();
        let now = Instant::now();
        let retry_at = now + crate::backend::random_between(backoff / 2, backoff);
        backoff = (backoff * 2).min(Duration::from_millis(200));
        if !waiting || retry_at >= deadline {
            if answered < needed {
                crate::metrics::acquisition(lock.series, "no_quorum");
                let list = crate::error::list_failures(&outcome_failures);
                return Err(Error::new(
                    ErrorKind::NoQuorum { answered, needed },
                    format!(
                        "lock {:?}: only {answered} of {n} RedLock nodes answered, {needed} needed ({list}); released where granted, and on the other nodes as soon as they answer",
                        lock.name
                    ),
                )
                .with_node_failures(outcome_failures));
            }
            if !waiting {
                crate::metrics::acquisition(lock.series, "contended");
                return Err(Error::new(
                    ErrorKind::Contended,
                    format!(
                        "lock {:?} is held by another owner on {} of {n} nodes (granted on {})",
                        lock.name,
                        contended.len(),
                        granted.len()
                    ),
                )
                .with_node_failures(outcome_failures));
            }
            crate::metrics::acquisition(lock.series, "timed_out");
            return Err(
                Error::timed_out(lock.name, started.elapsed()).with_node_failures(outcome_failures)
            );
        }
        crate::metrics::contended(lock.series);
        // Wait no longer than the shortest lease still in the way, and never in step with
        // other contenders.
        let shortest = contended
            .iter()
            .filter(|p| **p > 0)
            .min()
            .map(|p| Duration::from_millis(u64::try_from(*p).unwrap_or(0)));
        let at = match shortest {
            Some(left) => retry_at.min(now + left + Duration::from_millis(1)),
            None => retry_at,
        };
        sleep_until(at.min(deadline)).await;
    }
}

/// Write `token` back to the nodes in `granted`; returns how many still held the grant and
/// took it, and the failures.
async fn raise_fences(
    inner: &Inner,
    keys: &Arc<LockKeys>,
    owner_id: &str,
    req: &str,
    token: u64,
    granted: &[(usize, u64, u32)],
) -> (usize, Vec<NodeFailure>) {
    let calls = granted.iter().map(|(i, ..)| {
        let node = inner.nodes[*i].clone();
        let keys = keys.clone();
        async move {
            let mut inv = RaiseFence {
                keys: &keys,
                owner_id,
                req,
                token,
            }
            .call(&node.scripts);
            let r = node.conn.eval_tagged(&mut inv, inner.node_timeout).await;
            (node, r)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut raised = 0;
    let mut failures = Vec::new();
    for (node, r) in results {
        match r {
            Ok(reply) if RaiseFence::raised(&reply) => raised += 1,
            Ok(_) => failures.push(NodeFailure {
                node: node_name(&node),
                reason: "the grant ended there before its fencing token was settled".into(),
            }),
            Err(f) => failures.push(NodeFailure {
                node: node_name(&node),
                reason: f.describe(),
            }),
        }
    }
    (raised, failures)
}

/// Run the release script once on each of the nodes `which`, at once.
async fn release_on(
    inner: &Inner,
    which: &[usize],
    keys: &LockKeys,
    owner_id: &str,
    req: &str,
    budget: Duration,
) -> Vec<std::result::Result<Released, Failure>> {
    let release = Release {
        keys,
        owner_id,
        req,
    };
    let calls = which.iter().map(|i| async move {
        let node = &inner.nodes[*i];
        let mut inv = release.call(&node.scripts);
        node.conn
            .eval_tagged(&mut inv, budget)
            .await
            .map(|reply| Released::decode(&reply))
    });
    futures_util::future::join_all(calls).await
}

/// Release a quorum hold (see [`LockGuard::release`]). `lease_ok_at_send`: the holder's
/// lease was still valid when the release was sent, so a majority held it then.
pub(crate) async fn release(
    inner: &Arc<Inner>,
    st: &LeaseState,
    lease_ok_at_send: bool,
) -> Result<ReleaseOutcome> {
    let n = inner.nodes.len();
    let needed = quorum(n);
    let budget = 2 * inner
        .conn
        .response_timeout()
        .min(inner.node_timeout.max(Duration::from_millis(50)));
    let all: Vec<usize> = (0..n).collect();
    let results = release_on(inner, &all, &st.keys, &st.owner_id, &st.req, budget).await;
    let (mut released, mut other, mut answered) = (0, 0, 0);
    let mut failures = Vec::new();
    for (node, r) in inner.nodes.iter().zip(results) {
        match r {
            Ok(outcome) => {
                answered += 1;
                if outcome.released() {
                    released += 1;
                } else if outcome == Released::HeldByOther {
                    other += 1;
                }
            }
            Err(f) => {
                failures.push(NodeFailure {
                    node: node_name(node),
                    reason: f.describe(),
                });
                // The node may still hold the grant (or run a renewal it holds on to when
                // it answers again): release there once it does.
                crate::backend::cleanup::release_later(
                    node,
                    &st.keys,
                    &st.owner_id,
                    &st.req,
                    st.ttl,
                );
            }
        }
    }
    if answered == 0 {
        let list = crate::error::list_failures(&failures);
        return Err(Error::new(
            ErrorKind::Connection,
            format!(
                "release {:?}: no RedLock node answered ({list}); retrying in the background",
                st.name
            ),
        )
        .with_node_failures(failures));
    }
    Ok(
        if released >= needed || (released > 0 && lease_ok_at_send) {
            ReleaseOutcome::Released
        } else if other >= needed {
            ReleaseOutcome::HeldByOther
        } else {
            ReleaseOutcome::Expired
        },
    )
}

/// What a round of extend or renewal found across the nodes for one lease.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub ok: usize,
    pub expired: usize,
    pub other: usize,
}

impl Tally {
    pub(crate) fn add(&mut self, kept: Kept) {
        match kept {
            Kept::Confirmed => self.ok += 1,
            Kept::HeldByOther => self.other += 1,
            Kept::NotHeld => self.expired += 1,
        }
    }

    /// `Some(true)`: a majority confirmed; `Some(false)`: a majority can no longer
    /// confirm (too many refused); `None`: undecided (nodes failed to answer).
    pub(crate) fn verdict(&self, n: usize) -> Option<bool> {
        let needed = quorum(n);
        if self.ok >= needed {
            Some(true)
        } else if self.expired + self.other > n - needed {
            Some(false)
        } else {
            None
        }
    }

    pub(crate) fn lost_reason(&self) -> crate::LostReason {
        if self.other > self.expired {
            crate::LostReason::HeldByOther
        } else {
            crate::LostReason::Expired
        }
    }
}

/// Extend a quorum hold to last at least `ttl` from now (see [`LockGuard::extend`]).
pub(crate) async fn extend(inner: &Arc<Inner>, st: &LeaseState, ttl: Duration) -> Result<()> {
    let n = inner.nodes.len();
    let sent = Instant::now();
    let calls = inner.nodes.iter().map(|node| async move {
        let mut inv = Extend {
            keys: &st.keys,
            owner_id: &st.owner_id,
            req: &st.req,
            ttl,
        }
        .call(&node.scripts);
        (
            node.clone(),
            node.conn.eval_tagged(&mut inv, inner.node_timeout).await,
        )
    });
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for (node, r) in futures_util::future::join_all(calls).await {
        match r {
            Ok(reply) => tally.add(Kept::decode_extend(&reply)),
            Err(f) => failures.push(NodeFailure {
                node: node_name(&node),
                reason: f.describe(),
            }),
        }
    }
    let lost = |reason: crate::LostReason| {
        Error::new(
            ErrorKind::LeaseLost(reason),
            format!("lock {:?}: the lease was already lost: {reason}", st.name),
        )
    };
    match tally.verdict(n) {
        Some(true) if Instant::now() < valid_until(sent, ttl) => match st.lost_reason() {
            Some(reason) => Err(lost(reason)),
            None => {
                st.confirm(sent, ttl);
                Ok(())
            }
        },
        Some(false) => {
            let reason = tally.lost_reason();
            st.lose(reason);
            let why = if reason == crate::LostReason::HeldByOther {
                crate::NotHeldReason::HeldByOther
            } else {
                crate::NotHeldReason::Expired
            };
            Err(Error::not_held(&st.name, why).with_node_failures(failures))
        }
        _ => {
            let list = crate::error::list_failures(&failures);
            Err(Error::new(
                ErrorKind::NoQuorum {
                    answered: tally.ok + tally.expired + tally.other,
                    needed: quorum(n),
                },
                format!(
                    "extend {:?}: only {} of {n} RedLock nodes confirmed ({list}); the deadline is unchanged",
                    st.name, tally.ok
                ),
            )
            .with_node_failures(failures))
        }
    }
}

/// Release a dropped quorum hold on every node in the background: one try per node at
/// once, concurrently; a node that does not answer it goes to that node's clean-up list
/// (released as soon as it answers again).
pub(crate) fn release_dropped(inner: &Arc<Inner>, st: &LeaseState) {
    for node in &inner.nodes {
        let (n, keys) = (node.clone(), st.keys.clone());
        let (owner_id, req, ttl) = (st.owner_id.clone(), st.req.clone(), st.ttl);
        node.spawn_background(async move {
            let mut inv = Release {
                keys: &keys,
                owner_id: &owner_id,
                req: &req,
            }
            .call(&n.scripts);
            if n.conn
                .eval_tagged(&mut inv, n.conn.response_timeout())
                .await
                .is_err()
            {
                crate::backend::cleanup::release_later(&n, &keys, &owner_id, &req, ttl);
            }
        });
    }
}

/// Renew a batch of quorum leases: the batch goes to every node at once (one script call
/// per node and [`plan`](crate::lease::renew::plan) group), and each lease is confirmed, lost or
/// retried by its own tally.
pub(crate) fn spawn_renewal(client: &Arc<Inner>, batch: Vec<Renewal>) {
    crate::backend::in_planned_calls(client, batch, |group, reply_by| {
        spawn_quorum_renewal(client, group, reply_by);
    });
}

fn spawn_quorum_renewal(client: &Arc<Inner>, batch: Vec<Renewal>, reply_by: Instant) {
    let inner = client.clone();
    let span = tracing::debug_span!("leasehold.renew", leases = batch.len(), quorum = true);
    client.handle.spawn(tracing::Instrument::instrument(
        async move {
            let sent = Instant::now();
            let budget = reply_by.saturating_duration_since(sent);
            if budget < crate::net::conn::MIN_BUDGET {
                for r in batch {
                    inner.renewer.retry_soon(&inner, r);
                }
                return;
            }
            let batch_ref = &batch;
            let calls = inner.nodes.iter().map(|node| async move {
                let items = batch_ref.iter().map(Renewal::item);
                let mut inv = crate::protocol::renew(&node.scripts, false, items);
                let reply = node.conn.eval_tagged(&mut inv, budget).await;
                reply.map(|codes| crate::protocol::decode_renewals(&codes, batch_ref.len()))
            });
            let results = futures_util::future::join_all(calls).await;
            inner.renewer.note_call(sent.elapsed());
            let n = inner.nodes.len();
            for (i, r) in batch.into_iter().enumerate() {
                let mut tally = Tally::default();
                for kept in results.iter().flatten().flatten() {
                    if let Some(k) = kept.get(i) {
                        tally.add(*k);
                    }
                }
                match tally.verdict(n) {
                    Some(true) => inner.renewer.renewed_one(&inner, r, sent),
                    Some(false) => inner.renewer.refused_one(r.lease, tally.lost_reason()),
                    None => inner.renewer.retry_soon(&inner, r),
                }
            }
        },
        span,
    ));
}
