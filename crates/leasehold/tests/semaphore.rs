//! Semaphores: never more than N holders (also when replies are lost), permits of crashed
//! holders come back after their lease, capacity changes revoke no one, and every permit
//! is a lease of its own with its own renewal, loss signal and fencing token.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, poll_until, pttl, quick, sha, steady};
use leasehold::scripts::SEM_ACQUIRE;
use leasehold::{Client, ErrorKind, LostReason, Permit, ReleaseOutcome, Semaphore};
use leasehold_testkit::{FaultProxy, Match, RedisServer, Rule};

type Con = redis::aio::MultiplexedConnection;

/// The permits set of semaphore `name` (request id -> expiry, ms).
fn set_key(name: &str) -> String {
    format!("leasehold:{{{name}}}:sem")
}

/// The permit tokens hash of semaphore `name` (request id -> fencing token).
fn tokens_key(name: &str) -> String {
    format!("leasehold:{{{name}}}:sem:tokens")
}

/// The fencing counter of semaphore `name`.
fn fence_key(name: &str) -> String {
    format!("leasehold:{{{name}}}:sem:fence")
}

/// The member (request id) of the permit with fencing token `token`, found by listing the
/// set with ZRANGE and looking up each member's token.
async fn member_with_token(con: &mut Con, name: &str, token: u64) -> String {
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg(set_key(name))
        .arg(0)
        .arg(-1)
        .query_async(con)
        .await
        .expect("ZRANGE");
    for m in members {
        let t: Option<u64> = redis::cmd("HGET")
            .arg(tokens_key(name))
            .arg(&m)
            .query_async(con)
            .await
            .expect("HGET");
        if t == Some(token) {
            return m;
        }
    }
    panic!("no member of {} has token {token}", set_key(name));
}

/// How many permits are held at once, as the holders themselves see it: incremented after
/// an acquire returned, decremented before the release is sent, so each count lies inside
/// the server's holding interval.
#[derive(Default)]
struct Occupancy {
    now: AtomicUsize,
    high: AtomicUsize,
}

impl Occupancy {
    fn enter(&self, cap: usize) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.high.fetch_max(n, Ordering::SeqCst);
        assert!(n <= cap, "{n} holders of a semaphore with {cap} permits");
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn high(&self) -> usize {
        self.high.load(Ordering::SeqCst)
    }
}

const PERMITS: u32 = 5;
const TASKS: usize = 32;
const CYCLES: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tasks_on_five_permits_never_exceed_five_holders_and_use_all_five() {
    let server = RedisServer::start();
    let clients: Vec<Client> = (0..4).map(|_| steady(&server.url())).collect();
    let occupancy = Arc::new(Occupancy::default());
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let sem = clients[t % clients.len()]
            .semaphore("pool", PERMITS)
            .unwrap()
            .wait(Duration::from_secs(10));
        let occupancy = occupancy.clone();
        let tokens = tokens.clone();
        tasks.push(tokio::spawn(async move {
            for cycle in 0..CYCLES {
                let permit = sem
                    .acquire()
                    .await
                    .unwrap_or_else(|e| panic!("task {t} cycle {cycle}: {e}"));
                occupancy.enter(PERMITS as usize);
                tokens.lock().unwrap().push(permit.fencing_token());
                tokio::time::sleep(Duration::from_millis(3)).await; // the scenario: work
                occupancy.leave();
                assert_eq!(permit.release().await.unwrap(), ReleaseOutcome::Released);
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for task in tasks {
        tokio::time::timeout_at(deadline, task)
            .await
            .expect("every task finishes in bounded time")
            .expect("no task saw more than 5 holders");
    }
    let high = occupancy.high();
    assert!(high <= PERMITS as usize, "high-water mark {high}");
    assert_eq!(
        high, PERMITS as usize,
        "all five permits were in use at once at some point"
    );
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), TASKS * CYCLES);
    let distinct: HashSet<u64> = tokens.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        tokens.len(),
        "every grant has its own token"
    );
    let sem = clients[0].semaphore("pool", PERMITS).unwrap();
    assert_eq!(sem.held().await.unwrap(), 0);
    eprintln!(
        "{} cycles on {PERMITS} permits in {:?}",
        TASKS * CYCLES,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_late_acquire_replies_never_cost_or_duplicate_a_permit() {
    const NAME: &str = "lossy-pool";
    const FAULT_CYCLES: usize = 4;
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let clients: Vec<Client> = (0..4).map(|_| client(&proxy.url())).collect();
    // Load the script and open every client's connections before any fault.
    for c in &clients {
        let sem = c.semaphore(NAME, PERMITS).unwrap();
        sem.try_acquire().await.unwrap().release().await.unwrap();
    }
    // Each grant writes the counter once (`SET` in next_token), and nothing else here
    // calls SET: the count of SET calls is the count of grants.
    common::reset_stats(&mut con).await;
    let acquire = || Match::command("EVALSHA").and(Match::arg_contains(sha(SEM_ACQUIRE.plain)));
    // The commands reach Redis, which grants; their replies are lost (6) or come after the
    // client's 250 ms response timeout (4). Each client retries with the same request id.
    let dropped = proxy.add_rule(Rule::reply_to(acquire()).first(6).drop());
    let late = proxy.add_rule(
        Rule::reply_to(acquire())
            .first(4)
            .delay(Duration::from_millis(400)),
    );

    let occupancy = Arc::new(Occupancy::default());
    let outcomes = Arc::new(Mutex::new(Vec::<Result<(), ErrorKind>>::new()));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let sem = clients[t % clients.len()]
            .semaphore(NAME, PERMITS)
            .unwrap()
            .wait(Duration::from_secs(3));
        let occupancy = occupancy.clone();
        let outcomes = outcomes.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..FAULT_CYCLES {
                match sem.acquire().await {
                    Ok(permit) => {
                        occupancy.enter(PERMITS as usize);
                        tokio::time::sleep(Duration::from_millis(2)).await; // the scenario
                        occupancy.leave();
                        // A release whose reply was lost on a discarded connection may
                        // still fail here; it is finished in the background.
                        if let Err(e) = permit.release().await {
                            eprintln!("task {t}: release: {e}");
                        }
                        outcomes.lock().unwrap().push(Ok(()));
                    }
                    Err(e) => {
                        assert!(
                            matches!(
                                e.kind(),
                                ErrorKind::Ambiguous | ErrorKind::TimedOut | ErrorKind::Connection
                            ),
                            "task {t}: acquire failed uncleanly: {e}"
                        );
                        outcomes.lock().unwrap().push(Err(e.kind()));
                    }
                }
            }
        }));
    }
    // Meanwhile the server never counts more than 5 live permits.
    let sampler = {
        let sem = steady(&server.url()).semaphore(NAME, PERMITS).unwrap();
        tokio::spawn(async move {
            let mut samples = 0u32;
            let until = Instant::now() + Duration::from_secs(30);
            while samples < 100_000 && Instant::now() < until {
                let n = sem.held().await.unwrap();
                assert!(n <= PERMITS, "the server counts {n} live permits");
                samples += 1;
                tokio::time::sleep(Duration::from_millis(2)).await; // sampling period
            }
            samples
        })
    };
    // Each acquire waits at most 3 s, so every task ends within 4 of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for task in tasks {
        tokio::time::timeout_at(deadline, task)
            .await
            .expect("every task finishes in bounded time")
            .expect("no task panicked");
    }
    sampler.abort();
    let _ = sampler.await;
    assert_eq!(dropped.hits(), 6, "six acquire replies were dropped");
    assert_eq!(late.hits(), 4, "four acquire replies came late");
    drop((dropped, late));

    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(
        outcomes.len(),
        TASKS * FAULT_CYCLES,
        "every acquire returned"
    );
    let granted = outcomes.iter().filter(|o| o.is_ok()).count();
    let ambiguous = outcomes
        .iter()
        .filter(|o| **o == Err(ErrorKind::Ambiguous))
        .count();
    let mut errors = std::collections::BTreeMap::<String, usize>::new();
    for kind in outcomes.iter().filter_map(|o| o.err()) {
        *errors.entry(format!("{kind:?}")).or_default() += 1;
    }
    eprintln!("granted {granted}, errors {errors:?}");
    assert!(
        granted >= TASKS * FAULT_CYCLES * 3 / 4,
        "most acquires succeed despite the faults ({granted}; errors {errors:?})"
    );
    assert!(occupancy.high() <= PERMITS as usize);
    assert!(occupancy.high() >= 2, "permits were held concurrently");

    // Every grant the server made was reported once (a retried request is granted once),
    // or is a possible grant of an ambiguous call, released in the background.
    let grants = common::command_calls(&mut con, "set").await as usize;
    assert!(
        grants >= granted && grants <= granted + ambiguous,
        "the server made {grants} grants for {granted} reported ones and {ambiguous} ambiguous calls"
    );
    // And no permit is left behind: the leases are 30 s, so a leaked or duplicated permit
    // would still count here.
    let sem = clients[0].semaphore(NAME, PERMITS).unwrap();
    poll_until(
        Duration::from_secs(5),
        "every permit is released at the server",
        || {
            let sem = sem.clone();
            let pending: usize = clients.iter().map(Client::pending_releases).sum();
            async move { pending == 0 && sem.held().await.unwrap() == 0 }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_permits_return_after_their_lease_and_not_before() {
    const NAME: &str = "crash";
    let lease = Duration::from_millis(500);
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let crashed = client(&proxy.url());
    let observer = steady(&server.url());
    let sem = crashed
        .semaphore(NAME, PERMITS)
        .unwrap()
        .ttl(lease)
        .auto_renew(false);
    let before = Instant::now();
    let mut permits = Vec::new();
    for _ in 0..PERMITS {
        permits.push(sem.try_acquire().await.unwrap());
    }
    let after = Instant::now();
    assert!(after - before < lease / 2, "filled in {:?}", after - before);
    // The holder crashes: it reaches Redis no more, so neither a renewal nor the release
    // its dropped permits start in the background can arrive.
    proxy.set_refuse_new(true);
    proxy.reset_all();
    drop(permits);

    let watch = observer.semaphore(NAME, PERMITS).unwrap();
    let err = watch.try_acquire().await.unwrap_err();
    assert!(err.is_contended(), "{err}");
    assert_eq!(watch.held().await.unwrap(), PERMITS);
    let first = watch
        .acquire_timeout(Duration::from_secs(3))
        .await
        .expect("a permit comes back when its lease ends");
    let got = Instant::now();
    // Not before: every crashed permit was granted after `before` for 500 ms (the server
    // counts whole milliseconds, hence the small tolerance).
    assert!(
        got + Duration::from_millis(5) >= before + lease,
        "a permit came back {:?} after the grants began, before its 500 ms lease ended",
        got - before
    );
    // Promptly: the waiter sleeps until the earliest lease ends, not much longer.
    assert!(
        got <= after + lease + Duration::from_millis(700),
        "took {:?} after the last grant",
        got - after
    );
    // All five come back.
    let mut mine = vec![first];
    for _ in 1..PERMITS {
        mine.push(watch.acquire_timeout(Duration::from_secs(1)).await.unwrap());
    }
    assert_eq!(watch.held().await.unwrap(), PERMITS);
    for p in mine {
        assert!(p.release().await.unwrap().is_released());
    }
    assert_eq!(watch.held().await.unwrap(), 0);
}

/// Take `n` permits at once (none may be contended).
async fn fill(sem: &Semaphore, n: u32) -> Vec<Permit> {
    let mut permits = Vec::new();
    for i in 0..n {
        permits.push(
            sem.try_acquire()
                .await
                .unwrap_or_else(|e| panic!("permit {i}: {e}")),
        );
    }
    permits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_capacity_grants_nothing_until_fewer_are_held_and_revokes_no_one() {
    const NAME: &str = "shrink";
    let server = RedisServer::start();
    let holders = quick(&server.url());
    let other = quick(&server.url());
    // Short renewed leases: the holders must stay valid through the whole test.
    let sem5 = holders
        .semaphore(NAME, 5)
        .unwrap()
        .ttl(Duration::from_millis(600))
        .auto_renew(true);
    let mut held = fill(&sem5, 5).await;
    let sem3 = other.semaphore(NAME, 5).unwrap().with_capacity(3);
    assert_eq!(sem3.capacity(), 3);
    assert!(sem3.try_acquire().await.unwrap_err().is_contended());
    let waiter = tokio::spawn({
        let sem3 = sem3.clone();
        async move { sem3.acquire_timeout(Duration::from_secs(8)).await }
    });
    // 5 -> 4 -> 3 held: a handle with 3 permits is still refused.
    for expected in [4, 3] {
        let p = held.pop().unwrap();
        assert_eq!(p.release().await.unwrap(), ReleaseOutcome::Released);
        let err = sem3.try_acquire().await.unwrap_err();
        assert!(err.is_contended(), "{expected} held: {err}");
        assert_eq!(sem5.held().await.unwrap(), expected);
    }
    // A window in which a wrong grant to the waiter would show (the scenario), longer
    // than the leases, so they are renewed meanwhile.
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        assert_eq!(sem5.held().await.unwrap(), 3, "the waiter got in too early");
        assert!(!waiter.is_finished());
        tokio::time::sleep(Duration::from_millis(20)).await; // sampling period
    }
    // No holder was revoked: all still hold, renew and extend.
    assert!(
        holders.renewal_stats().renewed >= 3,
        "{:?}",
        holders.renewal_stats()
    );
    for p in &held {
        assert_eq!(p.lost_reason(), None);
        p.extend(Duration::from_secs(2)).await.unwrap();
    }
    // 2 held: now the waiter gets in.
    held.pop().unwrap().release().await.unwrap();
    let p = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("the waiter gets in once 2 are held")
        .unwrap()
        .unwrap();
    assert_eq!(sem5.held().await.unwrap(), 3);
    assert!(sem3.try_acquire().await.unwrap_err().is_contended());
    for p in &held {
        assert_eq!(p.lost_reason(), None);
    }
    assert!(p.release().await.unwrap().is_released());
    for p in held {
        assert!(p.release().await.unwrap().is_released());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_permit_wakes_a_waiter_in_another_process_at_once() {
    const NAME: &str = "handoff";
    let server = RedisServer::start();
    let holders = steady(&server.url());
    let other = steady(&server.url());
    // 30 s leases: a waiter that is not woken would sleep until one of them ends.
    let sem = holders.semaphore(NAME, 2).unwrap();
    let mut held = fill(&sem, 2).await;
    let waiting = other.semaphore(NAME, 2).unwrap();
    let waiter = tokio::spawn({
        let waiting = waiting.clone();
        async move {
            let permit = waiting.acquire_timeout(Duration::from_secs(5)).await;
            (Instant::now(), permit)
        }
    });
    // The waiter was refused and listens for releases.
    let con = server.async_connection().await;
    poll_until(Duration::from_secs(3), "the waiter subscribes", || {
        let mut con = con.clone();
        async move {
            let (_, n): (String, u32) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(format!("leasehold:{{{NAME}}}:sem:released"))
                .query_async(&mut con)
                .await
                .unwrap();
            n == 1
        }
    })
    .await;
    assert!(
        !waiter.is_finished(),
        "the waiter got in while both were held"
    );
    let releasing = Instant::now();
    assert!(held.pop().unwrap().release().await.unwrap().is_released());
    let (got, permit) = tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .expect("the waiter is woken by the release")
        .unwrap();
    let permit = permit.unwrap();
    assert!(
        got - releasing < Duration::from_millis(500),
        "woken {:?} after the release",
        got - releasing
    );
    assert!(permit.fencing_token() > held[0].fencing_token());
    permit.release().await.unwrap();
    held.pop().unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_capacity_grants_the_extra_permits_at_once() {
    const NAME: &str = "grow";
    let server = RedisServer::start();
    let holders = steady(&server.url());
    let other = steady(&server.url());
    let sem5 = holders.semaphore(NAME, 5).unwrap();
    let held = fill(&sem5, 5).await;
    assert!(sem5.try_acquire().await.unwrap_err().is_contended());
    let sem7 = other.semaphore(NAME, 5).unwrap().with_capacity(7);
    let extra = fill(&sem7, 2).await;
    assert!(sem7.try_acquire().await.unwrap_err().is_contended());
    assert_eq!(sem7.held().await.unwrap(), 7);
    // The 5-permit handle still counts against its own 5.
    assert!(sem5.try_acquire().await.unwrap_err().is_contended());
    for p in held.iter().chain(&extra) {
        assert_eq!(p.lost_reason(), None);
        p.extend(Duration::from_secs(30)).await.unwrap();
    }
    for p in held.into_iter().chain(extra) {
        assert!(p.release().await.unwrap().is_released());
    }
    assert_eq!(sem7.held().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_permit_is_renewed_and_lost_on_its_own_with_its_own_increasing_token() {
    const NAME: &str = "renewed";
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = quick(&server.url());
    let sem = c
        .semaphore(NAME, 5)
        .unwrap()
        .ttl(Duration::from_millis(300))
        .auto_renew(true);
    let a = sem.acquire().await.unwrap();
    let b = sem.acquire().await.unwrap();
    assert!(
        b.fencing_token() > a.fencing_token(),
        "{} then {}",
        a.fencing_token(),
        b.fencing_token()
    );
    assert!(a.renew_every().is_some());
    // 1.5 s of work on 300 ms leases (the scenario): the watchdog keeps both alive.
    let started = Instant::now();
    let mut checks = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(a.lost_reason(), None, "after {:?}", started.elapsed());
        assert_eq!(b.lost_reason(), None, "after {:?}", started.elapsed());
        assert!(!a.is_expired() && !b.is_expired());
        checks += 1;
        tokio::time::sleep(Duration::from_millis(50)).await; // sampling period
    }
    assert!(checks >= 20);
    assert!(c.renewal_stats().renewed >= 10, "{:?}", c.renewal_stats());
    assert_eq!(sem.held().await.unwrap(), 2);

    // An operator removes a's permit at the server.
    let member = member_with_token(&mut con, NAME, a.fencing_token()).await;
    let removed: i64 = redis::cmd("ZREM")
        .arg(set_key(NAME))
        .arg(&member)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let cancel = a.cancellation_token();
    let reason = tokio::time::timeout(Duration::from_secs(1), a.lost())
        .await
        .expect("a's loss signal fires at its next renewal");
    assert_eq!(reason, LostReason::Expired);
    assert!(cancel.is_cancelled());
    // b is untouched, through more than two of its leases.
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        assert_eq!(b.lost_reason(), None);
        tokio::time::sleep(Duration::from_millis(50)).await; // the scenario: keep holding
    }
    b.extend(Duration::from_secs(1)).await.unwrap();
    assert_eq!(sem.held().await.unwrap(), 1);
    let c3 = sem.acquire().await.unwrap();
    assert!(c3.fencing_token() > b.fencing_token());
    assert_eq!(a.release().await.unwrap(), ReleaseOutcome::Expired);
    assert_eq!(b.release().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(c3.release().await.unwrap(), ReleaseOutcome::Released);
}

/// Every key of semaphore `name` exists with a TTL, and the fencing counter has none.
async fn assert_keys_have_ttls(con: &mut Con, name: &str, when: &str) {
    for key in [set_key(name), tokens_key(name)] {
        let ttl = pttl(con, &key).await;
        assert!(ttl > 0, "{when}: {key} has PTTL {ttl}");
    }
    assert_eq!(
        pttl(con, &fence_key(name)).await,
        -1,
        "{when}: the fencing counter must outlive the grants"
    );
    common::assert_every_key_has_a_ttl(con, name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_semaphore_key_has_a_ttl_except_the_fencing_counter() {
    const NAME: &str = "ttl";
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = quick(&server.url());
    let renewed = c
        .semaphore(NAME, 3)
        .unwrap()
        .ttl(Duration::from_millis(300))
        .auto_renew(true);
    let fixed = c
        .semaphore(NAME, 3)
        .unwrap()
        .ttl(Duration::from_millis(100))
        .auto_renew(false);
    let p1 = renewed.acquire().await.unwrap();
    assert_keys_have_ttls(&mut con, NAME, "after a grant").await;
    let p2 = renewed.acquire().await.unwrap();
    let short = fixed.acquire().await.unwrap();
    assert!(renewed.try_acquire().await.unwrap_err().is_contended());
    assert_keys_have_ttls(&mut con, NAME, "when full").await;
    // Through renewals, past the short permit's lease.
    let renewals = c.renewal_stats().renewed;
    poll_until(Duration::from_secs(3), "a few renewals", || {
        let n = c.renewal_stats().renewed;
        async move { n >= renewals + 4 }
    })
    .await;
    assert_keys_have_ttls(&mut con, NAME, "after renewals").await;
    let reason = tokio::time::timeout(Duration::from_secs(1), short.lost())
        .await
        .expect("the unrenewed 100 ms permit runs out");
    assert_eq!(reason, LostReason::DeadlinePassed);
    drop(short);
    // A grant that reclaims the expired permit.
    let p3 = renewed.acquire().await.unwrap();
    assert_keys_have_ttls(&mut con, NAME, "after reclaiming an expired permit").await;
    assert!(p1.release().await.unwrap().is_released());
    assert_keys_have_ttls(&mut con, NAME, "after a release").await;
    drop(p2);
    drop(p3);
    poll_until(Duration::from_secs(3), "background releases", || {
        let n = c.pending_releases();
        async move { n == 0 }
    })
    .await;
    assert_eq!(renewed.held().await.unwrap(), 0);
    // The sets may linger (with their TTL) or be gone; never without a TTL.
    for key in [set_key(NAME), tokens_key(NAME)] {
        assert_ne!(pttl(&mut con, &key).await, -1, "{key}");
    }
    common::assert_every_key_has_a_ttl(&mut con, NAME).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_go_to_waiters_in_the_order_they_arrived() {
    const NAME: &str = "in-order";
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let holder = steady(&server.url());
    let held = holder.semaphore(NAME, 2).unwrap();
    let first = held.try_acquire().await.unwrap();
    let second = held.try_acquire().await.unwrap();
    // Four waiters, each a process of its own, arriving one after another.
    let mut waiters = Vec::new();
    for i in 0..4 {
        let c = steady(&server.url());
        let sem = c.semaphore(NAME, 2).unwrap();
        waiters.push(tokio::spawn(async move {
            let p = sem.acquire_timeout(Duration::from_secs(10)).await.unwrap();
            let token = p.fencing_token();
            // Hold it a moment so the permits are passed on one by one.
            tokio::time::sleep(Duration::from_millis(20)).await; // the holder's work
            assert!(p.release().await.unwrap().is_released());
            drop(c);
            (i, token)
        }));
        common::until_sem_waiters(&con, NAME, i + 1).await;
    }
    assert!(first.release().await.unwrap().is_released());
    assert!(second.release().await.unwrap().is_released());
    let mut grants = Vec::new();
    for w in waiters {
        grants.push(w.await.unwrap());
    }
    // Tokens are issued in grant order. The two permits go to the two oldest waiters
    // first, then to the next two (two waiters both entitled to a free permit may be
    // granted in either order: each was named when its permit freed).
    grants.sort_by_key(|(_, token)| *token);
    let order: Vec<usize> = grants.iter().map(|(i, _)| *i).collect();
    let (first, last): (HashSet<usize>, HashSet<usize>) = (
        order[..2].iter().copied().collect(),
        order[2..].iter().copied().collect(),
    );
    assert_eq!(
        (first, last),
        ([0, 1].into(), [2, 3].into()),
        "a later waiter was granted before an earlier one: {order:?}"
    );
    assert_eq!(
        common::sem_waiters(&mut con, NAME).await,
        0,
        "every waiter left the queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_does_not_take_a_free_permit_before_an_older_waiter() {
    const NAME: &str = "no-barging";
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let sem = c.semaphore(NAME, 1).unwrap();
    // An older waiter of another process, with a place that lives 400 ms more.
    let now_ms: i64 = {
        let t: (String, String) = redis::cmd("TIME").query_async(&mut con).await.unwrap();
        t.0.parse::<i64>().unwrap() * 1000 + t.1.parse::<i64>().unwrap() / 1000
    };
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(format!("leasehold:{{{NAME}}}:sem:waiters"))
        .arg(1)
        .arg("older")
        .cmd("ZADD")
        .arg(format!("leasehold:{{{NAME}}}:sem:waiters:exp"))
        .arg(now_ms + 400)
        .arg("older")
        .query_async(&mut con)
        .await
        .unwrap();
    let err = sem.try_acquire().await.unwrap_err();
    assert!(err.is_contended(), "{err}");
    // Once the older waiter's place lapses (it stopped refreshing it), the permit is free.
    let permit = poll_until_ok(Duration::from_secs(5), || sem.try_acquire()).await;
    assert!(permit.release().await.unwrap().is_released());
}

/// Retry `f` until it succeeds, for at most `limit`.
async fn poll_until_ok<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = leasehold::Result<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_contended(), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await; // the retry period
            }
            Err(e) => panic!("still refused after {limit:?}: {e}"),
        }
    }
}
