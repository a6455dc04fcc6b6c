//! [`RedisServerBuilder`]: the configuration of a [`RedisServer`] before it
//! starts.
//!
//! Invariant: the builder only adds configuration on top of the kit's fixed
//! base (`--bind 127.0.0.1`, no persistence, log in the temporary directory);
//! extra arguments come last, so redis applies them after the base.

use std::{io, path::PathBuf};

use super::{process, RedisServer};

/// Configuration for a [`RedisServer`]; see [`RedisServer::builder`].
#[derive(Clone, Debug, Default)]
pub struct RedisServerBuilder {
    binary: Option<PathBuf>,
    password: Option<String>,
    user: Option<(String, String)>,
    args: Vec<String>,
    tls: Option<super::TlsListener>,
}

impl RedisServerBuilder {
    /// Runs this binary instead of `$LEASEHOLD_REDIS_SERVER` or
    /// `redis-server` from `PATH`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Sets `requirepass` (the default user's password).
    pub fn requirepass(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Creates the ACL user `user NAME on >PASSWORD ~* &* +@all`, which
    /// [`RedisServer::url`] then authenticates as. A second call replaces the
    /// first; for more users pass `--user` directives with [`args`](Self::args).
    pub fn acl_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Also listens for TLS on a second free loopback port ([`RedisServer::tls_port`]),
    /// with these certificate files. The plain port stays open for the kit's own checks.
    pub fn tls(mut self, listener: super::TlsListener) -> Self {
        self.tls = Some(listener);
        self
    }

    /// Appends one command-line argument, e.g. `.arg("--maxmemory").arg("1mb")`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends command-line arguments, e.g. `.args(["--maxmemory", "1mb"])`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Errors
    ///
    /// `NotFound` if the binary cannot be found (the message says how to
    /// install it); otherwise an error whose message includes the log tail.
    pub fn try_start(self) -> io::Result<RedisServer> {
        let binary = process::find_binary(self.binary.as_deref())?;
        RedisServer::launch(process::Settings {
            binary,
            password: self.password,
            user: self.user,
            args: self.args,
            tls: self.tls.map(|t| (t, 0)),
        })
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Panics
    ///
    /// Where [`try_start`](Self::try_start) returns an error, with its message.
    pub fn start(self) -> RedisServer {
        self.try_start()
            .unwrap_or_else(|error| panic!("cannot start redis-server: {error}"))
    }
}
