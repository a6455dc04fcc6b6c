//! Caller-chosen owner ids: a process killed while holding a lock, restarted under the
//! same owner id, re-enters its hold; another id still waits.
//!
//! The "process" is this test binary run again as a child: with `LEASEHOLD_CHILD_URL` set,
//! the child test acquires the lock, prints its fencing token and sleeps until it is killed.

mod common;

use std::time::Duration;

use common::{hget, steady};
use leasehold::{Owner, ReleaseOutcome};
use leasehold_testkit::RedisServer;

const OWNER: &str = "nightly-invoices@host-7";
const LOCK: &str = "invoices";

/// Runs only as the child of the test below; does nothing in a plain test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_holds_the_lock_until_killed() {
    let Ok(url) = std::env::var("LEASEHOLD_CHILD_URL") else {
        return;
    };
    let client = steady(&url);
    let owner = Owner::named(OWNER).unwrap();
    let guard = client
        .lock(LOCK)
        .unwrap()
        .ttl(Duration::from_secs(30))
        .owner(&owner)
        .acquire()
        .await
        .unwrap();
    println!("TOKEN {}", guard.fencing_token());
    // Killed long before this ends; bounded so a lost parent cannot leave it running.
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("the parent never killed this child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_reenters_the_hold_of_its_named_owner() {
    if std::env::var_os("LEASEHOLD_CHILD_URL").is_some() {
        return;
    }
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let (mut child, token) = common::child_test(
        "child_holds_the_lock_until_killed",
        "LEASEHOLD_CHILD_URL",
        &server.url(),
        "TOKEN ",
    );
    // SIGKILL: nothing releases the hold, which lives on for the rest of its 30 s lease.
    child.kill().unwrap();
    child.wait().unwrap();

    let client = steady(&server.url());
    let lock = client.lock(LOCK).unwrap().ttl(Duration::from_secs(30));
    // Another owner finds the dead process's hold still live.
    assert!(lock.try_acquire().await.unwrap_err().is_contended());

    // The restarted process, under the same owner id, re-enters at once.
    let owner = Owner::named(OWNER).unwrap();
    let guard = lock.clone().owner(&owner).try_acquire().await.unwrap();
    assert_eq!(guard.fencing_token(), token, "same grant, same token");
    assert_eq!(
        guard.hold_count(),
        2,
        "the earlier life's hold still counts"
    );
    assert_eq!(
        hget(&mut con, lock.redis_key(), "owner").await.as_deref(),
        Some(OWNER)
    );
    // Releasing this hold leaves the earlier one, so the lock is not yet free.
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(
        hget(&mut con, lock.redis_key(), "count").await.as_deref(),
        Some("1")
    );
    assert!(lock.try_acquire().await.unwrap_err().is_contended());
}

#[test]
fn a_named_owner_keeps_its_id_and_bad_ids_are_refused() {
    let owner = Owner::named(OWNER).unwrap();
    assert_eq!(owner.id(), OWNER);
    assert_eq!(owner, Owner::named(OWNER).unwrap());
    for bad in ["", "two words", "line\nbreak", "ünïcode"] {
        assert!(Owner::named(bad).unwrap_err().is_invalid_input(), "{bad:?}");
    }
}
