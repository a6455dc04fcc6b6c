//! `leasehold run` (a distributed flock) and `leasehold elect` (run while leader).

use leasehold::Client;

use crate::args::{ElectArgs, OnLostAction, RunArgs};
use crate::child::{self, Signals};
use crate::exit;

/// Acquire, run the command while renewing, release, and exit with its status.
pub(crate) async fn run(client: &Client, a: &RunArgs) -> anyhow::Result<u8> {
    let mut signals = Signals::install()?;
    let mut lock = client.lock(&a.name)?.ttl(a.ttl);
    if a.fair {
        lock = lock.fair().place_ttl(a.place_ttl);
    }
    if let Some(label) = &a.label {
        lock = lock.label(label);
    }
    let acquire = async {
        if a.no_wait {
            lock.try_acquire().await
        } else {
            lock.acquire_timeout(a.wait).await
        }
    };
    let guard = tokio::select! {
        guard = acquire => guard?,
        sig = signals.recv() => return Ok(child::interrupted(sig)),
    };
    tracing::info!(lock = %a.name, token = guard.fencing_token(), "acquired");
    let child = match child::spawn(
        &a.command,
        &a.name,
        guard.fencing_token(),
        &guard.lease(),
        a.grace,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.release().await;
            return Err(e);
        }
    };
    let what = format!("the lease on {:?}", a.name);
    let (status, lost) = child::supervise(
        child,
        guard.lease(),
        a.ttl,
        a.on_lost,
        a.grace,
        &mut signals,
        &what,
    )
    .await?;
    if lost.is_some() {
        drop(guard);
        return Ok(exit::LEASE_LOST);
    }
    match guard.release().await {
        Ok(outcome) if !outcome.is_released() => {
            eprintln!("leasehold: the lock was no longer held at the end: {outcome}");
            Ok(exit::LEASE_LOST)
        }
        Ok(_) => Ok(child::exit_code(status)),
        Err(e) if e.is_ambiguous() => {
            // The command's own status matters more; the lease expires by itself.
            eprintln!("leasehold: {e}");
            Ok(child::exit_code(status))
        }
        Err(e) => {
            eprintln!("leasehold: releasing the lock failed ({e}); it expires with its lease");
            Ok(child::exit_code(status))
        }
    }
}

/// Campaign, run the command while leader; on loss stop it and campaign again (or exit
/// with `--once`). Exits with the command's status when it ends by itself.
pub(crate) async fn elect(client: &Client, a: &ElectArgs) -> anyhow::Result<u8> {
    let mut signals = Signals::install()?;
    let mut election = client.election(&a.name)?.ttl(a.ttl);
    if let Some(label) = &a.label {
        election = election.label(label);
    }
    loop {
        let leadership = tokio::select! {
            l = election.campaign() => l?,
            sig = signals.recv() => return Ok(child::interrupted(sig)),
        };
        eprintln!(
            "leasehold: leader of {:?} (term {}); starting the command",
            a.name,
            leadership.fencing_token()
        );
        let lease = leadership.lease();
        let child =
            child::spawn(&a.command, &a.name, lease.fencing_token(), &lease, a.grace).await?;
        let what = format!("leadership of {:?}", a.name);
        let (status, lost) = child::supervise(
            child,
            lease,
            a.ttl,
            OnLostAction::Term,
            a.grace,
            &mut signals,
            &what,
        )
        .await?;
        if lost.is_none() {
            let _ = leadership.resign().await;
            return Ok(child::exit_code(status));
        }
        drop(leadership);
        if a.once {
            return Ok(exit::LEASE_LOST);
        }
        eprintln!("leasehold: campaigning again for {:?}", a.name);
    }
}
