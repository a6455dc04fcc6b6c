//! `leasehold run` (a distributed flock) and `leasehold elect` (run while leader).

use leasehold::Client;

use crate::args::{ElectArgs, OnLostAction, RunArgs};
use crate::child;
use crate::exit;

/// Acquire, run the command while renewing, release, and exit with its status.
pub(crate) async fn run(client: &Client, a: &RunArgs) -> anyhow::Result<u8> {
    let mut lock = client.lock(&a.name)?.ttl(a.ttl)?.auto_renew(true);
    if let Some(label) = &a.label {
        lock = lock.label(label)?;
    }
    let guard = if a.no_wait {
        lock.try_acquire().await?
    } else {
        lock.acquire_timeout(a.wait).await?
    };
    tracing::info!(lock = %a.name, token = guard.fencing_token(), "acquired");
    let child = match child::spawn(
        &a.command,
        &a.name,
        guard.fencing_token(),
        guard.remaining(),
    ) {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.release().await;
            return Err(e);
        }
    };
    let what = format!("the lease on {:?}", a.name);
    let (status, lost) = child::supervise(child, guard.lost(), a.on_lost, a.grace, &what).await?;
    if lost.is_some() {
        drop(guard);
        return Ok(exit::LEASE_LOST);
    }
    let outcome = guard.release().await?;
    if !outcome.is_released() {
        eprintln!("leasehold: the lock was no longer held at the end: {outcome:?}");
        return Ok(exit::LEASE_LOST);
    }
    Ok(child::exit_code(status))
}

/// Campaign, run the command while leader; on loss stop it and campaign again (or exit
/// with `--once`). Exits with the command's status when it ends by itself.
pub(crate) async fn elect(client: &Client, a: &ElectArgs) -> anyhow::Result<u8> {
    let mut election = client.election(&a.name)?.lease(a.ttl)?;
    if let Some(label) = &a.label {
        election = election.label(label)?;
    }
    loop {
        let leadership = election.campaign().await?;
        eprintln!(
            "leasehold: leader of {:?} (term {}); starting the command",
            a.name,
            leadership.fencing_token()
        );
        let lease = leadership.lease();
        let child = child::spawn(
            &a.command,
            &a.name,
            lease.fencing_token(),
            lease.remaining(),
        )?;
        let what = format!("leadership of {:?}", a.name);
        let (status, lost) =
            child::supervise(child, leadership.lost(), OnLostAction::Term, a.grace, &what).await?;
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
