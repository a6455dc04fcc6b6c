//! Exit codes, and how errors map to them. Documented in `--help` and the README.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use leasehold::ErrorKind;

/// The command (or the child command) succeeded.
pub const OK: u8 = 0;
/// Any other failure (a Redis error reply, an ambiguous outcome, an I/O error).
pub const FAILURE: u8 = 1;
/// Bad command line or input (unknown flag, bad duration, bad URL, bad lock name).
pub const USAGE: u8 = 2;
/// The lock was not acquired within the wait (or at once, with `--no-wait`).
pub const NOT_ACQUIRED: u8 = 3;
/// The lease was lost while the command ran; the command was stopped (unless
/// `--on-lost ignore`).
pub const LEASE_LOST: u8 = 4;
/// Redis could not be reached.
pub const UNREACHABLE: u8 = 5;
/// A TLS connection failed its handshake (unknown CA, other host name, expired
/// certificate, client certificate required, no TLS on that port).
pub const TLS: u8 = 6;
/// Redis refused the credentials (wrong user name or password, or none given).
pub const AUTH: u8 = 7;
/// `doctor` found a setting that can break a lock.
pub const UNSAFE: u8 = 8;
/// leasehold itself panicked (a bug) and stopped at once; under `run`/`elect` its guard
/// killed the command and the lease expires by its TTL. Rust's own panic exit code.
pub const PANIC: u8 = 101;

/// The exit-code table shown by `--help`.
pub const TABLE: &str = "\
Exit codes:
  0    success (run/elect: the command's own status; a command killed by signal N: 128+N;
       a command not found: 127, not executable: 126)
  1    other failure (Redis error reply, ambiguous outcome, I/O error)
  2    usage error (unknown flag, bad duration, bad URL, bad lock name)
  3    not acquired within --wait (or at once, with --no-wait)
  4    lease lost while the command ran (the command was stopped, unless --on-lost ignore)
  5    Redis unreachable
  6    TLS handshake failed (unknown CA, host name mismatch, expired certificate,
       client certificate required, server without TLS)
  7    Redis refused the credentials (wrong user or password, or none given)
  8    doctor: a server setting can break a lock (see its output)
  101  internal error (a bug): leasehold stopped at once; a command it ran was killed";

/// The exit code for an error.
pub fn code_for(e: &anyhow::Error) -> u8 {
    if let Some(usage) = e.downcast_ref::<UsageError>() {
        let _ = usage;
        return USAGE;
    }
    match e
        .downcast_ref::<leasehold::Error>()
        .map(leasehold::Error::kind)
    {
        Some(ErrorKind::Contended | ErrorKind::TimedOut) => NOT_ACQUIRED,
        Some(ErrorKind::LeaseLost(_)) => LEASE_LOST,
        Some(ErrorKind::Connection) => UNREACHABLE,
        Some(ErrorKind::Tls(_)) => TLS,
        Some(ErrorKind::Auth) => AUTH,
        Some(ErrorKind::InvalidInput) => USAGE,
        _ => FAILURE,
    }
}

/// An error in how the command was used (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out.replace('\n', " ")
}

/// The exit code that reports a command's `status` (128+N for signal N, as shells do).
pub(crate) fn status_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(FAILURE),
        (None, Some(sig)) => u8::try_from(128 + (sig & 0x7f)).unwrap_or(FAILURE),
        _ => FAILURE,
    }
}
