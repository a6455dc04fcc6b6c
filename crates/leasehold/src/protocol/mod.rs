//! The protocol layer: one typed call per script. A request type builds its script call —
//! keys and arguments in the order `PROTOCOL.md` gives, written in this one place — and a
//! reply type decodes what the script answers into an enum, so no other module compares
//! reply codes. Reply tags are added and checked by the command connection (`net/conn.rs`).
//!
//! Invariants: a request never changes between the tries of one call (retrying an acquire
//! resends the same request id); decoding never panics — a reply of an unexpected shape is
//! an [`Unexpected`] error.

use std::time::Duration;

pub(crate) mod keys;
pub mod scripts;

use crate::lease::millis;
use crate::protocol::keys::{Kind, LockKeys};
use crate::protocol::scripts::{Call, Scripts, CLAIM_MS, RESERVATION_MS};

/// What an acquire asks the server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The lock (waiters are served oldest first, but a free, unreserved lock goes to
    /// whoever asks).
    Exclusive,
    /// The fair lock: strictly first come, first served across processes.
    Fair,
    /// One permit of a semaphore with this many permits.
    Permit(u32),
    /// A reader of a read-write lock.
    Read,
    /// The writer of a read-write lock.
    Write,
}

impl Mode {
    /// Waiters of this mode hold a place at the server, refreshed while they wait.
    pub(crate) fn keeps_place(self) -> bool {
        matches!(self, Mode::Fair | Mode::Write | Mode::Permit(_))
    }

    /// Waiters of this mode are served strictly in order: a waiter retries only when a
    /// release names it (or its place needs refreshing).
    pub(crate) fn strict_order(self) -> bool {
        matches!(self, Mode::Fair | Mode::Permit(_))
    }
}

/// A reply of a shape the script never gives (another script's reply, a server that runs
/// something else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unexpected(pub String);

impl std::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The permits held by the grant with request id `req`: n for `REQ*n` with n in 2 to
/// [`MAX_PERMITS_PER_GRANT`](crate::MAX_PERMITS_PER_GRANT), else 1 (the scripts' `weight`,
/// see `PROTOCOL.md`, "Weighted permits").
pub(crate) fn permits_of(req: &str) -> u32 {
    req.rsplit_once('*')
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .filter(|n| (2..=crate::MAX_PERMITS_PER_GRANT).contains(n))
        .unwrap_or(1)
}

fn flag(on: bool) -> u8 {
    u8::from(on)
}

/// One try of an acquire: `acquire.lua`, `sem_acquire.lua`, `rw_read.lua` or `rw_write.lua`
/// by mode (their replies share one shape).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acquire<'a> {
    pub mode: Mode,
    pub keys: &'a LockKeys,
    pub owner_id: &'a str,
    pub req: &'a str,
    pub ttl: Duration,
    /// The owner may hold the lock more than once.
    pub reentrant: bool,
    /// How long the caller's place lasts if it is refused and queued (zero: not queued).
    pub wait_lease: Duration,
    /// An earlier try of this call may have queued it.
    pub queued: bool,
    /// Holder metadata (JSON) stored with a new grant.
    pub metadata: &'a str,
    /// The number of this try of the call (from 1): a release that makes the caller the
    /// holder names the try whose details it used.
    pub try_no: u32,
}

impl Acquire<'_> {
    /// The script call.
    pub(crate) fn call<'s>(&self, s: &'s Scripts) -> Call<'s> {
        let k = self.keys;
        let ttl_ms = millis(self.ttl);
        match self.mode {
            Mode::Exclusive | Mode::Fair => {
                let mut inv = s.acquire.key(&k.lock);
                inv.key(&k.fence)
                    .key(&k.queue)
                    .key(&k.expiries)
                    .key(&k.next)
                    .key(&k.info)
                    .arg(self.owner_id)
                    .arg(self.req)
                    .arg(ttl_ms)
                    .arg(flag(self.reentrant))
                    .arg(millis(self.wait_lease))
                    .arg(flag(self.queued))
                    .arg(self.metadata)
                    .arg(flag(self.mode == Mode::Fair))
                    .arg(self.try_no);
                inv
            }
            // Permit keys: lock = the permits, queue = their tokens, next = the waiters,
            // expiries = their places' expiries.
            Mode::Permit(capacity) => {
                let mut inv = s.sem_acquire.key(&k.lock);
                inv.key(&k.queue)
                    .key(&k.fence)
                    .key(&k.next)
                    .key(&k.expiries)
                    .key(&k.info)
                    .arg(self.req)
                    .arg(ttl_ms)
                    .arg(capacity)
                    .arg(millis(self.wait_lease))
                    .arg(flag(self.queued))
                    .arg(self.try_no);
                inv
            }
            // Reader keys: lock = readers, queue = their tokens, expiries = the writer,
            // next = the waiting writers.
            Mode::Read => {
                let mut inv = s.rw_read.key(&k.expiries);
                inv.key(&k.lock)
                    .key(&k.queue)
                    .key(&k.next)
                    .key(&k.fence)
                    .arg(self.req)
                    .arg(ttl_ms);
                inv
            }
            // Writer keys: lock = the writer, queue = the waiting writers, expiries =
            // readers, next = their tokens.
            Mode::Write => {
                let mut inv = s.rw_write.key(&k.lock);
                inv.key(&k.expiries)
                    .key(&k.next)
                    .key(&k.queue)
                    .key(&k.fence)
                    .key(&k.order)
                    .key(&k.info)
                    .arg(self.owner_id)
                    .arg(self.req)
                    .arg(ttl_ms)
                    .arg(millis(self.wait_lease))
                    .arg(self.metadata)
                    .arg(self.try_no);
                inv
            }
        }
    }
}

/// A script call's keys and arguments, each encoded.
pub(crate) type CallParts = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// The release of the hold an acquire call (`acquire.lua`'s keys and arguments) was
/// granted: `release.lua`'s keys and arguments (without tags), or `None` if the parts do
/// not have acquire's shape.
pub(crate) fn release_of_acquire(keys: &[Vec<u8>], args: &[Vec<u8>]) -> Option<CallParts> {
    let [lock, fence, queue, expiries, next, info] = keys else {
        return None;
    };
    let [owner, req, ..] = args else {
        return None;
    };
    let keys = vec![
        lock.clone(),
        queue.clone(),
        expiries.clone(),
        next.clone(),
        fence.clone(),
        info.clone(),
    ];
    let args = vec![
        owner.clone(),
        req.clone(),
        RESERVATION_MS.to_string().into_bytes(),
        CLAIM_MS.to_string().into_bytes(),
    ];
    Some((keys, args))
}

/// What an acquire try answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The caller holds it (a new grant, a re-entry, or a retry of a granted call).
    Granted { token: u64, count: u32 },
    /// Held by another (or reserved for a waiter: `reserved`); `pttl` is the waiter's
    /// fallback timer in ms (-2: no timer, wait for a wake-up).
    Refused { pttl: i64, reserved: bool },
}

impl Acquired {
    pub(crate) fn decode(reply: &[i64]) -> Result<Self, Unexpected> {
        match reply {
            [1, token, count, ..] => Ok(Acquired::Granted {
                token: u64::try_from(*token).unwrap_or_default(),
                count: u32::try_from(*count).unwrap_or(u32::MAX),
            }),
            [0, pttl, rest @ ..] => Ok(Acquired::Refused {
                pttl: *pttl,
                reserved: rest.first() == Some(&1),
            }),
            other => Err(Unexpected(format!("unexpected acquire reply {other:?}"))),
        }
    }
}

/// The end of one hold: `release.lua`, `rw_release.lua` or `member_release.lua` by the
/// keys' kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Release<'a> {
    pub keys: &'a LockKeys,
    pub owner_id: &'a str,
    pub req: &'a str,
}

impl Release<'_> {
    /// The script call.
    pub(crate) fn call<'s>(&self, s: &'s Scripts) -> Call<'s> {
        let keys = self.keys;
        match keys.kind {
            Kind::Lock | Kind::FairLock => {
                let mut inv = s.release.key(&keys.lock);
                inv.key(&keys.queue)
                    .key(&keys.expiries)
                    .key(&keys.next)
                    .key(&keys.fence)
                    .key(&keys.info)
                    .arg(self.owner_id)
                    .arg(self.req)
                    .arg(RESERVATION_MS)
                    .arg(CLAIM_MS);
                inv
            }
            Kind::Writer => {
                let mut inv = s.rw_release.key(&keys.lock);
                inv.key(&keys.queue)
                    .key(&keys.order)
                    .key(&keys.info)
                    .key(&keys.fence)
                    .arg(self.owner_id)
                    .arg(self.req)
                    .arg(&keys.channel)
                    .arg(CLAIM_MS);
                inv
            }
            // Readers: the last one hands the lock to the oldest waiting writer (reader
            // keys: expiries = the writer, next = the waiting writers).
            Kind::Member {
                announce_all: false,
                ..
            } => {
                let mut inv = s.rw_read_release.key(&keys.lock);
                inv.key(&keys.queue)
                    .key(&keys.expiries)
                    .key(&keys.next)
                    .key(&keys.order)
                    .key(&keys.info)
                    .key(&keys.fence)
                    .arg(self.req)
                    .arg(&keys.channel)
                    .arg(CLAIM_MS);
                inv
            }
            // Permits: the waiters, the counter, their details and the capacity, to grant
            // the freed permit to the oldest.
            Kind::Member {
                announce_all: true,
                capacity,
            } => {
                let mut inv = s.member_release.key(&keys.lock);
                inv.key(&keys.queue)
                    .key(&keys.next)
                    .key(&keys.expiries)
                    .key(&keys.fence)
                    .key(&keys.info);
                inv.arg(self.req)
                    .arg(&keys.channel)
                    .arg(capacity)
                    .arg(CLAIM_MS);
                inv
            }
        }
    }
}

/// What a release answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// Released, and the lock is free (its next waiter was told).
    Freed,
    /// Released this hold; the owner still holds others.
    StillHeld,
    /// Not held: expired, or this hold had already ended.
    NotHeld,
    /// Held by another owner.
    HeldByOther,
}

impl Released {
    pub(crate) fn decode(reply: &[i64]) -> Self {
        match reply.first() {
            Some(1) => Released::Freed,
            Some(2) => Released::StillHeld,
            Some(-1) => Released::HeldByOther,
            _ => Released::NotHeld,
        }
    }

    /// This call ended the hold.
    pub(crate) fn released(self) -> bool {
        matches!(self, Released::Freed | Released::StillHeld)
    }
}

/// Make one hold last at least `ttl` from now: `extend.lua`, or `member_renew.lua` for a
/// lease-set member.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extend<'a> {
    pub keys: &'a LockKeys,
    pub owner_id: &'a str,
    pub req: &'a str,
    pub ttl: Duration,
}

impl Extend<'_> {
    /// The script call.
    pub(crate) fn call<'s>(&self, s: &'s Scripts) -> Call<'s> {
        if matches!(self.keys.kind, Kind::Member { .. }) {
            let mut inv = s.member_renew.key(&self.keys.lock);
            inv.key(&self.keys.queue)
                .arg(self.req)
                .arg(millis(self.ttl));
            inv
        } else {
            let mut inv = s.extend.key(&self.keys.lock);
            inv.arg(self.owner_id).arg(self.req).arg(millis(self.ttl));
            inv
        }
    }
}

/// What extending or renewing one lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// It lasts at least the TTL asked for, from when the script ran.
    Confirmed,
    /// Not held: expired, or the hold ended.
    NotHeld,
    /// Held by another owner.
    HeldByOther,
}

impl Kept {
    /// One lease's code in an extend or renew reply.
    pub(crate) fn decode(code: i64) -> Self {
        match code {
            1 => Kept::Confirmed,
            -1 => Kept::HeldByOther,
            _ => Kept::NotHeld,
        }
    }

    /// An extend reply (its first element).
    pub(crate) fn decode_extend(reply: &[i64]) -> Self {
        Self::decode(reply.first().copied().unwrap_or(0))
    }
}

/// One lease of a renewal batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RenewItem<'a> {
    pub keys: &'a LockKeys,
    pub owner_id: &'a str,
    pub req: &'a str,
    pub ttl: Duration,
}

/// The renewal of a batch of leases of one kind (`members`: lease-set members, with
/// `member_renew.lua`; else lock hashes, with `renew.lua`), all on one node and slot.
pub(crate) fn renew<'s, 'a>(
    s: &'s Scripts,
    members: bool,
    leases: impl IntoIterator<Item = RenewItem<'a>>,
) -> Call<'s> {
    let mut inv = if members {
        s.member_renew.prepare_invoke()
    } else {
        s.renew.prepare_invoke()
    };
    for l in leases {
        if members {
            inv.key(&l.keys.lock)
                .key(&l.keys.queue)
                .arg(l.req)
                .arg(millis(l.ttl));
        } else {
            inv.key(&l.keys.lock)
                .arg(l.owner_id)
                .arg(l.req)
                .arg(millis(l.ttl));
        }
    }
    inv
}

/// A renewal reply: one outcome per lease, or an error if the count is wrong.
pub(crate) fn decode_renewals(reply: &[i64], leases: usize) -> Result<Vec<Kept>, Unexpected> {
    if reply.len() != leases {
        return Err(Unexpected(format!(
            "unexpected reply of {} codes for {leases} leases",
            reply.len()
        )));
    }
    Ok(reply.iter().map(|c| Kept::decode(*c)).collect())
}

/// A waiter gives up its place: `leave.lua`, or `rw_leave.lua` for a waiting writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leave<'a> {
    pub keys: &'a LockKeys,
    pub req: &'a str,
}

impl Leave<'_> {
    /// The script call. Its reply: 2 if it ended a grant the waiter never took as held,
    /// else 1 or 0, whether there was a place.
    pub(crate) fn call<'s>(&self, s: &'s Scripts) -> Call<'s> {
        let keys = self.keys;
        if keys.kind == Kind::Writer {
            // Writer keys: expiries = the readers.
            let mut inv = s.rw_leave.key(&keys.queue);
            inv.key(&keys.order)
                .key(&keys.info)
                .key(&keys.lock)
                .key(&keys.expiries)
                .key(&keys.fence)
                .arg(self.req)
                .arg(&keys.channel)
                .arg(CLAIM_MS);
            inv
        } else if let Kind::Member {
            announce_all: true,
            capacity,
        } = keys.kind
        {
            let mut inv = s.sem_leave.key(&keys.lock);
            inv.key(&keys.next)
                .key(&keys.expiries)
                .key(&keys.queue)
                .key(&keys.fence)
                .key(&keys.info)
                .arg(self.req)
                .arg(&keys.channel)
                .arg(capacity)
                .arg(CLAIM_MS);
            inv
        } else {
            let mut inv = s.leave.key(&keys.lock);
            inv.key(&keys.queue)
                .key(&keys.expiries)
                .key(&keys.next)
                .key(&keys.fence)
                .key(&keys.info)
                .arg(self.req)
                .arg(RESERVATION_MS)
                .arg(CLAIM_MS);
            inv
        }
    }
}

/// RedLock: raise one node's fencing counter to the token a quorum settled on, while the
/// grant still holds there (`raise_fence.lua`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RaiseFence<'a> {
    pub keys: &'a LockKeys,
    pub owner_id: &'a str,
    pub req: &'a str,
    pub token: u64,
}

impl RaiseFence<'_> {
    /// The script call.
    pub(crate) fn call<'s>(&self, s: &'s Scripts) -> Call<'s> {
        let mut inv = s.raise_fence.key(&self.keys.lock);
        inv.key(&self.keys.fence)
            .arg(self.owner_id)
            .arg(self.req)
            .arg(self.token);
        inv
    }

    /// Whether the node still held the grant and took the token.
    pub(crate) fn raised(reply: &[i64]) -> bool {
        reply.first() == Some(&1)
    }
}

/// Whether a tagged reply is a grant (its first element 1): what `WAIT` must follow.
pub(crate) fn is_grant(reply: &[i64]) -> bool {
    reply.first() == Some(&1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_replies_decode_into_grants_and_refusals() {
        assert_eq!(
            Acquired::decode(&[1, 42, 2, 900]),
            Ok(Acquired::Granted {
                token: 42,
                count: 2
            })
        );
        assert_eq!(
            Acquired::decode(&[0, 120, 1]),
            Ok(Acquired::Refused {
                pttl: 120,
                reserved: true
            })
        );
        assert_eq!(
            Acquired::decode(&[0, -2, 0]),
            Ok(Acquired::Refused {
                pttl: -2,
                reserved: false
            })
        );
        assert!(Acquired::decode(&[7]).is_err());
        assert!(Acquired::decode(&[]).is_err());
    }

    #[test]
    fn release_and_keep_codes_decode_to_distinct_outcomes() {
        assert_eq!(Released::decode(&[1, 0]), Released::Freed);
        assert_eq!(Released::decode(&[2, 3]), Released::StillHeld);
        assert_eq!(Released::decode(&[0, 0]), Released::NotHeld);
        assert_eq!(Released::decode(&[-1]), Released::HeldByOther);
        assert!(Released::StillHeld.released() && !Released::NotHeld.released());
        assert_eq!(Kept::decode_extend(&[1, 5000]), Kept::Confirmed);
        assert_eq!(Kept::decode(-1), Kept::HeldByOther);
        assert_eq!(Kept::decode(0), Kept::NotHeld);
        assert_eq!(
            decode_renewals(&[1, 0, -1], 3),
            Ok(vec![Kept::Confirmed, Kept::NotHeld, Kept::HeldByOther])
        );
        assert!(decode_renewals(&[1, 1], 3).is_err());
    }
}
