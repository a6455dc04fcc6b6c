//! Multi-server topologies built from [`RedisServer`]s: N independent masters
//! (for RedLock), a Sentinel group (master, replica, three sentinels) and a
//! Redis Cluster.
//!
//! Invariants shared by every topology: each process is a [`RedisServer`] (or
//! a sentinel run through one), so it binds only `127.0.0.1`, lives in its own
//! temporary directory and is killed and reaped when the topology is dropped;
//! a topology is returned only once it is fully formed, which is established
//! by polling with a deadline, never by sleeping; and every panic or error
//! about a topology carries the log tails of all of its processes.
//!
//! * [`Masters`]: independent masters, started in parallel (see [`masters`]).
//! * [`SentinelGroup`]: a monitored master and replica that fail over (see
//!   [`sentinel`]).
//! * [`RedisCluster`]: cluster-enabled masters that own all 16384 slots (see
//!   [`cluster`]), with [`key_slot`] to route keys like a cluster client.

pub mod cluster;
pub mod masters;
pub mod sentinel;
mod slot;

use std::{
    env,
    ffi::OsStr,
    fmt::Write as _,
    fs, io,
    net::{Ipv4Addr, TcpListener},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

pub use cluster::RedisCluster;
pub use masters::Masters;
pub use sentinel::SentinelGroup;
pub use slot::{key_slot, SLOT_COUNT};

use crate::{
    text::{tail, LOG_TAIL_LINES},
    RedisServer,
};

/// Connect, read and write timeout of one [`Probe`] request: short, so that a
/// stopped or paused process costs one poll, not the whole deadline.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A cached, non-panicking connection used while polling a topology into
/// shape. Any error drops the connection, so the next request reconnects
/// (the process may have been restarted meanwhile).
pub(crate) struct Probe {
    url: String,
    connection: Option<redis::Connection>,
}

impl Probe {
    /// A probe for `url`; nothing is connected until the first request.
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connection: None,
        }
    }

    /// Sends `cmd`, connecting first if needed.
    pub(crate) fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> Result<T, String> {
        let result = self
            .connect()
            .and_then(|connection| cmd.query(connection).map_err(|error| error.to_string()));
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    /// `INFO section` as text.
    pub(crate) fn info(&mut self, section: &str) -> Result<String, String> {
        self.query(redis::cmd("INFO").arg(section))
    }

    fn connect(&mut self) -> Result<&mut redis::Connection, String> {
        if self.connection.is_none() {
            let client =
                redis::Client::open(self.url.as_str()).map_err(|error| error.to_string())?;
            let connection = client
                .get_connection_with_timeout(PROBE_TIMEOUT)
                .map_err(|error| error.to_string())?;
            connection
                .set_read_timeout(Some(PROBE_TIMEOUT))
                .and_then(|()| connection.set_write_timeout(Some(PROBE_TIMEOUT)))
                .map_err(|error| error.to_string())?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The log tails of several labelled servers, for panic and error messages.
pub(crate) fn logs<'a>(servers: impl IntoIterator<Item = (String, &'a RedisServer)>) -> String {
    let mut text = String::new();
    for (label, server) in servers {
        let log = server.log();
        let _ = write!(
            text,
            "\n--- {label} (port {}, dir {}): last {LOG_TAIL_LINES} log lines ---\n{}",
            server.port(),
            server.dir().display(),
            tail(&log, LOG_TAIL_LINES)
        );
    }
    text
}

/// Runs `start(0..n)` on `n` threads at once and collects the results in
/// order; the first error wins (the values that did start are dropped, which
/// kills them).
pub(crate) fn start_parallel<T, F>(n: usize, start: F) -> io::Result<Vec<T>>
where
    T: Send,
    F: Fn(usize) -> io::Result<T> + Sync,
{
    let start = &start;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n).map(|i| scope.spawn(move || start(i))).collect();
        let results: Vec<io::Result<T>> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        results.into_iter().collect()
    })
}

/// The absolute path of the binary `server` runs, from its `INFO server`
/// (`executable:`), so that helper processes use the very same build.
pub(crate) fn executable_of(server: &RedisServer) -> io::Result<PathBuf> {
    let info = Probe::new(server.url())
        .info("server")
        .map_err(|error| io::Error::other(format!("INFO server failed: {error}")))?;
    info_field(&info, "executable")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "redis-server on port {} does not report its executable in INFO server",
                    server.port()
                ),
            )
        })
}

/// A port that was free a moment ago: bind `127.0.0.1:0`, read, release.
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether `path` is an executable regular file.
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first executable `name` in `PATH`.
pub(crate) fn search_path(name: &OsStr) -> Option<PathBuf> {
    let paths = env::var_os("PATH")?;
    env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_field_matches_whole_field_names_only() {
        let info = "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\nmaster_port:7000\r\n";
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_port"), Some("7000"));
        assert_eq!(info_field(info, "master"), None);
        assert_eq!(info_field(info, "missing"), None);
    }

    #[test]
    fn topologies_can_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Masters>();
        assert_send_sync::<SentinelGroup>();
        assert_send_sync::<RedisCluster>();
    }
}
