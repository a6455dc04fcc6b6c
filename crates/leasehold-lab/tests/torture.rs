//! The torture suite, short version: leasehold shows no violation in any scenario, and the
//! naive lock of every incident report is caught by the checker in its scenario.

use std::time::Duration;

use leasehold_lab::torture::{run_cell, LockKind, Outcome, Scenario, Topology};

const CELL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leasehold_shows_no_violation_in_any_one_server_scenario() {
    for scenario in Scenario::ALL
        .into_iter()
        .filter(|s| s.topology() == Topology::Server)
    {
        let o = run_cell(scenario, LockKind::Leasehold, CELL).await.unwrap();
        assert_eq!(o.broken_promises(), 0, "{o:?}");
        if !scenario.allows_overlaps() {
            assert_eq!(o.violations(), 0, "{o:?}");
        }
        assert!(o.acquisitions > 0, "no work was done: {o:?}");
        if scenario == Scenario::PausedHolder {
            // Holders paused past their lease were told, and stopped: the checks above
            // were not vacuous.
            assert!(o.lost_notices > 0, "{o:?}");
        }
    }
}

/// The topology cells (a Sentinel failover with and without replica acknowledgements,
/// RedLock node restarts and pauses, Cluster failovers and slot migrations): no broken
/// promise, and work done through the faults. Each cell runs at least one fault cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leasehold_keeps_its_promises_through_failovers_node_loss_and_slot_moves() {
    for scenario in Scenario::ALL
        .into_iter()
        .filter(|s| s.topology() != Topology::Server)
    {
        let o = run_cell(scenario, LockKind::Leasehold, CELL).await.unwrap();
        assert_eq!(o.broken_promises(), 0, "{o:?}");
        assert_eq!(o.stale_writes_accepted, 0, "{o:?}");
        assert!(o.acquisitions > 0, "no work was done: {o:?}");
    }
    // The naive locks speak to one server: they have no topology cells.
    assert!(run_cell(Scenario::ClusterFailover, LockKind::Getset, CELL)
        .await
        .is_err());
}

/// Run `lock` in `scenario` until `found` says the violation showed (at most 3 runs: the
/// faults are timed, not scripted).
async fn caught(scenario: Scenario, lock: LockKind, found: impl Fn(&Outcome) -> bool) -> Outcome {
    let mut last = None;
    for _ in 0..3 {
        let o = run_cell(scenario, lock, CELL).await.unwrap();
        if found(&o) {
            return o;
        }
        last = Some(o);
    }
    panic!("the checker found no violation for {lock} in {scenario}: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_setnx_then_expire_leaves_a_key_without_ttl_when_cancelled() {
    let o = caught(Scenario::CancelledAcquires, LockKind::SetnxExpire, |o| {
        o.keys_without_ttl > 0
    })
    .await;
    assert!(o.violations() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_getset_timestamps_with_del_unlock_overlap_when_a_holder_pauses() {
    let o = caught(Scenario::PausedHolder, LockKind::Getset, |o| {
        o.overlaps > 0 && o.stale_writes_accepted > 0
    })
    .await;
    assert!(o.violations() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_a_lock_without_renewal_or_fencing_lets_a_paused_holder_write_stale() {
    let o = caught(Scenario::PausedHolder, LockKind::NoRenewal, |o| {
        o.overlaps > 0 && o.stale_writes_accepted > 0
    })
    .await;
    assert!(o.violations() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_a_retry_after_a_lost_reply_misreports_a_granted_lock() {
    let o = caught(Scenario::DroppedReplies, LockKind::RetryOnTimeout, |o| {
        o.misreported_refusals > 0
    })
    .await;
    assert!(o.violations() > 0);
}

#[test]
fn the_lab_binary_offers_the_demo_the_benchmark_and_the_torture_suite() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leasehold-lab"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["demo", "bench", "torture"] {
        assert!(help.contains(command), "{help}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leasehold-lab"))
        .args(["torture", "--scenario", "no-such-scenario"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn torture_refuses_a_redis_url_instead_of_ignoring_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leasehold-lab"))
        .args(["--redis", "redis://127.0.0.1:9/", "torture", "--secs", "1"])
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("its own redis-server"), "{err}");
}
