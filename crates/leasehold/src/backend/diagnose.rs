//! The server work of a diagnosis: on every server the client uses (the server, each
//! Cluster primary, each RedLock node), read `INFO`, try each command leasehold needs in a
//! way that changes nothing (an unknown script hash, `CLIENT KILL` of no client), and
//! subscribe to a channel of its own; on Cluster, read `CLUSTER INFO`. The replies go back
//! raw, for the client to judge.
//!
//! Invariants: nothing here writes a key or disturbs another client.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Topology;
use crate::client::context::Inner;
use crate::net::failure::Failure;

/// What one server said.
pub(crate) struct Probe {
    /// The server's address.
    pub server: String,
    /// `INFO` (all default sections), or why it could not be read.
    pub info: Result<String, String>,
    /// Each needed command and whether the user may run it (`Err`: the server's refusal).
    pub commands: Vec<(&'static str, Result<(), String>)>,
    /// Whether a subscription was confirmed within a second.
    pub subscribed: bool,
    /// `CLUSTER INFO`, on Cluster.
    pub cluster_info: Option<Result<String, String>>,
}

/// Probe every server of the client's topology.
pub(crate) async fn probe(inner: &Arc<Inner>) -> Vec<Probe> {
    match Topology::of(inner) {
        Topology::RedLock => {
            let probes = inner.nodes.iter().map(|n| probe_one(n, None));
            futures_util::future::join_all(probes).await
        }
        Topology::Server => vec![probe_one(inner, None).await],
        Topology::Cluster => {
            let primaries = match crate::backend::keyspace::primaries(inner).await {
                Ok(p) => p,
                Err(e) => {
                    return vec![Probe {
                        server: inner.display_url.clone(),
                        info: Err(e.to_string()),
                        commands: Vec::new(),
                        subscribed: false,
                        cluster_info: None,
                    }]
                }
            };
            let mut out = Vec::new();
            for primary in primaries {
                out.push(probe_one(inner, Some(primary)).await);
            }
            out
        }
    }
}

fn refusal(f: Failure) -> String {
    f.describe()
}

async fn probe_one(inner: &Arc<Inner>, at: Option<(String, u16)>) -> Probe {
    let budget = inner.conn.connect_timeout() + inner.conn.response_timeout();
    let run = |cmd: redis::Cmd| {
        let at = at.clone();
        async move {
            match &at {
                None => inner.conn.query::<redis::Value>(&cmd, budget).await,
                Some((host, port)) => {
                    inner
                        .conn
                        .query_at::<redis::Value>(&cmd, host, *port, budget)
                        .await
                }
            }
        }
    };
    let text = |v: redis::Value| -> Result<String, String> {
        redis::from_redis_value::<String>(v).map_err(|e| e.to_string())
    };
    let info = match run(redis::cmd("INFO")).await {
        Ok(v) => text(v),
        Err(f) => Err(refusal(f)),
    };
    // Each command leasehold needs, sent so that it changes nothing. A refusal other
    // than NOPERM (NOSCRIPT, "no such client") means the command may run.
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha
        .arg("0000000000000000000000000000000000000000")
        .arg(0);
    let mut script = redis::cmd("SCRIPT");
    script
        .arg("EXISTS")
        .arg("0000000000000000000000000000000000000000");
    let mut client_id = redis::cmd("CLIENT");
    client_id.arg("ID");
    let mut client_kill = redis::cmd("CLIENT");
    client_kill.arg("KILL").arg("ID").arg(0);
    let mut commands = Vec::new();
    for (name, cmd) in [
        ("EVALSHA", evalsha),
        ("SCRIPT EXISTS", script),
        ("CLIENT ID", client_id),
        ("CLIENT KILL", client_kill),
    ] {
        let outcome = match run(cmd).await {
            Ok(_) => Ok(()),
            Err(Failure::Server(e)) | Err(Failure::NotSent(Some(e)))
                if e.code() == Some("NOPERM") =>
            {
                Err(e.to_string())
            }
            Err(Failure::Server(_)) => Ok(()),
            Err(f) => Err(refusal(f)),
        };
        commands.push((name, outcome));
    }
    // The waker's own subscription, as waiters use it.
    let channel = format!("{}:doctor:{}", inner.prefix, crate::random_id());
    let sub = inner
        .waker
        .subscribe(&channel, Instant::now() + Duration::from_secs(1))
        .await;
    let subscribed = sub.is_confirmed();
    drop(sub);
    let cluster_info = if at.is_some() {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("INFO");
        Some(match run(cmd).await {
            Ok(v) => text(v),
            Err(f) => Err(refusal(f)),
        })
    } else {
        None
    };
    let server = match &at {
        Some((host, port)) => format!("{host}:{port}"),
        None => inner.display_url.clone(),
    };
    Probe {
        server,
        info,
        commands,
        subscribed,
        cluster_info,
    }
}
