//! `leasehold status`, `list` and `release --force`: what operators use to answer "who
//! holds this lock?" and to clear a stuck one.

use std::fmt::Write as _;

use leasehold::{
    Client, HolderInfo, LockInfo, MemberInfo, PrimitiveKind, RwLockInfo, SemaphoreInfo,
};

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
    ttl_of(h.ttl_remaining)
}

/// A TTL as `status` and `list` show it: seconds to a tenth, or that there is none.
fn ttl_of(ttl: Option<std::time::Duration>) -> String {
    match ttl {
        Some(t) => format!("{:.1}s", t.as_secs_f64()),
        None => "no TTL".to_string(),
    }
}

/// The shortest TTL and the highest token of a lease set's members.
fn members_summary(members: &[MemberInfo]) -> (String, String) {
    let ttl = members.iter().filter_map(|m| m.ttl_remaining).min();
    let token = members.iter().map(|m| m.fencing_token).max();
    (
        ttl.map_or("-".into(), |t| ttl_of(Some(t))),
        token.map_or("-".into(), |t| t.to_string()),
    )
}

/// The semaphore and read-write lock of `name`, when the topology has them (not RedLock)
/// and they are held.
async fn sets_of(
    client: &Client,
    name: &str,
) -> anyhow::Result<(Option<SemaphoreInfo>, Option<RwLockInfo>)> {
    let sem = client.inspect_semaphore(name).await?;
    let rw = client.inspect_rwlock(name).await?;
    Ok((
        (sem.held > 0).then_some(sem),
        (rw.writer.is_some() || rw.reader_count > 0).then_some(rw),
    ))
}

/// Print one name's state: its lock, and (`sets`) its semaphore and read-write lock.
pub(crate) async fn status(
    client: &Client,
    name: &str,
    sets: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let info = client.inspect(name).await?;
    let (sem, rw) = if sets {
        sets_of(client, name).await?
    } else {
        (None, None)
    };
    if json {
        let mut doc = serde_json::to_value(&info)?;
        doc["schema"] = serde_json::json!(1);
        if let Some(sem) = &sem {
            doc["semaphore"] = serde_json::to_value(sem)?;
        }
        if let Some(rw) = &rw {
            doc["rwlock"] = serde_json::to_value(rw)?;
        }
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(OK);
    }
    match &info.holder {
        None if !info.nodes.is_empty() => {
            println!("{name}: no majority of the RedLock nodes holds it");
        }
        None if sem.is_some() || rw.is_some() => {}
        None => println!("{name}: free ({} waiting)", info.waiters),
        Some(h) => {
            println!("lock       {name}");
            println!("held by    {}", holder_text(h));
            println!("owner id   {}", h.owner_id);
            println!("token      {}", h.fencing_token);
            println!("ttl        {}", ttl_text(h));
            println!("holds      {}", h.hold_count);
            if let Some(value) = &h.metadata.value {
                // An election leader's value, quoted so that any text reads unambiguously.
                println!("value      {}", serde_json::Value::String(value.clone()));
            }
            println!("waiters    {}", info.waiters);
        }
    }
    if let Some(sem) = &sem {
        println!("semaphore  {name}");
        println!("held       {} permit(s)", sem.held);
        print_members("permit", &sem.permits, sem.held);
    }
    if let Some(rw) = &rw {
        println!("rwlock     {name}");
        match &rw.writer {
            Some(h) => println!(
                "writer     {} (owner {}, token {}, ttl {})",
                holder_text(h),
                h.owner_id,
                h.fencing_token,
                ttl_text(h)
            ),
            None => println!("writer     none"),
        }
        println!("readers    {}", rw.reader_count);
        print_members("reader", &rw.readers, rw.reader_count);
        println!("waiting    {} writer(s)", rw.waiting_writers);
    }
    if !info.nodes.is_empty() {
        print_nodes(&info);
    }
    Ok(OK)
}

fn print_members(what: &str, members: &[MemberInfo], counted: u64) {
    for m in members {
        println!(
            "{what:<10} token {}, ttl {} (request {})",
            m.fencing_token,
            ttl_of(m.ttl_remaining),
            m.request_id
        );
    }
    let shown = u64::try_from(members.len()).unwrap_or(u64::MAX);
    if counted > shown {
        println!("           … and {} more", counted - shown);
    }
}

fn print_nodes(info: &LockInfo) {
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

/// What `list` read of each name it found.
#[derive(Default)]
struct Found {
    locks: Vec<LockInfo>,
    semaphores: Vec<SemaphoreInfo>,
    rwlocks: Vec<RwLockInfo>,
    /// Names whose key holds another type of value (not leasehold's).
    foreign: Vec<String>,
}

/// How many names `list` reads at once.
const LIST_READS_AT_ONCE: usize = 16;

/// Print the held locks, semaphores and read-write locks matching `pattern`, at most
/// `limit`; on stderr, whether more match and how many keys of a foreign type were skipped.
pub(crate) async fn list(
    client: &Client,
    pattern: &str,
    limit: usize,
    sets: bool,
    json: bool,
) -> anyhow::Result<u8> {
    use futures_util::StreamExt as _;
    let listing = client.list(pattern, limit).await?;
    let reads = futures_util::stream::iter(
        listing
            .entries
            .iter()
            .filter(|e| sets || e.kind == PrimitiveKind::Lock),
    )
    .map(|e| async move {
        let read = match e.kind {
            PrimitiveKind::Semaphore => client.inspect_semaphore(&e.name).await.map(Read::Sem),
            PrimitiveKind::RwLock => client.inspect_rwlock(&e.name).await.map(Read::Rw),
            _ => client.inspect(&e.name).await.map(Read::Lock),
        };
        (e, read)
    })
    .buffered(LIST_READS_AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    let mut found = Found::default();
    for (e, read) in reads {
        match read {
            Ok(Read::Lock(i)) if i.holder.is_some() => found.locks.push(i),
            Ok(Read::Sem(s)) if s.held > 0 => found.semaphores.push(s),
            Ok(Read::Rw(r)) if r.writer.is_some() || r.reader_count > 0 => found.rwlocks.push(r),
            Ok(_) => {}
            Err(err) if err.is_foreign_key() => {
                found.foreign.push(format!("{} {}", e.kind, e.name))
            }
            Err(err) => return Err(err.into()),
        }
    }
    if json {
        let doc = serde_json::json!({
            "schema": 1,
            "locks": found.locks,
            "semaphores": found.semaphores,
            "rwlocks": found.rwlocks,
            "truncated": listing.truncated,
            "skipped_foreign": found.foreign,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(pattern, &found);
    }
    if listing.truncated {
        eprintln!(
            "leasehold: stopped after {limit} names (--limit {limit}); more match {pattern:?}: narrow the pattern or raise --limit"
        );
    }
    if !found.foreign.is_empty() {
        eprintln!(
            "leasehold: skipped {} name(s) whose key holds another type of value (not written by leasehold): {}",
            found.foreign.len(),
            found.foreign.join(", ")
        );
    }
    Ok(OK)
}

enum Read {
    Lock(LockInfo),
    Sem(SemaphoreInfo),
    Rw(RwLockInfo),
}

fn print_table(pattern: &str, found: &Found) {
    // NAME, KIND, TTL, TOKEN, HOLDS, WAITERS, HOLDER
    let mut rows: Vec<[String; 7]> = Vec::new();
    for i in &found.locks {
        if let Some(h) = &i.holder {
            rows.push([
                i.name.clone(),
                "lock".into(),
                ttl_text(h),
                h.fencing_token.to_string(),
                h.hold_count.to_string(),
                i.waiters.to_string(),
                holder_text(h),
            ]);
        }
    }
    for s in &found.semaphores {
        let (ttl, token) = members_summary(&s.permits);
        rows.push([
            s.name.clone(),
            "semaphore".into(),
            ttl,
            token,
            s.held.to_string(),
            "-".into(),
            format!("{} permit(s)", s.held),
        ]);
    }
    for r in &found.rwlocks {
        let row = match &r.writer {
            Some(h) => [
                r.name.clone(),
                "rwlock".into(),
                ttl_text(h),
                h.fencing_token.to_string(),
                h.hold_count.to_string(),
                r.waiting_writers.to_string(),
                format!("writer {}", holder_text(h)),
            ],
            None => {
                let (ttl, token) = members_summary(&r.readers);
                [
                    r.name.clone(),
                    "rwlock".into(),
                    ttl,
                    token,
                    r.reader_count.to_string(),
                    r.waiting_writers.to_string(),
                    format!("{} reader(s)", r.reader_count),
                ]
            }
        };
        rows.push(row);
    }
    if rows.is_empty() {
        println!("nothing held matches {pattern:?}");
        return;
    }
    rows.sort();
    let width = rows.iter().map(|r| r[0].len()).max().unwrap_or(4).max(4);
    println!(
        "{:width$}  {:<9}  {:>8}  {:>18}  {:>5}  {:>7}  HOLDER",
        "NAME", "KIND", "TTL", "TOKEN", "HOLDS", "WAITERS"
    );
    for r in &rows {
        println!(
            "{:width$}  {:<9}  {:>8}  {:>18}  {:>5}  {:>7}  {}",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6]
        );
    }
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
