//! Weighted semaphores (`acquire_many(n)`): n permits granted at once and in arrival order
//! (a large request is not passed by small ones), never more than the capacity counted at
//! the server, one lease and token per grant, all n released, renewed and reclaimed
//! together, and lost replies that never cost or duplicate permits.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, poll_until, sha, steady};
use leasehold::scripts::SEM_ACQUIRE;
use leasehold::{ErrorKind, ReleaseOutcome};
use leasehold_testkit::{FaultProxy, Match, RedisServer, Rule};
use rand::Rng;

type Con = redis::aio::MultiplexedConnection;

fn set_key(name: &str) -> String {
    format!("leasehold:{{{name}}}:sem")
}

/// Live members of the permits set: the permits the server counts as held.
async fn counted(con: &mut Con, name: &str) -> u32 {
    let now: (u64, u64) = redis::cmd("TIME").query_async(con).await.unwrap();
    let ms = now.0 * 1000 + now.1 / 1000;
    redis::cmd("ZCOUNT")
        .arg(set_key(name))
        .arg(format!("({ms}"))
        .arg("+inf")
        .query_async(con)
        .await
        .unwrap()
}

/// Sample the server's count of `name` until `stop`; the largest seen.
fn watch_count(
    mut con: Con,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut high = 0;
        let limit = Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::SeqCst) && Instant::now() < limit {
            high = high.max(counted(&mut con, name).await);
            tokio::task::yield_now().await;
        }
        high
    })
}

/// The try number in waiter `req`'s details at the server (0 when it has none).
async fn try_of(con: &mut Con, name: &str, req: &str) -> u32 {
    let d: Option<String> = redis::cmd("HGET")
        .arg(format!("{}:waiters:info", set_key(name)))
        .arg(req)
        .query_async(con)
        .await
        .unwrap();
    d.and_then(|d| d.trim_start_matches('*').split(':').next()?.parse().ok())
        .unwrap_or(0)
}

/// The expiries (ms) of `members` of the permits set; 0 for one that is absent.
async fn expiries(con: &mut Con, name: &str, members: &[String]) -> Vec<u64> {
    let mut out = Vec::new();
    for m in members {
        let e: Option<u64> = redis::cmd("ZSCORE")
            .arg(set_key(name))
            .arg(m)
            .query_async(con)
            .await
            .unwrap();
        out.push(e.unwrap_or(0));
    }
    out
}

async fn queue(con: &mut Con, name: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(format!("{}:waiters", set_key(name)))
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_permit_request_among_one_permit_requests_is_served_in_its_turn() {
    const NAME: &str = "gpus";
    const CAP: u32 = 4;
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let stop = Arc::new(AtomicBool::new(false));
    let high = watch_count(server.async_connection().await, NAME, stop.clone());
    let holder = steady(&server.url());
    let sem = holder.semaphore(NAME, CAP).unwrap();
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(sem.try_acquire().await.unwrap());
    }
    // Waiters, each a process of its own, arriving in this order: 1, 3, 1, 1, 1 permits.
    // The first keeps its permit until told, so the 3-permit request must wait for
    // three free permits while one-permit requests behind it could fit.
    let wants = [1u32, 3, 1, 1, 1];
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut waiters = Vec::new();
    for (i, n) in wants.into_iter().enumerate() {
        let c = steady(&server.url());
        let sem = c.semaphore(NAME, CAP).unwrap();
        let mut done = done_rx.clone();
        waiters.push(tokio::spawn(async move {
            let p = sem
                .acquire_many_timeout(n, Duration::from_secs(20))
                .await
                .unwrap_or_else(|e| panic!("waiter {i} ({n} permits): {e}"));
            assert_eq!(p.permits(), n);
            let token = p.fencing_token();
            if i == 0 {
                done.wait_for(|d| *d).await.unwrap();
            } else {
                tokio::time::sleep(Duration::from_millis(30)).await; // the holder's work
            }
            assert!(p.release().await.unwrap().is_released());
            drop(c);
            (i, token)
        }));
        common::until_sem_waiters(&con, NAME, i + 1).await;
    }
    let mut held = held.into_iter();
    // One permit back: it goes to the first waiter (1 permit).
    assert!(held.next().unwrap().release().await.unwrap().is_released());
    poll_until(Duration::from_secs(5), "the first waiter's grant", || {
        let mut con = con.clone();
        async move { common::sem_waiters(&mut con, NAME).await == wants.len() - 1 }
    })
    .await;
    // Two more back: two permits are free, the 3-permit request at the head still waits,
    // and the one-permit requests behind it refresh their places (each a try) without
    // taking them.
    for _ in 0..2 {
        assert!(held.next().unwrap().release().await.unwrap().is_released());
    }
    let behind = queue(&mut con, NAME).await[1..].to_vec();
    let mut before = Vec::new();
    for req in &behind {
        before.push(try_of(&mut con, NAME, req).await);
    }
    poll_until(
        Duration::from_secs(8),
        "the waiters behind to try again",
        || {
            let (mut con, behind, before) = (con.clone(), behind.clone(), before.clone());
            async move {
                for (req, was) in behind.iter().zip(before) {
                    // A later try, or gone from the queue (it took a permit).
                    let now = try_of(&mut con, NAME, req).await;
                    if now != 0 && now <= was {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    assert_eq!(
        counted(&mut con, NAME).await,
        2,
        "no one took the two free permits"
    );
    // The last one back: three are free, and they go to the 3-permit request.
    assert!(held.next().unwrap().release().await.unwrap().is_released());
    done_tx.send(true).unwrap();
    let mut grants = Vec::new();
    for w in waiters {
        grants.push(w.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    // Tokens rise in grant order: the 3-permit request (waiter 1) comes right after the
    // waiter ahead of it, before any of the one-permit requests behind it.
    grants.sort_by_key(|(_, token)| *token);
    let order: Vec<usize> = grants.iter().map(|(i, _)| *i).collect();
    assert_eq!(&order[..2], &[0, 1], "grant order {order:?}");
    let high = high.await.unwrap();
    assert!(high <= CAP, "the server counted {high} permits of {CAP}");
    assert_eq!(counted(&mut con, NAME).await, 0);
    assert_eq!(
        common::sem_waiters(&mut con, NAME).await,
        0,
        "every waiter left the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_weights_under_contention_never_exceed_the_capacity() {
    const NAME: &str = "mixed";
    const CAP: u32 = 5;
    let server = RedisServer::start();
    let stop = Arc::new(AtomicBool::new(false));
    let high_server = watch_count(server.async_connection().await, NAME, stop.clone());
    let clients: Vec<_> = (0..4).map(|_| steady(&server.url())).collect();
    let now = Arc::new(AtomicU32::new(0));
    let high = Arc::new(AtomicU32::new(0));
    let until = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let sem = clients[t % 4].semaphore(NAME, CAP).unwrap();
        let (now, high) = (now.clone(), high.clone());
        tasks.push(tokio::spawn(async move {
            let mut grants = 0;
            for _ in 0..500 {
                if Instant::now() >= until {
                    break;
                }
                let n = rand::rng().random_range(1..=3);
                let p = sem
                    .acquire_many_timeout(n, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("task {t}, {n} permits: {e}"));
                let in_use = now.fetch_add(n, Ordering::SeqCst) + n;
                high.fetch_max(in_use, Ordering::SeqCst);
                assert!(in_use <= CAP, "{in_use} permits held of {CAP}");
                tokio::time::sleep(Duration::from_millis(2)).await; // the holder's work
                now.fetch_sub(n, Ordering::SeqCst);
                assert_eq!(p.release().await.unwrap(), ReleaseOutcome::Released);
                grants += 1;
            }
            grants
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let server_high = high_server.await.unwrap();
    assert!(
        server_high <= CAP,
        "the server counted {server_high} of {CAP}"
    );
    assert!(total >= 40, "only {total} grants in 3 s");
    assert!(
        high.load(Ordering::SeqCst) >= 3,
        "permits were never shared"
    );
    eprintln!(
        "{total} weighted grants; {} permits in use at most by the holders' count, {server_high} by the server's",
        high.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_grant_is_one_lease_renewed_released_and_reclaimed_as_a_whole() {
    const NAME: &str = "whole";
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = common::quick(&server.url());
    let sem = c
        .semaphore(NAME, 5)
        .unwrap()
        .ttl(Duration::from_millis(400));
    let three = sem.acquire_many(3).await.unwrap();
    assert_eq!(three.permits(), 3);
    assert_eq!(sem.held().await.unwrap(), 3);
    // A one-permit request fits beside it; a three-permit one does not.
    let one = sem.try_acquire().await.unwrap();
    let err = sem.try_acquire_many(3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Contended, "{err}");
    let info = c.inspect_semaphore(NAME).await.unwrap();
    assert_eq!(info.held, 4);
    let mut weights: Vec<u32> = info.permits.iter().map(|m| m.permits).collect();
    weights.sort_unstable();
    assert_eq!(weights, [1, 3], "one entry per grant");
    // Renewed together: the grant and its two siblings move to one later expiry.
    let req = info
        .permits
        .iter()
        .find(|m| m.permits == 3)
        .unwrap()
        .request_id
        .clone();
    let members = [req.clone(), format!("{req}#2"), format!("{req}#3")];
    let granted = expiries(&mut con, NAME, &members).await;
    assert!(granted.iter().all(|e| *e == granted[0]), "{granted:?}");
    let granted = granted[0];
    poll_until(Duration::from_secs(3), "the three permits renewed", || {
        let (mut con, members) = (con.clone(), members.clone());
        async move {
            let now = expiries(&mut con, NAME, &members).await;
            now[0] > granted && now.iter().all(|e| *e == now[0])
        }
    })
    .await;
    assert!(!three.is_lost());
    assert_eq!(counted(&mut con, NAME).await, 4);
    assert_eq!(three.release().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(counted(&mut con, NAME).await, 1, "all three released");
    one.release().await.unwrap();
    // Without renewal, a crashed holder's three permits come back after its lease.
    let lapsing = sem.clone().auto_renew(false);
    let crashed = lapsing.acquire_many(3).await.unwrap();
    std::mem::forget(crashed);
    assert_eq!(counted(&mut con, NAME).await, 3);
    poll_until(Duration::from_secs(3), "the crashed grant to lapse", || {
        let mut con = con.clone();
        async move { counted(&mut con, NAME).await == 0 }
    })
    .await;
    let all = sem.try_acquire_many(5).await.unwrap();
    all.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_no_permits_or_more_than_the_capacity_is_refused() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let sem = c.semaphore("bounds", 3).unwrap();
    for n in [0, 4] {
        let err = sem.try_acquire_many(n).await.unwrap_err();
        assert!(err.is_invalid_input(), "{n}: {err}");
        assert!(err.to_string().contains("ask for 1 to 3"), "{err}");
    }
    // More than one grant may take, however large the semaphore.
    let big = c.semaphore("bounds-big", 5_000).unwrap();
    let err = big
        .try_acquire_many(leasehold::MAX_PERMITS_PER_GRANT + 1)
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let most = big
        .try_acquire_many(leasehold::MAX_PERMITS_PER_GRANT)
        .await
        .unwrap();
    assert_eq!(most.permits(), leasehold::MAX_PERMITS_PER_GRANT);
    assert_eq!(big.held().await.unwrap(), leasehold::MAX_PERMITS_PER_GRANT);
    most.release().await.unwrap();
    assert_eq!(big.held().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_acquire_whose_replies_are_lost_is_granted_once() {
    const NAME: &str = "lossy-weighted";
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    let sem = c.semaphore(NAME, 6).unwrap();
    sem.try_acquire().await.unwrap().release().await.unwrap();
    let acquire = || Match::command("EVALSHA").and(Match::arg_contains(sha(SEM_ACQUIRE.plain)));
    for fault in ["drop", "late", "reset"] {
        let rule = match fault {
            "drop" => Rule::reply_to(acquire()).first(1).drop(),
            "late" => Rule::reply_to(acquire())
                .first(1)
                .delay(Duration::from_millis(700)),
            _ => Rule::reply_to(acquire()).first(1).reset(),
        };
        let rule = proxy.add_rule(rule);
        let p = sem.acquire_many(4).await.unwrap();
        assert_eq!(rule.hits(), 1, "{fault}: the fault hit the acquire");
        assert_eq!(
            counted(&mut con, NAME).await,
            4,
            "{fault}: the retry was granted once"
        );
        assert_eq!(p.release().await.unwrap(), ReleaseOutcome::Released);
        assert_eq!(
            counted(&mut con, NAME).await,
            0,
            "{fault}: all four released"
        );
    }
}
