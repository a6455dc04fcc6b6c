//! The command connection: one multiplexed connection per client, replaced when its state
//! is unknown, and fenced off at the server before anything else is sent.
//!
//! Every command runs under a response timeout measured here (not by redis-rs), and a
//! failure is classified by what it means for the command: never sent (connecting
//! failed, or the server answered "not now": `LOADING`, `BUSY`, `TRYAGAIN`,
//! `MASTERDOWN`), outcome unknown (timeout or a connection that broke after sending), or
//! a server error reply. After an unknown outcome the connection is discarded, because a
//! reply that is merely late would otherwise be matched to the next command.
//!
//! A discarded connection may still carry a command on its way to Redis (in a kernel
//! buffer, a proxy, the network). Before the next command is sent on a new connection,
//! the old one is closed at the server with `CLIENT KILL ID` (its id is learned when it
//! connects): from then on, what the old connection carried has either run already or
//! never will, so a retry or a release can no longer be overtaken by it. If the ACL user
//! may not run `CLIENT KILL`, this fencing is skipped (see [`Connector::can_fence`]).
//!
//! No command is ever re-sent here; retrying is the caller's decision (only idempotent
//! scripts are).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError};

use crate::protocol::scripts::Call;
use tokio::time::{timeout, Instant};

use crate::error::is_server_reply;
use crate::net::endpoint::Endpoint;
pub(crate) use crate::net::failure::Failure;

pub(crate) use crate::net::failure::MIN_BUDGET;

/// A command connection: to one server, or to a Redis Cluster (which routes each command
/// to the node that owns its first key's slot, follows `MOVED`/`ASK`, and reconnects and
/// retries by itself — safe for leasehold's scripts because each is idempotent per
/// request id, see `PROTOCOL.md`).
#[derive(Clone)]
pub(crate) enum Con {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Con {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Con::Cluster(_))
    }
}

impl redis::aio::ConnectionLike for Con {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Con::Single(c) => c.req_packed_command(cmd),
            Con::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Con::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Con::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(c) => c.get_db(),
            Con::Cluster(c) => c.get_db(),
        }
    }
}

/// Server errors that mean "not executed, try again".
fn is_transient_server_error(e: &RedisError) -> bool {
    matches!(
        e.code(),
        Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN")
    )
}

struct Slot {
    generation: u64,
    con: Option<Con>,
    /// The server's id for this connection (`CLIENT ID`), for fencing it off later.
    client_id: Option<(i64, String)>,
    /// Set by redis-rs's disconnection notice: the connection's driver has ended, so a
    /// command sent on it would fail without being written.
    dead: Arc<AtomicBool>,
}

/// What a connector calls when it sees its server restarted.
pub(crate) type RestartHook = Arc<dyn Fn() + Send + Sync>;

/// Hands out the current connection, connecting on demand.
pub(crate) struct Connector {
    /// Where the server is (resolved again for every new connection).
    endpoint: Arc<Endpoint>,
    /// Speak RESP2 only: the server does not know `HELLO 3` (RESP3 is preferred, because
    /// disconnection notices need it).
    resp2_only: AtomicBool,
    connect_timeout: Duration,
    response_timeout: Duration,
    slot: Mutex<Slot>,
    /// Ids of discarded connections still to be closed at the server.
    to_fence: Mutex<Vec<(i64, String)>>,
    fencing_denied: AtomicBool,
    connecting: tokio::sync::Mutex<()>,
    /// The server last connected to, as (address, run_id): a new run_id at the same
    /// address is a restart. Shared by the connectors of one client (see
    /// [`sharing_server_identity`](Self::sharing_server_identity)).
    last_server: Arc<Mutex<Option<(String, String)>>>,
    /// Called when a restart is seen (set by the client).
    on_restart: Arc<Mutex<Option<RestartHook>>>,
    /// Notified when the server ends a connection (RESP3 disconnection notice), so that a
    /// watcher can reconnect at once and notice a restart.
    broke: Arc<tokio::sync::Notify>,
    /// Acquire, release and extend calls queued for a batch while this connection is busy.
    coalescer: crate::net::coalesce::Coalescer,
}

impl Connector {
    pub(crate) fn new(
        endpoint: Arc<Endpoint>,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Connector {
            endpoint,
            resp2_only: AtomicBool::new(false),
            connect_timeout,
            response_timeout,
            slot: Mutex::new(Slot {
                generation: 0,
                con: None,
                client_id: None,
                dead: Arc::new(AtomicBool::new(true)),
            }),
            to_fence: Mutex::new(Vec::new()),
            fencing_denied: AtomicBool::new(false),
            connecting: tokio::sync::Mutex::new(()),
            last_server: Arc::new(Mutex::new(None)),
            on_restart: Arc::new(Mutex::new(None)),
            broke: Arc::new(tokio::sync::Notify::new()),
            coalescer: crate::net::coalesce::Coalescer::default(),
        }
    }

    /// This connector, noticing restarts together with `other` (the same server seen
    /// through another connection of the client): whichever connects first after a
    /// restart reports it, once.
    pub(crate) fn sharing_server_identity(mut self, other: &Connector) -> Self {
        self.last_server = other.last_server.clone();
        self.on_restart = other.on_restart.clone();
        self
    }

    /// Call `hook` whenever a new connection finds a new `run_id` at the address of the
    /// previous one: the server restarted.
    pub(crate) fn on_restart(&self, hook: RestartHook) {
        *self.on_restart.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Notified when the server ends the current connection (and on client drop).
    pub(crate) fn broken(&self) -> Arc<tokio::sync::Notify> {
        self.broke.clone()
    }

    /// Connect now if the current connection is gone; whether a connection is up.
    pub(crate) async fn reconnect(&self) -> bool {
        self.connection(self.connect_timeout).await.is_ok()
    }

    /// Remember the server at `addr` with `run_id`; whether it restarted since the last
    /// connection to that address.
    fn note_server(&self, addr: &str, run_id: &str) -> bool {
        let mut last = self.last_server.lock().unwrap_or_else(|e| e.into_inner());
        let restarted = matches!(&*last, Some((a, r)) if a == addr && r != run_id);
        *last = Some((addr.to_string(), run_id.to_string()));
        restarted
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Whether discarded connections are closed at the server before the next command
    /// (false when the ACL user may not run `CLIENT KILL`).
    pub(crate) fn can_fence(&self) -> bool {
        !self.fencing_denied.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<(u64, Con)> {
        let (generation, dead) = {
            let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            if !slot.dead.load(Ordering::Acquire) {
                return slot.con.clone().map(|c| (slot.generation, c));
            }
            (slot.generation, slot.con.is_some())
        };
        if dead {
            // The connection broke: what it carried may still reach Redis; fence it off.
            self.invalidate(generation);
        }
        None
    }

    async fn connection(&self, budget: Duration) -> Result<(u64, Con), Failure> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let wait = budget.min(self.connect_timeout);
        let _connecting = match timeout(wait, self.connecting.lock()).await {
            Ok(g) => g,
            Err(_) => return Err(Failure::NotSent(None)),
        };
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let started = Instant::now();
        if let Some(seeds) = self.endpoint.cluster() {
            if seeds.insecure() {
                warn_insecure("the Redis Cluster nodes");
            }
            let con = self.open_cluster(seeds, wait).await?;
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.generation += 1;
            slot.con = Some(Con::Cluster(con.clone()));
            slot.client_id = None;
            // The cluster connection repairs itself; it is only replaced after an unknown
            // outcome.
            slot.dead = Arc::new(AtomicBool::new(false));
            return Ok((slot.generation, Con::Cluster(con)));
        }
        let info = self.endpoint.resolve(wait).await?;
        let addr = info.addr().to_string();
        if crate::net::tls::is_insecure(&info) {
            warn_insecure(&info.addr().to_string());
        }
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.clone().set_redis_settings(resp3))
            .map_err(|e| Failure::NotSent(Some(e)))?;
        let resp2_client = redis::Client::open(info).map_err(|e| Failure::NotSent(Some(e)))?;
        let dead = Arc::new(AtomicBool::new(false));
        let left = wait.saturating_sub(started.elapsed());
        let mut con = if self.resp2_only.load(Ordering::Relaxed) {
            self.open(&resp2_client, left, None).await?
        } else {
            match self.open(&client, left, Some(dead.clone())).await {
                Err(Failure::NotSent(Some(e))) if speaks_no_resp3(&e) => {
                    // A server without HELLO 3: plain RESP2, without disconnection notices.
                    self.resp2_only.store(true, Ordering::Relaxed);
                    self.open(&resp2_client, left, None).await?
                }
                other => other?,
            }
        };
        let left = wait
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        if self.endpoint.is_sentinel() {
            // A sentinel may name a master that has not taken over yet, or one that was
            // just demoted: only a server that says it is the master is used.
            match timeout(
                left,
                redis::cmd("ROLE").query_async::<redis::Value>(&mut con),
            )
            .await
            {
                Ok(Ok(role)) if crate::net::endpoint::is_master_role(&role) => {}
                Ok(Ok(_)) => {
                    return Err(Failure::NotSent(Some(redis::RedisError::from(
                        std::io::Error::other("the server Sentinel named is not a master (yet)"),
                    ))))
                }
                Ok(Err(e)) => return Err(Failure::NotSent(Some(e))),
                Err(_) => return Err(Failure::NotSent(None)),
            }
        }
        let mut ask = redis::pipe();
        ask.cmd("CLIENT").arg("ID").cmd("INFO").arg("server");
        let client_id = match timeout(left, ask.query_async::<(i64, String)>(&mut con)).await {
            Ok(Ok((id, info))) => {
                let run_id = info
                    .lines()
                    .find_map(|l| l.strip_prefix("run_id:"))
                    .map(|r| r.trim().to_string())
                    .unwrap_or_default();
                Some((id, run_id))
            }
            Ok(Err(e)) if e.code() == Some("NOPERM") || e.to_string().contains("NOPERM") => {
                // Which of the two was denied decides what the warning asks for.
                let client_id = timeout(
                    left,
                    redis::cmd("CLIENT").arg("ID").query_async::<i64>(&mut con),
                )
                .await;
                let denied = match client_id {
                    Ok(Ok(_)) => Denied::Info,
                    _ => Denied::ClientId,
                };
                self.deny_fencing(denied);
                None
            }
            Ok(Err(e)) => return Err(Failure::NotSent(Some(e))),
            Err(_) => return Err(Failure::NotSent(None)),
        };
        let restarted = match &client_id {
            Some((_, run_id)) if !run_id.is_empty() => self.note_server(&addr, run_id),
            _ => false,
        };
        // Reported before the connection is handed out: nothing is sent on it before the
        // leases of the old server are given up.
        if restarted {
            tracing::warn!(server = %addr, "Redis restarted (a new run_id at the same address): leases held there are given up");
            let hook = self
                .on_restart
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(hook) = hook {
                hook();
            }
        }
        let generation = {
            let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.generation += 1;
            slot.con = Some(Con::Single(con.clone()));
            slot.client_id = client_id;
            slot.dead = dead;
            slot.generation
        };
        Ok((generation, Con::Single(con)))
    }

    async fn open_cluster(
        &self,
        seeds: &crate::net::endpoint::ClusterSeeds,
        wait: Duration,
    ) -> Result<ClusterConnection, Failure> {
        // The cluster client's own response timeout only backs up leasehold's (which
        // decides what an unknown outcome means); its retries after a broken connection
        // are safe because every script is idempotent per request id.
        let client = seeds
            .builder()
            .connection_timeout(wait)
            .response_timeout(self.response_timeout * 2)
            .retries(3)
            .build()
            .map_err(|e| Failure::NotSent(Some(e)))?;
        match timeout(wait, client.get_async_connection()).await {
            Ok(Ok(con)) => Ok(con),
            Ok(Err(e)) => Err(Failure::NotSent(Some(e))),
            Err(_) => Err(Failure::NotSent(None)),
        }
    }

    async fn open(
        &self,
        client: &redis::Client,
        wait: Duration,
        dead: Option<Arc<AtomicBool>>,
    ) -> Result<MultiplexedConnection, Failure> {
        let tls = matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { .. }
        );
        let mut cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(wait))
            .set_response_timeout(None);
        if let Some(flag) = dead {
            let broke = self.broke.clone();
            cfg = cfg.set_push_sender(move |info: redis::PushInfo| {
                if info.kind == redis::PushKind::Disconnection {
                    flag.store(true, Ordering::Release);
                    broke.notify_one();
                }
                Ok::<(), std::convert::Infallible>(())
            });
        }
        match timeout(
            wait,
            client.get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        {
            Ok(Ok(con)) => Ok(con),
            // A plain port answers a TLS hello with silence: say so rather than only
            // "timed out".
            Ok(Err(e)) if e.is_timeout() && tls => Err(Failure::NotSent(Some(silent_tls(
                client.get_connection_info().addr(),
                wait,
            )))),
            // Authentication and similar refusals come back as server replies; the command
            // itself was still never sent.
            Ok(Err(e)) => Err(Failure::NotSent(Some(e))),
            Err(_) if tls => Err(Failure::NotSent(Some(silent_tls(
                client.get_connection_info().addr(),
                wait,
            )))),
            Err(_) => Err(Failure::NotSent(None)),
        }
    }

    fn deny_fencing(&self, denied: Denied) {
        if !self.fencing_denied.swap(true, Ordering::Relaxed) {
            let (command, grant) = match denied {
                Denied::ClientId => ("CLIENT ID", "+client|id and +client|kill"),
                Denied::ClientKill => ("CLIENT KILL", "+client|kill"),
                Denied::Info => ("INFO", "+info"),
            };
            tracing::warn!(
                denied = command,
                "the Redis user may not run {command}, so a command on an abandoned connection cannot be fenced off (INFO tells a restarted server apart before CLIENT KILL); grant {grant} for deterministic cleanup"
            );
        }
        self.to_fence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Forget the connection of `generation` (if it is still the current one); it will be
    /// closed at the server before the next command is sent.
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.generation == generation && slot.con.is_some() {
            slot.con = None;
            if let Some(id) = slot.client_id.take() {
                let mut fence = self.to_fence.lock().unwrap_or_else(|e| e.into_inner());
                fence.push(id);
                if fence.len() > 1_024 {
                    // Unreachable for that long: the oldest connections are long closed.
                    fence.remove(0);
                    tracing::warn!("more than 1024 abandoned connections wait to be fenced off");
                }
            }
        }
    }

    /// Close discarded connections at the server, on `con`, before anything else is sent.
    async fn fence_old(
        &self,
        generation: u64,
        con: &mut Con,
        until: Instant,
    ) -> Result<(), Failure> {
        let current = {
            let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.client_id.clone()
        };
        loop {
            let next = self
                .to_fence
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last()
                .cloned();
            let Some((id, run_id)) = next else {
                return Ok(());
            };
            let stale = match &current {
                // Another server (restarted, failed over): its connections are gone, and
                // the same id may now name someone else's connection.
                Some((cur_id, cur_run)) => *cur_run != run_id || *cur_id == id,
                None => true,
            };
            if !stale {
                let left = until.saturating_duration_since(Instant::now());
                let mut kill = redis::cmd("CLIENT");
                kill.arg("KILL").arg("ID").arg(id);
                match timeout(left, kill.query_async::<i64>(con)).await {
                    // The number of connections closed: 1, or 0 if it was already gone.
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if e.code() == Some("NOPERM") => {
                        self.deny_fencing(Denied::ClientKill);
                        return Ok(());
                    }
                    Ok(Err(e)) if is_server_reply(&e) => return Err(Failure::NotSent(Some(e))),
                    Ok(Err(e)) => {
                        self.invalidate(generation);
                        return Err(Failure::NotSent(Some(e)));
                    }
                    Err(_) => {
                        self.invalidate(generation);
                        return Err(Failure::NotSent(None));
                    }
                }
            }
            self.to_fence
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(x, r)| !(*x == id && *r == run_id));
        }
    }

    async fn ready(&self, budget: Duration) -> Result<(u64, Con, Instant), Failure> {
        let until = Instant::now() + budget;
        let (generation, mut con) = self.connection(budget).await?;
        if !self
            .to_fence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            self.fence_old(generation, &mut con, until).await?;
        }
        Ok((generation, con, until))
    }

    fn classify(
        &self,
        generation: u64,
        result: Result<redis::RedisResult<impl Sized>, tokio::time::error::Elapsed>,
    ) -> Option<Failure> {
        match result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) if is_server_reply(&e) && e.code() == Some("READONLY") => {
                // A demoted master (after a failover): not applied; find the new master.
                self.invalidate(generation);
                Some(Failure::NotSent(Some(e)))
            }
            Ok(Err(e)) if is_server_reply(&e) && is_transient_server_error(&e) => {
                Some(Failure::NotSent(Some(e)))
            }
            Ok(Err(e)) if is_server_reply(&e) => Some(Failure::Server(e)),
            Ok(Err(e)) => {
                self.invalidate(generation);
                Some(Failure::Unknown(Some(e)))
            }
            Err(_) => {
                self.invalidate(generation);
                Some(Failure::Unknown(None))
            }
        }
    }

    /// Run a script (EVALSHA, one SCRIPT LOAD on NOSCRIPT) within `budget`.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        inv: &Call<'_>,
        budget: Duration,
    ) -> Result<T, Failure> {
        let (generation, mut con, until) = self.ready(budget.min(self.response_timeout)).await?;
        let left = until.saturating_duration_since(Instant::now());
        match timeout(left, invoke::<T>(inv, &mut con)).await {
            Ok(Ok(v)) => Ok(v),
            other => Err(self
                .classify(generation, other)
                .unwrap_or(Failure::Unknown(None))),
        }
    }

    /// Run a leasehold script whose reply is a list of integers ending with the reply tag
    /// (see PROTOCOL.md): a fresh tag is appended as the last argument, and a reply that
    /// does not carry it belongs to another request — the connection is out of step (a
    /// reply went missing), so it is discarded and the outcome is unknown.
    ///
    /// Acquire, release and extend calls are coalesced (see `net/coalesce.rs`): sent at
    /// once while the connection is not busy, else in one batch call with the others
    /// queued at the same moment.
    pub(crate) async fn eval_tagged(
        &self,
        inv: &mut Call<'_>,
        budget: Duration,
    ) -> Result<Vec<i64>, Failure> {
        match inv.batchable() {
            Some((kind, batch)) => {
                crate::net::coalesce::submit(self, (kind, batch), inv, budget).await
            }
            None => self.eval_tagged_alone(inv, budget).await,
        }
    }

    /// Run a tagged script call on its own (never in a batch).
    pub(crate) async fn eval_tagged_alone(
        &self,
        inv: &mut Call<'_>,
        budget: Duration,
    ) -> Result<Vec<i64>, Failure> {
        self.eval_tagged_on(inv, budget)
            .await
            .map(|(reply, ..)| reply)
    }

    /// The queue of calls waiting for a batch on this connection.
    pub(crate) fn coalescer(&self) -> &crate::net::coalesce::Coalescer {
        &self.coalescer
    }

    /// Run a tagged script whose reply is a list of any values ending with the tag (the
    /// batch script): the values without the tag.
    pub(crate) async fn eval_tagged_values(
        &self,
        inv: &mut Call<'_>,
        budget: Duration,
    ) -> Result<Vec<redis::Value>, Failure> {
        self.eval_tagged_on::<redis::Value>(inv, budget)
            .await
            .map(|(reply, ..)| reply)
    }

    /// Run a tagged script (as [`eval_tagged`](Self::eval_tagged)) and, if its reply
    /// starts with `1` (granted), `WAIT replicas wait` on the same connection: `WAIT`
    /// counts the replicas that acknowledged every write this connection made, the
    /// script's included. Returns the reply and the acknowledgements (`None` when `WAIT`
    /// failed: how many replicas have the grant is unknown).
    pub(crate) async fn eval_tagged_then_wait(
        &self,
        inv: &mut Call<'_>,
        budget: Duration,
        replicas: u32,
        wait: Duration,
    ) -> Result<(Vec<i64>, Option<u32>), Failure> {
        let (reply, generation, mut con) = self.eval_tagged_on(inv, budget).await?;
        if !crate::protocol::is_grant(&reply) {
            return Ok((reply, None));
        }
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(crate::lease::millis(wait));
        match timeout(
            wait + self.response_timeout,
            cmd.query_async::<i64>(&mut con),
        )
        .await
        {
            Ok(Ok(n)) => Ok((reply, Some(u32::try_from(n.max(0)).unwrap_or(u32::MAX)))),
            other => {
                if let Some(f) = self.classify(generation, other) {
                    tracing::debug!(cause = %f.describe(), "WAIT for replica acknowledgements failed");
                }
                Ok((reply, None))
            }
        }
    }

    async fn eval_tagged_on<T: Tagged>(
        &self,
        inv: &mut Call<'_>,
        budget: Duration,
    ) -> Result<(Vec<T>, u64, Con), Failure> {
        let tag = i64::try_from(rand::random::<u64>() >> 16).unwrap_or(1) | 1;
        inv.arg(tag);
        let (generation, mut con, until) = self.ready(budget.min(self.response_timeout)).await?;
        let left = until.saturating_duration_since(Instant::now());
        match timeout(left, invoke::<Vec<T>>(inv, &mut con)).await {
            Ok(Ok(mut reply)) if reply.last().is_some_and(|last| last.is_tag(tag)) => {
                reply.pop();
                Ok((reply, generation, con))
            }
            Ok(Ok(_)) => {
                tracing::warn!("a reply did not match its request: the connection is out of step; discarding it");
                self.invalidate(generation);
                Err(Failure::Unknown(None))
            }
            other => Err(self
                .classify(generation, other)
                .unwrap_or(Failure::Unknown(None))),
        }
    }

    /// Run a plain command within `budget`.
    /// Like [`query`](Self::query), on the Cluster node at `host:port` (a one-server
    /// client sends it to its server).
    pub(crate) async fn query_at<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        host: &str,
        port: u16,
        budget: Duration,
    ) -> Result<T, Failure> {
        let (generation, con, until) = self.ready(budget.min(self.response_timeout)).await?;
        let Con::Cluster(mut cluster) = con else {
            return self.query(cmd, budget).await;
        };
        let route = redis::cluster_routing::RoutingInfo::SingleNode(
            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                host: host.to_string(),
                port,
            },
        );
        let left = until.saturating_duration_since(Instant::now());
        match timeout(left, cluster.route_command(cmd.clone(), route)).await {
            Ok(Ok(v)) => T::from_redis_value(v).map_err(|e| Failure::Server(e.into())),
            other => Err(self
                .classify(generation, other)
                .unwrap_or(Failure::Unknown(None))),
        }
    }

    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        budget: Duration,
    ) -> Result<T, Failure> {
        let (generation, mut con, until) = self.ready(budget.min(self.response_timeout)).await?;
        let left = until.saturating_duration_since(Instant::now());
        match timeout(left, cmd.query_async::<T>(&mut con)).await {
            Ok(Ok(v)) => Ok(v),
            other => Err(self
                .classify(generation, other)
                .unwrap_or(Failure::Unknown(None))),
        }
    }
}

impl crate::net::coalesce::Transport for Connector {
    fn coalescer(&self) -> &crate::net::coalesce::Coalescer {
        &self.coalescer
    }

    fn is_cluster(&self) -> bool {
        self.endpoint.cluster().is_some()
    }

    fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    fn send_alone<'a>(
        &'a self,
        inv: &'a mut Call<'_>,
        budget: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<i64>, Failure>> + Send + 'a {
        self.eval_tagged_alone(inv, budget)
    }

    fn send_values<'a>(
        &'a self,
        inv: &'a mut Call<'_>,
        budget: Duration,
    ) -> impl std::future::Future<Output = Result<Vec<redis::Value>, Failure>> + Send + 'a {
        self.eval_tagged_values(inv, budget)
    }
}

/// An element of a tagged script's reply: the last one must be the request's tag.
trait Tagged: FromRedisValue {
    fn is_tag(&self, tag: i64) -> bool;
}

impl Tagged for i64 {
    fn is_tag(&self, tag: i64) -> bool {
        *self == tag
    }
}

impl Tagged for redis::Value {
    fn is_tag(&self, tag: i64) -> bool {
        *self == redis::Value::Int(tag)
    }
}

/// Whether a connection error means the server does not know `HELLO 3`.
fn speaks_no_resp3(e: &RedisError) -> bool {
    let text = e.to_string();
    is_server_reply(e)
        && (text.contains("HELLO") || text.contains("unknown command") || text.contains("NOPROTO"))
}

/// Run a script call: `EVALSHA`, and on `NOSCRIPT` one `SCRIPT LOAD` (whose answer must be
/// the script's hash, or the connection is out of step) and the `EVALSHA` again. On a
/// cluster, where `SCRIPT LOAD` would go to a random node, the fallback is one `EVAL`
/// instead (routed by key like the `EVALSHA`, and caching the script on that node).
async fn invoke<T: FromRedisValue>(call: &Call<'_>, con: &mut Con) -> redis::RedisResult<T> {
    let no_script =
        |e: &RedisError| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
    match call.evalsha().query_async(con).await {
        Err(e) if no_script(&e) && con.is_cluster() => call.eval().query_async(con).await,
        Err(e) if no_script(&e) => {
            let hash: String = call.load().query_async(con).await?;
            if hash != call.hash() {
                return Err(RedisError::from(std::io::Error::other(
                    "SCRIPT LOAD answered with another hash: the connection is out of step",
                )));
            }
            call.evalsha().query_async(con).await
        }
        other => other,
    }
}

/// Insecure TLS was asked for: say so on every connection it is used for.
fn warn_insecure(to: &str) {
    tracing::warn!(
        server = %to,
        "TLS certificate verification is OFF (insecure mode): anyone on the path can pose as this server"
    );
}

/// A TLS connection that got no answer in time: most often a port that does not speak TLS.
fn silent_tls(addr: &redis::ConnectionAddr, wait: Duration) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!(
            "the TLS handshake with {addr} got no answer within {} ms: is that a TLS port? (a plain port stays silent)",
            wait.as_millis()
        ),
    ))
}

/// The command an ACL denied, which turned fencing of abandoned connections off.
#[derive(Debug, Clone, Copy)]
enum Denied {
    ClientId,
    ClientKill,
    Info,
}
