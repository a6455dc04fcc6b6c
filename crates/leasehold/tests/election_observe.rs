//! Election observers and proclaimed values: a follower sees every leadership change in
//! order (values, resignations, a killed leader, and changes made while its own connection
//! was down), and a leader's value is stored from the first moment of its term.
//!
//! The killed leader is this test binary run again as a child: with
//! `LEASEHOLD_CHILD_LEADER_URL` set, the child test campaigns, prints its term and sleeps
//! until it is killed.

mod common;

use std::time::Duration;

use common::client;
use leasehold::{Client, ErrorKind, Leader, Observer, MAX_LEADER_VALUE};
use leasehold_testkit::{FaultProxy, Masters, RedisServer};

const ELECTION: &str = "scheduler";

/// The next change, within `limit`.
async fn next(observer: &mut Observer, limit: Duration) -> Option<Leader> {
    tokio::time::timeout(limit, observer.next())
        .await
        .expect("a change within the limit")
        .expect("observe")
}

/// The next `n` changes as (value, term), `None` for "no leader"; each within `limit`.
async fn changes(observer: &mut Observer, n: usize, limit: Duration) -> Vec<Option<(String, u64)>> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let change = next(observer, limit).await;
        seen.push(change.map(|l| (l.value, l.term)));
    }
    seen
}

fn leads(change: &Option<Leader>, value: &str, term: u64) -> bool {
    change
        .as_ref()
        .is_some_and(|l| l.value == value && l.term == term)
}

/// Runs only as the child of the killed-leader test; does nothing in a plain test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_leads_until_killed() {
    let Ok(url) = std::env::var("LEASEHOLD_CHILD_LEADER_URL") else {
        return;
    };
    let c = client(&url);
    let leadership = c
        .election(ELECTION)
        .unwrap()
        .ttl(Duration::from_secs(1))
        .value("child")
        .campaign()
        .await
        .unwrap();
    println!("TERM {}", leadership.fencing_token());
    tokio::time::sleep(Duration::from_secs(60)).await;
    panic!("the parent never killed this child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_every_leadership_change_in_order_including_a_killed_leader() {
    if std::env::var_os("LEASEHOLD_CHILD_LEADER_URL").is_some() {
        return;
    }
    let server = RedisServer::start();
    let watcher = client(&server.url());
    let mut observer = watcher.election(ELECTION).unwrap().observe();
    assert_eq!(
        next(&mut observer, Duration::from_secs(5)).await,
        None,
        "nobody leads yet"
    );

    // A leads with a value, changes it, and resigns.
    let a = client(&server.url());
    let election = a.election(ELECTION).unwrap().value("a:1");
    let leadership = election.campaign().await.unwrap();
    let term_a = leadership.fencing_token();
    let change = next(&mut observer, Duration::from_secs(5)).await;
    assert!(leads(&change, "a:1", term_a), "{change:?}");
    assert_eq!(change.unwrap().owner_id, leadership.lease().owner_id());
    leadership.proclaim("a:2").await.unwrap();
    assert_eq!(leadership.value(), "a:2");
    let change = next(&mut observer, Duration::from_secs(5)).await;
    assert!(leads(&change, "a:2", term_a), "{change:?}");
    let info = election.leader().await.unwrap().expect("a leader");
    assert_eq!(
        info.metadata.value.as_deref(),
        Some("a:2"),
        "stored with the grant"
    );
    leadership.resign().await.unwrap();
    assert_eq!(next(&mut observer, Duration::from_secs(5)).await, None);

    // A leader in another process is killed: its lease runs out, then B leads.
    let (mut child, term_c) = common::child_test(
        "child_leads_until_killed",
        "LEASEHOLD_CHILD_LEADER_URL",
        &server.url(),
        "TERM ",
    );
    let change = next(&mut observer, Duration::from_secs(5)).await;
    assert!(leads(&change, "child", term_c), "{change:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        next(&mut observer, Duration::from_secs(5)).await,
        None,
        "the killed leader's lease ran out"
    );
    let b = client(&server.url());
    let leadership = b
        .election(ELECTION)
        .unwrap()
        .value("b")
        .campaign()
        .await
        .unwrap();
    let change = next(&mut observer, Duration::from_secs(5)).await;
    assert!(
        leads(&change, "b", leadership.fencing_token()),
        "{change:?}"
    );
    assert!(
        term_a < term_c && term_c < leadership.fencing_token(),
        "terms rise"
    );
    leadership.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_reports_the_changes_made_while_its_connection_was_down_in_order() {
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let watcher = client(&proxy.url());
    let mut observer = watcher.election(ELECTION).unwrap().observe();
    assert_eq!(next(&mut observer, Duration::from_secs(5)).await, None);

    // The observer's connections are cut and cannot come back while leaders change.
    proxy.set_refuse_new(true);
    proxy.reset_all();
    let direct = client(&server.url());
    let election = direct.election(ELECTION).unwrap();
    let mut expected = Vec::new();
    for round in 0..3 {
        let leadership = election
            .clone()
            .value(&format!("r{round}"))
            .campaign()
            .await
            .unwrap();
        let term = leadership.fencing_token();
        expected.push(Some((format!("r{round}"), term)));
        leadership.proclaim(&format!("r{round}+")).await.unwrap();
        expected.push(Some((format!("r{round}+"), term)));
        leadership.resign().await.unwrap();
        expected.push(None);
    }
    let last = election.clone().value("last").campaign().await.unwrap();
    expected.push(Some(("last".to_string(), last.fencing_token())));

    proxy.set_refuse_new(false);
    let seen = changes(&mut observer, expected.len(), Duration::from_secs(10)).await;
    assert_eq!(
        seen, expected,
        "every change, in order, after the reconnect"
    );
    last.resign().await.unwrap();
    assert_eq!(next(&mut observer, Duration::from_secs(5)).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_is_proclaimed_only_by_the_leader_that_still_holds() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let election = c
        .election("values")
        .unwrap()
        .ttl(Duration::from_millis(500));
    let too_long = "x".repeat(MAX_LEADER_VALUE + 1);
    let err = election
        .clone()
        .value(&too_long)
        .campaign()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let leadership = election.campaign().await.unwrap();
    assert!(leadership
        .proclaim(&too_long)
        .await
        .unwrap_err()
        .is_invalid_input());
    // Someone deletes the leadership: a proclamation then publishes nothing.
    let mut con = server.async_connection().await;
    let _: () = redis::cmd("DEL")
        .arg("leasehold:{values}")
        .query_async(&mut con)
        .await
        .unwrap();
    let err = leadership.proclaim("late").await.unwrap_err();
    assert!(err.is_not_held(), "{err}");
    let entries: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg("leasehold:{values}:leaders")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "only the election was recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_clients_refuse_observers_and_proclamations_with_a_typed_error() {
    let masters = Masters::start(3);
    let c = Client::redlock_builder(masters.urls()).build().unwrap();
    let election = c.election("rl-election").unwrap().value("v");
    let leadership = election.campaign().await.unwrap();
    let err = leadership.proclaim("w").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("RedLock"), "{err}");
    let err = election.observe().next().await.unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    leadership.resign().await.unwrap();
}

/// The log's entries for election `name`: (event, value).
async fn log_entries(
    con: &mut redis::aio::MultiplexedConnection,
    name: &str,
) -> Vec<(String, String)> {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("leasehold:{{{name}}}:leaders"))
        .arg("-")
        .arg("+")
        .query_async(con)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(_, fields)| {
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(f, _)| f == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("event"), get("value"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proclamations_whose_replies_are_lost_are_recorded_once() {
    use leasehold::scripts::PROCLAIM;
    use leasehold_testkit::{Match, Rule};
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    let c = client(&proxy.url());
    let proclaim =
        || Match::command("EVALSHA").and(Match::arg_contains(common::sha(PROCLAIM.plain)));
    for (i, fault) in ["drop", "late", "reset"].into_iter().enumerate() {
        let name = format!("lossy-election-{i}");
        let rule = |r: leasehold_testkit::RuleBuilder| match fault {
            "drop" => r.drop(),
            "late" => r.delay(Duration::from_millis(700)),
            _ => r.reset(),
        };
        // The campaign's own proclamation (elected), then a new value, each losing its
        // first reply.
        let first = proxy.add_rule(rule(Rule::reply_to(proclaim()).first(1)));
        let leadership = c
            .election(&name)
            .unwrap()
            .value("first")
            .campaign()
            .await
            .unwrap();
        assert_eq!(first.hits(), 1, "{fault}: the campaign's reply was hit");
        let second = proxy.add_rule(rule(Rule::reply_to(proclaim()).first(1)));
        leadership.proclaim("second").await.unwrap();
        assert_eq!(
            second.hits(),
            1,
            "{fault}: the proclamation's reply was hit"
        );
        assert_eq!(
            log_entries(&mut con, &name).await,
            [
                ("elected".to_string(), "first".to_string()),
                ("proclaimed".to_string(), "second".to_string())
            ],
            "{fault}: each recorded once"
        );
        leadership.resign().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_ends_with_a_shutdown_error_once_its_client_is_shut_down() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let mut observer = c.election("closing").unwrap().observe();
    assert_eq!(next(&mut observer, Duration::from_secs(5)).await, None);
    c.shutdown().await;
    let err = tokio::time::timeout(Duration::from_secs(5), observer.next())
        .await
        .expect("the watch ends")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shutdown, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_behind_by_more_than_one_read_reports_every_change_once_in_order() {
    let server = RedisServer::start();
    let watcher = client(&server.url());
    let mut observer = watcher.election("backlog").unwrap().observe();
    assert_eq!(next(&mut observer, Duration::from_secs(5)).await, None);
    // While the observer reads nothing: 70 values of one leader (more than one read
    // returns), its resignation, and a successor.
    let c = client(&server.url());
    let election = c.election("backlog").unwrap();
    let first = election.clone().value("v0").campaign().await.unwrap();
    let t1 = first.fencing_token();
    let mut expected = vec![Some(("v0".to_string(), t1))];
    for i in 1..70 {
        first.proclaim(&format!("v{i}")).await.unwrap();
        expected.push(Some((format!("v{i}"), t1)));
    }
    first.resign().await.unwrap();
    expected.push(None);
    let second = election.clone().value("w").campaign().await.unwrap();
    expected.push(Some(("w".to_string(), second.fencing_token())));
    let seen = changes(&mut observer, expected.len(), Duration::from_secs(5)).await;
    assert_eq!(seen, expected);
    second.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proclamations_leave_the_leader_and_the_server_with_one_value() {
    let server = RedisServer::start();
    let c = client(&server.url());
    let leadership = c.election("racing").unwrap().campaign().await.unwrap();
    let mut con = server.async_connection().await;
    for round in 0..20 {
        let (a, b) = (format!("a{round}"), format!("b{round}"));
        let (ra, rb) = tokio::join!(leadership.proclaim(&a), leadership.proclaim(&b));
        ra.unwrap();
        rb.unwrap();
        let stored = c
            .election("racing")
            .unwrap()
            .leader()
            .await
            .unwrap()
            .unwrap();
        let logged = log_entries(&mut con, "racing")
            .await
            .last()
            .unwrap()
            .1
            .clone();
        assert_eq!(stored.metadata.value.as_deref(), Some(logged.as_str()));
        assert_eq!(leadership.value(), logged, "round {round}");
    }
    leadership.resign().await.unwrap();
}
