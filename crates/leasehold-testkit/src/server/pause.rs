//! [`PauseGuard`]: a `redis-server` frozen with SIGSTOP until the guard is
//! dropped.
//!
//! Invariants: the guard borrows its [`RedisServer`], so the process cannot be
//! stopped, restarted or reaped (and its pid reused) while it is paused;
//! dropping the guard always sends SIGCONT. SIGKILL works on a stopped process,
//! so a server dropped while paused is still killed and reaped.

use std::{
    fs,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::RedisServer;

/// How long [`RedisServer::pause`] waits for the kernel to stop the process.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(1);
const MAX_STOP_POLLS: u32 = 4_000;

/// A paused server; dropping it (or [`resume`](Self::resume)) resumes it.
#[must_use = "the server resumes as soon as the guard is dropped"]
#[derive(Debug)]
pub struct PauseGuard<'a> {
    server: &'a RedisServer,
    pid: Pid,
}

impl<'a> PauseGuard<'a> {
    pub(super) fn new(server: &'a RedisServer) -> Self {
        let Some(raw) = server.running_pid() else {
            server.fail("cannot pause", "the server is not running")
        };
        let pid = Pid::from_raw(
            i32::try_from(raw).unwrap_or_else(|error| server.fail("pid out of range", error)),
        );
        kill(pid, Signal::SIGSTOP).unwrap_or_else(|error| server.fail("SIGSTOP failed", error));
        // Construct the guard before waiting so a panic below still resumes.
        let guard = Self { server, pid };
        guard.wait_until_stopped();
        guard
    }

    /// Resumes the server now (same as dropping the guard).
    pub fn resume(self) {
        drop(self);
    }

    /// Polls `/proc/PID/stat` until the process state is "stopped". Without
    /// procfs it returns at once: SIGSTOP is then delivered asynchronously.
    fn wait_until_stopped(&self) {
        let path = format!("/proc/{}/stat", self.pid);
        let deadline = Instant::now() + STOP_TIMEOUT;
        for _ in 0..MAX_STOP_POLLS {
            let Ok(stat) = fs::read_to_string(&path) else {
                return;
            };
            // "pid (comm) STATE ..."; comm may contain spaces and parentheses.
            let state = stat
                .rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().next());
            match state {
                Some("T" | "t") => return,
                Some("Z" | "X") => self.server.fail("cannot pause", "the process died"),
                _ => {}
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(STOP_POLL_INTERVAL);
        }
        self.server.fail(
            "cannot pause",
            format!("process not stopped within {STOP_TIMEOUT:?}"),
        )
    }
}

impl Drop for PauseGuard<'_> {
    fn drop(&mut self) {
        let _ = kill(self.pid, Signal::SIGCONT);
    }
}
