//! The dead man's switch between `leasehold run`/`elect` and the command: a second
//! `leasehold` process in a hidden mode (`leasehold __guard`) that starts the command in
//! its own process group and kills that group when the lease's local deadline passes
//! without a newer one, or when the `leasehold` that holds the lock goes away — killed,
//! crashed or OOM-killed (its socket closes; on Linux a parent-death signal backs that up).
//! A stopped or starved `leasehold` stops sending deadlines, so the command is killed at
//! the last confirmed one.
//!
//! The holder tells the guard, one line each over a Unix socket: `D <ns>` a new deadline
//! (CLOCK_MONOTONIC nanoseconds, shared by both processes), `S <n>` forward signal n to the
//! group, `T <ns>` the lease is lost: SIGTERM now and SIGKILL after the grace period, never
//! after `<ns>` (when another holder could be granted the lock) nor the deadline, `K`
//! SIGKILL now, `I` lost but keep running (`--on-lost ignore`).
//! The guard exits with the command's status (128+N for signal N; 127 if it cannot be
//! found, 126 if it cannot be run).
//!
//! Invariants: the group is never left running after the last confirmed deadline unless
//! the holder said `I`; losing the holder is treated as losing the lease; when the command
//! itself ends, whatever is left in its group is killed before the lock is released.

use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::time::{clock_gettime, ClockId};
use nix::unistd::{getppid, Pid};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `std::time::Instant` reads on Linux).
fn mono_now_ns() -> u128 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::from(t).as_nanos())
        .unwrap_or(0)
}

/// `at` as CLOCK_MONOTONIC nanoseconds.
pub(crate) fn to_mono_ns(at: std::time::Instant) -> u128 {
    let now = std::time::Instant::now();
    let now_ns = mono_now_ns();
    match at.checked_duration_since(now) {
        Some(ahead) => now_ns + ahead.as_nanos(),
        None => now_ns.saturating_sub(now.duration_since(at).as_nanos()),
    }
}

fn from_mono_ns(ns: u128) -> Instant {
    let now_ns = mono_now_ns();
    let now = Instant::now();
    if ns >= now_ns {
        now + Duration::from_nanos(u64::try_from(ns - now_ns).unwrap_or(u64::MAX))
    } else {
        now.checked_sub(Duration::from_nanos(
            u64::try_from(now_ns - ns).unwrap_or(u64::MAX),
        ))
        .unwrap_or(now)
    }
}

/// The holder's end: a socket the guard connects back to.
pub(crate) struct Link {
    dir: tempfile::TempDir,
    listener: UnixListener,
}

impl Link {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("leasehold-guard-")
            .tempdir()?;
        let listener = UnixListener::bind(dir.path().join("sock"))?;
        Ok(Link { dir, listener })
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Wait for the guard to connect (or to exit first).
    pub(crate) async fn accept(self, guard: &mut tokio::process::Child) -> anyhow::Result<Line> {
        use futures_util::FutureExt as _;
        tokio::select! {
            biased;
            accepted = self.listener.accept() => Ok(Line { stream: accepted?.0, _dir: self.dir }),
            status = guard.wait() => {
                let status = status?;
                // A short command: the guard may have connected, run it and exited before
                // this accept was polled. Its connection is still queued; take it, and the
                // supervisor reports the command's status.
                match self.listener.accept().now_or_never() {
                    Some(Ok((stream, _))) => Ok(Line { stream, _dir: self.dir }),
                    _ => anyhow::bail!("the guard process ended before it started the command ({status})"),
                }
            }
        }
    }
}

/// The holder's connection to its guard.
pub(crate) struct Line {
    stream: UnixStream,
    _dir: tempfile::TempDir,
}

impl Line {
    /// Send one message; a guard that is gone (its command ended) is not an error.
    pub(crate) async fn send(&mut self, msg: &str) {
        let _ = self.stream.write_all(format!("{msg}\n").as_bytes()).await;
    }

    pub(crate) async fn deadline(&mut self, at: std::time::Instant) {
        self.send(&format!("D {}", to_mono_ns(at))).await;
    }
}

/// Start the guard for `command`: its first deadline is `deadline`.
pub(crate) fn spawn(
    link: &Link,
    deadline: std::time::Instant,
    grace: Duration,
    command: &[String],
    env: &[(&str, String)],
) -> anyhow::Result<tokio::process::Child> {
    let me = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(me);
    cmd.arg(GUARD_MODE)
        .arg("--socket")
        .arg(link.path())
        .arg("--deadline-ns")
        .arg(to_mono_ns(deadline).to_string())
        .arg("--grace-ms")
        .arg(grace.as_millis().to_string())
        .arg("--")
        .args(command)
        // The command has no use for leasehold's Redis credentials.
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD")
        .env_remove("REDIS_USERNAME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.spawn()?)
}

fn send_group(child: &tokio::process::Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

/// The first argument that starts the guard mode.
const GUARD_MODE: &str = "__guard";

/// When the command line is `leasehold __guard …` (as `spawn` writes it): run the guard
/// on a runtime of its own and return its exit code; otherwise `None`.
pub fn main_if_guard() -> Option<std::process::ExitCode> {
    use clap::Parser as _;
    let mut argv = std::env::args_os();
    let program = argv.next()?;
    if argv.next()? != GUARD_MODE {
        return None;
    }
    let args = match crate::args::GuardArgs::try_parse_from(std::iter::once(program).chain(argv)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("leasehold __guard: {e}");
            return Some(std::process::ExitCode::from(crate::exit::USAGE));
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leasehold __guard: cannot start the async runtime: {e}");
            return Some(std::process::ExitCode::from(crate::exit::FAILURE));
        }
    };
    let grace = Duration::from_millis(args.grace_ms);
    let code = runtime.block_on(run(&args.socket, args.deadline_ns, grace, &args.command));
    Some(std::process::ExitCode::from(code))
}

/// `leasehold __guard`: run `command` under the switch; the exit code to leave with.
///
/// # Cancel safety
/// Dropping the future kills the command (it is spawned with `kill_on_drop`); its
/// grandchildren in the group may outlive it, so only the guard's own exit should end it.
pub async fn run(socket: &Path, deadline_ns: u128, grace: Duration, command: &[String]) -> u8 {
    let parent = getppid();
    // Second line on Linux: a signal when the holder dies, whatever closes the socket.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return crate::exit::FAILURE,
    };
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "leasehold: cannot reach the holding process ({e}); not starting the command"
            );
            return crate::exit::FAILURE;
        }
    };
    let Some((program, args)) = command.split_first() else {
        return crate::exit::USAGE;
    };
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let (code, why) = match e.kind() {
                IoKind::NotFound => (127, "command not found"),
                IoKind::PermissionDenied => (126, "permission denied (not executable?)"),
                _ => (126, "cannot run it"),
            };
            eprintln!("leasehold: cannot start {program:?}: {why} ({e})");
            return code;
        }
    };
    let group = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .map(Pid::from_raw);
    let mut lines = BufReader::new(stream).lines();
    let mut deadline = Some(from_mono_ns(deadline_ns));
    let mut kill_at: Option<Instant> = None;
    let mut holder_gone = false;
    loop {
        let wake = match (deadline, kill_at) {
            (Some(d), Some(k)) => Some(d.min(k)),
            (d, k) => d.or(k),
        };
        tokio::select! {
            status = child.wait() => {
                // What the command left behind in its group (a background job, a
                // daemonized child) must not outlive the lock either.
                if let Some(group) = group {
                    let _ = killpg(group, Signal::SIGKILL);
                }
                return match status {
                    Ok(s) => crate::exit::status_code(s),
                    Err(_) => crate::exit::FAILURE,
                };
            }
            line = lines.next_line(), if !holder_gone => match line {
                Ok(Some(l)) => {
                    let mut parts = l.split_whitespace();
                    match (parts.next(), parts.next()) {
                        (Some("D"), Some(ns)) => {
                            if let Ok(ns) = ns.parse::<u128>() {
                                deadline = Some(from_mono_ns(ns));
                            }
                        }
                        (Some("S"), Some(n)) => {
                            if let Some(sig) = n.parse::<i32>().ok().and_then(|n| Signal::try_from(n).ok()) {
                                send_group(&child, sig);
                            }
                        }
                        (Some("T"), takeover) => {
                            send_group(&child, Signal::SIGTERM);
                            let now = Instant::now();
                            let mut by = now + grace;
                            if let Some(at) = takeover.and_then(|ns| ns.parse::<u128>().ok()) {
                                by = by.min(from_mono_ns(at));
                            }
                            kill_at = Some(deadline.map_or(by, |d| d.min(by)).max(now));
                        }
                        (Some("K"), _) => send_group(&child, Signal::SIGKILL),
                        (Some("I"), _) => {
                            deadline = None;
                            kill_at = None;
                        }
                        _ => {}
                    }
                }
                // The holder is gone: its lease is as good as lost.
                _ => {
                    holder_gone = true;
                    eprintln!("leasehold: the holding process is gone; stopping the command");
                    send_group(&child, Signal::SIGTERM);
                    let now = Instant::now();
                    let by = now + grace;
                    kill_at = Some(deadline.map_or(by, |d| d.min(by)).max(now));
                }
            },
            _ = term.recv() => {
                if getppid() != parent && !holder_gone {
                    holder_gone = true;
                    send_group(&child, Signal::SIGTERM);
                    let now = Instant::now();
                    kill_at = Some(deadline.map_or(now + grace, |d| d.min(now + grace)).max(now));
                }
            }
            () = async { tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)).await }, if wake.is_some() => {
                let now = Instant::now();
                if deadline.is_some_and(|d| d <= now) {
                    eprintln!("leasehold: the lease's deadline passed without a renewal; killing the command");
                }
                send_group(&child, Signal::SIGKILL);
                deadline = None;
                kill_at = None;
            }
        }
    }
}
