//! The Lua scripts, one per operation, each loaded once as a redis-rs [`Script`].
//!
//! Every mutation leasehold makes is one of these scripts (invariant 2): it runs
//! atomically on the server, checks ownership itself, and is sent as `EVALSHA` with a
//! single `SCRIPT LOAD` fallback on `NOSCRIPT`, so a `SCRIPT FLUSH` is transparent. The
//! contracts are written down in `PROTOCOL.md`.

use redis::Script;

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

/// The loaded scripts (their SHA1s are computed once).
pub(crate) struct Scripts {
    pub acquire: Script,
    pub release: Script,
    pub extend: Script,
    pub leave: Script,
    pub renew: Script,
    pub inspect: Script,
    pub force_release: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            acquire: Script::new(ACQUIRE_LUA),
            release: Script::new(RELEASE_LUA),
            extend: Script::new(EXTEND_LUA),
            leave: Script::new(LEAVE_LUA),
            renew: Script::new(RENEW_LUA),
            inspect: Script::new(INSPECT_LUA),
            force_release: Script::new(FORCE_RELEASE_LUA),
        }
    }
}
