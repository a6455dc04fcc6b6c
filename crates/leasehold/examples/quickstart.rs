//! A short tour of leasehold: contention and waking, extend and release, a late holder that
//! cannot delete its successor's lock (seed 002), fencing tokens, and explicit re-entry.
//!
//! Uses `REDIS_URL` when set; otherwise starts a private redis-server on a free loopback
//! port through the test kit (install it with `apt-get install redis-server`, or run
//! `scripts/demo`, which does).
//!
//! Run: `cargo run --example quickstart`

use std::time::{Duration, Instant};

use leasehold::{Client, Owner, ReleaseOutcome};

/// A resource that only accepts writes whose fencing token is at least the highest seen.
#[derive(Default)]
struct FencedStore {
    highest: u64,
}

impl FencedStore {
    fn write(&mut self, who: &str, token: u64) -> bool {
        if token < self.highest {
            println!(
                "    store: REFUSED write from {who} with stale token {token} (highest {})",
                self.highest
            );
            return false;
        }
        self.highest = token;
        println!("    store: accepted write from {who} with token {token}");
        true
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let private;
    let url = match std::env::var("REDIS_URL") {
        Ok(url) => {
            println!("Using Redis at {}", leasehold::redact_url(&url));
            url
        }
        Err(_) => {
            private = tokio::task::spawn_blocking(leasehold_testkit::RedisServer::start).await?;
            println!(
                "Started a private redis-server on 127.0.0.1:{}",
                private.port()
            );
            private.url()
        }
    };
    let started = Instant::now();
    let client = Client::builder(&url)
        .response_timeout(Duration::from_millis(500))
        .build()?;
    let mut store = FencedStore::default();

    println!("\n1. Contention: A holds the lock, B tries and then waits to be woken");
    let lock = client
        .lock("quickstart/report")?
        .ttl(Duration::from_secs(5))
        .auto_renew(false);
    let a = lock.acquire().await?;
    println!(
        "  A holds it: token {}, {:?} of lease left",
        a.fencing_token(),
        a.remaining()
    );
    let err = lock.try_acquire().await.unwrap_err();
    println!("  B try_acquire: {err}");
    let b_client = Client::new(&url)?;
    let b_lock = b_client
        .lock("quickstart/report")?
        .ttl(Duration::from_millis(300))
        .auto_renew(false);
    let b_wait = tokio::spawn(async move {
        let asked = Instant::now();
        let guard = b_lock.acquire().await;
        (guard, asked.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.extend(Duration::from_secs(10)).await?;
    println!("  A extended its lease: {:?} left", a.remaining());
    store.write("A", a.fencing_token());
    let a_token = a.fencing_token();
    println!("  A releases: {:?}", a.release().await?);
    let (b, waited) = b_wait.await?;
    let b = b?;
    println!(
        "  B was woken and holds it after waiting {waited:?}: token {} > {a_token}",
        b.fencing_token()
    );

    println!("\n2. Seed 002: B's 300 ms lease runs out while B is still busy; C takes over");
    while !b.is_expired() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c_client = Client::new(&url)?;
    let c = loop {
        match c_client.lock("quickstart/report")?.try_acquire().await {
            Ok(g) => break g,
            Err(e) if e.is_contended() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => return Err(e.into()),
        }
    };
    println!("  C holds it: token {}", c.fencing_token());
    store.write("C", c.fencing_token());
    store.write("B (late)", b.fencing_token());
    let late = b.release().await?;
    println!("  B's late release: {late:?} (C's lock is untouched)");
    assert_eq!(late, ReleaseOutcome::HeldByOther);
    println!("  C releases: {:?}", c.release().await?);

    println!("\n3. Explicit re-entry with an Owner");
    let owner = Owner::new();
    let reentrant = client.lock("quickstart/account-7")?.owner(&owner);
    let outer = reentrant.acquire().await?;
    let inner = reentrant.acquire().await?;
    println!(
        "  outer token {} / inner token {}: hold count {}",
        outer.fencing_token(),
        inner.fencing_token(),
        inner.hold_count()
    );
    println!(
        "  inner release: {:?}; outer release: {:?}",
        inner.release().await?,
        outer.release().await?
    );

    b_client.shutdown().await;
    c_client.shutdown().await;
    client.shutdown().await;
    // Check at the server: no lock is left held, and nothing but fencing counters lacks a TTL.
    let mut con = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("leasehold:{quickstart/*")
        .query_async(&mut con)
        .await?;
    let others: Vec<&String> = keys.iter().filter(|k| !k.ends_with(":fence")).collect();
    let mut without_ttl = 0;
    for key in &others {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut con).await?;
        without_ttl += usize::from(ttl == -1);
    }
    println!(
        "\nDone in {:?}: {} lock keys left in Redis (besides fencing counters), {without_ttl} without a TTL.",
        started.elapsed(),
        others.len()
    );
    Ok(())
}
