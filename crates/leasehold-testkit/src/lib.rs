//! Test support for `leasehold`: real `redis-server` processes and a
//! fault-injection TCP proxy, so that tests exercise the real protocol and the
//! real failure modes (late replies, lost replies, reset connections, paused
//! servers) instead of mocks.
//!
//! Invariants the whole kit keeps: it only ever listens on or connects to
//! loopback addresses; every wait is a poll with a deadline, never a fixed
//! sleep; every child process it starts is killed and reaped when its owner is
//! dropped; and every panic about a server includes the tail of that server's
//! log.
//!
//! * [`RedisServer`] owns one `redis-server` child process in a temporary
//!   directory (see [`server`]).
//! * [`Masters`], [`SentinelGroup`] and [`RedisCluster`] are multi-server
//!   topologies built from them: independent masters for RedLock, a master
//!   with a replica and three sentinels, and a 3-master cluster (see
//!   [`topology`]).
//! * [`FaultProxy`] sits between a client and a server and applies [`Rule`]s
//!   to the replies of matching commands, or holds the commands themselves
//!   back for a while (see [`proxy`]).
//! * [`FencedResource`] stands in for the storage a lock protects: it checks
//!   fencing tokens and records every write into a [`History`] (see
//!   [`fenced`]).
//! * [`History`] logs what each hold believed and did; [`history::check`]
//!   reads it like a Jepsen checker and reports overlapping holds, stale
//!   writes the resource accepted, and work done after a lost notice (see
//!   [`history`]).
//! * [`poll_until`] / [`poll_until_async`] wait for a condition with a
//!   deadline (see [`poll`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use leasehold_testkit::{FaultProxy, Match, RedisServer, Rule};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> std::io::Result<()> {
//! let server = RedisServer::start();
//! let proxy = FaultProxy::start(server.addr()).await?;
//!
//! // The SET reaches the server, but its reply is lost on the way back.
//! let rule = proxy.add_rule(Rule::reply_to(Match::command("SET")).first(1).drop());
//!
//! let config = redis::AsyncConnectionConfig::new()
//!     .set_response_timeout(Some(Duration::from_millis(200)));
//! let client = redis::Client::open(proxy.url()).unwrap();
//! let mut con = client
//!     .get_multiplexed_async_connection_with_config(&config)
//!     .await
//!     .unwrap();
//! let err = redis::cmd("SET")
//!     .arg("k")
//!     .arg("v")
//!     .query_async::<()>(&mut con)
//!     .await
//!     .unwrap_err();
//! assert!(err.is_timeout());
//! assert_eq!(rule.hits(), 1);
//!
//! // ... yet the server applied it.
//! let value: String = redis::cmd("GET").arg("k").query(&mut server.connection()).unwrap();
//! assert_eq!(value, "v");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod fenced;
pub mod history;
pub mod poll;
pub mod proxy;
pub mod server;
mod text;
pub mod tls;
pub mod topology;
pub mod torture;

pub use fenced::{FencedResource, WriteOutcome};
pub use history::{Event, EventKind, History, Hold, Report};
pub use poll::{poll_until, poll_until_async};
pub use proxy::{
    CommandPredicate, FaultProxy, Match, Rule, RuleBuilder, RuleGuard, StallGuard, Verdict,
};
pub use server::{PauseGuard, RedisServer, RedisServerBuilder, TlsListener};
pub use tls::{ServerCert, TestPki};
pub use topology::{Masters, RedisCluster, SentinelGroup};

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_and_guards_can_move_between_threads_and_tasks() {
        assert_send_sync::<crate::RedisServer>();
        assert_send_sync::<crate::PauseGuard<'static>>();
        assert_send_sync::<crate::FaultProxy>();
        assert_send_sync::<crate::RuleGuard>();
        assert_send_sync::<crate::StallGuard>();
        assert_send_sync::<crate::Rule>();
        assert_send_sync::<crate::History>();
        assert_send_sync::<crate::FencedResource>();
    }
}
