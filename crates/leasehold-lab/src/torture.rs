//! `leasehold-lab torture`: named fault scenarios run against leasehold and the naive locks of
//! the incident reports, each on its own private redis-server, with the history checker
//! and a server audit deciding what went wrong.
//!
//! Violations counted per scenario × lock: overlapping holds in which both holders
//! believed they held the lock, stale writes the resource accepted, work after the holder
//! was told its lease was lost, writes outside a hold, refusals misreported while the
//! server held the lock for the caller (seed 004), and lock keys left without a TTL
//! (seed 000). Everything targets loopback and is bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use leasehold::Client;
use leasehold_testkit::torture::{
    run_workers, BoxFuture, GetsetTimestampLock, HoldUnderTest, LockUnderTest, NoRenewalLock,
    RetryOnTimeoutLock, SetnxExpireLock, WorkPlan,
};
use leasehold_testkit::{FaultProxy, FencedResource, History, Match, RedisServer, Rule};
use serde::Serialize;

mod scenario;
mod topology;

pub use scenario::{Fault, LockKind, Scenario, Topology};

const TTL: Duration = Duration::from_millis(400);
const WORKERS: usize = 4;

/// One cell of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The scenario.
    pub scenario: Scenario,
    /// The lock.
    pub lock: LockKind,
    /// Acquisitions recorded.
    pub acquisitions: usize,
    /// Overlapping holds in which neither holder had been told its lease was lost.
    pub overlaps: usize,
    /// Writes the resource accepted from a superseded holder.
    pub stale_writes_accepted: usize,
    /// Writes after the holder was told its lease was lost.
    pub work_after_lost: usize,
    /// Writes outside any hold.
    pub writes_outside_hold: usize,
    /// Lost-lease notices.
    pub lost_notices: usize,
    /// Refusals while the server held the lock for the caller.
    pub misreported_refusals: u64,
    /// Lock keys left without a TTL (fencing counters excepted).
    pub keys_without_ttl: usize,
}

impl Outcome {
    /// The cell's outcome from the workers' counts, the checker's report and the audit.
    pub(crate) fn of(
        scenario: Scenario,
        lock: LockKind,
        counts: leasehold_testkit::torture::RunCounts,
        report: &leasehold_testkit::Report,
        keys_without_ttl: usize,
    ) -> Self {
        Outcome {
            scenario,
            lock,
            acquisitions: report.acquisitions,
            overlaps: report.overlaps.len(),
            stale_writes_accepted: report.stale_writes_accepted.len(),
            work_after_lost: report.work_after_lost.len(),
            writes_outside_hold: report.writes_outside_hold.len(),
            lost_notices: report.lost_notices,
            misreported_refusals: counts.misreported,
            keys_without_ttl,
        }
    }

    /// Violations of what the docs promise for the scenario: every violation, except
    /// overlaps where the scenario allows them ([`Scenario::allows_overlaps`]).
    pub fn broken_promises(&self) -> usize {
        if self.scenario.allows_overlaps() {
            self.violations() - self.overlaps
        } else {
            self.violations()
        }
    }

    /// Whether any violation was found.
    pub fn violations(&self) -> usize {
        self.overlaps
            + self.stale_writes_accepted
            + self.work_after_lost
            + self.writes_outside_hold
            + usize::try_from(self.misreported_refusals).unwrap_or(usize::MAX)
            + self.keys_without_ttl
    }
}

pub(crate) struct LeaseholdUnderTest {
    pub(crate) client: Client,
    /// Renewed leases of this TTL (the plan's TTL is then ignored), instead of fixed ones.
    pub(crate) renewed: Option<Duration>,
    /// Grants count once this many replicas acknowledged them.
    pub(crate) replica_acks: Option<u32>,
    /// Each worker's acquire calls so far: a call's holder label is `worker-W#N`, so the
    /// refusal audit asks about that very call, not an earlier hold of the same worker
    /// whose release is still on its way (a failover can delay it).
    pub(crate) calls: std::sync::Mutex<std::collections::HashMap<usize, u64>>,
    /// A client per worker (worker `w` uses `per_worker[w % len]`), as separate processes
    /// would; empty: every worker shares `client`.
    pub(crate) per_worker: Vec<Client>,
}

impl LeaseholdUnderTest {
    pub(crate) fn new(
        client: Client,
        renewed: Option<Duration>,
        replica_acks: Option<u32>,
    ) -> Self {
        LeaseholdUnderTest {
            client,
            renewed,
            replica_acks,
            calls: std::sync::Mutex::new(std::collections::HashMap::new()),
            per_worker: Vec::new(),
        }
    }

    /// The client worker `worker` acquires with.
    fn client_for(&self, worker: usize) -> &Client {
        if self.per_worker.is_empty() {
            &self.client
        } else {
            &self.per_worker[worker % self.per_worker.len()]
        }
    }

    /// The label of `worker`'s next call (`next`) or of its last one.
    fn call_label(&self, worker: usize, next: bool) -> String {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let n = calls.entry(worker).or_insert(0);
        if next {
            *n += 1;
        }
        format!("worker-{worker}#{n}")
    }
}

struct LeaseholdHold(leasehold::LockGuard);

impl HoldUnderTest for LeaseholdHold {
    fn token(&self) -> Option<u64> {
        Some(self.0.fencing_token())
    }
    fn lost_signal(&self) -> BoxFuture<'static, ()> {
        let lease = self.0.lease();
        Box::pin(async move {
            lease.lost().await;
        })
    }
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.0.release().await;
        })
    }
}

impl LockUnderTest for LeaseholdUnderTest {
    fn label(&self) -> String {
        "leasehold".into()
    }

    fn acquire<'a>(
        &'a self,
        worker: usize,
        name: &'a str,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn HoldUnderTest>>, String>> {
        Box::pin(async move {
            let mut lock = self
                .client_for(worker)
                .lock(name)
                .map(|l| l.label(&self.call_label(worker, true)))
                .map_err(|e| e.to_string())?;
            lock = match self.renewed {
                Some(renewed) => lock.ttl(renewed),
                None => lock.ttl(ttl).auto_renew(false),
            };
            if let Some(n) = self.replica_acks {
                lock = lock.replica_acks(n, Duration::from_millis(200));
            }
            // A fixed lease, like the naive locks': a holder paused past it must be told.
            match lock.acquire_timeout(wait).await {
                Ok(g) => Ok(Some(Box::new(LeaseholdHold(g)) as Box<dyn HoldUnderTest>)),
                Err(e) if e.is_timeout() || e.is_contended() => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn holds_for<'a>(&'a self, worker: usize, name: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let label = self.call_label(worker, false);
            match self.client.inspect(name).await {
                Ok(info) => info
                    .holder
                    .is_some_and(|h| h.metadata.label.as_deref() == Some(label.as_str())),
                Err(_) => false,
            }
        })
    }
}

fn lock_for(kind: LockKind, url: &str, per_worker: bool) -> anyhow::Result<Arc<dyn LockUnderTest>> {
    let client = || {
        Client::builder(url)
            .response_timeout(Duration::from_millis(150))
            .build()
    };
    Ok(match kind {
        LockKind::Leasehold => {
            let mut lock = LeaseholdUnderTest::new(client()?, None, None);
            if per_worker {
                lock.per_worker = (0..WORKERS).map(|_| client()).collect::<Result<_, _>>()?;
            }
            Arc::new(lock)
        }
        LockKind::SetnxExpire => Arc::new(SetnxExpireLock { url: url.into() }),
        LockKind::Getset => Arc::new(GetsetTimestampLock { url: url.into() }),
        LockKind::NoRenewal => Arc::new(NoRenewalLock { url: url.into() }),
        LockKind::RetryOnTimeout => Arc::new(RetryOnTimeoutLock {
            url: url.into(),
            timeout: Duration::from_millis(150),
        }),
    })
}

/// Run one scenario against one lock for `duration`.
///
/// # Cancel safety
/// Cancel-safe: each cell has its own private redis-server, stopped when the future is dropped; its workers are detached tasks that end at the cell's deadline.
pub async fn run_cell(
    scenario: Scenario,
    lock_kind: LockKind,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    if !scenario.applies_to(lock_kind) {
        anyhow::bail!("{scenario} runs leasehold only (the naive locks speak to one server)");
    }
    if scenario.topology() != Topology::Server {
        return topology::run_cell(scenario, duration).await;
    }
    let mut server = tokio::task::spawn_blocking(|| RedisServer::builder().try_start()).await??;
    let proxy = FaultProxy::start(server.addr()).await?;
    let lock = lock_for(lock_kind, &proxy.url(), scenario.client_per_worker())?;
    let history = History::new();
    let resource = FencedResource::new(history.clone());
    let plan = WorkPlan {
        name: "torture".into(),
        names: scenario.names(),
        ttl: TTL,
        wait: Duration::from_millis(300),
        writes: 3,
        work: Duration::from_millis(10),
        pause_every: scenario.holder_pauses(),
        cancel_acquires_within: scenario.acquire_cancellation(),
    };
    let until = Instant::now() + duration;
    let faults = inject(scenario, &mut server, &proxy, until);
    let workers = scenario.workers().unwrap_or(WORKERS);
    let (counts, ()) = tokio::join!(run_workers(lock, plan, workers, resource, until), faults);
    if scenario == Scenario::BatchRepliesLost && lock_kind == LockKind::Leasehold {
        // The scenario is about batches: it must have lost some of their replies.
        let dropped = proxy.replies_dropped();
        tracing::info!(%scenario, dropped, "batch replies dropped");
        if dropped == 0 {
            anyhow::bail!("{scenario}: no batch reply was dropped, so the cell tested nothing");
        }
    }
    // The server audit: lock keys that will never expire.
    let mut con = server.async_connection().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut con).await?;
    let mut keys_without_ttl = 0;
    for key in keys.iter().filter(|k| !k.ends_with(":fence")) {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut con).await?;
        keys_without_ttl += usize::from(pttl == -1);
    }
    let report = history.check();
    tracing::debug!(%scenario, lock = %lock_kind, errors = counts.errors, refused = counts.refused, "cell done");
    Ok(Outcome::of(
        scenario,
        lock_kind,
        counts,
        &report,
        keys_without_ttl,
    ))
}

/// The fault loop of a scenario: its proxy and server faults, in turn, until `until`
/// (holder pauses and cancelled acquires are the workers' plan).
fn inject<'a>(
    scenario: Scenario,
    server: &'a mut RedisServer,
    proxy: &'a FaultProxy,
    until: Instant,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let faults: Vec<Fault> = scenario
            .faults()
            .iter()
            .copied()
            .filter(|f| !matches!(f, Fault::PauseHolders { .. } | Fault::CancelAcquires { .. }))
            .collect();
        if faults.is_empty() {
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        while Instant::now() < until {
            for fault in &faults {
                if !inject_once(*fault, server, proxy).await {
                    return;
                }
            }
        }
    })
}

/// Inject `fault` once (each takes a bounded time); false if the server cannot go on.
async fn inject_once(fault: Fault, server: &mut RedisServer, proxy: &FaultProxy) -> bool {
    let writes = || {
        Rule::reply_to(Match::custom(Arc::new(|args: &[Vec<u8>]| {
            args.first().is_some_and(|c| {
                c.eq_ignore_ascii_case(b"SET")
                    || c.eq_ignore_ascii_case(b"EVALSHA")
                    || c.eq_ignore_ascii_case(b"SETNX")
            })
        })))
    };
    match fault {
        Fault::DropWriteReplies { first, period } => {
            let _rule = proxy.add_rule(writes().first(first).drop());
            tokio::time::sleep(period).await; // the scenario's fault period
        }
        Fault::DelayWriteReplies { first, by, period } => {
            let _rule = proxy.add_rule(writes().first(first).delay(by));
            tokio::time::sleep(period).await; // the scenario's fault period
        }
        Fault::ResetConnections { period } => {
            tokio::time::sleep(period).await; // the scenario's fault period
            proxy.reset_all();
        }
        Fault::PauseRedis { after, pause } => {
            tokio::time::sleep(after).await;
            let paused = server.pause();
            tokio::time::sleep(pause).await; // the scenario: Redis stopped past the lease
            paused.resume();
        }
        Fault::RestartRedis { after, down } => {
            tokio::time::sleep(after).await;
            // Without persistence, Redis must stay down for at least the longest lease
            // before it comes back (a delayed restart, as Redis's own distributed-lock
            // notes require): every lease has ended by then.
            tokio::task::block_in_place(|| server.stop());
            tokio::time::sleep(down).await; // the scenario
            if tokio::task::block_in_place(|| server.try_restart()).is_err() {
                return false;
            }
        }
        Fault::RollBack { after } => {
            tokio::time::sleep(after).await;
            let mut con = server.async_connection().await;
            if redis::cmd("SAVE")
                .query_async::<()>(&mut con)
                .await
                .is_err()
            {
                return false;
            }
            drop(con);
            tokio::time::sleep(after).await; // grants made now are rolled back below
                                             // Killed and started from the snapshot: keys and counters as they were then.
            if tokio::task::block_in_place(|| server.try_restart()).is_err() {
                return false;
            }
        }
        Fault::DropBatchReplies { first, period } => {
            let batch = redis::Script::new(leasehold::scripts::BATCH.plain)
                .get_hash()
                .to_string();
            let batches = Match::command("EVALSHA").and(Match::arg_contains(batch));
            let _rule = proxy.add_rule(Rule::reply_to(batches).first(first).drop());
            tokio::time::sleep(period).await; // the scenario's fault period
        }
        Fault::GhostWaiters { period } => {
            tokio::time::sleep(period).await; // the scenario's fault period
            if ghost_waiter(server).await.is_err() {
                return false;
            }
        }
        Fault::DropMessages { first, period } => {
            proxy.drop_messages(first);
            tokio::time::sleep(period).await; // the scenario's fault period
        }
        Fault::HoldRenewals { first, by, period } => {
            let renew = redis::Script::new(leasehold::scripts::RENEW.plain)
                .get_hash()
                .to_string();
            let renewals = Match::custom(Arc::new(move |args: &[Vec<u8>]| {
                args.first()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"EVALSHA"))
                    && args
                        .get(1)
                        .is_some_and(|sha| sha.eq_ignore_ascii_case(renew.as_bytes()))
            }));
            let _rule = proxy.add_rule(Rule::command_to(renewals).first(first).delay(by));
            tokio::time::sleep(period).await; // the scenario's fault period
        }
        Fault::PauseHolders { .. } | Fault::CancelAcquires { .. } => {}
    }
    true
}

/// A waiter of a process that died while queued: its place ahead of every live waiter of
/// the cells' lock, and the details a release needs to make it the holder. The keys keep
/// a TTL (at least 2 s), as a real waiter's do.
async fn ghost_waiter(server: &RedisServer) -> redis::RedisResult<()> {
    static GHOSTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = GHOSTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ghost = format!("ghost-{n}");
    let (queue, expiries, info) = (
        "leasehold:{torture}:waiters",
        "leasehold:{torture}:waiters:exp",
        "leasehold:{torture}:waiters:info",
    );
    let mut con = server.async_connection().await;
    let mut pipe = redis::pipe();
    pipe.cmd("ZADD").arg(queue).arg("NX").arg(0).arg(&ghost);
    // Its place lapses a second from now (the server runs on this machine's clock).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    pipe.cmd("ZADD")
        .arg(expiries)
        .arg(now_ms + 1_000)
        .arg(&ghost);
    pipe.cmd("HSET")
        .arg(info)
        .arg(&ghost)
        .arg(format!("1\n{}\nghost-owner\n{{}}", TTL.as_millis()));
    for key in [queue, expiries, info] {
        pipe.cmd("PEXPIRE").arg(key).arg(2_000).arg("NX");
        pipe.cmd("PEXPIRE").arg(key).arg(2_000).arg("GT");
    }
    pipe.query_async::<()>(&mut con).await
}

/// `leasehold-lab torture`: run the chosen cells (all when none is named) for `secs` each,
/// with a progress bar, and print the table (or JSON).
/// Exits 1 if leasehold broke a promise of its docs (`Outcome::broken_promises`; the naive locks
/// are expected to show violations).
///
/// # Cancel safety
/// As for [`run_cell`].
pub async fn command(
    scenarios: &[Scenario],
    locks: &[LockKind],
    secs: u64,
    json: bool,
) -> anyhow::Result<u8> {
    let scenarios: Vec<Scenario> = if scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        scenarios.to_vec()
    };
    let locks: Vec<LockKind> = if locks.is_empty() {
        LockKind::ALL.to_vec()
    } else {
        locks.to_vec()
    };
    let secs = secs.clamp(1, 600);
    let pb = indicatif::ProgressBar::new((scenarios.len() * locks.len()) as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut outcomes = Vec::new();
    let cells: Vec<(Scenario, LockKind)> = scenarios
        .iter()
        .flat_map(|s| locks.iter().map(move |l| (*s, *l)))
        .filter(|(s, l)| s.applies_to(*l))
        .collect();
    pb.set_length(cells.len() as u64);
    for (s, l) in &cells {
        pb.set_message(format!("{s} × {l}"));
        outcomes.push(run_cell(*s, *l, Duration::from_secs(secs)).await?);
        pb.inc(1);
    }
    pb.finish_and_clear();
    if json {
        let out = serde_json::json!({ "schema": 1, "outcomes": outcomes });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_table(&outcomes);
    }
    let leasehold_clean = outcomes
        .iter()
        .filter(|o| o.lock == LockKind::Leasehold)
        .all(|o| o.broken_promises() == 0);
    Ok(if leasehold_clean {
        leasehold_cli::exit::OK
    } else {
        leasehold_cli::exit::FAILURE
    })
}

/// The outcomes as a markdown table.
pub fn print_table(outcomes: &[Outcome]) {
    println!("| scenario | lock | acquisitions | overlaps | stale writes accepted | work after lost | writes outside a hold | misreported refusals | keys without TTL | lost notices |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.scenario,
            o.lock,
            o.acquisitions,
            o.overlaps,
            o.stale_writes_accepted,
            o.work_after_lost,
            o.writes_outside_hold,
            o.misreported_refusals,
            o.keys_without_ttl,
            o.lost_notices
        );
    }
}
