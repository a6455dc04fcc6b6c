//! Read-write locks: readers share, a writer excludes everyone, a waiting writer keeps new
//! readers out (writer preference) but only while it really waits, and every reader holds
//! a lease of its own.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, poll_until, pttl, quick, steady, zcard};
use leasehold::{Client, LostReason, ReadGuard, ReleaseOutcome, RwLock, WriteGuard};
use leasehold_testkit::{FaultProxy, RedisServer};

type Con = redis::aio::MultiplexedConnection;

fn rw(c: &Client, name: &str) -> RwLock {
    c.rwlock(name).unwrap()
}

/// The readers set (request id -> lease expiry, ms) of read-write lock `name`.
fn readers_key(name: &str) -> String {
    format!("leasehold:{{{name}}}:rw:readers")
}

/// The readers' tokens hash (request id -> fencing token).
fn reader_tokens_key(name: &str) -> String {
    format!("leasehold:{{{name}}}:rw:readers:tokens")
}

/// The waiting writers set (request id -> place expiry, ms).
fn writers_key(name: &str) -> String {
    format!("leasehold:{{{name}}}:rw:writers")
}

/// The writer's lock hash.
fn writer_key(name: &str) -> String {
    format!("leasehold:{{{name}}}:rw")
}

/// Wait (polling) until `n` writers are registered as waiting for `name`.
async fn until_writers_wait(con: &Con, name: &str, n: u64) {
    let key = writers_key(name);
    poll_until(
        Duration::from_secs(3),
        &format!("{n} waiting writer(s)"),
        || {
            let mut con = con.clone();
            let key = key.clone();
            async move { zcard(&mut con, &key).await == n }
        },
    )
    .await;
}

/// The place expiry (ms, server clock) of the one waiting writer of `name`.
async fn place_expiry(con: &Con, name: &str) -> u64 {
    let top: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(writers_key(name))
        .arg(0)
        .arg(0)
        .arg("WITHSCORES")
        .query_async(&mut con.clone())
        .await
        .expect("ZRANGE");
    top.first().map_or(0, |(_, score)| *score)
}

/// Spawn `read_timeout(wait)`; the task returns when it got the lock, and the guard.
fn spawn_read(lock: &RwLock, wait: Duration) -> tokio::task::JoinHandle<(Instant, ReadGuard)> {
    let lock = lock.clone();
    tokio::spawn(async move {
        let guard = lock.read_timeout(wait).await.expect("read");
        (Instant::now(), guard)
    })
}

/// Spawn `write_timeout(wait)`; the task returns when it got the lock, and the guard.
fn spawn_write(lock: &RwLock, wait: Duration) -> tokio::task::JoinHandle<(Instant, WriteGuard)> {
    let lock = lock.clone();
    tokio::spawn(async move {
        let guard = lock.write_timeout(wait).await.expect("write");
        (Instant::now(), guard)
    })
}

/// Await a spawned acquire, at most `limit`.
async fn joined<T>(task: tokio::task::JoinHandle<T>, limit: Duration, what: &str) -> T {
    tokio::time::timeout(limit, task)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// For `window` (the scenario: a stretch in which a wrong grant would show), `task` stays
/// unfinished.
async fn still_waiting<T>(task: &tokio::task::JoinHandle<T>, window: Duration, what: &str) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        assert!(!task.is_finished(), "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await; // sampling period
    }
    assert!(!task.is_finished(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_two_clients_share_the_lock() {
    const NAME: &str = "shared";
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let (c1, c2) = (steady(&server.url()), steady(&server.url()));
    let (rw1, rw2) = (rw(&c1, NAME), rw(&c2, NAME));
    let readers = vec![
        rw1.try_read().await.unwrap(),
        rw1.try_read().await.unwrap(),
        rw2.read_timeout(Duration::from_secs(1)).await.unwrap(),
        rw2.try_read().await.unwrap(),
    ];
    assert_eq!(zcard(&mut con, &readers_key(NAME)).await, 4);
    let mut tokens: Vec<u64> = readers.iter().map(|r| r.fencing_token()).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 4, "each reader has its own token");
    for lock in [&rw1, &rw2] {
        let err = lock.try_write().await.unwrap_err();
        assert!(err.is_contended(), "{err}");
    }
    for r in readers {
        assert_eq!(r.lost_reason(), None);
        assert_eq!(r.release().await.unwrap(), ReleaseOutcome::Released);
    }
    let w = rw2.try_write().await.unwrap();
    assert!(w.fencing_token() > *tokens.iter().max().unwrap());
    w.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_excludes_readers_and_writers_and_a_waiting_reader_enters_only_after_its_release()
{
    const NAME: &str = "exclusive";
    let server = RedisServer::start();
    let (c1, c2) = (steady(&server.url()), steady(&server.url()));
    let (rw1, rw2) = (rw(&c1, NAME), rw(&c2, NAME));
    let w = rw1.try_write().await.unwrap();
    for lock in [&rw1, &rw2] {
        let err = lock.try_read().await.unwrap_err();
        assert!(err.is_contended(), "try_read: {err}");
        let err = lock.try_write().await.unwrap_err();
        assert!(err.is_contended(), "try_write: {err}");
    }
    let reader = spawn_read(&rw2, Duration::from_secs(5));
    still_waiting(
        &reader,
        Duration::from_millis(200),
        "a reader got in while the writer held",
    )
    .await;
    let w_token = w.fencing_token();
    let releasing = Instant::now();
    assert_eq!(w.release().await.unwrap(), ReleaseOutcome::Released);
    let (got, r) = joined(reader, Duration::from_secs(3), "the waiting reader").await;
    assert!(
        got >= releasing,
        "the reader got in before the writer released"
    );
    assert!(
        got - releasing < Duration::from_secs(1),
        "woken by the release: {:?}",
        got - releasing
    );
    assert!(r.fencing_token() > w_token);
    r.release().await.unwrap();
}

/// What the holders of one read-write lock see, checked under one mutex.
#[derive(Default)]
struct Shared {
    readers: u32,
    writer: bool,
    /// The highest fencing token any holder has seen so far.
    highest: u64,
    most_readers: u32,
    reads: u32,
    writes: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_and_writers_in_loops_never_overlap_and_each_writer_has_the_newest_token() {
    const NAME: &str = "mixed";
    const READERS: usize = 4;
    const WRITERS: usize = 2;
    const CYCLES: u32 = 8;
    let server = RedisServer::start();
    let clients: Vec<Client> = (0..2).map(|_| steady(&server.url())).collect();
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut tasks = Vec::new();
    for i in 0..READERS + WRITERS {
        let lock = rw(&clients[i % 2], NAME).wait(Duration::from_secs(10));
        let shared = shared.clone();
        let writer = i >= READERS;
        tasks.push(tokio::spawn(async move {
            for cycle in 0..CYCLES {
                if writer {
                    let w = lock
                        .write()
                        .await
                        .unwrap_or_else(|e| panic!("{i}/{cycle}: {e}"));
                    {
                        let mut s = shared.lock().unwrap();
                        assert!(!s.writer, "two writers at once");
                        assert_eq!(s.readers, 0, "a writer among readers");
                        assert!(
                            w.fencing_token() > s.highest,
                            "writer token {} not above {}",
                            w.fencing_token(),
                            s.highest
                        );
                        s.writer = true;
                        s.highest = w.fencing_token();
                        s.writes += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await; // the scenario
                    shared.lock().unwrap().writer = false;
                    assert!(w.release().await.unwrap().is_released());
                } else {
                    let r = lock
                        .read()
                        .await
                        .unwrap_or_else(|e| panic!("{i}/{cycle}: {e}"));
                    {
                        let mut s = shared.lock().unwrap();
                        assert!(!s.writer, "a reader beside the writer");
                        s.readers += 1;
                        s.most_readers = s.most_readers.max(s.readers);
                        s.highest = s.highest.max(r.fencing_token());
                        s.reads += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await; // the scenario
                    shared.lock().unwrap().readers -= 1;
                    assert!(r.release().await.unwrap().is_released());
                }
            }
        }));
    }
    for task in tasks {
        joined(task, Duration::from_secs(20), "a loop").await;
    }
    let s = shared.lock().unwrap();
    assert_eq!(s.reads, READERS as u32 * CYCLES);
    assert_eq!(s.writes, WRITERS as u32 * CYCLES);
    assert!(
        s.most_readers >= 2,
        "readers shared the lock at some point ({})",
        s.most_readers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_blocks_new_readers_and_goes_before_them() {
    const NAME: &str = "prefer-writers";
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let (ca, cw, cb) = (
        steady(&server.url()),
        steady(&server.url()),
        steady(&server.url()),
    );
    // A long place (refreshed every 10 s): W must be woken by A's release, not by a timer.
    let rww = rw(&cw, NAME).place_ttl(Duration::from_secs(30));
    let (rwa, rwb) = (rw(&ca, NAME), rw(&cb, NAME));
    let a = rwa.try_read().await.unwrap();
    let a_token = a.fencing_token();
    let writer = spawn_write(&rww, Duration::from_secs(5));
    until_writers_wait(&con, NAME, 1).await;
    let err = rwb.try_read().await.unwrap_err();
    assert!(
        err.is_contended(),
        "a new reader got in past a waiting writer"
    );
    let reader = spawn_read(&rwb, Duration::from_secs(5));
    still_waiting(
        &reader,
        Duration::from_millis(200),
        "reader B got in while writer W waited",
    )
    .await;
    assert!(!writer.is_finished(), "W got in while A read");

    let a_releasing = Instant::now();
    assert!(a.release().await.unwrap().is_released());
    let (w_got, w) = joined(writer, Duration::from_secs(3), "the waiting writer").await;
    assert!(w_got >= a_releasing);
    assert!(
        w_got - a_releasing < Duration::from_secs(1),
        "W was woken by the last reader's release: {:?}",
        w_got - a_releasing
    );
    assert!(!reader.is_finished(), "B got in before W");
    let mut con2 = con.clone();
    assert_eq!(zcard(&mut con2, &readers_key(NAME)).await, 0);
    still_waiting(
        &reader,
        Duration::from_millis(200),
        "reader B got in while W wrote",
    )
    .await;

    let w_token = w.fencing_token();
    assert!(w_token > a_token);
    let w_releasing = Instant::now();
    assert!(w.release().await.unwrap().is_released());
    let (b_got, b) = joined(reader, Duration::from_secs(3), "reader B").await;
    assert!(b_got >= w_releasing, "B got in before W released");
    assert!(b.fencing_token() > w_token);
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_gives_up_waiting_lets_readers_in_at_once_not_after_its_place_ttl() {
    const NAME: &str = "give-up";
    let place = Duration::from_secs(30);
    let server = RedisServer::start();
    let con = server.async_connection().await;
    let (cr, cw) = (steady(&server.url()), steady(&server.url()));
    let readers = rw(&cr, NAME);
    let writers = rw(&cw, NAME).place_ttl(place);
    let a = readers.try_read().await.unwrap();

    // Timed out.
    let timing_out = {
        let writers = writers.clone();
        tokio::spawn(async move { writers.write_timeout(Duration::from_millis(800)).await })
    };
    until_writers_wait(&con, NAME, 1).await;
    assert!(readers.try_read().await.unwrap_err().is_contended());
    let b = spawn_read(&readers, Duration::from_secs(10));
    let err = joined(timing_out, Duration::from_secs(3), "the writer's timeout")
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let gave_up = Instant::now();
    let (b_got, b) = joined(b, Duration::from_secs(3), "the reader after the timeout").await;
    assert!(
        b_got - gave_up < Duration::from_secs(2),
        "readers waited {:?} after the writer timed out",
        b_got - gave_up
    );
    until_writers_wait(&con, NAME, 0).await;
    b.release().await.unwrap();

    // Cancelled.
    let cancelled = {
        let writers = writers.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(800), writers.write())
                .await
                .is_err()
        })
    };
    until_writers_wait(&con, NAME, 1).await;
    assert!(readers.try_read().await.unwrap_err().is_contended());
    let b = spawn_read(&readers, Duration::from_secs(10));
    assert!(
        joined(cancelled, Duration::from_secs(3), "the cancelled writer").await,
        "the write was cancelled while it waited"
    );
    let gave_up = Instant::now();
    let (b_got, b) = joined(b, Duration::from_secs(3), "the reader after the cancel").await;
    assert!(
        b_got - gave_up < Duration::from_secs(2),
        "readers waited {:?} after the writer was cancelled",
        b_got - gave_up
    );
    until_writers_wait(&con, NAME, 0).await;
    b.release().await.unwrap();
    a.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_waiting_writer_blocks_readers_no_longer_than_its_place_ttl() {
    const NAME: &str = "cut-writer";
    let place = Duration::from_millis(600);
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let con = server.async_connection().await;
    let cr = steady(&server.url());
    let cw = client(&proxy.url());
    let readers = rw(&cr, NAME);
    let writers = rw(&cw, NAME).place_ttl(place);
    let a = readers.try_read().await.unwrap();
    let writer = {
        let writers = writers.clone();
        tokio::spawn(async move { writers.write_timeout(Duration::from_secs(2)).await })
    };
    until_writers_wait(&con, NAME, 1).await;
    // It refreshes its place while it waits: its expiry moves on.
    let first = place_expiry(&con, NAME).await;
    poll_until(
        Duration::from_secs(2),
        "the writer refreshes its place",
        || {
            let con = con.clone();
            async move { place_expiry(&con, NAME).await > first }
        },
    )
    .await;
    // The writer's process is cut off: no refresh and no leave reaches Redis any more.
    proxy.set_refuse_new(true);
    proxy.reset_all();
    let cut = Instant::now();
    let err = readers.try_read().await.unwrap_err();
    assert!(
        err.is_contended(),
        "its place still stands right after the cut"
    );
    let b = readers.read_timeout(Duration::from_secs(5)).await.unwrap();
    let blocked = cut.elapsed();
    eprintln!("readers blocked {blocked:?} by a cut-off writer with a {place:?} place");
    assert!(
        blocked <= place + Duration::from_millis(400),
        "readers were blocked {blocked:?} by a writer with a {place:?} place"
    );
    assert!(
        blocked >= Duration::from_millis(100),
        "the place lapsed suspiciously early ({blocked:?})"
    );
    let outcome = joined(writer, Duration::from_secs(8), "the cut-off writer").await;
    assert!(outcome.is_err(), "a cut-off writer cannot get the lock");
    b.release().await.unwrap();
    a.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_readers_lease_fires_only_that_readers_lost_signal() {
    const NAME: &str = "own-lease";
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = quick(&server.url());
    let lock = rw(&c, NAME)
        .ttl(Duration::from_millis(300))
        .auto_renew(true);
    let r1 = lock.try_read().await.unwrap();
    let r2 = lock.try_read().await.unwrap();
    assert_ne!(r1.fencing_token(), r2.fencing_token());
    // Held through several renewals first.
    let renewed = c.renewal_stats().renewed;
    poll_until(Duration::from_secs(3), "a few renewals", || {
        let n = c.renewal_stats().renewed;
        async move { n >= renewed + 4 }
    })
    .await;
    assert_eq!(r1.lost_reason(), None);
    assert_eq!(r2.lost_reason(), None);

    // An operator removes r1's lease at the server (found by its token).
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(readers_key(NAME))
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(members.len(), 2);
    let mut r1_member = None;
    for m in members {
        let t: Option<u64> = redis::cmd("HGET")
            .arg(reader_tokens_key(NAME))
            .arg(&m)
            .query_async(&mut con)
            .await
            .unwrap();
        if t == Some(r1.fencing_token()) {
            r1_member = Some(m);
        }
    }
    let r1_member = r1_member.expect("r1's member");
    let removed: i64 = redis::cmd("ZREM")
        .arg(readers_key(NAME))
        .arg(&r1_member)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let reason = tokio::time::timeout(Duration::from_secs(1), r1.lost())
        .await
        .expect("r1's loss signal fires at its next renewal");
    assert_eq!(reason, LostReason::Expired);
    // r2 keeps its lease, through more than two lease lengths.
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        assert_eq!(r2.lost_reason(), None);
        tokio::time::sleep(Duration::from_millis(50)).await; // the scenario: keep reading
    }
    r2.extend(Duration::from_secs(1)).await.unwrap();
    assert!(lock.try_write().await.unwrap_err().is_contended());
    assert_eq!(r1.release().await.unwrap(), ReleaseOutcome::Expired);
    assert_eq!(r2.release().await.unwrap(), ReleaseOutcome::Released);
    lock.try_write().await.unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rwlock_key_has_a_ttl_except_the_fencing_counter() {
    const NAME: &str = "rw-ttl";
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let (cr, cw) = (quick(&server.url()), quick(&server.url()));
    let readers = rw(&cr, NAME)
        .ttl(Duration::from_millis(400))
        .auto_renew(true);
    let writers = rw(&cw, NAME).place_ttl(Duration::from_millis(300));
    let r = readers.try_read().await.unwrap();
    let writer = spawn_write(&writers, Duration::from_secs(5));
    until_writers_wait(&con, NAME, 1).await;
    for key in [
        readers_key(NAME),
        reader_tokens_key(NAME),
        writers_key(NAME),
    ] {
        let ttl = pttl(&mut con, &key).await;
        assert!(ttl > 0, "{key} has PTTL {ttl}");
    }
    let fence = format!("leasehold:{{{NAME}}}:rw:fence");
    assert_eq!(
        pttl(&mut con, &fence).await,
        -1,
        "the fencing counter has no TTL"
    );
    common::assert_every_key_has_a_ttl(&mut con, NAME).await;
    drop(r);
    let (_, w) = joined(writer, Duration::from_secs(3), "the writer").await;
    let ttl = pttl(&mut con, &writer_key(NAME)).await;
    assert!(ttl > 0, "the writer's hash has PTTL {ttl}");
    common::assert_every_key_has_a_ttl(&mut con, NAME).await;
    w.release().await.unwrap();
    common::assert_every_key_has_a_ttl(&mut con, NAME).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_to_a_read_or_write_acquire_still_grants_exactly_one_hold() {
    use leasehold::scripts::{RW_READ, RW_WRITE};
    use leasehold_testkit::{Match, Rule};
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let c = client(&proxy.url());
    let lock = rw(&c, "seed004");
    let script = |code: &str| Match::command("EVALSHA").and(Match::arg_contains(common::sha(code)));

    // Load both scripts first, so the dropped replies are those of scripts that ran
    // (not a NOSCRIPT error).
    lock.try_read().await.unwrap().release().await.unwrap();
    lock.try_write().await.unwrap().release().await.unwrap();
    // The read acquire runs at the server, but its reply is lost: the retry of the same
    // request must report that grant, not add a second reader.
    let dropped = proxy.add_rule(Rule::reply_to(script(RW_READ.plain)).first(1).drop());
    let reader = lock.read().await.unwrap();
    assert_eq!(dropped.hits(), 1, "the first reply was dropped");
    assert_eq!(zcard(&mut con, &readers_key("seed004")).await, 1);
    assert_eq!(reader.release().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(zcard(&mut con, &readers_key("seed004")).await, 0);

    let dropped = proxy.add_rule(Rule::reply_to(script(RW_WRITE.plain)).first(1).drop());
    let writer = lock.write().await.unwrap();
    assert_eq!(dropped.hits(), 1, "the first reply was dropped");
    assert_eq!(writer.hold_count(), 1);
    assert_eq!(writer.release().await.unwrap(), ReleaseOutcome::Released);
    let mut check = con.clone();
    assert!(!common::exists(&mut check, &writer_key("seed004")).await);
    // Nothing is left behind: a new writer gets the lock at once.
    let again = lock.try_write().await.unwrap();
    again.release().await.unwrap();
    c.shutdown().await;
}
