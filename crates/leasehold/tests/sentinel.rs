//! Sentinel (seed 002's replica failover): a client that follows the master Sentinel
//! names, holders that keep their lease across a failover or are told they lost it, and
//! replica acknowledgements (`WAIT`) that fail a grant strictly on any shortfall.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::poll_until;
use leasehold::{Client, ErrorKind, LostReason};
use leasehold_testkit::SentinelGroup;

fn sentinel_client(group: &SentinelGroup) -> leasehold::ClientBuilder {
    Client::sentinel_builder(group.sentinel_urls(), group.master_name())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
}

async fn con_to(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_keeps_its_lease_across_a_failover_or_is_told_it_lost_it() {
    let mut group = SentinelGroup::start();
    let client = sentinel_client(&group)
        .default_ttl(Duration::from_secs(6))
        .build()
        .unwrap();
    let lock = client.lock("sentinel/failover").unwrap();
    let guard = lock.acquire().await.unwrap();
    let token = guard.fencing_token();
    group.wait_for_replication(Duration::from_secs(5));

    let old = group.master().addr();
    group.master_mut().stop();
    let new = tokio::task::block_in_place(|| group.wait_for_failover(old, Duration::from_secs(20)));
    assert_ne!(new, old);

    // The grant reached the replica before the failover: the lease lives on there, and
    // the watchdog renews it on the new master.
    let renewed_before = client.renewal_stats().renewed;
    poll_until(
        Duration::from_secs(10),
        "a renewal on the new master",
        || async { client.renewal_stats().renewed > renewed_before + 1 || guard.is_lost() },
    )
    .await;
    assert!(guard.lost_reason().is_none(), "{guard:?}");
    let mut new_master = con_to(new).await;
    let holder: Option<String> = redis::cmd("HGET")
        .arg(lock.redis_key())
        .arg("owner")
        .query_async(&mut new_master)
        .await
        .unwrap();
    assert_eq!(holder.as_deref(), Some(guard.owner_id()));
    let other = client.lock("sentinel/failover").unwrap();
    assert!(other.try_acquire().await.unwrap_err().is_contended());

    // A grant the new master does not have (as if it had not been replicated): the next
    // renewal finds it gone and the holder is told.
    redis::cmd("DEL")
        .arg(lock.redis_key())
        .query_async::<()>(&mut new_master)
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(6), guard.lost())
        .await
        .expect("lost() fires within a lease");
    assert_eq!(reason, LostReason::Expired);

    // The next grant, on the new master, still carries a larger token.
    let again = other.try_acquire().await.unwrap();
    assert!(again.fencing_token() > token);
    drop(guard);
    again.release().await.unwrap();
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_acknowledgement_shortfall_fails_typed_and_leaves_no_key() {
    let group = SentinelGroup::start();
    let master = group.master().addr();
    let client = sentinel_client(&group)
        .replica_acks(1, Duration::from_millis(200))
        .build()
        .unwrap();
    let lock = client.lock("sentinel/acks").unwrap();

    // With the replica acknowledging, the grant counts.
    let guard = lock.try_acquire().await.unwrap();
    guard.release().await.unwrap();

    // With the replica paused, it cannot: the grant is released before acquire returns.
    let paused = group.replica().pause();
    let e = lock.try_acquire().await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::NotReplicated {
                wanted: 1,
                acked: 0
            }
        ),
        "{e}"
    );
    assert!(e.is_not_replicated() && e.is_retryable());
    let mut m = con_to(master).await;
    assert!(!common::exists(&mut m, lock.redis_key()).await);
    drop(paused);

    // Strict: one acknowledgement out of two required is a failure too.
    let two = lock.clone().replica_acks(2, Duration::from_millis(100));
    let e = two.try_acquire().await.unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::NotReplicated {
                wanted: 2,
                acked: 1
            }
        ),
        "{e}"
    );
    assert!(!common::exists(&mut m, lock.redis_key()).await);

    let e = lock.clone().replica_acks(0, Duration::from_millis(100));
    assert!(e.try_acquire().await.unwrap_err().is_invalid_input());
    client.shutdown().await;
}

#[tokio::test]
async fn sentinel_settings_are_checked_before_any_io() {
    let none: [&str; 0] = [];
    let e = Client::sentinel_builder(none, "mymaster")
        .build()
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    let e = Client::sentinel_builder(["redis://127.0.0.1:26379"], "my master")
        .build()
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    let e = Client::sentinel_builder(["http://127.0.0.1:26379"], "m")
        .build()
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diagnosis_says_when_there_are_fewer_replicas_than_the_required_acknowledgements() {
    let group = SentinelGroup::start();
    let status_of = |d: &leasehold::Diagnosis| {
        d.checks
            .iter()
            .find(|c| c.name == "replicas")
            .map(|c| (c.status, c.detail.clone()))
            .expect("a replicas check")
    };
    // One replica, two acknowledgements asked of every grant: every acquire would fail.
    let greedy = sentinel_client(&group)
        .replica_acks(2, Duration::from_millis(100))
        .build()
        .unwrap();
    let d = greedy.diagnose().await.unwrap();
    let (status, detail) = status_of(&d);
    assert_eq!(status, leasehold::CheckStatus::Unsafe, "{detail}");
    assert!(
        detail.contains("1 connected") && detail.contains("2"),
        "{detail}"
    );
    assert!(d.is_unsafe());
    let enough = sentinel_client(&group)
        .replica_acks(1, Duration::from_millis(500))
        .build()
        .unwrap();
    let d = enough.diagnose().await.unwrap();
    assert_eq!(status_of(&d).0, leasehold::CheckStatus::Ok, "{d:?}");
    greedy.shutdown().await;
    enough.shutdown().await;
}
