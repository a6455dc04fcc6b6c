//! The blocking API (`leasehold::blocking`) used from plain threads against a real
//! redis-server: mutual exclusion and fencing, release on drop (from any thread, after
//! the client is gone, and drained when the last handle goes), semaphores and read-write
//! locks, loss detection, invalid input, and how it behaves next to async code.
//!
//! The tests use `std::thread` only: no Tokio runtime exists on the test's threads, except
//! in the two tests about async code, which say so in their names.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use leasehold::{blocking, ErrorKind, LostReason, ReleaseOutcome};
use leasehold_testkit::{poll_until, RedisServer};

const LIMIT: Duration = Duration::from_secs(10);

/// A blocking client with short connection timeouts.
fn client(server: &RedisServer) -> blocking::Client {
    blocking::Client::from_builder(
        leasehold::Client::builder(server.url())
            .connect_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(500)),
    )
    .expect("blocking client")
}

fn exists(server: &RedisServer, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query::<bool>(&mut server.connection())
        .expect("EXISTS")
}

fn assert_no_runtime_here() {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "this test must drive the blocking API from plain threads"
    );
}

#[test]
fn blocking_handles_and_guards_can_be_shared_with_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<blocking::Client>();
    send_sync::<blocking::Lock>();
    send_sync::<blocking::Semaphore>();
    send_sync::<blocking::RwLock>();
    send_sync::<blocking::LockGuard>();
    send_sync::<blocking::Permit>();
    send_sync::<blocking::ReadGuard>();
    send_sync::<blocking::WriteGuard>();
    send_sync::<blocking::LockSet>();
    send_sync::<blocking::LockSetGuard>();
}

#[test]
fn plain_threads_taking_a_blocking_lock_never_overlap_or_lose_an_update() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let client = client(&server);
    let lock = client
        .lock("blocking/counter")
        .unwrap()
        .wait(Duration::from_secs(30));

    const THREADS: usize = 4;
    const ROUNDS: u64 = 25;
    // Read-modify-write in two steps, with a yield between: only the lock makes it safe.
    let counter = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (lock, counter, inside, tokens) = (
                lock.clone(),
                counter.clone(),
                inside.clone(),
                tokens.clone(),
            );
            thread::spawn(move || {
                assert_no_runtime_here();
                for round in 0..ROUNDS {
                    let guard = lock.acquire().expect("acquire");
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two threads held the lock at once"
                    );
                    tokens.lock().unwrap().push(guard.fencing_token());
                    let seen = counter.load(Ordering::SeqCst);
                    thread::yield_now();
                    counter.store(seen + 1, Ordering::SeqCst);
                    inside.fetch_sub(1, Ordering::SeqCst);
                    if (round + t as u64).is_multiple_of(2) {
                        assert_eq!(guard.release().expect("release"), ReleaseOutcome::Released);
                    } else {
                        drop(guard); // released in the background
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread panicked");
    }

    assert_eq!(counter.load(Ordering::SeqCst), THREADS as u64 * ROUNDS);
    let tokens = tokens.lock().unwrap();
    assert_eq!(tokens.len(), THREADS * ROUNDS as usize);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens must strictly increase in grant order: {tokens:?}"
    );
    assert!(
        client.shutdown_timeout(LIMIT),
        "background releases drained"
    );
    assert!(!exists(&server, "leasehold:{blocking/counter}"));
}

#[test]
fn dropping_a_blocking_guard_on_a_plain_thread_releases_the_lock() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let holder = client(&server);
    let other = client(&server);
    // A long lease: only a release can free the lock within the test's deadline.
    let guard = holder
        .lock("blocking/dropped")
        .unwrap()
        .ttl(Duration::from_secs(120))
        .auto_renew(false)
        .acquire()
        .unwrap();
    let theirs = other.lock("blocking/dropped").unwrap();
    assert_eq!(
        theirs.try_acquire().unwrap_err().kind(),
        ErrorKind::Contended
    );

    thread::spawn(move || {
        assert_no_runtime_here();
        drop(guard);
    })
    .join()
    .unwrap();

    let mut taken = None;
    assert!(
        poll_until(LIMIT, || {
            taken = theirs.try_acquire().ok();
            taken.is_some()
        }),
        "the dropped guard's lock was never released"
    );
    assert!(taken.unwrap().release().unwrap().is_released());
}

#[test]
fn a_blocking_guard_dropped_after_its_client_is_still_released() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let holder = client(&server);
    let guard = holder
        .lock("blocking/orphan")
        .unwrap()
        .ttl(Duration::from_secs(120))
        .auto_renew(false)
        .acquire()
        .unwrap();
    drop(holder); // the guard keeps the client's runtime alive
    assert!(guard.extend(Duration::from_secs(120)).is_ok());
    thread::spawn(move || drop(guard)).join().unwrap();
    // The guard was the last handle: its drop drained the release before returning.
    assert!(!exists(&server, "leasehold:{blocking/orphan}"));
}

#[test]
fn dropping_the_last_blocking_handle_finishes_pending_releases_first() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    for round in 0..5 {
        let client = client(&server);
        let guard = client
            .lock("blocking/drain")
            .unwrap()
            .ttl(Duration::from_secs(120))
            .auto_renew(false)
            .try_acquire()
            .unwrap();
        drop(guard); // release spawned in the background...
        drop(client); // ...and finished before the last handle's drop returns
        assert!(
            !exists(&server, "leasehold:{blocking/drain}"),
            "round {round}: the lock outlived its last handle"
        );
    }
}

#[test]
fn a_capacity_two_blocking_semaphore_never_has_more_than_two_holders() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let client = client(&server);
    let sem = client
        .semaphore("blocking/pool", 2)
        .unwrap()
        .wait(Duration::from_secs(30));

    // Two permits are there, a third is not.
    let a = sem.try_acquire().unwrap();
    let b = sem.try_acquire().unwrap();
    assert_ne!(a.fencing_token(), b.fencing_token());
    assert_eq!(sem.held().unwrap(), 2);
    assert_eq!(sem.try_acquire().unwrap_err().kind(), ErrorKind::Contended);
    assert!(a.release().unwrap().is_released());
    drop(b);
    assert!(poll_until(LIMIT, || sem.held().unwrap() == 0));

    // Six threads compete; never more than two hold at once.
    let holders = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (sem, holders, most) = (sem.clone(), holders.clone(), most.clone());
            thread::spawn(move || {
                for _ in 0..5 {
                    let permit = sem.acquire().expect("permit");
                    let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(2)); // simulated work while holding
                    holders.fetch_sub(1, Ordering::SeqCst);
                    drop(permit);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread panicked");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} threads held permits at once"
    );
}

#[test]
fn blocking_rwlock_readers_share_and_a_writer_waits_for_them() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let client = client(&server);
    let rw = client
        .rwlock("blocking/config")
        .unwrap()
        .wait(Duration::from_secs(30));

    // Two readers on two threads hold it together.
    let r1 = rw.read().unwrap();
    let r2 = {
        let rw = rw.clone();
        thread::spawn(move || rw.try_read().expect("a second reader shares the lock"))
            .join()
            .unwrap()
    };
    assert_ne!(r1.fencing_token(), r2.fencing_token());
    assert_eq!(rw.try_write().unwrap_err().kind(), ErrorKind::Contended);

    // A writer waits on its own thread until both readers are gone.
    let has_it = Arc::new(AtomicBool::new(false));
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let writer = {
        let (rw, has_it) = (rw.clone(), has_it.clone());
        thread::spawn(move || {
            let w = rw.write().expect("write lock");
            has_it.store(true, Ordering::SeqCst);
            let token = w.fencing_token();
            release_rx.recv().unwrap();
            assert!(w.release().unwrap().is_released());
            token
        })
    };
    // Once the writer waits, new readers are refused (writer preference).
    assert!(
        poll_until(LIMIT, || rw.try_read().is_err()),
        "the waiting writer never registered"
    );
    assert!(
        !has_it.load(Ordering::SeqCst),
        "the writer got the lock while readers held it"
    );
    let reader_tokens = [r1.fencing_token(), r2.fencing_token()];
    assert!(r1.release().unwrap().is_released());
    assert!(
        !has_it.load(Ordering::SeqCst),
        "the writer got the lock while a reader held it"
    );
    thread::spawn(move || drop(r2)).join().unwrap();
    assert!(
        poll_until(LIMIT, || has_it.load(Ordering::SeqCst)),
        "the writer never got the lock after the readers left"
    );
    assert_eq!(rw.try_read().unwrap_err().kind(), ErrorKind::Contended);
    release_tx.send(()).unwrap();
    let writer_token = writer.join().unwrap();
    assert!(reader_tokens.iter().all(|t| *t < writer_token));
    drop(rw.try_read().expect("readers are let in after the writer"));
}

#[test]
fn a_blocking_guard_learns_that_its_lease_was_lost() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let client = client(&server);
    let guard = client
        .lock("blocking/short")
        .unwrap()
        .ttl(Duration::from_millis(200))
        .auto_renew(false)
        .acquire()
        .unwrap();
    let token = guard.cancellation_token();
    assert_eq!(guard.wait_lost(Duration::from_millis(1)), None);
    let reason = guard.wait_lost(LIMIT).expect("the unrenewed lease is lost");
    assert!(
        matches!(reason, LostReason::DeadlinePassed | LostReason::Expired),
        "{reason:?}"
    );
    assert!(guard.is_lost() && token.is_cancelled());
    assert!(guard.extend(Duration::from_secs(1)).is_err());
}

#[test]
fn invalid_input_to_the_blocking_api_is_an_error_not_a_panic() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let err = blocking::Client::new("http://localhost:6379").unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let client = client(&server);
    for err in [
        client.semaphore("blocking/none", 0).unwrap_err(),
        client.semaphore("blocking/many", u32::MAX).unwrap_err(),
        client.lock("").unwrap_err(),
        client.lock("a{b}").unwrap_err(),
        client.rwlock("").unwrap_err(),
        client
            .lock("ok")
            .unwrap()
            .ttl(Duration::ZERO)
            .check()
            .unwrap_err(),
        client
            .lock("ok")
            .unwrap()
            .ttl(Duration::ZERO)
            .auto_renew(false)
            .try_acquire()
            .unwrap_err(),
        client
            .lock("ok")
            .unwrap()
            .acquire_timeout(Duration::from_secs(365 * 24 * 3600))
            .unwrap_err(),
        client
            .semaphore("ok", 2)
            .unwrap()
            .with_capacity(0)
            .try_acquire()
            .unwrap_err(),
    ] {
        assert!(err.is_invalid_input(), "{err}");
    }
    let guard = client.lock("ok").unwrap().try_acquire().unwrap();
    assert!(guard.extend(Duration::ZERO).unwrap_err().is_invalid_input());
    assert!(guard.release().unwrap().is_released());
    client.ping().unwrap();
}

#[test]
fn a_shut_down_blocking_client_refuses_new_acquires() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let client = client(&server);
    let lock = client.lock("blocking/closed").unwrap();
    drop(lock.try_acquire().unwrap());
    client.shutdown();
    assert!(!exists(&server, "leasehold:{blocking/closed}"));
    assert_eq!(lock.try_acquire().unwrap_err().kind(), ErrorKind::Shutdown);
}

#[test]
fn blocking_calls_work_inside_spawn_blocking_of_an_async_program() {
    let server = RedisServer::start();
    let client = client(&server);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let lock = client.lock("blocking/in-async").unwrap();
    let outcome = rt
        .block_on(async move {
            tokio::task::spawn_blocking(move || lock.try_acquire().unwrap().release().unwrap())
                .await
        })
        .unwrap();
    assert!(outcome.is_released());
}

#[test]
fn dropping_blocking_handles_inside_async_code_does_not_panic_and_still_releases() {
    let server = RedisServer::start();
    let client = client(&server);
    let guard = client
        .lock("blocking/dropped-in-async")
        .unwrap()
        .ttl(Duration::from_secs(120))
        .auto_renew(false)
        .try_acquire()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        drop(client);
        drop(guard); // the last handle: drained on a thread of its own
    });
    assert!(
        poll_until(LIMIT, || !exists(
            &server,
            "leasehold:{blocking/dropped-in-async}"
        )),
        "the lock dropped in async code was never released"
    );
}

#[test]
fn a_blocking_lock_set_is_held_all_or_none_from_plain_threads_and_released_on_drop() {
    assert_no_runtime_here();
    let server = RedisServer::start();
    let a = client(&server);
    let b = client(&server);
    let held = a
        .locks(["blocking/y", "blocking/x"])
        .unwrap()
        .ttl(Duration::from_secs(120))
        .acquire()
        .unwrap();
    let tokens = held.fencing_tokens();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0].0, "blocking/x", "canonical order");
    assert!(!held.is_lost());
    assert_eq!(held.wait_lost(Duration::from_millis(20)), None);
    let theirs = b.locks(["blocking/x", "blocking/z"]).unwrap();
    assert_eq!(
        theirs.try_acquire().unwrap_err().kind(),
        ErrorKind::Contended
    );
    assert!(!exists(&server, "leasehold:{blocking/z}"), "all or none");
    thread::spawn(move || {
        assert_no_runtime_here();
        drop(held);
    })
    .join()
    .unwrap();
    let mut taken = None;
    assert!(
        poll_until(LIMIT, || {
            taken = theirs.try_acquire().ok();
            taken.is_some()
        }),
        "the dropped set was never released"
    );
    for (name, outcome) in taken.unwrap().release().unwrap() {
        assert_eq!(outcome, ReleaseOutcome::Released, "{name}");
    }
}
