//! Read-only inspection of a lock (the holder metadata itself is in `lock/holder.rs`).
//!
//! A new grant stores who holds it — host name, process id and an optional label — as a
//! small JSON object in the lock hash, under the same TTL as the lock. [`Client::inspect`]
//! reads a lock's holder, remaining TTL, fencing token, hold count and live waiters in
//! one read-only script, without taking the lock. The server work of inspect, list and
//! force release is the backend seam's (`backend/keyspace.rs`); this module checks the
//! caller's input and shapes the replies.

use std::time::Duration;

use serde::Serialize;

use crate::backend::keyspace::{HolderReply, InspectReply, Views};
use crate::client::Client;
use crate::error::Result;
use crate::protocol::keys::{validate_name, LockKeys};

pub use crate::lock::holder::HolderMetadata;

/// The current holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HolderInfo {
    /// The holder's owner id.
    pub owner_id: String,
    /// The fencing token of the current grant.
    pub fencing_token: u64,
    /// How many holds the owner has (more than 1 when re-entered).
    pub hold_count: u32,
    /// Time left on the lease at the server; `None` when the key has no TTL (leasehold
    /// never writes one: something else did, and the lock never expires by itself).
    #[serde(rename = "ttl_remaining_ms", serialize_with = "as_millis")]
    pub ttl_remaining: Option<Duration>,
    /// What the holder said about itself.
    pub metadata: HolderMetadata,
}

/// A lock's state, read without taking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// The holder, if the lock is held.
    pub holder: Option<HolderInfo>,
    /// Waiters registered at the server whose registration has not expired.
    pub waiters: u64,
    /// The last fencing token issued for this name, if the counter exists.
    pub last_token: Option<u64>,
    /// RedLock: each node's view (empty otherwise). [`holder`](Self::holder) is then the
    /// holder a majority of nodes agree on, with the shortest TTL among them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeView>,
}

/// One RedLock node's view of a lock (see [`LockInfo::nodes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NodeView {
    /// The node's address (without credentials).
    pub node: String,
    /// The holder this node knows of.
    pub holder: Option<HolderInfo>,
    /// Why the node could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The holder a majority of `views` agree on: the same owner id on at least `needed`
/// nodes. Its token is the one most of those nodes store (a quorum grant writes its
/// settled token back to the nodes that granted it; a node that granted too late keeps
/// its own); its TTL is the shortest among them.
fn agreed(views: &[NodeView], needed: usize) -> Option<HolderInfo> {
    let holders: Vec<&HolderInfo> = views.iter().filter_map(|v| v.holder.as_ref()).collect();
    holders.iter().find_map(|h| {
        let same: Vec<&HolderInfo> = holders
            .iter()
            .copied()
            .filter(|o| o.owner_id == h.owner_id)
            .collect();
        if same.len() < needed {
            return None;
        }
        let votes = |t: u64| same.iter().filter(|o| o.fencing_token == t).count();
        let token = same
            .iter()
            .map(|o| o.fencing_token)
            .max_by_key(|t| (votes(*t), *t))?;
        let mut best = (*same.iter().find(|o| o.fencing_token == token)?).clone();
        // The shortest TTL; a node whose key has none counts as the longest.
        best.ttl_remaining = same
            .iter()
            .map(|o| o.ttl_remaining)
            .min_by_key(|t| t.unwrap_or(Duration::MAX))?;
        Some(best)
    })
}

/// Too few RedLock nodes answered to judge by quorum.
fn no_quorum(what: &str, views: &[NodeView]) -> Option<crate::Error> {
    let answered = views.iter().filter(|v| v.error.is_none()).count();
    let needed = crate::backend::quorum::quorum(views.len());
    if answered >= needed {
        return None;
    }
    let failures: Vec<crate::NodeFailure> = views
        .iter()
        .filter_map(|v| {
            v.error.as_ref().map(|e| crate::NodeFailure {
                node: v.node.clone(),
                reason: e.clone(),
            })
        })
        .collect();
    Some(
        crate::Error::new(
            crate::ErrorKind::NoQuorum { answered, needed },
            format!(
                "{what}: only {answered} of {} RedLock nodes answered ({})",
                views.len(),
                crate::error::list_failures(&failures)
            ),
        )
        .with_node_failures(failures),
    )
}

/// A TTL in milliseconds, `null` for none.
pub(crate) fn as_millis<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

/// A server's PTTL reply as a TTL: `None` for a key without one (`-1`).
pub(crate) fn ttl_from(pttl: i64) -> Option<Duration> {
    (pttl != -1).then(|| Duration::from_millis(u64::try_from(pttl).unwrap_or(0)))
}

pub(crate) fn holder_from(
    owner: String,
    token: &str,
    count: &str,
    meta: &str,
    pttl: i64,
) -> Option<HolderInfo> {
    (!owner.is_empty()).then(|| HolderInfo {
        owner_id: owner,
        fencing_token: token.parse().unwrap_or_default(),
        hold_count: count.parse().unwrap_or_default(),
        ttl_remaining: ttl_from(pttl),
        metadata: serde_json::from_str(meta).unwrap_or_default(),
    })
}

impl Client {
    /// Read lock `name`'s holder, remaining TTL, fencing token, hold count and live
    /// waiters, without taking it.
    ///
    /// # Cancel safety
    /// Cancel-safe: the script only reads.
    pub async fn inspect(&self, name: &str) -> Result<LockInfo> {
        validate_name(name)?;
        self.inner.check_open()?;
        let keys = LockKeys::new(&self.inner.prefix, name);
        let shape = |(owner, token, count, meta, pttl, waiters, fence): InspectReply| {
            let holder = holder_from(owner, &token, &count, &meta, pttl);
            LockInfo {
                name: name.to_string(),
                holder,
                waiters: u64::try_from(waiters).unwrap_or(0),
                last_token: fence.parse().ok(),
                nodes: Vec::new(),
            }
        };
        match crate::backend::keyspace::inspect(&self.inner, name, &keys).await? {
            Views::One(reply) => Ok(shape(reply)),
            Views::Nodes(replies) => {
                let mut last_token = None;
                let views: Vec<NodeView> = replies
                    .into_iter()
                    .map(|(node, reply)| match reply {
                        Ok(reply) => {
                            let info = shape(reply);
                            last_token = last_token.max(info.last_token);
                            NodeView {
                                node,
                                holder: info.holder,
                                error: None,
                            }
                        }
                        Err(e) => NodeView {
                            node,
                            holder: None,
                            error: Some(e.to_string()),
                        },
                    })
                    .collect();
                if let Some(e) = no_quorum(&format!("inspect {name:?}"), &views) {
                    return Err(e);
                }
                let needed = crate::backend::quorum::quorum(views.len());
                Ok(LockInfo {
                    name: name.to_string(),
                    holder: agreed(&views, needed),
                    waiters: 0,
                    last_token,
                    nodes: views,
                })
            }
        }
    }

    /// Operator override: remove lock `name` whoever holds it, hand it to the oldest
    /// waiter, and return what was removed (`None` if it was not held). The former
    /// holder's renewals and release will be refused, and its guard's loss signal fires
    /// at its next renewal; fencing tokens keep its stale writes out.
    ///
    /// # Cancel safety
    /// Not cancel-safe in the sense that a cancelled call may or may not have removed the
    /// lock; it never removes anything else.
    pub async fn force_release(&self, name: &str) -> Result<Option<HolderInfo>> {
        validate_name(name)?;
        self.inner.check_open()?;
        let keys = LockKeys::new(&self.inner.prefix, name);
        let shape = |(owner, token, count, meta, pttl): HolderReply| {
            holder_from(owner, &token, &count, &meta, pttl)
        };
        let removed =
            match crate::backend::keyspace::force_release(&self.inner, name, &keys).await? {
                Views::One(reply) => shape(reply),
                Views::Nodes(replies) => {
                    let views: Vec<NodeView> = replies
                        .into_iter()
                        .map(|(node, reply)| match reply {
                            Ok(reply) => NodeView {
                                node,
                                holder: shape(reply),
                                error: None,
                            },
                            Err(e) => NodeView {
                                node,
                                holder: None,
                                error: Some(e.to_string()),
                            },
                        })
                        .collect();
                    if let Some(e) = no_quorum(&format!("force release {name:?}"), &views) {
                        return Err(e);
                    }
                    // Whatever any node removed; the holder most nodes knew of first.
                    agreed(&views, 1)
                }
            };
        if removed.is_some() {
            self.inner.waker.notify_local(&keys.channel);
            tracing::warn!(lock = %name, "lock force-released by an operator");
        }
        Ok(removed)
    }
}
