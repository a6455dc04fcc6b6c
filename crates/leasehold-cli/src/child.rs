//! The supervised command of `run` and `elect`, seen from the holding process: started
//! under its guard (see [`crate::guard`]) with the lease in its environment (and without
//! leasehold's Redis credentials); each newer confirmed deadline passed on to the guard;
//! HUP, INT, TERM, QUIT, USR1, USR2, ALRM and PIPE forwarded to its process group; stopped
//! when the lease is lost (SIGTERM, then SIGKILL after the grace period — never later than
//! the moment another holder could be granted the lock — or SIGKILL at once); and its exit
//! status turned into leasehold's (128+N for a signal, as shells do).

use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use leasehold::{Lease, LostReason};
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use crate::args::OnLostAction;

/// The catchable terminating signals, caught from before the child starts until
/// leasehold exits: HUP, INT, TERM, QUIT, USR1, USR2, ALRM and PIPE.
pub(crate) struct Signals {
    each: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        let mut each = Vec::new();
        for sig in [
            Signal::SIGHUP,
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGALRM,
            Signal::SIGPIPE,
        ] {
            each.push((sig, signal(SignalKind::from_raw(sig as i32))?));
        }
        Ok(Signals { each })
    }

    /// The next of them.
    pub(crate) async fn recv(&mut self) -> Signal {
        let waits = self.each.iter_mut().map(|(sig, s)| {
            let sig = *sig;
            Box::pin(async move {
                s.recv().await;
                sig
            })
        });
        futures_util::future::select_all(waits).await.0
    }
}

/// The exit code of a leasehold interrupted by `sig` before its command ran.
pub(crate) fn interrupted(sig: Signal) -> u8 {
    u8::try_from(128 + sig as i32).unwrap_or(crate::exit::FAILURE)
}

/// The command under its guard (see [`crate::guard`]), and the line to the guard.
pub(crate) struct Supervised {
    guard: tokio::process::Child,
    line: crate::guard::Line,
}

/// The leases the command runs under: one lock's, a lock set's members' or a
/// leadership's. The command may run until the earliest deadline, and must stop when any
/// of them is lost.
pub(crate) struct Held {
    leases: Vec<Lease>,
    /// More variables for the command's environment.
    env: Vec<(&'static str, String)>,
}

impl Held {
    /// One lease (a lock's or a leadership's).
    pub(crate) fn one(lease: Lease) -> Self {
        Held {
            leases: vec![lease],
            env: Vec::new(),
        }
    }

    /// With `name=value` in the command's environment too.
    pub(crate) fn with_env(mut self, name: &'static str, value: String) -> Self {
        self.env.push((name, value));
        self
    }

    /// Every member of a lock set.
    pub(crate) fn set(guard: &leasehold::LockSetGuard) -> Self {
        Held {
            leases: guard.members().iter().map(|g| g.lease()).collect(),
            env: Vec::new(),
        }
    }

    /// The earliest deadline.
    fn valid_until(&self) -> std::time::Instant {
        self.leases
            .iter()
            .map(Lease::valid_until)
            .min()
            .expect("at least one lease")
    }

    /// The first lease lost, and why.
    async fn lost(&self) -> (&Lease, LostReason) {
        let (reason, i, _) =
            futures_util::future::select_all(self.leases.iter().map(|l| Box::pin(l.lost()))).await;
        (&self.leases[i], reason)
    }

    /// `LEASEHOLD_LOCK` and `LEASEHOLD_FENCING_TOKEN`: the names one per line and the
    /// tokens separated by spaces, in the same (canonical) order.
    fn environment(&self) -> [(&'static str, String); 2] {
        let names: Vec<&str> = self.leases.iter().map(Lease::name).collect();
        let tokens: Vec<String> = self
            .leases
            .iter()
            .map(|l| l.fencing_token().to_string())
            .collect();
        [
            ("LEASEHOLD_LOCK", names.join("\n")),
            ("LEASEHOLD_FENCING_TOKEN", tokens.join(" ")),
        ]
    }
}

/// Start `command` under a guard process that kills its process group at the leases'
/// earliest deadline unless told a later one, or if this process goes away.
pub(crate) async fn spawn(
    command: &[String],
    held: &Held,
    grace: Duration,
) -> anyhow::Result<Supervised> {
    if command.is_empty() {
        return Err(crate::exit::UsageError("no command given after --".into()).into());
    }
    let until = held.valid_until();
    let remaining = until.saturating_duration_since(std::time::Instant::now());
    let deadline = humantime::format_rfc3339_millis(SystemTime::now() + remaining);
    let link = crate::guard::Link::new()?;
    let mut env = held.environment().to_vec();
    env.push(("LEASEHOLD_LEASE_DEADLINE", deadline.to_string()));
    env.extend(held.env.iter().cloned());
    let mut guard = crate::guard::spawn(&link, until, grace, command, &env)
        .context("cannot start the guard process")?;
    let line = link.accept(&mut guard).await?;
    Ok(Supervised { guard, line })
}

/// Test only: with this variable set, a task of the supervisor panics after the first
/// renewal, so that tests can show a panicking leasehold leaves no command running.
const TEST_PANIC: &str = "LEASEHOLD_TEST_PANIC_IN_SUPERVISOR";

/// When another holder could be granted the lock, after `lease` was lost for `reason`.
fn takeover(lease: &Lease, reason: LostReason, ttl: Duration) -> tokio::time::Instant {
    match reason {
        // No renewal was confirmed: the key outlives valid_until by at least the drift.
        LostReason::DeadlinePassed => {
            tokio::time::Instant::from_std(lease.valid_until()) + leasehold::lease::drift(ttl)
        }
        // Refused: the lock is gone or someone else's already.
        _ => tokio::time::Instant::now(),
    }
}

/// Wait for the command, renewing its guard's deadline, forwarding signals to its process
/// group and stopping it if a lease is lost. Returns its exit status and the reason the
/// (first) lease was lost, if one was.
pub(crate) async fn supervise(
    sup: Supervised,
    held: &Held,
    ttl: Duration,
    on_lost: OnLostAction,
    grace: Duration,
    signals: &mut Signals,
    what: &str,
) -> anyhow::Result<(ExitStatus, Option<LostReason>)> {
    let Supervised {
        mut guard,
        mut line,
    } = sup;
    let lost = held.lost();
    tokio::pin!(lost);
    let mut lost_reason = None;
    // Tell the guard each newer deadline soon after it is confirmed.
    let tick = (ttl / 20).clamp(Duration::from_millis(10), Duration::from_millis(200));
    let mut told = held.valid_until();
    let mut ticks = tokio::time::interval(tick);
    let test_panic = std::env::var_os(TEST_PANIC).is_some();
    loop {
        tokio::select! {
            status = guard.wait() => return Ok((status?, lost_reason)),
            (lease, reason) = &mut lost, if lost_reason.is_none() => {
                lost_reason = Some(reason);
                let takeover_at = takeover(lease, reason, ttl);
                let until = takeover_at.saturating_duration_since(tokio::time::Instant::now());
                match on_lost {
                    OnLostAction::Term => {
                        let kill_in = grace.min(until);
                        if kill_in.is_zero() {
                            // The lock may be granted to another holder now: no grace left.
                            eprintln!(
                                "leasehold: {what} lost ({reason}); killing the command now (another holder may already be granted the lock)"
                            );
                        } else {
                            eprintln!(
                                "leasehold: {what} lost ({reason}); sending SIGTERM to the command (SIGKILL in {})",
                                crate::human(kill_in)
                            );
                        }
                        let at = crate::guard::to_mono_ns(takeover_at.into_std());
                        line.send(&format!("T {at}")).await;
                    }
                    OnLostAction::Kill => {
                        eprintln!("leasehold: {what} lost ({reason}); killing the command");
                        line.send("K").await;
                    }
                    OnLostAction::Ignore => {
                        eprintln!("leasehold: {what} lost ({reason}); the command keeps running (--on-lost ignore)");
                        line.send("I").await;
                    }
                }
            }
            _ = ticks.tick(), if lost_reason.is_none() => {
                let now = held.valid_until();
                if now > told {
                    told = now;
                    line.deadline(now).await;
                    if test_panic {
                        // A background task's panic, which a runtime would swallow.
                        tokio::spawn(async { panic!("{TEST_PANIC} is set: a supervisor task panics") });
                    }
                }
            }
            sig = signals.recv() => line.send(&format!("S {}", sig as i32)).await,
        }
    }
}
