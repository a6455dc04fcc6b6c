//! Operator tools in the library: listing held locks and force-releasing one.

mod common;

use std::time::Duration;

use common::client;
use leasehold::{Listing, LostReason, PrimitiveKind, LIST_LIMIT};
use leasehold_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_finds_held_locks_matching_a_pattern_with_scan() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let mut guards = Vec::new();
    for name in ["jobs/a", "jobs/b", "other"] {
        guards.push(c.lock(name).unwrap().acquire().await.unwrap());
    }
    let locks = |l: &Listing| l.names(PrimitiveKind::Lock).join(",");
    assert_eq!(
        locks(&c.list("jobs/*", LIST_LIMIT).await.unwrap()),
        "jobs/a,jobs/b"
    );
    let all = c.list("*", LIST_LIMIT).await.unwrap();
    assert_eq!(locks(&all), "jobs/a,jobs/b,other");
    assert!(!all.truncated);
    assert!(c
        .list("nothing*", LIST_LIMIT)
        .await
        .unwrap()
        .entries
        .is_empty());
    assert!(c
        .list("a{b", LIST_LIMIT)
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(c.list("*", 0).await.unwrap_err().is_invalid_input());
    for g in guards {
        g.release().await.unwrap();
    }
    assert!(c.list("*", LIST_LIMIT).await.unwrap().entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_stops_at_its_limit_and_says_that_more_match() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let mut guards = Vec::new();
    for i in 0..25 {
        guards.push(
            c.lock(&format!("many/{i:02}"))
                .unwrap()
                .acquire()
                .await
                .unwrap(),
        );
    }
    let some = c.list("many/*", 10).await.unwrap();
    assert_eq!(some.entries.len(), 10);
    assert!(
        some.truncated,
        "25 match, 10 listed: the listing must say so"
    );
    let exact = c.list("many/*", 25).await.unwrap();
    assert_eq!(exact.entries.len(), 25);
    assert!(!exact.truncated, "all 25 listed");
    for g in guards {
        g.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_inspect_cover_semaphores_and_read_write_locks() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let sem = c.semaphore("pool", 3).unwrap();
    let p1 = sem.acquire().await.unwrap();
    let p2 = sem.acquire().await.unwrap();
    let rw = c.rwlock("table").unwrap();
    let r1 = rw.read().await.unwrap();
    let r2 = rw.read().await.unwrap();
    let lock = c.lock("pool").unwrap().acquire().await.unwrap();

    let all = c.list("*", LIST_LIMIT).await.unwrap();
    let shown: Vec<String> = all
        .entries
        .iter()
        .map(|e| format!("{}:{}", e.kind, e.name))
        .collect();
    assert_eq!(shown, ["lock:pool", "semaphore:pool", "rwlock:table"]);

    let s = c.inspect_semaphore("pool").await.unwrap();
    assert_eq!(s.held, 2);
    let mut tokens: Vec<u64> = s.permits.iter().map(|p| p.fencing_token).collect();
    tokens.sort_unstable();
    assert_eq!(tokens, [p1.fencing_token(), p2.fencing_token()]);
    assert!(s
        .permits
        .iter()
        .all(|p| p.ttl_remaining.is_some_and(|t| t > Duration::ZERO)));

    let r = c.inspect_rwlock("table").await.unwrap();
    assert!(r.writer.is_none());
    assert_eq!(r.reader_count, 2);
    assert_eq!(r.readers.len(), 2);
    assert_eq!(
        r.last_token,
        Some(r1.fencing_token().max(r2.fencing_token()))
    );
    r1.release().await.unwrap();
    r2.release().await.unwrap();
    let w = rw.write().await.unwrap();
    let r = c.inspect_rwlock("table").await.unwrap();
    assert_eq!(r.writer.map(|h| h.fencing_token), Some(w.fencing_token()));
    assert_eq!(r.reader_count, 0);

    w.release().await.unwrap();
    p1.release().await.unwrap();
    p2.release().await.unwrap();
    lock.release().await.unwrap();
    assert!(c.list("*", LIST_LIMIT).await.unwrap().entries.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_type_under_a_lock_name_is_a_foreign_key_error() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let mut con = server.connection();
    let _: () = redis::cmd("SET")
        .arg("leasehold:{someone-elses}")
        .arg("x")
        .query(&mut con)
        .unwrap();
    let e = c.inspect("someone-elses").await.unwrap_err();
    assert!(e.is_foreign_key(), "{e:?}");
    assert!(e.to_string().contains("another type"), "{e}");
    let e = c
        .lock("someone-elses")
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err();
    assert!(e.is_foreign_key(), "{e:?}");
    // Listed by shape; its type shows when it is read.
    let all = c.list("*", LIST_LIMIT).await.unwrap();
    assert_eq!(all.names(PrimitiveKind::Lock), ["someone-elses"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_hash_without_a_ttl_is_reported_as_having_none() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let mut con = server.connection();
    let _: () = redis::cmd("HSET")
        .arg("leasehold:{forever}")
        .arg("owner")
        .arg("someone")
        .arg("token")
        .arg(7)
        .arg("count")
        .arg(1)
        .query(&mut con)
        .unwrap();
    let info = c.inspect("forever").await.unwrap();
    let holder = info.holder.expect("held");
    assert_eq!(holder.ttl_remaining, None, "no TTL is not a TTL of zero");
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
