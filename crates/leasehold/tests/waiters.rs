//! The waiter queue at the server: handoff in arrival order, no barging, and waiters that
//! leave or crash never stall the lock.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_every_key_has_a_ttl, client, queued_waiters, wait_for_queue};
use leasehold_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_different_clients_are_served_in_arrival_order() {
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let holder = client(&server.url());
    let guard = holder.lock("fifo").unwrap().acquire().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let c = client(&server.url());
        let lock = c.lock("fifo").unwrap().wait(Duration::from_secs(20));
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let g = lock.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            g.release().await.unwrap();
            c.shutdown().await;
        }));
        wait_for_queue(&con, "fifo", i + 1).await;
    }
    // The releasing holder tries to barge straight back in: it must queue behind them.
    guard.release().await.unwrap();
    let again = holder.lock("fifo").unwrap().acquire().await.unwrap();
    order.lock().unwrap().push(99);
    again.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 99]);
    let mut con = con.clone();
    assert_eq!(queued_waiters(&mut con, "fifo").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_leaves_the_queue() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let holder = client(&server.url());
    let guard = holder.lock("leaving").unwrap().acquire().await.unwrap();
    let quitter = client(&server.url());
    let lock = quitter.lock("leaving").unwrap();
    // One waiter times out, another is cancelled by its caller.
    assert!(lock
        .acquire_timeout(Duration::from_millis(200))
        .await
        .unwrap_err()
        .is_timeout());
    let cancelled = tokio::time::timeout(Duration::from_millis(200), lock.acquire()).await;
    assert!(cancelled.is_err());
    quitter.shutdown().await;
    assert_eq!(queued_waiters(&mut con, "leaving").await, 0);
    assert_every_key_has_a_ttl(&mut con, "leaving").await;
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_waiter_at_the_head_of_the_queue_costs_at_most_its_reservation() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let holder = client(&server.url());
    let guard = holder.lock("ghost").unwrap().acquire().await.unwrap();
    // A waiter that crashed: queued first, with a registration good for a minute.
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg("leasehold:{ghost}:waiters")
        .arg(1)
        .arg("ghost-request")
        .cmd("ZADD")
        .arg("leasehold:{ghost}:waiters:exp")
        .arg(i64::MAX / 2)
        .arg("ghost-request")
        .cmd("PEXPIRE")
        .arg("leasehold:{ghost}:waiters")
        .arg(60_000)
        .cmd("PEXPIRE")
        .arg("leasehold:{ghost}:waiters:exp")
        .arg(60_000)
        .query_async(&mut con)
        .await
        .unwrap();
    let live = client(&server.url());
    let lock = live.lock("ghost").unwrap().wait(Duration::from_secs(20));
    let waiter = tokio::spawn(async move {
        let g = lock.acquire().await.unwrap();
        let at = Instant::now();
        g.release().await.unwrap();
        at
    });
    wait_for_queue(&con, "ghost", 2).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    let granted = waiter.await.unwrap();
    let gap = granted.saturating_duration_since(released);
    assert!(
        gap >= Duration::from_millis(leasehold::scripts::RESERVATION_MS),
        "the ghost held its reservation: {gap:?}"
    );
    assert!(
        gap < Duration::from_millis(1_000),
        "the live waiter was stalled {gap:?}"
    );
}
