//! The `leasehold` binary, driven as a user would: real processes against a real
//! redis-server started by the test kit.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use leasehold_testkit::RedisServer;

fn leasehold(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    c.arg("--redis")
        .arg(url)
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run leasehold")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(out: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Poll `check` every 10 ms until true; panic with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn key_exists(server: &RedisServer, key: &str) -> bool {
    let mut con = server.connection();
    redis::cmd("EXISTS")
        .arg(key)
        .query::<bool>(&mut con)
        .unwrap()
}

fn process_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn run_passes_the_fencing_token_and_the_exit_status_through() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("env");
    let out = run(leasehold(&server.url()).args(["run", "job", "--"]).args([
        "sh",
        "-c",
        &format!("echo \"$LEASEHOLD_LOCK $LEASEHOLD_FENCING_TOKEN $LEASEHOLD_LEASE_DEADLINE\" > {}; exit 7", out_file.display()),
    ]));
    assert_eq!(code(&out), 7, "{}", text(&out));
    let env = std::fs::read_to_string(&out_file).unwrap();
    let parts: Vec<&str> = env.split_whitespace().collect();
    assert_eq!(parts[0], "job");
    assert!(parts[1].parse::<u64>().unwrap() > 0, "{env}");
    assert!(parts[2].ends_with('Z'), "an RFC 3339 deadline: {env}");
    assert!(
        !key_exists(&server, "leasehold:{job}"),
        "released after the command"
    );
}

#[test]
fn a_second_run_waits_or_with_no_wait_exits_3() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    let mut first = leasehold(&server.url())
        .args(["run", "shared", "--label", "first", "--"])
        .args([
            "sh",
            "-c",
            &format!(
                "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
                started.display(),
                release.display()
            ),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the first command to start",
        || started.exists(),
    );

    let out = run(leasehold(&server.url()).args(["run", "shared", "--no-wait", "--", "true"]));
    assert_eq!(code(&out), 3, "{}", text(&out));
    let out =
        run(leasehold(&server.url()).args(["run", "shared", "--wait", "300ms", "--", "true"]));
    assert_eq!(code(&out), 3, "{}", text(&out));

    let waiter = leasehold(&server.url())
        .args([
            "run",
            "shared",
            "--wait",
            "20s",
            "--",
            "sh",
            "-c",
            "echo $LEASEHOLD_FENCING_TOKEN",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(&release, "").unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(0));
    let out = waiter.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<u64>()
        .is_ok());
}

#[test]
fn a_run_whose_lease_is_deleted_stops_the_command_and_exits_4() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let mut child = leasehold(&server.url())
        .args([
            "run",
            "doomed",
            "--ttl",
            "1s",
            "--response-timeout",
            "500ms",
        ])
        .args(["--grace", "500ms", "--"])
        // A grandchild: the whole process group must stop, not just `sh`.
        .args([
            "sh",
            "-c",
            &format!("sleep 30 & echo $! > {}; wait", pid_file.display()),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the command to start", || {
        read_pid(&pid_file).is_some()
    });
    let pid = read_pid(&pid_file).unwrap();
    let mut con = server.connection();
    let _: () = redis::cmd("DEL")
        .arg("leasehold:{doomed}")
        .query(&mut con)
        .unwrap();
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    wait_for(
        Duration::from_secs(5),
        "the command's grandchild to be stopped",
        || !process_alive(pid),
    );
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("lost"), "{err}");
}

#[test]
fn sigterm_to_run_is_forwarded_and_the_lock_is_released() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let child = leasehold(&server.url())
        .args(["run", "terminated", "--"])
        .args([
            "sh",
            "-c",
            &format!("echo $$ > {}; exec sleep 30", pid_file.display()),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the command to start", || {
        read_pid(&pid_file).is_some()
    });
    let leasehold_pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(leasehold_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "the command's own status (killed by SIGTERM)"
    );
    assert!(!process_alive(read_pid(&pid_file).unwrap()));
    assert!(!key_exists(&server, "leasehold:{terminated}"));
    let out = run(leasehold(&server.url()).args(["run", "terminated", "--no-wait", "--", "true"]));
    assert_eq!(
        code(&out),
        0,
        "the next run gets the lock at once: {}",
        text(&out)
    );
}

#[test]
fn status_and_list_show_the_holder_and_release_force_removes_it() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let mut holder = leasehold(&server.url())
        .args([
            "run",
            "reports/daily",
            "--label",
            "nightly",
            "--ttl",
            "20s",
            "--",
        ])
        .args([
            "sh",
            "-c",
            &format!("touch {}; exec sleep 30", started.display()),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the holder to start", || {
        started.exists()
    });

    let out = run(leasehold(&server.url()).args(["status", "reports/daily", "--json"]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1, "{v}");
    assert_eq!(v["holder"]["metadata"]["label"], "nightly");
    let ttl = v["holder"]["ttl_remaining_ms"].as_u64().unwrap();
    assert!(ttl > 10_000 && ttl <= 20_000, "{ttl}");

    let out = run(leasehold(&server.url()).args(["status", "reports/daily"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nightly"),
        "{}",
        text(&out)
    );

    let out = run(leasehold(&server.url()).args(["list", "reports/*", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], 1, "{v}");
    assert_eq!(v["locks"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["locks"][0]["name"], "reports/daily");
    let out = run(leasehold(&server.url()).args(["list"]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reports/daily"),
        "{}",
        text(&out)
    );

    let out = run(leasehold(&server.url()).args(["release", "reports/daily"]));
    assert_eq!(code(&out), 2, "refuses without --force: {}", text(&out));
    assert!(key_exists(&server, "leasehold:{reports/daily}"));
    let out = run(leasehold(&server.url()).args(["release", "reports/daily", "--force"]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nightly"),
        "says what it removed: {}",
        text(&out)
    );
    // The holder learns it at its next renewal and stops its command.
    let status = holder.wait().unwrap();
    assert_eq!(status.code(), Some(4));
}

#[test]
fn elect_hands_leadership_over_when_the_leader_dies() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let leader_file = |n: &str| dir.path().join(format!("leader-{n}"));
    let spawn = |n: &str| {
        leasehold(&server.url())
            .args([
                "elect",
                "scheduler",
                "--ttl",
                "1s",
                "--response-timeout",
                "500ms",
            ])
            .args(["--label", n, "--"])
            .args([
                "sh",
                "-c",
                &format!(
                    "echo $LEASEHOLD_FENCING_TOKEN > {}; exec sleep 30",
                    leader_file(n).display()
                ),
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut a = spawn("a");
    wait_for(Duration::from_secs(10), "a to lead", || {
        leader_file("a").exists()
    });
    let mut b = spawn("b");
    std::thread::sleep(Duration::from_millis(300)); // b campaigns meanwhile (the scenario)
    assert!(!leader_file("b").exists(), "two leaders at once");
    // The leader's process dies without a word: its lease must run out before b leads.
    a.kill().unwrap();
    a.wait().unwrap();
    let killed_at = Instant::now();
    // Its command is orphaned by the SIGKILL; end it too (a dead machine takes both).
    if let Some(pid) = read_pid(&dir.path().join("leader-a.pid")) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    wait_for(Duration::from_secs(5), "b to lead", || {
        leader_file("b").exists()
    });
    assert!(
        killed_at.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        killed_at.elapsed()
    );
    let token = |n: &str| {
        std::fs::read_to_string(leader_file(n))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    wait_for(Duration::from_secs(2), "b's token to be written", || {
        std::fs::read_to_string(leader_file("b")).is_ok_and(|s| s.trim().parse::<u64>().is_ok())
    });
    assert!(token("b") > token("a"));
    b.kill().unwrap();
    b.wait().unwrap();
}

#[test]
fn bad_input_gives_one_clear_line_and_the_usage_code() {
    let server = RedisServer::start();
    let url = server.url();
    for (args, needle) in [
        (
            vec!["run", "x", "--frobnicate", "--", "true"],
            "--frobnicate",
        ),
        (
            vec!["run", "x", "--ttl", "ten seconds", "--", "true"],
            "durations like",
        ),
        (
            vec!["run", "x", "--ttl", "1ms", "--", "true"],
            "lease TTL 1 ms is too short: use at least 10 ms",
        ),
        (
            vec!["run", "x", "--ttl", "15ms", "--", "true"],
            "too short to renew with a response timeout of 1 s",
        ),
        (
            vec!["run", "x", "--ttl", "100h", "--", "true"],
            "lease TTL 100 h is too long: use at most 24 h",
        ),
        (vec!["run", "", "--", "true"], "empty"),
        (vec!["status", "a{b"], "braces"),
    ] {
        let out = run(leasehold(&url).args(&args));
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = run(Command::new(env!("CARGO_BIN_EXE_leasehold")).args([
        "--redis",
        "http://u:secret@host",
        "status",
        "x",
    ]));
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("secret"),
        "{}",
        text(&out)
    );
    let mut con = server.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert!(keys.is_empty(), "bad input left keys behind: {keys:?}");
}

#[test]
fn unreachable_redis_exits_5_with_one_line() {
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out =
        run(leasehold(&format!("redis://127.0.0.1:{port}/")).args(["run", "x", "--", "true"]));
    assert_eq!(code(&out), 5, "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach Redis"), "{err}");
}

#[test]
fn the_product_command_has_no_lab_commands() {
    // demo, bench and torture start servers of their own: they live in leasehold-lab.
    for lab in ["demo", "bench", "torture"] {
        let out = run(Command::new(env!("CARGO_BIN_EXE_leasehold")).arg(lab));
        assert_eq!(code(&out), 2, "{lab}: {}", text(&out));
    }
    let out = run(Command::new(env!("CARGO_BIN_EXE_leasehold")).arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "elect", "status", "list", "release"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let out = run(Command::new(env!("CARGO_BIN_EXE_leasehold")).args(["run", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "3    not acquired",
        "4    lease lost",
        "5    Redis unreachable",
    ] {
        assert!(help.contains(line), "{help}");
    }
}

#[test]
fn a_signal_while_waiting_for_the_lock_ends_the_wait() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let mut holder = leasehold(&server.url())
        .args(["run", "busy", "--"])
        .args([
            "sh",
            "-c",
            &format!("touch {}; exec sleep 30", started.display()),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the holder to start", || {
        started.exists()
    });
    for args in [
        vec!["run", "busy", "--wait", "30s", "--", "true"],
        vec!["elect", "busy", "--", "true"],
    ] {
        let queued = || {
            let mut con = server.connection();
            redis::cmd("ZCARD")
                .arg("leasehold:{busy}:waiters")
                .query::<u64>(&mut con)
                .unwrap()
        };
        wait_for(Duration::from_secs(10), "an empty queue", || queued() == 0);
        let waiter = leasehold(&server.url())
            .args(&args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // Interrupt it once it waits in the lock's queue at the server.
        wait_for(Duration::from_secs(10), "the waiter to queue", || {
            let mut con = server.connection();
            redis::cmd("ZCARD")
                .arg("leasehold:{busy}:waiters")
                .query::<u64>(&mut con)
                .unwrap()
                >= 1
        });
        let pid = nix::unistd::Pid::from_raw(i32::try_from(waiter.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let t = Instant::now();
        let out = waiter.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(128 + 15), "{args:?}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{args:?}: {:?}",
            t.elapsed()
        );
    }
    let holder_pid = nix::unistd::Pid::from_raw(i32::try_from(holder.id()).unwrap());
    nix::sys::signal::kill(holder_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    holder.wait().unwrap();
}

fn zcard(server: &RedisServer, key: &str) -> u64 {
    let mut con = server.connection();
    redis::cmd("ZCARD").arg(key).query(&mut con).unwrap()
}

/// `leasehold run --fair NAME` holding the lock until `release` exists; returns once the
/// command runs.
fn hold_fair(
    server: &RedisServer,
    name: &str,
    dir: &Path,
) -> (std::process::Child, std::path::PathBuf) {
    let started = dir.join(format!("{name}.started"));
    let release = dir.join(format!("{name}.release"));
    let holder = leasehold(&server.url())
        .args(["run", name, "--fair", "--"])
        .args([
            "sh",
            "-c",
            &format!(
                "touch {}; while [ ! -e {} ]; do sleep 0.02; done",
                started.display(),
                release.display()
            ),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the holder to start", || {
        started.exists()
    });
    (holder, release)
}

/// A fair waiter (optionally under `faketime OFFSET`) that appends `tag` to `order`.
fn fair_waiter(
    server: &RedisServer,
    name: &str,
    faketime: Option<&str>,
    extra: &[&str],
    tag: &str,
    order: &Path,
) -> std::process::Child {
    let mut cmd = match faketime {
        Some(offset) => {
            let mut c = Command::new("faketime");
            c.args(["-f", offset, env!("CARGO_BIN_EXE_leasehold"), "--redis"])
                .arg(server.url())
                // Shift the wall clock only: the monotonic clock stays real.
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                .env_remove("REDIS_URL");
            c
        }
        None => leasehold(&server.url()),
    };
    cmd.args(["run", name, "--fair"])
        .args(extra)
        .args([
            "--",
            "sh",
            "-c",
            &format!("echo {tag} >> {}", order.display()),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_fair_waiter_process_is_skipped_within_its_place_ttl() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let queue = "leasehold:{payroll}:waiters";
    let (mut holder, release) = hold_fair(&server, "payroll", dir.path());
    let args = ["--wait", "30s", "--place-ttl", "600ms"];
    let mut doomed = fair_waiter(&server, "payroll", None, &args, "doomed", &order);
    wait_for(Duration::from_secs(10), "the first waiter to queue", || {
        zcard(&server, queue) == 1
    });
    doomed.kill().unwrap(); // SIGKILL: it can neither refresh nor give up its place
    doomed.wait().unwrap();
    let next = fair_waiter(&server, "payroll", None, &args, "next", &order);
    wait_for(
        Duration::from_secs(10),
        "the second waiter to queue",
        || zcard(&server, queue) == 2,
    );
    let released = Instant::now();
    std::fs::write(&release, "").unwrap();
    assert_eq!(holder.wait().unwrap().code(), Some(0));
    let out = next.wait_with_output().unwrap();
    let took = released.elapsed();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&order).unwrap(), "next\n");
    // The dead place lapses 600 ms after its last refresh and the next waiter refreshes
    // every 200 ms: about 800 ms, far under the 30 s wait (slack for process start-up).
    assert!(
        took < Duration::from_secs(5),
        "the next waiter ran {took:?} after the release"
    );
    assert_eq!(zcard(&server, queue), 0);
}

#[test]
fn fair_waiters_whose_clocks_disagree_keep_arrival_order_and_their_wait_times() {
    let server = RedisServer::start();
    // The clocks really disagree: faketime shifts the wall clock by two hours.
    let shifted = Command::new("faketime")
        .args(["-f", "+2h", "date", "+%s"])
        .output()
        .expect("faketime (scripts/test installs it)");
    let ahead: i64 = String::from_utf8_lossy(&shifted.stdout)
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (ahead - now - 7200).abs() < 60,
        "faketime did not shift the clock"
    );

    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let queue = "leasehold:{ledger}:waiters";
    let (mut holder, release) = hold_fair(&server, "ledger", dir.path());
    let wait = ["--wait", "30s"];
    let mut waiters = Vec::new();
    for (i, (offset, tag)) in [
        (Some("+2h"), "ahead"),
        (Some("-2h"), "behind"),
        (None, "true"),
    ]
    .into_iter()
    .enumerate()
    {
        waiters.push(fair_waiter(&server, "ledger", offset, &wait, tag, &order));
        wait_for(Duration::from_secs(10), "a waiter to queue", || {
            zcard(&server, queue) == i as u64 + 1
        });
    }
    // Stored place deadlines come from the server's clock, whatever the waiter's says.
    let mut con = server.connection();
    let (secs, _): (i64, i64) = redis::cmd("TIME").query(&mut con).unwrap();
    let places: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg("leasehold:{ledger}:waiters:exp")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut con)
        .unwrap();
    assert_eq!(places.len(), 3);
    for (_, expiry_ms) in &places {
        let ahead_of_server = *expiry_ms / 1000.0 - secs as f64;
        assert!(
            (0.0..=5.0).contains(&ahead_of_server),
            "a place expires {ahead_of_server} s from the server's now (place ttl 3 s)"
        );
    }
    // Wait times are kept too: a waiter two hours behind gives up after its 1 s wait.
    let started = Instant::now();
    let late = fair_waiter(
        &server,
        "ledger",
        Some("-2h"),
        &["--wait", "1s"],
        "late",
        &order,
    )
    .wait_with_output()
    .unwrap();
    let waited = started.elapsed();
    assert_eq!(code(&late), 3, "{}", text(&late));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(6),
        "a 1 s wait took {waited:?}"
    );

    std::fs::write(&release, "").unwrap();
    assert_eq!(holder.wait().unwrap().code(), Some(0));
    for w in waiters {
        let out = w.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
    assert_eq!(
        std::fs::read_to_string(&order).unwrap(),
        "ahead\nbehind\ntrue\n"
    );
}

#[test]
fn run_over_several_locks_holds_all_of_them_and_passes_every_token() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (names, tokens) = (dir.path().join("names"), dir.path().join("tokens"));
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    let mut first = leasehold(&server.url())
        .args(["run", "acct/7", "acct/3", "--"])
        .args([
            "sh",
            "-c",
            &format!(
                "printf '%s' \"$LEASEHOLD_LOCK\" > {}; echo $LEASEHOLD_FENCING_TOKEN > {}; touch {}; \
                 while [ ! -e {} ]; do sleep 0.05; done",
                names.display(),
                tokens.display(),
                started.display(),
                release.display()
            ),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(10), "the command to start", || {
        started.exists()
    });
    // Names one per line and tokens in the same, sorted order.
    assert_eq!(std::fs::read_to_string(&names).unwrap(), "acct/3\nacct/7");
    let tokens = std::fs::read_to_string(&tokens).unwrap();
    let tokens: Vec<u64> = tokens
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(tokens.len(), 2);
    for name in ["acct/3", "acct/7"] {
        assert!(
            key_exists(&server, &format!("leasehold:{{{name}}}")),
            "{name}"
        );
        let out = run(leasehold(&server.url()).args(["run", name, "--no-wait", "--", "true"]));
        assert_eq!(code(&out), 3, "{name} is held: {}", text(&out));
    }
    // A set sharing one member is refused as a whole, and takes nothing.
    let out =
        run(leasehold(&server.url()).args(["run", "acct/9", "acct/7", "--no-wait", "--", "true"]));
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(!key_exists(&server, "leasehold:{acct/9}"), "all or none");
    std::fs::write(&release, "").unwrap();
    assert!(first.wait().unwrap().success());
    for name in ["acct/3", "acct/7"] {
        assert!(
            !key_exists(&server, &format!("leasehold:{{{name}}}")),
            "{name} released"
        );
    }
    let out = run(leasehold(&server.url()).args(["run", "x", "y", "x", "--", "true"]));
    assert_eq!(
        code(&out),
        2,
        "a name listed twice is a usage error: {}",
        text(&out)
    );
}

#[test]
fn runs_naming_the_same_locks_in_opposite_orders_all_finish() {
    let server = RedisServer::start();
    let runs: Vec<_> = (0..6)
        .map(|i| {
            let names = if i % 2 == 0 { ["p", "q"] } else { ["q", "p"] };
            leasehold(&server.url())
                .args(["run", names[0], names[1], "--wait", "30s", "--"])
                .args(["sh", "-c", "sleep 0.1"])
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
}

/// Lines of a child's stdout, read on a thread so a test can wait with a limit.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn observe_prints_each_leader_and_value_that_elect_publishes() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let seen_value = dir.path().join("value");
    let release = dir.path().join("release");
    let mut observer = leasehold(&server.url())
        .args(["observe", "sched", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut observer);
    let next = || -> serde_json::Value {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from observe");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let first = next();
    assert_eq!(first["schema"], 1);
    assert_eq!(first["election"], "sched");
    assert!(first["leader"].is_null(), "{first}");

    let mut leader = leasehold(&server.url())
        .args(["elect", "sched", "--value", "10.0.0.7:8080", "--"])
        .args([
            "sh",
            "-c",
            &format!(
                "echo \"$LEASEHOLD_LEADER_VALUE\" > {}; while [ ! -e {} ]; do sleep 0.05; done",
                seen_value.display(),
                release.display()
            ),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let elected = next();
    assert_eq!(elected["leader"]["value"], "10.0.0.7:8080", "{elected}");
    assert!(elected["leader"]["term"].as_u64().unwrap() > 0, "{elected}");
    wait_for(Duration::from_secs(10), "the command to start", || {
        std::fs::read_to_string(&seen_value).is_ok_and(|v| v.ends_with('\n'))
    });
    assert_eq!(
        std::fs::read_to_string(&seen_value).unwrap().trim(),
        "10.0.0.7:8080"
    );
    // The plain form, from a second observer, while the leader leads.
    let out = run(leasehold(&server.url()).args(["status", "sched"]));
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("value      \"10.0.0.7:8080\""),
        "status shows the leader's value: {}",
        text(&out)
    );
    let mut plain = leasehold(&server.url())
        .args(["observe", "sched"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = lines_of(&mut plain)
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    let term = elected["leader"]["term"].as_u64().unwrap();
    assert!(line.starts_with("leader "), "{line}");
    assert!(
        line.ends_with(&format!("term {term} value \"10.0.0.7:8080\"")),
        "{line}"
    );
    plain.kill().unwrap();
    plain.wait().unwrap();

    // The command ends: the leader resigns, and the observer says so.
    std::fs::write(&release, "").unwrap();
    assert!(leader.wait().unwrap().success());
    let ended = next();
    assert!(ended["leader"].is_null(), "{ended}");
    observer.kill().unwrap();
    observer.wait().unwrap();
}
