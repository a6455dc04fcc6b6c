//! The torture suite's topology cells: leasehold alone on a Sentinel group, five RedLock
//! masters or a Redis Cluster of the test kit, with the topology's own faults —
//! failovers, node restarts and pauses, slot migrations — injected from a blocking task
//! while the workers contend. The workers, the history checker and the fenced resource
//! are the one-server cells'.
//!
//! Invariants: every cell runs at least one fault cycle with the workers running (a cell
//! is at least [`MIN_CELL`] long), every loop is bounded by the cell's deadline and the
//! test kit's own timeouts, and every server is a private loopback process.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::Client;
use leasehold_testkit::torture::{run_workers, LockUnderTest, RunCounts, WorkPlan};
use leasehold_testkit::{
    FencedResource, History, Masters, RedisCluster, RedisServer, SentinelGroup,
};

use super::{LeaseholdUnderTest, LockKind, Outcome, Scenario, Topology, TTL, WORKERS};

/// The shortest topology cell: one failover cycle takes seconds.
pub const MIN_CELL: Duration = Duration::from_secs(8);

const NAME: &str = "torture";

fn plan(work: Duration) -> WorkPlan {
    WorkPlan {
        name: NAME.into(),
        names: 1,
        ttl: TTL,
        wait: Duration::from_millis(300),
        writes: 3,
        work,
        pause_every: None,
        cancel_acquires_within: None,
    }
}

/// Run one topology cell of `scenario` for at least `duration`.
///
/// # Cancel safety
/// Cancel-safe: the topology's processes are killed when it is dropped; the workers end
/// by themselves at the cell's deadline.
pub(crate) async fn run_cell(scenario: Scenario, duration: Duration) -> anyhow::Result<Outcome> {
    let duration = duration.max(MIN_CELL);
    match scenario.topology() {
        Topology::Sentinel { acks } => sentinel(scenario, acks, duration).await,
        Topology::RedLock => redlock(scenario, duration).await,
        Topology::Cluster => cluster(scenario, duration).await,
        Topology::Server => anyhow::bail!("{scenario} runs on one server, not a topology"),
    }
}

/// Contend on `lock` (work `work` before each write) until `until` while `faults` runs,
/// then audit the topology it hands back (`servers`: its data servers) and shape the cell.
async fn finish<T, E: Into<anyhow::Error>>(
    scenario: Scenario,
    lock: LeaseholdUnderTest,
    work: Duration,
    until: Instant,
    faults: tokio::task::JoinHandle<Result<T, E>>,
    servers: fn(&T) -> Vec<&RedisServer>,
) -> anyhow::Result<Outcome> {
    let ((counts, report), topology) = tokio::join!(contend(lock, work, until), faults);
    let topology = topology.map_err(join_error)?.map_err(Into::into)?;
    let keys = audit(&servers(&topology));
    Ok(Outcome::of(
        scenario,
        LockKind::Leasehold,
        counts,
        &report,
        keys,
    ))
}

/// The workers on `lock` until `until`, and what the checker found.
async fn contend(
    lock: LeaseholdUnderTest,
    work: Duration,
    until: Instant,
) -> (RunCounts, leasehold_testkit::Report) {
    let history = History::new();
    let resource = FencedResource::new(history.clone());
    let lock: Arc<dyn LockUnderTest> = Arc::new(lock);
    let counts = run_workers(lock, plan(work), WORKERS, resource, until).await;
    (counts, history.check())
}

/// Lock keys (fencing counters excepted) without a TTL on the running `servers`, by name.
fn audit(servers: &[&RedisServer]) -> usize {
    let mut without = BTreeSet::new();
    for server in servers {
        let Ok(mut con) = server.client().get_connection() else {
            continue;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut con)
            .unwrap_or_default();
        for key in keys.into_iter().filter(|k| !k.ends_with(":fence")) {
            let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut con).unwrap_or(0);
            if pttl == -1 {
                without.insert(key);
            }
        }
    }
    without.len()
}

fn join_error(e: tokio::task::JoinError) -> anyhow::Error {
    if e.is_panic() {
        anyhow::anyhow!("a fault step of the test kit failed: {e}")
    } else {
        anyhow::anyhow!("{e}")
    }
}

/// Sentinel: kill the master while workers hold and contend, wait for the promotion, and
/// start the old master again (empty: the sentinels make it a replica). Leases are renewed
/// (3 s), so a holder can outlive the failover on the promoted replica.
async fn sentinel(scenario: Scenario, acks: bool, duration: Duration) -> anyhow::Result<Outcome> {
    // 1.5 s of contention, the failover (about 2.5 s), then the workers contend on the
    // new master for the rest of the cell.
    let duration = duration.max(Duration::from_secs(10));
    let group = tokio::task::spawn_blocking(SentinelGroup::try_start).await??;
    let client = Client::sentinel_builder(group.sentinel_urls(), group.master_name())
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(150))
        .build()?;
    let lock = LeaseholdUnderTest::new(client, Some(Duration::from_secs(3)), acks.then_some(1));
    let until = Instant::now() + duration;
    let faults = tokio::task::spawn_blocking(move || {
        let mut group = group;
        // One cycle per cell (the group is fresh: its first master serves): a failover
        // takes seconds, and the workers then contend on the promoted replica.
        std::thread::sleep(Duration::from_millis(1_500)); // contention before the kill
        let old = group.master().addr();
        group.master_mut().stop();
        group.wait_for_failover(old, Duration::from_secs(20));
        // The old master starts again, empty; the sentinels make it a replica of the new
        // one in the background (with acks, grants wait for that).
        group
            .master_mut()
            .try_restart()
            .map_err(|e| anyhow::anyhow!("the old master did not start again: {e}"))?;
        Ok::<_, anyhow::Error>(group)
    });
    let servers: fn(&SentinelGroup) -> Vec<&RedisServer> = |g| vec![g.master(), g.replica()];
    finish(
        scenario,
        lock,
        Duration::from_millis(50),
        until,
        faults,
        servers,
    )
    .await
}

/// RedLock over five masters (fixed 400 ms leases): one node restarted at once, empty, or
/// two nodes paused past the lease, again and again.
async fn redlock(scenario: Scenario, duration: Duration) -> anyhow::Result<Outcome> {
    let masters = tokio::task::spawn_blocking(|| Masters::try_start(5)).await??;
    let client = Client::redlock_builder(masters.urls())
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(150))
        .node_timeout(Duration::from_millis(50))
        .build()?;
    let lock = LeaseholdUnderTest::new(client, None, None);
    let until = Instant::now() + duration;
    let faults = tokio::task::spawn_blocking(move || {
        let mut masters = masters;
        let mut i = 0usize;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(300)); // the fault period
            if scenario == Scenario::RedlockNodeRestart {
                // Killed and started again at once: it forgets the grants it held.
                masters
                    .server_mut(i % 5)
                    .try_restart()
                    .map_err(|e| anyhow::anyhow!("node {} did not start again: {e}", i % 5))?;
            } else {
                let a = masters.pause(i % 5);
                let b = masters.pause((i + 1) % 5);
                std::thread::sleep(Duration::from_millis(800)); // past the 400 ms lease
                a.resume();
                b.resume();
            }
            i += 1;
        }
        Ok::<_, anyhow::Error>(masters)
    });
    let servers: fn(&Masters) -> Vec<&RedisServer> = |m| m.servers().iter().collect();
    finish(
        scenario,
        lock,
        Duration::from_millis(10),
        until,
        faults,
        servers,
    )
    .await
}

/// Redis Cluster (fixed 400 ms leases): the lock's primary and its replica swap roles with
/// `CLUSTER FAILOVER`, or the lock's slot migrates between two primaries, again and again.
async fn cluster(scenario: Scenario, duration: Duration) -> anyhow::Result<Outcome> {
    let (cluster, primary, replica) = tokio::task::spawn_blocking(|| {
        let mut cluster = RedisCluster::try_start(3)?;
        let key = format!("leasehold:{{{NAME}}}");
        let primary = cluster.node_for_key(key.as_bytes());
        let replica = cluster.add_replica(primary)?;
        Ok::<_, std::io::Error>((cluster, primary, replica))
    })
    .await??;
    let client = Client::cluster_builder(cluster.urls())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(150))
        .build()?;
    let lock = LeaseholdUnderTest::new(client, None, None);
    let until = Instant::now() + duration;
    let faults = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let slot = RedisCluster::slot_of(format!("leasehold:{{{NAME}}}").as_bytes());
        let (mut serving, mut standby) = (primary, replica);
        let other = (primary + 1) % 3;
        while Instant::now() + Duration::from_secs(2) < until {
            std::thread::sleep(Duration::from_millis(300)); // the fault period
            if scenario == Scenario::ClusterFailover {
                cluster.failover(standby)?;
                std::mem::swap(&mut serving, &mut standby);
            } else {
                let to = if serving == primary { other } else { primary };
                cluster.move_slot(slot, to)?;
                serving = to;
            }
        }
        Ok::<_, std::io::Error>(cluster)
    });
    let servers: fn(&RedisCluster) -> Vec<&RedisServer> = |c| c.nodes().iter().collect();
    finish(
        scenario,
        lock,
        Duration::from_millis(10),
        until,
        faults,
        servers,
    )
    .await
}
