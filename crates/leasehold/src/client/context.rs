//! The shared context of one client (`Inner`, behind every `Client` clone, lock, guard
//! and background task): its connections, scripts and waker, the per-name local wait
//! queues, the renewal scheduler, the task tracker that shutdown drains, and the settings.
//! A RedLock client holds one such context per node.
//!
//! Invariants: nothing here talks to Redis by itself; `closed` only ever goes from false to
//! true; every background task is spawned through [`Inner::spawn_background`] so shutdown
//! can wait for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::error::{Error, ErrorKind, Result};
use crate::net::conn::Connector;
use crate::net::wait::Waker;
use crate::protocol::scripts::Scripts;

pub(crate) struct Inner {
    pub id: String,
    pub display_url: String,
    pub conn: Connector,
    /// A second connection, only for acquires that wait for replica acknowledgements:
    /// `WAIT` blocks the connection it runs on.
    pub ack_conn: Connector,
    /// RedLock: one single-server client per node (empty otherwise).
    pub nodes: Vec<Arc<Inner>>,
    /// RedLock: how long one node may take to answer one request.
    pub node_timeout: Duration,
    /// Default replica acknowledgements required per grant.
    pub replica_acks: Option<(u32, Duration)>,
    /// Talks to a Redis Cluster.
    pub cluster: bool,
    pub scripts: Scripts,
    pub waker: Arc<Waker>,
    pub queues: Mutex<HashMap<String, Weak<Semaphore>>>,
    pub tasks: TaskTracker,
    pub handle: tokio::runtime::Handle,
    pub closed: AtomicBool,
    pub prefix: String,
    pub default_ttl: Duration,
    pub default_wait: Duration,
    pub renewer: Arc<crate::lease::renew::Renewer>,
    /// RedLock node: requests waiting to be released once this node answers again.
    pub cleanup: crate::backend::cleanup::Cleanup,
    /// This process as a holder (host name, pid), read once when the client is built.
    pub holder: crate::lock::holder::HolderMetadata,
    /// `holder` as the JSON stored with a grant that has no label.
    pub holder_json: Arc<str>,
    /// Label metrics with the lock name (see [`crate::metrics`]).
    pub metrics_lock_names: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.renewer.client_dropped();
        // Wakes the connection watcher, which then finds the client gone.
        self.conn.broken().notify_one();
    }
}

impl Inner {
    /// The local FIFO queue of waiters for one lock key.
    pub(crate) fn queue(&self, key: &str) -> Arc<Semaphore> {
        let mut map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sem) = map.get(key).and_then(Weak::upgrade) {
            return sem;
        }
        if map.len() >= 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let sem = Arc::new(Semaphore::new(1));
        map.insert(key.to_string(), Arc::downgrade(&sem));
        sem
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::new(
                ErrorKind::Shutdown,
                "the leasehold client was shut down",
            ))
        } else {
            Ok(())
        }
    }

    /// Run `fut` in the background, tracked so that shutdown can wait for it.
    pub(crate) fn spawn_background<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(fut, &self.handle);
    }
}

impl crate::backend::cleanup::Node for Inner {
    fn cleanup(&self) -> &crate::backend::cleanup::Cleanup {
        &self.cleanup
    }
    fn conn(&self) -> &Connector {
        &self.conn
    }
    fn scripts(&self) -> &Scripts {
        &self.scripts
    }
    fn name(&self) -> &str {
        &self.display_url
    }
    fn closing(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.spawn_background(fut);
    }
}
