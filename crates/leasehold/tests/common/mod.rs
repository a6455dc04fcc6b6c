//! Helpers shared by leasehold's integration tests: clients with short timeouts, polling
//! with a deadline, and raw Redis inspection.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use leasehold::Client;
use redis::AsyncCommands;

/// A client with timeouts short enough for fault tests.
pub fn client(url: &str) -> Client {
    Client::builder(url)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(250))
        .build()
        .expect("client")
}

/// A client with a short response timeout (150 ms), for short auto-renewed leases (from
/// about 240 ms), which must outlast one slow renewal.
pub fn quick(url: &str) -> Client {
    Client::builder(url)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(150))
        .build()
        .expect("client")
}

/// A client with generous timeouts, for tests that inject no faults (so a busy machine
/// does not turn into ambiguous outcomes). Its response timeout (1 s) admits auto-renewed
/// leases from about 1.6 s.
pub fn steady(url: &str) -> Client {
    Client::builder(url)
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(1))
        .build()
        .expect("client")
}

/// Number of members of a sorted set.
pub async fn zcard(con: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(key)
        .query_async(con)
        .await
        .expect("ZCARD")
}

/// Poll `check` every 5 ms until it returns true; panic with `what` after `limit`.
pub async fn poll_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// PTTL of a key through a direct connection (-2 = absent, -1 = no TTL).
pub async fn pttl(con: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(con)
        .await
        .expect("PTTL")
}

/// Whether a key exists.
pub async fn exists(con: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    con.exists(key).await.expect("EXISTS")
}

/// A hash field of the lock.
pub async fn hget(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    field: &str,
) -> Option<String> {
    con.hget(key, field).await.expect("HGET")
}

/// Calls of one command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
pub async fn command_calls(con: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Calls of `command` in `INFO commandstats` that ran: a script call refused with
/// NOSCRIPT (the first call of a script on a server, before it is loaded) does not count.
pub async fn command_runs(con: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:");
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_default();
    let field = |name: &str| -> u64 {
        line.split(',')
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    field("calls") - field("failed_calls")
}

/// Reset `INFO commandstats`.
pub async fn reset_stats(con: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(con)
        .await
        .expect("RESETSTAT");
}

/// The SHA1 of a leasehold script, for fault-proxy matchers.
pub fn sha(script: &str) -> String {
    redis::Script::new(script).get_hash().to_string()
}

/// Every key of lock `name` except its fencing counter carries a TTL (invariant 1).
pub async fn assert_every_key_has_a_ttl(con: &mut redis::aio::MultiplexedConnection, name: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("leasehold:{{{name}}}*"))
        .query_async(con)
        .await
        .expect("KEYS");
    for key in keys {
        if key.ends_with(":fence") {
            continue;
        }
        let ttl = pttl(con, &key).await;
        assert!(ttl != -1, "{key} has no TTL");
    }
}

/// Number of waiters queued at the server for lock `name`.
pub async fn queued_waiters(con: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
    redis::cmd("ZCARD")
        .arg(format!("leasehold:{{{name}}}:waiters"))
        .query_async(con)
        .await
        .expect("ZCARD")
}

/// Wait (polling, up to 5 s) until exactly `n` waiters are queued at the server for `name`.
pub async fn wait_for_queue(con: &redis::aio::MultiplexedConnection, name: &str, n: u64) {
    poll_until(
        Duration::from_secs(5),
        &format!("{n} queued waiters"),
        || {
            let mut con = con.clone();
            let name = name.to_string();
            async move { queued_waiters(&mut con, &name).await == n }
        },
    )
    .await;
}

/// Wait (polling, with a deadline) until `key` is gone.
pub async fn wait_until_absent(con: &redis::aio::MultiplexedConnection, key: &str, what: &str) {
    poll_until(Duration::from_secs(5), what, || {
        let mut con = con.clone();
        let key = key.to_string();
        async move { !exists(&mut con, &key).await }
    })
    .await;
}

/// Take lock `name` without waiting and release it; panics unless both succeed.
pub async fn take_and_release(c: &Client, name: &str) {
    let guard = c.lock(name).unwrap().try_acquire().await.unwrap();
    assert!(guard.release().await.unwrap().is_released());
}

/// Take lock `name` (waiting) and release it; panics unless both succeed.
pub async fn acquire_and_release(c: &Client, name: &str) {
    let guard = c.lock(name).unwrap().acquire().await.unwrap();
    assert!(guard.release().await.unwrap().is_released());
}

/// The number of waiters queued at the server for semaphore `name`.
pub async fn sem_waiters(con: &mut redis::aio::MultiplexedConnection, name: &str) -> usize {
    redis::cmd("ZCARD")
        .arg(format!("leasehold:{{{name}}}:sem:waiters"))
        .query_async(con)
        .await
        .unwrap()
}

/// Wait until semaphore `name` has `n` waiters queued at the server.
pub async fn until_sem_waiters(con: &redis::aio::MultiplexedConnection, name: &str, n: usize) {
    poll_until(Duration::from_secs(5), "the waiter to queue", || {
        let mut con = con.clone();
        async move { sem_waiters(&mut con, name).await == n }
    })
    .await;
}

/// Run this test binary again as a child process that runs only `test`, with `env` set to
/// `url` (the child test does its work only then); wait for the line it prints that
/// contains `prefix` followed by a number, and return the child and that number.
pub fn child_test(test: &str, env: &str, url: &str, prefix: &str) -> (std::process::Child, u64) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        // The harness prints the test's name on the same line.
        if let Some((_, n)) = line.unwrap().split_once(prefix) {
            return (child, n.trim().parse().unwrap());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the child test {test} printed no {prefix:?} line");
}
