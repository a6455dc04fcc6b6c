//! [`Masters`]: N independent `redis-server` masters, the topology RedLock
//! runs on.
//!
//! Invariants: the servers know nothing of each other (no replication, no
//! cluster), each on its own port and in its own directory; they are started
//! in parallel, so starting five costs about as much as starting one; the
//! index of a server never changes, also across [`Masters::stop`] and
//! [`Masters::restart`], so index `i` of [`Masters::urls`] is always server
//! `i`.

use std::{fmt, io, net::SocketAddr};

use super::start_parallel;
use crate::{PauseGuard, RedisServer, RedisServerBuilder};

/// N independent masters; dropping the value kills and reaps all of them.
pub struct Masters {
    servers: Vec<RedisServer>,
}

impl Masters {
    /// Starts `n` masters with default settings, in parallel.
    ///
    /// # Panics
    ///
    /// Where [`try_start`](Self::try_start) returns an error, with its message
    /// (which includes the failing server's log).
    pub fn start(n: usize) -> Self {
        Self::try_start(n).unwrap_or_else(|error| panic!("cannot start {n} masters: {error}"))
    }

    /// Starts `n` masters with default settings, in parallel.
    ///
    /// # Errors
    ///
    /// The first error of [`RedisServerBuilder::try_start`]; the servers that
    /// did start are stopped again.
    pub fn try_start(n: usize) -> io::Result<Self> {
        Self::try_start_with(n, &RedisServer::builder())
    }

    /// Starts `n` masters that all use the configuration in `builder` (e.g. a
    /// password), in parallel.
    ///
    /// # Panics
    ///
    /// Where [`try_start_with`](Self::try_start_with) returns an error, with
    /// its message.
    pub fn start_with(n: usize, builder: &RedisServerBuilder) -> Self {
        Self::try_start_with(n, builder)
            .unwrap_or_else(|error| panic!("cannot start {n} masters: {error}"))
    }

    /// Starts `n` masters that all use the configuration in `builder`, in
    /// parallel.
    ///
    /// # Errors
    ///
    /// The first error of [`RedisServerBuilder::try_start`]; the servers that
    /// did start are stopped again.
    pub fn try_start_with(n: usize, builder: &RedisServerBuilder) -> io::Result<Self> {
        let servers = start_parallel(n, |_| builder.clone().try_start())?;
        Ok(Self { servers })
    }

    /// How many masters there are (running or stopped).
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are no masters at all.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The URL of every master, in index order.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(RedisServer::url).collect()
    }

    /// The address of every master, in index order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(RedisServer::addr).collect()
    }

    /// All masters, in index order.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// Master `i`.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn server(&self, i: usize) -> &RedisServer {
        &self.servers[i]
    }

    /// Master `i`, mutably (to stop or restart it).
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn server_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.servers[i]
    }

    /// Kills master `i` (see [`RedisServer::stop`]). Idempotent.
    ///
    /// # Panics
    ///
    /// If `i >= len()`.
    pub fn stop(&mut self, i: usize) {
        self.servers[i].stop();
    }

    /// Restarts master `i` on the same port, empty (see
    /// [`RedisServer::restart`]).
    ///
    /// # Panics
    ///
    /// If `i >= len()` or the server cannot be started again (the message
    /// includes its log).
    pub fn restart(&mut self, i: usize) {
        self.servers[i].restart();
    }

    /// Freezes master `i` with SIGSTOP until the guard is dropped (see
    /// [`RedisServer::pause`]).
    ///
    /// # Panics
    ///
    /// If `i >= len()` or the server is not running.
    pub fn pause(&self, i: usize) -> PauseGuard<'_> {
        self.servers[i].pause()
    }

    /// The log tails of all masters, for panic messages.
    pub fn logs(&self) -> String {
        super::logs(
            self.servers
                .iter()
                .enumerate()
                .map(|(i, server)| (format!("master {i}"), server)),
        )
    }
}

impl fmt::Debug for Masters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.servers).finish()
    }
}
