//! The twins of leasehold's lock scripts (`acquire.lua`, `release.lua`, `leave.lua`,
//! `renew.lua`, `extend.lua`, `raise_fence.lua`, `force_release.lua` and the prelude
//! functions they call), written call for call over a [`Store`]. Each runs atomically, as
//! Redis runs a script, at one server time; `tests/twins.rs` runs them and the real Lua
//! on a real redis-server over the same generated states and calls and asserts the same
//! replies, keys and announcements.
//!
//! The type checks of the real scripts (all or nothing against keys of a foreign type)
//! are not modelled: a model's keys always have their own types.

use std::collections::BTreeSet;

use crate::store::{Keyed, LockHash, Ms, Store};

/// Places pruned per call (the prelude's `LIMIT 0 64`).
const PRUNE: usize = 64;

/// One script run: the keys, the server time, what it announced on `PREFIX:{NAME}:released`.
pub struct Run<'a> {
    /// The keys the script works on.
    pub store: &'a mut Store,
    now_us: u64,
    /// Messages published on the lock's release channel, in order.
    pub published: Vec<String>,
    /// Seeded bug: release skips its owner and request-id check.
    pub release_without_owner_check: bool,
}

/// The arguments of `acquire.lua`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AcquireArgs {
    /// `ARGV[1]`
    pub owner: String,
    /// `ARGV[2]`
    pub req: String,
    /// `ARGV[3]` (ms)
    pub ttl: i64,
    /// `ARGV[4]`
    pub reentrant: bool,
    /// `ARGV[5]` (ms)
    pub waitms: i64,
    /// `ARGV[6]`
    pub queued: bool,
    /// `ARGV[7]`
    pub meta: String,
    /// `ARGV[8]`
    pub fair: bool,
    /// `ARGV[9]`
    pub try_no: u32,
}

/// The reply of `acquire.lua` (without its tag).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Acquired {
    /// `{1, token, hold_count, pttl}`
    Granted {
        /// The fencing token.
        token: u64,
        /// The owner's hold count.
        count: i64,
        /// The lock's TTL after the call.
        pttl: i64,
    },
    /// `{0, pttl, reserved}`
    Refused {
        /// The holder's or reservation's TTL (-2: none, -1: no TTL).
        pttl: i64,
        /// 1: free but handed to a waiter.
        reserved: i64,
    },
}

impl Acquired {
    /// The reply as the script's list.
    pub fn to_list(&self) -> Vec<i64> {
        match *self {
            Acquired::Granted { token, count, pttl } => vec![1, token as i64, count, pttl],
            Acquired::Refused { pttl, reserved } => vec![0, pttl, reserved],
        }
    }
}

/// What `force_release.lua` removed: owner, token, count, meta, pttl (or empty and -2).
pub type Removed = (String, String, String, String, i64);

/// A waiter's details: try, ttl, owner, meta, the try's server time.
type Details = (String, i64, String, String, Option<u64>);

/// The prelude's `waiter_details` pattern `^(%d+):?(%d*)\n(%d+)\n([^\n]*)\n(.*)$`.
pub fn parse_details(d: &str) -> Option<Details> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n = digits(d);
    if n == 0 {
        return None;
    }
    let (try_no, rest) = d.split_at(n);
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let m = digits(rest);
    let (at, rest) = rest.split_at(m);
    let rest = rest.strip_prefix('\n')?;
    let t = digits(rest);
    if t == 0 {
        return None;
    }
    let (ttl, rest) = rest.split_at(t);
    let rest = rest.strip_prefix('\n')?;
    let (owner, meta) = rest.split_once('\n')?;
    Some((
        try_no.to_string(),
        ttl.parse().ok()?,
        owner.to_string(),
        meta.to_string(),
        at.parse().ok(),
    ))
}

impl<'a> Run<'a> {
    /// A script run at server time `now_us` (µs); keys that expired by then are gone.
    pub fn new(store: &'a mut Store, now_us: u64) -> Self {
        store.expire(now_us / 1000);
        Self {
            store,
            now_us,
            published: Vec::new(),
            release_without_owner_check: false,
        }
    }

    fn now_ms(&self) -> Ms {
        self.now_us / 1000
    }

    fn publish(&mut self, msg: String) {
        self.published.push(msg);
    }

    // ---- prelude ----

    /// `next_token`: above the counter and at least the server clock in µs.
    fn next_token(&mut self) -> u64 {
        let last = self.store.fence.unwrap_or(0);
        let token = if last >= self.now_us {
            last + 1
        } else {
            self.now_us
        };
        self.store.fence = Some(token);
        token
    }

    fn dequeue_waiter(&mut self, req: &str, info: bool) -> bool {
        let had = Store::zrem(&mut self.store.queue, req);
        Store::zrem(&mut self.store.expiries, req);
        if info {
            self.store.hdel_info(req);
        }
        had
    }

    fn prune_lapsed(&mut self, now: Ms) {
        let dead: Vec<String> = Store::ordered(&self.store.expiries)
            .into_iter()
            .filter(|(_, s)| *s <= now)
            .take(PRUNE)
            .map(|(m, _)| m)
            .collect();
        for id in dead {
            self.dequeue_waiter(&id, true);
        }
    }

    fn waiter_details(&self, req: &str) -> Option<Details> {
        let d = self.store.info.as_ref()?.value.get(req)?;
        parse_details(d)
    }

    fn try_field(&self, try_no: u32) -> String {
        format!("{try_no}:{}", self.now_ms())
    }

    fn announce_grant(&mut self, head: &[String], token: u64, try_no: &str, at: Option<u64>) {
        let now = self.now_ms();
        let mut msg = format!("{} {token} {try_no}", head[0]);
        if let Some(at) = at {
            if now >= at {
                msg += &format!(":{}", now - at);
            }
        }
        if let Some(next) = head.get(1) {
            msg += &format!(" {next}");
        }
        self.publish(msg);
    }

    fn make_holder(
        &mut self,
        req: &str,
        owner: String,
        meta: String,
        ttl: i64,
        claimms: i64,
    ) -> u64 {
        let token = self.next_token();
        let now = self.now_ms();
        let mut lock = Keyed::persistent(LockHash {
            owner,
            token,
            count: 1,
            reqs: BTreeSet::from([req.to_string()]),
            meta,
        });
        // HSET on an existing hash keeps its TTL; the PEXPIRE follows at once either way.
        lock.expire_at = self.store.lock.as_ref().and_then(|l| l.expire_at);
        lock.pexpire(now, ttl.min(claimms));
        self.store.lock = Some(lock);
        token
    }

    fn enqueue(&mut self, req: &str, waitms: i64) {
        if waitms <= 0 {
            return;
        }
        let now = self.now_us;
        let now_ms = self.now_ms();
        let queued = self
            .store
            .queue
            .as_ref()
            .is_some_and(|q| q.value.contains_key(req));
        if !queued {
            let last = Store::ordered(&self.store.queue).last().map(|(_, s)| *s);
            let place = match last {
                Some(l) if l >= now => l + 1,
                _ => now,
            };
            self.store
                .queue
                .get_or_insert_with(|| Keyed::persistent(Default::default()))
                .value
                .insert(req.to_string(), place);
        }
        if let Some(q) = &mut self.store.queue {
            q.at_least(now_ms, waitms);
        }
        let e = self
            .store
            .expiries
            .get_or_insert_with(|| Keyed::persistent(Default::default()));
        e.value
            .insert(req.to_string(), (now_ms as i64 + waitms) as u64);
        e.at_least(now_ms, waitms);
    }

    fn handoff(&mut self, reservems: i64, claimms: i64) {
        let now = self.now_ms();
        self.prune_lapsed(now);
        let head: Vec<String> = Store::ordered(&self.store.queue)
            .into_iter()
            .take(2)
            .map(|(m, _)| m)
            .collect();
        if head.is_empty() {
            self.store.next = None;
            return;
        }
        let Some((try_no, ttl, owner, meta, at)) = self.waiter_details(&head[0]) else {
            let mut next = Keyed::persistent(head[0].clone());
            next.pexpire(now, reservems);
            self.store.next = Some(next);
            self.publish(head[0].clone());
            return;
        };
        let token = self.make_holder(&head[0], owner, meta, ttl, claimms);
        self.store.next = None;
        self.dequeue_waiter(&head[0], true);
        self.announce_grant(&head, token, &try_no, at);
    }

    fn lock_pttl(&self) -> i64 {
        self.store
            .lock
            .as_ref()
            .map_or(-2, |l| l.pttl(self.now_ms()))
    }

    // ---- scripts ----

    /// `acquire.lua`.
    pub fn acquire(&mut self, a: &AcquireArgs) -> Acquired {
        let now = self.now_ms();
        let held = self.store.lock.as_ref().map(|l| {
            (
                l.value.owner.clone(),
                l.value.token,
                l.value.count,
                l.value.reqs.contains(&a.req),
            )
        });
        let Some((holder, token, count, has_req)) = held else {
            let reserved = self.store.next.as_ref().map(|n| n.value.clone());
            if let Some(r) = &reserved {
                if *r != a.req {
                    let pttl = self.store.next.as_ref().map_or(-2, |n| n.pttl(now));
                    return self.refuse(a, pttl, 1);
                }
            }
            if a.fair && reserved.is_none() {
                self.prune_lapsed(now);
                let first = |s: &Store| Store::ordered(&s.queue).first().map(|(m, _)| m.clone());
                let mut head = first(self.store);
                for _ in 0..64 {
                    let Some(h) = &head else { break };
                    let has_exp = self
                        .store
                        .expiries
                        .as_ref()
                        .is_some_and(|e| e.value.contains_key(h));
                    if *h == a.req || has_exp {
                        break;
                    }
                    let h = h.clone();
                    Store::zrem(&mut self.store.queue, &h);
                    self.store.hdel_info(&h);
                    head = first(self.store);
                }
                if head.is_some_and(|h| h != a.req) {
                    return self.refuse(a, -2, 1);
                }
            }
            let token = self.next_token();
            if reserved.is_some() {
                self.store.next = None;
            }
            let mut lock = Keyed::persistent(LockHash {
                owner: a.owner.clone(),
                token,
                count: 1,
                reqs: BTreeSet::from([a.req.clone()]),
                meta: a.meta.clone(),
            });
            lock.pexpire(now, a.ttl);
            self.store.lock = Some(lock);
            self.dequeue_own(a);
            return Acquired::Granted {
                token,
                count: 1,
                pttl: a.ttl,
            };
        };
        if holder == a.owner {
            let mut pttl = self.lock_pttl();
            if has_req {
                if pttl < a.ttl {
                    pttl = a.ttl;
                }
                if let Some(l) = &mut self.store.lock {
                    l.pexpire(now, pttl);
                }
                self.dequeue_own(a);
                return Acquired::Granted { token, count, pttl };
            }
            if a.reentrant {
                let l = self.store.lock.as_mut().expect("held");
                l.value.count += 1;
                let count = l.value.count;
                l.value.reqs.insert(a.req.clone());
                if pttl < a.ttl {
                    l.pexpire(now, a.ttl);
                    pttl = a.ttl;
                }
                self.dequeue_own(a);
                return Acquired::Granted { token, count, pttl };
            }
        }
        let pttl = self.lock_pttl();
        self.refuse(a, pttl, 0)
    }

    fn dequeue_own(&mut self, a: &AcquireArgs) {
        if a.queued && Store::zrem(&mut self.store.queue, &a.req) {
            Store::zrem(&mut self.store.expiries, &a.req);
            self.store.hdel_info(&a.req);
        }
    }

    fn refuse(&mut self, a: &AcquireArgs, pttl: i64, reserved: i64) -> Acquired {
        self.enqueue(&a.req, a.waitms);
        if a.waitms > 0 {
            let now = self.now_ms();
            let details = format!(
                "{}\n{}\n{}\n{}",
                self.try_field(a.try_no),
                a.ttl,
                a.owner,
                a.meta
            );
            let info = self
                .store
                .info
                .get_or_insert_with(|| Keyed::persistent(Default::default()));
            info.value.insert(a.req.clone(), details);
            info.at_least(now, a.waitms);
        }
        Acquired::Refused { pttl, reserved }
    }

    /// `release.lua`: `(code, n)`.
    pub fn release(&mut self, owner: &str, req: &str, reservems: i64, claimms: i64) -> (i64, i64) {
        let Some(l) = &self.store.lock else {
            return (0, 0);
        };
        if !self.release_without_owner_check {
            if l.value.owner != owner {
                return (-1, 0);
            }
            if !l.value.reqs.contains(req) {
                return (0, 0);
            }
        }
        let count = l.value.count - 1;
        if count > 0 {
            let l = self.store.lock.as_mut().expect("held");
            l.value.reqs.remove(req);
            l.value.count = count;
            return (2, count);
        }
        self.store.lock = None;
        if self.store.queue.is_some() {
            self.handoff(reservems, claimms);
        }
        (1, 0)
    }

    /// `leave.lua`: 2 ended a grant to this waiter, 1 queued or reserved, else 0.
    pub fn leave(&mut self, req: &str, reservems: i64, claimms: i64) -> i64 {
        let queued = self.dequeue_waiter(req, true);
        let granted = self
            .store
            .lock
            .as_ref()
            .is_some_and(|l| l.value.reqs.contains(req));
        if granted {
            let l = self.store.lock.as_mut().expect("held");
            l.value.count -= 1;
            if l.value.count <= 0 {
                self.store.lock = None;
            } else {
                l.value.reqs.remove(req);
            }
            self.hand_on(reservems, claimms);
            return 2;
        }
        if self.store.next.as_ref().is_some_and(|n| n.value == req) {
            self.store.next = None;
            self.hand_on(reservems, claimms);
            return 1;
        }
        i64::from(queued)
    }

    fn hand_on(&mut self, reservems: i64, claimms: i64) {
        if self.store.lock.is_none() && self.store.queue.is_some() {
            self.handoff(reservems, claimms);
        }
    }

    /// One lease of `renew.lua`: 1 renewed, 0 expired or ended, -1 held by another owner.
    pub fn renew(&mut self, owner: &str, req: &str, ttl: i64) -> i64 {
        let now = self.now_ms();
        match &mut self.store.lock {
            Some(l) if l.value.reqs.contains(req) => {
                l.at_least(now, ttl);
                1
            }
            Some(l) if l.value.owner != owner => -1,
            _ => 0,
        }
    }

    /// `extend.lua`: `(code, pttl)`.
    pub fn extend(&mut self, owner: &str, req: &str, ttl: i64) -> (i64, i64) {
        let now = self.now_ms();
        match &mut self.store.lock {
            Some(l) if l.value.reqs.contains(req) => {
                let mut pttl = l.pttl(now);
                if pttl < ttl {
                    l.pexpire(now, ttl);
                    pttl = ttl;
                }
                (1, pttl)
            }
            Some(l) if l.value.owner != owner => (-1, 0),
            _ => (0, 0),
        }
    }

    /// `raise_fence.lua`: 1 raised (the hold's token set), 0 not held here.
    pub fn raise_fence(&mut self, owner: &str, req: &str, token: u64) -> i64 {
        let Some(l) = &mut self.store.lock else {
            return 0;
        };
        if l.value.owner != owner || !l.value.reqs.contains(req) {
            return 0;
        }
        l.value.token = token;
        if self.store.fence.unwrap_or(0) < token {
            self.store.fence = Some(token);
        }
        1
    }

    /// `force_release.lua`.
    pub fn force_release(&mut self, reservems: i64, claimms: i64) -> Removed {
        let Some(l) = self.store.lock.take() else {
            return (
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                -2,
            );
        };
        let pttl = l.pttl(self.now_ms());
        if self.store.queue.is_some() {
            self.handoff(reservems, claimms);
        }
        (
            l.value.owner,
            l.value.token.to_string(),
            l.value.count.to_string(),
            l.value.meta,
            pttl,
        )
    }
}

/// A grant message's fields: request id, token, try, WAITED, NEXT.
pub type Grant = (String, u64, u32, Option<u64>, Option<String>);

/// A grant announced on the release channel, `REQ TOKEN TRY[:WAITED] [NEXT]`: the waiter
/// made the holder, its token, the try whose details the release used, the server time
/// from that try to the grant, and the waiter after it. `None` for the other messages
/// (`REQ`: a reservation for REQ; empty: everyone retry).
pub fn parse_grant(msg: &str) -> Option<Grant> {
    let mut parts = msg.split(' ');
    let req = parts.next()?.to_string();
    let token = parts.next()?.parse().ok()?;
    let field = parts.next()?;
    let (try_no, waited) = match field.split_once(':') {
        Some((t, w)) => (t.parse().ok()?, w.parse().ok()),
        None => (field.parse().ok()?, None),
    };
    Some((req, token, try_no, waited, parts.next().map(str::to_string)))
}
