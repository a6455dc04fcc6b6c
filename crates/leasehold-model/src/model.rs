//! The protocol model: Redis servers that apply the script twins atomically, clients that
//! follow leasehold's client rules (PROTOCOL.md), and everything between them.
//!
//! - **Time** is discrete (one tick stands for any span; the scripts read it as ms, and as
//!   µs for fencing tokens). Server TTLs expire by it. Each client reads a monotonic clock
//!   that may run slow: at most `clock_lag` ticks behind true time over the whole run,
//!   the drift the lease arithmetic allows for (`drift` per lease).
//! - **Connections**: each request travels on the client's current connection to a node;
//!   the server runs it whenever it arrives, its reply arrives whenever the client is
//!   scheduled to read it. A request, or the reply to it, may be *lost* (budget `lost`),
//!   or the reply may arrive *late*, after the client's response timeout (budget `late`).
//!   The fate of a reply is chosen in the step in which the server runs its request: a
//!   reply that will be lost is never seen, whenever it would have been dropped, and one
//!   that will be late is held back past a tick; so reading a reply is never in a race
//!   with a fault, which lets [`Protocol::ample`] read some replies without trying every
//!   order, and a fault waiting in flight adds no states of its own.
//!   A client whose reply does not come abandons the connection, closes it at the server
//!   (`CLIENT KILL`: whatever the old connection carried either ran already or never
//!   will) and re-sends the same request on a fresh connection.
//! - **Pub/sub**: releases announce grants to subscribed waiters, in order; a message may
//!   be lost (budget `lost_messages`).
//! - **Faults of clients**: a client may *pause* between its check of the lease and its
//!   write to the fenced resource (the write lands any time later; budget `pauses`), or
//!   *crash* for good (budget `crashes`).
//!
//! One node: every client runs `acquires` calls of acquire (waiting: queued at the server,
//! woken by releases, made the holder by a release's handoff), write, release. Three nodes:
//! the same calls as RedLock rounds (quorum, fence raising, releases of failed rounds).

use std::fmt;

use stateright::{Model, Property};

use crate::bugs::Bug;
use crate::scripts::{parse_grant, AcquireArgs, Acquired, Run};
use crate::store::Store;

/// What is modelled, and how much of each fault.
#[derive(Clone, Debug)]
pub struct Config {
    /// Number of clients.
    pub clients: usize,
    /// Acquire calls per client (each followed by a write and a release).
    pub acquires: u8,
    /// 1: one server (waiting and handoff); 3: RedLock over three masters.
    pub nodes: usize,
    /// The lease asked for (ticks).
    pub ttl: u64,
    /// The claim window of a handoff grant (ticks).
    pub claim: u64,
    /// The drift allowance subtracted from every lease (ticks).
    pub drift: u64,
    /// How far a client's clock may fall behind true time over the run (ticks).
    pub clock_lag: u8,
    /// A client's response timeout (ticks).
    pub response_timeout: u64,
    /// How long an acquire call waits (ticks).
    pub wait: u64,
    /// The reservation for a waiter without details (unused by these clients; ticks).
    pub reserve: u64,
    /// True time stops advancing here (bounds the state space).
    pub horizon: u64,
    /// Replies that may be lost.
    pub lost: u8,
    /// Replies that may arrive after the response timeout.
    pub late: u8,
    /// Pub/sub messages that may be lost.
    pub lost_messages: u8,
    /// Writes that may land late (a client paused after checking its lease).
    pub pauses: u8,
    /// Clients that may crash.
    pub crashes: u8,
    /// A seeded bug, if any.
    pub bug: Option<Bug>,
    /// Check liveness (a fair run from every state) within this many steps, or not at all.
    pub liveness_steps: Option<usize>,
    /// Explore one order of the steps that [`Protocol::ample`] shows need no other
    /// (partial-order reduction; one server, without liveness and crashes only).
    pub reduce: bool,
}

impl Config {
    /// The bound `scripts/test` checks: 3 clients, 2 acquire calls each, 1 lost and 1
    /// late reply, 1 lost message, 1 pause, 1 crash, on one server.
    pub fn ci() -> Self {
        Config {
            clients: 3,
            acquires: 2,
            nodes: 1,
            ttl: 4,
            claim: 2,
            drift: 1,
            clock_lag: 1,
            response_timeout: 3,
            wait: 10,
            reserve: 1,
            horizon: 9,
            lost: 1,
            late: 1,
            lost_messages: 1,
            pauses: 1,
            crashes: 1,
            bug: None,
            liveness_steps: Some(400),
            reduce: true,
        }
    }

    /// RedLock over three masters at the CI bound.
    pub fn redlock_ci() -> Self {
        Config {
            nodes: 3,
            clients: 2,
            acquires: 1,
            horizon: 3,
            lost_messages: 0,
            crashes: 0,
            liveness_steps: None,
            ..Config::ci()
        }
    }

    fn quorum(&self) -> usize {
        self.nodes / 2 + 1
    }
}

/// A script call as sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    /// `acquire.lua`.
    Acquire {
        /// Request id.
        req: String,
        /// Try number.
        try_no: u32,
        /// Wait lease (ticks; 0 = do not queue).
        waitms: i64,
        /// A previous try was refused.
        queued: bool,
    },
    /// `release.lua`.
    Release(String),
    /// `leave.lua`.
    Leave(String),
    /// `renew.lua` (one lease): the confirmation of a handoff grant.
    Renew(String),
    /// `raise_fence.lua`.
    RaiseFence(String, u64),
}

/// A script's reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reply {
    /// From acquire: granted (token, count) or refused (pttl).
    Acquired(Option<(u64, i64)>, i64),
    /// From release, leave, renew, raise_fence: the code.
    Code(i64),
}

/// Something in flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Packet {
    /// A request of client `client` to `node`, on the client's current connection to it
    /// (a client closes a connection before it opens the next one, and what the closed
    /// one carried is gone: everything in flight is on the current connection).
    Request {
        /// Client.
        client: usize,
        /// Node.
        node: usize,
        /// The call.
        call: Call,
    },
    /// Its reply.
    Reply {
        /// Client.
        client: usize,
        /// Node.
        node: usize,
        /// The reply.
        reply: Reply,
        /// Held back past a tick (the late-reply fault).
        late: bool,
    },
    /// A write to the fenced resource, delayed by a pause.
    Write {
        /// Client.
        client: usize,
        /// Fencing token.
        token: u64,
        /// The grant's place in the order of grants.
        seq: u8,
    },
}

/// Per-node state of a RedLock round or release.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// Nothing asked (or it answered "nothing there").
    Idle,
    /// Sent at this client time, no answer yet.
    Pending(u64),
    /// Granted with this token.
    Granted(u64),
    /// Refused, or done.
    Done,
}

/// Where a client is in its program.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Between calls.
    Idle,
    /// An acquire try is in flight.
    Trying {
        /// Request id of the call.
        req: String,
        /// This try's number.
        try_no: u32,
        /// Its first send time (client clock).
        sent: u64,
        /// Its last send time (a re-send after a timeout keeps the try's number and first
        /// send time).
        last: u64,
        /// When the call started (client clock).
        start: u64,
        /// A previous try was refused.
        queued: bool,
    },
    /// Refused; waiting for a message or a timer.
    Waiting {
        /// Request id.
        req: String,
        /// The last try's number.
        try_no: u32,
        /// When to try again (client clock).
        wake: u64,
        /// When the call started.
        start: u64,
    },
    /// The client believes it holds the lock until `deadline` (client clock).
    Holding {
        /// Request id.
        req: String,
        /// Fencing token.
        token: u64,
        /// Local deadline.
        deadline: u64,
        /// A handoff grant not confirmed yet.
        provisional: bool,
        /// The confirmation in flight: its send time.
        confirming: Option<u64>,
        /// The grant's place in the order of grants.
        seq: u8,
    },
    /// A release (or a leave) is in flight on these nodes.
    Releasing {
        /// Request id.
        req: String,
        /// Per node.
        parts: Vec<Part>,
        /// A leave of a waiting call (reports "not acquired" when done).
        leave: bool,
        /// After a failed RedLock round: retry the call.
        retry: Option<u64>,
    },
    /// A RedLock round is in flight.
    Round {
        /// Request id of the round.
        req: String,
        /// Round start (client clock).
        start: u64,
        /// Call start.
        call: u64,
        /// Per node.
        parts: Vec<Part>,
        /// The raise of the fences, once the grants disagreed: the token.
        raising: Option<u64>,
    },
    /// A failed RedLock round: the next one starts at `at` (client clock).
    Backoff {
        /// When.
        at: u64,
        /// Call start.
        call: u64,
    },
    /// Crashed for good.
    Crashed,
    /// Every call done.
    Done,
}

/// A client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    /// How far its clock is behind true time.
    pub lag: u8,
    /// Acquire calls started.
    pub calls: u8,
    /// Where it is.
    pub phase: Phase,
    /// Subscribed to the lock's channel (during a waiting call).
    pub subscribed: bool,
    /// Messages heard, not yet read.
    pub inbox: Vec<String>,
    /// The refused tries of the current call: (try number, send time).
    pub tries: Vec<(u32, u64)>,
    /// Request ids it reported "not acquired" for.
    pub refused: Vec<String>,
    /// Fresh ids used (for the seeded fresh-id bug).
    pub fresh: u8,
}

/// A broken property, recorded when the step that breaks it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Flags {
    /// A grant taken as held with a token not above every earlier grant's.
    pub token_order: bool,
    /// The resource accepted an older grant's write after a newer one's.
    pub stale_write: bool,
    /// A grant reply's hold count differed from the caller's unreleased acquire calls.
    pub count: bool,
    /// "Not acquired" reported while the server held the request.
    pub misreported: bool,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// True time (and the servers' clock).
    pub now: u64,
    /// The lock's keys on each node.
    pub nodes: Vec<Store>,
    /// The clients.
    pub clients: Vec<Client>,
    /// In flight (kept sorted).
    pub net: Vec<Packet>,
    /// Faults used: lost, late, lost messages, pauses, crashes.
    pub used: [u8; 5],
    /// The largest token a grant was taken as held with, and grants so far.
    pub last_token: u64,
    /// Grants taken as held so far.
    pub grants: u8,
    /// The fenced resource: the largest token accepted, and that grant's place.
    pub resource: (u64, u8),
    /// Broken properties.
    pub flags: Flags,
}

/// A step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// True time advances; client `Some(c)`'s clock does not (it falls behind).
    Tick(Option<usize>),
    /// The server runs request `net[i]`, or the client reads reply `net[i]`, or the
    /// resource takes write `net[i]`.
    Deliver(usize),
    /// Request `net[i]` is lost (a reset connection, before the server ran it).
    Lose(usize),
    /// The server runs request `net[i]`, and its reply is lost (a reset connection after
    /// the server ran it).
    LoseReply(usize),
    /// The server runs request `net[i]`, and its reply is held back past the next tick (a
    /// late reply).
    Delay(usize),
    /// Client `c` takes its next step.
    Step(usize),
    /// Client `c` pauses after its lease check: its write lands later.
    PauseWrite(usize),
    /// Client `c` gives up on an unanswered request (closes the connection, re-sends).
    Timeout(usize),
    /// Client `c`'s first unread message is lost.
    LoseMessage(usize),
    /// Client `c` crashes.
    Crash(usize),
}

/// What becomes of the reply to a request the server runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// It reaches the client in the same tick.
    Arrives,
    /// It is lost.
    Lost,
    /// It is held back past a tick.
    Late,
}

const LOST: usize = 0;
const LATE: usize = 1;
const LOST_MSG: usize = 2;
const PAUSE: usize = 3;
const CRASH: usize = 4;

/// The model of `Config`.
#[derive(Clone, Debug)]
pub struct Protocol {
    /// What is modelled.
    pub cfg: Config,
}

/// The call that ends request `req`: a leave for a waiting call, else a release.
fn release_call(req: &str, leave: bool) -> Call {
    if leave {
        Call::Leave(req.to_string())
    } else {
        Call::Release(req.to_string())
    }
}

fn owner(c: usize) -> String {
    format!("o{c}")
}

impl Protocol {
    /// The model of `cfg`.
    pub fn new(cfg: Config) -> Self {
        Self { cfg }
    }

    fn bug(&self, b: Bug) -> bool {
        self.cfg.bug == Some(b)
    }

    /// Client `c`'s clock.
    pub fn local(&self, s: &State, c: usize) -> u64 {
        s.now - u64::from(s.clients[c].lag)
    }

    /// Whether a client's clock may fall behind now: only while it is in a call. A client
    /// compares its clock with nothing but times it read from the same clock (send
    /// times, deadlines, timers) and sends only durations, so a client whose clock falls
    /// behind between calls behaves as one whose clock did not, only with less of the
    /// drift left for later: exploring that adds states and no behaviour.
    fn keeps_time(&self, c: &Client) -> bool {
        !matches!(c.phase, Phase::Idle | Phase::Done | Phase::Crashed)
    }

    /// Whether client `c` believes it holds the lock now.
    pub fn believes(&self, s: &State, c: usize) -> bool {
        matches!(&s.clients[c].phase, Phase::Holding { deadline, .. } if self.local(s, c) < *deadline)
    }

    fn send(&self, s: &mut State, c: usize, node: usize, call: Call) {
        s.net.push(Packet::Request {
            client: c,
            node,
            call,
        });
    }

    /// Close client `c`'s connection to `node` at the server and open a fresh one:
    /// whatever the old one carried is gone.
    fn reconnect(&self, s: &mut State, c: usize, node: usize) {
        s.net.retain(|p| match p {
            Packet::Request {
                client, node: n, ..
            }
            | Packet::Reply {
                client, node: n, ..
            } => !(*client == c && *n == node),
            Packet::Write { .. } => true,
        });
    }

    fn new_req(&self, s: &mut State, c: usize) -> String {
        let cl = &mut s.clients[c];
        cl.fresh += 1;
        format!("c{c}q{}", cl.fresh)
    }

    fn acquire_call(
        &self,
        s: &State,
        c: usize,
        req: &str,
        try_no: u32,
        start: u64,
        queued: bool,
    ) -> Call {
        let waitms = if self.cfg.nodes == 1 {
            (start + self.cfg.wait).saturating_sub(self.local(s, c)) as i64 + 1
        } else {
            0
        };
        Call::Acquire {
            req: req.to_string(),
            try_no,
            waitms,
            queued,
        }
    }

    fn start_try(
        &self,
        s: &mut State,
        c: usize,
        req: String,
        try_no: u32,
        start: u64,
        queued: bool,
    ) {
        let call = self.acquire_call(s, c, &req, try_no, start, queued);
        self.send(s, c, 0, call);
        let now = self.local(s, c);
        s.clients[c].phase = Phase::Trying {
            req,
            try_no,
            sent: now,
            last: now,
            start,
            queued,
        };
    }

    /// Client `c` takes a grant with `token` as held until `deadline`.
    fn hold(
        &self,
        s: &mut State,
        c: usize,
        req: String,
        token: u64,
        deadline: u64,
        provisional: bool,
    ) {
        // Only a grant taken while its deadline is ahead counts: one taken after it (a
        // late reply) is never relied on, and never written with.
        let mut seq = 0;
        if self.local(s, c) < deadline {
            if token <= s.last_token {
                s.flags.token_order = true;
            }
            s.last_token = s.last_token.max(token);
            s.grants += 1;
            seq = s.grants;
        }
        let c_ = &mut s.clients[c];
        c_.subscribed = false;
        c_.inbox.clear();
        c_.tries.clear();
        c_.phase = Phase::Holding {
            req,
            token,
            deadline,
            provisional,
            confirming: None,
            seq,
        };
    }

    /// Client `c` (holding a handoff grant) sends the renewal that confirms it.
    fn confirm(&self, s: &mut State, c: usize) {
        let now = self.local(s, c);
        if let Phase::Holding {
            req, confirming, ..
        } = &mut s.clients[c].phase
        {
            *confirming = Some(now);
            let call = Call::Renew(req.clone());
            self.send(s, c, 0, call);
        }
    }

    fn end_call(&self, s: &mut State, c: usize) {
        let cl = &mut s.clients[c];
        cl.subscribed = false;
        cl.inbox.clear();
        cl.tries.clear();
        cl.phase = if cl.calls >= self.cfg.acquires {
            Phase::Done
        } else {
            Phase::Idle
        };
    }

    fn release_all(
        &self,
        s: &mut State,
        c: usize,
        req: String,
        leave: bool,
        retry: Option<u64>,
        only: Option<&[Part]>,
    ) {
        let now = self.local(s, c);
        let mut parts = Vec::new();
        for node in 0..self.cfg.nodes {
            let ask = only.is_none_or(|p| !matches!(p[node], Part::Idle | Part::Done));
            if ask {
                // RedLock: a straggler of the round may still be in flight; the release
                // goes on a fresh connection, after closing the old one (the straggler
                // ran before, and is taken back by this release, or never runs).
                if self.cfg.nodes > 1 {
                    self.reconnect(s, c, node);
                }
                self.send(s, c, node, release_call(&req, leave));
                parts.push(Part::Pending(now));
            } else {
                parts.push(Part::Idle);
            }
        }
        if parts.iter().all(|p| *p == Part::Idle) {
            self.after_release(s, c, req, leave, retry);
            return;
        }
        s.clients[c].phase = Phase::Releasing {
            req,
            parts,
            leave,
            retry,
        };
    }

    /// A release (or leave) is done: the call ends, or a failed RedLock round is retried
    /// after a backoff (one tick) while the call's wait lasts.
    fn after_release(&self, s: &mut State, c: usize, req: String, leave: bool, retry: Option<u64>) {
        let now = self.local(s, c);
        match retry {
            Some(call) if now + 1 < call + self.cfg.wait => {
                s.clients[c].phase = Phase::Backoff { at: now + 1, call };
            }
            _ => {
                if leave || retry.is_some() {
                    s.clients[c].refused.push(req);
                }
                self.end_call(s, c);
            }
        }
    }

    fn start_round(&self, s: &mut State, c: usize, call: u64) {
        let req = self.new_req(s, c);
        let now = self.local(s, c);
        for node in 0..self.cfg.nodes {
            let call = self.acquire_call(s, c, &req, 1, now, false);
            self.send(s, c, node, call);
        }
        s.clients[c].phase = Phase::Round {
            req,
            start: now,
            call,
            parts: vec![Part::Pending(now); self.cfg.nodes],
            raising: None,
        };
    }

    /// Run request `call` of client `c` on `node` (atomically, at true time).
    fn execute(&self, s: &mut State, c: usize, node: usize, call: &Call) -> Reply {
        let cfg = &self.cfg;
        let own = owner(c);
        let now_us = s.now * 1000;
        let mut run = Run::new(&mut s.nodes[node], now_us);
        run.release_without_owner_check = self.bug(Bug::ReleaseWithoutOwnerCheck);
        let reply = match call {
            Call::Acquire {
                req,
                try_no,
                waitms,
                queued,
            } => {
                let a = AcquireArgs {
                    owner: own,
                    req: req.clone(),
                    ttl: cfg.ttl as i64,
                    reentrant: true,
                    waitms: *waitms,
                    queued: *queued,
                    meta: String::new(),
                    fair: false,
                    try_no: *try_no,
                };
                match run.acquire(&a) {
                    Acquired::Granted { token, count, .. } => {
                        Reply::Acquired(Some((token, count)), 0)
                    }
                    Acquired::Refused { pttl, .. } => Reply::Acquired(None, pttl),
                }
            }
            Call::Release(req) => Reply::Code(
                run.release(&own, req, cfg.reserve as i64, cfg.claim as i64)
                    .0,
            ),
            Call::Leave(req) => Reply::Code(run.leave(req, cfg.reserve as i64, cfg.claim as i64)),
            Call::Renew(req) => Reply::Code(run.renew(&own, req, cfg.ttl as i64)),
            Call::RaiseFence(req, token) => Reply::Code(run.raise_fence(&own, req, *token)),
        };
        let published = std::mem::take(&mut run.published);
        for msg in published {
            for cl in s.clients.iter_mut() {
                if cl.subscribed {
                    cl.inbox.push(msg.clone());
                }
            }
        }
        reply
    }

    fn write(&self, s: &mut State, token: u64, seq: u8) {
        if token >= s.resource.0 {
            if seq < s.resource.1 {
                s.flags.stale_write = true;
            }
            s.resource = (token, seq);
        }
    }

    /// Client `c` reads the reply of `node`.
    fn on_reply(&self, s: &mut State, c: usize, node: usize, reply: Reply) {
        let cfg = &self.cfg;
        let now = self.local(s, c);
        let phase = s.clients[c].phase.clone();
        match (phase, reply) {
            (
                Phase::Trying {
                    req,
                    try_no,
                    sent,
                    start,
                    ..
                },
                Reply::Acquired(granted, pttl),
            ) => match granted {
                Some((token, count)) => {
                    if count != 1 {
                        s.flags.count = true;
                    }
                    let from = if self.bug(Bug::DeadlineFromReceipt) {
                        now
                    } else {
                        sent
                    };
                    let deadline = from + cfg.ttl - cfg.drift;
                    self.hold(s, c, req, token, deadline, false);
                }
                None => {
                    s.clients[c].tries.push((try_no, sent));
                    if now >= start + cfg.wait {
                        self.release_all(s, c, req, true, None, None);
                        return;
                    }
                    let cl = &mut s.clients[c];
                    // The first refusal subscribes, then tries again at once.
                    let wake = if cl.subscribed {
                        now + (pttl.max(1) as u64)
                    } else {
                        now
                    };
                    cl.subscribed = true;
                    cl.phase = Phase::Waiting {
                        req,
                        try_no,
                        wake,
                        start,
                    };
                }
            },
            (
                Phase::Holding {
                    req,
                    token,
                    deadline,
                    provisional: true,
                    confirming: Some(sent),
                    seq,
                },
                Reply::Code(code),
            ) => {
                let deadline = if code == 1 {
                    deadline.max(sent + cfg.ttl - cfg.drift)
                } else {
                    0 // lost: it stops relying on the lock at once
                };
                s.clients[c].phase = Phase::Holding {
                    req,
                    token,
                    deadline,
                    provisional: false,
                    confirming: None,
                    seq,
                };
            }
            (
                Phase::Releasing {
                    req,
                    mut parts,
                    leave,
                    retry,
                },
                Reply::Code(_),
            ) => {
                parts[node] = Part::Done;
                if leave
                    && s.nodes[node]
                        .lock
                        .as_ref()
                        .is_some_and(|l| l.value.reqs.contains(&req))
                {
                    s.flags.misreported = true;
                }
                if parts.iter().any(|p| matches!(p, Part::Pending(_))) {
                    s.clients[c].phase = Phase::Releasing {
                        req,
                        parts,
                        leave,
                        retry,
                    };
                    return;
                }
                self.after_release(s, c, req, leave, retry);
            }
            (
                Phase::Round {
                    req,
                    start,
                    call,
                    mut parts,
                    raising,
                },
                reply,
            ) => {
                parts[node] = match (raising, reply) {
                    (None, Reply::Acquired(Some((token, _)), _)) => Part::Granted(token),
                    (Some(t), Reply::Code(1)) => Part::Granted(t),
                    _ => Part::Done,
                };
                s.clients[c].phase = Phase::Round {
                    req,
                    start,
                    call,
                    parts,
                    raising,
                };
            }
            _ => {}
        }
    }

    /// The RedLock round of client `c` decides, if it can.
    fn decide_round(&self, s: &mut State, c: usize) -> bool {
        let cfg = &self.cfg;
        let now = self.local(s, c);
        let Phase::Round {
            req,
            start,
            call,
            parts,
            raising,
        } = s.clients[c].phase.clone()
        else {
            return false;
        };
        let granted: Vec<u64> = parts
            .iter()
            .filter_map(|p| {
                if let Part::Granted(t) = p {
                    Some(*t)
                } else {
                    None
                }
            })
            .collect();
        let pending = parts.iter().any(|p| matches!(p, Part::Pending(_)));
        let timed_out = now >= start + cfg.response_timeout;
        let deadline = start + cfg.ttl - cfg.drift;
        if granted.len() >= cfg.quorum() && now < deadline {
            let token = *granted.iter().max().expect("granted");
            if raising.is_some() || granted.iter().all(|t| *t == token) {
                self.hold(s, c, req, token, deadline, false);
                return true;
            }
            // The grants disagree: raise the fences where it was granted.
            let mut parts = parts;
            for (node, p) in parts.iter_mut().enumerate() {
                if let Part::Granted(_) = p {
                    let call = Call::RaiseFence(req.clone(), token);
                    self.send(s, c, node, call);
                    *p = Part::Pending(now);
                } else if let Part::Pending(_) = p {
                    // A straggler of the acquire: closed, so that a reply to it is not
                    // taken for a raise; its outcome stays unknown (released with the
                    // hold, or when the round fails).
                    self.reconnect(s, c, node);
                }
            }
            s.clients[c].phase = Phase::Round {
                req,
                start,
                call,
                parts,
                raising: Some(token),
            };
            return true;
        }
        if pending && !timed_out && now < deadline {
            return false;
        }
        // No quorum in time: take back whatever may have been granted, then retry.
        self.release_all(s, c, req, false, Some(call), Some(&parts));
        true
    }

    /// Client `c`'s next step, if it has one now.
    fn step(&self, s: &mut State, c: usize, pause: bool) -> bool {
        let cfg = &self.cfg;
        let now = self.local(s, c);
        match s.clients[c].phase.clone() {
            Phase::Idle => {
                s.clients[c].calls += 1;
                if cfg.nodes == 1 {
                    let req = self.new_req(s, c);
                    self.start_try(s, c, req, 1, now, false);
                } else {
                    self.start_round(s, c, now);
                }
                true
            }
            Phase::Waiting {
                req,
                try_no,
                wake,
                start,
            } => {
                if !s.clients[c].inbox.is_empty() {
                    let msg = s.clients[c].inbox.remove(0);
                    self.on_message(s, c, &msg, req, try_no, wake, start);
                    return true;
                }
                if now >= start + cfg.wait {
                    self.release_all(s, c, req, true, None, None);
                    return true;
                }
                if now >= wake {
                    self.start_try(s, c, req, try_no + 1, start, true);
                    return true;
                }
                false
            }
            Phase::Holding {
                req,
                token,
                deadline,
                provisional,
                confirming,
                seq,
            } => {
                if provisional {
                    if confirming.is_some() {
                        return false;
                    }
                    // The renewer confirms a handoff grant at once.
                    self.confirm(s, c);
                    return true;
                }
                if now < deadline {
                    if pause {
                        s.net.push(Packet::Write {
                            client: c,
                            token,
                            seq,
                        });
                    } else {
                        self.write(s, token, seq);
                    }
                } else if pause {
                    return false;
                }
                self.release_all(s, c, req, false, None, None);
                true
            }
            Phase::Round { .. } => self.decide_round(s, c),
            Phase::Backoff { at, call } if now >= at => {
                self.start_round(s, c, call);
                true
            }
            _ => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_message(
        &self,
        s: &mut State,
        c: usize,
        msg: &str,
        req: String,
        try_no: u32,
        wake: u64,
        start: u64,
    ) {
        let cfg = &self.cfg;
        let now = self.local(s, c);
        let mut wake = wake;
        match parse_grant(msg) {
            Some((to, token, granted_try, waited, _)) if to == req => {
                let found = s.clients[c]
                    .tries
                    .iter()
                    .find(|(n, _)| *n == granted_try)
                    .copied();
                if let Some((_, sent)) = found {
                    let (deadline, provisional) = if self.bug(Bug::HandoffSkipsClaimWindow) {
                        (sent + cfg.ttl - cfg.drift, false)
                    } else {
                        let lease = cfg.claim.min(cfg.ttl) + waited.unwrap_or(0);
                        (sent + lease - cfg.drift, true)
                    };
                    if self.bug(Bug::HandoffSkipsClaimWindow)
                        || deadline >= now + cfg.claim.div_ceil(2)
                    {
                        self.hold(s, c, req, token, deadline, provisional);
                        return;
                    }
                }
                // Too little of it left: confirm with a try.
                self.start_try(s, c, req, try_no + 1, start, true);
                return;
            }
            Some((_, _, _, _, Some(next))) if next == req => wake = wake.min(now + cfg.claim + 1),
            Some(_) => {}
            None if msg == req || msg.is_empty() => wake = now,
            None => {}
        }
        s.clients[c].phase = Phase::Waiting {
            req,
            try_no,
            wake,
            start,
        };
    }

    /// Whether client `c` has a request unanswered for its response timeout: what
    /// `timeout` would do, without doing it.
    fn timeout_due(&self, s: &State, c: usize) -> bool {
        let now = self.local(s, c);
        let due = |sent: u64| now >= sent + self.cfg.response_timeout;
        match &s.clients[c].phase {
            Phase::Trying { last, .. } => due(*last),
            Phase::Holding {
                provisional: true,
                confirming: Some(sent),
                ..
            } => due(*sent),
            Phase::Releasing { parts, .. } => parts
                .iter()
                .any(|p| matches!(p, Part::Pending(sent) if due(*sent))),
            _ => false,
        }
    }

    /// Whether client `c` has a step due now (on what it heard, or on a timer): what
    /// `step` would do, without doing it.
    fn step_due(&self, s: &State, c: usize) -> bool {
        let now = self.local(s, c);
        let cl = &s.clients[c];
        match &cl.phase {
            Phase::Waiting { wake, start, .. } => {
                !cl.inbox.is_empty() || now >= start + self.cfg.wait || now >= *wake
            }
            Phase::Holding {
                provisional: true,
                confirming,
                ..
            } => confirming.is_none(),
            Phase::Round { .. } => self.after(s, &Action::Step(c)).is_some(),
            Phase::Backoff { at, .. } => now >= *at,
            _ => false,
        }
    }

    fn timeout(&self, s: &mut State, c: usize) -> bool {
        let cfg = &self.cfg;
        let now = self.local(s, c);
        match s.clients[c].phase.clone() {
            Phase::Trying {
                req,
                try_no,
                sent,
                last,
                start,
                ..
            } if now >= last + cfg.response_timeout => {
                // The outcome is unknown: the same try again (same request id, same number,
                // lease still measured from the first send), on a fresh connection, marked
                // as possibly queued (the lost try may have queued the caller).
                self.reconnect(s, c, 0);
                let (req, sent) = if self.bug(Bug::RetryWithFreshRequestId) {
                    (self.new_req(s, c), now)
                } else {
                    (req, sent)
                };
                let call = self.acquire_call(s, c, &req, try_no, start, true);
                self.send(s, c, 0, call);
                s.clients[c].phase = Phase::Trying {
                    req,
                    try_no,
                    sent,
                    last: now,
                    start,
                    queued: true,
                };
                true
            }
            Phase::Holding {
                provisional: true,
                confirming: Some(sent),
                ..
            } if now >= sent + cfg.response_timeout => {
                self.reconnect(s, c, 0);
                self.confirm(s, c);
                true
            }
            Phase::Releasing {
                req,
                mut parts,
                leave,
                retry,
            } => {
                let mut any = false;
                for (node, part) in parts.iter_mut().enumerate() {
                    if let Part::Pending(sent) = *part {
                        if now >= sent + cfg.response_timeout {
                            self.reconnect(s, c, node);
                            self.send(s, c, node, release_call(&req, leave));
                            *part = Part::Pending(now);
                            any = true;
                        }
                    }
                }
                s.clients[c].phase = Phase::Releasing {
                    req,
                    parts,
                    leave,
                    retry,
                };
                any
            }
            _ => false,
        }
    }

    /// The server runs request `net[i]`, its reply meeting `fate` (a fault spends its
    /// budget); or the client reads reply `net[i]`; or the resource takes write `net[i]`.
    fn deliver(&self, s: &mut State, i: usize, fate: Fate) -> bool {
        match fate {
            Fate::Arrives => {}
            Fate::Lost => s.used[LOST] += 1,
            Fate::Late => s.used[LATE] += 1,
        }
        match s.net.remove(i) {
            Packet::Request { client, node, call } => {
                let reply = self.execute(s, client, node, &call);
                if fate != Fate::Lost {
                    s.net.push(Packet::Reply {
                        client,
                        node,
                        reply,
                        late: fate == Fate::Late,
                    });
                }
            }
            Packet::Reply {
                client,
                node,
                reply,
                ..
            } => self.on_reply(s, client, node, reply),
            Packet::Write { token, seq, .. } => self.write(s, token, seq),
        }
        true
    }

    /// Whether time may advance: nothing is in flight but late replies and paused writes,
    /// and no client has a step due now (clients act on what they heard, on their timers
    /// and on timeouts within the tick; only starting a call and working under a held
    /// lease may take longer).
    fn quiescent(&self, s: &State) -> bool {
        let in_flight = s.net.iter().any(|p| match p {
            Packet::Request { .. } => true,
            Packet::Reply { late, .. } => !late,
            Packet::Write { .. } => false,
        });
        if in_flight {
            return false;
        }
        (0..s.clients.len()).all(|c| !self.step_due(s, c) && !self.timeout_due(s, c))
    }

    /// Take `action` in `s`, which `ruled_out` did not rule out; false if it
    /// cannot be taken after all.
    fn apply(&self, s: &mut State, action: &Action) -> bool {
        match *action {
            Action::Tick(lag) => {
                if !self.quiescent(s) {
                    return false;
                }
                if let Some(c) = lag {
                    s.clients[c].lag += 1;
                }
                s.now += 1;
                for n in &mut s.nodes {
                    n.expire(s.now);
                }
                true
            }
            Action::Deliver(i) => self.deliver(s, i, Fate::Arrives),
            Action::LoseReply(i) => self.deliver(s, i, Fate::Lost),
            Action::Delay(i) => self.deliver(s, i, Fate::Late),
            Action::Lose(i) => {
                s.used[LOST] += 1;
                s.net.remove(i);
                true
            }
            Action::Step(c) => self.step(s, c, false),
            Action::PauseWrite(c) => {
                if !self.believes(s, c) {
                    return false;
                }
                s.used[PAUSE] += 1;
                self.step(s, c, true)
            }
            Action::Timeout(c) => self.timeout(s, c),
            Action::LoseMessage(c) => {
                s.used[LOST_MSG] += 1;
                s.clients[c].inbox.remove(0);
                true
            }
            Action::Crash(c) => {
                s.used[CRASH] += 1;
                let cl = &mut s.clients[c];
                cl.phase = Phase::Crashed;
                cl.subscribed = false;
                cl.inbox.clear();
                s.net.retain(|p| match p {
                    Packet::Reply { client, .. } => *client != c,
                    _ => true,
                });
                true
            }
        }
    }

    /// Whether `action` cannot be taken in `s`, as far as budgets, phases and what is in
    /// flight tell (no copy of the state needed); `apply` checks the rest (quiescence,
    /// belief, and whether the client's step does anything).
    fn ruled_out(&self, s: &State, action: &Action) -> bool {
        let cfg = &self.cfg;
        match *action {
            Action::Tick(lag) => {
                s.now >= cfg.horizon
                    || lag.is_some_and(|c| {
                        s.clients[c].lag >= cfg.clock_lag || !self.keeps_time(&s.clients[c])
                    })
            }
            Action::Deliver(_) => false,
            Action::Lose(i) | Action::LoseReply(i) | Action::Delay(i) => {
                let spent = match action {
                    Action::Delay(_) => s.used[LATE] >= cfg.late,
                    _ => s.used[LOST] >= cfg.lost,
                };
                spent || !matches!(s.net[i], Packet::Request { .. })
            }
            Action::Step(c) => matches!(
                s.clients[c].phase,
                Phase::Trying { .. } | Phase::Releasing { .. } | Phase::Crashed | Phase::Done
            ),
            Action::PauseWrite(c) => {
                s.used[PAUSE] >= cfg.pauses
                    || !matches!(
                        s.clients[c].phase,
                        Phase::Holding {
                            provisional: false,
                            ..
                        }
                    )
            }
            Action::Timeout(c) => !matches!(
                s.clients[c].phase,
                Phase::Trying { .. }
                    | Phase::Releasing { .. }
                    | Phase::Holding {
                        provisional: true,
                        confirming: Some(_),
                        ..
                    }
            ),
            Action::LoseMessage(c) => {
                s.used[LOST_MSG] >= cfg.lost_messages || s.clients[c].inbox.is_empty()
            }
            Action::Crash(c) => {
                s.used[CRASH] >= cfg.crashes
                    || matches!(s.clients[c].phase, Phase::Done | Phase::Crashed)
            }
        }
    }

    /// The state after `action`, if it can be taken.
    pub fn after(&self, s: &State, action: &Action) -> Option<State> {
        if self.ruled_out(s, action) {
            return None;
        }
        let mut next = s.clone();
        if !self.apply(&mut next, action) {
            return None;
        }
        next.net.sort();
        Some(next)
    }

    /// A step to explore alone from `s`, if there is one (partial-order reduction): when
    /// a state that breaks a safety property is reachable from `s`, one is reachable
    /// from the state after this step too, so the checker finds a counterexample
    /// whenever the full search would (by induction on the longest path left: the state
    /// graph is acyclic, as every step moves time, a client's program, a budget or what
    /// is in flight forward).
    ///
    /// Each step chosen is a step of one client `c` that keeps the state from being
    /// quiescent until it is taken, so time stands still before it; nothing but `c`'s own
    /// steps changes `c`'s program, and `c` has no other step possible before it (no
    /// crash is left in the budget, and a message it might read is not lost: either no
    /// lost message is left in the budget or it hears none). Take a path `π` from `s` to
    /// a bad state `v`:
    /// - if the step `a` is not on `π`, `a` stays possible along `π`, and `a` then `π`
    ///   reaches `v` after `a`: still bad, because `a` never makes a property true again
    ///   (it only adds a believer of the lock, raises a flag, ends a call, or changes what
    ///   no property reads);
    /// - if `π` takes `a` after `β`, then `a` then `β` reaches the same state as `β` then
    ///   `a`, because `a` and each step of `β` commute: `a` touches neither the keys nor the
    ///   resource nor another client, and a message published to `c` meanwhile is either
    ///   appended behind what `c` reads, or dropped by `a`'s grant either way. The one
    ///   exception is a grant `a` that `c` takes as held while `β` holds another client's
    ///   grant taken as held (both bump the order of grants); then, since `c` cannot act
    ///   during `β`, `a` then `β` has `c` believing all along, and reaches a state where
    ///   both believe: mutual exclusion broken.
    ///
    /// The steps, on one server, without liveness (a fair run is not a safety property):
    /// 1. reading a reply that is not late (late replies are read across a tick): a
    ///    refusal by a client already subscribed (its first refusal subscribes it, which
    ///    changes who hears the next message); a grant; a renewal that confirms a handoff
    ///    grant (one that refuses it would end a believer); the reply to a release (not to
    ///    a leave, whose reply is checked against the keys), by a client that hears no
    ///    message;
    /// 2. reading a message while waiting;
    /// 3. sending the confirmation of a handoff grant;
    /// 4. a timeout with nothing of the client's in flight (a re-send on a new connection).
    ///
    /// A reply is never in a race with a fault: its fate is chosen when the server runs its
    /// request ([`Action::LoseReply`], [`Action::Delay`]).
    pub fn ample(&self, s: &State) -> Option<Action> {
        let cfg = &self.cfg;
        if !cfg.reduce
            || cfg.nodes != 1
            || cfg.liveness_steps.is_some()
            || s.used[CRASH] < cfg.crashes
        {
            return None;
        }
        let hears_safely = |cl: &Client| {
            s.used[LOST_MSG] >= cfg.lost_messages || (!cl.subscribed && cl.inbox.is_empty())
        };
        for (i, p) in s.net.iter().enumerate() {
            let Packet::Reply {
                client: c,
                reply,
                late: false,
                ..
            } = p
            else {
                continue;
            };
            let cl = &s.clients[*c];
            let qualifies = match (&cl.phase, reply) {
                (Phase::Trying { .. }, Reply::Acquired(None, _)) => cl.subscribed,
                (Phase::Trying { .. }, Reply::Acquired(Some(_), _)) => hears_safely(cl),
                (
                    Phase::Holding {
                        provisional: true,
                        confirming: Some(_),
                        ..
                    },
                    Reply::Code(1),
                ) => hears_safely(cl),
                (
                    Phase::Releasing {
                        leave: false,
                        retry: None,
                        ..
                    },
                    Reply::Code(_),
                ) => !cl.subscribed && cl.inbox.is_empty(),
                _ => false,
            };
            if qualifies && !self.timeout_due(s, *c) {
                return Some(Action::Deliver(i));
            }
        }
        for (c, cl) in s.clients.iter().enumerate() {
            let step = match &cl.phase {
                Phase::Waiting { .. } => {
                    !cl.inbox.is_empty() && s.used[LOST_MSG] >= cfg.lost_messages
                }
                Phase::Holding {
                    provisional: true,
                    confirming: None,
                    ..
                } => hears_safely(cl),
                _ => false,
            };
            if step {
                return Some(Action::Step(c));
            }
            let idle_line = !s.net.iter().any(|p| {
                matches!(p, Packet::Request { client, .. } | Packet::Reply { client, .. } if *client == c)
            });
            if idle_line && hears_safely(cl) && self.timeout_due(s, c) {
                return Some(Action::Timeout(c));
            }
        }
        None
    }

    fn all_actions(&self, s: &State, faults: bool, out: &mut Vec<Action>) {
        // Requests to different nodes commute (each touches its own node's keys, and
        // only replies reach the clients): the server runs them node by node.
        let first_node = s
            .net
            .iter()
            .filter_map(|p| match p {
                Packet::Request { node, .. } => Some(*node),
                _ => None,
            })
            .min();
        for i in 0..s.net.len() {
            if let Packet::Request { node, .. } = &s.net[i] {
                if Some(*node) != first_node {
                    continue;
                }
            }
            out.push(Action::Deliver(i));
            if faults {
                out.push(Action::Lose(i));
                out.push(Action::LoseReply(i));
                out.push(Action::Delay(i));
            }
        }
        for c in 0..s.clients.len() {
            out.push(Action::Step(c));
            out.push(Action::Timeout(c));
            if faults {
                out.push(Action::PauseWrite(c));
                out.push(Action::LoseMessage(c));
                out.push(Action::Crash(c));
            }
        }
        out.push(Action::Tick(None));
        if faults {
            for c in 0..s.clients.len() {
                out.push(Action::Tick(Some(c)));
            }
        }
    }

    /// The fair continuation from `s`: no more faults; the first possible of: the server
    /// runs a request, a client reads a reply, a client takes a step, a timeout; else time
    /// advances (past the horizon). Returns the steps until every live client finished its
    /// calls, or why it did not within `limit`.
    pub fn fair_run(&self, s: &State, limit: usize) -> Result<usize, String> {
        // Past the horizon, and waiters keep waiting (a wait's length is the caller's
        // choice; the property is that the lock comes, not how soon the caller asked).
        let relaxed = Protocol::new(Config {
            horizon: u64::MAX,
            wait: 1000,
            ..self.cfg.clone()
        });
        let mut s = s.clone();
        let before: Vec<usize> = s.clients.iter().map(|c| c.refused.len()).collect();
        let mut actions = Vec::new();
        for steps in 0..limit {
            if s.clients
                .iter()
                .all(|c| matches!(c.phase, Phase::Done | Phase::Crashed))
            {
                return Ok(steps);
            }
            actions.clear();
            relaxed.all_actions(&s, false, &mut actions);
            let next = actions.iter().find_map(|a| relaxed.after(&s, a));
            match next {
                Some(n) => s = n,
                None => return Err(format!("stuck at {s:?}")),
            }
            for (c, cl) in s.clients.iter().enumerate() {
                if cl.refused.len() > before[c] {
                    return Err(format!("client {c} gave up waiting in a fair run"));
                }
            }
        }
        Err(format!("not done after {limit} steps"))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let client = Client {
            lag: 0,
            calls: 0,
            phase: Phase::Idle,
            subscribed: false,
            inbox: Vec::new(),
            tries: Vec::new(),
            refused: Vec::new(),
            fresh: 0,
        };
        vec![State {
            now: 0,
            nodes: vec![Store::default(); self.cfg.nodes],
            clients: vec![client; self.cfg.clients],
            net: Vec::new(),
            used: [0; 5],
            last_token: 0,
            grants: 0,
            resource: (0, 0),
            flags: Flags::default(),
        }]
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        if let Some(a) = self.ample(s) {
            out.push(a);
            return;
        }
        self.all_actions(s, true, out);
    }

    fn next_state(&self, s: &State, action: Action) -> Option<State> {
        self.after(s, &action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            Property::always("mutual exclusion by lease", |m: &Protocol, s: &State| {
                (0..s.clients.len()).filter(|c| m.believes(s, *c)).count() <= 1
            }),
            Property::always(
                "fencing: tokens increase with every grant",
                |_, s: &State| !s.flags.token_order,
            ),
            Property::always(
                "fencing: no older grant's write is taken after a newer one's",
                |_, s: &State| !s.flags.stale_write,
            ),
            Property::always(
                "idempotence: a holder's count equals its unreleased acquire calls",
                |_, s: &State| {
                    !s.flags.count
                        && s.nodes.iter().all(|n| {
                            n.lock.as_ref().is_none_or(|l| {
                                let c: usize = l.value.owner[1..].parse().unwrap_or(0);
                                let open = !matches!(s.clients[c].phase, Phase::Idle | Phase::Done);
                                l.value.count <= i64::from(open)
                            })
                        })
                },
            ),
            Property::always(
                "idempotence: no caller hears \"not acquired\" for a granted request",
                |_, s: &State| {
                    !s.flags.misreported
                        && s.clients.iter().all(|c| {
                            c.refused.iter().all(|r| {
                                s.nodes.iter().all(|n| {
                                    n.lock.as_ref().is_none_or(|l| !l.value.reqs.contains(r))
                                })
                            })
                        })
                },
            ),
            Property::always("no key without a TTL but the fence", |_, s: &State| {
                s.nodes.iter().all(|n| n.key_without_ttl().is_none())
            }),
            Property::sometimes("a client holds the lock", |m: &Protocol, s: &State| {
                (0..s.clients.len()).any(|c| m.believes(s, c))
            }),
            Property::sometimes("every call of every client granted", |_, s: &State| {
                s.clients
                    .iter()
                    .all(|c| c.phase == Phase::Done && c.refused.is_empty())
            }),
        ];
        if self.cfg.nodes == 1 {
            p.push(Property::sometimes(
                "a waiter holds at once by a release's handoff",
                |_, s: &State| {
                    s.clients.iter().any(|c| {
                        matches!(
                            c.phase,
                            Phase::Holding {
                                provisional: true,
                                ..
                            }
                        )
                    })
                },
            ));
        }
        if self.cfg.wait < self.cfg.horizon {
            p.push(Property::sometimes(
                "a waiter gives up and hears \"not acquired\"",
                |_, s: &State| s.clients.iter().any(|c| !c.refused.is_empty()),
            ));
        }
        if self.cfg.liveness_steps.is_some() {
            p.push(Property::always(
                "liveness: a fair run from here ends with every live client's calls granted",
                |m: &Protocol, s: &State| m.fair_run(s, m.cfg.liveness_steps.unwrap_or(0)).is_ok(),
            ));
        }
        p
    }
}

/// Random walks through `m` for tests: `walks` walks of at most `steps` steps from the
/// initial state, each step to a successor picked by a fixed pseudo-random sequence; `visit`
/// sees every state on the way with its successors.
#[cfg(test)]
pub(crate) fn random_walks(
    m: &Protocol,
    walks: usize,
    steps: usize,
    mut visit: impl FnMut(&State, &[State]),
) {
    use stateright::Model;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut actions = Vec::new();
    for _walk in 0..walks {
        let mut s = m.init_states().remove(0);
        for _step in 0..steps {
            actions.clear();
            m.actions(&s, &mut actions);
            let mut next: Vec<State> = actions
                .drain(..)
                .filter_map(|a| m.next_state(&s, a))
                .collect();
            // The successors in a stable order, whatever order the actions came in.
            next.sort_by_key(|t| format!("{t:?}"));
            next.dedup();
            visit(&s, &next);
            if next.is_empty() {
                break;
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s = next.swap_remove((seed % next.len() as u64) as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `step_due` and `timeout_due` (which decide whether time may advance, and which
    /// steps the partial order may take alone) say what taking the step would do: along
    /// random walks with every fault in the budget, in every state, for every client.
    #[test]
    fn a_due_step_or_timeout_is_one_that_taking_would_change_the_state() {
        let m = Protocol::new(Config {
            liveness_steps: None,
            reduce: false,
            ..Config::ci()
        });
        let (mut due, mut checked) = (0, 0);
        random_walks(&m, 80, 80, |s, _| {
            for c in 0..s.clients.len() {
                let timeout = m.after(s, &Action::Timeout(c)).is_some();
                assert_eq!(m.timeout_due(s, c), timeout, "timeout of {c} in {s:?}");
                let free = matches!(
                    s.clients[c].phase,
                    Phase::Idle
                        | Phase::Done
                        | Phase::Crashed
                        | Phase::Holding {
                            provisional: false,
                            ..
                        }
                );
                if !free {
                    let step = m.after(s, &Action::Step(c)).is_some();
                    assert_eq!(m.step_due(s, c), step, "step of {c} in {s:?}");
                    due += usize::from(step);
                }
                due += usize::from(timeout);
                checked += 1;
            }
        });
        assert!(
            checked > 10_000 && due > 500,
            "{checked} checked, {due} due"
        );
    }
}
