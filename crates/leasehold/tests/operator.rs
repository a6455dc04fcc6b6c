//! Operator tools in the library: listing held locks and force-releasing one.

mod common;

use std::time::Duration;

use common::client;
use leasehold::LostReason;
use leasehold_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_finds_held_locks_matching_a_pattern_with_scan() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let mut guards = Vec::new();
    for name in ["jobs/a", "jobs/b", "other"] {
        guards.push(c.lock(name).unwrap().acquire().await.unwrap());
    }
    assert_eq!(c.list("jobs/*").await.unwrap(), vec!["jobs/a", "jobs/b"]);
    assert_eq!(
        c.list("*").await.unwrap(),
        vec!["jobs/a", "jobs/b", "other"]
    );
    assert!(c.list("nothing*").await.unwrap().is_empty());
    assert!(c.list("a{b").await.unwrap_err().is_invalid_input());
    for g in guards {
        g.release().await.unwrap();
    }
    assert!(c.list("*").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_release_removes_the_holder_wakes_a_waiter_and_the_holder_learns_it() {
    let server = RedisServer::start();
    let holder = client(&server.url());
    let waiter = client(&server.url());
    let operator = client(&server.url());
    let guard = holder
        .lock("stuck")
        .unwrap()
        .ttl(Duration::from_secs(3))
        .auto_renew(true)
        .label("cron")
        .acquire()
        .await
        .unwrap();
    let wait = tokio::spawn(async move {
        waiter
            .lock("stuck")
            .unwrap()
            .acquire_timeout(Duration::from_secs(10))
            .await
            .map(|g| g.fencing_token())
    });
    common::poll_until(Duration::from_secs(5), "the waiter to queue", || {
        let op = operator.clone();
        async move { op.inspect("stuck").await.unwrap().waiters == 1 }
    })
    .await;
    let removed = operator
        .force_release("stuck")
        .await
        .unwrap()
        .expect("it was held");
    assert_eq!(removed.fencing_token, guard.fencing_token());
    assert_eq!(removed.metadata.label.as_deref(), Some("cron"));
    let next = tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .expect("the waiter was woken")
        .unwrap()
        .unwrap();
    assert!(next > guard.fencing_token());
    let reason = tokio::time::timeout(Duration::from_secs(3), guard.lost())
        .await
        .unwrap();
    // The waiter took the lock (and may have released it already).
    assert!(
        matches!(reason, LostReason::HeldByOther | LostReason::Expired),
        "{reason:?}"
    );
    assert!(operator
        .force_release("never-held")
        .await
        .unwrap()
        .is_none());
}
