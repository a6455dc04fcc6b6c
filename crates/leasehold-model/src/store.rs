//! The keys of one lock on one Redis server, as leasehold's scripts see them: the lock
//! hash, the fencing counter, the waiter queue and its expiries, the reservation and the
//! waiters' details, each with its expiry (absolute server ms, `None` = no TTL).
//!
//! Time follows Redis: a key with expiry `at` is live while `now <= at` (Redis removes it
//! once `now > at`), `PTTL` is `at - now`, and a container emptied by its last removal is
//! deleted (with its TTL). A new container has no TTL until a script gives it one.

use std::collections::{BTreeMap, BTreeSet};

/// Milliseconds of server time.
pub type Ms = u64;

/// The lock hash `PREFIX:{NAME}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockHash {
    /// `owner`: the holder's owner id.
    pub owner: String,
    /// `token`: the fencing token of the current grant.
    pub token: u64,
    /// `count`: the hold count.
    pub count: i64,
    /// One `r:REQ` field per live hold.
    pub reqs: BTreeSet<String>,
    /// `meta`: the holder metadata.
    pub meta: String,
}

/// A key's value and its expiry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keyed<T> {
    /// The value.
    pub value: T,
    /// Absolute expiry (server ms), or `None` without a TTL.
    pub expire_at: Option<Ms>,
}

impl<T> Keyed<T> {
    /// A key without a TTL.
    pub fn persistent(value: T) -> Self {
        Self {
            value,
            expire_at: None,
        }
    }

    /// `PTTL` at `now`: the ms left, or -1 without a TTL.
    pub fn pttl(&self, now: Ms) -> i64 {
        match self.expire_at {
            Some(at) => at as i64 - now as i64,
            None => -1,
        }
    }

    /// `PEXPIRE key ms`.
    pub fn pexpire(&mut self, now: Ms, ms: i64) {
        self.expire_at = Some((now as i64 + ms).max(0) as Ms);
    }

    /// The prelude's `at_least`: live at least `ms` more (never shorter); a key without a
    /// TTL gets one.
    pub fn at_least(&mut self, now: Ms, ms: i64) {
        let want = (now as i64 + ms).max(0) as Ms;
        match self.expire_at {
            Some(at) if at >= want => {}
            _ => self.expire_at = Some(want),
        }
    }
}

/// A sorted set: member -> score.
pub type Zset = BTreeMap<String, u64>;

/// The keys of one lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Store {
    /// `PREFIX:{NAME}`.
    pub lock: Option<Keyed<LockHash>>,
    /// `PREFIX:{NAME}:fence` (never has a TTL).
    pub fence: Option<u64>,
    /// `PREFIX:{NAME}:waiters`: request id -> place (server µs).
    pub queue: Option<Keyed<Zset>>,
    /// `PREFIX:{NAME}:waiters:exp`: request id -> expiry of the place (server ms).
    pub expiries: Option<Keyed<Zset>>,
    /// `PREFIX:{NAME}:next`: the request id a released lock is reserved for.
    pub next: Option<Keyed<String>>,
    /// `PREFIX:{NAME}:waiters:info`: request id -> details.
    pub info: Option<Keyed<BTreeMap<String, String>>>,
}

fn expired<T>(k: &Option<Keyed<T>>, now: Ms) -> bool {
    matches!(k, Some(Keyed { expire_at: Some(at), .. }) if now > *at)
}

impl Store {
    /// Remove every key whose expiry passed by `now` (what Redis does, lazily or actively,
    /// before a script could see it).
    pub fn expire(&mut self, now: Ms) {
        if expired(&self.lock, now) {
            self.lock = None;
        }
        if expired(&self.queue, now) {
            self.queue = None;
        }
        if expired(&self.expiries, now) {
            self.expiries = None;
        }
        if expired(&self.next, now) {
            self.next = None;
        }
        if expired(&self.info, now) {
            self.info = None;
        }
    }

    /// Whether a key other than the fencing counter lacks a TTL.
    pub fn key_without_ttl(&self) -> Option<&'static str> {
        fn none<T>(k: &Option<Keyed<T>>) -> bool {
            matches!(
                k,
                Some(Keyed {
                    expire_at: None,
                    ..
                })
            )
        }
        [
            ("lock", none(&self.lock)),
            ("waiters", none(&self.queue)),
            ("waiters:exp", none(&self.expiries)),
            ("next", none(&self.next)),
            ("waiters:info", none(&self.info)),
        ]
        .into_iter()
        .find_map(|(k, bad)| bad.then_some(k))
    }

    /// `ZREM` from a sorted set (deleting the key when it empties); whether it was there.
    pub fn zrem(set: &mut Option<Keyed<Zset>>, member: &str) -> bool {
        let Some(k) = set else { return false };
        let had = k.value.remove(member).is_some();
        if k.value.is_empty() {
            *set = None;
        }
        had
    }

    /// `HDEL` from the details hash (deleting the key when it empties).
    pub fn hdel_info(&mut self, field: &str) {
        if let Some(k) = &mut self.info {
            k.value.remove(field);
            if k.value.is_empty() {
                self.info = None;
            }
        }
    }

    /// Members of a sorted set in Redis order (score, then member).
    pub fn ordered(set: &Option<Keyed<Zset>>) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = set
            .iter()
            .flat_map(|k| k.value.iter().map(|(m, s)| (m.clone(), *s)))
            .collect();
        v.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}
