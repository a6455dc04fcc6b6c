//! All or nothing: every script that writes checks the type of every key it may write
//! before its first write. A key of a foreign type (another application writing under
//! leasehold's prefix) fails the script with `WRONGTYPE` and leaves every key as it was;
//! the batch renewals skip such a key and renew the others. Each script is run here
//! directly (as `PROTOCOL.md` documents it), once per key, with that key replaced by a
//! value of another type, from a state in which the script would write.

use leasehold::scripts::{self, Source};
use leasehold_testkit::RedisServer;
use redis::Connection;

const TAG: &str = "7";

/// Every key of the test's name, with its type, value (DUMP) and TTL: none (-1), up to
/// 30 s (what the setups give), or longer (what extends and renewals give).
fn snapshot(con: &mut Connection) -> Vec<(String, String, Vec<u8>, i64)> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("t:*").query(con).unwrap();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let t: String = redis::cmd("TYPE").arg(&k).query(con).unwrap();
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(con).unwrap();
            let pttl: i64 = redis::cmd("PTTL").arg(&k).query(con).unwrap();
            let ttl = match pttl {
                p if p < 0 => p,
                p if p <= 30_000 => 1,
                _ => 2,
            };
            (k, t, dump, ttl)
        })
        .collect()
}

fn run(
    con: &mut Connection,
    src: Source,
    keys: &[&str],
    argv: &[&str],
) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(src.plain).arg(keys.len());
    for k in keys {
        cmd.arg(*k);
    }
    for a in argv {
        cmd.arg(*a);
    }
    cmd.arg(TAG).query(con)
}

/// Put a value of another type than `kind` at `key`.
fn make_foreign(con: &mut Connection, key: &str, kind: &str) {
    let _: () = redis::cmd("DEL").arg(key).query(con).unwrap();
    let _: () = if kind == "string" {
        redis::cmd("HSET")
            .arg(key)
            .arg("f")
            .arg("v")
            .query(con)
            .unwrap()
    } else {
        redis::cmd("SET")
            .arg(key)
            .arg("someone else's")
            .query(con)
            .unwrap()
    };
}

fn redis_do(con: &mut Connection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query(con).unwrap();
}

/// A script, its keys (with the type the script keeps there), its arguments, and the
/// commands that set up a state in which it writes.
struct Case {
    name: &'static str,
    script: Source,
    keys: &'static [(&'static str, &'static str)],
    argv: &'static [&'static str],
    setup: &'static [&'static [&'static str]],
}

/// An empty server, then the case's setup.
fn prepare(con: &mut Connection, case: &Case) {
    redis_do(con, &["FLUSHALL"]);
    for step in case.setup {
        redis_do(con, step);
    }
}

const SEM_KEYS: &[(&str, &str)] = &[
    ("t:{n}:sem", "zset"),
    ("t:{n}:sem:tokens", "hash"),
    ("t:{n}:sem:fence", "string"),
    ("t:{n}:sem:waiters", "zset"),
    ("t:{n}:sem:waiters:exp", "zset"),
    ("t:{n}:sem:waiters:info", "hash"),
];
const SEM_RELEASE_KEYS: &[(&str, &str)] = &[
    ("t:{n}:sem", "zset"),
    ("t:{n}:sem:tokens", "hash"),
    ("t:{n}:sem:waiters", "zset"),
    ("t:{n}:sem:waiters:exp", "zset"),
    ("t:{n}:sem:fence", "string"),
    ("t:{n}:sem:waiters:info", "hash"),
];
const SEM_LEAVE_KEYS: &[(&str, &str)] = &[
    ("t:{n}:sem", "zset"),
    ("t:{n}:sem:waiters", "zset"),
    ("t:{n}:sem:waiters:exp", "zset"),
    ("t:{n}:sem:tokens", "hash"),
    ("t:{n}:sem:fence", "string"),
    ("t:{n}:sem:waiters:info", "hash"),
];
const RW_WRITE_KEYS: &[(&str, &str)] = &[
    ("t:{n}:rw", "hash"),
    ("t:{n}:rw:readers", "zset"),
    ("t:{n}:rw:readers:tokens", "hash"),
    ("t:{n}:rw:writers", "zset"),
    ("t:{n}:rw:fence", "string"),
    ("t:{n}:rw:writers:order", "zset"),
    ("t:{n}:rw:writers:info", "hash"),
];
const RW_LEAVE_KEYS: &[(&str, &str)] = &[
    ("t:{n}:rw:writers", "zset"),
    ("t:{n}:rw:writers:order", "zset"),
    ("t:{n}:rw:writers:info", "hash"),
    ("t:{n}:rw", "hash"),
    ("t:{n}:rw:readers", "zset"),
    ("t:{n}:rw:fence", "string"),
];
/// A waiting writer `w`: its place's expiry, its arrival and its details.
const RW_W_PLACE: &[&str] = &["ZADD", "t:{n}:rw:writers", "99999999999999", "w"];
const RW_W_ORDER: &[&str] = &["ZADD", "t:{n}:rw:writers:order", "1", "w"];
const RW_W_INFO: &[&str] = &["HSET", "t:{n}:rw:writers:info", "w", "1\n10000\now\n{}"];
const RW_WAITING_WRITER: &[&[&str]] = &[RW_W_PLACE, RW_W_ORDER, RW_W_INFO];
const LOCK: (&str, &str) = ("t:{n}", "hash");
const FENCE: (&str, &str) = ("t:{n}:fence", "string");
const QUEUE: (&str, &str) = ("t:{n}:waiters", "zset");
const EXPIRIES: (&str, &str) = ("t:{n}:waiters:exp", "zset");
const NEXT: (&str, &str) = ("t:{n}:next", "string");
const INFO: (&str, &str) = ("t:{n}:waiters:info", "hash");

const HELD: &[&str] = &[
    "HSET", "t:{n}", "owner", "o", "token", "5", "count", "1", "r:r1", "1", "meta", "{}",
];
const HELD_TTL: &[&str] = &["PEXPIRE", "t:{n}", "20000"];
const WAITER: &[&str] = &["ZADD", "t:{n}:waiters", "1", "w"];
const WAITER_EXP: &[&str] = &["ZADD", "t:{n}:waiters:exp", "99999999999999", "w"];
const WAITER_INFO: &[&str] = &["HSET", "t:{n}:waiters:info", "w", "1\n10000\now\n{}"];
const COUNTER: &[&str] = &["SET", "t:{n}:fence", "5"];

fn cases() -> Vec<Case> {
    vec![
        Case {
            // A waiter (r1, queued) takes the lock reserved for it: the one path that
            // writes every key (an uncontended grant leaves the queue keys alone).
            name: "acquire (free lock: grant to a queued waiter)",
            script: scripts::ACQUIRE,
            keys: &[LOCK, FENCE, QUEUE, EXPIRIES, NEXT, INFO],
            argv: &["o", "r1", "10000", "0", "5000", "1", "{}", "0", "2"],
            setup: &[
                COUNTER,
                &["ZADD", "t:{n}:waiters", "1", "r1"],
                &["ZADD", "t:{n}:waiters:exp", "99999999999999", "r1"],
                &["HSET", "t:{n}:waiters:info", "r1", "1\n10000\no\n{}"],
                &["SET", "t:{n}:next", "r1", "PX", "5000"],
            ],
        },
        Case {
            name: "release (hand-off: the waiter is made the holder)",
            script: scripts::RELEASE,
            keys: &[LOCK, QUEUE, EXPIRIES, NEXT, FENCE, INFO],
            argv: &["o", "r1", "100", "250"],
            setup: &[HELD, HELD_TTL, WAITER, WAITER_EXP, WAITER_INFO, COUNTER],
        },
        Case {
            name: "release (hand-off: reserved for a waiter without details)",
            script: scripts::RELEASE,
            keys: &[LOCK, QUEUE, EXPIRIES, NEXT, FENCE, INFO],
            argv: &["o", "r1", "100", "250"],
            setup: &[HELD, HELD_TTL, WAITER, WAITER_EXP],
        },
        Case {
            // The waiter was made the holder and never confirmed: the grant ends and the
            // lock goes to the next waiter.
            name: "leave (granted: handed on)",
            script: scripts::LEAVE,
            keys: &[LOCK, QUEUE, EXPIRIES, NEXT, FENCE, INFO],
            argv: &["w", "100", "250"],
            setup: &[
                &[
                    "HSET", "t:{n}", "owner", "ow", "token", "5", "count", "1", "r:w", "1", "meta",
                    "{}",
                ],
                HELD_TTL,
                &["ZADD", "t:{n}:waiters", "2", "x"],
                &["ZADD", "t:{n}:waiters:exp", "99999999999999", "x"],
                &["HSET", "t:{n}:waiters:info", "x", "1\n10000\nox\n{}"],
                COUNTER,
            ],
        },
        Case {
            name: "leave",
            script: scripts::LEAVE,
            keys: &[LOCK, QUEUE, EXPIRIES, NEXT, FENCE, INFO],
            argv: &["w", "100", "250"],
            setup: &[
                WAITER,
                WAITER_EXP,
                &["SET", "t:{n}:next", "w", "PX", "5000"],
            ],
        },
        Case {
            name: "force release",
            script: scripts::FORCE_RELEASE,
            keys: &[LOCK, QUEUE, EXPIRIES, NEXT, FENCE, INFO],
            argv: &["100", "250"],
            setup: &[HELD, HELD_TTL, WAITER, WAITER_EXP, WAITER_INFO, COUNTER],
        },
        Case {
            name: "extend",
            script: scripts::EXTEND,
            keys: &[LOCK],
            argv: &["o", "r1", "60000"],
            setup: &[HELD, HELD_TTL],
        },
        Case {
            name: "raise fence (RedLock)",
            script: scripts::RAISE_FENCE,
            keys: &[LOCK, FENCE],
            argv: &["o", "r1", "1000"],
            setup: &[HELD, HELD_TTL, COUNTER],
        },
        Case {
            // A queued waiter (r1) takes a free permit; an expired one (old) is pruned
            // first.
            name: "semaphore acquire",
            script: scripts::SEM_ACQUIRE,
            keys: SEM_KEYS,
            argv: &["r1", "10000", "3", "5000", "1", "2"],
            setup: &[
                &["SET", "t:{n}:sem:fence", "5"],
                &["ZADD", "t:{n}:sem", "1", "old"],
                &["HSET", "t:{n}:sem:tokens", "old", "4"],
                &["PEXPIRE", "t:{n}:sem", "20000"],
                &["PEXPIRE", "t:{n}:sem:tokens", "20000"],
                &["ZADD", "t:{n}:sem:waiters", "1", "r1"],
                &["ZADD", "t:{n}:sem:waiters:exp", "99999999999999", "r1"],
                &["HSET", "t:{n}:sem:waiters:info", "r1", "1\n10000\n1\n"],
            ],
        },
        Case {
            // The freed permit goes to the waiter, which holds it at once.
            name: "semaphore permit release (hand-off: the waiter holds the permit)",
            script: scripts::MEMBER_RELEASE,
            keys: SEM_RELEASE_KEYS,
            argv: &["r1", "t:{n}:sem:released", "1", "250"],
            setup: &[
                &["ZADD", "t:{n}:sem", "99999999999999", "r1"],
                &["HSET", "t:{n}:sem:tokens", "r1", "5"],
                &["ZADD", "t:{n}:sem:waiters", "1", "w"],
                &["ZADD", "t:{n}:sem:waiters:exp", "99999999999999", "w"],
                &["HSET", "t:{n}:sem:waiters:info", "w", "3\n10000\n1\n"],
                &["SET", "t:{n}:sem:fence", "5"],
            ],
        },
        Case {
            name: "semaphore permit release",
            script: scripts::MEMBER_RELEASE,
            keys: SEM_RELEASE_KEYS,
            argv: &["r1", "t:{n}:sem:released", "3", "250"],
            setup: &[
                &["ZADD", "t:{n}:sem", "99999999999999", "r1"],
                &["HSET", "t:{n}:sem:tokens", "r1", "5"],
                &["ZADD", "t:{n}:sem:waiters", "1", "w"],
                &["ZADD", "t:{n}:sem:waiters:exp", "1", "w"],
            ],
        },
        Case {
            name: "reader release",
            script: scripts::MEMBER_RELEASE,
            keys: &[("t:{n}:sem", "zset"), ("t:{n}:sem:tokens", "hash")],
            argv: &["r1", "t:{n}:sem:released", "0"],
            setup: &[
                &["ZADD", "t:{n}:sem", "99999999999999", "r1"],
                &["HSET", "t:{n}:sem:tokens", "r1", "5"],
            ],
        },
        Case {
            name: "semaphore leave",
            script: scripts::SEM_LEAVE,
            keys: SEM_LEAVE_KEYS,
            argv: &["w", "t:{n}:sem:released", "3", "250"],
            setup: &[
                &["ZADD", "t:{n}:sem:waiters", "1", "w"],
                &["ZADD", "t:{n}:sem:waiters:exp", "99999999999999", "w"],
            ],
        },
        Case {
            // A release granted w a permit it never took: it ends and goes on to x.
            name: "semaphore leave (granted: handed on)",
            script: scripts::SEM_LEAVE,
            keys: SEM_LEAVE_KEYS,
            argv: &["w", "t:{n}:sem:released", "1", "250"],
            setup: &[
                &["ZADD", "t:{n}:sem", "99999999999999", "w"],
                &["HSET", "t:{n}:sem:tokens", "w", "5"],
                &["ZADD", "t:{n}:sem:waiters", "2", "x"],
                &["ZADD", "t:{n}:sem:waiters:exp", "99999999999999", "x"],
                &["HSET", "t:{n}:sem:waiters:info", "x", "1\n10000\n1\n"],
                &["SET", "t:{n}:sem:fence", "5"],
            ],
        },
        Case {
            name: "read acquire",
            script: scripts::RW_READ,
            keys: &[
                ("t:{n}:rw", "hash"),
                ("t:{n}:rw:readers", "zset"),
                ("t:{n}:rw:readers:tokens", "hash"),
                ("t:{n}:rw:writers", "zset"),
                ("t:{n}:rw:fence", "string"),
            ],
            argv: &["r1", "10000"],
            setup: &[&["SET", "t:{n}:rw:fence", "5"]],
        },
        Case {
            name: "write acquire",
            script: scripts::RW_WRITE,
            keys: RW_WRITE_KEYS,
            argv: &["o", "r1", "10000", "5000", "{}", "1"],
            setup: &[&["SET", "t:{n}:rw:fence", "5"]],
        },
        Case {
            // A reader holds: the writer registers and leaves its details.
            name: "write acquire (refused: registered with its details)",
            script: scripts::RW_WRITE,
            keys: RW_WRITE_KEYS,
            argv: &["o", "r1", "10000", "5000", "{}", "1"],
            setup: &[
                &["ZADD", "t:{n}:rw:readers", "99999999999999", "rd"],
                &["HSET", "t:{n}:rw:readers:tokens", "rd", "4"],
                &["PEXPIRE", "t:{n}:rw:readers", "20000"],
                &["PEXPIRE", "t:{n}:rw:readers:tokens", "20000"],
            ],
        },
        Case {
            // The lock goes to the waiting writer w.
            name: "write release (hand-off: the waiting writer is made the writer)",
            script: scripts::RW_RELEASE,
            keys: &[
                ("t:{n}:rw", "hash"),
                ("t:{n}:rw:writers", "zset"),
                ("t:{n}:rw:writers:order", "zset"),
                ("t:{n}:rw:writers:info", "hash"),
                ("t:{n}:rw:fence", "string"),
            ],
            argv: &["o", "r1", "t:{n}:rw:released", "250"],
            setup: &[
                &[
                    "HSET", "t:{n}:rw", "owner", "o", "token", "5", "count", "1", "r:r1", "1",
                ],
                &["PEXPIRE", "t:{n}:rw", "20000"],
                RW_W_PLACE,
                RW_W_ORDER,
                RW_W_INFO,
                &["SET", "t:{n}:rw:fence", "5"],
            ],
        },
        Case {
            // The last reader leaves: the lock goes to the waiting writer w.
            name: "read release (hand-off: the last reader makes the waiting writer the writer)",
            script: scripts::RW_READ_RELEASE,
            keys: &[
                ("t:{n}:rw:readers", "zset"),
                ("t:{n}:rw:readers:tokens", "hash"),
                ("t:{n}:rw", "hash"),
                ("t:{n}:rw:writers", "zset"),
                ("t:{n}:rw:writers:order", "zset"),
                ("t:{n}:rw:writers:info", "hash"),
                ("t:{n}:rw:fence", "string"),
            ],
            argv: &["r1", "t:{n}:rw:released", "250"],
            setup: &[
                &["ZADD", "t:{n}:rw:readers", "99999999999999", "r1"],
                &["HSET", "t:{n}:rw:readers:tokens", "r1", "4"],
                RW_W_PLACE,
                RW_W_ORDER,
                RW_W_INFO,
                &["SET", "t:{n}:rw:fence", "5"],
            ],
        },
        Case {
            name: "waiting writer leaves",
            script: scripts::RW_LEAVE,
            keys: RW_LEAVE_KEYS,
            argv: &["w", "t:{n}:rw:released", "250"],
            setup: RW_WAITING_WRITER,
        },
        Case {
            // A release made w the writer; it never took the lock: it goes to x.
            name: "waiting writer leaves (granted: handed on)",
            script: scripts::RW_LEAVE,
            keys: RW_LEAVE_KEYS,
            argv: &["w", "t:{n}:rw:released", "250"],
            setup: &[
                &[
                    "HSET", "t:{n}:rw", "owner", "ow", "token", "5", "count", "1", "r:w", "1",
                    "meta", "{}",
                ],
                &["PEXPIRE", "t:{n}:rw", "250"],
                &["ZADD", "t:{n}:rw:writers", "99999999999999", "x"],
                &["ZADD", "t:{n}:rw:writers:order", "2", "x"],
                &["HSET", "t:{n}:rw:writers:info", "x", "1\n10000\nox\n{}"],
                &["SET", "t:{n}:rw:fence", "5"],
            ],
        },
    ]
}

#[test]
fn every_writing_script_refuses_a_key_of_a_foreign_type_before_it_writes_anything() {
    let server = RedisServer::start();
    let mut con = server.connection();
    for case in cases() {
        let keys: Vec<&str> = case.keys.iter().map(|(k, _)| *k).collect();
        // The control: from this state the script runs and writes.
        prepare(&mut con, &case);
        let before = snapshot(&mut con);
        run(&mut con, case.script, &keys, case.argv)
            .unwrap_or_else(|e| panic!("{}: the control run failed: {e}", case.name));
        assert_ne!(
            snapshot(&mut con),
            before,
            "{}: the control run wrote nothing",
            case.name
        );
        // Each key in turn of a foreign type: refused, nothing changed.
        for (key, kind) in case.keys {
            prepare(&mut con, &case);
            make_foreign(&mut con, key, kind);
            let before = snapshot(&mut con);
            let err = run(&mut con, case.script, &keys, case.argv)
                .expect_err(&format!("{}: a foreign {key} was not refused", case.name));
            assert!(
                err.to_string().contains("WRONGTYPE"),
                "{}, foreign {key}: {err}",
                case.name
            );
            assert_eq!(
                snapshot(&mut con),
                before,
                "{}: with a foreign {key} the script changed something before failing",
                case.name
            );
        }
    }
}

#[test]
fn a_refused_semaphore_try_refuses_a_foreign_queue_key_before_it_queues_the_caller() {
    // Every permit is held and nobody waits yet: the caller queues and leaves its details,
    // and writes nothing else (so the permits, tokens and counter are not checked here).
    let server = RedisServer::start();
    let mut con = server.connection();
    let keys: Vec<&str> = SEM_KEYS.iter().map(|(k, _)| *k).collect();
    let argv = ["r1", "10000", "1", "5000", "0", "1"];
    let setup = |con: &mut Connection| {
        redis_do(con, &["FLUSHALL"]);
        redis_do(con, &["ZADD", "t:{n}:sem", "99999999999999", "h"]);
        redis_do(con, &["HSET", "t:{n}:sem:tokens", "h", "5"]);
        redis_do(con, &["PEXPIRE", "t:{n}:sem", "20000"]);
        redis_do(con, &["PEXPIRE", "t:{n}:sem:tokens", "20000"]);
    };
    setup(&mut con);
    let before = snapshot(&mut con);
    let reply = run(&mut con, scripts::SEM_ACQUIRE, &keys, &argv).unwrap();
    assert!(
        matches!(&reply, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "refused: {reply:?}"
    );
    let info: Option<String> = redis::cmd("HGET")
        .arg("t:{n}:sem:waiters:info")
        .arg("r1")
        .query(&mut con)
        .unwrap();
    // "TRY:AT\nTTL\nCAP\n": try 1, the server time it ran at, its ttl and capacity.
    let info = info.expect("the caller's details");
    let (try_at, rest) = info.split_once('\n').unwrap();
    let (try_no, at) = try_at.split_once(':').unwrap();
    assert_eq!((try_no, rest), ("1", "10000\n1\n"), "{info:?}");
    assert!(at.parse::<u64>().unwrap() > 1_600_000_000_000, "{info:?}");
    assert_ne!(snapshot(&mut con), before, "the control run wrote nothing");
    for (key, kind) in &SEM_KEYS[3..] {
        setup(&mut con);
        make_foreign(&mut con, key, kind);
        let before = snapshot(&mut con);
        let err = run(&mut con, scripts::SEM_ACQUIRE, &keys, &argv)
            .expect_err(&format!("a foreign {key} was not refused"));
        assert!(
            err.to_string().contains("WRONGTYPE"),
            "foreign {key}: {err}"
        );
        assert_eq!(
            snapshot(&mut con),
            before,
            "foreign {key}: something changed"
        );
    }
}

#[test]
fn batch_renewals_skip_a_key_of_a_foreign_type_and_renew_the_others() {
    let server = RedisServer::start();
    let mut con = server.connection();
    redis_do(&mut con, &["HSET", "t:{a}", "owner", "o", "r:r1", "1"]);
    redis_do(&mut con, &["PEXPIRE", "t:{a}", "1000"]);
    redis_do(&mut con, &["SET", "t:{b}", "someone else's"]);
    redis_do(&mut con, &["HSET", "t:{c}", "owner", "o", "r:r3", "1"]);
    redis_do(&mut con, &["PEXPIRE", "t:{c}", "1000"]);
    let reply: Vec<i64> = redis::cmd("EVAL")
        .arg(scripts::RENEW.plain)
        .arg(3)
        .arg("t:{a}")
        .arg("t:{b}")
        .arg("t:{c}")
        .arg(&[
            "o", "r1", "60000", "o", "r2", "60000", "o", "r3", "60000", TAG,
        ])
        .query(&mut con)
        .unwrap();
    assert_eq!(
        reply,
        [1, 0, 1, 7],
        "the foreign key holds no lease; the others renew"
    );
    for key in ["t:{a}", "t:{c}"] {
        let pttl: i64 = redis::cmd("PTTL").arg(key).query(&mut con).unwrap();
        assert!(pttl > 30_000, "{key} was not renewed: {pttl}");
    }
    let pttl: i64 = redis::cmd("PTTL").arg("t:{b}").query(&mut con).unwrap();
    assert_eq!(pttl, -1, "the foreign key was not touched");

    // Lease sets: a set of a foreign type, and a tokens hash of a foreign type.
    redis_do(&mut con, &["FLUSHALL"]);
    redis_do(&mut con, &["ZADD", "t:{s}", "99999999999999", "r1"]);
    redis_do(&mut con, &["HSET", "t:{s}:tokens", "r1", "5"]);
    redis_do(&mut con, &["SET", "t:{f}", "x"]);
    redis_do(&mut con, &["ZADD", "t:{g}", "99999999999999", "r3"]);
    redis_do(&mut con, &["SET", "t:{g}:tokens", "x"]);
    let reply: Vec<i64> = redis::cmd("EVAL")
        .arg(scripts::MEMBER_RENEW.plain)
        .arg(6)
        .arg(&[
            "t:{s}",
            "t:{s}:tokens",
            "t:{f}",
            "t:{f}:tokens",
            "t:{g}",
            "t:{g}:tokens",
        ])
        .arg(&["r1", "60000", "r2", "60000", "r3", "60000", TAG])
        .query(&mut con)
        .unwrap();
    assert_eq!(reply, [1, 0, 0, 7]);
    let pttl: i64 = redis::cmd("PTTL")
        .arg("t:{g}:tokens")
        .query(&mut con)
        .unwrap();
    assert_eq!(pttl, -1, "the foreign tokens key was not touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_refused_by_a_foreign_waiter_queue_leaves_the_lock_held_and_says_why() {
    let server = RedisServer::start();
    let client = leasehold::Client::builder(server.url()).build().unwrap();
    let lock = client.lock("shared").unwrap();
    let guard = lock.acquire().await.unwrap();
    let mut con = server.connection();
    redis_do(
        &mut con,
        &["SET", "leasehold:{shared}:waiters", "not a queue"],
    );
    let err = guard.release().await.unwrap_err();
    assert!(err.is_foreign_key(), "{err}");
    assert!(
        err.to_string().contains("leasehold:{shared}:waiters"),
        "{err}"
    );
    // Nothing was written: the lock is still there (it expires by its TTL).
    let exists: bool = redis::cmd("EXISTS")
        .arg("leasehold:{shared}")
        .query(&mut con)
        .unwrap();
    assert!(exists, "the release wrote before it failed");
}
