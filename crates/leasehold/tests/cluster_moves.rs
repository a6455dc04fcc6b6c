//! Redis Cluster waiters when the lock's slot moves: after a `CLUSTER FAILOVER` of the slot's
//! primary, or a migration of the slot to another primary, the node that lost the slot ends
//! the waiter's sharded subscription. The waiter subscribes again on the slot's new owner
//! and is woken by the next release at once, not by its fallback timer.

mod common;

use std::time::{Duration, Instant};

use common::poll_until;
use leasehold::{Client, LockGuard, ReleaseOutcome};
use leasehold_testkit::topology::key_slot;
use leasehold_testkit::RedisCluster;

/// How soon after a release its waiter must hold the lock (loopback: a few ms).
const WOKEN_WITHIN: Duration = Duration::from_millis(100);
const LEASE: Duration = Duration::from_secs(30);

fn cluster_client(cluster: &RedisCluster) -> Client {
    Client::cluster_builder(cluster.urls()[..1].to_vec())
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

fn lock_key(name: &str) -> String {
    format!("leasehold:{{{name}}}")
}

/// Sharded subscribers of `channel` on node `i`.
fn shard_subscribers(cluster: &RedisCluster, i: usize, channel: &str) -> i64 {
    let mut con = cluster.nodes()[i].connection();
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(channel)
        .query(&mut con)
        .unwrap();
    n
}

/// Wait until one of `nodes` has a sharded subscriber of `channel`.
async fn subscribed_on(cluster: &RedisCluster, nodes: &[usize], channel: &str, what: &str) {
    poll_until(Duration::from_secs(5), what, || {
        let n: i64 = nodes
            .iter()
            .map(|i| shard_subscribers(cluster, *i, channel))
            .sum();
        async move { n >= 1 }
    })
    .await;
}

/// The lock `name` is held by `holder`; a waiter of `waiter` waits up to 60 s. Returns the
/// holder's guard and the waiter's task, which yields its guard and when it was granted.
async fn held_with_a_waiter(
    holder: &Client,
    waiter: &Client,
    name: &str,
) -> (
    LockGuard,
    tokio::task::JoinHandle<(leasehold::Result<LockGuard>, Instant)>,
) {
    let guard = holder
        .lock(name)
        .unwrap()
        .ttl(LEASE)
        .auto_renew(false)
        .acquire()
        .await
        .unwrap();
    let lock = waiter
        .lock(name)
        .unwrap()
        .ttl(LEASE)
        .auto_renew(false)
        .wait(Duration::from_secs(60));
    let task = tokio::spawn(async move {
        let g = lock.acquire().await;
        (g, Instant::now())
    });
    (guard, task)
}

async fn release_wakes_the_waiter(
    guard: LockGuard,
    task: tokio::task::JoinHandle<(leasehold::Result<LockGuard>, Instant)>,
) {
    assert!(
        !task.is_finished(),
        "the waiter was granted while the lock was held"
    );
    let released_at = Instant::now();
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    let (got, at) = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the waiter is granted within its fallback timer")
        .unwrap();
    let got = got.unwrap();
    let woke = at.saturating_duration_since(released_at);
    eprintln!("waiter granted {woke:?} after the release");
    assert!(
        woke <= WOKEN_WITHIN,
        "the waiter was granted {woke:?} after the release (lease {LEASE:?}): not woken by it"
    );
    assert!(got.release().await.unwrap().is_released());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_waiter_is_woken_at_once_by_a_release_after_its_primary_fails_over() {
    let mut cluster = RedisCluster::start(3);
    let name = "moved/failover";
    let primary = cluster.node_for_slot(key_slot(lock_key(name).as_bytes()));
    let replica = cluster.add_replica(primary).unwrap();
    let holder = cluster_client(&cluster);
    let waiter = cluster_client(&cluster);
    let (guard, task) = held_with_a_waiter(&holder, &waiter, name).await;
    let channel = format!("{}:released", lock_key(name));
    subscribed_on(&cluster, &[primary], &channel, "the waiter's SSUBSCRIBE").await;

    tokio::task::block_in_place(|| cluster.failover(replica)).unwrap();
    assert_eq!(
        cluster.node_for_slot(key_slot(lock_key(name).as_bytes())),
        replica
    );
    // The old primary ended the subscription when it lost the slot; the waiter subscribes
    // again on the new primary (the old one, now a replica, would not hear the release).
    subscribed_on(
        &cluster,
        &[replica],
        &channel,
        "the waiter's SSUBSCRIBE on the new primary",
    )
    .await;
    release_wakes_the_waiter(guard, task).await;
    holder.shutdown().await;
    waiter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_waiter_is_woken_at_once_by_a_release_after_its_slot_migrates() {
    let mut cluster = RedisCluster::start(3);
    let name = "moved/migrated";
    let slot = key_slot(lock_key(name).as_bytes());
    let from = cluster.node_for_slot(slot);
    let to = (from + 1) % 3;
    let holder = cluster_client(&cluster);
    let waiter = cluster_client(&cluster);
    let (guard, task) = held_with_a_waiter(&holder, &waiter, name).await;
    let channel = format!("{}:released", lock_key(name));
    subscribed_on(&cluster, &[from], &channel, "the waiter's SSUBSCRIBE").await;

    tokio::task::block_in_place(|| cluster.move_slot(slot, to)).unwrap();
    assert_eq!(cluster.node_for_slot(slot), to);
    subscribed_on(
        &cluster,
        &[to],
        &channel,
        "the waiter's SSUBSCRIBE on the slot's new owner",
    )
    .await;
    // Once subscribed again, the waiter tries once more (a release may have come while it
    // was not subscribed). That try reaches the new owner through a redirect, which the
    // cluster client may hold for a while: the release must come after it, or it would
    // measure the redirect, not the wake-up.
    poll_until(
        Duration::from_secs(5),
        "the waiter's try on the slot's new owner",
        || {
            let n = script_calls(&cluster, to);
            async move { n >= 1 }
        },
    )
    .await;
    release_wakes_the_waiter(guard, task).await;
    holder.shutdown().await;
    waiter.shutdown().await;
}

/// Script calls node `i` ran so far.
fn script_calls(cluster: &RedisCluster, i: usize) -> u64 {
    let mut con = cluster.nodes()[i].connection();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .unwrap();
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}
