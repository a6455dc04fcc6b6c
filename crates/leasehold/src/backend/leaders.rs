//! An election's leaders' log at the server: the leader's proclamations (elected, a new
//! value, resigned), each recorded with a check of its hold and announced on the log's
//! channel, and the observers' read of the leader now together with the log after a
//! cursor. The log is a stream under the election's hash tag (one slot on Cluster, the
//! master through Sentinel); RedLock's independent masters keep no shared log, so there
//! it is refused (see `PROTOCOL.md`, "Election observers and proclamations").

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{require, Capability};
use crate::client::context::Inner;
use crate::error::{Error, NotHeldReason, Result};
use crate::net::failure::{failure_error, outcome_error, Failure};
use crate::protocol::keys::LockKeys;

/// How long the log outlives its last entry (ms): observers that were away for less than
/// this resume from their cursor.
const LOG_LIFETIME_MS: u64 = 24 * 60 * 60 * 1000;

/// The most entries one observe read returns.
const READ_BATCH: u32 = 64;

/// The id of a log entry (`ms-seq`), ordered as the server orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LogId {
    pub ms: u64,
    pub seq: u64,
}

impl LogId {
    fn parse(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-')?;
        Some(LogId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// The key (a stream) and channel of `keys`'s election log.
pub(crate) fn log_key(keys: &LockKeys) -> String {
    format!("{}:leaders", keys.lock)
}

/// One proclamation of a leadership (see `proclaim.lua`).
pub(crate) struct Proclamation<'a> {
    pub keys: &'a LockKeys,
    pub name: &'a str,
    pub owner_id: &'a str,
    pub req: &'a str,
    /// `elected`, `proclaimed` or `resigned`.
    pub event: &'a str,
    pub value: &'a str,
    /// The holder metadata to store (`""` keeps the stored one).
    pub meta: &'a str,
    /// Its number within the leadership: a retry with the same number is recorded once.
    pub seq: u32,
}

/// Record `p` in the log (re-run on a fresh connection while its outcome is unknown, for
/// at most twice the response timeout). Fails with `NotHeld` when the leadership's hold
/// is gone, and `Ambiguous` when no reply came, or when the hold was found gone after a
/// try that may have recorded it.
pub(crate) async fn proclaim(inner: &Arc<Inner>, p: &Proclamation<'_>) -> Result<LogId> {
    require(inner, Capability::LeadersLog)?;
    let log = log_key(p.keys);
    let resolve_by =
        Instant::now() + (2 * inner.conn.response_timeout()).max(2 * crate::net::conn::MIN_BUDGET);
    let context = format!("proclaim {:?}", p.name);
    let call = || {
        let mut inv = inner.scripts.proclaim.key(&p.keys.lock);
        inv.key(&log)
            .arg(p.owner_id)
            .arg(p.req)
            .arg(p.event)
            .arg(p.value)
            .arg(p.meta)
            .arg(p.seq)
            .arg(LOG_LIFETIME_MS)
            .arg(&log);
        inv
    };
    let maybe = "observers may or may not have been told";
    let (reply, saw_unknown) =
        match Box::pin(crate::backend::resolve(inner, call, resolve_by)).await {
            Ok(answer) => answer,
            Err(f) => return Err(outcome_error(&context, f, maybe)),
        };
    let gone = |reason| {
        if saw_unknown {
            outcome_error(&context, Failure::Unknown(None), maybe)
        } else {
            Error::not_held(p.name, reason)
        }
    };
    match reply.as_slice() {
        [1, ms, seq] => Ok(LogId {
            ms: u64::try_from(*ms).unwrap_or(0),
            seq: u64::try_from(*seq).unwrap_or(0),
        }),
        [0, ..] => Err(gone(NotHeldReason::Expired)),
        [-1, ..] => Err(gone(NotHeldReason::HeldByOther)),
        other => Err(Error::new(
            crate::ErrorKind::Server,
            format!("{context}: unexpected reply {other:?}"),
        )),
    }
}

/// The holder of an election's lock, as an observe read found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holding {
    pub owner_id: String,
    pub token: u64,
    pub meta: String,
    pub pttl: Duration,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: LogId,
    pub event: String,
    pub owner_id: String,
    pub term: u64,
    pub value: String,
}

/// An observe read: the holder now, the log's oldest and newest ids, and its entries
/// after the cursor (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub holder: Option<Holding>,
    pub oldest: Option<LogId>,
    pub newest: Option<LogId>,
    pub entries: Vec<Entry>,
}

/// Read the leader now and the log after `cursor` (no entries without one).
pub(crate) async fn observe(
    inner: &Arc<Inner>,
    keys: &LockKeys,
    name: &str,
    cursor: Option<LogId>,
) -> Result<Snapshot> {
    require(inner, Capability::LeadersLog)?;
    let mut inv = inner.scripts.observe.key(&keys.lock);
    inv.key(log_key(keys))
        .arg(cursor.map(|c| c.to_string()).unwrap_or_default())
        .arg(READ_BATCH);
    let budget = inner.conn.connect_timeout() + inner.conn.response_timeout();
    let reply: Vec<String> = inner
        .conn
        .eval(&inv, budget)
        .await
        .map_err(|f| failure_error(&format!("observe {name:?}"), f))?;
    decode(&reply).ok_or_else(|| {
        Error::new(
            crate::ErrorKind::Server,
            format!("observe {name:?}: unexpected reply {reply:?}"),
        )
    })
}

fn decode(reply: &[String]) -> Option<Snapshot> {
    let (head, rest) = reply.split_at_checked(6)?;
    let holder = if head[0].is_empty() {
        None
    } else {
        let pttl: i64 = head[3].parse().ok()?;
        Some(Holding {
            owner_id: head[0].clone(),
            token: head[1].parse().ok()?,
            meta: head[2].clone(),
            pttl: Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
        })
    };
    let entries = rest
        .chunks(5)
        .map(|e| {
            Some(Entry {
                id: LogId::parse(e.first()?)?,
                event: e.get(1)?.clone(),
                owner_id: e.get(2)?.clone(),
                term: e.get(3)?.parse().ok()?,
                value: e.get(4)?.clone(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Snapshot {
        holder,
        oldest: LogId::parse(&head[4]),
        newest: LogId::parse(&head[5]),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observe_reply_decodes_into_the_holder_and_the_entries() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let snap = decode(&s(&[
            "o1", "42", "{}", "900", "5-0", "7-1", "6-0", "elected", "o1", "42", "v", "7-1",
            "resigned", "o1", "42", "v",
        ]))
        .unwrap();
        assert_eq!(snap.holder.unwrap().token, 42);
        assert_eq!(snap.oldest, Some(LogId { ms: 5, seq: 0 }));
        assert_eq!(snap.entries.len(), 2);
        assert_eq!(snap.entries[1].event, "resigned");
        let none = decode(&s(&["", "", "", "-2", "", ""])).unwrap();
        assert!(none.holder.is_none() && none.newest.is_none() && none.entries.is_empty());
        assert!(decode(&s(&["o1", "x", "", "1", "", ""])).is_none());
        assert!(LogId { ms: 5, seq: 9 } < LogId { ms: 6, seq: 0 });
    }
}
