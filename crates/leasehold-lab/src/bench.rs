//! The benchmark behind `leasehold-lab bench`: ratios against baselines measured in the same
//! run, on a private redis-server on a free loopback port.
//!
//! (a) one task, uncontended acquire+release on fresh keys, and (b) 32 and 64 tasks on
//!     distinct keys: leasehold beside `rslock`, plain redis-rs commands (`SET NX PX` and a
//!     compare-and-delete script) and raw redis-rs sending leasehold's own two scripts, with
//!     cycles/s, cycle p50/p99 and Redis CPU (`INFO cpu`), scripts and commands per cycle
//!     (in the `cycles` submodule);
//! (c) 8 contenders on one key, with a client each and with one shared client: handoff to
//!     a different waiter in µs and in raw round trips, the share of self-handoffs, the
//!     longest single wait, acquisitions/s and Redis CPU per acquisition, beside
//!     `rslock`'s retrying acquire (in the `contention` submodule);
//! (d) renewing many held leases: round trips per period, time per call and Redis CPU,
//!     beside one extend call per lease;
//! (e) RedLock over 5 more private masters: p50/p99 of one uncontended acquire+release
//!     beside leasehold on one master, `rslock`'s multi-node lock and raw redis-rs sending
//!     the same scripts to all 5 at once (in the `redlock` submodule);
//! (f) the newer primitives: 8 contenders (separate clients) on one fair lock beside the
//!     default lock (acquisitions/s, handoff p50/p99 in raw round trips, longest wait,
//!     spread per contender), and semaphore acquire+release cycles/s beside plain locks
//!     (in the `primitives` submodule).
//!
//! Each figure is the median over rounds; ratios are medians of per-round ratios. The
//! benchmark panics on a failed Redis call: it measures, it does not recover.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use redis::Script;

use crate::args::BenchArgs;

mod contention;
mod cycles;
mod primitives;
mod redlock;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

struct Raw {
    con: MultiplexedConnection,
    acquire: Arc<Script>,
    release: Arc<Script>,
}

impl Raw {
    /// The same two scripts leasehold sends, with the same keys and arguments.
    async fn cycle(&mut self, name: &str, n: u64) {
        let id = format!("{n:032x}");
        let lock = format!("leasehold:{{{name}}}");
        let (fence, queue) = (format!("{lock}:fence"), format!("{lock}:waiters"));
        let (expiries, next) = (format!("{lock}:waiters:exp"), format!("{lock}:next"));
        let info = format!("{lock}:waiters:info");
        let r: Vec<i64> = self
            .acquire
            .key(&lock)
            .key(&fence)
            .key(&queue)
            .key(&expiries)
            .key(&next)
            .key(&info)
            .arg(&id)
            .arg(&id)
            .arg(30_000)
            .arg(0)
            .arg(0)
            .arg(0)
            .arg(r#"{"host":"bench","pid":1}"#)
            .arg(0) // not fair
            .arg(1) // the first try
            .arg(n | 1)
            .invoke_async(&mut self.con)
            .await
            .expect("raw acquire");
        assert_eq!(r[0], 1, "raw acquire must be uncontended");
        let _: Vec<i64> = self
            .release
            .key(&lock)
            .key(&queue)
            .key(&expiries)
            .key(&next)
            .key(&fence)
            .key(&info)
            .arg(&id)
            .arg(&id)
            .arg(100)
            .arg(250)
            .arg(n | 1)
            .invoke_async(&mut self.con)
            .await
            .expect("raw release");
    }
}

/// Server time spent executing commands so far (µs), from `INFO commandstats`.
async fn redis_usec(con: &mut MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .expect("INFO");
    info.lines()
        .filter_map(|l| l.split(",usec=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|n| n.parse::<f64>().ok())
        .sum()
}

async fn ping_rtt_us(con: &mut MultiplexedConnection) -> f64 {
    let mut samples = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(con).await.expect("PING");
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(&mut samples)
}

/// A contention run's event log: a release call starts, a grant arrives (and how long its
/// acquire waited).
#[derive(Clone, Copy)]
enum Ev {
    ReleaseStart(usize, Instant),
    Granted(usize, Instant, Duration),
}

/// Contention: a task per lock (`who` = its index) loops acquire → yield (the critical
/// section) → release for `dur`, then finishes its cycle. Returns the event log and when
/// the `dur` ended (events after it are the tasks' last cycles).
async fn contend(locks: &[leasehold::Lock], dur: Duration) -> (Vec<Ev>, Instant) {
    let events = Arc::new(std::sync::Mutex::new(Vec::with_capacity(4_096)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handles: Vec<_> = locks
        .iter()
        .enumerate()
        .map(|(who, lock)| {
            let (lock, events, stop) = (lock.clone(), events.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let asked = Instant::now();
                    let guard = lock.acquire().await.expect("contended acquire");
                    let now = Instant::now();
                    events
                        .lock()
                        .unwrap()
                        .push(Ev::Granted(who, now, now - asked));
                    tokio::task::yield_now().await; // the critical section
                    events
                        .lock()
                        .unwrap()
                        .push(Ev::ReleaseStart(who, Instant::now()));
                    guard.release().await.expect("release");
                }
            })
        })
        .collect();
    tokio::time::sleep(dur).await;
    let end = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in handles {
        h.await.expect("contender task");
    }
    let events = std::mem::take(&mut *events.lock().unwrap());
    (events, end)
}

struct RenewalFigures {
    leases: usize,
    calls_per_period: f64,
    busy_ms_per_period: f64,
    redis_ms_per_period: f64,
    naive_round_trips: usize,
    naive_ms: f64,
    naive_redis_ms: f64,
}

/// (d) Renewing many held leases: leasehold's batched watchdog beside one extend call per
/// lease (the naive way), both over one renewal period's worth of leases.
async fn renewals(url: &str, con: &mut MultiplexedConnection, leases: usize) -> RenewalFigures {
    let period = Duration::from_secs(2);
    let client = leasehold::Client::builder(url)
        .response_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut set = tokio::task::JoinSet::new();
    let per_task = leases / 64;
    for t in 0..64 {
        let client = client.clone();
        set.spawn(async move {
            let mut out = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let lock = client
                    .lock(&format!("bench-renew-{t}-{i}"))
                    .unwrap()
                    // Long enough to renew within the 10 s response timeout.
                    .ttl(period * 8)
                    .renew_every(period);
                out.push(lock.try_acquire().await.expect("acquire"));
            }
            out
        });
    }
    let mut guards = Vec::with_capacity(leases);
    while let Some(out) = set.join_next().await {
        guards.extend(out.unwrap());
    }
    tracing::info!(leases = guards.len(), "holding leases");
    // Skip the first period (leases acquired at different times), then measure three.
    tokio::time::sleep(period).await;
    let (s0, u0, t0) = (
        client.renewal_stats(),
        redis_usec(con).await,
        Instant::now(),
    );
    tokio::time::sleep(period * 3).await;
    let (s1, u1) = (client.renewal_stats(), redis_usec(con).await);
    let periods = t0.elapsed().as_secs_f64() / period.as_secs_f64();
    assert!(guards.iter().all(|g| !g.is_lost()), "a lease was lost");
    tracing::info!(renewals = s1.renewed - s0.renewed, periods, "watchdog");

    // Naive: one extend script per lease, 64 in flight, on a plain multiplexed connection.
    let extend = Arc::new(Script::new(leasehold::scripts::EXTEND.plain));
    let u2 = redis_usec(con).await;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let names: Arc<Vec<String>> = Arc::new(
        guards
            .iter()
            .map(|g| format!("leasehold:{{{}}}", g.name()))
            .collect(),
    );
    for t in 0..64 {
        let (names, extend, mut con) = (names.clone(), extend.clone(), con.clone());
        set.spawn(async move {
            let mut i = t;
            while i < names.len() {
                // The naive renewal checks ownership too; a wrong owner id makes it a
                // refused renewal, which costs the server the same work.
                let _: Vec<i64> = extend
                    .key(&names[i])
                    .arg("naive-owner")
                    .arg("naive-request")
                    .arg(6_000)
                    .arg(1)
                    .invoke_async(&mut con)
                    .await
                    .expect("naive extend");
                i += 64;
            }
        });
    }
    while set.join_next().await.is_some() {}
    let naive_ms = started.elapsed().as_secs_f64() * 1e3;
    let u3 = redis_usec(con).await;
    drop(guards);
    client.shutdown().await;
    RenewalFigures {
        leases,
        calls_per_period: (s1.calls - s0.calls) as f64 / periods,
        busy_ms_per_period: (s1.call_micros - s0.call_micros) as f64 / 1e3 / periods,
        redis_ms_per_period: (u1 - u0) / 1e3 / periods,
        naive_round_trips: names.len(),
        naive_ms,
        naive_redis_ms: (u3 - u2) / 1e3,
    }
}

/// Run the benchmark on a private redis-server and print the table (or JSON).
///
/// # Cancel safety
/// Cancel-safe: the benchmark's keys live only on its private redis-server, which stops when the future is dropped.
pub async fn run(_redis: Option<&str>, args: &BenchArgs) -> anyhow::Result<u8> {
    let (secs, rounds) = (args.secs.max(1), args.rounds.max(1));
    let dur = Duration::from_secs(secs);
    let server = tokio::task::spawn_blocking(|| RedisServer::builder().try_start())
        .await?
        .map_err(|e| anyhow::anyhow!("cannot start a private redis-server: {e}"))?;
    let url = server.url();
    let steps = (rounds * 7 + 3) as u64;
    let pb = indicatif::ProgressBar::new(steps).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows: Vec<String> = Vec::new();
    {
        let redis_client = redis::Client::open(url.as_str()).unwrap();
        let mut con = redis_client
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let client = leasehold::Client::new(url.as_str()).unwrap();
        let rtt_us = ping_rtt_us(&mut con).await;
        pb.set_message(format!(
            "raw PING round trip {rtt_us:.1} µs; {rounds} rounds × {secs} s"
        ));

        // (a) one task on fresh keys; (b) 32 and 64 tasks on distinct keys.
        let mut uncontended_cpu_us = None;
        if args.wants('a') {
            let m = cycles::measure(&url, 1, dur, rounds, &pb).await;
            uncontended_cpu_us = Some(cycles::leasehold_cpu_us(&m));
            rows.extend(cycles::rows(&m));
        }
        if args.wants('b') {
            for tasks in [32, 64] {
                let m = cycles::measure(&url, tasks, dur, rounds, &pb).await;
                rows.extend(cycles::rows(&m));
            }
        }

        if args.wants('c') {
            // (c) contention: 8 contenders on one key, a client each and one shared client.
            let m = contention::measure(&url, dur, rounds, &pb).await;
            rows.extend(contention::rows(&m, rtt_us, uncontended_cpu_us));
        }
        client.shutdown().await;
        if args.wants('d') {
            pb.set_message(format!("(d) holding {} leases", args.leases));
            let leases = args.leases.max(64);
            let rf = renewals(&url, &mut con, leases).await;
            pb.inc(1);
            rows.extend(renewal_rows(&rf));
        }
        if args.wants('e') {
            // (e) RedLock: half a measurement per variant and round, the variants alternating.
            let re = redlock::measure(dur / 2, rounds, &pb).await?;
            rows.extend(redlock::rows(&re));
        }
        if args.wants('f') {
            // (f) fair lock beside the default lock under contention; semaphore cycles.
            let rp = primitives::measure(&url, dur, rounds, rtt_us, &pb).await?;
            rows.extend(primitives::rows(&rp));
        }
        pb.finish_and_clear();
        rows.push(format!(
            "| raw PING round trip (median) | {rtt_us:.1} µs | | | |"
        ));
    }
    drop(server);
    print_rows(&rows, args.json)?;
    Ok(leasehold_cli::exit::OK)
}

/// The rows of (d).
fn renewal_rows(rf: &RenewalFigures) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!(
        "| (d) renewing {} held leases: round trips per period | {:.1} | naive, one extend per lease: {} | {:.0}× fewer | O(leases / {}) |",
        rf.leases, rf.calls_per_period, rf.naive_round_trips, rf.naive_round_trips as f64 / rf.calls_per_period, leasehold::RENEWAL_BATCH
    ));
    out.push(format!(
        "| (d) mean time of one renewal call (up to {} leases) | {:.1} ms | naive: one pass over all leases, 64 in flight, {:.0} ms | | |",
        leasehold::RENEWAL_BATCH, rf.busy_ms_per_period / rf.calls_per_period, rf.naive_ms
    ));
    out.push(format!(
        "| (d) Redis CPU per period | {:.0} ms | naive: {:.0} ms | {:.2}× | ≤ 230 ms (half of 459 ms before the lean renewal script) |",
        rf.redis_ms_per_period,
        rf.naive_redis_ms,
        rf.naive_redis_ms / rf.redis_ms_per_period
    ));
    out
}

/// A table cell as JSON: its text, and its first number with that number's unit (the
/// word after it, or `×`, `%`), so machines read numbers, not strings.
fn cell_json(text: &str) -> serde_json::Value {
    match first_number(text) {
        Some((value, unit)) => serde_json::json!({ "text": text, "value": value, "unit": unit }),
        None => serde_json::json!({ "text": text, "value": null, "unit": null }),
    }
}

/// The first decimal number in `text` and what follows it (`×`, `%`, or a unit word).
fn first_number(text: &str) -> Option<(f64, String)> {
    let chars: Vec<char> = text.chars().collect();
    let start = chars.iter().position(|c| c.is_ascii_digit())?;
    let mut end = start;
    while end < chars.len() && (chars[end].is_ascii_digit() || chars[end] == '.') {
        end += 1;
    }
    let value: f64 = chars[start..end].iter().collect::<String>().parse().ok()?;
    let rest: String = chars[end..].iter().collect();
    let rest = rest.trim_start();
    let unit: String = if rest.starts_with(['×', '%']) {
        rest.chars().take(1).collect()
    } else {
        rest.chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ';' | ')' | '('))
            .collect()
    };
    Some((value, unit))
}

fn print_rows(rows: &[String], json: bool) -> anyhow::Result<()> {
    if json {
        let out: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                // Cells hold no `|`; empty cells stay empty strings.
                let inner = r.trim().trim_start_matches('|').trim_end_matches('|');
                let f: Vec<&str> = inner.split('|').map(str::trim).collect();
                let cell = |i: usize| cell_json(f.get(i).copied().unwrap_or(""));
                serde_json::json!({
                    "measurement": f.first().copied().unwrap_or(""),
                    "leasehold": cell(1),
                    "baseline": cell(2),
                    "ratio": cell(3),
                    "target": cell(4),
                })
            })
            .collect();
        let doc = serde_json::json!({ "schema": 1, "rows": out });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("| measurement | leasehold | baseline | ratio | target |");
        println!("|---|---|---|---|---|");
        for r in rows {
            println!("{r}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::first_number;

    #[test]
    fn table_cells_give_their_first_number_and_its_unit() {
        assert_eq!(
            first_number("20543 cycles/s"),
            Some((20543.0, "cycles/s".into()))
        );
        assert_eq!(first_number("0.86×"), Some((0.86, "×".into())));
        assert_eq!(
            first_number("raw PING RTT 16.6 µs; rslock: 95 µs"),
            Some((16.6, "µs".into()))
        );
        assert_eq!(first_number("≥ 0.90×"), Some((0.9, "×".into())));
        assert_eq!(first_number(""), None);
    }
}
