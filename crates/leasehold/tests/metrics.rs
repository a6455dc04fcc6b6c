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

impl metrics::HistogramFn for Cell {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts counter increments and histogram samples per series (`name{k=v,...}`).
#[derive(Default)]
struct Counting(Mutex<HashMap<String, Arc<Cell>>>);

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
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
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
    let c = client(&proxy.url());

    let held = c
        .lock("m")
        .unwrap()
        .ttl(Duration::from_millis(300))
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
        let n = m.get("leasehold_renewals_total{lock=m}");
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

    assert!(m.get("leasehold_acquisitions_total{lock=m,outcome=granted}") >= 2);
    assert_eq!(
        m.get("leasehold_acquisitions_total{lock=m,outcome=contended}"),
        1
    );
    assert!(m.get("leasehold_contention_total{lock=m}") >= 1);
    assert!(m.get("leasehold_wait_seconds{lock=m}") >= 2);
    assert!(m.get("leasehold_hold_seconds{lock=m}") >= 2);
    assert_eq!(
        m.get("leasehold_leases_lost_total{lock=m,reason=expired}"),
        1
    );
    assert!(m.get("leasehold_unknown_outcomes_total{lock=m,op=acquire}") >= 1);
}
