//! Redis Cluster: locks on names in every slot, wake-ups through sharded pub/sub on the
//! node that owns the lock, renewals batched per slot, and seed 004 (a lost reply that the
//! cluster client retries) still granting exactly once.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::poll_until;
use leasehold::{Client, ReleaseOutcome};
use leasehold_testkit::topology::key_slot;
use leasehold_testkit::RedisCluster;

fn cluster_client(seeds: Vec<String>) -> leasehold::ClientBuilder {
    Client::cluster_builder(seeds)
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_millis(500))
}

fn node_con(cluster: &RedisCluster, i: usize) -> redis::Connection {
    cluster.nodes()[i].connection()
}

fn lock_key(name: &str) -> String {
    format!("leasehold:{{{name}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_names_spread_over_every_node_lock_and_release_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    // Seeded with one node only: the others are discovered.
    let client = cluster_client(cluster.urls()[..1].to_vec())
        .build()
        .unwrap();
    let names: Vec<String> = (0..1_000).map(|i| format!("cl/{i}")).collect();
    let nodes: HashSet<usize> = names
        .iter()
        .map(|n| cluster.node_for_slot(key_slot(lock_key(n).as_bytes())))
        .collect();
    assert_eq!(nodes.len(), 3, "the names cover every node");

    for chunk in names.chunks(100) {
        let cycles = chunk.iter().map(|name| {
            let client = client.clone();
            async move {
                let lock = client
                    .lock(name)
                    .unwrap()
                    .ttl(Duration::from_secs(10))
                    .auto_renew(false);
                let guard = lock.try_acquire().await.unwrap();
                assert!(guard.fencing_token() > 0);
                assert_eq!(guard.hold_count(), 1);
                guard.release().await.unwrap()
            }
        });
        for outcome in futures_util::future::join_all(cycles).await {
            assert_eq!(outcome, ReleaseOutcome::Released);
        }
    }
    for i in 0..3 {
        let mut con = node_con(&cluster, i);
        let held: Vec<String> = redis::cmd("KEYS")
            .arg("leasehold:{cl/*}")
            .query(&mut con)
            .unwrap();
        assert!(held.is_empty(), "node {i} still holds {held:?}");
        let fences: Vec<String> = redis::cmd("KEYS")
            .arg("leasehold:{cl/*}:fence")
            .query(&mut con)
            .unwrap();
        assert!(!fences.is_empty(), "node {i} granted none of the locks");
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_for_a_lock_on_another_node_is_woken_by_sharded_pubsub() {
    let cluster = RedisCluster::start(3);
    let seed = 0;
    let name = (0..)
        .map(|i| format!("far/{i}"))
        .find(|n| cluster.node_for_slot(key_slot(lock_key(n).as_bytes())) != seed)
        .unwrap();
    let owner_node = cluster.node_for_slot(key_slot(lock_key(&name).as_bytes()));
    let holder_client = cluster_client(vec![cluster.urls()[seed].clone()])
        .build()
        .unwrap();
    let waiter_client = cluster_client(vec![cluster.urls()[seed].clone()])
        .build()
        .unwrap();
    let long = Duration::from_secs(30);
    let guard = holder_client
        .lock(&name)
        .unwrap()
        .ttl(long)
        .auto_renew(false)
        .acquire()
        .await
        .unwrap();

    let lock = waiter_client
        .lock(&name)
        .unwrap()
        .ttl(long)
        .auto_renew(false)
        .wait(Duration::from_secs(10));
    let waiter = tokio::spawn(async move {
        let g = lock.acquire().await;
        (g, Instant::now())
    });
    // The waiter's sharded subscription lives on the node that owns the lock's slot.
    let channel = format!("{}:released", lock_key(&name));
    let mut owner = node_con(&cluster, owner_node);
    poll_until(Duration::from_secs(5), "the waiter's SSUBSCRIBE", || {
        let n: (String, i64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(&channel)
            .query(&mut owner)
            .unwrap();
        let subscribed = n.1 >= 1;
        async move { subscribed }
    })
    .await;
    let calls = |con: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
        info.lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split("calls=").nth(1))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let before = calls(&mut owner);
    tokio::time::sleep(Duration::from_millis(500)).await; // holding, not polling for a condition
    let while_held = calls(&mut owner) - before;
    assert!(
        while_held <= 2,
        "the waiter polled {while_held} times while the lock was held"
    );

    let released_at = Instant::now();
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    let (got, at) = waiter.await.unwrap();
    let got = got.unwrap();
    let woke_after = at.duration_since(released_at);
    assert!(
        woke_after < Duration::from_secs(2),
        "woken {woke_after:?} after the release, with {long:?} of lease left"
    );
    got.release().await.unwrap();
    holder_client.shutdown().await;
    waiter_client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_leases_are_renewed_in_batches_per_slot() {
    let cluster = RedisCluster::start(3);
    let client = cluster_client(cluster.urls())
        .default_ttl(Duration::from_millis(900))
        .build()
        .unwrap();
    let mut guards = Vec::new();
    for i in 0..40 {
        guards.push(
            client
                .lock(&format!("renew/{i}"))
                .unwrap()
                .acquire()
                .await
                .unwrap(),
        );
    }
    let until = Instant::now() + Duration::from_millis(2_000);
    while Instant::now() < until {
        for g in &guards {
            assert!(g.lost_reason().is_none(), "{g:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = client.renewal_stats();
    assert!(stats.renewed >= 80, "{stats:?}");
    assert_eq!(stats.refused, 0, "{stats:?}");
    for g in guards {
        assert_eq!(g.release().await.unwrap(), ReleaseOutcome::Released);
    }
    client.shutdown().await;
}

#[tokio::test]
async fn cluster_settings_are_checked_before_any_io() {
    let none: [&str; 0] = [];
    assert!(Client::cluster_builder(none)
        .build()
        .unwrap_err()
        .is_invalid_input());
    let e = Client::cluster_builder(["redis://127.0.0.1:7000"])
        .replica_acks(1, Duration::from_millis(10))
        .build()
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_listing_scans_every_primary() {
    let cluster = RedisCluster::start(3);
    let client = cluster_client(cluster.urls()).build().unwrap();
    // Names whose keys land on each of the three primaries.
    let mut names: Vec<String> = Vec::new();
    let mut on_node = [false; 3];
    for i in 0..200 {
        let name = format!("jobs/{i}");
        let node = cluster.node_for_slot(key_slot(lock_key(&name).as_bytes()));
        if !on_node[node] {
            on_node[node] = true;
            names.push(name);
        }
        if on_node.iter().all(|x| *x) {
            break;
        }
    }
    assert_eq!(names.len(), 3, "a name for each primary");
    let mut guards = Vec::new();
    for name in &names {
        guards.push(client.lock(name).unwrap().acquire().await.unwrap());
    }
    let found = client.list("jobs/*", leasehold::LIST_LIMIT).await.unwrap();
    let listed: Vec<String> = found
        .names(leasehold::PrimitiveKind::Lock)
        .into_iter()
        .map(String::from)
        .collect();
    names.sort();
    assert_eq!(listed, names);
    for g in guards {
        g.release().await.unwrap();
    }
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_to_acquire_retried_by_the_cluster_client_still_grants_exactly_once() {
    use leasehold_testkit::{Match, Rule};
    let cluster = RedisCluster::start(3);
    let proxies = cluster.proxied().await.unwrap();
    let client = cluster_client(RedisCluster::proxied_urls(&proxies)[..1].to_vec())
        .response_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let name = "seed004/cluster";
    let node = cluster.node_for_slot(key_slot(lock_key(name).as_bytes()));
    let lock = client
        .lock(name)
        .unwrap()
        .ttl(Duration::from_secs(30))
        .auto_renew(false);
    // Load the scripts on that node first, so the lost reply is the grant itself.
    lock.try_acquire().await.unwrap().release().await.unwrap();

    // The acquire reaches Redis and runs; its reply is lost with the connection. The
    // cluster client reconnects and sends the same acquire again.
    let seen_before = proxies[node].commands_seen();
    let fault = proxies[node].add_rule(Rule::reply_to(Match::command("EVALSHA")).first(1).reset());
    let guard = lock
        .try_acquire()
        .await
        .expect("granted despite the lost reply");
    assert_eq!(fault.hits(), 1, "the fault fired");
    assert!(
        proxies[node].commands_seen() >= seen_before + 2,
        "the acquire was sent again"
    );
    assert_eq!(guard.hold_count(), 1);
    let mut con = node_con(&cluster, node);
    let count: Option<String> = redis::cmd("HGET")
        .arg(lock_key(name))
        .arg("count")
        .query(&mut con)
        .unwrap();
    assert_eq!(count.as_deref(), Some("1"));
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(lock_key(name))
        .query(&mut con)
        .unwrap();
    assert_eq!(
        fields.iter().filter(|f| f.starts_with("r:")).count(),
        1,
        "{fields:?}"
    );

    // One release frees it.
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    let exists: bool = redis::cmd("EXISTS")
        .arg(lock_key(name))
        .query(&mut con)
        .unwrap();
    assert!(!exists);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_set_spanning_every_node_of_a_cluster_is_held_all_or_none() {
    let cluster = RedisCluster::start(3);
    let a = cluster_client(cluster.urls()).build().unwrap();
    let b = cluster_client(cluster.urls()).build().unwrap();
    // Names whose keys live on three different nodes.
    let mut names: Vec<String> = Vec::new();
    let mut nodes = HashSet::new();
    for i in 0.. {
        let name = format!("set/{i}");
        if nodes.insert(cluster.node_for_slot(key_slot(lock_key(&name).as_bytes()))) {
            names.push(name);
        }
        if names.len() == 3 {
            break;
        }
    }
    let held = a.locks(&names).unwrap().acquire().await.unwrap();
    for name in &names {
        let node = cluster.node_for_slot(key_slot(lock_key(name).as_bytes()));
        let exists: bool = redis::cmd("EXISTS")
            .arg(lock_key(name))
            .query(&mut node_con(&cluster, node))
            .unwrap();
        assert!(exists, "{name} is held on its node");
    }
    // The reverse order shares every member: refused as a whole, nothing taken.
    let mut reversed = names.clone();
    reversed.reverse();
    reversed.push("set/extra".into());
    let err = b.locks(&reversed).unwrap().try_acquire().await.unwrap_err();
    assert!(err.is_contended(), "{err}");
    assert!(b.lock("set/extra").unwrap().try_acquire().await.is_ok());
    // Waiting in the reverse order is granted once the first set is released.
    let waiter = tokio::spawn({
        let b = b.clone();
        let names = names.clone();
        async move {
            let mut names = names;
            names.reverse();
            b.locks(&names).unwrap().acquire().await
        }
    });
    for (_, outcome) in held.release().await.unwrap() {
        assert_eq!(outcome, ReleaseOutcome::Released);
    }
    let second = waiter.await.unwrap().expect("the waiting set is granted");
    assert_eq!(second.members().len(), 3);
    second.release().await.unwrap();
}

/// How many EVALSHA calls node `i` has run.
fn evalsha_calls(cluster: &RedisCluster, i: usize) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut node_con(cluster, i))
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_set_whose_names_share_a_slot_is_taken_in_one_script_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let client = cluster_client(cluster.urls()).build().unwrap();
    // Three names whose keys hash to one slot.
    let slot = |n: &str| key_slot(lock_key(n).as_bytes());
    let target = slot("same/0");
    let names: Vec<String> = (0..2_000_000)
        .map(|i| format!("same/{i}"))
        .filter(|n| slot(n) == target)
        .take(3)
        .collect();
    assert_eq!(names.len(), 3);
    let node = cluster.node_for_slot(target);
    let set = client.locks(&names).unwrap();
    set.acquire().await.unwrap().release().await.unwrap();
    let before = evalsha_calls(&cluster, node);
    let held = set.acquire().await.unwrap();
    assert_eq!(
        evalsha_calls(&cluster, node) - before,
        1,
        "one script for the set"
    );
    let err = client
        .locks(&names[1..])
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_contended(), "{err}");
    for (_, outcome) in held.release().await.unwrap() {
        assert_eq!(outcome, ReleaseOutcome::Released);
    }
    // With a member from another slot: one script per slot, the slot's members together.
    let other = (0..)
        .map(|i| format!("other/{i}"))
        .find(|n| slot(n) != target)
        .unwrap();
    let mut mixed = names.clone();
    mixed.push(other.clone());
    let set = client.locks(&mixed).unwrap();
    set.acquire().await.unwrap().release().await.unwrap();
    let all = |c: &RedisCluster| {
        (0..c.nodes().len())
            .map(|i| evalsha_calls(c, i))
            .sum::<u64>()
    };
    let before = all(&cluster);
    let held = set.acquire().await.unwrap();
    assert_eq!(
        all(&cluster) - before,
        2,
        "one script per slot for 4 locks in 2 slots"
    );
    let order: Vec<&str> = held.members().iter().map(|g| g.name()).collect();
    let pos = order.iter().position(|n| *n == other).unwrap();
    assert!(
        pos == 0 || pos == 3,
        "a slot's members are neighbours: {order:?}"
    );
    held.release().await.unwrap();
}
