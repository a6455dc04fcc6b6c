//! Metrics reach whatever `metrics` recorder the application installs (here a counting
//! one, installed globally in this test binary only).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{client, sha};
use leasehold::scripts::ACQUIRE_LUA;
use leasehold_testkit::{FaultProxy, Match, RedisServer, Rule};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Default)]
struct Cell(AtomicU64);

impl metrics::CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

impl metrics::GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.0.fetch_add(value as u64, Ordering::Relaxed);
    }
    fn decrement(&self, value: f64) {
        self.0.fetch_sub(value as u64, Ordering::Relaxed);
    }
    fn set(&self, value: f64) {
        self.0.store(value as u64, Ordering::Relaxed);
    }
}

impl metrics::HistogramFn for Cell {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts counter increments and histogram samples per series (`name{k=v,...}`), keeps
/// gauges' values, and records each description's unit.
#[derive(Default)]
struct Counting(
    Mutex<HashMap<String, Arc<Cell>>>,
    Mutex<HashMap<String, (Option<Unit>, String)>>,
);

impl Counting {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let series = format!("{}{{{}}}", key.name(), labels.join(","));
        self.0.lock().unwrap().entry(series).or_default().clone()
    }

    fn get(&self, series: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(series)
            .map_or(0, |c| c.0.load(Ordering::Relaxed))
    }
}

impl Recorder for &'static Counting {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        self.1
            .lock()
            .unwrap()
            .insert(name.as_str().to_string(), (unit, text.to_string()));
    }
    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        self.1
            .lock()
            .unwrap()
            .insert(name.as_str().to_string(), (unit, text.to_string()));
    }
    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        self.1
            .lock()
            .unwrap()
            .insert(name.as_str().to_string(), (unit, text.to_string()));
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

fn recorder() -> &'static Counting {
    static RECORDER: OnceLock<&'static Counting> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let r: &'static Counting = Box::leak(Box::default());
        metrics::set_global_recorder(r).expect("the only recorder in this binary");
        r
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquisitions_contention_renewals_losses_and_unknown_outcomes_are_counted() {
    let m = recorder();
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    let mut con = server.async_connection().await;
    // Lock names as a label only when asked for.
    let c = leasehold::Client::builder(proxy.url())
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(250))
        .metrics_lock_names(true)
        .build()
        .unwrap();

    let held = c
        .lock("m")
        .unwrap()
        .ttl(Duration::from_millis(400))
        .auto_renew(true)
        .acquire()
        .await
        .unwrap();
    let rival = client(&server.url());
    assert!(rival
        .lock("m")
        .unwrap()
        .try_acquire()
        .await
        .unwrap_err()
        .is_contended());
    common::poll_until(Duration::from_secs(5), "a renewal", || {
        let n = m.get("leasehold_renewals_total{kind=lock,lock=m}");
        async move { n >= 1 }
    })
    .await;
    let _: () = redis::cmd("DEL")
        .arg("leasehold:{m}")
        .query_async(&mut con)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), held.lost())
        .await
        .unwrap();
    drop(held);

    let _rule = proxy.add_rule(
        Rule::reply_to(Match::command("EVALSHA").and(Match::arg_contains(sha(ACQUIRE_LUA))))
            .first(1)
            .drop(),
    );
    c.lock("m")
        .unwrap()
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    assert!(m.get("leasehold_acquisitions_total{kind=lock,lock=m,outcome=granted}") >= 2);
    // The rival's client does not label by name: its refusal counts under its kind only.
    assert_eq!(
        m.get("leasehold_acquisitions_total{kind=lock,outcome=contended}"),
        1
    );
    assert!(m.get("leasehold_contention_total{kind=lock}") >= 1);
    assert!(m.get("leasehold_wait_seconds{kind=lock,lock=m}") >= 2);
    assert!(m.get("leasehold_hold_seconds{kind=lock,lock=m}") >= 2);
    assert_eq!(
        m.get("leasehold_leases_lost_total{kind=lock,lock=m,reason=expired}"),
        1
    );
    assert!(m.get("leasehold_unknown_outcomes_total{kind=lock,lock=m,op=acquire}") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_bounded_by_default_every_series_is_described_and_held_leases_are_a_gauge() {
    let m = recorder();
    let server = RedisServer::start();
    let c = client(&server.url());
    // A name per order would be a series per order: by default only kind and group.
    let lock = c.lock("order/4711").unwrap().metrics_group("orders");
    let guard = lock.acquire().await.unwrap();
    let held = "leasehold_leases_held{group=orders,kind=lock}";
    assert_eq!(m.get(held), 1);
    guard.release().await.unwrap();
    assert_eq!(m.get(held), 0);
    assert_eq!(
        m.get("leasehold_acquisitions_total{group=orders,kind=lock,outcome=granted}"),
        1
    );
    let sem = c.semaphore("order/4712", 2).unwrap();
    sem.acquire().await.unwrap().release().await.unwrap();
    assert_eq!(
        m.get("leasehold_acquisitions_total{kind=semaphore,outcome=granted}"),
        1
    );
    let series: Vec<String> = m.0.lock().unwrap().keys().cloned().collect();
    assert!(
        !series
            .iter()
            .any(|s| s.contains("4711") || s.contains("4712")),
        "a lock name leaked into a label: {series:?}"
    );
    // Every series has a unit and a description.
    let described = m.1.lock().unwrap().clone();
    for (name, unit) in [
        ("leasehold_acquisitions_total", Unit::Count),
        ("leasehold_wait_seconds", Unit::Seconds),
        ("leasehold_hold_seconds", Unit::Seconds),
        ("leasehold_leases_held", Unit::Count),
        ("leasehold_leases_lost_total", Unit::Count),
        ("leasehold_renewals_total", Unit::Count),
        ("leasehold_contention_total", Unit::Count),
        ("leasehold_unknown_outcomes_total", Unit::Count),
    ] {
        let (u, text) = described
            .get(name)
            .unwrap_or_else(|| panic!("{name} undescribed"));
        assert_eq!(*u, Some(unit), "{name}");
        assert!(!text.is_empty(), "{name}");
    }
    let err = c
        .lock("x")
        .unwrap()
        .metrics_group("")
        .try_acquire()
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    c.shutdown().await;
}
