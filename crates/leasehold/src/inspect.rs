//! Holder metadata and read-only inspection of a lock.
//!
//! A new grant stores who holds it — host name, process id and an optional label — as a
//! small JSON object in the lock hash, under the same TTL as the lock. [`Client::inspect`]
//! reads a lock's holder, remaining TTL, fencing token, hold count and live waiters in
//! one read-only script, without taking the lock.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{failure_error, Client};
use crate::error::Result;
use crate::keys::{validate_name, LockKeys};

/// Who holds a lock, as the holder described itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HolderMetadata {
    /// Host name of the holder's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Process id of the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A label given by the holder (e.g. a job name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl HolderMetadata {
    /// This process's metadata: host name and pid, with an optional label.
    pub fn this_process(label: Option<&str>) -> Self {
        HolderMetadata {
            host: host_name(),
            pid: Some(std::process::id()),
            label: label.map(str::to_string),
        }
    }

    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The current holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HolderInfo {
    /// The holder's owner id.
    pub owner_id: String,
    /// The fencing token of the current grant.
    pub fencing_token: u64,
    /// How many holds the owner has (more than 1 when re-entered).
    pub hold_count: u32,
    /// Time left on the lease at the server.
    #[serde(rename = "ttl_remaining_ms", serialize_with = "as_millis")]
    pub ttl_remaining: Duration,
    /// What the holder said about itself.
    pub metadata: HolderMetadata,
}

/// A lock's state, read without taking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// The holder, if the lock is held.
    pub holder: Option<HolderInfo>,
    /// Waiters registered at the server whose registration has not expired.
    pub waiters: u64,
    /// The last fencing token issued for this name, if the counter exists.
    pub last_token: Option<u64>,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

type InspectReply = (String, String, String, String, i64, i64, String);

impl Client {
    /// Read lock `name`'s holder, remaining TTL, fencing token, hold count and live
    /// waiters, without taking it.
    ///
    /// # Cancel safety
    /// Cancel-safe: the script only reads.
    pub async fn inspect(&self, name: &str) -> Result<LockInfo> {
        validate_name(name)?;
        self.inner.check_open()?;
        let keys = LockKeys::new(&self.inner.prefix, name);
        let mut inv = self.inner.scripts.inspect.key(&keys.lock);
        inv.key(&keys.fence).key(&keys.expiries);
        let budget = self.inner.conn.connect_timeout() + self.inner.conn.response_timeout();
        let (owner, token, count, meta, pttl, waiters, fence): InspectReply = self
            .inner
            .conn
            .eval(&inv, budget)
            .await
            .map_err(|f| failure_error(&format!("inspect {name:?}"), f))?;
        let holder = (!owner.is_empty()).then(|| HolderInfo {
            owner_id: owner,
            fencing_token: token.parse().unwrap_or_default(),
            hold_count: count.parse().unwrap_or_default(),
            ttl_remaining: Duration::from_millis(u64::try_from(pttl).unwrap_or(0)),
            metadata: serde_json::from_str(&meta).unwrap_or_default(),
        });
        Ok(LockInfo {
            name: name.to_string(),
            holder,
            waiters: u64::try_from(waiters).unwrap_or(0),
            last_token: fence.parse().ok(),
        })
    }
}
