//! A server restart seen by the holder's client: the client reconnects as soon as the
//! server ends its connection, finds a new `run_id` at the same address, and gives up
//! every lease held there at once — long before the next renewal would have found the
//! lock gone. A narrowing of the window, not a guarantee (see PROTOCOL.md).

mod common;

use std::time::{Duration, Instant};

use common::{poll_until, steady};
use leasehold::{Client, LostReason};
use leasehold_testkit::RedisServer;

/// Wait until `client`'s renewal scheduler has handled everything queued so far: a lease
/// taken now is renewed, and the scheduler handles its commands in order, so a loss
/// declared before (rightly or not) has been applied by then.
async fn scheduler_caught_up(client: &Client) {
    let marker = client
        .lock("restart/marker")
        .unwrap()
        .ttl(Duration::from_millis(1_800))
        .acquire()
        .await
        .unwrap();
    let before = client.renewal_stats().renewed;
    poll_until(
        Duration::from_secs(5),
        "a renewal of the marker lease",
        || {
            let renewed = client.renewal_stats().renewed;
            async move { renewed > before }
        },
    )
    .await;
    marker.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_ends_the_holders_lease_at_once_not_at_its_next_renewal() {
    let mut server = RedisServer::start();
    let holder = steady(&server.url());
    // Renewed every 10 s: the next renewal is far away.
    let lock = holder
        .lock("restart/now")
        .unwrap()
        .ttl(Duration::from_secs(30));
    let guard = lock.acquire().await.unwrap();
    let restarted_at = Instant::now();
    server.restart(); // all data gone; the same port
                      // Another client takes the lock on the empty server at once.
    let rival = steady(&server.url());
    let other = rival
        .lock("restart/now")
        .unwrap()
        .acquire_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .expect("the holder is told within seconds, not at its renewal 10 s after the grant");
    assert_eq!(reason, LostReason::ServerRestarted);
    let told = restarted_at.elapsed();
    assert!(told < Duration::from_secs(3), "told after {told:?}");
    // A lease granted after the restart is not touched.
    assert!(!other.is_lost(), "{other:?}");
    drop(guard);
    other.release().await.unwrap();
    // The old holder's client works on: a new grant is kept.
    let again = lock.acquire().await.unwrap();
    scheduler_caught_up(&holder).await;
    assert!(!again.is_lost(), "{again:?}");
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_to_the_same_server_process_keeps_every_lease() {
    let server = RedisServer::start();
    let holder = steady(&server.url());
    let guard = holder
        .lock("restart/none")
        .unwrap()
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    // The server closes the client's connections (not a restart: same run_id).
    let mut con = server.connection();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    // The next command reconnects (same run_id); then nothing may declare the lease lost.
    guard.extend(Duration::from_secs(30)).await.unwrap();
    scheduler_caught_up(&holder).await;
    assert!(!guard.is_lost(), "{guard:?}");
    guard.release().await.unwrap();
}
