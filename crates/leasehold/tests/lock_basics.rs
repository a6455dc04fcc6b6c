//! Acquire, release, extend, reentrancy and fencing against a real redis-server.

mod common;

use std::time::Duration;

use common::{client, exists, hget, pttl};
use leasehold::{ErrorKind, NotHeldReason, Owner, ReleaseOutcome};
use leasehold_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_sets_a_ttl_and_release_deletes_the_key() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let client = client(&server.url());
    let lock = client
        .lock("basics")
        .unwrap()
        .ttl(Duration::from_secs(5))
        .auto_renew(false);
    let guard = lock.acquire().await.unwrap();
    let ttl = pttl(&mut con, lock.redis_key()).await;
    assert!(ttl > 4_000 && ttl <= 5_000, "PTTL {ttl}");
    assert_eq!(
        hget(&mut con, lock.redis_key(), "count").await.as_deref(),
        Some("1")
    );
    assert_eq!(guard.hold_count(), 1);
    assert!(guard.remaining() > Duration::from_millis(4_800));
    assert!(
        guard.remaining()
            <= Duration::from_secs(5) - leasehold::lease::drift(Duration::from_secs(5))
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(!exists(&mut con, lock.redis_key()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_on_a_held_lock_is_contended_and_changes_nothing() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let a = client(&server.url());
    let b = client(&server.url());
    let held = a.lock("busy").unwrap().acquire().await.unwrap();
    let before = hget(&mut con, "leasehold:{busy}", "owner").await;
    let err = b.lock("busy").unwrap().try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Contended);
    assert!(err.is_contended() && err.is_retryable());
    assert_eq!(hget(&mut con, "leasehold:{busy}", "owner").await, before);
    assert_eq!(
        hget(&mut con, "leasehold:{busy}", "count").await.as_deref(),
        Some("1")
    );
    held.release().await.unwrap();
    common::take_and_release(&b, "busy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_timeout_gives_up_at_its_deadline() {
    let server = RedisServer::start();
    let a = client(&server.url());
    let b = client(&server.url());
    let _held = a.lock("slow").unwrap().acquire().await.unwrap();
    let started = std::time::Instant::now();
    let err = b
        .lock("slow")
        .unwrap()
        .acquire_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1_500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_holders_late_release_and_extend_do_not_touch_the_new_holder() {
    // Seed 002: an unconditional DEL on unlock removed other holders' locks.
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let a = client(&server.url());
    let b = client(&server.url());
    let lock_a = a
        .lock("seed002")
        .unwrap()
        .ttl(Duration::from_millis(100))
        .auto_renew(false);
    let guard_a = lock_a.acquire().await.unwrap();
    let key = lock_a.redis_key().to_string();
    common::wait_until_absent(&con, &key, "A's lease to expire").await;
    assert!(guard_a.is_expired());
    let guard_b = b
        .lock("seed002")
        .unwrap()
        .ttl(Duration::from_secs(10))
        .auto_renew(false)
        .try_acquire()
        .await
        .unwrap();
    assert!(guard_b.fencing_token() > guard_a.fencing_token());

    let err = guard_a.extend(Duration::from_secs(10)).await.unwrap_err();
    assert_eq!(
        err.not_held_reason(),
        Some(NotHeldReason::HeldByOther),
        "{err}"
    );
    assert_eq!(
        guard_a.release().await.unwrap(),
        ReleaseOutcome::HeldByOther
    );

    assert_eq!(
        hget(&mut con, &key, "owner").await.as_deref(),
        Some(guard_b.owner_id())
    );
    assert!(pttl(&mut con, &key).await > 9_000);
    assert_eq!(guard_b.release().await.unwrap(), ReleaseOutcome::Released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_after_expiry_reports_expired() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let lock = c
        .lock("lapsed")
        .unwrap()
        .ttl(Duration::from_millis(50))
        .auto_renew(false);
    let guard = lock.acquire().await.unwrap();
    let key = lock.redis_key().to_string();
    common::wait_until_absent(&con, &key, "lease to expire").await;
    let err = guard.extend(Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotHeld(NotHeldReason::Expired));
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Expired);
    assert!(!exists(&mut con, &key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_lengthens_the_lease_and_never_shortens_it() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let lock = c
        .lock("extend")
        .unwrap()
        .ttl(Duration::from_secs(2))
        .auto_renew(false);
    let guard = lock.acquire().await.unwrap();
    let before = guard.valid_until();
    guard.extend(Duration::from_secs(20)).await.unwrap();
    assert!(pttl(&mut con, lock.redis_key()).await > 19_000);
    assert!(guard.valid_until() > before + Duration::from_secs(15));
    guard.extend(Duration::from_secs(1)).await.unwrap();
    assert!(
        pttl(&mut con, lock.redis_key()).await > 18_000,
        "extend must not shorten"
    );
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_strictly_increase_over_1000_grants_and_after_the_counter_is_deleted() {
    // Seed 003: fencing tokens per grant, monotonic even if the counter key is lost.
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let lock = c
        .lock("fenced")
        .unwrap()
        .ttl(Duration::from_secs(5))
        .auto_renew(false);
    let mut last = 0u64;
    for i in 0..1_000 {
        let guard = lock.try_acquire().await.unwrap();
        let token = guard.fencing_token();
        assert!(token > last, "grant {i}: token {token} after {last}");
        last = token;
        assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
        if i % 250 == 249 {
            let _: () = redis::cmd("DEL")
                .arg(lock.fence_key())
                .query_async(&mut con)
                .await
                .unwrap();
        }
    }
    let guard = lock.try_acquire().await.unwrap();
    assert!(guard.fencing_token() > last);
    assert_eq!(
        pttl(&mut con, lock.fence_key()).await,
        -1,
        "the counter itself has no TTL"
    );
    assert!(
        pttl(&mut con, lock.redis_key()).await > 0,
        "the lock key has one"
    );
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_owner_reenters_with_the_same_token_and_the_last_release_frees() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let other = client(&server.url());
    let owner = Owner::new();
    let lock = c.lock("reentrant").unwrap().owner(&owner);
    let outer = lock.acquire().await.unwrap();
    let inner = lock.try_acquire().await.unwrap();
    assert_eq!(inner.fencing_token(), outer.fencing_token());
    assert_eq!(inner.hold_count(), 2);
    assert_eq!(
        hget(&mut con, lock.redis_key(), "count").await.as_deref(),
        Some("2")
    );
    assert!(other
        .lock("reentrant")
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err()
        .is_contended());
    assert_eq!(inner.release().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(
        hget(&mut con, lock.redis_key(), "count").await.as_deref(),
        Some("1")
    );
    assert!(other
        .lock("reentrant")
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err()
        .is_contended());
    assert_eq!(outer.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(!exists(&mut con, lock.redis_key()).await);
    common::take_and_release(&other, "reentrant").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_owner_a_second_acquire_by_the_same_task_does_not_reenter() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let lock = c.lock("not-reentrant").unwrap();
    let held = lock.acquire().await.unwrap();
    assert!(lock.try_acquire().await.unwrap_err().is_contended());
    assert!(lock
        .acquire_timeout(Duration::from_millis(50))
        .await
        .unwrap_err()
        .is_timeout());
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_guard_is_released_in_the_background_and_shutdown_drains() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let lock = c.lock("dropped").unwrap();
    for i in 0..20 {
        let guard = c
            .lock(&format!("dropped-{i}"))
            .unwrap()
            .acquire()
            .await
            .unwrap();
        drop(guard);
    }
    let guard = lock.acquire().await.unwrap();
    drop(guard);
    c.shutdown().await;
    assert_eq!(c.pending_releases(), 0);
    assert!(!exists(&mut con, lock.redis_key()).await);
    for i in 0..20 {
        assert!(!exists(&mut con, &format!("leasehold:{{dropped-{i}}}")).await);
    }
    let err = lock.try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_move_across_spawned_tasks() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let server = RedisServer::start();
    let c = client(&server.url());
    let guard = c.lock("moved").unwrap().acquire().await.unwrap();
    assert_send_static(&guard);
    let outcome = tokio::spawn(async move { guard.release().await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, ReleaseOutcome::Released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_another_type_under_the_lock_name_is_a_foreign_key_error() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let _: () = redis::cmd("SET")
        .arg("leasehold:{typed}")
        .arg("not a lock")
        .query_async(&mut con)
        .await
        .unwrap();
    let c = client(&server.url());
    let err = c.lock("typed").unwrap().acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ForeignKey, "{err}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    assert!(err.is_foreign_key() && !err.is_server(), "{err}");
    assert!(!err.is_retryable());
    let v: String = redis::cmd("GET")
        .arg("leasehold:{typed}")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "not a lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run_is_transparent() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let lock = c.lock("flushed").unwrap();
    let g = lock.acquire().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    g.extend(Duration::from_secs(40)).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(g.release().await.unwrap(), ReleaseOutcome::Released);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .unwrap();
    lock.acquire().await.unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_gives_a_clear_error_then_recovers() {
    let mut server = RedisServer::start();
    let c = client(&server.url());
    let lock = c
        .lock("restart")
        .unwrap()
        .ttl(Duration::from_secs(5))
        .auto_renew(false);
    let guard = lock.acquire().await.unwrap();
    server.stop();
    let err = lock.try_acquire().await.unwrap_err();
    // Connection refused; or, if the command went out on the old connection before its
    // loss was noticed, an honest "ambiguous".
    assert!(err.is_connection() || err.is_ambiguous(), "{err}");
    assert!(err.to_string().contains("restart"), "names the lock: {err}");
    server.restart();
    // Without persistence the old grant is gone: its holder is told, not fooled.
    let err = guard.extend(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.not_held_reason(), Some(NotHeldReason::Expired), "{err}");
    let again = lock.try_acquire().await.unwrap();
    assert!(again.fencing_token() > 0);
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password_from_the_url_or_the_builder() {
    let server = RedisServer::builder()
        .acl_user("locker", "s3cret-pw")
        .start();
    let c = client(&server.url());
    common::acquire_and_release(&c, "acl").await;
    let via_builder = leasehold::Client::builder(server.url_without_auth())
        .username("locker")
        .password("s3cret-pw")
        .build()
        .unwrap();
    common::acquire_and_release(&via_builder, "acl").await;
    let wrong = leasehold::Client::builder(server.url_without_auth())
        .username("locker")
        .password("wrong")
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = wrong.lock("acl").unwrap().try_acquire().await.unwrap_err();
    assert!(
        err.is_auth(),
        "refused credentials are their own kind: {err}"
    );
    assert!(
        !err.to_string().contains("s3cret") && !err.to_string().contains("wrong"),
        "{err}"
    );
    assert!(!format!("{c:?}").contains("s3cret-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_rejected_before_any_io() {
    // Port 9 on loopback has no Redis: any I/O would fail differently.
    let c = leasehold::Client::new("redis://127.0.0.1:9/").unwrap();
    for name in ["", "a{b", "a}b", "line\nbreak"] {
        assert!(c.lock(name).unwrap_err().is_invalid_input(), "{name:?}");
    }
    assert!(c.lock(&"n".repeat(513)).unwrap_err().is_invalid_input());
    let lock = c.lock("ok").unwrap();
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_secs(90_000),
    ] {
        let err = lock.clone().ttl(ttl).acquire().await.unwrap_err();
        assert!(err.is_invalid_input(), "{ttl:?}: {err}");
    }
    assert!(lock
        .clone()
        .wait(Duration::from_secs(90_000))
        .acquire()
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(lock
        .acquire_timeout(Duration::from_secs(90_000))
        .await
        .unwrap_err()
        .is_invalid_input());
    let guard_err = leasehold::Client::builder("redis://127.0.0.1:9/")
        .response_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(guard_err.is_invalid_input());
    assert!(leasehold::Client::builder("redis://127.0.0.1:9/")
        .key_prefix("a{b")
        .build()
        .unwrap_err()
        .is_invalid_input());
}
