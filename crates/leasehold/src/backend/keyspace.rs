//! The server work of reading one keyspace: inspect one lock, list locks with `SCAN`,
//! and an operator's force release. Each checks first that the client's topology has one
//! keyspace to read ([`Capability`]) and returns the script's reply as it came, for the
//! client to shape.
//!
//! Invariants: inspect and list only read; force release runs one script that removes the
//! lock and hands it to the oldest waiter, and announces the release locally.

use std::sync::Arc;

use crate::backend::{require, Capability};
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

/// Read lock `name`'s state with one read-only script.
pub(crate) async fn inspect(
    inner: &Arc<Inner>,
    name: &str,
    keys: &LockKeys,
) -> Result<InspectReply> {
    require(inner, Capability::OneKeyspace)?;
    let mut inv = inner.scripts.inspect.key(&keys.lock);
    inv.key(&keys.fence).key(&keys.expiries);
    inner
        .conn
        .eval(&inv, budget(inner))
        .await
        .map_err(|f| failure_error(&format!("inspect {name:?}"), f))
}

/// The names of held locks matching `pattern` (already checked), at most `limit`, sorted.
pub(crate) async fn list(inner: &Arc<Inner>, pattern: &str, limit: usize) -> Result<Vec<String>> {
    require(inner, Capability::ScanAll)?;
    let prefix = format!("{}:{{", inner.prefix);
    // The prefix is literal text in the SCAN pattern; only `pattern` is a glob.
    let literal: String = prefix
        .chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let mut names = Vec::new();
    let mut cursor: u64 = 0;
    let budget = budget(inner);
    for _ in 0..100_000 {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(format!("{literal}{pattern}}}"))
            .arg("COUNT")
            .arg(1_000);
        let (next, keys): (u64, Vec<String>) = inner
            .conn
            .query(&cmd, budget)
            .await
            .map_err(|f| failure_error("list locks", f))?;
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
    names.sort();
    names.dedup();
    Ok(names)
}

/// Remove lock `name` whoever holds it and hand it on; what was removed.
pub(crate) async fn force_release(
    inner: &Arc<Inner>,
    name: &str,
    keys: &LockKeys,
) -> Result<HolderReply> {
    require(inner, Capability::OneKeyspace)?;
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
