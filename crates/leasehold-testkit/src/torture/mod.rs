//! The torture harness: locks under test behind one interface, and workers that take a
//! lock, write to a [`FencedResource`] while they believe they hold it, and record every
//! step in a [`History`] for [`check`](crate::history::check).
//!
//! A worker records `Acquired` when its lock says it holds, `LostNotified` the moment the
//! lock signals the lease is lost (from a watcher task), and `Released` *before* it sends
//! the release. Its writes and the lost notice are serialised by a per-hold gate, so a
//! write can never be recorded after the worker was told its lease was lost unless the
//! worker really wrote after that. A refusal is audited too: if the lock reported "not
//! acquired" while the server holds it for this very caller, that is a *misreported
//! refusal* (seed 004).
//!
//! Every loop is bounded by a deadline.

mod naive;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use naive::{GetsetTimestampLock, NoRenewalLock, RetryOnTimeoutLock, SetnxExpireLock};

use crate::fenced::FencedResource;
use crate::history::History;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A lock implementation under torture.
pub trait LockUnderTest: Send + Sync {
    /// A short name for tables.
    fn label(&self) -> String;

    /// Acquire `name` for a lease of `ttl`, waiting at most `wait`, as caller `worker`.
    /// `Ok(None)`: not acquired (the lock says so).
    fn acquire<'a>(
        &'a self,
        worker: usize,
        name: &'a str,
        ttl: Duration,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Option<Box<dyn HoldUnderTest>>, String>>;

    /// After `acquire` answered "not acquired" to `worker`: whether the server in fact
    /// holds `name` for that worker (a misreported refusal).
    fn holds_for<'a>(&'a self, worker: usize, name: &'a str) -> BoxFuture<'a, bool>;
}

/// A hold returned by a [`LockUnderTest`].
pub trait HoldUnderTest: Send + Sync {
    /// The grant's fencing token, if the lock issues tokens.
    fn token(&self) -> Option<u64>;

    /// A future that resolves when the lock tells its holder the lease is lost; locks
    /// without such a signal return a future that never resolves.
    fn lost_signal(&self) -> BoxFuture<'static, ()>;

    /// Release the lock (best effort).
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// What workers do while holding.
#[derive(Debug, Clone)]
pub struct WorkPlan {
    /// The lock name all workers contend for (or its stem, with `names` > 1).
    pub name: String,
    /// How many locks the workers spread over: worker `w` takes `NAME-(w % names)` when
    /// more than one (so that calls on distinct locks run at once), else `NAME`.
    pub names: usize,
    /// Lease length asked for.
    pub ttl: Duration,
    /// How long one acquire may wait.
    pub wait: Duration,
    /// Writes per hold.
    pub writes: usize,
    /// Work before each write.
    pub work: Duration,
    /// Every `n`-th hold of each worker pauses this long before its second write (a GC
    /// pause, a stopped VM): longer than the lease, it outlives the lock.
    pub pause_every: Option<(usize, Duration)>,
    /// Cancel each acquire call after a random time up to this (a task killed mid-call).
    pub cancel_acquires_within: Option<Duration>,
}

/// Counters of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Acquire calls that returned an error.
    pub errors: u64,
    /// Acquire calls that said "not acquired".
    pub refused: u64,
    /// Refusals while the server held the lock for that very caller (seed 004).
    pub misreported: u64,
}

/// Run `workers` workers on `lock` until `until`, recording into `resource`'s history.
///
/// # Cancel safety
/// Cancelling stops waiting; the workers are spawned tasks and end by themselves at `until`.
pub async fn run_workers(
    lock: Arc<dyn LockUnderTest>,
    plan: WorkPlan,
    workers: usize,
    resource: Arc<FencedResource>,
    until: Instant,
) -> RunCounts {
    let plan = Arc::new(plan);
    let errors = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let misreported = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (lock, plan, resource) = (lock.clone(), plan.clone(), resource.clone());
        let (errors, refused, misreported) = (errors.clone(), refused.clone(), misreported.clone());
        tasks.push(tokio::spawn(async move {
            let mut holds = 0usize;
            let name = if plan.names > 1 {
                format!("{}-{}", plan.name, w % plan.names)
            } else {
                plan.name.clone()
            };
            while Instant::now() < until {
                let attempt = lock.acquire(w, &name, plan.ttl, plan.wait);
                let result = match plan.cancel_acquires_within {
                    Some(max) => {
                        let cut = Duration::from_micros(fastrand_micros(max));
                        match tokio::time::timeout(cut, attempt).await {
                            Ok(r) => r,
                            Err(_) => continue, // cancelled mid-call, as a killed task would be
                        }
                    }
                    None => attempt.await,
                };
                match result {
                    Ok(Some(hold)) => {
                        holds += 1;
                        let pause = plan
                            .pause_every
                            .filter(|(n, _)| *n > 0 && holds.is_multiple_of(*n))
                            .map(|(_, d)| d);
                        work(w, holds, hold, &name, &plan, &resource, pause).await;
                    }
                    Ok(None) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        if lock.holds_for(w, &name).await {
                            misreported.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            if e.is_panic() {
                // A worker that panicked is a finding, not noise.
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    RunCounts {
        errors: errors.load(Ordering::Relaxed),
        refused: refused.load(Ordering::Relaxed),
        misreported: misreported.load(Ordering::Relaxed),
    }
}

/// A random number of microseconds below `max` (from the clock: good enough to spread cuts).
fn fastrand_micros(max: Duration) -> u64 {
    let max = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    (nanos.wrapping_mul(2_654_435_761)) % max
}

async fn work(
    worker: usize,
    n: usize,
    hold: Box<dyn HoldUnderTest>,
    name: &str,
    plan: &WorkPlan,
    resource: &Arc<FencedResource>,
    pause: Option<Duration>,
) {
    let history: &Arc<History> = resource.history();
    let rec = history.acquired(name, &format!("worker-{worker}#{n}"), hold.token());
    // The gate orders writes and the lost notice: true once the notice is recorded.
    let gate = Arc::new(Mutex::new(false));
    let watcher = {
        let (gate, history, rec, lost) = (
            gate.clone(),
            history.clone(),
            rec.clone(),
            hold.lost_signal(),
        );
        tokio::spawn(async move {
            lost.await;
            let mut told = gate.lock().unwrap_or_else(|e| e.into_inner());
            history.lost(&rec);
            *told = true;
        })
    };
    for i in 0..plan.writes {
        if i == 1 {
            if let Some(p) = pause {
                tokio::time::sleep(p).await; // the scenario: the holder is paused
            }
        }
        tokio::time::sleep(plan.work).await;
        let told = gate.lock().unwrap_or_else(|e| e.into_inner());
        if *told {
            break; // a correct holder stops working once told
        }
        if rec.token.is_some() {
            resource.write(&rec);
        } else {
            resource.write_unfenced(&rec);
        }
    }
    {
        let _gate = gate.lock().unwrap_or_else(|e| e.into_inner());
        watcher.abort();
        history.released(&rec);
    }
    hold.release().await;
}
