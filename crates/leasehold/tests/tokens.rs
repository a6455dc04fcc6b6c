//! Fencing tokens never repeat where they are the only safety net: after the counter is
//! rolled back (a restart from an older snapshot), and after a failover to a replica that
//! missed the last grants (Sentinel, Cluster). Every grant floors its token with the
//! server's clock, so the next holder's token is above the old holder's and a fenced
//! resource refuses the old holder's late write.

mod common;

use std::time::Duration;

use common::{client, poll_until};
use leasehold::Client;
use leasehold_testkit::{FencedResource, History, RedisCluster, RedisServer, SentinelGroup};

/// SIGSTOP / SIGCONT a server process (the test kit's pause guard borrows its owner,
/// which the failover steps need mutably).
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The old holder's late write after the new holder's: a resource fenced by token must
/// refuse it.
fn fenced_resource_refuses_the_old_holder(name: &str, old: u64, new: u64) {
    let history = History::new();
    let resource = FencedResource::new(history.clone());
    let a = history.acquired(name, "old holder", Some(old));
    let b = history.acquired(name, "new holder", Some(new));
    assert!(resource.write(&b).is_accepted());
    assert!(
        !resource.write(&a).is_accepted(),
        "the old holder's write (token {old}) was accepted after the new holder's ({new})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_snapshot_still_issues_tokens_above_every_earlier_one() {
    let mut server = RedisServer::start();
    let c = client(&server.url());
    let lock = c.lock("tokens/rollback").unwrap();
    let first = lock.acquire().await.unwrap();
    first.release().await.unwrap();
    // The snapshot has the counter at the first token.
    let mut con = server.connection();
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    let mut last = 0;
    for _ in 0..3 {
        let g = lock.acquire().await.unwrap();
        last = g.fencing_token();
        g.release().await.unwrap();
    }
    // Killed and started again: it loads the snapshot, the counter is rolled back.
    server.restart();
    let mut con = server.connection();
    let counter: u64 = redis::cmd("GET")
        .arg("leasehold:{tokens/rollback}:fence")
        .query(&mut con)
        .unwrap();
    assert!(counter < last, "the restart did not roll the counter back");
    let again = lock.acquire().await.unwrap();
    assert!(
        again.fencing_token() > last,
        "token {} after the rollback repeats or precedes {last}",
        again.fencing_token()
    );
    fenced_resource_refuses_the_old_holder("tokens/rollback", last, again.fencing_token());
    again.release().await.unwrap();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_to_a_replica_that_missed_a_grant_gives_the_next_holder_a_larger_token()
{
    let mut group = SentinelGroup::start();
    let client = Client::sentinel_builder(group.sentinel_urls(), group.master_name())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let lock = client.lock("tokens/failover").unwrap();
    // The counter exists on both servers.
    lock.acquire().await.unwrap().release().await.unwrap();
    group.wait_for_replication(Duration::from_secs(5));

    // The replica stops and its link is cut, so the next grant never reaches it.
    let replica_pid = group.replica().pid();
    signal(replica_pid, "STOP");
    let mut master = group.master().connection();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(&mut master)
        .unwrap();
    let a = lock.acquire().await.unwrap();
    let old = group.master().addr();
    group.master_mut().stop();
    signal(replica_pid, "CONT");
    let new = tokio::task::block_in_place(|| group.wait_for_failover(old, Duration::from_secs(20)));
    assert_ne!(new, old);

    // B is granted on the promoted replica, which never saw A's grant.
    let other = Client::sentinel_builder(group.sentinel_urls(), group.master_name())
        .build()
        .unwrap();
    let b = other
        .lock("tokens/failover")
        .unwrap()
        .acquire_timeout(Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        b.fencing_token() > a.fencing_token(),
        "B's token {} repeats or precedes A's {}",
        b.fencing_token(),
        a.fencing_token()
    );
    fenced_resource_refuses_the_old_holder("tokens/failover", a.fencing_token(), b.fencing_token());
    b.release().await.unwrap();
    drop(a);
    other.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_to_a_replica_that_missed_a_grant_gives_the_next_holder_a_larger_token()
{
    let mut cluster = RedisCluster::start(3);
    let name = "tokens/cluster";
    let key = format!("leasehold:{{{name}}}");
    let primary = cluster.node_for_key(key.as_bytes());
    let replica = cluster.add_replica(primary).unwrap();
    let client = Client::cluster_builder(cluster.urls()[..1].to_vec())
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let lock = client.lock(name).unwrap();
    lock.acquire().await.unwrap().release().await.unwrap();
    // The replica has the counter.
    let mut at_replica = cluster.nodes()[replica].connection();
    poll_until(
        Duration::from_secs(10),
        "the counter on the replica",
        || {
            let got: Option<u64> = redis::cmd("READONLY")
                .query::<()>(&mut at_replica)
                .ok()
                .and_then(|()| {
                    redis::cmd("GET")
                        .arg(format!("{key}:fence"))
                        .query(&mut at_replica)
                        .ok()
                })
                .flatten();
            async move { got.is_some() }
        },
    )
    .await;

    // Stop the replica and cut its link: A's grant never reaches it.
    let replica_pid = cluster.nodes()[replica].pid();
    signal(replica_pid, "STOP");
    let mut at_primary = cluster.nodes()[primary].connection();
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(&mut at_primary)
        .unwrap();
    let a = lock.acquire().await.unwrap();
    cluster.node_mut(primary).stop();
    signal(replica_pid, "CONT");

    // The cluster promotes the replica (node timeout 2 s); B is granted there.
    let other = Client::cluster_builder(vec![cluster.urls()[replica].clone()])
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let b = loop {
        if let Ok(g) = other.lock(name).unwrap().try_acquire().await {
            break g;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no grant on the promoted replica within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        b.fencing_token() > a.fencing_token(),
        "B's token {} repeats or precedes A's {}",
        b.fencing_token(),
        a.fencing_token()
    );
    fenced_resource_refuses_the_old_holder(name, a.fencing_token(), b.fencing_token());
    b.release().await.unwrap();
    drop(a);
    other.shutdown().await;
    client.shutdown().await;
}
