//! The model checker at the bounds `scripts/test` can afford: every reachable state of
//! each bound is explored and every property of PROTOCOL.md holds; each seeded bug yields
//! a counterexample for the property it breaks. `leasehold-model` (the crate's binary)
//! runs deeper bounds.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use leasehold_model::bugs::Bug;
use leasehold_model::check::{explore, Report, Search};
use leasehold_model::model::Config;

fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2)
}

fn holds(name: &str, cfg: Config) -> Report {
    holds_by(name, cfg, &Search::bfs(threads()))
}

/// Explores `cfg`, requires every "always" property to hold and every "sometimes"
/// property to be reached (a bound that never reaches one checks it vacuously).
fn holds_by(name: &str, cfg: Config, search: &Search) -> Report {
    let r = explore(cfg.clone(), search);
    eprintln!(
        "{name}: {} states, depth {}, {:.1} s ({cfg:?})",
        r.states,
        r.depth,
        r.took.as_secs_f64()
    );
    for (p, trace) in &r.counterexamples {
        eprintln!("BROKEN: {p}\n{trace}");
    }
    assert!(
        r.counterexamples.is_empty(),
        "{name}: {:?}",
        r.counterexamples.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    assert!(
        r.never_seen.is_empty(),
        "{name}: never reached {:?}",
        r.never_seen
    );
    r
}

fn quiet() -> Config {
    Config {
        lost: 0,
        late: 0,
        lost_messages: 0,
        pauses: 0,
        crashes: 0,
        liveness_steps: None,
        ..Config::ci()
    }
}

#[test]
fn two_clients_keep_every_property_through_a_lost_reply_a_late_reply_and_a_pause() {
    holds(
        "2 clients x 1 call, 1 lost + 1 late reply, 1 pause",
        Config {
            clients: 2,
            acquires: 1,
            lost: 1,
            late: 1,
            pauses: 1,
            ..quiet()
        },
    );
}

#[test]
fn a_live_waiter_gets_the_lock_after_a_crash_a_lost_reply_and_a_lost_grant_message() {
    holds(
        "2 clients x 1 call, liveness, 1 crash + 1 lost reply + 1 lost message",
        Config {
            clients: 2,
            acquires: 1,
            lost: 1,
            lost_messages: 1,
            crashes: 1,
            liveness_steps: Some(400),
            ..quiet()
        },
    );
}

/// Waits short enough to end within the bound: a waiter that gives up leaves the queue
/// (its leave's reply checked against the keys), and a lost or late reply to its try or
/// its leave never turns a grant into "not acquired".
#[test]
fn a_waiter_that_gives_up_never_hears_not_acquired_for_a_grant_despite_a_lost_and_a_late_reply() {
    holds_by(
        "2 clients x 1 call, wait 3, 1 lost + 1 late reply",
        Config {
            clients: 2,
            acquires: 1,
            wait: 3,
            lost: 1,
            late: 1,
            ..quiet()
        },
        &Search::dfs(threads()),
    );
}

#[test]
fn three_clients_with_their_handoffs_keep_every_property() {
    holds(
        "3 clients x 1 call",
        Config {
            clients: 3,
            acquires: 1,
            horizon: 6,
            ..quiet()
        },
    );
}

/// RedLock rounds, with waits short enough that a caller whose rounds keep failing gives
/// up inside the bound (and hears "not acquired" only for a request no node holds).
#[test]
fn redlock_over_three_masters_keeps_mutual_exclusion_and_fencing_order() {
    holds_by(
        "RedLock: 3 nodes, 2 clients x 1 call, wait 2",
        Config {
            nodes: 3,
            clients: 2,
            acquires: 1,
            horizon: 3,
            wait: 2,
            ..quiet()
        },
        &Search::dfs(threads()),
    );
}

/// The reductions (symmetry, partial order) reach the same verdict as the full search on
/// a bound both can afford, with far fewer states.
#[test]
fn three_clients_hold_every_property_with_and_without_the_reductions() {
    let cfg = Config {
        clients: 3,
        acquires: 1,
        horizon: 6,
        ..quiet()
    };
    let full = holds(
        "3 clients x 1 call, full search",
        Config {
            reduce: false,
            ..cfg.clone()
        },
    );
    let reduced = holds_by(
        "3 clients x 1 call, symmetry and partial-order reduction",
        cfg,
        &Search::dfs(threads()),
    );
    assert!(
        reduced.states * 4 < full.states,
        "{} states reduced, {} in full",
        reduced.states,
        full.states
    );
}

/// Each seeded bug, the smallest bound that shows it, and the property it must break;
/// found by the full breadth-first search and by the reduced depth-first one alike.
#[test]
fn each_seeded_bug_yields_a_counterexample() {
    let two_calls = Config {
        clients: 2,
        acquires: 2,
        ..quiet()
    };
    let one_call = Config {
        clients: 2,
        acquires: 1,
        ..quiet()
    };
    let cases = [
        (
            Bug::ReleaseWithoutOwnerCheck,
            two_calls.clone(),
            "mutual exclusion by lease",
        ),
        (
            Bug::RetryWithFreshRequestId,
            Config {
                lost: 1,
                ..one_call.clone()
            },
            "idempotence: a holder's count equals its unreleased acquire calls",
        ),
        (
            Bug::DeadlineFromReceipt,
            Config {
                late: 1,
                ..one_call.clone()
            },
            "mutual exclusion by lease",
        ),
        (
            Bug::HandoffSkipsClaimWindow,
            two_calls.clone(),
            "mutual exclusion by lease",
        ),
    ];
    let searches = [
        (
            "full",
            Search {
                first: true,
                ..Search::bfs(threads())
            },
            false,
        ),
        (
            "reduced",
            Search {
                first: true,
                ..Search::dfs(threads())
            },
            true,
        ),
    ];
    for (bug, cfg, property) in cases {
        for (how, search, reduce) in &searches {
            let r = explore(
                Config {
                    bug: Some(bug),
                    reduce: *reduce,
                    ..cfg.clone()
                },
                search,
            );
            let found = r.counterexamples.iter().find(|(p, _)| *p == property);
            let Some((_, trace)) = found else {
                panic!(
                    "{bug:?}: no counterexample for {property:?} in {} states ({how} search)",
                    r.states
                );
            };
            eprintln!(
                "{bug:?} breaks {property:?} ({} states, {how} search):\n{trace}",
                r.states
            );
        }
    }
    // The same bounds without the bugs hold.
    for cfg in [
        two_calls,
        Config {
            lost: 1,
            ..one_call.clone()
        },
        Config {
            late: 1,
            ..one_call
        },
    ] {
        holds("the seeded bugs' bounds, without the bugs", cfg);
    }
}
