//! Credentials from the URL and the environment: `REDIS_USERNAME` / `REDIS_PASSWORD` fill
//! in what the URL leaves out, a refused login is its own exit code, and no password is
//! ever printed, whatever characters it holds.

use std::process::{Command, Output, Stdio};

use leasehold_testkit::RedisServer;

/// A password with every character that breaks naive URL handling or printing.
const NASTY: &str = "p?a#s@s/w:o%r d";

fn leasehold() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    for var in ["REDIS_URL", "REDIS_PASSWORD", "REDIS_USERNAME"] {
        c.env_remove(var);
    }
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run leasehold")
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn url(server: &RedisServer, userinfo: &str) -> String {
    format!("redis://{userinfo}127.0.0.1:{}/", server.port())
}

#[test]
fn redis_password_fills_in_a_url_that_names_only_the_user() {
    let server = RedisServer::builder().acl_user("u1", NASTY).start();
    let out = run(leasehold()
        .args(["--redis", &url(&server, "u1@"), "status", "creds/a"])
        .env("REDIS_PASSWORD", NASTY));
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    // Both from the environment, with a bare URL.
    let out = run(leasehold()
        .args(["--redis", &url(&server, ""), "status", "creds/a"])
        .env("REDIS_USERNAME", "u1")
        .env("REDIS_PASSWORD", NASTY));
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
}

#[test]
fn refused_credentials_exit_7_and_never_print_the_password() {
    let server = RedisServer::builder().acl_user("u1", "right").start();
    // A wrong password from the environment, with every level of logging.
    let out = run(leasehold()
        .args([
            "-vvv",
            "--redis",
            &url(&server, "u1@"),
            "run",
            "creds/b",
            "--",
            "true",
        ])
        .env("REDIS_PASSWORD", NASTY));
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(!text.contains(NASTY), "the password was printed: {text}");
    // A wrong password in the URL, percent-encoded as a URL must carry it.
    let encoded: String = url::form_urlencoded::byte_serialize(NASTY.as_bytes()).collect();
    let out = run(leasehold().args([
        "--redis",
        &url(&server, &format!("u1:{encoded}@")),
        "status",
        "creds/b",
    ]));
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(!text.contains(&encoded) && !text.contains(NASTY), "{text}");
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text}");
    assert!(text.contains("refused to log in"), "{text}");
    // No password at all for a server that requires one.
    let guarded = RedisServer::builder().requirepass("right").start();
    let out = run(leasehold().args(["--redis", &url(&guarded, ""), "status", "creds/b"]));
    assert_eq!(out.status.code(), Some(7), "{}", all_output(&out));
}

#[test]
fn a_raw_password_that_breaks_the_url_is_not_printed_in_the_error() {
    let out = run(leasehold().args([
        "--redis",
        &format!("redis://u1:{NASTY}@127.0.0.1:9/"),
        "status",
        "creds/c",
    ]));
    let text = all_output(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    for secret_part in ["p?a", "w:o%r d", NASTY] {
        assert!(
            !text.contains(secret_part),
            "{secret_part:?} printed: {text}"
        );
    }
}

#[test]
fn an_acl_warning_names_the_command_the_user_may_not_run() {
    for (denied, names, not_named) in [
        ("-info", "may not run INFO", "CLIENT ID"),
        ("-client", "may not run CLIENT ID", "may not run INFO"),
    ] {
        let server = RedisServer::builder()
            .args([
                "--user", "limited", "on", ">pw", "~*", "&*", "+@all", denied,
            ])
            .start();
        let out = run(leasehold().args([
            "--redis",
            &url(&server, "limited:pw@"),
            "run",
            "creds/acl",
            "--",
            "true",
        ]));
        let text = all_output(&out);
        assert_eq!(out.status.code(), Some(0), "{denied}: {text}");
        assert!(text.contains(names), "{denied}: {text}");
        assert!(!text.contains(not_named), "{denied}: {text}");
    }
}
