//! `leasehold-lab demo`: a short, visible tour of what leasehold guarantees, beside a naive
//! lock (SETNX + EXPIRE, DEL to unlock, no token) that fails under the same faults.
//!
//! Scenarios (each bounded in time, loopback only): contention with handoffs between
//! workers; a late reply to acquire (seed 004); a holder paused past its lease whose stale
//! write must be refused (seed 002); a task killed between SETNX and EXPIRE, and acquires
//! cancelled at random points (seed 000). Faults go through the test kit's proxy, so they
//! need a Redis on this machine: with a remote `--redis`, the fault scenarios are skipped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold::Client;
use leasehold_testkit::{FaultProxy, Match, RedisServer, Rule};
use rand::Rng;
use redis::aio::MultiplexedConnection;

use crate::args::DemoArgs;

/// A store that accepts a write only with a token at least the highest it has seen.
#[derive(Default)]
struct FencedStore {
    highest: Mutex<u64>,
    busy: AtomicBool,
    overlaps: std::sync::atomic::AtomicU64,
}

impl FencedStore {
    fn write(&self, token: u64) -> bool {
        let mut h = self.highest.lock().unwrap_or_else(|e| e.into_inner());
        if token < *h {
            return false;
        }
        *h = token;
        true
    }

    fn enter(&self) {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn leave(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }
}

/// What a store without fencing tokens does: accept every write.
#[derive(Default)]
struct UnfencedStore {
    writers: Vec<&'static str>,
}

impl UnfencedStore {
    fn write(&mut self, who: &'static str) -> bool {
        self.writers.push(who);
        true
    }
}

struct Row {
    scenario: &'static str,
    leasehold: String,
    naive: String,
    ok: bool,
}

fn step(n: usize, total: usize, what: &str) {
    println!("\n[{n}/{total}] {what}");
}

async fn raw_connection(url: &str, timeout: Duration) -> anyhow::Result<MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new().set_response_timeout(Some(timeout));
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?)
}

/// Run the demo; returns 0 when every leasehold check held.
///
/// # Cancel safety
/// Cancel-safe: cancelling drops the demo's clients (their background releases end with the runtime) and stops its private redis-server; locks it held expire with their leases.
pub async fn run(redis_url: Option<&str>, args: &DemoArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let server;
    let url = match redis_url {
        Some(url) => {
            println!("leasehold demo on {}", leasehold::redact_url(url));
            url.to_string()
        }
        None => {
            server = tokio::task::spawn_blocking(|| RedisServer::builder().try_start())
                .await?
                .context("cannot start a private redis-server (install it with `apt-get install -y redis-server`, or pass --redis URL)")?;
            println!(
                "leasehold demo on a private redis-server at 127.0.0.1:{} (it goes away when the demo ends)",
                server.port()
            );
            server.url()
        }
    };
    let client = leasehold_cli::connect(
        &leasehold_cli::args::TargetArgs {
            redis: vec![url.clone()],
            ..Default::default()
        },
        None,
    )
    .await?;
    let local = loopback_addr(&url);
    let total = 4;
    let mut rows = Vec::new();

    step(
        1,
        total,
        "Contention: workers take turns on one lock and write to a fenced store",
    );
    rows.push(contention(&url, args.workers.clamp(2, 16)).await?);

    match local {
        Some(addr) => {
            step(
                2,
                total,
                "Seed 004: the reply to acquire is lost; the client retries",
            );
            rows.push(late_reply(&url, addr).await?);
            step(
                3,
                total,
                "Seed 002: a holder pauses past its lease, then writes and unlocks",
            );
            rows.push(paused_holder(&client, &url).await?);
            step(
                4,
                total,
                "Seed 000: a task dies between acquiring and setting the TTL",
            );
            rows.push(killed_mid_acquire(&url, addr).await?);
        }
        None => println!(
            "\n(the fault scenarios need a Redis on this machine; skipped for a remote --redis)"
        ),
    }
    client.shutdown().await;

    println!("\n| scenario | leasehold | naive SETNX lock |\n|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} {} | {} |",
            r.scenario,
            if r.ok { "✓" } else { "✗" },
            r.leasehold,
            r.naive
        );
    }
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    Ok(if rows.iter().all(|r| r.ok) {
        leasehold_cli::exit::OK
    } else {
        leasehold_cli::exit::FAILURE
    })
}

fn loopback_addr(url: &str) -> Option<SocketAddr> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).ok()?;
    match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => {
            let ip: std::net::IpAddr = match host.as_str() {
                "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
                h => h.parse().ok()?,
            };
            ip.is_loopback().then(|| SocketAddr::new(ip, *port))
        }
        _ => None,
    }
}

async fn contention(url: &str, workers: usize) -> anyhow::Result<Row> {
    let store = Arc::new(FencedStore::default());
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let rounds = 25;
    for w in 0..workers {
        let client = Client::new(url)?;
        let (store, order) = (store.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let lock = client.lock("demo/contended")?.wait(Duration::from_secs(20));
            let mut longest = Duration::ZERO;
            let mut stale = 0;
            for _ in 0..rounds {
                let asked = Instant::now();
                let guard = lock.acquire().await?;
                longest = longest.max(asked.elapsed());
                store.enter();
                order.lock().unwrap_or_else(|e| e.into_inner()).push(w);
                if !store.write(guard.fencing_token()) {
                    stale += 1;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                store.leave();
                guard.release().await?;
            }
            client.shutdown().await;
            anyhow::Ok((longest, stale))
        }));
    }
    let mut longest = Duration::ZERO;
    let mut stale = 0;
    for t in tasks {
        let (l, s) = t.await??;
        longest = longest.max(l);
        stale += s;
    }
    let order = order.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let handoffs = order.windows(2).filter(|w| w[0] != w[1]).count();
    let overlaps = store.overlaps.load(Ordering::SeqCst);
    println!(
        "  leasehold: {} acquisitions by {workers} workers, {handoffs} handoffs between workers, longest wait {:.1} ms, {overlaps} overlaps, {stale} stale writes",
        order.len(),
        longest.as_secs_f64() * 1e3
    );
    Ok(Row {
        scenario: "contention",
        leasehold: format!(
            "{} acquisitions, {handoffs} handoffs, 0 overlaps",
            order.len()
        ),
        naive: "(not run: needs faults to fail)".into(),
        ok: overlaps == 0 && stale == 0 && order.len() == workers * rounds,
    })
}

async fn late_reply(url: &str, addr: SocketAddr) -> anyhow::Result<Row> {
    let proxy = FaultProxy::start(addr).await?;
    // leasehold: the same request id is re-sent; the grant is found, counted once.
    let client = Client::builder(proxy.url())
        .response_timeout(Duration::from_millis(200))
        .build()?;
    client.ping().await?;
    let acquire_sha = redis::Script::new(leasehold::scripts::ACQUIRE_LUA)
        .get_hash()
        .to_string();
    let rule = proxy.add_rule(
        Rule::reply_to(Match::command("EVALSHA").and(Match::arg_contains(acquire_sha)))
            .first(1)
            .drop(),
    );
    let lock = client
        .lock("demo/seed004")?
        .ttl(Duration::from_secs(5))
        .auto_renew(false);
    let guard = lock.acquire().await?;
    drop(rule);
    let count = client
        .inspect("demo/seed004")
        .await?
        .holder
        .map_or(0, |h| h.hold_count);
    let released = guard.release().await?.is_released();
    let free = client.inspect("demo/seed004").await?.holder.is_none();
    let ok = count == 1 && released && free;
    println!("  leasehold: reply lost, same request re-sent → holds the lock (hold count {count}); one release frees it: {free}");
    client.shutdown().await;

    // naive: SET NX PX, and on timeout try again (as a retrying client does).
    let _rule = proxy.add_rule(Rule::reply_to(Match::command("SET")).first(1).drop());
    let mut first = raw_connection(&proxy.url(), Duration::from_millis(200)).await?;
    let key = "naive:seed004";
    let r1: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg(key)
        .arg("me")
        .arg("NX")
        .arg("PX")
        .arg(5_000)
        .query_async(&mut first)
        .await;
    let mut second = raw_connection(url, Duration::from_millis(500)).await?;
    let r2: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg("me")
        .arg("NX")
        .arg("PX")
        .arg(5_000)
        .query_async(&mut second)
        .await?;
    let pttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut second).await?;
    let misreported = r1.is_err() && r2.is_none() && pttl > 0;
    println!(
        "  naive:     first SET {}; the retry says {} → it reports \"not acquired\", yet its own lock is held for {:.1} s",
        if r1.is_err() { "timed out (its reply was dropped)" } else { "answered" },
        if r2.is_none() { "\"taken\"" } else { "OK" },
        pttl as f64 / 1e3
    );
    let _: () = redis::cmd("DEL").arg(key).query_async(&mut second).await?;
    Ok(Row {
        scenario: "late reply to acquire (seed 004)",
        leasehold: format!("holds it, hold count {count}"),
        naive: if misreported {
            "told \"not acquired\" while holding it".into()
        } else {
            "did not fail this time".into()
        },
        ok,
    })
}

async fn paused_holder(client: &Client, url: &str) -> anyhow::Result<Row> {
    let ttl = Duration::from_millis(300);
    let pause = Duration::from_millis(600);
    // leasehold: A's lease runs out while it is paused; its token is stale afterwards.
    let store = FencedStore::default();
    let lock = client.lock("demo/seed002")?.ttl(ttl).auto_renew(false);
    let a = lock.acquire().await?;
    tokio::time::sleep(pause).await; // A is paused (a GC pause, a stopped VM)
    let a_knew = a.is_lost();
    let b_client = Client::new(url)?;
    let b = b_client
        .lock("demo/seed002")?
        .ttl(Duration::from_secs(5))
        .auto_renew(false)
        .acquire()
        .await?;
    let b_write = store.write(b.fencing_token());
    let a_write = store.write(a.fencing_token());
    let (a_token, b_token) = (a.fencing_token(), b.fencing_token());
    let a_release = a.release().await?;
    let b_still = client
        .inspect("demo/seed002")
        .await?
        .holder
        .map(|h| h.fencing_token)
        == Some(b_token);
    b.release().await?;
    b_client.shutdown().await;
    println!(
        "  leasehold: A's lost() fired: {a_knew}; B holds (token {}); A's stale write (token {}) refused: {}; A's late release: {a_release:?}; B still holds: {b_still}",
        b_token, a_token, !a_write
    );
    let ok = a_knew
        && b_write
        && !a_write
        && a_release == leasehold::ReleaseOutcome::HeldByOther
        && b_still;

    // naive: SETNX + PEXPIRE, DEL to unlock, no token.
    let mut con = raw_connection(url, Duration::from_secs(1)).await?;
    let key = "naive:seed002";
    let naive_lock = |con: &mut MultiplexedConnection| {
        let mut con = con.clone();
        async move {
            let got: bool = redis::cmd("SETNX")
                .arg(key)
                .arg("x")
                .query_async(&mut con)
                .await?;
            if got {
                let _: () = redis::cmd("PEXPIRE")
                    .arg(key)
                    .arg(300)
                    .query_async(&mut con)
                    .await?;
            }
            anyhow::Ok(got)
        }
    };
    let _a = naive_lock(&mut con).await?;
    tokio::time::sleep(pause).await; // A paused; its key expired
    let b_got = naive_lock(&mut con).await?; // B takes it and starts working
                                             // Without a token the store cannot tell B's write from paused A's stale one.
    let mut unfenced = UnfencedStore::default();
    let writes_while_b_held = [unfenced.write("B"), unfenced.write("A")]
        .iter()
        .filter(|ok| **ok)
        .count();
    let _: () = redis::cmd("DEL").arg(key).query_async(&mut con).await?; // A's unlock: deletes B's lock
    let c_got = naive_lock(&mut con).await?; // C gets in while B still works
    let overlap = b_got && c_got;
    println!(
        "  naive:     B got the lock after A's expired: {b_got}; writers the store accepted while B held the lock: {writes_while_b_held}; A's DEL removed B's lock, C got in while B works: {overlap}"
    );
    let _: () = redis::cmd("DEL").arg(key).query_async(&mut con).await?;
    Ok(Row {
        scenario: "holder paused past its lease (seed 002)",
        leasehold: "stale write refused, B's lock intact".into(),
        naive: if overlap {
            "stale write accepted, B's lock deleted, B and C overlap".into()
        } else {
            "did not fail this time".into()
        },
        ok,
    })
}

async fn killed_mid_acquire(url: &str, addr: SocketAddr) -> anyhow::Result<Row> {
    // naive: SETNX, then the task dies before EXPIRE.
    let mut con = raw_connection(url, Duration::from_secs(1)).await?;
    let key = "naive:seed000";
    let _: bool = redis::cmd("SETNX")
        .arg(key)
        .arg("x")
        .query_async(&mut con)
        .await?;
    // ... killed here: EXPIRE never runs.
    let pttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut con).await?;
    let later: bool = redis::cmd("SETNX")
        .arg(key)
        .arg("y")
        .query_async(&mut con)
        .await?;
    println!(
        "  naive:     SETNX succeeded, the task died before EXPIRE: PTTL {pttl} (no TTL); every later acquire is refused: {}",
        !later
    );
    let _: () = redis::cmd("DEL").arg(key).query_async(&mut con).await?;

    // leasehold: acquires cancelled at random points under injected latency.
    let proxy = FaultProxy::start(addr).await?;
    let _latency =
        proxy.add_rule(Rule::reply_to(Match::command("EVALSHA")).delay(Duration::from_millis(2)));
    let client = Client::builder(proxy.url()).build()?;
    let lock = client
        .lock("demo/seed000")?
        .ttl(Duration::from_secs(20))
        .auto_renew(false);
    let (mut cancelled, mut without_ttl) = (0, 0);
    for _ in 0..150 {
        let cut = Duration::from_micros(rand::rng().random_range(0..6_000));
        match tokio::time::timeout(cut, lock.acquire()).await {
            Err(_) => cancelled += 1,
            Ok(guard) => drop(guard?),
        }
        let p: i64 = redis::cmd("PTTL")
            .arg(lock.redis_key())
            .query_async(&mut con)
            .await?;
        without_ttl += usize::from(p == -1);
    }
    client.shutdown().await;
    let left: bool = redis::cmd("EXISTS")
        .arg(lock.redis_key())
        .query_async(&mut con)
        .await?;
    println!(
        "  leasehold: 150 acquires, {cancelled} cancelled mid-flight: keys without TTL seen {without_ttl}; grants left behind after shutdown: {}",
        usize::from(left)
    );
    Ok(Row {
        scenario: "task killed mid-acquire (seed 000)",
        leasehold: format!("{cancelled} cancelled acquires, 0 keys without TTL"),
        naive: "key without TTL: locked forever".into(),
        ok: without_ttl == 0 && !left,
    })
}
