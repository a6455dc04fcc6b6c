//! A lock set's members taken in one script (`set_acquire.lua`) where one script reaches
//! them all: one server (also through Sentinel), or one Cluster slot. Every member is
//! granted, or none; nothing is queued. A lost reply is resolved by re-running the same
//! call (the same request ids, so nothing is granted twice); if the outcome stays unknown,
//! whatever may have been granted is released in the background.

use std::sync::Arc;

use tokio::time::Instant;

use crate::backend::node::PendingGrant;
use crate::backend::{Grant, Hold, LockRequest, Topology};
use crate::client::context::Inner;
use crate::error::{Error, ErrorKind, Result};
use crate::lease::millis;
use crate::net::failure::Failure;

/// One member: its lock and who holds it.
pub(crate) struct Member<'a> {
    pub lock: LockRequest<'a>,
    pub hold: &'a Hold,
}

/// What the one script found.
pub(crate) enum AtOnce {
    /// Every member is held, in the set's order.
    Granted(Vec<Grant>),
    /// Member `index` (the first in order) is held by another owner; nothing was taken.
    Refused { index: usize },
}

/// Where a lock (by its hash key) falls in a lock set's canonical order, before its name:
/// its hash slot on Redis Cluster (so that members sharing a slot are neighbours, taken by
/// one script), else 0 (the names alone decide).
pub(crate) fn order_key(inner: &Inner, lock_key: &str) -> u16 {
    match Topology::of(inner) {
        Topology::Cluster => crate::net::coalesce::slot_of(lock_key.as_bytes()),
        Topology::Server | Topology::RedLock => 0,
    }
}

/// Whether one script reaches every member on this client's topology.
pub(crate) fn reachable(inner: &Inner, members: &[Member<'_>]) -> bool {
    match Topology::of(inner) {
        Topology::Server => true,
        Topology::Cluster => {
            let slot = |m: &Member<'_>| crate::net::coalesce::slot_of(m.lock.keys.lock.as_bytes());
            members.iter().all(|m| slot(m) == slot(&members[0]))
        }
        Topology::RedLock => false,
    }
}

/// Take every member in one script (the caller checked [`reachable`]); each member's
/// lease runs from the first send.
pub(crate) async fn acquire(inner: &Arc<Inner>, members: &[Member<'_>]) -> Result<AtOnce> {
    let first = &members[0].lock;
    let reqs: Vec<String> = members.iter().map(|_| crate::random_id()).collect();
    let mut pending: Vec<PendingGrant> = members
        .iter()
        .zip(&reqs)
        .map(|(m, req)| PendingGrant {
            inner: inner.clone(),
            keys: m.lock.keys.clone(),
            owner_id: m.hold.owner_id.clone(),
            req: req.clone(),
            ttl: m.lock.ttl,
            armed: false,
            abandoned_connection: false,
        })
        .collect();
    let started = Instant::now();
    let resolve_by =
        started + (2 * inner.conn.response_timeout()).max(2 * crate::net::conn::MIN_BUDGET);
    let names: Vec<&str> = members.iter().map(|m| &**m.lock.name).collect();
    let context = format!("acquire the lock set {names:?}");
    let call = || {
        let mut inv = inner.scripts.set_acquire.prepare_invoke();
        for m in members {
            inv.key(&m.lock.keys.lock)
                .key(&m.lock.keys.fence)
                .key(&m.lock.keys.next);
        }
        for (m, req) in members.iter().zip(&reqs) {
            inv.arg(&m.hold.owner_id).arg(req);
        }
        inv.arg(millis(first.ttl))
            .arg(u8::from(members[0].hold.reentrant))
            .arg(&**first.metadata);
        inv
    };
    // From the first send on, the members may be granted: released unless confirmed.
    for p in &mut pending {
        p.armed = true;
    }
    let result = Box::pin(crate::backend::resolve(inner, call, resolve_by)).await;
    let unknown = match &result {
        Ok((_, saw_unknown)) => *saw_unknown,
        Err(f) => matches!(f, Failure::Unknown(_)),
    };
    if unknown {
        for (m, p) in members.iter().zip(&mut pending) {
            // A try went out on a connection that was then abandoned.
            p.abandoned_connection = true;
            crate::metrics::unknown_outcome(m.lock.series, "acquire");
        }
    }
    let reply = match result {
        Ok((reply, _)) => reply,
        Err(f) => {
            if unknown {
                for m in members {
                    crate::metrics::acquisition(m.lock.series, "ambiguous");
                }
            } else {
                // Nothing was applied: nothing to release.
                for p in &mut pending {
                    p.armed = false;
                }
            }
            // Still armed after an unknown outcome: dropping `pending` releases what may
            // have been granted.
            return Err(crate::net::failure::outcome_error(
                &context,
                f,
                "every member that may have been granted is released in the background",
            ));
        }
    };
    let outcome = decode(&reply, members.len(), &reqs, started).ok_or_else(|| {
        Error::new(
            ErrorKind::Server,
            format!("{context}: unexpected reply {reply:?}"),
        )
    });
    // Refused after an unknown outcome: an earlier try may have granted some members
    // whose leases another owner has since outlived; release them. A reply that cannot be
    // read releases them too.
    let settled = match &outcome {
        Ok(AtOnce::Granted(_)) => true,
        Ok(AtOnce::Refused { .. }) => !unknown,
        Err(_) => false,
    };
    if settled {
        for p in &mut pending {
            p.armed = false;
        }
    }
    if let Ok(AtOnce::Granted(grants)) = &outcome {
        for (m, g) in members.iter().zip(grants) {
            crate::metrics::acquisition(m.lock.series, "granted");
            tracing::debug!(lock = %m.lock.name, token = g.token, "granted with its lock set");
        }
    }
    outcome
}

/// The script's reply: `{1, (token, count, pttl) per member}` or `{0, i, pttl, reserved}`.
fn decode(reply: &[i64], n: usize, reqs: &[String], started: Instant) -> Option<AtOnce> {
    match reply.split_first()? {
        (1, rest) if rest.len() == 3 * n => Some(AtOnce::Granted(
            rest.chunks(3)
                .zip(reqs)
                .map(|(g, req)| {
                    Some(Grant {
                        req: req.clone(),
                        token: u64::try_from(g[0]).ok()?,
                        count: u32::try_from(g[1]).ok()?,
                        start: started,
                        shortfall: None,
                        claim: None,
                    })
                })
                .collect::<Option<Vec<_>>>()?,
        )),
        (0, [i, _, _]) => {
            let index = usize::try_from(*i).ok()?.checked_sub(1)?;
            (index < n).then_some(AtOnce::Refused { index })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_decode_into_grants_or_the_refusing_member() {
        let reqs = vec!["a".to_string(), "b".to_string()];
        let now = Instant::now();
        let Some(AtOnce::Granted(g)) = decode(&[1, 10, 1, 500, 11, 2, 900], 2, &reqs, now) else {
            panic!("granted");
        };
        assert_eq!((g[1].token, g[1].count, g[1].req.as_str()), (11, 2, "b"));
        assert!(matches!(
            decode(&[0, 2, 300, 0], 2, &reqs, now),
            Some(AtOnce::Refused { index: 1 })
        ));
        assert!(decode(&[0, 3, 300, 0], 2, &reqs, now).is_none());
        assert!(decode(&[1, 10, 1], 2, &reqs, now).is_none());
    }
}
