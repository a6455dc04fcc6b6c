//! Lock sets (`client.locks([..])`): all or none, no deadlock between callers listing the
//! same names in different orders, one loss signal, per-member tokens, lost replies, and
//! RedLock.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, exists, hget, quick, sha, steady};
use leasehold::scripts::{ACQUIRE_LUA, SET_ACQUIRE};
use leasehold::{Client, ErrorKind, LostReason, ReleaseOutcome, MAX_LOCK_SET};
use leasehold_testkit::{
    FaultProxy, FencedResource, History, Masters, Match, RedisServer, Rule, RuleBuilder,
};
use rand::seq::SliceRandom;
use rand::Rng;

const NAMES: [&str; 4] = ["ledger/a", "ledger/b", "ledger/c", "ledger/d"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_taking_random_pairs_in_random_orders_never_deadlock_or_overlap() {
    let server = RedisServer::start();
    // Four clients with two tasks each: members are queued both locally and at the server.
    let clients: Vec<Client> = (0..4).map(|_| steady(&server.url())).collect();
    let history = History::new();
    let resource = FencedResource::new(history.clone());
    let rounds = Arc::new(AtomicUsize::new(0));
    let stop_at = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let c = clients[t % 4].clone();
        let (history, resource, rounds) = (history.clone(), resource.clone(), rounds.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..2_000 {
                if Instant::now() >= stop_at {
                    break;
                }
                let pair: Vec<&str> = {
                    let mut rng = rand::rng();
                    let mut names = NAMES;
                    names.shuffle(&mut rng);
                    names[..2].to_vec()
                };
                // A deadlock would leave every task here until its wait runs out.
                let set = c.locks(&pair).unwrap().wait(Duration::from_secs(8));
                let held = set
                    .acquire()
                    .await
                    .unwrap_or_else(|e| panic!("task {t} round {round} {pair:?}: {e}"));
                let holds: Vec<_> = held
                    .fencing_tokens()
                    .map(|(name, token)| history.acquired(name, &format!("task {t}"), Some(token)))
                    .collect();
                for hold in &holds {
                    assert!(resource.write(hold).is_accepted(), "stale write {hold:?}");
                }
                let work = rand::rng().random_range(0..3);
                tokio::time::sleep(Duration::from_millis(work)).await; // the holder's work
                for hold in &holds {
                    assert!(resource.write(hold).is_accepted(), "stale write {hold:?}");
                    history.released(hold);
                }
                for (name, outcome) in held.release().await.unwrap() {
                    assert_eq!(outcome, ReleaseOutcome::Released, "{name}");
                }
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = history.check();
    assert!(report.is_clean(), "{report}");
    let rounds = rounds.load(Ordering::Relaxed);
    assert!(rounds >= 40, "only {rounds} sets taken in 3 s");
    eprintln!("{rounds} lock sets taken and released by 8 tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_that_cannot_have_every_member_holds_none_of_them() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let other = client(&server.url());
    let blocker = other.lock("set/b").unwrap().acquire().await.unwrap();
    let set = c.locks(["set/c", "set/b", "set/a"]).unwrap();
    let err = set.try_acquire().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Contended, "{err}");
    assert!(err.to_string().contains("set/b"), "names the member: {err}");
    let err = set
        .acquire_timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    // "set/a" sorts first and was taken before "set/b" refused: given back, and "set/c"
    // was never asked for.
    for name in ["set/a", "set/c"] {
        let key = c.lock(name).unwrap().redis_key().to_string();
        assert!(!exists(&mut con, &key).await, "{name} is still held");
    }
    blocker.release().await.unwrap();
    let held = set.try_acquire().await.unwrap();
    let names: Vec<&str> = held.members().iter().map(|g| g.name()).collect();
    assert_eq!(names, ["set/a", "set/b", "set/c"], "canonical order");
    for (name, token) in held.fencing_tokens() {
        let lock = c.lock(name).unwrap();
        assert_eq!(
            hget(&mut con, lock.redis_key(), "token").await,
            Some(token.to_string()),
            "{name}'s own token"
        );
    }
    assert!(held.get("set/b").is_some() && held.get("set/x").is_none());
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_is_lost_when_any_one_member_is_lost() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = quick(&server.url());
    let held = c
        .locks(["lost/a", "lost/b", "lost/c"])
        .unwrap()
        .ttl(Duration::from_millis(600))
        .acquire()
        .await
        .unwrap();
    let token = held.cancellation_token();
    assert!(!held.is_lost() && !token.is_cancelled());
    // Someone deletes one member's key: its next renewal is refused.
    let key = c.lock("lost/b").unwrap().redis_key().to_string();
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    let (name, reason) = tokio::time::timeout(Duration::from_secs(3), held.lost())
        .await
        .expect("the set is lost within a lease");
    assert_eq!(name, "lost/b");
    assert_ne!(reason, LostReason::Released);
    tokio::time::timeout(Duration::from_secs(1), token.cancelled())
        .await
        .expect("the set's token is cancelled");
    assert_eq!(held.lost_members().len(), 1);
    let outcomes = held.release().await.unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes
        .iter()
        .all(|(n, o)| (n == "lost/b") != (*o == ReleaseOutcome::Released)));
}

#[tokio::test]
async fn bad_lock_sets_are_refused_with_what_to_fix() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let none: [&str; 0] = [];
    for (set, says) in [
        (c.locks(none).map(|_| ()), "at least one"),
        (c.locks(["a", "b", "a"]).map(|_| ()), "listed twice"),
        (c.locks(["a", ""]).map(|_| ()), "empty"),
        (
            c.locks((0..=MAX_LOCK_SET).map(|i| format!("n{i}")))
                .map(|_| ()),
            "too large",
        ),
    ] {
        let err = set.unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
}

/// The first reply of each acquire script is lost (dropped, late, or its connection
/// reset): each member is still granted exactly once. `one_by_one`: a member is held when
/// the set asks, so after the one-script try is refused the members are taken one by one
/// (the fault then hits each member's first acquire); otherwise all are taken in the one
/// script, whose first reply is lost.
async fn assert_every_member_granted_once_despite(
    one_by_one: bool,
    fault: fn(RuleBuilder) -> Rule,
) {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    common::acquire_and_release(&c, "warm-up").await;
    c.locks(["warm-up/a", "warm-up/b"])
        .unwrap()
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let names = ["faulty/a", "faulty/b", "faulty/c"];
    let mut rules = Vec::new();
    let blocker = if one_by_one {
        let direct = client(&server.url());
        let held = direct.lock("faulty/b").unwrap().acquire().await.unwrap();
        let acquire = Match::command("EVALSHA").and(Match::arg_contains(sha(ACQUIRE_LUA)));
        for name in names {
            let mine = acquire.clone().and(Match::arg_contains(name));
            rules.push(proxy.add_rule(fault(Rule::reply_to(mine).first(1))));
        }
        Some((direct, held))
    } else {
        let at_once = Match::command("EVALSHA").and(Match::arg_contains(sha(SET_ACQUIRE.plain)));
        rules.push(proxy.add_rule(fault(Rule::reply_to(at_once).first(1))));
        None
    };
    let set = c.locks(names).unwrap().wait(Duration::from_secs(10));
    let acquiring = tokio::spawn(async move { set.acquire().await });
    if let Some((direct, held)) = blocker {
        // The first member is taken one by one; then the held one is let go.
        let key = c.lock("faulty/a").unwrap().redis_key().to_string();
        common::poll_until(Duration::from_secs(5), "the first member", || {
            let (mut con, key) = (con.clone(), key.clone());
            async move { exists(&mut con, &key).await }
        })
        .await;
        held.release().await.unwrap();
        drop(direct);
    }
    let held = acquiring.await.unwrap().unwrap();
    for rule in &rules {
        assert_eq!(rule.hits(), 1, "the fault hit {:?}", rule.rule());
    }
    for guard in held.members() {
        assert_eq!(guard.hold_count(), 1);
        let lock = c.lock(guard.name()).unwrap();
        assert_eq!(
            hget(&mut con, lock.redis_key(), "count").await.as_deref(),
            Some("1"),
            "{}: the retry was not counted twice",
            guard.name()
        );
    }
    for (name, outcome) in held.release().await.unwrap() {
        assert_eq!(outcome, ReleaseOutcome::Released, "{name}");
        let key = c.lock(&name).unwrap().redis_key().to_string();
        assert!(
            !exists(&mut con, &key).await,
            "{name}: one release frees it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_whose_one_script_reply_is_dropped_is_granted_once_per_member() {
    assert_every_member_granted_once_despite(false, RuleBuilder::drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_whose_one_script_reply_is_late_is_granted_once_per_member() {
    assert_every_member_granted_once_despite(false, |r| r.delay(Duration::from_millis(700))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_whose_one_script_connection_resets_is_granted_once_per_member() {
    assert_every_member_granted_once_despite(false, RuleBuilder::reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_taken_one_by_one_whose_acquire_replies_are_dropped_is_granted_once_per_member() {
    assert_every_member_granted_once_despite(true, RuleBuilder::drop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_taken_one_by_one_whose_acquire_replies_are_late_is_granted_once_per_member() {
    assert_every_member_granted_once_despite(true, |r| r.delay(Duration::from_millis(700))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_taken_one_by_one_whose_acquire_connections_reset_is_granted_once_per_member() {
    assert_every_member_granted_once_despite(true, RuleBuilder::reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_on_a_set_with_a_held_member_takes_nothing_even_for_a_moment() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let other = client(&server.url());
    let blocker = other.lock("moment/c").unwrap().acquire().await.unwrap();
    let fence = |name: &str| c.lock(name).unwrap().fence_key().to_string();
    let err = c
        .locks(["moment/a", "moment/b", "moment/c"])
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Contended, "{err}");
    assert!(err.to_string().contains("moment/c"), "{err}");
    // A grant writes the member's fencing counter: none was written for the free ones.
    for name in ["moment/a", "moment/b"] {
        assert!(
            !exists(&mut con, &fence(name)).await,
            "{name} was granted for a moment"
        );
    }
    blocker.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_on_a_set_whose_member_another_task_of_the_client_waits_for_takes_nothing() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    let other = client(&server.url());
    let blocker = other.lock("queued/c").unwrap().acquire().await.unwrap();
    // A task of this client waits for queued/c: it has the client's local place for it.
    let waiting = c.lock("queued/c").unwrap();
    let waiters = format!("{}:waiters", waiting.redis_key());
    let task = tokio::spawn(async move { waiting.acquire_timeout(Duration::from_secs(20)).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exists(&mut con, &waiters).await {
        assert!(Instant::now() < deadline, "the waiting task never queued");
        tokio::task::yield_now().await;
    }
    let err = c
        .locks(["queued/a", "queued/c"])
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Contended, "{err}");
    assert!(err.to_string().contains("queued/c"), "{err}");
    // A grant writes the member's fencing counter: none was written for queued/a.
    let fence = c.lock("queued/a").unwrap().fence_key().to_string();
    assert!(
        !exists(&mut con, &fence).await,
        "queued/a was granted for a moment"
    );
    blocker.release().await.unwrap();
    task.await.unwrap().unwrap().release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_on_redlock_holds_every_member_on_a_quorum_and_excludes_a_second_set() {
    let masters = Masters::start(3);
    let redlock = |_| {
        Client::redlock_builder(masters.urls())
            .connect_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    };
    let (a, b) = (redlock(0), redlock(1));
    let held = a.locks(["rl/x", "rl/y"]).unwrap().acquire().await.unwrap();
    let err = b
        .locks(["rl/y", "rl/z"])
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Contended, "{err}");
    for (name, _) in held.fencing_tokens() {
        let key = a.lock(name).unwrap().redis_key().to_string();
        let mut on = 0;
        for i in 0..3 {
            let mut con = masters
                .server(i)
                .client()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            on += usize::from(exists(&mut con, &key).await);
        }
        assert!(on >= 2, "{name} is on {on} of 3 nodes");
    }
    held.release().await.unwrap();
    let second = b
        .locks(["rl/z", "rl/y"])
        .unwrap()
        .try_acquire()
        .await
        .unwrap();
    second.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_set_on_one_server_is_one_round_trip() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let c = client(&proxy.url());
    let set = c.locks(["trip/a", "trip/b", "trip/c", "trip/d"]).unwrap();
    // Load the script and open the connection first.
    set.acquire().await.unwrap().release().await.unwrap();
    let before = proxy.commands_seen();
    let held = set.acquire().await.unwrap();
    assert_eq!(
        proxy.commands_seen() - before,
        1,
        "one script for four locks"
    );
    assert_eq!(held.members().len(), 4);
    held.release().await.unwrap();
}
