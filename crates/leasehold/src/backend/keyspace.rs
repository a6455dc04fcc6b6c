//! The server work of reading keyspaces: inspect one lock or lease set (semaphore
//! permits, readers), list locks, semaphores and read-write locks with `SCAN`, and an
//! operator's force release — on one server, on every primary of a Cluster (list), or on
//! every RedLock node (each node's view, for the caller to judge by quorum). Replies come
//! back as the scripts gave them, for the client to shape.
//!
//! Invariants: inspect and list only read; force release runs one script per server that
//! removes the lock and hands it to the oldest waiter, and announces the release locally.

use std::sync::Arc;

use crate::backend::Topology;
use crate::client::context::Inner;
use crate::error::Result;
use crate::net::failure::failure_error;
use crate::protocol::keys::LockKeys;

/// inspect.lua's reply: owner, token, count, metadata, PTTL, live waiters, last token.
pub(crate) type InspectReply = (String, String, String, String, i64, i64, String);
/// inspect_set.lua's reply, all text: last token, live members, then per member its
/// request id, ms left and token.
pub(crate) type SetReply = Vec<String>;
/// force_release.lua's reply: the removed holder's owner, token, count, metadata, PTTL.
pub(crate) type HolderReply = (String, String, String, String, i64);

fn budget(inner: &Inner) -> std::time::Duration {
    inner.conn.connect_timeout() + inner.conn.response_timeout()
}

/// What each server said: one reply, or every RedLock node's (by node address).
pub(crate) enum Views<T> {
    One(T),
    Nodes(Vec<(String, Result<T>)>),
}

/// Run `op` on the server, or on every RedLock node at once.
async fn on_each<T, F, Fut>(inner: &Arc<Inner>, op: F) -> Result<Views<T>>
where
    F: Fn(Arc<Inner>) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if Topology::of(inner) != Topology::RedLock {
        return op(inner.clone()).await.map(Views::One);
    }
    let views = inner.nodes.iter().map(|n| {
        let fut = op(n.clone());
        async move { (n.display_url.clone(), fut.await) }
    });
    Ok(Views::Nodes(futures_util::future::join_all(views).await))
}

/// Read lock `name`'s state with one read-only script (on every RedLock node).
pub(crate) async fn inspect(
    inner: &Arc<Inner>,
    name: &str,
    keys: &LockKeys,
) -> Result<Views<InspectReply>> {
    on_each(inner, |n| async move { inspect_one(&n, name, keys).await }).await
}

/// Read the live members of a lease set (`set`, `tokens`, `fence`), at most `most` of them.
pub(crate) async fn inspect_set(
    inner: &Inner,
    name: &str,
    set: &str,
    tokens: &str,
    fence: &str,
    most: u32,
) -> Result<SetReply> {
    let mut inv = inner.scripts.inspect_set.key(set);
    inv.key(tokens).key(fence).arg(most);
    inner
        .conn
        .eval(&inv, budget(inner))
        .await
        .map_err(|f| failure_error(&format!("inspect {name:?}"), f))
}

pub(crate) async fn inspect_one(
    inner: &Inner,
    name: &str,
    keys: &LockKeys,
) -> Result<InspectReply> {
    let mut inv = inner.scripts.inspect.key(&keys.lock);
    inv.key(&keys.fence).key(&keys.expiries);
    inner
        .conn
        .eval(&inv, budget(inner))
        .await
        .map_err(|f| failure_error(&format!("inspect {name:?}"), f))
}

/// What a key under the prefix is, by its shape (its type is checked when it is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Shape {
    /// `PREFIX:{NAME}`: a lock hash.
    Lock,
    /// `PREFIX:{NAME}:sem`: a semaphore's permits.
    Semaphore,
    /// `PREFIX:{NAME}:rw` or `…:rw:readers`: a read-write lock's writer or readers.
    RwLock,
}

/// The shape of key `rest`, the text after a name's closing brace; `None` for the other
/// keys of a name (fence counters, queues).
fn shape(rest: &str) -> Option<Shape> {
    match rest {
        "" => Some(Shape::Lock),
        ":sem" => Some(Shape::Semaphore),
        ":rw" | ":rw:readers" => Some(Shape::RwLock),
        _ => None,
    }
}

/// The names (and shapes) of locks, semaphores and read-write locks matching `pattern`
/// (already checked) on the server, on every Cluster primary, or on any RedLock node:
/// sorted, at most `limit`, and whether more were found.
pub(crate) async fn list(
    inner: &Arc<Inner>,
    pattern: &str,
    limit: usize,
) -> Result<(Vec<(String, Shape)>, bool)> {
    let mut found = std::collections::BTreeSet::new();
    // One more than asked for tells whether there are more.
    let want = limit.saturating_add(1);
    let mut complete = true;
    match Topology::of(inner) {
        Topology::Server => complete &= scan(inner, None, pattern, want, &mut found).await?,
        Topology::Cluster => {
            for primary in primaries(inner).await? {
                complete &= scan(inner, Some(&primary), pattern, want, &mut found).await?;
            }
        }
        Topology::RedLock => {
            for node in &inner.nodes {
                complete &= scan(node, None, pattern, want, &mut found).await?;
            }
        }
    }
    let more = found.len() > limit || !complete;
    Ok((found.into_iter().take(limit).collect(), more))
}

/// The primaries of the client's Cluster, as (host, port), from `CLUSTER SLOTS`.
pub(crate) async fn primaries(inner: &Inner) -> Result<Vec<(String, u16)>> {
    let slots: Vec<redis::Value> = inner
        .conn
        .query(redis::cmd("CLUSTER").arg("SLOTS"), budget(inner))
        .await
        .map_err(|f| failure_error("list locks: CLUSTER SLOTS", f))?;
    let mut out = Vec::new();
    for range in slots {
        let redis::Value::Array(items) = range else {
            continue;
        };
        let Some(redis::Value::Array(primary)) = items.get(2) else {
            continue;
        };
        let host: Option<String> = primary
            .first()
            .and_then(|v| redis::from_redis_value_ref(v).ok());
        let port: Option<u16> = primary
            .get(1)
            .and_then(|v| redis::from_redis_value_ref(v).ok());
        if let (Some(host), Some(port)) = (host, port) {
            if !out.contains(&(host.clone(), port)) {
                out.push((host, port));
            }
        }
    }
    Ok(out)
}

/// `SCAN` one server (or one Cluster primary, by address) into `found`, until it holds
/// `want` names or the scan is complete; false if it stopped at its bound of calls first.
async fn scan(
    inner: &Inner,
    node: Option<&(String, u16)>,
    pattern: &str,
    want: usize,
    found: &mut std::collections::BTreeSet<(String, Shape)>,
) -> Result<bool> {
    let prefix = format!("{}:{{", inner.prefix);
    // The prefix is literal text in the SCAN pattern; only `pattern` is a glob.
    let literal: String = prefix
        .chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let mut cursor: u64 = 0;
    let budget = budget(inner);
    // Bounded: a full scan of a keyspace of 100 million keys at 1,000 per call.
    for _ in 0..100_000 {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{literal}{pattern}}}*"))
            .arg("COUNT")
            .arg(1_000);
        let reply = match node {
            None => inner.conn.query(&cmd, budget).await,
            Some((host, port)) => inner.conn.query_at(&cmd, host, *port, budget).await,
        };
        let (next, keys): (u64, Vec<String>) = reply.map_err(|f| failure_error("list locks", f))?;
        for key in keys {
            let Some((name, rest)) = key.strip_prefix(&prefix).and_then(|k| k.split_once('}'))
            else {
                continue;
            };
            if let Some(shape) = shape(rest) {
                if found.len() < want {
                    found.insert((name.to_string(), shape));
                }
            }
        }
        cursor = next;
        if cursor == 0 || found.len() >= want {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Remove lock `name` whoever holds it and hand it on (on every RedLock node); what was
/// removed.
pub(crate) async fn force_release(
    inner: &Arc<Inner>,
    name: &str,
    keys: &LockKeys,
) -> Result<Views<HolderReply>> {
    on_each(
        inner,
        |n| async move { force_release_one(&n, name, keys).await },
    )
    .await
}

async fn force_release_one(inner: &Inner, name: &str, keys: &LockKeys) -> Result<HolderReply> {
    let mut inv = inner.scripts.force_release.key(&keys.lock);
    inv.key(&keys.queue)
        .key(&keys.expiries)
        .key(&keys.next)
        .key(&keys.fence)
        .key(&keys.info)
        .arg(crate::protocol::scripts::RESERVATION_MS)
        .arg(crate::protocol::scripts::CLAIM_MS);
    inner
        .conn
        .eval(&inv, budget(inner))
        .await
        .map_err(|f| failure_error(&format!("force release {name:?}"), f))
}
