//! Fair locks: strict first come, first served across clients, one waiter woken per
//! release, and places that are given up (cancelled) or lapse (a waiter that stopped
//! refreshing) never hold the queue up.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, command_calls, queued_waiters, reset_stats, wait_for_queue};
use leasehold::Client;
use leasehold_testkit::{FaultProxy, RedisServer};

/// A fair lock handle that waits long and keeps places for 30 s: nothing in these tests
/// may lapse by itself unless the test says so.
fn fair(c: &Client, name: &str) -> leasehold::Lock {
    c.fair_lock(name)
        .unwrap()
        .wait(Duration::from_secs(30))
        .place_ttl(Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_fair_waiters_acquire_in_exactly_their_arrival_order_and_each_release_wakes_one() {
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let holder = client(&server.url());
    let guard = fair(&holder, "fifo").acquire().await.unwrap();
    // Waiters alternate between one shared client (tasks of one process) and clients of
    // their own (other processes): the order must hold across both.
    let shared = client(&server.url());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let own = (i % 2 == 1).then(|| client(&server.url()));
        let lock = fair(own.as_ref().unwrap_or(&shared), "fifo");
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let g = lock.acquire().await.unwrap();
            order.lock().unwrap().push((i, g.fencing_token()));
            g.release().await.unwrap();
            if let Some(c) = own {
                c.shutdown().await;
            }
        }));
        wait_for_queue(&con, "fifo", i + 1).await;
    }
    let mut stats = con.clone();
    reset_stats(&mut stats).await;
    // The releasing holder asks again at once: it must queue behind all eight.
    guard.release().await.unwrap();
    let again = fair(&holder, "fifo").acquire().await.unwrap();
    order.lock().unwrap().push((99, again.fencing_token()));
    again.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let who: Vec<u64> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(who, vec![0, 1, 2, 3, 4, 5, 6, 7, 99]);
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "fencing tokens must increase: {order:?}"
    );
    // Nine handoffs: each release (9) and each claim (9), the holder's two tries before it
    // queued and subscribed, and at most a few late second tries of the last waiters to
    // queue. Waking every waiter on each release would add 7 + 6 + ... + 1 = 28 more.
    let scripts = command_calls(&mut stats, "evalsha").await;
    assert!(
        scripts <= 9 + 9 + 2 + 4,
        "{scripts} script calls for 9 handoffs: releases woke more than the next waiter"
    );
    let mut con = con.clone();
    assert_eq!(queued_waiters(&mut con, "fifo").await, 0);
    shared.shutdown().await;
    holder.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_fair_wait_gives_its_place_up_at_once() {
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let c = client(&server.url());
    let guard = fair(&c, "cancel").acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        let lock = fair(&c, "cancel");
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let g = lock.acquire().await.unwrap();
            order.lock().unwrap().push((i, Instant::now()));
            g.release().await.unwrap();
        }));
        wait_for_queue(&con, "cancel", i + 1).await;
    }
    // The middle waiter is cancelled: its place goes at once, not when it would lapse.
    let middle = tasks.remove(1);
    middle.abort();
    assert!(middle.await.unwrap_err().is_cancelled());
    wait_for_queue(&con, "cancel", 2).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    assert_eq!(
        order.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 2]
    );
    let last = order[1].1 - released;
    assert!(
        last < Duration::from_secs(5),
        "the waiter behind a cancelled one waited {last:?} (its place lives 30 s)"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_waiter_that_stops_refreshing_is_skipped_within_its_place_ttl() {
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let c = client(&server.url());
    let guard = fair(&c, "stale").acquire().await.unwrap();

    // The first waiter's client talks through a proxy; once queued, the proxy stalls, so
    // it can neither refresh its place nor take it back: a crashed process, as Redis sees it.
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let gone = client(&proxy.url());
    let place_ttl = Duration::from_millis(600);
    let stale = gone
        .fair_lock("stale")
        .unwrap()
        .wait(Duration::from_secs(30))
        .place_ttl(place_ttl);
    let stale_task = tokio::spawn(async move { stale.acquire().await.map(|g| g.fencing_token()) });
    wait_for_queue(&con, "stale", 1).await;
    let stall = proxy.stall();
    stale_task.abort();

    let next = fair(&c, "stale").place_ttl(place_ttl);
    let next_task = tokio::spawn(async move {
        let started = Instant::now();
        let g = next.acquire().await.unwrap();
        let waited = started.elapsed();
        g.release().await.unwrap();
        waited
    });
    wait_for_queue(&con, "stale", 2).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    let waited = next_task.await.unwrap();
    let after_release = released.elapsed();
    // Skipped once its place lapsed (600 ms after its last refresh) and the next waiter
    // came back to refresh its own (every 200 ms): the bound is 800 ms, far under the 30 s
    // wait; allow for a busy machine.
    assert!(
        after_release < Duration::from_secs(3),
        "the next waiter got the lock {after_release:?} after the release (waited {waited:?})"
    );
    drop(stall);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_on_a_held_fair_lock_is_contended_and_takes_no_place() {
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let c = client(&server.url());
    let guard = fair(&c, "nojump").acquire().await.unwrap();
    let waiter = fair(&c, "nojump");
    let task = tokio::spawn(async move { waiter.acquire().await.map(|g| g.fencing_token()) });
    wait_for_queue(&con, "nojump", 1).await;
    let other = client(&server.url());
    let err = fair(&other, "nojump").try_acquire().await.unwrap_err();
    assert!(err.is_contended(), "{err}");
    let mut check = con.clone();
    assert_eq!(queued_waiters(&mut check, "nojump").await, 1);
    guard.release().await.unwrap();
    let token = task.await.unwrap().unwrap();
    assert!(token > 0);
    other.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fair_lock_that_expires_goes_to_the_oldest_waiter_not_the_first_to_notice() {
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let c = client(&server.url());
    // A holder that vanishes without releasing: its lease (400 ms, not renewed) runs out.
    let crashed = fair(&c, "expiry")
        .ttl(Duration::from_millis(400))
        .auto_renew(false)
        .acquire()
        .await
        .unwrap();
    std::mem::forget(crashed);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let own = client(&server.url());
        let lock = fair(&own, "expiry");
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let g = lock.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            g.release().await.unwrap();
            own.shutdown().await;
        }));
        wait_for_queue(&con, "expiry", i + 1).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_and_unsupported_topologies_fail_as_invalid_input() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let lock = c.fair_lock("bad").unwrap();
    for place in [Duration::from_millis(99), Duration::from_secs(61)] {
        let err = lock.clone().place_ttl(place).acquire().await.unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
    }
    for capacity in [0, leasehold::MAX_PERMITS + 1] {
        let err = c.semaphore("bad", capacity).unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
    }
    assert!(c.rwlock("a{b}").unwrap_err().is_invalid_input());
    // Fair locks, semaphores and read-write locks need one keyspace: not RedLock.
    let redlock = Client::redlock_builder([server.url(), server.url(), server.url()])
        .build()
        .unwrap();
    assert!(redlock.semaphore("s", 2).unwrap_err().is_invalid_input());
    assert!(redlock.rwlock("r").unwrap_err().is_invalid_input());
    let err = redlock
        .fair_lock("f")
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    c.shutdown().await;
}
