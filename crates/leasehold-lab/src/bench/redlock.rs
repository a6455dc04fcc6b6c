//! (e) RedLock latency: one uncontended acquire+release cycle on leasehold's RedLock
//! client over 5 independent masters, beside leasehold on one of those masters and beside
//! `rslock`'s multi-node lock over the same 5, and beside this machine's floor: raw
//! redis-rs sending leasehold's two scripts to all 5 at once (each master's acquire then
//! release, the 5 concurrently), which shows what fanning out costs here before any
//! quorum logic.
//!
//! The masters are private redis-servers started for this measurement only. The four
//! variants run in the same rounds, alternating in short time slices whose order rotates
//! every slice, so machine noise hits all alike; a warm-up (connections, script loading)
//! comes first and is not timed. Every variant uses one key of its own, a fixed 10 s lease
//! and no watchdog (the raw floor: 30 s, as in (a)). Figures are medians over rounds of
//! each round's p50 and p99; ratios are medians of per-round ratios.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::scripts::{ACQUIRE_LUA, RELEASE_LUA};
use leasehold_testkit::Masters;
use redis::Script;

use super::{median, percentile, Raw};

/// Independent masters the RedLock variants lock.
const NODES: usize = 5;
/// Lease of every cycle; long enough that nothing expires, and no watchdog runs.
const TTL: Duration = Duration::from_secs(10);
/// Bound on one node's answer in leasehold's RedLock rounds (never reached uncontended).
const NODE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one variant runs before the next one takes over.
const SLICE: Duration = Duration::from_millis(25);
/// Untimed cycles per variant before the first round.
const WARMUP: Duration = Duration::from_millis(300);

/// The locks under comparison; the discriminant indexes per-variant arrays.
#[derive(Clone, Copy)]
enum Variant {
    /// leasehold on one master (master 0).
    Single = 0,
    /// leasehold's RedLock client over all masters.
    RedLock = 1,
    /// `rslock::LockManager` over all masters.
    Rslock = 2,
    /// Raw redis-rs, leasehold's two scripts on every master at once.
    RawFanout = 3,
}

const VARIANTS: [Variant; 4] = [
    Variant::Single,
    Variant::RedLock,
    Variant::Rslock,
    Variant::RawFanout,
];
/// How many variants; the length of per-variant arrays.
const N: usize = VARIANTS.len();

/// Indexes of the variants in per-variant arrays.
const SINGLE: usize = Variant::Single as usize;
const REDLOCK: usize = Variant::RedLock as usize;
const RSLOCK: usize = Variant::Rslock as usize;
const RAW: usize = Variant::RawFanout as usize;

async fn leasehold_cycle(lock: &leasehold::Lock) {
    let guard = lock.try_acquire().await.expect("uncontended");
    guard.release().await.expect("release");
}

async fn rslock_cycle(manager: &rslock::LockManager) {
    let lock = manager
        .lock(b"bench-e-rslock".as_slice(), TTL)
        .await
        .expect("rslock lock");
    manager.unlock(&lock).await;
}

/// The same two scripts on all masters concurrently; `n` makes the request id.
async fn raw_fanout_cycle(raw: &mut [Raw; NODES], n: u64) {
    const NAME: &str = "bench-e-raw";
    let [a, b, c, d, e] = raw;
    tokio::join!(
        a.cycle(NAME, n),
        b.cycle(NAME, n),
        c.cycle(NAME, n),
        d.cycle(NAME, n),
        e.cycle(NAME, n),
    );
}

/// A raw connection with leasehold's scripts to every master.
async fn raw_connections(urls: &[String]) -> anyhow::Result<[Raw; NODES]> {
    let (acquire, release) = (
        Arc::new(Script::new(ACQUIRE_LUA)),
        Arc::new(Script::new(RELEASE_LUA)),
    );
    let mut raw = Vec::with_capacity(NODES);
    for url in urls {
        let con = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        raw.push(Raw {
            con,
            acquire: acquire.clone(),
            release: release.clone(),
        });
    }
    raw.try_into()
        .map_err(|_| anyhow::anyhow!("expected {NODES} masters"))
}

/// One client and one lock per variant.
struct Clients {
    single: leasehold::Client,
    single_lock: leasehold::Lock,
    redlock: leasehold::Client,
    redlock_lock: leasehold::Lock,
    rslock: rslock::LockManager,
    raw: [Raw; NODES],
    /// Raw cycles so far, for distinct request ids.
    raw_n: u64,
}

impl Clients {
    async fn new(urls: &[String]) -> anyhow::Result<Self> {
        let single = leasehold::Client::new(urls[0].as_str())?;
        let redlock = leasehold::Client::redlock_builder(urls.iter().cloned())
            .node_timeout(NODE_TIMEOUT)
            .build()?;
        let fixed = |client: &leasehold::Client, name: &str| -> anyhow::Result<leasehold::Lock> {
            Ok(client.lock(name)?.ttl(TTL).auto_renew(false))
        };
        Ok(Self {
            single_lock: fixed(&single, "bench-e-single")?,
            redlock_lock: fixed(&redlock, "bench-e-redlock")?,
            single,
            redlock,
            rslock: rslock::LockManager::new(urls.to_vec()),
            raw: raw_connections(urls).await?,
            raw_n: 0,
        })
    }

    /// One acquire+release cycle; its latency in µs.
    async fn cycle(&mut self, variant: Variant) -> f64 {
        let started = Instant::now();
        match variant {
            Variant::Single => leasehold_cycle(&self.single_lock).await,
            Variant::RedLock => leasehold_cycle(&self.redlock_lock).await,
            Variant::Rslock => rslock_cycle(&self.rslock).await,
            Variant::RawFanout => {
                self.raw_n += 1;
                raw_fanout_cycle(&mut self.raw, self.raw_n).await;
            }
        }
        started.elapsed().as_secs_f64() * 1e6
    }

    /// Cycles of `variant` for `dur` (at least one), latencies appended to `out`.
    async fn run_for(&mut self, variant: Variant, dur: Duration, out: &mut Vec<f64>) {
        let started = Instant::now();
        loop {
            out.push(self.cycle(variant).await);
            if started.elapsed() >= dur {
                break;
            }
        }
    }

    /// One round: `per_variant` of cycles for each variant, in rotating slices.
    async fn round(&mut self, per_variant: Duration) -> Round {
        let mut samples: [Vec<f64>; N] = Default::default();
        let slices = (per_variant.as_secs_f64() / SLICE.as_secs_f64())
            .ceil()
            .max(1.0) as usize;
        for s in 0..slices {
            for k in 0..N {
                let v = VARIANTS[(s + k) % N];
                self.run_for(v, SLICE, &mut samples[v as usize]).await;
            }
        }
        Round::from_samples(samples)
    }

    async fn shutdown(self) {
        self.single.shutdown().await;
        self.redlock.shutdown().await;
    }
}

/// One round's latency percentiles per variant (µs).
struct Round {
    p50: [f64; N],
    p99: [f64; N],
    cycles: [usize; N],
}

impl Round {
    fn from_samples(mut samples: [Vec<f64>; N]) -> Self {
        let mut round = Round {
            p50: [f64::NAN; N],
            p99: [f64::NAN; N],
            cycles: [0; N],
        };
        for (i, s) in samples.iter_mut().enumerate() {
            s.sort_by(|a, b| a.total_cmp(b));
            round.p50[i] = percentile(s, 0.5);
            round.p99[i] = percentile(s, 0.99);
            round.cycles[i] = s.len();
        }
        round
    }
}

/// What (e) reports: medians over rounds, per variant (indexed by [`Variant`]).
pub(super) struct RedlockFigures {
    p50_us: [f64; N],
    p99_us: [f64; N],
    cycles: [usize; N],
    rounds: usize,
    /// RedLock p50 / single-master p50.
    vs_single_p50: f64,
    /// RedLock p99 / single-master p99.
    vs_single_p99: f64,
    /// RedLock p50 / rslock p50: below 1 means leasehold is faster.
    vs_rslock_p50: f64,
    /// RedLock p50 / raw fan-out p50: what leasehold adds to the machine's floor.
    vs_raw_p50: f64,
    /// Raw fan-out p50 / single-master p50: what fanning out alone costs here.
    raw_vs_single_p50: f64,
}

/// The median over rounds of `f`.
fn over_rounds(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    median(&mut rounds.iter().map(f).collect::<Vec<_>>())
}

fn figures(rounds: &[Round]) -> RedlockFigures {
    let (s, r, rs) = (SINGLE, REDLOCK, RSLOCK);
    let mut out = RedlockFigures {
        p50_us: [f64::NAN; N],
        p99_us: [f64::NAN; N],
        cycles: [0; N],
        rounds: rounds.len(),
        vs_single_p50: over_rounds(rounds, |x| x.p50[r] / x.p50[s]),
        vs_single_p99: over_rounds(rounds, |x| x.p99[r] / x.p99[s]),
        vs_rslock_p50: over_rounds(rounds, |x| x.p50[r] / x.p50[rs]),
        vs_raw_p50: over_rounds(rounds, |x| x.p50[r] / x.p50[RAW]),
        raw_vs_single_p50: over_rounds(rounds, |x| x.p50[RAW] / x.p50[s]),
    };
    for v in 0..N {
        out.p50_us[v] = over_rounds(rounds, |x| x.p50[v]);
        out.p99_us[v] = over_rounds(rounds, |x| x.p99[v]);
        out.cycles[v] = rounds.iter().map(|x| x.cycles[v]).sum();
    }
    out
}

/// Start the masters, warm up, then run `rounds` rounds of `per_variant` per variant;
/// advances `pb` once after the warm-up and once per round.
///
/// # Cancel safety
/// Cancel-safe: the keys live only on the private masters, which stop when the future is
/// dropped.
pub(super) async fn measure(
    per_variant: Duration,
    rounds: usize,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<RedlockFigures> {
    pb.set_message(format!("(e) starting {NODES} masters for RedLock"));
    let masters = tokio::task::spawn_blocking(|| Masters::try_start(NODES))
        .await?
        .map_err(|e| anyhow::anyhow!("cannot start {NODES} private redis-servers: {e}"))?;
    let mut clients = Clients::new(&masters.urls()).await?;
    for v in VARIANTS {
        clients.run_for(v, WARMUP, &mut Vec::new()).await;
    }
    pb.inc(1);
    let mut done = Vec::with_capacity(rounds);
    for n in 0..rounds {
        let round = clients.round(per_variant).await;
        pb.inc(1);
        pb.set_message(format!(
            "(e) round {}: p50 one master {:.0} µs, RedLock {:.0} µs, rslock {:.0} µs, raw fan-out {:.0} µs",
            n + 1,
            round.p50[SINGLE],
            round.p50[REDLOCK],
            round.p50[RSLOCK],
            round.p50[RAW]
        ));
        done.push(round);
    }
    clients.shutdown().await;
    drop(masters);
    Ok(figures(&done))
}

/// The table rows of (e).
pub(super) fn rows(f: &RedlockFigures) -> Vec<String> {
    let (s, r, rs) = (SINGLE, REDLOCK, RSLOCK);
    vec![
        format!(
            "| (e) RedLock over {NODES} masters, uncontended acquire+release p50 | {:.0} µs | leasehold on one of those masters: {:.0} µs | {:.2}× | ≤ 1.3× |",
            f.p50_us[r], f.p50_us[s], f.vs_single_p50
        ),
        format!(
            "| (e) RedLock p50 beside rslock 0.10 over the same {NODES} masters (below 1× = leasehold faster) | {:.0} µs | rslock lock+unlock: {:.0} µs | {:.2}× rslock's latency | |",
            f.p50_us[r], f.p50_us[rs], f.vs_rslock_p50
        ),
        format!(
            "| (e) RedLock acquire+release p99 | {:.0} µs | one master: {:.0} µs; rslock: {:.0} µs | {:.2}× one master's | |",
            f.p99_us[r], f.p99_us[s], f.p99_us[rs], f.vs_single_p99
        ),
        format!(
            "| (e) this machine's floor: raw redis-rs, the same 2 scripts on all {NODES} masters at once, p50 | {:.0} µs | raw fan-out: {:.0} µs = {:.2}× leasehold on one master | {:.2}× raw fan-out | |",
            f.p50_us[r], f.p50_us[RAW], f.raw_vs_single_p50, f.vs_raw_p50
        ),
        format!(
            "| (e) cycles timed over {} rounds | {} | one master: {}; rslock: {}; raw fan-out: {} | | |",
            f.rounds, f.cycles[r], f.cycles[s], f.cycles[rs], f.cycles[RAW]
        ),
    ]
}
