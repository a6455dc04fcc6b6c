//! `leasehold status`, `list` and `release --force`: what operators use to answer "who
//! holds this lock?" and to clear a stuck one.

use std::fmt::Write as _;

use leasehold::{Client, HolderInfo, LockInfo};

use crate::exit::{UsageError, OK};

fn holder_text(h: &HolderInfo) -> String {
    let m = &h.metadata;
    let mut who = String::new();
    if let Some(label) = &m.label {
        let _ = write!(who, "{label} ");
    }
    let _ = write!(
        who,
        "{}pid {}",
        m.host
            .as_deref()
            .map(|h| format!("{h} "))
            .unwrap_or_default(),
        m.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
    );
    who
}

fn ttl_text(h: &HolderInfo) -> String {
    format!("{:.1}s", h.ttl_remaining.as_secs_f64())
}

/// Print one lock's state.
pub(crate) async fn status(client: &Client, name: &str, json: bool) -> anyhow::Result<u8> {
    let info = client.inspect(name).await?;
    if json {
        let mut doc = serde_json::to_value(&info)?;
        doc["schema"] = serde_json::json!(1);
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(OK);
    }
    match &info.holder {
        None if info.nodes.is_empty() => println!("{name}: free ({} waiting)", info.waiters),
        None => println!("{name}: no majority of the RedLock nodes holds it"),
        Some(h) => {
            println!("lock       {name}");
            println!("held by    {}", holder_text(h));
            println!("owner id   {}", h.owner_id);
            println!("token      {}", h.fencing_token);
            println!("ttl        {}", ttl_text(h));
            println!("holds      {}", h.hold_count);
            println!("waiters    {}", info.waiters);
        }
    }
    if !info.nodes.is_empty() {
        let agreeing = info
            .nodes
            .iter()
            .filter(|v| {
                v.holder.as_ref().map(|h| &h.owner_id) == info.holder.as_ref().map(|h| &h.owner_id)
                    && v.holder.is_some()
            })
            .count();
        println!(
            "quorum     {}",
            if info.holder.is_some() {
                format!("held on {agreeing} of {} nodes", info.nodes.len())
            } else {
                format!("not held by a majority of {} nodes", info.nodes.len())
            }
        );
        for v in &info.nodes {
            let view = match (&v.error, &v.holder) {
                (Some(e), _) => format!("unreadable: {e}"),
                (None, None) => "free".to_string(),
                (None, Some(h)) => format!(
                    "held by {} (owner {}, token {}, ttl {})",
                    holder_text(h),
                    h.owner_id,
                    h.fencing_token,
                    ttl_text(h)
                ),
            };
            println!("node       {}: {view}", v.node);
        }
    }
    Ok(OK)
}

/// Print the held locks matching `pattern`.
pub(crate) async fn list(client: &Client, pattern: &str, json: bool) -> anyhow::Result<u8> {
    let mut infos: Vec<LockInfo> = Vec::new();
    for name in client.list(pattern).await? {
        let info = client.inspect(&name).await?;
        if info.holder.is_some() {
            infos.push(info);
        }
    }
    if json {
        let doc = serde_json::json!({ "schema": 1, "locks": infos });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(OK);
    }
    if infos.is_empty() {
        println!("no held locks match {pattern:?}");
        return Ok(OK);
    }
    let width = infos.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:width$}  {:>8}  {:>18}  {:>5}  {:>7}  HOLDER",
        "NAME", "TTL", "TOKEN", "HOLDS", "WAITERS"
    );
    for i in &infos {
        if let Some(h) = &i.holder {
            println!(
                "{:width$}  {:>8}  {:>18}  {:>5}  {:>7}  {}",
                i.name,
                ttl_text(h),
                h.fencing_token,
                h.hold_count,
                i.waiters,
                holder_text(h)
            );
        }
    }
    Ok(OK)
}

/// Remove a lock whoever holds it (only with `--force`).
pub(crate) async fn release(client: &Client, name: &str, force: bool) -> anyhow::Result<u8> {
    if !force {
        return Err(UsageError(format!(
            "refusing to remove lock {name:?} without --force: its holder would lose mutual exclusion (see `leasehold status {name}` first)"
        ))
        .into());
    }
    match client.force_release(name).await? {
        Some(h) => println!(
            "removed lock {name:?} held by {} (owner {}, token {}, {} hold(s), {} left); waiters were woken",
            holder_text(&h),
            h.owner_id,
            h.fencing_token,
            h.hold_count,
            ttl_text(&h)
        ),
        None => println!("lock {name:?} was not held; nothing removed"),
    }
    Ok(OK)
}

/// `leasehold doctor`: every check on every server, worst first in the exit code.
pub(crate) async fn doctor(client: &Client, json: bool) -> anyhow::Result<u8> {
    let diagnosis = client.diagnose().await?;
    let code = if diagnosis.is_unsafe() {
        crate::exit::UNSAFE
    } else {
        OK
    };
    if json {
        let out = serde_json::json!({
            "schema": 1,
            "unsafe": diagnosis.is_unsafe(),
            "checks": diagnosis.checks,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }
    let mut server = "";
    for check in &diagnosis.checks {
        if check.server != server {
            server = &check.server;
            println!("{server}");
        }
        let tag = match check.status {
            leasehold::CheckStatus::Ok => "ok    ",
            leasehold::CheckStatus::Warn => "WARN  ",
            _ => "UNSAFE",
        };
        println!("  {tag} {:<18} {}", check.name, check.detail);
    }
    let (unsafe_n, warn_n) = diagnosis
        .checks
        .iter()
        .fold((0, 0), |(u, w), c| match c.status {
            leasehold::CheckStatus::Ok => (u, w),
            leasehold::CheckStatus::Warn => (u, w + 1),
            _ => (u + 1, w),
        });
    println!("{unsafe_n} unsafe, {warn_n} warnings");
    Ok(code)
}
