//! The Lua scripts, one per operation, each hashed once and sent with `EVALSHA`.
//!
//! Every mutation leasehold makes is one of these scripts (invariant 2): it runs
//! atomically on the server, checks ownership itself, and is sent as `EVALSHA` with a
//! single `SCRIPT LOAD` fallback on `NOSCRIPT`, so a `SCRIPT FLUSH` is transparent. The
//! answer to `SCRIPT LOAD` is checked against the script's own hash, like every reply that
//! can be checked. The
//! contracts are written down in `PROTOCOL.md`.

use std::io;

use std::borrow::Cow;

use crate::conn::Con;
use redis::{FromRedisValue, RedisError, RedisResult, ToRedisArgs};

/// Source of the acquire script.
pub const ACQUIRE_LUA: &str = include_str!("scripts/acquire.lua");
/// Source of the release script (with the shared handoff function).
pub const RELEASE_LUA: &str = concat!(
    include_str!("scripts/handoff.lua"),
    include_str!("scripts/release.lua")
);
/// Source of the leave script (with the shared handoff function).
pub const LEAVE_LUA: &str = concat!(
    include_str!("scripts/handoff.lua"),
    include_str!("scripts/leave.lua")
);

/// How long a released lock stays reserved for the waiter it was handed to (ms). If that
/// waiter does not claim it in time (it crashed, or gave up), anyone may take it.
pub const RESERVATION_MS: u64 = 100;
/// Source of the batch renewal script.
pub const RENEW_LUA: &str = include_str!("scripts/renew.lua");
/// Source of the operator's force-release script (with the shared handoff function).
pub const FORCE_RELEASE_LUA: &str = concat!(
    include_str!("scripts/handoff.lua"),
    include_str!("scripts/force_release.lua")
);
/// Source of the (read-only) inspect script.
pub const INSPECT_LUA: &str = include_str!("scripts/inspect.lua");
/// Source of the extend script.
pub const EXTEND_LUA: &str = include_str!("scripts/extend.lua");
/// Source of the RedLock fence-raising script.
pub const RAISE_FENCE_LUA: &str = include_str!("scripts/raise_fence.lua");

macro_rules! with_members {
    ($file:literal) => {
        concat!(
            include_str!("scripts/members.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
}
/// Source of the semaphore acquire script (with the shared lease-set functions).
pub const SEM_ACQUIRE_LUA: &str = with_members!("sem_acquire.lua");
/// Source of the (read-only) semaphore count script.
pub const SEM_COUNT_LUA: &str = include_str!("scripts/sem_count.lua");
/// Source of the lease-set member release script (a permit or a reader).
pub const MEMBER_RELEASE_LUA: &str = with_members!("member_release.lua");
/// Source of the lease-set member renew/extend script (a permit or a reader).
pub const MEMBER_RENEW_LUA: &str = with_members!("member_renew.lua");
/// Source of the read-write lock's read acquire script.
pub const RW_READ_LUA: &str = with_members!("rw_read.lua");
/// Source of the read-write lock's write acquire script.
pub const RW_WRITE_LUA: &str = with_members!("rw_write.lua");
/// Source of the read-write lock's write release script.
pub const RW_RELEASE_LUA: &str = with_members!("rw_release.lua");
/// Source of the read-write lock's leave script (a waiting writer gives up).
pub const RW_LEAVE_LUA: &str = with_members!("rw_leave.lua");

/// One script: its source and SHA1 (computed once).
pub(crate) struct Script {
    code: Cow<'static, str>,
    hash: String,
}

impl Script {
    fn new(code: impl Into<Cow<'static, str>>) -> Self {
        let code = code.into();
        Script {
            hash: redis::Script::new(&code).get_hash().to_string(),
            code,
        }
    }

    /// A call of this script, starting with its first key.
    pub(crate) fn key<T: ToRedisArgs>(&self, key: T) -> Call<'_> {
        let mut call = self.prepare_invoke();
        call.key(key);
        call
    }

    /// A call of this script without arguments yet.
    pub(crate) fn prepare_invoke(&self) -> Call<'_> {
        Call {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// A script call being built: keys, then arguments.
pub(crate) struct Call<'a> {
    script: &'a Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call<'_> {
    /// Add a key (`KEYS[i]`).
    pub(crate) fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Add an argument (`ARGV[i]`).
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    fn evalsha(&self) -> redis::Cmd {
        self.command("EVALSHA", self.script.hash.as_bytes())
    }

    fn eval(&self) -> redis::Cmd {
        self.command("EVAL", self.script.code.as_bytes())
    }

    fn command(&self, name: &str, script: &[u8]) -> redis::Cmd {
        let mut cmd = redis::cmd(name);
        cmd.arg(script).arg(self.keys.len());
        for k in &self.keys {
            cmd.arg(k.as_slice());
        }
        for a in &self.args {
            cmd.arg(a.as_slice());
        }
        cmd
    }

    /// `EVALSHA`, and on `NOSCRIPT` one `SCRIPT LOAD` (whose answer must be this script's
    /// hash, or the connection is out of step) and the `EVALSHA` again. On a cluster,
    /// where `SCRIPT LOAD` would go to a random node, the fallback is one `EVAL` instead
    /// (routed by key like the `EVALSHA`, and caching the script on that node).
    pub(crate) async fn invoke<T: FromRedisValue>(&self, con: &mut Con) -> RedisResult<T> {
        match self.evalsha().query_async(con).await {
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                    && con.is_cluster() =>
            {
                self.eval().query_async(con).await
            }
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let hash: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(&*self.script.code)
                    .query_async(con)
                    .await?;
                if hash != self.script.hash {
                    return Err(RedisError::from(io::Error::other(
                        "SCRIPT LOAD answered with another hash: the connection is out of step",
                    )));
                }
                self.evalsha().query_async(con).await
            }
            other => other,
        }
    }
}

/// The scripts of one client.
pub(crate) struct Scripts {
    pub acquire: Script,
    pub release: Script,
    pub extend: Script,
    pub leave: Script,
    pub renew: Script,
    pub inspect: Script,
    pub force_release: Script,
    pub raise_fence: Script,
    pub sem_acquire: Script,
    pub sem_count: Script,
    pub member_release: Script,
    pub member_renew: Script,
    pub rw_read: Script,
    pub rw_write: Script,
    pub rw_release: Script,
    pub rw_leave: Script,
}

impl Scripts {
    /// The scripts; `sharded` (Redis Cluster): releases announce themselves with
    /// `SPUBLISH`, so that only the node owning the lock's slot carries the message.
    pub(crate) fn new(sharded: bool) -> Self {
        let publish = |code: &'static str| -> Cow<'static, str> {
            if sharded {
                Cow::Owned(code.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',"))
            } else {
                Cow::Borrowed(code)
            }
        };
        Scripts {
            acquire: Script::new(ACQUIRE_LUA),
            release: Script::new(publish(RELEASE_LUA)),
            extend: Script::new(EXTEND_LUA),
            leave: Script::new(publish(LEAVE_LUA)),
            renew: Script::new(RENEW_LUA),
            inspect: Script::new(INSPECT_LUA),
            force_release: Script::new(publish(FORCE_RELEASE_LUA)),
            raise_fence: Script::new(RAISE_FENCE_LUA),
            sem_acquire: Script::new(SEM_ACQUIRE_LUA),
            sem_count: Script::new(SEM_COUNT_LUA),
            member_release: Script::new(publish(MEMBER_RELEASE_LUA)),
            member_renew: Script::new(MEMBER_RENEW_LUA),
            rw_read: Script::new(RW_READ_LUA),
            rw_write: Script::new(RW_WRITE_LUA),
            rw_release: Script::new(publish(RW_RELEASE_LUA)),
            rw_leave: Script::new(publish(RW_LEAVE_LUA)),
        }
    }
}
