//! The `leasehold` binary over TLS, with redis-cli's flags (`--tls`, `--cacert`, `--cert`,
//! `--key`, `--insecure`) and their environment variables, against real TLS listeners.

use std::process::{Command, Output, Stdio};

use leasehold_testkit::{RedisServer, ServerCert, TestPki};

fn leasehold(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_leasehold"));
    c.arg("--redis").arg(url);
    for var in [
        "REDIS_URL",
        "REDIS_PASSWORD",
        "LEASEHOLD_TLS",
        "LEASEHOLD_TLS_CACERT",
        "LEASEHOLD_TLS_CERT",
        "LEASEHOLD_TLS_KEY",
        "LEASEHOLD_TLS_INSECURE",
    ] {
        c.env_remove(var);
    }
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run leasehold")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn server(pki: &TestPki, cert: ServerCert, require_client_cert: bool) -> RedisServer {
    RedisServer::builder()
        .tls(pki.listener(cert, require_client_cert))
        .start()
}

#[test]
fn run_over_tls_with_a_private_ca_a_client_certificate_or_the_environment() {
    let pki = TestPki::generate();
    let s = server(&pki, ServerCert::Good, false);
    let out = run(leasehold(&s.tls_url())
        .arg("--cacert")
        .arg(pki.ca())
        .args(["run", "tls/job", "--", "true"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // --tls turns a redis:// URL into TLS; the CA comes from the environment.
    let plain_scheme = s.tls_url().replacen("rediss://", "redis://", 1);
    let out = run(leasehold(&plain_scheme)
        .arg("--tls")
        .env("LEASEHOLD_TLS_CACERT", pki.ca())
        .args(["status", "tls/job"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let m = server(&pki, ServerCert::Good, true);
    let (cert, key) = pki.client();
    let out = run(leasehold(&m.tls_url())
        .arg("--cacert")
        .arg(pki.ca())
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["run", "tls/mtls", "--", "true"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn each_tls_failure_exits_6_with_one_line_that_names_it() {
    let pki = TestPki::generate();
    let cases = [
        (ServerCert::UnknownCa, false, "not signed by a trusted CA"),
        (ServerCert::WrongName, false, "not valid for this host name"),
        (ServerCert::Expired, false, "expired"),
        (ServerCert::Good, true, "requires a client certificate"),
    ];
    for (cert, mtls, says) in cases {
        let s = server(&pki, cert, mtls);
        let out = run(leasehold(&s.tls_url()).arg("--cacert").arg(pki.ca()).args([
            "run",
            "tls/refused",
            "--",
            "true",
        ]));
        let err = stderr(&out);
        assert_eq!(code(&out), 6, "{cert:?}: {err}");
        assert!(err.contains(says), "{cert:?}: {err}");
        assert!(
            err.contains("TLS connection to Redis at"),
            "{cert:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{cert:?}: {err}");
    }
    // TLS to a port that does not speak it.
    let s = server(&pki, ServerCert::Good, false);
    let out = run(leasehold(&s.url().replacen("redis://", "rediss://", 1))
        .arg("--cacert")
        .arg(pki.ca())
        .args(["status", "tls/plain-port"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 6, "{err}");
    assert!(err.contains("does not speak TLS"), "{err}");
}

#[test]
fn insecure_connects_past_a_bad_certificate_and_warns_about_it() {
    let pki = TestPki::generate();
    let s = server(&pki, ServerCert::UnknownCa, false);
    let out =
        run(leasehold(&s.tls_url())
            .arg("--insecure")
            .args(["run", "tls/insecure", "--", "true"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("insecure mode"), "no warning: {err}");
}

#[test]
fn the_platform_store_is_trusted_by_default() {
    // rustls-native-certs reads the store named by SSL_CERT_FILE, as OpenSSL does: a CA
    // put in the platform's store is trusted without --cacert.
    let pki = TestPki::generate();
    let s = server(&pki, ServerCert::Good, false);
    let out = run(leasehold(&s.tls_url())
        .env("SSL_CERT_FILE", pki.ca())
        .args(["status", "tls/platform"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // And one that is not in it is refused.
    let out = run(leasehold(&s.tls_url())
        .env("SSL_CERT_FILE", pki.other_ca())
        .args(["status", "tls/platform"]));
    assert_eq!(code(&out), 6, "{}", stderr(&out));
}

#[test]
fn bad_tls_files_are_usage_errors_on_one_line_naming_the_file() {
    let pki = TestPki::generate();
    let missing = pki.dir().join("missing-ca.crt");
    let (cert, _) = pki.client();
    for (flag, file, says) in [
        ("--cacert", missing.clone(), "missing-ca.crt"),
        ("--cacert", cert.clone(), ""),
    ] {
        let mut cmd = leasehold("rediss://127.0.0.1:9/");
        cmd.arg(flag).arg(&file).args(["status", "x"]);
        if says.is_empty() {
            // A client certificate given as the CA still parses as a certificate; a key
            // given as a certificate does not.
            cmd = leasehold("rediss://127.0.0.1:9/");
            cmd.arg("--cert")
                .arg(pki.client().1)
                .arg("--key")
                .arg(pki.client().1)
                .args(["status", "x"]);
        }
        let out = run(&mut cmd);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("TLS"), "{err}");
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn a_client_certificate_without_its_key_is_a_usage_error() {
    let pki = TestPki::generate();
    let (cert, _) = pki.client();
    let out = run(leasehold("rediss://127.0.0.1:9/")
        .arg("--cert")
        .arg(&cert)
        .args(["status", "x"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("--key"), "{}", stderr(&out));
}
