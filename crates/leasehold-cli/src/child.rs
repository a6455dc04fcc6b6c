//! The supervised child command of `run` and `elect`: started with the lease in its
//! environment, sent INT/TERM when leasehold gets them, stopped when the lease is lost
//! (SIGTERM, then SIGKILL after a grace period, or SIGKILL at once), and its exit status
//! turned into leasehold's (128+N for a signal, as shells do).

use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use leasehold::LostReason;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::args::OnLostAction;

/// Start `command` with the lease's details in its environment.
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
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {program:?}"))
}

fn send(child: &tokio::process::Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), sig);
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

/// Wait for the child, forwarding INT/TERM to it and stopping it if `lost` resolves.
/// Returns its exit status and the reason the lease was lost, if it was.
pub(crate) async fn supervise<L>(
    mut child: tokio::process::Child,
    lost: L,
    on_lost: OnLostAction,
    grace: Duration,
    what: &str,
) -> anyhow::Result<(ExitStatus, Option<LostReason>)>
where
    L: Future<Output = LostReason>,
{
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
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
                        kill_at = Some(tokio::time::Instant::now() + grace);
                    }
                    OnLostAction::Kill => {
                        eprintln!("leasehold: {what} lost ({reason}); killing the command");
                        let _ = child.start_kill();
                    }
                    OnLostAction::Ignore => {
                        eprintln!("leasehold: {what} lost ({reason}); the command keeps running (--on-lost ignore)");
                    }
                }
            }
            () = async { tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)).await }, if kill_at.is_some() => {
                eprintln!("leasehold: the command outlived its grace period; sending SIGKILL");
                kill_at = None;
                let _ = child.start_kill();
            }
            _ = sigint.recv() => send(&child, Signal::SIGINT),
            _ = sigterm.recv() => send(&child, Signal::SIGTERM),
        }
    }
}
