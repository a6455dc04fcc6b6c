//! Lock settings: setters that never fail and do not depend on their order, one check at
//! acquire, the watchdog on unless turned off, and options that do not apply refused.

mod common;

use std::time::Duration;

use common::{client, pttl};
use leasehold_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_interval_is_checked_against_the_final_ttl_whatever_the_order_of_the_calls() {
    // Port 9 on loopback has no Redis: the check must come before any I/O.
    let c = leasehold::Client::new("redis://127.0.0.1:9/").unwrap();
    let base = c.lock("order").unwrap();
    let (long, short, every) = (
        Duration::from_secs(60),
        Duration::from_secs(10),
        Duration::from_secs(20),
    );
    // Renewing every 20 s can keep a 60 s lease, never a 10 s one, in either order.
    base.clone().ttl(long).renew_every(every).check().unwrap();
    base.clone().renew_every(every).ttl(long).check().unwrap();
    for lock in [
        base.clone().ttl(short).renew_every(every),
        base.clone().renew_every(every).ttl(short),
        base.clone().ttl(long).renew_every(every).ttl(short),
    ] {
        let err = lock.check().unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
        assert!(err.to_string().contains("renewal interval"), "{err}");
        let err = lock.try_acquire().await.unwrap_err();
        assert!(err.is_invalid_input(), "acquire checked nothing: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_given_a_ttl_is_still_renewed_until_auto_renew_is_turned_off() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let ttl = Duration::from_millis(400);
    let renewed = c.lock("renewed").unwrap().ttl(ttl);
    assert_eq!(renewed.effective_renewal(), Some(ttl / 3));
    let fixed = c.lock("fixed").unwrap().ttl(ttl).auto_renew(false);
    assert_eq!(fixed.effective_renewal(), None);

    let kept = renewed.acquire().await.unwrap();
    let lapses = fixed.acquire().await.unwrap();
    // The fixed lease runs out; the renewed one is still held then, twice its TTL later.
    tokio::time::timeout(Duration::from_secs(2), lapses.lost())
        .await
        .expect("a fixed lease is lost once its TTL has passed");
    tokio::time::timeout(Duration::from_millis(500), kept.lost())
        .await
        .expect_err("the watchdog must keep a lease given only a TTL");
    assert!(!kept.is_lost());
    let left = pttl(&mut con, renewed.redis_key()).await;
    assert!(
        left > 0 && left <= 400,
        "PTTL {left} of a renewed 400 ms lease"
    );
    assert_eq!(
        pttl(&mut con, fixed.redis_key()).await,
        -2,
        "fixed key gone"
    );
    assert!(kept.release().await.unwrap().is_released());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_that_do_not_apply_to_a_lock_are_refused_not_ignored() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let place = Duration::from_secs(1);
    // A plain lock's waiters keep no place at the server.
    let err = c
        .lock("plain")
        .unwrap()
        .place_ttl(place)
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("place_ttl"), "{err}");
    // A fair lock's do.
    let fair = c.fair_lock("fair").unwrap().place_ttl(place);
    fair.check().unwrap();
    assert!(fair.try_acquire().await.unwrap().release().await.is_ok());
    // A renewal interval means nothing once the watchdog is off.
    let err = c
        .lock("no-watchdog")
        .unwrap()
        .renew_every(Duration::from_secs(1))
        .auto_renew(false)
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("auto_renew(false)"), "{err}");
    // Replica acknowledgements need a replicated master, which a test server is, so
    // only the range is checked here; on Cluster and RedLock they are refused
    // (tests/cluster.rs, tests/redlock.rs).
    let err = c
        .lock("acks")
        .unwrap()
        .replica_acks(65, Duration::from_secs(1))
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    // A read-write lock's place lifetime is its writers'; readers keep no place.
    let rw = c.rwlock("rw").unwrap().place_ttl(place);
    rw.check().unwrap();
    assert!(rw.try_read().await.unwrap().release().await.is_ok());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_label_is_refused_at_acquire_and_the_lock_stays_free() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let lock = c.lock("labelled").unwrap().label("line\nbreak");
    let err = lock.try_acquire().await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert_eq!(pttl(&mut con, lock.redis_key()).await, -2);
    let good = lock.label("nightly-report");
    let guard = good.try_acquire().await.unwrap();
    let info = c.inspect("labelled").await.unwrap();
    let holder = info.holder.expect("held");
    assert_eq!(holder.metadata.label.as_deref(), Some("nightly-report"));
    assert!(guard.release().await.unwrap().is_released());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_too_short_for_the_response_timeout_is_refused_with_the_reason() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    // The default response timeout (1 s): a renewal may wait that long for its reply.
    let c = leasehold::Client::new(server.url()).unwrap();
    for ttl in [10, 15, 500, 1_000] {
        let lock = c.lock("too-short").unwrap().ttl(Duration::from_millis(ttl));
        let e = lock.acquire().await.unwrap_err();
        assert!(e.is_invalid_input(), "{ttl} ms: {e}");
        let text = e.to_string();
        assert!(
            text.contains("too short to renew with a response timeout of 1 s")
                && text.contains("use a TTL of at least 1.5"),
            "{text}"
        );
        assert_eq!(
            pttl(&mut con, "leasehold:{too-short}").await,
            -2,
            "nothing sent"
        );
    }
    // Long enough, or not renewed at all: granted.
    let ok = c
        .lock("too-short")
        .unwrap()
        .ttl(Duration::from_millis(1_600));
    ok.acquire().await.unwrap().release().await.unwrap();
    let fixed = c
        .lock("too-short")
        .unwrap()
        .ttl(Duration::from_millis(15))
        .auto_renew(false);
    drop(fixed.acquire().await.unwrap());
    // A shorter response timeout admits the short renewed lease.
    let quick = leasehold::Client::builder(server.url())
        .response_timeout(Duration::from_millis(5))
        .build()
        .unwrap();
    let lock = quick
        .lock("short-ok")
        .unwrap()
        .ttl(Duration::from_millis(15));
    lock.check().unwrap();
}
