//! Coalesced calls: acquires, releases and extends ready while the connection is busy go
//! to Redis as one batch script call, each with its own request id and its own result; a
//! lone caller is never batched; a lost batch reply leaves every request in it granted
//! once; a caller that goes away while queued is never granted.
//!
//! `CLIENT PAUSE` makes the connection busy on purpose: the first four calls (the most in
//! flight at once) wait at the server, so the calls made meanwhile queue for one batch.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{exists, hget, poll_until, sha};
use leasehold::scripts::BATCH;
use leasehold::{Client, ReleaseOutcome};
use leasehold_testkit::{FaultProxy, Match, RedisServer, Rule};

fn client(url: &str) -> Client {
    Client::builder(url)
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

async fn pause(con: &mut redis::aio::MultiplexedConnection, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query_async(con)
        .await
        .unwrap();
}

async fn warm_up(c: &Client) {
    common::acquire_and_release(c, "warm-up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_while_the_connection_is_busy_go_as_one_batch_each_with_its_own_grant() {
    let server = RedisServer::start();
    let mut con = server.async_connection().await;
    let c = client(&server.url());
    warm_up(&c).await;
    // Another application's string where one lock's hash would go.
    let _: () = redis::cmd("SET")
        .arg("leasehold:{foreign}")
        .arg("not a lock")
        .query_async(&mut con)
        .await
        .unwrap();
    pause(&mut con, 300).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let c = c.clone();
        let name = if i == 7 {
            "foreign".to_string()
        } else {
            format!("batched-{i}")
        };
        tasks.push(tokio::spawn(async move {
            let lock = c.lock(&name).unwrap().auto_renew(false);
            (name, lock.try_acquire().await)
        }));
    }
    let mut guards = Vec::new();
    for t in tasks {
        let (name, result) = t.await.unwrap();
        if name == "foreign" {
            let err = result.expect_err("a foreign key is refused");
            assert!(err.is_foreign_key(), "{err}");
            assert!(err.to_string().contains("leasehold:{foreign}"), "{err}");
        } else {
            let g = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(g.hold_count(), 1);
            // Each grant's token is its own lock's counter (tokens of different locks may
            // coincide: a batch's grants can share one server clock reading).
            let fence: String = redis::cmd("GET")
                .arg(format!("leasehold:{{{name}}}:fence"))
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(fence, g.fencing_token().to_string(), "{name}");
            guards.push(g);
        }
    }
    let stats = c.batch_stats();
    assert!(stats.batches >= 1, "{stats:?}");
    assert!(
        stats.calls >= 6,
        "the calls made while four were paused went together: {stats:?}"
    );
    assert!(
        stats.calls >= 4 * stats.batches,
        "a batch carries many calls: {stats:?}"
    );
    for g in &guards {
        assert_eq!(
            hget(&mut con, &format!("leasehold:{{{}}}", g.name()), "count")
                .await
                .as_deref(),
            Some("1")
        );
    }
    // Releases coalesce the same way, each with its own outcome.
    pause(&mut con, 200).await;
    let releases: Vec<_> = guards
        .into_iter()
        .map(|g| tokio::spawn(async move { g.release().await }))
        .collect();
    for r in releases {
        assert_eq!(r.await.unwrap().unwrap(), ReleaseOutcome::Released);
    }
    assert!(
        c.batch_stats().batches > stats.batches,
        "{:?}",
        c.batch_stats()
    );
    for i in 0..12 {
        assert!(!exists(&mut con, &format!("leasehold:{{batched-{i}}}")).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_caller_is_never_batched() {
    let server = RedisServer::start();
    let c = client(&server.url());
    for i in 0..50 {
        let g = c
            .lock(&format!("alone-{i}"))
            .unwrap()
            .try_acquire()
            .await
            .unwrap();
        g.extend(Duration::from_secs(20)).await.unwrap();
        assert!(g.release().await.unwrap().is_released());
    }
    assert_eq!(c.batch_stats(), leasehold::BatchStats::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_reply_is_lost_still_grants_each_request_in_it_once() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    let batch_call = Match::command("EVALSHA")
        .and(Match::arg_contains(sha(BATCH.plain)))
        .and(Match::arg_contains("lost-batch-"));
    let rule = proxy.add_rule(Rule::reply_to(batch_call).first(1).drop());
    pause(&mut con, 200).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.lock(&format!("lost-batch-{i}"))
                    .unwrap()
                    .auto_renew(false)
                    .acquire_timeout(Duration::from_secs(5))
                    .await
            })
        })
        .collect();
    let mut guards = Vec::new();
    for t in tasks {
        guards.push(t.await.unwrap().expect("granted despite the lost reply"));
    }
    assert_eq!(rule.hits(), 1, "the reply of one batch was lost");
    for g in &guards {
        assert_eq!(g.hold_count(), 1);
        assert_eq!(
            hget(&mut con, &format!("leasehold:{{{}}}", g.name()), "count")
                .await
                .as_deref(),
            Some("1"),
            "{}: a retry was counted twice",
            g.name()
        );
    }
    for g in guards {
        assert_eq!(g.release().await.unwrap(), ReleaseOutcome::Released);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_while_queued_or_batched_holds_nothing_afterwards() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    warm_up(&c).await;
    // The batch runs at the server; its reply comes late, after some callers left.
    let batch_call = Match::command("EVALSHA").and(Match::arg_contains(sha(BATCH.plain)));
    let late = proxy.add_rule(
        Rule::reply_to(batch_call)
            .first(1)
            .delay(Duration::from_millis(300)),
    );
    pause(&mut con, 200).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.lock(&format!("gone-{i}"))
                    .unwrap()
                    .auto_renew(false)
                    .try_acquire()
                    .await
            })
        })
        .collect();
    // Half of the callers go away: some while the first calls wait at the paused server
    // and the rest queue behind them (withdrawn unsent), the others while their batch is
    // on its way (granted at the server, released because nobody is there to hold it).
    let seen = proxy.commands_seen();
    poll_until(
        Duration::from_secs(5),
        "the first calls to reach the server",
        || {
            let n = proxy.commands_seen();
            async move { n >= seen + 4 }
        },
    )
    .await;
    for t in &tasks[..3] {
        t.abort();
    }
    poll_until(
        Duration::from_secs(5),
        "the batch's reply to be held back",
        || {
            let hits = late.hits();
            async move { hits >= 1 }
        },
    )
    .await;
    for t in &tasks[3..5] {
        t.abort();
    }
    let mut kept = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(r) => kept.push((i, r.unwrap())),
            Err(e) => assert!(e.is_cancelled()),
        }
    }
    let held: HashSet<usize> = kept.iter().map(|(i, _)| *i).collect();
    for i in 0..10 {
        let key = format!("leasehold:{{gone-{i}}}");
        if held.contains(&i) {
            assert!(exists(&mut con, &key).await, "{key} is held by its caller");
        } else {
            let what = format!("{key}: a grant nobody holds is released");
            poll_until(Duration::from_secs(5), &what, || async {
                !exists(&mut server.async_connection().await, &key).await
            })
            .await;
        }
    }
    drop(kept);
}
