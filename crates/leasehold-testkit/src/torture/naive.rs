//! The naive locks of the incident reports, as fixtures for the checker to catch:
//!
//! - [`SetnxExpireLock`] (seed 000): `SETNX`, then `EXPIRE` as a second command; `DEL` to
//!   unlock. A caller cancelled between the two leaves a key without a TTL.
//! - [`GetsetTimestampLock`] (seed 002): the value is an expiry time on the client's clock,
//!   taken over with `GETSET` when it looks expired; `DEL` to unlock, whoever holds it.
//! - [`NoRenewalLock`] (seed 003): `SET NX PX` with a unique value and a compare-and-delete
//!   unlock, but no renewal and no fencing token: a holder that outlives its lease keeps
//!   writing.
//! - [`RetryOnTimeoutLock`] (seed 004): `SET NX PX`, re-sent on a new connection when the
//!   reply times out; a retry that finds the key reports "not acquired", even when the key
//!   is the caller's own.
//!
//! None of them has a loss signal. They are deliberately wrong; do not copy them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::{BoxFuture, HoldUnderTest, LockUnderTest};

const POLL: Duration = Duration::from_millis(5);

async fn connect(url: &str, timeout: Duration) -> Result<MultiplexedConnection, String> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(timeout));
    redis::Client::open(url)
        .map_err(|e| e.to_string())?
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| e.to_string())
}

/// `SET name value NX PX ttl`: whether it was set.
async fn set_nx_px(
    con: &mut MultiplexedConnection,
    name: &str,
    value: &str,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let reply: Option<String> = redis::cmd("SET")
        .arg(name)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        .query_async(con)
        .await?;
    Ok(reply.is_some())
}

fn value_for(worker: usize) -> String {
    format!("worker-{worker}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn holds_value(url: &str, name: &str, value: &str) -> bool {
    let Ok(mut con) = connect(url, Duration::from_millis(500)).await else {
        return false;
    };
    let v: Option<String> = redis::cmd("GET")
        .arg(name)
        .query_async(&mut con)
        .await
        .unwrap_or(None);
    v.as_deref() == Some(value)
}

/// A hold of a naive lock: release is whatever the lock's unlock does.
struct NaiveHold {
    release: Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>,
}

impl HoldUnderTest for NaiveHold {
    fn token(&self) -> Option<u64> {
        None
    }
    fn lost_signal(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        (self.release)()
    }
}

fn del_on_release(url: String, name: String) -> Box<dyn HoldUnderTest> {
    Box::new(NaiveHold {
        release: Box::new(move || {
            Box::pin(async move {
                if let Ok(mut con) = connect(&url, Duration::from_millis(500)).await {
                    let _: Result<(), _> = redis::cmd("DEL").arg(&name).query_async(&mut con).await;
                }
            })
        }),
    })
}

fn compare_and_delete(url: String, name: String, value: String) -> Box<dyn HoldUnderTest> {
    Box::new(NaiveHold {
        release: Box::new(move || {
            Box::pin(async move {
                let script = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                );
                if let Ok(mut con) = connect(&url, Duration::from_millis(500)).await {
                    let _: Result<i64, _> =
                        script.key(&name).arg(&value).invoke_async(&mut con).await;
                }
            })
        }),
    })
}

/// Seed 000: `SETNX` then `EXPIRE`, `DEL` to unlock.
#[derive(Debug, Clone)]
pub struct SetnxExpireLock {
    /// The Redis URL.
    pub url: String,
}

impl LockUnderTest for SetnxExpireLock {
    fn label(&self) -> String {
        "naive SETNX+EXPIRE (seed 000)".into()
    }

    fn acquire<'a>(
        &'a self,
        worker: usize,
        name: &'a str,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn HoldUnderTest>>, String>> {
        Box::pin(async move {
            let mut con = connect(&self.url, Duration::from_millis(500)).await?;
            let until = Instant::now() + wait;
            loop {
                let got: bool = redis::cmd("SETNX")
                    .arg(name)
                    .arg(value_for(worker))
                    .query_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                if got {
                    // A caller cancelled right here leaves the key without a TTL.
                    tokio::task::yield_now().await;
                    let secs = ttl.as_secs().max(1);
                    let _: () = redis::cmd("EXPIRE")
                        .arg(name)
                        .arg(secs)
                        .query_async(&mut con)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(Some(del_on_release(self.url.clone(), name.to_string())));
                }
                if Instant::now() >= until {
                    return Ok(None);
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }

    fn holds_for<'a>(&'a self, worker: usize, name: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { holds_value(&self.url, name, &value_for(worker)).await })
    }
}

/// Seed 002: an expiry timestamp as the value, `GETSET` to take over, `DEL` to unlock.
#[derive(Debug, Clone)]
pub struct GetsetTimestampLock {
    /// The Redis URL.
    pub url: String,
}

impl LockUnderTest for GetsetTimestampLock {
    fn label(&self) -> String {
        "naive GETSET timestamps, DEL unlock (seed 002)".into()
    }

    fn acquire<'a>(
        &'a self,
        _worker: usize,
        name: &'a str,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn HoldUnderTest>>, String>> {
        Box::pin(async move {
            let mut con = connect(&self.url, Duration::from_millis(500)).await?;
            let until = Instant::now() + wait;
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            loop {
                let expires = now_ms() + ttl_ms;
                let got: bool = redis::cmd("SETNX")
                    .arg(name)
                    .arg(expires)
                    .query_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                if got {
                    return Ok(Some(del_on_release(self.url.clone(), name.to_string())));
                }
                let current: Option<u64> = redis::cmd("GET")
                    .arg(name)
                    .query_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(seen) = current.filter(|t| *t < now_ms()) {
                    let old: Option<u64> = redis::cmd("GETSET")
                        .arg(name)
                        .arg(expires)
                        .query_async(&mut con)
                        .await
                        .map_err(|e| e.to_string())?;
                    if old == Some(seen) {
                        return Ok(Some(del_on_release(self.url.clone(), name.to_string())));
                    }
                }
                if Instant::now() >= until {
                    return Ok(None);
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }

    fn holds_for<'a>(&'a self, _worker: usize, _name: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }
}

/// Seed 003: `SET NX PX` and compare-and-delete, without renewal or fencing.
#[derive(Debug, Clone)]
pub struct NoRenewalLock {
    /// The Redis URL.
    pub url: String,
}

impl LockUnderTest for NoRenewalLock {
    fn label(&self) -> String {
        "naive SET NX PX, no renewal (seed 003)".into()
    }

    fn acquire<'a>(
        &'a self,
        worker: usize,
        name: &'a str,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn HoldUnderTest>>, String>> {
        Box::pin(async move {
            let mut con = connect(&self.url, Duration::from_millis(500)).await?;
            let until = Instant::now() + wait;
            let value = format!("{}-{}", value_for(worker), now_ms());
            loop {
                let ok = set_nx_px(&mut con, name, &value, ttl)
                    .await
                    .map_err(|e| e.to_string())?;
                if ok {
                    return Ok(Some(compare_and_delete(
                        self.url.clone(),
                        name.to_string(),
                        value,
                    )));
                }
                if Instant::now() >= until {
                    return Ok(None);
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }

    fn holds_for<'a>(&'a self, _worker: usize, _name: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async { false })
    }
}

/// Seed 004: `SET NX PX`, re-sent on a new connection after a timeout.
#[derive(Debug, Clone)]
pub struct RetryOnTimeoutLock {
    /// The Redis URL.
    pub url: String,
    /// The client's response timeout.
    pub timeout: Duration,
}

impl LockUnderTest for RetryOnTimeoutLock {
    fn label(&self) -> String {
        "naive SET NX with retry after timeout (seed 004)".into()
    }

    fn acquire<'a>(
        &'a self,
        worker: usize,
        name: &'a str,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn HoldUnderTest>>, String>> {
        Box::pin(async move {
            let until = Instant::now() + wait;
            let value = value_for(worker);
            let mut con = connect(&self.url, self.timeout).await?;
            loop {
                let set = match set_nx_px(&mut con, name, &value, ttl).await {
                    Ok(r) => r,
                    Err(_) => {
                        // The reply did not come: retry on a fresh connection, and believe
                        // the retry: "taken" means someone else has it (seed 004's bug).
                        con = connect(&self.url, self.timeout).await?;
                        match set_nx_px(&mut con, name, &value, ttl).await {
                            Ok(true) => true,
                            Ok(false) => return Ok(None),
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                };
                if set {
                    return Ok(Some(compare_and_delete(
                        self.url.clone(),
                        name.to_string(),
                        value,
                    )));
                }
                if Instant::now() >= until {
                    return Ok(None);
                }
                tokio::time::sleep(POLL).await;
            }
        })
    }

    fn holds_for<'a>(&'a self, worker: usize, name: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { holds_value(&self.url, name, &value_for(worker)).await })
    }
}
