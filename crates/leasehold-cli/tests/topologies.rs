//! The `leasehold` binary against every topology the library supports: a Sentinel group,
//! a 3-master Cluster and 5 independent RedLock masters, for run, status, list, release
//! and doctor.

use std::process::{Command, Output, Stdio};

use leasehold_testkit::{Masters, RedisCluster, SentinelGroup};

fn leasehold(target: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    for var in [
        "REDIS_URL",
        "REDIS_PASSWORD",
        "REDIS_USERNAME",
        "LEASEHOLD_SENTINEL",
        "LEASEHOLD_MASTER_NAME",
        "LEASEHOLD_CLUSTER",
        "LEASEHOLD_REDLOCK",
    ] {
        c.env_remove(var);
    }
    c.args(target);
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run leasehold")
}

fn ok(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Hold `name` with `leasehold run` while `during` runs against the same target.
fn while_held(target: &[String], name: &str, during: impl FnOnce()) {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("inside");
    let release = dir.path().join("release");
    let script = format!(
        "touch {0}; while [ ! -e {1} ]; do sleep 0.02; done",
        flag.display(),
        release.display()
    );
    let mut holder = Holder(
        leasehold(target)
            .args(["run", name, "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
        release.clone(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !flag.exists() {
        assert!(std::time::Instant::now() < deadline, "the holder never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    during();
    std::fs::write(&release, "").unwrap();
    assert!(holder.0.wait().unwrap().success());
}

/// A holder process, told to finish (its release file) and killed if the test fails
/// while it holds.
struct Holder(std::process::Child, std::path::PathBuf);

impl Drop for Holder {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            if !self.1.as_os_str().is_empty() {
                let _ = std::fs::write(&self.1, "");
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Hold `name` with `leasehold run -- sleep`, remove it with `release --force`, and check
/// that the holder learns it (exit 4) and the lock is free.
fn force_release_a_held_lock(target: &[String], name: &str) {
    let mut holder = Holder(
        leasehold(target)
            .args(["run", name, "--ttl", "3s", "--", "sleep", "30"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
        std::path::PathBuf::new(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = run(leasehold(target).args(["status", name]));
        if String::from_utf8_lossy(&out.stdout).contains("held by") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never held");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = ok(&run(leasehold(target).args(["release", name, "--force"])));
    assert!(out.contains("removed lock"), "{out}");
    // The holder finds out at its next renewal at the latest (every second).
    let status = holder.0.wait().unwrap();
    assert_eq!(status.code(), Some(4), "the holder must stop: lease lost");
    let out = ok(&run(leasehold(target).args(["status", name])));
    assert!(
        !out.lines()
            .any(|l| l.starts_with("held by") || l.contains(": held by")),
        "{out}"
    );
}

#[test]
fn run_status_list_and_release_through_sentinel() {
    let group = SentinelGroup::start();
    let mut target = Vec::new();
    for url in group.sentinel_urls() {
        target.push("--sentinel".to_string());
        target.push(url);
    }
    target.push("--master-name".into());
    target.push(group.master_name().to_string());
    while_held(&target, "topo/sentinel", || {
        let out = ok(&run(leasehold(&target).args(["status", "topo/sentinel"])));
        assert!(out.contains("held by"), "{out}");
        let out = ok(&run(leasehold(&target).args(["list", "topo/*"])));
        assert!(out.contains("topo/sentinel"), "{out}");
    });
    force_release_a_held_lock(&target, "topo/sentinel-held");
    // The same through the environment.
    let out = run(leasehold(&[])
        .env("LEASEHOLD_SENTINEL", group.sentinel_urls().join(","))
        .env("LEASEHOLD_MASTER_NAME", group.master_name())
        .args(["release", "topo/sentinel", "--force"]));
    ok(&out);
}

#[test]
fn list_and_status_on_a_cluster_see_locks_on_every_primary() {
    let cluster = RedisCluster::start(3);
    let mut target = vec!["--cluster".to_string()];
    for url in cluster.urls() {
        target.push("--redis".into());
        target.push(url);
    }
    // Names on each of the three primaries.
    let mut names = Vec::new();
    let mut seen = [false; 3];
    for i in 0..300 {
        let name = format!("topo/c{i}");
        let key = format!("leasehold:{{{name}}}");
        let node = cluster.node_for_key(key.as_bytes());
        if !seen[node] {
            seen[node] = true;
            names.push(name);
        }
    }
    assert_eq!(names.len(), 3);
    while_held(&target, &names[0], || {
        while_held(&target, &names[1], || {
            while_held(&target, &names[2], || {
                let out = ok(&run(leasehold(&target).args(["list", "topo/*"])));
                for name in &names {
                    assert!(out.contains(name.as_str()), "{name} missing: {out}");
                }
                let out = ok(&run(
                    leasehold(&target).args(["status", &names[2], "--json"])
                ));
                assert!(out.contains("\"holder\""), "{out}");
            })
        })
    });
    let out = ok(&run(leasehold(&target).args(["list", "topo/*"])));
    assert!(out.contains("nothing held matches"), "{out}");
    force_release_a_held_lock(&target, &names[1]);
}

#[test]
fn status_on_redlock_shows_every_node_and_the_quorum() {
    let masters = Masters::start(5);
    let mut target = vec!["--redlock".to_string()];
    for url in masters.urls() {
        target.push("--redis".into());
        target.push(url);
    }
    while_held(&target, "topo/redlock", || {
        let out = ok(&run(leasehold(&target).args(["status", "topo/redlock"])));
        // A quorum grant needs 3 of 5; a node that answers after the quorum may or may
        // not hold it too.
        assert!(
            ["held on 3 of 5", "held on 4 of 5", "held on 5 of 5"]
                .iter()
                .any(|q| out.contains(q)),
            "{out}"
        );
        assert_eq!(out.matches("node       ").count(), 5, "{out}");
        let out = ok(&run(leasehold(&target).args(["list", "topo/*"])));
        assert!(out.contains("topo/redlock"), "{out}");
    });
    let out = ok(&run(leasehold(&target).args(["status", "topo/redlock"])));
    assert!(out.contains("not held by a majority"), "{out}");
    force_release_a_held_lock(&target, "topo/redlock-held");
}

#[test]
fn several_urls_without_a_topology_are_a_usage_error() {
    let out = run(leasehold(&[
        "--redis".into(),
        "redis://127.0.0.1:9/".into(),
        "--redis".into(),
        "redis://127.0.0.1:10/".into(),
    ])
    .args(["status", "x"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--cluster") && err.contains("--redlock"),
        "{err}"
    );
}

#[test]
fn doctor_checks_a_cluster_primary_by_primary_with_its_state() {
    let cluster = RedisCluster::start(3);
    let mut target = vec!["--cluster".to_string()];
    for url in cluster.urls() {
        target.push("--redis".into());
        target.push(url);
    }
    let out = run(leasehold(&target).args(["doctor", "--json"]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let checks = json["checks"].as_array().unwrap();
    let servers: std::collections::HashSet<&str> = checks
        .iter()
        .map(|c| c["server"].as_str().unwrap())
        .collect();
    assert_eq!(servers.len(), 3, "one set of checks per primary: {text}");
    let states: Vec<&serde_json::Value> = checks
        .iter()
        .filter(|c| c["name"] == "cluster state")
        .collect();
    assert_eq!(states.len(), 3, "{text}");
    assert!(states.iter().all(|c| c["status"] == "ok"), "{text}");
}
