//! `leasehold observe`: an election's leader now, then each change, one line (or one JSON
//! object) per change, until interrupted.

use std::io::Write;

use leasehold::{Client, Leader};

use crate::child::{self, Signals};

/// Print the leader now and every change of `name`'s leadership; ends on a signal (exit
/// 128+N) or when stdout is closed (exit 0).
pub(crate) async fn observe(client: &Client, name: &str, json: bool) -> anyhow::Result<u8> {
    let mut signals = Signals::install()?;
    let mut observer = client.election(name)?.observe();
    loop {
        let change = tokio::select! {
            change = observer.next() => change?,
            sig = signals.recv() => return Ok(child::interrupted(sig)),
        };
        let line = render(name, change.as_ref(), json);
        let mut out = std::io::stdout().lock();
        // A closed pipe (`| head -1`) is the reader's choice, not an error.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(crate::exit::OK);
        }
    }
}

/// One change as a line: `leader OWNER term TERM value VALUE` (the value JSON-quoted) or
/// `no leader`; with `json`, `{"schema": 1, "election": …, "leader": {…} | null}`.
fn render(name: &str, leader: Option<&Leader>, json: bool) -> String {
    if json {
        return serde_json::json!({ "schema": 1, "election": name, "leader": leader }).to_string();
    }
    match leader {
        Some(l) => format!(
            "leader {} term {} value {}",
            l.owner_id,
            l.term,
            serde_json::Value::String(l.value.clone())
        ),
        None => "no leader".to_string(),
    }
}
