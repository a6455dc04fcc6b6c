//! The Lua scripts, one per operation, each hashed once and sent with `EVALSHA`.
//!
//! Each script is assembled at build time from a first line naming the publish command
//! (`PUBLISH`, or `SPUBLISH` for Redis Cluster), the shared prelude (`scripts/prelude.lua`:
//! reply tag, server time, fencing tokens, waiter queues, handoff, lease sets) and the
//! script's own file; nothing rewrites script text at run time.
//!
//! Every mutation leasehold makes is one of these scripts (invariant 2): it runs
//! atomically on the server, checks ownership itself, and is sent as `EVALSHA` with a
//! single `SCRIPT LOAD` fallback on `NOSCRIPT`, so a `SCRIPT FLUSH` is transparent. The
//! answer to `SCRIPT LOAD` is checked against the script's own hash, like every reply that
//! can be checked. The
//! contracts are written down in `PROTOCOL.md`.

use std::sync::LazyLock;

use redis::ToRedisArgs;

/// A script as sent: line 1 names the publish command (`PUBLISH`, or `SPUBLISH` on Redis
/// Cluster, so a release's announcement stays on the node that owns the lock's slot), then
/// the shared prelude (`scripts/prelude.lua`), then the script's own file. Assembled at
/// build time; `PROTOCOL.md` documents the same assembly for other clients.
macro_rules! assembled {
    ($publish:literal, $file:literal) => {
        concat!(
            "local PUBLISH = '",
            $publish,
            "'\n",
            include_str!("scripts/prelude.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
}

/// The batch script: the PUBLISH line, the prelude, the acquire, release and extend bodies
/// each wrapped as a function of `(KEYS, ARGV)` whose `reply` adds no tag, then
/// `batch.lua`, which runs a list of such calls (see `PROTOCOL.md`).
macro_rules! batched {
    ($publish:literal) => {
        concat!(
            "local PUBLISH = '",
            $publish,
            "'\n",
            include_str!("scripts/prelude.lua"),
            "local function acquire_call(KEYS, ARGV)\nlocal function reply(t) return t end\n",
            include_str!("scripts/acquire.lua"),
            "end\nlocal function release_call(KEYS, ARGV)\nlocal function reply(t) return t end\n",
            include_str!("scripts/release.lua"),
            "end\nlocal function extend_call(KEYS, ARGV)\nlocal function reply(t) return t end\n",
            include_str!("scripts/extend.lua"),
            "end\n",
            include_str!("scripts/batch.lua")
        )
    };
}

/// The batch script (see `batch.lua`): acquire, release and extend calls run one after
/// another in one script call, each with its own reply.
pub const BATCH: Source = Source {
    plain: batched!("PUBLISH"),
    sharded: batched!("SPUBLISH"),
};

/// The batch script as sent, hashed once per process.
static BATCH_PLAIN: LazyLock<Script> = LazyLock::new(|| Script::new(BATCH.plain));
static BATCH_SHARDED: LazyLock<Script> = LazyLock::new(|| Script::new(BATCH.sharded));

/// The two assemblies of one script file: for one server (and Sentinel, RedLock) and for
/// Redis Cluster.
macro_rules! source {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        $(#[$doc])*
        pub const $name: Source = Source {
            plain: assembled!("PUBLISH", $file),
            sharded: assembled!("SPUBLISH", $file),
        };
    };
}

/// A script's source, assembled for one server or for Redis Cluster.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// Announces with `PUBLISH` (one server, Sentinel, RedLock).
    pub plain: &'static str,
    /// Announces with `SPUBLISH` (Redis Cluster).
    pub sharded: &'static str,
}

impl Source {
    /// The assembly for a cluster (`sharded`) or not.
    pub fn for_cluster(&self, sharded: bool) -> &'static str {
        if sharded {
            self.sharded
        } else {
            self.plain
        }
    }
}

/// The shared prelude, as assembled in front of every script.
pub const PRELUDE_LUA: &str = include_str!("scripts/prelude.lua");

source!(
    /// The acquire script.
    ACQUIRE,
    "acquire.lua"
);
source!(
    /// The release script.
    RELEASE,
    "release.lua"
);
source!(
    /// The leave script (a waiter gives up its place).
    LEAVE,
    "leave.lua"
);
source!(
    /// The batch renewal script.
    RENEW,
    "renew.lua"
);
source!(
    /// The operator's force-release script.
    FORCE_RELEASE,
    "force_release.lua"
);
source!(
    /// The (read-only) inspect script.
    INSPECT,
    "inspect.lua"
);
source!(
    /// The (read-only) lease-set inspect script (semaphore permits, readers).
    INSPECT_SET,
    "inspect_set.lua"
);
source!(
    /// The extend script.
    EXTEND,
    "extend.lua"
);
source!(
    /// The RedLock fence-raising script.
    RAISE_FENCE,
    "raise_fence.lua"
);
source!(
    /// The semaphore acquire script.
    SEM_ACQUIRE,
    "sem_acquire.lua"
);
source!(
    /// The (read-only) semaphore count script.
    SEM_COUNT,
    "sem_count.lua"
);
source!(
    /// The lease-set member release script (a permit or a reader).
    MEMBER_RELEASE,
    "member_release.lua"
);
source!(
    /// The lease-set member renew/extend script (a permit or a reader).
    MEMBER_RENEW,
    "member_renew.lua"
);
source!(
    /// The read-write lock's read acquire script.
    RW_READ,
    "rw_read.lua"
);
source!(
    /// The read-write lock's write acquire script.
    RW_WRITE,
    "rw_write.lua"
);
source!(
    /// The read-write lock's write release script.
    RW_RELEASE,
    "rw_release.lua"
);
source!(
    /// The read-write lock's read release script (a reader leaves; the last one hands the
    /// lock to the oldest waiting writer).
    RW_READ_RELEASE,
    "rw_read_release.lua"
);
source!(
    /// The read-write lock's leave script (a waiting writer gives up).
    RW_LEAVE,
    "rw_leave.lua"
);
source!(
    /// The semaphore's leave script (a waiter gives up its place).
    SEM_LEAVE,
    "sem_leave.lua"
);
source!(
    /// The lock set's acquire script: every member granted in one step, or none.
    SET_ACQUIRE,
    "set_acquire.lua"
);
source!(
    /// The election's proclaim script (the leader records an event in the leaders' log).
    PROCLAIM,
    "proclaim.lua"
);
source!(
    /// The (read-only) election observe script: the leader now and the log after a cursor.
    OBSERVE,
    "observe.lua"
);

/// Source of the acquire script, as sent to one server.
pub const ACQUIRE_LUA: &str = ACQUIRE.plain;
/// Source of the release script, as sent to one server.
pub const RELEASE_LUA: &str = RELEASE.plain;

/// How long a released lock stays reserved for the waiter it was handed to (ms). If that
/// waiter does not claim it in time (it crashed, or gave up), anyone may take it.
pub const RESERVATION_MS: u64 = 100;

/// The lease a release gives the waiter it makes the holder (ms), at most: the waiter
/// confirms the grant (renews it to its own TTL) within it, or the grant lapses and the
/// next waiter takes the lock.
pub const CLAIM_MS: u64 = 250;

/// One script: its source and SHA1 (computed once).
pub(crate) struct Script {
    code: &'static str,
    hash: String,
    /// For a script the batch script can run: its kind in a batch and the batch script.
    batch: Option<(&'static str, &'static Script)>,
}

impl Script {
    fn new(code: &'static str) -> Self {
        Script {
            hash: redis::Script::new(code).get_hash().to_string(),
            code,
            batch: None,
        }
    }

    fn batched(code: &'static str, kind: &'static str, sharded: bool) -> Self {
        let batch: &'static Script = if sharded {
            &BATCH_SHARDED
        } else {
            &BATCH_PLAIN
        };
        Script {
            batch: Some((kind, batch)),
            ..Script::new(code)
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

    /// `EVALSHA` of this call.
    pub(crate) fn evalsha(&self) -> redis::Cmd {
        self.command("EVALSHA", self.script.hash.as_bytes())
    }

    /// `EVAL` of this call (the whole source).
    pub(crate) fn eval(&self) -> redis::Cmd {
        self.command("EVAL", self.script.code.as_bytes())
    }

    /// `SCRIPT LOAD` of this call's script.
    pub(crate) fn load(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(self.script.code);
        cmd
    }

    /// The SHA1 of this call's script.
    pub(crate) fn hash(&self) -> &str {
        &self.script.hash
    }

    /// If the batch script can run this call: its kind there and the batch script.
    pub(crate) fn batchable(&self) -> Option<(&'static str, &'static Script)> {
        self.script.batch
    }

    /// This call's keys and arguments (tag not included until it is added).
    pub(crate) fn parts(&self) -> (&[Vec<u8>], &[Vec<u8>]) {
        (&self.keys, &self.args)
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
}

/// The scripts of one client.
pub(crate) struct Scripts {
    pub acquire: Script,
    pub release: Script,
    pub extend: Script,
    pub leave: Script,
    pub renew: Script,
    pub inspect: Script,
    pub inspect_set: Script,
    pub force_release: Script,
    pub raise_fence: Script,
    pub sem_acquire: Script,
    pub sem_count: Script,
    pub member_release: Script,
    pub member_renew: Script,
    pub rw_read: Script,
    pub rw_write: Script,
    pub rw_release: Script,
    pub rw_read_release: Script,
    pub rw_leave: Script,
    pub sem_leave: Script,
    pub proclaim: Script,
    pub observe: Script,
    pub set_acquire: Script,
}

impl Scripts {
    /// The scripts; `sharded` (Redis Cluster): releases announce themselves with
    /// `SPUBLISH`, so that only the node owning the lock's slot carries the message.
    pub(crate) fn new(sharded: bool) -> Self {
        let script = |source: Source| Script::new(source.for_cluster(sharded));
        let batched =
            |source: Source, kind| Script::batched(source.for_cluster(sharded), kind, sharded);
        Scripts {
            acquire: batched(ACQUIRE, "a"),
            release: batched(RELEASE, "r"),
            extend: batched(EXTEND, "e"),
            leave: script(LEAVE),
            renew: script(RENEW),
            inspect: script(INSPECT),
            inspect_set: script(INSPECT_SET),
            force_release: script(FORCE_RELEASE),
            raise_fence: script(RAISE_FENCE),
            sem_acquire: script(SEM_ACQUIRE),
            sem_count: script(SEM_COUNT),
            member_release: script(MEMBER_RELEASE),
            member_renew: script(MEMBER_RENEW),
            rw_read: script(RW_READ),
            rw_write: script(RW_WRITE),
            rw_release: script(RW_RELEASE),
            rw_read_release: script(RW_READ_RELEASE),
            rw_leave: script(RW_LEAVE),
            sem_leave: script(SEM_LEAVE),
            proclaim: script(PROCLAIM),
            observe: script(OBSERVE),
            set_acquire: script(SET_ACQUIRE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Source; 22] = [
        ACQUIRE,
        RELEASE,
        LEAVE,
        RENEW,
        FORCE_RELEASE,
        INSPECT,
        INSPECT_SET,
        EXTEND,
        RAISE_FENCE,
        SEM_ACQUIRE,
        SEM_COUNT,
        MEMBER_RELEASE,
        MEMBER_RENEW,
        RW_READ,
        RW_WRITE,
        RW_RELEASE,
        RW_READ_RELEASE,
        RW_LEAVE,
        SEM_LEAVE,
        PROCLAIM,
        OBSERVE,
        SET_ACQUIRE,
    ];

    #[test]
    fn every_script_is_the_publish_line_the_prelude_and_its_own_file() {
        for source in ALL {
            for (code, publish) in [(source.plain, "PUBLISH"), (source.sharded, "SPUBLISH")] {
                let header = format!("local PUBLISH = '{publish}'\n");
                assert!(code.starts_with(&header), "{code}");
                let body = &code[header.len()..];
                assert!(body.starts_with(PRELUDE_LUA));
                let own = &body[PRELUDE_LUA.len()..];
                // The prelude's functions are defined once, in the prelude.
                for shared in [
                    "local function reply",
                    "local function handoff",
                    "local function next_token",
                ] {
                    assert!(!own.contains(shared), "{shared} redefined in {own}");
                }
                assert!(!own.contains("redis.call('PUBLISH'"), "{own}");
                assert!(!own.contains("redis.call('TIME')"), "{own}");
            }
        }
    }

    #[test]
    fn only_the_first_line_differs_between_the_one_server_and_the_cluster_assembly() {
        for source in ALL {
            let rest = |code: &'static str| code.split_once('\n').map(|(_, r)| r);
            assert_eq!(rest(source.plain), rest(source.sharded));
            assert_ne!(source.plain, source.sharded);
        }
    }
}
