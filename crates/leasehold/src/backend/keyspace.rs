//! The server work of reading keyspaces: inspect one lock, list locks with `SCAN`, and an
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

async fn inspect_one(inner: &Inner, name: &str, keys: &LockKeys) -> Result<InspectReply> {
    let mut inv = inner.scripts.inspect.key(&keys.lock);
    inv.key(&keys.fence).key(&keys.expiries);
    inner
        .conn
        .eval(&inv, budget(inner))
        .await
        .map_err(|f| failure_error(&format!("inspect {name:?}"), f))
}

/// The names of locks matching `pattern` (already checked) on the server, on every
/// Cluster primary, or on any RedLock node: at most `limit`, sorted.
pub(crate) async fn list(inner: &Arc<Inner>, pattern: &str, limit: usize) -> Result<Vec<String>> {
    let mut names = Vec::new();
    match Topology::of(inner) {
        Topology::Server => scan(inner, None, pattern, limit, &mut names).await?,
        Topology::Cluster => {
            for primary in primaries(inner).await? {
                scan(inner, Some(&primary), pattern, limit, &mut names).await?;
            }
        }
        Topology::RedLock => {
            for node in &inner.nodes {
                scan(node, None, pattern, limit, &mut names).await?;
            }
        }
    }
    names.sort();
    names.dedup();
    names.truncate(limit);
    Ok(names)
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

/// `SCAN` one server (or one Cluster primary, by address) for lock names into `names`.
async fn scan(
    inner: &Inner,
    node: Option<&(String, u16)>,
    pattern: &str,
    limit: usize,
    names: &mut Vec<String>,
) -> Result<()> {
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
    for _ in 0..100_000 {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{literal}{pattern}}}"))
            .arg("COUNT")
            .arg(1_000);
        let reply = match node {
            None => inner.conn.query(&cmd, budget).await,
            Some((host, port)) => inner.conn.query_at(&cmd, host, *port, budget).await,
        };
        let (next, keys): (u64, Vec<String>) = reply.map_err(|f| failure_error("list locks", f))?;
        for key in keys {
            if let Some(name) = key.strip_prefix(&prefix).and_then(|k| k.strip_suffix('}')) {
                if !name.contains('}') && names.len() < limit {
                    names.push(name.to_string());
                }
            }
        }
        cursor = next;
        if cursor == 0 || names.len() >= limit {
            break;
        }
    }
    Ok(())
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
        .arg(crate::protocol::scripts::RESERVATION_MS);
    inner
        .conn
        .eval(&inv, budget(inner))
        .await
        .map_err(|f| failure_error(&format!("force release {name:?}"), f))
}
