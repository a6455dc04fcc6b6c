//! RedLock requests whose outcome on a node is unknown: a node paused (SIGSTOP) or
//! partitioned while an acquire is on its way runs that acquire when it answers again. The
//! caller's wait is honoured all the same, and every such request is released on that node
//! as soon as it answers, so no grant outlives the failed acquire there.

mod common;

use std::time::{Duration, Instant};

use common::poll_until;
use leasehold::Client;
use leasehold_testkit::{FaultProxy, Masters};

const NODE_TIMEOUT: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(3);
const TTL: Duration = Duration::from_secs(10);
/// How long the nodes stay unreachable after the caller got its error: longer than a
/// release retried for a few response timeouts would keep trying.
const STAYS_DOWN: Duration = Duration::from_secs(3);
/// How soon after the nodes answer again no node may hold the lock any more: the clean-up
/// sends its release as soon as a node answers (at most its 250 ms retry pause later).
const CLEANED_WITHIN: Duration = Duration::from_secs(1);

fn redlock(urls: Vec<String>) -> Client {
    Client::redlock_builder(urls)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(1))
        .node_timeout(NODE_TIMEOUT)
        .build()
        .expect("RedLock client")
}

/// On how many of the masters the lock key exists (read directly, not through proxies).
async fn holders(masters: &Masters, key: &str) -> usize {
    holders_on(masters, key, 0..masters.len()).await
}

/// On how many of the masters `nodes` the lock key exists.
async fn holders_on(masters: &Masters, key: &str, nodes: impl Iterator<Item = usize>) -> usize {
    let mut n = 0;
    for i in nodes {
        let mut con = masters
            .server(i)
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to node");
        if common::exists(&mut con, key).await {
            n += 1;
        }
    }
    n
}

/// Connect to every node and load the scripts there: take and release the lock once.
async fn warm_up(client: &Client, name: &str) {
    let guard = client.lock(name).unwrap().try_acquire().await.unwrap();
    assert!(guard.release().await.unwrap().is_released());
}

/// Acquire with three nodes unreachable: `NoQuorum` by the wait (plus one scheduling slack).
async fn acquire_fails_by_the_wait(client: &Client, name: &str) {
    let lock = client.lock(name).unwrap().ttl(TTL).auto_renew(false);
    let started = Instant::now();
    let e = lock.acquire_timeout(WAIT).await.unwrap_err();
    let took = started.elapsed();
    eprintln!("{name}: {e} after {took:?}");
    assert!(e.is_no_quorum(), "{e}");
    assert!(
        took <= WAIT + Duration::from_millis(150),
        "the error came {took:?} after the call, past its {WAIT:?} wait"
    );
}

/// The unreachable nodes stay so for [`STAYS_DOWN`], then `come_back` makes them answer
/// again; then [`no_grant_survives`].
async fn back_later(masters: &Masters, client: &Client, name: &str, come_back: impl FnOnce()) {
    tokio::time::sleep(STAYS_DOWN).await; // the scenario: the nodes come back later
    come_back();
    no_grant_survives(masters, name, Instant::now()).await;
    client.shutdown().await;
}

/// After the nodes answer again: every node is clean within [`CLEANED_WITHIN`], stays
/// clean, and another client is granted the lock.
async fn no_grant_survives(masters: &Masters, name: &str, resumed: Instant) {
    let key = format!("leasehold:{{{name}}}");
    poll_until(
        CLEANED_WITHIN + Duration::from_secs(2),
        "the failed acquire's grants released",
        || async { holders(masters, &key).await == 0 },
    )
    .await;
    let took = resumed.elapsed();
    eprintln!("{name}: no node holds the lock {took:?} after the nodes answered again");
    assert!(
        took <= CLEANED_WITHIN,
        "a node still held the lock {took:?} after the nodes answered again"
    );
    // Nothing buffered runs later: the key stays absent.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(
            holders(masters, &key).await,
            0,
            "a late request granted again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // the scenario: watch half a second
    }
    let other = redlock(masters.urls());
    let guard = other.lock(name).unwrap().try_acquire().await.unwrap();
    assert!(guard.release().await.unwrap().is_released());
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_that_failed_while_three_of_five_nodes_were_paused_leaves_no_grant_after_they_resume(
) {
    let masters = Masters::start(5);
    let client = redlock(masters.urls());
    let name = "redlock/paused-three";
    warm_up(&client, name).await;

    let pauses = [masters.pause(0), masters.pause(1), masters.pause(2)];
    acquire_fails_by_the_wait(&client, name).await;
    back_later(&masters, &client, name, || {
        pauses.into_iter().for_each(|g| g.resume())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_that_failed_during_a_partition_leaves_no_grant_after_it_heals() {
    let masters = Masters::start(5);
    let mut proxies = Vec::new();
    for addr in masters.addrs() {
        proxies.push(FaultProxy::start(addr).await.unwrap());
    }
    let client = redlock(proxies.iter().map(FaultProxy::url).collect());
    let name = "redlock/partitioned-three";
    warm_up(&client, name).await;

    // A partition that holds every byte and delivers it when it heals.
    let stalls = [proxies[0].stall(), proxies[1].stall(), proxies[2].stall()];
    acquire_fails_by_the_wait(&client, name).await;
    back_later(&masters, &client, name, || {
        stalls.into_iter().for_each(|g| g.resume())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_redlock_acquire_is_released_on_paused_nodes_once_they_resume() {
    let masters = Masters::start(5);
    let client = redlock(masters.urls());
    let name = "redlock/cancelled";
    warm_up(&client, name).await;
    let lock = client.lock(name).unwrap().ttl(TTL).auto_renew(false);

    let pauses = [masters.pause(0), masters.pause(1), masters.pause(2)];
    // Cancelled while the paused nodes' replies are awaited.
    let cut = tokio::time::timeout(NODE_TIMEOUT / 2, lock.acquire_timeout(WAIT)).await;
    assert!(cut.is_err(), "the acquire finished before it was cancelled");
    back_later(&masters, &client, name, || {
        pauses.into_iter().for_each(|g| g.resume())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_redlock_guard_is_released_on_paused_nodes_once_they_resume() {
    let masters = Masters::start(5);
    let client = redlock(masters.urls());
    let name = "redlock/dropped";
    let guard = client
        .lock(name)
        .unwrap()
        .ttl(TTL)
        .auto_renew(false)
        .try_acquire()
        .await
        .unwrap();
    let pauses = [masters.pause(0), masters.pause(1)];
    drop(guard); // released at once on the three live nodes, later on the paused two
    let key = format!("leasehold:{{{name}}}");
    poll_until(
        Duration::from_secs(2),
        "released on the live nodes",
        || async { holders_on(&masters, &key, 2..5).await == 0 },
    )
    .await;
    back_later(&masters, &client, name, || {
        pauses.into_iter().for_each(|g| g.resume())
    })
    .await;
}
