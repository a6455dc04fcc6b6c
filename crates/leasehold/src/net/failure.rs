//! Why a command did not produce a reply: the classification every caller of the command
//! connection retries (or does not) by. `NotSent` never ran; `Unknown` may have run (a
//! timeout, or a connection that broke after sending); `Server` is Redis's own error reply.
//! It is the only retry classifier of the library.

use redis::RedisError;

use crate::error::{is_server_reply, Error, ErrorKind};

/// A command is not sent with less time than this left for its reply.
pub(crate) const MIN_BUDGET: std::time::Duration = std::time::Duration::from_millis(5);

/// Why a command did not produce a reply.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The command was never sent, or the server refused it before running it.
    NotSent(Option<RedisError>),
    /// The command may have been applied: it timed out or the connection broke.
    Unknown(Option<RedisError>),
    /// Redis answered with an error reply; a script that errors has no effect beyond the
    /// writes it made before the error.
    Server(RedisError),
}

impl Failure {
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::NotSent(Some(e)) if is_server_reply(e) => {
                format!("Redis could not run the command now: {e}")
            }
            Failure::NotSent(Some(e)) => format!("could not connect to Redis: {e}"),
            Failure::NotSent(None) => "could not connect to Redis in time".to_string(),
            Failure::Unknown(Some(e)) => format!("connection broke before the reply: {e}"),
            Failure::Unknown(None) => "no reply within the response timeout".to_string(),
            Failure::Server(e) => format!("Redis answered with an error: {e}"),
        }
    }

    pub(crate) fn into_redis(self) -> Option<RedisError> {
        match self {
            Failure::NotSent(e) | Failure::Unknown(e) => e,
            Failure::Server(e) => Some(e),
        }
    }
}

/// Turn a failure of a command that changes state into an error: [`ErrorKind::Ambiguous`]
/// when it may have been applied (`then` says what happens next), else as
/// [`failure_error`].
pub(crate) fn outcome_error(context: &str, f: Failure, then: &str) -> Error {
    match f {
        Failure::Unknown(source) => {
            let msg = format!(
                "{context}: {}; it may have been applied: {then}",
                Failure::Unknown(None).describe()
            );
            Error::new(ErrorKind::Ambiguous, msg).with_source_opt(source)
        }
        other => failure_error(context, other),
    }
}

/// Turn a failure of a command whose effect does not matter (or is known) into an error.
pub(crate) fn failure_error(context: &str, f: Failure) -> Error {
    match f {
        Failure::Server(e) => Error::from_redis(context, e),
        other => {
            let msg = format!("{context}: {}", other.describe());
            let err = Error::new(ErrorKind::Connection, msg);
            match other.into_redis() {
                Some(e) => err.with_source(e),
                None => err,
            }
        }
    }
}
