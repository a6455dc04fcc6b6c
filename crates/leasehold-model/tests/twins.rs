//! The model's scripts are the real scripts' twins: over a few thousand generated lock
//! states and calls, each call is run by the real Lua script on a real redis-server
//! (started by the test kit) and by its twin in `leasehold_model::scripts`, and the
//! replies, the resulting keys (values and expiry times) and the messages announced on
//! the lock's channel must be the same.
//!
//! Server time: the real script reads the clock itself, so the twin is run twice, at the
//! server time read just before the call and just after it; every number of the real
//! result must lie between the two twins' numbers (and every other part must be equal).
//! Generated times stay at least a second away from "now", so no branch depends on which
//! moment in between the script ran. Needs Redis 7 or later (`PEXPIRETIME`).

use std::collections::{BTreeMap, BTreeSet};

use leasehold::scripts;
use leasehold_model::scripts::{AcquireArgs, Run};
use leasehold_model::store::{Keyed, LockHash, Store};
use leasehold_testkit::RedisServer;
use redis::Value;

const LOCK: &str = "m:{twin}";
const CASES: usize = 3000;

/// The lock's keys (suffixes of `LOCK`) in the order `acquire.lua` takes them, with names.
const KEYS: [(&str, &str); 6] = [
    ("lock", ""),
    ("fence", ":fence"),
    ("waiters", ":waiters"),
    ("waiters:exp", ":waiters:exp"),
    ("next", ":next"),
    ("waiters:info", ":waiters:info"),
];

/// The keys in the order `release.lua`, `leave.lua` and `force_release.lua` take them.
const RELEASE_KEYS: [&str; 6] = [
    "",
    ":waiters",
    ":waiters:exp",
    ":next",
    ":fence",
    ":waiters:info",
];

fn key(suffix: &str) -> String {
    format!("{LOCK}{suffix}")
}

/// A small deterministic generator (xorshift64*), so a failing case is reproducible.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const OWNERS: &[&str] = &["o1", "o2", "o3"];
const REQS: &[&str] = &["r1", "r2", "r3", "r4", "r5"];

/// A state whose times are relative to server time `t` (ms).
fn gen_store(g: &mut Gen, t: u64) -> Store {
    let t_us = t * 1000;
    let expiry = |g: &mut Gen| (!g.chance(8)).then(|| t + g.range(1000, 5000));
    let mut s = Store::default();
    if g.chance(60) {
        let count = g.range(1, 3);
        let mut reqs = BTreeSet::new();
        while reqs.len() < count as usize {
            reqs.insert(g.pick(REQS).to_string());
        }
        let token = match g.below(3) {
            0 => g.range(1, 50),
            1 => t_us - 1_000_000,
            _ => t_us + 5_000_000,
        };
        s.lock = Some(Keyed {
            value: LockHash {
                owner: g.pick(OWNERS).to_string(),
                token,
                count: count as i64,
                reqs,
                meta: g.pick(&["m1", "{\"label\":\"x\"}", ""]).to_string(),
            },
            expire_at: expiry(g),
        });
    }
    if g.chance(70) {
        s.fence = Some(match g.below(4) {
            0 => g.range(1, 50),
            1 => t_us - 2_000_000,
            2 => t_us + 5_000_000,
            _ => s.lock.as_ref().map_or(7, |l| l.value.token),
        });
    }
    if g.chance(60) {
        let mut queue = BTreeMap::new();
        let mut place = t_us - 10_000_000;
        for r in REQS {
            if g.chance(45) {
                place += g.range(1, 100_000);
                queue.insert(r.to_string(), place);
            }
        }
        if g.chance(10) {
            if let Some(last) = queue.values_mut().max() {
                *last = t_us + 5_000_000;
            }
        }
        let mut exps = BTreeMap::new();
        let mut info = BTreeMap::new();
        for r in queue.keys() {
            if g.chance(85) {
                let score = if g.chance(30) {
                    t - g.range(1000, 3000)
                } else {
                    t + g.range(1000, 4000)
                };
                exps.insert(r.clone(), score);
            }
            if g.chance(75) {
                let try_no = g.range(1, 4);
                let ttl = g.range(100, 3000);
                let owner = g.pick(OWNERS);
                let d = if g.chance(20) {
                    format!("{try_no}\n{ttl}\n{owner}\nm")
                } else {
                    format!("{try_no}:{}\n{ttl}\n{owner}\nm", t - g.range(100, 3000))
                };
                info.insert(r.clone(), d);
            }
        }
        if g.chance(10) {
            exps.insert(g.pick(REQS).to_string(), t + 2000);
        }
        if !queue.is_empty() {
            s.queue = Some(Keyed {
                value: queue,
                expire_at: expiry(g),
            });
        }
        if !exps.is_empty() {
            s.expiries = Some(Keyed {
                value: exps,
                expire_at: expiry(g),
            });
        }
        if !info.is_empty() {
            s.info = Some(Keyed {
                value: info,
                expire_at: expiry(g),
            });
        }
    }
    if g.chance(25) {
        s.next = Some(Keyed {
            value: g.pick(REQS).to_string(),
            expire_at: Some(t + g.range(1000, 3000)),
        });
    }
    s
}

/// One script call.
#[derive(Debug, Clone)]
enum Call {
    Acquire(AcquireArgs),
    Release(String, String, i64, i64),
    Leave(String, i64, i64),
    Renew(String, String, i64),
    Extend(String, String, i64),
    RaiseFence(String, String, u64),
    ForceRelease(i64, i64),
}

fn gen_call(g: &mut Gen, s: &Store, t: u64) -> Call {
    let holder = s.lock.as_ref().map(|l| l.value.clone());
    let owner = |g: &mut Gen| match &holder {
        Some(h) if g.chance(55) => h.owner.clone(),
        _ => g.pick(OWNERS).to_string(),
    };
    let queued: Vec<String> = s
        .queue
        .iter()
        .flat_map(|q| q.value.keys().cloned())
        .collect();
    let req = |g: &mut Gen| match &holder {
        Some(h) if g.chance(45) => {
            let v: Vec<&String> = h.reqs.iter().collect();
            v[g.below(v.len() as u64) as usize].clone()
        }
        _ if !queued.is_empty() && g.chance(40) => {
            queued[g.below(queued.len() as u64) as usize].clone()
        }
        _ => g.pick(REQS).to_string(),
    };
    let ttl = |g: &mut Gen| g.range(500, 3000) as i64;
    let claim = |g: &mut Gen| g.range(200, 3000) as i64;
    match g.below(100) {
        0..=39 => Call::Acquire(AcquireArgs {
            owner: owner(g),
            req: req(g),
            ttl: ttl(g),
            reentrant: g.chance(50),
            waitms: if g.chance(35) {
                0
            } else {
                g.range(1500, 4000) as i64
            },
            queued: g.chance(50),
            meta: g.pick(&["m2", ""]).to_string(),
            fair: g.chance(30),
            try_no: g.range(1, 4) as u32,
        }),
        40..=59 => Call::Release(owner(g), req(g), g.range(1000, 2000) as i64, claim(g)),
        60..=74 => Call::Leave(req(g), g.range(1000, 2000) as i64, claim(g)),
        75..=82 => Call::Renew(owner(g), req(g), ttl(g)),
        83..=89 => Call::Extend(owner(g), req(g), ttl(g)),
        90..=94 => {
            let token = match g.below(3) {
                0 => g.range(1, 50),
                1 => t * 1000 + 9_000_000,
                _ => holder.as_ref().map_or(3, |h| h.token),
            };
            Call::RaiseFence(owner(g), req(g), token)
        }
        _ => Call::ForceRelease(g.range(1000, 2000) as i64, claim(g)),
    }
}

/// A result as a list of parts: the digit runs of every string are numbers, the rest text.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(u64),
    Text(String),
}

fn tokens(out: &mut Vec<Tok>, s: &str) {
    let mut rest = s;
    out.push(Tok::Text("|".into()));
    while !rest.is_empty() {
        let n = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n > 0 {
            out.push(Tok::Num(rest[..n].parse().expect("digits")));
            rest = &rest[n..];
        } else {
            let m = rest.bytes().take_while(|b| !b.is_ascii_digit()).count();
            out.push(Tok::Text(rest[..m].to_string()));
            rest = &rest[m..];
        }
    }
}

/// Everything a call produced, in one canonical text form per part.
#[derive(Debug, Default)]
struct Outcome {
    parts: Vec<String>,
}

impl Outcome {
    fn push(&mut self, s: impl Into<String>) {
        self.parts.push(s.into());
    }
    fn toks(&self) -> Vec<Tok> {
        let mut t = Vec::new();
        for p in &self.parts {
            tokens(&mut t, p);
        }
        t
    }
}

fn dump_model(s: &Store, out: &mut Outcome) {
    let exp = |e: Option<u64>| e.map_or("-1".to_string(), |e| e.to_string());
    if let Some(l) = &s.lock {
        let mut f: BTreeMap<String, String> = BTreeMap::new();
        f.insert("owner".into(), l.value.owner.clone());
        f.insert("token".into(), l.value.token.to_string());
        f.insert("count".into(), l.value.count.to_string());
        f.insert("meta".into(), l.value.meta.clone());
        for r in &l.value.reqs {
            f.insert(format!("r:{r}"), "1".into());
        }
        out.push(format!("lock hash exp {}", exp(l.expire_at)));
        for (k, v) in f {
            out.push(format!("{k}={v}"));
        }
    }
    if let Some(f) = s.fence {
        out.push(format!("fence string exp -1 {f}"));
    }
    for (name, z) in [("waiters", &s.queue), ("waiters:exp", &s.expiries)] {
        if let Some(z) = z {
            out.push(format!("{name} zset exp {}", exp(z.expire_at)));
            for (m, sc) in &z.value {
                out.push(format!("{m}={sc}"));
            }
        }
    }
    if let Some(n) = &s.next {
        out.push(format!("next string exp {} {}", exp(n.expire_at), n.value));
    }
    if let Some(i) = &s.info {
        out.push(format!("waiters:info hash exp {}", exp(i.expire_at)));
        for (k, v) in &i.value {
            out.push(format!("{k}={v}"));
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Nil => "nil".into(),
        other => format!("{other:?}"),
    }
}

fn dump_real(c: &mut redis::Connection, out: &mut Outcome) {
    for (name, suffix) in KEYS {
        let k = key(suffix);
        let ty: String = redis::cmd("TYPE").arg(&k).query(c).expect("TYPE");
        if ty == "none" {
            continue;
        }
        let exp: i64 = redis::cmd("PEXPIRETIME")
            .arg(&k)
            .query(c)
            .expect("PEXPIRETIME");
        match ty.as_str() {
            "hash" => {
                out.push(format!("{name} hash exp {exp}"));
                let f: BTreeMap<String, String> =
                    redis::cmd("HGETALL").arg(&k).query(c).expect("HGETALL");
                for (k, v) in f {
                    out.push(format!("{k}={v}"));
                }
            }
            "zset" => {
                out.push(format!("{name} zset exp {exp}"));
                let z: Vec<(String, u64)> = redis::cmd("ZRANGE")
                    .arg(&k)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query(c)
                    .expect("ZRANGE");
                let z: BTreeMap<String, u64> = z.into_iter().collect();
                for (m, s) in z {
                    out.push(format!("{m}={s}"));
                }
            }
            "string" => {
                let v: String = redis::cmd("GET").arg(&k).query(c).expect("GET");
                if name == "next" {
                    out.push(format!("next string exp {exp} {v}"));
                } else {
                    out.push(format!("fence string exp {exp} {v}"));
                }
            }
            other => panic!("{k} has type {other}"),
        }
    }
}

fn write_state(c: &mut redis::Connection, s: &Store) {
    let keys: Vec<String> = KEYS.iter().map(|(_, k)| key(k)).collect();
    let _: () = redis::cmd("DEL").arg(&keys).query(c).expect("DEL");
    let expire = |c: &mut redis::Connection, k: &str, e: Option<u64>| {
        if let Some(e) = e {
            let _: () = redis::cmd("PEXPIREAT")
                .arg(k)
                .arg(e)
                .query(c)
                .expect("PEXPIREAT");
        }
    };
    if let Some(l) = &s.lock {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&keys[0])
            .arg("owner")
            .arg(&l.value.owner)
            .arg("token")
            .arg(l.value.token)
            .arg("count")
            .arg(l.value.count)
            .arg("meta")
            .arg(&l.value.meta);
        for r in &l.value.reqs {
            cmd.arg(format!("r:{r}")).arg(1);
        }
        let _: () = cmd.query(c).expect("HSET");
        expire(c, &keys[0], l.expire_at);
    }
    if let Some(f) = s.fence {
        let _: () = redis::cmd("SET")
            .arg(&keys[1])
            .arg(f)
            .query(c)
            .expect("SET");
    }
    for (i, z) in [(2, &s.queue), (3, &s.expiries)] {
        if let Some(z) = z {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&keys[i]);
            for (m, sc) in &z.value {
                cmd.arg(*sc).arg(m);
            }
            let _: () = cmd.query(c).expect("ZADD");
            expire(c, &keys[i], z.expire_at);
        }
    }
    if let Some(n) = &s.next {
        let _: () = redis::cmd("SET")
            .arg(&keys[4])
            .arg(&n.value)
            .query(c)
            .expect("SET");
        expire(c, &keys[4], n.expire_at);
    }
    if let Some(i) = &s.info {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(&keys[5]);
        for (k, v) in &i.value {
            cmd.arg(k).arg(v);
        }
        let _: () = cmd.query(c).expect("HSET");
        expire(c, &keys[5], i.expire_at);
    }
}

fn server_us(c: &mut redis::Connection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(c).expect("TIME");
    s * 1_000_000 + us
}

/// The twin's outcome of `call` on `store` at server time `now_us`.
fn run_model(store: &Store, call: &Call, now_us: u64) -> Outcome {
    let mut s = store.clone();
    let mut out = Outcome::default();
    let mut run = Run::new(&mut s, now_us);
    let reply: Vec<String> = match call {
        Call::Acquire(a) => run
            .acquire(a)
            .to_list()
            .iter()
            .map(i64::to_string)
            .collect(),
        Call::Release(o, r, res, claim) => {
            let (a, b) = run.release(o, r, *res, *claim);
            vec![a.to_string(), b.to_string()]
        }
        Call::Leave(r, res, claim) => vec![run.leave(r, *res, *claim).to_string()],
        Call::Renew(o, r, ttl) => vec![run.renew(o, r, *ttl).to_string()],
        Call::Extend(o, r, ttl) => {
            let (a, b) = run.extend(o, r, *ttl);
            vec![a.to_string(), b.to_string()]
        }
        Call::RaiseFence(o, r, t) => vec![run.raise_fence(o, r, *t).to_string()],
        Call::ForceRelease(res, claim) => {
            let (o, t, n, m, p) = run.force_release(*res, *claim);
            vec![o, t, n, m, p.to_string()]
        }
    };
    let published = std::mem::take(&mut run.published);
    out.push("reply");
    for r in reply {
        out.push(r);
    }
    dump_model(&s, &mut out);
    for m in published {
        out.push(format!("message {m}"));
    }
    out
}

/// Run `call` with the real script; the reply's parts (its tag checked and dropped).
fn run_real(c: &mut redis::Connection, call: &Call, tag: u64) -> Vec<String> {
    let k = |suffixes: &[&str]| suffixes.iter().map(|s| key(s)).collect::<Vec<_>>();
    let lock_keys = k(&RELEASE_KEYS);
    let b = |v: bool| if v { "1" } else { "0" };
    let (src, keys, args): (&str, Vec<String>, Vec<String>) = match call {
        Call::Acquire(a) => (
            scripts::ACQUIRE.plain,
            KEYS.iter().map(|(_, k)| key(k)).collect(),
            vec![
                a.owner.clone(),
                a.req.clone(),
                a.ttl.to_string(),
                b(a.reentrant).into(),
                a.waitms.to_string(),
                b(a.queued).into(),
                a.meta.clone(),
                b(a.fair).into(),
                a.try_no.to_string(),
            ],
        ),
        Call::Release(o, r, res, claim) => (
            scripts::RELEASE.plain,
            lock_keys,
            vec![o.clone(), r.clone(), res.to_string(), claim.to_string()],
        ),
        Call::Leave(r, res, claim) => (
            scripts::LEAVE.plain,
            lock_keys,
            vec![r.clone(), res.to_string(), claim.to_string()],
        ),
        Call::Renew(o, r, ttl) => (
            scripts::RENEW.plain,
            k(&[""]),
            vec![o.clone(), r.clone(), ttl.to_string()],
        ),
        Call::Extend(o, r, ttl) => (
            scripts::EXTEND.plain,
            k(&[""]),
            vec![o.clone(), r.clone(), ttl.to_string()],
        ),
        Call::RaiseFence(o, r, t) => (
            scripts::RAISE_FENCE.plain,
            k(&["", ":fence"]),
            vec![o.clone(), r.clone(), t.to_string()],
        ),
        Call::ForceRelease(res, claim) => (
            scripts::FORCE_RELEASE.plain,
            lock_keys,
            vec![res.to_string(), claim.to_string()],
        ),
    };
    let tagged = !matches!(call, Call::Leave(..) | Call::ForceRelease(..));
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(src).arg(keys.len()).arg(&keys).arg(&args);
    if tagged {
        cmd.arg(tag);
    }
    let v: Value = cmd.query(c).unwrap_or_else(|e| panic!("{call:?}: {e}"));
    match v {
        Value::Array(items) => {
            let mut parts: Vec<String> = items.iter().map(text).collect();
            if tagged {
                assert_eq!(parts.pop(), Some(tag.to_string()), "reply tag of {call:?}");
            }
            parts
        }
        other => vec![text(&other)],
    }
}

/// Whether `real` matches the twins at the two times: equal text, numbers in between.
/// A key's expiry time may differ by 1 ms more: inside one script Redis reads `PTTL`
/// against the current time and bases `PEXPIRE` on the script's start (or the other way
/// round, by version), so re-writing a TTL just read can move it by a millisecond.
fn matches(real: &[Tok], early: &[Tok], late: &[Tok]) -> bool {
    let mut after_exp = false;
    real.len() == early.len()
        && real.len() == late.len()
        && real.iter().zip(early).zip(late).all(|((r, e), l)| {
            let ok = match (r, e, l) {
                (Tok::Num(r), Tok::Num(e), Tok::Num(l)) => {
                    let slack = u64::from(after_exp);
                    e.min(l).saturating_sub(slack) <= *r && *r <= e.max(l) + slack
                }
                (r, e, l) => r == e && r == l,
            };
            after_exp = matches!(r, Tok::Text(t) if t.ends_with("exp "));
            ok
        })
}

#[test]
fn every_script_twin_gives_the_real_scripts_replies_keys_and_messages() {
    let server = RedisServer::start();
    let mut c = server.connection();
    let mut sub = server.connection();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(key(":released")).expect("SUBSCRIBE");
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut grants_announced = 0;
    for case in 0..CASES {
        let t = server_us(&mut c) / 1000;
        let store = gen_store(&mut g, t);
        let call = gen_call(&mut g, &store, t);
        write_state(&mut c, &store);
        let before = server_us(&mut c);
        let reply = run_real(&mut c, &call, 1000 + case as u64);
        let after = server_us(&mut c);
        let _: () = redis::cmd("PUBLISH")
            .arg(key(":released"))
            .arg("--end--")
            .query(&mut c)
            .expect("PUBLISH");
        let mut real = Outcome::default();
        real.push("reply");
        for r in reply {
            real.push(r);
        }
        dump_real(&mut c, &mut real);
        loop {
            let msg: String = pubsub
                .get_message()
                .expect("message")
                .get_payload()
                .expect("payload");
            if msg == "--end--" {
                break;
            }
            if msg.contains(' ') {
                grants_announced += 1;
            }
            real.push(format!("message {msg}"));
        }
        let early = run_model(&store, &call, before);
        let late = run_model(&store, &call, after);
        assert!(
            matches(&real.toks(), &early.toks(), &late.toks()),
            "case {case}: {call:?}\nstate: {store:#?}\nreal:  {:?}\ntwin:  {:?}\ntwin (at the later time): {:?}",
            real.parts,
            early.parts,
            late.parts
        );
        let name = match call {
            Call::Acquire(_) => "acquire",
            Call::Release(..) => "release",
            Call::Leave(..) => "leave",
            Call::Renew(..) => "renew",
            Call::Extend(..) => "extend",
            Call::RaiseFence(..) => "raise_fence",
            Call::ForceRelease(..) => "force_release",
        };
        *seen.entry(name).or_default() += 1;
    }
    eprintln!("twins agreed on {CASES} cases: {seen:?}; {grants_announced} grants announced");
    assert_eq!(seen.len(), 7, "every script was exercised: {seen:?}");
    assert!(
        grants_announced > 50,
        "handoffs were exercised: {grants_announced}"
    );
}
