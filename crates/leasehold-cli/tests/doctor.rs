//! `leasehold doctor` against servers configured each way: the unsafe ones exit 8 and say
//! why, the safe ones exit 0, and `--json` carries a schema version. (Doctor on a Cluster
//! is in `topologies.rs`, which the server matrix does not run.)

use std::process::{Command, Output, Stdio};

use leasehold_testkit::RedisServer;

/// Exit code and output (stdout only with `json`: warnings go to stderr).
fn doctor(target: &[String], json: bool) -> (i32, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    for var in ["REDIS_URL", "REDIS_PASSWORD", "REDIS_USERNAME"] {
        c.env_remove(var);
    }
    c.args(target).arg("doctor");
    if json {
        c.arg("--json");
    }
    let out: Output = c.stdin(Stdio::null()).output().expect("run leasehold");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = if json {
        stdout
    } else {
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
    };
    (out.status.code().unwrap_or(-1), text)
}

fn one(server: &RedisServer) -> Vec<String> {
    vec!["--redis".into(), server.url()]
}

/// The status the JSON output gives check `name`.
fn status_of(json: &serde_json::Value, name: &str) -> String {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {json}"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn an_evicting_policy_is_unsafe_and_noeviction_with_aof_is_clean() {
    let evicting = RedisServer::builder()
        .args(["--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru"])
        .start();
    let (code, text) = doctor(&one(&evicting), false);
    assert_eq!(code, 8, "{text}");
    assert!(
        text.contains("UNSAFE") && text.contains("allkeys-lru"),
        "{text}"
    );
    assert!(text.contains("second holder"), "says why: {text}");

    let volatile = RedisServer::builder()
        .args(["--maxmemory", "3mb", "--maxmemory-policy", "volatile-lru"])
        .start();
    let (code, text) = doctor(&one(&volatile), true);
    let json: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(json["schema"], 1, "{text}");
    assert_eq!(status_of(&json, "maxmemory-policy"), "warn");
    assert_eq!(
        status_of(&json, "persistence"),
        "warn",
        "the kit runs without AOF"
    );
    assert_eq!(code, 0, "warnings only: {text}");

    let safe = RedisServer::builder()
        .args([
            "--maxmemory",
            "3mb",
            "--maxmemory-policy",
            "noeviction",
            "--appendonly",
            "yes",
        ])
        .start();
    let (code, text) = doctor(&one(&safe), true);
    let json: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(code, 0, "{text}");
    for name in [
        "maxmemory-policy",
        "persistence",
        "version",
        "ACL EVALSHA",
        "pub/sub",
    ] {
        assert_eq!(status_of(&json, name), "ok", "{name}: {text}");
    }
    assert_eq!(json["unsafe"], false);
}

#[test]
fn missing_acl_permissions_are_named_and_scripts_denied_is_unsafe() {
    let server = RedisServer::builder()
        .args([
            "--user",
            "noscripts",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-evalsha",
            "-script",
        ])
        .args([
            "--user", "noclient", "on", ">pw", "~*", "&*", "+@all", "-client",
        ])
        .args([
            "--user",
            "nosub",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-subscribe",
        ])
        .args([
            "--user", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info",
        ])
        .start();
    let url = |user: &str| format!("redis://{user}:pw@127.0.0.1:{}/", server.port());
    let (code, text) = doctor(&["--redis".into(), url("noscripts")], true);
    let json: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(code, 8, "{text}");
    assert_eq!(status_of(&json, "ACL EVALSHA"), "unsafe");
    assert_eq!(status_of(&json, "ACL SCRIPT EXISTS"), "unsafe");
    assert_eq!(status_of(&json, "ACL CLIENT KILL"), "ok");

    let (code, text) = doctor(&["--redis".into(), url("noclient")], true);
    let json: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(code, 0, "{text}");
    assert_eq!(status_of(&json, "ACL CLIENT ID"), "warn");
    assert_eq!(status_of(&json, "ACL CLIENT KILL"), "warn");
    assert_eq!(status_of(&json, "ACL EVALSHA"), "ok");

    // No SUBSCRIBE: waiters would poll.
    let (code, text) = doctor(&["--redis".into(), url("nosub")], true);
    let json: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(code, 0, "{text}");
    assert_eq!(status_of(&json, "pub/sub"), "warn");
    // No INFO: the settings cannot be read, and it says so.
    let (code, text) = doctor(&["--redis".into(), url("noinfo")], true);
    let json: serde_json::Value = serde_json::from_str(&text).expect(&text);
    assert_eq!(code, 0, "{text}");
    assert_eq!(status_of(&json, "INFO"), "warn");
}
