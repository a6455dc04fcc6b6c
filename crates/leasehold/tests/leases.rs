//! Leases that outlive the work: watchdog renewal, the loss signal, scoped work,
//! leadership (seeds 001 and 002) and inspection.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, exists, poll_until};
use leasehold::{ErrorKind, LostReason, OnLost, Owner};
use leasehold_testkit::{FaultProxy, RedisServer};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_lease_stays_held_through_five_seconds_of_work_by_renewal() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let holder = client(&server.url());
    let rival = client(&server.url());
    let lock = holder
        .lock("watchdog")
        .unwrap()
        .ttl(SECOND)
        .auto_renew(true);
    let guard = lock.acquire().await.unwrap();
    assert_eq!(guard.renew_every(), Some(SECOND / 3));
    let started = Instant::now();
    let mut refused = 0;
    while started.elapsed() < 5 * SECOND {
        let err = rival
            .lock("watchdog")
            .unwrap()
            .try_acquire()
            .await
            .unwrap_err();
        assert!(err.is_contended(), "{err}");
        refused += 1;
        assert!(!guard.is_lost(), "lost after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await; // the scenario: 5 s of work
    }
    assert!(refused >= 20);
    assert!(
        holder.renewal_stats().renewed >= 12,
        "{:?}",
        holder.renewal_stats()
    );
    assert!(guard.remaining() > Duration::from_millis(500));
    assert!(guard.release().await.unwrap().is_released());
    // No renewal may bring the key back after the release.
    let until = Instant::now() + SECOND + SECOND / 2;
    while Instant::now() < until {
        assert!(
            !exists(&mut con, "leasehold:{watchdog}").await,
            "a late renewal revived the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await; // the scenario: watch for 1.5 s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_deleted_by_an_operator_fires_lost_at_the_next_renewal() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let guard = c
        .lock("deleted")
        .unwrap()
        .ttl(SECOND)
        .auto_renew(true)
        .acquire()
        .await
        .unwrap();
    let token = guard.cancellation_token();
    let _: () = redis::cmd("DEL")
        .arg("leasehold:{deleted}")
        .query_async(&mut con)
        .await
        .unwrap();
    let reason = tokio::time::timeout(SECOND, guard.lost())
        .await
        .expect("lost() within one renewal period");
    assert_eq!(reason, LostReason::Expired);
    assert!(token.is_cancelled());
    assert!(guard.is_lost());
    assert_eq!(
        guard.release().await.unwrap(),
        leasehold::ReleaseOutcome::Expired
    );
}

/// Wait for `lost()` and check it fired no later than the guard's deadline.
async fn assert_lost_before_deadline(guard: &leasehold::LockGuard) -> LostReason {
    let reason = tokio::time::timeout(5 * SECOND, guard.lost())
        .await
        .expect("lost() fired");
    let fired_at = std::time::Instant::now();
    let deadline = guard.valid_until();
    // The deadline sits a drift allowance before the server lets the key go; a timer that
    // fires late on a busy machine must still fire within that allowance, before anyone
    // else could be granted the lock.
    let allowance = leasehold::lease::drift(guard.ttl());
    assert!(
        fired_at <= deadline + allowance,
        "fired {:?} after valid_until (allowance {allowance:?})",
        fired_at.saturating_duration_since(deadline)
    );
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_fires_lost_no_later_than_valid_until() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let guard = c
        .lock("paused")
        .unwrap()
        .ttl(SECOND)
        .auto_renew(true)
        .acquire()
        .await
        .unwrap();
    let pause = server.pause();
    let reason = assert_lost_before_deadline(&guard).await;
    assert_eq!(reason, LostReason::DeadlinePassed);
    pause.resume();
    drop(guard);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_network_fires_lost_no_later_than_valid_until() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let c = client(&proxy.url());
    let guard = c
        .lock("stalled-lease")
        .unwrap()
        .ttl(SECOND)
        .auto_renew(true)
        .acquire()
        .await
        .unwrap();
    let stall = proxy.stall();
    let reason = assert_lost_before_deadline(&guard).await;
    assert_eq!(reason, LostReason::DeadlinePassed);
    drop(stall);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_lease_without_renewal_fires_lost_at_its_deadline() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let guard = c
        .lock("fixed")
        .unwrap()
        .ttl(Duration::from_millis(300))
        .auto_renew(false)
        .acquire()
        .await
        .unwrap();
    assert_eq!(guard.renew_every(), None);
    let reason = assert_lost_before_deadline(&guard).await;
    assert_eq!(reason, LostReason::DeadlinePassed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_persistence_tells_holders_their_lease_is_lost() {
    let mut server = RedisServer::start();
    let c = client(&server.url());
    let guard = c
        .lock("restarted")
        .unwrap()
        .ttl(2 * SECOND)
        .auto_renew(true)
        .acquire()
        .await
        .unwrap();
    server.restart();
    let reason = tokio::time::timeout(3 * SECOND, guard.lost())
        .await
        .expect("lost() fired");
    assert!(
        matches!(
            reason,
            LostReason::ServerRestarted | LostReason::Expired | LostReason::DeadlinePassed
        ),
        "{reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contenders_in_one_process_never_share_leadership_state() {
    // Seed 001: a shared `locked` flag overwritten by another thread's failed tryLock.
    let server = RedisServer::start();
    let c = client(&server.url());
    let election_a = c.election("leader").unwrap().ttl(SECOND).label("node-a");
    let election_b = c.election("leader").unwrap().ttl(SECOND).label("node-b");
    let a = election_a.campaign().await.unwrap();
    let mut a_state = a.watch();
    let err = election_b.try_campaign().await.unwrap_err();
    assert!(err.is_contended(), "{err}");
    assert!(
        a.is_leader(),
        "the loser's failed attempt changed the winner's state"
    );
    assert!(*a_state.borrow_and_update());
    let leader = election_b.leader().await.unwrap().expect("someone leads");
    assert_eq!(leader.metadata.label.as_deref(), Some("node-a"));
    assert_eq!(leader.metadata.pid, Some(std::process::id()));

    // B waits; A resigns; B leads, with a larger fencing token; A's state says so.
    let b_task = tokio::spawn(async move { election_b.campaign().await });
    let a_token = a.fencing_token();
    let a_lease = a.lease();
    a.resign().await.unwrap();
    assert!(a_lease.is_lost());
    let b = tokio::time::timeout(5 * SECOND, b_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(b.is_leader());
    assert!(b.fencing_token() > a_token);
    poll_until(SECOND, "A's watch to report the end of its term", || {
        let v = *a_state.borrow();
        async move { !v }
    })
    .await;
    let leader = election_a.leader().await.unwrap().expect("B leads");
    assert_eq!(leader.metadata.label.as_deref(), Some("node-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_is_lost_when_the_leaders_lease_is_taken_away() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let leadership = c
        .election("fragile")
        .unwrap()
        .ttl(SECOND)
        .campaign()
        .await
        .unwrap();
    let mut watch = leadership.watch();
    let _: () = redis::cmd("DEL")
        .arg("leasehold:{fragile}")
        .query_async(&mut con)
        .await
        .unwrap();
    tokio::time::timeout(2 * SECOND, watch.wait_for(|leading| !leading))
        .await
        .unwrap()
        .unwrap();
    assert!(!leadership.is_leader());
    assert_eq!(leadership.lost().await, LostReason::Expired);
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_work_is_cancelled_when_the_lease_is_lost() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let lock = c.lock("scoped").unwrap().ttl(SECOND).auto_renew(true);
    let started = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let run = {
        let (started, dropped) = (started.clone(), dropped.clone());
        tokio::spawn(async move {
            lock.run(|_lease| async move {
                let _flag = DropFlag(dropped);
                started.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(30)).await; // "work" that would outlive the lock
                "finished"
            })
            .await
        })
    };
    poll_until(5 * SECOND, "the work to start", || {
        let s = started.load(Ordering::SeqCst);
        async move { s }
    })
    .await;
    let _: () = redis::cmd("DEL")
        .arg("leasehold:{scoped}")
        .query_async(&mut con)
        .await
        .unwrap();
    let result = tokio::time::timeout(2 * SECOND, run)
        .await
        .expect("run returned")
        .unwrap();
    let err = result.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::LeaseLost(LostReason::Expired),
        "{err}"
    );
    assert!(err.is_lease_lost());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the work's future was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_work_in_notify_mode_finishes_and_reports_the_loss() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let lock = c
        .lock("notified")
        .unwrap()
        .ttl(SECOND)
        .auto_renew(true)
        .on_lost(OnLost::Notify);
    let mut con2 = con.clone();
    let result = lock
        .run(|lease| async move {
            let _: () = redis::cmd("DEL")
                .arg("leasehold:{notified}")
                .query_async(&mut con2)
                .await
                .unwrap();
            let reason = lease.lost().await;
            format!("saw {reason:?}")
        })
        .await;
    assert_eq!(
        result.unwrap_err().kind(),
        ErrorKind::LeaseLost(LostReason::Expired)
    );
    assert!(!exists(&mut con, "leasehold:{notified}").await);
    // And without a loss, run returns the work's output and releases.
    let ok = c
        .lock("notified")
        .unwrap()
        .run(|lease| async move { lease.fencing_token() })
        .await
        .unwrap();
    assert!(ok > 0);
    assert!(!exists(&mut con, "leasehold:{notified}").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_leases_are_renewed_by_a_bounded_number_of_round_trips() {
    let server = RedisServer::start();
    // Renewals every second of 3 s leases may wait 1.5 s for a reply.
    let c = leasehold::Client::builder(server.url())
        .response_timeout(SECOND * 3 / 2)
        .build()
        .unwrap();
    let mut guards = Vec::with_capacity(10_000);
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..10 {
        let c = c.clone();
        tasks.spawn(async move {
            let mut out = Vec::with_capacity(1_000);
            for i in 0..1_000 {
                let lock = c
                    .lock(&format!("many-{chunk}-{i}"))
                    .unwrap()
                    .ttl(3 * SECOND)
                    .renew_every(SECOND);
                out.push(lock.try_acquire().await.unwrap());
            }
            out
        });
    }
    while let Some(out) = tasks.join_next().await {
        guards.extend(out.unwrap());
    }
    let before = c.renewal_stats();
    let t0 = Instant::now();
    tokio::time::sleep(3 * SECOND).await; // three renewal periods: the scenario itself
    let after = c.renewal_stats();
    let periods = t0.elapsed().as_secs_f64();
    let renewed = after.renewed - before.renewed;
    let calls = after.calls - before.calls;
    assert!(
        renewed as f64 >= 10_000.0 * (periods - 1.0),
        "renewed {renewed} in {periods:.1} periods"
    );
    // Batched: at most a window's worth of calls per period plus one per 1,000 leases.
    assert!(
        (calls as f64) / periods <= 30.0,
        "{calls} calls in {periods:.1} periods"
    );
    assert!(guards.iter().all(|g| !g.is_lost()));
    assert_eq!(after.refused, 0);
    drop(guards);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_holder_metadata_ttl_token_hold_count_and_waiters() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let other = client(&server.url());
    let info = c.inspect("inspected").await.unwrap();
    assert!(info.holder.is_none());
    assert_eq!(info.waiters, 0);

    let owner = Owner::new();
    let lock = c
        .lock("inspected")
        .unwrap()
        .ttl(10 * SECOND)
        .auto_renew(false)
        .label("nightly-job")
        .owner(&owner);
    let outer = lock.acquire().await.unwrap();
    let inner = lock.acquire().await.unwrap();
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move {
            other
                .lock("inspected")
                .unwrap()
                .acquire_timeout(10 * SECOND)
                .await
                .map(|g| g.fencing_token())
        })
    };
    poll_until(5 * SECOND, "the waiter to register", || {
        let c = c.clone();
        async move { c.inspect("inspected").await.unwrap().waiters == 1 }
    })
    .await;
    let info = c.inspect("inspected").await.unwrap();
    let holder = info.holder.expect("held");
    assert_eq!(holder.owner_id, owner.id());
    assert_eq!(holder.fencing_token, outer.fencing_token());
    assert_eq!(holder.hold_count, 2);
    let ttl = holder.ttl_remaining.expect("a lease has a TTL");
    assert!(ttl > 9 * SECOND && ttl <= 10 * SECOND);
    assert_eq!(holder.metadata.label.as_deref(), Some("nightly-job"));
    assert_eq!(holder.metadata.pid, Some(std::process::id()));
    assert!(holder.metadata.host.is_some());
    assert_eq!(info.last_token, Some(outer.fencing_token()));
    let json = serde_json::to_value(c.inspect("inspected").await.unwrap()).unwrap();
    assert_eq!(json["holder"]["metadata"]["label"], "nightly-job");
    inner.release().await.unwrap();
    outer.release().await.unwrap();
    let next = waiter.await.unwrap().unwrap();
    assert!(next > holder.fencing_token);
}
