//! The command never outlives the lease, whatever happens to `leasehold`: killed (any
//! signal, SIGKILL included) or stopped, its command and the command's children stop by
//! the lease's local deadline; catchable signals are forwarded and the lock released.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leasehold_testkit::RedisServer;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn leasehold(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    c.arg("--redis")
        .arg(url)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD");
    c
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Heartbeats (wall-clock ns) written to `file` every 20 ms by a background job of `sh`
/// (a grandchild of leasehold), for at most about 60 s; the job's pid goes to `file.pid`,
/// the holder's fencing token to `file.token`.
fn heartbeat_script(file: &Path) -> String {
    format!(
        "echo $LEASEHOLD_FENCING_TOKEN > {0}.token; sh -c 'echo $$ > {0}.pid; i=0; while [ $i -lt 3000 ]; do date +%s%N >> {0}; sleep 0.02; i=$((i+1)); done' & wait",
        file.display()
    )
}

/// Whether the heartbeat job behind `file` still runs (a zombie does not).
fn beating(file: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(format!("{}.pid", file.display()))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return false;
    };
    kill(Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn beats(file: &Path) -> Vec<u128> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `leasehold run` holder whose command writes heartbeats; killed on drop.
struct Holder {
    child: Child,
    beats: PathBuf,
}

impl Holder {
    fn start(url: &str, name: &str, dir: &Path, ttl: &str) -> Self {
        Holder::start_with(url, name, dir, ttl, &[])
    }

    fn start_with(url: &str, name: &str, dir: &Path, ttl: &str, env: &[(&str, &str)]) -> Self {
        let beats = dir.join(format!("{}.beats", name.replace('/', "_")));
        let child = leasehold(url)
            .envs(env.iter().copied())
            .args([
                "run",
                name,
                "--ttl",
                ttl,
                "--",
                "sh",
                "-c",
                &heartbeat_script(&beats),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let b = beats.clone();
        wait_for(Duration::from_secs(10), "the first heartbeat", || {
            !self::beats(&b).is_empty()
        });
        Holder { child, beats }
    }

    /// Wait (polling) for leasehold to exit; panic with `what` after `limit`.
    fn exit_within(&mut self, limit: Duration, what: &str) -> std::process::ExitStatus {
        let mut status = None;
        wait_for(limit, what, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Heartbeats keep coming for at most `limit` after `since`, and none after a second
/// holder got the lock.
fn stops_before_the_next_holder(server: &RedisServer, name: &str, h: &Holder, limit: Duration) {
    let since = now_ns();
    // Wait until the beats stop growing for a while.
    let mut last_len = 0;
    let mut still_since = Instant::now();
    wait_for(
        limit + Duration::from_secs(1),
        "the heartbeats to stop",
        || {
            let n = beats(&h.beats).len();
            if n != last_len {
                last_len = n;
                still_since = Instant::now();
            }
            still_since.elapsed() > Duration::from_millis(300)
        },
    );
    let last = beats(&h.beats).into_iter().max().unwrap();
    assert!(
        last <= since + limit.as_nanos(),
        "the command beat {} ms after leasehold died",
        (last - since) / 1_000_000
    );
    // A second holder gets the lock; the first command never beats again.
    let out = leasehold(&server.url())
        .args(["run", name, "--wait", "30s", "--", "true"])
        .output()
        .unwrap();
    let granted = now_ns();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !beating(&h.beats),
        "the first command still runs beside the second holder"
    );
    assert!(
        beats(&h.beats).into_iter().all(|b| b < granted),
        "a heartbeat after the second holder was granted"
    );
}

#[test]
fn sigkill_of_leasehold_stops_the_command_and_its_children_within_a_second() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let h = Holder::start(&server.url(), "sup/kill9", dir.path(), "3s");
    kill(h.pid(), Signal::SIGKILL).unwrap();
    stops_before_the_next_holder(&server, "sup/kill9", &h, Duration::from_secs(1));
}

#[test]
fn a_panic_in_a_supervisor_task_ends_leasehold_and_its_command_at_once() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The panic comes after the first renewal (a third of the 3 s lease).
    let mut h = Holder::start_with(
        &server.url(),
        "sup/panic",
        dir.path(),
        "3s",
        &[("LEASEHOLD_TEST_PANIC_IN_SUPERVISOR", "1")],
    );
    let status = h.exit_within(
        Duration::from_secs(5),
        "leasehold kept running after a task panicked",
    );
    assert_eq!(status.code(), Some(101), "the documented panic exit code");
    wait_for(Duration::from_secs(1), "the heartbeat job to die", || {
        !beating(&h.beats)
    });
    stops_before_the_next_holder(&server, "sup/panic", &h, Duration::from_secs(1));
}

#[test]
fn hup_usr1_alrm_and_quit_stop_the_command_and_release_the_lock() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    for (i, sig) in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGALRM,
        Signal::SIGQUIT,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("sup/sig{i}");
        let mut h = Holder::start(&server.url(), &name, dir.path(), "30s");
        kill(h.pid(), sig).unwrap();
        // Forwarded to the command group; leasehold releases once it ends.
        let status = h.exit_within(
            Duration::from_secs(5),
            &format!("{sig:?}: leasehold did not finish"),
        );
        assert_eq!(status.code(), Some(128 + sig as i32), "{sig:?}");
        let mut con = server.connection();
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("leasehold:{{{name}}}"))
            .query(&mut con)
            .unwrap();
        assert!(!exists, "{sig:?}: the lock was not released");
        // The guard kills the group before it reports; the kernel may take a moment.
        wait_for(Duration::from_secs(1), "the heartbeat job to die", || {
            !beating(&h.beats)
        });
    }
}

#[test]
fn a_stopped_leasehold_cannot_keep_its_command_running_past_the_lease_deadline() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let h = Holder::start(&server.url(), "sup/stop", dir.path(), "2s");
    let stopped_at = now_ns();
    kill(h.pid(), Signal::SIGSTOP).unwrap();
    // The lease (2 s, renewed every 0.67 s) ends at most 2 s after the stop. The next
    // holder's command says when it ran (it holds the lock then).
    let out = leasehold(&server.url())
        .args(["run", "sup/stop", "--wait", "10s", "--", "sh", "-c"])
        .arg("date +%s%N; echo $LEASEHOLD_FENCING_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = said.lines();
    let granted: u128 = lines.next().unwrap().trim().parse().unwrap();
    let token: u64 = lines.next().unwrap().trim().parse().unwrap();
    let first: u64 = std::fs::read_to_string(format!("{}.token", h.beats.display()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        token > first,
        "the next holder's token {token} is not above {first}"
    );
    assert!(
        !beating(&h.beats),
        "the stopped holder's command runs beside the next holder"
    );
    let last = beats(&h.beats).into_iter().max().unwrap();
    assert!(
        last < granted,
        "the stopped holder's command beat {} ms after the next holder ran",
        (last - granted) / 1_000_000
    );
    assert!(
        last < stopped_at + 2_000_000_000,
        "beat {} ms after the stop, past the 2 s lease",
        (last - stopped_at) / 1_000_000
    );
    kill(h.pid(), Signal::SIGCONT).unwrap();
}

#[test]
fn a_missing_command_exits_127_and_a_non_executable_one_126() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = leasehold(&server.url())
        .args(["run", "sup/missing", "--", "no-such-command-anywhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\ntrue\n").unwrap();
    let out = leasehold(&server.url())
        .args(["run", "sup/plain", "--"])
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_acquire_exits_in_seconds_and_says_what_it_knows() {
    use leasehold_testkit::{FaultProxy, Match, Rule};
    let server = RedisServer::start();
    let proxy = FaultProxy::start(server.addr()).await.unwrap();
    // Every script reply is late: the acquire's outcome (and the release's) stays unknown.
    let _slow =
        proxy.add_rule(Rule::reply_to(Match::command("EVALSHA")).delay(Duration::from_secs(8)));
    let url = proxy.url();
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        leasehold(&url)
            .args(["run", "sup/ambiguous", "--wait", "1s", "--", "true"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("may have granted"), "{err}");
    assert!(!err.contains("gave up"), "{err}");
    assert!(
        took < Duration::from_secs(8),
        "took {took:?}: the exit must not wait out the lease"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_leasehold"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        for sub in ["run", "elect", "status", "doctor", "cacert", "sentinel"] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(
            !script.contains("__guard"),
            "{shell} completion offers the internal guard mode"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_leasehold"))
        .arg("man")
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        page.starts_with(".ie") && page.contains(".TH leasehold 1"),
        "{page}"
    );
    assert!(
        !page.contains("guard"),
        "the man page shows the internal guard mode"
    );
}

#[test]
fn warnings_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    // A user that may not run CLIENT gets a WARN line; stderr here is a pipe.
    let server = RedisServer::builder()
        .args([
            "--user", "limited", "on", ">pw", "~*", "&*", "+@all", "-client",
        ])
        .start();
    let url = format!("redis://limited:pw@127.0.0.1:{}/", server.port());
    let out = leasehold(&url)
        .args(["run", "sup/colour", "--", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("WARN"), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI codes in a pipe: {err:?}");
}

#[test]
fn a_redis_restart_without_persistence_stops_the_command_within_seconds() {
    let mut server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // A 30 s lease: its next renewal is 10 s away.
    let mut h = Holder::start(&server.url(), "sup/restart", dir.path(), "30s");
    let restarted_at = Instant::now();
    server.restart();
    let status = h.exit_within(
        Duration::from_secs(5),
        "leasehold kept running its command after the restart",
    );
    assert_eq!(status.code(), Some(4), "lease lost: exit 4");
    wait_for(Duration::from_secs(1), "the heartbeat job to die", || {
        !beating(&h.beats)
    });
    let took = restarted_at.elapsed();
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
}

#[test]
fn a_command_that_ends_at_once_is_reported_with_its_status_never_as_a_failed_guard() {
    // The guard may connect, run `true` and exit before leasehold accepts its connection;
    // that is a finished command, not a guard that failed to start. 4 × 50 runs at once.
    let server = RedisServer::start();
    let url = server.url();
    let runs: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                for _ in 0..50 {
                    let out = leasehold(&url)
                        .args(["run", &format!("sup/short/{t}"), "--", "true"])
                        .output()
                        .unwrap();
                    if !out.status.success() {
                        failed.push(String::from_utf8_lossy(&out.stderr).to_string());
                    }
                }
                failed
            })
        })
        .collect();
    let failed: Vec<String> = runs.into_iter().flat_map(|r| r.join().unwrap()).collect();
    assert!(
        failed.is_empty(),
        "{} of 200 runs failed: {:?}",
        failed.len(),
        failed.first()
    );
}
