//! Symmetry reduction: the clients run the same program, so a state and the same state
//! with its clients renumbered behave alike. [`representative`] renumbers a state's
//! clients into an order fixed by what each client is doing, and the checker keeps one
//! state per order.
//!
//! Why a renumbering is a symmetry of the model:
//! - every client runs the same code, and no rule of the model or the scripts compares
//!   client numbers, except through names;
//! - a client's number appears only in its names: its owner id `o<c>` and its request ids
//!   `c<c>q<n>`, and in the `client` field of what is in flight. The renumbering renames
//!   all of them everywhere they are kept: the lock hash, the waiter queue and its
//!   expiries, the reservation, the waiters' details, messages heard, requests and replies
//!   in flight, the phase of every client and their lists of refused requests;
//! - names order nothing that decides a step: queue places are unique scores (a place is
//!   above every earlier one), lapsed places are pruned all together, and the lock's
//!   request ids are a set.
//!
//! A representative is always a renumbering of the state it stands for, so merging states
//! by it never merges states that behave differently; clients that look alike to the
//! sort keep their order, which costs only some reduction, never soundness.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use crate::model::{Call, Client, Packet, Phase, State};
use crate::store::Keyed;

/// `s` with its clients renumbered into the order of their shapes (what each is doing,
/// without its number).
pub fn representative(s: &State) -> State {
    let n = s.clients.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_cached_key(|&c| shape(s, c));
    if order.iter().enumerate().all(|(i, &c)| i == c) {
        return s.clone();
    }
    // `order[new] = old`; `to[old] = new`.
    let mut to = vec![0; n];
    for (new, &old) in order.iter().enumerate() {
        to[old] = new;
    }
    renumber(s, &order, &to)
}

/// What client `c` is doing, without its number: the sort key of the renumbering (a hash
/// of its phase without names, its counters, what it heard and tried, whether it owns
/// each node's lock, and what it has in flight).
fn shape(s: &State, c: usize) -> u64 {
    let cl = &s.clients[c];
    let mut h = std::hash::DefaultHasher::new();
    phase_shape(&cl.phase, &mut h);
    (cl.calls, cl.fresh, cl.lag, cl.subscribed, cl.inbox.len()).hash(&mut h);
    cl.tries.hash(&mut h);
    cl.refused.len().hash(&mut h);
    for n in &s.nodes {
        let owns = n.lock.as_ref().is_some_and(|l| {
            l.value.owner.strip_prefix('o').and_then(|d| d.parse().ok()) == Some(c)
        });
        owns.hash(&mut h);
    }
    for p in s.net.iter().filter(|p| packet_client(p) == c) {
        packet_shape(p).hash(&mut h);
    }
    h.finish()
}

fn phase_shape(p: &Phase, h: &mut impl Hasher) {
    std::mem::discriminant(p).hash(h);
    match p {
        Phase::Idle | Phase::Crashed | Phase::Done => {}
        Phase::Trying {
            try_no,
            sent,
            last,
            start,
            queued,
            ..
        } => (try_no, sent, last, start, queued).hash(h),
        Phase::Waiting {
            try_no,
            wake,
            start,
            ..
        } => (try_no, wake, start).hash(h),
        Phase::Holding {
            token,
            deadline,
            provisional,
            confirming,
            seq,
            ..
        } => (token, deadline, provisional, confirming, seq).hash(h),
        Phase::Releasing {
            parts,
            leave,
            retry,
            ..
        } => (parts, leave, retry).hash(h),
        Phase::Round {
            start,
            call,
            parts,
            raising,
            ..
        } => (parts, start, call, raising).hash(h),
        Phase::Backoff { at, call } => (at, call).hash(h),
    }
}

fn packet_client(p: &Packet) -> usize {
    match p {
        Packet::Request { client, .. }
        | Packet::Reply { client, .. }
        | Packet::Write { client, .. } => *client,
    }
}

/// A packet without its client's number and names.
fn packet_shape(p: &Packet) -> (u8, usize, u8, u64) {
    match p {
        Packet::Request { node, .. } => (0, *node, 0, 0),
        Packet::Reply { node, late, .. } => (1, *node, u8::from(*late), 0),
        Packet::Write { token, seq, .. } => (2, 0, *seq, *token),
    }
}

/// Rename every client number in `name`: owner ids `o<c>` and request ids `c<c>q<n>`, as
/// whole words of a string of words (messages and waiters' details are such strings).
fn rename(name: &str, to: &[usize]) -> String {
    let mut out = String::with_capacity(name.len());
    let mut start = 0;
    for (i, b) in name.bytes().enumerate() {
        if b == b' ' || b == b'\n' {
            rename_word(&name[start..i], to, &mut out);
            out.push(char::from(b));
            start = i + 1;
        }
    }
    rename_word(&name[start..], to, &mut out);
    out
}

fn rename_word(w: &str, to: &[usize], out: &mut String) {
    use std::fmt::Write;
    let renumber = |digits: &str| -> Option<usize> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits
            .parse::<usize>()
            .ok()
            .and_then(|c| to.get(c).copied())
    };
    if let Some(c) = w.strip_prefix('o').and_then(renumber) {
        let _ = write!(out, "o{c}");
        return;
    }
    if let Some((digits, n)) = w.strip_prefix('c').and_then(|rest| rest.split_once('q')) {
        if let (Some(c), true) = (renumber(digits), n.bytes().all(|b| b.is_ascii_digit())) {
            let _ = write!(out, "c{c}q{n}");
            return;
        }
    }
    out.push_str(w);
}

fn rename_phase(p: &Phase, to: &[usize]) -> Phase {
    let mut p = p.clone();
    match &mut p {
        Phase::Trying { req, .. }
        | Phase::Waiting { req, .. }
        | Phase::Holding { req, .. }
        | Phase::Releasing { req, .. }
        | Phase::Round { req, .. } => *req = rename(req, to),
        Phase::Idle | Phase::Backoff { .. } | Phase::Crashed | Phase::Done => {}
    }
    p
}

fn rename_call(call: &Call, to: &[usize]) -> Call {
    match call {
        Call::Acquire {
            req,
            try_no,
            waitms,
            queued,
        } => Call::Acquire {
            req: rename(req, to),
            try_no: *try_no,
            waitms: *waitms,
            queued: *queued,
        },
        Call::Release(r) => Call::Release(rename(r, to)),
        Call::Leave(r) => Call::Leave(rename(r, to)),
        Call::Renew(r) => Call::Renew(rename(r, to)),
        Call::RaiseFence(r, t) => Call::RaiseFence(rename(r, to), *t),
    }
}

fn rename_keys<V: Clone>(m: &BTreeMap<String, V>, to: &[usize]) -> BTreeMap<String, V> {
    m.iter().map(|(k, v)| (rename(k, to), v.clone())).collect()
}

fn rename_keyed<T>(k: &Option<Keyed<T>>, f: impl Fn(&T) -> T) -> Option<Keyed<T>> {
    k.as_ref().map(|k| Keyed {
        value: f(&k.value),
        expire_at: k.expire_at,
    })
}

fn renumber(s: &State, order: &[usize], to: &[usize]) -> State {
    let clients = order
        .iter()
        .map(|&old| {
            let c = &s.clients[old];
            Client {
                phase: rename_phase(&c.phase, to),
                inbox: c.inbox.iter().map(|m| rename(m, to)).collect(),
                refused: c.refused.iter().map(|r| rename(r, to)).collect(),
                ..c.clone()
            }
        })
        .collect();
    let nodes = s
        .nodes
        .iter()
        .map(|n| {
            let mut n = n.clone();
            n.lock = rename_keyed(&n.lock, |l| {
                let mut l = l.clone();
                l.owner = rename(&l.owner, to);
                l.reqs = l
                    .reqs
                    .iter()
                    .map(|r| rename(r, to))
                    .collect::<BTreeSet<_>>();
                l
            });
            n.queue = rename_keyed(&n.queue, |q| rename_keys(q, to));
            n.expiries = rename_keyed(&n.expiries, |q| rename_keys(q, to));
            n.next = rename_keyed(&n.next, |r| rename(r, to));
            n.info = rename_keyed(&n.info, |m| {
                m.iter()
                    .map(|(k, v)| (rename(k, to), rename(v, to)))
                    .collect()
            });
            n
        })
        .collect();
    let mut net: Vec<Packet> = s
        .net
        .iter()
        .map(|p| match p {
            Packet::Request { client, node, call } => Packet::Request {
                client: to[*client],
                node: *node,
                call: rename_call(call, to),
            },
            Packet::Reply {
                client,
                node,
                reply,
                late,
            } => Packet::Reply {
                client: to[*client],
                node: *node,
                reply: reply.clone(),
                late: *late,
            },
            Packet::Write { client, token, seq } => Packet::Write {
                client: to[*client],
                token: *token,
                seq: *seq,
            },
        })
        .collect();
    net.sort();
    State {
        clients,
        nodes,
        net,
        ..s.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use stateright::Model;

    use super::*;
    use crate::model::{Config, Protocol};

    #[test]
    fn renaming_touches_only_client_names() {
        let to = [2, 0, 1];
        assert_eq!(rename("c0q3 17 2:4 c2q1", &to), "c2q3 17 2:4 c1q1");
        assert_eq!(rename("1:0\n4\no1\n", &to), "1:0\n4\no0\n");
        assert_eq!(rename("cq1 o o9 oops c1qx", &to), "cq1 o o9 oops c1qx");
    }

    fn successors(m: &Protocol, s: &State) -> HashSet<State> {
        let mut actions = Vec::new();
        m.actions(s, &mut actions);
        actions
            .into_iter()
            .filter_map(|a| m.next_state(s, a))
            .collect()
    }

    /// The model is symmetric in its clients: along random walks with every fault in the
    /// budget, each renumbering of a state has exactly the renumbered successors of the
    /// state. (A rule that compared client numbers, or a name the renumbering missed,
    /// would make the two sets differ.)
    #[test]
    fn every_renumbering_of_a_state_has_the_renumbered_successors() {
        let m = Protocol::new(Config {
            liveness_steps: None,
            reduce: false,
            ..Config::ci()
        });
        let perms: [[usize; 3]; 5] = [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        let mut checked = 0;
        crate::model::random_walks(&m, 60, 60, |s, next| {
            for order in perms {
                let mut to = [0; 3];
                for (new, &old) in order.iter().enumerate() {
                    to[old] = new;
                }
                let moved = renumber(s, &order, &to);
                let expected: HashSet<State> =
                    next.iter().map(|t| renumber(t, &order, &to)).collect();
                assert_eq!(
                    successors(&m, &moved),
                    expected,
                    "renumbering {order:?} of {s:?}"
                );
                checked += 1;
            }
        });
        assert!(checked > 5_000, "only {checked} renumberings checked");
    }
}
