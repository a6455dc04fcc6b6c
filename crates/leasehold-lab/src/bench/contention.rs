//! (c) 8 contenders on one key, leasehold beside `rslock` 0.10, each both with a client
//! per contender and with one client shared by all eight. Every round runs the four
//! variants for the same time, in a rotating order; the figures are medians over rounds
//! and the ratios medians of per-round ratios against rslock in the same client mode.
//!
//! Per variant: handoffs to another waiter (the time from a holder's release call to the
//! next holder's grant) at p50 and p99, in µs and in raw PING round trips; the share of
//! self-handoffs (the releasing contender is the next holder); the longest single wait;
//! acquisitions/s; and, per acquisition, Redis CPU (`INFO cpu`), scripts and commands
//! (those inside scripts included).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::cycles::{counters, Counters};
use super::{contend, median, percentile, Ev};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Leasehold { shared: bool },
    Rslock { shared: bool },
}

const VARIANTS: [Variant; 4] = [
    Variant::Leasehold { shared: false },
    Variant::Rslock { shared: false },
    Variant::Leasehold { shared: true },
    Variant::Rslock { shared: true },
];

/// One run of one variant.
struct Run {
    handoffs: Vec<f64>,
    selfs: usize,
    longest: Duration,
    acquisitions: usize,
    secs: f64,
    per_acq: Counters,
}

fn analyse(events: &[Ev]) -> (Vec<f64>, usize, Duration, usize) {
    let mut last_release: Option<(usize, Instant)> = None;
    let mut handoffs = Vec::new();
    let mut selfs = 0usize;
    let mut longest = Duration::ZERO;
    let mut acquisitions = 0;
    for ev in events {
        match *ev {
            Ev::ReleaseStart(who, t) => last_release = Some((who, t)),
            Ev::Granted(who, t, waited) => {
                acquisitions += 1;
                longest = longest.max(waited);
                if let Some((prev, rt)) = last_release.take() {
                    if prev == who {
                        selfs += 1;
                    } else {
                        handoffs.push(t.saturating_duration_since(rt).as_secs_f64() * 1e6);
                    }
                }
            }
        }
    }
    (handoffs, selfs, longest, acquisitions)
}

const CONTENDERS: usize = 8;

async fn run_leasehold(url: &str, shared: bool, dur: Duration) -> Vec<Ev> {
    let one = shared.then(|| leasehold::Client::new(url).expect("client"));
    let clients: Vec<leasehold::Client> = (0..CONTENDERS)
        .map(|_| {
            one.clone()
                .unwrap_or_else(|| leasehold::Client::new(url).expect("client"))
        })
        .collect();
    let locks: Vec<leasehold::Lock> = clients
        .iter()
        .map(|c| {
            c.lock("bench-contended")
                .unwrap()
                .ttl(Duration::from_secs(10))
                .auto_renew(false)
                .wait(Duration::from_secs(30))
        })
        .collect();
    let (events, _) = contend(&locks, dur).await;
    // The shared client is every contender's: shut it down once.
    let distinct = if shared { 1 } else { clients.len() };
    for c in &clients[..distinct] {
        c.shutdown().await;
    }
    events
}

async fn run_rslock(url: &str, shared: bool, dur: Duration, events: Arc<Mutex<Vec<Ev>>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let one = Arc::new(rslock::LockManager::new(vec![url.to_string()]));
    let mut handles = Vec::new();
    for who in 0..CONTENDERS {
        let lm = if shared {
            one.clone()
        } else {
            Arc::new(rslock::LockManager::new(vec![url.to_string()]))
        };
        let (events, stop) = (events.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let guard = lm
                    .acquire(b"bench-rslock".as_slice(), Duration::from_secs(10))
                    .await
                    .expect("rslock acquire");
                let now = Instant::now();
                events
                    .lock()
                    .unwrap()
                    .push(Ev::Granted(who, now, now - asked));
                tokio::task::yield_now().await;
                events
                    .lock()
                    .unwrap()
                    .push(Ev::ReleaseStart(who, Instant::now()));
                guard.release().await;
            }
        }));
    }
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.unwrap();
    }
}

async fn run_variant(url: &str, con: &mut MultiplexedConnection, v: Variant, dur: Duration) -> Run {
    let events = Arc::new(Mutex::new(Vec::with_capacity(100_000)));
    let before = counters(con).await;
    let started = Instant::now();
    match v {
        Variant::Leasehold { shared } => {
            let log = run_leasehold(url, shared, dur).await;
            events.lock().unwrap().extend(log);
        }
        Variant::Rslock { shared } => run_rslock(url, shared, dur, events.clone()).await,
    }
    let secs = started.elapsed().as_secs_f64();
    let after = counters(con).await;
    let ev = events.lock().unwrap();
    let (mut handoffs, selfs, longest, acquisitions) = analyse(&ev);
    handoffs.sort_by(|a, b| a.total_cmp(b));
    let n = acquisitions.max(1) as f64;
    Run {
        handoffs,
        selfs,
        longest,
        acquisitions,
        secs,
        per_acq: Counters {
            cpu_us: (after.cpu_us - before.cpu_us) / n,
            commands: (after.commands - before.commands) / n,
            scripts: (after.scripts - before.scripts) / n,
        },
    }
}

/// One variant's figures over the rounds.
#[derive(Default, Clone)]
struct Series {
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    self_share: Vec<f64>,
    longest_ms: Vec<f64>,
    rate: Vec<f64>,
    acquisitions: usize,
    cpu_us: Vec<f64>,
    scripts: Vec<f64>,
    commands: Vec<f64>,
    /// leasehold only: per-round ratio of its acquisitions/s to rslock's (same mode).
    ratio_rate: Vec<f64>,
}

/// The measurement: every variant's series.
pub(super) struct Measured {
    by: Vec<(Variant, Series)>,
    dur: Duration,
    rounds: usize,
}

/// Run the four variants `rounds` times for `dur` each, in a rotating order.
pub(super) async fn measure(
    url: &str,
    dur: Duration,
    rounds: usize,
    pb: &indicatif::ProgressBar,
) -> Measured {
    let redis_client = redis::Client::open(url).unwrap();
    let mut con = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut by: Vec<(Variant, Series)> = VARIANTS.iter().map(|v| (*v, Series::default())).collect();
    for round in 0..rounds {
        let mut rates = [0.0f64; 4];
        for k in 0..VARIANTS.len() {
            let i = (k + round) % VARIANTS.len();
            let v = VARIANTS[i];
            pb.set_message(format!("(c) round {}/{rounds}: {v:?}", round + 1));
            let r = run_variant(url, &mut con, v, dur).await;
            let s = &mut by[i].1;
            s.p50_us.push(percentile(&r.handoffs, 0.5));
            s.p99_us.push(percentile(&r.handoffs, 0.99));
            let total = r.handoffs.len() + r.selfs;
            s.self_share.push(r.selfs as f64 / (total.max(1)) as f64);
            s.longest_ms.push(r.longest.as_secs_f64() * 1e3);
            rates[i] = r.acquisitions as f64 / r.secs;
            s.rate.push(rates[i]);
            s.acquisitions += r.acquisitions;
            s.cpu_us.push(r.per_acq.cpu_us);
            s.scripts.push(r.per_acq.scripts);
            s.commands.push(r.per_acq.commands);
        }
        // VARIANTS: leasehold, rslock (a client each), then the same, shared.
        by[0].1.ratio_rate.push(rates[0] / rates[1]);
        by[2].1.ratio_rate.push(rates[2] / rates[3]);
        pb.inc(1);
    }
    Measured { by, dur, rounds }
}

fn med(v: &[f64]) -> f64 {
    median(&mut v.to_vec())
}

/// The table rows. `rtt_us`: the raw PING round trip; `uncontended_cpu_us`: Redis CPU of
/// one uncontended leasehold cycle from (a), if it ran.
pub(super) fn rows(m: &Measured, rtt_us: f64, uncontended_cpu_us: Option<f64>) -> Vec<String> {
    let get = |v: Variant| &m.by.iter().find(|(x, _)| *x == v).unwrap().1;
    let mut out = Vec::new();
    for shared in [false, true] {
        let (lh, rs) = (
            get(Variant::Leasehold { shared }),
            get(Variant::Rslock { shared }),
        );
        let mode = if shared {
            "one shared client"
        } else {
            "a client each"
        };
        let label = format!("(c) 8 contenders, one key, {mode}");
        out.push(format!(
            "| {label}: handoff to another waiter p50 / p99 | {:.0} µs = {:.1} RTT / {:.0} µs = {:.1} RTT | raw PING RTT {:.1} µs; rslock: {:.0} / {:.0} µs on the {:.1}% of its handoffs that reach another waiter | {:.1} RTT p50 | ≤ 2 RTT p50, ≤ 6 RTT p99 |",
            med(&lh.p50_us), med(&lh.p50_us) / rtt_us, med(&lh.p99_us), med(&lh.p99_us) / rtt_us,
            rtt_us, med(&rs.p50_us), med(&rs.p99_us), (1.0 - med(&rs.self_share)) * 100.0,
            med(&lh.p50_us) / rtt_us
        ));
        out.push(format!(
            "| {label}: acquisitions/s; self-handoffs | {:.0} /s; {:.1}% of {} | rslock: {:.0} /s; {:.1}% of {} | {:.2}× rslock's | ≥ 1.0× rslock's, 0 self-handoffs |",
            med(&lh.rate), med(&lh.self_share) * 100.0, lh.acquisitions,
            med(&rs.rate), med(&rs.self_share) * 100.0, rs.acquisitions,
            med(&lh.ratio_rate)
        ));
        let vs_uncontended = uncontended_cpu_us
            .map(|u| {
                format!(
                    "{:.2}× an uncontended cycle's ({u:.1} µs, (a))",
                    med(&lh.cpu_us) / u
                )
            })
            .unwrap_or_else(|| "(run (a) for the uncontended cycle)".to_string());
        out.push(format!(
            "| {label}: Redis per acquisition: CPU (INFO cpu), scripts, commands | {:.1} µs, {:.1} scripts, {:.1} commands | rslock: {:.1} µs, {:.1}, {:.1} | {vs_uncontended} | ≤ 2× an uncontended cycle's |",
            med(&lh.cpu_us), med(&lh.scripts), med(&lh.commands),
            med(&rs.cpu_us), med(&rs.scripts), med(&rs.commands),
        ));
        out.push(format!(
            "| {label}: longest single wait (worst round of {} × {:.0} s) | {:.1} ms | rslock: {:.1} ms | | ≤ 20 ms |",
            m.rounds,
            m.dur.as_secs_f64(),
            lh.longest_ms.iter().cloned().fold(0.0, f64::max),
            rs.longest_ms.iter().cloned().fold(0.0, f64::max),
        ));
    }
    out
}
