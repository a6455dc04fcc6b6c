//! Background release on one RedLock node: requests that may have been applied there and
//! whose grant nobody owns.
//!
//! A request whose outcome on a node is unknown (sent, then no reply in time; or still in
//! flight when the caller stopped listening) may sit in the node's socket buffers while the
//! node is paused or partitioned, and run when it answers again. Each such request is put
//! on the node's cleanup list, and one task per node releases the list as soon as the node
//! answers: the new connection first closes the abandoned ones at the server (`CLIENT KILL
//! ID`, see `net/conn.rs`), so once a release has run, what the old connection carried has
//! either run before it or never will. Without that fencing (ACL), a "nothing there" answer
//! is checked again a few times.
//!
//! Invariants: the caller never waits for this; one task per node, so a node that is down
//! costs one connection attempt at a time however many requests wait; an entry is kept
//! until the node answered, at most [`KEEP`] (or its lease's TTL, if longer, up to
//! 5 minutes); client shutdown makes one last attempt per entry and stops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::net::conn::Connector;
use crate::net::conn::Failure;
use crate::protocol::keys::LockKeys;
use crate::protocol::scripts::Scripts;
use crate::protocol::{Release, Released};

/// How long a request is kept for release while its node does not answer, unless its lease
/// is longer.
pub(crate) const KEEP: Duration = Duration::from_secs(60);

/// Rechecks of a "nothing there" answer when abandoned connections cannot be fenced off.
const RECHECKS_MS: [u64; 4] = [50, 250, 1_000, 3_000];

/// The most entries kept per node; beyond it the oldest are dropped (they expire by TTL).
const MAX_ENTRIES: usize = 100_000;

struct Entry {
    keys: Arc<LockKeys>,
    owner_id: String,
    req: String,
    give_up: Instant,
    added: Instant,
    not_before: Instant,
    rechecks: usize,
}

/// What the clean-up needs of a node (a RedLock node's context implements it).
pub(crate) trait Node: Send + Sync + 'static {
    /// The node's cleanup list.
    fn cleanup(&self) -> &Cleanup;
    /// The node's command connection.
    fn conn(&self) -> &Connector;
    /// The node's scripts.
    fn scripts(&self) -> &Scripts;
    /// The node's address, for logs.
    fn name(&self) -> &str;
    /// The client is shutting down.
    fn closing(&self) -> bool;
    /// Run `fut` in the background, tracked by the client's shutdown.
    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static);
}

/// The cleanup list of one node.
#[derive(Default)]
pub(crate) struct Cleanup {
    entries: Mutex<Vec<Entry>>,
    running: Mutex<bool>,
}

impl Cleanup {
    /// Requests waiting for release on this node.
    pub(crate) fn pending(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Release `req` on `node` in the background, as soon as the node answers.
pub(crate) fn release_later(
    node: &Arc<impl Node>,
    keys: &Arc<LockKeys>,
    owner_id: &str,
    req: &str,
    ttl: Duration,
) {
    let now = Instant::now();
    let keep = ttl.max(KEEP).min(Duration::from_secs(300));
    {
        let mut entries = node
            .cleanup()
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.remove(0);
            tracing::warn!(
                node = %node.name(),
                "more than {MAX_ENTRIES} requests wait for release on an unreachable node; dropping the oldest (it expires by its TTL)"
            );
        }
        entries.push(Entry {
            keys: keys.clone(),
            owner_id: owner_id.to_string(),
            req: req.to_string(),
            give_up: now + keep,
            added: now,
            not_before: now,
            rechecks: 0,
        });
    }
    let mut running = node
        .cleanup()
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !*running {
        *running = true;
        node.spawn(drain(node.clone()));
    }
}

/// The task of one node: release its list, waiting for the node to answer.
async fn drain(node: Arc<impl Node>) {
    let mut pause = Duration::from_millis(20);
    loop {
        let closing = node.closing();
        let now = Instant::now();
        let next = {
            let mut entries = node
                .cleanup()
                .entries
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let before = entries.len();
            entries.retain(|e| e.give_up > now);
            if entries.len() < before {
                tracing::warn!(
                    node = %node.name(),
                    requests = before - entries.len(),
                    "a RedLock node did not answer in time to release what it may hold; it expires by its TTL"
                );
            }
            let ready = entries.iter().position(|e| e.not_before <= now || closing);
            match ready {
                Some(i) => Some(entries.swap_remove(i)),
                None if entries.is_empty() => {
                    // Nothing left: stop, unless an entry arrives while we decide.
                    let mut running = node
                        .cleanup()
                        .running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    drop(entries);
                    if node.cleanup().pending() == 0 {
                        *running = false;
                        return;
                    }
                    continue;
                }
                None => None,
            }
        };
        let Some(mut entry) = next else {
            // Only rechecks are left, none due yet.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut inv = Release {
            keys: &entry.keys,
            owner_id: &entry.owner_id,
            req: &entry.req,
        }
        .call(node.scripts());
        let result = node
            .conn()
            .eval_tagged(&mut inv, node.conn().response_timeout())
            .await
            .map(|reply| Released::decode(&reply));
        match result {
            Ok(released) => {
                pause = Duration::from_millis(20);
                tracing::debug!(node = %node.name(), lock = %entry.keys.lock, outcome = ?released, "released on a RedLock node that answered again");
                let fenced = node.conn().can_fence();
                if released == Released::NotHeld
                    && !fenced
                    && !closing
                    && entry.rechecks < RECHECKS_MS.len()
                {
                    let at = entry.added + Duration::from_millis(RECHECKS_MS[entry.rechecks]);
                    entry.rechecks += 1;
                    entry.not_before = at.max(Instant::now());
                    push_back(&*node, entry);
                }
            }
            Err(f @ Failure::Server(_)) => {
                tracing::warn!(node = %node.name(), lock = %entry.keys.lock, cause = %f.describe(), "release on a RedLock node failed; what it holds expires by its TTL");
            }
            Err(f) => {
                if closing {
                    let mut entries = node
                        .cleanup()
                        .entries
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    tracing::warn!(node = %node.name(), requests = entries.len() + 1, cause = %f.describe(), "client shut down before a RedLock node answered; what it holds expires by its TTL");
                    entries.clear();
                    continue;
                }
                tracing::debug!(node = %node.name(), cause = %f.describe(), "RedLock node still unreachable; release retried");
                push_back(&*node, entry);
                if matches!(f, Failure::NotSent(_)) {
                    // Not connected: try again after a pause (an unknown outcome has just
                    // replaced the connection, so the next try reconnects at once).
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
            }
        }
    }
}

fn push_back(node: &impl Node, entry: Entry) {
    node.cleanup()
        .entries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(entry);
}
