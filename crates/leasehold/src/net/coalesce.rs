//! Coalesced calls: acquire, release and extend calls that are ready at the same moment on
//! one connection go to Redis as one batch script call (`batch.lua`) per slot, each with its
//! own keys, arguments, request id and reply.
//!
//! A call is sent at once, as its own script, while fewer than [`MAX_IN_FLIGHT`] calls of
//! this connection are on their way: a lone caller never waits for a batch to fill. Calls
//! that arrive while the connection is that busy wait in a queue; when a call in flight
//! ends, the queued calls of one slot (up to [`MAX_BATCH`]) become the next batch, sent by
//! the first of their callers (the leader), which hands every other caller its own reply.
//! So a batch is in flight only in place of a call that ended, and the number in flight
//! never grows past [`MAX_IN_FLIGHT`].
//!
//! The rules for unknown outcomes hold per request: a batch that times out, breaks its
//! connection or answers out of step gives every request in it an unknown outcome, and each
//! caller retries its own request with its own id (the scripts count a request once); a
//! call still queued when its budget runs out was never sent. A request whose caller went
//! away while it was queued is dropped unsent; one that was already in a batch is run, and
//! if that granted a lock nobody is waiting for, the leader releases the grant at once.
//!
//! Invariants: an in-flight slot is given back exactly once — by `Flight`'s drop, or by a
//! leader that goes away before taking its batch — and handed to the next batch if calls
//! are queued, so queued calls always have a leader coming; every queued request gets
//! exactly one delivery, or its caller sees its channel closed (an unknown outcome).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

use crate::net::failure::{Failure, MIN_BUDGET};
use crate::protocol::scripts::{Call, Script};

/// What the coalescer needs of a command connection (`net/conn.rs` implements it).
pub(crate) trait Transport {
    /// This connection's queue.
    fn coalescer(&self) -> &Coalescer;
    /// Whether the connection is to a Redis Cluster (a batch then holds one slot).
    fn is_cluster(&self) -> bool;
    fn response_timeout(&self) -> Duration;
    /// Run a tagged script call on its own.
    fn send_alone<'a>(
        &'a self,
        inv: &'a mut Call<'_>,
        budget: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<i64>, Failure>> + Send + 'a;
    /// Run a tagged script call whose reply is a list of any values (the batch script).
    fn send_values<'a>(
        &'a self,
        inv: &'a mut Call<'_>,
        budget: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<Value>, Failure>> + Send + 'a;
}

/// Calls of one connection on their way at once before others queue for a batch. On
/// loopback with 32–64 tasks, 1 and 2 cost throughput (the connection idles between
/// batches) and 8 or more batch too little to matter; see BENCHMARKS.md.
pub(crate) const MAX_IN_FLIGHT: usize = 4;

/// The most calls in one batch.
pub(crate) const MAX_BATCH: usize = 128;

/// Counters of a client's coalesced calls (see [`Client::batch_stats`](crate::Client::batch_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// Batch script calls sent.
    pub batches: u64,
    /// Acquire, release and extend calls those batches carried.
    pub calls: u64,
}

/// The queue of one connection.
#[derive(Default)]
pub(crate) struct Coalescer {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    pending: VecDeque<Entry>,
    /// Batches handed to a leader that has not taken them yet: (leader's id, the batch,
    /// the leader's own entry first).
    handed: Vec<(u64, Vec<Entry>)>,
    next_id: u64,
    /// Batches sent, and calls sent in them (for tests and the benchmark).
    batches: u64,
    batched_calls: u64,
}

/// A queued call.
struct Entry {
    id: u64,
    slot: u16,
    kind: &'static str,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
    until: Instant,
    tx: oneshot::Sender<Delivery>,
}

enum Delivery {
    /// This call's reply (without the tag), or its failure.
    Done(Result<Vec<i64>, Failure>),
    /// Lead the next batch: take it from `State::handed`.
    Lead,
}

/// An in-flight slot of a connection; dropping it hands the slot to the next batch.
struct Flight {
    state: Arc<Mutex<State>>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        hand_on(&mut st);
    }
}

/// Give one in-flight slot back: to a leader of the queued calls of one slot (the first
/// caller still there), or free it.
fn hand_on(st: &mut State) {
    loop {
        // The first queued call's slot makes the batch; callers that went away are
        // dropped unsent.
        let mut group: Vec<Entry> = Vec::new();
        let mut rest = VecDeque::with_capacity(st.pending.len());
        while let Some(e) = st.pending.pop_front() {
            if e.tx.is_closed() {
                continue;
            }
            let fits = group
                .first()
                .is_none_or(|g| g.slot == e.slot && group.len() < MAX_BATCH);
            if fits {
                group.push(e);
            } else {
                rest.push_back(e);
            }
        }
        st.pending = rest;
        if group.is_empty() {
            st.in_flight = st.in_flight.saturating_sub(1);
            return;
        }
        let leader = group[0].id;
        let tx = std::mem::replace(&mut group[0].tx, oneshot::channel().0);
        if tx.send(Delivery::Lead).is_ok() {
            // The slot passes to the batch; its leader gives it back.
            st.handed.push((leader, group));
            return;
        }
        // The leader went away just now: the others queue again, first in line.
        for e in group.into_iter().skip(1).rev() {
            st.pending.push_front(e);
        }
    }
}

impl Coalescer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Batches sent so far, and the calls they carried.
    pub(crate) fn stats(&self) -> BatchStats {
        let st = self.lock();
        BatchStats {
            batches: st.batches,
            calls: st.batched_calls,
        }
    }

    /// Take the queued call `id` back if no batch took it yet (true), or give up leading
    /// the batch handed to it, which goes to the next leader (true: nothing was sent).
    fn withdraw(&self, id: u64) -> bool {
        let mut st = self.lock();
        let before = st.pending.len();
        st.pending.retain(|e| e.id != id);
        if st.pending.len() != before {
            return true;
        }
        if let Some(i) = st.handed.iter().position(|(leader, _)| *leader == id) {
            let (_, group) = st.handed.swap_remove(i);
            for e in group.into_iter().skip(1).rev() {
                st.pending.push_front(e);
            }
            hand_on(&mut st);
            return true;
        }
        false
    }

    /// The batch handed to leader `id`, with the in-flight slot it carries.
    fn take_handed(&self, id: u64) -> Option<(Vec<Entry>, Flight)> {
        let mut st = self.lock();
        let i = st.handed.iter().position(|(leader, _)| *leader == id)?;
        let (_, group) = st.handed.swap_remove(i);
        Some((
            group,
            Flight {
                state: self.state.clone(),
            },
        ))
    }
}

/// Run `inv` (a call the batch script can run: `kind`, `batch`) on `conn`: at once if the
/// connection is not busy, else in the next batch of its slot.
pub(crate) async fn submit(
    conn: &impl Transport,
    (kind, batch): (&'static str, &Script),
    inv: &mut Call<'_>,
    budget: Duration,
) -> Result<Vec<i64>, Failure> {
    let co = conn.coalescer();
    let until = Instant::now() + budget;
    let queued = {
        let mut st = co.lock();
        if st.in_flight < MAX_IN_FLIGHT {
            st.in_flight += 1;
            None
        } else {
            let (tx, rx) = oneshot::channel();
            st.next_id += 1;
            let id = st.next_id;
            let (keys, args) = inv.parts();
            st.pending.push_back(Entry {
                id,
                // One server runs any keys in one script; a Cluster node only one slot's.
                slot: match keys.first() {
                    Some(k) if conn.is_cluster() => slot_of(k),
                    _ => 0,
                },
                kind,
                keys: keys.to_vec(),
                args: args.to_vec(),
                until,
                tx,
            });
            Some((id, rx))
        }
    };
    let Some((id, rx)) = queued else {
        let _flight = Flight {
            state: co.state.clone(),
        };
        return conn.send_alone(inv, budget).await;
    };
    let mut waiting = Queued {
        co,
        id,
        pending: true,
    };
    let got = timeout_at(until, rx).await;
    // Only a caller that goes away while waiting leaves its call behind.
    waiting.pending = false;
    match got {
        Ok(Ok(Delivery::Done(result))) => result,
        Ok(Ok(Delivery::Lead)) => {
            let Some((entries, _flight)) = co.take_handed(id) else {
                return Err(Failure::NotSent(None));
            };
            lead(conn, batch, entries).await
        }
        // The leader of this call's batch went away: it may have run.
        Ok(Err(_)) => Err(Failure::Unknown(None)),
        // Still queued (never sent), or handed to a leader that sent it.
        Err(_) if co.withdraw(id) => Err(Failure::NotSent(None)),
        Err(_) => Err(Failure::Unknown(None)),
    }
}

/// A queued call whose caller may go away: it is withdrawn unsent.
struct Queued<'a> {
    co: &'a Coalescer,
    id: u64,
    pending: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.pending {
            self.co.withdraw(self.id);
        }
    }
}

/// Send `entries` (the leader's own first) as one batch call and hand each its reply;
/// returns the leader's own.
async fn lead(
    conn: &impl Transport,
    batch: &Script,
    entries: Vec<Entry>,
) -> Result<Vec<i64>, Failure> {
    let now = Instant::now();
    // A call (other than the leader's) with too little time left for the reply is not sent.
    let mut sent = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        if i == 0 || e.until.saturating_duration_since(now) >= MIN_BUDGET {
            sent.push(e);
        } else {
            let _ = e.tx.send(Delivery::Done(Err(Failure::NotSent(None))));
        }
    }
    let entries = sent;
    let until = entries.iter().map(|e| e.until).min().unwrap_or(now);
    let budget = until
        .saturating_duration_since(now)
        .max(Duration::from_millis(1));
    {
        let mut st = conn.coalescer().lock();
        st.batches += 1;
        st.batched_calls += entries.len() as u64;
    }
    let mut call = batch.prepare_invoke();
    call.arg(entries.len());
    for e in &entries {
        call.arg(e.kind).arg(e.keys.len()).arg(e.args.len());
    }
    for e in &entries {
        for k in &e.keys {
            call.key(k.as_slice());
        }
    }
    for e in &entries {
        for a in &e.args {
            call.arg(a.as_slice());
        }
    }
    let result = conn.send_values(&mut call, budget).await;
    let mut replies: Vec<Result<Vec<i64>, Failure>> = match result {
        Ok(values) if values.len() == entries.len() => values.into_iter().map(decode).collect(),
        Ok(values) => {
            tracing::warn!(
                calls = entries.len(),
                replies = values.len(),
                "a batch reply had the wrong number of elements"
            );
            entries
                .iter()
                .map(|_| Err(Failure::Unknown(None)))
                .collect()
        }
        Err(f) => entries.iter().map(|_| Err(f.clone())).collect(),
    };
    let own = replies.remove(0);
    let mut orphans = Vec::new();
    for (e, reply) in entries.into_iter().skip(1).zip(replies) {
        let granted = e.kind == "a" && reply.as_ref().is_ok_and(|r| r.first() == Some(&1));
        if e.tx.send(Delivery::Done(reply)).is_err() && granted {
            orphans.push((e.keys, e.args));
        }
    }
    for (keys, args) in orphans {
        release_orphan(conn, batch, keys, args).await;
    }
    own
}

/// Release a lock granted to a caller that went away while its call was in a batch.
async fn release_orphan(
    conn: &impl Transport,
    batch: &Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
) {
    let Some((keys, args)) = crate::protocol::release_of_acquire(&keys, &args) else {
        return;
    };
    let mut call = batch.prepare_invoke();
    call.arg(1).arg("r").arg(keys.len()).arg(args.len());
    for k in &keys {
        call.key(k.as_slice());
    }
    for a in &args {
        call.arg(a.as_slice());
    }
    let budget = 2 * conn.response_timeout();
    if let Err(f) = conn.send_values(&mut call, budget).await {
        // The grant ends by its TTL.
        tracing::debug!(cause = %f.describe(), "releasing a grant whose caller went away failed");
    }
}

/// One call's element of a batch reply: its script's reply, or `{'!', error}`.
fn decode(v: Value) -> Result<Vec<i64>, Failure> {
    let Value::Array(items) = v else {
        return Err(Failure::Unknown(None));
    };
    if let [Value::BulkString(mark), Value::BulkString(text)] = items.as_slice() {
        if mark.as_slice() == b"!" {
            let text = String::from_utf8_lossy(text).into_owned();
            let (code, detail) = match text.split_once(' ') {
                Some((c, d)) => (c.to_string(), Some(d.to_string())),
                None => (text, None),
            };
            return Err(Failure::Server(redis::make_extension_error(code, detail)));
        }
    }
    items
        .into_iter()
        .map(|x| match x {
            Value::Int(n) => Ok(n),
            _ => Err(Failure::Unknown(None)),
        })
        .collect()
}

/// The Redis Cluster slot of a key: CRC16 (XMODEM) of its hash tag (or the whole key)
/// modulo 16384.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // The examples of the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}") % 16384);
        assert_eq!(slot_of(b"leasehold:{a}:fence"), slot_of(b"a"));
    }

    #[test]
    fn a_batch_error_element_keeps_its_code() {
        let v = Value::Array(vec![
            Value::BulkString(b"!".to_vec()),
            Value::BulkString(b"WRONGTYPE leasehold key k holds a string value".to_vec()),
        ]);
        match decode(v) {
            Err(Failure::Server(e)) => {
                assert_eq!(e.code(), Some("WRONGTYPE"));
                assert!(e.to_string().contains("leasehold key k"), "{e}");
            }
            _ => panic!("not a server error"),
        }
        let ok = Value::Array(vec![Value::Int(1), Value::Int(7)]);
        assert!(matches!(decode(ok), Ok(v) if v == [1, 7]));
    }
}
