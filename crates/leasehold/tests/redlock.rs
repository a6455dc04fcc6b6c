//! RedLock over five independent local masters (seed 003): quorum with nodes stopped or
//! paused, clean failure without a quorum, fencing tokens across diverging node counters,
//! and loss of the quorum while a lease is held.

mod common;

use std::time::{Duration, Instant};

use common::poll_until;
use leasehold::{Client, ErrorKind, LostReason, ReleaseOutcome};
use leasehold_testkit::Masters;

fn redlock(masters: &Masters, node_timeout: Duration) -> Client {
    Client::redlock_builder(masters.urls())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_secs(2))
        .node_timeout(node_timeout)
        .build()
        .expect("RedLock client")
}

async fn con(masters: &Masters, i: usize) -> redis::aio::MultiplexedConnection {
    masters
        .server(i)
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to node")
}

/// On how many of `nodes` the lock key exists.
async fn holders(masters: &Masters, nodes: &[usize], key: &str) -> usize {
    let mut n = 0;
    for &i in nodes {
        if common::exists(&mut con(masters, i).await, key).await {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn redlock_with_two_of_five_nodes_stopped_still_grants_the_lock() {
    let mut masters = Masters::start(5);
    masters.stop(0);
    masters.stop(1);
    let client = redlock(&masters, Duration::from_millis(100));
    let lock = client.lock("redlock/two-down").unwrap();
    let guard = lock.acquire_timeout(Duration::from_secs(2)).await.unwrap();
    assert!(guard.fencing_token() > 0);
    assert!(guard.remaining() > Duration::from_secs(29), "{guard:?}");
    assert_eq!(holders(&masters, &[2, 3, 4], lock.redis_key()).await, 3);

    let other = client.lock("redlock/two-down").unwrap();
    let e = other.try_acquire().await.unwrap_err();
    assert!(e.is_contended(), "{e}");

    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(holders(&masters, &[2, 3, 4], lock.redis_key()).await, 0);
    client.shutdown().await;
}

#[tokio::test]
async fn redlock_with_three_of_five_nodes_stopped_fails_cleanly_and_leaves_no_partial_grant() {
    let mut masters = Masters::start(5);
    let stopped = [0usize, 1, 2];
    let stopped_ports: Vec<u16> = stopped.iter().map(|i| masters.server(*i).port()).collect();
    for i in stopped {
        masters.stop(i);
    }
    let client = redlock(&masters, Duration::from_millis(100));
    let lock = client.lock("redlock/three-down").unwrap();

    let wait = Duration::from_millis(800);
    let started = Instant::now();
    let e = lock.acquire_timeout(wait).await.unwrap_err();
    let took = started.elapsed();
    assert!(e.is_no_quorum(), "{e}");
    assert!(
        matches!(
            e.kind(),
            ErrorKind::NoQuorum {
                answered: 2,
                needed: 3
            }
        ),
        "{:?}",
        e.kind()
    );
    assert!(took < wait + Duration::from_millis(500), "took {took:?}");
    let named: Vec<&str> = e.node_failures().iter().map(|f| f.node.as_str()).collect();
    for port in stopped_ports {
        assert!(
            named.iter().any(|n| n.contains(&format!(":{port}"))),
            "node on port {port} not named in {named:?} ({e})"
        );
    }
    // The two live nodes granted every round; each round was taken back everywhere.
    assert_eq!(holders(&masters, &[3, 4], lock.redis_key()).await, 0);

    let e = lock.try_acquire().await.unwrap_err();
    assert!(e.is_no_quorum(), "{e}");
    assert_eq!(holders(&masters, &[3, 4], lock.redis_key()).await, 0);
    client.shutdown().await;
}

#[tokio::test]
async fn a_paused_redlock_node_does_not_delay_acquire_beyond_the_node_timeout() {
    let masters = Masters::start(5);
    let node_timeout = Duration::from_millis(100);
    let client = redlock(&masters, node_timeout);
    client.ping().await.unwrap();
    let lock = client.lock("redlock/paused").unwrap();

    // One paused node: the other four answer at once.
    let pause = masters.pause(0);
    let started = Instant::now();
    let guard = lock.try_acquire().await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(600), "took {took:?}");
    guard.release().await.unwrap();

    // Two paused nodes and one held by someone else: no quorum without the paused
    // nodes, so acquire must give up on them after the node timeout, not the 2 s
    // response timeout.
    let _second = masters.pause(1);
    let mut c2 = con(&masters, 2).await;
    redis::cmd("HSET")
        .arg(lock.redis_key())
        .arg("owner")
        .arg("someone-else")
        .arg("token")
        .arg(1)
        .arg("count")
        .arg(1)
        .query_async::<()>(&mut c2)
        .await
        .unwrap();
    redis::cmd("PEXPIRE")
        .arg(lock.redis_key())
        .arg(60_000)
        .query_async::<()>(&mut c2)
        .await
        .unwrap();
    let started = Instant::now();
    let e = lock.try_acquire().await.unwrap_err();
    let took = started.elapsed();
    assert!(e.is_contended() || e.is_no_quorum(), "{e}");
    assert!(
        took < Duration::from_millis(1_000),
        "took {took:?} with a node timeout of {node_timeout:?}"
    );
    assert_eq!(holders(&masters, &[3, 4], lock.redis_key()).await, 0);
    drop(pause);
    client.shutdown().await;
}

#[tokio::test]
async fn redlock_fencing_tokens_increase_even_when_node_counters_disagree() {
    let mut masters = Masters::start(5);
    let client = redlock(&masters, Duration::from_millis(200));
    let lock = client.lock("redlock/fence").unwrap();

    // Node 4's counter runs far ahead of the others.
    let g = lock.try_acquire().await.unwrap();
    let first = g.fencing_token();
    g.release().await.unwrap();
    let mut c4 = con(&masters, 4).await;
    let ahead = first + 1_000_000_000;
    redis::cmd("SET")
        .arg(lock.fence_key())
        .arg(ahead)
        .query_async::<()>(&mut c4)
        .await
        .unwrap();

    // With nodes 0 and 1 down, a grant needs node 4 and takes its token; nodes 2 and 3
    // must learn it.
    masters.stop(0);
    masters.stop(1);
    let g = lock.try_acquire().await.unwrap();
    let with_node4 = g.fencing_token();
    assert!(with_node4 > ahead, "{with_node4} <= {ahead}");
    g.release().await.unwrap();

    // Without node 4 (and with 0 and 1 back, their counters lost), every later grant
    // still carries a larger token: any majority of the four includes node 2 or 3.
    masters.stop(4);
    masters.restart(0);
    masters.restart(1);
    let mut last = with_node4;
    for _ in 0..10 {
        let g = lock.try_acquire().await.unwrap();
        assert!(
            g.fencing_token() > last,
            "token {} after {last}",
            g.fencing_token()
        );
        last = g.fencing_token();
        g.release().await.unwrap();
    }
    client.shutdown().await;
}

#[tokio::test]
async fn a_redlock_lease_is_renewed_by_quorum_and_lost_when_the_quorum_is_lost() {
    let masters = Masters::start(5);
    let client = Client::redlock_builder(masters.urls())
        .response_timeout(Duration::from_millis(500))
        .default_ttl(Duration::from_millis(900))
        .node_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let lock = client.lock("redlock/renewed").unwrap();
    let guard = lock.acquire().await.unwrap();
    assert!(guard.renew_every().is_some());

    // Held through three lease lengths by renewal.
    let until = Instant::now() + Duration::from_millis(2_700);
    while Instant::now() < until {
        assert!(guard.lost_reason().is_none(), "{guard:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(guard.remaining() > Duration::ZERO);

    // An operator deletes the key on three nodes: the quorum is gone.
    for i in [0, 1, 2] {
        redis::cmd("DEL")
            .arg(lock.redis_key())
            .query_async::<()>(&mut con(&masters, i).await)
            .await
            .unwrap();
    }
    let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("lost() fires within a lease");
    assert_eq!(reason, LostReason::Expired);

    // Extending a lost lease says so.
    let e = guard.extend(Duration::from_secs(1)).await.unwrap_err();
    assert!(e.is_lease_lost(), "{e}");
    drop(guard);
    client.shutdown().await;
    poll_until(
        Duration::from_secs(2),
        "released on the other nodes",
        || async { holders(&masters, &[3, 4], lock.redis_key()).await == 0 },
    )
    .await;
}

#[tokio::test]
async fn redlock_extend_needs_a_quorum() {
    let mut masters = Masters::start(5);
    let client = redlock(&masters, Duration::from_millis(100));
    let lock = client
        .lock("redlock/extend")
        .unwrap()
        .ttl(Duration::from_secs(5))
        .auto_renew(false);
    let guard = lock.try_acquire().await.unwrap();
    guard.extend(Duration::from_secs(10)).await.unwrap();
    assert!(guard.remaining() > Duration::from_secs(9));
    for i in [0, 1, 2] {
        masters.stop(i);
    }
    let before = guard.valid_until();
    let e = guard.extend(Duration::from_secs(20)).await.unwrap_err();
    assert!(e.is_no_quorum(), "{e}");
    assert_eq!(e.node_failures().len(), 3, "{e}");
    assert_eq!(guard.valid_until(), before);
    client.shutdown().await;
}

#[tokio::test]
async fn redlock_client_ping_needs_a_quorum_and_bad_input_is_rejected() {
    let mut masters = Masters::start(3);
    let client = redlock(&masters, Duration::from_millis(100));
    client.ping().await.unwrap();
    masters.stop(0);
    client.ping().await.unwrap();
    masters.stop(1);
    let e = client.ping().await.unwrap_err();
    assert!(e.is_no_quorum(), "{e}");
    // Reading the nodes needs a quorum too: one of three is not a view of the lock.
    let e = client.inspect("any").await.unwrap_err();
    assert!(e.is_no_quorum(), "{e}");
    let e = client.force_release("any").await.unwrap_err();
    assert!(e.is_no_quorum(), "{e}");

    let none: [&str; 0] = [];
    assert!(Client::redlock_builder(none)
        .build()
        .unwrap_err()
        .is_invalid_input());
    let e = Client::redlock_builder(["redis://127.0.0.1:1", "http://x"])
        .build()
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    let e = Client::redlock_builder(masters.urls())
        .node_timeout(Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
}

#[tokio::test]
async fn what_a_redlock_client_cannot_do_is_refused_naming_the_topology_and_the_operation() {
    let masters = Masters::start(3);
    let client = redlock(&masters, Duration::from_millis(100));
    let fair = client
        .fair_lock("redlock/caps")
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err();
    let acks = client
        .lock("redlock/caps")
        .unwrap()
        .replica_acks(1, Duration::from_millis(100))
        .try_acquire()
        .await
        .unwrap_err();
    for (e, operation) in [(fair, "fair locks"), (acks, "replica acknowledgements")] {
        assert!(e.is_invalid_input(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("RedLock") && text.contains(operation),
            "{text}"
        );
    }
    client.shutdown().await;
}

#[tokio::test]
async fn inspecting_a_redlock_lock_shows_each_node_and_the_holder_a_majority_agrees_on() {
    let mut masters = Masters::start(3);
    let client = redlock(&masters, Duration::from_millis(200));
    let guard = client
        .lock("redlock/seen")
        .unwrap()
        .acquire()
        .await
        .unwrap();
    let key = client.lock("redlock/seen").unwrap().redis_key().to_string();
    let info = client.inspect("redlock/seen").await.unwrap();
    assert_eq!(info.nodes.len(), 3);
    let holder = info.holder.clone().expect("a majority holds it");
    assert_eq!(holder.owner_id, guard.owner_id());
    assert_eq!(holder.fencing_token, guard.fencing_token());
    assert!(info.nodes.iter().all(|v| v.error.is_none()), "{info:?}");
    // A quorum grant is on 2 or 3 nodes (one that answered after the quorum may not hold it).
    let holding: Vec<usize> = (0..3).filter(|i| info.nodes[*i].holder.is_some()).collect();
    assert!(holding.len() >= 2, "{info:?}");
    let (keep, lose) = (holding[0], holding[1]);
    let stop = (0..3).find(|i| *i != keep && *i != lose).unwrap();

    // One node down: the other two still agree; its view says why it is missing.
    masters.stop(stop);
    let info = client.inspect("redlock/seen").await.unwrap();
    assert!(info.holder.is_some(), "{info:?}");
    assert!(info.nodes[stop].error.is_some(), "{:?}", info.nodes);
    // On one node only, the lock is no majority's: not held.
    let mut con = masters.server(lose).async_connection().await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .unwrap();
    let info = client.inspect("redlock/seen").await.unwrap();
    assert!(info.holder.is_none(), "{info:?}");
    // An operator's force release removes it from every node that answers.
    let removed = client.force_release("redlock/seen").await.unwrap();
    assert_eq!(
        removed.expect("one node still held it").owner_id,
        guard.owner_id()
    );
    let info = client.inspect("redlock/seen").await.unwrap();
    assert!(info.nodes.iter().all(|v| v.holder.is_none()), "{info:?}");
    drop(guard);
    client.shutdown().await;
}
