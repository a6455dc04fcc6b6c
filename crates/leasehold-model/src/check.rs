//! Running the checker: explore a [`Config`] breadth-first and report what was found.

use std::time::{Duration, Instant};

use stateright::{Checker, Model};

use crate::model::{Config, Protocol};

/// What one exploration found.
#[derive(Debug)]
pub struct Report {
    /// Distinct states explored.
    pub states: usize,
    /// The deepest path.
    pub depth: usize,
    /// Wall time.
    pub took: Duration,
    /// Broken properties ("always" names), each with its counterexample trace.
    pub counterexamples: Vec<(&'static str, String)>,
    /// Properties that hold vacuously: "sometimes" properties never seen.
    pub never_seen: Vec<&'static str>,
    /// The search ran out of its time ([`Search::timeout`]) before it explored every
    /// state: what it found holds for the states explored only.
    pub stopped: bool,
}

/// How to explore.
#[derive(Clone, Debug)]
pub struct Search {
    /// Worker threads.
    pub threads: usize,
    /// Stop at the first counterexample.
    pub first: bool,
    /// Depth-first (memory: a fingerprint per state and the current paths) instead of
    /// breadth-first (shortest counterexamples, but every state of the frontier is kept).
    pub depth_first: bool,
    /// Keep one state of each set of states that differ only in the clients' numbers
    /// ([`crate::symmetry`]). Depth-first only.
    pub symmetry: bool,
    /// Print the states explored so far at this interval (to standard error).
    pub progress: Option<Duration>,
    /// Stop after this long: the report then covers the states explored so far only
    /// ([`Report::stopped`]).
    pub timeout: Option<Duration>,
}

impl Search {
    /// Breadth-first on `threads` threads, without symmetry or progress.
    pub fn bfs(threads: usize) -> Self {
        Search {
            threads,
            first: false,
            depth_first: false,
            symmetry: false,
            progress: None,
            timeout: None,
        }
    }

    /// Depth-first with symmetry reduction on `threads` threads.
    pub fn dfs(threads: usize) -> Self {
        Search {
            depth_first: true,
            symmetry: true,
            ..Search::bfs(threads)
        }
    }
}

/// Explore every state of `cfg` as `search` says.
pub fn explore(cfg: Config, search: &Search) -> Report {
    let model = Protocol::new(cfg);
    let properties = model.properties();
    let started = Instant::now();
    let mut builder = model.clone().checker().threads(search.threads);
    if search.first {
        builder = builder.finish_when(stateright::HasDiscoveries::AnyFailures);
    }
    if let Some(t) = search.timeout {
        builder = builder.timeout(t);
    }
    if search.symmetry {
        builder = builder.symmetry_fn(crate::symmetry::representative);
    }
    let mut checker: Box<dyn Checker<Protocol>> = if search.depth_first {
        Box::new(builder.spawn_dfs())
    } else {
        Box::new(builder.spawn_bfs())
    };
    let workers = checker.handles();
    if let Some(every) = search.progress {
        let mut last = Instant::now();
        while !workers.iter().all(|h| h.is_finished()) {
            std::thread::park_timeout(Duration::from_millis(50));
            if last.elapsed() < every {
                continue;
            }
            last = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            let n = checker.unique_state_count();
            eprintln!(
                "  {secs:>6.0} s: {n} states, depth {}, {:.0} states/s",
                checker.max_depth(),
                n as f64 / secs
            );
        }
    }
    for h in workers {
        h.join().expect("a checker thread panicked");
    }
    let took = started.elapsed();
    let mut counterexamples = Vec::new();
    let mut never_seen = Vec::new();
    for p in &properties {
        let found = checker.discovery(p.name);
        match (&p.expectation, found) {
            (stateright::Expectation::Sometimes, None) => never_seen.push(p.name),
            (stateright::Expectation::Sometimes, Some(_)) => {}
            (_, Some(path)) => counterexamples.push((p.name, trace(&model, path))),
            (_, None) => {}
        }
    }
    Report {
        states: checker.unique_state_count(),
        depth: checker.max_depth(),
        took,
        counterexamples,
        never_seen,
        // The checker does not say why its workers ended; a search that ends within its
        // last moment is reported as stopped (never the other way round).
        stopped: search.timeout.is_some_and(|t| took >= t),
    }
}

/// A counterexample as readable lines: each step and the state it led to.
fn trace(
    model: &Protocol,
    path: stateright::Path<crate::model::State, crate::model::Action>,
) -> String {
    let mut out = String::new();
    for (i, (state, action)) in path.into_vec().into_iter().enumerate() {
        out += &format!("{i:>3}. now={} {}\n", state.now, summary(model, &state));
        if let Some(a) = action {
            out += &format!("     -> {a:?}\n");
        }
    }
    out
}

fn summary(model: &Protocol, s: &crate::model::State) -> String {
    let mut parts = Vec::new();
    for (c, cl) in s.clients.iter().enumerate() {
        parts.push(format!(
            "c{c}[clock {}] {:?}{}",
            model.local(s, c),
            cl.phase,
            if cl.inbox.is_empty() {
                String::new()
            } else {
                format!(" inbox {:?}", cl.inbox)
            }
        ));
    }
    for (n, node) in s.nodes.iter().enumerate() {
        match &node.lock {
            Some(l) => parts.push(format!(
                "node{n}: {} holds {:?} token {} until {:?}",
                l.value.owner, l.value.reqs, l.value.token, l.expire_at
            )),
            None => parts.push(format!("node{n}: free")),
        }
        if let Some(q) = &node.queue {
            parts.push(format!("queue {:?}", q.value.keys().collect::<Vec<_>>()));
        }
    }
    if !s.net.is_empty() {
        parts.push(format!("in flight {:?}", s.net));
    }
    parts.join("; ")
}
