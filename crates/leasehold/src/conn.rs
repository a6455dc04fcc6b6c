//! The command connection: one multiplexed connection per client, replaced when its state
//! is unknown.
//!
//! Every command runs under a response timeout measured here (not by redis-rs), and a
//! failure is classified by what it means for the command: never sent (connecting
//! failed), outcome unknown (timeout or a connection that broke after sending), or a
//! server error reply. After an unknown outcome the connection is discarded, because a
//! reply that is merely late would otherwise be matched to the next command. No command
//! is ever re-sent here; retrying is the caller's decision (only idempotent scripts are).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, ScriptInvocation};
use tokio::time::timeout;

use crate::error::is_server_reply;

/// Why a command did not produce a reply.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command was never sent: connecting failed.
    NotSent(Option<RedisError>),
    /// The command may have been applied: it timed out or the connection broke.
    Unknown(Option<RedisError>),
    /// Redis answered with an error reply; a script that errors has no effect.
    Server(RedisError),
}

impl Failure {
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::NotSent(Some(e)) => format!("could not connect to Redis: {e}"),
            Failure::NotSent(None) => "could not connect to Redis in time".to_string(),
            Failure::Unknown(Some(e)) => format!("connection broke before the reply: {e}"),
            Failure::Unknown(None) => "no reply within the response timeout".to_string(),
            Failure::Server(e) => format!("Redis answered with an error: {e}"),
        }
    }

    pub(crate) fn into_redis(self) -> Option<RedisError> {
        match self {
            Failure::NotSent(e) | Failure::Unknown(e) => e,
            Failure::Server(e) => Some(e),
        }
    }
}

struct Slot {
    generation: u64,
    con: Option<MultiplexedConnection>,
    /// Set by redis-rs's disconnection notice: the connection's driver has ended, so a
    /// command sent on it would fail without being written.
    dead: Arc<AtomicBool>,
}

/// Whether a connection error means the server does not know `HELLO 3`.
fn speaks_no_resp3(e: &RedisError) -> bool {
    let text = e.to_string();
    is_server_reply(e)
        && (text.contains("HELLO") || text.contains("unknown command") || text.contains("NOPROTO"))
}

/// Hands out the current connection, connecting on demand.
pub(crate) struct Connector {
    /// RESP3 when the server speaks it (disconnection notices need it), else RESP2.
    client: redis::Client,
    resp2_client: redis::Client,
    resp2_only: AtomicBool,
    connect_timeout: Duration,
    response_timeout: Duration,
    slot: Mutex<Slot>,
    connecting: tokio::sync::Mutex<()>,
}

impl Connector {
    pub(crate) fn new(
        info: redis::ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> redis::RedisResult<Self> {
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.clone().set_redis_settings(resp3))?;
        let resp2_client = redis::Client::open(info)?;
        Ok(Connector {
            client,
            resp2_client,
            resp2_only: AtomicBool::new(false),
            connect_timeout,
            response_timeout,
            slot: Mutex::new(Slot {
                generation: 0,
                con: None,
                dead: Arc::new(AtomicBool::new(true)),
            }),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.dead.load(Ordering::Acquire) {
            return None;
        }
        slot.con.clone().map(|c| (slot.generation, c))
    }

    async fn connection(&self, budget: Duration) -> Result<(u64, MultiplexedConnection), Failure> {
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
        let dead = Arc::new(AtomicBool::new(false));
        let con = if self.resp2_only.load(Ordering::Relaxed) {
            self.open(&self.resp2_client, wait, None).await?
        } else {
            match self.open(&self.client, wait, Some(dead.clone())).await {
                Err(Failure::NotSent(Some(e))) if speaks_no_resp3(&e) => {
                    // A server without HELLO 3: plain RESP2, without disconnection notices.
                    self.resp2_only.store(true, Ordering::Relaxed);
                    self.open(&self.resp2_client, wait, None).await?
                }
                other => other?,
            }
        };
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.generation += 1;
        slot.con = Some(con.clone());
        slot.dead = dead;
        Ok((slot.generation, con))
    }

    async fn open(
        &self,
        client: &redis::Client,
        wait: Duration,
        dead: Option<Arc<AtomicBool>>,
    ) -> Result<MultiplexedConnection, Failure> {
        let mut cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(wait))
            .set_response_timeout(None);
        if let Some(flag) = dead {
            cfg = cfg.set_push_sender(move |info: redis::PushInfo| {
                if info.kind == redis::PushKind::Disconnection {
                    flag.store(true, Ordering::Release);
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
            // Authentication and similar refusals come back as server replies; the command
            // itself was still never sent.
            Ok(Err(e)) => Err(Failure::NotSent(Some(e))),
            Err(_) => Err(Failure::NotSent(None)),
        }
    }

    /// Forget the connection of `generation` (if it is still the current one).
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.generation == generation {
            slot.con = None;
        }
    }

    /// Run a script (EVALSHA, one SCRIPT LOAD on NOSCRIPT) within `budget`.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        inv: &ScriptInvocation<'_>,
        budget: Duration,
    ) -> Result<T, Failure> {
        let budget = budget.min(self.response_timeout);
        let started = tokio::time::Instant::now();
        let (generation, mut con) = self.connection(budget).await?;
        let left = budget.saturating_sub(started.elapsed());
        match timeout(left, inv.invoke_async::<T>(&mut con)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_server_reply(&e) => Err(Failure::Server(e)),
            Ok(Err(e)) => {
                self.invalidate(generation);
                Err(Failure::Unknown(Some(e)))
            }
            Err(_) => {
                self.invalidate(generation);
                Err(Failure::Unknown(None))
            }
        }
    }

    /// Run a plain command within `budget`.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        budget: Duration,
    ) -> Result<T, Failure> {
        let budget = budget.min(self.response_timeout);
        let started = tokio::time::Instant::now();
        let (generation, mut con) = self.connection(budget).await?;
        let left = budget.saturating_sub(started.elapsed());
        match timeout(left, cmd.query_async::<T>(&mut con)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_server_reply(&e) => Err(Failure::Server(e)),
            Ok(Err(e)) => {
                self.invalidate(generation);
                Err(Failure::Unknown(Some(e)))
            }
            Err(_) => {
                self.invalidate(generation);
                Err(Failure::Unknown(None))
            }
        }
    }
}
