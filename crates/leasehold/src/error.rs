//! Errors: one [`Error`] type with a public, `#[non_exhaustive]` [`ErrorKind`].
//!
//! Every failure leasehold reports is classified so that callers can branch on what
//! happened rather than on a message: contention, a wait that ran out, a lease that is no
//! longer held (and why), an outcome that could not be learned, the connection, the server,
//! or invalid input. Messages never carry credentials.

use std::fmt;
use std::time::Duration;

/// Why a hold is no longer held by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotHeldReason {
    /// The lease expired (or was released) and nobody holds the lock now, or this hold
    /// already ended.
    Expired,
    /// Another owner holds the lock now.
    HeldByOther,
}

impl fmt::Display for NotHeldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotHeldReason::Expired => f.write_str("the lease expired"),
            NotHeldReason::HeldByOther => f.write_str("another owner holds the lock"),
        }
    }
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `try_acquire`: another owner holds the lock (or a task in this process is ahead in
    /// the local queue). Nothing was granted.
    Contended,
    /// The wait deadline passed before the lock could be granted. Nothing is held.
    TimedOut,
    /// The hold is no longer held: extend or release came too late.
    NotHeld(NotHeldReason),
    /// The server may have granted the lock but the reply could not be obtained before the
    /// deadline. The possible grant is being released in the background; the caller does
    /// not hold the lock.
    Ambiguous,
    /// Redis could not be reached, or the connection broke, and the operation is known not
    /// to have taken effect (or has no effect that matters, like a failed release).
    Connection,
    /// Redis answered with an error, e.g. `WRONGTYPE` when a key under the lock's name is
    /// not a leasehold lock.
    Server,
    /// Invalid input, rejected before any I/O.
    InvalidInput,
    /// The lease was lost while work ran under it (see [`Lock::run`](crate::Lock::run)).
    LeaseLost(crate::LostReason),
    /// The client was shut down.
    Shutdown,
    /// The lock was granted, but fewer replicas than required acknowledged the grant
    /// within the replication timeout (`WAIT`); the grant was released. Nothing is held.
    NotReplicated {
        /// Replica acknowledgements required.
        wanted: u32,
        /// Replica acknowledgements received.
        acked: u32,
    },
    /// RedLock: too few nodes could be reached (or answered in time) for a quorum.
    /// [`Error::node_failures`] says which nodes failed and why. Every node was asked to
    /// release whatever this call may have been granted; nothing is held.
    NoQuorum {
        /// Nodes that answered (granting or refusing).
        answered: usize,
        /// Nodes needed for a quorum.
        needed: usize,
    },
    /// A TLS connection could not be made: the problem says which check failed and what
    /// to change. Nothing was sent.
    Tls(crate::TlsProblem),
    /// Redis refused the credentials (`WRONGPASS`, `NOAUTH`): a wrong user name or
    /// password, or none given to a server that requires one. Nothing was sent.
    Auth,
    /// A key under the lock's name holds another type of value than leasehold keeps there
    /// (Redis answered `WRONGTYPE`): something other than leasehold writes under its key
    /// prefix. Give leasehold a prefix of its own
    /// ([`ClientBuilder::key_prefix`](crate::ClientBuilder::key_prefix)) or remove the key.
    ForeignKey,
}

/// One RedLock node's failure, as reported by [`Error::node_failures`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeFailure {
    /// The node's address (without credentials).
    pub node: String,
    /// What went wrong there.
    pub reason: String,
}

impl fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.node, self.reason)
    }
}

/// The error type of every fallible leasehold operation.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<redis::RedisError>,
    nodes: Vec<NodeFailure>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
            nodes: Vec::new(),
        }
    }

    pub(crate) fn with_source(mut self, source: redis::RedisError) -> Self {
        // A connection that failed in its TLS handshake is not "unreachable": say which
        // check failed.
        if self.kind == ErrorKind::Connection {
            if let Some(problem) = crate::net::tls::classify(&source) {
                self.kind = ErrorKind::Tls(problem);
                self.message = format!("{}: TLS: {problem}", self.message);
            }
        }
        // Refused credentials are neither "unreachable" nor a failed command.
        if matches!(self.kind, ErrorKind::Connection | ErrorKind::Server)
            && is_auth_refusal(&source)
        {
            self.kind = ErrorKind::Auth;
            self.message = format!(
                "{}: Redis refused the credentials (check the user name and password)",
                self.message
            );
        }
        self.source = Some(source);
        self
    }

    pub(crate) fn with_node_failures(mut self, nodes: Vec<NodeFailure>) -> Self {
        self.nodes = nodes;
        self
    }

    pub(crate) fn with_source_opt(self, source: Option<redis::RedisError>) -> Self {
        match source {
            Some(s) => self.with_source(s),
            None => self,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn not_held(name: &str, reason: NotHeldReason) -> Self {
        Error::new(
            ErrorKind::NotHeld(reason),
            format!("lock {name:?} is not held: {reason}"),
        )
    }

    pub(crate) fn timed_out(name: &str, waited: Duration) -> Self {
        Error::new(
            ErrorKind::TimedOut,
            format!("lock {name:?} was not granted within {}", human(waited)),
        )
    }

    /// Classify a redis-rs error that happened while talking to the server.
    pub(crate) fn from_redis(context: &str, err: redis::RedisError) -> Self {
        // WRONGTYPE: a key leasehold uses is not of the type leasehold keeps there.
        if is_server_reply(&err) && is_wrong_type(&err) {
            // leasehold's own check names the key; a read that failed names none.
            let text = err.to_string();
            let why = match text.find("leasehold key ") {
                Some(at) => text[at..].split(" script:").next().unwrap_or_default().to_string(),
                None => "a key under this name holds another type of value: something other than leasehold writes under its key prefix".to_string(),
            };
            return Error::new(
                ErrorKind::ForeignKey,
                format!("{context}: {why} (WRONGTYPE)"),
            )
            .with_source(err);
        }
        let kind = if is_server_reply(&err) {
            ErrorKind::Server
        } else {
            ErrorKind::Connection
        };
        let what = match kind {
            ErrorKind::Server => "Redis refused the command",
            _ => "Redis connection failed",
        };
        Error::new(kind, format!("{context}: {what}: {err}")).with_source(err)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// `try_acquire` found the lock held.
    pub fn is_contended(&self) -> bool {
        self.kind == ErrorKind::Contended
    }

    /// A deadline passed: the wait for the lock ran out.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::TimedOut
    }

    /// The hold is gone (expired, released, or taken by someone else).
    pub fn is_not_held(&self) -> bool {
        matches!(self.kind, ErrorKind::NotHeld(_))
    }

    /// Why the hold is gone, when [`is_not_held`](Self::is_not_held).
    pub fn not_held_reason(&self) -> Option<NotHeldReason> {
        match self.kind {
            ErrorKind::NotHeld(r) => Some(r),
            _ => None,
        }
    }

    /// The outcome at the server is unknown; the possible grant is released in the
    /// background.
    pub fn is_ambiguous(&self) -> bool {
        self.kind == ErrorKind::Ambiguous
    }

    /// Redis was unreachable or the connection broke.
    pub fn is_connection(&self) -> bool {
        self.kind == ErrorKind::Connection
    }

    /// Redis refused the credentials (see [`ErrorKind::Auth`]).
    pub fn is_auth(&self) -> bool {
        self.kind == ErrorKind::Auth
    }

    /// A TLS handshake failed (see [`ErrorKind::Tls`]).
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, ErrorKind::Tls(_))
    }

    /// Redis answered with an error reply (e.g. `WRONGTYPE`).
    pub fn is_server(&self) -> bool {
        self.kind == ErrorKind::Server
    }

    /// A key under the name holds another type of value (see [`ErrorKind::ForeignKey`]).
    pub fn is_foreign_key(&self) -> bool {
        self.kind == ErrorKind::ForeignKey
    }

    /// The input was invalid; nothing was sent.
    pub fn is_invalid_input(&self) -> bool {
        self.kind == ErrorKind::InvalidInput
    }

    /// Trying again later can succeed: contention, a wait that ran out, an ambiguous
    /// outcome (its grant is being released) or a connection failure. Invalid input, server
    /// error replies and lost holds are not retryable as such.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Contended
                | ErrorKind::TimedOut
                | ErrorKind::Ambiguous
                | ErrorKind::Connection
                | ErrorKind::NotReplicated { .. }
                | ErrorKind::NoQuorum { .. }
        )
    }

    /// The lease was lost while work ran under it.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self.kind, ErrorKind::LeaseLost(_))
    }

    /// Fewer replicas than required acknowledged the grant (see
    /// [`Lock::replica_acks`](crate::Lock::replica_acks)).
    pub fn is_not_replicated(&self) -> bool {
        matches!(self.kind, ErrorKind::NotReplicated { .. })
    }

    /// RedLock: too few nodes answered for a quorum.
    pub fn is_no_quorum(&self) -> bool {
        matches!(self.kind, ErrorKind::NoQuorum { .. })
    }

    /// RedLock: the nodes that failed during the operation, and why (empty otherwise).
    pub fn node_failures(&self) -> &[NodeFailure] {
        &self.nodes
    }

    /// The underlying redis-rs error, if any.
    pub fn redis_error(&self) -> Option<&redis::RedisError> {
        self.source.as_ref()
    }
}

/// A duration as people read it: `500 µs`, `250 ms`, `1.002 s`, `90 s`, `5 min`, `24 h`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        format!("{} µs", d.as_micros())
    } else if ms < 1_000 {
        format!("{ms} ms")
    } else if ms < 60_000 && !ms.is_multiple_of(1_000) {
        format!("{:.3} s", d.as_secs_f64())
    } else if ms >= 3_600_000 && ms.is_multiple_of(3_600_000) {
        format!("{} h", d.as_secs() / 3_600)
    } else if ms >= 60_000 && ms.is_multiple_of(60_000) {
        format!("{} min", d.as_secs() / 60)
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Node failures as one line: `node: reason; node: reason`.
pub(crate) fn list_failures(failures: &[NodeFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether Redis refused the client's credentials.
fn is_auth_refusal(err: &redis::RedisError) -> bool {
    if matches!(err.code(), Some("WRONGPASS" | "NOAUTH"))
        || err.kind() == redis::ErrorKind::AuthenticationFailed
    {
        return true;
    }
    // A refusal inside a pipeline's failures carries the code in its text only.
    let text = err.to_string();
    text.contains("\"NOAUTH\"") || text.contains("\"WRONGPASS\"")
}

/// Whether Redis answered `WRONGTYPE` (Redis 7 keeps the code of an error raised inside a
/// script; Redis 6.2 wraps it in the text of an `ERR`).
fn is_wrong_type(err: &redis::RedisError) -> bool {
    err.code() == Some("WRONGTYPE") || err.to_string().contains("WRONGTYPE")
}

/// Whether Redis itself answered with an error reply (as opposed to an I/O failure).
pub(crate) fn is_server_reply(err: &redis::RedisError) -> bool {
    !(err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal())
        && err.code().is_some()
}

/// A specialised `Result` for leasehold operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_micros(250_400)), "250 ms");
        assert_eq!(human(Duration::from_micros(1_001_909)), "1.002 s");
        assert_eq!(human(Duration::from_secs(90)), "90 s");
        assert_eq!(human(Duration::from_micros(500)), "500 µs");
        assert_eq!(human(Duration::from_secs(300)), "5 min");
        assert_eq!(human(Duration::from_secs(86_400)), "24 h");
        assert_eq!(human(Duration::from_secs(3_601)), "3601 s");
    }
}
