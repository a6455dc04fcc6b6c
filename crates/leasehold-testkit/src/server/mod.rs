//! A real `redis-server` child process owned RAII-style by [`RedisServer`].
//!
//! Invariants: while a [`RedisServer`] value exists, its temporary directory
//! exists and holds the server's log; the child listens only on `127.0.0.1`
//! and persists nothing, so a restart comes back empty on the same port; the
//! child is SIGKILLed and reaped when the value is dropped, so tests never
//! leave a zombie or a stray server behind; every panic includes the tail of
//! the server's log.

mod builder;
mod pause;
mod process;

use std::{
    fmt, io,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

pub use builder::RedisServerBuilder;
pub use pause::PauseGuard;

use crate::text::redis_url;
use process::{Settings, StartError};

/// Timeout for connecting, reading and writing on connections handed out by
/// [`RedisServer::connection`], so a test against a paused server fails
/// instead of hanging.
const TEST_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on start attempts on the same port during a restart.
const MAX_RESTART_ATTEMPTS: usize = 200;

/// Certificate files for a server's TLS listener (see [`RedisServerBuilder::tls`]);
/// [`TestPki`](crate::tls::TestPki) makes them.
#[derive(Clone, Debug)]
pub struct TlsListener {
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA that client certificates must chain to (PEM).
    pub ca: PathBuf,
    /// Refuse clients without a certificate from `ca` (`tls-auth-clients yes`).
    pub require_client_cert: bool,
}

/// One `redis-server` process in its own temporary directory.
///
/// Start one with [`RedisServer::start`] or configure it with
/// [`RedisServer::builder`]. Dropping the value kills and reaps the process
/// and removes the directory.
pub struct RedisServer {
    settings: Settings,
    port: u16,
    pid: u32,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with default settings (no password).
    ///
    /// # Panics
    ///
    /// If `redis-server` cannot be found or does not become ready within 10 s;
    /// the message says how to install it, or includes the server's log.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for a server with a password, an ACL user or extra config.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Starts on a fresh port, retrying with another port if a different
    /// process takes the chosen one between our probe and redis's bind.
    fn launch(settings: Settings) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("leasehold-redis-")
            .tempdir()?;
        let mut settings = settings;
        for _ in 0..process::FRESH_PORT_ATTEMPTS {
            let port = process::free_port()?;
            if let Some((_, tls_port)) = &mut settings.tls {
                *tls_port = loop {
                    let p = process::free_port()?;
                    if p != port {
                        break p;
                    }
                };
            }
            let deadline = Instant::now() + process::READY_TIMEOUT;
            match process::start_once(&settings, dir.path(), port, deadline) {
                Ok(child) => {
                    return Ok(Self {
                        settings,
                        port,
                        pid: child.id(),
                        child: Some(child),
                        dir,
                    })
                }
                Err(StartError::PortInUse) => continue,
                Err(StartError::Failed(error)) => return Err(error),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "redis-server could not bind any of {} fresh ports (each was taken before it started)\n{}",
                process::FRESH_PORT_ATTEMPTS,
                process::diagnostics(dir.path())
            ),
        ))
    }

    /// The TCP port the server listens on (stable across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS port, when the server was built with [`RedisServerBuilder::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.settings.tls.as_ref().map(|(_, port)| *port)
    }

    /// `rediss://127.0.0.1:TLS_PORT/`, with credentials as in [`url`](Self::url).
    ///
    /// # Panics
    ///
    /// If the server has no TLS listener.
    pub fn tls_url(&self) -> String {
        let port = self
            .tls_port()
            .expect("the server was built without .tls(..)");
        self.settings.url(port).replacen("redis://", "rediss://", 1)
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:PORT/`, with `user:password@` when an ACL user is
    /// configured, else `:password@` when `requirepass` is set.
    pub fn url(&self) -> String {
        self.settings.url(self.port)
    }

    /// `redis://127.0.0.1:PORT/` without credentials, e.g. to check that
    /// unauthenticated clients are refused.
    pub fn url_without_auth(&self) -> String {
        redis_url(self.port, None, None)
    }

    /// The user name [`url`](Self::url) authenticates as, if an ACL user is
    /// configured.
    pub fn username(&self) -> Option<&str> {
        self.settings.username()
    }

    /// The password [`url`](Self::url) authenticates with, if any.
    pub fn password(&self) -> Option<&str> {
        self.settings.password()
    }

    /// The pid of the current process, or of the last one if the server is
    /// stopped.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The temporary directory holding the server's log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The whole log file (appended to across restarts).
    pub fn log(&self) -> String {
        process::read_log(self.dir.path())
    }

    /// A client for [`url`](Self::url).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url())
            .unwrap_or_else(|error| self.fail("cannot build a redis::Client", error))
    }

    /// A synchronous, authenticated connection for assertions in tests, with
    /// 10 s connect, read and write timeouts.
    ///
    /// # Panics
    ///
    /// If the server does not accept the connection; the message includes the
    /// log tail.
    pub fn connection(&self) -> redis::Connection {
        let connection = self
            .client()
            .get_connection_with_timeout(TEST_CONNECTION_TIMEOUT)
            .unwrap_or_else(|error| self.fail("cannot connect", error));
        connection
            .set_read_timeout(Some(TEST_CONNECTION_TIMEOUT))
            .and_then(|()| connection.set_write_timeout(Some(TEST_CONNECTION_TIMEOUT)))
            .unwrap_or_else(|error| self.fail("cannot set timeouts", error));
        connection
    }

    /// An authenticated multiplexed async connection (redis-rs defaults: 1 s
    /// connect timeout, 500 ms response timeout).
    ///
    /// # Panics
    ///
    /// If the server does not accept the connection; the message includes the
    /// log tail.
    ///
    /// # Cancel safety
    ///
    /// Cancelling only abandons the connection attempt; the server is not
    /// affected.
    pub async fn async_connection(&self) -> redis::aio::MultiplexedConnection {
        match self.client().get_multiplexed_async_connection().await {
            Ok(connection) => connection,
            Err(error) => self.fail("cannot connect (async)", error),
        }
    }

    /// Whether the process is alive (a paused process counts as alive). Reaps
    /// it if it exited on its own.
    pub fn is_running(&mut self) -> bool {
        let exited = match &mut self.child {
            None => return false,
            Some(child) => !matches!(child.try_wait(), Ok(None)),
        };
        if exited {
            self.child = None;
        }
        !exited
    }

    /// Kills the process (SIGKILL: nothing is persisted, so nothing is lost
    /// that a clean shutdown would have kept) and reaps it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_and_reap(&mut child);
        }
    }

    /// Stops the server if it runs and starts a new process on the same port,
    /// waiting until it answers. All data is gone.
    ///
    /// # Panics
    ///
    /// If the server cannot be started again; the message includes the log
    /// tail. See [`try_restart`](Self::try_restart) for a fallible version.
    pub fn restart(&mut self) {
        if let Err(error) = self.try_restart() {
            panic!("cannot restart redis-server on port {}: {error}", self.port);
        }
    }

    /// Like [`restart`](Self::restart), but returns the error. Binding the same
    /// port is retried for up to 10 s in case it is briefly unavailable.
    pub fn try_restart(&mut self) -> io::Result<()> {
        self.stop();
        let deadline = Instant::now() + process::READY_TIMEOUT;
        for _ in 0..MAX_RESTART_ATTEMPTS {
            match process::start_once(&self.settings, self.dir.path(), self.port, deadline) {
                Ok(child) => {
                    self.pid = child.id();
                    self.child = Some(child);
                    return Ok(());
                }
                Err(StartError::PortInUse) if Instant::now() < deadline => {
                    std::thread::sleep(process::POLL_INTERVAL);
                }
                Err(StartError::PortInUse) => break,
                Err(StartError::Failed(error)) => return Err(error),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "port {} stayed in use for {:?}\n{}",
                self.port,
                process::READY_TIMEOUT,
                process::diagnostics(self.dir.path())
            ),
        ))
    }

    /// Freezes the process with SIGSTOP until the returned guard is dropped
    /// (SIGCONT). While paused the kernel still accepts connections, but
    /// nothing is answered: the view a client has of a stalled server (GC
    /// pause, VM freeze, overloaded host). Returns once the process is
    /// actually stopped.
    ///
    /// # Panics
    ///
    /// If the server is not running or cannot be signalled.
    pub fn pause(&self) -> PauseGuard<'_> {
        PauseGuard::new(self)
    }

    /// The pid of the running process, if any.
    fn running_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Panics with `what`, `error` and the log tail.
    fn fail(&self, what: &str, error: impl fmt::Display) -> ! {
        panic!(
            "redis-server on port {} (pid {}): {what}: {error}\n{}",
            self.port,
            self.pid,
            process::diagnostics(self.dir.path())
        )
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.pid)
            .field("running", &self.child.is_some())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
