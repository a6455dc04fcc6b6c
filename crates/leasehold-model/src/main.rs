//! `leasehold-model`: check leasehold's lock protocol model at a chosen bound.
//!
//! ```text
//! leasehold-model [--redlock] [--clients N] [--acquires N] [--horizon T] [--lost N]
//!                 [--ttl T] [--claim T] [--drift T] [--clock-lag T] [--response-timeout T]
//!                 [--wait T]
//!                 [--late N] [--lost-messages N] [--pauses N] [--crashes N]
//!                 [--no-liveness] [--bug NAME] [--threads N] [--bfs] [--no-symmetry]
//!                 [--no-reduce] [--max-seconds S]
//! ```
//! Explores depth-first with symmetry reduction (clients renumbered into one order) and
//! prints progress every 10 s to standard error; `--bfs` explores breadth-first (shortest
//! counterexamples; keeps the whole frontier in memory, no symmetry reduction).
//! `--no-reduce` turns off the partial-order reduction (`Protocol::ample`).
//! `--max-seconds` stops the search after S seconds and reports on the states explored
//! so far (exit 3 when it stopped before the end with no property broken).
//! Exits 1 if a property is broken (and prints its counterexample). With `--bug`, the
//! exploration stops at the first counterexample.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use leasehold_model::bugs::Bug;
use leasehold_model::check::{explore, Search};
use leasehold_model::model::Config;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leasehold-model: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode, String> {
    let mut cfg = if args.iter().any(|a| a == "--redlock") {
        Config::redlock_ci()
    } else {
        Config::ci()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut search = Search {
        progress: Some(std::time::Duration::from_secs(10)),
        ..Search::dfs(threads)
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{what} needs a number"))
        };
        match a.as_str() {
            "--redlock" => {}
            "--clients" => cfg.clients = num(a)? as usize,
            "--acquires" => cfg.acquires = num(a)? as u8,
            "--horizon" => cfg.horizon = num(a)?,
            "--ttl" => cfg.ttl = num(a)?,
            "--claim" => cfg.claim = num(a)?,
            "--drift" => cfg.drift = num(a)?,
            "--clock-lag" => cfg.clock_lag = num(a)? as u8,
            "--response-timeout" => cfg.response_timeout = num(a)?,
            "--wait" => cfg.wait = num(a)?,
            "--lost" => cfg.lost = num(a)? as u8,
            "--late" => cfg.late = num(a)? as u8,
            "--lost-messages" => cfg.lost_messages = num(a)? as u8,
            "--pauses" => cfg.pauses = num(a)? as u8,
            "--crashes" => cfg.crashes = num(a)? as u8,
            "--threads" => search.threads = num(a)? as usize,
            "--bfs" => {
                search.depth_first = false;
                search.symmetry = false;
            }
            "--no-symmetry" => search.symmetry = false,
            "--no-reduce" => cfg.reduce = false,
            "--max-seconds" => {
                search.timeout = Some(std::time::Duration::from_secs(num(a)?));
            }
            "--no-liveness" => cfg.liveness_steps = None,
            "--bug" => {
                let name = it.next().ok_or("--bug needs a name")?;
                cfg.bug = Some(
                    Bug::ALL
                        .into_iter()
                        .find(|b| format!("{b:?}").eq_ignore_ascii_case(name))
                        .ok_or_else(|| format!("no bug {name:?}; one of {:?}", Bug::ALL))?,
                );
            }
            "-h" | "--help" => {
                println!(
                    "{}",
                    include_str!("main.rs")
                        .lines()
                        .filter_map(|l| l.strip_prefix("//! "))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    println!("checking {cfg:?}");
    println!("search: {search:?}");
    search.first = cfg.bug.is_some();
    let r = explore(cfg, &search);
    println!(
        "{} states, depth {}, {:.1} s",
        r.states,
        r.depth,
        r.took.as_secs_f64()
    );
    for n in r.never_seen.iter().filter(|_| !r.stopped) {
        println!("never reached (the bound is too small to exercise it): {n}");
    }
    for (name, trace) in &r.counterexamples {
        println!("BROKEN: {name}\n{trace}");
    }
    Ok(if r.counterexamples.is_empty() && r.stopped {
        println!(
            "stopped after {:.0} s, before every state was explored: no property broken \
             so far (the states counted include some not yet checked)",
            r.took.as_secs_f64()
        );
        ExitCode::from(3)
    } else if r.counterexamples.is_empty() {
        println!("every property holds");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
