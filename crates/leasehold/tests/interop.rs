//! A second implementation contends with this one: `interop/python`, a minimal client in
//! Python (redis-py) written from PROTOCOL.md alone, and leasehold's Rust client take one
//! lock in turns for a bounded time, each running critical sections that a broken mutual
//! exclusion would corrupt (a read-modify-write counter, an "inside" gauge, a log of
//! fencing tokens).
//!
//! The Python interpreter is `$LEASEHOLD_INTEROP_PYTHON`, or the virtual environment that
//! `scripts/test` creates in `target/interop-venv` (with `interop/python/requirements.txt`).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use leasehold_testkit::RedisServer;
use serde_json::Value;

const SECS: u64 = 3;
const NAME: &str = "interop";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("LEASEHOLD_INTEROP_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo().join("target/interop-venv/bin/python");
    assert!(
        venv.exists(),
        "no Python for the interop test: run scripts/test once (it creates {}), or set \
         LEASEHOLD_INTEROP_PYTHON to a python with redis-py (interop/python/requirements.txt)",
        venv.display()
    );
    venv
}

/// Run the Python contender for `secs`; its JSON summary.
fn python_side(url: &str, secs: u64, extra: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(python())
        .current_dir(repo().join("interop/python"))
        .arg("contend.py")
        .args(["--url", url, "--name", NAME, "--secs", &secs.to_string()])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python contender")
}

async fn summary(child: tokio::process::Child) -> Value {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the Python contender ends by itself")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// One Rust contender: sections until `until`; returns (sections, overlaps).
async fn rust_side(url: String, who: String, until: Instant) -> (u64, u64) {
    let client = common::steady(&url);
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (mut sections, mut overlaps) = (0, 0);
    while Instant::now() < until {
        let lock = client
            .lock(NAME)
            .unwrap()
            .ttl(Duration::from_secs(2))
            .auto_renew(false);
        let guard = match lock.acquire_timeout(Duration::from_secs(2)).await {
            Ok(g) => g,
            Err(e) if e.is_timeout() => continue,
            Err(e) => panic!("{who}: {e}"),
        };
        assert!(
            guard.remaining() > Duration::ZERO,
            "{who}: granted an expired lease"
        );
        let inside: i64 = redis::cmd("INCR")
            .arg("interop:inside")
            .query_async(&mut con)
            .await
            .unwrap();
        overlaps += u64::from(inside != 1);
        let value: Option<i64> = redis::cmd("GET")
            .arg("interop:counter")
            .query_async(&mut con)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await; // the section's work
        let _: () = redis::cmd("SET")
            .arg("interop:counter")
            .arg(value.unwrap_or(0) + 1)
            .query_async(&mut con)
            .await
            .unwrap();
        let _: () = redis::cmd("RPUSH")
            .arg("interop:log")
            .arg(format!("{} {who}", guard.fencing_token()))
            .query_async(&mut con)
            .await
            .unwrap();
        let _: () = redis::cmd("DECR")
            .arg("interop:inside")
            .query_async(&mut con)
            .await
            .unwrap();
        let outcome = guard.release().await.unwrap();
        assert!(
            outcome.is_released(),
            "{who}: its held lock was gone at release ({outcome:?}): another client removed it"
        );
        sections += 1;
    }
    client.shutdown().await;
    (sections, overlaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_and_the_rust_client_share_one_lock_without_overlap() {
    let server = RedisServer::start();
    let url = server.url();
    // Every 4th Python hold outlives its lease before releasing: a release that skipped
    // the token check would delete the next holder's lock.
    let child = python_side(&url, SECS, &["--threads", "2", "--overrun-every", "4"]);
    let until = Instant::now() + Duration::from_secs(SECS);
    let rust = futures_util::future::join_all(
        (0..2).map(|i| tokio::spawn(rust_side(url.clone(), format!("rust-{i}"), until))),
    )
    .await;
    let py = summary(child).await;
    let (mut rust_sections, mut rust_overlaps) = (0, 0);
    for r in rust {
        let (s, o) = r.unwrap();
        rust_sections += s;
        rust_overlaps += o;
    }
    let py_sections = py["sections"].as_u64().unwrap();
    eprintln!("interop: {rust_sections} Rust sections, Python: {py}");
    assert_eq!(py["error_count"], 0, "{py}");
    assert_eq!(py["overlaps"], 0, "{py}");
    assert_eq!(py["expired_before_work"], 0, "{py}");
    assert!(
        py["late_releases"].as_u64().unwrap() > 0,
        "no Python hold outlived its lease: {py}"
    );
    assert_eq!(rust_overlaps, 0);
    assert!(
        rust_sections > 0 && py_sections > 0,
        "both sides must get the lock: {py}"
    );

    let mut con = server.async_connection().await;
    let counter: u64 = redis::cmd("GET")
        .arg("interop:counter")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        counter,
        rust_sections + py_sections,
        "lost updates: an overlap"
    );
    let log: Vec<String> = redis::cmd("LRANGE")
        .arg("interop:log")
        .arg(0)
        .arg(-1)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(log.len() as u64, counter);
    let mut last = 0u64;
    let mut handovers = 0;
    let mut previous_side = "";
    for entry in &log {
        let (token, who) = entry.split_once(' ').unwrap();
        let token: u64 = token.parse().unwrap();
        assert!(token > last, "token {token} after {last} in {log:?}");
        last = token;
        let side = if who.starts_with("py-") { "py" } else { "rust" };
        handovers += usize::from(!previous_side.is_empty() && side != previous_side);
        previous_side = side;
    }
    assert!(
        handovers > 0,
        "the lock never passed between the implementations"
    );

    // No key but the fencing counter is left without a TTL.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("leasehold:*")
        .query_async(&mut con)
        .await
        .unwrap();
    for key in keys {
        let pttl = common::pttl(&mut con, &key).await;
        assert!(pttl != -1 || key.ends_with(":fence"), "{key} has no TTL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_that_sends_the_scripts_without_the_prelude_gets_no_lock_and_says_so() {
    let server = RedisServer::start();
    let py = summary(python_side(
        &server.url(),
        1,
        &["--threads", "1", "--skip-prelude"],
    ))
    .await;
    assert_eq!(py["sections"], 0, "{py}");
    assert!(py["error_count"].as_u64().unwrap() > 0, "{py}");
    let mut con = server.async_connection().await;
    assert!(!common::exists(&mut con, "leasehold:{interop}").await);
}
