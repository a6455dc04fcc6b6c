//! The watchdog's schedule, seen from the server: every auto-renewed lease is renewed at
//! `grant + k × interval` (never late, at most a batching window early) whatever else the
//! client's scheduler holds, and no healthy lease is ever lost.
//!
//! Renewals are observed as jumps of the lock key's PTTL, polled by a separate connection.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::steady;
use leasehold::{Client, LockGuard};
use leasehold_testkit::RedisServer;
use rand::Rng;
use tokio::sync::Mutex;

const MS: Duration = Duration::from_millis(1);

/// A lease under observation: when its acquire was sent (at the earliest) and returned.
struct Granted {
    key: String,
    sent_after: Instant,
    returned_at: Instant,
    guard: LockGuard,
}

async fn take(client: &Client, name: String, ttl: Duration, every: Duration) -> Granted {
    let lock = client.lock(&name).unwrap().ttl(ttl).renew_every(every);
    let sent_after = Instant::now();
    let guard = lock.try_acquire().await.unwrap();
    Granted {
        key: format!("leasehold:{{{name}}}"),
        sent_after,
        returned_at: Instant::now(),
        guard,
    }
}

/// Records, for every key, the instants at which its PTTL went up (a renewal landed),
/// polling every 5 ms until `until`.
async fn watch_renewals(
    server: &RedisServer,
    keys: Vec<String>,
    until: Instant,
) -> HashMap<String, Vec<Instant>> {
    let (tx, rx) = tokio::sync::watch::channel(Some(until));
    let seen = watch_renewals_until(server.async_connection().await, keys, rx).await;
    drop(tx);
    seen
}

/// As [`watch_renewals`], until the time `until` holds once it is set (so watching can
/// start before the grants it waits for are made).
async fn watch_renewals_until(
    mut con: redis::aio::MultiplexedConnection,
    keys: Vec<String>,
    until: tokio::sync::watch::Receiver<Option<Instant>>,
) -> HashMap<String, Vec<Instant>> {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut seen: HashMap<String, Vec<Instant>> = HashMap::new();
    while until.borrow().is_none_or(|u| Instant::now() < u) {
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("PTTL").arg(k);
        }
        let ttls: Vec<i64> = pipe.query_async(&mut con).await.expect("PTTL");
        let at = Instant::now();
        for (k, ttl) in keys.iter().zip(ttls) {
            if let Some(prev) = last.insert(k.clone(), ttl) {
                // A renewal resets the PTTL to the whole TTL: a jump well above polling
                // noise (from a key that existed: its grant is not a renewal).
                if prev >= 0 && ttl > prev + 40 {
                    seen.entry(k.clone()).or_default().push(at);
                }
            }
        }
        tokio::time::sleep(5 * MS).await; // the observation's polling period
    }
    seen
}

/// Assert that lease `g`'s first `count` renewals landed at `grant + k × every`: no later
/// than `late` after it, no earlier than the batching window before it.
fn assert_on_schedule(
    g: &Granted,
    renewals: &[Instant],
    every: Duration,
    count: u32,
    late: Duration,
) {
    let window = (every / 8).min(250 * MS);
    assert!(
        renewals.len() >= count as usize,
        "{}: {} renewals seen, {count} expected: {:?}",
        g.key,
        renewals.len(),
        renewals
            .iter()
            .map(|r| r.saturating_duration_since(g.sent_after))
            .collect::<Vec<_>>()
    );
    for k in 1..=count {
        let seen = renewals[k as usize - 1];
        let earliest = g.sent_after + k * every - window;
        let latest = g.returned_at + k * every + late;
        assert!(
            seen >= earliest && seen <= latest,
            "{}: renewal {k} landed {:?} after the grant; due at {:?} (window {:?}, {:?} late allowed)",
            g.key,
            seen.saturating_duration_since(g.sent_after),
            k * every,
            window,
            late
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_granted_together_and_at_random_offsets_are_each_renewed_on_their_own_schedule() {
    let server = RedisServer::start();
    let holder = steady(&server.url());
    let rival = steady(&server.url());
    let ttl = Duration::from_secs(3);
    let every = 990 * MS; // just under a third of the TTL
    let rounds = 3;

    // Watch from the start: the first renewals of the first leases may come before the
    // last lease is granted.
    let mut names: Vec<String> = (0..10).map(|i| format!("together/{i}")).collect();
    names.extend((0..20).map(|i| format!("spread/{i}")));
    let keys = names.iter().map(|n| format!("leasehold:{{{n}}}")).collect();
    let (stop_at, until) = tokio::sync::watch::channel(None);
    let watcher = tokio::spawn(watch_renewals_until(
        server.async_connection().await,
        keys,
        until,
    ));

    // Ten leases at once, then twenty at random offsets over one and a half intervals.
    let mut granted: Vec<Granted> = futures_util::future::join_all(
        (0..10).map(|i| take(&holder, format!("together/{i}"), ttl, every)),
    )
    .await;
    for i in 0..20 {
        let gap = rand::rng().random_range(0..75);
        tokio::time::sleep(gap * MS).await; // the scenario: grants spread at random
        granted.push(take(&holder, format!("spread/{i}"), ttl, every).await);
    }
    let last_grant = granted.iter().map(|g| g.returned_at).max().unwrap();
    stop_at.send_replace(Some(last_grant + rounds * every + 300 * MS));
    let seen = watcher.await.unwrap();

    for g in &granted {
        assert!(
            !g.guard.is_lost(),
            "{} lost: {:?}",
            g.key,
            g.guard.lost_reason()
        );
        let renewals = seen.get(&g.key).map(Vec::as_slice).unwrap_or_default();
        assert_on_schedule(g, renewals, every, rounds, 150 * MS);
        let name = g.guard.name().to_string();
        let err = rival.lock(&name).unwrap().try_acquire().await.unwrap_err();
        assert!(err.is_contended(), "{name}: {err}");
    }
    for g in granted {
        assert!(g.guard.release().await.unwrap().is_released());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_renewed_just_under_half_their_ttl_and_granted_together_are_never_lost() {
    let server = RedisServer::start();
    let holder = steady(&server.url());
    let rival = steady(&server.url());
    let ttl = Duration::from_secs(3);
    let every = 1_490 * MS;
    let granted: Vec<Granted> = futures_util::future::join_all(
        (0..12).map(|i| take(&holder, format!("tight/{i}"), ttl, every)),
    )
    .await;

    // Four intervals; a rival keeps trying every lock meanwhile.
    let stolen = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let names: Vec<String> = granted.iter().map(|g| g.guard.name().to_string()).collect();
    let rival_task = {
        let stolen = stolen.clone();
        let rival = rival.clone();
        let until = Instant::now() + 4 * every;
        tokio::spawn(async move {
            while Instant::now() < until {
                for name in &names {
                    if let Ok(g) = rival.lock(name).unwrap().try_acquire().await {
                        stolen.lock().await.insert(name.clone());
                        drop(g);
                    }
                }
                tokio::time::sleep(50 * MS).await; // the rival's retry period
            }
        })
    };
    let keys = granted.iter().map(|g| g.key.clone()).collect();
    let seen = watch_renewals(&server, keys, Instant::now() + 4 * every).await;
    rival_task.await.unwrap();

    assert!(
        stolen.lock().await.is_empty(),
        "granted to the rival: {:?}",
        stolen.lock().await
    );
    for g in &granted {
        assert!(
            !g.guard.is_lost(),
            "{} lost: {:?}",
            g.key,
            g.guard.lost_reason()
        );
        let renewals = seen.get(&g.key).map(Vec::as_slice).unwrap_or_default();
        assert_on_schedule(g, renewals, every, 3, 150 * MS);
    }
    for g in granted {
        assert!(g.guard.release().await.unwrap().is_released());
    }
}
