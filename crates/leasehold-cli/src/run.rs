//! `leasehold run` (a distributed flock, over one lock or several all or none) and
//! `leasehold elect` (run while leader).

use leasehold::Client;

use crate::args::{ElectArgs, OnLostAction, RunArgs};
use crate::child::{self, Held, Signals};
use crate::exit;

/// Acquire (every named lock, all or none), run the command while renewing, release, and
/// exit with its status.
pub(crate) async fn run(client: &Client, a: &RunArgs) -> anyhow::Result<u8> {
    let mut signals = Signals::install()?;
    // One lock is a set of one: the same acquire, waiting and errors.
    let mut locks = client.locks(&a.names)?.ttl(a.ttl);
    if a.fair {
        locks = locks.fair().place_ttl(a.place_ttl);
    }
    if let Some(label) = &a.label {
        locks = locks.label(label);
    }
    let acquire = async {
        if a.no_wait {
            locks.try_acquire().await
        } else {
            locks.acquire_timeout(a.wait).await
        }
    };
    let guard = tokio::select! {
        guard = acquire => guard?,
        sig = signals.recv() => return Ok(child::interrupted(sig)),
    };
    for (name, token) in guard.fencing_tokens() {
        tracing::info!(lock = %name, token, "acquired");
    }
    let held = Held::set(&guard);
    let child = match child::spawn(&a.command, &held, a.grace).await {
        Ok(c) => c,
        Err(e) => {
            let _ = guard.release().await;
            return Err(e);
        }
    };
    let what = match a.names.as_slice() {
        [one] => format!("the lease on {one:?}"),
        _ => format!("a lease of the set {:?}", locks.names().collect::<Vec<_>>()),
    };
    let (status, lost) =
        child::supervise(child, &held, a.ttl, a.on_lost, a.grace, &mut signals, &what).await?;
    if lost.is_some() {
        drop(guard);
        return Ok(exit::LEASE_LOST);
    }
    match guard.release().await {
        Ok(outcomes) => {
            let mut code = exit::status_code(status);
            for (name, outcome) in outcomes {
                if !outcome.is_released() {
                    eprintln!(
                        "leasehold: the lock {name:?} was no longer held at the end: {outcome}"
                    );
                    code = exit::LEASE_LOST;
                }
            }
            Ok(code)
        }
        Err(e) if e.is_ambiguous() => {
            // The command's own status matters more; the lease expires by itself.
            eprintln!("leasehold: {e}");
            Ok(exit::status_code(status))
        }
        Err(e) => {
            eprintln!("leasehold: releasing the lock failed ({e}); it expires with its lease");
            Ok(exit::status_code(status))
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
    if let Some(value) = &a.value {
        election = election.value(value);
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
        let held =
            Held::one(leadership.lease()).with_env("LEASEHOLD_LEADER_VALUE", leadership.value());
        let child = child::spawn(&a.command, &held, a.grace).await?;
        let what = format!("leadership of {:?}", a.name);
        let (status, lost) = child::supervise(
            child,
            &held,
            a.ttl,
            OnLostAction::Term,
            a.grace,
            &mut signals,
            &what,
        )
        .await?;
        if lost.is_none() {
            let _ = leadership.resign().await;
            return Ok(exit::status_code(status));
        }
        drop(leadership);
        if a.once {
            return Ok(exit::LEASE_LOST);
        }
        eprintln!("leasehold: campaigning again for {:?}", a.name);
    }
}
