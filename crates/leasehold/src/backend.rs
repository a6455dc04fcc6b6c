//! The topology seam: where one server, Sentinel, Cluster and RedLock differ in how a
//! client's server work is done. Today it holds the renewal dispatch (a RedLock batch goes
//! to every node with a quorum tally, a Cluster batch is split by slot, one server gets one
//! call per kind), implementing the scheduler's [`Renewals`] for the client context.
//!
//! Invariants: every renewal call waits for its reply no longer than the earliest deadline
//! among its leases (see [`plan`](crate::renew::plan)); each lease's outcome goes back to
//! the scheduler exactly once per call.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::conn::MIN_BUDGET;
use crate::context::Inner;
use crate::lease::LostReason;
use crate::protocol::Kept;
use crate::renew::{Renewal, Renewals, Renewer};

impl Renewals for Inner {
    fn renewer(&self) -> &Arc<Renewer> {
        &self.renewer
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    fn response_timeout(&self) -> Duration {
        self.conn.response_timeout()
    }

    fn send(self: &Arc<Self>, batch: Vec<Renewal>) {
        spawn_batch(self, batch);
    }
}

fn spawn_batch(client: &Arc<Inner>, batch: Vec<Renewal>) {
    if !client.nodes.is_empty() {
        crate::redlock::spawn_renewal(client, batch);
        return;
    }
    if client.cluster {
        // One script call may only touch one slot: one batch per slot.
        let mut by_slot: std::collections::HashMap<u16, Vec<Renewal>> =
            std::collections::HashMap::new();
        for r in batch {
            by_slot
                .entry(crate::keys::slot(&r.lease.keys.lock))
                .or_default()
                .push(r);
        }
        for (_, group) in by_slot {
            spawn_node_batch(client, group);
        }
        return;
    }
    spawn_node_batch(client, batch);
}

/// Renew `batch` (all on one node, and in one slot on a cluster): script calls for the
/// lock hashes among them and for the lease-set members (permits, readers), split by
/// [`plan`](crate::renew::plan).
fn spawn_node_batch(client: &Arc<Inner>, batch: Vec<Renewal>) {
    let (members, hashes): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|r| matches!(r.lease.keys.kind, crate::keys::Kind::Member { .. }));
    for (group, members) in [(hashes, false), (members, true)] {
        if group.is_empty() {
            continue;
        }
        let now = Instant::now();
        let deadlines: Vec<Instant> = group.iter().map(|r| r.lease.fire_at()).collect();
        let p = crate::renew::plan(&deadlines, now, client.conn.response_timeout());
        let mut slots: Vec<Option<Renewal>> = group.into_iter().map(Some).collect();
        for i in p.too_late {
            if let Some(r) = slots[i].take() {
                client.renewer.retry_soon(client, r);
            }
        }
        for (budget, idx) in p.calls {
            let calls: Vec<Renewal> = idx.into_iter().filter_map(|i| slots[i].take()).collect();
            spawn_script_batch(client, calls, members, now + budget);
        }
    }
}

/// Renew `batch` (leases of one kind, on one node and slot) with one script call whose
/// reply is awaited until `reply_by` at the latest.
fn spawn_script_batch(client: &Arc<Inner>, batch: Vec<Renewal>, members: bool, reply_by: Instant) {
    let inner = client.clone();
    client.handle.spawn(async move {
        let items = batch.iter().map(Renewal::item);
        let mut inv = crate::protocol::renew(&inner.scripts, members, items);
        let sent = Instant::now();
        // Never wait past the earliest deadline in the batch: after it, a late success
        // would refresh a lease its holder was already told is lost.
        let budget = reply_by.saturating_duration_since(sent);
        if budget < MIN_BUDGET {
            // The task started too late (a busy runtime): try again, the deadline decides.
            for r in batch {
                inner.renewer.retry_soon(&inner, r);
            }
            return;
        }
        let result = inner.conn.eval_tagged(&mut inv, budget).await;
        inner.renewer.note_call(sent.elapsed());
        let decoded = match result {
            Ok(codes) => {
                crate::protocol::decode_renewals(&codes, batch.len()).map_err(|u| u.to_string())
            }
            Err(f) => Err(f.describe()),
        };
        match decoded {
            Ok(kept) => {
                let refused = kept.iter().filter(|k| **k != Kept::Confirmed).count();
                if refused > 0 {
                    tracing::warn!(leases = refused, "renewal refused: leases lost");
                }
                for (r, k) in batch.into_iter().zip(kept) {
                    match k {
                        Kept::Confirmed => inner.renewer.renewed_one(&inner, r, sent),
                        Kept::HeldByOther => {
                            inner.renewer.refused_one(r.lease, LostReason::HeldByOther)
                        }
                        Kept::NotHeld => inner.renewer.refused_one(r.lease, LostReason::Expired),
                    }
                }
            }
            Err(cause) => {
                inner.renewer.note_failed_call();
                tracing::warn!(leases = batch.len(), %cause, "lease renewal failed; retrying");
                for r in batch {
                    inner.renewer.retry_soon(&inner, r);
                }
            }
        }
    });
}
