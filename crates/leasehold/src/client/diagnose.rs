//! [`Client::diagnose`]: the server settings that can break a lock, judged on every server
//! the client uses — eviction, persistence, ACL permissions, pub/sub, replicas for replica
//! acknowledgements, cluster state and server version — each with the reason it matters.
//!
//! Invariants: a check is `Unsafe` only when the setting can break mutual exclusion or
//! stop leasehold from working; settings that weaken it or cost speed are `Warn`.

use serde::Serialize;

use crate::client::Client;
use crate::error::Result;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CheckStatus {
    /// Nothing to do.
    Ok,
    /// Works, but weaker or slower than it could be; the detail says what to change.
    Warn,
    /// Can break mutual exclusion, or keeps leasehold from working.
    Unsafe,
}

/// One check on one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Check {
    /// The server's address (without credentials).
    pub server: String,
    /// What was checked, e.g. `maxmemory-policy`.
    pub name: String,
    /// How it came out.
    pub status: CheckStatus,
    /// What was found and why it matters.
    pub detail: String,
}

/// The checks of [`Client::diagnose`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Diagnosis {
    /// Every check, server by server.
    pub checks: Vec<Check>,
}

impl Diagnosis {
    /// Whether any check is [`CheckStatus::Unsafe`].
    pub fn is_unsafe(&self) -> bool {
        self.checks.iter().any(|c| c.status == CheckStatus::Unsafe)
    }
}

/// One field of an `INFO` text.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

fn version_of(info: &str) -> Option<(String, (u32, u32))> {
    let (product, v) = match field(info, "valkey_version") {
        Some(v) => ("Valkey", v),
        None => ("Redis", field(info, "redis_version")?),
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next()?;
    let minor = parts.next().unwrap_or(0);
    // Valkey 7.2+ speaks the Redis 7.2 protocol.
    let redis_like = if product == "Valkey" && major >= 7 {
        (7, 2)
    } else {
        (major, minor)
    };
    Some((format!("{product} {v}"), redis_like))
}

impl Client {
    /// Check the server settings that can break a lock on every server this client uses,
    /// with the reason for each (what `leasehold doctor` prints).
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads, and subscribes to a channel of its own.
    pub async fn diagnose(&self) -> Result<Diagnosis> {
        self.inner.check_open()?;
        let mut checks = Vec::new();
        let acks = self.inner.replica_acks.map(|(n, _)| n);
        for probe in crate::backend::diagnose::probe(&self.inner).await {
            let server = probe.server.clone();
            let mut add = |name: &str, status: CheckStatus, detail: String| {
                checks.push(Check {
                    server: server.clone(),
                    name: name.to_string(),
                    status,
                    detail,
                })
            };
            let info = match &probe.info {
                Ok(info) => info.as_str(),
                Err(e) => {
                    add(
                        "INFO",
                        CheckStatus::Warn,
                        format!("cannot read INFO ({e}): the server's settings are unknown; grant +info"),
                    );
                    ""
                }
            };
            if !info.is_empty() {
                judge_info(info, acks, &mut add);
            }
            for (command, outcome) in &probe.commands {
                let (status, why) = match *command {
                    "EVALSHA" | "SCRIPT EXISTS" => (
                        CheckStatus::Unsafe,
                        "every lock operation is a script: nothing works without it",
                    ),
                    _ => (
                        CheckStatus::Warn,
                        "a command on an abandoned connection cannot be fenced off; unknown outcomes still resolve by retry",
                    ),
                };
                match outcome {
                    Ok(()) => add(&format!("ACL {command}"), CheckStatus::Ok, "allowed".into()),
                    Err(e) => add(
                        &format!("ACL {command}"),
                        status,
                        format!("denied ({e}): {why}"),
                    ),
                }
            }
            if probe.subscribed {
                add(
                    "pub/sub",
                    CheckStatus::Ok,
                    "a subscription was confirmed: releases wake waiters at once".into(),
                );
            } else {
                add(
                    "pub/sub",
                    CheckStatus::Warn,
                    "no subscription was confirmed within 1 s (SUBSCRIBE/SSUBSCRIBE denied, or channels not allowed): waiters poll instead of being woken".into(),
                );
            }
            if let Some(cluster) = &probe.cluster_info {
                match cluster {
                    Ok(text) if field(text, "cluster_state") == Some("ok") => {
                        add("cluster state", CheckStatus::Ok, "ok: every slot is served".into())
                    }
                    Ok(text) => add(
                        "cluster state",
                        CheckStatus::Unsafe,
                        format!(
                            "{}: some slots are not served, so some locks cannot be taken or released",
                            field(text, "cluster_state").unwrap_or("unknown")
                        ),
                    ),
                    Err(e) => add("cluster state", CheckStatus::Warn, format!("cannot read CLUSTER INFO: {e}")),
                }
            }
        }
        Ok(Diagnosis { checks })
    }
}

/// The checks that `INFO` answers: version, eviction, persistence, replicas.
fn judge_info(info: &str, acks: Option<u32>, add: &mut impl FnMut(&str, CheckStatus, String)) {
    match version_of(info) {
        Some((name, v)) if v >= (6, 2) => add("version", CheckStatus::Ok, name),
        Some((name, _)) => add(
            "version",
            CheckStatus::Unsafe,
            format!("{name}: leasehold needs Redis 6.2 or later (or Valkey 7.2 or later)"),
        ),
        None => add("version", CheckStatus::Warn, "INFO names no version".into()),
    }
    let maxmemory: u64 = field(info, "maxmemory")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let policy = field(info, "maxmemory_policy").unwrap_or("unknown");
    let (status, detail) = if maxmemory == 0 {
        (
            CheckStatus::Ok,
            format!("{policy}, but no memory limit: nothing is evicted"),
        )
    } else if policy == "noeviction" {
        (
            CheckStatus::Ok,
            "noeviction: a full server refuses writes instead of evicting lock keys".into(),
        )
    } else if policy.starts_with("allkeys-") {
        (
            CheckStatus::Unsafe,
            format!("{policy} with maxmemory {maxmemory}: under memory pressure a held lock's key is evicted and a second holder is granted; use noeviction"),
        )
    } else {
        (
            CheckStatus::Warn,
            format!("{policy} with maxmemory {maxmemory}: every lock key has a TTL, so it can be evicted under memory pressure; keep headroom or use noeviction"),
        )
    };
    add("maxmemory-policy", status, detail);
    let aof = field(info, "aof_enabled") == Some("1");
    let rdb_saves = field(info, "rdb_changes_since_last_save").is_some()
        && field(info, "rdb_last_bgsave_status").is_some()
        && field(info, "rdb_saves").is_some_and(|n| n != "0");
    if aof {
        add(
            "persistence",
            CheckStatus::Ok,
            "AOF on: a restart keeps held locks (up to its fsync policy)".into(),
        );
    } else {
        add(
            "persistence",
            CheckStatus::Warn,
            format!(
                "no AOF{}: a restart loses held locks, so after a crash keep Redis down for at least the longest lease before it accepts clients (the delayed-restart rule)",
                if rdb_saves { " (RDB snapshots only: a restart returns to the last one)" } else { "" }
            ),
        );
    }
    let replicas: u32 = field(info, "connected_slaves")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if let Some(wanted) = acks {
        if replicas < wanted {
            add(
                "replicas",
                CheckStatus::Unsafe,
                format!("{replicas} connected, but grants need {wanted} acknowledgements: every acquire fails with NotReplicated"),
            );
        } else {
            add(
                "replicas",
                CheckStatus::Ok,
                format!("{replicas} connected, {wanted} acknowledgements required"),
            );
        }
    } else if field(info, "role") == Some("master") {
        add(
            "replicas",
            CheckStatus::Ok,
            format!("{replicas} connected (no replica acknowledgements required)"),
        );
    }
}
