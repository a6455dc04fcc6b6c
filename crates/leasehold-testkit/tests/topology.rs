//! Integration tests for the multi-server topologies: independent masters, a
//! Sentinel group that fails over, and a Redis Cluster that routes keys,
//! also with a fault proxy in front of every node.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use leasehold_testkit::{
    poll_until, FaultProxy, Masters, RedisCluster, RedisServer, SentinelGroup,
};
use nix::{sys::signal::kill, unistd::Pid};

/// Upper bound for a Sentinel failover with the group's 1 s down-after.
const FAILOVER_WITHIN: Duration = Duration::from_secs(15);
const SOON: Duration = Duration::from_secs(5);

fn process_exists(pid: u32) -> bool {
    // Signal 0 checks existence; a zombie still exists, so this is false only
    // once the process was reaped.
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), None).is_ok()
}

fn ping(url: &str) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    redis::cmd("PING").query(&mut con)
}

fn set(server: &RedisServer, key: &str, value: &str) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut server.connection())
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut server.connection())
        .unwrap_or_else(|error| panic!("GET {key} failed: {error}\n{}", server.log()))
}

fn role(server: &RedisServer) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("role:"))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

#[test]
fn masters_start_independently_and_one_can_be_stopped() {
    let started = Instant::now();
    let mut masters = Masters::start(5);
    eprintln!("5 masters started in {:?}", started.elapsed());
    assert_eq!(masters.len(), 5);
    let urls = masters.urls();
    assert_eq!(urls.len(), 5);
    for (i, server) in masters.servers().iter().enumerate() {
        assert_eq!(urls[i], server.url());
        set(server, "k", &format!("v{i}")).unwrap();
        assert_eq!(role(server), "master");
    }
    // Independent: each keeps its own value.
    for i in 0..masters.len() {
        assert_eq!(get(masters.server(i), "k"), Some(format!("v{i}")));
    }

    masters.stop(1);
    assert!(ping(&urls[1]).is_err(), "stopped master still answers");
    for i in [0, 2, 3, 4] {
        assert_eq!(ping(&urls[i]).unwrap(), "PONG", "master {i}");
    }

    masters.restart(1);
    assert_eq!(ping(&urls[1]).unwrap(), "PONG");
    assert_eq!(
        get(masters.server(1), "k"),
        None,
        "a restart comes back empty"
    );
    assert_eq!(get(masters.server(0), "k"), Some("v0".to_owned()));

    {
        let _paused = masters.pause(2);
        assert!(ping(&urls[2]).is_err(), "paused master answered");
        assert_eq!(ping(&urls[3]).unwrap(), "PONG");
    }
    assert_eq!(ping(&urls[2]).unwrap(), "PONG");
}

#[test]
fn sentinel_group_fails_over_when_master_is_stopped() {
    let started = Instant::now();
    let mut group = SentinelGroup::start();
    eprintln!("sentinel group formed in {:?}", started.elapsed());

    let old = group.master().addr();
    assert_eq!(group.current_master_addr(), Some(old));
    assert_eq!(group.sentinel_addrs().len(), 3);
    for (addr, url) in group.sentinel_addrs().iter().zip(group.sentinel_urls()) {
        assert!(addr.ip().is_loopback());
        assert_eq!(ping(&url).unwrap(), "PONG");
    }
    assert_eq!(role(group.replica()), "slave");

    set(group.master(), "before-failover", "kept").unwrap();
    group.wait_for_replication(SOON);
    assert_eq!(
        get(group.replica(), "before-failover"),
        Some("kept".to_owned())
    );

    group.master_mut().stop();
    let stopped = Instant::now();
    let new = group.wait_for_failover(old, FAILOVER_WITHIN);
    eprintln!(
        "failover took {:?} after the master stopped",
        stopped.elapsed()
    );

    assert_eq!(new, group.replica().addr());
    assert_eq!(group.current_master_addr(), Some(new));
    assert_eq!(role(group.replica()), "master");
    assert_eq!(
        get(group.replica(), "before-failover"),
        Some("kept".to_owned())
    );
    set(group.replica(), "after-failover", "written").unwrap();
}

#[test]
fn sentinel_group_replica_can_be_paused_without_a_failover() {
    let group = SentinelGroup::start();
    let master = group.master().addr();
    {
        let _paused = group.replica().pause();
        set(group.master(), "while-paused", "v").unwrap();
    }
    group.wait_for_replication(SOON);
    assert_eq!(get(group.replica(), "while-paused"), Some("v".to_owned()));
    assert_eq!(group.current_master_addr(), Some(master));
}

#[test]
fn sentinel_group_kills_every_process_on_drop() {
    let group = SentinelGroup::start();
    let mut pids = vec![group.master().pid(), group.replica().pid()];
    pids.extend(group.sentinels().iter().map(RedisServer::pid));
    assert!(pids.iter().all(|&pid| process_exists(pid)));
    drop(group);
    assert!(
        poll_until(SOON, || pids.iter().all(|&pid| !process_exists(pid))),
        "some of {pids:?} survived the drop"
    );
}

#[test]
fn sentinel_failover_timeout_panics_with_every_log() {
    let group = SentinelGroup::start();
    let old = group.master().addr();
    // The master is healthy, so no failover can happen.
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        group.wait_for_failover(old, Duration::from_millis(200))
    }))
    .expect_err("a failover away from a healthy master was reported");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    for label in [
        "initial master",
        "initial replica",
        "sentinel 0",
        "sentinel 2",
    ] {
        assert!(message.contains(label), "no {label:?} in: {message}");
    }
    assert!(
        message.contains("+monitor master"),
        "no sentinel log in: {message}"
    );
}

#[test]
fn cluster_assigns_every_slot_and_routes_keys() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3);
    eprintln!("3-node cluster formed in {:?}", started.elapsed());
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.urls().len(), 3);

    for node in cluster.nodes() {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut node.connection())
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    }
    // Every node owns some slots.
    let mut owned = [0usize; 3];
    for slot in 0..16384 {
        owned[cluster.node_for_slot(slot)] += 1;
    }
    assert!(owned.iter().all(|&n| n > 0), "{owned:?}");
    assert_eq!(owned.iter().sum::<usize>(), 16384);

    // The client-side slot function agrees with the server.
    let mut con = cluster.nodes()[0].connection();
    for key in [
        "foo",
        "bar",
        "",
        "{user1000}.following",
        "foo{}{bar}",
        "lock:{orders}:fence",
    ] {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .unwrap();
        assert_eq!(RedisCluster::slot_of(key.as_bytes()), slot, "key {key:?}");
    }

    let key = "leasehold:{routing}";
    let owner = cluster.node_for_key(key.as_bytes());
    set(&cluster.nodes()[owner], key, "here").unwrap();
    assert_eq!(get(&cluster.nodes()[owner], key), Some("here".to_owned()));

    let other = (owner + 1) % cluster.nodes().len();
    let error = set(&cluster.nodes()[other], key, "there").unwrap_err();
    assert_eq!(error.code(), Some("MOVED"), "{error}");
    let (addr, slot) = error.redirect_node().expect("MOVED names the owner");
    assert_eq!(slot, RedisCluster::slot_of(key.as_bytes()));
    assert_eq!(addr, cluster.nodes()[owner].addr().to_string());
}

#[test]
fn cluster_refuses_fewer_than_three_masters() {
    let error = RedisCluster::try_start(2).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

/// The master port of every slot range in a node's `CLUSTER SLOTS`, as
/// `(first slot, port)`.
fn slot_ports(node: &RedisServer) -> Vec<(u16, u16)> {
    // [start, end, [ip, port, id, metadata]]: the clusters have no replicas.
    type Range = (u16, u16, (String, u16, String, redis::Value));
    let ranges: Vec<Range> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query(&mut node.connection())
        .unwrap();
    ranges
        .into_iter()
        .map(|(start, _end, (_ip, port, _id, _metadata))| (start, port))
        .collect()
}

/// A key that `cluster` routes to node `i`.
fn key_on(cluster: &RedisCluster, i: usize) -> String {
    (0..)
        .map(|n| format!("proxied:{n}"))
        .find(|key| cluster.node_for_key(key.as_bytes()) == i)
        .unwrap()
}

fn proxy_ports(proxies: &[FaultProxy]) -> Vec<u16> {
    proxies.iter().map(|proxy| proxy.addr().port()).collect()
}

/// Every node names every slot's master by its proxy's port, and nothing else.
fn assert_slots_announce(cluster: &RedisCluster, ports: &[u16]) {
    for (i, node) in cluster.nodes().iter().enumerate() {
        for (start, port) in slot_ports(node) {
            assert_eq!(
                port,
                ports[cluster.node_for_slot(start)],
                "node {i} names slot {start}'s master by port {port}, proxies {ports:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_behind_proxies_announces_the_proxy_ports() {
    let cluster = RedisCluster::start(3);
    let started = Instant::now();
    let proxies = cluster.proxied().await.unwrap();
    eprintln!("proxy ports announced in {:?}", started.elapsed());
    assert_eq!(proxies.len(), 3);
    let ports = proxy_ports(&proxies);
    for (proxy, node) in proxies.iter().zip(cluster.nodes()) {
        assert_eq!(proxy.upstream(), node.addr());
    }
    assert_slots_announce(&cluster, &ports);
    let announced: BTreeSet<u16> = cluster
        .nodes()
        .iter()
        .flat_map(|node| slot_ports(node).into_iter().map(|(_, port)| port))
        .collect();
    assert_eq!(announced, ports.iter().copied().collect());

    // A command sent to proxy i is seen by proxy i, and a MOVED it relays
    // names the owner's proxy, not the owner.
    for (i, proxy) in proxies.iter().enumerate() {
        let before = proxy.commands_seen();
        let client = redis::Client::open(proxy.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let key = key_on(&cluster, (i + 1) % proxies.len());
        let error = redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut con)
            .await
            .unwrap_err();
        assert!(proxy.commands_seen() > before, "proxy {i} saw nothing");
        let (addr, _) = error.redirect_node().expect("MOVED names the owner");
        assert_eq!(addr, proxies[(i + 1) % proxies.len()].addr().to_string());
    }

    // A cluster client given only the proxies reaches each node through its
    // proxy.
    let client = redis::cluster::ClusterClient::new(RedisCluster::proxied_urls(&proxies)).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    for (i, proxy) in proxies.iter().enumerate() {
        let key = key_on(&cluster, i);
        let before: Vec<u64> = proxies.iter().map(FaultProxy::commands_seen).collect();
        redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query_async::<()>(&mut con)
            .await
            .unwrap();
        assert_eq!(
            proxy.commands_seen(),
            before[i] + 1,
            "SET {key} on node {i}"
        );
        for (j, other) in proxies.iter().enumerate().filter(|&(j, _)| j != i) {
            assert_eq!(
                other.commands_seen(),
                before[j],
                "SET {key} went to proxy {j}"
            );
        }
        assert_eq!(get(&cluster.nodes()[i], &key), Some(i.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_restarted_behind_a_proxy_announces_the_proxy_again() {
    let mut cluster = RedisCluster::start(3);
    let proxies = cluster.proxied().await.unwrap();
    let ports = proxy_ports(&proxies);

    cluster.node_mut(0).restart();
    let own = cluster.nodes()[0].port();
    let announced = slot_ports(&cluster.nodes()[0]);
    assert!(
        announced
            .iter()
            .any(|&(start, port)| cluster.node_for_slot(start) == 0 && port == own),
        "a restarted node announces its own port {own}: {announced:?}"
    );

    cluster.announce_ports(&ports).unwrap();
    assert_slots_announce(&cluster, &ports);

    let own: Vec<u16> = cluster.addrs().iter().map(|addr| addr.port()).collect();
    cluster.announce_ports(&own).unwrap();
    assert_slots_announce(&cluster, &own);

    let error = cluster.announce_ports(&ports[..2]).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
