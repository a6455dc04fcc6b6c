//! The supervised child command of `run` and `elect`: started in its own process group
//! with the lease in its environment (and without leasehold's Redis credentials), sent
//! INT/TERM when leasehold gets them, stopped when the lease is lost (SIGTERM, then
//! SIGKILL after the grace period — but never later than the moment another holder could
//! be granted the lock — or SIGKILL at once), and its exit status turned into leasehold's
//! (128+N for a signal, as shells do). Signals reach the whole process group, so
//! grandchildren (`sh -c '…'`) stop too.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use leasehold::{Lease, LostReason};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::args::OnLostAction;

/// INT and TERM, caught from before the child starts until leasehold exits.
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next INT or TERM.
    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.term.recv() => Signal::SIGTERM,
        }
    }
}

/// The exit code of a leasehold interrupted by `sig` before its command ran.
pub(crate) fn interrupted(sig: Signal) -> u8 {
    u8::try_from(128 + sig as i32).unwrap_or(crate::exit::FAILURE)
}

/// Start `command` in its own process group with the lease's details in its environment.
pub(crate) fn spawn(
    command: &[String],
    lock: &str,
    token: u64,
    remaining: Duration,
) -> anyhow::Result<tokio::process::Child> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| crate::exit::UsageError("no command given after --".into()))?;
    let deadline = humantime::format_rfc3339_millis(SystemTime::now() + remaining);
    tokio::process::Command::new(program)
        .args(args)
        .env("LEASEHOLD_LOCK", lock)
        .env("LEASEHOLD_FENCING_TOKEN", token.to_string())
        .env("LEASEHOLD_LEASE_DEADLINE", deadline.to_string())
        // The command has no use for leasehold's Redis credentials.
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD")
        .env_remove("REDIS_USERNAME")
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))
}

fn send(child: &tokio::process::Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

/// The exit code that reports `status` (128+N for signal N).
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(crate::exit::FAILURE),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(crate::exit::FAILURE),
        _ => crate::exit::FAILURE,
    }
}

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

/// Wait for the child, forwarding INT/TERM to its process group and stopping it if the
/// lease is lost. Returns its exit status and the reason the lease was lost, if it was.
pub(crate) async fn supervise(
    mut child: tokio::process::Child,
    lease: Lease,
    ttl: Duration,
    on_lost: OnLostAction,
    grace: Duration,
    signals: &mut Signals,
    what: &str,
) -> anyhow::Result<(ExitStatus, Option<LostReason>)> {
    let lost = lease.lost();
    tokio::pin!(lost);
    let mut lost_reason = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            status = child.wait() => return Ok((status?, lost_reason)),
            reason = &mut lost, if lost_reason.is_none() => {
                lost_reason = Some(reason);
                match on_lost {
                    OnLostAction::Term => {
                        eprintln!("leasehold: {what} lost ({reason}); sending SIGTERM to the command");
                        send(&child, Signal::SIGTERM);
                        let now = tokio::time::Instant::now();
                        kill_at = Some((now + grace).min(takeover(&lease, reason, ttl)).max(now));
                    }
                    OnLostAction::Kill => {
                        eprintln!("leasehold: {what} lost ({reason}); killing the command");
                        send(&child, Signal::SIGKILL);
                    }
                    OnLostAction::Ignore => {
                        eprintln!("leasehold: {what} lost ({reason}); the command keeps running (--on-lost ignore)");
                    }
                }
            }
            () = async { tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)).await }, if kill_at.is_some() => {
                eprintln!("leasehold: the command is still running; sending SIGKILL");
                kill_at = None;
                send(&child, Signal::SIGKILL);
            }
            sig = signals.recv() => send(&child, sig),
        }
    }
}
