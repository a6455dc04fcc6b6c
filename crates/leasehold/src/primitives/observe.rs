//! Election observers: who leads, and every change, for processes that do not campaign
//! (etcd's `Observe`).
//!
//! An [`Observer`] reads the leader now and the election's log after its cursor in one
//! read-only script, and reads again when the log's channel announces an entry, when the
//! pub/sub connection comes back (every channel is then bumped), when the known leader's
//! lease would run out (a killed leader records nothing), and at least every
//! [`IDLE_READ`] otherwise. Entries come in the log's order, so changes are reported in
//! order, and the cursor survives reconnects: nothing recorded while the connection was
//! down is skipped (unless more than the log keeps was recorded meanwhile; then the leader
//! now is reported).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::{sleep, sleep_until, Instant};

use crate::backend::leaders::{log_key, LogId, Snapshot};
use crate::client::context::Inner;
use crate::error::Result;
use crate::lock::holder::HolderMetadata;
use crate::net::wait::Subscription;
use crate::protocol::keys::LockKeys;

/// The longest an observer goes without reading, when nothing wakes it.
pub const IDLE_READ: Duration = Duration::from_secs(5);

/// A leader as observers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Leader {
    /// The leader's owner id.
    pub owner_id: String,
    /// The value it published (empty if none).
    pub value: String,
    /// Its term: the leadership's fencing token, larger for every later leadership.
    pub term: u64,
}

/// A watch on an election's leadership, without campaigning. Get one from
/// [`Election::observe`](crate::Election::observe).
///
/// ```no_run
/// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
/// let mut leaders = client.election("scheduler")?.observe();
/// loop {
///     match leaders.next().await? {
///         Some(l) => println!("term {}: {} leads ({})", l.term, l.owner_id, l.value),
///         None => println!("no leader"),
///     }
/// }
/// # }
/// ```
pub struct Observer {
    inner: Arc<Inner>,
    name: String,
    keys: Arc<LockKeys>,
    channel: String,
    sub: Option<Subscription>,
    /// The last log entry read; `None` before the first read.
    cursor: Option<LogId>,
    /// The leader last reported (or about to be).
    last: Option<Leader>,
    /// Whether anything was reported (queued) yet.
    started: bool,
    pending: VecDeque<Option<Leader>>,
    /// When the known leader's lease runs out at the server, as of the last read.
    expires: Option<Instant>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("name", &self.name)
            .field("cursor", &self.cursor.map(|c| c.to_string()))
            .field("last", &self.last)
            .finish()
    }
}

impl Observer {
    pub(crate) fn new(inner: Arc<Inner>, name: &str, keys: Arc<LockKeys>) -> Self {
        Observer {
            channel: log_key(&keys),
            inner,
            name: name.to_string(),
            keys,
            sub: None,
            cursor: None,
            last: None,
            started: false,
            pending: VecDeque::new(),
            expires: None,
        }
    }

    /// The election's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who leads: the first call returns the leader now (`None`: nobody), each later call
    /// waits for the next change — a new leader, a new value, or the leadership ending
    /// (`None`: resigned, or its lease ran out, and no successor yet) — and returns it.
    /// Changes come in the order they happened, including those made while this
    /// observer's connection was down.
    ///
    /// Connection failures are retried (with backoff up to 2 s) and never end the
    /// watch; an error is returned only for what retrying cannot fix (a RedLock client,
    /// a key of another type under the election's name, a client that was shut down).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads; a change read by a dropped call is returned by the
    /// next one.
    pub async fn next(&mut self) -> Result<Option<Leader>> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(change);
            }
            // A client that was shut down ends the watch (not retried).
            self.inner.check_open()?;
            if self.sub.is_none() {
                let deadline = Instant::now() + self.inner.conn.response_timeout();
                self.sub = Some(self.inner.waker.subscribe(&self.channel, deadline).await);
            }
            let seen = self.sub.as_ref().map_or(0, Subscription::version);
            match crate::backend::leaders::observe(&self.inner, &self.keys, &self.name, self.cursor)
                .await
            {
                Ok(snap) => {
                    backoff = Duration::from_millis(50);
                    if !self.absorb(snap) {
                        // More entries wait behind the cursor: read on before waiting
                        // (and before judging the leader now against them).
                        continue;
                    }
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(election = %self.name, error = %e, "observe read failed; retrying");
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                Err(e) => return Err(e),
            }
            if !self.pending.is_empty() {
                continue;
            }
            let mut wake = Instant::now() + IDLE_READ;
            if let Some(at) = self.expires {
                wake = wake.min(at + Duration::from_millis(2));
            }
            let sub = self.sub.as_mut().expect("subscribed above");
            tokio::select! {
                () = sub.changed_since(seen) => {}
                () = sleep_until(wake) => {}
            }
        }
    }

    /// Queue `change` unless it repeats the last one (the first is always reported).
    fn report(&mut self, change: Option<Leader>) {
        if self.started && change == self.last {
            return;
        }
        self.started = true;
        self.last = change.clone();
        self.pending.push_back(change);
    }

    /// Report what `snap` shows; whether the cursor reached the log's newest entry (when
    /// it did not, the leader now is not judged yet: entries before it are still unread).
    fn absorb(&mut self, snap: Snapshot) -> bool {
        let now = Instant::now();
        // A lease with no TTL left to wait for (or a key without one) sets no timer.
        self.expires = snap
            .holder
            .as_ref()
            .filter(|h| !h.pttl.is_zero())
            .map(|h| now + h.pttl);
        let holder_now = snap.holder.as_ref().map(|h| Leader {
            owner_id: h.owner_id.clone(),
            value: serde_json::from_str::<HolderMetadata>(&h.meta)
                .ok()
                .and_then(|m| m.value)
                .unwrap_or_default(),
            term: h.token,
        });
        let Some(cursor) = self.cursor else {
            // The first read: the leader now; the log is read from its newest entry on.
            self.cursor = Some(snap.newest.unwrap_or(LogId { ms: 0, seq: 0 }));
            self.report(holder_now);
            return true;
        };
        let log_gone = snap.newest.is_none() && cursor != (LogId { ms: 0, seq: 0 });
        let recreated = snap.newest.is_some_and(|newest| newest < cursor);
        if log_gone || recreated {
            // The log expired (or was recreated) since the last read: report the leader
            // now and go on from the log's newest entry.
            self.cursor = Some(snap.newest.unwrap_or(LogId { ms: 0, seq: 0 }));
            self.report(holder_now);
            return true;
        }
        // Entries older than the log keeps (128) are gone; those after the cursor that
        // remain are reported in order, and the leader now settles the rest below.
        for e in snap.entries {
            self.cursor = Some(e.id);
            match e.event.as_str() {
                "elected" | "proclaimed" => self.report(Some(Leader {
                    owner_id: e.owner_id,
                    value: e.value,
                    term: e.term,
                })),
                "resigned" if self.last.as_ref().is_some_and(|l| l.term == e.term) => {
                    self.report(None);
                }
                _ => {}
            }
        }
        if snap.newest.is_some_and(|newest| self.cursor < Some(newest)) {
            return false;
        }
        // A leader reported earlier whose lease is gone (or taken over) has ended, even
        // when nothing was recorded (a killed leader).
        if let Some(last) = &self.last {
            if holder_now.as_ref().is_none_or(|h| h.term != last.term) {
                self.report(None);
            }
        }
        true
    }
}
