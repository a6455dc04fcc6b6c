//! Unknown outcomes and cancellation, through the fault proxy (seeds 000 and 004).

mod common;

use std::time::Duration;

use common::{client, exists, hget, poll_until, pttl, sha};
use leasehold::scripts::ACQUIRE_LUA;
use leasehold::{ErrorKind, ReleaseOutcome};
use leasehold_testkit::{FaultProxy, Match, RedisServer, Rule, RuleBuilder};
use rand::Rng;

fn acquire_script() -> Match {
    Match::command("EVALSHA").and(Match::arg_contains(sha(ACQUIRE_LUA)))
}

/// Load the scripts through `client` so later calls are plain EVALSHA.
async fn warm_up(c: &leasehold::Client) {
    common::acquire_and_release(c, "warm-up").await;
}

/// Apply `fault` to the reply of the first acquire command on lock `name`: the caller must
/// still end up holding the lock, with hold count 1, and one release must free it.
async fn assert_granted_once_despite(name: &str, fault: fn(RuleBuilder) -> Rule) {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let rule = proxy.add_rule(fault(Rule::reply_to(acquire_script()).first(1)));
    let lock = c.lock(name).unwrap();
    let guard = lock
        .acquire()
        .await
        .expect("the caller must end up holding the lock");
    assert_eq!(rule.hits(), 1, "the fault hit the first acquire");
    assert_eq!(guard.hold_count(), 1);
    assert_eq!(
        hget(&mut con, lock.redis_key(), "count").await.as_deref(),
        Some("1"),
        "the retry was not counted twice"
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(
        !exists(&mut con, lock.redis_key()).await,
        "one release frees it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_reply_to_acquire_still_grants_the_lock_once() {
    // Seed 004: the first SET NX succeeded, its reply was lost, the retry saw the key and
    // reported failure. Here the retry carries the same request id and gets the grant.
    assert_granted_once_despite("seed004-drop", RuleBuilder::drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_reply_to_acquire_still_grants_the_lock_once() {
    // Longer than the 250 ms response timeout: the client gives up on that reply.
    assert_granted_once_despite("seed004-late", |r| r.delay(Duration::from_millis(700))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_after_acquire_was_delivered_still_grants_the_lock_once() {
    assert_granted_once_despite("seed004-reset", RuleBuilder::reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_acquire_is_ambiguous_and_its_grant_is_released() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let rule = proxy.add_rule(Rule::reply_to(acquire_script()).first(1_000).drop());
    let lock = c
        .lock("seed004-ambiguous")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .auto_renew(false);
    let started = std::time::Instant::now();
    let err = lock
        .acquire_timeout(Duration::from_millis(600))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ambiguous, "{err}");
    assert!(err.is_ambiguous() && err.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        rule.hits() >= 2,
        "the same request was retried ({} sends)",
        rule.hits()
    );
    // The grant did happen at the server (its fencing counter was written); the
    // background release must remove it.
    let fence: Option<u64> = redis::cmd("GET")
        .arg(lock.fence_key())
        .query_async(&mut con.clone())
        .await
        .unwrap();
    assert!(fence.is_some(), "the acquire reached Redis");
    let key = lock.redis_key().to_string();
    common::wait_until_absent(&con, &key, "the possible grant to be released").await;
    drop(rule);
    let g = lock.try_acquire().await.unwrap();
    assert_eq!(g.hold_count(), 1);
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_acquires_under_latency_never_leave_a_key_without_ttl_or_unreleased() {
    // Seed 000: SETNX then EXPIRE, the task killed in between, the key never expired.
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let _latency = proxy.add_rule(Rule::reply_to(Match::any()).delay(Duration::from_millis(3)));
    let lock = c
        .lock("seed000")
        .unwrap()
        .ttl(Duration::from_secs(20))
        .auto_renew(false);
    let key = lock.redis_key().to_string();

    // A watcher samples the key's PTTL continuously.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let mut con = server.async_connection().await;
        let key = key.clone();
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && samples < 200_000 {
                assert_ne!(pttl(&mut con, &key).await, -1, "a lock key without TTL");
                samples += 1;
            }
            samples
        })
    };

    let mut cancelled = 0;
    let mut granted = 0;
    for i in 0..150u32 {
        let cut = Duration::from_micros(rand::rng().random_range(0..9_000));
        match tokio::time::timeout(cut, lock.acquire()).await {
            Err(_) => cancelled += 1,
            Ok(Ok(guard)) => {
                granted += 1;
                // Cancel the release half-way too, on odd iterations.
                if i % 2 == 1 {
                    let _ = tokio::time::timeout(cut / 2, guard.release()).await;
                } else {
                    drop(guard);
                }
            }
            Ok(Err(e)) => panic!("iteration {i}: {e}"),
        }
        assert_ne!(pttl(&mut con, &key).await, -1, "iteration {i}");
        common::assert_every_key_has_a_ttl(&mut con, "seed000").await;
        poll_until(
            Duration::from_secs(5),
            "background releases to finish",
            || {
                let n = c.pending_releases();
                async move { n == 0 }
            },
        )
        .await;
        // Every grant, including those of cancelled acquires, has been released: the
        // key is gone long before its 20 s TTL.
        assert!(
            !exists(&mut con, &key).await,
            "iteration {i}: a grant outlived its acquire (cut {cut:?})"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = watcher.await.unwrap();
    assert!(
        cancelled > 10,
        "the test must cancel acquires mid-flight ({cancelled})"
    );
    assert!(granted > 10, "and let some finish ({granted})");
    assert!(samples > 100, "the watcher ran ({samples} samples)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_acquire_future_after_the_grant_releases_it() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    // The command reaches Redis (which grants) but its reply is held back; the caller
    // gives up first.
    let _slow = proxy.add_rule(
        Rule::reply_to(acquire_script())
            .first(1)
            .delay(Duration::from_millis(200)),
    );
    let lock = c
        .lock("dropped-future")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .auto_renew(false);
    let key = lock.redis_key().to_string();
    let res = tokio::time::timeout(Duration::from_millis(50), lock.acquire()).await;
    assert!(res.is_err(), "the acquire was cancelled");
    // The server did grant: the lock's fencing counter was written.
    let fence: Option<u64> = redis::cmd("GET")
        .arg(lock.fence_key())
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(fence.is_some(), "the acquire reached Redis and was granted");
    c.shutdown().await;
    assert!(
        !exists(&mut con, &key).await,
        "the cancelled acquire's grant was released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_times_out_as_unknown_and_recovers_on_a_new_one() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let lock = c.lock("stalled").unwrap();
    let stall = proxy.stall();
    let err = lock.try_acquire().await.unwrap_err();
    // The command went out before the stall swallowed it: only "ambiguous" is honest.
    assert!(err.is_ambiguous(), "{err}");
    drop(stall);
    // The stalled commands reach Redis only now, possibly after the release: the
    // background release re-checks until they have been dealt with.
    poll_until(
        Duration::from_secs(10),
        "background releases to finish",
        || {
            let n = c.pending_releases();
            async move { n == 0 }
        },
    )
    .await;
    assert!(!exists(&mut con.clone(), "leasehold:{stalled}").await);
    let g = lock.try_acquire().await.unwrap();
    assert_eq!(g.hold_count(), 1);
    g.release().await.unwrap();
}

/// Wait until the hold on the first acquire command has certainly passed.
async fn past_the_hold(hold: Duration) {
    tokio::time::sleep(hold + Duration::from_millis(300)).await; // the scenario's own clock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_arriving_late_on_an_abandoned_connection_cannot_grant_after_release() {
    // The first try is still in the network when the client gives up on it, retries on a
    // new connection, gets the lock and releases it. The late try must not grant again.
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let hold = Duration::from_millis(800);
    let rule = proxy.add_rule(Rule::command_to(acquire_script()).first(1).delay(hold));
    let lock = c
        .lock("late-acquire")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .auto_renew(false);
    let guard = lock.acquire().await.unwrap();
    assert_eq!(rule.hits(), 1);
    assert_eq!(guard.hold_count(), 1);
    assert!(guard.release().await.unwrap().is_released());
    past_the_hold(hold).await;
    let mut con = con.clone();
    assert!(
        !exists(&mut con, lock.redis_key()).await,
        "the late acquire granted a lock nobody holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_arriving_late_cannot_grant_after_its_caller_timed_out() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let holder = client(&server.url());
    let waiter = client(&proxy.url());
    warm_up(&waiter).await;
    let held = holder.lock("late-waiter").unwrap().acquire().await.unwrap();
    let hold = Duration::from_millis(900);
    let _rule = proxy.add_rule(Rule::command_to(acquire_script()).first(1).delay(hold));
    let err = waiter
        .lock("late-waiter")
        .unwrap()
        .acquire_timeout(Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // The lock is free before the late try would arrive.
    assert!(held.release().await.unwrap().is_released());
    past_the_hold(hold).await;
    assert!(
        !exists(&mut con, "leasehold:{late-waiter}").await,
        "the late acquire granted the lock to a caller that was told it timed out"
    );
    waiter.shutdown().await;
    common::assert_every_key_has_a_ttl(&mut con, "late-waiter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_client_kill_still_resolves_unknown_outcomes() {
    // Fencing off abandoned connections needs CLIENT KILL; without it leasehold still
    // resolves the outcome by retrying the same request (and says so in a warning).
    let server = RedisServer::builder().acl_user("limited", "pw").start();
    let mut admin = server.async_connection().await;
    // Redis 7 can deny one subcommand; 6.2 only the whole command.
    let denied: redis::RedisResult<()> = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("limited")
        .arg("-client|kill")
        .query_async(&mut admin)
        .await;
    if denied.is_err() {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("limited")
            .arg("-client")
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let c = client(&proxy.url_with_auth(Some("limited"), "pw"));
    warm_up(&c).await;
    let _rule = proxy.add_rule(Rule::reply_to(acquire_script()).first(1).drop());
    let lock = c.lock("no-kill").unwrap();
    let guard = lock
        .acquire()
        .await
        .expect("granted despite the lost reply");
    assert_eq!(guard.hold_count(), 1);
    assert!(guard.release().await.unwrap().is_released());
    assert!(!exists(&mut admin, lock.redis_key()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_never_hands_another_requests_reply_to_an_acquire() {
    // Two acquires share one pipelined connection; the first one's reply is lost, so the
    // second one's reply is the next to arrive. Every script reply carries the tag of its
    // request, so it is never taken for the first one's (which would give that holder the
    // other lock's fencing token).
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let rule = proxy.add_rule(
        Rule::reply_to(acquire_script().and(Match::arg_contains("{tagged-x}")))
            .first(1)
            .drop(),
    );
    let (lx, ly) = (c.lock("tagged-x").unwrap(), c.lock("tagged-y").unwrap());
    let (gx, gy) = tokio::join!(lx.acquire(), ly.acquire());
    let (gx, gy) = (gx.unwrap(), gy.unwrap());
    assert_eq!(rule.hits(), 1, "the first acquire's reply was dropped");
    let token = |key: &'static str| {
        let mut con = con.clone();
        async move {
            hget(&mut con, key, "token")
                .await
                .unwrap()
                .parse::<u64>()
                .unwrap()
        }
    };
    assert_eq!(gx.fencing_token(), token("leasehold:{tagged-x}").await);
    assert_eq!(gy.fencing_token(), token("leasehold:{tagged-y}").await);
    assert_eq!(gx.hold_count(), 1);
    assert!(gx.release().await.unwrap().is_released());
    assert!(gy.release().await.unwrap().is_released());
    assert!(!exists(&mut con, "leasehold:{tagged-x}").await);
}

fn script(lua: &str) -> Match {
    Match::command("EVALSHA").and(Match::arg_contains(sha(lua)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_first_reply_is_late_is_re_run_and_reported_released() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let lock = c.lock("unknown/release-late-once").unwrap();
    let guard = lock.acquire().await.unwrap();
    let late = proxy.add_rule(
        Rule::reply_to(script(leasehold::scripts::RELEASE_LUA))
            .first(1)
            .delay(Duration::from_millis(700)),
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(late.hits(), 1);
    assert!(!exists(&mut con, lock.redis_key()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_never_gets_a_reply_is_ambiguous_not_a_connection_error() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let lock = c.lock("unknown/release-never").unwrap();
    let guard = lock.acquire().await.unwrap();
    // Every reply to a release comes after the client stopped waiting (2 × 250 ms).
    let late = proxy.add_rule(
        Rule::reply_to(script(leasehold::scripts::RELEASE_LUA))
            .first(1_000)
            .delay(Duration::from_secs(2)),
    );
    let err = guard.release().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ambiguous, "{err}");
    assert!(err.to_string().contains("may have been applied"), "{err}");
    assert!(late.hits() >= 1);
    // It was applied: the lock is gone once the delayed command ran.
    common::wait_until_absent(&con, lock.redis_key(), "the released lock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extend_that_never_gets_a_reply_is_ambiguous_and_keeps_the_older_deadline() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let lock = c
        .lock("unknown/extend-never")
        .unwrap()
        .ttl(Duration::from_secs(10))
        .auto_renew(false);
    let guard = lock.acquire().await.unwrap();
    // Loads the extend script, so the faulty calls below are plain EVALSHA that run.
    guard.extend(Duration::from_secs(10)).await.unwrap();
    let before = guard.valid_until();
    let late = proxy.add_rule(
        Rule::reply_to(script(leasehold::scripts::EXTEND.plain))
            .first(1_000)
            .delay(Duration::from_secs(2)),
    );
    let err = guard.extend(Duration::from_secs(60)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Ambiguous, "{err}");
    assert!(late.hits() >= 1);
    assert_eq!(guard.valid_until(), before, "the deadline is the older one");
    // The extend was applied at the server once its delayed command ran.
    poll_until(Duration::from_secs(5), "the applied extend", || {
        let mut con = con.clone();
        let key = lock.redis_key().to_string();
        async move { pttl(&mut con, &key).await > 30_000 }
    })
    .await;
    drop(late);
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(!exists(&mut con, lock.redis_key()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_after_an_ambiguous_acquire_returns_within_its_documented_bound() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let c = client(&proxy.url());
    warm_up(&c).await;
    // Every acquire and release reply is lost: the possible grant (30 s lease) cannot be
    // confirmed released, and its background release would retry for the whole lease.
    let _acquires = proxy.add_rule(Rule::reply_to(acquire_script()).first(1_000).drop());
    let _releases = proxy.add_rule(
        Rule::reply_to(script(leasehold::scripts::RELEASE_LUA))
            .first(1_000)
            .drop(),
    );
    let lock = c
        .lock("unknown/shutdown")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .auto_renew(false);
    let err = lock
        .acquire_timeout(Duration::from_millis(600))
        .await
        .unwrap_err();
    assert!(err.is_ambiguous(), "{err}");
    assert!(
        c.pending_releases() > 0,
        "its grant is released in the background"
    );
    let bound = c.shutdown_bound();
    assert_eq!(bound, Duration::from_millis(1_500), "2 × (500 ms + 250 ms)");
    let started = std::time::Instant::now();
    c.shutdown().await;
    let took = started.elapsed();
    assert!(
        took <= bound + Duration::from_millis(200),
        "shutdown took {took:?}, more than its bound {bound:?}"
    );
    assert!(c
        .lock("after")
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err()
        .to_string()
        .contains("shut down"));
}
