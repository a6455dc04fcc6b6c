//! Read-only inspection of semaphores and read-write locks: who holds which permit, the
//! writer and the readers, without taking anything. Permits and readers are leases in a
//! lease set (see `PROTOCOL.md`); each is shown by its request id, fencing token and time
//! left. The server work is the backend seam's (`backend/keyspace.rs`).

use std::time::Duration;

use serde::Serialize;

use crate::backend::keyspace::{self, SetReply};
use crate::client::inspect::{as_millis, holder_from, HolderInfo};
use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::keys::{rwlock_keys, semaphore_keys, validate_name};

/// The most members of one lease set that inspection returns (every one is counted).
pub const INSPECT_MEMBERS: u32 = 1_000;

/// One lease of a lease set: a semaphore permit or a reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The request id of the acquire that was granted it.
    pub request_id: String,
    /// Its fencing token.
    pub fencing_token: u64,
    /// How many permits it holds (1, or n for a weighted grant; 1 for a reader).
    pub permits: u32,
    /// Time left on its lease at the server.
    #[serde(rename = "ttl_remaining_ms", serialize_with = "as_millis")]
    pub ttl_remaining: Option<Duration>,
}

/// A semaphore's state, read without taking a permit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SemaphoreInfo {
    /// The semaphore's name.
    pub name: String,
    /// How many permits are held.
    pub held: u64,
    /// The held permits, earliest expiry first (at most [`INSPECT_MEMBERS`]).
    pub permits: Vec<MemberInfo>,
    /// The last fencing token issued for this semaphore, if the counter exists.
    pub last_token: Option<u64>,
}

/// A read-write lock's state, read without taking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RwLockInfo {
    /// The read-write lock's name.
    pub name: String,
    /// The writer, if one holds it.
    pub writer: Option<HolderInfo>,
    /// How many readers hold it.
    pub reader_count: u64,
    /// The readers, earliest expiry first (at most [`INSPECT_MEMBERS`]).
    pub readers: Vec<MemberInfo>,
    /// Writers waiting for it (their places have not lapsed).
    pub waiting_writers: u64,
    /// The last fencing token issued for it (readers and writers share one counter).
    pub last_token: Option<u64>,
}

/// A lease set's reply as (members counted, members listed, last token).
fn members(name: &str, reply: SetReply) -> Result<(u64, Vec<MemberInfo>, Option<u64>)> {
    let bad = || {
        Error::new(
            ErrorKind::Server,
            format!("inspect {name:?}: the server's reply is not a lease set's"),
        )
    };
    let mut it = reply.into_iter();
    let last = it.next().ok_or_else(bad)?.parse().ok();
    let held = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let rest: Vec<String> = it.collect();
    let list = rest
        .chunks(3)
        .filter(|c| c.len() == 3)
        .map(|c| MemberInfo {
            request_id: c[0].clone(),
            fencing_token: c[2].parse().unwrap_or_default(),
            permits: crate::protocol::permits_of(&c[0]),
            ttl_remaining: Some(Duration::from_millis(c[1].parse().unwrap_or(0))),
        })
        .collect();
    Ok((held, list, last))
}

impl Client {
    /// Read semaphore `name`'s held permits (request id, fencing token, time left each),
    /// without taking one. Not supported on RedLock clients.
    ///
    /// # Cancel safety
    /// Cancel-safe: the script only reads.
    pub async fn inspect_semaphore(&self, name: &str) -> Result<SemaphoreInfo> {
        crate::backend::require(&self.inner, crate::backend::Capability::ServerQueues)?;
        validate_name(name)?;
        self.inner.check_open()?;
        let keys = semaphore_keys(&self.inner.prefix, name);
        let reply = keyspace::inspect_set(
            &self.inner,
            name,
            &keys.lock,
            &keys.queue,
            &keys.fence,
            INSPECT_MEMBERS,
        )
        .await?;
        let (held, permits, last_token) = members(name, reply)?;
        Ok(SemaphoreInfo {
            name: name.to_string(),
            held,
            permits,
            last_token,
        })
    }

    /// Read read-write lock `name`'s writer, readers and waiting writers, without taking
    /// it. Not supported on RedLock clients.
    ///
    /// # Cancel safety
    /// Cancel-safe: the scripts only read.
    pub async fn inspect_rwlock(&self, name: &str) -> Result<RwLockInfo> {
        crate::backend::require(&self.inner, crate::backend::Capability::ServerQueues)?;
        validate_name(name)?;
        self.inner.check_open()?;
        let (mut writer, reader) = rwlock_keys(&self.inner.prefix, name);
        // inspect.lua counts live waiters in its third key: here the waiting writers.
        writer.expiries = writer.queue.clone();
        let (owner, token, count, meta, pttl, waiting, _) =
            keyspace::inspect_one(&self.inner, name, &writer).await?;
        let reply = keyspace::inspect_set(
            &self.inner,
            name,
            &reader.lock,
            &reader.queue,
            &reader.fence,
            INSPECT_MEMBERS,
        )
        .await?;
        let (reader_count, readers, last_token) = members(name, reply)?;
        Ok(RwLockInfo {
            name: name.to_string(),
            writer: holder_from(owner, &token, &count, &meta, pttl),
            reader_count,
            readers,
            waiting_writers: u64::try_from(waiting).unwrap_or(0),
            last_token,
        })
    }
}
