//! Many contenders on one lock: mutual exclusion, wake-ups instead of polling, fairness
//! within one process.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, sha};
use leasehold::scripts::ACQUIRE_LUA;
use leasehold_testkit::{FaultProxy, Match, RedisServer, Rule};

/// A resource that accepts work only from one holder at a time, with non-decreasing
/// fencing tokens; it counts violations instead of trusting the lock.
#[derive(Default)]
struct FencedResource {
    busy: AtomicBool,
    last_token: AtomicU64,
    overlaps: AtomicU64,
    stale: AtomicU64,
    writes: AtomicU64,
}

impl FencedResource {
    async fn work(&self, token: u64) {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let prev = self.last_token.fetch_max(token, Ordering::SeqCst);
        if token <= prev {
            self.stale.fetch_add(1, Ordering::SeqCst);
        }
        tokio::task::yield_now().await;
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.busy.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_contenders_on_one_name_never_overlap_and_tokens_increase() {
    let server = RedisServer::start();
    let resource = Arc::new(FencedResource::default());
    // 4 clients × 2 tasks: contention both across clients (pub/sub) and within one
    // (local queue).
    let clients: Vec<_> = (0..4).map(|_| client(&server.url())).collect();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let lock = clients[t % 4]
            .lock("contended")
            .unwrap()
            .ttl(Duration::from_secs(10))
            .auto_renew(false)
            .wait(Duration::from_secs(20));
        let resource = resource.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                let guard = lock.acquire().await.unwrap();
                resource.work(guard.fencing_token()).await;
                assert!(guard.release().await.unwrap().is_released());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(resource.writes.load(Ordering::SeqCst), 320);
    assert_eq!(
        resource.overlaps.load(Ordering::SeqCst),
        0,
        "two holders at once"
    );
    assert_eq!(
        resource.stale.load(Ordering::SeqCst),
        0,
        "a token did not increase"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_blocked_by_a_long_hold_is_woken_not_polling() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let holder = client(&server.url());
    let waiter = client(&proxy.url());
    // Count the waiter's acquire attempts as they pass the proxy.
    let counter = proxy.add_rule(
        Rule::reply_to(Match::command("EVALSHA").and(Match::arg_contains(sha(ACQUIRE_LUA)))).pass(),
    );
    let guard = holder
        .lock("long-hold")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .auto_renew(false)
        .acquire()
        .await
        .unwrap();
    let wlock = waiter
        .lock("long-hold")
        .unwrap()
        .wait(Duration::from_secs(20));
    let handle = tokio::spawn(async move {
        let g = wlock.acquire().await.unwrap();
        let at = Instant::now();
        g.release().await.unwrap();
        at
    });
    // The scenario: hold for 1.5 s; a polling waiter would make dozens of attempts.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let released_at = Instant::now();
    guard.release().await.unwrap();
    let granted_at = handle.await.unwrap();
    let attempts = counter.hits();
    assert!(attempts <= 4, "the waiter made {attempts} acquire attempts");
    let handoff = granted_at.saturating_duration_since(released_at);
    assert!(
        handoff < Duration::from_millis(500),
        "woken {handoff:?} after the release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_releasing_task_cannot_barge_ahead_of_waiters_in_its_own_process() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let lock = c.lock("no-barging").unwrap().wait(Duration::from_secs(10));
    let order = Arc::new(Mutex::new(Vec::new()));
    let first = lock.acquire().await.unwrap();
    let waiter = {
        let lock = lock.clone();
        let order = order.clone();
        tokio::spawn(async move {
            let g = lock.acquire().await.unwrap();
            order.lock().unwrap().push("waiter");
            g.release().await.unwrap();
        })
    };
    // Let the waiter reach the queue (it makes at least one attempt and subscribes).
    let key = lock.redis_key().to_string();
    let con = server.async_connection().await;
    common::poll_until(Duration::from_secs(5), "the waiter to subscribe", || {
        let mut con = con.clone();
        let key = key.clone();
        async move {
            let n: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(format!("{key}:released"))
                .query_async(&mut con)
                .await
                .unwrap();
            n.first().is_some_and(|(_, n)| *n > 0)
        }
    })
    .await;
    first.release().await.unwrap();
    let again = lock.acquire().await.unwrap();
    order.lock().unwrap().push("releaser");
    again.release().await.unwrap();
    waiter.await.unwrap();
    assert_eq!(*order.lock().unwrap(), vec!["waiter", "releaser"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_holder_crashed_gets_the_lock_when_the_lease_expires() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    // A crashed holder: a grant written by hand by a client that then vanished.
    let _: () = redis::cmd("HSET")
        .arg("leasehold:{crashed}")
        .arg("owner")
        .arg("gone")
        .arg("token")
        .arg("1")
        .arg("count")
        .arg("1")
        .arg("r:x")
        .arg("1")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: () = redis::cmd("PEXPIRE")
        .arg("leasehold:{crashed}")
        .arg(400)
        .query_async(&mut con)
        .await
        .unwrap();
    let c = client(&server.url());
    let started = Instant::now();
    let g = c
        .lock("crashed")
        .unwrap()
        .acquire_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(
        waited < Duration::from_millis(1_500),
        "woken by the remaining-TTL timer: {waited:?}"
    );
    g.release().await.unwrap();
}

/// Calls of `name` in `INFO commandstats` (0 if never run).
async fn calls(con: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
    let text: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_wait_on_a_busy_lock_reuses_the_lingering_subscription() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let (holder, waiter) = (client(&server.url()), client(&server.url()));
    let hlock = holder.lock("busy").unwrap();
    let wlock = waiter.lock("busy").unwrap().wait(Duration::from_secs(10));
    // The first wait subscribes (and tries again once subscribed).
    let g = hlock.acquire().await.unwrap();
    let first = tokio::spawn({
        let wlock = wlock.clone();
        async move { wlock.acquire().await.unwrap().release().await.unwrap() }
    });
    common::poll_until(Duration::from_secs(5), "the waiter to subscribe", || {
        let mut con = con.clone();
        async move { calls(&mut con, "subscribe").await >= 1 }
    })
    .await;
    g.release().await.unwrap();
    first.await.unwrap();
    // The second wait, soon after: no SUBSCRIBE or UNSUBSCRIBE, and three scripts: the
    // refused try, the holder's release (which grants the waiter the lock) and the
    // waiter's confirmation of that grant (a renewal run in the background, or one more
    // try when too little of the claim window is left).
    let g = hlock.acquire().await.unwrap();
    let (subs, unsubs) = (
        calls(&mut con, "subscribe").await,
        calls(&mut con, "unsubscribe").await,
    );
    let scripts_before = common::command_runs(&mut con, "evalsha").await;
    let second = tokio::spawn({
        let wlock = wlock.clone();
        async move { wlock.acquire().await.unwrap() }
    });
    common::poll_until(Duration::from_secs(5), "the waiter's refused try", || {
        let mut con = con.clone();
        async move { common::command_runs(&mut con, "evalsha").await == scripts_before + 1 }
    })
    .await;
    g.release().await.unwrap();
    let granted = second.await.unwrap();
    // The confirming renewal may still be on its way when `acquire` returns.
    common::poll_until(Duration::from_secs(5), "the grant's confirmation", || {
        let mut con = con.clone();
        async move { common::command_runs(&mut con, "evalsha").await >= scripts_before + 3 }
    })
    .await;
    assert_eq!(
        common::command_runs(&mut con, "evalsha").await,
        scripts_before + 3,
        "the waiter's refused try, the holder's release and the grant's confirmation"
    );
    assert_eq!(calls(&mut con, "subscribe").await, subs);
    assert_eq!(calls(&mut con, "unsubscribe").await, unsubs);
    granted.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_subscription_ends_a_few_seconds_after_the_last_wait() {
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let (holder, waiter) = (client(&server.url()), client(&server.url()));
    let g = holder.lock("quiet").unwrap().acquire().await.unwrap();
    let wlock = waiter.lock("quiet").unwrap().wait(Duration::from_secs(10));
    let waiting = tokio::spawn(async move { wlock.acquire().await.unwrap() });
    let subscribers = |con: &redis::aio::MultiplexedConnection| {
        let mut con = con.clone();
        async move {
            let n: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("leasehold:{quiet}:released")
                .query_async(&mut con)
                .await
                .unwrap();
            n.first().map_or(0, |(_, n)| *n)
        }
    };
    common::poll_until(Duration::from_secs(5), "the waiter to subscribe", || {
        let s = subscribers(&con);
        async move { s.await == 1 }
    })
    .await;
    g.release().await.unwrap();
    waiting.await.unwrap().release().await.unwrap();
    let done = Instant::now();
    // Still subscribed right after the wait (lingering), gone within the linger time.
    assert_eq!(subscribers(&con).await, 1, "the subscription lingers");
    common::poll_until(Duration::from_secs(10), "the subscription to end", || {
        let s = subscribers(&con);
        async move { s.await == 0 }
    })
    .await;
    assert!(
        done.elapsed() >= Duration::from_secs(4),
        "ended after {:?}, before its linger time",
        done.elapsed()
    );
}
