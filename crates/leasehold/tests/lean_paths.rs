//! The uncontended paths do the fewest server calls their guarantees allow, as PROTOCOL.md
//! counts them: an acquire of a free lock runs 6 calls inside its script (HMGET, GET, TIME,
//! SET … GET, HSET, PEXPIRE), a release with nobody waiting 3 (HMGET, ZCARD, DEL), and a
//! renewal of a held lease 2 per lease on Redis 7 (HEXISTS, PEXPIRE … GT). The counts are
//! read from the server's own command statistics around one operation.

use std::collections::BTreeMap;
use std::time::Duration;

use leasehold_testkit::RedisServer;

/// `INFO commandstats` as command -> calls.
fn stats(con: &mut redis::Connection) -> BTreeMap<String, u64> {
    let text: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

/// The commands run between two snapshots, leaving out the test's own INFO.
fn between(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .filter_map(|(name, n)| {
            let d = n - before.get(name).copied().unwrap_or(0);
            (d > 0).then(|| (name.clone(), d))
        })
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn is_redis_7_or_later(con: &mut redis::Connection) -> bool {
    let text: String = redis::cmd("INFO").arg("server").query(con).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("0");
    version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| m >= 7)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncontended_acquire_and_release_run_six_and_three_calls_in_their_scripts() {
    let server = RedisServer::start();
    let client = leasehold::Client::builder(server.url()).build().unwrap();
    // Warm up: connect, load the scripts.
    let warm = client.lock("warm").unwrap().auto_renew(false);
    warm.try_acquire().await.unwrap().release().await.unwrap();
    let mut con = server.connection();

    let lock = client.lock("lean").unwrap().auto_renew(false);
    let before = stats(&mut con);
    let guard = lock.try_acquire().await.unwrap();
    let acquired = stats(&mut con);
    assert_eq!(
        between(&before, &acquired),
        counts(&[
            ("evalsha", 1),
            ("hmget", 1),
            ("get", 1),
            ("time", 1),
            ("set", 1),
            ("hset", 1),
            ("pexpire", 1),
        ]),
        "an uncontended acquire"
    );
    guard.release().await.unwrap();
    let released = stats(&mut con);
    assert_eq!(
        between(&acquired, &released),
        counts(&[("evalsha", 1), ("hmget", 1), ("zcard", 1), ("del", 1)]),
        "an uncontended release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_held_leases_costs_two_calls_per_lease_on_redis_7() {
    let server = RedisServer::start();
    let mut con = server.connection();
    let client = leasehold::Client::builder(server.url()).build().unwrap();
    let mut guards = Vec::new();
    for i in 0..10 {
        let lock = client
            .lock(&format!("renewed-{i}"))
            .unwrap()
            .ttl(Duration::from_secs(30));
        guards.push(lock.try_acquire().await.unwrap());
    }
    // One explicit extend of each, as the watchdog's script does per lease.
    let before = stats(&mut con);
    for g in &guards {
        g.extend(Duration::from_secs(60)).await.unwrap();
    }
    let after = stats(&mut con);
    let ran = between(&before, &after);
    // extend: HEXISTS, PTTL, PEXPIRE (it answers the remaining TTL).
    assert_eq!(ran.get("hexists"), Some(&10), "{ran:?}");
    assert_eq!(
        ran.get("hget"),
        None,
        "the owner is read only on refusal: {ran:?}"
    );
    assert_eq!(ran.get("hmget"), None, "{ran:?}");
    let renew = leasehold::scripts::RENEW.plain;
    // The batch renewal script on the same ten leases, as the watchdog sends it.
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(renew).arg(10);
    for i in 0..10 {
        cmd.arg(format!("leasehold:{{renewed-{i}}}"));
    }
    let holds: Vec<(String, String)> = (0..10)
        .map(|i| {
            let key = format!("leasehold:{{renewed-{i}}}");
            let owner: String = redis::cmd("HGET")
                .arg(&key)
                .arg("owner")
                .query(&mut con)
                .unwrap();
            let fields: Vec<String> = redis::cmd("HKEYS").arg(&key).query(&mut con).unwrap();
            let req = fields
                .iter()
                .find_map(|f| f.strip_prefix("r:"))
                .unwrap()
                .to_string();
            (owner, req)
        })
        .collect();
    for (owner, req) in &holds {
        cmd.arg(owner).arg(req).arg(90_000);
    }
    cmd.arg("7");
    let before_renew = stats(&mut con);
    let reply: Vec<i64> = cmd.query(&mut con).unwrap();
    let after_renew = stats(&mut con);
    assert_eq!(reply, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 7]);
    let ran = between(&before_renew, &after_renew);
    if is_redis_7_or_later(&mut con) {
        assert_eq!(
            ran,
            counts(&[("eval", 1), ("hexists", 10), ("pexpire", 10)]),
            "a renewal of ten held leases"
        );
    } else {
        // Redis 6.2 has no PEXPIRE … GT: one PTTL more per lease.
        assert_eq!(
            ran,
            counts(&[("eval", 1), ("hexists", 10), ("pttl", 10), ("pexpire", 10)]),
            "a renewal of ten held leases (Redis 6.2)"
        );
    }
    let pttl: i64 = redis::cmd("PTTL")
        .arg("leasehold:{renewed-3}")
        .query(&mut con)
        .unwrap();
    assert!(pttl > 60_000, "the renewal lengthened the lease: {pttl}");
}
