//! (f) The newer primitives under load, on the benchmark's private redis-server.
//!
//! Contention: 8 contenders, each with a `Client` of its own (so each is a separate
//! waiter as far as Redis is concerned), loop acquire → a yield as critical section →
//! release on one key, on the default lock (`client.lock`) and on the fair lock
//! (`client.fair_lock`). Every grant and every release start is timestamped: a handoff is
//! the time from a holder starting its release to the next holder's acquire returning
//! (handoffs to the same holder again are counted apart, as in (c)); a wait is one acquire
//! call, from its start to the grant. Reported: acquisitions per second, handoff p50/p99
//! (in µs and in raw PING round trips of this run), the longest single wait, the spread of
//! acquisitions per contender, and Redis's work per acquisition (CPU time, scripts and commands).
//!
//! Semaphore: acquire+release cycles per second of one task on a 5-permit semaphore beside
//! one task on a plain lock, and of 16 tasks (a client each) on the 5-permit semaphore
//! beside 5 tasks (a client each) on 5 distinct plain locks: the same concurrency, with no
//! waiting. Every lock and semaphore keeps the client's default lease (30 s, renewed by
//! the watchdog), as in (a).
//!
//! Variants alternate in short slices whose order rotates every slice (as in (e)), so the
//! machine's noise hits them alike: per round, each lock kind gets a measurement's worth of
//! contention slices and each cycle variant half of one. Only grants and cycles that end
//! inside a slice count; the tasks are then stopped and drained. Figures are medians over
//! rounds; ratios are medians of per-round ratios; the longest waits and the spreads cover
//! all rounds together. A warm-up (connections, scripts, subscriptions) comes first and is
//! not timed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::{contend, median, percentile, Ev};

/// Tasks (each with a client of its own) contending for one lock.
const CONTENDERS: usize = 8;
/// Permits of the benchmark's semaphores.
const PERMITS: u32 = 5;
/// Tasks (each with a client of its own) sharing the semaphore's permits.
const SEM_TASKS: usize = 16;
/// How long an acquire may wait before the benchmark gives up (never reached when the
/// library works).
const WAIT: Duration = Duration::from_secs(30);
/// One contention slice (a few hundred handoffs).
const CONTEND_SLICE: Duration = Duration::from_millis(100);
/// One slice of a cycle variant.
const CYCLE_SLICE: Duration = Duration::from_millis(50);
/// Untimed run of every variant before the first round.
const WARMUP: Duration = Duration::from_millis(200);

/// Redis's own counters: its process CPU time (`INFO cpu`, user + system: script runs,
/// socket I/O and pub/sub delivery alike) and its command counts (`INFO commandstats`,
/// the `INFO` calls left out). Command *times* from `commandstats` are not used: a
/// script's time there already includes the commands it runs, which are listed too.
#[derive(Clone, Copy, Default)]
struct ServerWork {
    /// Commands, those that scripts run with `redis.call` included.
    calls: f64,
    /// Scripts (`EVALSHA`, `EVAL`).
    scripts: f64,
    /// CPU time of the redis-server process, µs.
    usec: f64,
}

impl ServerWork {
    async fn now(con: &mut MultiplexedConnection) -> Self {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .query_async(con)
            .await
            .expect("INFO");
        let mut out = ServerWork::default();
        for (name, stats) in info.lines().filter_map(|l| l.split_once(':')) {
            if name == "used_cpu_user" || name == "used_cpu_sys" {
                out.usec += stats.trim().parse::<f64>().unwrap_or(0.0) * 1e6;
            }
            if !name.starts_with("cmdstat_") || name == "cmdstat_info" {
                continue;
            }
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            out.calls += calls;
            if name.starts_with("cmdstat_eval") {
                out.scripts += calls;
            }
        }
        out
    }

    /// Add what was done between `before` and `after`.
    fn add_between(&mut self, before: ServerWork, after: ServerWork) {
        self.calls += after.calls - before.calls;
        self.scripts += after.scripts - before.scripts;
        self.usec += after.usec - before.usec;
    }

    /// Per one of `n` operations.
    fn per(self, n: u64) -> ServerWork {
        let n = n.max(1) as f64;
        ServerWork {
            calls: self.calls / n,
            scripts: self.scripts / n,
            usec: self.usec / n,
        }
    }
}

/// The two locks under contention; the discriminant indexes per-kind arrays.
#[derive(Clone, Copy)]
enum Kind {
    /// `client.lock(name)`.
    Default = 0,
    /// `client.fair_lock(name)`.
    Fair = 1,
}

const KINDS: [Kind; 2] = [Kind::Default, Kind::Fair];
const DEFAULT: usize = Kind::Default as usize;
const FAIR: usize = Kind::Fair as usize;

/// One client and one lock handle per contender, for one kind of lock.
struct Contenders {
    clients: Vec<leasehold::Client>,
    locks: Vec<leasehold::Lock>,
}

/// One kind of lock's slices of one round, added up.
#[derive(Default)]
struct ContendAcc {
    /// Time inside slices.
    window: Duration,
    /// Handoffs to another contender, µs.
    handoffs_us: Vec<f64>,
    /// Handoffs to the holder that had just released.
    selfs: usize,
    longest_wait: Duration,
    /// Grants inside slices, per contender.
    per_contender: [u64; CONTENDERS],
    /// Every grant, those of the drains after slices included (for `work`).
    grants: u64,
    /// Redis's work during the slices and their drains.
    work: ServerWork,
}

impl ContendAcc {
    /// Add one slice's event log; events after `end` (the drain) count only as work.
    fn add(&mut self, events: &[Ev], started: Instant, end: Instant) {
        self.window += end.duration_since(started);
        let mut last_release = None;
        for ev in events {
            match *ev {
                Ev::ReleaseStart(who, t) => last_release = Some((who, t)),
                Ev::Granted(who, t, waited) => {
                    self.grants += 1;
                    let prev = last_release.take();
                    if t > end {
                        continue;
                    }
                    self.per_contender[who] += 1;
                    self.longest_wait = self.longest_wait.max(waited);
                    match prev {
                        Some((p, _)) if p == who => self.selfs += 1,
                        Some((_, rt)) => self
                            .handoffs_us
                            .push(t.saturating_duration_since(rt).as_secs_f64() * 1e6),
                        None => {}
                    }
                }
            }
        }
    }
}

impl Contenders {
    fn new(url: &str, kind: Kind) -> anyhow::Result<Self> {
        let name = match kind {
            Kind::Default => "bench-f-default",
            Kind::Fair => "bench-f-fair",
        };
        let mut out = Contenders {
            clients: Vec::with_capacity(CONTENDERS),
            locks: Vec::with_capacity(CONTENDERS),
        };
        for _ in 0..CONTENDERS {
            let client = leasehold::Client::new(url)?;
            let lock = match kind {
                Kind::Default => client.lock(name)?,
                Kind::Fair => client.fair_lock(name)?,
            };
            out.locks.push(lock.wait(WAIT));
            out.clients.push(client);
        }
        Ok(out)
    }

    /// Every contender loops for `dur`, then finishes its cycle; added to `acc`.
    async fn slice(&self, dur: Duration, con: &mut MultiplexedConnection, acc: &mut ContendAcc) {
        let w0 = ServerWork::now(con).await;
        let started = Instant::now();
        let (events, end) = contend(&self.locks, dur).await;
        acc.work.add_between(w0, ServerWork::now(con).await);
        acc.add(&events, started, end);
    }

    async fn shutdown(self) {
        for c in self.clients {
            c.shutdown().await;
        }
    }
}

/// One round of one kind of lock under contention.
struct ContendRound {
    /// Time inside slices.
    window_secs: f64,
    /// Grants per second of slice time.
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    handoffs: usize,
    selfs: usize,
    longest_wait_ms: f64,
    per_contender: [u64; CONTENDERS],
    /// Redis's work per grant.
    work: ServerWork,
}

impl From<ContendAcc> for ContendRound {
    fn from(mut acc: ContendAcc) -> Self {
        acc.handoffs_us.sort_by(|a, b| a.total_cmp(b));
        ContendRound {
            window_secs: acc.window.as_secs_f64(),
            rate: acc.per_contender.iter().sum::<u64>() as f64 / acc.window.as_secs_f64(),
            p50_us: percentile(&acc.handoffs_us, 0.5),
            p99_us: percentile(&acc.handoffs_us, 0.99),
            handoffs: acc.handoffs_us.len(),
            selfs: acc.selfs,
            longest_wait_ms: acc.longest_wait.as_secs_f64() * 1e3,
            per_contender: acc.per_contender,
            work: acc.work.per(acc.grants),
        }
    }
}

/// Something to take and give back in a loop.
#[derive(Clone)]
enum Cycler {
    Lock(leasehold::Lock),
    Semaphore(leasehold::Semaphore),
}

impl Cycler {
    /// One acquire+release cycle; how long the acquire took.
    async fn cycle(&self) -> Duration {
        let asked = Instant::now();
        match self {
            Cycler::Lock(lock) => {
                let guard = lock.acquire().await.expect("lock acquire");
                let waited = asked.elapsed();
                guard.release().await.expect("lock release");
                waited
            }
            Cycler::Semaphore(sem) => {
                let permit = sem.acquire().await.expect("semaphore acquire");
                let waited = asked.elapsed();
                permit.release().await.expect("permit release");
                waited
            }
        }
    }
}

/// The cycle variants; the discriminant indexes per-variant arrays.
#[derive(Clone, Copy)]
enum Variant {
    /// One task on a plain lock.
    LockOne = 0,
    /// One task on a 5-permit semaphore.
    SemOne = 1,
    /// 5 tasks, each with its own client, on 5 distinct plain locks.
    LockFive = 2,
    /// 16 tasks, each with its own client, on one 5-permit semaphore.
    SemMany = 3,
}

const VARIANTS: [Variant; 4] = [
    Variant::LockOne,
    Variant::SemOne,
    Variant::LockFive,
    Variant::SemMany,
];
const N: usize = VARIANTS.len();
const LOCK_ONE: usize = Variant::LockOne as usize;
const SEM_ONE: usize = Variant::SemOne as usize;
const LOCK_FIVE: usize = Variant::LockFive as usize;
const SEM_MANY: usize = Variant::SemMany as usize;

/// The clients and handles of one cycle variant, one per task.
struct Cyclers {
    clients: Vec<leasehold::Client>,
    workers: Vec<Cycler>,
}

/// One cycle variant's slices of one round, added up.
#[derive(Default)]
struct CycleAcc {
    window: Duration,
    /// Cycles ended inside slices, per task.
    per_task: Vec<u64>,
    longest_wait: Duration,
    /// Every cycle, those of the drains included (for `work`).
    cycles: u64,
    work: ServerWork,
}

impl Cyclers {
    fn new(url: &str, variant: Variant) -> anyhow::Result<Self> {
        let tasks = match variant {
            Variant::LockOne | Variant::SemOne => 1,
            Variant::LockFive => PERMITS as usize,
            Variant::SemMany => SEM_TASKS,
        };
        let mut out = Cyclers {
            clients: Vec::with_capacity(tasks),
            workers: Vec::with_capacity(tasks),
        };
        for t in 0..tasks {
            let client = leasehold::Client::new(url)?;
            let worker = match variant {
                Variant::LockOne => Cycler::Lock(client.lock("bench-f-plain")?),
                Variant::LockFive => Cycler::Lock(client.lock(&format!("bench-f-plain-{t}"))?),
                Variant::SemOne => Cycler::Semaphore(client.semaphore("bench-f-sem-one", PERMITS)?),
                Variant::SemMany => {
                    Cycler::Semaphore(client.semaphore("bench-f-sem-many", PERMITS)?.wait(WAIT))
                }
            };
            out.workers.push(worker);
            out.clients.push(client);
        }
        Ok(out)
    }

    /// Every task cycles for `dur`, then finishes its cycle; added to `acc`.
    async fn slice(&self, dur: Duration, con: &mut MultiplexedConnection, acc: &mut CycleAcc) {
        let stop = Arc::new(AtomicBool::new(false));
        let longest_us = Arc::new(AtomicU64::new(0));
        let all = Arc::new(AtomicU64::new(0));
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new((0..self.workers.len()).map(|_| AtomicU64::new(0)).collect());
        let w0 = ServerWork::now(con).await;
        let started = Instant::now();
        let handles: Vec<_> = self
            .workers
            .iter()
            .enumerate()
            .map(|(t, worker)| {
                let worker = worker.clone();
                let (stop, longest_us, counts) = (stop.clone(), longest_us.clone(), counts.clone());
                let all = all.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let waited = worker.cycle().await;
                        all.fetch_add(1, Ordering::Relaxed);
                        if stop.load(Ordering::Relaxed) {
                            break; // ended in the drain
                        }
                        longest_us.fetch_max(waited.as_micros() as u64, Ordering::Relaxed);
                        counts[t].fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(dur).await;
        stop.store(true, Ordering::Relaxed);
        let done: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        acc.window += started.elapsed();
        for h in handles {
            h.await.expect("cycle task");
        }
        acc.work.add_between(w0, ServerWork::now(con).await);
        acc.cycles += all.load(Ordering::Relaxed);
        acc.per_task.resize(done.len(), 0);
        for (sum, n) in acc.per_task.iter_mut().zip(done) {
            *sum += n;
        }
        acc.longest_wait = acc
            .longest_wait
            .max(Duration::from_micros(longest_us.load(Ordering::Relaxed)));
    }

    async fn shutdown(self) {
        for c in self.clients {
            c.shutdown().await;
        }
    }
}

/// What (f) reports.
pub(super) struct PrimitiveFigures {
    /// Contention time per lock kind, over all rounds.
    contention_secs: f64,
    /// Cycle time per variant, over all rounds.
    cycle_secs: f64,
    rtt_us: f64,
    rate: [f64; 2],
    p50_us: [f64; 2],
    p99_us: [f64; 2],
    /// Over all rounds.
    longest_wait_ms: [f64; 2],
    /// Acquisitions per contender over all rounds: fewest, most.
    spread: [(u64, u64); 2],
    handoffs: [usize; 2],
    selfs: [usize; 2],
    /// Redis's work per grant.
    work: [ServerWork; 2],
    fair_vs_default_rate: f64,
    fair_vs_default_p50: f64,
    fair_vs_default_p99: f64,
    /// Redis CPU per grant, fair / default.
    fair_vs_default_cpu: f64,
    cycles: [f64; N],
    /// Redis's work per cycle.
    cycle_work: [ServerWork; N],
    sem_one_vs_lock: f64,
    /// Redis CPU per cycle, semaphore / plain lock, one task.
    sem_one_vs_lock_cpu: f64,
    sem_many_vs_locks: f64,
    sem_many_vs_lock_one: f64,
    /// 16 tasks on the semaphore, over all rounds.
    sem_longest_wait_ms: f64,
    /// Cycles per semaphore task over all rounds: fewest, most.
    sem_spread: (u64, u64),
}

/// How many slices of `slice` fill `total` (at least one).
fn slices(total: Duration, slice: Duration) -> usize {
    (total.as_secs_f64() / slice.as_secs_f64()).ceil().max(1.0) as usize
}

/// Run `rounds` rounds of (f) on the server at `url`: per round, `dur` of contention on each
/// lock kind and `dur / 2` of each cycle variant. `rtt_us` is this run's raw PING round
/// trip. Advances `pb` once after the warm-up and twice per round.
///
/// # Cancel safety
/// Cancel-safe: the keys live only on the benchmark's private redis-server; dropping the
/// future drops the clients, and pending releases end with that server.
pub(super) async fn measure(
    url: &str,
    dur: Duration,
    rounds: usize,
    rtt_us: f64,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<PrimitiveFigures> {
    let began = Instant::now();
    pb.set_message(format!(
        "(f) warming up {CONTENDERS} default and {CONTENDERS} fair contenders, semaphores"
    ));
    let mut con = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let contenders = [
        Contenders::new(url, Kind::Default)?,
        Contenders::new(url, Kind::Fair)?,
    ];
    let cyclers = [
        Cyclers::new(url, Variant::LockOne)?,
        Cyclers::new(url, Variant::SemOne)?,
        Cyclers::new(url, Variant::LockFive)?,
        Cyclers::new(url, Variant::SemMany)?,
    ];
    for c in &contenders {
        c.slice(WARMUP, &mut con, &mut ContendAcc::default()).await;
    }
    for c in &cyclers {
        c.slice(WARMUP, &mut con, &mut CycleAcc::default()).await;
    }
    pb.inc(1);

    let mut contended: [Vec<ContendRound>; 2] = Default::default();
    let mut cycled: [Vec<CycleAcc>; N] = Default::default();
    for round in 0..rounds {
        let mut acc: [ContendAcc; 2] = Default::default();
        for s in 0..slices(dur, CONTEND_SLICE) {
            for k in 0..KINDS.len() {
                let kind = KINDS[(s + k) % KINDS.len()] as usize;
                contenders[kind]
                    .slice(CONTEND_SLICE, &mut con, &mut acc[kind])
                    .await;
            }
        }
        for (k, a) in acc.into_iter().enumerate() {
            contended[k].push(a.into());
        }
        let (d, f) = (&contended[DEFAULT][round], &contended[FAIR][round]);
        pb.inc(1);
        pb.set_message(format!(
            "(f) round {}: default lock {:.0}/s, handoff p50 {:.0} µs; fair lock {:.0}/s, p50 {:.0} µs",
            round + 1,
            d.rate,
            d.p50_us,
            f.rate,
            f.p50_us
        ));
        let mut acc: [CycleAcc; N] = Default::default();
        for s in 0..slices(dur / 2, CYCLE_SLICE) {
            for k in 0..N {
                let v = VARIANTS[(s + k) % N] as usize;
                cyclers[v].slice(CYCLE_SLICE, &mut con, &mut acc[v]).await;
            }
        }
        let rate = |a: &CycleAcc| a.per_task.iter().sum::<u64>() as f64 / a.window.as_secs_f64();
        pb.inc(1);
        pb.set_message(format!(
            "(f) round {}: semaphore 1 task {:.0}/s, {SEM_TASKS} tasks {:.0}/s; plain lock 1 task {:.0}/s",
            round + 1,
            rate(&acc[SEM_ONE]),
            rate(&acc[SEM_MANY]),
            rate(&acc[LOCK_ONE]),
        ));
        for (v, a) in acc.into_iter().enumerate() {
            cycled[v].push(a);
        }
    }
    for c in contenders {
        c.shutdown().await;
    }
    for c in cyclers {
        c.shutdown().await;
    }
    tracing::info!(secs = began.elapsed().as_secs_f64(), "(f) measured");
    Ok(figures(&contended, &cycled, rtt_us))
}

/// The median over rounds of `f`.
fn med<T>(rounds: &[T], f: impl Fn(&T) -> f64) -> f64 {
    median(&mut rounds.iter().map(f).collect::<Vec<_>>())
}

/// The median over rounds of each of Redis's counters.
fn med_work<T>(rounds: &[T], f: impl Fn(&T) -> ServerWork) -> ServerWork {
    ServerWork {
        calls: med(rounds, |x| f(x).calls),
        scripts: med(rounds, |x| f(x).scripts),
        usec: med(rounds, |x| f(x).usec),
    }
}

/// Fewest and most of per-worker totals over all rounds.
fn spread<'a>(per_round: impl Iterator<Item = &'a [u64]>) -> (u64, u64) {
    let mut totals: Vec<u64> = Vec::new();
    for counts in per_round {
        totals.resize(totals.len().max(counts.len()), 0);
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    (
        totals.iter().copied().min().unwrap_or(0),
        totals.iter().copied().max().unwrap_or(0),
    )
}

fn figures(
    contended: &[Vec<ContendRound>; 2],
    cycled: &[Vec<CycleAcc>; N],
    rtt_us: f64,
) -> PrimitiveFigures {
    // `ratio(fair, default)` per round, then the median.
    let paired = |ratio: fn(&ContendRound, &ContendRound) -> f64| {
        let mut v: Vec<f64> = contended[FAIR]
            .iter()
            .zip(&contended[DEFAULT])
            .map(|(fair, default)| ratio(fair, default))
            .collect();
        median(&mut v)
    };
    let rate = |a: &CycleAcc| a.per_task.iter().sum::<u64>() as f64 / a.window.as_secs_f64();
    let cpu = |a: &CycleAcc| a.work.per(a.cycles).usec;
    let cycle_ratio = |a: usize, b: usize, of: &dyn Fn(&CycleAcc) -> f64| {
        let mut v: Vec<f64> = cycled[a]
            .iter()
            .zip(&cycled[b])
            .map(|(x, y)| of(x) / of(y))
            .collect();
        median(&mut v)
    };
    let kinds = |f: fn(&ContendRound) -> f64| [med(&contended[0], f), med(&contended[1], f)];
    let secs = |d: Duration| d.as_secs_f64();
    PrimitiveFigures {
        contention_secs: contended[DEFAULT].iter().map(|x| x.window_secs).sum(),
        cycle_secs: cycled[SEM_MANY].iter().map(|a| secs(a.window)).sum(),
        rtt_us,
        rate: kinds(|x| x.rate),
        p50_us: kinds(|x| x.p50_us),
        p99_us: kinds(|x| x.p99_us),
        longest_wait_ms: std::array::from_fn(|k| {
            contended[k]
                .iter()
                .map(|x| x.longest_wait_ms)
                .fold(0.0, f64::max)
        }),
        spread: std::array::from_fn(|k| {
            spread(contended[k].iter().map(|x| x.per_contender.as_slice()))
        }),
        handoffs: std::array::from_fn(|k| contended[k].iter().map(|x| x.handoffs).sum()),
        selfs: std::array::from_fn(|k| contended[k].iter().map(|x| x.selfs).sum()),
        work: std::array::from_fn(|k| med_work(&contended[k], |x| x.work)),
        fair_vs_default_rate: paired(|f, d| f.rate / d.rate),
        fair_vs_default_p50: paired(|f, d| f.p50_us / d.p50_us),
        fair_vs_default_p99: paired(|f, d| f.p99_us / d.p99_us),
        fair_vs_default_cpu: paired(|f, d| f.work.usec / d.work.usec),
        cycles: std::array::from_fn(|v| med(&cycled[v], rate)),
        cycle_work: std::array::from_fn(|v| med_work(&cycled[v], |a| a.work.per(a.cycles))),
        sem_one_vs_lock: cycle_ratio(SEM_ONE, LOCK_ONE, &rate),
        sem_one_vs_lock_cpu: cycle_ratio(SEM_ONE, LOCK_ONE, &cpu),
        sem_many_vs_locks: cycle_ratio(SEM_MANY, LOCK_FIVE, &rate),
        sem_many_vs_lock_one: cycle_ratio(SEM_MANY, LOCK_ONE, &rate),
        sem_longest_wait_ms: cycled[SEM_MANY]
            .iter()
            .map(|a| a.longest_wait.as_secs_f64() * 1e3)
            .fold(0.0, f64::max),
        sem_spread: spread(cycled[SEM_MANY].iter().map(|a| a.per_task.as_slice())),
    }
}

/// The table rows of (f).
pub(super) fn rows(f: &PrimitiveFigures) -> Vec<String> {
    let (d, fa, rtt) = (DEFAULT, FAIR, f.rtt_us);
    let (w, cw) = (&f.work, &f.cycle_work);
    let self_share = |k: usize| {
        let all = f.handoffs[k] + f.selfs[k];
        f.selfs[k] as f64 / all.max(1) as f64 * 100.0
    };
    let work = |x: &ServerWork| {
        format!(
            "{:.1} µs, {:.1} scripts, {:.0} commands",
            x.usec, x.scripts, x.calls
        )
    };
    vec![
        format!(
            "| (f) {CONTENDERS} contenders (a client each), one key: fair lock acquisitions/s | {:.0} /s | default lock: {:.0} /s | {:.2}× | |",
            f.rate[fa], f.rate[d], f.fair_vs_default_rate
        ),
        format!(
            "| (f) fair lock handoff to another waiter p50 | {:.0} µs | raw PING RTT {rtt:.1} µs; default lock: {:.0} µs = {:.1} RTT | {:.1} RTT; {:.2}× default's | ≤ 3 RTT |",
            f.p50_us[fa], f.p50_us[d], f.p50_us[d] / rtt, f.p50_us[fa] / rtt, f.fair_vs_default_p50
        ),
        format!(
            "| (f) fair lock handoff p99 | {:.0} µs = {:.1} RTT | default lock: {:.0} µs = {:.1} RTT | {:.2}× default's | |",
            f.p99_us[fa], f.p99_us[fa] / rtt, f.p99_us[d], f.p99_us[d] / rtt, f.fair_vs_default_p99
        ),
        format!(
            "| (f) fair lock longest single wait over {:.1} s | {:.1} ms | default lock: {:.1} ms | | ≤ 50 ms |",
            f.contention_secs, f.longest_wait_ms[fa], f.longest_wait_ms[d]
        ),
        format!(
            "| (f) fair lock acquisitions per contender, fewest–most; self-handoffs | {}–{}; {:.1}% of {} | default lock: {}–{}; {:.1}% of {} | | |",
            f.spread[fa].0, f.spread[fa].1, self_share(fa), f.handoffs[fa] + f.selfs[fa],
            f.spread[d].0, f.spread[d].1, self_share(d), f.handoffs[d] + f.selfs[d]
        ),
        format!(
            "| (f) Redis per contended acquisition: CPU (INFO cpu), scripts, commands (those inside scripts included) | fair: {} | default lock: {} | {:.2}× CPU | |",
            work(&w[fa]), work(&w[d]), f.fair_vs_default_cpu
        ),
        format!(
            "| (f) semaphore ({PERMITS} permits), 1 task: acquire+release | {:.0} cycles/s | plain lock, 1 task: {:.0} cycles/s | {:.2}× | |",
            f.cycles[SEM_ONE], f.cycles[LOCK_ONE], f.sem_one_vs_lock
        ),
        format!(
            "| (f) semaphore ({PERMITS} permits), {SEM_TASKS} tasks (a client each) | {:.0} cycles/s | {PERMITS} tasks on {PERMITS} distinct plain locks (a client each): {:.0} cycles/s | {:.2}× ({:.2}× 1 task on a plain lock) | ≥ 0.9× |",
            f.cycles[SEM_MANY], f.cycles[LOCK_FIVE], f.sem_many_vs_locks, f.sem_many_vs_lock_one
        ),
        format!(
            "| (f) semaphore, {SEM_TASKS} tasks over {:.1} s: longest single wait; cycles per task, fewest–most | {:.1} ms; {}–{} | | | |",
            f.cycle_secs, f.sem_longest_wait_ms, f.sem_spread.0, f.sem_spread.1
        ),
        format!(
            "| (f) Redis per semaphore cycle: CPU, scripts, commands | 1 task: {}; {SEM_TASKS} tasks: {} | plain lock, 1 task: {}; {PERMITS} locks: {} | {:.2}× CPU (1 task) | |",
            work(&cw[SEM_ONE]), work(&cw[SEM_MANY]), work(&cw[LOCK_ONE]), work(&cw[LOCK_FIVE]),
            f.sem_one_vs_lock_cpu
        ),
    ]
}
