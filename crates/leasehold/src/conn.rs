//! The command connection: one multiplexed connection per client, replaced when its state
//! is unknown.
//!
//! Every command runs under a response timeout measured here (not by redis-rs), and a
//! failure is classified by what it means for the command: never sent (connecting
//! failed), outcome unknown (timeout or a connection that broke after sending), or a
//! server error reply. After an unknown outcome the connection is discarded, because a
//! reply that is merely late would otherwise be matched to the next command. No command
//! is ever re-sent here; retrying is the caller's decision (only idempotent scripts are).

use std::sync::Mutex;
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
}

/// Hands out the current connection, connecting on demand.
pub(crate) struct Connector {
    client: redis::Client,
    connect_timeout: Duration,
    response_timeout: Duration,
    slot: Mutex<Slot>,
    connecting: tokio::sync::Mutex<()>,
}

impl Connector {
    pub(crate) fn new(
        client: redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Connector {
            client,
            connect_timeout,
            response_timeout,
            slot: Mutex::new(Slot {
                generation: 0,
                con: None,
            }),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        let slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
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
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(wait))
            .set_response_timeout(None);
        let con = match timeout(
            wait,
            self.client.get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        {
            Ok(Ok(con)) => con,
            Ok(Err(e)) => {
                // Authentication and similar refusals come back as server replies; the
                // command itself was still never sent.
                return Err(Failure::NotSent(Some(e)));
            }
            Err(_) => return Err(Failure::NotSent(None)),
        };
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        slot.generation += 1;
        slot.con = Some(con.clone());
        Ok((slot.generation, con))
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
