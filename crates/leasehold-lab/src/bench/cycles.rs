//! (a) and (b): uncontended acquire+release cycles, leasehold beside `rslock` 0.10, plain
//! redis-rs commands (`SET NX PX` and a compare-and-delete script: what a hand-rolled lock
//! sends) and raw redis-rs sending leasehold's own two scripts (what leasehold's client
//! work costs on top of its scripts). Every round runs every variant for the same time, in
//! a rotating order, so machine noise hits them alike.
//!
//! (a) is one task on fresh keys (a new name, and a new lock handle, per cycle): cycles/s
//! and the cycle's p50 and p99. (b) is 32 and 64 tasks, each on its own key (a handle per
//! task), on one client (one multiplexed
//! connection per library): cycles/s and, per cycle, Redis CPU (`INFO cpu`, user + system:
//! everything the server did, networking included), scripts and commands (those inside
//! scripts included, from `INFO commandstats`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold::scripts::{ACQUIRE_LUA, RELEASE_LUA};
use redis::aio::MultiplexedConnection;
use redis::Script;

use super::{median, percentile, Raw};

/// The compare-and-delete every hand-rolled Redis lock sends to unlock.
const UNLOCK_LUA: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Leasehold,
    Rslock,
    Plain,
    SameScripts,
}

const VARIANTS: [Variant; 4] = [
    Variant::Leasehold,
    Variant::Rslock,
    Variant::Plain,
    Variant::SameScripts,
];

/// What the server counted so far.
#[derive(Clone, Copy, Default)]
pub(super) struct Counters {
    pub(super) cpu_us: f64,
    pub(super) commands: f64,
    pub(super) scripts: f64,
}

/// The server's CPU time, commands and script calls so far (`INFO cpu`, `INFO commandstats`).
pub(super) async fn counters(con: &mut MultiplexedConnection) -> Counters {
    let cpu: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(con)
        .await
        .expect("INFO cpu");
    let field = |name: &str| {
        cpu.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu_us = (field("used_cpu_sys:") + field("used_cpu_user:")) * 1e6;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .expect("INFO commandstats");
    let (mut commands, mut scripts) = (0.0, 0.0);
    for line in stats.lines() {
        let Some((name, rest)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let calls = rest
            .strip_prefix("calls=")
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0);
        if name == "info" {
            continue;
        }
        commands += calls;
        if name == "evalsha" || name == "eval" {
            scripts += calls;
        }
    }
    Counters {
        cpu_us,
        commands,
        scripts,
    }
}

/// One variant's figures over the rounds.
#[derive(Default, Clone)]
struct Series {
    rate: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    cpu_us: Vec<f64>,
    commands: Vec<f64>,
    scripts: Vec<f64>,
    /// Per-round ratio of leasehold's figure to this variant's.
    ratio_rate: Vec<f64>,
    ratio_p50: Vec<f64>,
    ratio_cpu: Vec<f64>,
}

/// One measurement: the series of every variant.
pub(super) struct Measured {
    tasks: usize,
    by: Vec<(Variant, Series)>,
    batch_share: f64,
}

struct Setup {
    con: MultiplexedConnection,
    client: leasehold::Client,
    rslock: Arc<rslock::LockManager>,
    acquire: Arc<Script>,
    release: Arc<Script>,
    unlock: Arc<Script>,
}

/// Run `tasks` copies of `variant` for `dur`: cycles/s and every cycle's latency (µs).
async fn run_variant(
    s: &Setup,
    variant: Variant,
    tasks: usize,
    dur: Duration,
    round: usize,
) -> (f64, Vec<f64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let (stop, count, samples) = (stop.clone(), count.clone(), samples.clone());
        let client = s.client.clone();
        let rs = s.rslock.clone();
        let mut con = s.con.clone();
        let unlock = s.unlock.clone();
        let mut raw = Raw {
            con: s.con.clone(),
            acquire: s.acquire.clone(),
            release: s.release.clone(),
        };
        let fresh = tasks == 1;
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::with_capacity(4096);
            let mut reused: Option<leasehold::Lock> = None;
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                // Fresh keys with one task; one key per task with many.
                let name = if fresh {
                    format!("bench-{variant:?}-{round}-{n}")
                } else {
                    format!("bench-{variant:?}-t{t}")
                };
                let t0 = Instant::now();
                match variant {
                    Variant::Leasehold => {
                        // A handle per name: one per cycle on fresh keys, one per task
                        // on its own key (as a task that keeps locking one name would).
                        let lock = if fresh {
                            client.lock(&name).unwrap()
                        } else {
                            reused
                                .get_or_insert_with(|| client.lock(&name).unwrap())
                                .clone()
                        };
                        let g = lock.try_acquire().await.expect("uncontended");
                        g.release().await.expect("release");
                    }
                    Variant::Rslock => {
                        let l = rs
                            .lock(name.as_bytes(), Duration::from_secs(30))
                            .await
                            .expect("rslock lock");
                        rs.unlock(&l).await;
                    }
                    Variant::Plain => {
                        let value = format!("{:032x}", rand::random::<u128>());
                        let ok: Option<String> = redis::cmd("SET")
                            .arg(&name)
                            .arg(&value)
                            .arg("NX")
                            .arg("PX")
                            .arg(30_000)
                            .query_async(&mut con)
                            .await
                            .expect("SET NX PX");
                        assert!(ok.is_some(), "uncontended");
                        let _: i64 = unlock
                            .key(&name)
                            .arg(&value)
                            .invoke_async(&mut con)
                            .await
                            .expect("unlock");
                    }
                    Variant::SameScripts => {
                        raw.cycle(&name, ((t as u64) << 40) | n).await;
                    }
                }
                if mine.len() < 200_000 {
                    mine.push(t0.elapsed().as_secs_f64() * 1e6);
                }
                n += 1;
                count.fetch_add(1, Ordering::Relaxed);
            }
            samples.lock().unwrap().extend(mine);
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(dur).await;
    let done = count.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await.expect("bench task");
    }
    let mut v = std::mem::take(&mut *samples.lock().unwrap());
    v.sort_by(|a, b| a.total_cmp(b));
    (done as f64 / elapsed.as_secs_f64(), v)
}

/// Measure (a) (`tasks` = 1) or (b) over `rounds` rounds of `dur` per variant.
pub(super) async fn measure(
    url: &str,
    tasks: usize,
    dur: Duration,
    rounds: usize,
    pb: &indicatif::ProgressBar,
) -> Measured {
    let redis_client = redis::Client::open(url).unwrap();
    let con = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let s = Setup {
        con,
        client: leasehold::Client::new(url).unwrap(),
        rslock: Arc::new(rslock::LockManager::new(vec![url.to_string()])),
        acquire: Arc::new(Script::new(ACQUIRE_LUA)),
        release: Arc::new(Script::new(RELEASE_LUA)),
        unlock: Arc::new(Script::new(UNLOCK_LUA)),
    };
    let mut stats_con = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Warm up every variant (connections, script loads).
    for v in VARIANTS {
        run_variant(&s, v, tasks, Duration::from_millis(100), usize::MAX).await;
    }
    let b0 = s.client.batch_stats();
    let mut by: Vec<(Variant, Series)> = VARIANTS.iter().map(|v| (*v, Series::default())).collect();
    for round in 0..rounds {
        let mut this: Vec<(Variant, f64, f64, f64, Counters)> = Vec::new();
        for i in 0..VARIANTS.len() {
            let v = VARIANTS[(i + round) % VARIANTS.len()];
            let c0 = counters(&mut stats_con).await;
            let (rate, lat) = run_variant(&s, v, tasks, dur, round).await;
            let c1 = counters(&mut stats_con).await;
            let cycles = (rate * dur.as_secs_f64()).max(1.0);
            this.push((
                v,
                rate,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                Counters {
                    cpu_us: (c1.cpu_us - c0.cpu_us) / cycles,
                    commands: (c1.commands - c0.commands) / cycles,
                    scripts: (c1.scripts - c0.scripts) / cycles,
                },
            ));
        }
        let lh = *this
            .iter()
            .find(|(v, ..)| *v == Variant::Leasehold)
            .unwrap();
        for (v, rate, p50, p99, c) in this {
            let series = &mut by.iter_mut().find(|(x, _)| *x == v).unwrap().1;
            series.rate.push(rate);
            series.p50_us.push(p50);
            series.p99_us.push(p99);
            series.cpu_us.push(c.cpu_us);
            series.commands.push(c.commands);
            series.scripts.push(c.scripts);
            series.ratio_rate.push(lh.1 / rate);
            series.ratio_p50.push(lh.2 / p50);
            series.ratio_cpu.push(lh.4.cpu_us / c.cpu_us);
        }
        pb.inc(1);
        pb.set_message(format!(
            "({}) {tasks} task(s), round {}: leasehold {:.0}/s",
            if tasks == 1 { "a" } else { "b" },
            round + 1,
            lh.1
        ));
    }
    let b1 = s.client.batch_stats();
    let lh_cycles: f64 = by[0].1.rate.iter().sum::<f64>() * dur.as_secs_f64();
    let batch_share = (b1.calls - b0.calls) as f64 / (2.0 * lh_cycles).max(1.0);
    s.client.shutdown().await;
    Measured {
        tasks,
        by,
        batch_share,
    }
}

fn med(v: &[f64]) -> f64 {
    median(&mut v.to_vec())
}

/// leasehold's median Redis CPU per cycle (µs).
pub(super) fn leasehold_cpu_us(m: &Measured) -> f64 {
    let lh = &m
        .by
        .iter()
        .find(|(x, _)| *x == Variant::Leasehold)
        .unwrap()
        .1;
    med(&lh.cpu_us)
}

/// The table rows of one measurement.
pub(super) fn rows(m: &Measured) -> Vec<String> {
    let get = |v: Variant| &m.by.iter().find(|(x, _)| *x == v).unwrap().1;
    let (lh, rs, plain, same) = (
        get(Variant::Leasehold),
        get(Variant::Rslock),
        get(Variant::Plain),
        get(Variant::SameScripts),
    );
    let label = if m.tasks == 1 {
        "(a) 1 task, fresh keys".to_string()
    } else {
        format!("(b) {} tasks, distinct keys", m.tasks)
    };
    let mut rows = vec![
        format!(
            "| {label}: acquire+release | {:.0} cycles/s | rslock 0.10: {:.0}; plain redis-rs (SET NX PX + compare-and-delete): {:.0}; raw redis-rs, leasehold's 2 scripts: {:.0} cycles/s | {:.2}× rslock's; {:.2}× plain's | {} |",
            med(&lh.rate), med(&rs.rate), med(&plain.rate), med(&same.rate),
            med(&rs.ratio_rate), med(&plain.ratio_rate),
            if m.tasks == 1 { "" } else { "≥ 1.0× rslock's" }
        ),
        format!(
            "| {label}: cycle p50 / p99 | {:.0} µs / {:.0} µs | rslock: {:.0} / {:.0} µs; plain: {:.0} / {:.0} µs; same scripts: {:.0} / {:.0} µs | {:.2}× rslock's p50 | {} |",
            med(&lh.p50_us), med(&lh.p99_us), med(&rs.p50_us), med(&rs.p99_us),
            med(&plain.p50_us), med(&plain.p99_us), med(&same.p50_us), med(&same.p99_us),
            med(&rs.ratio_p50),
            if m.tasks == 1 { "≤ 1.15× rslock's" } else { "" }
        ),
        format!(
            "| {label}: Redis per cycle: CPU (INFO cpu), scripts, commands | {:.1} µs, {:.1} scripts, {:.1} commands | rslock: {:.1} µs, {:.1}, {:.1}; plain: {:.1} µs, {:.1}, {:.1}; same scripts: {:.1} µs, {:.1}, {:.1} | {:.2}× rslock's CPU | {} |",
            med(&lh.cpu_us), med(&lh.scripts), med(&lh.commands),
            med(&rs.cpu_us), med(&rs.scripts), med(&rs.commands),
            med(&plain.cpu_us), med(&plain.scripts), med(&plain.commands),
            med(&same.cpu_us), med(&same.scripts), med(&same.commands),
            med(&rs.ratio_cpu),
            if m.tasks == 1 { "" } else { "≤ 1.0× rslock's" }
        ),
    ];
    if m.tasks > 1 {
        rows.push(format!(
            "| {label}: leasehold calls sent in batches | {:.0}% | | | |",
            m.batch_share * 100.0
        ));
    }
    rows
}
