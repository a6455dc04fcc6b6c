//! Handoff granted by the server: a release makes the oldest waiter the holder, and the
//! waiter holds at once (no acquire try after the release), on a short lease the renewer
//! confirms. A grant nobody confirms lapses after the claim window and goes to the next
//! waiter; a waiter that gives up ends a grant it never took.

mod common;

use std::time::{Duration, Instant};

use common::{command_calls, hget, pttl, reset_stats, steady, wait_for_queue};
use leasehold::scripts;
use leasehold_testkit::RedisServer;

/// Run one command given as words (setups of raw script tests).
fn redis_do(con: &mut redis::Connection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query(con).unwrap();
}

/// A waiter of a process that died while queued, first in line: its place (arrival 1 in
/// `queue`), a place expiry far ahead in `expiries`, and its `details` in `info`.
async fn ghost_waiter(
    con: &mut redis::aio::MultiplexedConnection,
    (queue, expiries, info): (&str, &str, &str),
    details: &str,
) {
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(queue)
        .arg(1)
        .arg("ghost")
        .cmd("ZADD")
        .arg(expiries)
        .arg(99_999_999_999_999u64)
        .arg("ghost")
        .cmd("HSET")
        .arg(info)
        .arg("ghost")
        .arg(details)
        .query_async(con)
        .await
        .unwrap();
}

/// Wait until the one waiter in the details hash `info` has left the details of its second
/// try: the try it sends once subscribed (the first one queued it before it subscribed).
/// From then on it sends nothing until it is woken.
async fn second_try_done(con: &redis::aio::MultiplexedConnection, info: &str) {
    common::poll_until(
        Duration::from_secs(5),
        "the waiter's try once subscribed",
        || {
            let (mut con, info) = (con.clone(), info.to_string());
            async move {
                let details: Vec<String> = redis::cmd("HVALS")
                    .arg(&info)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                details.len() == 1 && details[0].starts_with("2:")
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_made_the_holder_by_a_release_holds_without_another_acquire_try() {
    let server = RedisServer::start();
    let (a, b) = (steady(&server.url()), steady(&server.url()));
    let mut con = server.async_connection().await;
    let held = a
        .lock("handed")
        .unwrap()
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .unwrap();
    let lock = b
        .lock("handed")
        .unwrap()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(10));
    let waiter = tokio::spawn(async move { lock.acquire().await });
    wait_for_queue(&con, "handed", 1).await;
    second_try_done(&con, "leasehold:{handed}:waiters:info").await;
    // The waiter's details are at the server; from here on, count its script calls.
    reset_stats(&mut con).await;
    assert!(held.release().await.unwrap().is_released());
    let guard = waiter.await.unwrap().expect("the waiter holds the lock");
    // The renewer confirms the short grant at once: the lock then lives the full TTL.
    common::poll_until(Duration::from_secs(5), "the grant confirmed", || {
        let mut con = con.clone();
        async move { pttl(&mut con, "leasehold:{handed}").await > 1_000 }
    })
    .await;
    let token = hget(&mut con, "leasehold:{handed}", "token").await;
    assert_eq!(token, Some(guard.fencing_token().to_string()));
    // The release and the confirming renewal: no acquire try after the release.
    // (A first call of a script on a connection fails with NOSCRIPT, then loads it: only
    // the calls that ran count.)
    assert_eq!(
        common::command_runs(&mut con, "evalsha").await
            + common::command_runs(&mut con, "eval").await,
        2,
        "script calls after the release"
    );
    // HMGET is the acquire script's first read (the release's too; renewals use HEXISTS).
    assert_eq!(command_calls(&mut con, "hmget").await, 1);
    assert!(!guard.is_lost());
    assert!(guard.release().await.unwrap().is_released());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_to_a_waiter_that_never_confirms_goes_to_the_next_after_the_claim_window() {
    let server = RedisServer::start();
    let (a, b) = (steady(&server.url()), steady(&server.url()));
    let mut con = server.async_connection().await;
    let held = a
        .lock("ghosted")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    // A waiter of a process that died while queued: its place and details, first in line.
    ghost_waiter(
        &mut con,
        (
            "leasehold:{ghosted}:waiters",
            "leasehold:{ghosted}:waiters:exp",
            "leasehold:{ghosted}:waiters:info",
        ),
        "1\n30000\nghost-owner\n{}",
    )
    .await;
    let lock = b
        .lock("ghosted")
        .unwrap()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(5));
    let waiter = tokio::spawn(async move { lock.acquire().await });
    wait_for_queue(&con, "ghosted", 2).await;
    let released_at = Instant::now();
    assert!(held.release().await.unwrap().is_released());
    // The ghost got the lock, on a lease of the claim window only.
    let owner = hget(&mut con, "leasehold:{ghosted}", "owner").await;
    assert_eq!(owner.as_deref(), Some("ghost-owner"));
    let ghost_token: u64 = hget(&mut con, "leasehold:{ghosted}", "token")
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(pttl(&mut con, "leasehold:{ghosted}").await <= scripts::CLAIM_MS as i64);
    // The waiter named next takes it once the window is over (its own fallback timer
    // would be the old holder's 30 s lease; its wait ends at 5 s).
    let guard = waiter
        .await
        .unwrap()
        .expect("the next waiter holds the lock");
    let waited = released_at.elapsed();
    assert!(
        waited >= Duration::from_millis(scripts::CLAIM_MS - 20),
        "taken before the claim window ended: {waited:?}"
    );
    assert!(guard.fencing_token() > ghost_token);
    assert!(guard.release().await.unwrap().is_released());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_leaves_ends_a_grant_it_never_took_and_the_lock_goes_on() {
    let server = RedisServer::start();
    let mut con = server.connection();
    // Granted to w (never confirmed), x waits behind it with its details.
    redis_do(&mut con, &["SET", "t:{n}:fence", "5"]);
    redis_do(
        &mut con,
        &[
            "HSET", "t:{n}", "owner", "ow", "token", "5", "count", "1", "r:w", "1", "meta", "{}",
        ],
    );
    redis_do(&mut con, &["PEXPIRE", "t:{n}", "250"]);
    redis_do(&mut con, &["ZADD", "t:{n}:waiters", "2", "x"]);
    redis_do(
        &mut con,
        &["ZADD", "t:{n}:waiters:exp", "99999999999999", "x"],
    );
    redis_do(
        &mut con,
        &[
            "HSET",
            "t:{n}:waiters:info",
            "x",
            "3\n10000\nox\n{\"label\":\"x\"}",
        ],
    );
    let mut sub = server.connection();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("t:{n}:released").unwrap();
    let left: i64 = redis::cmd("EVAL")
        .arg(scripts::LEAVE.plain)
        .arg(6)
        .arg("t:{n}")
        .arg("t:{n}:waiters")
        .arg("t:{n}:waiters:exp")
        .arg("t:{n}:next")
        .arg("t:{n}:fence")
        .arg("t:{n}:waiters:info")
        .arg("w")
        .arg("100")
        .arg("250")
        .arg("7")
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 2, "leave reports the grant it ended");
    let h: Vec<Option<String>> = redis::cmd("HMGET")
        .arg("t:{n}")
        .arg("owner")
        .arg("token")
        .arg("r:x")
        .arg("r:w")
        .arg("meta")
        .query(&mut con)
        .unwrap();
    assert_eq!(h[0].as_deref(), Some("ox"));
    let token: u64 = h[1].as_deref().unwrap().parse().unwrap();
    assert!(token > 5, "a fresh token: {token}");
    assert_eq!(h[2].as_deref(), Some("1"));
    assert_eq!(h[3], None);
    assert_eq!(h[4].as_deref(), Some("{\"label\":\"x\"}"));
    let msg: String = pubsub.get_message().unwrap().get_payload().unwrap();
    assert_eq!(msg, format!("x {token} 3"));
    let info: i64 = redis::cmd("EXISTS")
        .arg("t:{n}:waiters:info")
        .query(&mut con)
        .unwrap();
    assert_eq!(info, 0, "the grantee's details are gone");
}

/// The score (expiry, ms) of `member` in the zset `key`, if it is there.
async fn zscore(
    con: &mut redis::aio::MultiplexedConnection,
    key: &str,
    member: &str,
) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query_async(con)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_permit_goes_to_the_oldest_waiter_which_holds_it_without_another_try() {
    let server = RedisServer::start();
    let (a, b) = (steady(&server.url()), steady(&server.url()));
    let mut con = server.async_connection().await;
    let held = a
        .semaphore("pool", 1)
        .unwrap()
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .unwrap();
    let sem = b
        .semaphore("pool", 1)
        .unwrap()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(10));
    let waiter = tokio::spawn(async move { sem.acquire().await });
    common::poll_until(Duration::from_secs(5), "the waiter's details", || {
        let mut con = con.clone();
        async move { common::zcard(&mut con, "leasehold:{pool}:sem:waiters").await == 1 }
    })
    .await;
    second_try_done(&con, "leasehold:{pool}:sem:waiters:info").await;
    let req: Vec<String> = redis::cmd("HKEYS")
        .arg("leasehold:{pool}:sem:waiters:info")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(req.len(), 1, "the waiter left its details");
    reset_stats(&mut con).await;
    assert!(held.release().await.unwrap().is_released());
    let permit = waiter.await.unwrap().expect("the waiter holds the permit");
    let token = hget(&mut con, "leasehold:{pool}:sem:tokens", &req[0]).await;
    assert_eq!(token, Some(permit.fencing_token().to_string()));
    // The renewer confirms the short grant at once: the permit then lasts the full TTL.
    common::poll_until(Duration::from_secs(5), "the grant confirmed", || {
        let mut con = con.clone();
        let req = req[0].clone();
        async move {
            let now: Vec<u64> = redis::cmd("TIME").query_async(&mut con).await.unwrap();
            let exp = zscore(&mut con, "leasehold:{pool}:sem", &req).await;
            // Server time in ms, microseconds included: the short grant (the claim
            // window) never passes for the renewed lease.
            let now_ms = now[0] * 1000 + now[1] / 1000;
            exp.is_some_and(|e| e > now_ms as f64 + 1_000.0)
        }
    })
    .await;
    // The release and the confirming renewal: no acquire try after the release.
    assert_eq!(
        common::command_runs(&mut con, "evalsha").await
            + common::command_runs(&mut con, "eval").await,
        2,
        "script calls after the release"
    );
    // And the second is the renewal, not a confirming try: ZCOUNT (the live permits) is
    // the release's grant only; an acquire try would count them too (renewals don't).
    assert_eq!(
        command_calls(&mut con, "zcount").await,
        1,
        "a try after the release"
    );
    assert!(!permit.is_lost());
    assert!(permit.release().await.unwrap().is_released());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_granted_to_a_waiter_that_never_confirms_goes_to_the_next_after_the_claim_window()
{
    let server = RedisServer::start();
    let (a, b) = (steady(&server.url()), steady(&server.url()));
    let mut con = server.async_connection().await;
    let held = a
        .semaphore("ghosted", 1)
        .unwrap()
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    // A waiter of a process that died while queued: its place and details, first in line.
    ghost_waiter(
        &mut con,
        (
            "leasehold:{ghosted}:sem:waiters",
            "leasehold:{ghosted}:sem:waiters:exp",
            "leasehold:{ghosted}:sem:waiters:info",
        ),
        "1\n30000\n1\n",
    )
    .await;
    let sem = b
        .semaphore("ghosted", 1)
        .unwrap()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(5));
    let waiter = tokio::spawn(async move { sem.acquire().await });
    common::poll_until(Duration::from_secs(5), "the second waiter", || {
        let mut con = con.clone();
        async move { common::zcard(&mut con, "leasehold:{ghosted}:sem:waiters").await == 2 }
    })
    .await;
    let released_at = Instant::now();
    assert!(held.release().await.unwrap().is_released());
    // The ghost got the permit, on a lease of the claim window only.
    let ghost_token: u64 = hget(&mut con, "leasehold:{ghosted}:sem:tokens", "ghost")
        .await
        .expect("the ghost holds the permit")
        .parse()
        .unwrap();
    let now: Vec<u64> = redis::cmd("TIME").query_async(&mut con).await.unwrap();
    let exp = zscore(&mut con, "leasehold:{ghosted}:sem", "ghost")
        .await
        .unwrap();
    assert!(exp <= (now[0] * 1000 + now[1] / 1000 + scripts::CLAIM_MS) as f64);
    let permit = waiter
        .await
        .unwrap()
        .expect("the next waiter holds the permit");
    let waited = released_at.elapsed();
    assert!(
        waited >= Duration::from_millis(scripts::CLAIM_MS - 20),
        "taken before the claim window ended: {waited:?}"
    );
    assert!(permit.fencing_token() > ghost_token);
    assert!(permit.release().await.unwrap().is_released());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_waiter_that_leaves_ends_a_permit_it_never_took_and_it_goes_on() {
    let server = RedisServer::start();
    let mut con = server.connection();
    // One permit, granted to w (never confirmed); x waits behind it with its details.
    redis_do(&mut con, &["SET", "t:{n}:sem:fence", "5"]);
    redis_do(&mut con, &["ZADD", "t:{n}:sem", "99999999999999", "w"]);
    redis_do(&mut con, &["HSET", "t:{n}:sem:tokens", "w", "5"]);
    redis_do(&mut con, &["ZADD", "t:{n}:sem:waiters", "2", "x"]);
    redis_do(
        &mut con,
        &["ZADD", "t:{n}:sem:waiters:exp", "99999999999999", "x"],
    );
    redis_do(
        &mut con,
        &["HSET", "t:{n}:sem:waiters:info", "x", "3\n10000\n1\n"],
    );
    let mut sub = server.connection();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("t:{n}:sem:released").unwrap();
    let left: i64 = redis::cmd("EVAL")
        .arg(scripts::SEM_LEAVE.plain)
        .arg(6)
        .arg("t:{n}:sem")
        .arg("t:{n}:sem:waiters")
        .arg("t:{n}:sem:waiters:exp")
        .arg("t:{n}:sem:tokens")
        .arg("t:{n}:sem:fence")
        .arg("t:{n}:sem:waiters:info")
        .arg("w")
        .arg("t:{n}:sem:released")
        .arg("1")
        .arg("250")
        .arg("7")
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 2, "leave reports the permit it ended");
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("t:{n}:sem")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(members, ["x"], "the permit went on to x");
    let token: String = redis::cmd("HGET")
        .arg("t:{n}:sem:tokens")
        .arg("x")
        .query(&mut con)
        .unwrap();
    assert!(token.parse::<u64>().unwrap() > 5);
    let msg: String = pubsub.get_message().unwrap().get_payload().unwrap();
    assert_eq!(msg, format!("x {token} 3"));
    let waiting: u64 = redis::cmd("ZCARD")
        .arg("t:{n}:sem:waiters")
        .query(&mut con)
        .unwrap();
    assert_eq!(waiting, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirming_try_of_a_granted_permit_makes_it_last_its_full_ttl() {
    // The caller counts its lease from this try's send, so the script must make the
    // permit (granted by a release on the claim window only) last the ttl from now.
    let server = RedisServer::start();
    let mut con = server.connection();
    let now: Vec<u64> = redis::cmd("TIME").query(&mut con).unwrap();
    let now_ms = now[0] * 1000 + now[1] / 1000;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg("t:{n}:sem")
        .arg(now_ms + scripts::CLAIM_MS)
        .arg("w")
        .cmd("HSET")
        .arg("t:{n}:sem:tokens")
        .arg("w")
        .arg("9")
        .query(&mut con)
        .unwrap();
    let reply: Vec<i64> = redis::cmd("EVAL")
        .arg(scripts::SEM_ACQUIRE.plain)
        .arg(6)
        .arg("t:{n}:sem")
        .arg("t:{n}:sem:tokens")
        .arg("t:{n}:sem:fence")
        .arg("t:{n}:sem:waiters")
        .arg("t:{n}:sem:waiters:exp")
        .arg("t:{n}:sem:waiters:info")
        .arg(&["w", "10000", "1", "5000", "1", "4", "7"])
        .query(&mut con)
        .unwrap();
    assert_eq!(
        reply,
        [1, 9, 1, 10_000, 7],
        "the same grant, on the full ttl"
    );
    let exp: f64 = redis::cmd("ZSCORE")
        .arg("t:{n}:sem")
        .arg("w")
        .query(&mut con)
        .unwrap();
    assert!(exp >= (now_ms + 10_000) as f64, "{exp} vs {now_ms}");
    let pttl: i64 = redis::cmd("PTTL").arg("t:{n}:sem").query(&mut con).unwrap();
    assert!(pttl > 9_000, "the set lives as long as its permit: {pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_ends_while_its_leave_gets_no_answer_reports_an_unknown_outcome_not_a_refusal()
{
    // A release may have made the waiter the holder just as its wait ended; only the
    // leave's reply tells. Without it, "not acquired" could be false.
    let server = RedisServer::start();
    let proxy = leasehold_testkit::FaultProxy::start(server.addr())
        .await
        .unwrap();
    let holder = steady(&server.url());
    let waiter = common::client(&proxy.url());
    let con = server.async_connection().await;
    let held = holder.lock("unanswered").unwrap().acquire().await.unwrap();
    let leave = proxy.add_rule(
        leasehold_testkit::Rule::reply_to(leasehold_testkit::Match::command("EVALSHA").and(
            leasehold_testkit::Match::arg_contains(common::sha(scripts::LEAVE.plain)),
        ))
        .first(1)
        .drop(),
    );
    let err = waiter
        .lock("unanswered")
        .unwrap()
        .acquire_timeout(Duration::from_millis(300))
        .await
        .expect_err("the lock stays held");
    assert_eq!(leave.hits(), 1, "the leave was sent and its reply dropped");
    assert!(err.is_ambiguous(), "{err}");
    assert!(!err.is_timeout(), "{err}");
    // The place is given up in the background once the leave can be answered.
    common::poll_until(Duration::from_secs(5), "the place given up", || {
        let mut con = con.clone();
        async move { common::queued_waiters(&mut con, "unanswered").await == 0 }
    })
    .await;
    assert!(held.release().await.unwrap().is_released());
}

/// `b` waits to write `name` while `holds` (a write or a read guard of `a`) is held; once
/// `b` is registered with its details, `release` ends that hold. `b` must then hold the
/// write lock with no acquire try after the release: the release and the confirming
/// renewal are the only scripts that run (no ZREMRANGEBYSCORE, which every write try runs).
async fn waiting_writer_is_made_the_writer_by(
    server: &RedisServer,
    b: &leasehold::Client,
    name: &str,
    release: impl std::future::Future<Output = bool>,
) {
    let mut con = server.async_connection().await;
    let rw = b
        .rwlock(name)
        .unwrap()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(10));
    let waiter = tokio::spawn(async move { rw.write().await });
    let info = format!("leasehold:{{{name}}}:rw:writers:info");
    second_try_done(&con, &info).await;
    reset_stats(&mut con).await;
    assert!(release.await, "the hold ahead was released");
    let guard = waiter
        .await
        .unwrap()
        .expect("the waiting writer holds the lock");
    let writer = format!("leasehold:{{{name}}}:rw");
    common::poll_until(Duration::from_secs(5), "the grant confirmed", || {
        let (mut con, writer) = (con.clone(), writer.clone());
        async move { pttl(&mut con, &writer).await > 1_000 }
    })
    .await;
    assert_eq!(
        hget(&mut con, &writer, "token").await,
        Some(guard.fencing_token().to_string())
    );
    assert_eq!(
        common::command_runs(&mut con, "evalsha").await
            + common::command_runs(&mut con, "eval").await,
        2,
        "script calls after the release"
    );
    assert_eq!(
        command_calls(&mut con, "zremrangebyscore").await,
        0,
        "a write try after the release"
    );
    assert!(guard.release().await.unwrap().is_released());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_write_lock_goes_to_the_waiting_writer_which_holds_it_without_another_try() {
    let server = RedisServer::start();
    let (a, b) = (steady(&server.url()), steady(&server.url()));
    let held = a.rwlock("rw-w").unwrap().write().await.unwrap();
    waiting_writer_is_made_the_writer_by(&server, &b, "rw-w", async move {
        held.release().await.unwrap().is_released()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_reader_to_leave_makes_the_waiting_writer_the_writer() {
    let server = RedisServer::start();
    let (a, b) = (steady(&server.url()), steady(&server.url()));
    let read = a.rwlock("rw-r").unwrap().read().await.unwrap();
    waiting_writer_is_made_the_writer_by(&server, &b, "rw-r", async move {
        read.release().await.unwrap().is_released()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_that_leaves_ends_a_grant_it_never_took_and_the_lock_goes_on() {
    let server = RedisServer::start();
    let mut con = server.connection();
    // A release made w the writer (never confirmed); x waits behind it with its details.
    redis_do(&mut con, &["SET", "t:{n}:rw:fence", "5"]);
    redis_do(
        &mut con,
        &[
            "HSET", "t:{n}:rw", "owner", "ow", "token", "5", "count", "1", "r:w", "1", "meta", "{}",
        ],
    );
    redis_do(&mut con, &["PEXPIRE", "t:{n}:rw", "250"]);
    redis_do(
        &mut con,
        &["ZADD", "t:{n}:rw:writers", "99999999999999", "x"],
    );
    redis_do(&mut con, &["ZADD", "t:{n}:rw:writers:order", "2", "x"]);
    redis_do(
        &mut con,
        &["HSET", "t:{n}:rw:writers:info", "x", "3\n10000\nox\n{}"],
    );
    let mut sub = server.connection();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("t:{n}:rw:released").unwrap();
    let left: i64 = redis::cmd("EVAL")
        .arg(scripts::RW_LEAVE.plain)
        .arg(6)
        .arg("t:{n}:rw:writers")
        .arg("t:{n}:rw:writers:order")
        .arg("t:{n}:rw:writers:info")
        .arg("t:{n}:rw")
        .arg("t:{n}:rw:readers")
        .arg("t:{n}:rw:fence")
        .arg("w")
        .arg("t:{n}:rw:released")
        .arg("250")
        .arg("7")
        .query(&mut con)
        .unwrap();
    assert_eq!(left, 2, "leave reports the grant it ended");
    let h: Vec<Option<String>> = redis::cmd("HMGET")
        .arg("t:{n}:rw")
        .arg("owner")
        .arg("token")
        .arg("r:x")
        .arg("r:w")
        .query(&mut con)
        .unwrap();
    assert_eq!(h[0].as_deref(), Some("ox"), "x is the writer");
    let token: u64 = h[1].as_deref().unwrap().parse().unwrap();
    assert!(token > 5);
    assert_eq!(h[2].as_deref(), Some("1"));
    assert_eq!(h[3], None, "w's grant ended");
    let msg: String = pubsub.get_message().unwrap().get_payload().unwrap();
    assert_eq!(msg, format!("x {token} 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_looks_again_when_a_writer_grant_nobody_confirms_lapses() {
    let server = RedisServer::start();
    let (a, b) = (steady(&server.url()), steady(&server.url()));
    let mut con = server.async_connection().await;
    let held = a
        .rwlock("rw-ghost")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .write()
        .await
        .unwrap();
    // A writer of a process that died while waiting: first in line, with its details.
    ghost_waiter(
        &mut con,
        (
            "leasehold:{rw-ghost}:rw:writers:order",
            "leasehold:{rw-ghost}:rw:writers",
            "leasehold:{rw-ghost}:rw:writers:info",
        ),
        "1\n30000\nghost-owner\n{}",
    )
    .await;
    reset_stats(&mut con).await;
    let rw = b.rwlock("rw-ghost").unwrap().wait(Duration::from_secs(10));
    let reader = tokio::spawn(async move { rw.read().await });
    // Refused (the writer holds for 30 s), subscribed, refused again: now it sleeps.
    common::poll_until(Duration::from_secs(5), "the reader waiting", || {
        let mut con = con.clone();
        async move {
            command_calls(&mut con, "subscribe").await >= 1
                && common::command_runs(&mut con, "evalsha").await
                    + common::command_runs(&mut con, "eval").await
                    >= 2
        }
    })
    .await;
    let released_at = Instant::now();
    assert!(held.release().await.unwrap().is_released());
    assert_eq!(
        hget(&mut con, "leasehold:{rw-ghost}:rw", "owner")
            .await
            .as_deref(),
        Some("ghost-owner"),
        "the release made the ghost the writer"
    );
    let guard = reader.await.unwrap().expect("the reader gets in");
    let waited = released_at.elapsed();
    assert!(
        waited >= Duration::from_millis(scripts::CLAIM_MS - 20),
        "read before the ghost's grant lapsed: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "the reader slept on a free lock: {waited:?}"
    );
    assert!(guard.release().await.unwrap().is_released());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_last_try_was_long_before_the_release_still_holds_at_once() {
    // The grant message gives the server time from the waiter's try to the grant, so the
    // waiter's lease is not cut short by how long it waited (here over four claim windows).
    let server = RedisServer::start();
    let (a, b) = (steady(&server.url()), steady(&server.url()));
    let mut con = server.async_connection().await;
    let held = a
        .lock("long-wait")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    let lock = b
        .lock("long-wait")
        .unwrap()
        .ttl(Duration::from_secs(10))
        .wait(Duration::from_secs(10));
    let waiter = tokio::spawn(async move { lock.acquire().await });
    wait_for_queue(&con, "long-wait", 1).await;
    // The scenario: the holder keeps the lock a while after the waiter's last try.
    tokio::time::sleep(Duration::from_millis(4 * scripts::CLAIM_MS)).await;
    reset_stats(&mut con).await;
    assert!(held.release().await.unwrap().is_released());
    let guard = waiter.await.unwrap().expect("the waiter holds the lock");
    common::poll_until(Duration::from_secs(5), "the grant confirmed", || {
        let mut con = con.clone();
        async move { pttl(&mut con, "leasehold:{long-wait}").await > 1_000 }
    })
    .await;
    assert_eq!(
        common::command_runs(&mut con, "evalsha").await
            + common::command_runs(&mut con, "eval").await,
        2,
        "the release and the confirming renewal, no acquire try"
    );
    assert_eq!(
        command_calls(&mut con, "hmget").await,
        1,
        "an acquire try ran"
    );
    assert!(guard.release().await.unwrap().is_released());
}
