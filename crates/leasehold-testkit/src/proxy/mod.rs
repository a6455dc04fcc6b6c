//! [`FaultProxy`]: a loopback TCP proxy between a Redis client and a server
//! whose misbehaviour is data ([`Rule`]s, [`StallGuard`]s, resets).
//!
//! Invariants: it listens only on `127.0.0.1` and forwards only to a loopback
//! upstream; it serves at most [`MAX_CONNECTIONS`] connections at once
//! (further ones are reset); every command a client sends is delivered to the
//! server, in order, unless the connection was reset first or, for a command
//! held by [`Verdict::HoldCommand`], the server closed the connection during
//! the hold — rules otherwise only act on replies; nothing is forwarded in
//! either direction while a [`StallGuard`] is held; dropping the proxy aborts
//! every task it spawned, closing the listener and all connections. The only
//! timed waits inside the proxy are a [`Verdict::Delay`] and a
//! [`Verdict::HoldCommand`], each bounded by its duration.

mod conn;
mod resp;
mod rules;

use std::{
    collections::HashMap,
    fmt, io,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{AbortHandle, JoinHandle},
};

pub use rules::{CommandPredicate, Match, Rule, RuleBuilder, RuleGuard, Verdict};

use crate::text::redis_url;

/// Most connections served at once; further ones are reset on accept.
pub const MAX_CONNECTIONS: usize = 256;
/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// A fault-injecting TCP proxy in front of one Redis server.
///
/// Point clients at [`url`](Self::url); install faults with
/// [`add_rule`](Self::add_rule), [`stall`](Self::stall) and
/// [`reset_all`](Self::reset_all).
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

/// State shared by the proxy handle, its guards and its tasks.
struct Shared {
    upstream: SocketAddr,
    rules: Arc<rules::RuleSet>,
    /// Number of live [`StallGuard`]s.
    stall: watch::Sender<usize>,
    refuse_new: AtomicBool,
    next_connection: AtomicU64,
    connections: Mutex<HashMap<u64, Connection>>,
    /// Pub/sub messages still to be discarded (see [`FaultProxy::drop_messages`]).
    drop_messages: AtomicUsize,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    commands_seen: AtomicU64,
    replies_dropped: AtomicU64,
    messages_dropped: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    active: AtomicUsize,
}

/// A live connection, as seen by [`FaultProxy::reset_all`] and `Drop`.
struct Connection {
    sockets: Arc<Sockets>,
    task: AbortHandle,
}

/// Both sockets of one connection; the upstream one once connected.
struct Sockets {
    client: TcpStream,
    upstream: OnceLock<TcpStream>,
}

impl Sockets {
    /// Makes the final close of both sockets send RST instead of FIN.
    fn reset(&self) {
        set_zero_linger(&self.client);
        if let Some(upstream) = self.upstream.get() {
            set_zero_linger(upstream);
        }
    }
}

fn set_zero_linger(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Removes a connection from the registry when its task ends or is aborted
/// (it is moved into the task, so it drops even if the task never ran).
struct ConnectionGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.connections().remove(&self.id);
        self.shared.stats.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, Connection>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns once no [`StallGuard`] is held.
    async fn wait_unstalled(&self) {
        if *self.stall.borrow() == 0 {
            return;
        }
        let mut stall = self.stall.subscribe();
        // Cannot fail: `self` owns the sender.
        let _ = stall.wait_for(|guards| *guards == 0).await;
    }

    fn spawn_connection(self: &Arc<Self>, client: TcpStream) {
        let _ = client.set_nodelay(true);
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let sockets = Arc::new(Sockets {
            client,
            upstream: OnceLock::new(),
        });
        self.stats.active.fetch_add(1, Ordering::AcqRel);
        let guard = ConnectionGuard {
            shared: Arc::clone(self),
            id,
        };
        // Hold the registry lock while spawning, so the task cannot remove
        // its entry before it is inserted.
        let mut connections = self.connections();
        let task = tokio::spawn({
            let shared = Arc::clone(self);
            let sockets = Arc::clone(&sockets);
            async move {
                let _guard = guard;
                conn::serve(&shared, &sockets).await;
            }
        });
        connections.insert(
            id,
            Connection {
                sockets,
                task: task.abort_handle(),
            },
        );
    }

    /// Removes every connection from the registry.
    fn take_connections(&self) -> Vec<Connection> {
        self.connections().drain().map(|(_, entry)| entry).collect()
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Runs until the proxy is dropped, which aborts this task.
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let full = shared.stats.active.load(Ordering::Acquire) >= MAX_CONNECTIONS;
        if full || shared.refuse_new.load(Ordering::Acquire) {
            shared
                .stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            set_zero_linger(&client);
            continue;
        }
        shared
            .stats
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        shared.spawn_connection(client);
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream`. Must be
    /// called inside a tokio runtime, which runs the proxy's tasks.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `upstream` is not a loopback address; any error from
    /// binding the listener.
    ///
    /// # Cancel safety
    ///
    /// Cancelling before completion leaves nothing running: the accept task
    /// is spawned after the last await, and an already bound listener is
    /// dropped with the future.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        if !upstream.ip().to_canonical().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("FaultProxy only forwards to loopback addresses, not {upstream}"),
            ));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            rules: Arc::default(),
            stall: watch::Sender::new(0),
            refuse_new: AtomicBool::new(false),
            next_connection: AtomicU64::new(0),
            connections: Mutex::default(),
            drop_messages: AtomicUsize::new(0),
            stats: Stats::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            shared,
            addr,
            accept,
        })
    }

    /// The address clients connect to (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        redis_url(self.addr.port(), None, None)
    }

    /// `redis://[user]:password@127.0.0.1:PORT/`, for servers that require
    /// authentication (credentials are percent-encoded).
    pub fn url_with_auth(&self, user: Option<&str>, password: &str) -> String {
        redis_url(self.addr.port(), user, Some(password))
    }

    /// Installs `rule` after the existing rules; it applies to commands read
    /// from now on, on every connection, until the guard is dropped.
    pub fn add_rule(&self, rule: Rule) -> RuleGuard {
        self.shared.rules.add(rule)
    }

    /// Stops forwarding in both directions on every connection, existing or
    /// new, until the guard is dropped; bytes read meanwhile are held and then
    /// forwarded in order. Bytes already being written when the stall begins
    /// may still go through.
    pub fn stall(&self) -> StallGuard {
        self.shared.stall.send_modify(|guards| *guards += 1);
        StallGuard {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Resets (TCP RST) every current connection, on the client and on the
    /// upstream side. New connections are accepted as before.
    pub fn reset_all(&self) {
        for connection in self.shared.take_connections() {
            connection.sockets.reset();
            connection.task.abort();
        }
    }

    /// While `true`, connections the proxy accepts are reset at once;
    /// connections it already serves are unaffected. The decision is made at
    /// `accept`, not at the client's `connect` (the kernel completes the
    /// handshake first), so make sure a connection is served — e.g. one
    /// round trip — before turning this on if it must survive.
    pub fn set_refuse_new(&self, refuse: bool) {
        self.shared.refuse_new.store(refuse, Ordering::Release);
    }

    /// Commands read from clients so far (all connections, pub/sub included;
    /// not counting bytes forwarded raw after a parse failure).
    pub fn commands_seen(&self) -> u64 {
        self.shared.stats.commands_seen.load(Ordering::Relaxed)
    }

    /// Replies discarded by [`Verdict::Drop`] so far.
    pub fn replies_dropped(&self) -> u64 {
        self.shared.stats.replies_dropped.load(Ordering::Relaxed)
    }

    /// Discard the next `n` pub/sub messages the server pushes to any client (`message`,
    /// `smessage` and `pmessage` frames, RESP2 or RESP3), as a lossy network or a
    /// subscriber's overflowing buffer would; the connections stay open.
    pub fn drop_messages(&self, n: usize) {
        self.shared.drop_messages.fetch_add(n, Ordering::AcqRel);
    }

    /// Pub/sub messages discarded by [`drop_messages`](Self::drop_messages) so far.
    pub fn messages_dropped(&self) -> u64 {
        self.shared.stats.messages_dropped.load(Ordering::Relaxed)
    }

    /// Connections accepted and proxied so far (refused ones not included).
    pub fn connections_accepted(&self) -> u64 {
        self.shared
            .stats
            .connections_accepted
            .load(Ordering::Relaxed)
    }

    /// Connections reset on accept so far (over [`MAX_CONNECTIONS`] or while
    /// [`set_refuse_new`](Self::set_refuse_new) is on).
    pub fn connections_refused(&self) -> u64 {
        self.shared
            .stats
            .connections_refused
            .load(Ordering::Relaxed)
    }

    /// Connections open right now.
    pub fn active_connections(&self) -> usize {
        self.shared.stats.active.load(Ordering::Acquire)
    }
}

impl Shared {
    /// Whether the proxy should discard a pub/sub message now (and count it if so).
    fn take_message_drop(&self) -> bool {
        let took = self
            .drop_messages
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if took {
            self.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
        }
        took
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("active_connections", &self.active_connections())
            .finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.shared.take_connections() {
            connection.task.abort();
        }
    }
}

/// While held, the proxy forwards nothing; see [`FaultProxy::stall`].
#[must_use = "forwarding resumes as soon as the guard is dropped"]
pub struct StallGuard {
    shared: Arc<Shared>,
}

impl StallGuard {
    /// Resumes forwarding now (same as dropping the guard), unless another
    /// stall guard is still held.
    pub fn resume(self) {
        drop(self);
    }
}

impl fmt::Debug for StallGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StallGuard").finish_non_exhaustive()
    }
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        self.shared.stall.send_modify(|guards| *guards -= 1);
    }
}
